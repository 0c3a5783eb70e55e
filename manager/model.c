/*
 * The per-process memory model: an AVL tree of areas, each with a bitmap of
 * missing pages.
 *
 * Structural changes are built from two steps that keep the model's meaning:
 * area_split() cuts an area in two at an address (the one step that needs
 * memory for more than a merge), and area_merge() joins neighbours that are
 * contiguous in the process and in the image. A split keeps the left part's
 * bitmap at its old size, so undoing it needs no memory; settle_range() then
 * merges what can be merged and trims the spare capacity. Operations do all
 * their splits first and change nothing else until every split succeeded, so
 * -ENOMEM leaves the pages as they were.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#define WORD_BITS	64

static uint64_t nwords(uint64_t bits)
{
	return (bits + WORD_BITS - 1) / WORD_BITS;
}

/* Mask of bits [lo, hi) of a word, 0 <= lo < hi <= 64. */
static uint64_t word_mask(unsigned lo, unsigned hi)
{
	uint64_t m = hi == WORD_BITS ? ~0ull : (1ull << hi) - 1;

	return m & (~0ull << lo);
}

/* Set (or clear) bits [lo, hi) of B; return how many changed. */
static uint64_t bits_assign(uint64_t *b, uint64_t lo, uint64_t hi, bool set)
{
	uint64_t changed = 0;

	while (lo < hi) {
		uint64_t w = lo / WORD_BITS;
		uint64_t top = hi - w * WORD_BITS;
		unsigned h = top > WORD_BITS ? WORD_BITS : (unsigned)top;
		uint64_t mask = word_mask(lo % WORD_BITS, h);

		/* Whole words that flip entirely (a new area, a filled chunk): no popcount. */
		if (mask == ~0ull && b[w] == (set ? 0 : ~0ull)) {
			b[w] = set ? ~0ull : 0;
			changed += WORD_BITS;
		} else if (set) {
			changed += __builtin_popcountll(~b[w] & mask);
			b[w] |= mask;
		} else {
			changed += __builtin_popcountll(b[w] & mask);
			b[w] &= ~mask;
		}
		lo = w * WORD_BITS + h;
	}
	return changed;
}

/*
 * Set (or clear) bits [lo, hi) of B, all of which are known to be clear (set):
 * whole words by memset. Returns hi - lo, the number that changed.
 */
static uint64_t bits_flip_all(uint64_t *b, uint64_t lo, uint64_t hi, bool set)
{
	uint64_t wlo = (lo + WORD_BITS - 1) / WORD_BITS, whi = hi / WORD_BITS;

	if (wlo >= whi)
		return bits_assign(b, lo, hi, set);
	bits_assign(b, lo, wlo * WORD_BITS, set);
	memset(b + wlo, set ? 0xff : 0, (whi - wlo) * sizeof(*b));
	bits_assign(b, whi * WORD_BITS, hi, set);
	return hi - lo;
}

/* Count the set bits in [lo, hi) of B. */
static uint64_t bits_count(const uint64_t *b, uint64_t lo, uint64_t hi)
{
	uint64_t n = 0;

	while (lo < hi) {
		uint64_t w = lo / WORD_BITS;
		uint64_t top = hi - w * WORD_BITS;
		unsigned h = top > WORD_BITS ? WORD_BITS : (unsigned)top;

		n += __builtin_popcountll(b[w] & word_mask(lo % WORD_BITS, h));
		lo = w * WORD_BITS + h;
	}
	return n;
}

/* Return the first index in [lo, hi) whose bit is WANT, or hi. */
static uint64_t bits_find(const uint64_t *b, uint64_t lo, uint64_t hi, bool want)
{
	while (lo < hi) {
		uint64_t w = lo / WORD_BITS;
		uint64_t x = want ? b[w] : ~b[w];

		x &= ~0ull << (lo % WORD_BITS);
		if (x) {
			uint64_t i = w * WORD_BITS + __builtin_ctzll(x);

			return i < hi ? i : hi;
		}
		lo = (w + 1) * WORD_BITS;
	}
	return hi;
}

