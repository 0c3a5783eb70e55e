/* Test kit for uffd-manager's CRIU lazy-pages mode. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "imgfix.h"
#include "imgtask.h"
#include "tcriu.h"

#define TC_READY_FD	100

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("tcriu: ", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000ull + ts.tv_nsec / 1000000;
}

static const char *build_dir(void)
{
	const char *b = getenv("UFFD_TEST_BUILD");

	return b ? b : TEST_BUILDDIR;
}

void tc_init(struct tc_run *r)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->dir, sizeof(r->dir), "/tmp/uffd-criu-XXXXXX");
	if (!mkdtemp(r->dir))
		die("mkdtemp: %s", strerror(errno));
	snprintf(r->sock, sizeof(r->sock), "%s/lazy-pages.socket", r->dir);
	snprintf(r->log, sizeof(r->log), "%s/manager.log", r->dir);
	snprintf(r->err, sizeof(r->err), "%s/manager.stderr", r->dir);
	snprintf(r->simout, sizeof(r->simout), "%s/sim.out", r->dir);
	snprintf(r->ps_log, sizeof(r->ps_log), "%s/pagesrv.log", r->dir);
}

bool tc_pagesrv_start(struct tc_run *r, const char *imgdir, const char *const *args)
{
	char bin[256], fdarg[16];
	const char *argv[40];
	int p[2], n = 0;
	ssize_t got;

	snprintf(bin, sizeof(bin), "%s/uffd-manager", build_dir());
	snprintf(fdarg, sizeof(fdarg), "%d", TC_READY_FD);
	argv[n++] = bin;
	argv[n++] = "page-server";
	argv[n++] = "-D";
	argv[n++] = imgdir;
	argv[n++] = "--address";
	argv[n++] = "127.0.0.1";
	argv[n++] = "--port";
	argv[n++] = "0";
	argv[n++] = "--status-fd";
	argv[n++] = fdarg;
	argv[n++] = "-o";
	argv[n++] = r->ps_log;
	argv[n++] = "-v";
	for (int i = 0; args && args[i] && n < 38; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	if (pipe2(p, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	r->ps_pid = fork();
	if (r->ps_pid < 0)
		die("fork: %s", strerror(errno));
	if (r->ps_pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(p[1], TC_READY_FD);
		if (r->ps_nofile) {
			/* A known fd budget: only 0-2 and the status fd, and no way to raise it. */
			struct rlimit rl = { r->ps_nofile, r->ps_nofile };

			close_range(3, TC_READY_FD - 1, 0);
			close_range(TC_READY_FD + 1, ~0u, 0);
			if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
				_exit(127);
		}
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	/* The port and a newline mean it listens; EOF means it died. */
	memset(r->ps_port, 0, sizeof(r->ps_port));
	for (size_t have = 0; have < sizeof(r->ps_port) - 1; have += (size_t)got) {
		got = read(p[0], r->ps_port + have, sizeof(r->ps_port) - 1 - have);
		if (got <= 0)
			break;
	}
	close(p[0]);
	if (!strchr(r->ps_port, '\n'))
		return false;
	*strchr(r->ps_port, '\n') = 0;
	return true;
}

int tc_pagesrv_stop(struct tc_run *r)
{
	uint64_t end = ms_now() + 5000;
	int st;

	if (r->ps_pid <= 0)
		return -1;
	kill(r->ps_pid, SIGTERM);
	while (ms_now() < end) {
		if (waitpid(r->ps_pid, &st, WNOHANG) == r->ps_pid) {
			r->ps_pid = 0;
			return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
		}
		usleep(2000);
	}
	kill(r->ps_pid, SIGKILL);
	waitpid(r->ps_pid, &st, 0);
	r->ps_pid = 0;
	return -1;
}

int tc_pagesrv_connect(const struct tc_run *r)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(atoi(r->ps_port)) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		die("connect to the page server on port %s: %s", r->ps_port, strerror(errno));
	return fd;
}

