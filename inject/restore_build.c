/*
 * The tracer side of a restore: see restore_build.h.
 */
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <unistd.h>

#include "handover.h"
#include "restore_build.h"
#include "restore_remote.h"
#include "restore_plan.h"
#include "uffd_compat.h"
#include "wire.h"

#ifndef NT_X86_XSTATE
#define NT_X86_XSTATE	0x202
#endif
#ifndef PTRACE_SETSIGMASK
#define PTRACE_SETSIGMASK	0x420b
#endif
#ifndef PTRACE_GET_RSEQ_CONFIGURATION
#define PTRACE_GET_RSEQ_CONFIGURATION	0x420f
#endif
#ifndef PR_SET_MM_MAP
#define PR_SET_MM_MAP	14
#endif

#define RS_WRITE_CHUNK	(64ull << 20)
#define RS_REMOTE_CHUNK	(4ull << 20)	/* --page-server: fetched and written at a time */
#define RS_ERESTARTNOINTR		513
#define RS_ERESTART_RESTARTBLOCK	516

struct prctl_mm_map_ {
	uint64_t start_code, end_code, start_data, end_data, start_brk, brk, start_stack;
	uint64_t arg_start, arg_end, env_start, env_end;
	uint64_t auxv;
	uint32_t auxv_size;
	uint32_t exe_fd;
};

struct rseq_conf {
	uint64_t rseq_abi_pointer;
	uint32_t rseq_abi_size;
	uint32_t signature;
	uint32_t flags;
	uint32_t pad;
};

/* Run NR in the helper's thread PTI; a failed call is a failed restore naming WHAT. */
static int sys_in(struct rs *r, int pti, long *res, const char *what, long nr, long a1, long a2,
		  long a3, long a4, long a5, long a6)
{
	long ret = 0;
	int e = pt_syscall_in(&r->pt, pti, &ret, nr, a1, a2, a3, a4, a5, a6);

	r->st->syscalls++;
	if (e < 0)
		return rs_fail(r, e, "%s: cannot run it in the helper: %s", what, strerror(-e));
	if (ret < 0 && ret > -4096)
		return rs_fail(r, (int)-ret, "%s: %s", what, strerror((int)-ret));
	if (res)
		*res = ret;
	return 0;
}

/* The same in its main thread. */
static int sys(struct rs *r, long *res, const char *what, long nr, long a1, long a2, long a3,
	       long a4, long a5, long a6)
{
	return sys_in(r, 0, res, what, nr, a1, a2, a3, a4, a5, a6);
}

/* Unmap all the helper has but the trampoline and the special areas. */
static int empty_helper(struct rs *r)
{
	struct procfs_maps m;
	char why[256], what[96];
	int ret;

	memset(&m, 0, sizeof(m));
	ret = restore_plan_read_maps(r->child, &m, why, sizeof(why));
	if (ret < 0)
		return rs_fail(r, ret, "%s", why);
	for (size_t i = 0; i < m.n && ret == 0; i++) {
		const struct procfs_vma *v = &m.v[i];
		bool keep = v->start >= r->tramp && v->end <= r->tramp + 2 * RS_PAGE;

		for (int k = 0; k < r->nsp; k++)
			keep |= v->start == r->sp[k].from;
		if (keep || v->start >= RS_TASK_TOP)
			continue;
		snprintf(what, sizeof(what), "munmap 0x%" PRIx64 "-0x%" PRIx64, v->start, v->end);
		ret = sys(r, NULL, what, SYS_munmap, (long)v->start, (long)(v->end - v->start), 0,
			  0, 0, 0);
	}
	procfs_maps_free(&m);
	return ret;
}

/* Move the vdso and vvar areas to their dumped addresses (through a free spot if they overlap). */
static int move_specials(struct rs *r)
{
	uint64_t lo = UINT64_MAX, hi = 0, span, tmp;
	char what[96];
	int ret;

	for (int k = 0; k < r->nsp; k++) {
		if (r->sp[k].to < lo)
			lo = r->sp[k].to;
		if (r->sp[k].to + r->sp[k].len > hi)
			hi = r->sp[k].to + r->sp[k].len;
	}
	span = hi - lo;
	/* First out of the way of every final place, just above the trampoline. */
	tmp = r->tramp + (1ull << 20) - span - RS_PAGE;
	if (span + 2 * RS_PAGE > (1ull << 20))
		return rs_fail(r, ENOTSUP, "vdso/vvar areas are spread too far");
	for (int k = 0; k < r->nsp; k++) {
		uint64_t at = tmp + (r->sp[k].to - lo);

		if (r->sp[k].from == r->sp[k].to)
			continue;
		snprintf(what, sizeof(what), "mremap vdso/vvar 0x%" PRIx64 " to 0x%" PRIx64,
			 r->sp[k].from, at);
		ret = sys(r, NULL, what, SYS_mremap, (long)r->sp[k].from, (long)r->sp[k].len,
			  (long)r->sp[k].len, MREMAP_MAYMOVE | MREMAP_FIXED, (long)at, 0);
		if (ret < 0)
			return ret;
		r->sp[k].from = at;
	}
	for (int k = 0; k < r->nsp; k++) {
		if (r->sp[k].from == r->sp[k].to)
			continue;
		snprintf(what, sizeof(what), "mremap vdso/vvar to 0x%" PRIx64, r->sp[k].to);
		ret = sys(r, NULL, what, SYS_mremap, (long)r->sp[k].from, (long)r->sp[k].len,
			  (long)r->sp[k].len, MREMAP_MAYMOVE | MREMAP_FIXED, (long)r->sp[k].to, 0);
		if (ret < 0)
			return ret;
		r->sp[k].from = r->sp[k].to;
	}
	return 0;
}

