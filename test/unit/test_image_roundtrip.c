/*
 * Records written with img_create/img_write/img_finish read back equal:
 * field by field, by their packed bytes, and by the test's own reading of
 * the file framing.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "image.h"
#include "imgfix.h"
#include "imgtask.h"
#include "inventory.pb-c.h"
#include "mm.pb-c.h"
#include "pagemap.pb-c.h"
#include "pstree.pb-c.h"
#include "vma.pb-c.h"

static struct fix_tmp tmp;

static void tmp_setup(void)
{
	fix_tmp_make(&tmp);
}

static void tmp_teardown(void)
{
	fix_tmp_remove(&tmp);
}

TestSuite(image_roundtrip, .init = tmp_setup, .fini = tmp_teardown);

/* Check that A and B pack to the same bytes. */
static void assert_same_packed(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
	size_t la = protobuf_c_message_get_packed_size(a);
	size_t lb = protobuf_c_message_get_packed_size(b);
	uint8_t *pa, *pb;

	cr_assert_eq(la, lb, "%s: packed sizes %zu and %zu", a->descriptor->name, la, lb);
	pa = malloc(la + 1);
	pb = malloc(lb + 1);
	cr_assert(pa && pb);
	cr_assert_eq(protobuf_c_message_pack(a, pa), la);
	cr_assert_eq(protobuf_c_message_pack(b, pb), lb);
	cr_assert_arr_eq(pa, pb, la, "%s: packed bytes differ", a->descriptor->name);
	free(pa);
	free(pb);
}

/* Write MSGS to NAME, then check the framing by hand: magic, and each record the packed message. */
static void write_and_check_framing(const char *name, uint32_t magic,
				    const ProtobufCMessage *const *msgs, size_t n)
{
	struct img_err err = { "" };
	struct img_writer w;
	struct fix_recs rs;

	cr_assert_eq(img_create(&w, tmp.fd, name, magic, &err), 0, "%s", err.msg);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(img_write(&w, msgs[i], &err), 0, "%s", err.msg);
	cr_assert_eq(w.rec, n);
	cr_assert_eq(img_finish(&w, &err), 0, "%s", err.msg);

	cr_assert_eq(fix_parse_records(&rs, tmp.fd, name, magic), 0, "%s: bad framing", name);
	cr_assert_eq(rs.n, n);
	for (size_t i = 0; i < n; i++) {
		size_t len = protobuf_c_message_get_packed_size(msgs[i]);
		uint8_t *p = malloc(len + 1);

		cr_assert_not_null(p);
		protobuf_c_message_pack(msgs[i], p);
		cr_assert_eq(rs.r[i].len, len, "%s record %zu: size", name, i + 1);
		cr_assert_arr_eq(rs.r[i].data, p, len, "%s record %zu: bytes", name, i + 1);
		free(p);
	}
	fix_recs_free(&rs);
}

/* Read NAME back with the library: N records of DESC, then a clean end. */
static void read_back(const char *name, uint32_t magic, const ProtobufCMessageDescriptor *desc,
		      ProtobufCMessage **out, size_t n)
{
	struct img_err err = { "" };
	struct img_reader r;
	ProtobufCMessage *m;

	cr_assert_eq(img_open(&r, tmp.fd, name, magic, &err), 0, "%s", err.msg);
	for (size_t i = 0; i < n; i++) {
		cr_assert_eq(img_next(&r, desc, &out[i], &err), 1, "%s record %zu: %s", name, i + 1,
			     err.msg);
		cr_assert_eq(r.rec, i + 1);
	}
	cr_assert_eq(img_next(&r, desc, &m, &err), 0, "%s: more than %zu records", name, n);
	cr_assert_null(m);
	img_close(&r);
}

