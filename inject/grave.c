/*
 * The hand-over's drop of big areas, taken out of the freeze: the graveyard
 * and its dropper thread (grave.h says why and how).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "grave.h"
#include "log.h"
#include "pagemap.h"
#include "procfs.h"
#include "ptrace.h"
#include "uffd_compat.h"
#include "why.h"

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP	4
#endif
#ifndef PIDFD_THREAD
#define PIDFD_THREAD		O_EXCL
#endif

#define GRAVE_PAGE	4096ull
#define GRAVE_HUGE	(2ull << 20)
#define GRAVE_NONCE	160	/* where the nonce starts in the code page */
#define GRAVE_CHUNK	(64u << 20)	/* bytes the dropper empties per MADV_DONTNEED */
#define GRAVE_SENTINEL	1	/* the data word before the dropper writes munmap's result */

/* Threads made like pthread_create's, without its TLS and tid bookkeeping. */
#define GRAVE_CLONE	(CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | \
			 CLONE_SYSVSEM)

static uint64_t up(uint64_t x, uint64_t a)
{
	return (x + a - 1) & ~(a - 1);
}

static double since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (t.tv_nsec - t0->tv_nsec) / 1e9;
}

static int gfail(struct grave *g, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int gfail(struct grave *g, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(g->why, sizeof(g->why), fmt, ap);
	va_end(ap);
	return -code;
}

/* Run a syscall in the frozen target; -errno when injecting failed, else 0 with *RET. */
static int tsys(struct grave *g, struct pt *pt, long *ret, const char *what, long nr, long a1,
		long a2, long a3, long a4, long a5, long a6)
{
	int r = pt_syscall(pt, ret, nr, a1, a2, a3, a4, a5, a6);

	if (r == -ESRCH)
		return gfail(g, ESRCH, "the process exited during the hand-over");
	if (r < 0)
		return gfail(g, -r, "cannot run %s in it: %s", what, strerror(-r));
	return 0;
}

void grave_init(struct grave *g, pid_t pid)
{
	memset(g, 0, sizeof(*g));
	g->pid = pid;
	g->dfd = -1;
	g->dropped = GRAVE_SENTINEL;
	g->wait_s = -1;
}

/* Can we wait for one thread's end (pidfd_open with PIDFD_THREAD, Linux 6.9)? */
static bool have_pidfd_thread(void)
{
	int fd = (int)syscall(SYS_pidfd_open, getpid(), PIDFD_THREAD);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/*
 * Does VmFlags say "gu" for an area that may hold guard markers? Linux 6.13
 * brought MADV_GUARD_INSTALL, and only later kernels (6.18 here) the flag:
 * in between, an area's guard markers cannot be seen without walking it.
 */
static bool guards_shown(void)
{
	struct utsname u;
	int major = 0, minor = 0;

	if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &major, &minor) != 2)
		return false;
	return major > 6 || (major == 6 && (minor < 13 || minor >= 18));
}

/*
 * Has any thread of PID a seccomp filter (or cannot it be told)? Filters
 * are per thread: the dropper inherits the one of the thread that runs its
 * clone(), and the thread stopped to unmap its code may be any.
 */
