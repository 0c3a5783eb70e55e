/* Descriptors over unix sockets (fdpass.h). */
#include <errno.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "fdpass.h"

#ifndef SCM_PIDFD
#define SCM_PIDFD	0x04
#endif

/* Room for the credentials and pidfd messages that may come along (see sender.h). */
#define OTHER_SPACE	(CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(struct ucred)) + 64)

ssize_t fdpass_send(int sock, const void *buf, size_t len, const int *fds, int nfds, int flags)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * FDPASS_MAX)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (nfds < 0 || nfds > FDPASS_MAX)
		return -EINVAL;
	if (nfds) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	do
		n = sendmsg(sock, &mh, flags | MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

ssize_t fdpass_recv(int sock, void *buf, size_t len, int flags, struct fdpass_in *in)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * FDPASS_MAX) + OTHER_SPACE];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			     .msg_controllen = sizeof(ctl.b) };
	struct cmsghdr *c;
	ssize_t n;

	in->nfds = 0;
	in->cut = in->trunc = false;
	do
		n = recvmsg(sock, &mh, flags | MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		size_t k;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
			if ((!in->other || !in->other(in->arg, c)) && c->cmsg_level == SOL_SOCKET &&
			    c->cmsg_type == SCM_PIDFD && c->cmsg_len == CMSG_LEN(sizeof(int))) {
				int fd;

				/* A pidfd nobody asked for is still a descriptor: close it. */
				memcpy(&fd, CMSG_DATA(c), sizeof(int));
				close(fd);
			}
			continue;
		}
		k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (in->nfds < in->max) {
				in->fds[in->nfds++] = fd;
			} else {
				close(fd);
				in->cut = true;
			}
		}
	}
	in->cut |= !!(mh.msg_flags & MSG_CTRUNC);
	in->trunc = !!(mh.msg_flags & MSG_TRUNC);
	return n;
}
