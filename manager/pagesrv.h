/*
 * `uffd-manager page-server`: the source side of a post-copy migration.
 * Serves the lazy pages of an image dir (pagemap-PID.img, pages-N.img and
 * the `parent` chain) over TCP in CRIU's page-server protocol (pswire.h):
 * GET is answered with ADD_F and the data. Several clients, one after
 * another or at once, each a non-blocking connection in one event loop.
 */
#ifndef UFFD_PAGESRV_H
#define UFFD_PAGESRV_H

/* The largest answer, in pages (4 MiB); larger GETs get fewer pages, as CRIU allows. */
#define PAGESRV_MAX_PAGES	1024

struct pagesrv_opts {
	const char *imgdir;
	const char *addr;	/* NULL: every address */
	const char *port;
	int status_fd;		/* the port, in decimal and a newline, once listening; -1: none */
	unsigned drop_after;	/* testing: cut each connection in the middle of answer N + 1 (0: never) */
};

/* Load the images, listen, serve until SIGTERM/SIGINT. Returns the exit status. */
int pagesrv_run(const struct pagesrv_opts *o);

#endif
