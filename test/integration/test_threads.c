/*
 * Multi-threaded dump --kill and restore, end to end: a real workload with
 * five threads besides the main one (test/helpers/tworkload.c), some of them
 * blocked in read(), nanosleep() and futex waits when it is dumped, each
 * with its own TLS values, name, signal mask, alternate stack, rseq
 * registration, xmm15 value and slice of memory. Restored, every thread must
 * go on and prove, when asked, that it has all of it back: every word of
 * every slice and of the main region is checked by the workload itself.
 *
 * This process becomes a child subreaper so that restored processes,
 * orphaned when the tool exits, are ours to reap.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tserve.h"

#define NTH	6	/* threads of the workload, the main one included */

static char tmp[64];
static pid_t kids[8];
static int nkids;
static struct ts_daemon dmn;
static bool dmn_on;

static const char *build_dir(void)
{
	const char *b = getenv("UFFD_TEST_BUILD");

	return b ? b : TEST_BUILDDIR;
}

static void setup(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/uffd-ttest-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp), "mkdtemp: %s", strerror(errno));
	cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	nkids = 0;
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
	if (dmn_on)
		ts_daemon_finish(&dmn, 5000);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	if (!getenv("UFFD_TEST_KEEP") && system(cmd)) {
	}
}

static void forget(pid_t pid)
{
	for (int i = 0; i < nkids; i++)
		if (kids[i] == pid)
			kids[i] = 0;
}

/* A whole file, NUL-terminated, malloc'd (empty if missing). */
static char *slurp(const char *path)
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
	return b;
}

/* Wait until PATH holds S; false after MS milliseconds. */
static bool wait_for(const char *path, const char *s, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		char *b = slurp(path);
		bool hit = strstr(b, s) != NULL;

		free(b);
		if (hit)
			return true;
		usleep(10000);
	}
	return false;
}

/* Start tworkload ARGS with stdin the read end of a pipe (*IN: the write end). */
static pid_t wl_start(const char *const *args, int *in)
{
	char bin[256], line[128];
	const char *argv[12];
	int p[2], q[2], n = 0;
	size_t got = 0;
	pid_t pid;

	snprintf(bin, sizeof(bin), "%s/test/helpers/tworkload", build_dir());
	argv[n++] = bin;
	for (int i = 0; args[i] && n < 11; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(q, O_CLOEXEC), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);

		dup2(q[0], 0);
		dup2(p[1], 1);
		dup2(nul, 2);
		close_range(3, ~0u, 0);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	close(q[0]);
	*in = q[1];
	kids[nkids++] = pid;
	while (got < sizeof(line) - 1) {
		struct pollfd pf = { p[0], POLLIN, 0 };

		cr_assert_gt(poll(&pf, 1, 20000), 0, "the workload did not start");
		cr_assert_eq(read(p[0], line + got, 1), 1, "the workload died at start");
		if (line[got++] == '\n')
			break;
	}
	line[got] = '\0';
	close(p[0]);
	cr_assert_not_null(strstr(line, "ready pid="), "workload said: %s", line);
	return pid;
}

/*
 * Run uffd-inject ARGS with stdin IN (or /dev/null when -1); its stdout
 * and stderr in OUT and ERR. Returns its exit code.
 */
