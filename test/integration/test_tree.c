/*
 * Process trees, end to end: dump --tree --kill of a real five-process
 * tree (test/helpers/trworkload.c: a root, three children, a grandchild;
 * a child that leads its own group, one that leads its own session, one
 * that joins a sibling's group), each process with private memory and
 * memory inherited copy-on-write from its parent and modified differently
 * on each side; restored lazily (one hand-over per process to one daemon),
 * eagerly, in a new pid namespace, with a pid taken, and failing in the
 * middle. Every process checks every word of its memory itself and reports
 * its pid, parent, group and session; every parent reaps its children.
 *
 * This process becomes a child subreaper so that the processes the tool
 * leaves (the restored root, killed helpers) are ours to reap.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
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
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tserve.h"

#define NP	5

/* In the order of the workload's indexes. */
static const char *const names[NP] = { "p", "c1", "c2", "c3", "g1" };
enum { P, C1, C2, C3, G1 };

/* A process as the workload logged it. */
struct ids {
	pid_t pid, ppid, pgid, sid;
};

static char tmp[64];
static pid_t kids[32];
static int nkids;
static int pfds[64];		/* every process of a tree we made: killed at the end */
static int npfds;
static struct ts_daemon dmn;
static bool dmn_on;

static const char *build_dir(void)
{
	const char *b = getenv("UFFD_TEST_BUILD");

	return b ? b : TEST_BUILDDIR;
}

static void setup(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/uffd-trtest-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp), "mkdtemp: %s", strerror(errno));
	cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	nkids = 0;
	npfds = 0;
	dmn_on = false;
}

/* Hold a pidfd of PID (a process of a tree this test made), to kill it at the end. */
static void hold(pid_t pid)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);

	if (fd >= 0 && npfds < (int)(sizeof(pfds) / sizeof(pfds[0])))
		pfds[npfds++] = fd;
	else if (fd >= 0)
		close(fd);
}

/* Reap whatever is ours and gone, without waiting. */
static void reap_gone(void)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

static void teardown(void)
{
	char cmd[128];

	/* Through pidfds: a pid of a process long gone may name another by now. */
	for (int i = 0; i < npfds; i++) {
		syscall(SYS_pidfd_send_signal, pfds[i], SIGKILL, NULL, 0);
		close(pfds[i]);
	}
	for (int i = 0; i < nkids; i++)
		if (kids[i] > 0)
			kill(kids[i], SIGKILL);
	for (int i = 0; i < nkids; i++)
		if (kids[i] > 0)
			waitpid(kids[i], NULL, 0);
	usleep(100000);
	reap_gone();
	if (dmn_on)
		ts_daemon_finish(&dmn, 5000);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	if (!getenv("UFFD_TEST_KEEP") && system(cmd)) {
	}
}

