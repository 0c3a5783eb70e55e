/*
 * Malformed image dirs: each case starts from the standard valid task of
 * imgfix (inventory, pstree, mm, pagemap, pages for pid 100) and breaks one
 * thing. The library must fail with a negative errno, name the file (and
 * the record, where one is at fault) at the start of its message, and say
 * what is wrong.
 *
 * Records of pagemap-100.img: 1 is the head, 2-6 the five entries.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "image.h"
#include "imgfix.h"
#include "imgtask.h"
#include "inventory.pb-c.h"
#include "mm.pb-c.h"

#define PM	"pagemap-100.img"
#define MM	"mm-100.img"

static struct fix_tmp tmp;

static void tmp_setup(void)
{
	fix_tmp_make(&tmp);
}

static void tmp_teardown(void)
{
	fix_tmp_remove(&tmp);
}

TestSuite(image_malformed, .init = tmp_setup, .fini = tmp_teardown);

/* Which entry point a case goes through. */
enum mal_call {
	CALL_TASK_LOAD,		/* img_task_load(FIX_PID) */
	CALL_LIST_TASKS,	/* img_list_tasks */
	CALL_READ_INVENTORY,	/* img_read_one(inventory.img) */
};

struct mal_case {
	const char *name;
	void (*build)(int top, int cur);	/* break the valid dir CUR (TOP holds it) */
	enum mal_call call;
	int code;		/* the errno expected, negated in the return */
	const char *file;	/* the message starts "FILE: " */
	unsigned rec;		/* and then "record REC: ", unless 0 */
	const char *phrase;	/* the cause */
};

/* Copy the standard entries into PE, to change one. */
static size_t std_pes(struct fix_pe *pe)
{
	memcpy(pe, fix_std_pes, fix_std_npes * sizeof(*pe));
	return fix_std_npes;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = v;
	p[1] = v >> 8;
	p[2] = v >> 16;
	p[3] = v >> 24;
}

/* Overwrite 4 bytes at OFF of NAME with V, little endian. */
static void patch_le32(int dirfd, const char *name, size_t off, uint32_t v)
{
	size_t len;
	uint8_t *buf = fix_read_file(dirfd, name, &len);

	cr_assert_not_null(buf);
	cr_assert_leq(off + 4, len);
	put_le32(buf + off, v);
	fix_write_file(dirfd, name, buf, len);
	free(buf);
}

/* Where record REC (from 1) of NAME starts, by the test's own reading. */
static struct fix_rec record(int dirfd, const char *name, uint32_t magic, unsigned rec)
{
	struct fix_recs rs;
	struct fix_rec r;

	cr_assert_eq(fix_parse_records(&rs, dirfd, name, magic), 0);
	cr_assert_leq(rec, rs.n);
	r = rs.r[rec - 1];
	r.data = NULL;		/* points into freed memory otherwise */
	fix_recs_free(&rs);
	return r;
}

/* Replace the body of record REC of NAME with BODY, with a matching size. */
static void replace_record(int dirfd, const char *name, uint32_t magic, unsigned rec,
			   const void *body, uint32_t n)
{
	struct fix_rec r = record(dirfd, name, magic, rec);
	size_t len, tail;
	uint8_t *buf = fix_read_file(dirfd, name, &len), *out;

	cr_assert_not_null(buf);
	tail = len - (r.off + 4 + r.len);
	out = malloc(r.off + 4 + n + tail);
	cr_assert_not_null(out);
	memcpy(out, buf, r.off);
	put_le32(out + r.off, n);
	memcpy(out + r.off + 4, body, n);
	memcpy(out + r.off + 4 + n, buf + r.off + 4 + r.len, tail);
	fix_write_file(dirfd, name, out, r.off + 4 + n + tail);
	free(out);
	free(buf);
}

static void append_bytes(int dirfd, const char *name, size_t n)
{
	size_t len;
	uint8_t *buf = fix_read_file(dirfd, name, &len);

	cr_assert_not_null(buf);
	buf = realloc(buf, len + n);
	cr_assert_not_null(buf);
	memset(buf + len, 0, n);
	fix_write_file(dirfd, name, buf, len + n);
	free(buf);
}

