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

#define SPIN_NS		(10 * 1000 * 1000ull)	/* a spin window no test outlasts by chance */
#define MAX_ONCE	(20 * 1000 * 1000)	/* loop_once calls before a test gives up */

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
	loop_hot(&l, ev);
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
	l.spin_ns = SPIN_NS;
	hot = (struct hot){ .ev.poll = hot_poll };
	other = (struct other){ 0 };
	/* The hot fd is never ready for epoll: only its hook says it has work. */
	hot_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	other.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	cr_assert(hot_fd >= 0 && other.fd >= 0);
	cr_assert_eq(loop_add(&l, &hot.ev, hot_fd, EPOLLIN, hot_fn), 0);
	cr_assert_eq(loop_add(&l, &other.ev, other.fd, EPOLLIN, other_fn), 0);
	/* Two answers in a row: the loop spins after them, with the hot fd known. */
	loop_hot(&l, &hot.ev);
	loop_hot(&l, &hot.ev);
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

/* When the hot fd may be read alone: only after a hit, and while epoll looked recently. */
Test(loop, hot_turn_rules)
{
	uint64_t t = l.polled_ns = 1000 * 1000 * 1000ull;

	cr_expect(loop_hot_turn(&l, t, false), "right after epoll looked, with a hot fd");
	cr_expect_eq(l.hot_share_ns, LOOP_HOT_SHARE_NS);
	cr_expect(loop_hot_turn(&l, t + LOOP_HOT_SHARE_NS - 1, false), "just inside the share");
	cr_expect_not(loop_hot_turn(&l, t + LOOP_HOT_SHARE_NS, false), "the others' turn at the share");
	cr_expect_not(loop_hot_turn(&l, t, true), "after a poll of the hot fd found nothing");
	loop_del(&l, &hot.ev);
	cr_expect_null(l.hot_ev, "a removed fd is hot no longer");
	cr_expect_not(loop_hot_turn(&l, t, false), "no hot fd");
}

/* Hot work spares epoll: the hook is polled and its handler runs, epoll is not asked. */
Test(loop, hot_fd_read_alone)
{
	hot.work = true;
	l.hot_share_ns = SPIN_NS;	/* however long this takes, epoll's turn does not come */
	l.polled_ns = now_ns();
	cr_assert_eq(loop_once(&l, -1), 1);
	cr_expect_eq(hot.polls, 1);
	cr_expect_eq(hot.runs, 1);
	cr_expect_eq(l.spin.waits, 0, "epoll asked %lu times", (unsigned long)l.spin.waits);
}

/*
 * A process that faults back to back (the hook always has work) never
 * keeps epoll from the other fds for long: another fd ready all along is
 * handled, while the hot fd is still being read alone.
 */
Test(loop, others_not_starved_by_dense_hot_work)
{
	hot.work = true;
	l.polled_ns = now_ns();	/* epoll just looked: the hot fd's turn */
	other_ready();
	for (int i = 0; i < MAX_ONCE && !other.runs; i++)
		cr_assert_geq(loop_once(&l, -1), 0);
	cr_assert_eq(other.runs, 1, "the other fd was never handled while the hot fd had work");
	cr_expect_gt(hot.polls, 1, "the hot fd was read alone before epoll's turn");
	cr_expect_eq(hot.polls, hot.runs, "every poll of the busy hot fd found work");
}

/* A poll of the hot fd that finds nothing hands the next poll to epoll. */
Test(loop, a_miss_lets_epoll_look)
{
	hot.work = false;
	l.hot_share_ns = SPIN_NS;	/* only the miss gives epoll its turn */
	l.polled_ns = now_ns();
	other_ready();
	cr_assert_eq(loop_once(&l, -1), 1);
	cr_expect_eq(other.runs, 1);
	cr_expect_eq(hot.polls, 1, "the hot fd was polled %lu times before epoll looked", hot.polls);
	cr_expect_eq(hot.runs, 0);
}
