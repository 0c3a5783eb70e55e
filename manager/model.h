/*
 * The memory model of one served process: its lazy areas, in address order,
 * with one "missing" bit per page (still to be copied from the image).
 *
 * A page that is not missing is either present (copied) or zero (dropped by
 * MADV_DONTNEED/REMOVE, or never had data): a fault there is served with a
 * zero page, so one bit is enough. Each area also remembers the image address
 * of its first page; moves (REMAP) keep the image address of every page.
 *
 * The areas are the nodes of an AVL tree keyed by address (intrusive, no
 * allocation per lookup or per page) threaded by an address-ordered list.
 * Memory is one bit per page plus one small node per area. Neighbours that
 * are contiguous both in the process and in the image are kept merged.
 *
 * Knows nothing about sockets, uffd or image files. Addresses are page
 * aligned (4 KiB pages); int functions return 0 or -errno.
 */
#ifndef UFFD_MODEL_H
#define UFFD_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MODEL_PAGE_SHIFT	12
#define MODEL_PAGE_SIZE	(1ull << MODEL_PAGE_SHIFT)
/*
 * The largest area, in pages: 128 TiB, the whole of x86-64's user address
 * space (a 4 GiB bitmap, allocated lazily by the kernel). Real processes
 * have sparse areas of many TiB (sanitizer shadows, runtime reservations:
 * ASan's is 14 TiB), so the cap is no smaller; what one hand-over may make
 * the daemon allocate is capped before that, by model size (target.h's
 * TARGET_MAX_MODEL_BYTES). model_add refuses larger areas with -E2BIG.
 */
#define MODEL_MAX_AREA_PAGES	(1ull << 35)

struct area;

/* Private to model.c. */
struct area_link {
	struct area *left, *right;	/* tree */
	struct area *prev, *next;	/* address order */
	int height;
	uint64_t cap;			/* words allocated for the bitmap */
};

/* One lazy area. Read-only outside model.c. */
struct area {
	struct area_link link;
	uint64_t start, end;	/* current addresses */
	uint64_t img;		/* image address of start */
	uint64_t *missing;	/* bit i: page start + i * 4096 is missing */
	uint64_t nr_missing;
	/* serve_stale_for_good: ns of its first ENOENT no event explains, and ev_seq then */
	uint64_t stale_since, stale_seq;
	/*
	 * 0, or the log2 of the area's huge page size (hugetlb): its pages are
	 * missing and placed only in whole, aligned huge pages.
	 */
	unsigned hshift;
	/*
	 * Shared memory (MAP_SHARED anonymous: a shmem object every sharer
	 * maps). Its pages live in the object, not in this process: a page
	 * placed for one sharer is there for all, so a fault says which it
	 * is (serve.c): MISSING, not in the object (UFFDIO_COPY puts it
	 * there), or MINOR, in the object but not mapped here (UFFDIO_CONTINUE).
	 */
	bool shared;
	/* The fault window (serve.c): where the last window ended, and its size. */
	uint64_t seq_next;
	uint64_t seq_win;
};

/* All areas of one process. Zero-filled is the same as model_init(). */
struct model {
	struct area *root;	/* private */
	unsigned fail_alloc;	/* private: see model_fail_alloc() */
	size_t nr_areas;
	uint64_t nr_pages;	/* sum over areas */
	uint64_t nr_missing;	/* sum over areas */
};

void model_init(struct model *m);
/* Free every area; M is empty (and usable) afterwards. */
void model_free(struct model *m);

/*
 * Add the area [START, END) whose first page came from image address IMG, no
 * page missing. -EINVAL if unaligned, empty, or IMG + length overflows;
 * -EEXIST if it overlaps an area; -ENOMEM.
 */
int model_add(struct model *m, uint64_t start, uint64_t end, uint64_t img);
/*
 * The same for a hugetlb area of pages of 1 << HSHIFT bytes (0: normal
 * pages): START, END and IMG must be aligned to them (-EINVAL). It is
 * never merged with an area of another page size.
 */