static bool any_seccomp(pid_t pid)
{
	char path[96];
	struct dirent *de;
	bool any = false;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (!d)
		return true;
	while (!any && (de = readdir(d))) {
		long long sc;

		if (atoi(de->d_name) <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%d/status", (int)pid, atoi(de->d_name));
		/* A thread gone meanwhile has no say (the target is frozen: it exited before). */
		if (procfs_field_num(path, "Seccomp", &sc) == 0 && sc != 0)
			any = true;
	}
	closedir(d);
	return any;
}

int grave_plan(struct grave *g, const struct dump_held *h)
{
	size_t guarded = 0;
	uint64_t *lazy;

	if (getenv("UFFD_INJECT_TEST_NO_GRAVEYARD")) {
		g->skip = "UFFD_INJECT_TEST_NO_GRAVEYARD is set";
		return 0;
	}
	/* The dropper's munmap and exit would meet the filter, which may kill the process. */
	if (any_seccomp(g->pid)) {
		g->skip = "it has a seccomp filter, which a thread added to it would run under";
		return 0;
	}
	if (!have_pidfd_thread()) {
		g->skip = "this kernel cannot wait for one thread (no PIDFD_THREAD)";
		return 0;
	}
	if (!h->guarded || !guards_shown() || !h->merged) {
		g->skip = "this kernel does not show guard regions in VmFlags";
		return 0;
	}
	lazy = calloc(h->nvmas ? h->nvmas : 1, sizeof(*lazy));
	g->p = calloc(h->nvmas ? h->nvmas : 1, sizeof(*g->p));
	if (!lazy || !g->p) {
		free(lazy);
		return -ENOMEM;
	}
	for (size_t i = 0; i < h->npe; i++)
		if (h->pe[i].flags & PE_LAZY)
			lazy[h->pe[i].area] += h->pe[i].nr;
	for (size_t i = 0; i < h->nvmas; i++) {
		const VmaEntry *v = &h->vmas[i];
		const struct dump_area *a = &h->areas[i];

		/*
		 * Only what the in-freeze drop would empty: anonymous private
		 * areas with lazy pages. Not hugetlb (other alignment rules), not
		 * a stack that grows down (a move makes the kernel see another
		 * stack), not one that may hold guard markers (they would move
		 * with the pages and the area lose them), not one KSM may merge
		 * (a move unmerges every shared page first, copying each, in
		 * the freeze), and not a small one: dropping it in the freeze
		 * costs less than moving it.
		 */
		if (a->kind != DUMP_ANON || !(a->pe_flags & PE_LAZY) || a->hpage ||
		    (v->flags & MAP_GROWSDOWN) || (v->status & 2 /* VMA_AREA_STACK */) ||
		    h->merged[i] || lazy[i] < GRAVE_MIN_PAGES)
			continue;
		if (h->guarded[i]) {
			guarded++;
			continue;
		}
		g->p[g->n++] = (struct grave_piece){ v->start, v->end, 0, (uint32_t)i, lazy[i],
			v->has_madv && (v->madv & (1ull << MADV_DONTFORK)) };
	}
	free(lazy);
	/* Said apart: the tests must tell "not moved for its guards" from "too small". */
	if (!g->n)
		g->skip = guarded ? "the areas big enough may hold guard markers, which a move "
				    "would take away" : "no area holds 2 MiB of lazy pages";
	return (int)g->n;
}

/* Register [START, END) in MODE on UFD, and take it out again unless KEEP; -errno. */
static int try_register(int ufd, uint64_t start, uint64_t end, uint64_t mode, bool keep)
{
	struct uffdio_register r = { .range = { start, end - start }, .mode = mode };
	struct uffdio_range all = { start, end - start };

	if (ioctl(ufd, UFFDIO_REGISTER, &r) < 0)
		return -errno;
	if (!keep)
		ioctl(ufd, UFFDIO_UNREGISTER, &all);
	return 0;
}

int grave_probe(struct grave *g, int ufd, int tufd)
{
	size_t kept = 0;

	for (size_t k = 0; k < g->n; k++) {
		const struct grave_piece *p = &g->p[k];
		/* MISSING mode: no page-table walk either way, microseconds. */
		int r = try_register(ufd, p->start, p->end, UFFDIO_REGISTER_MODE_MISSING, false);

		/*
		 * Busy: another userfaultfd holds it, the tracker's or not. The
		 * tracker takes the same registration again (the same context,
		 * the same mode: nothing changes); any other refuses it too.
		 */
		if (r == -EBUSY && tufd >= 0 &&
		    try_register(tufd, p->start, p->end, UFFDIO_REGISTER_MODE_WP, true) == 0)
			r = 0;
		if (r == -EBUSY) {
			g->n = 0;
			return gfail(g, EBUSY, "0x%" PRIx64 "-0x%" PRIx64 " has been registered "
				     "with a userfaultfd of its own since its areas were read (one "
				     "its fd table does not show: held by another process?): not "
				     "handed over, nothing moved; its registration stays",
				     p->start, p->end);
		}
		/* Anything else: not ours to know; it stays and is dropped in the freeze. */
		if (r == 0)
			g->p[kept++] = *p;
	}
	g->n = kept;
	if (!kept)
		g->skip = "no area could be registered";
	return (int)kept;
}

bool grave_has(const struct grave *g, uint32_t area)
{
	for (size_t k = 0; k < g->n; k++)
		if (g->p[k].area == area)
			return true;
	return false;
}

uint64_t grave_where(const struct grave *g, uint64_t addr)
{
	for (size_t k = 0; k < g->n; k++)
		if (addr >= g->p[k].start && addr < g->p[k].end)
			return g->p[k].at + (addr - g->p[k].start);
	return 0;
}

/* Unmap the reservation (nothing of ours left in the target). */
static int unreserve(struct grave *g, struct pt *pt)
{
	long r;
	int ret;

	if (!g->len)
		return 0;
	ret = tsys(g, pt, &r, "munmap()", SYS_munmap, (long)g->base, (long)g->len, 0, 0, 0, 0);
	if (ret < 0)
		return ret;
	if (r < 0)
		return gfail(g, (int)-r, "munmap(0x%" PRIx64 ", %" PRIu64 ") of the graveyard: %s",
			     g->base, g->len, strerror((int)-r));
	g->base = g->len = 0;
	return 0;
}

/*
 * Read each piece's MADV_DONTFORK again from the empty area the move left
 * in its place (MREMAP_DONTUNMAP keeps its flags, as they were at the
 * freeze): the read before the freeze may be behind, and the piece itself
 * took the graveyard's. A whole smaps walk, but only for a failed hand-over.
 * When it cannot be read, the read before the freeze stands.
 */
static void frozen_dontfork(struct grave *g)
{
	struct procfs_maps m;
	char why[256];

	g->dc_read = true;
	if (procfs_read_smaps(g->pid, &m, why, sizeof(why)) < 0)
		return;
	for (size_t k = 0; k < g->n; k++)
		for (size_t i = 0; i < m.n; i++)
			if (m.v[i].start <= g->p[k].start && g->p[k].start < m.v[i].end)
				g->p[k].dontfork = (m.v[i].vmflags & PFV_DC) != 0;
	procfs_maps_free(&m);
}

int grave_put_back(struct grave *g, struct pt *pt, size_t k)
{
	const struct grave_piece *p = &g->p[k];
	long r;
	int ret;

	if (g->forkless && !g->dc_read)
		frozen_dontfork(g);
	ret = tsys(g, pt, &r, "mremap()", SYS_mremap, (long)p->at, (long)(p->end - p->start),
		   (long)(p->end - p->start), MREMAP_MAYMOVE | MREMAP_FIXED, (long)p->start, 0);
	if (ret < 0)
		return ret;
	if (r < 0)
		return gfail(g, (int)-r, "cannot move 0x%" PRIx64 "-0x%" PRIx64 " back from the "
			     "graveyard: %s", p->start, p->end, strerror((int)-r));
	/* It comes back with the graveyard's MADV_DONTFORK: a child must get it again. */
	if (!g->forkless || p->dontfork)
		return 0;
	ret = tsys(g, pt, &r, "madvise()", SYS_madvise, (long)p->start,
		   (long)(p->end - p->start), MADV_DOFORK, 0, 0, 0);
	if (ret == 0 && r < 0)
		ret = gfail(g, (int)-r, "madvise(MADV_DOFORK) of 0x%" PRIx64 "-0x%" PRIx64 ": %s",
			    p->start, p->end, strerror((int)-r));
	return ret;
}

int grave_reserve(struct grave *g, struct pt *pt)
{
	uint64_t need = GRAVE_HUGE;
	long r;
	int ret;

	if (!g->n)
		return 0;
	for (size_t k = 0; k < g->n; k++)
		need += up((g->p[k].start & (GRAVE_HUGE - 1)) + (g->p[k].end - g->p[k].start),
			   GRAVE_HUGE);
	/* Address space only: the moved pages bring their own charge. */
	ret = tsys(g, pt, &r, "mmap()", SYS_mmap, 0, (long)need, PROT_NONE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (ret < 0)
		return ret;
	if (r < 0 && r > -4096) {
		g->skip = "no room for a graveyard (mmap failed)";
		g->n = 0;
		return 0;
	}
	g->base = (uint64_t)r;
	g->len = need;
	return 0;
}

/*
 * Move one area to AT with mremap in the frozen target; *RET its result.
 * Tests: UFFD_INJECT_TEST_FAIL_MOVE=K fails the Kth as the kernel can, the
 * destination unmapped first, then ENOMEM.
 */
static int move_one(struct grave *g, struct pt *pt, long *r, uint64_t start, uint64_t len,
		    uint64_t at, int *nth)
{
	const char *fail = getenv("UFFD_INJECT_TEST_FAIL_MOVE");
	int ret;

	if (fail && ++*nth == atoi(fail)) {
		ret = tsys(g, pt, r, "munmap()", SYS_munmap, (long)at, (long)len, 0, 0, 0, 0);
		*r = -ENOMEM;
		return ret;
	}
	return tsys(g, pt, r, "mremap()", SYS_mremap, (long)start, (long)len, (long)len,
		    MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, (long)at, 0);
}

/* Undo grave_dig: every piece back where it was, no graveyard; the drop goes on in the freeze. */
static int dig_undo(struct grave *g, struct pt *pt, const char *skip)
{
	int ret;

	while (g->n) {
		ret = grave_put_back(g, pt, g->n - 1);
		if (ret < 0)
			return ret;
		g->n--;
	}
	g->moved_pages = 0;
	g->skip = skip;
	return unreserve(g, pt);
}

int grave_dig(struct grave *g, struct pt *pt)
{
	char first[160] = "";
	bool holed = false;
	uint64_t cur;
	size_t kept = 0;
	int ret, nth = 0;
	long r;

	if (!g->n || !g->len)
		return 0;
	cur = up(g->base, GRAVE_HUGE);
	for (size_t k = 0; k < g->n; k++) {
		struct grave_piece p = g->p[k];
		uint64_t len = p.end - p.start;

		p.at = cur + (p.start & (GRAVE_HUGE - 1));
		cur = up(p.at + len, GRAVE_HUGE);
		ret = move_one(g, pt, &r, p.start, len, p.at, &nth);
		if (ret < 0) {
			g->n = kept;	/* what is moved so far */
			return ret;
		}
		if (r < 0 && r > -4096) {
			if (!first[0])
				snprintf(first, sizeof(first), "mremap of 0x%" PRIx64 "-0x%" PRIx64
					 ": %s", p.start, p.end, strerror((int)-r));
			/*
			 * Left where it is, dropped in the freeze. But mremap
			 * with MREMAP_FIXED unmaps the destination before its
			 * last checks (the map count, the charge under strict
			 * overcommit): [at, at + len) may be a hole in the
			 * graveyard now, where the target's next mmap could
			 * land and the dropper would free it. Reserved again
			 * while frozen, nothing else can have taken it.
			 */
			ret = tsys(g, pt, &r, "mmap()", SYS_mmap, (long)p.at, (long)len, PROT_NONE,
				   MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
			if (ret < 0) {
				g->n = kept;
				return ret;
			}
			if (r < 0 && r > -4096)
				holed = true;
			continue;
		}
		g->p[kept++] = p;
	}
	g->n = kept;
	for (size_t k = 0; k < g->n; k++)
		g->moved_pages += g->p[k].pages;
	if (!kept) {
		snprintf(g->why, sizeof(g->why), "%s", first);
		g->skip = "no area could be moved (mremap failed)";
		return unreserve(g, pt);
	}
	/* A graveyard with a hole must not outlive the freeze: the dropper would free the hole. */
	if (holed) {
		snprintf(g->why, sizeof(g->why), "%s; its place could not be reserved again", first);
		return dig_undo(g, pt, "a failed move left a hole in the graveyard");
	}
	/*
	 * A fork before the dropper is through must not copy the graveyard
	 * into the child. From here a piece may carry the graveyard's flag
	 * (a failed madvise may have set it on some): a move back must look.
	 */
	g->forkless = true;
	ret = tsys(g, pt, &r, "madvise()", SYS_madvise, (long)g->base, (long)g->len,
		   MADV_DONTFORK, 0, 0, 0);
	if (ret < 0)
		return ret;
	if (r < 0) {
		snprintf(g->why, sizeof(g->why), "madvise(MADV_DONTFORK): %s", strerror((int)-r));
		return dig_undo(g, pt, "the graveyard could not be kept from forks");
	}
	return 0;
}

/*
 * The dropper, x86_64. The injecting thread runs the clone at offset 0
 * (rip set there by ptrace) and is put back before it returns to user
 * space; the new thread starts at offset 2 with rax = 0 and the same
 * registers otherwise (its stack pointer too: it never touches the stack,
 * and with every signal blocked the kernel writes no frame there). SLEEP
 * (tests only): first nanosleep(SLEEP), a struct timespec in the data page.
 */
static size_t stub_code(uint8_t *c, uint64_t grave, uint64_t len, uint64_t result,
			uint64_t sleep, size_t *halt)
{
	uint32_t chunk = GRAVE_CHUNK;
	size_t n = 0, jnz, loop;
	uint64_t end;

	c[n++] = 0x0f; c[n++] = 0x05;			/* syscall (clone) */
	c[n++] = 0x48; c[n++] = 0x85; c[n++] = 0xc0;	/* test rax, rax */
	c[n++] = 0x75; jnz = n++;			/* jnz ud2: not the new thread */
	if (sleep) {
		c[n++] = 0x48; c[n++] = 0xbf;		/* mov rdi, sleep */
		memcpy(c + n, &sleep, 8);
		n += 8;
		c[n++] = 0x31; c[n++] = 0xf6;		/* xor esi, esi */
		c[n++] = 0xb8; c[n++] = SYS_nanosleep; c[n++] = 0; c[n++] = 0; c[n++] = 0;
		c[n++] = 0x0f; c[n++] = 0x05;		/* syscall (nanosleep) */
	}
	/*
	 * Empty it a chunk at a time first: MADV_DONTNEED holds the target's
	 * mmap lock for reading at most, where a munmap of the whole graveyard
	 * would hold it for writing while it frees every page, and stall the
	 * target's own mmap, munmap and fork all that time. The munmap of the
	 * emptied graveyard is then quick. Errors are left to the munmap.
	 */
	c[n++] = 0x48; c[n++] = 0xbf;			/* mov rdi, grave */
	memcpy(c + n, &grave, 8);
	n += 8;
	c[n++] = 0x49; c[n++] = 0xb8;			/* mov r8, grave + len */
	end = grave + len;
	memcpy(c + n, &end, 8);
	n += 8;
	loop = n;
	c[n++] = 0x4c; c[n++] = 0x89; c[n++] = 0xc6;	/* mov rsi, r8 */
	c[n++] = 0x48; c[n++] = 0x29; c[n++] = 0xfe;	/* sub rsi, rdi */
	c[n++] = 0x48; c[n++] = 0x81; c[n++] = 0xfe;	/* cmp rsi, GRAVE_CHUNK */
	memcpy(c + n, &chunk, 4);
	n += 4;
	c[n++] = 0x76; c[n++] = 5;			/* jbe over the next */
	c[n++] = 0xbe;					/* mov esi, GRAVE_CHUNK */
	memcpy(c + n, &chunk, 4);
	n += 4;
	c[n++] = 0xba; c[n++] = MADV_DONTNEED; c[n++] = 0; c[n++] = 0; c[n++] = 0; /* mov edx, */
	c[n++] = 0xb8; c[n++] = SYS_madvise; c[n++] = 0; c[n++] = 0; c[n++] = 0; /* mov eax, */
	c[n++] = 0x0f; c[n++] = 0x05;			/* syscall (madvise; rdi, rsi kept) */
	c[n++] = 0x48; c[n++] = 0x01; c[n++] = 0xf7;	/* add rdi, rsi */
	c[n++] = 0x4c; c[n++] = 0x39; c[n++] = 0xc7;	/* cmp rdi, r8 */
	c[n++] = 0x72; c[n] = (uint8_t)(loop - (n + 1)); n++;	/* jb loop */
	c[n++] = 0x48; c[n++] = 0xbf;			/* mov rdi, grave */
	memcpy(c + n, &grave, 8);
	n += 8;
	c[n++] = 0x48; c[n++] = 0xbe;			/* mov rsi, len */
	memcpy(c + n, &len, 8);
	n += 8;
	c[n++] = 0xb8; c[n++] = SYS_munmap; c[n++] = 0; c[n++] = 0; c[n++] = 0; /* mov eax, */
	c[n++] = 0x0f; c[n++] = 0x05;			/* syscall (munmap) */
	c[n++] = 0x48; c[n++] = 0xa3;			/* mov [result], rax */
	memcpy(c + n, &result, 8);
	n += 8;
	c[n++] = 0x31; c[n++] = 0xff;			/* xor edi, edi */
	c[n++] = 0xb8; c[n++] = SYS_exit; c[n++] = 0; c[n++] = 0; c[n++] = 0; /* mov eax, */
	*halt = n;	/* grave_finish's munmaps run here too: stub_sys() says why */
	c[n++] = 0x0f; c[n++] = 0x05;			/* syscall (exit: this thread only) */
	if (n - (jnz + 1) > 127)
		return SIZE_MAX;	/* past a short jump: taken as too long */
	c[jnz] = (uint8_t)(n - (jnz + 1));
	c[n++] = 0x0f; c[n++] = 0x0b;			/* ud2 */
	return n;
}

int grave_stub(struct grave *g, struct pt *pt)
{
	const char *delay = getenv("UFFD_INJECT_TEST_DROPPER_DELAY_MS");
	uint64_t word[3] = { GRAVE_SENTINEL, 0, 0 };
	size_t n, halt = 0;
	long r;
	int ret;

	ret = tsys(g, pt, &r, "mmap()", SYS_mmap, 0, 2 * GRAVE_PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ret < 0)
		return ret;
	if (r < 0 && r > -4096)
		return gfail(g, (int)-r, "mmap of the dropper's code: %s", strerror((int)-r));
	g->stub = (uint64_t)r;
	memset(g->code, 0, sizeof(g->code));
	/* Tests: the dropper sleeps first, so that a fork can come while the graveyard lives. */
	if (delay) {
		word[1] = (uint64_t)atoi(delay) / 1000;
		word[2] = (uint64_t)atoi(delay) % 1000 * 1000000;
	}
	/* Tests: the dropper's munmap fails (EINVAL: not aligned); grave_finish does it. */
	n = stub_code(g->code, g->base | !!getenv("UFFD_INJECT_TEST_DROPPER_MUNMAP_FAIL"),
		      g->len, g->stub + GRAVE_PAGE, delay ? g->stub + GRAVE_PAGE + 8 : 0, &halt);
	g->halt = g->stub + halt;
	if (n > GRAVE_NONCE || getrandom(g->code + GRAVE_NONCE, GRAVE_CODE - GRAVE_NONCE, 0) !=
	    GRAVE_CODE - GRAVE_NONCE)
		return gfail(g, EIO, "no nonce for the dropper's code");
	ret = pt_write(pt, g->stub, g->code, sizeof(g->code));
	if (ret == 0)
		ret = pt_write(pt, g->stub + GRAVE_PAGE, word, sizeof(word));
	if (ret < 0)
		return gfail(g, -ret, "writing the dropper's code: %s", strerror(-ret));
	/* Never writable and executable at once (W^X policies refuse that). */
	ret = tsys(g, pt, &r, "mprotect()", SYS_mprotect, (long)g->stub, GRAVE_PAGE,
		   PROT_READ | PROT_EXEC, 0, 0, 0);
	if (ret == 0 && r < 0)
		ret = gfail(g, (int)-r, "mprotect(PROT_EXEC) of the dropper's code: %s",
			    strerror((int)-r));
	if (ret == 0)
		ret = tsys(g, pt, &r, "madvise()", SYS_madvise, (long)g->stub, 2 * GRAVE_PAGE,
			   MADV_DONTFORK, 0, 0, 0);
	if (ret == 0 && r < 0)
		ret = gfail(g, (int)-r, "madvise(MADV_DONTFORK) of the dropper's code: %s",
			    strerror((int)-r));
	return ret;
}

/* Is TID a thread of PID now? */
static bool thread_of(pid_t pid, pid_t tid)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/task/%d", (int)pid, (int)tid);
	return access(path, F_OK) == 0;
}

/* Does PT hold thread TID? */
static bool held_by(const struct pt *pt, pid_t tid)
{
	for (int i = 0; i < pt->nr_threads; i++)
		if (pt->th[i].tid == tid)
			return true;
	return false;
}

/*
 * Thread TID of PID as its own pid namespace numbers it (the last NSpid
 * field), and whether it is a zombie; -1 when it cannot be read (gone, or a
 * kernel before 4.1 without NSpid).
 */
static pid_t inner_tid(pid_t pid, pid_t tid, bool *zombie)
{
	char path[80], line[256];
	pid_t inner = -1;
	FILE *f;

	*zombie = false;
	snprintf(path, sizeof(path), "/proc/%d/task/%d/status", (int)pid, (int)tid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char *p = line + 6, *end;

		if (!strncmp(line, "State:", 6))
			*zombie = strchr(line, 'Z') || strchr(line, 'X');
		if (strncmp(line, "NSpid:", 6))
			continue;
		/* "NSpid:\t12345\t7": ours first, the innermost namespace's last */
		for (long v = strtol(p, &end, 10); end != p; v = strtol(p, &end, 10)) {
			inner = (pid_t)v;
			p = end;
		}
	}
	fclose(f);
	return inner;
}

/*
 * The dropper's thread id as we see it, from the one clone() returned in the
 * target: in a pid namespace of its own (a container) they differ, and the
 * inner one names nothing here, or someone else. Every other thread of the
 * target is frozen in PT, so the dropper is the thread not held there (not
 * a zombie leader: its NSpid, when shown, must end with INNER). 0: none
 * (it has exited already).
 */
static pid_t host_tid(const struct grave *g, const struct pt *pt, pid_t inner)
{
	char path[64];
	struct dirent *de;
	pid_t found = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)g->pid);
	d = opendir(path);
	while (d && (de = readdir(d))) {
		pid_t t = (pid_t)atoi(de->d_name);
		bool zombie;
		pid_t in;

		if (t <= 0 || held_by(pt, t))
			continue;
		in = inner_tid(g->pid, t, &zombie);
		if (in == inner || (in < 0 && !zombie))
			found = t;
	}
	if (d)
		closedir(d);
	return found;
}

