/*
 * 1. Fault service latency: first touches of random pages, timed one by one,
 * on plain anonymous memory, under the floor handler (a process that only
 * reads the message and UFFDIO_COPYs a buffer) and under uffd-manager; the
 * handler on the faulter's core and on the other core. The daemon maps the
 * images' cached pages ahead (prefault) off the loop; right after a hand-over
 * that is still going on, so it is measured both ways: touching at once,
 * and once the daemon's page tables say the image is mapped.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "tserve.h"

#define WARMUP	200

enum lkind { L_ANON, L_FLOOR_BUF, L_FLOOR_FILE, L_FLOOR_POP, L_FLOOR_LOOP, L_FLOOR_SPIN,
	     L_MANAGER };

struct lcase {
	enum lkind kind;
	int handler_cpu;	/* floor handler or daemon; the faulter is on CPU 0 */
	const char *sock;	/* L_MANAGER */
	pid_t daemon;		/* L_MANAGER with SETTLE */
	bool settle;		/* touch only once the daemon has mapped the image */
};

static uint64_t *pages;		/* page indices, in touch order */
static uint64_t *lat;		/* shared: ns per touch */

/*
 * Touch the pages in order, timing each; in the faulter. With IMAGE the
 * word read must be the image's (else a count of wrong words is returned).
 */
static long touch_all(long n, bool image)
{
	long bad = 0;

	for (long i = 0; i < n; i++) {
		uint64_t a = B_BASE + pages[i] * B_PAGE, t0 = b_now(), w;

		w = *(volatile uint64_t *)(uintptr_t)a;
		lat[i] = b_now() - t0;
		if (image && w != ts_word(B_SEED, a))
			bad++;
	}
	return bad;
}

/*
 * The floor: read a fault, copy one page from BUF (or the image mapping),
 * forever. LOOP shapes it like the daemon's loop: epoll_wait, then reads
 * until EAGAIN, then the copy. SPIN never sleeps: it polls a non-blocking
 * read (the spinning floor; cross core only, where the faulter has its own CPU).
 */
static void __attribute__((noreturn)) floor_handler(int uffd, const uint8_t *buf,
						    const uint8_t *img, bool loop, bool spin)
{
	struct epoll_event ee = { .events = EPOLLIN };
	int ep = -1;

	if (spin && fcntl(uffd, F_SETFL, fcntl(uffd, F_GETFL) | O_NONBLOCK) < 0)
		_exit(3);
	if (loop) {
		ep = epoll_create1(EPOLL_CLOEXEC);
		if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, uffd, &ee) < 0 ||
		    fcntl(uffd, F_SETFL, fcntl(uffd, F_GETFL) | O_NONBLOCK) < 0)
			_exit(3);
	}
	for (;;) {
		struct uffd_msg m[16];
		ssize_t n;

		if (loop) {
			struct uffd_msg more[16];

			if (epoll_wait(ep, &ee, 1, -1) < 0)
				continue;
			n = read(uffd, m, sizeof(m));
			if (read(uffd, more, sizeof(more)) > 0)
				_exit(4);	/* one faulting thread: never more than one message */
		} else {
			while ((n = read(uffd, m, sizeof(m[0]))) < 0 && spin && errno == EAGAIN)
				;
		}
		if (n < (ssize_t)sizeof(m[0])) {
			if (n < 0 && errno != EINTR && errno != EAGAIN)
				_exit(1);
			continue;
		}
		if (m[0].event != UFFD_EVENT_PAGEFAULT)
			continue;
		struct uffdio_copy cp = { 0 };

		cp.dst = m[0].arg.pagefault.address & ~(B_PAGE - 1);
		cp.src = (uintptr_t)(img ? img + (cp.dst - B_BASE) : buf);
		cp.len = B_PAGE;
		ioctl(uffd, UFFDIO_COPY, &cp);
	}
}

/*
 * Wait until PID's page tables have grown from BASE_KIB (VmPTE before the
 * hand-over) by enough to map 95% of LEN bytes of image (its prefault is
 * done), or stop growing for 200 ms (a daemon that does not prefault),
 * 5 s at most. Counted from BASE_KIB: the daemon's own page tables (heap,
 * stacks, libraries) once made the wait end with a fifth of the image
 * still unmapped, read by pread at its first fault.
 */