static int tool(const char *const *args, int in, char *out, size_t olen, char *err, size_t elen)
{
	static int runs;
	char bin[256], of[128], ef[128], *b;
	const char *argv[24];
	int n = 0, st;
	pid_t pid;

	/* A restored process may keep them as its stdout: one pair per run. */
	snprintf(bin, sizeof(bin), "%s/uffd-inject", build_dir());
	snprintf(of, sizeof(of), "%s/tool.out.%d", tmp, runs);
	snprintf(ef, sizeof(ef), "%s/tool.err.%d", tmp, runs++);
	argv[n++] = bin;
	for (int i = 0; args[i] && n < 23; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int o = open(of, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(ef, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		dup2(in >= 0 ? in : open("/dev/null", O_RDONLY), 0);
		dup2(o, 1);
		dup2(e, 2);
		close_range(3, ~0u, 0);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	b = slurp(of);
	snprintf(out, olen, "%s", b);
	free(b);
	b = slurp(ef);
	snprintf(err, elen, "%s", b);
	free(b);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The tid of thread I from the log's "start I tid T" line. */
static pid_t tid_of(const char *log, int i)
{
	char want[32], *b = slurp(log), *p;
	pid_t t;

	snprintf(want, sizeof(want), "start %d tid ", i);
	p = strstr(b, want);
	cr_assert_not_null(p, "no '%s' in the log", want);
	t = (pid_t)strtol(p + strlen(want), NULL, 10);
	free(b);
	return t;
}

/* The syscall number thread TID of PID is blocked in (/proc/.../syscall), or -1 when running. */
static long in_syscall(pid_t pid, pid_t tid)
{
	char path[96], *b;
	long nr;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/syscall", (int)pid, (int)tid);
	b = slurp(path);
	nr = strncmp(b, "running", 7) && b[0] ? strtol(b, NULL, 10) : -1;
	free(b);
	return nr;
}

/* Every thread started, and the ones that wait on us are in their syscall. */
static void wait_started(const char *log, pid_t pid, pid_t tids[NTH])
{
	cr_assert(wait_for(log, "count 5\n", 20000), "the workload does not count");
	for (int i = 0; i < NTH; i++) {
		char want[32];

		snprintf(want, sizeof(want), "start %d tid", i);
		cr_assert(wait_for(log, want, 20000), "thread %d did not start", i);
		tids[i] = tid_of(log, i);
	}
	cr_assert_eq(tids[0], pid);
	for (int k = 0; k < 1000; k++) {
		if (in_syscall(pid, tids[1]) == SYS_read && in_syscall(pid, tids[3]) == SYS_futex &&
		    in_syscall(pid, tids[4]) == SYS_futex)
			return;
		usleep(10000);
	}
	cr_assert_fail("threads 1, 3, 4 are not blocked in read, futex, futex: %ld %ld %ld",
		       in_syscall(pid, tids[1]), in_syscall(pid, tids[3]),
		       in_syscall(pid, tids[4]));
}

/* dump --kill PID into DIR; it must be gone, each thread with its core image. */
static void dump_kill(pid_t pid, const char *dir, const pid_t tids[NTH])
{
	char ps[16], out[2048], err[2048], path[256];
	const char *args[] = { "dump", "--pid", ps, "--images", dir, "--kill", NULL };
	int rc, st;

	snprintf(ps, sizeof(ps), "%d", (int)pid);
	rc = tool(args, -1, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "dump exit %d: %s", rc, err);
	cr_assert_not_null(strstr(out, ", 6 threads"), "%s", out);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	forget(pid);
	for (int i = 0; i < NTH; i++) {
		snprintf(path, sizeof(path), "%s/core-%d.img", dir, (int)tids[i]);
		cr_assert_eq(access(path, R_OK), 0, "%s is missing", path);
	}
}

/* Restore DIR (lazily from SOCK, or --eager) with stdin IN. The pid; the tool's output in OUT, ERR. */
static pid_t restore(const char *dir, const char *sock, int in, char *out, size_t olen, char *err,
		     size_t elen)
{
	const char *args[] = { "restore", "--images", dir, sock ? "--socket" : "--eager",
			       sock ? sock : "--stdio", sock ? "--stdio" : "inherit",
			       sock ? "inherit" : NULL, NULL };
	int rc = tool(args, in, out, olen, err, elen);
	pid_t pid;

	cr_assert_eq(rc, 0, "restore exit %d: %s", rc, err);
	pid = (pid_t)strtol(out, NULL, 10);
	cr_assert_gt(pid, 0, "restore said: %s", out);
	kids[nkids++] = pid;
	cr_log_info("%s", strchr(out, '\n') ? strchr(out, '\n') + 1 : out);
	return pid;
}

/* On a failure: where each thread of PID is, for the log. */
static void diag(pid_t pid)
{
	char path[320], *a, *b, *c;
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/stat", (int)pid, de->d_name);
		a = slurp(path);
		snprintf(path, sizeof(path), "/proc/%d/task/%s/syscall", (int)pid, de->d_name);
		b = slurp(path);
		snprintf(path, sizeof(path), "/proc/%d/task/%s/wchan", (int)pid, de->d_name);
		c = slurp(path);
		cr_log_error("thread %s: %.60s | syscall %.60s | wchan %s", de->d_name,
			     strchr(a, ')') ? strchr(a, ')') : a, b, c);
		free(a);
		free(b);
		free(c);
	}
	if (d)
		closedir(d);
}

/*
 * Ask for check G (SIGUSR2; a byte C for the reader): every thread must
 * say ok, and nothing bad may be in the log.
 */
static void check_all(const char *log, pid_t pid, int in, int g, char c)
{
	char want[64], *b, *bad;

	cr_assert_eq(kill(pid, SIGUSR2), 0);
	/* The main thread has asked once it checks itself: only then wake the reader. */
	snprintf(want, sizeof(want), "check %d main tid ", g);
	cr_assert(wait_for(log, want, 60000), "the main thread did not check");
	cr_assert_eq(write(in, &c, 1), 1);
	snprintf(want, sizeof(want), "read 1 got %c\n", c);
	cr_assert(wait_for(log, want, 20000), "the reader did not go on reading: %s", want);
	for (int i = 1; i < NTH; i++) {
		snprintf(want, sizeof(want), "check %d thread %d tid ", g, i);
		if (!wait_for(log, want, 60000)) {
			diag(pid);
			b = slurp(log);
			cr_log_error("log: %s", strlen(b) > 1500 ? b + strlen(b) - 1500 : b);
			cr_assert_fail("thread %d did not check", i);
		}
	}
	b = slurp(log);
	bad = strstr(b, " bad ");
	cr_assert_null(bad, "%.200s", bad);
	for (int i = 1; i < NTH; i++) {
		char *p;

		snprintf(want, sizeof(want), "check %d thread %d tid ", g, i);
		p = strstr(b, want);
		cr_assert(p && strstr(p, " ok\n") && strchr(p, '\n') == strstr(p, " ok\n") + 3,
			  "thread %d: %.120s", i, p);
	}
	free(b);
}

/* The threads of PID must be the TIDS, each named as it was. */
static void same_threads(pid_t pid, const pid_t tids[NTH])
{
	char path[96], *b;
	struct dirent *de;
	int n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	cr_assert_not_null(d);
	while ((de = readdir(d))) {
		pid_t t = (pid_t)strtol(de->d_name, NULL, 10);
		int i;

		if (de->d_name[0] == '.')
			continue;
		for (i = 0; i < NTH && tids[i] != t; i++)
			;
		cr_assert_lt(i, NTH, "thread %d was not dumped", (int)t);
		n++;
		snprintf(path, sizeof(path), "/proc/%d/task/%d/comm", (int)pid, (int)t);
		b = slurp(path);
		if (i > 0) {
			char name[16];

			snprintf(name, sizeof(name), "tw-%d\n", i);
			cr_assert_str_eq(b, name, "thread %d is named %s", (int)t, b);
		}
		free(b);
	}
	closedir(d);
	cr_assert_eq(n, NTH);
}

static bool can_set_tid(void)
{
	return geteuid() == 0;
}

/*
 * Lazily restored, every thread goes on where it was with its own state,
 * at its own tid, the manager serving the faults of all of them; dumped
 * again and restored again eagerly, it still does.
 */
Test(threads, lazy_every_thread_resumes_with_its_own_state, .init = setup, .fini = teardown,
     .timeout = 180)
{
	char log[128], dir[128], dir2[128], out[2048], err[2048];
	const char *args[] = { "--log", log, "--mib", "8", NULL };
	pid_t pid, tids[NTH];
	struct ts_status s;
	uint64_t served = 0;
	int in, in2, in3;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	snprintf(dir2, sizeof(dir2), "%s/img2", tmp);
	pid = wl_start(args, &in);
	wait_started(log, pid, tids);
	dump_kill(pid, dir, tids);
	close(in);

	ts_daemon_start(&dmn, NULL);
	dmn_on = true;
	{
		int p[2];

		cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
		pid = restore(dir, dmn.sock, p[0], out, sizeof(out), err, sizeof(err));
		close(p[0]);
		in2 = p[1];
	}
	cr_assert_not_null(strstr(out, ", 6 threads ("), "%s", out);
	if (can_set_tid()) {
		cr_assert_eq(pid, tids[0], "restored as pid %d, not %d: %s", (int)pid,
			     (int)tids[0], err);
		cr_assert_not_null(strstr(out, "(0 not at the dumped tid)"), "%s %s", out, err);
		same_threads(pid, tids);
	} else {
		cr_log_warn("not root: tids not checked (clone3 set_tid needs CAP_SYS_ADMIN)");
	}
	check_all(log, pid, in2, 1, 'a');

	/* The manager took the faults of the process's threads. */
	cr_assert_eq(ts_status_get(&dmn, &s), 0);
	cr_assert_gt(s.tot->pages_copied, 0);
	cr_assert_gt(s.tot->faults, 0);
	ts_status_free(&s);

	/* Once every page is in, it dumps and restores again, its threads as they were. */
	for (int i = 0; i < 3000 && !served; i++) {
		cr_assert_eq(ts_status_get(&dmn, &s), 0);
		served = s.tot->served;
		ts_status_free(&s);
		if (!served)
			usleep(10000);
	}
	cr_assert_eq(served, 1, "the manager never finished serving");
	for (int k = 0; k < 1000 && in_syscall(pid, tids[1]) != SYS_read; k++)
		usleep(10000);
	dump_kill(pid, dir2, tids);
	close(in2);
	{
		int p[2];

		cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
		pid = restore(dir2, NULL, p[0], out, sizeof(out), err, sizeof(err));
		close(p[0]);
		in3 = p[1];
	}
	if (can_set_tid())
		same_threads(pid, tids);
	check_all(log, pid, in3, 2, 'b');
	close(in3);
}

/* A child of ours at pid WANT (clone3 set_tid), sleeping until killed; or -errno. */
static pid_t occupy(pid_t want)
{
	struct clone_args ca = { .exit_signal = SIGCHLD, .set_tid = (uintptr_t)&want,
				 .set_tid_size = 1 };
	long r = syscall(SYS_clone3, &ca, sizeof(ca));

	if (r == 0)
		for (;;)
			syscall(SYS_pause);
	if (r < 0)
		return -errno;
	kids[nkids++] = (pid_t)r;
	return (pid_t)r;
}

/* Where a dumped tid is taken, the thread is made at another, and restore says so. */
Test(threads, at_other_tids_when_taken_and_says_so, .init = setup, .fini = teardown,
     .timeout = 120)
{
	char log[128], dir[128], out[2048], err[2048], want[96];
	const char *args[] = { "--log", log, "--mib", "2", NULL };
	pid_t pid, tids[NTH];
	int in, p[2];

	if (!can_set_tid())
		cr_skip_test("not root: taking a given pid (clone3 set_tid) needs CAP_SYS_ADMIN");
	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args, &in);
	wait_started(log, pid, tids);
	dump_kill(pid, dir, tids);
	close(in);
	cr_assert_eq(occupy(tids[0]), tids[0]);
	cr_assert_eq(occupy(tids[2]), tids[2]);

	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	pid = restore(dir, NULL, p[0], out, sizeof(out), err, sizeof(err));
	close(p[0]);
	cr_assert_neq(pid, tids[0]);
	cr_assert_not_null(strstr(out, "6 threads (2 not at the dumped tid)"), "%s", out);
	snprintf(want, sizeof(want), "pid %d is now pid %d (%d: taken)", (int)tids[0], (int)pid,
		 (int)tids[0]);
	cr_assert_not_null(strstr(err, want), "no '%s' in: %s", want, err);
	snprintf(want, sizeof(want), "thread %d is now tid ", (int)tids[2]);
	cr_assert_not_null(strstr(err, want), "no '%s' in: %s", want, err);
	snprintf(want, sizeof(want), "thread %d is now", (int)tids[1]);
	cr_assert_null(strstr(err, want), "%s", err);
	check_all(log, pid, p[1], 1, 'c');
	close(p[1]);
}

/* A thread's core image missing: restore refuses, naming it, and leaves nothing running. */
Test(threads, restore_refuses_missing_thread_core, .init = setup, .fini = teardown,
     .timeout = 60)
{
	char log[128], dir[128], path[256], out[2048], err[2048], want[64];
	const char *args[] = { "--log", log, "--mib", "2", NULL };
	const char *rargs[] = { "restore", "--images", dir, "--eager", NULL };
	pid_t pid, tids[NTH];
	int in, rc;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args, &in);
	wait_started(log, pid, tids);
	dump_kill(pid, dir, tids);
	close(in);
	snprintf(path, sizeof(path), "%s/core-%d.img", dir, (int)tids[3]);
	cr_assert_eq(unlink(path), 0);
	rc = tool(rargs, -1, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 1, "restore exit %d: %s", rc, out);
	snprintf(want, sizeof(want), "core-%d.img: missing", (int)tids[3]);
	cr_assert_not_null(strstr(err, want), "stderr: %s", err);
	cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "something was left running");
}

