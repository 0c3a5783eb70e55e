/*
 * Restore a process from images without CRIU.
 *
 * A forked helper prepares what needs no memory of the old process (open
 * files at their numbers, cwd, umask, signal handlers, sigaltstack, tid
 * address, robust list, comm, the userfaultfd), maps a two-page trampoline
 * (a syscall instruction and a scratch page) at an address free in both
 * layouts, blocks every signal and sleeps. We seize it and, through the
 * trampoline, unmap everything it had, move its vdso and vvar to the dumped
 * addresses, map every dumped area (files from the same files, anonymous
 * areas empty), write the eager pages, set the mm fields and rseq, hand the
 * userfaultfd to the manager, unmap the trampoline, install the dumped
 * registers, FPU state and signal mask, and let it go. It never runs a
 * user-space instruction of its own after it is seized.
 */
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "core.pb-c.h"
#include "files.pb-c.h"
#include "handover.h"
#include "image.h"
#include "imgtask.h"
#include "pagemap.h"
#include "procfs.h"
#include "ptrace.h"
#include "restore.h"

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

#define RS_PAGE		4096ull
#define RS_MAX_MAPFILES	256
#define RS_TASK_TOP	0x7ffffffff000ull	/* 47-bit user space */
#define RS_ASAN_LO	0x600000000000ull	/* kept clear for ASan builds of the tests */
#define RS_ASAN_HI	0x640000000000ull
#define RS_WRITE_CHUNK	(64ull << 20)
#define RS_READY_MS	10000
#define RS_ERESTARTNOINTR		513
#define RS_ERESTART_RESTARTBLOCK	516
#define RS_FEATURES	(UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | \
			 UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP | \
			 UFFD_FEATURE_THREAD_ID)

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

/* What the helper tells us once it is ready (or why it failed). */
struct rs_report {
	int err;
	int uffd;			/* its fd number in the helper, -1 if none */
	int mapfd[RS_MAX_MAPFILES];	/* of each mapped file, in rs->mf order */
	char msg[256];
};

/* A file to map: one per inode the areas use (and the exe). */
struct rs_mapfile {
	const RegFileEntry *re;
	bool rw;
};

/* A special area (vvar, vvar_vclock, vdso): where the helper has it, where it goes. */
struct rs_special {
	uint64_t from, to, len;
	bool vdso;
};

struct rs {
	const struct restore_opts *o;
	struct restore_stats *st;
	int dirfd;
	uint32_t pid;			/* as dumped */
	struct pages_cache cache;
	struct img_task task;
	bool task_loaded;
	CoreEntry *core;
	FsEntry *fs;
	FileEntry **files;
	size_t nfiles;
	FdinfoEntry **fdi;
	size_t nfdi;
	struct rs_mapfile mf[RS_MAX_MAPFILES];
	int nmf;
	int *vma_mf;			/* per VMA: index in mf, or -1 */
	bool *vma_wr;			/* per VMA: mapped writable for the eager writes */
	struct rs_special sp[8];
	int nsp;
	uint64_t tramp;			/* syscall insn page; tramp + RS_PAGE is the scratch page */
	pid_t child;
	int pidfd;
	struct pt pt;
	bool seized;
	struct rs_report rep;
	int uffd;			/* our copy */
	struct timespec t0;
	char why[1024];
};

