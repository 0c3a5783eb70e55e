/*
 * Hostile image dirs and idle page-server clients: a FIFO (or a directory)
 * where an image file should be is refused at once, naming the file and
 * what it is, while the daemon goes on serving others; `uffd-inject show`
 * does the same. A page-server client that goes quiet after a request is
 * closed by --idle-timeout like one that never asked.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "handover.h"
#include "imgfix.h"
#include "imgtask.h"
#include "pswire.h"
#include "tcriu.h"
#include "tserve.h"

/* Outside 0x600000000000-0x640000000000, where ASan keeps its heap. */
#define BASE		0x530000000000ull
#define SEED		0x5eed5eed5eed5eedull
#define FEATURES	(UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |             \
			 UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP |           \
			 UFFD_FEATURE_THREAD_ID)
/*
 * A blocked open never returns: a refusal (or an answer, or a close) is
 * waited for up to this hang guard, never reached unless something is
 * stuck, however slow the machine.
 */
#define GUARD_MS	8000

static const struct ts_area areas[] = {
	{ BASE, 256 << 10, 5 },
};

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000ull + ts.tv_nsec / 1000000;
}

/* A refused (or not) hand-over, as a forked client saw it. */
struct answer {
	int ret;
	char reason[512];
};

/*
 * Hand ourselves over (from a fork) with the images in DIR without waiting
 * for the answer: returns the fd where the answer will come.
 */
static int handover_async(const struct ts_daemon *d, const char *dir, pid_t *pid)
{
	int p[2];

	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	*pid = fork();
	cr_assert_geq(*pid, 0);
	if (*pid == 0) {
		struct uffdio_api api = { .api = UFFD_API, .features = FEATURES };
		struct handover h = { .socket_path = d->sock, .image_id = TS_IMAGE_ID,
				      .features = FEATURES, .timeout_ms = 5000 };
		struct answer a = { 0 };
		uint64_t lazy;

		close(p[0]);
		h.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
		if (h.uffd < 0 || ioctl(h.uffd, UFFDIO_API, &api) < 0)
			_exit(9);
		h.pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
		h.dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (h.pidfd < 0 || h.dirfd < 0)
			_exit(9);
		a.ret = handover_send(&h, &lazy, a.reason, sizeof(a.reason));
		if (write(p[1], &a, sizeof(a)) != sizeof(a))
			_exit(9);
		_exit(0);
	}
	close(p[1]);
	return p[0];
}

/* Wait up to MS for the answer on FD. False if none came. */
static bool answer_get(int fd, int ms, struct answer *a)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	memset(a, 0, sizeof(*a));
	return poll(&p, 1, ms) == 1 && read(fd, a, sizeof(*a)) == sizeof(*a);
}

static int touch_all(struct ts_child *c)
{
	return ts_check(c->areas[0].start, c->areas[0].len, c->areas[0].start, c->areas,
			c->seed) ? 1 : 0;
}

/* Replace NAME in DIR with a FIFO, or with a directory (DIR_ != 0). */
static void plant(const char *dir, const char *name, bool dir_)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	unlink(path);
	if (dir_)
		cr_assert_eq(mkdir(path, 0700), 0, "%s: %s", path, strerror(errno));
	else
		cr_assert_eq(mkfifo(path, 0600), 0, "%s: %s", path, strerror(errno));
}

struct planted {
	const char *file;	/* in the image dir */
	bool dir;		/* a directory; else a FIFO */
	const char *want;	/* in the refusal */
};

static const struct planted planted[] = {
	{ "mm-4242.img", false, "mm-4242.img is a FIFO, not a regular file" },
	{ "pagemap-4242.img", false, "pagemap-4242.img is a FIFO, not a regular file" },
	{ "pages-1.img", false, "pages-1.img is a FIFO, not a regular file" },
	{ "pages-1.img", true, "pages-1.img is a directory, not a regular file" },
	{ "pagemap-4242.img", true, "pagemap-4242.img is a directory, not a regular file" },
};

#define NR_PLANTED	(sizeof(planted) / sizeof(planted[0]))

ParameterizedTestParameters(hostile_images, refused_at_once_others_served)
{
	static unsigned idx[NR_PLANTED];

	for (unsigned i = 0; i < NR_PLANTED; i++)
		idx[i] = i;
	return cr_make_param_array(unsigned, idx, NR_PLANTED, NULL);
}

/*
 * The daemon refuses the planted file at once, naming it, and serves a good
 * process that comes right after. Before: open() of the FIFO blocked the
 * whole daemon, and a directory was refused as "Invalid argument".
 */
