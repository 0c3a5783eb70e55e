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

/* Ask R for one missing page of one of its processes (a keep-alive); true if it asked. */
bool rserve_keepalive(struct daemon *d, struct remote *r);

/*
 * The connection T's pages come from: the one of its hand-over (restore
 * --page-server, in d->remotes, keyed by T's images, which forked children
 * share), else D's (CRIU mode). NULL once a hand-over's connection is gone.
 */
struct remote *rserve_remote(const struct target *t);

/* Take R, connected for a hand-over with images IMG, into the loop and D->remotes. 0 or -errno with WHY. */
int rserve_adopt(struct daemon *d, struct remote *r, const void *img, char *why, size_t len);

/* Free the hand-overs' connections no process uses any more (before the loop sleeps). */
void rserve_gc(struct daemon *d);

/* Queue background requests while there is room. */
bool rserve_fill(struct daemon *d);

/* What the page server connection reports to: answers placed, loss ends the unserved. */
extern const struct remote_ops rserve_ops;

#endif
