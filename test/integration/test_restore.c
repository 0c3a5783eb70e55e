/*
 * uffd-inject restore, end to end: a real workload (test/helpers/rworkload.c)
 * is dumped with --kill, restored (lazily, served by a uffd-manager started
 * here, or eagerly), and must go on exactly where it was: counting on, its log
 * written at the right offset, its handler firing, every byte of its memory
 * checked by itself.
 *
 * This process becomes a child subreaper so that restored processes, orphaned
 * when the tool exits, are ours to reap.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "files.pb-c.h"
#include "imgtask.h"
#include "mm.pb-c.h"
#include "pagemap.h"
#include "pagemap.pb-c.h"
#include "shm.h"
#include "thuge.h"
#include "tserve.h"
#include "twork.h"

static char tmp[64];
static pid_t kids[16];
static int nkids;
static int outs[8];	/* read ends of the workloads' stdout, kept open */
static int nouts;
static struct ts_daemon dmn;
static bool dmn_on;

static const char *build_dir(void)
{
	const char *b = getenv("UFFD_TEST_BUILD");

	return b ? b : TEST_BUILDDIR;
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void setup(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/uffd-rtest-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp), "mkdtemp: %s", strerror(errno));
	cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	nkids = 0;
	nouts = 0;
	dmn_on = false;
}

/* Hang guard of the teardown's sweep, in rounds of SWEEP_NAP_US: never reached unless broken. */
#define SWEEP_ROUNDS	3000
#define SWEEP_NAP_US	10000

/*
 * SIGKILL every child of this process not yet dead, noting it in KILLED (N
 * of them so far, at most CAP); returns how many children it has, zombies
 * included.
 */
static int kill_children(pid_t *killed, int *n, int cap)
{
	pid_t self = getpid();
	struct dirent *de;
	DIR *dp = opendir("/proc");
	int found = 0;

	if (!dp)
		return 0;
	while ((de = readdir(dp))) {
		char path[64], buf[512], *p, state;
		pid_t pid = (pid_t)atoi(de->d_name), ppid;
		bool seen = false;
		ssize_t len;
		int fd;

		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		len = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (len <= 0)
			continue;
		buf[len] = '\0';
		p = strrchr(buf, ')');
		if (!p || sscanf(p + 2, "%c %d", &state, &ppid) != 2 || ppid != self)
			continue;
		found++;
		if (state == 'Z')
			continue;
		kill(pid, SIGKILL);
		for (int i = 0; i < *n; i++)
			seen |= killed[i] == pid;
		if (!seen && *n < cap) {
			char *name = strchr(buf, '(');

			cr_log_info("teardown: killing pid %d (%.*s), left by the test", (int)pid,
				    name ? (int)(p - name - 1) : 0, name ? name + 1 : "");
			killed[(*n)++] = pid;
		}
	}
	closedir(dp);
	return found;
}

/*
 * Kill and reap every process left below this one: the test's own, none
 * other (each test runs in a process of its own, a child subreaper, so
 * whatever it started and lost track of, such as a restored tree whose
 * pids it had not read yet, or the children of a workload whose dump
 * failed, ends up its child). Each round kills every child it finds before
 * it reaps any, and reaps without waiting: a dead child still traced by
 * another child is reported to that tracer first, so a blocking wait on it
 * would hang until the tracer, later in /proc, was killed. Returns how many
 * were alive (zombies are only reaped).
 */
static int sweep_descendants(void)
{
	pid_t killed[256];
	int nkilled = 0, round;

	for (round = 0; round < SWEEP_ROUNDS; round++) {
		bool reaped = false;

		if (!kill_children(killed, &nkilled, 256))
			break;
		/* Once reaped, a child's own children are ours: the next round finds them. */
		while (waitpid(-1, NULL, __WALL | WNOHANG) > 0)
			reaped = true;
		if (!reaped)
			usleep(SWEEP_NAP_US);
	}
	if (round == SWEEP_ROUNDS)
		cr_log_warn("teardown: children of the test still not reaped after %d s",
			    SWEEP_ROUNDS * (SWEEP_NAP_US / 1000) / 1000);
	return nkilled;
}

static void teardown(void)
{
	char cmd[128];
	int left;

	/* Reaped by the sweep below: one may be traced by another, to be killed after it. */
	for (int i = 0; i < nkids; i++)
		if (kids[i] > 0)
			kill(kids[i], SIGKILL);
	for (int i = 0; i < nouts; i++)
		close(outs[i]);
	if (dmn_on)
		ts_daemon_finish(&dmn, 5000);
	left = sweep_descendants();
	if (left)
		cr_log_info("teardown: killed %d more processes this test had started", left);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	if (!getenv("UFFD_TEST_KEEP") && system(cmd)) {
	}
}

static void daemon_start(const char *const *args)
{
	ts_daemon_start(&dmn, args);
	dmn_on = true;
}

/* Read a whole file into a NUL-terminated malloc'd buffer (empty if missing). */
static char *slurp(const char *path, size_t *len)
{
	size_t cap = 4096, n = 0;
	char *b = malloc(cap);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t k;

	cr_assert_not_null(b);
	while (fd >= 0 && (k = read(fd, b + n, cap - n - 1)) > 0) {
		n += (size_t)k;
		if (cap - n < 2) {
			cap *= 2;
			b = realloc(b, cap);
			cr_assert_not_null(b);
		}
	}
	if (fd >= 0)
		close(fd);
	b[n] = '\0';
	if (len)
		*len = n;
	return b;
}

/* Wait until PATH contains S; false after MS milliseconds. */
static bool wait_for(const char *path, const char *s, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		char *b = slurp(path, NULL);
		bool hit = strstr(b, s) != NULL;

		free(b);
		if (hit)
			return true;
		usleep(10000);
	}
	return false;
}

/* The number of the last "count N" line of TEXT, 0 if none. */
static unsigned long last_count(const char *text)
{
	const char *p = text, *q;
	unsigned long c = 0;

	while ((q = strstr(p, "count ")) != NULL) {
		c = strtoul(q + 6, NULL, 10);
		p = q + 6;
	}
	return c;
}

/*
 * Start rworkload with ARGS, stdout a pipe (read for its "ready" line), no
 * other fd of ours. Returns its pid.
 */
static pid_t wl_start_bin(const char *prog, const char *const *args)
{
	char bin[256], line[256];
	const char *argv[16];
	int p[2], n = 0;
	size_t got = 0;
	pid_t pid;

	snprintf(bin, sizeof(bin), "%s/test/helpers/%s", build_dir(), prog);
	argv[n++] = bin;
	for (int i = 0; args[i] && n < 15; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);

		dup2(nul, 0);
		dup2(p[1], 1);
		dup2(nul, 2);
		close_range(3, ~0u, 0);	/* nothing of the test runner leaks in */
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	kids[nkids++] = pid;
	while (got < sizeof(line) - 1) {
		struct pollfd pf = { p[0], POLLIN, 0 };
		ssize_t k;

		cr_assert_gt(poll(&pf, 1, 20000), 0, "the workload did not start");
		k = read(p[0], line + got, 1);
		cr_assert_eq(k, 1, "the workload died at start");
		if (line[got++] == '\n')
			break;
	}
	line[got] = '\0';
	cr_assert_not_null(strstr(line, "ready pid="), "workload said: %s", line);
	/* Kept open: with --log - it writes there until the dump. */
	outs[nouts++] = p[0];
	return pid;
}

static pid_t wl_start(const char *const *args)
{
	return wl_start_bin("rworkload", args);
}

