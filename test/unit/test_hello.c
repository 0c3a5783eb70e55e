/*
 * The checks of a HELLO, with real fds: what a client claims against what
 * its fds are, and whether it may hand the process over.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "client.h"
#include "uffd.h"
#include "wire.h"

#define NOBODY	12345u

static char tmp[64];
static char filepath[96];

static void tmp_init(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/uffd-hello-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp), "mkdtemp: %s", strerror(errno));
	snprintf(filepath, sizeof(filepath), "%s/file", tmp);
}

static void tmp_fini(void)
{
	unlink(filepath);
	rmdir(tmp);
}

static int uffd_with(uint64_t features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	cr_assert_geq(fd, 0, "userfaultfd: %s", strerror(errno));
	cr_assert_eq(ioctl(fd, UFFDIO_API, &api), 0, "UFFDIO_API: %s", strerror(errno));
	return fd;
}

static int pidfd_of(pid_t pid)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);

	cr_assert_geq(fd, 0, "pidfd_open %d: %s", pid, strerror(errno));
	return fd;
}

static int open_dir(void)
{
	int fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	cr_assert_geq(fd, 0, "%s: %s", tmp, strerror(errno));
	return fd;
}

static int open_file(void)
{
	int fd = open(filepath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

	cr_assert_geq(fd, 0, "%s: %s", filepath, strerror(errno));
	return fd;
}

/* A pidfd of a child that has exited and been reaped. */
static int pidfd_of_reaped(void)
{
	pid_t pid = fork();
	int fd, st;

	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(0);
	fd = pidfd_of(pid);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	return fd;
}

/* A child that runs as UID (real and effective) and waits to be killed. */
static pid_t child_as(uid_t ruid, uid_t euid)
{
	int p[2];
	pid_t pid;
	char b;

	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(p[0]);
		if (setresuid(ruid, euid, 0) < 0)
			_exit(1);
		if (write(p[1], "R", 1) != 1) {
		}
		for (;;)
			pause();
	}
	close(p[1]);
	cr_assert_eq(read(p[0], &b, 1), 1, "child could not take uid %u/%u", ruid, euid);
	close(p[0]);
	return pid;
}

