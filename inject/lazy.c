/*
 * Hand a running process's memory to uffd-manager.
 *
 * The order is what keeps the target correct, and it stays frozen from the
 * first byte dumped until the manager has accepted it:
 *   1. dump it (images on disk, every thread still stopped);
 *   2. inside it, create a userfaultfd and move it to a high close-on-exec
 *      fd: that copy stays with the target, so that if the manager ever dies
 *      its missing pages make it wait rather than read zeros;
 *   3. take the fd with pidfd_getfd, enable the events from here, and
 *      register every area holding lazy pages;
 *   4. drop those areas' pages (MADV_DONTNEED run inside it), except the
 *      ones the kernel reads for other processes. The areas are registered
 *      already, so the REMOVE events this makes are read and discarded here:
 *      the manager, which has not seen the fd yet, never takes them for
 *      pages that became zero. If we die from here on, the target blocks on
 *      its missing pages; it never reads a zero where it had data;
 *   5. send HELLO (uffd, pidfd, image dir) to the manager, which builds its
 *      model from the images and serves;
 *   6. let the target go.
 * When the manager refuses, the pages are put back from the images with
 * UFFDIO_COPY, the areas unregistered and the target's fd closed: it runs
 * on with all of its memory, as if nothing had happened.
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "dump.h"
#include "grave.h"
#include "handover.h"
#include "lazy.h"
#include "log.h"
#include "manager.pb-c.h"
#include "pagemap.h"
#include "procfs.h"
#include "ptrace.h"
#include "track.h"
#include "uffd_compat.h"
#include "wire.h"
#include "why.h"

#define LZ_PAGE		4096ull
#define LZ_FEATURES	(UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | \
			 UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP | \
			 UFFD_FEATURE_THREAD_ID)
#define LZ_FD_CEIL	1024	/* the kept fd goes below this, and below RLIMIT_NOFILE */
#define LZ_FD_SPARE	8	/* free fds the target must have left */
#define LZ_COPY_TRIES	100000	/* EAGAIN with nothing copied: events we cannot drain */

/* Reads the REMOVE events our own MADV_DONTNEED makes, while it runs. */
struct lz_reader {
	pthread_t th;
	bool started;
	int fd;
	atomic_bool stop;
	int wake[2];		/* a pipe: written to stop it at once, not at its next poll */
	uint64_t removes;
	uint64_t faults;	/* a process that read the target meanwhile: woken at the end */
	uint64_t others;
	int err;
};

struct lz {
	const struct lazy_opts *o;
	struct lazy_stats *st;
	struct dump_held h;
	bool held;
	int tfd;		/* the uffd in the target: its kept copy */
	int want_fd;		/* where that copy goes */
	int old_kept;		/* the copy an earlier hand-over left, or -1 */
	int ufd;		/* ours */
	uint64_t features;	/* asked at UFFDIO_API: LZ_FEATURES, and MINOR_SHMEM for shared memory */
	bool *reg;		/* area i is registered */
	bool dropped;		/* pages were dropped: undo by serving them */
	struct grave g;		/* big areas moved out of the way (grave.h) */
	bool exitkill;		/* the target dies with us: a move is not registered yet */
	struct lz_reader rd;
	struct timespec t0;
	char why[768];
};

static double since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (t.tv_nsec - t0->tv_nsec) / 1e9;
}

static int lfail(struct lz *z, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int lfail(struct lz *z, int code, const char *fmt, ...)
{
	char prefix[32];
	va_list ap;
	int ret;

	snprintf(prefix, sizeof(prefix), "pid %d: ", (int)z->o->pid);
	va_start(ap, fmt);
	ret = why_vfirst(z->why, sizeof(z->why), code, prefix, fmt, ap);
	va_end(ap);
	return ret;
}

/* Does this kernel give a userfaultfd every event we need? Asked of our own. */
static int check_kernel(struct lz *z)
{
	struct uffdio_api api = { .api = UFFD_API };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return lfail(z, errno, "userfaultfd: %s%s", strerror(errno),
			     errno == EPERM ? " (needs CAP_SYS_PTRACE, or "
			     "vm.unprivileged_userfaultfd=1)" : "");
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int e = errno;

		close(fd);
		return lfail(z, e, "UFFDIO_API: %s", strerror(e));
	}
	close(fd);
	if ((api.features & LZ_FEATURES) != LZ_FEATURES)
		return lfail(z, ENOTSUP, "this kernel's userfaultfd lacks features 0x%llx "
			     "(fork, remap, remove, unmap events and thread ids are needed)",
			     (unsigned long long)(LZ_FEATURES & ~api.features));
	return 0;
}

/* Is a manager listening at the socket? Asked before the target is touched. */
static int check_manager(struct lz *z)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd, e;

	if (strlen(z->o->socket) >= sizeof(a.sun_path))
		return lfail(z, ENAMETOOLONG, "%s: socket path too long", z->o->socket);
	strcpy(a.sun_path, z->o->socket);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return lfail(z, errno, "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
		close(fd);
		return 0;
	}
	e = errno;
	close(fd);
	return lfail(z, e, "no manager at %s: %s", z->o->socket, strerror(e));
}

/* "Name:   N kB" of /proc/PID/status, in bytes; 0 when absent. */
static uint64_t status_bytes(pid_t pid, const char *name)
{
	char path[64];
	long long kb;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	return procfs_field_num(path, name, &kb) == 0 && kb > 0 ? (uint64_t)kb * 1024 : 0;
}

/* Run a syscall in the target; an injection failure becomes a message. */
static int tsys(struct lz *z, long *ret, const char *what, long nr, long a1, long a2, long a3)
{
	int r = pt_syscall(&z->h.pt, ret, nr, a1, a2, a3, 0, 0, 0);

	if (r == -ESRCH)
		return lfail(z, ESRCH, "the process exited during the hand-over");
	if (r < 0)
		return lfail(z, -r, "cannot run %s in it: %s", what, strerror(-r));
	return 0;
}

