/*
 * uffd-inject dump: freeze a live process, read its memory and write it as
 * CRIU images (inventory, pstree, mm, pagemap, pages) into a directory.
 */
#ifndef UFFD_INJECT_DUMP_H
#define UFFD_INJECT_DUMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "procfs.h"
#include "vma.pb-c.h"

struct dump_opts {
	pid_t pid;
	const char *dir;	/* created if missing; must not hold a dump */
	bool kill;		/* SIGKILL the target once the images are synced */
	bool no_scan;		/* read /proc/PID/pagemap words instead of PAGEMAP_SCAN */
	bool buffered;		/* write pages-1.img through the page cache, not O_DIRECT */
	FILE *out;		/* where the summary goes; NULL for none */
};

struct dump_stats {
	uint64_t pages;		/* written to pages-1.img */
	uint64_t lazy_pages;	/* of those, flagged LAZY|PRESENT */
	uint64_t holes;		/* present pages left out because they read all zero */
	size_t vmas;
	size_t entries;		/* pagemap entries, the head not counted */
	size_t threads;
	bool scanned;		/* PAGEMAP_SCAN found the pages (else pagemap words) */
	double read_s;		/* spent reading the target's memory */
	double write_s;		/* spent writing pages-1.img (before the sync) */
	double frozen_s;	/* from the freeze to the detach (or the kill) */
	double total_s;
};

/*
 * Dump O->pid into O->dir. Errors are printed to stderr naming the pid and
 * the file at fault; the target is then let go as it was and the directory
 * left without images. Returns 0 or -errno.
 */
int dump_run(const struct dump_opts *o, struct dump_stats *st);

/* What the dump does with the pages of one area. */
enum dump_kind {
	DUMP_NONE,	/* no pages: shared mappings, vvar, vsyscall */
	DUMP_ANON,	/* anonymous private: present and swapped pages, zero pages are holes */
	DUMP_COW,	/* file private: only the pages that are not the file's (copied on write) */
	DUMP_ALL,	/* the vdso: every present page */
};

struct dump_area {
	enum dump_kind kind;
	uint32_t pe_flags;	/* pagemap flags of its pages */
	bool note_locked;	/* mlock()ed: dumped, but the images do not say so */
};

/*
 * Describe area V of /proc/PID/smaps as a vma_entry and say what to dump of
 * it. Returns 0, or -ENOTSUP with WHY saying what cannot be represented.
 */
int dump_classify(const struct procfs_vma *v, VmaEntry *e, struct dump_area *a, char *why,
		  size_t len);

#endif
