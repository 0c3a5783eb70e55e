/*
 * Release: a process whose last pages are served while it changes its
 * memory must never be left waiting on an event nobody reads.
 *
 * munmap, mremap, madvise and fork pick up the uffd under the mmap lock and
 * queue their event after dropping it. If the daemon stops reading the uffd
 * at release time while another copy of it lives on (the process keeps one,
 * as uffd-inject lazy's targets do), an event queued in that window blocks
 * the process for ever. Each served child here keeps a copy of its uffd and
 * churns a small lazy area (mremap there and back, shrink and grow, madvise,
 * fork) while the daemon fills a larger one, and goes on for a while after
 * it sees its areas unregistered. A child that does not finish is looked at
 * in /proc (wchan of every thread) before it is killed, and every byte of
 * what it kept is compared.
 *
 * UFFD_RELEASE_N sets the number of served processes per test (default 24);
 * the stress run in README uses thousands.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tserve.h"

#define BASE	0x520000000000ull
#define SEED	0x5eed0fa11ull
#define KiB	(1ull << 10)
#define MiB	(1ull << 20)
#define PG	TS_PAGE
#define AT_ONCE	4	/* served processes churning at the same time */

/* Area 0: churned (moved, shrunk, grown); 1: madvised; 2: filled in the background. */
static const struct ts_area areas[] = {
	{ BASE, 64 * KiB, 0 },
	{ BASE + 16 * MiB, 64 * KiB, 5 },
	{ BASE + 32 * MiB, 8 * MiB, 9 },
};
#define TMP	(BASE + 48 * MiB)	/* where area 0 goes and comes back from */

enum churn {
	CH_REMAP = 1,	/* mremap area 0 away and back (REMAP + UNMAP events) */
	CH_SHRINK = 2,	/* shrink area 0 by a page and grow it back (UNMAP) */
	CH_REMOVE = 4,	/* MADV_DONTNEED the first page of area 1 (REMOVE) */
	CH_FORK = 8,	/* fork a child that exits at once (FORK) */
};

static struct ts_daemon dmn;
static char imgdir[160];

static void teardown(void)
{
	cr_expect(ts_daemon_finish(&dmn, 10000), "uffd-manager did not exit cleanly");
}

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Is the area of PID (0: ourselves) at START registered with a uffd (VmFlags "um" in smaps)? */
static int registered_in(pid_t pid, uint64_t start)
{
	char line[512], path[64];
	bool in = false;
	int ret = -1;
	FILE *f;

	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/smaps", pid);
	else
		snprintf(path, sizeof(path), "/proc/self/smaps");
	f = fopen(path, "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long a, b;

		if (sscanf(line, "%llx-%llx ", &a, &b) == 2)
			in = a <= start && start < b;
		else if (in && !strncmp(line, "VmFlags:", 8)) {
			ret = strstr(line, " um") != NULL;
			break;
		}
	}
	fclose(f);
	return ret;
}

/* One round of what MODE says. Returns 0, or 1 after ts_fail. */
static int churn_once(unsigned mode)
{
	const struct ts_area *a = &areas[0], *b = &areas[1];
	void *p;

	if (mode & CH_REMAP) {
		p = mremap((void *)(uintptr_t)a->start, a->len, a->len,
			   MREMAP_MAYMOVE | MREMAP_FIXED, (void *)(uintptr_t)TMP);
		if (p != (void *)(uintptr_t)TMP)
			return ts_fail("mremap away: %s", strerror(errno));
		p = mremap(p, a->len, a->len, MREMAP_MAYMOVE | MREMAP_FIXED,
			   (void *)(uintptr_t)a->start);
		if (p != (void *)(uintptr_t)a->start)
			return ts_fail("mremap back: %s", strerror(errno));
	}
	if (mode & CH_SHRINK) {
		if (mremap((void *)(uintptr_t)a->start, a->len, a->len - PG, 0) == MAP_FAILED ||
		    mremap((void *)(uintptr_t)a->start, a->len - PG, a->len, 0) == MAP_FAILED)
			return ts_fail("mremap shrink/grow: %s", strerror(errno));
	}
	if ((mode & CH_REMOVE) && madvise((void *)(uintptr_t)b->start, PG, MADV_DONTNEED) < 0)
		return ts_fail("madvise: %s", strerror(errno));
	if (mode & CH_FORK) {
		pid_t pid = fork();
		int st;

		if (pid < 0)
			return ts_fail("fork: %s", strerror(errno));
		if (pid == 0)
			_exit(0);
		if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
			return ts_fail("forked child did not exit 0");
	}
	return 0;
}