/* Make entry 5 (record 6, 0x44000) of cur PARENT, and link cur/parent to ../prev. */
static int cur_with_parent_entry(int top, int cur)
{
	struct fix_pe pe[8];
	size_t n = std_pes(pe);

	pe[4].flags = PE_PARENT;
	fix_write_memory(cur, 1, pe, n);
	fix_symlink(cur, "parent", "../prev");
	return fix_mkdir(top, "prev");
}

static void build_mm_empty(int top, int cur)
{
	(void)top;
	fix_write_file(cur, MM, "", 0);
}

static void build_pm_empty(int top, int cur)
{
	(void)top;
	fix_write_file(cur, PM, "", 0);
}

static void build_pm_short_magic(int top, int cur)
{
	(void)top;
	fix_write_file(cur, PM, "\x19\x43\x56\x54\x25\x40", 6);
}

static void build_common_magic(int top, int cur)
{
	(void)top;
	patch_le32(cur, PM, 0, 0x12345678);
}

static void build_type_magic(int top, int cur)
{
	(void)top;
	patch_le32(cur, PM, 4, IMG_MM_MAGIC);
}

static void build_record_too_big(int top, int cur)
{
	(void)top;
	patch_le32(cur, PM, record(cur, PM, IMG_PAGEMAP_MAGIC, 3).off, IMG_MAX_RECORD + 1);
}

/* Cut the file one byte short of the end of record 3. */
static void build_record_truncated(int top, int cur)
{
	struct fix_rec r = record(cur, PM, IMG_PAGEMAP_MAGIC, 3);

	(void)top;
	fix_truncate(cur, PM, r.off + 4 + r.len - 1);
}

static void build_trailing_1(int top, int cur)
{
	(void)top;
	append_bytes(cur, PM, 1);
}

static void build_trailing_2(int top, int cur)
{
	(void)top;
	append_bytes(cur, PM, 2);
}

static void build_trailing_3(int top, int cur)
{
	(void)top;
	append_bytes(cur, PM, 3);
}

static void build_mm_trailing(int top, int cur)
{
	(void)top;
	append_bytes(cur, MM, 2);
}

static void build_garbage_record(int top, int cur)
{
	static const uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

	(void)top;
	replace_record(cur, PM, IMG_PAGEMAP_MAGIC, 3, junk, sizeof(junk));
}

/* An entry with compat_nr_pages = 2 and no vaddr, a required field. */
static void build_missing_vaddr(int top, int cur)
{
	static const uint8_t body[] = { 0x10, 0x02 };

	(void)top;
	replace_record(cur, PM, IMG_PAGEMAP_MAGIC, 3, body, sizeof(body));
}

/* An mm_entry with only mm_start_code. */
static void build_mm_missing_fields(int top, int cur)
{
	static const uint8_t body[] = { 0x08, 0x01 };

	(void)top;
	replace_record(cur, MM, IMG_MM_MAGIC, 1, body, sizeof(body));
}

static void build_no_head(int top, int cur)
{
	uint8_t magic[8];

	(void)top;
	put_le32(magic, IMG_COMMON_MAGIC);
	put_le32(magic + 4, IMG_PAGEMAP_MAGIC);
	fix_write_file(cur, PM, magic, sizeof(magic));
}

static void build_out_of_order(int top, int cur)
{
	struct fix_pe pe[8], t;
	size_t n = std_pes(pe);

	(void)top;
	t = pe[1];
	pe[1] = pe[2];
	pe[2] = t;
	fix_write_memory(cur, 1, pe, n);
}

static void build_overlap(int top, int cur)
{
	struct fix_pe pe[8];
	size_t n = std_pes(pe);

	(void)top;
	pe[1].vaddr = 0x11000;
	fix_write_memory(cur, 1, pe, n);
}

