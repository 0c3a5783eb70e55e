/*
 * The memory model, checked against a reference that keeps every page of a
 * small address universe as (in the model, image address, missing).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "model.h"

#define P	MODEL_PAGE_SIZE

/* xorshift64*: reproducible from the seed printed on failure. */
struct rng {
	uint64_t s;
};

static uint64_t rng_next(struct rng *r)
{
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * 0x2545F4914F6CDD1Dull;
}

/* Uniform enough in [0, n), n > 0. */
static uint64_t rng_below(struct rng *r, uint64_t n)
{
	return rng_next(r) % n;
}

/* Per-page reference over [base, base + n pages). */
struct ref {
	uint64_t base;
	size_t n;
	bool *present;
	bool *missing;
	uint64_t *img;
};

static void ref_init(struct ref *r, uint64_t base, size_t n)
{
	r->base = base;
	r->n = n;
	r->present = calloc(n, sizeof(bool));
	r->missing = calloc(n, sizeof(bool));
	r->img = calloc(n, sizeof(uint64_t));
	cr_assert(r->present && r->missing && r->img);
}

static void ref_free(struct ref *r)
{
	free(r->present);
	free(r->missing);
	free(r->img);
}

static void ref_copy(struct ref *dst, const struct ref *src)
{
	ref_init(dst, src->base, src->n);
	memcpy(dst->present, src->present, src->n * sizeof(bool));
	memcpy(dst->missing, src->missing, src->n * sizeof(bool));
	memcpy(dst->img, src->img, src->n * sizeof(uint64_t));
}

static uint64_t addr_of(const struct ref *r, size_t i)
{
	return r->base + i * P;
}

/* Expected result of model_add of pages [s, e) at IMG; applied when 0. */
static int ref_add(struct ref *r, size_t s, size_t e, uint64_t img)
{
	for (size_t i = s; i < e; i++)
		if (r->present[i])
			return -EEXIST;
	for (size_t i = s; i < e; i++) {
		r->present[i] = true;
		r->missing[i] = false;
		r->img[i] = img + (i - s) * P;
	}
	return 0;
}

static uint64_t ref_set(struct ref *r, size_t s, size_t e, bool missing)
{
	uint64_t n = 0;

	for (size_t i = s; i < e; i++) {
		if (r->present[i] && r->missing[i] != missing) {
			r->missing[i] = missing;
			n++;
		}
	}
	return n;
}

static void ref_unmap(struct ref *r, size_t s, size_t e)
{
	for (size_t i = s; i < e; i++)
		r->present[i] = r->missing[i] = false;
}

static void ref_remap(struct ref *r, size_t from, size_t to, size_t len)
{
	struct ref snap;

	ref_copy(&snap, r);
	ref_unmap(r, from, from + len);
	ref_unmap(r, to, to + len);
	for (size_t i = 0; i < len; i++) {
		r->present[to + i] = snap.present[from + i];
		r->missing[to + i] = snap.missing[from + i];
		r->img[to + i] = snap.img[from + i];
	}
	ref_free(&snap);
}

/* Maximal runs of pages contiguous in the process and in the image: the areas of a merged model. */
static size_t ref_runs(const struct ref *r)
{
	size_t runs = 0;

	for (size_t i = 0; i < r->n; i++)
		if (r->present[i] && !(i && r->present[i - 1] && r->img[i - 1] + P == r->img[i]))
			runs++;
	return runs;
}

/*
 * Compare M with R page by page, through every query of the API. CANONICAL:
 * also require that the areas are exactly the maximal runs (no -ENOMEM left
 * mergeable neighbours behind).
 */
static void compare(const struct model *m, const struct ref *r, bool canonical, const char *what)
{
	uint64_t pages = 0, missing = 0, got = 0, lim = r->base + r->n * P;
	size_t areas = 0, mem = 0, i, nm;
	const struct area *v, *nextv;
	uint64_t *run;
	int ret;

	ret = model_check(m);
	if (ret)
		cr_assert_fail("%s: model_check failed at model.c:%d", what, -ret);

	for (i = 0; i < r->n; i++) {
		uint64_t a = addr_of(r, i);

		v = model_find(m, a);
		if (!!v != r->present[i])
			cr_assert_fail("%s: page %zu (0x%lx): in model %d, expected %d", what, i,
				       (unsigned long)a, !!v, r->present[i]);
		if (!v)
			continue;
		pages++;
		missing += r->missing[i];
		if (area_img_addr(v, a) != r->img[i])
			cr_assert_fail("%s: page %zu: img 0x%lx, expected 0x%lx", what, i,
				       (unsigned long)area_img_addr(v, a), (unsigned long)r->img[i]);
		if (area_is_missing(v, a) != r->missing[i])
			cr_assert_fail("%s: page %zu: missing %d, expected %d", what, i,
				       area_is_missing(v, a), r->missing[i]);
		if (v->start < r->base || v->end > lim)
			cr_assert_fail("%s: area [0x%lx, 0x%lx) leaves the universe", what,
				       (unsigned long)v->start, (unsigned long)v->end);
	}
	if (pages != m->nr_pages || missing != m->nr_missing)
		cr_assert_fail("%s: counters pages %lu missing %lu, expected %lu %lu", what,
			       (unsigned long)m->nr_pages, (unsigned long)m->nr_missing,
			       (unsigned long)pages, (unsigned long)missing);

	/* Areas in order, and the run lengths area_run must report inside each. */
	run = calloc(r->n + 1, sizeof(*run));
	cr_assert(run);
	for (v = model_first(m, 0); v; v = model_next(m, v)) {
		size_t s = (v->start - r->base) / P, e = (v->end - r->base) / P;

		areas++;
		mem += sizeof(*v) + (area_nr_pages(v) + 63) / 64 * sizeof(uint64_t);
		for (i = e; i-- > s;)
			run[i] = (i + 1 < e && r->missing[i + 1] == r->missing[i]) ? run[i + 1] + 1 : 1;
		for (i = s; i < e; i++) {
			uint64_t a = addr_of(r, i);

			got = area_run(v, a, UINT64_MAX, r->missing[i]);
			if (got != run[i] * P)
				cr_assert_fail("%s: area_run at page %zu want %d: %lu pages, expected %lu",
					       what, i, r->missing[i], (unsigned long)(got / P),
					       (unsigned long)run[i]);
			if (area_run(v, a, UINT64_MAX, !r->missing[i]) != 0)
				cr_assert_fail("%s: area_run at page %zu of the other kind", what, i);
			if (area_run(v, a, 2 * P + 1, r->missing[i]) != (run[i] < 2 ? run[i] : 2) * P)
				cr_assert_fail("%s: area_run at page %zu capped at 2 pages", what, i);
		}
	}
	free(run);
	if (model_mem_bytes(m) != mem)
		cr_assert_fail("%s: %zu heap bytes, expected %zu: spare bitmap left behind", what,
			       model_mem_bytes(m), mem);
	if (areas != m->nr_areas)
		cr_assert_fail("%s: %zu areas listed, nr_areas %zu", what, areas, m->nr_areas);
	if (canonical && areas != ref_runs(r))
		cr_assert_fail("%s: %zu areas, expected %zu after merging", what, areas, ref_runs(r));

	/* model_first and model_next_missing from every page, against backward scans. */
	nm = r->n;
	nextv = NULL;
	for (i = r->n + 1; i-- > 0;) {
		uint64_t a = addr_of(r, i);
		bool found;

		if (i < r->n && r->present[i]) {
			nextv = model_find(m, a);
			if (r->missing[i])
				nm = i;
		}
		if (model_first(m, a) != nextv)
			cr_assert_fail("%s: model_first at page %zu", what, i);
		found = model_next_missing(m, a, &got);
		if (found != (nm < r->n) || (found && got != addr_of(r, nm)))
			cr_assert_fail("%s: model_next_missing at page %zu: %d 0x%lx, expected page %zu",
				       what, i, found, (unsigned long)got, nm);
	}
	if (r->base && model_first(m, 0) != nextv)
		cr_assert_fail("%s: model_first(0)", what);
}

