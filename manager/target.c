/* Serve one process: drain its uffd, apply events, answer faults, fill. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "procinfo.h"
#include "released.h"
#include "remote.h"
#include "target.h"
#include "uffd.h"

#define PG		4096ull
#define MSG_BATCH	64
#define RETRY_NS	(2 * 1000000ull)	/* parked faults are retried at least this often */
#define STALE_NS	(200 * 1000000ull)	/* ENOENT with no event for this long: gone */

static void target_on_uffd(struct ev *ev, uint32_t events);
static void target_on_pidfd(struct ev *ev, uint32_t events);
static void target_release(struct target *t);
static void retry_timer(struct timer *tm);
static void set_parked(struct target *t, bool parked);
static void target_set_pid_from_tid(struct target *t, pid_t tid);
static void target_abandon(struct target *t, const char *why);
static void serve_faults(struct target *t);

struct timage *timage_get(struct timage *img)
{
	img->refs++;
	return img;
}

void timage_put(struct daemon *d, struct timage *img)
{
	if (!img || --img->refs)
		return;
	img_task_free(&img->task, &d->pages);
	if (img->dirfd >= 0) {
		close(img->dirfd);
		d->fds_in_use--;
	}
	free(img);
}

static void set_prefix(struct target *t)
{
	if (t->pid)
		snprintf(t->pfx, sizeof(t->pfx), "pid %d uffd %d:", t->pid, t->uffd);
	else
		snprintf(t->pfx, sizeof(t->pfx), "child of %d uffd %d:", t->parent_pid, t->uffd);
}

