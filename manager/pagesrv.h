/*
 * `uffd-manager page-server`: the source side of a post-copy migration.
 * Serves the lazy pages of an image dir (pagemap-PID.img, pages-N.img and
 * the `parent` chain) over TCP in CRIU's page-server protocol (pswire.h):
 * GET is answered with ADD_F and the data. Several clients, one after
 * another or at once, each a non-blocking connection in one event loop.
 * Out of fds or at --max-clients it stops accepting for a while instead of
 * spinning; a client that makes no progress either way for --idle-timeout
 * (no request, no read of its answer) is closed, whatever it did before.
 * With --tls (tls.h) every connection is TLS and a client must show a
 * certificate our CA signed; without it there is no authentication, and it
 * warns when not bound to loopback. The server keeps no state between
 * requests, so a client that comes back after a cut is served at once.
 */
#ifndef UFFD_PAGESRV_H
#define UFFD_PAGESRV_H

#include "tls.h"

/* The largest answer, in pages (4 MiB); larger GETs get fewer pages, as CRIU allows. */
#define PAGESRV_MAX_PAGES	1024

/* Connections open at once (--max-clients); more wait in the listen backlog. */
#define PAGESRV_MAX_CLIENTS	1024

/* A connection quiet this long, in either direction, is closed (--idle-timeout). */
#define PAGESRV_IDLE_MS		60000

struct pagesrv_opts {
	const char *imgdir;
	const char *addr;	/* NULL: every address */
	const char *port;
	int status_fd;		/* the port, in decimal and a newline, once listening; -1: none */
	unsigned drop_after;	/* testing: cut each connection in the middle of answer N + 1 (0: never) */
	unsigned stall_after;	/* testing: after N answers, answer nothing more, keep the connection (0: never) */
	unsigned max_clients;	/* 0: PAGESRV_MAX_CLIENTS */
	unsigned idle_ms;	/* 0: PAGESRV_IDLE_MS */
	struct tls_opts tls;	/* --tls and its options */
	bool all_pages;		/* --all-pages: answer for pages restored eagerly too */
};

/* Load the images, listen, serve until SIGTERM/SIGINT. Returns the exit status. */
int pagesrv_run(const struct pagesrv_opts *o);

/*
 * The same in pieces, without a socket of its own or signals, for tests and
 * fuzzers: load the images of O->imgdir (NULL after logging why), take a
 * connected stream socket FD as a client named NAME (0 or -errno; the fd is
 * the server's from then on), run one loop iteration of at most MAX_MS,
 * count open connections, and free everything.
 */
struct pagesrv;
struct pagesrv *pagesrv_new(const struct pagesrv_opts *o);
int pagesrv_adopt(struct pagesrv *s, int fd, const char *name);
int pagesrv_step(struct pagesrv *s, int max_ms);
unsigned pagesrv_nr_open(const struct pagesrv *s);
void pagesrv_free(struct pagesrv *s);

#endif
