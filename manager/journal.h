/*
 * The journal: what a new daemon needs to take every process back after
 * this one died (restart.h). One memfd, shared between the daemon and its
 * keeper (which shares the daemon's fd table: keeper.h), so it outlives a
 * SIGKILL: every store the daemon made is in the memfd's pages the moment it
 * was made. No syscall on the fault path: a record is a few memory stores.
 *
 * What it holds:
 * - an append-only log of records: a hand-over (its uffd, pidfd and image
 *   dir as fd numbers in the shared table, image id, client uid/gid), a
 *   fork (the child's id and uffd fd), a pid learned, the events that
 *   change a model (REMOVE, REMAP, UNMAP) and the ends (released, gone).
 *   Replaying it over the models built from the images gives every model
 *   but for pages placed since, which the process holds (restart.c finds
 *   them, and a copy onto them is refused by the kernel anyway).
 * - the read buffer: a uffd is read straight into the journal, with the
 *   id of its process and the log's length at that moment. A read
 *   completes the events it returns (the process goes on) before anything
 *   can record them, and a daemon killed by SIGKILL inside read(2) dies
 *   with the messages already copied out: here, where the keeper finds
 *   them and records them (journal_settle). A fork's uffd is in the shared
 *   fd table by then too. So no event read is ever lost.
 * - one slot of counters per process, for status after a restart.
 *
 * Records are written before the event is applied and before anything
 * relies on it; the count of records is published after each record, so a
 * reader never sees half a record. Knows nothing about the daemon.
 */
#ifndef UFFD_JOURNAL_H
#define UFFD_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <linux/userfaultfd.h>

#define JOURNAL_MAGIC	0x4a4c46465546ull	/* "UFFLJ" */
#define JOURNAL_VERSION	1u
/* Slots for counters: more processes than this are served, just not counted across a restart. */
#define JOURNAL_SLOTS	65536u
/* Messages one read takes (the read buffer lives in the journal's first page). */
#define JOURNAL_RBUF	64

enum jrec_type {
	J_HELLO = 1,	/* id; fd: uffd, pidfd, dirfd; a: pid, image_id, uid | gid << 32, JH_*, slot+1 */
	J_FORK,		/* id: parent; fd[0]: the child's uffd; a: child id, slot+1 */
	J_PID,		/* id; fd[0]: its pidfd; a[0]: pid */
	J_REMAP,	/* id; a: from, to, len */
	J_REMOVE,	/* id; a: start, end */
	J_UNMAP,	/* id; a: start, end */
	J_RELEASED,	/* id: fully served, its uffd and pidfd read until it exits */
	J_END,		/* id: gone; its fds are closed after this record */
	J_GROUPS,	/* id: a hand-over's client's supplementary groups; fd[0]: how many in a (<= 5) */
};

/* J_HELLO flags. */
#define JH_REMOTE	1u	/* pages from a page server */
#define JH_CRIU		2u	/* a task of `uffd-manager criu` */
#define JH_SHM_LAZY	4u	/* its shared memory objects are served too (HELLO_F_SHM_LAZY) */

struct jrec {
	uint32_t type;
	int32_t fd[3];
	uint64_t id;
	uint64_t a[5];
};

/* Counters of one process (a copy of the daemon's, refreshed as it serves). */
struct jslot {
	uint64_t id;		/* 0: free */
	uint64_t pages_total, pages_copied, pages_zeroed, faults;
	uint64_t ev_fork, ev_remap, ev_remove, ev_unmap;
	uint64_t eagain, enoent, eexist;
	uint64_t adopted;	/* restarts it went through */
	uint64_t spare[3];
};

