/*
 * Restores into a pid namespace of their own, as container runtimes make
 * them: CRIU sends each task's pid as seen inside it (1, 600, ...), which
 * in the daemon's namespace names another process or none. The daemon must
 * take every pid from the kernel: decoys given the same numbers in its
 * namespace, which exit while the tasks are served, must change nothing;
 * every byte the tasks read is compared with the images.
 *
 * Each test runs the daemon, the decoys and the restore inside a
 * throw-away pid namespace with its own /proc (the test's own pid 1), so
 * that nothing here can ever watch or signal a process it did not start:
 * the machine's pid 1 is not even visible.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "imgfix.h"
#include "tcriu.h"
#include "tserve.h"

#define SINGLE		FIX_CRIU_DIR "/single"
#define FORK3		FIX_CRIU_DIR "/fork3"
#define SIM_MS		40000
#define EXIT_MS		20000
#define MAX_DECOYS	4

static struct tc_run run;
static char result[192];	/* what went wrong inside the sandbox */

static void setup(void)
{
	tc_init(&run);
	snprintf(result, sizeof(result), "%s/result.txt", run.dir);
}

static void teardown(void)
{
	tc_finish(&run);
}

/* Inside the sandbox: say what went wrong (for the test outside), return 1. */
static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int fail(const char *fmt, ...)
{
	FILE *f = fopen(result, "a");
	va_list ap;

	if (f) {
		va_start(ap, fmt);
		vfprintf(f, fmt, ap);
		va_end(ap);
		fputc('\n', f);
		fclose(f);
	}
	return 1;
}

/*
 * Run FN as pid 1 of a new pid namespace with its own /proc, and return its
 * exit status. Everything it starts dies with it.
 */
