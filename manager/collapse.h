/*
 * Huge pages back. UFFDIO_COPY places 4 KiB pages only, so a lazily served
 * process would run on small pages for ever where it had huge ones. When a
 * process is fully served (target_release), the 2 MiB-aligned blocks of its
 * lazy areas that may use transparent huge pages are collapsed with
 * process_madvise(MADV_COLLAPSE), on a thread of their own, so the loop and
 * every other process's faults never wait on the copies a collapse makes.
 *
 * May use THP, as the process would have got natively: never when THP is
 * "never" in /sys/kernel/mm/transparent_hugepage/enabled, only areas the
 * process marked MADV_HUGEPAGE when it is "madvise", and never an area
 * marked MADV_NOHUGEPAGE, a shared or hugetlb one, or a process that turned
 * THP off (prctl PR_SET_THP_DISABLE: "THP_enabled: 0" in its status).
 */
#ifndef UFFD_COLLAPSE_H
#define UFFD_COLLAPSE_H

#include <stdint.h>

#include "procfs.h"

struct daemon;
struct target;

#define COLLAPSE_BLOCK	(2ull << 20)

/* The system's THP mode, from sysfs. */
enum thp_mode { THP_NEVER, THP_MADVISE, THP_ALWAYS };

/* Parse the "enabled" file's text ("always [madvise] never"); THP_NEVER if unknown. */
enum thp_mode collapse_parse_mode(const char *text);

/*
 * The aligned blocks of [START, END) that may be collapsed in a VMA of
 * flags VMFLAGS (PFV_*) under MODE: written to OUT (at most MAX), counted
 * in the return value.
 */
size_t collapse_blocks(uint64_t start, uint64_t end, uint32_t vmflags, enum thp_mode mode,
		       uint64_t *out, size_t max);

/* Queue T's eligible blocks (its lazy areas against its VMAs in M) for collapse. */
void collapse_target(struct daemon *d, struct target *t, const struct procfs_maps *m);

/* Stop the thread; queued blocks are dropped. */
void collapse_stop(struct daemon *d);

#endif
