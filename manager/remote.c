/* Remote mode: the connection to the page server, its requests and answers. */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "pswire.h"
#include "remote.h"

#define PG		4096ull
#define MAX_FLY		64	/* requests in flight */
#define OUT_HDRS	64	/* headers the send buffer holds */
#define CONNECT_MS	5000
#define CLOSE_MS	2000
#define KEEPCNT		3	/* unanswered keepalive probes before the kernel gives up */

struct remote {
	struct daemon *d;
	const struct remote_ops *ops;
	char name[300];		/* "page server HOST:PORT" */
	int fd;
	struct ev ev;
	bool lost;
	bool want_out;		/* EPOLLOUT is on */
	struct rqueue q;
	uint8_t out[OUT_HDRS * PS_HDR_SIZE];
	size_t out_len, out_off;
	struct ps_hdr_in hdr;		/* the answer being read */
	uint8_t *buf;			/* its data */
	uint64_t want, got;
	uint64_t t_open;
	uint64_t timeout_ns;		/* --page-server-timeout */
	uint64_t t_answer;		/* when the last answer was complete */
	struct timer deadline;		/* on the oldest request in flight */
	struct timer keepalive;		/* asks for something when quiet (remote_ops.idle) */
	uint64_t t_request;		/* when the last request was queued */
	struct remote_stats st;
};

static void remote_on_io(struct ev *ev, uint32_t events);

bool remote_alive(const struct remote *r)
{
	return r && !r->lost;
}

struct rqueue *remote_queue(struct remote *r)
{
	return &r->q;
}

/* Connect FD to AI within CONNECT_MS. 0 or -errno. */
static int connect_timed(int fd, const struct addrinfo *ai)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	socklen_t sl = sizeof(int);
	int err = 0;

	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return 0;
	if (errno != EINPROGRESS)
		return -errno;
	if (poll(&p, 1, CONNECT_MS) != 1)
		return -ETIMEDOUT;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
		return -errno;
	return -err;
}

/*
 * Let the kernel notice a dead peer too: keepalive probes on an idle
 * connection, and TCP_USER_TIMEOUT on data it sent that is never acked.
 * Both within about TIMEOUT_MS. Best effort: the deadline timer is the rule.
 */
static void set_keepalive(int fd, unsigned timeout_ms)
{
	int one = 1, idle = (int)(timeout_ms / 1000 / (KEEPCNT + 1)), cnt = KEEPCNT;
	unsigned user = timeout_ms;

	if (idle < 1)
		idle = 1;
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user, sizeof(user));
}

int remote_open(struct daemon *d, const char *addr, const char *port,
		const struct remote_ops *ops, char *why, size_t len)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res, *ai;
	struct remote *r;
	unsigned timeout_ms;
	int ret, fd = -1, one = 1;

	ret = getaddrinfo(addr, port, &hints, &res);
	if (ret) {
		snprintf(why, len, "page server %s:%s: %s", addr, port, gai_strerror(ret));
		return -EINVAL;
	}
	ret = -ENOENT;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			ret = -errno;
			continue;
		}
		ret = connect_timed(fd, ai);
		if (ret == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(why, len, "cannot connect to the page server at %s:%s: %s", addr, port,
			 strerror(-ret));
		return ret;
	}
	/* Requests are small and a fault waits on each: never hold them back. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	timeout_ms = d->o.ps_timeout_ms ? d->o.ps_timeout_ms : REMOTE_TIMEOUT_MS;
	set_keepalive(fd, timeout_ms);
	r = calloc(1, sizeof(*r));
	if (!r) {
		close(fd);
		snprintf(why, len, "out of memory");
		return -ENOMEM;
	}
	r->d = d;
	r->ops = ops;
	r->fd = fd;
	snprintf(r->name, sizeof(r->name), "page server %s:%s", addr, port);
	rq_init(&r->q, MAX_FLY, REMOTE_BG_IDLE);
	r->t_open = now_ns();
	r->timeout_ns = timeout_ms * 1000000ull;
	r->ev.fd = -1;
	r->ev.dead = true;
	d->remote = r;
	log_info("remote: connected to the %s; lazy page data comes from it (answers due within %u ms)",
		 r->name, timeout_ms);
	return 0;
}

/* Every REMOTE_KEEPALIVE_MS: a connection quiet that long asks for something. */
static void remote_on_keepalive(struct timer *tm)
{
	struct remote *r = container_of(tm, struct remote, keepalive);
	uint64_t every = (uint64_t)r->d->o.ps_keepalive_ms * 1000000ull;

	if (r->lost)
		return;
	if (now_ns() - r->t_request >= every && !r->q.nr_fly && !r->q.nr_pend && r->ops->idle) {
		r->ops->idle(r->d);
		remote_pump(r->d);
	}
	timer_arm(&r->d->loop, &r->keepalive, every / 2, remote_on_keepalive);
}

