/* Working-set records (wset.h): the file format, and the replay order against the model. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "model.h"
#include "proc.h"
#include "wset.h"

#define PG	4096ull
#define A	0x700000000000ull

/* A record file's bytes for N addresses. */
static size_t mk(uint8_t *buf, const uint64_t *img, uint64_t n)
{
	uint32_t v = 1;

	memcpy(buf, "UFWS", 4);
	memcpy(buf + 4, &v, 4);
	memcpy(buf + 8, &n, 8);
	memcpy(buf + 16, img, n * 8);
	return 16 + n * 8;
}

Test(wset, parse_takes_a_good_record)
{
	uint64_t in[3] = { A, A + 5 * PG, A - PG }, *out;
	uint8_t buf[64];
	size_t n, len = mk(buf, in, 3);

	cr_assert_eq(wset_parse(buf, len, &out, &n), 0);
	cr_assert_eq(n, 3);
	cr_expect_arr_eq(out, in, sizeof(in));
	free(out);
}

Test(wset, parse_refuses_what_is_not_one)
{
	uint64_t in[2] = { A, A + PG }, *out = NULL;
	uint8_t buf[64];
	size_t n, len = mk(buf, in, 2);

	cr_expect_eq(wset_parse(buf, 10, &out, &n), -EINVAL, "short");
	cr_expect_eq(wset_parse(buf, len - 1, &out, &n), -EINVAL, "count and size disagree");
	buf[0] = 'X';
	cr_expect_eq(wset_parse(buf, len, &out, &n), -EINVAL, "magic");
	buf[0] = 'U';
	buf[4] = 2;
	cr_expect_eq(wset_parse(buf, len, &out, &n), -EINVAL, "version");
	buf[4] = 1;
	in[1] = A + 100;
	len = mk(buf, in, 2);
	cr_expect_eq(wset_parse(buf, len, &out, &n), -EINVAL, "an address inside a page");
	cr_expect_null(out);
}

/*
 * A replay's fixture: images in a temp dir (an empty pagemap file, for its
 * identity), a process of one 64-page area at A, all missing, and REC[N]
 * written as the record where wset_path() says.
 */
struct replay {
	struct daemon d;
	struct target t;
	struct timage img;
	char dir[32], path[600];
};

static void replay_setup(struct replay *r, const uint64_t *rec, uint64_t n)
{
	uint8_t buf[256];
	int fd;

	cr_assert_leq(16 + n * 8, sizeof(buf));
	snprintf(r->dir, sizeof(r->dir), "/tmp/wset-unit-XXXXXX");
	cr_assert(mkdtemp(r->dir));
	r->img.dirfd = open(r->dir, O_DIRECTORY | O_RDONLY);
	r->img.task.pid = 1;
	fd = openat(r->img.dirfd, "pagemap-1.img", O_CREAT | O_WRONLY, 0600);
	cr_assert(fd >= 0);
	close(fd);
	r->d.o.wset_dir = r->dir;
	r->t.d = &r->d;
	r->t.img = &r->img;
	snprintf(r->t.pfx, sizeof(r->t.pfx), "test:");
	model_init(&r->t.map);
	cr_assert_eq(model_add(&r->t.map, A, A + 64 * PG, A), 0);
	model_mark_missing(&r->t.map, A, A + 64 * PG);
	cr_assert_eq(wset_path(r->dir, r->img.dirfd, 1, r->path, sizeof(r->path)), 0);
	fd = open(r->path, O_CREAT | O_WRONLY, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, buf, mk(buf, rec, n)), (ssize_t)(16 + n * 8));
	close(fd);
}

static void replay_teardown(struct replay *r)
{
	model_free(&r->t.map);
	unlink(r->path);
	unlinkat(r->img.dirfd, "pagemap-1.img", 0);
	close(r->img.dirfd);
	rmdir(r->dir);
}

