/*
 * The tracer side of a restore: seize the sleeping helper and, through the
 * trampoline it mapped, unmap everything it had, move its vdso and vvar to
 * the dumped addresses, map every dumped area (files from the same files,
 * anonymous areas empty), write the eager pages, set the mm fields, make the
 * other threads, set rseq, hand the userfaultfd to the manager, unmap the
 * trampoline, install every thread's dumped registers, FPU state and signal
 * mask, and let them go. No thread runs a user-space instruction of its own
 * before that.
 *
 * Knows nothing about how the images were read or checked, nor about what the
 * helper did before it slept beyond its report (R->rep).
 */
#ifndef UFFD_INJECT_RESTORE_BUILD_H
#define UFFD_INJECT_RESTORE_BUILD_H

#include "rs.h"

/* Rebuild the helper R->child as the dumped process and let it run. 0 or -errno (R->why). */
int restore_build(struct rs *r);

#endif
