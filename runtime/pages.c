/* Shared read-only mappings of pages-N.img files. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "pages.h"

#define PAGES_PAGE	4096ull

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ	22
#endif

void pages_cache_init(struct pages_cache *c)
{
	*c = (struct pages_cache){ .lock = PTHREAD_MUTEX_INITIALIZER,
				   .pq_cv = PTHREAD_COND_INITIALIZER };
}

/* Free PF's struct, its fd and its record of mapped pages (not the mapping). */
static void pages_file_free(struct pages_file *pf)
{
	if (pf->fd >= 0)
		close(pf->fd);
	free(pf->mapped);
	free(pf);
}

/* Take another reference to the file mapped for ST, if any (under LOCK). */
static struct pages_file *pages_find(struct pages_cache *c, const struct stat *st)
{
	struct pages_file *pf;

	for (pf = c->head; pf; pf = pf->next) {
		if (pf->dev == st->st_dev && pf->ino == st->st_ino &&
		    pf->size == (uint64_t)st->st_size) {
			pf->refs++;
			return pf;
		}
	}
	return NULL;
}

/*
 * The open and the mmap happen outside the lock (they may be slow, and the
 * other thread's pages_put must not wait on them); a file mapped twice by a
 * race is caught when the new one is added, and the loser unmapped.
 */
int pages_get(struct pages_cache *c, int dirfd, const char *name, const char *label,
	      struct pages_file **out, struct img_err *err)
{
	struct pages_file *pf;
	struct stat st;
	void *base = NULL;
	int fd;

	fd = img_open_regular(dirfd, name, label, &st, err);
	if (fd < 0)
		return fd;
	pthread_mutex_lock(&c->lock);
	pf = pages_find(c, &st);
	pthread_mutex_unlock(&c->lock);
	if (pf) {
		close(fd);
		*out = pf;
		return 0;
	}
	if (st.st_size > 0) {
		base = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
		if (base == MAP_FAILED) {
			int e = errno;

			close(fd);
			return img_errf(err, e, label, 0, "mmap %lld bytes: %s",
					(long long)st.st_size, strerror(e));
		}
	}
	pf = calloc(1, sizeof(*pf));
	if (!pf) {
		close(fd);
		if (base)
			munmap(base, st.st_size);
		return img_errf(err, ENOMEM, label, 0, "out of memory");
	}
	pf->fd = -1;
	if (c->keep_fds && base) {
		/* Untouched until a page is noted: no memory for what is never served. */
		pf->mapped = calloc((st.st_size / PAGES_PAGE + 64) / 64, sizeof(uint64_t));
		pf->fd = fd;
	} else {
		close(fd);
	}
	pf->dev = st.st_dev;
	pf->ino = st.st_ino;
	pf->base = base;
	pf->size = st.st_size;
	pf->refs = 1;
	snprintf(pf->name, sizeof(pf->name), "%s", name);
	pthread_mutex_lock(&c->lock);
	*out = pages_find(c, &st);
	if (!*out) {
		pf->next = c->head;
		c->head = pf;
		c->nr_files++;
		c->mapped_bytes += pf->size;
		*out = pf;
		pf = NULL;
	}
	pthread_mutex_unlock(&c->lock);
	if (pf) {
		/* Mapped meanwhile by the other thread: keep that one. */
		if (base)
			munmap(base, st.st_size);
		pages_file_free(pf);
	}
	return 0;
}

unsigned pages_nr_files(struct pages_cache *c)
{
	unsigned n;

	pthread_mutex_lock(&c->lock);
	n = c->nr_files;
	pthread_mutex_unlock(&c->lock);
	return n;
}

bool pages_mapped(const struct pages_file *pf, uint64_t off, uint64_t len)
{
	if (!pf->mapped)
		return true;
	for (uint64_t i = off / PAGES_PAGE; i < (off + len + PAGES_PAGE - 1) / PAGES_PAGE; i++)
		if (!(__atomic_load_n(&pf->mapped[i / 64], __ATOMIC_RELAXED) >> (i % 64) & 1))
			return false;
	return true;
}