static void wait_prefaulted(pid_t pid, uint64_t len, long base_kib)
{
	long want = base_kib + (long)(len / B_PAGE * 8 / 1024) * 95 / 100, last = -1, pte;
	int still = 0;

	for (int i = 0; i < 5000 && (pte = b_pte_kib(pid)) < want && still < 200; i++) {
		still = pte == last ? still + 1 : 0;
		last = pte;
		usleep(1000);
	}
}

/* The faulter process for one case; returns its exit code. */
static int faulter(const struct bconf *c, const struct lcase *lc, long n)
{
	char why[512];
	int uffd;
	long bad;
	pid_t h;

	b_pin_self(0);
	if (b_map_area(c->big) < 0)
		return 10;
	if (lc->kind == L_ANON)
		return touch_all(n, false) ? 14 : 0;
	if (lc->kind == L_MANAGER) {
		long base_kib = b_pte_kib(lc->daemon);

		uffd = b_uffd(B_FEATURES, true);
		if (uffd < 0 || b_handover(lc->sock, c->bigimg, uffd, why, sizeof(why)) < 0) {
			fprintf(stderr, "hand-over: %s\n", why);
			return 11;
		}
		close(uffd);
		if (lc->settle)
			wait_prefaulted(lc->daemon, c->big, base_kib < 0 ? 0 : base_kib);
		return touch_all(n, true) ? 14 : 0;
	}
	/* Floor: no fork event (features off), so the handler can be our own child. */
	uffd = b_uffd(UFFD_FEATURE_THREAD_ID, false);
	if (uffd < 0 || b_register(uffd, B_BASE, c->big) < 0)
		return 12;
	h = fork();
	if (h < 0)
		return 13;
	if (h == 0) {
		static uint8_t buf[B_PAGE] __attribute__((aligned(4096)));
		const uint8_t *img = NULL;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		b_pin_self(lc->handler_cpu);
		memset(buf, 0x5a, sizeof(buf));
		if (lc->kind != L_FLOOR_BUF) {
			char path[400];
			int fd;

			snprintf(path, sizeof(path), "%s/pages-1.img", c->bigimg);
			fd = open(path, O_RDONLY | O_CLOEXEC);
			img = mmap(NULL, c->big, PROT_READ, MAP_SHARED, fd, 0);
			if (fd < 0 || img == MAP_FAILED)
				_exit(2);
			/* Before its first read: the faulter's first touch (warm-up) waits for it. */
			if (lc->kind == L_FLOOR_POP &&
			    madvise((void *)img, c->big, MADV_POPULATE_READ) < 0)
				_exit(2);
		}
		floor_handler(uffd, buf, img, lc->kind == L_FLOOR_LOOP, lc->kind == L_FLOOR_SPIN);
	}
	bad = touch_all(n, lc->kind != L_FLOOR_BUF);
	kill(h, SIGKILL);
	waitpid(h, NULL, 0);
	return bad ? 14 : 0;
}

/* Run one case: N timed touches after the warm-up, appended to OUT. */
static void run_case(const struct bconf *c, const struct lcase *lc, long n, uint64_t *out)
{
	int st;
	pid_t pid = fork();

	if (pid < 0)
		b_die("fork");
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		_exit(faulter(c, lc, n + WARMUP));
	}
	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		b_die("latency case %d failed (wait status %d%s)", lc->kind, st,
		      WIFEXITED(st) && WEXITSTATUS(st) == 14 ? ": it read words that are not the image's" : "");
	memcpy(out, lat + WARMUP, n * sizeof(*out));
}

/* Run a case of KIND with no daemon, the handler on CPU. */
static void floor_case(const struct bconf *c, enum lkind kind, int cpu, long n, uint64_t *out)
{
	struct lcase lc = { .kind = kind, .handler_cpu = cpu };

	run_case(c, &lc, n, out);
}

/*
 * CPU time PID has used, in ns: the schedstat of each of its threads (the
 * loop's, and the loader's and prefault's beside it), or 0.
 */
static uint64_t cpu_ns(pid_t pid)
{
	unsigned long long v, sum = 0;
	char path[300];
	struct dirent *e;
	DIR *dir;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	if (!(dir = opendir(path)))
		return 0;
	while ((e = readdir(dir))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/schedstat", (int)pid, e->d_name);
		if (!(f = fopen(path, "r")))
			continue;
		if (fscanf(f, "%llu", &v) == 1)
			sum += v;
		fclose(f);
	}
	closedir(dir);
	return sum;
}

