/* userfaultfd ioctls and what their results mean. */
#include <errno.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "procfs.h"
#include "uffd.h"

struct uffd_result uffd_classify(int ret, int64_t out, uint64_t len)
{
	struct uffd_result r = { UC_BUG, 0 };

	switch (ret) {
	case 0:
		r.cls = UC_DONE;
		r.done = len;
		break;
	case -EAGAIN:
		/* A short copy reports EAGAIN with the bytes done in OUT. */
		if (out > 0 && (uint64_t)out < len) {
			r.cls = UC_PARTIAL;
			r.done = out;
		} else if (out > 0) {
			r.cls = UC_DONE;
			r.done = len;
		} else {
			r.cls = UC_RETRY;
		}
		break;
	case -ENOMEM:
		r.cls = UC_RETRY;
		break;
	case -EEXIST:
		r.cls = UC_EXISTS;
		break;
	case -ENOENT:
		r.cls = UC_STALE;
		break;
	case -ESRCH:
	case -ENOSPC:	/* what kernels before 5.11 returned for an exited mm */
		r.cls = UC_GONE;
		break;
	}
	return r;
}

const char *uffd_class_name(enum uffd_class c)
{
	static const char *const names[] = {
		[UC_DONE] = "done", [UC_PARTIAL] = "partial", [UC_RETRY] = "retry",
		[UC_EXISTS] = "exists", [UC_STALE] = "stale", [UC_GONE] = "gone",
		[UC_BUG] = "bug",
	};

	return (unsigned)c < sizeof(names) / sizeof(names[0]) ? names[c] : "?";
}

int uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len, bool wake, int64_t *out)
{
	struct uffdio_copy c = {
		.dst = dst,
		.src = (uintptr_t)src,
		.len = len,
		.mode = wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE,
	};
	int ret = ioctl(uffd, UFFDIO_COPY, &c) ? -errno : 0;

	*out = c.copy;
	return ret;
}

int uffd_zeropage(int uffd, uint64_t dst, uint64_t len, bool wake, int64_t *out)
{
	struct uffdio_zeropage z = {
		.range = { .start = dst, .len = len },
		.mode = wake ? 0 : UFFDIO_ZEROPAGE_MODE_DONTWAKE,
	};
	int ret = ioctl(uffd, UFFDIO_ZEROPAGE, &z) ? -errno : 0;

	*out = z.zeropage;
	return ret;
}

int uffd_poison(int uffd, uint64_t dst, uint64_t len, bool wake, int64_t *out)
{
	struct uffdio_poison p = {
		.range = { .start = dst, .len = len },
		.mode = wake ? 0 : UFFDIO_POISON_MODE_DONTWAKE,
	};
	int ret = ioctl(uffd, UFFDIO_POISON, &p) ? -errno : 0;

	*out = p.updated;
	return ret;
}

int uffd_continue(int uffd, uint64_t dst, uint64_t len, bool wake, int64_t *out)
{
	struct uffdio_continue c = {
		.range = { .start = dst, .len = len },
		.mode = wake ? 0 : UFFDIO_CONTINUE_MODE_DONTWAKE,
	};
	int ret = ioctl(uffd, UFFDIO_CONTINUE, &c) ? -errno : 0;

	*out = c.mapped;
	return ret;
}

int uffd_wake(int uffd, uint64_t start, uint64_t len)
{
	struct uffdio_range r = { .start = start, .len = len };

	return ioctl(uffd, UFFDIO_WAKE, &r) ? -errno : 0;
}

int uffd_register(int uffd, uint64_t start, uint64_t len, bool minor)
{
	struct uffdio_register r = {
		.range = { .start = start, .len = len },
		.mode = UFFDIO_REGISTER_MODE_MISSING | (minor ? UFFDIO_REGISTER_MODE_MINOR : 0),
	};

	return ioctl(uffd, UFFDIO_REGISTER, &r) ? -errno : 0;
}

int uffd_unregister(int uffd, uint64_t start, uint64_t len)
{
	struct uffdio_range r = { .start = start, .len = len };

	return ioctl(uffd, UFFDIO_UNREGISTER, &r) ? -errno : 0;
}

int uffd_features(int uffd, uint64_t *features)
{
	char path[64];
	uint64_t raw;
	int ret;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", uffd);
	ret = procfs_uffd_api(path, &raw);
	if (ret < 0)
		return ret;
	/* Bit 31 is the kernel's private "initialized" mark, not a feature. */
	*features = raw & ~PROCFS_UFFD_INITIALIZED;
	return 0;
}
