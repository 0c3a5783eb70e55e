/*
 * The shared memory objects of an image directory, in CRIU 4.2's format:
 * memfd.img holds one memfd_inode_entry per object (a memfd, or shared
 * anonymous memory, which CRIU records as a memfd named "/dev/zero"), the
 * MEMFD records of files.img name an object by its inode_id (the file id is
 * what a VMA's shmid and an fdinfo entry give), and the contents of each
 * object are in pagemap-shmem-SHMID.img (entries at byte offsets in the
 * object) with their own pages-N.img. Read whole and checked at load, so
 * lookups cannot fail.
 */
#ifndef UFFD_SHM_H
#define UFFD_SHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "pagemap.h"

#ifndef IMG_FILES_MAGIC
#define IMG_FILES_MAGIC		0x56303138u
#endif
#ifndef IMG_FDINFO_MAGIC
#define IMG_FDINFO_MAGIC	0x56213732u
#endif

#define SHM_FD_TYPE_MEMFD	18		/* file_entry.type, fdinfo_entry.type */
#define SHM_ANON_NAME		"/dev/zero"	/* the name of shared anonymous memory */
#define SHM_NAME_MAX		249		/* memfd_create's limit (MFD_NAME_MAX_LEN) */
#define SHM_MAX_OBJS		4096
#define SHM_MAX_FILES		65536
#define SHM_MAX_SIZE		(1ull << 46)	/* 64 TiB: more than any object we serve */

/* Seals that forbid writing the object: its contents go in before anyone maps it. */
#define SHM_WRITE_SEALS		(0x0008u | 0x0010u)	/* F_SEAL_WRITE | F_SEAL_FUTURE_WRITE */

struct shm_obj {
	uint64_t inode_id;
	uint32_t shmid;			/* names pagemap-shmem-SHMID.img */
	char name[SHM_NAME_MAX + 1];	/* as memfd_create was given it; "/dev/zero" */
	bool anon;			/* shared anonymous memory, not a memfd */
	bool hugetlb;			/* a hugetlb memfd (hugetlb_flag) */
	uint64_t size;
	uint32_t seals;
	uint32_t uid, gid;
	uint32_t mode;			/* 0: not recorded */
	struct pagemap *pm;		/* contents: entries at offsets in the object */
	bool open_fd;			/* some process holds it open (an fdinfo entry) */
	/*
	 * Its contents may be left out until a process faults on them: it is
	 * reachable only through mappings (a read() of a missing page would
	 * silently give zeros), nothing forbids writing it, and it is no
	 * hugetlb memfd. The same rule for the restore (which leaves such an
	 * object empty) and the daemon (which serves it).
	 */
	bool lazy;
};

/* A MEMFD record of files.img: one open file of an object. */
struct shm_file {
	uint32_t id;
	uint32_t flags;			/* open flags (O_RDWR, O_LARGEFILE, ...) */
	uint64_t pos;
	size_t obj;			/* index in shm_set.obj */
};

struct shm_set {
	struct shm_obj *obj;
	size_t nobj;
	struct shm_file *file;
	size_t nfile;
};

/*
 * Read the shared memory records of DIRFD: memfd.img, the MEMFD records of
 * files.img, the MEMFD entries of every fdinfo-N.img, and each object's
 * pagemap-shmem-SHMID.img with its pages file (in C), at most MAX_ENTRIES
 * entries in all (0: no limit). A directory without memfd.img gives an
 * empty set. Every problem is reported in ERR naming the file and record.
 */
int shm_load(struct shm_set **out, int dirfd, struct pages_cache *c, size_t max_entries,
	     struct img_err *err);
void shm_free(struct shm_set *s, struct pages_cache *c);

/* The MEMFD record with file id ID, or NULL. */
const struct shm_file *shm_file_by_id(const struct shm_set *s, uint32_t id);

#endif
