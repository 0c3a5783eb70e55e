/*
 * Planning a restore from its images: see restore_plan.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"
#include "image.h"
#include "pstree.pb-c.h"
#include "restore_plan.h"

#define RS_ASAN_LO	0x600000000000ull	/* kept clear for ASan builds of the tests */
#define RS_ASAN_HI	0x640000000000ull

const RseqEntry *rs_rseq(const CoreEntry *core)
{
	const ThreadCoreEntry *th = core->thread_core;

	return th->rseq_entry ? th->rseq_entry : th->uffd_rseq;
}

const RegFileEntry *rs_file_by_id(const struct rs *r, uint32_t id)
{
	for (size_t i = 0; i < r->nfiles; i++)
		if (r->files[i]->id == id && r->files[i]->reg)
			return r->files[i]->reg;
	return NULL;
}

/* Is ID a MEMFD record of files.img (a memfd, served by restore_shm.c)? */
static bool is_memfd(const struct rs *r, uint32_t id)
{
	for (size_t i = 0; i < r->nfiles; i++)
		if (r->files[i]->id == id && r->files[i]->type == SHM_FD_TYPE_MEMFD &&
		    r->files[i]->memfd)
			return true;
	return false;
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
		return rs_fail(r, ENOENT, "%s/%s: missing: dumped without --kill, or not by "
			     "uffd-inject", r->o->dir, name);
	if (ret < 0)
		return rs_fail(r, ret, "%s/%s", r->o->dir, err.msg);
	while ((ret = img_next(&rd, desc, &m, &err)) == 1) {
		ProtobufCMessage **nv = realloc(*out, (*n + 1) * sizeof(*nv));

		if (!nv || *n >= 65536) {
			protobuf_c_message_free_unpacked(m, NULL);
			free(nv);
			img_close(&rd);
			return rs_fail(r, ENOMEM, "%s/%s: too many records", r->o->dir, name);
		}
		*out = nv;
		(*out)[(*n)++] = m;
	}
	img_close(&rd);
	if (ret < 0)
		return rs_fail(r, ret, "%s/%s", r->o->dir, err.msg);
	return 0;
}

/* Is CORE (of file NAME) a thread record restore can install? */
static int check_core(struct rs *r, const CoreEntry *core, const char *name)
{
	if (core->mtype != 1 || !core->thread_info || !core->thread_info->gpregs ||
	    !core->thread_info->fpregs || !core->thread_core ||
	    !core->thread_info->fpregs->has_uffd_xstate)
		return rs_fail(r, EINVAL, "%s/%s: not an x86_64 core written by uffd-inject",
			       r->o->dir, name);
	return 0;
}

/*
 * The threads of the process from its pstree.img record, the main thread
 * first, each with its core-TID.img (the main one's is R->core already).
 */
static int load_threads(struct rs *r)
{
	PstreeEntry **ps = NULL, *me = NULL;
	size_t nps = 0;
	int ret;

	ret = load_records(r, "pstree.img", IMG_PSTREE_MAGIC, &pstree_entry__descriptor,
			   (ProtobufCMessage ***)&ps, &nps);
	for (size_t i = 0; ret == 0 && i < nps; i++)
		if (ps[i]->pid == r->pid)
			me = ps[i];
	if (ret == 0 && !me)
		ret = rs_fail(r, EINVAL, "%s/pstree.img: no record of pid %u", r->o->dir, r->pid);
	if (ret == 0 && me->n_threads > RS_MAX_THREADS)
		ret = rs_fail(r, ENOTSUP, "%s/pstree.img: pid %u has %zu threads: restore takes at "
			      "most %d", r->o->dir, r->pid, me->n_threads, RS_MAX_THREADS);
	if (ret == 0) {
		r->th = calloc(me->n_threads + 1, sizeof(*r->th));
		if (!r->th)
			ret = rs_fail(r, ENOMEM, "out of memory");
	}
	if (ret == 0) {
		r->th[0] = (struct rs_thread){ .core = r->core, .tid = r->pid };
		r->nth = 1;
	}
	for (size_t i = 0; ret == 0 && i < me->n_threads; i++) {
		uint32_t tid = me->threads[i];
		struct img_err err;
		char name[64];

		if (tid == r->pid)
			continue;
		for (size_t k = 0; k < r->nth; k++)
			if (r->th[k].tid == tid)
				tid = 0;
		if (tid == 0 || tid > INT_MAX) {
			ret = rs_fail(r, EINVAL, "%s/pstree.img: thread id %u of pid %u is listed "
				      "twice or out of range", r->o->dir, me->threads[i], r->pid);
			break;
		}
		snprintf(name, sizeof(name), "core-%u.img", tid);
		ret = img_read_one(r->dirfd, name, IMG_CORE_MAGIC, &core_entry__descriptor,
				   (ProtobufCMessage **)&r->th[r->nth].core, &err);
		if (ret == -ENOENT)
			ret = rs_fail(r, ENOENT, "%s/%s: missing: pstree.img lists thread %u of pid "
				      "%u", r->o->dir, name, tid, r->pid);
		else if (ret < 0)
			ret = rs_fail(r, ret, "%s/%s", r->o->dir, err.msg);
		if (ret < 0)
			break;
		r->th[r->nth].tid = tid;
		r->nth++;
		ret = check_core(r, r->th[r->nth - 1].core, name);
	}
	if (ret == 0 && me->n_threads && r->nth != me->n_threads)
		ret = rs_fail(r, EINVAL, "%s/pstree.img: pid %u is not among its own threads",
			      r->o->dir, r->pid);
	for (size_t i = 0; i < nps; i++)
		pstree_entry__free_unpacked(ps[i], NULL);
	free(ps);
	return ret;
}