static void build_outside_vmas(int top, int cur)
{
	struct fix_pe pe[8];
	size_t n = std_pes(pe);

	(void)top;
	pe[4].vaddr = 0x50000;	/* just past the last VMA */
	fix_write_memory(cur, 1, pe, n);
}

/* 0x18000-0x24000 runs off the end of VMA 1 (0x20000) into the gap. */
static void build_crosses_gap(int top, int cur)
{
	struct fix_pe pe[8];
	size_t n = std_pes(pe);

	(void)top;
	pe[2].nr = 12;
	fix_write_memory(cur, 1, pe, n);
}

static void build_pages_short(int top, int cur)
{
	(void)top;
	fix_truncate(cur, "pages-1.img", 8 * PAGE_SIZE_4K);
}

static void build_pages_long(int top, int cur)
{
	(void)top;
	fix_truncate(cur, "pages-1.img", 10 * PAGE_SIZE_4K);
}

static void build_pages_missing(int top, int cur)
{
	(void)top;
	fix_unlink(cur, "pages-1.img");
}

static void build_unaligned(int top, int cur)
{
	struct fix_pe pe[8];
	size_t n = std_pes(pe);

	(void)top;
	pe[4].vaddr = 0x44800;
	fix_write_memory(cur, 1, pe, n);
}

static void build_zero_pages(int top, int cur)
{
	struct fix_pe pe[8];
	size_t n = std_pes(pe);

	(void)top;
	pe[4].nr = 0;
	fix_write_memory(cur, 1, pe, n);
}

static void build_huge_entry(int top, int cur)
{
	struct fix_pe pe[8];
	size_t n = std_pes(pe);

	(void)top;
	pe[4].nr = 1ull << 50;
	pe[4].flags = PE_LAZY;		/* no pages file of that size, please */
	fix_write_memory(cur, 1, pe, n);
}

static void build_present_parent(int top, int cur)
{
	struct fix_pe pe[8];
	size_t n = std_pes(pe);

	(void)top;
	pe[4].flags = PE_PRESENT | PE_PARENT;
	fix_write_memory(cur, 1, pe, n);
}

/* The old in_parent bit on an entry that also says PRESENT. */
static void build_in_parent_present(int top, int cur)
{
	struct fix_pe pe[8];
	size_t n = std_pes(pe);

	(void)top;
	pe[4].enc = FIX_INPARENT;
	fix_write_memory(cur, 1, pe, n);
}

static void build_unknown_flags(int top, int cur)
{
	struct fix_pe pe[8];
	size_t n = std_pes(pe);

	(void)top;
	pe[4].flags = PE_PRESENT | 0x10;
	fix_write_memory(cur, 1, pe, n);
}

/* PE_POISON stands for a page of the pages file: never without PE_PRESENT. */
static void build_poison_without_present(int top, int cur)
{
	struct fix_pe pe[8];
	size_t n = std_pes(pe);

	(void)top;
	pe[4].flags = PE_LAZY | PE_POISON;
	fix_write_memory(cur, 1, pe, n);
}

static void build_flags_zero(int top, int cur)
{
	struct fix_pe pe[8];
	size_t n = std_pes(pe);

	(void)top;
	pe[4].flags = 0;
	fix_write_memory(cur, 1, pe, n);
}

/* cur/parent -> ../prev, prev/parent -> ../cur, both with in-parent pages. */
static void build_parent_loop(int top, int cur)
{
	static const struct fix_pe pe[] = { { 0x44000, 1, PE_PARENT, 0 } };
	int prev = cur_with_parent_entry(top, cur);

	fix_write_pagemap(prev, FIX_PID, FIX_PAGES_ID, pe, 1);
	fix_symlink(prev, "parent", "../cur");
	close(prev);
}

static void build_parent_no_page(int top, int cur)
{
	static const struct fix_pe pe[] = { { 0x10000, 2, PE_PRESENT, 0 } };
	int prev = cur_with_parent_entry(top, cur);

	fix_write_memory(prev, 2, pe, 1);
	close(prev);
}

