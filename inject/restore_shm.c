/*
 * The shared memory of a restore: see restore_shm.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "restore_shm.h"
#include "rs.h"

#ifndef F_SEAL_SEAL
#define F_SEAL_SEAL		0x0001
#endif
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE	0x0010
#endif

#define SHM_WRITE_CHUNK	(16ull << 20)

static uint64_t pg_up(uint64_t a)
{
	return (a + RS_PAGE - 1) & ~(RS_PAGE - 1);
}

static int cmp_span(const void *a, const void *b)
{
	const struct rs_shm_span *x = a, *y = b;

	return x->s < y->s ? -1 : x->s > y->s;
}

int rs_shm_obj(const struct rs *r, const void *vma)
{
	const VmaEntry *v = vma;
	const struct shm_file *f;

	if (!r->shm || !(v->status & VMA_AREA_MEMFD) || v->shmid > UINT32_MAX)
		return -1;
	f = shm_file_by_id(r->shm->set, (uint32_t)v->shmid);
	return f ? (int)f->obj : -1;
}

/* What kind of object O is, for messages. */
static const char *what(const struct shm_obj *o)
{
	return o->anon ? "shared anonymous memory" : "memfd";
}

/* Check the areas of R that use shared memory; note what they map. */
static int plan_areas(struct rs_shm *s, struct rs *r)
{
	const MmEntry *mm = r->task.mm;

	for (size_t i = 0; i < mm->n_vmas; i++) {
		const VmaEntry *v = mm->vmas[i];
		const struct shm_file *f;
		const struct shm_obj *o;
		struct rs_shm_span *ns;

		if (v->status & VMA_AREA_SYSVIPC)
			return rs_fail(r, ENOTSUP, "pid %u: area 0x%" PRIx64 "-0x%" PRIx64 " is System "
				       "V shared memory (shmid %" PRIu64 "): not supported", r->pid,
				       v->start, v->end, v->shmid);
		if (v->status & VMA_ANON_SHARED)
			return rs_fail(r, ENOTSUP, "pid %u: area 0x%" PRIx64 "-0x%" PRIx64 " is shared "
				       "anonymous memory recorded as VMA_ANON_SHARED, not as CRIU 4.2's "
				       "memfd records: not supported", r->pid, v->start, v->end);
		if (!(v->status & VMA_AREA_MEMFD))
			continue;
		f = v->shmid <= UINT32_MAX ? shm_file_by_id(s->set, (uint32_t)v->shmid) : NULL;
		if (!f)
			return rs_fail(r, EINVAL, "%s: pid %u: area 0x%" PRIx64 "-0x%" PRIx64 " maps "
				       "memfd file id %" PRIu64 ", which files.img does not describe",
				       r->o->dir, r->pid, v->start, v->end, v->shmid);
		o = &s->set->obj[f->obj];
		if (o->hugetlb || (v->flags & VMA_MAP_HUGETLB))
			return rs_fail(r, ENOTSUP, "pid %u: area 0x%" PRIx64 "-0x%" PRIx64 " maps the "
				       "hugetlb memfd \"%s\" (shmid %u): not supported", r->pid,
				       v->start, v->end, o->name, o->shmid);
		s->used[f->obj] = true;
		if (!(v->status & VMA_FILE_SHARED)) {
			/*
			 * A private mapping reads the object where it has no copy
			 * of its own, with no userfaultfd to wait on: the object
			 * goes in whole. Its copies are pages of the task's own.
			 */
			s->whole[f->obj] = true;
			continue;
		}
		ns = realloc(s->sp[f->obj], (s->nsp[f->obj] + 1) * sizeof(*ns));
		if (!ns)
			return rs_fail(r, ENOMEM, "out of memory");
		s->sp[f->obj] = ns;
		ns[s->nsp[f->obj]++] = (struct rs_shm_span){ v->pgoff, v->pgoff + (v->end - v->start) };
	}
	return 0;
}

/* Check the memfds R holds open; note them. */
static int plan_fds(struct rs_shm *s, struct rs *r)
{
	for (size_t i = 0; i < r->nfdi; i++) {
		const FdinfoEntry *fd = r->fdi[i];
		const struct shm_file *f = shm_file_by_id(s->set, fd->id);
		const struct shm_obj *o;

		if (fd->type != SHM_FD_TYPE_MEMFD)
			continue;
		if (!f)
			return rs_fail(r, EINVAL, "%s: pid %u: fd %u: memfd file id %u is not in "
				       "files.img", r->o->dir, r->pid, fd->fd, fd->id);
		o = &s->set->obj[f->obj];
		if (o->hugetlb)
			return rs_fail(r, ENOTSUP, "pid %u: fd %u is the hugetlb memfd \"%s\" (shmid "
				       "%u): not supported", r->pid, fd->fd, o->name, o->shmid);
		s->used[f->obj] = true;
		s->fused[f - s->set->file] = true;
	}
	return 0;
}

