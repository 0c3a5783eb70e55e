/*
 * uffd-inject lazy: dump a running process, then hand its anonymous memory
 * to uffd-manager through a userfaultfd made inside it, so that it goes on
 * running while its pages come back on touch and in the background.
 */
#ifndef UFFD_INJECT_LAZY_H
#define UFFD_INJECT_LAZY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

struct lazy_opts {
	pid_t pid;
	const char *dir;	/* images: created if missing; must not hold a dump */
	const char *socket;	/* the manager's socket */
	int timeout_ms;		/* for the manager's answer; 0 = 10 s */
	const char *prev;	/* the last pre-dump round: copy only what was written since */
	bool pre_copy;		/* do the rounds first, into DIR/pre-N, then hand over */
	unsigned max_rounds;	/* of pre_copy, the final one not counted; 0 = 8 */
	FILE *out;		/* where the summary goes; NULL for none */
};

struct lazy_stats {
	uint64_t lazy_pages;	/* handed to the manager */
	uint64_t eager_pages;	/* anonymous pages kept resident */
	/*
	 * Bytes of the target's RSS, frozen, before and after the drop (with a
	 * graveyard: once it is freed, so with what the manager served since).
	 */
	uint64_t rss_before;
	uint64_t rss_after;
	uint64_t anon_before;	/* RssAnon */
	uint64_t anon_after;
	uint64_t shmem_after;	/* RssShmem after the drop: shared memory punched out */
	uint64_t huge_after;	/* HugetlbPages after the drop, frozen (never moved out) */
	unsigned areas;		/* registered with the userfaultfd */
	int kept_fd;		/* the target's own copy of the uffd */
	double dump_s;		/* from the start to the images on disk */
	double frozen_s;	/* from the freeze to the detach */
	double total_s;
	unsigned rounds;	/* pre-copy rounds done before the hand-over */
	uint64_t final_pages;	/* pages copied while frozen (with a chain) */
	uint64_t parent_pages;	/* pages the chain held */
	/* The drop out of the freeze (grave.h). */
	unsigned grave_areas;	/* areas moved out of the way; 0: all dropped in the freeze */
	uint64_t grave_pages;	/* their lazy pages */
	const char *drop_skip;	/* why not (a static string), or NULL */
	uint64_t grave_base;	/* where the graveyard was in the target, and its length */
	uint64_t grave_len;
	uint64_t stub;		/* the dropper's two pages; still there if stub_left */
	bool stub_left;
	bool stub_foreign;	/* it exec'd meanwhile: the stub went with its old memory */
	double dropper_s;	/* from the thaw's end to the graveyard freed; -1: not waited for */
	double stop_s;		/* one thread stopped, after, to remove the dropper's code:
				 * not in frozen_s; the summary prints it beside */
	bool flags_before;	/* VmFlags read before the freeze, checked after the thaw */
	bool flags_moved;	/* and that check found a change (said on stderr) */
};

/*
 * Hand O->pid over to the manager at O->socket. Errors are printed to
 * stderr naming the pid; the target is then left running with all of its
 * memory. Returns 0 or -errno.
 */
int lazy_run(const struct lazy_opts *o, struct lazy_stats *st);

#endif
