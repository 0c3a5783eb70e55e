/*
 * libFuzzer harness: the manager's socket, from accept to the reply, with
 * the daemon's own code (client_accept, then its loop: wire_recv, request
 * decoding, hello_validate, image loading). The input is sent as one or two
 * SOCK_SEQPACKET packets with descriptors attached.
 *
 * Input framing:
 *   u8 head: bits 0-2 number of fds attached (more than 3 is refused),
 *            bit 3 split the payload into two packets
 *   one u8 per fd: which descriptor, from a menu (a userfaultfd without the
 *            events the daemon needs, pidfds of us and of an exited child,
 *            the CRIU 4.2 image dir, an empty dir, /dev/null, a pipe, a
 *            memfd, an O_PATH fd, a socket, an eventfd)
 *   with bit 3: u16 LE where the first packet ends
 *   the rest: the packet(s), normally a packed `request` (proto/manager.proto)
 *
 * The menu's uffd never has the events the daemon needs, so no input can
 * make the daemon register ranges in this process (which would hang it).
 */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client.h"
#include "daemon.h"
#include "fuzz.h"
#include "loader.h"
#include "log.h"

#define NR_MENU		12

static struct daemon d;
static int menu[NR_MENU];
static struct sockaddr_un addr;
static socklen_t addr_len;

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	char empty[] = "/tmp/uffd-fuzz-hello-XXXXXX";
	int p[2];
	pid_t kid;

	(void)argc;
	(void)argv;
	log_init("fuzz-hello", getenv("FUZZ_LOG") ? LOG_LVL_DEBUG : LOG_LVL_ERR, 0);
	signal(SIGPIPE, SIG_IGN);

	menu[0] = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (menu[0] < 0 || ioctl(menu[0], UFFDIO_API, &api) < 0) {
		perror("fuzz: userfaultfd");
		abort();
	}
	menu[1] = (int)syscall(SYS_pidfd_open, getpid(), 0);
	kid = fork();
	if (kid == 0)
		_exit(0);
	menu[2] = (int)syscall(SYS_pidfd_open, kid, 0);
	waitpid(kid, NULL, 0);
	menu[3] = open(TEST_SRCDIR "/test/data/criu-4.2/single", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (!mkdtemp(empty))
		abort();
	menu[4] = open(empty, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	rmdir(empty);
	menu[5] = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (pipe2(p, O_CLOEXEC) < 0)
		abort();
	menu[6] = p[0];
	menu[7] = p[1];
	menu[8] = memfd_create("fuzz", MFD_CLOEXEC);
	menu[9] = open("/", O_PATH | O_CLOEXEC);
	menu[10] = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	menu[11] = eventfd(0, EFD_CLOEXEC);
	for (int i = 0; i < NR_MENU; i++)
		if (menu[i] < 0) {
			fprintf(stderr, "fuzz: menu fd %d: %s\n", i, strerror(errno));
			abort();
		}

	/* The daemon as run_daemon sets it up, minus signals, keeper and proc connector. */
	d.o.max_clients = 64;
	d.o.handshake_ms = 1000;
	d.o.no_procconn = true;
	d.o.no_keeper = true;
	d.o.no_fill = true;
	d.fd_limit = 1024;
	d.fds_in_use = 16;
	d.start_ns = now_ns();
	if (loop_init(&d.loop) < 0)
		abort();
	addr.sun_family = AF_UNIX;
	snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1, "uffd-fuzz-hello-%d", getpid());
	addr_len = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(addr.sun_path + 1);
	d.listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (d.listen_fd < 0 || bind(d.listen_fd, (struct sockaddr *)&addr, addr_len) < 0 ||
	    listen(d.listen_fd, 16) < 0) {
		perror("fuzz: listen");
		abort();
	}
	/* Images load on the daemon's loader thread, as in run_daemon. */
	if (loader_start(&d, client_loaded) < 0)
		abort();
	return 0;
}

/* Send BUF (LEN bytes) as one packet with NFDS descriptors. */
static void send_packet(int sk, const uint8_t *buf, size_t len, const int *fds, int nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	/* Too large for the socket: the daemon never sees it, which is fine. */
	if (sendmsg(sk, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	uint8_t head = fz_u8(&in), sink[8192];
	int fds[8], nfds = head & 7, fds0, sk;
	size_t split;

	fds0 = fz_lowest_free_fd();
	for (int i = 0; i < nfds; i++)
		fds[i] = menu[fz_u8(&in) % NR_MENU];
	split = in.n;
	if (head & 8) {
		split = fz_u8(&in);
		split |= (size_t)fz_u8(&in) << 8;
		if (split > in.n)
			split = in.n;
	}
	sk = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (sk < 0 || connect(sk, (struct sockaddr *)&addr, addr_len) < 0) {
		perror("fuzz: connect");
		abort();
	}
	send_packet(sk, in.p, split, fds, nfds);
	if (head & 8)
		send_packet(sk, in.p + split, in.n - split, NULL, 0);
	client_accept(&d);
	/* Until the daemon has nothing more to do: it answers, and may hang up. */
	for (int i = 0; i < 8 && loop_once(&d.loop, 0) > 0; i++)
		while (recv(sk, sink, sizeof(sink), MSG_DONTWAIT) > 0)
			;
	/* A hand-over whose images are loading: wait for the loader to give it back. */
	for (int i = 0; i < 2000 && loader_pending(d.loader); i++)
		loop_once(&d.loop, 10);
	for (int i = 0; i < 8 && loop_once(&d.loop, 0) > 0; i++)
		while (recv(sk, sink, sizeof(sink), MSG_DONTWAIT) > 0)
			;
	close(sk);
	for (int i = 0; i < 8 && d.clients && loop_once(&d.loop, 0) >= 0; i++)
		;
	if (loader_pending(d.loader)) {
		fprintf(stderr, "fuzz: the loader did not give a job back in 20 s\n");
		abort();
	}
	while (d.clients)
		client_close(d.clients);
	loop_once(&d.loop, 0);
	if (d.nr_clients || d.nr_targets) {
		fprintf(stderr, "fuzz: %u clients, %u targets left\n", d.nr_clients, d.nr_targets);
		abort();
	}
	fz_check_fds(fds0, "a HELLO");
	return 0;
}
