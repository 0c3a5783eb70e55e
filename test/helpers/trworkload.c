/*
 * A process tree for the tree dump and restore tests: five processes, each
 * with memory of its own and memory it shares copy-on-write with its
 * parent, modified differently on each side; each proves, when asked, that
 * it still has every byte, its parent, its process group and its session.
 *
 *   trworkload --log PATH [--mib N] [--c3-pipe] [--threads]
 *
 *   p   the root (index 0)
 *   c1  its child (1): leads a process group of its own (setpgid)
 *   g1  c1's child (4): in c1's group
 *   c2  p's child (2): leads a session of its own (setsid)
 *   c3  p's child (3): joins c1's group (a sibling's)
 *
 * Before forking, p fills a shared region of N MiB (pattern 100); after the
 * forks each process rewrites its own copy of one page in four: p the pages
 * i%4 == 0 (pattern 200), c1 i%4 == 1 (201, before it forks g1, which
 * inherits them), c2 i%4 == 2 (202), g1 i%4 == 3 (203); c3 writes none.
 * Each process also fills a private region of N/2 MiB of its own (pattern
 * 10 + index) but leaves its last page untouched (it must read zero).
 *
 * Every process logs "start NAME pid P ppid PP pgid G sid S" once set up;
 * p prints "ready pid=P" on stdout once all have. SIGUSR2 asks each process
 * for a check: it checks every word of both regions and logs
 * "check NAME pid P ppid PP pgid G sid S ok" (or "bad NAME WHAT"), with
 * its ids as it sees them now. SIGTERM ends a process: it first reaps
 * every child it has (logging "reaped by NAME code C" for each) and exits
 * with code 20 + its index; so SIGTERM to g1, c1, c2, c3 then p proves
 * that each parent is the parent of its children.
 * It closes every fd above 2 it inherits.
 * --c3-pipe: c3 keeps a pipe open (which dump --kill refuses).
 * --threads: every process runs a second thread that counts its 5 ms
 * sleeps; a check then also logs "threads NAME n N ticking" once it has
 * seen the count move (or "bad NAME thread stuck").
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE	4096ul
#define NPROC	5

static const char *const names[NPROC] = { "p", "c1", "c2", "c3", "g1" };
static int logfd = -1;
static int me;			/* index of this process */
static uint8_t *shr, *own;
static size_t shr_len, own_len;
static volatile sig_atomic_t want_check, want_end;
static int rdfd = -1;		/* the read end of the start-up pipe: the root's */
static int c3_pipe;
static int with_thread;

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void logf_(const char *fmt, ...)
{
	char b[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(b, sizeof(b), fmt, ap);
	va_end(ap);
	if (write(logfd, b, (size_t)n) != n)
		_exit(99);
}

static volatile unsigned long ticks;

/* The second thread: counts its sleeps. */
static void *ticker(void *arg)
{
	(void)arg;
	for (;;) {
		struct timespec ts = { 0, 5 * 1000 * 1000 };

		nanosleep(&ts, NULL);
		ticks++;
	}
	return NULL;
}

/* The second thread must still be there and counting. */
static void check_thread(void)
{
	unsigned long t0 = ticks;
	struct dirent *de;
	int n = 0;
	DIR *d;

	for (int i = 0; i < 2000 && ticks == t0; i++) {
		struct timespec ts = { 0, 1000 * 1000 };

		nanosleep(&ts, NULL);
	}
	d = opendir("/proc/self/task");
	while (d && (de = readdir(d)))
		n += de->d_name[0] != '.';
	if (d)
		closedir(d);
	if (ticks == t0)
		logf_("bad %s thread stuck\n", names[me]);
	else
		logf_("threads %s n %d ticking\n", names[me], n);
}

static uint64_t word(unsigned pat, size_t page, size_t w)
{
	uint64_t x = ((uint64_t)pat << 48) ^ ((uint64_t)page << 16) ^ w;

	x ^= x >> 31;
	x *= 0x9e3779b97f4a7c15ull;
	return x ^ (x >> 29) ^ pat;
}

static void fill_page(uint8_t *base, size_t page, unsigned pat)
{
	uint64_t *p = (uint64_t *)(base + page * PAGE);

	for (size_t w = 0; w < PAGE / 8; w++)
		p[w] = word(pat, page, w);
}

/* The pattern process I must see on page K of the shared region. */
static unsigned shared_pat(int i, size_t k)
{
	switch (k % 4) {
	case 0: return i == 0 ? 200 : 100;
	case 1: return i == 1 || i == 4 ? 201 : 100;
	case 2: return i == 2 ? 202 : 100;
	default: return i == 4 ? 203 : 100;
	}
}

/* Rewrite our own copy of the shared pages that are ours to change. */
static void modify_shared(void)
{
	for (size_t k = 0; k < shr_len / PAGE; k++)
		if (shared_pat(me, k) != 100)
			fill_page(shr, k, shared_pat(me, k));
}

static void fill_own(void)
{
	own = mmap(NULL, own_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (own == MAP_FAILED)
		_exit(98);
	for (size_t k = 0; k + 1 < own_len / PAGE; k++)
		fill_page(own, k, 10u + (unsigned)me);
}

static void ids(char *b, size_t len)
{
	snprintf(b, len, "%s pid %d ppid %d pgid %d sid %d", names[me], (int)getpid(),
		 (int)getppid(), (int)getpgid(0), (int)getsid(0));
}

static void check(void)
{
	char b[128];

	ids(b, sizeof(b));
	for (size_t k = 0; k < shr_len / PAGE; k++)
		for (size_t w = 0; w < PAGE / 8; w++)
			if (((uint64_t *)(shr + k * PAGE))[w] != word(shared_pat(me, k), k, w)) {
				logf_("bad %s shared page %zu word %zu\n", names[me], k, w);
				return;
			}
	for (size_t k = 0; k < own_len / PAGE; k++)
		for (size_t w = 0; w < PAGE / 8; w++) {
			uint64_t want = k + 1 < own_len / PAGE ? word(10u + (unsigned)me, k, w) : 0;

			if (((uint64_t *)(own + k * PAGE))[w] != want) {
				logf_("bad %s own page %zu word %zu\n", names[me], k, w);
				return;
			}
		}
	logf_("check %s ok\n", b);
}

static void on_usr2(int s)
{
	(void)s;
	want_check = 1;
}

static void on_term(int s)
{
	(void)s;
	want_end = 1;
}

/* Set up, say so, tell the root (a byte on READY), then serve checks until SIGTERM. */
static void run(int ready) __attribute__((noreturn));

static void run(int ready)
{
	char b[128];
	int st;
	pid_t w;

	fill_own();
	if (with_thread) {
		pthread_t th;

		if (pthread_create(&th, NULL, ticker, NULL))
			_exit(94);
	}
	ids(b, sizeof(b));
	/* The pipe closed before "start": a dump that waits for it finds no pipe. */
	if (ready >= 0) {
		if (write(ready, "x", 1) != 1)
			_exit(97);
		close(ready);
	}
	logf_("start %s\n", b);
	if (ready < 0) {
		printf("ready pid=%d\n", (int)getpid());
		fflush(stdout);
	}
	for (;;) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };

		nanosleep(&ts, NULL);
		if (want_check) {
			want_check = 0;
			if (with_thread)
				check_thread();
			check();
		}
		if (want_end)
			break;
	}
	while ((w = wait(&st)) > 0 || (w < 0 && errno == EINTR))
		if (w > 0)
			logf_("reaped by %s code %d\n", names[me],
			      WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	_exit(20 + me);
}

/* Fork process I; the child sets its group or session as its role says. */
static pid_t spawn(int i, pid_t c1, int ready)
{
	pid_t pid = fork();

	if (pid < 0) {
		perror("fork");
		exit(1);
	}
	if (pid > 0)
		return pid;
	close(rdfd);
	me = i;
	if (i == 1 && setpgid(0, 0) < 0)
		_exit(96);
	if (i == 2 && setsid() < 0)
		_exit(96);
	if (i == 3 && setpgid(0, c1) < 0)
		_exit(96);
	if (i == 3 && c3_pipe) {
		int q[2];

		if (pipe(q) < 0)
			_exit(96);
	}
	modify_shared();
	if (i == 1) {
		pid_t g = fork();

		if (g < 0)
			_exit(95);
		if (g == 0) {
			me = 4;
			modify_shared();
			run(ready);
		}
	}
	run(ready);
}

int main(int argc, char **argv)
{
	const char *log = NULL;
	struct sigaction sa;
	size_t mib = 4;
	int p[2], got = 0;
	pid_t c1;
	char c;

	close_range(3, ~0u, 0);	/* nothing inherited that a dump would refuse */
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--log") && i + 1 < argc)
			log = argv[++i];
		else if (!strcmp(argv[i], "--mib") && i + 1 < argc)
			mib = strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--c3-pipe"))
			c3_pipe = 1;
		else if (!strcmp(argv[i], "--threads"))
			with_thread = 1;
		else {
			fprintf(stderr, "usage: trworkload --log PATH [--mib N] [--c3-pipe] [--threads]\n");
			return 2;
		}
	}
	if (!log || !mib)
		return 2;
	logfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return 1;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	shr_len = mib << 20;
	own_len = mib << 19;
	shr = mmap(NULL, shr_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (shr == MAP_FAILED)
		return 1;
	for (size_t k = 0; k < shr_len / PAGE; k++)
		fill_page(shr, k, 100);
	if (pipe(p) < 0)
		return 1;
	rdfd = p[0];
	c1 = spawn(1, 0, p[1]);
	setpgid(c1, c1);	/* as a shell does: c3 may join it before c1 ran */
	spawn(2, 0, p[1]);
	spawn(3, c1, p[1]);
	close(p[1]);
	/* c1, g1, c2, c3: no pipe is left once they have all said so. */
	while (got < 4 && read(p[0], &c, 1) == 1)
		got++;
	close(p[0]);
	if (got != 4)
		return 1;
	me = 0;
	modify_shared();
	run(-1);
}
