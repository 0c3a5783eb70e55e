/* The status client: one request, a stream of per-process replies, then totals. */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "manager.pb-c.h"
#include "status_client.h"
#include "wire.h"

#define STATUS_TIMEOUT_MS	5000

static void print_target_text(FILE *out, const StatusTarget *t)
{
	fprintf(out, "%8d %6u %10" PRIu64 " %10" PRIu64 " %8" PRIu64 " %10" PRIu64 " %8" PRIu64
		" %4" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64 " %6" PRIu64 "/%" PRIu64 "/%" PRIu64,
		t->pid, t->image_id, t->pages_total, t->pages_copied, t->pages_zeroed,
		t->pages_remaining, t->faults, t->ev_fork, t->ev_remap, t->ev_remove, t->ev_unmap,
		t->eagain, t->enoent, t->eexist);
	if (t->n_fault_us_log2) {
		fputs("  us:", out);
		for (size_t i = 0; i < t->n_fault_us_log2; i++)
			if (t->fault_us_log2[i])
				fprintf(out, " <%llu:%" PRIu64, 2ull << i, t->fault_us_log2[i]);
	}
	if (t->page_server)
		fprintf(out, "  from %s (%s)", t->page_server,
			t->page_server_state ? t->page_server_state : "?");
	if (t->has_adopted && t->adopted)
		fprintf(out, "  adopted (%u restarts)", t->adopted);
	fputc('\n', out);
}

static void add_u64(json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_uint64(v));
}

static void add_int(json_object *o, const char *key, int64_t v)
{
	json_object_object_add(o, key, json_object_new_int64(v));
}

static json_object *target_json(const StatusTarget *t)
{
	json_object *o = json_object_new_object(), *ev = json_object_new_object();
	json_object *hist = json_object_new_array();

	add_int(o, "pid", t->pid);
	add_int(o, "image_id", t->image_id);
	add_int(o, "parent_pid", t->has_parent_pid ? t->parent_pid : 0);
	add_u64(o, "pages_total", t->pages_total);
	add_u64(o, "pages_present", t->pages_copied);
	add_u64(o, "pages_zero", t->pages_zeroed);
	add_u64(o, "pages_poisoned", t->has_pages_poisoned ? t->pages_poisoned : 0);
	add_u64(o, "pages_continued", t->has_pages_continued ? t->pages_continued : 0);
	add_u64(o, "minor_faults", t->has_minor_faults ? t->minor_faults : 0);
	add_u64(o, "pages_remaining", t->pages_remaining);
	add_u64(o, "faults", t->faults);
	add_u64(ev, "fork", t->ev_fork);
	add_u64(ev, "remap", t->ev_remap);
	add_u64(ev, "remove", t->ev_remove);
	add_u64(ev, "unmap", t->ev_unmap);
	json_object_object_add(o, "events", ev);
	add_u64(o, "eagain", t->eagain);
	add_u64(o, "enoent", t->enoent);
	add_u64(o, "eexist", t->eexist);
	add_u64(o, "model_bytes", t->model_bytes);
	if (t->page_server) {
		json_object_object_add(o, "page_server", json_object_new_string(t->page_server));
		json_object_object_add(o, "page_server_state", json_object_new_string(
					       t->page_server_state ? t->page_server_state : "?"));
	}
	add_int(o, "adopted", t->has_adopted ? t->adopted : 0);
	for (size_t i = 0; i < t->n_fault_us_log2; i++)
		json_object_array_add(hist, json_object_new_uint64(t->fault_us_log2[i]));
	json_object_object_add(o, "fault_us_log2", hist);
	return o;
}

static json_object *totals_json(const StatusTotals *t)
{
	json_object *o = json_object_new_object();

	add_int(o, "processes", t->targets);
	add_int(o, "clients", t->clients);
	add_u64(o, "served", t->served);
	add_u64(o, "exited", t->exited);
	add_u64(o, "refused", t->refused);
	add_u64(o, "pages_present", t->pages_copied);
	add_u64(o, "pages_zero", t->pages_zeroed);
	add_u64(o, "pages_poisoned", t->has_pages_poisoned ? t->pages_poisoned : 0);
	add_u64(o, "pages_continued", t->has_pages_continued ? t->pages_continued : 0);
	add_u64(o, "minor_faults", t->has_minor_faults ? t->minor_faults : 0);
	add_u64(o, "faults", t->faults);
	add_u64(o, "mapped_bytes", t->mapped_bytes);
	add_u64(o, "uptime_ms", t->uptime_ms);
	add_int(o, "watched", t->watched);
	if (t->page_server) {
		json_object *ps = json_object_new_object();

		json_object_object_add(ps, "address", json_object_new_string(t->page_server));
		json_object_object_add(ps, "state", json_object_new_string(
						    t->page_server_state ? t->page_server_state : "?"));
		json_object_object_add(ps, "tls", json_object_new_boolean(t->page_server_tls));
		add_u64(ps, "reconnects", t->page_server_reconnects);
		add_u64(ps, "down_ms", t->page_server_down_ms);
		json_object_object_add(o, "page_server", ps);
	}
	add_u64(o, "adopted", t->has_adopted ? t->adopted : 0);
	add_u64(o, "restarts", t->has_restarts ? t->restarts : 0);
	return o;
}