/* A process whose main thread has exited is refused, and its threads run on untraced. */
Test(threads, dump_refuses_exited_main_thread, .init = setup, .fini = teardown, .timeout = 60)
{
	char log[128], dir[128], ps[16], out[2048], err[2048], want[32], path[96];
	const char *args[] = { "--log", log, "--mib", "2", "--exit-main", NULL };
	const char *dargs[] = { "dump", "--pid", ps, "--images", dir, "--kill", NULL };
	pid_t pid, t5;
	int in, rc;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args, &in);
	for (int i = 1; i < NTH; i++) {
		snprintf(want, sizeof(want), "start %d tid", i);
		cr_assert(wait_for(log, want, 20000), "thread %d did not start", i);
	}
	t5 = tid_of(log, 5);
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	rc = tool(dargs, -1, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 1, "dump exit %d: %s", rc, out);
	cr_assert_not_null(strstr(err, "its main thread has exited"), "stderr: %s", err);
	cr_assert_neq(access(dir, F_OK), 0, "the image dir was left behind");
	/* Not killed, not left traced or stopped: the busy thread runs on. */
	snprintf(path, sizeof(path), "/proc/%d/task/%d/status", (int)pid, (int)t5);
	for (int k = 0; k < 100; k++) {
		char *b = slurp(path), *tp = strstr(b, "TracerPid:\t");

		cr_assert_not_null(tp, "thread %d is gone: %s", (int)t5, b);
		cr_assert_eq(strtol(tp + 11, NULL, 10), 0, "still traced");
		cr_assert_null(strstr(b, "State:\tt"), "left in a ptrace stop");
		free(b);
		usleep(1000);
	}
	close(in);
}

