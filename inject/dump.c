/*
 * Dump a live process: freeze every thread, list its areas from /proc, find
 * the pages worth keeping with PAGEMAP_SCAN (or pagemap words), copy them
 * out with process_vm_readv in large batches, drop the ones that read all
 * zero, and write CRIU images under temporary names renamed at the very end.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "dump.h"
#include "image.h"
#include "imgtask.h"
#include "inventory.pb-c.h"
#include "mm.pb-c.h"
#include "pagemap.h"
#include "pagemap.pb-c.h"
#include "pstree.pb-c.h"
#include "ptrace.h"

#ifndef PAGEMAP_SCAN
/*
 * The PAGEMAP_SCAN ioctl of /proc/PID/pagemap (Linux 6.7), as the kernel's
 * include/uapi/linux/fs.h defines it; Debian 12's headers predate it.
 */
#define PAGEMAP_SCAN	_IOWR('f', 16, struct pm_scan_arg)

#define PAGE_IS_WPALLOWED	(1 << 0)
#define PAGE_IS_WRITTEN		(1 << 1)
#define PAGE_IS_FILE		(1 << 2)
#define PAGE_IS_PRESENT		(1 << 3)
#define PAGE_IS_SWAPPED		(1 << 4)
#define PAGE_IS_PFNZERO		(1 << 5)
#define PAGE_IS_HUGE		(1 << 6)

struct page_region {
	uint64_t start;
	uint64_t end;
	uint64_t categories;
};

struct pm_scan_arg {
	uint64_t size;
	uint64_t flags;
	uint64_t start;
	uint64_t end;
	uint64_t walk_end;
	uint64_t vec;
	uint64_t vec_len;
	uint64_t max_pages;
	uint64_t category_inverted;
	uint64_t category_mask;
	uint64_t category_anyof_mask;
	uint64_t return_mask;
};
#endif

#ifndef PAGE_IS_GUARD
#define PAGE_IS_GUARD		(1 << 8)	/* Linux 6.14: MADV_GUARD_INSTALL markers */
#endif

/* /proc/PID/pagemap words (Documentation/admin-guide/mm/pagemap.rst). */
#define PM_PRESENT	(1ull << 63)
#define PM_SWAPPED	(1ull << 62)
#define PM_FILE		(1ull << 61)	/* file page or shared anonymous */
#define PM_GUARD	(1ull << 58)	/* a guard region marker (reported as swapped) */

#define DUMP_PAGE	4096ull
#define DUMP_BATCH	(4ull << 20)	/* bytes per process_vm_readv: stays in cache */
#define DUMP_NBUF	3		/* batch buffers shared with the writer thread */
#define DUMP_IOV	1024		/* IOV_MAX */
#define DUMP_REGIONS	4096		/* page_region slots per PAGEMAP_SCAN */
#define DUMP_PMWORDS	8192		/* pagemap words per pread in the fallback */
#define DUMP_KILL_WAIT	5000		/* ms to wait for a killed target to be gone */

/* The files of a dump, in the order they are renamed into place: the two that
 * make a directory look like a dump (pagemap, pstree) come last. */
enum { F_PAGES, F_MM, F_INVENTORY, F_PAGEMAP, F_PSTREE, F_NR };

/* A run of pages to read, all in one area. */
struct dump_item {
	uint64_t addr;
	uint64_t len;
	uint32_t area;
};

/*
 * The pages file writer: a thread that writes filled batch buffers in order
 * while the main thread reads the next, so the target stays frozen for about
 * the longer of reading and writing rather than their sum.
 */
struct dump_writer {
	pthread_t th;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int fd;
	uint8_t *mem;			/* DUMP_NBUF buffers of DUMP_BATCH bytes */
	struct iovec seg[DUMP_NBUF][DUMP_IOV];	/* the kept runs of pages in each */
	int nseg[DUMP_NBUF];
	uint64_t head;			/* buffers handed over */
	uint64_t tail;			/* buffers written (or skipped after an error) */
	bool stop;
	int err;			/* errno of the first failed write */
	double write_s;
};

struct dump {
	const struct dump_opts *o;
	struct dump_stats *st;
	pid_t pid;
	int dirfd;
	int pidfd;
	int pmfd;		/* /proc/PID/pagemap */
	int memfd;		/* /proc/PID/mem, opened on the first read that needs it */
	int pagesfd;
	struct pt pt;
	bool seized;
	struct core core;	/* with --kill: what restore needs besides memory */
	bool core_on;
	bool made_dir;		/* we created the directory: remove it if we fail */
	bool made[F_NR];	/* temporary file exists */
	char name[F_NR][48];	/* final names */
	char tmp[F_NR][56];

	struct procfs_maps maps;
	struct procfs_stat stat;
	uint64_t *auxv;
	size_t nauxv;
	uint32_t *tids;
	size_t ntids;
	VmaEntry *vmas;
	struct dump_area *areas;

	/* page discovery */
	bool use_scan;
	bool scan_tried;
	bool scan_no_guard;	/* the kernel knows no PAGE_IS_GUARD */
	struct page_region *regions;
	uint64_t *pmwords;

	/* the batch being gathered */
	struct dump_writer w;
	uint8_t *buf;			/* the writer's buffer being filled */
	struct iovec *riov;
	struct dump_item *items;
	size_t nitems;
	uint64_t batch;

	struct dump_pe *pe;
	size_t npe;
	size_t cappe;

	/* pages that stay resident: the kernel reads them for others */
	struct dump_range *eager;
	size_t neager;
	struct dump_range *spans;	/* where pages were found */
	size_t nspans;
	size_t capspans;

	struct timespec t_start;
	struct timespec t_frozen;
	char why[768];
};

/*
 * Set from a signal handler when the user interrupts a dump: checked between
 * batches so that an interrupted dump lets the target go and cleans up.
 * The one piece of process-wide state here, because a handler can reach no other.
 */
static volatile sig_atomic_t dump_interrupted;

static void on_signal(int sig)
{
	(void)sig;
	dump_interrupted = 1;
}

static double since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Record why the dump failed, as "pid N: ..." (the first reason wins), and return -CODE. */
static int dfail(struct dump *d, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int dfail(struct dump *d, int code, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!d->why[0]) {
		n = snprintf(d->why, sizeof(d->why), "pid %d: ", (int)d->pid);
		va_start(ap, fmt);
		vsnprintf(d->why + n, sizeof(d->why) - n, fmt, ap);
		va_end(ap);
	}
	return code > 0 ? -code : code;
}

/* Does the 4 KiB page at P hold only zero bytes? Most data pages fail on word 0. */
static bool page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;

	if (w[0] | w[511])
		return false;
	for (size_t i = 0; i < 512; i += 8)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] |
		    w[i + 7])
			return false;
	return true;
}

/* The madvise state CRIU keeps in vma_entry.madv: 1 << MADV_* per VmFlags code. */
static uint64_t vmflags_madv(uint32_t f)
{
	uint64_t m = 0;

	if (f & PFV_DC)
		m |= 1ull << MADV_DONTFORK;
	if (f & PFV_DD)
		m |= 1ull << MADV_DONTDUMP;
	if (f & PFV_MG)
		m |= 1ull << MADV_MERGEABLE;
	if (f & PFV_HG)
		m |= 1ull << MADV_HUGEPAGE;
	if (f & PFV_NH)
		m |= 1ull << MADV_NOHUGEPAGE;
	if (f & PFV_WF)
		m |= 1ull << MADV_WIPEONFORK;
	return m;
}

