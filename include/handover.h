/* The client side of a hand-over: connect to a manager and send HELLO with the fds. */
#ifndef UFFD_HANDOVER_H
#define UFFD_HANDOVER_H

#include <stddef.h>
#include <stdint.h>

#include "tls.h"

struct handover {
	const char *socket_path;
	uint32_t image_id;
	uint64_t features;	/* as enabled at UFFDIO_API */
	uint32_t flags;		/* HELLO_F_* */
	int uffd, pidfd, dirfd;
	int timeout_ms;		/* for the reply; 0 = 10 s */
	const char *page_server;	/* "HOST:PORT": lazy data from there; NULL: the images */
	const struct tls_opts *tls;	/* with page_server: TLS, or NULL */
};

/*
 * Hand the process over and wait for the answer. Returns 0 when accepted
 * (*LAZY = pages the manager will serve), -EPERM-ish -errno with REASON
 * filled otherwise (the manager's own words when it refused).
 */
int handover_send(const struct handover *h, uint64_t *lazy, char *reason, size_t len);

/*
 * The manager's default socket: /run/uffd-manager/manager.sock for root,
 * $XDG_RUNTIME_DIR/uffd-manager.sock for others. 0, -ENOENT (no default)
 * or -ENAMETOOLONG.
 */
int handover_default_socket(char *buf, size_t len);

#endif
