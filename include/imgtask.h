/* The tasks of an image directory and the memory images of each. */
#ifndef UFFD_IMGTASK_H
#define UFFD_IMGTASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "mm.pb-c.h"
#include "pagemap.h"
#include "shm.h"

/* Refuse image dirs that claim more tasks than any real tree has. */
#define IMG_MAX_TASKS	(1u << 20)

/* VMA status bits (vma_entry.status), as CRIU defines them. */
#define VMA_AREA_REGULAR	(1u << 0)
#define VMA_AREA_STACK		(1u << 1)
#define VMA_AREA_VSYSCALL	(1u << 2)
#define VMA_AREA_VDSO		(1u << 3)
#define VMA_AREA_HEAP		(1u << 5)
#define VMA_FILE_PRIVATE	(1u << 6)
#define VMA_FILE_SHARED		(1u << 7)
#define VMA_ANON_SHARED		(1u << 8)
#define VMA_ANON_PRIVATE	(1u << 9)
#define VMA_AREA_SYSVIPC	(1u << 10)
#define VMA_AREA_VVAR		(1u << 12)
#define VMA_AREA_MEMFD		(1u << 14)

/*
 * vma_entry.flags of a hugetlb area, as CRIU records them: MAP_HUGETLB and
 * the log2 of its page size in bits 26-31 (MAP_HUGE_SHIFT).
 */
#define VMA_MAP_HUGETLB		0x40000u
#define VMA_MAP_HUGE_SHIFT	26
#define VMA_MAP_HUGE_MASK	(0x3fu << VMA_MAP_HUGE_SHIFT)

/* The log2 of the page size of a hugetlb area with vma_entry.flags FLAGS; 0 if it is none. */
static inline unsigned vma_hshift(uint32_t flags)
{
	unsigned s = (flags & VMA_MAP_HUGE_MASK) >> VMA_MAP_HUGE_SHIFT;

	if (!(flags & VMA_MAP_HUGETLB))
		return 0;
	return s ? s : 21;	/* no size given: x86-64's default, 2 MiB */
}

struct img_task {
	uint32_t pid;
	MmEntry *mm;		/* NULL when the task has no mm-PID.img */
	struct pagemap *pm;	/* NULL when it has no pagemap-PID.img (a zombie) */
	/*
	 * The shared memory objects of the dir, when its areas map any
	 * (VMA_AREA_MEMFD): PM holds their contents too, at the addresses
	 * each area maps them (img_task_load_opts).
	 */
	struct shm_set *shm;
};

/* img_task_load_opts flags. */
#define IMG_LOAD_SHM_LAZY	(1u << 0)	/* entries of lazy objects (shm.h) get PE_LAZY */

/*
 * List the task pids of DIRFD: from pstree.img in tree order, or, without
 * one, from the pagemap-PID.img files in pid order. *PIDS is malloc'd.
 */
int img_list_tasks(int dirfd, uint32_t **pids, size_t *n, bool *from_pstree,
		   struct img_err *err);

/*
 * Load the mm and pagemap of PID and check them against each other: VMAs in
 * order without overlap, every pagemap entry inside VMAs.
 */
int img_task_load(struct img_task *t, int dirfd, uint32_t pid, struct pages_cache *c,
		  struct img_err *err);
/* The same, with at most MAX_ENTRIES pagemap entries in all (0: no limit). */
int img_task_load_max(struct img_task *t, int dirfd, uint32_t pid, struct pages_cache *c,
		      size_t max_entries, struct img_err *err);
/*
 * The same, with FLAGS (IMG_LOAD_*). The contents of the shared memory
 * objects that its shared memfd areas map (pagemap-shmem-SHMID.img, at
 * offsets in the object) become entries of T->pm at the addresses of the
 * areas: START + (offset - pgoff), PE_PRESENT, and PE_LAZY with
 * IMG_LOAD_SHM_LAZY when the object may be served lazily. CRIU never
 * writes pages of such an area in pagemap-PID.img: that is refused.
 */
int img_task_load_opts(struct img_task *t, int dirfd, uint32_t pid, struct pages_cache *c,
		       size_t max_entries, unsigned flags, struct img_err *err);
void img_task_free(struct img_task *t, struct pages_cache *c);

/* The object area V maps (a shared memfd area of T), or NULL. */
const struct shm_obj *img_task_shm_obj(const struct img_task *t, const VmaEntry *v);

/* Check the VMAs of MM (from file NAME) for order, alignment and overlap. */
int img_check_vmas(const MmEntry *mm, const char *name, struct img_err *err);

/* Check that every entry of PM lies inside the VMAs of MM. */
int img_check_pagemap_vmas(const struct pagemap *pm, const MmEntry *mm, struct img_err *err);

#endif
