/* A new daemon takes back the processes of the one before (restart.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "fdpass.h"
#include "journal.h"
#include "keeper.h"
#include "listen.h"
#include "log.h"
#include "procfs.h"
#include "released.h"
#include "restart.h"
#include "serve.h"
#include "target.h"
#include "uffd.h"

#define ADOPT_TIMEOUT_MS	30000
#define SYNC_NS			(200 * 1000000ull)
/* Every waiter on a uffd, whatever its address: from mmap_min_addr's default to the top. */
#define WAKE_START		0x10000ull
#define WAKE_END		0x7ffffffff000ull
#define SCAN_TRIES		3

/* PAGEMAP_SCAN (Linux 6.7, include/uapi/linux/fs.h), for headers older than that. */
#ifndef PAGEMAP_SCAN
#define PAGE_IS_PRESENT		(1 << 3)
#define PAGE_IS_SWAPPED		(1 << 4)
struct page_region {
	uint64_t start, end, categories;
};
struct pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN		_IOWR('f', 16, struct pm_scan_arg)
#endif

struct fdmap {
	int old, new;
	bool claimed;
};

/* A uffd no record names: read for faults, whose process is killed (restart.h). */
struct stray {
	struct stray *next;
	struct daemon *d;
	struct ev ev;
	int uffd;
};

struct adopt {
	struct daemon *d;
	struct fdmap *m;
	size_t nm, capm;
	int jfd;
	struct journal old;
	struct jentry *e;
	size_t ne;
	size_t *ev;		/* indices of model records, by (id, index) */
	size_t nev;
	struct { uint64_t root; struct timage *img; } *imgs;
	size_t nimgs;
	uint64_t reading;	/* the process whose uffd the daemon before was reading */
};

static int cmp_fdmap(const void *a, const void *b)
{
	const struct fdmap *x = a, *y = b;

	return x->old - y->old;
}

/* The fd in our table for OLD in the table before (marked taken), or -1. */
static int map_fd(struct adopt *a, int old)
{
	struct fdmap key = { .old = old }, *f;

	if (old < 0 || !a->nm)
		return -1;
	f = bsearch(&key, a->m, a->nm, sizeof(*a->m), cmp_fdmap);
	if (!f)
		return -1;
	f->claimed = true;
	return f->new;
}

/* The fd in our table for OLD, without taking it. */
static int peek_fd(const struct adopt *a, int old)
{
	struct fdmap key = { .old = old }, *f;

	if (old < 0 || !a->nm)
		return -1;
	f = bsearch(&key, a->m, a->nm, sizeof(*a->m), cmp_fdmap);
	return f ? f->new : -1;
}

static bool fd_is(int fd, const char *kind)
{
	char k[128];

	return fd >= 0 && procfs_fd_kind(fd, k, sizeof(k)) == 0 && !strncmp(k, kind, strlen(kind));
}

int restart_keeper_path(const char *path, char *buf, size_t len)
{
	struct sockaddr_un sa;

	if ((size_t)snprintf(buf, len, "%s.keeper", path) >= len ||
	    strlen(buf) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	return 0;
}

/* Read the keeper's messages: the journal, then every fd it holds. */
static int receive(struct adopt *a, int conn, char *why, size_t len)
{
	bool any = false;

	for (;;) {
		struct keeper_adopt_msg m;
		int fds[KA_BATCH];
		struct fdpass_in in = { .fds = fds, .max = KA_BATCH };
		struct pollfd p = { .fd = conn, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, ADOPT_TIMEOUT_MS) != 1) {
			snprintf(why, len, "the keeper said nothing for %d ms", ADOPT_TIMEOUT_MS);
			return -ETIMEDOUT;
		}
		n = fdpass_recv(conn, &m, sizeof(m), 0, &in);
		if (n == 0 && !any)
			return -ECONNREFUSED;	/* its daemon still runs: it gives nothing */
		if (n != (ssize_t)sizeof(m) || in.cut || (uint32_t)in.nfds != m.n ||
		    m.n > KA_BATCH) {
			for (int i = 0; i < in.nfds; i++)
				close(fds[i]);
			snprintf(why, len, "the keeper's message is cut short (%zd bytes, %d fds)",
				 n, in.nfds);
			return n < 0 ? (int)n : -EPROTO;
		}
		any = true;
		if (m.op == KA_DONE)
			break;
		if (m.op == KA_JOURNAL && m.n == 1 && a->jfd < 0) {
			a->jfd = fds[0];
			continue;
		}
		for (uint32_t i = 0; i < m.n; i++) {
			if (a->nm == a->capm) {
				size_t c = a->capm ? a->capm * 2 : 256;
				struct fdmap *nm = realloc(a->m, c * sizeof(*nm));

				if (!nm) {
					for (uint32_t k = i; k < m.n; k++)
						close(fds[k]);
					snprintf(why, len, "out of memory");
					return -ENOMEM;
				}
				a->m = nm;
				a->capm = c;
			}
			a->m[a->nm++] = (struct fdmap){ m.old[i], fds[i], false };
			a->d->fds_in_use++;
		}
	}
	if (a->jfd < 0) {
		snprintf(why, len, "the keeper has no journal");
		return -EPROTO;
	}
	qsort(a->m, a->nm, sizeof(*a->m), cmp_fdmap);
	return 0;
}

