/* The status client: one request, a stream of per-process replies, then totals. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "manager.pb-c.h"
#include "status.h"
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
	fputc('\n', out);
}

static void print_target_json(FILE *out, const StatusTarget *t, int first)
{
	fprintf(out,
		"%s{\"pid\":%d,\"image_id\":%u,\"parent_pid\":%d,\"pages_total\":%" PRIu64
		",\"pages_present\":%" PRIu64 ",\"pages_zero\":%" PRIu64 ",\"pages_remaining\":%" PRIu64
		",\"faults\":%" PRIu64 ",\"events\":{\"fork\":%" PRIu64 ",\"remap\":%" PRIu64
		",\"remove\":%" PRIu64 ",\"unmap\":%" PRIu64 "},\"eagain\":%" PRIu64
		",\"enoent\":%" PRIu64 ",\"eexist\":%" PRIu64 ",\"model_bytes\":%" PRIu64
		",\"fault_us_log2\":[",
		first ? "" : ",", t->pid, t->image_id, t->has_parent_pid ? t->parent_pid : 0,
		t->pages_total, t->pages_copied, t->pages_zeroed, t->pages_remaining, t->faults,
		t->ev_fork, t->ev_remap, t->ev_remove, t->ev_unmap, t->eagain, t->enoent, t->eexist,
		t->model_bytes);
	for (size_t i = 0; i < t->n_fault_us_log2; i++)
		fprintf(out, "%s%" PRIu64, i ? "," : "", t->fault_us_log2[i]);
	fputs("]}", out);
}

int status_query(const char *socket_path, int json, FILE *out)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	StatusRequest sr = STATUS_REQUEST__INIT;
	Request req = REQUEST__INIT;
	int fd, n = 0, ret, done = 0;

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
	if (json)
		fputs("{\"processes\":[", out);
	else
		fprintf(out, "%8s %6s %10s %10s %8s %10s %8s %s %s\n", "PID", "IMAGE", "TOTAL",
			"PRESENT", "ZERO", "REMAINING", "FAULTS", "FORK/REMAP/REMOVE/UNMAP",
			"EAGAIN/ENOENT/EEXIST");
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
				print_target_json(out, r->target, n == 0);
			else
				print_target_text(out, r->target);
			n++;
		} else if (r->totals) {
			const StatusTotals *t = r->totals;

			if (json)
				fprintf(out,
					"],\"totals\":{\"processes\":%u,\"clients\":%u,\"served\":%" PRIu64
					",\"exited\":%" PRIu64 ",\"refused\":%" PRIu64 ",\"pages_present\":%" PRIu64
					",\"pages_zero\":%" PRIu64 ",\"faults\":%" PRIu64
					",\"mapped_bytes\":%" PRIu64 ",\"uptime_ms\":%" PRIu64
					",\"watched\":%u}}\n",
					t->targets, t->clients, t->served, t->exited, t->refused,
					t->pages_copied, t->pages_zeroed, t->faults, t->mapped_bytes,
					t->uptime_ms, t->watched);
			else
				fprintf(out,
					"total: %u processes, %u clients; %" PRIu64 " served (%u still running, watched), %" PRIu64
					" exited early, %" PRIu64 " refused; %" PRIu64 " pages copied, %" PRIu64 " zeroed, %" PRIu64
					" faults; %" PRIu64 " MiB of images mapped; up %" PRIu64 " s\n",
					t->targets, t->clients, t->served, t->watched, t->exited, t->refused,
					t->pages_copied, t->pages_zeroed, t->faults, t->mapped_bytes >> 20,
					t->uptime_ms / 1000);
			done = 1;
		}
		reply__free_unpacked(r, NULL);
	}
	close(fd);
	return done ? 0 : 1;
}
