/*
 * HELLO over a real socket to a real daemon: bad clients are refused with a
 * reason, their fds are closed, they are counted, and the daemon goes on
 * serving a real process afterwards.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "manager.pb-c.h"
#include "tserve.h"
#include "wire.h"

/* Outside 0x600000000000-0x640000000000, where ASan keeps its heap. */
#define BASE		0x520000000000ull
#define SEED		0xbadc0ffee0ddf00dull
#define HANDSHAKE_MS	300
/* The daemon's deadline when none is given (DEFAULT_HANDSHAKE_MS in manager/main.c). */
#define DEFAULT_HANDSHAKE_MS	5000
/*
 * The longest wait for anything the daemon should do (a reply, a hang-up, a
 * log line, its fds back): a hang guard, never reached unless it is broken;
 * a loaded machine only makes the wait longer.
 */
#define GUARD_MS	20000
#define FEATURES	(UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |             \
			 UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP |           \
			 UFFD_FEATURE_THREAD_ID)
#define MAX_SEND_FDS	32

static const struct ts_area areas[] = {
	{ BASE, 512 << 10, 3 },
};

static struct ts_daemon dmn;
static char imgdir[160];
static char marker[160];	/* a file whose fds we send: none may stay in the daemon */

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000ull + ts.tv_nsec / 1000000;
}

static void setup(void)
{
	static const char *const args[] = { "--handshake-timeout", "300", NULL };
	int fd;

	ts_daemon_start(&dmn, args);
	snprintf(imgdir, sizeof(imgdir), "%s/img", dmn.dir);
	ts_write_images(imgdir, TS_IMAGE_ID, areas, 1, SEED);
	snprintf(marker, sizeof(marker), "%s/marker", dmn.dir);
	fd = open(marker, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0, "%s: %s", marker, strerror(errno));
	close(fd);
}

/* The daemon must survive every bad client and exit cleanly when told. */
static void teardown(void)
{
	cr_expect(ts_daemon_finish(&dmn, 5000), "uffd-manager did not exit cleanly");
}

TestSuite(hello_wire, .init = setup, .fini = teardown, .timeout = 60);

/* How many fds the daemon holds, and whether one of them is our marker file. */
static int daemon_fds(bool *has_marker)
{
	char path[64], link[PATH_MAX], full[PATH_MAX + 80];
	struct dirent *e;
	int n = 0;
	DIR *dir;

	*has_marker = false;
	snprintf(path, sizeof(path), "/proc/%d/fd", dmn.pid);
	dir = opendir(path);
	cr_assert_not_null(dir, "%s: %s", path, strerror(errno));
	while ((e = readdir(dir))) {
		ssize_t k;

		if (e->d_name[0] == '.')
			continue;
		n++;
		snprintf(full, sizeof(full), "%s/%s", path, e->d_name);
		k = readlink(full, link, sizeof(link) - 1);
		if (k > 0) {
			link[k] = 0;
			if (!strcmp(link, marker))
				*has_marker = true;
		}
	}
	closedir(dir);
	return n;
}

/* Wait for the daemon's fd table to come back to BASELINE, with no marker left. */
static void expect_fds_back(int baseline, const char *what)
{
	uint64_t end = ms_now() + GUARD_MS;
	bool mk;
	int n;

	for (;;) {
		n = daemon_fds(&mk);
		if ((n == baseline && !mk) || ms_now() > end)
			break;
		usleep(5000);
	}
	cr_assert_eq(n, baseline, "%s: the daemon holds %d fds, %d before", what, n, baseline);
	cr_assert(!mk, "%s: the daemon still holds the marker file", what);
}

/* The daemon's fd count once it has settled (a status connection closes just after its answer). */
static int quiet_fds(void)
{
	int n = -1, same = 0;
	bool mk;

	for (int i = 0; i < 200 && same < 5; i++) {
		int k = daemon_fds(&mk);

		same = k == n ? same + 1 : 0;
		n = k;
		usleep(2000);
	}
	return n;
}

/* Wait (up to the hang guard) for the daemon's log to contain S. */
static bool log_waits_for(const char *s)
{
	uint64_t end = ms_now() + GUARD_MS;

	while (!ts_log_has(&dmn, s)) {
		if (ms_now() > end)
			return false;
		usleep(5000);
	}
	return true;
}

static int conn_open(void)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	strcpy(addr.sun_path, dmn.sock);
	cr_assert_eq(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0, "connect: %s",
		     strerror(errno));
	return fd;
}

/* One packet of LEN bytes with NFDS fds, by hand (wire_send caps both). */
static void send_raw(int sock, const void *data, size_t len, const int *fds, int nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * MAX_SEND_FDS)];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	cr_assert_leq(nfds, MAX_SEND_FDS);
	if (nfds) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	n = sendmsg(sock, &mh, MSG_NOSIGNAL);
	cr_assert_eq(n, (ssize_t)len, "sendmsg %zu bytes, %d fds: %zd %s", len, nfds, n,
		     strerror(errno));
}