ParameterizedTest(unsigned *row, hostile_images, refused_at_once_others_served, .timeout = 30)
{
	const struct planted *p = &planted[*row];
	struct ts_daemon d;
	struct ts_child good = { .areas = areas, .n = 1, .seed = SEED };
	char bad_dir[160], good_dir[160];
	struct answer a;
	uint64_t t0;
	pid_t bad, gp;
	int fd, st;

	ts_daemon_start(&d, NULL);
	snprintf(bad_dir, sizeof(bad_dir), "%s/bad", d.dir);
	snprintf(good_dir, sizeof(good_dir), "%s/good", d.dir);
	ts_write_images(bad_dir, TS_IMAGE_ID, areas, 1, SEED);
	ts_write_images(good_dir, TS_IMAGE_ID, areas, 1, SEED);
	plant(bad_dir, p->file, p->dir);

	t0 = ms_now();
	fd = handover_async(&d, bad_dir, &bad);
	/* Meanwhile another process is handed over and served to the last byte. */
	good.d = &d;
	good.imgdir = good_dir;
	gp = ts_child_start(&good, touch_all);
	cr_expect_eq(ts_child_wait(gp, 10000), 0, "%s: the good process was not served", p->want);
	cr_assert(answer_get(fd, GUARD_MS, &a), "%s: no answer within %d ms (daemon stuck?)",
		  p->want, GUARD_MS);
	cr_log_info("%s: refused %" PRIu64 " ms after its hand-over began", p->want, ms_now() - t0);
	cr_expect_lt(a.ret, 0, "the hand-over must be refused");
	cr_expect(strstr(a.reason, p->want), "refusal \"%s\", want \"%s\"", a.reason, p->want);
	cr_expect(!strstr(a.reason, "Invalid argument"), "refusal \"%s\"", a.reason);
	cr_expect(ts_log_has(&d, p->want), "the log names the file too");
	close(fd);
	waitpid(bad, &st, 0);
	cr_expect(ts_daemon_finish(&d, 5000), "uffd-manager did not exit cleanly");
}

