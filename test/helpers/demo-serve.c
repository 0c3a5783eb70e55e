/*
 * demo-serve: show uffd-manager serving a real process (make demo).
 *
 * A child process maps 256 MiB of empty memory, hands it to a fresh
 * uffd-manager with images of patterned data, reads a quarter of it (pages
 * arrive on touch), then lets the background fill bring in the rest, and
 * checks every byte. The daemon's own status command is shown on the way.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tserve.h"

#define BASE	0x540000000000ull
#define LEN	(256ull << 20)

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Resident pages of our own area, from /proc/self/smaps_rollup is too coarse: use mincore. */
static long resident_mib(const struct ts_area *a)
{
	size_t n = a->len / TS_PAGE;
	unsigned char *v = malloc(n);
	long r = 0;

	if (!v || mincore((void *)(uintptr_t)a->start, a->len, v) < 0) {
		free(v);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		r += v[i] & 1;
	free(v);
	return r * TS_PAGE >> 20;
}

static int sc_demo(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	double t0 = now();
	long bad;

	printf("  child %d: handed over; resident: %ld MiB of %llu\n", getpid(), resident_mib(a),
	       (unsigned long long)(a->len >> 20));
	bad = ts_check(a->start, a->len / 4, a->start, a, c->seed);
	printf("  child: read the first 64 MiB in %.3f s (faults served on touch): %s; resident %ld MiB\n",
	       now() - t0, bad ? "WRONG BYTES" : "every byte right", resident_mib(a));
	fflush(stdout);
	ts_wait_go(c);
	t0 = now();
	bad += ts_check(a->start, a->len, a->start, a, c->seed);
	printf("  child: read all 256 MiB in %.3f s: %s; resident %ld MiB\n", now() - t0,
	       bad ? "WRONG BYTES" : "every byte right", resident_mib(a));
	fflush(stdout);
	return bad != 0;
}

int main(void)
{
	const char *args[] = { "--no-fill", NULL };
	struct ts_area area = { BASE, LEN, 9 };
	struct ts_daemon d;
	struct ts_child c = { .d = &d, .areas = &area, .n = 1, .seed = 0xd3e0 };
	char dir[200], cmd[400];
	const char *build = getenv("UFFD_TEST_BUILD");
	pid_t pid;
	int ret;

	ts_daemon_start(&d, args);
	printf("uffd-manager running (pid %d), socket %s, on-demand only for now\n", d.pid, d.sock);
	snprintf(dir, sizeof(dir), "%s/img", d.dir);
	ts_write_images(dir, TS_IMAGE_ID, &area, 1, c.seed);
	printf("images of a 256 MiB process written to %s (every 9th page a hole)\n", dir);
	c.imgdir = dir;
	fflush(stdout);
	pid = ts_child_start(&c, sc_demo);
	usleep(300000);
	printf("\n$ uffd-manager status\n");
	fflush(stdout);
	snprintf(cmd, sizeof(cmd), "%s/uffd-manager status --socket %s", build ? build : "build",
		 d.sock);
	if (system(cmd)) {
	}
	printf("\nSIGTERM to the manager: it stops taking new processes and fills the rest\n");
	fflush(stdout);
	kill(d.pid, 15);
	ret = ts_daemon_wait(&d, 60000);
	d.pid = 0;
	printf("uffd-manager exited with status %d after serving every page:\n",
	       WIFEXITED(ret) ? WEXITSTATUS(ret) : -1);
	snprintf(cmd, sizeof(cmd), "grep -E 'serving|fully served|exiting' %s | sed 's/^/  /'", d.log);
	if (system(cmd)) {
	}
	fflush(stdout);
	ts_say_go(&c);
	ret = ts_child_wait(pid, 60000);
	ts_daemon_finish(&d, 1000);
	printf("%s\n", ret == 0 ? "demo: OK" : "demo: FAILED");
	return ret == 0 ? 0 : 1;
}