Test(image_roundtrip, inventory)
{
	InventoryEntry inv = INVENTORY_ENTRY__INIT, *back;
	const ProtobufCMessage *msgs[] = { &inv.base };
	struct img_err err = { "" };
	size_t len;
	uint8_t *raw;

	inv.img_version = IMG_VERSION;
	inv.has_fdinfo_per_id = true;
	inv.fdinfo_per_id = true;
	inv.has_ns_per_id = true;
	inv.ns_per_id = false;
	inv.has_root_cg_set = true;
	inv.root_cg_set = 7;
	inv.has_dump_uptime = true;
	inv.dump_uptime = 123456789012ull;
	write_and_check_framing("inventory.img", IMG_INVENTORY_MAGIC, msgs, 1);

	raw = fix_read_file(tmp.fd, "inventory.img", &len);
	cr_assert_not_null(raw);
	cr_assert_eq(raw[0] | raw[1] << 8 | raw[2] << 16 | (uint32_t)raw[3] << 24,
		     IMG_INVENTORY_MAGIC, "inventory.img has its own single magic");
	free(raw);

	cr_assert_eq(img_read_one(tmp.fd, "inventory.img", IMG_INVENTORY_MAGIC,
				  &inventory_entry__descriptor, (ProtobufCMessage **)&back, &err),
		     0, "%s", err.msg);
	cr_assert_eq(back->img_version, IMG_VERSION);
	cr_assert(back->has_fdinfo_per_id && back->fdinfo_per_id);
	cr_assert(back->has_ns_per_id && !back->ns_per_id);
	cr_assert(back->has_root_cg_set && back->root_cg_set == 7);
	cr_assert(back->has_dump_uptime && back->dump_uptime == 123456789012ull);
	assert_same_packed(&inv.base, &back->base);
	inventory_entry__free_unpacked(back, NULL);
}

Test(image_roundtrip, pstree_with_threads)
{
	static uint32_t t0[] = { 1000, 1001, 1002 }, t1[] = { 1003 }, t2[] = { 1004, 1005 };
	static uint32_t *threads[] = { t0, t1, t2 };
	static const size_t nthr[] = { 3, 1, 2 };
	static const uint32_t ids[][4] = {	/* pid, ppid, pgid, sid */
		{ 1000, 1, 1000, 999 },
		{ 1003, 1000, 1000, 999 },
		{ 1004, 1000, 1004, 999 },
	};
	PstreeEntry e[3];
	const ProtobufCMessage *msgs[3];
	ProtobufCMessage *back[3];

	for (size_t i = 0; i < 3; i++) {
		pstree_entry__init(&e[i]);
		e[i].pid = ids[i][0];
		e[i].ppid = ids[i][1];
		e[i].pgid = ids[i][2];
		e[i].sid = ids[i][3];
		e[i].n_threads = nthr[i];
		e[i].threads = threads[i];
		msgs[i] = &e[i].base;
	}
	write_and_check_framing("pstree.img", IMG_PSTREE_MAGIC, msgs, 3);
	read_back("pstree.img", IMG_PSTREE_MAGIC, &pstree_entry__descriptor, back, 3);
	for (size_t i = 0; i < 3; i++) {
		const PstreeEntry *b = (const PstreeEntry *)back[i];

		cr_assert_eq(b->pid, ids[i][0]);
		cr_assert_eq(b->ppid, ids[i][1]);
		cr_assert_eq(b->pgid, ids[i][2]);
		cr_assert_eq(b->sid, ids[i][3]);
		cr_assert_eq(b->n_threads, nthr[i]);
		cr_assert_arr_eq(b->threads, threads[i], nthr[i] * sizeof(uint32_t));
		assert_same_packed(msgs[i], back[i]);
		protobuf_c_message_free_unpacked(back[i], NULL);
	}
}

