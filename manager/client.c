/* Connections: accept, check the peer, take a hand-over or answer a status request. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client.h"
#include "loader.h"
#include "log.h"
#include "manager.pb-c.h"
#include "procfs.h"
#include "remote.h"
#include "rserve.h"
#include "sender.h"
#include "serve.h"
#include "sysutil.h"
#include "target.h"
#include "uffd.h"
#include "wire.h"

#define ACCEPT_RETRY_NS	(100 * 1000000ull)
/* Fds kept free for FORK events: a fork in a served process fails without one. */
#define FD_HEADROOM	64

static void client_on_read(struct ev *ev, uint32_t events);
static int client_job(struct client *c, int dirfd, const Hello *h, char *reason, size_t len);
static void client_on_deadline(struct timer *tm);

/* The real and effective uid of PID. */
static int proc_uids(pid_t pid, uid_t *ruid, uid_t *euid)
{
	char path[64], val[128];
	unsigned r, e;
	int ret;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	ret = procfs_field(path, "Uid", val, sizeof(val));
	if (ret < 0)
		return ret == -ENOENT ? -EINVAL : ret;
	if (sscanf(val, "%u %u", &r, &e) != 2)
		return -EINVAL;
	*ruid = r;
	*euid = e;
	return 0;
}

int hello_validate(const struct hello_check *h, pid_t *pid, char *reason, size_t len)
{
	char kind[128] = "unreadable";
	struct stat st;
	uint64_t feat;
	uid_t ruid = 0, euid = 0;
	int ret;

	if (h->version != UFFD_PROTO_VERSION) {
		snprintf(reason, len, "protocol version %u not supported (this manager speaks %u)",
			 h->version, UFFD_PROTO_VERSION);
		return -EPROTO;
	}
	if (h->nfds != 3) {
		snprintf(reason, len, "HELLO carries %d fds; it needs 3 (uffd, pidfd, image dir)",
			 h->nfds);
		return -EINVAL;
	}
	if (procfs_fd_kind(h->uffd, kind, sizeof(kind)) < 0 || strcmp(kind, "anon_inode:[userfaultfd]")) {
		snprintf(reason, len, "first fd is not a userfaultfd (%s)", kind);
		return -EINVAL;
	}
	if (procfs_fd_kind(h->pidfd, kind, sizeof(kind)) < 0 ||
	    (strcmp(kind, "anon_inode:[pidfd]") && strncmp(kind, "pidfd:", 6))) {
		snprintf(reason, len, "second fd is not a pidfd (%s)", kind);
		return -EINVAL;
	}
	if (fstat(h->dirfd, &st) < 0 || !S_ISDIR(st.st_mode)) {
		snprintf(reason, len, "third fd is not a directory");
		return -EINVAL;
	}
	ret = uffd_features(h->uffd, &feat);
	if (ret < 0) {
		snprintf(reason, len, "cannot read the uffd's features: %s", strerror(-ret));
		return ret;
	}
	if (feat != h->features) {
		snprintf(reason, len, "HELLO says features 0x%" PRIx64 ", but the uffd has 0x%" PRIx64,
			 h->features, feat);
		return -EINVAL;
	}
	if ((feat & UFFD_NEEDED_FEATURES) != UFFD_NEEDED_FEATURES) {
		uint64_t miss = UFFD_NEEDED_FEATURES & ~feat;

		snprintf(reason, len, "uffd lacks%s%s%s%s (enable them at UFFDIO_API)",
			 miss & UFFD_FEATURE_EVENT_FORK ? " EVENT_FORK" : "",
			 miss & UFFD_FEATURE_EVENT_REMAP ? " EVENT_REMAP" : "",
			 miss & UFFD_FEATURE_EVENT_REMOVE ? " EVENT_REMOVE" : "",
			 miss & UFFD_FEATURE_EVENT_UNMAP ? " EVENT_UNMAP" : "");
		return -EINVAL;
	}
	/* A thread's pidfd (PIDFD_THREAD) reports that thread's exit, not the process's. */
	ret = sender_check_process(h->pidfd, pid, reason, len);
	if (ret < 0)
		return ret;
	if (h->peer_uid != 0) {
		ret = proc_uids(*pid, &ruid, &euid);
		if (ret < 0) {
			snprintf(reason, len, "cannot read the owner of pid %d: %s", *pid, strerror(-ret));
			return ret;
		}
		if (ruid != h->peer_uid || euid != h->peer_uid) {
			snprintf(reason, len, "uid %u may not hand over pid %d (owned by uid %u)",
				 (unsigned)h->peer_uid, *pid, (unsigned)ruid);
			return -EPERM;
		}
	}
	return 0;
}

