/*
 * One round of pre-copy, inside a dump: which pages to copy and which the
 * previous round's images already hold.
 *
 * Round 1 (a new chain) makes a fresh tracker (track.h) after taking any old
 * one down, registers the anonymous private areas and resets their written
 * set while copying everything, as a plain dump does. Round N+1, given the
 * image dir of round N (whose uffd-track-PID file names the tracker), reads
 * and resets the written set with the target frozen and sorts every page of
 * a tracked area:
 *   - written since round N: copied (all-zero ones become holes);
 *   - present or swapped, not written, and held by the chain: a PE_PARENT
 *     entry (round N's dir is the `parent` link);
 *   - present or swapped, not written, not held by the chain: copied (never
 *     trusted to be zero);
 *   - none (never touched, or dropped with MADV_DONTNEED since round N):
 *     a hole, so it restores as zero and never as round N's stale copy.
 * Areas that are not tracked (new since round N, moved by mremap, file
 * private, the vdso, or registration refused) are copied whole, as by a
 * plain dump: tracking only ever saves work, correctness never rests on it.
 *
 * A round resets the written set, so the dir it continues can never be
 * continued again: it gets a uffd-track-PID.next file naming its successor,
 * and a round given a dir that has one refuses it.
 */
#ifndef UFFD_INJECT_PRECOPY_H
#define UFFD_INJECT_PRECOPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "dump.h"
#include "dump_area.h"
#include "pagemap.h"
#include "pages.h"
#include "procfs.h"
#include "track.h"

#define PRECOPY_MAX_ROUNDS	(PAGEMAP_MAX_DEPTH - 2)	/* chain depth the readers follow */

struct precopy {
	/* Set by the caller. */
	pid_t pid;
	const char *prev;	/* round N's image dir; NULL: start a chain (round 1) */
	const char *dir;	/* this round's dir, for messages and the .next file */
	bool last;		/* the last round: read the written set, no reset */

	/* What the round found; read by the caller. */
	unsigned round;		/* 1 for a new chain */
	bool *tracked;		/* per area: its written set was read */
	bool *guarded;		/* per area, last round: its walk met a guard marker */
	struct dump_range *copy;	/* pages of tracked areas to read, in address order */
	size_t ncopy;
	struct dump_range *parent;	/* pages the chain holds, in address order */
	size_t nparent;
	uint64_t written_pages;	/* reported written (zero ones included) */
	uint64_t parent_pages;
	uint64_t fresh_pages;	/* present, not written, not in the chain: copied */
	uint64_t dropped_pages;	/* in the chain, now none: holes */
	unsigned untracked;	/* dumpable areas copied whole */
	struct track t;		/* the tracker in use */
	char why[768];

	/* Private to precopy.c. */
	struct pages_cache cache;
	struct pagemap *chain;	/* round N's pagemap (with its parents) */
	char prev_abs[4096];	/* round N's dir, absolute: the `parent` link */
	uint64_t prev_ino;	/* the tracker round N names */
	bool marked;		/* we created round N's .next file */
	bool made_link, made_record;	/* and this round's `parent` and uffd-track-PID */
	size_t capcopy, capparent;
	struct track_region *reg;
	size_t nreg, capreg;
};

/* Load round N's images and what it says of its tracker (before the freeze). */
int precopy_load_prev(struct precopy *pc);

/*
 * With the target frozen (PT) and its areas M / VMAS / AREAS classified:
 * take the tracker (round N's, or a new one for round 1, after unregistering
 * and closing any other), register what is not tracked, and read and reset
 * the written set into PC->copy and PC->parent. Returns 0 or -errno with
 * PC->why.
 */
int precopy_scan(struct precopy *pc, struct pt *pt, const struct procfs_maps *m,
		 const VmaEntry *vmas, const struct dump_area *areas);

/*
 * Take down every tracker of the frozen target PT (areas M): unregister the
 * areas they write-protect, close the target's copies. For hand-overs, which
 * register those areas themselves, and for the last round.
 */
void precopy_disarm_all(struct pt *pt, const struct procfs_maps *m);

/* Unregister the tracker's areas through our copy (the target may run), and close ours. */
void precopy_unregister(struct precopy *pc, const struct procfs_maps *m);

/* Unregister the tracker's areas and close it (the last round; PT frozen). */
void precopy_disarm(struct precopy *pc, struct pt *pt, const struct procfs_maps *m);

/*
 * Add the PE_PARENT entries to the NPE entries *PE (data pages, address
 * order), each flagged lazy as its area's pages are except where EAGER says
 * the page stays resident; likewise the parent ranges to *SPANS. Returns 0
 * or -ENOMEM.
 */
int precopy_merge(struct precopy *pc, const struct dump_area *areas,
		  const struct dump_range *eager, size_t neager, struct dump_pe **pe, size_t *npe,
		  struct dump_range **spans, size_t *nspans);

/* Write the `parent` link and uffd-track-PID into DIRFD (before publishing). 0 or -errno. */
int precopy_write_files(struct precopy *pc, int dirfd);

/* A failed round: remove what precopy_write_files made and, if the written set
 * was not reset yet, round N's .next file. */
void precopy_abort(struct precopy *pc, int dirfd, bool reset);

void precopy_free(struct precopy *pc);

#endif
