/*
 * Page contents of the real CRIU 4.2 images, checked word by word against
 * the pattern lazyapp.c wrote before the dump (see test/data/criu-4.2).
 *
 * Regions are found without trusting any address from a run: a region of
 * LEN bytes is the one page-aligned address in an anonymous private VMA,
 * with LEN bytes of that VMA after it, whose first word (read through
 * pagemap_resolve) is the region's first pattern word. Exactly one address
 * must qualify. For `single` the 8 MiB region is also found a second way,
 * as the one anonymous private VMA of exactly 8 MiB, and both must agree.
 * The workloads ran as `lazyapp single 8 ...` and `lazyapp fork3 8 ...`.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "image.h"
#include "imgfix.h"
#include "imgtask.h"

#define MIB		(1ull << 20)
#define SINGLE_SEED	0x1234567ull
#define SINGLE_LEN	(8 * MIB)
/* fork3 with 8 MiB: each part is 8 MiB / 4 */
#define FORK3_PART	(8 * MIB / 4)
#define PARENT_SEED	0x1111ull
#define COMMON_SEED	0x5555ull
#define CHILD_COMMON_SEED	0x7000ull	/* + child index, on the child's quarter */
#define CHILD_OWN_SEED		0x9000ull	/* + child index */

/* What a region holds: SEED's pattern, but ALT's on words [ALT_FROM, ALT_TO). */
struct want {
	uint64_t seed;
	uint64_t alt;
	uint64_t alt_from;
	uint64_t alt_to;
};

static uint64_t want_word(const struct want *w, uint64_t i)
{
	if (i >= w->alt_from && i < w->alt_to)
		return fix_pat(w->alt, i);
	return fix_pat(w->seed, i);
}

/* Read the word at ADDR through the pagemap; false when ADDR has no data in the images. */
static bool read_word(const struct pagemap *pm, uint64_t addr, uint64_t *v)
{
	struct pm_run run;

	pagemap_resolve(pm, addr & ~(PAGE_SIZE_4K - 1), PAGE_SIZE_4K, &run);
	if (run.src != PM_DATA)
		return false;
	cr_assert_not_null(run.pf);
	cr_assert_leq(run.off + PAGE_SIZE_4K, run.pf->size);
	memcpy(v, run.pf->base + run.off + (addr & (PAGE_SIZE_4K - 1)), sizeof(*v));
	return true;
}

/* Count the addresses where a region like W of LEN bytes may start; the last one in *ADDR. */
static unsigned find_region(const struct img_task *t, const struct want *w, uint64_t len,
			    uint64_t *addr)
{
	uint64_t span = (len + PAGE_SIZE_4K - 1) & ~(PAGE_SIZE_4K - 1);
	unsigned found = 0;

	for (size_t i = 0; i < t->mm->n_vmas; i++) {
		const VmaEntry *v = t->mm->vmas[i];

		if (!(v->status & VMA_ANON_PRIVATE) || v->end - v->start < span)
			continue;
		for (uint64_t a = v->start; a + span <= v->end; a += PAGE_SIZE_4K) {
			uint64_t word;

			if (read_word(t->pm, a, &word) && word == want_word(w, 0)) {
				*addr = a;
				found++;
			}
		}
	}
	return found;
}

/*
 * Check every word of the region at ADDR against W: every page must be
 * image data, listed lazy (anonymous private memory is dumped PE_LAZY).
 */
static void check_region(const struct img_task *t, uint64_t addr, const struct want *w,
			 uint64_t len, const char *what)
{
	uint64_t nwords = len / 8, checked = 0, bad = 0;
	uint64_t end = (addr + len + PAGE_SIZE_4K - 1) & ~(PAGE_SIZE_4K - 1);

	for (uint64_t a = addr; a < end;) {
		struct pm_run run;

		pagemap_resolve(t->pm, a, end - a, &run);
		cr_assert_eq(run.src, PM_DATA, "pid %u %s: 0x%" PRIx64 " has no data (src %d)",
			     t->pid, what, a, run.src);
		cr_assert(run.flags & PE_LAZY, "pid %u %s: 0x%" PRIx64 " flags 0x%x, not lazy",
			  t->pid, what, a, run.flags);
		cr_assert(run.len > 0 && run.len % PAGE_SIZE_4K == 0);
		cr_assert_eq(run.pf, t->pm->pages);
		cr_assert_leq(run.off + run.len, run.pf->size);
		for (uint64_t o = 0; o < run.len; o += 8) {
			uint64_t i = (a + o - addr) / 8, v;

			if (i >= nwords)
				break;
			memcpy(&v, run.pf->base + run.off + o, sizeof(v));
			if (v != want_word(w, i))
				bad++;
			checked++;
		}
		a += run.len;
	}
	cr_assert_eq(checked, nwords, "pid %u %s: checked %" PRIu64 " of %" PRIu64 " words", t->pid,
		     what, checked, nwords);
	cr_assert_eq(bad, 0, "pid %u %s: %" PRIu64 " of %" PRIu64 " words differ from the pattern",
		     t->pid, what, bad, nwords);
}

/* Find the one region like W of LEN bytes in T and check all of it; return its address. */
static uint64_t find_and_check(const struct img_task *t, const struct want *w, uint64_t len,
			       const char *what)
{
	uint64_t addr = 0;
	unsigned found = find_region(t, w, len, &addr);

	cr_assert_eq(found, 1, "pid %u %s: %u candidate addresses", t->pid, what, found);
	check_region(t, addr, w, len, what);
	return addr;
}