bool tc_daemon_start(struct tc_run *r, const char *imgdir, const char *const *args)
{
	char bin[256], fdarg[16];
	const char *argv[40];
	int p[2], n = 0;
	char c;

	snprintf(bin, sizeof(bin), "%s/uffd-manager", build_dir());
	snprintf(fdarg, sizeof(fdarg), "%d", TC_READY_FD);
	argv[n++] = bin;
	argv[n++] = "criu";
	argv[n++] = "-D";
	argv[n++] = imgdir;
	argv[n++] = "-W";
	argv[n++] = r->dir;
	argv[n++] = "--status-fd";
	argv[n++] = fdarg;
	argv[n++] = "-o";
	argv[n++] = r->log;
	argv[n++] = "-v";
	for (int i = 0; args && args[i] && n < 38; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	if (pipe2(p, O_CLOEXEC) < 0)
		die("pipe: %s", strerror(errno));
	r->pid = fork();
	if (r->pid < 0)
		die("fork: %s", strerror(errno));
	if (r->pid == 0) {
		int efd = open(r->err, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

		/* Never outlive the test, even one killed by its timeout. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (efd >= 0)
			dup2(efd, 2);
		dup2(p[1], TC_READY_FD);
		execv(bin, (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	close(p[1]);
	/* The byte on --status-fd means it listens; EOF means it died. */
	n = (int)read(p[0], &c, 1);
	close(p[0]);
	return n == 1;
}

int tc_daemon_wait(struct tc_run *r, int timeout_ms)
{
	uint64_t end = ms_now() + timeout_ms;
	int st;

	if (r->pid <= 0)
		return -1;
	while (ms_now() < end) {
		if (waitpid(r->pid, &st, WNOHANG) == r->pid) {
			r->pid = 0;
			return st;
		}
		usleep(2000);
	}
	kill(r->pid, SIGKILL);
	waitpid(r->pid, &st, 0);
	r->pid = 0;
	return -1;
}

int tc_daemon_exit_code(struct tc_run *r, int timeout_ms)
{
	int st = tc_daemon_wait(r, timeout_ms);

	if (st == -1 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

pid_t tc_sim_start(struct tc_run *r, const char *imgdir, const char *const *args)
{
	char bin[256];
	const char *argv[48];
	int n = 0, fd;
	pid_t pid;

	snprintf(bin, sizeof(bin), "%s/test/helpers/criu-sim", build_dir());
	argv[n++] = bin;
	argv[n++] = "-D";
	argv[n++] = imgdir;
	argv[n++] = "-W";
	argv[n++] = r->dir;
	for (int i = 0; args && args[i] && n < 46; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		fd = open(r->simout, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(bin, (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	return pid;
}

int tc_sim_wait(pid_t pid, int timeout_ms)
{
	uint64_t end = ms_now() + timeout_ms;
	int st;

	while (ms_now() < end) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
		usleep(2000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return -1;
}

int tc_sim_run(struct tc_run *r, const char *imgdir, const char *const *args, int timeout_ms)
{
	return tc_sim_wait(tc_sim_start(r, imgdir, args), timeout_ms);
}

/* The whole file, NUL-terminated (at most 1 MiB), or NULL. */
static char *slurp(const char *path)
{
	size_t cap = 1 << 20, len = 0;
	char *buf = malloc(cap + 1);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (!buf || fd < 0) {
		free(buf);
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	while (len < cap && (n = read(fd, buf + len, cap - len)) > 0)
		len += (size_t)n;
	close(fd);
	buf[len] = 0;
	return buf;
}

bool tc_file_has(const char *path, const char *s)
{
	char *buf = slurp(path);
	bool has = buf && strstr(buf, s);

	free(buf);
	return has;
}

double tc_file_number(const char *path, const char *s)
{
	char *buf = slurp(path), *p;
	double v = -1;

	if (buf && (p = strstr(buf, s)))
		v = strtod(p + strlen(s), NULL);
	free(buf);
	return v;
}

bool tc_file_wait(const char *path, const char *s, int timeout_ms)
{
	uint64_t end = ms_now() + timeout_ms;

	while (ms_now() < end) {
		if (tc_file_has(path, s))
			return true;
		usleep(5000);
	}
	return false;
}

void tc_finish(struct tc_run *r)
{
	char cmd[200];

	if (r->pid > 0) {
		kill(r->pid, SIGKILL);
		waitpid(r->pid, NULL, 0);
		r->pid = 0;
	}
	if (r->ps_pid > 0) {
		kill(r->ps_pid, SIGKILL);
		waitpid(r->ps_pid, NULL, 0);
		r->ps_pid = 0;
	}
	if (!r->dir[0])
		return;
	if (!r->passed || getenv("UFFD_TEST_KEEP")) {
		fprintf(stderr, "kept %s (daemon log %s, sim output %s, page server log %s)\n", r->dir,
		r->log, r->simout, r->ps_log);
		return;
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", r->dir);
	if (system(cmd)) {
	}
}

int tc_connect(const struct tc_run *r)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (strlen(r->sock) >= sizeof(addr.sun_path))
		die("%s: too long for a socket path", r->sock);
	memcpy(addr.sun_path, r->sock, strlen(r->sock) + 1);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		die("connect %s: %s", r->sock, strerror(errno));
	return fd;
}

void tc_send_int(int sk, int v)
{
	if (send(sk, &v, sizeof(v), MSG_NOSIGNAL) != sizeof(v))
		die("send: %s", strerror(errno));
}

void tc_send_fds(int sk, const int *fds, int nfds)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * 8)];
	} cbuf;
	char c = 0;
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cm;

	if (nfds > 0) {
		memset(&cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	if (sendmsg(sk, &mh, MSG_NOSIGNAL) != 1)
		die("sendmsg: %s", strerror(errno));
}

size_t tc_tasks(const char *dir, uint32_t *pids, size_t max)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct img_err err;
	uint32_t *all;
	size_t n;
	bool from_pstree;

	if (dfd < 0 || img_list_tasks(dfd, &all, &n, &from_pstree, &err) < 0)
		die("%s: %s", dir, dfd < 0 ? strerror(errno) : err.msg);
	close(dfd);
	if (n > max)
		n = max;
	memcpy(pids, all, n * sizeof(*pids));
	free(all);
	return n;
}

/* Load the images of PID in DIR, or abort. */
static void load(const char *dir, uint32_t pid, struct img_task *t, struct pages_cache *c)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct img_err err;

	if (dfd < 0 || img_task_load(t, dfd, pid, c, &err) < 0)
		die("%s: %s", dir, dfd < 0 ? strerror(errno) : err.msg);
	close(dfd);
}

uint64_t tc_lazy_pages(const char *dir, uint32_t pid)
{
	struct pages_cache c = { 0 };
	struct img_task t;
	uint64_t n = 0;

	load(dir, pid, &t, &c);
	for (size_t i = 0; t.pm && i < t.pm->n; i++)
		if (t.pm->e[i].flags & PE_LAZY)
			n += (t.pm->e[i].end - t.pm->e[i].start) / PAGE_SIZE_4K;
	img_task_free(&t, &c);
	return n;
}

size_t tc_lazy_vmas(const char *dir, uint32_t pid, uint64_t (*vma)[2], size_t max)
{
	struct pages_cache c = { 0 };
	struct img_task t;
	size_t n = 0;

	load(dir, pid, &t, &c);
	for (size_t i = 0; t.mm && i < t.mm->n_vmas && n < max; i++) {
		const VmaEntry *v = t.mm->vmas[i];

		if (!(v->status & VMA_ANON_PRIVATE))
			continue;
		for (size_t k = 0; k < t.pm->n; k++) {
			const struct pm_entry *e = &t.pm->e[k];

			if ((e->flags & PE_LAZY) && e->start < v->end && e->end > v->start) {
				vma[n][0] = v->start;
				vma[n][1] = v->end;
				n++;
				break;
			}
		}
	}
	img_task_free(&t, &c);
	return n;
}

void tc_copy_dir(const char *src, const char *dst)
{
	char cmd[600];

	if (mkdir(dst, 0700) < 0 && errno != EEXIST)
		die("mkdir %s: %s", dst, strerror(errno));
	snprintf(cmd, sizeof(cmd), "cp -p %s/*.img %s/", src, dst);
	if (system(cmd) != 0)
		die("%s failed", cmd);
}

void tc_renumber(const char *src, const char *dst, const uint32_t *pids, size_t n)
{
	static const char *const kinds[] = { "core", "mm", "pagemap", "ids", "fs" };
	uint32_t old[16];
	char a[300], b[300];
	int dfd;

	if (tc_tasks(src, old, 16) != n)
		die("%s: not %zu tasks", src, n);
	tc_copy_dir(src, dst);
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
			snprintf(a, sizeof(a), "%s/%s-%u.img", dst, kinds[k], old[i]);
			snprintf(b, sizeof(b), "%s/%s-%u.img.new", dst, kinds[k], pids[i]);
			if (rename(a, b) < 0 && errno != ENOENT)
				die("rename %s: %s", a, strerror(errno));
		}
	/* In two steps: a new number may be an old one. */
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
			snprintf(a, sizeof(a), "%s/%s-%u.img.new", dst, kinds[k], pids[i]);
			snprintf(b, sizeof(b), "%s/%s-%u.img", dst, kinds[k], pids[i]);
			if (rename(a, b) < 0 && errno != ENOENT)
				die("rename %s: %s", a, strerror(errno));
		}
	dfd = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		die("%s: %s", dst, strerror(errno));
	fix_write_pstree(dfd, pids, n);
	close(dfd);
}