static int rfail(struct rs *r, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Record why the restore failed (the first reason wins) and return -CODE. */
static int rfail(struct rs *r, int code, const char *fmt, ...)
{
	va_list ap;

	if (!r->why[0]) {
		va_start(ap, fmt);
		vsnprintf(r->why, sizeof(r->why), fmt, ap);
		va_end(ap);
	}
	return code > 0 ? -code : (code ? code : -EIO);
}

static double since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static const RegFileEntry *file_by_id(const struct rs *r, uint32_t id)
{
	for (size_t i = 0; i < r->nfiles; i++)
		if (r->files[i]->id == id && r->files[i]->reg)
			return r->files[i]->reg;
	return NULL;
}

static const RegFileEntry *file_by_ino(const struct rs *r, uint64_t ino)
{
	for (size_t i = 0; i < r->nfiles; i++)
		if (r->files[i]->reg && r->files[i]->reg->uffd_ino == ino)
			return r->files[i]->reg;
	return NULL;
}

static uint64_t ts_ns(const struct timespec *t)
{
	return (uint64_t)t->tv_sec * 1000000000ull + (uint64_t)t->tv_nsec;
}

/* ---- images ---- */

static int load_records(struct rs *r, const char *name, uint32_t magic,
			const ProtobufCMessageDescriptor *desc, ProtobufCMessage ***out, size_t *n)
{
	struct img_reader rd;
	struct img_err err;
	ProtobufCMessage *m;
	int ret;

	*out = NULL;
	*n = 0;
	ret = img_open(&rd, r->dirfd, name, magic, &err);
	if (ret == -ENOENT)
		return rfail(r, ENOENT, "%s/%s: missing: dumped without --kill, or not by "
			     "uffd-inject", r->o->dir, name);
	if (ret < 0)
		return rfail(r, ret, "%s/%s", r->o->dir, err.msg);
	while ((ret = img_next(&rd, desc, &m, &err)) == 1) {
		ProtobufCMessage **nv = realloc(*out, (*n + 1) * sizeof(*nv));

		if (!nv || *n >= 65536) {
			protobuf_c_message_free_unpacked(m, NULL);
			free(nv);
			img_close(&rd);
			return rfail(r, ENOMEM, "%s/%s: too many records", r->o->dir, name);
		}
		*out = nv;
		(*out)[(*n)++] = m;
	}
	img_close(&rd);
	if (ret < 0)
		return rfail(r, ret, "%s/%s", r->o->dir, err.msg);
	return 0;
}

/* Read every image and check it against itself and against this machine. */
static int load(struct rs *r)
{
	struct img_err err;
	uint32_t *pids = NULL;
	size_t n = 0;
	bool from_pstree;
	char name[64];
	int ret;

	r->dirfd = open(r->o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r->dirfd < 0)
		return rfail(r, errno, "%s: %s", r->o->dir, strerror(errno));
	ret = img_list_tasks(r->dirfd, &pids, &n, &from_pstree, &err);
	if (ret < 0)
		return rfail(r, ret, "%s/%s", r->o->dir, err.msg);
	if (n != 1) {
		free(pids);
		return rfail(r, ENOTSUP, "%s holds %zu processes: restore takes one", r->o->dir, n);
	}
	r->pid = pids[0];
	free(pids);
	ret = img_task_load(&r->task, r->dirfd, r->pid, &r->cache, &err);
	if (ret < 0)
		return rfail(r, ret, "%s/%s", r->o->dir, err.msg);
	r->task_loaded = true;
	if (!r->task.mm || !r->task.pm)
		return rfail(r, ENOENT, "%s: task %u has no memory images", r->o->dir, r->pid);
	snprintf(name, sizeof(name), "core-%u.img", r->pid);
	ret = img_read_one(r->dirfd, name, IMG_CORE_MAGIC, &core_entry__descriptor,
			   (ProtobufCMessage **)&r->core, &err);
	if (ret == -ENOENT)
		return rfail(r, ENOENT, "%s/%s: missing: the dump was made without --kill, so "
			     "it holds memory only", r->o->dir, name);
	if (ret < 0)
		return rfail(r, ret, "%s/%s", r->o->dir, err.msg);
	if (r->core->mtype != 1 || !r->core->thread_info || !r->core->tc ||
	    !r->core->thread_core || !r->core->thread_info->fpregs->has_uffd_xstate)
		return rfail(r, EINVAL, "%s/%s: not an x86_64 core written by uffd-inject",
			     r->o->dir, name);
	snprintf(name, sizeof(name), "fs-%u.img", r->pid);
	ret = img_read_one(r->dirfd, name, IMG_FS_MAGIC, &fs_entry__descriptor,
			   (ProtobufCMessage **)&r->fs, &err);
	if (ret < 0)
		return rfail(r, ret, "%s/%s", r->o->dir, err.msg);
	ret = load_records(r, CORE_FILES_IMG, IMG_FILES_MAGIC, &file_entry__descriptor,
			   (ProtobufCMessage ***)&r->files, &r->nfiles);
	if (ret == 0)
		ret = load_records(r, CORE_FDINFO_IMG, IMG_FDINFO_MAGIC, &fdinfo_entry__descriptor,
				   (ProtobufCMessage ***)&r->fdi, &r->nfdi);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < r->nfdi; i++)
		if (!file_by_id(r, r->fdi[i]->id) || r->fdi[i]->fd > INT_MAX / 2)
			return rfail(r, EINVAL, "%s/%s: fd %u names no file", r->o->dir,
				     CORE_FDINFO_IMG, r->fdi[i]->fd);
	return 0;
}

/* Every file must be the one that was dumped, unchanged. */
static int check_files(struct rs *r)
{
	for (size_t i = 0; i < r->nfiles; i++) {
		const RegFileEntry *re = r->files[i]->reg;
		struct stat st;

		if (!re)
			return rfail(r, EINVAL, "%s/%s: a file record without a regular file",
				     r->o->dir, CORE_FILES_IMG);
		if (stat(re->name, &st) < 0)
			return rfail(r, errno, "%s: %s", re->name, strerror(errno));
		if (S_ISCHR(st.st_mode))
			continue;
		if (st.st_ino != re->uffd_ino)
			return rfail(r, ESTALE, "%s was replaced since the dump (inode %" PRIu64
				     ", was %" PRIu64 ")", re->name, (uint64_t)st.st_ino,
				     re->uffd_ino);
		if (S_ISDIR(st.st_mode))
			continue;
		if ((uint64_t)st.st_size != re->size || ts_ns(&st.st_mtim) != re->uffd_mtime_ns)
			return rfail(r, ESTALE, "%s changed since the dump (size %" PRIu64
				     ", was %" PRIu64 "; mtime differs: %s)", re->name,
				     (uint64_t)st.st_size, re->size,
				     ts_ns(&st.st_mtim) != re->uffd_mtime_ns ? "yes" : "no");
	}
	return 0;
}

/* Which file backs each area; which areas get written before they run. */
static int plan_areas(struct rs *r)
{
	const MmEntry *mm = r->task.mm;
	const RegFileEntry *exe;

	r->vma_mf = calloc(mm->n_vmas + 1, sizeof(*r->vma_mf));
	r->vma_wr = calloc(mm->n_vmas + 1, sizeof(*r->vma_wr));
	if (!r->vma_mf || !r->vma_wr)
		return rfail(r, ENOMEM, "out of memory");
	for (size_t i = 0; i < mm->n_vmas; i++) {
		const VmaEntry *v = mm->vmas[i];
		const RegFileEntry *re;
		int k;

		r->vma_mf[i] = -1;
		if (!(v->status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED)))
			continue;
		re = file_by_ino(r, v->shmid);
		if (!re)
			return rfail(r, EINVAL, "area 0x%" PRIx64 "-0x%" PRIx64 ": no file record for "
				     "inode %" PRIu64, v->start, v->end, v->shmid);
		for (k = 0; k < r->nmf && r->mf[k].re != re; k++)
			;
		if (k == r->nmf) {
			if (r->nmf == RS_MAX_MAPFILES)
				return rfail(r, ENOTSUP, "more than %d mapped files",
					     RS_MAX_MAPFILES);
			r->mf[r->nmf++].re = re;
		}
		if ((v->status & VMA_FILE_SHARED) && (v->prot & PROT_WRITE))
			r->mf[k].rw = true;
		r->vma_mf[i] = k;
	}
	exe = r->core->tc->has_uffd_exe_file_id ? file_by_id(r, r->core->tc->uffd_exe_file_id)
						 : NULL;
	if (!exe)
		return rfail(r, EINVAL, "%s: no exe file recorded", r->o->dir);
	for (int k = 0; k <= r->nmf; k++) {
		if (k == r->nmf) {
			if (r->nmf == RS_MAX_MAPFILES)
				return rfail(r, ENOTSUP, "more than %d mapped files",
					     RS_MAX_MAPFILES);
			r->mf[r->nmf++].re = exe;
			break;
		}
		if (r->mf[k].re->uffd_ino == exe->uffd_ino)
			break;
	}
	return 0;
}