/* Read every image and check it against itself and against this machine. */
int restore_plan_load(struct rs *r)
{
	struct img_err err;
	uint32_t *pids = NULL;
	size_t n = 0;
	bool from_pstree;
	char name[64];
	int ret;

	r->dirfd = open(r->o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r->dirfd < 0)
		return rs_fail(r, errno, "%s: %s", r->o->dir, strerror(errno));
	ret = img_list_tasks(r->dirfd, &pids, &n, &from_pstree, &err);
	if (ret < 0)
		return rs_fail(r, ret, "%s/%s", r->o->dir, err.msg);
	if (n != 1 && !r->tree) {
		free(pids);
		return rs_fail(r, ENOTSUP, "%s holds %zu processes: restore takes one", r->o->dir, n);
	}
	if (!r->tree)
		r->pid = pids[0];	/* a tree's process has its pid already */
	free(pids);
	/* Lazy shared memory is counted as such (the manager loads it the same way). */
	ret = img_task_load_opts(&r->task, r->dirfd, r->pid, &r->cache, 0,
				 r->o->eager ? 0 : IMG_LOAD_SHM_LAZY, &err);
	if (ret < 0)
		return rs_fail(r, ret, "%s/%s", r->o->dir, err.msg);
	r->task_loaded = true;
	if (!r->task.mm || !r->task.pm)
		return rs_fail(r, ENOENT, "%s: task %u has no memory images", r->o->dir, r->pid);
	snprintf(name, sizeof(name), "core-%u.img", r->pid);
	ret = img_read_one(r->dirfd, name, IMG_CORE_MAGIC, &core_entry__descriptor,
			   (ProtobufCMessage **)&r->core, &err);
	if (ret == -ENOENT)
		return rs_fail(r, ENOENT, "%s/%s: missing: the dump was made without --kill, so "
			     "it holds memory only", r->o->dir, name);
	if (ret < 0)
		return rs_fail(r, ret, "%s/%s", r->o->dir, err.msg);
	ret = check_core(r, r->core, name);
	if (ret < 0)
		return ret;
	if (!r->core->tc)
		return rs_fail(r, EINVAL, "%s/%s: the main thread's core has no task record",
			     r->o->dir, name);
	ret = load_threads(r);
	if (ret < 0)
		return ret;
	snprintf(name, sizeof(name), "fs-%u.img", r->pid);
	ret = img_read_one(r->dirfd, name, IMG_FS_MAGIC, &fs_entry__descriptor,
			   (ProtobufCMessage **)&r->fs, &err);
	if (ret < 0)
		return rs_fail(r, ret, "%s/%s", r->o->dir, err.msg);
	ret = load_records(r, CORE_FILES_IMG, IMG_FILES_MAGIC, &file_entry__descriptor,
			   (ProtobufCMessage ***)&r->files, &r->nfiles);
	snprintf(name, sizeof(name), "fdinfo-%u.img", r->files_id ? r->files_id : 1);
	if (ret == 0)
		ret = load_records(r, name, IMG_FDINFO_MAGIC, &fdinfo_entry__descriptor,
				   (ProtobufCMessage ***)&r->fdi, &r->nfdi);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < r->nfdi; i++)
		if ((!rs_file_by_id(r, r->fdi[i]->id) &&
		     !(r->fdi[i]->type == SHM_FD_TYPE_MEMFD && is_memfd(r, r->fdi[i]->id))) ||
		    r->fdi[i]->fd > INT_MAX / 2)
			return rs_fail(r, EINVAL, "%s/%s: fd %u names no file", r->o->dir,
				     name, r->fdi[i]->fd);
	return 0;
}

