/*
 * The daemon maps the cached pages of the images ahead (pages_prefault), so
 * that a fault's UFFDIO_COPY never takes the kernel's slow path: only pages
 * already in the page cache, off the loop, and only while someone uses them.
 * A fault on a page it has not mapped yet reads that page into a buffer and
 * copies from there, mapping nothing.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tserve.h"

#define BASE	0x510000000000ull	/* clear of ASan's heap at 0x6000...-0x6400... */
#define SEED	0x9efa017ull
#define MiB	(1ull << 20)
#define AREA	(16 * MiB)

static struct ts_daemon dmn;
static char imgdir[160], pages[200];

static const struct ts_area one_area[] = {
	{ BASE, AREA, 0 },
};

/* Start a daemon with ARGS and the images of one_area. */
static void setup(const char *const *args)
{
	ts_daemon_start(&dmn, args);
	snprintf(imgdir, sizeof(imgdir), "%s/img", dmn.dir);
	ts_write_images(imgdir, TS_IMAGE_ID, one_area, 1, SEED);
	snprintf(pages, sizeof(pages), "%s/pages-1.img", imgdir);
}

static void teardown(void)
{
	cr_expect(ts_daemon_finish(&dmn, 10000), "uffd-manager did not exit cleanly");
}

/* Rss in KiB of PID's mappings of a file named NAME; 0 if it maps none. */
static long map_rss_kib(pid_t pid, const char *name)
{
	char path[64], line[512];
	size_t nl = strlen(name);
	unsigned long a, b;
	bool in = false;
	long rss = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	f = fopen(path, "re");
	cr_assert_not_null(f, "%s", path);
	while (fgets(line, sizeof(line), f)) {
		size_t n = strcspn(line, "\n");

		line[n] = 0;
		if (sscanf(line, "%lx-%lx ", &a, &b) == 2)
			in = n > nl && line[n - nl - 1] == '/' && !strcmp(line + n - nl, name);
		else if (in && !strncmp(line, "Rss:", 4))
			rss += atol(line + 4);
	}
	fclose(f);
	return rss;
}

