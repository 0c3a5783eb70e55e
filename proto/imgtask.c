/* Tasks of an image directory: pstree, mm and pagemap, cross-checked. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imgtask.h"
#include "pstree.pb-c.h"

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Append PID to a growing array. */
static int push_pid(uint32_t **pids, size_t *n, size_t *cap, uint32_t pid)
{
	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 16;
		uint32_t *np = realloc(*pids, ncap * sizeof(*np));

		if (!np)
			return -ENOMEM;
		*pids = np;
		*cap = ncap;
	}
	(*pids)[(*n)++] = pid;
	return 0;
}

static int list_from_pstree(struct img_reader *r, uint32_t **pids, size_t *n,
			    struct img_err *err)
{
	ProtobufCMessage *m;
	size_t cap = 0;
	int ret;

	while ((ret = img_next(r, &pstree_entry__descriptor, &m, err)) > 0) {
		uint32_t pid = ((PstreeEntry *)m)->pid;

		protobuf_c_message_free_unpacked(m, NULL);
		if (pid == 0)
			return img_errf(err, EINVAL, r->name, r->rec, "pid 0");
		for (size_t i = 0; i < *n; i++)
			if ((*pids)[i] == pid)
				return img_errf(err, EINVAL, r->name, r->rec, "pid %u listed twice", pid);
		if (*n >= IMG_MAX_TASKS)
			return img_errf(err, EINVAL, r->name, r->rec, "more than %u tasks",
					IMG_MAX_TASKS);
		if (push_pid(pids, n, &cap, pid) < 0)
			return img_errf(err, ENOMEM, r->name, r->rec, "out of memory");
	}
	if (ret == 0 && *n == 0)
		return img_errf(err, EINVAL, r->name, 0, "no tasks");
	return ret;
}

static int list_from_pagemaps(int dirfd, uint32_t **pids, size_t *n, struct img_err *err)
{
	size_t cap = 0;
	struct dirent *de;
	DIR *d;
	int fd;

	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd))) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		return img_errf(err, e, "image dir", 0, "read: %s", strerror(e));
	}
	while ((de = readdir(d))) {
		unsigned pid;
		char tail;

		if (sscanf(de->d_name, "pagemap-%u.im%c", &pid, &tail) != 2 || tail != 'g')
			continue;
		if (strlen(de->d_name) != (size_t)snprintf(NULL, 0, "pagemap-%u.img", pid) ||
		    pid == 0)
			continue;
		if (*n >= IMG_MAX_TASKS || push_pid(pids, n, &cap, pid) < 0) {
			closedir(d);
			return img_errf(err, ENOMEM, "image dir", 0, "too many pagemap files");
		}
	}
	closedir(d);
	if (*n == 0)
		return img_errf(err, ENOENT, "image dir", 0, "no pstree.img and no pagemap-PID.img");
	qsort(*pids, *n, sizeof(**pids), cmp_u32);
	return 0;
}

int img_list_tasks(int dirfd, uint32_t **pids, size_t *n, bool *from_pstree,
		   struct img_err *err)
{
	struct img_reader r;
	int ret;

	*pids = NULL;
	*n = 0;
	ret = img_open(&r, dirfd, "pstree.img", IMG_PSTREE_MAGIC, err);
	if (ret == -ENOENT) {
		*from_pstree = false;
		ret = list_from_pagemaps(dirfd, pids, n, err);
	} else if (ret == 0) {
		*from_pstree = true;
		ret = list_from_pstree(&r, pids, n, err);
		img_close(&r);
	}
	if (ret < 0) {
		free(*pids);
		*pids = NULL;
		*n = 0;
	}
	return ret;
}

int img_check_vmas(const MmEntry *mm, const char *name, struct img_err *err)
{
	for (size_t i = 0; i < mm->n_vmas; i++) {
		const VmaEntry *v = mm->vmas[i];

		if (v->start % PAGE_SIZE_4K || v->end % PAGE_SIZE_4K || v->start >= v->end)
			return img_errf(err, EINVAL, name, 1, "vma %zu 0x%" PRIx64 "-0x%" PRIx64
					" is empty or not page aligned", i, v->start, v->end);
		if (i && v->start < mm->vmas[i - 1]->end)
			return img_errf(err, EINVAL, name, 1, "vma %zu 0x%" PRIx64 "-0x%" PRIx64
					" overlaps or precedes vma %zu", i, v->start, v->end, i - 1);
	}
	return 0;
}