/*
 * Churn until the areas are seen unregistered (the daemon released us),
 * then for AFTER more rounds, then check every byte that was not dropped.
 */
static int sc_churn(struct ts_child *c)
{
	unsigned mode = (unsigned)(uintptr_t)c->arg;
	const struct ts_area *a = &areas[0], *b = &areas[1], *f = &areas[2];
	uint64_t end = ms_now() + 20000;
	unsigned after = 0, rounds = 0;

	/* Some of area 0 comes in by fault before the churn starts. */
	if (ts_check(a->start, 2 * PG, a->start, a, c->seed))
		return 1;
	while (after < 300) {
		if (churn_once(mode))
			return 1;
		if (++rounds % 16 == 0 && !after && registered_in(0, a->start) == 0)
			after = 1;
		else if (after)
			after++;
		if (ms_now() > end)
			return ts_fail("never released in 20 s (%u rounds)", rounds);
	}
	/* The shrunk-and-grown tail page is new memory: not the image's. */
	if (ts_check(a->start, a->len - ((mode & CH_SHRINK) ? PG : 0), a->start, a, c->seed))
		return 1;
	if ((mode & CH_REMOVE) && ts_check_zero(b->start, PG))
		return 1;
	if (ts_check(b->start + PG, b->len - PG, b->start + PG, b, c->seed))
		return 1;
	return ts_check(f->start, f->len, f->start, f, c->seed) != 0;
}

/* Name every thread of PID that sleeps in the kernel, with where (wchan). */
static void report_stuck(pid_t pid)
{
	char path[320], wchan[128];
	struct dirent *de;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	dir = opendir(path);
	if (!dir)
		return;
	while ((de = readdir(dir))) {
		FILE *f;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/wchan", pid, de->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		if (fgets(wchan, sizeof(wchan), f))
			cr_log_error("pid %d thread %s stuck in the kernel at %s", pid, de->d_name,
				     wchan);
		fclose(f);
	}
	closedir(dir);
}

/* Wait for PID up to TIMEOUT_MS; on timeout say where it sleeps, then kill it. */
static int wait_or_report(pid_t pid, int timeout_ms)
{
	uint64_t end = ms_now() + (uint64_t)timeout_ms;
	int st;

	while (ms_now() < end) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
		usleep(2000);
	}
	report_stuck(pid);
	return ts_child_wait(pid, 0);
}

/* Is PID gone (or a zombie)? */
static bool gone(pid_t pid)
{
	char path[64], buf[256], *p;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "re");
	if (!f)
		return true;
	p = fgets(buf, sizeof(buf), f);
	fclose(f);
	p = p ? strrchr(buf, ')') : NULL;
	return p && p[1] == ' ' && p[2] == 'Z';
}

/*
 * Every served process is gone: once the daemon has exited, its keeper
 * must hold nothing and exit too (copies of exited processes are let go).
 */
static void check_keeper_gone(void)
{
	pid_t k = ts_keeper_pid(&dmn);
	int i, st;

	if (!k)
		return;
	st = ts_daemon_stop(&dmn, 10000);
	dmn.pid = 0;
	cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "uffd-manager did not exit 0 (wait status %d)", st);
	for (i = 0; i < 300 && !gone(k); i++)
		usleep(10000);
	cr_expect(gone(k), "the keeper (pid %d) still runs after the daemon exited with every served process gone",
		  k);
}

static unsigned nr_processes(void)
{
	const char *s = getenv("UFFD_RELEASE_N");
	long n = s ? strtol(s, NULL, 10) : 24;

	return n > 0 ? (unsigned)n : 24;
}

