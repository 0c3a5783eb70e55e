/*
 * A multi-threaded target for restore tests: every thread keeps state of its
 * own and proves, when asked, that it still has it.
 *
 *   tworkload --log PATH [--mib N] [--seed S] [--exit-main]
 *
 * Besides the main thread, five threads, each with its own TLS values, name
 * (tw-1 ... tw-5), signal mask (it blocks SIGRTMIN+I besides SIGUSR2),
 * alternate signal stack and rseq registration (glibc's), and its own slice
 * of N MiB that it rewrites with pseudo-random words, a word per step, in
 * rounds. They spend their time in:
 *   1 read(0) of one byte (fd 0 a pipe): logs "read 1 got C"
 *   2 nanosleep of 300 ms
 *   3 a futex wait without timeout, woken by the main thread
 *   4 a futex wait with a one-hour timeout (a restart block), woken likewise
 *   5 nothing: it runs, rewriting its slice
 * 1 to 4 keep a value of their own in xmm15 across the blocking syscall and
 * check it after, so that the FPU state a restore installs is checked too,
 * and log "bad" for any error other than EAGAIN and ETIMEDOUT (no signal
 * reaches them: an EINTR is a restart gone wrong).
 * The main thread fills its own region once and logs "count N" every 10 ms.
 *
 * SIGUSR2 asks for a check: the main thread checks its region and state and
 * logs "check G main tid T ok" (or "bad WHAT"), and wakes threads 3 and 4;
 * each thread checks at its next wake-up (thread 1 needs a byte on fd 0):
 * its TLS, mask, alternate stack, rseq registration (a sentinel written into
 * its rseq area must be overwritten by the kernel), tid address, robust list
 * and every word of its slice, and logs "check G thread I tid T count C ok"
 * (or "bad WHAT"). Start-up logs "start I tid T" per thread, then prints
 * "ready pid=P" on stdout. --exit-main: the main thread then leaves with
 * pthread_exit (a zombie leader, which restore refuses), the others run on.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/rseq.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MIB		(1ul << 20)
#define NTH		5
#define STEP_WORDS	4096
#define ALT_SIZE	(64u << 10)
#define SENTINEL	0xfffffff0u

struct expect {
	uint64_t magic;
	sigset_t mask;
	stack_t ss;
	uint64_t tid_addr, robust, robust_len;
	pid_t tid;
};

static int logfd = -1;
static uint64_t seed = 0x7eed;
static size_t slice_len;
static uint8_t *slices;
static struct expect want[NTH + 1];
static volatile uint64_t counters[NTH + 1];
static volatile int check_gen;
static volatile uint32_t fw[NTH + 1];	/* futex words of threads 3 and 4 */
static volatile sig_atomic_t want_check;

static __thread uint64_t tls_magic;
static __thread int tls_idx;
static __thread uint64_t tls_count, tls_pos, tls_round;

/* splitmix64 of the seed, the thread, the word and the round. */
static uint64_t pat(uint64_t idx, uint64_t k, uint64_t round)
{
	uint64_t z = seed + idx * 0xD1B54A32D192ED03ull + k * 0x9E3779B97F4A7C15ull +
		     round * 0x8CB92BA72F3D8DD7ull;

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void logf_(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (write(logfd, buf, (size_t)n) != n)
		_exit(3);
}

/* A syscall with V in xmm15 across it; what xmm15 held after, in *AFTER. */
static long sys_xmm(long nr, long a1, long a2, long a3, long a4, uint64_t v, uint64_t *after)
{
	register long r10 __asm__("r10") = a4;
	uint64_t out;
	long ret;

	__asm__ volatile("movq %[v], %%xmm15\n\t"
			 "syscall\n\t"
			 "movq %%xmm15, %[o]"
			 : "=a"(ret), [o] "=r"(out)
			 : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), [v] "r"(v)
			 : "rcx", "r11", "memory", "xmm15");
	*after = out;
	return ret;
}

/* The current thread's own state, as it is now. */
static void take(struct expect *e)
{
	long len = 0;

	pthread_sigmask(SIG_SETMASK, NULL, &e->mask);
	sigaltstack(NULL, &e->ss);
	e->tid_addr = 0;
	prctl(PR_GET_TID_ADDRESS, &e->tid_addr, 0, 0, 0);
	e->robust = 0;
	syscall(SYS_get_robust_list, 0, &e->robust, &len);
	e->robust_len = (uint64_t)len;
	e->tid = (pid_t)syscall(SYS_gettid);
}

