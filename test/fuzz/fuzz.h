/*
 * Shared by the libFuzzer harnesses: leaks of fds count as findings, as
 * memory leaks do (LeakSanitizer). Header only: each harness is one file.
 */
#ifndef UFFD_FUZZ_H
#define UFFD_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* The lowest free fd: an fd leaked by one input makes it move up. */
static inline int fz_lowest_free_fd(void)
{
	int fd = dup(0);

	if (fd < 0) {
		perror("fuzz: dup");
		abort();
	}
	close(fd);
	return fd;
}

/* Abort (a finding) if the lowest free fd moved since BEFORE. */
static inline void fz_check_fds(int before, const char *what)
{
	int after = fz_lowest_free_fd();

	if (after != before) {
		fprintf(stderr, "fuzz: %s leaked an fd (lowest free fd %d before, %d after)\n",
			what, before, after);
		abort();
	}
}

/* Little-endian reads from a cursor that never runs past the end. */
struct fz_in {
	const uint8_t *p;
	size_t n;
};

static inline uint8_t fz_u8(struct fz_in *in)
{
	uint8_t v = 0;

	if (in->n) {
		v = *in->p++;
		in->n--;
	}
	return v;
}

static inline uint32_t fz_u32(struct fz_in *in)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++)
		v |= (uint32_t)fz_u8(in) << (8 * i);
	return v;
}

static inline uint64_t fz_u64(struct fz_in *in)
{
	return fz_u32(in) | (uint64_t)fz_u32(in) << 32;
}

#endif
