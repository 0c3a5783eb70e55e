/*
 * The ptrace engine: seize every thread of a process, run system calls in
 * its first thread without writing into its memory, and let it go as it was.
 *
 * Where a stopped thread is. Every stop we leave a thread in (the event-stop
 * of PTRACE_INTERRUPT, a group-stop, a signal-delivery-stop) happens inside
 * the kernel's get_signal(), on the thread's way back to user space and
 * BEFORE the syscall restart logic that follows it. A thread interrupted in
 * read() therefore sits there with orig_rax = 0 and rax = -ERESTARTSYS; the
 * kernel rewinds it (rip -= 2, rax = orig_rax) only when it resumes. So we do
 * not rewind anything ourselves: we put back exactly the registers we found,
 * from such a stop, and the kernel restarts the syscall the way it would have
 * without us -- or, when we hand it a signal at detach, turns it into EINTR
 * or a restart according to that signal's SA_RESTART. Rewinding by hand and
 * then letting the kernel run its logic would restart twice or not at all.
 *
 * Running a syscall (inject_once): set rip to a `syscall` instruction already
 * in the target (the vdso), the number and arguments, and orig_rax = -1 so
 * the restart logic ignores these registers; PTRACE_SYSCALL to the entry and
 * the exit stop; read rax; put the saved registers back; then PTRACE_INTERRUPT
 * + PTRACE_CONT: the thread leaves the syscall-exit-stop, goes into
 * get_signal() and takes the trap there before reaching user space. That
 * returns it to an event-stop in front of its restart logic, with no
 * single-step or syscall-trace flag left on it. PTRACE_SINGLESTEP would save
 * a round trip but forces a SIGTRAP, which resets a blocked or ignored
 * SIGTRAP to SIG_DFL in the target, and a tracer that dies leaves the step
 * flag set, so the target would die of the next trap.
 *
 * Signals. A signal the thread dequeues while we hold it stops it in a
 * signal-delivery-stop; we keep its siginfo (held) and resume with 0. At
 * detach every held signal is delivered with its own siginfo, through
 * PTRACE_SETSIGINFO in a signal-delivery-stop and the signal as the resume
 * argument (PTRACE_DETACH for the last one). A thread in an event-stop is
 * first brought into a signal-delivery-stop by a carrier signal we queue to
 * it ourselves and swallow.
 *
 * The tool dying. The target never gets PTRACE_O_EXITKILL: if we die, the
 * kernel detaches it (clearing our traps and the syscall-trace flag, and
 * waking it with TIF_SIGPENDING so that its restart logic still runs) and it
 * goes on as after pt_detach, except that signals we held are lost. That is
 * harmless except in one window per injected syscall, from the
 * PTRACE_SETREGS that installs the call to the one that puts the saved
 * registers back (two resumes, two waits and a GETREGS: tens of
 * microseconds). A SIGKILL of the tool inside it leaves the thread to run
 * our syscall and then go on at the vdso with foreign registers, which will
 * crash it. SIGINT, SIGTERM, SIGHUP and SIGQUIT are blocked in the calling
 * thread across the window, so a Ctrl-C takes effect only once the
 * registers are back; SIGKILL cannot be blocked, and a signal taken by
 * another thread of a multi-threaded tool is not covered.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "arch.h"
#include "log.h"
#include "ptrace.h"

#define PT_SEIZE_PASSES	2000	/* passes over /proc/PID/task before we trust the last */
#define PT_STOP_WAIT_MS		3000	/* a thread not stopped by then sleeps uninterruptibly */
#define PT_EXIT_WAIT_MS		2000	/* for a killed thread to report its exit */
#define PT_SPIN_NS		200000	/* poll without sleeping this long for a stop */
#define PT_MAX_RESTARTS		8	/* reruns of an injected syscall cut by a signal */
#define PT_MAX_DETOURS		10000	/* other stops while waiting for one of ours */
#define PT_HELD_LIMIT		1024	/* held signals beyond which pt_syscall gives up */
#define PT_HELD_CAP		65536	/* beyond this a signal would be lost (never reached) */
#define PT_VM_CHUNK		(1ul << 30)
#define PT_SCAN_CHUNK		65536
#define PT_SCAN_MAX		(16ul << 20)	/* bytes of one mapping searched for the insn */

enum pt_stop {
	PT_STOP_EVENT,		/* PTRACE_INTERRUPT's trap or a group-stop */
	PT_STOP_SIGNAL,		/* signal-delivery-stop: the signal is the last one held */
	PT_STOP_SYSCALL,	/* syscall entry or exit, only inside inject_once */
};

struct pt_tstate {
	struct arch_regs regs;	/* as seized; th[0]'s go back after every syscall */
	enum pt_stop stop;
	int gone;		/* its exit was reported (and reaped) */
	siginfo_t *held;	/* signals it dequeued while we held it, in order */
	int nheld;
	int cap;
};

static void say(char *why, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Fill WHY (if any) with the reason of a failure. */
static void say(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!why || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
}

static long elapsed_ns(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - t0->tv_sec) * 1000000000l + (now.tv_nsec - t0->tv_nsec);
}