/* The features a userfaultfd has enabled, from the fdinfo of PID's fd FD; 0 if unknown. */
static uint64_t uffd_fd_features(pid_t pid, int fd)
{
	char path[64];
	uint64_t raw;

	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", (int)pid, fd);
	return procfs_uffd_api(path, &raw) == 0 ? raw & ~PROCFS_UFFD_INITIALIZED : 0;
}

/*
 * What the target's fds tell before it is touched: refuse pinned memory
 * (io_uring, whose kernel side writes into pages we would drop) and a
 * userfaultfd of its own; note the kept copy an earlier hand-over left
 * (inert: we refuse any registered area), to be replaced; and pick the fd
 * for the new kept copy: the highest free one below its fd limit and 1024,
 * leaving it a few.
 */
static int survey_fds(struct lz *z)
{
	uint8_t used[LZ_FD_CEIL] = { 0 };
	char path[64], link[64];
	struct dirent *de;
	struct rlimit rl;
	int top = LZ_FD_CEIL, nused = 0;
	DIR *d;

	if (status_bytes(z->o->pid, "VmPin") > 0)
		return lfail(z, ENOTSUP, "it has pinned memory (VmPin %" PRIu64 " kB: io_uring "
			     "buffers, RDMA, a device): the kernel could write into pages after "
			     "they are dropped", status_bytes(z->o->pid, "VmPin") / 1024);
	if (prlimit(z->o->pid, RLIMIT_NOFILE, NULL, &rl) == 0 && rl.rlim_cur < (rlim_t)top)
		top = (int)rl.rlim_cur;
	memset(used, 0, sizeof(used));
	z->old_kept = -1;
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)z->o->pid);
	d = opendir(path);
	if (!d)
		return lfail(z, errno, "%s: %s", path, strerror(errno));
	while ((de = readdir(d))) {
		char *end;
		long fd = strtol(de->d_name, &end, 10);
		char lp[96];
		ssize_t n;

		if (*end || fd < 0)
			continue;
		nused++;
		if (fd < LZ_FD_CEIL)
			used[fd] = 1;
		snprintf(lp, sizeof(lp), "%s/%ld", path, fd);
		n = readlink(lp, link, sizeof(link) - 1);
		link[n > 0 ? n : 0] = '\0';
		if (!strcmp(link, "anon_inode:[io_uring]")) {
			closedir(d);
			return lfail(z, ENOTSUP, "it uses io_uring (fd %ld): the kernel could "
				     "write into pages after they are dropped", fd);
		}
		if (strcmp(link, "anon_inode:[userfaultfd]"))
			continue;
		/* A pre-copy tracker: the dump takes it down before we register. */
		if (track_is_tracker(z->o->pid, (int)fd))
			continue;
		if (fd >= LZ_FD_CEIL / 2 && z->old_kept < 0 &&
		    uffd_fd_features(z->o->pid, (int)fd) == LZ_FEATURES) {
			z->old_kept = (int)fd;	/* ours, from an earlier hand-over */
			continue;
		}
		closedir(d);
		return lfail(z, EBUSY, "it has a userfaultfd of its own (fd %ld): its areas "
			     "could not be registered again", fd);
	}
	closedir(d);
	if (top - nused < LZ_FD_SPARE)
		return lfail(z, EMFILE, "it has only %d free fds below its limit of %d; %d "
			     "are needed to leave it room", top - nused, top, LZ_FD_SPARE);
	z->want_fd = -1;
	for (int fd = top - 1; fd >= 3 && z->want_fd < 0; fd--)
		if (!used[fd])
			z->want_fd = fd;
	if (z->want_fd < 0)
		return lfail(z, EMFILE, "no free fd below %d", top);
	return 0;
}

/* Steps 2-3: the target's own uffd at a high fd, our copy, the events on. */
static int make_uffd(struct lz *z)
{
	struct uffdio_api api = { .api = UFFD_API, .features = LZ_FEATURES };
	long fd, kfd = -1, r;
	int ret;

	for (size_t i = 0; i < z->h.nvmas; i++)
		if (z->h.areas[i].kind == DUMP_SHMEM)
			api.features |= UFFD_FEATURE_MINOR_SHMEM;
	z->features = api.features;

	ret = tsys(z, &fd, "userfaultfd()", SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK, 0, 0);
	if (ret < 0)
		return ret;
	if (fd < 0)
		return lfail(z, -fd, "userfaultfd() in the process: %s%s", strerror(-fd),
			     fd == -EPERM ? " (vm.unprivileged_userfaultfd is 0 and the "
			     "process lacks CAP_SYS_PTRACE)" : "");
	/* Out of the way of the numbers it will open next. */
	if (z->want_fd > fd) {
		ret = tsys(z, &kfd, "fcntl()", SYS_fcntl, fd, F_DUPFD_CLOEXEC, z->want_fd);
		if (ret < 0)
			return ret;
	}
	if (kfd >= 0) {
		ret = tsys(z, &r, "close()", SYS_close, fd, 0, 0);
		if (ret < 0)
			return ret;
	} else {
		kfd = fd;	/* no room up high: it stays where it was made */
	}
	z->tfd = (int)kfd;
	z->st->kept_fd = (int)kfd;

	z->ufd = pt_getfd(&z->h.pt, z->tfd);
	if (z->ufd < 0)
		return lfail(z, -z->ufd, "pidfd_getfd of its fd %d: %s", z->tfd,
			     strerror(-z->ufd));
	if (ioctl(z->ufd, UFFDIO_API, &api) < 0)
		return lfail(z, errno, "UFFDIO_API on its userfaultfd: %s%s", strerror(errno),
			     errno == EINVAL && (api.features & UFFD_FEATURE_MINOR_SHMEM) ?
			     " (its shared memory needs UFFD_FEATURE_MINOR_SHMEM, Linux 5.14)" : "");
	return 0;
}

