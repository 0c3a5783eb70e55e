/* uffd-manager serving real processes: every byte compared, counters asserted. */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tserve.h"
#include "wire.h"

#define BASE	0x500000000000ull	/* clear of ASan's heap at 0x6000...-0x6400... */
#define SEED	0x5eed1234ull
#define MiB	(1ull << 20)

static struct ts_daemon dmn;
static char imgdir[160];

/* Start a daemon with ARGS and images for AREAS. */
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

static uint64_t data_pages(const struct ts_area *a, int n)
{
	uint64_t k = 0;

	for (int i = 0; i < n; i++)
		for (uint64_t x = a[i].start; x < a[i].start + a[i].len; x += TS_PAGE)
			k += !ts_is_hole(&a[i], x);
	return k;
}


/* Touch every page in a scrambled order, then compare every byte. */
static int sc_touch_all(struct ts_child *c)
{
	long bad = 0;

	for (int i = 0; i < c->n; i++) {
		const struct ts_area *a = &c->areas[i];
		uint64_t np = a->len / TS_PAGE;

		for (uint64_t k = 0; k < np; k++) {
			uint64_t p = (k * 7919) % np;

			(void)*(volatile uint64_t *)(uintptr_t)(a->start + p * TS_PAGE);
		}
		bad += ts_check(a->start, a->len, a->start, a, c->seed);
	}
	return bad ? 1 : 0;
}

static const struct ts_area two_areas[] = {
	{ BASE, 4 * MiB, 5 },
	{ BASE + 64 * MiB, 1 * MiB, 0 },
};

Test(serve, on_demand_every_byte, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", "--fixed-window", NULL };
	struct ts_child c = { .d = &dmn, .areas = two_areas, .n = 2, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;

	setup(two_areas, 2, args);
	pid = ts_child_start(&c, sc_touch_all);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "child saw wrong memory (see its stderr)");
	cr_assert_eq(ts_status_get(&dmn, &s), 0);
	cr_expect_eq(s.tot->served, 1, "served %" PRIu64, s.tot->served);
	cr_expect_eq(s.tot->pages_copied, data_pages(two_areas, 2), "copied %" PRIu64 " want %" PRIu64,
		     s.tot->pages_copied, data_pages(two_areas, 2));
	cr_expect_gt(s.tot->faults, 0);
	/* A fixed 64 KiB window: far fewer faults than pages, even touched out of order. */
	cr_expect_lt(s.tot->faults, data_pages(two_areas, 2) / 4, "faults %" PRIu64 " copied %" PRIu64 " zeroed %" PRIu64, s.tot->faults, s.tot->pages_copied, s.tot->pages_zeroed);
	cr_expect_eq(s.n, 0, "a fully served process is released");
	ts_status_free(&s);
}

/* Read every page of each area in address order, then compare every byte. */
static int sc_scan(struct ts_child *c)
{
	long bad = 0;

	for (int i = 0; i < c->n; i++) {
		const struct ts_area *a = &c->areas[i];

		for (uint64_t x = a->start; x < a->start + a->len; x += TS_PAGE)
			(void)*(volatile uint64_t *)(uintptr_t)x;
		bad += ts_check(a->start, a->len, a->start, a, c->seed);
	}
	return bad ? 1 : 0;
}

#define SPARSE_N	64	/* pages read by sc_sparse, each 1 MiB from the last */

/* Read SPARSE_N pages 1 MiB apart, from the last down, then check each. */
static int sc_sparse(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	long bad = 0;

	for (int k = SPARSE_N - 1; k >= 0; k--)
		(void)*(volatile uint64_t *)(uintptr_t)(a->start + (uint64_t)k * MiB + 3 * TS_PAGE);
	for (int k = 0; k < SPARSE_N; k++) {
		uint64_t p = a->start + (uint64_t)k * MiB + 3 * TS_PAGE;

		bad += ts_check(p, TS_PAGE, p, a, c->seed);
	}
	return bad ? 1 : 0;
}

static const struct ts_area one_big[] = {
	{ BASE, SPARSE_N * MiB, 0 },
};