int model_add_sized(struct model *m, uint64_t start, uint64_t end, uint64_t img, unsigned hshift);

/* The same, for an area of shared memory when SHARED (see struct area). */
int model_add_kind(struct model *m, uint64_t start, uint64_t end, uint64_t img, unsigned hshift,
		   bool shared);

/* The first area of shared memory, or NULL. O(n). */
struct area *model_first_shared(const struct model *m);

/* Mark every page of [START, END) that lies in an area missing; return how many were not. */
uint64_t model_mark_missing(struct model *m, uint64_t start, uint64_t end);

/* Clear the missing bit over [START, END) (copied, or REMOVE event); return how many were set. */
uint64_t model_clear(struct model *m, uint64_t start, uint64_t end);

/*
 * REMOVE event (MADV_DONTNEED, MADV_REMOVE) on [START, END): in private
 * memory its pages read zero from now on, never filled from the image
 * again. Shared memory keeps its missing pages: MADV_DONTNEED there only
 * unmaps, the object keeps its contents, and what the image holds must
 * still come back. (MADV_REMOVE, which also punches the object, makes the
 * same event: see uffd-inject(8) for what that leaves.) Returns how many
 * pages stopped being missing.
 */
uint64_t model_remove(struct model *m, uint64_t start, uint64_t end);

/* The area containing ADDR, or NULL. O(log n). */
struct area *model_find(const struct model *m, uint64_t addr);

/* The first area with end > ADDR, or NULL. O(log n). */
struct area *model_first(const struct model *m, uint64_t addr);

/* The area after V in address order, or NULL. O(1). */
struct area *model_next(const struct model *m, const struct area *v);

/* Whether the page at ADDR (inside V) is missing. */
bool area_is_missing(const struct area *v, uint64_t addr);

/* The image address of the page at ADDR (inside V). */
uint64_t area_img_addr(const struct area *v, uint64_t addr);

static inline uint64_t area_nr_pages(const struct area *v)
{
	return (v->end - v->start) >> MODEL_PAGE_SHIFT;
}

/*
 * Length in bytes of the run of pages from ADDR (inside V) whose missing bit
 * is WANT, capped at V's end and at LIMIT rounded down to whole pages.
 * 0 when the page at ADDR is not WANT or ADDR is outside V.
 */
uint64_t area_run(const struct area *v, uint64_t addr, uint64_t limit, bool want);

/* Find the first missing page at or after ADDR (no wrap): true with *OUT, or false. */
bool model_next_missing(const struct model *m, uint64_t addr, uint64_t *out);

/* UNMAP event: drop [START, END), splitting areas at the edges. -EINVAL, -ENOMEM. */
int model_unmap(struct model *m, uint64_t start, uint64_t end);

/*
 * REMAP event: mremap moved [FROM, FROM + LEN) to [TO, TO + LEN). What the
 * model held at the destination is dropped; the parts of areas inside the
 * source move there with their bits and image addresses; the ranges may
 * overlap. Parts of the source not in the model stay unknown at the
 * destination. -EINVAL, -ENOMEM (then the model is unchanged).
 */
int model_remap(struct model *m, uint64_t from, uint64_t to, uint64_t len);

/* FORK: make DST, initialized and empty, a deep copy of SRC. -EBUSY, -ENOMEM (DST left empty). */
int model_clone(struct model *dst, const struct model *src);

/* Heap bytes held by M (nodes and bitmaps). O(n). */
size_t model_mem_bytes(const struct model *m);

/*
 * Check every invariant (tree balance and order, list, no overlap, bitmap
 * counts and padding, counters). 0 if they hold, else minus the line of
 * model.c that found the fault. O(n + pages / 64); for tests and debugging.
 */
int model_check(const struct model *m);

/*
 * Test hook: make the NTH allocation M makes from now on fail, once, as if
 * out of memory (0: never). Lets tests walk every -ENOMEM path.
 */
void model_fail_alloc(struct model *m, unsigned nth);

#endif