static int in_sandbox(int (*fn)(void *), void *arg)
{
	pid_t outer = fork(), inner;
	int st;

	cr_assert_geq(outer, 0);
	if (outer == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (unshare(CLONE_NEWPID | CLONE_NEWNS) < 0)
			_exit(fail("unshare: %s", strerror(errno)));
		inner = fork();
		if (inner < 0)
			_exit(fail("fork: %s", strerror(errno)));
		if (inner == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
			    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
				_exit(fail("mounting /proc for the sandbox: %s", strerror(errno)));
			_exit(fn(arg));
		}
		if (waitpid(inner, &st, 0) != inner)
			_exit(fail("waitpid: %s", strerror(errno)));
		_exit(WIFEXITED(st) ? WEXITSTATUS(st) : fail("sandbox init: wait status 0x%x", st));
	}
	cr_assert_eq(waitpid(outer, &st, 0), outer);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Fork a process that gets PID in this namespace (if free) and waits for EOF on pipe P. */
static pid_t decoy(pid_t pid, const int *p)
{
	char buf[16];
	int n, k = open("/proc/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC);
	pid_t got;

	if (k < 0)
		return -1;
	n = snprintf(buf, sizeof(buf), "%d", pid - 1);
	if (write(k, buf, n) != n) {
		close(k);
		return -1;
	}
	close(k);
	got = fork();
	if (got == 0) {
		char c;

		close(p[1]);
		while (read(p[0], &c, 1) > 0)
			;
		_exit(0);
	}
	return got;
}

struct case_ {
	const char *src;		/* images to renumber */
	uint32_t pids[4];		/* the tasks' pids in their namespace */
	size_t n;
	pid_t decoys[MAX_DECOYS];	/* numbers given to decoys in the daemon's namespace */
	size_t ndecoys;
	bool creds;			/* make the daemon use SCM_CREDENTIALS */
	const char *fork_remap;		/* this task forks and mremaps after the restore */
	char dir[128];
};

/* Pid 1 of the sandbox: daemon, decoys, the restore into a nested pid namespace. */
static int restore_in_pidns(void *arg)
{
	struct case_ *k = arg;
	const char *args[] = { "--no-fill", NULL };
	const char *sim_args[] = { "--pidns", "--read-delay", "300", NULL, NULL, NULL };
	pid_t decoys[MAX_DECOYS], sim;
	int p[2], st, rc;
	char want[64];

	if (k->creds)
		setenv("UFFD_MANAGER_NO_SCM_PIDFD", "1", 1);
	if (k->fork_remap) {
		sim_args[3] = "--fork-remap";
		sim_args[4] = k->fork_remap;
	}
	if (!tc_daemon_start(&run, k->dir, args))
		return fail("the daemon did not start; log in %s", run.log);
	/* The daemon forks its keeper as it starts: let it take its pid before the decoys. */
	if (!tc_file_wait(run.log, "listening on lazy-pages.socket", EXIT_MS))
		return fail("the daemon did not say it listens; log in %s", run.log);
	if (pipe2(p, O_CLOEXEC) < 0)
		return fail("pipe: %s", strerror(errno));
	for (size_t i = 0; i < k->ndecoys; i++) {
		decoys[i] = decoy(k->decoys[i], p);
		if (decoys[i] != k->decoys[i])
			return fail("decoy %zu got pid %d, not %d", i, decoys[i], k->decoys[i]);
	}
	sim = tc_sim_start(&run, k->dir, sim_args);
	/* The tasks are handed over and wait before reading: the decoys go now. */
	if (!tc_file_wait(run.log, "restore finished (RSTF)", SIM_MS))
		return fail("no RSTF in the daemon's log %s", run.log);
	close(p[1]);
	for (size_t i = 0; i < k->ndecoys; i++)
		if (waitpid(decoys[i], &st, 0) != decoys[i] || !WIFEXITED(st) || WEXITSTATUS(st))
			return fail("decoy %d was touched: wait status 0x%x", decoys[i], st);
	rc = tc_sim_wait(sim, SIM_MS);
	if (rc != 0)
		return fail("criu-sim exit %d: a task saw wrong memory or hung; see %s", rc, run.simout);
	rc = tc_daemon_exit_code(&run, EXIT_MS);
	if (rc != 0)
		return fail("the daemon exit %d; log in %s", rc, run.log);
	for (size_t i = 0; i < k->n; i++) {
		snprintf(want, sizeof(want), "criu: pid %u (host ", k->pids[i]);
		if (!tc_file_has(run.log, want))
			return fail("no \"%s\" in %s", want, run.log);
	}
	/* Pid 1 and the decoys' numbers name other processes here: never the tasks. */
	for (size_t i = 0; i <= k->ndecoys; i++) {
		pid_t num = i ? k->decoys[i - 1] : 1;

		snprintf(want, sizeof(want), "(host %d)", num);
		if (tc_file_has(run.log, want))
			return fail("\"%s\": the daemon took a namespace's pid; log in %s", want, run.log);
	}
	if (!tc_file_has(run.log, k->creds ? "senders named by SCM_CREDENTIALS" :
			 "senders named by SCM_PIDFD"))
		return fail("not the expected way of naming senders; log in %s", run.log);
	if (!tc_file_has(run.log, "criu: done:"))
		return fail("no \"criu: done:\" in %s", run.log);
	return 0;
}

/* The failure, read back from the sandbox's result file, in the assertion message. */
static void expect_ok(struct case_ *k)
{
	char buf[600] = "";
	FILE *f;

	if (geteuid() != 0)
		cr_skip_test("pid namespaces and set_tid need root");
	snprintf(k->dir, sizeof(k->dir), "%s/images", run.dir);
	tc_renumber(k->src, k->dir, k->pids, k->n);
	if (in_sandbox(restore_in_pidns, k) == 0) {
		run.passed = true;
		return;
	}
	f = fopen(result, "r");
	if (f) {
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);

		buf[n] = 0;
		fclose(f);
	}
	cr_assert_fail("in the sandbox: %s", buf[0] ? buf : "no reason given");
}

Test(pidns, one_process_container_is_pid_1_inside, .init = setup, .fini = teardown, .timeout = 120)
{
	/* A one-process container: the task is pid 1 inside; the daemon must not take the host's. */
	struct case_ k = { .src = SINGLE, .pids = { 1 }, .n = 1 };

	expect_ok(&k);
}

struct tree_param {
	bool creds;		/* SCM_CREDENTIALS instead of SCM_PIDFD */
	size_t ndecoys;		/* decoys for the first NDECOYS of 600, 601, 602 */
};

ParameterizedTestParameters(pidns, tree_with_decoys_that_exit)
{
	static struct tree_param p[] = { { false, 3 }, { true, 3 }, { false, 1 } };

	return cr_make_param_array(struct tree_param, p, sizeof(p) / sizeof(p[0]));
}

ParameterizedTest(struct tree_param *tp, pidns, tree_with_decoys_that_exit, .init = setup,
		  .fini = teardown, .timeout = 120)
{
	/*
	 * A tree of four, pids 1 and 600-602 inside; in the daemon's namespace
	 * decoys have those numbers (all, or only 600: nobody has the others)
	 * and exit while the tasks are served.
	 */
	struct case_ k = { .src = FORK3, .pids = { 1, 600, 601, 602 }, .n = 4,
			   .decoys = { 600, 601, 602 }, .ndecoys = tp->ndecoys, .creds = tp->creds };

	expect_ok(&k);
}

Test(pidns, task_forks_and_moves_memory, .init = setup, .fini = teardown, .timeout = 120)
{
	/* Task 600 forks and mremaps after the restore; its decoy exits meanwhile. */
	struct case_ k = { .src = FORK3, .pids = { 1, 600, 601, 602 }, .n = 4,
			   .decoys = { 600 }, .ndecoys = 1, .fork_remap = "600" };

	expect_ok(&k);
	cr_expect(tc_file_has(run.log, "(forked) served"), "the child was served; log in %s",
		  run.log);
}

/* ---- a forked child in a pid namespace of its own ---- */

#define NS_BASE	0x530000000000ull
#define NS_SEED	0x1d1d1dull

static const struct ts_area ns_area[] = { { NS_BASE, 1 << 20, 6 } };

/* In the served process: fork a child into a new pid namespace (it is pid 1 there), which reads everything. */
static int sc_fork_into_new_pidns(struct ts_child *c)
{
	pid_t pid;
	int st;

	if (unshare(CLONE_NEWPID) < 0)
		return ts_fail("unshare(CLONE_NEWPID): %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		return ts_fail("fork: %s", strerror(errno));
	if (pid == 0)
		_exit(ts_check(ns_area[0].start, ns_area[0].len, ns_area[0].start, &ns_area[0],
			       c->seed) ? 1 : 0);
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
		return ts_fail("the child in its own pid namespace read wrong memory");
	return ts_check(ns_area[0].start, ns_area[0].len, ns_area[0].start, &ns_area[0],
			c->seed) != 0;
}

/* Does any line of FILE hold S? */
static bool file_has(const char *file, const char *s)
{
	char line[1024];
	bool found = false;
	FILE *f = fopen(file, "re");

	while (f && !found && fgets(line, sizeof(line), f))
		found = strstr(line, s) != NULL;
	if (f)
		fclose(f);
	return found;
}

/* Pid 1 of the sandbox: a daemon without the proc connector serves a process whose child is pid 1 of its own namespace. */
static int nested_child(void *arg)
{
	struct ts_daemon d;
	const char *args[] = { "--no-proc-connector", "--no-fill", NULL };
	char imgdir[160];
	struct ts_child c = { .d = &d, .areas = ns_area, .n = 1, .seed = NS_SEED };
	pid_t pid;
	int ret, bad = 0;

	(void)arg;
	ts_daemon_start(&d, args);
	snprintf(imgdir, sizeof(imgdir), "%s/img", d.dir);
	ts_write_images(imgdir, TS_IMAGE_ID, ns_area, 1, NS_SEED);
	c.imgdir = imgdir;
	pid = ts_child_start(&c, sc_fork_into_new_pidns);
	ret = ts_child_wait(pid, 30000);
	if (ret)
		bad = fail("the served process or its child saw wrong memory (%d)", ret);
	/* The child's faults say thread 1: here that is this sandbox's init, not the child. */
	if (file_has(d.log, "pid 1 uffd"))
		bad = fail("the daemon took pid 1 of the sandbox for the child (log %s)", d.log);
	if (!ts_daemon_finish(&d, 10000))
		bad = fail("the daemon did not exit cleanly");
	return bad;
}

Test(pidns, forked_child_in_its_own_namespace_is_not_pid_1, .init = setup, .fini = teardown,
     .timeout = 120)
{
	int st = in_sandbox(nested_child, NULL);
	char buf[512] = "";
	FILE *f = fopen(result, "re");

	if (f) {
		if (!fgets(buf, sizeof(buf), f))
			buf[0] = 0;
		fclose(f);
	}
	cr_assert_eq(st, 0, "%s", buf);
	run.passed = true;
}
