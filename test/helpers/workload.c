/*
 * A target for dump tests: maps regions with a known pattern, says where they
 * are, then answers commands on stdin until it is told to quit or stdin closes.
 *
 *   workload [--anon MIB] [--full] [--file PATH] [--file-pages N] [--shared]
 *            [--shared-memfd | --shared-memfd-open | --shared-memfd-sealed]
 *            [--threads N] [--lock] [--own-uffd] [--idle-uffd] [--wipeonfork]
 *            [--guard] [--exiter] [--clone-vm] [--uring] [--poison] [--huge MIB]
 *            [--huge-dontfork] [--seed S]
 *
 * Regions:
 *   anon   anonymous private, MIB MiB (default 4). Page i holds the pattern,
 *          except (without --full): i%16 == 3 never touched, i%16 == 7 written
 *          with zeros, i%16 == 11 only read (the kernel's zero page).
 *   none   4 pages of pattern, then mprotect(PROT_NONE).
 *   heap   64 KiB from malloc (in [heap]), pattern.
 *   file   with --file: PATH created with N pages (default 32) of the file
 *          pattern, mapped MAP_PRIVATE and read whole; pages i%4 == 1 then
 *          written with the pattern, pages i%8 == 6 with zeros (copies on write).
 *   shared with --shared: 1 MiB MAP_SHARED|MAP_ANONYMOUS (256 pages): page i
 *          holds the shared pattern of generation 1, except i%8 == 5 never
 *          touched and i%8 == 6 written with zeros. 'S' writes later
 *          generations (see shared_fork); 'v' checks every word. With
 *          --shared-memfd the region is a memfd ("wl-shared") mapped
 *          MAP_SHARED instead, its descriptor closed once mapped; with
 *          --shared-memfd-open the same, its descriptor kept open at fd 9;
 *          with --shared-memfd-sealed the same as --shared-memfd, sealed
 *          with F_SEAL_FUTURE_WRITE once written (the mapping stays
 *          writable).
 *   huge   with --huge MIB: MIB MiB of MAP_PRIVATE|MAP_HUGETLB (2 MiB pages),
 *          huge page i: the pattern when i%4 == 0, written with zeros when
 *          i%4 == 2, never touched otherwise.
 *   thra, thrb  with --threads N: N pages each, just before and just after
 *          the anon region (one area); thread k writes its counter c
 *          to every word of page k of thra, then of page k of thrb, for c = 1, 2, ...
 *          so a consistent snapshot of the two pages, read as one sequence of
 *          1024 words, is some x repeated, then x-1 repeated.
 *
 * Start-up prints one line: "ready pid=P seed=S anon=ADDR:LEN none=... heap=...
 * [file=...] [shared=...] [thra=... thrb=...] [rseq=...] threads=N" (hex
 * addresses, byte lengths). rseq is the main thread's rseq area: the kernel
 * writes the CPU number there whenever the thread returns to user space on
 * another CPU, so those bytes may change while the workload sits idle.
 * Threads also read the anon region, a page a round, and count what they
 * find wrong. Commands, one byte each: 'v' verifies every word of the fixed
 * regions (and that no thread read a wrong word) and answers "ok" or "bad
 * WHAT"; 'p' answers "progress ROUNDS bad N at ADDR" for the threads; 'R'
 * says "reading", reads 64 bytes from stdin into page 1 of the anon region
 * and answers "read ok" or "read WHAT"; 'F' forks, moves, drops and unmaps
 * parts of the anon region (see fork_and_move) and answers "F ok" or "F WHAT";
 * 'C' moves the anon region's last 16 pages away and back and forks, over and
 * over, until the manager has released the region (see churn), and answers
 * "C ok ROUNDS" or "C WHAT" ('c': the same without the forks);
 * 'W' checks the --wipeonfork area from a forked child (empty) and itself;
 * 'X' ends the --exiter thread and joins it; 'K' forks a child that after a
 * second checks every byte and exits (0: right, 1: not), unreaped, and
 * answers "K PID"; 'q' exits 0. --idle-uffd makes
 * a userfaultfd with nothing registered, --guard a region with guard pages,
 * --clone-vm a process sharing our memory, --uring an io_uring instance.
 * --poison poisons anon pages 5, 6 and 37 (UFFDIO_POISON through a
 * userfaultfd of its own, then closed: the poison stays, as a hardware-
 * poisoned page would; 'v' leaves them out) and 'B' touches each: "B sigbus
 * N code C" when all N gave SIGBUS (C: the last si_code), else "B WHAT".
 * 'b' forks a child that does what 'v' and (with --poison) 'B' do, and
 * answers "b ok" or "b WHAT" once it has exited. --huge-dontfork makes the
 * huge region MADV_DONTFORK; 'Z' forks a child that only sleeps (it dies
 * with us) and answers "Z PID".
 * 'S' (--shared): write generation 2 into shared pages i%8 == 1, fork a
 * child that checks every word of every region and writes generation 3
 * into pages i%8 == 2 and 5, then check what the child wrote; answers "S ok"
 * or "S WHAT". 'D' (--shared): MADV_DONTNEED the whole shared region (its
 * contents stay in the shmem object) and answer "D ok" or "D WHAT". 'M'
 * (--shared): move the shared region elsewhere with mremap (its pages go
 * with it, in the same object) and answer "M ok" or "M WHAT". 'r'
 * (--shared): read every word of the shared region only; "r ok" or "r WHAT".
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/rseq.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "uffd_compat.h"

#define PAGE	4096ul
#define WORDS	(PAGE / 8)
#define HPAGE	(2ul << 20)

/* The pattern: splitmix64 of the seed and the address of the word. Must match test_dump.c. */
static uint64_t pat(uint64_t seed, uint64_t addr)
{
	uint64_t z = seed + addr * 0x9E3779B97F4A7C15ull;

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* The file's own contents: distinct from the pattern. Must match test_dump.c. */
static uint64_t filepat(uint64_t off)
{
	return 0xF11E000000000000ull | off;
}

struct region {
	uint8_t *p;
	size_t len;
};

/* --poison: the anon pages poisoned. */
static const size_t poison_pages[] = { 5, 6, 37 };
static bool poisoned;

static bool is_poisoned(size_t i)
{
	for (size_t k = 0; poisoned && k < sizeof(poison_pages) / sizeof(poison_pages[0]); k++)
		if (poison_pages[k] == i)
			return true;
	return false;
}

struct wl {
	uint64_t seed;
	bool full;
	struct region anon, none, heap, file, shared, thra, thrb, huge;
	int threads;
	bool moved;		/* 'F' moved the anon region away */
	struct region wof;	/* --wipeonfork: pattern, MADV_WIPEONFORK */
	uint8_t sgen[256];	/* --shared: page i's generation, 0: zeros */
};

struct thr {
	uint64_t k;
	volatile uint64_t *a;
	volatile uint64_t *b;
};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("workload: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void *map_anon(size_t len, int flags)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, flags | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die("mmap %zu: %s", len, strerror(errno));
	return p;
}

static void fill(uint64_t seed, uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len / 8; i++)
		((uint64_t *)(void *)p)[i] = pat(seed, (uint64_t)(uintptr_t)(p + i * 8));
}