/* Step 3: register every area that holds lazy pages. */
static int register_areas(struct lz *z)
{
	/* Tests: the Nth registration fails, after big areas were moved. */
	const char *fail = getenv("UFFD_INJECT_TEST_FAIL_REGISTER");
	int fail_at = fail ? atoi(fail) : 0, n = 0;

	z->reg = calloc(z->h.nvmas ? z->h.nvmas : 1, sizeof(*z->reg));
	if (!z->reg)
		return lfail(z, ENOMEM, "out of memory");
	for (size_t i = 0; i < z->h.npe; i++)
		if (z->h.pe[i].flags & PE_LAZY) {
			z->reg[z->h.pe[i].area] = true;
			z->st->lazy_pages += z->h.pe[i].nr;
		} else if (z->h.areas[z->h.pe[i].area].kind == DUMP_ANON ||
			   z->h.areas[z->h.pe[i].area].kind == DUMP_SHMEM) {
			z->st->eager_pages += z->h.pe[i].nr;
		}
	for (size_t i = 0; i < z->h.nvmas; i++) {
		const VmaEntry *v = &z->h.vmas[i];
		struct uffdio_register r = {
			.range = { v->start, v->end - v->start },
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};

		if (!z->reg[i])
			continue;
		/* Shared memory: MINOR too, for pages in the object but not mapped (serve.c). */
		if (z->h.areas[i].kind == DUMP_SHMEM)
			r.mode |= UFFDIO_REGISTER_MODE_MINOR;
		if (++n == fail_at || ioctl(z->ufd, UFFDIO_REGISTER, &r) < 0) {
			int e = n == fail_at ? EIO : errno;
			struct uffdio_range all = r.range;

			/* Tests: a registration that fails half way, as a VMA split can. */
			if (n == fail_at && getenv("UFFD_INJECT_TEST_FAIL_REGISTER_HALF")) {
				r.range.len = r.range.len / 2 & ~(LZ_PAGE - 1);
				ioctl(z->ufd, UFFDIO_REGISTER, &r);
			}
			/*
			 * The kernel registers area by area: a failure can leave
			 * the first part of this one registered. Taken down
			 * whole, so that reg[] tells the truth to undo(), whose
			 * move back from the graveyard would otherwise unmap a
			 * registered part and wait for ever on an UNMAP event
			 * nobody reads.
			 */
			ioctl(z->ufd, UFFDIO_UNREGISTER, &all);
			/* Neither this one nor the ones after it: undo() goes by reg[]. */
			for (size_t j = i; j < z->h.nvmas; j++)
				z->reg[j] = false;
			return lfail(z, e, "cannot register 0x%" PRIx64 "-0x%" PRIx64 ": %s%s",
				     v->start, v->end, strerror(e),
				     e == EBUSY ? " (another userfaultfd has it)" : "");
		}
		z->st->areas++;
	}
	return 0;
}

static void *reader_main(void *arg)
{
	struct lz_reader *r = arg;
	struct uffd_msg m[64];

	while (!atomic_load(&r->stop)) {
		struct pollfd p[2] = { { .fd = r->fd, .events = POLLIN },
				       { .fd = r->wake[0], .events = POLLIN } };
		ssize_t n;

		if (poll(p, 2, 20) <= 0 || !(p[0].revents & POLLIN))
			continue;
		n = read(r->fd, m, sizeof(m));
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				r->err = errno;
			continue;
		}
		for (size_t i = 0; i < (size_t)n / sizeof(m[0]); i++) {
			if (m[i].event == UFFD_EVENT_REMOVE)
				r->removes++;
			else if (m[i].event == UFFD_EVENT_PAGEFAULT)
				r->faults++;
			else
				r->others++;
		}
	}
	return NULL;
}

/*
 * Must the page at A of shared area V stay in its object? When it is eager
 * (resident) there, or in any other area of this process on the same object
 * at the same offset: punching through V would take it from that one too.
 */
static bool eager_in_object(const struct lz *z, const VmaEntry *v, uint64_t a)
{
	uint64_t off = v->pgoff + (a - v->start);

	for (size_t i = 0; i < z->h.nvmas; i++) {
		const VmaEntry *w = &z->h.vmas[i];

		if (z->h.areas[i].kind != DUMP_SHMEM || w->shmid != v->shmid ||
		    off < w->pgoff || off - w->pgoff >= w->end - w->start)
			continue;
		if (dump_range_has(z->h.eager, z->h.neager, w->start + (off - w->pgoff)))
			return true;
	}
	return false;
}

/*
 * Step 4 for shared memory: punch the pages of V out of its shmem object
 * (fallocate PUNCH_HOLE on /proc/PID/map_files), all but the resident ones.
 * MADV_DONTNEED would only unmap them: the object would keep them and the
 * process would find them again with no fault. The images hold every page
 * the object had in this range (dump_pages.c read the object, not the page
 * tables), and no other process maps it (dump_area.c), so from here a page
 * is back only when the manager puts it there.
 */
static int punch_area(struct lz *z, const VmaEntry *v)
{
	char path[96], link[16] = "";
	uint64_t a = v->start;
	struct stat st;
	int fd, ret = 0;

	snprintf(path, sizeof(path), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, (int)z->o->pid,
		 v->start, v->end);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return lfail(z, errno, "%s (its shared memory object): %s", path, strerror(errno));
	/*
	 * Asked again now that it is frozen: the dump looked before the freeze,
	 * and a child forked since would share the object unwatched.
	 */
	if (fstat(fd, &st) < 0 || dump_area_mapped_elsewhere(z->o->pid, major(st.st_dev),
							      minor(st.st_dev), st.st_ino)) {
		close(fd);
		return lfail(z, EBUSY, "another process maps its shared memory at 0x%" PRIx64
			     "-0x%" PRIx64 " now (a child forked during the dump?): not handed "
			     "over; try again", v->start, v->end);
	}
	/* A memfd: and still open at no descriptor (one may have been passed meanwhile). */
	if (readlink(path, link, sizeof(link) - 1) > 7 && !strncmp(link, "/memfd:", 7) &&
	    dump_area_open_anywhere(major(st.st_dev), minor(st.st_dev), st.st_ino)) {
		close(fd);
		return lfail(z, EBUSY, "its memfd at 0x%" PRIx64 "-0x%" PRIx64 " is open at a "
			     "descriptor now (a read(2) of a punched page would give zeros): not "
			     "handed over; try again", v->start, v->end);
	}
	while (a < v->end && ret == 0) {
		uint64_t b;

		while (a < v->end && eager_in_object(z, v, a))
			a += LZ_PAGE;
		b = a;
		while (b < v->end && !eager_in_object(z, v, b))
			b += LZ_PAGE;
		if (b > a && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				       (off_t)(v->pgoff + (a - v->start)), (off_t)(b - a)) < 0)
			ret = lfail(z, errno, "cannot punch 0x%" PRIx64 "-0x%" PRIx64 " out of its "
				    "shared memory object: %s", a, b, strerror(errno));
		a = b;
	}
	close(fd);
	return ret;
}

