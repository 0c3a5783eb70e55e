/*
 * The non-cooperative event model with real processes: fork, mremap,
 * madvise, munmap, exit, kill, threads. Every byte is compared against the
 * image pattern (or zero where the process dropped it), and the daemon's
 * counters are asserted.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tserve.h"

#define BASE	0x510000000000ull	/* clear of ASan's heap at 0x6000...-0x6400... */
#define SEED	0xfeedbeefull
#define MiB	(1ull << 20)

static struct ts_daemon dmn;
static char imgdir[160];

static void setup(const struct ts_area *areas, int n, const char *const *args)
{
	ts_daemon_start(&dmn, args);
	snprintf(imgdir, sizeof(imgdir), "%s/img", dmn.dir);
	ts_write_images(imgdir, TS_IMAGE_ID, areas, n, SEED);
}

/* The daemon must survive every test and exit cleanly when told. */
static void teardown(void)
{
	cr_expect(ts_daemon_finish(&dmn, 10000), "uffd-manager did not exit cleanly");
}


/* Get the status, retrying until COND holds or 10 s pass. */
#define STATUS_UNTIL(s, cond)                                                  \
	do {                                                                   \
		int tries_;                                                    \
		for (tries_ = 0; tries_ < 2000; tries_++) {                    \
			cr_assert_eq(ts_status_get(&dmn, &(s)), 0);            \
			if (cond)                                              \
				break;                                         \
			ts_status_free(&(s));                                  \
			usleep(5000);                                          \
		}                                                              \
		cr_assert_lt(tries_, 2000, "status never got to: %s", #cond);  \
	} while (0)

static const struct ts_area one4[] = { { BASE, 4 * MiB, 7 } };

/* Check the whole of area A at its own address. */
static long check_area(const struct ts_child *c, const struct ts_area *a)
{
	return ts_check(a->start, a->len, a->start, a, c->seed);
}

/* ---- fork ---- */

/* Touch the first half, fork; the child forks again; all check everything. */
static int sc_fork_tree(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	pid_t kid;
	int st, bad = 0;

	if (ts_check(a->start, a->len / 2, a->start, a, c->seed))
		return 1;
	kid = fork();
	if (kid == 0) {
		pid_t gkid;

		/* The child writes to a page: its copy, never the parent's. */
		*(volatile uint64_t *)(uintptr_t)(a->start + 8) = 0xc0ffee;
		gkid = fork();
		if (gkid == 0) {
			bad = ts_check(a->start + TS_PAGE, a->len - TS_PAGE, a->start + TS_PAGE, a,
				       c->seed) != 0;
			_exit(bad);
		}
		bad = ts_check(a->start + a->len / 2, a->len / 2, a->start + a->len / 2, a,
			       c->seed) != 0;
		if (waitpid(gkid, &st, 0) != gkid || !WIFEXITED(st) || WEXITSTATUS(st))
			bad = 1;
		_exit(bad);
	}
	bad = check_area(c, a) != 0;
	if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st))
		bad = 1;
	return bad;
}

Test(events, fork_and_grandchild_every_byte, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };
	struct ts_child c = { .d = &dmn, .areas = one4, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;

	setup(one4, 1, args);
	pid = ts_child_start(&c, sc_fork_tree);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "a process saw wrong memory");
	STATUS_UNTIL(s, s.tot->served + s.tot->exited == 3);
	cr_expect_eq(s.tot->served, 3, "parent, child and grandchild fully served");
	cr_expect_eq(s.n, 0);
	ts_status_free(&s);
	cr_expect(ts_log_has(&dmn, "forked:"), "no fork in the daemon's log");
}

/* Pause after the fork so the test can see the child's pid in the status. */
static int sc_fork_pause(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	int p[2], st, bad;
	pid_t kid;
	char b;

	if (pipe(p) < 0)
		return ts_fail("pipe");
	kid = fork();
	if (kid == 0) {
		if (read(p[0], &b, 1) != 1) {
		}
		_exit(check_area(c, a) != 0);
	}
	ts_wait_go(c);
	if (write(p[1], "G", 1) != 1) {
	}
	bad = check_area(c, a) != 0;
	if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st))
		bad = 1;
	return bad;
}