static int pidfd_open_(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* Make FD non-blocking and close-on-exec without touching other flags. */
static int fd_prepare(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		return -errno;
	return 0;
}

/* Allocate a target around UFFD and put it in the loop and the daemon's list. */
static struct target *target_alloc(struct daemon *d, int uffd, struct timage *img)
{
	struct target *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->d = d;
	t->uffd = uffd;
	t->pidfd = -1;
	t->img = timage_get(img);
	vmap_init(&t->map);
	if (fd_prepare(uffd) < 0 ||
	    loop_add(&d->loop, &t->uffd_ev, uffd, EPOLLIN, target_on_uffd) < 0) {
		timage_put(d, t->img);
		free(t);
		return NULL;
	}
	t->id = ++d->next_target_id;
	keeper_hold(&d->keeper, t->id, uffd);
	t->next = d->targets;
	d->targets = t;
	d->nr_targets++;
	d->fds_in_use += 2;
	d->had_target = true;
	return t;
}

/* Watch PIDFD for the exit of the process. */
static int target_watch_pid(struct target *t, int pidfd)
{
	int ret = loop_add(&t->d->loop, &t->pid_ev, pidfd, EPOLLIN, target_on_pidfd);

	if (ret == 0) {
		t->pidfd = pidfd;
		keeper_pid(&t->d->keeper, t->id, pidfd);
	}
	return ret;
}

/*
 * Lazy areas of TASK into MAP: VMAs holding PE_LAZY pages, each page missing
 * if the images hold its data, or, REMOTE, if a page server is to send it.
 */
static int model_build(struct vmap *map, const struct img_task *task, uint32_t image_id,
		       bool remote, char *reason, size_t len)
{
	const MmEntry *mm = task->mm;
	const struct pagemap *pm = task->pm;

	if (!mm || !pm) {
		snprintf(reason, len, "image %u has no memory images (a zombie?)", image_id);
		return -EINVAL;
	}
	for (size_t i = 0; i < mm->n_vmas; i++) {
		const VmaEntry *v = mm->vmas[i];
		bool lazy = false;
		uint64_t a;

		for (a = v->start; a < v->end;) {
			struct pm_run run;

			pagemap_resolve(pm, a, v->end - a, &run);
			if (run.flags & PE_LAZY) {
				if (!lazy && !(v->status & VMA_ANON_PRIVATE)) {
					snprintf(reason, len,
						 "lazy pages at 0x%" PRIx64 " in a VMA that is not anonymous private (0x%" PRIx64 "-0x%" PRIx64 ", status 0x%x)",
						 a, v->start, v->end, v->status);
					return -EINVAL;
				}
				if (!lazy && vmap_add(map, v->start, v->end, v->start) < 0) {
					snprintf(reason, len, "out of memory building the model");
					return -ENOMEM;
				}
				lazy = true;
				if (run.src == PM_NODATA && !remote) {
					snprintf(reason, len,
						 "page 0x%" PRIx64 " is lazy but its data is not in the images",
						 a);
					return -EINVAL;
				}
				if (run.src == PM_DATA || run.src == PM_NODATA)
					vmap_mark_missing(map, a, a + run.len);
			}
			a += run.len;
		}
	}
	return 0;
}

static int build_model(struct target *t, char *reason, size_t len)
{
	int ret = model_build(&t->map, &t->img->task, t->image_id, t->remote, reason, len);

	t->st.pages_total = t->map.nr_missing;
	return ret;
}

int timage_check(const struct timage *img, uint32_t image_id, bool remote, uint64_t *lazy,
		 char *reason, size_t reason_len)
{
	struct vmap m;
	int ret;

	vmap_init(&m);
	ret = model_build(&m, &img->task, image_id, remote, reason, reason_len);
	*lazy = m.nr_missing;
	vmap_free(&m);
	return ret;
}

/* Register every lazy area; on failure unregister what was done. */
static int register_areas(struct target *t, char *reason, size_t len)
{
	struct vma *v, *u;
	int ret;

	for (v = vmap_first(&t->map, 0); v; v = vmap_next(&t->map, v)) {
		ret = uffd_register(t->uffd, v->start, v->end - v->start);
		if (ret < 0) {
			snprintf(reason, len, "cannot register 0x%" PRIx64 "-0x%" PRIx64 ": %s",
				 v->start, v->end, strerror(-ret));
			for (u = vmap_first(&t->map, 0); u != v; u = vmap_next(&t->map, u))
				uffd_unregister(t->uffd, u->start, u->end - u->start);
			return ret;
		}
	}
	return 0;
}

struct target *target_create(struct daemon *d, int uffd, int pidfd, pid_t pid,
			     uint32_t image_id, struct timage *img, bool registered, bool remote,
			     char *reason, size_t reason_len)
{
	struct target *t = target_alloc(d, uffd, img);

	if (!t) {
		snprintf(reason, reason_len, "cannot watch the uffd: %s", strerror(errno));
		return NULL;
	}
	t->remote = remote;
	t->pid = pid;
	t->image_id = image_id;
	set_prefix(t);
	if (build_model(t, reason, reason_len) < 0 ||
	    (!registered && register_areas(t, reason, reason_len) < 0) ||
	    target_watch_pid(t, pidfd) < 0) {
		if (!reason[0])
			snprintf(reason, reason_len, "cannot watch the pidfd: %s", strerror(errno));
		t->uffd = -1;	/* the caller still owns the fds */
		t->pidfd = -1;
		keeper_drop(&d->keeper, t->id);	/* refused: not ours to keep */
		loop_del(&d->loop, &t->uffd_ev);
		target_destroy(t, NULL);
		return NULL;
	}
	t->live = true;
	log_info("%s serving image %u: %zu areas, %" PRIu64 " lazy pages", t->pfx, image_id,
		 t->map.nr_areas, t->map.nr_missing);
	if (t->map.nr_missing == 0)
		target_release(t);
	else
		d->loop.idle_pending = true;
	return t;
}

void target_set_pid(struct target *t, pid_t pid)
{
	struct target *c;
	int pidfd;

	if (t->pid || t->dead)
		return;
	t->pid = pid;
	set_prefix(t);
	/* Children forked before we knew can now be matched to proc connector events. */
	for (c = t->d->targets; c; c = c->next)
		if (c->parent_id == t->id && !c->parent_pid) {
			c->parent_pid = pid;
			set_prefix(c);
		}
	pidfd = pidfd_open_(pid);
	if (pidfd < 0 || target_watch_pid(t, pidfd) < 0) {
		log_warn("%s pidfd_open", t->pfx);
		if (pidfd >= 0)
			close(pidfd);
		return;
	}
	log_debug("%s pid learned", t->pfx);
}

/* Record the service time of a fault read at T0. */
static void account_fault(struct target *t, uint64_t t0)
{
	uint64_t us = (now_ns() - t0) / 1000;
	unsigned b = 0;

	while (us > 1 && b < TARGET_HIST - 1) {
		us >>= 1;
		b++;
	}
	t->st.hist[b]++;
}

/* Free what the target owns, once the loop is done with this iteration. */
static void target_free(void *p)
{
	struct target *t = p;

	vmap_free(&t->map);
	free(t->faults);
	while (t->held) {
		struct rheld *h = t->held;

		t->held = h->next;
		free(h->buf);
		free(h);
	}
	free(t);
}

void target_destroy(struct target *t, const char *why)
{
	struct daemon *d = t->d;
	struct target **pp;

	if (t->dead)
		return;
	t->dead = true;
	if (t->stale_dropped > 1)
		log_warnx("%s %" PRIu64 " pages were dropped from the model in all: no longer registered, with no event saying why",
			  t->pfx, t->stale_dropped);
	if (why)
		log_info("%s %s; %" PRIu64 " pages copied, %" PRIu64 " zeroed, %" PRIu64
			 " not served", t->pfx, why, t->st.pages_copied, t->st.pages_zeroed,
			 t->map.nr_missing);
	timer_cancel(&d->loop, &t->retry);
	set_parked(t, false);
	loop_del(&d->loop, &t->uffd_ev);
	if (t->pidfd >= 0) {
		loop_del(&d->loop, &t->pid_ev);
		close(t->pidfd);
	}
	if (t->uffd >= 0)
		close(t->uffd);
	for (pp = &d->targets; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	}
	d->nr_targets--;
	d->fds_in_use -= 2;
	if (t->live && d->target_ended)
		d->target_ended(d, t, why);
	timage_put(d, t->img);
	t->img = NULL;
	loop_defer(&d->loop, target_free, t);
	daemon_check_done(d);
}

/* Unregister the ranges the kernel still has registered for us, from smaps. */
static void unregister_rest(struct target *t)
{
	char path[64], line[512];
	unsigned long long s = 0, e = 0;
	FILE *f;

	if (!t->pid)
		return;
	snprintf(path, sizeof(path), "/proc/%d/smaps", t->pid);
	f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long a, b;

		if (sscanf(line, "%llx-%llx ", &a, &b) == 2) {
			s = a;
			e = b;
		} else if (!strncmp(line, "VmFlags:", 8) && strstr(line, " um")) {
			/* VM_UFFD_MISSING: grown tails the model never knew of. */
			uffd_unregister(t->uffd, s, e - s);
		}
	}
	fclose(f);
}

