/*
 * Shared memory in CRIU 4.2's format (shm.h): the two real dumps of
 * shmapp.c (test/data/criu-4.2/shm-single, shm-fork2) read back object by
 * object, every byte of both objects checked against the workload's
 * pattern, and the areas of every task resolving to the same bytes; then
 * the same dir broken one record at a time, each refused naming the file.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "files.pb-c.h"
#include "imgfix.h"
#include "imgtask.h"
#include "mm.pb-c.h"
#include "pagemap.pb-c.h"
#include "shm.h"

/* shmapp.c's constants. */
#define PG		4096ull
#define SHM_PAGES	512
#define MEMFD_PAGES	256
#define SEED_ANON	0x5a11ULL
#define SEED_MEMFD	0x3e3fdULL
#define SEED_CHILD	0xc4111dULL

static uint64_t pat(uint64_t seed, uint64_t widx)
{
	uint64_t x = seed ^ (widx * 0x9E3779B97F4A7C15ULL);

	x ^= x >> 31;
	x *= 0xBF58476D1CE4E5B9ULL;
	x ^= x >> 29;
	return x;
}

/* The word at byte offset OFF of an object shmapp filled with SEED, MAPPED pages of it. */
static uint64_t want_word(uint64_t seed, uint64_t mapped, bool fork2, uint64_t off)
{
	uint64_t pg = off / PG, w = off / 8;

	if (pg >= mapped || pg % 8 == 3)
		return 0;	/* past the mapping (the memfd's last page), or never touched */
	/* shmapp fills them with the child's seed in both modes (the child rewrites them in fork2). */
	(void)fork2;
	if (pg % 8 == 6)
		return pat(SEED_CHILD, w);
	return pat(seed, w);
}

/* The bytes at OFFSET of PM (entries at offsets or addresses), or NULL for a hole. */
static const uint8_t *bytes_at(const struct pagemap *pm, uint64_t a, uint64_t *len)
{
	struct pm_run run;

	pagemap_resolve(pm, a, UINT64_MAX - a, &run);
	*len = run.len;
	if (run.src == PM_HOLE)
		return NULL;
	cr_assert_eq(run.src, PM_DATA, "0x%" PRIx64 ": neither data nor a hole", a);
	cr_assert_leq(run.off + run.len, run.pf->size);
	return run.pf->base + run.off;
}

/* Compare every word of [0, SIZE) of PM at BASE with the pattern; returns the pages with data. */
static uint64_t check_object(const struct pagemap *pm, uint64_t base, uint64_t size,
			     uint64_t seed, uint64_t mapped, bool fork2, const char *what)
{
	uint64_t data = 0;

	for (uint64_t off = 0; off < size; off += PG) {
		uint64_t len;
		const uint8_t *p = bytes_at(pm, base + off, &len);

		if (p)
			data++;
		for (uint64_t k = 0; k < PG; k += 8) {
			uint64_t got = 0, want = want_word(seed, mapped, fork2, off + k);

			if (p)
				memcpy(&got, p + k, 8);
			if (got != want)
				cr_assert_fail("%s: offset 0x%" PRIx64 ": 0x%016" PRIx64 ", want 0x%016"
					 PRIx64, what, off + k, got, want);
		}
	}
	return data;
}

static const struct shm_obj *obj_named(const struct shm_set *s, const char *name)
{
	for (size_t i = 0; i < s->nobj; i++)
		if (!strcmp(s->obj[i].name, name))
			return &s->obj[i];
	cr_assert_fail("no object named %s", name);
	return NULL;
}

