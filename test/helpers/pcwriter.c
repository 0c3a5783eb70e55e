/*
 * pcwriter: a target for the pre-copy tests that writes all the time and
 * can check every byte of its memory by itself.
 *
 *   pcwriter --log FILE [--pages N] [--seed S] [--hot H] [--thp] [--fast]
 *
 * It keeps up to PCW_SLOTS areas ("slots"; slot 0 has N pages, 1024 by
 * default; with --thp slot 0 is 2 MiB aligned and MADV_HUGEPAGE; every new
 * slot starts with data in every page) and loops
 * for ever: step n picks a live slot, a page and a word from a hash of
 * (seed, n) (with --hot H, among the first H pages of all slots only), writes a value made from n there and bumps that page's counter
 * (word 0 of the page, and the same count in a separate counter area), in
 * batches of 256 steps with a 1 ms sleep after each (--fast: no sleep). Every change of layout
 * is logged in memory with the step it happened at, so the whole content of
 * every slot at step n follows from the seed and that log alone:
 *
 *   SIGUSR1  replay steps 0..n-1 into fresh memory and compare every byte of
 *            every live slot and of the counters; log "verify ok N" or
 *            "verify bad slot S page P word W: got X want Y" (or "verify bad
 *            slot S: not mapped whole" when part of a slot was unmapped).
 *   SIGUSR2  make the next change of a fixed cycle and log "change KIND":
 *            new (a slot of 64 pages), drop (MADV_DONTNEED of the middle
 *            third of the last slot), grow (mremap, may move), move (mremap
 *            to another place),
 *            protect (PROT_READ, then back), fork (a child that writes into
 *            every page, checks its own copy by replay and exits 0 or 3; the
 *            parent logs "fork ok" or "fork bad STATUS"), unmap (the last slot
 *            but 0), thp (a 2 MiB aligned slot with MADV_HUGEPAGE).
 *   SIGWINCH madvise(MADV_NOHUGEPAGE) the whole area (VMA) that holds the
 *            start of slot 0, and log "flags nohugepage"; SIGURG: mlock() it,
 *            and log "flags mlock" (VmFlags changes that leave
 *            /proc/PID/maps as it was); SIGXCPU: madvise(MADV_WIPEONFORK)
 *            it, "flags wipeonfork" (its fork change then fails, as it
 *            should); SIGPWR: a guard marker (MADV_GUARD_INSTALL) on the
 *            last page of slot 0, which must lie past the hot set, "flags
 *            guard"; from then on every verify also checks that the page
 *            still cannot be read (process_vm_readv of it fails with EFAULT:
 *            no fault is taken), and no longer compares its words.
 *   SIGVTALRM register that area with a userfaultfd of its own (MISSING
 *            mode, no events) whose only fd a forked child keeps (it waits
 *            for its parent's end): nothing in its own fd table shows it;
 *            "flags uffd". Every page of the area is read first, so that
 *            none is missing: no fault reaches it.
 *            SIGPROF: madvise(MADV_DONTFORK) it, "flags dontfork".
 *   SIGTERM  default: dies.
 *
 * --sleeper: a second thread whose stack is a 4 MiB area of its own, the
 * lower 3 MiB of it filled with a pattern first (checked by every verify),
 * which blocks every signal and sleeps: its stack top, TLS and rseq area
 * lie in a big area. --seccomp: an allow-everything seccomp filter
 * (--seccomp-sleeper: in the sleeper thread only). --ksm: slot 0
 * MADV_MERGEABLE.
 * --exec-on-hup: on SIGHUP, log "exec" and become `sleep 600`. With
 * PCW_FORK_MAPS=PATH in the environment, each fork child copies its
 * /proc/self/maps there before it checks its memory.
 *
 * It prints "ready pid=P" on stdout at start. The log is a regular file
 * opened O_APPEND, so a restored pcwriter goes on logging into it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/userfaultfd.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PCW_PAGE	4096u
#define PCW_WORDS	(PCW_PAGE / 8)
#define PCW_SLOTS	16
#define PCW_MAXPAGES	(1u << 21)	/* per slot: 8 GiB */
#define PCW_EVENTS	4096
#define PCW_BATCH	256
#define PCW_MADV_GUARD_INSTALL	102	/* Linux 6.13; Debian 12's headers predate it */