Test(image_roundtrip, mm_with_vmas_auxv_and_optional_fields)
{
	static uint64_t auxv[] = { 33, 0x7ffc1000, 16, 0xbfebfbff, 6, 4096, 0, 0 };
	MmEntry mm = MM_ENTRY__INIT, *b;
	VmaEntry v[4], *pv[4];
	AioRingEntry aio = AIO_RING_ENTRY__INIT, *paio = &aio;
	const ProtobufCMessage *msgs[] = { &mm.base };
	struct img_err err = { "" };
	uint64_t *fields[11] = {
		&mm.mm_start_code, &mm.mm_end_code, &mm.mm_start_data, &mm.mm_end_data,
		&mm.mm_start_stack, &mm.mm_start_brk, &mm.mm_brk, &mm.mm_arg_start,
		&mm.mm_arg_end, &mm.mm_env_start, &mm.mm_env_end,
	};

	for (size_t i = 0; i < 11; i++)
		*fields[i] = 0x555500000000ull + i * 0x1000;
	mm.exe_file_id = 42;
	mm.n_mm_saved_auxv = 8;
	mm.mm_saved_auxv = auxv;
	for (size_t i = 0; i < 4; i++) {
		vma_entry__init(&v[i]);
		v[i].start = 0x400000 + i * 0x10000;
		v[i].end = v[i].start + 0x8000;
		v[i].pgoff = i * 8;
		v[i].shmid = i == 2 ? 77 : 0;
		v[i].prot = 1 + i;
		v[i].flags = 0x22;
		v[i].status = i == 3 ? (VMA_AREA_REGULAR | VMA_AREA_STACK) : VMA_AREA_REGULAR;
		v[i].fd = i == 1 ? -9000000000ll : -1;	/* sint64: zigzag both ways */
		pv[i] = &v[i];
	}
	v[0].has_madv = true;
	v[0].madv = 1ull << 40;
	v[1].has_fdflags = true;
	v[1].fdflags = 02000000;
	mm.n_vmas = 4;
	mm.vmas = pv;
	mm.has_dumpable = true;
	mm.dumpable = 1;
	aio.id = 0xaaaa;
	aio.nr_req = 128;
	aio.ring_len = 8192;
	mm.n_aios = 1;
	mm.aios = &paio;
	mm.has_thp_disabled = true;
	mm.thp_disabled = true;

	write_and_check_framing("mm-1000.img", IMG_MM_MAGIC, msgs, 1);
	cr_assert_eq(img_read_one(tmp.fd, "mm-1000.img", IMG_MM_MAGIC, &mm_entry__descriptor,
				  (ProtobufCMessage **)&b, &err), 0, "%s", err.msg);
	{
		uint64_t *got[11] = {
			&b->mm_start_code, &b->mm_end_code, &b->mm_start_data, &b->mm_end_data,
			&b->mm_start_stack, &b->mm_start_brk, &b->mm_brk, &b->mm_arg_start,
			&b->mm_arg_end, &b->mm_env_start, &b->mm_env_end,
		};

		for (size_t i = 0; i < 11; i++)
			cr_assert_eq(*got[i], *fields[i], "mm field %zu", i + 1);
	}
	cr_assert_eq(b->exe_file_id, 42);
	cr_assert_eq(b->n_mm_saved_auxv, 8);
	cr_assert_arr_eq(b->mm_saved_auxv, auxv, sizeof(auxv));
	cr_assert_eq(b->n_vmas, 4);
	for (size_t i = 0; i < 4; i++) {
		const VmaEntry *x = b->vmas[i];

		cr_assert_eq(x->start, v[i].start);
		cr_assert_eq(x->end, v[i].end);
		cr_assert_eq(x->pgoff, v[i].pgoff);
		cr_assert_eq(x->shmid, v[i].shmid);
		cr_assert_eq(x->prot, v[i].prot);
		cr_assert_eq(x->flags, v[i].flags);
		cr_assert_eq(x->status, v[i].status);
		cr_assert_eq(x->fd, v[i].fd, "vma %zu fd %lld", i, (long long)x->fd);
		cr_assert_eq(x->has_madv, v[i].has_madv);
		cr_assert_eq(x->madv, v[i].madv);
		cr_assert_eq(x->has_fdflags, v[i].has_fdflags);
		cr_assert_eq(x->fdflags, v[i].fdflags);
	}
	cr_assert(b->has_dumpable && b->dumpable == 1);
	cr_assert(b->has_thp_disabled && b->thp_disabled);
	cr_assert_eq(b->n_aios, 1);
	cr_assert(b->aios[0]->id == 0xaaaa && b->aios[0]->nr_req == 128 &&
		  b->aios[0]->ring_len == 8192);
	assert_same_packed(&mm.base, &b->base);
	mm_entry__free_unpacked(b, NULL);
}