/* A random range [*s, *e) of pages, short or long. */
static void rand_range(struct rng *g, size_t n, size_t *s, size_t *e)
{
	size_t max = rng_below(g, 2) ? 8 : n;

	*s = rng_below(g, n);
	if (max > n - *s)
		max = n - *s;
	*e = *s + 1 + rng_below(g, max);
}

enum op_kind { OP_ADD, OP_MARK, OP_CLEAR, OP_UNMAP, OP_REMAP, OP_CLONE, OP_MAX };

struct op {
	enum op_kind kind;
	size_t a, b, c;
	uint64_t img;
};

static struct op rand_op(struct rng *g, const struct ref *r)
{
	static const enum op_kind mix[] = {
		OP_ADD, OP_ADD, OP_ADD, OP_ADD, OP_ADD, OP_MARK, OP_MARK, OP_MARK, OP_MARK,
		OP_CLEAR, OP_CLEAR, OP_CLEAR, OP_UNMAP, OP_UNMAP, OP_REMAP, OP_REMAP,
		OP_REMAP, OP_REMAP, OP_CLONE,
	};
	struct op o = { .kind = mix[rng_below(g, sizeof(mix) / sizeof(mix[0]))] };
	uint64_t u;

	if (o.kind == OP_REMAP) {
		o.c = 1 + rng_below(g, rng_below(g, 2) ? 8 : r->n - 1);
		o.a = rng_below(g, r->n - o.c + 1);
		if (rng_below(g, 3) == 0)	/* overlapping moves, by a few pages */
			u = o.a + rng_below(g, 7) - 3;
		else
			u = rng_below(g, r->n - o.c + 1);
		o.b = u <= r->n - o.c ? u : o.a;
		return o;
	}
	rand_range(g, r->n, &o.a, &o.b);
	if (o.kind == OP_ADD) {
		u = rng_below(g, 10);
		if (u < 4)		/* identity, as at restore: neighbours merge */
			o.img = addr_of(r, o.a);
		else if (u < 7 && o.a && r->present[o.a - 1])	/* continues the left neighbour */
			o.img = r->img[o.a - 1] + P;
		else			/* anywhere in a small image space */
			o.img = 0x40000000ull + rng_below(g, 4 * r->n) * P;
	}
	return o;
}

static const char *op_name(const struct op *o, char *buf, size_t len)
{
	static const char *names[] = { "add", "mark", "clear", "unmap", "remap", "clone" };

	snprintf(buf, len, "%s(%zu, %zu, %zu, img 0x%lx)", names[o->kind], o->a, o->b, o->c,
		 (unsigned long)o->img);
	return buf;
}

/* Apply O to M and R, checking the return value; returns the model's int result. */
static int apply(struct model *m, struct ref *r, const struct op *o, const char *what)
{
	uint64_t got, want;
	int ret = 0, exp;

	switch (o->kind) {
	case OP_ADD:
		ret = model_add(m, addr_of(r, o->a), addr_of(r, o->b), o->img);
		if (ret == -ENOMEM)
			return ret;
		exp = ref_add(r, o->a, o->b, o->img);
		if (ret != exp)
			cr_assert_fail("%s: returned %d, expected %d", what, ret, exp);
		break;
	case OP_MARK:
	case OP_CLEAR:
		if (o->kind == OP_MARK)
			got = model_mark_missing(m, addr_of(r, o->a), addr_of(r, o->b));
		else
			got = model_clear(m, addr_of(r, o->a), addr_of(r, o->b));
		want = ref_set(r, o->a, o->b, o->kind == OP_MARK);
		if (got != want)
			cr_assert_fail("%s: %lu pages changed, expected %lu", what,
				       (unsigned long)got, (unsigned long)want);
		break;
	case OP_UNMAP:
		ret = model_unmap(m, addr_of(r, o->a), addr_of(r, o->b));
		if (ret == -ENOMEM)
			return ret;
		if (ret)
			cr_assert_fail("%s: returned %d", what, ret);
		ref_unmap(r, o->a, o->b);
		break;
	case OP_REMAP:
		ret = model_remap(m, addr_of(r, o->a), addr_of(r, o->b), o->c * P);
		if (ret == -ENOMEM)
			return ret;
		if (ret)
			cr_assert_fail("%s: returned %d", what, ret);
		ref_remap(r, o->a, o->b, o->c);
		break;
	default:
		cr_assert_fail("%s: not applied here", what);
	}
	return ret;
}

/* Clone M; check the copy, then either continue on it or prove the two are independent. */
static void clone_step(struct model *m, struct ref *r, struct rng *g, const char *what)
{
	struct model c;
	struct ref saved;
	struct op o;
	char buf[128];
	int ret;

	model_init(&c);
	ret = model_clone(&c, m);
	if (ret)
		cr_assert_fail("%s: clone returned %d", what, ret);
	compare(&c, r, false, what);
	if (model_mem_bytes(&c) > model_mem_bytes(m))
		cr_assert_fail("%s: the clone is bigger than the original", what);
	if (rng_below(g, 2)) {
		model_free(m);
		*m = c;
		return;
	}
	ref_copy(&saved, r);
	for (int k = 0; k < 3; k++) {
		do
			o = rand_op(g, &saved);
		while (o.kind == OP_CLONE);
		apply(&c, &saved, &o, op_name(&o, buf, sizeof(buf)));
	}
	compare(&c, &saved, true, "the clone after changes");
	compare(m, r, false, "the original after changing its clone");
	ref_free(&saved);
	model_free(&c);
}

struct rand_case {
	uint64_t seed;
	uint64_t base;
	size_t pages;
	unsigned ops;
};

static struct rand_case rand_cases[] = {
	{ 1, 0, 200, 6000 },			/* an area at address 0 */
	{ 2, 0x7ffffff00000ull, 256, 5000 },	/* near the top of user space */
	{ 3, 0x100000000ull, 130, 6000 },	/* dense: many merges and overlaps */
	{ 4, 0x10000ull, 1000, 2000 },		/* areas spanning many words */
};