int status_query(const char *socket_path, int json, FILE *out)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	StatusRequest sr = STATUS_REQUEST__INIT;
	Request req = REQUEST__INIT;
	json_object *all = NULL, *procs = NULL;
	int fd, ret, done = 0;

	if (strlen(socket_path) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "uffd-manager status: %s: path too long\n", socket_path);
		return 1;
	}
	strcpy(addr.sun_path, socket_path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		fprintf(stderr, "uffd-manager status: cannot reach the manager at %s: %s\n",
			socket_path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	sr.version = UFFD_PROTO_VERSION;
	req.status = &sr;
	ret = wire_send(fd, &req.base, NULL, 0);
	if (ret < 0) {
		fprintf(stderr, "uffd-manager status: send: %s\n", strerror(-ret));
		close(fd);
		return 1;
	}
	if (json) {
		all = json_object_new_object();
		procs = json_object_new_array();
		json_object_object_add(all, "processes", procs);
	} else {
		fprintf(out, "%8s %6s %10s %10s %8s %10s %8s %s %s\n", "PID", "IMAGE", "TOTAL",
			"PRESENT", "ZERO", "REMAINING", "FAULTS", "FORK/REMAP/REMOVE/UNMAP",
			"EAGAIN/ENOENT/EEXIST");
	}
	while (!done) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint8_t buf[WIRE_MAX_MSG];
		int fds[WIRE_MAX_FDS], nfds;
		ssize_t len;
		Reply *r;

		if (poll(&p, 1, STATUS_TIMEOUT_MS) <= 0) {
			fprintf(stderr, "uffd-manager status: no answer from %s\n", socket_path);
			break;
		}
		len = wire_recv(fd, buf, sizeof(buf), fds, &nfds, 0);
		if (len == -EAGAIN)
			continue;
		if (len <= 0) {
			fprintf(stderr, "uffd-manager status: connection closed before the totals\n");
			break;
		}
		r = reply__unpack(NULL, len, buf);
		if (!r) {
			fprintf(stderr, "uffd-manager status: undecodable reply\n");
			break;
		}
		if (r->hello && !r->hello->ok) {
			fprintf(stderr, "uffd-manager status: refused: %s\n",
				r->hello->reason ? r->hello->reason : "?");
		} else if (r->target) {
			if (json)
				json_object_array_add(procs, target_json(r->target));
			else
				print_target_text(out, r->target);
		} else if (r->totals) {
			const StatusTotals *t = r->totals;

			if (json) {
				json_object_object_add(all, "totals", totals_json(t));
				fprintf(out, "%s\n", json_object_to_json_string_ext(
						     all, JSON_C_TO_STRING_PLAIN |
							  JSON_C_TO_STRING_NOSLASHESCAPE));
			}
			else
				fprintf(out,
					"total: %u processes, %u clients; %" PRIu64 " served (%u still running, watched), %" PRIu64
					" exited early, %" PRIu64 " refused; %" PRIu64 " pages copied, %" PRIu64 " zeroed, %" PRIu64
					" faults; %" PRIu64 " MiB of images mapped; up %" PRIu64 " s\n",
					t->targets, t->clients, t->served, t->watched, t->exited, t->refused,
					t->pages_copied, t->pages_zeroed, t->faults, t->mapped_bytes >> 20,
					t->uptime_ms / 1000);
			if (!json && t->page_server)
				fprintf(out, "page server %s: %s%s, %" PRIu64 " reconnects%s\n",
					t->page_server, t->page_server_state ? t->page_server_state : "?",
					t->page_server_tls ? " (TLS)" : "", t->page_server_reconnects,
					t->page_server_down_ms ? " (waiting for it)" : "");
			if (!json && t->has_restarts && t->restarts)
				fprintf(out, "restarted: %" PRIu64 " processes taken back from the daemon before (restart %" PRIu64 ")\n",
					t->has_adopted ? t->adopted : 0, t->restarts);
			done = 1;
		}
		reply__free_unpacked(r, NULL);
	}
	json_object_put(all);
	close(fd);
	return done ? 0 : 1;
}