/* Every lazy page is in: unregister, close the uffd, forget the process. */
static void target_release(struct target *t)
{
	struct vma *v;

	if (t->nr_faults || t->held)
		return;
	for (v = vmap_first(&t->map, 0); v; v = vmap_next(&t->map, v))
		uffd_unregister(t->uffd, v->start, v->end - v->start);
	unregister_rest(t);
	t->d->tot.served++;
	t->end = TE_SERVED;
	keeper_drop(&t->d->keeper, t->id);	/* nothing left to wait for */
	log_info("%s fully served: %" PRIu64 " pages copied, %" PRIu64 " zeroed, %" PRIu64
		 " faults", t->pfx, t->st.pages_copied, t->st.pages_zeroed, t->st.faults);
	if (!t->parent_id && t->pidfd >= 0) {
		/* It may hold a copy of its uffd: read it until it exits (released.h). */
		int uffd = t->uffd, pidfd = t->pidfd, ret;

		loop_del(&t->d->loop, &t->uffd_ev);
		loop_del(&t->d->loop, &t->pid_ev);
		t->uffd = -1;
		t->pidfd = -1;
		ret = released_keep(t->d, uffd, pidfd, t->pid);
		if (ret < 0)
			log_warnx("%s cannot go on reading its uffd (%s): a munmap, mremap, madvise or fork it began as it was released may wait for ever",
				  t->pfx, strerror(-ret));
	}
	target_destroy(t, NULL);
}

void target_exited(struct target *t)
{
	t->d->tot.exited++;
	keeper_drop(&t->d->keeper, t->id);	/* its memory is gone: nothing to wait for */
	target_destroy(t, "exited");
}

void target_kill(struct target *t, const char *why)
{
	if (t->pidfd >= 0) {
		syscall(SYS_pidfd_send_signal, t->pidfd, SIGKILL, NULL, 0);
		keeper_drop(&t->d->keeper, t->id);	/* it never runs again */
	}
	t->end = TE_FAILED;
	t->d->tot.failed++;
	target_destroy(t, why);
}

/* A result we cannot serve past: log it and take the process down rather than let it read zeros. */
static void target_fail(struct target *t, uint64_t addr, int ret, const char *what)
{
	log_warnx("%s %s at 0x%" PRIx64 " failed: %s; killing the process so it never reads wrong memory",
		  t->pfx, what, addr, strerror(-ret));
	target_kill(t, "killed");
}

/*
 * Place [ADDR, ADDR+LEN) with one ioctl: a copy from SRC, or zero pages when
 * SRC is NULL. Counts the outcome and sets *ADV to how far to move on: the
 * bytes placed, or the one page that was already there.
 */
static enum uffd_class place(struct target *t, uint64_t addr, uint64_t len, const void *src,
			     bool wake, uint64_t *adv)
{
	struct uffd_result r;
	int64_t out;
	int ret;

	for (;;) {
		out = 0;
		ret = src ? uffd_copy(t->uffd, addr, src, len, wake, &out) :
			    uffd_zeropage(t->uffd, addr, len, wake, &out);
		r = uffd_classify(ret, out, len);
		/*
		 * ENOENT: the range is not inside one registered VMA. The model
		 * keeps one area across kernel splits it never hears of
		 * (mprotect, madvise): place less, down to the first page.
		 */
		if (r.cls != UC_STALE || len <= PG)
			break;
		len = (len / 2) & ~(PG - 1);
	}
	*adv = 0;
	switch (r.cls) {
	case UC_DONE:
	case UC_PARTIAL:
		*adv = r.done;
		if (src) {
			t->st.pages_copied += r.done / PG;
			t->d->tot.pages_copied += r.done / PG;
		} else {
			t->st.pages_zeroed += r.done / PG;
			t->d->tot.pages_zeroed += r.done / PG;
		}
		break;
	case UC_EXISTS:
		/* Someone else put this page there: it is in; wake its waiters. */
		t->st.eexist++;
		log_debug("%s EEXIST at 0x%" PRIx64 " (%s, %" PRIu64 " bytes)", t->pfx, addr,
			  src ? "copy" : "zero", len);
		uffd_wake(t->uffd, addr, PG);
		*adv = PG;
		break;
	case UC_RETRY:
		t->st.eagain++;
		break;
	case UC_STALE:
		t->st.enoent++;
		break;
	case UC_GONE:
		break;
	case UC_BUG:
		target_fail(t, addr, ret, src ? "UFFDIO_COPY" : "UFFDIO_ZEROPAGE");
		break;
	}
	return r.cls;
}

