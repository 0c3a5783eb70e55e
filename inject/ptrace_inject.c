/*
 * Running system calls inside a seized process, and reading and writing its
 * memory (process_vm_readv/writev) and fds (pidfd_getfd).
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
 * The tool dying. The target gets PTRACE_O_EXITKILL only where a caller
 * asks for it (pt_exitkill: lazy's moves into the graveyard, where a target
 * let go would run on empty areas). Otherwise, if we die, the kernel
 * detaches it (clearing our traps and the syscall-trace flag, and
 * waking it with TIF_SIGPENDING so that its restart logic still runs) and it
 * goes on as after pt_detach, except that signals we held are lost. That is
 * harmless except in one window per injected syscall, from the
 * PTRACE_SETREGS that installs the call to the one that puts the saved
 * registers back (two resumes, two waits and a GETREGS: tens of
 * microseconds). A SIGKILL of the tool inside it leaves the thread to run
 * our syscall and then go on at the vdso with foreign registers, which will
 * crash it (pt_syscall_at: the caller's own code goes on after its
 * instruction instead; for lazy's dropper, the thread that ran the clone()
 * meets the ud2 after it and dies of SIGILL, taking the process). SIGINT,
 * SIGTERM, SIGHUP and SIGQUIT are blocked in the calling thread across the
 * window, so a Ctrl-C takes effect only once the registers are back; SIGKILL cannot be blocked, and a signal taken by
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
#include "procfs.h"
#include "ptrace.h"
#include "ptrace_stop.h"

/*
 * Put thread I's own registers back and return it to an event-stop in
 * get_signal(), in front of the restart logic of whatever it was in. AT_ENTRY:
 * it is stopped at the entry of our syscall, which must not run.
 */
static int put_back(struct pt *p, int i, bool at_entry)
{
	struct pt_tstate *st = p->th[i].st;
	int r;

	if (at_entry) {
		struct arch_regs skip = st->regs;

		/* orig_rax = -1 at syscall entry: the kernel skips the call */
		skip.r.orig_rax = (unsigned long long)-1;
		r = arch_set_regs(p->th[i].tid, &skip);
		if (r == 0)
			r = pt_run_to(p, i, PTRACE_SYSCALL, PT_STOP_SYSCALL, false);
		if (r)
			return r;
	}
	r = arch_set_regs(p->th[i].tid, &st->regs);
	if (r) {
		if (r == -ESRCH)
			p->gone = 1;
		return r;
	}
	if (st->stop == PT_STOP_EVENT)
		return 0;
	r = pt_req(p, i, PTRACE_INTERRUPT, NULL, NULL);
	if (r == 0)
		r = pt_run_to(p, i, PTRACE_CONT, PT_STOP_EVENT, false);
	return r;
}

/* Run syscall NR(ARGS) once in thread I, at the instruction at IP; its result in *RES. */
static int inject_once(struct pt *p, int i, uint64_t ip, long nr, const long args[6], long *res)
{
	struct pt_thread *th = &p->th[i];
	struct arch_regs call, out;
	sigset_t block, old;
	bool at_entry = false;
	int r, r2;

	arch_syscall_regs(&call, &th->st->regs, ip, nr, args);
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
		r = pt_run_to(p, i, PTRACE_SYSCALL, PT_STOP_SYSCALL, true);
		at_entry = r == 0;
	}
	if (r == 0) {
		r = pt_run_to(p, i, PTRACE_SYSCALL, PT_STOP_SYSCALL, false);
		if (r == 0)
			at_entry = false;
	}
	if (r == 0)
		r = arch_get_regs(th->tid, &out);
	if (r == 0 && arch_ip(&out) != ip + ARCH_SYSCALL_INSN_LEN)
		r = -EIO;
	if (r == 0)
		*res = arch_syscall_ret(&out);
	if (p->test_die)
		raise(SIGKILL);	/* in the window, as a kill of the tool can come */
	if (r == -ESRCH || p->gone || th->st->gone) {
		p->gone = 1;
		r2 = -ESRCH;
	} else {
		r2 = put_back(p, i, at_entry);
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
			struct procfs_vma v;
			bool vdso;

			line[strcspn(line, "\n")] = '\0';
			if (procfs_parse_maps_line(line, &v) < 0 || v.perms[0] != 'r' ||
			    v.perms[2] != 'x')
				continue;
			if (!strcmp(v.name, "[vsyscall]"))
				continue;	/* emulated, not a real syscall insn */
			vdso = !strcmp(v.name, "[vdso]");
			if (vdso != (pass == 0))
				continue;
			r = scan_for_insn(p, v.start, v.end - v.start, &p->syscall_ip);
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

/* Run NR(ARGS) in held thread I at IP (0: the syscall instruction found in the target). */
static int run(struct pt *p, int i, uint64_t ip, long *ret, long nr, const long args[6])
{
	long res = 0;
	int n, r;

	if (i < 0 || i >= p->nr_threads)
		return -EINVAL;
	if (p->gone || p->th[i].st->gone || !p->th[i].stopped)
		return -ESRCH;
	if (!ip && !p->syscall_ip) {
		r = find_syscall_insn(p);
		if (r && arch_get_regs(p->th[0].tid, &(struct arch_regs){ 0 }) == -ESRCH) {
			/* no maps to search: it was killed */
			p->gone = 1;
			r = -ESRCH;
		}
		if (r)
			return r;
	}
	if (!ip)
		ip = p->syscall_ip;
	if (p->th[i].st->nheld >= PT_HELD_LIMIT)
		return -EAGAIN;	/* let pt_detach deliver what we hold first */
	for (n = 0;; n++) {
		r = inject_once(p, i, ip, nr, args, &res);
		if (r)
			return r;
		/* cut short by a signal (now held): our registers are gone, run it again */
		if (!arch_is_restart(res) || n == PT_MAX_RESTARTS)
			break;
	}
	*ret = arch_is_restart(res) ? -EINTR : res;
	return 0;
}

int pt_syscall_in(struct pt *p, int i, long *ret, long nr, long a1, long a2, long a3, long a4,
		  long a5, long a6)
{
	const long args[6] = { a1, a2, a3, a4, a5, a6 };

	return run(p, i, 0, ret, nr, args);
}

int pt_syscall_at(struct pt *p, int i, uint64_t ip, long *ret, long nr, const long args[6])
{
	if (!ip)
		return -EINVAL;
	return run(p, i, ip, ret, nr, args);
}

int pt_syscall(struct pt *p, long *ret, long nr, long a1, long a2, long a3, long a4, long a5,
	       long a6)
{
	if (!p->nr_threads)
		return -EINVAL;
	return pt_syscall_in(p, 0, ret, nr, a1, a2, a3, a4, a5, a6);
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

#ifndef PTRACE_GETSIGMASK
#define PTRACE_GETSIGMASK	0x420a
#define PTRACE_SETSIGMASK	0x420b
#endif

int pt_sigmask(struct pt *p, int i, uint64_t *old, const uint64_t *set)
{
	uint64_t m;
	int r;

	if (i < 0 || i >= p->nr_threads)
		return -EINVAL;
	if (p->gone || p->th[i].st->gone || !p->th[i].stopped)
		return -ESRCH;
	if (old) {
		r = pt_req(p, i, PTRACE_GETSIGMASK, (void *)sizeof(m), &m);
		if (r)
			return r;
		*old = m;
	}
	if (set) {
		m = *set;
		r = pt_req(p, i, PTRACE_SETSIGMASK, (void *)sizeof(m), &m);
		if (r)
			return r;
	}
	return 0;
}
