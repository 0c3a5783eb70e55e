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
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "imgtask.h"
#include "pagemap.h"
#include "thuge.h"
#include "tserve.h"
#include "twork.h"

static char tmp[64];
static pid_t kids[8];
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

static void teardown(void)
{
	char cmd[128];

	for (int i = 0; i < nkids; i++) {
		if (kids[i] > 0) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
		}
	}
	for (int i = 0; i < nouts; i++)
		close(outs[i]);
	if (dmn_on)
		ts_daemon_finish(&dmn, 5000);
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
static pid_t wl_start(const char *const *args)
{
	char bin[256], line[256];
	const char *argv[16];
	int p[2], n = 0;
	size_t got = 0;
	pid_t pid;

	snprintf(bin, sizeof(bin), "%s/test/helpers/rworkload", build_dir());
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
