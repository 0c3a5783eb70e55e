/*
 * Inside the ptrace engine: the state of each thread we hold, waiting for
 * its stops, the ptrace requests that name a thread of ours, and the /proc
 * reads the engine needs. Implemented in ptrace.c (with detach), used by
 * ptrace_seize.c and ptrace_inject.c. Nothing else outside the engine
 * includes it but test/unit/test_ptrace.c, for PT_STOP_WAIT_MS (its checks
 * of a killed tracee wait as long as the engine does).
 */
#ifndef UFFD_INJECT_PTRACE_STOP_H
#define UFFD_INJECT_PTRACE_STOP_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "arch.h"
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

/* Fill WHY (if any) with the reason of a failure. */
void pt_say(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Nanoseconds since T0 (CLOCK_MONOTONIC). */
long pt_elapsed_ns(const struct timespec *t0);

/* Read /proc/PID/task/TID/FILE into BUF (NUL-terminated). Returns its length or -errno. */
ssize_t pt_proc_read(pid_t pid, pid_t tid, const char *file, char *buf, size_t len);
/* The number after "NAME:" in /proc/PID/task/TID/status, or -1. */
long long pt_status_field(pid_t pid, pid_t tid, const char *name);
/* The state letter of thread TID of PID (R, S, D, T, t, Z, X), or 0 when it is gone. */
char pt_thread_state(pid_t pid, pid_t tid);
/* Is state C one of a thread that has exited? */
bool pt_is_dead_state(char c);

/* Wait up to MS for thread I's next stop. Returns its kind, -ESRCH (exited), -ETIMEDOUT or -errno. */
int pt_wait_thread(struct pt *p, int i, int ms);
/* Wait for thread I, which was seen dying, to report its exit. */
int pt_wait_exit(struct pt *p, int i);
/* Ptrace request REQ on stopped thread I. 0 or -errno; ESRCH marks the target dying. */
int pt_req(struct pt *p, int i, int req, void *addr, void *data);
/* Resume thread I with REQ until it reaches a stop of kind WANT (FLOOD: -EAGAIN when too many signals are held). */
int pt_run_to(struct pt *p, int i, int req, enum pt_stop want, bool flood);
/* Free the engine's state and forget the target. */
void pt_clear(struct pt *p);

#endif
