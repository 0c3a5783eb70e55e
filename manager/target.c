/* Taking a process over and following its uffd: model, registration, events (target.h). */
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

#include "fillw.h"
#include "journal.h"
#include "log.h"
#include "procfs.h"
#include "serve.h"
#include "target.h"
#include "uffd.h"
#include "wset.h"

#define MSG_BATCH	JOURNAL_RBUF	/* the journal's read buffer */

static void target_on_uffd(struct ev *ev, uint32_t events);
static bool target_poll_uffd(struct ev *ev);
static void target_on_pidfd(struct ev *ev, uint32_t events);
static void target_set_pid_from_tid(struct target *t, pid_t tid);


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

/* A new id for a process, kept in the journal too (a new daemon goes on from there). */
static uint64_t target_new_id(struct daemon *d)
{
	uint64_t id = ++d->next_target_id;

	if (d->journal.h)
		d->journal.h->next_id = id;
	return id;
}

/* Append a record of T's to the journal. */
static void target_record(struct target *t, uint32_t type, int fd, uint64_t a0, uint64_t a1,
			  uint64_t a2)
{
	struct jrec r = { .type = type, .fd = { fd, -1, -1 }, .id = t->id, .a = { a0, a1, a2 } };

	target_journal(t->d, &r);
}

void target_journal(struct daemon *d, const struct jrec *r)
{
	if (journal_append(&d->journal, r) < 0 && !d->journal_full) {
		d->journal_full = true;
		log_warnx("the journal is full: a daemon started after this one dies could not rebuild the processes' memory, so it would kill them");
	}
}

/* Allocate a target around UFFD (with id ID, or a new one) and put it in the loop and the daemon's list. */
static struct target *target_alloc(struct daemon *d, int uffd, struct timage *img, uint64_t id)
{
	struct target *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->d = d;
	t->uffd = uffd;
	t->pidfd = -1;
	t->img = timage_get(img);
	model_init(&t->map);
	t->uffd_ev.poll = target_poll_uffd;
	if (fd_prepare(uffd) < 0 ||
	    loop_add(&d->loop, &t->uffd_ev, uffd, EPOLLIN, target_on_uffd) < 0) {
		timage_put(d, t->img);
		free(t);
		return NULL;
	}
	t->id = id ? id : target_new_id(d);
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

	if (ret == 0)
		t->pidfd = pidfd;
	return ret;
}

/* Model bytes of an area of LEN bytes: its node and its bitmap, as model.c allocates them. */
static uint64_t area_bytes(uint64_t len)
{
	uint64_t pages = len / MODEL_PAGE_SIZE;

	return sizeof(struct area) + (pages + 63) / 64 * sizeof(uint64_t);
}

/*
 * Lazy areas of TASK into MAP: VMAs holding PE_LAZY pages, each page missing
 * if the images hold its data, or, REMOTE, if a page server is to send it.
 * Refuses, by name, a model of more than TARGET_MAX_AREAS areas or
 * TARGET_MAX_MODEL_BYTES bytes before allocating it.
 */
