/*
 * One round of pre-copy: see precopy.h.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "pagemap.h"
#include "precopy.h"
#include "ptrace.h"
#include "why.h"

#define PC_PAGE		4096ull
#define PC_TRACK_FILE	"uffd-track-%d"
#define PC_NEXT_FILE	"uffd-track-%d.next"
#define PC_SPLIT_MIN	(256ull << 20)	/* tracked bytes from which two threads scan */
#define PC_SPLIT_ALIGN	(2ull << 20)

/* May two threads of ours run at once? */
static bool two_cpus(void)
{
	cpu_set_t set;

	return sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) >= 2;
}

static int cfail(struct precopy *pc, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int cfail(struct precopy *pc, int code, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = why_vfirst(pc->why, sizeof(pc->why), code, NULL, fmt, ap);
	va_end(ap);
	return ret;
}

/* Append [START, END) of AREA to *R, extending the last range when they touch. */
static int range_push(struct dump_range **r, size_t *n, size_t *cap, uint64_t start,
		      uint64_t end, uint32_t area)
{
	struct dump_range *last = *n ? &(*r)[*n - 1] : NULL;

	if (start >= end)
		return 0;
	if (last && last->area == area && last->end == start) {
		last->end = end;
		return 0;
	}
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 256;
		struct dump_range *nr = realloc(*r, nc * sizeof(*nr));

		if (!nr)
			return -ENOMEM;
		*r = nr;
		*cap = nc;
	}
	(*r)[(*n)++] = (struct dump_range){ start, end, area };
	return 0;
}