Test(image_roundtrip, pagemap_head_and_entries)
{
	static const struct {
		uint64_t vaddr, nr;
		bool has_flags, compat_only, in_parent;
		uint32_t flags;
	} in[] = {
		{ 0x10000, 1, true, false, false, PE_PRESENT },
		{ 0x20000, 300, true, false, false, PE_LAZY | PE_PRESENT },
		{ 0x7f0000000000ull, 1u << 20, true, false, false, PE_LAZY },
		{ 0x7f0100000000ull, 17, false, true, false, 0 },	/* compat_nr_pages only */
		{ 0x7f0200000000ull, 2, false, false, true, 0 },	/* in_parent, no flags */
		{ 0x7f0300000000ull, 3, true, false, false, PE_PARENT },
	};
	enum { N = sizeof(in) / sizeof(in[0]) };
	PagemapHead head = PAGEMAP_HEAD__INIT;
	PagemapEntry e[N];
	const ProtobufCMessage *msgs[N + 1];
	ProtobufCMessage *back[N + 1];
	const PagemapHead *bh;

	head.pages_id = 7;
	msgs[0] = &head.base;
	for (size_t i = 0; i < N; i++) {
		pagemap_entry__init(&e[i]);
		e[i].vaddr = in[i].vaddr;
		if (in[i].compat_only) {
			e[i].compat_nr_pages = in[i].nr;
		} else {
			e[i].has_nr_pages = true;
			e[i].nr_pages = in[i].nr;
		}
		e[i].has_flags = in[i].has_flags;
		e[i].flags = in[i].flags;
		e[i].has_in_parent = in[i].in_parent;
		e[i].in_parent = in[i].in_parent;
		msgs[i + 1] = &e[i].base;
	}
	write_and_check_framing("pagemap-1000.img", IMG_PAGEMAP_MAGIC, msgs, N + 1);

	{
		struct img_err err = { "" };
		struct img_reader r;

		cr_assert_eq(img_open(&r, tmp.fd, "pagemap-1000.img", IMG_PAGEMAP_MAGIC, &err), 0);
		cr_assert_eq(img_next(&r, &pagemap_head__descriptor, &back[0], &err), 1, "%s",
			     err.msg);
		for (size_t i = 0; i < N; i++)
			cr_assert_eq(img_next(&r, &pagemap_entry__descriptor, &back[i + 1],
					      &err), 1, "%s", err.msg);
		cr_assert_eq(img_next(&r, &pagemap_entry__descriptor, &(ProtobufCMessage *){ NULL },
				      &err), 0);
		img_close(&r);
	}
	bh = (const PagemapHead *)back[0];
	cr_assert_eq(bh->pages_id, 7);
	assert_same_packed(&head.base, back[0]);
	for (size_t i = 0; i < N; i++) {
		const PagemapEntry *b = (const PagemapEntry *)back[i + 1];

		cr_assert_eq(b->vaddr, in[i].vaddr);
		cr_assert_eq(b->has_nr_pages, !in[i].compat_only, "entry %zu", i);
		cr_assert_eq(in[i].compat_only ? b->compat_nr_pages : b->nr_pages, in[i].nr);
		cr_assert_eq(b->compat_nr_pages, in[i].compat_only ? in[i].nr : 0);
		cr_assert_eq(b->has_flags, in[i].has_flags);
		cr_assert_eq(b->flags, in[i].flags);
		cr_assert_eq(b->has_in_parent, in[i].in_parent);
		cr_assert_eq(b->in_parent, in[i].in_parent);
		assert_same_packed(msgs[i + 1], back[i + 1]);
	}
	for (size_t i = 0; i <= N; i++)
		protobuf_c_message_free_unpacked(back[i], NULL);
}

