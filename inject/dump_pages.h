/*
 * Page discovery and reading for a dump: find where the dumped areas have
 * pages with PAGEMAP_SCAN (or /proc/PID/pagemap words before Linux 6.7),
 * copy them out with process_vm_readv in batches of a few MiB (through
 * /proc/PID/mem where that stops short), leave out the anonymous pages that
 * read all zero, and hand the rest to a writer thread that appends them to
 * the pages file while the next batch is read, so the target stays frozen
 * for about the longer of reading and writing rather than their sum. Builds
 * the pagemap entries and the spans on the way.
 *
 * Knows nothing about the other image files, their names or publishing them,
 * nor why an area has the kind it has (dump_area.c decided that).
 */
#ifndef UFFD_INJECT_DUMP_PAGES_H
#define UFFD_INJECT_DUMP_PAGES_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "dump.h"

#define DUMP_BATCH	(4ull << 20)	/* bytes per process_vm_readv: stays in cache */
#define DUMP_NBUF	3		/* batch buffers shared with the writer thread */
#define DUMP_NBUF_MAX	16		/* at most (64 MiB), when the reads may run ahead */
#define DUMP_IOV	1024		/* IOV_MAX */

struct dump_item;
struct page_region;

/* The pages file writer: a thread that writes filled batch buffers in order. */
struct dump_writer {
	pthread_t th;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int fd;
	unsigned nbuf;
	uint8_t *mem;			/* NBUF buffers of DUMP_BATCH bytes */
	struct iovec seg[DUMP_NBUF_MAX][DUMP_IOV];	/* the kept runs of pages in each */
	int nseg[DUMP_NBUF_MAX];
	uint64_t head;			/* buffers handed over */
	uint64_t tail;			/* buffers written (or skipped after an error) */
	bool stop;
	int err;			/* errno of the first failed write */
	double write_s;
};

struct dump_pages {
	/* Set by the caller (and pmfd, memfd to -1) before dump_pages_open(). */
	pid_t pid;
	const VmaEntry *vmas;		/* the areas, as classified */
	const struct dump_area *areas;
	size_t nvmas;
	const struct dump_range *eager;	/* pages never flagged lazy */
	size_t neager;
	bool no_scan;			/* pagemap words even where PAGEMAP_SCAN works */
	const char *dir;		/* for messages: the image directory */
	const char *pages_name;		/* and the pages file's name in it */
	const volatile sig_atomic_t *interrupted;	/* checked between batches */
	/*
	 * NBUF buffers of DUMP_BATCH bytes (DUMP_NBUF if 0, at most
	 * DUMP_NBUF_MAX) let the reads run that far ahead of the writes; all
	 * are faulted in by dump_pages_prealloc(), before the freeze (reads
	 * into memory not faulted in yet are slower than the writes here).
	 * READ_DONE (if set) is called once the last page is read, before the
	 * writer is waited for: the caller lets the target go there.
	 */
	unsigned nbuf;
	void (*read_done)(void *ctx);
	void *read_done_ctx;
	struct dump_stats *st;		/* read_s, write_s, pages, holes, ... added to */
	/*
	 * Pre-copy (precopy.h): in areas marked TRACKED, read only the COPY
	 * ranges (address order) instead of every page found. TOLERANT (the
	 * target runs meanwhile): a page that cannot be read is left out and
	 * given to UNREADABLE, instead of failing the dump.
	 */
	const bool *tracked;
	const struct dump_range *copy;
	size_t ncopy;
	bool tolerant;
	void (*unreadable)(void *ctx, uint64_t addr, uint64_t len);
	void *unreadable_ctx;

	/* What was written, in address order; the caller may take them. */
	bool *guarded;			/* per area: its walk met a guard marker */
	struct dump_pe *pe;
	size_t npe;
	struct dump_range *spans;	/* where pages were found */
	size_t nspans;
	char why[768];			/* why it failed (the first reason wins) */

	/* Private to dump_pages.c. */
	int pmfd;			/* /proc/PID/pagemap */
	int memfd;			/* /proc/PID/mem, opened on the first read that needs it */
	bool use_scan;
	bool scan_tried;
	bool scan_no_guard;		/* the kernel knows no PAGE_IS_GUARD */
	struct page_region *regions;
	uint64_t *pmwords;
	struct dump_writer w;
	uint8_t *buf;			/* the writer's buffer being filled */
	struct iovec *riov;
	uint8_t bad[DUMP_BATCH / 4096];	/* pages of the batch that could not be read */
	struct dump_item *items;	/* the batch being gathered */
	size_t nitems;
	uint64_t batch;
	size_t cappe;
	size_t capspans;
};

/*
 * Map and fault in the writer's buffers (P->nbuf of them), before the
 * freeze: the page faults cost several ms, more on a VM whose host took
 * back freed memory. Optional (dump_pages() does it otherwise). 0 or -ENOMEM.
 */
int dump_pages_prealloc(struct dump_pages *p);

/* Open the target's pagemap and the buffers. Returns 0 or -errno with P->why. */
int dump_pages_open(struct dump_pages *p);

/*
 * Append every page worth keeping to FD (pages-1.img, maybe O_DIRECT), in
 * address order, and record them in P->pe and P->spans. Returns 0 once all
 * is written (not synced), or -errno with P->why.
 */
int dump_pages(struct dump_pages *p, int fd);

/* Stop the writer without writing what it still holds (a failed dump). */
void dump_pages_cancel(struct dump_pages *p);

/* Close and free what P holds (not what the caller took and set NULL). */
void dump_pages_free(struct dump_pages *p);

#endif
