/*
 * The real CRIU 4.2 images decode to the same figures the test works out on
 * its own: the test splits the files by hand and unpacks each record with
 * protobuf-c, applying CRIU's pagemap rules itself.
 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "image.h"
#include "imgfix.h"
#include "imgtask.h"
#include "inventory.pb-c.h"
#include "mm.pb-c.h"
#include "pagemap.pb-c.h"
#include "pstree.pb-c.h"

/* One task as the test reads it from the raw records. */
struct raw_task {
	uint32_t pid;
	size_t nr_vmas;
	uint32_t pages_id;
	struct pm_entry *e;
	size_t n;
	uint64_t present_pages;
	uint64_t lazy_pages;
	uint64_t parent_pages;
};

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Read mm-PID.img and pagemap-PID.img of PID by hand into RT. */
static void raw_task_read(int dirfd, uint32_t pid, struct raw_task *rt)
{
	struct fix_recs rs;
	char name[32];
	uint64_t off = 0;
	MmEntry *mm;
	PagemapHead *head;

	memset(rt, 0, sizeof(*rt));
	rt->pid = pid;

	snprintf(name, sizeof(name), "mm-%u.img", pid);
	cr_assert_eq(fix_parse_records(&rs, dirfd, name, IMG_MM_MAGIC), 0, "%s: bad framing", name);
	cr_assert_eq(rs.n, 1, "%s: %zu records", name, rs.n);
	mm = mm_entry__unpack(NULL, rs.r[0].len, rs.r[0].data);
	cr_assert_not_null(mm, "%s: undecodable", name);
	rt->nr_vmas = mm->n_vmas;
	mm_entry__free_unpacked(mm, NULL);
	fix_recs_free(&rs);

	snprintf(name, sizeof(name), "pagemap-%u.img", pid);
	cr_assert_eq(fix_parse_records(&rs, dirfd, name, IMG_PAGEMAP_MAGIC), 0, "%s: bad framing",
		     name);
	cr_assert_geq(rs.n, 1, "%s: no head", name);
	head = pagemap_head__unpack(NULL, rs.r[0].len, rs.r[0].data);
	cr_assert_not_null(head, "%s: undecodable head", name);
	rt->pages_id = head->pages_id;
	pagemap_head__free_unpacked(head, NULL);

	rt->n = rs.n - 1;
	rt->e = calloc(rt->n ? rt->n : 1, sizeof(*rt->e));
	cr_assert_not_null(rt->e);
	for (size_t i = 0; i < rt->n; i++) {
		PagemapEntry *pe = pagemap_entry__unpack(NULL, rs.r[i + 1].len, rs.r[i + 1].data);
		struct pm_entry *e = &rt->e[i];
		uint64_t nr;

		cr_assert_not_null(pe, "%s: record %zu undecodable", name, i + 2);
		nr = pe->has_nr_pages ? pe->nr_pages : pe->compat_nr_pages;
		e->flags = pe->has_flags ? pe->flags : PE_PRESENT;
		if (pe->has_in_parent && pe->in_parent)
			e->flags = (pe->has_flags ? pe->flags : 0) | PE_PARENT;
		e->start = pe->vaddr;
		e->end = pe->vaddr + nr * PAGE_SIZE_4K;
		if (e->flags & PE_PRESENT) {
			e->off = off;
			off += nr * PAGE_SIZE_4K;
			rt->present_pages += nr;
		}
		if (e->flags & PE_LAZY)
			rt->lazy_pages += nr;
		if (e->flags & PE_PARENT)
			rt->parent_pages += nr;
		pagemap_entry__free_unpacked(pe, NULL);
	}
	fix_recs_free(&rs);
}

/* The pids of pstree.img, in file order, read by hand. */
static size_t raw_pstree_pids(int dirfd, uint32_t **pids)
{
	struct fix_recs rs;
	size_t n;

	cr_assert_eq(fix_parse_records(&rs, dirfd, "pstree.img", IMG_PSTREE_MAGIC), 0);
	n = rs.n;
	*pids = calloc(n ? n : 1, sizeof(**pids));
	cr_assert_not_null(*pids);
	for (size_t i = 0; i < rs.n; i++) {
		PstreeEntry *e = pstree_entry__unpack(NULL, rs.r[i].len, rs.r[i].data);

		cr_assert_not_null(e, "pstree.img: record %zu undecodable", i + 1);
		(*pids)[i] = e->pid;
		pstree_entry__free_unpacked(e, NULL);
	}
	fix_recs_free(&rs);
	return n;
}

