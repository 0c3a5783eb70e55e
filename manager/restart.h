/*
 * Restart: a new daemon takes back every process a daemon before it served.
 *
 * The keeper of the daemon that died (or left on SIGUSR2) holds its fd
 * table and its journal (keeper.h, journal.h), and listens on the adoption
 * socket, the manager's socket path with ".keeper" appended. A new daemon
 * on the same socket connects there before it listens, and:
 *
 * 1. takes every fd the keeper holds, and the journal; copies the journal
 *    into its own with the fd numbers of its table (ids kept), then tells
 *    the old keeper, which exits. Until then it reads no uffd, so a new
 *    daemon that dies half way changes nothing: the old keeper goes on.
 * 2. rebuilds the model of each process: from its images (read with its
 *    client's uid and gid), then every recorded event of its ancestors up
 *    to its fork and its own (REMOVE: zero, never the image; REMAP, UNMAP:
 *    moved, gone). Pages placed since are in the process: the kernel
 *    refuses a copy onto them (EEXIST), and a pagemap scan takes them out
 *    of the model first so that no time goes on them.
 * 3. serves on: ids, counters (status) and the released processes (read
 *    until they exit) are carried over; every waiter on every uffd is woken,
 *    so a fault the daemon before read and never answered comes again.
 *
 * What cannot be rebuilt is killed, never served wrong: a process whose
 * uffd the daemon before was reading when it died (the read completes the
 * events it returns before they are recorded, so a REMOVE may be lost);
 * one whose images cannot be read again; remote-mode processes (pages from
 * a page server: not taken back in this version). A uffd no record names
 * (a child forked in that last read; a hand-over still loading) is read
 * for faults only: the process that faults there is killed, by name.
 */
#ifndef UFFD_RESTART_H
#define UFFD_RESTART_H

#include <stddef.h>

struct daemon;

/* The adoption socket's path for the manager socket PATH, in BUF. 0, or -ENAMETOOLONG. */
int restart_keeper_path(const char *path, char *buf, size_t len);

/*
 * Take back what the keeper at KPATH holds, if there is one whose daemon is
 * gone. Returns the number of processes adopted (0: none, or no keeper),
 * or -errno with WHY filled when the keeper could not be read.
 */
int restart_adopt(struct daemon *d, const char *kpath, char *why, size_t len);

/* Listen on KPATH and give it to our keeper, for the daemon after us. 0 or -errno. */
int restart_listen(struct daemon *d, const char *kpath, char *why, size_t len);

#endif