static size_t pack_request(const Request *r, uint8_t *buf, size_t cap)
{
	size_t len = request__get_packed_size(r);

	cr_assert_leq(len, cap);
	return request__pack(r, buf);
}

/* A well-formed HELLO, but for VERSION and FEATURES. */
static size_t pack_hello(uint8_t *buf, size_t cap, uint32_t version, uint64_t features,
			 uint32_t image_id)
{
	Hello h = HELLO__INIT;
	Request r = REQUEST__INIT;

	h.version = version;
	h.image_id = image_id;
	h.features = features;
	r.hello = &h;
	return pack_request(&r, buf, cap);
}

/*
 * Read one reply within TIMEOUT_MS. Returns 1 with *OK and REASON filled, 0
 * on EOF, -ETIMEDOUT, or another -errno.
 */
static int recv_reply(int sock, int timeout_ms, bool *ok, char *reason, size_t len)
{
	struct pollfd p = { .fd = sock, .events = POLLIN };
	uint8_t buf[WIRE_MAX_MSG];
	int fds[WIRE_MAX_FDS], nfds;
	ssize_t n;
	Reply *r;

	reason[0] = 0;
	if (poll(&p, 1, timeout_ms) <= 0)
		return -ETIMEDOUT;
	n = wire_recv(sock, buf, sizeof(buf), fds, &nfds, 0);
	if (n <= 0)
		return (int)n;
	r = reply__unpack(NULL, n, buf);
	cr_assert_not_null(r, "the daemon's reply does not decode");
	cr_assert_not_null(r->hello, "the reply carries no hello_reply");
	*ok = r->hello->ok;
	snprintf(reason, len, "%s", r->hello->reason ? r->hello->reason : "");
	reply__free_unpacked(r, NULL);
	return 1;
}

/* Expect a refusal whose reason contains WANT. */
static void expect_refused(int sock, const char *want, const char *what)
{
	char reason[1024];
	bool ok = true;
	int ret = recv_reply(sock, GUARD_MS, &ok, reason, sizeof(reason));

	cr_assert_eq(ret, 1, "%s: no reply (%d)", what, ret);
	cr_assert(!ok, "%s: accepted", what);
	cr_assert_not_null(strstr(reason, want), "%s: reason \"%s\", want \"%s\"", what, reason,
			   want);
}

/* The daemon hangs up on us within a while (the handshake deadline at most). */
static void expect_hangup(int sock, const char *what)
{
	char reason[256];
	bool ok;
	int ret = recv_reply(sock, GUARD_MS, &ok, reason, sizeof(reason));

	cr_assert_eq(ret, 0, "%s: the daemon did not hang up (%d, \"%s\")", what, ret, reason);
}

/* The daemon's totals now (their scalar fields: the answer is freed). */
static StatusTotals totals(void)
{
	struct ts_status s;
	StatusTotals t;

	cr_assert_eq(ts_status_get(&dmn, &s), 0, "status");
	t = *s.tot;
	ts_status_free(&s);
	return t;
}

static uint64_t refused_count(void)
{
	return totals().refused;
}

/* Our own fds for a HELLO. */
struct fdset {
	int uffd, pidfd, dirfd;
	int mk[24];		/* fds of the marker file */
};

static int own_uffd(uint64_t features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	cr_assert_geq(fd, 0, "userfaultfd: %s", strerror(errno));
	cr_assert_eq(ioctl(fd, UFFDIO_API, &api), 0, "UFFDIO_API: %s", strerror(errno));
	return fd;
}

