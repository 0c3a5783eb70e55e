/*
 * Page discovery and reading for a dump: see dump_pages.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "dump_pages.h"
#include "pagemap.h"
#include "pmscan.h"
#include "why.h"

/* /proc/PID/pagemap words (Documentation/admin-guide/mm/pagemap.rst). */
#define PM_PRESENT	(1ull << 63)
#define PM_SWAPPED	(1ull << 62)
#define PM_FILE		(1ull << 61)	/* file page or shared anonymous */
#define PM_GUARD	(1ull << 58)	/* a guard region marker (reported as swapped) */

#define DUMP_PAGE	4096ull
#define DUMP_BAD_GONE	1		/* bad[]: unreadable while it ran (tolerant) */
#define DUMP_BAD_POISON	2		/* bad[]: unreadable while frozen: poisoned */
#define DUMP_REGIONS	4096		/* page_region slots per PAGEMAP_SCAN */
#define DUMP_PMWORDS	8192		/* pagemap words per pread in the fallback */

/* A run of pages to read, all in one area. */
struct dump_item {
	uint64_t addr;
	uint64_t len;
	uint32_t area;
};

static double since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Record why the pages could not be dumped (the first reason wins), and return -CODE. */
static int pfail(struct dump_pages *p, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int pfail(struct dump_pages *p, int code, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = why_vfirst(p->why, sizeof(p->why), code, NULL, fmt, ap);
	va_end(ap);
	return ret;
}

/* Does the 4 KiB page at P hold only zero bytes? Most data pages fail on word 0. */
static bool page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;

	if (w[0] | w[511])
		return false;
	for (size_t i = 0; i < 512; i += 8)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] |
		    w[i + 7])
			return false;
	return true;
}

/* What a poisoned page stands in the pages file as (aligned for O_DIRECT). */
static const uint8_t zero_page[DUMP_PAGE] __attribute__((aligned(DUMP_PAGE)));

/*
 * Read LEN bytes at ADDR of area AREA into the buffer at OFF through
 * /proc/PID/mem (which reads what process_vm_readv cannot: areas without
 * PROT_READ), with the target frozen. A page of an anonymous private area
 * that cannot be read (EIO: hardware poison, a UFFDIO_POISON marker, a swap
 * read error; the process itself would get SIGBUS there) is marked poisoned
 * instead of failing the dump; anywhere else it fails the dump, naming it.
 */
static int frozen_read(struct dump_pages *p, uint32_t area, uint64_t addr, uint64_t off,
		       uint64_t len)
{
	if (p->memfd < 0) {
		char path[64];

		snprintf(path, sizeof(path), "/proc/%d/mem", (int)p->pid);
		p->memfd = open(path, O_RDONLY | O_CLOEXEC);
		if (p->memfd < 0)
			return pfail(p, errno, "%s: %s", path, strerror(errno));
	}
	while (len) {
		ssize_t n = pread(p->memfd, p->buf + off, len, (off_t)addr);
		uint64_t skip;

		if (n < 0 && errno == EINTR)
			continue;
		if (n > 0) {
			addr += n;
			off += n;
			len -= n;
			continue;
		}
		/* 0: its memory is gone (killed); other errors are ours. */
		if (n == 0 || errno != EIO || p->areas[area].kind != DUMP_ANON ||
		    p->areas[area].hpage)
			return pfail(p, n < 0 ? errno : EIO,
				     "cannot read its memory at 0x%" PRIx64 ": %s%s",
				     addr, n < 0 ? strerror(errno) : "end of file",
				     n < 0 && errno == EIO ? " (an unreadable page outside anonymous "
				     "private memory, or in hugetlb memory, cannot be recorded as "
				     "poisoned)" : "");
		p->bad[off / DUMP_PAGE] = DUMP_BAD_POISON;
		skip = DUMP_PAGE - off % DUMP_PAGE;
		if (skip > len)
			skip = len;
		addr += skip;
		off += skip;
		len -= skip;
	}
	return 0;
}