/* Start uffd-inject with ARGS, its stdout and stderr into files named after TAG. */
static pid_t tool_spawn(const char *const *args, const char *tag)
{
	char bin[256], of[128], ef[128];
	const char *argv[24];
	int n = 0;
	pid_t pid;

	snprintf(bin, sizeof(bin), "%s/uffd-inject", build_dir());
	snprintf(of, sizeof(of), "%s/tool.out.%s", tmp, tag);
	snprintf(ef, sizeof(ef), "%s/tool.err.%s", tmp, tag);
	argv[n++] = bin;
	for (int i = 0; args[i] && n < 23; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int o = open(of, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(ef, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		dup2(o, 1);
		dup2(e, 2);
		close_range(3, ~0u, 0);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	return pid;
}

/* Wait for the tool PID started with TAG; its output in OUT and ERR. Returns its exit code. */
static int tool_wait(pid_t pid, const char *tag, char *out, size_t olen, char *err, size_t elen)
{
	char of[128], ef[128], *b;
	int st;

	snprintf(of, sizeof(of), "%s/tool.out.%s", tmp, tag);
	snprintf(ef, sizeof(ef), "%s/tool.err.%s", tmp, tag);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	b = slurp(of, NULL);
	snprintf(out, olen, "%s", b);
	free(b);
	b = slurp(ef, NULL);
	snprintf(err, elen, "%s", b);
	free(b);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Run uffd-inject with ARGS; its stdout and stderr into OUT and ERR. Returns the exit code. */
static int tool(const char *const *args, char *out, size_t olen, char *err, size_t elen)
{
	return tool_wait(tool_spawn(args, "x"), "x", out, olen, err, elen);
}

static void dump_kill(pid_t pid, const char *dir)
{
	char ps[16], out[2048], err[2048];
	const char *args[] = { "dump", "--pid", ps, "--images", dir, "--kill", NULL };
	int rc, st;

	snprintf(ps, sizeof(ps), "%d", (int)pid);
	rc = tool(args, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "dump exit %d: %s", rc, err);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	for (int i = 0; i < nkids; i++)
		if (kids[i] == pid)
			kids[i] = 0;
}

/* The arguments of a restore of DIR (with SOCK, or --eager without). */
static void restore_args(const char **args, const char *dir, const char *sock, const char *stdio)
{
	int n = 0;

	args[n++] = "restore";
	args[n++] = "--images";
	args[n++] = dir;
	if (sock) {
		args[n++] = "--socket";
		args[n++] = sock;
	} else {
		args[n++] = "--eager";
	}
	args[n++] = "--stdio";
	args[n++] = stdio;
	args[n] = NULL;
}

/* The pid a successful restore printed (registered for teardown); its summary in SUM. */
static pid_t restored(int rc, const char *out, const char *err, char *sum, size_t len)
{
	pid_t pid;

	cr_assert_eq(rc, 0, "restore exit %d: %s", rc, err);
	pid = (pid_t)strtol(out, NULL, 10);
	cr_assert_gt(pid, 0, "restore said: %s", out);
	kids[nkids++] = pid;
	if (sum)
		snprintf(sum, len, "%s", strchr(out, '\n') ? strchr(out, '\n') + 1 : "");
	return pid;
}

/* Restore DIR; returns the new pid (registered for teardown), the tool's summary in SUM. */
static pid_t restore(const char *dir, const char *sock, const char *stdio, char *sum, size_t len)
{
	char out[2048], err[2048];
	const char *args[12];
	int rc;

	restore_args(args, dir, sock, stdio);
	rc = tool(args, out, sizeof(out), err, sizeof(err));
	return restored(rc, out, err, sum, len);
}

/* Let the workload count a little, so the dump catches it in its loop. */
static void let_count(const char *log, int n)
{
	char want[32];

	snprintf(want, sizeof(want), "count %d\n", n);
	cr_assert(wait_for(log, want, 20000), "the workload does not count");
}

/* SIGTERM a restored process and check it died of it (it was alive and well). */
static void stop(pid_t pid)
{
	int st;

	cr_assert_eq(kill(pid, SIGTERM), 0);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "wait status 0x%x", st);
	for (int i = 0; i < nkids; i++)
		if (kids[i] == pid)
			kids[i] = 0;
}

Test(restore, lazy_256m_counts_logs_handles_verifies, .init = setup, .fini = teardown,
     .timeout = 120)
{
	char log[128], dir[128], sum[512], want[64];
	const char *args[] = { "--log", log, "--mib", "256", NULL };
	char *before, *after;
	size_t blen, alen;
	unsigned long c0;
	struct ts_status s;
	double t0, dt;
	pid_t pid;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args);
	let_count(log, 5);
	dump_kill(pid, dir);
	before = slurp(log, &blen);
	c0 = last_count(before);
	cr_assert_gt(c0, 4);

	daemon_start(NULL);
	t0 = now_s();
	pid = restore(dir, dmn.sock, "null", sum, sizeof(sum));
	dt = now_s() - t0;
	cr_log_info("restore of 256 MiB (lazy): %.1f ms with the tool's start; %s", dt * 1e3, sum);

	/* It counts on from where it was, at the log's offset. */
	snprintf(want, sizeof(want), "count %lu\n", c0 + 2);
	cr_assert(wait_for(log, want, 20000), "no %s after restore", want);
	after = slurp(log, &alen);
	cr_assert_gt(alen, blen);
	cr_assert_eq(memcmp(before, after, blen), 0, "the log before the dump was changed");
	snprintf(want, sizeof(want), "count %lu\n", c0 + 1);
	cr_assert_eq(strncmp(after + blen, want, strlen(want)), 0,
		     "the log goes on with '%.20s', not '%s'", after + blen, want);
	free(before);
	free(after);

	/* Its handler fires; its memory is all there. */
	cr_assert_eq(kill(pid, SIGUSR1), 0);
	cr_assert(wait_for(log, "usr1 1\n", 10000), "the SIGUSR1 handler did not run");
	cr_assert_eq(kill(pid, SIGUSR2), 0);
	cr_assert(wait_for(log, "verify ", 60000), "no verify answer");
	cr_assert(wait_for(log, "verify ok\n", 10), "%s", strstr(slurp(log, NULL), "verify"));

	/* The manager served it: every lazy page of the 256 MiB came from it. */
	cr_assert_eq(ts_status_get(&dmn, &s), 0);
	cr_assert_geq(s.tot->pages_copied, 65536, "copied %" PRIu64, s.tot->pages_copied);
	ts_status_free(&s);
	stop(pid);
	cr_assert(ts_daemon_finish(&dmn, 5000), "the daemon did not exit cleanly");
	dmn_on = false;
}

Test(restore, two_restores_of_one_dump_one_daemon, .init = setup, .fini = teardown,
     .timeout = 120)
{
	const char *args[] = { "--log", "-", "--mib", "64", NULL };
	const char *dargs[] = { "--no-fill", NULL };
	char dir[128], oa[128], ob[128], out[2048], err[2048];
	const char *aa[12], *ab[12];
	pid_t pid, pa, pb, ta, tb;
	struct ts_status s;
	int rc;

	snprintf(dir, sizeof(dir), "%s/img", tmp);
	snprintf(oa, sizeof(oa), "%s/out-a", tmp);
	snprintf(ob, sizeof(ob), "%s/out-b", tmp);
	pid = wl_start(args);
	usleep(100000);
	dump_kill(pid, dir);
	daemon_start(dargs);

	/* Both at once: two tools, each its own output file. */
	restore_args(aa, dir, dmn.sock, oa);
	restore_args(ab, dir, dmn.sock, ob);
	ta = tool_spawn(aa, "a");
	tb = tool_spawn(ab, "b");
	rc = tool_wait(ta, "a", out, sizeof(out), err, sizeof(err));
	pa = restored(rc, out, err, NULL, 0);
	rc = tool_wait(tb, "b", out, sizeof(out), err, sizeof(err));
	pb = restored(rc, out, err, NULL, 0);

	/* Both count on, into their own stdout. */
	cr_assert(wait_for(oa, "count ", 20000));
	cr_assert(wait_for(ob, "count ", 20000));
	cr_assert_eq(ts_status_get(&dmn, &s), 0);
	cr_assert_eq(s.tot->targets, 2, "the daemon serves %u processes", s.tot->targets);
	cr_assert_not_null(ts_status_pid(&s, pa));
	cr_assert_not_null(ts_status_pid(&s, pb));
	for (int i = 0; i < s.n; i++) {
		cr_assert_eq(s.t[i]->image_id, s.t[0]->image_id);
		cr_assert_gt(s.t[i]->faults, 0);
	}
	ts_status_free(&s);
	cr_assert(pa != pb);
	cr_assert_eq(kill(pa, SIGUSR2), 0);
	cr_assert_eq(kill(pb, SIGUSR2), 0);
	cr_assert(wait_for(oa, "verify ok\n", 60000), "A: %s", slurp(oa, NULL));
	cr_assert(wait_for(ob, "verify ok\n", 60000), "B: %s", slurp(ob, NULL));
	stop(pa);
	stop(pb);
}

Test(restore, forks_and_mremaps_right_away, .init = setup, .fini = teardown, .timeout = 120)
{
	char log[128], dir[128];
	const char *args[] = { "--log", log, "--mib", "64", NULL };
	const char *dargs[] = { "--no-fill", NULL };
	struct ts_status s;
	uint64_t forks = 0, remaps = 0;
	pid_t pid;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args);
	let_count(log, 3);
	dump_kill(pid, dir);
	daemon_start(dargs);
	pid = restore(dir, dmn.sock, "null", NULL, 0);
	cr_assert_eq(kill(pid, SIGHUP), 0);
	cr_assert(wait_for(log, "forkremap ", 60000), "no forkremap answer");
	cr_assert(wait_for(log, "forkremap ok\n", 10), "%s", strstr(slurp(log, NULL), "forkremap"));
	cr_assert_eq(ts_status_get(&dmn, &s), 0);
	for (int i = 0; i < s.n; i++) {
		forks += s.t[i]->ev_fork;
		remaps += s.t[i]->ev_remap;
	}
	ts_status_free(&s);
	cr_assert_geq(forks, 1, "no FORK event reached the manager");
	cr_assert_geq(remaps, 1, "no REMAP event reached the manager");
	cr_assert_eq(kill(pid, SIGUSR2), 0);
	cr_assert(wait_for(log, "verify ok\n", 60000), "%s", slurp(log, NULL));
	stop(pid);
}

Test(restore, eager_needs_no_manager, .init = setup, .fini = teardown, .timeout = 120)
{
	char log[128], dir[128], sum[512];
	const char *args[] = { "--log", log, "--mib", "64", NULL };
	pid_t pid;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args);
	let_count(log, 3);
	dump_kill(pid, dir);
	pid = restore(dir, NULL, "null", sum, sizeof(sum));
	cr_assert_not_null(strstr(sum, " 0 lazy"), "%s", sum);
	cr_assert_eq(kill(pid, SIGUSR1), 0);
	cr_assert(wait_for(log, "usr1 1\n", 10000));
	cr_assert_eq(kill(pid, SIGUSR2), 0);
	cr_assert(wait_for(log, "verify ok\n", 60000), "%s", slurp(log, NULL));
	stop(pid);
}

