/*
 * uffd-inject restore of a process tree (dump --tree): see restore_tree.c.
 */
#ifndef UFFD_INJECT_RESTORE_TREE_H
#define UFFD_INJECT_RESTORE_TREE_H

#include "restore.h"

/*
 * Restore every process of O->dir, parents the parents of their children,
 * pids, groups and sessions as recorded. Prints why on stderr when it
 * fails; every process of the tree is then killed. Returns 0 or -errno.
 */
int restore_tree_run(const struct restore_opts *o, struct restore_stats *st);

#endif