/* Every file must be the one that was dumped, unchanged. */
int restore_plan_check_files(struct rs *r)
{
	for (size_t i = 0; i < r->nfiles; i++) {
		const RegFileEntry *re = r->files[i]->reg;
		struct stat st;

		if (!re && r->files[i]->type == SHM_FD_TYPE_MEMFD && r->files[i]->memfd)
			continue;	/* a memfd: restore_shm.c */
		if (!re)
			return rs_fail(r, EINVAL, "%s/%s: a file record without a regular file",
				     r->o->dir, CORE_FILES_IMG);
		if (stat(re->name, &st) < 0)
			return rs_fail(r, errno, "%s: %s", re->name, strerror(errno));
		if (S_ISCHR(st.st_mode))
			continue;
		if (st.st_ino != re->uffd_ino)
			return rs_fail(r, ESTALE, "%s was replaced since the dump (inode %" PRIu64
				     ", was %" PRIu64 ")", re->name, (uint64_t)st.st_ino,
				     re->uffd_ino);
		if (S_ISDIR(st.st_mode))
			continue;
		if ((uint64_t)st.st_size != re->size || ts_ns(&st.st_mtim) != re->uffd_mtime_ns)
			return rs_fail(r, ESTALE, "%s changed since the dump (size %" PRIu64
				     ", was %" PRIu64 "; mtime differs: %s)", re->name,
				     (uint64_t)st.st_size, re->size,
				     ts_ns(&st.st_mtim) != re->uffd_mtime_ns ? "yes" : "no");
	}
	return 0;
}

