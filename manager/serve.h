/*
 * Serving one process: place pages with UFFDIO_COPY (from the images) or
 * UFFDIO_ZEROPAGE, classify what the kernel answers (uffd.h), answer each
 * fault with a window of pages around it, and park the faults that must
 * wait for the uffd's events to be read (EAGAIN). Parked faults are retried
 * after every drain (serve_retry_parked, before the loop sleeps) and on a
 * short timer, so none waits for a drain that does not come. The
 * background fill (fill.h) and remote mode (rserve.h) place pages through
 * the same routines. When the last missing page is in, the process is
 * released (target_release).
 */
#ifndef UFFD_SERVE_H
#define UFFD_SERVE_H

#include <stdbool.h>
#include <stdint.h>

#include "proc.h"
#include "uffd.h"

#define PG	4096ull

/* Pages from the images, each fault with a window of pages around it. */
extern const struct page_source serve_from_images;

/* Queue the fault M reports (one entry per page). 0, or -ENOMEM. */
int serve_queue_fault(struct target *t, const struct uffd_msg *m);

/*
 * Place data held back for a drain (its source's place_held), then serve
 * the queued faults in order; stop at the first that must wait for a drain and
 * park the rest. Releases the process once nothing is missing.
 */
void serve_faults(struct target *t);

/* Serve T from the loop soon (its next iteration): releases it if nothing is missing. */
void serve_soon(struct target *t);

/*
 * A read of T's uffd failed with ERR (EMFILE, ENFILE): the fd of a fork
 * event's new uffd found no room in our table, and the kernel keeps the
 * event queued, the forking process waiting. Stop watching the uffd (it
 * stays readable) and read it again on a timer, until fds are free: the
 * process is never let go for it (its missing pages would read zeros).
 */
void serve_read_later(struct target *t, int err);

/* Retry the parked faults of every process (after a drain). */
void serve_retry_parked(struct daemon *d);

/*
 * Place [ADDR, ADDR+LEN) with one ioctl: a copy from SRC, or zero pages when
 * SRC is NULL. Counts the outcome and sets *ADV to how far to move on: the
 * bytes placed, or the one page that was already there. A result that
 * cannot be served past kills the process (target_fail).
 */
enum uffd_class serve_place(struct target *t, uint64_t addr, uint64_t len, const void *src,
			    bool wake, uint64_t *adv);

/* Did a placement leave the range in (fully, or past a page already there)? */
bool serve_placed(enum uffd_class c);

/* Copy [ADDR, ADDR+LEN) of area V (all missing) from the images; the class that stopped it. */
enum uffd_class serve_range(struct target *t, struct area *v, uint64_t addr, uint64_t len,
			    bool wake);

/* A zero page at PAGE, waking its waiters. */
enum uffd_class serve_zero(struct target *t, uint64_t page);

/*
 * ENOENT on page A, which the model says is missing: true once ENOENT has
 * persisted in its area long enough with no event applied meanwhile to
 * call the page gone.
 */
bool serve_stale_for_good(struct target *t, uint64_t a);

/* Forget the page at A (stale for good): one warning, then a count. */
void serve_drop_stale(struct target *t, uint64_t a);

/* Keep the daemon's count of processes with parked faults. */
void serve_set_parked(struct target *t, bool parked);

/* Remove the waiting faults on pages of [S, E) (placed with a wake): they are answered. */
void serve_faults_done(struct target *t, uint64_t s, uint64_t e);

#endif
