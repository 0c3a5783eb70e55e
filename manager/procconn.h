/*
 * The proc connector (netlink, CN_IDX_PROC): fork and exit of every process,
 * used to learn the pid of a forked child and to notice exits at once.
 */
#ifndef UFFD_PROCCONN_H
#define UFFD_PROCCONN_H

#include <sys/types.h>

#include "daemon.h"

/* Subscribe; returns NULL (and logs why) where the connector is not available. */
struct procconn *procconn_open(struct daemon *d);
void procconn_close(struct procconn *pc);

#endif