static bool has_suffix(const char *s, const char *suf)
{
	size_t n = strlen(s), k = strlen(suf);

	return n >= k && !strcmp(s + n - k, suf);
}

int dump_classify(const struct procfs_vma *v, VmaEntry *e, struct dump_area *a, char *why,
		  size_t len)
{
	static const VmaEntry init = VMA_ENTRY__INIT;
	const char *name = v->name ? v->name : "";
	bool shared = v->perms[3] == 's';
	unsigned long long s = v->start, t = v->end;
	uint64_t madv;

	*e = init;
	memset(a, 0, sizeof(*a));
	e->start = v->start;
	e->end = v->end;
	e->pgoff = v->pgoff;
	e->fd = -1;
	e->prot = (v->perms[0] == 'r' ? PROT_READ : 0) | (v->perms[1] == 'w' ? PROT_WRITE : 0) |
		  (v->perms[2] == 'x' ? PROT_EXEC : 0);
	madv = vmflags_madv(v->vmflags);
	if (madv) {
		e->has_madv = 1;
		e->madv = madv;
	}
	a->note_locked = v->vmflags & PFV_LO;

	if (v->vmflags & PFV_HT)
		goto refuse_ht;
	if (v->vmflags & (PFV_UM | PFV_UW | PFV_UI)) {
		snprintf(why, len, "0x%llx-0x%llx %s is registered with a userfaultfd "
			 "(VmFlags: %s): its missing pages are known only to that fd's owner",
			 s, t, name[0] ? name : "(anonymous)", v->vmflags_text);
		return -ENOTSUP;
	}
	if (v->vmflags & PFV_SS) {
		snprintf(why, len, "0x%llx-0x%llx is a shadow stack: not supported", s, t);
		return -ENOTSUP;
	}

	/* The kernel's own areas: recorded so the layout is whole, never read. */
	if (!strcmp(name, "[vvar]") || !strcmp(name, "[vvar_vclock]")) {
		e->status = VMA_AREA_VVAR | VMA_ANON_PRIVATE;
		e->flags = MAP_PRIVATE | MAP_ANONYMOUS;
		return 0;
	}
	if (!strcmp(name, "[vsyscall]")) {
		e->status = VMA_AREA_VSYSCALL | VMA_ANON_PRIVATE;
		e->flags = MAP_PRIVATE | MAP_ANONYMOUS;
		return 0;
	}
	if (!strcmp(name, "[vdso]")) {
		e->status = VMA_AREA_REGULAR | VMA_AREA_VDSO | VMA_ANON_PRIVATE;
		e->flags = MAP_PRIVATE | MAP_ANONYMOUS;
		a->kind = DUMP_ALL;
		a->pe_flags = PE_PRESENT;
		return 0;
	}
	if (v->vmflags & (PFV_PF | PFV_IO | PFV_MM)) {
		snprintf(why, len, "0x%llx-0x%llx %s maps device memory (VmFlags: %s): "
			 "its contents cannot be dumped", s, t, name[0] ? name : "(no name)",
			 v->vmflags_text);
		return -ENOTSUP;
	}
	if (shared && (!strcmp(name, "/dev/zero (deleted)") || !strncmp(name, "[anon_shmem:", 12) ||
		       !strncmp(name, "/SYSV", 5) || v->inode == 0)) {
		snprintf(why, len, "0x%llx-0x%llx %s is shared anonymous memory "
			 "(MAP_SHARED|MAP_ANONYMOUS or System V shm): not supported yet", s, t,
			 name[0] ? name : "(no name)");
		return -ENOTSUP;
	}
	if (name[0] == '[' && strcmp(name, "[heap]") && strcmp(name, "[stack]") &&
	    strncmp(name, "[stack:", 7) && strncmp(name, "[anon:", 6)) {
		snprintf(why, len, "0x%llx-0x%llx is the special mapping %s: not supported", s, t,
			 name);
		return -ENOTSUP;
	}

	if (v->inode == 0) {
		/* Anonymous private: [heap], [stack], [anon:NAME] or nameless. */
		e->status = VMA_AREA_REGULAR | VMA_ANON_PRIVATE;
		e->flags = MAP_PRIVATE | MAP_ANONYMOUS;
		if (!strcmp(name, "[heap]"))
			e->status |= VMA_AREA_HEAP;
		if (!strcmp(name, "[stack]")) {
			e->status |= VMA_AREA_STACK;
			e->flags |= MAP_GROWSDOWN;
		}
		if (v->vmflags & PFV_GD)
			e->flags |= MAP_GROWSDOWN;
		a->kind = DUMP_ANON;
		/*
		 * Never lazy: a forked child must see a wipe-on-fork area empty,
		 * not the parent's pages; a sealed area cannot be dropped; a
		 * droppable one cannot be registered with a userfaultfd.
		 */
		a->pe_flags = v->vmflags & (PFV_WF | PFV_SL | PFV_DP) ? PE_PRESENT :
			      PE_LAZY | PE_PRESENT;
		return 0;
	}

	e->shmid = v->inode;
	if (shared) {
		if (has_suffix(name, " (deleted)")) {
			snprintf(why, len, "0x%llx-0x%llx is a shared mapping of the deleted file "
				 "%s: its contents would be lost", s, t, name);
			return -ENOTSUP;
		}
		e->status = VMA_AREA_REGULAR | VMA_FILE_SHARED;
		e->flags = MAP_SHARED;
		return 0;
	}
	e->status = VMA_AREA_REGULAR | VMA_FILE_PRIVATE;
	e->flags = MAP_PRIVATE;
	if (v->vmflags & PFV_GD)
		e->flags |= MAP_GROWSDOWN;
	a->kind = DUMP_COW;
	a->pe_flags = PE_PRESENT;
	return 0;

refuse_ht:
	snprintf(why, len, "0x%llx-0x%llx %s is hugetlb memory: not supported", s, t,
		 name[0] ? name : "(no name)");
	return -ENOTSUP;
}

/* Open the pidfd first: it pins the identity of the target for the whole dump. */
static int open_target(struct dump *d)
{
	d->pidfd = (int)syscall(SYS_pidfd_open, d->pid, 0);
	if (d->pidfd >= 0)
		return 0;
	if (errno == ESRCH)
		return dfail(d, ESRCH, "no such process");
	if (errno == EINVAL)
		return dfail(d, EINVAL, "not a process (a thread id?)");
	return dfail(d, errno, "pidfd_open: %s", strerror(errno));
}