static void child_end(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

TestSuite(hello, .init = tmp_init, .fini = tmp_fini, .timeout = 20);

Test(hello, valid_hand_over_of_ourselves)
{
	struct hello_check h = {
		.version = UFFD_PROTO_VERSION,
		.features = UFFD_NEEDED_FEATURES,
		.nfds = 3,
		.uffd = uffd_with(UFFD_NEEDED_FEATURES),
		.pidfd = pidfd_of(getpid()),
		.dirfd = open_dir(),
		.peer_uid = 0,
	};
	char reason[512] = "";
	pid_t pid = 0;
	int ret = hello_validate(&h, &pid, reason, sizeof(reason));

	cr_assert_eq(ret, 0, "refused: %d %s", ret, reason);
	cr_assert_eq(pid, getpid());
}

Test(hello, extra_features_are_fine_when_claimed)
{
	uint64_t f = UFFD_NEEDED_FEATURES | UFFD_FEATURE_THREAD_ID;
	struct hello_check h = {
		.version = UFFD_PROTO_VERSION, .features = f, .nfds = 3,
		.uffd = uffd_with(f), .pidfd = pidfd_of(getpid()), .dirfd = open_dir(),
	};
	char reason[512] = "";
	pid_t pid = 0;

	cr_assert_eq(hello_validate(&h, &pid, reason, sizeof(reason)), 0, "%s", reason);
	cr_assert_eq(pid, getpid());
}

Test(hello, owner_may_hand_over_its_own_process)
{
	pid_t kid = child_as(NOBODY, NOBODY);
	struct hello_check h = {
		.version = UFFD_PROTO_VERSION, .features = UFFD_NEEDED_FEATURES, .nfds = 3,
		.uffd = uffd_with(UFFD_NEEDED_FEATURES), .pidfd = pidfd_of(kid),
		.dirfd = open_dir(), .peer_uid = NOBODY,
	};
	char reason[512] = "";
	pid_t pid = 0;
	int ret = hello_validate(&h, &pid, reason, sizeof(reason));

	child_end(kid);
	cr_assert_eq(ret, 0, "refused: %s", reason);
	cr_assert_eq(pid, kid);
}

/* Only the real uid matching is not enough: a setuid-root process is not the peer's. */
Test(hello, owner_of_real_uid_only_is_refused)
{
	pid_t kid = child_as(NOBODY, 0);
	struct hello_check h = {
		.version = UFFD_PROTO_VERSION, .features = UFFD_NEEDED_FEATURES, .nfds = 3,
		.uffd = uffd_with(UFFD_NEEDED_FEATURES), .pidfd = pidfd_of(kid),
		.dirfd = open_dir(), .peer_uid = NOBODY,
	};
	char reason[512] = "", want[64];
	pid_t pid = 0;
	int ret = hello_validate(&h, &pid, reason, sizeof(reason));

	child_end(kid);
	snprintf(want, sizeof(want), "uid %u may not hand over pid %d", NOBODY, kid);
	cr_assert_eq(ret, -EPERM, "ret %d: %s", ret, reason);
	cr_assert_not_null(strstr(reason, want), "reason: %s", reason);
}

/* What sits in a slot of the HELLO. */
enum kind {
	K_NONE,
	K_UFFD,			/* with the features of the case's uffd_feat */
	K_PIDFD,		/* of ourselves */
	K_PIDFD_REAPED,
	K_DIR,
	K_FILE,
	K_PIPE,
	K_EVENTFD,
};

#define CLAIM_REAL	(~0ull)		/* claim what the uffd really has */

struct bad {
	const char *what;
	uint32_t version;
	int nfds;
	enum kind slot[3];
	uint64_t uffd_feat;	/* for K_UFFD */
	uint64_t claim;
	uid_t peer_uid;
	int ret;
	const char *reason;	/* a distinctive part of the reason ("%d": see below) */
};

#define NEED		UFFD_NEEDED_FEATURES
#define GOOD_SLOTS	{ K_UFFD, K_PIDFD, K_DIR }

static const struct bad bads[] = {
	{ "version 2", 2, 3, GOOD_SLOTS, NEED, CLAIM_REAL, 0, -EPROTO,
	  "protocol version 2 not supported" },
	{ "version 0", 0, 3, GOOD_SLOTS, NEED, CLAIM_REAL, 0, -EPROTO,
	  "protocol version 0 not supported" },
	{ "no fds", 1, 0, { K_NONE, K_NONE, K_NONE }, NEED, CLAIM_REAL, 0, -EINVAL,
	  "HELLO carries 0 fds" },
	{ "2 fds", 1, 2, { K_UFFD, K_PIDFD, K_NONE }, NEED, CLAIM_REAL, 0, -EINVAL,
	  "HELLO carries 2 fds" },
	{ "4 fds", 1, 4, GOOD_SLOTS, NEED, CLAIM_REAL, 0, -EINVAL,
	  "HELLO carries 4 fds" },
	{ "uffd slot: pipe", 1, 3, { K_PIPE, K_PIDFD, K_DIR }, NEED, NEED, 0, -EINVAL,
	  "first fd is not a userfaultfd (pipe:" },
	{ "uffd slot: eventfd", 1, 3, { K_EVENTFD, K_PIDFD, K_DIR }, NEED, NEED, 0, -EINVAL,
	  "first fd is not a userfaultfd (anon_inode:[eventfd])" },
	{ "uffd slot: directory", 1, 3, { K_DIR, K_PIDFD, K_DIR }, NEED, NEED, 0, -EINVAL,
	  "first fd is not a userfaultfd" },
	{ "pidfd slot: regular file", 1, 3, { K_UFFD, K_FILE, K_DIR }, NEED, CLAIM_REAL, 0,
	  -EINVAL, "second fd is not a pidfd (/tmp/uffd-hello-" },
	{ "pidfd slot: a uffd", 1, 3, { K_UFFD, K_UFFD, K_DIR }, NEED, CLAIM_REAL, 0, -EINVAL,
	  "second fd is not a pidfd (anon_inode:[userfaultfd])" },
	{ "dirfd slot: regular file", 1, 3, { K_UFFD, K_PIDFD, K_FILE }, NEED, CLAIM_REAL, 0,
	  -EINVAL, "third fd is not a directory" },
	{ "dirfd slot: pidfd", 1, 3, { K_UFFD, K_PIDFD, K_PIDFD }, NEED, CLAIM_REAL, 0, -EINVAL,
	  "third fd is not a directory" },
	{ "claims more than the uffd has", 1, 3, GOOD_SLOTS, NEED,
	  NEED | UFFD_FEATURE_THREAD_ID, 0, -EINVAL,
	  "HELLO says features 0x14e, but the uffd has 0x4e" },
	{ "claims the needed, uffd has fewer", 1, 3, GOOD_SLOTS,
	  NEED & ~UFFD_FEATURE_EVENT_REMOVE, NEED, 0, -EINVAL,
	  "HELLO says features 0x4e, but the uffd has 0x46" },
	{ "claims nothing, uffd has all", 1, 3, GOOD_SLOTS, NEED, 0, 0, -EINVAL,
	  "HELLO says features 0x0, but the uffd has 0x4e" },
	{ "uffd lacks EVENT_REMOVE", 1, 3, GOOD_SLOTS, NEED & ~UFFD_FEATURE_EVENT_REMOVE,
	  CLAIM_REAL, 0, -EINVAL, "uffd lacks EVENT_REMOVE (" },
	{ "uffd lacks EVENT_FORK and EVENT_UNMAP", 1, 3, GOOD_SLOTS,
	  UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE, CLAIM_REAL, 0, -EINVAL,
	  "uffd lacks EVENT_FORK EVENT_UNMAP (" },
	{ "uffd with no features", 1, 3, GOOD_SLOTS, 0, CLAIM_REAL, 0, -EINVAL,
	  "uffd lacks EVENT_FORK EVENT_REMAP EVENT_REMOVE EVENT_UNMAP (" },
	{ "pidfd of a reaped child", 1, 3, { K_UFFD, K_PIDFD_REAPED, K_DIR }, NEED, CLAIM_REAL,
	  0, -ESRCH, "the process has exited" },
	{ "peer neither root nor owner", 1, 3, GOOD_SLOTS, NEED, CLAIM_REAL, NOBODY, -EPERM,
	  "uid 12345 may not hand over pid %d (owned by uid 0)" },
};

static int make(enum kind k, uint64_t feat, int *spare)
{
	int p[2], fd = -1;

	switch (k) {
	case K_NONE:
		return -1;
	case K_UFFD:
		return uffd_with(feat);
	case K_PIDFD:
		return pidfd_of(getpid());
	case K_PIDFD_REAPED:
		return pidfd_of_reaped();
	case K_DIR:
		return open_dir();
	case K_FILE:
		return open_file();
	case K_PIPE:
		cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
		*spare = p[1];
		return p[0];
	case K_EVENTFD:
		fd = eventfd(0, EFD_CLOEXEC);
		cr_assert_geq(fd, 0);
		return fd;
	}
	return -1;
}

#define NR_BADS	(sizeof(bads) / sizeof(bads[0]))

/* Indexes, not the rows: a row's pointers would not survive the copy to the test's process. */
ParameterizedTestParameters(hello, refuses_bad_hello)
{
	static unsigned idx[NR_BADS];

	for (unsigned i = 0; i < NR_BADS; i++)
		idx[i] = i;
	return cr_make_param_array(unsigned, idx, NR_BADS, NULL);
}

ParameterizedTest(unsigned *row, hello, refuses_bad_hello)
{
	const struct bad *b = &bads[*row];
	int fds[3], spare = -1;
	struct hello_check h;
	char reason[512] = "", want[256];
	uint64_t real = 0;
	pid_t pid = 0;
	int ret;

	for (int i = 0; i < 3; i++)
		fds[i] = make(b->slot[i], b->uffd_feat, &spare);
	if (b->slot[0] == K_UFFD)
		cr_assert_eq(uffd_features(fds[0], &real), 0);
	h = (struct hello_check){
		.version = b->version,
		.features = b->claim == CLAIM_REAL ? real : b->claim,
		.nfds = b->nfds,
		.uffd = fds[0],
		.pidfd = fds[1],
		.dirfd = fds[2],
		.peer_uid = b->peer_uid,
	};
	ret = hello_validate(&h, &pid, reason, sizeof(reason));
	if (strstr(b->reason, "%d"))
		snprintf(want, sizeof(want), "uid %u may not hand over pid %d (owned by uid 0)",
			 NOBODY, getpid());
	else
		snprintf(want, sizeof(want), "%s", b->reason);
	cr_assert_eq(ret, b->ret, "%s: ret %d (%s), want %d", b->what, ret, strerror(-ret), b->ret);
	cr_assert_not_null(strstr(reason, want), "%s: reason \"%s\", want \"%s\"", b->what, reason,
			   want);
	for (int i = 0; i < 3; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (spare >= 0)
		close(spare);
}

/* The reason never overflows the buffer it is given. */
Test(hello, reason_is_truncated_to_its_buffer)
{
	struct hello_check h = {
		.version = 99, .features = NEED, .nfds = 3,
		.uffd = uffd_with(NEED), .pidfd = pidfd_of(getpid()), .dirfd = open_dir(),
	};
	char buf[16];
	pid_t pid = 0;

	memset(buf, 'X', sizeof(buf));
	cr_assert_eq(hello_validate(&h, &pid, buf, 8), -EPROTO);
	cr_assert_eq(strlen(buf), 7);
	cr_assert_eq(buf[8], 'X', "wrote past the length it was given");
}