/*
 * Read LEN bytes at ADDR into the buffer at OFF page by page through
 * /proc/PID/mem, marking the pages that cannot be read (the target runs:
 * an area can go away under us) instead of failing.
 */
static int tolerant_read(struct dump_pages *p, uint64_t addr, uint64_t off, uint64_t len)
{
	if (p->memfd < 0) {
		char path[64];

		snprintf(path, sizeof(path), "/proc/%d/mem", (int)p->pid);
		p->memfd = open(path, O_RDONLY | O_CLOEXEC);
		if (p->memfd < 0)
			return pfail(p, errno, "%s: %s", path, strerror(errno));
	}
	for (uint64_t x = 0; x < len; x += DUMP_PAGE) {
		ssize_t n;

		do
			n = pread(p->memfd, p->buf + off + x, DUMP_PAGE, (off_t)(addr + x));
		while (n < 0 && errno == EINTR);
		if (n != (ssize_t)DUMP_PAGE)
			p->bad[(off + x) / DUMP_PAGE] = DUMP_BAD_GONE;
	}
	return 0;
}

/* Fill the buffer with the batch: process_vm_readv for all items at once, and
 * /proc/PID/mem for the rest of an item where it stops short. */
static int read_batch(struct dump_pages *p)
{
	struct timespec t0;
	size_t first = 0;
	uint64_t off = 0;
	int ret = 0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t i = 0; i < p->nitems; i++) {
		p->riov[i].iov_base = (void *)(uintptr_t)p->items[i].addr;
		p->riov[i].iov_len = p->items[i].len;
	}
	while (first < p->nitems) {
		struct iovec local = { p->buf + off, p->batch - off };
		ssize_t n = process_vm_readv(p->pid, &local, 1, p->riov + first,
					     p->nitems - first, 0);
		uint64_t got;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == ESRCH) {
			ret = pfail(p, ESRCH, "the process is gone");
			break;
		}
		if (n < 0 && errno == ENOMEM) {
			ret = pfail(p, ENOMEM, "process_vm_readv: %s", strerror(errno));
			break;
		}
		got = n < 0 ? 0 : (uint64_t)n;	/* EFAULT: nothing of the first item */
		/* Step over the items read whole. */
		while (first < p->nitems && got >= p->items[first].len) {
			got -= p->items[first].len;
			off += p->items[first].len;
			first++;
		}
		if (first == p->nitems)
			break;
		/* Item FIRST stopped after GOT bytes: read its rest the other way. */
		if (p->tolerant)
			ret = tolerant_read(p, p->items[first].addr + got, off + got,
					    p->items[first].len - got);
		else
			ret = frozen_read(p, p->items[first].area, p->items[first].addr + got,
					  off + got, p->items[first].len - got);
		if (ret < 0)
			break;
		off += p->items[first].len;
		first++;
	}
	p->st->read_s += since(&t0);
	return ret;
}

/* Add page ADDR of area AREA, with EXTRA flags, to the pagemap, extending the last entry when it can. */
static int pe_add(struct dump_pages *p, uint64_t addr, uint32_t area, uint32_t extra)
{
	uint32_t flags = p->areas[area].pe_flags | extra;

	/* Pages the kernel reads for others are never left to be served later
	 * (a huge page is lazy whole, or not at all: all of it, then). */
	if ((flags & PE_LAZY) && !p->areas[area].hpage && dump_range_has(p->eager, p->neager, addr))
		flags &= ~PE_LAZY;
	struct dump_pe *last = p->npe ? &p->pe[p->npe - 1] : NULL;

	if (last && last->area == area && last->flags == flags &&
	    last->vaddr + last->nr * DUMP_PAGE == addr) {
		last->nr++;
		return 0;
	}
	if (p->npe == p->cappe) {
		size_t ncap = p->cappe ? p->cappe * 2 : 1024;
		struct dump_pe *np = realloc(p->pe, ncap * sizeof(*np));

		if (!np)
			return pfail(p, ENOMEM, "out of memory");
		p->pe = np;
		p->cappe = ncap;
	}
	p->pe[p->npe++] = (struct dump_pe){ addr, 1, flags, area };
	return 0;
}

