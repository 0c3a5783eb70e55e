/* One served process: its state, its images, and how it leaves (proc.h). */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "collapse.h"
#include "fillw.h"
#include "log.h"
#include "proc.h"
#include "procfs.h"
#include "released.h"
#include "target.h"
#include "uffd.h"
#include "wset.h"

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

void timage_prefault(struct daemon *d, const struct timage *img)
{
	if (d->o.no_prefault)
		return;
	for (const struct pagemap *pm = img->task.pm; pm; pm = pm->parent) {
		pages_prefault(&d->pages, pm->pages);
		for (uint32_t i = 0; i < pm->nxpf; i++)
			pages_prefault(&d->pages, pm->xpf[i]);
	}
}

void target_set_prefix(struct target *t)
{
	if (t->pid)
		snprintf(t->pfx, sizeof(t->pfx), "pid %d uffd %d:", t->pid, t->uffd);
	else
		snprintf(t->pfx, sizeof(t->pfx), "child of %d uffd %d:", t->parent_pid, t->uffd);
}

/* Free what the target owns, once the loop is done with this iteration. */
static void target_free(void *p)
{
	struct target *t = p;

	model_free(&t->map);
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
	fillw_quiesce(t);	/* before its uffd, images and model go */
	t->dead = true;
	wset_end(t);
	if (t->stale_dropped > 1)
		log_warnx("%s %" PRIu64 " pages were dropped from the model in all: no longer registered, with no event saying why",
			  t->pfx, t->stale_dropped);
	if (why)
		log_info("%s %s; %" PRIu64 " pages copied, %" PRIu64 " zeroed, %" PRIu64
			 " not served", t->pfx, why, t->st.pages_copied, t->st.pages_zeroed,
			 t->map.nr_missing);
	/* Recorded before its fds close: their numbers may be reused at once. */
	if (!t->recorded_end) {
		struct jrec r = { .type = J_END, .fd = { -1, -1, -1 }, .id = t->id };

		target_journal(d, &r);
	}
	journal_slot_put(&d->journal, t->slot1);
	timer_cancel(&d->loop, &t->retry);
	timer_cancel(&d->loop, &t->read_later);
	timer_cancel(&d->loop, &t->probe);
	if (t->parked)
		d->nr_parked--;
	t->parked = false;
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
	if (!d->nr_targets && !d->nr_released)
		journal_reset(&d->journal);	/* nothing left for a new daemon to take back */
	if (t->live && d->target_ended)
		d->target_ended(d, t, why);
	timage_put(d, t->img);
	t->img = NULL;
	loop_defer(&d->loop, target_free, t);
	daemon_check_done(d);
}

/*
 * Unregister the ranges the kernel still has registered for us, from smaps:
 * VM_UFFD_MISSING ("um") areas the model never knew of, such as grown tails.
 * If smaps cannot be read whole (a process changing its memory fast), a
 * fault there later is answered by released.c with a zero page, as the
 * model would.
 */
static void unregister_rest(struct target *t)
{
	struct procfs_maps m;
	char why[256];

	if (!t->pid)
		return;
	if (procfs_read_smaps(t->pid, &m, why, sizeof(why)) < 0) {
		log_debug("%s %s", t->pfx, why);
		return;
	}
	for (size_t i = 0; i < m.n; i++)
		if (m.v[i].vmflags & PFV_UM)
			uffd_unregister(t->uffd, m.v[i].start, m.v[i].end - m.v[i].start);
	collapse_target(t->d, t, &m);	/* unregistered: empty pages no longer block it */
	procfs_maps_free(&m);
}

/* Every lazy page is in: unregister, close the uffd, forget the process. */
void target_release(struct target *t)
{
	struct area *v;

	if (t->nr_faults || t->held)
		return;
	fillw_quiesce(t);
	if (t->map.nr_missing)
		return;	/* a worker's job stopped short */
	for (v = model_first(&t->map, 0); v; v = model_next(&t->map, v))
		uffd_unregister(t->uffd, v->start, v->end - v->start);
	unregister_rest(t);
	t->d->tot.served++;
	t->end = TE_SERVED;
	log_info("%s fully served: %" PRIu64 " pages copied, %" PRIu64 " zeroed, %" PRIu64
		 " faults", t->pfx, t->st.pages_copied, t->st.pages_zeroed, t->st.faults);
	if (!t->parent_id && t->pidfd >= 0) {
		/* It may hold a copy of its uffd: read it until it exits (released.h). */
		int uffd = t->uffd, pidfd = t->pidfd, ret;

		struct jrec r = { .type = J_RELEASED, .fd = { -1, -1, -1 }, .id = t->id };

		target_journal(t->d, &r);
		t->recorded_end = true;
		loop_del(&t->d->loop, &t->uffd_ev);
		loop_del(&t->d->loop, &t->pid_ev);
		t->uffd = -1;
		t->pidfd = -1;
		ret = released_keep(t->d, uffd, pidfd, t->pid, t->id);
		if (ret < 0)
			log_warnx("%s cannot go on reading its uffd (%s): a munmap, mremap, madvise or fork it began as it was released may wait for ever",
				  t->pfx, strerror(-ret));
	}
	target_destroy(t, NULL);
}

void target_exited(struct target *t)
{
	t->d->tot.exited++;
	target_destroy(t, "exited");
}

/* The lowest address a mapping may have (vm.mmap_min_addr): below it every uffd ioctl says EINVAL. */
static uint64_t mmap_min_addr(void)
{
	static uint64_t min;
	unsigned long long v;
	FILE *f;

	if (min)
		return min;
	min = 1ull << 20;
	f = fopen("/proc/sys/vm/mmap_min_addr", "re");
	if (f) {
		if (fscanf(f, "%llu", &v) == 1 && v > min)
			min = (v + 4095) & ~4095ull;
		fclose(f);
	}
	return min;
}