/* Serve N processes, AT_ONCE at a time, each churning with MODE; all must finish with the right bytes. */
static void run(unsigned mode, const char *const *args)
{
	unsigned n = nr_processes(), started = 0, done = 0, hung = 0, bad = 0;
	struct ts_child c[AT_ONCE];
	pid_t pid[AT_ONCE] = { 0 };

	ts_daemon_start(&dmn, args);
	snprintf(imgdir, sizeof(imgdir), "%s/img", dmn.dir);
	ts_write_images(imgdir, TS_IMAGE_ID, areas, 3, SEED);
	while (done < n) {
		for (unsigned i = 0; i < AT_ONCE && started < n; i++) {
			if (pid[i])
				continue;
			c[i] = (struct ts_child){ .d = &dmn, .areas = areas, .n = 3, .seed = SEED,
						  .imgdir = imgdir, .keep_uffd = true,
						  .arg = (void *)(uintptr_t)mode };
			pid[i] = ts_child_start(&c[i], sc_churn);
			started++;
		}
		for (unsigned i = 0; i < AT_ONCE; i++) {
			int ret;

			if (!pid[i])
				continue;
			ret = wait_or_report(pid[i], 30000);
			hung += ret == -1000;
			bad += ret != 0 && ret != -1000;
			pid[i] = 0;
			done++;
		}
	}
	cr_expect_eq(hung, 0, "%u of %u processes hung (stuck threads named above)", hung, n);
	cr_expect_eq(bad, 0, "%u of %u processes saw wrong memory or failed", bad, n);
	check_keeper_gone();
}

Test(release, mremap_there_and_back, .timeout = 240, .fini = teardown)
{
	run(CH_REMAP, NULL);
}

Test(release, mremap_shrink_and_grow, .timeout = 240, .fini = teardown)
{
	run(CH_SHRINK, NULL);
}

Test(release, madvise_dontneed, .timeout = 240, .fini = teardown)
{
	run(CH_REMOVE, NULL);
}

Test(release, fork, .timeout = 240, .fini = teardown)
{
	run(CH_FORK, NULL);
}

Test(release, everything_without_keeper, .timeout = 240, .fini = teardown)
{
	const char *args[] = { "--no-keeper", NULL };

	/* Not CH_SHRINK: the daemon may split the shrunk-and-grown area, which mremap of the whole then refuses. */
	run(CH_REMAP | CH_REMOVE | CH_FORK, args);
}

/* Unregister every area with our own copy of the uffd (no event says so), then wait. */
static int sc_unregister(struct ts_child *c)
{
	for (int i = 0; i < c->n; i++) {
		struct uffdio_range r = { .start = c->areas[i].start, .len = c->areas[i].len };

		if (ioctl(c->uffd, UFFDIO_UNREGISTER, &r) < 0)
			return ts_fail("UFFDIO_UNREGISTER: %s", strerror(errno));
	}
	ts_wait_go(c);
	return 0;
}

/* How many lines of the daemon's log hold S. */
static int log_count(const char *s)
{
	char line[1024];
	int n = 0;
	FILE *f = fopen(dmn.log, "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, s) != NULL;
	fclose(f);
	return n;
}

/*
 * A client that took its areas back (unregistered them itself, as one that
 * gave up on the hand-over does) makes every page ENOENT with no event: the
 * daemon drops them from the model with one warning and a total, not a
 * line per page (3,361 lines for 16 MiB before).
 */
Test(release, client_unregistered_its_areas_one_warning, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };
	struct ts_child c = { .d = &dmn, .areas = areas, .n = 3, .seed = SEED, .imgdir = NULL,
			      .keep_uffd = true };
	pid_t pid;
	int st;

	ts_daemon_start(&dmn, args);
	snprintf(imgdir, sizeof(imgdir), "%s/img", dmn.dir);
	ts_write_images(imgdir, TS_IMAGE_ID, areas, 3, SEED);
	c.imgdir = imgdir;
	pid = ts_child_start(&c, sc_unregister);
	cr_assert_gt(pid, 0);
	for (int i = 0; i < 500 && registered_in(pid, areas[2].start) != 0; i++)
		usleep(10000);
	cr_assert_eq(registered_in(pid, areas[2].start), 0, "the child did not unregister");
	/* SIGTERM turns the fill on: every page it tries is ENOENT. */
	st = ts_daemon_stop(&dmn, 20000);
	dmn.pid = 0;
	cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "wait status %d", st);
	ts_say_go(&c);
	cr_expect_eq(ts_child_wait(pid, 10000), 0);
	cr_expect_eq(log_count("is no longer registered"), 1,
		     "%d warnings for dropped pages; one was expected", log_count("is no longer registered"));
	cr_expect_eq(log_count("pages were dropped from the model in all"), 1);
}