/* Is the kernel's rseq registration of this thread live? Writes a sentinel and waits for it to go. */
static int rseq_live(void)
{
	struct rseq *rs;
	struct timespec t = { 0, 2000000 };

	if (!__rseq_size)
		return -1;
	rs = (struct rseq *)(void *)((char *)__builtin_thread_pointer() + __rseq_offset);
	for (int i = 0; i < 50; i++) {
		__atomic_store_n(&rs->cpu_id_start, SENTINEL, __ATOMIC_SEQ_CST);
		nanosleep(&t, NULL);	/* scheduled out and back: the kernel rewrites it */
		if (__atomic_load_n(&rs->cpu_id_start, __ATOMIC_SEQ_CST) != SENTINEL)
			return 1;
	}
	return 0;
}

/* Compare the thread's state with what it was at start; the first difference into WHY. */
static int check_state(int idx, char *why, size_t len)
{
	struct expect now, *e = &want[idx];

	take(&now);
	if (tls_idx != idx || tls_magic != e->magic)
		return snprintf(why, len, "tls %d %" PRIx64, tls_idx, tls_magic);
	for (int s = 1; s < 65; s++)
		if (sigismember(&now.mask, s) != sigismember(&e->mask, s))
			return snprintf(why, len, "mask signal %d", s);
	if (now.ss.ss_sp != e->ss.ss_sp || now.ss.ss_size != e->ss.ss_size ||
	    now.ss.ss_flags != e->ss.ss_flags)
		return snprintf(why, len, "altstack %p %zu %d", now.ss.ss_sp, now.ss.ss_size,
				now.ss.ss_flags);
	if (now.tid_addr != e->tid_addr)
		return snprintf(why, len, "tid address 0x%" PRIx64, now.tid_addr);
	if (now.robust != e->robust || now.robust_len != e->robust_len)
		return snprintf(why, len, "robust list 0x%" PRIx64, now.robust);
	if (rseq_live() != 1)
		return snprintf(why, len, "rseq not registered");
	return 0;
}

/* Every word of thread IDX's slice: round R before its position, R-1 from it on. */
static int check_slice(int idx, char *why, size_t len)
{
	const uint64_t *w = (const uint64_t *)(const void *)(slices + (size_t)idx * slice_len);

	for (uint64_t k = 0; k < slice_len / 8; k++) {
		uint64_t r = k < tls_pos ? tls_round : tls_round - 1;

		if (w[k] != pat((uint64_t)idx, k, r))
			return snprintf(why, len, "word %" PRIu64 " of the slice at %p", k,
					(const void *)&w[k]);
	}
	if (counters[idx] != tls_count)
		return snprintf(why, len, "counter %" PRIu64 " vs %" PRIu64, counters[idx],
				tls_count);
	return 0;
}

/* A step of work: the next words of the slice, the counters. */
static void step(int idx)
{
	uint64_t *w = (uint64_t *)(void *)(slices + (size_t)idx * slice_len);

	for (int i = 0; i < STEP_WORDS; i++) {
		w[tls_pos] = pat((uint64_t)idx, tls_pos, tls_round);
		if (++tls_pos == slice_len / 8) {
			tls_pos = 0;
			tls_round++;
		}
	}
	tls_count++;
	counters[idx] = tls_count;
}

static void maybe_check(int idx, int *seen)
{
	char why[160] = "";
	int g = check_gen;

	if (g == *seen)
		return;
	*seen = g;
	if (!check_state(idx, why, sizeof(why)))
		check_slice(idx, why, sizeof(why));
	logf_("check %d thread %d tid %ld count %" PRIu64 " %s%s\n", g, idx,
	      (long)syscall(SYS_gettid), tls_count, why[0] ? "bad " : "ok", why);
}