Test(events, fork_child_pid_is_learned, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };
	struct ts_child c = { .d = &dmn, .areas = one4, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;
	int i;

	setup(one4, 1, args);
	pid = ts_child_start(&c, sc_fork_pause);
	/* Two processes served: the parent (pid known) and its child, whose pid the proc connector tells. */
	STATUS_UNTIL(s, s.n == 2 && s.t[0]->pid != 0 && s.t[1]->pid != 0);
	for (i = 0; i < 2; i++) {
		if (s.t[i]->pid != pid) {
			cr_expect(s.t[i]->has_parent_pid && s.t[i]->parent_pid == pid,
				  "child %d has parent %d", s.t[i]->pid, s.t[i]->parent_pid);
			cr_expect_eq(s.t[i]->pages_remaining, s.t[i]->pages_total);
		} else {
			cr_expect_eq(s.t[i]->ev_fork, 1);
		}
	}
	ts_status_free(&s);
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 30000), 0);
}

/* The child faults first, then waits: its pid must come from the fault's thread id. */
static int sc_fork_fault_pause(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	int p[2], st, bad;
	pid_t kid;
	char b;

	if (pipe(p) < 0)
		return ts_fail("pipe");
	kid = fork();
	if (kid == 0) {
		bad = ts_check(a->start, TS_PAGE, a->start, a, c->seed) != 0;
		if (read(p[0], &b, 1) != 1) {
		}
		_exit(bad || check_area(c, a) != 0);
	}
	ts_wait_go(c);
	if (write(p[1], "G", 1) != 1) {
	}
	bad = check_area(c, a) != 0;
	if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st))
		bad = 1;
	return bad;
}

Test(events, fork_child_pid_from_first_fault, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", "--no-proc-connector", NULL };
	struct ts_child c = { .d = &dmn, .areas = one4, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;

	setup(one4, 1, args);
	pid = ts_child_start(&c, sc_fork_fault_pause);
	STATUS_UNTIL(s, s.n == 2 && s.t[0]->pid != 0 && s.t[1]->pid != 0);
	for (int i = 0; i < 2; i++)
		if (s.t[i]->pid != pid) {
			cr_expect(s.t[i]->has_parent_pid && s.t[i]->parent_pid == pid);
			cr_expect_geq(s.t[i]->faults, 1);
		}
	ts_status_free(&s);
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 30000), 0);
}

/* ---- mremap ---- */

static const struct ts_area two1[] = {
	{ BASE, 1 * MiB, 3 },
	{ BASE + 16 * MiB, 1 * MiB, 0 },
};

/* Move area 0 whole, half touched, and check it at the new place. */
static int sc_mremap_move(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	uint64_t dst = BASE + 64 * MiB;
	void *p;

	if (ts_check(a->start, a->len / 4, a->start, a, c->seed))
		return 1;
	p = mremap((void *)(uintptr_t)a->start, a->len, a->len, MREMAP_MAYMOVE | MREMAP_FIXED,
		   (void *)(uintptr_t)dst);
	if (p != (void *)(uintptr_t)dst)
		return ts_fail("mremap: %s", strerror(errno));
	if (ts_check(dst, a->len, a->start, a, c->seed))
		return 1;
	return check_area(c, &c->areas[1]) != 0;
}

/* Grow area 0 in place: the old part keeps its data, the new tail reads zero. */
static int sc_mremap_grow(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	void *p = mremap((void *)(uintptr_t)a->start, a->len, 3 * a->len, 0);

	if (p != (void *)(uintptr_t)a->start)
		return ts_fail("mremap grow: %s", strerror(errno));
	if (ts_check(a->start, a->len, a->start, a, c->seed))
		return 1;
	if (ts_check_zero(a->start + a->len, 2 * a->len))
		return 1;
	/* The tail is ordinary memory. */
	memset((void *)(uintptr_t)(a->start + a->len), 0x5a, TS_PAGE);
	return check_area(c, &c->areas[1]) != 0;
}

/* Shrink area 0 (an UNMAP of the tail), then move the rest elsewhere. */
static int sc_mremap_shrink(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	uint64_t dst = BASE + 80 * MiB;
	void *p = mremap((void *)(uintptr_t)a->start, a->len, a->len / 2, 0);

	if (p != (void *)(uintptr_t)a->start)
		return ts_fail("mremap shrink: %s", strerror(errno));
	p = mremap(p, a->len / 2, a->len / 2, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)(uintptr_t)dst);
	if (p != (void *)(uintptr_t)dst)
		return ts_fail("mremap move: %s", strerror(errno));
	if (ts_check(dst, a->len / 2, a->start, a, c->seed))
		return 1;
	return check_area(c, &c->areas[1]) != 0;
}