/* Decode FILE of DIR with CRIU's crit; its JSON (malloc'd), or a failed test. */
static char *crit(const char *dir, const char *file)
{
	char cmd[512], *out = malloc(1 << 20);
	size_t n;
	FILE *f;

	cr_assert_not_null(out);
	snprintf(cmd, sizeof(cmd), "crit decode -i %s/%s 2>&1", dir, file);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	n = fread(out, 1, (1 << 20) - 1, f);
	out[n] = 0;
	cr_assert_eq(pclose(f), 0, "%s: %s", cmd, out);
	return out;
}

/* CRIU's decoder reads every thread's core as CRIU would write it. */
Test(threads, crit_decodes_every_thread_core, .init = setup, .fini = teardown, .timeout = 60)
{
	char log[128], dir[128], name[64], want[64], *out;
	const char *args[] = { "--log", log, "--mib", "2", NULL };
	pid_t pid, tids[NTH];
	int in;

	if (system("command -v crit >/dev/null 2>&1"))
		cr_skip_test("crit is not installed (Debian: apt-get install criu python3-protobuf; make deps does it)");
	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args, &in);
	wait_started(log, pid, tids);
	dump_kill(pid, dir, tids);
	close(in);
	out = crit(dir, "pstree.img");
	for (int i = 0; i < NTH; i++) {
		snprintf(want, sizeof(want), "%d", (int)tids[i]);
		cr_assert_not_null(strstr(out, want), "thread %s not in %s", want, out);
	}
	free(out);
	for (int i = 0; i < NTH; i++) {
		snprintf(name, sizeof(name), "core-%d.img", (int)tids[i]);
		out = crit(dir, name);
		cr_assert_not_null(strstr(out, "\"thread_core\""), "%s: %s", name, out);
		cr_assert_not_null(strstr(out, "\"rseq_entry\""), "%s: no rseq: %s", name, out);
		cr_assert_not_null(strstr(out, "\"sas\""), "%s: %s", name, out);
		cr_assert_not_null(strstr(out, "\"gpregs\""), "%s: %s", name, out);
		if (i == 0) {
			cr_assert_not_null(strstr(out, "\"tc\""), "%s: %s", name, out);
		} else {
			snprintf(want, sizeof(want), "\"comm\": \"tw-%d\"", i);
			cr_assert_not_null(strstr(out, want), "%s: no %s: %s", name, want, out);
			cr_assert_null(strstr(out, "\"tc\""), "%s: a task record: %s", name, out);
		}
		free(out);
	}
}

