/* Send a HELLO to uffd-manager and read its verdict. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <sys/un.h>
#include <unistd.h>

#include "handover.h"
#include "manager.pb-c.h"
#include "wire.h"

int handover_send(const struct handover *h, uint64_t *lazy, char *reason, size_t len)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	Hello hello = HELLO__INIT;
	Request req = REQUEST__INIT;
	int fds[3] = { h->uffd, h->pidfd, h->dirfd };
	struct pollfd p;
	uint8_t buf[WIRE_MAX_MSG];
	int rfds[WIRE_MAX_FDS], nrfds, fd, ret;
	ssize_t n;
	Reply *r;

	if (strlen(h->socket_path) >= sizeof(addr.sun_path)) {
		snprintf(reason, len, "%s: path too long", h->socket_path);
		return -ENAMETOOLONG;
	}
	strcpy(addr.sun_path, h->socket_path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		ret = -errno;
		snprintf(reason, len, "no manager at %s: %s", h->socket_path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return ret;
	}
	hello.version = UFFD_PROTO_VERSION;
	hello.image_id = h->image_id;
	hello.features = h->features;
	if (h->flags) {
		hello.has_flags = 1;
		hello.flags = h->flags;
	}
	if (h->page_server) {
		hello.page_server = (char *)h->page_server;
		if (h->tls && h->tls->on) {
			hello.has_tls = hello.tls = 1;
			hello.tls_cacert = (char *)h->tls->cacert;
			hello.tls_cacrl = (char *)h->tls->cacrl;
			hello.tls_cert = (char *)h->tls->cert;
			hello.tls_key = (char *)h->tls->key;
			hello.has_tls_no_cn_verify = hello.tls_no_cn_verify = h->tls->no_cn_verify;
		}
	}
	req.hello = &hello;
	ret = wire_send(fd, &req.base, fds, 3);
	if (ret < 0) {
		snprintf(reason, len, "send HELLO to %s: %s", h->socket_path, strerror(-ret));
		close(fd);
		return ret;
	}
	p.fd = fd;
	p.events = POLLIN;
	ret = poll(&p, 1, h->timeout_ms ? h->timeout_ms : 10000);
	if (ret <= 0) {
		snprintf(reason, len, "no answer from the manager at %s", h->socket_path);
		close(fd);
		return -ETIMEDOUT;
	}
	n = wire_recv(fd, buf, sizeof(buf), rfds, &nrfds, 0);
	close(fd);
	if (n <= 0) {
		snprintf(reason, len, "the manager at %s closed the connection without an answer",
			 h->socket_path);
		return n < 0 ? (int)n : -ECONNRESET;
	}
	r = reply__unpack(NULL, n, buf);
	if (!r || !r->hello) {
		snprintf(reason, len, "undecodable answer from the manager");
		if (r)
			reply__free_unpacked(r, NULL);
		return -EPROTO;
	}
	ret = 0;
	if (!r->hello->ok) {
		snprintf(reason, len, "%s", r->hello->reason ? r->hello->reason : "refused");
		ret = -EPERM;
	} else if (lazy) {
		*lazy = r->hello->lazy_pages;
	}
	reply__free_unpacked(r, NULL);
	return ret;
}

int handover_default_socket(char *buf, size_t len)
{
	const char *rt = getenv("XDG_RUNTIME_DIR");
	int n;

	if (geteuid() == 0)
		n = snprintf(buf, len, "/run/uffd-manager/manager.sock");
	else if (rt && *rt)
		n = snprintf(buf, len, "%s/uffd-manager.sock", rt);
	else
		return -ENOENT;
	return n > 0 && (size_t)n < len ? 0 : -ENAMETOOLONG;
}
