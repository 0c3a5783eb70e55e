/*
 * The event loop's spin (manager/loop.h): it reads the hot fd alone while
 * that fd has work, and never at the other fds' expense for long.
 */
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "loop.h"

/*
 * Nothing here hangs on the clock: the spin window and the share are a
 * minute long (no run under load outlasts them), the turn of the others is
 * brought about by setting when epoll last looked, and loop_once never
 * sleeps longer than ONCE_MS.
 */
#define LONG_NS		(60 * 1000 * 1000 * 1000ull)
#define ONCE_MS		100
#define HOT_RUNS	5	/* hot hits before the test hands epoll its turn */

static struct loop l;

/* A hot fd: its poll hook has work while WORK is set, and counts its calls. */
static struct hot {
	struct ev ev;
	bool work;
	unsigned long polls, runs;
} hot;

/* Another fd: an eventfd whose handler counts its runs. */
static struct other {
	struct ev ev;
	int fd;
	unsigned long runs;
} other;

static void hot_fn(struct ev *ev, uint32_t events)
{
	(void)ev;
	(void)events;
	hot.runs++;
}

/* The hook: with work, do it (a fault answered: hot again). */
static bool hot_poll(struct ev *ev)
{
	hot.polls++;
	if (!hot.work)
		return false;
	hot.runs++;
	loop_hot(&l, ev, now_ns());
	return true;
}

static void other_fn(struct ev *ev, uint32_t events)
{
	uint64_t v;

	(void)events;
	if (read(ev->fd, &v, sizeof(v)) == sizeof(v))
		other.runs++;
}

static int hot_fd;

static void setup(void)
{
	cr_assert_eq(loop_init(&l), 0);
	l.spin_ns = LONG_NS;
	l.hot_share_ns = LONG_NS;
	hot = (struct hot){ .ev.poll = hot_poll };
	other = (struct other){ 0 };
	/* The hot fd is never ready for epoll: only its hook says it has work. */
	hot_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	other.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	cr_assert(hot_fd >= 0 && other.fd >= 0);
	cr_assert_eq(loop_add(&l, &hot.ev, hot_fd, EPOLLIN, hot_fn), 0);
	cr_assert_eq(loop_add(&l, &other.ev, other.fd, EPOLLIN, other_fn), 0);
	/* Two answers in a row: the loop spins after them, with the hot fd known. */
	loop_hot(&l, &hot.ev, now_ns());
	loop_hot(&l, &hot.ev, now_ns());
}

static void teardown(void)
{
	loop_fini(&l);
	close(hot_fd);
	close(other.fd);
}

static void other_ready(void)
{
	uint64_t one = 1;

	cr_assert_eq(write(other.fd, &one, sizeof(one)), sizeof(one));
}

TestSuite(loop, .init = setup, .fini = teardown, .timeout = 30);

/* When the hot fd may be read alone: only after a hit, and while epoll looked recently at few. */
Test(loop, hot_turn_rules)
{
	uint64_t t = l.polled_ns = 1000 * 1000 * 1000ull;

	l.hot_share_ns = LOOP_HOT_SHARE_NS;
	cr_expect(loop_hot_turn(&l, t, false), "right after epoll looked, with a hot fd");
	cr_expect(loop_hot_turn(&l, t + LOOP_HOT_SHARE_NS - 1, false), "just inside the share");
	cr_expect_not(loop_hot_turn(&l, t + LOOP_HOT_SHARE_NS, false), "the others' turn at the share");
	cr_expect_not(loop_hot_turn(&l, t, true), "after a poll of the hot fd found nothing");
	l.polled_n = 1;
	cr_expect(loop_hot_turn(&l, t, false), "epoll found one fd ready");
	l.polled_n = 2;
	cr_expect_not(loop_hot_turn(&l, t, false), "epoll found two ready: they go first");
	l.polled_n = 0;
	loop_del(&l, &hot.ev);
	cr_expect_null(l.hot_ev, "a removed fd is hot no longer");
	cr_expect_not(loop_hot_turn(&l, t, false), "no hot fd");
}

/* loop_init sets the share the man page and loop.h give. */
Test(loop, default_share)
{
	struct loop l2;

	cr_assert_eq(loop_init(&l2), 0);
	cr_expect_eq(l2.hot_share_ns, LOOP_HOT_SHARE_NS);
	loop_fini(&l2);
}

/* Hot work spares epoll: the hook is polled and its handler runs, epoll is not asked. */
Test(loop, hot_fd_read_alone)
{
	hot.work = true;
	l.polled_ns = now_ns();
	cr_assert_eq(loop_once(&l, ONCE_MS), 1);
	cr_expect_eq(hot.polls, 1);
	cr_expect_eq(hot.runs, 1);
	cr_expect_eq(l.spin.waits, 0, "epoll asked %lu times", (unsigned long)l.spin.waits);
}

/*
 * A process that faults back to back (the hook always has work) is read
 * alone only until its share is over: then another fd ready all along is
 * handled, though the hot fd still has work.
 */
Test(loop, others_not_starved_by_dense_hot_work)
{
	hot.work = true;
	l.polled_ns = now_ns();	/* epoll just looked: the hot fd's turn */
	other_ready();
	for (int i = 0; i < HOT_RUNS; i++)
		cr_assert_eq(loop_once(&l, ONCE_MS), 1);
	cr_expect_eq(other.runs, 0, "the other fd went before the hot fd's share was over");
	cr_expect_eq(hot.polls, HOT_RUNS);
	l.polled_ns = now_ns() - l.hot_share_ns;	/* the share is over */
	cr_assert_geq(loop_once(&l, ONCE_MS), 1);
	cr_expect_eq(other.runs, 1, "the other fd was not handled once the share was over");
	cr_expect_eq(hot.polls, HOT_RUNS, "the hot fd was read alone after its share");
}

/* Two fds ready at epoll's last look: the hot one is not read alone. */
Test(loop, a_full_look_lets_the_others_go)
{
	hot.work = true;
	l.polled_ns = now_ns();
	l.polled_n = 2;
	other_ready();
	cr_assert_geq(loop_once(&l, ONCE_MS), 1);
	cr_expect_eq(other.runs, 1, "the other fd waited while the hot one was read alone");
	cr_expect_eq(hot.polls, 0);
}

/* A poll of the hot fd that finds nothing hands the next poll to epoll. */
Test(loop, a_miss_lets_epoll_look)
{
	hot.work = false;
	l.polled_ns = now_ns();
	other_ready();
	cr_assert_eq(loop_once(&l, ONCE_MS), 1);
	cr_expect_eq(other.runs, 1);
	cr_expect_eq(hot.polls, 1, "the hot fd was polled %lu times before epoll looked", hot.polls);
	cr_expect_eq(hot.runs, 0);
}