/*
 * A daemon serving faults only, with up to two EXTRA options, pinned to CPU
 * (-1: free); adds the CPU time it used to *USED. SETTLE: the touches begin
 * once it has mapped the image (wait_prefaulted).
 */
static void manager_case(const struct bconf *c, const char *x1, const char *x2, int cpu, long n,
			 bool settle, uint64_t *out, uint64_t *used)
{
	const char *args[] = { "--no-fill", x1, x2, NULL };
	struct bdaemon d;
	struct lcase lc = { .kind = L_MANAGER, .handler_cpu = cpu, .settle = settle };

	bd_start(&d, c, args);
	b_pin_pid(d.pid, cpu);
	lc.sock = d.sock;
	lc.daemon = d.pid;
	run_case(c, &lc, n, out);
	*used += cpu_ns(d.pid);
	bd_stop(&d);
}

/* Median and p99 of the N samples in V, in ns. */
struct mp {
	uint64_t med, p99;
};

static struct mp stats(uint64_t *v, size_t n)
{
	struct mp r;

	r.med = b_pct(v, n, 50);
	r.p99 = b_pct(v, n, 99);
	return r;
}

static void fmt_us(char *buf, size_t len, struct mp m)
{
	snprintf(buf, len, "%.2f / %.2f us", m.med / 1e3, m.p99 / 1e3);
}

/*
 * UFFD_BENCH_LATENCY_CASES=name,...: run only these cases (for a profiler
 * attached to the daemon, or a quick A/B of one row); the others print 0.
 * Names: anon, floor, ffile, fpop, floop (each with -same or -cross), mgr-same,
 * mgr-cross, settled-same, settled-cross, spin, nospin, nospin-same, win.
 */
static bool wanted(const char *name, int x)
{
	const char *l = getenv("UFFD_BENCH_LATENCY_CASES"), *p;
	char full[32];
	size_t n;

	if (!l || !*l)
		return true;
	snprintf(full, sizeof(full), x < 0 ? "%s" : "%s-%s", name, x ? "cross" : "same");
	n = strlen(full);
	for (p = l; (p = strstr(p, full)); p += n)
		if ((p == l || p[-1] == ',') && (p[n] == ',' || !p[n]))
			return true;
	return false;
}

enum { S_ANON, S_FLOOR, S_FFILE = S_FLOOR + 2, S_FPOP = S_FFILE + 2, S_FLOOP = S_FPOP + 2,
       S_MGR = S_FLOOP + 2, S_SETTLED = S_MGR + 2, S_WIN = S_SETTLED + 2, S_SPIN, S_NOSPIN, S_NOSPIN_SAME, S_N };