static uint64_t pg_down(uint64_t a)
{
	return a & ~(RS_PAGE - 1);
}

static uint64_t pg_up(uint64_t a)
{
	return (a + RS_PAGE - 1) & ~(RS_PAGE - 1);
}

/*
 * The pages written before the process runs, besides every page that is not
 * lazy: what the kernel reads for others (argv, env, auxv), and of every
 * thread the stack under its stack pointer and its rseq area. Into X (room
 * for 2 + 2 * R->nth ranges); returns how many.
 */
static int eager_extra(const struct rs *r, uint64_t x[][2])
{
	const MmEntry *mm = r->task.mm;
	int n = 0;

	if (mm->mm_start_stack && mm->mm_env_end > mm->mm_start_stack &&
	    mm->mm_env_end - mm->mm_start_stack < (64ull << 20)) {
		x[n][0] = pg_down(mm->mm_start_stack);
		x[n][1] = pg_up(mm->mm_env_end);
		n++;
	}
	if (mm->mm_arg_start < mm->mm_env_end) {
		x[n][0] = pg_down(mm->mm_arg_start);
		x[n][1] = pg_up(mm->mm_env_end);
		n++;
	}
	for (size_t i = 0; i < r->nth; i++) {
		const CoreEntry *c = r->th[i].core;
		const RseqEntry *rs = rs_rseq(c);
		uint64_t sp = c->thread_info->gpregs->sp;

		x[n][0] = pg_down(sp - 256 > sp ? 0 : sp - 256);
		x[n][1] = pg_up(sp + 1) + RS_PAGE;
		n++;
		if (rs) {
			x[n][0] = pg_down(rs->rseq_abi_pointer);
			x[n][1] = pg_up(rs->rseq_abi_pointer + rs->rseq_abi_size);
			n++;
		}
	}
	return n;
}

/* Sort the ranges of EXTRA by start and merge those that touch; returns how many are left. */
static int merge_ranges(uint64_t x[][2], int n)
{
	int m = 0;

	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && x[j][0] < x[j - 1][0]; j--) {
			uint64_t t0 = x[j][0], t1 = x[j][1];

			x[j][0] = x[j - 1][0];
			x[j][1] = x[j - 1][1];
			x[j - 1][0] = t0;
			x[j - 1][1] = t1;
		}
	for (int i = 0; i < n; i++) {
		if (x[i][0] >= x[i][1])
			continue;
		if (m && x[i][0] <= x[m - 1][1]) {
			if (x[i][1] > x[m - 1][1])
				x[m - 1][1] = x[i][1];
			continue;
		}
		x[m][0] = x[i][0];
		x[m][1] = x[i][1];
		m++;
	}
	return m;
}

/* Work out the extra eager ranges once, merged: for_eager runs twice per area. */
static int plan_extra(struct rs *r)
{
	r->extra = calloc(2 + 2 * r->nth, sizeof(*r->extra));
	if (!r->extra)
		return rs_fail(r, ENOMEM, "out of memory");
	r->nextra = merge_ranges(r->extra, eager_extra(r, r->extra));
	return 0;
}

/* Write [A, A+LEN) of RUN into the process, in chunks. */
static int put_pages(struct rs *r, const struct pm_run *run, uint64_t base, uint64_t a,
		     uint64_t len)
{
	for (uint64_t n = 0; n < len; n += RS_WRITE_CHUNK) {
		uint64_t k = len - n < RS_WRITE_CHUNK ? len - n : RS_WRITE_CHUNK;
		int ret = pt_write(&r->pt, a + n, run->pf->base + run->off + (a - base) + n, k);

		if (ret < 0)
			return rs_fail(r, ret, "write pages at 0x%" PRIx64 ": %s", a + n,
				     strerror(-ret));
	}
	r->st->eager_pages += len / RS_PAGE;
	return 0;
}

/*
 * Write [A, A+LEN), which the images hold no data of (a copy without pages
 * files), fetched from --page-server.
 */
int rs_fetch(struct rs *r, uint64_t a, uint64_t len, uint8_t *buf)
{
	char why[600];
	int ret = 0;

	if (!r->ps && (ret = rsr_open(r->o->page_server, &r->o->tls, &r->ps, why, sizeof(why))) < 0)
		return rs_fail(r, -ret, "%s", why);
	ret = rsr_get(r->ps, r->pid, a, len / RS_PAGE, buf, why, sizeof(why));
	return ret < 0 ? rs_fail(r, -ret, "%s", why) : 0;
}