int grave_start(struct grave *g, struct pt *pt)
{
	const long args[6] = { GRAVE_CLONE, 0, 0, 0, 0, 0 };
	uint64_t all = ~0ull, old;
	long tid = 0;
	int ret, r2;

	if (!g->stub || !g->len)
		return gfail(g, EINVAL, "no graveyard or no stub");
	/* The new thread inherits this mask: it must take no signal, ever. */
	ret = pt_sigmask(pt, 0, &old, &all);
	if (ret < 0)
		return gfail(g, -ret, "PTRACE_SETSIGMASK: %s", strerror(-ret));
	ret = pt_syscall_at(pt, 0, g->stub, &tid, SYS_clone, args);
	r2 = pt_sigmask(pt, 0, NULL, &old);
	if (ret < 0)
		return gfail(g, -ret, "cannot run clone() in it: %s", strerror(-ret));
	if (r2 < 0)
		return gfail(g, -r2, "PTRACE_SETSIGMASK (putting its mask back): %s",
			     strerror(-r2));
	if (tid <= 0)
		return gfail(g, (int)-tid, "clone() of the dropper thread: %s", strerror((int)-tid));
	g->inner = (pid_t)tid;
	tid = host_tid(g, pt, (pid_t)tid);
	g->dropper = tid ? (pid_t)tid : g->inner;
	if (!tid) {
		g->dead = 1;	/* ended already; grave_finish checks its word all the same */
		return 0;
	}
	/*
	 * Its end must be known for sure: its code is unmapped only then. It
	 * may be done already, and its tid taken by another process (not by
	 * the target, which is frozen): a pidfd is its own only if, once
	 * opened, the tid is still a thread of the target.
	 */
	g->dfd = (int)syscall(SYS_pidfd_open, (pid_t)tid, PIDFD_THREAD);
	if (g->dfd < 0 && errno != ESRCH && errno != EINVAL && errno != ENOENT) {
		g->dead = -1;	/* cannot say: its code stays */
		return 0;
	}
	if (g->dfd >= 0 && !thread_of(g->pid, (pid_t)tid)) {
		close(g->dfd);
		g->dfd = -1;
	}
	g->dead = g->dfd < 0;
	return 0;
}

