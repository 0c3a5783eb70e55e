/*
 * The state of one restore, shared by its steps: restore_plan.c fills it
 * from the images (and checks them against this machine), restore_helper.c
 * forks the helper from it, restore_build.c rebuilds the helper through the
 * ptrace engine, and restore.c runs them in order and cleans up. Private to
 * those files.
 */
#ifndef UFFD_INJECT_RS_H
#define UFFD_INJECT_RS_H

#include <linux/userfaultfd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "core.pb-c.h"
#include "files.pb-c.h"
#include "imgtask.h"
#include "pagemap.h"
#include "ptrace.h"
#include "restore.h"
#include "restore_shm.h"

#define RS_PAGE		4096ull
#define RS_MAX_MAPFILES	256
#define RS_MAX_THREADS	1024
#define RS_TASK_TOP	0x7ffffffff000ull	/* 47-bit user space */
#define RS_MAX_SHM	64	/* shared memory objects (memfd.img) */
#define RS_FEATURES	(UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | \
			 UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP | \
			 UFFD_FEATURE_THREAD_ID)

/* What the helper tells us once it is ready (or why it failed). */
struct rs_report {
	int err;
	int uffd;			/* its fd number in the helper, -1 if none */
	int mapfd[RS_MAX_MAPFILES];	/* of each mapped file, in rs->mf order */
	int shmfd[RS_MAX_SHM];		/* of each shared memory object (rs->shm), or -1 */
	pid_t nspid;			/* its pid as it sees it (in its pid namespace) */
	int pid_err;			/* why that is not the dumped pid, or 0 */
	char msg[256];
};

/* A file to map: one per inode the areas use (and the exe). */
struct rs_mapfile {
	const RegFileEntry *re;
	bool rw;
};

/* A special area (vvar, vvar_vclock, vdso): where the helper has it, where it goes. */
struct rs_special {
	uint64_t from, to, len;
	bool vdso;
};

/* A thread to bring back: its record, the tid it had and the one it got. */
struct rs_thread {
	CoreEntry *core;	/* core-TID.img; th[0]'s is the main thread's, r->core */
	uint32_t tid;		/* as dumped */
	pid_t now;		/* as restored, in its pid namespace */
	pid_t host;		/* the same in ours (they differ with --pidns) */
	int pti;		/* its index among the threads the engine holds */
	int err;		/* why it is not at its dumped tid (an errno), or 0 */
};

/*
 * A tree (restore_tree.c): every process's struct rs, in pstree order
 * (parents first), and how each is made. The helpers fork one another,
 * each its own children, so NOW is written by a parent's helper before it
 * forks the next child, and read by the children it forks after.
 */
struct rs_tree {
	struct rs **r;
	size_t n;
	int *parent;			/* index of its parent, -1 for the root */
	int *leader;			/* of its process group: RS_PG_* or an index */
	bool *setsid;			/* it led its session: setsid() */
	pid_t *now;			/* its pid as restored, in the helpers' namespace */
	int (*pipe)[2];			/* each helper's report to us */
};

#define RS_PG_INHERIT	(-1)		/* its parent's group (the root: ours) */

struct rs {
	const struct restore_opts *o;
	struct rs_tree *tree;		/* a process of a tree, or NULL */
	int idx;			/* its index in the tree */
	uint32_t files_id;		/* its fds in fdinfo-FILES_ID.img (0: 1) */
	bool hold;			/* left stopped and traced once built: the tree lets go */
	struct rs_shm *shm;		/* the restore's shared memory (one for a tree), or NULL */
	uint64_t features;		/* of its userfaultfd: RS_FEATURES, and MINOR_SHMEM when it maps lazy shared memory */
	struct restore_stats *st;
	int dirfd;
	uint32_t pid;			/* as dumped */
	struct pages_cache cache;
	struct img_task task;
	bool task_loaded;
	CoreEntry *core;		/* the main thread's (th[0].core) */
	struct rs_thread *th;		/* every thread, the main one first */
	size_t nth;
	FsEntry *fs;
	FileEntry **files;
	size_t nfiles;
	FdinfoEntry **fdi;
	size_t nfdi;
	struct rs_mapfile mf[RS_MAX_MAPFILES];
	int nmf;
	int *vma_mf;			/* per VMA: index in mf, or -1 */
	bool *vma_wr;			/* per VMA: mapped writable for the eager writes */
	struct rs_special sp[8];
	int nsp;
	uint64_t tramp;			/* syscall insn page; tramp + RS_PAGE is the scratch page */
	uint64_t (*extra)[2];		/* lazy pages written all the same, merged ranges */
	int nextra;
	pid_t child;			/* the helper, in our pid namespace */
	pid_t init;			/* --pidns: the init of its namespace, or 0 */
	int keep[2];			/* --pidns: ours tells the init it may outlive us */
	int pidfd;
	struct pt pt;
	bool seized;
	struct rs_report rep;
	int uffd;			/* our copy */
	struct rsr *ps;			/* --page-server: for pages the images hold no data of */
	struct timespec t0;
	char why[1024];
};

/* Free what R holds; when not OK, kill the half-built process first (restore.c). */
void rs_release(struct rs *r, bool ok);

/* Record why the restore failed (the first reason wins) and return -CODE. */
int rs_fail(struct rs *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* --page-server: LEN bytes of the dumped pages at image address A, into BUF. 0 or -errno (rs_fail said why). */
int rs_fetch(struct rs *r, uint64_t a, uint64_t len, uint8_t *buf);

/* The rseq registration of a thread's record, or NULL. */
const RseqEntry *rs_rseq(const CoreEntry *core);

/* The regular file with id ID in files.img, or NULL. */
const RegFileEntry *rs_file_by_id(const struct rs *r, uint32_t id);

#endif
