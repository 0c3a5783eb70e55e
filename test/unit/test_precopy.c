/*
 * Pre-copy pieces alone: the kernel rules the tracker rests on, checked on
 * an area of this process (track.c), and the merge of a round's data
 * entries with the pages left to the parent (precopy.c).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <linux/userfaultfd.h>
#include <unistd.h>

#include "pagemap.h"
#include "precopy.h"
#include "track.h"

#define PG 4096ull

/* This process's own tracker on a fresh area of N pages, pages 0..7 written. */
struct self {
	struct track t;
	uint8_t *a;
	size_t n;
	int pm;
	struct track_region *r;
	size_t nr, cap;
};

static void self_init(struct self *s, size_t n)
{
	struct uffdio_api api = { .api = UFFD_API, .features = TRACK_FEATURES };

	memset(s, 0, sizeof(*s));
	s->t.tfd = -1;
	s->t.ufd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	cr_assert_geq(s->t.ufd, 0);
	if (ioctl(s->t.ufd, UFFDIO_API, &api) < 0)
		cr_skip_test("no UFFD_FEATURE_WP_ASYNC here (Linux 6.7+)");
	s->n = n;
	s->a = mmap(NULL, n * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(s->a, MAP_FAILED);
	for (size_t i = 0; i < 8; i++)
		s->a[i * PG] = (uint8_t)(i + 1);
	cr_assert_eq(track_register(&s->t, (uintptr_t)s->a, (uintptr_t)s->a + n * PG), 0);
	s->pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	cr_assert_geq(s->pm, 0);
}

/* Scan (and reset) the area; the categories of page I in CAT[I] (0: not reported). */
static int self_scan(struct self *s, bool reset, uint64_t *cat)
{
	char why[256];
	int ret;

	s->nr = 0;
	ret = track_scan(s->pm, (uintptr_t)s->a, (uintptr_t)s->a + s->n * PG, reset, &s->r,
			 &s->nr, &s->cap, NULL, why, sizeof(why));
	memset(cat, 0, s->n * sizeof(*cat));
	for (size_t k = 0; ret == 0 && k < s->nr; k++)
		for (uint64_t x = s->r[k].start; x < s->r[k].end; x += PG)
			cat[(x - (uintptr_t)s->a) / PG] = s->r[k].cat | (1ull << 63);
	return ret;
}

Test(track, written_set_read_reset_and_dropped_pages)
{
	struct self s;
	uint64_t cat[16];

	self_init(&s, 16);
	/* Round 1: every page with data is written (never protected yet); holes are not reported. */
	cr_assert_eq(self_scan(&s, true, cat), 0);
	for (size_t i = 0; i < 16; i++)
		cr_assert_eq(!!(cat[i] & PAGE_IS_WRITTEN), i < 8, "page %zu: 0x%lx", i,
			     (unsigned long)cat[i]);
	/* Reset: nothing written now, the pages still there. */
	cr_assert_eq(self_scan(&s, true, cat), 0);
	for (size_t i = 0; i < 8; i++) {
		cr_assert(cat[i] & PAGE_IS_PRESENT, "page %zu gone", i);
		cr_assert_not(cat[i] & PAGE_IS_WRITTEN, "page %zu written", i);
	}
	/* A write, a drop, a read of a hole (the zero page), a write into a hole. */
	s.a[1 * PG] = 42;
	cr_assert_eq(madvise(s.a + 2 * PG, PG, MADV_DONTNEED), 0);
	cr_assert_eq(((volatile uint8_t *)s.a)[9 * PG], 0);
	s.a[10 * PG] = 7;
	cr_assert_eq(self_scan(&s, true, cat), 0);
	cr_assert(cat[1] & PAGE_IS_WRITTEN);
	cr_assert_eq(cat[2], 0, "a dropped page is none: not reported (0x%lx)", (unsigned long)cat[2]);
	cr_assert(cat[9] & PAGE_IS_PFNZERO, "0x%lx", (unsigned long)cat[9]);
	cr_assert(cat[10] & PAGE_IS_WRITTEN);
	cr_assert(cat[3] & PAGE_IS_PRESENT);
	cr_assert_not(cat[3] & PAGE_IS_WRITTEN);
	/* No reset: the last round reads the set and leaves it. */
	s.a[4 * PG] = 9;
	cr_assert_eq(self_scan(&s, false, cat), 0);
	cr_assert(cat[4] & PAGE_IS_WRITTEN);
	cr_assert_eq(self_scan(&s, false, cat), 0);
	cr_assert(cat[4] & PAGE_IS_WRITTEN, "read without reset, yet reset");
	/* Marked written by hand (a page a round could not read). */
	cr_assert_eq(self_scan(&s, true, cat), 0);
	cr_assert_eq(track_mark_written(&s.t, (uintptr_t)s.a + 5 * PG, (uintptr_t)s.a + 6 * PG), 0);
	cr_assert_eq(self_scan(&s, true, cat), 0);
	cr_assert(cat[5] & PAGE_IS_WRITTEN);
	cr_assert_not(cat[6] & PAGE_IS_WRITTEN);
}

Test(track, moved_area_is_untracked_and_unprotected)
{
	struct self s;
	uint64_t cat[16];
	void *to, *p;

	self_init(&s, 16);
	cr_assert_eq(self_scan(&s, true, cat), 0);
	to = mmap(NULL, 16 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	p = mremap(s.a, 16 * PG, 16 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	cr_assert_eq(p, to);
	s.a = p;
	/* No remap event: the kernel drops the registration, so the area reads as untracked. */
	cr_assert_eq(self_scan(&s, true, cat), -EPERM);
	cr_assert_eq(track_register(&s.t, (uintptr_t)s.a, (uintptr_t)s.a + 16 * PG), 0);
	/* And its protection: every page with data reads as written again. */
	cr_assert_eq(self_scan(&s, true, cat), 0);
	for (size_t i = 0; i < 8; i++)
		cr_assert(cat[i] & PAGE_IS_WRITTEN, "page %zu: 0x%lx", i, (unsigned long)cat[i]);
	cr_assert_eq(s.a[3 * PG], 4, "the content moved with it");
}

Test(precopy, merge_parent_entries_split_by_eager_pages)
{
	static const struct dump_area areas[] = {
		{ DUMP_ANON, PE_LAZY | PE_PRESENT, false, 0 },
		{ DUMP_ANON, PE_PRESENT, false, 0 },
	};
	struct dump_range parent[] = {
		{ 0x3000, 0x9000, 0 },
		{ 0x30000, 0x31000, 0 },
		{ 0x31000, 0x33000, 0 },
		{ 0x40000, 0x42000, 1 },
	};
	const struct dump_range eager[] = { { 0x5000, 0x6000, 0 } };
	const struct dump_pe want[] = {
		{ 0x1000, 2, PE_LAZY | PE_PRESENT, 0 },
		{ 0x3000, 2, PE_PARENT | PE_LAZY, 0 },
		{ 0x5000, 1, PE_PARENT, 0 },	/* stays resident: never lazy */
		{ 0x6000, 3, PE_PARENT | PE_LAZY, 0 },
		{ 0x9000, 1, PE_LAZY | PE_PRESENT, 0 },
		{ 0x30000, 3, PE_PARENT | PE_LAZY, 0 },	/* two ranges, one entry */
		{ 0x40000, 2, PE_PARENT, 1 },	/* its area is not lazy */
	};
	struct precopy pc;
	struct dump_pe *pe = malloc(2 * sizeof(*pe));
	struct dump_range *spans = malloc(2 * sizeof(*spans));
	size_t npe = 2, nspans = 2;

	memset(&pc, 0, sizeof(pc));
	pc.parent = parent;
	pc.nparent = 4;
	pe[0] = (struct dump_pe){ 0x1000, 2, PE_LAZY | PE_PRESENT, 0 };
	pe[1] = (struct dump_pe){ 0x9000, 1, PE_LAZY | PE_PRESENT, 0 };
	spans[0] = (struct dump_range){ 0x1000, 0x3000, 0 };
	spans[1] = (struct dump_range){ 0x9000, 0xa000, 0 };
	cr_assert_eq(precopy_merge(&pc, areas, eager, 1, &pe, &npe, &spans, &nspans), 0);
	cr_assert_eq(npe, sizeof(want) / sizeof(want[0]), "%zu entries", npe);
	for (size_t i = 0; i < npe; i++)
		cr_assert(pe[i].vaddr == want[i].vaddr && pe[i].nr == want[i].nr &&
			  pe[i].flags == want[i].flags && pe[i].area == want[i].area,
			  "entry %zu: 0x%lx %lu 0x%x %u", i, (unsigned long)pe[i].vaddr,
			  (unsigned long)pe[i].nr, pe[i].flags, pe[i].area);
	/* Spans: one run over the data and parent pages of area 0, then the others. */
	cr_assert_eq(nspans, 3, "%zu spans", nspans);
	cr_assert(spans[0].start == 0x1000 && spans[0].end == 0xa000);
	cr_assert(spans[1].start == 0x30000 && spans[1].end == 0x33000);
	cr_assert(spans[2].start == 0x40000 && spans[2].end == 0x42000 && spans[2].area == 1);
	free(pe);
	free(spans);
}
