/* The working set first: record the order of first faults, replay it as the fill's order (wset.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "proc.h"
#include "wset.h"

#define WSET_MAGIC	"UFWS"
#define WSET_VERSION	1u

/* The file: magic, version, count, then COUNT image addresses of pages, all little-endian. */
struct wset_hdr {
	char magic[4];
	uint32_t version;
	uint64_t n;
};

enum ws_mode {
	WS_RECORD,	/* no record existed: make one */
	WS_REPLAY,	/* one did: fill it first, and add the faults it missed */
	WS_BROKEN,	/* out of memory: nothing is written */
};

/* A fault the record did not have, and the record index it came after (-1: before all). */
struct ws_extra {
	uint64_t img;
	int64_t after;
};

struct wset {
	char path[512];
	enum ws_mode mode;
	uint64_t *img;		/* the record (WS_RECORD: as it is being made) */
	size_t n, cap;
	struct ws_extra *extra;	/* WS_REPLAY: faults not in the record, in order */
	size_t nextra, capextra;
	int64_t last;		/* WS_REPLAY: the record index of the last fault that had one */
	size_t pos;		/* replay: the next entry to look at */
	uint64_t ahead;		/* replay: pages placed from it */
	uint32_t *slots;	/* replay: page -> 1 + its first index; open addressing */
	size_t nslots;		/* a power of two, at least 2n */
};

static size_t slot_of(const struct wset *ws, uint64_t img)
{
	return (size_t)(((img >> 12) * 0x9e3779b97f4a7c15ull) >> 20) & (ws->nslots - 1);
}

/* Index the record by page, first occurrence only; false without memory (then no lookups). */
static bool index_record(struct wset *ws)
{
	ws->nslots = 16;
	while (ws->nslots < 2 * ws->n)
		ws->nslots *= 2;
	ws->slots = calloc(ws->nslots, sizeof(*ws->slots));
	if (!ws->slots)
		return false;
	for (size_t i = 0; i < ws->n; i++) {
		size_t s = slot_of(ws, ws->img[i]);

		while (ws->slots[s] && ws->img[ws->slots[s] - 1] != ws->img[i])
			s = (s + 1) & (ws->nslots - 1);
		if (!ws->slots[s])
			ws->slots[s] = (uint32_t)i + 1;
	}
	return true;
}

int wset_parse(const void *buf, size_t len, uint64_t **img, size_t *n)
{
	struct wset_hdr h;

	if (len < sizeof(h))
		return -EINVAL;
	memcpy(&h, buf, sizeof(h));
	if (memcmp(h.magic, WSET_MAGIC, 4) || h.version != WSET_VERSION || h.n > WSET_MAX ||
	    len != sizeof(h) + h.n * sizeof(uint64_t))
		return -EINVAL;
	*n = h.n;
	*img = malloc(h.n ? h.n * sizeof(uint64_t) : 1);
	if (!*img)
		return -ENOMEM;
	memcpy(*img, (const char *)buf + sizeof(h), h.n * sizeof(uint64_t));
	for (size_t i = 0; i < h.n; i++)
		if ((*img)[i] & 4095) {
			free(*img);
			*img = NULL;
			return -EINVAL;
		}
	return 0;
}

/* Read the record at PATH into WS for replay; false if there is none (or it is bad). */
static bool load(struct wset *ws, const char *pfx)
{
	int fd = open(ws->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	char *buf = NULL;
	bool ok = false;
	int ret;

	if (fd < 0)
		return false;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    (uint64_t)st.st_size <= sizeof(struct wset_hdr) + WSET_MAX * sizeof(uint64_t) &&
	    (buf = malloc(st.st_size + 1)) && read(fd, buf, st.st_size) == st.st_size) {
		ret = wset_parse(buf, st.st_size, &ws->img, &ws->n);
		ok = ret == 0;
		if (!ok)
			log_warnx("%s working-set record %s is not one (%s): ignored", pfx, ws->path,
				  strerror(-ret));
	}
	free(buf);
	close(fd);
	return ok;
}

