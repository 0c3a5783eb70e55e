/* The journal in a memfd, shared with the keeper (journal.h). */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal.h"

#define HDR_BYTES	4096ul
_Static_assert(sizeof(struct jhdr) <= HDR_BYTES, "the journal's header outgrew its page");
#define SLOT_BYTES	((size_t)JOURNAL_SLOTS * sizeof(struct jslot))
#define LOG_OFF		(HDR_BYTES + SLOT_BYTES)
#define FIRST_CAP	16384ull	/* records: 1 MiB */
/* 16M records (1 GiB of tmpfs, touched only as far as written). */
#define MAX_CAP		(16ull << 20)

static size_t bytes_for(uint64_t cap)
{
	return LOG_OFF + cap * sizeof(struct jrec);
}

static int jmap(struct journal *j, size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, j->fd, 0);

	if (p == MAP_FAILED)
		return -errno;
	j->h = p;
	j->slots = (struct jslot *)((char *)p + HDR_BYTES);
	j->log = (struct jrec *)((char *)p + LOG_OFF);
	j->size = size;
	return 0;
}

int journal_create(struct journal *j)
{
	int ret;

	memset(j, 0, sizeof(*j));
	j->fd = memfd_create("uffd-manager-journal", MFD_CLOEXEC);
	if (j->fd < 0)
		return -errno;
	ret = ftruncate(j->fd, (off_t)bytes_for(FIRST_CAP)) < 0 ? -errno :
	      jmap(j, bytes_for(FIRST_CAP));
	if (ret < 0) {
		close(j->fd);
		j->fd = -1;
		return ret;
	}
	j->h->magic = JOURNAL_MAGIC;
	j->h->version = JOURNAL_VERSION;
	j->h->cap = FIRST_CAP;
	return 0;
}

int journal_open(struct journal *j, int fd)
{
	struct stat st;
	int ret;

	memset(j, 0, sizeof(*j));
	j->fd = fd;
	if (fstat(fd, &st) < 0 || (size_t)st.st_size < bytes_for(1)) {
		close(fd);
		j->fd = -1;
		return -EINVAL;
	}
	ret = jmap(j, (size_t)st.st_size);
	if (ret < 0 || j->h->magic != JOURNAL_MAGIC || j->h->version != JOURNAL_VERSION ||
	    bytes_for(j->h->cap) > (size_t)st.st_size || j->h->nrec > j->h->cap) {
		journal_close(j);
		return ret < 0 ? ret : -EINVAL;
	}
	return 0;
}

void journal_close(struct journal *j)
{
	if (j->h)
		munmap(j->h, j->size);
	if (j->fd >= 0)
		close(j->fd);
	memset(j, 0, sizeof(*j));
	j->fd = -1;
}

/* Double the log's room: grow the file, then the mapping. */
static int grow(struct journal *j)
{
	uint64_t cap = j->h->cap * 2;
	void *p;

	if (cap > MAX_CAP || ftruncate(j->fd, (off_t)bytes_for(cap)) < 0)
		return -ENOMEM;
	p = mremap(j->h, j->size, bytes_for(cap), MREMAP_MAYMOVE);
	if (p == MAP_FAILED)
		return -ENOMEM;
	j->h = p;
	j->slots = (struct jslot *)((char *)p + HDR_BYTES);
	j->log = (struct jrec *)((char *)p + LOG_OFF);
	j->size = bytes_for(cap);
	/* The file is big enough before the header says so: a reader maps by the file's size. */
	__atomic_store_n(&j->h->cap, cap, __ATOMIC_RELEASE);
	return 0;
}

void journal_reset(struct journal *j)
{
	if (!j->h || !j->h->nrec)
		return;
	__atomic_store_n(&j->h->nrec, 0, __ATOMIC_RELEASE);
	j->h->lost = 0;
	/* The pages written so far go back to tmpfs; the mapping reads zero there. */
	fallocate(j->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)LOG_OFF,
		  (off_t)(j->size - LOG_OFF));
}

int journal_append(struct journal *j, const struct jrec *r)
{
	uint64_t n;

	if (!j->h)
		return 0;
	n = j->h->nrec;
	if (n == j->h->cap && grow(j) < 0) {
		j->h->lost = 1;	/* a new daemon must not trust the log from now on */
		return -ENOMEM;
	}
	j->log[n] = *r;
	__atomic_store_n(&j->h->nrec, n + 1, __ATOMIC_RELEASE);
	return 0;
}

uint32_t journal_slot_get(struct journal *j, uint64_t id)
{
	if (!j->h)
		return 0;
	for (uint32_t k = 0; k < JOURNAL_SLOTS; k++) {
		uint32_t i = (j->slot_hint + k) % JOURNAL_SLOTS;

		if (!j->slots[i].id) {
			memset(&j->slots[i], 0, sizeof(j->slots[i]));
			j->slots[i].id = id;
			j->slot_hint = i + 1;
			return i + 1;
		}
	}
	return 0;
}

void journal_slot_put(struct journal *j, uint32_t slot1)
{
	if (j->h && slot1 && slot1 <= JOURNAL_SLOTS)
		j->slots[slot1 - 1].id = 0;
}

struct jslot *journal_slot(struct journal *j, uint32_t slot1)
{
	if (!j->h || !slot1 || slot1 > JOURNAL_SLOTS)
		return NULL;
	return &j->slots[slot1 - 1];
}

