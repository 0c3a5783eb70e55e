/*
 * A target for restore tests: fills a region with a known pattern, keeps a
 * log file open (written at its offset, not O_APPEND), and counts.
 *
 *   rworkload --log PATH|- [--mib N] [--seed S] [--tick MS]
 *             [--thread] [--pipe] [--socket] [--eventfd] [--alarm]
 *
 * Every tick it appends "count N" to the log (- : to stdout). --thread adds
 * a second thread asleep in pause(). The last four make it something restore
 * cannot bring back (a pipe, a socket or an eventfd at fd 3 or above; an
 * armed ITIMER_REAL), for tests of the refusal. Signals:
 *   SIGUSR1  the handler logs "usr1 N" (N: how many it has seen)
 *   SIGUSR2  the main loop checks every word of the region and logs
 *            "verify ok" or "verify bad ADDR"
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
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB	(1ul << 20)

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
			uint64_t bad = check(base, len, (uint64_t)(uintptr_t)base, seed);

			want_verify = 0;
			if (bad)
				logf_("verify bad 0x%" PRIx64 "\n", bad);
			else
				logf_("verify ok\n");
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
