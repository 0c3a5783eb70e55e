/*
 * Planning a restore from its images, before any process is made: read and
 * check every image (one task, dumped with --kill, each of its threads with
 * an x86_64 core of ours), check that every file is the one dumped and
 * unchanged, decide which file backs each area, match the dumped vdso and
 * vvar with this kernel's, and pick an address for the helper's trampoline
 * that is free both in the dumped layout and in ours.
 *
 * Knows nothing about the helper process or ptrace: it only reads images,
 * stat()s files and reads /proc maps.
 */
#ifndef UFFD_INJECT_RESTORE_PLAN_H
#define UFFD_INJECT_RESTORE_PLAN_H

#include <stddef.h>
#include <sys/types.h>

#include "procfs.h"
#include "rs.h"

/* Read every image of R->o->dir and check it against itself. 0 or -errno (R->why). */
int restore_plan_load(struct rs *r);

/* Every file must be the one that was dumped, unchanged. */
int restore_plan_check_files(struct rs *r);

/* Which file backs each area (R->vma_mf); the exe among the files to map. */
int restore_plan_areas(struct rs *r);

/*
 * The areas of PID from /proc/PID/maps alone, into M (procfs_maps_free() it).
 * Returns 0 or -errno with WHY.
 */
int restore_plan_read_maps(pid_t pid, struct procfs_maps *m, char *why, size_t len);

/* Match our vdso and vvar (OWN: our areas; the helper has the same) with the dumped ones. */
int restore_plan_specials(struct rs *r, struct procfs_maps *own);

/* Two pages free in both layouts, with room around them, into R->tramp. */
int restore_plan_trampoline(struct rs *r, const struct procfs_maps *own);

#endif
