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
 * Signals. A signal the thread dequeues while we hold it stops it in a
 * signal-delivery-stop; we keep its siginfo (held) and resume with 0. At
 * detach every held signal is delivered with its own siginfo, through
 * PTRACE_SETSIGINFO in a signal-delivery-stop and the signal as the resume
 * argument (PTRACE_DETACH for the last one). A thread in an event-stop is
 * first brought into a signal-delivery-stop by a carrier signal we queue to
 * it ourselves and swallow.
 *
 * The engine is three files: this one (the state of each held thread,
 * waiting for its stops, and detach), ptrace_seize.c (seizing every thread)
 * and ptrace_inject.c (running syscalls in the target, reading and writing
 * its memory); ptrace_stop.h is what they share.
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
#include "procfs.h"
#include "ptrace.h"
#include "ptrace_stop.h"
#include "why.h"

/* Fill WHY (if any) with the reason of a failure. */
void pt_say(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	why_vset(why, len, 0, fmt, ap);
	va_end(ap);
}

long pt_elapsed_ns(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - t0->tv_sec) * 1000000000l + (now.tv_nsec - t0->tv_nsec);
}

/* Read /proc/PID/task/TID/FILE into BUF (NUL-terminated). Returns its length or -errno. */
ssize_t pt_proc_read(pid_t pid, pid_t tid, const char *file, char *buf, size_t len)
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
	if (pt_proc_read(pid, tid, "status", buf, len) < 0)
		return NULL;
	return procfs_text_field(buf, name);
}

/* A decimal field of the status file, or -1. */
long long pt_status_field(pid_t pid, pid_t tid, const char *name)
{
	char path[80];
	long long v;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/status", pid, tid);
	return procfs_field_num(path, name, &v) == 0 ? v : -1;
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
char pt_thread_state(pid_t pid, pid_t tid)
{
	char buf[1024], *s;

	if (pt_proc_read(pid, tid, "stat", buf, sizeof(buf)) < 0)
		return 0;
	s = strrchr(buf, ')');	/* comm may contain anything */
	return s && s[1] == ' ' ? s[2] : 0;
}

bool pt_is_dead_state(char c)
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
 *
 * Between two looks, the wait is for SIGCHLD, which the kernel sends the
 * tracer at every stop and exit of a tracee: blocked here and taken with
 * sigtimedwait(), it ends the wait as soon as the report can be collected.
 * A naked nap (up to 2 ms) would add its own length to each of an injected
 * call's three round trips whenever the thread is slow to stop (a loaded
 * machine, a thread waiting for a CPU): that was most of the after-thaw
 * stop of lazy's graveyard (grave.c). main() blocks SIGCHLD before any
 * thread starts, so no other thread of ours takes it, and resets an
 * inherited SIG_IGN, under which the kernel would send none. The nap stays,
 * as the longest wait, for callers that did not (the unit tests).
 */
int pt_wait_thread(struct pt *p, int i, int ms)
{
	struct timespec t0, nap = { 0, 0 };
	pid_t tid = p->th[i].tid;
	sigset_t chld, old;
	int status, ret;

	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &chld, &old);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		pid_t r = waitpid(tid, &status, __WALL | WNOHANG);
		long ns;

		if (r == tid) {
			ret = note(p, i, status);
			break;
		}
		if (r < 0 && errno == ECHILD) {
			/* not ours to wait for any more: it is gone */
			p->th[i].stopped = 0;
			p->th[i].st->gone = 1;
			ret = -ESRCH;
			break;
		}
		if (r < 0 && errno != EINTR) {
			ret = -errno;
			break;
		}
		ns = pt_elapsed_ns(&t0);
		if (ms >= 0 && ns >= ms * 1000000l) {
			ret = -ETIMEDOUT;
			break;
		}
		if (ns < PT_SPIN_NS) {
			sched_yield();
			continue;
		}
		reap_others(p, i);
		nap.tv_nsec = nap.tv_nsec ? nap.tv_nsec * 2 : 20000;
		if (nap.tv_nsec > 2000000)
			nap.tv_nsec = 2000000;
		sigtimedwait(&chld, NULL, &nap);
	}
	/* One left pending is dropped here (its default action): waitpid needs none. */
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return ret;
}

/* ptrace request on thread I that needs it stopped; -errno, and ESRCH marks the target dying. */
int pt_req(struct pt *p, int i, int req, void *addr, void *data)
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
int pt_run_to(struct pt *p, int i, int req, enum pt_stop want, bool flood)
{
	int n, r;

	for (n = 0; n < PT_MAX_DETOURS; n++) {
		if (flood && p->th[i].st->nheld >= PT_HELD_LIMIT)
			return -EAGAIN;
		r = pt_req(p, i, req, NULL, NULL);
		if (r < 0)
			return r;
		r = pt_wait_thread(p, i, -1);
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
		r = pt_wait_thread(p, i, PT_STOP_WAIT_MS);
		if (r == -ETIMEDOUT) {
			/* it went back to user space after all: stop it again */
			ptrace(PTRACE_INTERRUPT, th->tid, NULL, NULL);
			r = pt_wait_thread(p, i, PT_STOP_WAIT_MS);
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
int pt_wait_exit(struct pt *p, int i)
{
	struct timespec t0;
	int r;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (!p->th[i].st->gone) {
		long left = PT_EXIT_WAIT_MS - pt_elapsed_ns(&t0) / 1000000;

		if (left <= 0)
			return -ETIMEDOUT;
		r = pt_wait_thread(p, i, (int)left);
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
	return pt_wait_exit(p, i);
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
				return pt_wait_exit(p, i);
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
			return errno == ESRCH ? pt_wait_exit(p, i) : -errno;
		if (!st->nheld)
			return detach_one(p, i, si.si_signo);
		r = pt_req(p, i, PTRACE_INTERRUPT, NULL, NULL);
		if (r == 0)
			r = pt_req(p, i, PTRACE_CONT, NULL, (void *)(long)si.si_signo);
		if (r == 0)
			r = pt_wait_thread(p, i, PT_STOP_WAIT_MS);
		if (r == -ESRCH)
			return pt_wait_exit(p, i);
		if (r < 0)
			return r;
	}
	return detach_one(p, i, 0);
}

/* Free the engine's state and forget the target. */
void pt_clear(struct pt *p)
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