ParameterizedTestParameters(vma, random_against_reference)
{
	return cr_make_param_array(struct rand_case, rand_cases,
				   sizeof(rand_cases) / sizeof(rand_cases[0]));
}

/* Thousands of random operations, every page compared after each. */
ParameterizedTest(struct rand_case *rc, vma, random_against_reference, .timeout = 120)
{
	struct rng g = { rc->seed * 0x9E3779B97F4A7C15ull };
	unsigned count[OP_MAX] = { 0 };
	struct model m;
	struct ref r;
	char buf[128], what[192];

	model_init(&m);
	ref_init(&r, rc->base, rc->pages);
	for (unsigned i = 0; i < rc->ops; i++) {
		struct op o = rand_op(&g, &r);

		snprintf(what, sizeof(what), "seed %lu op %u %s", (unsigned long)rc->seed, i,
			 op_name(&o, buf, sizeof(buf)));
		count[o.kind]++;
		if (o.kind == OP_CLONE)
			clone_step(&m, &r, &g, what);
		else
			apply(&m, &r, &o, what);
		compare(&m, &r, true, what);
	}
	for (int k = 0; k < OP_MAX; k++)
		cr_expect_gt(count[k], 10, "operation %d ran %u times", k, count[k]);
	cr_expect_gt(m.nr_areas, 1);
	model_free(&m);
	ref_free(&r);
}

/*
 * The same with every allocation failing in turn: each structural operation
 * is retried with the 1st, 2nd, ... allocation failing until it goes through,
 * and each -ENOMEM must leave the pages exactly as they were, and the areas
 * too (rolled back splits), unless an earlier best-effort merge went without.
 */
Test(model, enomem_leaves_model_intact, .timeout = 120)
{
	struct rng g = { 0xE40E40E4ull };
	unsigned nomem = 0, worked = 0;
	struct model m, c;
	struct ref r;
	char buf[128], what[192];

	model_init(&m);
	ref_init(&r, 0x200000, 150);
	for (unsigned i = 0; i < 3000; i++) {
		struct op o = rand_op(&g, &r);
		int ret;

		snprintf(what, sizeof(what), "op %u %s", i, op_name(&o, buf, sizeof(buf)));
		for (unsigned nth = 1;; nth++) {
			bool canonical = m.nr_areas == ref_runs(&r);

			if (o.kind == OP_CLONE) {
				model_init(&c);
				model_fail_alloc(&c, nth);
				ret = model_clone(&c, &m);
				if (ret == -ENOMEM) {
					cr_assert_eq(c.nr_areas, 0);
					cr_assert_eq(model_mem_bytes(&c), 0);
				} else {
					cr_assert_eq(ret, 0);
					compare(&c, &r, false, what);
					model_free(&m);
					m = c;
				}
			} else {
				model_fail_alloc(&m, nth);
				ret = apply(&m, &r, &o, what);
			}
			model_fail_alloc(&m, 0);
			compare(&m, &r, ret == -ENOMEM && canonical, what);
			if (ret != -ENOMEM)
				break;
			nomem++;
			cr_assert_lt(nth, 2 * m.nr_areas + 20, "%s: never goes through", what);
		}
		worked++;
	}
	cr_expect_gt(nomem, 500, "only %u failures injected", nomem);
	cr_expect_eq(worked, 3000);
	model_free(&m);
	ref_free(&r);
}

struct bad_add {
	uint64_t start, end, img;
	int err;
};

static struct bad_add bad_adds[] = {
	{ 0x10001, 0x20000, 0x10000, -EINVAL },		/* unaligned start */
	{ 0x10000, 0x20800, 0x10000, -EINVAL },		/* unaligned end */
	{ 0x30000, 0x31000, 0x10010, -EINVAL },		/* unaligned image address */
	{ 0x30000, 0x30000, 0x30000, -EINVAL },		/* empty */
	{ 0x31000, 0x30000, 0x30000, -EINVAL },		/* reversed */
	{ 0x30000, 0x32000, 0xfffffffffffff000ull, -EINVAL },	/* image end overflows */
	{ 0x30000, 0x32000, 0xffffffffffffe000ull, -EINVAL },	/* image end is 2^64 */
	{ 0x10000, 0x20000, 0x90000, -EEXIST },		/* the same range */
	{ 0xf000, 0x11000, 0x90000, -EEXIST },		/* over the start */
	{ 0x1f000, 0x21000, 0x90000, -EEXIST },		/* over the end */
	{ 0x12000, 0x13000, 0x90000, -EEXIST },		/* inside */
	{ 0x0, 0x40000, 0x90000, -EEXIST },		/* around */
	{ 0x20000, 0x21000, 0x90000, 0 },		/* touching, not merged */
	{ 0xf000, 0x10000, 0xf000, 0 },			/* touching, merged */
	{ 0xffffffffffffe000ull, 0xfffffffffffff000ull, 0, 0 },	/* the last page */
};

ParameterizedTestParameters(vma, add_rejects_bad_ranges)
{
	return cr_make_param_array(struct bad_add, bad_adds, sizeof(bad_adds) / sizeof(bad_adds[0]));
}

ParameterizedTest(struct bad_add *b, vma, add_rejects_bad_ranges)
{
	struct model m;

	model_init(&m);
	cr_assert_eq(model_add(&m, 0x10000, 0x20000, 0x10000), 0);
	model_mark_missing(&m, 0x10000, 0x20000);
	cr_assert_eq(model_add(&m, b->start, b->end, b->img), b->err);
	cr_assert_eq(model_check(&m), 0);
	if (b->err) {
		cr_assert_eq(m.nr_areas, 1);
		cr_assert_eq(m.nr_pages, 16);
	} else {
		bool merged = b->end == 0x10000 && b->img + (b->end - b->start) == 0x10000;

		cr_assert_eq(m.nr_pages, 16 + (b->end - b->start) / P);
		cr_assert_eq(m.nr_areas, merged ? 1 : 2);
		cr_assert_eq(model_find(&m, b->start)->img, b->img);
		cr_assert_eq(model_find(&m, 0x10000)->start, merged ? b->start : 0x10000);
	}
	cr_assert_eq(m.nr_missing, 16);
	model_free(&m);
}

struct ref_area {
	uint64_t start, end, img;
};

