/*
 * Shared memory for the restore tests: shared anonymous memory and a memfd,
 * each process of the workload checks every byte of both when asked.
 *
 *   shmworkload --log PATH [--fork] [--pages N]
 *
 * anon: N pages of MAP_SHARED|MAP_ANONYMOUS memory; its first two pages are
 *       unmapped once filled, so the area left maps the object from page 2
 *       on (an offset the restore must keep).
 * mfd:  a memfd "shmwl" of N/2 + 2 pages, open at fd 7 (offset 3 pages + 5),
 *       its first N/2 pages mapped shared; page N/2 is written through the
 *       fd only (no mapping covers it) and page N/2 + 1 never: the object is
 *       longer than its mapping. Sealed F_SEAL_SHRINK|F_SEAL_GROW.
 * fdo:  a memfd "shmwl-fdonly" of FDO_PAGES pages open at fd 8 (close-on-exec),
 *       never mapped, written through the fd but for page 1 (a hole).
 * priv: the memfd's pages 0-3 mapped MAP_PRIVATE too, its page 1 written
 *       there (a copy of its own, SEED_PRIVATE; the object keeps its page).
 * In both, pages i % 8 == 3 are never touched (read zero) and pages
 * i % 8 == 6 hold the child's pattern: written by the child after the fork
 * (--fork: a parent and a child sharing both), or by the process itself.
 *
 * "ready pid=P" on stdout once set up (the child's writes done). SIGUSR2:
 * check every word of both areas, of the whole memfd read through fd 7, its
 * offset, size and seals, and that the anon area's maps line names
 * /dev/zero; log "check NAME ok" or "bad NAME WHAT". SIGUSR1 to the child:
 * write page 5 of both objects with a new pattern and log "wrote child";
 * SIGUSR1 to the parent: from now on expect that page. SIGTERM: the parent
 * reaps its child (logging "reaped code C") and exits 20, the child 21.
 * It closes every fd above 2 it inherits.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE		4096ul
#define MFD		7
#define FDO		8
#define FDO_PAGES	3
#define SEED_FDO	7
#define MFD_POS		(3 * PAGE + 5)
#define SEED_ANON	1
#define SEED_MFD	2
#define SEED_CHILD	3
#define SEED_NEW	4
#define SEED_FDONLY	5
#define SEED_PRIVATE	6
#define NEW_PAGE	5

static int logfd = -1;
static const char *name = "parent";
static uint8_t *anon, *mem, *priv;	/* anon: the object's page 0 (pages 0-1 unmapped) */
static size_t npages, mpages;	/* anon pages; memfd pages mapped */
static volatile sig_atomic_t want_check, want_usr1, want_end;
static int expect_new;

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

static uint64_t word(unsigned seed, size_t page, size_t w)
{
	uint64_t x = ((uint64_t)seed << 48) ^ ((uint64_t)page << 16) ^ w;

	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9ull;
	return x ^ (x >> 29) ^ seed;
}

static void fill(uint8_t *base, size_t page, unsigned seed)
{
	uint64_t *p = (uint64_t *)(base + page * PAGE);

	for (size_t w = 0; w < PAGE / 8; w++)
		p[w] = word(seed, page, w);
}

/* The seed of page K of an object whose own seed is SEED (0: a hole). */
static unsigned seed_of(unsigned seed, size_t k)
{
	if (k % 8 == 3)
		return 0;
	if (k == NEW_PAGE && expect_new)
		return SEED_NEW;
	return k % 8 == 6 ? SEED_CHILD : seed;
}

/* Compare page K of BUF with SEED's; log and return false if it differs. */
static int page_ok(const uint8_t *buf, size_t k, unsigned seed, const char *what)
{
	const uint64_t *p = (const uint64_t *)buf;

	for (size_t w = 0; w < PAGE / 8; w++) {
		uint64_t want = seed ? word(seed, k, w) : 0;

		if (p[w] != want) {
			logf_("bad %s %s page %zu word %zu: %016llx want %016llx\n", name, what, k, w,
			      (unsigned long long)p[w], (unsigned long long)want);
			return 0;
		}
	}
	return 1;
}

