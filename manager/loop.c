/* The event loop. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"

#define LOOP_BATCH	64

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

int loop_init(struct loop *l)
{
	*l = (struct loop){ .hot_share_ns = LOOP_HOT_SHARE_NS };
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	return l->epfd < 0 ? -errno : 0;
}

/* Run and forget the deferred frees. */
static void run_deferred(struct loop *l)
{
	while (l->dead) {
		struct deferred *d = l->dead;

		l->dead = d->next;
		d->fn(d->p);
		free(d);
	}
}

void loop_fini(struct loop *l)
{
	run_deferred(l);
	if (l->epfd >= 0)
		close(l->epfd);
	l->epfd = -1;
}

int loop_add(struct loop *l, struct ev *ev, int fd, uint32_t events, ev_fn fn)
{
	struct epoll_event ee = { .events = events, .data.ptr = ev };

	ev->fd = fd;
	ev->fn = fn;
	ev->dead = false;
	return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ee) ? -errno : 0;
}

int loop_mod(struct loop *l, struct ev *ev, uint32_t events)
{
	struct epoll_event ee = { .events = events, .data.ptr = ev };

	return epoll_ctl(l->epfd, EPOLL_CTL_MOD, ev->fd, &ee) ? -errno : 0;
}

void loop_del(struct loop *l, struct ev *ev)
{
	if (ev->fd >= 0 && !ev->dead)
		epoll_ctl(l->epfd, EPOLL_CTL_DEL, ev->fd, NULL);
	ev->dead = true;
	if (l->hot_ev == ev)
		l->hot_ev = NULL;	/* its owner may be freed at the end of the iteration */
}

void timer_cancel(struct loop *l, struct timer *t)
{
	struct timer **pp;

	if (!t->armed)
		return;
	for (pp = &l->timers; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	}
	t->armed = false;
}

void timer_arm(struct loop *l, struct timer *t, uint64_t delay_ns, timer_fn fn)
{
	struct timer **pp;

	timer_cancel(l, t);
	t->when = now_ns() + delay_ns;
	t->fn = fn;
	for (pp = &l->timers; *pp && (*pp)->when <= t->when; pp = &(*pp)->next)
		;
	t->next = *pp;
	*pp = t;
	t->armed = true;
}

void loop_defer(struct loop *l, void (*fn)(void *p), void *p)
{
	struct deferred *d = malloc(sizeof(*d));

	if (!d)
		fatal("out of memory deferring a free");
	d->fn = fn;
	d->p = p;
	d->next = l->dead;
	l->dead = d;
}

/* Fire every timer whose deadline has passed. */
static void run_timers(struct loop *l)
{
	uint64_t now = now_ns();

	while (l->timers && l->timers->when <= now) {
		struct timer *t = l->timers;

		l->timers = t->next;
		t->armed = false;
		t->fn(t);
	}
}

/* Milliseconds until the next timer, rounded up; -1 without timers. */
static int next_timeout(struct loop *l)
{
	uint64_t now, ms;

	if (!l->timers)
		return -1;
	now = now_ns();
	if (l->timers->when <= now)
		return 0;
	ms = (l->timers->when - now + 999999) / 1000000;
	return ms > 60000 ? 60000 : (int)ms;
}

void loop_hot(struct loop *l, struct ev *ev, uint64_t now)
{
	l->hot_gap_ns = l->hot_ns ? now - l->hot_ns : UINT64_MAX;
	l->hot_ns = now;
	if (ev && ev->poll && !ev->dead)
		l->hot_ev = ev;
}

bool loop_hot_turn(const struct loop *l, uint64_t now, bool missed)
{
	return l->hot_ev && !l->hot_ev->dead && !missed && l->polled_n <= 1 &&
	       now - l->polled_ns < l->hot_share_ns;
}