enum { EV_NEW = 1, EV_GROW, EV_MOVE, EV_DROP, EV_PROTECT, EV_FORK, EV_UNMAP, EV_THP };

struct slot {
	uint64_t *mem;		/* NULL: dead */
	uint64_t pages;
	uint64_t *ctr;		/* a counter per page, in an area of its own */
	uint64_t ctr_pages;	/* capacity of ctr, in entries */
};

struct event {
	uint64_t step;
	uint32_t kind;
	uint32_t slot;
	uint64_t a, b;		/* pages: new size, drop range */
};

static struct slot slots[PCW_SLOTS];
static struct event events[PCW_EVENTS];
static unsigned nevents;
static uint64_t step;
static uint64_t seed = 1;
static uint64_t hot;		/* steps write only the first HOT pages (0: all) */
static bool fast;		/* no sleep between batches: writes as fast as it can */
static unsigned next_change;
static int logfd = -1;
static volatile sig_atomic_t want_verify, want_change, want_flags;
static uint64_t *guard_page;	/* a guard marker's page (SIGPWR), or NULL */

#define PCW_SLEEPER	(4u << 20)	/* the sleeper thread's stack area */
#define PCW_SLEEPER_PAT	(3u << 20)	/* its lower part, a pattern */
static uint64_t *sleeper;

static int allow_all_seccomp(void);
static volatile int sleeper_ready;	/* 1 set up, -1 its filter failed */

static void *sleeper_main(void *arg)
{
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	sleeper_ready = arg && allow_all_seccomp() < 0 ? -1 : 1;
	for (;;)
		sleep(1000);
	return NULL;
}