int precopy_load_prev(struct precopy *pc)
{
	char name[64], buf[256];
	unsigned long long ino = 0;
	unsigned round = 0;
	struct img_err err;
	ssize_t n;
	int dfd, fd, ret;

	pages_cache_init(&pc->cache);
	pc->round = 1;
	if (!pc->prev)
		return 0;
	dfd = open(pc->prev, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return cfail(pc, errno, "%s: %s", pc->prev, strerror(errno));
	if (!realpath(pc->prev, pc->prev_abs)) {
		ret = cfail(pc, errno, "%s: realpath: %s", pc->prev, strerror(errno));
		goto out;
	}
	snprintf(name, sizeof(name), PC_NEXT_FILE, (int)pc->pid);
	if (faccessat(dfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		ret = cfail(pc, EEXIST, "%s was continued already (%s/%s names the round "
			    "after it), and that round reset what was written: continue from "
			    "the last round, or start again without --prev-images", pc->prev,
			    pc->prev, name);
		goto out;
	}
	snprintf(name, sizeof(name), PC_TRACK_FILE, (int)pc->pid);
	fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		ret = cfail(pc, errno, "%s/%s: %s (not a pre-dump of pid %d by uffd-inject)",
			    pc->prev, name, strerror(errno), (int)pc->pid);
		goto out;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	if (n <= 0 || sscanf(buf, "tracker_ino %llu round %u", &ino, &round) != 2 || !ino ||
	    !round) {
		ret = cfail(pc, EINVAL, "%s/%s: not a tracker record", pc->prev, name);
		goto out;
	}
	pc->prev_ino = ino;
	pc->round = round + 1;
	if (pc->round > PRECOPY_MAX_ROUNDS) {
		ret = cfail(pc, E2BIG, "%s is round %u: a chain of more than %d rounds could "
			    "not be read back (parent links are followed %d deep)", pc->prev,
			    round, PRECOPY_MAX_ROUNDS, PAGEMAP_MAX_DEPTH);
		goto out;
	}
	ret = pagemap_load(&pc->chain, dfd, (uint32_t)pc->pid, &pc->cache, &err);
	if (ret < 0)
		cfail(pc, ret, "%s/%s", pc->prev, err.msg);
out:
	close(dfd);
	return ret < 0 ? ret : 0;
}

/* The first entry of the chain's pagemap that ends after ADDR. */
static size_t chain_first(const struct pagemap *pm, uint64_t addr)
{
	size_t lo = 0, hi = pm->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (pm->e[mid].end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool chain_has_data(const struct pm_entry *e)
{
	return e->flags & (PE_PRESENT | PE_PARENT);
}

/* Pages of [S, E) the chain holds data for. */
static uint64_t chain_pages(const struct pagemap *pm, uint64_t s, uint64_t e)
{
	uint64_t n = 0;

	if (!pm)
		return 0;
	for (size_t k = chain_first(pm, s); k < pm->n && pm->e[k].start < e; k++) {
		uint64_t a = pm->e[k].start > s ? pm->e[k].start : s;
		uint64_t b = pm->e[k].end < e ? pm->e[k].end : e;

		if (chain_has_data(&pm->e[k]) && a < b)
			n += (b - a) / PC_PAGE;
	}
	return n;
}

/* A present or swapped page range that was not written: the chain's where it has it, else copied. */
static int sort_kept(struct precopy *pc, uint64_t s, uint64_t e, uint32_t area)
{
	uint64_t at = s;

	if (pc->chain)
		for (size_t k = chain_first(pc->chain, s);
		     k < pc->chain->n && pc->chain->e[k].start < e; k++) {
			const struct pm_entry *c = &pc->chain->e[k];
			uint64_t a = c->start > s ? c->start : s;
			uint64_t b = c->end < e ? c->end : e;

			if (!chain_has_data(c) || a >= b)
				continue;
			if (range_push(&pc->copy, &pc->ncopy, &pc->capcopy, at, a, area) < 0 ||
			    range_push(&pc->parent, &pc->nparent, &pc->capparent, a, b, area) < 0)
				return -ENOMEM;
			pc->fresh_pages += (a - at) / PC_PAGE;
			pc->parent_pages += (b - a) / PC_PAGE;
			at = b;
		}
	if (range_push(&pc->copy, &pc->ncopy, &pc->capcopy, at, e, area) < 0)
		return -ENOMEM;
	pc->fresh_pages += (e - at) / PC_PAGE;
	return 0;
}

/* Sort the pages of area I whose written set is in PC->reg. */
static int sort_area(struct precopy *pc, const VmaEntry *v, uint32_t i)
{
	uint64_t seen_chain = 0;
	int ret;

	for (size_t k = 0; k < pc->nreg; k++) {
		const struct track_region *r = &pc->reg[k];

		seen_chain += chain_pages(pc->chain, r->start, r->end);
		if (r->cat & PAGE_IS_WRITTEN)
			pc->written_pages += (r->end - r->start) / PC_PAGE;
		if (r->cat & PAGE_IS_PFNZERO)
			continue;	/* the shared zero page: a hole */
		if (r->cat & PAGE_IS_WRITTEN)
			ret = range_push(&pc->copy, &pc->ncopy, &pc->capcopy, r->start, r->end, i);
		else
			ret = sort_kept(pc, r->start, r->end, i);
		if (ret < 0)
			return cfail(pc, ENOMEM, "out of memory");
	}
	/* What the chain held here and is now none: dropped, a hole from now on. */
	pc->dropped_pages += chain_pages(pc->chain, v->start, v->end) - seen_chain;
	return 0;
}

/*
 * A piece of the written set to read and reset: one area's [start, end).
 * Large sets are read by two threads, a piece each in turn (see
 * scan_split()).
 */
struct scan_piece {
	uint32_t area;
	uint64_t start, end;
	struct track_region *reg;
	size_t nreg, capreg;
	bool guard;		/* a guard marker in it (a last round only) */
	int ret;
	char why[256];
};

struct scan_half {
	int pmfd;
	bool reset;
	struct scan_piece *p;
	size_t n;
};

static void *scan_half(void *arg)
{
	struct scan_half *h = arg;

	for (size_t k = 0; k < h->n; k++) {
		struct scan_piece *p = &h->p[k];

		p->ret = track_scan(h->pmfd, p->start, p->end, h->reset, &p->reg, &p->nreg,
				    &p->capreg, &p->guard, p->why, sizeof(p->why));
	}
	return NULL;
}

/*
 * Read and reset the written set of the areas in TODO (N of them) with two
 * threads, each taking about half of their bytes, and sort it as
 * sort_area() does, area by area. PAGEMAP_SCAN walks every page table entry
 * of the range (about 3 ms a GiB here) under the mmap lock held for reading,
 * so two walks of disjoint ranges go on side by side: at 4 GiB that takes
 * the frozen time from about 20 ms to about 13. An area another kind of
 * registration holds (-EPERM) is left untracked, as in the one-thread path.
 */
static int scan_split(struct precopy *pc, int pmfd, const VmaEntry *vmas, const uint32_t *todo,
		      size_t n)
{
	struct scan_piece *p = calloc(2 * n, sizeof(*p));
	struct scan_half h[2];
	uint64_t total = 0, half, acc = 0;
	size_t np = 0, cut = 0;
	pthread_t th;
	bool threaded;
	int ret = 0;

	if (!p)
		return cfail(pc, ENOMEM, "out of memory");
	for (size_t k = 0; k < n; k++)
		total += vmas[todo[k]].end - vmas[todo[k]].start;
	half = total / 2;
	for (size_t k = 0; k < n; k++) {
		const VmaEntry *v = &vmas[todo[k]];
		uint64_t len = v->end - v->start;

		if (acc < half && acc + len > half) {
			/* The cut falls in this area: two pieces, split on 2 MiB. */
			uint64_t mid = (v->start + (half - acc) + PC_SPLIT_ALIGN - 1) &
				       ~(PC_SPLIT_ALIGN - 1);

			if (mid > v->start && mid < v->end) {
				p[np++] = (struct scan_piece){ .area = todo[k], .start = v->start,
							       .end = mid };
				cut = np;
				p[np++] = (struct scan_piece){ .area = todo[k], .start = mid,
							       .end = v->end };
				acc += len;
				continue;
			}
		}
		p[np++] = (struct scan_piece){ .area = todo[k], .start = v->start, .end = v->end };
		acc += len;
		if (!cut && acc >= half)
			cut = np;
	}
	h[0] = (struct scan_half){ pmfd, !pc->last, p, cut };
	h[1] = (struct scan_half){ pmfd, !pc->last, p + cut, np - cut };
	threaded = pthread_create(&th, NULL, scan_half, &h[1]) == 0;
	scan_half(&h[0]);
	if (threaded)
		pthread_join(th, NULL);
	else
		scan_half(&h[1]);
	for (size_t k = 0; k < np && ret == 0;) {
		uint32_t i = p[k].area;
		bool eperm = false;

		/* The pieces of area I, glued back together in order. */
		pc->nreg = 0;
		for (; k < np && p[k].area == i; k++) {
			if (p[k].ret == -EPERM) {
				eperm = true;
				continue;
			}
			if (p[k].ret < 0) {
				ret = cfail(pc, p[k].ret, "%s", p[k].why);
				break;
			}
			pc->guarded[i] |= p[k].guard;
			for (size_t j = 0; j < p[k].nreg; j++) {
				struct track_region *last = pc->nreg ? &pc->reg[pc->nreg - 1] : NULL;
				const struct track_region *r = &p[k].reg[j];

				if (last && last->end == r->start && last->cat == r->cat) {
					last->end = r->end;
					continue;
				}
				if (pc->nreg == pc->capreg) {
					size_t nc = pc->capreg ? pc->capreg * 2 : 1024;
					struct track_region *nr = realloc(pc->reg, nc * sizeof(*nr));

					if (!nr) {
						ret = cfail(pc, ENOMEM, "out of memory");
						break;
					}
					pc->reg = nr;
					pc->capreg = nc;
				}
				pc->reg[pc->nreg++] = *r;
			}
		}
		if (ret < 0)
			break;
		if (eperm) {	/* another kind of registration: copied whole */
			pc->untracked++;
			continue;
		}
		ret = sort_area(pc, &vmas[i], i);
		if (ret == 0)
			pc->tracked[i] = true;
	}
	for (size_t k = 0; k < np; k++)
		free(p[k].reg);
	free(p);
	return ret;
}

/* Read and reset the written set of area I and sort its pages. -EPERM: not tracked. */
static int scan_area(struct precopy *pc, int pmfd, const VmaEntry *v, uint32_t i)
{
	char why[512];
	int ret;

	pc->nreg = 0;
	ret = track_scan(pmfd, v->start, v->end, !pc->last, &pc->reg, &pc->nreg, &pc->capreg,
			 &pc->guarded[i], why, sizeof(why));
	if (ret == -EPERM)
		return ret;
	if (ret < 0)
		return cfail(pc, ret, "%s", why);
	return sort_area(pc, v, i);
}

/* Unregister every area of M another tracker write-protects, through T. */
static void unregister_all(const struct track *t, const struct procfs_maps *m)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->v[i].vmflags & PFV_UW)
			track_unregister(t, m->v[i].start, m->v[i].end);
}

void precopy_disarm_all(struct pt *pt, const struct procfs_maps *m)
{
	struct track_found f;

	if (track_find(pt->pid, &f, NULL, 0) < 0)
		return;
	for (size_t k = 0; k < f.n; k++) {
		struct track t = { -1, -1, 0 };

		if (track_attach(pt, f.fd[k], &t, NULL, 0) == 0)
			unregister_all(&t, m);
		t.tfd = f.fd[k];
		track_close(pt, &t);
	}
}

void precopy_unregister(struct precopy *pc, const struct procfs_maps *m)
{
	if (pc->t.ufd < 0)
		return;
	unregister_all(&pc->t, m);
	for (size_t i = 0; i < m->n; i++)	/* and what this round registered */
		if (pc->tracked && pc->tracked[i] && !(m->v[i].vmflags & PFV_UW))
			track_unregister(&pc->t, m->v[i].start, m->v[i].end);
	close(pc->t.ufd);
	pc->t.ufd = -1;
}

void precopy_disarm(struct precopy *pc, struct pt *pt, const struct procfs_maps *m)
{
	if (pc->t.ufd < 0)
		return;
	track_close_target(pt, &pc->t);
	precopy_unregister(pc, m);
}

/*
 * Refuse a target whose memory the kernel writes without a fault: pinned
 * pages (io_uring fixed buffers, RDMA: VmPin), io_uring, Linux AIO rings.
 * Their writes would never show in the written set, and a page left to the
 * parent would then be stale.
 */
static int check_unfaulted_writes(struct precopy *pc, const struct procfs_maps *m)
{
	char path[64], link[64];
	struct dirent *de;
	long long kb = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pc->pid);
	if (procfs_field_num(path, "VmPin", &kb) == 0 && kb > 0)
		return cfail(pc, ENOTSUP, "it has pinned memory (VmPin %lld kB: io_uring buffers, "
			     "RDMA, a device): the kernel writes there without a fault, so its "
			     "writes cannot be tracked", kb);
	for (size_t i = 0; i < m->n; i++)
		if (m->v[i].name && !strncmp(m->v[i].name, "/[aio]", 6))
			return cfail(pc, ENOTSUP, "it has a Linux AIO context (0x%" PRIx64 "): "
				     "asynchronous I/O writes its buffers without a fault, so its "
				     "writes cannot be tracked", m->v[i].start);
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pc->pid);
	d = opendir(path);
	if (!d)
		return cfail(pc, errno, "%s: %s", path, strerror(errno));
	while ((de = readdir(d))) {
		char lp[320];
		ssize_t n;

		snprintf(lp, sizeof(lp), "%s/%s", path, de->d_name);
		n = readlink(lp, link, sizeof(link) - 1);
		link[n > 0 ? n : 0] = '\0';
		if (!strcmp(link, "anon_inode:[io_uring]")) {
			int ret = cfail(pc, ENOTSUP, "it uses io_uring (fd %s): the kernel writes "
					"its buffers without a fault, so its writes cannot be "
					"tracked", de->d_name);

			closedir(d);	/* after: DE lives in D's buffer */
			return ret;
		}
	}
	closedir(d);
	return 0;
}

