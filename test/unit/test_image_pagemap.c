/*
 * pagemap_find and pagemap_resolve on synthetic dumps written with the
 * library's writer. Every synthetic page holds fix_word(generation, address),
 * so a resolved offset is checked by the bytes it points at, not only by
 * its value.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "image.h"
#include "imgfix.h"
#include "pagemap.h"
#include "pagemap.pb-c.h"

#define PG	PAGE_SIZE_4K
#define BIG	(1ull << 40)

static struct fix_tmp tmp;

static void tmp_setup(void)
{
	fix_tmp_make(&tmp);
}

static void tmp_teardown(void)
{
	fix_tmp_remove(&tmp);
}

TestSuite(image_pagemap, .init = tmp_setup, .fini = tmp_teardown);

static struct pagemap *load(int dirfd, struct pages_cache *c)
{
	struct img_err err = { "" };
	struct pagemap *pm = NULL;

	cr_assert_eq(pagemap_load(&pm, dirfd, FIX_PID, c, &err), 0, "%s", err.msg);
	cr_assert_not_null(pm);
	return pm;
}

/* Check that RUN is image data at OFF of PF whose first and last words belong to GEN at ADDR. */
static void assert_data(const struct pm_run *run, const struct pages_file *pf, uint64_t off,
			uint32_t gen, uint64_t addr)
{
	uint64_t first, last;

	cr_assert_eq(run->src, PM_DATA, "0x%" PRIx64 ": src %d", addr, run->src);
	cr_assert_eq(run->pf, pf, "0x%" PRIx64 ": wrong pages file", addr);
	cr_assert_eq(run->off, off, "0x%" PRIx64 ": offset 0x%" PRIx64 ", want 0x%" PRIx64, addr,
		     run->off, off);
	cr_assert_leq(run->off + run->len, pf->size);
	memcpy(&first, pf->base + run->off, 8);
	memcpy(&last, pf->base + run->off + run->len - 8, 8);
	cr_assert_eq(first, fix_word(gen, addr), "0x%" PRIx64 ": bytes of another page", addr);
	cr_assert_eq(last, fix_word(gen, addr + run->len - 8), "0x%" PRIx64 ": run end", addr);
}

Test(image_pagemap, hole_runs_to_the_next_entry)
{
	static const struct fix_pe pe[] = {
		{ 0x10000, 2, PE_PRESENT, 0 },
		{ 0x20000, 1, PE_PRESENT, 0 },
		{ 0x30000, 1, PE_LAZY, 0 },
	};
	struct pages_cache c = { 0 };
	struct pagemap *pm;
	struct pm_run run;

	fix_write_memory(tmp.fd, 1, pe, 3);
	pm = load(tmp.fd, &c);

	pagemap_resolve(pm, 0x1000, BIG, &run);		/* before every entry */
	cr_assert_eq(run.src, PM_HOLE);
	cr_assert_eq(run.len, 0xf000);
	cr_assert_eq(run.flags, 0);
	cr_assert_null(run.pf);
	pagemap_resolve(pm, 0x12000, BIG, &run);	/* right after an entry */
	cr_assert_eq(run.src, PM_HOLE);
	cr_assert_eq(run.len, 0xe000);
	pagemap_resolve(pm, 0x12000, 0x3000, &run);	/* the limit is shorter */
	cr_assert_eq(run.src, PM_HOLE);
	cr_assert_eq(run.len, 0x3000);
	pagemap_resolve(pm, 0x1f000, BIG, &run);	/* one page before the next */
	cr_assert_eq(run.len, PG);
	pagemap_resolve(pm, 0x21000, BIG, &run);	/* up to a lazy entry */
	cr_assert_eq(run.src, PM_HOLE);
	cr_assert_eq(run.len, 0xf000);
	pagemap_resolve(pm, 0x31000, 0x5000, &run);	/* after the last entry */
	cr_assert_eq(run.src, PM_HOLE);
	cr_assert_eq(run.len, 0x5000);
	cr_assert_null(pagemap_find(pm, 0x12000));
	cr_assert_null(pagemap_find(pm, 0x31000));
	pagemap_free(pm, &c);
	cr_assert_eq(c.nr_files, 0);
}