int remote_attach(struct daemon *d)
{
	struct remote *r = d->remote;

	if (loop_add(&d->loop, &r->ev, r->fd, EPOLLIN, remote_on_io) < 0)
		return -errno;
	d->fds_in_use++;
	r->t_request = now_ns();
	if (d->o.ps_keepalive_ms)
		timer_arm(&d->loop, &r->keepalive, (uint64_t)d->o.ps_keepalive_ms * 500000ull,
			  remote_on_keepalive);
	return 0;
}

/*
 * The connection is gone (WHY): nothing more can be fetched. Whoever asked
 * is told (remote_ops.lost), and kills every process not fully served.
 */
static void remote_lost(struct remote *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void remote_lost(struct remote *r, const char *fmt, ...)
{
	char why[256];
	va_list ap;
	unsigned fly = r->q.nr_fly, pend = r->q.nr_pend;

	if (r->lost)
		return;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	r->lost = true;
	timer_cancel(&r->d->loop, &r->deadline);
	timer_cancel(&r->d->loop, &r->keepalive);
	loop_del(&r->d->loop, &r->ev);
	close(r->fd);
	r->fd = -1;
	r->d->fds_in_use--;
	rq_clear(&r->q);
	free(r->buf);
	r->buf = NULL;
	log_warnx("remote: lost the %s: %s (%u requests in flight, %u not sent); %" PRIu64 " pages had come",
		  r->name, why, fly, pend, r->st.pages);
	r->ops->lost(r->d, "killed: page server connection lost");
}

int remote_request(struct remote *r, uint64_t owner, uint32_t pid, uint64_t addr,
		   uint64_t img, uint64_t nr, bool urgent)
{
	struct rreq *q;

	if (r->lost)
		return -ENOTCONN;
	if (!nr || nr > REMOTE_MAX_PAGES)
		return -EINVAL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	*q = (struct rreq){ .target_id = owner, .addr = addr, .img = img, .nr = nr,
			    .pid = pid, .urgent = urgent, .t0 = now_ns() };
	r->t_request = q->t0;
	rq_add(&r->q, q);
	r->st.requests++;
	r->st.urgent += urgent;
	return 0;
}

void remote_promote(struct remote *r, struct rreq *q)
{
	if (rq_promote(&r->q, q)) {
		r->st.promoted++;
		r->st.urgent++;
	}
}

/* The oldest request in flight is late: the server stalled (or the path to it died). */
static void remote_on_deadline(struct timer *tm)
{
	struct remote *r = container_of(tm, struct remote, deadline);
	struct rreq *q = rq_head(&r->q);

	if (!q || r->lost)
		return;
	remote_lost(r, "no answer within %" PRIu64 " ms to GET %" PRIu64 " pages at 0x%" PRIx64 " of pid %u%s",
		    r->timeout_ns / 1000000, q->nr, q->img, q->pid,
		    r->hdr.have ? " (the answer stopped in the middle)" : "");
}

/*
 * Arm the deadline for the oldest request in flight: its answer must be
 * complete within the timeout of the later of its sending and the end of
 * the answer before it (answers come in order: it cannot come sooner).
 */
static void deadline_update(struct remote *r)
{
	struct rreq *q = rq_head(&r->q);
	uint64_t due, now;

	if (!q) {
		timer_cancel(&r->d->loop, &r->deadline);
		return;
	}
	due = (q->t_sent > r->t_answer ? q->t_sent : r->t_answer) + r->timeout_ns;
	now = now_ns();
	timer_arm(&r->d->loop, &r->deadline, due > now ? due - now : 0, remote_on_deadline);
}

/* Watch for EPOLLOUT only while something waits to be sent. */
static void set_want_out(struct remote *r, bool on)
{
	if (r->want_out == on)
		return;
	if (loop_mod(&r->d->loop, &r->ev, EPOLLIN | (on ? EPOLLOUT : 0)) == 0)
		r->want_out = on;
}

void remote_pump(struct daemon *d)
{
	struct remote *r = d->remote;
	bool idle;
	struct rreq *q;

	if (!r || r->lost)
		return;
	if (r->out_off == r->out_len)
		r->out_off = r->out_len = 0;
	idle = !rq_head(&r->q);
	while (r->out_len + PS_HDR_SIZE <= sizeof(r->out) && (q = rq_next(&r->q))) {
		/* GET names the task by its bare pid, as criu's page_server_get_pages does. */
		struct ps_hdr h = { .cmd = ps_cmd(PS_IOV_GET, 0), .nr_pages = q->nr,
				    .vaddr = q->img, .dst_id = q->pid };

		ps_encode(r->out + r->out_len, &h);
		r->out_len += PS_HDR_SIZE;
		q->t_sent = now_ns();
	}
	if (idle && rq_head(&r->q))
		deadline_update(r);
	if (r->q.nr_fly > r->st.max_fly)
		r->st.max_fly = r->q.nr_fly;
	while (r->out_off < r->out_len) {
		ssize_t n = send(r->fd, r->out + r->out_off, r->out_len - r->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			remote_lost(r, "send: %s", strerror(errno));
			return;
		}
		r->out_off += (size_t)n;
	}
	set_want_out(r, r->out_off < r->out_len);
}

/* Check a decoded answer header against the request it answers. NULL if fine, else why not. */
static const char *answer_bad(const struct ps_hdr *h, const struct rreq *q)
{
	uint32_t op = ps_op(h->cmd);

	if (!q)
		return "an answer came with no request in flight";
	if (op != PS_IOV_ADD_F && op != PS_IOV_ADD)
		return "the answer is not ADD_F";
	if (op == PS_IOV_ADD_F && !(ps_flags(h->cmd) & PS_FLAG_PRESENT))
		return "the answer carries no data (flags without PE_PRESENT)";
	if (h->vaddr != q->img || h->dst_id != q->pid)
		return "the answer is for other pages than the request in flight";
	if (h->nr_pages == 0 || h->nr_pages > q->nr)
		return "the answer's page count is 0 or more than was asked";
	return NULL;
}

/* A whole answer is in: hand its pages to whoever asked. */
static void answer_done(struct remote *r)
{
	struct rreq *q = rq_done(&r->q);
	uint64_t nr = r->want / PG;

	r->t_answer = now_ns();
	deadline_update(r);
	r->st.pages += nr;
	r->st.short_answers += nr < q->nr;
	if (q->urgent) {
		r->st.urgent_ns += now_ns() - q->t0;
		r->st.answered_urgent++;
	}
	log_debug("remote: pid %u 0x%" PRIx64 " +%" PRIu64 " pages (%" PRIu64 " asked, %s)", q->pid,
		  q->img, nr, q->nr, q->urgent ? "fault" : "fill");
	r->ops->answer(r->d, q->target_id, q->addr, q->img, r->buf, r->want);
	r->buf = NULL;
	r->hdr.have = 0;
	r->want = r->got = 0;
	free(q);
	r->d->loop.idle_pending = true;
}

/* Read what the socket has: headers, then data. */
static void remote_read(struct remote *r)
{
	for (;;) {
		bool hdr = r->hdr.have < PS_HDR_SIZE;	/* this read is for the header */
		ssize_t n;

		if (hdr) {
			n = ps_hdr_recv(r->fd, &r->hdr);
		} else {
			n = recv(r->fd, r->buf + r->got, r->want - r->got, MSG_DONTWAIT);
			if (n < 0)
				n = -errno;
		}
		if (n == -EINTR)
			continue;
		if (n == -EAGAIN)
			return;
		if (n < 0) {
			remote_lost(r, "recv: %s", strerror((int)-n));
			return;
		}
		if (n == 0) {
			remote_lost(r, "the server closed the connection%s",
				    r->hdr.have ? " in the middle of an answer" : "");
			return;
		}
		if (hdr) {
			struct ps_hdr h;
			const char *bad;

			if (r->hdr.have < PS_HDR_SIZE)
				continue;
			ps_decode(r->hdr.b, &h);
			bad = answer_bad(&h, rq_head(&r->q));
			if (bad) {
				remote_lost(r, "protocol error: %s (cmd 0x%x, %" PRIu64 " pages at 0x%" PRIx64 ", dst_id %" PRIu64 ")",
					    bad, h.cmd, h.nr_pages, h.vaddr, h.dst_id);
				return;
			}
			r->want = h.nr_pages * PG;	/* at most REMOTE_MAX_PAGES: checked against the request */
			r->got = 0;
			if (posix_memalign((void **)&r->buf, PG, r->want)) {
				r->buf = NULL;
				remote_lost(r, "out of memory for an answer of %" PRIu64 " bytes", r->want);
				return;
			}
			continue;
		}
		r->got += (uint64_t)n;
		if (r->got == r->want) {
			answer_done(r);
			if (r->lost)
				return;
		}
	}
}

static void remote_on_io(struct ev *ev, uint32_t events)
{
	struct remote *r = container_of(ev, struct remote, ev);

	if (events & EPOLLIN)
		remote_read(r);
	if (!r->lost && (events & EPOLLOUT))
		remote_pump(r->d);
}

/*
 * Read LEN bytes from the non-blocking FD within MS: it may come in pieces.
 * 0, -ETIMEDOUT, -ECONNRESET on EOF, or -errno.
 */
static int recv_timed(int fd, void *buf, size_t len, int ms)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000ull;
	size_t got = 0;

	while (got < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint64_t now = now_ns();
		ssize_t n;
		int ret;

		if (now >= end)
			return -ETIMEDOUT;
		ret = poll(&p, 1, (int)((end - now + 999999) / 1000000));
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret < 0)
			return -errno;
		if (ret == 0)
			return -ETIMEDOUT;
		n = recv(fd, (uint8_t *)buf + got, len - got, MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		got += (size_t)n;
	}
	return 0;
}