/* Did a placement leave the range in (fully, or past a page already there)? */
static bool placed(enum uffd_class c)
{
	return c == UC_DONE || c == UC_PARTIAL || c == UC_EXISTS;
}

/*
 * Copy [ADDR, ADDR+LEN) of area V (all pages missing) from the images.
 * Returns the class that stopped it: UC_DONE when all is in.
 */
static enum uffd_class serve_range(struct target *t, struct vma *v, uint64_t addr,
				   uint64_t len, bool wake)
{
	const struct pagemap *pm = t->img->task.pm;

	while (len) {
		struct pm_run run;
		enum uffd_class c;
		uint64_t adv;

		pagemap_resolve(pm, vma_img_addr(v, addr), len, &run);
		c = place(t, addr, run.len, run.src == PM_DATA ? run.pf->base + run.off : NULL,
			  wake, &adv);
		vmap_clear(&t->map, addr, addr + adv);
		addr += adv;
		len -= adv;
		if (!placed(c))
			return c;
	}
	return UC_DONE;
}

/*
 * Answer a page that the model has no data for: a zero page. UC_EXISTS means
 * it was already there (placed after the fault was queued); its waiters are woken.
 */
static enum uffd_class serve_zero(struct target *t, uint64_t page)
{
	uint64_t adv;

	return place(t, page, PG, NULL, true, &adv);
}

/*
 * Zero the image holes among the served-or-zero pages of [ADDR, ADDR+LEN):
 * a neighbour of a fault that would otherwise fault on its own. A page the
 * process already has answers EEXIST and is left alone.
 */
static void zero_holes(struct target *t, struct vma *v, uint64_t addr, uint64_t len)
{
	const struct pagemap *pm = t->img->task.pm;

	while (len && !t->dead) {
		struct pm_run run;
		uint64_t adv;

		pagemap_resolve(pm, vma_img_addr(v, addr), len, &run);
		if (run.src != PM_HOLE) {
			adv = run.len;
		} else if (!placed(place(t, addr, run.len, NULL, false, &adv))) {
			return;	/* the fault itself is answered; the rest can wait */
		}
		addr += adv;
		len -= adv;
	}
}

/* Serve one fault with a window around it: the faulting run first, woken; the rest quietly. */
static enum uffd_class serve_fault(struct target *t, uint64_t addr)
{
	uint64_t page = addr & ~(PG - 1), w = t->d->o.fault_window;
	uint64_t ws, we, a;
	struct vma *v = vmap_find(&t->map, page);
	enum uffd_class c;

	if (!v || !vma_is_missing(v, page)) {
		c = serve_zero(t, page);
		/* Already there: a fault that raced with our own window; the window is done. */
		if (c == UC_EXISTS || c == UC_PARTIAL)
			return UC_DONE;
	} else {
		c = serve_range(t, v, page, vma_run(v, page, (page | (w - 1)) + 1 - page, true), true);
	}
	if (c != UC_DONE || !v)
		return c;
	ws = page & ~(w - 1);
	we = ws + w;
	if (ws < v->start)
		ws = v->start;
	if (we > v->end || we < ws)
		we = v->end;
	/* Best effort for the rest of the window: the fault itself is answered. */
	for (a = ws; a < we && !t->dead;) {
		uint64_t n = vma_run(v, a, we - a, true);

		if (n) {
			if (serve_range(t, v, a, n, false) != UC_DONE)
				break;
		} else {
			n = vma_run(v, a, we - a, false);
			zero_holes(t, v, a, n);
		}
		a += n;
	}
	t->fill_cursor = we;
	return t->dead ? UC_GONE : UC_DONE;
}

/*
 * ENOENT on one page that the model says is missing: is the page gone for
 * good? An mremap or munmap makes the kernel refuse the old place before
 * its event can be read, so ENOENT alone proves nothing: the pages must
 * stay missing until the events explain it. Only when ENOENT persists for
 * STALE_NS with no event applied meanwhile (an area a forked child did not
 * inherit, MADV_DONTFORK) is it dropped.
 */