/* Dumps that restore could not bring back: refused, the target left running unharmed. */
static void refused(const char *flag, const char *says)
{
	char log[128], dir[128], ps[16], out[2048], err[2048];
	const char *args[] = { "--log", log, "--mib", "8", flag, NULL };
	const char *dargs[] = { "dump", "--pid", ps, "--images", dir, "--kill", NULL };
	unsigned long c0;
	char *b, want[32];
	pid_t pid;
	int rc;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args);
	let_count(log, 3);
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	rc = tool(dargs, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 1, "dump exit %d: %s %s", rc, out, err);
	cr_assert_not_null(strstr(err, says), "stderr: %s", err);
	cr_assert_eq(access(dir, F_OK), -1, "the image dir was left behind");
	/* Still running: it counts on, its handler and memory are fine. */
	b = slurp(log, NULL);
	c0 = last_count(b);
	free(b);
	snprintf(want, sizeof(want), "count %lu\n", c0 + 2);
	cr_assert(wait_for(log, want, 10000), "the target stopped counting");
	cr_assert_eq(kill(pid, SIGUSR1), 0);
	cr_assert(wait_for(log, "usr1 1\n", 10000));
	cr_assert_eq(kill(pid, SIGUSR2), 0);
	cr_assert(wait_for(log, "verify ok\n", 20000), "%s", slurp(log, NULL));
}

/* A second thread, asleep in pause(), no longer stops a dump: both come back. */
Test(restore, second_thread_comes_back, .init = setup, .fini = teardown, .timeout = 60)
{
	char log[128], dir[128], sum[512], want[32], path[64], *b;
	const char *args[] = { "--log", log, "--mib", "8", "--thread", NULL };
	unsigned long c0;
	pid_t pid;
	int n = 0;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args);
	let_count(log, 3);
	dump_kill(pid, dir);
	b = slurp(log, NULL);
	c0 = last_count(b);
	free(b);
	pid = restore(dir, NULL, "null", sum, sizeof(sum));
	cr_assert_not_null(strstr(sum, ", 2 threads ("), "%s", sum);
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	{
		DIR *d = opendir(path);
		struct dirent *de;

		cr_assert_not_null(d);
		while ((de = readdir(d)))
			n += de->d_name[0] != '.';
		closedir(d);
	}
	cr_assert_eq(n, 2, "%d threads after restore", n);
	snprintf(want, sizeof(want), "count %lu\n", c0 + 2);
	cr_assert(wait_for(log, want, 20000), "no %s after restore", want);
	cr_assert_eq(kill(pid, SIGUSR2), 0);
	cr_assert(wait_for(log, "verify ok\n", 20000), "%s", slurp(log, NULL));
	stop(pid);
}

Test(restore, refuses_pipe, .init = setup, .fini = teardown, .timeout = 60)
{
	refused("--pipe", "is a pipe");
}

Test(restore, refuses_socket, .init = setup, .fini = teardown, .timeout = 60)
{
	refused("--socket", "is a socket");
}

Test(restore, refuses_eventfd, .init = setup, .fini = teardown, .timeout = 60)
{
	refused("--eventfd", "anon_inode:[eventfd]");
}

Test(restore, refuses_armed_timer, .init = setup, .fini = teardown, .timeout = 60)
{
	refused("--alarm", "ITIMER_REAL");
}

Test(restore, refuses_changed_file, .init = setup, .fini = teardown, .timeout = 60)
{
	char log[128], dir[128], out[2048], err[2048];
	const char *args[] = { "--log", log, "--mib", "8", NULL };
	const char *rargs[] = { "restore", "--images", dir, "--eager", NULL };
	pid_t pid;
	int rc, fd;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args);
	let_count(log, 3);
	dump_kill(pid, dir);
	fd = open(log, O_WRONLY | O_APPEND);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "x\n", 2), 2);
	close(fd);
	rc = tool(rargs, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 1, "restore exit %d: %s", rc, out);
	cr_assert_not_null(strstr(err, "changed since the dump"), "stderr: %s", err);
	cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "something was left running");
}

Test(restore, restored_process_dumps_and_restores_again, .init = setup, .fini = teardown,
     .timeout = 120)
{
	char log[128], dir[128], dir2[128], want[32];
	const char *args[] = { "--log", log, "--mib", "16", NULL };
	unsigned long c1;
	struct ts_status s;
	uint64_t served = 0;
	char *b;
	pid_t pid;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	snprintf(dir2, sizeof(dir2), "%s/img2", tmp);
	pid = wl_start(args);
	let_count(log, 3);
	dump_kill(pid, dir);
	daemon_start(NULL);
	pid = restore(dir, dmn.sock, "null", NULL, 0);
	/* Once every page is in, the manager lets go: only the process's own inert uffd copy is left. */
	for (int i = 0; i < 1000 && !served; i++) {
		cr_assert_eq(ts_status_get(&dmn, &s), 0);
		served = s.tot->served;
		ts_status_free(&s);
		if (!served)
			usleep(10000);
	}
	cr_assert_eq(served, 1, "the manager never finished serving");
	dump_kill(pid, dir2);
	b = slurp(log, NULL);
	c1 = last_count(b);
	free(b);
	pid = restore(dir2, dmn.sock, "null", NULL, 0);
	snprintf(want, sizeof(want), "count %lu\n", c1 + 1);
	cr_assert(wait_for(log, want, 20000), "no %s after the second restore", want);
	cr_assert_eq(kill(pid, SIGUSR2), 0);
	cr_assert(wait_for(log, "verify ok\n", 60000), "%s", slurp(log, NULL));
	stop(pid);
}

Test(restore, manager_death_freezes_not_zeros, .init = setup, .fini = teardown, .timeout = 60)
{
	char log[128], dir[128], path[64], st[512];
	const char *args[] = { "--log", log, "--mib", "64", NULL };
	const char *dargs[] = { "--no-fill", NULL };
	char *b, *p;
	pid_t pid;
	int ws;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args);
	let_count(log, 3);
	dump_kill(pid, dir);
	daemon_start(dargs);
	pid = restore(dir, dmn.sock, "null", NULL, 0);
	b = slurp(log, NULL);
	let_count(log, (int)last_count(b) + 1);
	free(b);

	/* The manager dies with most pages unserved. */
	cr_assert_eq(kill(dmn.pid, SIGKILL), 0);
	cr_assert_eq(waitpid(dmn.pid, &ws, 0), dmn.pid);
	dmn.pid = 0;

	/* Its own copy of the uffd keeps the faults waiting: no zeros read, no verdict. */
	cr_assert_eq(kill(pid, SIGUSR2), 0);
	usleep(1000000);
	b = slurp(log, NULL);
	cr_assert_null(strstr(b, "verify"), "it read its memory without the manager: %s",
		       strstr(b, "verify"));
	free(b);
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	b = slurp(path, NULL);
	p = strrchr(b, ')');
	cr_assert_not_null(p);
	snprintf(st, sizeof(st), "%s", p);
	free(b);
	cr_assert_eq(st[2], 'S', "state: %.20s", st);
	stop(pid);
}

/* The state letter of PID in /proc/PID/stat. */
static char proc_state(pid_t pid)
{
	char path[64], *b, *p, c;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	b = slurp(path, NULL);
	p = strrchr(b, ')');
	c = p && p[1] && p[2] ? p[2] : '?';
	free(b);
	return c;
}

Test(restore, stopped_stays_stopped, .init = setup, .fini = teardown, .timeout = 60)
{
	char log[128], dir[128], want[32], *b;
	const char *args[] = { "--log", log, "--mib", "8", NULL };
	unsigned long c0;
	pid_t pid;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args);
	let_count(log, 3);
	cr_assert_eq(kill(pid, SIGSTOP), 0);
	for (int i = 0; i < 200 && proc_state(pid) != 'T'; i++)
		usleep(5000);
	cr_assert_eq(proc_state(pid), 'T');
	dump_kill(pid, dir);
	b = slurp(log, NULL);
	c0 = last_count(b);
	free(b);
	pid = restore(dir, NULL, "null", NULL, 0);
	for (int i = 0; i < 200 && proc_state(pid) != 'T'; i++)
		usleep(5000);
	cr_assert_eq(proc_state(pid), 'T', "restored, it runs: state %c", proc_state(pid));
	usleep(100000);
	b = slurp(log, NULL);
	cr_assert_eq(last_count(b), c0, "it counted while stopped");
	free(b);
	cr_assert_eq(kill(pid, SIGCONT), 0);
	snprintf(want, sizeof(want), "count %lu\n", c0 + 1);
	cr_assert(wait_for(log, want, 10000), "no %s after SIGCONT", want);
	stop(pid);
}

/*
 * dump --leave-stopped (a migration's final freeze): the images restore as
 * --kill's do, while the process waits stopped; SIGCONT resumes it unharmed.
 */
Test(restore, leave_stopped_then_resume_or_restore, .init = setup, .fini = teardown, .timeout = 120)
{
	char log[128], dir[128], ps[16], out[2048], err[2048], *b;
	const char *args[] = { "--log", log, "--mib", "64", NULL };
	const char *dump[] = { "dump", "--pid", ps, "--images", dir, "--leave-stopped", NULL };
	unsigned long c0;
	pid_t pid, copy;
	int rc;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args);
	let_count(log, 3);
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	rc = tool(dump, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "dump exit %d: %s", rc, err);
	cr_assert_not_null(strstr(out, "left stopped (SIGSTOP)"), "%s", out);
	cr_assert_eq(proc_state(pid), 'T', "state %c after the dump", proc_state(pid));
	b = slurp(log, NULL);
	c0 = last_count(b);
	free(b);
	usleep(200000);
	b = slurp(log, NULL);
	cr_assert_eq(last_count(b), c0, "it counted while stopped");
	free(b);
	/* The images are complete: a copy restores and has every byte. */
	copy = restore(dir, NULL, "null", NULL, 0);
	cr_assert_eq(kill(copy, SIGUSR2), 0);
	cr_assert(wait_for(log, "verify ok\n", 60000), "%s", slurp(log, NULL));
	stop(copy);
	/* And the original goes on where it stopped. */
	cr_assert_eq(kill(pid, SIGCONT), 0);
	cr_assert_eq(kill(pid, SIGUSR1), 0);
	cr_assert(wait_for(log, "usr1 1\n", 10000), "the original did not resume: %s", slurp(log, NULL));
	stop(pid);
}