/* Run `uffd-inject show DIR` for at most MS; its exit status and stderr. -1000 on timeout. */
static int show(const char *dir, int ms, char *err, size_t len)
{
	char bin[256];
	int p[2], st = 0;
	uint64_t end = ms_now() + ms;
	size_t got = 0;
	pid_t pid;

	snprintf(bin, sizeof(bin), "%s/uffd-inject",
		 getenv("UFFD_TEST_BUILD") ? getenv("UFFD_TEST_BUILD") : TEST_BUILDDIR);
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		dup2(p[1], 2);
		dup2(open("/dev/null", O_WRONLY), 1);
		execl(bin, "uffd-inject", "show", dir, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	err[0] = 0;
	for (;;) {
		struct pollfd pf = { .fd = p[0], .events = POLLIN };
		uint64_t now = ms_now();
		ssize_t n;

		if (now >= end || poll(&pf, 1, (int)(end - now)) != 1) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			close(p[0]);
			return -1000;
		}
		n = read(p[0], err + got, len - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
		err[got] = 0;
	}
	close(p[0]);
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

/* A FIFO for every kind of image file `show` reads, parent chain included. */
Test(hostile_images, show_refuses_fifos_at_once, .timeout = 60)
{
	static const char *const files[] = {
		"inventory.img", "pstree.img", "mm-100.img", "pagemap-100.img", "pages-1.img",
		"parent/pagemap-100.img", "parent/pages-1.img",
	};
	const struct fix_pe parent_pe[] = { { 0x40000, 8, PE_LAZY | PE_PRESENT, 0 } };
	const struct fix_pe top_pe[] = {
		{ 0x40000, 4, PE_LAZY | PE_PARENT, 0 },
		{ 0x44000, 4, PE_LAZY | PE_PRESENT, 0 },
	};
	const struct fix_vma vma = { 0x40000, 0x48000 };
	uint32_t pid = FIX_PID;
	struct fix_tmp tmp;
	char err[2048], want[128];

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		int pfd;

		fix_tmp_make(&tmp);
		pfd = fix_mkdir(tmp.fd, "p1");
		fix_write_pagemap(pfd, FIX_PID, FIX_PAGES_ID, parent_pe, 1);
		fix_write_pages(pfd, FIX_PAGES_ID, 1, parent_pe, 1);
		fix_write_mm(pfd, FIX_PID, &vma, 1);
		fix_symlink(tmp.fd, "parent", "p1");
		fix_write_inventory(tmp.fd);
		fix_write_pstree(tmp.fd, &pid, 1);
		fix_write_mm(tmp.fd, FIX_PID, &vma, 1);
		fix_write_pagemap(tmp.fd, FIX_PID, FIX_PAGES_ID, top_pe, 2);
		fix_write_pages(tmp.fd, FIX_PAGES_ID, 2, top_pe, 2);
		close(pfd);
		cr_assert_eq(show(tmp.path, 10000, err, sizeof(err)), 0, "clean dir: %s", err);
		plant(tmp.path, files[i], false);
		snprintf(want, sizeof(want), "%s is a FIFO, not a regular file", files[i]);
		cr_expect_eq(show(tmp.path, GUARD_MS, err, sizeof(err)), 1,
			     "%s: show must fail at once (-1000: it blocked)", files[i]);
		cr_expect(strstr(err, want), "%s: stderr \"%s\"", files[i], err);
		fix_tmp_remove(&tmp);
	}
}

static struct tc_run run;

static void ps_setup(void)
{
	tc_init(&run);
}

static void ps_teardown(void)
{
	tc_finish(&run);
}

/* Read exactly LEN bytes (each part within the hang guard); false on EOF or timeout. */
static bool recv_all(int sk, void *buf, size_t len)
{
	struct pollfd p = { .fd = sk, .events = POLLIN };

	for (size_t got = 0; got < len;) {
		ssize_t n;

		if (poll(&p, 1, GUARD_MS) != 1)
			return false;
		n = recv(sk, (uint8_t *)buf + got, len - got, 0);
		if (n <= 0)
			return false;
		got += (size_t)n;
	}
	return true;
}

/*
 * A client that asks once, reads its answer and goes quiet holds a slot:
 * --idle-timeout closes it like one that never asked. Before, it was kept
 * for ever, and a few such clients filled --max-clients for good.
 */
Test(hostile_pagesrv, quiet_after_a_request_is_closed, .init = ps_setup, .fini = ps_teardown,
     .timeout = 30)
{
	const char *args[] = { "--idle-timeout", "200", "--max-clients", "1", NULL };
	const char *dir = FIX_CRIU_DIR "/single";
	uint8_t hb[PS_HDR_SIZE], b;
	struct { struct ps_hdr h; } g;
	struct img_task t;
	struct pages_cache c = { 0 };
	struct img_err e;
	struct pollfd p;
	uint64_t start = 0, t0;
	uint32_t pid;
	int sk, sk2, dfd;

	cr_assert_eq(tc_tasks(dir, &pid, 1), 1);
	dfd = fix_open_dir(dir);
	cr_assert_eq(img_task_load(&t, dfd, pid, &c, &e), 0, "%s", e.msg);
	for (size_t i = 0; i < t.pm->n && !start; i++)
		if (t.pm->e[i].flags & PE_LAZY)
			start = t.pm->e[i].start;
	img_task_free(&t, &c);
	close(dfd);
	cr_assert(start);

	cr_assert(tc_pagesrv_start(&run, dir, args), "log in %s", run.ps_log);
	sk = tc_pagesrv_connect(&run);
	g.h = (struct ps_hdr){ .cmd = ps_cmd(PS_IOV_GET, 0), .nr_pages = 1, .vaddr = start,
			       .dst_id = pid };
	ps_encode(hb, &g.h);
	/* Its idle time starts when the server has the request, after this: never earlier. */
	t0 = ms_now();
	cr_assert_eq(send(sk, hb, sizeof(hb), MSG_NOSIGNAL), (ssize_t)sizeof(hb));
	cr_assert(recv_all(sk, hb, sizeof(hb)), "no answer; log in %s", run.ps_log);
	{
		uint8_t page[4096];

		cr_assert(recv_all(sk, page, sizeof(page)));
	}
	/* Now quiet: closed after about 200 ms. */
	p = (struct pollfd){ .fd = sk, .events = POLLIN };
	cr_expect_eq(poll(&p, 1, GUARD_MS), 1, "the quiet client must be closed; log in %s",
		     run.ps_log);
	cr_expect_eq(recv(sk, &b, 1, MSG_DONTWAIT), 0, "closed without a word");
	cr_expect_geq(ms_now() - t0, 150, "not before its idle time");
	cr_expect(tc_file_has(run.ps_log, "quiet since its last request for "), "log in %s",
		  run.ps_log);
	/* Its slot is free: the next client is served. */
	sk2 = tc_pagesrv_connect(&run);
	ps_encode(hb, &g.h);
	cr_assert_eq(send(sk2, hb, sizeof(hb), MSG_NOSIGNAL), (ssize_t)sizeof(hb));
	cr_expect(recv_all(sk2, hb, sizeof(hb)), "the slot must be free; log in %s", run.ps_log);
	close(sk);
	close(sk2);
	cr_expect_eq(tc_pagesrv_stop(&run), 0);
	cr_expect(tc_file_has(run.ps_log, ", 1 idle connections closed"), "log in %s", run.ps_log);
	run.passed = true;
}
