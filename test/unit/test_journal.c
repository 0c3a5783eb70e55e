/* The journal a new daemon takes over from (manager/journal.h). */
#include <criterion/criterion.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "journal.h"

static struct journal j;

static void jinit(void)
{
	cr_assert_eq(journal_create(&j), 0);
}

static void jfini(void)
{
	journal_close(&j);
}

static void rec(uint32_t type, uint64_t id, int fd0, int fd1, int fd2, uint64_t a0, uint64_t a1,
		uint64_t a2, uint64_t a3, uint64_t a4)
{
	struct jrec r = { .type = type, .fd = { fd0, fd1, fd2 }, .id = id,
			  .a = { a0, a1, a2, a3, a4 } };

	cr_assert_eq(journal_append(&j, &r), 0);
}

Test(journal, scan_follows_hand_overs_forks_and_ends, .init = jinit, .fini = jfini)
{
	struct jentry *e;
	size_t n;

	rec(J_HELLO, 1, 10, 11, 12, 100, 7, 1000ull | 2000ull << 32, 0, 1);
	rec(J_FORK, 1, 20, -1, -1, 2, 2, 0, 0, 0);
	rec(J_REMOVE, 1, -1, -1, -1, 0x1000, 0x3000, 0, 0, 0);
	rec(J_FORK, 2, 21, -1, -1, 3, 0, 0, 0, 0);
	rec(J_PID, 2, 22, -1, -1, 555, 0, 0, 0, 0);
	rec(J_HELLO, 4, 30, 31, 32, 200, 8, 0, JH_REMOTE, 0);
	rec(J_RELEASED, 4, -1, -1, -1, 0, 0, 0, 0, 0);
	rec(J_END, 1, -1, -1, -1, 0, 0, 0, 0, 0);
	cr_assert_eq(journal_scan(&j, &e, &n), 0);
	cr_assert_eq(n, 4);
	/* Sorted by id. */
	cr_expect_eq(e[0].id, 1);
	cr_expect_eq(e[0].state, JE_ENDED);
	cr_expect_eq(e[0].uid, 1000);
	cr_expect_eq(e[0].gid, 2000);
	cr_expect_eq(e[1].id, 2);
	cr_expect_eq(e[1].parent, 1);
	cr_expect_eq(e[1].root, 1);
	cr_expect_eq(e[1].dirfd, 12, "a child's image dir is its hand-over's");
	cr_expect_eq(e[1].image_id, 7);
	cr_expect_eq(e[1].uffd, 20);
	cr_expect_eq(e[1].pidfd, 22);
	cr_expect_eq(e[1].pid, 555);
	cr_expect_eq(e[1].fork_rec, 1);
	cr_expect_eq(e[1].state, JE_LIVE);
	cr_expect_eq(e[2].id, 3);
	cr_expect_eq(e[2].root, 1, "a grandchild's images are its grandparent's");
	cr_expect_eq(e[2].parent_pid, 555);
	cr_expect_eq(e[2].pidfd, -1);
	cr_expect_eq(e[3].id, 4);
	cr_expect_eq(e[3].state, JE_RELEASED);
	cr_expect_eq(e[3].flags, JH_REMOTE);
	cr_expect_eq(jentry_find(e, n, 3), &e[2]);
	cr_expect_null(jentry_find(e, n, 9));
	free(e);
}

Test(journal, grows_and_reopens, .init = jinit, .fini = jfini)
{
	struct journal k;
	int fd;

	for (uint64_t i = 0; i < 100000; i++)
		rec(J_REMOVE, i, -1, -1, -1, i << 12, (i + 1) << 12, 0, 0, 0);
	cr_assert_eq(journal_nrec(&j), 100000);
	fd = dup(j.fd);
	cr_assert_eq(journal_open(&k, fd), 0);
	cr_assert_eq(journal_nrec(&k), 100000);
	for (uint64_t i = 0; i < 100000; i += 9999)
		cr_expect_eq(k.log[i].a[0], i << 12);
	journal_close(&k);
}

Test(journal, refuses_what_is_not_one)
{
	struct journal k;
	int fd = memfd_create("not-a-journal", MFD_CLOEXEC);

	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, 64 << 20), 0);
	cr_expect_lt(journal_open(&k, fd), 0);
	fd = memfd_create("empty", MFD_CLOEXEC);
	cr_expect_lt(journal_open(&k, fd), 0);
}

Test(journal, slots_are_given_and_taken_back, .init = jinit, .fini = jfini)
{
	uint32_t a = journal_slot_get(&j, 5), b = journal_slot_get(&j, 6);

	cr_assert(a && b && a != b);
	cr_expect_eq(journal_slot(&j, a)->id, 5);
	journal_slot_put(&j, a);
	cr_expect_eq(journal_slot(&j, a)->id, 0);
	cr_expect_null(journal_slot(&j, 0));
	cr_expect_null(journal_slot(&j, JOURNAL_SLOTS + 1));
}

