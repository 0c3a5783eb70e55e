/*
 * A target for restore tests: fills a region with a known pattern, keeps a
 * log file open (written at its offset, not O_APPEND), and counts.
 *
 *   rworkload --log PATH|- [--mib N] [--seed S] [--tick MS]
 *             [--thread] [--pipe] [--socket] [--eventfd] [--alarm] [--poison]
 *             [--huge MIB]
 *
 * Every tick it appends "count N" to the log (- : to stdout). --thread adds
 * a second thread asleep in pause(). The last four make it something restore
 * cannot bring back (a pipe, a socket or an eventfd at fd 3 or above; an
 * armed ITIMER_REAL), for tests of the refusal. Signals:
 *   SIGUSR1  the handler logs "usr1 N" (N: how many it has seen)
 *   SIGUSR2  the main loop checks every word of the region and logs
 *            "verify ok" or "verify bad ADDR"; with --poison (pages 5, 6
 *            and 37 of the region poisoned with UFFDIO_POISON through a
 *            userfaultfd of its own, closed at once; the check leaves them
 *            out) it then reads each and logs "poison sigbus N code C"
 *            when all N gave SIGBUS (C: the si_code), else "poison bad K";
 *            with --huge (MIB MiB of MAP_PRIVATE|MAP_HUGETLB, 2 MiB pages:
 *            huge page i holds the pattern when i%4 == 0, is written with
 *            zeros when i%4 == 2, never touched otherwise) it checks that
 *            too, first
 *   SIGHUP   the main loop forks; the child moves (mremap) the first MiB of the
 *            region elsewhere, checks all of it and exits; the parent moves the
 *            last MiB, checks everything, reaps the child and logs
 *            "forkremap ok" or "forkremap bad WHAT"
 * It closes every fd above 2 it inherits. Start-up prints "ready pid=P
 * base=ADDR len=LEN" on stdout.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "uffd_compat.h"

#define MIB	(1ul << 20)
#define PAGE	4096ul
#define HPAGE	(2ul << 20)

/* --poison: the pages of the region poisoned. */
static const size_t poison_pages[] = { 5, 6, 37 };
#define NPOISON	(sizeof(poison_pages) / sizeof(poison_pages[0]))

static int logfd = -1;
static volatile sig_atomic_t usr1, want_verify, want_forkremap;

