/*
 * The hand-over's drop of big areas, taken out of the freeze.
 *
 * Inside the freeze, `lazy` must leave every lazy area empty before the
 * target runs again, or a page it writes afterwards would be lost to the
 * manager's copy. Dropping the pages there (MADV_DONTNEED), and before that
 * unregistering a pre-copy tracker (which clears the write-protect bit of
 * every page), walks and frees every page while the target waits: about a
 * tenth of a second per GiB. Instead each big area's pages are moved whole,
 * frozen, into a "graveyard" with one mremap(MREMAP_DONTUNMAP) each: the
 * area stays where it was, empty, with its flags (and the tracker's
 * registration, which then costs nothing to take down); only page tables
 * move (whole PMDs where nothing write-protects them: each piece lies
 * congruent to its source modulo 2 MiB), milliseconds for gigabytes. The
 * tracker has no remap event, so the moved pages lose its registration and
 * no event blocks the move. The pages that must stay resident are read back
 * from the graveyard and placed with UFFDIO_COPY (lazy.c).
 *
 * The graveyard is freed after the thaw, by the target itself: another
 * process cannot free its pages (process_madvise refuses MADV_DONTNEED). A
 * thread is added to the frozen target with an injected clone(), running a
 * stub of a few instructions in a page of its own: MADV_DONTNEED of the
 * graveyard in 64 MiB steps (so the target's own mmap, munmap and fork
 * wait for one step at most), munmap(graveyard), its result into a data
 * page, exit(0); every signal blocked (it inherits the
 * mask set on the injecting thread around the clone), untraced (we do not
 * trace clones). It runs while the target runs. Its tid is the one thread
 * of the target we do not hold (what clone() returns is its number in the
 * target's pid namespace, which may not be ours). Once it has exited, one
 * thread of the target is stopped for a moment to unmap the stub, after
 * checking that the stub is still ours (same address, same bytes: our
 * nonce): an exec meanwhile kills the dropper and leaves a new mm where that
 * address means nothing. The graveyard and the stub are MADV_DONTFORK, so a
 * fork meanwhile copies neither.
 *
 * Not used (the drop stays in the freeze, as before) for small areas,
 * hugetlb and grow-down stacks, areas that may hold guard markers (a move
 * would take them away), KSM areas (a move unmerges their pages, in the
 * freeze), a target with a seccomp filter in any thread (the dropper's
 * calls would meet it: PTRACE_O_SUSPEND_SECCOMP covers only traced
 * threads), a kernel without PIDFD_THREAD, and whenever the reservation,
 * a move, the stub or the clone fails (ENOMEM under strict overcommit, as
 * a move charges the area twice for a while; EAGAIN from a pids limit).
 */
#ifndef UFFD_INJECT_GRAVE_H
#define UFFD_INJECT_GRAVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "dump.h"

#define GRAVE_MIN_PAGES	512	/* lazy pages an area needs to be moved (2 MiB) */
#define GRAVE_CODE	192	/* bytes of the stub we write and check */
#define GRAVE_WAIT_MS	60000	/* for the dropper, after the thaw */

/* An area moved: [start, end) now lies at AT in the graveyard. */
struct grave_piece {
	uint64_t start;
	uint64_t end;
	uint64_t at;
	uint32_t area;		/* its index in the held dump's areas */
	uint64_t pages;		/* its lazy pages, as the dump found them */
	bool dontfork;		/* it was MADV_DONTFORK (the graveyard is): as read before the
				 * freeze, then (grave_put_back) as its empty place says */
};

struct grave {
	pid_t pid;
	uint64_t base, len;	/* the reservation in the target; len 0: none */
	struct grave_piece *p;	/* planned, then (grave_dig) moved */
	size_t n;
	uint64_t moved_pages;	/* lazy pages of the moved areas (as the dump found them) */
	uint64_t stub;		/* the dropper's code page, its data page after it; 0: none */
	uint8_t code[GRAVE_CODE];	/* what the code page starts with */
	uint64_t halt;		/* the stub's last syscall instruction, a ud2 after it */
	bool forkless;		/* the graveyard is MADV_DONTFORK: so are the pieces in it */
	bool dc_read;		/* the pieces' MADV_DONTFORK read again, frozen */
	pid_t dropper;		/* its thread id (ours: see inner); 0: not started */
	pid_t inner;		/* the same as clone() in the target gave it (its pid namespace's) */
	int dfd;		/* its pidfd (PIDFD_THREAD), -1 */
	int dead;		/* it had ended when started (1), or cannot be watched (-1) */
	const char *skip;	/* why it is not used, for the summary; NULL when it is */
	double wait_s;		/* from grave_finish's call to the dropper's end; -1: not waited for */
	double stop_s;		/* the one thread stopped to unmap the stub */
	long dropped;		/* the dropper's munmap result (1: never ran) */
	bool foreign;		/* the stub's address was not ours any more (exec): left alone */
	char why[512];
};

