/*
 * userfaultfd ioctl wrappers and the classification of their results.
 * Wrappers return 0 or -errno; the caller decides what to log.
 */
#ifndef UFFD_UFFD_H
#define UFFD_UFFD_H

#include <stdbool.h>
#include <stdint.h>

#include <linux/userfaultfd.h>
#include "uffd_compat.h"

/* Features a served process's uffd must have. */
#define UFFD_NEEDED_FEATURES                                                   \
	(UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |                  \
	 UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP)

/* What to do after a UFFDIO_COPY or UFFDIO_ZEROPAGE. */
enum uffd_class {
	UC_DONE,	/* the whole range is in */
	UC_PARTIAL,	/* DONE bytes are in; go on past them */
	UC_RETRY,	/* nothing done, events pending (or no memory): park and retry after a drain */
	UC_EXISTS,	/* the first page was already there: count it done, wake, go on past it */
	UC_STALE,	/* no registered VMA there any more: re-check the model, wake the waiter */
	UC_GONE,	/* the process has exited: tear it down */
	UC_BUG,		/* anything else: log loudly, never take the daemon down */
};

struct uffd_result {
	enum uffd_class cls;
	uint64_t done;		/* bytes placed, for DONE and PARTIAL */
};

/*
 * Classify the outcome of a copy or zeropage of LEN bytes: RET is the ioctl
 * result (0 or -errno), OUT the copy/zeropage field the kernel wrote back.
 */
struct uffd_result uffd_classify(int ret, int64_t out, uint64_t len);
const char *uffd_class_name(enum uffd_class c);

/* Copy LEN bytes from SRC to DST in the target; *OUT gets the kernel's count or -errno. */
int uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len, bool wake, int64_t *out);
int uffd_zeropage(int uffd, uint64_t dst, uint64_t len, bool wake, int64_t *out);
/*
 * Mark LEN bytes at DST poisoned (UFFDIO_POISON, Linux 6.6): a touch gives
 * SIGBUS (BUS_MCEERR_AR with CONFIG_MEMORY_FAILURE, BUS_ADRERR without).
 * Needs no feature at UFFDIO_API. *OUT as for a copy.
 */
int uffd_poison(int uffd, uint64_t dst, uint64_t len, bool wake, int64_t *out);
/*
 * Map the pages of [DST, DST+LEN) that the shared memory object already
 * holds (UFFDIO_CONTINUE, after a MINOR fault). *OUT: bytes mapped, as for
 * a copy. -EEXIST: already mapped here; -EFAULT: not in the object (any more).
 */
int uffd_continue(int uffd, uint64_t dst, uint64_t len, bool wake, int64_t *out);
int uffd_wake(int uffd, uint64_t start, uint64_t len);
/* Register [START, START+LEN) for MISSING faults, and MINOR ones too when MINOR (shared memory). */
int uffd_register(int uffd, uint64_t start, uint64_t len, bool minor);
int uffd_unregister(int uffd, uint64_t start, uint64_t len);

/*
 * Read the features of UFFD from /proc/self/fdinfo, to check what a client
 * claims. Returns 0 or -errno (-EINVAL if FD is not a userfaultfd).
 */
int uffd_features(int uffd, uint64_t *features);

#endif
