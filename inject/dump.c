/*
 * Dump a live process: freeze every thread, list its areas from /proc,
 * classify them (dump_area.c), find and copy out the pages worth keeping
 * (dump_pages.c), and write CRIU images under temporary names renamed at the
 * very end (dump_image.c). This file is the order of those steps, and letting
 * the target go (or killing it, or holding it for the caller) at the end.
 */
#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "dump.h"
#include "dump_area.h"
#include "dump_image.h"
#include "dump_pages.h"
#include "dump_shmem.h"
#include "imgtask.h"
#include "log.h"
#include "precopy.h"
#include "ptrace.h"
#include "why.h"

#define DUMP_PAGE	4096ull
#define DUMP_KILL_WAIT	5000		/* ms to wait for a killed target to be gone */

struct dump {
	const struct dump_opts *o;
	struct dump_stats *st;
	pid_t pid;
	int pidfd;
	struct pt pt;
	bool seized;
	struct core core;	/* with --kill: what restore needs besides memory */
	bool core_on;
	struct dump_image img;	/* the files */
	struct dump_pages pg;	/* the pages, and what was written about them */
	struct dump_shmem shm;	/* its shared memory objects (a tree's are the tree's) */
	struct precopy pc;	/* pre-copy: the tracker and the chain */
	bool pc_on;
	bool pc_reset;		/* the written set was reset: the previous round is spent */
	bool stopped;		/* --leave-stopped: we stopped it (SIGCONT if the dump fails) */
	bool was_stopped;	/* it was in a group stop before the dump: leave it so */

	struct procfs_maps maps;
	struct procfs_maps pre;	/* smaps read before the freeze (preread()) */
	long long pre_locked;	/* and VmLck then */
	bool allow_wp;		/* classified with write-protect registrations allowed */
	struct procfs_stat stat;
	uint64_t *auxv;
	size_t nauxv;
	uint32_t *tids;
	size_t ntids;
	VmaEntry *vmas;
	struct dump_area *areas;

	/* pages that stay resident: the kernel reads them for others */
	struct dump_range *eager;
	size_t neager;

	struct timespec t_start;
	struct timespec t_frozen;
	char why[768];

	/* dump --tree: the root's pstree.img holds every process */
	const struct dump_image_proc *tree;
	size_t ntree;
	int parent;		/* index of its parent in the tree, -1 for the root */
};

/*
 * Set from a signal handler when the user interrupts a dump: checked between
 * batches so that an interrupted dump lets the target go and cleans up.
 * The one piece of process-wide state here, because a handler can reach no other.
 */
static volatile sig_atomic_t dump_interrupted;

static void on_signal(int sig)
{
	(void)sig;
	dump_interrupted = 1;
}