/* Read N (1..64) bits of B starting at bit POS, without touching words past them. */
static uint64_t bits_get(const uint64_t *b, uint64_t pos, unsigned n)
{
	uint64_t w = pos / WORD_BITS;
	unsigned o = pos % WORD_BITS;
	uint64_t x = b[w] >> o;

	if (o && o + n > WORD_BITS)
		x |= b[w + 1] << (WORD_BITS - o);
	return n == WORD_BITS ? x : x & ((1ull << n) - 1);
}

/* Copy N bits from SRC at bit SOFF to DST at bit DOFF (distinct buffers), a word at a time. */
static void bits_copy(uint64_t *dst, uint64_t doff, const uint64_t *src, uint64_t soff,
		      uint64_t n)
{
	uint64_t done = 0;

	while (done < n) {
		uint64_t d = doff + done;
		unsigned o = d % WORD_BITS;
		uint64_t k = n - done < WORD_BITS - o ? n - done : WORD_BITS - o;
		uint64_t mask = word_mask(o, o + (unsigned)k);
		uint64_t val = bits_get(src, soff + done, (unsigned)k);

		dst[d / WORD_BITS] = (dst[d / WORD_BITS] & ~mask) | (val << o);
		done += k;
	}
}

/* Count down the test hook; true when this allocation must fail. */
static bool alloc_fails(struct model *m)
{
	if (m->fail_alloc == 0)
		return false;
	return --m->fail_alloc == 0;
}

/* Allocate a detached area [start, end) with a zeroed bitmap, or NULL. */
static struct area *area_new(struct model *m, uint64_t start, uint64_t end, uint64_t img)
{
	uint64_t words = nwords((end - start) >> MODEL_PAGE_SHIFT);
	struct area *v;

	if (words > SIZE_MAX / sizeof(uint64_t) || alloc_fails(m))
		return NULL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	if (alloc_fails(m) || !(v->missing = calloc(words, sizeof(uint64_t)))) {
		free(v);
		return NULL;
	}
	v->link.cap = words;
	v->start = start;
	v->end = end;
	v->img = img;
	return v;
}

static void area_free(struct area *v)
{
	free(v->missing);
	free(v);
}

static int height(const struct area *t)
{
	return t ? t->link.height : 0;
}

static void fix_height(struct area *t)
{
	int l = height(t->link.left), r = height(t->link.right);

	t->link.height = 1 + (l > r ? l : r);
}

static struct area *rotate_right(struct area *t)
{
	struct area *l = t->link.left;

	t->link.left = l->link.right;
	l->link.right = t;
	fix_height(t);
	fix_height(l);
	return l;
}

static struct area *rotate_left(struct area *t)
{
	struct area *r = t->link.right;

	t->link.right = r->link.left;
	r->link.left = t;
	fix_height(t);
	fix_height(r);
	return r;
}

/* Restore the AVL balance at T, whose subtrees differ in height by 2 at most; return the new root. */
static struct area *rebalance(struct area *t)
{
	struct area *l = t->link.left, *r = t->link.right;
	int bf = height(l) - height(r);

	if (bf > 1) {
		if (height(l->link.left) < height(l->link.right))
			t->link.left = rotate_left(l);
		return rotate_right(t);
	}
	if (bf < -1) {
		if (height(r->link.right) < height(r->link.left))
			t->link.right = rotate_right(r);
		return rotate_left(t);
	}
	fix_height(t);
	return t;
}

/* Insert V into the subtree T; note the nearest nodes on either side. */
static struct area *tree_insert(struct area *t, struct area *v, struct area **pred,
			       struct area **succ)
{
	if (!t) {
		v->link.left = v->link.right = NULL;
		v->link.height = 1;
		return v;
	}
	if (v->start < t->start) {
		*succ = t;
		t->link.left = tree_insert(t->link.left, v, pred, succ);
	} else {
		*pred = t;
		t->link.right = tree_insert(t->link.right, v, pred, succ);
	}
	return rebalance(t);
}

