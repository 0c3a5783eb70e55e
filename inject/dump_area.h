/*
 * Which areas of a process a dump takes, and how. Each line of smaps becomes
 * a vma_entry and a kind (no pages, anonymous, copied-on-write file pages,
 * the vdso) with the pagemap flags its pages get; what restore or the manager
 * could not bring back faithfully (shared or file hugetlb, device memory, System V
 * shm, areas another userfaultfd owns, ...) is refused here, by name,
 * before a page is read. Also which pages must stay resident because the
 * kernel reads them for other processes (argv, environment, auxv, the stack
 * under each thread, rseq, the robust list): never flagged lazy.
 *
 * Knows nothing about how pages are found or read, nor about image files.
 */
#ifndef UFFD_INJECT_DUMP_AREA_H
#define UFFD_INJECT_DUMP_AREA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "procfs.h"
#include "vma.pb-c.h"

struct pt;

/* [start, end), page aligned, in area AREA (where it matters). */
struct dump_range {
	uint64_t start;
	uint64_t end;
	uint32_t area;
};

/* Is [addr, addr + len) inside one of the N sorted ranges R? */
bool dump_range_has(const struct dump_range *r, size_t n, uint64_t addr);

/* What the dump does with the pages of one area. */
enum dump_kind {
	DUMP_NONE,	/* no pages: shared mappings, vvar, vsyscall */
	DUMP_ANON,	/* anonymous private: present and swapped pages, zero pages are holes */
	DUMP_COW,	/* file private: only the pages that are not the file's (copied on write) */
	DUMP_ALL,	/* the vdso: every present page */
	/*
	 * Shared anonymous memory of a hand-over that no other process maps:
	 * every page its shmem object holds (found in the object, not in the
	 * page tables: a page can be there without being mapped here), zero
	 * pages are holes; lazy.c punches them out of the object and registers
	 * the area for MISSING and MINOR faults.
	 */
	DUMP_SHMEM,
};

struct dump_area {
	enum dump_kind kind;
	uint32_t pe_flags;	/* pagemap flags of its pages */
	bool note_locked;	/* mlock()ed: dumped, but the images do not say so */
	uint64_t hpage;		/* hugetlb: its page size (whole pages are dumped); else 0 */
};

/* A shared memory object, as /proc/N/maps names it. */
struct dump_area_obj {
	unsigned dev_major, dev_minor;
	uint64_t ino;
};

#define DUMP_AREA_MAPS		1u	/* look at the processes' mappings */
#define DUMP_AREA_FDS		2u	/* and at their descriptors */
#define DUMP_AREA_FDS_ALL	4u	/* the descriptors of the SKIP processes too */

/*
 * The first process, other than this one and the SKIP ones (NSKIP), that
 * maps or holds open at a descriptor one of the N objects O (WHAT says which
 * to look at): its pid, with *WHICH (if not NULL) the object's index; 0 if
 * none; -errno when /proc, or a process's maps or descriptors, cannot be
 * read (then nobody can say the object is unused), except for processes
 * this tool may not look at (EACCES, EPERM), which are passed over. A
 * descriptor is stat'ed
 * only when its link names shmem memory (a memfd, /dev/zero, anon_shmem), so
 * a hung file system elsewhere cannot stall the scan. Not seen: a memfd
 * queued in a socket, sent but not yet received.
 */
pid_t dump_area_shmem_user(const struct dump_area_obj *o, size_t n, const pid_t *skip,
			   size_t nskip, unsigned what, size_t *which);

/*
 * Does a process other than PID map the file DEV_MAJOR:DEV_MINOR INODE (as
 * /proc/N/maps shows them)? Also true when /proc cannot be read: the
 * answer must never be a wrong no. Reads every process's maps.
 */
bool dump_area_mapped_elsewhere(pid_t pid, unsigned dev_major, unsigned dev_minor,
				uint64_t inode);

/*
 * Does any process but this one (the target included) hold the shmem
 * object DEV_MAJOR:DEV_MINOR INODE open at a descriptor? Also true when
 * /proc or a process's descriptors cannot be read.
 */
bool dump_area_open_anywhere(unsigned dev_major, unsigned dev_minor, uint64_t inode);

/*
 * Describe area V of /proc/PID/smaps as a vma_entry and say what to dump of
 * it. Returns 0, or -ENOTSUP with WHY saying what cannot be represented.
 */
int dump_classify(const struct procfs_vma *v, VmaEntry *e, struct dump_area *a, char *why,
		  size_t len);

/*
 * Classify every area of M (of process PID) into *VMAS and *AREAS, which the
 * caller frees, even on failure. Refuses mlock()ed areas with NO_LOCKED, else
 * notes them on stderr. ALLOW_WP: areas registered in write-protect mode (by
 * a pre-copy tracker) are taken as if they were not. RESIDENT_SHARED (a
 * hand-over, where the process keeps running with its memory): shared
 * memory (shared anonymous, memfd, System V; not hugetlb) is recorded in the
 * layout only, without pages, instead of refused. Returns 0 or -errno with WHY.
 */
int dump_area_classify_all(const struct procfs_maps *m, pid_t pid, bool no_locked,
			   bool allow_wp, bool resident_shared, VmaEntry **vmas,
			   struct dump_area **areas, char *why, size_t len);

/*
 * Find the ranges of the NVMAS areas VMAS that must stay resident, from the
 * seized threads of PT, its stat ST and the length of its auxv, into *EAGER
 * (sorted, disjoint, each inside one area; the caller frees it, even on
 * failure). Returns 0 or -ENOMEM.
 */
int dump_area_find_eager(struct pt *pt, const struct procfs_stat *st, size_t nauxv,
			 const VmaEntry *vmas, size_t nvmas, struct dump_range **eager,
			 size_t *neager);

#endif
