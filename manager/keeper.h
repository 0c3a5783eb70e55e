/*
 * The keeper: a small process the daemon forks at start, which holds a copy
 * of every userfaultfd the daemon serves, so that if the daemon dies, the
 * processes it was serving wait on their missing pages instead of reading
 * zeros (the kernel lets missing pages read as zeros once the last
 * reference to a userfaultfd is gone). This matters most for children
 * forked after a hand-over, whose userfaultfds exist only in the daemon.
 *
 * The daemon tells it when a process is fully served (or killed): the copy
 * is closed. It closes a copy by itself when the process exits (a pidfd,
 * once the daemon knows the pid). With the daemon gone, it keeps the rest
 * until their processes exit, then exits itself. The daemon never waits for
 * it: a keeper that stops reading is let go (it keeps what it holds).
 */
#ifndef UFFD_KEEPER_H
#define UFFD_KEEPER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* All zero: no keeper (the daemon's state is zero-initialized). */
struct keeper {
	bool running;
	int sock;	/* to the keeper, when running */
	pid_t pid;
};

/* Fork the keeper. 0, or -errno (the daemon then runs without one, and says so). */
int keeper_start(struct keeper *k);

/*
 * Give the keeper a copy of UFFD for the process known as ID, a child of
 * PARENT (our pid; 0 when handed over, or unknown): with the daemon gone,
 * the keeper trusts a fault's thread id only for a child of PARENT.
 */
void keeper_hold(struct keeper *k, uint64_t id, int uffd, pid_t parent);

/* Tell it the pidfd of ID's process: it lets go when that process exits. */
void keeper_pid(struct keeper *k, uint64_t id, int pidfd);

/* ID's process needs no copy any more (fully served, or killed). */
void keeper_drop(struct keeper *k, uint64_t id);

/* Close our end: a keeper holding nothing exits; one holding copies goes on. */
void keeper_close(struct keeper *k);

#endif
