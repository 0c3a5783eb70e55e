/* Remote mode's policy: what to ask the page server for, and placing the answers (rserve.h). */
#include <errno.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "remote.h"
#include "rserve.h"
#include "serve.h"

static void on_lost(struct daemon *d, struct remote *r, const char *why);

struct remote *rserve_remote(const struct target *t)
{
	for (struct remote *r = t->d->remotes; r; r = *remote_nextp(r))
		if (remote_img(r) == t->img)
			return r;
	return t->d->remote;
}
/*
 * Place what is left of fetched data H where it still belongs: pages that
 * are missing and still have the image address it was asked for (a moved or
 * dropped page is skipped; a moved one is asked again at its new place).
 * False if it must wait for a drain (EAGAIN); H then holds the rest.
 */
static bool place_held(struct target *t, struct rheld *h)
{
	uint64_t end = h->addr + h->len;

	while (h->addr < end && !t->dead) {
		uint64_t a = h->addr, adv = PG;
		struct area *v = model_find(&t->map, a);

		if (v && area_img_addr(v, a) == h->img && area_is_missing(v, a)) {
			uint64_t n = area_run(v, a, end - a, true);
			enum uffd_class c = serve_place(t, a, n, h->buf + h->off, true, &adv);

			if (serve_placed(c)) {
				model_clear(&t->map, a, a + adv);
				serve_faults_done(t, a, a + adv);
			} else if (c == UC_RETRY) {
				h->len = end - a;
				return false;
			} else if (c == UC_STALE && !serve_stale_for_good(t, a)) {
				/* Maybe an event not read yet moved it: wait for the drain. */
				h->len = end - a;
				return false;
			} else if (c == UC_STALE) {
				serve_drop_stale(t, a);
				adv = PG;
			} else if (c == UC_GONE) {
				target_exited(t);
				return true;
			} else {
				return true;	/* UC_BUG: target_fail took it down */
			}
		}
		h->addr += adv;
		h->img += adv;
		h->off += adv;
	}
	return true;
}

/* Remote mode: does fetched data held for T cover PAGE (it waits for a drain)? */
static bool held_covers(const struct target *t, uint64_t page)
{
	for (const struct rheld *h = t->held; h; h = h->next)
		if (page >= h->addr && page < h->addr + h->len)
			return true;
	return false;
}

/*
 * Remote mode: answer a fault at ADDR. A page with no data to come gets a
 * zero page; a missing one waits (*WAITING) for a request: the one already
 * covering it, moved ahead of background requests, or a new one from the
 * fault to the end of its window. The fill resumes from there.
 */
static enum uffd_class rserve_fault(struct target *t, uint64_t addr, bool *waiting)
{
	uint64_t page = addr & ~(PG - 1), w = t->d->o.fault_window, we, ns, n;
	struct area *v = model_find(&t->map, page);
	struct remote *r = rserve_remote(t);
	struct rqueue *q;
	struct rreq *cover;
	enum uffd_class c;
	int ret;

	if (!r) {
		/* Its connection is gone (freed): nothing can come. */
		target_kill(t, "killed: page server connection lost");
		return UC_GONE;
	}
	q = remote_queue(r);
	if (!v || !area_is_missing(v, page)) {
		c = serve_zero(t, page);
		return c == UC_EXISTS || c == UC_PARTIAL ? UC_DONE : c;
	}
	*waiting = true;
	if (held_covers(t, page))
		return UC_DONE;	/* its data is here, placed after the next drain */
	cover = rq_covers(q, t->id, page);
	if (cover) {
		remote_promote(r, cover);
		return UC_DONE;
	}
	we = (page & ~(w - 1)) + w;
	if (we > v->end || we <= page)
		we = v->end;
	ns = rq_next_start(q, t->id, page);
	if (we > ns)
		we = ns;
	if (we - page > REMOTE_MAX_PAGES * PG)
		we = page + REMOTE_MAX_PAGES * PG;
	n = area_run(v, page, we - page, true);
	ret = remote_request(r, t->id, t->image_id, page, area_img_addr(v, page), n / PG, true);
	if (ret == -ENOTCONN) {
		on_lost(t->d, r, "killed: page server connection lost");
		return UC_GONE;
	}
	if (ret < 0) {
		*waiting = false;
		return UC_RETRY;	/* out of memory: try again after the retry delay */
	}
	t->fill_cursor = page + n;
	return UC_DONE;
}

/*
 * Remote mode: the first missing page of T at or after its fill cursor
 * (wrapping once) that no request covers, and how much to ask from there:
 * up to a fill chunk, within its area, short of the next request.
 */
static bool next_uncovered(struct target *t, struct rqueue *q, uint64_t *addr, uint64_t *len)
{
	uint64_t a = t->fill_cursor, lim, ns;
	bool wrapped = false;

	for (unsigned i = 0; i < 4 * REMOTE_MAX_PAGES; i++) {
		struct rreq *cover;
		struct area *v;

		if (!model_next_missing(&t->map, a, &a)) {
			if (wrapped)
				return false;
			wrapped = true;
			a = 0;
			continue;
		}
		cover = rq_covers(q, t->id, a);
		if (cover) {
			a = cover->addr + cover->nr * PG;
			continue;
		}
		v = model_find(&t->map, a);
		lim = t->d->o.fill_chunk;
		if (lim > REMOTE_MAX_PAGES * PG)
			lim = REMOTE_MAX_PAGES * PG;
		ns = rq_next_start(q, t->id, a);
		if (ns - a < lim)
			lim = ns - a;
		*addr = a;
		*len = area_run(v, a, lim, true);
		return *len != 0;
	}
	return false;
}

