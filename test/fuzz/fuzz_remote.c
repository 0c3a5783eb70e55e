/*
 * libFuzzer harness: the client side of CRIU's page-server wire, the
 * answer stream as manager/remote.c reassembles it (header, then data, in
 * pieces, checked against the request in flight). remote.c connects over
 * TCP only, so the harness listens on loopback, lets remote_open connect,
 * queues GETs through the public API and plays the server with the input.
 *
 * Input framing:
 *   u8 n: (n % 8) + 1 requests, each u32 pid, u64 image address, u16 pages
 *         ((pages % 1024) + 1)
 *   u8 chunk: the answers are written in pieces of (chunk % 64) + 1 bytes
 *         (0: in one piece), with a client step after each
 *   the rest: the answer stream, normally 32-byte ADD_F headers and data
 * No request has a target, so complete answers are dropped as for a
 * process that exited; what is fuzzed is the reassembly and the checks.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon.h"
#include "fuzz.h"
#include "log.h"
#include "remote.h"

static struct daemon d;
static int lsk;

/* No request has a process: answers are dropped, loss needs nothing done. */
static void drop_answer(struct daemon *dd, uint64_t owner, uint64_t addr, uint64_t img,
			uint8_t *buf, uint64_t len)
{
	(void)dd, (void)owner, (void)addr, (void)img, (void)len;
	free(buf);
}

static void on_lost(struct daemon *dd, struct remote *r, const char *why)
{
	(void)dd, (void)r, (void)why;
}

static const struct remote_ops ops = { .answer = drop_answer, .lost = on_lost };
static char port[16];

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);

	(void)argc;
	(void)argv;
	log_init("fuzz-remote", getenv("FUZZ_LOG") ? LOG_LVL_DEBUG : LOG_LVL_ERR, 0);
	signal(SIGPIPE, SIG_IGN);
	d.o.ps_timeout_ms = 60000;
	d.o.no_keeper = true;
	d.fds_in_use = 16;
	if (loop_init(&d.loop) < 0)
		abort();
	lsk = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lsk < 0 || bind(lsk, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lsk, 16) < 0 ||
	    getsockname(lsk, (struct sockaddr *)&sa, &sl) < 0) {
		perror("fuzz: listen");
		abort();
	}
	snprintf(port, sizeof(port), "%u", ntohs(sa.sin_port));
	return 0;
}

static void drain(int sk)
{
	uint8_t sink[4096];

	while (recv(sk, sink, sizeof(sink), MSG_DONTWAIT) > 0)
		;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	unsigned nreq = fz_u8(&in) % 8 + 1;
	char why[256];
	size_t piece;
	int sk, fds0;

	fds0 = fz_lowest_free_fd();
	if (remote_open(&d, "127.0.0.1", port, &ops, NULL, why, sizeof(why)) < 0) {
		fprintf(stderr, "fuzz: %s\n", why);
		abort();
	}
	sk = accept4(lsk, NULL, NULL, SOCK_CLOEXEC);
	if (sk < 0 || remote_attach(&d) < 0)
		abort();
	for (unsigned i = 0; i < nreq; i++) {
		uint32_t pid = fz_u32(&in);
		uint64_t img = fz_u64(&in);
		uint64_t nr = (fz_u8(&in) | (uint64_t)fz_u8(&in) << 8) % 1024 + 1;

		remote_request(d.remote, 1000 + i, pid, img, img, nr, i & 1);
	}
	{
		uint8_t chunk = fz_u8(&in);

		piece = chunk ? (size_t)(chunk % 64) + 1 : in.n;
	}
	remote_pump(&d);
	while (in.n && remote_alive(d.remote)) {
		size_t n = piece < in.n ? piece : in.n;
		ssize_t w = send(sk, in.p, n, MSG_NOSIGNAL | MSG_DONTWAIT);

		drain(sk);
		if (w > 0) {
			in.p += w;
			in.n -= (size_t)w;
		}
		loop_once(&d.loop, w > 0 ? 0 : 1);
	}
	/* Hang up hard (no TIME_WAIT to run the ports out): the client sees a loss. */
	setsockopt(sk, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(sk);
	for (int i = 0; i < 1000 && remote_alive(d.remote); i++)
		loop_once(&d.loop, 1);
	if (remote_alive(d.remote)) {
		fprintf(stderr, "fuzz: the client did not notice the server hung up\n");
		abort();
	}
	remote_close(&d, false);
	loop_once(&d.loop, 0);
	fz_check_fds(fds0, "a page-server answer stream");
	return 0;
}