/* Is page I of the anon region a pattern page (else it must read zero)? */
static bool anon_has_data(const struct wl *w, size_t i)
{
	return w->full || (i % 16 != 3 && i % 16 != 7 && i % 16 != 11);
}

/* Map thra, the anon region and thrb as one area, in that order, so the two
 * counter pages of a thread lie the whole anon region apart. */
static void make_anon(struct wl *w, size_t mib)
{
	volatile uint8_t sink = 0;
	uint8_t *base;

	w->anon.len = mib << 20;
	w->thra.len = w->thrb.len = w->threads * PAGE;
	base = map_anon(w->thra.len + w->anon.len + w->thrb.len, MAP_PRIVATE);
	if (w->threads) {
		w->thra.p = base;
		w->thrb.p = base + w->thra.len + w->anon.len;
	}
	w->anon.p = base + w->thra.len;
	for (size_t i = 0; i < w->anon.len / PAGE; i++) {
		uint8_t *pg = w->anon.p + i * PAGE;

		if (anon_has_data(w, i)) {
			fill(w->seed, pg, PAGE);
		} else if (i % 16 == 7) {
			fill(w->seed, pg, PAGE);
			memset(pg, 0, PAGE);
		} else if (i % 16 == 11) {
			sink += *(volatile uint8_t *)pg;
		}
	}
	(void)sink;
}

static void make_file(struct wl *w, const char *path, size_t pages)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	uint64_t *buf = malloc(pages * PAGE);
	volatile uint64_t sink = 0;

	if (fd < 0 || !buf)
		die("%s: %s", path, strerror(errno));
	for (size_t i = 0; i < pages * WORDS; i++)
		buf[i] = filepat(i * 8);
	if (write(fd, buf, pages * PAGE) != (ssize_t)(pages * PAGE))
		die("%s: write: %s", path, strerror(errno));
	free(buf);
	w->file.len = pages * PAGE;
	w->file.p = mmap(NULL, w->file.len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (w->file.p == MAP_FAILED)
		die("mmap %s: %s", path, strerror(errno));
	close(fd);
	for (size_t i = 0; i < pages; i++) {
		uint8_t *pg = w->file.p + i * PAGE;

		sink += *(volatile uint64_t *)pg;	/* present as the file's page */
		if (i % 4 == 1)
			fill(w->seed, pg, PAGE);
		else if (i % 8 == 6)
			memset(pg, 0, PAGE);
	}
	(void)sink;
}

/* What the threads found reading the anon region while they run. */
static atomic_uint_fast64_t thr_rounds, thr_bad;
static _Atomic uintptr_t thr_bad_at;
static const struct wl *thr_wl;