/* Read /proc/PID/task/TID/FILE into BUF (NUL-terminated). Returns its length or -errno. */
static ssize_t proc_read(pid_t pid, pid_t tid, const char *file, char *buf, size_t len)
{
	char path[64];
	ssize_t n, got = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/%s", pid, tid, file);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while ((size_t)got < len - 1 && (n = (ssize_t)fread(buf + got, 1, len - 1 - got, f)) > 0)
		got += n;
	fclose(f);
	buf[got] = '\0';
	return got;
}

/* Find "NAME:" in /proc/PID/task/TID/status; its value text in BUF, or NULL. */
static const char *status_text(pid_t pid, pid_t tid, const char *name, char *buf, size_t len)
{
	size_t n = strlen(name);
	char *s;

	if (proc_read(pid, tid, "status", buf, len) < 0)
		return NULL;
	for (s = buf; s; s = strchr(s, '\n') ? strchr(s, '\n') + 1 : NULL)
		if (!strncmp(s, name, n) && s[n] == ':')
			return s + n + 1;
	return NULL;
}

/* A decimal field of the status file, or -1. */
static long long status_field(pid_t pid, pid_t tid, const char *name)
{
	char buf[4096];
	const char *v = status_text(pid, tid, name, buf, sizeof(buf));

	return v ? strtoll(v, NULL, 10) : -1;
}

/* A signal mask field of the status file (bit N-1 for signal N); false when unreadable. */
static bool status_mask(pid_t pid, pid_t tid, const char *name, uint64_t *mask)
{
	char buf[4096];
	const char *v = status_text(pid, tid, name, buf, sizeof(buf));

	if (!v)
		return false;
	*mask = strtoull(v, NULL, 16);
	return true;
}

/* The state letter of thread TID (R, S, D, T, t, Z, X...), or 0 when it is gone. */
static char thread_state(pid_t pid, pid_t tid)
{
	char buf[1024], *s;

	if (proc_read(pid, tid, "stat", buf, sizeof(buf)) < 0)
		return 0;
	s = strrchr(buf, ')');	/* comm may contain anything */
	return s && s[1] == ' ' ? s[2] : 0;
}

static bool is_dead_state(char c)
{
	return c == 0 || c == 'Z' || c == 'X';
}

/* Keep SI, dequeued by thread ST while we held it, for delivery at detach. */
static void hold(pid_t pid, pid_t tid, struct pt_tstate *st, const siginfo_t *si)
{
	int i, j;

	/*
	 * Without us the held stop signal would have stopped the process and
	 * this SIGCONT continued it; the continuing is done when SIGCONT is
	 * sent, not when it is delivered, so delivering both at detach would
	 * leave it stopped. Drop the stop signals, as the kernel drops pending
	 * ones when SIGCONT is sent.
	 */
	for (i = j = 0; si->si_signo == SIGCONT && i < st->nheld; i++) {
		int s = st->held[i].si_signo;

		if (s != SIGSTOP && s != SIGTSTP && s != SIGTTIN && s != SIGTTOU)
			st->held[j++] = st->held[i];
	}
	if (si->si_signo == SIGCONT)
		st->nheld = j;
	if (st->nheld == st->cap) {
		int cap = st->cap ? 2 * st->cap : 4;
		siginfo_t *h = cap <= PT_HELD_CAP ? realloc(st->held, cap * sizeof(*h)) : NULL;

		if (!h) {
			log_warnx("pid %d: thread %d: signal %d lost (%d held)", pid, tid,
				  si->si_signo, st->nheld);
			return;
		}
		st->held = h;
		st->cap = cap;
	}
	st->held[st->nheld++] = *si;
}

/*
 * Apply a wait report STATUS of thread I: note its exit or the kind of stop,
 * holding the signal of a signal-delivery-stop. Returns the stop kind, or
 * -ESRCH when it exited.
 */
static int note(struct pt *p, int i, int status)
{
	struct pt_thread *th = &p->th[i];
	struct pt_tstate *st = th->st;
	siginfo_t si;

	if (WIFEXITED(status) || WIFSIGNALED(status)) {
		th->stopped = 0;
		st->gone = 1;
		return -ESRCH;
	}
	th->stopped = 1;
	if (status >> 16) {
		st->stop = PT_STOP_EVENT;
	} else if (WSTOPSIG(status) == (SIGTRAP | 0x80)) {
		st->stop = PT_STOP_SYSCALL;
	} else {
		st->stop = PT_STOP_SIGNAL;
		if (ptrace(PTRACE_GETSIGINFO, th->tid, NULL, &si) < 0)
			return -errno;
		hold(p->pid, th->tid, st, &si);
		log_debug("pid %d: thread %d: holding signal %d (code %d)", p->pid, th->tid,
			  si.si_signo, si.si_code);
	}
	return st->stop;
}

/* Collect exit reports of the threads other than I, so a leader's own report can come. */
static void reap_others(struct pt *p, int i)
{
	int j, status;

	for (j = 0; j < p->nr_threads; j++) {
		if (j == i || p->th[j].st->gone)
			continue;
		if (waitpid(p->th[j].tid, &status, __WALL | WNOHANG) == p->th[j].tid)
			note(p, j, status);
	}
}