/* Take round N's tracker, or make a new one; mark round N as continued. */
static int take_tracker(struct precopy *pc, struct pt *pt, const struct procfs_maps *m)
{
	struct track_found f;
	char why[512], name[64];
	int ret, fd;

	ret = track_find(pc->pid, &f, why, sizeof(why));
	if (ret < 0)
		return cfail(pc, ret, "%s", why);
	if (!pc->prev) {
		precopy_disarm_all(pt, m);
		ret = track_arm(pt, &pc->t, why, sizeof(why));
		if (ret < 0)
			return cfail(pc, ret, "cannot track its writes: %s", why);
		dump_test_hook("armed", -1);
		return 0;
	}
	for (size_t k = 0; k < f.n; k++)
		if (f.ino[k] == pc->prev_ino) {
			ret = track_attach(pt, f.fd[k], &pc->t, why, sizeof(why));
			if (ret < 0)
				return cfail(pc, ret, "%s", why);
			break;
		}
	if (pc->t.ufd < 0)
		return cfail(pc, ENOENT, "it no longer has the write tracker of %s (it exec'd, "
			     "closed it, or another chain was started): start again without "
			     "--prev-images", pc->prev);
	/* From the reset on, round N cannot be continued again. */
	snprintf(name, sizeof(name), PC_NEXT_FILE, (int)pc->pid);
	{
		int dfd = open(pc->prev, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		fd = dfd < 0 ? -1 : openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC |
					   O_NOFOLLOW, 0600);
		if (fd < 0) {
			int e = errno;

			if (dfd >= 0)
				close(dfd);
			return cfail(pc, e, "%s/%s: %s%s", pc->prev, name, strerror(e),
				     e == EEXIST ? " (another round continued it meanwhile)" : "");
		}
		dprintf(fd, "%s\n", pc->dir);
		close(fd);
		close(dfd);
	}
	pc->marked = true;
	return 0;
}

