/*
 * The working set first (wset.h): the first serving of an image records the
 * order of the process's first faults; the next serving of the same image
 * fills those pages first. Every byte compared.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tserve.h"
#include "wset.h"

#define BASE	0x540000000000ull
#define SEED	0x3e3e5eedull
#define MiB	(1ull << 20)
#define N	64	/* pages touched, 1 MiB apart, from the last down */

static struct ts_daemon dmn;
static char top[] = "/tmp/uffd-wset-XXXXXX";
static char imgdir[64], wsdir[64];

static const struct ts_area area[] = { { BASE, N * MiB, 0 } };

static uint64_t nth(int k)
{
	return BASE + (uint64_t)(N - 1 - k) * MiB + 3 * TS_PAGE;
}

/* Read the N pages in their order, then compare each. */
static int sc_touch(struct ts_child *c)
{
	long bad = 0;

	for (int k = 0; k < N; k++)
		(void)*(volatile uint64_t *)(uintptr_t)nth(k);
	for (int k = 0; k < N; k++)
		bad += ts_check(nth(k), TS_PAGE, nth(k), &c->areas[0], c->seed);
	return bad ? 1 : 0;
}

static int sc_wait_then_touch(struct ts_child *c)
{
	ts_wait_go(c);
	return sc_touch(c);
}

static void setup(void)
{
	cr_assert(mkdtemp(top));
	snprintf(imgdir, sizeof(imgdir), "%s/img", top);
	snprintf(wsdir, sizeof(wsdir), "%s/ws", top);
	ts_write_images(imgdir, TS_IMAGE_ID, area, 1, SEED);
}

static void teardown(void)
{
	char cmd[128];

	if (dmn.pid)
		cr_expect(ts_daemon_finish(&dmn, 10000), "uffd-manager did not exit cleanly");
	snprintf(cmd, sizeof(cmd), "rm -rf %s", top);
	if (system(cmd)) {
	}
}

/* Wait up to 20 s for the daemon's log to say S. */
static bool log_says(const char *s)
{
	for (int i = 0; i < 4000; i++) {
		if (ts_log_has(&dmn, s))
			return true;
		usleep(5000);
	}
	return false;
}

/* Serve the image once on demand (--no-fill: every touch is a fault); the record is written. */
static void record(void)
{
	const char *args[] = { "--no-fill", "--working-set-dir", wsdir, NULL };
	struct ts_child c = { .d = &dmn, .areas = area, .n = 1, .seed = SEED, .imgdir = imgdir };

	ts_daemon_start(&dmn, args);
	cr_assert_eq(ts_child_wait(ts_child_start(&c, sc_touch), 30000), 0, "child saw wrong memory");
	cr_assert(log_says("working set recorded: 64 pages"), "log in %s", dmn.log);
	cr_assert(ts_daemon_finish(&dmn, 10000), "uffd-manager did not exit cleanly");
	dmn.pid = 0;
}

Test(wset, records_the_order_of_first_faults, .timeout = 60, .init = setup, .fini = teardown)
{
	char path[600], buf[16 + N * 8 + 8];
	uint64_t *img;
	size_t n;
	ssize_t len;
	int fd, dfd;

	record();
	dfd = open(imgdir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	cr_assert_eq(wset_path(wsdir, dfd, TS_IMAGE_ID, path, sizeof(path)), 0);
	close(dfd);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert(fd >= 0, "no record at %s", path);
	len = read(fd, buf, sizeof(buf));
	close(fd);
	cr_assert_eq(wset_parse(buf, len, &img, &n), 0, "%s is not a record", path);
	cr_assert_eq(n, N);
	for (int k = 0; k < N; k++)
		cr_expect_eq(img[k], nth(k), "entry %d: 0x%" PRIx64 ", want 0x%" PRIx64, k, img[k], nth(k));
	free(img);
}

Test(wset, the_next_serving_fills_the_record_first, .timeout = 90, .init = setup, .fini = teardown)
{
	const char *args[] = { "--working-set-dir", wsdir, NULL };
	struct ts_child c = { .d = &dmn, .areas = area, .n = 1, .seed = SEED, .imgdir = imgdir };
	pid_t pid;

	record();
	ts_daemon_start(&dmn, args);
	pid = ts_child_start(&c, sc_wait_then_touch);
	cr_assert(log_says("serving its working set first: 64 pages recorded"), "log in %s", dmn.log);
	/* Untouched, the whole image comes in by the fill; the recorded pages came by the record. */
	cr_assert(log_says("fully served"), "log in %s", dmn.log);
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "child saw wrong memory");
	cr_assert(log_says("working set: 64 of 64 recorded pages filled before it asked"), "log in %s",
		  dmn.log);
}