/* More records than the writer buffers at once, and one record larger than its buffer. */
Test(image_roundtrip, writer_flushes_and_grows_past_its_buffer)
{
	enum { NREC = 200000, NVMA = 60000 };
	struct img_err err = { "" };
	struct img_writer w;
	struct img_reader r;
	ProtobufCMessage *m;
	PagemapHead head = PAGEMAP_HEAD__INIT;
	MmEntry mm = MM_ENTRY__INIT, *b;
	VmaEntry *v = calloc(NVMA, sizeof(*v));
	VmaEntry **pv = calloc(NVMA, sizeof(*pv));
	size_t n = 0;
	int ret;

	cr_assert(v && pv);
	head.pages_id = 1;
	cr_assert_eq(img_create(&w, tmp.fd, "pagemap-1.img", IMG_PAGEMAP_MAGIC, &err), 0);
	cr_assert_eq(img_write(&w, &head.base, &err), 0);
	for (size_t i = 0; i < NREC; i++) {
		PagemapEntry e = PAGEMAP_ENTRY__INIT;

		e.vaddr = 0x100000000ull + i * 0x2000;
		e.has_nr_pages = true;
		e.nr_pages = 1;
		e.has_flags = true;
		e.flags = PE_PRESENT;
		cr_assert_eq(img_write(&w, &e.base, &err), 0, "%s", err.msg);
	}
	cr_assert_eq(img_finish(&w, &err), 0, "%s", err.msg);
	cr_assert_eq(img_open(&r, tmp.fd, "pagemap-1.img", IMG_PAGEMAP_MAGIC, &err), 0);
	cr_assert_gt(r.len, 1u << 20, "the file should outgrow the 1 MiB write buffer");
	cr_assert_eq(img_next(&r, &pagemap_head__descriptor, &m, &err), 1);
	protobuf_c_message_free_unpacked(m, NULL);
	while ((ret = img_next(&r, &pagemap_entry__descriptor, &m, &err)) > 0) {
		cr_assert_eq(((PagemapEntry *)m)->vaddr, 0x100000000ull + n * 0x2000);
		protobuf_c_message_free_unpacked(m, NULL);
		n++;
	}
	cr_assert_eq(ret, 0, "%s", err.msg);
	cr_assert_eq(n, NREC);
	img_close(&r);

	for (size_t i = 0; i < NVMA; i++) {
		vma_entry__init(&v[i]);
		v[i].start = 0x10000000ull + i * 0x2000;
		v[i].end = v[i].start + 0x1000;
		v[i].fd = -1;
		pv[i] = &v[i];
	}
	mm.n_vmas = NVMA;
	mm.vmas = pv;
	cr_assert_gt(protobuf_c_message_get_packed_size(&mm.base), 1u << 20);
	cr_assert_eq(img_create(&w, tmp.fd, "mm-1.img", IMG_MM_MAGIC, &err), 0);
	cr_assert_eq(img_write(&w, &mm.base, &err), 0, "%s", err.msg);
	cr_assert_eq(img_finish(&w, &err), 0, "%s", err.msg);
	cr_assert_eq(img_read_one(tmp.fd, "mm-1.img", IMG_MM_MAGIC, &mm_entry__descriptor,
				  (ProtobufCMessage **)&b, &err), 0, "%s", err.msg);
	cr_assert_eq(b->n_vmas, NVMA);
	assert_same_packed(&mm.base, &b->base);
	mm_entry__free_unpacked(b, NULL);
	free(pv);
	free(v);
}