/* Write the N segments of IOV to FD; give up O_DIRECT if the file system refuses it. */
static int writer_put(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t r = writev(fd, iov, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EINVAL && (fcntl(fd, F_GETFL) & O_DIRECT)) {
			if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_DIRECT) < 0)
				return -errno;
			continue;
		}
		if (r < 0)
			return -errno;
		while (n > 0 && (size_t)r >= iov->iov_len) {
			r -= iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + r;
			iov->iov_len -= r;
		}
	}
	return 0;
}

static void *writer_main(void *arg)
{
	struct dump_writer *w = arg;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		uint64_t i;
		struct timespec t0;
		bool skip;
		int ret = 0;

		while (w->tail == w->head && !w->stop)
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->tail == w->head)
			break;
		i = w->tail % w->nbuf;
		skip = w->err != 0;	/* after a failure, only drain */
		pthread_mutex_unlock(&w->mu);
		if (!skip) {
			clock_gettime(CLOCK_MONOTONIC, &t0);
			ret = writer_put(w->fd, w->seg[i], w->nseg[i]);
			w->write_s += since(&t0);
		}
		pthread_mutex_lock(&w->mu);
		if (ret < 0 && !w->err)
			w->err = -ret;
		w->tail++;
		pthread_cond_broadcast(&w->cv);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* Map NBUF writer buffers, faulted in, unless done already. 0 or -ENOMEM. */
