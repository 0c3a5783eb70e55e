/*
 * uffd-inject restore: bring back a process and its threads dumped with
 * `uffd-inject dump --kill`, without CRIU: a forked helper is emptied and
 * rebuilt in place through the ptrace engine, its anonymous memory left
 * empty and handed to uffd-manager, which serves it on demand.
 */
#ifndef UFFD_INJECT_RESTORE_H
#define UFFD_INJECT_RESTORE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "tls.h"

struct restore_opts {
	const char *dir;
	const char *socket;	/* the manager's (unused with eager) */
	bool eager;		/* write every page now; no manager */
	const char *stdio;	/* fds 0-2 that were not files: "inherit" (NULL), "null", or a path */
	FILE *out;		/* the new pid and a summary; NULL for none */
	const char *page_server;	/* "HOST:PORT": the manager fetches the lazy pages there */
	bool pidns;		/* into a new pid namespace, under an init of ours */
	struct tls_opts tls;	/* with page_server */
};

struct restore_stats {
	pid_t pid;		/* of the restored process */
	pid_t nspid;		/* its pid in its own pid namespace (--pidns), else pid */
	pid_t init;		/* --pidns: the namespace's init (its parent), else 0 */
	uint64_t eager_pages;	/* written before it ran */
	uint64_t lazy_pages;	/* left to the manager */
	uint64_t poisoned_pages;	/* poisoned here (PE_POISON, not lazy or --eager) */
	unsigned syscalls;	/* run in the helper */
	unsigned threads;	/* brought back, the main one included */
	unsigned moved;		/* of them, not at their dumped tid (it was taken) */
	double total_s;		/* from the start to the process running */
};

/*
 * Restore the process in O->dir. Prints why on stderr when it fails; the
 * half-built process is then killed. Returns 0 or -errno.
 */
int restore_run(const struct restore_opts *o, struct restore_stats *st);

#endif