void bench_latency(const struct bconf *c)
{
	uint64_t np = c->big / B_PAGE;
	int rounds = c->quick ? 4 : 10;
	long per = c->nfaults / rounds, total = per * rounds;
	uint64_t *samp[S_N];
	struct mp m[S_N];
	char v[64], vs[128], what[128];
	static const char *place[2] = { "same core", "cross core" };
	/* daemon CPU: default same/cross core, --spin 0 cross core, fixed, settled same/cross, --spin 0 same core */
	uint64_t dcpu[7] = { 0 };
	double per_fault;

	pages = malloc(np * sizeof(*pages));
	lat = b_shared((per + WARMUP) * sizeof(*lat));
	if (!pages)
		b_die("out of memory");
	for (int i = 0; i < S_N; i++)
		if (!(samp[i] = calloc(total, sizeof(uint64_t))))
			b_die("out of memory");
	for (uint64_t i = 0; i < np; i++)
		pages[i] = i;
	b_shuffle(pages, np, 42);

	printf("\n[1] fault service latency: %ld first touches of random 4 KiB pages, faulter on CPU 0;\n"
	       "    %d rounds, each case once per round, samples pooled (median / p99)\n",
	       total, rounds);
	/* Interleaved rounds: the VM's wake-up costs drift; each case sees the same drift. */
	for (int r = 0; r < rounds; r++) {
		long o = r * per;

		if (wanted("anon", -1))
			floor_case(c, L_ANON, 0, per, samp[S_ANON] + o);
		for (int x = 0; x < 2; x++) {
			if (wanted("floor", x))
				floor_case(c, L_FLOOR_BUF, x, per, samp[S_FLOOR + x] + o);
			if (wanted("ffile", x))
				floor_case(c, L_FLOOR_FILE, x, per, samp[S_FFILE + x] + o);
			if (wanted("fpop", x))
				floor_case(c, L_FLOOR_POP, x, per, samp[S_FPOP + x] + o);
			if (wanted("floop", x))
				floor_case(c, L_FLOOR_LOOP, x, per, samp[S_FLOOP + x] + o);
			if (wanted("mgr", x))
				manager_case(c, NULL, NULL, x, per, false, samp[S_MGR + x] + o, &dcpu[x]);
			if (wanted("settled", x))
				manager_case(c, NULL, NULL, x, per, true, samp[S_SETTLED + x] + o,
					     &dcpu[4 + x]);
		}
		if (wanted("spin", -1))
			floor_case(c, L_FLOOR_SPIN, 1, per, samp[S_SPIN] + o);
		if (wanted("nospin", -1))
			manager_case(c, "--spin", "0", 1, per, false, samp[S_NOSPIN] + o, &dcpu[2]);
		if (wanted("nospin-same", -1))
			manager_case(c, "--spin", "0", 0, per, false, samp[S_NOSPIN_SAME] + o, &dcpu[6]);
		if (wanted("win", -1))
			manager_case(c, "--fixed-window", NULL, -1, per, false, samp[S_WIN] + o, &dcpu[3]);
	}
	for (int i = 0; i < S_N; i++)
		m[i] = stats(samp[i], total);

	fmt_us(v, sizeof(v), m[S_ANON]);
	row("latency", "(a) plain anonymous memory, read touch", v, "baseline");
	for (int x = 0; x < 2; x++) {
		fmt_us(v, sizeof(v), m[S_FLOOR + x]);
		snprintf(what, sizeof(what), "(b) floor: read + UFFDIO_COPY of a buffer, %s", place[x]);
		row("latency", what, v, "floor");
		fmt_us(v, sizeof(v), m[S_FFILE + x]);
		snprintf(what, sizeof(what), "    floor copying from the image mmap, %s", place[x]);
		snprintf(vs, sizeof(vs), "%.2fx / %.2fx floor", (double)m[S_FFILE + x].med / m[S_FLOOR + x].med,
			 (double)m[S_FFILE + x].p99 / m[S_FLOOR + x].p99);
		row("latency", what, v, vs);
		fmt_us(v, sizeof(v), m[S_FPOP + x]);
		snprintf(what, sizeof(what), "    floor copying from the image mmap, pre-faulted (MADV_POPULATE_READ), %s",
			 place[x]);
		snprintf(vs, sizeof(vs), "%.2fx / %.2fx floor", (double)m[S_FPOP + x].med / m[S_FLOOR + x].med,
			 (double)m[S_FPOP + x].p99 / m[S_FLOOR + x].p99);
		row("latency", what, v, vs);
		fmt_us(v, sizeof(v), m[S_FLOOP + x]);
		snprintf(what, sizeof(what), "    the same + epoll_wait + read to EAGAIN (daemon-shaped), %s",
			 place[x]);
		snprintf(vs, sizeof(vs), "%.2fx / %.2fx floor", (double)m[S_FLOOP + x].med / m[S_FLOOR + x].med,
			 (double)m[S_FLOOP + x].p99 / m[S_FLOOR + x].p99);
		row("latency", what, v, vs);
		fmt_us(v, sizeof(v), m[S_MGR + x]);
		snprintf(what, sizeof(what), "uffd-manager, default options (adaptive window), %s", place[x]);
		snprintf(vs, sizeof(vs), "%.2fx / %.2fx floor (%.2fx / %.2fx daemon-shaped)",
			 (double)m[S_MGR + x].med / m[S_FLOOR + x].med,
			 (double)m[S_MGR + x].p99 / m[S_FLOOR + x].p99,
			 (double)m[S_MGR + x].med / m[S_FLOOP + x].med,
			 (double)m[S_MGR + x].p99 / m[S_FLOOP + x].p99);
		row("latency", what, v, vs);
		fmt_us(v, sizeof(v), m[S_SETTLED + x]);
		snprintf(what, sizeof(what), "uffd-manager, default options, touching once it mapped the image, %s",
			 place[x]);
		snprintf(vs, sizeof(vs), "%.2fx / %.2fx floor (%.2fx / %.2fx pre-faulted floor)",
			 (double)m[S_SETTLED + x].med / m[S_FLOOR + x].med,
			 (double)m[S_SETTLED + x].p99 / m[S_FLOOR + x].p99,
			 (double)m[S_SETTLED + x].med / m[S_FPOP + x].med,
			 (double)m[S_SETTLED + x].p99 / m[S_FPOP + x].p99);
		row("latency", what, v, vs);
	}
	fmt_us(v, sizeof(v), m[S_SPIN]);
	row("latency", "(c) spinning floor: polls a non-blocking read, cross core", v, "spinning floor");
	fmt_us(v, sizeof(v), m[S_MGR + 1]);
	snprintf(vs, sizeof(vs), "%.2fx / %.2fx spinning floor", (double)m[S_MGR + 1].med / m[S_SPIN].med,
		 (double)m[S_MGR + 1].p99 / m[S_SPIN].p99);
	row("latency", "uffd-manager, default options (polls while faults are dense), cross core", v, vs);
	fmt_us(v, sizeof(v), m[S_NOSPIN]);
	snprintf(vs, sizeof(vs), "%.2fx / %.2fx floor", (double)m[S_NOSPIN].med / m[S_FLOOR + 1].med,
		 (double)m[S_NOSPIN].p99 / m[S_FLOOR + 1].p99);
	row("latency", "uffd-manager --spin 0 (always sleeps), cross core", v, vs);
	/* What polling on the faulter's own CPU gains: the default's same-core row against this. */
	fmt_us(v, sizeof(v), m[S_NOSPIN_SAME]);
	snprintf(vs, sizeof(vs), "%.2fx / %.2fx floor", (double)m[S_NOSPIN_SAME].med / m[S_FLOOR].med,
		 (double)m[S_NOSPIN_SAME].p99 / m[S_FLOOR].p99);
	row("latency", "uffd-manager --spin 0 (always sleeps), same core", v, vs);
	per_fault = (double)(total + rounds * WARMUP);
	for (int x = 0; x < 4; x++) {
		static const char *cw[4] = { "default options, same core", "default options, cross core",
					     "--spin 0, cross core", "--spin 0, same core" };
		static const int ci[4] = { 0, 1, 2, 6 };

		snprintf(v, sizeof(v), "%.1f us", dcpu[ci[x]] / per_fault / 1e3);
		snprintf(what, sizeof(what), "    daemon CPU per fault, %s", cw[x]);
		row("latency", what, v, x >= 2 ? "baseline" : "");
	}
	fmt_us(v, sizeof(v), m[S_WIN]);
	snprintf(vs, sizeof(vs), "%.2fx / %.2fx cross-core floor", (double)m[S_WIN].med / m[S_FLOOR + 1].med,
		 (double)m[S_WIN].p99 / m[S_FLOOR + 1].p99);
	row("latency", "uffd-manager --fixed-window (64K), not pinned", v, vs);
	goal("fault latency median, same core (x floor)", (double)m[S_MGR].med / m[S_FLOOR].med, 1.2,
	     true, NULL);
	goal("fault latency median, same core, image mapped (x floor)",
	     (double)m[S_SETTLED].med / m[S_FLOOR].med, 1.2, true, NULL);
	goal("fault latency median, cross core (x floor)",
	     (double)m[S_MGR + 1].med / m[S_FLOOR + 1].med, 1.2, true, NULL);
	goal("fault latency median, cross core (x spinning floor)",
	     (double)m[S_MGR + 1].med / m[S_SPIN].med, 1.1, true, NULL);
	goal("fault latency p99, same core (x floor)", (double)m[S_MGR].p99 / m[S_FLOOR].p99, 1.2,
	     true, NULL);
	goal("fault latency p99, cross core (x floor)",
	     (double)m[S_MGR + 1].p99 / m[S_FLOOR + 1].p99, 1.2, true, NULL);
	for (int i = 0; i < S_N; i++)
		free(samp[i]);
	free(pages);
	munmap(lat, (per + WARMUP) * sizeof(*lat));
}