/* Pages of PATH in the page cache (mincore through a mapping that touches none). */
static long cached_pages(const char *path)
{
	unsigned char vec[AREA / 4096];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	long n = 0;
	void *p;

	cr_assert_geq(fd, 0, "%s", path);
	p = mmap(NULL, AREA, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	cr_assert_neq(p, MAP_FAILED);
	cr_assert_eq(mincore(p, AREA, vec), 0);
	munmap(p, AREA);
	for (size_t i = 0; i < sizeof(vec); i++)
		n += vec[i] & 1;
	return n;
}

/* Wait (20 s at most) for the daemon's log to say S. */
static bool log_wait(const char *s)
{
	for (int i = 0; i < 4000; i++) {
		if (ts_log_has(&dmn, s))
			return true;
		usleep(5000);
	}
	return false;
}

/* Wait for the word, then read every page and compare every byte. */
static int sc_wait_then_check(struct ts_child *c)
{
	ts_wait_go(c);
	for (uint64_t x = BASE; x < BASE + AREA; x += TS_PAGE)
		(void)*(volatile uint64_t *)(uintptr_t)x;
	return ts_check(BASE, AREA, BASE, &c->areas[0], c->seed) ? 1 : 0;
}

/*
 * Fault on one page over and over (drop it, read it again: a zero page
 * each time after the first) until told to stop.
 */
static int sc_fault_until_go(struct ts_child *c)
{
	struct pollfd pfd = { .fd = c->go[0], .events = POLLIN };

	for (long i = 0;; i++) {
		(void)*(volatile uint64_t *)(uintptr_t)BASE;
		if (madvise((void *)(uintptr_t)BASE, TS_PAGE, MADV_DONTNEED) < 0)
			return ts_fail("madvise: %m");
		if (i % 64 == 0 && poll(&pfd, 1, 0) > 0)
			break;
	}
	ts_wait_go(c);
	return 0;
}

#define SCATTER		512	/* pages read by sc_scatter_then_check, 97 pages apart */

/*
 * Read SCATTER pages far apart (every fault a random one to the daemon:
 * one page each), wait for the word, then read every page and compare
 * every byte (those first ones too).
 */
static int sc_scatter_then_check(struct ts_child *c)
{
	const uint64_t npages = AREA / TS_PAGE;

	for (uint64_t i = 0; i < SCATTER; i++)
		(void)*(volatile uint64_t *)(uintptr_t)(BASE + i * 97 % npages * TS_PAGE);
	ts_wait_go(c);
	return ts_check(BASE, AREA, BASE, &c->areas[0], c->seed) ? 1 : 0;
}

/* How many of PID's fds are open on a file named NAME. */
static int fds_on(pid_t pid, const char *name)
{
	char dir[64], path[400], target[400];
	size_t nl = strlen(name);
	struct dirent *de;
	int n = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	d = opendir(dir);
	cr_assert_not_null(d, "%s", dir);
	while ((de = readdir(d))) {
		ssize_t len;

		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		len = readlink(path, target, sizeof(target) - 1);
		if (len <= (ssize_t)nl)
			continue;
		target[len] = 0;
		if (target[len - nl - 1] == '/' && !strcmp(target + len - nl, name))
			n++;
	}
	closedir(d);
	return n;
}

/* Stop the daemon: how many pages it read before their copy, as its last line says. */
static long pages_read_at_exit(void)
{
	const char *key = " refused; ";
	char line[1024];
	long n = -1;
	FILE *f;
	int st;

	st = ts_daemon_stop(&dmn, 10000);
	cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "wait status %d; log in %s",
		  st, dmn.log);
	dmn.pid = 0;
	f = fopen(dmn.log, "re");
	cr_assert_not_null(f, "%s", dmn.log);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "exiting: ") && strstr(line, key))
			n = strtol(strstr(line, key) + strlen(key), NULL, 10);
	fclose(f);
	cr_assert_geq(n, 0, "no count of pages read in %s", dmn.log);
	return n;
}

/*
 * Faults on pages the daemon never mapped are read from the file, then
 * copied: the daemon maps nothing of the file (its Rss there stays 0, where
 * copies from the mapping would map each page and its fault-around), and
 * every byte is the image's. The file stays open while it is served, and
 * is closed once no one uses it.
 */
Test(prefault, cold_faults_read_the_file_and_map_none, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", "--no-prefault", NULL };
	struct ts_child c = { .d = &dmn, .areas = one_area, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	uint64_t faults = 0;
	pid_t pid;
	int tries;

	setup(args);
	cr_assert_eq(cached_pages(pages), (long)(AREA / 4096), "the images just written are cached");
	pid = ts_child_start(&c, sc_scatter_then_check);
	for (tries = 0; faults < SCATTER; tries++) {
		cr_assert_lt(tries, 4000, "the process never made its %d faults", SCATTER);
		cr_assert_eq(ts_status_get(&dmn, &s), 0);
		faults = s.tot->faults;
		ts_status_free(&s);
		usleep(5000);
	}
	cr_expect_eq(map_rss_kib(dmn.pid, "pages-1.img"), 0,
		     "%d faults far apart mapped %ld KiB of the file in the daemon", SCATTER,
		     map_rss_kib(dmn.pid, "pages-1.img"));
	cr_expect_eq(fds_on(dmn.pid, "pages-1.img"), 1, "the file is not open once while served");
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "child saw wrong memory (see its stderr)");
	for (tries = 0; fds_on(dmn.pid, "pages-1.img") && tries < 2000; tries++)
		usleep(5000);
	cr_expect_eq(fds_on(dmn.pid, "pages-1.img"), 0, "the file stays open after its process left");
	cr_expect_geq(pages_read_at_exit(), SCATTER, "the faults far apart were not read first");
}

/* Wait for the word, read SCATTER pages far apart, then compare every byte. */
static int sc_go_then_scatter(struct ts_child *c)
{
	ts_wait_go(c);
	return sc_scatter_then_check(c);
}