/*
 * Wait for a report of thread I and apply it. MS < 0 waits as long as it
 * takes. Returns the stop kind, -ESRCH (exited), -ETIMEDOUT or -errno.
 *
 * waitpid(WNOHANG) in a loop rather than a blocking waitpid: a traced thread
 * group leader reports its exit only after we have reaped the other traced
 * threads, so a blocking wait for it could wait for ourselves.
 */
static int wait_thread(struct pt *p, int i, int ms)
{
	struct timespec t0, nap = { 0, 0 };
	pid_t tid = p->th[i].tid;
	int status;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		pid_t r = waitpid(tid, &status, __WALL | WNOHANG);
		long ns;

		if (r == tid)
			return note(p, i, status);
		if (r < 0 && errno == ECHILD) {
			/* not ours to wait for any more: it is gone */
			p->th[i].stopped = 0;
			p->th[i].st->gone = 1;
			return -ESRCH;
		}
		if (r < 0 && errno != EINTR)
			return -errno;
		ns = elapsed_ns(&t0);
		if (ms >= 0 && ns >= ms * 1000000l)
			return -ETIMEDOUT;
		if (ns < PT_SPIN_NS) {
			sched_yield();
			continue;
		}
		reap_others(p, i);
		nap.tv_nsec = nap.tv_nsec ? nap.tv_nsec * 2 : 20000;
		if (nap.tv_nsec > 2000000)
			nap.tv_nsec = 2000000;
		nanosleep(&nap, NULL);
	}
}

/* ptrace request on thread I that needs it stopped; -errno, and ESRCH marks the target dying. */
static int pt_req(struct pt *p, int i, int req, void *addr, void *data)
{
	if (ptrace(req, p->th[i].tid, addr, data) < 0) {
		int e = errno;

		if (e == ESRCH)
			p->gone = 1;
		return -e;
	}
	if (req == PTRACE_CONT || req == PTRACE_SYSCALL || req == PTRACE_DETACH)
		p->th[i].stopped = 0;
	return 0;
}

/*
 * Resume thread I with REQ until it reaches a stop of kind WANT; other stops
 * are detours. FLOOD: give up with -EAGAIN once too many signals are held
 * (signals arriving faster than the thread gets through get_signal()).
 */
static int run_to(struct pt *p, int i, int req, enum pt_stop want, bool flood)
{
	int n, r;

	for (n = 0; n < PT_MAX_DETOURS; n++) {
		if (flood && p->th[i].st->nheld >= PT_HELD_LIMIT)
			return -EAGAIN;
		r = pt_req(p, i, req, NULL, NULL);
		if (r < 0)
			return r;
		r = wait_thread(p, i, -1);
		if (r < 0) {
			if (r == -ESRCH)
				p->gone = 1;
			return r;
		}
		if ((enum pt_stop)r == want)
			return 0;
	}
	return -EIO;
}

/*
 * Put thread 0's own registers back and return it to an event-stop in
 * get_signal(), in front of the restart logic of whatever it was in. AT_ENTRY:
 * it is stopped at the entry of our syscall, which must not run.
 */
static int put_back(struct pt *p, bool at_entry)
{
	struct pt_tstate *st = p->th[0].st;
	int r;

	if (at_entry) {
		struct arch_regs skip = st->regs;

		/* orig_rax = -1 at syscall entry: the kernel skips the call */
		skip.r.orig_rax = (unsigned long long)-1;
		r = arch_set_regs(p->th[0].tid, &skip);
		if (r == 0)
			r = run_to(p, 0, PTRACE_SYSCALL, PT_STOP_SYSCALL, false);
		if (r)
			return r;
	}
	r = arch_set_regs(p->th[0].tid, &st->regs);
	if (r) {
		if (r == -ESRCH)
			p->gone = 1;
		return r;
	}
	if (st->stop == PT_STOP_EVENT)
		return 0;
	r = pt_req(p, 0, PTRACE_INTERRUPT, NULL, NULL);
	if (r == 0)
		r = run_to(p, 0, PTRACE_CONT, PT_STOP_EVENT, false);
	return r;
}

/* Run syscall NR(ARGS) once in thread 0; its result in *RES. */
static int inject_once(struct pt *p, long nr, const long args[6], long *res)
{
	struct pt_thread *th = &p->th[0];
	struct arch_regs call, out;
	sigset_t block, old;
	bool at_entry = false;
	int r, r2;

	arch_syscall_regs(&call, &th->st->regs, p->syscall_ip, nr, args);
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGQUIT);
	pthread_sigmask(SIG_BLOCK, &block, &old);

	/* window: foreign registers from here ... */
	r = arch_set_regs(th->tid, &call);
	if (r == 0) {
		/* the only leg where the thread passes get_signal() and takes signals */
		r = run_to(p, 0, PTRACE_SYSCALL, PT_STOP_SYSCALL, true);
		at_entry = r == 0;
	}
	if (r == 0) {
		r = run_to(p, 0, PTRACE_SYSCALL, PT_STOP_SYSCALL, false);
		if (r == 0)
			at_entry = false;
	}
	if (r == 0)
		r = arch_get_regs(th->tid, &out);
	if (r == 0 && arch_ip(&out) != p->syscall_ip + ARCH_SYSCALL_INSN_LEN)
		r = -EIO;
	if (r == 0)
		*res = arch_syscall_ret(&out);
	if (r == -ESRCH || p->gone || th->st->gone) {
		p->gone = 1;
		r2 = -ESRCH;
	} else {
		r2 = put_back(p, at_entry);
	}
	/* ... to here */

	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r2 == -ESRCH)
		p->gone = 1;
	return r ? r : r2;
}