/* Step 4: MADV_DONTNEED every anonymous area but its resident pages, inside the target. */
static int drop_pages(struct lz *z)
{
	int ret;

	z->rd.fd = z->ufd;
	atomic_store(&z->rd.stop, false);
	if (pipe2(z->rd.wake, O_CLOEXEC) < 0)
		return lfail(z, errno, "pipe: %s", strerror(errno));
	ret = pthread_create(&z->rd.th, NULL, reader_main, &z->rd);
	if (ret) {
		close(z->rd.wake[0]);
		close(z->rd.wake[1]);
		return lfail(z, ret, "cannot start the event reader: %s", strerror(ret));
	}
	z->rd.started = true;
	z->dropped = true;
	ret = 0;
	/* Only where the dump found pages: an area can be terabytes of nothing. */
	for (size_t i = 0; i < z->h.nspans && ret == 0; i++) {
		const struct dump_range *v = &z->h.spans[i];
		uint64_t a = v->start;

		/* Anonymous areas whose pages are lazy (not wipe-on-fork, sealed...). */
		if (z->h.areas[v->area].kind != DUMP_ANON ||
		    !(z->h.areas[v->area].pe_flags & PE_LAZY))
			continue;
		if (grave_has(&z->g, v->area))
			continue;	/* empty already: its pages are in the graveyard */
		while (a < v->end && ret == 0) {
			uint64_t b = a;
			long r;

			while (a < v->end && dump_range_has(z->h.eager, z->h.neager, a))
				a += LZ_PAGE;
			b = a;
			while (b < v->end && !dump_range_has(z->h.eager, z->h.neager, b))
				b += LZ_PAGE;
			if (b == a)
				break;
			ret = tsys(z, &r, "madvise()", SYS_madvise, (long)a, (long)(b - a),
				   MADV_DONTNEED);
			if (ret == 0 && r < 0)
				ret = lfail(z, -r, "madvise(0x%" PRIx64 ", %" PRIu64
					    ", MADV_DONTNEED): %s", a, b - a, strerror(-r));
			a = b;
		}
	}
	for (size_t i = 0; i < z->h.nvmas && ret == 0; i++)
		if (z->h.areas[i].kind == DUMP_SHMEM && z->reg[i])
			ret = punch_area(z, &z->h.vmas[i]);
	atomic_store(&z->rd.stop, true);
	if (write(z->rd.wake[1], "", 1) < 0) {
		/* it still sees the flag within its poll's 20 ms */
	}
	pthread_join(z->rd.th, NULL);
	close(z->rd.wake[0]);
	close(z->rd.wake[1]);
	z->rd.started = false;
	if (ret == 0 && z->rd.err)
		ret = lfail(z, z->rd.err, "reading its userfaultfd: %s", strerror(z->rd.err));
	if (ret == 0 && z->rd.others)
		ret = lfail(z, EPROTO, "%" PRIu64 " unexpected events while it was frozen",
			    z->rd.others);
	return ret;
}

/* Wake whoever faulted while we held the fd: their fault comes again, to the manager. */
static void wake_all(struct lz *z)
{
	for (size_t i = 0; i < z->h.nvmas; i++) {
		struct uffdio_range r = { z->h.vmas[i].start,
					  z->h.vmas[i].end - z->h.vmas[i].start };

		if (z->reg[i])
			ioctl(z->ufd, UFFDIO_WAKE, &r);
	}
}

/* Copy LEN bytes from SRC to the target's ADDR; pages already there are left alone. */
static int copy_in(struct lz *z, uint64_t addr, const uint8_t *src, uint64_t len)
{
	unsigned tries = 0;

	while (len) {
		if (++tries > LZ_COPY_TRIES)
			return -EAGAIN;
		struct uffdio_copy c = { .dst = addr, .src = (uintptr_t)src, .len = len };

		if (ioctl(z->ufd, UFFDIO_COPY, &c) == 0 || (errno == EAGAIN && c.copy > 0)) {
			uint64_t done = c.copy > 0 ? (uint64_t)c.copy : len;

			addr += done;
			src += done;
			len -= done;
			continue;
		}
		if (errno == EAGAIN)
			continue;
		if (errno != EEXIST)
			return -errno;
		/* Some page in the range is there: go page by page. */
		for (uint64_t x = 0; x < len; x += LZ_PAGE) {
			struct uffdio_copy p = { .dst = addr + x, .src = (uintptr_t)(src + x),
						 .len = LZ_PAGE };

			while (ioctl(z->ufd, UFFDIO_COPY, &p) < 0 && errno != EEXIST)
				if (errno != EAGAIN || ++tries > LZ_COPY_TRIES)
					return errno == EAGAIN ? -EAGAIN : -errno;
		}
		return 0;
	}
	return 0;
}

/* Poison LEN bytes at ADDR in the target again (a page it could not read at the dump). */
static int poison_in(struct lz *z, uint64_t addr, uint64_t len)
{
	unsigned tries = 0;

	while (len) {
		struct uffdio_poison p = { .range = { addr, len } };

		if (++tries > LZ_COPY_TRIES)
			return -EAGAIN;
		if (ioctl(z->ufd, UFFDIO_POISON, &p) == 0 || (errno == EAGAIN && p.updated > 0)) {
			uint64_t done = p.updated > 0 ? (uint64_t)p.updated : len;

			addr += done;
			len -= done;
			continue;
		}
		if (errno == EAGAIN)
			continue;
		if (errno != EEXIST)
			return -errno;
		/* A page in the range is there (it was never dropped): go page by page. */
		for (uint64_t x = 0; x < len; x += LZ_PAGE) {
			struct uffdio_poison q = { .range = { addr + x, LZ_PAGE } };

			while (ioctl(z->ufd, UFFDIO_POISON, &q) < 0 && errno != EEXIST)
				if (errno != EAGAIN || ++tries > LZ_COPY_TRIES)
					return errno == EAGAIN ? -EAGAIN : -errno;
		}
		return 0;
	}
	return 0;
}

