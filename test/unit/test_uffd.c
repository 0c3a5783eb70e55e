/*
 * The uffd ioctl wrappers: the pure classification of a copy result as a
 * table, then the wrappers against the real kernel on a uffd of our own.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "uffd.h"

#define PG	4096ull

/* One row: what the kernel said, and what the manager must make of it. */
struct cls_case {
	const char *what;
	int ret;
	int64_t out;
	uint64_t len;
	enum uffd_class cls;
	uint64_t done;
};

static const struct cls_case cls_cases[] = {
	{ "ok one page", 0, PG, PG, UC_DONE, PG },
	{ "ok 64K", 0, 16 * PG, 16 * PG, UC_DONE, 16 * PG },
	{ "ok, out not written back", 0, 0, 8 * PG, UC_DONE, 8 * PG },
	{ "EAGAIN after one page of four", -EAGAIN, PG, 4 * PG, UC_PARTIAL, PG },
	{ "EAGAIN after three pages of four", -EAGAIN, 3 * PG, 4 * PG, UC_PARTIAL, 3 * PG },
	{ "EAGAIN after one byte", -EAGAIN, 1, 4 * PG, UC_PARTIAL, 1 },
	{ "EAGAIN one byte short", -EAGAIN, 4 * PG - 1, 4 * PG, UC_PARTIAL, 4 * PG - 1 },
	{ "EAGAIN, nothing done", -EAGAIN, 0, 4 * PG, UC_RETRY, 0 },
	{ "EAGAIN, out -EAGAIN", -EAGAIN, -EAGAIN, 4 * PG, UC_RETRY, 0 },
	{ "EAGAIN, out -1", -EAGAIN, -1, 4 * PG, UC_RETRY, 0 },
	{ "EAGAIN, out INT64_MIN", -EAGAIN, INT64_MIN, 4 * PG, UC_RETRY, 0 },
	{ "EAGAIN, out == len", -EAGAIN, 4 * PG, 4 * PG, UC_DONE, 4 * PG },
	{ "ENOMEM", -ENOMEM, -ENOMEM, 4 * PG, UC_RETRY, 0 },
	{ "EEXIST", -EEXIST, -EEXIST, 4 * PG, UC_EXISTS, 0 },
	{ "ENOENT", -ENOENT, -ENOENT, 4 * PG, UC_STALE, 0 },
	{ "ESRCH", -ESRCH, -ESRCH, 4 * PG, UC_GONE, 0 },
	{ "ENOSPC (old kernels)", -ENOSPC, -ENOSPC, 4 * PG, UC_GONE, 0 },
	{ "EFAULT", -EFAULT, -EFAULT, 4 * PG, UC_BUG, 0 },
	{ "EINVAL", -EINVAL, -EINVAL, 4 * PG, UC_BUG, 0 },
	{ "EPERM", -EPERM, -EPERM, 4 * PG, UC_BUG, 0 },
	{ "EBADF", -EBADF, -EBADF, 4 * PG, UC_BUG, 0 },
};

#define NR_CLS	(sizeof(cls_cases) / sizeof(cls_cases[0]))

/* Indexes, not the rows: a row's pointers would not survive the copy to the test's process. */
ParameterizedTestParameters(uffd_classify, table)
{
	static unsigned idx[NR_CLS];

	for (unsigned i = 0; i < NR_CLS; i++)
		idx[i] = i;
	return cr_make_param_array(unsigned, idx, NR_CLS, NULL);
}

ParameterizedTest(unsigned *i, uffd_classify, table)
{
	const struct cls_case *c = &cls_cases[*i];
	struct uffd_result r = uffd_classify(c->ret, c->out, c->len);

	cr_assert_eq(r.cls, c->cls, "%s: class %s, want %s", c->what, uffd_class_name(r.cls),
		     uffd_class_name(c->cls));
	cr_assert_eq(r.done, c->done, "%s: done %llu, want %llu", c->what,
		     (unsigned long long)r.done, (unsigned long long)c->done);
}

