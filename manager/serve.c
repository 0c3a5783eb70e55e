/* Serve one process's faults: place pages, classify, park and retry (serve.h). */
#include <errno.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "serve.h"
#include "target.h"
#include "wset.h"

#define RETRY_NS	(2 * 1000000ull)	/* parked faults are retried at least this often */
#define STALE_NS	(200 * 1000000ull)	/* ENOENT with no event for this long: gone */
#define SERVE_READ_MAX	(4 * PG)	/* the longest faulting run read before its copy */
#define READ_LATER_NS	(50 * 1000000ull)	/* a uffd read that found no fd free: again */
#define READ_LATER_LOG	100	/* ... said again every this many tries (5 s) */

static void retry_timer(struct timer *tm);
/* Record the service time of a fault read at T0. */
static void account_fault(struct target *t, uint64_t t0)
{
	uint64_t now = now_ns(), us = (now - t0) / 1000;
	unsigned b = 0;

	while (us > 1 && b < TARGET_HIST - 1) {
		us >>= 1;
		b++;
	}
	t->st.hist[b]++;
	loop_hot(&t->d->loop, &t->uffd_ev, now);
	pages_note_fault(&t->d->pages, now);
}

/*
 * Place [ADDR, ADDR+LEN) with one ioctl: a copy from SRC, zero pages when
 * SRC is NULL, or poisoned pages when POISON, in pages of UNIT bytes (4 KiB,
 * or a hugetlb page). Counts the outcome and sets *ADV to how far to move
 * on: the bytes placed, or the one page that was already there.
 */
static enum uffd_class place(struct target *t, uint64_t addr, uint64_t len, uint64_t unit,
			     const void *src, bool poison, bool wake, uint64_t *adv)
{
	const char *what = poison ? "UFFDIO_POISON" : src ? "UFFDIO_COPY" : "UFFDIO_ZEROPAGE";
	struct uffd_result r;
	int64_t out;
	int ret;

	for (;;) {
		out = 0;
		ret = poison ? uffd_poison(t->uffd, addr, len, wake, &out) :
		      src ? uffd_copy(t->uffd, addr, src, len, wake, &out) :
			    uffd_zeropage(t->uffd, addr, len, wake, &out);
		r = uffd_classify(ret, out, len);
		/*
		 * ENOENT: the range is not inside one registered VMA. The model
		 * keeps one area across kernel splits it never hears of
		 * (mprotect, madvise): place less, down to the first page.
		 */
		if (r.cls != UC_STALE || len <= unit)
			break;
		len = (len / 2) & ~(unit - 1);
	}
	*adv = 0;
	switch (r.cls) {
	case UC_DONE:
	case UC_PARTIAL:
		*adv = r.done;
		if (poison) {
			t->st.pages_poisoned += r.done / PG;
			t->d->tot.pages_poisoned += r.done / PG;
		} else if (src) {
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
			  what, len);
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
		target_fail(t, addr, ret, what);
		break;
	}
	return r.cls;
}

enum uffd_class serve_place(struct target *t, uint64_t addr, uint64_t len, const void *src,
			     bool wake, uint64_t *adv)
{
	return place(t, addr, len, PG, src, false, wake, adv);
}

/* Did a placement leave the range in (fully, or past a page already there)? */
bool serve_placed(enum uffd_class c)
{
	return c == UC_DONE || c == UC_PARTIAL || c == UC_EXISTS;
}

/*
 * LEN bytes of zeros to copy from, for hugetlb, which has no UFFDIO_ZEROPAGE:
 * one read-only anonymous mapping, never written, so it costs no memory.
 */
static const void *huge_zero(struct daemon *d, uint64_t len)
{
	void *p;

	if (d->hzero_len >= len)
		return d->hzero;
	p = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (d->hzero)
		munmap((void *)d->hzero, d->hzero_len);
	d->hzero = p;
	d->hzero_len = len;
	return p;
}