/* Start the sleeper thread on a stack of its own, its lower part a pattern; FILTER: with a seccomp filter. */
static int start_sleeper(bool filter)
{
	pthread_attr_t a;
	pthread_t th;

	sleeper = mmap(NULL, PCW_SLEEPER, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (sleeper == MAP_FAILED)
		return -1;
	for (size_t k = 0; k < PCW_SLEEPER_PAT / 8; k++)
		sleeper[k] = (seed * 0x9e3779b97f4a7c15ull) ^ (k * 0xbf58476d1ce4e5b9ull) ^ 0x51ee9;
	if (pthread_attr_init(&a) || pthread_attr_setstack(&a, sleeper, PCW_SLEEPER) ||
	    pthread_create(&th, &a, sleeper_main, filter ? "" : NULL))
		return -1;
	while (!sleeper_ready)
		usleep(1000);
	return sleeper_ready < 0 ? -1 : 0;
}

/* The sleeper's pattern intact? */
static bool sleeper_ok(void)
{
	for (size_t k = 0; sleeper && k < PCW_SLEEPER_PAT / 8; k++)
		if (sleeper[k] != ((seed * 0x9e3779b97f4a7c15ull) ^ (k * 0xbf58476d1ce4e5b9ull) ^
				   0x51ee9))
			return false;
	return true;
}

/* A seccomp filter that allows everything: the target has one, nothing more. */
static int allow_all_seccomp(void)
{
	struct sock_filter f[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
	struct sock_fprog prog = { .len = 1, .filter = f };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -1;
	return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

static void on_hup(int s)
{
	static const char line[] = "exec\n";

	(void)s;
	if (write(logfd, line, sizeof(line) - 1) < 0) {
	}
	execl("/bin/sleep", "sleep", "600", (char *)NULL);
	_exit(4);
}

/* In a fork child: copy /proc/self/maps to PCW_FORK_MAPS, if set. */
static void fork_maps(void)
{
	const char *to = getenv("PCW_FORK_MAPS");
	char buf[4096];
	int in, out;
	ssize_t n;

	if (!to)
		return;
	in = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	while (in >= 0 && out >= 0 && (n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n)
			break;
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
}

static void on_usr1(int s)
{
	(void)s;
	want_verify = 1;
}

static void on_usr2(int s)
{
	(void)s;
	want_change = 1;
}

static void on_flags(int s)
{
	want_flags = s;
}

/*
 * Register [A, B) with a new userfaultfd (MISSING mode) and give its fd to a
 * child that keeps it until we end; 0, or -1 with errno.
 */
static int uffd_elsewhere(uintptr_t a, uintptr_t b)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register r = { .range = { a, b - a }, .mode = UFFDIO_REGISTER_MODE_MISSING };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	pid_t c;

	if (fd < 0)
		return -1;
	/*
	 * The area may hold more than slot 0 (the counters, merged with it),
	 * with pages never touched: read each, so that none is missing and
	 * no fault of ours waits on a userfaultfd nobody reads.
	 */
	for (uintptr_t p = a; p < b; p += PCW_PAGE)
		(void)*(volatile const char *)p;
	if (ioctl(fd, UFFDIO_API, &api) < 0 || ioctl(fd, UFFDIO_REGISTER, &r) < 0) {
		close(fd);
		return -1;
	}
	c = fork();
	if (c == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;)
			pause();
	}
	close(fd);
	return c < 0 ? -1 : 0;
}

/* The bounds of the area of /proc/self/maps that holds P; false if none. */
static bool area_of(const void *p, uintptr_t *start, uintptr_t *end)
{
	FILE *f = fopen("/proc/self/maps", "re");
	unsigned long s, e;
	char line[512];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		if (sscanf(line, "%lx-%lx", &s, &e) == 2 && (uintptr_t)p >= s && (uintptr_t)p < e) {
			*start = s;
			*end = e;
			found = true;
		}
	fclose(f);
	return found;
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	char b[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(b, sizeof(b), fmt, ap);
	va_end(ap);
	if (n > 0 && write(logfd, b, (size_t)n) != n)
		_exit(101);
}

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Map PAGES pages for a slot (THP: 2 MiB aligned, MADV_HUGEPAGE). */
static uint64_t *map_pages(uint64_t pages, bool thp)
{
	size_t len = pages * PCW_PAGE, al = 2u << 20;
	uint8_t *p;

	if (!thp) {
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		return p == MAP_FAILED ? NULL : (uint64_t *)(void *)p;
	}
	p = mmap(NULL, len + al, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	uint8_t *a = (uint8_t *)(((uintptr_t)p + al - 1) & ~(uintptr_t)(al - 1));

	if (a > p)
		munmap(p, a - p);
	munmap(a + len, (p + len + al) - (a + len));
	madvise(a, len, MADV_HUGEPAGE);
	return (uint64_t *)(void *)a;
}

static uint64_t *map_ctr(uint64_t entries)
{
	void *p = mmap(NULL, (entries * 8 + PCW_PAGE - 1) / PCW_PAGE * PCW_PAGE,
		       PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* The write of step N into the slots S (real or shadow). */
static void do_step(struct slot *s, uint64_t n)
{
	uint64_t h = mix(seed ^ mix(n)), live = 0, pick, total = 0;

	for (int i = 0; i < PCW_SLOTS; i++)
		if (s[i].mem) {
			live++;
			total += s[i].pages;
		}
	if (!total)
		return;
	pick = h % (hot && hot < total ? hot : total);
	for (int i = 0; i < PCW_SLOTS; i++) {
		if (!s[i].mem)
			continue;
		if (pick < s[i].pages) {
			uint64_t *pg = s[i].mem + pick * PCW_WORDS;
			unsigned w = 1 + (unsigned)((h >> 40) % (PCW_WORDS - 1));

			pg[w] = mix(n) | 1;
			pg[0]++;
			s[i].ctr[pick]++;
			return;
		}
		pick -= s[i].pages;
	}
	(void)live;
}

/* Apply event E to the slots S; the real process (REAL) maps, the shadow allocates. */
static int apply(struct slot *s, const struct event *e, bool real)
{
	struct slot *t = &s[e->slot];

	switch (e->kind) {
	case EV_NEW:
	case EV_THP:
		/* The shadow maps too: its pages go back at the end, not into the heap. */
		t->mem = map_pages(e->a, real && e->kind == EV_THP);
		t->pages = e->a;
		t->ctr_pages = PCW_MAXPAGES;
		t->ctr = map_ctr(t->ctr_pages);
		if (!t->mem || !t->ctr)
			return -1;
		/* Every page starts with data: most of it stays unwritten, in the parent. */
		for (uint64_t p = 0; p < t->pages; p++)
			for (unsigned w = 1; w < PCW_WORDS; w += 7)
				t->mem[p * PCW_WORDS + w] = mix(seed ^ ((uint64_t)e->slot << 48) ^
							       (p << 12) ^ w);
		return 0;
	case EV_GROW: {
		void *p = mremap(t->mem, t->pages * PCW_PAGE, e->a * PCW_PAGE, MREMAP_MAYMOVE);

		if (p == MAP_FAILED)
			return -1;
		t->mem = p;
		t->pages = e->a;
		return 0;
	}
	case EV_MOVE:
		if (real) {
			/* Somewhere else: reserve a new place, move over it. */
			void *to = mmap(NULL, t->pages * PCW_PAGE, PROT_NONE,
					MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			void *p;

			if (to == MAP_FAILED)
				return -1;
			p = mremap(t->mem, t->pages * PCW_PAGE, t->pages * PCW_PAGE,
				   MREMAP_MAYMOVE | MREMAP_FIXED, to);
			if (p == MAP_FAILED)
				return -1;
			t->mem = p;
		}
		return 0;
	case EV_DROP:
		if (real)
			return madvise(t->mem + e->a * PCW_WORDS, (e->b - e->a) * PCW_PAGE,
				       MADV_DONTNEED);
		memset(t->mem + e->a * PCW_WORDS, 0, (e->b - e->a) * PCW_PAGE);
		return 0;
	case EV_PROTECT:
		if (real && (mprotect(t->mem, t->pages * PCW_PAGE, PROT_READ) < 0 ||
			     mprotect(t->mem, t->pages * PCW_PAGE, PROT_READ | PROT_WRITE) < 0))
			return -1;
		return 0;
	case EV_UNMAP:
		munmap(t->mem, t->pages * PCW_PAGE);
		munmap(t->ctr, (t->ctr_pages * 8 + PCW_PAGE - 1) / PCW_PAGE * PCW_PAGE);
		t->mem = NULL;
		t->ctr = NULL;
		return 0;
	case EV_FORK:
		return 0;	/* the child's writes stay in the child */
	}
	return -1;
}

/*
 * Replay everything up to step N into a shadow and compare it with the slots.
 * First, every slot and counter area must still be mapped whole (msync says
 * ENOMEM otherwise): the shadow's own maps could land where one was lost,
 * and be read in its place.
 */
static int verify(uint64_t n, char *why, size_t len)
{
	struct slot sh[PCW_SLOTS];
	unsigned k = 0;
	int ret = 0;

	for (int s = 0; s < PCW_SLOTS; s++)
		if (slots[s].mem && (msync(slots[s].mem, slots[s].pages * PCW_PAGE, MS_ASYNC) < 0 ||
				     msync(slots[s].ctr, (slots[s].ctr_pages * 8 + PCW_PAGE - 1) /
					   PCW_PAGE * PCW_PAGE, MS_ASYNC) < 0)) {
			snprintf(why, len, "slot %d: not mapped whole: %s", s, strerror(errno));
			return -1;
		}
	memset(sh, 0, sizeof(sh));
	for (uint64_t i = 0; i <= n; i++) {
		while (k < nevents && events[k].step == i)
			if (apply(sh, &events[k++], false) < 0) {
				snprintf(why, len, "replay of event %u failed", k - 1);
				return -1;
			}
		if (i < n)
			do_step(sh, i);
	}
	if (k != nevents) {
		snprintf(why, len, "event %u of %u is at step %" PRIu64 ", after %" PRIu64, k,
			 nevents, events[k].step, n);
		return -1;
	}
	for (int s = 0; s < PCW_SLOTS && !ret; s++) {
		if (!sh[s].mem != !slots[s].mem || sh[s].pages != slots[s].pages) {
			snprintf(why, len, "slot %d: layout differs", s);
			ret = -1;
			break;
		}
		if (!sh[s].mem)
			continue;
		for (uint64_t p = 0; p < sh[s].pages && !ret; p++) {
			if (sh[s].ctr[p] != slots[s].ctr[p]) {
				snprintf(why, len, "slot %d page %" PRIu64 " counter: got %" PRIu64
					 " want %" PRIu64, s, p, slots[s].ctr[p], sh[s].ctr[p]);
				ret = -1;
			}
			if (slots[s].mem + p * PCW_WORDS == guard_page) {
				uint64_t x;
				struct iovec l = { &x, sizeof(x) }, r = { guard_page, sizeof(x) };

				if (process_vm_readv(getpid(), &l, 1, &r, 1, 0) >= 0 || errno != EFAULT) {
					snprintf(why, len, "slot %d page %" PRIu64 ": its guard marker is "
						 "gone (it reads)", s, p);
					ret = -1;
				}
				continue;
			}
			for (unsigned w = 0; w < PCW_WORDS && !ret; w++)
				if (sh[s].mem[p * PCW_WORDS + w] != slots[s].mem[p * PCW_WORDS + w]) {
					snprintf(why, len, "slot %d page %" PRIu64 " word %u: got 0x%"
						 PRIx64 " want 0x%" PRIx64, s, p, w,
						 slots[s].mem[p * PCW_WORDS + w],
						 sh[s].mem[p * PCW_WORDS + w]);
					ret = -1;
				}
		}
	}
	for (int s = 0; s < PCW_SLOTS; s++)
		if (sh[s].mem) {
			munmap(sh[s].mem, sh[s].pages * PCW_PAGE);
			munmap(sh[s].ctr, (sh[s].ctr_pages * 8 + PCW_PAGE - 1) / PCW_PAGE * PCW_PAGE);
		}
	return ret;
}

/* Record and make the next change of the cycle. */
static void change(void)
{
	static const uint32_t cycle[] = { EV_NEW, EV_DROP, EV_GROW, EV_MOVE, EV_PROTECT, EV_FORK,
					  EV_THP, EV_UNMAP };
	static const char *const names[] = { "", "new", "grow", "move", "drop", "protect", "fork",
					     "unmap", "thp" };
	struct event e = { .step = step, .kind = cycle[next_change++ % 8] };
	int last = 0, free_slot = -1;

	for (int i = 0; i < PCW_SLOTS; i++) {
		if (slots[i].mem)
			last = i;
		else if (free_slot < 0)
			free_slot = i;
	}
	switch (e.kind) {
	case EV_NEW:
	case EV_THP:
		if (free_slot < 0 || nevents == PCW_EVENTS) {
			logf_("change %s skipped\n", names[e.kind]);
			return;
		}
		e.slot = (uint32_t)free_slot;
		e.a = e.kind == EV_THP ? 1024 : 64;
		break;
	case EV_GROW:
		e.slot = (uint32_t)last;
		e.a = slots[last].pages + 64;
		break;
	case EV_DROP:
		e.slot = (uint32_t)last;
		e.a = slots[last].pages / 3;
		e.b = e.a + slots[last].pages / 3 + 1;
		break;
	case EV_UNMAP:
		if (last == 0) {
			logf_("change unmap skipped\n");
			return;
		}
		e.slot = (uint32_t)last;
		break;
	default:
		e.slot = (uint32_t)last;
		break;
	}
	if (nevents == PCW_EVENTS) {
		logf_("change %s skipped (log full)\n", names[e.kind]);
		return;
	}
	if (apply(slots, &e, true) < 0) {
		logf_("change %s failed: %s\n", names[e.kind], strerror(errno));
		return;
	}
	events[nevents++] = e;
	if (e.kind == EV_FORK) {
		pid_t c = fork();
		int st;

		if (c == 0) {
			char why[256];

			fork_maps();
			for (int i = 0; i < PCW_SLOTS; i++)
				for (uint64_t p = 0; slots[i].mem && p < slots[i].pages; p++)
					slots[i].mem[p * PCW_WORDS + 1] ^= 1;
			for (int i = 0; i < PCW_SLOTS; i++)
				for (uint64_t p = 0; slots[i].mem && p < slots[i].pages; p++)
					slots[i].mem[p * PCW_WORDS + 1] ^= 1;
			_exit(verify(step, why, sizeof(why)) == 0 && sleeper_ok() ? 0 : 3);
		}
		while (c > 0 && waitpid(c, &st, 0) < 0 && errno == EINTR)
			;
		if (c < 0)
			logf_("fork bad: %s\n", strerror(errno));
		else if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			logf_("fork ok\n");
		else
			logf_("fork bad 0x%x\n", st);
	}
	logf_("change %s\n", names[e.kind]);
}

int main(int argc, char **argv)
{
	uint64_t pages = 1024;
	const char *log = NULL;
	bool thp = false, with_sleeper = false, with_seccomp = false, exec_on_hup = false;
	bool sleeper_seccomp = false, ksm = false;
	struct sigaction sa;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--log") && i + 1 < argc)
			log = argv[++i];
		else if (!strcmp(argv[i], "--pages") && i + 1 < argc)
			pages = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--hot") && i + 1 < argc)
			hot = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--fast"))
			fast = true;
		else if (!strcmp(argv[i], "--thp"))
			thp = true;
		else if (!strcmp(argv[i], "--sleeper"))
			with_sleeper = true;
		else if (!strcmp(argv[i], "--seccomp"))
			with_seccomp = true;
		else if (!strcmp(argv[i], "--seccomp-sleeper"))
			with_sleeper = sleeper_seccomp = true;
		else if (!strcmp(argv[i], "--ksm"))
			ksm = true;
		else if (!strcmp(argv[i], "--exec-on-hup"))
			exec_on_hup = true;
		else {
			fprintf(stderr, "pcwriter: bad argument %s\n", argv[i]);
			return 2;
		}
	}
	if (!log || !pages || pages > PCW_MAXPAGES / 2) {
		fprintf(stderr, "usage: pcwriter --log FILE [--pages N] [--seed S] [--hot H] [--thp] "
			"[--fast] [--sleeper] [--seccomp] [--seccomp-sleeper] [--ksm] "
			"[--exec-on-hup]\n");
		return 2;
	}
	logfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return 2;
	events[0] = (struct event){ 0, thp ? EV_THP : EV_NEW, 0, pages, 0 };
	if (apply(slots, &events[0], true) < 0)
		return 2;
	nevents = 1;
	if (with_sleeper && start_sleeper(sleeper_seccomp) < 0)
		return 2;
	if (ksm && madvise(slots[0].mem, slots[0].pages * PCW_PAGE, MADV_MERGEABLE) < 0)
		return 2;
	if (with_seccomp && allow_all_seccomp() < 0)
		return 2;
	memset(&sa, 0, sizeof(sa));
	sa.sa_flags = SA_RESTART;
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	sa.sa_handler = on_flags;
	sigaction(SIGWINCH, &sa, NULL);
	sigaction(SIGURG, &sa, NULL);
	sigaction(SIGXCPU, &sa, NULL);
	sigaction(SIGPWR, &sa, NULL);
	sigaction(SIGVTALRM, &sa, NULL);
	sigaction(SIGPROF, &sa, NULL);
	if (exec_on_hup) {
		sa.sa_handler = on_hup;
		sigaction(SIGHUP, &sa, NULL);
	}
	printf("ready pid=%d\n", (int)getpid());
	fflush(stdout);
	for (;;) {
		struct timespec ms = { 0, 1000000 };

		for (int i = 0; i < PCW_BATCH; i++)
			do_step(slots, step++);
		if (want_change) {
			want_change = 0;
			change();
		}
		if (want_flags) {
			int sig = want_flags;
			uintptr_t a, b;
			uint64_t *last = slots[0].mem + (slots[0].pages - 1) * PCW_WORDS;

			want_flags = 0;
			if (!area_of(slots[0].mem, &a, &b))
				logf_("flags failed: slot 0 not in maps\n");
			else if (sig == SIGPWR && (!hot || hot >= slots[0].pages))
				logf_("flags failed: the last page of slot 0 is in the hot set\n");
			else if (sig == SIGPWR ? madvise(last, PCW_PAGE, PCW_MADV_GUARD_INSTALL) :
				 sig == SIGURG ? mlock((void *)a, b - a) :
				 sig == SIGVTALRM ? uffd_elsewhere(a, b) :
				 madvise((void *)a, b - a, sig == SIGXCPU ? MADV_WIPEONFORK :
					 sig == SIGPROF ? MADV_DONTFORK : MADV_NOHUGEPAGE))
				logf_("flags failed: %s\n", strerror(errno));
			else {
				if (sig == SIGPWR)
					guard_page = last;
				logf_("flags %s\n", sig == SIGPWR ? "guard" : sig == SIGURG ? "mlock" :
				      sig == SIGVTALRM ? "uffd" : sig == SIGPROF ? "dontfork" :
				      sig == SIGXCPU ? "wipeonfork" : "nohugepage");
			}
		}
		if (want_verify) {
			char why[256];

			want_verify = 0;
			if (!sleeper_ok())
				logf_("verify bad: the sleeper's stack area changed\n");
			else if (verify(step, why, sizeof(why)) == 0)
				logf_("verify ok %" PRIu64 "\n", step);
			else
				logf_("verify bad %s\n", why);
		}
		if (!fast)
			nanosleep(&ms, NULL);
	}
}