static void client_free(void *p)
{
	struct client *c = p;

	for (size_t i = 0; i < c->out_n; i++)
		free(c->out[i].buf);
	free(c->out);
	free(c);
}

void client_close(struct client *c)
{
	struct client **pp;
	struct daemon *d = c->d;

	if (c->dead)
		return;
	c->dead = true;
	if (c->job) {
		/* Its images are being read: the result is dropped when it comes back. */
		c->job->owner = NULL;
		c->job = NULL;
		close(c->uffd);
		close(c->pidfd);
		d->fds_in_use -= 2;
		log_warnx("%s hung up while its images were being read: hand-over dropped",
			  c->pfx);
	}
	timer_cancel(&d->loop, &c->deadline);
	loop_del(&d->loop, &c->ev);
	close(c->fd);
	for (pp = &d->clients; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	d->nr_clients--;
	d->fds_in_use--;
	loop_defer(&d->loop, client_free, c);
	daemon_check_done(d);
}

static void client_on_deadline(struct timer *tm)
{
	struct client *c = container_of(tm, struct client, deadline);

	if (!c->answered)
		log_warnx("%s said nothing within %u ms; closing", c->pfx, c->d->o.handshake_ms);
	client_close(c);
}

static int send_reply(struct client *c, const Reply *r)
{
	int ret = wire_send(c->fd, &r->base, NULL, 0);

	if (ret < 0)
		log_debug("%s reply: %s", c->pfx, strerror(-ret));
	return ret;
}

/* Has the client hung up (it gave up waiting, or died)? */
static bool client_hung_up(const struct client *c)
{
	struct pollfd p = { .fd = c->fd, .events = POLLRDHUP };

	return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* Does any area of PID carry a userfaultfd registration ("um" in its VmFlags)? */
static bool has_registered_areas(pid_t pid)
{
	struct procfs_maps m;
	char why[256];
	bool found = false;

	if (procfs_read_smaps(pid, &m, why, sizeof(why)) < 0)
		return false;
	for (size_t i = 0; i < m.n && !found; i++)
		found = m.v[i].vmflags & PFV_UM;
	procfs_maps_free(&m);
	return found;
}

static int reply_hello(struct client *c, bool ok, const char *reason, uint64_t lazy)
{
	HelloReply hr = HELLO_REPLY__INIT;
	Reply r = REPLY__INIT;

	hr.ok = ok;
	if (!ok)
		hr.reason = (char *)reason;
	if (ok) {
		hr.has_lazy_pages = true;
		hr.lazy_pages = lazy;
	}
	r.hello = &hr;
	return send_reply(c, &r);
}

/* Refuse a request: tell the client why, and log it. */
static void refuse(struct client *c, const char *reason)
{
	c->d->tot.refused++;
	log_warnx("%s refused: %s", c->pfx, reason);
	reply_hello(c, false, reason, 0);
}

/* Take a process over: check everything, load its images, start serving. */
static void handle_hello(struct client *c, const Hello *h, int *fds, int nfds)
{
	struct daemon *d = c->d;
	struct hello_check hc = {
		.version = h->version,
		.features = h->features,
		.nfds = nfds,
		.uffd = nfds > 0 ? fds[0] : -1,
		.pidfd = nfds > 1 ? fds[1] : -1,
		.dirfd = nfds > 2 ? fds[2] : -1,
		.peer_uid = c->peer_uid,
	};
	char reason[512] = "";
	pid_t pid = 0;
	int ret;

	if (d->draining) {
		refuse(c, "the manager is shutting down");
		return;
	}
	if (d->nr_targets >= d->o.max_clients) {
		snprintf(reason, sizeof(reason), "already serving %u processes (the limit)",
			 d->nr_targets);
		refuse(c, reason);
		return;
	}
	if (d->fds_in_use + pages_nr_files(&d->pages) + FD_HEADROOM + 3 > d->fd_limit) {
		snprintf(reason, sizeof(reason),
			 "no fd headroom left for fork events (%u of %u in use)",
			 d->fds_in_use + pages_nr_files(&d->pages), d->fd_limit);
		refuse(c, reason);
		return;
	}
	if (hello_validate(&hc, &pid, reason, sizeof(reason)) < 0) {
		refuse(c, reason);
		return;
	}
	snprintf(c->pfx, sizeof(c->pfx), "client pid %d (image %u):", c->peer_pid, h->image_id);
	/*
	 * A client whose reply timeout passed before we got here has put every
	 * page back, unregistered and closed: serving it now would only meet
	 * unregistered ranges. One that died instead left its areas registered:
	 * its process needs us.
	 */
	if (client_hung_up(c) && !has_registered_areas(pid)) {
		log_warnx("%s gave up before its reply (hung up; pid %d has no registered area left): hand-over dropped unserved",
			  c->pfx, pid);
		return;	/* its hang-up is read next, and closes the connection */
	}

	ret = client_job(c, hc.dirfd, h, reason, sizeof(reason));
	if (ret < 0) {
		refuse(c, reason);
		return;
	}
	/* The loader has the directory, the client the uffd and pidfd, until it is done. */
	c->uffd = hc.uffd;
	c->pidfd = hc.pidfd;
	c->pid = pid;
	c->image_id = h->image_id;
	c->registered = h->has_flags && (h->flags & HELLO_F_REGISTERED);
	c->features = h->features;
	fds[0] = fds[1] = fds[2] = -1;
	d->fds_in_use += 2;
	timer_cancel(&d->loop, &c->deadline);	/* loading may take a while: no deadline meanwhile */
}

/* The supplementary groups of the client's socket peer (SO_PEERGROUPS), malloc'd. */
static int peer_groups(int fd, gid_t **groups, size_t *n)
{
	socklen_t len = 64 * sizeof(gid_t);
	gid_t *g = NULL;

	for (;;) {
		gid_t *ng = realloc(g, len ? len : sizeof(gid_t));

		if (!ng) {
			free(g);
			return -ENOMEM;
		}
		g = ng;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) == 0)
			break;
		if (errno != ERANGE || len > 65536 * sizeof(gid_t)) {
			int e = errno;

			free(g);
			return -e;
		}
	}
	*groups = g;
	*n = len / sizeof(gid_t);
	return 0;
}

