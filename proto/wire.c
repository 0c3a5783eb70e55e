/* One protobuf message per SEQPACKET packet, with fds in SCM_RIGHTS. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include "wire.h"

/* Room for more fds than we accept, so extra ones are seen and closed. */
#define WIRE_CMSG_FDS	16

int wire_send(int sock, const ProtobufCMessage *m, const int *fds, int nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * WIRE_MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	uint8_t data[WIRE_MAX_MSG];
	size_t len = protobuf_c_message_get_packed_size(m);
	struct iovec iov;
	struct msghdr mh = { 0 };
	ssize_t n;

	if (len > sizeof(data) || nfds < 0 || nfds > WIRE_MAX_FDS)
		return -EMSGSIZE;
	protobuf_c_message_pack(m, data);
	iov.iov_base = data;
	iov.iov_len = len;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
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
	do
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EIO;
}

/* Collect the fds of every SCM_RIGHTS header of MH into ALL. */
static int collect_fds(struct msghdr *mh, int *all, int cap)
{
	struct cmsghdr *c;
	int n = 0;

	for (c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		size_t k;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k && n < cap; i++)
			memcpy(&all[n++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
	}
	return n;
}

ssize_t wire_recv(int sock, uint8_t *buf, size_t cap, int *fds, int *nfds, int maxfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * WIRE_CMSG_FDS)];
		struct cmsghdr align;
	} ctl;
	int all[WIRE_CMSG_FDS];
	struct iovec iov = { .iov_base = buf, .iov_len = cap };
	struct msghdr mh = { 0 };
	ssize_t n;
	int k;

	*nfds = 0;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = ctl.buf;
	mh.msg_controllen = sizeof(ctl.buf);
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	k = collect_fds(&mh, all, WIRE_CMSG_FDS);
	if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || k > maxfds) {
		for (int i = 0; i < k; i++)
			close(all[i]);
		return (mh.msg_flags & MSG_TRUNC) ? -EMSGSIZE : -E2BIG;
	}
	memcpy(fds, all, sizeof(int) * k);
	*nfds = k;
	return n;
}