/* Unhook the leftmost node of T into *MIN; return what is left of T. */
static struct area *tree_remove_min(struct area *t, struct area **min)
{
	if (!t->link.left) {
		*min = t;
		return t->link.right;
	}
	t->link.left = tree_remove_min(t->link.left, min);
	return rebalance(t);
}

/* Remove V from the subtree T (keys are unique start addresses). */
static struct area *tree_remove(struct area *t, const struct area *v)
{
	struct area *min, *r;

	if (!t)
		return NULL;
	if (v->start < t->start) {
		t->link.left = tree_remove(t->link.left, v);
	} else if (v->start > t->start) {
		t->link.right = tree_remove(t->link.right, v);
	} else {
		if (!t->link.right)
			return t->link.left;
		r = tree_remove_min(t->link.right, &min);
		min->link.left = t->link.left;
		min->link.right = r;
		t = min;
	}
	return rebalance(t);
}

/* Put the detached area V in M; it must not overlap any area. */
static void area_attach(struct model *m, struct area *v)
{
	struct area *pred = NULL, *succ = NULL;

	m->root = tree_insert(m->root, v, &pred, &succ);
	v->link.prev = pred;
	v->link.next = succ;
	if (pred)
		pred->link.next = v;
	if (succ)
		succ->link.prev = v;
	m->nr_areas++;
	m->nr_pages += area_nr_pages(v);
	m->nr_missing += v->nr_missing;
}

/* Take V out of M without freeing it. */
static void area_detach(struct model *m, struct area *v)
{
	m->root = tree_remove(m->root, v);
	if (v->link.prev)
		v->link.prev->link.next = v->link.next;
	if (v->link.next)
		v->link.next->link.prev = v->link.prev;
	v->link.prev = v->link.next = NULL;
	m->nr_areas--;
	m->nr_pages -= area_nr_pages(v);
	m->nr_missing -= v->nr_missing;
}

/* Whether B continues A both in the process and in the image. */
static bool mergeable(const struct area *a, const struct area *b)
{
	return a->end == b->start && a->img + (a->end - a->start) == b->img &&
	       a->hshift == b->hshift && a->shared == b->shared;
}

/* Absorb B, A's mergeable successor, into A. -ENOMEM leaves both as they were. */
static int area_merge(struct model *m, struct area *a, struct area *b)
{
	uint64_t pa = area_nr_pages(a), pb = area_nr_pages(b);
	uint64_t need = nwords(pa + pb);

	if (need > a->link.cap) {
		uint64_t *p = NULL;

		if (need <= SIZE_MAX / sizeof(uint64_t) && !alloc_fails(m))
			p = realloc(a->missing, need * sizeof(uint64_t));
		if (!p)
			return -ENOMEM;
		memset(p + a->link.cap, 0, (need - a->link.cap) * sizeof(uint64_t));
		a->missing = p;
		a->link.cap = need;
	}
	if (b->nr_missing)
		bits_copy(a->missing, pa, b->missing, 0, pb);
	area_detach(m, b);
	a->end = b->end;
	a->nr_missing += b->nr_missing;
	m->nr_pages += pb;
	m->nr_missing += b->nr_missing;
	area_free(b);
	return 0;
}

/* Give back bitmap capacity V no longer needs (left over by a split). */
static void area_trim(struct area *v)
{
	uint64_t need = nwords(area_nr_pages(v));
	uint64_t *p;

	if (need >= v->link.cap)
		return;
	p = realloc(v->missing, need * sizeof(uint64_t));
	if (p) {
		v->missing = p;
		v->link.cap = need;
	}
}

/*
 * Make ADDR an area boundary if an area straddles it. The left part keeps the
 * node and the whole bitmap, so merging the two back needs no memory.
 */