Test(image_pagemap, empty_pagemap_is_all_hole)
{
	struct pages_cache c = { 0 };
	struct pagemap *pm;
	struct pm_run run;

	fix_write_pagemap(tmp.fd, FIX_PID, FIX_PAGES_ID, NULL, 0);
	pm = load(tmp.fd, &c);
	cr_assert_eq(pm->n, 0);
	cr_assert_null(pm->pages, "no present page, so no pages file is needed");
	pagemap_resolve(pm, 0x10000, 0x7000, &run);
	cr_assert_eq(run.src, PM_HOLE);
	cr_assert_eq(run.len, 0x7000);
	cr_assert_null(pagemap_find(pm, 0x10000));
	pagemap_free(pm, &c);
}

Test(image_pagemap, present_pages_lie_back_to_back_in_entry_order)
{
	static const struct fix_pe pe[] = {
		{ 0x10000, 3, PE_PRESENT, 0 },			/* pages 0-2 */
		{ 0x20000, 2, PE_LAZY, 0 },			/* no data */
		{ 0x30000, 2, PE_LAZY | PE_PRESENT, 0 },	/* pages 3-4 */
		{ 0x32000, 1, PE_PRESENT, 0 },			/* page 5, adjacent entry */
		{ 0x50000, 1, PE_PRESENT, 0 },			/* page 6 */
	};
	static const uint64_t off[] = { 0, 0, 3 * PG, 5 * PG, 6 * PG };
	struct pages_cache c = { 0 };
	struct pagemap *pm;
	struct pm_run run;

	fix_write_memory(tmp.fd, 1, pe, 5);
	pm = load(tmp.fd, &c);
	cr_assert_eq(pm->n, 5);
	cr_assert_eq(pm->present_pages, 7);
	cr_assert_eq(pm->lazy_pages, 4);
	cr_assert_eq(pm->parent_pages, 0);
	cr_assert_eq(pm->pages_id, FIX_PAGES_ID);
	cr_assert_not_null(pm->pages);
	cr_assert_eq(pm->pages->size, 7 * PG);

	for (size_t i = 0; i < 5; i++) {
		if (!(pe[i].flags & PE_PRESENT))
			continue;
		for (uint64_t p = 0; p < pe[i].nr; p++) {
			uint64_t a = pe[i].vaddr + p * PG;

			pagemap_resolve(pm, a, BIG, &run);
			cr_assert_eq(run.flags, pe[i].flags);
			cr_assert_eq(run.len, (pe[i].nr - p) * PG, "runs to the end of its entry");
			assert_data(&run, pm->pages, off[i] + p * PG, 1, a);
			cr_assert_eq(pagemap_find(pm, a), &pm->e[i]);
			cr_assert_eq(pm->e[i].off, off[i]);
		}
	}
	pagemap_resolve(pm, 0x10000, PG, &run);		/* the limit cuts the run */
	cr_assert_eq(run.len, PG);
	assert_data(&run, pm->pages, 0, 1, 0x10000);
	pagemap_free(pm, &c);
}

Test(image_pagemap, lazy_only_entry_has_no_data)
{
	static const struct fix_pe pe[] = { { 0x10000, 4, PE_LAZY, 0 } };
	struct pages_cache c = { 0 };
	struct pagemap *pm;
	struct pm_run run;

	fix_write_pagemap(tmp.fd, FIX_PID, FIX_PAGES_ID, pe, 1);	/* and no pages file */
	pm = load(tmp.fd, &c);
	cr_assert_null(pm->pages);
	cr_assert_eq(pm->lazy_pages, 4);
	cr_assert_eq(pm->present_pages, 0);
	pagemap_resolve(pm, 0x11000, BIG, &run);
	cr_assert_eq(run.src, PM_NODATA);
	cr_assert_eq(run.flags, PE_LAZY);
	cr_assert_eq(run.len, 0x3000);
	cr_assert_null(run.pf);
	pagemap_resolve(pm, 0x11000, 0x1000, &run);
	cr_assert_eq(run.src, PM_NODATA);
	cr_assert_eq(run.len, 0x1000);
	pagemap_free(pm, &c);
}