/* --leave-stopped with --kill: a usage error, the process untouched. */
Test(restore, leave_stopped_or_kill, .init = setup, .fini = teardown, .timeout = 60)
{
	char dir[128], ps[16], out[2048], err[2048];
	const char *dump[] = { "dump", "--pid", ps, "--images", dir, "--kill", "--leave-stopped",
			       NULL };

	snprintf(ps, sizeof(ps), "%d", (int)getpid());	/* ours: refused before it is looked at */
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	cr_assert_eq(tool(dump, out, sizeof(out), err, sizeof(err)), 2);
	cr_assert_not_null(strstr(err, "--kill or --leave-stopped, not both"), "%s", err);
	cr_assert_neq(access(dir, F_OK), 0, "the image dir was made");
}

/*
 * The poisoned pages of a dump of rworkload --poison (pages 5, 6 and 37 of
 * its region): recorded PE_POISON|PE_PRESENT|PE_LAZY with zeros standing in
 * for them in the pages file, nowhere else.
 */
static void assert_poison_recorded(const char *dir, pid_t pid)
{
	struct pages_cache c = { 0 };
	struct pagemap *pm = NULL;
	struct img_err e = { "" };
	uint64_t at[3];
	size_t n = 0;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	cr_assert_geq(dfd, 0);
	cr_assert_eq(pagemap_load(&pm, dfd, (uint32_t)pid, &c, &e), 0, "%s", e.msg);
	cr_assert_eq(pm->poison_pages, 3, "%" PRIu64 " poisoned pages recorded", pm->poison_pages);
	for (size_t i = 0; i < pm->n; i++) {
		const struct pm_entry *pe = &pm->e[i];

		if (!(pe->flags & PE_POISON))
			continue;
		cr_assert_eq(pe->flags, PE_POISON | PE_PRESENT | PE_LAZY, "flags 0x%x", pe->flags);
		for (uint64_t a = pe->start; a < pe->end; a += 4096) {
			cr_assert_lt(n, 3);
			at[n++] = a;
			for (uint64_t k = 0; k < 4096; k++)
				cr_assert_eq(pm->pages->base[pe->off + (a - pe->start) + k], 0,
					     "stand-in of 0x%" PRIx64 " not zero", a);
		}
	}
	cr_assert_eq(n, 3);
	cr_assert(at[1] == at[0] + 4096 && at[2] == at[0] + 32 * 4096,
		  "poisoned 0x%" PRIx64 " 0x%" PRIx64 " 0x%" PRIx64, at[0], at[1], at[2]);
	pagemap_free(pm, &c);
	close(dfd);
}

/* Served lazily: every other byte right, each poisoned page SIGBUS, poisoned by the manager. */
Test(restore, poisoned_pages_fault_sigbus_lazy, .init = setup, .fini = teardown, .timeout = 120)
{
	char log[128], dir[128], sum[512];
	const char *args[] = { "--log", log, "--mib", "4", "--poison", NULL };
	struct ts_status s;
	uint64_t poisoned = 0;
	pid_t pid;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	daemon_start(NULL);
	pid = wl_start(args);
	let_count(log, 3);
	dump_kill(pid, dir);
	assert_poison_recorded(dir, pid);
	pid = restore(dir, dmn.sock, "null", sum, sizeof(sum));
	cr_assert_not_null(strstr(sum, " 0 poisoned"), "restore poisoned them itself: %s", sum);
	cr_assert_eq(kill(pid, SIGUSR2), 0);
	cr_assert(wait_for(log, "verify ok\npoison sigbus 3 code ", 60000), "%s", slurp(log, NULL));
	for (int i = 0; i < 500 && poisoned < 3; i++) {
		cr_assert_eq(ts_status_get(&dmn, &s), 0);
		poisoned = s.tot->has_pages_poisoned ? s.tot->pages_poisoned : 0;
		ts_status_free(&s);
		usleep(10000);
	}
	cr_assert_eq(poisoned, 3, "the manager poisoned %" PRIu64 " pages", poisoned);
	stop(pid);
}

/* --eager: restore poisons them itself, no manager. */
Test(restore, poisoned_pages_fault_sigbus_eager, .init = setup, .fini = teardown, .timeout = 120)
{
	char log[128], dir[128], sum[512];
	const char *args[] = { "--log", log, "--mib", "4", "--poison", NULL };
	pid_t pid;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args);
	let_count(log, 3);
	dump_kill(pid, dir);
	pid = restore(dir, NULL, "null", sum, sizeof(sum));
	cr_assert_not_null(strstr(sum, " 0 lazy, 3 poisoned"), "%s", sum);
	cr_assert_eq(kill(pid, SIGUSR2), 0);
	cr_assert(wait_for(log, "verify ok\npoison sigbus 3 code ", 60000), "%s", slurp(log, NULL));
	stop(pid);
}

static bool huge_reserved;

static void huge_teardown(void)
{
	teardown();
	if (huge_reserved)
		th_release(8);
	huge_reserved = false;
}

/*
 * Dump rworkload --huge 16 (8 huge pages of 2 MiB: 2 with data, 2 written
 * with zeros, 4 never touched) into DIR with --kill, and check the images
 * have it in CRIU's form: MAP_HUGETLB and the page size in the VMA's flags,
 * the 4 touched huge pages whole and lazy in the pagemap.
 */
static void dump_huge(const char *log, const char *dir)
{
	const char *args[] = { "--log", log, "--mib", "4", "--huge", "16", NULL };
	struct pages_cache c = { 0 };
	struct img_err e = { "" };
	struct img_task task;
	const VmaEntry *hv = NULL;
	uint64_t present = 0;
	char why[256];
	pid_t pid;
	int dfd;

	if (!th_reserve(8, why, sizeof(why)))
		cr_skip_test("needs 8 free 2 MiB huge pages: %s", why);
	huge_reserved = true;
	pid = wl_start(args);
	let_count(log, 3);
	dump_kill(pid, dir);
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(dfd, 0);
	cr_assert_eq(img_task_load(&task, dfd, (uint32_t)pid, &c, &e), 0, "%s", e.msg);
	for (size_t i = 0; i < task.mm->n_vmas; i++)
		if (task.mm->vmas[i]->flags & VMA_MAP_HUGETLB)
			hv = task.mm->vmas[i];
	cr_assert_not_null(hv, "no hugetlb VMA in the dump");
	cr_assert_eq(hv->end - hv->start, 16ull << 20);
	cr_assert_eq(vma_hshift(hv->flags), 21, "flags 0x%x", hv->flags);
	cr_assert_eq(hv->status, VMA_AREA_REGULAR | VMA_ANON_PRIVATE);
	for (uint64_t a = hv->start; a < hv->end; a += 2ull << 20) {
		struct pm_run run;

		cr_assert_eq(pagemap_resolve_block(task.pm, a, 2ull << 20, &run), 0,
			     "huge page 0x%" PRIx64 " only partly dumped", a);
		if (run.src == PM_DATA) {
			cr_assert_eq(run.flags, PE_LAZY | PE_PRESENT);
			present++;
		}
	}
	cr_assert_eq(present, 4, "%" PRIu64 " huge pages in the dump", present);
	img_task_free(&task, &c);
	close(dfd);
}

/* Restored lazily: served in whole huge pages, every byte right. */
Test(restore, hugetlb_lazy, .init = setup, .fini = huge_teardown, .timeout = 120)
{
	char log[128], dir[128], sum[512];
	struct ts_status s;
	pid_t pid;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	daemon_start(NULL);
	dump_huge(log, dir);
	pid = restore(dir, dmn.sock, "null", sum, sizeof(sum));
	cr_assert_eq(kill(pid, SIGUSR2), 0);
	cr_assert(wait_for(log, "verify ok\n", 60000), "%s", slurp(log, NULL));
	/* The check read every page: all 8 are huge pages again. */
	cr_assert_eq(tw_status_bytes(pid, "HugetlbPages"), 16ull << 20, "%" PRIu64,
		     tw_status_bytes(pid, "HugetlbPages"));
	cr_assert_eq(ts_status_get(&dmn, &s), 0);
	cr_assert_geq(s.tot->pages_copied, 4 * 512, "%" PRIu64 " pages copied",
		      s.tot->pages_copied);
	ts_status_free(&s);
	stop(pid);
}

/* Restored with --eager: written before it runs, every byte right. */
Test(restore, hugetlb_eager, .init = setup, .fini = huge_teardown, .timeout = 120)
{
	char log[128], dir[128], sum[512];
	pid_t pid;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	dump_huge(log, dir);
	pid = restore(dir, NULL, "null", sum, sizeof(sum));
	cr_assert_not_null(strstr(sum, " 0 lazy"), "%s", sum);
	cr_assert_eq(kill(pid, SIGUSR2), 0);
	cr_assert(wait_for(log, "verify ok\n", 60000), "%s", slurp(log, NULL));
	cr_assert_eq(tw_status_bytes(pid, "HugetlbPages"), 16ull << 20, "%" PRIu64,
		     tw_status_bytes(pid, "HugetlbPages"));
	stop(pid);
}

