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

#include "dump_area.h"
#include "procfs.h"
#include "ptrace.h"
#include "track.h"
#include "vma.pb-c.h"

struct dump_opts {
	pid_t pid;
	const char *dir;	/* created if missing; must not hold a dump */
	bool kill;		/* SIGKILL the target once the images are synced */
	bool leave_stopped;	/* ... or SIGSTOP it (for a migration: kill or SIGCONT it later) */
	bool no_scan;		/* read /proc/PID/pagemap words instead of PAGEMAP_SCAN */
	bool buffered;		/* write pages-1.img through the page cache, not O_DIRECT */
	bool hold;		/* keep the target frozen and hand it to the caller (struct dump_held) */
	bool no_locked;		/* refuse mlock()ed areas (their pages cannot be dropped) */
	bool tree;		/* PID and every descendant (with kill or leave_stopped) */
	/*
	 * Pre-copy (precopy.h). PREDUMP: a round that leaves the target running
	 * and tracked (frozen only to read and reset the written set), starting
	 * a chain, or continuing PREV. PREV without PREDUMP: the last round,
	 * frozen throughout; the tracker is taken down.
	 */
	bool predump;
	const char *prev;	/* the previous round's image dir, or NULL */
	FILE *out;		/* where the summary goes; NULL for none */
};

/* A pagemap entry as written: NR pages at VADDR of area AREA (index into the VMAs). */
struct dump_pe {
	uint64_t vaddr;
	uint64_t nr;
	uint32_t flags;
	uint32_t area;
};

/* Where the dump's VmFlags came from. */
enum dump_areas_read {
	DUMP_AREAS_FROZEN,	/* smaps read with the target frozen */
	DUMP_AREAS_BEFORE,	/* smaps read before the freeze, maps unchanged at it */
	DUMP_AREAS_AGAIN,	/* read before, but maps or VmLck changed: read again frozen */
};

struct dump_stats {
	uint64_t pages;		/* written to pages-1.img */
	uint64_t lazy_pages;	/* of those, flagged LAZY|PRESENT */
	uint64_t holes;		/* present pages left out because they read all zero */
	uint64_t poisoned;	/* of the pages, unreadable ones recorded PE_POISON */
	size_t vmas;
	size_t entries;		/* pagemap entries, the head not counted */
	size_t threads;
	bool scanned;		/* PAGEMAP_SCAN found the pages (else pagemap words) */
	double read_s;		/* spent reading the target's memory */
	double write_s;		/* spent writing pages-1.img (before the sync) */
	double frozen_s;	/* from the freeze to the detach (or the kill) */
	double total_s;
	enum dump_areas_read areas_read;
	bool read_ahead;	/* let go (or stopped) once read, before the pages file was written */
	/* Pre-copy rounds only. */
	unsigned round;		/* 1 for the first of a chain */
	uint64_t written_pages;	/* the written set read (zero pages included) */
	uint64_t parent_pages;	/* left to the previous round's images */
	uint64_t fresh_pages;	/* present, unwritten, not in the chain: copied */
	uint64_t dropped_pages;	/* in the chain, dropped since: holes now */
	uint64_t skipped_pages;	/* could not be read while it ran: next round */
	unsigned untracked;	/* areas copied whole */
};

/*
 * What a dump with O->hold leaves to its caller: the target still frozen,
 * the published images, and what was written about every page. The caller
 * owns it all and ends with dump_held_release().
 */
struct dump_held {
	struct pt pt;		/* every thread stopped */
	pid_t pid;
	int pidfd;
	int dirfd;		/* the image directory */
	size_t nvmas;
	VmaEntry *vmas;
	struct dump_area *areas;
	struct dump_pe *pe;	/* in address order, as in pagemap-PID.img */
	size_t npe;
	struct dump_range *eager;	/* sorted, disjoint: pages that stay resident */
	size_t neager;
	/* Where the dumped areas have pages (present or swapped, zero ones too),
	 * in address order; gaps of less than DUMP_SPAN_GAP bridged. */
	struct dump_range *spans;
	size_t nspans;
	double frozen_at;	/* CLOCK_MONOTONIC seconds of the freeze */
	bool *guarded;		/* per area: VmFlags say it may hold guard markers (NULL: unknown) */
	bool *merged;		/* per area: VmFlags say KSM may merge its pages (NULL: unknown) */
	struct procfs_maps pre;	/* the areas as read before the freeze (n 0: read frozen) */
	/*
	 * The last round of a chain: its tracker, still armed (track.ufd >= 0),
	 * and the areas it holds. Take it down with dump_held_untrack() before
	 * registering those areas elsewhere; dump_held_release() does it too.
	 */
	struct track track;
	struct dump_range *trackr;
	size_t ntrack;
};

#define DUMP_SPAN_GAP	(64ull << 20)

/*
 * For the tests of what a killed uffd-inject leaves behind: die by SIGKILL
 * at step WHERE when UFFD_INJECT_TEST_DIE_AT names it; SIGKILL the target
 * PIDFD there when UFFD_INJECT_TEST_KILL_TARGET_AT does. For the tests of
 * a target that changes at a given step: when UFFD_INJECT_TEST_SIGNAL_AT
 * names WHERE, send it signal UFFD_INJECT_TEST_SIGNAL and wait (up to 20 s)
 * until the file UFFD_INJECT_TEST_WAIT_GROW grows (the target's log).
 */
void dump_test_hook(const char *where, int pidfd);

/*
 * Take H's tracker down, if any: close the target's copy (an injected call:
 * H must still hold it), unregister its areas and close ours.
 */
void dump_held_untrack(struct dump_held *h);

/* Let the target go (if still held) and free H. */
void dump_held_release(struct dump_held *h);

/*
 * After the thaw of a hand-over whose areas were read before the freeze
 * (PRE, taken from a dump_held): read PID's smaps again and compare the
 * VmFlags that madvise, mseal and mlock set. 0 when none moved (or PRE is
 * empty, or PID is gone); -EAGAIN with WHY naming the first area that
 * changed since that read (before the freeze or after the thaw: this
 * cannot tell), or another -errno with WHY when smaps cannot be read.
 */
int dump_held_recheck(pid_t pid, const struct procfs_maps *pre, char *why, size_t len);

/*
 * Dump O->pid into O->dir. Errors are printed to stderr naming the pid and
 * the file at fault; the target is then let go as it was and the directory
 * left without images. Returns 0 or -errno. With O->hold, H (which must then
 * be given) receives the frozen target on success. With O->tree, O->pid and
 * every descendant, all frozen before any is read (ST: their sums).
 */
int dump_run(const struct dump_opts *o, struct dump_stats *st, struct dump_held *h);

#endif
