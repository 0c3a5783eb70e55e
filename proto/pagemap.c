/* Build and query the pagemap index of a task. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pagemap.h"
#include "pagemap.pb-c.h"

/* Directories already on the parent chain, to refuse loops. */
struct pm_chain {
	dev_t dev[PAGEMAP_MAX_DEPTH + 1];
	ino_t ino[PAGEMAP_MAX_DEPTH + 1];
	unsigned depth;
	char prefix[PAGEMAP_MAX_DEPTH * 7 + 1];	/* "parent/parent/" for messages */
	size_t max_entries;	/* over the whole chain; 0: no limit */
	size_t nr_entries;	/* read so far, over the whole chain */
};

static int pagemap_load_chain(struct pagemap **out, int dirfd, uint32_t pid,
			      struct pages_cache *c, struct pm_chain *chain,
			      struct img_err *err);

/* Apply CRIU's compat rules to one record and turn it into an index entry. */
static int entry_from_record(const PagemapEntry *pe, const char *name, unsigned rec,
			     struct pm_entry *e, struct img_err *err)
{
	uint64_t nr = pe->has_nr_pages ? pe->nr_pages : pe->compat_nr_pages;
	uint32_t flags;

	if (pe->has_in_parent && pe->in_parent)
		flags = (pe->has_flags ? pe->flags : 0) | PE_PARENT;
	else if (!pe->has_flags)
		flags = PE_PRESENT;
	else
		flags = pe->flags;

	if (flags & ~(PE_PARENT | PE_LAZY | PE_PRESENT | PE_POISON))
		return img_errf(err, EINVAL, name, rec, "unknown flags 0x%x", flags);
	if ((flags & PE_POISON) && !(flags & PE_PRESENT))
		return img_errf(err, EINVAL, name, rec,
				"flags 0x%x: POISON without PRESENT (no stand-in page in the pages file)",
				flags);
	if ((flags & PE_PARENT) && (flags & PE_PRESENT))
		return img_errf(err, EINVAL, name, rec, "flags 0x%x: both PARENT and PRESENT", flags);
	if (!(flags & (PE_PARENT | PE_PRESENT | PE_LAZY)))
		return img_errf(err, EINVAL, name, rec, "flags 0 say nothing about the data");
	if (pe->vaddr % PAGE_SIZE_4K)
		return img_errf(err, EINVAL, name, rec, "vaddr 0x%" PRIx64 " not page aligned",
				pe->vaddr);
	if (nr == 0)
		return img_errf(err, EINVAL, name, rec, "entry at 0x%" PRIx64 " has no pages",
				pe->vaddr);
	if (nr > (UINT64_MAX - pe->vaddr) / PAGE_SIZE_4K ||
	    pe->vaddr + nr * PAGE_SIZE_4K > (1ull << 57))
		return img_errf(err, EINVAL, name, rec,
				"entry at 0x%" PRIx64 " with %" PRIu64 " pages runs past the address space",
				pe->vaddr, nr);
	e->start = pe->vaddr;
	e->end = pe->vaddr + nr * PAGE_SIZE_4K;
	e->flags = flags;
	return 0;
}

/* Read the head and entries of pagemap-PID.img into PM. */
static int read_entries(struct pagemap *pm, int dirfd, const char *file, struct pm_chain *chain,
			struct img_err *err)
{
	struct img_reader r;
	ProtobufCMessage *m;
	size_t cap = 0;
	uint64_t off = 0;
	int ret;

	ret = img_open_as(&r, dirfd, file, pm->name, IMG_PAGEMAP_MAGIC, err);
	if (ret < 0)
		return ret;
	ret = img_next(&r, &pagemap_head__descriptor, &m, err);
	if (ret == 0)
		ret = img_errf(err, EINVAL, pm->name, 1, "missing pagemap_head");
	if (ret < 0)
		goto out;
	pm->pages_id = ((PagemapHead *)m)->pages_id;
	protobuf_c_message_free_unpacked(m, NULL);

