/*
 * Processes that are fully served but may still change their memory: their
 * uffd is read, and its events let go, until the process is gone.
 *
 * Why reading must go on after release (kernel rule, DESIGN.md): munmap,
 * mremap, madvise and fork pick up a process's uffd under its mmap lock and
 * queue their event only after dropping the lock; the thread then waits
 * until the event is read or the uffd is released (its last fd closed).
 * Unregistering every range stops new pick-ups (UFFDIO_UNREGISTER takes the
 * mmap lock for writing, so it comes after any pick-up already made), but
 * an event picked up before it is still to come. Whether our close releases
 * the uffd depends on who else holds it:
 *
 * - a handed-over or restored process may hold a copy itself (uffd-inject
 *   lazy's targets keep one so that they wait if the daemon dies), and so
 *   may its forked children, which inherit that fd. Then nothing but our
 *   reading frees such a thread. These are kept here, at two fds each (the
 *   uffd and the pidfd that says when the process is gone), and read until
 *   the pidfd reports the exit. After that the process's memory is gone,
 *   so no event can come: nothing is left unread while it lives.
 * - a forked child's own uffd is held by no process: the kernel gave it to
 *   us alone, and to the keeper, which lets it go at release. Closing it
 *   releases it, which frees any thread waiting on an event. These are
 *   closed at release, as before.
 *
 * A FORK event read here comes from a fork that picked up the uffd before
 * release. Its child's memory is complete: while that event was pending,
 * every copy into the parent failed with EAGAIN, so the parent's last page
 * went in before the fork copied its page tables. Its new uffd is ours
 * alone; closing it releases it.
 *
 * When the daemon exits it must close these. It stops no sooner than
 * DAEMON_SETTLE_NS after the last release (daemon_check_done), so that an
 * event picked up before that is read: the thread that picked it up holds
 * no lock the daemon waits for and queues it right away.
 */
#ifndef UFFD_RELEASED_H
#define UFFD_RELEASED_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "loop.h"

struct daemon;

struct released {
	struct released *next;
	struct daemon *d;
	struct ev uffd_ev, pid_ev;
	int uffd, pidfd;
	pid_t pid;
	uint64_t id;		/* its id in the journal */
	uint64_t since;		/* when its ranges were unregistered, ns */
	uint64_t events;	/* read and let go since */
};

/*
 * Go on reading UFFD (its ranges already unregistered) until the process
 * PIDFD names exits (ID: the process's id in the journal, which records
 * its end). Takes both fds, whatever the outcome. Returns 0, or
 * -errno if it could not be watched (then both are closed: the caller
 * logs).
 */
int released_keep(struct daemon *d, int uffd, int pidfd, pid_t pid, uint64_t id);

/* Read what is queued on every kept uffd one last time, then close them all. */
void released_close_all(struct daemon *d);

#endif
