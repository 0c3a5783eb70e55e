/* Shared read-only mappings of pages-N.img files. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pages.h"

void pages_cache_init(struct pages_cache *c)
{
	*c = (struct pages_cache){ .lock = PTHREAD_MUTEX_INITIALIZER };
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
	close(fd);
	pf = calloc(1, sizeof(*pf));
	if (!pf) {
		if (base)
			munmap(base, st.st_size);
		return img_errf(err, ENOMEM, label, 0, "out of memory");
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
		free(pf);
	}
	return 0;
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
	free(pf);
}