/* Create DIR if it is missing, open it, and refuse one that already holds a dump. */
static int open_dir(struct dump *d)
{
	const char *dir = d->o->dir;

	if (mkdir(dir, 0700) == 0)
		d->made_dir = true;
	else if (errno != EEXIST)
		return dfail(d, errno, "%s: mkdir: %s", dir, strerror(errno));
	d->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d->dirfd < 0)
		return dfail(d, errno, "%s: %s", dir, strerror(errno));
	snprintf(d->name[F_PAGES], sizeof(d->name[0]), "pages-1.img");
	snprintf(d->name[F_MM], sizeof(d->name[0]), "mm-%d.img", (int)d->pid);
	snprintf(d->name[F_INVENTORY], sizeof(d->name[0]), "inventory.img");
	snprintf(d->name[F_PAGEMAP], sizeof(d->name[0]), "pagemap-%d.img", (int)d->pid);
	snprintf(d->name[F_PSTREE], sizeof(d->name[0]), "pstree.img");
	for (int i = F_NR - 1; i >= 0; i--) {
		snprintf(d->tmp[i], sizeof(d->tmp[0]), "%s.part", d->name[i]);
		if (faccessat(d->dirfd, d->name[i], F_OK, AT_SYMLINK_NOFOLLOW) == 0)
			return dfail(d, EEXIST, "%s already holds a dump (%s): use an empty "
				     "directory", dir, d->name[i]);
	}
	return 0;
}

/* Read what /proc says, with the target frozen. */
static int read_proc(struct dump *d)
{
	char why[512];
	int ret;

	ret = procfs_read_tasks(d->pid, &d->tids, &d->ntids, why, sizeof(why));
	if (ret == 0)
		ret = procfs_read_stat(d->pid, &d->stat, why, sizeof(why));
	if (ret == 0)
		ret = procfs_read_auxv(d->pid, &d->auxv, &d->nauxv, why, sizeof(why));
	if (ret == 0)
		ret = procfs_read_maps(d->pid, &d->maps, why, sizeof(why));
	if (ret < 0)
		return dfail(d, ret, "%s", why);
	return 0;
}

/*
 * Refuse a target whose memory another process shares (clone(CLONE_VM)
 * without CLONE_THREAD, or a vfork child that has not exec'd yet): that
 * process is not frozen, so it could write after the dump.
 */
static int check_mm_shared(struct dump *d)
{
	DIR *dir = opendir("/proc");
	struct dirent *de;
	int ret = 0;

	if (!dir)
		return dfail(d, errno, "/proc: %s", strerror(errno));
	while (ret == 0 && (de = readdir(dir))) {
		char *end;
		long other = strtol(de->d_name, &end, 10);

		if (*end || other <= 0 || other == d->pid || other == getpid())
			continue;
		if (syscall(SYS_kcmp, d->pid, (pid_t)other, KCMP_VM, 0, 0) == 0)
			ret = dfail(d, ENOTSUP, "pid %ld shares its memory (clone with CLONE_VM, "
				    "or a vfork child that has not exec'd): it cannot be frozen "
				    "with it", other);
	}
	closedir(dir);
	return ret;
}

/* Turn every area into a vma_entry; refuse before anything is written. */
static int classify_all(struct dump *d)
{
	char why[512];

	d->vmas = calloc(d->maps.n ? d->maps.n : 1, sizeof(*d->vmas));
	d->areas = calloc(d->maps.n ? d->maps.n : 1, sizeof(*d->areas));
	if (!d->vmas || !d->areas)
		return dfail(d, ENOMEM, "out of memory");
	for (size_t i = 0; i < d->maps.n; i++) {
		const struct procfs_vma *v = &d->maps.v[i];

		if (dump_classify(v, &d->vmas[i], &d->areas[i], why, sizeof(why)) < 0)
			return dfail(d, ENOTSUP, "cannot dump: %s", why);
		if (d->areas[i].note_locked && d->o->no_locked)
			return dfail(d, ENOTSUP, "0x%" PRIx64 "-0x%" PRIx64 " %s is locked in "
				     "memory (mlock): its pages cannot be handed over", v->start,
				     v->end, v->name[0] ? v->name : "(anonymous)");
		if (d->areas[i].note_locked)
			fprintf(stderr, "uffd-inject: note: pid %d: 0x%" PRIx64 "-0x%" PRIx64
				" %s is locked in memory; dumped, but the images do not record "
				"the lock\n", (int)d->pid, v->start, v->end,
				v->name[0] ? v->name : "(anonymous)");
	}
	d->st->vmas = d->maps.n;
	return 0;
}

bool dump_range_has(const struct dump_range *r, size_t n, uint64_t addr)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (addr < r[mid].start)
			hi = mid;
		else if (addr >= r[mid].end)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