int precopy_scan(struct precopy *pc, struct pt *pt, const struct procfs_maps *m,
		 const VmaEntry *vmas, const struct dump_area *areas)
{
	char path[64];
	uint32_t *todo;
	size_t ntodo = 0;
	uint64_t bytes = 0;
	int pmfd, ret;

	ret = check_unfaulted_writes(pc, m);
	if (ret == 0)
		ret = take_tracker(pc, pt, m);
	if (ret < 0)
		return ret;
	pc->tracked = calloc(m->n ? m->n : 1, sizeof(*pc->tracked));
	pc->guarded = calloc(m->n ? m->n : 1, sizeof(*pc->guarded));
	if (!pc->tracked || !pc->guarded)
		return cfail(pc, ENOMEM, "out of memory");
	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pc->pid);
	pmfd = open(path, O_RDONLY | O_CLOEXEC);
	if (pmfd < 0)
		return cfail(pc, errno, "%s: %s", path, strerror(errno));
	todo = calloc(m->n ? m->n : 1, sizeof(*todo));
	if (!todo) {
		close(pmfd);
		return cfail(pc, ENOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < m->n && ret == 0; i++) {
		if (areas[i].kind == DUMP_NONE)
			continue;
		if (areas[i].kind != DUMP_ANON) {
			pc->untracked++;
			continue;
		}
		/*
		 * New since round N (or moved, which drops the registration): register
		 * it. Round 1 took every old tracker down: register everything.
		 */
		if ((!pc->prev || !(m->v[i].vmflags & PFV_UW)) &&
		    (ret = track_register(&pc->t, vmas[i].start, vmas[i].end)) < 0) {
			log_debug("pid %d: 0x%" PRIx64 "-0x%" PRIx64 " not tracked: %s",
				  (int)pc->pid, vmas[i].start, vmas[i].end, strerror(-ret));
			ret = 0;
			pc->untracked++;
			continue;
		}
		todo[ntodo++] = i;
		bytes += vmas[i].end - vmas[i].start;
	}
	/* UFFD_INJECT_TEST_SCAN_SPLIT: two threads whatever the size (tests). */
	if (ret == 0 && ntodo && (getenv("UFFD_INJECT_TEST_SCAN_SPLIT") ||
				  (bytes >= PC_SPLIT_MIN && two_cpus()))) {
		ret = scan_split(pc, pmfd, vmas, todo, ntodo);
		ntodo = 0;
	}
	for (size_t k = 0; k < ntodo && ret == 0; k++) {
		uint32_t i = todo[k];

		ret = scan_area(pc, pmfd, &vmas[i], i);
		if (ret == -EPERM) {	/* another kind of registration: copied whole */
			pc->untracked++;
			ret = 0;
			continue;
		}
		if (ret == 0)
			pc->tracked[i] = true;
	}
	free(todo);
	close(pmfd);
	return ret;
}