/*
 * Give the loader thread the images of a hand-over to read, as the
 * client's socket peer, and to build the model from: the loop goes on.
 * DIRFD is the job's from here on (counted among the fds in use).
 */
/*
 * HELLO names a page server (uffd-inject restore --page-server): check and
 * copy "HOST:PORT" and the TLS options into J. 0, or -EINVAL with REASON.
 */
static int job_page_server(struct loader_job *j, const Hello *h, char *reason, size_t len)
{
	const char *ps = h->page_server, *colon = strrchr(ps, ':');
	const char *paths[4] = { h->tls_cacert, h->tls_cacrl, h->tls_cert, h->tls_key };
	char **dst[4] = { (char **)&j->tls.cacert, (char **)&j->tls.cacrl, (char **)&j->tls.cert,
			  (char **)&j->tls.key };
	size_t hl = colon ? (size_t)(colon - ps) : 0;

	if (!colon || !hl || hl > 255 || !colon[1] || strlen(colon + 1) > 5 ||
	    strspn(colon + 1, "0123456789") != strlen(colon + 1)) {
		snprintf(reason, len, "page server \"%.300s\": want HOST:PORT", ps);
		return -EINVAL;
	}
	if (ps[0] == '[' && ps[hl - 1] == ']') {	/* [v6]:port */
		ps++;
		hl -= 2;
	}
	j->ps_host = strndup(ps, hl);
	j->ps_port = strdup(colon + 1);
	if (!j->ps_host || !j->ps_port)
		goto nomem;
	if (!h->has_tls || !h->tls)
		return 0;
	j->tls.on = true;
	j->tls.no_cn_verify = h->has_tls_no_cn_verify && h->tls_no_cn_verify;
	for (int i = 0; i < 4; i++) {
		if (!paths[i])
			continue;
		if (paths[i][0] != '/' || strlen(paths[i]) > 4095) {
			snprintf(reason, len, "TLS file \"%.300s\": want an absolute path", paths[i]);
			return -EINVAL;
		}
		*dst[i] = strdup(paths[i]);
		if (!*dst[i])
			goto nomem;
	}
	return 0;
nomem:
	snprintf(reason, len, "out of memory");
	return -ENOMEM;
}

