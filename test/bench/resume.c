/*
 * 4. Resume: how long a process waits for its hand-over, for 64 MiB, 1 GiB
 * and 4 GiB of lazy memory. The cooperative hand-over (the process sends
 * HELLO itself) always; `uffd-inject lazy` on a live process when that
 * subcommand exists.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

struct rshm {
	uint64_t t0, t1;
};

static struct rshm *rs;

/* Milliseconds for one cooperative hand-over of LEN from IMGDIR, in a fresh child. */
static double coop_once(const char *sock, const char *imgdir, uint64_t len)
{
	int st;
	pid_t pid = fork();

	if (pid < 0)
		b_die("fork");
	if (pid == 0) {
		char why[512];
		int uffd;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (b_map_area(len) < 0 || (uffd = b_uffd(B_FEATURES, true)) < 0)
			_exit(10);
		rs->t0 = b_now();
		if (b_handover(sock, imgdir, uffd, why, sizeof(why)) < 0) {
			fprintf(stderr, "hand-over: %s\n", why);
			_exit(11);
		}
		rs->t1 = b_now();
		_exit(0);
	}
	waitpid(pid, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		b_die("resume: hand-over failed (wait status %d)", st);
	return (rs->t1 - rs->t0) / 1e6;
}

/*
 * Median ms of the cooperative hand-over for each of the N image dirs DIRS
 * (LENS bytes), on one daemon, the sizes interleaved so drift hits them alike.
 */
static void coop(const struct bconf *c, int n, char dirs[][400], const uint64_t *lens, double *out)
{
	const char *args[] = { "--no-fill", NULL };
	double v[4][64];
	struct bdaemon d;
	int reps = c->resume_reps;

	bd_start(&d, c, args);
	for (int i = 0; i < n; i++)
		coop_once(d.sock, dirs[i], lens[i]);	/* warm: the first ones pay for cold code */
	for (int r = 0; r < reps; r++)
		for (int i = 0; i < n; i++)
			v[i][r] = coop_once(d.sock, dirs[i], lens[i]);
	bd_stop(&d);
	for (int i = 0; i < n; i++) {
		qsort(v[i], reps, sizeof(double), b_cmp_dbl);
		out[i] = v[i][reps / 2];
	}
}

/* Does build/uffd-inject have a `lazy` command? */
static bool have_inject_lazy(char *bin, size_t len)
{
	const char *build = getenv("UFFD_TEST_BUILD");
	char cmd[400], line[512];
	bool yes = false;
	FILE *f;

	snprintf(bin, len, "%s/uffd-inject", build ? build : TEST_BUILDDIR);
	snprintf(cmd, sizeof(cmd), "%s --help 2>&1", bin);
	f = popen(cmd, "r");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "  lazy "))
			yes = true;
	pclose(f);
	return yes;
}

/* Read exactly LEN bytes from FD within TIMEOUT_MS. */
static int read_full(int fd, void *buf, size_t len, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	size_t got = 0;

	while (got < len) {
		ssize_t n;

		if (poll(&p, 1, timeout_ms) <= 0)
			return -ETIMEDOUT;
		n = read(fd, (char *)buf + got, len - got);
		if (n <= 0)
			return -EIO;
		got += n;
	}
	return 0;
}

/*
 * A live process with LEN of data at B_BASE: writes its sum to UP, waits for
 * a byte on DOWN, sums again (every page comes back from the manager) and
 * writes that. It talks through pipes only: shared anonymous memory cannot
 * be dumped.
 */
static int live_target(uint64_t len, int up, int down)
{
	uint64_t *p, s = 0;
	char b;

	munmap(rs, sizeof(*rs));
	if (b_map_area(len) < 0)
		return 10;
	p = (uint64_t *)(uintptr_t)B_BASE;
	for (uint64_t i = 0; i < len / 8; i += 8)
		s += p[i] = i * 0x9E3779B97F4A7C15ull + 1;
	if (write(up, &s, sizeof(s)) != sizeof(s) || read(down, &b, 1) != 1)
		return 11;
	s = 0;
	for (uint64_t i = 0; i < len / 8; i += 8)
		s += p[i];
	return write(up, &s, sizeof(s)) == sizeof(s) ? 0 : 12;
}