Test(image_pagemap, find_respects_entry_bounds)
{
	static const struct fix_pe pe[] = {
		{ 0x10000, 2, PE_PRESENT, 0 },
		{ 0x12000, 1, PE_LAZY, 0 },	/* adjacent */
		{ 0x20000, 1, PE_PRESENT, 0 },
	};
	struct pages_cache c = { 0 };
	struct pagemap *pm;

	fix_write_memory(tmp.fd, 1, pe, 3);
	pm = load(tmp.fd, &c);
	cr_assert_null(pagemap_find(pm, 0));
	cr_assert_null(pagemap_find(pm, 0xffff));
	cr_assert_eq(pagemap_find(pm, 0x10000), &pm->e[0]);
	cr_assert_eq(pagemap_find(pm, 0x11fff), &pm->e[0]);
	cr_assert_eq(pagemap_find(pm, 0x12000), &pm->e[1]);
	cr_assert_eq(pagemap_find(pm, 0x12fff), &pm->e[1]);
	cr_assert_null(pagemap_find(pm, 0x13000));
	cr_assert_eq(pagemap_find(pm, 0x20000), &pm->e[2]);
	cr_assert_null(pagemap_find(pm, 0x21000));
	cr_assert_null(pagemap_find(pm, UINT64_MAX));
	cr_assert_eq(pm->e[0].start, 0x10000);
	cr_assert_eq(pm->e[0].end, 0x12000);
	pagemap_free(pm, &c);
}

/* cur (generation 3) -> parent = ../prev (generation 2). */
Test(image_pagemap, parent_pages_resolve_through_the_parent_link)
{
	static const struct fix_pe prev_pe[] = {
		{ 0x10000, 4, PE_PRESENT, 0 },			/* pages 0-3 */
		{ 0x20000, 2, PE_PRESENT, 0 },			/* pages 4-5 */
		{ 0x30000, 2, PE_LAZY | PE_PRESENT, 0 },	/* pages 6-7 */
		{ 0x40000, 2, PE_PRESENT, 0 },			/* pages 8-9 */
		{ 0x42000, 2, PE_PRESENT, 0 },			/* pages 10-11 */
	};
	static const struct fix_pe cur_pe[] = {
		{ 0x10000, 2, PE_PARENT, 0 },
		{ 0x12000, 2, PE_PRESENT, 0 },			/* page 0 of cur */
		{ 0x20000, 2, PE_PARENT, 0 },
		{ 0x30000, 2, PE_LAZY | PE_PARENT, 0 },
		{ 0x40000, 4, PE_PARENT, 0 },			/* over two parent entries */
	};
	struct pages_cache c = { 0 };
	struct pagemap *pm;
	struct pm_run run;
	int cur = fix_mkdir(tmp.fd, "cur"), prev = fix_mkdir(tmp.fd, "prev");
	const struct pages_file *ppf;

	fix_write_memory(prev, 2, prev_pe, 5);
	fix_write_memory(cur, 3, cur_pe, 5);
	fix_symlink(cur, "parent", "../prev");
	pm = load(cur, &c);
	cr_assert_not_null(pm->parent);
	cr_assert_null(pm->parent->parent);
	cr_assert_str_eq(pm->name, "pagemap-100.img");
	cr_assert_str_eq(pm->parent->name, "parent/pagemap-100.img");
	cr_assert_eq(pm->parent_pages, 10);
	cr_assert_eq(pm->present_pages, 2);
	cr_assert_eq(pm->lazy_pages, 2);
	cr_assert_eq(c.nr_files, 2);
	ppf = pm->parent->pages;
	cr_assert_not_null(ppf);
	cr_assert_neq(ppf, pm->pages);

	pagemap_resolve(pm, 0x10000, BIG, &run);
	cr_assert_eq(run.flags, PE_PARENT);
	cr_assert_eq(run.len, 2 * PG, "cut at the end of the entry in cur");
	assert_data(&run, ppf, 0, 2, 0x10000);
	pagemap_resolve(pm, 0x11000, BIG, &run);
	assert_data(&run, ppf, PG, 2, 0x11000);
	pagemap_resolve(pm, 0x12000, BIG, &run);
	cr_assert_eq(run.flags, PE_PRESENT);
	assert_data(&run, pm->pages, 0, 3, 0x12000);
	pagemap_resolve(pm, 0x20000, BIG, &run);
	assert_data(&run, ppf, 4 * PG, 2, 0x20000);
	pagemap_resolve(pm, 0x31000, BIG, &run);
	cr_assert_eq(run.flags, PE_LAZY | PE_PARENT);
	cr_assert_eq(run.len, PG);
	assert_data(&run, ppf, 7 * PG, 2, 0x31000);
	pagemap_resolve(pm, 0x40000, BIG, &run);
	cr_assert_eq(run.len, 2 * PG, "cut at the end of the entry in the parent");
	assert_data(&run, ppf, 8 * PG, 2, 0x40000);
	pagemap_resolve(pm, 0x42000, BIG, &run);
	cr_assert_eq(run.len, 2 * PG);
	assert_data(&run, ppf, 10 * PG, 2, 0x42000);
	pagemap_resolve(pm, 0x41000, PG, &run);
	cr_assert_eq(run.len, PG, "the limit holds through the parent");
	assert_data(&run, ppf, 9 * PG, 2, 0x41000);

	pagemap_free(pm, &c);
	cr_assert_eq(c.nr_files, 0);
	close(cur);
	close(prev);
}

