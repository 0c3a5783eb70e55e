/*
 * The files of a dump: see dump_image.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"
#include "dump_criu.h"
#include "dump_image.h"
#include "image.h"
#include "imgtask.h"
#include "log.h"
#include "inventory.pb-c.h"
#include "mm.pb-c.h"
#include "pagemap.h"
#include "pagemap.pb-c.h"
#include "pstree.pb-c.h"
#include "why.h"

/* Record why the images could not be written (the first reason wins), and return -CODE. */
static int ifail(struct dump_image *im, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int ifail(struct dump_image *im, int code, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = why_vfirst(im->why, sizeof(im->why), code, NULL, fmt, ap);
	va_end(ap);
	return ret;
}

int dump_image_open_dir(struct dump_image *im, const char *dir, pid_t pid)
{
	im->dir = dir;
	if (mkdir(dir, 0700) == 0)
		im->made_dir = true;
	else if (errno != EEXIST)
		return ifail(im, errno, "%s: mkdir: %s", dir, strerror(errno));
	im->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (im->dirfd < 0)
		return ifail(im, errno, "%s: %s", dir, strerror(errno));
	if (!im->pages_id)
		im->pages_id = 1;
	snprintf(im->name[DUMP_F_PAGES], sizeof(im->name[0]), "pages-%u.img", im->pages_id);
	snprintf(im->name[DUMP_F_MM], sizeof(im->name[0]), "mm-%d.img", (int)pid);
	snprintf(im->name[DUMP_F_INVENTORY], sizeof(im->name[0]), "inventory.img");
	snprintf(im->name[DUMP_F_PAGEMAP], sizeof(im->name[0]), "pagemap-%d.img", (int)pid);
	snprintf(im->name[DUMP_F_PSTREE], sizeof(im->name[0]), "pstree.img");
	for (int i = DUMP_F_NR - 1; i >= 0; i--) {
		snprintf(im->tmp[i], sizeof(im->tmp[0]), "%s.part", im->name[i]);
		if (faccessat(im->dirfd, im->name[i], F_OK, AT_SYMLINK_NOFOLLOW) == 0)
			return ifail(im, EEXIST, "%s already holds a dump (%s): use an empty "
				     "directory", dir, im->name[i]);
	}
	return 0;
}

int dump_image_create_pages(struct dump_image *im, bool buffered)
{
	int flags;

	/*
	 * O_DIRECT unless asked otherwise: on this kind of machine it writes
	 * two to three times faster than through the page cache, and a dump
	 * of a large process does not evict everyone else's cache.
	 */
	flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW;
	im->pagesfd = openat(im->dirfd, im->tmp[DUMP_F_PAGES], flags | (buffered ? 0 : O_DIRECT),
			    0600);
	if (im->pagesfd < 0 && errno == EINVAL)
		im->pagesfd = openat(im->dirfd, im->tmp[DUMP_F_PAGES], flags, 0600);
	if (im->pagesfd < 0)
		return ifail(im, errno, "%s/%s: create: %s", im->dir, im->tmp[DUMP_F_PAGES],
			     strerror(errno));
	im->made[DUMP_F_PAGES] = true;
	return 0;
}

/* Write zeros over the first BYTES of the pages file (a multiple of the page size). */
static int write_zeros(int fd, uint64_t bytes)
{
	const size_t chunk = 1 << 20;
	void *z = mmap(NULL, chunk, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t off = 0;

	if (z == MAP_FAILED)
		return -errno;
	while (off < bytes) {
		size_t n = bytes - off < chunk ? (size_t)(bytes - off) : chunk;
		ssize_t w = pwrite(fd, z, n, (off_t)off);

		if (w <= 0)
			break;
		off += (uint64_t)w;
	}
	munmap(z, chunk);
	return off < bytes ? -EIO : 0;
}

void dump_image_prealloc_pages(struct dump_image *im, uint64_t bytes)
{
	int ret;

	im->prealloc = 0;
	bytes &= ~4095ull;
	if (im->pagesfd < 0 || bytes == 0 || bytes > (uint64_t)INT64_MAX)
		return;
	ret = write_zeros(im->pagesfd, bytes);
	if (ret == 0) {
		im->prealloc = bytes;
		return;
	}
	/* ENOSPC, EFBIG...: whatever a failure wrote goes again. */
	if (ftruncate(im->pagesfd, 0) < 0)
		log_debug("%s/%s: truncate after a failed allocation ahead: %s", im->dir,
			  im->tmp[DUMP_F_PAGES], strerror(errno));
}

int dump_image_trim_pages(struct dump_image *im, uint64_t bytes)
{
	if (!im->prealloc)
		return 0;
	if (ftruncate(im->pagesfd, (off_t)bytes) < 0)
		return ifail(im, errno, "%s/%s: truncate to the %llu bytes written: %s", im->dir,
			     im->tmp[DUMP_F_PAGES], (unsigned long long)bytes, strerror(errno));
	im->prealloc = 0;
	return 0;
}

/* Write the pagemap: the head, then one entry per run of pages with equal flags. */
static int write_pagemap(struct dump_image *im, const struct dump_image_task *t)
{
	PagemapHead head = PAGEMAP_HEAD__INIT;
	struct img_writer w;
	struct img_err err;
	int ret;

	head.pages_id = im->pages_id;
	ret = img_create(&w, im->dirfd, im->tmp[DUMP_F_PAGEMAP], IMG_PAGEMAP_MAGIC, &err);
	if (ret < 0)
		return ifail(im, ret, "%s/%s", im->dir, err.msg);
	im->made[DUMP_F_PAGEMAP] = true;
	ret = img_write(&w, &head.base, &err);
	for (size_t i = 0; ret == 0 && i < t->npe; i++) {
		PagemapEntry e = PAGEMAP_ENTRY__INIT;

		e.vaddr = t->pe[i].vaddr;
		e.compat_nr_pages = t->pe[i].nr <= UINT32_MAX ? (uint32_t)t->pe[i].nr : 0;
		e.has_nr_pages = 1;
		e.nr_pages = t->pe[i].nr;
		e.has_flags = 1;
		e.flags = t->pe[i].flags;
		ret = img_write(&w, &e.base, &err);
	}
	if (ret < 0) {
		img_abort(&w);
		return ifail(im, ret, "%s/%s", im->dir, err.msg);
	}
	ret = img_finish(&w, &err);
	if (ret < 0)
		return ifail(im, ret, "%s/%s", im->dir, err.msg);
	return 0;
}

/* The end of the heap: where [heap] ends, or start_brk when there is none. */
static uint64_t heap_end(const struct dump_image_task *t)
{
	for (size_t i = 0; i < t->nvmas; i++)
		if (t->vmas[i].status & VMA_AREA_HEAP)
			return t->vmas[i].end;
	return t->stat->start_brk;
}

static int write_one(struct dump_image *im, int f, uint32_t magic, const ProtobufCMessage *msg)
{
	struct img_writer w;
	struct img_err err;
	int ret;

	ret = img_create(&w, im->dirfd, im->tmp[f], magic, &err);
	if (ret < 0)
		return ifail(im, ret, "%s/%s", im->dir, err.msg);
	im->made[f] = true;
	ret = img_write(&w, msg, &err);
	if (ret < 0) {
		img_abort(&w);
		return ifail(im, ret, "%s/%s", im->dir, err.msg);
	}
	ret = img_finish(&w, &err);
	if (ret < 0)
		return ifail(im, ret, "%s/%s", im->dir, err.msg);
	return 0;
}

/* Write pstree.img of a tree: one record per process, in the order given (parents first). */
static int write_tree(struct dump_image *im, const struct dump_image_proc *p, size_t n)
{
	PstreeEntry *ps = calloc(n, sizeof(*ps));
	struct img_writer w;
	struct img_err err;
	int ret;

	if (!ps)
		return ifail(im, ENOMEM, "out of memory");
	ret = img_create(&w, im->dirfd, im->tmp[DUMP_F_PSTREE], IMG_PSTREE_MAGIC, &err);
	if (ret == 0)
		im->made[DUMP_F_PSTREE] = true;
	for (size_t i = 0; ret == 0 && i < n; i++) {
		pstree_entry__init(&ps[i]);
		ps[i].pid = (uint32_t)p[i].pid;
		ps[i].ppid = (uint32_t)p[i].ppid;
		ps[i].pgid = (uint32_t)p[i].pgid;
		ps[i].sid = (uint32_t)p[i].sid;
		ps[i].n_threads = p[i].ntids;
		ps[i].threads = p[i].tids;
		ret = img_write(&w, &ps[i].base, &err);
		if (ret < 0)
			img_abort(&w);
	}
	if (ret == 0)
		ret = img_finish(&w, &err);
	free(ps);
	return ret < 0 ? ifail(im, ret, "%s/%s", im->dir, err.msg) : 0;
}

/* Write mm, pstree and inventory; sync the pages file. */
int dump_image_write_images(struct dump_image *im, const struct dump_image_task *t)
{
	MmEntry mm = MM_ENTRY__INIT;
	PstreeEntry ps = PSTREE_ENTRY__INIT;
	InventoryEntry inv = INVENTORY_ENTRY__INIT;
	struct dump_criu_inv_buf ib;
	struct dump_criu_mm cm = { 0 };
	VmaEntry **vp;
	int ret;

	ret = write_pagemap(im, t);
	if (ret < 0)
		return ret;

	vp = calloc(t->nvmas ? t->nvmas : 1, sizeof(*vp));
	if (!vp)
		return ifail(im, ENOMEM, "out of memory");
	for (size_t i = 0; i < t->nvmas; i++)
		vp[i] = &t->vmas[i];
	mm.mm_start_code = t->stat->start_code;
	mm.mm_end_code = t->stat->end_code;
	mm.mm_start_data = t->stat->start_data;
	mm.mm_end_data = t->stat->end_data;
	mm.mm_start_stack = t->stat->start_stack;
	mm.mm_start_brk = t->stat->start_brk;
	mm.mm_brk = heap_end(t);
	mm.mm_arg_start = t->stat->arg_start;
	mm.mm_arg_end = t->stat->arg_end;
	mm.mm_env_start = t->stat->env_start;
	mm.mm_env_end = t->stat->env_end;
	mm.exe_file_id = 0;
	mm.n_mm_saved_auxv = t->nauxv;
	mm.mm_saved_auxv = t->auxv;
	mm.n_vmas = t->nvmas;
	mm.vmas = vp;
	if (t->core && dump_criu_mm(t->core, &mm, t->vmas, t->nvmas, &cm) < 0) {
		free(vp);
		return ifail(im, ENOMEM, "out of memory");
	}
	ret = write_one(im, DUMP_F_MM, IMG_MM_MAGIC, &mm.base);
	dump_criu_mm_free(&cm);
	free(vp);
	if (ret < 0)
		return ret;

	if (t->ntree)
		ret = write_tree(im, t->tree, t->ntree);
	else if (!im->skip[DUMP_F_PSTREE]) {
		ps.pid = t->pid;
		ps.ppid = 0;	/* the root of what was dumped: CRIU takes no other as its root */
		ps.pgid = t->stat->pgid;
		ps.sid = t->stat->sid;
		ps.n_threads = t->ntids;
		ps.threads = t->tids;
		ret = write_one(im, DUMP_F_PSTREE, IMG_PSTREE_MAGIC, &ps.base);
	}
	if (ret < 0)
		return ret;

	if (!im->skip[DUMP_F_INVENTORY]) {
		inv.img_version = IMG_VERSION;
		dump_criu_inventory(&inv, &ib);
		ret = write_one(im, DUMP_F_INVENTORY, IMG_INVENTORY_MAGIC, &inv.base);
		if (ret < 0)
			return ret;
	}

	if (fsync(im->pagesfd) < 0)
		return ifail(im, errno, "%s/%s: fsync: %s", im->dir, im->tmp[DUMP_F_PAGES],
			     strerror(errno));
	if (close(im->pagesfd) < 0) {
		im->pagesfd = -1;
		return ifail(im, errno, "%s/%s: close: %s", im->dir, im->tmp[DUMP_F_PAGES],
			     strerror(errno));
	}
	im->pagesfd = -1;
	return 0;
}

/* Give every file its final name, pagemap and pstree last, and make it durable. */
int dump_image_publish(struct dump_image *im)
{
	int i;

	for (i = 0; i < DUMP_F_NR; i++) {
		if (!im->made[i])
			continue;	/* a tree's pstree and inventory: the root's */
		if (renameat(im->dirfd, im->tmp[i], im->dirfd, im->name[i]) < 0) {
			int e = errno;

			ifail(im, e, "%s/%s: rename: %s", im->dir, im->name[i], strerror(e));
			/* Take back what was already in place: no partial dump. */
			while (--i >= 0)
				if (im->made[i])
					renameat(im->dirfd, im->name[i], im->dirfd, im->tmp[i]);
			return -e;
		}
	}
	for (i = 0; i < DUMP_F_NR; i++)
		im->published |= im->made[i];
	for (i = 0; i < DUMP_F_NR; i++)
		im->made[i] = false;
	if (fsync(im->dirfd) < 0)
		return ifail(im, errno, "%s: fsync: %s", im->dir, strerror(errno));
	return 0;
}

void dump_image_unpublish(struct dump_image *im)
{
	if (!im->published || im->dirfd < 0)
		return;
	for (int i = 0; i < DUMP_F_NR; i++)
		if (!im->skip[i])
			unlinkat(im->dirfd, im->name[i], 0);
	im->published = false;
}

void dump_image_abort(struct dump_image *im)
{
	for (int i = 0; i < DUMP_F_NR; i++)
		if (im->made[i] && im->dirfd >= 0)
			unlinkat(im->dirfd, im->tmp[i], 0);
	if (im->made_dir)
		rmdir(im->dir);	/* only if still empty */
}

void dump_image_close(struct dump_image *im)
{
	if (im->pagesfd >= 0)
		close(im->pagesfd);
	if (im->dirfd >= 0)
		close(im->dirfd);
	im->pagesfd = im->dirfd = -1;
}