void pages_note_mapped(const struct pages_file *pf, uint64_t off, uint64_t len)
{
	uint64_t i = off / PAGES_PAGE, end = (off + len + PAGES_PAGE - 1) / PAGES_PAGE;

	if (!pf->mapped)
		return;
	while (i < end) {
		uint64_t n = end - i < 64 - i % 64 ? end - i : 64 - i % 64;
		uint64_t m = n == 64 ? ~0ull : ((1ull << n) - 1) << (i % 64);

		/* Read first: a word already set is not written (no cache line bounced). */
		if ((__atomic_load_n(&pf->mapped[i / 64], __ATOMIC_RELAXED) & m) != m)
			__atomic_fetch_or(&pf->mapped[i / 64], m, __ATOMIC_RELAXED);
		i += n;
	}
}

int pages_pread(const struct pages_file *pf, uint64_t off, uint64_t len, void *buf)
{
	ssize_t n;

	if (pf->fd < 0)
		return -EBADF;
	do
		n = pread(pf->fd, buf, len, (off_t)off);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return (uint64_t)n == len ? 0 : -EIO;
}

#define PAGES_ASYNC_UNMAP	(64ull << 20)

struct unmap_job {
	void *base;
	size_t len;
};

#define PAGES_ZAP_CHUNK	(64ull << 20)

static void *unmap_main(void *arg)
{
	struct unmap_job *j = arg;

	/*
	 * Empty it first, a chunk at a time: MADV_DONTNEED holds no lock that an
	 * mmap() of the loader (a new restore's pages file) must wait for, as
	 * munmap() of a populated 4 GiB mapping would for its whole 0.1 s. The
	 * munmap() of the empty mapping is then quick.
	 */
	for (size_t off = 0; off < j->len; off += PAGES_ZAP_CHUNK)
		madvise((char *)j->base + off,
			j->len - off < PAGES_ZAP_CHUNK ? j->len - off : PAGES_ZAP_CHUNK, MADV_DONTNEED);
	munmap(j->base, j->len);
	free(j);
	return NULL;
}

/*
 * Unmap BASE: a large mapping another thread's way. Tearing down the page
 * tables of a populated 4 GiB mapping takes about 0.1 s, which would stall
 * every other process the caller serves; the mmap lock is only held for
 * reading meanwhile, so the caller's own copies and faults go on.
 */
static void unmap(void *base, size_t len)
{
	struct unmap_job *j = len >= PAGES_ASYNC_UNMAP ? malloc(sizeof(*j)) : NULL;
	pthread_attr_t attr;
	pthread_t th;
	int ret = -1;

	if (j && pthread_attr_init(&attr) == 0) {
		*j = (struct unmap_job){ base, len };
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		ret = pthread_create(&th, &attr, unmap_main, j);
		pthread_attr_destroy(&attr);
	}
	if (ret != 0) {
		free(j);
		munmap(base, len);
	}
}

void pages_put(struct pages_cache *c, struct pages_file *pf)
{
	struct pages_file **pp;

	if (!pf)
		return;
	pthread_mutex_lock(&c->lock);
	if (--pf->refs) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	for (pp = &c->head; *pp; pp = &(*pp)->next) {
		if (*pp == pf) {
			*pp = pf->next;
			break;
		}
	}
	c->nr_files--;
	c->mapped_bytes -= pf->size;
	pthread_mutex_unlock(&c->lock);
	if (pf->base)
		unmap((void *)pf->base, pf->size);
	pages_file_free(pf);
}

/*
 * The prefault worker's step: 256 KiB, about 5 us of populating here. A
 * thread of the daemon that gives up its CPU (the loop polling for the
 * next fault yields between polls) may hand it to the worker for that long.
 */