/* Our own special areas (the helper has the same), in address order. */
static int read_specials(struct rs *r, struct procfs_maps *own)
{
	const MmEntry *mm = r->task.mm;
	size_t k = 0;

	for (size_t i = 0; i < own->n; i++) {
		const char *nm = own->v[i].name ? own->v[i].name : "";
		bool vdso = !strcmp(nm, "[vdso]");

		if (!vdso && strcmp(nm, "[vvar]") && strcmp(nm, "[vvar_vclock]"))
			continue;
		if (r->nsp == (int)(sizeof(r->sp) / sizeof(r->sp[0])))
			return rfail(r, ENOTSUP, "too many special areas");
		r->sp[r->nsp++] = (struct rs_special){ own->v[i].start, 0,
						       own->v[i].end - own->v[i].start, vdso };
	}
	for (size_t i = 0; i < mm->n_vmas; i++) {
		const VmaEntry *v = mm->vmas[i];
		bool vdso = v->status & VMA_AREA_VDSO, vvar = v->status & VMA_AREA_VVAR;

		if (!vdso && !vvar)
			continue;
		if (k == (size_t)r->nsp || r->sp[k].vdso != vdso || r->sp[k].len != v->end - v->start)
			return rfail(r, ENOTSUP, "the dumped vdso/vvar areas differ from this "
				     "kernel's (area 0x%" PRIx64 "-0x%" PRIx64 "): restore on the "
				     "kernel that made the dump", v->start, v->end);
		r->sp[k++].to = v->start;
	}
	if (k != (size_t)r->nsp)
		return rfail(r, ENOTSUP, "the dump has %zu vdso/vvar areas, this kernel %d: "
			     "restore on the kernel that made the dump", k, r->nsp);
	/* The code in the vdso must be this kernel's: the registers may point into it. */
	for (int i = 0; i < r->nsp; i++) {
		uint64_t off = 0;

		while (r->sp[i].vdso && off < r->sp[i].len) {
			struct pm_run run;
			uint64_t n;

			/* Pages it never touched are not in the dump: nothing to compare. */
			pagemap_resolve(r->task.pm, r->sp[i].to + off, r->sp[i].len - off, &run);
			n = run.len && run.len <= r->sp[i].len - off ? run.len : r->sp[i].len - off;
			if (run.src == PM_DATA &&
			    memcmp(run.pf->base + run.off,
				   (const void *)(uintptr_t)(r->sp[i].from + off), n))
				return rfail(r, ENOTSUP, "the dumped vdso differs from this "
					     "kernel's: restore on the kernel that made the dump");
			off += n;
		}
	}
	return 0;
}

/*
 * The areas of PID from /proc/PID/maps alone: procfs_read_maps() wants smaps
 * and maps to agree, which our own address space, growing as we read, may not.
 */
static int read_maps(pid_t pid, struct procfs_maps *m, char *why, size_t len)
{
	char path[64], *line = NULL, *text = NULL;
	size_t cap = 0, tlen = 0, n = 0;
	ssize_t k;
	FILE *f;

	memset(m, 0, sizeof(*m));
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "re");
	if (!f) {
		snprintf(why, len, "%s: %s", path, strerror(errno));
		return -errno;
	}
	/* Read it whole first: the strings of the areas point into the copy. */
	while ((k = getline(&line, &cap, f)) > 0) {
		char *nt = realloc(text, tlen + (size_t)k + 1);

		if (!nt)
			break;
		text = nt;
		memcpy(text + tlen, line, (size_t)k + 1);
		tlen += (size_t)k + 1;
		n++;
	}
	free(line);
	fclose(f);
	m->text = text;
	m->v = calloc(n + 1, sizeof(*m->v));
	if (!m->v || !text) {
		snprintf(why, len, "%s: out of memory", path);
		return -ENOMEM;
	}
	for (size_t off = 0; off < tlen; off += strlen(text + off) + 1) {
		char *l = text + off;

		l[strcspn(l, "\n")] = '\0';
		if (procfs_parse_maps_line(l, &m->v[m->n]) == 0)
			m->n++;
	}
	return 0;
}

static bool overlaps(uint64_t s, uint64_t e, uint64_t s2, uint64_t e2)
{
	return s < e2 && s2 < e;
}

/* Is [S, E) free in the dumped layout and in ours? */
static bool free_in_both(const struct rs *r, const struct procfs_maps *own, uint64_t s, uint64_t e)
{
	const MmEntry *mm = r->task.mm;

	if (overlaps(s, e, RS_ASAN_LO, RS_ASAN_HI))
		return false;
	for (size_t i = 0; i < mm->n_vmas; i++)
		if (overlaps(s, e, mm->vmas[i]->start, mm->vmas[i]->end))
			return false;
	for (size_t i = 0; i < own->n; i++)
		if (overlaps(s, e, own->v[i].start, own->v[i].end))
			return false;
	return true;
}

/* Two pages free in both layouts, with room around them. */
static int pick_trampoline(struct rs *r, const struct procfs_maps *own)
{
	for (uint64_t a = 0x100000000ull; a < RS_TASK_TOP - (1ull << 32); a += 0x40000000ull) {
		if (free_in_both(r, own, a - (1ull << 20), a + (1ull << 20))) {
			r->tramp = a;
			return 0;
		}
	}
	return rfail(r, ENOMEM, "no free address for the trampoline");
}