/* Search LEN bytes at ADDR in the target for the syscall instruction; 0 with *IP, or -errno. */
static int scan_for_insn(struct pt *p, uint64_t addr, uint64_t len, uint64_t *ip)
{
	static const char insn[] = ARCH_SYSCALL_INSN;
	uint8_t *buf = malloc(PT_SCAN_CHUNK);
	uint64_t off;
	int r = -ENOENT;

	if (!buf)
		return -ENOMEM;
	if (len > PT_SCAN_MAX)
		len = PT_SCAN_MAX;
	/* chunks overlap by one instruction less a byte, so none is split */
	for (off = 0; off < len; off += PT_SCAN_CHUNK - (ARCH_SYSCALL_INSN_LEN - 1)) {
		size_t n = len - off < PT_SCAN_CHUNK ? len - off : PT_SCAN_CHUNK;
		uint8_t *hit;

		r = pt_read(p, addr + off, buf, n);
		if (r)
			break;
		hit = memmem(buf, n, insn, ARCH_SYSCALL_INSN_LEN);
		if (hit) {
			*ip = addr + off + (uint64_t)(hit - buf);
			break;
		}
		r = -ENOENT;
		if (n < PT_SCAN_CHUNK)
			break;
	}
	free(buf);
	return r;
}

/*
 * Find a syscall instruction mapped executable in the target: in the vdso,
 * else in any readable executable mapping. Caches it in p->syscall_ip.
 */
static int find_syscall_insn(struct pt *p)
{
	char path[64], *line = NULL;
	size_t cap = 0;
	int pass, r = -ENOENT;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/maps", p->pid, p->th[0].tid);
	for (pass = 0; pass < 2 && r; pass++) {
		f = fopen(path, "re");
		if (!f)
			return errno == ENOENT ? -ESRCH : -errno;
		while (r && getline(&line, &cap, f) > 0) {
			unsigned long start, end;
			char perms[5];
			int name = 0;
			bool vdso;

			if (sscanf(line, "%lx-%lx %4s %*s %*s %*s %n", &start, &end, perms,
				   &name) < 3 || perms[0] != 'r' || perms[2] != 'x')
				continue;
			vdso = name && !strncmp(line + name, "[vdso]", 6);
			if (name && !strncmp(line + name, "[vsyscall]", 10))
				continue;	/* emulated, not a real syscall insn */
			if (vdso != (pass == 0))
				continue;
			r = scan_for_insn(p, start, end - start, &p->syscall_ip);
			if (r == -ESRCH) {
				fclose(f);
				free(line);
				return r;
			}
		}
		fclose(f);
	}
	free(line);
	if (r == 0)
		log_debug("pid %d: syscall instruction at %#" PRIx64, p->pid, p->syscall_ip);
	return r ? -ENOEXEC : 0;
}

/*
 * A signal to queue to thread I so that, resumed, it enters a
 * signal-delivery-stop we can use: not blocked by it (it is stopped, its mask
 * cannot change) and, for a standard signal, not already pending for it (it
 * would merge). Real-time signals first (FROM 32), as they never merge, the
 * lowest first: the kernel takes the thread's own queue before the process's
 * and low numbers first, so a flood of other signals cannot keep it waiting.
 * FROM 1: standard signals only. 0 when none fits.
 */
static int pick_carrier(struct pt *p, int i, int from)
{
	uint64_t blk, pnd;
	int s;

	if (!status_mask(p->pid, p->th[i].tid, "SigBlk", &blk) ||
	    !status_mask(p->pid, p->th[i].tid, "SigPnd", &pnd))
		return 0;
	for (s = 32; from >= 32 && s <= 64; s++)
		if (!(blk & (1ull << (s - 1))))
			return s;
	for (s = 1; s < 32; s++) {
		if (s == SIGKILL || s == SIGSTOP || s == SIGCONT || s == SIGTSTP ||
		    s == SIGTTIN || s == SIGTTOU)
			continue;	/* these act when sent, not when delivered */
		if (!((blk | pnd) & (1ull << (s - 1))))
			return s;
	}
	return 0;
}

/* Is SI the carrier C we queued? A standard signal may come without its siginfo. */
static bool is_carrier(const siginfo_t *si, int c)
{
	if (si->si_signo != c)
		return false;
	if (si->si_code == SI_TKILL && si->si_pid == getpid())
		return true;
	/* queued when the pending queue was full: the kernel zeroes the info */
	return c < 32 && si->si_code == SI_USER && si->si_pid == 0;
}