/* Does the maps line of ADDR name NEEDLE? */
static int maps_names(const void *addr, const char *needle)
{
	char line[512], want[32];
	FILE *f = fopen("/proc/self/maps", "re");
	int hit = 0;

	snprintf(want, sizeof(want), "%lx-", (unsigned long)addr);
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, want, strlen(want)))
			hit = strstr(line, needle) != NULL;
	if (f)
		fclose(f);
	return hit;
}

static void check(void)
{
	static uint8_t buf[PAGE];
	struct stat st;
	int seals;

	for (size_t k = 2; k < npages; k++)
		if (!page_ok(anon + k * PAGE, k, seed_of(SEED_ANON, k), "anon"))
			return;
	for (size_t k = 0; k < mpages; k++)
		if (!page_ok(mem + k * PAGE, k, seed_of(SEED_MFD, k), "memfd"))
			return;
	for (size_t k = 0; k < 4; k++)
		if (!page_ok(priv + k * PAGE, k, k == 1 ? SEED_PRIVATE : seed_of(SEED_MFD, k),
			     "memfd-private"))
			return;
	for (size_t k = 0; k < mpages + 2; k++) {
		unsigned seed = k < mpages ? seed_of(SEED_MFD, k) : k == mpages ? SEED_FDONLY : 0;

		if (pread(MFD, buf, PAGE, (off_t)(k * PAGE)) != (ssize_t)PAGE) {
			logf_("bad %s pread page %zu: %s\n", name, k, strerror(errno));
			return;
		}
		if (!page_ok(buf, k, seed, "memfd-by-fd"))
			return;
	}
	for (size_t k = 0; k < FDO_PAGES; k++) {
		if (pread(FDO, buf, PAGE, (off_t)(k * PAGE)) != (ssize_t)PAGE) {
			logf_("bad %s pread fd-only page %zu: %s\n", name, k, strerror(errno));
			return;
		}
		if (!page_ok(buf, k, k == 1 ? 0 : SEED_FDO, "fd-only"))
			return;
	}
	if (fcntl(FDO, F_GETFD) != FD_CLOEXEC) {
		logf_("bad %s fd-only fd flags\n", name);
		return;
	}
	if (lseek(MFD, 0, SEEK_CUR) != (off_t)MFD_POS) {
		logf_("bad %s fd offset %lld\n", name, (long long)lseek(MFD, 0, SEEK_CUR));
		return;
	}
	if (fstat(MFD, &st) < 0 || st.st_size != (off_t)((mpages + 2) * PAGE)) {
		logf_("bad %s memfd size\n", name);
		return;
	}
	seals = fcntl(MFD, F_GET_SEALS);
	if (seals != (F_SEAL_SHRINK | F_SEAL_GROW)) {
		logf_("bad %s seals 0x%x\n", name, seals);
		return;
	}
	if (!maps_names(anon + 2 * PAGE, "/dev/zero (deleted)") ||
	    !maps_names(mem, "/memfd:shmwl (deleted)")) {
		logf_("bad %s maps lines\n", name);
		return;
	}
	logf_("check %s ok\n", name);
}

