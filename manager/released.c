/* Read the uffd of a fully served process until it exits (released.h says why). */
#include <errno.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "released.h"
#include "target.h"
#include "uffd.h"

#define PG		4096ull
#define MSG_BATCH	64

static void released_free(struct released *r)
{
	struct daemon *d = r->d;
	struct released **pp;
	struct jrec rec = { .type = J_END, .fd = { -1, -1, -1 }, .id = r->id };

	target_journal(d, &rec);	/* before its fds close: their numbers may be reused */
	for (pp = &d->released; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	}
	loop_del(&d->loop, &r->uffd_ev);
	loop_del(&d->loop, &r->pid_ev);
	close(r->uffd);
	close(r->pidfd);
	d->nr_released--;
	d->fds_in_use -= 2;
	if (!d->nr_targets && !d->nr_released)
		journal_reset(&d->journal);	/* nothing left for a new daemon to take back */
	loop_defer(&d->loop, free, r);
}

/* Let go every queued message. Returns false if the uffd cannot be read any more. */
static bool drain(struct released *r)
{
	struct uffd_msg msgs[MSG_BATCH];

	for (;;) {
		ssize_t n = read(r->uffd, msgs, sizeof(msgs));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return true;
		if (n <= 0) {
			log_warn("pid %d (served): read uffd", r->pid);
			return false;
		}
		for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++) {
			const struct uffd_msg *m = &msgs[i];

			r->events++;
			if (m->event == UFFD_EVENT_FORK) {
				/* Its memory is complete and its uffd is ours alone: release it. */
				close((int)m->arg.fork.ufd);
				log_debug("pid %d (served): a fork picked up before release; its child needs nothing",
					  r->pid);
			} else if (m->event == UFFD_EVENT_PAGEFAULT) {
				/*
				 * Every page of the model is in, so a fault here is on memory
				 * the images never held (an area still registered that
				 * unregister_rest could not see): it reads zero, as
				 * serve.c would answer it. Already there: just wake.
				 */
				uint64_t page = m->arg.pagefault.address & ~(PG - 1);
				int64_t out;

				if (uffd_zeropage(r->uffd, page, PG, true, &out) < 0)
					uffd_wake(r->uffd, page, PG);
			}
		}
		if ((size_t)n < sizeof(msgs))
			return true;
	}
}

static void on_uffd(struct ev *ev, uint32_t events)
{
	struct released *r = container_of(ev, struct released, uffd_ev);

	(void)events;
	if (!drain(r))
		released_free(r);
}

static void on_exit_(struct ev *ev, uint32_t events)
{
	struct released *r = container_of(ev, struct released, pid_ev);

	(void)events;
	if (r->events)
		log_debug("pid %d (served): exited; %" PRIu64 " events read after release",
			  r->pid, r->events);
	released_free(r);
}

int released_keep(struct daemon *d, int uffd, int pidfd, pid_t pid, uint64_t id)
{
	struct released *r = calloc(1, sizeof(*r));
	int ret;

	if (!r) {
		struct jrec rec = { .type = J_END, .fd = { -1, -1, -1 }, .id = id };

		target_journal(d, &rec);
		close(uffd);
		close(pidfd);
		return -ENOMEM;
	}
	*r = (struct released){ .d = d, .uffd = uffd, .pidfd = pidfd, .pid = pid, .id = id,
				.since = now_ns() };
	if (loop_add(&d->loop, &r->uffd_ev, uffd, EPOLLIN, on_uffd) < 0 ||
	    loop_add(&d->loop, &r->pid_ev, pidfd, EPOLLIN, on_exit_) < 0) {
		struct jrec rec = { .type = J_END, .fd = { -1, -1, -1 }, .id = id };

		ret = -errno;
		target_journal(d, &rec);
		loop_del(&d->loop, &r->uffd_ev);
		close(uffd);
		close(pidfd);
		free(r);
		return ret;
	}
	r->next = d->released;
	d->released = r;
	d->last_release_ns = r->since;
	d->nr_released++;
	d->fds_in_use += 2;
	return 0;
}

void released_close_all(struct daemon *d)
{
	while (d->released) {
		drain(d->released);
		released_free(d->released);
	}
}