/* One fixture: every record, every byte of both objects. */
static void check_fixture(const char *sub, bool fork2)
{
	struct pages_cache c;
	struct img_err err = { "" };
	struct shm_set *s;
	const struct shm_obj *anon, *mem;
	char path[512];
	int dirfd, ret;

	pages_cache_init(&c);
	snprintf(path, sizeof(path), "%s/%s", FIX_CRIU_DIR, sub);
	dirfd = fix_open_dir(path);
	ret = shm_load(&s, dirfd, &c, 0, &err);
	cr_assert_eq(ret, 0, "%s: %s", sub, err.msg);
	cr_assert_eq(s->nobj, 2, "%s: shmapp has two objects", sub);
	cr_assert_eq(s->nfile, 3, "%s: three memfd files (two mapped, one open at fd 5)", sub);
	anon = obj_named(s, SHM_ANON_NAME);
	mem = obj_named(s, "shmapp-memfd");
	cr_assert(anon->anon);
	cr_assert_not(mem->anon);
	cr_assert_eq(anon->size, SHM_PAGES * PG);
	cr_assert_eq(mem->size, (MEMFD_PAGES + 1) * PG, "the memfd is one page longer than mapped");
	cr_assert_eq(mem->seals, 0x2, "F_SEAL_SHRINK");
	cr_assert_eq(anon->seals, 0x1, "shared anonymous memory comes with F_SEAL_SEAL");
	cr_assert(mem->open_fd, "the memfd is open at fd 5");
	cr_assert_not(anon->open_fd);
	cr_assert(anon->lazy, "reachable through its mapping only");
	cr_assert_not(mem->lazy, "open as a descriptor: filled before the process runs");
	/* CRIU dumps each mapped page, holes too (as zeros): the same count as the pages files. */
	cr_assert_eq(anon->pm->present_pages, SHM_PAGES);
	cr_assert_eq(mem->pm->present_pages, MEMFD_PAGES);
	cr_assert_eq(check_object(anon->pm, 0, anon->size, SEED_ANON, SHM_PAGES, fork2,
				  "anon"), SHM_PAGES);
	cr_assert_eq(check_object(mem->pm, 0, mem->size, SEED_MEMFD, MEMFD_PAGES, fork2,
				  "memfd"), MEMFD_PAGES, "the page past the mapping is a hole");
	for (size_t i = 0; i < s->nfile; i++) {
		const struct shm_file *f = &s->file[i];

		cr_assert_eq(shm_file_by_id(s, f->id), f);
		if (f->id == 8)
			cr_assert_eq(&s->obj[f->obj], mem, "fd 5's file is the memfd");
	}
	cr_assert_null(shm_file_by_id(s, 1), "file 1 is the exe, no memfd");
	shm_free(s, &c);
	cr_assert_eq(c.nr_files, 0, "pages files left mapped");
	close(dirfd);
}

Test(shm, single_fixture_every_byte_of_both_objects)
{
	check_fixture("shm-single", false);
}

Test(shm, fork2_fixture_every_byte_with_the_childs_pages)
{
	check_fixture("shm-fork2", true);
}

/*
 * Every task of a fixture, loaded as the daemon and restore do: each shared
 * area resolves, address by address, to its object's bytes; with
 * IMG_LOAD_SHM_LAZY only the object reachable through mappings alone is lazy.
 */