static void on_usr1(int s)
{
	(void)s;
	want_usr1 = 1;
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

static void run(int child) __attribute__((noreturn));

static void run(int child)
{
	int st;
	pid_t w;

	for (;;) {
		struct timespec ts = { 0, 5 * 1000 * 1000 };

		nanosleep(&ts, NULL);
		if (want_usr1) {
			want_usr1 = 0;
			if (child) {
				fill(anon, NEW_PAGE, SEED_NEW);
				fill(mem, NEW_PAGE, SEED_NEW);
				logf_("wrote child\n");
			}
			expect_new = 1;
		}
		if (want_check) {
			want_check = 0;
			check();
		}
		if (want_end)
			break;
	}
	if (child)
		_exit(21);
	while ((w = wait(&st)) > 0 || (w < 0 && errno == EINTR))
		if (w > 0)
			logf_("reaped code %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	_exit(20);
}

int main(int argc, char **argv)
{
	const char *log = NULL;
	struct sigaction sa;
	int fork_mode = 0, fd, p[2];
	char c;

	close_range(3, ~0u, 0);	/* nothing inherited that a dump would refuse */
	npages = 64;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--log") && i + 1 < argc)
			log = argv[++i];
		else if (!strcmp(argv[i], "--fork"))
			fork_mode = 1;
		else if (!strcmp(argv[i], "--pages") && i + 1 < argc)
			npages = strtoul(argv[++i], NULL, 10);
		else {
			fprintf(stderr, "usage: shmworkload --log PATH [--fork] [--pages N]\n");
			return 2;
		}
	}
	if (!log || npages < 16 || npages % 2)
		return 2;
	mpages = npages / 2;
	logfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0)
		return 1;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);

	anon = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	fd = memfd_create("shmwl", MFD_ALLOW_SEALING);
	if (anon == MAP_FAILED || fd < 0 || ftruncate(fd, (off_t)((mpages + 2) * PAGE)) < 0 ||
	    dup2(fd, MFD) != MFD)
		return 1;
	close(fd);
	mem = mmap(NULL, mpages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, MFD, 0);
	priv = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, MFD, 0);
	if (mem == MAP_FAILED || priv == MAP_FAILED)
		return 1;
	for (size_t k = 0; k < npages; k++)
		if (k % 8 != 3 && (!fork_mode || k % 8 != 6))
			fill(anon, k, seed_of(SEED_ANON, k));
	for (size_t k = 0; k < mpages; k++)
		if (k % 8 != 3 && (!fork_mode || k % 8 != 6))
			fill(mem, k, seed_of(SEED_MFD, k));
	fill(priv, 1, SEED_PRIVATE);	/* after the object's page 1: a copy of its own */
	fd = memfd_create("shmwl-fdonly", MFD_CLOEXEC);
	if (fd < 0 || dup3(fd, FDO, O_CLOEXEC) != FDO || ftruncate(FDO, FDO_PAGES * PAGE) < 0)
		return 1;
	close(fd);
	for (size_t k = 0; k < FDO_PAGES; k += 2) {
		static uint64_t pg[PAGE / 8];

		for (size_t w = 0; w < PAGE / 8; w++)
			pg[w] = word(SEED_FDO, k, w);
		if (pwrite(FDO, pg, PAGE, (off_t)(k * PAGE)) != (ssize_t)PAGE)
			return 1;
	}
	{
		static uint64_t pg[PAGE / 8];

		for (size_t w = 0; w < PAGE / 8; w++)
			pg[w] = word(SEED_FDONLY, mpages, w);
		if (pwrite(MFD, pg, PAGE, (off_t)(mpages * PAGE)) != (ssize_t)PAGE)
			return 1;
	}
	/* The area keeps the object from page 2 on. */
	if (munmap(anon, 2 * PAGE) < 0 || fcntl(MFD, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0 ||
	    lseek(MFD, (off_t)MFD_POS, SEEK_SET) != (off_t)MFD_POS)
		return 1;
	if (pipe(p) < 0)
		return 1;
	if (fork_mode) {
		pid_t k = fork();

		if (k < 0)
			return 1;
		if (k == 0) {
			name = "child";
			close(p[0]);
			for (size_t i = 6; i < npages; i += 8)
				fill(anon, i, SEED_CHILD);
			for (size_t i = 6; i < mpages; i += 8)
				fill(mem, i, SEED_CHILD);
			if (write(p[1], "x", 1) != 1)
				_exit(97);
			close(p[1]);
			logf_("start child pid %d\n", (int)getpid());
			run(1);
		}
		close(p[1]);
		if (read(p[0], &c, 1) != 1)
			return 1;
		close(p[0]);
	} else {
		close(p[0]);
		close(p[1]);
	}
	logf_("start parent pid %d\n", (int)getpid());
	printf("ready pid=%d\n", (int)getpid());
	fflush(stdout);
	run(0);
}