static int client_job(struct client *c, int dirfd, const Hello *h, char *reason, size_t len)
{
	uint32_t image_id = h->image_id;
	struct daemon *d = c->d;
	struct loader_job *j;
	int ret;

	if (!d->loader) {
		snprintf(reason, len, "the manager has no image loader thread (it could not start)");
		return -ENOSYS;
	}
	j = calloc(1, sizeof(*j));
	if (!j) {
		snprintf(reason, len, "out of memory");
		return -ENOMEM;
	}
	ret = peer_groups(c->fd, &j->groups, &j->ngroups);
	if (ret < 0) {
		snprintf(reason, len, "cannot read the groups of the client (SO_PEERGROUPS): %s",
			 strerror(-ret));
		free(j);
		return ret;
	}
	j->dirfd = -1;
	if (h->page_server && (ret = job_page_server(j, h, reason, len)) < 0) {
		loader_job_free(d, j);
		return ret;
	}
	j->owner = c;
	j->dirfd = dirfd;
	j->image_id = image_id;
	j->remote = j->ps_host || serve_from_images.remote;
	j->max_entries = d->o.max_image_entries;
	j->load_flags = h->has_flags && (h->flags & HELLO_F_SHM_LAZY) ? IMG_LOAD_SHM_LAZY : 0;
	j->uid = c->peer_uid;
	j->gid = c->peer_gid;
	d->fds_in_use++;
	c->job = j;
	loader_submit(d->loader, j);
	return 0;
}

