/*
 * CRIU's own decoder reads what our writer writes: `crit decode` (from
 * Debian's criu package, installed by make deps) on images we made.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tserve.h"

static char dir[64];

static void cleanup(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (dir[0] && system(cmd)) {
	}
}

/* Decode FILE of the image dir with crit; the JSON it printed, or a failed test. */
static char *crit(const char *file)
{
	static char out[1 << 20];
	char cmd[256];
	size_t n;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "crit decode -i %s/img/%s 2>&1", dir, file);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = 0;
	cr_assert_eq(pclose(f), 0, "%s: %s", cmd, out);
	return out;
}

Test(crit, decodes_our_images, .timeout = 60, .fini = cleanup)
{
	static const struct ts_area areas[] = {
		{ 0x500000000000ull, 64 * TS_PAGE, 5 },
		{ 0x500001000000ull, 16 * TS_PAGE, 0 },
	};
	char want[160], img[80], *out;
	int entries = 0;

	if (system("command -v crit >/dev/null 2>&1")) {
		cr_skip_test("crit is not installed (Debian: apt-get install criu python3-protobuf; make deps does it)");
	}
	snprintf(dir, sizeof(dir), "/tmp/uffd-crit-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(img, sizeof(img), "%s/img", dir);
	ts_write_images(img, TS_IMAGE_ID, areas, 2, 1);

	out = crit("inventory.img");
	cr_expect_not_null(strstr(out, "\"img_version\": 2"), "%s", out);
	out = crit("pstree.img");
	snprintf(want, sizeof(want), "\"pid\": %u,", TS_IMAGE_ID);
	cr_expect_not_null(strstr(out, want), "%s", out);
	snprintf(img, sizeof(img), "mm-%u.img", TS_IMAGE_ID);
	out = crit(img);
	for (int i = 0; i < 2; i++) {
		snprintf(want, sizeof(want), "\"start\": %" PRIu64 ", \"end\": %" PRIu64,
			 areas[i].start, areas[i].start + areas[i].len);
		cr_expect_not_null(strstr(out, want), "no VMA %s in %s", want, out);
	}
	snprintf(img, sizeof(img), "pagemap-%u.img", TS_IMAGE_ID);
	out = crit(img);
	cr_expect_not_null(strstr(out, "{\"pages_id\": 1}"), "%s", out);
	/* Every run of data pages, with its count and LAZY|PRESENT: area 0 has a hole every 5th page. */
	for (uint64_t a = areas[0].start; a < areas[0].start + areas[0].len; a += 5 * TS_PAGE) {
		snprintf(want, sizeof(want), "{\"vaddr\": %" PRIu64 ", \"nr_pages\": 4, \"flags\": 6}", a);
		cr_expect_not_null(strstr(out, want), "no entry %s", want);
		entries++;
	}
	snprintf(want, sizeof(want), "{\"vaddr\": %" PRIu64 ", \"nr_pages\": 16, \"flags\": 6}",
		 areas[1].start);
	cr_expect_not_null(strstr(out, want), "no entry %s in %s", want, out);
	cr_expect_eq(entries, 13);
}
