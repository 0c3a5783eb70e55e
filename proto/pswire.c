/* CRIU page-server header encoding. */
#include <sys/socket.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "pswire.h"

void ps_encode(uint8_t buf[PS_HDR_SIZE], const struct ps_hdr *h)
{
	memset(buf, 0, PS_HDR_SIZE);
	memcpy(buf + 0, &h->cmd, 4);
	memcpy(buf + 8, &h->nr_pages, 8);
	memcpy(buf + 16, &h->vaddr, 8);
	memcpy(buf + 24, &h->dst_id, 8);
}

void ps_decode(const uint8_t buf[PS_HDR_SIZE], struct ps_hdr *h)
{
	memcpy(&h->cmd, buf + 0, 4);
	memcpy(&h->nr_pages, buf + 8, 8);
	memcpy(&h->vaddr, buf + 16, 8);
	memcpy(&h->dst_id, buf + 24, 8);
}

const char *ps_op_name(uint32_t op, char *buf, unsigned len)
{
	static const char *const names[] = {
		[PS_IOV_ADD] = "ADD", [PS_IOV_HOLE] = "HOLE", [PS_IOV_OPEN] = "OPEN",
		[PS_IOV_OPEN2] = "OPEN2", [PS_IOV_PARENT] = "PARENT", [PS_IOV_ADD_F] = "ADD_F",
		[PS_IOV_GET] = "GET",
	};

	if (op < sizeof(names) / sizeof(names[0]) && names[op])
		return names[op];
	if (op == PS_IOV_CLOSE)
		return "CLOSE";
	if (op == PS_IOV_FORCE_CLOSE)
		return "FORCE_CLOSE";
	snprintf(buf, len, "op 0x%x", op);
	return buf;
}

uint32_t ps_get_pid(uint64_t dst_id)
{
	/* A pid is a positive int (pid_max is at most 2^22). */
	return dst_id && dst_id <= INT32_MAX ? (uint32_t)dst_id : 0;
}

ssize_t ps_hdr_recv(int sock, struct ps_hdr_in *in)
{
	ssize_t n;

	do
		n = recv(sock, in->b + in->have, PS_HDR_SIZE - in->have, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	in->have += (size_t)n;
	return n;
}