bool target_mm_gone(struct target *t)
{
	uint64_t addr = mmap_min_addr();
	int64_t done = 0;
	int ret;

	if (t->uffd < 0)
		return false;
	/*
	 * The page must lie in no area of the model, so the ioctl can never
	 * place a zero page where data is due. The kernel checks whether the
	 * mm lives (mmget_not_zero) before it looks for a registered VMA: ESRCH
	 * (ENOSPC before 4.13) only when the process is gone; with it alive,
	 * ENOENT (nothing registered there) or EAGAIN (an event unread).
	 */
	for (struct area *v = model_first(&t->map, addr); v && v->start <= addr;
	     v = model_next(&t->map, v))
		addr = v->end;
	ret = uffd_zeropage(t->uffd, addr, 4096, false, &done);
	switch (ret) {
	case -ESRCH:
	case -ENOSPC:
		return true;
	case 0:
	case -EEXIST:
		log_warnx("%s probing whether its mm lives placed a zero page at 0x%" PRIx64
			  " (ret %d), where no area of its model is", t->pfx, addr, ret);
		return false;
	case -ENOENT:
	case -EAGAIN:
		return false;
	default:
		/* Cannot tell: believe the exit, as before there was a probe. */
		log_warnx("%s probing whether its mm lives at 0x%" PRIx64 ": %s; taking the exit as told",
			  t->pfx, addr, strerror(-ret));
		return true;
	}
}

#define PROBE_NS	(200 * 1000000ull)

/* A target whose pid was forgotten: tear it down once its uffd says its mm is gone. */
static void probe_timer(struct timer *tm)
{
	struct target *t = container_of(tm, struct target, probe);

	if (t->dead)
		return;
	if (target_mm_gone(t)) {
		target_exited(t);
		return;
	}
	if (!t->pid)
		timer_arm(&t->d->loop, &t->probe, PROBE_NS, probe_timer);
}

void target_pid_exited(struct target *t)
{
	pid_t pid = t->pid;
	char why[96];

	if (target_mm_gone(t)) {
		target_exited(t);
		return;
	}
	snprintf(why, sizeof(why), "pid %d exited but the process behind its uffd lives", pid);
	target_forget_pid(t, why);
	/* Its own exit may come with no pid to tell it: ask its uffd now and then. */
	timer_arm(&t->d->loop, &t->probe, PROBE_NS, probe_timer);
}

/* Send SIGKILL to T's process, only through a pid known to be its own. */
static void target_sigkill(struct target *t)
{
	if (t->pidfd < 0)
		return;
	if (!t->pid_confirmed) {
		log_warnx("%s not killed: its pid came from the proc connector and was never confirmed",
			  t->pfx);
		return;
	}
	syscall(SYS_pidfd_send_signal, t->pidfd, SIGKILL, NULL, 0);
}

void target_kill(struct target *t, const char *why)
{
	if (t->pidfd >= 0 && !t->pid_confirmed) {
		/* Closing its uffd without a kill would let it read zeros. */
		target_abandon(t, why);
		return;
	}
	target_sigkill(t);
	t->end = TE_FAILED;
	t->d->tot.failed++;
	target_destroy(t, why);
}

/* A result we cannot serve past: log it and take the process down rather than let it read zeros. */
void target_fail(struct target *t, uint64_t addr, int ret, const char *what)
{
	log_warnx("%s %s at 0x%" PRIx64 " failed: %s; killing the process so it never reads wrong memory",
		  t->pfx, what, addr, strerror(-ret));
	target_kill(t, "killed");
}

/*
 * Stop serving a process we cannot serve correctly, without closing its uffd:
 * a closed uffd would let it read zeros where data was; kept open, it waits.
 */
void target_abandon(struct target *t, const char *why)
{
	log_warnx("%s %s: abandoning it (it will wait on its next missing page rather than read zeros)",
		  t->pfx, why);
	target_sigkill(t);
	loop_del(&t->d->loop, &t->uffd_ev);
	t->uffd = -1;	/* leaked on purpose */
	t->end = TE_FAILED;
	t->d->tot.failed++;
	target_destroy(t, "abandoned");
}

struct timage *timage_read(struct pages_cache *c, int dirfd, uint32_t image_id,
			   size_t max_entries, unsigned load_flags, struct img_err *err)
{
	struct timage *img = calloc(1, sizeof(*img));

	if (!img) {
		snprintf(err->msg, sizeof(err->msg), "out of memory loading image %u", image_id);
		return NULL;
	}
	if (img_task_load_opts(&img->task, dirfd, image_id, c, max_entries, load_flags, err) < 0) {
		free(img);
		return NULL;
	}
	img->load_flags = load_flags;
	img->refs = 1;
	img->dirfd = -1;
	return img;
}

struct timage *timage_load(struct daemon *d, int dirfd, bool own_dirfd, uint32_t image_id,
			   struct img_err *err)
{
	struct timage *img = timage_read(&d->pages, dirfd, image_id, d->o.max_image_entries, 0, err);

	if (img && own_dirfd) {
		img->dirfd = dirfd;
		d->fds_in_use++;
	}
	return img;
}

struct target *target_by_id(struct daemon *d, uint64_t id)
{
	for (struct target *t = d->targets; t; t = t->next)
		if (t->id == id && !t->dead)
			return t;
	return NULL;
}