static int range_cmp(const void *a, const void *b)
{
	const struct dump_range *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* Add [START, END) rounded out to pages and clipped to the area holding ADDR. */
static int eager_add(struct dump *d, uint64_t addr, uint64_t start, uint64_t end)
{
	struct dump_range *nr;

	start &= ~(DUMP_PAGE - 1);
	end = (end + DUMP_PAGE - 1) & ~(DUMP_PAGE - 1);
	for (size_t i = 0; i < d->maps.n; i++) {
		const VmaEntry *v = &d->vmas[i];

		if (addr < v->start || addr >= v->end)
			continue;
		if (start < v->start)
			start = v->start;
		if (end > v->end)
			end = v->end;
		if (start >= end)
			return 0;
		nr = realloc(d->eager, (d->neager + 1) * sizeof(*nr));
		if (!nr)
			return dfail(d, ENOMEM, "out of memory");
		d->eager = nr;
		d->eager[d->neager++] = (struct dump_range){ start, end, (uint32_t)i };
		return 0;
	}
	return 0;	/* not mapped: nothing to keep */
}

/* Count the strings in the target's argument and environment areas. */
static uint64_t count_strings(struct dump *d, uint64_t start, uint64_t end)
{
	uint8_t buf[4096];
	uint64_t n = 0;

	if (end - start > (8u << 20))	/* more than the kernel lets exec pass */
		end = start + (8u << 20);
	while (start < end) {
		size_t k = end - start < sizeof(buf) ? end - start : sizeof(buf);

		if (pt_read(&d->pt, start, buf, k) < 0)
			return (end - start);	/* unreadable: assume the worst */
		for (size_t i = 0; i < k; i++)
			n += buf[i] == 0;
		start += k;
	}
	return n;
}

/*
 * Find the pages other processes read through the kernel, which must not
 * wait for a page server: the argument, environment and auxiliary vector
 * block at the top of the main stack (argc and the pointer arrays below
 * start_stack included), the stack page under every thread's stack pointer
 * and the one below it (signal frames), every thread's rseq area, and what
 * the kernel writes at thread exit (clear_child_tid, the robust list).
 */
static int find_eager(struct dump *d)
{
	const struct procfs_stat *st = &d->stat;
	uint64_t lo, strings;
	int ret;

	if (st->arg_start && st->env_end > st->arg_start) {
		/* Below start_stack lie argc, the argv and envp arrays, auxv,
		 * the AT_RANDOM bytes and the platform strings. */
		strings = count_strings(d, st->arg_start, st->env_end);
		lo = st->start_stack < st->arg_start ? st->start_stack : st->arg_start;
		lo = lo > 8 * (strings + 3 + d->nauxv) + 256 ? lo - 8 * (strings + 3 + d->nauxv) - 256 : 0;
		ret = eager_add(d, st->arg_start, lo, st->env_end);
		if (ret < 0)
			return ret;
	}
	for (int i = 0; i < d->pt.nr_threads; i++) {
		struct __ptrace_rseq_configuration rc;
		uint64_t sp, tls, head = 0;
		size_t hlen = 0;

		if (pt_thread_sp(&d->pt, i, &sp) == 0) {
			ret = eager_add(d, sp, sp - DUMP_PAGE, sp + 1);
			if (ret < 0)
				return ret;
		}
		/*
		 * What the kernel writes as a thread exits, when a missing
		 * page can no longer be waited for: the clear_child_tid word
		 * and the robust futex list. glibc keeps both in its struct
		 * pthread at the thread pointer; the list head is asked too.
		 */
		if (pt_thread_tls(&d->pt, i, &tls) == 0 && tls) {
			ret = eager_add(d, tls, tls, tls + 2 * DUMP_PAGE);
			if (ret < 0)
				return ret;
		}
		if (syscall(SYS_get_robust_list, d->pt.th[i].tid, &head, &hlen) == 0 && head) {
			ret = eager_add(d, head, head, head + (hlen ? hlen : 24));
			if (ret < 0)
				return ret;
		}
		memset(&rc, 0, sizeof(rc));
		if (ptrace(PTRACE_GET_RSEQ_CONFIGURATION, d->pt.th[i].tid, sizeof(rc), &rc) > 0 &&
		    rc.rseq_abi_pointer && rc.rseq_abi_size) {
			ret = eager_add(d, rc.rseq_abi_pointer, rc.rseq_abi_pointer,
					rc.rseq_abi_pointer + rc.rseq_abi_size);
			if (ret < 0)
				return ret;
		}
	}
	/* Sort and merge. */
	if (d->neager) {
		size_t k = 0;

		qsort(d->eager, d->neager, sizeof(*d->eager), range_cmp);
		for (size_t i = 1; i < d->neager; i++) {
			if (d->eager[i].start <= d->eager[k].end) {
				if (d->eager[i].end > d->eager[k].end)
					d->eager[k].end = d->eager[i].end;
			} else {
				d->eager[++k] = d->eager[i];
			}
		}
		d->neager = k + 1;
	}
	return 0;
}

/* Read LEN bytes at ADDR of the target through /proc/PID/mem, which can read
 * what process_vm_readv cannot (areas without PROT_READ). */
static int mem_read(struct dump *d, uint64_t addr, uint8_t *dst, uint64_t len)
{
	if (d->memfd < 0) {
		char path[64];

		snprintf(path, sizeof(path), "/proc/%d/mem", (int)d->pid);
		d->memfd = open(path, O_RDONLY | O_CLOEXEC);
		if (d->memfd < 0)
			return dfail(d, errno, "%s: %s", path, strerror(errno));
	}
	while (len) {
		ssize_t n = pread(d->memfd, dst, len, (off_t)addr);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return dfail(d, n < 0 ? errno : EIO,
				     "cannot read its memory at 0x%" PRIx64 ": %s",
				     addr, n < 0 ? strerror(errno) : "end of file");
		addr += n;
		dst += n;
		len -= n;
	}
	return 0;
}

/* Fill the buffer with the batch: process_vm_readv for all items at once, and
 * /proc/PID/mem for the rest of an item where it stops short. */
static int read_batch(struct dump *d)
{
	struct timespec t0;
	size_t first = 0;
	uint64_t off = 0;
	int ret = 0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t i = 0; i < d->nitems; i++) {
		d->riov[i].iov_base = (void *)(uintptr_t)d->items[i].addr;
		d->riov[i].iov_len = d->items[i].len;
	}
	while (first < d->nitems) {
		struct iovec local = { d->buf + off, d->batch - off };
		ssize_t n = process_vm_readv(d->pid, &local, 1, d->riov + first,
					     d->nitems - first, 0);
		uint64_t got;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == ESRCH) {
			ret = dfail(d, ESRCH, "the process is gone");
			break;
		}
		if (n < 0 && errno == ENOMEM) {
			ret = dfail(d, ENOMEM, "process_vm_readv: %s", strerror(errno));
			break;
		}
		got = n < 0 ? 0 : (uint64_t)n;	/* EFAULT: nothing of the first item */
		/* Step over the items read whole. */
		while (first < d->nitems && got >= d->items[first].len) {
			got -= d->items[first].len;
			off += d->items[first].len;
			first++;
		}
		if (first == d->nitems)
			break;
		/* Item FIRST stopped after GOT bytes: read its rest the other way. */
		ret = mem_read(d, d->items[first].addr + got, d->buf + off + got,
			       d->items[first].len - got);
		if (ret < 0)
			break;
		off += d->items[first].len;
		first++;
	}
	d->st->read_s += since(&t0);
	return ret;
}

/* Add page ADDR of area AREA to the pagemap, extending the last entry when it can. */
static int pe_add(struct dump *d, uint64_t addr, uint32_t area)
{
	uint32_t flags = d->areas[area].pe_flags;

	/* Pages the kernel reads for others are never left to be served later. */
	if ((flags & PE_LAZY) && dump_range_has(d->eager, d->neager, addr))
		flags &= ~PE_LAZY;
	struct dump_pe *last = d->npe ? &d->pe[d->npe - 1] : NULL;

	if (last && last->area == area && last->flags == flags &&
	    last->vaddr + last->nr * DUMP_PAGE == addr) {
		last->nr++;
		return 0;
	}
	if (d->npe == d->cappe) {
		size_t ncap = d->cappe ? d->cappe * 2 : 1024;
		struct dump_pe *np = realloc(d->pe, ncap * sizeof(*np));

		if (!np)
			return dfail(d, ENOMEM, "out of memory");
		d->pe = np;
		d->cappe = ncap;
	}
	d->pe[d->npe++] = (struct dump_pe){ addr, 1, flags, area };
	return 0;
}

/* Write the N segments of IOV to FD; give up O_DIRECT if the file system refuses it. */
static int writer_put(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t r = writev(fd, iov, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EINVAL && (fcntl(fd, F_GETFL) & O_DIRECT)) {
			if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_DIRECT) < 0)
				return -errno;
			continue;
		}
		if (r < 0)
			return -errno;
		while (n > 0 && (size_t)r >= iov->iov_len) {
			r -= iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + r;
			iov->iov_len -= r;
		}
	}
	return 0;
}