static int writer_mem(struct dump_writer *w, unsigned nbuf)
{
	if (w->mem)
		return 0;
	w->nbuf = nbuf < DUMP_NBUF ? DUMP_NBUF : nbuf > DUMP_NBUF_MAX ? DUMP_NBUF_MAX : nbuf;
	w->mem = mmap(NULL, (size_t)w->nbuf * DUMP_BATCH, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (w->mem == MAP_FAILED) {
		w->mem = NULL;
		return -ENOMEM;
	}
	return 0;
}

int dump_pages_prealloc(struct dump_pages *p)
{
	return writer_mem(&p->w, p->nbuf);
}

/* Start the writer on FD, with every signal blocked in it (they are the main thread's). */
static int writer_start(struct dump_writer *w, int fd, unsigned nbuf)
{
	sigset_t all, old;
	int ret;

	w->fd = fd;
	if (writer_mem(w, nbuf) < 0)
		return -ENOMEM;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = pthread_create(&w->th, NULL, writer_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret) {
		pthread_mutex_destroy(&w->mu);
		pthread_cond_destroy(&w->cv);
		return -ret;
	}
	w->started = true;
	return 0;
}

/* Wait for a free buffer. Returns it, or NULL once a write has failed. */
static uint8_t *writer_buf(struct dump_writer *w)
{
	uint8_t *p = NULL;

	pthread_mutex_lock(&w->mu);
	while (w->head - w->tail == w->nbuf && !w->err)
		pthread_cond_wait(&w->cv, &w->mu);
	if (!w->err)
		p = w->mem + (w->head % w->nbuf) * DUMP_BATCH;
	pthread_mutex_unlock(&w->mu);
	return p;
}

/* The segment list of the buffer that writer_buf() returned. */
static struct iovec *writer_segs(struct dump_writer *w)
{
	return w->seg[w->head % w->nbuf];
}

/* Hand the buffer from writer_buf(), with its first N segments to write, to the writer. */
static void writer_push(struct dump_writer *w, int n)
{
	pthread_mutex_lock(&w->mu);
	w->nseg[w->head % w->nbuf] = n;
	w->head++;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

/* Let the writer finish what it has and stop. Returns 0 or -errno of the first failed write. */
static int writer_stop(struct dump_writer *w)
{
	if (!w->started)
		return 0;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->th, NULL);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	w->started = false;
	return w->err ? -w->err : 0;
}

/* Read the gathered batch, keep its non-zero pages, append them to the pages file. */
static int flush_batch(struct dump_pages *p)
{
	struct iovec *seg;
	uint64_t off = 0;
	int ret, nseg = 0;

	if (!p->nitems)
		return 0;
	if (*p->interrupted)
		return pfail(p, EINTR, "interrupted");
	p->buf = writer_buf(&p->w);
	if (!p->buf)
		return pfail(p, p->w.err, "%s/%s: write: %s", p->dir, p->pages_name,
			     strerror(p->w.err));
	ret = read_batch(p);
	if (ret < 0)
		return ret;
	seg = writer_segs(&p->w);
	for (size_t i = 0; i < p->nitems; i++) {
		const struct dump_item *it = &p->items[i];
		const struct dump_area *a = &p->areas[it->area];

		for (uint64_t x = 0; x < it->len; x += DUMP_PAGE, off += DUMP_PAGE) {
			if (p->bad[off / DUMP_PAGE] == DUMP_BAD_POISON) {
				/* Recorded, with zeros standing in for it in the pages file. */
				p->bad[off / DUMP_PAGE] = 0;
				seg[nseg++] = (struct iovec){ (void *)(uintptr_t)zero_page, DUMP_PAGE };
				ret = pe_add(p, it->addr + x, it->area, PE_POISON);
				if (ret < 0)
					return ret;
				fprintf(stderr, "uffd-inject: note: pid %d: page 0x%" PRIx64 " cannot "
					"be read (poisoned): recorded as such; it faults with SIGBUS "
					"wherever it is served or restored\n", (int)p->pid, it->addr + x);
				p->st->pages++;
				p->st->poisoned++;
				if (p->pe[p->npe - 1].flags & PE_LAZY)
					p->st->lazy_pages++;
				continue;
			}
			if (p->bad[off / DUMP_PAGE]) {
				p->bad[off / DUMP_PAGE] = 0;
				if (p->unreadable)
					p->unreadable(p->unreadable_ctx, it->addr + x, DUMP_PAGE);
				continue;
			}
			/* A zero page of an anonymous area reads zero without us; in a
			 * private file mapping it hides the file's page, so it stays. */
			if ((a->kind == DUMP_ANON || a->kind == DUMP_SHMEM) && !a->hpage &&
			    page_is_zero(p->buf + off)) {
				p->st->holes++;
				continue;
			}
			/* Runs of kept pages go out as segments of the buffer: no copying. */
			if (nseg && (uint8_t *)seg[nseg - 1].iov_base + seg[nseg - 1].iov_len ==
				    p->buf + off)
				seg[nseg - 1].iov_len += DUMP_PAGE;
			else
				seg[nseg++] = (struct iovec){ p->buf + off, DUMP_PAGE };
			ret = pe_add(p, it->addr + x, it->area, 0);
			if (ret < 0)
				return ret;
			p->st->pages++;
			if (p->pe[p->npe - 1].flags & PE_LAZY)
				p->st->lazy_pages++;
		}
	}
	writer_push(&p->w, nseg);
	p->nitems = 0;
	p->batch = 0;
	return 0;
}

/* Note that area AREA has pages at [ADDR, ADDR + LEN): extend the last span or add one. */
static int span_add(struct dump_pages *p, uint32_t area, uint64_t addr, uint64_t len)
{
	struct dump_range *last = p->nspans ? &p->spans[p->nspans - 1] : NULL;

	if (last && last->area == area && addr - last->end <= DUMP_SPAN_GAP) {
		last->end = addr + len;
		return 0;
	}
	if (p->nspans == p->capspans) {
		size_t ncap = p->capspans ? p->capspans * 2 : 64;
		struct dump_range *ns = realloc(p->spans, ncap * sizeof(*ns));

		if (!ns)
			return pfail(p, ENOMEM, "out of memory");
		p->spans = ns;
		p->capspans = ncap;
	}
	p->spans[p->nspans++] = (struct dump_range){ addr, addr + len, area };
	return 0;
}

/* Queue LEN bytes of pages at ADDR (in area AREA) for reading; flush full batches. */
static int add_range(struct dump_pages *p, uint32_t area, uint64_t addr, uint64_t len)
{
	int sret = span_add(p, area, addr, len);

	if (sret < 0)
		return sret;
	while (len) {
		struct dump_item *last = p->nitems ? &p->items[p->nitems - 1] : NULL;
		uint64_t room = DUMP_BATCH - p->batch, take;
		int ret;

		if (room == 0) {
			ret = flush_batch(p);
			if (ret < 0)
				return ret;
			continue;
		}
		take = len < room ? len : room;
		if (last && last->area == area && last->addr + last->len == addr) {
			last->len += take;
		} else {
			if (p->nitems == DUMP_IOV) {
				ret = flush_batch(p);
				if (ret < 0)
					return ret;
				continue;
			}
			p->items[p->nitems++] = (struct dump_item){ addr, take, area };
		}
		p->batch += take;
		addr += take;
		len -= take;
	}
	return 0;
}

/* Find the pages of area I with PAGEMAP_SCAN. Returns -ENOTTY when the kernel has no such ioctl. */
static int scan_area(struct dump_pages *p, uint32_t i)
{
	const VmaEntry *v = &p->vmas[i];
	const struct dump_area *a = &p->areas[i];
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.start = v->start,
		.end = v->end,
		.vec = (uintptr_t)p->regions,
		.vec_len = DUMP_REGIONS,
		.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
		.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO,
	};

	if (a->kind == DUMP_COW) {
		/* Only pages that are not the file's: the copies made on write. */
		arg.category_inverted = PAGE_IS_FILE;
		arg.category_mask = PAGE_IS_FILE;
	}
	/*
	 * Guard markers count as swapped: reported apart, to be left out
	 * (reading one fails) and noted (lazy must not move such an area).
	 */
	if (!p->scan_no_guard)
		arg.return_mask |= PAGE_IS_GUARD;
	for (;;) {
		long n = ioctl(p->pmfd, PAGEMAP_SCAN, &arg);
		uint64_t next;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EINVAL && !p->scan_no_guard) {
			/* Before Linux 6.14: no such category, and no guard regions either. */
			p->scan_no_guard = true;
			arg.return_mask &= ~(uint64_t)PAGE_IS_GUARD;
			continue;
		}
		if (n < 0 && !p->scan_tried && (errno == ENOTTY || errno == EINVAL))
			return -ENOTTY;
		if (n < 0)
			return pfail(p, errno, "PAGEMAP_SCAN 0x%" PRIx64 "-0x%" PRIx64
				     ": %s", (uint64_t)arg.start, (uint64_t)arg.end,
				     strerror(errno));
		p->scan_tried = true;
		for (long k = 0; k < n; k++) {
			const struct page_region *r = &p->regions[k];
			int ret;

			if (r->start < v->start || r->end > v->end || r->start >= r->end ||
			    (r->start | r->end) & (DUMP_PAGE - 1))
				return pfail(p, EIO, "PAGEMAP_SCAN returned 0x%" PRIx64
					     "-0x%" PRIx64 " outside 0x%" PRIx64 "-0x%" PRIx64,
					     (uint64_t)r->start, (uint64_t)r->end,
					     v->start, v->end);
			if (r->categories & PAGE_IS_GUARD) {
				if (p->guarded)
					p->guarded[i] = true;
				continue;
			}
			if ((r->categories & PAGE_IS_PFNZERO) && a->kind == DUMP_ANON) {
				p->st->holes += (r->end - r->start) / DUMP_PAGE;
				continue;
			}
			ret = add_range(p, i, r->start, r->end - r->start);
			if (ret < 0)
				return ret;
		}
		/*
		 * The kernel stops before the end only when our vector is full.
		 * Its walk_end is then not to be trusted alone: on 6.18 it can
		 * still hold the point of an earlier internal stop, behind
		 * regions it went on to return. Go on after the last region.
		 */
		if (n < DUMP_REGIONS)
			return 0;
		next = arg.walk_end > p->regions[n - 1].end ? arg.walk_end : p->regions[n - 1].end;
		if (next >= v->end)
			return 0;
		if (next <= arg.start)
			return pfail(p, EIO, "PAGEMAP_SCAN made no progress at 0x%" PRIx64,
				     (uint64_t)arg.start);
		arg.start = next;
	}
}

