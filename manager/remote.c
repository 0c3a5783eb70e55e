/* Remote mode: the connection to the page server, its requests and answers. */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
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
#include "tls.h"
#include "manager.pb-c.h"

#define PG		4096ull
#define MAX_FLY		64	/* requests in flight */
#define OUT_HDRS	64	/* headers the send buffer holds */
#define CONNECT_MS	5000
#define CLOSE_MS	2000
#define KEEPCNT		3	/* unanswered keepalive probes before the kernel gives up */
#define WATCH_NS	(100 * 1000000ull)	/* how often stalls, attempts and the grace are checked */
#define STALL_MS	1000	/* TLS: this long silent with answers due starts a reconnect alongside */
#define ATTEMPT_MS	1500	/* a reconnect's connect and handshake */
#define BACKOFF_MIN_MS	100
#define BACKOFF_MAX_MS	500

/* One TCP connection to the page server, maybe under TLS. fd < 0: none. */
struct link {
	int fd;
	struct tls_sess *tls;
	struct ev ev;
	bool in_loop;
	bool want_out;		/* EPOLLOUT is on */
	bool connected;		/* an attempt: TCP is up (then the handshake) */
};

struct remote {
	struct remote *next;	/* in d->remotes (hand-overs with a page server of their own) */
	const void *img;	/* theirs: the images it serves (rserve.c's key) */
	struct daemon *d;
	const struct remote_ops *ops;
	char name[300];		/* "page server HOST:PORT" */
	char addr[256], port[32];
	/*
	 * The address the first connect reached: reconnects go there, so that
	 * no name lookup (which may wait seconds on an unreachable resolver,
	 * as likely in the same outage) runs on the loop.
	 */
	struct sockaddr_storage sa;
	socklen_t sa_len;
	int sa_type, sa_proto;
	struct tls_creds *creds;	/* --tls; NULL: plain TCP */
	bool cn_verify;		/* the server's certificate must name addr */
	struct link cur;	/* the connection in use (fd < 0 while there is none) */
	struct link att;	/* a new connection being made (reconnect) */
	bool lost;		/* for good: nothing more will come */
	uint64_t down_since;	/* when the connection broke or stalled; 0 while healthy */
	const char *down_why;	/* "cut" or "stalled" */
	uint64_t att_t0;	/* when the attempt began */
	uint64_t next_try;	/* no attempt before this */
	unsigned backoff_ms;
	unsigned attempts;	/* since down_since */
	uint64_t grace_ns;	/* --page-server-grace */
	uint64_t stall_ns;	/* TLS: silence that starts a reconnect alongside */
	uint64_t t_rx;		/* when the last byte came */
	struct timer watch;	/* stall, attempts, grace */
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
static void pump_one(struct remote *r);
static void att_on_io(struct ev *ev, uint32_t events);
static void remote_lost(struct remote *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void link_break(struct remote *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

bool remote_alive(const struct remote *r)
{
	return r && !r->lost;
}

struct rqueue *remote_queue(struct remote *r)
{
	return &r->q;
}

void remote_set_img(struct remote *r, const void *img)
{
	r->img = img;
}

const void *remote_img(const struct remote *r)
{
	return r->img;
}

struct remote **remote_nextp(struct remote *r)
{
	return &r->next;
}

const char *remote_state(const struct remote *r)
{
	if (!r)
		return "none";
	if (r->lost)
		return "lost";
	if (r->cur.fd < 0)
		return "reconnecting";
	if (r->down_since)
		return "stalled";
	return "up";
}

void remote_status(const struct remote *r, struct remote_status *s)
{
	*s = (struct remote_status){ .state = remote_state(r) };
	if (!r)
		return;
	snprintf(s->server, sizeof(s->server), "%s:%s", r->addr, r->port);
	s->tls = r->creds != NULL;
	s->reconnects = r->st.reconnects;
	s->pages = r->st.pages;
	s->down_ms = r->down_since ? (now_ns() - r->down_since) / 1000000 : 0;
}

void remote_status_totals(const struct remote *r, StatusTotals *t)
{
	static __thread struct remote_status s;	/* the strings live until the reply is packed */

	remote_status(r, &s);
	t->page_server = s.server;
	t->page_server_state = (char *)s.state;
	t->has_page_server_tls = true;
	t->page_server_tls = s.tls;
	t->has_page_server_reconnects = true;
	t->page_server_reconnects = s.reconnects;
	t->has_page_server_down_ms = true;
	t->page_server_down_ms = s.down_ms;
}

void remote_status_target(const struct remote *r, StatusTarget *t)
{
	static __thread struct remote_status s;	/* the strings live until the reply is packed */

	remote_status(r, &s);
	t->page_server = s.server;
	t->page_server_state = (char *)s.state;
}

/* Send on L: bytes, or -errno (-EAGAIN). */
static ssize_t link_send(struct link *l, const void *buf, size_t len)
{
	ssize_t n;

	if (l->tls)
		return tls_send(l->tls, buf, len);
	do
		n = send(l->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

/* Receive on L: bytes, 0 at EOF, or -errno (-EAGAIN). */
static ssize_t link_recv(struct link *l, void *buf, size_t len)
{
	ssize_t n;

	if (l->tls)
		return tls_recv(l->tls, buf, len);
	do
		n = recv(l->fd, buf, len, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

/*
 * Drop L with a reset (SO_LINGER 0), never a clean end: CRIU's page server
 * takes a plain hang-up for a finished transfer and kills the source's
 * tasks; a reset makes it report a failure and resume them.
 */
static void link_abort(struct remote *r, struct link *l)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	if (l->fd < 0)
		return;
	if (l->in_loop) {
		loop_del(&r->d->loop, &l->ev);
		r->d->fds_in_use--;
	}
	tls_sess_free(l->tls);
	setsockopt(l->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(l->fd);
	/* Events of this batch for it are ignored (dead). */
	*l = (struct link){ .fd = -1, .ev = { .fd = -1, .dead = true } };
}

/* Start a non-blocking connect to AI. The fd, or -errno. */
static int connect_start(const struct addrinfo *ai)
{
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			ai->ai_protocol);

	if (fd < 0)
		return -errno;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS)
		return fd;
	close(fd);
	return -errno;
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

/* Options of every connection to the server: no delay on requests, keepalive. */
static void link_sockopts(struct remote *r, int fd)
{
	int one = 1;

	/* Requests are small and a fault waits on each: never hold them back. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	set_keepalive(fd, (unsigned)(r->timeout_ns / 1000000));
}

/* Drive the TLS handshake of L on its blocking path, within CONNECT_MS. 0 or -errno with WHY. */
static int handshake_timed(struct link *l, char *why, size_t len)
{
	uint64_t end = now_ns() + CONNECT_MS * 1000000ull;
	int ret;

	while ((ret = tls_handshake(l->tls, why, len)) == -EAGAIN) {
		struct pollfd p = { .fd = l->fd, .events = tls_want_write(l->tls) ? POLLOUT : POLLIN };
		uint64_t now = now_ns();

		if (now >= end || poll(&p, 1, (int)((end - now) / 1000000) + 1) == 0) {
			snprintf(why, len, "TLS handshake: no answer within %d ms", CONNECT_MS);
			return -ETIMEDOUT;
		}
	}
	return ret;
}

int remote_open(struct daemon *d, const char *addr, const char *port,
		const struct remote_ops *ops, const struct tls_opts *tls, char *why, size_t len)
{
	struct remote *r;
	int ret = remote_connect(d, addr, port, ops, tls, &r, why, len);

	if (ret == 0)
		d->remote = r;
	return ret;
}

int remote_connect(struct daemon *d, const char *addr, const char *port,
		   const struct remote_ops *ops, const struct tls_opts *tls, struct remote **out,
		   char *why, size_t len)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res, *ai;
	struct remote *r;
	unsigned timeout_ms;
	int ret, fd = -1;

	r = calloc(1, sizeof(*r));
	if (!r) {
		snprintf(why, len, "out of memory");
		return -ENOMEM;
	}
	r->d = d;
	r->cur.fd = r->att.fd = -1;
	snprintf(r->addr, sizeof(r->addr), "%s", addr);
	snprintf(r->port, sizeof(r->port), "%s", port);
	timeout_ms = d->o.ps_timeout_ms ? d->o.ps_timeout_ms : REMOTE_TIMEOUT_MS;
	r->timeout_ns = timeout_ms * 1000000ull;
	if (tls && tls->on) {
		r->creds = tls_creds_load(tls, why, len);
		if (!r->creds) {
			free(r);
			return -EINVAL;
		}
		r->cn_verify = !tls->no_cn_verify;
	}
	ret = getaddrinfo(addr, port, &hints, &res);
	if (ret) {
		snprintf(why, len, "page server %s:%s: %s", addr, port, gai_strerror(ret));
		tls_creds_free(r->creds);
		free(r);
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
		if (ret == 0 && ai->ai_addrlen <= sizeof(r->sa)) {
			memcpy(&r->sa, ai->ai_addr, ai->ai_addrlen);
			r->sa_len = ai->ai_addrlen;
			r->sa_type = ai->ai_socktype;
			r->sa_proto = ai->ai_protocol;
			break;
		}
		if (ret == 0)
			ret = -EAFNOSUPPORT;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(why, len, "cannot connect to the page server at %s:%s: %s", addr, port,
			 strerror(-ret));
		tls_creds_free(r->creds);
		free(r);
		return ret;
	}
	r->cur.fd = fd;
	link_sockopts(r, fd);
	if (r->creds) {
		char tw[512];

		r->cur.tls = tls_sess_new(r->creds, fd, false, r->cn_verify ? addr : NULL, tw,
					  sizeof(tw));
		ret = r->cur.tls ? handshake_timed(&r->cur, tw, sizeof(tw)) : -ENOMEM;
		if (ret < 0) {
			snprintf(why, len, "page server %s:%s: %s", addr, port, tw);
			link_abort(r, &r->cur);
			tls_creds_free(r->creds);
			free(r);
			return ret;
		}
	}
	r->ops = ops;
	snprintf(r->name, sizeof(r->name), "page server %s:%s", addr, port);
	if (r->cur.tls)
		log_info("remote: page server %s:%s: TLS %s", addr, port, tls_desc(r->cur.tls));
	rq_init(&r->q, MAX_FLY, REMOTE_BG_IDLE);
	r->t_open = r->t_rx = now_ns();
	r->grace_ns = (uint64_t)d->o.ps_grace_ms * 1000000ull;
	r->stall_ns = STALL_MS * 1000000ull < r->timeout_ns ? STALL_MS * 1000000ull : r->timeout_ns;
	*out = r;
	log_info("remote: connected to the %s%s; lazy page data comes from it (answers due within %u ms), reconnecting for up to %u ms if the connection breaks",
		 r->name, r->creds ? " over TLS (certificate checked)" : "", timeout_ms,
		 d->o.ps_grace_ms);
	return 0;
}

/* Every REMOTE_KEEPALIVE_MS: a connection quiet that long asks for something. */
static void remote_on_keepalive(struct timer *tm)
{
	struct remote *r = container_of(tm, struct remote, keepalive);
	uint64_t every = (uint64_t)r->d->o.ps_keepalive_ms * 1000000ull;

	if (r->lost)
		return;
	if (r->cur.fd >= 0 && now_ns() - r->t_request >= every && !r->q.nr_fly &&
	    !r->q.nr_pend && r->ops->idle) {
		r->ops->idle(r->d, r);
		pump_one(r);
	}
	timer_arm(&r->d->loop, &r->keepalive, every / 2, remote_on_keepalive);
}

static void remote_on_watch(struct timer *tm);

int remote_attach(struct daemon *d)
{
	return remote_attach_r(d->remote);
}

int remote_attach_r(struct remote *r)
{
	struct daemon *d = r->d;

	if (loop_add(&d->loop, &r->cur.ev, r->cur.fd, EPOLLIN, remote_on_io) < 0)
		return -errno;
	r->cur.in_loop = true;
	d->fds_in_use++;
	r->t_request = now_ns();
	if (d->o.ps_keepalive_ms)
		timer_arm(&d->loop, &r->keepalive, (uint64_t)d->o.ps_keepalive_ms * 500000ull,
			  remote_on_keepalive);
	timer_arm(&d->loop, &r->watch, WATCH_NS, remote_on_watch);
	return 0;
}

/*
 * The connection is gone for good (WHY): nothing more can be fetched.
 * Whoever asked is told (remote_ops.lost), and kills every process not
 * fully served.
 */
static void remote_lost(struct remote *r, const char *fmt, ...)
{
	char why[512];
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
	timer_cancel(&r->d->loop, &r->watch);
	link_abort(r, &r->cur);
	link_abort(r, &r->att);
	rq_clear(&r->q);
	free(r->buf);
	r->buf = NULL;
	log_warnx("remote: lost the %s: %s (%u requests in flight, %u not sent); %" PRIu64 " pages had come",
		  r->name, why, fly, pend, r->st.pages);
	r->ops->lost(r->d, r, "killed: page server connection lost");
}

/* Forget the answer being read and put every request in flight back in the queue. */
static void requeue_in_flight(struct remote *r)
{
	timer_cancel(&r->d->loop, &r->deadline);
	free(r->buf);
	r->buf = NULL;
	r->hdr.have = 0;
	r->want = r->got = 0;
	r->out_off = r->out_len = 0;
	r->st.reasked += r->q.nr_fly;
	rq_requeue(&r->q);
}

/* Trouble began (WHY): the grace starts now unless it already runs. */
static void mark_down(struct remote *r, const char *why)
{
	if (r->down_since)
		return;
	r->down_since = now_ns();
	r->down_why = why;
	r->attempts = 0;
	r->backoff_ms = 0;
	r->next_try = 0;
	r->st.cuts++;
}

/*
 * The connection broke (WHY): drop it. Within the grace the processes wait
 * while we reconnect and ask again for what was in flight; with no grace
 * (or once it is over) the old ending applies.
 */
static void link_break(struct remote *r, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (!r->grace_ns) {
		remote_lost(r, "%s", why);
		return;
	}
	link_abort(r, &r->cur);
	mark_down(r, "cut");
	log_warnx("remote: the connection to the %s broke: %s; %u requests in flight will be asked again; reconnecting for up to %.1f s more (--page-server-grace); the processes wait meanwhile",
		  r->name, why, r->q.nr_fly,
		  (r->grace_ns - (now_ns() - r->down_since)) / 1e9);
	requeue_in_flight(r);
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

	if (!q || r->lost || r->cur.fd < 0)
		return;
	link_break(r, "no answer within %" PRIu64 " ms to GET %" PRIu64 " pages at 0x%" PRIx64 " of pid %u%s",
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

	if (!q || r->cur.fd < 0) {
		timer_cancel(&r->d->loop, &r->deadline);
		return;
	}
	due = (q->t_sent > r->t_answer ? q->t_sent : r->t_answer) + r->timeout_ns;
	now = now_ns();
	timer_arm(&r->d->loop, &r->deadline, due > now ? due - now : 0, remote_on_deadline);
}

/* Watch L for EPOLLOUT only while something waits to be sent. */
static void set_want_out(struct remote *r, struct link *l, bool on)
{
	if (l->want_out == on || !l->in_loop)
		return;
	if (loop_mod(&r->d->loop, &l->ev, EPOLLIN | (on ? EPOLLOUT : 0)) == 0)
		l->want_out = on;
}

void remote_pump(struct daemon *d)
{
	pump_one(d->remote);
	for (struct remote *r = d->remotes; r; r = r->next)
		pump_one(r);
}

static void pump_one(struct remote *r)
{
	bool idle;
	struct rreq *q;

	if (!r || r->lost || r->cur.fd < 0)
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
		ssize_t n = link_send(&r->cur, r->out + r->out_off, r->out_len - r->out_off);

		if (n == -EAGAIN)
			break;
		if (n <= 0) {
			link_break(r, "send: %s", n == 0 ? "nothing sent" :
				   r->cur.tls && n == -EPROTO ? tls_strerror(r->cur.tls) : strerror((int)-n));
			return;
		}
		r->out_off += (size_t)n;
	}
	set_want_out(r, &r->cur, r->out_off < r->out_len);
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

/* The stalled connection moves again: whatever attempt was made alongside is not needed. */
static void recovered(struct remote *r)
{
	log_info("remote: the %s answers again after %.1f s stalled; kept the connection",
		 r->name, (now_ns() - r->down_since) / 1e9);
	link_abort(r, &r->att);
	r->down_since = 0;
}

/* Read what the socket has: headers, then data. */
static void remote_read(struct remote *r)
{
	for (;;) {
		bool hdr = r->hdr.have < PS_HDR_SIZE;	/* this read is for the header */
		ssize_t n;

		if (hdr)
			n = link_recv(&r->cur, r->hdr.b + r->hdr.have, PS_HDR_SIZE - r->hdr.have);
		else
			n = link_recv(&r->cur, r->buf + r->got, r->want - r->got);
		if (n == -EAGAIN)
			return;
		if (n == -EACCES) {
			/* TLS 1.3: a server that refuses our certificate says so after our handshake ends. */
			remote_lost(r, "%s", tls_strerror(r->cur.tls));
			return;
		}
		if (n < 0) {
			link_break(r, "recv: %s", r->cur.tls && n == -EPROTO ?
				   tls_strerror(r->cur.tls) : strerror((int)-n));
			return;
		}
		if (n == 0) {
			link_break(r, "the server closed the connection%s",
				   r->hdr.have ? " in the middle of an answer" : "");
			return;
		}
		r->t_rx = now_ns();
		if (r->down_since)
			recovered(r);
		if (hdr) {
			struct ps_hdr h;
			const char *bad;

			r->hdr.have += (size_t)n;
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
			if (r->lost || r->cur.fd < 0)
				return;
		}
	}
}

static void remote_on_io(struct ev *ev, uint32_t events)
{
	struct remote *r = container_of(ev, struct remote, cur.ev);

	if (r->cur.fd < 0 || r->lost)
		return;
	if (events & EPOLLIN)
		remote_read(r);
	if (!r->lost && r->cur.fd >= 0 && (events & EPOLLOUT))
		pump_one(r);
}

/* An attempt failed (WHY): drop it and wait a little longer before the next. */
static void att_failed(struct remote *r, const char *why)
{
	link_abort(r, &r->att);
	r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : BACKOFF_MIN_MS;
	if (r->backoff_ms > BACKOFF_MAX_MS)
		r->backoff_ms = BACKOFF_MAX_MS;
	r->next_try = now_ns() + r->backoff_ms * 1000000ull;
	if (r->attempts <= 3 || r->attempts % 20 == 0)
		log_info("remote: reconnect attempt %u to the %s failed: %s; next in %u ms", r->attempts,
			 r->name, why, r->backoff_ms);
}

/* The new connection is ready: it replaces the old one (if any), and what was in flight is asked again. */
static void att_done(struct remote *r)
{
	double s = (now_ns() - r->down_since) / 1e9;

	if (r->cur.fd >= 0) {
		link_abort(r, &r->cur);
		requeue_in_flight(r);
	}
	/* The ev moves with the struct: epoll is told of its new place. */
	loop_del(&r->d->loop, &r->att.ev);
	r->cur = r->att;
	r->att = (struct link){ .fd = -1, .ev = { .fd = -1, .dead = true } };
	r->cur.want_out = false;
	if (loop_add(&r->d->loop, &r->cur.ev, r->cur.fd, EPOLLIN, remote_on_io) < 0) {
		r->cur.in_loop = false;
		r->d->fds_in_use--;
		link_break(r, "epoll: %s", strerror(errno));
		return;
	}
	r->st.reconnects++;
	r->down_since = 0;
	r->t_rx = r->t_answer = now_ns();
	log_warnx("remote: reconnected to the %s%s after %.2f s (%u attempts); asking again for %u requests",
		  r->name, r->cur.tls ? " (TLS, certificate checked)" : "", s, r->attempts,
		  r->q.nr_pend);
	pump_one(r);
}

/* Step the attempt on L: the connect's result, then the TLS handshake. */
static void att_step(struct remote *r)
{
	struct link *l = &r->att;
	char why[512];
	int ret, err = 0;
	socklen_t sl = sizeof(err);

	if (!l->connected) {
		if (getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
			err = errno;
		if (err) {
			att_failed(r, strerror(err));
			return;
		}
		{
			struct sockaddr_storage ss;
			socklen_t pl = sizeof(ss);

			/* No error yet, and no peer yet: the connect is still under way. */
			if (getpeername(l->fd, (struct sockaddr *)&ss, &pl) < 0)
				return;
		}
		l->connected = true;
		link_sockopts(r, l->fd);
		if (r->creds) {
			l->tls = tls_sess_new(r->creds, l->fd, false, r->cn_verify ? r->addr : NULL,
					      why, sizeof(why));
			if (!l->tls) {
				att_failed(r, why);
				return;
			}
		}
	}
	if (l->tls) {
		ret = tls_handshake(l->tls, why, sizeof(why));
		if (ret == -EAGAIN) {
			loop_mod(&r->d->loop, &l->ev, tls_want_write(l->tls) ? EPOLLOUT : EPOLLIN);
			return;
		}
		if (ret < 0) {
			att_failed(r, why);
			return;
		}
	}
	att_done(r);
}

static void att_on_io(struct ev *ev, uint32_t events)
{
	struct remote *r = container_of(ev, struct remote, att.ev);

	(void)events;
	if (r->att.fd >= 0 && !r->lost)
		att_step(r);
}

/*
 * Begin a new connection to the server (non-blocking), at the address the
 * first connect reached: the name is not looked up again.
 */
static void att_start(struct remote *r)
{
	struct addrinfo ai = { .ai_family = r->sa.ss_family, .ai_socktype = r->sa_type,
			       .ai_protocol = r->sa_proto, .ai_addrlen = r->sa_len,
			       .ai_addr = (struct sockaddr *)&r->sa };
	int fd;

	r->attempts++;
	r->att_t0 = now_ns();
	fd = connect_start(&ai);
	if (fd < 0) {
		att_failed(r, strerror(-fd));
		return;
	}
	r->att = (struct link){ .fd = fd };
	if (loop_add(&r->d->loop, &r->att.ev, fd, EPOLLOUT, att_on_io) < 0) {
		close(fd);
		r->att.fd = -1;
		att_failed(r, "epoll");
		return;
	}
	r->att.in_loop = true;
	r->d->fds_in_use++;
}

/*
 * Every WATCH_NS: a TLS connection silent for a while with answers due
 * starts a reconnect alongside (the old one is kept, in case it moves
 * again); an attempt too slow is dropped; the next one is started after its
 * back-off; past the grace the old ending applies.
 */
static void remote_on_watch(struct timer *tm)
{
	struct remote *r = container_of(tm, struct remote, watch);
	uint64_t now = now_ns();
	struct rreq *q = rq_head(&r->q);

	if (r->lost)
		return;
	if (r->cur.fd >= 0 && !r->down_since && r->creds && r->grace_ns && q &&
	    now - (r->t_rx > q->t_sent ? r->t_rx : q->t_sent) >= r->stall_ns) {
		mark_down(r, "stalled");
		log_warnx("remote: the %s sent nothing for %.1f s with %u requests in flight; trying a new connection alongside",
			  r->name, (now - (r->t_rx > q->t_sent ? r->t_rx : q->t_sent)) / 1e9,
			  r->q.nr_fly);
		now = r->down_since;
	}
	if (r->down_since && now - r->down_since >= r->grace_ns) {
		remote_lost(r, "%s for %.1f s (--page-server-grace), %u reconnect attempts failed",
			    r->cur.fd >= 0 ? "stalled" : "no connection", (now - r->down_since) / 1e9,
			    r->attempts);
		return;
	}
	if (r->att.fd >= 0 && now - r->att_t0 >= ATTEMPT_MS * 1000000ull)
		att_failed(r, r->att.connected ? "TLS handshake timed out" : "connect timed out");
	if (r->down_since && r->att.fd < 0 && now >= r->next_try)
		att_start(r);
	timer_arm(&r->d->loop, &r->watch, WATCH_NS, remote_on_watch);
}

/*
 * Read LEN bytes from the non-blocking link L within MS: it may come in pieces.
 * 0, -ETIMEDOUT, -ECONNRESET on EOF, or -errno.
 */
static int recv_timed(struct link *l, void *buf, size_t len, int ms)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000ull;
	size_t got = 0;

	while (got < len) {
		struct pollfd p = { .fd = l->fd, .events = POLLIN };
		uint64_t now = now_ns();
		ssize_t n;
		int ret;

		n = link_recv(l, (uint8_t *)buf + got, len - got);
		if (n > 0) {
			got += (size_t)n;
			continue;
		}
		if (n == 0)
			return -ECONNRESET;
		if (n != -EAGAIN)
			return (int)n;
		if (now >= end)
			return -ETIMEDOUT;
		ret = poll(&p, 1, (int)((end - now + 999999) / 1000000));
		if (ret < 0 && errno != EINTR)
			return -errno;
		if (ret == 0)
			return -ETIMEDOUT;
	}
	return 0;
}

/* Send all of BUF on L within MS. 0 or -errno. */
static int send_timed(struct link *l, const void *buf, size_t len, int ms)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000ull;
	size_t off = 0;

	while (off < len) {
		struct pollfd p = { .fd = l->fd, .events = POLLOUT };
		ssize_t n = link_send(l, (const uint8_t *)buf + off, len - off);
		uint64_t now = now_ns();

		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n != -EAGAIN)
			return n ? (int)n : -EPIPE;
		if (now >= end)
			return -ETIMEDOUT;
		poll(&p, 1, (int)((end - now + 999999) / 1000000));
	}
	return 0;
}

/*
 * Under TLS, end as CRIU's page server expects after CLOSE: it says
 * close_notify and waits for ours, then waits for our hang-up and takes
 * any byte or a reset for a failed transfer (then it resumes the source
 * instead of ending it). So: our close_notify, our FIN, then read what it
 * sends until its own hang-up, so that our close resets nothing.
 */
static void tls_end_clean(struct remote *r)
{
	uint64_t end = now_ns() + CLOSE_MS * 1000000ull;
	uint8_t sink[512];

	tls_bye(r->cur.tls);
	shutdown(r->cur.fd, SHUT_WR);
	for (;;) {
		struct pollfd p = { .fd = r->cur.fd, .events = POLLIN };
		uint64_t now = now_ns();
		ssize_t n = recv(r->cur.fd, sink, sizeof(sink), MSG_DONTWAIT);

		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			return;
		if (n > 0)
			continue;
		if (now >= end || poll(&p, 1, (int)((end - now) / 1000000) + 1) == 0) {
			log_warnx("remote: the %s did not hang up within %d ms after CLOSE", r->name,
				  CLOSE_MS);
			return;
		}
	}
}

/* Say CLOSE and read the status word, as criu lazy-pages does at its end. */
static void say_close(struct remote *r)
{
	struct ps_hdr h = { .cmd = PS_IOV_CLOSE };
	uint8_t buf[PS_HDR_SIZE];
	int32_t status = -1;
	int ret;

	ps_encode(buf, &h);
	ret = send_timed(&r->cur, buf, sizeof(buf), CLOSE_MS);
	if (ret < 0) {
		log_warnx("remote: sending CLOSE to the %s: %s", r->name, strerror(-ret));
		return;
	}
	ret = recv_timed(&r->cur, &status, sizeof(status), CLOSE_MS);
	if (ret < 0)
		log_warnx("remote: the %s did not answer CLOSE: %s", r->name,
			  ret == -ECONNRESET ? "it hung up" : strerror(-ret));
	else if (status)
		log_warnx("remote: the %s answered CLOSE with status %d", r->name, status);
	if (r->cur.tls && ret == 0)
		tls_end_clean(r);
}

/* Connections being ended on closer threads (say_close_async), at most MAX_CLOSERS. */
#define MAX_CLOSERS	16
static unsigned closers;

static void *closer_main(void *arg)
{
	struct remote *c = arg;
	int fd = c->cur.fd;

	say_close(c);
	tls_sess_free(c->cur.tls);
	tls_creds_free(c->creds);
	free(c);
	__atomic_fetch_sub(&closers, 1, __ATOMIC_RELAXED);
	close(fd);	/* last: whoever waits for the hang-up finds the rest done */
	return NULL;
}

/*
 * Say CLOSE to a hand-over's own server off the loop: the wait for its
 * status (and, under TLS, for its hang-up) may take 2 s each when it does
 * not answer, and every other process's faults would wait as long. The
 * connection (fd, TLS session and its credentials) moves to a detached
 * thread, which ends it as say_close would. True if the thread took it;
 * false leaves R as it was (too many closers already, or no thread): the
 * caller resets it.
 */
static bool say_close_async(struct remote *r)
{
	struct remote *c;
	pthread_attr_t at;
	pthread_t th;
	bool ok;

	if (__atomic_add_fetch(&closers, 1, __ATOMIC_RELAXED) > MAX_CLOSERS ||
	    !(c = calloc(1, sizeof(*c)))) {
		__atomic_fetch_sub(&closers, 1, __ATOMIC_RELAXED);
		return false;
	}
	c->cur = r->cur;
	c->creds = r->creds;
	memcpy(c->name, r->name, sizeof(c->name));
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	ok = pthread_create(&th, &at, closer_main, c) == 0;
	pthread_attr_destroy(&at);
	if (!ok) {
		free(c);
		__atomic_fetch_sub(&closers, 1, __ATOMIC_RELAXED);
		return false;
	}
	/* The thread owns them now: the rest of remote_free must not close or free them. */
	r->creds = NULL;
	r->cur.tls = NULL;
	r->cur.fd = -1;
	return true;
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
	int fd = r->cur.fd;

	if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0)
		return -errno;
	pid = fork();
	if (pid != 0)
		return pid < 0 ? -errno : pid;
	/* The holder: nothing but the connection; its own session, so no terminal signal ends it. */
	if (fd != 3 && dup3(fd, 3, 0) < 0)
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
	remote_free(d->remote, done);
	d->remote = NULL;
}

void remote_free(struct remote *r, bool done)
{
	struct daemon *d;
	pid_t holder;
	double s;

	if (!r)
		return;
	d = r->d;
	s = (now_ns() - r->t_open) / 1e9;
	link_abort(r, &r->att);
	if (done && !r->lost && r->cur.fd >= 0 && !r->q.nr_fly && r->out_off == r->out_len &&
	    d->remote == r) {
		say_close(r);	/* CRIU mode's server, at the end: nothing else is served */
	} else if (done && !r->lost && r->cur.fd >= 0 && !r->q.nr_fly && r->out_off == r->out_len) {
		/* A hand-over's own server: the loop goes on meanwhile. */
		if (r->cur.in_loop) {
			loop_del(&d->loop, &r->cur.ev);
			r->cur.in_loop = false;
			d->fds_in_use--;
		}
		if (!say_close_async(r))
			link_abort(r, &r->cur);
	} else if (!r->lost && r->cur.fd >= 0 && d->remote != r) {
		/* A hand-over's own server (ours), or one never taken: nothing to keep frozen; a reset ends it. */
		link_abort(r, &r->cur);
	} else if (!r->lost && r->cur.fd >= 0) {
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
	log_info("remote: %" PRIu64 " connection breaks or stalls, %" PRIu64 " reconnects, %" PRIu64 " requests asked again%s",
		 r->st.cuts, r->st.reconnects, r->st.reasked, r->creds ? "; over TLS" : "");
	timer_cancel(&d->loop, &r->deadline);
	timer_cancel(&d->loop, &r->keepalive);
	timer_cancel(&d->loop, &r->watch);
	if (r->cur.fd >= 0) {
		/* After CLOSE and its status, or a holder has it: our copy may close plainly. */
		if (r->cur.in_loop) {
			loop_del(&d->loop, &r->cur.ev);
			d->fds_in_use--;
		}
		tls_sess_free(r->cur.tls);
		close(r->cur.fd);
	}
	rq_clear(&r->q);
	free(r->buf);
	tls_creds_free(r->creds);
	free(r);
}