static void build_parent_no_data(int top, int cur)
{
	static const struct fix_pe pe[] = { { 0x44000, 1, PE_LAZY, 0 } };
	int prev = cur_with_parent_entry(top, cur);

	fix_write_memory(prev, 2, pe, 1);
	close(prev);
}

static void build_parent_link_missing(int top, int cur)
{
	close(cur_with_parent_entry(top, cur));
	fix_unlink(cur, "parent");
}

static void build_parent_pages_short(int top, int cur)
{
	static const struct fix_pe pe[] = { { 0x44000, 1, PE_PRESENT, 0 } };
	int prev = cur_with_parent_entry(top, cur);

	fix_write_memory(prev, 2, pe, 1);
	fix_truncate(prev, "pages-1.img", 0);
	close(prev);
}

static void build_pstree_dup(int top, int cur)
{
	static const uint32_t pids[] = { 100, 101, 100 };

	(void)top;
	fix_write_pstree(cur, pids, 3);
}

static void build_pstree_pid0(int top, int cur)
{
	static const uint32_t pids[] = { 100, 0 };

	(void)top;
	fix_write_pstree(cur, pids, 2);
}

static void build_pstree_no_tasks(int top, int cur)
{
	(void)top;
	fix_write_pstree(cur, NULL, 0);
}

static void build_vma_overlap(int top, int cur)
{
	static const struct fix_vma v[] = {
		{ 0x10000, 0x14000 }, { 0x12000, 0x20000 }, { 0x40000, 0x50000 },
	};

	(void)top;
	fix_write_mm(cur, FIX_PID, v, 3);
}

static void build_vma_unaligned(int top, int cur)
{
	static const struct fix_vma v[] = {
		{ 0x10000, 0x14000 }, { 0x14000, 0x20800 }, { 0x40000, 0x50000 },
	};

	(void)top;
	fix_write_mm(cur, FIX_PID, v, 3);
}

static void build_vma_empty(int top, int cur)
{
	static const struct fix_vma v[] = {
		{ 0x10000, 0x14000 }, { 0x14000, 0x20000 },
		{ 0x30000, 0x30000 }, { 0x40000, 0x50000 },
	};

	(void)top;
	fix_write_mm(cur, FIX_PID, v, 4);
}

/* Two mm records: rewrite mm-100.img with its record twice. */
static void build_mm_two_records(int top, int cur)
{
	size_t len;
	uint8_t *buf = fix_read_file(cur, MM, &len);

	(void)top;
	cr_assert_not_null(buf);
	buf = realloc(buf, 2 * len - 8);
	cr_assert_not_null(buf);
	memcpy(buf + len, buf + 8, len - 8);
	fix_write_file(cur, MM, buf, 2 * len - 8);
	free(buf);
}

static void build_mm_missing(int top, int cur)
{
	(void)top;
	fix_unlink(cur, MM);
}

static void build_pm_missing(int top, int cur)
{
	(void)top;
	fix_unlink(cur, PM);
	fix_unlink(cur, "pages-1.img");
}

static void build_inventory_two(int top, int cur)
{
	InventoryEntry inv = INVENTORY_ENTRY__INIT;
	struct img_err err;
	struct img_writer w;

	(void)top;
	inv.img_version = IMG_VERSION;
	cr_assert_eq(img_create(&w, cur, "inventory.img", IMG_INVENTORY_MAGIC, &err), 0);
	cr_assert_eq(img_write(&w, &inv.base, &err), 0);
	cr_assert_eq(img_write(&w, &inv.base, &err), 0);
	cr_assert_eq(img_finish(&w, &err), 0);
}

static void build_inventory_empty(int top, int cur)
{
	uint8_t magic[4];

	(void)top;
	put_le32(magic, IMG_INVENTORY_MAGIC);
	fix_write_file(cur, "inventory.img", magic, sizeof(magic));
}

/* The two-magic header of the other files, where inventory has its own single magic. */
static void build_inventory_magic(int top, int cur)
{
	(void)top;
	patch_le32(cur, "inventory.img", 0, IMG_COMMON_MAGIC);
}