static void check_tasks(const char *sub, const uint32_t *pids, size_t n, bool fork2)
{
	char path[512];
	int dirfd;

	snprintf(path, sizeof(path), "%s/%s", FIX_CRIU_DIR, sub);
	dirfd = fix_open_dir(path);
	for (size_t i = 0; i < n; i++) {
		for (unsigned flags = 0; flags <= IMG_LOAD_SHM_LAZY; flags += IMG_LOAD_SHM_LAZY) {
			struct pages_cache c;
			struct img_err err = { "" };
			struct img_task t;
			unsigned areas = 0;
			uint64_t lazy0;
			struct pagemap *plain;
			int ret;

			pages_cache_init(&c);
			ret = img_task_load_opts(&t, dirfd, pids[i], &c, 0, flags, &err);
			cr_assert_eq(ret, 0, "%s pid %u: %s", sub, pids[i], err.msg);
			cr_assert_not_null(t.shm);
			cr_assert_eq(t.pm->shm_pages, SHM_PAGES + MEMFD_PAGES);
			/* The task's own pagemap is unchanged besides. */
			cr_assert_eq(pagemap_load(&plain, dirfd, pids[i], &c, &err), 0);
			lazy0 = plain->lazy_pages;
			cr_assert_eq(t.pm->present_pages, plain->present_pages);
			cr_assert_eq(t.pm->n, plain->n + 2, "one entry per object: %zu, %zu",
				     t.pm->n, plain->n);
			pagemap_free(plain, &c);
			cr_assert_eq(t.pm->lazy_pages, lazy0 + (flags ? SHM_PAGES : 0),
				     "%s pid %u flags %u: %" PRIu64 " lazy", sub, pids[i], flags,
				     t.pm->lazy_pages);
			for (size_t k = 0; k < t.mm->n_vmas; k++) {
				const VmaEntry *v = t.mm->vmas[k];
				const struct shm_obj *o = img_task_shm_obj(&t, v);

				if (!o)
					continue;
				areas++;
				cr_assert_eq(v->pgoff, 0);
				check_object(t.pm, v->start, v->end - v->start,
					     o->anon ? SEED_ANON : SEED_MEMFD,
					     o->anon ? SHM_PAGES : MEMFD_PAGES, fork2,
					     o->anon ? "anon area" : "memfd area");
				cr_assert_eq(pagemap_find(t.pm, v->start)->flags,
					     PE_PRESENT | (flags && o->lazy ? PE_LAZY : 0));
			}
			cr_assert_eq(areas, 2, "%s pid %u: two shared areas", sub, pids[i]);
			img_task_free(&t, &c);
			cr_assert_eq(c.nr_files, 0, "pages files left mapped");
		}
	}
	close(dirfd);
}

Test(shm, single_fixture_areas_resolve_to_the_objects)
{
	static const uint32_t pids[] = { 2519 };

	check_tasks("shm-single", pids, 1, false);
}

Test(shm, fork2_fixture_both_processes_map_the_same_objects)
{
	static const uint32_t pids[] = { 2520, 2522 };

	check_tasks("shm-fork2", pids, 2, true);
}

/* A dir without memfd.img has no objects. */
Test(shm, no_memfd_img_is_an_empty_set)
{
	struct pages_cache c;
	struct img_err err = { "" };
	struct shm_set *s;
	int dirfd = fix_open_dir(FIX_CRIU_DIR "/single");

	pages_cache_init(&c);
	cr_assert_eq(shm_load(&s, dirfd, &c, 0, &err), 0, "%s", err.msg);
	cr_assert_eq(s->nobj, 0);
	cr_assert_eq(s->nfile, 0);
	shm_free(s, &c);
	close(dirfd);
}

/*
 * The cap on pagemap entries counts the objects' entries too, and reached
 * exactly it still holds: shm-single's two objects have one entry each, so
 * a cap of 1 stops at the second (0 would mean no cap); the task's own
 * entries count against it.
 */
Test(shm, the_entry_cap_holds_across_objects_and_the_task)
{
	struct pages_cache c;
	struct img_err err = { "" };
	struct shm_set *s;
	struct img_task t;
	int dirfd = fix_open_dir(FIX_CRIU_DIR "/shm-single");

	pages_cache_init(&c);
	cr_assert_eq(shm_load(&s, dirfd, &c, 2, &err), 0, "%s", err.msg);
	cr_assert_eq(s->nobj, 2);
	shm_free(s, &c);
	cr_assert_eq(shm_load(&s, dirfd, &c, 1, &err), -E2BIG, "a cap of 1 took both objects");
	cr_assert_not_null(strstr(err.msg, "more than 1 pagemap entries"), "%s", err.msg);
	cr_assert_eq(img_task_load_max(&t, dirfd, 2519, &c, 0, &err), 0, "%s", err.msg);
	{
		size_t all = t.pm->n;

		img_task_free(&t, &c);
		cr_assert_eq(img_task_load_max(&t, dirfd, 2519, &c, all, &err), 0, "%s", err.msg);
		img_task_free(&t, &c);
		cr_assert_lt(img_task_load_max(&t, dirfd, 2519, &c, all - 1, &err), 0,
			     "a cap one short of the %zu entries was not enforced", all);
	}
	cr_assert_eq(c.nr_files, 0, "pages files left mapped");
	close(dirfd);
}