/* Say CLOSE and read the status word, as criu lazy-pages does at its end. */
static void say_close(struct remote *r)
{
	struct ps_hdr h = { .cmd = PS_IOV_CLOSE };
	uint8_t buf[PS_HDR_SIZE];
	int32_t status = -1;
	int ret;

	ps_encode(buf, &h);
	if (send(r->fd, buf, sizeof(buf), MSG_NOSIGNAL) != (ssize_t)sizeof(buf)) {
		log_warn("remote: sending CLOSE to the %s", r->name);
		return;
	}
	ret = recv_timed(r->fd, &status, sizeof(status), CLOSE_MS);
	if (ret < 0)
		log_warnx("remote: the %s did not answer CLOSE: %s", r->name,
			  ret == -ECONNRESET ? "it hung up" : strerror(-ret));
	else if (status)
		log_warnx("remote: the %s answered CLOSE with status %d", r->name, status);
}

/*
 * Keep the connection open in a process of its own, so that the source
 * stays frozen and waiting after we exit: CRIU 4.2's page server takes a
 * plain hang-up (EOF) for the end of a successful transfer, as it takes
 * CLOSE, and then kills the source's tasks. With SO_LINGER 0 the holder's
 * end, whenever it comes (a signal, or the source hanging up), is a reset,
 * which CRIU takes for a failed transfer: it then resumes the source's tasks.
 * Returns the holder's pid, or -errno (then the connection is reset at once).
 */
