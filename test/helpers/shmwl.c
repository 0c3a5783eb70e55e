/*
 * shmwl: a workload with shared memory for the dump tests (test_shmdump.c).
 *
 *   shmwl MODE READY
 *
 * Every mode but sysv makes, then writes "ready PID [CHILD]\n" to the file
 * READY and sleeps until killed:
 *  - A: SHM_A pages of MAP_SHARED|MAP_ANONYMOUS memory;
 *  - N: SHM_N pages of MAP_SHARED|MAP_ANONYMOUS memory named "shmwl-named"
 *    with PR_SET_VMA_ANON_NAME ([anon_shmem:shmwl-named] in maps) where the
 *    kernel allows it (else a second "/dev/zero (deleted)");
 *  - M: the memfd "shmwl-memfd" of MFD_PAGES pages, sealed F_SEAL_SHRINK,
 *    open at fd 5, mapped shared whole (MFD_MAP pages of it, the rest
 *    written through the fd: the object is longer than its mapping) and
 *    mapped a second time at page 2 for 4 pages;
 *  - F: the memfd "shmwl-fdonly" of FDO_PAGES pages, open at fd 7 (read-write,
 *    close-on-exec), never mapped, written through the fd.
 * Page i of object k holds shmwl_word(seed, k, i, w) in word w, with seed
 * SEED_PARENT, except pages i % 8 == 3, never touched (a hole), and, in
 * fork2, pages i % 8 == 6 of A, N and M, which a child writes with
 * SEED_CHILD (it maps nothing of its own) before READY is written.
 * MODE private also maps M MAP_PRIVATE (pages 0-3) and writes page 1 of it
 * (the copy, SEED_PRIVATE): the object keeps its own page 1. MODE sysv
 * attaches a System V segment instead of all this, MODE hugefd only opens a
 * hugetlb memfd.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shmwl.h"

#ifndef PR_SET_VMA
#define PR_SET_VMA		0x53564d41
#define PR_SET_VMA_ANON_NAME	0
#endif

/* Fill PG, page I of object K, with SEED's words. */
static void fill(uint8_t *pg, unsigned k, size_t i, uint64_t seed)
{
	uint64_t *q = (uint64_t *)(void *)pg;

	for (size_t w = 0; w < SHMWL_PAGE / 8; w++)
		q[w] = shmwl_word(seed, k, i, w);
}

static int ready(const char *path, pid_t child)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -1;
	if (child)
		fprintf(f, "ready %d %d\n", (int)getpid(), (int)child);
	else
		fprintf(f, "ready %d\n", (int)getpid());
	return fclose(f);
}

