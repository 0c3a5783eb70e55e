/*
 * ptarget: a process for the ptrace engine's tests to seize. It knows nothing
 * of being traced; it only reports what it sees, one text line at a time on
 * fd 4, and takes commands, one line at a time, on fd 3.
 *
 *   ptarget counter N     N threads (odd: busy loop, even: 1 ms sleeps), each
 *                         bumping its own counter; main serves commands
 *   ptarget spawn N       N threads that create and join short-lived threads
 *                         without pause; main serves commands
 *   ptarget signal        handlers for SIGUSR1, SIGUSR2, SIGRTMIN that report
 *                         each delivery; main serves commands
 *   ptarget sigcount N    like counter N, and counts SIGRTMIN deliveries
 *   ptarget file PATH FD  opens PATH as FD; main serves commands
 *   ptarget block KIND [MS]  main blocks once in KIND, then reports how it
 *                         returned: read (fd 5), poll (fd 5, MS timeout),
 *                         nanosleep MS, futex, futex_timeout MS, cond, pause,
 *                         sigsuspend. A second thread serves commands ("w"
 *                         wakes the futex / cond waiter).
 *
 * Commands: "c" counters, "h" signals counted, "r ADDR LEN" memory as hex,
 * "q" exit 0.
 * Reports start with a word: hello, cnt, mem, sig, read, poll, sleep, futex,
 * cond, pause, sigsuspend, ready.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CMD_FD	3
#define REP_FD	4
#define DATA_FD	5
#define MAX_THR	64

static _Atomic uint64_t cnt[MAX_THR + 1];	/* [0] main, [1..] threads */
static int nthr;
static _Atomic uint32_t fword;			/* futex word */
static pthread_mutex_t mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int cond_flag;
static volatile sig_atomic_t handled;
static _Atomic long counted;

static void die(const char *what)
{
	fprintf(stderr, "ptarget: %s: %s\n", what, strerror(errno));
	_exit(100);
}

/* Write one whole report line. */
static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...)
{
	char buf[16384];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf) || write(REP_FD, buf, (size_t)n) != n)
		die("report");
}

static long now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000l + t.tv_nsec;
}

/* Append decimal V to BUF at *N; async-signal-safe. */
static void put_num(char *buf, size_t *n, long long v)
{
	char tmp[24];
	int k = 0;
	unsigned long long u = v < 0 ? -(unsigned long long)v : (unsigned long long)v;

	if (v < 0)
		buf[(*n)++] = '-';
	do
		tmp[k++] = (char)('0' + u % 10);
	while ((u /= 10));
	while (k)
		buf[(*n)++] = tmp[--k];
}

static void put_str(char *buf, size_t *n, const char *s)
{
	while (*s)
		buf[(*n)++] = *s++;
}

/* Report a delivery: sig N code C pid P val V. Only async-signal-safe calls. */
static void on_signal(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;
	char buf[160];
	size_t n = 0;

	(void)uc;
	handled++;
	put_str(buf, &n, "sig ");
	put_num(buf, &n, sig);
	put_str(buf, &n, " code ");
	put_num(buf, &n, si->si_code);
	put_str(buf, &n, " pid ");
	put_num(buf, &n, si->si_pid);
	put_str(buf, &n, " val ");
	put_num(buf, &n, si->si_value.sival_int);
	put_str(buf, &n, "\n");
	if (write(REP_FD, buf, n) < 0)
		_exit(101);
	errno = saved;
}

static void on_count(int sig)
{
	(void)sig;
	counted++;
}

static void set_handler(int sig, int flags)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_signal;
	sa.sa_flags = SA_SIGINFO | flags;
	sigemptyset(&sa.sa_mask);
	if (sigaction(sig, &sa, NULL) < 0)
		die("sigaction");
}

static void *busy(void *arg)
{
	long i = (long)arg;

	for (;;)
		cnt[i]++;
	return NULL;
}

