/* One protobuf message per SEQPACKET packet, with fds in SCM_RIGHTS. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include "fdpass.h"
#include "wire.h"

/* Room for more fds than we accept, so extra ones are seen and closed. */
#define WIRE_CMSG_FDS	16

int wire_send(int sock, const ProtobufCMessage *m, const int *fds, int nfds)
{
	uint8_t data[WIRE_MAX_MSG];
	size_t len = protobuf_c_message_get_packed_size(m);
	ssize_t n;

	if (len > sizeof(data) || nfds < 0 || nfds > WIRE_MAX_FDS)
		return -EMSGSIZE;
	protobuf_c_message_pack(m, data);
	n = fdpass_send(sock, data, len, fds, nfds, 0);
	if (n < 0)
		return (int)n;
	return (size_t)n == len ? 0 : -EIO;
}

ssize_t wire_recv(int sock, uint8_t *buf, size_t cap, int *fds, int *nfds, int maxfds)
{
	int all[WIRE_CMSG_FDS];
	struct fdpass_in in = { .fds = all, .max = WIRE_CMSG_FDS };
	ssize_t n = fdpass_recv(sock, buf, cap, MSG_DONTWAIT, &in);

	*nfds = 0;
	if (n < 0)
		return n;
	if (in.trunc || in.cut || in.nfds > maxfds) {
		for (int i = 0; i < in.nfds; i++)
			close(all[i]);
		return in.trunc ? -EMSGSIZE : -E2BIG;
	}
	memcpy(fds, all, sizeof(int) * in.nfds);
	*nfds = in.nfds;
	return n;
}
