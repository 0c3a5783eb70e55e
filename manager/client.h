/* One connection on the manager's socket: a hand-over (HELLO) or a status request. */
#ifndef UFFD_CLIENT_H
#define UFFD_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon.h"
#include "loop.h"

/* One packed reply waiting for room in the socket. */
struct client_out {
	uint8_t *buf;
	size_t len;
};

struct client {
	struct client *next;
	struct daemon *d;
	struct ev ev;
	int fd;
	pid_t peer_pid;
	uid_t peer_uid;
	gid_t peer_gid;
	bool answered;		/* one request per connection */
	/* A HELLO whose images the loader reads (loader.h); the fds are held here meanwhile. */
	struct loader_job *job;
	int uffd, pidfd;
	pid_t pid;
	uint32_t image_id;
	bool registered;
	uint64_t features;	/* the uffd's, checked against HELLO */
	bool dead;
	struct timer deadline;
	struct client_out *out;	/* status replies not yet sent */
	size_t out_n, out_i;
	char pfx[48];		/* "client pid 1234:" */
};

/* Accept every pending connection on the listening socket. */
void client_accept(struct daemon *d);

struct loader_job;

/* The loader is done with a client's images (loader.h's done hook): take the process over, or refuse. */
void client_loaded(struct daemon *d, struct loader_job *j);

/* Close and free a connection. */
void client_close(struct client *c);

/*
 * The checks of a HELLO, separate from any socket so that they can be tested:
 * what the client claims against what its fds are.
 */
struct hello_check {
	uint32_t version;
	uint64_t features;	/* claimed */
	int nfds;
	int uffd, pidfd, dirfd;
	uid_t peer_uid;
};

/*
 * Validate a HELLO. On success returns 0 with *PID the target's pid; else
 * -errno with REASON filled for the client.
 */
int hello_validate(const struct hello_check *h, pid_t *pid, char *reason, size_t len);

#endif