/*
 * Once the prefault has mapped the whole (cached) file, it says so in the
 * record of mapped pages: faults far apart copy from the mapping and read
 * nothing first, and every byte is the image's.
 */
Test(prefault, faults_after_the_prefault_read_nothing_first, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", "-v", NULL };
	struct ts_child c = { .d = &dmn, .areas = one_area, .n = 1, .seed = SEED, .imgdir = imgdir };
	pid_t pid;

	setup(args);
	cr_assert_eq(cached_pages(pages), (long)(AREA / 4096), "the images just written are cached");
	pid = ts_child_start(&c, sc_go_then_scatter);
	cr_assert(log_wait("prefault done"), "the prefault never finished");
	cr_assert_eq(map_rss_kib(dmn.pid, "pages-1.img"), (long)(AREA >> 10),
		     "the prefault mapped %ld KiB of the file", map_rss_kib(dmn.pid, "pages-1.img"));
	ts_say_go(&c);
	/* sc_scatter_then_check waits for a second word once its faults are made. */
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "child saw wrong memory (see its stderr)");
	cr_expect_eq(pages_read_at_exit(), 0, "faults read pages the prefault had mapped");
}

/* Return at once: the process exits right after its hand-over. */
static int sc_leave(struct ts_child *c)
{
	(void)c;
	return 0;
}

/*
 * With half of the pages file in the page cache, the daemon maps that half
 * (its Rss on the file) and reads nothing from disk: the file has as many
 * cached pages after as before. The process then reads the image's bytes.
 */
Test(prefault, maps_the_cached_pages_and_reads_none, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", "-v", NULL };
	struct ts_child c = { .d = &dmn, .areas = one_area, .n = 1, .seed = SEED, .imgdir = imgdir };
	static char buf[MiB];
	long cached, rss;
	pid_t pid;
	int fd;

	setup(args);
	fd = open(pages, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	/* Out of the page cache, then its first half back in, without readahead. */
	cr_assert_eq(fsync(fd), 0);
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	cr_assert_eq(posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM), 0);
	for (off_t off = 0; off < (off_t)(AREA / 2); off += sizeof(buf))
		cr_assert_eq(pread(fd, buf, sizeof(buf), off), (ssize_t)sizeof(buf));
	close(fd);
	cached = cached_pages(pages);
	cr_assert_geq(cached, (long)(AREA / 2 / 4096), "%ld pages cached after reading half", cached);
	cr_assert_lt(cached, (long)(AREA / 4096), "the whole file stayed cached: cannot test");

	pid = ts_child_start(&c, sc_wait_then_check);
	cr_assert(log_wait("prefault done"), "the prefault never finished");
	rss = map_rss_kib(dmn.pid, "pages-1.img");
	cr_expect_eq(rss, cached * 4, "the daemon maps %ld KiB of the file, %ld KiB are cached", rss,
		     cached * 4);
	cr_expect_eq(cached_pages(pages), cached, "the prefault read pages from disk");
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "child saw wrong memory (see its stderr)");
}

/* --no-prefault: the daemon maps nothing of the file before a fault asks. */
Test(prefault, none_with_no_prefault, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", "--no-prefault", NULL };
	struct ts_child c = { .d = &dmn, .areas = one_area, .n = 1, .seed = SEED, .imgdir = imgdir };
	pid_t pid;

	setup(args);
	cr_assert_eq(cached_pages(pages), (long)(AREA / 4096), "the images just written are cached");
	pid = ts_child_start(&c, sc_wait_then_check);
	usleep(300 * 1000);	/* the prefault of 16 MiB takes a few ms when on */
	cr_expect_eq(map_rss_kib(dmn.pid, "pages-1.img"), 0);
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "child saw wrong memory (see its stderr)");
}

/*
 * A process that leaves while its file is being mapped: the worker stops
 * there (its reference is the last) rather than map the rest for no one.
 * It sleeps 20 ms a step (256 KiB) here, so that 16 MiB would take 1.3 s.
 */
