/*
 * Taking a process over and following it: build its memory model from its
 * images, register its lazy ranges, watch its uffd and pidfd, apply the
 * events the uffd reports (FORK starts a child with a copy of the model;
 * REMAP, REMOVE, UNMAP change the model) and queue its faults for
 * serve.h. The state and the ends are proc.h.
 */
#ifndef UFFD_TARGET_H
#define UFFD_TARGET_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "proc.h"

/*
 * Take over a process handed over by a client: build its model from IMG,
 * register its lazy ranges unless REGISTERED, and start serving its pages
 * from SRC. Returns the live target (one with nothing to serve is released
 * from the loop afterwards, never inside this call), or NULL with REASON
 * filled for the client; the fds then stay the caller's.
 */
struct target *target_create(struct daemon *d, int uffd, int pidfd, pid_t pid,
			     uint32_t image_id, struct timage *img, bool registered,
			     const struct page_source *src, char *reason, size_t reason_len);

/*
 * The same with the model already built from IMG (timage_model, off the
 * loop): BUILT is taken over (left empty), so nothing is built here.
 */
struct target *target_adopt(struct daemon *d, int uffd, int pidfd, pid_t pid,
			    uint32_t image_id, struct timage *img, struct model *built,
			    bool registered, const struct page_source *src, uid_t uid, gid_t gid,
			    char *reason, size_t reason_len);

/* What a new daemon knows of a process it takes back (restart.c). */
struct target_restore_info {
	uint64_t id, parent_id;
	int uffd, pidfd;	/* pidfd -1: pid unknown */
	pid_t pid, parent_pid;
	uint32_t image_id, slot1;
	uint32_t adopted;	/* restarts it went through, this one included */
	const struct target_stats *st;	/* counters carried over, or NULL */
};

/*
 * Serve again a process a daemon before this one served: its ranges are
 * registered, its model BUILT (taken over), its id and counters kept, its
 * history already in the journal. Takes the fds (NULL: they are the
 * caller's to close).
 */
struct target *target_restore(struct daemon *d, const struct target_restore_info *ri,
			      struct timage *img, struct model *built);

/*
 * Read every queued message of T's uffd, record and apply the events, then
 * serve. Returns the number of events (not faults) applied. T may be dead
 * afterwards.
 */
unsigned target_drain(struct target *t);

/* Record the supplementary groups of T's client, with which its images are read again after a restart. */
void target_journal_groups(struct target *t, const gid_t *groups, size_t n);

/* Copy T's counters to its journal slot (what status shows after a restart). */
void target_sync_slot(struct target *t);

struct jrec;
/* Append R to the daemon's journal; a full journal is logged once. */
void target_journal(struct daemon *d, const struct jrec *r);

/*
 * What one hand-over may make the daemon allocate for its model, besides
 * the pagemap entries (--max-image-entries). Fixed: 65536 lazy areas is
 * more than a process may map by default (vm.max_map_count 65530), and
 * 512 MiB of bitmaps covers 16 TiB of lazy memory at one bit a page.
 */
#define TARGET_MAX_AREAS	65536u
#define TARGET_MAX_MODEL_BYTES	(512ull << 20)

/*
 * Build the model of IMG into MAP (initialised here), as target_create
 * would: it touches nothing but IMG and MAP, so any thread may call it.
 * Returns 0, or -errno with REASON filled and MAP empty.
 */
int timage_model(const struct timage *img, uint32_t image_id, bool remote, struct model *map,
		 char *reason, size_t reason_len);

/*
 * Check that IMG can be served: build its model once, as target_create
 * would, and forget it. REMOTE: the data comes from a page server, so lazy
 * pages need no data in the images. Returns 0 with *LAZY the pages to serve, or -errno
 * with REASON filled.
 */
int timage_check(const struct timage *img, uint32_t image_id, bool remote, uint64_t *lazy,
		 char *reason, size_t reason_len);

/*
 * Learn the pid of a forked child: a guess from the proc connector, or
 * CONFIRMED, from the thread id of one of its faults.
 */
void target_set_pid(struct target *t, pid_t pid, bool confirmed);

/* Forget T's pid (its pidfd too): it named another process (WHY, logged). */
void target_forget_pid(struct target *t, const char *why);

#endif
