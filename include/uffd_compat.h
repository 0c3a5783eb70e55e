/*
 * userfaultfd definitions newer than Debian 12's kernel headers, as the
 * kernel's include/uapi/linux/userfaultfd.h has them.
 */
#ifndef UFFD_COMPAT_H
#define UFFD_COMPAT_H

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>

/* UFFDIO_POISON (Linux 6.6): needs no feature at UFFDIO_API. */
#ifndef UFFDIO_POISON
#define _UFFDIO_POISON			(0x08)
#define UFFDIO_POISON_MODE_DONTWAKE	((__u64)1 << 0)
struct uffdio_poison {
	struct uffdio_range range;
	__u64 mode;
	__s64 updated;
};
#define UFFDIO_POISON	_IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

#endif
