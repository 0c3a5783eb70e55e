/*
 * The page-server wire header (pswire) and the remote mode's request queue
 * (rqueue): pure code, tested without sockets.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "pswire.h"
#include "rqueue.h"

#define PG	4096ull

/* CRIU's struct page_server_iov, as the compiler lays it out on this machine. */
struct criu_psi {
	uint32_t cmd;
	uint64_t nr_pages;
	uint64_t vaddr;
	uint64_t dst_id;
};

Test(pswire, layout_is_criu_struct)
{
	struct criu_psi c = { .cmd = 0x40006, .nr_pages = 0x1122334455667788ull,
			      .vaddr = 0x7f0000001000ull, .dst_id = 24772 };
	struct ps_hdr h = { .cmd = c.cmd, .nr_pages = c.nr_pages, .vaddr = c.vaddr,
			    .dst_id = c.dst_id };
	uint8_t b[PS_HDR_SIZE], want[sizeof(c)];

	cr_assert_eq(sizeof(c), PS_HDR_SIZE, "32 bytes with natural alignment");
	memset(want, 0, sizeof(want));
	memcpy(want + offsetof(struct criu_psi, cmd), &c.cmd, 4);
	memcpy(want + offsetof(struct criu_psi, nr_pages), &c.nr_pages, 8);
	memcpy(want + offsetof(struct criu_psi, vaddr), &c.vaddr, 8);
	memcpy(want + offsetof(struct criu_psi, dst_id), &c.dst_id, 8);
	memset(b, 0xee, sizeof(b));
	ps_encode(b, &h);
	cr_assert_eq(memcmp(b, want, sizeof(b)), 0, "the bytes of the struct, padding zeroed");
}

Test(pswire, roundtrip_and_padding_ignored)
{
	struct ps_hdr h = { .cmd = ps_cmd(PS_IOV_GET, 0), .nr_pages = 64, .vaddr = 0x10000,
			    .dst_id = (uint64_t)100 << 8 | 1 }, g;
	uint8_t b[PS_HDR_SIZE];

	ps_encode(b, &h);
	b[4] = b[5] = b[6] = b[7] = 0xff;	/* a peer's garbage padding */
	ps_decode(b, &g);
	cr_expect_eq(g.cmd, h.cmd);
	cr_expect_eq(g.nr_pages, h.nr_pages);
	cr_expect_eq(g.vaddr, h.vaddr);
	cr_expect_eq(g.dst_id, h.dst_id);
}

Test(pswire, cmd_flags_and_op)
{
	uint32_t c = ps_cmd(PS_IOV_ADD_F, PS_FLAG_PRESENT | PS_FLAG_LAZY);
	char buf[32];

	cr_expect_eq(c, 0x60006u);
	cr_expect_eq(ps_op(c), PS_IOV_ADD_F);
	cr_expect_eq(ps_flags(c), PS_FLAG_PRESENT | PS_FLAG_LAZY);
	cr_expect_eq(ps_op(PS_IOV_CLOSE), 0x1023u);
	cr_expect_eq(ps_flags(PS_IOV_FORCE_CLOSE), 0u);
	cr_expect_str_eq(ps_op_name(PS_IOV_GET, buf, sizeof(buf)), "GET");
	cr_expect_str_eq(ps_op_name(PS_IOV_CLOSE, buf, sizeof(buf)), "CLOSE");
	cr_expect_str_eq(ps_op_name(0x77, buf, sizeof(buf)), "op 0x77");
	cr_expect_eq(PS_IOV_ADD, 1);
	cr_expect_eq(PS_IOV_HOLE, 2);
	cr_expect_eq(PS_IOV_OPEN, 3);
	cr_expect_eq(PS_IOV_OPEN2, 4);
	cr_expect_eq(PS_IOV_PARENT, 5);
	cr_expect_eq(PS_IOV_GET, 7);
	cr_expect_eq(PS_IOV_FORCE_CLOSE, 0x1024);
}