/* Have the target die with us, or no longer (pt_exitkill). */
static void exitkill(struct lz *z, bool on)
{
	if (z->exitkill == on || !z->h.pt.th || z->h.pt.gone)
		return;
	if (pt_exitkill(&z->h.pt, on) == 0 || !on)
		z->exitkill = on;
	else
		pt_exitkill(&z->h.pt, false);	/* none half set: it would die for nothing */
}

static int bury(struct lz *z, const char *skip);

/*
 * Step 4, first half, for big areas (grave.h): move their pages into a
 * graveyard while a tracker may still hold them, so that taking the tracker
 * down and dropping the pages cost nothing in the freeze. From the first
 * move to the registration of the last moved area, nothing makes the target
 * wait for those pages: should we die there, it would read zeros. So the
 * kernel kills it with us until then (exitkill), and put_eager() ends that.
 */
static int move_out(struct lz *z)
{
	int ret = grave_plan(&z->g, &z->h);

	if (ret < 0)
		return lfail(z, -ret, "out of memory");
	if (ret == 0)
		return 0;
	/* Its areas were read before the freeze: one may have been registered since. */
	ret = grave_probe(&z->g, z->ufd, z->h.track.ufd);
	if (ret < 0)
		return lfail(z, -ret, "%s", z->g.why);
	if (ret == 0)
		return 0;
	ret = grave_reserve(&z->g, &z->h.pt);
	if (ret < 0)
		return lfail(z, -ret, "%s", z->g.why);
	z->st->grave_base = z->g.base;
	z->st->grave_len = z->g.len;
	log_debug("graveyard reserved at %.1f ms", since(&z->t0) * 1e3);
	dump_test_hook("graveyard", -1);
	if (!z->g.n)
		return 0;	/* no room */
	exitkill(z, true);
	if (!z->exitkill) {
		z->g.n = 0;
		return bury(z, "PTRACE_O_EXITKILL could not be set");
	}
	z->dropped = true;	/* from the first move on, undo() puts pages back */
	ret = grave_dig(&z->g, &z->h.pt);
	if (ret < 0)
		return lfail(z, -ret, "%s", z->g.why);
	if (!z->g.n)
		exitkill(z, false);	/* nothing moved */
	z->st->grave_areas = (unsigned)z->g.n;
	z->st->grave_pages = z->g.moved_pages;
	z->st->grave_base = z->g.base;
	z->st->grave_len = z->g.len;
	return 0;
}

/*
 * Put the part of the resident range [START, END) that lies in moved piece K
 * back in place from the graveyard, through *BUF (*CAP bytes).
 */
static int put_range(struct lz *z, size_t k, uint64_t start, uint64_t end, uint8_t **buf,
		     size_t *cap)
{
	const struct grave_piece *p = &z->g.p[k];
	uint64_t from, len;
	int ret;

	/*
	 * The dump merges ranges that touch, across the bounds of areas:
	 * clipped to the piece, or the read would run past it in the
	 * graveyard (into another piece, or the unmapped gap between them).
	 */
	if (start < p->start)
		start = p->start;
	if (end > p->end)
		end = p->end;
	if (start >= end)
		return 0;
	from = p->at + (start - p->start);
	len = end - start;
	if (len > *cap) {
		uint8_t *b = realloc(*buf, len);

		if (!b)
			return lfail(z, ENOMEM, "out of memory");
		*buf = b;
		*cap = len;
	}
	ret = pt_read(&z->h.pt, from, *buf, len);
	if (ret < 0)
		return lfail(z, -ret, "reading 0x%" PRIx64 "-0x%" PRIx64 " back from the "
			     "graveyard: %s", start, end, strerror(-ret));
	ret = copy_in(z, start, *buf, len);
	if (ret < 0)
		return lfail(z, -ret, "putting 0x%" PRIx64 "-0x%" PRIx64 " back: %s", start, end,
			     strerror(-ret));
	return 0;
}

/*
 * Step 4, second half: the pages of moved areas that must stay resident
 * (the argument block, the stack under each thread, rseq...: never lazy)
 * are read from the graveyard and placed where they were.
 */
static int put_eager(struct lz *z)
{
	uint8_t *buf = NULL;
	size_t cap = 0;
	int ret = 0;

	for (size_t i = 0; i < z->h.neager && ret == 0; i++)
		for (size_t k = 0; k < z->g.n && ret == 0; k++)
			ret = put_range(z, k, z->h.eager[i].start, z->h.eager[i].end, &buf, &cap);
	/*
	 * Tests: a resident range that runs one page past the end of the
	 * first moved area, as the dump's merge of touching ranges can make.
	 */
	if (ret == 0 && z->g.n && getenv("UFFD_INJECT_TEST_EAGER_ACROSS"))
		ret = put_range(z, 0, z->g.p[0].end - LZ_PAGE, z->g.p[0].end + LZ_PAGE, &buf,
				&cap);
	free(buf);
	if (ret == 0)
		exitkill(z, false);	/* registered, and what stays resident is there */
	return ret;
}

/* The graveyard's end in the freeze (the fall-back): unmap it; say why in SKIP. */
static int bury(struct lz *z, const char *skip)
{
	int ret;

	if (!z->g.len && !z->g.stub)
		return 0;
	if (skip && !z->g.skip)
		z->g.skip = skip;
	ret = grave_bury(&z->g, &z->h.pt);
	if (ret < 0)
		return lfail(z, -ret, "%s", z->g.why);
	return 0;
}