static const struct mal_case cases[] = {
	{ "empty mm", build_mm_empty, CALL_TASK_LOAD, EINVAL, MM, 0, "empty file" },
	{ "empty pagemap", build_pm_empty, CALL_TASK_LOAD, EINVAL, PM, 0, "empty file" },
	{ "short magic", build_pm_short_magic, CALL_TASK_LOAD, EINVAL, PM, 0,
	  "truncated magic (6 bytes)" },
	{ "wrong common magic", build_common_magic, CALL_TASK_LOAD, EINVAL, PM, 0,
	  "wrong common magic 0x12345678" },
	{ "mm magic in a pagemap", build_type_magic, CALL_TASK_LOAD, EINVAL, PM, 0,
	  "wrong type magic 0x57492820" },
	{ "record over the size cap", build_record_too_big, CALL_TASK_LOAD, EINVAL, PM, 3,
	  "MiB limit" },
	{ "truncated record", build_record_truncated, CALL_TASK_LOAD, EINVAL, PM, 3,
	  "truncated: size says" },
	{ "1 trailing byte", build_trailing_1, CALL_TASK_LOAD, EINVAL, PM, 0,
	  "1 trailing bytes after record 6" },
	{ "2 trailing bytes", build_trailing_2, CALL_TASK_LOAD, EINVAL, PM, 0,
	  "2 trailing bytes after record 6" },
	{ "3 trailing bytes", build_trailing_3, CALL_TASK_LOAD, EINVAL, PM, 0,
	  "3 trailing bytes after record 6" },
	{ "trailing bytes after mm", build_mm_trailing, CALL_TASK_LOAD, EINVAL, MM, 0,
	  "2 trailing bytes after record 1" },
	{ "garbage record", build_garbage_record, CALL_TASK_LOAD, EINVAL, PM, 3,
	  "cannot decode 6 bytes as pagemap_entry" },
	{ "entry without vaddr", build_missing_vaddr, CALL_TASK_LOAD, EINVAL, PM, 3,
	  "cannot decode 2 bytes as pagemap_entry" },
	{ "mm without required fields", build_mm_missing_fields, CALL_TASK_LOAD, EINVAL, MM, 1,
	  "cannot decode 2 bytes as mm_entry" },
	{ "pagemap without head", build_no_head, CALL_TASK_LOAD, EINVAL, PM, 1,
	  "missing pagemap_head" },
	{ "entries out of order", build_out_of_order, CALL_TASK_LOAD, EINVAL, PM, 4,
	  "is out of order after the previous one" },
	{ "overlapping entries", build_overlap, CALL_TASK_LOAD, EINVAL, PM, 3,
	  "0x11000-0x13000 overlaps the previous one 0x10000-0x12000" },
	{ "entry outside every VMA", build_outside_vmas, CALL_TASK_LOAD, EINVAL, PM, 6,
	  "0x50000-0x51000 lies outside the VMAs of mm-100.img" },
	{ "entry across a gap", build_crosses_gap, CALL_TASK_LOAD, EINVAL, PM, 4,
	  "0x18000-0x24000 lies outside the VMAs" },
	{ "pages file short", build_pages_short, CALL_TASK_LOAD, EINVAL, "pages-1.img", 0,
	  "32768 bytes, but pagemap-100.img has 9 present pages" },
	{ "pages file long", build_pages_long, CALL_TASK_LOAD, EINVAL, "pages-1.img", 0,
	  "40960 bytes, but pagemap-100.img has 9 present pages" },
	{ "pages file missing", build_pages_missing, CALL_TASK_LOAD, EINVAL, "pages-1.img", 0,
	  "needed by pagemap-100.img: missing" },
	{ "unaligned vaddr", build_unaligned, CALL_TASK_LOAD, EINVAL, PM, 6,
	  "vaddr 0x44800 not page aligned" },
	{ "zero nr_pages", build_zero_pages, CALL_TASK_LOAD, EINVAL, PM, 6, "has no pages" },
	{ "entry past the address space", build_huge_entry, CALL_TASK_LOAD, EINVAL, PM, 6,
	  "runs past the address space" },
	{ "PRESENT|PARENT", build_present_parent, CALL_TASK_LOAD, EINVAL, PM, 6,
	  "both PARENT and PRESENT" },
	{ "in_parent with PRESENT", build_in_parent_present, CALL_TASK_LOAD, EINVAL, PM, 6,
	  "both PARENT and PRESENT" },
	{ "unknown flag bits", build_unknown_flags, CALL_TASK_LOAD, EINVAL, PM, 6,
	  "unknown flags 0x14" },
	{ "POISON without PRESENT", build_poison_without_present, CALL_TASK_LOAD, EINVAL, PM, 6,
	  "flags 0xa: POISON without PRESENT" },
	{ "flags 0", build_flags_zero, CALL_TASK_LOAD, EINVAL, PM, 6,
	  "say nothing about the data" },
	{ "parent link loop", build_parent_loop, CALL_TASK_LOAD, ELOOP, "parent/" PM, 0,
	  "loops back to a directory already in the chain" },
	{ "parent lacks the page", build_parent_no_page, CALL_TASK_LOAD, EINVAL, PM, 6,
	  "page 0x44000 is in the parent, but parent/pagemap-100.img has no such page" },
	{ "parent has no data for the page", build_parent_no_data, CALL_TASK_LOAD, EINVAL, PM, 6,
	  "has no data for it" },
	{ "parent link missing", build_parent_link_missing, CALL_TASK_LOAD, EINVAL, PM, 0,
	  "has in-parent pages, but parent:" },
	{ "parent pages file short", build_parent_pages_short, CALL_TASK_LOAD, EINVAL,
	  "parent/pages-1.img", 0, "0 bytes, but parent/pagemap-100.img has 1 present pages" },
	{ "duplicate pid in pstree", build_pstree_dup, CALL_LIST_TASKS, EINVAL, "pstree.img", 3,
	  "pid 100 listed twice" },
	{ "pid 0 in pstree", build_pstree_pid0, CALL_LIST_TASKS, EINVAL, "pstree.img", 2, "pid 0" },
	{ "pstree without tasks", build_pstree_no_tasks, CALL_LIST_TASKS, EINVAL, "pstree.img", 0,
	  "no tasks" },
	{ "overlapping VMAs", build_vma_overlap, CALL_TASK_LOAD, EINVAL, MM, 1,
	  "vma 1 0x12000-0x20000 overlaps or precedes vma 0" },
	{ "unaligned VMA", build_vma_unaligned, CALL_TASK_LOAD, EINVAL, MM, 1,
	  "vma 1 0x14000-0x20800 is empty or not page aligned" },
	{ "empty VMA", build_vma_empty, CALL_TASK_LOAD, EINVAL, MM, 1,
	  "vma 2 0x30000-0x30000 is empty" },
	{ "two mm records", build_mm_two_records, CALL_TASK_LOAD, EINVAL, MM, 2,
	  "unexpected record after the first" },
	{ "mm missing", build_mm_missing, CALL_TASK_LOAD, ENOENT, MM, 0,
	  "missing, but pagemap-100.img exists" },
	{ "pagemap missing", build_pm_missing, CALL_TASK_LOAD, ENOENT, PM, 0,
	  "open: No such file" },
	{ "two inventory records", build_inventory_two, CALL_READ_INVENTORY, EINVAL,
	  "inventory.img", 2, "unexpected record after the first" },
	{ "inventory without a record", build_inventory_empty, CALL_READ_INVENTORY, EINVAL,
	  "inventory.img", 1, "the file has no inventory_entry record" },
	{ "inventory with a common magic", build_inventory_magic, CALL_READ_INVENTORY, EINVAL,
	  "inventory.img", 0, "wrong magic 0x54564319" },
};