/* ---- broken copies of shm-single ---- */

static struct fix_tmp tmp;

static void copy_fixture(void)
{
	static const char *const names[] = {
		"core-2519.img", "fdinfo-2.img", "files.img", "fs-2519.img", "ids-2519.img",
		"inventory.img", "memfd.img", "mm-2519.img", "pagemap-2519.img",
		"pagemap-shmem-26677.img", "pagemap-shmem-26678.img", "pages-1.img",
		"pages-2.img", "pages-3.img", "pstree.img",
	};
	int src = fix_open_dir(FIX_CRIU_DIR "/shm-single");

	fix_tmp_make(&tmp);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		size_t len;
		uint8_t *b = fix_read_file(src, names[i], &len);

		cr_assert_not_null(b, "%s", names[i]);
		fix_write_file(tmp.fd, names[i], b, len);
		free(b);
	}
	close(src);
}

static void tmp_teardown(void)
{
	fix_tmp_remove(&tmp);
}

typedef void (*edit_fn)(ProtobufCMessage *m, size_t idx);

/* Rewrite record file NAME through EDIT (record index from 0), with the library's writer. */
static void rewrite(const char *name, uint32_t magic, const ProtobufCMessageDescriptor *d0,
		    const ProtobufCMessageDescriptor *d, edit_fn edit)
{
	struct img_reader r;
	struct img_writer w;
	struct img_err err = { "" };
	ProtobufCMessage *m;
	size_t idx = 0;
	int ret;

	cr_assert_eq(img_open(&r, tmp.fd, name, magic, &err), 0, "%s", err.msg);
	cr_assert_eq(img_create(&w, tmp.fd, name, magic, &err), 0, "%s", err.msg);
	while ((ret = img_next(&r, idx == 0 && d0 ? d0 : d, &m, &err)) > 0) {
		edit(m, idx++);
		cr_assert_eq(img_write(&w, m, &err), 0, "%s", err.msg);
		protobuf_c_message_free_unpacked(m, NULL);
	}
	cr_assert_eq(ret, 0, "%s", err.msg);
	cr_assert_eq(img_finish(&w, &err), 0, "%s", err.msg);
	img_close(&r);
}

static void small_memfd(ProtobufCMessage *m, size_t idx)
{
	if (idx == 0)
		((MemfdInodeEntry *)m)->size = 4 * PG;
}

static void long_name(ProtobufCMessage *m, size_t idx)
{
	MemfdInodeEntry *me = (MemfdInodeEntry *)m;
	char name[300];

	memset(name, 'x', sizeof(name) - 1);
	name[sizeof(name) - 1] = 0;
	if (idx == 0) {
		free(me->name);	/* protobuf-c's default allocator is malloc */
		me->name = strdup(name);
	}
}

static void twice(ProtobufCMessage *m, size_t idx)
{
	(void)idx;
	((MemfdInodeEntry *)m)->inode_id = 1;
}

static void lazy_flag(ProtobufCMessage *m, size_t idx)
{
	if (idx == 1)
		((PagemapEntry *)m)->flags |= PE_LAZY;
}

static void no_inode(ProtobufCMessage *m, size_t idx)
{
	FileEntry *fe = (FileEntry *)m;

	(void)idx;
	if (fe->memfd && fe->id == 8)
		fe->memfd->inode_id = 99;
}

static void no_memfd(ProtobufCMessage *m, size_t idx)
{
	FileEntry *fe = (FileEntry *)m;

	(void)idx;
	if (fe->id == 3) {
		memfd_file_entry__free_unpacked(fe->memfd, NULL);
		fe->memfd = NULL;
	}
}

/* MEMFD file 8 given the id of MEMFD file 3 (and its memfd record too). */
static void dup_file(ProtobufCMessage *m, size_t idx)
{
	FileEntry *fe = (FileEntry *)m;

	(void)idx;
	if (fe->id == 8) {
		fe->id = 3;
		fe->memfd->id = 3;
	}
}