static int model_build(struct model *map, const struct img_task *task, uint32_t image_id,
		       bool remote, char *reason, size_t len)
{
	const MmEntry *mm = task->mm;
	const struct pagemap *pm = task->pm;
	uint64_t bytes = 0;
	int ret;

	if (!mm || !pm) {
		snprintf(reason, len, "image %u has no memory images (a zombie?)", image_id);
		return -EINVAL;
	}
	for (size_t i = 0; i < mm->n_vmas; i++) {
		const VmaEntry *v = mm->vmas[i];
		unsigned hshift = vma_hshift(v->flags);
		bool lazy = false;
		uint64_t a;

		if (hshift && (hshift > 30 || ((v->start | v->end) & ((1ull << hshift) - 1)))) {
			snprintf(reason, len, "hugetlb VMA 0x%" PRIx64 "-0x%" PRIx64 " (flags 0x%x): bad page size or alignment",
				 v->start, v->end, v->flags);
			return -EINVAL;
		}
		for (a = v->start; a < v->end;) {
			struct pm_run run;

			/*
			 * A huge page is placed whole (UFFDIO_COPY of the huge page,
			 * MISSING mode on hugetlb), so its pages must share one source.
			 */
			if (hshift && pagemap_resolve_block(pm, a, 1ull << hshift, &run) < 0) {
				snprintf(reason, len,
					 "huge page 0x%" PRIx64 " of hugetlb VMA 0x%" PRIx64 "-0x%" PRIx64 " is only partly in the images (or partly lazy, poisoned or in the parent)",
					 a, v->start, v->end);
				return -EINVAL;
			}
			if (!hshift)
				pagemap_resolve(pm, a, v->end - a, &run);
			if ((run.flags & PE_LAZY) && hshift && remote) {
				snprintf(reason, len,
					 "lazy pages at 0x%" PRIx64 " in a hugetlb VMA: not supported with a page server",
					 a);
				return -ENOTSUP;
			}
			if (run.flags & PE_LAZY) {
				/* Anonymous (a hand-over's), or a memfd object's (a restore's). */
				bool shared = (v->status & VMA_ANON_SHARED ||
					       (v->status & (VMA_AREA_MEMFD | VMA_FILE_SHARED)) ==
					       (VMA_AREA_MEMFD | VMA_FILE_SHARED)) && !hshift;

				if (!lazy && shared && remote) {
					snprintf(reason, len,
						 "lazy pages at 0x%" PRIx64 " in shared anonymous memory: not supported with a page server",
						 a);
					return -ENOTSUP;
				}
				if (!lazy && !(v->status & VMA_ANON_PRIVATE) && !shared) {
					snprintf(reason, len,
						 "lazy pages at 0x%" PRIx64 " in a VMA that is not anonymous private (0x%" PRIx64 "-0x%" PRIx64 ", status 0x%x)",
						 a, v->start, v->end, v->status);
					return -EINVAL;
				}
				if (!lazy && map->nr_areas >= TARGET_MAX_AREAS) {
					snprintf(reason, len,
						 "more than %u lazy areas (a fixed limit on what one hand-over may make the daemon allocate)",
						 TARGET_MAX_AREAS);
					return -E2BIG;
				}
				if (!lazy && (bytes += area_bytes(v->end - v->start)) > TARGET_MAX_MODEL_BYTES) {
					snprintf(reason, len,
						 "the memory model would take more than %llu MiB (a fixed limit on what one hand-over may make the daemon allocate)",
						 TARGET_MAX_MODEL_BYTES >> 20);
					return -E2BIG;
				}
				if (!lazy && (ret = model_add_kind(map, v->start, v->end, v->start, hshift,
									shared)) < 0) {
					if (ret == -E2BIG)
						snprintf(reason, len,
							 "lazy VMA 0x%" PRIx64 "-0x%" PRIx64 " has %" PRIu64 " pages, over the limit of %llu (128 TiB)",
							 v->start, v->end, (uint64_t)((v->end - v->start) / MODEL_PAGE_SIZE),
							 (unsigned long long)MODEL_MAX_AREA_PAGES);
					else
						snprintf(reason, len, "cannot add the lazy VMA 0x%" PRIx64 "-0x%" PRIx64 " to the model: %s",
							 v->start, v->end, strerror(-ret));
					return ret;
				}
				lazy = true;
				if (run.src == PM_NODATA && !remote) {
					snprintf(reason, len,
						 "page 0x%" PRIx64 " is lazy but its data is not in the images",
						 a);
					return -EINVAL;
				}
				/* A page server has no way to say "poisoned": refuse
				 * rather than let it answer with the stand-in zeros. */
				if (run.src == PM_POISON && remote) {
					snprintf(reason, len,
						 "page 0x%" PRIx64 " is poisoned (unreadable at dump time): not supported with a page server",
						 a);
					return -ENOTSUP;
				}
				if (run.src == PM_DATA || run.src == PM_NODATA || run.src == PM_POISON)
					model_mark_missing(map, a, a + run.len);
			}
			a += run.len;
		}
	}
	return 0;
}

int timage_model(const struct timage *img, uint32_t image_id, bool remote, struct model *map,
		 char *reason, size_t reason_len)
{
	int ret;

	model_init(map);
	ret = model_build(map, &img->task, image_id, remote, reason, reason_len);
	if (ret < 0)
		model_free(map);
	return ret;
}

