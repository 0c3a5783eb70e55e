/*
 * The ptrace engine: freeze every thread of a process, run system calls
 * inside it, and let it go exactly as it was. The architecture-specific part
 * (registers, the syscall instruction) lives in arch_x86_64.c; seizing in
 * ptrace_seize.c, running syscalls and memory access in ptrace_inject.c, the
 * stops of each thread and detach in ptrace.c.
 */
#ifndef UFFD_INJECT_PTRACE_H
#define UFFD_INJECT_PTRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct pt_tstate;

struct pt_thread {
	pid_t tid;
	int stopped;		/* in a ptrace-stop we hold */
	struct pt_tstate *st;	/* the engine's own: registers, held signals */
};

struct pt {
	pid_t pid;
	struct pt_thread *th;	/* th[0] is the thread syscalls run in */
	int nr_threads;
	uint64_t syscall_ip;	/* address of a syscall instruction in the target */
	int pidfd;		/* of the target, for pidfd_getfd */
	int gone;		/* the target died: every call returns -ESRCH */
	long opts;		/* the PTRACE_O_ options every thread was seized with */
	bool test_die;		/* tests: SIGKILL ourselves once the next injected call has
				 * run, its registers not yet put back */
};

/*
 * Seize every thread of PID (threads created meanwhile included) and stop
 * them all. Returns 0 or -errno with WHY filled (naming the pid): -ESRCH no
 * such process or a zombie, -EPERM no permission or already traced,
 * -ETIMEDOUT a thread that does not stop (uninterruptible sleep). On failure
 * every thread seized so far is let go and P holds nothing.
 */
int pt_seize(struct pt *p, pid_t pid, char *why, size_t len);

/*
 * Run syscall NR with up to six arguments in the target's first thread and
 * put its result (a value or -errno, as the kernel returned it) in *RET.
 * The thread's registers are saved before and restored after, on every
 * path. Returns 0, or -errno when the injection itself failed: -ESRCH the
 * target died; -EAGAIN signals kept arriving faster than the thread could be
 * run (over a thousand held for delivery at detach: pt_detach, then retry).
 */
int pt_syscall(struct pt *p, long *ret, long nr, long a1, long a2, long a3, long a4, long a5,
	       long a6);

/* The same in held thread I (0 is the first). */
int pt_syscall_in(struct pt *p, int i, long *ret, long nr, long a1, long a2, long a3, long a4,
		  long a5, long a6);

/*
 * Seize and stop only thread TID of process PID, leaving the others to run
 * (for one short injected call). P is as after pt_seize, with one thread and
 * no pidfd. Returns 0 or -errno with WHY; -ESRCH when the thread is gone.
 */
int pt_seize_thread(struct pt *p, pid_t pid, pid_t tid, char *why, size_t len);

/*
 * Have the kernel SIGKILL the target should this process die while it holds
 * it (ON; PTRACE_O_EXITKILL on every held thread), or no longer. For the
 * steps where a target let go half way would read wrong memory: killed is
 * better than corrupted. 0 or -errno.
 */
int pt_exitkill(struct pt *p, bool on);

/*
 * Run syscall NR(ARGS) in held thread I with the syscall instruction at IP,
 * one the caller put in the target (its own code: a thread made by clone()
 * there goes on after it). Otherwise as pt_syscall.
 */
int pt_syscall_at(struct pt *p, int i, uint64_t ip, long *ret, long nr, const long args[6]);

/*
 * Read (OLD) and/or set (SET) the blocked-signal mask of held thread I, bit
 * N-1 for signal N (PTRACE_GETSIGMASK / PTRACE_SETSIGMASK). 0 or -errno.
 */
int pt_sigmask(struct pt *p, int i, uint64_t *old, const uint64_t *set);

/*
 * Hold thread TID too: one the target made with clone() while it was held
 * with PTRACE_O_TRACECLONE, so auto-attached and bound for an event-stop
 * before its first user instruction. Waits for that stop and keeps its
 * registers as those it goes back to. Returns its index in P->th or -errno.
 */
int pt_adopt(struct pt *p, pid_t tid);

/* Copy LEN bytes into / out of the target (process_vm_writev/readv). 0 or -errno (-EFAULT: unmapped). */
int pt_write(struct pt *p, uint64_t addr, const void *buf, size_t len);
int pt_read(struct pt *p, uint64_t addr, void *buf, size_t len);

/* Take fd FD of the target into our fd table (pidfd_getfd). Returns our fd or -errno. */
int pt_getfd(struct pt *p, int fd);

/* Stack pointer of thread I as seized (for the pages that must stay resident). 0 or -errno. */
int pt_thread_sp(struct pt *p, int i, uint64_t *sp);
/* Its thread pointer (TLS base) as seized. 0 or -errno. */
int pt_thread_tls(struct pt *p, int i, uint64_t *tls);

/*
 * Let every thread go, as it was, delivering the signals that arrived for it
 * while we held it; P holds nothing afterwards (a second call does nothing).
 * Returns 0, or -ESRCH when the target exited.
 */
int pt_detach(struct pt *p);

#endif