/* Merge the spans of one object. Returns how many are left. */
static size_t merge(struct rs_shm_span *sp, size_t n)
{
	size_t m = 0;

	if (n < 2)
		return n;	/* and SP may be NULL: no qsort */
	qsort(sp, n, sizeof(*sp), cmp_span);
	for (size_t i = 0; i < n; i++) {
		if (m && sp[i].s <= sp[m - 1].e) {
			if (sp[i].e > sp[m - 1].e)
				sp[m - 1].e = sp[i].e;
			continue;
		}
		sp[m++] = sp[i];
	}
	return m;
}

int rs_shm_plan(struct rs_shm **out, struct rs **r, size_t n)
{
	struct rs_shm *s;
	struct img_err err;
	bool any = false;
	int ret;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return rs_fail(r[0], ENOMEM, "out of memory");
	pages_cache_init(&s->cache);
	ret = shm_load(&s->set, r[0]->dirfd, &s->cache, 0, &err);
	if (ret < 0) {
		rs_fail(r[0], ret, "%s/%s", r[0]->o->dir, err.msg);
		rs_shm_free(s);
		return ret;
	}
	s->sp = calloc(s->set->nobj + 1, sizeof(*s->sp));
	s->nsp = calloc(s->set->nobj + 1, sizeof(*s->nsp));
	s->used = calloc(s->set->nobj + 1, sizeof(*s->used));
	s->fused = calloc(s->set->nfile + 1, sizeof(*s->fused));
	s->whole = calloc(s->set->nobj + 1, sizeof(*s->whole));
	s->fd = calloc(s->set->nobj + 1, sizeof(*s->fd));
	s->ffd = calloc(s->set->nfile + 1, sizeof(*s->ffd));
	s->lazy = calloc(s->set->nobj + 1, sizeof(*s->lazy));
	if (!s->sp || !s->nsp || !s->used || !s->fused || !s->whole || !s->fd || !s->ffd || !s->lazy) {
		rs_shm_free(s);
		return rs_fail(r[0], ENOMEM, "out of memory");
	}
	for (size_t k = 0; k < s->set->nobj; k++)
		s->fd[k] = -1;
	for (size_t k = 0; k < s->set->nfile; k++)
		s->ffd[k] = -1;
	/* Every process checks against the same objects: give each the set first. */
	for (size_t i = 0; i < n; i++)
		r[i]->shm = s;
	for (size_t i = 0; ret == 0 && i < n; i++) {
		ret = plan_areas(s, r[i]);
		if (ret == 0)
			ret = plan_fds(s, r[i]);
	}
	if (ret == 0 && s->set->nobj > RS_MAX_SHM)
		ret = rs_fail(r[0], ENOTSUP, "%s/memfd.img: %zu shared memory objects: restore "
			      "takes at most %d", r[0]->o->dir, s->set->nobj, RS_MAX_SHM);
	for (size_t k = 0; ret == 0 && k < s->set->nobj; k++) {
		const struct shm_obj *o = &s->set->obj[k];

		if (!s->used[k])
			continue;
		any = true;
		if (o->anon && o->seals != F_SEAL_SEAL)
			ret = rs_fail(r[0], ENOTSUP, "%s/memfd.img: shared anonymous memory (shmid %u) "
				      "with seals 0x%x: such memory has F_SEAL_SEAL alone", r[0]->o->dir,
				      o->shmid, o->seals);
		else if (o->anon && o->size % RS_PAGE)
			ret = rs_fail(r[0], EINVAL, "%s/memfd.img: shared anonymous memory (shmid %u) "
				      "of %" PRIu64 " bytes, not whole pages", r[0]->o->dir, o->shmid,
				      o->size);
		s->lazy[k] = !r[0]->o->eager && o->lazy && !s->whole[k];
		s->nsp[k] = merge(s->sp[k], s->nsp[k]);
	}
	/* The pages files here may be stand-ins of the same size: no source for the objects. */
	if (ret == 0 && any && r[0]->o->page_server)
		ret = rs_fail(r[0], ENOTSUP, "%s: shared memory (memfd.img) with --page-server: not "
			      "supported (the objects are made from the local pages files)",
			      r[0]->o->dir);
	if (ret < 0 || !any) {
		for (size_t i = 0; i < n; i++)
			r[i]->shm = NULL;
		rs_shm_free(s);
		return ret;
	}
	/*
	 * A process that maps lazy shared memory faults MINOR on pages a sharer
	 * placed. Lazy as the manager sees it (shm_load's rule): an object also
	 * mapped private is written whole here, but the manager still serves its
	 * shared areas (each page found in it is mapped with UFFDIO_CONTINUE).
	 */
	for (size_t i = 0; i < n; i++)
		for (size_t v = 0; v < r[i]->task.mm->n_vmas; v++) {
			int k = rs_shm_obj(r[i], r[i]->task.mm->vmas[v]);

			if (k >= 0 && !r[i]->o->eager && s->set->obj[k].lazy &&
			    (r[i]->task.mm->vmas[v]->status & VMA_FILE_SHARED))
				r[i]->features |= UFFD_FEATURE_MINOR_SHMEM;
		}
	*out = s;
	return 0;
}