int timage_check(const struct timage *img, uint32_t image_id, bool remote, uint64_t *lazy,
		 char *reason, size_t reason_len)
{
	struct model m;
	int ret;

	ret = timage_model(img, image_id, remote, &m, reason, reason_len);
	*lazy = ret < 0 ? 0 : m.nr_missing;
	model_free(&m);
	return ret;
}

/* Register every lazy area; on failure unregister what was done. */
static int register_areas(struct target *t, char *reason, size_t len)
{
	struct area *v, *u;
	int ret;

	for (v = model_first(&t->map, 0); v; v = model_next(&t->map, v)) {
		ret = uffd_register(t->uffd, v->start, v->end - v->start, v->shared);
		if (ret < 0) {
			snprintf(reason, len, "cannot register 0x%" PRIx64 "-0x%" PRIx64 ": %s",
				 v->start, v->end, strerror(-ret));
			for (u = model_first(&t->map, 0); u != v; u = model_next(&t->map, u))
				uffd_unregister(t->uffd, u->start, u->end - u->start);
			return ret;
		}
	}
	return 0;
}

struct target *target_create(struct daemon *d, int uffd, int pidfd, pid_t pid,
			     uint32_t image_id, struct timage *img, bool registered,
			     const struct page_source *src, char *reason, size_t reason_len)
{
	return target_adopt(d, uffd, pidfd, pid, image_id, img, NULL, registered, src, 0, 0,
			    reason, reason_len);
}

struct target *target_adopt(struct daemon *d, int uffd, int pidfd, pid_t pid,
			    uint32_t image_id, struct timage *img, struct model *built,
			    bool registered, const struct page_source *src, uid_t uid, gid_t gid,
			    char *reason, size_t reason_len)
{
	struct target *t = target_alloc(d, uffd, img, 0);
	struct jrec hello = { .type = J_HELLO };
	int ret = 0;

	if (!t) {
		snprintf(reason, reason_len, "cannot watch the uffd: %s", strerror(errno));
		if (built)
			model_free(built);
		return NULL;
	}
	t->src = src;
	t->remote = src->remote;
	t->pid = pid;
	t->pid_confirmed = true;	/* from the kernel: SO_PEERCRED, SCM_CREDENTIALS or its pidfd */
	t->image_id = image_id;
	target_set_prefix(t);
	if (built) {
		/* Built by the loader thread: take it over, nothing is copied. */
		t->map = *built;
		model_init(built);
	} else {
		ret = model_build(&t->map, &t->img->task, t->image_id, t->remote, reason,
				  reason_len);
	}
	t->st.pages_total = t->map.nr_missing;
	if (ret < 0 ||
	    (!registered && register_areas(t, reason, reason_len) < 0) ||
	    target_watch_pid(t, pidfd) < 0) {
		if (!reason[0])
			snprintf(reason, reason_len, "cannot watch the pidfd: %s", strerror(errno));
		t->uffd = -1;	/* the caller still owns the fds */
		t->pidfd = -1;
		loop_del(&d->loop, &t->uffd_ev);
		target_destroy(t, NULL);
		return NULL;
	}
	t->live = true;
	/* From here on a new daemon can take it back (restart.h). */
	t->slot1 = journal_slot_get(&d->journal, t->id);
	hello.id = t->id;
	hello.fd[0] = uffd;
	hello.fd[1] = pidfd;
	hello.fd[2] = t->img->dirfd;
	hello.a[0] = (uint64_t)pid;
	hello.a[1] = image_id;
	hello.a[2] = (uint64_t)uid | (uint64_t)gid << 32;
	hello.a[3] = (src->remote ? JH_REMOTE : 0) | (d->mode == MODE_CRIU ? JH_CRIU : 0) |
		     (img->load_flags & IMG_LOAD_SHM_LAZY ? JH_SHM_LAZY : 0);
	hello.a[4] = t->slot1;
	target_journal(d, &hello);
	target_sync_slot(t);
	log_info("%s serving image %u: %zu areas, %" PRIu64 " lazy pages", t->pfx, image_id,
		 t->map.nr_areas, t->map.nr_missing);
	wset_start(t);
	if (t->map.nr_missing == 0) {
		serve_soon(t);	/* nothing to serve: released from the loop, not under the caller */
	} else {
		d->loop.idle_pending = true;
		if (!t->remote)
			timage_prefault(d, t->img);
	}
	return t;
}

