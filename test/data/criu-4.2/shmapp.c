/*
 * shmapp: test workload for CRIU images of shared memory.
 *
 * usage: shmapp MODE INTERVAL_MS LOGFILE
 *   MODE = single | fork2
 *
 * Both modes map SHM_PAGES pages of MAP_SHARED|MAP_ANONYMOUS memory and a
 * memfd ("shmapp-memfd", MEMFD_PAGES pages, sized one page larger than
 * mapped) mapped MAP_SHARED, with its descriptor kept open at fd 5.  Page i
 * of either holds pat(seed, word) for its words, except every page with
 * i % 8 == 3, which is never touched (a hole: reads zero).  The memfd is
 * sealed against shrinking (F_SEAL_SHRINK).
 *
 * fork2: after filling, the parent forks one child that maps nothing of its
 *        own: it writes seed SEED_CHILD into the shared pages with
 *        i % 8 == 6 (of both areas), so the parent sees them too.  Every
 *        INTERVAL_MS each process verifies every word of both areas (pages
 *        i % 8 == 6 as the child's, holes as zero) and appends a line.
 * single: no child; pages i % 8 == 6 hold the parent's seed.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <time.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define PG 4096UL
#define SHM_PAGES 512
#define MEMFD_PAGES 256
#define SEED_ANON 0x5a11ULL
#define SEED_MEMFD 0x3e3fdULL
#define SEED_CHILD 0xc4111dULL

static const char *logpath;
static char tag[32];

static void logmsg(const char *fmt, ...)
{
	char buf[512];
	int n, fd;
	va_list ap;

	n = snprintf(buf, sizeof(buf), "%s pid=%d ", tag, getpid());
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	fd = open(logpath, O_WRONLY | O_APPEND | O_CREAT, 0644);
	if (fd >= 0) {
		if (write(fd, buf, n) < 0) {
		}
		close(fd);
	}
}

static inline uint64_t pat(uint64_t seed, uint64_t widx)
{
	uint64_t x = seed ^ (widx * 0x9E3779B97F4A7C15ULL);
	x ^= x >> 31;
	x *= 0xBF58476D1CE4E5B9ULL;
	x ^= x >> 29;
	return x;
}

static void fill_page(uint64_t *p, size_t pg, uint64_t seed)
{
	for (size_t w = pg * (PG / 8); w < (pg + 1) * (PG / 8); w++)
		p[w] = pat(seed, w);
}

/* Return the first bad page, or -1. */
static long verify(const uint64_t *p, size_t pages, uint64_t seed, uint64_t seed6)
{
	for (size_t pg = 0; pg < pages; pg++) {
		for (size_t w = pg * (PG / 8); w < (pg + 1) * (PG / 8); w++) {
			uint64_t want = pg % 8 == 3 ? 0 : pat(pg % 8 == 6 ? seed6 : seed, w);
			if (p[w] != want)
				return (long)pg;
		}
	}
	return -1;
}

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	int fork2 = !strcmp(argv[1], "fork2");
	long ms = atol(argv[2]);
	logpath = argv[3];
	snprintf(tag, sizeof(tag), "parent");

	uint64_t *anon = mmap(NULL, SHM_PAGES * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int mfd = memfd_create("shmapp-memfd", MFD_ALLOW_SEALING);
	if (anon == MAP_FAILED || mfd < 0 || ftruncate(mfd, (MEMFD_PAGES + 1) * PG) < 0 || dup2(mfd, 5) < 0)
		return 1;
	close(mfd);
	uint64_t *mem = mmap(NULL, MEMFD_PAGES * PG, PROT_READ | PROT_WRITE, MAP_SHARED, 5, 0);
	if (mem == MAP_FAILED || fcntl(5, F_ADD_SEALS, F_SEAL_SHRINK) < 0)
		return 1;
	for (size_t pg = 0; pg < SHM_PAGES; pg++)
		if (pg % 8 != 3 && (fork2 ? pg % 8 != 6 : 1))
			fill_page(anon, pg, pg % 8 == 6 ? SEED_CHILD : SEED_ANON);
	for (size_t pg = 0; pg < MEMFD_PAGES; pg++)
		if (pg % 8 != 3 && (fork2 ? pg % 8 != 6 : 1))
			fill_page(mem, pg, pg % 8 == 6 ? SEED_CHILD : SEED_MEMFD);
	if (fork2) {
		pid_t c = fork();
		if (c < 0)
			return 1;
		if (c == 0) {
			snprintf(tag, sizeof(tag), "child");
			for (size_t pg = 6; pg < SHM_PAGES; pg += 8)
				fill_page(anon, pg, SEED_CHILD);
			for (size_t pg = 6; pg < MEMFD_PAGES; pg += 8)
				fill_page(mem, pg, SEED_CHILD);
		} else {
			/* Wait for the child's writes before the first check. */
			while (anon[(SHM_PAGES - 2) * (PG / 8)] != pat(SEED_CHILD, (SHM_PAGES - 2) * (PG / 8)) ||
			       mem[(MEMFD_PAGES - 2) * (PG / 8)] != pat(SEED_CHILD, (MEMFD_PAGES - 2) * (PG / 8)))
				usleep(1000);
		}
	}
	for (unsigned long round = 0;; round++) {
		long a = verify(anon, SHM_PAGES, SEED_ANON, SEED_CHILD);
		long m = verify(mem, MEMFD_PAGES, SEED_MEMFD, SEED_CHILD);
		if (a < 0 && m < 0)
			logmsg("round %lu ok", round);
		else
			logmsg("round %lu BAD anon page %ld memfd page %ld", round, a, m);
		usleep(ms * 1000);
	}
}