static void fdset_open(struct fdset *s)
{
	s->uffd = own_uffd(FEATURES);
	s->pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	s->dirfd = open(imgdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert(s->pidfd >= 0 && s->dirfd >= 0);
	for (unsigned i = 0; i < sizeof(s->mk) / sizeof(s->mk[0]); i++) {
		s->mk[i] = open(marker, O_RDONLY | O_CLOEXEC);
		cr_assert_geq(s->mk[i], 0);
	}
}

static void fdset_close(struct fdset *s)
{
	close(s->uffd);
	close(s->pidfd);
	close(s->dirfd);
	for (unsigned i = 0; i < sizeof(s->mk) / sizeof(s->mk[0]); i++)
		close(s->mk[i]);
}

/* Bad clients. Each sends on SOCK and says what it expects back. */
struct bad {
	const char *what;
	void (*send)(int sock, struct fdset *s);
	const char *reasons[2];		/* the refusals, in order */
	int nr;				/* how many refusals (and replies) */
	bool no_read;			/* hang up without reading the reply */
};

static void send_version(int sock, struct fdset *s)
{
	uint8_t buf[256];
	int fds[3] = { s->uffd, s->pidfd, s->dirfd };

	send_raw(sock, buf, pack_hello(buf, sizeof(buf), 7, FEATURES, TS_IMAGE_ID), fds, 3);
}

static void send_fds0(int sock, struct fdset *s)
{
	uint8_t buf[256];

	(void)s;
	send_raw(sock, buf, pack_hello(buf, sizeof(buf), UFFD_PROTO_VERSION, FEATURES,
				       TS_IMAGE_ID), NULL, 0);
}

static void send_fds2(int sock, struct fdset *s)
{
	uint8_t buf[256];
	int fds[2] = { s->uffd, s->mk[0] };

	send_raw(sock, buf, pack_hello(buf, sizeof(buf), UFFD_PROTO_VERSION, FEATURES,
				       TS_IMAGE_ID), fds, 2);
}

static void send_fds4(int sock, struct fdset *s)
{
	uint8_t buf[256];
	int fds[4] = { s->uffd, s->pidfd, s->dirfd, s->mk[0] };

	send_raw(sock, buf, pack_hello(buf, sizeof(buf), UFFD_PROTO_VERSION, FEATURES,
				       TS_IMAGE_ID), fds, 4);
}

/* More fds than the daemon has cmsg room for (16): the kernel truncates. */
static void send_fds24(int sock, struct fdset *s)
{
	uint8_t buf[256];

	send_raw(sock, buf, pack_hello(buf, sizeof(buf), UFFD_PROTO_VERSION, FEATURES,
				       TS_IMAGE_ID), s->mk, 24);
}

static void send_big(int sock, struct fdset *s)
{
	static uint8_t buf[WIRE_MAX_MSG + 1];

	(void)s;
	memset(buf, 0x42, sizeof(buf));
	send_raw(sock, buf, sizeof(buf), NULL, 0);
}

static void send_huge_with_fds(int sock, struct fdset *s)
{
	static uint8_t buf[64 << 10];
	int fds[3] = { s->uffd, s->pidfd, s->mk[0] };
	size_t len;

	memset(buf, 0, sizeof(buf));
	len = pack_hello(buf, sizeof(buf), UFFD_PROTO_VERSION, FEATURES, TS_IMAGE_ID);
	(void)len;	/* a valid HELLO at the front, 64K of padding after it */
	send_raw(sock, buf, sizeof(buf), fds, 3);
}

static void send_random(int sock, struct fdset *s)
{
	uint8_t buf[300];
	uint64_t x = 0x9E3779B97F4A7C15ull;
	Request *r;

	(void)s;
	for (size_t i = 0; i < sizeof(buf); i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t)x;
	}
	buf[0] = 0x0f;	/* field 1, wire type 7: no such wire type */
	r = request__unpack(NULL, sizeof(buf), buf);
	cr_assert_null(r, "the random bytes decode after all");
	send_raw(sock, buf, sizeof(buf), NULL, 0);
}

#ifndef PIDFD_THREAD
#define PIDFD_THREAD	O_EXCL	/* Linux 6.9 */
#endif