/* Swap the two areas with MREMAP_FIXED through a temporary address. */
static int sc_mremap_swap(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0], *b = &c->areas[1];
	uint64_t tmp = BASE + 96 * MiB;

	/* Some of each is served before the swap, some after. */
	if (ts_check(a->start, TS_PAGE * 20, a->start, a, c->seed) ||
	    ts_check(b->start + b->len / 2, TS_PAGE * 20, b->start + b->len / 2, b, c->seed))
		return 1;
	if (mremap((void *)(uintptr_t)a->start, a->len, a->len, MREMAP_MAYMOVE | MREMAP_FIXED,
		   (void *)(uintptr_t)tmp) == MAP_FAILED ||
	    mremap((void *)(uintptr_t)b->start, b->len, b->len, MREMAP_MAYMOVE | MREMAP_FIXED,
		   (void *)(uintptr_t)a->start) == MAP_FAILED ||
	    mremap((void *)(uintptr_t)tmp, a->len, a->len, MREMAP_MAYMOVE | MREMAP_FIXED,
		   (void *)(uintptr_t)b->start) == MAP_FAILED)
		return ts_fail("mremap swap: %s", strerror(errno));
	if (ts_check(a->start, b->len, b->start, b, c->seed))
		return 1;
	return ts_check(b->start, a->len, a->start, a, c->seed) != 0;
}

/* Move a middle chunk out and back (as lazyapp's mutate mode does). */
static int sc_mremap_chunk(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	uint64_t mid = a->start + a->len / 4, len = a->len / 4, tmp = BASE + 112 * MiB;

	if (mremap((void *)(uintptr_t)mid, len, len, MREMAP_MAYMOVE | MREMAP_FIXED,
		   (void *)(uintptr_t)tmp) == MAP_FAILED)
		return ts_fail("mremap out: %s", strerror(errno));
	if (ts_check(tmp, len / 2, mid, a, c->seed))
		return 1;
	if (mremap((void *)(uintptr_t)tmp, len, len, MREMAP_MAYMOVE | MREMAP_FIXED,
		   (void *)(uintptr_t)mid) == MAP_FAILED)
		return ts_fail("mremap back: %s", strerror(errno));
	return check_area(c, a) != 0 || check_area(c, &c->areas[1]) != 0;
}

/* Move area 0 straight onto area 1 (MREMAP_FIXED over a mapped area). */
static int sc_mremap_over(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0], *b = &c->areas[1];

	/* Part of B is served first: the move must replace it, not mix with it. */
	if (ts_check(b->start, TS_PAGE * 8, b->start, b, c->seed))
		return 1;
	if (mremap((void *)(uintptr_t)a->start, a->len, a->len, MREMAP_MAYMOVE | MREMAP_FIXED,
		   (void *)(uintptr_t)b->start) == MAP_FAILED)
		return ts_fail("mremap over: %s", strerror(errno));
	return ts_check(b->start, a->len, a->start, a, c->seed) != 0;
}

struct remap_case {
	const char *name;
	ts_scenario sc;
	uint64_t min_remap;
};

static const struct remap_case remap_cases[] = {
	{ "move", sc_mremap_move, 1 },
	{ "grow", sc_mremap_grow, 0 },
	{ "shrink", sc_mremap_shrink, 1 },
	{ "swap", sc_mremap_swap, 3 },
	{ "chunk", sc_mremap_chunk, 2 },
	{ "fixed over another area", sc_mremap_over, 1 },
};

/* Criterion may run each case in a fresh process: pass indices, not pointers. */
static int remap_idx[] = { 0, 1, 2, 3, 4, 5 };

ParameterizedTestParameters(events, mremap)
{
	return cr_make_param_array(int, remap_idx, sizeof(remap_idx) / sizeof(remap_idx[0]));
}

/* Every byte checked after the move; the REMAP events counted. */
ParameterizedTest(int *idx, events, mremap, .timeout = 60, .fini = teardown)
{
	const struct remap_case *rc = &remap_cases[*idx];
	const char *args[] = { "--no-fill", NULL };
	struct ts_child c = { .d = &dmn, .areas = two1, .n = 2, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;

	setup(two1, 2, args);
	pid = ts_child_start(&c, rc->sc);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "%s: wrong memory after mremap", rc->name);
	STATUS_UNTIL(s, s.n == 0);
	cr_expect_eq(s.tot->served + s.tot->exited, 1, "%s", rc->name);
	ts_status_free(&s);
}

