/*
 * b. `criu restore --lazy-pages` served by `uffd-manager criu` against the
 * same restore served by CRIU's own `criu lazy-pages` (issue 17 item 6), in
 * turns, from one `criu dump` of test/helpers/rworkload. Runs only with
 * CRIU=/path/to/criu (`make bench CRIU=...`) and as root: nothing else in
 * the bench needs CRIU.
 *
 * Per restore: the wall time of `criu restore` (what the user waits for),
 * and from its start to the end of the process's first check of every word
 * of its memory (SIGUSR2 sent as soon as criu returns), which waits for
 * every page the daemon serves.
 *
 * Two ways, each in turns: with the restore started the moment the daemon
 * listens (back to back), and IDLE_GAP_US later (the goal's figure).
 *
 * Both daemons get the same kernel state: a per-task perf event is held
 * open through the whole measure (perf_hold). Every criu command starts
 * with criu's kernel checks (kerndat; every time here: /run is no tmpfs,
 * so criu keeps no cache of them), and one of them sets a hardware
 * breakpoint on a child with ptrace: a per-task perf event. The first such
 * event in the system switches a kernel static key on (perf_sched_events:
 * code patched on every CPU, then an RCU grace period), 6-16 ms here; the
 * key goes off only 1 s after the last event is freed. `criu lazy-pages`
 * runs the same checks just before it listens, so a restore started
 * within a second of it found the key on and skipped that cost, while after
 * uffd-manager it paid it: 8.6 ms more (median of 30 interleaved pairs,
 * 1 GiB, 300 ms gap) in that one step of criu's log, with every other step,
 * those with the daemon included, the same within noise; a 1.15x gap
 * on its own, none of it time spent on the daemon. Any other per-task perf
 * user on the machine (perf, a debugger's breakpoint) flipped it at random.
 * With the key held on, 50 interleaved pairs gave 1.03x (95% bootstrap
 * interval of the ratio of medians 0.93-1.14): what is left is noise.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/perf_event.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define CRIU_REPS	25

/* The pause between the daemon listening and the restore, in the goal's figure. */
#define IDLE_GAP_US	300000

struct bcriu {
	const char *criu;
	char mgr[300];
	char img[160];
	char wk[160];
	char log[160];		/* the workload's log: "count", "verify ok" */
	char out[160];		/* its stdout: "ready pid=" */
	off_t log_len, out_len;	/* as dumped: criu checks the sizes of open files */
};