#define NR_CASES (sizeof(cases) / sizeof(cases[0]))

/* Run the entry point of C on CUR; return its result with the message in ERR. */
static int run_case(const struct mal_case *c, int cur, struct img_err *err)
{
	static ProtobufCMessage not_reset;
	static uint32_t not_reset_pid;
	struct pages_cache cache = { 0 };
	ProtobufCMessage *m = &not_reset;
	uint32_t *pids = &not_reset_pid;
	struct img_task t;
	bool from_pstree;
	size_t n = 1;
	int ret = 0;

	memset(&t, 0xa5, sizeof(t));	/* a failed load must clear it */
	switch (c->call) {
	case CALL_TASK_LOAD:
		ret = img_task_load(&t, cur, FIX_PID, &cache, err);
		if (ret == 0) {
			img_task_free(&t, &cache);
			break;
		}
		cr_assert_null(t.mm, "%s: mm left behind", c->name);
		cr_assert_null(t.pm, "%s: pagemap left behind", c->name);
		break;
	case CALL_LIST_TASKS:
		ret = img_list_tasks(cur, &pids, &n, &from_pstree, err);
		if (ret == 0) {
			free(pids);
			break;
		}
		cr_assert_null(pids, "%s: pids left behind", c->name);
		cr_assert_eq(n, 0);
		break;
	case CALL_READ_INVENTORY:
		ret = img_read_one(cur, "inventory.img", IMG_INVENTORY_MAGIC,
				   &inventory_entry__descriptor, &m, err);
		if (ret == 0) {
			protobuf_c_message_free_unpacked(m, NULL);
			break;
		}
		cr_assert_null(m, "%s: message left behind", c->name);
		break;
	}
	cr_assert_eq(cache.nr_files, 0, "%s: %u pages files left mapped", c->name, cache.nr_files);
	cr_assert_eq(cache.mapped_bytes, 0);
	return ret;
}