/*
 * Find the pages of shared area I in its shmem object: SEEK_DATA/SEEK_HOLE
 * on /proc/PID/map_files/START-END. Its page tables would miss the pages it
 * does not map itself (written by a child, or dropped with MADV_DONTNEED),
 * and the punch that follows takes every page of the object's range.
 */
static int shmem_area(struct dump_pages *p, uint32_t i)
{
	const VmaEntry *v = &p->vmas[i];
	uint64_t from = v->pgoff, to = v->pgoff + (v->end - v->start);
	char path[96];
	int fd, ret = 0;

	snprintf(path, sizeof(path), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, (int)p->pid,
		 v->start, v->end);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return pfail(p, errno, "%s (its shared memory object): %s", path, strerror(errno));
	while (from < to && ret == 0) {
		off_t d = lseek(fd, (off_t)from, SEEK_DATA), h;

		if (d < 0 && errno == ENXIO)
			break;
		if (d < 0 || (h = lseek(fd, d, SEEK_HOLE)) < 0) {
			ret = pfail(p, errno, "%s: SEEK_DATA/SEEK_HOLE at %" PRIu64 ": %s", path,
				    from, strerror(errno));
			break;
		}
		if ((uint64_t)d >= to)
			break;
		if ((uint64_t)h > to)
			h = (off_t)to;
		/* Whole pages: the object's size need not be page aligned at its end. */
		d &= ~(off_t)(DUMP_PAGE - 1);
		h = (h + (off_t)DUMP_PAGE - 1) & ~(off_t)(DUMP_PAGE - 1);
		if ((uint64_t)h > to)
			h = (off_t)to;
		if ((uint64_t)d < from)
			d = (off_t)from;
		if (h > d)
			ret = add_range(p, i, v->start + ((uint64_t)d - v->pgoff), (uint64_t)(h - d));
		from = (uint64_t)h > from ? (uint64_t)h : from + DUMP_PAGE;
	}
	close(fd);
	return ret;
}