/* Write [OFF, END) of object K's contents (its data; holes stay holes) into it. */
static int put(struct rs_shm *s, struct rs *r, size_t k, uint64_t off, uint64_t end)
{
	const struct shm_obj *o = &s->set->obj[k];

	while (off < end) {
		struct pm_run run;

		pagemap_resolve(o->pm, off, end - off, &run);
		for (uint64_t n = 0; run.src == PM_DATA && n < run.len;) {
			uint64_t c = run.len - n < SHM_WRITE_CHUNK ? run.len - n : SHM_WRITE_CHUNK;
			ssize_t w = pwrite(s->fd[k], run.pf->base + run.off + n, c, (off_t)(off + n));

			if (w <= 0)
				return rs_fail(r, w < 0 ? errno : EIO, "write %s \"%s\" (shmid %u) at "
					       "offset 0x%" PRIx64 ": %s", what(o), o->name, o->shmid,
					       off + n, w < 0 ? strerror(errno) : "short write");
			n += (uint64_t)w;
			s->written += (uint64_t)w / RS_PAGE;
		}
		off += run.len;
	}
	return 0;
}

/* Make object K: shared anonymous memory, or a memfd of its size, mode and owner. */
static int make(struct rs_shm *s, struct rs *r, size_t k)
{
	const struct shm_obj *o = &s->set->obj[k];
	char path[96];
	int fd;

	if (o->anon) {
		void *p = mmap(NULL, o->size ? o->size : RS_PAGE, PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			return rs_fail(r, errno, "mmap of %" PRIu64 " bytes of shared anonymous memory "
				       "(shmid %u): %s", o->size, o->shmid, strerror(errno));
		/* The object outlives the mapping through this open file of it. */
		snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx", (unsigned long)p,
			 (unsigned long)p + (unsigned long)(o->size ? o->size : RS_PAGE));
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			int e = errno;

			munmap(p, o->size ? o->size : RS_PAGE);
			return rs_fail(r, e, "%s (shared anonymous memory, shmid %u): %s%s", path,
				       o->shmid, strerror(e), e == EPERM ?
				       " (CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN is needed)" : "");
		}
		munmap(p, o->size ? o->size : RS_PAGE);
		s->fd[k] = fd;
		return 0;
	}
	fd = memfd_create(o->name, MFD_ALLOW_SEALING | MFD_CLOEXEC);
	if (fd < 0)
		return rs_fail(r, errno, "memfd_create \"%s\" (shmid %u): %s", o->name, o->shmid,
			       strerror(errno));
	s->fd[k] = fd;
	if (ftruncate(fd, (off_t)o->size) < 0)
		return rs_fail(r, errno, "memfd \"%s\" (shmid %u): ftruncate to %" PRIu64 ": %s",
			       o->name, o->shmid, o->size, strerror(errno));
	if (o->mode && fchmod(fd, o->mode & 07777) < 0)
		return rs_fail(r, errno, "memfd \"%s\" (shmid %u): chmod 0%o: %s", o->name,
			       o->shmid, o->mode & 07777, strerror(errno));
	if ((o->uid != geteuid() || o->gid != getegid()) && fchown(fd, o->uid, o->gid) < 0)
		return rs_fail(r, errno, "memfd \"%s\" (shmid %u): chown %u:%u: %s", o->name,
			       o->shmid, o->uid, o->gid, strerror(errno));
	return 0;
}