/* Bring thread I from an event-stop into a signal-delivery-stop by a carrier signal. */
static int to_signal_stop(struct pt *p, int i)
{
	struct pt_thread *th = &p->th[i];
	struct pt_tstate *st = th->st;
	int c = pick_carrier(p, i, 32), n, r;

	if (!c)
		return -EAGAIN;
	if (syscall(SYS_tgkill, p->pid, th->tid, c) < 0) {
		/*
		 * A real-time signal needs a queue entry, and a flood of
		 * signals may have used up the target's RLIMIT_SIGPENDING;
		 * a standard signal is still marked pending.
		 */
		if (errno != EAGAIN || !(c = pick_carrier(p, i, 1)))
			return -errno;
		if (syscall(SYS_tgkill, p->pid, th->tid, c) < 0)
			return -errno;
	}
	/* the carrier is pending and unblocked: get_signal() reaches it before user space */
	for (n = 0; n < PT_MAX_DETOURS; n++) {
		const siginfo_t *last;

		r = pt_req(p, i, PTRACE_CONT, NULL, NULL);
		if (r)
			return r;
		r = wait_thread(p, i, PT_STOP_WAIT_MS);
		if (r == -ETIMEDOUT) {
			/* it went back to user space after all: stop it again */
			ptrace(PTRACE_INTERRUPT, th->tid, NULL, NULL);
			r = wait_thread(p, i, PT_STOP_WAIT_MS);
			return r < 0 ? r : -EIO;
		}
		if (r < 0)
			return r;
		if (r != PT_STOP_SIGNAL)
			continue;
		if (!st->nheld)
			return 0;	/* a signal stop whose signal could not be kept: use it */
		last = &st->held[st->nheld - 1];
		if (is_carrier(last, c)) {
			st->nheld--;	/* ours: swallowed, its stop is what we wanted */
			return 0;
		}
		/* a real signal came first; it is held now; go on to the carrier */
	}
	return -EIO;
}

/* Queue thread I's held signals again, as faithfully as the kernel allows. */
static void requeue_held(struct pt *p, int i)
{
	struct pt_thread *th = &p->th[i];
	struct pt_tstate *st = th->st;
	int k;

	for (k = 0; k < st->nheld; k++) {
		siginfo_t *si = &st->held[k];
		long r;

		/* the kernel refuses a forged siginfo of kernel or kill() origin */
		if (si->si_code < 0 && si->si_code != SI_TKILL)
			r = syscall(SYS_rt_tgsigqueueinfo, p->pid, th->tid, si->si_signo, si);
		else
			r = syscall(SYS_tgkill, p->pid, th->tid, si->si_signo);
		if (r < 0)
			log_warn("pid %d: thread %d: signal %d lost", p->pid, th->tid,
				 si->si_signo);
	}
	st->nheld = 0;
}

/* Wait for thread I, which was seen dying, to report its exit. */
static int wait_exit(struct pt *p, int i)
{
	struct timespec t0;
	int r;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!p->th[i].st->gone) {
		long left = PT_EXIT_WAIT_MS - elapsed_ns(&t0) / 1000000;

		if (left <= 0)
			return -ETIMEDOUT;
		r = wait_thread(p, i, (int)left);
		if (r == -ETIMEDOUT)
			return r;
		if (r >= 0 && p->th[i].stopped) {
			/* it stopped after all (a late trap): let it go */
			if (ptrace(PTRACE_DETACH, p->th[i].tid, NULL, NULL) == 0) {
				p->th[i].stopped = 0;
				return 0;
			}
		}
	}
	return -ESRCH;
}

/* PTRACE_DETACH thread I handing it SIG; collect its exit if it is dying. */
static int detach_one(struct pt *p, int i, int sig)
{
	pid_t tid = p->th[i].tid;

	if (ptrace(PTRACE_DETACH, tid, NULL, (void *)(long)sig) == 0) {
		p->th[i].stopped = 0;
		return 0;
	}
	if (errno != ESRCH)
		return -errno;
	/* dying, or never stopped (a seize that timed out): wait a little for either */
	return wait_exit(p, i);
}

/*
 * Let thread I go, delivering every signal held for it with its own
 * siginfo: in a signal-delivery-stop, PTRACE_SETSIGINFO and the signal as
 * the resume argument. All but the last are delivered with a trap queued
 * behind them (the kernel sets up the handler frame, then stops again in
 * get_signal(), as it would with several pending signals).
 */
