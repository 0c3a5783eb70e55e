/*
 * Remote mode: the lazy pages come from a page server over TCP (CRIU's
 * page-server protocol, see pswire.h), not from pages-N.img. One connection
 * per daemon, non-blocking, in the daemon's event loop. Requests are queued
 * (rqueue.h) and sent several at a time; answers come back in order into a
 * buffer per answer, which goes to whoever asked through remote_ops
 * (rserve.c places it with UFFDIO_COPY). The connection knows nothing of
 * the processes served.
 *
 * Losing the connection is final, and reported (remote_ops.lost): every
 * process not fully served is then killed, never woken with zeros. A server that stops
 * answering counts as lost: the oldest request in flight must be answered
 * within the timeout (--page-server-timeout), and keepalive probes and
 * TCP_USER_TIMEOUT let the kernel notice a dead path too.
 */
#ifndef UFFD_REMOTE_H
#define UFFD_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rqueue.h"

struct daemon;
struct remote;

/* The largest request, in pages (4 MiB): the cap of every answer buffer. */
#define REMOTE_MAX_PAGES	1024

/* The default time an answer may take (--page-server-timeout). */
#define REMOTE_TIMEOUT_MS	10000

/* Background requests in flight: while faults wait, and otherwise. */
#define REMOTE_BG_BUSY		1
#define REMOTE_BG_IDLE		4

struct remote_stats {
	uint64_t requests, urgent, promoted;
	uint64_t pages, short_answers;
	uint64_t max_fly;
	uint64_t urgent_ns;		/* sum of fault request round trips */
	uint64_t answered_urgent;
};

/*
 * What the connection reports to whoever asked: it knows requests by the
 * OWNER id given with them, nothing else of who asked.
 */
struct remote_ops {
	/* LEN bytes in BUF (theirs from now on) answer OWNER's request for image address IMG, to go at ADDR. */
	void (*answer)(struct daemon *d, uint64_t owner, uint64_t addr, uint64_t img,
		       uint8_t *buf, uint64_t len);
	/* The connection is gone for good (WHY): nothing more will come. */
	void (*lost)(struct daemon *d, const char *why);
	/*
	 * Nothing was asked for --page-server-keepalive: ask for something small
	 * (a page server may close a connection quiet for long, as ours does
	 * after --idle-timeout), or nothing if all is served.
	 */
	void (*idle)(struct daemon *d);
};

/* The default of --page-server-keepalive (remote_ops.idle). */
#define REMOTE_KEEPALIVE_MS	20000

/*
 * Connect to the page server at ADDR:PORT (a blocking connect, with a
 * timeout) and give D its remote; remote_attach puts it in the loop.
 * Answers and loss go to OPS. Answers are due within D->o.ps_timeout_ms
 * (0: REMOTE_TIMEOUT_MS). 0, or -errno with WHY filled.
 */
int remote_open(struct daemon *d, const char *addr, const char *port,
		const struct remote_ops *ops, char *why, size_t len);

/* Watch the connection in D's loop (once the loop exists). 0 or -errno. */
int remote_attach(struct daemon *d);

/* Is the connection up (not lost)? */
bool remote_alive(const struct remote *r);

/*
 * Queue a GET for NR pages at image address IMG of image PID, to be placed
 * at ADDR by OWNER (target_id in the queue). Sent at the next remote_pump.
 * 0, -ENOTCONN (lost), -ENOMEM.
 */
int remote_request(struct remote *r, uint64_t owner, uint32_t pid, uint64_t addr,
		   uint64_t img, uint64_t nr, bool urgent);

/* The queue, for the targets' questions (covered? next start? room?). */
struct rqueue *remote_queue(struct remote *r);

/* A fault waits on R: send it before background requests. */
void remote_promote(struct remote *r, struct rreq *q);

/* Send what the queue allows (called before the loop sleeps). */
void remote_pump(struct daemon *d);

/*
 * End of the run: log the figures and free. DONE (every page of every task
 * reached its process): say CLOSE and wait (a little) for the server's
 * status, which ends the source. Otherwise never end the source: no CLOSE,
 * and the connection stays open in a holder process (see uffd-manager(8)).
 * Safe on a lost connection or NULL.
 */
void remote_close(struct daemon *d, bool done);

#endif