Test(prefault, stops_when_the_process_leaves, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", "-v", NULL };
	struct ts_child c = { .d = &dmn, .areas = one_area, .n = 1, .seed = SEED, .imgdir = imgdir };
	pid_t pid;

	setenv("UFFD_TEST_PREFAULT_NAP_US", "20000", 1);
	setup(args);
	unsetenv("UFFD_TEST_PREFAULT_NAP_US");
	pid = ts_child_start(&c, sc_leave);
	cr_assert_eq(ts_child_wait(pid, 30000), 0);
	cr_assert(log_wait("prefault stopped"), "the prefault went on after the process left");
	cr_expect_not(ts_log_has(&dmn, "prefault done"));
}

/*
 * While faults come, the prefault waits: it would otherwise take the CPU a
 * polling loop yields between faults. Once they stop, it maps the file.
 * Its steps take 1 ms here (it naps), so that in 300 ms it would map the
 * whole file (64 steps) were it not waiting; a few steps may still come in
 * gaps between faults when this machine is busy.
 */
Test(prefault, waits_while_faults_come, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", "-v", NULL };
	struct ts_child c = { .d = &dmn, .areas = one_area, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	uint64_t faults = 0;
	long rss0, rss;
	pid_t pid;

	setenv("UFFD_TEST_PREFAULT_NAP_US", "1000", 1);
	setup(args);
	unsetenv("UFFD_TEST_PREFAULT_NAP_US");
	pid = ts_child_start(&c, sc_fault_until_go);
	for (int tries = 0; faults < 2000; tries++) {
		cr_assert_lt(tries, 2000, "the process never faulted densely");
		cr_assert_eq(ts_status_get(&dmn, &s), 0);
		faults = s.tot->faults;
		ts_status_free(&s);
		usleep(5000);
	}
	/* It may have begun between the hand-over and the first fault. */
	rss0 = map_rss_kib(dmn.pid, "pages-1.img");
	usleep(300 * 1000);	/* 16 MiB take a few ms to map when nothing holds it back */
	rss = map_rss_kib(dmn.pid, "pages-1.img");
	cr_expect_lt(rss - rss0, (long)(AREA >> 11),
		     "the daemon mapped %ld KiB more of the file while faults came", rss - rss0);
	cr_expect_not(ts_log_has(&dmn, "prefault done"));
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 30000), 0);
	cr_assert(log_wait("prefault"), "no prefault once the faults stopped");
}

/*
 * A file whose process left is dropped even while the worker waits on
 * another's faults: those must not keep a file mapped that no one uses.
 * A faults densely on its image (its prefault, slowed to 1 ms a step,
 * waits); B hands over another image dir and leaves at once.
 */
