/*
 * Huge pages back (collapse.h): once a process is fully served, its lazy
 * areas that may use THP are collapsed into 2 MiB pages, with every byte
 * as it was.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tserve.h"

#define BASE	0x520000000000ull	/* 2 MiB-aligned, clear of ASan's heap */
#define SEED	0x7b7b1234ull
#define MiB	(1ull << 20)

static struct ts_daemon dmn;
static char imgdir[160];

static void teardown(void)
{
	cr_expect(ts_daemon_finish(&dmn, 10000), "uffd-manager did not exit cleanly");
}

/* AnonHugePages of the VMA that starts at START in /proc/self/smaps, in KiB; -1 if none. */
static long anon_huge_kib(uint64_t start)
{
	char line[256];
	bool in = false;
	long kib = -1;
	FILE *f = fopen("/proc/self/smaps", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long s, e;

		if (sscanf(line, "%llx-%llx ", &s, &e) == 2) {
			in = s <= start && start < e;
			continue;
		}
		if (in && sscanf(line, "AnonHugePages: %ld kB", &kib) == 1)
			break;
	}
	fclose(f);
	return kib;
}

/*
 * Ask for huge pages, read every page (with --no-fill each comes by a
 * fault, so the process is served through), then wait for the daemon's
 * collapse and compare every byte.
 */
static int sc_huge(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	long kib = -1, want = (long)(a->len >> 10);

	if (madvise((void *)(uintptr_t)a->start, a->len, MADV_HUGEPAGE))
		return ts_fail("madvise(MADV_HUGEPAGE): %s", strerror(errno));
	for (uint64_t x = a->start; x < a->start + a->len; x += TS_PAGE)
		(void)*(volatile uint64_t *)(uintptr_t)x;
	for (int i = 0; i < 1000 && (kib = anon_huge_kib(a->start)) < want; i++)
		usleep(10000);
	if (ts_check(a->start, a->len, a->start, a, c->seed))
		return ts_fail("wrong bytes after the collapse");
	if (kib != want)
		return ts_fail("%ld KiB of huge pages in the area after 10 s, want %ld", kib, want);
	return 0;
}

static bool thp_usable(void)
{
	char buf[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");

	if (f) {
		if (!fgets(buf, sizeof(buf), f))
			buf[0] = '\0';
		fclose(f);
	}
	return strstr(buf, "[always]") || strstr(buf, "[madvise]");
}

static void run(const struct ts_area *area)
{
	const char *args[] = { "--no-fill", "-v", NULL };
	struct ts_child c = { .d = &dmn, .areas = area, .n = 1, .seed = SEED, .imgdir = imgdir };
	pid_t pid;

	if (!thp_usable())
		cr_skip_test("transparent huge pages are off on this machine (sysfs enabled: never)");
	ts_daemon_start(&dmn, args);
	snprintf(imgdir, sizeof(imgdir), "%s/img", dmn.dir);
	ts_write_images(imgdir, TS_IMAGE_ID, area, 1, SEED);
	pid = ts_child_start(&c, sc_huge);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "child failed (see its stderr)");
	/*
	 * The daemon made them, not khugepaged (which may visit the area too,
	 * every 10 s). Its collapse thread logs a job once its last
	 * MADV_COLLAPSE has returned, and the child may see that block huge,
	 * check and exit before then: wait for the job's line, then read it.
	 */
	for (int i = 0; !ts_log_has(&dmn, " 2 MiB blocks collapsed into huge pages"); i++) {
		cr_assert_lt(i, 3000, "no collapse logged in 30 s; log in %s", dmn.log);
		usleep(10000);
	}
	cr_expect(ts_log_has(&dmn, "4 of 4 2 MiB blocks collapsed into huge pages"), "log in %s",
		  dmn.log);
}

Test(collapse, served_blocks_become_huge_pages, .timeout = 60, .fini = teardown)
{
	static const struct ts_area area[] = { { BASE, 8 * MiB, 0 } };

	run(area);
}

/* Image holes are pages never placed: the collapse fills them with zeros, as a fault would. */
Test(collapse, blocks_with_holes_too, .timeout = 60, .fini = teardown)
{
	static const struct ts_area area[] = { { BASE, 8 * MiB, 7 } };

	run(area);
}
