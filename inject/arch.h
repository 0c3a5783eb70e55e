/*
 * The architecture-specific half of the ptrace engine: one thread's
 * registers, how to make them run a system call, and how the kernel treats
 * them when the thread resumes. Only x86_64 exists (arch_x86_64.c).
 */
#ifndef UFFD_INJECT_ARCH_H
#define UFFD_INJECT_ARCH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/user.h>

struct arch_regs {
	struct user_regs_struct r;
};

/* The system call instruction, as bytes to look for in the target. */
#define ARCH_SYSCALL_INSN	"\x0f\x05"
#define ARCH_SYSCALL_INSN_LEN	2

/* The kernel-internal restart codes (include/linux/errno.h), never seen by user space. */
#define ARCH_ERESTARTSYS		512
#define ARCH_ERESTARTNOINTR		513
#define ARCH_ERESTARTNOHAND		514
#define ARCH_ERESTART_RESTARTBLOCK	516

/* What the kernel does with a stopped thread's registers when it resumes with no signal. */
enum arch_restart {
	ARCH_RESTART_NONE,	/* not in a syscall, or its result is final */
	ARCH_RESTART_SAME,	/* ip -= insn, ax = orig_ax: the same syscall runs again */
	ARCH_RESTART_BLOCK,	/* ip -= insn, ax = restart_syscall: it continues where it was */
};

/* Read / write all general registers of stopped thread TID. 0 or -errno. */
int arch_get_regs(pid_t tid, struct arch_regs *regs);
int arch_set_regs(pid_t tid, const struct arch_regs *regs);

/*
 * Fill CALL from SAVED so that, resumed, the thread runs syscall NR(ARGS)
 * with the instruction at IP, and no syscall restart logic applies to it.
 */
void arch_syscall_regs(struct arch_regs *call, const struct arch_regs *saved, uint64_t ip,
		       long nr, const long args[6]);

/* The return value in a thread stopped at syscall exit. */
long arch_syscall_ret(const struct arch_regs *regs);

uint64_t arch_ip(const struct arch_regs *regs);
uint64_t arch_sp(const struct arch_regs *regs);
/* The thread pointer (the TLS base: glibc's struct pthread is there). */
uint64_t arch_tls(const struct arch_regs *regs);

/* The syscall a thread is in (orig_ax), or -1 when it is not in one. */
long arch_syscall_nr(const struct arch_regs *regs);

/* Is RET one of the restart codes above? */
bool arch_is_restart(long ret);

/* What the kernel will do with REGS when the thread resumes and no signal is delivered. */
enum arch_restart arch_restart_kind(const struct arch_regs *regs);

#endif