/* Place the huge page at B of hugetlb area V whole: its data, zeros or poison. */
static enum uffd_class place_huge(struct target *t, struct area *v, uint64_t b, bool zero,
				  bool wake)
{
	uint64_t hs = 1ull << v->hshift, adv;
	const void *src = NULL;
	struct pm_run run = { .src = PM_HOLE };
	enum uffd_class c;

	if (!zero && pagemap_resolve_block(t->img->task.pm, area_img_addr(v, b), hs, &run) < 0) {
		/* Checked at load: a bug, not bad input. */
		target_fail(t, b, -EINVAL, "a huge page of mixed sources");
		return UC_BUG;
	}
	if (run.src == PM_DATA)
		src = run.pf->base + run.off;
	else if (run.src != PM_POISON && !(src = huge_zero(t->d, hs))) {
		target_fail(t, b, -ENOMEM, "mmap of a huge zero page");
		return UC_BUG;
	}
	c = place(t, b, hs, hs, src, run.src == PM_POISON, wake, &adv);
	if (c == UC_EXISTS)
		uffd_wake(t->uffd, b, hs);	/* place() woke only its first page */
	if (c == UC_PARTIAL)
		c = UC_RETRY;	/* a huge page is never placed in part: place it again */
	if (serve_placed(c))
		model_clear(&t->map, b, b + hs);
	return c;
}

/*
 * Hugetlb: place every missing huge page of V that [ADDR, ADDR+LEN) touches,
 * each whole and aligned (UFFDIO_COPY or UFFDIO_POISON of the huge page).
 */
static enum uffd_class serve_huge(struct target *t, struct area *v, uint64_t addr,
				  uint64_t len, bool wake)
{
	uint64_t hs = 1ull << v->hshift, end = addr + len;

	for (uint64_t b = addr & ~(hs - 1); b < end && b < v->end; b += hs) {
		enum uffd_class c;

		/* Any page of it missing (the model clears huge pages whole, but
		 * never trust that to skip one for ever). */
		if (!area_is_missing(v, b) && area_run(v, b, hs, false) == hs)
			continue;
		c = place_huge(t, v, b, false, wake);
		if (!serve_placed(c))
			return c;
	}
	return UC_DONE;
}

/*
 * Place RUN, resolved at ADDR (4 KiB pages): a copy from the image's
 * mapping, zeros for a hole, poison for a page unreadable at dump time
 * (it faults with SIGBUS, as it did there). Sets *ADV as place() does.
 */
static enum uffd_class place_run(struct target *t, uint64_t addr, const struct pm_run *run,
				 bool wake, uint64_t *adv)
{
	enum uffd_class c;

	c = place(t, addr, run->len, PG, run->src == PM_DATA ? run->pf->base + run->off : NULL,
		  run->src == PM_POISON, wake, adv);
	if (run->src == PM_DATA && (c == UC_DONE || c == UC_PARTIAL))
		pages_note_mapped(run->pf, run->off, *adv);
	model_clear(&t->map, addr, addr + *adv);
	return c;
}

/*
 * Copy [ADDR, ADDR+LEN) of area V (all pages missing) from the images.
 * Returns the class that stopped it: UC_DONE when all is in.
 */
enum uffd_class serve_range(struct target *t, struct area *v, uint64_t addr,
				   uint64_t len, bool wake)
{
	const struct pagemap *pm = t->img->task.pm;

	if (v && v->hshift)
		return serve_huge(t, v, addr, len, wake);
	while (len) {
		struct pm_run run;
		enum uffd_class c;
		uint64_t adv;

		pagemap_resolve(pm, area_img_addr(v, addr), len, &run);
		c = place_run(t, addr, &run, wake, &adv);
		addr += adv;
		len -= adv;
		if (!serve_placed(c))
			return c;
	}
	return UC_DONE;
}

/*
 * SERVE_READ_MAX bytes to read cold image pages into: one read-write
 * anonymous mapping, made on first use.
 */
