/*
 * Framing of uffd-manager's protocol: one protobuf message per
 * SOCK_SEQPACKET packet, file descriptors in SCM_RIGHTS.
 */
#ifndef UFFD_WIRE_H
#define UFFD_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#define UFFD_PROTO_VERSION	1

/* hello.flags */
#define HELLO_F_REGISTERED	(1u << 0)	/* the client registered the lazy ranges itself */
/*
 * The client left the shared memory objects of the images empty where they
 * may be served lazily (shm.h: reachable through mappings only, not write
 * sealed): serve them, in every area that maps them (MISSING|MINOR).
 */
#define HELLO_F_SHM_LAZY	(1u << 1)

#define WIRE_MAX_MSG		4096	/* largest packet either side accepts */
#define WIRE_MAX_FDS		3	/* most fds a packet may carry */

/* Send M on SOCK with NFDS descriptors attached. Returns 0 or -errno. */
int wire_send(int sock, const ProtobufCMessage *m, const int *fds, int nfds);

/*
 * Receive one packet into BUF (CAP bytes). Descriptors beyond MAXFDS, and all
 * of them on error, are closed. Returns the length, 0 on EOF, -EMSGSIZE for
 * an oversized packet, -E2BIG for too many fds, or -errno.
 */
ssize_t wire_recv(int sock, uint8_t *buf, size_t cap, int *fds, int *nfds, int maxfds);

#endif