	while ((ret = img_next(&r, &pagemap_entry__descriptor, &m, err)) > 0) {
		struct pm_entry e = { 0 };

		ret = entry_from_record((PagemapEntry *)m, pm->name, r.rec, &e, err);
		protobuf_c_message_free_unpacked(m, NULL);
		if (ret < 0)
			goto out;
		if (pm->n && e.start < pm->e[pm->n - 1].end) {
			const struct pm_entry *p = &pm->e[pm->n - 1];

			ret = img_errf(err, EINVAL, pm->name, r.rec,
				       "entry 0x%" PRIx64 "-0x%" PRIx64 " %s the previous one 0x%" PRIx64
				       "-0x%" PRIx64, e.start, e.end,
				       e.start < p->start ? "is out of order after" : "overlaps",
				       p->start, p->end);
			goto out;
		}
		/* Refused as it is read: the array grows by doubling, never past the cap. */
		if (chain->max_entries && chain->nr_entries >= chain->max_entries) {
			ret = img_errf(err, E2BIG, pm->name, r.rec,
				       "more than %zu pagemap entries (the limit on what one hand-over may make the daemon allocate: --max-image-entries)",
				       chain->max_entries);
			goto out;
		}
		if (pm->n == cap) {
			struct pm_entry *ne;

			cap = cap ? cap * 2 : 64;
			if (chain->max_entries && cap > chain->max_entries - chain->nr_entries + pm->n)
				cap = chain->max_entries - chain->nr_entries + pm->n;
			ne = realloc(pm->e, cap * sizeof(*ne));
			if (!ne) {
				ret = img_errf(err, ENOMEM, pm->name, r.rec, "out of memory");
				goto out;
			}
			pm->e = ne;
		}
		if (e.flags & PE_PRESENT) {
			e.off = off;
			off += e.end - e.start;
			pm->present_pages += (e.end - e.start) / PAGE_SIZE_4K;
		}
		if (e.flags & PE_LAZY)
			pm->lazy_pages += (e.end - e.start) / PAGE_SIZE_4K;
		if (e.flags & PE_PARENT)
			pm->parent_pages += (e.end - e.start) / PAGE_SIZE_4K;
		if (e.flags & PE_POISON)
			pm->poison_pages += (e.end - e.start) / PAGE_SIZE_4K;
		pm->e[pm->n++] = e;
		chain->nr_entries++;
	}
out:
	img_close(&r);
	return ret;
}

/* Map the pages file and check that it holds exactly the PRESENT pages. */
static int open_pages(struct pagemap *pm, int dirfd, struct pages_cache *c, const char *prefix,
		      struct img_err *err)
{
	char file[32], label[sizeof(((struct pagemap *)0)->name)];
	uint64_t want = pm->present_pages * PAGE_SIZE_4K;
	struct stat st;
	int ret;

	snprintf(file, sizeof(file), "pages-%u.img", pm->pages_id);
	snprintf(label, sizeof(label), "%s%s", prefix, file);
	if (!want) {
		/* Nothing present: a pages file, if any, must be empty too. */
		if (fstatat(dirfd, file, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_size != 0)
			return img_errf(err, EINVAL, label, 0,
					"%lld bytes, but %s has no present pages",
					(long long)st.st_size, pm->name);
		return 0;
	}
	ret = pages_get(c, dirfd, file, label, &pm->pages, err);
	if (ret == -ENOENT)
		return img_errf(err, EINVAL, label, 0, "needed by %s: missing", pm->name);
	if (ret < 0)
		return ret;	/* ERR names the file and what is wrong with it */
	if (pm->pages->size != want)
		return img_errf(err, EINVAL, label, 0,
				"%" PRIu64 " bytes, but %s has %" PRIu64 " present pages (%" PRIu64 " bytes)",
				pm->pages->size, pm->name, pm->present_pages, want);
	return 0;
}

/* Check that every PE_PARENT page of PM is backed in its parent's pagemap. */
static int check_parent_cover(const struct pagemap *pm, struct img_err *err)
{
	for (size_t i = 0; i < pm->n; i++) {
		const struct pm_entry *e = &pm->e[i];
		uint64_t a = e->start;

		if (!(e->flags & PE_PARENT))
			continue;
		while (a < e->end) {
			const struct pm_entry *pe = pagemap_find(pm->parent, a);

			if (!pe || !(pe->flags & (PE_PRESENT | PE_PARENT)))
				return img_errf(err, EINVAL, pm->name, (unsigned)i + 2,
						"page 0x%" PRIx64 " is in the parent, but %s has %s",
						a, pm->parent->name,
						pe ? "no data for it" : "no such page");
			a = pe->end < e->end ? pe->end : e->end;
		}
	}
	return 0;
}

/* Open the `parent` link of DIRFD, refusing loops and over-long chains. */
static int open_parent(const struct pagemap *pm, int dirfd, struct pm_chain *chain,
		       struct img_err *err)
{
	struct stat st;
	int pfd;