int precopy_merge(struct precopy *pc, const struct dump_area *areas,
		  const struct dump_range *eager, size_t neager, struct dump_pe **pe, size_t *npe,
		  struct dump_range **spans, size_t *nspans)
{
	size_t cap = *npe + pc->nparent * 2 + 16, n = 0, i = 0, j = 0, ke = 0;
	struct dump_pe *out = malloc(cap * sizeof(*out));
	struct dump_range *sp;
	size_t nsp = 0, capsp;

	if (!out)
		return -ENOMEM;
	/* Merge by address: data entries as they are, parent ranges split by EAGER. */
	while (i < *npe || j < pc->nparent) {
		const struct dump_range *r;
		uint64_t s;

		if (j == pc->nparent || (i < *npe && (*pe)[i].vaddr < pc->parent[j].start)) {
			out[n++] = (*pe)[i++];
			goto grow;
		}
		r = &pc->parent[j++];
		for (s = r->start; s < r->end;) {
			uint32_t flags = PE_PARENT | (areas[r->area].pe_flags & PE_LAZY);
			uint64_t e = r->end;

			if (flags & PE_LAZY) {
				while (ke < neager && eager[ke].end <= s)
					ke++;
				if (ke < neager && eager[ke].start <= s) {
					flags &= ~PE_LAZY;	/* stays resident */
					e = eager[ke].end < e ? eager[ke].end : e;
				} else if (ke < neager && eager[ke].start < e) {
					e = eager[ke].start;
				}
			}
			if (n && out[n - 1].area == r->area && out[n - 1].flags == flags &&
			    out[n - 1].vaddr + out[n - 1].nr * PC_PAGE == s) {
				out[n - 1].nr += (e - s) / PC_PAGE;
			} else {
				if (n == cap) {
					struct dump_pe *no = realloc(out, (cap *= 2) * sizeof(*no));

					if (!no) {
						free(out);
						return -ENOMEM;
					}
					out = no;
				}
				out[n++] = (struct dump_pe){ s, (e - s) / PC_PAGE, flags, r->area };
			}
			s = e;
		}
grow:
		if (n + 2 >= cap) {
			struct dump_pe *no = realloc(out, (cap *= 2) * sizeof(*no));

			if (!no) {
				free(out);
				return -ENOMEM;
			}
			out = no;
		}
	}
	free(*pe);
	*pe = out;
	*npe = n;