static void own(pid_t pid)
{
	if (pid > 0 && nkids < (int)(sizeof(kids) / sizeof(kids[0])))
		kids[nkids++] = pid;
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

/* How many times S is in B. */
static int count_str(const char *b, const char *s)
{
	int n = 0;

	for (const char *p = b; (p = strstr(p, s)); p++)
		n++;
	return n;
}

/* How many times S is in file PATH. */
static int count_in(const char *path, const char *s)
{
	char *b = slurp(path);
	int n = count_str(b, s);

	free(b);
	return n;
}

/* Start trworkload with a log (and EXTRA, or NULL); its root's pid. */
static pid_t wl_start_with(const char *log, const char *extra)
{
	char bin[256], line[128];
	const char *argv[] = { bin, "--log", log, "--mib", "2", extra, NULL };
	size_t got = 0;
	int p[2];
	pid_t pid;

	snprintf(bin, sizeof(bin), "%s/test/helpers/trworkload", build_dir());
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);

		dup2(nul, 0);
		dup2(p[1], 1);
		dup2(nul, 2);
		close_range(3, ~0u, 0);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	own(pid);
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

static pid_t wl_start(const char *log)
{
	return wl_start_with(log, NULL);
}

/* Run uffd-inject ARGS; its stdout and stderr in OUT and ERR. Returns its exit code. */
static int tool(const char *const *args, char *out, size_t olen, char *err, size_t elen)
{
	static int runs;
	char bin[256], of[128], ef[128], *b;
	const char *argv[24];
	int n = 0, st;
	pid_t pid;

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

		dup2(open("/dev/null", O_RDONLY), 0);
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

/* The ids of process NAME from the log line starting with WHAT ("start" or "check"). */
static bool ids_of(const char *log, const char *what, const char *name, struct ids *id)
{
	char want[32], *b = slurp(log), *p;
	int n;

	snprintf(want, sizeof(want), "%s %s pid ", what, name);
	p = strstr(b, want);
	n = p ? sscanf(p + strlen(want), "%d ppid %d pgid %d sid %d", &id->pid, &id->ppid,
		       &id->pgid, &id->sid) : 0;
	free(b);
	return n == 4;
}

/* Every process started; their ids as they logged them. */
static void wait_started(const char *log, struct ids id[NP])
{
	for (int i = 0; i < NP; i++) {
		char want[32];

		snprintf(want, sizeof(want), "start %s pid", names[i]);
		cr_assert(wait_for(log, want, 20000), "%s did not start", names[i]);
		cr_assert(ids_of(log, "start", names[i], &id[i]));
		hold(id[i].pid);
	}
	/* The roles the workload plays, so the test checks what it means to. */
	cr_assert_eq(id[C1].ppid, id[P].pid);
	cr_assert_eq(id[G1].ppid, id[C1].pid);
	cr_assert_eq(id[C1].pgid, id[C1].pid);
	cr_assert_eq(id[G1].pgid, id[C1].pid);
	cr_assert_eq(id[C3].pgid, id[C1].pid);
	cr_assert_eq(id[C2].sid, id[C2].pid);
	cr_assert_neq(id[P].sid, id[C2].sid);
}

/*
 * dump --tree --kill the tree into DIR: every process gone (and reaped:
 * the root is our child, the others become ours), each with its images.
 */
static void dump_tree(const struct ids id[NP], const char *dir)
{
	char ps[16], out[4096], err[2048], path[256];
	const char *args[] = { "dump", "--pid", ps, "--images", dir, "--kill", "--tree", NULL };
	int rc, st;

	snprintf(ps, sizeof(ps), "%d", (int)id[P].pid);
	rc = tool(args, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "dump exit %d: %s", rc, err);
	cr_assert_not_null(strstr(out, "dumped to"), "%s", out);
	cr_assert_not_null(strstr(out, ": 5 processes"), "%s", out);
	cr_assert_eq(waitpid(id[P].pid, &st, 0), id[P].pid);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	forget(id[P].pid);
	for (int i = 0; i < NP; i++) {
		snprintf(path, sizeof(path), "%s/core-%d.img", dir, (int)id[i].pid);
		cr_assert_eq(access(path, R_OK), 0, "%s is missing", path);
		snprintf(path, sizeof(path), "%s/mm-%d.img", dir, (int)id[i].pid);
		cr_assert_eq(access(path, R_OK), 0, "%s is missing", path);
		snprintf(path, sizeof(path), "%s/pages-%d.img", dir, i + 1);
		cr_assert_eq(access(path, R_OK), 0, "%s is missing", path);
		snprintf(path, sizeof(path), "%s/fdinfo-%d.img", dir, i + 1);
		cr_assert_eq(access(path, R_OK), 0, "%s is missing", path);
	}
	/* The others were killed too: orphans of ours now, reaped so their pids are free. */
	for (int i = 1; i < NP; i++) {
		for (int k = 0; k < 2000; k++) {
			pid_t w = waitpid(id[i].pid, &st, WNOHANG);

			if (w == id[i].pid || (w < 0 && kill(id[i].pid, 0) < 0 && errno == ESRCH))
				break;
			usleep(10000);
		}
		cr_assert(kill(id[i].pid, 0) < 0 && errno == ESRCH, "%s (pid %d) outlived the dump",
			  names[i], (int)id[i].pid);
	}
}

/* The pid dumped as DUMPED is now, from the restore's line for it. */
static pid_t restored_as(const char *out, pid_t dumped)
{
	char want[64];
	const char *p;

	snprintf(want, sizeof(want), "(pid %d, child of ", (int)dumped);
	p = strstr(out, want);
	cr_assert_not_null(p, "no line for pid %d: %s", (int)dumped, out);
	p = strstr(p, " as pid ");
	cr_assert_not_null(p);
	return (pid_t)strtol(p + 8, NULL, 10);
}

/* Restore DIR with EXTRA args; the pids now, by index, in NOW. */
static void restore(const char *dir, const char *const *extra, const struct ids id[NP],
		    pid_t now[NP], char *out, size_t olen, char *err, size_t elen)
{
	const char *args[16] = { "restore", "--images", dir };
	int n = 3, rc;

	for (int i = 0; extra[i]; i++)
		args[n++] = extra[i];
	args[n] = NULL;
	rc = tool(args, out, olen, err, elen);
	cr_assert_eq(rc, 0, "restore exit %d: %s", rc, err);
	cr_assert_eq((pid_t)strtol(out, NULL, 10), restored_as(out, id[P].pid), "%s", out);
	cr_assert_not_null(strstr(out, "restored the tree of 5 processes"), "%s", out);
	for (int i = 0; i < NP; i++) {
		now[i] = restored_as(out, id[i].pid);
		hold(now[i]);
	}
	own(now[P]);
	cr_log_info("%s", out);
}

/* The ppid, pgid and sid of PID from /proc/PID/stat (in our namespace). */
static void proc_ids(pid_t pid, struct ids *id)
{
	char path[64], *b, *p;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	b = slurp(path);
	p = strrchr(b, ')');
	cr_assert_not_null(p, "no %s", path);
	id->pid = pid;
	cr_assert_eq(sscanf(p + 2, "%*c %d %d %d", &id->ppid, &id->pgid, &id->sid), 3);
	free(b);
}

/*
 * Ask every process for a check (SIGUSR2): each must say ok, with the ids
 * WANT, and nothing bad may be in the log. Checks before it: G of them.
 */
static void check_all(const char *log, const pid_t now[NP], const struct ids want[NP], int g)
{
	char *b, *p;

	for (int i = 0; i < NP; i++)
		cr_assert_eq(kill(now[i], SIGUSR2), 0, "%s (pid %d): %s", names[i], (int)now[i],
			     strerror(errno));
	for (int i = 0; i < NP; i++) {
		char w[96];
		int n = 0;

		snprintf(w, sizeof(w), "check %s pid ", names[i]);
		for (int k = 0; k < 6000; k++) {
			b = slurp(log);
			n = 0;
			for (p = b; (p = strstr(p, w)); p++)
				n++;
			free(b);
			if (n > g)
				break;
			usleep(10000);
		}
		cr_assert_gt(n, g, "%s did not check", names[i]);
		snprintf(w, sizeof(w), "check %s pid %d ppid %d pgid %d sid %d ok\n", names[i],
			 (int)want[i].pid, (int)want[i].ppid, (int)want[i].pgid, (int)want[i].sid);
		b = slurp(log);
		cr_assert_not_null(strstr(b, w), "want '%.*s' in: %s", (int)strlen(w) - 1, w, b);
		free(b);
	}
	b = slurp(log);
	p = strstr(b, "bad ");
	cr_assert_null(p, "%.200s", p);
	free(b);
}

/*
 * End the tree: SIGTERM to g1, then the children, then the root; each
 * parent must reap its children (codes 20 + index), the root by us when
 * OURS (else by the pid namespace's init).
 */
static void end_tree(const char *log, const pid_t now[NP], bool ours)
{
	static const int order[] = { G1, C1, C2, C3 };
	char w[4][64];
	int before[4], st;

	/* The log may hold such lines already (of another copy of the tree): count. */
	for (int k = 0; k < 4; k++) {
		snprintf(w[k], sizeof(w[k]), "reaped by %s code %d\n", order[k] == G1 ? "c1" : "p",
			 20 + order[k]);
		before[k] = count_in(log, w[k]);
	}
	for (int k = 0; k < 4; k++)
		cr_assert_eq(kill(now[order[k]], SIGTERM), 0);
	cr_assert_eq(kill(now[P], SIGTERM), 0);
	for (int k = 0; k < 4; k++) {
		int n = before[k];

		for (int i = 0; i < 2000 && n == before[k]; i++) {
			n = count_in(log, w[k]);
			if (n == before[k])
				usleep(10000);
		}
		cr_assert_gt(n, before[k], "no new '%.*s' in the log", (int)strlen(w[k]) - 1, w[k]);
	}
	if (!ours)
		return;	/* the pid namespace's init reaps it */
	cr_assert_eq(waitpid(now[P], &st, 0), now[P]);
	forget(now[P]);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 20, "root status 0x%x", st);
}

/*
 * Wait until the daemon has served N processes whole, having copied at
 * least every page OUT says was left lazy (each restored process's line
 * says "K lazy").
 */
static void wait_served(unsigned n, const char *out)
{
	struct ts_status s;
	uint64_t served = 0, copied = 0, lazy = 0;
	const char *p;

	for (p = out; (p = strstr(p, " lazy (served by the manager)")); p++) {
		const char *q = p;

		while (q > out && q[-1] >= '0' && q[-1] <= '9')
			q--;
		lazy += strtoull(q, NULL, 10);
	}
	cr_assert_gt(lazy, 0, "nothing was left to the daemon: %s", out);
	for (int i = 0; i < 3000 && served < n; i++) {
		cr_assert_eq(ts_status_get(&dmn, &s), 0);
		served = s.tot->served;
		copied = s.tot->pages_copied;
		ts_status_free(&s);
		if (served < n)
			usleep(10000);
	}
	cr_assert_eq(served, n, "the daemon served %" PRIu64 " processes", served);
	cr_assert_geq(copied, lazy, "the daemon copied %" PRIu64 " pages of %" PRIu64 " lazy",
		      copied, lazy);
}

static bool root(void)
{
	return geteuid() == 0;
}

/*
 * Dump the tree and restore it with EXTRA (LAZY: from the daemon, which
 * must serve every process whole); every process back at its pid, as
 * recorded, checked before and after its last page came in.
 */
static void round_trip(const char *const *extra, bool lazy)
{
	char log[128], dir[128], out[4096], err[2048];
	struct ids id[NP], now_id;
	pid_t now[NP];

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	wl_start(log);
	wait_started(log, id);
	dump_tree(id, dir);
	restore(dir, extra, id, now, out, sizeof(out), err, sizeof(err));
	for (int i = 0; i < NP; i++) {
		cr_assert_eq(now[i], id[i].pid, "%s is not at its pid: %s", names[i], err);
		proc_ids(now[i], &now_id);
		cr_assert_eq(now_id.pgid, id[i].pgid, "%s: group %d, was %d", names[i],
			     (int)now_id.pgid, (int)id[i].pgid);
		cr_assert_eq(now_id.sid, id[i].sid, "%s: session %d, was %d", names[i],
			     (int)now_id.sid, (int)id[i].sid);
		if (i != P)
			cr_assert_eq(now_id.ppid, id[i].ppid, "%s: parent %d, was %d", names[i],
				     (int)now_id.ppid, (int)id[i].ppid);
	}
	check_all(log, now, id, 0);
	if (lazy) {
		cr_assert_not_null(strstr(out, "lazy (served by the manager)"), "%s", out);
		wait_served(NP, out);
	}
	check_all(log, now, id, 1);
	end_tree(log, now, true);
}

/*
 * Lazily restored from one daemon, one hand-over per process: each process
 * back at its pid with its parent, group and session, every byte of its
 * memory right (its own, and what it shares copy-on-write with its parent,
 * changed on both sides), and every parent reaps its children.
 */
Test(tree, lazy_every_process_back_with_its_memory_and_parent, .init = setup,
     .fini = teardown, .timeout = 180)
{
	char sock[160];
	const char *extra[] = { "--socket", sock, "--stdio", "null", NULL };

	if (!root())
		cr_skip_test("not root: the dumped pids (clone3 set_tid) need CAP_SYS_ADMIN");
	ts_daemon_start(&dmn, NULL);
	dmn_on = true;
	snprintf(sock, sizeof(sock), "%s", dmn.sock);
	round_trip(extra, true);
}

/* The same, every page written before the tree runs (--eager). */
Test(tree, eager_every_process_back_with_its_memory_and_parent, .init = setup,
     .fini = teardown, .timeout = 180)
{
	const char *extra[] = { "--eager", "--stdio", "null", NULL };

	if (!root())
		cr_skip_test("not root: the dumped pids (clone3 set_tid) need CAP_SYS_ADMIN");
	round_trip(extra, false);
}

/* The ids a process sees inside a new pid namespace: those of processes outside read 0. */
static struct ids in_ns(const struct ids *d, const struct ids id[NP])
{
	struct ids w = *d;

	if (w.pgid == id[P].pgid && w.pgid != id[P].pid)
		w.pgid = 0;	/* the root's group, ours: outside */
	if (w.sid == id[P].sid && w.sid != id[P].pid)
		w.sid = 0;
	if (d == &id[P])
		w.ppid = 1;	/* the namespace's init */
	return w;
}

/*
 * --pidns, with two dumped pids taken here: every process gets its dumped
 * pid in the new namespace, its parent, group and session there, served
 * lazily, and the parents reap their children.
 */
Test(tree, pidns_gives_every_process_its_pid, .init = setup, .fini = teardown,
     .timeout = 180)
{
	char log[128], dir[128], out[4096], err[2048], sock[160];
	const char *extra[] = { "--socket", sock, "--pidns", "--stdio", "null", NULL };
	struct ids id[NP], want[NP];
	pid_t now[NP], init;
	struct ids pid_init;
	int st;

	if (!root())
		cr_skip_test("not root: a new pid namespace needs CAP_SYS_ADMIN");
	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	wl_start(log);
	wait_started(log, id);
	dump_tree(id, dir);
	/* Taken here: the root's pid and a group leader's. */
	for (int i = 0; i < 2; i++) {
		pid_t want_pid = id[i == 0 ? P : C1].pid;
		struct clone_args ca = { .exit_signal = SIGCHLD, .set_tid = (uintptr_t)&want_pid,
					 .set_tid_size = 1 };
		long r = syscall(SYS_clone3, &ca, sizeof(ca));

		if (r == 0)
			for (;;)
				pause();
		cr_assert_gt(r, 0, "clone3 at %d: %s", (int)want_pid, strerror(errno));
		own((pid_t)r);
	}
	ts_daemon_start(&dmn, NULL);
	dmn_on = true;
	snprintf(sock, sizeof(sock), "%s", dmn.sock);
	restore(dir, extra, id, now, out, sizeof(out), err, sizeof(err));
	proc_ids(now[P], &pid_init);
	init = pid_init.ppid;
	own(init);
	for (int i = 0; i < NP; i++) {
		char w[96];

		cr_assert_neq(now[i], id[i].pid);
		snprintf(w, sizeof(w), "(pid %d in a new pid namespace)", (int)id[i].pid);
		cr_assert_not_null(strstr(out, w), "%s", out);
		want[i] = in_ns(&id[i], id);
	}
	check_all(log, now, want, 0);
	wait_served(NP, out);
	end_tree(log, now, false);
	/* The root gone, its init ends the namespace, with the root's exit code. */
	cr_assert_eq(waitpid(init, &st, 0), init);
	forget(init);
	forget(now[P]);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 20, "init status 0x%x", st);
}