void target_set_pid(struct target *t, pid_t pid, bool confirmed)
{
	struct target *c;
	int pidfd;

	if (t->pid || t->dead)
		return;
	/* Known only once it can be watched: a pid with no pidfd would be a guess no exit corrects. */
	pidfd = pidfd_open_(pid);
	if (pidfd < 0 || target_watch_pid(t, pidfd) < 0) {
		if (errno == ESRCH)	/* gone already: a vforked child's pid, say */
			log_debug("%s pid %d: gone before it could be watched", t->pfx, pid);
		else
			log_warn("%s pidfd_open %d", t->pfx, pid);
		if (pidfd >= 0)
			close(pidfd);
		return;
	}
	t->pid = pid;
	t->pid_confirmed = confirmed;
	timer_cancel(&t->d->loop, &t->probe);
	target_set_prefix(t);
	/* Children forked before we knew can now be matched to proc connector events. */
	for (c = t->d->targets; c; c = c->next)
		if (c->parent_id == t->id && !c->parent_pid) {
			c->parent_pid = pid;
			target_set_prefix(c);
		}
	target_record(t, J_PID, pidfd, (uint64_t)pid, 0, 0);
	log_debug("%s pid learned%s", t->pfx, confirmed ? " from a fault" : "");
}

void target_forget_pid(struct target *t, const char *why)
{
	pid_t pid = t->pid;
	struct target *c;

	if (!pid || t->dead)
		return;
	/* A process that vforks in a loop beside its forks would fill the log: the first one is enough. */
	if (t->pids_forgotten++ == 0)
		log_warnx("%s %s: that pid was not this process's; forgetting it, still serving (its pid comes again from a fault)",
			  t->pfx, why);
	else
		log_debug("%s %s: forgetting that pid (%" PRIu64 " so far)", t->pfx, why,
			  t->pids_forgotten);
	if (t->pidfd >= 0) {
		loop_del(&t->d->loop, &t->pid_ev);
		close(t->pidfd);
		t->pidfd = -1;
	}
	t->pid = 0;
	t->pid_confirmed = false;
	target_record(t, J_PID, -1, 0, 0, 0);
	for (c = t->d->targets; c; c = c->next)
		if (c->parent_id == t->id && c->parent_pid == pid) {
			c->parent_pid = 0;
			target_set_prefix(c);
		}
	target_set_prefix(t);
}

/* Faults whose thread id may confirm a guessed pid (its parent gone, none can). */
#define TID_TRIES	8

/*
 * Learn a forked child's pid from the thread id of its first fault, if it
 * names a child of the parent here (procfs_child_of_tid); else the proc
 * connector tells the pid. A pid the proc connector told is checked against
 * it: confirmed, or forgotten for the fault's.
 */
static void target_set_pid_from_tid(struct target *t, pid_t tid)
{
	pid_t pid = procfs_child_of_tid(t->parent_pid, tid);
	char why[96];

	if (!pid) {
		if (t->tid_misses < UINT8_MAX)
			t->tid_misses++;
		log_debug("%s thread id %d of a fault does not name a child of %d here: not used",
			  t->pfx, tid, t->parent_pid);
		return;
	}
	if (t->pid == pid) {
		t->pid_confirmed = true;
		log_debug("%s pid confirmed by a fault", t->pfx);
		return;
	}
	if (t->pid) {
		snprintf(why, sizeof(why), "a fault came from thread %d of pid %d", tid, pid);
		target_forget_pid(t, why);
	}
	target_set_pid(t, pid, true);
}