	/* Spans: where the target has pages the dump holds, now the parent's too. */
	capsp = *nspans + pc->nparent + 1;
	sp = malloc(capsp * sizeof(*sp));
	if (!sp)
		return -ENOMEM;
	i = j = 0;
	while (i < *nspans || j < pc->nparent) {
		const struct dump_range *r;
		struct dump_range *last = nsp ? &sp[nsp - 1] : NULL;

		if (j == pc->nparent || (i < *nspans && (*spans)[i].start < pc->parent[j].start))
			r = &(*spans)[i++];
		else
			r = &pc->parent[j++];
		if (last && last->area == r->area && r->start <= last->end) {
			if (r->end > last->end)
				last->end = r->end;
			continue;
		}
		sp[nsp++] = *r;
	}
	free(*spans);
	*spans = sp;
	*nspans = nsp;
	return 0;
}

int precopy_write_files(struct precopy *pc, int dirfd)
{
	char name[64];
	int fd;

	if (pc->prev) {
		if (symlinkat(pc->prev_abs, dirfd, "parent") < 0)
			return cfail(pc, errno, "%s/parent: symlink to %s: %s", pc->dir,
				     pc->prev_abs, strerror(errno));
		pc->made_link = true;
	}
	snprintf(name, sizeof(name), PC_TRACK_FILE, (int)pc->pid);
	fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return cfail(pc, errno, "%s/%s: %s", pc->dir, name, strerror(errno));
	pc->made_record = true;
	if (dprintf(fd, "tracker_ino %llu\nround %u\n", (unsigned long long)pc->t.ino,
		    pc->round) < 0 || fsync(fd) < 0) {
		int e = errno;

		close(fd);
		return cfail(pc, e, "%s/%s: write: %s", pc->dir, name, strerror(e));
	}
	close(fd);
	return 0;
}

void precopy_abort(struct precopy *pc, int dirfd, bool reset)
{
	char name[64];

	if (dirfd >= 0 && pc->made_link)
		unlinkat(dirfd, "parent", 0);
	if (dirfd >= 0 && pc->made_record) {
		snprintf(name, sizeof(name), PC_TRACK_FILE, (int)pc->pid);
		unlinkat(dirfd, name, 0);
	}
	pc->made_link = pc->made_record = false;
	if (pc->marked && !reset) {
		int dfd = open(pc->prev, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		snprintf(name, sizeof(name), PC_NEXT_FILE, (int)pc->pid);
		if (dfd >= 0) {
			unlinkat(dfd, name, 0);
			close(dfd);
		}
		pc->marked = false;
	}
}

void precopy_free(struct precopy *pc)
{
	if (pc->t.ufd >= 0)
		close(pc->t.ufd);
	pc->t.ufd = -1;
	if (pc->chain)
		pagemap_free(pc->chain, &pc->cache);
	pc->chain = NULL;
	free(pc->tracked);
	free(pc->guarded);
	free(pc->copy);
	free(pc->parent);
	free(pc->reg);
	pc->tracked = NULL;
	pc->guarded = NULL;
	pc->copy = pc->parent = NULL;
	pc->reg = NULL;
}