/* ---- madvise and munmap ---- */

/* Drop served and unserved pages; they must read zero, even with fill running. */
static int sc_dontneed(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	uint64_t drop = a->start + a->len / 4, dlen = a->len / 2;

	/* Serve the first half (part of the dropped range), leave the rest missing. */
	if (ts_check(a->start, a->len / 2, a->start, a, c->seed))
		return 1;
	if (madvise((void *)(uintptr_t)drop, dlen, MADV_DONTNEED) < 0)
		return ts_fail("madvise: %s", strerror(errno));
	ts_wait_go(c);	/* the fill, if any, has had its chance */
	if (ts_check_zero(drop, dlen))
		return 1;
	if (ts_check(a->start, drop - a->start, a->start, a, c->seed))
		return 1;
	return ts_check(drop + dlen, a->start + a->len - drop - dlen, drop + dlen, a, c->seed) != 0;
}

static void run_dontneed(const char *const *args)
{
	struct ts_child c = { .d = &dmn, .areas = one4, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;

	setup(one4, 1, args);
	pid = ts_child_start(&c, sc_dontneed);
	STATUS_UNTIL(s, s.n == 0 || (s.n == 1 && s.t[0]->ev_remove >= 1));
	if (s.n == 1)
		cr_expect_eq(s.t[0]->ev_remove, 1);
	ts_status_free(&s);
	usleep(50000);
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "dropped pages must read zero, the rest data");
	STATUS_UNTIL(s, s.n == 0);
	cr_expect_eq(s.tot->served, 1);
	ts_status_free(&s);
}

Test(events, dontneed_no_fill, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };

	run_dontneed(args);
}

Test(events, dontneed_with_fill, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--fill-chunk", "16K", NULL };

	run_dontneed(args);
}

/*
 * Fill workers (manager/fillw.h) against MADV_DONTNEED: drop small ranges
 * just ahead of where pages are arriving (the fronts mincore shows), where
 * a worker's copy is most likely in flight, over and over while the fill
 * runs. A copy that landed after the zap would leave data where the process
 * dropped it: every dropped page must read zero, every other the image.
 * The workers nap before each piece (UFFD_TEST_FILLW_NAP_US), so that a job
 * the daemon let run on past the read of a REMOVE would place its next
 * piece after the zap: the case the quiesce before each read exists for.
 */
static const struct ts_area storm_area[] = { { BASE, 128 * MiB, 0 } };

static int sc_dontneed_storm(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	uint64_t np = a->len / TS_PAGE, x = 0x9e3779b97f4a7c15ull, drops = 0;
	uint8_t *dropped = calloc(np, 1), *res = malloc(np);
	long bad = 0;

	if (!dropped || !res)
		return ts_fail("out of memory");
	for (int round = 0; round < 400; round++) {
		uint64_t in = 0;

		if (mincore((void *)(uintptr_t)a->start, a->len, res) < 0)
			return ts_fail("mincore: %s", strerror(errno));
		for (uint64_t i = 1; i < np; i++) {
			uint64_t s, n;

			in += res[i] & 1;
			/* A front: in, then not yet in. Drop from a little behind it to a little past. */
			if (!(res[i - 1] & 1) || (res[i] & 1))
				continue;
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			s = i > 8 ? i - 8 + x % 8 : i;
			/* Past a worker's next piece, into the rest of its job (up to 4 MiB). */
			n = 1 + (x >> 32) % 1024;
			if (s + n > np)
				n = np - s;
			if (madvise((void *)(uintptr_t)(a->start + s * TS_PAGE), n * TS_PAGE, MADV_DONTNEED) < 0)
				return ts_fail("madvise: %s", strerror(errno));
			memset(dropped + s, 1, n);
			drops++;
			/* Quiet a while: a job left running past the read would go on into the drop. */
			usleep(1000);
		}
		if (in + 1 >= np)
			break;
	}
	if (!drops)
		return ts_fail("no fill front was ever seen: nothing was tested");
	for (uint64_t i = 0; i < np; i++) {
		uint64_t addr = a->start + i * TS_PAGE;

		bad += dropped[i] ? ts_check_zero(addr, TS_PAGE) : ts_check(addr, TS_PAGE, addr, a, c->seed);
	}
	free(dropped);
	free(res);
	return bad != 0;
}