/* The last field of the NSpid line of /proc/PID/task/TID/status: its id in its own pid namespace. */
static pid_t ns_tid(pid_t pid, pid_t tid)
{
	char path[96], *b, *p, *end;
	long v = -1;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/status", (int)pid, (int)tid);
	b = slurp(path);
	p = strstr(b, "NSpid:");
	cr_assert_not_null(p, "%s: no NSpid", path);
	end = strchr(p, '\n');
	for (char *q = p + 6; q && q < end; q = strpbrk(q, " \t")) {
		while (*q == ' ' || *q == '\t')
			q++;
		if (q < end)
			v = strtol(q, NULL, 10);
	}
	free(b);
	return (pid_t)v;
}

/*
 * --pidns: with the dumped pid and a tid taken here, the process comes back
 * in a new pid namespace with every id as dumped, served lazily, each thread
 * with its state; its init there is ours and goes when it goes.
 */
Test(threads, pidns_gives_back_every_dumped_id, .init = setup, .fini = teardown,
     .timeout = 120)
{
	char log[128], dir[128], out[2048], err[2048], path[96], *b, *pp;
	const char *args[] = { "--log", log, "--mib", "4", NULL };
	pid_t pid, tids[NTH], init, want[NTH], got[NTH];
	int in, p[2], n = 0, st;
	struct dirent *de;
	struct ts_status s;
	DIR *d;

	if (!can_set_tid())
		cr_skip_test("not root: a new pid namespace and given pids need CAP_SYS_ADMIN");
	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args, &in);
	wait_started(log, pid, tids);
	dump_kill(pid, dir, tids);
	close(in);
	cr_assert_eq(occupy(tids[0]), tids[0]);
	cr_assert_eq(occupy(tids[3]), tids[3]);
	ts_daemon_start(&dmn, NULL);
	dmn_on = true;

	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	{
		const char *rargs[] = { "restore", "--images", dir, "--socket", dmn.sock,
					"--pidns", NULL };
		int rc = tool(rargs, p[0], out, sizeof(out), err, sizeof(err));

		cr_assert_eq(rc, 0, "restore exit %d: %s", rc, err);
	}
	close(p[0]);
	pid = (pid_t)strtol(out, NULL, 10);
	cr_assert_gt(pid, 0, "%s", out);
	kids[nkids++] = pid;
	cr_assert_neq(pid, tids[0]);
	snprintf(path, sizeof(path), "(pid %d in a new pid namespace)", (int)tids[0]);
	cr_assert_not_null(strstr(out, path), "%s", out);
	cr_assert_not_null(strstr(out, "6 threads (0 not at the dumped tid)"), "%s %s", out, err);
	/* Its parent is the namespace's init, ours to reap once the tool is gone. */
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	b = slurp(path);
	pp = strstr(b, "PPid:");
	cr_assert_not_null(pp);
	init = (pid_t)strtol(pp + 5, NULL, 10);
	free(b);
	cr_assert_gt(init, 1);
	kids[nkids++] = init;
	cr_assert_eq(ns_tid(init, init), 1, "the init is not pid 1 of the namespace");

	/* Every thread has its dumped tid there. */
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	cr_assert_not_null(d);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.' && n < NTH)
			got[n++] = ns_tid(pid, (pid_t)strtol(de->d_name, NULL, 10));
	closedir(d);
	cr_assert_eq(n, NTH);
	memcpy(want, tids, sizeof(want));
	for (int i = 0; i < NTH; i++) {
		int k;

		for (k = 0; k < NTH && want[k] != got[i]; k++)
			;
		cr_assert_lt(k, NTH, "tid %d there was not dumped", (int)got[i]);
		want[k] = -1;
	}
	check_all(log, pid, p[1], 1, 'd');
	close(p[1]);
	cr_assert_eq(ts_status_get(&dmn, &s), 0);
	cr_assert_gt(s.tot->pages_copied, 0);
	cr_assert_gt(s.tot->faults, 0);
	ts_status_free(&s);

	/* It ends, and its init with it. */
	cr_assert_eq(kill(pid, SIGKILL), 0);
	cr_assert_eq(waitpid(init, &st, 0), init);
	forget(init);
	forget(pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 128 + SIGKILL, "init status 0x%x", st);
}