static int cmp_ev(const void *x, const void *y, void *arg)
{
	const struct jrec *log = arg;
	size_t i = *(const size_t *)x, j = *(const size_t *)y;

	if (log[i].id != log[j].id)
		return log[i].id < log[j].id ? -1 : 1;
	return i < j ? -1 : i > j;
}

/* A counter slot of ours for ID, with the counters of OLD1 in the journal before. */
static uint32_t carry_slot(struct adopt *a, uint64_t id, uint32_t old1)
{
	struct jslot *o = journal_slot(&a->old, old1), *n;
	uint32_t s = journal_slot_get(&a->d->journal, id);

	n = journal_slot(&a->d->journal, s);
	if (n && o && o->id == id) {
		*n = *o;
		n->adopted++;
	} else if (n) {
		n->adopted = 1;
	}
	return s;
}

/*
 * Our journal: the one before, record for record (so that indices agree),
 * with our fd numbers and counter slots.
 */
static int copy_journal(struct adopt *a)
{
	struct journal *j = &a->d->journal;
	uint64_t nrec = journal_nrec(&a->old);

	for (uint64_t i = 0; i < nrec; i++) {
		struct jrec r = a->old.log[i];
		struct jentry *x;

		for (int k = 0; k < 3; k++)
			r.fd[k] = peek_fd(a, r.fd[k]);
		if (r.type == J_HELLO) {
			x = jentry_find(a->e, a->ne, r.id);
			r.a[4] = x && x->state != JE_ENDED ? carry_slot(a, r.id, (uint32_t)r.a[4]) : 0;
			if (x)
				x->slot1 = (uint32_t)r.a[4];
		} else if (r.type == J_FORK) {
			x = jentry_find(a->e, a->ne, r.a[0]);
			r.a[1] = x && x->state != JE_ENDED ? carry_slot(a, r.a[0], (uint32_t)r.a[1]) : 0;
			if (x)
				x->slot1 = (uint32_t)r.a[1];
		}
		if (journal_append(j, &r) < 0)
			return -ENOMEM;
	}
	j->h->next_id = a->old.h->next_id;
	j->h->restarts = a->old.h->restarts + 1;
	a->d->next_target_id = j->h->next_id;
	a->d->restarts = j->h->restarts;
	return 0;
}