/* The index of the VMA holding ADDR, or -1. */
static long vma_index(const MmEntry *mm, uint64_t addr)
{
	size_t lo = 0, hi = mm->n_vmas;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (mm->vmas[mid]->end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < mm->n_vmas && mm->vmas[lo]->start <= addr)
		return (long)lo;
	return -1;
}

int img_check_pagemap_vmas(const struct pagemap *pm, const MmEntry *mm, struct img_err *err)
{
	for (size_t i = 0; i < pm->n; i++) {
		const struct pm_entry *e = &pm->e[i];
		long v = vma_index(mm, e->start);

		/* An entry may run across adjacent VMAs, never into a gap. */
		while (v >= 0 && mm->vmas[v]->end < e->end) {
			if ((size_t)v + 1 >= mm->n_vmas ||
			    mm->vmas[v + 1]->start != mm->vmas[v]->end) {
				v = -1;
				break;
			}
			v++;
		}
		if (v < 0)
			return img_errf(err, EINVAL, pm->name, (unsigned)i + 2,
					"entry 0x%" PRIx64 "-0x%" PRIx64 " lies outside the VMAs of mm-%u.img",
					e->start, e->end, pm->pid);
	}
	return 0;
}

int img_task_load(struct img_task *t, int dirfd, uint32_t pid, struct pages_cache *c,
		  struct img_err *err)
{
	return img_task_load_max(t, dirfd, pid, c, 0, err);
}

int img_task_load_max(struct img_task *t, int dirfd, uint32_t pid, struct pages_cache *c,
		      size_t max_entries, struct img_err *err)
{
	return img_task_load_opts(t, dirfd, pid, c, max_entries, 0, err);
}

static bool shm_area(const VmaEntry *v)
{
	return (v->status & VMA_AREA_MEMFD) && (v->status & VMA_FILE_SHARED);
}

const struct shm_obj *img_task_shm_obj(const struct img_task *t, const VmaEntry *v)
{
	const struct shm_file *f;

	if (!t->shm || !shm_area(v) || v->shmid > UINT32_MAX)
		return NULL;
	f = shm_file_by_id(t->shm, (uint32_t)v->shmid);
	return f ? &t->shm->obj[f->obj] : NULL;
}