/*
 * Shared memory in CRIU 4.2's records, restored from a dump of rworkload
 * that the test extends by hand with two objects (what `uffd-inject dump`
 * and CRIU write): shared anonymous memory of SHM_A pages, mapped from its
 * page 2 on, its pages i % 8 == 3 holes (no entry); and a memfd "tmfd" of
 * SHM_M pages, open at fd SHM_FD at offset SHM_POS, its first SHM_M - 2
 * pages mapped (page SHM_M - 2 has data only the fd reaches, the last is a
 * hole), its holes dumped as pages of zeros as CRIU does. The restored
 * process never touches them: the test reads both areas through
 * process_vm_readv (which faults and waits, as the process would) and the
 * memfd through /proc/PID/fd, every byte, and writes through one area to
 * see it in the object.
 */
#define SHM_PG		4096ull
#define SHM_A		48	/* anon object pages */
#define SHM_M		20	/* memfd object pages */
#define SHM_FD		100
#define SHM_POS		(2 * SHM_PG + 7)
#define SHM_ADDR_A	0x500000000000ull
#define SHM_ADDR_M	0x500010000000ull
#define SHM_ADDR_P	0x500010100000ull	/* the memfd mapped private */
#define SHM_FILE_A	9001u
#define SHM_FILE_M	9002u
#define SHM_FILE_FD	9003u
#define SHM_ID_A	777u
#define SHM_ID_M	778u

/*
 * The memfd: held open at SHM_FD and mapped private too (else reachable
 * through its shared area only), its seals.
 */
static bool shm_no_fd;
static bool shm_priv;	/* with shm_no_fd: keep the private mapping of the memfd */
static bool shm_no_anon;	/* no area maps the shared anonymous object */
static uint32_t shm_seals = 2 | 4;	/* F_SEAL_SHRINK | F_SEAL_GROW */

static uint64_t shm_word(unsigned obj, uint64_t page, uint64_t w)
{
	uint64_t x = ((uint64_t)obj << 40) ^ (page << 16) ^ w ^ 0x5eed;

	x *= 0x9e3779b97f4a7c15ull;
	return x ^ (x >> 31);
}

/* Does page K of object OBJ (1 anon, 2 memfd) hold data? */
static bool shm_has(unsigned obj, uint64_t k)
{
	if (obj == 1)
		return k % 8 != 3;
	return k % 8 != 3 && k != SHM_M - 1;
}

static void shm_put(int dirfd, const char *name, uint32_t magic, ProtobufCMessage **m, size_t n)
{
	struct img_writer w;
	struct img_err err = { "" };

	cr_assert_eq(img_create(&w, dirfd, name, magic, &err), 0, "%s", err.msg);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(img_write(&w, m[i], &err), 0, "%s", err.msg);
	cr_assert_eq(img_finish(&w, &err), 0, "%s", err.msg);
}

/* Every record of NAME, and room for EXTRA more. */
static ProtobufCMessage **shm_get(int dirfd, const char *name, uint32_t magic,
				  const ProtobufCMessageDescriptor *d, size_t extra, size_t *n)
{
	ProtobufCMessage **v = calloc(256 + extra, sizeof(*v)), *m;
	struct img_reader r;
	struct img_err err = { "" };
	int ret;

	*n = 0;
	cr_assert_eq(img_open(&r, dirfd, name, magic, &err), 0, "%s", err.msg);
	while ((ret = img_next(&r, d, &m, &err)) > 0 && *n < 256)
		v[(*n)++] = m;
	cr_assert_eq(ret, 0, "%s", err.msg);
	img_close(&r);
	return v;
}

/* The contents of object OBJ: pagemap-shmem-ID.img and pages-PAGES_ID.img. */
static void shm_contents(int dirfd, unsigned obj, uint32_t id, uint32_t pages_id, uint64_t pages,
			 bool zeros_as_data)
{
	PagemapHead head = PAGEMAP_HEAD__INIT;
	PagemapEntry pe[64];
	ProtobufCMessage *m[65];
	static uint64_t buf[64 * 512];
	size_t n = 0, np = 0;
	char name[64];

	head.pages_id = pages_id;
	m[n++] = &head.base;
	for (uint64_t k = 0; k < pages; k++) {
		if (!shm_has(obj, k) && !zeros_as_data)
			continue;
		for (uint64_t w = 0; w < 512; w++)
			buf[np * 512 + w] = shm_has(obj, k) ? shm_word(obj, k, w) : 0;
		np++;
		pagemap_entry__init(&pe[n - 1]);
		pe[n - 1].vaddr = k * SHM_PG;
		pe[n - 1].has_nr_pages = true;
		pe[n - 1].nr_pages = 1;
		pe[n - 1].has_flags = true;
		pe[n - 1].flags = PE_PRESENT;
		m[n] = &pe[n - 1].base;
		n++;
	}
	snprintf(name, sizeof(name), "pagemap-shmem-%u.img", id);
	shm_put(dirfd, name, IMG_PAGEMAP_MAGIC, m, n);
	snprintf(name, sizeof(name), "pages-%u.img", pages_id);
	{
		int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

		cr_assert_geq(fd, 0);
		cr_assert_eq(write(fd, buf, np * SHM_PG), (ssize_t)(np * SHM_PG));
		close(fd);
	}
}

/*
 * Add both objects to the dump of PID in DIR: its areas and its fd (in
 * FDINFO); with OBJECTS, the objects themselves and their files too (once
 * per dump).
 */
static void shm_craft(const char *dir, pid_t pid, const char *fdinfo, bool objects)
{
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	MemfdInodeEntry ie[2];
	ProtobufCMessage *im[2], **fm, **dm;
	FileEntry fe[3];
	MemfdFileEntry mf[3];
	FownEntry fown = FOWN_ENTRY__INIT;
	FdinfoEntry fdi = FDINFO_ENTRY__INIT;
	VmaEntry va = VMA_ENTRY__INIT, vm = VMA_ENTRY__INIT, vp = VMA_ENTRY__INIT, **vv;
	MmEntry *mm;
	struct img_err err = { "" };
	char name[64];
	size_t nf = 0, nd, nv, nshm;

	cr_assert_geq(dirfd, 0);
	for (int i = 0; i < 2; i++) {
		memfd_inode_entry__init(&ie[i]);
		im[i] = &ie[i].base;
	}
	if (!objects)
		goto task;
	ie[0].name = SHM_ANON_NAME;
	ie[0].size = SHM_A * SHM_PG;
	ie[0].shmid = SHM_ID_A;
	ie[0].seals = 1;	/* F_SEAL_SEAL, as such memory has */
	ie[0].inode_id = 1;
	ie[1].name = "tmfd";
	ie[1].size = SHM_M * SHM_PG;
	ie[1].shmid = SHM_ID_M;
	ie[1].seals = shm_seals;
	ie[1].inode_id = 2;
	shm_put(dirfd, "memfd.img", IMG_MEMFD_INODE_MAGIC, im, 2);
	shm_contents(dirfd, 1, SHM_ID_A, 90, SHM_A, false);
	shm_contents(dirfd, 2, SHM_ID_M, 91, SHM_M - 1, true);

	fm = shm_get(dirfd, "files.img", IMG_FILES_MAGIC, &file_entry__descriptor, 3, &nf);
	for (int i = 0; i < 3; i++) {
		file_entry__init(&fe[i]);
		memfd_file_entry__init(&mf[i]);
		fe[i].type = SHM_FD_TYPE_MEMFD;
		fe[i].id = mf[i].id = SHM_FILE_A + (uint32_t)i;
		fe[i].memfd = &mf[i];
		mf[i].fown = &fown;
		mf[i].flags = i == 2 ? O_RDWR : 0;
		mf[i].pos = i == 2 ? SHM_POS : 0;
		mf[i].inode_id = i == 0 ? 1 : 2;
		fm[nf + (size_t)i] = &fe[i].base;
	}
	shm_put(dirfd, "files.img", IMG_FILES_MAGIC, fm, nf + 3);
	for (size_t i = 0; i < nf; i++)
		protobuf_c_message_free_unpacked(fm[i], NULL);
	free(fm);
task:
	dm = shm_get(dirfd, fdinfo, IMG_FDINFO_MAGIC, &fdinfo_entry__descriptor, 1, &nd);
	fdi.id = SHM_FILE_FD;
	fdi.type = SHM_FD_TYPE_MEMFD;
	fdi.fd = SHM_FD;
	dm[nd] = &fdi.base;
	shm_put(dirfd, fdinfo, IMG_FDINFO_MAGIC, dm, nd + (shm_no_fd ? 0 : 1));

	snprintf(name, sizeof(name), "mm-%d.img", (int)pid);
	cr_assert_eq(img_read_one(dirfd, name, IMG_MM_MAGIC, &mm_entry__descriptor,
				  (ProtobufCMessage **)&mm, &err), 0, "%s", err.msg);
	va.start = SHM_ADDR_A;
	va.end = SHM_ADDR_A + (SHM_A - 2) * SHM_PG;
	va.pgoff = 2 * SHM_PG;
	vm.start = SHM_ADDR_M;
	vm.end = SHM_ADDR_M + (SHM_M - 2) * SHM_PG;
	vm.pgoff = 0;
	for (VmaEntry *v = &va; v; v = v == &va ? &vm : NULL) {
		v->shmid = v == &va ? SHM_FILE_A : SHM_FILE_M;
		v->prot = PROT_READ | PROT_WRITE;
		v->flags = MAP_SHARED;
		v->status = VMA_AREA_REGULAR | VMA_FILE_SHARED | VMA_AREA_MEMFD;
		v->fd = -1;
	}
	/* The memfd mapped private too, its pages 1-4 (no copy of its own). */
	vp.start = SHM_ADDR_P;
	vp.end = SHM_ADDR_P + 4 * SHM_PG;
	vp.pgoff = SHM_PG;
	vp.shmid = SHM_FILE_M;
	vp.prot = PROT_READ;
	vp.flags = MAP_PRIVATE;
	vp.status = VMA_AREA_REGULAR | VMA_FILE_PRIVATE | VMA_AREA_MEMFD;
	vp.fd = -1;
	/* In address order: both lie below the stack and above the rest. */
	nshm = 1 + !shm_no_anon + (!shm_no_fd || shm_priv);
	vv = calloc(mm->n_vmas + 3, sizeof(*vv));
	nv = 0;
	for (size_t i = 0; i <= mm->n_vmas; i++) {
		if (i == mm->n_vmas || (nv == i && mm->vmas[i]->start > SHM_ADDR_A)) {
			if (!shm_no_anon)
				vv[nv++] = &va;
			vv[nv++] = &vm;
			if (!shm_no_fd || shm_priv)
				vv[nv++] = &vp;
		}
		if (i < mm->n_vmas)
			vv[nv++] = mm->vmas[i];
		if (nv == mm->n_vmas + nshm)
			break;
	}
	cr_assert_eq(nv, mm->n_vmas + nshm);
	{
		VmaEntry **old = mm->vmas;
		size_t on = mm->n_vmas;
		ProtobufCMessage *m1 = &mm->base;

		mm->vmas = vv;
		mm->n_vmas = nv;
		shm_put(dirfd, name, IMG_MM_MAGIC, &m1, 1);
		mm->vmas = old;
		mm->n_vmas = on;
	}
	mm_entry__free_unpacked(mm, NULL);
	free(vv);
	for (size_t i = 0; i < nd; i++)
		protobuf_c_message_free_unpacked(dm[i], NULL);
	free(dm);
	close(dirfd);
}