/* Check page I of the anon region as a thread reads it; count a mismatch. */
static void thread_check(const struct wl *w, size_t i)
{
	const uint64_t *pg = (const uint64_t *)(const void *)(w->anon.p + i * PAGE);
	bool data = anon_has_data(w, i);

	if (is_poisoned(i))
		return;

	for (size_t k = 0; k < WORDS; k++)
		if (pg[k] != (data ? pat(w->seed, (uint64_t)(uintptr_t)&pg[k]) : 0)) {
			atomic_fetch_add(&thr_bad, 1);
			atomic_store(&thr_bad_at, (uintptr_t)&pg[k]);
			return;
		}
}

static void *thread_main(void *arg)
{
	struct thr *t = arg;
	size_t npages = thr_wl->anon.len / PAGE;

	for (uint64_t c = 1;; c++) {
		for (size_t i = 0; i < WORDS; i++)
			t->a[i] = c;
		for (size_t i = 0; i < WORDS; i++)
			t->b[i] = c;
		/* And read the anon region, a page a round, all over it. */
		thread_check(thr_wl, (size_t)((t->k * 7919 + c * 131) % npages));
		atomic_fetch_add(&thr_rounds, 1);
	}
	return NULL;
}

/* Start N threads on pages of thra and thrb, which must be mapped already. */
static void start_threads(struct wl *w)
{
	static struct thr t[64];

	for (int k = 0; k < w->threads; k++) {
		pthread_t th;

		thr_wl = w;
		t[k].k = (uint64_t)k;
		t[k].a = (volatile uint64_t *)(void *)(w->thra.p + k * PAGE);
		t[k].b = (volatile uint64_t *)(void *)(w->thrb.p + k * PAGE);
		if (pthread_create(&th, NULL, thread_main, &t[k]))
			die("pthread_create failed");
	}
}

static const char *check_pat(const struct wl *w, const uint8_t *p, size_t len, const char *what)
{
	static char msg[128];

	for (size_t i = 0; i < len / 8; i++)
		if (((const uint64_t *)(const void *)p)[i] != pat(w->seed, (uint64_t)(uintptr_t)(p + i * 8))) {
			snprintf(msg, sizeof(msg), "%s word at %p", what, (void *)(p + i * 8));
			return msg;
		}
	return NULL;
}

/* Word K of shared page I in generation GEN (GEN 0: zero). */
static uint64_t spat(const struct wl *w, size_t i, size_t k, unsigned gen)
{
	return gen ? pat(w->seed ^ (0x5A17ull << 40) ^ gen, i * PAGE + k * 8) : 0;
}

/* Write generation GEN into shared page I. */
static void shared_write(struct wl *w, size_t i, unsigned gen)
{
	uint64_t *q = (uint64_t *)(void *)(w->shared.p + i * PAGE);

	for (size_t k = 0; k < WORDS; k++)
		q[k] = spat(w, i, k, gen);
	w->sgen[i] = (uint8_t)gen;
}

/* Check every word of the shared region against sgen[]. */
static const char *check_shared(const struct wl *w)
{
	static char msg[128];

	for (size_t i = 0; w->shared.p && i < w->shared.len / PAGE; i++) {
		const uint64_t *q = (const uint64_t *)(const void *)(w->shared.p + i * PAGE);

		for (size_t k = 0; k < WORDS; k++)
			if (q[k] != spat(w, i, k, w->sgen[i])) {
				snprintf(msg, sizeof(msg), "shared page %zu word %zu (generation %u)",
					 i, k, w->sgen[i]);
				return msg;
			}
	}
	return NULL;
}

static const char *check_zero(const uint8_t *p, size_t len, const char *what)
{
	static char msg[128];

	for (size_t i = 0; i < len; i++)
		if (p[i]) {
			snprintf(msg, sizeof(msg), "%s: byte at %p not zero", what, (void *)(p + i));
			return msg;
		}
	return NULL;
}

/* Check every word of the fixed regions; NULL when all is well. */
static const char *verify(const struct wl *w)
{
	const char *bad = NULL;

	for (size_t i = 0; !bad && i < w->anon.len / PAGE; i++) {
		const uint8_t *pg = w->anon.p + i * PAGE;

		if (is_poisoned(i))
			continue;
		bad = anon_has_data(w, i) ? check_pat(w, pg, PAGE, "anon") : check_zero(pg, PAGE, "anon");
	}
	if (!bad) {
		if (mprotect(w->none.p, w->none.len, PROT_READ) < 0)
			return "mprotect failed";
		bad = check_pat(w, w->none.p, w->none.len, "none");
		mprotect(w->none.p, w->none.len, PROT_NONE);
	}
	if (!bad)
		bad = check_pat(w, w->heap.p, w->heap.len, "heap");
	for (size_t i = 0; !bad && w->file.p && i < w->file.len / PAGE; i++) {
		const uint8_t *pg = w->file.p + i * PAGE;

		if (i % 4 == 1) {
			bad = check_pat(w, pg, PAGE, "file copy");
		} else if (i % 8 == 6) {
			bad = check_zero(pg, PAGE, "file zeroed copy");
		} else {
			for (size_t k = 0; !bad && k < WORDS; k++)
				if (((const uint64_t *)(const void *)pg)[k] != filepat(i * PAGE + k * 8))
					bad = "file page";
		}
	}
	if (!bad)
		bad = check_shared(w);
	for (size_t i = 0; !bad && w->huge.p && i < w->huge.len / HPAGE; i++)
		bad = i % 4 ? check_zero(w->huge.p + i * HPAGE, HPAGE, "huge") :
			      check_pat(w, w->huge.p + i * HPAGE, HPAGE, "huge");
	return bad;
}