/* Place the dropper's code and start it; on failure, the graveyard goes now. */
static int start_dropper(struct lz *z)
{
	const char *skip = "the dropper's code could not be placed";
	int ret = grave_stub(&z->g, &z->h.pt);

	z->st->stub = z->g.stub;
	if (ret == 0) {
		skip = "the thread to free it could not be started";
		ret = grave_start(&z->g, &z->h.pt);
	}
	if (ret == 0) {
		dump_test_hook("dropper", -1);
		return 0;
	}
	if (z->h.pt.gone)
		return lfail(z, ESRCH, "the process exited during the hand-over");
	fprintf(stderr, "uffd-inject: pid %d: %s: the graveyard is freed in the freeze\n",
		(int)z->o->pid, z->g.why);
	return bury(z, skip);
}

/*
 * Undo steps 2-4: put every dropped page back from the images, unregister,
 * close the target's fd. Returns 0, or -errno when pages could not be put
 * back (the target then waits on them: never zeros).
 */
static int undo(struct lz *z)
{
	int ret = 0;

	if (z->h.pt.gone)
		return 0;	/* nothing left to put back */
	/* Moved areas not registered yet: their pages go straight back. */
	for (size_t k = z->g.n; k-- > 0;) {
		struct grave_piece *p = &z->g.p[k];

		if (z->reg && z->reg[p->area])
			continue;
		if (grave_put_back(&z->g, &z->h.pt, k) < 0) {
			/* Empty and watched by nothing: it must not run like that. */
			fprintf(stderr, "uffd-inject: pid %d: %s; killing it rather than let it "
				"read zeros where its memory was\n", (int)z->o->pid, z->g.why);
			syscall(SYS_pidfd_send_signal, z->h.pidfd, SIGKILL, NULL, 0);
			return -EIO;
		}
		memmove(p, p + 1, (z->g.n - k - 1) * sizeof(*p));
		z->g.n--;
	}
	exitkill(z, false);
	if (z->dropped) {
		struct pages_cache cache;
		struct pagemap *pm = NULL;
		struct img_err err;

		/* Through the pagemap: pages in the parent come from the chain. */
		pages_cache_init(&cache);
		if (pagemap_load(&pm, z->h.dirfd, (uint32_t)z->o->pid, &cache, &err) < 0) {
			ret = -EIO;
		} else {
			for (size_t i = 0; i < z->h.npe && ret == 0; i++) {
				uint64_t a = z->h.pe[i].vaddr, end = a + z->h.pe[i].nr * LZ_PAGE;

				uint32_t ar = z->h.pe[i].area;
				/* Moved areas lost every page, not only the lazy ones. */
				bool lost = z->reg && z->reg[ar] && (grave_has(&z->g, ar) ||
					     (z->h.pe[i].flags & PE_LAZY));

				while (ret == 0 && lost && a < end) {
					struct pm_run run;

					pagemap_resolve(pm, a, end - a, &run);
					if (run.src == PM_POISON && run.len)
						ret = poison_in(z, a, run.len);
					else if (run.src != PM_DATA || !run.pf || !run.pf->base ||
					    run.off + run.len > run.pf->size || !run.len)
						ret = -EIO;
					else
						ret = copy_in(z, a, run.pf->base + run.off, run.len);
					a += run.len;
				}
			}
			pagemap_free(pm, &cache);
		}
		if (ret < 0) {
			fprintf(stderr, "uffd-inject: pid %d: cannot put its memory back from %s: "
				"%s; it keeps its userfaultfd at fd %d and will wait on the "
				"missing pages: hand it to a manager with these images\n",
				(int)z->o->pid, z->o->dir, strerror(-ret), z->tfd);
			return ret;
		}
		z->dropped = false;
	}
	if (z->reg)
		for (size_t i = 0; i < z->h.nvmas; i++) {
			struct uffdio_range r = { z->h.vmas[i].start,
						  z->h.vmas[i].end - z->h.vmas[i].start };

			if (z->reg[i] && ioctl(z->ufd, UFFDIO_UNREGISTER, &r) == 0)
				z->reg[i] = false;
		}
	if (z->tfd >= 0 && z->h.pt.th) {
		long r;

		if (pt_syscall(&z->h.pt, &r, SYS_close, z->tfd, 0, 0, 0, 0, 0) == 0)
			z->tfd = -1;
	}
	/* A dropper started: let it finish, then take its code out, all before the thaw. */
	if (z->g.dropper && (ret = grave_finish(&z->g, GRAVE_WAIT_MS, &z->h.pt)) < 0 &&
	    ret != -ESRCH && (z->g.stub || z->g.len))
		fprintf(stderr, "uffd-inject: pid %d: warning: %s\n", (int)z->o->pid, z->g.why);
	if (!z->g.dropper && bury(z, NULL) < 0)
		fprintf(stderr, "uffd-inject: pid %d: %s; its memory is in place, the graveyard "
			"at 0x%" PRIx64 " stays\n", (int)z->o->pid, z->g.why, z->g.base);
	return 0;
}

/* Step 5. */
static int hand_over(struct lz *z, uint64_t *lazy)
{
	struct handover ho = {
		.socket_path = z->o->socket,
		.image_id = (uint32_t)z->o->pid,
		.features = z->features,
		.flags = HELLO_F_REGISTERED,
		.uffd = z->ufd,
		.pidfd = z->h.pidfd,
		.dirfd = z->h.dirfd,
		.timeout_ms = z->o->timeout_ms,
	};
	char reason[512];
	int ret;

	ret = handover_send(&ho, lazy, reason, sizeof(reason));
	if (ret < 0)
		return lfail(z, -ret, "the manager at %s did not take it: %s", z->o->socket,
			     reason);
	return 0;
}

/*
 * For the tests of what a killed uffd-inject leaves behind: die by SIGKILL
 * at step WHERE when UFFD_INJECT_TEST_DIE_AT names it.
 */
static void test_die_at(const char *where)
{
	const char *at = getenv("UFFD_INJECT_TEST_DIE_AT");

	if (at && !strcmp(at, where))
		raise(SIGKILL);
}

