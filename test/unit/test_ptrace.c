/*
 * The ptrace engine against real processes: build/test/helpers/ptarget,
 * started fresh by every test (as our child, or as a grandchild so that we
 * are only its tracer), reports what it sees over a pipe. Every target is
 * killed and reaped in .fini, also when a test fails half-way.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "arch.h"
#include "ptrace.h"
#include "ptrace_stop.h"	/* the engine's waits: PT_STOP_WAIT_MS */

#define PTARGET		TEST_BUILDDIR "/test/helpers/ptarget"
#define LINE_MAX_	20000
#define MAX_TGT		2
#define MAX_THREADS	64

struct tgt {
	pid_t pid;		/* the target */
	pid_t mid;		/* its parent when it is not our child, else 0 */
	int cmd;		/* its fd 3, commands */
	int rep;		/* its fd 4, reports */
	int data;		/* its fd 5, data for "block read/poll" */
};

static struct tgt tg[MAX_TGT];
static struct pt P, P2;
static pid_t helper_pid;	/* another tracer, or a stand-in tool */
static char tmpdir[64];
static char why[256];

/*
 * The longest wait for a condition (a thread runs, blocks, stops, a signal
 * arrives): a hang guard, never reached unless something is broken; a
 * loaded machine only makes the wait longer.
 */
#define GUARD_MS	10000

static long now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void msleep(long ms)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000000 };

	while (nanosleep(&t, &t) < 0 && errno == EINTR)
		;
}

/* The state letter of thread TID of PID (R, S, t, T, Z...), 0 when it is gone. */
static char thread_state(pid_t pid, pid_t tid)
{
	char path[64], buf[512], *s;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", pid, tid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	s = strrchr(buf, ')');
	return s ? s[2] : 0;
}

/* Field NAME of /proc/PID/task/TID/status in BASE, or -1. */
static long long status_of(pid_t pid, pid_t tid, const char *name, int base)
{
	char path[64], buf[4096], *s;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/status", pid, tid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	s = strstr(buf, name);
	return s ? strtoll(s + strlen(name) + 1, NULL, base) : -1;
}

static void fini(void)
{
	long end;
	int i, status;

	for (i = 0; i < MAX_TGT; i++) {
		if (tg[i].pid > 0)
			kill(tg[i].pid, SIGKILL);
		if (tg[i].mid > 0)
			kill(tg[i].mid, SIGKILL);
	}
	if (helper_pid > 0)
		kill(helper_pid, SIGKILL);
	/* collects the exits of the threads we still trace, and frees */
	pt_detach(&P);
	pt_detach(&P2);
	/* reap everything, but never hang here */
	for (end = now_ms() + 5000; now_ms() < end;) {
		pid_t r = waitpid(-1, &status, __WALL | WNOHANG);

		if (r < 0 && errno == ECHILD)
			break;
		if (r <= 0)
			msleep(1);
	}
	for (i = 0; i < MAX_TGT; i++) {
		if (tg[i].cmd >= 0)
			close(tg[i].cmd);
		if (tg[i].rep >= 0)
			close(tg[i].rep);
		if (tg[i].data >= 0)
			close(tg[i].data);
	}
	if (tmpdir[0]) {
		char path[128];

		snprintf(path, sizeof(path), "%s/file", tmpdir);
		unlink(path);
		rmdir(tmpdir);
	}
}

static void init(void)
{
	int i;

	/* a target that died must fail a test, not kill it with SIGPIPE */
	signal(SIGPIPE, SIG_IGN);
	memset(tg, 0, sizeof(tg));
	for (i = 0; i < MAX_TGT; i++)
		tg[i].cmd = tg[i].rep = tg[i].data = -1;
	memset(&P, 0, sizeof(P));
	memset(&P2, 0, sizeof(P2));
	P.pidfd = P2.pidfd = -1;
	cr_assert_eq(access(PTARGET, X_OK), 0, "%s: %s (build it with make test)", PTARGET,
		     strerror(errno));
}

TestSuite(ptrace, .init = init, .fini = fini, .timeout = 30);

/* Move FD to 10 or above, close-on-exec, so that dup2 to 3..5 cannot clobber another. */
static int high(int fd)
{
	int h = fcntl(fd, F_DUPFD_CLOEXEC, 10);

	close(fd);
	return h;
}

/* Exec ptarget with ARGV in the child; does not return. */
static void exec_target(int cmd, int rep, int data, char *const argv[])
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (dup2(cmd, 3) < 0 || dup2(rep, 4) < 0 || dup2(data, 5) < 0)
		_exit(120);
	execv(PTARGET, argv);
	_exit(121);
}

/* Start ptarget ARGS... as tg[I]; FOREIGN: as a grandchild, we are not its parent. */
static struct tgt *start_target(int i, bool foreign, ...)
{
	struct tgt *t = &tg[i];
	char *argv[8] = { "ptarget" };
	int c[2], r[2], d[2], pp[2], n = 1;
	va_list ap;
	pid_t pid;

