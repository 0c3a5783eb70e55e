/*
 * 2. Fill throughput: the daemon's background fill of the big image against
 *    raw UFFDIO_COPY from an mmap of the same pages file, with the event
 *    loop alone and with a fill worker beside it; and the latency of faults
 *    on pages not in yet while the fill runs, with one and with two.
 * 3. Touch-everything: a target reads all of it right after hand-over,
 *    against the same loop on resident memory and the eager path (raw copy
 *    of everything, then the loop).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define FILL_CHUNK	(256u << 10)	/* the daemon's default --fill-chunk */
#define EAGER_CHUNK	(4u << 20)

struct shm {
	volatile int ready;
	volatile int fail;
	uint64_t t0, t1, t2, t3;
	uint64_t sum1, sum2;
	long rss0;
};

static struct shm *sh;

/* Map the big image's pages file read-only. */
static const uint8_t *map_pages(const struct bconf *c)
{
	char path[400];
	int fd;
	void *p;

	snprintf(path, sizeof(path), "%s/pages-1.img", c->bigimg);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	p = mmap(NULL, c->big, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	return p == MAP_FAILED ? NULL : p;
}

/* UFFDIO_COPY all of SRC into the registered area, CHUNK at a time. */
static int raw_copy(int uffd, const uint8_t *src, uint64_t len, uint64_t chunk)
{
	for (uint64_t off = 0; off < len;) {
		struct uffdio_copy cp = {
			.dst = B_BASE + off,
			.src = (uintptr_t)(src + off),
			.len = len - off < chunk ? len - off : chunk,
		};

		if (ioctl(uffd, UFFDIO_COPY, &cp) < 0 && errno != EAGAIN)
			return -errno;
		if (cp.copy <= 0)
			return -EIO;
		off += cp.copy;
	}
	return 0;
}

static uint64_t __attribute__((noinline)) sum_all(const uint64_t *p, uint64_t len)
{
	uint64_t s = 0;

	for (uint64_t i = 0; i < len / 8; i++)
		s += p[i];
	return s;
}

/* Fork F as a child that dies with us; return its pid. */
static pid_t spawn(int (*f)(const struct bconf *c, const char *sock), const struct bconf *c,
		   const char *sock)
{
	pid_t pid = fork();

	if (pid < 0)
		b_die("fork");
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		_exit(f(c, sock));
	}
	return pid;
}

static void reap(pid_t pid, const char *what)
{
	int st;

	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		b_die("%s failed (wait status %d)", what, st);
}

/* Send FD over the socket S. */
static int send_fd(int s, int fd)
{
	char b = 'F', cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec io = { &b, 1 };
	struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = cbuf,
			    .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return sendmsg(s, &m, 0) == 1 ? 0 : -1;
}

