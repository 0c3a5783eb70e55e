/*
 * pages-N.img files: raw page data, mapped read-only once and shared by every
 * user of the same file (forks, several restores of one image dir).
 *
 * Only the kernel should read these mappings (UFFDIO_COPY): a file truncated
 * under us makes a user-space read SIGBUS, while the ioctl fails with EFAULT.
 */
#ifndef UFFD_PAGES_H
#define UFFD_PAGES_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "image.h"

struct pages_file {
	struct pages_file *next;
	dev_t dev;
	ino_t ino;
	const uint8_t *base;	/* NULL when the file is empty */
	uint64_t size;
	unsigned refs;
	char name[64];
	/* With the cache's keep_fds (pages_pread): */
	int fd;			/* the file, open; -1 without */
	uint64_t *mapped;	/* a bit a page: mapped here, as far as we know (a hint); atomic */
	/* The prefault worker's (pages_prefault), under the cache's lock: */
	bool pq_seen;			/* queued once: never again */
	struct pages_file *pq_next;	/* in the queue */
	uint64_t pq_off;		/* done up to here */
	uint64_t pq_mapped;		/* bytes it mapped (they were in the page cache) */
};

/*
 * The set of mapped pages files; owned by whoever serves (no globals).
 * pages_get and pages_put may be called from two threads at once (the
 * daemon's loader maps files while its loop drops them): LOCK guards the
 * list, the counters and every refs. A zero-filled cache is ready to use
 * (PTHREAD_MUTEX_INITIALIZER is all zeros in glibc; pages_cache_init says so
 * explicitly).
 */
struct pages_cache {
	pthread_mutex_t lock;
	/* Set before the first pages_get: keep each file open and track what is mapped. */
	bool keep_fds;
	struct pages_file *head;
	unsigned nr_files;
	uint64_t mapped_bytes;
	/* The prefault worker, started by the first pages_prefault: */
	pthread_cond_t pq_cv;
	pthread_t pq_thread;
	bool pq_started, pq_quit;
	struct pages_file *pq_head, *pq_tail;
	uint64_t prefaulted;	/* bytes it mapped, all files */
	unsigned pq_nap_us;	/* tests: sleep this long after each chunk */
	uint64_t pq_fault_ns;	/* the last fault served (pages_note_fault); atomic */
};

void pages_cache_init(struct pages_cache *c);

/*
 * Map NAME in DIRFD, or take another reference to it if already mapped.
 * Errors name the file LABEL (a path relative to the dump). -ENOENT when
 * it does not exist.
 */
int pages_get(struct pages_cache *c, int dirfd, const char *name, const char *label,
	      struct pages_file **out, struct img_err *err);
void pages_put(struct pages_cache *c, struct pages_file *pf);
/* How many files are mapped, so how many fds keep_fds holds open. Any thread. */
unsigned pages_nr_files(struct pages_cache *c);

/*
 * Whether every page of [OFF, OFF+LEN) of PF is mapped in this process, as
 * far as pages_note_mapped was told: a copy from a page that is not makes
 * the kernel fault it in inside the copy (see pages_prefault). True when
 * nothing is tracked (no keep_fds), so that callers copy from the mapping.
 * A page the kernel unmapped since (reclaim) still says true: a hint only.
 */
bool pages_mapped(const struct pages_file *pf, uint64_t off, uint64_t len);
/* The pages of [OFF, OFF+LEN) of PF are mapped now (a copy read them). Any thread. */
void pages_note_mapped(const struct pages_file *pf, uint64_t off, uint64_t len);
/*
 * Read [OFF, OFF+LEN) of PF into BUF with pread (the page cache, no page
 * fault here, nothing mapped). 0, or -errno: -EIO when the file is shorter
 * now, -EBADF without keep_fds.
 */
int pages_pread(const struct pages_file *pf, uint64_t off, uint64_t len, void *buf);

/*
 * Map ahead, on a thread of its own at idle priority, the pages of PF that
 * are in the page cache (never a page from disk): a UFFDIO_COPY from a page
 * this process never touched takes the kernel's slow path (the copy fails
 * with faults disabled and is done again after a fault in our own mm), on
 * every fault. Costs page tables: 2 MiB per GiB mapped. Goes in chunks,
 * stops when PF has no other user; a file is queued once. Any thread.
 */
void pages_prefault(struct pages_cache *c, const struct pages_file *pf);
/*
 * A fault was served at NOW_NS (CLOCK_MONOTONIC): the prefault worker waits
 * until they stop coming. It runs at idle priority, but a loop that yields
 * its CPU while it polls for the next fault would hand it that CPU.
 */
static inline void pages_note_fault(struct pages_cache *c, uint64_t now_ns)
{
	__atomic_store_n(&c->pq_fault_ns, now_ns, __ATOMIC_RELAXED);
}

/* Stop the prefault worker, if started, and drop what it holds. */
void pages_prefault_stop(struct pages_cache *c);

#endif