static bool stale_for_good(struct target *t)
{
	uint64_t now = now_ns();

	if (!t->stale_since || t->stale_seq != t->ev_seq) {
		t->stale_since = now;
		t->stale_seq = t->ev_seq;
		return false;
	}
	return now - t->stale_since >= STALE_NS;
}

/*
 * Forget the page at A: it is no longer registered and no event says why
 * (stale_for_good). One line for the first; a client that unregistered a
 * whole area would otherwise log one per page. The total is logged when
 * the process leaves.
 */
static void drop_stale(struct target *t, uint64_t a)
{
	if (!t->stale_dropped++)
		log_warnx("%s 0x%" PRIx64 " is no longer registered and no event says why; "
			  "dropping that page from the model (more such pages are counted, not logged)",
			  t->pfx, a);
	vmap_clear(&t->map, a, a + PG);
}

/* Keep the daemon's count of processes with parked faults. */
static void set_parked(struct target *t, bool parked)
{
	if (t->parked != parked)
		t->d->nr_parked += parked ? 1 : -1;
	t->parked = parked;
}

/* Remove the waiting faults on pages of [S, E) (placed with a wake): they are answered. */
static void faults_done(struct target *t, uint64_t s, uint64_t e)
{
	size_t i, keep = 0;

	for (i = 0; i < t->nr_faults; i++) {
		uint64_t page = t->faults[i].addr & ~(PG - 1);

		if (page >= s && page < e)
			account_fault(t, t->faults[i].t0);
		else
			t->faults[keep++] = t->faults[i];
	}
	t->nr_faults = keep;
}

/*
 * Place what is left of fetched data H where it still belongs: pages that
 * are missing and still have the image address it was asked for (a moved or
 * dropped page is skipped; a moved one is asked again at its new place).
 * False if it must wait for a drain (EAGAIN); H then holds the rest.
 */
static bool place_held(struct target *t, struct rheld *h)
{
	uint64_t end = h->addr + h->len;

	while (h->addr < end && !t->dead) {
		uint64_t a = h->addr, adv = PG;
		struct vma *v = vmap_find(&t->map, a);

		if (v && vma_img_addr(v, a) == h->img && vma_is_missing(v, a)) {
			uint64_t n = vma_run(v, a, end - a, true);
			enum uffd_class c = place(t, a, n, h->buf + h->off, true, &adv);

			if (placed(c)) {
				vmap_clear(&t->map, a, a + adv);
				faults_done(t, a, a + adv);
			} else if (c == UC_RETRY) {
				h->len = end - a;
				return false;
			} else if (c == UC_STALE && !stale_for_good(t)) {
				/* Maybe an event not read yet moved it: wait for the drain. */
				h->len = end - a;
				return false;
			} else if (c == UC_STALE) {
				drop_stale(t, a);
				adv = PG;
			} else if (c == UC_GONE) {
				target_exited(t);
				return true;
			} else {
				return true;	/* UC_BUG: target_fail took it down */
			}
		}
		h->addr += adv;
		h->img += adv;
		h->off += adv;
	}
	return true;
}

/* Remote mode: does fetched data held for T cover PAGE (it waits for a drain)? */
static bool held_covers(const struct target *t, uint64_t page)
{
	for (const struct rheld *h = t->held; h; h = h->next)
		if (page >= h->addr && page < h->addr + h->len)
			return true;
	return false;
}

/*
 * Remote mode: answer a fault at ADDR. A page with no data to come gets a
 * zero page; a missing one waits (*WAITING) for a request: the one already
 * covering it, moved ahead of background requests, or a new one from the
 * fault to the end of its window. The fill resumes from there.
 */
static enum uffd_class serve_fault_remote(struct target *t, uint64_t addr, bool *waiting)
{
	uint64_t page = addr & ~(PG - 1), w = t->d->o.fault_window, we, ns, n;
	struct vma *v = vmap_find(&t->map, page);
	struct remote *r = t->d->remote;
	struct rqueue *q = remote_queue(r);
	struct rreq *cover;
	enum uffd_class c;
	int ret;

	if (!v || !vma_is_missing(v, page)) {
		c = serve_zero(t, page);
		return c == UC_EXISTS || c == UC_PARTIAL ? UC_DONE : c;
	}
	*waiting = true;
	if (held_covers(t, page))
		return UC_DONE;	/* its data is here, placed after the next drain */
	cover = rq_covers(q, t->id, page);
	if (cover) {
		remote_promote(r, cover);
		return UC_DONE;
	}
	we = (page & ~(w - 1)) + w;
	if (we > v->end || we <= page)
		we = v->end;
	ns = rq_next_start(q, t->id, page);
	if (we > ns)
		we = ns;
	if (we - page > REMOTE_MAX_PAGES * PG)
		we = page + REMOTE_MAX_PAGES * PG;
	n = vma_run(v, page, we - page, true);
	ret = remote_request(r, t->id, t->image_id, page, vma_img_addr(v, page), n / PG, true);
	if (ret == -ENOTCONN) {
		target_remote_lost(t->d, "killed: page server connection lost");
		return UC_GONE;
	}
	if (ret < 0) {
		*waiting = false;
		return UC_RETRY;	/* out of memory: try again after the retry delay */
	}
	t->fill_cursor = page + n;
	return UC_DONE;
}