/* The first recorded page, then a page the record lacks (the one after it), then the rest. */
static int sc_touch_one_more(struct ts_child *c)
{
	long bad = 0;

	(void)*(volatile uint64_t *)(uintptr_t)nth(0);
	(void)*(volatile uint64_t *)(uintptr_t)(nth(0) + TS_PAGE);
	for (int k = 1; k < N; k++)
		(void)*(volatile uint64_t *)(uintptr_t)nth(k);
	for (int k = 0; k < N; k++)
		bad += ts_check(nth(k), TS_PAGE, nth(k), &c->areas[0], c->seed);
	bad += ts_check(nth(0) + TS_PAGE, TS_PAGE, nth(0) + TS_PAGE, &c->areas[0], c->seed);
	return bad ? 1 : 0;
}

/* Read the record for the images into *IMG (malloc'd); its length. */
static size_t read_record(uint64_t **img)
{
	static char buf[16 + 2 * N * 8];
	char path[600];
	ssize_t len;
	size_t n;
	int fd, dfd = open(imgdir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);

	cr_assert_eq(wset_path(wsdir, dfd, TS_IMAGE_ID, path, sizeof(path)), 0);
	close(dfd);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert(fd >= 0, "no record at %s", path);
	len = read(fd, buf, sizeof(buf));
	close(fd);
	cr_assert_eq(wset_parse(buf, len, img, &n), 0, "%s is not a record", path);
	return n;
}

/*
 * A serving that replays the record adds the faults it lacked, each after
 * the recorded page the process last faulted at: the record learns what the
 * fill of its first serving got to before the process did.
 */
Test(wset, a_replay_adds_what_the_record_lacked, .timeout = 60, .init = setup, .fini = teardown)
{
	const char *args[] = { "--no-fill", "--working-set-dir", wsdir, NULL };
	struct ts_child c = { .d = &dmn, .areas = area, .n = 1, .seed = SEED, .imgdir = imgdir };
	uint64_t *img;
	size_t n;

	record();
	ts_daemon_start(&dmn, args);
	cr_assert_eq(ts_child_wait(ts_child_start(&c, sc_touch_one_more), 30000), 0,
		     "child saw wrong memory");
	cr_assert(log_says("working set record updated: 65 pages (1 it lacked)"), "log in %s",
		  dmn.log);
	n = read_record(&img);
	cr_assert_eq(n, N + 1);
	cr_expect_eq(img[0], nth(0));
	cr_expect_eq(img[1], nth(0) + TS_PAGE, "the new page comes right after the page before it");
	for (int k = 1; k < N; k++)
		cr_expect_eq(img[k + 1], nth(k), "entry %d", k + 1);
	free(img);
}

/*
 * Serve the image once with ARGS and stop the daemon, keeping its dir; true
 * if a record was written beside its socket (the default place).
 */
static bool recorded_beside_socket(const char *const *args)
{
	struct ts_child c = { .d = &dmn, .areas = area, .n = 1, .seed = SEED, .imgdir = imgdir };
	char path[200];
	struct dirent *e;
	bool found = false;
	DIR *dir;
	int st;

	ts_daemon_start(&dmn, args);
	cr_assert_eq(ts_child_wait(ts_child_start(&c, sc_touch), 30000), 0, "child saw wrong memory");
	cr_assert(log_says("exited"), "log in %s", dmn.log);	/* --no-fill: it left unserved */
	st = ts_daemon_stop(&dmn, 10000);
	cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "daemon exit status %d", st);
	dmn.pid = 0;
	snprintf(path, sizeof(path), "%s/working-sets", dmn.dir);
	if ((dir = opendir(path))) {
		while ((e = readdir(dir)))
			found |= strlen(e->d_name) > 3 && !strcmp(e->d_name + strlen(e->d_name) - 3, ".ws");
		closedir(dir);
	}
	return found;
}

Test(wset, recorded_beside_the_socket_by_default, .timeout = 60, .init = setup, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };

	cr_expect(recorded_beside_socket(args), "no record in %s/working-sets", dmn.dir);
	cr_expect(ts_log_has(&dmn, "working set recorded: 64 pages"), "log in %s", dmn.log);
	cr_expect(ts_daemon_finish(&dmn, 1000));
}

/* --no-working-set: neither recorded nor replayed. */
Test(wset, off_when_asked, .timeout = 60, .init = setup, .fini = teardown)
{
	const char *args[] = { "--no-fill", "--no-working-set", NULL };

	cr_expect(!recorded_beside_socket(args), "a record in %s/working-sets", dmn.dir);
	cr_expect(!ts_log_has(&dmn, "working set"), "log in %s", dmn.log);
	cr_expect(ts_daemon_finish(&dmn, 1000));
}