/*
 * Poll for up to the spin window after the last hot work, if that work came
 * densely and nothing is due sooner; 0 when the window passed with nothing.
 * A poll reads the hot fd alone while loop_hot_turn allows, else asks
 * epoll; the CPU is yielded between polls. On a shared CPU the process
 * whose fault was just answered has mostly run and faulted again by the
 * first poll (its wake-up preempted us). Once that read finds nothing, the
 * rest of the spin asks epoll only, as before: a process on another CPU is
 * woken and faults some microseconds later, and reading its uffd over and
 * over meanwhile would only take the locks its fault needs.
 * -1: the hot fd had work, and its handler ran.
 */
static int spin_wait(struct loop *l, struct epoll_event *ee, int max_ms)
{
	uint64_t t0 = now_ns(), end = l->hot_ns + l->spin_ns, now = t0;
	bool missed = false;
	int n = 0;

	if (!l->spin_ns || l->hot_gap_ns > l->spin_ns || t0 >= end)
		return 0;
	if (l->timers && l->timers->when < end)
		end = l->timers->when;
	if (max_ms >= 0 && t0 + (uint64_t)max_ms * 1000000 < end)
		end = t0 + (uint64_t)max_ms * 1000000;
	l->spin.spins++;
	while (now < end) {
		struct ev *hot = l->hot_ev;

		if (loop_hot_turn(l, now, missed)) {
			l->spin.hot_polls++;
			if (hot->poll(hot)) {
				l->spin.hot_hits++;
				n = -1;
				break;
			}
			missed = true;
		} else {
			l->spin.waits++;
			n = epoll_wait(l->epfd, ee, LOOP_BATCH, 0);
			l->polled_ns = now;
			l->polled_n = n;
			if (n > 0)
				break;
			n = 0;	/* an error: the wait after the spin meets it again */
		}
		sched_yield();
		l->spin.yields++;
		now = now_ns();
	}
	l->spin.ns += now_ns() - t0;
	if (n)
		l->spin.hits++;
	return n;
}

/* How long the next wait may sleep, in ms: 0 with background work, -1 for ever. */
static int wait_ms(struct loop *l, int max_ms)
{
	int timeout = l->idle_pending ? 0 : next_timeout(l);

	if (max_ms >= 0 && (timeout < 0 || timeout > max_ms))
		timeout = max_ms;
	return timeout;
}

/* The rest of an iteration that handled N events: timers, hooks, deferred frees. */
static int loop_after(struct loop *l, int n)
{
	run_timers(l);
	if (l->before_sleep)
		l->before_sleep(l);
	/* Demand goes first: background work only when nothing was ready. */
	if (n == 0 && l->idle_pending && l->idle)
		l->idle_pending = l->idle(l);
	run_deferred(l);
	return n;
}

int loop_once(struct loop *l, int max_ms)
{
	struct epoll_event ee[LOOP_BATCH];
	/* About to sleep: poll a while first if faults are coming densely. */
	int n = wait_ms(l, max_ms) ? spin_wait(l, ee, max_ms) : 0;

	if (n < 0)
		return loop_after(l, 1);	/* the hot fd's handler ran */
	if (n == 0) {
		l->spin.waits++;
		n = epoll_wait(l->epfd, ee, LOOP_BATCH, wait_ms(l, max_ms));
		l->polled_ns = now_ns();
		l->polled_n = n;
	}
	if (n < 0 && errno != EINTR)
		return -errno;
	if (n < 0)
		n = 0;
	for (int i = 0; i < n; i++) {
		struct ev *ev = ee[i].data.ptr;
		uint32_t events = ee[i].events;

		if (events & (EPOLLERR | EPOLLHUP))
			events |= EPOLLIN;
		if (!ev->dead)
			ev->fn(ev, events);
	}
	return loop_after(l, n);
}

int loop_run(struct loop *l)
{
	while (!l->stop) {
		int n = loop_once(l, -1);

		if (n < 0)
			return n;
	}
	return 0;
}