/* cur (3) -> ../prev (2) -> ../grand (1), all with the same pages id. */
Test(image_pagemap, parent_pages_resolve_two_levels_deep)
{
	static const struct fix_pe grand_pe[] = {
		{ 0x10000, 2, PE_PRESENT, 0 },
	};
	static const struct fix_pe prev_pe[] = {
		{ 0x10000, 1, PE_PARENT, 0 },
		{ 0x11000, 1, PE_PRESENT, 0 },		/* page 0 */
		{ 0x20000, 1, PE_PRESENT, 0 },		/* page 1 */
	};
	static const struct fix_pe cur_pe[] = {
		{ 0x10000, 2, PE_PARENT, 0 },
		{ 0x20000, 1, PE_PARENT, 0 },
	};
	struct pages_cache c = { 0 };
	struct pagemap *pm;
	struct pm_run run;
	int cur = fix_mkdir(tmp.fd, "cur"), prev = fix_mkdir(tmp.fd, "prev");
	int grand = fix_mkdir(tmp.fd, "grand");

	fix_write_memory(grand, 1, grand_pe, 1);
	fix_write_memory(prev, 2, prev_pe, 3);
	fix_write_pagemap(cur, FIX_PID, FIX_PAGES_ID, cur_pe, 2);
	fix_symlink(cur, "parent", "../prev");
	fix_symlink(prev, "parent", "../grand");
	pm = load(cur, &c);
	cr_assert_null(pm->pages, "cur has no present page");
	cr_assert_not_null(pm->parent);
	cr_assert_not_null(pm->parent->parent);
	cr_assert_null(pm->parent->parent->parent);
	cr_assert_str_eq(pm->parent->parent->name, "parent/parent/pagemap-100.img");
	cr_assert_eq(c.nr_files, 2);

	pagemap_resolve(pm, 0x10000, BIG, &run);
	cr_assert_eq(run.flags, PE_PARENT);
	cr_assert_eq(run.len, PG, "cut at the end of the entry in prev");
	assert_data(&run, pm->parent->parent->pages, 0, 1, 0x10000);
	pagemap_resolve(pm, 0x11000, BIG, &run);
	assert_data(&run, pm->parent->pages, 0, 2, 0x11000);
	pagemap_resolve(pm, 0x20000, BIG, &run);
	assert_data(&run, pm->parent->pages, PG, 2, 0x20000);
	pagemap_free(pm, &c);
	cr_assert_eq(c.nr_files, 0);
	close(cur);
	close(prev);
	close(grand);
}