/* Find the pages of area I from /proc/PID/pagemap words (kernels before 6.7). */
static int pagemap_area(struct dump_pages *p, uint32_t i)
{
	const VmaEntry *v = &p->vmas[i];
	const struct dump_area *a = &p->areas[i];
	uint64_t run = 0, run_len = 0;

	for (uint64_t addr = v->start; addr < v->end;) {
		uint64_t cnt = (v->end - addr) / DUMP_PAGE;
		size_t want, got = 0;

		if (cnt > DUMP_PMWORDS)
			cnt = DUMP_PMWORDS;
		want = cnt * sizeof(uint64_t);
		while (got < want) {
			ssize_t n = pread(p->pmfd, (uint8_t *)p->pmwords + got, want - got,
					  (off_t)(addr / DUMP_PAGE * sizeof(uint64_t) + got));

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return pfail(p, n < 0 ? errno : EIO,
					     "/proc/%d/pagemap at 0x%" PRIx64 ": %s",
					     (int)p->pid, addr,
					     n < 0 ? strerror(errno) : "end of file");
			got += n;
		}
		for (uint64_t k = 0; k < cnt; k++, addr += DUMP_PAGE) {
			uint64_t w = p->pmwords[k];
			bool take = (w & (PM_PRESENT | PM_SWAPPED)) && !(w & PM_GUARD) &&
				    !(a->kind == DUMP_COW && (w & PM_FILE));

			if ((w & PM_GUARD) && p->guarded)
				p->guarded[i] = true;

			if (take && run_len && run + run_len == addr) {
				run_len += DUMP_PAGE;
				continue;
			}
			if (run_len) {
				int ret = add_range(p, i, run, run_len);

				if (ret < 0)
					return ret;
				run_len = 0;
			}
			if (take) {
				run = addr;
				run_len = DUMP_PAGE;
			}
		}
	}
	return run_len ? add_range(p, i, run, run_len) : 0;
}