static int area_split(struct model *m, uint64_t addr)
{
	struct area *v = model_find(m, addr), *r;
	uint64_t at, n;

	if (!v || v->start == addr)
		return 0;
	at = (addr - v->start) >> MODEL_PAGE_SHIFT;
	n = area_nr_pages(v) - at;
	r = area_new(m, addr, v->end, v->img + (addr - v->start));
	if (!r)
		return -ENOMEM;
	r->hshift = v->hshift;
	r->shared = v->shared;
	if (v->nr_missing) {
		bits_copy(r->missing, 0, v->missing, at, n);
		r->nr_missing = bits_assign(v->missing, at, at + n, false);
	}
	v->end = addr;
	v->nr_missing -= r->nr_missing;
	m->nr_pages -= n;
	m->nr_missing -= r->nr_missing;
	area_attach(m, r);
	return 0;
}

/*
 * Merge the neighbours that meet at a boundary in [lo, hi] and trim spare
 * bitmap capacity of the areas there. Best effort: a merge that finds no
 * memory leaves two areas, which mean the same pages.
 */
static void settle_range(struct model *m, uint64_t lo, uint64_t hi)
{
	struct area *v = model_first(m, lo ? lo - 1 : 0), *n;

	while (v && v->start <= hi) {
		n = v->link.next;
		if (n && v->end <= hi && mergeable(v, n) && area_merge(m, v, n) == 0)
			continue;
		area_trim(v);
		v = n;
	}
}

static bool aligned(uint64_t x)
{
	return (x & (MODEL_PAGE_SIZE - 1)) == 0;
}

/* Page index in V of ADDR clamped to V; ROUND_UP counts a partial page in. */
static uint64_t page_index(const struct area *v, uint64_t addr, bool round_up)
{
	if (addr <= v->start)
		return 0;
	if (addr >= v->end)
		return area_nr_pages(v);
	return (addr - v->start + (round_up ? MODEL_PAGE_SIZE - 1 : 0)) >> MODEL_PAGE_SHIFT;
}

void model_init(struct model *m)
{
	memset(m, 0, sizeof(*m));
}

void model_free(struct model *m)
{
	struct area *v = model_first(m, 0), *n;

	for (; v; v = n) {
		n = v->link.next;
		area_free(v);
	}
	model_init(m);
}

struct area *model_first_shared(const struct model *m)
{
	struct area *v;

	for (v = model_first(m, 0); v && !v->shared; v = v->link.next)
		;
	return v;
}

int model_add(struct model *m, uint64_t start, uint64_t end, uint64_t img)
{
	return model_add_sized(m, start, end, img, 0);
}

int model_add_sized(struct model *m, uint64_t start, uint64_t end, uint64_t img, unsigned hshift)
{
	return model_add_kind(m, start, end, img, hshift, false);
}

int model_add_kind(struct model *m, uint64_t start, uint64_t end, uint64_t img, unsigned hshift,
		   bool shared)
{
	uint64_t hmask = hshift ? (1ull << hshift) - 1 : 0;
	struct area *v;

	if (!aligned(start) || !aligned(end) || !aligned(img) || start >= end ||
	    img > UINT64_MAX - (end - start) || (hshift && (hshift <= MODEL_PAGE_SHIFT ||
	    hshift > 40 || ((start | end | img) & hmask))))
		return -EINVAL;
	if ((end - start) >> MODEL_PAGE_SHIFT > MODEL_MAX_AREA_PAGES)
		return -E2BIG;
	v = model_first(m, start);
	if (v && v->start < end)
		return -EEXIST;
	v = area_new(m, start, end, img);
	if (!v)
		return -ENOMEM;
	v->hshift = hshift;
	v->shared = shared;
	area_attach(m, v);
	settle_range(m, start, end);
	return 0;
}

uint64_t model_mark_missing(struct model *m, uint64_t start, uint64_t end)
{
	struct area *v;
	uint64_t k, n = 0;

	for (v = model_first(m, start); v && v->start < end; v = v->link.next) {
		uint64_t lo = page_index(v, start, false), hi = page_index(v, end, true);

		/* A new area has no page missing: mark it with memset, not bit by bit. */
		k = v->nr_missing ? bits_assign(v->missing, lo, hi, true) :
				    bits_flip_all(v->missing, lo, hi, true);
		v->nr_missing += k;
		n += k;
	}
	m->nr_missing += n;
	return n;
}