/* The adaptive window: a scan in address order grows it, so it faults far less than a page each. */
Test(serve, adaptive_window_grows_on_a_scan, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };
	struct ts_child c = { .d = &dmn, .areas = two_areas, .n = 2, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;

	setup(two_areas, 2, args);
	pid = ts_child_start(&c, sc_scan);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "child saw wrong memory (see its stderr)");
	cr_assert_eq(ts_status_get(&dmn, &s), 0);
	cr_expect_eq(s.tot->pages_copied, data_pages(two_areas, 2));
	/*
	 * Windows of 1, 2, 4, 8 pages, then 16: one fault per 16 pages, and
	 * about as many again where the scan overtakes a window's quiet part.
	 */
	cr_expect_lt(s.tot->faults, data_pages(two_areas, 2) / 4, "faults %" PRIu64 " for %" PRIu64 " pages",
		     s.tot->faults, data_pages(two_areas, 2));
	ts_status_free(&s);
}

/* ...and faults far apart get one page each: nothing copied that was not asked for. */
Test(serve, adaptive_window_one_page_on_random_faults, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };
	struct ts_child c = { .d = &dmn, .areas = one_big, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;

	setup(one_big, 1, args);
	pid = ts_child_start(&c, sc_sparse);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "child saw wrong memory (see its stderr)");
	cr_assert_eq(ts_status_get(&dmn, &s), 0);
	cr_expect_eq(s.tot->faults, SPARSE_N, "faults %" PRIu64, s.tot->faults);
	cr_expect_eq(s.tot->pages_copied, SPARSE_N, "copied %" PRIu64 " pages for %d faults",
		     s.tot->pages_copied, SPARSE_N);
	ts_status_free(&s);
}

/*
 * The same faults with --fixed-window: each brings its aligned 64 KiB, at
 * least the 13 pages from the fault to the window's end before the wake (the
 * 3 below may still be on their way when the child exits).
 */
Test(serve, fixed_window_serves_the_whole_window, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", "--fixed-window", NULL };
	struct ts_child c = { .d = &dmn, .areas = one_big, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;

	setup(one_big, 1, args);
	pid = ts_child_start(&c, sc_sparse);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "child saw wrong memory (see its stderr)");
	cr_assert_eq(ts_status_get(&dmn, &s), 0);
	cr_expect_eq(s.tot->faults, SPARSE_N, "faults %" PRIu64, s.tot->faults);
	cr_expect_geq(s.tot->pages_copied, SPARSE_N * 13, "copied %" PRIu64 " pages for %d faults",
		     s.tot->pages_copied, SPARSE_N);
	ts_status_free(&s);
}

/* CPU time PID has used, in ms (schedstat). */
static uint64_t cpu_ms(pid_t pid)
{
	unsigned long long v = 0;
	char path[64];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
	f = fopen(path, "r");
	cr_assert(f, "open %s", path);
	cr_assert_eq(fscanf(f, "%llu", &v), 1, "read %s", path);
	fclose(f);
	return v / 1000000;
}

/*
 * The state letter of the daemon's main thread (/proc/PID/stat); fails at
 * once if the daemon is gone (a zombie of ours, or no longer there).
 */
static char daemon_state(const struct ts_daemon *d)
{
	char path[64], buf[512], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)d->pid);
	f = fopen(path, "r");
	cr_assert_not_null(f, "the daemon (pid %d) is gone: %s; its log is %s", (int)d->pid,
			   strerror(errno), d->log);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	cr_assert(p && p[1] == ' ' && p[2], "%s: cannot read its state from \"%s\"", path, buf);
	cr_assert(p[2] != 'Z' && p[2] != 'X', "the daemon (pid %d) died (state %c); its log is %s",
		  (int)d->pid, p[2], d->log);
	return p[2];
}

static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000ull + ts.tv_nsec / 1000000;
}

/* Fault densely (sc_sparse), then hold still until told to go. */
static int sc_sparse_then_wait(struct ts_child *c)
{
	int r = sc_sparse(c);

	ts_wait_go(c);
	return r;
}