Test(prefault, a_file_no_one_uses_is_dropped_while_others_fault, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", "-v", NULL };
	struct ts_child a = { .d = &dmn, .areas = one_area, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_child b = { .d = &dmn, .areas = one_area, .n = 1, .seed = SEED };
	char imgdir2[200];
	struct ts_status s;
	uint64_t faults = 0;
	pid_t pa, pb;

	setenv("UFFD_TEST_PREFAULT_NAP_US", "1000", 1);
	setup(args);
	unsetenv("UFFD_TEST_PREFAULT_NAP_US");
	snprintf(imgdir2, sizeof(imgdir2), "%s/img2", dmn.dir);
	ts_write_images(imgdir2, TS_IMAGE_ID, one_area, 1, SEED);
	b.imgdir = imgdir2;
	pa = ts_child_start(&a, sc_fault_until_go);
	for (int tries = 0; faults < 2000; tries++) {
		cr_assert_lt(tries, 2000, "the process never faulted densely");
		cr_assert_eq(ts_status_get(&dmn, &s), 0);
		faults = s.tot->faults;
		ts_status_free(&s);
		usleep(5000);
	}
	pb = ts_child_start(&b, sc_leave);
	cr_assert_eq(ts_child_wait(pb, 30000), 0);
	cr_expect(log_wait("prefault stopped"), "B's file stayed queued while A faulted");
	cr_expect_not(ts_log_has(&dmn, "prefault done"), "A's prefault ran while it faulted");
	ts_say_go(&a);
	cr_assert_eq(ts_child_wait(pa, 30000), 0);
}

/* ---- a faulting page found there already ---- */

#define EX_PAGE	(BASE + 100 * TS_PAGE)	/* the page placed under the fault (far from the start) */

/* Touch EX_PAGE: the thread blocks on its fault until the daemon answers it. */
static void *touch_ex_page(void *arg)
{
	(void)arg;
	(void)*(volatile uint64_t *)(uintptr_t)EX_PAGE;
	return NULL;
}

/*
 * With the daemon stopped, fault on EX_PAGE in a thread; once the fault is
 * queued, place the page's image bytes ourselves (not waking the thread):
 * the daemon's copy then finds it there (EEXIST). Say so on the pipe in
 * ARG, wait for the thread, then read the next two pages one after the
 * other and check all three.
 */
static int sc_place_under_fault(struct ts_child *c)
{
	static uint64_t page[TS_PAGE / 8];
	int *ready = c->arg;
	struct uffdio_copy cp = { .dst = EX_PAGE, .src = (uintptr_t)page, .len = TS_PAGE,
				  .mode = UFFDIO_COPY_MODE_DONTWAKE };
	struct pollfd pfd = { .fd = c->uffd, .events = POLLIN };
	pthread_t th;

	for (uint64_t i = 0; i < TS_PAGE / 8; i++)
		page[i] = ts_word(c->seed, EX_PAGE + i * 8);
	ts_wait_go(c);
	if (pthread_create(&th, NULL, touch_ex_page, NULL))
		return ts_fail("pthread_create");
	/* Not read by the stopped daemon: the fault stays queued, the uffd readable. */
	if (poll(&pfd, 1, -1) != 1)
		return ts_fail("poll uffd: %m");
	if (ioctl(c->uffd, UFFDIO_COPY, &cp) < 0 || cp.copy != (int64_t)TS_PAGE)
		return ts_fail("UFFDIO_COPY: %m");
	if (write(ready[1], "R", 1) != 1)
		return ts_fail("write: %m");
	pthread_join(th, NULL);
	(void)*(volatile uint64_t *)(uintptr_t)(EX_PAGE + TS_PAGE);
	(void)*(volatile uint64_t *)(uintptr_t)(EX_PAGE + 2 * TS_PAGE);
	return ts_check(EX_PAGE, 3 * TS_PAGE, EX_PAGE, &c->areas[0], c->seed) ? 1 : 0;
}

/*
 * A fault whose one-page run is there already when the daemon copies it
 * (EEXIST, on the read-first path) is a fault answered like any other: the
 * window that follows it grows, so reading the two pages after it faults
 * once (the second comes with the first), not twice.
 */
Test(prefault, a_page_found_there_counts_for_the_window, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", "--no-prefault", "--no-working-set", "-v", NULL };
	int ready[2];
	struct ts_child c = { .d = &dmn, .areas = one_area, .n = 1, .seed = SEED, .imgdir = imgdir,
			      .keep_uffd = true, .arg = ready };
	struct ts_status s;
	char b;
	pid_t pid;

	setup(args);
	cr_assert_eq(pipe2(ready, O_CLOEXEC), 0);
	pid = ts_child_start(&c, sc_place_under_fault);
	close(ready[1]);
	cr_assert_eq(kill(dmn.pid, SIGSTOP), 0);
	ts_say_go(&c);
	b = 0;
	cr_expect_eq(read(ready[0], &b, 1), 1, "the child did not place its page");
	close(ready[0]);
	cr_assert_eq(kill(dmn.pid, SIGCONT), 0);
	cr_assert_eq(b, 'R');
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "child saw wrong memory (see its stderr)");
	cr_assert_eq(ts_status_get(&dmn, &s), 0);
	cr_expect_eq(s.tot->faults, 2, "%" PRIu64 " faults for three pages read in order",
		     s.tot->faults);
	ts_status_free(&s);
	cr_expect(ts_log_has(&dmn, "EEXIST at"), "the daemon's copy did not find the page there");
}