/* The pids of the pagemap-PID.img files of DIRFD, sorted. */
static size_t pagemap_file_pids(int dirfd, uint32_t **pids)
{
	size_t n = 0, cap = 16;
	struct dirent *de;
	DIR *d = fdopendir(dup(dirfd));

	cr_assert_not_null(d);
	*pids = malloc(cap * sizeof(**pids));
	cr_assert_not_null(*pids);
	while ((de = readdir(d))) {
		char canon[64];
		unsigned long pid;
		char *end;

		if (strncmp(de->d_name, "pagemap-", 8))
			continue;
		pid = strtoul(de->d_name + 8, &end, 10);
		snprintf(canon, sizeof(canon), "pagemap-%lu.img", pid);
		if (strcmp(canon, de->d_name))
			continue;
		if (n == cap) {
			cap *= 2;
			*pids = realloc(*pids, cap * sizeof(**pids));
			cr_assert_not_null(*pids);
		}
		(*pids)[n++] = (uint32_t)pid;
	}
	closedir(d);
	qsort(*pids, n, sizeof(**pids), cmp_u32);
	return n;
}

/* Load every task of fixture SUB through the library and compare with the raw reading. */
static void check_fixture_decodes(const char *sub)
{
	char path[512];
	struct pages_cache cache = { 0 };
	struct img_task *tasks;
	uint32_t *pids, *raw_pids;
	struct img_err err = { "" };
	uint64_t want_mapped = 0;
	size_t n, raw_n;
	bool from_pstree;
	int dirfd;

	snprintf(path, sizeof(path), "%s/%s", FIX_CRIU_DIR, sub);
	dirfd = fix_open_dir(path);
	cr_assert_eq(img_list_tasks(dirfd, &pids, &n, &from_pstree, &err), 0, "%s: %s", sub,
		     err.msg);
	cr_assert(from_pstree);
	raw_n = raw_pstree_pids(dirfd, &raw_pids);
	cr_assert_eq(n, raw_n, "%s: %zu tasks, pstree.img has %zu", sub, n, raw_n);
	cr_assert_arr_eq(pids, raw_pids, n * sizeof(*pids), "%s: pids differ from pstree.img", sub);

	tasks = calloc(n, sizeof(*tasks));
	cr_assert_not_null(tasks);
	for (size_t i = 0; i < n; i++) {
		struct img_task *t = &tasks[i];
		struct raw_task rt;
		struct stat st;
		char pages[32];

		cr_assert_eq(img_task_load(t, dirfd, pids[i], &cache, &err), 0, "%s: %s", sub,
			     err.msg);
		cr_assert_not_null(t->mm);
		cr_assert_not_null(t->pm);
		raw_task_read(dirfd, pids[i], &rt);

		cr_assert_eq(t->pid, rt.pid);
		cr_assert_eq(t->mm->n_vmas, rt.nr_vmas, "pid %u: vmas %zu, raw %zu", rt.pid,
			     t->mm->n_vmas, rt.nr_vmas);
		cr_assert_eq(t->pm->pid, rt.pid);
		cr_assert_eq(t->pm->pages_id, rt.pages_id);
		cr_assert_eq(t->pm->n, rt.n, "pid %u: entries %zu, raw %zu", rt.pid, t->pm->n,
			     rt.n);
		cr_assert_eq(t->pm->present_pages, rt.present_pages, "pid %u: present", rt.pid);
		cr_assert_eq(t->pm->lazy_pages, rt.lazy_pages, "pid %u: lazy", rt.pid);
		cr_assert_eq(t->pm->parent_pages, rt.parent_pages, "pid %u: parent", rt.pid);
		cr_assert_null(t->pm->parent, "pid %u: a full dump has no parent", rt.pid);
		for (size_t j = 0; j < rt.n; j++) {
			const struct pm_entry *a = &t->pm->e[j], *b = &rt.e[j];

			cr_assert(a->start == b->start && a->end == b->end && a->flags == b->flags,
				  "pid %u entry %zu: 0x%" PRIx64 "-0x%" PRIx64 "/%x, raw 0x%" PRIx64
				  "-0x%" PRIx64 "/%x", rt.pid, j, a->start, a->end, a->flags,
				  b->start, b->end, b->flags);
			if (b->flags & PE_PRESENT)
				cr_assert_eq(a->off, b->off, "pid %u entry %zu: offset", rt.pid, j);
			cr_assert_eq(pagemap_find(t->pm, b->start), a);
			cr_assert_eq(pagemap_find(t->pm, b->end - PAGE_SIZE_4K), a);
		}

		snprintf(pages, sizeof(pages), "pages-%u.img", rt.pages_id);
		cr_assert_eq(fstatat(dirfd, pages, &st, 0), 0, "%s missing", pages);
		cr_assert_eq((uint64_t)st.st_size, rt.present_pages * PAGE_SIZE_4K,
			     "%s: %lld bytes for %" PRIu64 " present pages", pages,
			     (long long)st.st_size, rt.present_pages);
		cr_assert_not_null(t->pm->pages);
		cr_assert_eq(t->pm->pages->size, (uint64_t)st.st_size);
		want_mapped += st.st_size;
		free(rt.e);
	}
	/* One mapping per pages file: every task of these dumps has its own. */
	cr_assert_eq(cache.nr_files, n);
	cr_assert_eq(cache.mapped_bytes, want_mapped);
	for (size_t i = 0; i < n; i++)
		img_task_free(&tasks[i], &cache);
	cr_assert_eq(cache.nr_files, 0);
	cr_assert_eq(cache.mapped_bytes, 0);
	cr_assert_null(cache.head);
	free(tasks);
	free(pids);
	free(raw_pids);
	close(dirfd);
}