static void summary(const struct lz *z, uint64_t served)
{
	const struct lazy_stats *st = z->st;
	char stop[64] = "";

	if (!z->o->out)
		return;
	fprintf(z->o->out,
		"uffd-inject: pid %d handed to the manager at %s: %" PRIu64 " lazy pages "
		"(%.1f MiB) in %u areas, %" PRIu64 " anonymous pages kept resident, "
		"userfaultfd kept at fd %d\n",
		(int)z->o->pid, z->o->socket, st->lazy_pages,
		(double)(st->lazy_pages * LZ_PAGE) / (1 << 20), st->areas, st->eager_pages,
		st->kept_fd);
	if (st->grave_areas) {
		char done[48] = "it had ended at the thaw";

		/* No wait, no figure: it was not seen to run after the thaw. */
		if (st->dropper_s >= 0)
			snprintf(done, sizeof(done), "done %.3f s later", st->dropper_s);
		fprintf(z->o->out,
			"uffd-inject: drop: %u area%s (%.1f MiB of lazy pages) moved out of the "
			"way in the freeze (to 0x%" PRIx64 "-0x%" PRIx64 "), freed by a thread of "
			"its own after it (%s); one thread stopped %.6f s to remove "
			"that thread's code (0x%" PRIx64 ")%s\n",
			st->grave_areas, st->grave_areas == 1 ? "" : "s",
			(double)(st->grave_pages * LZ_PAGE) / (1 << 20), st->grave_base,
			st->grave_base + st->grave_len, done, st->stop_s, st->stub,
			st->stub_left ? ", which stays" : st->stub_foreign ? ", which went with "
			"its memory: it exec'd" : "");
	} else {
		fprintf(z->o->out, "uffd-inject: drop: in the freeze (%s)\n",
			st->drop_skip ? st->drop_skip : "no graveyard");
	}
	/* The one-thread stop after the thaw is no freeze of the whole process: apart. */
	if (st->stop_s > 0)
		snprintf(stop, sizeof(stop), " (and one thread %.6f s after the thaw)", st->stop_s);
	fprintf(z->o->out,
		"uffd-inject: RSS %.1f MiB -> %.1f MiB (anonymous %.1f MiB -> %.1f MiB); "
		"dump %.3f s, frozen %.3f s%s, total %.3f s\n",
		st->rss_before / 1048576.0, st->rss_after / 1048576.0,
		st->anon_before / 1048576.0, st->anon_after / 1048576.0, st->dump_s,
		st->frozen_s, stop, st->total_s);
	if (st->flags_before)
		fprintf(z->o->out, "uffd-inject: VmFlags read before the freeze (maps unchanged at "
			"it), checked again after the thaw: %s\n", st->flags_moved ?
			"changed (see the warning)" : "unchanged");
	if (z->o->prev || z->o->pre_copy)
		fprintf(z->o->out,
			"uffd-inject: pre-copy: %u round%s before; frozen, %" PRIu64 " pages "
			"copied, %" PRIu64 " taken from the chain\n", st->rounds,
			st->rounds == 1 ? "" : "s", st->final_pages, st->parent_pages);
	if (served != st->lazy_pages)
		fprintf(z->o->out, "uffd-inject: note: the manager counts %" PRIu64
			" pages to serve\n", served);
}

/*
 * lazy --pre-copy: pre-dump rounds into DIR/pre-1, DIR/pre-2, ... while the
 * target runs, each copying what was written during the one before, until
 * the written set stops shrinking or MAX rounds are done. The last round's
 * dir goes into PREV (PREV_LEN bytes). Returns 0 or -errno (said).
 */
static int pre_copy_rounds(const struct lazy_opts *o, struct lazy_stats *st, char *prev,
			   size_t prev_len)
{
	unsigned max = o->max_rounds ? o->max_rounds : 8;
	uint64_t last = UINT64_MAX;
	char dir[PATH_MAX];

	if (mkdir(o->dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "uffd-inject: lazy: %s: mkdir: %s\n", o->dir, strerror(errno));
		return -errno;
	}
	prev[0] = '\0';
	for (unsigned r = 1; r <= max; r++) {
		struct dump_opts d = {
			.pid = o->pid,
			.dir = dir,
			.predump = true,
			.prev = prev[0] ? prev : NULL,
		};
		struct dump_stats ds;
		uint64_t w;
		int ret;

		snprintf(dir, sizeof(dir), "%s/pre-%u", o->dir, r);
		ret = dump_run(&d, &ds, NULL);
		if (ret < 0)
			return ret;	/* dump_run said why */
		snprintf(prev, prev_len, "%s", dir);
		st->rounds = r;
		w = r == 1 ? ds.pages : ds.written_pages + ds.skipped_pages;
		if (o->out)
			fprintf(o->out, "uffd-inject: pid %d pre-copy round %u: %" PRIu64 " pages "
				"copied (%" PRIu64 " written since the round before), %" PRIu64
				" in the parent, %.3f s, frozen %.3f s\n", (int)o->pid, r, ds.pages,
				ds.written_pages, ds.parent_pages, ds.total_s, ds.frozen_s);
		/* Stop when a round no longer shrinks the written set by a tenth. */
		if (r > 1 && w * 10 > last * 9)
			break;
		last = w;
	}
	return 0;
}

