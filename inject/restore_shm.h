/*
 * The shared memory of a restore, in CRIU 4.2's records (shm.h): shared
 * anonymous memory and memfds, each object made once for the whole restore,
 * by us, before any helper is forked, so that every helper inherits it and
 * maps the same object (a write by one process is seen by the others, as
 * before the dump). Shared anonymous memory is real MAP_SHARED|MAP_ANONYMOUS
 * memory (mapped here, reopened through /proc/self/map_files: its maps line
 * says "/dev/zero (deleted)" as it did), a memfd is memfd_create(name) sized
 * with ftruncate.
 *
 * Contents: with --eager, or for an object a process holds open as a
 * descriptor (a read() of a missing page would silently give zeros) or
 * that is sealed against writes, every page is written into the object
 * before any process runs. Otherwise the object is left empty where some
 * process maps it, and the manager serves each page on the first fault in
 * any of its sharers (HELLO_F_SHM_LAZY); pages no mapping covers are
 * written here. Seals go on once the contents are in (F_SEAL_FUTURE_WRITE,
 * which forbids new writable mappings, and F_SEAL_SEAL with it, once every
 * process has mapped the object).
 *
 * A private mapping of a memfd maps the same object MAP_PRIVATE (its copies
 * are the task's own pages, written as any file area's); an object mapped
 * private anywhere is written whole, as it is read where there is no copy.
 *
 * Refused, naming the file, object and address: System V shared memory,
 * hugetlb memfds, sealed shared anonymous memory, shared memory with
 * --page-server.
 */
#ifndef UFFD_INJECT_RESTORE_SHM_H
#define UFFD_INJECT_RESTORE_SHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pages.h"
#include "shm.h"

struct rs;

/* Offsets of an object that some process maps: [s, e), sorted and merged. */
struct rs_shm_span {
	uint64_t s, e;
};

struct rs_shm {
	struct shm_set *set;
	struct pages_cache cache;
	int *fd;		/* per object: ours (read-write), -1 when no process needs it */
	int *ffd;		/* per memfd file: an open file with its flags and offset, or -1 */
	bool *lazy;		/* per object: left empty here, served by the manager */
	bool *used;		/* per object: mapped or held open by some process */
	bool *fused;		/* per memfd file: held open by some process */
	bool *whole;		/* per object: mapped private somewhere, so written whole */
	struct rs_shm_span **sp;	/* per object: what the processes map of it */
	size_t *nsp;
	uint64_t written;	/* pages written into the objects */
};

/*
 * Read the shared memory records of the restore of R[0..N) (one process, or
 * a tree, all from the same directory) and check every area and descriptor
 * that uses them. *OUT is NULL when no process maps or holds any object.
 * 0 or -errno (rs_fail of the process at fault said why).
 */
int rs_shm_plan(struct rs_shm **out, struct rs **r, size_t n);

/* Make every object, put its contents in, seal it, open its files. 0 or -errno (R's why). */
int rs_shm_make(struct rs_shm *s, struct rs *r);

/* Once every process has mapped its areas: the seals that forbid new writable mappings. */
int rs_shm_seal_late(struct rs_shm *s, struct rs *r);

/* The object area V of R maps (a memfd area, shared or private), its index, or -1. */
int rs_shm_obj(const struct rs *r, const void *vma);

void rs_shm_free(struct rs_shm *s);

#endif