static int recv_fd(int s)
{
	char b, cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec io = { &b, 1 };
	struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = cbuf,
			    .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm;
	int fd;

	if (recvmsg(s, &m, 0) != 1 || !(cm = CMSG_FIRSTHDR(&m)) || cm->cmsg_type != SCM_RIGHTS)
		return -1;
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

struct raw {
	uint64_t chunk;
	int copier_cpu, target_cpu;	/* -1: not pinned */
	bool populate;			/* pre-fault the source mapping (not timed) */
	bool loop;			/* the target reads everything after the copy */
};

/* The raw target: register the area, give the uffd to the copier, wait, maybe read it all. */
static int raw_target(const struct bconf *c, const struct raw *r, int s)
{
	char b;
	int uffd;

	b_pin_self(r->target_cpu);
	if (b_map_area(c->big) < 0)
		return 20;
	uffd = b_uffd(0, false);
	if (uffd < 0 || b_register(uffd, B_BASE, c->big) < 0 || send_fd(s, uffd) < 0)
		return 21;
	close(uffd);
	if (read(s, &b, 1) != 1)
		return 22;
	if (r->loop) {
		sh->t2 = b_now();
		sh->sum1 = sum_all((const uint64_t *)(uintptr_t)B_BASE, c->big);
		sh->t3 = b_now();
	}
	return 0;
}

/*
 * The raw copier, a process of its own as the daemon is: map the pages file,
 * start the target, UFFDIO_COPY everything into it, timed (t0..t1).
 */
static int raw_copier(const struct bconf *c, const struct raw *r)
{
	const uint8_t *src;
	int sv[2], uffd, st;
	pid_t t;

	b_pin_self(r->copier_cpu);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 10;
	t = fork();
	if (t == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		_exit(raw_target(c, r, sv[1]));
	}
	uffd = recv_fd(sv[0]);
	if (uffd < 0)
		return 11;
	src = map_pages(c);
	if (!src || (r->populate && madvise((void *)src, c->big, MADV_POPULATE_READ) < 0))
		return 12;
	sh->t0 = b_now();
	if (raw_copy(uffd, src, c->big, r->chunk) < 0)
		return 13;
	sh->t1 = b_now();
	if (write(sv[0], "g", 1) != 1)
		return 14;
	waitpid(t, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 15;
}

/* Run a raw session in a child; the times land in *sh. */
static void raw_run(const struct bconf *c, const struct raw *r)
{
	int st;
	pid_t pid;

	memset(sh, 0, sizeof(*sh));
	pid = fork();
	if (pid < 0)
		b_die("fork");
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		_exit(raw_copier(c, r));
	}
	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		b_die("raw copy session failed (wait status %d)", st);
}

/* A target that hands itself over and waits to be filled; on CPU 0. */
static int fill_target(const struct bconf *c, const char *sock)
{
	char why[512];
	int uffd;

	b_pin_self(0);
	if (b_map_area(c->big) < 0)
		return 10;
	uffd = b_uffd(B_FEATURES, true);
	if (uffd < 0)
		return 11;
	sh->rss0 = b_statm_resident(getpid());
	if (b_handover(sock, c->bigimg, uffd, why, sizeof(why)) < 0) {
		fprintf(stderr, "hand-over: %s\n", why);
		return 12;
	}
	sh->t0 = b_now();
	close(uffd);
	sh->ready = 1;
	for (;;)
		pause();
}

/*
 * One manager fill, with up to two EXTRA options, its event loop on CPU 1
 * (-1: free): ns from the hand-over reply until every page is resident.
 */
static uint64_t manager_fill(const struct bconf *c, const char *x1, const char *x2, int cpu)
{
	const char *args[] = { x1, x2, NULL };
	struct bdaemon d;
	uint64_t end, limit;
	long want;
	pid_t pid;

	bd_start(&d, c, args);
	b_pin_pid(d.pid, cpu);
	memset(sh, 0, sizeof(*sh));
	pid = spawn(fill_target, c, d.sock);
	limit = b_now() + 60000000000ull;
	while (!sh->ready && b_now() < limit)
		usleep(50);
	want = sh->rss0 + (long)(c->big / B_PAGE);
	for (;;) {
		long r = b_statm_resident(pid);

		end = b_now();
		if (r >= want || r < 0 || end > limit)
			break;
		usleep(100);
	}
	if (!bd_wait_served(&d, 1, 30000))
		b_die("the daemon did not finish the fill; log in %s", d.log);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	bd_stop(&d);
	return end - sh->t0;
}

#define LF_MAX	4000	/* timed faults per run */

/* Shared with the faulter of a latency-while-filling run. */
struct lfsh {
	volatile int ready;
	volatile long n;
	uint64_t ns[LF_MAX];
};

static struct lfsh *lf;

/*
 * Hand over, then touch pages in random order, timing each touch of a page
 * mincore says is not in yet (a fault, unless the fill places it between
 * the two), until LF_MAX faults or every page was tried.
 */
static int lat_fill_target(const struct bconf *c, const char *sock)
{
	uint64_t np = c->big / B_PAGE, *order = malloc(np * sizeof(*order));
	char why[512];
	int uffd;

	b_pin_self(0);
	if (!order || b_map_area(c->big) < 0)
		return 10;
	for (uint64_t i = 0; i < np; i++)
		order[i] = i;
	b_shuffle(order, np, 7);
	uffd = b_uffd(B_FEATURES, true);
	if (uffd < 0)
		return 11;
	if (b_handover(sock, c->bigimg, uffd, why, sizeof(why)) < 0) {
		fprintf(stderr, "hand-over: %s\n", why);
		return 12;
	}
	close(uffd);
	for (uint64_t k = 0; k < np && lf->n < LF_MAX; k++) {
		volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)(B_BASE + order[k] * B_PAGE);
		unsigned char in;
		uint64_t t0;

		if (mincore((void *)p, B_PAGE, &in) < 0 || (in & 1))
			continue;
		t0 = b_now();
		(void)*p;
		lf->ns[lf->n] = b_now() - t0;
		lf->n++;
	}
	lf->ready = 1;
	for (;;)
		pause();
}

/* One run with --fill-workers W (the loop on CPU 1); the samples appended to OUT at *N. */
static void lat_fill_run(const struct bconf *c, const char *w, uint64_t *out, size_t *n)
{
	const char *args[] = { "--fill-workers", w, NULL };
	struct bdaemon d;
	uint64_t limit;
	pid_t pid;

	bd_start(&d, c, args);
	b_pin_pid(d.pid, 1);
	memset(lf, 0, sizeof(*lf));
	pid = spawn(lat_fill_target, c, d.sock);
	limit = b_now() + 60000000000ull;
	while (!lf->ready && b_now() < limit)
		usleep(200);
	if (!lf->ready)
		b_die("the latency-while-filling target did not finish");
	memcpy(out + *n, lf->ns, lf->n * sizeof(*out));
	*n += lf->n;
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	bd_stop(&d);
}

