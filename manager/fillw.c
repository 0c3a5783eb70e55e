/* Fill workers: background-fill pages placed beside the event loop (fillw.h). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fill.h"
#include "fillw.h"
#include "log.h"
#include "proc.h"
#include "serve.h"

#define FW_SEGS		32	/* image runs in one job */
/*
 * Workers run at the lowest priority, so that a process woken from a fault
 * and the loop take their CPU at once (at nice 0 a woken faulter could wait
 * most of a time slice behind a worker: fault latency while filling was 10x
 * the loop's alone). A loop that must wait for a worker's piece lends it
 * nice 0 for the wait (with CAP_SYS_NICE; without it, it only yields), so
 * a busy machine cannot starve the loop through it.
 */
#define FW_NICE		19
#define FW_SPIN		256	/* pauses before the loop lends its priority */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

enum { W_IDLE, W_BUSY, W_DONE };

struct fw_seg {
	uint64_t addr, len;
	const uint8_t *src;	/* NULL: a hole of the images, placed as zero pages */
	const struct pages_file *pf;	/* SRC's file, and where in it */
	uint64_t off;
};

struct worker {
	struct fillw_pool *p;
	unsigned nap_us;	/* tests: sleep this long before each piece */
	atomic_int tid;		/* its thread id, once it runs */
	pthread_t th;
	/* The job: written by the loop while W_IDLE, read by the worker while W_BUSY. */
	struct target *t;	/* the loop's only */
	int uffd;
	uint64_t start, end;
	unsigned nseg;
	struct fw_seg seg[FW_SEGS];
	/* The report: written by the worker while W_BUSY, read by the loop once W_DONE. */
	uint64_t upto;		/* [start, upto) is in */
	uint64_t copied, zeroed, eexist;	/* bytes, bytes, pages */
	enum uffd_class cls;	/* what ended it early, UC_DONE if nothing */
	int ret;		/* and its -errno */
	atomic_int state;
	atomic_bool stop;
};

struct fillw_pool {
	struct daemon *d;
	pthread_mutex_t lock;	/* with cv: idle workers wait for a job or the end */
	pthread_cond_t cv;
	bool quit;
	int efd;		/* the doorbell: a job is done */
	struct ev ev;
	unsigned n;
	struct worker w[FILLW_MAX - 1];
};

/* Place one piece, halving it down to a page where the kernel's VMAs split the model's area. */
static enum uffd_class place(struct worker *w, uint64_t addr, const uint8_t *src, uint64_t len,
			     uint64_t *adv)
{
	for (;;) {
		int64_t out = 0;
		int ret = src ? uffd_copy(w->uffd, addr, src, len, true, &out) :
				uffd_zeropage(w->uffd, addr, len, true, &out);
		struct uffd_result r = uffd_classify(ret, out, len);

		*adv = r.done;
		w->ret = ret;
		if (r.cls == UC_STALE && len > PG) {
			len = (len / 2) & ~(PG - 1);
			continue;
		}
		if (r.cls == UC_EXISTS)
			*adv = PG;
		return r.cls;
	}
}

