/*
 * Write tracking for pre-copy: a userfaultfd made inside the target with
 * only UFFD_FEATURE_WP_ASYNC and UFFD_FEATURE_WP_UNPOPULATED (the tracker),
 * its anonymous private areas registered in write-protect mode, and the
 * written set read and reset in one step with the PAGEMAP_SCAN ioctl of
 * /proc/PID/pagemap (PM_SCAN_WP_MATCHING).
 *
 * A tracker never blocks anyone: write-protect faults are resolved by the
 * kernel (async), it has no missing mode and no events. So a forked child
 * that inherits the fd (it cannot be kept from a fork), or a tool that dies
 * between rounds, leaves nothing that can make the target wait; the fork's
 * areas are not registered (no EVENT_FORK: the kernel drops them), and an
 * mremap'd area loses its registration (no EVENT_REMAP), so both read as
 * untracked and are copied whole.
 *
 * The target keeps its copy at a high close-on-exec fd between rounds (the
 * registration lives as long as some fd does). A tracker is known by its
 * features and named by its inode number, which the images of each round
 * record, so that a chain is continued only with the tracker that made it.
 */
#ifndef UFFD_INJECT_TRACK_H
#define UFFD_INJECT_TRACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pmscan.h"

#define TRACK_FEATURES	((1ull << 15) | (1ull << 13))	/* WP_ASYNC | WP_UNPOPULATED */
#define TRACK_MAX	8	/* trackers found in one target, at most */

struct pt;

/* The trackers in a target's fd table: its fd numbers and their inode numbers. */
struct track_found {
	int fd[TRACK_MAX];
	uint64_t ino[TRACK_MAX];
	size_t n;
};

/* A tracker, the target's copy and ours. */
struct track {
	int tfd;		/* the target's fd, -1 if none */
	int ufd;		/* ours (pidfd_getfd), -1 if none */
	uint64_t ino;
};

/* Is fd FD of PID a userfaultfd with exactly the tracker's features? */
bool track_is_tracker(pid_t pid, int fd);

/*
 * List the trackers in PID's fd table into F. Returns 0, -errno, or
 * -EMFILE when there are more than TRACK_MAX.
 */
int track_find(pid_t pid, struct track_found *f, char *why, size_t len);

/*
 * Make a tracker inside the frozen target PT (at its highest free fd below
 * 1024 and its fd limit, close-on-exec), take our copy and enable its
 * features. Returns 0 or -errno with WHY; on failure nothing is left in it.
 */
int track_arm(struct pt *pt, struct track *t, char *why, size_t len);

/* Take our copy of the target's tracker at fd TFD. 0 or -errno with WHY. */
int track_attach(struct pt *pt, int tfd, struct track *t, char *why, size_t len);

/* Register [START, END) in write-protect mode. 0 or -errno. */
int track_register(const struct track *t, uint64_t start, uint64_t end);

/* Unregister [START, END); 0 or -errno (-ENOENT/-EINVAL when nothing is there). */
int track_unregister(const struct track *t, uint64_t start, uint64_t end);

/*
 * Make [START, END) read as written at the next scan (clear its protection),
 * for pages a round could not copy. 0 or -errno.
 */
int track_mark_written(const struct track *t, uint64_t start, uint64_t end);

/*
 * Close the target's copy (an injected close; PT must be frozen) and ours.
 * The caller unregisters first: another copy (a forked child's) would keep
 * the registration alive.
 */
void track_close(struct pt *pt, struct track *t);

/* Close only the target's copy (PT frozen); ours keeps the tracker alive. */
void track_close_target(struct pt *pt, struct track *t);

/* One page region of a scan: [start, end) with PAGE_IS_* categories. */
struct track_region {
	uint64_t start;
	uint64_t end;
	uint64_t cat;
};

/*
 * Read and reset (RESET; else only read, for a last round) the written set
 * of [START, END) of the pagemap PMFD: every
 * present or swapped page is reported with its categories (PAGE_IS_WRITTEN,
 * PRESENT, SWAPPED, PFNZERO) and write-protected in the same step, under the
 * page table lock, so no write falls between the two. Pages not reported
 * are none (never touched, or dropped with MADV_DONTNEED): they read zero.
 * Regions are appended to *R (grown as needed). Guard markers
 * (MADV_GUARD_INSTALL) are never reported; without RESET, *GUARD (if not
 * NULL) becomes true when the range holds one, found in the same walk.
 * Returns 0, -EPERM when the range is not registered with a
 * write-protect-async userfaultfd (untracked), or -errno with WHY.
 */
int track_scan(int pmfd, uint64_t start, uint64_t end, bool reset, struct track_region **r,
	       size_t *n, size_t *cap, bool *guard, char *why, size_t len);

#endif