struct settled {
	uint64_t id[8];
	uint8_t ev[8];
	int n;
};

static void note(void *arg, uint64_t id, const struct uffd_msg *m)
{
	struct settled *s = arg;

	s->id[s->n] = id;
	s->ev[s->n++] = m->event;
}

/*
 * A daemon killed inside read(2), or while recording what it read: the
 * messages are in the read buffer; what it recorded of them is dropped
 * and they are recorded once, in order.
 */
Test(journal, settle_redoes_the_read_a_daemon_died_in, .init = jinit, .fini = jfini)
{
	struct settled s = { .n = 0 };
	struct uffd_msg *buf;

	rec(J_HELLO, 7, 1, 2, 3, 100, 1, 0, 0, 1);
	buf = journal_read_begin(&j, 7, NULL);
	cr_assert_eq(buf, j.h->rbuf);
	cr_expect_eq(j.h->reading, 7);
	/* What the kernel would copy out: a REMOVE, then a FORK. */
	buf[0].event = UFFD_EVENT_REMOVE;
	buf[1].event = UFFD_EVENT_FORK;
	rec(J_REMOVE, 7, -1, -1, -1, 0, 0x1000, 0, 0, 0);	/* half recorded, then killed */
	cr_expect_eq(journal_settle(&j, note, &s), 2);
	cr_expect_eq(journal_nrec(&j), 1, "the half-made record is dropped");
	cr_expect_eq(s.n, 2);
	cr_expect(s.id[0] == 7 && s.ev[0] == UFFD_EVENT_REMOVE && s.ev[1] == UFFD_EVENT_FORK);
	cr_expect_eq(j.h->reading, 0);
	cr_expect_eq(j.h->rbuf[0].event, 0);
	/* Settled: nothing more to redo. */
	cr_expect_eq(journal_settle(&j, note, &s), 0);
}

Test(journal, a_finished_read_leaves_nothing_to_settle, .init = jinit, .fini = jfini)
{
	struct settled s = { .n = 0 };
	struct uffd_msg *buf = journal_read_begin(&j, 3, NULL);

	buf[0].event = UFFD_EVENT_REMOVE;
	rec(J_REMOVE, 3, -1, -1, -1, 0, 0x1000, 0, 0, 0);
	journal_read_end(&j, sizeof(*buf));
	cr_expect_eq(journal_settle(&j, note, &s), 0);
	cr_expect_eq(journal_nrec(&j), 1);
	/* The next read starts from a zeroed buffer. */
	buf = journal_read_begin(&j, 4, NULL);
	cr_expect_eq(buf[0].event, 0);
}

/* A hand-over's client's groups, for reading its images again; its forks have them too. */
Test(journal, groups_follow_the_hand_over, .init = jinit, .fini = jfini)
{
	struct jentry *e;
	size_t n;

	rec(J_HELLO, 1, 10, 11, 12, 100, 7, 1000ull | 2000ull << 32, 0, 1);
	rec(J_GROUPS, 1, 5, -1, -1, 10, 11, 12, 13, 14);
	rec(J_GROUPS, 1, 2, -1, -1, 15, 16, 99, 99, 99);
	rec(J_FORK, 1, 20, -1, -1, 2, 0, 0, 0, 0);
	cr_assert_eq(journal_scan(&j, &e, &n), 0);
	cr_assert_eq(n, 2);
	cr_expect_eq(e[0].ngroups, 7, "the count in each record is kept to");
	cr_expect(e[0].groups[0] == 10 && e[0].groups[4] == 14 && e[0].groups[6] == 16);
	cr_expect_eq(e[1].ngroups, 7);
	cr_expect_eq(e[1].groups[5], 15);
	free(e);
}

/* An idle daemon's journal starts again from nothing; ids go on. */
Test(journal, reset_forgets_records_not_ids, .init = jinit, .fini = jfini)
{
	struct jentry *e;
	size_t n;

	for (uint64_t i = 1; i <= 50000; i++)
		rec(J_REMOVE, i, -1, -1, -1, 0, 0x1000, 0, 0, 0);
	j.h->next_id = 77;
	journal_reset(&j);
	cr_expect_eq(journal_nrec(&j), 0);
	cr_expect_eq(j.h->next_id, 77);
	cr_expect_eq(j.log[10].type, 0, "the log's pages are given back (read zero)");
	rec(J_HELLO, 78, 1, 2, 3, 100, 1, 0, 0, 0);
	cr_assert_eq(journal_scan(&j, &e, &n), 0);
	cr_expect_eq(n, 1);
	cr_expect_eq(e[0].id, 78);
	free(e);
}
