/*
 * Small system calls wrapped the same way for every long-running program
 * here (the daemon, the page server): the fd limit, signals taken through a
 * signalfd, and which accept(2) failures mean "back off and retry".
 */
#ifndef UFFD_SYSUTIL_H
#define UFFD_SYSUTIL_H

#include <stdbool.h>

/*
 * Raise RLIMIT_NOFILE's soft limit to the hard one (every client and every
 * served process costs fds). Returns the soft limit in force afterwards
 * (1024, the usual default, if it cannot even be read).
 */
unsigned sys_raise_nofile(void);

/*
 * Ignore SIGPIPE (a peer that goes away is seen on its socket), block the
 * N signals of SIGS and return a non-blocking, close-on-exec signalfd for
 * them, or -errno.
 */
int sys_signalfd(const int *sigs, int n);

/* Does accept(2)'s ERR mean "out of fds or memory": stop watching, retry on a timer? */
bool sys_accept_backoff(int err);

#endif