static int area_cmp(const void *a, const void *b)
{
	const struct ref_area *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* Brute force: the first area with end > addr, or -1. */
static long brute_first(const struct ref_area *a, size_t n, uint64_t addr)
{
	for (size_t i = 0; i < n; i++)
		if (a[i].end > addr)
			return (long)i;
	return -1;
}

static void check_areas(const struct model *m, const struct ref_area *a, size_t n, struct rng *g)
{
	const struct area *v;
	size_t i = 0;

	cr_assert_eq(model_check(m), 0);
	cr_assert_eq(m->nr_areas, n);
	for (v = model_first(m, 0); v; v = model_next(m, v), i++) {
		cr_assert_lt(i, n);
		cr_assert(v->start == a[i].start && v->end == a[i].end && v->img == a[i].img,
			  "area %zu", i);
		cr_assert_eq(model_find(m, v->start), v);
		cr_assert_eq(model_find(m, v->end - P), v);
	}
	cr_assert_eq(i, n);
	for (int k = 0; k < 20000; k++) {
		uint64_t addr = rng_below(g, 1100 * 64) * P;
		long f = brute_first(a, n, addr);

		v = model_first(m, addr);
		if (f < 0) {
			cr_assert_null(v);
			cr_assert_null(model_find(m, addr));
			continue;
		}
		cr_assert(v && v->start == a[f].start, "first(0x%lx)", (unsigned long)addr);
		if (a[f].start <= addr)
			cr_assert_eq(model_find(m, addr), v);
		else
			cr_assert_null(model_find(m, addr));
	}
}

/* 1000 random areas added in random order, found like a linear scan would; then half removed. */
Test(model, many_areas_against_brute_force)
{
	static struct ref_area a[1000];
	struct rng g = { 77 };
	struct model m;
	size_t n = 1000, kept;

	model_init(&m);
	for (size_t i = 0; i < n; i++) {
		uint64_t off = rng_below(&g, 32), len = 1 + rng_below(&g, 32);

		/* One slot of 64 pages each; images far apart so nothing merges. */
		a[i].start = (i * 64 + off) * P;
		a[i].end = a[i].start + len * P;
		a[i].img = (i + 1) << 32;
	}
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = rng_below(&g, i + 1);
		struct ref_area t = a[i];

		a[i] = a[j];
		a[j] = t;
	}
	for (size_t i = 0; i < n; i++) {
		cr_assert_eq(model_add(&m, a[i].start, a[i].end, a[i].img), 0);
		cr_assert_eq(model_add(&m, a[i].start, a[i].start + P, 0), -EEXIST);
		if (i % 100 == 0)
			cr_assert_eq(model_check(&m), 0);
	}
	qsort(a, n, sizeof(a[0]), area_cmp);
	check_areas(&m, a, n, &g);

	/* Drop every other area, in a scattered order. */
	for (size_t i = 0; i < n; i += 2) {
		size_t k = (i * 389) % n & ~(size_t)1;

		cr_assert_eq(model_unmap(&m, a[k].start, a[k].end), 0);
	}
	kept = 0;
	for (size_t i = 1; i < n; i += 2)
		a[kept++] = a[i];
	check_areas(&m, a, kept, &g);
	model_free(&m);
	cr_assert_eq(m.nr_areas, 0);
	cr_assert_null(model_first(&m, 0));
}

/* Adding in address order is the worst case of an unbalanced tree; this one stays shallow. */
Test(model, sorted_inserts_stay_balanced)
{
	struct model m;

	model_init(&m);
	for (uint64_t i = 0; i < 20000; i++)
		cr_assert_eq(model_add(&m, 2 * i * P, (2 * i + 1) * P, i << 32), 0);
	cr_assert_eq(model_check(&m), 0);
	/* AVL: height <= 1.44 log2(n + 2), 20.6 here. Peeks at the private root. */
	cr_assert_leq(m.root->link.height, 20);
	for (uint64_t i = 0; i < 20000; i += 3)
		cr_assert_eq(model_unmap(&m, 2 * i * P, (2 * i + 1) * P), 0);
	cr_assert_eq(model_check(&m), 0);
	cr_assert_eq(m.nr_areas, 20000 - 6667);
	model_free(&m);
}

/* Deterministic pattern for page i. */
static bool pattern(uint64_t i)
{
	return ((i * 2654435761u) >> 7 & 3) == 0 || i % 17 == 3;
}

/* Start a test model and reference with one area of N pages at BASE (image IMG), bits from pattern(). */
static void setup_area(struct model *m, struct ref *r, uint64_t base, size_t n, size_t first,
		       size_t len, uint64_t img)
{
	model_init(m);
	ref_init(r, base, n);
	cr_assert_eq(model_add(m, addr_of(r, first), addr_of(r, first + len), img), 0);
	ref_add(r, first, first + len, img);
	for (size_t i = first; i < first + len; i++) {
		if (pattern(i)) {
			cr_assert_eq(model_mark_missing(m, addr_of(r, i), addr_of(r, i + 1)), 1);
			ref_set(r, i, i + 1, true);
		}
	}
	compare(m, r, true, "setup");
}

struct cut {
	size_t s, e;
};

static struct cut cuts[] = {
	{ 1, 2 }, { 63, 64 }, { 64, 65 }, { 65, 66 }, { 0, 63 }, { 1, 129 }, { 127, 193 },
	{ 70, 77 }, { 191, 192 }, { 199, 200 }, { 5, 195 }, { 128, 200 },
};

ParameterizedTestParameters(vma, split_at_any_page)
{
	return cr_make_param_array(struct cut, cuts, sizeof(cuts) / sizeof(cuts[0]));
}

/* Cutting a hole at page offsets that are not word aligned keeps every bit in place. */
ParameterizedTest(struct cut *c, vma, split_at_any_page)
{
	struct model m;
	struct ref r;
	size_t before;

	setup_area(&m, &r, 0x7f0000000000ull, 200, 0, 200, 0x1000000);
	before = model_mem_bytes(&m);
	cr_assert_eq(model_unmap(&m, addr_of(&r, c->s), addr_of(&r, c->e)), 0);
	ref_unmap(&r, c->s, c->e);
	compare(&m, &r, true, "after the cut");
	cr_assert_eq(m.nr_areas, 1 + (c->s > 0 && c->e < 200));
	cr_assert_leq(model_mem_bytes(&m), before + sizeof(struct area) + 8,
		      "spare bitmap kept after the split");
	/* The moved-out copy of the rest keeps its bits too. */
	cr_assert_eq(model_remap(&m, addr_of(&r, 0), addr_of(&r, 0) + (1ull << 30), 200 * P), 0);
	ref_unmap(&r, 0, 200);
	for (size_t i = 0; i < 200; i++) {
		struct area *v = model_find(&m, addr_of(&r, i) + (1ull << 30));
		bool gone = i >= c->s && i < c->e;

		cr_assert_eq(!v, gone, "page %zu", i);
		if (v) {
			cr_assert_eq(area_is_missing(v, addr_of(&r, i) + (1ull << 30)), pattern(i));
			cr_assert_eq(area_img_addr(v, addr_of(&r, i) + (1ull << 30)), 0x1000000 + i * P);
		}
	}
	cr_assert_eq(model_check(&m), 0);
	model_free(&m);
	ref_free(&r);
}

