/*
 * The pagemap index of one task: which image bytes back each address.
 * Built from pagemap-PID.img, its pages file and the `parent` chain of an
 * incremental dump; validated whole at load so lookups cannot fail.
 */
#ifndef UFFD_PAGEMAP_H
#define UFFD_PAGEMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "image.h"
#include "pages.h"

#define PAGE_SIZE_4K	4096ull

/* pagemap_entry.flags, as CRIU defines them. */
#define PE_PARENT	(1u << 0)
#define PE_LAZY		(1u << 1)
#define PE_PRESENT	(1u << 2)
/*
 * Ours, not CRIU's (CRIU 4.2 uses bits 0-2 only; crit prints it as 0x8): the
 * page could not be read at dump time (hardware poison, a swap read error)
 * and must fault with SIGBUS. Always together with PE_PRESENT, with a page
 * of zeros in the pages file in its place, so that CRIU, which does not
 * know the bit, keeps its offsets into the pages file right.
 */
#define PE_POISON	(1u << 3)

/* How far an incremental dump's `parent` links are followed. */
#define PAGEMAP_MAX_DEPTH	64

struct pm_entry {
	uint64_t start;
	uint64_t end;
	uint32_t flags;		/* after the compat rules: PRESENT or PARENT or neither (then LAZY: data elsewhere), maybe with LAZY; POISON only with PRESENT */
	uint32_t xpf;		/* 0: the data is in the pagemap's own pages file; K: in xpf[K-1] (shared memory) */
	uint64_t off;		/* byte offset in the pages file, for PE_PRESENT */
};

struct pagemap {
	char name[PAGEMAP_MAX_DEPTH * 7 + 32];	/* "pagemap-PID.img", or "parent/.../pagemap-PID.img" */
	uint32_t pid;
	uint32_t pages_id;
	struct pm_entry *e;
	size_t n;
	struct pages_file *pages;	/* NULL when no entry is PE_PRESENT */
	struct pagemap *parent;		/* the same task in the parent dump, if needed */
	/*
	 * The pages files of the shared memory objects its areas map (imgtask.c
	 * adds their entries, at the addresses the areas give them); not owned:
	 * they live as long as the task's shm set.
	 */
	const struct pages_file **xpf;
	uint32_t nxpf;
	uint64_t shm_pages;		/* of those entries (not in present_pages) */
	uint64_t present_pages;
	uint64_t lazy_pages;
	uint64_t parent_pages;
	uint64_t poison_pages;
};

/* Where the bytes at an address come from. */
enum pm_src {
	PM_HOLE,	/* not in the pagemap: the page was zero or never touched */
	PM_DATA,	/* in PF at OFF (possibly found through parent links) */
	PM_NODATA,	/* listed lazy, but its data is not in these images (remote dump) */
	PM_POISON,	/* PE_POISON (possibly through parent links): SIGBUS on touch */
};

struct pm_run {
	enum pm_src src;
	uint32_t flags;		/* of the entry in the top pagemap; 0 for holes */
	const struct pages_file *pf;
	uint64_t off;
	uint64_t len;		/* bytes from the address that share this source, contiguously */
};

/*
 * Load pagemap-PID.img from DIRFD with its pages file and parents. Every
 * problem is reported in ERR naming the file and record. Returns 0 or -errno.
 */
int pagemap_load(struct pagemap **out, int dirfd, uint32_t pid, struct pages_cache *c,
		 struct img_err *err);
/*
 * The same, refusing (-E2BIG, as the entry is read, before allocating for
 * more) a chain of more than MAX_ENTRIES entries in all; 0: no limit.
 */
int pagemap_load_max(struct pagemap **out, int dirfd, uint32_t pid, struct pages_cache *c,
		     size_t max_entries, struct img_err *err);
void pagemap_free(struct pagemap *pm, struct pages_cache *c);

/*
 * Load pagemap-shmem-SHMID.img, the contents of one shared memory object
 * (CRIU 4.2): entries at byte offsets in the object, PE_PRESENT only, each
 * inside the object's SIZE bytes; with its pages file. At most MAX_ENTRIES
 * entries (0: no limit). -ENOENT when the file does not exist.
 */
int pagemap_load_shmem(struct pagemap **out, int dirfd, uint32_t shmid, uint64_t size,
		       struct pages_cache *c, size_t max_entries, struct img_err *err);

/* The entry that holds ADDR, or NULL. O(log n). */
const struct pm_entry *pagemap_find(const struct pagemap *pm, uint64_t addr);

/* Describe the source of ADDR (page aligned) and how far it extends, up to LIMIT bytes. */
void pagemap_resolve(const struct pagemap *pm, uint64_t addr, uint64_t limit, struct pm_run *run);

/*
 * Describe the SIZE bytes at ADDR as one source, for a huge page (hugetlb)
 * that can only be placed whole: all data, back to back in one pages file
 * (maybe over several entries), all holes, or all poisoned, with the same
 * top-level flags throughout; RUN->len is then SIZE. -EINVAL when mixed.
 */
int pagemap_resolve_block(const struct pagemap *pm, uint64_t addr, uint64_t size,
			  struct pm_run *run);

#endif