/*
 * Place fetched data held back by EAGAIN, then serve the queued faults in
 * order; stop at the first that must wait for a drain. In remote mode a
 * fault whose data is on its way stays queued, not parked.
 */
static void serve_faults(struct target *t)
{
	size_t i, keep = 0;
	bool retry = false;

	while (t->held && !t->dead) {
		struct rheld *h = t->held;

		if (!place_held(t, h)) {
			retry = true;
			break;
		}
		t->held = h->next;
		free(h->buf);
		free(h);
	}
	if (t->dead)
		return;
	for (i = 0; i < t->nr_faults; i++) {
		struct fault f = t->faults[i];
		bool waiting = false;
		enum uffd_class c;

		if (retry) {
			t->faults[keep++] = f;
			continue;
		}
		c = t->remote ? serve_fault_remote(t, f.addr, &waiting) : serve_fault(t, f.addr);
		if (t->dead)
			return;
		if (waiting || c == UC_RETRY) {
			retry = c == UC_RETRY;
			t->faults[keep++] = f;
			continue;
		}
		if (c == UC_GONE) {
			target_exited(t);
			return;
		}
		if (c == UC_STALE)
			/* The area went away under the fault: let the thread retry (and SEGV or re-fault). */
			uffd_wake(t->uffd, f.addr & ~(PG - 1), PG);
		else
			account_fault(t, f.t0);
	}
	t->nr_faults = keep;
	set_parked(t, retry);
	if (retry)
		timer_arm(&t->d->loop, &t->retry, RETRY_NS, retry_timer);
	else if (t->map.nr_missing == 0)
		target_release(t);
}

/* The short timer that makes sure parked faults never wait for a drain that does not come. */
static void retry_timer(struct timer *tm)
{
	struct target *t = container_of(tm, struct target, retry);

	if (!t->dead && (t->nr_faults || t->held))
		serve_faults(t);
}

void target_retry_parked(struct daemon *d)
{
	struct target *t, *next;

	/* Called on every loop iteration: free when nothing is parked, whatever the number of processes. */
	if (!d->nr_parked)
		return;
	for (t = d->targets; t; t = next) {
		next = t->next;
		if (t->parked)
			serve_faults(t);
	}
}

/* Learn a forked child's pid from the thread id of its first fault. */
static void target_set_pid_from_tid(struct target *t, pid_t tid)
{
	char path[64], val[32];

	snprintf(path, sizeof(path), "/proc/%d/status", tid);
	if (procinfo_field(path, "Tgid", val, sizeof(val)) == 0 && atoi(val) > 0)
		target_set_pid(t, atoi(val));
}

/*
 * Stop serving a process we cannot serve correctly, without closing its uffd:
 * a closed uffd would let it read zeros where data was; kept open, it waits.
 */
static void target_abandon(struct target *t, const char *why)
{
	log_warnx("%s %s: abandoning it (it will wait on its next missing page rather than read zeros)",
		  t->pfx, why);
	if (t->pidfd >= 0)
		syscall(SYS_pidfd_send_signal, t->pidfd, SIGKILL, NULL, 0);
	loop_del(&t->d->loop, &t->uffd_ev);
	t->uffd = -1;	/* leaked on purpose */
	t->end = TE_FAILED;
	t->d->tot.failed++;
	target_destroy(t, "abandoned");
}

/* Serve one step of background fill for T; returns false if it has no more work. */
static bool fill_one(struct target *t)
{
	uint64_t a, n;
	struct vma *v;
	enum uffd_class c;

	if (!vmap_next_missing(&t->map, t->fill_cursor, &a) &&
	    !vmap_next_missing(&t->map, 0, &a)) {
		target_release(t);
		return false;
	}
	v = vmap_find(&t->map, a);
	n = vma_run(v, a, t->d->o.fill_chunk, true);
	c = serve_range(t, v, a, n, true);
	if (t->dead)
		return false;
	t->fill_cursor = a + n;
	switch (c) {
	case UC_GONE:
		target_exited(t);
		return false;
	case UC_STALE:
		/* serve_range stopped at a page the kernel refuses (place() split the rest). */
		if (!vmap_next_missing(&t->map, a, &a) || !stale_for_good(t))
			break;
		drop_stale(t, a);
		break;
	default:
		break;
	}
	if (t->map.nr_missing == 0 && !t->nr_faults) {
		target_release(t);
		return false;
	}
	return true;
}

/*
 * Remote mode: the first missing page of T at or after its fill cursor
 * (wrapping once) that no request covers, and how much to ask from there:
 * up to a fill chunk, within its area, short of the next request.
 */
