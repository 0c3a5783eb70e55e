/*
 * 6. Huge pages back: a TLB-heavy loop of random reads over the big area,
 * in a process that asked for huge pages (MADV_HUGEPAGE) and was served
 * lazily, once the daemon has collapsed it (and with --no-collapse), against
 * the same loop in a process that was never checkpointed and got its huge
 * pages from the kernel at its first touches.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

struct thp_shm {
	uint64_t ns;		/* the timed loop */
	long huge_kib;		/* AnonHugePages of the area when it ran */
	uint64_t sum;		/* every word, read before the loop */
};

static struct thp_shm *ts;

/* AnonHugePages of the VMA holding ADDR, in KiB (0 if none). */
static long huge_kib(uint64_t addr)
{
	char line[256];
	bool in = false;
	long kib = 0;
	FILE *f = fopen("/proc/self/smaps", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long s, e;

		if (sscanf(line, "%llx-%llx ", &s, &e) == 2) {
			in = s <= addr && addr < e;
			continue;
		}
		if (in && sscanf(line, "AnonHugePages: %ld kB", &kib) == 1)
			break;
	}
	fclose(f);
	return kib;
}

static uint64_t __attribute__((noinline)) sum_words(const uint64_t *p, uint64_t len)
{
	uint64_t s = 0;

	for (uint64_t i = 0; i < len / 8; i++)
		s += p[i];
	return s;
}

/*
 * N reads of random words of the LEN bytes at P (LEN a power of two), each
 * address depending on the word read before, so that every TLB miss is
 * waited for (independent reads overlap and hide it); the time in ns.
 */
static uint64_t random_reads(const uint64_t *p, uint64_t len, long n)
{
	uint64_t x = 0x9e3779b97f4a7c15ull, mask = len / 8 - 1, s = 0, t0 = b_now();

	for (long i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		s = p[(x ^ s) & mask];
	}
	__asm__ volatile("" : : "r"(s));
	return b_now() - t0;
}

static long nreads(const struct bconf *c)
{
	return c->quick ? 1000000 : 4000000;
}

/* Never checkpointed: its own copy of the image, huge pages from the kernel. */
static int native(const struct bconf *c)
{
	char path[400];
	uint8_t *a = (uint8_t *)(uintptr_t)B_BASE;
	int fd;

	if (b_map_area(c->big) < 0 || madvise(a, c->big, MADV_HUGEPAGE))
		return 10;
	snprintf(path, sizeof(path), "%s/pages-1.img", c->bigimg);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	for (uint64_t off = 0; fd >= 0 && off < c->big;) {
		ssize_t n = pread(fd, a + off, c->big - off, (off_t)off);

		if (n <= 0)
			return 11;
		off += (uint64_t)n;
	}
	if (fd < 0)
		return 11;
	close(fd);
	ts->sum = sum_words((const uint64_t *)a, c->big);
	ts->huge_kib = huge_kib(B_BASE);
	ts->ns = random_reads((const uint64_t *)a, c->big, nreads(c));
	return 0;
}

/* Served lazily: read everything (so it is served through), wait for the collapse if WAIT. */
static int lazy(const struct bconf *c, const char *sock, bool wait)
{
	const uint64_t *a = (const uint64_t *)(uintptr_t)B_BASE;
	char why[512];
	int uffd, waited = 0;

	if (b_map_area(c->big) < 0 || madvise((void *)a, c->big, MADV_HUGEPAGE))
		return 10;
	uffd = b_uffd(B_FEATURES, true);
	if (uffd < 0)
		return 11;
	if (b_handover(sock, c->bigimg, uffd, why, sizeof(why)) < 0) {
		fprintf(stderr, "hand-over: %s\n", why);
		return 12;
	}
	close(uffd);
	ts->sum = sum_words(a, c->big);
	/*
	 * The collapse runs once the process is fully served: wait for all of
	 * it, or for the count to stand still for 200 ms (a block the kernel
	 * had no huge page for), at most 20 s.
	 */
	for (long last = -1, still = 0, k; wait && still < 20 && waited++ < 2000; last = k) {
		k = huge_kib(B_BASE);
		if (k >= (long)(c->big >> 10))
			break;
		still = k == last && k > 0 ? still + 1 : 0;
		usleep(10000);
	}
	ts->huge_kib = huge_kib(B_BASE);
	ts->ns = random_reads(a, c->big, nreads(c));
	return 0;
}

/* One case in a child that dies with us: 0 native, 1 lazy + collapse, 2 lazy --no-collapse. */
static void run(const struct bconf *c, int kind, double *ms, long *kib)
{
	static const char *nocollapse[] = { "--no-collapse", NULL };
	uint64_t want = bimg_sum(c->big);
	struct bdaemon d;
	pid_t pid;
	int st;

	if (kind)
		bd_start(&d, c, kind == 2 ? nocollapse : NULL);
	memset(ts, 0, sizeof(*ts));
	pid = fork();
	if (pid < 0)
		b_die("fork");
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		b_pin_self(0);
		_exit(kind ? lazy(c, d.sock, kind == 1) : native(c));
	}
	waitpid(pid, &st, 0);
	if (kind)
		bd_stop(&d);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		b_die("huge pages case %d failed (wait status %d)", kind, st);
	if (ts->sum != want)
		b_die("huge pages case %d read wrong data: sum %llx, want %llx", kind,
		      (unsigned long long)ts->sum, (unsigned long long)want);
	*ms = ts->ns / 1e6;
	*kib = ts->huge_kib;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

void bench_thp(const struct bconf *c)
{
	int reps = c->quick ? 3 : 5;
	double t[3][8];
	long kib[3] = { 0 };
	char v[64], vs[128];
	static const char *what[3] = {
		"never checkpointed, MADV_HUGEPAGE (huge pages from the kernel)",
		"served lazily, then collapsed by the daemon (default options)",
		"served lazily, --no-collapse (4 KiB pages)",
	};

	if (!b_thp_usable()) {
		note("transparent huge pages are off on this machine: the huge-page figures are left out");
		return;
	}
	ts = b_shared(sizeof(*ts));
	printf("\n[6] huge pages: %ld random 8-byte reads over %llu MiB after a full read, CPU 0, median of %d\n",
	       nreads(c), (unsigned long long)(c->big >> 20), reps);
	for (int r = 0; r < reps; r++)
		for (int k = 0; k < 3; k++)
			run(c, k, &t[k][r], &kib[k]);
	for (int k = 0; k < 3; k++)
		qsort(t[k], reps, sizeof(double), cmp_d);
	for (int k = 0; k < 3; k++) {
		double m = t[k][reps / 2];

		snprintf(v, sizeof(v), "%.1f ms", m);
		if (k)
			snprintf(vs, sizeof(vs), "%.2fx native speed; %ld MiB huge", t[0][reps / 2] / m,
				 kib[k] >> 10);
		else
			snprintf(vs, sizeof(vs), "baseline; %ld MiB huge", kib[k] >> 10);
		row("thp", what[k], v, vs);
	}
	goal("random reads after fill (x never-checkpointed speed)", t[0][reps / 2] / t[1][reps / 2],
	     0.95, false, NULL);
	munmap(ts, sizeof(*ts));
}