static void *writer_main(void *arg)
{
	struct dump_writer *w = arg;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		uint64_t i;
		struct timespec t0;
		bool skip;
		int ret = 0;

		while (w->tail == w->head && !w->stop)
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->tail == w->head)
			break;
		i = w->tail % DUMP_NBUF;
		skip = w->err != 0;	/* after a failure, only drain */
		pthread_mutex_unlock(&w->mu);
		if (!skip) {
			clock_gettime(CLOCK_MONOTONIC, &t0);
			ret = writer_put(w->fd, w->seg[i], w->nseg[i]);
			w->write_s += since(&t0);
		}
		pthread_mutex_lock(&w->mu);
		if (ret < 0 && !w->err)
			w->err = -ret;
		w->tail++;
		pthread_cond_broadcast(&w->cv);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* Start the writer on FD, with every signal blocked in it (they are the main thread's). */
static int writer_start(struct dump_writer *w, int fd)
{
	sigset_t all, old;
	int ret;

	w->fd = fd;
	w->mem = mmap(NULL, DUMP_NBUF * DUMP_BATCH, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (w->mem == MAP_FAILED) {
		w->mem = NULL;
		return -ENOMEM;
	}
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = pthread_create(&w->th, NULL, writer_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret) {
		pthread_mutex_destroy(&w->mu);
		pthread_cond_destroy(&w->cv);
		return -ret;
	}
	w->started = true;
	return 0;
}

/* Wait for a free buffer. Returns it, or NULL once a write has failed. */
static uint8_t *writer_buf(struct dump_writer *w)
{
	uint8_t *p = NULL;

	pthread_mutex_lock(&w->mu);
	while (w->head - w->tail == DUMP_NBUF && !w->err)
		pthread_cond_wait(&w->cv, &w->mu);
	if (!w->err)
		p = w->mem + (w->head % DUMP_NBUF) * DUMP_BATCH;
	pthread_mutex_unlock(&w->mu);
	return p;
}

/* The segment list of the buffer that writer_buf() returned. */
static struct iovec *writer_segs(struct dump_writer *w)
{
	return w->seg[w->head % DUMP_NBUF];
}

/* Hand the buffer from writer_buf(), with its first N segments to write, to the writer. */
static void writer_push(struct dump_writer *w, int n)
{
	pthread_mutex_lock(&w->mu);
	w->nseg[w->head % DUMP_NBUF] = n;
	w->head++;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

/* Let the writer finish what it has and stop. Returns 0 or -errno of the first failed write. */
static int writer_stop(struct dump_writer *w)
{
	if (!w->started)
		return 0;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->th, NULL);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	w->started = false;
	return w->err ? -w->err : 0;
}

/* Read the gathered batch, keep its non-zero pages, append them to the pages file. */
static int flush_batch(struct dump *d)
{
	struct iovec *seg;
	uint64_t off = 0;
	int ret, nseg = 0;

	if (!d->nitems)
		return 0;
	if (dump_interrupted)
		return dfail(d, EINTR, "interrupted");
	d->buf = writer_buf(&d->w);
	if (!d->buf)
		return dfail(d, d->w.err, "%s/%s: write: %s", d->o->dir, d->tmp[F_PAGES],
			     strerror(d->w.err));
	ret = read_batch(d);
	if (ret < 0)
		return ret;
	seg = writer_segs(&d->w);
	for (size_t i = 0; i < d->nitems; i++) {
		const struct dump_item *it = &d->items[i];
		const struct dump_area *a = &d->areas[it->area];

		for (uint64_t x = 0; x < it->len; x += DUMP_PAGE, off += DUMP_PAGE) {
			/* A zero page of an anonymous area reads zero without us; in a
			 * private file mapping it hides the file's page, so it stays. */
			if (a->kind == DUMP_ANON && page_is_zero(d->buf + off)) {
				d->st->holes++;
				continue;
			}
			/* Runs of kept pages go out as segments of the buffer: no copying. */
			if (nseg && (uint8_t *)seg[nseg - 1].iov_base + seg[nseg - 1].iov_len ==
				    d->buf + off)
				seg[nseg - 1].iov_len += DUMP_PAGE;
			else
				seg[nseg++] = (struct iovec){ d->buf + off, DUMP_PAGE };
			ret = pe_add(d, it->addr + x, it->area);
			if (ret < 0)
				return ret;
			d->st->pages++;
			if (d->pe[d->npe - 1].flags & PE_LAZY)
				d->st->lazy_pages++;
		}
	}
	writer_push(&d->w, nseg);
	d->nitems = 0;
	d->batch = 0;
	return 0;
}

/* Note that area AREA has pages at [ADDR, ADDR + LEN): extend the last span or add one. */
static int span_add(struct dump *d, uint32_t area, uint64_t addr, uint64_t len)
{
	struct dump_range *last = d->nspans ? &d->spans[d->nspans - 1] : NULL;

	if (last && last->area == area && addr - last->end <= DUMP_SPAN_GAP) {
		last->end = addr + len;
		return 0;
	}
	if (d->nspans == d->capspans) {
		size_t ncap = d->capspans ? d->capspans * 2 : 64;
		struct dump_range *ns = realloc(d->spans, ncap * sizeof(*ns));

		if (!ns)
			return dfail(d, ENOMEM, "out of memory");
		d->spans = ns;
		d->capspans = ncap;
	}
	d->spans[d->nspans++] = (struct dump_range){ addr, addr + len, area };
	return 0;
}

/* Queue LEN bytes of pages at ADDR (in area AREA) for reading; flush full batches. */
static int add_range(struct dump *d, uint32_t area, uint64_t addr, uint64_t len)
{
	int sret = span_add(d, area, addr, len);

	if (sret < 0)
		return sret;
	while (len) {
		struct dump_item *last = d->nitems ? &d->items[d->nitems - 1] : NULL;
		uint64_t room = DUMP_BATCH - d->batch, take;
		int ret;

		if (room == 0) {
			ret = flush_batch(d);
			if (ret < 0)
				return ret;
			continue;
		}
		take = len < room ? len : room;
		if (last && last->area == area && last->addr + last->len == addr) {
			last->len += take;
		} else {
			if (d->nitems == DUMP_IOV) {
				ret = flush_batch(d);
				if (ret < 0)
					return ret;
				continue;
			}
			d->items[d->nitems++] = (struct dump_item){ addr, take, area };
		}
		d->batch += take;
		addr += take;
		len -= take;
	}
	return 0;
}

/* Find the pages of area I with PAGEMAP_SCAN. Returns -ENOTTY when the kernel has no such ioctl. */
static int scan_area(struct dump *d, uint32_t i)
{
	const VmaEntry *v = &d->vmas[i];
	const struct dump_area *a = &d->areas[i];
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.start = v->start,
		.end = v->end,
		.vec = (uintptr_t)d->regions,
		.vec_len = DUMP_REGIONS,
		.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
		.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO,
	};

	if (a->kind == DUMP_COW) {
		/* Only pages that are not the file's: the copies made on write. */
		arg.category_inverted = PAGE_IS_FILE;
		arg.category_mask = PAGE_IS_FILE;
	}
	/* Guard markers count as swapped: leave them out (reading one fails). */
	if (!d->scan_no_guard) {
		arg.category_inverted |= PAGE_IS_GUARD;
		arg.category_mask |= PAGE_IS_GUARD;
	}
	for (;;) {
		long n = ioctl(d->pmfd, PAGEMAP_SCAN, &arg);
		uint64_t next;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EINVAL && !d->scan_no_guard) {
			/* Before Linux 6.14: no such category, and no guard regions either. */
			d->scan_no_guard = true;
			arg.category_inverted &= ~(uint64_t)PAGE_IS_GUARD;
			arg.category_mask &= ~(uint64_t)PAGE_IS_GUARD;
			continue;
		}
		if (n < 0 && !d->scan_tried && (errno == ENOTTY || errno == EINVAL))
			return -ENOTTY;
		if (n < 0)
			return dfail(d, errno, "PAGEMAP_SCAN 0x%" PRIx64 "-0x%" PRIx64
				     ": %s", (uint64_t)arg.start, (uint64_t)arg.end,
				     strerror(errno));
		d->scan_tried = true;
		for (long k = 0; k < n; k++) {
			const struct page_region *r = &d->regions[k];
			int ret;

			if (r->start < v->start || r->end > v->end || r->start >= r->end ||
			    (r->start | r->end) & (DUMP_PAGE - 1))
				return dfail(d, EIO, "PAGEMAP_SCAN returned 0x%" PRIx64
					     "-0x%" PRIx64 " outside 0x%" PRIx64 "-0x%" PRIx64,
					     (uint64_t)r->start, (uint64_t)r->end,
					     v->start, v->end);
			if ((r->categories & PAGE_IS_PFNZERO) && a->kind == DUMP_ANON) {
				d->st->holes += (r->end - r->start) / DUMP_PAGE;
				continue;
			}
			ret = add_range(d, i, r->start, r->end - r->start);
			if (ret < 0)
				return ret;
		}
		/*
		 * The kernel stops before the end only when our vector is full.
		 * Its walk_end is then not to be trusted alone: on 6.18 it can
		 * still hold the point of an earlier internal stop, behind
		 * regions it went on to return. Go on after the last region.
		 */
		if (n < DUMP_REGIONS)
			return 0;
		next = arg.walk_end > d->regions[n - 1].end ? arg.walk_end : d->regions[n - 1].end;
		if (next >= v->end)
			return 0;
		if (next <= arg.start)
			return dfail(d, EIO, "PAGEMAP_SCAN made no progress at 0x%" PRIx64,
				     (uint64_t)arg.start);
		arg.start = next;
	}
}

