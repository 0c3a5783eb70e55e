/*
 * restore --page-server: the pages restore writes before the process runs,
 * fetched from the page server when the image copy has no pages files
 * (`uffd-manager page-server --all-pages` on the source host). A blocking
 * client of criu's page-server protocol (pswire.h), under TLS when asked.
 * It never says CLOSE: the session is the manager's to end.
 */
#ifndef UFFD_RESTORE_REMOTE_H
#define UFFD_RESTORE_REMOTE_H

#include <stddef.h>
#include <stdint.h>

#include "tls.h"

struct rsr;

/* Connect to HOSTPORT ("host:port", "[v6]:port") within a few seconds. 0 or -errno with WHY. */
int rsr_open(const char *hostport, const struct tls_opts *tls, struct rsr **out, char *why,
	     size_t len);

/* Fetch NR pages of task PID at image address ADDR into BUF (NR * 4096 bytes). 0 or -errno with WHY. */
int rsr_get(struct rsr *c, uint32_t pid, uint64_t addr, uint64_t nr, uint8_t *buf, char *why,
	    size_t len);

/* Hang up (a reset: no clean end a criu page server would take for success). Safe on NULL. */
void rsr_close(struct rsr *c);

#endif