static int jentry_cmp(const void *a, const void *b)
{
	const struct jentry *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

struct jentry *jentry_find(struct jentry *e, size_t n, uint64_t id)
{
	struct jentry key = { .id = id };

	return n ? bsearch(&key, e, n, sizeof(*e), jentry_cmp) : NULL;
}

/* Add an entry for ID (kept unsorted until the end of the scan). */
static struct jentry *jentry_add(struct jentry **e, size_t *n, size_t *cap, uint64_t id)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 64;
		struct jentry *ne = realloc(*e, c * sizeof(*ne));

		if (!ne)
			return NULL;
		*e = ne;
		*cap = c;
	}
	(*e)[*n] = (struct jentry){ .id = id, .uffd = -1, .pidfd = -1, .dirfd = -1 };
	return &(*e)[(*n)++];
}

int journal_scan(const struct journal *j, struct jentry **out, size_t *nout)
{
	uint64_t nrec = journal_nrec(j);
	struct jentry *e = NULL, *x, *p;
	size_t n = 0, cap = 0;

	/* Pass 1: the processes, in the order they came (ids rise, but records may interleave). */
	for (uint64_t i = 0; i < nrec; i++) {
		const struct jrec *r = &j->log[i];

		if (r->type == J_HELLO) {
			x = jentry_add(&e, &n, &cap, r->id);
			if (!x)
				goto nomem;
			x->uffd = r->fd[0];
			x->pidfd = r->fd[1];
			x->dirfd = r->fd[2];
			x->pid = (pid_t)r->a[0];
			x->image_id = (uint32_t)r->a[1];
			x->uid = (uint32_t)r->a[2];
			x->gid = (uint32_t)(r->a[2] >> 32);
			x->flags = (uint32_t)r->a[3];
			x->slot1 = (uint32_t)r->a[4];
			x->root = r->id;
		} else if (r->type == J_FORK) {
			x = jentry_add(&e, &n, &cap, r->a[0]);
			if (!x)
				goto nomem;
			x->parent = r->id;
			x->uffd = r->fd[0];
			x->slot1 = (uint32_t)r->a[1];
			x->fork_rec = i;
		}
	}
	qsort(e, n, sizeof(*e), jentry_cmp);
	/* Pass 2: what happened to each. */
	for (uint64_t i = 0; i < nrec; i++) {
		const struct jrec *r = &j->log[i];

		x = jentry_find(e, n, r->id);
		if (!x)
			continue;
		if (r->type == J_GROUPS) {
			for (int k = 0; k < r->fd[0] && k < 5 && x->ngroups < JOURNAL_GROUPS; k++)
				x->groups[x->ngroups++] = (uint32_t)r->a[k];
		} else if (r->type == J_PID) {
			x->pidfd = r->fd[0];
			x->pid = (pid_t)r->a[0];
		} else if (r->type == J_RELEASED) {
			x->state = JE_RELEASED;
		} else if (r->type == J_END) {
			x->state = JE_ENDED;
		}
	}
	/* A child's images are its hand-over's: follow the parents (each older than its child). */
	for (size_t i = 0; i < n; i++) {
		x = &e[i];
		if (!x->parent)
			continue;
		p = jentry_find(e, n, x->parent);
		x->parent_pid = p ? p->pid : 0;
		for (int depth = 0; p && p->parent && depth < 1 << 20; depth++)
			p = jentry_find(e, n, p->parent);
		if (p) {
			x->root = p->id;
			x->dirfd = p->dirfd;
			x->image_id = p->image_id;
			x->uid = p->uid;
			x->gid = p->gid;
			x->flags = p->flags;
			x->ngroups = p->ngroups;
			memcpy(x->groups, p->groups, sizeof(x->groups));
		}
	}
	*out = e;
	*nout = n;
	return 0;
nomem:
	free(e);
	return -ENOMEM;
}

struct uffd_msg *journal_read_begin(struct journal *j, uint64_t id, struct uffd_msg *buf)
{
	if (!j->h)
		return buf;
	if (j->rbuf_used)
		memset(j->h->rbuf, 0, j->rbuf_used);
	j->rbuf_used = 0;
	j->h->reading_nrec = j->h->nrec;
	/* The buffer is zero and the length noted before the mark says so. */
	__atomic_store_n(&j->h->reading, id, __ATOMIC_RELEASE);
	return j->h->rbuf;
}

void journal_read_end(struct journal *j, ssize_t n)
{
	if (!j->h)
		return;
	j->rbuf_used = n > 0 ? (size_t)n : 0;
	__atomic_store_n(&j->h->reading, 0, __ATOMIC_RELEASE);
}

unsigned journal_settle(struct journal *j,
			void (*record)(void *arg, uint64_t id, const struct uffd_msg *m),
			void *arg)
{
	uint64_t id = j->h ? j->h->reading : 0;
	unsigned n = 0;

	if (!id)
		return 0;
	if (j->h->reading_nrec <= j->h->nrec)
		j->h->nrec = j->h->reading_nrec;	/* what it recorded of the read is redone */
	for (; n < JOURNAL_RBUF && j->h->rbuf[n].event; n++)
		record(arg, id, &j->h->rbuf[n]);
	memset(j->h->rbuf, 0, sizeof(j->h->rbuf));
	j->h->reading = 0;
	return n;
}