ParameterizedTestParameters(image_malformed, is_rejected_with_file_record_and_cause)
{
	static unsigned idx[NR_CASES];

	for (unsigned i = 0; i < NR_CASES; i++)
		idx[i] = i;
	return cr_make_param_array(unsigned, idx, NR_CASES, NULL);
}

ParameterizedTest(unsigned *i, image_malformed, is_rejected_with_file_record_and_cause)
{
	const struct mal_case *c = &cases[*i];
	struct img_err err;
	char prefix[128];
	size_t plen;
	int cur = fix_mkdir(tmp.fd, "cur");
	int ret;

	memset(err.msg, 0, sizeof(err.msg));
	fix_write_std_task(cur);
	c->build(tmp.fd, cur);
	ret = run_case(c, cur, &err);
	close(cur);

	cr_log_info("case %u, %s: %s", *i, c->name, err.msg);
	cr_assert_eq(ret, -c->code, "%s: returned %d, want %d (%s)", c->name, ret, -c->code,
		     err.msg);
	if (c->rec)
		plen = snprintf(prefix, sizeof(prefix), "%s: record %u: ", c->file, c->rec);
	else
		plen = snprintf(prefix, sizeof(prefix), "%s: ", c->file);
	cr_assert(strncmp(err.msg, prefix, plen) == 0, "%s: \"%s\" does not start with \"%s\"",
		  c->name, err.msg, prefix);
	if (!c->rec)
		cr_assert(strncmp(err.msg + plen, "record ", 7) != 0,
			  "%s: \"%s\" blames a record", c->name, err.msg);
	cr_assert_not_null(strstr(err.msg, c->phrase), "%s: \"%s\" does not say \"%s\"", c->name,
			   err.msg, c->phrase);
}