static int release(struct pt *p, int i)
{
	struct pt_thread *th = &p->th[i];
	struct pt_tstate *st = th->st;
	siginfo_t si;
	int r;

	if (st->gone)
		return -ESRCH;
	if (!th->stopped)
		return detach_one(p, i, 0);
	while (st->nheld) {
		if (st->stop != PT_STOP_SIGNAL) {
			r = to_signal_stop(p, i);
			if (r == -ESRCH)
				return wait_exit(p, i);
			if (r) {
				log_debug("pid %d: thread %d: no carrier signal (%s), requeueing",
					  p->pid, th->tid, strerror(-r));
				requeue_held(p, i);
				break;
			}
			continue;
		}
		si = st->held[0];
		memmove(st->held, st->held + 1, (size_t)--st->nheld * sizeof(si));
		if (ptrace(PTRACE_SETSIGINFO, th->tid, NULL, &si) < 0)
			return errno == ESRCH ? wait_exit(p, i) : -errno;
		if (!st->nheld)
			return detach_one(p, i, si.si_signo);
		r = pt_req(p, i, PTRACE_INTERRUPT, NULL, NULL);
		if (r == 0)
			r = pt_req(p, i, PTRACE_CONT, NULL, (void *)(long)si.si_signo);
		if (r == 0)
			r = wait_thread(p, i, PT_STOP_WAIT_MS);
		if (r == -ESRCH)
			return wait_exit(p, i);
		if (r < 0)
			return r;
	}
	return detach_one(p, i, 0);
}

/* Free the engine's state and forget the target. */
static void pt_clear(struct pt *p)
{
	int i;

	for (i = 0; i < p->nr_threads; i++) {
		if (p->th[i].st)
			free(p->th[i].st->held);
		free(p->th[i].st);
	}
	free(p->th);
	if (p->pidfd >= 0)
		close(p->pidfd);
	p->th = NULL;
	p->nr_threads = 0;
	p->pidfd = -1;
	p->syscall_ip = 0;
}

int pt_detach(struct pt *p)
{
	bool gone = p->gone;
	int i, r, ret = 0;

	if (!p->th)
		return 0;	/* nothing held (never seized, or detached already) */
	/* thread 0 last: signals held for it may stop or end the whole process */
	for (i = p->nr_threads - 1; i >= 0; i--) {
		r = release(p, i);
		if (r && r != -ESRCH)
			log_debug("pid %d: thread %d: detach: %s", p->pid, p->th[i].tid,
				  strerror(-r));
		if (r == -ESRCH)
			gone = true;
		else if (r && !ret)
			ret = r;
	}
	pt_clear(p);
	return gone ? -ESRCH : ret;
}

/* Explain an EPERM from PTRACE_SEIZE of thread TID of PID into WHY. */
static void explain_eperm(pid_t pid, pid_t tid, char *why, size_t len)
{
	long long tracer = status_field(pid, tid, "TracerPid");
	char buf[1024], comm[64] = "?";
	long long scope = -1;
	FILE *f;

	if (tracer > 0) {
		snprintf(buf, sizeof(buf), "/proc/%lld/comm", tracer);
		f = fopen(buf, "re");
		if (f) {
			if (fgets(comm, sizeof(comm), f))
				comm[strcspn(comm, "\n")] = '\0';
			fclose(f);
		}
		if (status_field((pid_t)tracer, (pid_t)tracer, "Tgid") == getpid())
			say(why, len, "pid %d is already traced by this process", pid);
		else
			say(why, len, "pid %d is already traced by pid %lld (%s)", pid, tracer,
			    comm);
		return;
	}
	if (proc_read(pid, pid, "stat", buf, sizeof(buf)) > 0) {
		char *s = strrchr(buf, ')');
		unsigned long flags = 0;

		/* field 9 is flags; PF_KTHREAD is 0x00200000 */
		if (s && sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %lu", &flags) == 1 &&
		    (flags & 0x00200000)) {
			say(why, len, "pid %d is a kernel thread", pid);
			return;
		}
	}
	f = fopen("/proc/sys/kernel/yama/ptrace_scope", "re");
	if (f) {
		if (fscanf(f, "%lld", &scope) != 1)
			scope = -1;
		fclose(f);
	}
	if (scope > 0)
		say(why, len,
		    "pid %d: no permission to trace it (yama ptrace_scope is %lld%s)", pid, scope,
		    scope >= 3 ? ": ptrace is disabled" : ", needs CAP_SYS_PTRACE");
	else
		say(why, len,
		    "pid %d: no permission to trace it (needs CAP_SYS_PTRACE, or the same user"
		    " and a dumpable process)", pid);
}

/* Add thread TID to P as seized; returns its index or -ENOMEM. */
static int add_thread(struct pt *p, pid_t tid)
{
	struct pt_thread *th = realloc(p->th, (size_t)(p->nr_threads + 1) * sizeof(*th));
	struct pt_tstate *st;

	if (!th)
		return -ENOMEM;
	p->th = th;
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	th[p->nr_threads] = (struct pt_thread){ .tid = tid, .stopped = 0, .st = st };
	return p->nr_threads++;
}

/* Forget thread I (it exited while we seized it). */
static void drop_thread(struct pt *p, int i)
{
	free(p->th[i].st->held);
	free(p->th[i].st);
	memmove(p->th + i, p->th + i + 1, (size_t)(p->nr_threads - i - 1) * sizeof(*p->th));
	p->nr_threads--;
}

static bool has_thread(const struct pt *p, pid_t tid)
{
	int i;

	for (i = 0; i < p->nr_threads; i++)
		if (p->th[i].tid == tid)
			return true;
	return false;
}

