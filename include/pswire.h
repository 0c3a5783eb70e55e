/*
 * CRIU's page-server wire: a fixed 32-byte header, host endianness, the
 * layout of `struct page_server_iov { u32 cmd; u64 nr_pages; u64 vaddr;
 * u64 dst_id; }` with natural alignment (4 bytes of padding after cmd).
 * cmd = flags << 16 | op. Pure encode/decode: no sockets here.
 *
 * Post-copy (lazy) use, as CRIU 4.x does it (criu/page-xfer.c, criu/uffd.c):
 * the lazy-pages daemon sends GET {nr_pages, vaddr, dst_id = the task's pid};
 * the source answers, in request order, ADD_F with flags PE_PRESENT, the same
 * vaddr and dst_id and nr_pages <= the request (it stops at the end of a
 * contiguous run of lazy pages), then nr_pages * 4096 bytes of data. A GET
 * for pages the source does not hold has no answer: it closes the
 * connection. At the end the client sends CLOSE (all other fields zero) and
 * reads an int32 status (0) back.
 *
 * Encoding and decoding need no socket; ps_hdr_recv gathers a header that
 * arrives in pieces on a stream socket, for both sides.
 */
#ifndef UFFD_PSWIRE_H
#define UFFD_PSWIRE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define PS_HDR_SIZE		32

#define PS_IOV_ADD		1
#define PS_IOV_HOLE		2
#define PS_IOV_OPEN		3
#define PS_IOV_OPEN2		4
#define PS_IOV_PARENT		5
#define PS_IOV_ADD_F		6
#define PS_IOV_GET		7
#define PS_IOV_CLOSE		0x1023
#define PS_IOV_FORCE_CLOSE	0x1024

#define PS_CMD_BITS		16
#define PS_TYPE_BITS		8
#define PS_TYPE_PID		1	/* dst_id type of a task's pagemap (pid << 8 | 1) when pushing, never in a GET */

/* pagemap_entry flags as they ride in cmd's upper half. */
#define PS_FLAG_PARENT		1u
#define PS_FLAG_LAZY		2u
#define PS_FLAG_PRESENT		4u

struct ps_hdr {
	uint32_t cmd;
	uint64_t nr_pages;
	uint64_t vaddr;
	uint64_t dst_id;
};

static inline uint32_t ps_cmd(uint32_t op, uint32_t flags)
{
	return flags << PS_CMD_BITS | (op & ((1u << PS_CMD_BITS) - 1));
}

static inline uint32_t ps_op(uint32_t cmd)
{
	return cmd & ((1u << PS_CMD_BITS) - 1);
}

static inline uint32_t ps_flags(uint32_t cmd)
{
	return cmd >> PS_CMD_BITS;
}

/* Write H as its 32 wire bytes (padding zeroed). */
void ps_encode(uint8_t buf[PS_HDR_SIZE], const struct ps_hdr *h);

/* Read 32 wire bytes into H. The padding is ignored, as CRIU ignores it. */
void ps_decode(const uint8_t buf[PS_HDR_SIZE], struct ps_hdr *h);

/* A header arriving in pieces: complete when HAVE reaches PS_HDR_SIZE. */
struct ps_hdr_in {
	uint8_t b[PS_HDR_SIZE];
	size_t have;
};

/*
 * Read what SOCK has of the header into IN, without blocking (EINTR
 * retried). Returns the bytes read, 0 at end of file, or -errno (-EAGAIN:
 * nothing there now).
 */
ssize_t ps_hdr_recv(int sock, struct ps_hdr_in *in);

/* The name of an op, for log lines ("GET", "ADD_F", ... or "op 0x1234"). */
const char *ps_op_name(uint32_t op, char *buf, unsigned len);

/*
 * The task a GET's DST_ID names: the bare pid, as criu's lazy client sends
 * it (page_server_get_pages). Not the dump side's form (pid << 8 | 1): a
 * GET never carries it. Returns the pid, or 0 if DST_ID cannot be one.
 */
uint32_t ps_get_pid(uint64_t dst_id);

#endif