	if (chain->depth >= PAGEMAP_MAX_DEPTH)
		return img_errf(err, ELOOP, pm->name, 0, "parent chain deeper than %d",
				PAGEMAP_MAX_DEPTH);
	pfd = openat(dirfd, "parent", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pfd < 0)
		/* Not ENOENT: that would read as "this task has no pagemap". */
		return img_errf(err, errno == ENOENT ? EINVAL : errno, pm->name, 0,
				"has in-parent pages, but %sparent: %s", chain->prefix, strerror(errno));
	if (fstat(pfd, &st) < 0) {
		int e = errno;

		close(pfd);
		return img_errf(err, e, pm->name, 0, "stat %sparent: %s", chain->prefix, strerror(e));
	}
	for (unsigned i = 0; i <= chain->depth; i++) {
		if (chain->dev[i] == st.st_dev && chain->ino[i] == st.st_ino) {
			close(pfd);
			return img_errf(err, ELOOP, pm->name, 0,
					"%sparent link loops back to a directory already in the chain",
					chain->prefix);
		}
	}
	chain->depth++;
	chain->dev[chain->depth] = st.st_dev;
	chain->ino[chain->depth] = st.st_ino;
	strcat(chain->prefix, "parent/");
	return pfd;
}

static int pagemap_load_chain(struct pagemap **out, int dirfd, uint32_t pid,
			      struct pages_cache *c, struct pm_chain *chain,
			      struct img_err *err)
{
	char file[32], prefix[sizeof(chain->prefix)];
	struct pagemap *pm;
	int ret;

	*out = NULL;
	pm = calloc(1, sizeof(*pm));
	if (!pm)
		return img_errf(err, ENOMEM, "pagemap", 0, "out of memory");
	pm->pid = pid;
	snprintf(file, sizeof(file), "pagemap-%u.img", pid);
	snprintf(pm->name, sizeof(pm->name), "%s%s", chain->prefix, file);
	snprintf(prefix, sizeof(prefix), "%s", chain->prefix);

	ret = read_entries(pm, dirfd, file, chain, err);
	if (ret == 0)
		ret = open_pages(pm, dirfd, c, prefix, err);
	if (ret == 0 && pm->parent_pages) {
		int pfd = open_parent(pm, dirfd, chain, err);

		if (pfd < 0) {
			ret = pfd;
		} else {
			ret = pagemap_load_chain(&pm->parent, pfd, pid, c, chain, err);
			close(pfd);
			if (ret == 0)
				ret = check_parent_cover(pm, err);
		}
	}
	if (ret < 0) {
		pagemap_free(pm, c);
		return ret;
	}
	*out = pm;
	return 0;
}

int pagemap_load(struct pagemap **out, int dirfd, uint32_t pid, struct pages_cache *c,
		 struct img_err *err)
{
	return pagemap_load_max(out, dirfd, pid, c, 0, err);
}

int pagemap_load_max(struct pagemap **out, int dirfd, uint32_t pid, struct pages_cache *c,
		     size_t max_entries, struct img_err *err)
{
	struct pm_chain chain = { .depth = 0, .max_entries = max_entries };
	struct stat st;

	if (fstat(dirfd, &st) < 0)
		return img_errf(err, errno, "image dir", 0, "stat: %s", strerror(errno));
	chain.dev[0] = st.st_dev;
	chain.ino[0] = st.st_ino;
	return pagemap_load_chain(out, dirfd, pid, c, &chain, err);
}

void pagemap_free(struct pagemap *pm, struct pages_cache *c)
{
	while (pm) {
		struct pagemap *parent = pm->parent;

		pages_put(c, pm->pages);
		free(pm->e);
		free(pm->xpf);
		free(pm);
		pm = parent;
	}
}

int pagemap_load_shmem(struct pagemap **out, int dirfd, uint32_t shmid, uint64_t size,
		       struct pages_cache *c, size_t max_entries, struct img_err *err)
{
	struct pm_chain chain = { .max_entries = max_entries };
	struct pagemap *pm;
	char file[48];
	int ret;

