/*
 * A small epoll event loop: handlers, one-shot timers, an idle hook for
 * background work, and frees deferred to the end of an iteration so that
 * one handler may tear down another whose event is in the same batch.
 */
#ifndef UFFD_LOOP_H
#define UFFD_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct ev;
typedef void (*ev_fn)(struct ev *ev, uint32_t events);

/* Embed in the owner; find the owner back with container_of. */
struct ev {
	int fd;
	ev_fn fn;
	/*
	 * Optional, set by the owner (loop_add leaves it): do what FN would
	 * if the fd had something, without waiting; true if it had. The
	 * spin reads the hot fd through it (loop_hot).
	 */
	bool (*poll)(struct ev *ev);
	bool dead;		/* removed: ignore events still in the batch */
};

struct timer;
typedef void (*timer_fn)(struct timer *t);

struct timer {
	struct timer *next;
	uint64_t when;		/* CLOCK_MONOTONIC ns */
	timer_fn fn;
	bool armed;
};

struct deferred {
	struct deferred *next;
	void (*fn)(void *p);
	void *p;
};

struct loop {
	int epfd;
	bool stop;
	struct timer *timers;	/* sorted by deadline */
	struct deferred *dead;
	/* Called before sleeping, after every handler of the batch ran. */
	void (*before_sleep)(struct loop *l);
	/* Background work: called only when no event is ready; returns true while there is more. */
	bool (*idle)(struct loop *l);
	bool idle_pending;	/* set by anyone who gives the idle hook new work */
	/*
	 * Busy polling. Waking a sleeping thread costs more than a fault's whole
	 * service on some machines, the more so across cores. While the work
	 * that loop_hot() reports comes at most SPIN_NS apart, the loop polls
	 * for up to SPIN_NS after the last of it instead of sleeping, yielding
	 * the CPU between polls. Idle, it sleeps. 0: never poll.
	 */
	uint64_t spin_ns;
	uint64_t hot_ns;	/* when loop_hot() was last called */
	uint64_t hot_gap_ns;	/* between its last two calls */
	/*
	 * The fd of the last hot work (one with a poll hook), polled alone by
	 * the spin: the process whose fault was just answered faults next
	 * more often than not, and reading its uffd at once spares the
	 * epoll_wait that would find it (two of them on one CPU, with the
	 * empty one before the yield). epoll looks at every fd all the same
	 * once a poll of the hot fd found nothing (for the rest of that
	 * spin), and at the latest hot_share_ns after it last looked
	 * (loop_hot_turn).
	 */
	struct ev *hot_ev;
	uint64_t hot_share_ns;	/* LOOP_HOT_SHARE_NS (loop_init); tests may change it */
	uint64_t polled_ns;	/* when epoll last looked at every fd */
	int polled_n;		/* what it found then: with two or more ready, no fd goes alone */
	struct loop_spin_stats {
		uint64_t spins;		/* polling periods */
		uint64_t hits;		/* ... that ended with an event */
		uint64_t ns;		/* time spent polling */
		uint64_t waits;		/* epoll_wait calls, these and the others */
		uint64_t hot_polls;	/* polls of the hot fd alone */
		uint64_t hot_hits;	/* ... that found work */
		uint64_t yields;	/* sched_yield calls between polls */
	} spin;
};

/*
 * The longest the spin reads the hot fd alone, without epoll looking at
 * the others: what one process faulting back to back adds, at most (plus
 * one handler's run), to the wait of every other fd.
 */
#define LOOP_HOT_SHARE_NS	(50 * 1000ull)

#define container_of(ptr, type, member)                                        \
	((type *)((char *)(ptr) - __builtin_offsetof(type, member)))

uint64_t now_ns(void);

int loop_init(struct loop *l);
void loop_fini(struct loop *l);
/* Watch FD for EVENTS (EPOLLIN, ...); EPOLLERR/EPOLLHUP always arrive as EPOLLIN too. */
int loop_add(struct loop *l, struct ev *ev, int fd, uint32_t events, ev_fn fn);
void loop_del(struct loop *l, struct ev *ev);
/* Change what FD of EV is watched for. */
int loop_mod(struct loop *l, struct ev *ev, uint32_t events);
void timer_arm(struct loop *l, struct timer *t, uint64_t delay_ns, timer_fn fn);
void timer_cancel(struct loop *l, struct timer *t);
/* Run FN(P) once the current iteration is over. */
void loop_defer(struct loop *l, void (*fn)(void *p), void *p);
/*
 * One iteration: wait for events at most MAX_MS (-1: until the next timer),
 * run their handlers, due timers, the hooks and deferred frees. Returns the
 * number of events handled or -errno. Lets tests and fuzzers drive the loop.
 */
int loop_once(struct loop *l, int max_ms);
/*
 * Latency-critical work was just done (a fault answered) for EV, or NULL, at
 * NOW (now_ns(), which the caller has read anyway): see spin_ns, hot_ev.
 */
void loop_hot(struct loop *l, struct ev *ev, uint64_t now);
/*
 * Whether the spin's next poll, at NOW, may read the hot fd alone rather
 * than ask epoll about every fd: only while epoll looked less than
 * hot_share_ns ago and found at most one fd ready (others ready then go
 * first, however many), and no poll of the hot fd in this spin (MISSED)
 * found it without work.
 */
bool loop_hot_turn(const struct loop *l, uint64_t now, bool missed);
/* Run until loop.stop is set. Returns 0 or -errno on an epoll failure. */
int loop_run(struct loop *l);

#endif