/* A chunk moved out and back becomes one area again, with the same bits and memory. */
Test(model, move_out_and_back_merges)
{
	struct model m;
	struct ref r;
	size_t mem;

	setup_area(&m, &r, 0x400000, 400, 0, 100, 0x400000);
	mem = model_mem_bytes(&m);
	cr_assert_eq(model_remap(&m, addr_of(&r, 10), addr_of(&r, 300), 23 * P), 0);
	ref_remap(&r, 10, 300, 23);
	compare(&m, &r, true, "moved out");
	cr_assert_eq(m.nr_areas, 3);
	cr_assert_eq(model_find(&m, addr_of(&r, 300))->img, 0x400000 + 10 * P);
	cr_assert_eq(model_remap(&m, addr_of(&r, 300), addr_of(&r, 10), 23 * P), 0);
	ref_remap(&r, 300, 10, 23);
	compare(&m, &r, true, "moved back");
	cr_assert_eq(m.nr_areas, 1);
	cr_assert_eq(model_mem_bytes(&m), mem);
	/* Moved back to another place it stays apart: the image is not contiguous there. */
	cr_assert_eq(model_remap(&m, addr_of(&r, 10), addr_of(&r, 300), 23 * P), 0);
	cr_assert_eq(model_remap(&m, addr_of(&r, 300), addr_of(&r, 11), 23 * P), 0);
	cr_assert_eq(m.nr_areas, 3);
	cr_assert_eq(model_check(&m), 0);
	model_free(&m);
	ref_free(&r);
}

struct shift {
	size_t from, len;
	long delta;
};

static struct shift shifts[] = {
	{ 20, 50, 1 }, { 20, 50, -1 }, { 20, 50, 5 }, { 20, 50, -20 }, { 20, 50, 49 },
	{ 60, 30, -49 }, { 0, 100, 1 }, { 1, 99, -1 }, { 30, 1, 1 }, { 30, 64, 63 }, { 30, 64, -30 },
};

ParameterizedTestParameters(vma, remap_overlapping_itself)
{
	return cr_make_param_array(struct shift, shifts, sizeof(shifts) / sizeof(shifts[0]));
}

/* mremap by less than its length: source and destination overlap. */
ParameterizedTest(struct shift *s, vma, remap_overlapping_itself)
{
	struct model m;
	struct ref r;
	size_t to = (size_t)((long)s->from + s->delta);

	setup_area(&m, &r, 0x10000000, 200, 0, 100, 0x80000000);
	/* A second area after a gap, which a move to the right may cover. */
	cr_assert_eq(model_add(&m, addr_of(&r, 102), addr_of(&r, 140), 0x90000000), 0);
	ref_add(&r, 102, 140, 0x90000000);
	model_mark_missing(&m, addr_of(&r, 102), addr_of(&r, 120));
	ref_set(&r, 102, 120, true);
	cr_assert_eq(model_remap(&m, addr_of(&r, s->from), addr_of(&r, to), s->len * P), 0);
	ref_remap(&r, s->from, to, s->len);
	compare(&m, &r, true, "after the move");
	model_free(&m);
	ref_free(&r);
}

/* A source that spans two areas and the gap between them, onto an area it partly replaces. */
Test(model, remap_across_areas_and_gap)
{
	struct model m;
	struct ref r;
	struct area *v;

	model_init(&m);
	ref_init(&r, 0x1000000, 128);
	cr_assert_eq(model_add(&m, addr_of(&r, 10), addr_of(&r, 20), 0xa0000000), 0);
	cr_assert_eq(model_add(&m, addr_of(&r, 25), addr_of(&r, 40), 0xb0000000), 0);
	cr_assert_eq(model_add(&m, addr_of(&r, 60), addr_of(&r, 100), 0xc0000000), 0);
	ref_add(&r, 10, 20, 0xa0000000);
	ref_add(&r, 25, 40, 0xb0000000);
	ref_add(&r, 60, 100, 0xc0000000);
	cr_assert_eq(model_mark_missing(&m, addr_of(&r, 0), addr_of(&r, 128)), 65);
	ref_set(&r, 0, 128, true);
	cr_assert_eq(model_clear(&m, addr_of(&r, 17), addr_of(&r, 27)), 5);
	ref_set(&r, 17, 27, false);

	cr_assert_eq(model_remap(&m, addr_of(&r, 15), addr_of(&r, 70), 20 * P), 0);
	ref_remap(&r, 15, 70, 20);
	compare(&m, &r, true, "after the move");
	/* Left: [10,15) of A, [35,40) of B; moved: [70,75) of A, [80,90) of B; kept of C: [60,70), [90,100). */
	cr_assert_eq(m.nr_areas, 6);
	cr_assert_eq(m.nr_pages, 5 + 5 + 5 + 10 + 10 + 10);
	cr_assert_null(model_find(&m, addr_of(&r, 77)), "C's pages under the gap must go");
	v = model_find(&m, addr_of(&r, 72));
	cr_assert(v && v->start == addr_of(&r, 70) && v->end == addr_of(&r, 75));
	cr_assert_eq(v->img, 0xa0000000 + 5 * P);
	cr_assert_eq(area_run(v, v->start, UINT64_MAX, true), 2 * P);
	cr_assert_eq(area_run(v, v->start + 2 * P, UINT64_MAX, false), 3 * P);
	v = model_find(&m, addr_of(&r, 80));
	cr_assert(v && v->start == addr_of(&r, 80) && v->end == addr_of(&r, 90));
	cr_assert_eq(v->img, 0xb0000000);
	model_free(&m);
	ref_free(&r);
}

/* MREMAP_FIXED swap of two areas through a temporary address. */
Test(model, swap_two_areas_via_temp)
{
	struct model m;
	struct ref r;
	uint64_t a, b, t;
	struct area *v;

	model_init(&m);
	ref_init(&r, 0x7f0000000000ull, 256);
	a = addr_of(&r, 3);
	b = addr_of(&r, 100);
	t = addr_of(&r, 200);
	cr_assert_eq(model_add(&m, a, a + 40 * P, 0x111000), 0);
	cr_assert_eq(model_add(&m, b, b + 40 * P, 0x999000), 0);
	ref_add(&r, 3, 43, 0x111000);
	ref_add(&r, 100, 140, 0x999000);
	model_mark_missing(&m, a, a + 7 * P);
	model_mark_missing(&m, b + 33 * P, b + 40 * P);
	ref_set(&r, 3, 10, true);
	ref_set(&r, 133, 140, true);

	cr_assert_eq(model_remap(&m, a, t, 40 * P), 0);
	cr_assert_eq(model_remap(&m, b, a, 40 * P), 0);
	cr_assert_eq(model_remap(&m, t, b, 40 * P), 0);
	ref_remap(&r, 3, 200, 40);
	ref_remap(&r, 100, 3, 40);
	ref_remap(&r, 200, 100, 40);
	compare(&m, &r, true, "after the swap");
	cr_assert_eq(m.nr_areas, 2);
	v = model_find(&m, a);
	cr_assert(v->start == a && v->end == a + 40 * P && v->img == 0x999000);
	cr_assert_eq(area_run(v, a, UINT64_MAX, false), 33 * P);
	v = model_find(&m, b);
	cr_assert(v->start == b && v->end == b + 40 * P && v->img == 0x111000);
	cr_assert_eq(area_run(v, b, UINT64_MAX, true), 7 * P);
	cr_assert_eq(m.nr_missing, 14);
	model_free(&m);
	ref_free(&r);
}