int wset_path(const char *dir, int dirfd, uint32_t pid, char *buf, size_t len)
{
	struct stat st;
	char name[64];

	snprintf(name, sizeof(name), "pagemap-%u.img", pid);
	if (fstatat(dirfd, name, &st, 0) < 0)
		return -errno;
	snprintf(buf, len, "%s/%" PRIx64 "-%" PRIx64 "-%" PRIx64 "-%" PRIx64 "-%" PRIx64 ".ws", dir,
		 (uint64_t)st.st_dev, (uint64_t)st.st_ino, (uint64_t)st.st_size,
		 (uint64_t)st.st_mtim.tv_sec, (uint64_t)st.st_mtim.tv_nsec);
	return 0;
}

void wset_start(struct target *t)
{
	const char *dir = t->d->o.wset_dir;
	struct wset *ws;

	if (!dir || t->remote || t->parent_id || !t->img || !(ws = calloc(1, sizeof(*ws))))
		return;
	if (wset_path(dir, t->img->dirfd, t->img->task.pid, ws->path, sizeof(ws->path)) < 0) {
		free(ws);
		return;
	}
	if (load(ws, t->pfx)) {
		ws->mode = WS_REPLAY;
		ws->last = -1;
		if (!index_record(ws))
			log_warnx("%s no memory to index its working-set record: the fill follows it, faults do not",
				  t->pfx);
		log_info("%s serving its working set first: %zu pages recorded in %s", t->pfx, ws->n,
			 ws->path);
	} else {
		ws->mode = WS_RECORD;
	}
	t->ws = ws;
}

/* Make room for one more of SIZE at *P (capacity *CAP, count N); false without memory. */
static bool grow(void **p, size_t *cap, size_t n, size_t size)
{
	size_t c = *cap ? 2 * *cap : 1024;
	void *q;

	if (n < *cap)
		return true;
	if (!(q = realloc(*p, c * size)))
		return false;
	*p = q;
	*cap = c;
	return true;
}

void wset_note(struct target *t, uint64_t img)
{
	struct wset *ws = t->ws;
	size_t k;

	if (!ws || ws->mode == WS_BROKEN)
		return;
	if (ws->mode == WS_REPLAY && wset_find(t, img, &k)) {
		ws->last = (int64_t)k;
		return;
	}
	if (ws->n + ws->nextra >= WSET_MAX)
		return;
	if (ws->mode == WS_RECORD) {
		if (!grow((void **)&ws->img, &ws->cap, ws->n, sizeof(*ws->img))) {
			ws->mode = WS_BROKEN;	/* a record with holes would mislead: none is written */
			return;
		}
		ws->img[ws->n++] = img;
		return;
	}
	if (!grow((void **)&ws->extra, &ws->capextra, ws->nextra, sizeof(*ws->extra))) {
		ws->nextra = 0;		/* the old record stands as it was */
		ws->mode = WS_BROKEN;
		return;
	}
	ws->extra[ws->nextra++] = (struct ws_extra){ img, ws->last };
}

/* Where image address IMG is in T now (a page of a lazy area that is still missing), or 0. */
static uint64_t missing_at(struct target *t, uint64_t img, struct area **vp)
{
	struct area *v = model_find(&t->map, img);

	if (!v || area_img_addr(v, img) != img || !area_is_missing(v, img))
		return 0;
	*vp = v;
	return img;
}

/* The next run from record index *POS on, as wset_next() describes; *POS moves past it. */
static uint64_t run_from(struct target *t, size_t *pos, uint64_t max, uint64_t *addr)
{
	struct wset *ws = t->ws;

	while (*pos < ws->n) {
		struct area *v;
		uint64_t a = missing_at(t, ws->img[(*pos)++], &v), len = 4096;

		if (!a)
			continue;
		/* A run of consecutive recorded pages, still missing, in one area. */
		while (*pos < ws->n && len < max && ws->img[*pos] == a + len &&
		       a + len < v->end && area_is_missing(v, a + len)) {
			len += 4096;
			(*pos)++;
		}
		*addr = a;
		return len;
	}
	return 0;
}

uint64_t wset_next(struct target *t, uint64_t max, uint64_t *addr)
{
	if (!t->ws || t->ws->mode != WS_REPLAY)
		return 0;
	return run_from(t, &t->ws->pos, max, addr);
}

bool wset_replaying(const struct target *t)
{
	return t->ws && t->ws->mode == WS_REPLAY;
}

