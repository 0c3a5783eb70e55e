/*
 * CRIU lazy-pages mode: stand in for `criu lazy-pages`. One restore
 * (`criu restore --lazy-pages`) connects to lazy-pages.socket and hands over,
 * task by task, an int pid and the task's userfaultfd; the tasks register
 * their own ranges; the word "RSTF" ends the restore and lets background
 * fill start. Only the PE_LAZY pages of the image dir are served.
 */
#ifndef UFFD_CRIU_H
#define UFFD_CRIU_H

#include <stddef.h>
#include <stdint.h>

#include "tls.h"

struct daemon;

/* The restore's "restore finished" word, sent as a host-endian u32. */
#define CRIU_RSTF		0x52535446u
#define CRIU_SOCK_NAME		"lazy-pages.socket"

struct criu_opts {
	const char *imgdir;
	const char *workdir;	/* where lazy-pages.socket goes; NULL: the image dir */
	const char *pidfile;	/* NULL: none */
	int status_fd;		/* one byte here once listening; -1: none */
	const char *ps_addr;	/* remote mode: the page server's address; NULL: local data */
	const char *ps_port;
	struct tls_opts tls;	/* remote mode: --tls and its options */
};

/*
 * Load and check the images of every task of O->imgdir and put D in CRIU
 * mode; in remote mode (O->ps_addr) connect to the page server too.
 * Nothing is served yet. Returns 0, or -errno with WHY filled (naming
 * the file at fault).
 */
int criu_open(struct daemon *d, const struct criu_opts *o, char *why, size_t len);

/* Listen on lazy-pages.socket, then write the pidfile and the status byte. 0 or -errno with WHY. */
int criu_listen(struct daemon *d, char *why, size_t len);

/*
 * SIGTERM/SIGINT. After RSTF: fill the rest, then exit. Before it the
 * registered ranges are unknown, so the rest cannot be filled, and leaving
 * would let the tasks read zeros: kill the tasks not fully served.
 */
void criu_stop(struct daemon *d);

/* After the loop: report every task, clean up, and return the exit status. */
int criu_finish(struct daemon *d);

#endif