/* Read LEN bytes at A of PID (faulting as the process would). */
static void shm_read(pid_t pid, uint64_t a, void *buf, size_t len)
{
	struct iovec l = { buf, len }, r = { (void *)(uintptr_t)a, len };

	cr_assert_eq(process_vm_readv(pid, &l, 1, &r, 1, 0), (ssize_t)len,
		     "process_vm_readv 0x%" PRIx64 ": %s", a, strerror(errno));
}

/* Compare page K of object OBJ with BUF. */
static void shm_cmp(unsigned obj, uint64_t k, const uint64_t *buf, const char *how)
{
	for (uint64_t w = 0; w < 512; w++) {
		uint64_t want = shm_has(obj, k) ? shm_word(obj, k, w) : 0;

		if (buf[w] != want)
			cr_assert_fail("%s: object %u page %" PRIu64 " word %" PRIu64 ": %016" PRIx64
				       ", want %016" PRIx64, how, obj, k, w, buf[w], want);
	}
}

/* Every byte of both objects, through the areas and through the fd; the maps lines. */
static void shm_verify(pid_t pid)
{
	static uint64_t buf[512];
	char path[64], *maps;
	int fd;

	for (uint64_t k = 2; k < SHM_A && !shm_no_anon; k++) {
		shm_read(pid, SHM_ADDR_A + (k - 2) * SHM_PG, buf, SHM_PG);
		shm_cmp(1, k, buf, "anon area");
	}
	for (uint64_t k = 0; k < SHM_M - 2; k++) {
		shm_read(pid, SHM_ADDR_M + k * SHM_PG, buf, SHM_PG);
		shm_cmp(2, k, buf, "memfd area");
	}
	for (uint64_t k = 1; k < 5 && (!shm_no_fd || shm_priv); k++) {
		shm_read(pid, SHM_ADDR_P + (k - 1) * SHM_PG, buf, SHM_PG);
		shm_cmp(2, k, buf, "memfd mapped private");
	}
	if (shm_no_fd)
		goto maps;
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, SHM_FD);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	for (uint64_t k = 0; k < SHM_M; k++) {
		cr_assert_eq(pread(fd, buf, SHM_PG, (off_t)(k * SHM_PG)), (ssize_t)SHM_PG);
		shm_cmp(2, k, buf, "memfd fd");
	}
	cr_assert_eq(fcntl(fd, F_GET_SEALS), 2 | 4);
	close(fd);
	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", (int)pid, SHM_FD);
	maps = slurp(path, NULL);
	cr_assert_not_null(strstr(maps, "pos:\t8199\n"), "%s", maps);
	cr_assert_not_null(strstr(maps, "flags:\t0100002\n"), "O_RDWR|O_LARGEFILE: %s", maps);
	free(maps);
maps:
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	maps = slurp(path, NULL);
	cr_assert(shm_no_anon || strstr(maps, "500000000000-50000002e000 rw-s 00002000 00:01"),
		  "%s", maps);
	cr_assert(shm_no_anon || strstr(maps, "/dev/zero (deleted)"), "%s", maps);
	cr_assert_not_null(strstr(maps, "500010000000-500010012000 rw-s 00000000 00:01"), "%s", maps);
	cr_assert_not_null(strstr(maps, "/memfd:tmfd (deleted)"), "%s", maps);
	cr_assert((shm_no_fd && !shm_priv) ||
		  strstr(maps, "500010100000-500010104000 r--p 00001000 00:01"), "%s", maps);
	free(maps);
}

/* A write through the area lands in the object: the fd reads it. */
static void shm_write_through(pid_t pid)
{
	static uint64_t w[512], r[512];
	struct iovec l = { w, sizeof(w) }, rem = { (void *)(uintptr_t)(SHM_ADDR_M + 4 * SHM_PG), sizeof(w) };
	char path[64];
	int fd;

	for (int i = 0; i < 512; i++)
		w[i] = 0xabcdef00ull + (uint64_t)i;
	cr_assert_eq(process_vm_writev(pid, &l, 1, &rem, 1, 0), (ssize_t)sizeof(w));
	/* The object through the descriptor, or (none) through its area's own file. */
	if (shm_no_fd)
		snprintf(path, sizeof(path), "/proc/%d/map_files/%llx-%llx", (int)pid, SHM_ADDR_M,
			 SHM_ADDR_M + (SHM_M - 2) * SHM_PG);
	else
		snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, SHM_FD);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(pread(fd, r, sizeof(r), 4 * SHM_PG), (ssize_t)sizeof(r));
	close(fd);
	cr_assert_arr_eq(r, w, sizeof(w), "the write through the area is not in the memfd");
}

/*
 * Lazily restored, the anon object holds nothing of what its area maps (the
 * manager serves it as it is read), and what no area maps (its pages 0 and
 * 1), which restore wrote. Looked at through the object's own file, which
 * never faults.
 */
static void shm_left_empty(pid_t pid)
{
	static uint64_t buf[512];
	char path[96];
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/map_files/%llx-%llx", (int)pid, SHM_ADDR_A,
		 SHM_ADDR_A + (SHM_A - 2) * SHM_PG);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	errno = 0;
	cr_assert_eq(lseek(fd, 2 * SHM_PG, SEEK_DATA), -1, "the area's part of the object has data");
	cr_assert_eq(errno, ENXIO);
	for (uint64_t k = 0; k < 2; k++) {
		cr_assert_eq(pread(fd, buf, SHM_PG, (off_t)(k * SHM_PG)), (ssize_t)SHM_PG);
		shm_cmp(1, k, buf, "anon object outside its area");
	}
	close(fd);
}

static void shm_crafted(bool lazy)
{
	char log[128], dir[128], sum[512];
	const char *args[] = { "--log", log, "--mib", "4", NULL };
	const char *dargs[] = { "--no-fill", NULL };
	struct ts_status s;
	pid_t pid;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args);
	let_count(log, 2);
	dump_kill(pid, dir);
	shm_craft(dir, pid, "fdinfo-1.img", true);
	if (lazy)
		daemon_start(dargs);
	pid = restore(dir, lazy ? dmn.sock : NULL, "null", sum, sizeof(sum));
	cr_log_info("%s", sum);
	if (lazy && !shm_no_anon)
		shm_left_empty(pid);
	shm_verify(pid);
	if (lazy && !shm_no_anon) {
		cr_assert_eq(ts_status_get(&dmn, &s), 0);
		/* Every data page of the area: 46 pages mapped, 6 of them holes. */
		cr_assert_geq(s.tot->pages_copied, 40, "copied %" PRIu64, s.tot->pages_copied);
		ts_status_free(&s);
	}
	shm_write_through(pid);
	/* The workload itself is unharmed: every byte of its own memory. */
	cr_assert_eq(kill(pid, SIGUSR2), 0);
	cr_assert(wait_for(log, "verify ok\n", 60000), "%s", slurp(log, NULL));
	stop(pid);
}

Test(restore, shm_crafted_lazy, .init = setup, .fini = teardown, .timeout = 120)
{
	shm_crafted(true);
}

/*
 * A memfd mapped shared and private, open at no descriptor: the restore
 * writes it whole (the private mapping reads it with no userfaultfd), while
 * the manager's rule still takes its shared area as lazy; the userfaultfd
 * must get minor faults for it, and every page is right.
 */
Test(restore, shm_mapped_private_without_fd_restores_lazily, .init = setup, .fini = teardown,
     .timeout = 120)
{
	shm_no_fd = true;
	shm_priv = true;
	shm_no_anon = true;	/* no other lazy object to ask for minor faults */
	shm_crafted(true);
}

Test(restore, shm_crafted_eager, .init = setup, .fini = teardown, .timeout = 120)
{
	shm_crafted(false);
}