Test(events, dontneed_storm_with_fill_workers, .timeout = 120, .fini = teardown)
{
	/* The loop's own fill slowed to a page a step: most fronts are a worker's. */
	const char *args[] = { "--fill-workers", "2", "--fill-chunk", "4K", NULL };
	struct ts_child c = { .d = &dmn, .areas = storm_area, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;

	setenv("UFFD_TEST_FILLW_NAP_US", "50", 1);
	setup(storm_area, 1, args);
	unsetenv("UFFD_TEST_FILLW_NAP_US");
	for (int run = 0; run < 3; run++) {
		pid = ts_child_start(&c, sc_dontneed_storm);
		cr_assert_eq(ts_child_wait(pid, 60000), 0,
			     "run %d: a dropped page read data, or another page was wrong", run);
	}
	STATUS_UNTIL(s, s.n == 0);
	cr_expect_eq(s.tot->served + s.tot->exited, 3);
	cr_expect_gt(s.tot->pages_copied, 0);
	ts_status_free(&s);
}

/* Unmap the middle of an area; the rest is intact; the hole really is unmapped. */
static int sc_munmap(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	uint64_t hole = a->start + a->len / 3 * 1, hlen = 64 * TS_PAGE;
	void *p;

	hole &= ~(TS_PAGE - 1);
	if (munmap((void *)(uintptr_t)hole, hlen) < 0)
		return ts_fail("munmap: %s", strerror(errno));
	/* Something new in the hole: an ordinary mapping the manager must not touch. */
	p = mmap((void *)(uintptr_t)hole, hlen, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (p != (void *)(uintptr_t)hole)
		return ts_fail("re-mmap: %s", strerror(errno));
	if (ts_check_zero(hole, hlen))
		return 1;
	if (ts_check(a->start, hole - a->start, a->start, a, c->seed))
		return 1;
	return ts_check(hole + hlen, a->start + a->len - hole - hlen, hole + hlen, a, c->seed) != 0;
}

Test(events, munmap_part, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };
	struct ts_child c = { .d = &dmn, .areas = one4, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;

	setup(one4, 1, args);
	pid = ts_child_start(&c, sc_munmap);
	cr_assert_eq(ts_child_wait(pid, 30000), 0);
	STATUS_UNTIL(s, s.n == 0);
	cr_expect_eq(s.tot->served, 1, "the rest of the area was served and the process released");
	ts_status_free(&s);
}

/* ---- exits and kills ---- */

static const struct ts_area big[] = { { BASE, 96 * MiB, 0 } };

static int sc_exit_at_once(struct ts_child *c)
{
	(void)c;
	return 0;
}

static int sc_touch_all(struct ts_child *c)
{
	long bad = 0;

	for (int i = 0; i < c->n; i++)
		bad += check_area(c, &c->areas[i]);
	return bad != 0;
}

Test(events, exit_during_fill, .timeout = 90, .fini = teardown)
{
	const char *args[] = { "--fill-chunk", "4K", NULL };
	struct ts_child c = { .d = &dmn, .areas = big, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;

	setup(big, 1, args);
	pid = ts_child_start(&c, sc_exit_at_once);
	cr_assert_eq(ts_child_wait(pid, 30000), 0);
	STATUS_UNTIL(s, s.n == 0);
	cr_expect_eq(s.tot->exited, 1, "the exit was noticed");
	cr_expect_eq(s.tot->served, 0);
	cr_expect_lt(s.tot->pages_copied, big[0].len / TS_PAGE, "it exited before the fill ended");
	ts_status_free(&s);
	/* The daemon goes on serving others. */
	pid = ts_child_start(&c, sc_touch_all);
	cr_assert_eq(ts_child_wait(pid, 60000), 0);
}

struct thr {
	const struct ts_child *c;
	int idx;
	long bad;
	pthread_barrier_t *bar;
};

/* Each thread reads a shared stripe (the same pages as the others) and its own stripe. */
static void *thr_main(void *p)
{
	struct thr *t = p;
	const struct ts_area *a = &t->c->areas[0];
	uint64_t shared = a->len / 4, own = (a->len - shared) / 8;
	uint64_t mine = a->start + shared + t->idx * own;

	pthread_barrier_wait(t->bar);
	for (uint64_t off = 0; off < shared; off += TS_PAGE) {
		uint64_t pg = a->start + ((off * 13 + t->idx * TS_PAGE) % shared);

		t->bad += ts_check(pg, TS_PAGE, pg, a, t->c->seed);
	}
	t->bad += ts_check(mine, own, mine, a, t->c->seed);
	return NULL;
}

static int sc_threads(struct ts_child *c)
{
	pthread_barrier_t bar;
	pthread_t th[8];
	struct thr t[8];
	long bad = 0;

	pthread_barrier_init(&bar, NULL, 8);
	for (int i = 0; i < 8; i++) {
		t[i] = (struct thr){ .c = c, .idx = i, .bar = &bar };
		pthread_create(&th[i], NULL, thr_main, &t[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		bad += t[i].bad;
	}
	return bad ? 1 : check_area(c, &c->areas[0]) != 0;
}

static const struct ts_area thr_area[] = { { BASE, 16 * MiB, 9 } };

Test(events, eight_threads_same_and_different_pages, .timeout = 90, .fini = teardown)
{
	const char *args[] = { "--no-fill", "--fault-window", "4K", NULL };
	struct ts_child c = { .d = &dmn, .areas = thr_area, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;

	setup(thr_area, 1, args);
	pid = ts_child_start(&c, sc_threads);
	cr_assert_eq(ts_child_wait(pid, 60000), 0, "a thread saw wrong memory");
	STATUS_UNTIL(s, s.n == 0);
	cr_expect_eq(s.tot->served, 1);
	ts_status_free(&s);
}

/* Fault continuously from four threads until killed. */
static int sc_fault_forever(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];

	for (int i = 0; i < 3; i++)
		if (fork() == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			break;
		}
	for (uint64_t k = 0;; k++) {
		uint64_t pg = a->start + ((k * 7919 + getpid()) % (a->len / TS_PAGE)) * TS_PAGE;

		if (ts_check(pg, 64, pg, a, c->seed))
			return 1;
	}
	return 0;
}

Test(events, sigkill_with_faults_in_flight, .timeout = 90, .fini = teardown)
{
	const char *args[] = { "--no-fill", "--fault-window", "4K", NULL };
	struct ts_child c = { .d = &dmn, .areas = big, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;

	setup(big, 1, args);
	pid = ts_child_start(&c, sc_fault_forever);
	STATUS_UNTIL(s, s.tot->faults > 2000);
	ts_status_free(&s);
	kill(-pid, SIGKILL);
	kill(pid, SIGKILL);
	cr_assert_eq(ts_child_wait(pid, 10000), -SIGKILL);
	/* Its forked children die with it (they are in its process group only if we set it; kill them too). */
	STATUS_UNTIL(s, s.n <= 3);
	ts_status_free(&s);
	/* Another process is served as if nothing happened. */
	c.areas = one4;
	c.n = 1;
	{
		char dir2[200];

		snprintf(dir2, sizeof(dir2), "%s/img2", dmn.dir);
		ts_write_images(dir2, TS_IMAGE_ID, one4, 1, SEED);
		c.imgdir = dir2;
		pid = ts_child_start(&c, sc_touch_all);
		cr_assert_eq(ts_child_wait(pid, 30000), 0);
	}
}

/* ---- many at once ---- */

static int sc_wait_touch(struct ts_child *c)
{
	ts_wait_go(c);
	return sc_touch_all(c);
}

static const struct ts_area small[] = { { BASE, 2 * MiB, 4 } };

Test(events, fifty_children_one_daemon, .timeout = 120, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };
	struct ts_child c[50];
	struct ts_status s;
	pid_t pid[50];

	setup(small, 1, args);
	for (int i = 0; i < 50; i++) {
		c[i] = (struct ts_child){ .d = &dmn, .areas = small, .n = 1, .seed = SEED,
					  .imgdir = imgdir };
		pid[i] = ts_child_start(&c[i], sc_wait_touch);
	}
	cr_assert_eq(ts_status_get(&dmn, &s), 0);
	cr_expect_eq(s.n, 50, "all 50 handed over");
	/* One image dir for all: its pages file is mapped once. */
	cr_expect_leq(s.tot->mapped_bytes, small[0].len, "mapped %" PRIu64, s.tot->mapped_bytes);
	ts_status_free(&s);
	for (int i = 0; i < 50; i++)
		ts_say_go(&c[i]);
	for (int i = 0; i < 50; i++)
		cr_expect_eq(ts_child_wait(pid[i], 60000), 0, "child %d", i);
	STATUS_UNTIL(s, s.n == 0);
	cr_expect_eq(s.tot->served, 50);
	ts_status_free(&s);
}

/* ---- VMA splits the daemon never hears of ---- */

static const struct ts_area one64[] = { { BASE, 64 * MiB, 7 } };

/*
 * Split the area in the kernel with mprotect and madvise, which send no
 * event: the daemon's windows and fill chunks then cross VMA boundaries and
 * the kernel answers ENOENT for the whole range. Every byte must still come.
 */
static int sc_split(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	uint8_t *p = (uint8_t *)(uintptr_t)a->start;

	for (uint64_t off = MiB; off + MiB <= a->len; off += 4 * MiB) {
		if (mprotect(p + off + 3 * TS_PAGE, 5 * TS_PAGE, PROT_READ) < 0)
			return ts_fail("mprotect: %s", strerror(errno));
		if (madvise(p + off + 2 * MiB + TS_PAGE, 3 * TS_PAGE, MADV_NOHUGEPAGE) < 0)
			return ts_fail("madvise: %s", strerror(errno));
	}
	return check_area(c, a) != 0;
}

static void split_run(const char *const *args)
{
	struct ts_child c = { .d = &dmn, .areas = one64, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;

	setup(one64, 1, args);
	pid = ts_child_start(&c, sc_split);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "the process saw wrong memory");
	STATUS_UNTIL(s, s.tot->served + s.tot->exited == 1);
	cr_expect_eq(s.tot->served, 1, "not fully served");
	cr_expect(!ts_log_has(&dmn, "dropping"), "the daemon dropped pages from its model");
	ts_status_free(&s);
}

Test(events, vma_split_without_event_on_demand, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };

	split_run(args);
}

Test(events, vma_split_without_event_with_fill, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--fill-chunk", "1M", NULL };

	split_run(args);
}

/* ---- a fork's child beside vfork, and a fork that finds no fd free ---- */

static atomic_int spawn_stop;

/* Spawn and reap children that share the parent's memory (vfork), as system() and popen() do. */
static void *spawner_main(void *p)
{
	long *spawns = p;

	while (!atomic_load(&spawn_stop)) {
		pid_t s = vfork();

		if (s == 0)
			_exit(0);
		if (s > 0 && waitpid(s, NULL, 0) == s)
			(*spawns)++;
	}
	return NULL;
}

#define VFORK_CHILDREN 60

/*
 * Fork children one after another while another thread vforks in a loop:
 * the proc connector tells of both kinds of children, and the vforked ones
 * exit at once. Every forked child checks every byte, a little later.
 */
static int sc_fork_beside_vfork(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	int bad = 0, st;
	long spawns = 0;
	pthread_t th;

	if (pthread_create(&th, NULL, spawner_main, &spawns))
		return ts_fail("pthread_create");
	for (int k = 0; k < VFORK_CHILDREN; k++) {
		pid_t kid = fork();

		if (kid == 0) {
			usleep(30000);	/* long enough for the daemon to see a vforked child's exit */
			_exit(check_area(c, a) != 0);
		}
		if (kid < 0 || waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st))
			bad++;
	}
	atomic_store(&spawn_stop, 1);
	pthread_join(th, NULL);
	if (bad)
		fprintf(stderr, "%d of %d forked children saw wrong memory (%ld vforks beside)\n",
			bad, VFORK_CHILDREN, spawns);
	return bad != 0 || check_area(c, a) != 0;
}

static const struct ts_area one8[] = { { BASE, 8 * MiB, 0 } };

Test(events, fork_beside_vfork_every_child_every_byte, .timeout = 120, .fini = teardown)
{
	const char *args[] = { "--no-fill", "--no-working-set", NULL };
	struct ts_child c = { .d = &dmn, .areas = one8, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;

	setup(one8, 1, args);
	pid = ts_child_start(&c, sc_fork_beside_vfork);
	cr_assert_eq(ts_child_wait(pid, 100000), 0, "a forked child saw wrong memory (log %s)",
		     dmn.log);
	STATUS_UNTIL(s, s.n == 0);
	cr_expect_eq(s.tot->served + s.tot->exited, 1 + VFORK_CHILDREN);
	ts_status_free(&s);
}

static int forker_bad;

/* Fork a child that checks every byte of the area where it was at the fork. */
static void *forker_main(void *p)
{
	const struct ts_child *c = p;
	pid_t kid = fork();
	int st;

	if (kid == 0)
		_exit(check_area(c, &c->areas[0]) != 0);
	if (kid < 0 || waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st)) {
		fprintf(stderr, "the forked child saw wrong memory at the old address\n");
		forker_bad = 1;
	}
	return NULL;
}

/*
 * A thread forks while the daemon has no fd free for the child's uffd; the
 * main thread then moves the area away (MREMAP_FIXED) and tells the test on
 * the pipe in c->arg. The child checks every byte at the old address.
 */
static int sc_fork_then_mremap(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	const int *side = c->arg;
	pthread_t th;
	void *dst, *q;
	int bad;

	dst = mmap(NULL, a->len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (dst == MAP_FAILED)
		return ts_fail("mmap: %s", strerror(errno));
	ts_wait_go(c);
	if (pthread_create(&th, NULL, forker_main, c))
		return ts_fail("pthread_create");
	usleep(200000);	/* the fork is waiting for its event to be read */
	q = mremap((void *)(uintptr_t)a->start, a->len, a->len, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	if (q == MAP_FAILED)
		return ts_fail("mremap: %s", strerror(errno));
	if (write(side[1], "M", 1) != 1)
		return ts_fail("write: %s", strerror(errno));
	bad = ts_check((uintptr_t)q, a->len, a->start, a, c->seed) != 0;
	pthread_join(th, NULL);
	return bad || forker_bad;
}

/* The lowest fd number free in process PID, once two looks 50 ms apart agree. */
static int lowest_free_fd(pid_t pid)
{
	int prev = -1;

	for (int tries = 0; tries < 200; tries++) {
		char path[64], seen[4096] = { 0 };
		struct dirent *e;
		DIR *dir;
		int low = 0;

		snprintf(path, sizeof(path), "/proc/%d/fd", pid);
		dir = opendir(path);
		cr_assert(dir, "opendir %s: %s", path, strerror(errno));
		while ((e = readdir(dir)))
			if (e->d_name[0] != '.' && atoi(e->d_name) < (int)sizeof(seen))
				seen[atoi(e->d_name)] = 1;
		closedir(dir);
		while (low < (int)sizeof(seen) && seen[low])
			low++;
		if (low == prev)
			return low;
		prev = low;
		usleep(50000);
	}
	cr_assert_fail("the daemon's fd table never settled");
	return -1;
}

Test(events, fork_with_no_fd_free_then_mremap, .timeout = 90, .fini = teardown)
{
	const char *args[] = { "--no-fill", "--no-working-set", NULL };
	int side[2];
	struct ts_child c = { .d = &dmn, .areas = one8, .n = 1, .seed = SEED, .imgdir = imgdir,
			      .arg = side };
	struct rlimit low, old;
	struct pollfd pfd;
	pid_t pid;
	char b;

	cr_assert_eq(pipe(side), 0);
	setup(one8, 1, args);
	pid = ts_child_start(&c, sc_fork_then_mremap);
	/*
	 * Every fd number below the limit in use: the next fd the daemon makes,
	 * such as the one a FORK event installs, fails with EMFILE.
	 */
	cr_assert_eq(prlimit(dmn.pid, RLIMIT_NOFILE, NULL, &old), 0);
	low = old;
	low.rlim_cur = (rlim_t)lowest_free_fd(dmn.pid);
	cr_assert_eq(prlimit(dmn.pid, RLIMIT_NOFILE, &low, NULL), 0, "prlimit: %s", strerror(errno));
	ts_say_go(&c);
	pfd = (struct pollfd){ .fd = side[0], .events = POLLIN };
	cr_expect_eq(poll(&pfd, 1, 30000), 1, "the area was never moved");
	cr_assert_eq(prlimit(dmn.pid, RLIMIT_NOFILE, &old, NULL), 0);
	if (pfd.revents & POLLIN)
		cr_expect_eq(read(side[0], &b, 1), 1);
	cr_assert_eq(ts_child_wait(pid, 60000), 0, "a process saw wrong memory (log %s)", dmn.log);
	close(side[0]);
	close(side[1]);
}