/*
 * Where uffd-inject writes its dumps: $BENCH_INJECT_DIR, else /dev/shm when
 * it has room (the figure is the tool's, not the disk's writeback, which
 * would also spill into the measures after it), else the run's directory.
 */
static char dir_inj[200];

void resume_cleanup(void)
{
	char cmd[300];

	if (!dir_inj[0])
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf %s/uffd-bench-inj-%d-*", dir_inj, getpid());
	if (system(cmd)) {
	}
}

static const char *injdir(const struct bconf *c)
{
	char *dir = dir_inj;
	const size_t dlen = sizeof(dir_inj);
	struct statvfs v;
	const char *e = getenv("BENCH_INJECT_DIR");

	if (dir[0])
		return dir;
	if (e && *e)
		snprintf(dir, dlen, "%s", e);
	else if (statvfs("/dev/shm", &v) == 0 && (uint64_t)v.f_bavail * v.f_frsize > (6ull << 30))
		snprintf(dir, dlen, "/dev/shm");
	else
		snprintf(dir, dlen, "%s", c->dir);
	return dir;
}

/* ms for `uffd-inject lazy` of a live process of LEN; <0 when it failed. */
static double inject_once(const struct bconf *c, const char *bin, const char *sock, uint64_t len,
			  int k)
{
	char dir[400], pidarg[32], cmd[500];
	uint64_t t0, t1, before = 0, after = 1;
	int up[2], down[2], st, ok;
	pid_t tgt, inj;

	if (pipe2(up, O_CLOEXEC) < 0 || pipe2(down, O_CLOEXEC) < 0)
		b_die("pipe");
	tgt = fork();
	if (tgt == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(up[0]);
		close(down[1]);
		_exit(live_target(len, up[1], down[0]));
	}
	close(up[1]);
	close(down[0]);
	if (read_full(up[0], &before, sizeof(before), 60000) < 0)
		b_die("inject: the live target did not start");
	snprintf(dir, sizeof(dir), "%s/uffd-bench-inj-%d-%d", injdir(c), getpid(), k);
	snprintf(pidarg, sizeof(pidarg), "%d", tgt);
	t0 = b_now();
	inj = fork();
	if (inj == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		execl(bin, bin, "lazy", "--pid", pidarg, "--images", dir, "--socket", sock,
		      (char *)NULL);
		_exit(127);
	}
	waitpid(inj, &st, 0);
	t1 = b_now();
	ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
	if (ok && (write(down[1], "c", 1) != 1 ||
		   read_full(up[0], &after, sizeof(after), 120000) < 0 || after != before)) {
		fprintf(stderr, "uffd-bench: inject %d: the target read back different memory\n", k);
		ok = 0;
	}
	close(up[0]);
	close(down[1]);
	kill(tgt, SIGKILL);
	waitpid(tgt, NULL, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd)) {
	}
	return ok ? (t1 - t0) / 1e6 : -1;
}

/*
 * Dump a process of LEN for `uffd-inject restore`: test/helpers/rworkload
 * (LEN of pattern data, counting on its stdout, a pipe) with dump --kill
 * into DIR. False when it failed.
 */