uint64_t model_clear(struct model *m, uint64_t start, uint64_t end)
{
	struct area *v;
	uint64_t k, n = 0;

	for (v = model_first(m, start); v && v->start < end; v = v->link.next) {
		if (!v->nr_missing)
			continue;
		k = bits_assign(v->missing, page_index(v, start, false),
				page_index(v, end, true), false);
		v->nr_missing -= k;
		n += k;
	}
	m->nr_missing -= n;
	return n;
}

uint64_t model_remove(struct model *m, uint64_t start, uint64_t end)
{
	struct area *v;
	uint64_t n = 0;

	for (v = model_first(m, start); v && v->start < end; v = v->link.next)
		if (!v->shared)
			n += model_clear(m, v->start > start ? v->start : start,
					 v->end < end ? v->end : end);
	return n;
}

struct area *model_first(const struct model *m, uint64_t addr)
{
	struct area *t = m->root, *best = NULL;

	while (t) {
		if (t->end > addr) {
			best = t;
			t = t->link.left;
		} else {
			t = t->link.right;
		}
	}
	return best;
}

struct area *model_find(const struct model *m, uint64_t addr)
{
	struct area *v = model_first(m, addr);

	return v && v->start <= addr ? v : NULL;
}

struct area *model_next(const struct model *m, const struct area *v)
{
	(void)m;
	return v->link.next;
}

bool area_is_missing(const struct area *v, uint64_t addr)
{
	uint64_t i;

	if (addr < v->start || addr >= v->end || !v->nr_missing)
		return false;
	i = (addr - v->start) >> MODEL_PAGE_SHIFT;
	return v->missing[i / WORD_BITS] >> (i % WORD_BITS) & 1;
}

uint64_t area_img_addr(const struct area *v, uint64_t addr)
{
	return v->img + (addr - v->start);
}

uint64_t area_run(const struct area *v, uint64_t addr, uint64_t limit, bool want)
{
	uint64_t lo, hi, stop, room;

	if (addr < v->start || addr >= v->end)
		return 0;
	room = v->end - addr;
	lo = (addr - v->start) >> MODEL_PAGE_SHIFT;
	hi = lo + ((limit < room ? limit : room) >> MODEL_PAGE_SHIFT);
	if (!v->nr_missing)
		stop = want ? lo : hi;
	else if (want && v->nr_missing == area_nr_pages(v))
		stop = hi;
	else
		stop = bits_find(v->missing, lo, hi, !want);
	return (stop - lo) << MODEL_PAGE_SHIFT;
}

bool model_next_missing(const struct model *m, uint64_t addr, uint64_t *out)
{
	const struct area *v;
	uint64_t i, n;

	for (v = model_first(m, addr); v; v = v->link.next) {
		if (!v->nr_missing)
			continue;
		n = area_nr_pages(v);
		i = bits_find(v->missing, page_index(v, addr, false), n, true);
		if (i < n) {
			*out = v->start + (i << MODEL_PAGE_SHIFT);
			return true;
		}
	}
	return false;
}

int model_unmap(struct model *m, uint64_t start, uint64_t end)
{
	struct area *v, *n;
	int ret;

	if (!aligned(start) || !aligned(end) || start >= end)
		return -EINVAL;
	ret = area_split(m, start);
	if (ret < 0)
		return ret;
	ret = area_split(m, end);
	if (ret < 0) {
		settle_range(m, start, start);
		return ret;
	}
	for (v = model_first(m, start); v && v->start < end; v = n) {
		n = v->link.next;
		area_detach(m, v);
		area_free(v);
	}
	settle_range(m, start, end);
	return 0;
}