/* Find the pages of area I from /proc/PID/pagemap words (kernels before 6.7). */
static int pagemap_area(struct dump *d, uint32_t i)
{
	const VmaEntry *v = &d->vmas[i];
	const struct dump_area *a = &d->areas[i];
	uint64_t run = 0, run_len = 0;

	for (uint64_t addr = v->start; addr < v->end;) {
		uint64_t cnt = (v->end - addr) / DUMP_PAGE;
		size_t want, got = 0;

		if (cnt > DUMP_PMWORDS)
			cnt = DUMP_PMWORDS;
		want = cnt * sizeof(uint64_t);
		while (got < want) {
			ssize_t n = pread(d->pmfd, (uint8_t *)d->pmwords + got, want - got,
					  (off_t)(addr / DUMP_PAGE * sizeof(uint64_t) + got));

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return dfail(d, n < 0 ? errno : EIO,
					     "/proc/%d/pagemap at 0x%" PRIx64 ": %s",
					     (int)d->pid, addr,
					     n < 0 ? strerror(errno) : "end of file");
			got += n;
		}
		for (uint64_t k = 0; k < cnt; k++, addr += DUMP_PAGE) {
			uint64_t w = d->pmwords[k];
			bool take = (w & (PM_PRESENT | PM_SWAPPED)) && !(w & PM_GUARD) &&
				    !(a->kind == DUMP_COW && (w & PM_FILE));

			if (take && run_len && run + run_len == addr) {
				run_len += DUMP_PAGE;
				continue;
			}
			if (run_len) {
				int ret = add_range(d, i, run, run_len);

				if (ret < 0)
					return ret;
				run_len = 0;
			}
			if (take) {
				run = addr;
				run_len = DUMP_PAGE;
			}
		}
	}
	return run_len ? add_range(d, i, run, run_len) : 0;
}

/* Create the pages file and fill it with every page worth keeping, in address order. */
static int dump_pages(struct dump *d)
{
	char path[64];
	int flags, ret;

	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)d->pid);
	d->pmfd = open(path, O_RDONLY | O_CLOEXEC);
	if (d->pmfd < 0)
		return dfail(d, errno, "%s: %s", path, strerror(errno));
	d->riov = calloc(DUMP_IOV, sizeof(*d->riov));
	d->items = calloc(DUMP_IOV, sizeof(*d->items));
	d->regions = calloc(DUMP_REGIONS, sizeof(*d->regions));
	d->pmwords = calloc(DUMP_PMWORDS, sizeof(*d->pmwords));
	if (!d->riov || !d->items || !d->regions || !d->pmwords)
		return dfail(d, ENOMEM, "out of memory");

	/*
	 * O_DIRECT unless asked otherwise: on this kind of machine it writes
	 * two to three times faster than through the page cache, and a dump
	 * of a large process does not evict everyone else's cache.
	 */
	flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW;
	d->pagesfd = openat(d->dirfd, d->tmp[F_PAGES], flags | (d->o->buffered ? 0 : O_DIRECT),
			    0600);
	if (d->pagesfd < 0 && errno == EINVAL)
		d->pagesfd = openat(d->dirfd, d->tmp[F_PAGES], flags, 0600);
	if (d->pagesfd < 0)
		return dfail(d, errno, "%s/%s: create: %s", d->o->dir, d->tmp[F_PAGES],
			     strerror(errno));
	d->made[F_PAGES] = true;
	ret = writer_start(&d->w, d->pagesfd);
	if (ret < 0)
		return dfail(d, ret, "cannot start the writer thread: %s", strerror(-ret));

	d->use_scan = !d->o->no_scan;
	for (uint32_t i = 0; i < d->maps.n; i++) {
		if (d->areas[i].kind == DUMP_NONE)
			continue;
		ret = d->use_scan ? scan_area(d, i) : pagemap_area(d, i);
		if (ret == -ENOTTY) {	/* no PAGEMAP_SCAN here: before Linux 6.7 */
			d->use_scan = false;
			ret = pagemap_area(d, i);
		}
		if (ret < 0)
			return ret;
	}
	d->st->scanned = d->use_scan;
	ret = flush_batch(d);
	if (ret < 0)
		return ret;
	ret = writer_stop(&d->w);
	d->st->write_s = d->w.write_s;
	if (ret < 0)
		return dfail(d, ret, "%s/%s: write: %s", d->o->dir, d->tmp[F_PAGES],
			     strerror(-ret));
	d->st->entries = d->npe;
	return 0;
}

/* Write the pagemap: the head, then one entry per run of pages with equal flags. */
static int write_pagemap(struct dump *d)
{
	PagemapHead head = PAGEMAP_HEAD__INIT;
	struct img_writer w;
	struct img_err err;
	int ret;

	head.pages_id = 1;
	ret = img_create(&w, d->dirfd, d->tmp[F_PAGEMAP], IMG_PAGEMAP_MAGIC, &err);
	if (ret < 0)
		return dfail(d, ret, "%s/%s", d->o->dir, err.msg);
	d->made[F_PAGEMAP] = true;
	ret = img_write(&w, &head.base, &err);
	for (size_t i = 0; ret == 0 && i < d->npe; i++) {
		PagemapEntry e = PAGEMAP_ENTRY__INIT;

		e.vaddr = d->pe[i].vaddr;
		e.compat_nr_pages = d->pe[i].nr <= UINT32_MAX ? (uint32_t)d->pe[i].nr : 0;
		e.has_nr_pages = 1;
		e.nr_pages = d->pe[i].nr;
		e.has_flags = 1;
		e.flags = d->pe[i].flags;
		ret = img_write(&w, &e.base, &err);
	}
	if (ret < 0) {
		img_abort(&w);
		return dfail(d, ret, "%s/%s", d->o->dir, err.msg);
	}
	ret = img_finish(&w, &err);
	if (ret < 0)
		return dfail(d, ret, "%s/%s", d->o->dir, err.msg);
	return 0;
}

