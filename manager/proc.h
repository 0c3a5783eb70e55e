/*
 * One served process (struct target): its uffd and pidfd, its images
 * (shared with its forks), its memory model, the faults it waits on, its
 * counters; and how it leaves the daemon: fully served (target_release,
 * after which released.c reads its uffd until it exits), exited, killed,
 * or abandoned. Serving (serve.h) and the fill work on this state; taking
 * a process over and following its events is target.h.
 */
#ifndef UFFD_PROC_H
#define UFFD_PROC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon.h"
#include "imgtask.h"
#include "loop.h"
#include "model.h"
#include "uffd.h"

#define TARGET_HIST	32

/* The images of one hand-over, shared by the process and all its forks. */
struct timage {
	unsigned refs;
	int dirfd;
	unsigned load_flags;	/* IMG_LOAD_*, as read */
	struct img_task task;
};

struct fault {
	uint64_t addr;
	uint64_t t0;		/* when it was read, ns */
	uint32_t tid;
	bool minor;		/* UFFD_PAGEFAULT_FLAG_MINOR: in the shmem object, not mapped here */
};

/* Fetched data that could not be placed yet (EAGAIN: events pending). */
struct rheld {
	struct rheld *next;
	uint64_t addr, img, len;	/* what is left of it */
	uint8_t *buf;			/* the whole answer, freed with this */
	uint64_t off;			/* where ADDR's bytes are in BUF */
};

struct target_stats {
	uint64_t pages_total;
	uint64_t pages_copied;
	uint64_t pages_zeroed;
	uint64_t pages_poisoned;	/* PE_POISON pages placed with UFFDIO_POISON */
	uint64_t pages_continued;	/* shared memory pages mapped with UFFDIO_CONTINUE */
	uint64_t minor_faults;		/* of the faults, minor ones */
	uint64_t faults;
	uint64_t ev_fork, ev_remap, ev_remove, ev_unmap;
	uint64_t eagain, enoent, eexist;
	uint64_t hist[TARGET_HIST];	/* log2 us of fault service time */
};

/* How a process left the daemon; EXITED unless said otherwise. */
enum target_end {
	TE_EXITED,	/* it exited (or its mm went away) first */
	TE_SERVED,	/* every lazy page is in */
	TE_FAILED,	/* killed, abandoned or lost: it could not be served correctly */
};

struct target;

/*
 * Where a process's lazy pages come from: its images (serve.c's
 * serve_from_images) or a page server (rserve.c's rserve_source). The
 * caller that takes a process over picks it; a forked child keeps its
 * parent's.
 */
struct page_source {
	const char *name;
	bool remote;		/* lazy pages need no data in the images */
	/* Answer the fault at ADDR; *WAITING: its data is on its way (stay queued, not parked). */
	enum uffd_class (*fault)(struct target *t, uint64_t addr, bool *waiting);
	/* Place data held back for a drain (NULL: never any); false if it must wait again. */
	bool (*place_held)(struct target *t);
};