/* Queue background requests on R while it has room, one of its processes after another. */
static void fill_remote(struct daemon *d, struct remote *r)
{
	struct rqueue *q = remote_queue(r);
	bool any = true, faults = false;
	struct target *f;

	if (!remote_alive(r))
		return;
	/* While faults wait, keep little background data ahead of them on the wire. */
	for (f = d->targets; f && !faults; f = f->next)
		faults = f->remote && f->nr_faults != 0 && rserve_remote(f) == r;
	q->max_fly_bg = faults ? REMOTE_BG_BUSY : REMOTE_BG_IDLE;
	while (any && rq_bg_room(q)) {
		struct target **pp, *t;

		any = false;
		for (pp = &d->targets; (t = *pp); pp = &t->next) {
			uint64_t a, n;
			struct target **tail;

			/* Held data first: no more background for it until that is placed. */
			if (t->dead || !t->remote || t->held || t->parked || !t->map.nr_missing ||
			    rserve_remote(t) != r || !next_uncovered(t, q, &a, &n))
				continue;
			if (remote_request(r, t->id, t->image_id, a,
					   area_img_addr(model_find(&t->map, a), a), n / PG, false) < 0)
				return;
			t->fill_cursor = a + n;
			/* To the back of the line. */
			if (t->next) {
				*pp = t->next;
				for (tail = pp; *tail; tail = &(*tail)->next)
					;
				*tail = t;
				t->next = NULL;
			}
			any = true;
			break;
		}
	}
}

/* Remote mode: queue background requests while there is room, on every connection. */
bool rserve_fill(struct daemon *d)
{
	if (d->remote)
		fill_remote(d, d->remote);
	for (struct remote *r = d->remotes; r; r = *remote_nextp(r))
		fill_remote(d, r);
	return false;	/* nothing for the idle hook: answers call us again */
}

/* An answer came for the process OWNER: hold it, then place what can be placed. */
static void on_answer(struct daemon *d, uint64_t owner, uint64_t addr, uint64_t img,
		      uint8_t *buf, uint64_t len)
{
	struct target *t = target_by_id(d, owner);
	struct rheld *h, **pp;

	if (!t) {
		free(buf);	/* it exited meanwhile */
		return;
	}
	h = malloc(sizeof(*h));
	if (!h) {
		/* The pages stay missing: faults and the fill ask again. */
		log_warnx("%s out of memory holding %" PRIu64 " fetched bytes", t->pfx, len);
		free(buf);
		serve_faults(t);
		return;
	}
	*h = (struct rheld){ .addr = addr, .img = img, .len = len, .buf = buf };
	for (pp = &t->held; *pp; pp = &(*pp)->next)
		;
	*pp = h;
	serve_faults(t);
}

/* The page server R is gone: kill every process of it not fully served (WHY). */
static void on_lost(struct daemon *d, struct remote *r, const char *why)
{
	struct target *t, *next;

	for (t = d->targets; t; t = next) {
		next = t->next;
		if (t->dead || !t->remote || (!t->map.nr_missing && !t->held) ||
		    rserve_remote(t) != r)
			continue;
		log_warnx("%s %" PRIu64 " lazy pages were not delivered; killing it so that it never reads zeros",
			  t->pfx, t->map.nr_missing);
		if (t->pidfd >= 0)
			target_kill(t, why);
		else
			target_abandon(t, "its pid is unknown, so it cannot be killed");
	}
}

/*
 * The connection has been quiet for a while (--no-fill, or a process that
 * faults rarely): ask for one missing page, so that a page server that
 * closes quiet clients keeps this one. True if it asked.
 */
bool rserve_keepalive(struct daemon *d, struct remote *r)
{
	for (struct target *t = d->targets; t; t = t->next) {
		uint64_t a;

		if (t->dead || !t->remote || t->held || rserve_remote(t) != r ||
		    !model_next_missing(&t->map, 0, &a))
			continue;
		log_debug("%s keep-alive: asking for 0x%" PRIx64, t->pfx, a);
		return remote_request(r, t->id, t->image_id, a,
				      area_img_addr(model_find(&t->map, a), a), 1, false) == 0;
	}
	return false;
}

static void on_idle(struct daemon *d, struct remote *r)
{
	rserve_keepalive(d, r);
}

void rserve_gc(struct daemon *d)
{
	struct remote **pp = &d->remotes, *r;

	while ((r = *pp)) {
		struct target *t;

		for (t = d->targets; t; t = t->next)
			if (!t->dead && rserve_remote(t) == r)
				break;
		if (t) {
			pp = remote_nextp(r);
			continue;
		}
		/* No process of its images is left: say CLOSE if it never failed, and let go. */
		*pp = *remote_nextp(r);
		remote_free(r, remote_alive(r));
	}
}

int rserve_adopt(struct daemon *d, struct remote *r, const void *img, char *why, size_t len)
{
	int ret = remote_attach_r(r);

	if (ret < 0) {
		snprintf(why, len, "epoll: %s", strerror(-ret));
		return ret;
	}
	remote_set_img(r, img);
	*remote_nextp(r) = d->remotes;
	d->remotes = r;
	return 0;
}

const struct remote_ops rserve_ops = { .answer = on_answer, .lost = on_lost, .idle = on_idle };

/* Place the answers held for T in order; false if one must wait for a drain again. */
static bool place_all_held(struct target *t)
{
	while (t->held && !t->dead) {
		struct rheld *h = t->held;

		if (!place_held(t, h))
			return false;
		t->held = h->next;
		free(h->buf);
		free(h);
	}
	return true;
}

const struct page_source rserve_source = {
	.name = "page server",
	.remote = true,
	.fault = rserve_fault,
	.place_held = place_all_held,
};