/*
 * A group leader's pid taken here (no --pidns): it comes back at another
 * pid, restore says so, and the members of its group (its child, and its
 * sibling that joined it) follow it there.
 */
Test(tree, a_taken_pid_moves_and_its_group_follows, .init = setup, .fini = teardown,
     .timeout = 180)
{
	char log[128], dir[128], out[4096], err[2048], w[96];
	const char *extra[] = { "--eager", "--stdio", "null", NULL };
	struct ids id[NP], want[NP];
	pid_t now[NP], taken = 0;

	if (!root())
		cr_skip_test("not root: the dumped pids (clone3 set_tid) need CAP_SYS_ADMIN");
	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	wl_start(log);
	wait_started(log, id);
	dump_tree(id, dir);
	{
		pid_t want_pid = id[C1].pid;
		struct clone_args ca = { .exit_signal = SIGCHLD, .set_tid = (uintptr_t)&want_pid,
					 .set_tid_size = 1 };
		long r = syscall(SYS_clone3, &ca, sizeof(ca));

		if (r == 0)
			for (;;)
				pause();
		cr_assert_gt(r, 0, "clone3 at %d: %s", (int)want_pid, strerror(errno));
		taken = (pid_t)r;
		own(taken);
	}
	restore(dir, extra, id, now, out, sizeof(out), err, sizeof(err));
	snprintf(w, sizeof(w), "pid %d is now pid %d (%d: taken)", (int)id[C1].pid, (int)now[C1],
		 (int)id[C1].pid);
	cr_assert_not_null(strstr(err, w), "%s", err);
	cr_assert_neq(now[C1], id[C1].pid);
	memcpy(want, id, sizeof(want));
	want[C1].pid = want[C1].pgid = now[C1];
	want[G1].ppid = want[G1].pgid = now[C1];
	want[C3].pgid = now[C1];
	for (int i = 0; i < NP; i++)
		if (i != C1)
			cr_assert_eq(now[i], id[i].pid, "%s moved too", names[i]);
	check_all(log, now, want, 0);
	end_tree(log, now, true);
}