/* Clear and unmap over several areas and the gaps between them. */
Test(model, clear_and_unmap_across_areas)
{
	struct model m;
	struct ref r;
	uint64_t first;

	model_init(&m);
	ref_init(&r, 0x20000000, 300);
	for (size_t i = 0; i < 5; i++) {
		cr_assert_eq(model_add(&m, addr_of(&r, 10 + i * 50), addr_of(&r, 50 + i * 50),
				      0x1000000 * (i + 1)), 0);
		ref_add(&r, 10 + i * 50, 50 + i * 50, 0x1000000 * (i + 1));
	}
	cr_assert_eq(model_mark_missing(&m, 0, UINT64_MAX & ~(P - 1)), 200);
	ref_set(&r, 0, 300, true);
	cr_assert_eq(model_mark_missing(&m, addr_of(&r, 0), addr_of(&r, 300)), 0);
	cr_assert_eq(model_clear(&m, addr_of(&r, 45), addr_of(&r, 115)), 5 + 40 + 5);
	ref_set(&r, 45, 115, false);
	compare(&m, &r, true, "after clear");
	cr_assert_eq(model_clear(&m, addr_of(&r, 45), addr_of(&r, 115)), 0);
	cr_assert(model_next_missing(&m, addr_of(&r, 45), &first));
	cr_assert_eq(first, addr_of(&r, 115));

	cr_assert_eq(model_unmap(&m, addr_of(&r, 30), addr_of(&r, 170)), 0);
	ref_unmap(&r, 30, 170);
	compare(&m, &r, true, "after unmap");
	cr_assert_eq(m.nr_areas, 3);
	cr_assert_eq(m.nr_pages, 20 + 30 + 40);
	cr_assert_eq(m.nr_missing, 20 + 30 + 40);
	/* Unmapping where nothing is does nothing. */
	cr_assert_eq(model_unmap(&m, addr_of(&r, 30), addr_of(&r, 170)), 0);
	cr_assert_eq(model_unmap(&m, 0, P), 0);
	compare(&m, &r, true, "after unmapping nothing");
	model_free(&m);
	ref_free(&r);
}

/* A fork's copy changes alone; the parent's model keeps its pages. */
Test(model, clone_is_independent)
{
	struct model m, c;
	struct ref r, rc;

	setup_area(&m, &r, 0x5000000, 300, 20, 200, 0x5000000);
	cr_assert_eq(model_add(&m, addr_of(&r, 250), addr_of(&r, 290), 0x9000000), 0);
	ref_add(&r, 250, 290, 0x9000000);
	model_init(&c);
	cr_assert_eq(model_clone(&c, &m), 0);
	cr_assert_eq(model_clone(&c, &m), -EBUSY);
	ref_copy(&rc, &r);
	compare(&c, &rc, true, "the clone");
	cr_assert_eq(model_mem_bytes(&c), model_mem_bytes(&m));

	model_clear(&c, addr_of(&r, 0), addr_of(&r, 100));
	ref_set(&rc, 0, 100, false);
	model_mark_missing(&c, addr_of(&r, 100), addr_of(&r, 300));
	ref_set(&rc, 100, 300, true);
	cr_assert_eq(model_unmap(&c, addr_of(&r, 50), addr_of(&r, 60)), 0);
	ref_unmap(&rc, 50, 60);
	cr_assert_eq(model_remap(&c, addr_of(&r, 250), addr_of(&r, 230), 40 * P), 0);
	ref_remap(&rc, 250, 230, 40);
	cr_assert_eq(model_add(&c, addr_of(&r, 0), addr_of(&r, 10), 0), 0);
	ref_add(&rc, 0, 10, 0);
	compare(&c, &rc, true, "the changed clone");
	compare(&m, &r, true, "the original");
	model_free(&m);
	compare(&c, &rc, true, "the clone with its original freed");
	model_free(&c);
	ref_free(&r);
	ref_free(&rc);
}

/* One bit per page: a 1 GiB area costs 32 KiB and a node, also after a split. */
Test(model, one_gib_costs_32_kib)
{
	uint64_t base = 0x7e0000000000ull, gib = 1ull << 30, pages = gib / P, addr;
	struct model m;
	struct area *v;
	size_t mem;

	model_init(&m);
	cr_assert_eq(model_add(&m, base, base + gib, base), 0);
	mem = model_mem_bytes(&m);
	cr_assert_geq(mem, 32768);
	cr_assert_leq(mem, 32768 + 256, "%zu bytes", mem);
	cr_assert_eq(model_mark_missing(&m, base, base + gib), pages);
	cr_assert_eq(m.nr_missing, pages);
	v = model_find(&m, base + gib - P);
	cr_assert_eq(area_run(v, base, UINT64_MAX, true), gib);
	cr_assert_eq(area_run(v, base + P, 64 * 1024, true), 64 * 1024);

	cr_assert_eq(model_clear(&m, base + 12345 * P, base + 200000 * P), 200000 - 12345);
	cr_assert_eq(area_run(v, base + 7 * P, UINT64_MAX, true), (12345 - 7) * P);
	cr_assert_eq(area_run(v, base + 12345 * P, UINT64_MAX, false), (200000 - 12345) * P);
	cr_assert(model_next_missing(&m, base + 12345 * P, &addr));
	cr_assert_eq(addr, base + 200000 * P);

	/* Split at a page that is not word aligned, then give back the middle. */
	cr_assert_eq(model_unmap(&m, base + 99999 * P, base + 100003 * P), 0);
	cr_assert_eq(m.nr_areas, 2);
	cr_assert_eq(model_check(&m), 0);
	mem = model_mem_bytes(&m);
	cr_assert_leq(mem, 32768 + 2 * 256, "%zu bytes after a split", mem);
	cr_assert_eq(m.nr_missing, pages - (200000 - 12345));
	v = model_find(&m, base + 100003 * P);
	cr_assert_eq(area_run(v, v->start, UINT64_MAX, false), (200000 - 100003) * P);
	cr_assert_eq(area_run(v, base + 200000 * P, UINT64_MAX, true), gib - 200000 * P);
	model_free(&m);
	cr_assert_eq(model_mem_bytes(&m), 0);
}

/* Bits keep their places through splits and moves of an area of a million pages. */
Test(model, large_area_shifts_word_at_a_time, .timeout = 60)
{
	uint64_t n = 1ull << 20, base = 0x100000000ull;
	static bool want[1ull << 20];
	struct rng g = { 4242 };
	struct model m;
	struct area *v;

	model_init(&m);
	cr_assert_eq(model_add(&m, base, base + n * P, 0x10000000000ull), 0);
	for (int k = 0; k < 2000; k++) {
		uint64_t s = rng_below(&g, n), e = s + 1 + rng_below(&g, 3000);

		if (e > n)
			e = n;
		model_mark_missing(&m, base + s * P, base + e * P);
		for (uint64_t i = s; i < e; i++)
			want[i] = true;
	}
	/* Move everything but the first 777 pages by 12345 pages, then cut out page 500001. */
	cr_assert_eq(model_remap(&m, base + 777 * P, base + (777 + 12345) * P, (n - 777) * P), 0);
	cr_assert_eq(model_unmap(&m, base + (500001 + 12345) * P, base + (500002 + 12345) * P), 0);
	cr_assert_eq(model_check(&m), 0);
	cr_assert_eq(m.nr_areas, 3);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t a = base + (i < 777 ? i : i + 12345) * P;

		if (i == 500001) {
			cr_assert_null(model_find(&m, a));
			continue;
		}
		v = model_find(&m, a);
		if (!v || area_is_missing(v, a) != want[i] ||
		    area_img_addr(v, a) != 0x10000000000ull + i * P)
			cr_assert_fail("page %lu", (unsigned long)i);
	}
	model_free(&m);
}