int grave_bury(struct grave *g, struct pt *pt)
{
	long r;
	int ret = unreserve(g, pt);

	g->n = 0;
	if (ret == 0 && g->stub) {
		ret = tsys(g, pt, &r, "munmap()", SYS_munmap, (long)g->stub, 2 * GRAVE_PAGE, 0, 0,
			   0, 0);
		if (ret == 0 && r < 0)
			ret = gfail(g, (int)-r, "munmap of the dropper's code: %s", strerror((int)-r));
		if (ret == 0)
			g->stub = 0;
	}
	return ret;
}

/* Is the stub still ours in the mm of the stopped PT: its code page, byte for byte? */
static bool stub_is_ours(struct grave *g, struct pt *pt)
{
	uint8_t now[GRAVE_CODE];

	return pt_read(pt, g->stub, now, sizeof(now)) == 0 && !memcmp(now, g->code, sizeof(now));
}

/*
 * munmap(ADDR, LEN) in the thread held in PT, run at the stub's last
 * syscall instruction, the exit's (the stub just checked to be ours, byte
 * for byte): a thread stopped for the purpose has no syscall instruction
 * known yet, and looking for one reads its maps and its vdso while it is
 * held. The thread is stopped at the call's exit and its registers put
 * back; it runs none of our code, unless we are killed in between
 * (ptrace_inject.c): then it goes on after the instruction with our
 * registers. There the stub has a ud2: the process dies of SIGILL, as it
 * would, one way or another, on the vdso's code (where such a call used to
 * run), and never runs the dropper's code on (from the clone's syscall
 * instruction it would: drop and unmap the graveyard's range, where the
 * running target may have mapped since, then exit, silently the last
 * thread). After the stub's own munmap, the ud2 is gone: SIGSEGV.
 */