/* Pre-4.0 encodings: compat_nr_pages only, no flags (PRESENT), in_parent (PARENT). */
Test(image_pagemap, compat_encodings_follow_criu_rules)
{
	static const struct fix_pe prev_pe[] = {
		{ 0x40000, 1, PE_PRESENT, 0 },
		{ 0x50000, 1, PE_PRESENT, 0 },
	};
	static const struct fix_pe cur_pe[] = {
		{ 0x10000, 3, PE_PRESENT, FIX_COMPAT },			/* pages 0-2 */
		{ 0x20000, 2, 0, FIX_NOFLAGS },				/* pages 3-4 */
		{ 0x30000, 1, 0, FIX_NOFLAGS | FIX_COMPAT },		/* page 5 */
		{ 0x40000, 1, 0, FIX_INPARENT | FIX_NOFLAGS | FIX_COMPAT },
		{ 0x50000, 1, PE_LAZY, FIX_INPARENT },
	};
	static const uint32_t want_flags[] = {
		PE_PRESENT, PE_PRESENT, PE_PRESENT, PE_PARENT, PE_LAZY | PE_PARENT,
	};
	struct pages_cache c = { 0 };
	struct fix_recs rs;
	struct pagemap *pm;
	struct pm_run run;
	int cur = fix_mkdir(tmp.fd, "cur"), prev = fix_mkdir(tmp.fd, "prev");

	fix_write_memory(prev, 2, prev_pe, 2);
	fix_write_memory(cur, 3, cur_pe, 5);
	fix_symlink(cur, "parent", "../prev");

	/* The records really are in the old forms. */
	cr_assert_eq(fix_parse_records(&rs, cur, "pagemap-100.img", IMG_PAGEMAP_MAGIC), 0);
	cr_assert_eq(rs.n, 6);
	for (size_t i = 0; i < 5; i++) {
		PagemapEntry *e = pagemap_entry__unpack(NULL, rs.r[i + 1].len, rs.r[i + 1].data);

		cr_assert_not_null(e);
		cr_assert_eq(e->has_nr_pages, !(cur_pe[i].enc & FIX_COMPAT));
		cr_assert_eq(e->compat_nr_pages, (cur_pe[i].enc & FIX_COMPAT) ? cur_pe[i].nr : 0);
		cr_assert_eq(e->has_flags, !(cur_pe[i].enc & FIX_NOFLAGS));
		cr_assert_eq(e->has_in_parent && e->in_parent, !!(cur_pe[i].enc & FIX_INPARENT));
		cr_assert_eq(fix_pe_flags(&cur_pe[i]), want_flags[i]);
		pagemap_entry__free_unpacked(e, NULL);
	}
	fix_recs_free(&rs);

	pm = load(cur, &c);
	cr_assert_eq(pm->n, 5);
	for (size_t i = 0; i < 5; i++) {
		cr_assert_eq(pm->e[i].start, cur_pe[i].vaddr);
		cr_assert_eq(pm->e[i].end, cur_pe[i].vaddr + cur_pe[i].nr * PG, "entry %zu length",
			     i);
		cr_assert_eq(pm->e[i].flags, want_flags[i], "entry %zu: flags 0x%x", i,
			     pm->e[i].flags);
	}
	cr_assert_eq(pm->present_pages, 6);
	cr_assert_eq(pm->parent_pages, 2);
	cr_assert_eq(pm->lazy_pages, 1);

	pagemap_resolve(pm, 0x12000, BIG, &run);
	cr_assert_eq(run.len, PG);
	assert_data(&run, pm->pages, 2 * PG, 3, 0x12000);
	pagemap_resolve(pm, 0x20000, BIG, &run);
	cr_assert_eq(run.flags, PE_PRESENT);
	assert_data(&run, pm->pages, 3 * PG, 3, 0x20000);
	pagemap_resolve(pm, 0x30000, BIG, &run);
	assert_data(&run, pm->pages, 5 * PG, 3, 0x30000);
	pagemap_resolve(pm, 0x40000, BIG, &run);
	cr_assert_eq(run.flags, PE_PARENT);
	assert_data(&run, pm->parent->pages, 0, 2, 0x40000);
	pagemap_resolve(pm, 0x50000, BIG, &run);
	cr_assert_eq(run.flags, PE_LAZY | PE_PARENT);
	assert_data(&run, pm->parent->pages, PG, 2, 0x50000);
	pagemap_free(pm, &c);
	close(cur);
	close(prev);
}

/*
 * PE_POISON pages (unreadable at dump time) resolve as PM_POISON, on their
 * own and through a parent link, and their stand-in pages count in the
 * pages file's offsets: the data after them is found where it is.
 */
