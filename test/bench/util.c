/* Bench helpers: clocks, pinning, a quiet daemon, hand-over, /proc readers, the table. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "handover.h"
#include "tserve.h"

uint64_t b_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

bool b_failed;

void b_die(const char *fmt, ...)
{
	va_list ap;

	b_failed = true;
	va_start(ap, fmt);
	fprintf(stderr, "uffd-bench[%d]: ", getpid());
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* CPU mask for CPU, or both CPUs for -1. */
static void mask_of(int cpu, cpu_set_t *set)
{
	CPU_ZERO(set);
	if (cpu >= 0) {
		CPU_SET(cpu, set);
	} else {
		for (int i = 0; i < CPU_SETSIZE && i < sysconf(_SC_NPROCESSORS_ONLN); i++)
			CPU_SET(i, set);
	}
}

void b_pin_self(int cpu)
{
	cpu_set_t set;

	mask_of(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		b_die("sched_setaffinity: %s", strerror(errno));
}

void b_pin_pid(pid_t pid, int cpu)
{
	char path[64];
	cpu_set_t set;
	struct dirent *e;
	DIR *dir;

	mask_of(cpu, &set);
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	dir = opendir(path);
	if (!dir)
		b_die("%s: %s", path, strerror(errno));
	while ((e = readdir(dir)))
		if (e->d_name[0] != '.')
			sched_setaffinity(atoi(e->d_name), sizeof(set), &set);
	closedir(dir);
}

void *b_shared(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		b_die("mmap shared %zu: %s", len, strerror(errno));
	return p;
}

int b_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int b_cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Wait until the file PATH holds S, at most TIMEOUT_MS. */
bool b_file_has(const char *path, const char *s, int timeout_ms)
{
	char buf[65536];

	for (int i = 0; i < timeout_ms / 5; i++) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

		if (fd >= 0)
			close(fd);
		if (n > 0) {
			buf[n] = '\0';
			if (strstr(buf, s))
				return true;
		}
		usleep(5000);
	}
	return false;
}

uint64_t b_pct(uint64_t *v, size_t n, double p)
{
	size_t i;

	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), b_cmp_u64);
	i = (size_t)(p / 100.0 * (double)n);
	return v[i >= n ? n - 1 : i];
}

