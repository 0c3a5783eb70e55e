/* Integration test kit: daemon, images, served children. */
#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "handover.h"
#include "image.h"
#include "imgtask.h"
#include "inventory.pb-c.h"
#include "pagemap.pb-c.h"
#include "pstree.pb-c.h"
#include "tserve.h"
#include "wire.h"

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("tserve: ", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

int ts_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "[child %d] ", getpid());
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

uint64_t ts_word(uint64_t seed, uint64_t addr)
{
	uint64_t x = seed ^ (addr * 0x9E3779B97F4A7C15ull);

	x ^= x >> 31;
	x *= 0xBF58476D1CE4E5B9ull;
	x ^= x >> 29;
	return x | 1;	/* never zero, so a zero page never passes for data */
}

bool ts_is_hole(const struct ts_area *a, uint64_t addr)
{
	uint64_t idx = (addr - a->start) / TS_PAGE;

	return a->hole_every && idx % a->hole_every == a->hole_every - 1;
}

static void write_rec(struct img_writer *w, const ProtobufCMessage *m)
{
	struct img_err err;

	if (img_write(w, m, &err) < 0)
		die("%s", err.msg);
}

void ts_write_images(const char *dir, uint32_t image_id, const struct ts_area *areas, int n,
		     uint64_t seed)
{
	struct img_writer w;
	struct img_err err;
	MmEntry mm = MM_ENTRY__INIT;
	VmaEntry *vp[64], vmas[64];
	PagemapHead ph = PAGEMAP_HEAD__INIT;
	InventoryEntry inv = INVENTORY_ENTRY__INIT;
	PstreeEntry ps = PSTREE_ENTRY__INIT;
	char name[64];
	int dfd, pfd;
	uint64_t *page;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		die("mkdir %s: %s", dir, strerror(errno));
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || n > 64)
		die("open %s", dir);

	inv.img_version = IMG_VERSION;
	if (img_create(&w, dfd, "inventory.img", IMG_INVENTORY_MAGIC, &err) < 0)
		die("%s", err.msg);
	write_rec(&w, &inv.base);
	img_finish(&w, &err);

	ps.pid = image_id;
	ps.ppid = 0;
	ps.pgid = ps.sid = image_id;
	if (img_create(&w, dfd, "pstree.img", IMG_PSTREE_MAGIC, &err) < 0)
		die("%s", err.msg);
	write_rec(&w, &ps.base);
	img_finish(&w, &err);

	for (int i = 0; i < n; i++) {
		vma_entry__init(&vmas[i]);
		vmas[i].start = areas[i].start;
		vmas[i].end = areas[i].start + areas[i].len;
		vmas[i].prot = PROT_READ | PROT_WRITE;
		vmas[i].flags = MAP_PRIVATE | MAP_ANONYMOUS;
		vmas[i].status = VMA_AREA_REGULAR | VMA_ANON_PRIVATE;
		vmas[i].fd = -1;
		vp[i] = &vmas[i];
	}
	mm.n_vmas = n;
	mm.vmas = vp;
	snprintf(name, sizeof(name), "mm-%u.img", image_id);
	if (img_create(&w, dfd, name, IMG_MM_MAGIC, &err) < 0)
		die("%s", err.msg);
	write_rec(&w, &mm.base);
	img_finish(&w, &err);

	/* Pagemap: one entry per run of data pages; pages back to back. */
	snprintf(name, sizeof(name), "pagemap-%u.img", image_id);
	if (img_create(&w, dfd, name, IMG_PAGEMAP_MAGIC, &err) < 0)
		die("%s", err.msg);
	ph.pages_id = 1;
	write_rec(&w, &ph.base);
	pfd = openat(dfd, "pages-1.img", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	page = malloc(TS_PAGE);
	if (pfd < 0 || !page)
		die("pages-1.img: %s", strerror(errno));
	for (int i = 0; i < n; i++) {
		const struct ts_area *a = &areas[i];
		uint64_t run = 0, addr;

		for (addr = a->start; addr <= a->start + a->len; addr += TS_PAGE) {
			bool data = addr < a->start + a->len && !ts_is_hole(a, addr);

			if (data) {
				for (unsigned k = 0; k < TS_PAGE / 8; k++)
					page[k] = ts_word(seed, addr + k * 8);
				if (write(pfd, page, TS_PAGE) != (ssize_t)TS_PAGE)
					die("write pages: %s", strerror(errno));
				if (!run)
					run = addr;
			} else if (run) {
				PagemapEntry pe = PAGEMAP_ENTRY__INIT;

				pe.vaddr = run;
				pe.has_nr_pages = 1;
				pe.nr_pages = (addr - run) / TS_PAGE;
				pe.compat_nr_pages = pe.nr_pages;
				pe.has_flags = 1;
				pe.flags = PE_LAZY | PE_PRESENT;
				write_rec(&w, &pe.base);
				run = 0;
			}
		}
	}
	free(page);
	close(pfd);
	if (img_finish(&w, &err) < 0)
		die("%s", err.msg);
	close(dfd);
}

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000ull + ts.tv_nsec / 1000000;
}