/* Fault latency while the fill runs: the loop alone against loop and worker. */
static void lat_fill(const struct bconf *c, int reps)
{
	uint64_t *s1 = malloc(reps * LF_MAX * sizeof(uint64_t));
	uint64_t *s2 = malloc(reps * LF_MAX * sizeof(uint64_t));
	uint64_t m1, m2, p1, p2;
	size_t n1 = 0, n2 = 0;
	char v[64], vs[96];

	lf = b_shared(sizeof(*lf));
	if (!s1 || !s2)
		b_die("out of memory");
	for (int i = 0; i < reps; i++) {
		lat_fill_run(c, "1", s1, &n1);
		lat_fill_run(c, "2", s2, &n2);
	}
	if (!n1 || !n2)
		b_die("no fault was timed while the fill ran");
	m1 = b_pct(s1, n1, 50);
	p1 = b_pct(s1, n1, 99);
	m2 = b_pct(s2, n2, 50);
	p2 = b_pct(s2, n2, 99);
	snprintf(v, sizeof(v), "%.2f / %.2f us", m1 / 1e3, p1 / 1e3);
	snprintf(vs, sizeof(vs), "baseline (%zu faults)", n1);
	row("fill", "fault latency while filling (median / p99), the loop alone", v, vs);
	snprintf(v, sizeof(v), "%.2f / %.2f us", m2 / 1e3, p2 / 1e3);
	snprintf(vs, sizeof(vs), "%.2fx / %.2fx (%zu faults)", (double)m2 / m1, (double)p2 / p1, n2);
	row("fill", "    the same, loop + one fill worker", v, vs);
	goal("fault latency while filling, two workers (x the loop alone, median)", (double)m2 / m1,
	     1.1, true, NULL);
	munmap(lf, sizeof(*lf));
	free(s1);
	free(s2);
}

static double median(double *v, int n)
{
	qsort(v, n, sizeof(*v), b_cmp_dbl);
	return v[n / 2];
}

void bench_fill(const struct bconf *c)
{
	double raw[16], pop[16], mgr[16], mgr2[16], r, m, m2, p;
	char v[64], vs[96], what[128];
	int n = c->fill_reps;
	struct raw rc = { FILL_CHUNK, 1, 0, false, false };
	struct raw rp = { FILL_CHUNK, 1, 0, true, false };

	sh = b_shared(sizeof(*sh));
	printf("\n[2] fill: %llu MiB of pattern data, no faults (median of %d)\n",
	       (unsigned long long)(c->big >> 20), n);
	b_pin_self(0);
	for (int i = 0; i < n; i++) {
		raw_run(c, &rc);
		raw[i] = c->big / ((sh->t1 - sh->t0) / 1e9) / 1e9;
		raw_run(c, &rp);
		pop[i] = c->big / ((sh->t1 - sh->t0) / 1e9) / 1e9;
		mgr[i] = c->big / (manager_fill(c, "--fill-workers", "1", 1) / 1e9) / 1e9;
		mgr2[i] = c->big / (manager_fill(c, "--fill-workers", "2", -1) / 1e9) / 1e9;
	}
	b_pin_self(-1);
	r = median(raw, n);
	m = median(mgr, n);
	m2 = median(mgr2, n);
	p = median(pop, n);
	snprintf(what, sizeof(what), "raw UFFDIO_COPY from a fresh mmap of the pages file, %u KiB",
		 FILL_CHUNK >> 10);
	snprintf(v, sizeof(v), "%.2f GB/s", r);
	row("fill", what, v, "baseline");
	snprintf(v, sizeof(v), "%.2f GB/s", p);
	snprintf(vs, sizeof(vs), "%.2fx raw", p / r);
	row("fill", "    the same, source mapping pre-faulted (MADV_POPULATE_READ, untimed)", v, vs);
	snprintf(v, sizeof(v), "%.2f GB/s", m);
	snprintf(vs, sizeof(vs), "%.2fx raw", m / r);
	row("fill", "uffd-manager background fill, the event loop alone (--fill-workers 1)", v, vs);
	goal("fill throughput (x raw UFFDIO_COPY)", m / r, 0.9, false, NULL);
	snprintf(v, sizeof(v), "%.2f GB/s", m2);
	snprintf(vs, sizeof(vs), "%.2fx raw", m2 / r);
	row("fill", "uffd-manager, loop + one fill worker (default: 2), unpinned", v, vs);
	goal("fill with two workers (x raw single-thread UFFDIO_COPY)", m2 / r, 1.5, false, NULL);
	munmap(sh, sizeof(*sh));
	lat_fill(c, n);
}