/* The end of the heap: where [heap] ends, or start_brk when there is none. */
static uint64_t heap_end(const struct dump *d)
{
	for (size_t i = 0; i < d->maps.n; i++)
		if (d->vmas[i].status & VMA_AREA_HEAP)
			return d->vmas[i].end;
	return d->stat.start_brk;
}

static int write_one(struct dump *d, int f, uint32_t magic, const ProtobufCMessage *msg)
{
	struct img_writer w;
	struct img_err err;
	int ret;

	ret = img_create(&w, d->dirfd, d->tmp[f], magic, &err);
	if (ret < 0)
		return dfail(d, ret, "%s/%s", d->o->dir, err.msg);
	d->made[f] = true;
	ret = img_write(&w, msg, &err);
	if (ret < 0) {
		img_abort(&w);
		return dfail(d, ret, "%s/%s", d->o->dir, err.msg);
	}
	ret = img_finish(&w, &err);
	if (ret < 0)
		return dfail(d, ret, "%s/%s", d->o->dir, err.msg);
	return 0;
}

/* Write mm, pstree and inventory; sync the pages file. */
static int write_images(struct dump *d)
{
	MmEntry mm = MM_ENTRY__INIT;
	PstreeEntry ps = PSTREE_ENTRY__INIT;
	InventoryEntry inv = INVENTORY_ENTRY__INIT;
	VmaEntry **vp;
	int ret;

	ret = write_pagemap(d);
	if (ret < 0)
		return ret;

	vp = calloc(d->maps.n ? d->maps.n : 1, sizeof(*vp));
	if (!vp)
		return dfail(d, ENOMEM, "out of memory");
	for (size_t i = 0; i < d->maps.n; i++)
		vp[i] = &d->vmas[i];
	mm.mm_start_code = d->stat.start_code;
	mm.mm_end_code = d->stat.end_code;
	mm.mm_start_data = d->stat.start_data;
	mm.mm_end_data = d->stat.end_data;
	mm.mm_start_stack = d->stat.start_stack;
	mm.mm_start_brk = d->stat.start_brk;
	mm.mm_brk = heap_end(d);
	mm.mm_arg_start = d->stat.arg_start;
	mm.mm_arg_end = d->stat.arg_end;
	mm.mm_env_start = d->stat.env_start;
	mm.mm_env_end = d->stat.env_end;
	mm.exe_file_id = 0;
	mm.n_mm_saved_auxv = d->nauxv;
	mm.mm_saved_auxv = d->auxv;
	mm.n_vmas = d->maps.n;
	mm.vmas = vp;
	ret = write_one(d, F_MM, IMG_MM_MAGIC, &mm.base);
	free(vp);
	if (ret < 0)
		return ret;

	ps.pid = d->pid;
	ps.ppid = d->stat.ppid;
	ps.pgid = d->stat.pgid;
	ps.sid = d->stat.sid;
	ps.n_threads = d->ntids;
	ps.threads = d->tids;
	ret = write_one(d, F_PSTREE, IMG_PSTREE_MAGIC, &ps.base);
	if (ret < 0)
		return ret;

	inv.img_version = IMG_VERSION;
	ret = write_one(d, F_INVENTORY, IMG_INVENTORY_MAGIC, &inv.base);
	if (ret < 0)
		return ret;

	if (fsync(d->pagesfd) < 0)
		return dfail(d, errno, "%s/%s: fsync: %s", d->o->dir, d->tmp[F_PAGES],
			     strerror(errno));
	if (close(d->pagesfd) < 0) {
		d->pagesfd = -1;
		return dfail(d, errno, "%s/%s: close: %s", d->o->dir, d->tmp[F_PAGES],
			     strerror(errno));
	}
	d->pagesfd = -1;
	return 0;
}

/* Give every file its final name, pagemap and pstree last, and make it durable. */
static int publish(struct dump *d)
{
	int i;

	for (i = 0; i < F_NR; i++) {
		if (renameat(d->dirfd, d->tmp[i], d->dirfd, d->name[i]) < 0) {
			int e = errno;

			dfail(d, e, "%s/%s: rename: %s", d->o->dir, d->name[i], strerror(e));
			/* Take back what was already in place: no partial dump. */
			while (--i >= 0)
				renameat(d->dirfd, d->name[i], d->dirfd, d->tmp[i]);
			return -e;
		}
	}
	for (i = 0; i < F_NR; i++)
		d->made[i] = false;
	if (fsync(d->dirfd) < 0)
		return dfail(d, errno, "%s: fsync: %s", d->o->dir, strerror(errno));
	return 0;
}

/* Let the target go; a failure here leaves it to the kernel (tracer exit detaches). */
static void let_go(struct dump *d)
{
	int ret;

	if (!d->seized)
		return;
	ret = pt_detach(&d->pt);
	if (ret < 0 && ret != -ESRCH)	/* ESRCH: it died meanwhile, nothing to let go */
		fprintf(stderr, "uffd-inject: warning: pid %d: detach: %s; it runs on once "
			"we exit\n", (int)d->pid, strerror(-ret));
	d->seized = false;
	d->st->frozen_s = since(&d->t_frozen);
}