static int stub_sys(struct grave *g, struct pt *pt, long *r, long addr, long len)
{
	const long args[6] = { addr, len, 0, 0, 0, 0 };
	const char *die = getenv("UFFD_INJECT_TEST_DIE_IN_MUNMAP");
	int ret;

	/* Tests: killed in the call's window, of the graveyard (G) or of the stub (S). */
	pt->test_die = die && *die == ((uint64_t)addr == g->stub ? 'S' : 'G');
	ret = pt_syscall_at(pt, 0, g->halt, r, SYS_munmap, args);

	if (ret == -ESRCH)
		return gfail(g, ESRCH, "the process exited during the hand-over");
	if (ret < 0)
		return gfail(g, -ret, "cannot run munmap() in it: %s", strerror(-ret));
	return 0;
}

/* Stop one thread of the target for the stub's removal: the leader, else any. */
static int stop_one(struct grave *g, struct pt *pt)
{
	char path[64], why[256] = "";
	struct dirent *de;
	int ret;
	DIR *d;

	ret = pt_seize_thread(pt, g->pid, g->pid, why, sizeof(why));
	if (ret == 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)g->pid);
	d = opendir(path);
	if (!d) {
		g->stub = 0;	/* gone with it */
		return gfail(g, ESRCH, "it exited");
	}
	while ((de = readdir(d))) {
		pid_t tid = (pid_t)atoi(de->d_name);

		if (tid <= 0 || tid == g->pid || tid == g->dropper)
			continue;
		ret = pt_seize_thread(pt, g->pid, tid, why, sizeof(why));
		if (ret == 0)
			break;
	}
	closedir(d);
	if (ret < 0 && kill(g->pid, 0) < 0 && errno == ESRCH) {
		g->stub = 0;	/* gone with it */
		return gfail(g, ESRCH, "it exited");
	}
	return ret == 0 ? 0 : gfail(g, -ret, "%s", why[0] ? why : "no thread to stop");
}