/* 'W': a forked child must find the wipe-on-fork area empty, the parent its pattern. */
static const char *check_wipeonfork(const struct wl *w)
{
	int st;
	pid_t pid;

	if (!w->wof.p)
		return "no --wipeonfork area";
	pid = fork();
	if (pid < 0)
		return "fork failed";
	if (pid == 0)
		_exit(check_zero(w->wof.p, w->wof.len, "wipeonfork") ? 1 : 0);
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
		return "the child did not find the wipe-on-fork area empty";
	return check_pat(w, w->wof.p, w->wof.len, "wipeonfork (parent)");
}

/* --guard: 8 pages of pattern, the middle two made guard pages; never read. */
static void make_guard(void)
{
	uint8_t *p = map_anon(8 * PAGE, MAP_PRIVATE);

	memset(p, 0x6b, 8 * PAGE);
	if (madvise(p + 3 * PAGE, 2 * PAGE, 102 /* MADV_GUARD_INSTALL */) < 0)
		die("MADV_GUARD_INSTALL: %s", strerror(errno));
}

/* --exiter: a thread that waits on a pipe, then exits ('X' ends it and joins it). */
static int exiter_pipe[2];
static pthread_t exiter_th;

static void *exiter_main(void *arg)
{
	char b;

	(void)arg;
	while (read(exiter_pipe[0], &b, 1) < 0 && errno == EINTR)
		;
	return NULL;
}

static void start_exiter(void)
{
	if (pipe(exiter_pipe) < 0 || pthread_create(&exiter_th, NULL, exiter_main, NULL))
		die("exiter thread");
}

/* The kernel clears the thread's tid word at its exit and wakes the join: a hang here is the bug. */
static const char *stop_exiter(void)
{
	if (!exiter_pipe[1])
		return "no --exiter thread";
	if (write(exiter_pipe[1], "x", 1) != 1 || pthread_join(exiter_th, NULL))
		return "join failed";
	return NULL;
}

/* --clone-vm: a process sharing our memory (not a thread), that just sleeps. */
static int clone_vm_main(void *arg)
{
	(void)arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	for (;;)
		pause();
	return 0;
}

static void start_clone_vm(void)
{
	static uint8_t stack[64 << 10] __attribute__((aligned(16)));

	if (clone(clone_vm_main, stack + sizeof(stack), CLONE_VM | SIGCHLD, NULL) < 0)
		die("clone(CLONE_VM): %s", strerror(errno));
}

/*
 * 'K': fork a child that sleeps a second, then checks every byte of the
 * fixed regions and exits 0 (all right) or 1. The parent does not reap it,
 * so a test can tell a child still waiting from one that exited. (The
 * parent needs nothing more: a test may take its manager away meanwhile.)
 */
static pid_t fork_waiter(const struct wl *w)
{
	pid_t pid = fork();

	if (pid == 0) {
		struct timespec ts = { 1, 0 };

		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
		_exit(verify(w) ? 1 : 0);
	}
	return pid;
}

/* --poison: poison POISON_PAGES of the anon region through a userfaultfd, then close it. */
static void make_poison(const struct wl *w)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register r = { .range = { (uintptr_t)w->anon.p, w->anon.len },
				     .mode = UFFDIO_REGISTER_MODE_MISSING };
	int u = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (u < 0 || ioctl(u, UFFDIO_API, &api) < 0 || ioctl(u, UFFDIO_REGISTER, &r) < 0)
		die("userfaultfd for --poison: %s", strerror(errno));
	for (size_t k = 0; k < sizeof(poison_pages) / sizeof(poison_pages[0]); k++) {
		uint8_t *pg = w->anon.p + poison_pages[k] * PAGE;
		struct uffdio_poison p = { .range = { (uintptr_t)pg, PAGE } };

		if (poison_pages[k] * PAGE >= w->anon.len)
			die("--poison needs --anon of at least 1 MiB");
		if (madvise(pg, PAGE, MADV_DONTNEED) < 0 || ioctl(u, UFFDIO_POISON, &p) < 0)
			die("UFFDIO_POISON: %s", strerror(errno));
	}
	if (ioctl(u, UFFDIO_UNREGISTER, &r.range) < 0)
		die("UFFDIO_UNREGISTER: %s", strerror(errno));
	close(u);
	poisoned = true;
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

