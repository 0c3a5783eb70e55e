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

#include "remote.h"
#include "proc.h"
#include "uffd.h"

/* Pages from the page server: a fault asks for its window, answers are placed when they come. */
extern const struct page_source rserve_source;

/* Ask for one missing page of some remote process (a keep-alive); true if it asked. */
bool rserve_keepalive(struct daemon *d);

/* Queue background requests while there is room. */
bool rserve_fill(struct daemon *d);

/* What the page server connection reports to: answers placed, loss ends the unserved. */
extern const struct remote_ops rserve_ops;

#endif
