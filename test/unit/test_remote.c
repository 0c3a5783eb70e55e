/*
 * The end of a hand-over's own page-server connection (manager/remote.c).
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon.h"
#include "pswire.h"
#include "remote.h"

static const struct remote_ops no_ops;

/* A listening TCP socket on 127.0.0.1; its port into PORT. */
static int listen_local(char *port, size_t len)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0, "%s", strerror(errno));
	cr_assert_eq(listen(fd, 4), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	snprintf(port, len, "%u", ntohs(a.sin_port));
	return fd;
}

/* Read LEN bytes from FD, waiting at most 10 s for each piece. */
static void read_all(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		cr_assert_eq(poll(&p, 1, 10000), 1, "nothing came");
		n = read(fd, (char *)buf + got, len - got);
		cr_assert_gt(n, 0, "EOF or error after %zu of %zu bytes", got, len);
		got += (size_t)n;
	}
}

/*
 * When the last process of a hand-over with a page server of its own is
 * gone, the daemon says CLOSE and waits for the status word, up to 2 s
 * (and as long again for the hang-up under TLS). That wait used to run
 * on the loop, so a server that answers slowly or never held every other
 * process's faults for as long. remote_free must now return while the
 * server has not answered: the server sees CLOSE, and only after
 * remote_free returned does it answer; then the connection ends cleanly.
 * (Before, remote_free waited out the 2 s and closed: the server found
 * the connection closed by the time it could answer.)
 */
Test(remote, close_of_a_handover_server_does_not_wait_on_the_loop)
{
	static struct daemon d;
	struct remote *r;
	uint8_t hb[PS_HDR_SIZE], sink[16];
	struct ps_hdr h;
	char port[16], why[256];
	int32_t status = 0;
	int lfd, sfd;

	cr_assert_eq(loop_init(&d.loop), 0);
	lfd = listen_local(port, sizeof(port));
	cr_assert_eq(remote_connect(&d, "127.0.0.1", port, &no_ops, NULL, &r, why, sizeof(why)), 0,
		     "%s", why);
	cr_assert_eq(remote_attach_r(r), 0);
	sfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	cr_assert_geq(sfd, 0);

	remote_free(r, true);	/* a hand-over's server: not d.remote */

	read_all(sfd, hb, sizeof(hb));
	ps_decode(hb, &h);
	cr_assert_eq(h.cmd, PS_IOV_CLOSE, "the daemon said %#x, not CLOSE", h.cmd);
	cr_assert_eq(recv(sfd, sink, sizeof(sink), MSG_PEEK | MSG_DONTWAIT), -1,
		     "the connection was already ended when the server could answer CLOSE");
	cr_assert_eq(errno, EAGAIN);
	cr_assert_eq(write(sfd, &status, sizeof(status)), (ssize_t)sizeof(status));
	/* Status read, the daemon's side hangs up: EOF, not a reset. */
	{
		struct pollfd p = { .fd = sfd, .events = POLLIN };

		cr_assert_eq(poll(&p, 1, 10000), 1, "no hang-up after the status");
		cr_expect_eq(read(sfd, sink, sizeof(sink)), 0, "a clean hang-up: %s", strerror(errno));
	}
	close(sfd);
	close(lfd);
	loop_fini(&d.loop);
}