int main(int argc, char **argv)
{
	uint8_t *obj[SHMWL_NOBJ], *twice, *priv;
	int fork2, mfd, ffd, p[2];
	pid_t child = 0;
	char c;

	if (argc != 3)
		return 2;
	for (int fd = 3; fd < 1024; fd++)
		close(fd);	/* what it inherited would only make a dump refuse it */
	if (!strcmp(argv[1], "sysv")) {
		int id = shmget(IPC_PRIVATE, 16 * SHMWL_PAGE, IPC_CREAT | 0600);
		uint8_t *s = id < 0 ? NULL : shmat(id, NULL, 0);

		if (!s || s == (void *)-1)
			return 1;
		shmctl(id, IPC_RMID, NULL);	/* gone with its last user */
		memset(s, 0x5a, 16 * SHMWL_PAGE);
		if (ready(argv[2], 0))
			return 1;
		for (;;)
			pause();
	}
	if (!strcmp(argv[1], "hugefd")) {
		/* A hugetlb memfd (no huge page needed to create it), open only. */
		if (memfd_create("shmwl-huge", MFD_HUGETLB) < 0 || ready(argv[2], 0))
			return 1;
		for (;;)
			pause();
	}
	fork2 = !strcmp(argv[1], "fork2");
	obj[SHMWL_A] = mmap(NULL, SHMWL_A_PAGES * SHMWL_PAGE, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	obj[SHMWL_N] = mmap(NULL, SHMWL_N_PAGES * SHMWL_PAGE, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (obj[SHMWL_A] == MAP_FAILED || obj[SHMWL_N] == MAP_FAILED)
		return 1;
	/* Not every kernel names shared anonymous memory (this one's 6.18 says EINVAL). */
	if (prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, obj[SHMWL_N], SHMWL_N_PAGES * SHMWL_PAGE,
		  "shmwl-named")) {
	}
	mfd = memfd_create("shmwl-memfd", MFD_ALLOW_SEALING);
	ffd = memfd_create("shmwl-fdonly", MFD_CLOEXEC);
	if (mfd < 0 || ffd < 0 || dup2(mfd, SHMWL_MFD_FD) < 0 ||
	    dup3(ffd, SHMWL_FDO_FD, O_CLOEXEC) < 0)
		return 1;
	close(mfd);
	close(ffd);
	if (ftruncate(SHMWL_MFD_FD, SHMWL_M_PAGES * SHMWL_PAGE) ||
	    ftruncate(SHMWL_FDO_FD, SHMWL_F_PAGES * SHMWL_PAGE))
		return 1;
	obj[SHMWL_M] = mmap(NULL, SHMWL_M_MAP * SHMWL_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
			    SHMWL_MFD_FD, 0);
	twice = mmap(NULL, 4 * SHMWL_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, SHMWL_MFD_FD,
		     2 * SHMWL_PAGE);
	obj[SHMWL_F] = malloc(SHMWL_F_PAGES * SHMWL_PAGE);
	if (obj[SHMWL_M] == MAP_FAILED || twice == MAP_FAILED || !obj[SHMWL_F] ||
	    fcntl(SHMWL_MFD_FD, F_ADD_SEALS, F_SEAL_SHRINK))
		return 1;

	for (unsigned k = 0; k < SHMWL_NOBJ; k++) {
		size_t n = shmwl_pages(k), mapped = k == SHMWL_M ? SHMWL_M_MAP :
						    k == SHMWL_F ? 0 : n;
		uint64_t page64[SHMWL_PAGE / 8];
		uint8_t *page = (uint8_t *)page64;

		for (size_t i = 0; i < n; i++) {
			uint64_t seed = shmwl_seed(k, i, fork2);

			if (!seed || seed == SHMWL_SEED_CHILD)
				continue;
			if (i < mapped) {
				fill(obj[k] + i * SHMWL_PAGE, k, i, seed);
				continue;
			}
			/* Beyond the mapping (or never mapped): through the fd. */
			fill(page, k, i, seed);
			if (pwrite(k == SHMWL_M ? SHMWL_MFD_FD : SHMWL_FDO_FD, page, SHMWL_PAGE,
				   (off_t)(i * SHMWL_PAGE)) != SHMWL_PAGE)
				return 1;
		}
	}
	if (!strcmp(argv[1], "private")) {
		priv = mmap(NULL, 4 * SHMWL_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, SHMWL_MFD_FD, 0);
		if (priv == MAP_FAILED)
			return 1;
		memset(priv + SHMWL_PAGE, 0xc5, SHMWL_PAGE);	/* the copy only */
	}
	if (fork2) {
		if (pipe(p))
			return 1;
		child = fork();
		if (child < 0)
			return 1;
		if (child == 0) {
			for (unsigned k = 0; k < SHMWL_NOBJ; k++)
				for (size_t i = 6; k != SHMWL_F && i < shmwl_pages(k); i += 8)
					if (shmwl_seed(k, i, true) == SHMWL_SEED_CHILD)
						fill(obj[k] + i * SHMWL_PAGE, k, i, SHMWL_SEED_CHILD);
			if (write(p[1], "k", 1) != 1)
				_exit(1);
			close(p[0]);
			close(p[1]);
			for (;;)
				pause();
		}
		if (read(p[0], &c, 1) != 1)
			return 1;
		close(p[0]);
		close(p[1]);
	}
	if (ready(argv[2], child))
		return 1;
	for (;;)
		pause();
}