static bool restore_dump(const char *bin, const char *dir, uint64_t len)
{
	const char *build = getenv("UFFD_TEST_BUILD");
	char wl[300], mib[32], pidarg[32], line[256];
	int out[2], st;
	pid_t w, t;
	FILE *f;
	bool ok;

	snprintf(wl, sizeof(wl), "%s/test/helpers/rworkload", build ? build : TEST_BUILDDIR);
	snprintf(mib, sizeof(mib), "%llu", (unsigned long long)(len >> 20));
	if (pipe2(out, O_CLOEXEC) < 0)
		b_die("pipe");
	w = fork();
	if (w == 0) {
		int null = open("/dev/null", O_RDONLY);

		dup2(null, 0);
		dup2(out[1], 1);
		execl(wl, wl, "--log", "-", "--mib", mib, (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	f = fdopen(out[0], "r");
	/* "ready ..." once its memory is written, then "count N" lines. */
	ok = f && fgets(line, sizeof(line), f) && !strncmp(line, "ready", 5) &&
	     fgets(line, sizeof(line), f);
	snprintf(pidarg, sizeof(pidarg), "%d", w);
	t = ok ? fork() : -1;
	if (t == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		execl(bin, bin, "dump", "--pid", pidarg, "--images", dir, "--kill", (char *)NULL);
		_exit(127);
	}
	if (t > 0)
		ok = waitpid(t, &st, 0) == t && WIFEXITED(st) && WEXITSTATUS(st) == 0;
	if (!ok)
		kill(w, SIGKILL);
	waitpid(w, NULL, 0);
	if (f)
		fclose(f);
	return ok;
}

/*
 * ms from the start of `uffd-inject restore` of DIR (lazily through SOCK,
 * or --eager when SOCK is NULL) to its exit, when the process runs. The
 * restored process then checks every word of its memory (SIGUSR2) into
 * OUTF; <0 when anything failed.
 */
static double restore_once(const char *bin, const char *dir, const char *sock, const char *outf,
			   uint64_t len)
{
	char line[64];
	uint64_t t0, t1;
	int p[2], st;
	pid_t tool, rp;
	bool ok;

	if (pipe2(p, O_CLOEXEC) < 0)
		b_die("pipe");
	unlink(outf);
	t0 = b_now();
	tool = fork();
	if (tool == 0) {
		dup2(p[1], 1);
		if (sock)
			execl(bin, bin, "restore", "--images", dir, "--socket", sock, "--stdio", outf,
			      (char *)NULL);
		else
			execl(bin, bin, "restore", "--images", dir, "--eager", "--stdio", outf,
			      (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	waitpid(tool, &st, 0);
	t1 = b_now();
	ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
	line[0] = '\0';
	if (read(p[0], line, sizeof(line) - 1) > 0)
		line[sizeof(line) - 1] = '\0';
	close(p[0]);
	rp = (pid_t)strtol(line, NULL, 10);
	if (!ok || rp <= 0)
		return -1;
	ok = kill(rp, SIGUSR2) == 0 && b_file_has(outf, "verify ", 120000) &&
	     b_file_has(outf, "verify ok", 10);
	if (!ok)
		fprintf(stderr, "uffd-bench: restore of %s: the process did not verify its memory\n",
			dir);
	kill(rp, SIGKILL);
	waitpid(rp, NULL, 0);	/* ours: we are its subreaper */
	/*
	 * Let the machine finish with it: the process's exit and the daemon's
	 * unmapping of the pages file it populated take hundreds of ms at
	 * 4 GiB on two CPUs, and a restore started meanwhile shares them (by
	 * hand: 540-960 ms instead of 20 ms; measure 4 at 4 GiB was 2.86x 64
	 * MiB with a 300 ms gap, 1.35x with 1.5 s). Measured apart: this times
	 * a restore, not the end of the one before. 300 ms, plus 300 ms a GiB.
	 */
	usleep(300000 + (useconds_t)((len >> 20) * 300000 / 1024));
	return ok ? (t1 - t0) / 1e6 : -1;
}

/* What a quick run dumps and restores instead of 64 MiB, 1 GiB and 4 GiB: it stays under a minute. */
static const uint64_t quick_sizes[2] = { 64ull << 20, 256ull << 20 };
static const char *quick_names[2] = { "64 MiB", "256 MiB" };

/*
 * 4b. `uffd-inject restore`, lazy and eager, for 64 MiB, 1 GiB and 4 GiB (64
 * and 256 MiB quick). The sizes take turns, round after round, so that whatever drifts
 * through the run (the page cache, the writeback of the dumps, other load)
 * weighs on every size alike instead of on the last one measured.
 */
static void bench_restore(const struct bconf *c, const char *bin)
{
	static const uint64_t full_sizes[3] = { 64ull << 20, 1ull << 30, 4ull << 30 };
	static const char *full_names[3] = { "64 MiB", "1 GiB", "4 GiB" };
	const uint64_t *sizes = c->quick ? quick_sizes : full_sizes;
	const char *const *names = c->quick ? quick_names : full_names;
	int nsz = c->quick ? 2 : 3, reps = c->quick ? 3 : 5;
	double lazy[3] = { -1, -1, -1 }, eager[3] = { -1, -1, -1 }, x[3][8];
	char dir[3][400], outf[400], what[128], v[64], vs[64], cmd[420];
	bool dumped[3] = { false, false, false }, bad[3] = { false, false, false };
	struct bdaemon d;

	prctl(PR_SET_CHILD_SUBREAPER, 1);
	bd_start(&d, c, NULL);
	snprintf(outf, sizeof(outf), "%s/restored.out", c->dir);
	for (int i = 0; i < nsz; i++) {
		snprintf(dir[i], sizeof(dir[i]), "%s/uffd-bench-inj-%d-rst%d", injdir(c), getpid(), i);
		dumped[i] = restore_dump(bin, dir[i], sizes[i]);
		if (!dumped[i])
			note("could not dump a %s process for restore: its figures are left out",
			     names[i]);
	}
	for (int r = 0; r < reps; r++)
		for (int i = 0; i < nsz; i++)
			if (dumped[i] &&
			    (x[i][r] = restore_once(bin, dir[i], d.sock, outf, sizes[i])) < 0)
				bad[i] = true;
	for (int i = 0; i < nsz; i++) {
		if (!dumped[i])
			continue;
		qsort(x[i], reps, sizeof(double), b_cmp_dbl);
		lazy[i] = bad[i] ? -1 : x[i][reps / 2];
		eager[i] = restore_once(bin, dir[i], NULL, outf, sizes[i]);
		snprintf(cmd, sizeof(cmd), "rm -rf %.400s", dir[i]);
		if (system(cmd)) {
		}
	}
	bd_stop(&d);
	prctl(PR_SET_CHILD_SUBREAPER, 0);
	for (int i = 0; i < nsz; i++) {
		snprintf(what, sizeof(what), "uffd-inject restore, lazy (median of %d), %s", reps,
			 names[i]);
		snprintf(v, sizeof(v), lazy[i] < 0 ? "failed" : "%.1f ms", lazy[i]);
		snprintf(vs, sizeof(vs), "%.2fx 64 MiB", lazy[i] / lazy[0]);
		row("resume", what, v, i && lazy[i] > 0 && lazy[0] > 0 ? vs : i ? "" : "baseline");
	}
	for (int i = 0; i < nsz; i++) {
		snprintf(what, sizeof(what), "uffd-inject restore --eager, %s", names[i]);
		snprintf(v, sizeof(v), eager[i] < 0 ? "failed" : "%.1f ms", eager[i]);
		snprintf(vs, sizeof(vs), "%.2fx lazy", eager[i] / lazy[i]);
		row("resume", what, v, eager[i] > 0 && lazy[i] > 0 ? vs : "");
	}
	if (lazy[0] > 0 && lazy[nsz - 1] > 0)
		goal(c->quick ? "resume 256 MiB / 64 MiB, uffd-inject restore (lazy)" :
				"resume 4 GiB / 64 MiB, uffd-inject restore (lazy)",
		     lazy[nsz - 1] / lazy[0], 1.2, true, NULL);
}

void bench_resume(const struct bconf *c)
{
	static const uint64_t sizes[3] = { 64ull << 20, 1ull << 30, 4ull << 30 };
	static const char *names[3] = { "64 MiB", "1 GiB", "4 GiB" };
	double t[4], ti[3];
	char dirs[4][400], dir[500], v[64], vs[96], what[128], bin[300];
	uint64_t lens[4];
	bool inj;

	rs = b_shared(sizeof(*rs));
	printf("\n[4] resume: hand-over time (median of %d; sparse pages files: a hand-over reads no page data)\n",
	       c->resume_reps);
	for (int i = 0; i < 3; i++) {
		snprintf(dirs[i], sizeof(dirs[i]), "%s/resume-%d", c->dir, i);
		bimg_write(dirs[i], sizes[i], true);
		lens[i] = sizes[i];
	}
	snprintf(dirs[3], sizeof(dirs[3]), "%s", c->bigimg);
	lens[3] = c->big;
	coop(c, 4, dirs, lens, t);
	for (int i = 0; i < 3; i++) {
		snprintf(what, sizeof(what), "cooperative hand-over (HELLO), %s", names[i]);
		snprintf(v, sizeof(v), "%.3f ms", t[i]);
		snprintf(vs, sizeof(vs), "%.2fx 64 MiB", t[i] / t[0]);
		row("resume", what, v, i ? vs : "baseline");
	}
	snprintf(what, sizeof(what), "    the same, %llu MiB image with real data (page cache)",
		 (unsigned long long)(c->big >> 20));
	snprintf(v, sizeof(v), "%.3f ms", t[3]);
	row("resume", what, v, "");
	goal("resume 4 GiB / 64 MiB, cooperative hand-over", t[2] / t[0], 1.2, true, NULL);

	inj = have_inject_lazy(bin, sizeof(bin));
	if (inj)
		printf("    uffd-inject lazy writes its dumps under %s\n", injdir(c));
	if (!inj) {
		note("`uffd-inject lazy` is not in %s --help: its resume figures are left out", bin);
	} else {
		struct bdaemon d;

		bd_start(&d, c, NULL);
		/* Quick: 64 and 256 MiB; the 4 GiB dump alone would take most of the minute. */
		for (int i = 0; i < (c->quick ? 2 : 3); i++) {
			uint64_t len = c->quick ? quick_sizes[i] : sizes[i];
			double x[8];
			int n = c->quick ? 1 : 3, bad = 0;

			for (int r = 0; r < n; r++)
				if ((x[r] = inject_once(c, bin, d.sock, len, i)) < 0)
					bad = 1;
			qsort(x, n, sizeof(double), b_cmp_dbl);
			ti[i] = bad ? -1 : x[n / 2];
			snprintf(what, sizeof(what), "uffd-inject lazy of a live process (dump + hand-over), %s",
				 c->quick ? quick_names[i] : names[i]);
			if (ti[i] < 0) {
				row("resume", what, "failed", "");
				continue;
			}
			snprintf(v, sizeof(v), "%.1f ms", ti[i]);
			snprintf(vs, sizeof(vs), "%.2fx 64 MiB", ti[i] / ti[0]);
			row("resume", what, v, i ? vs : "baseline");
		}
		bd_stop(&d);
		if (c->quick && ti[0] > 0 && ti[1] > 0)
			goal("resume 256 MiB / 64 MiB, uffd-inject lazy", ti[1] / ti[0], 1.2, true, NULL);
		else if (ti[0] > 0 && ti[2] > 0)
			goal("resume 4 GiB / 64 MiB, uffd-inject lazy", ti[2] / ti[0], 1.2, true, NULL);
	}
	if (inj)
		bench_restore(c, bin);
	for (int i = 0; i < 3; i++) {
		snprintf(dir, sizeof(dir), "rm -rf %s/resume-%d", c->dir, i);
		if (system(dir)) {
		}
	}
	munmap(rs, sizeof(*rs));
}