static double since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Record why the dump failed, as "pid N: ..." (the first reason wins), and return -CODE. */
static int dfail(struct dump *d, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int dfail(struct dump *d, int code, const char *fmt, ...)
{
	char prefix[32];
	va_list ap;
	int ret;

	snprintf(prefix, sizeof(prefix), "pid %d: ", (int)d->pid);
	va_start(ap, fmt);
	ret = why_vfirst(d->why, sizeof(d->why), code, prefix, fmt, ap);
	va_end(ap);
	return ret;
}

/* Open the pidfd first: it pins the identity of the target for the whole dump. */
static int open_target(struct dump *d)
{
	d->pidfd = (int)syscall(SYS_pidfd_open, d->pid, 0);
	if (d->pidfd >= 0)
		return 0;
	if (errno == ESRCH)
		return dfail(d, ESRCH, "no such process");
	if (errno == EINVAL)
		return dfail(d, EINVAL, "not a process (a thread id?)");
	return dfail(d, errno, "pidfd_open: %s", strerror(errno));
}

/* VmLck of PID in kB, or -1. */
static long long locked_kb(pid_t pid)
{
	char path[64];
	long long kb;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	return procfs_field_num(path, "VmLck", &kb) == 0 ? kb : -1;
}

/*
 * Before the freeze, for a dump that lets the target go on: read smaps
 * (its page-table walk costs about 14 ms per GiB resident) while the
 * target still runs. read_proc() keeps it only if, frozen, /proc/PID/maps
 * shows the very same areas and VmLck did not move; recheck_flags() reads
 * smaps again after the target is let go (or stopped, with
 * --leave-stopped), before anything is published, for the VmFlags changes
 * that show in neither (madvise or mseal of a whole area).
 *
 * A hand-over (hold) reads them before the freeze too, though its images
 * are out before the thaw and nothing can be taken back after it. What a
 * VmFlags change between this read and the freeze does to it, by flag:
 *   gu (a guard marker installed): the one that could make a process read
 *      wrong bytes here, as a move into the graveyard would take the
 *      markers away (a guard page would then be served as a zero page).
 *      The freeze's own walk of every anonymous area (precopy.c's last
 *      scan, or dump_pages.c's) meets any marker there and says so
 *      (hold(): guarded), at no cost: such an area is not moved.
 *   lo (mlock): VmLck (read before the smaps walk) moves, read_proc()
 *      reads smaps again frozen.
 *   wf (wipe-on-fork): the area is served lazily where it would have
 *      stayed resident, and a child forked later faults there to the
 *      manager, which serves it the parent's pages instead of zeros. So
 *      does an area made wipe-on-fork right after the thaw (the manager
 *      does not look at the flag; measured: the child's fault reaches the
 *      handler), so the read before the freeze adds no new way to get it
 *      wrong; dump_held_recheck() warns after the thaw.
 *   sl (mseal): a sealed area cannot be moved (mremap fails: dropped in
 *      the freeze instead) and, read-only, not dropped either (the hand-over
 *      fails and puts everything back); a writable one is served correctly.
 *   um, uw, ui (another userfaultfd, whose fd the target may hold where
 *      survey_fds() cannot see it: sent to another process): an area to be
 *      moved into the graveyard is first registered on our own uffd and
 *      unregistered (grave_probe(), microseconds): busy, the hand-over is
 *      refused before anything moves, as a move would leave that
 *      registration on the empty area, a move back lose it, and its remap
 *      events wait for a reader. Another area's registration by us fails
 *      with EBUSY and the hand-over is undone; others are not touched.
 *   mg (KSM): a moved area is unmerged by the move, in the freeze: slower.
 *   hg, nh, dd, dc: the mm image's madvise record, which the manager
 *      does not read (it reads hg and nh live before a collapse); a change
 *      after the thaw leaves the images just as behind. dc also says
 *      whether an area moved back from the graveyard (a failed hand-over)
 *      is made MADV_DOFORK again: that is read then, frozen, from the
 *      place the move left (grave_put_back()), not from this read.
 *   gu also shows in dump_held_recheck()'s check after the thaw.
 */
static void preread(struct dump *d)
{
	char why[512];

	if (d->o->kill)
		return;	/* dead before the images are out: frozen costs the same */
	/*
	 * VmLck first: an mlock during the smaps walk of an area already
	 * walked then moves it between this read and the frozen one. Read
	 * after the walk, it would count the lock the walk did not see.
	 */
	d->pre_locked = locked_kb(d->pid);
	dump_test_hook("locked", d->pidfd);	/* tests: mlock between the two reads */
	if (procfs_read_smaps(d->pid, &d->pre, why, sizeof(why)) < 0)
		return;	/* read again frozen, and fail there if it must */
	d->st->areas_read = DUMP_AREAS_BEFORE;
	dump_test_hook("preread", d->pidfd);
}

/* Read what /proc says, with the target frozen. */
static int read_proc(struct dump *d)
{
	char why[512], changed[512] = "";
	int ret;

	ret = procfs_read_tasks(d->pid, &d->tids, &d->ntids, why, sizeof(why));
	if (ret == 0)
		ret = procfs_read_stat(d->pid, &d->stat, why, sizeof(why));
	if (ret == 0)
		ret = procfs_read_auxv(d->pid, &d->auxv, &d->nauxv, why, sizeof(why));
	if (ret == 0 && d->st->areas_read == DUMP_AREAS_BEFORE) {
		if (procfs_check_maps(d->pid, &d->pre, changed, sizeof(changed)) == 0 &&
		    locked_kb(d->pid) == d->pre_locked) {
			d->maps = d->pre;
			memset(&d->pre, 0, sizeof(d->pre));
			return 0;
		}
		log_debug("pid %d: areas read again frozen: %s", (int)d->pid,
			  changed[0] ? changed : "VmLck moved");
		procfs_maps_free(&d->pre);
		d->st->areas_read = DUMP_AREAS_AGAIN;
	}
	if (ret == 0)
		ret = procfs_read_maps(d->pid, &d->maps, why, sizeof(why));
	if (ret < 0)
		return dfail(d, ret, "%s", why);
	return 0;
}

/* The length of the VmFlags codes T, without the blanks that end them. */
static int flags_len(const char *t)
{
	size_t n = strlen(t);

	while (n && (t[n - 1] == ' ' || t[n - 1] == '\n'))
		n--;
	return (int)n;
}

/* Do two classifications of one area say the same? */
static bool same_class(const VmaEntry *a, const struct dump_area *x, const VmaEntry *b,
		       const struct dump_area *y)
{
	return a->status == b->status && a->flags == b->flags && a->has_madv == b->has_madv &&
	       a->madv == b->madv && x->kind == y->kind && x->pe_flags == y->pe_flags &&
	       x->note_locked == y->note_locked;
}

/*
 * After the target is let go (before anything is published): read smaps
 * again and classify every dumped area with the VmFlags it has now. An area
 * that classifies otherwise than with the flags read before the freeze had
 * them changed between that read and now, perhaps before the freeze, where
 * no cheap check sees a madvise of a whole area: fail, the images could
 * say the wrong thing. Areas unmapped since say nothing; a change that is
 * undone within the same interval is the one thing this cannot see.
 */
static int recheck_flags(struct dump *d)
{
	struct procfs_maps now;
	char why[512];
	size_t j = 0;
	int ret;

	/*
	 * A pre-dump round's areas decide nothing the chain keeps: the last
	 * round classifies every area again, and only its mm image is restored.
	 * A hand-over is still frozen here: it looks after the thaw instead
	 * (dump_held_recheck()).
	 */
	if (d->st->areas_read != DUMP_AREAS_BEFORE || d->o->predump || d->o->hold)
		return 0;
	ret = procfs_read_smaps(d->pid, &now, why, sizeof(why));
	if (ret == -ENOENT || ret == -ESRCH)
		return 0;	/* gone since: its images are of its last moment */
	if (ret < 0)
		return dfail(d, ret, "cannot check its VmFlags after the freeze: %s", why);
	for (size_t i = 0; i < d->maps.n; i++) {
		const struct procfs_vma *v = &d->maps.v[i];

		while (j < now.n && now.v[j].end <= v->start)
			j++;
		for (size_t k = j; k < now.n && now.v[k].start < v->end; k++) {
			struct procfs_vma vv = *v;
			struct dump_area a;
			VmaEntry e;

			vv.vmflags = now.v[k].vmflags;
			if (d->allow_wp)
				vv.vmflags &= ~PFV_UW;
			if (dump_classify(&vv, &e, &a, why, sizeof(why)) == 0 &&
			    same_class(&d->vmas[i], &d->areas[i], &e, &a))
				continue;
			ret = dfail(d, EAGAIN, "0x%" PRIx64 "-0x%" PRIx64 " %s: its VmFlags went "
				    "from '%.*s' to '%.*s' between their read before the freeze and "
				    "the check after it; the images might not say what it was "
				    "when frozen: nothing written, dump it again",
				    v->start, v->end, v->name[0] ? v->name : "(anonymous)",
				    flags_len(v->vmflags_text), v->vmflags_text,
				    flags_len(now.v[k].vmflags_text), now.v[k].vmflags_text);
			procfs_maps_free(&now);
			return ret;
		}
	}
	procfs_maps_free(&now);
	return 0;
}

/*
 * Refuse a target whose memory another process shares (clone(CLONE_VM)
 * without CLONE_THREAD, or a vfork child that has not exec'd yet): that
 * process is not frozen, so it could write after the dump.
 */
static int check_mm_shared(struct dump *d)
{
	DIR *dir = opendir("/proc");
	struct dirent *de;
	int ret = 0;

	if (!dir)
		return dfail(d, errno, "/proc: %s", strerror(errno));
	while (ret == 0 && (de = readdir(dir))) {
		char *end;
		long other = strtol(de->d_name, &end, 10);

		if (*end || other <= 0 || other == d->pid || other == getpid())
			continue;
		if (syscall(SYS_kcmp, d->pid, (pid_t)other, KCMP_VM, 0, 0) == 0)
			ret = dfail(d, ENOTSUP, "pid %ld shares its memory (clone with CLONE_VM, "
				    "or a vfork child that has not exec'd): it cannot be frozen "
				    "with it", other);
	}
	closedir(dir);
	return ret;
}

/* Turn every area into a vma_entry; refuse before anything is written. */
static int classify_all(struct dump *d)
{
	char why[640];
	int ret;

	struct track_found f;
	bool allow_wp = d->pc_on;

	/* Areas our own tracker write-protects are dumped as any others. */
	if (!allow_wp && track_find(d->pid, &f, NULL, 0) == 0 && f.n)
		allow_wp = true;
	d->allow_wp = allow_wp;
	ret = dump_area_classify_all(&d->maps, d->pid, d->o->no_locked, allow_wp, d->o->hold,
				     &d->vmas, &d->areas, why, sizeof(why));
	if (ret < 0)
		return dfail(d, ret, "%s", why);
	for (size_t i = 0; d->pc_on && i < d->maps.n; i++)
		if (d->vmas[i].status & VMA_AREA_MEMFD)
			return dfail(d, ENOTSUP, "cannot dump: 0x%" PRIx64 "-0x%" PRIx64 " %s is "
				     "%s: pre-copy rounds do not support it (a plain dump does; "
				     "`lazy` hands it over)", d->vmas[i].start, d->vmas[i].end,
				     d->maps.v[i].name, d->vmas[i].status & VMA_FILE_PRIVATE ?
				     "a private mapping of a memfd (its pages not copied on write "
				     "are the memfd's)" : "shared memory (shared anonymous or a memfd)");
	d->st->vmas = d->maps.n;
	return 0;
}

/* Find the pages that must stay resident. */
static int find_eager(struct dump *d)
{
	if (dump_area_find_eager(&d->pt, &d->stat, d->nauxv, d->vmas, d->maps.n, &d->eager,
				 &d->neager) < 0)
		return dfail(d, ENOMEM, "out of memory");
	return 0;
}

void dump_test_hook(const char *where, int pidfd)
{
	const char *at = getenv("UFFD_INJECT_TEST_DIE_AT");

	if (at && !strcmp(at, where))
		raise(SIGKILL);
	at = getenv("UFFD_INJECT_TEST_SIGNAL_AT");
	if (at && !strcmp(at, where) && pidfd >= 0) {
		const char *sig = getenv("UFFD_INJECT_TEST_SIGNAL");
		const char *grow = getenv("UFFD_INJECT_TEST_WAIT_GROW");
		struct stat s0, s1;

		if (!sig || !grow || stat(grow, &s0) < 0)
			return;
		syscall(SYS_pidfd_send_signal, pidfd, atoi(sig), NULL, 0);
		for (int i = 0; i < 4000; i++) {
			if (stat(grow, &s1) == 0 && s1.st_size != s0.st_size)
				break;
			usleep(5000);
		}
	}
	at = getenv("UFFD_INJECT_TEST_KILL_TARGET_AT");
	if (at && !strcmp(at, where) && pidfd >= 0) {
		struct pollfd pfd = { .fd = pidfd, .events = POLLIN };

		syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
		poll(&pfd, 1, 5000);
	}
}

/* Debug (UFFD_INJECT_DEBUG set): how long after the freeze step WHAT ended. */
static void phase(const struct dump *d, const char *what)
{
	log_debug("pid %d: %s at %.1f ms after the freeze", (int)d->pid, what,
		  since(&d->t_frozen) * 1e3);
}

/* A page the running target took away while a round read it: copy it next round. */
static void unreadable(void *ctx, uint64_t addr, uint64_t len)
{
	struct dump *d = ctx;

	d->st->skipped_pages += len / DUMP_PAGE;
	track_mark_written(&d->pc.t, addr, addr + len);
}

/*
 * Pre-copy, frozen: take the tracker, read and reset the written set. The
 * last round takes the tracker down (a hand-over registers the areas
 * itself); a hand-over without a chain takes down any tracker it finds.
 */
static int precopy_round(struct dump *d)
{
	int ret;

	if (!d->pc_on) {
		if (d->o->hold)
			precopy_disarm_all(&d->pt, &d->maps);
		return 0;
	}
	d->pc_reset = true;	/* from the first area scanned on */
	ret = precopy_scan(&d->pc, &d->pt, &d->maps, d->vmas, d->areas);
	if (ret < 0) {
		if (!d->pc.marked && d->pc.prev)
			d->pc_reset = false;	/* refused before any reset */
		return dfail(d, ret, "%s", d->pc.why);
	}
	d->st->round = d->pc.round;
	d->st->written_pages = d->pc.written_pages;
	d->st->parent_pages = d->pc.parent_pages;
	d->st->fresh_pages = d->pc.fresh_pages;
	d->st->dropped_pages = d->pc.dropped_pages;
	d->st->untracked = d->pc.untracked;
	dump_test_hook("scanned", d->pidfd);
	phase(d, "scanned");
	/*
	 * The last round ends the tracking. A hand-over gets the tracker still
	 * armed (hold()): unregistering walks every page table of its areas,
	 * which is cheap only once their pages are moved away (lazy.c). A kill
	 * needs nothing. A dump that lets the target go closes the target's
	 * copy now (one injected call) and unregisters through ours once it
	 * runs again (a page-table walk the freeze need not wait for);
	 * precopy_unregister() does it.
	 */
	if (!d->o->hold && !d->o->predump && !d->o->kill)
		track_close_target(&d->pt, &d->pc.t);
	return 0;
}

/* Add the pages the chain holds to the pagemap (and spans). */
static int precopy_finish(struct dump *d)
{
	if (!d->pc_on)
		return 0;
	if (precopy_merge(&d->pc, d->areas, d->eager, d->neager, &d->pg.pe, &d->pg.npe,
			  &d->pg.spans, &d->pg.nspans) < 0)
		return dfail(d, ENOMEM, "out of memory");
	d->st->entries = d->pg.npe;
	return 0;
}

static void let_go(struct dump *d);
static int stop_target(struct dump *d);

/*
 * Every page is read: the writes need not hold the target. Let it go (or
 * stop it, with --leave-stopped) while dump_pages() waits for its writer.
 */
static void pages_read(void *ctx)
{
	struct dump *d = ctx;

	phase(d, "pages read");
	d->st->read_ahead = true;
	if (!d->o->leave_stopped)
		let_go(d);
	else if (stop_target(d) == 0)
		d->stopped = true;
}

/*
 * Size the writer's ring for a dump that lets the target go (or stops it)
 * once every page is read, so that the reads fit in it before the freeze
 * ends (DUMP_NBUF_MAX at most; beyond it the reads wait for the writes as
 * before): the last round of a chain reads about what the round before it
 * copied, so twice that; any other dump at most the target's resident set.
 */
static unsigned read_ahead_ring(const struct dump *d)
{
	char path[PATH_MAX];
	struct stat sb;
	long long kb;
	uint64_t n;

	if (d->o->prev) {
		snprintf(path, sizeof(path), "%s/pages-1.img", d->o->prev);
		if (stat(path, &sb) < 0)
			return DUMP_NBUF_MAX;
		n = DUMP_NBUF + 2 * (uint64_t)sb.st_size / DUMP_BATCH + 1;
	} else {
		snprintf(path, sizeof(path), "/proc/%d/status", (int)d->pid);
		if (procfs_field_num(path, "VmRSS", &kb) < 0 || kb < 0)
			return DUMP_NBUF;
		n = DUMP_NBUF + (uint64_t)kb * 1024 / DUMP_BATCH + 1;
	}
	return n > DUMP_NBUF_MAX ? DUMP_NBUF_MAX : (unsigned)n;
}

/* Create the pages file and fill it with every page worth keeping, in address order. */
static int dump_pages_file(struct dump *d)
{
	struct dump_pages *p = &d->pg;
	int ret;

	p->pid = d->pid;
	p->vmas = d->vmas;
	p->areas = d->areas;
	p->nvmas = d->maps.n;
	p->eager = d->eager;
	p->neager = d->neager;
	p->no_scan = d->o->no_scan;
	p->dir = d->o->dir;
	p->pages_name = d->img.tmp[DUMP_F_PAGES];
	p->interrupted = &dump_interrupted;
	p->st = d->st;
	if (p->nbuf > DUMP_NBUF) {	/* sized by read_ahead_ring() */
		p->read_done = pages_read;
		p->read_done_ctx = d;
	}
	if (d->pc_on) {
		p->tracked = d->pc.tracked;
		p->copy = d->pc.copy;
		p->ncopy = d->pc.ncopy;
		p->tolerant = d->o->predump;
		p->unreadable = unreadable;
		p->unreadable_ctx = d;
	}
	ret = dump_pages_open(p);
	if (ret < 0)
		return dfail(d, ret, "%s", p->why);
	if (d->img.pagesfd < 0 && (ret = dump_image_create_pages(&d->img, d->o->buffered)) < 0)
		return dfail(d, ret, "%s", d->img.why);
	ret = dump_pages(p, d->img.pagesfd);
	if (ret < 0)
		return dfail(d, ret, "%s", p->why);
	ret = dump_image_trim_pages(&d->img, d->st->pages * DUMP_PAGE);
	return ret < 0 ? dfail(d, ret, "%s", d->img.why) : 0;
}

/*
 * How much of the pages file to write ahead, before the freeze, for the
 * last round of a chain: about what the round before it copied, half as
 * much again for a set that grew, PREWRITE_MAX at most (the round before
 * may be the first, which copied everything). 0 for any other dump.
 */
#define PREWRITE_MAX	(64ull << 20)

static uint64_t pages_estimate(const struct dump *d)
{
	char path[PATH_MAX];
	struct stat sb;
	uint64_t n;

	if (d->o->predump || !d->o->prev)
		return 0;
	snprintf(path, sizeof(path), "%s/pages-1.img", d->o->prev);
	if (stat(path, &sb) < 0)
		return 0;
	n = (uint64_t)sb.st_size / 2 * 3;
	return n < PREWRITE_MAX ? n : PREWRITE_MAX;
}

/* Write mm, pstree, inventory and pagemap; sync the pages file. */
static int write_images(struct dump *d)
{
	struct dump_image_task t = {
		.pid = d->pid,
		.stat = &d->stat,
		.auxv = d->auxv,
		.nauxv = d->nauxv,
		.tids = d->tids,
		.ntids = d->ntids,
		.vmas = d->vmas,
		.nvmas = d->maps.n,
		.pe = d->pg.pe,
		.npe = d->pg.npe,
		.core = d->core_on ? &d->core : NULL,
		.tree = d->tree,
		.ntree = d->ntree,
	};
	int ret = dump_image_write_images(&d->img, &t);

	return ret < 0 ? dfail(d, ret, "%s", d->img.why) : 0;
}

/* Give every file its final name (dump_image_publish). */
static int publish(struct dump *d)
{
	int ret = dump_image_publish(&d->img);

	return ret < 0 ? dfail(d, ret, "%s", d->img.why) : 0;
}

/* Let the target go; a failure here leaves it to the kernel (tracer exit detaches). */
static void let_go(struct dump *d)
{
	int ret;

	if (!d->seized)
		return;
	ret = pt_detach(&d->pt);
	if (ret < 0 && ret != -ESRCH)	/* ESRCH: it died meanwhile, nothing to let go */
		fprintf(stderr, "uffd-inject: warning: pid %d: detach: %s; it runs on once "
			"we exit\n", (int)d->pid, strerror(-ret));
	d->seized = false;
	d->st->frozen_s = since(&d->t_frozen);
}

/*
 * Leave the target stopped (group stop, as criu dump --leave-stopped): a
 * SIGSTOP queued while every thread is held is taken on the way out of the
 * ptrace stop, before a user instruction runs. Whoever asked for it kills
 * the process or sends SIGCONT later.
 */
static int stop_target(struct dump *d)
{
	struct procfs_stat ps = { 0 };
	char why[256];

	if (syscall(SYS_pidfd_send_signal, d->pidfd, SIGSTOP, NULL, 0) < 0)
		return dfail(d, errno, "SIGSTOP: %s (the images are complete)", strerror(errno));
	let_go(d);
	for (int i = 0; i < 1000; i++) {
		if (procfs_read_stat(d->pid, &ps, why, sizeof(why)) < 0 || ps.state == 'T')
			return 0;
		usleep(1000);
	}
	fprintf(stderr, "uffd-inject: warning: pid %d: not seen stopped after the dump (state %c)\n",
		(int)d->pid, ps.state);
	return 0;
}

/* SIGKILL the target, let go of it, and wait until it is gone. */
static int kill_target(struct dump *d)
{
	struct pollfd pfd = { .fd = d->pidfd, .events = POLLIN };
	int ret = 0;

	if (syscall(SYS_pidfd_send_signal, d->pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH)
		ret = dfail(d, errno, "kill: %s (the images are complete)", strerror(errno));
	d->st->frozen_s = since(&d->t_frozen);
	if (d->seized) {
		pt_detach(&d->pt);	/* fails with ESRCH once it is dead: fine */
		d->seized = false;
	}
	if (ret == 0 && poll(&pfd, 1, DUMP_KILL_WAIT) == 0)
		ret = dfail(d, ETIMEDOUT, "still there %d ms after SIGKILL (the images are complete)",
			    DUMP_KILL_WAIT);
	return ret;
}

/* Undo what a failed dump left: temporary files, the freeze. */
static void cleanup(struct dump *d)
{
	dump_pages_cancel(&d->pg);
	let_go(d);
	dump_image_abort(&d->img);
}

/* A failed round leaves no tracker that could be taken for a chain's. */
static void precopy_fail(struct dump *d)
{
	if (!d->pc_on)
		return;
	precopy_abort(&d->pc, d->img.dirfd, d->pc_reset);
	if (d->pc.t.ufd >= 0 && !d->o->kill)
		fprintf(stderr, "uffd-inject: pid %d: its write tracking ended with this round; "
			"start a new chain with pre-dump without --prev-images\n", (int)d->pid);
	if (d->seized)
		precopy_disarm(&d->pc, &d->pt, &d->maps);
	else if (d->pc.t.ufd >= 0)
		/* Let go already: unregistered, its fd left inert in the target. */
		for (size_t i = 0; i < d->maps.n; i++)
			track_unregister(&d->pc.t, d->maps.v[i].start, d->maps.v[i].end);
}

static void release(struct dump *d)
{
	precopy_free(&d->pc);
	core_free(&d->core);
	dump_image_close(&d->img);
	dump_pages_free(&d->pg);
	dump_shmem_free(&d->shm);
	if (d->pidfd >= 0)
		close(d->pidfd);
	free(d->eager);
	free(d->vmas);
	free(d->areas);
	free(d->auxv);
	free(d->tids);
	procfs_maps_free(&d->maps);
	procfs_maps_free(&d->pre);
}

static void summary(const struct dump *d)
{
	const struct dump_stats *st = d->st;
	double mib = (double)(st->pages * DUMP_PAGE) / (1 << 20);

	if (!d->o->out)
		return;
	fprintf(d->o->out,
		"uffd-inject: pid %d dumped to %s: %" PRIu64 " pages (%.1f MiB, %" PRIu64
		" lazy), %" PRIu64 " zero pages left as holes, %zu VMAs, %zu pagemap entries, "
		"%zu thread%s%s\n",
		(int)d->pid, d->o->dir, st->pages, mib, st->lazy_pages, st->holes, st->vmas,
		st->entries, st->threads, st->threads == 1 ? "" : "s",
		st->scanned ? "" : " (pages found through pagemap words)");
	fprintf(d->o->out,
		"uffd-inject: read %.3f s, write %.3f s, frozen %.3f s, total %.3f s with sync "
		"(%.0f MB/s read, %.0f MB/s overall); target %s\n",
		st->read_s, st->write_s, st->frozen_s, st->total_s,
		st->read_s > 0 ? (double)(st->pages * DUMP_PAGE) / st->read_s / 1e6 : 0.0,
		st->total_s > 0 ? (double)(st->pages * DUMP_PAGE) / st->total_s / 1e6 : 0.0,
		d->o->kill ? "killed" : d->o->leave_stopped ? "left stopped (SIGSTOP)" : "left running");
	if (d->shm.n) {
		uint64_t pages = 0, holes = 0;

		for (size_t i = 0; i < d->shm.n; i++) {
			pages += d->shm.o[i].pages;
			holes += d->shm.o[i].holes;
		}
		fprintf(d->o->out, "uffd-inject: shared memory: %zu object%s (memfd.img), %" PRIu64
			" pages in their own pages files, %" PRIu64 " zero pages left as holes\n",
			d->shm.n, d->shm.n == 1 ? "" : "s", pages, holes);
	}
	if (st->read_ahead)
		fprintf(d->o->out, "uffd-inject: pages read ahead of their writing: the target was "
			"%s once the last one was read\n", d->o->leave_stopped ? "stopped" : "let go");
	if (st->areas_read != DUMP_AREAS_FROZEN)
		fprintf(d->o->out, "uffd-inject: VmFlags %s\n", st->areas_read == DUMP_AREAS_BEFORE ?
			"read before the freeze (maps unchanged at it, VmFlags checked after)" :
			"read again at the freeze (the areas changed after the first read)");
	if (d->pc_on)
		fprintf(d->o->out,
			"uffd-inject: round %u%s%s: %" PRIu64 " pages written since, %" PRIu64
			" left in the parent, %" PRIu64 " unwritten but new to the chain, %"
			PRIu64 " dropped, %" PRIu64 " to copy next round, %u areas copied "
			"whole; %s\n", st->round, d->o->prev ? " after " : "",
			d->o->prev ? d->o->prev : "", st->written_pages, st->parent_pages,
			st->fresh_pages, st->dropped_pages, st->skipped_pages, st->untracked,
			d->o->predump ? "writes tracked" : "tracking ended");
}

/* Does the VmFlags text T (two-letter codes, space separated) hold CODE? */
static bool has_flag(const char *t, const char *code)
{
	for (; t && *t; t += strspn(t, " ")) {
		size_t n = strcspn(t, " \n");

		if (n == strlen(code) && !strncmp(t, code, n))
			return true;
		t += n;
	}
	return false;
}

/* Hand the frozen target and what was written about it to the caller. */
static void hold(struct dump *d, struct dump_held *h)
{
	memset(h, 0, sizeof(*h));
	h->pt = d->pt;
	d->seized = false;
	h->pid = d->pid;
	h->pidfd = d->pidfd;
	d->pidfd = -1;
	h->dirfd = d->img.dirfd;
	d->img.dirfd = -1;
	h->nvmas = d->maps.n;
	h->vmas = d->vmas;
	d->vmas = NULL;
	h->areas = d->areas;
	d->areas = NULL;
	h->pe = d->pg.pe;
	d->pg.pe = NULL;
	h->npe = d->pg.npe;
	h->eager = d->eager;
	d->eager = NULL;
	h->neager = d->neager;
	h->spans = d->pg.spans;
	d->pg.spans = NULL;
	h->nspans = d->pg.nspans;
	h->frozen_at = (double)d->t_frozen.tv_sec + d->t_frozen.tv_nsec / 1e9;
	/*
	 * Areas that may hold guard markers (VmFlags "gu", Linux 6.18): moving
	 * loses them. Read before the freeze, the flags miss a marker placed
	 * since; the freeze's walk of the area met it, if there is one.
	 */
	h->guarded = calloc(d->maps.n ? d->maps.n : 1, sizeof(*h->guarded));
	for (size_t i = 0; h->guarded && i < d->maps.n; i++)
		h->guarded[i] = has_flag(d->maps.v[i].vmflags_text, "gu") ||
				(d->pg.guarded && d->pg.guarded[i]) ||
				(d->pc.guarded && d->pc.guarded[i]);

	/* KSM areas (VmFlags "mg"): a move unmerges their shared pages, in the freeze. */
	h->merged = calloc(d->maps.n ? d->maps.n : 1, sizeof(*h->merged));
	for (size_t i = 0; h->merged && i < d->maps.n; i++)
		h->merged[i] = has_flag(d->maps.v[i].vmflags_text, "mg");
	/* The tracker, still armed, with what it holds: the caller takes it down. */
	h->track = d->pc.t;
	d->pc.t.ufd = d->pc.t.tfd = -1;
	h->ntrack = 0;
	if (h->track.ufd >= 0) {
		h->trackr = calloc(d->maps.n ? d->maps.n : 1, sizeof(*h->trackr));
		for (size_t i = 0; h->trackr && i < d->maps.n; i++)
			if ((d->maps.v[i].vmflags & PFV_UW) || (d->pc.tracked && d->pc.tracked[i]))
				h->trackr[h->ntrack++] = (struct dump_range){
					d->maps.v[i].start, d->maps.v[i].end, (uint32_t)i };
		if (!h->trackr)	/* no list to do it later by: now, as before */
			dump_held_untrack(h);
	}
	/* Read before the freeze: dump_held_recheck() looks again after the thaw. */
	if (d->st->areas_read == DUMP_AREAS_BEFORE) {
		h->pre = d->maps;
		memset(&d->maps, 0, sizeof(d->maps));
	}
}

void dump_held_untrack(struct dump_held *h)
{
	if (h->track.ufd < 0)
		return;
	track_close_target(h->pt.th ? &h->pt : NULL, &h->track);
	for (size_t i = 0; i < h->ntrack; i++)
		track_unregister(&h->track, h->trackr[i].start, h->trackr[i].end);
	close(h->track.ufd);
	h->track.ufd = -1;
	free(h->trackr);
	h->trackr = NULL;
	h->ntrack = 0;
}

void dump_held_release(struct dump_held *h)
{
	dump_held_untrack(h);	/* before the target runs: its copy goes in the freeze */
	if (h->pt.th)
		pt_detach(&h->pt);
	if (h->pidfd >= 0)
		close(h->pidfd);
	if (h->dirfd >= 0)
		close(h->dirfd);
	free(h->vmas);
	free(h->areas);
	free(h->pe);
	free(h->eager);
	free(h->spans);
	free(h->guarded);
	free(h->merged);
	procfs_maps_free(&h->pre);
	memset(h, 0, sizeof(*h));
	h->pidfd = h->dirfd = -1;
	h->track.ufd = h->track.tfd = -1;
}

/*
 * The VmFlags a hand-over acts on or records, as madvise, mseal and mlock
 * set them; not the userfaultfd ones, which the hand-over itself changes.
 */
#define HELD_FLAGS	(PFV_WF | PFV_SL | PFV_DP | PFV_LO | PFV_DC | PFV_DD | PFV_MG | PFV_HG | \
			 PFV_NH)

/*
 * Does the VmFlags text T say "gu" (guard markers)? Not among the PFV_*
 * bits (a code of 6.18); a kernel without it never says so.
 */
static bool says_guarded(const char *t)
{
	for (const char *p = t ? strstr(t, "gu") : NULL; p; p = strstr(p + 1, "gu"))
		if ((p == t || p[-1] == ' ') && (p[2] == ' ' || p[2] == '\n' || !p[2]))
			return true;
	return false;
}

int dump_held_recheck(pid_t pid, const struct procfs_maps *pre, char *why, size_t len)
{
	struct procfs_maps now;
	size_t j = 0;
	int ret;

	if (!pre->n)
		return 0;
	ret = procfs_read_smaps(pid, &now, why, len);
	if (ret == -ENOENT || ret == -ESRCH)
		return 0;	/* gone since */
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < pre->n && ret == 0; i++) {
		const struct procfs_vma *v = &pre->v[i];

		while (j < now.n && now.v[j].end <= v->start)
			j++;
		for (size_t k = j; k < now.n && now.v[k].start < v->end && ret == 0; k++) {
			uint32_t diff = (v->vmflags ^ now.v[k].vmflags) & HELD_FLAGS;
			bool gu = !says_guarded(v->vmflags_text) &&
				  says_guarded(now.v[k].vmflags_text);

			if (!diff && !gu)
				continue;
			ret = why_set(why, len, EAGAIN, "pid %d: 0x%" PRIx64 "-0x%" PRIx64 " %s: its "
				      "VmFlags went from '%.*s' to '%.*s' between their read before "
				      "the freeze and the check after the thaw; the hand-over went "
				      "by the first%s", (int)pid, v->start, v->end,
				      v->name[0] ? v->name : "(anonymous)", flags_len(v->vmflags_text),
				      v->vmflags_text, flags_len(now.v[k].vmflags_text),
				      now.v[k].vmflags_text, (diff & now.v[k].vmflags & PFV_WF) ?
				      ": it is wipe-on-fork now and served lazily, so a child it "
				      "forks would be served its pages there, not zeros" : gu ?
				      ": it has guard markers now (the freeze's walk finds those "
				      "placed before it, and such an area is not moved)" : "");
		}
	}
	procfs_maps_free(&now);
	return ret;
}