void client_loaded(struct daemon *d, struct loader_job *j)
{
	struct client *c = j->owner;
	char reason[512] = "";
	struct target *t = NULL;
	const struct area *sv;

	if (!c) {
		loader_job_free(d, j);	/* its client hung up meanwhile */
		return;
	}
	c->job = NULL;
	d->fds_in_use -= 2;	/* the uffd and pidfd: the target counts them, or they close */
	log_info("%s image %u read and modelled in %" PRIu64 " ms (off the loop)", c->pfx,
		 j->image_id, j->load_ns / 1000000);
	if (j->ret < 0)
		snprintf(reason, sizeof(reason), "%s", j->reason);
	else if (d->draining)
		snprintf(reason, sizeof(reason), "the manager is shutting down");
	else if (d->nr_targets >= d->o.max_clients)
		snprintf(reason, sizeof(reason), "already serving %u processes (the limit)",
			 d->nr_targets);
	else if (!(c->features & UFFD_FEATURE_MINOR_SHMEM) && (sv = model_first_shared(&j->map)))
		snprintf(reason, sizeof(reason),
			 "shared memory at 0x%" PRIx64 "-0x%" PRIx64 " is lazy, but the uffd lacks "
			 "UFFD_FEATURE_MINOR_SHMEM (minor faults are how its sharers get its pages)",
			 sv->start, sv->end);
	else if (j->rem && rserve_adopt(d, j->rem, j->img, reason, sizeof(reason)) < 0)
		t = NULL;
	else {
		/* Its own page server's connection is d->remotes' while a process of these images lives. */
		j->rem = NULL;
		t = target_adopt(d, c->uffd, c->pidfd, c->pid, c->image_id, j->img, &j->map,
				 c->registered, j->ps_host ? &rserve_source : &serve_from_images,
				 j->uid, j->gid, reason, sizeof(reason));
		if (t)
			target_journal_groups(t, j->groups, j->ngroups);
	}
	loader_job_free(d, j);	/* the target holds its own reference to the images */
	if (!t) {
		close(c->uffd);
		close(c->pidfd);
		refuse(c, reason);
	} else if (reply_hello(c, true, NULL, t->st.pages_total) < 0) {
		/* It gave up waiting: it puts its pages back itself; ours would find no range. */
		target_destroy(t, "the client gave up before its reply (cannot deliver it): hand-over dropped");
	}
	c->uffd = c->pidfd = -1;
	/* Keep the connection a while, so that a second request is refused, not lost. */
	timer_arm(&d->loop, &c->deadline, (uint64_t)d->o.handshake_ms * 1000000ull,
		  client_on_deadline);
}

/* Queue M, packed, for sending. */
static int queue_reply(struct client *c, const ProtobufCMessage *m, size_t *cap)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf;

	if (len > WIRE_MAX_MSG)
		return -EMSGSIZE;
	if (c->out_n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 64;
		struct client_out *no = realloc(c->out, ncap * sizeof(*no));

		if (!no)
			return -ENOMEM;
		c->out = no;
		*cap = ncap;
	}
	buf = malloc(len ? len : 1);
	if (!buf)
		return -ENOMEM;
	protobuf_c_message_pack(m, buf);
	c->out[c->out_n].buf = buf;
	c->out[c->out_n].len = len;
	c->out_n++;
	return 0;
}

/*
 * Send what is queued without ever blocking the daemon: wait for EPOLLOUT
 * when the socket is full; the connection deadline drops a reader that stalls.
 */
static void client_flush(struct client *c)
{
	while (c->out_i < c->out_n) {
		const struct client_out *o = &c->out[c->out_i];
		ssize_t n = send(c->fd, o->buf, o->len, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			if (loop_mod(&c->d->loop, &c->ev, EPOLLIN | EPOLLOUT) < 0)
				client_close(c);
			return;
		}
		if (n < 0) {
			log_debug("%s status reply: %s", c->pfx, strerror(errno));
			client_close(c);
			return;
		}
		c->out_i++;
	}
	client_close(c);
}