/*
 * The daemon polls after each fault while faults come densely (--spin), and
 * never while nothing comes: with every fault answered and the process
 * idle, once its loop sleeps the daemon uses (almost) no CPU over a second.
 * A loop that kept polling uses all the CPU it is given: most of the
 * second, or at the least a good share of it on a loaded machine, while an
 * idle one uses well under a millisecond however loaded the machine is; the
 * bound, a tenth of the time measured, lies far from both.
 */
Test(serve, no_polling_when_idle, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", "--spin", "10000", NULL };
	struct ts_child c = { .d = &dmn, .areas = one_big, .n = 1, .seed = SEED, .imgdir = imgdir };
	uint64_t before, after, t0, t1;
	pid_t pid;

	setup(one_big, 1, args);
	pid = ts_child_start(&c, sc_sparse_then_wait);
	for (int tries = 0;; tries++) {
		struct ts_status s;
		bool done;

		cr_assert_lt(tries, 3000, "the faults were never all answered");
		cr_assert_eq(ts_status_get(&dmn, &s), 0);
		done = s.tot->faults == SPARSE_N;
		ts_status_free(&s);
		if (done)
			break;
		usleep(5000);
	}
	/* The spin after the last fault ends; a loop that never stops polling never sleeps. */
	for (int tries = 0; daemon_state(&dmn) != 'S'; tries++) {
		cr_assert_lt(tries, 10000, "the daemon's loop never went to sleep (state %c)",
			     daemon_state(&dmn));
		usleep(1000);
	}
	t0 = wall_ms();
	before = cpu_ms(dmn.pid);
	usleep(1000 * 1000);
	after = cpu_ms(dmn.pid);
	t1 = wall_ms();
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "child saw wrong memory (see its stderr)");
	cr_log_info("serve/no_polling_when_idle: %" PRIu64 " ms of CPU in %" PRIu64 " ms",
		    after - before, t1 - t0);
	cr_expect_lt(after - before, (t1 - t0) / 10, "the idle daemon used %" PRIu64
		     " ms of CPU in %" PRIu64 " ms", after - before, t1 - t0);
}

/* Wait to be told that the fill is done, then read without faulting. */
static int sc_wait_then_check(struct ts_child *c)
{
	ts_wait_go(c);
	return sc_touch_all(c);
}

Test(serve, background_fill_every_byte, .timeout = 60, .fini = teardown)
{
	struct ts_child c = { .d = &dmn, .areas = two_areas, .n = 2, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;
	int tries;

	setup(two_areas, 2, NULL);
	pid = ts_child_start(&c, sc_wait_then_check);
	for (tries = 0; tries < 2000; tries++) {
		cr_assert_eq(ts_status_get(&dmn, &s), 0);
		if (s.tot->served == 1)
			break;
		ts_status_free(&s);
		usleep(5000);
	}
	cr_assert_lt(tries, 2000, "fill never finished");
	cr_expect_eq(s.tot->faults, 0, "no fault: the fill got there first");
	cr_expect_eq(s.tot->pages_copied, data_pages(two_areas, 2));
	ts_status_free(&s);
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "child saw wrong memory");
}

Test(serve, sigterm_serves_everyone_to_the_end, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };
	struct ts_child c = { .d = &dmn, .areas = two_areas, .n = 2, .seed = SEED, .imgdir = imgdir };
	pid_t pid;
	int st;

	setup(two_areas, 2, args);
	pid = ts_child_start(&c, sc_wait_then_check);
	/* Nothing touched, no fill: all of it is still to serve when we ask the daemon to stop. */
	kill(dmn.pid, SIGTERM);
	st = ts_daemon_wait(&dmn, 20000);
	cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "the daemon must finish serving and exit 0 (status %d)", st);
	dmn.pid = 0;
	cr_expect(ts_log_has(&dmn, "fully served: 1076 pages copied"), "log in %s", dmn.log);
	cr_expect(access(dmn.sock, F_OK) != 0, "the socket file is removed");
	/* Every page arrived before the daemon left. */
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "child saw wrong memory after the daemon exited");
}