	va_start(ap, foreign);
	while (n < 7 && (argv[n] = va_arg(ap, char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	cr_assert_eq(pipe2(c, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(r, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(d, O_CLOEXEC), 0);
	cr_assert_eq(pipe2(pp, O_CLOEXEC), 0);
	c[0] = high(c[0]);
	r[1] = high(r[1]);
	d[0] = high(d[0]);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		if (!foreign)
			exec_target(c[0], r[1], d[0], argv);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		pid = fork();
		if (pid < 0)
			_exit(122);
		if (pid == 0)
			exec_target(c[0], r[1], d[0], argv);
		if (write(pp[1], &pid, sizeof(pid)) != sizeof(pid))
			_exit(123);
		int status;

		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	}
	if (foreign) {
		t->mid = pid;
		cr_assert_eq(read(pp[0], &t->pid, sizeof(t->pid)), (ssize_t)sizeof(t->pid));
	} else {
		t->pid = pid;
	}
	close(pp[0]);
	close(pp[1]);
	close(c[0]);
	close(r[1]);
	close(d[0]);
	t->cmd = c[1];
	t->rep = r[0];
	t->data = d[1];
	return t;
}

/* Read one report line within MS; false on timeout or EOF. */
static bool get_line(struct tgt *t, char *buf, size_t len, int ms)
{
	long end = now_ms() + ms;
	size_t n = 0;

	while (n < len - 1) {
		struct pollfd pfd = { .fd = t->rep, .events = POLLIN };
		long left = end - now_ms();

		if (left < 0 || poll(&pfd, 1, (int)left) <= 0) {
			buf[n] = '\0';
			return false;
		}
		if (read(t->rep, buf + n, 1) != 1)
			return false;
		if (buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = '\0';
	return true;
}

/* "tid:state:tracer ..." for every thread of PID, to explain a silent target. */
static const char *describe(pid_t pid, char *out, size_t len)
{
	char path[64];
	struct dirent *de;
	size_t n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	out[0] = '\0';
	d = opendir(path);
	if (!d)
		return "gone";
	while ((de = readdir(d)) && n + 40 < len) {
		pid_t tid = (pid_t)atoi(de->d_name);

		if (tid > 0)
			n += (size_t)snprintf(out + n, len - n, "%d:%c:%lld ", tid,
					      thread_state(pid, tid), status_of(pid, tid, "TracerPid", 10));
	}
	closedir(d);
	return out;
}

static void need_line(struct tgt *t, char *buf, size_t len)
{
	char threads[1024];

	cr_assert(get_line(t, buf, len, 10000), "no report from target %d (got '%s'); threads %s",
		  t->pid, buf, describe(t->pid, threads, sizeof(threads)));
}
static void send_cmd(struct tgt *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void send_cmd(struct tgt *t, const char *fmt, ...)
{
	char buf[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	cr_assert_eq(write(t->cmd, buf, (size_t)n), n);
}

/* Ask for the counters; returns how many. */
static int counters(struct tgt *t, uint64_t *v)
{
	char line[LINE_MAX_], *s;
	int n = 0;

	send_cmd(t, "c\n");
	need_line(t, line, sizeof(line));
	cr_assert(!strncmp(line, "cnt ", 4), "%s", line);
	for (s = line + 3; *s && n <= MAX_THREADS; n++)
		v[n] = strtoull(s, &s, 10);
	return n;
}

/* Wait until every thread's counter has passed V[1..N] (a busy thread may wait for a CPU). */
static void all_run_on(struct tgt *t, const uint64_t *v, int n)
{
	uint64_t w[MAX_THREADS + 1];
	long end = now_ms() + GUARD_MS;
	int i;

	for (i = 1; i <= n; i++) {
		while (counters(t, w) && w[i] <= v[i]) {
			cr_assert_lt(now_ms(), end, "thread %d (counter %d) does not run", i, i);
			msleep(5);
		}
	}
}

/* The hello line: the address of the counters and the thread count. */
static uint64_t hello(struct tgt *t, int *nthr)
{
	char line[256];
	unsigned long long addr = 0;

	need_line(t, line, sizeof(line));
	cr_assert_eq(sscanf(line, "hello cnt %llx n %d", &addr, nthr), 2, "%s", line);
	return addr;
}

static long tracer_of(pid_t pid, pid_t tid)
{
	return (long)status_of(pid, tid, "TracerPid", 10);
}

/* Is SIG pending for thread TID of PID, or for the whole process? */
static bool sig_pending(pid_t pid, pid_t tid, int sig)
{
	unsigned long long bit = 1ull << (sig - 1);

	return (((unsigned long long)status_of(pid, tid, "SigPnd", 16) |
		 (unsigned long long)status_of(pid, tid, "ShdPnd", 16)) & bit) != 0;
}

/* The thread ids of PID, from /proc. */
static int list_tids(pid_t pid, pid_t *tids, int max)
{
	char path[64];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	d = opendir(path);
	cr_assert_not_null(d);
	while ((de = readdir(d)) && n < max)
		if (de->d_name[0] != '.')
			tids[n++] = (pid_t)atoi(de->d_name);
	closedir(d);
	return n;
}

static bool seized(const struct pt *p, pid_t tid)
{
	int i;

	for (i = 0; i < p->nr_threads; i++)
		if (p->th[i].tid == tid)
			return true;
	return false;
}

/* Wait until thread TID sleeps in syscall NR (/proc/PID/task/TID/syscall). */
static void wait_in_syscall(pid_t pid, pid_t tid, long nr)
{
	char path[64], buf[256];
	long end = now_ms() + GUARD_MS;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/syscall", pid, tid);
	for (;;) {
		int fd = open(path, O_RDONLY);
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

		if (fd >= 0)
			close(fd);
		if (n > 0) {
			buf[n] = '\0';
			if (strtol(buf, NULL, 10) == nr && buf[0] != 'r' &&
			    thread_state(pid, tid) == 'S')
				return;
		}
		cr_assert_lt(now_ms(), end, "thread %d never blocked in syscall %ld (%s)", tid, nr,
			     buf);
		msleep(2);
	}
}

static void seize(struct pt *p, pid_t pid)
{
	int r = pt_seize(p, pid, why, sizeof(why));

	cr_assert_eq(r, 0, "pt_seize %d: %s (%s)", pid, strerror(-r), why);
}

static long inject(struct pt *p, long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
	long ret = 0;
	int r = pt_syscall(p, &ret, nr, a1, a2, a3, a4, a5, a6);

	cr_assert_eq(r, 0, "pt_syscall %ld: %s", nr, strerror(-r));
	return ret;
}

/* Does /proc/PID/maps have a mapping holding ADDR? */
static bool mapped_at(pid_t pid, uint64_t addr)
{
	char path[64], line[512];
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	/* In an area, not at its start: a new mapping may merge with its neighbour. */
	while (fgets(line, sizeof(line), f)) {
		char *end;
		uint64_t s = strtoull(line, &end, 16), e = strtoull(end + 1, NULL, 16);

		if (s <= addr && addr < e)
			found = true;
	}
	fclose(f);
	return found;
}

/* -- seize and detach -- */

Test(ptrace, seize_detach_sleeping_single_thread)
{
	struct tgt *t = start_target(0, false, "counter", "0", NULL);
	uint64_t v[MAX_THREADS + 1];
	char line[256];
	int n;

	hello(t, &n);
	counters(t, v);
	cr_assert_eq(v[0], 1);
	seize(&P, t->pid);
	cr_assert_eq(P.nr_threads, 1);
	cr_assert_eq(P.th[0].tid, t->pid);
	cr_assert(P.th[0].stopped);
	cr_assert_eq(P.pid, t->pid);
	cr_assert_geq(P.pidfd, 0);
	cr_assert_eq(thread_state(t->pid, t->pid), 't');
	cr_assert_eq(tracer_of(t->pid, t->pid), getpid());
	/* frozen: a command is not answered */
	send_cmd(t, "c\n");
	cr_assert_not(get_line(t, line, sizeof(line), 300), "answered while seized: %s", line);
	cr_assert_eq(pt_detach(&P), 0);
	cr_assert_null(P.th);
	cr_assert_eq(P.nr_threads, 0);
	cr_assert_eq(P.pidfd, -1);
	cr_assert_eq(pt_detach(&P), 0, "a second detach is a no-op");
	/* the pending command is answered, and the next one */
	need_line(t, line, sizeof(line));
	cr_assert_str_eq(line, "cnt 2");
	counters(t, v);
	cr_assert_eq(v[0], 3);
	cr_assert_eq(tracer_of(t->pid, t->pid), 0);
}

/* Seize the 8-thread counter target; all 9 threads stopped, their counters frozen. */
static void check_frozen(struct tgt *t, uint64_t cnt_addr, int nthr)
{
	uint64_t a[MAX_THREADS + 1], b[MAX_THREADS + 1];
	pid_t tids[MAX_THREADS + 8];
	int i, n;

	cr_assert_eq(P.nr_threads, nthr + 1);
	cr_assert_eq(P.th[0].tid, t->pid, "the leader runs the syscalls");
	n = list_tids(t->pid, tids, MAX_THREADS + 8);
	cr_assert_eq(n, nthr + 1);
	for (i = 0; i < n; i++) {
		cr_assert(seized(&P, tids[i]), "thread %d not seized", tids[i]);
		cr_assert_eq(thread_state(t->pid, tids[i]), 't', "thread %d not stopped", tids[i]);
	}
	for (i = 0; i < P.nr_threads; i++) {
		uint64_t sp = 0;

		cr_assert_eq(pt_thread_sp(&P, i, &sp), 0);
		cr_assert_neq(sp, 0);
	}
	cr_assert_eq(pt_thread_sp(&P, P.nr_threads, &b[0]), -EINVAL);
	cr_assert_eq(pt_read(&P, cnt_addr, a, (size_t)(nthr + 1) * 8), 0);
	msleep(50);
	cr_assert_eq(pt_read(&P, cnt_addr, b, (size_t)(nthr + 1) * 8), 0);
	cr_assert_arr_eq(a, b, (size_t)(nthr + 1) * 8, "a counter moved while seized");
}

static void seize_detach_threads(bool foreign)
{
	struct tgt *t = start_target(0, foreign, "counter", "8", NULL);
	uint64_t v[MAX_THREADS + 1], frozen[MAX_THREADS + 1];
	uint64_t addr;
	int nthr, round;

	addr = hello(t, &nthr);
	cr_assert_eq(nthr, 8);
	msleep(20);
	for (round = 0; round < 10; round++) {
		seize(&P, t->pid);
		check_frozen(t, addr, nthr);
		cr_assert_eq(pt_read(&P, addr, frozen, 9 * 8), 0);
		cr_assert_eq(pt_detach(&P), 0);
		all_run_on(t, frozen, nthr);
	}
	counters(t, v);
	all_run_on(t, v, nthr);
}

Test(ptrace, seize_detach_eight_threads)
{
	seize_detach_threads(false);
}

Test(ptrace, seize_detach_eight_threads_not_our_child)
{
	seize_detach_threads(true);
}

Test(ptrace, seize_catches_threads_created_meanwhile)
{
	struct tgt *t = start_target(0, false, "spawn", "4", NULL);
	uint64_t v[MAX_THREADS + 1];
	pid_t tids[256];
	int nthr, round, i, n, most = 0;

	hello(t, &nthr);
	msleep(20);
	for (round = 0; round < 30; round++) {
		seize(&P, t->pid);
		cr_assert_geq(P.nr_threads, 5);
		if (P.nr_threads > most)
			most = P.nr_threads;
		/* nothing runs: every live thread is ours and stopped */
		n = list_tids(t->pid, tids, 256);
		for (i = 0; i < n; i++) {
			char c = thread_state(t->pid, tids[i]);

			if (c == 0 || c == 'Z' || c == 'X')
				continue;
			cr_assert(seized(&P, tids[i]), "round %d: thread %d (%c) escaped", round,
				  tids[i], c);
			cr_assert_eq(c, 't', "round %d: thread %d is %c", round, tids[i], c);
		}
		cr_assert_eq(pt_detach(&P), 0);
	}
	cr_log_info("spawn target: up to %d threads seized at once", most);
	counters(t, v);
	all_run_on(t, v, nthr);
}

Test(ptrace, stopped_target_stays_stopped)
{
	struct tgt *t = start_target(0, false, "counter", "2", NULL);
	uint64_t v[MAX_THREADS + 1];
	long end = now_ms() + GUARD_MS;
	int n;

	hello(t, &n);
	kill(t->pid, SIGSTOP);
	while (thread_state(t->pid, t->pid) != 'T')
		cr_assert_lt(now_ms(), end);
	seize(&P, t->pid);
	cr_assert_eq(inject(&P, SYS_getpid, 0, 0, 0, 0, 0, 0), t->pid);
	cr_assert_eq(pt_detach(&P), 0);
	msleep(100);
	cr_assert_eq(thread_state(t->pid, t->pid), 'T', "SIGSTOPped target runs after detach");
	kill(t->pid, SIGCONT);
	cr_assert_eq(counters(t, v), 3);
}

/* -- running syscalls -- */

Test(ptrace, inject_getpid_and_gettid)
{
	struct tgt *t = start_target(0, true, "counter", "3", NULL);
	uint64_t v[MAX_THREADS + 1];
	struct timespec a, b;
	sigset_t before, after;
	int n, i;

	hello(t, &n);
	seize(&P, t->pid);
	cr_assert_eq(inject(&P, SYS_getpid, 0, 0, 0, 0, 0, 0), t->pid);
	cr_assert_eq(inject(&P, SYS_gettid, 0, 0, 0, 0, 0, 0), P.th[0].tid);
	cr_assert_neq(P.syscall_ip, 0);
	cr_assert_eq(inject(&P, SYS_close, 12345, 0, 0, 0, 0, 0), -EBADF, "errors come back as -errno");
	sigemptyset(&before);
	sigemptyset(&after);
	sigprocmask(SIG_SETMASK, NULL, &before);
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (i = 0; i < 1000; i++)
		cr_assert_eq(inject(&P, SYS_getpid, 0, 0, 0, 0, 0, 0), t->pid);
	clock_gettime(CLOCK_MONOTONIC, &b);
	sigprocmask(SIG_SETMASK, NULL, &after);
	for (i = 1; i < 65; i++)
		cr_assert_eq(sigismember(&before, i), sigismember(&after, i),
			     "signal %d: our signal mask was not put back", i);
	cr_log_info("injected syscall: %.1f us each",
		    ((b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / 1000 / 1e3);
	cr_assert_eq(pt_detach(&P), 0);
	cr_assert_eq(counters(t, v), 4);
}

/* Each thread runs the syscall asked of it, and goes back to exactly the registers it had. */
Test(ptrace, inject_in_every_thread)
{
	struct tgt *t = start_target(0, true, "counter", "3", NULL);
	uint64_t v[MAX_THREADS + 1];
	long ret = 0;
	int n;

	hello(t, &n);
	seize(&P, t->pid);
	cr_assert_eq(P.nr_threads, 4);
	for (int i = 0; i < P.nr_threads; i++) {
		struct user_regs_struct a, b;

		cr_assert_eq(ptrace(PTRACE_GETREGS, P.th[i].tid, NULL, &a), 0);
		cr_assert_eq(pt_syscall_in(&P, i, &ret, SYS_gettid, 0, 0, 0, 0, 0, 0), 0);
		cr_assert_eq(ret, P.th[i].tid, "thread %d: gettid ran in %ld", i, ret);
		cr_assert_eq(ptrace(PTRACE_GETREGS, P.th[i].tid, NULL, &b), 0);
		cr_assert_arr_eq(&a, &b, sizeof(a), "thread %d: registers not put back", i);
	}
	cr_assert_eq(pt_syscall_in(&P, P.nr_threads, &ret, SYS_gettid, 0, 0, 0, 0, 0, 0), -EINVAL);
	cr_assert_eq(pt_syscall_in(&P, -1, &ret, SYS_gettid, 0, 0, 0, 0, 0, 0), -EINVAL);
	cr_assert_eq(pt_detach(&P), 0);
	counters(t, v);
	all_run_on(t, v, n);
}

/*
 * A thread the target clones while held with PTRACE_O_TRACECLONE is adopted
 * stopped at birth: its ip right after the syscall instruction, no
 * instruction of its own run, and syscalls can be run in it.
 */
Test(ptrace, adopt_a_cloned_thread_before_it_runs)
{
	struct tgt *t = start_target(0, false, "counter", "1", NULL);
	struct {
		uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
	} ca = { .flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD };
	struct user_regs_struct u;
	long scratch, tid, ret = 0;
	int n, i;

	hello(t, &n);
	seize(&P, t->pid);
	cr_assert_eq(ptrace(PTRACE_SETOPTIONS, P.th[0].tid, NULL,
			    (void *)(long)(PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE)), 0);
	scratch = inject(&P, SYS_mmap, 0, 4096, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_gt(scratch, 0);
	cr_assert_eq(pt_write(&P, (uint64_t)scratch, &ca, sizeof(ca)), 0);
	tid = inject(&P, SYS_clone3, scratch, sizeof(ca), 0, 0, 0, 0);
	cr_assert_gt(tid, 0, "clone3: %s", strerror((int)-tid));
	i = pt_adopt(&P, (pid_t)tid);
	cr_assert_eq(i, P.nr_threads - 1, "pt_adopt: %s", strerror(-i));
	cr_assert_eq(P.th[i].tid, tid);
	msleep(50);
	cr_assert_eq(thread_state(t->pid, (pid_t)tid), 't');
	cr_assert_eq(ptrace(PTRACE_GETREGS, (pid_t)tid, NULL, &u), 0);
	cr_assert_eq(u.rip, P.syscall_ip + 2, "it ran: ip %llx", u.rip);
	cr_assert_eq(u.rax, 0, "not the child's return of clone3");
	cr_assert_eq(pt_syscall_in(&P, i, &ret, SYS_gettid, 0, 0, 0, 0, 0, 0), 0);
	cr_assert_eq(ret, tid);
	cr_assert_eq(pt_adopt(&P, t->pid + 100000), -ESRCH, "a stranger cannot be adopted");
	cr_assert_eq(P.nr_threads, 3, "nothing of it kept");
	/* Let go, it would run on the clone's registers: end the target instead. */
	kill(t->pid, SIGKILL);
	pt_detach(&P);
}

static void expect_mem(struct tgt *t, uint64_t addr, const uint8_t *want, size_t len)
{
	char line[LINE_MAX_], hex[3];
	size_t i;

	send_cmd(t, "r %" PRIx64 " %zu\n", addr, len);
	need_line(t, line, sizeof(line));
	cr_assert(!strncmp(line, "mem ", 4), "%s", line);
	cr_assert_eq(strlen(line + 4), 2 * len);
	for (i = 0; i < len; i++) {
		snprintf(hex, sizeof(hex), "%02x", want[i]);
		cr_assert(!strncmp(line + 4 + 2 * i, hex, 2), "byte %zu differs", i);
	}
}

Test(ptrace, inject_mmap_write_read_munmap)
{
	struct tgt *t = start_target(0, false, "counter", "2", NULL);
	uint8_t pat[4096], back[4096], two[8192] = { 0 };
	uint64_t addr, hole;
	size_t i;
	int n;

	hello(t, &n);
	for (i = 0; i < sizeof(pat); i++)
		pat[i] = (uint8_t)(i * 7 + 3);
	seize(&P, t->pid);
	addr = (uint64_t)inject(&P, SYS_mmap, 0, 4096, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_lt(addr, (uint64_t)-4096, "mmap failed: %ld", -(long)addr);
	cr_assert_eq(addr % 4096, 0);
	cr_assert(mapped_at(t->pid, addr), "%" PRIx64 " not in maps", addr);
	cr_assert_eq(pt_write(&P, addr, pat, sizeof(pat)), 0);
	cr_assert_eq(pt_read(&P, addr, back, sizeof(back)), 0);
	cr_assert_arr_eq(pat, back, sizeof(pat));
	/* a transfer that runs into an unmapped page fails as a whole */
	hole = (uint64_t)inject(&P, SYS_mmap, 0, 8192, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_lt(hole, (uint64_t)-4096);
	cr_assert_eq(inject(&P, SYS_munmap, (long)hole + 4096, 4096, 0, 0, 0, 0), 0);
	cr_assert_eq(pt_read(&P, hole, two, sizeof(two)), -EFAULT, "read past the mapping");
	cr_assert_eq(pt_write(&P, hole, two, sizeof(two)), -EFAULT, "write past the mapping");
	cr_assert_eq(pt_read(&P, hole, two, 4096), 0);
	cr_assert_eq(pt_detach(&P), 0);
	/* the target itself sees the bytes */
	expect_mem(t, addr, pat, sizeof(pat));
	seize(&P, t->pid);
	cr_assert_eq(inject(&P, SYS_munmap, (long)addr, 4096, 0, 0, 0, 0), 0);
	cr_assert_not(mapped_at(t->pid, addr));
	cr_assert_eq(pt_read(&P, addr, back, 16), -EFAULT);
	cr_assert_eq(pt_detach(&P), 0);
	cr_assert_eq(counters(t, (uint64_t[MAX_THREADS + 1]){ 0 }), 3);
}

Test(ptrace, large_transfer)
{
	struct tgt *t = start_target(0, false, "counter", "0", NULL);
	const size_t len = 8u << 20;
	uint64_t *a = malloc(len), *b = malloc(len), addr;
	size_t i;
	int n;

	hello(t, &n);
	cr_assert(a && b);
	for (i = 0; i < len / 8; i++)
		a[i] = i * 0x9e3779b97f4a7c15ull;
	seize(&P, t->pid);
	addr = (uint64_t)inject(&P, SYS_mmap, 0, (long)len, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_lt(addr, (uint64_t)-4096);
	cr_assert_eq(pt_write(&P, addr, a, len), 0);
	cr_assert_eq(pt_read(&P, addr, b, len), 0);
	cr_assert_arr_eq(a, b, len);
	cr_assert_eq(pt_detach(&P), 0);
	expect_mem(t, addr + len - 4096, (uint8_t *)a + len - 4096, 4096);
	free(a);
	free(b);
}

/* -- a target blocked in a syscall -- */

struct blocked {
	char kind[16];
	char ms[8];
	long nr;		/* the syscall it blocks in */
	long restart;		/* the rax we expect to see at the stop */
	char wake;		/* 'x': write x to fd 5, 'w': command w, 'u': SIGUSR1, 0: time */
	char want[64];		/* the report that must follow */
	/*
	 * nanosleep: it sleeps MS; the whole call takes at least that, and it
	 * ends less than MS after the detach. A restart from scratch sleeps MS
	 * again from the detach; no slow machine makes that shorter.
	 */
	bool slept;
	long hold_ms;		/* detach this long after it was seen asleep */
};

static struct blocked blocked_cases[] = {
	{ "read", "0", SYS_read, -ARCH_ERESTARTSYS, 'x', "read ret 1 errno 0 data x", false, 0 },
	{ "poll", "20000", SYS_poll, -ARCH_ERESTART_RESTARTBLOCK, 'x',
	  "poll ret 1 errno 0 revents 1", false, 0 },
	/*
	 * Detached 1.4 s into its 2 s: it ends about 0.6 s after the detach; a
	 * restart with the whole 2 s again would end 2 s after it.
	 */
	{ "nanosleep", "2000", SYS_nanosleep, -ARCH_ERESTART_RESTARTBLOCK, 0,
	  "sleep ret 0 errno 0", true, 1400 },
	{ "futex", "0", SYS_futex, -ARCH_ERESTARTSYS, 'w', "futex ret 0 errno 0 word 1", false, 0 },
	{ "futex_timeout", "60000", SYS_futex, -ARCH_ERESTART_RESTARTBLOCK, 'w',
	  "futex ret 0 errno 0 word 1", false, 0 },
	{ "cond", "0", SYS_futex, -ARCH_ERESTARTSYS, 'w', "cond ret 0 flag 1", false, 0 },
	{ "pause", "0", SYS_pause, -ARCH_ERESTARTNOHAND, 'u', "pause ret -1 errno 4 handled 1",
	  false, 0 },
	{ "sigsuspend", "0", SYS_rt_sigsuspend, -ARCH_ERESTARTNOHAND, 'u',
	  "sigsuspend ret -1 errno 4 handled 1 usr1blocked 1", false, 0 },
};

ParameterizedTestParameters(ptrace, blocked_syscall_completes)
{
	return cr_make_param_array(struct blocked, blocked_cases,
				   sizeof(blocked_cases) / sizeof(blocked_cases[0]));
}

/*
 * Start "block KIND" and wait until it sleeps in its syscall; returns when
 * it was seen asleep there, a time after the call began.
 */
static long start_blocked(struct blocked *b, struct tgt **tp, bool foreign)
{
	struct tgt *t = start_target(0, foreign, "block", b->kind, b->ms, NULL);
	char line[256];

	need_line(t, line, sizeof(line));
	cr_assert(!strncmp(line, "ready", 5), "%s", line);
	wait_in_syscall(t->pid, t->pid, b->nr);
	*tp = t;
	return now_ms();
}

/* Wake the blocked call the way B says and check its report; T_DETACH: when it was let go. */
static void finish_blocked(struct blocked *b, struct tgt *t, long t_detach)
{
	char line[256];
	long ns;

	/* still blocked: the restart happened, no early return */
	if (b->wake)
		cr_assert_not(get_line(t, line, sizeof(line), 200),
			      "%s returned before it was woken: %s", b->kind, line);
	if (b->wake == 'x')
		cr_assert_eq(write(t->data, "x", 1), 1);
	else if (b->wake == 'w')
		send_cmd(t, "w\n");
	else if (b->wake == 'u')
		kill(t->pid, SIGUSR1);
	need_line(t, line, sizeof(line));
	if (b->wake == 'u') {
		/* the handler reports first */
		cr_assert(!strncmp(line, "sig 10 ", 7), "%s", line);
		need_line(t, line, sizeof(line));
	}
	cr_assert(!strncmp(line, b->want, strlen(b->want)), "%s: got '%s', want '%s'", b->kind,
		  line, b->want);
	if (b->slept) {
		char *s = strstr(line, " ns ");
		long sleep_ms = atol(b->ms), after = now_ms() - t_detach;

		cr_assert_not_null(s);
		ns = strtol(s + 4, NULL, 10);
		cr_assert_geq(ns / 1000000, sleep_ms, "%s cut short: %ld ms", b->kind, ns / 1000000);
		/* Read after it ended; a restart from scratch ends sleep_ms after the detach at least. */
		cr_assert_lt(after, sleep_ms,
			     "%s ended %ld ms after the detach (%ld ms in all): it slept its %ld ms again",
			     b->kind, after, ns / 1000000, sleep_ms);
		cr_log_info("%s: %ld ms in all, reported %ld ms after the detach", b->kind,
			    ns / 1000000, after);
	}
}

ParameterizedTest(struct blocked *b, ptrace, blocked_syscall_completes)
{
	struct user_regs_struct r0, r1, r2;
	struct arch_regs ar;
	struct tgt *t;
	long t_asleep = start_blocked(b, &t, false), t_detach;
	int i;

	cr_log_info("blocked in %s", b->kind);

	msleep(300);
	seize(&P, t->pid);
	cr_assert_eq(ptrace(PTRACE_GETREGS, t->pid, NULL, &r0), 0);
	cr_assert_eq((long)r0.orig_rax, b->nr, "%s: stopped in %lld", b->kind, r0.orig_rax);
	cr_assert_eq((long)r0.rax, b->restart, "%s: rax %lld at the stop", b->kind, r0.rax);
	ar.r = r0;
	cr_assert_eq(arch_restart_kind(&ar), b->restart == -ARCH_ERESTART_RESTARTBLOCK ?
		     ARCH_RESTART_BLOCK : ARCH_RESTART_SAME);
	for (i = 0; i < 100; i++) {
		long a;

		if (i % 10) {
			cr_assert_eq(inject(&P, SYS_getppid, 0, 0, 0, 0, 0, 0), getpid());
			continue;
		}
		a = inject(&P, SYS_mmap, 0, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		cr_assert_lt((uint64_t)a, (uint64_t)-4096);
		cr_assert_eq(inject(&P, SYS_munmap, a, 4096, 0, 0, 0, 0), 0);
	}
	cr_assert_eq(ptrace(PTRACE_GETREGS, t->pid, NULL, &r1), 0);
	cr_assert_arr_eq(&r0, &r1, sizeof(r0), "registers not put back");
	if (b->hold_ms && now_ms() - t_asleep < b->hold_ms)
		msleep(b->hold_ms - (now_ms() - t_asleep));
	t_detach = now_ms();
	cr_assert_eq(pt_detach(&P), 0);

	if (b->wake) {
		/*
		 * Seize again: it sits in the same syscall with the same
		 * registers, or in restart_syscall continuing it.
		 */
		long nr = b->restart == -ARCH_ERESTART_RESTARTBLOCK ? SYS_restart_syscall : b->nr;

		wait_in_syscall(t->pid, t->pid, nr);
		seize(&P, t->pid);
		cr_assert_eq(ptrace(PTRACE_GETREGS, t->pid, NULL, &r2), 0);
		cr_assert_eq(r2.rip, r0.rip);
		cr_assert_eq(r2.rsp, r0.rsp);
		cr_assert_eq((long)r2.orig_rax, nr);
		cr_assert_eq(r2.rax, r0.rax);
		cr_assert_eq(r2.rdi, r0.rdi);
		cr_assert_eq(r2.rsi, r0.rsi);
		cr_assert_eq(r2.rdx, r0.rdx);
		cr_assert_eq(pt_detach(&P), 0);
	}
	finish_blocked(b, t, t_detach);
}

/*
 * Held past its end, a 2 s sleep returns at the detach, not 2 s after it:
 * it is let go once its end has surely passed (2 s after it was seen
 * asleep, and a little more), and must end less than 2 s after the detach.
 */
Test(ptrace, nanosleep_held_past_its_end_returns_at_detach)
{
	struct blocked b = { "nanosleep", "2000", SYS_nanosleep, 0, 0, "sleep ret 0 errno 0",
			     true, 0 };
	struct tgt *t;
	long t_asleep = start_blocked(&b, &t, true), t_detach;

	seize(&P, t->pid);
	cr_assert_eq(inject(&P, SYS_getpid, 0, 0, 0, 0, 0, 0), t->pid);
	if (now_ms() - t_asleep < 2200)
		msleep(2200 - (now_ms() - t_asleep));
	t_detach = now_ms();
	cr_assert_eq(pt_detach(&P), 0);
	finish_blocked(&b, t, t_detach);
}

/* -- signals -- */

struct sigrep {
	int sig, code, pid, val;
};

/* Read the "sig" reports that arrive within MS of silence. */
static int sig_reports(struct tgt *t, struct sigrep *r, int max, int ms)
{
	char line[256];
	int n = 0;

	while (n < max && get_line(t, line, sizeof(line), ms)) {
		cr_assert_eq(sscanf(line, "sig %d code %d pid %d val %d", &r[n].sig, &r[n].code,
				    &r[n].pid, &r[n].val), 4, "%s", line);
		n++;
	}
	return n;
}

/*
 * Read the "sig" reports of the signals T handles on its way back from a
 * detach. Signals pending when it resumes are all delivered (their handlers
 * write the reports) before it reads its next command, so ask for the
 * counters and read up to their answer: no fixed wait that a loaded machine
 * can outlast, and a second delivery of the same signal is caught as well.
 */
static int sig_reports_after_detach(struct tgt *t, struct sigrep *r, int max)
{
	char line[LINE_MAX_], threads[1024];
	long end = now_ms() + 30000;
	int n = 0;

	send_cmd(t, "c\n");
	for (;;) {
		long left = end - now_ms();

		cr_assert(left > 0 && get_line(t, line, sizeof(line), (int)left),
			  "no answer from target %d after %d reports (got '%s'); threads %s",
			  t->pid, n, line, describe(t->pid, threads, sizeof(threads)));
		if (!strncmp(line, "cnt ", 4))
			return n;
		cr_assert_lt(n, max, "more than %d reports: %s", max, line);
		cr_assert_eq(sscanf(line, "sig %d code %d pid %d val %d", &r[n].sig, &r[n].code,
				    &r[n].pid, &r[n].val), 4, "%s", line);
		n++;
	}
}

static void signal_once(bool inject_meanwhile, bool foreign)
{
	struct tgt *t = start_target(0, foreign, "signal", NULL);
	struct sigrep r[8];
	char line[256];
	int n, i;

	need_line(t, line, sizeof(line));
	seize(&P, t->pid);
	cr_assert_eq(kill(t->pid, SIGUSR1), 0);
	msleep(20);
	cr_assert(sig_pending(t->pid, t->pid, SIGUSR1));
	for (i = 0; inject_meanwhile && i < 20; i++)
		cr_assert_eq(inject(&P, SYS_getpid, 0, 0, 0, 0, 0, 0), t->pid);
	/* injecting, the thread dequeued it: it is held by us now, pending no more */
	cr_assert_eq(sig_pending(t->pid, t->pid, SIGUSR1), !inject_meanwhile);
	cr_assert_eq(sig_reports(t, r, 8, 100), 0, "delivered while seized");
	cr_assert_eq(pt_detach(&P), 0);
	n = sig_reports_after_detach(t, r, 8);
	cr_assert_eq(n, 1, "SIGUSR1 delivered %d times", n);
	cr_assert_eq(r[0].sig, SIGUSR1);
	cr_assert_eq(r[0].code, SI_USER, "siginfo not kept: code %d", r[0].code);
	cr_assert_eq(r[0].pid, getpid(), "siginfo not kept: pid %d", r[0].pid);
	cr_assert_eq(counters(t, (uint64_t[MAX_THREADS + 1]){ 0 }), 1);
}

Test(ptrace, signal_while_seized_delivered_once)
{
	signal_once(false, false);
}

Test(ptrace, signal_while_injecting_delivered_once)
{
	signal_once(true, false);
}

Test(ptrace, signal_while_injecting_delivered_once_not_our_child)
{
	signal_once(true, true);
}

Test(ptrace, several_signals_while_injecting_keep_their_siginfo)
{
	struct tgt *t = start_target(0, false, "signal", NULL);
	union sigval v1 = { .sival_int = 111 }, v2 = { .sival_int = 222 };
	int n, usr1 = 0, usr2 = 0, rt = 0, i;
	struct sigrep r[8];
	char line[256];

	need_line(t, line, sizeof(line));
	seize(&P, t->pid);
	kill(t->pid, SIGUSR1);
	cr_assert_eq(sigqueue(t->pid, SIGRTMIN, v1), 0);
	inject(&P, SYS_getpid, 0, 0, 0, 0, 0, 0);
	cr_assert_eq(sigqueue(t->pid, SIGRTMIN, v2), 0);
	syscall(SYS_tgkill, t->pid, t->pid, SIGUSR2);
	for (i = 0; i < 5; i++)
		inject(&P, SYS_getpid, 0, 0, 0, 0, 0, 0);
	cr_assert_eq(pt_detach(&P), 0);
	n = sig_reports_after_detach(t, r, 8);
	cr_assert_eq(n, 4, "%d deliveries, want 4", n);
	for (i = 0; i < n; i++) {
		cr_assert_eq(r[i].pid, getpid(), "signal %d: sender %d", r[i].sig, r[i].pid);
		if (r[i].sig == SIGUSR1) {
			usr1++;
			cr_assert_eq(r[i].code, SI_USER);
		} else if (r[i].sig == SIGUSR2) {
			usr2++;
			cr_assert_eq(r[i].code, SI_TKILL);
		} else {
			cr_assert_eq(r[i].sig, SIGRTMIN);
			cr_assert_eq(r[i].code, SI_QUEUE);
			cr_assert_eq(r[i].val, rt++ ? 222 : 111, "real-time signals out of order");
		}
	}
	cr_assert_eq(usr1, 1);
	cr_assert_eq(usr2, 1);
	cr_assert_eq(rt, 2);
}

/* Wait until the state of PID is (or is not, NOT) C. */
static void wait_state(pid_t pid, char c, bool not)
{
	long end = now_ms() + GUARD_MS;

	while ((thread_state(pid, pid) == c) == not)
		cr_assert_lt(now_ms(), end, "pid %d state %c", pid, thread_state(pid, pid));
}

Test(ptrace, sigstop_while_injecting_stops_after_detach)
{
	struct tgt *t = start_target(0, false, "counter", "2", NULL);
	uint64_t v[MAX_THREADS + 1];
	int n;

	hello(t, &n);
	seize(&P, t->pid);
	kill(t->pid, SIGSTOP);
	inject(&P, SYS_getpid, 0, 0, 0, 0, 0, 0);
	cr_assert_not(sig_pending(t->pid, t->pid, SIGSTOP), "SIGSTOP was not dequeued");
	cr_assert_eq(pt_detach(&P), 0);
	wait_state(t->pid, 'T', false);
	msleep(50);
	cr_assert_eq(thread_state(t->pid, t->pid), 'T');
	kill(t->pid, SIGCONT);
	cr_assert_eq(counters(t, v), 3);
}

Test(ptrace, sigstop_then_sigcont_while_injecting_keeps_running)
{
	struct tgt *t = start_target(0, false, "counter", "2", NULL);
	uint64_t v[MAX_THREADS + 1];
	int n;

	hello(t, &n);
	seize(&P, t->pid);
	kill(t->pid, SIGSTOP);
	inject(&P, SYS_getpid, 0, 0, 0, 0, 0, 0);
	kill(t->pid, SIGCONT);
	inject(&P, SYS_getpid, 0, 0, 0, 0, 0, 0);
	cr_assert_eq(pt_detach(&P), 0);
	msleep(100);
	cr_assert_neq(thread_state(t->pid, t->pid), 'T', "stopped by a SIGSTOP cancelled by SIGCONT");
	cr_assert_eq(counters(t, v), 3);
}

struct storm {
	pid_t pid;
	_Atomic int stop;
	long sent;
};

/* Queue SIGRTMIN to the target without pause until told to stop. */
static void *storm_send(void *arg)
{
	struct storm *s = arg;
	union sigval v = { .sival_int = 0 };
	struct timespec pace = { 0, 50000 };

	while (!s->stop) {
		if (sigqueue(s->pid, SIGRTMIN, v) == 0)
			s->sent++;
		if (s->sent % 16 == 0)
			nanosleep(&pace, NULL);	/* still far faster than we stop and go */
	}
	return NULL;
}

/* Real-time signals queue, so every one sent must be delivered exactly once. */
Test(ptrace, signal_storm_while_seizing_and_injecting_loses_none)
{
	struct tgt *t = start_target(0, false, "sigcount", "4", NULL);
	struct storm s = { 0 };
	char line[128];
	long handled = -1, end;
	pthread_t th;
	int n, round, i, refused = 0;

	hello(t, &n);
	s.pid = t->pid;
	cr_assert_eq(pthread_create(&th, NULL, storm_send, &s), 0);
	for (round = 0; round < 40; round++) {
		seize(&P, t->pid);
		for (i = 0; i < 5; i++) {
			long ret = 0;
			int r = pt_syscall(&P, &ret, SYS_getpid, 0, 0, 0, 0, 0, 0);

			/* a flood may outrun us: then the syscall is refused, not half-run */
			cr_assert(r == 0 || r == -EAGAIN, "pt_syscall: %s", strerror(-r));
			if (r == 0)
				cr_assert_eq(ret, t->pid);
			else
				refused++;
		}
		cr_assert_eq(pt_detach(&P), 0);
		msleep(2);
	}
	s.stop = 1;
	pthread_join(th, NULL);
	cr_assert_gt(s.sent, 100);
	for (end = now_ms() + GUARD_MS; handled != s.sent && now_ms() < end; msleep(10)) {
		send_cmd(t, "h\n");
		need_line(t, line, sizeof(line));
		cr_assert_eq(sscanf(line, "handled %ld", &handled), 1, "%s", line);
	}
	cr_log_info("signal storm: %ld sent, %ld delivered, %d syscalls refused", s.sent, handled,
		    refused);
	cr_assert_eq(handled, s.sent, "%ld signals sent, %ld delivered", s.sent, handled);
	msleep(100);
	send_cmd(t, "h\n");
	need_line(t, line, sizeof(line));
	cr_assert_eq(sscanf(line, "handled %ld", &handled), 1);
	cr_assert_eq(handled, s.sent, "late extra deliveries");
}

/* -- the target dies -- */

/*
 * Run CALL, on a tracee that was killed, and check it did not wait out the
 * engine's stop wait, PT_STOP_WAIT_MS: noticing the death, it returns well
 * before (the exit it may wait for is reported within the engine's exit
 * wait, PT_EXIT_WAIT_MS, else the call fails with ETIMEDOUT), so only a
 * wait for a stop that cannot come reaches the bound, however slow the
 * machine. Each call is bounded alone,
 * so that the delays of a loaded machine do not add up.
 */
#define PROMPT(call)								\
	({									\
		long t_ = now_ms();						\
		long r_ = (long)(call);						\
		long dt_ = now_ms() - t_;					\
										\
		cr_assert_lt(dt_, PT_STOP_WAIT_MS,				\
			     "%s took %ld ms: it waited for a stop", #call, dt_);	\
		r_;								\
	})

static void killed_while_seized(bool foreign, const char *nthr, bool injected)
{
	struct tgt *t = start_target(0, foreign, "counter", nthr, NULL);
	uint8_t buf[8];
	long ret;
	int n;

	hello(t, &n);
	seize(&P, t->pid);
	if (injected)
		cr_assert_eq(inject(&P, SYS_getpid, 0, 0, 0, 0, 0, 0), t->pid);
	kill(t->pid, SIGKILL);
	cr_assert_eq(PROMPT(pt_syscall(&P, &ret, SYS_getpid, 0, 0, 0, 0, 0, 0)), -ESRCH);
	cr_assert(P.gone);
	cr_assert_eq(PROMPT(pt_syscall(&P, &ret, SYS_getpid, 0, 0, 0, 0, 0, 0)), -ESRCH);
	cr_assert_eq(PROMPT(pt_read(&P, P.syscall_ip ? P.syscall_ip : 0x400000, buf,
				    sizeof(buf))), -ESRCH);
	cr_assert_eq(PROMPT(pt_write(&P, 0x400000, buf, sizeof(buf))), -ESRCH);
	cr_assert_eq(PROMPT(pt_getfd(&P, 0)), -ESRCH);
	cr_assert_eq(PROMPT(pt_detach(&P)), -ESRCH);
	cr_assert_null(P.th);
	if (foreign) {
		int status;

		/* the real parent still gets its child's exit */
		cr_assert_eq(waitpid(t->mid, &status, 0), t->mid);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGKILL);
		t->mid = 0;
	}
	t->pid = 0;
}

Test(ptrace, killed_while_seized_single)
{
	killed_while_seized(false, "0", false);
}

Test(ptrace, killed_while_seized_eight_threads)
{
	killed_while_seized(false, "8", true);
}

Test(ptrace, killed_while_seized_eight_threads_not_our_child)
{
	killed_while_seized(true, "8", true);
}

/* -- descriptors -- */

Test(ptrace, getfd_takes_the_targets_file)
{
	struct tgt *t;
	struct stat a, b;
	char path[128], line[64];
	int fd;

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/uffd-ptrace-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
	snprintf(path, sizeof(path), "%s/file", tmpdir);
	t = start_target(0, false, "file", path, "7", NULL);
	need_line(t, line, sizeof(line));
	seize(&P, t->pid);
	fd = pt_getfd(&P, 7);
	cr_assert_geq(fd, 0, "pt_getfd: %s", strerror(-fd));
	cr_assert_eq(fstat(fd, &a), 0);
	cr_assert_eq(stat(path, &b), 0);
	cr_assert_eq(a.st_dev, b.st_dev);
	cr_assert_eq(a.st_ino, b.st_ino);
	cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	cr_assert_eq(pt_getfd(&P, 99), -EBADF);
	cr_assert_eq(pt_detach(&P), 0);
	cr_assert_eq(pt_getfd(&P, 7), -EBADF, "after detach");
	close(fd);
}

/* -- refusals -- */

Test(ptrace, seize_refuses_no_such_process)
{
	pid_t pid = fork();
	char want[64];

	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(0);
	cr_assert_eq(waitpid(pid, NULL, 0), pid);
	cr_assert_eq(pt_seize(&P, pid, why, sizeof(why)), -ESRCH);
	snprintf(want, sizeof(want), "pid %d: no such process", pid);
	cr_assert_str_eq(why, want);
	cr_assert_null(P.th);
	cr_assert_eq(P.pidfd, -1);
	cr_assert_eq(pt_seize(&P, 0, why, sizeof(why)), -EINVAL);
	cr_assert_eq(pt_seize(&P, -5, why, sizeof(why)), -EINVAL);
	cr_assert_eq(pt_seize(&P, getpid(), why, sizeof(why)), -EPERM);
	cr_assert(strstr(why, "this process"), "%s", why);
}

Test(ptrace, seize_refuses_a_zombie)
{
	pid_t pid = fork();
	long end = now_ms() + GUARD_MS;
	char want[64];

	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(0);
	while (thread_state(pid, pid) != 'Z')
		cr_assert_lt(now_ms(), end);
	cr_assert_eq(pt_seize(&P, pid, why, sizeof(why)), -ESRCH);
	snprintf(want, sizeof(want), "pid %d is a zombie", pid);
	cr_assert(!strncmp(why, want, strlen(want)), "%s", why);
	cr_assert_eq(waitpid(pid, NULL, 0), pid, "the zombie is still there for its parent");
}

Test(ptrace, seize_refuses_a_thread_id)
{
	struct tgt *t = start_target(0, false, "counter", "2", NULL);
	pid_t tids[8];
	int n, i;

	hello(t, &n);
	n = list_tids(t->pid, tids, 8);
	for (i = 0; i < n && tids[i] == t->pid; i++)
		;
	cr_assert_lt(i, n);
	cr_assert_eq(pt_seize(&P, tids[i], why, sizeof(why)), -EINVAL);
	cr_assert(strstr(why, "is a thread of process"), "%s", why);
}

/* Fork a tracer that PTRACE_SEIZEs thread TID of PID (without stopping it) and waits. */
static pid_t other_tracer(pid_t tid)
{
	int pp[2];
	char c;
	pid_t pid;

	cr_assert_eq(pipe(pp), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		c = ptrace(PTRACE_SEIZE, tid, NULL, NULL) == 0 ? 'k' : 'e';
		if (write(pp[1], &c, 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	cr_assert_eq(read(pp[0], &c, 1), 1);
	cr_assert_eq(c, 'k');
	close(pp[0]);
	close(pp[1]);
	return pid;
}

Test(ptrace, seize_refuses_a_traced_process)
{
	struct tgt *t = start_target(0, false, "counter", "2", NULL);
	uint64_t v[MAX_THREADS + 1];
	char want[96];
	int n;

	hello(t, &n);
	helper_pid = other_tracer(t->pid);
	cr_assert_eq(pt_seize(&P, t->pid, why, sizeof(why)), -EPERM);
	snprintf(want, sizeof(want), "pid %d is already traced by pid %d", t->pid, helper_pid);
	cr_assert(!strncmp(why, want, strlen(want)), "%s", why);
	cr_assert_null(P.th);
	cr_assert_eq(counters(t, v), 3);
}

Test(ptrace, failed_seize_lets_go_of_the_threads_it_had)
{
	struct tgt *t = start_target(0, false, "counter", "8", NULL);
	uint64_t v[MAX_THREADS + 1];
	pid_t tids[16], last = 0;
	int n, i;

	hello(t, &n);
	n = list_tids(t->pid, tids, 16);
	for (i = 0; i < n; i++)
		if (tids[i] > last)
			last = tids[i];
	/* another tracer holds the last thread: ours fails after seizing the others */
	helper_pid = other_tracer(last);
	cr_assert_eq(pt_seize(&P, t->pid, why, sizeof(why)), -EPERM);
	cr_assert(strstr(why, "already traced by pid"), "%s", why);
	cr_assert_null(P.th);
	for (i = 0; i < n; i++) {
		if (tids[i] == last)
			continue;
		cr_assert_eq(tracer_of(t->pid, tids[i]), 0, "thread %d still traced", tids[i]);
		cr_assert_neq(thread_state(t->pid, tids[i]), 't', "thread %d still stopped",
			      tids[i]);
	}
	counters(t, v);
	all_run_on(t, v, 8);
}

Test(ptrace, seize_twice_refused_first_still_works)
{
	struct tgt *t = start_target(0, false, "counter", "1", NULL);
	int n;

	hello(t, &n);
	seize(&P, t->pid);
	cr_assert_eq(pt_seize(&P2, t->pid, why, sizeof(why)), -EPERM);
	cr_assert(strstr(why, "already traced by this process"), "%s", why);
	cr_assert_eq(inject(&P, SYS_getpid, 0, 0, 0, 0, 0, 0), t->pid);
	cr_assert_eq(pt_detach(&P), 0);
	cr_assert_eq(counters(t, (uint64_t[MAX_THREADS + 1]){ 0 }), 2);
}

/* -- the tool dies -- */

/*
 * A stand-in tool that seizes PID, injects syscalls and exits without
 * detaching, as if killed between two syscalls: the kernel lets the target go.
 */
static void tool_dies(pid_t pid)
{
	int status;

	helper_pid = fork();
	cr_assert_geq(helper_pid, 0);
	if (helper_pid == 0) {
		struct pt p;
		long ret;
		int i;

		if (pt_seize(&p, pid, NULL, 0))
			_exit(1);
		for (i = 0; i < 20; i++)
			if (pt_syscall(&p, &ret, SYS_getpid, 0, 0, 0, 0, 0, 0) || ret != pid)
				_exit(2);
		_exit(0);
	}
	cr_assert_eq(waitpid(helper_pid, &status, 0), helper_pid);
	helper_pid = 0;
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "tool status %x", status);
}

Test(ptrace, target_survives_the_tool_dying)
{
	struct tgt *t = start_target(0, false, "counter", "4", NULL);
	uint64_t v[MAX_THREADS + 1];
	int n;

	hello(t, &n);
	tool_dies(t->pid);
	counters(t, v);
	all_run_on(t, v, 4);
	cr_assert_eq(tracer_of(t->pid, t->pid), 0);
}

Test(ptrace, blocked_read_survives_the_tool_dying)
{
	struct blocked b = { "read", "0", SYS_read, 0, 'x', "read ret 1 errno 0 data x", false, 0 };
	struct tgt *t;

	start_blocked(&b, &t, false);
	tool_dies(t->pid);
	finish_blocked(&b, t, 0);
}

/* -- the arch layer alone -- */

Test(ptrace, restart_kind_table)
{
	static const struct {
		long orig, ax;
		enum arch_restart want;
	} tab[] = {
		{ -1, -ARCH_ERESTARTSYS, ARCH_RESTART_NONE },
		{ 0, -ARCH_ERESTARTSYS, ARCH_RESTART_SAME },
		{ 0, -ARCH_ERESTARTNOINTR, ARCH_RESTART_SAME },
		{ 34, -ARCH_ERESTARTNOHAND, ARCH_RESTART_SAME },
		{ 35, -ARCH_ERESTART_RESTARTBLOCK, ARCH_RESTART_BLOCK },
		{ 0, -EINTR, ARCH_RESTART_NONE },
		{ 0, 5, ARCH_RESTART_NONE },
		{ 0, -515, ARCH_RESTART_NONE },	/* ENOIOCTLCMD: not a restart */
	};
	size_t i;

	for (i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		struct arch_regs r = { 0 };

		r.r.orig_rax = (unsigned long long)tab[i].orig;
		r.r.rax = (unsigned long long)tab[i].ax;
		cr_assert_eq(arch_restart_kind(&r), tab[i].want, "row %zu", i);
	}
}