static int put_remote(struct rs *r, uint64_t a, uint64_t len)
{
	uint8_t *buf;
	int ret = 0;

	buf = malloc(len < RS_REMOTE_CHUNK ? len : RS_REMOTE_CHUNK);
	if (!buf)
		return rs_fail(r, ENOMEM, "out of memory");
	for (uint64_t n = 0; n < len && ret == 0; n += RS_REMOTE_CHUNK) {
		uint64_t k = len - n < RS_REMOTE_CHUNK ? len - n : RS_REMOTE_CHUNK;

		ret = rs_fetch(r, a + n, k, buf);
		if (ret < 0)
			break;
		ret = pt_write(&r->pt, a + n, buf, k);
		if (ret < 0)
			ret = rs_fail(r, -ret, "write pages at 0x%" PRIx64 ": %s", a + n, strerror(-ret));
	}
	free(buf);
	if (ret == 0)
		r->st->eager_pages += len / RS_PAGE;
	return ret;
}

/*
 * Write [A, A+LEN) of RUN (at BASE). With --page-server, the pages the top
 * image holds (or has no data for) come from the page server, and its pages
 * file is never read (on the destination host it may be a sparse stand-in of
 * the same size); pages held in a parent image (a pre-copy round, copied
 * whole) come from there.
 */
static int put_run(struct rs *r, const struct pm_run *run, uint64_t base, uint64_t a, uint64_t len)
{
	if (r->o->page_server && (run->src == PM_NODATA || (run->flags & PE_PRESENT)))
		return put_remote(r, a, len);
	return put_pages(r, run, base, a, len);
}

/*
 * Poison [A, A+LEN), pages the dump could not read, so that a touch gives
 * SIGBUS as it did where it was dumped: through a userfaultfd made in the
 * process for this alone (registered, UFFDIO_POISON, unregistered, closed;
 * the poison stays in the page table without it).
 */
static int put_poison(struct rs *r, uint64_t a, uint64_t len)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { .range = { a, len }, .mode = UFFDIO_REGISTER_MODE_MISSING };
	struct uffdio_range un = { a, len };
	long tfd;
	int ufd, ret;

	ret = sys(r, &tfd, "userfaultfd (for poisoned pages)", SYS_userfaultfd,
		  O_CLOEXEC | O_NONBLOCK, 0, 0, 0, 0, 0);
	if (ret < 0)
		return ret;
	ufd = pt_getfd(&r->pt, (int)tfd);
	if (ufd < 0) {
		ret = rs_fail(r, -ufd, "pidfd_getfd of the poisoning userfaultfd: %s", strerror(-ufd));
	} else if (ioctl(ufd, UFFDIO_API, &api) < 0 || ioctl(ufd, UFFDIO_REGISTER, &reg) < 0) {
		ret = rs_fail(r, errno, "userfaultfd for the poisoned pages at 0x%" PRIx64 ": %s",
			      a, strerror(errno));
	} else {
		for (uint64_t n = 0; n < len && ret == 0;) {
			struct uffdio_poison p = { .range = { a + n, len - n } };

			if (ioctl(ufd, UFFDIO_POISON, &p) == 0)
				n = len;
			else if (errno == EAGAIN && p.updated > 0)
				n += (uint64_t)p.updated;
			else
				ret = rs_fail(r, errno, "UFFDIO_POISON 0x%" PRIx64 " +%" PRIu64 ": %s%s",
					      a + n, len - n, strerror(errno),
					      errno == EINVAL || errno == ENOTTY ?
					      " (Linux 6.6 or later is needed for poisoned pages)" : "");
		}
		ioctl(ufd, UFFDIO_UNREGISTER, &un);
	}
	if (ufd >= 0)
		close(ufd);
	if (sys(r, NULL, "close the poisoning userfaultfd", SYS_close, tfd, 0, 0, 0, 0, 0) < 0 &&
	    ret == 0)
		ret = -EIO;
	if (ret == 0)
		r->st->poisoned_pages += len / RS_PAGE;
	return ret;
}

/*
 * Write the eager pages of area V (WRITE), or only say whether it has any
 * (returns 1). Costs one step per pagemap run, whatever the size.
 */
