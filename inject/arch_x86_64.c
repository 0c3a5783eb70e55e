/*
 * x86_64 registers for the ptrace engine.
 *
 * Syscall ABI: number in rax, arguments in rdi rsi rdx r10 r8 r9, result in
 * rax; the `syscall` instruction (0f 05) clobbers rcx and r11. The kernel
 * keeps the number of the syscall a thread is in as orig_rax (-1 outside a
 * syscall) and decides on restarts from orig_rax and rax when the thread
 * leaves the kernel.
 */
#include <errno.h>
#include <stddef.h>
#include <sys/ptrace.h>

#include "arch.h"

#if !defined(__x86_64__)
#error "uffd-inject's ptrace engine supports x86_64 only"
#endif

int arch_get_regs(pid_t tid, struct arch_regs *regs)
{
	if (ptrace(PTRACE_GETREGS, tid, NULL, &regs->r) < 0)
		return -errno;
	return 0;
}

int arch_set_regs(pid_t tid, const struct arch_regs *regs)
{
	if (ptrace(PTRACE_SETREGS, tid, NULL, &regs->r) < 0)
		return -errno;
	return 0;
}

void arch_syscall_regs(struct arch_regs *call, const struct arch_regs *saved, uint64_t ip,
		       long nr, const long args[6])
{
	*call = *saved;
	call->r.rip = ip;
	call->r.rax = (unsigned long long)nr;
	call->r.rdi = (unsigned long long)args[0];
	call->r.rsi = (unsigned long long)args[1];
	call->r.rdx = (unsigned long long)args[2];
	call->r.r10 = (unsigned long long)args[3];
	call->r.r8 = (unsigned long long)args[4];
	call->r.r9 = (unsigned long long)args[5];
	/*
	 * The thread may be stopped on its way out of a syscall that it will
	 * restart (rax = -ERESTART*): with orig_rax = -1 the kernel sees no
	 * syscall to restart and leaves our rip and rax alone.
	 */
	call->r.orig_rax = (unsigned long long)-1;
}

long arch_syscall_ret(const struct arch_regs *regs)
{
	return (long)regs->r.rax;
}

uint64_t arch_ip(const struct arch_regs *regs)
{
	return regs->r.rip;
}

uint64_t arch_sp(const struct arch_regs *regs)
{
	return regs->r.rsp;
}

uint64_t arch_tls(const struct arch_regs *regs)
{
	return regs->r.fs_base;
}

long arch_syscall_nr(const struct arch_regs *regs)
{
	return (long)regs->r.orig_rax;
}

bool arch_is_restart(long ret)
{
	return ret == -ARCH_ERESTARTSYS || ret == -ARCH_ERESTARTNOINTR ||
	       ret == -ARCH_ERESTARTNOHAND || ret == -ARCH_ERESTART_RESTARTBLOCK;
}

/*
 * Mirrors the kernel's arch_do_signal_or_restart() for the case where no
 * handler runs: ERESTARTSYS, ERESTARTNOINTR and ERESTARTNOHAND rerun the
 * syscall (rip -= 2, rax = orig_rax); ERESTART_RESTARTBLOCK runs
 * restart_syscall, which continues from current->restart_block (e.g. the
 * absolute expiry of a nanosleep). The engine does not apply this itself:
 * it restores the registers exactly and lets the kernel do it (ptrace.c).
 */
enum arch_restart arch_restart_kind(const struct arch_regs *regs)
{
	long ax = (long)regs->r.rax;

	if ((long)regs->r.orig_rax < 0)
		return ARCH_RESTART_NONE;
	if (ax == -ARCH_ERESTART_RESTARTBLOCK)
		return ARCH_RESTART_BLOCK;
	if (arch_is_restart(ax))
		return ARCH_RESTART_SAME;
	return ARCH_RESTART_NONE;
}
