/*
 * Descriptors over unix sockets (SCM_RIGHTS), sent and received the same
 * way by every module: the manager's wire, the CRIU restore connection, the
 * keeper. Received descriptors are close-on-exec; any beyond what the
 * caller has room for are closed, never leaked. Other control messages
 * (credentials, pidfds) go to the caller's handler.
 */
#ifndef UFFD_FDPASS_H
#define UFFD_FDPASS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

/* Most descriptors one message may bring in (the rest of a bigger batch is cut by the kernel). */
#define FDPASS_MAX	32

/*
 * Send LEN bytes of BUF on SOCK with the NFDS descriptors of FDS attached
 * (at most FDPASS_MAX); FLAGS for sendmsg, MSG_NOSIGNAL added, EINTR
 * retried. Returns the bytes sent, or -errno.
 */
ssize_t fdpass_send(int sock, const void *buf, size_t len, const int *fds, int nfds, int flags);

struct fdpass_in {
	int *fds;		/* in: room for MAX descriptors; out: those kept */
	int max;
	int nfds;		/* out */
	bool cut;		/* out: descriptors past MAX were closed, or the kernel cut some */
	bool trunc;		/* out: the data did not fit (MSG_TRUNC) */
	/* in, optional: each control message that is not SCM_RIGHTS; true if it used it */
	bool (*other)(void *arg, const struct cmsghdr *cm);
	void *arg;
};

/*
 * Receive into BUF (LEN bytes) with FLAGS for recvmsg (MSG_CMSG_CLOEXEC
 * added, EINTR retried), the descriptors into IN. Returns the bytes, 0 at
 * end of file, or -errno (no descriptor kept then).
 */
ssize_t fdpass_recv(int sock, void *buf, size_t len, int flags, struct fdpass_in *in);

#endif
