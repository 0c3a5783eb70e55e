/*
 * The files of one dump in its image directory: named for the pid, written
 * under temporary names (NAME.part), given their final names at the very end
 * with pagemap and pstree last (the two that make a directory look like a
 * dump), and removed again when the dump fails, so that a directory never
 * holds half a dump. Writes inventory, pstree, mm and pagemap from what the
 * dump found; pages-1.img is created here and filled by dump_pages.c.
 *
 * Knows nothing about the target process: no ptrace, no reading of /proc;
 * it is handed what they said.
 */
#ifndef UFFD_INJECT_DUMP_IMAGE_H
#define UFFD_INJECT_DUMP_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "dump.h"
#include "procfs.h"

/* The files of a dump, in the order they are renamed into place. */
enum { DUMP_F_PAGES, DUMP_F_MM, DUMP_F_INVENTORY, DUMP_F_PAGEMAP, DUMP_F_PSTREE, DUMP_F_NR };

struct dump_image {
	const char *dir;
	int dirfd;		/* -1 before dump_image_open_dir() */
	int pagesfd;		/* -1 until dump_image_create_pages() */
	bool made_dir;		/* we created the directory: remove it if we fail */
	bool made[DUMP_F_NR];	/* temporary file exists */
	bool skip[DUMP_F_NR];	/* not this process's to write (a tree's inventory, pstree) */
	bool published;		/* renamed into place (a tree takes them back if it fails) */
	uint32_t pages_id;	/* pages-ID.img; 0 means 1 */
	uint64_t prealloc;	/* bytes of the pages file allocated ahead (dump_image_prealloc_pages) */
	char name[DUMP_F_NR][48];	/* final names */
	char tmp[DUMP_F_NR][56];
	char why[768];		/* why it failed (the first reason wins) */
};

/* What mm, pstree and pagemap say about the task. */
struct dump_image_task {
	pid_t pid;
	const struct procfs_stat *stat;
	uint64_t *auxv;
	size_t nauxv;
	uint32_t *tids;
	size_t ntids;
	VmaEntry *vmas;
	size_t nvmas;
	const struct dump_pe *pe;	/* in address order */
	size_t npe;
	/* For a dump to restore: its state (core.h), which mm is made to match
	 * for real CRIU (dump_criu_mm); NULL for a pre-dump round or a hand-over. */
	const struct core *core;
	/* A tree (dump --tree): pstree.img gets one record per process, parents first. */
	const struct dump_image_proc *tree;
	size_t ntree;
};

/* A process of a tree, as pstree.img records it. */
struct dump_image_proc {
	pid_t pid, ppid, pgid, sid;
	uint32_t *tids;
	size_t ntids;
};

/*
 * Create DIR if it is missing, open it, name the files of PID's dump, and
 * refuse a directory that already holds a dump. 0 or -errno with IM->why.
 * Set IM->pages_id and IM->skip before, for a process of a tree.
 */
int dump_image_open_dir(struct dump_image *im, const char *dir, pid_t pid);

/* Take back the final names a failed tree had already given (dump_image_publish). */
void dump_image_unpublish(struct dump_image *im);

/* Create the temporary pages file, O_DIRECT unless BUFFERED. 0 or -errno with IM->why. */
int dump_image_create_pages(struct dump_image *im, bool buffered);

/*
 * Write zeros over the first BYTES of the pages file, before the freeze,
 * so that the frozen writes find the file's blocks (a tmpfs its pages, a
 * VM its host's memory) there already: the last round of `lazy
 * --pre-copy` of a 4 GiB target writing 32 MiB, images on a tmpfs, spent
 * 107-114 ms frozen copying its written set into a fresh file here, and
 * 10-13 ms into one written ahead. Merely allocating the blocks
 * (fallocate) did not help: the cost is in the first touch. Where it fails (no room), whatever it wrote
 * goes again and the writes allocate as before; never an error.
 * dump_image_trim_pages() cuts the file to what was written.
 */
void dump_image_prealloc_pages(struct dump_image *im, uint64_t bytes);

/* Cut the pages file to BYTES, what was written, if more was allocated ahead. 0 or -errno. */
int dump_image_trim_pages(struct dump_image *im, uint64_t bytes);

/* Write pagemap, mm, pstree and inventory; sync and close the pages file. 0 or -errno. */
int dump_image_write_images(struct dump_image *im, const struct dump_image_task *t);

/* Give every file its final name, pagemap and pstree last, and make it durable. */
int dump_image_publish(struct dump_image *im);

/* Remove the temporary files, and the directory if we made it and it is empty. */
void dump_image_abort(struct dump_image *im);

/* Close the files still open. */
void dump_image_close(struct dump_image *im);

#endif
