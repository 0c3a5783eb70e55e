/* The event loop's hot fd (manager/loop.h): tried first, never at the others' expense. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "loop.h"

static struct loop l;

/*
 * A process that faults back to back: its fd always has work, and every
 * poll answers a fault (loop_hot), as target_poll_uffd does.
 */
struct busy {
	struct ev ev;
	int fd;
	uint64_t polls, handled;
};

/* Another process's uffd: an eventfd with something to read. */
struct other {
	struct ev ev;
	int fd;
	uint64_t handled;
};

static struct busy busy;
static struct other other;

static bool busy_poll(struct ev *ev)
{
	struct busy *b = container_of(ev, struct busy, ev);

	b->polls++;
	loop_hot(&l, ev);
	return true;
}

static void busy_fn(struct ev *ev, uint32_t events)
{
	struct busy *b = container_of(ev, struct busy, ev);

	(void)events;
	b->handled++;
	loop_hot(&l, ev);
}

static void other_fn(struct ev *ev, uint32_t events)
{
	struct other *o = container_of(ev, struct other, ev);
	uint64_t v;

	(void)events;
	if (read(o->fd, &v, sizeof(v)) == sizeof(v))
		o->handled++;
}

static void setup(void)
{
	cr_assert_eq(loop_init(&l), 0);
	busy = (struct busy){ .fd = eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK) };
	other = (struct other){ .fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) };
	cr_assert_geq(busy.fd, 0);
	cr_assert_geq(other.fd, 0);
	busy.ev.poll = busy_poll;
	/* Level-triggered and never read: epoll sees it ready every time. */
	cr_assert_eq(loop_add(&l, &busy.ev, busy.fd, EPOLLIN, busy_fn), 0);
	cr_assert_eq(loop_add(&l, &other.ev, other.fd, EPOLLIN, other_fn), 0);
}

static void teardown(void)
{
	loop_fini(&l);
	close(busy.fd);
	close(other.fd);
}

/* The first iteration finds the busy fd through epoll; then its poll hook serves it, without epoll. */
Test(loop, hot_fd_served_without_epoll, .init = setup, .fini = teardown, .timeout = 10)
{
	uint64_t waits;

	l.hot_share_ns = 10000000000ull;	/* no epoll turn in this test, however slow (ASan) */
	cr_assert_eq(loop_once(&l, 0), 1);
	cr_assert_eq(busy.handled, 1);
	waits = l.hot.waits;
	for (int i = 0; i < 3; i++)
		cr_assert_eq(loop_once(&l, 0), 1);
	cr_expect_eq(busy.polls, 3, "the hot fd was polled %" PRIu64 " times", busy.polls);
	cr_expect_eq(l.hot.waits, waits, "epoll_wait was called %" PRIu64 " times",
		     l.hot.waits - waits);
	cr_expect_eq(l.hot.hits, 3);
}

/*
 * A process that always has a fault waiting must not keep another's event
 * out: epoll looks at every fd again within LOOP_HOT_SHARE_NS, so the other
 * fd is handled while the busy one still has work.
 */
Test(loop, hot_fd_never_starves_the_others, .init = setup, .fini = teardown, .timeout = 30)
{
	uint64_t v = 1, t0;
	int i;

	cr_assert_eq(loop_once(&l, 0), 1);
	cr_assert_eq(write(other.fd, &v, sizeof(v)), sizeof(v));
	t0 = now_ns();
	for (i = 0; !other.handled && now_ns() - t0 < 5000000000ull; i++)
		cr_assert_geq(loop_once(&l, 0), 0);
	cr_assert_eq(other.handled, 1, "the other fd waited %d iterations and was never handled", i);
	cr_expect_gt(busy.polls, 0, "the hot fd was never tried on its own");
}

/* A removed fd is no longer tried: its owner may be freed at the end of the iteration. */
Test(loop, hot_fd_forgotten_when_removed, .init = setup, .fini = teardown, .timeout = 10)
{
	cr_assert_eq(loop_once(&l, 0), 1);
	cr_assert_eq(l.hot_ev, &busy.ev);
	loop_del(&l, &busy.ev);
	cr_expect_null(l.hot_ev);
	cr_assert_eq(loop_once(&l, 0), 0);
	cr_expect_eq(busy.polls, 0);
}

/*
 * While spinning (faults came densely), the hot fd is polled on its own,
 * but epoll still gets its turn once hot_share_ns has passed.
 */
Test(loop, spin_polls_the_hot_fd_and_epoll, .init = setup, .fini = teardown, .timeout = 10)
{
	uint64_t v = 1;

	l.spin_ns = 1000000000ull;
	l.hot_share_ns = 10000000000ull;
	cr_assert_eq(loop_once(&l, 0), 1);
	loop_hot(&l, &busy.ev);		/* two close together: dense */
	l.hot_fresh = false;		/* not the once-after-work try: the spin */
	cr_assert_eq(loop_once(&l, -1), 1);
	cr_expect_eq(busy.polls, 1, "the spin's first poll is the hot fd");
	cr_expect_eq(l.spin.hits, 1);
	cr_assert_eq(write(other.fd, &v, sizeof(v)), sizeof(v));
	l.hot_share_ns = 50000;
	for (uint64_t t0 = now_ns(); !other.handled && now_ns() - t0 < 5000000000ull;) {
		l.hot_fresh = false;
		cr_assert_geq(loop_once(&l, -1), 1);
	}
	cr_expect_eq(other.handled, 1, "the spin never asked epoll");
}