/*
 * A process that fails in the middle (the third, on purpose, once built):
 * restore fails naming it, and no process of the tree is left, neither
 * those built before it nor those not yet built.
 */
Test(tree, a_failure_in_the_middle_kills_the_whole_tree, .init = setup, .fini = teardown,
     .timeout = 180)
{
	char log[128], dir[128], out[4096], err[2048], w[96], fail[16];
	const char *args[] = { "restore", "--images", dir, "--eager", "--stdio", "null", NULL };
	struct ids id[NP];
	int rc;

	if (!root())
		cr_skip_test("not root: the dumped pids (clone3 set_tid) need CAP_SYS_ADMIN");
	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	wl_start(log);
	wait_started(log, id);
	dump_tree(id, dir);
	snprintf(fail, sizeof(fail), "%d", (int)id[C2].pid);
	setenv("UFFD_INJECT_TEST_TREE_FAIL_AT", fail, 1);
	rc = tool(args, out, sizeof(out), err, sizeof(err));
	unsetenv("UFFD_INJECT_TEST_TREE_FAIL_AT");
	cr_assert_eq(rc, 1, "restore exit %d: %s %s", rc, out, err);
	snprintf(w, sizeof(w), "pid %d: failed on purpose", (int)id[C2].pid);
	cr_assert_not_null(strstr(err, w), "%s", err);
	cr_assert_not_null(strstr(err, "every process of the tree killed"), "%s", err);
	/* Helpers at the dumped pids, killed: the orphans among them are ours to reap. */
	for (int i = 0; i < NP; i++) {
		bool gone = false;

		for (int k = 0; k < 2000 && !gone; k++) {
			reap_gone();
			gone = kill(id[i].pid, 0) < 0 && errno == ESRCH;
			if (!gone)
				usleep(10000);
		}
		cr_assert(gone, "%s (pid %d) is still there", names[i], (int)id[i].pid);
	}
	{
		char *b = slurp(log);

		cr_assert_null(strstr(b, "check "), "a process ran: %s", b);
		free(b);
	}
}

