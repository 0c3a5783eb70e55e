/*
 * Seizing a process for the ptrace engine: PTRACE_SEIZE every thread (those
 * created meanwhile included, pass after pass over /proc/PID/task until one
 * finds nothing new), stop them all with PTRACE_INTERRUPT, and say why when
 * that cannot be done (no such process, not ours to trace, already traced,
 * a thread in uninterruptible sleep). On failure every thread seized so far
 * is let go.
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
#include "ptrace_stop.h"

static void explain_eperm(pid_t pid, pid_t tid, char *why, size_t len)
{
	long long tracer = pt_status_field(pid, tid, "TracerPid");
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
		if (pt_status_field((pid_t)tracer, (pid_t)tracer, "Tgid") == getpid())
			pt_say(why, len, "pid %d is already traced by this process", pid);
		else
			pt_say(why, len, "pid %d is already traced by pid %lld (%s)", pid, tracer,
			    comm);
		return;
	}
	if (pt_proc_read(pid, pid, "stat", buf, sizeof(buf)) > 0) {
		char *s = strrchr(buf, ')');
		unsigned long flags = 0;

		/* field 9 is flags; PF_KTHREAD is 0x00200000 */
		if (s && sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %lu", &flags) == 1 &&
		    (flags & 0x00200000)) {
			pt_say(why, len, "pid %d is a kernel thread", pid);
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
		pt_say(why, len,
		    "pid %d: no permission to trace it (yama ptrace_scope is %lld%s)", pid, scope,
		    scope >= 3 ? ": ptrace is disabled" : ", needs CAP_SYS_PTRACE");
	else
		pt_say(why, len,
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
		pt_say(why, len, "pid %d: out of memory", p->pid);
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
		if (e == ESRCH || (e == EPERM && pt_is_dead_state(pt_thread_state(p->pid, tid))))
			return 0;
		if (e == EPERM)
			explain_eperm(p->pid, tid, why, len);
		else
			pt_say(why, len, "pid %d: PTRACE_SEIZE of thread %d: %s", p->pid, tid,
			    strerror(e));
		return -e;
	}
	/* ESRCH here: it is exiting, and the wait below reports that */
	ptrace(PTRACE_INTERRUPT, tid, NULL, NULL);
	r = pt_wait_thread(p, i, PT_STOP_WAIT_MS);
	if (r == -ESRCH) {
		drop_thread(p, i);
		return 0;
	}
	if (r == -ETIMEDOUT) {
		pt_say(why, len,
		    "pid %d: thread %d did not stop within %d ms (uninterruptible sleep?)",
		    p->pid, tid, PT_STOP_WAIT_MS);
		return r;
	}
	if (r < 0) {
		pt_say(why, len, "pid %d: waiting for thread %d: %s", p->pid, tid, strerror(-r));
		return r;
	}
	r = arch_get_regs(tid, &p->th[i].st->regs);
	if (r == -ESRCH && pt_wait_exit(p, i) == -ESRCH) {
		/* killed right after its stop */
		drop_thread(p, i);
		return 0;
	}
	if (r) {
		pt_say(why, len, "pid %d: PTRACE_GETREGS of thread %d: %s", p->pid, tid,
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
			pt_say(why, len, "pid %d: no such process", p->pid);
			return -ESRCH;
		}
		r = -errno;
		pt_say(why, len, "pid %d: %s: %s", p->pid, path, strerror(-r));
		return r;
	}
	*added = 0;
	*dead = 0;
	while ((de = readdir(d))) {
		pid_t tid = (pid_t)strtol(de->d_name, NULL, 10);

		if (tid <= 0 || has_thread(p, tid))
			continue;
		if (pt_is_dead_state(pt_thread_state(p->pid, tid))) {
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

int pt_adopt(struct pt *p, pid_t tid)
{
	int i = add_thread(p, tid), r;

	if (i < 0)
		return i;
	r = pt_wait_thread(p, i, PT_STOP_WAIT_MS);
	if (r >= 0)
		r = arch_get_regs(tid, &p->th[i].st->regs);
	if (r < 0) {
		/* not ours after all, or gone: nothing of it is kept */
		if (p->th[i].stopped)
			ptrace(PTRACE_DETACH, tid, NULL, NULL);
		drop_thread(p, i);
		return r;
	}
	return i;
}

int pt_seize(struct pt *p, pid_t pid, char *why, size_t len)
{
	long opts = PTRACE_O_TRACESYSGOOD;
	int added = 0, r, i;

	memset(p, 0, sizeof(*p));
	p->pid = pid;
	p->pidfd = -1;
	if (pid <= 0) {
		pt_say(why, len, "pid %d: not a process id", pid);
		return -EINVAL;
	}
	if (pid == getpid()) {
		pt_say(why, len, "pid %d is this process", pid);
		return -EPERM;
	}
	p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (p->pidfd < 0) {
		long long tgid;

		r = -errno;
		tgid = pt_status_field(pid, pid, "Tgid");
		if (r == -ESRCH) {
			pt_say(why, len, "pid %d: no such process", pid);
		} else if ((r == -EINVAL || r == -ENOENT) && tgid > 0 && tgid != pid) {
			/* a thread id: EINVAL before Linux 6.9, ENOENT since */
			pt_say(why, len, "pid %d is a thread of process %lld, not a process", pid,
			    tgid);
			r = -EINVAL;
		} else {
			pt_say(why, len, "pid %d: pidfd_open: %s", pid, strerror(-r));
		}
		p->pidfd = -1;
		return r;
	}
	/* the target's own seccomp filter would see our syscalls: suspend it while we hold it */
	if (pt_status_field(pid, pid, "Seccomp") > 0)
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
		n = pt_status_field(pid, pid, "Threads");
		if (n <= p->nr_threads + dead || tries >= PT_SEIZE_PASSES)
			break;
		usleep(100);
	}
	if (p->nr_threads == 0) {
		char c = pt_thread_state(pid, pid);

		if (c == 'Z' || c == 'X')
			pt_say(why, len, "pid %d is a zombie (it exited; its parent has not reaped it)",
			    pid);
		else
			pt_say(why, len, "pid %d: no such process (it exited)", pid);
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
	p->opts = opts;
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


int pt_seize_thread(struct pt *p, pid_t pid, pid_t tid, char *why, size_t len)
{
	long opts = PTRACE_O_TRACESYSGOOD;
	int r;

	memset(p, 0, sizeof(*p));
	p->pid = pid;
	p->pidfd = -1;
	if (pid <= 0 || tid <= 0 || pid == getpid()) {
		pt_say(why, len, "pid %d thread %d: not one to seize", pid, tid);
		return -EINVAL;
	}
	/* as pt_seize: its own filter would see the call we run in it (EPERM: without) */
	if (pt_status_field(pid, tid, "Seccomp") > 0)
		opts |= PTRACE_O_SUSPEND_SECCOMP;
	r = seize_thread(p, tid, &opts, why, len);
	if (r == 0) {
		pt_say(why, len, "pid %d: thread %d exited", pid, tid);
		r = -ESRCH;
	}
	if (r < 0) {
		if (p->th)
			pt_detach(p);
		return r;
	}
	p->opts = opts;
	return 0;
}

int pt_exitkill(struct pt *p, bool on)
{
	long opts = p->opts | (on ? PTRACE_O_EXITKILL : 0);
	int i, r, ret = 0;

	for (i = 0; i < p->nr_threads; i++) {
		if (p->th[i].st->gone || !p->th[i].stopped)
			continue;
		r = pt_req(p, i, PTRACE_SETOPTIONS, NULL, (void *)opts);
		if (r && !ret)
			ret = r;
	}
	return ret;
}
