/*
 * serve-quick: a quick look at what uffd-manager costs on this machine.
 * Not the benchmark suite (that is `make bench`, planned): one process,
 * one daemon, two figures, printed.
 *
 *   serve-quick fill MiB      time for the background fill of MiB (no faults)
 *   serve-quick fault N       median and p99 of N first touches of random pages (--no-fill)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tserve.h"

#define BASE	0x530000000000ull

static uint64_t ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int cmp64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static long nfaults;

/* Touch random pages, one at a time, timing each first touch; print median and p99. */
static int sc_faults(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	uint64_t np = a->len / TS_PAGE, *t = calloc(nfaults, sizeof(*t));
	uint64_t x = 88172645463325252ull;

	for (long i = 0; i < nfaults; i++) {
		uint64_t p, t0;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p = a->start + (x % np) * TS_PAGE;
		t0 = ns();
		(void)*(volatile uint64_t *)(uintptr_t)p;
		t[i] = ns() - t0;
	}
	qsort(t, nfaults, sizeof(*t), cmp64);
	printf("fault: %ld random first touches (some hit pages already served): median %.1f us, p99 %.1f us\n",
	       nfaults, t[nfaults / 2] / 1e3, t[nfaults * 99 / 100] / 1e3);
	fflush(stdout);
	return 0;
}

static int sc_wait(struct ts_child *c)
{
	char b;

	if (read(c->go[0], &b, 1) != 1) {
	}
	return ts_check(c->areas[0].start, c->areas[0].len, c->areas[0].start, &c->areas[0],
			c->seed) != 0;
}

int main(int argc, char **argv)
{
	struct ts_daemon d;
	struct ts_area area = { BASE, 0, 0 };
	struct ts_child c = { .d = &d, .areas = &area, .n = 1, .seed = 7 };
	char dir[200];
	pid_t pid;

	if (argc != 3 || (strcmp(argv[1], "fill") && strcmp(argv[1], "fault"))) {
		fprintf(stderr, "usage: serve-quick fill MiB | fault N\n");
		return 2;
	}
	if (!strcmp(argv[1], "fill")) {
		const char *args[] = { NULL };
		struct ts_status s;
		uint64_t t0;

		area.len = strtoull(argv[2], NULL, 0) << 20;
		ts_daemon_start(&d, args);
		snprintf(dir, sizeof(dir), "%s/img", d.dir);
		ts_write_images(dir, TS_IMAGE_ID, &area, 1, c.seed);
		c.imgdir = dir;
		t0 = ns();
		pid = ts_child_start(&c, sc_wait);
		for (;;) {
			if (ts_status_get(&d, &s) == 0 && s.tot->served == 1)
				break;
			ts_status_free(&s);
			usleep(2000);
		}
		printf("fill: %s MiB handed over and filled in %.3f s (%.2f GB/s), %" PRIu64 " faults\n",
		       argv[2], (ns() - t0) / 1e9, area.len / ((ns() - t0) / 1e9) / 1e9,
		       s.tot->faults);
		ts_status_free(&s);
		if (write(c.go[1], "g", 1) != 1) {
		}
	} else {
		const char *args[] = { "--no-fill", "--fault-window", "4K", NULL };

		nfaults = strtol(argv[2], NULL, 0);
		area.len = 1024ull << 20;
		ts_daemon_start(&d, args);
		snprintf(dir, sizeof(dir), "%s/img", d.dir);
		ts_write_images(dir, TS_IMAGE_ID, &area, 1, c.seed);
		c.imgdir = dir;
		pid = ts_child_start(&c, sc_faults);
	}
	if (ts_child_wait(pid, 120000) != 0)
		fprintf(stderr, "serve-quick: the child failed\n");
	ts_daemon_stop(&d, 60000);
	snprintf(dir, sizeof(dir), "rm -rf %s", d.dir);
	return system(dir) ? 1 : 0;
}
