/*
 * The working set first. The first time an image is served, the manager
 * records the order in which the process faulted its pages (image addresses
 * of the faulting pages); when the process leaves, the record is written to
 * the working-set directory (--working-set-dir), named after the image's
 * pagemap file (device, inode, size, mtime: a new dump is a new image). The
 * next time the same image is served, the background fill places the
 * recorded pages first, in that order, and a fault at a recorded page brings
 * the pages the record says come next with it, so the process finds them in.
 *
 * The first serving records only what the process faulted, not what the
 * background fill placed before the process read it; so a serving that
 * replays a record notes its faults at pages the record lacks, and the record
 * is rewritten with each put in after the recorded page the process last
 * faulted at before it. A record only orders the filling: pages always come
 * from the images, so a stale or foreign record costs time, never a byte.
 * Remove the file to record afresh.
 */
#ifndef UFFD_WSET_H
#define UFFD_WSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct target;

#define WSET_MAX	(1u << 20)	/* pages in a record: 4 GiB touched, an 8 MiB file */

/*
 * The record's path in DIR for the images at DIRFD whose task is PID (from
 * its pagemap file's identity); -errno if that file cannot be looked at.
 */
int wset_path(const char *dir, int dirfd, uint32_t pid, char *buf, size_t len);

/* Start recording or replaying for a handed-over process T (not a forked child). */
void wset_start(struct target *t);

/* T faulted at IMG (an image address of a missing page): record it. */
void wset_note(struct target *t, uint64_t img);

/*
 * The next run of recorded pages still missing in T, at most MAX bytes: its
 * start in *ADDR and length returned, 0 when the record is used up.
 */
uint64_t wset_next(struct target *t, uint64_t max, uint64_t *addr);

/*
 * A fault at image address IMG: its index in the record (the first, if it is
 * there more than once) in *K; false if it is not in the record.
 */
bool wset_find(struct target *t, uint64_t img, size_t *k);

/*
 * As wset_next(), but from record index *K on (moved past the run): what
 * the process will want after the page at index *K - 1. The fill's place in
 * the record stays: the recorded pages before *K that are still missing are
 * ones the process has not read yet this time (another thread's, or an
 * order that changed), not ones it will never read, and the fill still
 * places them before any page the record lacks.
 */
uint64_t wset_next_from(struct target *t, size_t *k, uint64_t max, uint64_t *addr);

/*
 * Whether T is served with a record to replay (the fill workers leave such a
 * process to the loop: with a worker beside the replay, measure 7's pass
 * took 0.69-0.92x of no record instead of 0.21-0.27x).
 */
bool wset_replaying(const struct target *t);

/* PAGES of a run wset_next() or wset_next_from() gave were placed (before the process asked). */
void wset_placed(struct target *t, uint64_t pages);

/* T leaves: write its record if it made one; free the state. */
void wset_end(struct target *t);

/* Parse a record file's bytes: 0 with *IMG (malloc'd) and *N, or -EINVAL. */
int wset_parse(const void *buf, size_t len, uint64_t **img, size_t *n);

#endif
