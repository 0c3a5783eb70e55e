/*
 * 7. The working set first: a process handed over with the big image reads
 * a fixed 10% of its pages (random ones, in a fixed order) and exits; the
 * time from the hand-over's reply to the end of that pass, with the daemon's
 * default options but no record (--no-working-set), against a daemon that
 * holds the record of earlier servings of the same image (served until the
 * record stops growing: the first serving records only the pages the
 * background fill did not place before the process read them). Then the
 * same with the record but the pass's two halves swapped: an order that
 * changed since the record was made.
 */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "tserve.h"

static uint64_t *order;		/* page indices, the pass's order */
static uint64_t norder;
static volatile uint64_t *pass_ns;	/* shared with the child */

static int pass(const struct bconf *c, const char *sock)
{
	char why[512];
	uint64_t t0;
	long bad = 0;
	int uffd;

	b_pin_self(0);
	if (b_map_area(c->big) < 0)
		return 10;
	uffd = b_uffd(B_FEATURES, true);
	if (uffd < 0)
		return 11;
	if (b_handover(sock, c->bigimg, uffd, why, sizeof(why)) < 0) {
		fprintf(stderr, "hand-over: %s\n", why);
		return 12;
	}
	close(uffd);
	t0 = b_now();
	for (uint64_t i = 0; i < norder; i++) {
		uint64_t a = B_BASE + order[i] * B_PAGE;

		bad += *(volatile uint64_t *)(uintptr_t)a != ts_word(B_SEED, a);
	}
	*pass_ns = b_now() - t0;
	return bad ? 14 : 0;
}

/* One pass under a daemon with ARGS; ms. */
static double run(const struct bconf *c, const char *const *args)
{
	struct bdaemon d;
	pid_t pid;
	int st;

	bd_start(&d, c, args);
	*pass_ns = 0;
	pid = fork();
	if (pid < 0)
		b_die("fork");
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		_exit(pass(c, d.sock));
	}
	waitpid(pid, &st, 0);
	/*
	 * The record, when one is made, is written as the daemon lets go of
	 * the process: stopped before that, the serving adds nothing to it
	 * (and the loop below took a record that had stopped growing for
	 * one that was whole: 79% of the pages, a pass 0.65x instead of 0.2x).
	 */
	if (!bd_wait_ended(&d, 1, true, 30000))
		b_die("the daemon never let go of the working-set pass's process; log in %s", d.log);
	bd_stop(&d);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		b_die("working-set pass failed (wait status %d%s)", st,
		      WIFEXITED(st) && WEXITSTATUS(st) == 14 ? ": it read words that are not the image's" : "");
	return *pass_ns / 1e6;
}

/* Bytes in the files of DIR (the one record), 0 if none. */
static long dir_bytes(const char *dir)
{
	struct dirent *e;
	struct stat st;
	char path[512];
	long sum = 0;
	DIR *d = opendir(dir);

	while (d && (e = readdir(d))) {
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (e->d_name[0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode))
			sum += st.st_size;
	}
	if (d)
		closedir(d);
	return sum;
}

/* Swap the two halves of the pass's order (again: back). */
static void swap_halves(void)
{
	uint64_t h = norder / 2;

	for (uint64_t i = 0; i < h; i++) {
		uint64_t x = order[i];

		order[i] = order[h + i];
		order[h + i] = x;
	}
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

void bench_wset(const struct bconf *c)
{
	uint64_t np = c->big / B_PAGE;
	int reps = c->quick ? 3 : 5;
	double without[8], with[8], swapped[8], m0, m1, m2;
	int servings = 0;
	char wsdir[160], v[64], vs[128], cmd[200];
	const char *off[] = { "--no-working-set", NULL };
	const char *rec[] = { "--working-set-dir", wsdir, NULL };

	order = malloc(np * sizeof(*order));
	if (!order)
		b_die("out of memory");
	for (uint64_t i = 0; i < np; i++)
		order[i] = i;
	b_shuffle(order, np, 7);
	norder = np / 10;
	pass_ns = b_shared(sizeof(*pass_ns));
	snprintf(wsdir, sizeof(wsdir), "%s/working-sets", c->dir);
	printf("\n[7] working set first: read %llu random pages (10%% of %llu MiB) in a fixed order after hand-over, median of %d\n",
	       (unsigned long long)norder, (unsigned long long)(c->big >> 20), reps);
	/*
	 * The servings that make the record: the first records the faults the
	 * fill did not beat, each later one adds the faults the record lacked;
	 * until it stops growing (at most 8).
	 */
	for (long last = -1, now; servings < 8; last = now) {
		run(c, rec);
		servings++;
		now = dir_bytes(wsdir);
		if (now == last)
			break;
	}
	for (int r = 0; r < reps; r++) {
		without[r] = run(c, off);
		with[r] = run(c, rec);
	}
	/*
	 * The same pages with the record, in an order that changed: the second
	 * half first (as a process whose threads ran in another order might).
	 * Its first fault is half-way through the record; the first half must
	 * still come ahead of it, not be left to faults.
	 */
	swap_halves();
	for (int r = 0; r < reps; r++)
		swapped[r] = run(c, rec);
	swap_halves();
	qsort(without, reps, sizeof(double), cmp_d);
	qsort(with, reps, sizeof(double), cmp_d);
	qsort(swapped, reps, sizeof(double), cmp_d);
	m0 = without[reps / 2];
	m1 = with[reps / 2];
	m2 = swapped[reps / 2];
	snprintf(v, sizeof(v), "%.1f ms", m0);
	row("wset", "default options, no record (--no-working-set)", v, "baseline");
	snprintf(v, sizeof(v), "%.1f ms", m1);
	snprintf(vs, sizeof(vs), "%.2fx no record; record of %ld pages, made in %d servings", m1 / m0,
		 (dir_bytes(wsdir) - 16) / 8, servings);
	row("wset", "with the record of earlier servings", v, vs);
	snprintf(v, sizeof(v), "%.1f ms", m2);
	snprintf(vs, sizeof(vs), "%.2fx no record", m2 / m0);
	row("wset", "with the record, the second half of the pages read first", v, vs);
	goal("working-set pass with the record (x without)", m1 / m0, 0.3, true, NULL);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", wsdir);
	if (system(cmd)) {
	}
	munmap((void *)pass_ns, sizeof(*pass_ns));
	free(order);
}