Test(serve, exit_when_done, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", "--exit-when-done", NULL };
	struct ts_child c = { .d = &dmn, .areas = two_areas, .n = 2, .seed = SEED, .imgdir = imgdir };
	pid_t pid;
	int st;

	setup(two_areas, 2, args);
	pid = ts_child_start(&c, sc_touch_all);
	cr_assert_eq(ts_child_wait(pid, 30000), 0);
	st = ts_daemon_wait(&dmn, 20000);
	cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d", st);
	dmn.pid = 0;
	cr_expect(ts_log_has(&dmn, "1 processes served"), "log in %s", dmn.log);
}

Test(serve, client_registered_ranges_itself, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };
	struct ts_child c = { .d = &dmn, .areas = two_areas, .n = 2, .seed = SEED, .imgdir = imgdir,
			      .flags = HELLO_F_REGISTERED };
	struct ts_status s;
	pid_t pid;

	setup(two_areas, 2, args);
	pid = ts_child_start(&c, sc_touch_all);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "child saw wrong memory");
	cr_assert_eq(ts_status_get(&dmn, &s), 0);
	cr_expect_eq(s.tot->served, 1);
	cr_expect_eq(s.tot->pages_copied, data_pages(two_areas, 2));
	ts_status_free(&s);
}

Test(serve, client_cap_refuses_the_next, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", "--max-clients", "1", NULL };
	struct ts_child c1 = { .d = &dmn, .areas = two_areas, .n = 2, .seed = SEED, .imgdir = imgdir };
	struct ts_child c2 = c1;
	struct ts_status s;
	pid_t p1, p2;

	setup(two_areas, 2, args);
	p1 = ts_child_start(&c1, sc_wait_then_check);
	p2 = ts_child_start(&c2, sc_wait_then_check);
	/* The second hand-over is refused: its child exits 3 (refused) at once. */
	cr_expect_eq(ts_child_wait(p2, 10000), 3);
	cr_expect(ts_log_has(&dmn, "already serving 1 processes (the limit)"), "log in %s", dmn.log);
	ts_say_go(&c1);
	cr_assert_eq(ts_child_wait(p1, 30000), 0);
	cr_assert_eq(ts_status_get(&dmn, &s), 0);
	cr_expect_eq(s.tot->refused, 1);
	cr_expect_eq(s.tot->served, 1);
	ts_status_free(&s);
}

/* Run `uffd-manager status` against the daemon and return its output. */
static char *status_cli(const char *flag)
{
	static char out[1 << 16];
	char cmd[400];
	size_t n;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "%s/uffd-manager status %s --socket %s",
		 getenv("UFFD_TEST_BUILD") ? getenv("UFFD_TEST_BUILD") : TEST_BUILDDIR, flag,
		 dmn.sock);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = 0;
	cr_assert_eq(pclose(f), 0, "%s failed: %s", cmd, out);
	return out;
}

Test(serve, status_command_text_and_json, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };
	struct ts_child c = { .d = &dmn, .areas = two_areas, .n = 2, .seed = SEED, .imgdir = imgdir };
	char want[64], *out;
	pid_t pid;

	setup(two_areas, 2, args);
	pid = ts_child_start(&c, sc_wait_then_check);
	out = status_cli("--json");
	snprintf(want, sizeof(want), "\"pid\":%d,\"image_id\":%u,", pid, TS_IMAGE_ID);
	cr_expect_not_null(strstr(out, want), "%s", out);
	snprintf(want, sizeof(want), "\"pages_remaining\":%" PRIu64 ",", data_pages(two_areas, 2));
	cr_expect_not_null(strstr(out, want), "%s", out);
	cr_expect_not_null(strstr(out, "\"totals\":{\"processes\":1,"), "%s", out);
	cr_expect_not_null(strstr(out, "\"fault_us_log2\":["), "%s", out);
	out = status_cli("");
	snprintf(want, sizeof(want), "%8d %6u", pid, TS_IMAGE_ID);
	cr_expect_not_null(strstr(out, want), "%s", out);
	cr_expect_not_null(strstr(out, "total: 1 processes"), "%s", out);
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 30000), 0);
}