static bool next_uncovered(struct target *t, struct rqueue *q, uint64_t *addr, uint64_t *len)
{
	uint64_t a = t->fill_cursor, lim, ns;
	bool wrapped = false;

	for (unsigned i = 0; i < 4 * REMOTE_MAX_PAGES; i++) {
		struct rreq *cover;
		struct vma *v;

		if (!vmap_next_missing(&t->map, a, &a)) {
			if (wrapped)
				return false;
			wrapped = true;
			a = 0;
			continue;
		}
		cover = rq_covers(q, t->id, a);
		if (cover) {
			a = cover->addr + cover->nr * PG;
			continue;
		}
		v = vmap_find(&t->map, a);
		lim = t->d->o.fill_chunk;
		if (lim > REMOTE_MAX_PAGES * PG)
			lim = REMOTE_MAX_PAGES * PG;
		ns = rq_next_start(q, t->id, a);
		if (ns - a < lim)
			lim = ns - a;
		*addr = a;
		*len = vma_run(v, a, lim, true);
		return *len != 0;
	}
	return false;
}

/* Remote mode: queue background requests while there is room, one process after another. */
static bool remote_fill(struct daemon *d)
{
	struct rqueue *q = remote_queue(d->remote);
	bool any = true, faults = false;
	struct target *f;

	if (!remote_alive(d->remote))
		return false;
	/* While faults wait, keep little background data ahead of them on the wire. */
	for (f = d->targets; f && !faults; f = f->next)
		faults = f->remote && f->nr_faults != 0;
	q->max_fly_bg = faults ? REMOTE_BG_BUSY : REMOTE_BG_IDLE;
	while (any && rq_bg_room(q)) {
		struct target **pp, *t;

		any = false;
		for (pp = &d->targets; (t = *pp); pp = &t->next) {
			uint64_t a, n;
			struct target **tail;

			/* Held data first: no more background for it until that is placed. */
			if (t->dead || !t->remote || t->held || t->parked || !t->map.nr_missing ||
			    !next_uncovered(t, q, &a, &n))
				continue;
			if (remote_request(d->remote, t->id, t->image_id, a,
					   vma_img_addr(vmap_find(&t->map, a), a), n / PG, false) < 0)
				return false;
			t->fill_cursor = a + n;
			/* To the back of the line. */
			if (t->next) {
				*pp = t->next;
				for (tail = pp; *tail; tail = &(*tail)->next)
					;
				*tail = t;
				t->next = NULL;
			}
			any = true;
			break;
		}
	}
	return false;	/* nothing for the idle hook: answers call us again */
}

bool target_fill_step(struct daemon *d)
{
	struct target **pp, *t;

	if (!daemon_fill_enabled(d))
		return false;
	if (d->remote)
		remote_fill(d);
	/* The first process with work does a step, then goes to the back of the line. */
	for (pp = &d->targets; (t = *pp); pp = &t->next)
		if (!t->remote && !t->nr_faults && t->map.nr_missing)
			break;
	if (!t)
		return false;
	if (fill_one(t) && !t->dead && t->next) {
		struct target **tail;

		*pp = t->next;
		for (tail = pp; *tail; tail = &(*tail)->next)
			;
		*tail = t;
		t->next = NULL;
	}
	for (t = d->targets; t; t = t->next)
		if (!t->remote && !t->nr_faults && t->map.nr_missing)
			return true;
	return false;
}

static int queue_fault(struct target *t, const struct uffd_msg *m)
{
	uint64_t page = m->arg.pagefault.address & ~(PG - 1);

	/* Several threads on one page: one answer wakes them all. */
	for (size_t i = 0; i < t->nr_faults; i++)
		if ((t->faults[i].addr & ~(PG - 1)) == page)
			return 0;
	if (t->nr_faults == t->cap_faults) {
		size_t cap = t->cap_faults ? t->cap_faults * 2 : 16;
		struct fault *nf = realloc(t->faults, cap * sizeof(*nf));

		if (!nf)
			return -ENOMEM;
		t->faults = nf;
		t->cap_faults = cap;
	}
	t->faults[t->nr_faults++] = (struct fault){
		.addr = m->arg.pagefault.address,
		.t0 = now_ns(),
		.tid = m->arg.pagefault.feat.ptid,
	};
	return 0;
}

