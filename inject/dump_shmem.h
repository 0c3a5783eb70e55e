/*
 * Shared memory objects of a dump, as CRIU 4.2 records them on this kernel:
 * shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, a shmem file named
 * "/dev/zero") and memfds, mapped or open at a descriptor, are all memfds.
 * Each object is found once per dump whatever the number of its mappings and
 * processes (identity: st_dev and st_ino), gets a memfd_inode_entry in
 * memfd.img, and its whole contents (its size, not only the mapped part) in
 * pagemap-shmem-INO.img (entries at byte offsets in the object) and a
 * pages-ID.img of its own. Pages that read all zero are left out as holes.
 *
 * The contents are read from the object itself (through /proc/PID/map_files
 * or /proc/PID/fd), while the processes are frozen. Knows nothing about
 * ptrace, files.img or the process's own pages.
 */
#ifndef UFFD_INJECT_DUMP_SHMEM_H
#define UFFD_INJECT_DUMP_SHMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "procfs.h"

#define DUMP_SHMEM_MAX		4096	/* objects in one dump */
#define DUMP_SHMEM_NAME		"/dev/zero"	/* CRIU's name for shared anonymous memory */

struct dump_shmem_obj {
	uint64_t dev, ino;	/* st_dev, st_ino */
	uint64_t size;
	uint32_t uid, gid, mode, seals;
	bool anon;		/* shared anonymous memory, not a memfd */
	char name[256];		/* memfd_inode_entry.name */
	char src[320];		/* where it was found: /proc/PID/map_files/... or fd/N */
	int fd;			/* open on the object until written */
	uint32_t inode_id;	/* memfd_inode_entry.inode_id: 1, 2, ... */
	uint32_t pages_id;	/* pages-ID.img of its contents */
	uint64_t pages;		/* pages written */
	uint64_t holes;		/* pages left out because they read all zero */
	bool made[2];		/* pagemap-shmem, pages: temporary file exists */
	bool published;
};

struct dump_shmem {
	struct dump_shmem_obj *o;
	size_t n;
	bool made_inodes;	/* memfd.img.part exists */
	bool published_inodes;
	char why[768];
};

/*
 * Is V (of /proc/PID/smaps) an area of a shared memory object a dump records
 * as a memfd: shared anonymous memory, or a memfd mapped shared or private
 * (not hugetlb)?
 */
bool dump_shmem_area(const struct procfs_vma *v);

/*
 * Add the objects of process PID: those of its areas in MAPS that
 * dump_shmem_area() takes, and with FDS the memfds open at its descriptors.
 * Already known objects are not added twice. 0 or -errno with S->why naming
 * the area or fd (the caller names the pid).
 */
int dump_shmem_collect(struct dump_shmem *s, pid_t pid, const struct procfs_maps *maps,
		       bool fds);

/* The object DEV, INO, or NULL. */
const struct dump_shmem_obj *dump_shmem_find(const struct dump_shmem *s, uint64_t dev,
					     uint64_t ino);

/*
 * Refuse (-EBUSY, S->why naming the object and the pid) objects that a
 * process outside PIDS (N of them: the processes this dump freezes) maps or
 * holds open: they could change while read, and a restore would part them.
 */
int dump_shmem_check_users(struct dump_shmem *s, const pid_t *pids, size_t n);

/*
 * Read every object whole and write memfd.img, pagemap-shmem-INO.img and
 * pages-ID.img (IDs from FIRST_PAGES_ID on) as NAME.part into DIRFD (DIR for
 * messages). Nothing is written when there is no object. 0 or -errno with S->why.
 */
int dump_shmem_write(struct dump_shmem *s, int dirfd, const char *dir, uint32_t first_pages_id);

/* Give the files their final names. 0 or -errno with S->why. */
int dump_shmem_publish(struct dump_shmem *s, int dirfd, const char *dir);

/* Remove what dump_shmem_write and dump_shmem_publish made (a failed dump). */
void dump_shmem_abort(struct dump_shmem *s, int dirfd);

void dump_shmem_free(struct dump_shmem *s);

#endif