/* The unbroken standard task loads: the cases above fail for their own reason. */
Test(image_malformed, standard_task_loads)
{
	struct pages_cache cache = { 0 };
	struct img_err err = { "" };
	struct img_task t;
	uint32_t *pids;
	size_t n;
	bool from_pstree;
	InventoryEntry *inv;
	int cur = fix_mkdir(tmp.fd, "cur");

	fix_write_std_task(cur);
	cr_assert_eq(img_list_tasks(cur, &pids, &n, &from_pstree, &err), 0, "%s", err.msg);
	cr_assert(from_pstree);
	cr_assert_eq(n, 1);
	cr_assert_eq(pids[0], FIX_PID);
	free(pids);
	cr_assert_eq(img_read_one(cur, "inventory.img", IMG_INVENTORY_MAGIC,
				  &inventory_entry__descriptor, (ProtobufCMessage **)&inv, &err),
		     0, "%s", err.msg);
	inventory_entry__free_unpacked(inv, NULL);
	cr_assert_eq(img_task_load(&t, cur, FIX_PID, &cache, &err), 0, "%s", err.msg);
	cr_assert_eq(t.mm->n_vmas, fix_std_nvmas);
	cr_assert_eq(t.pm->n, fix_std_npes);
	cr_assert_eq(t.pm->present_pages, 9);
	cr_assert_eq(t.pm->lazy_pages, 6);
	cr_assert_eq(t.pm->parent_pages, 0);
	cr_assert_eq(cache.nr_files, 1);
	img_task_free(&t, &cache);
	cr_assert_eq(cache.nr_files, 0);

	/* With a valid parent, an in-parent page of the standard task loads too. */
	{
		static const struct fix_pe pe[] = { { 0x44000, 1, PE_PRESENT, 0 } };
		int prev = cur_with_parent_entry(tmp.fd, cur);

		fix_write_memory(prev, 2, pe, 1);
		close(prev);
		cr_assert_eq(img_task_load(&t, cur, FIX_PID, &cache, &err), 0, "%s", err.msg);
		cr_assert_eq(t.pm->parent_pages, 1);
		cr_assert_eq(cache.nr_files, 2);
		img_task_free(&t, &cache);
	}
	close(cur);
}

/* A chain of parent links longer than PAGEMAP_MAX_DEPTH is refused, not followed. */
Test(image_malformed, parent_chain_depth_is_capped)
{
	static const struct fix_pe pe[] = { { 0x44000, 1, PE_PARENT, 0 } };
	struct img_err err = { "" };
	int cur = fix_mkdir(tmp.fd, "d0");
	int ret;

	close(cur_with_parent_entry(tmp.fd, cur));	/* d0/parent -> ../prev, unused */
	fix_unlink(cur, "parent");
	fix_symlink(cur, "parent", "../d1");
	for (int i = 1; i <= PAGEMAP_MAX_DEPTH; i++) {
		char name[16], target[16];
		int d;

		snprintf(name, sizeof(name), "d%d", i);
		snprintf(target, sizeof(target), "../d%d", i + 1);
		d = fix_mkdir(tmp.fd, name);
		fix_write_pagemap(d, FIX_PID, FIX_PAGES_ID, pe, 1);
		fix_symlink(d, "parent", target);
		close(d);
	}
	ret = run_case(&(struct mal_case){ .name = "depth", .call = CALL_TASK_LOAD }, cur, &err);
	close(cur);
	cr_log_info("%s", err.msg);
	cr_assert_eq(ret, -ELOOP, "%d: %s", ret, err.msg);
	cr_assert_not_null(strstr(err.msg, "parent chain deeper than 64"), "%s", err.msg);
	cr_assert_not_null(strstr(err.msg, "/pagemap-100.img: "), "%s", err.msg);
}

/*
 * Without mm-PID.img, only a missing pagemap-PID.img makes a zombie: a
 * pagemap whose `parent` link is missing is an error, not "no memory".
 */
Test(image_malformed, missing_mm_with_broken_parent_chain_fails)
{
	static const struct fix_pe pe[] = { { 0x44000, 1, PE_PARENT, 0 } };
	struct pages_cache cache = { 0 };
	struct img_err err = { "" };
	struct img_task t;
	int ret;

	fix_write_pagemap(tmp.fd, FIX_PID, FIX_PAGES_ID, pe, 1);	/* no mm, no parent */
	ret = img_task_load(&t, tmp.fd, FIX_PID, &cache, &err);
	if (ret == 0)
		img_task_free(&t, &cache);
	cr_assert_lt(ret, 0, "loaded as a zombie; the message was \"%s\"", err.msg);
	cr_assert_not_null(strstr(err.msg, "pagemap-100.img"), "%s", err.msg);
}