bool wset_find(struct target *t, uint64_t img, size_t *k)
{
	struct wset *ws = t->ws;

	if (!ws || ws->mode != WS_REPLAY || !ws->slots)
		return false;
	for (size_t s = slot_of(ws, img); ws->slots[s]; s = (s + 1) & (ws->nslots - 1)) {
		if (ws->img[ws->slots[s] - 1] == img) {
			*k = ws->slots[s] - 1;
			return true;
		}
	}
	return false;
}

uint64_t wset_next_from(struct target *t, size_t *k, uint64_t max, uint64_t *addr)
{
	if (!t->ws || t->ws->mode != WS_REPLAY)
		return 0;
	return run_from(t, k, max, addr);
}

/* Write IMG[N] as WS's record: a temporary file renamed over the name, so a reader sees all or nothing. */
static bool save(const struct wset *ws, const uint64_t *img, size_t n, const char *dir,
		 const char *pfx)
{
	struct wset_hdr h = { .version = WSET_VERSION, .n = n };
	char tmp[sizeof(ws->path) + 16];
	size_t len = n * sizeof(uint64_t);
	int fd;

	memcpy(h.magic, WSET_MAGIC, 4);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		log_warn("%s working-set directory %s", pfx, dir);
		return false;
	}
	snprintf(tmp, sizeof(tmp), "%s.%d.tmp", ws->path, (int)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		log_warn("%s working-set record %s", pfx, tmp);
		return false;
	}
	if (write(fd, &h, sizeof(h)) != (ssize_t)sizeof(h) ||
	    write(fd, img, len) != (ssize_t)len || close(fd) < 0) {
		log_warn("%s writing working-set record %s", pfx, tmp);
		unlink(tmp);
		return false;
	}
	if (rename(tmp, ws->path) < 0) {
		log_warn("%s working-set record %s", pfx, ws->path);
		unlink(tmp);
		return false;
	}
	return true;
}

/*
 * The record with the faults it missed put in, each after the record entry
 * the process had last faulted at before it (in the order they came), so the
 * record learns what a fill got to first when it was made. NULL without memory.
 */
static uint64_t *merged(const struct wset *ws, size_t *len)
{
	size_t *at = calloc(ws->n + 2, sizeof(*at)), m = 0, j = 0;
	struct ws_extra *e = malloc(ws->nextra * sizeof(*e));
	uint64_t *out = malloc((ws->n + ws->nextra) * sizeof(*out));

	if (!at || !e || !out) {
		free(at);
		free(e);
		free(out);
		return NULL;
	}
	/* A stable counting sort of the extras by the entry they follow (bucket after + 1). */
	for (size_t i = 0; i < ws->nextra; i++)
		at[ws->extra[i].after + 2]++;
	for (size_t b = 1; b < ws->n + 2; b++)
		at[b] += at[b - 1];
	for (size_t i = 0; i < ws->nextra; i++)
		e[at[ws->extra[i].after + 1]++] = ws->extra[i];
	for (int64_t i = -1; i < (int64_t)ws->n; i++) {
		if (i >= 0)
			out[m++] = ws->img[i];
		while (j < ws->nextra && e[j].after == i)
			out[m++] = e[j++].img;
	}
	free(at);
	free(e);
	*len = m;
	return out;
}

void wset_placed(struct target *t, uint64_t pages)
{
	if (t->ws)
		t->ws->ahead += pages;
}

void wset_end(struct target *t)
{
	struct wset *ws = t->ws;
	const char *dir = t->d->o.wset_dir;

	if (!ws)
		return;
	if (ws->mode == WS_RECORD && ws->n && save(ws, ws->img, ws->n, dir, t->pfx))
		log_info("%s working set recorded: %zu pages in %s", t->pfx, ws->n, ws->path);
	if (ws->mode == WS_REPLAY) {
		uint64_t *img;
		size_t n;

		log_info("%s working set: %" PRIu64 " of %zu recorded pages filled before it asked",
			 t->pfx, ws->ahead, ws->n);
		if (ws->nextra && (img = merged(ws, &n))) {
			if (save(ws, img, n, dir, t->pfx))
				log_info("%s working set record updated: %zu pages (%zu it lacked) in %s",
					 t->pfx, n, ws->nextra, ws->path);
			free(img);
		}
	}
	free(ws->img);
	free(ws->extra);
	free(ws->slots);
	free(ws);
	t->ws = NULL;
}