/* A zombie child is refused, named, and the tree is let go as it was. */
Test(tree, a_zombie_child_is_refused_by_pid, .init = setup, .fini = teardown, .timeout = 60)
{
	char dir[128], out[4096], err[2048], ps[16], w[96], path[64], *b;
	const char *args[] = { "dump", "--pid", ps, "--images", dir, "--kill", "--tree", NULL };
	int p[2], rc;
	pid_t parent, zombie = 0;

	snprintf(dir, sizeof(dir), "%s/img", tmp);
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	parent = fork();
	cr_assert_geq(parent, 0);
	if (parent == 0) {
		pid_t z = fork();

		if (z == 0)
			_exit(0);
		if (write(p[1], &z, sizeof(z)) != sizeof(z))
			_exit(1);
		for (;;)
			pause();	/* never reaps it */
	}
	own(parent);
	close(p[1]);
	cr_assert_eq(read(p[0], &zombie, sizeof(zombie)), sizeof(zombie));
	close(p[0]);
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)zombie);
	for (int k = 0; k < 2000; k++) {
		b = slurp(path);
		bool z = strstr(b, ") Z ") != NULL;

		free(b);
		if (z)
			break;
		usleep(10000);
	}
	snprintf(ps, sizeof(ps), "%d", (int)parent);
	rc = tool(args, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 1, "dump exit %d: %s", rc, out);
	snprintf(w, sizeof(w), "pid %d (a child of %d) is a zombie", (int)zombie, (int)parent);
	cr_assert_not_null(strstr(err, w), "%s", err);
	cr_assert_neq(access(dir, F_OK), 0, "%s was left behind", dir);
	/*
	 * Let go: it runs (sleeps) on, not stopped or traced. Just after the
	 * detach it may still be running back into pause(): wait (a hang
	 * guard, not a bound) for it to sleep there.
	 */
	snprintf(path, sizeof(path), "/proc/%d/status", (int)parent);
	for (int k = 0; k < 2000; k++) {
		b = slurp(path);
		if (strstr(b, "State:\tS"))
			break;
		free(b);
		b = NULL;
		usleep(5000);
	}
	cr_assert_not_null(b, "pid %d never went back to sleep after the detach", (int)parent);
	cr_assert_not_null(strstr(b, "TracerPid:\t0\n"), "%s", b);
	free(b);
}

/* The state letter of PID from /proc/PID/stat, or 0. */
static char state_of(pid_t pid)
{
	char path[64], *b, *p, c = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	b = slurp(path);
	p = strrchr(b, ')');
	if (p && p[1] == ' ')
		c = p[2];
	free(b);
	return c;
}

/*
 * dump --tree --leave-stopped: every process of the tree is left stopped
 * (SIGSTOP) with complete images; a copy restored in a new pid namespace
 * runs with every byte and id, and the stopped tree, resumed with SIGCONT,
 * goes on as it was.
 */
Test(tree, leave_stopped_then_copy_in_a_pidns_and_the_original_goes_on, .init = setup,
     .fini = teardown, .timeout = 180)
{
	char log[128], dir[128], out[4096], err[2048], ps[16];
	const char *args[] = { "dump", "--pid", ps, "--images", dir, "--leave-stopped", "--tree",
			       NULL };
	const char *extra[] = { "--eager", "--pidns", "--stdio", "null", NULL };
	struct ids id[NP], want[NP], pid_init;
	pid_t now[NP], orig[NP], init;
	int rc, st;

	if (!root())
		cr_skip_test("not root: a new pid namespace needs CAP_SYS_ADMIN");
	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	wl_start(log);
	wait_started(log, id);
	snprintf(ps, sizeof(ps), "%d", (int)id[P].pid);
	rc = tool(args, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "dump exit %d: %s", rc, err);
	cr_assert_not_null(strstr(out, ": 5 processes"), "%s", out);
	for (int i = 0; i < NP; i++) {
		orig[i] = id[i].pid;
		cr_assert_eq(state_of(orig[i]), 'T', "%s (pid %d) is not stopped: %c", names[i],
			     (int)orig[i], state_of(orig[i]));
		own(orig[i]);
	}

	restore(dir, extra, id, now, out, sizeof(out), err, sizeof(err));
	proc_ids(now[P], &pid_init);
	init = pid_init.ppid;
	own(init);
	for (int i = 0; i < NP; i++)
		want[i] = in_ns(&id[i], id);
	check_all(log, now, want, 0);
	end_tree(log, now, false);
	cr_assert_eq(waitpid(init, &st, 0), init);
	forget(init);
	forget(now[P]);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 20, "init status 0x%x", st);

	/* The original, still stopped, goes on once continued. */
	for (int i = 0; i < NP; i++)
		cr_assert_eq(state_of(orig[i]), 'T', "%s stopped no more", names[i]);
	for (int i = 0; i < NP; i++)
		cr_assert_eq(kill(orig[i], SIGCONT), 0);
	check_all(log, orig, id, 1);
	end_tree(log, orig, true);
}