int grave_finish(struct grave *g, int ms, struct pt *held)
{
	struct timespec t0, t1;
	struct pt own, *pt = held ? held : &own;
	int ret, left = 0;
	long r;

	if (!g->stub)
		return 0;
	if (g->dead < 0)
		return gfail(g, EBADF, "its dropper thread %d could not be watched; its 8 KiB at "
			     "0x%" PRIx64 " stay", (int)g->dropper, g->stub);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (g->dfd >= 0) {
		struct pollfd p = { .fd = g->dfd, .events = POLLIN };

		while ((ret = poll(&p, 1, ms)) < 0 && errno == EINTR)
			;
		if (ret == 0)
			return gfail(g, ETIMEDOUT, "its dropper thread %d did not end within %d ms "
				     "(is it stopped?); the dropper's 8 KiB at 0x%" PRIx64 " stay",
				     (int)g->dropper, ms, g->stub);
	}
	if (g->dfd >= 0)
		g->wait_s = since(&t0);	/* else not waited for: it had ended at its start */
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (!held) {
		ret = stop_one(g, pt);
		if (ret < 0)
			return ret;
	}
	log_debug("pid %d: one thread stopped in %.3f ms", (int)g->pid, since(&t1) * 1e3);
	if (!stub_is_ours(g, pt)) {
		/* An exec: a new mm, where that address is not ours. */
		if (!held)
			pt_detach(pt);
		g->stop_s = since(&t1);
		g->stub = 0;
		g->foreign = true;
		return gfail(g, ESRCH, "its memory is not the one handed over any more (exec?)");
	}
	ret = pt_read(pt, g->stub + GRAVE_PAGE, &g->dropped, sizeof(g->dropped));
	if (ret == 0 && g->dropped == GRAVE_SENTINEL) {
		/*
		 * No result yet: whatever we were told, the dropper still runs
		 * its code (or was never seen to end). Its 8 KiB stay rather
		 * than pull the code from under it; the graveyard is its own.
		 */
		if (!held)
			pt_detach(pt);
		g->stop_s = since(&t1);
		return gfail(g, EBUSY, "its dropper thread %d has not written its result; the "
			     "dropper's 8 KiB at 0x%" PRIx64 " stay", (int)g->dropper, g->stub);
	}
	/*
	 * The dropper's munmap failed: the graveyard is still there, whole,
	 * ours (nothing can have been mapped into it). Any other word but 0
	 * (it ended without writing one?) leaves the graveyard alone: an area
	 * there now may be the target's.
	 */
	if (ret == 0 && g->dropped < 0 && g->dropped > -4096 && g->len) {
		ret = stub_sys(g, pt, &r, (long)g->base, (long)g->len);
		if (ret == 0 && r < 0)
			left = gfail(g, (int)-r, "munmap(0x%" PRIx64 ", %" PRIu64 ") of the "
				     "graveyard: %s; it stays", g->base, g->len, strerror((int)-r));
	}
	if (ret == 0 && !left)
		g->len = 0;
	log_debug("pid %d: checked at %.3f ms", (int)g->pid, since(&t1) * 1e3);
	if (ret == 0)
		ret = stub_sys(g, pt, &r, (long)g->stub, 2 * GRAVE_PAGE);
	if (ret == 0 && r < 0)
		ret = gfail(g, (int)-r, "munmap of the dropper's 8 KiB at 0x%" PRIx64 ": %s; they "
			    "stay", g->stub, strerror((int)-r));
	log_debug("pid %d: unmapped at %.3f ms", (int)g->pid, since(&t1) * 1e3);
	if (!held)
		pt_detach(pt);
	g->stop_s = since(&t1);
	if (ret == 0)
		g->stub = 0;
	return ret < 0 ? ret : left;
}

void grave_free(struct grave *g)
{
	if (g->dfd >= 0)
		close(g->dfd);
	g->dfd = -1;
	free(g->p);
	g->p = NULL;
	g->n = 0;
}
