/*
 * The helper process of a restore: forked from us, it sets up everything
 * that needs no memory of the old process (the open files at their numbers,
 * stdio, the userfaultfd, cwd, umask, personality, signal handlers,
 * sigaltstack, tid address, robust list, comm), maps the two-page trampoline
 * the plan chose, reports the fds it made through a pipe, blocks every signal
 * and sleeps until we seize it.
 *
 * Knows nothing about ptrace or the address space to rebuild: it runs only
 * ordinary system calls on itself, before it is seized.
 */
#ifndef UFFD_INJECT_RESTORE_HELPER_H
#define UFFD_INJECT_RESTORE_HELPER_H

#include "rs.h"

/*
 * Fork the helper (R->child, R->pidfd) and wait until it is ready, its
 * report in R->rep. Returns 0 or -errno with R->why.
 */
int restore_helper_start(struct rs *r);

/*
 * A process of a tree but the root: wait until its helper, forked by its
 * parent's helper (PARENT, in our pid namespace), is ready. 0 or -errno.
 */
int restore_helper_await(struct rs *r, pid_t parent);

/* --pidns, the restore done: let the init outlive us. 0 or -errno (R->why). */
int restore_helper_release(struct rs *r);

#endif