/* ---- dump --tree: the process and every descendant, frozen together ---- */

#define TREE_MAX	1024	/* processes in one tree */

struct tree {
	const struct dump_opts *o;
	struct dump *d;		/* parents before their children */
	struct dump_stats *st;	/* one per process */
	struct dump_image_proc *procs;
	const struct core **more;	/* the cores of every process but the root */
	size_t n;
	ino_t pidns;		/* the root's pid namespace */
	char why[1024];
};

/* Record why the tree failed (the first reason wins) and return -CODE. */
static int tfail(struct tree *t, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int tfail(struct tree *t, int code, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = why_vfirst(t->why, sizeof(t->why), code, NULL, fmt, ap);
	va_end(ap);
	return ret;
}

/* The inode of PID's pid namespace, or 0. */
static ino_t pidns_of(pid_t pid)
{
	char path[64];
	struct stat sb;

	snprintf(path, sizeof(path), "/proc/%d/ns/pid", (int)pid);
	return stat(path, &sb) == 0 ? sb.st_ino : 0;
}

/* The state letter of PID from /proc/PID/stat (zombies too), or 0 if it is gone. */
static char proc_state(pid_t pid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : 0;
}

/* Add PID (a child of the process at index PARENT, or the root) to the tree and freeze it. */
static int tree_add(struct tree *t, pid_t pid, int parent)
{
	struct dump *d;
	char why[512], state;
	int ret;

	if (t->n == TREE_MAX)
		return tfail(t, ENOTSUP, "pid %d: the tree has more than %d processes", (int)pid,
			     TREE_MAX);
	if (pid == getpid())
		return tfail(t, EINVAL, "uffd-inject itself (pid %d) is in the tree of pid %d: "
			     "run it from outside the tree", (int)pid, (int)t->d[0].pid);
	d = &t->d[t->n];
	d->o = t->o;
	d->st = &t->st[t->n];
	d->pid = pid;
	d->parent = parent;
	d->pidfd = d->img.dirfd = d->img.pagesfd = d->pg.pmfd = d->pg.memfd = -1;
	d->pc.t.tfd = d->pc.t.ufd = -1;
	clock_gettime(CLOCK_MONOTONIC, &d->t_start);
	t->n++;
	ret = open_target(d);
	if (ret < 0)
		return tfail(t, ret, "%s", d->why);
	state = proc_state(pid);
	if (state == 'Z' || state == 'X')
		return tfail(t, ENOTSUP, "pid %d (a child of %d) is a zombie, not yet reaped by its "
			     "parent: restore cannot make one", (int)pid,
			     parent >= 0 ? (int)t->d[parent].pid : 0);
	if (!state)
		return tfail(t, ESRCH, "pid %d: gone", (int)pid);
	d->was_stopped = state == 'T';	/* --leave-stopped: a failure leaves it stopped */
	if (parent >= 0) {
		struct procfs_stat ps;

		/* Our pidfd names the process we listed, not one that took its pid since. */
		if (procfs_read_stat(pid, &ps, why, sizeof(why)) < 0 ||
		    ps.ppid != t->d[parent].pid)
			return tfail(t, EAGAIN, "pid %d left the children of pid %d as the tree was "
				     "frozen: dump again", (int)pid, (int)t->d[parent].pid);
	}
	if (parent >= 0 && pidns_of(pid) != t->pidns)
		return tfail(t, ENOTSUP, "pid %d (a child of %d) is in a pid namespace of its own: "
			     "nested pid namespaces are not supported", (int)pid,
			     (int)t->d[parent].pid);
	ret = pt_seize(&d->pt, pid, why, sizeof(why));
	if (ret < 0)
		return tfail(t, ret, "pid %d: cannot freeze: %s", (int)pid, why);
	d->seized = true;
	clock_gettime(CLOCK_MONOTONIC, &d->t_frozen);
	if (d->pt.th[0].tid != pid)
		return tfail(t, ENOTSUP, "pid %d: its main thread has exited (%d other threads run "
			     "on): not supported", (int)pid, d->pt.nr_threads);
	return 0;
}

/*
 * Add the children of the frozen process I, those of every thread of it: a
 * frozen process forks no more, so once every process is frozen in turn,
 * parents first, none is missed.
 */
static int tree_children(struct tree *t, size_t i, bool check)
{
	for (int k = 0; k < t->d[i].pt.nr_threads; k++) {
		char path[96], buf[8192], *p, *e;
		ssize_t n;
		int fd;

		snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)t->d[i].pid,
			 (int)t->d[i].pt.th[k].tid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return tfail(t, errno, "%s: %s", path, strerror(errno));
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n < 0)
			return tfail(t, errno, "%s: %s", path, strerror(errno));
		if (n == sizeof(buf) - 1)
			return tfail(t, ENOTSUP, "%s: too many children", path);
		buf[n] = '\0';
		for (p = buf; *p; p = e) {
			long c = strtol(p, &e, 10);
			int ret;

			if (e == p)
				break;
			if (c <= 0 || c > INT_MAX)
				return tfail(t, EINVAL, "%s: bad pid", path);
			if (check) {
				/* Every child there now must be one we froze as its child. */
				size_t j = 0;

				while (j < t->n && !(t->d[j].pid == (pid_t)c && t->d[j].parent == (int)i))
					j++;
				if (j == t->n)
					return tfail(t, EAGAIN, "pid %d: a child of pid %d came or moved "
						     "as the tree was frozen: dump again", (int)c,
						     (int)t->d[i].pid);
				continue;
			}
			ret = tree_add(t, (pid_t)c, (int)i);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

/*
 * Read process I of the tree: areas, registers and files (for a restore:
 * with kill or leave_stopped), then its pages into pages-(I+1).img.
 */
static int tree_read(struct tree *t, size_t i)
{
	struct dump *d = &t->d[i];
	char why[512];
	int ret;

	ret = read_proc(d);
	if (ret == 0)
		ret = check_mm_shared(d);
	if (ret == 0)
		ret = classify_all(d);
	if (ret == 0)
		ret = find_eager(d);
	/* The tree's shared memory objects are the root's: each once for all. */
	if (ret == 0 && (ret = dump_shmem_collect(&t->d[0].shm, d->pid, &d->maps,
						  t->o->kill || t->o->leave_stopped)) < 0)
		dfail(d, ret, "cannot dump: %s", t->d[0].shm.why);
	if (ret == 0 && (t->o->kill || t->o->leave_stopped)) {
		d->core_on = true;
		d->core.shm = &t->d[0].shm;
		d->core.id_base = i ? core_last_id(&t->d[i - 1].core) + 1 : 0;
		d->core.files_id = (uint32_t)i + 1;
		d->core.files_elsewhere = i > 0;
		d->core.tree = true;
		ret = core_collect(&d->core, &d->pt, &d->maps, why, sizeof(why));
		if (ret < 0)
			dfail(d, ret, "cannot dump for restore: %s", why);
	}
	if (ret == 0) {
		d->st->threads = d->ntids;
		ret = dump_pages_file(d);
	}
	return ret < 0 ? tfail(t, ret, "%s", d->why) : 0;
}

/*
 * Write the images of every process; the root's pstree.img and files.img
 * hold them all. The root's parent is recorded as 0, as CRIU does: it is
 * not in the images (crit x DIR ps looks for it so).
 */
static int tree_write(struct tree *t)
{
	char why[512];
	int ret = 0;

	t->procs = calloc(t->n, sizeof(*t->procs));
	t->more = calloc(t->n, sizeof(*t->more));
	if (!t->procs || !t->more)
		return tfail(t, ENOMEM, "out of memory");
	for (size_t i = 0; i < t->n; i++) {
		const struct dump *d = &t->d[i];

		t->procs[i] = (struct dump_image_proc){
			.pid = d->pid, .ppid = d->parent < 0 ? 0 : t->d[d->parent].pid,
			.pgid = d->stat.pgid, .sid = d->stat.sid, .tids = d->tids,
			.ntids = d->ntids,
		};
		if (i)
			t->more[i - 1] = &t->d[i].core;
	}
	t->d[0].tree = t->procs;
	t->d[0].ntree = t->n;
	t->d[0].core.more = t->more;
	t->d[0].core.nmore = t->n - 1;
	for (size_t i = 0; ret == 0 && i < t->n; i++) {
		struct dump *d = &t->d[i];

		ret = write_images(d);
		if (ret == 0 && d->core_on &&
		    (ret = core_write(&d->core, d->img.dirfd, why, sizeof(why))) < 0)
			dfail(d, ret, "%s/%s", t->o->dir, why);
		if (ret < 0)
			tfail(t, ret, "%s", d->why);
	}
	return ret;
}

/* Give every file its name, the root's last: its pstree.img makes the directory a dump. */
static int tree_publish(struct tree *t)
{
	char why[512];

	if (dump_shmem_publish(&t->d[0].shm, t->d[0].img.dirfd, t->o->dir) < 0)
		return tfail(t, -EIO, "%s", t->d[0].shm.why);

	for (size_t k = t->n; k-- > 0;) {
		struct dump *d = &t->d[k];
		int ret = d->core_on ? core_publish(&d->core, d->img.dirfd, why, sizeof(why)) : 0;

		if (ret < 0)
			return tfail(t, ret, "pid %d: %s/%s", (int)d->pid, t->o->dir, why);
		ret = publish(d);
		if (ret < 0)
			return tfail(t, ret, "%s", d->why);
	}
	return 0;
}

static int tree_run(const struct dump_opts *o, struct dump_stats *st)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
	struct sigaction sa, old[3];
	struct tree t = { .o = o };
	struct rlimit nofile;
	bool killed = false;
	int ret = 0;

	if (o->predump || o->prev || o->hold)
		ret = tfail(&t, EINVAL, "--tree goes with neither pre-copy nor a hand-over");
	else if (o->pid <= 0 || o->pid == getpid())
		ret = tfail(&t, EINVAL, "cannot dump %s", o->pid <= 0 ? "that" : "myself");
	if (ret < 0) {
		fprintf(stderr, "uffd-inject: dump: %s\n", t.why);
		return ret;
	}
	t.d = calloc(TREE_MAX, sizeof(*t.d));
	t.st = calloc(TREE_MAX, sizeof(*t.st));
	if (!t.d || !t.st) {
		free(t.d);
		free(t.st);
		fprintf(stderr, "uffd-inject: dump: out of memory\n");
		return -ENOMEM;
	}
	dump_interrupted = 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	for (int i = 0; i < 3; i++)
		sigaction(sigs[i], &sa, &old[i]);

	/* Four fds a process (pidfd, dir, pages, pagemap): the hard limit, not 1024. */
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
		nofile.rlim_cur = nofile.rlim_max;
		setrlimit(RLIMIT_NOFILE, &nofile);
	}
	t.pidns = pidns_of(o->pid);
	ret = tree_add(&t, o->pid, -1);
	/* Every thread of every process frozen before any memory is read. */
	for (size_t i = 0; ret == 0 && i < t.n; i++)
		ret = tree_children(&t, i, false);
	/*
	 * Listed while not yet frozen, a process could fork (CLONE_PARENT too) or
	 * lose a child behind our back: all frozen now, read every list again.
	 */
	for (size_t i = 0; ret == 0 && i < t.n; i++)
		ret = tree_children(&t, i, true);
	for (size_t i = 0; ret == 0 && i < t.n; i++) {
		struct dump *d = &t.d[i];

		d->img.pages_id = (uint32_t)i + 1;
		d->img.skip[DUMP_F_INVENTORY] = d->img.skip[DUMP_F_PSTREE] = i > 0;
		d->img.made_dir = false;
		ret = dump_image_open_dir(&d->img, o->dir, d->pid);
		if (ret < 0)
			tfail(&t, ret, "%s", d->img.why);
	}
	for (size_t i = 0; ret == 0 && i < t.n; i++)
		ret = tree_read(&t, i);
	if (ret == 0 && t.d[0].shm.n) {
		pid_t *pids = calloc(t.n, sizeof(*pids));

		for (size_t i = 0; pids && i < t.n; i++)
			pids[i] = t.d[i].pid;
		ret = pids ? dump_shmem_check_users(&t.d[0].shm, pids, t.n) : -ENOMEM;
		if (ret < 0)
			tfail(&t, ret, "cannot dump: %s", pids ? t.d[0].shm.why : "out of memory");
		free(pids);
	}
	/* Pages ids 1..n are the processes'; the objects' come after. */
	if (ret == 0 && (ret = dump_shmem_write(&t.d[0].shm, t.d[0].img.dirfd, o->dir,
						(uint32_t)t.n + 1)) < 0)
		tfail(&t, ret, "%s", t.d[0].shm.why);
	if (ret == 0)
		ret = tree_write(&t);
	for (size_t i = 0; ret == 0 && o->leave_stopped && i < t.n; i++) {
		if ((ret = stop_target(&t.d[i])) == 0)
			t.d[i].stopped = true;
		else
			tfail(&t, ret, "%s", t.d[i].why);
	}
	/* UFFD_INJECT_TEST_TREE_DUMP_FAIL: fail after the stop, before publishing (tests). */
	if (ret == 0 && getenv("UFFD_INJECT_TEST_TREE_DUMP_FAIL"))
		ret = tfail(&t, EIO, "failed on purpose (UFFD_INJECT_TEST_TREE_DUMP_FAIL)");
	if (ret == 0)
		ret = tree_publish(&t);
	/*
	 * Published: from the first SIGKILL on, the images stay whatever
	 * happens (as with one process). Every process gets it before we wait
	 * for any, so none runs on while another is waited for.
	 */
	if (ret == 0 && o->kill) {
		killed = true;
		for (size_t i = 0; i < t.n; i++)
			if (syscall(SYS_pidfd_send_signal, t.d[i].pidfd, SIGKILL, NULL, 0) < 0 &&
			    errno != ESRCH && ret == 0)
				ret = tfail(&t, errno, "pid %d: kill: %s (the images are complete)",
					    (int)t.d[i].pid, strerror(errno));
		for (size_t i = 0; i < t.n; i++) {
			int r = kill_target(&t.d[i]);

			/* UFFD_INJECT_TEST_TREE_KILL_FAIL: as if the second outlived its SIGKILL. */
			if (r == 0 && i == 1 && getenv("UFFD_INJECT_TEST_TREE_KILL_FAIL"))
				r = dfail(&t.d[i], ETIMEDOUT, "still there (on purpose)");
			if (r < 0 && ret == 0)
				ret = tfail(&t, r, "%s", t.d[i].why);
		}
	}

	/* A failed dump leaves every process as it was, and no images. */
	for (size_t i = t.n; i-- > 0;) {
		struct dump *d = &t.d[i];

		if (ret < 0 && d->stopped && !d->was_stopped && d->pidfd >= 0)
			syscall(SYS_pidfd_send_signal, d->pidfd, SIGCONT, NULL, 0);
		if (ret < 0 && !killed) {
			dump_image_unpublish(&d->img);
			if (d->core_on && d->img.dirfd >= 0)
				core_abort(&d->core, d->img.dirfd);
			if (i == 0 && d->img.dirfd >= 0)
				dump_shmem_abort(&d->shm, d->img.dirfd);
		}
		if (i == 0 && (ret == 0 || killed))
			d->img.made_dir = false;
		cleanup(d);
		d->st->total_s = since(&d->t_start);
	}
	if (ret < 0)
		fprintf(stderr, "uffd-inject: dump: %s\n", t.why[0] ? t.why : strerror(-ret));
	for (size_t i = 0; i < t.n; i++) {
		if (ret == 0)
			summary(&t.d[i]);
		st->pages += t.st[i].pages;
		st->lazy_pages += t.st[i].lazy_pages;
		st->holes += t.st[i].holes;
		st->threads += t.st[i].threads;
		st->vmas += t.st[i].vmas;
		st->entries += t.st[i].entries;
		release(&t.d[i]);
	}
	if (ret == 0 && o->out)
		fprintf(o->out, "uffd-inject: tree of pid %d dumped to %s: %zu process%s\n",
			(int)o->pid, o->dir, t.n, t.n == 1 ? "" : "es");
	for (int i = 0; i < 3; i++)
		sigaction(sigs[i], &old[i], NULL);
	free(t.procs);
	free(t.more);
	free(t.d);
	free(t.st);
	return ret;
}