Test(uffd_classify, class_names)
{
	static const char *const want[] = {
		[UC_DONE] = "done", [UC_PARTIAL] = "partial", [UC_RETRY] = "retry",
		[UC_EXISTS] = "exists", [UC_STALE] = "stale", [UC_GONE] = "gone",
		[UC_BUG] = "bug",
	};

	for (unsigned i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		cr_expect_str_eq(uffd_class_name(i), want[i]);
	cr_expect_str_eq(uffd_class_name(UC_BUG + 1), "?");
	cr_expect_str_eq(uffd_class_name((enum uffd_class)-1), "?");
}

/* The real kernel: a uffd on our own mm, registered over REGION_PAGES. */

#define REGION_PAGES	16
#define FEATURES	(UFFD_NEEDED_FEATURES | UFFD_FEATURE_THREAD_ID)

static int uffd = -1;
static uint8_t *region;		/* registered: never touch a missing page */
static uint8_t *plain;		/* mapped, not registered */
static uint8_t *src;

static int uffd_open(uint64_t features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	cr_assert_geq(fd, 0, "userfaultfd: %s", strerror(errno));
	cr_assert_eq(ioctl(fd, UFFDIO_API, &api), 0, "UFFDIO_API: %s", strerror(errno));
	return fd;
}

static void kernel_init(void)
{
	uffd = uffd_open(FEATURES);
	region = mmap(NULL, REGION_PAGES * PG, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	plain = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	src = mmap(NULL, REGION_PAGES * PG, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert(region != MAP_FAILED && plain != MAP_FAILED && src != MAP_FAILED);
	for (size_t i = 0; i < REGION_PAGES * PG; i++)
		src[i] = (uint8_t)(i * 131 + i / PG * 7 + 1);	/* never all zero in a page */
	cr_assert_eq(uffd_register(uffd, (uintptr_t)region, REGION_PAGES * PG, false), 0);
}

static void kernel_fini(void)
{
	if (uffd >= 0)
		close(uffd);
	munmap(region, REGION_PAGES * PG);
	munmap(plain, 4 * PG);
	munmap(src, REGION_PAGES * PG);
}

TestSuite(uffd_kernel, .init = kernel_init, .fini = kernel_fini, .timeout = 20);

Test(uffd_kernel, copy_two_pages_is_done_and_lands)
{
	int64_t out = 0;
	int ret = uffd_copy(uffd, (uintptr_t)region, src, 2 * PG, true, &out);
	struct uffd_result r = uffd_classify(ret, out, 2 * PG);

	cr_assert_eq(ret, 0, "copy: %s", strerror(-ret));
	cr_assert_eq(out, (int64_t)(2 * PG));
	cr_assert_eq(r.cls, UC_DONE, "class %s", uffd_class_name(r.cls));
	cr_assert_eq(r.done, 2 * PG);
	cr_assert_eq(memcmp(region, src, 2 * PG), 0, "copied bytes differ");
}

Test(uffd_kernel, copy_over_a_present_page_is_exists)
{
	int64_t out = 0;
	int ret;
	struct uffd_result r;

	cr_assert_eq(uffd_copy(uffd, (uintptr_t)region, src, PG, true, &out), 0);
	/* The same page again, from different bytes: the first copy must stay. */
	ret = uffd_copy(uffd, (uintptr_t)region, src + PG, PG, true, &out);
	r = uffd_classify(ret, out, PG);
	cr_assert_eq(ret, -EEXIST, "second copy: %d (%s)", ret, strerror(-ret));
	cr_assert_eq(r.cls, UC_EXISTS, "class %s", uffd_class_name(r.cls));
	cr_assert_eq(memcmp(region, src, PG), 0, "a refused copy changed the page");
}

Test(uffd_kernel, copy_into_a_run_with_a_present_page_is_partial)
{
	int64_t out = 0;
	int ret;
	struct uffd_result r;

	/* Page 5 is in; copy pages 4..7: the kernel stops after page 4. */
	cr_assert_eq(uffd_copy(uffd, (uintptr_t)region + 5 * PG, src + 5 * PG, PG, true, &out), 0);
	ret = uffd_copy(uffd, (uintptr_t)region + 4 * PG, src + 4 * PG, 4 * PG, true, &out);
	r = uffd_classify(ret, out, 4 * PG);
	cr_assert_eq(ret, -EAGAIN, "copy: %d (%s)", ret, strerror(-ret));
	cr_assert_eq(r.cls, UC_PARTIAL, "class %s (out %lld)", uffd_class_name(r.cls), (long long)out);
	cr_assert_eq(r.done, PG);
	/* Going on past the bytes done finds the present page. */
	ret = uffd_copy(uffd, (uintptr_t)region + 5 * PG, src + 5 * PG, 3 * PG, true, &out);
	cr_assert_eq(uffd_classify(ret, out, 3 * PG).cls, UC_EXISTS);
	cr_assert_eq(memcmp(region + 4 * PG, src + 4 * PG, 2 * PG), 0);
}

Test(uffd_kernel, zeropage_on_a_fresh_page_is_done)
{
	static const uint8_t zero[PG];
	int64_t out = 0;
	int ret = uffd_zeropage(uffd, (uintptr_t)region + 3 * PG, PG, true, &out);
	struct uffd_result r = uffd_classify(ret, out, PG);

	cr_assert_eq(ret, 0, "zeropage: %s", strerror(-ret));
	cr_assert_eq(out, (int64_t)PG);
	cr_assert_eq(r.cls, UC_DONE, "class %s", uffd_class_name(r.cls));
	cr_assert_eq(r.done, PG);
	cr_assert_eq(memcmp(region + 3 * PG, zero, PG), 0, "zeropage left non-zero bytes");
	/* And a copy onto it now finds it there. */
	ret = uffd_copy(uffd, (uintptr_t)region + 3 * PG, src, PG, true, &out);
	cr_assert_eq(uffd_classify(ret, out, PG).cls, UC_EXISTS);
}

Test(uffd_kernel, copy_to_an_unregistered_address_is_stale)
{
	int64_t out = 0;
	int ret = uffd_copy(uffd, (uintptr_t)plain, src, PG, true, &out);

	cr_assert_eq(ret, -ENOENT, "copy: %d (%s)", ret, strerror(-ret));
	cr_assert_eq(uffd_classify(ret, out, PG).cls, UC_STALE);
	ret = uffd_zeropage(uffd, (uintptr_t)plain, PG, true, &out);
	cr_assert_eq(uffd_classify(ret, out, PG).cls, UC_STALE, "zeropage: %d", ret);
}

Test(uffd_kernel, copy_after_unregister_is_stale)
{
	int64_t out = 0;
	int ret;

	cr_assert_eq(uffd_unregister(uffd, (uintptr_t)region + 8 * PG, 8 * PG), 0);
	ret = uffd_copy(uffd, (uintptr_t)region + 8 * PG, src, PG, true, &out);
	cr_assert_eq(uffd_classify(ret, out, PG).cls, UC_STALE, "copy: %d (%s)", ret, strerror(-ret));
	/* The part still registered is unaffected. */
	ret = uffd_copy(uffd, (uintptr_t)region, src, PG, true, &out);
	cr_assert_eq(ret, 0, "copy: %s", strerror(-ret));
}

/* The thread that blocks in madvise until the manager (us) reads the REMOVE event. */
static void *do_dontneed(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)madvise(region + 12 * PG, 2 * PG, MADV_DONTNEED);
}

Test(uffd_kernel, copy_while_an_event_is_unread_is_retry)
{
	struct pollfd p = { .fd = uffd, .events = POLLIN };
	struct uffd_msg msg;
	pthread_t th;
	int64_t out = 0;
	void *rv;
	int ret;

	cr_assert_eq(pthread_create(&th, NULL, do_dontneed, NULL), 0);
	cr_assert_eq(poll(&p, 1, 5000), 1, "no REMOVE event");
	ret = uffd_copy(uffd, (uintptr_t)region, src, PG, true, &out);
	cr_assert_eq(ret, -EAGAIN, "copy with an unread event: %d (%s)", ret, strerror(-ret));
	cr_assert_eq(uffd_classify(ret, out, PG).cls, UC_RETRY, "out %lld", (long long)out);
	cr_assert_eq(read(uffd, &msg, sizeof(msg)), (ssize_t)sizeof(msg));
	cr_assert_eq(msg.event, UFFD_EVENT_REMOVE);
	cr_assert_eq(pthread_join(th, &rv), 0);
	cr_assert_eq((intptr_t)rv, 0, "madvise failed");
	/* Drained: the same copy goes through. */
	ret = uffd_copy(uffd, (uintptr_t)region, src, PG, true, &out);
	cr_assert_eq(ret, 0, "copy after the drain: %s", strerror(-ret));
	cr_assert_eq(memcmp(region, src, PG), 0);
}

Test(uffd_kernel, features_are_exactly_the_requested_ones)
{
	uint64_t f = 0;

	cr_assert_eq(uffd_features(uffd, &f), 0);
	cr_assert_eq(f, (uint64_t)FEATURES, "features 0x%llx, want 0x%llx", (unsigned long long)f,
		     (unsigned long long)FEATURES);
	cr_assert_eq(f & (1ull << 31), 0, "the kernel's private bit leaked");
}

Test(uffd_kernel, features_of_other_uffds)
{
	int a = uffd_open(UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_UNMAP);
	int none = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	uint64_t f = ~0ull;

	cr_assert_eq(uffd_features(a, &f), 0);
	cr_assert_eq(f, (uint64_t)(UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_UNMAP),
		     "0x%llx", (unsigned long long)f);
	/* A uffd that never went through UFFDIO_API has no features. */
	cr_assert_geq(none, 0);
	f = ~0ull;
	cr_assert_eq(uffd_features(none, &f), 0);
	cr_assert_eq(f, 0, "0x%llx", (unsigned long long)f);
	close(a);
	close(none);
}

Test(uffd_kernel, features_of_a_non_uffd_is_einval)
{
	int p[2], efd = eventfd(0, EFD_CLOEXEC), dir = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	uint64_t f = 0x1234;

	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	cr_assert_geq(efd, 0);
	cr_assert_geq(dir, 0);
	cr_assert_eq(uffd_features(p[0], &f), -EINVAL);
	cr_assert_eq(uffd_features(efd, &f), -EINVAL);
	cr_assert_eq(uffd_features(dir, &f), -EINVAL);
	cr_assert_eq(f, 0x1234, "features written on failure");
	close(p[0]);
	close(p[1]);
	close(efd);
	close(dir);
	/* A closed fd: an error, whichever. */
	cr_assert_lt(uffd_features(p[0], &f), 0);
}

Test(uffd_kernel, wrappers_return_negative_errno)
{
	int p[2];
	int64_t out = 0;

	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	cr_assert_eq(uffd_register(p[0], (uintptr_t)plain, PG, false), -ENOTTY);
	cr_assert_eq(uffd_copy(p[0], (uintptr_t)plain, src, PG, true, &out), -ENOTTY);
	close(p[0]);
	close(p[1]);
	cr_assert_eq(uffd_wake(p[0], (uintptr_t)region, PG), -EBADF);
	/* Unaligned ranges are the caller's bug. */
	cr_assert_eq(uffd_copy(uffd, (uintptr_t)region + 1, src, PG, true, &out), -EINVAL);
	cr_assert_eq(uffd_classify(-EINVAL, out, PG).cls, UC_BUG);
}