/* ---- the helper ---- */

static void report_fail(int wfd, struct rs_report *rep, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), noreturn));

/* In the helper: say why we fail and exit. */
static void report_fail(int wfd, struct rs_report *rep, const char *fmt, ...)
{
	va_list ap;
	ssize_t n;

	rep->err = errno ? errno : EIO;
	va_start(ap, fmt);
	vsnprintf(rep->msg, sizeof(rep->msg), fmt, ap);
	va_end(ap);
	n = write(wfd, rep, sizeof(*rep));
	(void)n;
	_exit(1);
}

/* In the helper: move FD above HI (and off the low numbers); returns the new fd. */
static int lift(int fd, int hi)
{
	int nfd = fcntl(fd, F_DUPFD, hi);

	if (nfd >= 0)
		close(fd);
	return nfd;
}

/* The helper: set up everything that needs no memory of the old process, then sleep. */
static void helper(struct rs *r, int wfd)
{
	struct rs_report *rep = &r->rep;
	const TaskCoreEntry *tc = r->core->tc;
	const ThreadCoreEntry *th = r->core->thread_core;
	const RegFileEntry *cwd = file_by_id(r, r->fs->cwd_id);
	int tmpfd[1024], stdio_fd = -1, hi = 3, maxfd = 2;
	bool is_dumped_fd[3] = { false, false, false };
	struct rlimit nofile;
	struct dirent *de;
	sigset_t all;
	uint8_t *t;
	DIR *dir;

	memset(rep, 0, sizeof(*rep));
	rep->uffd = -1;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	errno = 0;
	if (r->nfdi > sizeof(tmpfd) / sizeof(tmpfd[0]))
		report_fail(wfd, rep, "too many open files in the dump (%zu)", r->nfdi);

	t = mmap((void *)(uintptr_t)r->tramp, 2 * RS_PAGE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (t != (void *)(uintptr_t)r->tramp)
		report_fail(wfd, rep, "mmap trampoline at 0x%" PRIx64 ": %s", r->tramp,
			    strerror(errno));
	memset(t, 0xcc, RS_PAGE);
	t[0] = 0x0f;
	t[1] = 0x05;
	if (mprotect(t, RS_PAGE, PROT_READ | PROT_EXEC) < 0)
		report_fail(wfd, rep, "mprotect trampoline: %s", strerror(errno));

	/* Open every file first, anywhere; then lift them all above what is in use. */
	for (size_t i = 0; i < r->nfdi; i++) {
		const RegFileEntry *re = file_by_id(r, r->fdi[i]->id);
		int fl = (int)(re->flags & ~(uint32_t)(O_CREAT | O_TRUNC | O_EXCL | O_CLOEXEC));

		tmpfd[i] = open(re->name, fl | O_NOCTTY);
		if (tmpfd[i] < 0)
			report_fail(wfd, rep, "fd %u: open %s: %s", r->fdi[i]->fd, re->name,
				    strerror(errno));
		if (!S_ISCHR(re->mode) && !S_ISDIR(re->mode) &&
		    lseek(tmpfd[i], (off_t)re->pos, SEEK_SET) < 0)
			report_fail(wfd, rep, "fd %u: seek %s: %s", r->fdi[i]->fd, re->name,
				    strerror(errno));
		if ((int)r->fdi[i]->fd > maxfd)
			maxfd = (int)r->fdi[i]->fd;
		if (r->fdi[i]->fd <= 2)
			is_dumped_fd[r->fdi[i]->fd] = true;
	}
	for (int k = 0; k < r->nmf; k++) {
		rep->mapfd[k] = open(r->mf[k].re->name, (r->mf[k].rw ? O_RDWR : O_RDONLY));
		if (rep->mapfd[k] < 0)
			report_fail(wfd, rep, "open %s: %s", r->mf[k].re->name, strerror(errno));
	}
	if (r->o->stdio && strcmp(r->o->stdio, "inherit")) {
		const char *p = strcmp(r->o->stdio, "null") ? r->o->stdio : "/dev/null";

		stdio_fd = open(p, strcmp(p, "/dev/null") ? O_WRONLY | O_CREAT | O_APPEND : O_RDWR,
				0600);
		if (stdio_fd < 0)
			report_fail(wfd, rep, "--stdio %s: %s", p, strerror(errno));
	}
	/* Everything open now is below some bound: find it. */
	dir = opendir("/proc/self/fd");
	if (!dir)
		report_fail(wfd, rep, "/proc/self/fd: %s", strerror(errno));
	while ((de = readdir(dir)))
		if (de->d_name[0] != '.' && atoi(de->d_name) > hi)
			hi = atoi(de->d_name);
	closedir(dir);
	if (maxfd > hi)
		hi = maxfd;
	hi++;
	for (size_t i = 0; i < r->nfdi; i++)
		if ((tmpfd[i] = lift(tmpfd[i], hi)) < 0)
			report_fail(wfd, rep, "dup: %s", strerror(errno));
	for (int k = 0; k < r->nmf; k++)
		if ((rep->mapfd[k] = lift(rep->mapfd[k], hi)) < 0)
			report_fail(wfd, rep, "dup: %s", strerror(errno));
	if (stdio_fd >= 0 && (stdio_fd = lift(stdio_fd, hi)) < 0)
		report_fail(wfd, rep, "dup: %s", strerror(errno));
	if ((wfd = lift(wfd, hi)) < 0)
		_exit(1);
	/* Close every fd of ours below: only stdio stays, when inherited. */
	for (int fd = stdio_fd >= 0 ? 0 : 3; fd < hi; fd++)
		close(fd);
	for (size_t i = 0; i < r->nfdi; i++) {
		int fl = r->fdi[i]->flags & FD_CLOEXEC ? O_CLOEXEC : 0;

		if (dup3(tmpfd[i], (int)r->fdi[i]->fd, fl) < 0)
			report_fail(wfd, rep, "dup3 to fd %u: %s", r->fdi[i]->fd, strerror(errno));
		close(tmpfd[i]);
	}
	/* Of fds 0-2 that were not files, those it had get --stdio; the others stay closed. */
	for (int fd = 0; fd < 3; fd++)
		if (!is_dumped_fd[fd] && tc->has_nonfile_stdio && !(tc->nonfile_stdio & (1u << fd)))
			close(fd);
	if (stdio_fd >= 0) {
		for (int fd = 0; fd < 3; fd++) {
			if (is_dumped_fd[fd] || (tc->has_nonfile_stdio && !(tc->nonfile_stdio & (1u << fd))))
				continue;
			if (fd == 0 && strcmp(r->o->stdio, "null")) {
				int nfd = open("/dev/null", O_RDONLY);

				if (nfd >= 0 && nfd != 0) {
					dup2(nfd, 0);
					close(nfd);
				}
				continue;
			}
			dup2(stdio_fd, fd);
		}
		close(stdio_fd);
	}

	if (!r->o->eager) {
		struct uffdio_api api = { .api = UFFD_API, .features = RS_FEATURES };
		int u = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK), keep;

		if (u < 0 || ioctl(u, UFFDIO_API, &api) < 0)
			report_fail(wfd, rep, "userfaultfd: %s", strerror(errno));
		/* A copy of its own, high and close-on-exec: if the manager dies, faults
		 * wait instead of reading zeros. */
		keep = 1023;
		if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur <= 1023)
			keep = (int)nofile.rlim_cur - 1;
		if (keep <= wfd + r->nmf + 1)
			keep = wfd + r->nmf + 1;
		rep->uffd = fcntl(u, F_DUPFD_CLOEXEC, keep);
		if (rep->uffd < 0)
			report_fail(wfd, rep, "dup uffd: %s", strerror(errno));
		close(u);
	}
	if (cwd && chdir(cwd->name) < 0)
		report_fail(wfd, rep, "chdir %s: %s", cwd->name, strerror(errno));
	umask(r->fs->has_umask ? r->fs->umask : 022);
	if (personality(tc->personality) < 0)
		report_fail(wfd, rep, "personality: %s", strerror(errno));
	/* Handlers: the kernel's own struct, so the dumped restorer stays. */
	for (int sig = 1; sig <= CORE_NSIG; sig++) {
		uint64_t ksa[4] = { 0, 0, 0, 0 };

		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		for (size_t i = 0; i < tc->n_sigactions; i++) {
			const SaEntry *s = tc->sigactions[i];

			if (s->has_uffd_signo && (int)s->uffd_signo == sig) {
				ksa[0] = s->sigaction;
				ksa[1] = s->flags;
				ksa[2] = s->restorer;
				ksa[3] = s->mask;
			}
		}
		if (syscall(SYS_rt_sigaction, sig, ksa, NULL, 8) < 0 && sig < 32)
			report_fail(wfd, rep, "rt_sigaction %d: %s", sig, strerror(errno));
	}
	if (th->sas && !(th->sas->ss_flags & SS_DISABLE)) {
		stack_t ss = { .ss_sp = (void *)(uintptr_t)th->sas->ss_sp,
			       .ss_flags = (int)(th->sas->ss_flags & ~SS_ONSTACK),
			       .ss_size = th->sas->ss_size };

		if (sigaltstack(&ss, NULL) < 0)
			report_fail(wfd, rep, "sigaltstack: %s", strerror(errno));
	}
	syscall(SYS_set_tid_address, r->core->thread_info->clear_tid_addr);
	if (tc->has_uffd_robust_list && tc->uffd_robust_list &&
	    syscall(SYS_set_robust_list, tc->uffd_robust_list, tc->uffd_robust_list_len) < 0)
		report_fail(wfd, rep, "set_robust_list: %s", strerror(errno));
	prctl(PR_SET_NAME, tc->comm, 0, 0, 0);

	if (write(wfd, rep, sizeof(*rep)) != (ssize_t)sizeof(*rep))
		_exit(1);
	close(wfd);
	for (;;)
		pause();	/* every signal blocked: only ptrace wakes us */
}

