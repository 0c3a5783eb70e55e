/*
 * libFuzzer harness: the page server's side of CRIU's page-server wire
 * (manager/pagesrv.c), serving the CRIU 4.2 `single` dump. The input is
 * what a client sends, through a socketpair the server adopts as a
 * connection; its answers are read and thrown away.
 *
 * Input framing:
 *   u8 chunk: the input is written in pieces of (chunk % 64) + 1 bytes,
 *             with a server step after each (0: in one piece)
 *   the rest: the byte stream, normally 32-byte headers
 *             {u32 cmd; u32 pad; u64 nr_pages; u64 vaddr; u64 dst_id}
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "log.h"
#include "pagesrv.h"

static struct pagesrv *srv;

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const struct pagesrv_opts o = {
		.imgdir = TEST_SRCDIR "/test/data/criu-4.2/single",
		.status_fd = -1,
		.idle_ms = 60000,
	};

	(void)argc;
	(void)argv;
	log_init("fuzz-pagesrv", getenv("FUZZ_LOG") ? LOG_LVL_DEBUG : LOG_LVL_ERR, 0);
	signal(SIGPIPE, SIG_IGN);
	srv = pagesrv_new(&o);
	if (!srv) {
		fprintf(stderr, "fuzz: cannot load %s\n", o.imgdir);
		abort();
	}
	return 0;
}

/* Read and drop what the server sent. */
static void drain(int sk)
{
	static uint8_t sink[1 << 16];

	while (recv(sk, sink, sizeof(sink), MSG_DONTWAIT) > 0)
		;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	uint8_t chunk = fz_u8(&in);
	size_t piece = chunk ? (size_t)(chunk % 64) + 1 : in.n;
	int sp[2], fds0;

	fds0 = fz_lowest_free_fd();
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		abort();
	if (pagesrv_adopt(srv, sp[1], "fuzz client") < 0)
		abort();
	while (in.n) {
		size_t n = piece < in.n ? piece : in.n;
		ssize_t w = send(sp[0], in.p, n, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w <= 0) {
			/* The server hung up, or its buffer is full: let it work. */
			if (!pagesrv_nr_open(srv))
				break;
			drain(sp[0]);
			pagesrv_step(srv, 0);
			continue;
		}
		in.p += w;
		in.n -= (size_t)w;
		pagesrv_step(srv, 0);
		drain(sp[0]);
	}
	shutdown(sp[0], SHUT_WR);
	/* Until the server has hung up (EOF, a refusal, or FORCE_CLOSE). */
	for (int i = 0; i < 10000 && pagesrv_nr_open(srv); i++) {
		drain(sp[0]);
		pagesrv_step(srv, 0);
	}
	if (pagesrv_nr_open(srv)) {
		fprintf(stderr, "fuzz: the server kept a connection whose client hung up\n");
		abort();
	}
	close(sp[0]);
	pagesrv_step(srv, 0);
	fz_check_fds(fds0, "a page-server connection");
	return 0;
}
