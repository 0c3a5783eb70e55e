/*
 * Write tracking for pre-copy: see track.h.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "procfs.h"
#include "ptrace.h"
#include "track.h"
#include "why.h"

#define TRACK_FD_CEIL	1024
#define TRACK_REGIONS	4096
#define TRACK_PAGE	4096ull

#ifndef UFFDIO_REGISTER_MODE_WP
#define UFFDIO_REGISTER_MODE_WP	((__u64)1 << 1)
#endif

bool track_is_tracker(pid_t pid, int fd)
{
	char path[64], link[64];
	uint64_t raw;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, fd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return false;
	link[n] = '\0';
	if (strcmp(link, "anon_inode:[userfaultfd]"))
		return false;
	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", (int)pid, fd);
	if (procfs_uffd_api(path, &raw) < 0)
		return false;
	return (raw & ~PROCFS_UFFD_INITIALIZED) == TRACK_FEATURES;
}

int track_find(pid_t pid, struct track_found *f, char *why, size_t len)
{
	char path[64];
	struct dirent *de;
	DIR *d;

	memset(f, 0, sizeof(*f));
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return why_set(why, len, errno, "%s: %s", path, strerror(errno));
	while ((de = readdir(d))) {
		char *end, fp[96];
		long fd = strtol(de->d_name, &end, 10);
		struct stat sb;

		if (*end || fd < 0 || !track_is_tracker(pid, (int)fd))
			continue;
		if (f->n == TRACK_MAX) {
			closedir(d);
			return why_set(why, len, EMFILE, "more than %d write trackers in its fd "
				       "table", TRACK_MAX);
		}
		snprintf(fp, sizeof(fp), "%s/%ld", path, fd);
		f->fd[f->n] = (int)fd;
		f->ino[f->n] = stat(fp, &sb) == 0 ? (uint64_t)sb.st_ino : 0;
		f->n++;
	}
	closedir(d);
	return 0;
}

/* The highest free fd of PID below its fd limit and TRACK_FD_CEIL, or -1. */
static int high_free_fd(pid_t pid)
{
	uint8_t used[TRACK_FD_CEIL] = { 0 };
	char path[64];
	struct dirent *de;
	struct rlimit rl;
	int top = TRACK_FD_CEIL;
	DIR *d;

	if (prlimit(pid, RLIMIT_NOFILE, NULL, &rl) == 0 && rl.rlim_cur < (rlim_t)top)
		top = (int)rl.rlim_cur;
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return -1;
	while ((de = readdir(d))) {
		char *end;
		long fd = strtol(de->d_name, &end, 10);

		if (!*end && fd >= 0 && fd < TRACK_FD_CEIL)
			used[fd] = 1;
	}
	closedir(d);
	/* Leave the top few to whoever wants them (lazy's kept copy looks there too). */
	for (int fd = top - 9; fd >= 3; fd--)
		if (!used[fd])
			return fd;
	return -1;
}

/* Run a syscall in the target; an injection failure becomes a message. */
static int tsys(struct pt *pt, long *ret, const char *what, long nr, long a1, long a2, long a3,
		char *why, size_t len)
{
	int r = pt_syscall(pt, ret, nr, a1, a2, a3, 0, 0, 0);

	if (r == -ESRCH)
		return why_set(why, len, ESRCH, "the process exited");
	if (r < 0)
		return why_set(why, len, -r, "cannot run %s in it: %s", what, strerror(-r));
	return 0;
}

static int enable(struct track *t, char *why, size_t len)
{
	struct uffdio_api api = { .api = UFFD_API, .features = TRACK_FEATURES };
	struct stat sb;

	if (ioctl(t->ufd, UFFDIO_API, &api) < 0)
		return why_set(why, len, errno, "UFFDIO_API (write-protect async, unpopulated): "
			       "%s%s", strerror(errno), errno == EINVAL ?
			       " (this kernel has no UFFD_FEATURE_WP_ASYNC: Linux 6.7 or later "
			       "is needed)" : "");
	if (fstat(t->ufd, &sb) < 0)
		return why_set(why, len, errno, "fstat of its userfaultfd: %s", strerror(errno));
	t->ino = sb.st_ino;
	return 0;
}

int track_arm(struct pt *pt, struct track *t, char *why, size_t len)
{
	int want = high_free_fd(pt->pid);
	long fd, kfd = -1, r;
	int ret;

	t->tfd = t->ufd = -1;
	ret = tsys(pt, &fd, "userfaultfd()", SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK, 0, 0,
		   why, len);
	if (ret < 0)
		return ret;
	if (fd < 0)
		return why_set(why, len, (int)-fd, "userfaultfd() in the process: %s%s",
			       strerror((int)-fd), fd == -EPERM ? " (vm.unprivileged_userfaultfd "
			       "is 0 and the process lacks CAP_SYS_PTRACE)" : "");
	if (want > fd) {
		ret = tsys(pt, &kfd, "fcntl()", SYS_fcntl, fd, F_DUPFD_CLOEXEC, want, why, len);
		if (ret == 0 && kfd >= 0)
			ret = tsys(pt, &r, "close()", SYS_close, fd, 0, 0, why, len);
		if (ret < 0) {
			pt_syscall(pt, &r, SYS_close, fd, 0, 0, 0, 0, 0);
			return ret;
		}
	}
	t->tfd = kfd >= 0 ? (int)kfd : (int)fd;
	t->ufd = pt_getfd(pt, t->tfd);
	if (t->ufd < 0) {
		ret = why_set(why, len, -t->ufd, "pidfd_getfd of its fd %d: %s", t->tfd,
			      strerror(-t->ufd));
		t->ufd = -1;
	} else {
		ret = enable(t, why, len);
	}
	if (ret < 0)
		track_close(pt, t);
	return ret;
}