void b_shuffle(uint64_t *v, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;

	for (size_t i = n - 1; i > 0; i--) {
		size_t j;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		j = x % (i + 1);
		uint64_t t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
}

static void bd_spawn(struct bdaemon *d, const char *const *args);

void bd_start(struct bdaemon *d, const struct bconf *c, const char *const *args)
{
	static int seq;

	snprintf(d->dir, sizeof(d->dir), "%s/d%d", c->dir, ++seq);
	if (mkdir(d->dir, 0700) < 0)
		b_die("mkdir %s: %s", d->dir, strerror(errno));
	snprintf(d->sock, sizeof(d->sock), "%s/m.sock", d->dir);
	snprintf(d->log, sizeof(d->log), "%s/manager.log", d->dir);
	bd_spawn(d, args);
}

void bd_again(struct bdaemon *d, const char *const *args)
{
	static int gen;

	snprintf(d->log, sizeof(d->log), "%s/manager.%d.log", d->dir, ++gen);
	bd_spawn(d, args);
}

/* Run the daemon on D's socket, its log to D's log; return once it listens. */
static void bd_spawn(struct bdaemon *d, const char *const *args)
{
	const char *build = getenv("UFFD_TEST_BUILD");
	char bin[256];
	const char *argv[40];
	int p[2], n = 0;
	char ch;

	snprintf(bin, sizeof(bin), "%s/uffd-manager", build ? build : TEST_BUILDDIR);
	if (pipe2(p, O_CLOEXEC) < 0)
		b_die("pipe");
	argv[n++] = bin;
	argv[n++] = "--socket";
	argv[n++] = d->sock;
	argv[n++] = "--ready-fd";
	argv[n++] = "100";
	for (int i = 0; args && args[i] && n < 38; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	d->pid = fork();
	if (d->pid < 0)
		b_die("fork");
	if (d->pid == 0) {
		int lfd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(lfd, 2);
		dup2(p[1], 100);
		execv(bin, (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	close(p[1]);
	if (read(p[0], &ch, 1) != 1)
		b_die("uffd-manager did not start; log in %s", d->log);
	close(p[0]);
}

void bd_stop(struct bdaemon *d)
{
	int st;

	if (d->pid <= 0)
		return;
	kill(d->pid, SIGKILL);
	waitpid(d->pid, &st, 0);
	d->pid = 0;
}

bool bd_wait_served(const struct bdaemon *d, uint64_t served, int timeout_ms)
{
	return bd_wait_ended(d, served, false, timeout_ms);
}

bool bd_wait_ended(const struct bdaemon *d, uint64_t n, bool exited_too, int timeout_ms)
{
	struct ts_daemon td;
	uint64_t end = b_now() + timeout_ms * 1000000ull;

	memset(&td, 0, sizeof(td));
	snprintf(td.sock, sizeof(td.sock), "%s", d->sock);
	while (b_now() < end) {
		struct ts_status s;
		bool ok = ts_status_get(&td, &s) == 0 &&
			  s.tot->served + (exited_too ? s.tot->exited : 0) >= n;

		ts_status_free(&s);
		if (ok)
			return true;
		usleep(2000);
	}
	return false;
}

/* Read the whole of a small /proc file into BUF. */
static int slurp(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = 0;
	return 0;
}

uint64_t b_cpu_ns(pid_t pid)
{
	char path[64], buf[8192], *p;
	unsigned long long ut = 0, st = 0;

	/* se.sum_exec_runtime has ns resolution (ms with 6 decimals); stat has ticks. */
	snprintf(path, sizeof(path), "/proc/%d/sched", pid);
	if (slurp(path, buf, sizeof(buf)) == 0 && (p = strstr(buf, "se.sum_exec_runtime")) &&
	    (p = strchr(p, ':')))
		return (uint64_t)(strtod(p + 1, NULL) * 1e6);
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if (slurp(path, buf, sizeof(buf)) < 0 || !(p = strrchr(buf, ')')))
		return 0;
	/* After "pid (comm)": state is field 3; utime and stime are 14 and 15. */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return 0;
	return (ut + st) * (1000000000ull / sysconf(_SC_CLK_TCK));
}

void b_rss_kib(pid_t pid, long *rss, long *anon)
{
	char path[64], buf[8192], *p;

	*rss = *anon = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	if (slurp(path, buf, sizeof(buf)) < 0)
		return;
	if ((p = strstr(buf, "VmRSS:")))
		*rss = atol(p + 6);
	if ((p = strstr(buf, "RssAnon:")))
		*anon = atol(p + 8);
}

long b_pte_kib(pid_t pid)
{
	char path[64], buf[8192], *p;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	if (slurp(path, buf, sizeof(buf)) < 0 || !(p = strstr(buf, "VmPTE:")))
		return -1;
	return atol(p + 6);
}

long b_statm_resident(pid_t pid)
{
	char path[64], buf[256];
	long size, res;

	snprintf(path, sizeof(path), "/proc/%d/statm", pid);
	if (slurp(path, buf, sizeof(buf)) < 0 || sscanf(buf, "%ld %ld", &size, &res) != 2)
		return -1;
	return res;
}

bool b_thp_usable(void)
{
	char buf[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");

	if (f) {
		if (!fgets(buf, sizeof(buf), f))
			buf[0] = '\0';
		fclose(f);
	}
	return strstr(buf, "[always]") || strstr(buf, "[madvise]");
}

int b_map_area(uint64_t len)
{
	void *p = mmap((void *)(uintptr_t)B_BASE, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_NORESERVE, -1, 0);

	return p == (void *)(uintptr_t)B_BASE ? 0 : -errno;
}

int b_uffd(uint64_t features, bool nonblock)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | (nonblock ? O_NONBLOCK : 0));

	if (fd < 0)
		return -errno;
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

int b_register(int uffd, uint64_t start, uint64_t len)
{
	struct uffdio_register r = {
		.range = { .start = start, .len = len },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};

	return ioctl(uffd, UFFDIO_REGISTER, &r) < 0 ? -errno : 0;
}

int b_handover(const char *sock, const char *imgdir, int uffd, char *why, size_t len)
{
	struct handover h = { 0 };
	uint64_t lazy;
	int ret;

	h.socket_path = sock;
	h.image_id = B_IMAGE_ID;
	h.features = B_FEATURES;
	h.uffd = uffd;
	h.pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	h.dirfd = open(imgdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	h.timeout_ms = 60000;
	if (h.pidfd < 0 || h.dirfd < 0) {
		snprintf(why, len, "pidfd/dirfd: %s", strerror(errno));
		return -errno;
	}
	ret = handover_send(&h, &lazy, why, len);
	close(h.pidfd);
	close(h.dirfd);
	return ret;
}

/* --- the table --- */

struct brow {
	char sect[24], what[112], val[64], vs[96];
};
struct bgoal {
	char what[96], note[160];
	double got, want;
	bool le, met;
};

static struct brow rows[256];
static int nrows;
static struct bgoal goals[32];
static int ngoals;
static char notes[32][400];
static int nnotes;

void row(const char *sect, const char *what, const char *val, const char *vs)
{
	struct brow *r;

	if (nrows == 256)
		return;
	r = &rows[nrows++];
	snprintf(r->sect, sizeof(r->sect), "%s", sect);
	snprintf(r->what, sizeof(r->what), "%s", what);
	snprintf(r->val, sizeof(r->val), "%s", val);
	snprintf(r->vs, sizeof(r->vs), "%s", vs ? vs : "");
	printf("  %-10s %-64s %14s  %s\n", sect, what, val, vs ? vs : "");
	fflush(stdout);
}

void goal(const char *what, double got, double want, bool le, const char *gnote)
{
	struct bgoal *g;

	if (ngoals == 32)
		return;
	g = &goals[ngoals++];
	snprintf(g->what, sizeof(g->what), "%s", what);
	snprintf(g->note, sizeof(g->note), "%s", gnote ? gnote : "");
	g->got = got;
	g->want = want;
	g->le = le;
	g->met = le ? got <= want : got >= want;
}

void note(const char *fmt, ...)
{
	va_list ap;

	if (nnotes == 32)
		return;
	va_start(ap, fmt);
	vsnprintf(notes[nnotes], sizeof(notes[0]), fmt, ap);
	va_end(ap);
	printf("  note: %s\n", notes[nnotes]);
	fflush(stdout);
	nnotes++;
}

void rows_print(FILE *f, bool md)
{
	if (md) {
		fprintf(f, "| measure | case | figure | against the baseline |\n|---|---|---|---|\n");
		for (int i = 0; i < nrows; i++)
			fprintf(f, "| %s | %s | %s | %s |\n", rows[i].sect, rows[i].what, rows[i].val,
				rows[i].vs);
		fprintf(f, "\n| target | measured | goal | where we stand |\n|---|---|---|---|\n");
		for (int i = 0; i < ngoals; i++)
			fprintf(f, "| %s | %.2f | %s %.2f | %s%s%s |\n", goals[i].what, goals[i].got,
				goals[i].le ? "≤" : "≥", goals[i].want, goals[i].met ? "met" : "MISSED",
				goals[i].note[0] ? ": " : "", goals[i].note);
		if (nnotes)
			fprintf(f, "\n");
		for (int i = 0; i < nnotes; i++)
			fprintf(f, "- %s\n", notes[i]);
		return;
	}
	fprintf(f, "\n%-10s %-64s %14s  %s\n", "measure", "case", "figure", "against the baseline");
	for (int i = 0; i < nrows; i++)
		fprintf(f, "%-10s %-64s %14s  %s\n", rows[i].sect, rows[i].what, rows[i].val,
			rows[i].vs);
	fprintf(f, "\n%-58s %9s %9s  %s\n", "target", "measured", "goal", "where we stand");
	for (int i = 0; i < ngoals; i++)
		fprintf(f, "%-58s %9.2f %s%8.2f  %s%s%s\n", goals[i].what, goals[i].got,
			goals[i].le ? "≤" : "≥", goals[i].want, goals[i].met ? "met" : "MISSED",
			goals[i].note[0] ? ": " : "", goals[i].note);
	for (int i = 0; i < nnotes; i++)
		fprintf(f, "note: %s\n", notes[i]);
}
