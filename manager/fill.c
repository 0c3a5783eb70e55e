/* The background fill of locally served processes (fill.h). */
#include <errno.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "fill.h"
#include "fillw.h"
#include "rserve.h"
#include "serve.h"
#include "wset.h"

/*
 * Place T's recorded working set (wset.h) ahead of the process, in record
 * order, in runs, up to a fill chunk's worth. Returns the class that stopped
 * it (UC_DONE when the chunk or the record ran out); *DID says whether there
 * was any, and *AT where the last run began.
 */
static enum uffd_class fill_ahead(struct target *t, bool *did, uint64_t *at)
{
	uint64_t a, n, budget = t->d->o.fill_chunk;
	enum uffd_class c = UC_DONE;

	while (budget && (n = wset_next(t, budget, &a))) {
		uint64_t copied = t->st.pages_copied;

		*did = true;
		*at = a;
		c = serve_range(t, model_find(&t->map, a), a, n, true);
		wset_placed(t, t->st.pages_copied - copied);
		budget -= n < budget ? n : budget;
		if (c != UC_DONE || t->dead)
			break;
	}
	return c;
}

/*
 * Serve one step of background fill for T: its recorded working set first,
 * then in address order from the cursor. Returns false if it has no more work.
 */
static bool fill_one(struct target *t)
{
	bool ahead = false;
	uint64_t a = 0, n;
	enum uffd_class c = fill_ahead(t, &ahead, &a);

	if (!ahead) {
		if (!fillw_next(t, &a)) {
			/* What is left is in the workers' hands: their reports release it. */
			if (!t->fw_jobs)
				target_release(t);
			return false;
		}
		n = area_run(model_find(&t->map, a), a, t->d->o.fill_chunk, true);
		n = fillw_clip(t, a, n);
		c = serve_range(t, model_find(&t->map, a), a, n, true);
		if (!t->dead)
			t->fill_cursor = a + n;
		if (c == UC_DONE)
			t->fw_hold = false;
	}
	if (t->dead)
		return false;
	switch (c) {
	case UC_GONE:
		target_exited(t);
		return false;
	case UC_STALE:
		/* serve_range stopped at a page the kernel refuses (serve_place() split the rest). */
		if (!model_next_missing(&t->map, a, &a) || !serve_stale_for_good(t, a))
			break;
		serve_drop_stale(t, a);
		break;
	default:
		break;
	}
	if (t->map.nr_missing == 0 && !t->nr_faults && !t->fw_jobs) {
		target_release(t);
		return false;
	}
	return true;
}

/* Whether T has background work the loop can do: missing pages that no worker holds. */
static bool fill_wants(const struct target *t)
{
	return !t->remote && !t->nr_faults && t->map.nr_missing > t->fw_claimed;
}

void fill_feed(struct daemon *d)
{
	if (!d->fw || !daemon_fill_enabled(d))
		return;
	uint64_t now = now_ns();

	/*
	 * The working set first, in its order: no workers for a process served
	 * with a record. And only for one that has not faulted for a while:
	 * while it faults, the loop serves and fills alone (with a worker
	 * beside it, faults during the fill took 7-8x as long here, for a
	 * reason not found; fillw.h).
	 */
	for (struct target *t = d->targets; t; t = t->next)
		if (fill_wants(t) && !t->dead && !wset_replaying(t) &&
		    now - t->last_fault_ns >= FILLW_QUIET_NS)
			fillw_feed(d, t);
}

bool fill_step(struct daemon *d)
{
	struct target **pp, *t;

	if (!daemon_fill_enabled(d))
		return false;
	if (d->remote || d->remotes)
		rserve_fill(d);
	fill_feed(d);
	/* The first process with work does a step, then goes to the back of the line. */
	for (pp = &d->targets; (t = *pp); pp = &t->next)
		if (fill_wants(t))
			break;
	if (!t)
		return false;
	if (fill_one(t) && !t->dead && t->next) {
		struct target **tail;

		*pp = t->next;
		for (tail = pp; *tail; tail = &(*tail)->next)
			;
		*tail = t;
		t->next = NULL;
	}
	for (t = d->targets; t; t = t->next)
		if (fill_wants(t))
			return true;
	return false;
}