#define PAGES_PQ_CHUNK	(256ull << 10)
/* No step within this long of a served fault (pages_note_fault). */
#define PAGES_PQ_QUIET_NS	(2 * 1000000ull)

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* Whether the worker should drop PF: its users are gone (the queue's is the last reference), or it must quit. */
static bool pq_drop(struct pages_cache *c, const struct pages_file *pf)
{
	bool drop;

	pthread_mutex_lock(&c->lock);
	drop = pf->refs == 1 || c->pq_quit;
	pthread_mutex_unlock(&c->lock);
	return drop;
}

/*
 * Take out of the queue, and drop, the files behind the head that no one
 * uses any more: the head may wait long (pq_wait_quiet), and they must not
 * stay mapped meanwhile.
 */
static void pq_sweep(struct pages_cache *c)
{
	struct pages_file *prev, *pf, *gone = NULL;

	pthread_mutex_lock(&c->lock);
	for (prev = c->pq_head; prev && (pf = prev->pq_next);) {
		if (pf->refs > 1) {
			prev = pf;
			continue;
		}
		prev->pq_next = pf->pq_next;
		if (c->pq_tail == pf)
			c->pq_tail = prev;
		pf->pq_next = gone;
		gone = pf;
	}
	pthread_mutex_unlock(&c->lock);
	while ((pf = gone)) {
		gone = pf->pq_next;
		pf->pq_next = NULL;
		log_debug("pages %s: prefault stopped, %llu of %llu MiB mapped (in the page cache)",
			  pf->name, (unsigned long long)(pf->pq_mapped >> 20),
			  (unsigned long long)(pf->size >> 20));
		pages_put(c, pf);
	}
}

/*
 * Wait while faults come: until none was served for PAGES_PQ_QUIET_NS.
 * The prefault is for later faults; it must not take a moment from the ones
 * being served. False if PF should be dropped meanwhile (pq_drop): faults
 * of other processes must not keep a file mapped that no one uses.
 */
static bool pq_wait_quiet(struct pages_cache *c, const struct pages_file *pf)
{
	for (;;) {
		uint64_t last = __atomic_load_n(&c->pq_fault_ns, __ATOMIC_RELAXED), now = mono_ns();

		if (pq_drop(c, pf))
			return false;
		if (!last || now - last >= PAGES_PQ_QUIET_NS)
			return true;
		pq_sweep(c);
		usleep((PAGES_PQ_QUIET_NS - (now - last)) / 1000 + 1);
	}
}

/*
 * Which pages of PF are in the page cache now, one bit a page (mincore a
 * chunk at a time); NULL if out of memory or mincore failed.
 */
static uint64_t *cached_now(struct pages_cache *c, const struct pages_file *pf)
{
	uint64_t n = (pf->size + PAGES_PAGE - 1) / PAGES_PAGE;
	uint64_t *bits = calloc((n + 63) / 64, sizeof(uint64_t));
	unsigned char vec[PAGES_PQ_CHUNK / PAGES_PAGE];

	if (!bits)
		return NULL;
	for (uint64_t off = 0; off < pf->size; off += PAGES_PQ_CHUNK) {
		uint64_t len = pf->size - off < PAGES_PQ_CHUNK ? pf->size - off : PAGES_PQ_CHUNK;
		uint64_t first = off / PAGES_PAGE;

		if (!pq_wait_quiet(c, pf) || mincore((void *)(pf->base + off), len, vec) < 0) {
			free(bits);
			return NULL;
		}
		for (uint64_t i = 0; i < (len + PAGES_PAGE - 1) / PAGES_PAGE; i++)
			if (vec[i] & 1)
				bits[(first + i) / 64] |= 1ull << ((first + i) % 64);
	}
	return bits;
}

static bool bit(const uint64_t *bits, uint64_t i)
{
	return bits[i / 64] >> (i % 64) & 1;
}

/*
 * Map the pages of [OFF, OFF+LEN) of PF that were in the page cache when
 * the worker took it up (CACHED); returns the bytes mapped. Only those: a
 * page brought in since may be one of readahead's, whose first touch
 * starts the next readahead, and the next, through a cold file. A page of
 * CACHED evicted since is read back: one page.
 */
static uint64_t prefault_chunk(const struct pages_file *pf, const uint64_t *cached,
			       uint64_t off, uint64_t len)
{
	uint64_t i = off / PAGES_PAGE, end = (off + len + PAGES_PAGE - 1) / PAGES_PAGE;
	uint64_t j, done = 0;

	while (i < end) {
		if (!bit(cached, i)) {
			i++;
			continue;
		}
		for (j = i; j < end && bit(cached, j); j++)
			;
		/* EFAULT: the file shrank under us; its users will get EFAULT too. */
		if (madvise((void *)(pf->base + i * PAGES_PAGE), (j - i) * PAGES_PAGE,
			    MADV_POPULATE_READ) == 0) {
			pages_note_mapped(pf, i * PAGES_PAGE, (j - i) * PAGES_PAGE);
			done += (j - i) * PAGES_PAGE;
		}
		i = j;
	}
	return done;
}

/* Take the head of the queue off it (under LOCK). */
static struct pages_file *pq_pop(struct pages_cache *c)
{
	struct pages_file *pf = c->pq_head;

	c->pq_head = pf->pq_next;
	if (!c->pq_head)
		c->pq_tail = NULL;
	pf->pq_next = NULL;
	return pf;
}

static void *prefault_main(void *arg)
{
	struct pages_cache *c = arg;
	struct sched_param sp = { 0 };
	uint64_t *cached = NULL;	/* of the file at the head of the queue */

	/*
	 * Only when no other thread wants this CPU: a process woken from a
	 * fault, and the loop that serves it, always run first.
	 */
	pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
	pthread_mutex_lock(&c->lock);
	while (!c->pq_quit) {
		struct pages_file *pf = c->pq_head;
		uint64_t off, len, done;

		if (!pf) {
			pthread_cond_wait(&c->pq_cv, &c->lock);
			continue;
		}
		if (!cached && pf->refs > 1 && pf->pq_off < pf->size) {
			pthread_mutex_unlock(&c->lock);
			cached = cached_now(c, pf);
			pthread_mutex_lock(&c->lock);
			if (!cached && pf->refs > 1 && !c->pq_quit)
				pf->pq_off = pf->size;	/* out of memory, or mincore failed: give it up */
		}
		/* Done, or the queue's is the only reference left: its users are gone. */
		if (pf->pq_off >= pf->size || pf->refs == 1) {
			free(cached);
			cached = NULL;
			pq_pop(c);
			log_debug("pages %s: prefault %s, %llu of %llu MiB mapped (in the page cache)",
				  pf->name, pf->pq_off >= pf->size ? "done" : "stopped",
				  (unsigned long long)(pf->pq_mapped >> 20),
				  (unsigned long long)(pf->size >> 20));
			pthread_mutex_unlock(&c->lock);
			pages_put(c, pf);
			pthread_mutex_lock(&c->lock);
			continue;
		}
		off = pf->pq_off;
		len = pf->size - off < PAGES_PQ_CHUNK ? pf->size - off : PAGES_PQ_CHUNK;
		pthread_mutex_unlock(&c->lock);
		done = pq_wait_quiet(c, pf) ? prefault_chunk(pf, cached, off, len) : 0;
		if (c->pq_nap_us)
			usleep(c->pq_nap_us);
		pthread_mutex_lock(&c->lock);
		pf->pq_off = off + len;
		pf->pq_mapped += done;
		c->prefaulted += done;
	}
	pthread_mutex_unlock(&c->lock);
	free(cached);
	return NULL;
}

void pages_prefault(struct pages_cache *c, const struct pages_file *cpf)
{
	/* The reference count is the cache's, guarded by its lock: not the caller's const. */
	struct pages_file *pf = (struct pages_file *)cpf;

	if (!pf || !pf->base)
		return;
	pthread_mutex_lock(&c->lock);
	if (pf->pq_seen || c->pq_quit) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	if (!c->pq_started) {
		int ret = pthread_create(&c->pq_thread, NULL, prefault_main, c);

		if (ret) {
			pthread_mutex_unlock(&c->lock);
			log_debug("pages: no prefault thread: %s", strerror(ret));
			return;
		}
		c->pq_started = true;
	}
	pf->pq_seen = true;
	pf->refs++;
	if (c->pq_tail)
		c->pq_tail->pq_next = pf;
	else
		c->pq_head = pf;
	c->pq_tail = pf;
	pthread_cond_signal(&c->pq_cv);
	pthread_mutex_unlock(&c->lock);
}

void pages_prefault_stop(struct pages_cache *c)
{
	struct pages_file *left;

	pthread_mutex_lock(&c->lock);
	c->pq_quit = true;
	pthread_cond_signal(&c->pq_cv);
	pthread_mutex_unlock(&c->lock);
	if (c->pq_started)
		pthread_join(c->pq_thread, NULL);
	c->pq_started = false;
	pthread_mutex_lock(&c->lock);
	left = c->pq_head;
	c->pq_head = c->pq_tail = NULL;
	pthread_mutex_unlock(&c->lock);
	while (left) {
		struct pages_file *pf = left;

		left = pf->pq_next;
		pf->pq_next = NULL;
		pages_put(c, pf);
	}
}
