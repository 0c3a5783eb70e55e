/* The manager's listening socket: a path we bind, or one systemd passes us. */
#ifndef UFFD_LISTEN_H
#define UFFD_LISTEN_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Listen on PATH (SOCK_SEQPACKET, mode 0600), replacing a stale socket file
 * but refusing if a manager answers there. Returns the fd or -errno, with
 * WHY filled.
 */
int listen_bind(const char *path, char *why, size_t len);

/* The socket passed by systemd (LISTEN_FDS/LISTEN_PID), or -1 if none. */
int listen_from_systemd(char *why, size_t len);

#endif