/* Seize and stop one thread TID. 1: seized, 0: it exited first, -errno with WHY. */
static int seize_thread(struct pt *p, pid_t tid, long *opts, char *why, size_t len)
{
	int i = add_thread(p, tid), r;

	if (i < 0) {
		say(why, len, "pid %d: out of memory", p->pid);
		return i;
	}
	while (ptrace(PTRACE_SEIZE, tid, NULL, (void *)(intptr_t)*opts) < 0) {
		int e = errno;

		if (e == EPERM && (*opts & PTRACE_O_SUSPEND_SECCOMP)) {
			/* needs CAP_SYS_ADMIN and no seccomp of our own: do without */
			*opts &= ~(long)PTRACE_O_SUSPEND_SECCOMP;
			continue;
		}
		drop_thread(p, i);
		/* a thread that exits meanwhile: ESRCH, or EPERM once it is a zombie */
		if (e == ESRCH || (e == EPERM && is_dead_state(thread_state(p->pid, tid))))
			return 0;
		if (e == EPERM)
			explain_eperm(p->pid, tid, why, len);
		else
			say(why, len, "pid %d: PTRACE_SEIZE of thread %d: %s", p->pid, tid,
			    strerror(e));
		return -e;
	}
	/* ESRCH here: it is exiting, and the wait below reports that */
	ptrace(PTRACE_INTERRUPT, tid, NULL, NULL);
	r = wait_thread(p, i, PT_STOP_WAIT_MS);
	if (r == -ESRCH) {
		drop_thread(p, i);
		return 0;
	}
	if (r == -ETIMEDOUT) {
		say(why, len,
		    "pid %d: thread %d did not stop within %d ms (uninterruptible sleep?)",
		    p->pid, tid, PT_STOP_WAIT_MS);
		return r;
	}
	if (r < 0) {
		say(why, len, "pid %d: waiting for thread %d: %s", p->pid, tid, strerror(-r));
		return r;
	}
	r = arch_get_regs(tid, &p->th[i].st->regs);
	if (r == -ESRCH && wait_exit(p, i) == -ESRCH) {
		/* killed right after its stop */
		drop_thread(p, i);
		return 0;
	}
	if (r) {
		say(why, len, "pid %d: PTRACE_GETREGS of thread %d: %s", p->pid, tid,
		    strerror(-r));
		return r;
	}
	return 1;
}

/*
 * One pass over /proc/PID/task: seize the threads not seized yet. *ADDED
 * counts them, *DEAD the zombie threads seen (an exited leader).
 */
static int seize_pass(struct pt *p, long *opts, int *added, int *dead, char *why, size_t len)
{
	char path[64];
	struct dirent *de;
	DIR *d;
	int r = 0;

	snprintf(path, sizeof(path), "/proc/%d/task", p->pid);
	d = opendir(path);
	if (!d) {
		if (errno == ENOENT) {
			say(why, len, "pid %d: no such process", p->pid);
			return -ESRCH;
		}
		r = -errno;
		say(why, len, "pid %d: %s: %s", p->pid, path, strerror(-r));
		return r;
	}
	*added = 0;
	*dead = 0;
	while ((de = readdir(d))) {
		pid_t tid = (pid_t)strtol(de->d_name, NULL, 10);

		if (tid <= 0 || has_thread(p, tid))
			continue;
		if (is_dead_state(thread_state(p->pid, tid))) {
			(*dead)++;
			continue;	/* a zombie cannot be traced (an exited leader) */
		}
		r = seize_thread(p, tid, opts, why, len);
		if (r < 0)
			break;
		*added += r;
		r = 0;
	}
	closedir(d);
	return r;
}