/* Queue the state of every process, then the totals, and start sending. */
static void handle_status(struct client *c)
{
	struct daemon *d = c->d;
	StatusTotals tot = STATUS_TOTALS__INIT;
	Reply r = REPLY__INIT;
	struct target *t;
	size_t cap = 0;

	for (t = d->targets; t; t = t->next) {
		StatusTarget st = STATUS_TARGET__INIT;
		uint64_t hist[TARGET_HIST];
		size_t nh = TARGET_HIST;

		while (nh && !t->st.hist[nh - 1])
			nh--;
		memcpy(hist, t->st.hist, sizeof(hist));
		st.pid = t->pid;
		st.image_id = t->image_id;
		st.pages_total = t->st.pages_total;
		st.pages_copied = t->st.pages_copied;
		st.pages_zeroed = t->st.pages_zeroed;
		st.pages_remaining = t->map.nr_missing;
		st.faults = t->st.faults;
		st.ev_fork = t->st.ev_fork;
		st.ev_remap = t->st.ev_remap;
		st.ev_remove = t->st.ev_remove;
		st.ev_unmap = t->st.ev_unmap;
		st.eagain = t->st.eagain;
		st.enoent = t->st.enoent;
		st.eexist = t->st.eexist;
		st.n_fault_us_log2 = nh;
		st.fault_us_log2 = hist;
		if (t->parent_pid) {
			st.has_parent_pid = true;
			st.parent_pid = t->parent_pid;
		}
		st.has_model_bytes = true;
		st.model_bytes = model_mem_bytes(&t->map);
		st.has_pages_poisoned = true;
		st.pages_poisoned = t->st.pages_poisoned;
		st.has_pages_continued = true;
		st.pages_continued = t->st.pages_continued;
		st.has_minor_faults = true;
		st.minor_faults = t->st.minor_faults;
		if (t->remote)
			remote_status_target(rserve_remote(t), &st);
		if (t->adopted) {
			st.has_adopted = true;
			st.adopted = t->adopted;
		}
		r.target = &st;
		if (queue_reply(c, &r.base, &cap) < 0) {
			client_close(c);
			return;
		}
	}
	r.target = NULL;
	tot.targets = d->nr_targets;
	tot.clients = d->nr_clients;
	tot.served = d->tot.served;
	tot.refused = d->tot.refused;
	tot.pages_copied = d->tot.pages_copied;
	tot.pages_zeroed = d->tot.pages_zeroed;
	tot.faults = d->tot.faults;
	tot.mapped_bytes = d->pages.mapped_bytes;
	tot.uptime_ms = (now_ns() - d->start_ns) / 1000000;
	tot.has_exited = true;
	tot.exited = d->tot.exited;
	tot.has_pages_poisoned = true;
	tot.pages_poisoned = d->tot.pages_poisoned;
	tot.has_pages_continued = true;
	tot.pages_continued = d->tot.pages_continued;
	tot.has_minor_faults = true;
	tot.minor_faults = d->tot.minor_faults;
	tot.has_watched = true;
	tot.watched = d->nr_released;
	if (d->remote)
		remote_status_totals(d->remote, &tot);
	if (d->restarts) {
		tot.has_adopted = true;
		tot.adopted = d->tot.adopted;
		tot.has_restarts = true;
		tot.restarts = d->restarts;
	}
	r.totals = &tot;
	if (queue_reply(c, &r.base, &cap) < 0) {
		client_close(c);
		return;
	}
	client_flush(c);
}

static void client_on_read(struct ev *ev, uint32_t events)
{
	struct client *c = container_of(ev, struct client, ev);
	uint8_t buf[WIRE_MAX_MSG];
	int fds[WIRE_MAX_FDS];
	int nfds = 0;
	Request *req;
	bool status = false;
	ssize_t n;

	if (c->out_n) {
		/* Answering a status request: more room, or the reader hung up. */
		if (events & EPOLLOUT)
			client_flush(c);
		else
			client_close(c);
		return;
	}
	n = wire_recv(c->fd, buf, sizeof(buf), fds, &nfds, WIRE_MAX_FDS);
	if (n == -EAGAIN)
		return;
	if (n == 0 || n == -ECONNRESET) {
		client_close(c);
		return;
	}
	if (n < 0) {
		refuse(c, n == -EMSGSIZE ? "message larger than 4096 bytes" :
			  n == -E2BIG ? "too many fds attached" : "cannot read the message");
		client_close(c);
		return;
	}
	if (c->answered) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		refuse(c, "one request per connection");
		client_close(c);
		return;
	}
	c->answered = true;
	req = request__unpack(NULL, n, buf);
	if (!req || (!!req->hello + !!req->status) != 1) {
		refuse(c, req ? "a request needs exactly one of hello, status" :
			  "cannot decode the request");
	} else if (req->hello) {
		handle_hello(c, req->hello, fds, nfds);
	} else {
		status = true;
		if (nfds)
			refuse(c, "a status request carries no fds");
		else if (c->peer_uid != 0 && c->peer_uid != geteuid())
			refuse(c, "only root or the daemon's owner may ask for status");
		else
			handle_status(c);
	}
	for (int i = 0; i < nfds; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (req)
		request__free_unpacked(req, NULL);
	if (status) {
		if (!c->out_n)
			client_close(c);	/* refused: nothing queued */
		return;
	}
	if (c->job)
		return;	/* the deadline starts again once its images are read */
	/* Keep the connection a while, so that a second request is refused, not lost. */
	timer_arm(&c->d->loop, &c->deadline, (uint64_t)c->d->o.handshake_ms * 1000000ull,
		  client_on_deadline);
}

