/*
 * What restore needs beyond memory, collected from a seized process at dump
 * time: registers, FPU state, signal handlers and mask, rseq, open regular
 * files, cwd. Written as CRIU-format core-PID.img, files.img, fdinfo-1.img
 * and fs-PID.img; read back by restore.c.
 *
 * core_collect() is also the gate: it refuses, before any page is read,
 * whatever restore could not bring back faithfully, and names it.
 */
#ifndef UFFD_INJECT_CORE_H
#define UFFD_INJECT_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/user.h>

#include "dump_criu.h"
#include "procfs.h"

struct pt;
struct dump_shmem;

#define CORE_NSIG		64
#define CORE_MAX_THREADS	1024
#define CORE_FILE_ID_BASE	1

/* A file the process uses: an open fd (fd >= 0), a mapping, its exe or cwd. */
struct core_file {
	uint32_t id;
	int fd;			/* -1: not an fd */
	bool cloexec;
	uint32_t flags;		/* open flags (fdinfo), O_CLOEXEC removed */
	uint64_t pos;
	char *path;
	uint64_t dev, ino, size, mtime_ns;
	uint32_t mode;
	bool memfd;		/* a memfd or shared anonymous memory (dump_shmem.h) */
	uint32_t inode_id;	/* then: its object in memfd.img */
};

struct core_sigaction {
	int sig;
	uint64_t handler, flags, restorer, mask;
};

/* What each thread has of its own (core-TID.img). */
struct core_thread {
	pid_t tid;
	struct user_regs_struct regs;
	uint8_t *xstate;	/* NT_X86_XSTATE regset */
	size_t xstate_len;
	uint64_t sigmask;
	bool has_rseq;
	uint64_t rseq_ptr;
	uint32_t rseq_len, rseq_sig;
	uint64_t tid_addr;
	uint64_t robust, robust_len;
	uint64_t ss_sp, ss_size;
	uint32_t ss_flags;
	uint32_t pdeath;
	char comm[32];
};

struct core {
	pid_t pid;
	struct core_thread *th;	/* th[0] is the main thread (tid = pid) */
	size_t nth;
	struct core_sigaction sa[CORE_NSIG];
	int nsa;
	uint32_t personality;
	uint32_t umask;
	bool stopped;		/* in a group stop (SIGSTOP and friends) */
	uint32_t stdio;		/* bit N: fd N (0-2) open, but not a file */
	char comm[32];
	struct core_file *f;
	size_t nf;
	uint32_t exe_id, cwd_id, root_id;
	uint64_t *noreserve;	/* starts of MAP_NORESERVE areas */
	size_t nnoreserve;
	struct dump_criu criu;	/* what real CRIU's restore needs besides (dump_criu.h) */
	/*
	 * A process of a tree (dump --tree): set before core_collect. Its file
	 * ids start at ID_BASE (0: CORE_FILE_ID_BASE), its fds go to
	 * fdinfo-FILES_ID.img (0: 1), and files.img holds the files of the
	 * root's core and of MORE (the other processes'), written with the
	 * root's; the others write none (FILES_ELSEWHERE).
	 */
	uint32_t id_base;
	uint32_t files_id;
	bool files_elsewhere;
	bool tree;		/* its children are dumped with it: allow them */
	/* The dump's shared memory objects (set before core_collect): memfd files. */
	const struct dump_shmem *shm;
	const struct core *const *more;
	size_t nmore;
};

/* The last file id C uses (ID_BASE - 1 when it has none). */
uint32_t core_last_id(const struct core *c);

/*
 * Collect the state of the seized process PT, every thread of it (its areas in
 * MAPS, already read). Returns 0, -ENOTSUP with WHY naming what restore could
 * not bring back (the process is left untouched), or another -errno.
 * Runs a few syscalls in the target (into a page it maps and unmaps again).
 */
int core_collect(struct core *c, struct pt *pt, const struct procfs_maps *maps, char *why,
		 size_t len);

/* Write the records into DIRFD as NAME.part files. Returns 0 or -errno with WHY. */
int core_write(const struct core *c, int dirfd, char *why, size_t len);
/* Rename them into place (before the dump's own pagemap and pstree). */
int core_publish(struct core *c, int dirfd, char *why, size_t len);
/* Remove what core_write and core_publish made (a failed dump). */
void core_abort(const struct core *c, int dirfd);

void core_free(struct core *c);

/* File names of the records. */
#define CORE_FILES_IMG		"files.img"
#define CORE_FD_MEMFD		18	/* file_entry.type and fdinfo_entry.type of a memfd */
#define CORE_FDINFO_IMG		"fdinfo-1.img"
#define IMG_FILES_MAGIC		0x56303138u
#define IMG_FDINFO_MAGIC	0x56213732u
#define IMG_FS_MAGIC		0x51403912u

#endif