static int for_eager(struct rs *r, const VmaEntry *v, bool write)
{
	uint64_t (*extra)[2] = r->extra;
	int nx = r->nextra;
	uint64_t a = v->start;
	int ret;

	while (a < v->end) {
		struct pm_run run;
		uint64_t len, done = 0;

		pagemap_resolve(r->task.pm, a, v->end - a, &run);
		len = run.len ? run.len : RS_PAGE;
		if (run.src == PM_NODATA && !r->o->page_server)
			return rs_fail(r, ENOTSUP, "page 0x%" PRIx64 " is not in these images "
				     "(a remote dump): restore it with --page-server", a);
		/* Poisoned: the manager poisons lazy ones; the rest are poisoned here. */
		if (run.src == PM_POISON) {
			if (write && !r->o->eager && (run.flags & PE_LAZY))
				r->st->lazy_pages += len / RS_PAGE;
			else if (write && (ret = put_poison(r, a, len)) < 0)
				return ret;
			a += len;
			continue;
		}
		if (run.src != PM_DATA && run.src != PM_NODATA) {
			a += len;
			continue;
		}
		if (r->o->eager || !(run.flags & PE_LAZY)) {
			if (!write)
				return 1;
			ret = put_run(r, &run, a, a, len);
			if (ret < 0)
				return ret;
			a += len;
			continue;
		}
		/* Lazy: only where it meets the extra ranges. */
		for (int i = 0; i < nx; i++) {
			uint64_t s = extra[i][0] > a ? extra[i][0] : a;
			uint64_t e = extra[i][1] < a + len ? extra[i][1] : a + len;

			if (s >= e)
				continue;
			if (!write)
				return 1;
			ret = put_run(r, &run, a, s, e - s);
			if (ret < 0)
				return ret;
			done += e - s;
		}
		if (write)
			r->st->lazy_pages += (len - done) / RS_PAGE;
		a += len;
	}
	return 0;
}

static bool skip_area(const VmaEntry *v)
{
	return v->status & (VMA_AREA_VDSO | VMA_AREA_VVAR | VMA_AREA_VSYSCALL);
}

/*
 * Map area V of shared memory object K (restore_shm.h) where it was, and
 * count its pages the manager will serve.
 */
static int map_shm(struct rs *r, const VmaEntry *v, int k)
{
	const struct shm_obj *o = &r->shm->set->obj[k];
	long flags = MAP_FIXED | MAP_SHARED, res;
	char what[128];
	int ret;

	if (v->flags & MAP_NORESERVE)
		flags |= MAP_NORESERVE;
	snprintf(what, sizeof(what), "mmap 0x%" PRIx64 "-0x%" PRIx64 " of %s \"%.40s\" at 0x%"
		 PRIx64, v->start, v->end, o->anon ? "shared anonymous memory" : "memfd", o->name,
		 v->pgoff);
	ret = sys(r, &res, what, SYS_mmap, (long)v->start, (long)(v->end - v->start),
		  (long)v->prot, flags, r->rep.shmfd[k], (long)v->pgoff);
	if (ret < 0)
		return ret;
	if ((uint64_t)res != v->start)
		return rs_fail(r, EFAULT, "%s: mapped at 0x%lx", what, res);
	for (uint64_t a = v->start; a < v->end;) {
		struct pm_run run;

		pagemap_resolve(r->task.pm, a, v->end - a, &run);
		if (run.src == PM_DATA && (run.flags & PE_LAZY))
			r->st->lazy_pages += run.len / RS_PAGE;
		a += run.len;
	}
	return 0;
}

/* Map every dumped area where it was. */
static int map_areas(struct rs *r)
{
	const MmEntry *mm = r->task.mm;
	char what[384];
	int ret;

	for (size_t i = 0; i < mm->n_vmas; i++) {
		const VmaEntry *v = mm->vmas[i];
		long flags = MAP_FIXED, fd = -1, res;
		uint32_t prot = v->prot;
		int shm;

		if (skip_area(v))
			continue;
		if (v->end >= RS_TASK_TOP || v->start >= v->end)
			return rs_fail(r, ENOTSUP, "area 0x%" PRIx64 "-0x%" PRIx64 " is out of range",
				     v->start, v->end);
		if (v->status & VMA_ANON_SHARED)
			return rs_fail(r, ENOTSUP, "area 0x%" PRIx64 " is shared anonymous memory: "
				     "not supported", v->start);
		shm = rs_shm_obj(r, v);
		if (shm >= 0 && (v->status & VMA_FILE_SHARED)) {
			/* The object made for the whole restore: its contents are in it, or lazy. */
			ret = map_shm(r, v, shm);
			if (ret < 0)
				return ret;
			continue;
		}
		ret = for_eager(r, v, false);
		if (ret < 0)
			return ret;
		if (ret == 1 && !(prot & PROT_WRITE)) {
			prot |= PROT_WRITE;
			r->vma_wr[i] = true;
		}
		if (v->status & VMA_ANON_PRIVATE) {
			/* Hugetlb as dumped: its huge page size in the flags. */
			flags |= MAP_PRIVATE | MAP_ANONYMOUS |
				 (v->flags & (VMA_MAP_HUGETLB | VMA_MAP_HUGE_MASK));
		} else if (shm >= 0) {
			/* A memfd mapped private: the object made for the restore, copied on write. */
			flags |= MAP_PRIVATE;
			fd = r->rep.shmfd[shm];
		} else if (r->vma_mf[i] >= 0) {
			flags |= v->status & VMA_FILE_SHARED ? MAP_SHARED : MAP_PRIVATE;
			fd = r->rep.mapfd[r->vma_mf[i]];
		} else {
			return rs_fail(r, ENOTSUP, "area 0x%" PRIx64 ": unknown kind (status 0x%x)",
				     v->start, v->status);
		}
		if (v->flags & MAP_GROWSDOWN)
			flags |= MAP_GROWSDOWN;
		for (size_t k = 0; k < r->core->tc->n_uffd_noreserve; k++)
			if (r->core->tc->uffd_noreserve[k] == v->start)
				flags |= MAP_NORESERVE;
		snprintf(what, sizeof(what), "mmap 0x%" PRIx64 "-0x%" PRIx64 "%s%s", v->start,
			 v->end, fd >= 0 ? " of " : "", fd < 0 ? "" : shm >= 0 ?
			 r->shm->set->obj[shm].name : r->mf[r->vma_mf[i]].re->name);
		ret = sys(r, &res, what, SYS_mmap, (long)v->start, (long)(v->end - v->start),
			  (long)prot, flags, fd, fd >= 0 ? (long)v->pgoff : 0);
		if (ret < 0)
			return ret;
		if ((uint64_t)res != v->start)
			return rs_fail(r, EFAULT, "%s: mapped at 0x%lx", what, res);
	}
	return 0;
}