/*
 * dump --leave-stopped reads every thread's own state with syscalls run in
 * that thread, blocked ones included: resumed with SIGCONT, each goes on
 * with its state, its blocked call restarted (no EINTR), its memory whole.
 */
Test(threads, leave_stopped_then_every_thread_goes_on, .init = setup, .fini = teardown,
     .timeout = 120)
{
	char log[128], dir[128], ps[16], out[2048], err[2048], path[192], *b;
	const char *args[] = { "--log", log, "--mib", "4", NULL };
	const char *dargs[] = { "dump", "--pid", ps, "--images", dir, "--leave-stopped", NULL };
	pid_t pid, tids[NTH];
	int in, rc;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	pid = wl_start(args, &in);
	wait_started(log, pid, tids);
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	rc = tool(dargs, -1, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "dump exit %d: %s", rc, err);
	for (int i = 0; i < NTH; i++) {
		snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)pid, (int)tids[i]);
		b = slurp(path);
		cr_assert_not_null(strstr(b, ") T "), "thread %d not stopped: %s", (int)tids[i], b);
		free(b);
		snprintf(path, sizeof(path), "%s/core-%d.img", dir, (int)tids[i]);
		cr_assert_eq(access(path, R_OK), 0, "%s is missing", path);
	}
	cr_assert_eq(kill(pid, SIGCONT), 0);
	check_all(log, pid, in, 1, 'e');
	close(in);
}