struct target {
	struct target *next;
	struct daemon *d;
	struct ev uffd_ev;
	int uffd;
	struct ev pid_ev;
	int pidfd;		/* -1 until a forked child's pid is known */
	pid_t pid;		/* 0 until known */
	pid_t parent_pid;	/* for forked children */
	uint64_t id;		/* unique in this daemon */
	uint64_t parent_id;	/* the target it was forked from, 0 if handed over */
	uint32_t image_id;
	char pfx[64];		/* "pid 1234 uffd 7:" for log lines */
	struct timage *img;
	struct model map;
	struct fault *faults;	/* read, not yet served (parked on EAGAIN) */
	size_t nr_faults, cap_faults;
	struct timer retry;
	struct timer read_later;	/* its uffd unwatched: no fd free for an event (serve_read_later) */
	unsigned read_tries;		/* reads that found no fd free, in a row */
	uint64_t fill_cursor;
	struct rheld *held;	/* remote mode: answers waiting for a drain */
	const struct page_source *src;
	bool remote;		/* src->remote: its pages come from the page server, not its images */
	uint64_t ev_seq;	/* events applied to the model so far */
	uint64_t stale_since;	/* the same as area.stale_since, for a page in no area */
	uint64_t stale_seq;	/* ev_seq at that time */
	uint64_t stale_dropped;	/* pages dropped as stale for good (logged once, then counted) */
	bool dead;
	bool parked;		/* has faults waiting for a drain (counted in daemon.nr_parked) */
	bool live;		/* announced: its end is reported to d->target_ended */
	uint32_t slot1;		/* its counters' slot in the journal (index + 1), 0: none */
	uint32_t adopted;	/* restarts of the daemon it went through */
	bool recorded_end;	/* its end is in the journal already */
	/*
	 * Taken back by a new daemon with its pid unknown: its fork's proc
	 * connector event went to the daemon before, so the next one of its
	 * parent's is another child's. Its pid comes from its first fault.
	 */
	bool pid_from_fault_only;
	/*
	 * Its pid is known to be the process behind its uffd: told by the
	 * process itself (HELLO) or by the thread id of one of its faults.
	 * A pid from the proc connector is a guess until then: no signal is
	 * sent through it, and an exit it reports is checked on the uffd.
	 */
	bool pid_confirmed;
	uint64_t pids_forgotten;	/* pids told for it that were another process's */
	uint8_t tid_misses;	/* faults whose thread id named no child of its parent (procfs reads) */
	struct timer probe;	/* its pid forgotten: ask its uffd now and then whether its mm lives */
	enum target_end end;
	struct target_stats st;
	struct wset *ws;	/* its working-set record (wset.h), or NULL */
	unsigned fw_jobs;	/* fill workers' jobs on it in flight (fillw.h) */
	uint64_t fw_claimed;	/* the pages those jobs hold */
	bool fw_hold;		/* a job ended short: no more jobs until the loop's own fill places pages */
	uint64_t last_fault_ns;	/* when its last fault was read (fill workers wait for a quiet spell) */
};

/* "pid 1234 uffd 7:" (or "child of ..." while the pid is unknown) for log lines. */
void target_set_prefix(struct target *t);

/* Tear down: the process exited or the daemon is going away. */
void target_destroy(struct target *t, const char *why);

/*
 * Every lazy page is in and no fault waits: unregister, and let go of the
 * process (its uffd is read on until it exits: released.h). Does nothing
 * while faults or held data remain.
 */
void target_release(struct target *t);

/* A result we cannot serve past at ADDR (RET, -errno, from WHAT): kill the process. */
void target_fail(struct target *t, uint64_t addr, int ret, const char *what);

/*
 * Stop serving a process we cannot serve correctly, without closing its
 * uffd (it would read zeros): it is killed when its pid is known, else it
 * waits on its next missing page.
 */
void target_abandon(struct target *t, const char *why);

/* The process has exited (ESRCH from its uffd): count it and tear it down. */
void target_exited(struct target *t);

/*
 * Its pid exited (pidfd, proc connector): tear it down if its uffd says its
 * mm is gone too; else the pid was another process's: forget it.
 */
void target_pid_exited(struct target *t);

/* Does T's uffd say its mm is gone? A 1-page UFFDIO_ZEROPAGE where no area of its model is. */
bool target_mm_gone(struct target *t);

/* Kill the process (it cannot be served correctly any more) and tear it down. */
void target_kill(struct target *t, const char *why);

/* The live target with this id, or NULL. */
struct target *target_by_id(struct daemon *d, uint64_t id);

/*
 * Load the images of IMAGE_ID from DIRFD (owned by the images from now on
 * when OWN_DIRFD: closed with the last reference). One reference; NULL
 * with ERR filled on failure (DIRFD stays the caller's).
 */
struct timage *timage_load(struct daemon *d, int dirfd, bool own_dirfd, uint32_t image_id,
			   struct img_err *err);

/*
 * The same without the daemon: any thread may call it (C is thread safe).
 * At most MAX_ENTRIES pagemap entries (0: no limit); LOAD_FLAGS as
 * img_task_load_opts takes them. The images do not own
 * DIRFD (img->dirfd is -1): the caller may give it to them.
 */
struct timage *timage_read(struct pages_cache *c, int dirfd, uint32_t image_id,
			   size_t max_entries, unsigned load_flags, struct img_err *err);

/*
 * Have the pages files that IMG's pagemaps copy from mapped ahead, off the
 * loop (pages_prefault), unless --no-prefault.
 */
void timage_prefault(struct daemon *d, const struct timage *img);

/* Take and drop a reference to the images of a hand-over (the last frees them). */
struct timage *timage_get(struct timage *img);
void timage_put(struct daemon *d, struct timage *img);

#endif