/* Write the eager pages, then give the areas their own protection and madvise state. */
static int fill_areas(struct rs *r)
{
	const MmEntry *mm = r->task.mm;
	char what[96];
	int ret;

	for (size_t i = 0; i < mm->n_vmas; i++) {
		const VmaEntry *v = mm->vmas[i];

		if (skip_area(v) || (rs_shm_obj(r, v) >= 0 && (v->status & VMA_FILE_SHARED)))
			continue;
		ret = for_eager(r, v, true);
		if (ret < 0)
			return ret;
	}
	for (size_t i = 0; i < mm->n_vmas; i++) {
		const VmaEntry *v = mm->vmas[i];

		if (skip_area(v))
			continue;
		if (r->vma_wr[i]) {
			snprintf(what, sizeof(what), "mprotect 0x%" PRIx64, v->start);
			ret = sys(r, NULL, what, SYS_mprotect, (long)v->start,
				  (long)(v->end - v->start), (long)v->prot, 0, 0, 0);
			if (ret < 0)
				return ret;
		}
		for (int b = 0; v->has_madv && b < 64; b++) {
			if (!(v->madv & (1ull << b)))
				continue;
			snprintf(what, sizeof(what), "madvise 0x%" PRIx64 " %d", v->start, b);
			ret = sys(r, NULL, what, SYS_madvise, (long)v->start,
				  (long)(v->end - v->start), b, 0, 0, 0);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

/* The mm fields, the exe file, the saved auxv; close the files used for mapping. */
static int set_mm(struct rs *r)
{
	const MmEntry *mm = r->task.mm;
	const RegFileEntry *exe = rs_file_by_id(r, r->core->tc->uffd_exe_file_id);
	uint64_t scratch = r->tramp + RS_PAGE;
	struct prctl_mm_map_ m = {
		.start_code = mm->mm_start_code, .end_code = mm->mm_end_code,
		.start_data = mm->mm_start_data, .end_data = mm->mm_end_data,
		.start_brk = mm->mm_start_brk, .brk = mm->mm_brk,
		.start_stack = mm->mm_start_stack,
		.arg_start = mm->mm_arg_start, .arg_end = mm->mm_arg_end,
		.env_start = mm->mm_env_start, .env_end = mm->mm_env_end,
		.exe_fd = (uint32_t)-1,
	};
	size_t auxn = mm->n_mm_saved_auxv;
	char what[64];
	int ret;

	if (auxn * 8 > RS_PAGE - sizeof(m))
		return rs_fail(r, EINVAL, "saved auxv too long (%zu words)", auxn);
	for (int k = 0; k < r->nmf; k++)
		if (r->mf[k].re->uffd_ino == exe->uffd_ino)
			m.exe_fd = (uint32_t)r->rep.mapfd[k];
	m.auxv = scratch + sizeof(m);
	m.auxv_size = (uint32_t)(auxn * 8);
	ret = pt_write(&r->pt, scratch, &m, sizeof(m));
	if (ret == 0 && auxn)
		ret = pt_write(&r->pt, m.auxv, mm->mm_saved_auxv, auxn * 8);
	if (ret < 0)
		return rs_fail(r, ret, "write the scratch page: %s", strerror(-ret));
	ret = sys(r, NULL, "prctl(PR_SET_MM_MAP)", SYS_prctl, PR_SET_MM, PR_SET_MM_MAP,
		  (long)scratch, sizeof(m), 0, 0);
	if (ret < 0)
		return ret;
	for (int k = 0; k < r->nmf; k++) {
		snprintf(what, sizeof(what), "close %d", r->rep.mapfd[k]);
		ret = sys(r, NULL, what, SYS_close, r->rep.mapfd[k], 0, 0, 0, 0, 0);
		if (ret < 0)
			return ret;
	}
	for (int k = 0; k < RS_MAX_SHM; k++) {
		if (r->rep.shmfd[k] < 0)
			continue;
		snprintf(what, sizeof(what), "close %d (shared memory)", r->rep.shmfd[k]);
		ret = sys(r, NULL, what, SYS_close, r->rep.shmfd[k], 0, 0, 0, 0, 0);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Drop the helper's own rseq registration (glibc's, in memory now gone); take the dumped one. */
static int set_rseq(struct rs *r, bool dumped)
{
	const RseqEntry *rs = rs_rseq(r->core);
	struct rseq_conf rc;

	if (!dumped) {
		if (ptrace(PTRACE_GET_RSEQ_CONFIGURATION, r->child, (void *)sizeof(rc), &rc) < 0 ||
		    !rc.rseq_abi_pointer)
			return 0;
		return sys(r, NULL, "unregister the helper's rseq", SYS_rseq,
			   (long)rc.rseq_abi_pointer, rc.rseq_abi_size, 1, rc.signature, 0, 0);
	}
	if (!rs)
		return 0;
	return sys(r, NULL, "rseq", SYS_rseq, (long)rs->rseq_abi_pointer, rs->rseq_abi_size, 0,
		   rs->signature, 0, 0);
}

/* Hand the uffd to the manager, which registers the lazy areas. */
static int hand_over(struct rs *r)
{
	const char *sock = r->o->socket;
	struct handover h = {
		.socket_path = sock,
		.image_id = r->pid,
		.features = r->features,
		/* Its shared memory was left empty where the images allow it (restore_shm.h). */
		.flags = r->shm ? HELLO_F_SHM_LAZY : 0,
		.pidfd = r->pidfd,
		.dirfd = r->dirfd,
		.page_server = r->o->page_server,
		.tls = &r->o->tls,
	};
	char reason[512];
	uint64_t lazy = 0;
	int ret;

	r->uffd = pt_getfd(&r->pt, r->rep.uffd);
	if (r->uffd < 0)
		return rs_fail(r, r->uffd, "pidfd_getfd of the uffd: %s", strerror(-r->uffd));
	h.uffd = r->uffd;
	ret = handover_send(&h, &lazy, reason, sizeof(reason));
	if (ret < 0)
		return rs_fail(r, ret, "hand-over to %s: %s", sock, reason);
	return 0;
}

/*
 * The helper's ptrace options while we build it: a thread it clones is ours
 * from birth, stopped before its first user instruction (TRACECLONE); and
 * should this tool die before the end, the kernel kills the half-built
 * process rather than letting any of its threads run (EXITKILL).
 */
static int trace_clones(struct rs *r)
{
	long opts = PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL;

	if (ptrace(PTRACE_SETOPTIONS, r->child, NULL, (void *)opts) < 0)
		return rs_fail(r, errno, "PTRACE_SETOPTIONS: %s", strerror(errno));
	return 0;
}

struct clone_args_ {
	uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
	uint64_t set_tid, set_tid_size, cgroup;
};

/*
 * The tid, in our pid namespace, of the thread the helper just cloned: the
 * one in /proc/PID/task we do not hold yet (clone3 returned its tid in the
 * helper's namespace, which --pidns makes another).
 */
static pid_t new_tid(struct rs *r)
{
	char path[64];
	struct dirent *de;
	pid_t found = -1;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)r->child);
	d = opendir(path);
	while (d && (de = readdir(d))) {
		pid_t t = (pid_t)strtol(de->d_name, NULL, 10);
		int i;

		for (i = 0; t > 0 && i < r->pt.nr_threads && r->pt.th[i].tid != t; i++)
			;
		if (t > 0 && i == r->pt.nr_threads)
			found = t;
	}
	if (d)
		closedir(d);
	return found;
}

/*
 * Make the other threads: clone3 run in the helper through the trampoline,
 * each at its dumped tid when that is free (set_tid), else at any tid with
 * the reason kept. Each is born traced and stops in the kernel before its
 * first instruction (trace_clones); it waits there, with every signal
 * blocked (the helper's mask), until set_regs gives it its own registers.
 * Should it ever run on its own, it would meet the trampoline's int3 or,
 * once that is gone, an unmapped page: a fault that kills the process.
 */
static int make_threads(struct rs *r)
{
	uint64_t scratch = r->tramp + RS_PAGE;

	for (size_t i = 1; i < r->nth; i++) {
		struct rs_thread *t = &r->th[i];
		uint64_t ctid = t->core->thread_info->clear_tid_addr;
		struct clone_args_ ca = {
			.flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
				 CLONE_SYSVSEM | (ctid ? CLONE_CHILD_CLEARTID : 0),
			.child_tid = ctid,
			.set_tid = scratch + 256,
			.set_tid_size = 1,
		};
		int32_t want = (int32_t)t->tid;
		char what[64];
		long res = 0;
		int e;

		e = pt_write(&r->pt, scratch + 256, &want, sizeof(want));
		if (e == 0)
			e = pt_write(&r->pt, scratch, &ca, sizeof(ca));
		if (e < 0)
			return rs_fail(r, e, "write the scratch page: %s", strerror(-e));
		e = pt_syscall(&r->pt, &res, SYS_clone3, (long)scratch, sizeof(ca), 0, 0, 0, 0);
		r->st->syscalls++;
		if (e < 0)
			return rs_fail(r, e, "clone3 of thread %u: cannot run it in the helper: %s",
				       t->tid, strerror(-e));
		snprintf(what, sizeof(what), "clone3 of thread %u", t->tid);
		if (res < 0) {
			/* Taken (EEXIST), or not ours to choose (EPERM): any tid will do. */
			t->err = (int)-res;
			ca.set_tid = 0;
			ca.set_tid_size = 0;
			e = pt_write(&r->pt, scratch, &ca, sizeof(ca));
			if (e < 0)
				return rs_fail(r, e, "write the scratch page: %s", strerror(-e));
			e = sys(r, &res, what, SYS_clone3, (long)scratch, sizeof(ca), 0, 0, 0, 0);
			if (e < 0)
				return e;
		}
		t->now = (pid_t)res;
		t->host = r->o->pidns ? new_tid(r) : t->now;
		if (t->host <= 0)
			return rs_fail(r, ESRCH, "thread %u (tid %d): not found in /proc/%d/task",
				       t->tid, (int)t->now, (int)r->child);
		t->pti = pt_adopt(&r->pt, t->host);
		if (t->pti < 0)
			return rs_fail(r, -t->pti, "thread %u (tid %d) did not stop at birth: %s",
				       t->tid, (int)t->now, strerror(-t->pti));
	}
	return 0;
}

/*
 * What a thread other than the main one had of its own besides registers:
 * its alternate signal stack, robust list, rseq area, name and parent-death
 * signal, set by system calls run in that thread (the main thread's are
 * the helper's own doing, and set_rseq's).
 */
static int set_thread(struct rs *r, const struct rs_thread *t)
{
	const ThreadCoreEntry *th = t->core->thread_core;
	const RseqEntry *rs = rs_rseq(t->core);
	uint64_t scratch = r->tramp + RS_PAGE;
	char what[96];
	int ret = 0;

	if (th->sas && !(th->sas->ss_flags & SS_DISABLE)) {
		stack_t ss = { .ss_sp = (void *)(uintptr_t)th->sas->ss_sp,
			       .ss_flags = (int)(th->sas->ss_flags & ~(uint32_t)SS_ONSTACK),
			       .ss_size = th->sas->ss_size };

		ret = pt_write(&r->pt, scratch, &ss, sizeof(ss));
		if (ret < 0)
			return rs_fail(r, ret, "write the scratch page: %s", strerror(-ret));
		snprintf(what, sizeof(what), "thread %u: sigaltstack", t->tid);
		ret = sys_in(r, t->pti, NULL, what, SYS_sigaltstack, (long)scratch, 0, 0, 0, 0, 0);
	}
	if (ret == 0 && th->futex_rla) {
		snprintf(what, sizeof(what), "thread %u: set_robust_list", t->tid);
		ret = sys_in(r, t->pti, NULL, what, SYS_set_robust_list, (long)th->futex_rla,
			     th->futex_rla_len, 0, 0, 0, 0);
	}
	if (ret == 0 && rs) {
		snprintf(what, sizeof(what), "thread %u: rseq", t->tid);
		ret = sys_in(r, t->pti, NULL, what, SYS_rseq, (long)rs->rseq_abi_pointer,
			     rs->rseq_abi_size, 0, rs->signature, 0, 0);
	}
	if (ret == 0 && th->comm && th->comm[0]) {
		char comm[16];

		snprintf(comm, sizeof(comm), "%s", th->comm);
		ret = pt_write(&r->pt, scratch, comm, sizeof(comm));
		if (ret < 0)
			return rs_fail(r, ret, "write the scratch page: %s", strerror(-ret));
		snprintf(what, sizeof(what), "thread %u: prctl(PR_SET_NAME)", t->tid);
		ret = sys_in(r, t->pti, NULL, what, SYS_prctl, PR_SET_NAME, (long)scratch, 0, 0,
			     0, 0);
	}
	if (ret == 0 && th->has_pdeath_sig && th->pdeath_sig) {
		snprintf(what, sizeof(what), "thread %u: prctl(PR_SET_PDEATHSIG)", t->tid);
		ret = sys_in(r, t->pti, NULL, what, SYS_prctl, PR_SET_PDEATHSIG,
			     (long)th->pdeath_sig, 0, 0, 0, 0);
	}
	return ret;
}

/* Make the other threads and give each its own state. */
static int make_all_threads(struct rs *r)
{
	int ret = make_threads(r);

	for (size_t i = 1; ret == 0 && i < r->nth; i++)
		ret = set_thread(r, &r->th[i]);
	return ret;
}

/*
 * Thread T's dumped registers, FPU state and signal mask: the last thing
 * before it runs.
 */
static int set_regs(struct rs *r, const struct rs_thread *t)
{
	const CoreEntry *core = t->core;
	const UserX86RegsEntry *g = core->thread_info->gpregs;
	const ProtobufCBinaryData *xs = &core->thread_info->fpregs->uffd_xstate;
	const ThreadCoreEntry *th = core->thread_core;
	struct user_regs_struct u;
	uint64_t mask = th->has_blk_sigset ? th->blk_sigset : r->core->tc->blk_sigset;
	struct iovec iov = { xs->data, xs->len };
	pid_t tid = t->host;

	memset(&u, 0, sizeof(u));
	u.r15 = g->r15; u.r14 = g->r14; u.r13 = g->r13; u.r12 = g->r12;
	u.rbp = g->bp; u.rbx = g->bx; u.r11 = g->r11; u.r10 = g->r10;
	u.r9 = g->r9; u.r8 = g->r8; u.rax = g->ax; u.rcx = g->cx;
	u.rdx = g->dx; u.rsi = g->si; u.rdi = g->di; u.orig_rax = g->orig_ax;
	u.rip = g->ip; u.cs = g->cs; u.eflags = g->flags; u.rsp = g->sp;
	/* ax and ip as the thread stopped, where the dump rewrote them for CRIU. */
	if (g->has_uffd_stopped_ax && g->has_uffd_stopped_ip) {
		u.rax = g->uffd_stopped_ax;
		u.rip = g->uffd_stopped_ip;
	}
	u.ss = g->ss; u.fs_base = g->fs_base; u.gs_base = g->gs_base;
	u.ds = g->ds; u.es = g->es; u.fs = g->fs; u.gs = g->gs;
	/*
	 * A sleep cut short with a restart block (nanosleep, poll, futex with a
	 * timeout) continues from kernel state the new thread does not have:
	 * run the same call again instead, from its start. Other restart codes
	 * the kernel acts on itself as the thread leaves its stop, as it would
	 * have in the dumped process.
	 */
	if ((long)u.orig_rax >= 0 && (long)u.rax == -RS_ERESTART_RESTARTBLOCK)
		u.rax = (unsigned long long)-RS_ERESTARTNOINTR;
	if (ptrace(PTRACE_SETREGS, tid, NULL, &u) < 0)
		return rs_fail(r, errno, "thread %u: PTRACE_SETREGS: %s", t->tid, strerror(errno));
	if (ptrace(PTRACE_SETREGSET, tid, (void *)NT_X86_XSTATE, &iov) < 0)
		return rs_fail(r, errno, "thread %u: PTRACE_SETREGSET NT_X86_XSTATE (%zu bytes): "
			       "%s", t->tid, xs->len, strerror(errno));
	if (ptrace(PTRACE_SETSIGMASK, tid, (void *)sizeof(mask), &mask) < 0)
		return rs_fail(r, errno, "thread %u: PTRACE_SETSIGMASK: %s", t->tid,
			       strerror(errno));
	return 0;
}

int restore_build(struct rs *r)
{
	char why[512];
	int ret;

	ret = pt_seize(&r->pt, r->child, why, sizeof(why));
	if (ret < 0)
		return rs_fail(r, ret, "cannot seize the helper: %s", why);
	r->seized = true;
	r->pt.syscall_ip = r->tramp;
	r->th[0].pti = 0;
	ret = trace_clones(r);
	if (ret == 0)
		ret = plan_extra(r);
	if (ret == 0)
		ret = set_rseq(r, false);
	if (ret == 0)
		ret = empty_helper(r);
	if (ret == 0)
		ret = move_specials(r);
	if (ret == 0)
		ret = map_areas(r);
	if (ret == 0)
		ret = fill_areas(r);
	if (ret == 0)
		ret = set_mm(r);
	if (ret == 0)
		ret = make_all_threads(r);
	if (ret == 0)
		ret = set_rseq(r, true);
	if (ret == 0)
		ret = sys(r, NULL, "prctl(PR_SET_PDEATHSIG)", SYS_prctl, PR_SET_PDEATHSIG,
			  r->core->thread_core->has_pdeath_sig ?
			  (long)r->core->thread_core->pdeath_sig : 0, 0, 0, 0, 0);
	if (ret == 0 && !r->o->eager)
		ret = hand_over(r);
	/* The last syscall: it returns to a stop, not to the trampoline it leaves. */
	if (ret == 0)
		ret = sys(r, NULL, "munmap the trampoline", SYS_munmap, (long)r->tramp,
			  2 * RS_PAGE, 0, 0, 0, 0);
	/* Every thread stays stopped until the detach below. */
	for (size_t i = 0; ret == 0 && i < r->nth; i++)
		ret = set_regs(r, &r->th[i]);
	if (ret == 0) {
		r->st->threads = (unsigned)r->nth;
		for (size_t i = 0; i < r->nth; i++)
			r->st->moved += r->th[i].now != (pid_t)r->th[i].tid;
	}
	/* One process: the seals that forbid new writable mappings, now that it has its own. */
	if (ret == 0 && r->shm && !r->tree)
		ret = rs_shm_seal_late(r->shm, r);
	/* Dumped in a group stop: stopped again before it runs an instruction. */
	if (ret == 0 && r->core->tc->task_state == 3 && kill(r->child, SIGSTOP) < 0)
		ret = rs_fail(r, errno, "SIGSTOP: %s", strerror(errno));
	if (ret == 0 && !r->hold) {
		ret = pt_detach(&r->pt);
		r->seized = false;
		if (ret < 0)
			return rs_fail(r, ret, "detach: %s", strerror(-ret));
	}
	return ret;
}