static void accept_retry(struct timer *tm)
{
	struct daemon *d = container_of(tm, struct daemon, accept_retry);

	if (d->accept_paused && d->listen_fd >= 0)
		loop_mod(&d->loop, &d->listen_ev, EPOLLIN);
	client_accept(d);
}

/*
 * A connection over the cap: tell it why (a refusal, as to a HELLO) and
 * close it. A flood of them logs a few lines a second and a count.
 */
static void refuse_flood(struct daemon *d, int fd, pid_t pid)
{
	HelloReply hr = HELLO_REPLY__INIT;
	Reply r = REPLY__INIT;
	char reason[160];
	unsigned dropped;

	snprintf(reason, sizeof(reason),
		 "too many clients: %u connections and processes (--max-clients %u, plus 16 for status requests)",
		 d->nr_clients + d->nr_targets, d->o.max_clients);
	hr.ok = false;
	hr.reason = reason;
	r.hello = &hr;
	if (wire_send(fd, &r.base, NULL, 0) < 0)
		log_debug("connection from pid %d: refusal not sent", pid);
	close(fd);
	d->tot.refused++;
	if (log_rl(&d->refuse_rl, &dropped))
		log_warnx("connection from pid %d refused: %s (%u more refused since the last such line, not logged)",
			  pid, reason, dropped);
}

void client_accept(struct daemon *d)
{
	while (d->listen_fd >= 0) {
		struct ucred cred;
		socklen_t cl = sizeof(cred);
		struct client *c;
		int fd = accept4(d->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (sys_accept_backoff(errno)) {
				/*
				 * The listen socket stays readable: unwatched, or the
				 * level-triggered loop would spin on it. Said once.
				 */
				if (!d->accept_paused)
					log_warn("accept: backing off (new connections wait)");
				d->accept_paused = true;
				loop_mod(&d->loop, &d->listen_ev, 0);
				timer_arm(&d->loop, &d->accept_retry, ACCEPT_RETRY_NS, accept_retry);
			} else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
				log_warn("accept");
			}
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN && d->accept_paused) {
				d->accept_paused = false;
				log_info("accept: taking new connections again");
			}
			return;
		}
		if (d->accept_paused) {
			d->accept_paused = false;
			log_info("accept: taking new connections again");
		}
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
			log_warn("SO_PEERCRED");
			close(fd);
			continue;
		}
		if (d->nr_clients + d->nr_targets >= d->o.max_clients + 16) {
			refuse_flood(d, fd, cred.pid);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->d = d;
		c->fd = fd;
		c->peer_pid = cred.pid;
		c->peer_uid = cred.uid;
		c->peer_gid = cred.gid;
		c->uffd = c->pidfd = -1;
		snprintf(c->pfx, sizeof(c->pfx), "client pid %d:", cred.pid);
		if (loop_add(&d->loop, &c->ev, fd, EPOLLIN, client_on_read) < 0) {
			log_warn("%s epoll", c->pfx);
			close(fd);
			free(c);
			continue;
		}
		c->next = d->clients;
		d->clients = c;
		d->nr_clients++;
		d->fds_in_use++;
		timer_arm(&d->loop, &c->deadline, (uint64_t)d->o.handshake_ms * 1000000ull,
			  client_on_deadline);
	}
}
