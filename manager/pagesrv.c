/* The page server: lazy pages of an image dir, to CRIU's page-server protocol. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "imgtask.h"
#include "log.h"
#include "loop.h"
#include "pagesrv.h"
#include "pswire.h"
#include "sysutil.h"
#include "tls.h"

#define PG		4096ull
#define BACKLOG		128
#define RETRY_NS	(100 * 1000000ull)	/* accept again after EMFILE */
#define KEEPIDLE_S	30			/* a dead client's fd is freed in about a minute */
#define KEEPINTVL_S	10
#define KEEPCNT		3
#define BOUNCE		16384			/* TLS: one record's worth of pages at a time */

struct pagesrv;

/* One client connection. */
struct psconn {
	struct psconn *next;
	struct pagesrv *s;
	struct ev ev;
	int fd;
	char name[80];
	struct tls_sess *tls;		/* --tls; NULL: plain TCP */
	bool handshaking;		/* TLS: nothing is read before the client's certificate is checked */
	uint8_t *bounce;		/* TLS: pages copied out of the mapping for GnuTLS */
	size_t b_len, b_off;
	struct ps_hdr_in in;		/* the request being read */
	uint8_t out[PS_HDR_SIZE];	/* the answer's header (or CLOSE's status word) */
	size_t out_off, out_len;
	const uint8_t *data;		/* then its pages, from the mapped pages file */
	uint64_t data_off, data_len;
	bool want_out;
	bool closing;			/* CLOSE answered: only EOF may follow */
	bool cut;			/* --drop-after: close once this answer's half is out */
	bool force;			/* FORCE_CLOSE answered: close once the word is out */
	bool stalled;			/* --stall-after: answers nothing more */
	bool dead;
	uint64_t reqs;			/* whole requests read */
	uint64_t last;			/* last progress either way, ns */
	uint64_t gets, pages;
};

/* Why new connections are not taken. */
enum accept_state { ACC_ON, ACC_FULL, ACC_BACKOFF };

struct pagesrv {
	struct pagesrv_opts o;
	struct loop loop;
	struct ev listen_ev, sig_ev;
	int listen_fd, sig_fd, dirfd;
	struct pages_cache cache;
	struct img_task *tasks;
	size_t nr_tasks;
	struct tls_creds *creds;	/* --tls; NULL: plain TCP */
	struct psconn *conns;
	unsigned nr_open;		/* connections open now */
	enum accept_state acc;
	uint64_t acc_since;		/* when the current pause began */
	struct timer acc_retry;		/* ACC_BACKOFF: try again */
	struct timer idle_timer;	/* the idle sweep, while connections are open */
	uint64_t idle_ns;
	unsigned fd_limit;
	uint64_t nr_conns, gets, pages, errors, idle_closed, tls_refused;
};

static void conn_on_io(struct ev *ev, uint32_t events);
static void accept_resume(struct pagesrv *s);
static void on_accept_retry(struct timer *tm);

static struct img_task *task_find(const struct pagesrv *s, uint64_t pid)
{
	for (size_t i = 0; i < s->nr_tasks; i++)
		if (s->tasks[i].pid == pid)
			return &s->tasks[i];
	return NULL;
}

static void conn_free(void *p)
{
	struct psconn *c = p;

	tls_sess_free(c->tls);
	free(c->bounce);
	free(c);
}

/* Send on C: bytes, or -errno (-EAGAIN). MORE: the data follows (plain TCP only). */
static ssize_t conn_send(struct psconn *c, const void *buf, size_t len, bool more)
{
	ssize_t n;

	if (c->tls)
		return tls_send(c->tls, buf, len);
	do
		n = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT | (more ? MSG_MORE : 0));
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