int pt_seize(struct pt *p, pid_t pid, char *why, size_t len)
{
	long opts = PTRACE_O_TRACESYSGOOD;
	int added = 0, r, i;

	memset(p, 0, sizeof(*p));
	p->pid = pid;
	p->pidfd = -1;
	if (pid <= 0) {
		say(why, len, "pid %d: not a process id", pid);
		return -EINVAL;
	}
	if (pid == getpid()) {
		say(why, len, "pid %d is this process", pid);
		return -EPERM;
	}
	p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (p->pidfd < 0) {
		long long tgid;

		r = -errno;
		tgid = status_field(pid, pid, "Tgid");
		if (r == -ESRCH) {
			say(why, len, "pid %d: no such process", pid);
		} else if ((r == -EINVAL || r == -ENOENT) && tgid > 0 && tgid != pid) {
			/* a thread id: EINVAL before Linux 6.9, ENOENT since */
			say(why, len, "pid %d is a thread of process %lld, not a process", pid,
			    tgid);
			r = -EINVAL;
		} else {
			say(why, len, "pid %d: pidfd_open: %s", pid, strerror(-r));
		}
		p->pidfd = -1;
		return r;
	}
	/* the target's own seccomp filter would see our syscalls: suspend it while we hold it */
	if (status_field(pid, pid, "Seccomp") > 0)
		opts |= PTRACE_O_SUSPEND_SECCOMP;

	/*
	 * Until a pass finds no thread we did not already hold, all stopped.
	 * A pass can miss a live thread: /proc/PID/task is read by position,
	 * and threads that exit meanwhile shift the rest. So the kernel's own
	 * count must agree too (a thread on its way out still counts, briefly).
	 */
	for (int tries = 0;; tries++) {
		long long n;
		int dead = 0;

		r = seize_pass(p, &opts, &added, &dead, why, len);
		if (r < 0)
			goto fail;
		if (added)
			continue;
		n = status_field(pid, pid, "Threads");
		if (n <= p->nr_threads + dead || tries >= PT_SEIZE_PASSES)
			break;
		usleep(100);
	}
	if (p->nr_threads == 0) {
		char c = thread_state(pid, pid);

		if (c == 'Z' || c == 'X')
			say(why, len, "pid %d is a zombie (it exited; its parent has not reaped it)",
			    pid);
		else
			say(why, len, "pid %d: no such process (it exited)", pid);
		r = -ESRCH;
		goto fail;
	}
	/* the leader runs the syscalls when it is alive */
	for (i = 1; i < p->nr_threads; i++) {
		if (p->th[i].tid == pid) {
			struct pt_thread t = p->th[0];

			p->th[0] = p->th[i];
			p->th[i] = t;
		}
	}
	if (log_level() >= LOG_LVL_DEBUG) {
		const struct arch_regs *rg = &p->th[0].st->regs;

		log_debug("pid %d: seized %d threads; thread %d in syscall %ld, restart kind %d",
			  pid, p->nr_threads, p->th[0].tid, arch_syscall_nr(rg),
			  (int)arch_restart_kind(rg));
	}
	return 0;
fail:
	if (p->th) {
		pt_detach(p);
	} else {
		close(p->pidfd);
		p->pidfd = -1;
	}
	return r;
}

int pt_syscall(struct pt *p, long *ret, long nr, long a1, long a2, long a3, long a4, long a5,
	       long a6)
{
	const long args[6] = { a1, a2, a3, a4, a5, a6 };
	long res = 0;
	int n, r;

	if (!p->nr_threads)
		return -EINVAL;
	if (p->gone || p->th[0].st->gone || !p->th[0].stopped)
		return -ESRCH;
	if (!p->syscall_ip) {
		r = find_syscall_insn(p);
		if (r && arch_get_regs(p->th[0].tid, &(struct arch_regs){ 0 }) == -ESRCH) {
			/* no maps to search: it was killed */
			p->gone = 1;
			r = -ESRCH;
		}
		if (r)
			return r;
	}
	if (p->th[0].st->nheld >= PT_HELD_LIMIT)
		return -EAGAIN;	/* let pt_detach deliver what we hold first */
	for (n = 0;; n++) {
		r = inject_once(p, nr, args, &res);
		if (r)
			return r;
		/* cut short by a signal (now held): our registers are gone, run it again */
		if (!arch_is_restart(res) || n == PT_MAX_RESTARTS)
			break;
	}
	*ret = arch_is_restart(res) ? -EINTR : res;
	return 0;
}

/* process_vm_readv/writev the whole of LEN, in chunks the kernel takes whole. */
static int vm_rw(struct pt *p, uint64_t addr, void *buf, size_t len, bool write)
{
	pid_t pid = p->nr_threads ? p->th[0].tid : p->pid;
	uint8_t *b = buf;

	if (p->gone)
		return -ESRCH;
	while (len) {
		size_t n = len < PT_VM_CHUNK ? len : PT_VM_CHUNK;
		struct iovec local = { b, n };
		struct iovec remote = { (void *)(uintptr_t)addr, n };
		ssize_t got = write ? process_vm_writev(pid, &local, 1, &remote, 1, 0)
				    : process_vm_readv(pid, &local, 1, &remote, 1, 0);

		if (got < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ESRCH)
				p->gone = 1;
			return -errno;
		}
		if (got == 0)
			return -EFAULT;
		/* short: the rest starts at an unmapped page, which the next call reports */
		b += got;
		addr += (uint64_t)got;
		len -= (size_t)got;
	}
	return 0;
}

int pt_read(struct pt *p, uint64_t addr, void *buf, size_t len)
{
	return vm_rw(p, addr, buf, len, false);
}

int pt_write(struct pt *p, uint64_t addr, const void *buf, size_t len)
{
	return vm_rw(p, addr, (void *)buf, len, true);
}

int pt_getfd(struct pt *p, int fd)
{
	int r;

	if (p->gone)
		return -ESRCH;
	if (p->pidfd < 0)
		return -EBADF;
	r = (int)syscall(SYS_pidfd_getfd, p->pidfd, fd, 0);
	return r < 0 ? -errno : r;
}

int pt_thread_tls(struct pt *p, int i, uint64_t *tls)
{
	if (i < 0 || i >= p->nr_threads)
		return -EINVAL;
	if (p->th[i].st->gone)
		return -ESRCH;
	*tls = arch_tls(&p->th[i].st->regs);
	return 0;
}

int pt_thread_sp(struct pt *p, int i, uint64_t *sp)
{
	if (i < 0 || i >= p->nr_threads)
		return -EINVAL;
	if (p->th[i].st->gone)
		return -ESRCH;
	*sp = arch_sp(&p->th[i].st->regs);
	return 0;
}