Test(image_pagemap, poison_resolves_as_poison_and_keeps_offsets)
{
	static const struct fix_pe prev_pe[] = {
		{ 0x10000, 2, PE_PRESENT, 0 },				/* pages 0-1 */
		{ 0x12000, 1, PE_LAZY | PE_PRESENT | PE_POISON, 0 },	/* page 2 */
		{ 0x13000, 2, PE_LAZY | PE_PRESENT, 0 },		/* pages 3-4 */
	};
	static const struct fix_pe cur_pe[] = {
		{ 0x10000, 1, PE_PRESENT | PE_POISON, 0 },		/* page 0 */
		{ 0x11000, 1, PE_PRESENT, 0 },				/* page 1 */
		{ 0x12000, 3, PE_LAZY | PE_PARENT, 0 },
	};
	struct pages_cache c = { 0 };
	struct pagemap *pm;
	struct pm_run run;
	int cur = fix_mkdir(tmp.fd, "cur"), prev = fix_mkdir(tmp.fd, "prev");

	fix_write_memory(prev, 2, prev_pe, 3);
	fix_write_memory(cur, 3, cur_pe, 3);
	fix_symlink(cur, "parent", "../prev");
	pm = load(cur, &c);
	cr_assert_eq(pm->poison_pages, 1);
	cr_assert_eq(pm->parent->poison_pages, 1);
	cr_assert_eq(pm->present_pages, 2);

	pagemap_resolve(pm, 0x10000, BIG, &run);
	cr_assert_eq(run.src, PM_POISON);
	cr_assert_eq(run.flags, PE_PRESENT | PE_POISON);
	cr_assert_eq(run.len, PG, "a poison run ends with its entry");
	pagemap_resolve(pm, 0x11000, BIG, &run);
	assert_data(&run, pm->pages, PG, 3, 0x11000);
	pagemap_resolve(pm, 0x12000, BIG, &run);
	cr_assert_eq(run.src, PM_POISON, "poison in the parent: src %d", run.src);
	cr_assert_eq(run.flags, PE_LAZY | PE_PARENT);
	cr_assert_eq(run.len, PG);
	pagemap_resolve(pm, 0x13000, BIG, &run);
	assert_data(&run, pm->parent->pages, 3 * PG, 2, 0x13000);
	cr_assert_eq(run.len, 2 * PG);

	pagemap_free(pm, &c);
	close(cur);
	close(prev);
}

/*
 * A huge page resolves as one source only when all of it is: data back to
 * back in one pages file (over several entries too), or all hole, or all
 * poisoned, with one set of flags; anything mixed is -EINVAL.
 */
Test(image_pagemap, huge_blocks_resolve_whole_or_not_at_all)
{
	static const struct fix_pe pe[] = {
		{ 0x200000, 256, PE_LAZY | PE_PRESENT, 0 },	/* block 1: two entries, */
		{ 0x300000, 256, PE_LAZY | PE_PRESENT, 0 },	/* back to back */
		{ 0x600000, 256, PE_LAZY | PE_PRESENT, 0 },	/* block 3: half of it */
		{ 0x800000, 256, PE_LAZY | PE_PRESENT, 0 },	/* block 4: lazy half */
		{ 0x900000, 256, PE_PRESENT, 0 },		/* and eager half */
		{ 0xa00000, 512, PE_PRESENT | PE_POISON, 0 },	/* block 5: poisoned */
	};
	struct pages_cache c = { 0 };
	struct pagemap *pm;
	struct pm_run run;
	const uint64_t H = 0x200000;

	fix_write_memory(tmp.fd, 1, pe, 6);
	pm = load(tmp.fd, &c);
	cr_assert_eq(pagemap_resolve_block(pm, H, H, &run), 0);
	cr_assert_eq(run.len, H);
	assert_data(&run, pm->pages, 0, 1, H);
	cr_assert_eq(pagemap_resolve_block(pm, 2 * H, H, &run), 0, "a whole hole");
	cr_assert_eq(run.src, PM_HOLE);
	cr_assert_eq(run.len, H);
	cr_assert_eq(pagemap_resolve_block(pm, 3 * H, H, &run), -EINVAL, "half data, half hole");
	cr_assert_eq(pagemap_resolve_block(pm, 4 * H, H, &run), -EINVAL, "half lazy");
	cr_assert_eq(pagemap_resolve_block(pm, 5 * H, H, &run), 0);
	cr_assert_eq(run.src, PM_POISON);
	cr_assert_eq(run.len, H);
	pagemap_free(pm, &c);
}