/* A FORK event: a new process to serve (id ID, recorded), with a copy of the parent's model. */
static void on_fork(struct target *t, int child_uffd, uint64_t id, uint32_t slot1)
{
	struct target *c = target_alloc(t->d, child_uffd, t->img, id);

	if (!c) {
		/* Closing it would let the child read zeros; keeping it unserved hangs the child. */
		log_warn("%s cannot serve forked child (uffd %d)", t->pfx, child_uffd);
		t->d->tot.failed++;
		journal_slot_put(&t->d->journal, slot1);
		return;
	}
	c->slot1 = slot1;
	c->live = true;
	c->src = t->src;
	c->remote = t->remote;
	c->parent_pid = t->pid;
	c->parent_id = t->id;
	c->image_id = t->image_id;
	c->fill_cursor = t->fill_cursor;
	target_set_prefix(c);
	if (model_clone(&c->map, &t->map) < 0) {
		target_abandon(c, "out of memory copying the model of its parent");
		return;
	}
	c->st.pages_total = c->map.nr_missing;
	log_debug("%s forked: %s %" PRIu64 " pages to serve", t->pfx, c->pfx, c->map.nr_missing);
	t->d->loop.idle_pending = true;
	if (t->d->pc == NULL)
		log_debug("%s no proc connector: child pid comes from its first fault", c->pfx);
}

/*
 * Apply one event message to the model (CHILD, SLOT1: recorded for a FORK's
 * child). *NOW: when the batch was read, read from the clock by its first
 * fault (0 until then).
 */
static void apply_msg(struct target *t, const struct uffd_msg *m, uint64_t child,
		      uint32_t slot1, uint64_t *now)
{
	switch (m->event) {
	case UFFD_EVENT_PAGEFAULT:
		if (!*now)
			*now = now_ns();
		t->last_fault_ns = *now;
		t->st.faults++;
		t->d->tot.faults++;
		/* A guessed pid is checked on a few faults, not on every one (a procfs read). */
		if ((!t->pid || (!t->pid_confirmed && t->tid_misses < TID_TRIES)) &&
		    m->arg.pagefault.feat.ptid)
			target_set_pid_from_tid(t, m->arg.pagefault.feat.ptid);
		if (serve_queue_fault(t, m) < 0)
			log_warnx("%s out of memory queueing a fault at 0x%llx", t->pfx,
				  (unsigned long long)m->arg.pagefault.address);
		break;
	case UFFD_EVENT_FORK:
		t->ev_seq++;
		t->st.ev_fork++;
		on_fork(t, (int)m->arg.fork.ufd, child, slot1);
		break;
	case UFFD_EVENT_REMAP:
		t->ev_seq++;
		t->st.ev_remap++;
		if (model_remap(&t->map, m->arg.remap.from, m->arg.remap.to, m->arg.remap.len) < 0)
			target_abandon(t, "out of memory applying an mremap");
		break;
	case UFFD_EVENT_REMOVE:
		t->ev_seq++;
		t->st.ev_remove++;
		t->st.pages_zeroed += model_remove(&t->map, m->arg.remove.start, m->arg.remove.end);
		break;
	case UFFD_EVENT_UNMAP:
		t->ev_seq++;
		t->st.ev_unmap++;
		if (model_unmap(&t->map, m->arg.remove.start, m->arg.remove.end) < 0)
			log_warnx("%s out of memory applying munmap", t->pfx);
		break;
	default:
		log_warnx("%s unknown uffd event %u", t->pfx, m->event);
	}
}

/*
 * Record the events of a batch just read, before anything relies on them:
 * a FORK gets its child's id (and counter slot) here. Returns how many.
 */
static unsigned record_batch(struct target *t, const struct uffd_msg *m, size_t n,
			     uint64_t *child, uint32_t *slot1)
{
	unsigned events = 0;

	for (size_t i = 0; i < n; i++) {
		child[i] = 0;
		slot1[i] = 0;
		switch (m[i].event) {
		case UFFD_EVENT_FORK:
			child[i] = target_new_id(t->d);
			slot1[i] = journal_slot_get(&t->d->journal, child[i]);
			target_record(t, J_FORK, (int)m[i].arg.fork.ufd, child[i], slot1[i], 0);
			break;
		case UFFD_EVENT_REMAP:
			target_record(t, J_REMAP, -1, m[i].arg.remap.from, m[i].arg.remap.to,
				      m[i].arg.remap.len);
			break;
		case UFFD_EVENT_REMOVE:
			target_record(t, J_REMOVE, -1, m[i].arg.remove.start, m[i].arg.remove.end, 0);
			break;
		case UFFD_EVENT_UNMAP:
			target_record(t, J_UNMAP, -1, m[i].arg.remove.start, m[i].arg.remove.end, 0);
			break;
		default:
			continue;
		}
		events++;
	}
	return events;
}