/*
 * A tree (trworkload: five processes) dumped with --tree --kill, the first
 * two processes given both objects (the same files: one open memfd file
 * shared, as after a fork): each sees every byte, and a write through the
 * area of one is read through the area of the other. Lazily, served with
 * no fill: the second process reads what the first placed, by minor faults.
 */
static void shm_crafted_tree(bool lazy)
{
	char log[128], dir[128], ps[16], out[4096], err[4096], *p;
	const char *wargs[] = { "--log", log, "--mib", "1", NULL };
	const char *dargs[] = { "dump", "--pid", ps, "--images", dir, "--tree", "--kill", NULL };
	const char *nofill[] = { "--no-fill", NULL };
	const char *rargs[12];
	static uint64_t w[512], r[512];
	struct iovec l = { w, sizeof(w) }, rl = { r, sizeof(r) }, rem;
	pid_t root, now[2] = { 0, 0 };
	uint32_t *pids;
	struct img_err ierr;
	struct ts_status s;
	bool from_pstree;
	size_t n;
	int dirfd, rc, st;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	root = wl_start_bin("trworkload", wargs);
	snprintf(ps, sizeof(ps), "%d", (int)root);
	rc = tool(dargs, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "dump exit %d: %s", rc, err);
	cr_assert_eq(waitpid(root, &st, 0), root);
	for (int i = 0; i < nkids; i++)
		if (kids[i] == root)
			kids[i] = 0;
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_eq(img_list_tasks(dirfd, &pids, &n, &from_pstree, &ierr), 0, "%s", ierr.msg);
	close(dirfd);
	cr_assert_eq(n, 5);
	shm_craft(dir, (pid_t)pids[0], "fdinfo-1.img", true);
	shm_craft(dir, (pid_t)pids[1], "fdinfo-2.img", false);
	if (lazy)
		daemon_start(nofill);
	restore_args(rargs, dir, lazy ? dmn.sock : NULL, "null");
	rc = tool(rargs, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "restore exit %d: %s", rc, err);
	cr_log_info("%s", out);
	/* Every process of the tree is ours to end; the first two are the sharers. */
	for (p = out; (p = strstr(p, "(pid ")) != NULL; p++) {
		unsigned dumped = (unsigned)strtoul(p + 5, NULL, 10);
		char *as = strstr(p, " as pid ");
		pid_t pid;

		cr_assert_not_null(as);
		pid = (pid_t)strtol(as + 8, NULL, 10);
		kids[nkids++] = pid;
		for (int i = 0; i < 2; i++)
			if (dumped == pids[i])
				now[i] = pid;
	}
	free(pids);
	cr_assert(now[0] > 0 && now[1] > 0, "%s", out);
	if (lazy)
		shm_left_empty(now[1]);
	shm_verify(now[0]);
	shm_verify(now[1]);
	if (lazy) {
		cr_assert_eq(ts_status_get(&dmn, &s), 0);
		cr_assert_geq(s.tot->pages_copied, 40, "copied %" PRIu64, s.tot->pages_copied);
		cr_assert_geq(s.tot->pages_continued, 40, "the second sharer got %" PRIu64
			      " pages by UFFDIO_CONTINUE", s.tot->pages_continued);
		ts_status_free(&s);
	}
	/* Still one object each: a write by one is seen by the other. */
	for (int i = 0; i < 512; i++)
		w[i] = 0x1234000000ull + (uint64_t)i;
	for (uint64_t a = SHM_ADDR_A + 9 * SHM_PG; a; a = a == SHM_ADDR_A + 9 * SHM_PG ?
	     SHM_ADDR_M + 5 * SHM_PG : 0) {
		rem = (struct iovec){ (void *)(uintptr_t)a, sizeof(w) };
		cr_assert_eq(process_vm_writev(now[1], &l, 1, &rem, 1, 0), (ssize_t)sizeof(w));
		cr_assert_eq(process_vm_readv(now[0], &rl, 1, &rem, 1, 0), (ssize_t)sizeof(r));
		cr_assert_arr_eq(r, w, sizeof(w), "0x%" PRIx64 ": the write of one sharer is not "
				 "seen by the other", a);
	}
}

Test(restore, shm_crafted_tree_lazy, .init = setup, .fini = teardown, .timeout = 120)
{
	shm_crafted_tree(true);
}

Test(restore, shm_crafted_tree_eager, .init = setup, .fini = teardown, .timeout = 120)
{
	shm_crafted_tree(false);
}

/* Rewrite record file NAME of DIR through EDIT (each record in turn). */
static void shm_edit(const char *dir, const char *name, uint32_t magic,
		     const ProtobufCMessageDescriptor *d, void (*edit)(ProtobufCMessage *m))
{
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ProtobufCMessage **m;
	size_t n;

	cr_assert_geq(dirfd, 0);
	m = shm_get(dirfd, name, magic, d, 0, &n);
	for (size_t i = 0; i < n; i++)
		edit(m[i]);
	shm_put(dirfd, name, magic, m, n);
	for (size_t i = 0; i < n; i++)
		protobuf_c_message_free_unpacked(m[i], NULL);
	free(m);
	close(dirfd);
}

static void to_sysv(ProtobufCMessage *m)
{
	MmEntry *mm = (MmEntry *)m;

	for (size_t i = 0; i < mm->n_vmas; i++)
		if (mm->vmas[i]->start == SHM_ADDR_A) {
			mm->vmas[i]->status = VMA_AREA_REGULAR | VMA_AREA_SYSVIPC | VMA_ANON_SHARED;
			mm->vmas[i]->shmid = 32769;
		}
}

static void to_hugetlb(ProtobufCMessage *m)
{
	MemfdInodeEntry *me = (MemfdInodeEntry *)m;

	if (me->shmid == SHM_ID_M) {
		me->has_hugetlb_flag = true;
		me->hugetlb_flag = 0x4;	/* MFD_HUGETLB */
	}
}

/* A crafted dump that restore must refuse with WANT in its message, nothing left running. */
static void shm_refused(void (*breakit)(const char *dir, pid_t pid), const char *want,
			bool page_server)
{
	char log[128], dir[128], out[2048], err[2048];
	const char *args[] = { "--log", log, "--mib", "4", NULL };
	const char *rargs[16];
	pid_t pid;
	int rc, n = 0;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args);
	let_count(log, 2);
	dump_kill(pid, dir);
	shm_craft(dir, pid, "fdinfo-1.img", true);
	breakit(dir, pid);
	rargs[n++] = "restore";
	rargs[n++] = "--images";
	rargs[n++] = dir;
	rargs[n++] = "--eager";
	if (page_server) {
		n--;
		rargs[n++] = "--page-server";
		rargs[n++] = "127.0.0.1:1";
		rargs[n++] = "--socket";
		rargs[n++] = "/nonexistent";
	}
	rargs[n] = NULL;
	rc = tool(rargs, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 1, "restore exit %d: %s %s", rc, out, err);
	cr_assert_not_null(strstr(err, want), "stderr: %s", err);
	/* Nothing was made: no process runs from the dump, no helper is left. */
	cr_assert_eq(kill(pid, 0), -1, "pid %d runs", (int)pid);
}

static void break_sysv(const char *dir, pid_t pid)
{
	char name[64];

	snprintf(name, sizeof(name), "mm-%d.img", (int)pid);
	shm_edit(dir, name, IMG_MM_MAGIC, &mm_entry__descriptor, to_sysv);
}

static void break_hugetlb(const char *dir, pid_t pid)
{
	(void)pid;
	shm_edit(dir, "memfd.img", IMG_MEMFD_INODE_MAGIC, &memfd_inode_entry__descriptor,
		 to_hugetlb);
}

static void break_nothing(const char *dir, pid_t pid)
{
	(void)dir;
	(void)pid;
}

Test(restore, shm_refuses_sysv_by_address, .init = setup, .fini = teardown, .timeout = 60)
{
	shm_refused(break_sysv, "area 0x500000000000-0x50000002e000 is System V shared memory "
		    "(shmid 32769): not supported", false);
}

Test(restore, shm_refuses_hugetlb_memfd_by_name, .init = setup, .fini = teardown, .timeout = 60)
{
	shm_refused(break_hugetlb, "maps the hugetlb memfd \"tmfd\" (shmid 778): not supported",
		    false);
}

Test(restore, shm_refuses_page_server, .init = setup, .fini = teardown, .timeout = 60)
{
	shm_refused(break_nothing, "shared memory (memfd.img) with --page-server: not supported",
		    true);
}

/*
 * A daemon that dies with the shared areas half served: the one that takes
 * over serves the rest of them (the hand-over's HELLO_F_SHM_LAZY is in its
 * journal), never zeros.
 */
Test(restore, shm_crafted_lazy_across_daemon_restart, .init = setup, .fini = teardown,
     .timeout = 120)
{
	char log[128], dir[128];
	const char *args[] = { "--log", log, "--mib", "4", NULL };
	const char *dargs[] = { "--no-fill", NULL };
	static uint64_t buf[512];
	pid_t pid;
	int st;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args);
	let_count(log, 2);
	dump_kill(pid, dir);
	shm_craft(dir, pid, "fdinfo-1.img", true);
	daemon_start(dargs);
	pid = restore(dir, dmn.sock, "null", NULL, 0);
	shm_left_empty(pid);
	for (uint64_t k = 2; k < SHM_A / 2; k++) {
		shm_read(pid, SHM_ADDR_A + (k - 2) * SHM_PG, buf, SHM_PG);
		shm_cmp(1, k, buf, "anon area, first daemon");
	}
	kill(dmn.pid, SIGKILL);
	st = ts_daemon_wait(&dmn, 10000);
	cr_assert_neq(st, -1, "the daemon did not die");
	ts_daemon_again(&dmn, NULL, dargs);
	shm_verify(pid);
	cr_assert_eq(kill(pid, SIGUSR2), 0);
	cr_assert(wait_for(log, "verify ok\n", 60000), "%s", slurp(log, NULL));
	stop(pid);
}