static void *worker(void *arg)
{
	int idx = (int)(intptr_t)arg, seen = 0;
	uint64_t xmm = pat((uint64_t)idx, 0xf00d, 0), after = 0;
	char name[16];
	sigset_t m;
	void *alt;

	tls_idx = idx;
	tls_magic = pat((uint64_t)idx, 0xabc, 0);
	want[idx].magic = tls_magic;
	snprintf(name, sizeof(name), "tw-%d", idx);
	pthread_setname_np(pthread_self(), name);
	sigemptyset(&m);
	sigaddset(&m, SIGUSR2);
	sigaddset(&m, SIGRTMIN + idx);
	pthread_sigmask(SIG_BLOCK, &m, NULL);
	alt = mmap(NULL, ALT_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (alt == MAP_FAILED)
		_exit(4);
	sigaltstack(&(stack_t){ .ss_sp = alt, .ss_size = ALT_SIZE }, NULL);
	take(&want[idx]);
	/* Round 0 everywhere, then it rewrites from word 0 in round 1. */
	for (uint64_t k = 0; k < slice_len / 8; k++)
		((uint64_t *)(void *)(slices + (size_t)idx * slice_len))[k] = pat((uint64_t)idx, k, 0);
	tls_pos = 0;
	tls_round = 1;
	tls_count = 0;
	counters[idx] = 0;
	logf_("start %d tid %d\n", idx, (int)want[idx].tid);
	for (;;) {
		long r = 0;

		switch (idx) {
		case 1: {
			char c = 0;

			r = sys_xmm(SYS_read, 0, (long)&c, 1, 0, xmm, &after);
			if (r == 1)
				logf_("read %d got %c\n", idx, c);
			else if (r == 0)
				for (;;)
					pause();	/* end of file: nothing more to read */
			break;
		}
		case 2: {
			struct timespec t = { 0, 300000000 };

			r = sys_xmm(SYS_nanosleep, (long)&t, 0, 0, 0, xmm, &after);
			break;
		}
		case 3:
		case 4: {
			struct timespec t = { 3600, 0 };
			uint32_t v = fw[idx];

			r = sys_xmm(SYS_futex, (long)&fw[idx], FUTEX_WAIT_PRIVATE, v,
				    idx == 4 ? (long)&t : 0, xmm, &after);
			break;
		}
		default:
			after = xmm;
			break;
		}
		if (after != xmm)
			logf_("check %d thread %d bad xmm15 %" PRIx64 " after syscall result %ld\n",
			      check_gen, idx, after, r);
		/* No signal reaches these threads: EINTR means a restart went wrong. */
		if (r < 0 && r != -EAGAIN && r != -ETIMEDOUT)
			logf_("check %d thread %d bad syscall result %ld\n", check_gen, idx, r);
		step(idx);
		maybe_check(idx, &seen);
	}
	return NULL;
}

static void on_usr2(int sig)
{
	(void)sig;
	want_check = 1;
}

int main(int argc, char **argv)
{
	const char *log = NULL;
	size_t mib = 4;
	uint64_t count = 0, *region;
	size_t region_len;
	struct sigaction sa;
	pthread_t th;
	int exit_main = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--log") && i + 1 < argc)
			log = argv[++i];
		else if (!strcmp(argv[i], "--mib") && i + 1 < argc)
			mib = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--exit-main"))
			exit_main = 1;
		else {
			fprintf(stderr, "tworkload: bad argument %s\n", argv[i]);
			return 2;
		}
	}
	close_range(3, ~0u, 0);
	if (!log || !mib) {
		fprintf(stderr, "usage: tworkload --log PATH [--mib N] [--seed S]\n");
		return 2;
	}
	logfd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
	if (logfd < 0) {
		perror(log);
		return 1;
	}
	slice_len = mib * MIB;
	slices = mmap(NULL, (NTH + 1) * slice_len, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	region_len = mib * MIB;
	region = mmap(NULL, region_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (slices == MAP_FAILED || region == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	for (size_t k = 0; k < region_len / 8; k++)
		region[k] = pat(0, k, 7);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr2;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR2, &sa, NULL);

	tls_idx = 0;
	tls_magic = pat(0, 0xabc, 0);
	want[0].magic = tls_magic;
	{
		void *alt = mmap(NULL, ALT_SIZE, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (alt == MAP_FAILED)
			return 1;
		sigaltstack(&(stack_t){ .ss_sp = alt, .ss_size = ALT_SIZE }, NULL);
	}
	take(&want[0]);
	logf_("start 0 tid %d\n", (int)want[0].tid);
	for (int i = 1; i <= NTH; i++) {
		if (pthread_create(&th, NULL, worker, (void *)(intptr_t)i)) {
			fprintf(stderr, "pthread_create failed\n");
			return 1;
		}
		pthread_detach(th);
	}
	printf("ready pid=%d\n", (int)getpid());
	fflush(stdout);
	if (exit_main)
		pthread_exit(NULL);
	for (;;) {
		struct timespec t = { 0, 10000000 };

		logf_("count %" PRIu64 "\n", ++count);
		while (nanosleep(&t, &t) < 0 && errno == EINTR && !want_check)
			;
		if (want_check) {
			char why[160] = "";
			int g = ++check_gen;

			want_check = 0;
			for (int i = 3; i <= 4; i++) {
				__atomic_add_fetch(&fw[i], 1, __ATOMIC_SEQ_CST);
				syscall(SYS_futex, &fw[i], FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
			}
			if (!check_state(0, why, sizeof(why)))
				for (size_t k = 0; k < region_len / 8 && !why[0]; k++)
					if (region[k] != pat(0, k, 7))
						snprintf(why, sizeof(why), "region word %zu", k);
			logf_("check %d main tid %ld %s%s\n", g, (long)syscall(SYS_gettid),
			      why[0] ? "bad " : "ok", why);
		}
	}
}