static pid_t hold_connection(struct remote *r)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	sigset_t all;
	pid_t pid;

	if (setsockopt(r->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
		return -errno;
	pid = fork();
	if (pid != 0)
		return pid < 0 ? -errno : pid;
	/* The holder: nothing but the connection; its own session, so no terminal signal ends it. */
	if (r->fd != 3 && dup3(r->fd, 3, 0) < 0)
		_exit(1);
	close_range(0, 2, 0);
	close_range(4, ~0u, 0);
	setsid();
	prctl(PR_SET_NAME, "uffd-ps-hold");
	/* The daemon blocks the signals it reads through signalfd: the holder must die of them. */
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	for (;;) {
		struct pollfd p = { .fd = 3, .events = POLLRDHUP };

		if (poll(&p, 1, -1) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
			_exit(0);	/* the source hung up: nothing left to keep */
	}
}

void remote_close(struct daemon *d, bool done)
{
	struct remote *r = d->remote;
	pid_t holder;
	double s;

	if (!r)
		return;
	s = (now_ns() - r->t_open) / 1e9;
	if (done && !r->lost && !r->q.nr_fly && r->out_off == r->out_len) {
		say_close(r);
	} else if (!r->lost) {
		holder = hold_connection(r);
		if (holder > 0)
			log_warnx("remote: the restore did not finish: CLOSE not sent, so the source (criu dump --lazy-pages) is left frozen, waiting on this connection, now held by process %d (uffd-ps-hold). End the holder (kill %d) to let the source resume: it then sees a reset, reports the transfer failed and resumes its tasks (its page server takes one connection, so another try needs a new dump)",
				  (int)holder, (int)holder);
		else
			log_warnx("remote: the restore did not finish: CLOSE not sent; cannot keep the connection to the %s open (%s): resetting it, so that the source reports the transfer failed and resumes its tasks rather than ending them",
				  r->name, strerror(-holder));
	}
	log_info("remote: fetched %" PRIu64 " pages (%.1f MiB) in %.3f s with %" PRIu64 " requests (%" PRIu64 " for faults, %" PRIu64 " in the background, %" PRIu64 " promoted), %" PRIu64 " short answers, up to %" PRIu64 " in flight; fault round trip %.0f us on average",
		 r->st.pages, r->st.pages * 4096.0 / (1 << 20), s, r->st.requests, r->st.urgent,
		 r->st.requests - r->st.urgent, r->st.promoted, r->st.short_answers, r->st.max_fly,
		 r->st.answered_urgent ? r->st.urgent_ns / 1e3 / r->st.answered_urgent : 0.0);
	timer_cancel(&d->loop, &r->deadline);
	timer_cancel(&d->loop, &r->keepalive);
	if (!r->lost) {
		loop_del(&d->loop, &r->ev);
		close(r->fd);
	}
	rq_clear(&r->q);
	free(r->buf);
	free(r);
	d->remote = NULL;
}