/*
 * End to end, with the dump side: shmworkload (test/helpers/shmworkload.c),
 * one process or a parent and a child sharing shared anonymous memory and a
 * memfd (held open, longer than its mapping, mapped private too), dumped
 * with dump --kill (--tree --kill), restored lazily (no fill: the manager
 * serves the shared areas as they are read) or with --eager. Every process
 * checks every byte of both objects itself, through its areas and the fd;
 * then a write by the child is seen by the parent.
 */

/* The address of the area whose maps line names WHAT in PID, or 0. */
static uint64_t area_named(pid_t pid, const char *what, uint64_t *end)
{
	char path[64], *b, *l;
	uint64_t a = 0;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	b = slurp(path, NULL);
	for (l = strtok(b, "\n"); l; l = strtok(NULL, "\n"))
		if (strstr(l, what) && sscanf(l, "%" SCNx64 "-%" SCNx64, &a, end) == 2)
			break;
	free(b);
	return a;
}

/* How many times S is in the file PATH. */
static int count_in(const char *path, const char *s)
{
	char *b = slurp(path, NULL), *p = b;
	int n = 0;

	while ((p = strstr(p, s)) != NULL) {
		n++;
		p += strlen(s);
	}
	free(b);
	return n;
}

/* Wait until process NAME answered its Nth check; it must have found every byte right. */
static void wait_check(const char *log, const char *name, int n)
{
	char ok[64], bad[64];

	snprintf(ok, sizeof(ok), "check %s ok\n", name);
	snprintf(bad, sizeof(bad), "bad %s ", name);
	for (int i = 0; i < 6000 && count_in(log, ok) + count_in(log, bad) < n; i++)
		usleep(10000);
	cr_assert_eq(count_in(log, bad), 0, "%s", slurp(log, NULL));
	cr_assert_eq(count_in(log, ok), n, "%s", slurp(log, NULL));
}

/* FILL: the manager fills in the background, and both processes check at once. */
static void shm_e2e_fill(bool lazy, bool fork, bool fill)
{
	char log[128], dir[128], ps[16], out[4096], err[4096], path[96];
	const char *wargs[] = { "--log", log, "--pages", "64", fork ? "--fork" : NULL, NULL };
	const char *dargs[] = { "dump", "--pid", ps, "--images", dir, "--kill",
				fork ? "--tree" : NULL, NULL };
	const char *nofill[] = { "--no-fill", NULL };
	const char *rargs[12];
	pid_t wl, parent = 0, child = 0;
	uint64_t a, e;
	struct ts_status s;
	char *p;
	int rc, st, fd;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	wl = wl_start_bin("shmworkload", wargs);
	snprintf(ps, sizeof(ps), "%d", (int)wl);
	rc = tool(dargs, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "dump exit %d: %s", rc, err);
	cr_assert_eq(waitpid(wl, &st, 0), wl);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	for (int i = 0; i < nkids; i++)
		if (kids[i] == wl)
			kids[i] = 0;
	if (lazy)
		daemon_start(fill ? NULL : nofill);
	restore_args(rargs, dir, lazy ? dmn.sock : NULL, "null");
	rc = tool(rargs, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "restore exit %d: %s", rc, err);
	cr_log_info("%s", out);
	parent = (pid_t)strtol(out, NULL, 10);
	cr_assert_gt(parent, 0, "%s", out);
	kids[nkids++] = parent;
	for (p = out; fork && (p = strstr(p, " as pid ")) != NULL; p++) {
		pid_t now = (pid_t)strtol(p + 8, NULL, 10);

		if (now != parent) {
			child = now;
			kids[nkids++] = child;
		}
	}
	cr_assert(!fork || child > 0, "%s", out);

	/* Lazily: the anon object holds nothing of its area yet (its own file never faults). */
	if (fill) {
		/* Both at once, while the fill copies into the same objects. */
		cr_assert_eq(kill(parent, SIGUSR2), 0);
		cr_assert_eq(kill(child, SIGUSR2), 0);
		wait_check(log, "parent", 1);
		wait_check(log, "child", 1);
		goto shared;
	}
	a = area_named(parent, "/dev/zero (deleted)", &e);
	cr_assert_neq(a, 0, "no /dev/zero area");
	if (lazy) {
		snprintf(path, sizeof(path), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, (int)parent,
			 a, e);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
		errno = 0;
		cr_assert_eq(lseek(fd, 2 * 4096, SEEK_DATA), -1, "the area's pages are in already");
		cr_assert_eq(errno, ENXIO);
		close(fd);
	}

	/* Each checks every byte itself: the parent first, the child then (minor faults). */
	cr_assert_eq(kill(parent, SIGUSR2), 0);
	wait_check(log, "parent", 1);
	if (fork) {
		cr_assert_eq(kill(child, SIGUSR2), 0);
		wait_check(log, "child", 1);
	}
	if (lazy) {
		cr_assert_eq(ts_status_get(&dmn, &s), 0);
		/* 62 pages mapped, 8 of them never touched: 54 copied, holes zeroed. */
		cr_assert_geq(s.tot->pages_copied, 54, "copied %" PRIu64, s.tot->pages_copied);
		if (fork)
			cr_assert_geq(s.tot->pages_continued, 54, "the child got %" PRIu64
				      " pages by UFFDIO_CONTINUE", s.tot->pages_continued);
		ts_status_free(&s);
	}
	if (!fork) {
		cr_assert_eq(kill(parent, SIGTERM), 0);
		cr_assert_eq(waitpid(parent, &st, 0), parent);
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 20, "status 0x%x", st);
		for (int i = 0; i < nkids; i++)
			if (kids[i] == parent)
				kids[i] = 0;
		return;
	}
shared:
	/* Still shared: the child writes, the parent sees it. */
	cr_assert_eq(kill(child, SIGUSR1), 0);
	cr_assert(wait_for(log, "wrote child\n", 20000));
	cr_assert_eq(kill(parent, SIGUSR1), 0);
	cr_assert_eq(kill(parent, SIGUSR2), 0);
	cr_assert_eq(kill(child, SIGUSR2), 0);
	wait_check(log, "parent", 2);
	wait_check(log, "child", 2);
	/* The parent is the child's parent again. */
	cr_assert_eq(kill(child, SIGTERM), 0);
	cr_assert_eq(kill(parent, SIGTERM), 0);
	cr_assert(wait_for(log, "reaped code 21\n", 20000), "%s", slurp(log, NULL));
	cr_assert_eq(waitpid(parent, &st, 0), parent);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 20, "status 0x%x", st);
	for (int i = 0; i < nkids; i++)
		if (kids[i] == parent || kids[i] == child)
			kids[i] = 0;
}

static void shm_e2e(bool lazy, bool fork)
{
	shm_e2e_fill(lazy, fork, false);
}

Test(restore, shm_dumped_tree_lazy_filled_while_both_read, .init = setup, .fini = teardown,
     .timeout = 120)
{
	shm_e2e_fill(true, true, true);
}

Test(restore, shm_dumped_lazy, .init = setup, .fini = teardown, .timeout = 120)
{
	shm_e2e(true, false);
}

Test(restore, shm_dumped_eager, .init = setup, .fini = teardown, .timeout = 120)
{
	shm_e2e(false, false);
}

Test(restore, shm_dumped_tree_lazy, .init = setup, .fini = teardown, .timeout = 120)
{
	shm_e2e(true, true);
}

Test(restore, shm_dumped_tree_eager, .init = setup, .fini = teardown, .timeout = 120)
{
	shm_e2e(false, true);
}

/*
 * A memfd no descriptor reaches but sealed against writes (F_SEAL_FUTURE_WRITE,
 * which forbids new writable mappings): written whole before the process
 * runs, even lazily, and sealed only once its writable shared area is
 * mapped. The anon object beside it is still left to the manager.
 */
Test(restore, shm_crafted_write_sealed_memfd_is_filled, .init = setup, .fini = teardown,
     .timeout = 120)
{
	char log[128], dir[128], path[96];
	const char *args[] = { "--log", log, "--mib", "4", NULL };
	const char *dargs[] = { "--no-fill", NULL };
	pid_t pid;
	int fd;

	shm_no_fd = true;
	shm_seals = 0x10 | 0x2 | 0x1;	/* F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK | F_SEAL_SEAL */
	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args);
	let_count(log, 2);
	dump_kill(pid, dir);
	shm_craft(dir, pid, "fdinfo-1.img", true);
	daemon_start(dargs);
	pid = restore(dir, dmn.sock, "null", NULL, 0);
	shm_left_empty(pid);
	snprintf(path, sizeof(path), "/proc/%d/map_files/%llx-%llx", (int)pid, SHM_ADDR_M,
		 SHM_ADDR_M + (SHM_M - 2) * SHM_PG);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(lseek(fd, 0, SEEK_DATA), 0, "the sealed memfd was left empty");
	cr_assert_eq(fcntl(fd, F_GET_SEALS), 0x13);
	close(fd);
	shm_verify(pid);
	cr_assert_eq(kill(pid, SIGUSR2), 0);
	cr_assert(wait_for(log, "verify ok\n", 60000), "%s", slurp(log, NULL));
	stop(pid);
}