/* Hand over, read everything, then read everything again (now resident). */
static int touch_lazy(const struct bconf *c, const char *sock)
{
	char why[512];
	int uffd;

	if (b_map_area(c->big) < 0)
		return 10;
	uffd = b_uffd(B_FEATURES, true);
	if (uffd < 0)
		return 11;
	sh->t3 = b_now();
	if (b_handover(sock, c->bigimg, uffd, why, sizeof(why)) < 0) {
		fprintf(stderr, "hand-over: %s\n", why);
		return 12;
	}
	close(uffd);
	sh->t0 = b_now();
	sh->sum1 = sum_all((const uint64_t *)(uintptr_t)B_BASE, c->big);
	sh->t1 = b_now();
	sh->sum2 = sum_all((const uint64_t *)(uintptr_t)B_BASE, c->big);
	sh->t2 = b_now();
	return 0;
}

/* One lazy run with daemon ARGS; returns the first-pass time, fills *RES with the second. */
static double lazy_run(const struct bconf *c, const char *const *args, double *res, double *ho)
{
	struct bdaemon d;
	uint64_t want = bimg_sum(c->big);

	bd_start(&d, c, args);
	memset(sh, 0, sizeof(*sh));
	reap(spawn(touch_lazy, c, d.sock), "touch-everything (lazy)");
	bd_stop(&d);
	if (sh->sum1 != want || sh->sum2 != want)
		b_die("touch-everything read wrong data: sum %llx, want %llx",
		      (unsigned long long)sh->sum1, (unsigned long long)want);
	*res = (sh->t2 - sh->t1) / 1e6;
	*ho = (sh->t0 - sh->t3) / 1e6;
	return (sh->t1 - sh->t0) / 1e6;
}

void bench_touch(const struct bconf *c)
{
	double lazy[16], res[16], eager[16], ecopy[16], wl[16], wf[16], ho[16], dummy, dho;
	double l, rr, e, ec;
	char v[64], vs[128], what[128];
	int n = c->fill_reps;
	static const char *w1m[] = { "--fault-window", "1M", NULL };
	static const char *fixed[] = { "--fixed-window", NULL };

	sh = b_shared(sizeof(*sh));
	printf("\n[3] touch-everything: read all %llu MiB right after hand-over (median of %d, not pinned)\n",
	       (unsigned long long)(c->big >> 20), n);
	for (int i = 0; i < n; i++) {
		lazy[i] = lazy_run(c, NULL, &res[i], &ho[i]);
		raw_run(c, &(struct raw){ EAGER_CHUNK, -1, -1, false, true });
		if (sh->sum1 != bimg_sum(c->big))
			b_die("eager path read wrong data");
		eager[i] = (sh->t3 - sh->t0) / 1e6;
		ecopy[i] = (sh->t1 - sh->t0) / 1e6;
		wl[i] = lazy_run(c, w1m, &dummy, &dho);
		wf[i] = lazy_run(c, fixed, &dummy, &dho);
	}
	l = median(lazy, n);
	rr = median(res, n);
	e = median(eager, n);
	ec = median(ecopy, n);
	snprintf(v, sizeof(v), "%.1f ms", rr);
	row("touch", "(a) the read loop on resident memory", v, "");
	snprintf(v, sizeof(v), "%.1f ms", e);
	snprintf(vs, sizeof(vs), "copy %.1f ms (%.2f GB/s) + loop", ec, c->big / (ec / 1e3) / 1e9);
	row("touch", "(b) eager: raw UFFDIO_COPY of everything (4 MiB chunks), then the loop", v, vs);
	snprintf(v, sizeof(v), "%.1f ms", l);
	snprintf(vs, sizeof(vs), "%.2fx eager, %.2fx resident", l / e, l / rr);
	row("touch", "uffd-manager, default options (adaptive window up to 64K, fill on)", v, vs);
	snprintf(what, sizeof(what), "    hand-over before it (not in the figure above)");
	snprintf(v, sizeof(v), "%.2f ms", median(ho, n));
	row("touch", what, v, "");
	snprintf(v, sizeof(v), "%.1f ms", median(wl, n));
	snprintf(vs, sizeof(vs), "%.2fx eager", median(wl, n) / e);
	row("touch", "uffd-manager --fault-window 1M", v, vs);
	snprintf(v, sizeof(v), "%.1f ms", median(wf, n));
	snprintf(vs, sizeof(vs), "%.2fx eager; default options %.2fx this", median(wf, n) / e,
		 l / median(wf, n));
	row("touch", "uffd-manager --fixed-window (aligned 64K at every fault)", v, vs);
	goal("touch-everything (x eager path)", l / e, 1.1, true, NULL);
	munmap(sh, sizeof(*sh));
}