static void fd_unknown(ProtobufCMessage *m, size_t idx)
{
	if (idx == 3)
		((FdinfoEntry *)m)->id = 77;
}

static void vma_unknown(ProtobufCMessage *m, size_t idx)
{
	MmEntry *mm = (MmEntry *)m;

	(void)idx;
	for (size_t i = 0; i < mm->n_vmas; i++)
		if (mm->vmas[i]->status & VMA_AREA_MEMFD)
			mm->vmas[i]->shmid = 55;
}

static void vma_unaligned(ProtobufCMessage *m, size_t idx)
{
	MmEntry *mm = (MmEntry *)m;

	(void)idx;
	for (size_t i = 0; i < mm->n_vmas; i++)
		if (mm->vmas[i]->status & VMA_AREA_MEMFD)
			mm->vmas[i]->pgoff = 100;
}

/* pagemap-2519.img: an entry inside the shared anonymous area (the second memfd VMA). */
static uint64_t anon_area;

static void find_anon_area(void)
{
	struct img_reader r;
	struct img_err err = { "" };
	ProtobufCMessage *m;

	cr_assert_eq(img_open(&r, tmp.fd, "mm-2519.img", IMG_MM_MAGIC, &err), 0);
	cr_assert_eq(img_next(&r, &mm_entry__descriptor, &m, &err), 1);
	for (size_t i = 0; i < ((MmEntry *)m)->n_vmas; i++) {
		const VmaEntry *v = ((MmEntry *)m)->vmas[i];

		if ((v->status & VMA_AREA_MEMFD) && v->end - v->start == SHM_PAGES * PG)
			anon_area = v->start;
	}
	protobuf_c_message_free_unpacked(m, NULL);
	img_close(&r);
	cr_assert_neq(anon_area, 0);
}

struct shm_case {
	const char *name;
	void (*build)(void);
	int code;
	const char *file;	/* the message starts with it */
	const char *phrase;
};

static void b_small(void)
{
	rewrite("memfd.img", IMG_MEMFD_INODE_MAGIC, NULL, &memfd_inode_entry__descriptor,
		small_memfd);
}

static void b_name(void)
{
	rewrite("memfd.img", IMG_MEMFD_INODE_MAGIC, NULL, &memfd_inode_entry__descriptor,
		long_name);
}

static void b_twice(void)
{
	rewrite("memfd.img", IMG_MEMFD_INODE_MAGIC, NULL, &memfd_inode_entry__descriptor, twice);
}

static void b_missing(void)
{
	fix_unlink(tmp.fd, "pagemap-shmem-26677.img");
}

static void b_pages(void)
{
	fix_truncate(tmp.fd, "pages-2.img", 100 * PG);
}

static void b_lazy(void)
{
	rewrite("pagemap-shmem-26678.img", IMG_PAGEMAP_MAGIC, &pagemap_head__descriptor,
		&pagemap_entry__descriptor, lazy_flag);
}

static void b_inode(void)
{
	rewrite("files.img", IMG_FILES_MAGIC, NULL, &file_entry__descriptor, no_inode);
}

static void b_nomemfd(void)
{
	rewrite("files.img", IMG_FILES_MAGIC, NULL, &file_entry__descriptor, no_memfd);
}

static void b_dupfile(void)
{
	rewrite("files.img", IMG_FILES_MAGIC, NULL, &file_entry__descriptor, dup_file);
}

static void b_fd(void)
{
	rewrite("fdinfo-2.img", IMG_FDINFO_MAGIC, NULL, &fdinfo_entry__descriptor, fd_unknown);
}

static void b_vma(void)
{
	rewrite("mm-2519.img", IMG_MM_MAGIC, NULL, &mm_entry__descriptor, vma_unknown);
}

static void b_pgoff(void)
{
	rewrite("mm-2519.img", IMG_MM_MAGIC, NULL, &mm_entry__descriptor, vma_unaligned);
}