Test(pswire, get_names_the_bare_pid_only)
{
	/* criu's page_server_get_pages sends the bare pid: dst_id = pid. */
	cr_expect_eq(ps_get_pid(100), 100u);
	cr_expect_eq(ps_get_pid(257), 257u);
	cr_expect_eq(ps_get_pid(4194304), 4194304u, "pid_max");
	/* The dump side's form is not a GET's: it names another number, never pid 100. */
	cr_expect_eq(ps_get_pid(100 << 8 | 1), 25601u);
	cr_expect_neq(ps_get_pid(100 << 8 | 1), 100u);
	cr_expect_eq(ps_get_pid(0), 0u);
	cr_expect_eq(ps_get_pid(1ull << 31), 0u, "more than an int");
	cr_expect_eq(ps_get_pid(1ull << 60 | 1), 0u);
}

/* ---- the request queue ---- */

static struct rreq *req(uint64_t target, uint64_t addr, uint64_t nr, bool urgent)
{
	struct rreq *r = calloc(1, sizeof(*r));

	cr_assert_not_null(r);
	*r = (struct rreq){ .target_id = target, .addr = addr, .img = addr, .nr = nr, .pid = 1,
			    .urgent = urgent };
	return r;
}

Test(rqueue, faults_go_before_background)
{
	struct rqueue q;
	struct rreq *b1 = req(1, 0x100000, 64, false), *b2 = req(1, 0x140000, 64, false);
	struct rreq *f = req(2, 0x900000, 16, true);

	rq_init(&q, 8, 4);
	rq_add(&q, b1);
	rq_add(&q, b2);
	rq_add(&q, f);
	cr_expect_eq(rq_next(&q), f, "the fault first, though queued last");
	cr_expect_eq(rq_next(&q), b1);
	cr_expect_eq(rq_next(&q), b2);
	cr_expect_null(rq_next(&q));
	/* Answers come in the order sent. */
	cr_expect_eq(rq_head(&q), f);
	cr_expect_eq(rq_done(&q), f);
	cr_expect_eq(rq_done(&q), b1);
	cr_expect_eq(rq_done(&q), b2);
	cr_expect_null(rq_done(&q));
	cr_expect_eq(q.nr_fly, 0);
	cr_expect_eq(q.nr_fly_bg, 0);
	free(f);
	free(b1);
	free(b2);
}

Test(rqueue, limits_in_flight)
{
	struct rqueue q;
	struct rreq *r[6];

	rq_init(&q, 4, 2);
	for (int i = 0; i < 3; i++)
		rq_add(&q, r[i] = req(1, 0x100000 + i * 0x40000, 64, false));
	cr_expect(rq_next(&q));
	cr_expect(rq_next(&q));
	cr_expect_null(rq_next(&q), "two background requests in flight at most");
	cr_expect_not(rq_bg_room(&q));
	/* Faults still go, up to the total. */
	rq_add(&q, r[3] = req(1, 0x900000, 1, true));
	rq_add(&q, r[4] = req(1, 0x901000, 1, true));
	rq_add(&q, r[5] = req(1, 0x902000, 1, true));
	cr_expect_eq(rq_next(&q), r[3]);
	cr_expect_eq(rq_next(&q), r[4]);
	cr_expect_null(rq_next(&q), "four in flight at most");
	free(rq_done(&q));
	cr_expect_eq(rq_next(&q), r[5], "room again: the fault before the waiting background one");
	rq_clear(&q);
	cr_expect_eq(q.nr_fly + q.nr_pend, 0);
	cr_expect(rq_bg_room(&q));
}