/* Receive on C: bytes, 0 at the end, or -errno (-EAGAIN). */
static ssize_t conn_recv(struct psconn *c, void *buf, size_t len)
{
	ssize_t n;

	if (c->tls)
		return tls_recv(c->tls, buf, len);
	do
		n = recv(c->fd, buf, len, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

/* Read what C has of the request header (ps_hdr_recv, through TLS when on). */
static ssize_t conn_recv_hdr(struct psconn *c)
{
	ssize_t n;

	if (!c->tls)
		return ps_hdr_recv(c->fd, &c->in);
	n = tls_recv(c->tls, c->in.b + c->in.have, PS_HDR_SIZE - c->in.have);
	if (n > 0)
		c->in.have += (size_t)n;
	return n;
}

/* The error of a failed send or recv, as text. */
static const char *conn_err(const struct psconn *c, ssize_t n)
{
	return c->tls && n == -EPROTO ? tls_strerror(c->tls) : strerror((int)-n);
}

static void conn_close(struct psconn *c, const char *why)
{
	struct psconn **pp;

	if (c->dead)
		return;
	c->dead = true;
	log_info("page-server: %s: %s; %" PRIu64 " GETs answered, %" PRIu64 " pages sent", c->name,
		 why, c->gets, c->pages);
	loop_del(&c->s->loop, &c->ev);
	close(c->fd);
	for (pp = &c->s->conns; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	c->s->nr_open--;
	loop_defer(&c->s->loop, conn_free, c);
	/* An fd and a slot are free: whatever paused accepting may be over. */
	if (c->s->loop.stop)
		return;
	if (c->s->acc == ACC_FULL)
		accept_resume(c->s);
	else if (c->s->acc == ACC_BACKOFF)
		timer_arm(&c->s->loop, &c->s->acc_retry, 0, on_accept_retry);
}

/* A request we will not answer: the protocol has no error answer, so the connection ends (as criu's does). */
static void conn_refuse(struct psconn *c, const struct ps_hdr *h, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void conn_refuse(struct psconn *c, const struct ps_hdr *h, const char *fmt, ...)
{
	char why[256], opn[32];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	c->s->errors++;
	log_warnx("page-server: %s: %s (%" PRIu64 " pages at 0x%" PRIx64 ", dst_id %" PRIu64 "): %s; closing the connection",
		  c->name, ps_op_name(ps_op(h->cmd), opn, sizeof(opn)), h->nr_pages, h->vaddr,
		  h->dst_id, why);
	conn_close(c, "refused a request");
}

/* Answer a GET with ADD_F and the data of the contiguous lazy run at its address. */
static void on_get(struct psconn *c, const struct ps_hdr *h)
{
	struct pagesrv *s = c->s;
	uint32_t pid = ps_get_pid(h->dst_id);
	const struct img_task *t = pid ? task_find(s, pid) : NULL;
	uint64_t nr = h->nr_pages;
	struct ps_hdr a;
	struct pm_run run;

	if (!t) {
		uint64_t push = h->dst_id >> PS_TYPE_BITS;

		/* A GET names the bare pid (criu's page_server_get_pages); pid << 8 | 1 is the dump side's form. */
		if ((h->dst_id & ((1u << PS_TYPE_BITS) - 1)) == PS_TYPE_PID && push <= UINT32_MAX &&
		    task_find(s, push))
			conn_refuse(c, h, "no task with that pid in %s (a GET names the bare pid; this is the dump side's form of pid %" PRIu64 ")",
				    s->o.imgdir, push);
		else
			conn_refuse(c, h, "no task with that pid in %s", s->o.imgdir);
		return;
	}
	if (!t->pm) {
		conn_refuse(c, h, "pid %u has no memory images (a zombie)", pid);
		return;
	}
	if (h->vaddr & (PG - 1) || nr == 0) {
		conn_refuse(c, h, "%s", nr ? "the address is not page aligned" : "no pages asked");
		return;
	}
	if (s->o.stall_after && c->gets >= s->o.stall_after) {
		/* Fault injection: a server that stops answering, the connection still up. */
		log_info("page-server: %s: stalling after %" PRIu64 " answers (--stall-after): no more answers",
			 c->name, c->gets);
		c->stalled = true;
		return;
	}
	if (nr > PAGESRV_MAX_PAGES)
		nr = PAGESRV_MAX_PAGES;	/* fewer pages than asked: allowed, and no peer sizes us */
	if (h->vaddr + nr * PG < h->vaddr) {
		conn_refuse(c, h, "the range wraps around");
		return;
	}
	pagemap_resolve(t->pm, h->vaddr, nr * PG, &run);
	if (!(run.flags & PE_LAZY) && !(s->o.all_pages && run.src == PM_DATA)) {
		conn_refuse(c, h, "0x%" PRIx64 " is not a lazy page of pid %u (%s)", h->vaddr, pid,
			    run.src == PM_HOLE ? "not in its pagemap" : "restored eagerly");
		return;
	}
	if (run.src != PM_DATA || !run.pf || run.off + run.len > run.pf->size) {
		conn_refuse(c, h, "the images in %s hold no data for it", s->o.imgdir);
		return;
	}
	a = (struct ps_hdr){ .cmd = ps_cmd(PS_IOV_ADD_F, PS_FLAG_PRESENT), .nr_pages = run.len / PG,
			     .vaddr = h->vaddr, .dst_id = h->dst_id };
	ps_encode(c->out, &a);
	c->out_off = 0;
	c->out_len = PS_HDR_SIZE;
	c->data = run.pf->base + run.off;
	c->data_off = 0;
	c->data_len = run.len;
	c->gets++;
	c->pages += a.nr_pages;
	s->gets++;
	s->pages += a.nr_pages;
	if (s->o.drop_after && c->gets > s->o.drop_after) {
		/* Fault injection: the connection breaks in the middle of this answer. */
		c->data_len = (run.len / PG / 2) * PG;
		c->cut = true;
	}
	log_debug("page-server: %s: GET pid %u 0x%" PRIx64 " +%" PRIu64 ": %" PRIu64 " pages", c->name,
		  pid, h->vaddr, h->nr_pages, a.nr_pages);
}

/* Act on one request header. */
static void on_request(struct psconn *c)
{
	struct ps_hdr h;
	int32_t status = 0;

	ps_decode(c->in.b, &h);
	c->in.have = 0;
	c->reqs++;
	if (c->closing) {
		conn_refuse(c, &h, "a request after CLOSE");
		return;
	}
	switch (ps_op(h.cmd)) {
	case PS_IOV_GET:
		on_get(c, &h);
		break;
	case PS_IOV_CLOSE:
	case PS_IOV_FORCE_CLOSE:
		/* The status word says everything was received; then the client hangs up. */
		memcpy(c->out, &status, sizeof(status));
		c->out_off = 0;
		c->out_len = sizeof(status);
		c->closing = true;
		/* criu's own server ends the session at once on FORCE_CLOSE (the socket may be shared). */
		c->force = ps_op(h.cmd) == PS_IOV_FORCE_CLOSE;
		break;
	case PS_IOV_OPEN:
	case PS_IOV_OPEN2:
	case PS_IOV_PARENT:
	case PS_IOV_ADD:
	case PS_IOV_ADD_F:
	case PS_IOV_HOLE:
		conn_refuse(c, &h, "this page server serves images (GET); it does not take a dump");
		break;
	default:
		conn_refuse(c, &h, "unknown command 0x%x", h.cmd);
		break;
	}
}

/*
 * Under TLS the pages go through GnuTLS, which reads them in user space:
 * copy them out of the mapping with the kernel first (a truncated pages file
 * is then EFAULT here, as with plain send, never SIGBUS), one record's worth
 * at a time, kept until GnuTLS took all of it.
 */
static ssize_t send_pages_tls(struct psconn *c)
{
	ssize_t n;

	if (c->b_off == c->b_len) {
		uint64_t left = c->data_len - c->data_off;
		struct iovec local, remote;

		if (!c->bounce && !(c->bounce = malloc(BOUNCE)))
			return -ENOMEM;
		local = (struct iovec){ c->bounce, left < BOUNCE ? left : BOUNCE };
		remote = (struct iovec){ (void *)(c->data + c->data_off), local.iov_len };
		n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
		if (n <= 0)
			return n < 0 ? -errno : -EFAULT;
		c->b_len = (size_t)n;
		c->b_off = 0;
	}
	n = tls_send(c->tls, c->bounce + c->b_off, c->b_len - c->b_off);
	if (n > 0)
		c->b_off += (size_t)n;
	return n;
}

/* Send what is pending. True when nothing is left. */
static bool conn_flush(struct psconn *c)
{
	while (!c->dead && (c->out_off < c->out_len || c->data_off < c->data_len)) {
		ssize_t n;

		/* The kernel reads the mapped pages: a truncated file is EFAULT here, not SIGBUS. */
		if (c->out_off < c->out_len)
			n = conn_send(c, c->out + c->out_off, c->out_len - c->out_off, c->data_len != 0);
		else if (c->tls)
			n = send_pages_tls(c);
		else
			n = conn_send(c, c->data + c->data_off, c->data_len - c->data_off, false);
		if (n == -EAGAIN)
			return false;
		if (n <= 0) {
			char why[160];

			snprintf(why, sizeof(why), "send: %s", n ? conn_err(c, n) : "nothing sent");
			conn_close(c, why);
			return false;
		}
		c->last = now_ns();
		if (c->out_off < c->out_len)
			c->out_off += (size_t)n;
		else
			c->data_off += (uint64_t)n;
	}
	if (c->dead)
		return false;
	c->data_len = c->data_off = 0;
	c->b_len = c->b_off = 0;
	if (c->cut) {
		conn_close(c, "cut in the middle of an answer (--drop-after)");
		return false;
	}
	if (c->force) {
		conn_close(c, "done (FORCE_CLOSE)");
		return false;
	}
	return true;
}

static void set_want_out(struct psconn *c, bool on)
{
	if (c->want_out != on && loop_mod(&c->s->loop, &c->ev, on ? EPOLLOUT : EPOLLIN) == 0)
		c->want_out = on;
}

/* TLS: go on with the handshake; true once the client's certificate is checked. */
static bool conn_handshake(struct psconn *c)
{
	char why[512];
	int ret = tls_handshake(c->tls, why, sizeof(why));

	if (ret == -EAGAIN) {
		bool w = tls_want_write(c->tls);

		if (loop_mod(&c->s->loop, &c->ev, w ? EPOLLOUT : EPOLLIN) == 0)
			c->want_out = w;
		return false;
	}
	if (ret < 0) {
		uint8_t sink[4096];

		c->s->tls_refused++;
		log_warnx("page-server: %s: refused: %s", c->name, why);
		/* Read what it sent, so that our alert is not lost in a reset. */
		while (recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
			;
		shutdown(c->fd, SHUT_WR);
		conn_close(c, "refused (TLS)");
		return false;
	}
	c->handshaking = false;
	c->last = now_ns();
	log_info("page-server: %s: TLS handshake done, its certificate checked; %s", c->name,
		 tls_desc(c->tls));
	return true;
}

static void conn_on_io(struct ev *ev, uint32_t events)
{
	struct psconn *c = container_of(ev, struct psconn, ev);

	(void)events;
	if (c->handshaking && !conn_handshake(c))
		return;
	while (c->stalled) {
		uint8_t sink[512];
		ssize_t n = conn_recv(c, sink, sizeof(sink));

		if (n == -EAGAIN)
			return;
		if (n <= 0) {
			conn_close(c, "hung up while stalled (--stall-after)");
			return;
		}
	}
	for (;;) {
		ssize_t n;

		/* One answer at a time: read the next request only when this one is out. */
		if (!conn_flush(c)) {
			if (!c->dead)
				set_want_out(c, true);
			return;
		}
		set_want_out(c, false);
		n = conn_recv_hdr(c);
		if (n == -EAGAIN)
			return;
		if (n <= 0) {
			char why[160];

			if (n < 0)
				snprintf(why, sizeof(why), "recv: %s", conn_err(c, n));
			else
				snprintf(why, sizeof(why), "%s", c->closing ? "done (CLOSE, then hung up)" :
					 c->in.have ? "hung up in the middle of a request" :
						   "hung up without CLOSE");
			conn_close(c, why);
			return;
		}
		c->last = now_ns();
		if (c->in.have == PS_HDR_SIZE) {
			on_request(c);
			if (c->dead || c->stalled)
				return;
		}
	}
}

/*
 * Close connections with no progress either way for the idle timeout; look
 * again soon while any are open. The clock restarts at every byte read or
 * sent, so a client that asked, read its answer and went quiet is closed
 * too: else a few such clients would hold every --max-clients slot for
 * ever. A lazy-pages client quiet for longer than that (no fault, no fill)
 * reconnects or is lost: --idle-timeout must exceed its longest pause.
 */
static void on_idle_timer(struct timer *tm)
{
	struct pagesrv *s = container_of(tm, struct pagesrv, idle_timer);
	uint64_t now = now_ns();
	struct psconn *c, *next;

	for (c = s->conns; c; c = next) {
		next = c->next;
		if (!c->stalled && now - c->last >= s->idle_ns) {
			char why[128];

			snprintf(why, sizeof(why), "%s for %" PRIu64 " ms (--idle-timeout): closed",
				 c->reqs == 0 ? "sent no request" : c->in.have ? "sent part of a request" :
				 c->closing ? "did not hang up after CLOSE" :
				 c->out_off < c->out_len || c->data_off < c->data_len ?
					"did not read its answer" : "quiet since its last request",
				 (now - c->last) / 1000000);
			s->idle_closed++;
			conn_close(c, why);
		}
	}
	if (s->conns)
		timer_arm(&s->loop, tm, s->idle_ns / 4, on_idle_timer);
}

static void on_accept(struct ev *ev, uint32_t events);

/* Backing off after EMFILE: try one accept (it re-arms the back-off if still too soon). */
static void on_accept_retry(struct timer *tm)
{
	struct pagesrv *s = container_of(tm, struct pagesrv, acc_retry);

	if (s->acc == ACC_BACKOFF)
		on_accept(&s->listen_ev, EPOLLIN);
}

/* Stop watching the listen socket (STATE says why); log once per pause. */
static void accept_pause(struct pagesrv *s, enum accept_state state, int err)
{
	if (s->acc == ACC_ON) {
		s->acc_since = now_ns();
		if (state == ACC_FULL)
			log_warnx("page-server: %u connections open (--max-clients): new ones wait until one closes",
				  s->nr_open);
		else
			log_warnx("page-server: accept: %s (%u connections open, fd limit %u): not accepting until an fd is free",
				  strerror(err), s->nr_open, s->fd_limit);
		loop_mod(&s->loop, &s->listen_ev, 0);
	}
	s->acc = state;
	if (state == ACC_BACKOFF)
		timer_arm(&s->loop, &s->acc_retry, RETRY_NS, on_accept_retry);
}

/* Watch the listen socket again (an fd or a slot came free); on_accept says if it was too soon. */
static void accept_resume(struct pagesrv *s)
{
	if (s->acc == ACC_ON || s->nr_open >= s->o.max_clients)
		return;
	timer_cancel(&s->loop, &s->acc_retry);
	if (loop_mod(&s->loop, &s->listen_ev, EPOLLIN) < 0) {
		log_warn("page-server: epoll");
		return;
	}
	log_info("page-server: accepting again after %.0f ms (%u connections open)",
		 (now_ns() - s->acc_since) / 1e6, s->nr_open);
	s->acc = ACC_ON;
}

/* Keep a client's socket from holding an fd forever after its host died. */
static void conn_sockopts(int fd)
{
	int one = 1, idle = KEEPIDLE_S, intvl = KEEPINTVL_S, cnt = KEEPCNT;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

static void on_accept(struct ev *ev, uint32_t events)
{
	struct pagesrv *s = container_of(ev, struct pagesrv, listen_ev);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[64] = "?", port[16] = "?", name[80];
	int fd;

	(void)events;
	if (s->nr_open >= s->o.max_clients) {
		accept_pause(s, ACC_FULL, 0);
		return;
	}
	fd = accept4(s->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		if (sys_accept_backoff(errno))
			/* Level-triggered: watching on would spin. Wait for a close or the timer. */
			accept_pause(s, ACC_BACKOFF, errno);
		else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			log_warn("page-server: accept");
		return;
	}
	if (s->acc == ACC_BACKOFF)
		accept_resume(s);
	getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
		    NI_NUMERICHOST | NI_NUMERICSERV);
	conn_sockopts(fd);
	snprintf(name, sizeof(name), "client %s:%s", host, port);
	if (pagesrv_adopt(s, fd, name) < 0) {
		log_warn("page-server: cannot take a connection from %s:%s", host, port);
		close(fd);
		return;
	}
	log_info("page-server: %s connected", name);
	if (s->nr_open >= s->o.max_clients)
		accept_pause(s, ACC_FULL, 0);
}

int pagesrv_adopt(struct pagesrv *s, int fd, const char *name)
{
	struct psconn *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	if (loop_add(&s->loop, &c->ev, fd, EPOLLIN, conn_on_io) < 0) {
		int e = errno;

		free(c);
		return -e;
	}
	c->s = s;
	c->fd = fd;
	c->last = now_ns();
	snprintf(c->name, sizeof(c->name), "%s", name);
	if (s->creds) {
		char why[512];

		/* As criu: the client's certificate must name our --address, if we have one. */
		c->tls = tls_sess_new(s->creds, fd, true,
				      s->o.tls.no_cn_verify ? NULL : s->o.addr, why, sizeof(why));
		if (!c->tls) {
			loop_del(&s->loop, &c->ev);
			free(c);
			log_warnx("page-server: %s: %s", name, why);
			return -ENOMEM;
		}
		c->handshaking = true;
	}
	c->next = s->conns;
	s->conns = c;
	s->nr_conns++;
	s->nr_open++;
	if (!s->idle_timer.armed)
		timer_arm(&s->loop, &s->idle_timer, s->idle_ns / 4, on_idle_timer);
	return 0;
}

static void on_signal(struct ev *ev, uint32_t events)
{
	struct pagesrv *s = container_of(ev, struct pagesrv, sig_ev);
	struct signalfd_siginfo si;

	(void)events;
	while (read(s->sig_fd, &si, sizeof(si)) == sizeof(si))
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
			s->loop.stop = true;
}

/* Load every task's memory images. 0, or -1 after logging why. */
static int load_tasks(struct pagesrv *s)
{
	struct img_err err;
	uint32_t *pids;
	size_t n;
	bool from_pstree;
	uint64_t lazy = 0;

	s->dirfd = open(s->o.imgdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dirfd < 0) {
		log_warn("page-server: %s", s->o.imgdir);
		return -1;
	}
	if (img_list_tasks(s->dirfd, &pids, &n, &from_pstree, &err) < 0) {
		log_warnx("page-server: %s: %s", s->o.imgdir, err.msg);
		return -1;
	}
	s->tasks = calloc(n ? n : 1, sizeof(*s->tasks));
	if (!s->tasks) {
		free(pids);
		log_warnx("page-server: out of memory");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (img_task_load(&s->tasks[i], s->dirfd, pids[i], &s->cache, &err) < 0) {
			free(pids);
			log_warnx("page-server: %s: %s", s->o.imgdir, err.msg);
			return -1;
		}
		s->nr_tasks++;
		if (s->tasks[i].pm)
			lazy += s->tasks[i].pm->lazy_pages;
	}
	free(pids);
	log_info("page-server: %s: %zu tasks, %" PRIu64 " lazy pages", s->o.imgdir, s->nr_tasks,
		 lazy);
	return 0;
}

/* Is SS a loopback address (127/8, ::1, or ::ffff:127/8)? */
static bool is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
	if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;

		return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}

/* Listen on addr:port; tell the port on the status fd. 0 or -1 after logging why. */
static int listen_tcp(struct pagesrv *s)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE };
	struct sockaddr_storage ss = { 0 };
	socklen_t sl = sizeof(ss);
	struct addrinfo *res, *ai;
	char port[16];
	int ret, one = 1;

	ret = getaddrinfo(s->o.addr, s->o.port, &hints, &res);
	if (ret) {
		log_warnx("page-server: %s:%s: %s", s->o.addr ? s->o.addr : "*", s->o.port,
			  gai_strerror(ret));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		s->listen_fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
				      ai->ai_protocol);
		if (s->listen_fd < 0)
			continue;
		setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(s->listen_fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(s->listen_fd, BACKLOG) == 0)
			break;
		close(s->listen_fd);
		s->listen_fd = -1;
	}
	freeaddrinfo(res);
	if (s->listen_fd < 0) {
		log_warn("page-server: cannot listen on %s:%s", s->o.addr ? s->o.addr : "*",
			 s->o.port);
		return -1;
	}
	if (getsockname(s->listen_fd, (struct sockaddr *)&ss, &sl) < 0 ||
	    getnameinfo((struct sockaddr *)&ss, sl, NULL, 0, port, sizeof(port), NI_NUMERICSERV))
		snprintf(port, sizeof(port), "%s", s->o.port);
	if (loop_add(&s->loop, &s->listen_ev, s->listen_fd, EPOLLIN, on_accept) < 0) {
		log_warn("page-server: epoll");
		return -1;
	}
	log_info("page-server: listening on %s port %s%s, serving the lazy pages of %s (up to %u clients, fd limit %u)",
		 s->o.addr ? s->o.addr : "every address", port,
		 s->creds ? " with TLS (client certificates required)" : "", s->o.imgdir,
		 s->o.max_clients, s->fd_limit);
	if (!is_loopback(&ss) && !s->creds)
		log_warnx("page-server: warning: %s is not a loopback address and the protocol has no authentication: anyone who can reach port %s can read the dumped memory; use --address or a firewall",
			  s->o.addr ? s->o.addr : "every address", port);
	if (s->o.status_fd >= 0) {
		if (dprintf(s->o.status_fd, "%s\n", port) < 0)
			log_warn("page-server: --status-fd %d", s->o.status_fd);
		close(s->o.status_fd);
	}
	return 0;
}

static int setup_signals(struct pagesrv *s)
{
	static const int sigs[] = { SIGTERM, SIGINT };

	s->sig_fd = sys_signalfd(sigs, 2);
	if (s->sig_fd < 0)
		return -1;
	return loop_add(&s->loop, &s->sig_ev, s->sig_fd, EPOLLIN, on_signal);
}

struct pagesrv *pagesrv_new(const struct pagesrv_opts *o)
{
	struct pagesrv *s = calloc(1, sizeof(*s));

	if (!s) {
		log_warnx("page-server: out of memory");
		return NULL;
	}
	*s = (struct pagesrv){ .o = *o, .listen_fd = -1, .sig_fd = -1, .dirfd = -1 };
	if (!s->o.max_clients)
		s->o.max_clients = PAGESRV_MAX_CLIENTS;
	s->idle_ns = (uint64_t)(s->o.idle_ms ? s->o.idle_ms : PAGESRV_IDLE_MS) * 1000000ull;
	if (loop_init(&s->loop) < 0) {
		log_warn("page-server: epoll_create1");
		free(s);
		return NULL;
	}
	if (s->o.tls.on) {
		char why[512];

		s->creds = tls_creds_load(&s->o.tls, why, sizeof(why));
		if (!s->creds) {
			log_warnx("page-server: %s", why);
			pagesrv_free(s);
			return NULL;
		}
	}
	if (load_tasks(s) < 0) {
		pagesrv_free(s);
		return NULL;
	}
	return s;
}

int pagesrv_step(struct pagesrv *s, int max_ms)
{
	return loop_once(&s->loop, max_ms);
}

unsigned pagesrv_nr_open(const struct pagesrv *s)
{
	return s->nr_open;
}

void pagesrv_free(struct pagesrv *s)
{
	if (!s)
		return;
	s->loop.stop = true;
	timer_cancel(&s->loop, &s->acc_retry);
	timer_cancel(&s->loop, &s->idle_timer);
	while (s->conns)
		conn_close(s->conns, "the server is stopping");
	loop_fini(&s->loop);
	for (size_t i = 0; i < s->nr_tasks; i++)
		img_task_free(&s->tasks[i], &s->cache);
	free(s->tasks);
	tls_creds_free(s->creds);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	if (s->sig_fd >= 0)
		close(s->sig_fd);
	if (s->dirfd >= 0)
		close(s->dirfd);
	free(s);
}

int pagesrv_run(const struct pagesrv_opts *o)
{
	struct pagesrv *s;
	int status = 1;
	unsigned fd_limit = sys_raise_nofile();

	s = pagesrv_new(o);
	if (!s)
		return 1;
	s->fd_limit = fd_limit;
	if (setup_signals(s) < 0) {
		log_warn("page-server: signals");
		goto out;
	}
	if (listen_tcp(s) < 0)
		goto out;
	status = loop_run(&s->loop) < 0;
	log_info("page-server: stopping: %" PRIu64 " connections, %" PRIu64 " GETs answered, %" PRIu64 " pages sent, %" PRIu64 " requests refused, %" PRIu64 " idle connections closed, %" PRIu64 " refused by TLS",
		 s->nr_conns, s->gets, s->pages, s->errors, s->idle_closed, s->tls_refused);
out:
	pagesrv_free(s);
	return status;
}