static void b_overlap(void)
{
	struct fix_pe pe = { .nr = 1, .flags = PE_PRESENT | PE_LAZY };
	size_t len;
	uint8_t *old;

	find_anon_area();
	pe.vaddr = anon_area + 5 * PG;
	/* The task's own pagemap replaced by one entry inside the area; its pages file to match. */
	fix_write_pagemap(tmp.fd, 2519, 3, &pe, 1);
	old = fix_read_file(tmp.fd, "pages-3.img", &len);
	cr_assert_not_null(old);
	fix_write_file(tmp.fd, "pages-3.img", old, PG);
	free(old);
}

static void b_cut(void)
{
	size_t len;
	uint8_t *b = fix_read_file(tmp.fd, "memfd.img", &len);

	cr_assert_not_null(b);
	fix_write_file(tmp.fd, "memfd.img", b, len - 5);
	free(b);
}

static const struct shm_case cases[] = {
	{ "object shorter than its contents", b_small, EINVAL, "pagemap-shmem-26678.img", "run past the object's 16384 bytes" },
	{ "name too long", b_name, EINVAL, "memfd.img", "name of 299 bytes" },
	{ "inode listed twice", b_twice, EINVAL, "memfd.img", "listed twice" },
	{ "contents missing", b_missing, EINVAL, "memfd.img", "pagemap-shmem-26677.img, are missing" },
	{ "pages file short", b_pages, EINVAL, "pages-2.img", "present pages" },
	{ "lazy contents", b_lazy, ENOTSUP, "pagemap-shmem-26678.img", "only PE_PRESENT" },
	{ "file of no object", b_inode, EINVAL, "files.img", "memfd inode 99 is not in memfd.img" },
	{ "MEMFD file without its record", b_nomemfd, EINVAL, "files.img", "without its memfd record" },
	{ "file id listed twice", b_dupfile, EINVAL, "files.img", "file id 3 listed twice" },
	{ "fd of no file", b_fd, EINVAL, "fdinfo-2.img", "memfd file id 77 is not in files.img" },
	{ "area of no file", b_vma, EINVAL, "mm-2519.img", "maps memfd file id 55" },
	{ "area at an unaligned offset", b_pgoff, EINVAL, "mm-2519.img", "not page aligned" },
	{ "task pages inside a shared area", b_overlap, EINVAL, "pagemap-2519.img", "of an area of shared memory" },
	{ "memfd.img cut short", b_cut, EINVAL, "memfd.img", "" },
};

ParameterizedTestParameters(shm, broken_dir_is_refused_naming_the_file)
{
	static unsigned idx[sizeof(cases) / sizeof(cases[0])];

	for (unsigned i = 0; i < sizeof(idx) / sizeof(idx[0]); i++)
		idx[i] = i;
	return cr_make_param_array(unsigned, idx, sizeof(idx) / sizeof(idx[0]));
}

ParameterizedTest(unsigned *i, shm, broken_dir_is_refused_naming_the_file, .fini = tmp_teardown)
{
	const struct shm_case *k = &cases[*i];
	struct pages_cache c;
	struct img_err err = { "" };
	struct img_task t;
	int ret;

	copy_fixture();
	pages_cache_init(&c);
	/* The copy loads before it is broken: the case is what breaks it. */
	ret = img_task_load(&t, tmp.fd, 2519, &c, &err);
	cr_assert_eq(ret, 0, "%s: the unbroken copy: %s", k->name, err.msg);
	img_task_free(&t, &c);
	k->build();
	ret = img_task_load(&t, tmp.fd, 2519, &c, &err);
	cr_assert_eq(ret, -k->code, "%s: returned %d (%s), want -%d", k->name, ret, err.msg,
		     k->code);
	cr_assert_eq(strncmp(err.msg, k->file, strlen(k->file)), 0, "%s: \"%s\" does not start "
		     "with %s", k->name, err.msg, k->file);
	cr_assert_not_null(strstr(err.msg, k->phrase), "%s: \"%s\" lacks \"%s\"", k->name,
			   err.msg, k->phrase);
	cr_assert_eq(c.nr_files, 0, "%s: pages files left mapped", k->name);
}