/* The seals of object K that go on now: all but F_SEAL_FUTURE_WRITE (and F_SEAL_SEAL after it). */
static uint32_t early_seals(const struct shm_obj *o)
{
	if (o->anon)
		return 0;	/* it comes with F_SEAL_SEAL, all it has (checked) */
	if (o->seals & F_SEAL_FUTURE_WRITE)
		return o->seals & ~(uint32_t)(F_SEAL_FUTURE_WRITE | F_SEAL_SEAL);
	return o->seals;
}

static int seal(struct rs_shm *s, struct rs *r, size_t k, uint32_t seals)
{
	const struct shm_obj *o = &s->set->obj[k];

	if (seals && fcntl(s->fd[k], F_ADD_SEALS, seals) < 0)
		return rs_fail(r, errno, "memfd \"%s\" (shmid %u): F_ADD_SEALS 0x%x: %s", o->name,
			       o->shmid, seals, strerror(errno));
	return 0;
}

/* An open file of memfd file J, with its recorded flags and offset, for the descriptors. */
static int open_file(struct rs_shm *s, struct rs *r, size_t j)
{
	const struct shm_file *f = &s->set->file[j];
	const struct shm_obj *o = &s->set->obj[f->obj];
	int fl = (int)(f->flags & ~(uint32_t)(O_CREAT | O_TRUNC | O_EXCL | O_CLOEXEC));
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", s->fd[f->obj]);
	s->ffd[j] = open(path, fl | O_CLOEXEC);
	if (s->ffd[j] < 0)
		return rs_fail(r, errno, "memfd \"%s\" (shmid %u), file id %u: reopen with flags "
			       "0%o: %s", o->name, o->shmid, f->id, (unsigned)fl, strerror(errno));
	if (lseek(s->ffd[j], (off_t)f->pos, SEEK_SET) < 0)
		return rs_fail(r, errno, "memfd \"%s\" (shmid %u), file id %u: seek to %" PRIu64
			       ": %s", o->name, o->shmid, f->id, f->pos, strerror(errno));
	return 0;
}

int rs_shm_make(struct rs_shm *s, struct rs *r)
{
	int ret = 0;

	for (size_t k = 0; ret == 0 && k < s->set->nobj; k++) {
		const struct shm_obj *o = &s->set->obj[k];
		uint64_t at = 0;

		if (!s->used[k])
			continue;
		ret = make(s, r, k);
		/* Lazy: only what no process maps (it would never fault there); else all. */
		for (size_t i = 0; ret == 0 && s->lazy[k] && i < s->nsp[k]; i++) {
			ret = put(s, r, k, at, s->sp[k][i].s);
			at = s->sp[k][i].e;
		}
		if (ret == 0)
			ret = put(s, r, k, at, pg_up(o->size) > at ? pg_up(o->size) : at);
		if (ret == 0)
			ret = seal(s, r, k, early_seals(o));
	}
	for (size_t j = 0; ret == 0 && j < s->set->nfile; j++)
		if (s->fused[j])
			ret = open_file(s, r, j);
	return ret;
}

int rs_shm_seal_late(struct rs_shm *s, struct rs *r)
{
	for (size_t k = 0; k < s->set->nobj; k++) {
		const struct shm_obj *o = &s->set->obj[k];
		int ret;

		if (s->fd[k] < 0 || o->anon)
			continue;
		ret = seal(s, r, k, o->seals & ~early_seals(o));
		if (ret < 0)
			return ret;
	}
	return 0;
}

void rs_shm_free(struct rs_shm *s)
{
	if (!s)
		return;
	for (size_t k = 0; s->set && s->fd && k < s->set->nobj; k++)
		if (s->fd[k] >= 0)
			close(s->fd[k]);
	for (size_t j = 0; s->set && s->ffd && j < s->set->nfile; j++)
		if (s->ffd[j] >= 0)
			close(s->ffd[j]);
	for (size_t k = 0; s->set && s->sp && k < s->set->nobj; k++)
		free(s->sp[k]);
	shm_free(s->set, &s->cache);
	free(s->sp);
	free(s->nsp);
	free(s->used);
	free(s->fused);
	free(s->whole);
	free(s->fd);
	free(s->ffd);
	free(s->lazy);
	free(s);
}