/* The pattern: splitmix64 of the seed and the address of the word. */
static uint64_t pat(uint64_t seed, uint64_t addr)
{
	uint64_t z = seed + addr * 0x9E3779B97F4A7C15ull;

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void logf_(const char *fmt, ...)
{
	char buf[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (write(logfd, buf, (size_t)n) != n)
		_exit(3);
}

static void on_usr1(int sig)
{
	char buf[32];
	int n;

	(void)sig;
	usr1++;
	n = snprintf(buf, sizeof(buf), "usr1 %d\n", (int)usr1);
	if (write(logfd, buf, (size_t)n) != n)
		_exit(3);
}

static void on_flag(int sig)
{
	if (sig == SIGUSR2)
		want_verify = 1;
	else
		want_forkremap = 1;
}

/* Check LEN bytes at P, which held the pattern at address ORIG. Returns the bad address or 0. */
static uint64_t check(const uint8_t *p, size_t len, uint64_t orig, uint64_t seed)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;

	for (size_t i = 0; i < len / 8; i++)
		if (w[i] != pat(seed, orig + i * 8))
			return orig + i * 8;
	return 0;
}

/* Move the MiB at OFF of the region elsewhere and check the whole region; 0 when all is right. */
static uint64_t move_and_check(uint8_t *base, size_t len, size_t off, uint64_t seed)
{
	uint8_t *to = mmap(NULL, MIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t bad;

	if (to == MAP_FAILED)
		return 1;
	to = mremap(base + off, MIB, MIB, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	if (to == MAP_FAILED)
		return 2;
	bad = check(to, MIB, (uint64_t)(uintptr_t)(base + off), seed);
	if (!bad && off)
		bad = check(base, off, (uint64_t)(uintptr_t)base, seed);
	if (!bad && off + MIB < len)
		bad = check(base + off + MIB, len - off - MIB,
			    (uint64_t)(uintptr_t)(base + off + MIB), seed);
	return bad;
}

/* --poison: poison POISON_PAGES of BASE through a userfaultfd of our own, then close it. */
static int make_poison(uint8_t *base, size_t len)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register r = { .range = { (uintptr_t)base, len },
				     .mode = UFFDIO_REGISTER_MODE_MISSING };
	int u = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (u < 0 || ioctl(u, UFFDIO_API, &api) < 0 || ioctl(u, UFFDIO_REGISTER, &r) < 0)
		return -1;
	for (size_t k = 0; k < NPOISON; k++) {
		struct uffdio_poison p = { .range = { (uintptr_t)base + poison_pages[k] * PAGE, PAGE } };

		if (madvise(base + poison_pages[k] * PAGE, PAGE, MADV_DONTNEED) < 0 ||
		    ioctl(u, UFFDIO_POISON, &p) < 0)
			return -1;
	}
	if (ioctl(u, UFFDIO_UNREGISTER, &r.range) < 0)
		return -1;
	close(u);
	return 0;
}

/* Check the region as check() does, leaving the poisoned pages out. */
static uint64_t check_around(const uint8_t *base, size_t len, uint64_t seed)
{
	size_t at = 0;
	uint64_t bad = 0;

	for (size_t k = 0; !bad && k <= NPOISON; k++) {
		size_t end = k < NPOISON ? poison_pages[k] * PAGE : len;

		if (end > at)
			bad = check(base + at, end - at, (uint64_t)(uintptr_t)base + at, seed);
		at = end + PAGE;
	}
	return bad;
}

/* --huge: check MIB MiB of huge pages at P; returns the bad address or 0. */
static uint64_t check_huge(const uint8_t *p, size_t mib, uint64_t seed)
{
	for (size_t i = 0; i < mib / 2; i++) {
		const uint8_t *h = p + i * HPAGE;
		uint64_t bad = 0;

		if (i % 4 == 0) {
			bad = check(h, HPAGE, (uint64_t)(uintptr_t)h, seed);
		} else {
			for (size_t k = 0; !bad && k < HPAGE; k++)
				if (h[k])
					bad = (uint64_t)(uintptr_t)(h + k);
		}
		if (bad)
			return bad;
	}
	return 0;
}

static sigjmp_buf bus_jb;
static volatile sig_atomic_t bus_code;

static void on_bus(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	bus_code = si->si_code;
	siglongjmp(bus_jb, 1);
}

/* Read every poisoned page; log what happened. */
static void touch_poison(const uint8_t *base)
{
	struct sigaction sa, old;
	volatile unsigned n = 0;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_bus;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigaction(SIGBUS, &sa, &old);
	for (volatile size_t k = 0; k < NPOISON; k++) {
		if (sigsetjmp(bus_jb, 1) == 0) {
			volatile uint8_t b = base[poison_pages[k] * PAGE + 8 * k];

			(void)b;
			sigaction(SIGBUS, &old, NULL);
			logf_("poison bad %zu: read without SIGBUS\n", poison_pages[k]);
			return;
		}
		n++;
	}
	sigaction(SIGBUS, &old, NULL);
	logf_("poison sigbus %u code %d\n", n, (int)bus_code);
}

static void *sleeper(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

int main(int argc, char **argv)
{
	const char *log = NULL;
	size_t mib = 256;
	uint64_t seed = 0x5eed, count = 0;
	long tick_ms = 10;
	int thread = 0, with_pipe = 0, with_sock = 0, with_efd = 0, with_alarm = 0, pfd[2];
	int poison = 0;
	size_t huge_mib = 0;
	uint8_t *huge = NULL;
	struct sigaction sa;
	uint8_t *base;
	size_t len;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--log") && i + 1 < argc)
			log = argv[++i];
		else if (!strcmp(argv[i], "--mib") && i + 1 < argc)
			mib = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--tick") && i + 1 < argc)
			tick_ms = strtol(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--thread"))
			thread = 1;
		else if (!strcmp(argv[i], "--pipe"))
			with_pipe = 1;
		else if (!strcmp(argv[i], "--socket"))
			with_sock = 1;
		else if (!strcmp(argv[i], "--eventfd"))
			with_efd = 1;
		else if (!strcmp(argv[i], "--alarm"))
			with_alarm = 1;
		else if (!strcmp(argv[i], "--poison"))
			poison = 1;
		else if (!strcmp(argv[i], "--huge") && i + 1 < argc)
			huge_mib = strtoul(argv[++i], NULL, 0);
		else {
			fprintf(stderr, "rworkload: bad argument %s\n", argv[i]);
			return 2;
		}
	}
	/* Only what it opens itself: fds inherited from a shell or make would stop the dump. */
	close_range(3, ~0u, 0);
	if (!log || mib < 2) {
		fprintf(stderr, "usage: rworkload --log PATH [--mib N>=2] [--seed S] [--tick MS]\n");
		return 2;
	}
	logfd = strcmp(log, "-") ? open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : 1;
	if (logfd < 0) {
		perror(log);
		return 1;
	}
	len = mib * MIB;
	base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	for (size_t i = 0; i < len / 8; i++)
		((uint64_t *)(void *)base)[i] = pat(seed, (uint64_t)(uintptr_t)base + i * 8);
	if (poison && make_poison(base, len) < 0) {
		perror("--poison");
		return 1;
	}
	if (huge_mib) {
		huge = mmap(NULL, huge_mib * MIB, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
		if (huge == MAP_FAILED) {
			perror("mmap MAP_HUGETLB");
			return 1;
		}
		for (size_t i = 0; i < huge_mib / 2; i++) {
			uint64_t *w = (uint64_t *)(void *)(huge + i * HPAGE);

			for (size_t k = 0; i % 4 == 0 && k < HPAGE / 8; k++)
				w[k] = pat(seed, (uint64_t)(uintptr_t)&w[k]);
			if (i % 4 == 2)
				memset(w, 0, HPAGE);
		}
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_flag;
	sigaction(SIGUSR2, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	if (thread) {
		pthread_t th;

		if (pthread_create(&th, NULL, sleeper, NULL)) {
			fprintf(stderr, "pthread_create failed\n");
			return 1;
		}
	}
	if ((with_pipe && pipe(pfd) < 0) ||
	    (with_sock && socketpair(AF_UNIX, SOCK_STREAM, 0, pfd) < 0) ||
	    (with_efd && eventfd(0, 0) < 0)) {
		perror("fd");
		return 1;
	}
	if (with_alarm) {
		signal(SIGALRM, SIG_IGN);
		alarm(3600);
	}
	printf("ready pid=%d base=%p len=%zu\n", (int)getpid(), (void *)base, len);
	fflush(stdout);
	for (;;) {
		struct timespec t = { tick_ms / 1000, (tick_ms % 1000) * 1000000 };

		logf_("count %" PRIu64 "\n", ++count);
		while (nanosleep(&t, &t) < 0 && errno == EINTR && !want_verify && !want_forkremap)
			;
		if (want_verify) {
			uint64_t bad = huge ? check_huge(huge, huge_mib, seed) : 0;

			if (!bad)
				bad = poison ? check_around(base, len, seed) :
				      check(base, len, (uint64_t)(uintptr_t)base, seed);

			want_verify = 0;
			if (bad)
				logf_("verify bad 0x%" PRIx64 "\n", bad);
			else
				logf_("verify ok\n");
			if (poison)
				touch_poison(base);
		}
		if (want_forkremap) {
			pid_t pid;
			uint64_t bad;
			int st;

			want_forkremap = 0;
			pid = fork();
			if (pid == 0)
				_exit(move_and_check(base, len, 0, seed) ? 1 : 0);
			bad = move_and_check(base, len, len - MIB, seed);
			if (pid < 0 || waitpid(pid, &st, 0) != pid)
				logf_("forkremap bad fork\n");
			else if (!WIFEXITED(st) || WEXITSTATUS(st))
				logf_("forkremap bad child %d\n", st);
			else if (bad)
				logf_("forkremap bad 0x%" PRIx64 "\n", bad);
			else
				logf_("forkremap ok\n");
			/* The last MiB has moved away: later checks leave it out. */
			len -= MIB;
		}
	}
}
