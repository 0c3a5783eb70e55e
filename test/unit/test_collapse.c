/* Which blocks may become huge pages (collapse.h): the process's THP settings, as the kernel reads them. */
#include <criterion/criterion.h>

#include "collapse.h"

#define MB2	COLLAPSE_BLOCK

Test(collapse, mode_from_sysfs_text)
{
	cr_expect_eq(collapse_parse_mode("[always] madvise never\n"), THP_ALWAYS);
	cr_expect_eq(collapse_parse_mode("always [madvise] never\n"), THP_MADVISE);
	cr_expect_eq(collapse_parse_mode("always madvise [never]\n"), THP_NEVER);
	cr_expect_eq(collapse_parse_mode(""), THP_NEVER, "unknown text: make no huge pages");
}

Test(collapse, aligned_blocks_inside_the_range_only)
{
	uint64_t out[8];
	size_t n;

	/* [1 MiB, 9 MiB): the blocks at 2, 4 and 6 MiB; neither ragged end. */
	n = collapse_blocks(MB2 / 2, 4 * MB2 + MB2 / 2, 0, THP_ALWAYS, out, 8);
	cr_assert_eq(n, 3);
	cr_expect_eq(out[0], MB2);
	cr_expect_eq(out[1], 2 * MB2);
	cr_expect_eq(out[2], 3 * MB2);
	/* Shorter than a block, or one block less a page: nothing. */
	cr_expect_eq(collapse_blocks(MB2, 2 * MB2 - 4096, 0, THP_ALWAYS, out, 8), 0);
	/* MAX is respected. */
	cr_expect_eq(collapse_blocks(0, 8 * MB2, 0, THP_ALWAYS, out, 2), 2);
	/* The very top of the address space does not wrap. */
	cr_expect_eq(collapse_blocks(UINT64_MAX - MB2 + 1, UINT64_MAX, 0, THP_ALWAYS, out, 8), 0);
}

Test(collapse, the_process_settings_decide)
{
	uint64_t out[8];

	cr_expect_eq(collapse_blocks(0, 2 * MB2, 0, THP_NEVER, out, 8), 0, "THP off");
	cr_expect_eq(collapse_blocks(0, 2 * MB2, PFV_HG, THP_NEVER, out, 8), 0,
		     "THP off, even where the process asked for huge pages");
	cr_expect_eq(collapse_blocks(0, 2 * MB2, 0, THP_MADVISE, out, 8), 0,
		     "madvise mode: only where the process asked");
	cr_expect_eq(collapse_blocks(0, 2 * MB2, PFV_HG, THP_MADVISE, out, 8), 2);
	cr_expect_eq(collapse_blocks(0, 2 * MB2, 0, THP_ALWAYS, out, 8), 2);
	cr_expect_eq(collapse_blocks(0, 2 * MB2, PFV_NH, THP_ALWAYS, out, 8), 0, "MADV_NOHUGEPAGE");
	cr_expect_eq(collapse_blocks(0, 2 * MB2, PFV_NH | PFV_HG, THP_ALWAYS, out, 8), 0);
	cr_expect_eq(collapse_blocks(0, 2 * MB2, PFV_SH, THP_ALWAYS, out, 8), 0, "shared memory");
	cr_expect_eq(collapse_blocks(0, 2 * MB2, PFV_HT, THP_ALWAYS, out, 8), 0, "hugetlb");
}