/* Fork the helper and wait until it is ready. */
static int start_helper(struct rs *r)
{
	struct pollfd p;
	int pfd[2];
	ssize_t n;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return rfail(r, errno, "pipe: %s", strerror(errno));
	fflush(NULL);
	r->child = fork();
	if (r->child < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return rfail(r, errno, "fork: %s", strerror(errno));
	}
	if (r->child == 0) {
		close(pfd[0]);
		helper(r, pfd[1]);
	}
	close(pfd[1]);
	p.fd = pfd[0];
	p.events = POLLIN;
	if (poll(&p, 1, RS_READY_MS) <= 0) {
		close(pfd[0]);
		return rfail(r, ETIMEDOUT, "the helper did not get ready");
	}
	n = read(pfd[0], &r->rep, sizeof(r->rep));
	if (n != (ssize_t)sizeof(r->rep)) {
		close(pfd[0]);
		return rfail(r, EIO, "the helper died while getting ready");
	}
	if (r->rep.err || r->rep.msg[0]) {
		close(pfd[0]);
		return rfail(r, r->rep.err ? r->rep.err : EIO, "%s", r->rep.msg);
	}
	/* End of file: it closed its end too, and has nothing left to do but sleep. */
	if (poll(&p, 1, RS_READY_MS) <= 0 || read(pfd[0], &n, 1) != 0) {
		close(pfd[0]);
		return rfail(r, EIO, "the helper did not close its pipe");
	}
	close(pfd[0]);
	r->pidfd = (int)syscall(SYS_pidfd_open, r->child, 0);
	if (r->pidfd < 0)
		return rfail(r, errno, "pidfd_open: %s", strerror(errno));
	return 0;
}

/* ---- building the address space ---- */

