/*
 * 5. Scale: a handed-over parent forks K children (1, 10, 100, 1000), each
 * faulting its own pages. The children take turns (a futex token), so the
 * figure is what one fault costs while the daemon holds K+1 processes, not
 * a run queue of K faulters on two cores. Daemon CPU and memory come from
 * /proc of the daemon.
 */
#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "tserve.h"

#define MAXK	1000

struct sshm {
	volatile int ready, go, fail;
	atomic_int done;
	uint32_t turn[MAXK + 1];	/* child i runs when turn[i] is 1 */
	uint64_t lat[];
};

static struct sshm *ss;
static uint64_t *pages;

static void futex_wait(uint32_t *w, uint32_t val)
{
	syscall(SYS_futex, w, FUTEX_WAIT, val, NULL, NULL, 0);
}

static void futex_wake(uint32_t *w)
{
	syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Child I of the served parent: wait for the token, fault F pages, pass it on, wait to exit. */
static void __attribute__((noreturn)) child(int i, int f, int exit_fd)
{
	char b;

	while (!__atomic_load_n(&ss->turn[i], __ATOMIC_ACQUIRE))
		futex_wait(&ss->turn[i], 0);
	for (int j = 0; j < f; j++) {
		uint64_t a = B_BASE + pages[(size_t)i * f + j] * B_PAGE, t0 = b_now(), w;

		w = *(volatile uint64_t *)(uintptr_t)a;
		ss->lat[(size_t)i * f + j] = b_now() - t0;
		if (w != ts_word(B_SEED, a))
			ss->fail = 2;
	}
	__atomic_store_n(&ss->turn[i + 1], 1, __ATOMIC_RELEASE);
	futex_wake(&ss->turn[i + 1]);
	atomic_fetch_add(&ss->done, 1);
	if (read(exit_fd, &b, 1) < 0) {
	}
	_exit(0);
}

/* The served parent: hand over, fork K children, reap them. */
static int parent(const struct bconf *c, const char *sock, int k, int f, int exit_fd)
{
	char why[512];
	int uffd, failed = 0;

	b_pin_self(0);
	if (b_map_area(c->big) < 0 || (uffd = b_uffd(B_FEATURES, true)) < 0)
		return 10;
	if (b_handover(sock, c->bigimg, uffd, why, sizeof(why)) < 0) {
		fprintf(stderr, "hand-over: %s\n", why);
		return 11;
	}
	close(uffd);
	ss->ready = 1;
	while (!ss->go)
		usleep(100);
	for (int i = 0; i < k; i++) {
		pid_t p = fork();

		if (p < 0) {
			ss->fail = 1;
			return 12;
		}
		if (p == 0)
			child(i, f, exit_fd);
	}
	__atomic_store_n(&ss->turn[0], 1, __ATOMIC_RELEASE);
	futex_wake(&ss->turn[0]);
	for (int i = 0; i < k; i++) {
		int st;

		if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
			failed = 1;
	}
	return failed ? 13 : 0;
}

struct sres {
	uint64_t p50, p99;
	double cpu_us;		/* daemon CPU per child: its fork event and its faults */
	double cpu_fault_us;	/* the same per fault */
	int f;
	double rss_kib, anon_kib;	/* daemon growth per child */
	double pte_kib;			/* daemon page tables at the end (VmPTE) */
	double wall_ms;
	int targets;
};

/* One daemon, one parent, K children; their samples are appended at OUT. */
static void one(const struct bconf *c, int k, struct sres *r, uint64_t *out)
{
	const char *args[] = { "--no-fill", NULL };
	int f = c->scale_faults > 2000 / k ? c->scale_faults : 2000 / k;
	long rss0, anon0, rss1, anon1;
	uint64_t cpu0, cpu1, t0, limit;
	double wall;
	struct bdaemon d;
	struct ts_daemon td;
	struct ts_status s;
	int ex[2], st;
	pid_t pid;

	memset(ss, 0, sizeof(*ss));
	bd_start(&d, c, args);
	b_pin_pid(d.pid, 1);
	if (pipe(ex) < 0)
		b_die("pipe");
	pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(ex[1]);
		_exit(parent(c, d.sock, k, f, ex[0]));
	}
	close(ex[0]);
	limit = b_now() + 60000000000ull;
	while (!ss->ready && b_now() < limit)
		usleep(100);
	usleep(20000);	/* let the daemon settle after the hand-over */
	cpu0 = b_cpu_ns(d.pid);
	b_rss_kib(d.pid, &rss0, &anon0);
	t0 = b_now();
	ss->go = 1;
	while (atomic_load(&ss->done) < k && !ss->fail && b_now() < limit)
		usleep(200);
	wall = (b_now() - t0) / 1e6;
	if (ss->fail == 2)
		b_die("scale %d: a child read a word that is not the image's", k);
	if (atomic_load(&ss->done) < k)
		b_die("scale %d: only %d children finished; log in %s", k, atomic_load(&ss->done),
		      d.log);
	usleep(20000);
	cpu1 = b_cpu_ns(d.pid);
	b_rss_kib(d.pid, &rss1, &anon1);
	r->pte_kib += b_pte_kib(d.pid);
	memset(&td, 0, sizeof(td));
	snprintf(td.sock, sizeof(td.sock), "%s", d.sock);
	r->targets = -1;
	if (ts_status_get(&td, &s) == 0)
		r->targets = (int)s.tot->targets;
	ts_status_free(&s);
	close(ex[1]);
	waitpid(pid, &st, 0);
	bd_stop(&d);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		b_die("scale %d: the served parent failed (wait status %d)", k, st);
	memcpy(out, ss->lat, (size_t)k * f * sizeof(*out));
	r->cpu_us += (cpu1 - cpu0) / 1e3 / k;
	r->cpu_fault_us += (cpu1 - cpu0) / 1e3 / ((double)k * f);
	r->f = f;
	r->rss_kib += (double)(rss1 - rss0) / k;
	r->anon_kib += (double)(anon1 - anon0) / k;
	r->wall_ms += wall;
}