/*
 * A process in the middle of the tree that dump cannot take (c3 holds a
 * pipe; it is read after c1 and c2 had their pages written): the dump
 * fails naming it, leaves no images, and every process runs on as it was,
 * untraced, with every byte.
 */
Test(tree, a_refused_process_leaves_the_whole_tree_running, .init = setup, .fini = teardown,
     .timeout = 120)
{
	char log[128], dir[128], out[4096], err[2048], ps[16], w[96], path[64], *b;
	const char *args[] = { "dump", "--pid", ps, "--images", dir, "--kill", "--tree", NULL };
	struct ids id[NP];
	pid_t now[NP];
	int rc;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	wl_start_with(log, "--c3-pipe");
	wait_started(log, id);
	snprintf(ps, sizeof(ps), "%d", (int)id[P].pid);
	rc = tool(args, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 1, "dump exit %d: %s", rc, out);
	snprintf(w, sizeof(w), "pid %d: cannot dump for restore: fd ", (int)id[C3].pid);
	cr_assert_not_null(strstr(err, w), "%s", err);
	cr_assert_not_null(strstr(err, "is a pipe"), "%s", err);
	cr_assert_neq(access(dir, F_OK), 0, "%s was left behind", dir);
	for (int i = 0; i < NP; i++) {
		now[i] = id[i].pid;
		snprintf(path, sizeof(path), "/proc/%d/status", (int)now[i]);
		b = slurp(path);
		cr_assert_not_null(strstr(b, "TracerPid:\t0\n"), "%s: %s", names[i], b);
		free(b);
		cr_assert(state_of(now[i]) == 'S' || state_of(now[i]) == 'R', "%s is in state %c",
			  names[i], state_of(now[i]));
	}
	check_all(log, now, id, 0);
	end_tree(log, now, true);
}

/*
 * Every process with a second thread of its own (blocked in nanosleep when
 * dumped), restored lazily: in each, both threads are back, the second
 * one counting again, and every byte is right.
 */
Test(tree, every_process_with_its_threads, .init = setup, .fini = teardown, .timeout = 180)
{
	char log[128], dir[128], out[4096], err[2048], sock[160];
	const char *extra[] = { "--socket", sock, "--stdio", "null", NULL };
	struct ids id[NP];
	pid_t now[NP];

	if (!root())
		cr_skip_test("not root: the dumped pids (clone3 set_tid) need CAP_SYS_ADMIN");
	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	wl_start_with(log, "--threads");
	wait_started(log, id);
	dump_tree(id, dir);
	ts_daemon_start(&dmn, NULL);
	dmn_on = true;
	snprintf(sock, sizeof(sock), "%s", dmn.sock);
	restore(dir, extra, id, now, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(count_str(out, ", 2 threads (0 not at the dumped tid)"), NP, "%s", out);
	check_all(log, now, id, 0);
	for (int i = 0; i < NP; i++) {
		char w[64];

		snprintf(w, sizeof(w), "threads %s n 2 ticking\n", names[i]);
		cr_assert_eq(count_in(log, w), 1, "no '%s' in the log", w);
	}
	wait_served(NP, out);
	end_tree(log, now, true);
}

/* CRIU's own dump of a tree (no uffd-inject cores): refused before any process is made, by pid. */
Test(tree, criu_tree_is_refused_by_pid_before_anything_is_made, .init = setup, .fini = teardown,
     .timeout = 60)
{
	char out[4096], err[2048];
	const char *args[] = { "restore", "--images", TEST_SRCDIR "/test/data/criu-4.2/fork3",
			       "--eager", NULL };
	int rc = tool(args, out, sizeof(out), err, sizeof(err));

	cr_assert_eq(rc, 1, "restore exit %d: %s %s", rc, out, err);
	cr_assert_not_null(strstr(err, "fork3: pid 24800: "), "%s", err);
	cr_assert_not_null(strstr(err, "not an x86_64 core written by uffd-inject"), "%s", err);
	cr_assert_null(strstr(err, "killed"), "%s", err);
	cr_assert_eq(out[0], '\0', "%s", out);
}

/*
 * The whole round inside a throw-away pid namespace of its own (unshare
 * -p -f --mount-proc, with its own /proc): the tree started there, dumped
 * with --tree --kill, and restored with --pidns into a namespace nested in
 * it, where every process gets its pid again; the script checks and ends
 * the restored tree, and every id it logged is checked here.
 */
static const char unshare_script[] =
	"set -u\n"
	"B=$1; T=$2\n"
	"lines() { n=$(grep -c \"$1\" \"$2\" 2>/dev/null) || true; echo \"${n:-0}\"; }\n"
	"wait_lines() { i=0; while [ \"$(lines \"^$1\" \"$T/log\")\" -lt \"$2\" ]; do\n"
	"  i=$((i+1)); [ $i -lt 3000 ] || exit \"$3\"; sleep 0.01; done; }\n"
	"\"$B/test/helpers/trworkload\" --log \"$T/log\" --mib 2 >\"$T/wl.out\" 2>/dev/null </dev/null &\n"
	"wait_lines 'start ' 5 11\n"
	"i=0; while [ \"$(lines '^ready pid=' \"$T/wl.out\")\" -lt 1 ]; do\n"
	"  i=$((i+1)); [ $i -lt 3000 ] || exit 12; sleep 0.01; done\n"
	"root=$(sed -n 's/^ready pid=\\([0-9][0-9]*\\)$/\\1/p' \"$T/wl.out\")\n"
	"case \"$root\" in ''|*[!0-9]*) exit 12;; esac\n"
	"\"$B/uffd-inject\" dump --pid \"$root\" --images \"$T/img\" --kill --tree \\\n"
	"  >\"$T/dump.out\" 2>\"$T/dump.err\" </dev/null || exit 13\n"
	"\"$B/uffd-inject\" restore --images \"$T/img\" --eager --pidns --stdio null \\\n"
	"  >\"$T/restore.out\" 2>\"$T/restore.err\" </dev/null || exit 14\n"
	"pids=$(sed -n 's/.* as pid \\([0-9][0-9]*\\) (pid .*/\\1/p' \"$T/restore.out\")\n"
	"n=0; for p in $pids; do case \"$p\" in *[!0-9]*) exit 15;; esac; n=$((n+1)); done\n"
	"[ \"$n\" = 5 ] || exit 16\n"
	"for p in $pids; do kill -USR2 \"$p\" || exit 17; done\n"
	"wait_lines 'check ' 5 18\n"
	"for p in $pids; do kill -TERM \"$p\" || exit 19; done\n"
	"wait_lines 'reaped ' 4 20\n"
	"exit 0\n";

Test(tree, round_trip_inside_a_throwaway_pid_namespace, .init = setup, .fini = teardown,
     .timeout = 120)
{
	char log[128], path[160], *b;
	const char *argv[] = { "unshare", "-p", "-f", "--mount-proc", "sh", "-c", unshare_script,
			       "sh", build_dir(), tmp, NULL };
	struct ids id[NP], want[NP];
	int st;
	pid_t pid;

	if (!root())
		cr_skip_test("not root: unshare -p needs CAP_SYS_ADMIN");
	snprintf(log, sizeof(log), "%s/log", tmp);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);

		dup2(nul, 0);
		dup2(nul, 1);
		close_range(3, ~0u, 0);
		execvp("unshare", (char *const *)argv);
		_exit(127);
	}
	own(pid);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	forget(pid);
	snprintf(path, sizeof(path), "%s/restore.err", tmp);
	b = slurp(path);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the script failed (status 0x%x): %s", st,
		  b);
	free(b);
	for (int i = 0; i < NP; i++) {
		cr_assert(ids_of(log, "start", names[i], &id[i]), "%s did not start", names[i]);
		cr_assert_lt(id[i].pid, 100, "%s: pid %d: not in a fresh namespace?", names[i],
			     (int)id[i].pid);
	}
	for (int i = 0; i < NP; i++) {
		char w[96];

		want[i] = in_ns(&id[i], id);
		snprintf(w, sizeof(w), "check %s pid %d ppid %d pgid %d sid %d ok\n", names[i],
			 (int)want[i].pid, (int)want[i].ppid, (int)want[i].pgid, (int)want[i].sid);
		b = slurp(log);
		cr_assert_not_null(strstr(b, w), "want '%.*s' in: %s", (int)strlen(w) - 1, w, b);
		free(b);
	}
	b = slurp(log);
	cr_assert_null(strstr(b, "bad "), "%s", b);
	for (int i = 1; i < NP; i++) {
		char w[64];

		snprintf(w, sizeof(w), "reaped by %s code %d\n", i == G1 ? "c1" : "p", 20 + i);
		cr_assert_not_null(strstr(b, w), "no '%.*s' in: %s", (int)strlen(w) - 1, w, b);
	}
	free(b);
}