/* SIGKILL the target, let go of it, and wait until it is gone. */
static int kill_target(struct dump *d)
{
	struct pollfd pfd = { .fd = d->pidfd, .events = POLLIN };
	int ret = 0;

	if (syscall(SYS_pidfd_send_signal, d->pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH)
		ret = dfail(d, errno, "kill: %s (the images are complete)", strerror(errno));
	d->st->frozen_s = since(&d->t_frozen);
	if (d->seized) {
		pt_detach(&d->pt);	/* fails with ESRCH once it is dead: fine */
		d->seized = false;
	}
	if (ret == 0 && poll(&pfd, 1, DUMP_KILL_WAIT) == 0)
		ret = dfail(d, ETIMEDOUT, "still there %d ms after SIGKILL", DUMP_KILL_WAIT);
	return ret;
}

/* Undo what a failed dump left: temporary files, the freeze. */
static void cleanup(struct dump *d)
{
	if (d->w.started) {
		/* Skip what is still queued: it goes to a file about to be removed. */
		pthread_mutex_lock(&d->w.mu);
		if (!d->w.err)
			d->w.err = ECANCELED;
		pthread_mutex_unlock(&d->w.mu);
		writer_stop(&d->w);
	}
	let_go(d);
	for (int i = 0; i < F_NR; i++)
		if (d->made[i] && d->dirfd >= 0)
			unlinkat(d->dirfd, d->tmp[i], 0);
	if (d->made_dir)
		rmdir(d->o->dir);	/* only if still empty */
}

static void release(struct dump *d)
{
	core_free(&d->core);
	if (d->pagesfd >= 0)
		close(d->pagesfd);
	if (d->pmfd >= 0)
		close(d->pmfd);
	if (d->memfd >= 0)
		close(d->memfd);
	if (d->pidfd >= 0)
		close(d->pidfd);
	if (d->dirfd >= 0)
		close(d->dirfd);
	writer_stop(&d->w);
	if (d->w.mem)
		munmap(d->w.mem, DUMP_NBUF * DUMP_BATCH);
	free(d->riov);
	free(d->items);
	free(d->regions);
	free(d->pmwords);
	free(d->pe);
	free(d->eager);
	free(d->spans);
	free(d->vmas);
	free(d->areas);
	free(d->auxv);
	free(d->tids);
	procfs_maps_free(&d->maps);
}

static void summary(const struct dump *d)
{
	const struct dump_stats *st = d->st;
	double mib = (double)(st->pages * DUMP_PAGE) / (1 << 20);

	if (!d->o->out)
		return;
	fprintf(d->o->out,
		"uffd-inject: pid %d dumped to %s: %" PRIu64 " pages (%.1f MiB, %" PRIu64
		" lazy), %" PRIu64 " zero pages left as holes, %zu VMAs, %zu pagemap entries, "
		"%zu thread%s%s\n",
		(int)d->pid, d->o->dir, st->pages, mib, st->lazy_pages, st->holes, st->vmas,
		st->entries, st->threads, st->threads == 1 ? "" : "s",
		st->scanned ? "" : " (pages found through pagemap words)");
	fprintf(d->o->out,
		"uffd-inject: read %.3f s, write %.3f s, frozen %.3f s, total %.3f s with sync "
		"(%.0f MB/s read, %.0f MB/s overall); target %s\n",
		st->read_s, st->write_s, st->frozen_s, st->total_s,
		st->read_s > 0 ? (double)(st->pages * DUMP_PAGE) / st->read_s / 1e6 : 0.0,
		st->total_s > 0 ? (double)(st->pages * DUMP_PAGE) / st->total_s / 1e6 : 0.0,
		d->o->kill ? "killed" : "left running");
}

/* Hand the frozen target and what was written about it to the caller. */
static void hold(struct dump *d, struct dump_held *h)
{
	memset(h, 0, sizeof(*h));
	h->pt = d->pt;
	d->seized = false;
	h->pid = d->pid;
	h->pidfd = d->pidfd;
	d->pidfd = -1;
	h->dirfd = d->dirfd;
	d->dirfd = -1;
	h->nvmas = d->maps.n;
	h->vmas = d->vmas;
	d->vmas = NULL;
	h->areas = d->areas;
	d->areas = NULL;
	h->pe = d->pe;
	d->pe = NULL;
	h->npe = d->npe;
	h->eager = d->eager;
	d->eager = NULL;
	h->neager = d->neager;
	h->spans = d->spans;
	d->spans = NULL;
	h->nspans = d->nspans;
	h->frozen_at = (double)d->t_frozen.tv_sec + d->t_frozen.tv_nsec / 1e9;
}

void dump_held_release(struct dump_held *h)
{
	if (h->pt.th)
		pt_detach(&h->pt);
	if (h->pidfd >= 0)
		close(h->pidfd);
	if (h->dirfd >= 0)
		close(h->dirfd);
	free(h->vmas);
	free(h->areas);
	free(h->pe);
	free(h->eager);
	free(h->spans);
	memset(h, 0, sizeof(*h));
	h->pidfd = h->dirfd = -1;
}

int dump_run(const struct dump_opts *o, struct dump_stats *st, struct dump_held *h)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
	struct sigaction sa, old[3];
	struct dump_stats local;
	struct dump d;
	char why[512];
	int ret;

	if (!st)
		st = &local;
	memset(st, 0, sizeof(*st));
	memset(&d, 0, sizeof(d));
	d.o = o;
	d.st = st;
	d.pid = o->pid;
	d.dirfd = d.pidfd = d.pmfd = d.memfd = d.pagesfd = -1;
	clock_gettime(CLOCK_MONOTONIC, &d.t_start);

	dump_interrupted = 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	for (int i = 0; i < 3; i++)
		sigaction(sigs[i], &sa, &old[i]);

	if (o->hold && (!h || o->kill)) {
		ret = dfail(&d, EINVAL, "hold needs somewhere to hand the target and no kill");
		goto out;
	}
	if (o->pid <= 0 || o->pid == getpid()) {
		ret = dfail(&d, EINVAL, "cannot dump %s", o->pid <= 0 ? "that" : "myself");
		goto out;
	}
	ret = open_target(&d);
	if (ret == 0)
		ret = open_dir(&d);
	if (ret < 0)
		goto out;

	ret = pt_seize(&d.pt, d.pid, why, sizeof(why));
	if (ret < 0) {
		char own[32];
		size_t k = (size_t)snprintf(own, sizeof(own), "pid %d: ", (int)d.pid);

		/* The engine names the pid too; say it once. */
		dfail(&d, ret, "cannot freeze: %s", strncmp(why, own, k) ? why : why + k);
		goto out;
	}
	d.seized = true;
	clock_gettime(CLOCK_MONOTONIC, &d.t_frozen);

	ret = read_proc(&d);
	if (ret == 0)
		ret = check_mm_shared(&d);
	if (ret == 0)
		ret = classify_all(&d);
	if (ret == 0)
		ret = find_eager(&d);
	if (ret == 0 && o->kill) {
		d.core_on = true;
		ret = core_collect(&d.core, &d.pt, &d.maps, why, sizeof(why));
		if (ret < 0)
			dfail(&d, ret, "cannot dump for restore: %s", why);
	}
	if (ret == 0) {
		st->threads = d.ntids;
		ret = dump_pages(&d);
	}
	if (ret < 0)
		goto out;
	/* Every byte is read: a target that goes on living need not wait for the disk. */
	if (!o->kill && !o->hold)
		let_go(&d);
	ret = write_images(&d);
	if (ret == 0 && d.core_on && (ret = core_write(&d.core, d.dirfd, why, sizeof(why))) < 0)
		dfail(&d, ret, "%s/%s", o->dir, why);
	if (ret == 0 && d.core_on && (ret = core_publish(&d.core, d.dirfd, why, sizeof(why))) < 0)
		dfail(&d, ret, "%s/%s", o->dir, why);
	if (ret == 0)
		ret = publish(&d);
	if (ret == 0 && o->kill)
		ret = kill_target(&d);
	if (ret == 0 && o->hold)
		hold(&d, h);
out:
	if (ret == 0)
		d.made_dir = false;
	else if (d.core_on && d.dirfd >= 0)
		core_abort(&d.core, d.dirfd);
	cleanup(&d);	/* after publish() there are no temporary files left */
	st->total_s = since(&d.t_start);
	if (ret < 0)
		fprintf(stderr, "uffd-inject: %s: %s\n", o->hold ? "lazy" : "dump",
			d.why[0] ? d.why : strerror(-ret));
	else
		summary(&d);
	release(&d);
	for (int i = 0; i < 3; i++)
		sigaction(sigs[i], &old[i], NULL);
	return ret;
}
