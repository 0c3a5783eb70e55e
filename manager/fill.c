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
#include "rserve.h"
#include "serve.h"
/* Serve one step of background fill for T; returns false if it has no more work. */
static bool fill_one(struct target *t)
{
	uint64_t a, n;
	struct area *v;
	enum uffd_class c;

	if (!model_next_missing(&t->map, t->fill_cursor, &a) &&
	    !model_next_missing(&t->map, 0, &a)) {
		target_release(t);
		return false;
	}
	v = model_find(&t->map, a);
	n = area_run(v, a, t->d->o.fill_chunk, true);
	c = serve_range(t, v, a, n, true);
	if (t->dead)
		return false;
	t->fill_cursor = a + n;
	switch (c) {
	case UC_GONE:
		target_exited(t);
		return false;
	case UC_STALE:
		/* serve_range stopped at a page the kernel refuses (serve_place() split the rest). */
		if (!model_next_missing(&t->map, a, &a) || !serve_stale_for_good(t))
			break;
		serve_drop_stale(t, a);
		break;
	default:
		break;
	}
	if (t->map.nr_missing == 0 && !t->nr_faults) {
		target_release(t);
		return false;
	}
	return true;
}

bool fill_step(struct daemon *d)
{
	struct target **pp, *t;

	if (!daemon_fill_enabled(d))
		return false;
	if (d->remote || d->remotes)
		rserve_fill(d);
	/* The first process with work does a step, then goes to the back of the line. */
	for (pp = &d->targets; (t = *pp); pp = &t->next)
		if (!t->remote && !t->nr_faults && t->map.nr_missing)
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
		if (!t->remote && !t->nr_faults && t->map.nr_missing)
			return true;
	return false;
}
