/*
 * The pages cache's record of mapped pages (pages.h): one bit a page of a
 * file, set by runs of any length and offset, read back by runs, across
 * word boundaries and up to a last word that is not full; and pages_pread.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pages.h"

#define PG	4096ull
#define NPAGES	200	/* three full words of bits and 8 bits of a fourth */

static char dir[64] = "";
static int dirfd = -1;
static struct pages_cache cache;
static struct pages_file *pf;

/* A pages file of NPAGES pages, page i full of byte i, in a temp dir; in the cache. */
static void setup_with(bool keep_fds)
{
	static unsigned char page[PG];
	struct img_err err = { "" };
	int fd;

	strcpy(dir, "/tmp/uffd-pages-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(dirfd, 0);
	fd = openat(dirfd, "pages-1.img", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	for (unsigned i = 0; i < NPAGES; i++) {
		memset(page, (int)i, sizeof(page));
		cr_assert_eq(write(fd, page, sizeof(page)), (ssize_t)sizeof(page));
	}
	close(fd);
	pages_cache_init(&cache);
	cache.keep_fds = keep_fds;
	cr_assert_eq(pages_get(&cache, dirfd, "pages-1.img", "pages-1.img", &pf, &err), 0, "%s",
		     err.msg);
}

static void setup(void)
{
	setup_with(true);
}

static void teardown(void)
{
	if (pf)
		pages_put(&cache, pf);
	pf = NULL;
	if (dirfd >= 0) {
		unlinkat(dirfd, "pages-1.img", 0);
		close(dirfd);
		dirfd = -1;
	}
	if (dir[0])
		rmdir(dir);
	dir[0] = 0;
}

/* Pages [A, B) as byte offset and length. */
#define RUN(a, b)	(uint64_t)(a) * PG, (uint64_t)((b) - (a)) * PG

/* Exactly pages [A, B) are noted among all of the file's, page by page. */
static void expect_only(unsigned a, unsigned b)
{
	for (unsigned i = 0; i < NPAGES; i++)
		cr_expect_eq(pages_mapped(pf, RUN(i, i + 1)), i >= a && i < b,
			     "page %u (noted: [%u, %u))", i, a, b);
}

Test(pages, nothing_mapped_at_first, .init = setup, .fini = teardown)
{
	expect_only(0, 0);
	cr_expect_not(pages_mapped(pf, RUN(0, NPAGES)));
}

/* A run across the first word boundary sets those bits, none either side. */
Test(pages, a_run_across_a_word, .init = setup, .fini = teardown)
{
	pages_note_mapped(pf, RUN(60, 70));
	expect_only(60, 70);
	cr_expect(pages_mapped(pf, RUN(60, 70)));
	cr_expect(pages_mapped(pf, RUN(63, 65)));
	cr_expect_not(pages_mapped(pf, RUN(59, 61)), "a run one page before");
	cr_expect_not(pages_mapped(pf, RUN(69, 71)), "a run one page after");
}

/* A whole aligned word (the all-ones mask), and runs of more than a word. */
Test(pages, whole_words, .init = setup, .fini = teardown)
{
	pages_note_mapped(pf, RUN(64, 128));
	expect_only(64, 128);
	pages_note_mapped(pf, RUN(1, 193));
	expect_only(1, 193);
	cr_expect(pages_mapped(pf, RUN(1, 193)));
	cr_expect_not(pages_mapped(pf, RUN(0, 193)));
	cr_expect_not(pages_mapped(pf, RUN(1, 194)));
}

/* The last word is not full: its pages and the file's end. */
Test(pages, the_last_pages, .init = setup, .fini = teardown)
{
	pages_note_mapped(pf, RUN(NPAGES - 3, NPAGES));
	expect_only(NPAGES - 3, NPAGES);
	pages_note_mapped(pf, RUN(0, NPAGES));
	cr_expect(pages_mapped(pf, RUN(0, NPAGES)));
	expect_only(0, NPAGES);
}

/* Offsets and lengths inside pages cover every page they touch. */
Test(pages, parts_of_pages, .init = setup, .fini = teardown)
{
	pages_note_mapped(pf, 10 * PG + 100, 10);
	expect_only(10, 11);
	cr_expect_not(pages_mapped(pf, 10 * PG + 100, PG), "a run into page 11, not noted");
	pages_note_mapped(pf, 64 * PG - 1, 2);
	cr_expect(pages_mapped(pf, RUN(63, 65)), "one byte each side of a word's end");
	cr_expect(pages_mapped(pf, 63 * PG + 5, PG));
	cr_expect_not(pages_mapped(pf, 62 * PG + 5, PG));
}

Test(pages, pread_reads_the_pages, .init = setup, .fini = teardown)
{
	static unsigned char buf[4 * PG];

	cr_assert_eq(pages_pread(pf, RUN(62, 66), buf), 0);
	for (unsigned i = 0; i < 4; i++)
		for (uint64_t k = 0; k < PG; k++)
			cr_assert_eq(buf[i * PG + k], 62 + i, "page %u byte %lu", 62 + i,
				     (unsigned long)k);
	cr_expect_eq(pages_pread(pf, RUN(NPAGES - 1, NPAGES + 1), buf), -EIO,
		     "a short read is an error");
	cr_expect_eq(pages_nr_files(&cache), 1);
}

/* Without keep_fds nothing is tracked: all says mapped, and there is no fd to read. */
Test(pages, without_keep_fds, .fini = teardown)
{
	static unsigned char buf[PG];

	setup_with(false);
	cr_expect(pages_mapped(pf, RUN(0, NPAGES)));
	cr_expect_eq(pf->fd, -1);
	cr_expect_eq(pages_pread(pf, RUN(0, 1), buf), -EBADF);
}