static void *idle_thread(void *arg)
{
	pid_t *tid = arg;

	__atomic_store_n(tid, (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
	for (;;)
		pause();
	return NULL;
}

/* A thread of this process other than the main one, alive for the rest of the test: its tid. */
static pid_t other_thread(void)
{
	static pid_t tid;
	pthread_t th;

	if (tid)
		return tid;
	cr_assert_eq(pthread_create(&th, NULL, idle_thread, &tid), 0);
	while (!__atomic_load_n(&tid, __ATOMIC_ACQUIRE))
		usleep(1000);
	return tid;
}

/* The pidfd of a thread (PIDFD_THREAD) that is not the main one: when it exits, not the process. */
static void send_thread_pidfd(int sock, struct fdset *s)
{
	uint8_t buf[256];
	int fds[3] = { s->uffd, (int)syscall(SYS_pidfd_open, other_thread(), PIDFD_THREAD),
		       s->dirfd };

	cr_assert_geq(fds[1], 0, "pidfd_open(PIDFD_THREAD): %s", strerror(errno));
	send_raw(sock, buf, pack_hello(buf, sizeof(buf), UFFD_PROTO_VERSION, FEATURES,
				       TS_IMAGE_ID), fds, 3);
	close(fds[1]);
}

/* PIDFD_THREAD of the main thread: it reports that thread's exit, not the process's. */
static void send_main_thread_pidfd(int sock, struct fdset *s)
{
	uint8_t buf[256];
	int fds[3] = { s->uffd, (int)syscall(SYS_pidfd_open, getpid(), PIDFD_THREAD), s->dirfd };

	cr_assert_geq(fds[1], 0, "pidfd_open(PIDFD_THREAD): %s", strerror(errno));
	send_raw(sock, buf, pack_hello(buf, sizeof(buf), UFFD_PROTO_VERSION, FEATURES,
				       TS_IMAGE_ID), fds, 3);
	close(fds[1]);
}

/* request{hello{version=1}}: image_id and features, both required, missing. */
static void send_incomplete(int sock, struct fdset *s)
{
	static const uint8_t buf[] = { 0x0a, 0x02, 0x08, 0x01 };
	int fds[3] = { s->uffd, s->pidfd, s->dirfd };

	send_raw(sock, buf, sizeof(buf), fds, 3);
}

static void send_both(int sock, struct fdset *s)
{
	uint8_t buf[256];
	Hello h = HELLO__INIT;
	StatusRequest sr = STATUS_REQUEST__INIT;
	Request r = REQUEST__INIT;
	int fds[3] = { s->uffd, s->pidfd, s->dirfd };

	h.version = UFFD_PROTO_VERSION;
	h.image_id = TS_IMAGE_ID;
	h.features = FEATURES;
	sr.version = UFFD_PROTO_VERSION;
	r.hello = &h;
	r.status = &sr;
	send_raw(sock, buf, pack_request(&r, buf, sizeof(buf)), fds, 3);
}

/* Only an unknown field (15, 1 byte): a request with neither hello nor status. */
static void send_neither(int sock, struct fdset *s)
{
	static const uint8_t buf[] = { 0x7a, 0x01, 0x00 };

	(void)s;
	send_raw(sock, buf, sizeof(buf), NULL, 0);
}

static void send_status_fds(int sock, struct fdset *s)
{
	uint8_t buf[64];
	StatusRequest sr = STATUS_REQUEST__INIT;
	Request r = REQUEST__INIT;
	int fds[2] = { s->mk[0], s->dirfd };

	sr.version = UFFD_PROTO_VERSION;
	r.status = &sr;
	send_raw(sock, buf, pack_request(&r, buf, sizeof(buf)), fds, 2);
}

/* A refused HELLO, then a second one with fds on the same connection. */
static void send_two(int sock, struct fdset *s)
{
	uint8_t buf[256];
	int fds[3] = { s->mk[0], s->mk[1], s->mk[2] };
	size_t len = pack_hello(buf, sizeof(buf), 7, FEATURES, TS_IMAGE_ID);

	send_raw(sock, buf, len, NULL, 0);
	send_raw(sock, buf, pack_hello(buf, sizeof(buf), UFFD_PROTO_VERSION, FEATURES,
				       TS_IMAGE_ID), fds, 3);
}

/* A client that lies: the uffd has THREAD_ID too. */
static void send_lie(int sock, struct fdset *s)
{
	uint8_t buf[256];
	int fds[3] = { s->uffd, s->pidfd, s->dirfd };

	send_raw(sock, buf, pack_hello(buf, sizeof(buf), UFFD_PROTO_VERSION,
				       FEATURES & ~UFFD_FEATURE_THREAD_ID, TS_IMAGE_ID), fds, 3);
}

/* The uffd slot holds the marker file. */
static void send_not_uffd(int sock, struct fdset *s)
{
	uint8_t buf[256];
	int fds[3] = { s->mk[0], s->pidfd, s->dirfd };

	send_raw(sock, buf, pack_hello(buf, sizeof(buf), UFFD_PROTO_VERSION, FEATURES,
				       TS_IMAGE_ID), fds, 3);
}

static const struct bad bads[] = {
	{ "wrong version", send_version, { "protocol version 7 not supported" }, 1, false },
	{ "HELLO with 0 fds", send_fds0, { "HELLO carries 0 fds" }, 1, false },
	{ "HELLO with 2 fds", send_fds2, { "HELLO carries 2 fds" }, 1, false },
	{ "HELLO with 4 fds", send_fds4, { "too many fds attached" }, 1, false },
	{ "HELLO with 24 fds", send_fds24, { "too many fds attached" }, 1, false },
	{ "4097-byte packet", send_big, { "message larger than 4096 bytes" }, 1, false },
	{ "64 KiB packet with fds", send_huge_with_fds, { "message larger than 4096 bytes" }, 1,
	  false },
	{ "random bytes", send_random, { "cannot decode the request" }, 1, false },
	{ "HELLO lacking required fields", send_incomplete, { "cannot decode the request" }, 1,
	  false },
	{ "hello and status", send_both, { "a request needs exactly one of hello, status" }, 1, false },
	{ "neither hello nor status", send_neither, { "a request needs exactly one of hello, status" }, 1, false },
	{ "status with fds", send_status_fds, { "a status request carries no fds" }, 1, false },
	{ "two HELLOs", send_two,
	  { "protocol version 7 not supported", "one request per connection" }, 2, false },
	{ "lying about features", send_lie, { "HELLO says features 0x4e, but the uffd has 0x14e" },
	  1, false },
	{ "uffd slot holds a file", send_not_uffd, { "first fd is not a userfaultfd" }, 1, false },
	{ "pidfd of a thread", send_thread_pidfd, { "the pidfd names thread " }, 1, false },
	{ "PIDFD_THREAD pidfd of the main thread", send_main_thread_pidfd,
	  { "the pidfd was opened with PIDFD_THREAD" }, 1, false },
	{ "hangs up without reading", send_version, { "protocol version 7 not supported" }, 1,
	  true },
};

#define NR_BADS	(sizeof(bads) / sizeof(bads[0]))

/*
 * Run bad client B on a fresh connection: check the replies, the hang-up and
 * that the daemon's fd table is back as it was. Returns the refusals caused.
 */
static int run_bad(const struct bad *b)
{
	struct fdset s;
	int before, sock;

	fdset_open(&s);
	before = quiet_fds();
	sock = conn_open();
	b->send(sock, &s);
	if (b->no_read) {
		close(sock);
	} else {
		for (int k = 0; k < b->nr; k++)
			expect_refused(sock, b->reasons[k], b->what);
		expect_hangup(sock, b->what);
		close(sock);
	}
	fdset_close(&s);
	/* The log first: a client that hangs up at once may not even be accepted yet. */
	for (int k = 0; k < b->nr; k++) {
		char line[300];

		snprintf(line, sizeof(line), "refused: %s", b->reasons[k]);
		cr_assert(log_waits_for(line), "%s: the log lacks \"%s\"", b->what, line);
	}
	expect_fds_back(before, b->what);
	return b->nr;
}

/* Touch every page in a scrambled order, then compare every byte. */
static int sc_touch_all(struct ts_child *c)
{
	long bad = 0;

	for (int i = 0; i < c->n; i++) {
		const struct ts_area *a = &c->areas[i];
		uint64_t np = a->len / TS_PAGE;

		for (uint64_t k = 0; k < np; k++)
			(void)*(volatile uint64_t *)(uintptr_t)(a->start + (k * 7919) % np * TS_PAGE);
		bad += ts_check(a->start, a->len, a->start, a, c->seed);
	}
	return bad ? 1 : 0;
}

static int sc_touch_all_then_wait(struct ts_child *c)
{
	int r = sc_touch_all(c);

	ts_wait_go(c);
	return r;
}

/* The daemon's count of processes fully served. */
static uint64_t served_count(void)
{
	return totals().served;
}

/* Fail at once if our child PID (WHAT) has ended: its hand-over failed, or it did. */
static void assert_alive(pid_t pid, const char *what)
{
	int st = 0;
	pid_t w = waitpid(pid, &st, WNOHANG);

	cr_assert_neq(w, -1, "%s: waitpid %d: %s", what, (int)pid, strerror(errno));
	cr_assert_eq(w, 0, "%s ended before it was counted as served (%s %d, see its stderr)", what,
		     WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

/*
 * Wait until the daemon counts WANT processes fully served, the last our
 * child PID (WHAT). A process that exits before the daemon has seen its
 * last page in (placed by a fill worker, whose report the loop reads after
 * the exit) counts as exited instead: so a served process is kept alive
 * until it is counted, and one that ended fails the wait at once.
 */
static void wait_served(uint64_t want, pid_t pid, const char *what)
{
	uint64_t end = ms_now() + GUARD_MS, n;

	while ((n = served_count()) != want) {
		cr_assert_lt(n, want, "%s: %" PRIu64 " processes served, want %" PRIu64, what, n,
			     want);
		assert_alive(pid, what);
		cr_assert_lt(ms_now(), end, "%s: never counted as served (%" PRIu64 ")", what, n);
		usleep(5000);
	}
}

/*
 * A real process is still handed over and served, every byte right, and
 * counted as fully served while it lives.
 */
static void expect_still_serving(void)
{
	struct ts_child c = { .d = &dmn, .areas = areas, .n = 1, .seed = SEED, .imgdir = imgdir };
	uint64_t served = served_count();
	pid_t pid = ts_child_start(&c, sc_touch_all_then_wait);

	cr_assert_eq(kill(dmn.pid, 0), 0, "the daemon is gone");
	wait_served(served + 1, pid, "the good process");
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "the served child failed (see its stderr)");
}

ParameterizedTestParameters(hello_wire, bad_client_is_refused)
{
	static unsigned idx[NR_BADS];

	for (unsigned i = 0; i < NR_BADS; i++)
		idx[i] = i;
	return cr_make_param_array(unsigned, idx, NR_BADS, NULL);
}

/* Each bad client alone: refused, counted, cleaned up, and the daemon serves on. */
ParameterizedTest(unsigned *row, hello_wire, bad_client_is_refused)
{
	const struct bad *b = &bads[*row];
	uint64_t served;
	struct ts_status s;
	int n = run_bad(b);

	cr_assert_eq(refused_count(), (uint64_t)n, "%s: refused counter", b->what);
	expect_still_serving();
	cr_assert_eq(ts_status_get(&dmn, &s), 0);
	served = s.tot->served;
	cr_expect_eq(s.tot->refused, (uint64_t)n, "%s: the good client was counted as refused",
		     b->what);
	ts_status_free(&s);
	cr_expect_eq(served, 1, "%s: served %" PRIu64, b->what, served);
}

/* A client that says nothing is hung up on at the deadline. */
/*
 * Its deadline starts when the daemon accepts it, after our connect began:
 * the hang-up comes no sooner than HANDSHAKE_MS after it, however slow the
 * machine. It comes at the deadline given, not at the default one.
 */
static void silent_client(void)
{
	int before = quiet_fds(), sock;
	uint64_t t0 = ms_now(), dt;
	char reason[64];
	bool ok;

	sock = conn_open();
	cr_assert_eq(recv_reply(sock, GUARD_MS, &ok, reason, sizeof(reason)), 0,
		     "a silent client was not hung up on");
	dt = ms_now() - t0;
	/* Whole ms on both ends: up to 1 ms short. */
	cr_assert_geq(dt, HANDSHAKE_MS - 1, "hung up after %" PRIu64 " ms", dt);
	cr_assert_lt(dt, DEFAULT_HANDSHAKE_MS, "hung up after %" PRIu64 " ms: at the default deadline, not --handshake-timeout %d",
		     dt, HANDSHAKE_MS);
	/* The daemon's end is closed even though ours is still open. */
	expect_fds_back(before, "silent client");
	close(sock);
	cr_assert(log_waits_for("said nothing within 300 ms"), "the log lacks \"said nothing\"");
}

Test(hello_wire, silent_client_is_hung_up_on)
{
	silent_client();
	cr_assert_eq(refused_count(), 0, "a silent client is not a refused hand-over");
	expect_still_serving();
}

/* Every bad client in turn on one daemon: the counter adds up, and it still serves. */
Test(hello_wire, gauntlet_then_a_good_client)
{
	uint64_t want = 0;
	struct ts_status s;

	for (unsigned i = 0; i < NR_BADS; i++) {
		want += run_bad(&bads[i]);
		if (i == NR_BADS / 2)
			silent_client();
		cr_assert_eq(refused_count(), want, "after \"%s\"", bads[i].what);
	}
	expect_still_serving();
	cr_assert_eq(ts_status_get(&dmn, &s), 0);
	cr_expect_eq(s.tot->refused, want, "refused %" PRIu64 ", want %" PRIu64, s.tot->refused,
		     want);
	cr_expect_eq(s.tot->served, 1);
	cr_expect_eq(s.tot->clients, 1, "only the status connection is open (%u)", s.tot->clients);
	ts_status_free(&s);
}

/* A status request of exactly 4096 bytes (padded with an unknown field) is answered. */
Test(hello_wire, packet_of_exactly_4096_bytes_is_read)
{
	uint8_t buf[WIRE_MAX_MSG];
	size_t pad = WIRE_MAX_MSG - 7;	/* 4 bytes of status, tag, 2-byte length */
	struct pollfd p;
	int fds[WIRE_MAX_FDS], nfds, sock = conn_open();
	ssize_t n;
	Reply *r;

	memset(buf, 0, sizeof(buf));
	memcpy(buf, "\x12\x02\x08\x01", 4);	/* status{version=1} */
	buf[4] = 0x7a;				/* field 15, length-delimited */
	buf[5] = (uint8_t)(0x80 | (pad & 0x7f));
	buf[6] = (uint8_t)(pad >> 7);
	send_raw(sock, buf, sizeof(buf), NULL, 0);
	p = (struct pollfd){ .fd = sock, .events = POLLIN };
	cr_assert_eq(poll(&p, 1, GUARD_MS), 1, "no answer");
	n = wire_recv(sock, buf, sizeof(buf), fds, &nfds, 0);
	cr_assert_gt(n, 0, "hung up: %zd", n);
	r = reply__unpack(NULL, n, buf);
	cr_assert_not_null(r);
	cr_assert_not_null(r->totals, "a 4096-byte request was refused: %s",
			   r->hello && r->hello->reason ? r->hello->reason : "?");
	reply__free_unpacked(r, NULL);
	close(sock);
	cr_assert_eq(refused_count(), 0);
}

/*
 * In a child: take the area, hand ourselves over by hand, then send a second
 * HELLO on the same connection, then read our memory, then wait for a byte
 * on GO (so that the daemon counts us served before we exit). Exit codes
 * say where it failed.
 */
static int two_hellos_child(int go)
{
	char b;
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct uffdio_api api = { .api = UFFD_API, .features = FEATURES };
	Hello h = HELLO__INIT;
	Request req = REQUEST__INIT;
	uint8_t buf[WIRE_MAX_MSG];
	int fds[3], rfds[WIRE_MAX_FDS], nrfds, sock;
	struct pollfd p;
	ssize_t n;
	Reply *r;
	void *m;

	m = mmap((void *)(uintptr_t)areas[0].start, areas[0].len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (m != (void *)(uintptr_t)areas[0].start)
		return ts_fail("mmap: %s", strerror(errno)) + 10;
	fds[0] = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fds[0] < 0 || ioctl(fds[0], UFFDIO_API, &api) < 0)
		return ts_fail("uffd: %s", strerror(errno)) + 10;
	fds[1] = (int)syscall(SYS_pidfd_open, getpid(), 0);
	fds[2] = open(imgdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	strcpy(addr.sun_path, dmn.sock);
	if (fds[1] < 0 || fds[2] < 0 || sock < 0 ||
	    connect(sock, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		return ts_fail("set-up: %s", strerror(errno)) + 10;
	h.version = UFFD_PROTO_VERSION;
	h.image_id = TS_IMAGE_ID;
	h.features = FEATURES;
	req.hello = &h;
	for (int round = 0; round < 2; round++) {
		if (wire_send(sock, &req.base, fds, 3) < 0)
			return ts_fail("send HELLO %d", round + 1) + 20;
		p = (struct pollfd){ .fd = sock, .events = POLLIN };
		if (poll(&p, 1, GUARD_MS) != 1)
			return ts_fail("no answer to HELLO %d", round + 1) + 20;
		n = wire_recv(sock, buf, sizeof(buf), rfds, &nrfds, 0);
		r = n > 0 ? reply__unpack(NULL, n, buf) : NULL;
		if (!r || !r->hello)
			return ts_fail("bad answer to HELLO %d (%zd)", round + 1, n) + 20;
		if (round == 0 && !r->hello->ok)
			return ts_fail("first HELLO refused: %s", r->hello->reason) + 30;
		if (round == 1 && (r->hello->ok || !r->hello->reason ||
				   !strstr(r->hello->reason, "one request per connection")))
			return ts_fail("second HELLO: ok %d, \"%s\"", r->hello->ok,
				       r->hello->reason ? r->hello->reason : "") + 40;
		reply__free_unpacked(r, NULL);
	}
	close(sock);
	close(fds[0]);
	close(fds[1]);
	close(fds[2]);
	if (ts_check(areas[0].start, areas[0].len, areas[0].start, &areas[0], SEED))
		return 50;
	return read(go, &b, 1) == 1 ? 0 : 60;
}

/* A second HELLO after an accepted one is refused, and the first process is served on. */
Test(hello_wire, second_hello_after_a_good_one_is_refused)
{
	int before = quiet_fds(), go[2];
	struct ts_status s;
	uint64_t end = ms_now() + GUARD_MS;
	pid_t pid;

	cr_assert_eq(pipe2(go, O_CLOEXEC), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(go[1]);
		_exit(two_hellos_child(go[0]));
	}
	close(go[0]);
	/* Counted served while it lives; an exit first would count it as exited. */
	while (served_count() != 1) {
		assert_alive(pid, "the first process");
		cr_assert_lt(ms_now(), end, "the first process was never counted as served");
		usleep(5000);
	}
	cr_assert_eq(write(go[1], "G", 1), 1);
	close(go[1]);
	cr_assert_eq(ts_child_wait(pid, 30000), 0, "child failed (see its stderr)");
	cr_assert_eq(ts_status_get(&dmn, &s), 0);
	cr_expect_eq(s.tot->refused, 1);
	cr_expect_eq(s.tot->served, 1);
	ts_status_free(&s);
	expect_fds_back(before, "two HELLOs");
}

/*
 * Hand-overs that pass every check of the HELLO and fail later, when the
 * target is set up: refused with the reason, and the daemon lives on.
 */
static void send_image(int sock, struct fdset *s, uint32_t image_id)
{
	uint8_t buf[256];
	int fds[3] = { s->uffd, s->pidfd, s->dirfd };

	send_raw(sock, buf, pack_hello(buf, sizeof(buf), UFFD_PROTO_VERSION, FEATURES, image_id),
		 fds, 3);
}

/* No mm-N.img nor pagemap-N.img: a typo in the image id. */
static void send_no_image(int sock, struct fdset *s)
{
	send_image(sock, s, TS_IMAGE_ID + 1);
}

/* Images fine, but we (the target) have nothing mapped where they say. */
static void send_unmapped(int sock, struct fdset *s)
{
	send_image(sock, s, TS_IMAGE_ID);
}

static const struct bad late_bads[] = {
	{ "image with no files", send_no_image, { "image 4243 has no memory images" }, 1, false },
	{ "areas not mapped in the target", send_unmapped, { "cannot register 0x520000000000" }, 1,
	  false },
};

#define NR_LATE	(sizeof(late_bads) / sizeof(late_bads[0]))

ParameterizedTestParameters(hello_wire, late_refusal_keeps_the_daemon)
{
	static unsigned idx[NR_LATE];

	for (unsigned i = 0; i < NR_LATE; i++)
		idx[i] = i;
	return cr_make_param_array(unsigned, idx, NR_LATE, NULL);
}

ParameterizedTest(unsigned *row, hello_wire, late_refusal_keeps_the_daemon)
{
	const struct bad *b = &late_bads[*row];
	int n = run_bad(b);

	cr_assert_eq(kill(dmn.pid, 0), 0, "%s: the daemon died", b->what);
	cr_assert_eq(refused_count(), (uint64_t)n, "%s: refused counter", b->what);
	expect_still_serving();
}

/* CPU ticks (user + system) the process PID has used. */
static long cpu_ticks(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	cr_assert_not_null(f);
	cr_assert_not_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	p = strrchr(buf, ')');
	cr_assert_not_null(p);
	cr_assert_eq(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st),
		     2);
	return (long)(ut + st);
}

/*
 * Out of fds, the daemon stops watching its listen socket and retries
 * later, saying so once: it neither spins nor floods its log, and takes new
 * connections again once fds are free. Once it says it backs off, it uses
 * under a fifth of the time measured: a daemon that spins on accept uses
 * all the CPU it is given, one that backs off a few ms however loaded the
 * machine.
 */
Test(accept, out_of_fds_backs_off, .timeout = 60)
{
	static const char *const args[] = { "--handshake-timeout", "1500", NULL };
	struct rlimit low = { 64, 64 };
	struct ts_status s;
	struct stat sb;
	int fds[100];
	long t0, ticks, hz = sysconf(_SC_CLK_TCK);
	uint64_t w0, w1;

	/* The daemon raises its soft limit to the hard one at start: lower both after. */
	ts_daemon_start(&dmn, args);
	cr_assert_eq(prlimit(dmn.pid, RLIMIT_NOFILE, &low, NULL), 0, "prlimit: %s", strerror(errno));
	for (int i = 0; i < 100; i++)
		fds[i] = conn_open();	/* the last ones wait in the backlog */
	cr_assert(log_waits_for("backing off"), "the daemon never said it backs off");
	w0 = ms_now();
	t0 = cpu_ticks(dmn.pid);
	usleep(500000);
	ticks = cpu_ticks(dmn.pid) - t0;
	w1 = ms_now();
	cr_log_info("accept/out_of_fds_backs_off: %ld ms of CPU in %" PRIu64 " ms", ticks * 1000 / hz,
		    w1 - w0);
	cr_assert_lt((uint64_t)(ticks * 1000 / hz), (w1 - w0) / 5,
		     "the daemon spins while out of fds: %ld ms of CPU in %" PRIu64 " ms",
		     ticks * 1000 / hz, w1 - w0);
	cr_assert_eq(stat(dmn.log, &sb), 0);
	cr_assert_lt(sb.st_size, 16384, "the daemon's log grew to %lld bytes", (long long)sb.st_size);
	cr_assert(ts_log_has(&dmn, "backing off"));
	/* The silent clients are hung up on; then a new one is served. */
	for (int i = 0; i < 100; i++)
		close(fds[i]);
	cr_assert_eq(ts_status_get(&dmn, &s), 0, "no status once fds were free");
	ts_status_free(&s);
	cr_expect(ts_daemon_finish(&dmn, 5000), "uffd-manager did not exit cleanly");
}

/* ---- a flood of connections over the cap ---- */

/*
 * The held connections must stay held for the whole flood, however long a
 * loaded machine takes to open it: no handshake deadline ends them first.
 */
static void flood_setup(void)
{
	static const char *const args[] = { "--max-clients", "1", "--handshake-timeout", "3600000",
					    NULL };

	ts_daemon_start(&dmn, args);
	snprintf(imgdir, sizeof(imgdir), "%s/img", dmn.dir);
	ts_write_images(imgdir, TS_IMAGE_ID, areas, 1, SEED);
}

/* How many lines of the daemon's log hold S. */
static int log_lines(const char *s)
{
	char line[1024];
	int n = 0;
	FILE *f = fopen(dmn.log, "re");

	while (f && fgets(line, sizeof(line), f))
		n += strstr(line, s) != NULL;
	if (f)
		fclose(f);
	return n;
}

#define FLOOD	400

/*
 * With --max-clients 1 the daemon holds 17 connections (1 + 16 for status
 * requests); every one past that is told why it is refused, and the log
 * gets a few lines a second, not one per connection. Then, the flood gone,
 * a process is served.
 */
Test(flood, refusals_say_why_and_log_a_few_lines, .init = flood_setup, .fini = teardown,
     .timeout = 120)
{
	static int held[FLOOD];
	int told = 0, lines, n;
	uint64_t t0 = ms_now(), secs;
	char reason[512];

	for (n = 0; n < FLOOD; n++) {
		bool ok = true;

		held[n] = conn_open();
		if (n < 17)
			continue;	/* held, idle: the daemon keeps them until their handshake ends */
		cr_assert_eq(recv_reply(held[n], GUARD_MS, &ok, reason, sizeof(reason)), 1,
			     "connection %d over the cap: no reply", n + 1);
		cr_assert(!ok, "connection %d over the cap was accepted", n + 1);
		cr_assert_not_null(strstr(reason, "too many clients"), "reason: %s", reason);
		told++;
	}
	secs = (ms_now() - t0) / 1000 + 1;
	cr_assert_eq(told, FLOOD - 17);
	lines = log_lines("refused: too many clients");
	cr_assert_leq((uint64_t)lines, (secs + 1) * 10, "%d log lines for %d refusals in %" PRIu64 " s",
		      lines, told, secs);
	cr_assert_geq(lines, 1);
	for (n = 0; n < FLOOD; n++)
		close(held[n]);
	/* The daemon sees the hang-ups in its own time: until then a status request is over the cap too. */
	for (uint64_t end = ms_now() + GUARD_MS;; usleep(10000)) {
		struct ts_status s;

		if (ts_status_get(&dmn, &s) == 0) {
			cr_assert_geq(s.tot->refused, (uint64_t)told);
			ts_status_free(&s);
			break;
		}
		cr_assert_lt(ms_now(), end, "no status answer after the flood");
	}
	expect_still_serving();
}