/* 'B': every poisoned page must give SIGBUS when read. */
static const char *touch_poison(const struct wl *w, unsigned *n)
{
	struct sigaction sa = { .sa_sigaction = on_bus, .sa_flags = SA_SIGINFO | SA_NODEFER }, old;
	static char msg[96];
	const char *bad = NULL;

	if (!poisoned)
		return "no --poison";
	sigaction(SIGBUS, &sa, &old);
	*n = 0;
	for (size_t k = 0; !bad && k < sizeof(poison_pages) / sizeof(poison_pages[0]); k++) {
		volatile uint8_t *pg = w->anon.p + poison_pages[k] * PAGE;

		if (sigsetjmp(bus_jb, 1) == 0) {
			uint8_t b = pg[k * 8];

			snprintf(msg, sizeof(msg), "page %zu read 0x%02x, no SIGBUS", poison_pages[k], b);
			bad = msg;
		} else {
			(*n)++;
		}
	}
	sigaction(SIGBUS, &old, NULL);
	return bad;
}

/* 'S': parent and a child forked now write through the shared region, and each checks the other. */
static const char *shared_fork(struct wl *w)
{
	size_t n = w->shared.len / PAGE;
	int st;
	pid_t pid;

	if (!w->shared.p)
		return "no --shared region";
	for (size_t i = 1; i < n; i += 8)
		shared_write(w, i, 2);
	pid = fork();
	if (pid < 0)
		return "fork failed";
	if (pid == 0) {
		if (verify(w))
			_exit(1);
		for (size_t i = 0; i < n; i++)
			if (i % 8 == 2 || i % 8 == 5)
				shared_write(w, i, 3);
		_exit(0);
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return "the child did not exit";
	if (WEXITSTATUS(st))
		return "the child read a wrong byte";
	for (size_t i = 0; i < n; i++)
		if (i % 8 == 2 || i % 8 == 5)
			w->sgen[i] = 3;
	return check_shared(w);
}

/* 'b': a forked child checks every byte, and that every poisoned page gives SIGBUS. */
static const char *child_check(const struct wl *w)
{
	int st;
	pid_t pid = fork();

	if (pid < 0)
		return "fork failed";
	if (pid == 0) {
		unsigned n = 0;

		if (verify(w))
			_exit(1);
		if (poisoned && (touch_poison(w, &n) || n != sizeof(poison_pages) / sizeof(poison_pages[0])))
			_exit(2);
		_exit(0);
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return "the child did not exit";
	if (WEXITSTATUS(st) == 1)
		return "the child read a wrong byte";
	return WEXITSTATUS(st) ? "a poisoned page gave the child no SIGBUS" : NULL;
}

/* --own-uffd: a userfaultfd of our own on 4 written pages nobody touches again. */
static void make_own_uffd(void)
{
	struct uffdio_api api = { .api = UFFD_API };
	uint8_t *p = map_anon(4 * PAGE, MAP_PRIVATE);
	struct uffdio_register r = { .range = { (uintptr_t)p, 4 * PAGE },
				     .mode = UFFDIO_REGISTER_MODE_MISSING };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);

	memset(p, 0x5a, 4 * PAGE);
	if (fd < 0 || ioctl(fd, UFFDIO_API, &api) < 0 || ioctl(fd, UFFDIO_REGISTER, &r) < 0)
		die("own userfaultfd: %s", strerror(errno));
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * 'R': say "reading", then read 64 bytes from stdin straight into page 1
 * of the anon region at offset 100 (the test hands the workload over while
 * it blocks there), check they are 'A', 'B', ... and that the rest of the
 * page kept its pattern, then put the pattern back.
 */
static const char *blocked_read(struct wl *w)
{
	uint8_t *pg = w->anon.p + PAGE, *buf = pg + 100;
	size_t got = 0;

	say("reading\n");
	while (got < 64) {
		ssize_t n = read(0, buf + got, 64 - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return "read() failed";
		got += (size_t)n;
	}
	for (size_t i = 0; i < 64; i++)
		if (buf[i] != (uint8_t)('A' + i % 26))
			return "the bytes read are not the bytes sent";
	for (size_t k = 0; k < WORDS; k++) {
		uint64_t v;

		if (k * 8 + 8 > 100 && k * 8 < 164)
			continue;
		memcpy(&v, pg + k * 8, 8);
		if (v != pat(w->seed, (uint64_t)(uintptr_t)(pg + k * 8)))
			return "the rest of the page lost its pattern";
	}
	fill(w->seed, pg, PAGE);
	return NULL;
}

/* Check page I (of the anon region as it was) now at P. */
static const char *check_moved(const struct wl *w, const uint8_t *p, size_t i)
{
	static char msg[160];

	for (size_t k = 0; k < WORDS; k++) {
		uint64_t want = anon_has_data(w, i) ?
			pat(w->seed, (uint64_t)(uintptr_t)(w->anon.p + i * PAGE + k * 8)) : 0;

		if (((const uint64_t *)(const void *)p)[k] != want) {
			snprintf(msg, sizeof(msg), "moved page %zu word %zu", i, k);
			return msg;
		}
	}
	return NULL;
}

/*
 * 'F': fork a child that verifies everything; then move the anon region
 * (mremap), check its first 64 pages, drop pages 16-31 (MADV_DONTNEED: they
 * must read zero), unmap pages 32-63, and check every page left.
 */
static const char *fork_and_move(struct wl *w)
{
	size_t np = w->anon.len / PAGE;
	const char *bad;
	uint8_t *dst;
	int st;
	pid_t pid;

	if (np < 128)
		return "the anon region is too small (--anon 1 at least)";
	pid = fork();
	if (pid < 0)
		return "fork failed";
	if (pid == 0)
		_exit(verify(w) ? 1 : 0);
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
		return "the forked child found wrong memory";
	dst = mmap(NULL, w->anon.len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (dst == MAP_FAILED)
		return "mmap failed";
	if (mremap(w->anon.p, w->anon.len, w->anon.len, MREMAP_MAYMOVE | MREMAP_FIXED, dst) != dst)
		return "mremap failed";
	w->moved = true;
	for (size_t i = 0; i < 64; i++)
		if ((bad = check_moved(w, dst + i * PAGE, i)))
			return bad;
	if (madvise(dst + 16 * PAGE, 16 * PAGE, MADV_DONTNEED) < 0)
		return "madvise failed";
	if (munmap(dst + 32 * PAGE, 32 * PAGE) < 0)
		return "munmap failed";
	for (size_t i = 0; i < np; i++) {
		if (i >= 32 && i < 64)
			continue;
		if (i >= 16 && i < 32)
			bad = check_zero(dst + i * PAGE, PAGE, "dropped page");
		else
			bad = check_moved(w, dst + i * PAGE, i);
		if (bad)
			return bad;
	}
	return NULL;
}

/* Is the area holding P registered with a userfaultfd ("um" in smaps)? -1 if not found. */
static int uffd_registered(const void *p)
{
	uintptr_t at = (uintptr_t)p;
	char line[512];
	bool in = false;
	int ret = -1;
	FILE *f = fopen("/proc/self/smaps", "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long a, b;

		if (sscanf(line, "%llx-%llx ", &a, &b) == 2)
			in = a <= at && at < b;
		else if (in && !strncmp(line, "VmFlags:", 8)) {
			ret = strstr(line, " um") != NULL;
			break;
		}
	}
	fclose(f);
	return ret;
}

/*
 * 'C': churn while the manager fills the last pages: move the last 16 pages
 * of the anon region away and back (mremap) and fork a child that exits at
 * once, round after round, until the region is seen unregistered (released)
 * and 300 rounds more; the data must be where it was ('v' checks it).
 */
static const char *churn(struct wl *w, unsigned *rounds, bool forks)
{
	size_t len = 16 * PAGE;
	uint8_t *src = w->anon.p + w->anon.len - len;
	unsigned after = 0;
	time_t end = time(NULL) + 20;

	if (w->anon.len < len)
		return "the anon region is too small";
	for (*rounds = 0; after < 300; ++*rounds) {
		uint8_t *tmp = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		pid_t pid;
		int st;

		if (tmp == MAP_FAILED)
			return "mmap failed";
		if (mremap(src, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, tmp) != tmp ||
		    mremap(tmp, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, src) != src)
			return "mremap failed";
		if (!forks)
			goto next;
		pid = fork();
		if (pid < 0)
			return "fork failed";
		if (pid == 0)
			_exit(0);
		if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
			return "the forked child did not exit 0";
next:
		if (after)
			after++;
		else if (*rounds % 16 == 0 && uffd_registered(w->anon.p) == 0)
			after = 1;
		if (time(NULL) > end)
			return "never released in 20 s";
	}
	return NULL;
}

static void say(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line) || write(1, line, n) != n)
		exit(1);
}

static void region_text(char *out, size_t len, const char *name, const struct region *r)
{
	if (r->p)
		snprintf(out, len, " %s=%" PRIxPTR ":%zx", name, (uintptr_t)r->p, r->len);
	else
		out[0] = '\0';
}

int main(int argc, char **argv)
{
	struct wl w = { .seed = 0x5eedf00dull };
	const char *file = NULL;
	size_t mib = 4, file_pages = 32;
	int threads = 0;
	bool shared = false, lock = false, own_uffd = false, idle_uffd = false;
	int shared_memfd = 0;	/* 1: a memfd, closed once mapped; 2: kept open at fd 9; 3: sealed */
	int sealfd = -1;
	bool wipeonfork = false, guard = false, exiter = false, clone_vm = false, uring = false;
	bool poison = false;
	size_t huge_mib = 0;
	bool huge_dontfork = false;
	char r[8][96];

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--full")) {
			w.full = true;
		} else if (!strcmp(a, "--shared")) {
			shared = true;
		} else if (!strcmp(a, "--shared-memfd")) {
			shared = true;
			shared_memfd = 1;
		} else if (!strcmp(a, "--shared-memfd-open")) {
			shared = true;
			shared_memfd = 2;
		} else if (!strcmp(a, "--shared-memfd-sealed")) {
			shared = true;
			shared_memfd = 3;
		} else if (!strcmp(a, "--lock")) {
			lock = true;
		} else if (!strcmp(a, "--own-uffd")) {
			own_uffd = true;
		} else if (!strcmp(a, "--idle-uffd")) {
			idle_uffd = true;
		} else if (!strcmp(a, "--wipeonfork")) {
			wipeonfork = true;
		} else if (!strcmp(a, "--guard")) {
			guard = true;
		} else if (!strcmp(a, "--exiter")) {
			exiter = true;
		} else if (!strcmp(a, "--clone-vm")) {
			clone_vm = true;
		} else if (!strcmp(a, "--uring")) {
			uring = true;
		} else if (!strcmp(a, "--poison")) {
			poison = true;
		} else if (!strcmp(a, "--huge-dontfork")) {
			huge_dontfork = true;
		} else if (v && !strcmp(a, "--huge")) {
			huge_mib = strtoul(v, NULL, 0), i++;
		} else if (v && !strcmp(a, "--anon")) {
			mib = strtoul(v, NULL, 0), i++;
		} else if (v && !strcmp(a, "--file")) {
			file = v, i++;
		} else if (v && !strcmp(a, "--file-pages")) {
			file_pages = strtoul(v, NULL, 0), i++;
		} else if (v && !strcmp(a, "--threads")) {
			threads = atoi(v), i++;
		} else if (v && !strcmp(a, "--seed")) {
			w.seed = strtoull(v, NULL, 0), i++;
		} else {
			die("unknown argument %s", a);
		}
	}

	if (threads < 0 || threads > 64)
		die("--threads: 0 to 64");
	w.threads = threads;
	make_anon(&w, mib);
	if (poison)
		make_poison(&w);
	w.none.len = 4 * PAGE;
	w.none.p = map_anon(w.none.len, MAP_PRIVATE);
	fill(w.seed, w.none.p, w.none.len);
	if (mprotect(w.none.p, w.none.len, PROT_NONE) < 0)
		die("mprotect: %s", strerror(errno));
	w.heap.len = 64 << 10;
	w.heap.p = malloc(w.heap.len);
	if (!w.heap.p)
		die("malloc failed");
	fill(w.seed, w.heap.p, w.heap.len);
	if (file)
		make_file(&w, file, file_pages);
	if (huge_mib) {
		w.huge.len = huge_mib << 20;
		w.huge.p = mmap(NULL, w.huge.len, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
		if (w.huge.p == MAP_FAILED)
			die("mmap MAP_HUGETLB %zu MiB: %s", huge_mib, strerror(errno));
		for (size_t i = 0; i < w.huge.len / HPAGE; i++) {
			if (i % 4 == 0)
				fill(w.seed, w.huge.p + i * HPAGE, HPAGE);
			else if (i % 4 == 2)
				memset(w.huge.p + i * HPAGE, 0, HPAGE);
		}
		if (huge_dontfork && madvise(w.huge.p, w.huge.len, MADV_DONTFORK) < 0)
			die("MADV_DONTFORK: %s", strerror(errno));
	}
	if (shared) {
		w.shared.len = 1 << 20;
		if (shared_memfd) {
			int mfd = memfd_create("wl-shared", MFD_CLOEXEC |
					       (shared_memfd == 3 ? MFD_ALLOW_SEALING : 0));

			if (mfd < 0 || ftruncate(mfd, (off_t)w.shared.len) < 0)
				die("memfd wl-shared: %s", strerror(errno));
			w.shared.p = mmap(NULL, w.shared.len, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
			if (w.shared.p == MAP_FAILED)
				die("mmap memfd: %s", strerror(errno));
			if (shared_memfd == 2 && mfd != 9 && dup2(mfd, 9) < 0)
				die("dup2 9: %s", strerror(errno));
			if (shared_memfd == 3)
				sealfd = mfd;
			else if (mfd != 9)
				close(mfd);
		} else {
			w.shared.p = map_anon(w.shared.len, MAP_SHARED);
		}
		for (size_t i = 0; i < w.shared.len / PAGE; i++)
			if (i % 8 == 6)
				memset(w.shared.p + i * PAGE, 0, PAGE);
			else if (i % 8 != 5)
				shared_write(&w, i, 1);
		if (sealfd >= 0 && (fcntl(sealfd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE) < 0 ||
				    close(sealfd) < 0))
			die("F_SEAL_FUTURE_WRITE: %s", strerror(errno));
	}
	/* The system call itself: sanitizers make mlock() a no-op. */
	if (lock && syscall(SYS_mlock, w.anon.p, w.anon.len) < 0)
		die("mlock: %s", strerror(errno));

	if (own_uffd)
		make_own_uffd();
	if (idle_uffd && syscall(SYS_userfaultfd, O_CLOEXEC) < 0)
		die("userfaultfd: %s", strerror(errno));
	if (wipeonfork) {
		w.wof.len = 64 * PAGE;
		w.wof.p = map_anon(w.wof.len, MAP_PRIVATE);
		fill(w.seed, w.wof.p, w.wof.len);
		if (madvise(w.wof.p, w.wof.len, MADV_WIPEONFORK) < 0)
			die("MADV_WIPEONFORK: %s", strerror(errno));
	}
	if (guard)
		make_guard();
	if (exiter)
		start_exiter();
	if (clone_vm)
		start_clone_vm();
	if (uring && syscall(425 /* io_uring_setup */, 4, &(char[120]){ 0 }) < 0)
		die("io_uring_setup: %s", strerror(errno));
	region_text(r[0], sizeof(r[0]), "anon", &w.anon);
	region_text(r[1], sizeof(r[1]), "none", &w.none);
	region_text(r[2], sizeof(r[2]), "heap", &w.heap);
	region_text(r[3], sizeof(r[3]), "file", &w.file);
	region_text(r[4], sizeof(r[4]), "shared", &w.shared);
	region_text(r[5], sizeof(r[5]), "thra", &w.thra);
	region_text(r[6], sizeof(r[6]), "thrb", &w.thrb);
	if (__rseq_size) {
		struct region rs = { (uint8_t *)__builtin_thread_pointer() + __rseq_offset, 32 };

		region_text(r[7], sizeof(r[7]), "rseq", &rs);
	} else {
		r[7][0] = '\0';
	}
	start_threads(&w);
	say("ready pid=%d seed=%" PRIx64 "%s%s%s%s%s%s%s%s threads=%d\n", (int)getpid(), w.seed,
	    r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], threads);

	for (;;) {
		char c;
		ssize_t n = read(0, &c, 1);
		const char *bad;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || c == 'q') {
			free(w.heap.p);	/* nothing for LeakSanitizer to report */
			return 0;
		}
		if (c == 'v') {
			bad = w.moved ? "the anon region was moved ('F')" : verify(&w);
			if (!bad && atomic_load(&thr_bad))
				bad = "a thread read a wrong word";
			if (bad)
				say("bad %s\n", bad);
			else
				say("ok\n");
		} else if (c == 'p') {
			say("progress %" PRIu64 " bad %" PRIu64 " at %" PRIxPTR "\n",
			    (uint64_t)atomic_load(&thr_rounds), (uint64_t)atomic_load(&thr_bad),
			    (uintptr_t)atomic_load(&thr_bad_at));
		} else if (c == 'R') {
			bad = blocked_read(&w);
			say("read %s\n", bad ? bad : "ok");
		} else if (c == 'F') {
			bad = w.moved ? "moved already" : fork_and_move(&w);
			say("F %s\n", bad ? bad : "ok");
		} else if (c == 'C' || c == 'c') {
			unsigned rounds = 0;

			bad = w.moved ? "moved already" : churn(&w, &rounds, c == 'C');
			if (bad)
				say("%c %s\n", c, bad);
			else
				say("%c ok %u\n", c, rounds);
		} else if (c == 'W') {
			bad = check_wipeonfork(&w);
			say("W %s\n", bad ? bad : "ok");
		} else if (c == 'X') {
			bad = stop_exiter();
			say("X %s\n", bad ? bad : "ok");
		} else if (c == 'B') {
			unsigned nb = 0;

			bad = touch_poison(&w, &nb);
			if (bad)
				say("B %s\n", bad);
			else
				say("B sigbus %u code %d\n", nb, (int)bus_code);
		} else if (c == 'b') {
			bad = child_check(&w);
			say("b %s\n", bad ? bad : "ok");
		} else if (c == 'D') {
			bad = !w.shared.p ? "no --shared region" :
			      madvise(w.shared.p, w.shared.len, MADV_DONTNEED) ? strerror(errno) : NULL;
			say("D %s\n", bad ? bad : "ok");
		} else if (c == 'r') {
			bad = w.shared.p ? check_shared(&w) : "no --shared region";
			say("r %s\n", bad ? bad : "ok");
		} else if (c == 'M') {
			void *to = mmap(NULL, w.shared.len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			void *q = to == MAP_FAILED || !w.shared.p ? MAP_FAILED :
				  mremap(w.shared.p, w.shared.len, w.shared.len,
					 MREMAP_MAYMOVE | MREMAP_FIXED, to);

			if (q != MAP_FAILED)
				w.shared.p = q;
			say("M %s\n", q != MAP_FAILED ? "ok" : !w.shared.p ? "no --shared region" :
			    strerror(errno));
		} else if (c == 'S') {
			bad = shared_fork(&w);
			say("S %s\n", bad ? bad : "ok");
		} else if (c == 'Z') {
			pid_t z = fork();

			if (z == 0) {
				prctl(PR_SET_PDEATHSIG, SIGKILL);
				for (;;)
					pause();
			}
			say("Z %d\n", (int)z);
		} else if (c == 'K') {
			say("K %d\n", (int)fork_waiter(&w));
		}
	}
}