/* Run NR in the helper; a failed call is a failed restore naming WHAT. */
static int sys(struct rs *r, long *res, const char *what, long nr, long a1, long a2, long a3,
	       long a4, long a5, long a6)
{
	long ret = 0;
	int e = pt_syscall(&r->pt, &ret, nr, a1, a2, a3, a4, a5, a6);

	r->st->syscalls++;
	if (e < 0)
		return rfail(r, e, "%s: cannot run it in the helper: %s", what, strerror(-e));
	if (ret < 0 && ret > -4096)
		return rfail(r, (int)-ret, "%s: %s", what, strerror((int)-ret));
	if (res)
		*res = ret;
	return 0;
}

/* Unmap all the helper has but the trampoline and the special areas. */
static int empty_helper(struct rs *r)
{
	struct procfs_maps m;
	char why[256], what[96];
	int ret;

	memset(&m, 0, sizeof(m));
	ret = read_maps(r->child, &m, why, sizeof(why));
	if (ret < 0)
		return rfail(r, ret, "%s", why);
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
		return rfail(r, ENOTSUP, "vdso/vvar areas are spread too far");
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
 * lazy: what the kernel reads for others (argv, env, auxv), the stack under
 * the stack pointer, and the rseq area. Returns the ranges in OUT (up to 4).
 */
static int eager_extra(const struct rs *r, uint64_t out[][2])
{
	const MmEntry *mm = r->task.mm;
	const ThreadCoreEntry *th = r->core->thread_core;
	uint64_t sp = r->core->thread_info->gpregs->sp;
	int n = 0;

	out[n][0] = pg_down(sp - 256 > sp ? 0 : sp - 256);
	out[n][1] = pg_up(sp + 1) + RS_PAGE;
	n++;
	if (mm->mm_start_stack && mm->mm_env_end > mm->mm_start_stack &&
	    mm->mm_env_end - mm->mm_start_stack < (64ull << 20)) {
		out[n][0] = pg_down(mm->mm_start_stack);
		out[n][1] = pg_up(mm->mm_env_end);
		n++;
	}
	if (mm->mm_arg_start < mm->mm_env_end) {
		out[n][0] = pg_down(mm->mm_arg_start);
		out[n][1] = pg_up(mm->mm_env_end);
		n++;
	}
	if (th->uffd_rseq) {
		out[n][0] = pg_down(th->uffd_rseq->rseq_abi_pointer);
		out[n][1] = pg_up(th->uffd_rseq->rseq_abi_pointer + th->uffd_rseq->rseq_abi_size);
		n++;
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

/* Write [A, A+LEN) of RUN into the process, in chunks. */
static int put_pages(struct rs *r, const struct pm_run *run, uint64_t base, uint64_t a,
		     uint64_t len)
{
	for (uint64_t n = 0; n < len; n += RS_WRITE_CHUNK) {
		uint64_t k = len - n < RS_WRITE_CHUNK ? len - n : RS_WRITE_CHUNK;
		int ret = pt_write(&r->pt, a + n, run->pf->base + run->off + (a - base) + n, k);

		if (ret < 0)
			return rfail(r, ret, "write pages at 0x%" PRIx64 ": %s", a + n,
				     strerror(-ret));
	}
	r->st->eager_pages += len / RS_PAGE;
	return 0;
}

/*
 * Write the eager pages of area V (WRITE), or only say whether it has any
 * (returns 1). Costs one step per pagemap run, whatever the size.
 */
static int for_eager(struct rs *r, const VmaEntry *v, bool write)
{
	uint64_t extra[4][2];
	int nx = merge_ranges(extra, eager_extra(r, extra));
	uint64_t a = v->start;
	int ret;

	while (a < v->end) {
		struct pm_run run;
		uint64_t len, done = 0;

		pagemap_resolve(r->task.pm, a, v->end - a, &run);
		len = run.len ? run.len : RS_PAGE;
		if (run.src == PM_NODATA)
			return rfail(r, ENOTSUP, "page 0x%" PRIx64 " is not in these images "
				     "(a remote dump): not supported", a);
		if (run.src != PM_DATA) {
			a += len;
			continue;
		}
		if (r->o->eager || !(run.flags & PE_LAZY)) {
			if (!write)
				return 1;
			ret = put_pages(r, &run, a, a, len);
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
			ret = put_pages(r, &run, a, s, e - s);
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

/* Map every dumped area where it was. */
static int map_areas(struct rs *r)
{
	const MmEntry *mm = r->task.mm;
	char what[128];
	int ret;

	for (size_t i = 0; i < mm->n_vmas; i++) {
		const VmaEntry *v = mm->vmas[i];
		long flags = MAP_FIXED, fd = -1, res;
		uint32_t prot = v->prot;

		if (skip_area(v))
			continue;
		if (v->end >= RS_TASK_TOP || v->start >= v->end)
			return rfail(r, ENOTSUP, "area 0x%" PRIx64 "-0x%" PRIx64 " is out of range",
				     v->start, v->end);
		if (v->status & VMA_ANON_SHARED)
			return rfail(r, ENOTSUP, "area 0x%" PRIx64 " is shared anonymous memory: "
				     "not supported", v->start);
		ret = for_eager(r, v, false);
		if (ret < 0)
			return ret;
		if (ret == 1 && !(prot & PROT_WRITE)) {
			prot |= PROT_WRITE;
			r->vma_wr[i] = true;
		}
		if (v->status & VMA_ANON_PRIVATE) {
			flags |= MAP_PRIVATE | MAP_ANONYMOUS;
		} else if (r->vma_mf[i] >= 0) {
			flags |= v->status & VMA_FILE_SHARED ? MAP_SHARED : MAP_PRIVATE;
			fd = r->rep.mapfd[r->vma_mf[i]];
		} else {
			return rfail(r, ENOTSUP, "area 0x%" PRIx64 ": unknown kind (status 0x%x)",
				     v->start, v->status);
		}
		if (v->flags & MAP_GROWSDOWN)
			flags |= MAP_GROWSDOWN;
		for (size_t k = 0; k < r->core->tc->n_uffd_noreserve; k++)
			if (r->core->tc->uffd_noreserve[k] == v->start)
				flags |= MAP_NORESERVE;
		snprintf(what, sizeof(what), "mmap 0x%" PRIx64 "-0x%" PRIx64 "%s%s", v->start,
			 v->end, fd >= 0 ? " of " : "", fd >= 0 ? r->mf[r->vma_mf[i]].re->name : "");
		ret = sys(r, &res, what, SYS_mmap, (long)v->start, (long)(v->end - v->start),
			  (long)prot, flags, fd, fd >= 0 ? (long)v->pgoff : 0);
		if (ret < 0)
			return ret;
		if ((uint64_t)res != v->start)
			return rfail(r, EFAULT, "%s: mapped at 0x%lx", what, res);
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

		if (skip_area(v))
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
	const RegFileEntry *exe = file_by_id(r, r->core->tc->uffd_exe_file_id);
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
		return rfail(r, EINVAL, "saved auxv too long (%zu words)", auxn);
	for (int k = 0; k < r->nmf; k++)
		if (r->mf[k].re->uffd_ino == exe->uffd_ino)
			m.exe_fd = (uint32_t)r->rep.mapfd[k];
	m.auxv = scratch + sizeof(m);
	m.auxv_size = (uint32_t)(auxn * 8);
	ret = pt_write(&r->pt, scratch, &m, sizeof(m));
	if (ret == 0 && auxn)
		ret = pt_write(&r->pt, m.auxv, mm->mm_saved_auxv, auxn * 8);
	if (ret < 0)
		return rfail(r, ret, "write the scratch page: %s", strerror(-ret));
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
	return 0;
}

/* Drop the helper's own rseq registration (glibc's, in memory now gone); take the dumped one. */
static int set_rseq(struct rs *r, bool dumped)
{
	const RseqEntry *rs = r->core->thread_core->uffd_rseq;
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
		.features = RS_FEATURES,
		.pidfd = r->pidfd,
		.dirfd = r->dirfd,
	};
	char reason[512];
	uint64_t lazy = 0;
	int ret;

	r->uffd = pt_getfd(&r->pt, r->rep.uffd);
	if (r->uffd < 0)
		return rfail(r, r->uffd, "pidfd_getfd of the uffd: %s", strerror(-r->uffd));
	h.uffd = r->uffd;
	ret = handover_send(&h, &lazy, reason, sizeof(reason));
	if (ret < 0)
		return rfail(r, ret, "hand-over to %s: %s", sock, reason);
	return 0;
}

/* The dumped registers, FPU state and mask: the last thing before it runs. */
static int set_regs(struct rs *r)
{
	const UserX86RegsEntry *g = r->core->thread_info->gpregs;
	const ProtobufCBinaryData *xs = &r->core->thread_info->fpregs->uffd_xstate;
	struct user_regs_struct u;
	uint64_t mask = r->core->tc->blk_sigset;
	struct iovec iov = { xs->data, xs->len };

	memset(&u, 0, sizeof(u));
	u.r15 = g->r15; u.r14 = g->r14; u.r13 = g->r13; u.r12 = g->r12;
	u.rbp = g->bp; u.rbx = g->bx; u.r11 = g->r11; u.r10 = g->r10;
	u.r9 = g->r9; u.r8 = g->r8; u.rax = g->ax; u.rcx = g->cx;
	u.rdx = g->dx; u.rsi = g->si; u.rdi = g->di; u.orig_rax = g->orig_ax;
	u.rip = g->ip; u.cs = g->cs; u.eflags = g->flags; u.rsp = g->sp;
	u.ss = g->ss; u.fs_base = g->fs_base; u.gs_base = g->gs_base;
	u.ds = g->ds; u.es = g->es; u.fs = g->fs; u.gs = g->gs;
	/*
	 * A sleep cut short with a restart block (nanosleep, poll, futex with a
	 * timeout) continues from kernel state the helper does not have: run
	 * the same call again instead, from its start.
	 */
	if ((long)u.orig_rax >= 0 && (long)u.rax == -RS_ERESTART_RESTARTBLOCK)
		u.rax = (unsigned long long)-RS_ERESTARTNOINTR;
	if (ptrace(PTRACE_SETREGS, r->child, NULL, &u) < 0)
		return rfail(r, errno, "PTRACE_SETREGS: %s", strerror(errno));
	if (ptrace(PTRACE_SETREGSET, r->child, (void *)NT_X86_XSTATE, &iov) < 0)
		return rfail(r, errno, "PTRACE_SETREGSET NT_X86_XSTATE (%zu bytes): %s", xs->len,
			     strerror(errno));
	if (ptrace(PTRACE_SETSIGMASK, r->child, (void *)sizeof(mask), &mask) < 0)
		return rfail(r, errno, "PTRACE_SETSIGMASK: %s", strerror(errno));
	return 0;
}

static int build(struct rs *r)
{
	char why[512];
	int ret;

	ret = pt_seize(&r->pt, r->child, why, sizeof(why));
	if (ret < 0)
		return rfail(r, ret, "cannot seize the helper: %s", why);
	r->seized = true;
	r->pt.syscall_ip = r->tramp;
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
	if (ret == 0)
		ret = set_regs(r);
	/* Dumped in a group stop: stopped again before it runs an instruction. */
	if (ret == 0 && r->core->tc->task_state == 3 && kill(r->child, SIGSTOP) < 0)
		ret = rfail(r, errno, "SIGSTOP: %s", strerror(errno));
	if (ret == 0) {
		ret = pt_detach(&r->pt);
		r->seized = false;
		if (ret < 0)
			return rfail(r, ret, "detach: %s", strerror(-ret));
	}
	return ret;
}

static void cleanup(struct rs *r, bool ok)
{
	if (!ok && r->child > 0) {
		kill(r->child, SIGKILL);
		if (r->seized)
			pt_detach(&r->pt);
		r->seized = false;
		waitpid(r->child, NULL, 0);
	}
	if (r->uffd >= 0)
		close(r->uffd);
	if (r->pidfd >= 0)
		close(r->pidfd);
	if (r->dirfd >= 0)
		close(r->dirfd);
	if (r->task_loaded)
		img_task_free(&r->task, &r->cache);
	if (r->core)
		core_entry__free_unpacked(r->core, NULL);
	if (r->fs)
		fs_entry__free_unpacked(r->fs, NULL);
	for (size_t i = 0; i < r->nfiles; i++)
		file_entry__free_unpacked(r->files[i], NULL);
	for (size_t i = 0; i < r->nfdi; i++)
		fdinfo_entry__free_unpacked(r->fdi[i], NULL);
	free(r->files);
	free(r->fdi);
	free(r->vma_mf);
	free(r->vma_wr);
}

int restore_run(const struct restore_opts *o, struct restore_stats *st)
{
	struct restore_stats local;
	struct procfs_maps own;
	struct rs *r;
	char why[256];
	int ret;

	if (!st)
		st = &local;
	memset(st, 0, sizeof(*st));
	r = calloc(1, sizeof(*r));
	if (!r) {
		fprintf(stderr, "uffd-inject: restore: out of memory\n");
		return -ENOMEM;
	}
	memset(&own, 0, sizeof(own));
	r->o = o;
	r->st = st;
	r->dirfd = r->pidfd = r->uffd = -1;
	clock_gettime(CLOCK_MONOTONIC, &r->t0);

	ret = load(r);
	if (ret == 0)
		ret = check_files(r);
	if (ret == 0)
		ret = plan_areas(r);
	if (ret == 0) {
		ret = read_maps(getpid(), &own, why, sizeof(why));
		if (ret < 0)
			rfail(r, ret, "%s", why);
	}
	if (ret == 0)
		ret = read_specials(r, &own);
	if (ret == 0)
		ret = pick_trampoline(r, &own);
	procfs_maps_free(&own);
	if (ret == 0)
		ret = start_helper(r);
	if (ret == 0)
		ret = build(r);
	st->total_s = since(&r->t0);
	if (ret == 0) {
		st->pid = r->child;
		if (o->out) {
			fprintf(o->out, "%d\n", (int)r->child);
			fprintf(o->out, "uffd-inject: restored %s (pid %u) as pid %d in %.1f ms: "
				"%" PRIu64 " pages written, %" PRIu64 " lazy%s, %u syscalls\n",
				o->dir, r->pid, (int)r->child, st->total_s * 1e3, st->eager_pages,
				st->lazy_pages, o->eager ? "" : " (served by the manager)",
				st->syscalls);
			fflush(o->out);
		}
	} else {
		fprintf(stderr, "uffd-inject: restore: %s: %s\n", o->dir,
			r->why[0] ? r->why : strerror(-ret));
	}
	cleanup(r, ret == 0);
	free(r);
	return ret;
}

static const char restore_usage[] =
	"usage: uffd-inject restore --images DIR [--socket S] [--eager] "
	"[--stdio inherit|null|FILE]\n";

static const char restore_help[] =
	"\n"
	"Bring back the single-threaded process dumped into DIR by\n"
	"`uffd-inject dump --kill`: same address space, files, cwd, signal handlers\n"
	"and mask, rseq and registers; only its pid differs. Its anonymous memory is\n"
	"left empty and handed to uffd-manager, which serves it on demand; the pages\n"
	"the kernel reads for others (argv, environment, auxv, the stack under the\n"
	"stack pointer, rseq) are written before it runs. Prints the new pid.\n"
	"\n"
	"options:\n"
	"  -D, --images DIR    the dump\n"
	"  -s, --socket PATH   the manager's socket (default: uffd-manager's)\n"
	"  -e, --eager         write every page before it runs; no manager needed\n"
	"      --stdio WHAT    fds 0-2 that were not files: inherit ours (default),\n"
	"                      null (/dev/null), or FILE (output appended to FILE)\n"
	"  -h, --help          show this help\n"
	"\n"
	"Exit status: 0 restored (it runs), 1 failed (nothing is left running),\n"
	"2 usage error. See uffd-inject(8).\n";

int restore_cmd(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "images", required_argument, NULL, 'D' },
		{ "socket", required_argument, NULL, 's' },
		{ "eager", no_argument, NULL, 'e' },
		{ "stdio", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct restore_opts o = { .out = stdout };
	char sock[108];
	int c;

	while ((c = getopt_long(argc, argv, "D:s:eh", opts, NULL)) != -1) {
		switch (c) {
		case 'D':
			o.dir = optarg;
			break;
		case 's':
			o.socket = optarg;
			break;
		case 'e':
			o.eager = true;
			break;
		case 'S':
			if (!optarg[0]) {
				fprintf(stderr, "uffd-inject restore: --stdio needs inherit, null or "
					"a file\n%s", restore_usage);
				return 2;
			}
			o.stdio = optarg;
			break;
		case 'h':
			fputs(restore_usage, stdout);
			fputs(restore_help, stdout);
			return 0;
		default:
			fputs(restore_usage, stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "uffd-inject restore: unexpected argument '%s'\n%s", argv[optind],
			restore_usage);
		return 2;
	}
	if (!o.dir || !o.dir[0]) {
		fprintf(stderr, "uffd-inject restore: --images is required\n%s", restore_usage);
		return 2;
	}
	if (!o.eager && !o.socket) {
		if (handover_default_socket(sock, sizeof(sock)) < 0) {
			fprintf(stderr, "uffd-inject restore: no default manager socket: give "
				"--socket, or --eager\n%s", restore_usage);
			return 2;
		}
		o.socket = sock;
	}
	return restore_run(&o, NULL) < 0 ? 1 : 0;
}
