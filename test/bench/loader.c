/*
 * c. Hand-overs off the loop: a process A reads its pages one a millisecond,
 * each a fault (no fill, a 4K window), timed one by one, while a process B
 * hands over a pagemap of 4M one-page entries (the default cap); against
 * the same reads with no hand-over going on, in the same run. This is the
 * figure test/integration/test_loader.c no longer bounds: the loop's own
 * time around a big load (the hand-off, and B's model applied on the loop).
 */
#include <fcntl.h>
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
#include "imgfix.h"
#include "tserve.h"

#define BIG_BASE	0x100000000000ull	/* B's areas: never touched */
#define B_ENTRIES	4000000u

static uint64_t *lat;		/* shared: ns per fault of A */
static volatile uint64_t *b_ns;	/* shared: B's hand-over, from its start to its answer */

/* Write B's images into DIR: one task whose pagemap has N one-page non-lazy entries. */
static void write_big(const char *dir, unsigned n)
{
	static const struct ts_area small = { B_BASE, B_PAGE, 0 };
	struct fix_pe *pe = calloc(n, sizeof(*pe));
	struct fix_vma vma = { BIG_BASE, BIG_BASE + 2ull * n * B_PAGE };
	int dfd;

	if (!pe)
		b_die("out of memory");
	ts_write_images(dir, B_IMAGE_ID, &small, 1, B_SEED);	/* inventory, pstree */
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		b_die("open %s", dir);
	for (unsigned i = 0; i < n; i++)
		pe[i] = (struct fix_pe){ BIG_BASE + 2ull * i * B_PAGE, 1, PE_PRESENT, 0 };
	fix_write_mm(dfd, B_IMAGE_ID, &vma, 1);
	fix_write_pagemap(dfd, B_IMAGE_ID, 1, pe, n);
	fix_truncate(dfd, "pages-1.img", (uint64_t)n * B_PAGE);	/* sparse: never read */
	close(dfd);
	free(pe);
}

/* A: hand over, say so on READY, wait for GO, then fault NP pages one a millisecond. */
static int reader(const char *sock, const char *imgdir, uint64_t np, int ready, int go)
{
	char why[512], b;
	long bad = 0;
	int uffd;

	b_pin_self(0);
	if (b_map_area(np * B_PAGE) < 0)
		return 10;
	uffd = b_uffd(B_FEATURES, true);
	if (uffd < 0)
		return 11;
	if (b_handover(sock, imgdir, uffd, why, sizeof(why)) < 0) {
		fprintf(stderr, "A's hand-over: %s\n", why);
		return 12;
	}
	close(uffd);
	if (write(ready, "R", 1) != 1 || read(go, &b, 1) != 1)
		return 13;
	for (uint64_t i = 0; i < np; i++) {
		uint64_t a = B_BASE + i * B_PAGE, t0 = b_now();

		bad += *(volatile uint64_t *)(uintptr_t)a != ts_word(B_SEED, a);
		lat[i] = b_now() - t0;
		usleep(1000);
	}
	return bad ? 14 : 0;
}

/* B: hand over the big images; the time to the answer goes to b_ns. */
static int handing(const char *sock, const char *imgdir)
{
	char why[512];
	uint64_t t0 = b_now();
	int uffd = b_uffd(B_FEATURES, true);

	if (uffd < 0)
		return 11;
	if (b_handover(sock, imgdir, uffd, why, sizeof(why)) < 0) {
		fprintf(stderr, "B's hand-over: %s\n", why);
		return 12;
	}
	*b_ns = b_now() - t0;
	return 0;
}

static pid_t child(void)
{
	pid_t pid = fork();

	if (pid < 0)
		b_die("fork");
	if (pid == 0)
		prctl(PR_SET_PDEATHSIG, SIGKILL);
	return pid;
}

static void reap(pid_t pid, const char *who)
{
	int st;

	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		b_die("%s failed (wait status %d%s)", who, st,
		      WIFEXITED(st) && WEXITSTATUS(st) == 14 ? ": it read words that are not the image's" : "");
}

/* One run: A's NP faults, with B handing over BDIR once A has begun (BDIR NULL: no B). */
static void run(const struct bconf *c, const char *adir, const char *bdir, uint64_t np)
{
	const char *args[] = { "--no-fill", "-w", "4K", NULL };
	struct bdaemon d;
	int ready[2], go[2];
	pid_t a, b = 0;
	char ch;

	bd_start(&d, c, args);
	b_pin_pid(d.pid, 1);
	if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0)
		b_die("pipe");
	a = child();
	if (a == 0)
		_exit(reader(d.sock, adir, np, ready[1], go[0]));
	close(ready[1]);
	close(go[0]);
	if (read(ready[0], &ch, 1) != 1)
		b_die("A's hand-over failed (its stderr says why)");
	if (write(go[1], "G", 1) != 1)
		b_die("go");
	if (bdir) {
		usleep(200 * 1000);	/* A is reading */
		b = child();
		if (b == 0)
			_exit(handing(d.sock, bdir));
	}
	reap(a, "A");
	if (b)
		reap(b, "B's hand-over");
	close(ready[0]);
	close(go[1]);
	bd_stop(&d);
}

/* The 99th percentile and the longest of A's NP faults, in us, into V. */
static void figures(uint64_t np, char *v, size_t len, double *p99, double *max)
{
	uint64_t *s = malloc(np * sizeof(*s));

	if (!s)
		b_die("out of memory");
	memcpy(s, lat, np * sizeof(*s));
	*p99 = b_pct(s, np, 99) / 1e3;
	*max = b_pct(s, np, 100) / 1e3;
	snprintf(v, len, "%.0f / %.0f us", *p99, *max);
	free(s);
}

void bench_loader(const struct bconf *c)
{
	/* Quick: 1.5 s of faults, still longer than B's load (about 1.4 s here). */
	uint64_t np = c->quick ? 1500 : 5000;
	char adir[160], bdir[160], v[64], vs[128], cmd[400];
	double p0, m0, p1, m1;

	lat = b_shared(np * sizeof(*lat));
	b_ns = b_shared(sizeof(*b_ns));
	snprintf(adir, sizeof(adir), "%s/loader-a", c->dir);
	snprintf(bdir, sizeof(bdir), "%s/loader-b", c->dir);
	bimg_write(adir, np * B_PAGE, false);
	write_big(bdir, B_ENTRIES);
	printf("\n[c] hand-overs off the loop: A faults %llu pages one a millisecond; p99 / longest fault\n",
	       (unsigned long long)np);
	run(c, adir, NULL, np);
	figures(np, v, sizeof(v), &p0, &m0);
	row("loader", "A's faults, no hand-over going on", v, "baseline");
	run(c, adir, bdir, np);
	figures(np, v, sizeof(v), &p1, &m1);
	snprintf(vs, sizeof(vs), "%.1fx / %.1fx baseline; B answered in %.0f ms", p1 / p0, m1 / m0,
		 *b_ns / 1e6);
	row("loader", "A's faults while B hands over 4M pagemap entries", v, vs);
	goal("A's longest fault while B hands over 4M entries (ms)", m1 / 1e3, 250, true,
	     "the bound test/integration/test_loader.c had");
	snprintf(cmd, sizeof(cmd), "rm -rf %s %s", adir, bdir);
	if (system(cmd)) {
	}
	munmap(lat, np * sizeof(*lat));
	munmap((void *)b_ns, sizeof(*b_ns));
}