struct run_case {
	size_t page;
	uint64_t limit;
	bool want;
	uint64_t pages;
};

/* Area of 100 pages, missing [10,30) and [50,51) and [64,100). */
static struct run_case run_cases[] = {
	{ 10, UINT64_MAX, true, 20 },
	{ 10, 5 * P, true, 5 },
	{ 10, 5 * P + 100, true, 5 },	/* limit rounds down to pages */
	{ 10, 100, true, 0 },
	{ 10, UINT64_MAX, false, 0 },
	{ 0, UINT64_MAX, false, 10 },
	{ 29, UINT64_MAX, true, 1 },
	{ 30, UINT64_MAX, false, 20 },
	{ 50, UINT64_MAX, true, 1 },
	{ 51, UINT64_MAX, false, 13 },
	{ 63, UINT64_MAX, false, 1 },
	{ 64, UINT64_MAX, true, 36 },	/* capped at the end of the area */
	{ 99, UINT64_MAX, true, 1 },
	{ 100, UINT64_MAX, true, 0 },	/* outside the area */
	{ 100, UINT64_MAX, false, 0 },
};

ParameterizedTestParameters(vma, run_lengths)
{
	return cr_make_param_array(struct run_case, run_cases,
				   sizeof(run_cases) / sizeof(run_cases[0]));
}

ParameterizedTest(struct run_case *c, vma, run_lengths)
{
	uint64_t base = 0x3000000;
	struct model m;
	struct area *v;

	model_init(&m);
	cr_assert_eq(model_add(&m, base, base + 100 * P, 0), 0);
	cr_assert_eq(model_add(&m, base + 100 * P, base + 200 * P, 0x8000000), 0);
	model_mark_missing(&m, base + 10 * P, base + 30 * P);
	model_mark_missing(&m, base + 50 * P, base + 51 * P);
	model_mark_missing(&m, base + 64 * P, base + 120 * P);
	v = model_find(&m, base);
	cr_assert_eq(area_run(v, base + c->page * P, c->limit, c->want), c->pages * P);
	model_free(&m);
}

/* Runs of an area with nothing missing, and with everything missing. */
Test(model, run_lengths_of_uniform_areas)
{
	struct model m;
	struct area *v;
	uint64_t a;

	model_init(&m);
	cr_assert_eq(model_add(&m, 0x1000, 0x81000, 0x1000), 0);
	v = model_find(&m, 0x1000);
	cr_assert_eq(area_run(v, 0x2000, UINT64_MAX, false), 0x7f000);
	cr_assert_eq(area_run(v, 0x2000, UINT64_MAX, true), 0);
	cr_assert_not(area_is_missing(v, 0x2000));
	cr_assert_not(model_next_missing(&m, 0, &a));
	cr_assert_eq(model_mark_missing(&m, 0, 0x100000), 0x80);
	cr_assert_eq(area_run(v, 0x2000, UINT64_MAX, true), 0x7f000);
	cr_assert_eq(area_run(v, 0x2000, 0x3000, true), 0x3000);
	cr_assert_eq(area_run(v, 0x2000, UINT64_MAX, false), 0);
	cr_assert(model_next_missing(&m, 0, &a));
	cr_assert_eq(a, 0x1000);
	cr_assert_not(model_next_missing(&m, 0x81000, &a));
	model_free(&m);
}

/* first/find/next at the edges of areas and of the address space. */
Test(model, lookups_at_edges)
{
	struct model m;
	struct area *a, *b;
	uint64_t top = 0xfffffffffffff000ull, x;

	model_init(&m);
	cr_assert_null(model_first(&m, 0));
	cr_assert_null(model_find(&m, 0));
	cr_assert_not(model_next_missing(&m, 0, &x));
	cr_assert_eq(model_add(&m, 0, 0x3000, 0x100000), 0);
	cr_assert_eq(model_add(&m, top - 0x2000, top, 0x200000), 0);
	a = model_find(&m, 0);
	b = model_find(&m, top - P);
	cr_assert(a && b && a != b);
	cr_assert_null(model_find(&m, 0x3000));
	cr_assert_null(model_find(&m, top));
	cr_assert_eq(model_first(&m, 0x2000), a);
	cr_assert_eq(model_first(&m, 0x3000), b);
	cr_assert_eq(model_first(&m, top - 0x2001), b);
	cr_assert_null(model_first(&m, top));
	cr_assert_null(model_first(&m, UINT64_MAX));
	cr_assert_eq(model_next(&m, a), b);
	cr_assert_null(model_next(&m, b));
	cr_assert_eq(model_mark_missing(&m, 0x1000, UINT64_MAX & ~(P - 1)), 4);
	cr_assert(model_next_missing(&m, 0, &x));
	cr_assert_eq(x, 0x1000);
	cr_assert(model_next_missing(&m, 0x3000, &x));
	cr_assert_eq(x, top - 0x2000);
	cr_assert_not(model_next_missing(&m, top, &x));
	cr_assert_eq(area_img_addr(b, top - P), 0x201000);
	/* Move the top area down next to the first: not merged, images are apart. */
	cr_assert_eq(model_remap(&m, top - 0x2000, 0x3000, 0x2000), 0);
	cr_assert_eq(m.nr_areas, 2);
	cr_assert_eq(m.nr_missing, 4);
	cr_assert_eq(model_check(&m), 0);
	model_free(&m);
}

struct bad_remap {
	uint64_t from, to, len;
	int err;
};

static struct bad_remap bad_remaps[] = {
	{ 0x10800, 0x90000, 0x1000, -EINVAL },
	{ 0x10000, 0x90800, 0x1000, -EINVAL },
	{ 0x10000, 0x90000, 0x1800, -EINVAL },
	{ 0x10000, 0x90000, 0, -EINVAL },
	{ 0xfffffffffffff000ull, 0x90000, 0x2000, -EINVAL },
	{ 0x10000, 0xfffffffffffff000ull, 0x2000, -EINVAL },
	{ 0x10000, 0x10000, 0x4000, 0 },	/* no move at all */
};

ParameterizedTestParameters(vma, remap_rejects_bad_ranges)
{
	return cr_make_param_array(struct bad_remap, bad_remaps,
				   sizeof(bad_remaps) / sizeof(bad_remaps[0]));
}