void grave_init(struct grave *g, pid_t pid);

/*
 * Choose the areas of the held dump H to move (g->p), or say in g->skip why
 * none is. Reads /proc only. Returns how many, or -ENOMEM.
 */
int grave_plan(struct grave *g, const struct dump_held *h);

/*
 * Frozen: reserve the graveyard in the target (address space only:
 * PROT_NONE, MAP_NORESERVE). When there is no room, g->n becomes 0 and
 * g->skip says why. 0, or -errno with g->why when injecting failed.
 */
int grave_reserve(struct grave *g, struct pt *pt);

/*
 * Frozen: move the chosen areas into the graveyard and madvise it
 * MADV_DONTFORK. An area that cannot be moved is left out of g->p (dropped
 * in the freeze); when none could, nothing is left in the target and
 * g->skip says why. 0, or -errno with g->why when injecting failed (the
 * target died): then some areas may be moved (g->p says which).
 */
int grave_dig(struct grave *g, struct pt *pt);

/*
 * Frozen, before grave_reserve: is any chosen area registered with a
 * userfaultfd since the areas were read? Each is registered (MISSING mode)
 * on UFD, our own, and unregistered; a busy one is tried on TUFD, the
 * pre-copy tracker's (-1: none), in its mode. An area another userfaultfd
 * holds must not move: the move would leave that registration behind on
 * the empty area and a move back lose it (and with its remap events, wait
 * for a reader that may never come). Returns how many areas stay chosen;
 * -EBUSY with g->why naming the area (g->n 0: nothing to move, refuse the
 * hand-over).
 */
int grave_probe(struct grave *g, int ufd, int tufd);

/* Is area AREA (index into the held dump's areas) moved? */
bool grave_has(const struct grave *g, uint32_t area);

/* Where the page at ADDR of a moved area lies now; 0 if it was not moved. */
uint64_t grave_where(const struct grave *g, uint64_t addr);

/*
 * Frozen: move piece K back to its place (replacing the empty area: for a
 * failed hand-over, before the area was registered anywhere), forked again
 * unless it was MADV_DONTFORK at the freeze: the empty place says (smaps,
 * read once, only here: a failed hand-over), else the read before. 0 or -errno.
 */
int grave_put_back(struct grave *g, struct pt *pt, size_t k);

/* Frozen: write the dropper's stub into the target. 0 or -errno with g->why. */
int grave_stub(struct grave *g, struct pt *pt);

/*
 * Frozen, once nothing needs the graveyard: start the dropper thread. 0 or
 * -errno with g->why (nothing started: free the graveyard with grave_bury).
 */
int grave_start(struct grave *g, struct pt *pt);

/*
 * Frozen: unmap the graveyard and the stub now (the fall-back, and a failed
 * hand-over). 0 or -errno with g->why.
 */
int grave_bury(struct grave *g, struct pt *pt);

/*
 * Wait (up to MS) for the dropper to end, then, in the target still frozen
 * (HELD) or else in one thread of it stopped for the purpose, check that
 * the stub is ours and unmap it (and the graveyard, should the dropper's
 * munmap have failed). 0; -ESRCH when the target exited or exec'd (nothing
 * to do); -ETIMEDOUT, -EBUSY (its result word not written: it may still
 * run the stub) or -errno with g->why when the stub is left in place, or
 * the graveyard (g->len not 0: its munmap failed; the stub is gone).
 * Both munmaps run at the stub's exit syscall, a ud2 after it (grave.c).
 */
int grave_finish(struct grave *g, int ms, struct pt *held);

void grave_free(struct grave *g);

#endif
