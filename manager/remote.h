/*
 * Remote mode: the lazy pages come from a page server over TCP (CRIU's
 * page-server protocol, see pswire.h), not from pages-N.img. One connection
 * per daemon, non-blocking, in the daemon's event loop. Requests are queued
 * (rqueue.h) and sent several at a time; answers come back in order into a
 * buffer per answer, which goes to whoever asked through remote_ops
 * (rserve.c places it with UFFDIO_COPY). The connection knows nothing of
 * the processes served.
 *
 * With --tls the connection runs under TLS (tls.h), both certificates
 * checked.
 *
 * A broken connection (reset, EOF, an error, or no answer within
 * --page-server-timeout) is not the end while --page-server-grace lasts:
 * the processes wait, never on zeros, while a new connection is made with
 * back-off; the requests that were in flight are asked again on it, and
 * the answer cut in the middle is dropped. Under TLS a connection silent
 * for a second with answers due gets a new one made alongside, which takes
 * over once its handshake is through (the old one is kept until then, in
 * case it moves again). Every connection given up is reset, never closed
 * cleanly: CRIU's page server takes a clean end for a finished transfer.
 * Once the grace is over the loss is final, and reported
 * (remote_ops.lost): every process not fully served is then killed.
 * Keepalive probes and TCP_USER_TIMEOUT let the kernel notice a dead path
 * too.
 */
#ifndef UFFD_REMOTE_H
#define UFFD_REMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rqueue.h"
#include "tls.h"

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
	uint64_t cuts;			/* breaks and stalls */
	uint64_t reconnects;
	uint64_t reasked;		/* requests asked again on a new connection */
};

/* The default of --page-server-grace. */
#define REMOTE_GRACE_MS		60000

/* What `uffd-manager status` shows of the connection. */
struct remote_status {
	const char *state;	/* "up", "stalled", "reconnecting", "lost", "none" */
	char server[300];	/* HOST:PORT */
	bool tls;
	uint64_t reconnects;
	uint64_t pages;
	uint64_t down_ms;	/* how long it has been stalled or reconnecting */
};

/*
 * What the connection reports to whoever asked: it knows requests by the
 * OWNER id given with them, nothing else of who asked.
 */
struct remote_ops {
	/* LEN bytes in BUF (theirs from now on) answer OWNER's request for image address IMG, to go at ADDR. */
	void (*answer)(struct daemon *d, uint64_t owner, uint64_t addr, uint64_t img,
		       uint8_t *buf, uint64_t len);
	/* The connection R is gone for good (WHY): nothing more will come. */
	void (*lost)(struct daemon *d, struct remote *r, const char *why);
	/*
	 * Nothing was asked for --page-server-keepalive: ask for something small
	 * (a page server may close a connection quiet for long, as ours does
	 * after --idle-timeout), or nothing if all is served.
	 */
	void (*idle)(struct daemon *d, struct remote *r);
};

/* The default of --page-server-keepalive (remote_ops.idle). */
#define REMOTE_KEEPALIVE_MS	20000

/*
 * Connect to the page server at ADDR:PORT (a blocking connect, with a
 * timeout; with TLS->on the handshake and the check of the server's
 * certificate too) and give D its remote; remote_attach puts it in the
 * loop. Answers and loss go to OPS. Answers are due within
 * D->o.ps_timeout_ms (0: REMOTE_TIMEOUT_MS); reconnects go on for
 * D->o.ps_grace_ms. 0, or -errno with WHY filled.
 */
int remote_open(struct daemon *d, const char *addr, const char *port,
		const struct remote_ops *ops, const struct tls_opts *tls, char *why, size_t len);

/*
 * The same, for a hand-over's own page server (uffd-inject restore
 * --page-server): connect (from the loader thread: nothing of D's state is
 * touched) and give the connection in *OUT, not D->remote.
 */
int remote_connect(struct daemon *d, const char *addr, const char *port,
		   const struct remote_ops *ops, const struct tls_opts *tls, struct remote **out,
		   char *why, size_t len);

/* Watch the connection in D's loop (once the loop exists). 0 or -errno. */
int remote_attach(struct daemon *d);
int remote_attach_r(struct remote *r);

/* Is the connection not lost for good (it may be reconnecting)? */
bool remote_alive(const struct remote *r);

/* The connection's state as a word; R may be NULL ("none"). */
const char *remote_state(const struct remote *r);

/* Fill S for `status`; R may be NULL. */
void remote_status(const struct remote *r, struct remote_status *s);

/* Put the connection's state in the status totals T (its strings valid until the next call). */
struct StatusTotals;
void remote_status_totals(const struct remote *r, struct StatusTotals *t);

/* The same for one process whose pages come from R (may be NULL: "none"). */
struct StatusTarget;
void remote_status_target(const struct remote *r, struct StatusTarget *t);

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

/* Send what the queues allow, D's remote's and every one of D->remotes (before the loop sleeps). */
void remote_pump(struct daemon *d);

/*
 * End of the run: log the figures and free. DONE (every page of every task
 * reached its process): say CLOSE and wait (a little) for the server's
 * status, which ends the source. Otherwise never end the source: no CLOSE,
 * and the connection stays open in a holder process (see uffd-manager(8)).
 * Safe on a lost connection or NULL.
 */
void remote_close(struct daemon *d, bool done);

/* The same for any connection (not D->remote's slot); safe on NULL. */
void remote_free(struct remote *r, bool done);

/* A hand-over's connection: its images (rserve.c's key), and the list of them in the daemon. */
void remote_set_img(struct remote *r, const void *img);
const void *remote_img(const struct remote *r);
struct remote **remote_nextp(struct remote *r);

#endif