int track_attach(struct pt *pt, int tfd, struct track *t, char *why, size_t len)
{
	struct stat sb;

	t->tfd = tfd;
	t->ufd = pt_getfd(pt, tfd);
	if (t->ufd < 0) {
		int e = -t->ufd;

		t->ufd = -1;
		return why_set(why, len, e, "pidfd_getfd of its tracker at fd %d: %s", tfd,
			       strerror(e));
	}
	if (fstat(t->ufd, &sb) < 0)
		return why_set(why, len, errno, "fstat of its tracker: %s", strerror(errno));
	t->ino = sb.st_ino;
	return 0;
}

int track_register(const struct track *t, uint64_t start, uint64_t end)
{
	struct uffdio_register r = {
		.range = { start, end - start },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};

	return ioctl(t->ufd, UFFDIO_REGISTER, &r) < 0 ? -errno : 0;
}

int track_unregister(const struct track *t, uint64_t start, uint64_t end)
{
	struct uffdio_range r = { start, end - start };

	return ioctl(t->ufd, UFFDIO_UNREGISTER, &r) < 0 ? -errno : 0;
}

int track_mark_written(const struct track *t, uint64_t start, uint64_t end)
{
	struct uffdio_writeprotect w = { .range = { start, end - start }, .mode = 0 };

	return ioctl(t->ufd, UFFDIO_WRITEPROTECT, &w) < 0 ? -errno : 0;
}

void track_close(struct pt *pt, struct track *t)
{
	long r;

	if (t->tfd >= 0 && pt && pt->th && !pt->gone)
		pt_syscall(pt, &r, SYS_close, t->tfd, 0, 0, 0, 0, 0);
	t->tfd = -1;
	if (t->ufd >= 0)
		close(t->ufd);
	t->ufd = -1;
}

void track_close_target(struct pt *pt, struct track *t)
{
	long r;

	if (t->tfd >= 0 && pt && pt->th && !pt->gone)
		pt_syscall(pt, &r, SYS_close, t->tfd, 0, 0, 0, 0, 0);
	t->tfd = -1;
}

int track_scan(int pmfd, uint64_t start, uint64_t end, bool reset, struct track_region **r,
	       size_t *n, size_t *cap, bool *guard, char *why, size_t len)
{
	struct page_region vec[256];
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.flags = (reset ? PM_SCAN_WP_MATCHING : 0) | PM_SCAN_CHECK_WPASYNC,
		.start = start,
		.end = end,
		.vec = (uintptr_t)vec,
		.vec_len = sizeof(vec) / sizeof(vec[0]),
		/* Only pages that exist: a hole is never protected (no markers, no page tables). */
		.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
		.category_inverted = PAGE_IS_GUARD,
		.category_mask = PAGE_IS_GUARD,
		.return_mask = PAGE_IS_WRITTEN | PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO,
	};
	bool no_guard = false;

	/*
	 * A last round reports guard markers instead of leaving them out, to
	 * say that the range has some (lazy must not move it: grave.h); they
	 * are no data, and dropped below. A reset leaves them out: its
	 * write-protect step must not touch them.
	 */
	if (guard && !reset) {
		arg.category_inverted = arg.category_mask = 0;
		arg.return_mask |= PAGE_IS_GUARD;
	}
	for (;;) {
		long k = ioctl(pmfd, PAGEMAP_SCAN, &arg);
		uint64_t next;

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && errno == EINVAL && !no_guard) {
			no_guard = true;	/* before Linux 6.14: no guard category */
			arg.category_inverted = arg.category_mask = 0;
			arg.return_mask &= ~(uint64_t)PAGE_IS_GUARD;
			continue;
		}
		if (k < 0 && errno == EPERM)
			return -EPERM;
		if (k < 0)
			return why_set(why, len, errno, "PAGEMAP_SCAN 0x%" PRIx64 "-0x%" PRIx64
				       ": %s", (uint64_t)arg.start, end, strerror(errno));
		for (long i = 0; i < k; i++) {
			const struct page_region *p = &vec[i];
			struct track_region *last = *n ? &(*r)[*n - 1] : NULL;

			if (p->start < start || p->end > end || p->start >= p->end ||
			    (p->start | p->end) & (TRACK_PAGE - 1))
				return why_set(why, len, EIO, "PAGEMAP_SCAN returned 0x%" PRIx64
					       "-0x%" PRIx64 " outside 0x%" PRIx64 "-0x%" PRIx64,
					       (uint64_t)p->start, (uint64_t)p->end, start, end);
			if (p->categories & PAGE_IS_GUARD) {
				*guard = true;
				continue;
			}
			if (last && last->end == p->start && last->cat == p->categories) {
				last->end = p->end;
				continue;
			}
			if (*n == *cap) {
				size_t nc = *cap ? *cap * 2 : 1024;
				struct track_region *nr = realloc(*r, nc * sizeof(*nr));

				if (!nr)
					return why_set(why, len, ENOMEM, "out of memory");
				*r = nr;
				*cap = nc;
			}
			(*r)[(*n)++] = (struct track_region){ p->start, p->end, p->categories };
		}
		/* As in dump_pages.c: a full vector means more; go on after the last region. */
		if ((size_t)k < sizeof(vec) / sizeof(vec[0]))
			return 0;
		next = arg.walk_end > vec[k - 1].end ? arg.walk_end : vec[k - 1].end;
		if (next >= end)
			return 0;
		if (next <= arg.start)
			return why_set(why, len, EIO, "PAGEMAP_SCAN made no progress at 0x%" PRIx64,
				       (uint64_t)arg.start);
		arg.start = next;
	}
}
