/* Serving faults (serve.h): what the loop is asked for once they are answered. */
#include <criterion/criterion.h>
#include <linux/userfaultfd.h>
#include <stdlib.h>

#include "daemon.h"
#include "model.h"
#include "proc.h"
#include "serve.h"

#define PG	4096ull
#define A	0x700000000000ull

/* A page source that answers every fault at once. */
static enum uffd_class answer(struct target *t, uint64_t addr, bool *waiting)
{
	(void)t;
	(void)addr;
	(void)waiting;
	return UC_DONE;
}

static const struct page_source answering = { .name = "test", .fault = answer };

/*
 * Serve one fault of a process with pages still missing, under daemon D;
 * returns whether the loop was then asked for idle time (the fill).
 */
/* T: a process of D with 16 pages missing at A, whose copies always succeed. */
static void one_area_target(struct target *t, struct daemon *d)
{
	*t = (struct target){ .d = d, .uffd = -1, .src = &answering };
	model_init(&t->map);
	cr_assert_eq(model_add(&t->map, A, A + 16 * PG, A), 0);
	model_mark_missing(&t->map, A, A + 16 * PG);
}

static bool idle_asked_after_a_fault(struct daemon *d)
{
	struct target t;
	struct uffd_msg m = { .event = UFFD_EVENT_PAGEFAULT };
	uint64_t counted = 0;

	one_area_target(&t, d);
	m.arg.pagefault.address = A + 3 * PG;
	cr_assert_eq(serve_queue_fault(&t, &m), 0);
	d->loop.idle_pending = false;
	serve_faults(&t);
	cr_assert_eq(t.nr_faults, 0, "the fault is answered");
	for (int i = 0; i < TARGET_HIST; i++)
		counted += t.st.hist[i];
	cr_assert_eq(counted, 1, "and counted once");
	model_free(&t.map);
	free(t.faults);
	return d->loop.idle_pending;
}

/* With the fill on, the process has fill work again once its faults are answered. */
Test(serve, answered_faults_ask_for_the_fill)
{
	static struct daemon d;

	cr_expect(idle_asked_after_a_fault(&d));
}

/*
 * With no fill (--no-fill, or CRIU before RSTF) the idle hook has nothing
 * to do: asking for it would make the loop poll once more after every fault.
 */
Test(serve, no_fill_no_idle_call)
{
	static struct daemon d;

	d.o.no_fill = true;
	cr_expect_not(idle_asked_after_a_fault(&d), "--no-fill");
	d.o.no_fill = false;
	d.fill_held = true;
	cr_expect_not(idle_asked_after_a_fault(&d), "fill held (CRIU before RSTF)");
}

/*
 * A fault's service time counts from when its message was read (apply_msg
 * notes it in last_fault_ns, once a batch), not from when it was queued.
 */
Test(serve, service_time_counts_from_the_read)
{
	static struct daemon d;
	struct target t;
	struct uffd_msg m = { .event = UFFD_EVENT_PAGEFAULT };
	unsigned b = 0;

	d.o.no_fill = true;
	one_area_target(&t, &d);
	m.arg.pagefault.address = A + 3 * PG;
	t.last_fault_ns = now_ns() - 4000000000ull;	/* read 4 s ago */
	cr_assert_eq(serve_queue_fault(&t, &m), 0);
	serve_faults(&t);
	cr_assert_eq(t.nr_faults, 0, "the fault is answered");
	while (b < TARGET_HIST && !t.st.hist[b])
		b++;
	/* 4 s = 2^21.9 us: the bucket of 2^21 us and up (2^21 us is 2.1 s). */
	cr_expect_geq(b, 21, "counted in bucket %u, as if served at once", b);
	model_free(&t.map);
	free(t.faults);
}

/*
 * ENOENT is final only once it has lasted STALE_NS in one area with no
 * event applied. An area found stale (a forked child that did not inherit
 * it) must not make another area's first ENOENT final at once: that one
 * may be an mremap whose REMAP is still queued, and dropping its page
 * would have the process read zeros there once the event moves the model.
 */
Test(serve, stale_time_counts_per_area)
{
	static struct daemon d;
	struct target t;
	uint64_t b = A + 64 * PG;

	one_area_target(&t, &d);
	cr_assert_eq(model_add(&t.map, b, b + 16 * PG, b), 0);
	model_mark_missing(&t.map, b, b + 16 * PG);
	cr_assert_not(serve_stale_for_good(&t, A), "the first ENOENT starts the clock");
	model_find(&t.map, A)->stale_since -= 1000000000ull;	/* a second ago, no event since */
	cr_assert(serve_stale_for_good(&t, A + 5 * PG), "the same area, long enough: gone");
	cr_assert_not(serve_stale_for_good(&t, b + 2 * PG), "another area: its own clock");
	cr_assert_not(serve_stale_for_good(&t, b + 3 * PG), "which has only begun");
	cr_assert(serve_stale_for_good(&t, A + 6 * PG), "the first area's clock ran on meanwhile");
	t.ev_seq++;
	cr_assert_not(serve_stale_for_good(&t, b + 3 * PG), "an event applied: again from the start");
	model_free(&t.map);
	free(t.faults);
}