static void *sleeper(void *arg)
{
	long i = (long)arg;
	struct timespec ms = { 0, 1000000 };

	for (;;) {
		nanosleep(&ms, NULL);
		cnt[i]++;
	}
	return NULL;
}

static void *nothing(void *arg)
{
	return arg;
}

static void *spawner(void *arg)
{
	long i = (long)arg;
	pthread_t t;

	for (;;) {
		if (pthread_create(&t, NULL, nothing, NULL) == 0) {
			pthread_join(t, NULL);
			cnt[i]++;
		}
	}
	return NULL;
}

static void start(void *(*fn)(void *), long i)
{
	pthread_t t;

	if (pthread_create(&t, NULL, fn, (void *)i) != 0)
		die("pthread_create");
	pthread_detach(t);
}

/* Read one command line from fd 3 into BUF; 0 at EOF. */
static int get_cmd(char *buf, size_t len)
{
	size_t n = 0;

	while (n < len - 1) {
		ssize_t r = read(CMD_FD, buf + n, 1);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return 0;
		if (buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = '\0';
	return 1;
}

/* Serve commands until "q" or EOF. */
static void serve(void)
{
	char cmd[128];

	while (get_cmd(cmd, sizeof(cmd))) {
		unsigned long long addr, len;

		cnt[0]++;
		if (!strcmp(cmd, "q")) {
			_exit(0);
		} else if (!strcmp(cmd, "c")) {
			char line[MAX_THR * 24 + 8];
			size_t n = 0;
			int i;

			put_str(line, &n, "cnt");
			for (i = 0; i <= nthr; i++) {
				put_str(line, &n, " ");
				put_num(line, &n, (long long)cnt[i]);
			}
			put_str(line, &n, "\n");
			line[n] = '\0';
			report("%s", line);
		} else if (!strcmp(cmd, "h")) {
			report("handled %ld\n", (long)counted);
		} else if (!strcmp(cmd, "w")) {
			pthread_mutex_lock(&mtx);
			cond_flag = 1;
			pthread_cond_signal(&cond);
			pthread_mutex_unlock(&mtx);
			fword = 1;
			syscall(SYS_futex, &fword, FUTEX_WAKE, 1, NULL, NULL, 0);
		} else if (sscanf(cmd, "r %llx %llu", &addr, &len) == 2 && len <= 4096) {
			const uint8_t *m = (const uint8_t *)(uintptr_t)addr;
			char hex[2 * 4096 + 1];
			unsigned long long i;

			for (i = 0; i < len; i++)
				snprintf(hex + 2 * i, 3, "%02x", m[i]);
			hex[2 * len] = '\0';
			report("mem %s\n", hex);
		} else {
			report("bad %s\n", cmd);
		}
	}
	_exit(0);
}

static void *serve_thread(void *arg)
{
	(void)arg;
	serve();
	return NULL;
}

/* Block once in KIND on the main thread and report how it came back. */
static void block(const char *kind, long ms)
{
	pthread_t t;
	long t0, r;
	int e;

	if (pthread_create(&t, NULL, serve_thread, NULL) != 0)
		die("pthread_create");
	if (!strcmp(kind, "pause")) {
		set_handler(SIGUSR1, 0);
	} else if (!strcmp(kind, "sigsuspend")) {
		sigset_t usr1;

		set_handler(SIGUSR1, 0);
		sigemptyset(&usr1);
		sigaddset(&usr1, SIGUSR1);
		pthread_sigmask(SIG_BLOCK, &usr1, NULL);
	}
	report("ready tid %ld\n", (long)syscall(SYS_gettid));
	t0 = now_ns();
	if (!strcmp(kind, "read")) {
		char buf[16] = { 0 };

		r = read(DATA_FD, buf, sizeof(buf) - 1);
		e = errno;
		report("read ret %ld errno %d data %s\n", r, r < 0 ? e : 0, buf);
	} else if (!strcmp(kind, "poll")) {
		struct pollfd pfd = { .fd = DATA_FD, .events = POLLIN };

		r = poll(&pfd, 1, (int)ms);
		e = errno;
		report("poll ret %ld errno %d revents %d ns %ld\n", r, r < 0 ? e : 0, pfd.revents,
		       now_ns() - t0);
	} else if (!strcmp(kind, "nanosleep")) {
		struct timespec d = { ms / 1000, (ms % 1000) * 1000000 };

		r = syscall(SYS_nanosleep, &d, NULL);
		e = errno;
		report("sleep ret %ld errno %d ns %ld\n", r, r < 0 ? e : 0, now_ns() - t0);
	} else if (!strcmp(kind, "futex") || !strcmp(kind, "futex_timeout")) {
		struct timespec d = { ms / 1000, (ms % 1000) * 1000000 };

		r = syscall(SYS_futex, &fword, FUTEX_WAIT, 0, kind[5] ? &d : NULL, NULL, 0);
		e = errno;
		report("futex ret %ld errno %d word %u\n", r, r < 0 ? e : 0, (unsigned)fword);
	} else if (!strcmp(kind, "cond")) {
		pthread_mutex_lock(&mtx);
		while (!cond_flag)
			pthread_cond_wait(&cond, &mtx);
		pthread_mutex_unlock(&mtx);
		report("cond ret 0 flag %d\n", cond_flag);
	} else if (!strcmp(kind, "pause")) {
		r = syscall(SYS_pause);
		e = errno;
		report("pause ret %ld errno %d handled %d\n", r, r < 0 ? e : 0, (int)handled);
	} else if (!strcmp(kind, "sigsuspend")) {
		sigset_t none, now;

		sigemptyset(&none);
		r = sigsuspend(&none);
		e = errno;
		pthread_sigmask(SIG_BLOCK, NULL, &now);
		report("sigsuspend ret %ld errno %d handled %d usr1blocked %d\n", r, r < 0 ? e : 0,
		       (int)handled, sigismember(&now, SIGUSR1));
	} else {
		report("bad kind %s\n", kind);
	}
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	long i;

	if (argc < 2) {
		fputs("usage: ptarget MODE [ARGS]\n", stderr);
		return 2;
	}
	if (!strcmp(argv[1], "counter") || !strcmp(argv[1], "spawn") ||
	    !strcmp(argv[1], "sigcount")) {
		nthr = argc > 2 ? atoi(argv[2]) : 0;
		if (nthr < 0 || nthr > MAX_THR)
			return 2;
		if (argv[1][1] == 'i') {
			struct sigaction sa;

			memset(&sa, 0, sizeof(sa));
			sa.sa_handler = on_count;
			sa.sa_flags = SA_RESTART;
			if (sigaction(SIGRTMIN, &sa, NULL) < 0)
				die("sigaction");
		}
		for (i = 1; i <= nthr; i++)
			start(argv[1][1] == 'p' ? spawner : i % 2 ? busy : sleeper, i);
		report("hello cnt %p n %d\n", (void *)cnt, nthr);
		serve();
	} else if (!strcmp(argv[1], "signal")) {
		set_handler(SIGUSR1, SA_RESTART);
		set_handler(SIGUSR2, SA_RESTART);
		set_handler(SIGRTMIN, SA_RESTART);
		report("hello signal\n");
		serve();
	} else if (!strcmp(argv[1], "file") && argc == 4) {
		int fd = open(argv[2], O_RDWR | O_CREAT, 0600);

		if (fd < 0 || dup2(fd, atoi(argv[3])) < 0)
			die("open");
		close(fd);
		report("hello file\n");
		serve();
	} else if (!strcmp(argv[1], "block") && argc >= 3) {
		block(argv[2], argc > 3 ? atol(argv[3]) : 0);
	}
	fputs("ptarget: bad arguments\n", stderr);
	return 2;
}