/* The pids of the children of PID (/proc/PID/task/PID/children), up to MAX. */
static int children_of(pid_t pid, pid_t *out, int max)
{
	char path[96], *b, *p;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid, (int)pid);
	b = slurp(path);
	for (p = b; *p && n < max;) {
		char *end;
		long v = strtol(p, &end, 10);

		if (end == p)
			break;
		out[n++] = (pid_t)v;
		p = end;
	}
	free(b);
	return n;
}

/*
 * The tool killed once the helper is ready, before it is seized: nothing of
 * the restore is left, with --pidns (its init sees the tool gone and ends
 * the namespace) and without (the helper dies with its parent).
 */
static void tool_dies_early(bool pidns)
{
	char log[128], dir[128], bin[256];
	const char *args[] = { "--log", log, "--mib", "2", NULL };
	pid_t pid, tids[NTH], t, left[16];
	int in, st, n;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	snprintf(bin, sizeof(bin), "%s/uffd-inject", build_dir());
	pid = wl_start(args, &in);
	wait_started(log, pid, tids);
	dump_kill(pid, dir, tids);
	close(in);
	t = fork();
	cr_assert_geq(t, 0);
	if (t == 0) {
		int nul = open("/dev/null", O_RDWR);

		dup2(nul, 0);
		dup2(nul, 1);
		dup2(nul, 2);
		close_range(3, ~0u, 0);
		setenv("UFFD_INJECT_TEST_DIE_AT", "helper-ready", 1);
		execl(bin, bin, "restore", "--images", dir, "--eager", "--stdio", "null",
		      pidns ? "--pidns" : NULL, NULL);
		_exit(127);
	}
	cr_assert_eq(waitpid(t, &st, 0), t);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the tool ended 0x%x", st);
	/* What it left is ours now (subreaper): it must end by itself. */
	for (int k = 0; k < 500 && (n = children_of(getpid(), left, 16)) > 0; k++) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		usleep(10000);
	}
	n = children_of(getpid(), left, 16);
	for (int i = 0; i < n; i++) {
		char path[64], *b;

		snprintf(path, sizeof(path), "/proc/%d/comm", (int)left[i]);
		b = slurp(path);
		cr_log_error("left running: pid %d %s", (int)left[i], b);
		free(b);
		kids[nkids++] = left[i];
	}
	cr_assert_eq(n, 0, "%d processes of the restore were left", n);
}

Test(threads, tool_death_before_seize_leaves_nothing, .init = setup, .fini = teardown,
     .timeout = 60)
{
	tool_dies_early(false);
}

Test(threads, tool_death_before_seize_leaves_nothing_pidns, .init = setup, .fini = teardown,
     .timeout = 60)
{
	if (!can_set_tid())
		cr_skip_test("not root: a new pid namespace needs CAP_SYS_ADMIN");
	tool_dies_early(true);
}
