/*
 * The requests of the remote mode, before and while they are in flight to
 * the page server. The server answers in request order, so what is on the
 * wire cannot be reordered; what is not sent yet can: fault requests go
 * before background ones, and a fault on a page that a background request
 * still waiting to be sent would bring promotes that request. Background
 * requests in flight are few, so a fault waits behind little data.
 *
 * Knows nothing about sockets or targets: a pure queue, unit-tested alone.
 */
#ifndef UFFD_RQUEUE_H
#define UFFD_RQUEUE_H

#include <stdbool.h>
#include <stdint.h>

struct rreq {
	struct rreq *next;
	uint64_t target_id;	/* the served process that asked */
	uint64_t addr;		/* where the pages go in it, when asked */
	uint64_t img;		/* their image address: the GET's vaddr */
	uint64_t nr;		/* pages asked */
	uint32_t pid;		/* the image's pid: the GET's dst_id */
	bool urgent;		/* for a fault */
	bool sent;
	uint64_t t0;		/* when it was queued, ns */
	uint64_t t_sent;	/* when it went on the wire (set by the sender), ns */
};

struct rqueue {
	struct rreq *urg, **urg_tail;	/* not sent yet, for faults */
	struct rreq *bg, **bg_tail;	/* not sent yet, background */
	struct rreq *fly, **fly_tail;	/* sent: answers come in this order */
	unsigned nr_pend, nr_fly, nr_fly_bg;
	unsigned max_fly, max_fly_bg;
};

void rq_init(struct rqueue *q, unsigned max_fly, unsigned max_fly_bg);

/* Queue R (its urgent flag says where); it is the queue's until rq_done or rq_clear. */
void rq_add(struct rqueue *q, struct rreq *r);

/* The next request to send within the limits, moved to the in-flight list; NULL if none. */
struct rreq *rq_next(struct rqueue *q);

/* The request the next answer is for; NULL if none is in flight. */
struct rreq *rq_head(const struct rqueue *q);

/* Take the head of the in-flight list off (its answer is complete); the caller frees it. */
struct rreq *rq_done(struct rqueue *q);

/* A request of TARGET_ID (queued or in flight) whose pages cover ADDR, or NULL. */
struct rreq *rq_covers(const struct rqueue *q, uint64_t target_id, uint64_t addr);

/* The lowest start above ADDR of a request of TARGET_ID, or UINT64_MAX. */
uint64_t rq_next_start(const struct rqueue *q, uint64_t target_id, uint64_t addr);

/* A fault waits on R: if it is a background request not sent yet, make it urgent. True if moved. */
bool rq_promote(struct rqueue *q, struct rreq *r);

/* May a background request be queued now (background ones, queued or in flight, below their cap)? */
bool rq_bg_room(const struct rqueue *q);

/*
 * The connection broke: every request in flight goes back in front of those
 * not sent yet (fault requests with fault requests), to be asked again in
 * the order they were sent.
 */
void rq_requeue(struct rqueue *q);

/* Free every request; Q is empty afterwards. */
void rq_clear(struct rqueue *q);

#endif