/* Check that pstree.img lists exactly the tasks that have a pagemap-PID.img. */
static void check_pstree_matches_pagemaps(const char *sub)
{
	char path[512];
	uint32_t *tree, *files;
	size_t nt, nf;
	int dirfd;

	snprintf(path, sizeof(path), "%s/%s", FIX_CRIU_DIR, sub);
	dirfd = fix_open_dir(path);
	nt = raw_pstree_pids(dirfd, &tree);
	nf = pagemap_file_pids(dirfd, &files);
	cr_assert_gt(nt, 0);
	qsort(tree, nt, sizeof(*tree), cmp_u32);
	cr_assert_eq(nt, nf, "%s: pstree has %zu pids, %zu pagemap files", sub, nt, nf);
	cr_assert_arr_eq(tree, files, nt * sizeof(*tree), "%s: pids differ", sub);
	free(tree);
	free(files);
	close(dirfd);
}

Test(image_fixtures, single_decodes_as_raw_records)
{
	check_fixture_decodes("single");
}

Test(image_fixtures, fork3_decodes_as_raw_records)
{
	check_fixture_decodes("fork3");
}

Test(image_fixtures, pstree_pids_are_the_pagemap_files)
{
	check_pstree_matches_pagemaps("single");
	check_pstree_matches_pagemaps("fork3");
}

Test(image_fixtures, fork3_pstree_is_one_parent_and_its_children)
{
	struct fix_recs rs;
	int dirfd = fix_open_dir(FIX_CRIU_DIR "/fork3");
	uint32_t parent = 0;

	cr_assert_eq(fix_parse_records(&rs, dirfd, "pstree.img", IMG_PSTREE_MAGIC), 0);
	cr_assert_eq(rs.n, 4, "lazyapp fork3 is a parent and three children");
	for (size_t i = 0; i < rs.n; i++) {
		PstreeEntry *e = pstree_entry__unpack(NULL, rs.r[i].len, rs.r[i].data);

		cr_assert_not_null(e);
		cr_assert_eq(e->n_threads, 1);
		cr_assert_eq(e->threads[0], e->pid);
		if (i == 0)
			parent = e->pid;
		else
			cr_assert_eq(e->ppid, parent, "pid %u: ppid %u", e->pid, e->ppid);
		pstree_entry__free_unpacked(e, NULL);
	}
	fix_recs_free(&rs);
	close(dirfd);
}

Test(image_fixtures, inventory_reads_as_raw_record)
{
	const char *subs[] = { "single", "fork3" };

	for (size_t k = 0; k < 2; k++) {
		char path[512];
		struct fix_recs rs;
		struct img_err err = { "" };
		InventoryEntry *raw, *inv;
		int dirfd;

		snprintf(path, sizeof(path), "%s/%s", FIX_CRIU_DIR, subs[k]);
		dirfd = fix_open_dir(path);
		cr_assert_eq(fix_parse_records(&rs, dirfd, "inventory.img", IMG_INVENTORY_MAGIC),
			     0);
		cr_assert_eq(rs.n, 1);
		raw = inventory_entry__unpack(NULL, rs.r[0].len, rs.r[0].data);
		cr_assert_not_null(raw);
		cr_assert_eq(img_read_one(dirfd, "inventory.img", IMG_INVENTORY_MAGIC,
					  &inventory_entry__descriptor,
					  (ProtobufCMessage **)&inv, &err), 0, "%s", err.msg);
		cr_assert_eq(inv->img_version, raw->img_version);
		cr_assert_eq(inv->img_version, IMG_VERSION, "CRIU 4.2 writes image version 2");
		inventory_entry__free_unpacked(inv, NULL);
		inventory_entry__free_unpacked(raw, NULL);
		fix_recs_free(&rs);
		close(dirfd);
	}
}

/* Without pstree.img, the tasks are the pagemap-PID.img files, in pid order. */
Test(image_fixtures, tasks_listed_from_pagemap_files_without_pstree)
{
	static const char *const names[] = {
		"pagemap-24804.img", "pagemap-24800.img", "pagemap-24803.img", "pagemap-24802.img",
		"pagemap-0.img", "pagemap-12x.img", "pagemap-.img", "pagemap-5.img.bak",
		"pages-1.img",
	};
	static const uint32_t want[] = { 24800, 24802, 24803, 24804 };
	struct img_err err = { "" };
	struct fix_tmp tmp;
	uint32_t *pids;
	bool from_pstree = true;
	size_t n;
	int ret;

	fix_tmp_make(&tmp);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		fix_write_file(tmp.fd, names[i], "", 0);
	ret = img_list_tasks(tmp.fd, &pids, &n, &from_pstree, &err);
	fix_tmp_remove(&tmp);
	cr_assert_eq(ret, 0, "%s", err.msg);
	cr_assert_not(from_pstree);
	cr_assert_eq(n, 4);
	cr_assert_arr_eq(pids, want, sizeof(want));
	free(pids);
}