ParameterizedTest(struct bad_remap *b, vma, remap_rejects_bad_ranges)
{
	struct model m;
	struct area *v;

	model_init(&m);
	cr_assert_eq(model_add(&m, 0x10000, 0x20000, 0x10000), 0);
	model_mark_missing(&m, 0x12000, 0x13000);
	cr_assert_eq(model_remap(&m, b->from, b->to, b->len), b->err);
	cr_assert_eq(model_check(&m), 0);
	v = model_find(&m, 0x10000);
	cr_assert(v && v->start == 0x10000 && v->end == 0x20000 && m.nr_areas == 1);
	cr_assert_eq(m.nr_missing, 1);
	cr_assert(area_is_missing(v, 0x12000));
	model_free(&m);
}

Test(model, unmap_rejects_bad_ranges)
{
	struct model m;

	model_init(&m);
	cr_assert_eq(model_add(&m, 0x10000, 0x20000, 0x10000), 0);
	cr_assert_eq(model_unmap(&m, 0x10800, 0x20000), -EINVAL);
	cr_assert_eq(model_unmap(&m, 0x10000, 0x1f800), -EINVAL);
	cr_assert_eq(model_unmap(&m, 0x14000, 0x14000), -EINVAL);
	cr_assert_eq(model_unmap(&m, 0x14000, 0x13000), -EINVAL);
	cr_assert_eq(m.nr_pages, 16);
	cr_assert_eq(model_unmap(&m, 0, UINT64_MAX & ~(P - 1)), 0);
	cr_assert_eq(m.nr_pages, 0);
	cr_assert_eq(m.nr_areas, 0);
	model_free(&m);
}

/*
 * An area is capped (128 TiB, all of the user address space): images are
 * untrusted, and a larger VMA would make the model allocate a bitmap of
 * more than 4 GiB (found by fuzz-images). Refused before allocating.
 */
Test(model, huge_area_refused)
{
	struct model m;
	uint64_t cap = MODEL_MAX_AREA_PAGES * MODEL_PAGE_SIZE, tib = 1ull << 40;

	model_init(&m);
	cr_expect_eq(model_add(&m, 0x10000000000ull, 0x10000000000ull + 2 * cap, 0x10000000000ull),
		     -E2BIG);
	cr_expect_eq(model_add(&m, 0, cap + MODEL_PAGE_SIZE, 0), -E2BIG);
	cr_expect_eq(m.nr_areas, 0);
	/* 14 TiB, as ASan's shadow: allowed (a 448 MiB bitmap, untouched until used). */
	cr_expect_eq(model_add(&m, 0, 14 * tib, 0), 0, "14 TiB is allowed");
	cr_expect_eq(model_mem_bytes(&m) >= 14 * tib / MODEL_PAGE_SIZE / 8, true);
	model_free(&m);
}

/*
 * A hugetlb area (model_add_sized) must be aligned to its page size, keeps
 * that size through splits, moves and clones, and is never merged with a
 * touching normal area of the next image address.
 */
Test(vma, hugetlb_areas_keep_their_page_size)
{
	const uint64_t H = 2ull << 20;
	struct model m, c;
	struct area *v;

	model_init(&m);
	model_init(&c);
	cr_assert_eq(model_add_sized(&m, H + P, 3 * H, H + P, 21), -EINVAL, "unaligned start");
	cr_assert_eq(model_add_sized(&m, H, 3 * H, H + P, 21), -EINVAL, "unaligned image address");
	cr_assert_eq(model_add_sized(&m, H, 3 * H - P, H, 21), -EINVAL, "unaligned end");
	cr_assert_eq(model_add_sized(&m, H, 3 * H, H, 12), -EINVAL, "a 4 KiB huge page");
	cr_assert_eq(m.nr_areas, 0);
	cr_assert_eq(model_add_sized(&m, H, 3 * H, H, 21), 0);
	/* Touching in the process and the image: merged if it were the same size. */
	cr_assert_eq(model_add(&m, 3 * H, 3 * H + 4 * P, 3 * H), 0);
	cr_assert_eq(model_check(&m), 0);
	cr_assert_eq(m.nr_areas, 2, "a hugetlb area merged with a normal one");
	cr_assert_eq(model_find(&m, 2 * H)->hshift, 21);
	cr_assert_eq(model_find(&m, 3 * H)->hshift, 0);
	model_mark_missing(&m, H, 3 * H);
	/* Move the second huge page away: both parts stay hugetlb. */
	cr_assert_eq(model_remap(&m, 2 * H, 8 * H, H), 0);
	cr_assert_eq(model_check(&m), 0);
	v = model_find(&m, 8 * H);
	cr_assert_not_null(v);
	cr_assert_eq(v->hshift, 21);
	cr_assert_eq(area_img_addr(v, 8 * H), 2 * H);
	cr_assert_eq(model_find(&m, H)->hshift, 21);
	cr_assert_eq(model_clone(&c, &m), 0);
	cr_assert_eq(model_find(&c, 8 * H)->hshift, 21);
	cr_assert_eq(model_find(&c, 3 * H)->hshift, 0);
	model_free(&c);
	model_free(&m);
}

/*
 * An area of shared memory (model_add_kind) keeps that kind through splits,
 * moves and clones (a forked child serves the same object), and is never
 * merged with a touching private area of the next image address.
 */
Test(vma, shared_areas_stay_shared)
{
	struct model m, c;
	struct area *v;

	model_init(&m);
	model_init(&c);
	cr_assert_eq(model_add_kind(&m, 16 * P, 32 * P, 16 * P, 0, true), 0);
	cr_assert_eq(model_add(&m, 32 * P, 40 * P, 32 * P), 0);
	cr_assert_eq(model_check(&m), 0);
	cr_assert_eq(m.nr_areas, 2, "a shared area merged with a private one");
	cr_assert(model_find(&m, 31 * P)->shared);
	cr_assert(!model_find(&m, 32 * P)->shared);
	cr_assert_eq(model_first_shared(&m), model_find(&m, 16 * P));
	model_mark_missing(&m, 16 * P, 40 * P);
	/* Move the middle of the shared area away: all three parts stay shared. */
	cr_assert_eq(model_remap(&m, 20 * P, 100 * P, 4 * P), 0);
	cr_assert_eq(model_check(&m), 0);
	v = model_find(&m, 100 * P);
	cr_assert_not_null(v);
	cr_assert(v->shared);
	cr_assert_eq(area_img_addr(v, 100 * P), 20 * P);
	cr_assert(model_find(&m, 16 * P)->shared);
	cr_assert(model_find(&m, 24 * P)->shared);
	cr_assert_eq(model_clone(&c, &m), 0);
	cr_assert(model_find(&c, 100 * P)->shared);
	cr_assert(model_find(&c, 24 * P)->shared);
	cr_assert(!model_find(&c, 32 * P)->shared);
	/* REMOVE (MADV_DONTNEED) over both: the private pages become zero, the shared stay missing. */
	cr_assert_eq(model_remove(&c, 16 * P, 40 * P), 8);
	cr_assert(area_is_missing(model_find(&c, 24 * P), 24 * P));
	cr_assert(!area_is_missing(model_find(&c, 33 * P), 33 * P));
	cr_assert_eq(c.nr_missing, 16);
	cr_assert_eq(model_check(&c), 0);
	model_free(&c);
	model_free(&m);
	cr_assert_null(model_first_shared(&m));
}