/*
 * dump --tree without --kill: memory images of every process (a pipe is no
 * bar then), no restore records, and every process goes on untraced with
 * every byte right.
 */
Test(tree, plain_dump_leaves_every_process_running, .init = setup, .fini = teardown,
     .timeout = 120)
{
	char log[128], dir[128], out[4096], err[2048], ps[16], path[256], *b;
	const char *args[] = { "dump", "--pid", ps, "--images", dir, "--tree", NULL };
	const char *sargs[] = { "show", dir, NULL };
	struct ids id[NP];
	pid_t now[NP];
	int rc;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	wl_start_with(log, "--c3-pipe");
	wait_started(log, id);
	snprintf(ps, sizeof(ps), "%d", (int)id[P].pid);
	rc = tool(args, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "dump exit %d: %s", rc, err);
	cr_assert_not_null(strstr(out, ": 5 processes"), "%s", out);
	cr_assert_eq(count_str(out, "target left running"), NP, "%s", out);
	for (int i = 0; i < NP; i++) {
		now[i] = id[i].pid;
		snprintf(path, sizeof(path), "%s/pagemap-%d.img", dir, (int)id[i].pid);
		cr_assert_eq(access(path, R_OK), 0, "%s is missing", path);
		snprintf(path, sizeof(path), "%s/pages-%d.img", dir, i + 1);
		cr_assert_eq(access(path, R_OK), 0, "%s is missing", path);
		snprintf(path, sizeof(path), "%s/core-%d.img", dir, (int)id[i].pid);
		cr_assert_neq(access(path, F_OK), 0, "%s without --kill", path);
		snprintf(path, sizeof(path), "/proc/%d/status", (int)now[i]);
		b = slurp(path);
		cr_assert_not_null(strstr(b, "TracerPid:\t0\n"), "%s: %s", names[i], b);
		free(b);
	}
	rc = tool(sargs, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "show exit %d: %s", rc, err);
	cr_assert_not_null(strstr(out, "5 tasks (from pstree.img)"), "%s", out);
	check_all(log, now, id, 0);
	end_tree(log, now, true);
}

/*
 * A child stopped (SIGSTOP) when the tree is dumped comes back stopped,
 * the others running; continued, it has every byte and its ids.
 */
/*
 * dump --tree --leave-stopped that fails once every process is stopped
 * (after the stop, before the images are published): every process goes on
 * as it was, the one stopped before the dump still stopped, and no image
 * is left.
 */
