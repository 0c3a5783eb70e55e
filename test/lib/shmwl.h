/*
 * What test/helpers/shmwl.c writes into its shared memory objects, for the
 * helper and the tests that check every byte of a dump of it.
 */
#ifndef UFFD_TEST_SHMWL_H
#define UFFD_TEST_SHMWL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHMWL_PAGE	4096
enum { SHMWL_A, SHMWL_N, SHMWL_M, SHMWL_F, SHMWL_NOBJ };
#define SHMWL_A_PAGES	64	/* shared anonymous */
#define SHMWL_N_PAGES	16	/* shared anonymous, named */
#define SHMWL_M_PAGES	36	/* the memfd: pages 32-35 lie beyond its mapping */
#define SHMWL_M_MAP	32
#define SHMWL_F_PAGES	5	/* the memfd only open at a descriptor */
#define SHMWL_MFD_FD	5
#define SHMWL_FDO_FD	7
#define SHMWL_SEED_PARENT	0x5a11ull
#define SHMWL_SEED_CHILD	0xc4111dull

static inline size_t shmwl_pages(unsigned k)
{
	static const size_t n[SHMWL_NOBJ] = { SHMWL_A_PAGES, SHMWL_N_PAGES, SHMWL_M_PAGES,
					      SHMWL_F_PAGES };

	return n[k];
}

/* The seed of page I of object K (0: never touched). */
static inline uint64_t shmwl_seed(unsigned k, size_t i, bool fork2)
{
	if (i % 8 == 3)
		return 0;
	if (fork2 && i % 8 == 6 && k != SHMWL_F && (k != SHMWL_M || i < SHMWL_M_MAP))
		return SHMWL_SEED_CHILD;
	return SHMWL_SEED_PARENT;
}

/* Word W of page I of object K written with SEED. */
static inline uint64_t shmwl_word(uint64_t seed, unsigned k, size_t i, size_t w)
{
	uint64_t x = seed ^ ((uint64_t)k << 56) ^ ((i * (SHMWL_PAGE / 8) + w) * 0x9E3779B97F4A7C15ull);

	x ^= x >> 31;
	x *= 0xBF58476D1CE4E5B9ull;
	x ^= x >> 29;
	return x | 1;	/* never a zero word: a written page never reads as a hole */
}

#endif
