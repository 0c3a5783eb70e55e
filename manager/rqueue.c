/* The remote mode's request queue. */
#include <stdlib.h>

#include "rqueue.h"

#define PG	4096ull

void rq_init(struct rqueue *q, unsigned max_fly, unsigned max_fly_bg)
{
	*q = (struct rqueue){ .max_fly = max_fly ? max_fly : 1, .max_fly_bg = max_fly_bg };
	q->urg_tail = &q->urg;
	q->bg_tail = &q->bg;
	q->fly_tail = &q->fly;
}

static void append(struct rreq ***tail, struct rreq *r)
{
	r->next = NULL;
	**tail = r;
	*tail = &r->next;
}

/* Take the first of a list, fixing its tail. */
static struct rreq *pop(struct rreq **head, struct rreq ***tail)
{
	struct rreq *r = *head;

	if (!r)
		return NULL;
	*head = r->next;
	if (!*head)
		*tail = head;
	r->next = NULL;
	return r;
}

void rq_add(struct rqueue *q, struct rreq *r)
{
	r->sent = false;
	append(r->urgent ? &q->urg_tail : &q->bg_tail, r);
	q->nr_pend++;
}

struct rreq *rq_next(struct rqueue *q)
{
	struct rreq *r = NULL;

	if (q->nr_fly >= q->max_fly)
		return NULL;
	if (q->urg)
		r = pop(&q->urg, &q->urg_tail);
	else if (q->bg && q->nr_fly_bg < q->max_fly_bg)
		r = pop(&q->bg, &q->bg_tail);
	if (!r)
		return NULL;
	q->nr_pend--;
	q->nr_fly++;
	q->nr_fly_bg += !r->urgent;
	r->sent = true;
	append(&q->fly_tail, r);
	return r;
}

struct rreq *rq_head(const struct rqueue *q)
{
	return q->fly;
}

struct rreq *rq_done(struct rqueue *q)
{
	struct rreq *r = pop(&q->fly, &q->fly_tail);

	if (r) {
		q->nr_fly--;
		q->nr_fly_bg -= !r->urgent;
	}
	return r;
}

static bool covers(const struct rreq *r, uint64_t target_id, uint64_t addr)
{
	return r->target_id == target_id && addr >= r->addr && addr - r->addr < r->nr * PG;
}

struct rreq *rq_covers(const struct rqueue *q, uint64_t target_id, uint64_t addr)
{
	struct rreq *const lists[] = { q->fly, q->urg, q->bg };

	for (unsigned i = 0; i < 3; i++)
		for (struct rreq *r = lists[i]; r; r = r->next)
			if (covers(r, target_id, addr))
				return r;
	return NULL;
}

uint64_t rq_next_start(const struct rqueue *q, uint64_t target_id, uint64_t addr)
{
	struct rreq *const lists[] = { q->fly, q->urg, q->bg };
	uint64_t best = UINT64_MAX;

	for (unsigned i = 0; i < 3; i++)
		for (struct rreq *r = lists[i]; r; r = r->next)
			if (r->target_id == target_id && r->addr > addr && r->addr < best)
				best = r->addr;
	return best;
}

bool rq_promote(struct rqueue *q, struct rreq *r)
{
	struct rreq **pp;

	if (r->sent || r->urgent)
		return false;
	for (pp = &q->bg; *pp && *pp != r; pp = &(*pp)->next)
		;
	if (!*pp)
		return false;
	*pp = r->next;
	if (q->bg_tail == &r->next)
		q->bg_tail = pp;
	r->urgent = true;
	append(&q->urg_tail, r);
	return true;
}

bool rq_bg_room(const struct rqueue *q)
{
	unsigned bg = q->nr_fly_bg;

	for (const struct rreq *r = q->bg; r; r = r->next)
		bg++;
	return bg < q->max_fly_bg && q->nr_fly + q->nr_pend < q->max_fly;
}

void rq_requeue(struct rqueue *q)
{
	struct rreq *urg = NULL, **ut = &urg, *bg = NULL, **bt = &bg, *r;

	while ((r = pop(&q->fly, &q->fly_tail))) {
		r->sent = false;
		r->t_sent = 0;
		append(r->urgent ? &ut : &bt, r);
		q->nr_pend++;
	}
	q->nr_fly = q->nr_fly_bg = 0;
	/* In front of what was not sent yet, in the order they were sent. */
	if (urg) {
		*ut = q->urg;
		if (!q->urg)
			q->urg_tail = ut;
		q->urg = urg;
	}
	if (bg) {
		*bt = q->bg;
		if (!q->bg)
			q->bg_tail = bt;
		q->bg = bg;
	}
}

void rq_clear(struct rqueue *q)
{
	struct rreq **const heads[] = { &q->fly, &q->urg, &q->bg };

	for (unsigned i = 0; i < 3; i++)
		while (*heads[i]) {
			struct rreq *r = *heads[i];

			*heads[i] = r->next;
			free(r);
		}
	rq_init(q, q->max_fly, q->max_fly_bg);
}