int dump_run(const struct dump_opts *o, struct dump_stats *st, struct dump_held *h)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
	struct sigaction sa, old[3];
	struct dump_stats local;
	struct dump d;
	struct rlimit nofile;
	char why[512];
	bool published = false;
	int ret;

	if (!st)
		st = &local;
	memset(st, 0, sizeof(*st));
	if (o->tree)
		return tree_run(o, st);
	memset(&d, 0, sizeof(d));
	d.o = o;
	d.st = st;
	d.pid = o->pid;
	d.pidfd = d.img.dirfd = d.img.pagesfd = d.pg.pmfd = d.pg.memfd = -1;
	clock_gettime(CLOCK_MONOTONIC, &d.t_start);

	dump_interrupted = 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	for (int i = 0; i < 3; i++)
		sigaction(sigs[i], &sa, &old[i]);
	/* One fd a shared memory object, held until it is written: the hard limit. */
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
		nofile.rlim_cur = nofile.rlim_max;
		setrlimit(RLIMIT_NOFILE, &nofile);
	}

	d.pc.t.tfd = d.pc.t.ufd = -1;
	if (o->hold && (!h || o->kill)) {
		ret = dfail(&d, EINVAL, "hold needs somewhere to hand the target and no kill");
		goto out;
	}
	if (o->leave_stopped && (o->kill || o->hold || o->predump)) {
		ret = dfail(&d, EINVAL, "--leave-stopped goes with neither --kill nor a hold nor a pre-dump");
		goto out;
	}
	if (o->predump && (o->hold || o->kill)) {
		ret = dfail(&d, EINVAL, "a pre-dump round neither holds nor kills");
		goto out;
	}
	if (o->predump || o->prev) {
		d.pc_on = true;
		d.pc.pid = o->pid;
		d.pc.prev = o->prev;
		d.pc.dir = o->dir;
		d.pc.last = !o->predump;
		ret = precopy_load_prev(&d.pc);
		if (ret < 0) {
			dfail(&d, ret, "%s", d.pc.why);
			goto out;
		}
	}
	if (o->pid <= 0 || o->pid == getpid()) {
		ret = dfail(&d, EINVAL, "cannot dump %s", o->pid <= 0 ? "that" : "myself");
		goto out;
	}
	ret = open_target(&d);
	if (ret == 0 && (ret = dump_image_open_dir(&d.img, o->dir, d.pid)) < 0)
		dfail(&d, ret, "%s", d.img.why);
	if (ret < 0)
		goto out;

	if (o->leave_stopped) {
		struct procfs_stat ps;

		d.was_stopped = procfs_read_stat(d.pid, &ps, why, sizeof(why)) == 0 &&
				ps.state == 'T';
	}
	preread(&d);
	if (!o->predump && !o->kill && !o->hold)
		d.pg.nbuf = read_ahead_ring(&d);
	dump_pages_prealloc(&d.pg);	/* if it fails, dump_pages() tries again and says so */
	/*
	 * The pages file, and for the last round of a chain its first pages
	 * written with zeros, before the freeze: the frozen writes then land
	 * on pages the file system (or a VM's host) has already provided.
	 */
	ret = dump_image_create_pages(&d.img, o->buffered);
	if (ret < 0) {
		dfail(&d, ret, "%s", d.img.why);
		goto out;
	}
	dump_image_prealloc_pages(&d.img, pages_estimate(&d));
	ret = pt_seize(&d.pt, d.pid, why, sizeof(why));
	if (ret < 0) {
		char own[32];
		size_t k = (size_t)snprintf(own, sizeof(own), "pid %d: ", (int)d.pid);

		/* The engine names the pid too; say it once. */
		dfail(&d, ret, "cannot freeze: %s", strncmp(why, own, k) ? why : why + k);
		goto out;
	}
	d.seized = true;
	clock_gettime(CLOCK_MONOTONIC, &d.t_frozen);
	/* pt_seize puts a living leader first; a zombie one has no /proc/PID/maps to read. */
	if (d.pt.th[0].tid != d.pid) {
		ret = dfail(&d, ENOTSUP, "its main thread has exited (%d other threads run on): "
			    "not supported", d.pt.nr_threads);
		goto out;
	}

	ret = read_proc(&d);
	if (ret == 0)
		ret = check_mm_shared(&d);
	if (ret == 0)
		ret = classify_all(&d);
	if (ret == 0)
		ret = find_eager(&d);
	phase(&d, "areas read");
	if (ret == 0)
		ret = precopy_round(&d);
	phase(&d, "written set read");
	/* A round goes on reading while the target runs: it is tracked. */
	if (ret == 0 && o->predump) {
		let_go(&d);
		dump_test_hook("running", d.pidfd);
	}
	/* Shared memory objects, read whole while frozen (before a read-ahead lets go). */
	if (ret == 0 && !o->hold && !d.pc_on &&
	    (ret = dump_shmem_collect(&d.shm, d.pid, &d.maps, o->kill || o->leave_stopped)) < 0)
		dfail(&d, ret, "cannot dump: %s", d.shm.why);
	if (ret == 0 && (ret = dump_shmem_check_users(&d.shm, &d.pid, 1)) < 0)
		dfail(&d, ret, "cannot dump: %s", d.shm.why);
	if (ret == 0 && (o->kill || o->leave_stopped)) {
		d.core_on = true;
		d.core.shm = &d.shm;
		ret = core_collect(&d.core, &d.pt, &d.maps, why, sizeof(why));
		if (ret < 0)
			dfail(&d, ret, "cannot dump for restore: %s", why);
	}
	if (ret == 0 && (ret = dump_shmem_write(&d.shm, d.img.dirfd, o->dir, 2)) < 0)
		dfail(&d, ret, "%s", d.shm.why);
	if (ret == 0) {
		st->threads = d.ntids;
		ret = dump_pages_file(&d);
	}
	phase(&d, "pages copied");
	if (ret == 0 && d.pc_on)
		dump_test_hook("copied", d.pidfd);
	if (ret == 0)
		ret = precopy_finish(&d);
	if (ret < 0)
		goto out;
	/* Every byte is read: a target that goes on living need not wait for the disk. */
	if (!o->kill && !o->hold && !o->leave_stopped)
		let_go(&d);
	if (d.pc_on && !o->predump && !o->hold && !o->kill && !o->leave_stopped)
		precopy_unregister(&d.pc, &d.maps);
	if (!o->leave_stopped)
		ret = recheck_flags(&d);
	if (ret == 0)
		ret = write_images(&d);
	if (ret == 0 && d.core_on && (ret = core_write(&d.core, d.img.dirfd, why, sizeof(why))) < 0)
		dfail(&d, ret, "%s/%s", o->dir, why);
	if (ret == 0 && d.core_on && (ret = core_publish(&d.core, d.img.dirfd, why, sizeof(why))) < 0)
		dfail(&d, ret, "%s/%s", o->dir, why);
	if (ret == 0 && d.pc_on && (ret = precopy_write_files(&d.pc, d.img.dirfd)) < 0)
		dfail(&d, ret, "%s", d.pc.why);
	/* Stopped, the target holds still for the check of its VmFlags. */
	if (ret == 0 && o->leave_stopped) {
		if (!d.stopped && (ret = stop_target(&d)) == 0)
			d.stopped = true;
		if (ret == 0 && d.pc_on)
			precopy_unregister(&d.pc, &d.maps);	/* through our copy: it need not run */
		if (ret == 0)
			ret = recheck_flags(&d);
	}
	/* UFFD_INJECT_TEST_DUMP_FAIL_PUBLISH: fail with the cores published, the rest not (tests). */
	if (ret == 0 && d.core_on && getenv("UFFD_INJECT_TEST_DUMP_FAIL_PUBLISH"))
		ret = dfail(&d, EIO, "failed on purpose (UFFD_INJECT_TEST_DUMP_FAIL_PUBLISH)");
	if (ret == 0 && (ret = dump_shmem_publish(&d.shm, d.img.dirfd, o->dir)) < 0)
		dfail(&d, ret, "%s", d.shm.why);
	if (ret == 0 && (ret = publish(&d)) == 0)
		published = true;
	/* From here the images are complete and stay, whatever happens (kill says so). */
	if (ret == 0 && o->kill)
		ret = kill_target(&d);
	/* UFFD_INJECT_TEST_KILL_FAIL: as if the target outlived its SIGKILL (tests). */
	if (ret == 0 && o->kill && getenv("UFFD_INJECT_TEST_KILL_FAIL"))
		ret = dfail(&d, ETIMEDOUT, "still there after SIGKILL (on purpose; the images "
			    "are complete)");
	if (ret == 0 && o->hold) {
		phase(&d, "images out");
		hold(&d, h);
	}
out:
	/* A failed dump leaves the target running, as it was (stopped if it was). */
	if (ret < 0 && d.stopped && !d.was_stopped)
		syscall(SYS_pidfd_send_signal, d.pidfd, SIGCONT, NULL, 0);
	if (ret == 0 || published)
		d.img.made_dir = false;
	else if (d.core_on && d.img.dirfd >= 0)
		core_abort(&d.core, d.img.dirfd);
	if (ret < 0 && !published && d.img.dirfd >= 0)
		dump_shmem_abort(&d.shm, d.img.dirfd);
	if (ret < 0 && !published)
		precopy_fail(&d);
	cleanup(&d);	/* after publish() there are no temporary files left */
	st->total_s = since(&d.t_start);
	if (ret < 0)
		fprintf(stderr, "uffd-inject: %s: %s\n", o->hold ? "lazy" : o->predump ?
			"pre-dump" : "dump",
			d.why[0] ? d.why : strerror(-ret));
	else
		summary(&d);
	release(&d);
	for (int i = 0; i < 3; i++)
		sigaction(sigs[i], &old[i], NULL);
	return ret;
}