/* Which file backs each area; which areas get written before they run. */
int restore_plan_areas(struct rs *r)
{
	const MmEntry *mm = r->task.mm;
	const RegFileEntry *exe;
	bool by_id = r->core->tc->has_uffd_shmid_file_id && r->core->tc->uffd_shmid_file_id;

	r->vma_mf = calloc(mm->n_vmas + 1, sizeof(*r->vma_mf));
	r->vma_wr = calloc(mm->n_vmas + 1, sizeof(*r->vma_wr));
	if (!r->vma_mf || !r->vma_wr)
		return rs_fail(r, ENOMEM, "out of memory");
	for (size_t i = 0; i < mm->n_vmas; i++) {
		const VmaEntry *v = mm->vmas[i];
		const RegFileEntry *re;
		int k;

		r->vma_mf[i] = -1;
		/* Shared memory (a memfd record) is restore_shm.c's. */
		if (!(v->status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED)) ||
		    (v->status & VMA_AREA_MEMFD))
			continue;
		/* As CRIU, the file's id in files.img; in older dumps, its inode. */
		re = !by_id ? file_by_ino(r, v->shmid) :
		     v->shmid <= UINT32_MAX ? rs_file_by_id(r, (uint32_t)v->shmid) : NULL;
		if (!re)
			return rs_fail(r, EINVAL, "area 0x%" PRIx64 "-0x%" PRIx64 ": no file record for "
				     "%s %" PRIu64, v->start, v->end, by_id ? "id" : "inode",
				     v->shmid);
		for (k = 0; k < r->nmf && r->mf[k].re != re; k++)
			;
		if (k == r->nmf) {
			if (r->nmf == RS_MAX_MAPFILES)
				return rs_fail(r, ENOTSUP, "more than %d mapped files",
					     RS_MAX_MAPFILES);
			r->mf[r->nmf++].re = re;
		}
		if ((v->status & VMA_FILE_SHARED) && (v->prot & PROT_WRITE))
			r->mf[k].rw = true;
		r->vma_mf[i] = k;
	}
	exe = r->core->tc->has_uffd_exe_file_id ? rs_file_by_id(r, r->core->tc->uffd_exe_file_id)
						 : NULL;
	if (!exe)
		return rs_fail(r, EINVAL, "%s: no exe file recorded", r->o->dir);
	for (int k = 0; k <= r->nmf; k++) {
		if (k == r->nmf) {
			if (r->nmf == RS_MAX_MAPFILES)
				return rs_fail(r, ENOTSUP, "more than %d mapped files",
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
int restore_plan_specials(struct rs *r, struct procfs_maps *own)
{
	const MmEntry *mm = r->task.mm;
	size_t k = 0;

	for (size_t i = 0; i < own->n; i++) {
		const char *nm = own->v[i].name ? own->v[i].name : "";
		bool vdso = !strcmp(nm, "[vdso]");

		if (!vdso && strcmp(nm, "[vvar]") && strcmp(nm, "[vvar_vclock]"))
			continue;
		if (r->nsp == (int)(sizeof(r->sp) / sizeof(r->sp[0])))
			return rs_fail(r, ENOTSUP, "too many special areas");
		r->sp[r->nsp++] = (struct rs_special){ own->v[i].start, 0,
						       own->v[i].end - own->v[i].start, vdso };
	}
	for (size_t i = 0; i < mm->n_vmas; i++) {
		const VmaEntry *v = mm->vmas[i];
		bool vdso = v->status & VMA_AREA_VDSO, vvar = v->status & VMA_AREA_VVAR;

		if (!vdso && !vvar)
			continue;
		/* One dumped vvar area may be this kernel's [vvar] and [vvar_vclock] (as CRIU has them). */
		for (uint64_t off = 0; off < v->end - v->start; off += r->sp[k++].len) {
			if (k == (size_t)r->nsp || r->sp[k].vdso != vdso ||
			    r->sp[k].len > v->end - v->start - off || (vdso && off) ||
			    (off && r->sp[k].from != r->sp[k - 1].from + r->sp[k - 1].len))
				return rs_fail(r, ENOTSUP, "the dumped vdso/vvar areas differ from "
					     "this kernel's (area 0x%" PRIx64 "-0x%" PRIx64 "): restore "
					     "on the kernel that made the dump", v->start, v->end);
			r->sp[k].to = v->start + off;
		}
	}
	if (k != (size_t)r->nsp)
		return rs_fail(r, ENOTSUP, "the dump has %zu vdso/vvar areas, this kernel %d: "
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
			if (run.src == PM_DATA && r->o->page_server && (run.flags & PE_PRESENT)) {
				/* The local pages file may be a stand-in: ask the page server. */
				uint8_t *buf = malloc(n);
				int ret = buf ? rs_fetch(r, r->sp[i].to + off, n, buf) :
						rs_fail(r, ENOMEM, "out of memory");

				if (ret == 0 && memcmp(buf, (const void *)(uintptr_t)(r->sp[i].from + off), n))
					ret = rs_fail(r, ENOTSUP, "the dumped vdso differs from this "
						      "kernel's: restore on the kernel that made the dump");
				free(buf);
				if (ret < 0)
					return ret;
			} else if (run.src == PM_DATA &&
				   memcmp(run.pf->base + run.off,
					  (const void *)(uintptr_t)(r->sp[i].from + off), n)) {
				return rs_fail(r, ENOTSUP, "the dumped vdso differs from this "
					     "kernel's: restore on the kernel that made the dump");
			}
			off += n;
		}
	}
	return 0;
}

/*
 * The areas of PID from /proc/PID/maps alone: procfs_read_maps() wants smaps
 * and maps to agree, which our own address space, growing as we read, may not.
 */
int restore_plan_read_maps(pid_t pid, struct procfs_maps *m, char *why, size_t len)
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
int restore_plan_trampoline(struct rs *r, const struct procfs_maps *own)
{
	for (uint64_t a = 0x100000000ull; a < RS_TASK_TOP - (1ull << 32); a += 0x40000000ull) {
		if (free_in_both(r, own, a - (1ull << 20), a + (1ull << 20))) {
			r->tramp = a;
			return 0;
		}
	}
	return rs_fail(r, ENOMEM, "no free address for the trampoline");
}