static void run_job(struct worker *w)
{
	unsigned retries = 0;

	w->copied = w->zeroed = w->eexist = 0;
	w->cls = UC_DONE;
	w->upto = w->start;
	for (unsigned i = 0; i < w->nseg; i++) {
		const struct fw_seg *s = &w->seg[i];

		for (uint64_t off = 0, adv; off < s->len; off += adv) {
			uint64_t len = s->len - off < FILLW_PIECE ? s->len - off : FILLW_PIECE;
			enum uffd_class c;

			if (w->nap_us)
				usleep(w->nap_us);
			if (atomic_load(&w->stop))
				return;
			c = place(w, s->addr + off, s->src ? s->src + off : NULL, len, &adv);
			/*
			 * Tests: a napping worker waits out EAGAIN (events pending)
			 * instead of ending its job, as a worker that retried would:
			 * only the quiesce before each read then keeps its next
			 * piece from landing after the zap of a REMOVE.
			 */
			if (c == UC_RETRY && w->nap_us && retries++ < 1000) {
				adv = 0;
				continue;
			}
			if (c == UC_EXISTS)
				w->eexist++;
			else if (c == UC_DONE || c == UC_PARTIAL)
				*(s->src ? &w->copied : &w->zeroed) += adv;
			else
				w->cls = c;
			if (!adv)
				return;
			w->upto = s->addr + off + adv;
		}
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct fillw_pool *p = w->p;
	uint64_t one = 1;
	pid_t tid = (pid_t)syscall(SYS_gettid);

	if (setpriority(PRIO_PROCESS, (id_t)tid, FW_NICE) < 0)
		log_warn("fill worker: nice %d", FW_NICE);
	atomic_store(&w->tid, tid);
	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (atomic_load(&w->state) != W_BUSY && !p->quit)
			pthread_cond_wait(&p->cv, &p->lock);
		if (atomic_load(&w->state) != W_BUSY)
			break;
		pthread_mutex_unlock(&p->lock);
		run_job(w);
		atomic_store_explicit(&w->state, W_DONE, memory_order_release);
		if (write(p->efd, &one, sizeof(one)) != sizeof(one)) {
			/* Only an overflowing counter fails, and then it is readable anyway. */
		}
		pthread_mutex_lock(&p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* Take a finished job's report into its target's model and counters. */
static struct target *apply(struct worker *w)
{
	struct target *t = w->t;
	uint64_t pages = w->upto > w->start ? (w->upto - w->start) / PG : 0;

	model_clear(&t->map, w->start, w->upto);
	/* What it copied it mapped here: faults there copy from the mapping (serve.c). */
	for (unsigned i = 0; i < w->nseg; i++) {
		const struct fw_seg *g = &w->seg[i];

		if (g->pf && g->addr < w->upto)
			pages_note_mapped(g->pf, g->off,
					  (w->upto < g->addr + g->len ? w->upto : g->addr + g->len) -
					  g->addr);
	}
	t->st.pages_copied += w->copied / PG;
	t->st.pages_zeroed += w->zeroed / PG;
	t->d->tot.pages_copied += w->copied / PG;
	t->d->tot.pages_zeroed += w->zeroed / PG;
	t->st.eexist += w->eexist;
	if (w->cls == UC_RETRY)
		t->st.eagain++;
	else if (w->cls == UC_STALE)
		t->st.enoent++;
	/*
	 * ENOENT, EAGAIN or worse: the loop's own fill meets it next and does
	 * what it always does (waits for the events, drops pages no longer
	 * registered, kills); workers would only meet it again, as fast as
	 * they can.
	 */
	if (w->cls != UC_DONE)
		t->fw_hold = true;
	if (w->cls == UC_BUG)
		log_warnx("%s fill worker: unexpected %s at 0x%" PRIx64 " (the loop places those pages itself)",
			  t->pfx, strerror(-w->ret), w->upto);
	else if (w->cls != UC_DONE)
		log_debug("%s fill worker stopped at 0x%" PRIx64 " (%s) after %" PRIu64 " pages",
			  t->pfx, w->upto, uffd_class_name(w->cls), pages);
	t->fw_jobs--;
	t->fw_claimed -= (w->end - w->start) / PG;
	w->t = NULL;
	atomic_store(&w->state, W_IDLE);
	return t;
}

void fillw_quiesce(struct target *t)
{
	struct fillw_pool *p = t->d->fw;
	bool lent = false;

	if (!t->fw_jobs)
		return;
	for (unsigned i = 0; i < p->n; i++) {
		struct worker *w = &p->w[i];

		if (w->t != t)
			continue;
		atomic_store(&w->stop, true);
		/* At most one piece: spin, then lend it our priority and let it have our CPU. */
		for (unsigned k = 0; atomic_load_explicit(&w->state, memory_order_acquire) == W_BUSY; k++) {
			if (k < FW_SPIN) {
				cpu_relax();
				continue;
			}
			if (k == FW_SPIN && !lent && atomic_load(&w->tid))
				lent = setpriority(PRIO_PROCESS, (id_t)atomic_load(&w->tid), 0) == 0;
			sched_yield();
		}
		if (lent)
			setpriority(PRIO_PROCESS, (id_t)atomic_load(&w->tid), FW_NICE);
		lent = false;
		apply(w);
	}
}

uint64_t fillw_busy_end(const struct target *t, uint64_t addr)
{
	struct fillw_pool *p = t->d->fw;

	if (!t->fw_jobs)
		return 0;
	for (unsigned i = 0; i < p->n; i++)
		if (p->w[i].t == t && addr >= p->w[i].start && addr < p->w[i].end)
			return p->w[i].end;
	return 0;
}

uint64_t fillw_clip(const struct target *t, uint64_t addr, uint64_t len)
{
	struct fillw_pool *p = t->d->fw;

	if (!t->fw_jobs)
		return len;
	for (unsigned i = 0; i < p->n; i++)
		if (p->w[i].t == t && p->w[i].start > addr && p->w[i].start - addr < len)
			len = p->w[i].start - addr;
	return len;
}

/* The first missing page of T at or after FROM that no job holds. */
static bool next_unclaimed(const struct target *t, uint64_t from, uint64_t *a)
{
	uint64_t e;

	while (model_next_missing(&t->map, from, a)) {
		if (!(e = fillw_busy_end(t, *a)))
			return true;
		from = e;
	}
	return false;
}

bool fillw_next(const struct target *t, uint64_t *a)
{
	return next_unclaimed(t, t->fill_cursor, a) || next_unclaimed(t, 0, a);
}

/* Carve a job for W out of T's missing pages at A; false if there is none. */
static bool carve(struct worker *w, struct target *t, uint64_t a)
{
	const struct pagemap *pm = t->img->task.pm;
	struct area *v = model_find(&t->map, a);
	uint64_t n, end;

	/*
	 * Normal 4 KiB private pages only. Hugetlb pages go whole and shared
	 * memory pages are the object's, met by every sharer (EEXIST is
	 * normal there): both are the loop's (serve_range knows them).
	 */
	if (!v || v->hshift || v->shared)
		return false;
	n = fillw_clip(t, a, area_run(v, a, FILLW_JOB, true));
	if (!n)
		return false;
	end = a + n;
	w->nseg = 0;
	w->start = a;
	while (a < end && w->nseg < FW_SEGS) {
		struct pm_run run;

		pagemap_resolve(pm, area_img_addr(v, a), end - a, &run);
		/* Data or zeros only: anything else is the loop's (serve_range knows it). */
		if (run.src != PM_DATA && run.src != PM_HOLE)
			break;
		w->seg[w->nseg++] = (struct fw_seg){
			.addr = a,
			.len = run.len,
			.src = run.src == PM_DATA ? run.pf->base + run.off : NULL,
			.pf = run.src == PM_DATA ? run.pf : NULL,
			.off = run.off,
		};
		a += run.len;
	}
	w->end = a;
	return w->nseg > 0;
}

unsigned fillw_feed(struct daemon *d, struct target *t)
{
	struct fillw_pool *p = d->fw;
	unsigned given = 0;

	if (!p || t->remote || t->dead || t->fw_hold)
		return 0;
	for (unsigned i = 0; i < p->n; i++) {
		struct worker *w = &p->w[i];
		uint64_t a;

		if (atomic_load(&w->state) != W_IDLE)
			continue;
		if (!fillw_next(t, &a) || !carve(w, t, a))
			break;
		w->t = t;
		w->uffd = t->uffd;
		atomic_store(&w->stop, false);
		t->fw_jobs++;
		t->fw_claimed += (w->end - w->start) / PG;
		t->fill_cursor = w->end;
		pthread_mutex_lock(&p->lock);
		atomic_store(&w->state, W_BUSY);
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->lock);
		given++;
	}
	return given;
}

/* The doorbell: apply every finished job, let go of processes now fully in, hand out more. */
static void on_done(struct ev *ev, uint32_t events)
{
	struct fillw_pool *p = container_of(ev, struct fillw_pool, ev);
	uint64_t n;

	(void)events;
	if (read(p->efd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_warn("fill worker eventfd");
	for (unsigned i = 0; i < p->n; i++) {
		struct worker *w = &p->w[i];
		struct target *t;

		if (atomic_load_explicit(&w->state, memory_order_acquire) != W_DONE)
			continue;
		t = apply(w);
		if (!t->dead && !t->fw_jobs && !t->map.nr_missing && !t->nr_faults)
			target_release(t);
	}
	fill_feed(p->d);
	p->d->loop.idle_pending = true;
}

int fillw_start(struct daemon *d, unsigned n)
{
	struct fillw_pool *p;
	const char *nap = getenv("UFFD_TEST_FILLW_NAP_US");
	int ret;

	if (n <= 1)
		return 0;
	if (nap)
		log_warnx("UFFD_TEST_FILLW_NAP_US=%s: fill workers sleep before each piece (a test)", nap);
	if (!(p = calloc(1, sizeof(*p))))
		return -ENOMEM;
	p->d = d;
	p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->efd < 0) {
		ret = -errno;
		free(p);
		return ret;
	}
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cv, NULL);
	ret = loop_add(&d->loop, &p->ev, p->efd, EPOLLIN, on_done);
	/* The signals the daemon takes through its signalfd are blocked here already, and so in them. */
	/*
	 * SCHED_OTHER whatever the daemon runs under (a real-time daemon's
	 * workers would otherwise take the CPU from the processes it serves),
	 * then nice 19 (worker_main).
	 */
	pthread_attr_t attr;
	struct sched_param sp = { .sched_priority = 0 };

	pthread_attr_init(&attr);
	pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
	pthread_attr_setschedpolicy(&attr, SCHED_OTHER);
	pthread_attr_setschedparam(&attr, &sp);
	for (unsigned i = 0; !ret && i < n - 1; i++) {
		p->w[i].p = p;
		p->w[i].nap_us = nap ? (unsigned)strtoul(nap, NULL, 10) : 0;
		atomic_init(&p->w[i].state, W_IDLE);
		if ((ret = -pthread_create(&p->w[i].th, &attr, worker_main, &p->w[i])) == 0)
			p->n++;
	}
	pthread_attr_destroy(&attr);
	d->fw = p;
	d->fds_in_use++;
	if (ret < 0) {
		fillw_stop(d);
		return ret;
	}
	return 0;
}

unsigned fillw_count(const struct daemon *d)
{
	return d->fw ? d->fw->n + 1 : 1;
}

void fillw_stop(struct daemon *d)
{
	struct fillw_pool *p = d->fw;

	if (!p)
		return;
	for (struct target *t = d->targets; t; t = t->next)
		fillw_quiesce(t);
	pthread_mutex_lock(&p->lock);
	p->quit = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->n; i++)
		pthread_join(p->w[i].th, NULL);
	loop_del(&d->loop, &p->ev);
	close(p->efd);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->lock);
	d->fds_in_use--;
	d->fw = NULL;
	free(p);
}
