/*
 * Fill workers: threads that place background-fill pages beside the event
 * loop, so that an idle daemon fills with more than one core
 * (--fill-workers; the loop itself is the first).
 *
 * The loop owns every model. A worker only runs UFFDIO_COPY and
 * UFFDIO_ZEROPAGE over a job the loop carved out of a model (one run of
 * missing pages of one area, with where each part's data is in the
 * images), and reports how far it got; the loop applies the report as if it
 * had placed those pages itself. Results other than "placed" (EAGAIN,
 * ENOENT, ESRCH, anything else) only end the job: its rest stays missing,
 * and the loop meets the same result when it places those pages and deals
 * with it as it always does.
 *
 * The rule that makes this safe: the loop never reads a uffd while a worker
 * may be placing pages through it, and takes in every report before it
 * reads (fillw_quiesce before every read). Three reasons:
 *  - A job must not outlive an event. Once a read has returned a REMOVE,
 *    the process zaps the range and the kernel lets copies in again; a
 *    piece begun then would put old data where the process dropped its
 *    pages. After a REMAP, a job's addresses may be another area's, and a
 *    piece would put this area's data there.
 *  - The model: the events a read returns are applied to a model that
 *    already holds everything placed before them. A report applied after a
 *    REMAP would clear pages at addresses that may hold another area's
 *    missing pages by then, and those would be served as zeros.
 *  - A piece in flight, before Linux 6.8: MADV_DONTNEED holds the mm only
 *    for reading, and nothing made its REMOVE wait for a copy in flight,
 *    which could land after the zap. Since 6.8 the event waits for copies
 *    in flight (map_changing_lock). Waiting for the piece covers both: a
 *    piece begun after the event is queued fails with EAGAIN
 *    (mmap_changing), one begun before ends before the read. UNMAP, REMAP
 *    and FORK take the mm for writing, which waits for copies in flight on
 *    any kernel.
 * A worker looks for the stop between pieces of FILLW_PIECE bytes, so a
 * read waits at most one piece.
 */
#ifndef UFFD_FILLW_H
#define UFFD_FILLW_H

#include <stdbool.h>
#include <stdint.h>

struct daemon;
struct target;

#define FILLW_MAX	8		/* --fill-workers: the loop and up to 7 threads */
#define FILLW_PIECE	(64ull << 10)	/* one ioctl of a job; the longest a read waits */
#define FILLW_JOB	(4ull << 20)	/* the most one job places */

/* Start N-1 worker threads (N: --fill-workers, the loop counted). 0 or -errno. */
int fillw_start(struct daemon *d, unsigned n);

/* The threads that fill, the loop counted: 1 without workers. */
unsigned fillw_count(const struct daemon *d);

/* Stop and join them; jobs in flight are finished and applied first. */
void fillw_stop(struct daemon *d);

/*
 * Give idle workers jobs from T's missing pages at and after its fill
 * cursor (which moves past them). Returns how many jobs were handed out.
 */
unsigned fillw_feed(struct daemon *d, struct target *t);

/*
 * No worker places pages of T when this returns, and what they placed is
 * in T's model: call before reading T's uffd, and before T lets go of its
 * uffd, images or model.
 */
void fillw_quiesce(struct target *t);

/* If a worker's job covers ADDR of T: the end of that job; else 0. */
uint64_t fillw_busy_end(const struct target *t, uint64_t addr);

/* LEN cut short where a job of T begins past ADDR. */
uint64_t fillw_clip(const struct target *t, uint64_t addr, uint64_t len);

/* The first missing page of T no job holds, from its fill cursor, wrapping: true with *A. */
bool fillw_next(const struct target *t, uint64_t *a);

#endif