int lazy_run(const struct lazy_opts *o, struct lazy_stats *st)
{
	char prev[PATH_MAX];
	struct dump_opts dopts = {
		.pid = o->pid,
		.dir = o->dir,
		.hold = true,
		.no_locked = true,
		.prev = o->prev,
		.out = NULL,
	};
	sigset_t block, oldmask;
	struct procfs_maps pre = { 0 };
	struct lazy_stats local;
	struct dump_stats dst;
	uint64_t served = 0;
	struct lz z;
	int ret;

	if (!st)
		st = &local;
	memset(st, 0, sizeof(*st));
	memset(&z, 0, sizeof(z));
	z.o = o;
	z.st = st;
	z.tfd = z.ufd = -1;
	st->kept_fd = -1;
	grave_init(&z.g, o->pid);
	clock_gettime(CLOCK_MONOTONIC, &z.t0);

	/* Everything that can be refused is asked before the target is touched. */
	ret = check_kernel(&z);
	if (ret == 0)
		ret = check_manager(&z);
	if (ret == 0)
		ret = survey_fds(&z);
	if (ret < 0)
		goto out;
	if (o->pre_copy) {
		ret = pre_copy_rounds(o, st, prev, sizeof(prev));
		if (ret < 0)
			return ret;
		dopts.prev = prev;
		ret = survey_fds(&z);	/* the tracker's fd was taken meanwhile */
		if (ret < 0)
			goto out;
	}
	log_debug("last round at %.1f ms", since(&z.t0) * 1e3);
	ret = dump_run(&dopts, &dst, &z.h);
	if (ret < 0)
		return ret;	/* dump_run said why, and let the target go */
	log_debug("dumped at %.1f ms", since(&z.t0) * 1e3);
	if (dopts.prev) {
		st->final_pages = dst.pages;
		st->parent_pages = dst.parent_pages;
	}
	z.held = true;
	st->dump_s = since(&z.t0);
	/* From here the steps are short and must not be cut: a ^C waits for the end. */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGQUIT);
	pthread_sigmask(SIG_BLOCK, &block, &oldmask);

	ret = survey_fds(&z);	/* again, frozen now: nothing can change under us */
	if (ret == 0)
		ret = make_uffd(&z);
	if (ret < 0)
		goto out;
	log_debug("uffd made at %.1f ms", since(&z.t0) * 1e3);
	st->rss_before = status_bytes(o->pid, "VmRSS");
	st->anon_before = status_bytes(o->pid, "RssAnon");
	/* Big areas out of the way first: the tracker's areas are cheap to free once empty. */
	ret = move_out(&z);
	test_die_at("moved");
	log_debug("%zu areas moved at %.1f ms (graveyard 0x%" PRIx64 "-0x%" PRIx64 ")", z.g.n,
		  since(&z.t0) * 1e3, z.g.base, z.g.base + z.g.len);
	if (ret == 0)
		dump_held_untrack(&z.h);
	log_debug("tracker down at %.1f ms", since(&z.t0) * 1e3);
	if (ret == 0)
		ret = register_areas(&z);
	if (ret == 0)
		ret = put_eager(&z);
	/*
	 * The thread that frees the graveyard, started as soon as nothing
	 * needs it (a refusal puts pages back from the images): PTRACE_O_EXITKILL
	 * is off from put_eager on, and should we die before the dropper runs,
	 * the graveyard would stay in the target for good. If it cannot be
	 * started, the graveyard goes in the freeze, as the drop used to.
	 */
	if (ret == 0 && z.g.n)
		ret = start_dropper(&z);
	if (ret < 0)
		goto out;
	test_die_at("eager");
	log_debug("registered at %.1f ms", since(&z.t0) * 1e3);
	ret = drop_pages(&z);
	log_debug("dropped at %.1f ms", since(&z.t0) * 1e3);
	test_die_at("dropped");
	st->rss_after = status_bytes(o->pid, "VmRSS");
	st->anon_after = status_bytes(o->pid, "RssAnon");
	st->shmem_after = status_bytes(o->pid, "RssShmem");
	st->huge_after = status_bytes(o->pid, "HugetlbPages");
	if (ret == 0) {
		wake_all(&z);
		ret = hand_over(&z, &served);
	}
	if (ret == 0) {
		z.dropped = false;	/* the manager has it now */
		z.tfd = -1;		/* and the target keeps its copy */
		/* The copy an earlier hand-over left has nothing registered: close it. */
		if (z.old_kept >= 0) {
			long r;

			pt_syscall(&z.h.pt, &r, SYS_close, z.old_kept, 0, 0, 0, 0, 0);
		}
	}
out:
	if (ret < 0 && z.held && undo(&z) == 0 && z.ufd >= 0 && !z.h.pt.gone)
		fprintf(stderr, "uffd-inject: pid %d: its memory is back in place; the "
			"images stay in %s\n", (int)o->pid, o->dir);
	if (z.ufd >= 0)
		close(z.ufd);
	if (z.held) {
		double frozen_at = z.h.frozen_at;
		struct timespec t;

		/* The areas as read before the freeze, for the check after the thaw. */
		pre = z.h.pre;
		memset(&z.h.pre, 0, sizeof(z.h.pre));
		dump_held_release(&z.h);
		clock_gettime(CLOCK_MONOTONIC, &t);
		st->frozen_s = (double)t.tv_sec + t.tv_nsec / 1e9 - frozen_at;
	}
	if (ret == 0 && z.g.dropper) {
		int pidfd = (int)syscall(SYS_pidfd_open, o->pid, 0), gr;

		dump_test_hook("thawed", pidfd);	/* tests: die, or have it fork, here */
		if (pidfd >= 0)
			close(pidfd);
		gr = grave_finish(&z.g, GRAVE_WAIT_MS, NULL);
		if (gr < 0 && gr != -ESRCH && (z.g.stub || z.g.len))
			fprintf(stderr, "uffd-inject: pid %d: warning: %s\n", (int)o->pid, z.g.why);
		st->dropper_s = z.g.wait_s;
		st->stop_s = z.g.stop_s;
		st->rss_after = status_bytes(o->pid, "VmRSS");
		st->anon_after = status_bytes(o->pid, "RssAnon");
	}
	/*
	 * Read before the freeze, the VmFlags may have moved since (dump.c,
	 * preread(), says what each change does to a hand-over): look again,
	 * the target running, and say so if they did.
	 */
	if (ret == 0 && pre.n) {
		st->flags_before = true;
		if (dump_held_recheck(o->pid, &pre, z.why, sizeof(z.why)) < 0) {
			st->flags_moved = true;
			fprintf(stderr, "uffd-inject: lazy: warning: %s\n", z.why);
		}
	}
	procfs_maps_free(&pre);
	st->grave_areas = (unsigned)z.g.n;
	st->drop_skip = z.g.skip;
	st->stub_left = z.g.stub != 0;
	st->stub_foreign = z.g.foreign;
	st->total_s = since(&z.t0);
	free(z.reg);
	grave_free(&z.g);
	if (z.held)
		pthread_sigmask(SIG_SETMASK, &oldmask, NULL);
	if (ret < 0)
		fprintf(stderr, "uffd-inject: lazy: %s\n", z.why[0] ? z.why : strerror(-ret));
	else
		summary(&z, served);
	return ret;
}