int dump_pages_open(struct dump_pages *p)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)p->pid);
	p->pmfd = open(path, O_RDONLY | O_CLOEXEC);
	if (p->pmfd < 0)
		return pfail(p, errno, "%s: %s", path, strerror(errno));
	p->riov = calloc(DUMP_IOV, sizeof(*p->riov));
	p->items = calloc(DUMP_IOV, sizeof(*p->items));
	p->regions = calloc(DUMP_REGIONS, sizeof(*p->regions));
	p->guarded = calloc(p->nvmas ? p->nvmas : 1, sizeof(*p->guarded));
	p->pmwords = calloc(DUMP_PMWORDS, sizeof(*p->pmwords));
	if (!p->riov || !p->items || !p->regions || !p->guarded || !p->pmwords)
		return pfail(p, ENOMEM, "out of memory");
	return 0;
}

int dump_pages(struct dump_pages *p, int fd)
{
	size_t k = 0;
	int ret;

	ret = writer_start(&p->w, fd, p->nbuf);
	if (ret < 0)
		return pfail(p, ret, "cannot start the writer thread: %s", strerror(-ret));

	p->use_scan = !p->no_scan;
	for (uint32_t i = 0; i < p->nvmas; i++) {
		if (p->areas[i].kind == DUMP_NONE)
			continue;
		if (p->tracked && p->tracked[i]) {
			/* Pre-copy: what precopy.c sorted out, not every page. */
			while (k < p->ncopy && p->copy[k].area < i)
				k++;
			for (ret = 0; k < p->ncopy && p->copy[k].area == i && ret == 0; k++)
				ret = add_range(p, i, p->copy[k].start,
						p->copy[k].end - p->copy[k].start);
			if (ret < 0)
				return ret;
			continue;
		}
		if (p->areas[i].kind == DUMP_SHMEM) {
			ret = shmem_area(p, i);
			if (ret < 0)
				return ret;
			continue;
		}
		ret = p->use_scan ? scan_area(p, i) : pagemap_area(p, i);
		if (ret == -ENOTTY) {	/* no PAGEMAP_SCAN here: before Linux 6.7 */
			p->use_scan = false;
			ret = pagemap_area(p, i);
		}
		if (ret < 0)
			return ret;
	}
	p->st->scanned = p->use_scan;
	ret = flush_batch(p);
	if (ret < 0)
		return ret;
	if (p->read_done)
		p->read_done(p->read_done_ctx);
	ret = writer_stop(&p->w);
	p->st->write_s = p->w.write_s;
	if (ret < 0)
		return pfail(p, ret, "%s/%s: write: %s", p->dir, p->pages_name,
			     strerror(-ret));
	p->st->entries = p->npe;
	return 0;
}

void dump_pages_cancel(struct dump_pages *p)
{
	if (!p->w.started)
		return;
	/* Skip what is still queued: it goes to a file about to be removed. */
	pthread_mutex_lock(&p->w.mu);
	if (!p->w.err)
		p->w.err = ECANCELED;
	pthread_mutex_unlock(&p->w.mu);
	writer_stop(&p->w);
}

void dump_pages_free(struct dump_pages *p)
{
	if (p->pmfd >= 0)
		close(p->pmfd);
	if (p->memfd >= 0)
		close(p->memfd);
	writer_stop(&p->w);
	if (p->w.mem)
		munmap(p->w.mem, (size_t)p->w.nbuf * DUMP_BATCH);
	free(p->riov);
	free(p->items);
	free(p->regions);
	free(p->guarded);
	p->guarded = NULL;
	free(p->pmwords);
	free(p->pe);
	free(p->spans);
}