Test(rqueue, covers_and_promotes)
{
	struct rqueue q;
	struct rreq *sent = req(1, 0x100000, 16, false), *waiting = req(1, 0x200000, 64, false);
	struct rreq *other = req(2, 0x200000, 64, false), *f = req(3, 0x1000, 1, true);

	rq_init(&q, 8, 1);
	rq_add(&q, sent);
	cr_expect_eq(rq_next(&q), sent);
	rq_add(&q, waiting);
	rq_add(&q, other);
	rq_add(&q, f);
	cr_expect_eq(rq_covers(&q, 1, 0x100000), sent);
	cr_expect_eq(rq_covers(&q, 1, 0x10f000), sent);
	cr_expect_null(rq_covers(&q, 1, 0x110000), "one past the end");
	cr_expect_eq(rq_covers(&q, 1, 0x23f000), waiting);
	cr_expect_eq(rq_covers(&q, 2, 0x23f000), other, "by target");
	cr_expect_null(rq_covers(&q, 3, 0x200000));
	cr_expect_eq(rq_next_start(&q, 1, 0x100000), 0x200000u);
	cr_expect_eq(rq_next_start(&q, 1, 0x200000), UINT64_MAX);
	/* Sent requests stay where they are; a waiting background one jumps ahead. */
	cr_expect_not(rq_promote(&q, sent));
	cr_expect(rq_promote(&q, waiting));
	cr_expect_not(rq_promote(&q, waiting), "once");
	cr_expect_eq(rq_next(&q), f, "faults keep their order");
	cr_expect_eq(rq_next(&q), waiting, "then the promoted one, before any background one");
	cr_expect_null(rq_next(&q), "the background cap (1) is taken by the first request");
	cr_expect_eq(rq_done(&q), sent);
	free(sent);
	cr_expect_eq(rq_next(&q), other);
	cr_expect_eq(q.nr_fly_bg, 1, "the promoted one counts as a fault");
	rq_clear(&q);
}

Test(rqueue, promote_keeps_the_tail)
{
	struct rqueue q;
	struct rreq *a = req(1, 0x1000, 1, false), *b = req(1, 0x2000, 1, false);
	struct rreq *c = req(1, 0x3000, 1, false);

	rq_init(&q, 8, 8);
	rq_add(&q, a);
	rq_add(&q, b);
	cr_expect(rq_promote(&q, b), "the last one: the tail must move back");
	rq_add(&q, c);
	cr_expect_eq(rq_next(&q), b);
	cr_expect_eq(rq_next(&q), a);
	cr_expect_eq(rq_next(&q), c, "C was queued behind A, not lost");
	rq_clear(&q);
}

/* A broken connection: what was in flight goes back in front, in the order it was sent. */
Test(rqueue, requeue_after_a_cut)
{
	struct rqueue q;
	struct rreq *f1 = req(1, 0x100000, 16, true), *b1 = req(1, 0x200000, 64, false);
	struct rreq *f2 = req(2, 0x300000, 16, true), *b2 = req(1, 0x400000, 64, false);
	struct rreq *f3 = req(3, 0x500000, 16, true), *b3 = req(1, 0x600000, 64, false);

	rq_init(&q, 3, 4);
	rq_add(&q, f1);
	rq_add(&q, b1);
	rq_add(&q, f2);
	cr_assert_eq(rq_next(&q), f1);
	cr_assert_eq(rq_next(&q), f2);
	cr_assert_eq(rq_next(&q), b1);
	/* Not sent yet: one of each kind. */
	rq_add(&q, f3);
	rq_add(&q, b2);
	rq_add(&q, b3);
	rq_requeue(&q);
	cr_expect_eq(q.nr_fly, 0);
	cr_expect_eq(q.nr_fly_bg, 0);
	cr_expect_eq(q.nr_pend, 6);
	cr_expect_null(rq_head(&q), "nothing in flight after a cut");
	cr_expect_not(f1->sent);
	cr_expect_not(b1->sent);
	/* Still covered: a fault there waits for the request asked again. */
	cr_expect_eq(rq_covers(&q, 1, 0x200000 + 4096), b1);
	cr_expect_eq(rq_next(&q), f1);
	cr_expect_eq(rq_next(&q), f2);
	cr_expect_eq(rq_next(&q), f3);
	cr_expect_null(rq_next(&q), "at most 3 in flight");
	cr_expect_eq(rq_done(&q), f1);
	cr_expect_eq(rq_next(&q), b1, "the background request sent before the cut goes first");
	cr_expect_eq(rq_done(&q), f2);
	cr_expect_eq(rq_next(&q), b2);
	cr_expect_eq(rq_done(&q), f3);
	cr_expect_eq(rq_next(&q), b3);
	cr_expect_eq(q.nr_pend, 0);
	/* A requeue of an empty flight changes nothing. */
	while (rq_done(&q))
		;
	rq_requeue(&q);
	cr_expect_eq(q.nr_pend, 0);
	cr_expect_null(rq_next(&q));
	free(f1);
	free(f2);
	free(f3);
	free(b1);
	free(b2);
	free(b3);
}