static int cmp_entry(const void *a, const void *b)
{
	const struct pm_entry *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* Append to PM the entries of object K (O) that area V maps, at its addresses. */
static int add_area_entries(struct pagemap *pm, size_t *cap, const VmaEntry *v,
			    const struct shm_obj *o, uint32_t k, uint32_t flags, size_t max_entries,
			    struct img_err *err)
{
	uint64_t len = v->end - v->start, a = v->pgoff;

	while (a < v->pgoff + len) {
		struct pm_run run;

		pagemap_resolve(o->pm, a, v->pgoff + len - a, &run);
		if (run.src == PM_DATA) {
			if (max_entries && pm->n >= max_entries)
				return img_errf(err, E2BIG, pm->name, 0,
						"more than %zu pagemap entries with those of the "
						"shared memory its areas map (--max-image-entries)",
						max_entries);
			if (pm->n == *cap) {
				size_t ncap = *cap ? *cap * 2 : 64;
				struct pm_entry *ne = realloc(pm->e, ncap * sizeof(*ne));

				if (!ne)
					return img_errf(err, ENOMEM, pm->name, 0, "out of memory");
				pm->e = ne;
				*cap = ncap;
			}
			pm->e[pm->n++] = (struct pm_entry){
				.start = v->start + (a - v->pgoff),
				.end = v->start + (a - v->pgoff) + run.len,
				.flags = flags, .xpf = k + 1, .off = run.off,
			};
			pm->shm_pages += run.len / PAGE_SIZE_4K;
			if (flags & PE_LAZY)
				pm->lazy_pages += run.len / PAGE_SIZE_4K;
		}
		a += run.len;
	}
	return 0;
}

/*
 * The contents of the shared memory that T's areas map, into T->pm at their
 * addresses (see img_task_load_opts).
 */
static int add_shm(struct img_task *t, int dirfd, struct pages_cache *c, size_t max_entries,
		   unsigned flags, struct img_err *err)
{
	const MmEntry *mm = t->mm;
	struct pagemap *pm = t->pm;
	size_t cap = pm->n, n0 = pm->n, i;
	char name[32];
	int ret;

	for (i = 0; i < mm->n_vmas && !shm_area(mm->vmas[i]); i++)
		;
	if (i == mm->n_vmas)
		return 0;
	snprintf(name, sizeof(name), "mm-%u.img", t->pid);
	/* The cap counts the task's own entries too. */
	if (max_entries && pm->n >= max_entries)
		return img_errf(err, E2BIG, name, 0, "more than %zu pagemap entries in all",
				max_entries);
	ret = shm_load(&t->shm, dirfd, c, max_entries ? max_entries - pm->n : 0, err);
	if (ret < 0)
		return ret;
	pm->xpf = calloc(t->shm->nobj + 1, sizeof(*pm->xpf));
	if (!pm->xpf)
		return img_errf(err, ENOMEM, name, 0, "out of memory");
	pm->nxpf = (uint32_t)t->shm->nobj;
	for (size_t k = 0; k < t->shm->nobj; k++)
		pm->xpf[k] = t->shm->obj[k].pm->pages;
	for (i = 0; i < mm->n_vmas; i++) {
		const VmaEntry *v = mm->vmas[i];
		const struct shm_obj *o;

		if (!shm_area(v))
			continue;
		o = img_task_shm_obj(t, v);
		if (!o)
			return img_errf(err, EINVAL, name, 1, "vma %zu 0x%" PRIx64 "-0x%" PRIx64
					": maps memfd file id %" PRIu64 ", which files.img and "
					"memfd.img do not describe", i, v->start, v->end, v->shmid);
		if (v->pgoff % PAGE_SIZE_4K || v->pgoff > SHM_MAX_SIZE)
			return img_errf(err, EINVAL, name, 1, "vma %zu 0x%" PRIx64 "-0x%" PRIx64
					": offset 0x%" PRIx64 " in \"%s\" is not page aligned or "
					"too large", i, v->start, v->end, v->pgoff, o->name);
		ret = add_area_entries(pm, &cap, v, o, (uint32_t)(o - t->shm->obj),
				       PE_PRESENT | ((flags & IMG_LOAD_SHM_LAZY) && o->lazy ?
						     PE_LAZY : 0), max_entries, err);
		if (ret < 0)
			return ret;
	}
	if (pm->n == n0)
		return 0;
	qsort(pm->e, pm->n, sizeof(*pm->e), cmp_entry);
	for (i = 1; i < pm->n; i++)
		if (pm->e[i].start < pm->e[i - 1].end)
			return img_errf(err, EINVAL, pm->name, 0, "entry 0x%" PRIx64 "-0x%" PRIx64
					" overlaps 0x%" PRIx64 "-0x%" PRIx64 " of an area of shared "
					"memory (a memfd's pages are in pagemap-shmem-SHMID.img only)",
					pm->e[i - 1].start, pm->e[i - 1].end, pm->e[i].start,
					pm->e[i].end);
	return 0;
}

int img_task_load_opts(struct img_task *t, int dirfd, uint32_t pid, struct pages_cache *c,
		       size_t max_entries, unsigned flags, struct img_err *err)
{
	char name[32];
	int ret;

	memset(t, 0, sizeof(*t));
	t->pid = pid;
	snprintf(name, sizeof(name), "mm-%u.img", pid);
	ret = img_read_one(dirfd, name, IMG_MM_MAGIC, &mm_entry__descriptor,
			   (ProtobufCMessage **)&t->mm, err);
	if (ret == 0)
		ret = img_check_vmas(t->mm, name, err);
	if (ret < 0 && ret != -ENOENT)
		goto fail;

	snprintf(name, sizeof(name), "pagemap-%u.img", pid);
	if (!t->mm && faccessat(dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT)
		return 0;	/* a task without memory images: a zombie */
	snprintf(name, sizeof(name), "mm-%u.img", pid);
	ret = pagemap_load_max(&t->pm, dirfd, pid, c, max_entries, err);
	if (ret < 0)
		goto fail;
	if (!t->mm) {
		ret = img_errf(err, ENOENT, name, 0, "missing, but pagemap-%u.img exists", pid);
		goto fail;
	}
	ret = img_check_pagemap_vmas(t->pm, t->mm, err);
	if (ret == 0)
		ret = add_shm(t, dirfd, c, max_entries, flags, err);
	if (ret < 0)
		goto fail;
	return 0;
fail:
	img_task_free(t, c);
	return ret;
}

void img_task_free(struct img_task *t, struct pages_cache *c)
{
	if (t->mm)
		protobuf_c_message_free_unpacked(&t->mm->base, NULL);
	pagemap_free(t->pm, c);
	shm_free(t->shm, c);
	t->mm = NULL;
	t->pm = NULL;
	t->shm = NULL;
}