void bench_scale(const struct bconf *c)
{
	static const int ks[] = { 1, 10, 100, 1000 };
	uint64_t np = c->big / B_PAGE;
	size_t need = 0;
	struct sres r[4];
	char what[128], v[64], vs[128];
	double gib = (double)c->big / (1ull << 30), worst_anon = 0;
	int nk = 0, rounds = c->quick ? 2 : 3;
	uint64_t *samp[4];

	for (int i = 0; i < 4 && ks[i] <= c->max_procs; i++) {
		int f = c->scale_faults > 2000 / ks[i] ? c->scale_faults : 2000 / ks[i];

		if ((size_t)ks[i] * f > need)
			need = (size_t)ks[i] * f;
		nk++;
	}
	if (need > np)
		b_die("scale: %zu pages wanted, the image has %llu", need, (unsigned long long)np);
	pages = malloc(np * sizeof(*pages));
	ss = b_shared(sizeof(*ss) + need * sizeof(uint64_t));
	if (!pages)
		b_die("out of memory");
	for (uint64_t i = 0; i < np; i++)
		pages[i] = i;
	b_shuffle(pages, np, 7);
	printf("\n[5] scale: a served parent (%llu MiB lazy) forks K children that fault in turn;\n"
	       "    daemon on CPU 1, processes on CPU 0, fault window 64K, no fill; %d rounds pooled\n",
	       (unsigned long long)(c->big >> 20), rounds);
	/* Rounds over every K, samples pooled: the VM's wake-up cost drifts. */
	memset(r, 0, sizeof(r));
	for (int i = 0; i < nk; i++) {
		int f = c->scale_faults > 2000 / ks[i] ? c->scale_faults : 2000 / ks[i];

		r[i].f = f;
		samp[i] = malloc((size_t)rounds * ks[i] * f * sizeof(uint64_t));
		if (!samp[i])
			b_die("out of memory");
	}
	for (int n = 0; n < rounds; n++)
		for (int i = 0; i < nk; i++)
			one(c, ks[i], &r[i], samp[i] + (size_t)n * ks[i] * r[i].f);
	for (int i = 0; i < nk; i++) {
		size_t ns = (size_t)rounds * ks[i] * r[i].f;

		r[i].p50 = b_pct(samp[i], ns, 50);
		r[i].p99 = b_pct(samp[i], ns, 99);
		r[i].cpu_us /= rounds;
		r[i].cpu_fault_us /= rounds;
		r[i].rss_kib /= rounds;
		r[i].anon_kib /= rounds;
		r[i].pte_kib /= rounds;
		r[i].wall_ms /= rounds;
		free(samp[i]);
	}
	for (int i = 0; i < nk; i++) {
		snprintf(what, sizeof(what), "K=%d: fault p50 / p99 (%d faults each; %d targets served)",
			 ks[i], r[i].f, r[i].targets);
		snprintf(v, sizeof(v), "%.1f / %.1f us", r[i].p50 / 1e3, r[i].p99 / 1e3);
		snprintf(vs, sizeof(vs), "p99 %.2fx K=1", (double)r[i].p99 / r[0].p99);
		row("scale", what, v, i ? vs : "baseline");
		snprintf(what, sizeof(what), "K=%d: daemon CPU per child / per fault (forks + faults)",
			 ks[i]);
		snprintf(v, sizeof(v), "%.0f / %.1f us", r[i].cpu_us, r[i].cpu_fault_us);
		snprintf(vs, sizeof(vs), "per fault %.2fx K=1; phase wall %.0f ms",
			 r[i].cpu_fault_us / r[0].cpu_fault_us, r[i].wall_ms);
		row("scale", what, v, vs);
		snprintf(what, sizeof(what), "K=%d: daemon RSS / RssAnon growth per child", ks[i]);
		snprintf(v, sizeof(v), "%.1f / %.1f KiB", r[i].rss_kib, r[i].anon_kib);
		snprintf(vs, sizeof(vs), "%.1f KiB anon per served GiB", r[i].anon_kib / gib);
		row("scale", what, v, vs);
		/*
		 * Page tables are per image, not per child: the daemon maps the
		 * image once (prefault: 2 MiB per GiB when all of it is cached).
		 */
		snprintf(what, sizeof(what), "K=%d: daemon page tables (VmPTE) at the end", ks[i]);
		snprintf(v, sizeof(v), "%.0f KiB", r[i].pte_kib);
		snprintf(vs, sizeof(vs), "%.0f KiB per GiB of image", r[i].pte_kib / gib);
		row("scale", what, v, vs);
		if (ks[i] >= 100 && r[i].anon_kib / gib > worst_anon)
			worst_anon = r[i].anon_kib / gib;
	}
	if (nk == 4) {
		goal("1000 processes: fault p99 (x single-process p99)", (double)r[3].p99 / r[0].p99,
		     2.0, true, NULL);
		goal("daemon memory per served GiB, KiB (K>=100, RssAnon)", worst_anon, 64, true,
		     "page cache of the images not counted");
	}
	free(pages);
	munmap(ss, sizeof(*ss) + need * sizeof(uint64_t));
}
