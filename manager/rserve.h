/*
 * Remote mode's policy: which pages of which process to ask the page
 * server for, and placing what comes back. A fault asks for its window at
 * once (or moves the request already covering it ahead of background
 * ones); the background fill keeps a few requests in flight, one process
 * after another, resuming where each was last read. Answers that cannot
 * be placed yet (EAGAIN: events pending) are held on the process and
 * placed after the next drain. The connection itself is remote.h.
 */
#ifndef UFFD_RSERVE_H
#define UFFD_RSERVE_H

#include <stdbool.h>
#include <stdint.h>

#include "target.h"
#include "uffd.h"

/*
 * Answer a fault at ADDR of T: a zero page where no data is to come;
 * otherwise *WAITING is set and a request covers it.
 */
enum uffd_class rserve_fault(struct target *t, uint64_t addr, bool *waiting);

/* Place what is still wanted of held answer H; false if it must wait for a drain. */
bool rserve_place_held(struct target *t, struct rheld *h);

/* Queue background requests while there is room. */
bool rserve_fill(struct daemon *d);

/*
 * LEN bytes in BUF (owned from now on) came for image address IMG, asked
 * to be placed at ADDR. Place what is still missing there and still has
 * that image address; answer the faults waiting on it.
 */
void target_remote_data(struct target *t, uint64_t addr, uint64_t img, uint8_t *buf,
			uint64_t len);

/* The page server is gone. Kill every process not fully served (WHY). */
void target_remote_lost(struct daemon *d, const char *why);

#endif