/* Wait for PID with a timeout; true if it exited 0. Kills it at the timeout. */
static bool wait_exit(pid_t pid, int timeout_ms, int *status)
{
	int st = 0;

	for (int i = 0; i < timeout_ms / 5; i++) {
		pid_t w = waitpid(pid, &st, WNOHANG);

		if (w == pid) {
			if (status)
				*status = st;
			return WIFEXITED(st) && WEXITSTATUS(st) == 0;
		}
		if (w < 0)
			return false;
		usleep(5000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	if (status)
		*status = st;
	return false;
}

/* Run ARGV with stdio on /dev/null (stdout to OUT if given); its pid. */
static pid_t spawn(const char *const *argv, const char *out, bool session)
{
	pid_t p = fork();

	if (p == 0) {
		int null = open("/dev/null", O_RDWR);
		int o = out ? open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600) : null;

		if (session)
			setsid();
		dup2(null, 0);
		dup2(o, 1);
		dup2(null, 2);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (p < 0)
		b_die("fork: %s", strerror(errno));
	return p;
}

static bool has_socket(const char *path, int timeout_ms)
{
	struct stat st;

	for (int i = 0; i < timeout_ms / 2; i++) {
		if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
			return true;
		usleep(2000);
	}
	return false;
}

/* Start the workload and `criu dump` it into k->img. */
static bool dump(struct bcriu *k, const struct bconf *c, uint64_t mib)
{
	const char *build = getenv("UFFD_TEST_BUILD");
	char wl[300], m[24], pidarg[24], line[256];
	struct stat st;
	pid_t w, d;
	FILE *f;
	int pid = 0;

	snprintf(wl, sizeof(wl), "%s/test/helpers/rworkload", build ? build : TEST_BUILDDIR);
	snprintf(m, sizeof(m), "%llu", (unsigned long long)mib);
	{
		const char *argv[] = { wl, "--log", k->log, "--mib", m, "--tick", "50", NULL };

		w = spawn(argv, k->out, true);
	}
	if (!b_file_has(k->log, "count 2", 120000)) {
		note("b: the workload did not start: %s", k->log);
		kill(w, SIGKILL);
		waitpid(w, NULL, 0);
		return false;
	}
	f = fopen(k->out, "re");
	if (f && fgets(line, sizeof(line), f))
		sscanf(line, "ready pid=%d", &pid);
	if (f)
		fclose(f);
	if (pid != w) {
		note("b: the workload's ready line names pid %d, not %d", pid, (int)w);
		kill(w, SIGKILL);
		waitpid(w, NULL, 0);
		return false;
	}
	snprintf(pidarg, sizeof(pidarg), "%d", pid);
	{
		const char *argv[] = { k->criu, "dump", "-t", pidarg, "-D", k->img, "-o", "dump.log",
				       NULL };

		d = spawn(argv, NULL, false);
	}
	/* criu kills the dumped task: reap it (a child of ours) either way. */
	if (!wait_exit(d, 300000, NULL)) {
		note("b: criu dump failed: see %s/dump.log", k->img);
		kill(w, SIGKILL);
		waitpid(w, NULL, 0);
		return false;
	}
	waitpid(w, NULL, 0);
	if (stat(k->log, &st) < 0)
		return false;
	k->log_len = st.st_size;
	if (stat(k->out, &st) < 0)
		return false;
	k->out_len = st.st_size;
	(void)c;
	return true;
}

/*
 * One restore served by CRIU's daemon (OURS false) or ours, started GAP_US
 * after the daemon listens: the ms criu restore took (*wall) and to the end
 * of the first full check (*pass).
 */
static bool restore_once(struct bcriu *k, bool ours, useconds_t gap_us, uint64_t mib,
			 double *wall, double *pass)
{
	char sock[200], rpid[200], mlog[200], line[32];
	const char *tag = ours ? "ours" : "criu";
	uint64_t t0, t1, t2;
	pid_t dm, r, rp = 0;
	int fd, st;
	bool ok;

	if (truncate(k->log, k->log_len) < 0 || truncate(k->out, k->out_len) < 0)
		b_die("truncate %s: %s", k->log, strerror(errno));
	snprintf(sock, sizeof(sock), "%s/lazy-pages.socket", k->wk);
	snprintf(rpid, sizeof(rpid), "%s/restored.pid", k->wk);
	snprintf(mlog, sizeof(mlog), "%s/uffd-manager.log", k->wk);
	unlink(sock);
	unlink(rpid);
	if (ours) {
		const char *argv[] = { k->mgr, "criu", "-D", k->img, "-W", k->wk, "-o", mlog,
				       NULL };

		dm = spawn(argv, NULL, false);
	} else {
		const char *argv[] = { k->criu, "lazy-pages", "-D", k->img, "-W", k->wk, "-o",
				       "lazy-pages.log", NULL };

		dm = spawn(argv, NULL, false);
	}
	if (!has_socket(sock, 20000)) {
		note("b: %s: the lazy-pages daemon did not listen on %s", tag, sock);
		kill(dm, SIGKILL);
		waitpid(dm, NULL, 0);
		return false;
	}
	if (gap_us)
		usleep(gap_us);
	t0 = b_now();
	{
		const char *argv[] = { k->criu, "restore", "-D", k->img, "-W", k->wk, "--lazy-pages",
				       "-d", "--pidfile", rpid, "-o", "restore.log", NULL };

		r = spawn(argv, NULL, false);
	}
	ok = wait_exit(r, 60000, &st);
	t1 = b_now();
	fd = ok ? open(rpid, O_RDONLY | O_CLOEXEC) : -1;
	if (fd >= 0) {
		ssize_t n = read(fd, line, sizeof(line) - 1);

		line[n > 0 ? n : 0] = '\0';
		rp = (pid_t)atoi(line);
		close(fd);
	}
	ok = ok && rp > 1 && kill(rp, SIGUSR2) == 0 && b_file_has(k->log, "verify ", 120000) &&
	     b_file_has(k->log, "verify ok", 10);
	t2 = b_now();
	if (!ok)
		note("b: %s: the restore or the restored process's check failed: see %s", tag,
		     k->wk);
	if (rp > 1) {
		kill(rp, SIGKILL);
		waitpid(rp, NULL, 0);	/* ours: we are the subreaper */
	}
	/* Both daemons exit once their task is gone or fully served. */
	if (!wait_exit(dm, 20000, &st) && ok)
		note("b: %s: the lazy-pages daemon did not exit 0 after its task (status 0x%x)",
		     tag, st);
	usleep(300000 + (useconds_t)(mib * 300000 / 1024));
	*wall = (t1 - t0) / 1e6;
	*pass = (t2 - t0) / 1e6;
	return ok;
}

/*
 * Hold the kernel's perf_sched_events key on for the whole measure (see the
 * top of this file): a dummy software event on ourselves, counting nothing.
 * The fd, or -1 (the comparison then favours whichever daemon ran criu's
 * checks last; said in the notes).
 */
static int perf_hold(void)
{
	struct perf_event_attr a = { .type = PERF_TYPE_SOFTWARE, .size = sizeof(a),
				     .config = PERF_COUNT_SW_DUMMY, .disabled = 1 };

	return (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
}

void bench_criu(const struct bconf *c)
{
	const char *build = getenv("UFFD_TEST_BUILD");
	uint64_t mib = c->quick ? 128 : 1024;	/* quick: under a minute in all */
	/*
	 * 25 restores a kind: with 15 the ratio of medians moved by about 12%
	 * from one run to the next, as far as its distance from 1.
	 */
	int reps = c->quick ? 3 : CRIU_REPS, n[4] = { 0, 0, 0, 0 };
	/* [v]: v & 1 ours, v & 2 after the idle gap. */
	double wall[4][CRIU_REPS], pass[4][CRIU_REPS], mw[4], mp[4];
	static const char *const how[2] = { "back to back", "after 300 ms idle" };
	struct bcriu k = { 0 };
	int hold;

	printf("\n[b] criu restore --lazy-pages: served by uffd-manager criu and by criu lazy-pages\n");
	k.criu = getenv("CRIU");
	if (!k.criu || !*k.criu) {
		note("b: left out: no CRIU=/path/to/criu (make bench CRIU=...)");
		return;
	}
	if (access(k.criu, X_OK) < 0 || geteuid() != 0) {
		note("b: left out: %s", geteuid() ? "criu needs root" : "CRIU= is not executable");
		return;
	}
	snprintf(k.mgr, sizeof(k.mgr), "%s/uffd-manager", build ? build : TEST_BUILDDIR);
	snprintf(k.img, sizeof(k.img), "%s/criu-img", c->dir);
	snprintf(k.wk, sizeof(k.wk), "%s/criu-work", c->dir);
	snprintf(k.log, sizeof(k.log), "%s/criu-work.log", c->dir);
	snprintf(k.out, sizeof(k.out), "%s/criu-work.out", c->dir);
	if (mkdir(k.img, 0700) < 0 || mkdir(k.wk, 0700) < 0)
		b_die("mkdir %s: %s", k.img, strerror(errno));
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	if (!dump(&k, c, mib)) {
		prctl(PR_SET_CHILD_SUBREAPER, 0);
		return;
	}
	hold = perf_hold();
	if (hold < 0)
		note("b: perf_event_open: %s: the kernel's perf key is left to chance, which favours criu lazy-pages (see test/bench/criu.c)",
		     strerror(errno));
	/* In turns, the four kinds taking each place in the round by rotation. */
	for (int r = 0; r < reps; r++)
		for (int j = 0; j < 4; j++) {
			int v = (r + j) % 4;

			if (restore_once(&k, v & 1, v & 2 ? IDLE_GAP_US : 0, mib, &wall[v][n[v]],
					 &pass[v][n[v]]))
				n[v]++;
		}
	if (hold >= 0)
		close(hold);
	prctl(PR_SET_CHILD_SUBREAPER, 0);
	for (int v = 0; v < 4; v++) {
		if (n[v] < reps) {
			note("b: %d of %d restores with %s, %s, failed: the comparison is left out",
			     reps - n[v], reps, v & 1 ? "uffd-manager criu" : "criu lazy-pages",
			     how[v >> 1]);
			return;
		}
		qsort(wall[v], reps, sizeof(double), b_cmp_dbl);
		qsort(pass[v], reps, sizeof(double), b_cmp_dbl);
		mw[v] = wall[v][reps / 2];
		mp[v] = pass[v][reps / 2];
	}
	/* The spread, for whoever reads a ratio near 1: this machine's noise is as wide. */
	note("b: criu restore wall, quartiles (p25 / median / p75, ms): after idle %.1f / %.1f / %.1f with criu lazy-pages, %.1f / %.1f / %.1f with uffd-manager criu",
	     wall[2][reps / 4], mw[2], wall[2][3 * reps / 4], wall[3][reps / 4], mw[3],
	     wall[3][3 * reps / 4]);
	for (int g = 1; g >= 0; g--) {
		char what[160], val[64], vs[64];
		int base = 2 * g, ours = 2 * g + 1;

		snprintf(what, sizeof(what), "criu restore --lazy-pages, %llu MiB, %s, criu lazy-pages "
			 "(median of %d)", (unsigned long long)mib, how[g], reps);
		snprintf(val, sizeof(val), "%.1f ms", mw[base]);
		row("criu", what, val, "baseline");
		snprintf(what, sizeof(what), "criu restore --lazy-pages, %llu MiB, %s, uffd-manager criu",
			 (unsigned long long)mib, how[g]);
		snprintf(val, sizeof(val), "%.1f ms", mw[ours]);
		snprintf(vs, sizeof(vs), "%.2fx criu lazy-pages", mw[ours] / mw[base]);
		row("criu", what, val, vs);
		snprintf(what, sizeof(what), "    restore start to the first full check, %s, "
			 "criu lazy-pages", how[g]);
		snprintf(val, sizeof(val), "%.0f ms", mp[base]);
		row("criu", what, val, "baseline");
		snprintf(what, sizeof(what), "    restore start to the first full check, %s, "
			 "uffd-manager criu", how[g]);
		snprintf(val, sizeof(val), "%.0f ms", mp[ours]);
		snprintf(vs, sizeof(vs), "%.2fx criu lazy-pages", mp[ours] / mp[base]);
		row("criu", what, val, vs);
	}
	goal("criu restore --lazy-pages wall after 300 ms idle, uffd-manager criu / criu lazy-pages",
	     mw[3] / mw[2], 1.0, true, NULL);
}