Test(tree, a_failed_leave_stopped_leaves_a_stopped_child_stopped, .init = setup,
     .fini = teardown, .timeout = 120)
{
	char log[128], dir[128], out[4096], err[2048], ps[16];
	const char *args[] = { "dump", "--pid", ps, "--images", dir, "--leave-stopped", "--tree",
			       NULL };
	struct ids id[NP];
	pid_t now[NP];
	int rc;

	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	wl_start(log);
	wait_started(log, id);
	cr_assert_eq(kill(id[C2].pid, SIGSTOP), 0);
	for (int k = 0; k < 2000 && state_of(id[C2].pid) != 'T'; k++)
		usleep(10000);
	cr_assert_eq(state_of(id[C2].pid), 'T');
	snprintf(ps, sizeof(ps), "%d", (int)id[P].pid);
	cr_assert_eq(setenv("UFFD_INJECT_TEST_TREE_DUMP_FAIL", "1", 1), 0);
	rc = tool(args, out, sizeof(out), err, sizeof(err));
	unsetenv("UFFD_INJECT_TEST_TREE_DUMP_FAIL");
	cr_assert_eq(rc, 1, "dump exit %d: %s", rc, out);
	cr_assert_not_null(strstr(err, "failed on purpose"), "%s", err);
	cr_assert_neq(access(dir, F_OK), 0, "%s was left behind", dir);
	/* SIGCONT to those the dump stopped is sent, not yet acted on: wait for it. */
	for (int i = 0; i < NP; i++) {
		now[i] = id[i].pid;
		for (int k = 0; k < 500 && i != C2 && state_of(now[i]) == 'T'; k++)
			usleep(10000);
		cr_assert_eq(state_of(now[i]) == 'T', i == C2, "%s is in state %c", names[i],
			     state_of(now[i]));
	}
	cr_assert_eq(kill(now[C2], SIGCONT), 0);
	check_all(log, now, id, 0);
	end_tree(log, now, true);
}

/*
 * dump --tree --kill where a process seems to outlive its SIGKILL: the dump
 * fails, but every process got its SIGKILL and the images, published
 * before it, stay whole: the tree is restored from them.
 */
Test(tree, a_failed_kill_keeps_the_images, .init = setup, .fini = teardown, .timeout = 120)
{
	char log[128], dir[128], out[4096], err[2048], ps[16], path[200];
	const char *args[] = { "dump", "--pid", ps, "--images", dir, "--kill", "--tree", NULL };
	const char *extra[] = { "--eager", "--stdio", "null", NULL };
	struct ids id[NP];
	pid_t now[NP];
	int rc, st;

	if (!root())
		cr_skip_test("not root: the dumped pids (clone3 set_tid) need CAP_SYS_ADMIN");
	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	wl_start(log);
	wait_started(log, id);
	snprintf(ps, sizeof(ps), "%d", (int)id[P].pid);
	cr_assert_eq(setenv("UFFD_INJECT_TEST_TREE_KILL_FAIL", "1", 1), 0);
	rc = tool(args, out, sizeof(out), err, sizeof(err));
	unsetenv("UFFD_INJECT_TEST_TREE_KILL_FAIL");
	cr_assert_eq(rc, 1, "dump exit %d: %s", rc, out);
	cr_assert_not_null(strstr(err, "still there (on purpose)"), "%s", err);
	snprintf(path, sizeof(path), "%s/pstree.img", dir);
	cr_assert_eq(access(path, F_OK), 0, "the images were taken back: %s", err);
	/* Every one got its SIGKILL: reap them (the root is our child, the rest our orphans). */
	cr_assert_eq(waitpid(id[P].pid, &st, 0), id[P].pid);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	forget(id[P].pid);
	for (int i = 1; i < NP; i++) {
		for (int k = 0; k < 2000; k++) {
			pid_t w = waitpid(id[i].pid, &st, WNOHANG);

			if (w == id[i].pid || (w < 0 && kill(id[i].pid, 0) < 0 && errno == ESRCH))
				break;
			usleep(10000);
		}
		cr_assert(kill(id[i].pid, 0) < 0 && errno == ESRCH, "%s (pid %d) outlived the dump",
			  names[i], (int)id[i].pid);
	}
	restore(dir, extra, id, now, out, sizeof(out), err, sizeof(err));
	check_all(log, now, id, 0);
	end_tree(log, now, true);
}

Test(tree, a_stopped_child_comes_back_stopped, .init = setup, .fini = teardown,
     .timeout = 120)
{
	char log[128], dir[128], out[4096], err[2048];
	const char *extra[] = { "--eager", "--stdio", "null", NULL };
	struct ids id[NP];
	pid_t now[NP];

	if (!root())
		cr_skip_test("not root: the dumped pids (clone3 set_tid) need CAP_SYS_ADMIN");
	snprintf(log, sizeof(log), "%s/log", tmp);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	wl_start(log);
	wait_started(log, id);
	cr_assert_eq(kill(id[C2].pid, SIGSTOP), 0);
	for (int k = 0; k < 2000 && state_of(id[C2].pid) != 'T'; k++)
		usleep(10000);
	cr_assert_eq(state_of(id[C2].pid), 'T');
	dump_tree(id, dir);
	restore(dir, extra, id, now, out, sizeof(out), err, sizeof(err));
	for (int k = 0; k < 2000 && state_of(now[C2]) != 'T'; k++)
		usleep(10000);
	for (int i = 0; i < NP; i++)
		cr_assert_eq(state_of(now[i]) == 'T', i == C2, "%s is in state %c", names[i],
			     state_of(now[i]));
	cr_assert_eq(kill(now[C2], SIGCONT), 0);
	check_all(log, now, id, 0);
	end_tree(log, now, true);
}