/* Apply the model records of ID with index below LIMIT to MAP. */
static int replay(struct adopt *a, uint64_t id, uint64_t limit, struct model *map)
{
	const struct jrec *log = a->d->journal.log;
	size_t lo = 0, hi = a->nev;
	int ret = 0;

	while (lo < hi) {	/* the first record of ID */
		size_t mid = (lo + hi) / 2;

		if (log[a->ev[mid]].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t k = lo; k < a->nev && log[a->ev[k]].id == id && ret == 0; k++) {
		const struct jrec *r = &log[a->ev[k]];

		if (a->ev[k] >= limit)
			break;
		if (r->type == J_REMAP)
			ret = model_remap(map, r->a[0], r->a[1], r->a[2]);
		else if (r->type == J_REMOVE)
			model_remove(map, r->a[0], r->a[1]);
		else if (r->type == J_UNMAP)
			ret = model_unmap(map, r->a[0], r->a[1]);
	}
	return ret;
}

/* Read the images of a hand-over as its client (fsuid, fsgid), on this, the only, thread. */
static struct timage *load_as(struct adopt *a, const struct jentry *root, int dirfd,
			      char *reason, size_t len)
{
	struct img_err err = { .msg = "" };
	struct timage *img;
	gid_t g0[256];
	int ng0 = -1;
	bool sw = root->uid != 0 && geteuid() == 0;

	if (sw) {
		gid_t g[JOURNAL_GROUPS + 1];
		size_t ng = 0;

		g[ng++] = root->gid;
		for (uint32_t k = 0; k < root->ngroups; k++)
			g[ng++] = root->groups[k];
		ng0 = getgroups(256, g0);
		if (ng0 < 0 || syscall(SYS_setgroups, ng, g) < 0) {
			snprintf(reason, len, "cannot take the client's groups: %s", strerror(errno));
			return NULL;
		}
		setfsgid(root->gid);
		setfsuid(root->uid);
	}
	img = timage_read(&a->d->pages, dirfd, root->image_id, a->d->o.max_image_entries,
			  root->flags & JH_SHM_LAZY ? IMG_LOAD_SHM_LAZY : 0, &err);
	if (sw) {
		setfsuid(0);
		setfsgid(getegid());
		if ((uid_t)setfsuid(-1) != 0 || syscall(SYS_setgroups, ng0, g0) < 0)
			fatalx("restart: cannot take back the daemon's credentials");
	}
	if (!img)
		snprintf(reason, len, "its images cannot be read again: %s", err.msg);
	return img;
}

/* The images of the hand-over ROOT (loaded once, shared by its forks); a reference. */
static struct timage *images_of(struct adopt *a, const struct jentry *x, char *reason,
				size_t len)
{
	struct jentry *root = jentry_find(a->e, a->ne, x->root);
	struct timage *img;
	int dirfd;

	for (size_t i = 0; i < a->nimgs; i++)
		if (a->imgs[i].root == x->root)
			return a->imgs[i].img ? timage_get(a->imgs[i].img) : NULL;
	if (!root || root->parent) {
		snprintf(reason, len, "the journal names no hand-over it came from");
		return NULL;
	}
	dirfd = map_fd(a, root->dirfd);
	if (!fd_is(dirfd, "/")) {
		snprintf(reason, len, "its image directory was not handed on");
		return NULL;
	}
	img = load_as(a, root, dirfd, reason, len);
	for (size_t i = 0; i < a->nm; i++)
		if (a->m[i].new == dirfd)
			a->m[i].new = -1;	/* the images' now, or closed */
	if (img) {
		img->dirfd = dirfd;	/* closed with the last reference */
	} else {
		close(dirfd);
		a->d->fds_in_use--;
	}
	{
		void *n = realloc(a->imgs, (a->nimgs + 1) * sizeof(*a->imgs));

		if (!n) {
			timage_put(a->d, img);
			snprintf(reason, len, "out of memory");
			return NULL;
		}
		a->imgs = n;
		a->imgs[a->nimgs].root = x->root;
		a->imgs[a->nimgs++].img = img;
	}
	return img ? timage_get(img) : NULL;
}

/* The model of X: its hand-over's images, then the events of its ancestors up to each fork, then its own. */
static int rebuild(struct adopt *a, const struct jentry *x, const struct timage *img,
		   struct model *map, char *reason, size_t len)
{
	const struct jentry *chain[64];
	int n = 0, ret;

	for (const struct jentry *c = x; c; c = c->parent ? jentry_find(a->e, a->ne, c->parent) : NULL) {
		if (n == 64) {
			snprintf(reason, len, "forked more than 64 generations deep");
			return -E2BIG;
		}
		chain[n++] = c;
	}
	ret = timage_model(img, x->image_id, false, map, reason, len);
	for (int k = n - 1; ret == 0 && k >= 0; k--)
		ret = replay(a, chain[k]->id, k ? chain[k - 1]->fork_rec : UINT64_MAX, map);
	if (ret < 0) {
		if (!reason[0])
			snprintf(reason, len, "cannot replay its events: %s", strerror(-ret));
		model_free(map);
	}
	return ret;
}

/* Add [S, E) to the ranges R (N pairs, CAP words), joining it to the last. false: out of memory. */
static bool range_add(uint64_t **r, size_t *n, size_t *cap, uint64_t s, uint64_t e)
{
	if (*n && (*r)[*n - 1] == s) {
		(*r)[*n - 1] = e;
		return true;
	}
	if (*n + 2 > *cap) {
		size_t c = *cap ? *cap * 2 : 256;
		uint64_t *nr = realloc(*r, c * sizeof(**r));

		if (!nr)
			return false;
		*r = nr;
		*cap = c;
	}
	(*r)[(*n)++] = s;
	(*r)[(*n)++] = e;
	return true;
}

/*
 * The present or swapped pages of [S, E) into R, with PAGEMAP_SCAN (only
 * the page tables that exist are walked). -ENOTTY before Linux 6.7.
 */
static int scan_range(int fd, uint64_t s, uint64_t e, uint64_t **r, size_t *n, size_t *cap)
{
	struct page_region v[256];

	while (s < e) {
		struct pm_scan_arg a = {
			.size = sizeof(a), .start = s, .end = e, .vec = (uintptr_t)v, .vec_len = 256,
			.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
			.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
		};
		int got = ioctl(fd, PAGEMAP_SCAN, &a);

		if (got < 0)
			return -errno;
		for (int i = 0; i < got; i++)
			if (!range_add(r, n, cap, v[i].start, v[i].end))
				return -ENOMEM;
		if (a.walk_end <= s)
			break;
		s = a.walk_end;
	}
	return 0;
}

/* The same from /proc/PID/pagemap entries, 8 bytes a page (older kernels). */
static int read_range(int fd, uint64_t s, uint64_t e, uint64_t **r, size_t *n, size_t *cap)
{
	uint64_t buf[512];

	for (uint64_t at = s; at < e;) {
		uint64_t np = (e - at) / PG > 512 ? 512 : (e - at) / PG;
		ssize_t got = pread(fd, buf, np * 8, (off_t)(at / PG * 8));

		if (got <= 0)
			return got < 0 ? -errno : 0;
		for (ssize_t k = 0; k < got / 8; k++)
			if ((buf[k] >> 62 & 3) && !range_add(r, n, cap, at + (uint64_t)k * PG,
							       at + (uint64_t)(k + 1) * PG))
				return -ENOMEM;
		at += (uint64_t)got / 8 * PG;
	}
	return 0;
}

/*
 * Pages of T's model that the process has (present or swapped) into OUT
 * as ranges. Returns how many, or -errno. A page the process has where the
 * model has an area is that area's page, unless an mremap moved another
 * there whose event is not read yet: settle_present throws such a scan
 * away, and a move whose event comes later drops the model's bits at its
 * destination anyway (model_remap), while pages at its source are gone.
 */
static ssize_t scan_present(struct target *t, uint64_t **out)
{
	char path[64];
	uint64_t *r = NULL;
	size_t n = 0, cap = 0;
	bool use_scan = true;
	int fd, ret = 0;

	*out = NULL;
	snprintf(path, sizeof(path), "/proc/%d/pagemap", t->pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (struct area *v = model_first(&t->map, 0); v && ret >= 0; v = model_next(&t->map, v)) {
		if (!v->nr_missing)
			continue;
		ret = use_scan ? scan_range(fd, v->start, v->end, &r, &n, &cap) : -ENOTTY;
		if (ret == -ENOTTY || ret == -EINVAL) {
			use_scan = false;
			ret = read_range(fd, v->start, v->end, &r, &n, &cap);
		}
		if (ret < 0 && ret != -ENOMEM)
			ret = 0;	/* not mapped there (any more): nothing it has */
	}
	close(fd);
	if (ret < 0) {
		free(r);
		return ret;
	}
	*out = r;
	return (ssize_t)n / 2;
}

/*
 * Take out of T's model the pages its process already has. A scan is used
 * only if no event came in while it ran (an mremap in flight could have
 * put other pages where the model has an area); else read, apply, retry.
 */
static uint64_t settle_present(struct target *t)
{
	uint64_t cleared = 0;

	for (int tries = 0; tries < SCAN_TRIES && !t->dead && t->pid; tries++) {
		uint64_t *r;
		ssize_t n = scan_present(t, &r);
		unsigned events;

		if (n < 0)
			return 0;
		events = target_drain(t);
		if (t->dead || events) {
			free(r);
			continue;
		}
		for (ssize_t i = 0; i < n; i++)
			cleared += model_clear(&t->map, r[2 * i], r[2 * i + 1]);
		free(r);
		break;
	}
	return cleared;
}

static void stray_free(void *p)
{
	free(p);
}

static void stray_on_read(struct ev *ev, uint32_t events);

static void stray_add(struct daemon *d, int uffd)
{
	struct stray *s = calloc(1, sizeof(*s));
	int fl = fcntl(uffd, F_GETFL);

	if (!s || fl < 0 || fcntl(uffd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    loop_add(&d->loop, &s->ev, uffd, EPOLLIN, stray_on_read) < 0) {
		/* Leaked rather than closed: closing would let its process read zeros. */
		log_warnx("restart: cannot watch the userfaultfd %d no record names", uffd);
		free(s);
		return;
	}
	s->d = d;
	s->uffd = uffd;
	s->next = d->strays;
	d->strays = s;
	uffd_wake(uffd, WAKE_START, WAKE_END - WAKE_START);
}

/* A uffd no record names: its process has no model, so one that faults is killed. */
static void stray_on_read(struct ev *ev, uint32_t events)
{
	struct stray *s = container_of(ev, struct stray, ev);
	struct uffd_msg m[16];
	ssize_t n;

	(void)events;
	while ((n = read(s->uffd, m, sizeof(m))) > 0) {
		for (ssize_t k = 0; k < n / (ssize_t)sizeof(m[0]); k++) {
			if (m[k].event == UFFD_EVENT_FORK) {
				stray_add(s->d, (int)m[k].arg.fork.ufd);
			} else if (m[k].event == UFFD_EVENT_PAGEFAULT) {
				char path[64];
				long long tgid = 0;
				int pfd;

				snprintf(path, sizeof(path), "/proc/%u/status", m[k].arg.pagefault.feat.ptid);
				if (!m[k].arg.pagefault.feat.ptid ||
				    procfs_field_num(path, "Tgid", &tgid) < 0 || tgid <= 0)
					continue;
				pfd = (int)syscall(SYS_pidfd_open, (pid_t)tgid, 0);
				if (pfd < 0)
					continue;
				log_warnx("pid %lld uffd %d: faulted on a userfaultfd the journal does not name (forked in the last read of the daemon before, or handed over while it loaded): no model to serve it from; killing it so that it never reads a wrong byte",
					  tgid, s->uffd);
				syscall(SYS_pidfd_send_signal, pfd, SIGKILL, NULL, 0);
				s->d->tot.failed++;
				close(pfd);
			}
		}
	}
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		struct stray **pp;

		loop_del(&s->d->loop, &s->ev);
		close(s->uffd);
		for (pp = &s->d->strays; *pp; pp = &(*pp)->next)
			if (*pp == s) {
				*pp = s->next;
				break;
			}
		loop_defer(&s->d->loop, stray_free, s);
	}
}

/* Kill the process of X (no model can be trusted), by pidfd if we have one. */
static void adopt_kill(struct adopt *a, const struct jentry *x, int pidfd, const char *why)
{
	struct jrec end = { .type = J_END, .fd = { -1, -1, -1 }, .id = x->id };

	log_warnx("pid %d (image %u): %s; killing it so that it never reads a wrong byte",
		  (int)x->pid, x->image_id, why);
	if (pidfd >= 0)
		syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
	target_journal(a->d, &end);
	a->d->tot.failed++;
}

/* Take back X: released (read until it exits) or served. Returns 1 if it is served on. */
static int adopt_one(struct adopt *a, struct jentry *x)
{
	struct daemon *d = a->d;
	char reason[512] = "";
	int uffd = map_fd(a, x->uffd), pidfd = map_fd(a, x->pidfd);
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	struct timage *img = NULL;
	struct model map;
	struct target *t;
	struct target_stats st = { 0 };
	struct jslot *sl;

	if (!fd_is(uffd, "anon_inode:[userfaultfd]")) {
		log_warnx("restart: process %" PRIu64 " (pid %d): its userfaultfd was not handed on; not served",
			  x->id, (int)x->pid);
		goto drop;
	}
	if (pidfd >= 0 && !fd_is(pidfd, "anon_inode:[pidfd]") && !fd_is(pidfd, "pidfd:"))
		pidfd = -1;
	if (pidfd >= 0 && poll(&p, 1, 0) == 1) {
		struct jrec end = { .type = J_END, .fd = { -1, -1, -1 }, .id = x->id };

		target_journal(d, &end);	/* it exited while no daemon ran */
		d->tot.exited++;
		goto drop;
	}
	if (x->state == JE_RELEASED) {
		if (pidfd < 0)
			goto drop;
		if (released_keep(d, uffd, pidfd, x->pid, x->id) == 0)
			d->fds_in_use -= 2;	/* counted when received */
		uffd_wake(uffd, WAKE_START, WAKE_END - WAKE_START);
		return 0;
	}
	if (x->id == a->reading) {
		if (pidfd < 0) {
			adopt_kill(a, x, -1, "the daemon before died reading this process's events (one may be lost); its pid is unknown: it is killed at its next fault");
			goto drop;
		}
		adopt_kill(a, x, pidfd, "the daemon before died reading this process's events, so one may be lost (a page it dropped could be served from its image)");
		goto drop;
	}
	if (a->old.h->lost) {
		adopt_kill(a, x, pidfd, "the journal of the daemon before was full, so its memory cannot be rebuilt");
		goto drop;
	}
	if (x->flags & JH_REMOTE) {
		adopt_kill(a, x, pidfd, "its pages come from a page server, and remote-mode processes are not taken back by a new daemon");
		goto drop;
	}
	img = images_of(a, x, reason, sizeof(reason));
	if (!img || rebuild(a, x, img, &map, reason, sizeof(reason)) < 0) {
		adopt_kill(a, x, pidfd, reason[0] ? reason : "its images cannot be read again");
		timage_put(d, img);
		goto drop;
	}
	sl = journal_slot(&d->journal, x->slot1);
	if (sl && sl->id == x->id) {
		st.pages_total = sl->pages_total;
		st.pages_copied = sl->pages_copied;
		st.pages_zeroed = sl->pages_zeroed;
		st.faults = sl->faults;
		st.ev_fork = sl->ev_fork;
		st.ev_remap = sl->ev_remap;
		st.ev_remove = sl->ev_remove;
		st.ev_unmap = sl->ev_unmap;
		st.eagain = sl->eagain;
		st.enoent = sl->enoent;
		st.eexist = sl->eexist;
	}
	{
		struct target_restore_info ri = {
			.id = x->id, .parent_id = x->parent, .uffd = uffd, .pidfd = pidfd,
			.pid = pidfd >= 0 ? x->pid : 0, .parent_pid = x->parent_pid,
			.image_id = x->image_id, .slot1 = x->slot1,
			.adopted = sl && sl->id == x->id ? (uint32_t)sl->adopted : 1,
			.st = sl && sl->id == x->id ? &st : NULL,
		};

		t = target_restore(d, &ri, img, &map);
	}
	timage_put(d, img);
	if (!t) {
		adopt_kill(a, x, pidfd, "out of memory taking it back");
		goto drop;
	}
	d->fds_in_use -= 2;	/* counted when received; the target counts them now */
	return 1;
drop:
	if (uffd >= 0 && pidfd >= 0) {
		/*
		 * Its uffd closes only once the process is gone: until then a
		 * syscall of a killed process could still read a missing page.
		 */
		struct pollfd e = { .fd = pidfd, .events = POLLIN };

		if (poll(&e, 1, 2000) == 1) {
			close(uffd);
			d->fds_in_use--;
		} else {
			stray_add(d, uffd);
		}
	} else if (uffd >= 0) {
		stray_add(d, uffd);	/* no pid to kill it by: killed at its next fault */
	}
	if (pidfd >= 0) {
		close(pidfd);
		d->fds_in_use--;
	}
	return 0;
}

static void adopt_free(struct adopt *a)
{
	for (size_t i = 0; i < a->nimgs; i++)
		timage_put(a->d, a->imgs[i].img);
	free(a->imgs);
	free(a->ev);
	free(a->e);
	if (a->old.h)
		journal_close(&a->old);
	else if (a->jfd >= 0)
		close(a->jfd);
	free(a->m);
}

int restart_adopt(struct daemon *d, const char *kpath, char *why, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct adopt a = { .d = d, .jfd = -1 };
	struct target *t;
	uint64_t t0 = now_ns(), present = 0;
	int conn, ret, adopted = 0;
	unsigned strays = 0;

	if (!d->journal.h) {
		snprintf(why, len, "no journal of our own to take them into");
		return -ENOSYS;
	}
	strcpy(sa.sun_path, kpath);
	conn = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (conn < 0 || connect(conn, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (conn >= 0 && errno == ECONNREFUSED)
			unlink(kpath);	/* a keeper that is gone */
		if (conn >= 0)
			close(conn);
		return 0;
	}
	ret = receive(&a, conn, why, len);
	if (ret == -ECONNREFUSED) {
		close(conn);
		return 0;	/* its daemon runs: listen_bind says so */
	}
	if (ret < 0)
		goto fail;
	ret = journal_open(&a.old, a.jfd);
	a.jfd = -1;
	if (ret < 0) {
		snprintf(why, len, "the journal handed on is not one this daemon reads (version %u wanted)",
			 JOURNAL_VERSION);
		goto fail;
	}
	a.reading = a.old.h->reading;
	ret = journal_scan(&a.old, &a.e, &a.ne);
	if (ret == 0)
		ret = copy_journal(&a);
	if (ret < 0) {
		snprintf(why, len, "out of memory reading the journal");
		goto fail;
	}
	/* The model records, grouped by process in log order. */
	a.ev = malloc((journal_nrec(&d->journal) + 1) * sizeof(*a.ev));
	if (!a.ev) {
		snprintf(why, len, "out of memory");
		ret = -ENOMEM;
		goto fail;
	}
	for (uint64_t i = 0; i < journal_nrec(&d->journal); i++) {
		uint32_t ty = d->journal.log[i].type;

		if (ty == J_REMAP || ty == J_REMOVE || ty == J_UNMAP)
			a.ev[a.nev++] = i;
	}
	qsort_r(a.ev, a.nev, sizeof(*a.ev), cmp_ev, d->journal.log);
	if (getenv("UFFD_TEST_DIE_IN_ADOPT"))
		raise(SIGKILL);	/* a test: die holding everything, before the old keeper lets go */
	/* Everything is in our table (shared with our keeper): the old keeper may go. */
	if (write(conn, "T", 1) != 1) {
		snprintf(why, len, "the keeper hung up before it let go");
		ret = -EPIPE;
		goto fail;
	}
	{
		struct pollfd p = { .fd = conn, .events = POLLIN };

		poll(&p, 1, 5000);	/* its exit closes the adoption socket, for ours */
	}
	close(conn);
	conn = -1;
	if (a.reading)
		log_warnx("restart: the daemon before died while reading the uffd of process %" PRIu64,
			  a.reading);
	for (size_t i = 0; i < a.ne; i++)
		if (a.e[i].state != JE_ENDED)
			adopted += adopt_one(&a, &a.e[i]);
	/* What no live record claims: uffds are strays, the rest is closed. */
	for (size_t i = 0; i < a.nm; i++) {
		if (a.m[i].claimed || a.m[i].new < 0)
			continue;
		if (fd_is(a.m[i].new, "anon_inode:[userfaultfd]")) {
			stray_add(d, a.m[i].new);
			strays++;
		} else {
			close(a.m[i].new);
			d->fds_in_use--;
		}
	}
	/* Serve again: queued events first, then the pages they have, then every waiter. */
	for (t = d->targets; t; t = t->next) {
		if (t->dead)
			continue;
		target_drain(t);
		if (t->dead)
			continue;
		present += settle_present(t);
		if (t->dead)
			continue;
		uffd_wake(t->uffd, WAKE_START, WAKE_END - WAKE_START);
		serve_soon(t);
	}
	d->tot.adopted = (uint64_t)adopted;
	log_info("restart %" PRIu64 ": took back %d processes (%u released, %u uffds no record names) in %" PRIu64
		 " ms; %" PRIu64 " pages were in already",
		 d->restarts, adopted, d->nr_released, strays, (now_ns() - t0) / 1000000, present);
	adopt_free(&a);
	return adopted;
fail:
	if (conn >= 0)
		close(conn);
	/* Nothing was read from any uffd: the old keeper (if it still has them) keeps them. */
	for (size_t i = 0; i < a.nm; i++)
		if (a.m[i].new >= 0) {
			close(a.m[i].new);
			d->fds_in_use--;
		}
	a.nm = 0;
	adopt_free(&a);
	return ret;
}

static void sync_timer(struct timer *tm)
{
	struct daemon *d = container_of(tm, struct daemon, journal_sync);

	for (struct target *t = d->targets; t; t = t->next)
		if (!t->dead)
			target_sync_slot(t);
	timer_arm(&d->loop, &d->journal_sync, SYNC_NS, sync_timer);
}

int restart_listen(struct daemon *d, const char *kpath, char *why, size_t len)
{
	int fd = listen_bind(kpath, why, len);

	if (fd < 0)
		return fd;
	d->fds_in_use++;
	keeper_listen(&d->keeper, fd);	/* the keeper's: we never close it */
	timer_arm(&d->loop, &d->journal_sync, SYNC_NS, sync_timer);
	return 0;
}