	*out = NULL;
	pm = calloc(1, sizeof(*pm));
	if (!pm)
		return img_errf(err, ENOMEM, "pagemap", 0, "out of memory");
	pm->pid = shmid;
	snprintf(file, sizeof(file), "pagemap-shmem-%u.img", shmid);
	snprintf(pm->name, sizeof(pm->name), "%s", file);
	ret = read_entries(pm, dirfd, file, &chain, err);
	for (size_t i = 0; ret == 0 && i < pm->n; i++) {
		const struct pm_entry *e = &pm->e[i];

		/* CRIU writes its contents whole: no parent, nothing lazy, no stand-ins. */
		if (e->flags != PE_PRESENT)
			ret = img_errf(err, ENOTSUP, pm->name, (unsigned)i + 2,
				       "offset 0x%" PRIx64 ": flags 0x%x (only PE_PRESENT is "
				       "supported in shared memory contents)", e->start, e->flags);
		else if (e->end > ((size + PAGE_SIZE_4K - 1) & ~(PAGE_SIZE_4K - 1)))
			ret = img_errf(err, EINVAL, pm->name, (unsigned)i + 2,
				       "offsets 0x%" PRIx64 "-0x%" PRIx64 " run past the object's "
				       "%" PRIu64 " bytes", e->start, e->end, size);
	}
	if (ret == 0)
		ret = open_pages(pm, dirfd, c, "", err);
	if (ret < 0) {
		pagemap_free(pm, c);
		return ret;
	}
	*out = pm;
	return 0;
}

const struct pm_entry *pagemap_find(const struct pagemap *pm, uint64_t addr)
{
	size_t lo = 0, hi = pm->n;

	/* Find the last entry that starts at or below ADDR. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (pm->e[mid].start <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0 || addr >= pm->e[lo - 1].end)
		return NULL;
	return &pm->e[lo - 1];
}

/* The first entry that ends above ADDR, for the extent of a hole. */
static const struct pm_entry *next_entry(const struct pagemap *pm, uint64_t addr)
{
	size_t lo = 0, hi = pm->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (pm->e[mid].end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < pm->n ? &pm->e[lo] : NULL;
}

void pagemap_resolve(const struct pagemap *pm, uint64_t addr, uint64_t limit, struct pm_run *run)
{
	const struct pm_entry *e = pagemap_find(pm, addr);

	memset(run, 0, sizeof(*run));
	if (!e) {
		const struct pm_entry *n = next_entry(pm, addr);

		run->src = PM_HOLE;
		run->len = n && n->start - addr < limit ? n->start - addr : limit;
		return;
	}
	run->flags = e->flags;
	run->len = e->end - addr < limit ? e->end - addr : limit;
	if (e->flags & PE_POISON) {
		run->src = PM_POISON;
	} else if (e->flags & PE_PRESENT) {
		run->src = PM_DATA;
		run->pf = e->xpf ? pm->xpf[e->xpf - 1] : pm->pages;
		run->off = e->off + (addr - e->start);
	} else if (e->flags & PE_PARENT) {
		struct pm_run up;

		/* Validated at load: the parent has data for all of it. */
		pagemap_resolve(pm->parent, addr, run->len, &up);
		run->src = up.src;
		run->pf = up.pf;
		run->off = up.off;
		run->len = up.len;
	} else {
		run->src = PM_NODATA;
	}
}

int pagemap_resolve_block(const struct pagemap *pm, uint64_t addr, uint64_t size,
			  struct pm_run *run)
{
	uint64_t a;

	pagemap_resolve(pm, addr, size, run);
	for (a = addr + run->len; a < addr + size;) {
		struct pm_run next;

		pagemap_resolve(pm, a, addr + size - a, &next);
		if (next.src != run->src || next.flags != run->flags ||
		    (run->src == PM_DATA && (next.pf != run->pf || next.off != run->off + run->len)))
			return -EINVAL;
		run->len += next.len;
		a += next.len;
	}
	return 0;
}