static void *read_buf(struct daemon *d)
{
	void *p;

	if (d->rbuf)
		return d->rbuf;
	p = mmap(NULL, SERVE_READ_MAX, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	d->rbuf = p;
	return p;
}

/*
 * Copy the faulting run [ADDR, ADDR+LEN) of area V, woken. A copy from an
 * image page that this daemon never mapped takes the kernel's slow path: it
 * fails with page faults disabled, drops its locks, faults the page in here
 * (with fault-around) and copies again. Reading a short run into a buffer
 * first and copying from that costs less at the tail (a handler on the
 * faulter's CPU, random pages of a cached 1 GiB file: 0.1-0.9 us less at
 * the median, 6-8 us less at the 90th percentile). Not everywhere at the
 * median: on a 2-core VM where a syscall costs more, the daemon answered
 * such faults 0.8 us slower at the median this way (1.35-1.40x the floor of
 * bench measure 1 against 1.27-1.30x copying from the mapping) but 3-5 us
 * faster at the 99th percentile (1.33-1.44x against 1.56-1.85x); the pread
 * alone is 1.8-2 us of the daemon's time there. The tail decides. Longer
 * runs, and pages the daemon has mapped (pages_mapped), are copied from
 * the mapping.
 */
static enum uffd_class serve_woken(struct target *t, struct area *v, uint64_t addr, uint64_t len)
{
	struct pm_run run;
	enum uffd_class c;
	uint64_t adv;
	void *buf;

	if (!v || v->hshift || len > SERVE_READ_MAX)
		return serve_range(t, v, addr, len, true);
	pagemap_resolve(t->img->task.pm, area_img_addr(v, addr), len, &run);
	if (run.src != PM_DATA || pages_mapped(run.pf, run.off, run.len) ||
	    !(buf = read_buf(t->d)) || pages_pread(run.pf, run.off, run.len, buf) < 0) {
		/* As serve_range would, without resolving the first run again. */
		c = place_run(t, addr, &run, true, &adv);
	} else {
		c = place(t, addr, run.len, PG, buf, false, true, &adv);
		if (c == UC_DONE || c == UC_PARTIAL)
			t->d->tot.pages_read += adv / PG;
		model_clear(&t->map, addr, addr + adv);
	}
	/* A page already there is in, as serve_range says: the rest of the window goes on. */
	if (!serve_placed(c) || adv == len)
		return c == UC_EXISTS ? UC_DONE : c;
	return serve_range(t, v, addr + adv, len - adv, true);
}

/*
 * Answer a page that the model has no data for: a zero page. UC_EXISTS means
 * it was already there (placed after the fault was queued); its waiters are woken.
 */
enum uffd_class serve_zero(struct target *t, uint64_t page)
{
	uint64_t adv;

	return serve_place(t, page, PG, NULL, true, &adv);
}

/*
 * Zero the image holes among the served-or-zero pages of [ADDR, ADDR+LEN):
 * a neighbour of a fault that would otherwise fault on its own. A page the
 * process already has answers EEXIST and is left alone.
 */
static void zero_holes(struct target *t, struct area *v, uint64_t addr, uint64_t len)
{
	const struct pagemap *pm = t->img->task.pm;

	if (v->hshift)
		return;	/* no zero page for hugetlb; each faults on its own */
	while (len && !t->dead) {
		struct pm_run run;
		uint64_t adv;

		pagemap_resolve(pm, area_img_addr(v, addr), len, &run);
		if (run.src != PM_HOLE) {
			adv = run.len;
		} else if (!serve_placed(serve_place(t, addr, run.len, NULL, false, &adv))) {
			return;	/* the fault itself is answered; the rest can wait */
		}
		addr += adv;
		len -= adv;
	}
}

/*
 * The window for a fault at PAGE of V, in bytes, from WMAX down to one page.
 * A fault at or just past where the last window of V ended, or just past the
 * background fill's cursor FILL (a scan that outran either), doubles the
 * window; a fault a little before that end (a scan inside what the window
 * skipped, or two threads interleaved) keeps its size; any other fault is
 * random access and gets one page, because every page copied before the wake
 * is latency that the faulting thread pays.
 */
static uint64_t fault_window(const struct area *v, uint64_t page, uint64_t fill, uint64_t wmax)
{
	uint64_t w = v->seq_win ? v->seq_win : PG, front = v->seq_next;

	if (!front)
		return PG;
	if (fill > front && fill <= v->end)
		front = fill;
	if (page >= v->seq_next && page < front + 2 * w)
		return w < wmax ? 2 * w : wmax;
	if (page < v->seq_next && v->seq_next - page <= w)
		return w;
	return PG;
}

/*
 * Replaying a working-set record (wset.h): after a fault at recorded image
 * address IMG, place quietly what the record says the process touched next,
 * up to a fill chunk, so that it finds those pages in rather than faulting on
 * each (it reads faster than any fill can place ahead of it).
 */
static void serve_record_after(struct target *t, uint64_t img)
{
	uint64_t a, n, budget = t->d->o.fill_chunk;
	size_t k;

	if (!wset_find(t, img, &k))
		return;
	k++;
	while (budget && !t->dead && (n = wset_next_from(t, &k, budget, &a))) {
		uint64_t copied = t->st.pages_copied;
		enum uffd_class c = serve_range(t, model_find(&t->map, a), a, n, false);

		wset_placed(t, t->st.pages_copied - copied);
		budget -= n < budget ? n : budget;
		if (c != UC_DONE)
			break;
	}
}

/*
 * Serve one fault with a window around it: the faulting run first, woken;
 * the rest quietly. Adaptive (the default): the window starts at the fault
 * and grows with sequential faults (fault_window). Fixed: the aligned
 * window of --fault-window that holds the fault.
 */
static enum uffd_class serve_fault(struct target *t, uint64_t addr, bool *waiting)
{
	uint64_t page = addr & ~(PG - 1), w = t->d->o.fault_window;
	uint64_t ws, we, a;
	struct area *v = model_find(&t->map, page);
	bool missing = v && area_is_missing(v, page);
	enum uffd_class c;

	(void)waiting;	/* the images are here: nothing waits */

	if (v && !t->d->o.fixed_window) {
		w = fault_window(v, page, t->fill_cursor, w);
		ws = page;
	} else {
		ws = page & ~(w - 1);
	}
	we = ws + w;
	if (v && (we > v->end || we < ws))
		we = v->end;
	if (!missing && v && v->hshift) {
		/* A huge page dropped, or never with data: zeros, the whole huge page. */
		c = place_huge(t, v, page & ~((1ull << v->hshift) - 1), true, true);
		return c == UC_EXISTS ? UC_DONE : c;
	} else if (!missing) {
		c = serve_zero(t, page);
		/* Already there: a fault that raced with our own window; the window is done. */
		if (c == UC_EXISTS || c == UC_PARTIAL)
			return UC_DONE;
	} else {
		wset_note(t, area_img_addr(v, page));
		c = serve_woken(t, v, page, area_run(v, page, we - page, true));
	}
	if (c != UC_DONE || !v)
		return c;
	v->seq_next = we;
	v->seq_win = w;
	if (ws < v->start)
		ws = v->start;
	/*
	 * Best effort for the rest of the window: the fault itself is
	 * answered. A window of that one page (random access) has no rest.
	 */
	for (a = we - ws > PG ? ws : we; a < we && !t->dead;) {
		uint64_t n = area_run(v, a, we - a, true);

		if (n) {
			if (serve_range(t, v, a, n, false) != UC_DONE)
				break;
		} else {
			n = area_run(v, a, we - a, false);
			zero_holes(t, v, a, n);
		}
		a += n;
	}
	if (missing && t->ws)
		serve_record_after(t, area_img_addr(v, page));
	t->fill_cursor = we;
	return t->dead ? UC_GONE : UC_DONE;
}

/*
 * After a minor fault, map quietly the pages from A to the end of the fault
 * window that the object holds too, stopping at the first it does not (or
 * that is mapped already): a process reading memory a sharer placed then
 * faults once a window, not once a page. UFFDIO_CONTINUE never puts data
 * anywhere, so trying a page that is not in the object is harmless.
 */
static void continue_after(struct target *t, uint64_t a)
{
	struct area *v = model_find(&t->map, a - PG);
	uint64_t e = (a - PG + t->d->o.fault_window) & ~(t->d->o.fault_window - 1);
	struct uffd_result r;
	int64_t out = 0;
	int ret;

	if (!v || !v->shared)
		return;
	if (e > v->end)
		e = v->end;
	if (a >= e)
		return;
	ret = uffd_continue(t->uffd, a, e - a, false, &out);
	r = uffd_classify(ret == -EFAULT || ret == -EEXIST ? -EAGAIN : ret, out, e - a);
	if (r.cls != UC_DONE && r.cls != UC_PARTIAL)
		return;
	t->st.pages_continued += r.done / PG;
	t->d->tot.pages_continued += r.done / PG;
	model_clear(&t->map, a, a + r.done);
}

/*
 * A MINOR fault in shared memory: the page is in the shmem object (a sharer,
 * maybe this process before a fork, put it there) but not mapped here. Map
 * it as it is (UFFDIO_CONTINUE), whatever the model says: the object holds
 * the newest bytes, which any sharer may have written since, so the image
 * must never be copied there again (UFFDIO_COPY would fail with EEXIST
 * anyway): the page leaves the model.
 *
 * The rule for shared areas, then: a MISSING fault means the page is not in
 * the object, and is served as in private memory (UFFDIO_COPY from the
 * image puts it in the object for every sharer; a page the model has no
 * data for gets UFFDIO_ZEROPAGE); a MINOR fault means it is there, and is
 * only mapped. A page is placed in the object once; EEXIST from a copy
 * means a sharer was first, and the process then faults MINOR. A process
 * that shares with no one faults MINOR too, now and then: on a page that a
 * copy has put in the object and not yet mapped (seen here); the object
 * holds the image's bytes by then, and mapping them is right.
 */
static enum uffd_class serve_minor(struct target *t, uint64_t addr)
{
	uint64_t page = addr & ~(PG - 1);
	struct uffd_result r;
	int64_t out = 0;
	int ret;

	t->st.minor_faults++;
	t->d->tot.minor_faults++;
	ret = uffd_continue(t->uffd, page, PG, true, &out);
	if (ret == -EFAULT || ret == -EEXIST) {
		/*
		 * EEXIST: mapped already (two threads, one answer). EFAULT: the
		 * page left the object meanwhile (MADV_REMOVE by a sharer): the
		 * process faults again, MISSING this time.
		 */
		uffd_wake(t->uffd, page, PG);
		if (ret == -EEXIST)
			t->st.eexist++;
		return UC_DONE;
	}
	r = uffd_classify(ret, out, PG);
	if (r.cls == UC_DONE) {
		t->st.pages_continued++;
		t->d->tot.pages_continued++;
		model_clear(&t->map, page, page + PG);
		continue_after(t, page + PG);
	} else if (r.cls == UC_RETRY) {
		t->st.eagain++;
	} else if (r.cls == UC_STALE) {
		t->st.enoent++;
	} else if (r.cls == UC_BUG) {
		target_fail(t, page, ret, "UFFDIO_CONTINUE");
	}
	return r.cls;
}

/*
 * ENOENT on page A, which the model says is missing: is the page gone for
 * good? An mremap or munmap makes the kernel refuse the old place before
 * its event can be read, so ENOENT alone proves nothing: the pages must
 * stay missing until the events explain it. Only when ENOENT persists in
 * one area for STALE_NS with no event applied meanwhile (an area a forked
 * child did not inherit, MADV_DONTFORK) is it dropped. The time counts per
 * area: an area found stale must not make another one's ENOENT final at
 * once (that one may be an mremap whose event is still queued).
 */
bool serve_stale_for_good(struct target *t, uint64_t a)
{
	struct area *v = model_find(&t->map, a);
	uint64_t now = now_ns(), *since = v ? &v->stale_since : &t->stale_since;
	uint64_t *seq = v ? &v->stale_seq : &t->stale_seq;

	/* Each area its own clock: the fill going from one to another restarts neither. */
	if (!*since || *seq != t->ev_seq) {
		*since = now;
		*seq = t->ev_seq;
		return false;
	}
	return now - *since >= STALE_NS;
}

/*
 * Forget the page at A: it is no longer registered and no event says why
 * (stale_for_good). One line for the first; a client that unregistered a
 * whole area would otherwise log one per page. The total is logged when
 * the process leaves.
 */
void serve_drop_stale(struct target *t, uint64_t a)
{
	struct area *v;

	if (!t->stale_dropped++)
		log_warnx("%s 0x%" PRIx64 " is no longer registered and no event says why; "
			  "dropping that page from the model (more such pages are counted, not logged)",
			  t->pfx, a);
	v = model_find(&t->map, a);
	if (v && v->hshift)	/* a huge page goes whole, or it would stay half missing */
		a &= ~((1ull << v->hshift) - 1);
	model_clear(&t->map, a, a + (v && v->hshift ? 1ull << v->hshift : PG));
}

/* Keep the daemon's count of processes with parked faults. */
void serve_set_parked(struct target *t, bool parked)
{
	if (t->parked != parked)
		t->d->nr_parked += parked ? 1 : -1;
	t->parked = parked;
}

/* Remove the waiting faults on pages of [S, E) (placed with a wake): they are answered. */
void serve_faults_done(struct target *t, uint64_t s, uint64_t e)
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
 * Place fetched data held back by EAGAIN, then serve the queued faults in
 * order; stop at the first that must wait for a drain. In remote mode a
 * fault whose data is on its way stays queued, not parked.
 */
void serve_faults(struct target *t)
{
	size_t i, keep = 0;
	bool retry = false;

	if (t->src->place_held)
		retry = !t->src->place_held(t);
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
		c = f.minor ? serve_minor(t, f.addr) : t->src->fault(t, f.addr, &waiting);
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
	serve_set_parked(t, retry);
	if (retry)
		timer_arm(&t->d->loop, &t->retry, RETRY_NS, retry_timer);
	else if (t->map.nr_missing == 0)
		target_release(t);
	else if (!keep && !t->remote && daemon_fill_enabled(t->d))
		/*
		 * The fill skips a process with faults waiting, and stops asking
		 * for idle time when no process has fill work: now that these are
		 * answered, this one has again. With no fill (yet), the idle hook
		 * has nothing to do: asking for it would cost an epoll_wait that
		 * finds nothing after every fault the next one does not follow at
		 * once (whoever turns the fill on asks again).
		 */
		t->d->loop.idle_pending = true;
}

/* The short timer that makes sure parked faults never wait for a drain that does not come. */
static void retry_timer(struct timer *tm)
{
	struct target *t = container_of(tm, struct target, retry);

	if (!t->dead && (t->nr_faults || t->held))
		serve_faults(t);
}

static void soon_timer(struct timer *tm)
{
	struct target *t = container_of(tm, struct target, retry);

	if (!t->dead)
		serve_faults(t);
}

void serve_soon(struct target *t)
{
	timer_arm(&t->d->loop, &t->retry, 0, soon_timer);
}

/* Watch T's uffd again and read it: the event that found no fd free comes first. */
static void read_later_timer(struct timer *tm)
{
	struct target *t = container_of(tm, struct target, read_later);
	unsigned tries = t->read_tries;
	int ret;

	if (t->dead)
		return;
	if ((ret = loop_mod(&t->d->loop, &t->uffd_ev, EPOLLIN)) < 0)
		log_warnx("%s watch uffd again: %s", t->pfx, strerror(-ret));
	target_drain(t);
	if (!t->dead && !t->read_later.armed) {
		log_warnx("%s its uffd read again after %u tries: an fd was free", t->pfx, tries);
		t->read_tries = 0;
	}
}

void serve_read_later(struct target *t, int err)
{
	int ret;

	if (t->read_tries++ % READ_LATER_LOG == 0)
		log_warnx("%s no fd free for the new uffd of a fork event (%s; %u tries): the fork waits, its uffd is read again every %llu ms",
			  t->pfx, strerror(err), t->read_tries, READ_LATER_NS / 1000000);
	/* Still readable: watched, it would wake the loop at once, again and again. */
	if ((ret = loop_mod(&t->d->loop, &t->uffd_ev, 0)) < 0)
		log_warnx("%s unwatch uffd: %s", t->pfx, strerror(-ret));
	timer_arm(&t->d->loop, &t->read_later, READ_LATER_NS, read_later_timer);
}

void serve_retry_parked(struct daemon *d)
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

int serve_queue_fault(struct target *t, const struct uffd_msg *m)
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
		.t0 = t->last_fault_ns,	/* when apply_msg read it: one clock read a batch */
		.tid = m->arg.pagefault.feat.ptid,
		.minor = m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR,
	};
	return 0;
}

const struct page_source serve_from_images = { .name = "images", .fault = serve_fault };