/*
 * Tests (UFFD_TEST_DIE_IN_READ, restart.h): die as a SIGKILL inside read(2)
 * would leave us, with a read's messages copied out and nothing recorded.
 */
static void die_in_read(struct daemon *d, const struct uffd_msg *m, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (m[i].event == d->die_in_read)
			raise(SIGKILL);
}

/*
 * Read every queued message, record and apply the events, then serve;
 * returns the number of events. With IF_ANY, a queue found empty at the
 * first read is left at that, *GOT false: nothing to apply, and parked
 * faults have their timer.
 */
static unsigned drain(struct target *t, bool if_any, bool *got)
{
	struct uffd_msg buf[MSG_BATCH], *msgs;
	uint64_t child[MSG_BATCH];
	uint32_t slot1[MSG_BATCH];
	unsigned events = 0;
	struct daemon *d = t->d;
	bool tight;

	/*
	 * A FORK event read behind others in a batch that finds no fd free
	 * goes back to the queue with no error: the read returns what came
	 * before it. So while fds are short (the reserve cannot be refilled),
	 * every read gets a reserve fd freed just before it.
	 */
	if (d->nr_fd_reserve < DAEMON_FD_RESERVE)
		daemon_reserve_fill(d);
	tight = d->nr_fd_reserve < DAEMON_FD_RESERVE;
	*got = false;
	for (;;) {
		uint64_t now = 0;
		ssize_t n;

		if (tight)
			daemon_reserve_take(d);

		/*
		 * A read completes the events it returns (the process goes on)
		 * before they can be recorded: read them into the journal, so
		 * that if we die before recording them the keeper does it.
		 */
		fillw_quiesce(t);	/* no copy of a worker may outlive this read (fillw.h) */
		msgs = journal_read_begin(&t->d->journal, t->id, buf);
		n = read(t->uffd, msgs, sizeof(buf));
		if (tight) {
			int err = errno;

			daemon_reserve_fill(d);	/* what the read left free, taken back */
			errno = err;
		}
		if (n > 0 && t->d->die_in_read)
			die_in_read(t->d, msgs, (size_t)n / sizeof(msgs[0]));
		if (n > 0 && msgs != buf)
			memcpy(buf, msgs, (size_t)n);	/* recording may move the journal */
		if (n > 0)
			events += record_batch(t, buf, (size_t)n / sizeof(buf[0]), child, slot1);
		journal_read_end(&t->d->journal, n);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN && if_any && !*got)
			return 0;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0 && (errno == EMFILE || errno == ENFILE)) {
			/*
			 * A FORK event found no fd free for its child's uffd. The
			 * kernel put it back behind the events that came after it:
			 * read later, those would come first and the child's model
			 * would be its parent's after them. Free a reserve fd and
			 * read again at once, so the FORK still comes first.
			 */
			if (daemon_reserve_take(d)) {
				d->tot.fd_reserve_used++;
				continue;
			}
			log_warnx("%s a fork event found no fd free and the reserve is spent: events after it may be read before it, and the child served from its parent's memory as of then",
				  t->pfx);
			serve_read_later(t, errno);
			break;
		}
		if (n < 0 && errno == ENOMEM) {
			/*
			 * The kernel could not make a FORK's new uffd: the event
			 * stays queued, as for EMFILE. Destroying the target
			 * would close its uffd and let it read zeros.
			 */
			log_warnx("%s reading its uffd: out of memory for a fork event's new uffd; reading again later",
				  t->pfx);
			serve_read_later(t, errno);
			break;
		}
		if (n <= 0) {
			log_warn("%s read uffd", t->pfx);
			t->end = TE_FAILED;
			t->d->tot.failed++;
			target_destroy(t, "lost its uffd");
			return events;
		}
		*got = true;
		for (size_t i = 0; i < (size_t)n / sizeof(buf[0]) && !t->dead; i++)
			apply_msg(t, &buf[i], child[i], slot1[i], &now);
		if (t->dead)
			return events;
		/*
		 * A short read drained the queue: skip the read that would only
		 * say EAGAIN (a syscall on every fault). Anything queued since
		 * wakes the level-triggered epoll again.
		 */
		if ((size_t)n < sizeof(buf))
			break;
	}
	serve_faults(t);
	if (!t->dead)
		target_sync_slot(t);
	return events;
}