/* Load all tasks of fixture SUB, in pstree order. */
static size_t load_fixture(const char *sub, int *dirfd, struct pages_cache *c,
			   struct img_task **tasks)
{
	struct img_err err = { "" };
	char path[512];
	uint32_t *pids;
	bool from_pstree;
	size_t n;

	snprintf(path, sizeof(path), "%s/%s", FIX_CRIU_DIR, sub);
	*dirfd = fix_open_dir(path);
	cr_assert_eq(img_list_tasks(*dirfd, &pids, &n, &from_pstree, &err), 0, "%s", err.msg);
	*tasks = calloc(n, sizeof(**tasks));
	cr_assert_not_null(*tasks);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(img_task_load(&(*tasks)[i], *dirfd, pids[i], c, &err), 0, "%s",
			     err.msg);
	free(pids);
	return n;
}

static void unload_fixture(int dirfd, struct pages_cache *c, struct img_task *tasks, size_t n)
{
	for (size_t i = 0; i < n; i++)
		img_task_free(&tasks[i], c);
	free(tasks);
	close(dirfd);
}

Test(image_content, single_region_matches_pattern)
{
	const struct want w = { .seed = SINGLE_SEED };
	struct pages_cache cache = { 0 };
	struct img_task *tasks;
	const VmaEntry *by_size = NULL;
	uint64_t addr;
	unsigned nr_8m = 0;
	int dirfd;
	size_t n = load_fixture("single", &dirfd, &cache, &tasks);

	cr_assert_eq(n, 1);
	for (size_t i = 0; i < tasks[0].mm->n_vmas; i++) {
		const VmaEntry *v = tasks[0].mm->vmas[i];

		if ((v->status & VMA_ANON_PRIVATE) && v->end - v->start == SINGLE_LEN) {
			by_size = v;
			nr_8m++;
		}
	}
	cr_assert_eq(nr_8m, 1, "%u anonymous private VMAs of 8 MiB", nr_8m);
	addr = find_and_check(&tasks[0], &w, SINGLE_LEN, "8 MiB region");
	cr_assert_eq(addr, by_size->start, "pattern found at 0x%" PRIx64 ", the 8 MiB VMA is at 0x%"
		     PRIx64, addr, by_size->start);
	unload_fixture(dirfd, &cache, tasks, n);
}

/* The parent's own region and the region it shared before the fork, untouched by it. */
Test(image_content, fork3_parent_regions_match_pattern)
{
	const struct want own = { .seed = PARENT_SEED };
	const struct want common = { .seed = COMMON_SEED };
	struct pages_cache cache = { 0 };
	struct img_task *tasks;
	uint64_t a, b;
	int dirfd;
	size_t n = load_fixture("fork3", &dirfd, &cache, &tasks);

	cr_assert_eq(n, 4);
	a = find_and_check(&tasks[0], &own, FORK3_PART, "own region");
	b = find_and_check(&tasks[0], &common, FORK3_PART, "pre-fork region");
	cr_assert(a + FORK3_PART <= b || b + FORK3_PART <= a, "regions overlap");
	unload_fixture(dirfd, &cache, tasks, n);
}

/*
 * Child C owns a region of FORK3_PART / (C + 1) bytes seeded 0x9000 + C, and
 * rewrote quarter C of its copy of the pre-fork region with seed 0x7000 + C.
 * Which child is C is found from the data: exactly one C must fit.
 */
Test(image_content, fork3_child_regions_match_pattern)
{
	struct pages_cache cache = { 0 };
	struct img_task *tasks;
	bool seen[3] = { false };
	int dirfd;
	size_t n = load_fixture("fork3", &dirfd, &cache, &tasks);

	cr_assert_eq(n, 4);
	for (size_t k = 1; k < n; k++) {
		const struct img_task *t = &tasks[k];
		uint64_t quarter = FORK3_PART / 8 / 4, addr;
		int c = -1;

		for (int i = 0; i < 3; i++) {
			const struct want own = { .seed = CHILD_OWN_SEED + i };

			if (find_region(t, &own, FORK3_PART / (i + 1), &addr)) {
				cr_assert_eq(c, -1, "pid %u fits children %d and %d", t->pid, c, i);
				c = i;
			}
		}
		cr_assert_neq(c, -1, "pid %u holds no child region", t->pid);
		cr_assert_not(seen[c], "two tasks are child %d", c);
		seen[c] = true;

		const struct want own = { .seed = CHILD_OWN_SEED + c };
		const struct want common = {
			.seed = COMMON_SEED,
			.alt = CHILD_COMMON_SEED + c,
			.alt_from = c * quarter,
			.alt_to = (c + 1) * quarter,
		};

		find_and_check(t, &own, FORK3_PART / (c + 1), "own region");
		find_and_check(t, &common, FORK3_PART, "pre-fork region");
	}
	unload_fixture(dirfd, &cache, tasks, n);
}

/* A pattern the images do not hold is not found: the search can fail. */
Test(image_content, absent_pattern_is_not_found)
{
	const struct want w = { .seed = SINGLE_SEED ^ 1 };
	struct pages_cache cache = { 0 };
	struct img_task *tasks;
	uint64_t addr;
	int dirfd;
	size_t n = load_fixture("single", &dirfd, &cache, &tasks);

	cr_assert_eq(find_region(&tasks[0], &w, SINGLE_LEN, &addr), 0);
	unload_fixture(dirfd, &cache, tasks, n);
}