/* A FORK event: a new process to serve, with a copy of the parent's model. */
static void on_fork(struct target *t, int child_uffd)
{
	struct target *c = target_alloc(t->d, child_uffd, t->img);

	if (!c) {
		/* Closing it would let the child read zeros; keeping it unserved hangs the child. */
		log_warn("%s cannot serve forked child (uffd %d)", t->pfx, child_uffd);
		t->d->tot.failed++;
		return;
	}
	c->live = true;
	c->remote = t->remote;
	c->parent_pid = t->pid;
	c->parent_id = t->id;
	c->image_id = t->image_id;
	c->fill_cursor = t->fill_cursor;
	set_prefix(c);
	if (vmap_clone(&c->map, &t->map) < 0) {
		target_abandon(c, "out of memory copying the model of its parent");
		return;
	}
	c->st.pages_total = c->map.nr_missing;
	log_debug("%s forked: %s %" PRIu64 " pages to serve", t->pfx, c->pfx, c->map.nr_missing);
	t->d->loop.idle_pending = true;
	if (t->d->pc == NULL)
		log_debug("%s no proc connector: child pid comes from its first fault", c->pfx);
}

/* Apply one event message to the model. */
static void apply_msg(struct target *t, const struct uffd_msg *m)
{
	switch (m->event) {
	case UFFD_EVENT_PAGEFAULT:
		t->st.faults++;
		t->d->tot.faults++;
		if (!t->pid && m->arg.pagefault.feat.ptid)
			target_set_pid_from_tid(t, m->arg.pagefault.feat.ptid);
		if (queue_fault(t, m) < 0)
			log_warnx("%s out of memory queueing a fault at 0x%llx", t->pfx,
				  (unsigned long long)m->arg.pagefault.address);
		break;
	case UFFD_EVENT_FORK:
		t->ev_seq++;
		t->st.ev_fork++;
		on_fork(t, (int)m->arg.fork.ufd);
		break;
	case UFFD_EVENT_REMAP:
		t->ev_seq++;
		t->st.ev_remap++;
		if (vmap_remap(&t->map, m->arg.remap.from, m->arg.remap.to, m->arg.remap.len) < 0)
			target_abandon(t, "out of memory applying an mremap");
		break;
	case UFFD_EVENT_REMOVE:
		t->ev_seq++;
		t->st.ev_remove++;
		/* Zero from now on, never filled from the image again. */
		t->st.pages_zeroed += vmap_clear(&t->map, m->arg.remove.start, m->arg.remove.end);
		break;
	case UFFD_EVENT_UNMAP:
		t->ev_seq++;
		t->st.ev_unmap++;
		if (vmap_unmap(&t->map, m->arg.remove.start, m->arg.remove.end) < 0)
			log_warnx("%s out of memory applying munmap", t->pfx);
		break;
	default:
		log_warnx("%s unknown uffd event %u", t->pfx, m->event);
	}
}

/* Read every queued message, apply the events, then serve. */
static void target_on_uffd(struct ev *ev, uint32_t events)
{
	struct target *t = container_of(ev, struct target, uffd_ev);
	struct uffd_msg msgs[MSG_BATCH];

	(void)events;
	for (;;) {
		ssize_t n = read(t->uffd, msgs, sizeof(msgs));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			log_warn("%s read uffd", t->pfx);
			t->end = TE_FAILED;
			t->d->tot.failed++;
			target_destroy(t, "lost its uffd");
			return;
		}
		for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]) && !t->dead; i++)
			apply_msg(t, &msgs[i]);
		if (t->dead)
			return;
		/*
		 * A short read drained the queue: skip the read that would only
		 * say EAGAIN (a syscall on every fault). Anything queued since
		 * wakes the level-triggered epoll again.
		 */
		if ((size_t)n < sizeof(msgs))
			break;
	}
	serve_faults(t);
}

static void target_on_pidfd(struct ev *ev, uint32_t events)
{
	struct target *t = container_of(ev, struct target, pid_ev);

	(void)events;
	target_exited(t);
}

struct target *target_by_id(struct daemon *d, uint64_t id)
{
	for (struct target *t = d->targets; t; t = t->next)
		if (t->id == id && !t->dead)
			return t;
	return NULL;
}

void target_remote_data(struct target *t, uint64_t addr, uint64_t img, uint8_t *buf,
			uint64_t len)
{
	struct rheld *h = malloc(sizeof(*h)), **pp;

	if (!h) {
		/* The pages stay missing: faults and the fill ask again. */
		log_warnx("%s out of memory holding %" PRIu64 " fetched bytes", t->pfx, len);
		free(buf);
		serve_faults(t);
		return;
	}
	*h = (struct rheld){ .addr = addr, .img = img, .len = len, .buf = buf };
	for (pp = &t->held; *pp; pp = &(*pp)->next)
		;
	*pp = h;
	serve_faults(t);
}

void target_remote_lost(struct daemon *d, const char *why)
{
	struct target *t, *next;

	for (t = d->targets; t; t = next) {
		next = t->next;
		if (t->dead || !t->remote || (!t->map.nr_missing && !t->held))
			continue;
		log_warnx("%s %" PRIu64 " lazy pages were not delivered; killing it so that it never reads zeros",
			  t->pfx, t->map.nr_missing);
		if (t->pidfd >= 0)
			target_kill(t, why);
		else
			target_abandon(t, "its pid is unknown, so it cannot be killed");
	}
}