unsigned target_drain(struct target *t)
{
	bool got;

	return drain(t, false, &got);
}

/*
 * The loop's poll hook (loop.h): drain T's uffd if anything is queued. The
 * spin calls it for the process whose fault was answered last, which has
 * most often faulted again by then.
 */
static bool target_poll_uffd(struct ev *ev)
{
	struct target *t = container_of(ev, struct target, uffd_ev);
	bool got;

	/*
	 * Its read would stop T's fill workers, maybe for nothing; a uffd
	 * unwatched for want of fds is read on its timer (serve_read_later).
	 */
	if (t->fw_jobs || t->read_later.armed)
		return false;
	drain(t, true, &got);
	return got;
}

/* Read every queued message, apply the events, then serve. */
static void target_on_uffd(struct ev *ev, uint32_t events)
{
	struct target *t = container_of(ev, struct target, uffd_ev);

	(void)events;
	target_drain(t);
}

void target_journal_groups(struct target *t, const gid_t *groups, size_t n)
{
	for (size_t i = 0; i < n && i < JOURNAL_GROUPS; i += 5) {
		struct jrec r = { .type = J_GROUPS, .fd = { 0, -1, -1 }, .id = t->id };

		for (size_t k = i; k < n && k < i + 5; k++)
			r.a[r.fd[0]++] = groups[k];
		target_journal(t->d, &r);
	}
}

void target_sync_slot(struct target *t)
{
	struct jslot *s = journal_slot(&t->d->journal, t->slot1);

	if (!s || s->id != t->id)
		return;
	s->pages_total = t->st.pages_total;
	s->pages_copied = t->st.pages_copied;
	s->pages_zeroed = t->st.pages_zeroed;
	s->faults = t->st.faults;
	s->ev_fork = t->st.ev_fork;
	s->ev_remap = t->st.ev_remap;
	s->ev_remove = t->st.ev_remove;
	s->ev_unmap = t->st.ev_unmap;
	s->eagain = t->st.eagain;
	s->enoent = t->st.enoent;
	s->eexist = t->st.eexist;
	s->adopted = t->adopted;
}

struct target *target_restore(struct daemon *d, const struct target_restore_info *ri,
			      struct timage *img, struct model *built)
{
	struct target *t = target_alloc(d, ri->uffd, img, ri->id);

	if (!t) {
		model_free(built);
		return NULL;
	}
	t->src = &serve_from_images;
	t->remote = false;
	t->pid = ri->pid;
	t->parent_pid = ri->parent_pid;
	t->parent_id = ri->parent_id;
	t->image_id = ri->image_id;
	t->slot1 = ri->slot1;
	t->adopted = ri->adopted;
	t->pid_from_fault_only = !ri->pid;
	/* A child's pid may have come from the proc connector: its next fault confirms it. */
	t->pid_confirmed = ri->pid && !ri->parent_id;
	t->map = *built;
	model_init(built);
	if (ri->st)
		t->st = *ri->st;
	else
		t->st.pages_total = t->map.nr_missing;
	target_set_prefix(t);
	if (ri->pidfd >= 0 && target_watch_pid(t, ri->pidfd) < 0) {
		close(ri->pidfd);
		log_warn("%s cannot watch its pidfd", t->pfx);
	}
	t->live = true;
	target_sync_slot(t);
	d->loop.idle_pending = true;
	timage_prefault(d, t->img);
	return t;
}

static void target_on_pidfd(struct ev *ev, uint32_t events)
{
	struct target *t = container_of(ev, struct target, pid_ev);

	(void)events;
	target_pid_exited(t);
}

