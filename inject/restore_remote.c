/* restore --page-server: fetch the eager pages from the page server (restore_remote.h). */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "pswire.h"
#include "restore_remote.h"

#define IO_MS		10000	/* connect, handshake, and each answer */
#define PG		4096ull
#define MAX_ASK		1024	/* pages per GET, as the servers cap them */

struct rsr {
	int fd;
	struct tls_creds *creds;
	struct tls_sess *tls;
	char name[300];
};

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000ull + ts.tv_nsec / 1000000;
}

/* Wait until FD is ready for EVENTS, until END (ms). 0 or -ETIMEDOUT. */
static int wait_fd(int fd, short events, uint64_t end)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = events };
		uint64_t now = ms_now();
		int n;

		if (now >= end)
			return -ETIMEDOUT;
		n = poll(&p, 1, (int)(end - now));
		if (n > 0)
			return 0;
		if (n == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

/* Send all of BUF. 0 or -errno. */
static int send_all(struct rsr *c, const void *buf, size_t len, uint64_t end)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n = c->tls ? tls_send(c->tls, (const uint8_t *)buf + off, len - off) :
				     send(c->fd, (const uint8_t *)buf + off, len - off,
					  MSG_NOSIGNAL | MSG_DONTWAIT);

		if (!c->tls && n < 0)
			n = errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno;
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n != -EAGAIN)
			return n ? (int)n : -EPIPE;
		if (wait_fd(c->fd, POLLOUT, end) < 0)
			return -ETIMEDOUT;
	}
	return 0;
}

/* Receive exactly LEN bytes. 0, -ECONNRESET at the end of the stream, or -errno. */
static int recv_all(struct rsr *c, void *buf, size_t len, uint64_t end)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n = c->tls ? tls_recv(c->tls, (uint8_t *)buf + off, len - off) :
				     recv(c->fd, (uint8_t *)buf + off, len - off, MSG_DONTWAIT);

		if (!c->tls && n < 0)
			n = errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno;
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n == 0)
			return -ECONNRESET;
		if (n != -EAGAIN)
			return (int)n;
		if (wait_fd(c->fd, POLLIN, end) < 0)
			return -ETIMEDOUT;
	}
	return 0;
}

int rsr_open(const char *hostport, const struct tls_opts *tls, struct rsr **out, char *why,
	     size_t len)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res, *ai;
	const char *colon = strrchr(hostport, ':');
	char host[256];
	uint64_t end = ms_now() + IO_MS;
	size_t hl = colon ? (size_t)(colon - hostport) : 0;
	struct rsr *c;
	int ret, one = 1;

	if (!colon || !hl || hl >= sizeof(host)) {
		snprintf(why, len, "page server %s: want HOST:PORT", hostport);
		return -EINVAL;
	}
	if (hostport[0] == '[' && hostport[hl - 1] == ']')
		snprintf(host, sizeof(host), "%.*s", (int)hl - 2, hostport + 1);
	else
		snprintf(host, sizeof(host), "%.*s", (int)hl, hostport);
	c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(why, len, "out of memory");
		return -ENOMEM;
	}
	c->fd = -1;
	snprintf(c->name, sizeof(c->name), "page server %s", hostport);
	ret = getaddrinfo(host, colon + 1, &hints, &res);
	if (ret) {
		snprintf(why, len, "%s: %s", c->name, gai_strerror(ret));
		free(c);
		return -EINVAL;
	}
	ret = -ENOENT;
	for (ai = res; ai && c->fd < 0; ai = ai->ai_next) {
		int err = 0;
		socklen_t sl = sizeof(err);

		c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			       ai->ai_protocol);
		if (c->fd < 0) {
			ret = -errno;
			continue;
		}
		if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0 &&
		    (errno != EINPROGRESS || wait_fd(c->fd, POLLOUT, end) < 0 ||
		     getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0 || err)) {
			ret = err ? -err : errno == EINPROGRESS ? -ETIMEDOUT : -errno;
			close(c->fd);
			c->fd = -1;
		}
	}
	freeaddrinfo(res);
	if (c->fd < 0) {
		snprintf(why, len, "cannot connect to the %s: %s", c->name, strerror(-ret));
		free(c);
		return ret;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (tls && tls->on) {
		char tw[512];

		c->creds = tls_creds_load(tls, tw, sizeof(tw));
		c->tls = c->creds ? tls_sess_new(c->creds, c->fd, false,
						 tls->no_cn_verify ? NULL : host, tw, sizeof(tw)) : NULL;
		ret = c->tls ? -EAGAIN : -EINVAL;
		while (c->tls && (ret = tls_handshake(c->tls, tw, sizeof(tw))) == -EAGAIN)
			if (wait_fd(c->fd, tls_want_write(c->tls) ? POLLOUT : POLLIN, end) < 0) {
				snprintf(tw, sizeof(tw), "TLS handshake: no answer within %d ms", IO_MS);
				ret = -ETIMEDOUT;
				break;
			}
		if (ret < 0) {
			snprintf(why, len, "%s: %s", c->name, tw);
			rsr_close(c);
			return ret;
		}
	}
	*out = c;
	return 0;
}

int rsr_get(struct rsr *c, uint32_t pid, uint64_t addr, uint64_t nr, uint8_t *buf, char *why,
	    size_t len)
{
	while (nr) {
		uint64_t ask = nr < MAX_ASK ? nr : MAX_ASK, end = ms_now() + IO_MS;
		struct ps_hdr q = { .cmd = ps_cmd(PS_IOV_GET, 0), .nr_pages = ask, .vaddr = addr,
				    .dst_id = pid }, a;
		uint8_t h[PS_HDR_SIZE];
		int ret;

		ps_encode(h, &q);
		ret = send_all(c, h, sizeof(h), end);
		if (ret == 0)
			ret = recv_all(c, h, sizeof(h), end);
		if (ret < 0) {
			snprintf(why, len, "%s: GET %" PRIu64 " pages at 0x%" PRIx64 ": %s", c->name, ask,
				 addr, ret == -ECONNRESET ? "it hung up (does it serve these pages? uffd-manager page-server needs --all-pages)" :
				 c->tls && ret == -EPROTO ? tls_strerror(c->tls) : strerror(-ret));
			return ret;
		}
		ps_decode(h, &a);
		if (ps_op(a.cmd) != PS_IOV_ADD_F || !(ps_flags(a.cmd) & PS_FLAG_PRESENT) ||
		    a.vaddr != addr || a.dst_id != pid || !a.nr_pages || a.nr_pages > ask) {
			snprintf(why, len, "%s: a wrong answer to GET %" PRIu64 " pages at 0x%" PRIx64 " (cmd 0x%x, %" PRIu64 " pages at 0x%" PRIx64 ")",
				 c->name, ask, addr, a.cmd, a.nr_pages, a.vaddr);
			return -EPROTO;
		}
		ret = recv_all(c, buf, a.nr_pages * PG, end);
		if (ret < 0) {
			snprintf(why, len, "%s: the answer at 0x%" PRIx64 " stopped: %s", c->name, addr,
				 strerror(-ret));
			return ret;
		}
		buf += a.nr_pages * PG;
		addr += a.nr_pages * PG;
		nr -= a.nr_pages;
	}
	return 0;
}

void rsr_close(struct rsr *c)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	if (!c)
		return;
	if (c->fd >= 0) {
		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(c->fd);
	}
	tls_sess_free(c->tls);
	tls_creds_free(c->creds);
	free(c);
}