/*
 * Replay: a record written where wset_path() says, for images in a temp
 * dir; then wset_next() gives the recorded pages that are still missing, in
 * record order, consecutive ones in runs of at most MAX.
 */
Test(wset, replay_gives_missing_recorded_pages_in_order)
{
	static struct replay r;
	struct target *t = &r.t;
	uint64_t rec[] = { A + 5 * PG, A + 6 * PG, A + 7 * PG, A + 2 * PG, A + 9 * PG,
			   A + 300 * PG /* outside the area */, A + 10 * PG, A + 11 * PG, A + 12 * PG };
	uint64_t a, n;

	replay_setup(&r, rec, 9);
	model_clear(&t->map, A + 9 * PG, A + 10 * PG);	/* already in: skipped */

	wset_start(t);
	cr_assert_not_null(t->ws, "the record was found");
	n = wset_next(t, 64 * PG, &a);
	cr_expect(a == A + 5 * PG && n == 3 * PG, "first run: 5..7, got 0x%lx +%lu", a, n);
	n = wset_next(t, 64 * PG, &a);
	cr_expect(a == A + 2 * PG && n == PG, "then page 2, got 0x%lx +%lu", a, n);
	/* 9 is in, 300 is in no area: next comes 10..12, cut at MAX = 2 pages. */
	n = wset_next(t, 2 * PG, &a);
	cr_expect(a == A + 10 * PG && n == 2 * PG, "then 10..11, got 0x%lx +%lu", a, n);
	n = wset_next(t, 2 * PG, &a);
	cr_expect(a == A + 12 * PG && n == PG, "then 12, got 0x%lx +%lu", a, n);
	cr_expect_eq(wset_next(t, 64 * PG, &a), 0, "used up");
	wset_end(t);
	cr_expect_null(t->ws);
	replay_teardown(&r);
}

/*
 * A fault further on in the record (another thread, or an order that
 * changed) brings what follows that page, and the fill still places the
 * recorded pages it passed over, in order, before it is done with the record.
 */
Test(wset, a_fault_further_on_skips_nothing)
{
	static struct replay r;
	struct target *t = &r.t;
	uint64_t rec[] = { A + 1 * PG, A + 3 * PG, A + 5 * PG, A + 7 * PG, A + 9 * PG, A + 11 * PG };
	uint64_t a, n;
	size_t k;

	replay_setup(&r, rec, 6);

	wset_start(t);
	cr_assert_not_null(t->ws, "the record was found");
	n = wset_next(t, 64 * PG, &a);
	cr_assert(a == A + 1 * PG && n == PG, "the fill begins with page 1, got 0x%lx +%lu", a, n);
	model_clear(&t->map, a, a + n);
	/* A fault at page 7 (entry 3), served; what follows it comes with it: 9, 11. */
	cr_assert(wset_find(t, A + 7 * PG, &k) && k == 3);
	model_clear(&t->map, A + 7 * PG, A + 8 * PG);
	k++;
	for (uint64_t want = 9; want <= 11; want += 2) {
		n = wset_next_from(t, &k, 64 * PG, &a);
		cr_assert(a == A + want * PG && n == PG, "after the fault: page %lu, got 0x%lx +%lu",
			  (unsigned long)want, a, n);
		model_clear(&t->map, a, a + n);
	}
	cr_expect_eq(wset_next_from(t, &k, 64 * PG, &a), 0);
	/* The fill goes on where it was: 3 and 5, which the process has not read yet. */
	for (uint64_t want = 3; want <= 5; want += 2) {
		n = wset_next(t, 64 * PG, &a);
		cr_assert(a == A + want * PG && n == PG, "the fill: page %lu, got 0x%lx +%lu",
			  (unsigned long)want, a, n);
		model_clear(&t->map, a, a + n);
	}
	cr_expect_eq(wset_next(t, 64 * PG, &a), 0, "the record is used up");
	wset_end(t);
	replay_teardown(&r);
}
