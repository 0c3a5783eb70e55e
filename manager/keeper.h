/*
 * The keeper: a small process the daemon starts with clone(CLONE_FILES), so
 * that it shares the daemon's fd table. Whatever the daemon holds, the
 * keeper holds: every userfaultfd (a forked child's too, from the instant
 * the kernel installs it while the daemon reads the FORK event: no window
 * in which a child's uffd lives in the daemon alone), every pidfd, every
 * image dir, and the journal (journal.h). If the daemon dies, the processes
 * it served wait on their missing pages instead of reading zeros (the
 * kernel lets missing pages read as zeros once the last reference to a
 * userfaultfd is gone), and a new daemon can take them back (restart.h).
 *
 * With the daemon gone (its pidfd says so), the keeper reads the journal,
 * closes every fd that serves nobody any more (sockets, so that clients see
 * the daemon gone; page files; epoll), and keeps the uffds, pidfds and
 * image dirs of the processes still served. A uffd the journal does not
 * name is kept too after a crash (a fork read in the daemon's last read).
 * It closes what belongs to a process that exits, learns a forked child's
 * pid from its first fault (recording in the journal what it read), and
 * waits on its adoption socket for a new daemon: one run by the same user
 * (or root) gets everything, and once it says it holds it all, the keeper
 * exits. It exits too once nothing is left to keep.
 */
#ifndef UFFD_KEEPER_H
#define UFFD_KEEPER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct journal;

/* All zero: no keeper (the daemon's state is zero-initialized). */
struct keeper {
	bool running;
	int sock;	/* to the keeper, when running */
	pid_t pid;
};

/* Adoption messages, keeper to new daemon (restart.c), on a SOCK_SEQPACKET. */
enum { KA_JOURNAL = 1, KA_FDS, KA_DONE };
#define KA_BATCH	32	/* FDPASS_MAX */
struct keeper_adopt_msg {
	uint32_t op;
	uint32_t n;		/* KA_FDS: fds attached */
	int32_t old[KA_BATCH];	/* their numbers in the old table */
};

/*
 * Start the keeper, sharing our fd table, with journal J (its fd in the
 * table). Call while the daemon is single-threaded. 0, or -errno (the
 * daemon then runs without one, and says so).
 */
int keeper_start(struct keeper *k, const struct journal *j);

/* Give the keeper its adoption socket (listening, an fd in the shared table). */
void keeper_listen(struct keeper *k, int fd);

/*
 * The daemon exits on its own, having served or ended every process: mark
 * the journal so, and close our end. The keeper exits once the daemon has.
 */
void keeper_close(struct keeper *k, struct journal *j);

#endif