int model_remap(struct model *m, uint64_t from, uint64_t to, uint64_t len)
{
	uint64_t cut[4] = { from, from + len, to, to + len };
	struct area *v, *n, *moved = NULL, **tail = &moved;
	int i, ret;

	if (!aligned(from) || !aligned(to) || !aligned(len) || !len ||
	    len > UINT64_MAX - from || len > UINT64_MAX - to)
		return -EINVAL;
	if (from == to)
		return 0;
	for (i = 0; i < 4; i++) {
		ret = area_split(m, cut[i]);
		if (ret < 0) {
			while (i--)
				settle_range(m, cut[i], cut[i]);
			return ret;
		}
	}
	/* Every area now lies wholly inside or outside each range. */
	for (v = model_first(m, from); v && v->start < from + len; v = n) {
		n = v->link.next;
		area_detach(m, v);
		*tail = v;
		tail = &v->link.next;
	}
	for (v = model_first(m, to); v && v->start < to + len; v = n) {
		n = v->link.next;
		area_detach(m, v);
		area_free(v);
	}
	for (v = moved; v; v = n) {
		n = v->link.next;
		v->start += to - from;
		v->end += to - from;
		area_attach(m, v);
	}
	/* Splits left spare bitmaps only on areas ending at to or from; the rest moved. */
	settle_range(m, to, to + len);
	settle_range(m, from, from);
	return 0;
}

int model_clone(struct model *dst, const struct model *src)
{
	const struct area *v;
	struct area *c;

	if (dst->nr_areas)
		return -EBUSY;
	for (v = model_first(src, 0); v; v = v->link.next) {
		c = area_new(dst, v->start, v->end, v->img);
		if (!c) {
			model_free(dst);
			return -ENOMEM;
		}
		c->hshift = v->hshift;
		c->shared = v->shared;
		memcpy(c->missing, v->missing, c->link.cap * sizeof(uint64_t));
		c->nr_missing = v->nr_missing;
		area_attach(dst, c);
	}
	return 0;
}

size_t model_mem_bytes(const struct model *m)
{
	const struct area *v;
	size_t n = 0;

	for (v = model_first(m, 0); v; v = v->link.next)
		n += sizeof(*v) + v->link.cap * sizeof(uint64_t);
	return n;
}

void model_fail_alloc(struct model *m, unsigned nth)
{
	m->fail_alloc = nth;
}

#define CHECK(cond) do { if (!(cond)) return -__LINE__; } while (0)

/* Check the subtree T: heights, balance, key order within (lo, hi). Return its height or -line. */
static int check_tree(const struct area *t, uint64_t lo, uint64_t hi, bool open_lo)
{
	int l, r;

	if (!t)
		return 0;
	CHECK(open_lo ? t->start >= lo : t->start > lo);
	CHECK(t->start < hi);
	l = check_tree(t->link.left, lo, t->start, open_lo);
	if (l < 0)
		return l;
	r = check_tree(t->link.right, t->start, hi, false);
	if (r < 0)
		return r;
	CHECK(l - r <= 1 && r - l <= 1);
	CHECK(t->link.height == 1 + (l > r ? l : r));
	return t->link.height;
}

int model_check(const struct model *m)
{
	const struct area *v, *prev = NULL;
	uint64_t pages = 0, missing = 0, n;
	size_t areas = 0;
	int h;

	h = check_tree(m->root, 0, UINT64_MAX, true);
	if (h < 0)
		return h;
	for (v = model_first(m, 0); v; prev = v, v = v->link.next) {
		CHECK(v->link.prev == prev);
		CHECK(aligned(v->start) && aligned(v->end) && aligned(v->img));
		CHECK(v->start < v->end);
		CHECK(v->img <= UINT64_MAX - (v->end - v->start));
		CHECK(!prev || prev->end <= v->start);
		CHECK(model_find(m, v->start) == v);
		CHECK(model_find(m, v->end - MODEL_PAGE_SIZE) == v);
		n = area_nr_pages(v);
		CHECK(v->missing && v->link.cap >= nwords(n));
		CHECK(bits_count(v->missing, 0, n) == v->nr_missing);
		CHECK(bits_count(v->missing, n, v->link.cap * WORD_BITS) == 0);
		areas++;
		pages += n;
		missing += v->nr_missing;
		CHECK(areas <= m->nr_areas);
	}
	CHECK(areas == m->nr_areas);
	CHECK(pages == m->nr_pages);
	CHECK(missing == m->nr_missing);
	return 0;
}
