/*
 * Test helpers for image tests: temp dirs, synthetic CRIU image dirs written
 * through the library's writer, a framing parser independent of the
 * library's reader, and the lazyapp fill pattern.
 *
 * No Criterion here (helper programs link this too): setup steps that cannot
 * fail in a sane test environment abort with a message on stderr instead;
 * functions that a test checks return 0 or -errno.
 */
#ifndef UFFD_TEST_IMGFIX_H
#define UFFD_TEST_IMGFIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "pagemap.h"

/* Where the real CRIU 4.2 images live in the source tree. */
#define FIX_CRIU_DIR	TEST_SRCDIR "/test/data/criu-4.2"

/* The pid and pages id of every synthetic task. */
#define FIX_PID		100u
#define FIX_PAGES_ID	1u

/* lazyapp.c's fill pattern: the word at index WIDX of a region seeded SEED. */
uint64_t fix_pat(uint64_t seed, uint64_t widx);

/* The word at ADDR in synthetic pages of generation GEN (one generation per dump dir). */
uint64_t fix_word(uint32_t gen, uint64_t addr);

/* A per-test directory under /tmp, removed with everything in it. */
struct fix_tmp {
	char path[64];
	int fd;
};

void fix_tmp_make(struct fix_tmp *t);
void fix_tmp_remove(struct fix_tmp *t);
/* Create directory NAME in DIRFD and open it. */
int fix_mkdir(int dirfd, const char *name);
void fix_symlink(int dirfd, const char *name, const char *target);
/* Open a directory by path (fixtures), or abort. */
int fix_open_dir(const char *path);

/* Whole files. fix_read_file returns NULL with errno set on failure. */
void fix_write_file(int dirfd, const char *name, const void *buf, size_t len);
uint8_t *fix_read_file(int dirfd, const char *name, size_t *len);
void fix_truncate(int dirfd, const char *name, uint64_t len);
void fix_unlink(int dirfd, const char *name);

/* A record file split by the test's own reading of the framing. */
struct fix_rec {
	size_t off;		/* of the u32 size in the file */
	uint32_t len;
	const uint8_t *data;
};

struct fix_recs {
	uint8_t *buf;
	size_t len;
	struct fix_rec *r;
	size_t n;
};

/*
 * Read NAME and split it: u32 magic (MAGIC alone for inventory, else the
 * common magic then MAGIC), then u32 LE size + message until EOF. Returns 0,
 * or -EINVAL on a bad magic, a short record or trailing bytes.
 */
int fix_parse_records(struct fix_recs *out, int dirfd, const char *name, uint32_t magic);
void fix_recs_free(struct fix_recs *rs);

/* One pagemap entry for the builders; ENC says how it is encoded. */
#define FIX_COMPAT	1u	/* only compat_nr_pages, no nr_pages (pre-4.0 CRIU) */
#define FIX_NOFLAGS	2u	/* no flags field: PRESENT by the compat rule */
#define FIX_INPARENT	4u	/* in_parent = true */

struct fix_pe {
	uint64_t vaddr;
	uint64_t nr;
	uint32_t flags;
	unsigned enc;
};

/* The flags of PE after CRIU's compat rules, worked out here independently. */
uint32_t fix_pe_flags(const struct fix_pe *pe);

/* Write pagemap-PID.img with the library's writer. */
void fix_write_pagemap(int dirfd, uint32_t pid, uint32_t pages_id, const struct fix_pe *pe,
		       size_t n);
/* Write pages-ID.img: the PRESENT pages of PE in entry order, filled with fix_word(GEN, addr). */
void fix_write_pages(int dirfd, uint32_t pages_id, uint32_t gen, const struct fix_pe *pe,
		     size_t n);
/* Both of the above, for pid FIX_PID and pages id FIX_PAGES_ID. */
void fix_write_memory(int dirfd, uint32_t gen, const struct fix_pe *pe, size_t n);

struct fix_vma {
	uint64_t start;
	uint64_t end;
};

/* Write mm-PID.img with anonymous private VMAS. */
void fix_write_mm(int dirfd, uint32_t pid, const struct fix_vma *v, size_t n);
/* Write pstree.img: PIDS in order, the first one the parent of the rest. */
void fix_write_pstree(int dirfd, const uint32_t *pids, size_t n);
void fix_write_inventory(int dirfd);

/*
 * The standard valid task (pid FIX_PID, generation 1): three VMAs, two of
 * them adjacent, and five entries, one across the adjacent VMAs, with
 * PRESENT, LAZY|PRESENT and LAZY-only data.
 */
extern const struct fix_vma fix_std_vmas[];
extern const size_t fix_std_nvmas;
extern const struct fix_pe fix_std_pes[];
extern const size_t fix_std_npes;

/* Write inventory, pstree, mm, pagemap and pages of the standard task into DIRFD. */
void fix_write_std_task(int dirfd);

#endif