/* Run BIN (build/uffd-manager when NULL) on D's socket, its log to D's log; wait until it listens. */
static void daemon_spawn(struct ts_daemon *d, const char *binpath, const char *const *args)
{
	const char *build = getenv("UFFD_TEST_BUILD");
	char bin[256], fdarg[16];
	const char *argv[40];
	int p[2], n = 0;
	char c;

	if (binpath)
		snprintf(bin, sizeof(bin), "%s", binpath);
	else
		snprintf(bin, sizeof(bin), "%s/uffd-manager", build ? build : TEST_BUILDDIR);
	if (pipe2(p, O_CLOEXEC) < 0)
		die("pipe");
	snprintf(fdarg, sizeof(fdarg), "%d", 100);
	argv[n++] = bin;
	argv[n++] = "--socket";
	argv[n++] = d->sock;
	argv[n++] = "--ready-fd";
	argv[n++] = fdarg;
	argv[n++] = "-v";
	for (int i = 0; args && args[i] && n < 38; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	d->pid = fork();
	if (d->pid < 0)
		die("fork");
	if (d->pid == 0) {
		int lfd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		/* Never outlive the test, even one killed by its timeout. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(lfd, 2);
		dup2(p[1], 100);
		execv(bin, (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	close(p[1]);
	/* The byte on --ready-fd means it listens; EOF means it died. */
	if (read(p[0], &c, 1) != 1) {
		char cmd[200];

		snprintf(cmd, sizeof(cmd), "cat %s >&2", d->log);
		if (system(cmd)) {
		}
		die("uffd-manager did not start");
	}
	close(p[0]);
}

void ts_daemon_start(struct ts_daemon *d, const char *const *args)
{
	snprintf(d->dir, sizeof(d->dir), "/tmp/uffd-test-XXXXXX");
	if (!mkdtemp(d->dir))
		die("mkdtemp: %s", strerror(errno));
	snprintf(d->sock, sizeof(d->sock), "%s/m.sock", d->dir);
	snprintf(d->log, sizeof(d->log), "%s/manager.log", d->dir);
	d->gen = 0;
	daemon_spawn(d, NULL, args);
}

void ts_daemon_again(struct ts_daemon *d, const char *bin, const char *const *args)
{
	d->gen++;
	snprintf(d->log, sizeof(d->log), "%s/manager.%u.log", d->dir, d->gen);
	daemon_spawn(d, bin, args);
}

int ts_daemon_wait(struct ts_daemon *d, int timeout_ms)
{
	uint64_t end = ms_now() + timeout_ms;
	int st;

	while (ms_now() < end) {
		pid_t r = waitpid(d->pid, &st, WNOHANG);

		if (r == d->pid)
			return st;
		usleep(5000);
	}
	return -1;
}

int ts_daemon_stop(struct ts_daemon *d, int timeout_ms)
{
	int st;

	kill(d->pid, SIGTERM);
	st = ts_daemon_wait(d, timeout_ms);
	if (st == -1) {
		kill(d->pid, SIGKILL);
		waitpid(d->pid, &st, 0);
		return -1;
	}
	return st;
}

bool ts_daemon_finish(struct ts_daemon *d, int timeout_ms)
{
	char cmd[200];
	bool clean = true;

	if (d->pid > 0) {
		int st = ts_daemon_stop(d, timeout_ms);

		clean = st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
		if (!clean)
			fprintf(stderr, "uffd-manager did not exit cleanly (wait status %d); log in %s\n",
				st, d->log);
		d->pid = 0;
	}
	if (getenv("UFFD_TEST_KEEP") || !clean) {
		fprintf(stderr, "kept %s\n", d->dir);
		return clean;
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", d->dir);
	if (system(cmd)) {
	}
	return clean;
}

void ts_wait_go(struct ts_child *c)
{
	char b;

	if (read(c->go[0], &b, 1) != 1) {
	}
}

void ts_say_go(struct ts_child *c)
{
	if (write(c->go[1], "G", 1) != 1) {
	}
}

bool ts_log_has(const struct ts_daemon *d, const char *s)
{
	char buf[1 << 16];
	int fd = open(d->log, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return false;
	buf[n] = 0;
	return strstr(buf, s) != NULL;
}

pid_t ts_keeper_pid(const struct ts_daemon *d)
{
	char buf[1 << 14], *p;
	int fd = open(d->log, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return 0;
	buf[n] = 0;
	p = strstr(buf, "keeper pid ");
	return p ? (pid_t)atoi(p + 11) : 0;
}

int ts_status_get(const struct ts_daemon *d, struct ts_status *s)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	StatusRequest sr = STATUS_REQUEST__INIT;
	Request req = REQUEST__INIT;
	int fd;

	memset(s, 0, sizeof(*s));
	strcpy(addr.sun_path, d->sock);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		return -errno;
	sr.version = UFFD_PROTO_VERSION;
	req.status = &sr;
	if (wire_send(fd, &req.base, NULL, 0) < 0) {
		close(fd);
		return -EIO;
	}
	while (!s->tot && s->nr < 4097) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint8_t buf[WIRE_MAX_MSG];
		int fds[WIRE_MAX_FDS], nfds;
		ssize_t n;
		Reply *r;

		if (poll(&p, 1, 5000) <= 0)
			break;
		n = wire_recv(fd, buf, sizeof(buf), fds, &nfds, 0);
		if (n <= 0)
			break;
		r = reply__unpack(NULL, n, buf);
		if (!r)
			break;
		s->replies[s->nr++] = r;
		if (r->target && s->n < 4096)
			s->t[s->n++] = r->target;
		if (r->totals)
			s->tot = r->totals;
	}
	close(fd);
	return s->tot ? 0 : -EPROTO;
}

void ts_status_free(struct ts_status *s)
{
	for (int i = 0; i < s->nr; i++)
		reply__free_unpacked(s->replies[i], NULL);
	s->nr = s->n = 0;
	s->tot = NULL;
}

const StatusTarget *ts_status_pid(const struct ts_status *s, pid_t pid)
{
	for (int i = 0; i < s->n; i++)
		if (s->t[i]->pid == pid)
			return s->t[i];
	return NULL;
}

/* The area that holds image address IMG, or NULL. */
static const struct ts_area *area_of(const struct ts_area *a, int n, uint64_t img)
{
	for (int i = 0; i < n; i++)
		if (img >= a[i].start && img < a[i].start + a[i].len)
			return &a[i];
	return NULL;
}

long ts_check(uint64_t addr, uint64_t len, uint64_t img, const struct ts_area *a, uint64_t seed)
{
	long bad = 0;

	for (uint64_t off = 0; off < len; off += 8) {
		uint64_t got = *(volatile uint64_t *)(uintptr_t)(addr + off);
		uint64_t want = ts_is_hole(a, (img + off) & ~(TS_PAGE - 1)) ? 0 :
				ts_word(seed, img + off);

		if (got != want) {
			if (!bad)
				ts_fail("byte mismatch at 0x%" PRIx64 " (image 0x%" PRIx64 "): got %016" PRIx64
					" want %016" PRIx64, addr + off, img + off, got, want);
			bad++;
		}
	}
	return bad;
}

long ts_check_zero(uint64_t addr, uint64_t len)
{
	long bad = 0;

	for (uint64_t off = 0; off < len; off += 8)
		if (*(volatile uint64_t *)(uintptr_t)(addr + off)) {
			if (!bad)
				ts_fail("expected zero at 0x%" PRIx64, addr + off);
			bad++;
		}
	return bad;
}

/* In the child: map, create the uffd, hand over. Returns 0 or an exit code. */
static int child_handover(struct ts_child *c)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct handover h = { 0 };
	char reason[512];
	uint64_t lazy;
	int uffd, pidfd, dirfd, ret;

	(void)area_of;
	for (int i = 0; i < c->n; i++) {
		void *p = mmap((void *)(uintptr_t)c->areas[i].start, c->areas[i].len,
			       PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

		if (p != (void *)(uintptr_t)c->areas[i].start)
			return ts_fail("mmap 0x%" PRIx64 ": %s", c->areas[i].start, strerror(errno)) + 9;
	}
	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		return ts_fail("userfaultfd: %s", strerror(errno)) + 9;
	api.features = c->features ? c->features :
		       UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |
		       UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP |
		       UFFD_FEATURE_THREAD_ID;
	if (ioctl(uffd, UFFDIO_API, &api) < 0)
		return ts_fail("UFFDIO_API: %s", strerror(errno)) + 9;
	if (c->flags & HELLO_F_REGISTERED) {
		/* The client registers its lazy ranges itself, as CRIU's restorer does. */
		for (int i = 0; i < c->n; i++) {
			struct uffdio_register r = {
				.range = { .start = c->areas[i].start, .len = c->areas[i].len },
				.mode = UFFDIO_REGISTER_MODE_MISSING,
			};

			if (ioctl(uffd, UFFDIO_REGISTER, &r) < 0)
				return ts_fail("UFFDIO_REGISTER: %s", strerror(errno)) + 9;
		}
	}
	pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (c->as_uid) {
		/* An unprivileged client: its socket peer credentials are these (the uffd was made as root). */
		if (setgroups(0, NULL) < 0 || setresgid(c->as_uid, c->as_uid, c->as_uid) < 0 ||
		    setresuid(c->as_uid, c->as_uid, c->as_uid) < 0)
			return ts_fail("become uid %u: %s", (unsigned)c->as_uid, strerror(errno)) + 9;
		prctl(PR_SET_PDEATHSIG, SIGKILL);	/* cleared by the change of credentials */
	}
	dirfd = open(c->imgdir, (c->path_fd ? O_PATH : O_RDONLY) | O_DIRECTORY | O_CLOEXEC);
	if (pidfd < 0 || dirfd < 0)
		return ts_fail("pidfd/dirfd: %s", strerror(errno)) + 9;
	h.socket_path = c->d->sock;
	h.image_id = c->image_id ? c->image_id : TS_IMAGE_ID;
	/* After UFFDIO_API, api.features lists what the kernel could do, not what we enabled. */
	h.features = c->features ? c->features :
		     UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |
		     UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP |
		     UFFD_FEATURE_THREAD_ID;
	h.flags = c->flags;
	h.uffd = uffd;
	h.pidfd = pidfd;
	h.dirfd = dirfd;
	ret = handover_send(&h, &lazy, reason, sizeof(reason));
	/* Unless told to keep one, the manager's copy of the uffd is now the only one. */
	if (!c->keep_uffd || ret < 0)
		close(uffd);
	else
		c->uffd = uffd;
	close(pidfd);
	close(dirfd);
	if (ret < 0)
		return ts_fail("hand-over refused: %s", reason) + 2;
	return 0;
}

pid_t ts_child_start(struct ts_child *c, ts_scenario sc)
{
	pid_t pid;
	char b;

	if (pipe2(c->go, O_CLOEXEC) < 0 || pipe2(c->ready, O_CLOEXEC) < 0)
		die("pipe");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		int ret;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(c->go[1]);
		close(c->ready[0]);
		ret = child_handover(c);
		if (write(c->ready[1], ret ? "F" : "R", 1) != 1) {
		}
		if (ret)
			_exit(ret);
		_exit(sc(c));
	}
	close(c->go[0]);
	close(c->ready[1]);
	if (read(c->ready[0], &b, 1) != 1)
		b = 'F';
	close(c->ready[0]);
	return pid;
}

int ts_child_wait(pid_t pid, int timeout_ms)
{
	uint64_t end = ms_now() + timeout_ms;
	int st;

	while (ms_now() < end) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
		usleep(2000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return -1000;
}