struct jhdr {
	uint64_t magic;
	uint32_t version;
	uint32_t clean;		/* the daemon exited on its own, nothing left to adopt but what the log says */
	uint64_t reading;	/* id whose uffd is being read; 0: none */
	uint64_t next_id;	/* the last id handed out */
	uint64_t nrec;		/* records in the log (published last) */
	uint64_t cap;		/* records the file has room for */
	uint64_t restarts;	/* adoptions so far */
	uint64_t reading_nrec;	/* nrec when the read began: later records are redone from RBUF */
	uint32_t lost;		/* a record could not be written (full): the log is not whole */
	uint32_t pad;
	struct uffd_msg rbuf[JOURNAL_RBUF];	/* the last read, zeroed before it */
};

struct journal {
	int fd;			/* -1: no journal (every call is a no-op) */
	struct jhdr *h;
	struct jslot *slots;
	struct jrec *log;
	size_t size;		/* bytes mapped */
	uint32_t slot_hint;
	size_t rbuf_used;	/* bytes the last read left in rbuf */
};

/* A new journal in a fresh memfd. 0 or -errno. */
int journal_create(struct journal *j);

/* Map the journal in FD (taken over). 0 or -errno (-EINVAL: not a journal). */
int journal_open(struct journal *j, int fd);

/* Unmap and close. */
void journal_close(struct journal *j);

/*
 * Forget every record (the daemon serves nothing: a new one would have
 * nothing to take back) and give the log's memory back. Ids go on.
 */
void journal_reset(struct journal *j);

/* Append R. 0, or -ENOMEM when the memfd cannot grow (the caller says so loudly). */
int journal_append(struct journal *j, const struct jrec *r);

/*
 * Begin a read of ID's uffd: returns the buffer to read into (the journal's,
 * zeroed; BUF when there is no journal).
 */
struct uffd_msg *journal_read_begin(struct journal *j, uint64_t id, struct uffd_msg *buf);

/* The read returned N bytes and its events are recorded. */
void journal_read_end(struct journal *j, ssize_t n);

/*
 * After a daemon died: record the events of a read it did not finish with
 * (ID's, in the read buffer), in place of any record it made of them, as
 * RECORD would (called per message, with the new record's type). Clears
 * the mark. Returns how many messages there were.
 */
unsigned journal_settle(struct journal *j,
			void (*record)(void *arg, uint64_t id, const struct uffd_msg *m),
			void *arg);

/* A fresh slot for ID (0 if none is free: then not counted). Returns the index + 1. */
uint32_t journal_slot_get(struct journal *j, uint64_t id);
void journal_slot_put(struct journal *j, uint32_t slot1);

/* The slot with index + 1 SLOT1, or NULL. */
struct jslot *journal_slot(struct journal *j, uint32_t slot1);

/* Records in the log, as published. */
static inline uint64_t journal_nrec(const struct journal *j)
{
	return j->h ? __atomic_load_n(&j->h->nrec, __ATOMIC_ACQUIRE) : 0;
}

/* Supplementary groups kept per hand-over; a client with more is read with these. */
#define JOURNAL_GROUPS	32

/* A process as the log tells it. */
struct jentry {
	uint64_t id;
	uint64_t parent;	/* forked from; 0: handed over */
	uint64_t root;		/* the hand-over whose images it is served from (0: unknown) */
	uint64_t fork_rec;	/* index of its J_FORK record */
	int uffd, pidfd, dirfd;	/* fd numbers in the writer's table, -1 */
	pid_t pid, parent_pid;	/* 0: unknown */
	uint32_t image_id, uid, gid, slot1, flags;
	uint32_t ngroups;	/* the client's supplementary groups (J_GROUPS), at most JOURNAL_GROUPS */
	uint32_t groups[JOURNAL_GROUPS];
	enum { JE_LIVE, JE_RELEASED, JE_ENDED } state;
};

/*
 * Every process the log names, sorted by id, in *OUT (malloc'd). A child's
 * parent is resolved while the chain lasts (dirfd, image of its root).
 * 0 or -ENOMEM.
 */
int journal_scan(const struct journal *j, struct jentry **out, size_t *n);

/* The entry with ID in the sorted array E, or NULL. */
struct jentry *jentry_find(struct jentry *e, size_t n, uint64_t id);

#endif
