/* Builders and raw readers of CRIU-format image dirs for tests. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"
#include "imgfix.h"
#include "imgtask.h"
#include "inventory.pb-c.h"
#include "mm.pb-c.h"
#include "pagemap.pb-c.h"
#include "pstree.pb-c.h"
#include "vma.pb-c.h"

/* Stop the test: its setup failed, which no assertion can describe better. */
static void __attribute__((noreturn, format(printf, 1, 2))) fix_die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "imgfix: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	abort();
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	if (remove(path) < 0)
		fprintf(stderr, "imgfix: remove %s: %s\n", path, strerror(errno));
	return 0;
}

/* Finish writer W, or die naming the file. */
static void finish(struct img_writer *w)
{
	struct img_err err;

	if (img_finish(w, &err) < 0)
		fix_die("%s", err.msg);
}

static void put(struct img_writer *w, const ProtobufCMessage *m)
{
	struct img_err err;

	if (img_write(w, m, &err) < 0)
		fix_die("%s", err.msg);
}

static void create(struct img_writer *w, int dirfd, const char *name, uint32_t magic)
{
	struct img_err err;

	if (img_create(w, dirfd, name, magic, &err) < 0)
		fix_die("%s", err.msg);
}

uint64_t fix_pat(uint64_t seed, uint64_t widx)
{
	uint64_t x = seed ^ (widx * 0x9E3779B97F4A7C15ULL);

	x ^= x >> 31;
	x *= 0xBF58476D1CE4E5B9ULL;
	x ^= x >> 29;
	return x;
}

uint64_t fix_word(uint32_t gen, uint64_t addr)
{
	return 0xA500000000000000ull ^ (uint64_t)(gen & 0xff) << 48 ^ addr;
}

void fix_tmp_make(struct fix_tmp *t)
{
	snprintf(t->path, sizeof(t->path), "/tmp/uffd-imgtest-XXXXXX");
	if (!mkdtemp(t->path))
		fix_die("mkdtemp: %s", strerror(errno));
	t->fd = open(t->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (t->fd < 0)
		fix_die("open %s: %s", t->path, strerror(errno));
}

void fix_tmp_remove(struct fix_tmp *t)
{
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
	if (t->path[0])
		nftw(t->path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	t->path[0] = '\0';
}

int fix_mkdir(int dirfd, const char *name)
{
	int fd;

	if (mkdirat(dirfd, name, 0755) < 0)
		fix_die("mkdir %s: %s", name, strerror(errno));
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		fix_die("open %s: %s", name, strerror(errno));
	return fd;
}

void fix_symlink(int dirfd, const char *name, const char *target)
{
	if (symlinkat(target, dirfd, name) < 0)
		fix_die("symlink %s -> %s: %s", name, target, strerror(errno));
}

int fix_open_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		fix_die("open %s: %s", path, strerror(errno));
	return fd;
}

void fix_write_file(int dirfd, const char *name, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		fix_die("create %s: %s", name, strerror(errno));
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			fix_die("write %s: %s", name, strerror(errno));
		p += n;
		len -= n;
	}
	close(fd);
}

uint8_t *fix_read_file(int dirfd, const char *name, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	size_t got = 0;
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0) {
		close(fd);
		return NULL;
	}
	buf = malloc(st.st_size ? st.st_size : 1);
	if (!buf)
		fix_die("out of memory");
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			fix_die("read %s: %s", name, n ? strerror(errno) : "short");
		got += n;
	}
	close(fd);
	*len = got;
	return buf;
}

void fix_truncate(int dirfd, const char *name, uint64_t len)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CLOEXEC);

	if (fd < 0 || ftruncate(fd, len) < 0)
		fix_die("truncate %s: %s", name, strerror(errno));
	close(fd);
}

void fix_unlink(int dirfd, const char *name)
{
	if (unlinkat(dirfd, name, 0) < 0)
		fix_die("unlink %s: %s", name, strerror(errno));
}

int fix_parse_records(struct fix_recs *out, int dirfd, const char *name, uint32_t magic)
{
	size_t off, cap = 0;

	memset(out, 0, sizeof(*out));
	out->buf = fix_read_file(dirfd, name, &out->len);
	if (!out->buf)
		return -errno;
	if (magic == IMG_INVENTORY_MAGIC) {
		if (out->len < 4 || le32(out->buf) != magic)
			goto bad;
		off = 4;
	} else {
		if (out->len < 8 || le32(out->buf) != IMG_COMMON_MAGIC ||
		    le32(out->buf + 4) != magic)
			goto bad;
		off = 8;
	}
	while (off < out->len) {
		uint32_t size;

		if (out->len - off < 4)
			goto bad;
		size = le32(out->buf + off);
		if (size > out->len - off - 4)
			goto bad;
		if (out->n == cap) {
			cap = cap ? 2 * cap : 16;
			out->r = realloc(out->r, cap * sizeof(*out->r));
			if (!out->r)
				fix_die("out of memory");
		}
		out->r[out->n].off = off;
		out->r[out->n].len = size;
		out->r[out->n].data = out->buf + off + 4;
		out->n++;
		off += 4 + (size_t)size;
	}
	return 0;
bad:
	fix_recs_free(out);
	return -EINVAL;
}

void fix_recs_free(struct fix_recs *rs)
{
	free(rs->buf);
	free(rs->r);
	memset(rs, 0, sizeof(*rs));
}

uint32_t fix_pe_flags(const struct fix_pe *pe)
{
	uint32_t f = (pe->enc & FIX_NOFLAGS) ? 0 : pe->flags;

	if (pe->enc & FIX_INPARENT)
		return f | PE_PARENT;
	if (pe->enc & FIX_NOFLAGS)
		return PE_PRESENT;
	return f;
}

void fix_write_pagemap(int dirfd, uint32_t pid, uint32_t pages_id, const struct fix_pe *pe,
		       size_t n)
{
	PagemapHead head = PAGEMAP_HEAD__INIT;
	struct img_writer w;
	char name[32];

	snprintf(name, sizeof(name), "pagemap-%u.img", pid);
	create(&w, dirfd, name, IMG_PAGEMAP_MAGIC);
	head.pages_id = pages_id;
	put(&w, &head.base);
	for (size_t i = 0; i < n; i++) {
		PagemapEntry e = PAGEMAP_ENTRY__INIT;

		e.vaddr = pe[i].vaddr;
		if (pe[i].enc & FIX_COMPAT) {
			e.compat_nr_pages = (uint32_t)pe[i].nr;
		} else {
			e.has_nr_pages = true;
			e.nr_pages = pe[i].nr;
		}
		if (!(pe[i].enc & FIX_NOFLAGS)) {
			e.has_flags = true;
			e.flags = pe[i].flags;
		}
		if (pe[i].enc & FIX_INPARENT) {
			e.has_in_parent = true;
			e.in_parent = true;
		}
		put(&w, &e.base);
	}
	finish(&w);
}

void fix_write_pages(int dirfd, uint32_t pages_id, uint32_t gen, const struct fix_pe *pe,
		     size_t n)
{
	uint64_t page[PAGE_SIZE_4K / 8];
	char name[32];
	int fd;

	snprintf(name, sizeof(name), "pages-%u.img", pages_id);
	fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		fix_die("create %s: %s", name, strerror(errno));
	for (size_t i = 0; i < n; i++) {
		if (!(fix_pe_flags(&pe[i]) & PE_PRESENT))
			continue;
		for (uint64_t p = 0; p < pe[i].nr; p++) {
			uint64_t a = pe[i].vaddr + p * PAGE_SIZE_4K;

			for (size_t w = 0; w < PAGE_SIZE_4K / 8; w++)
				page[w] = fix_word(gen, a + w * 8);
			if (write(fd, page, sizeof(page)) != (ssize_t)sizeof(page))
				fix_die("write %s: %s", name, strerror(errno));
		}
	}
	close(fd);
}

void fix_write_memory(int dirfd, uint32_t gen, const struct fix_pe *pe, size_t n)
{
	fix_write_pagemap(dirfd, FIX_PID, FIX_PAGES_ID, pe, n);
	fix_write_pages(dirfd, FIX_PAGES_ID, gen, pe, n);
}

void fix_write_mm(int dirfd, uint32_t pid, const struct fix_vma *v, size_t n)
{
	MmEntry mm = MM_ENTRY__INIT;
	VmaEntry *vmas = calloc(n ? n : 1, sizeof(*vmas));
	VmaEntry **pv = calloc(n ? n : 1, sizeof(*pv));
	struct img_writer w;
	char name[32];

	if (!vmas || !pv)
		fix_die("out of memory");
	for (size_t i = 0; i < n; i++) {
		vma_entry__init(&vmas[i]);
		vmas[i].start = v[i].start;
		vmas[i].end = v[i].end;
		vmas[i].prot = 3;		/* PROT_READ | PROT_WRITE */
		vmas[i].flags = 0x22;		/* MAP_PRIVATE | MAP_ANONYMOUS */
		vmas[i].status = VMA_AREA_REGULAR | VMA_ANON_PRIVATE;
		vmas[i].fd = -1;
		pv[i] = &vmas[i];
	}
	mm.n_vmas = n;
	mm.vmas = pv;
	snprintf(name, sizeof(name), "mm-%u.img", pid);
	create(&w, dirfd, name, IMG_MM_MAGIC);
	put(&w, &mm.base);
	finish(&w);
	free(pv);
	free(vmas);
}

void fix_write_pstree(int dirfd, const uint32_t *pids, size_t n)
{
	struct img_writer w;

	create(&w, dirfd, "pstree.img", IMG_PSTREE_MAGIC);
	for (size_t i = 0; i < n; i++) {
		PstreeEntry e = PSTREE_ENTRY__INIT;
		uint32_t tid = pids[i];

		e.pid = pids[i];
		e.ppid = i ? pids[0] : 1;
		e.pgid = pids[0];
		e.sid = pids[0];
		e.n_threads = 1;
		e.threads = &tid;
		put(&w, &e.base);
	}
	finish(&w);
}

void fix_write_inventory(int dirfd)
{
	InventoryEntry inv = INVENTORY_ENTRY__INIT;
	struct img_writer w;

	inv.img_version = IMG_VERSION;
	create(&w, dirfd, "inventory.img", IMG_INVENTORY_MAGIC);
	put(&w, &inv.base);
	finish(&w);
}

const struct fix_vma fix_std_vmas[] = {
	{ 0x10000, 0x14000 },
	{ 0x14000, 0x20000 },	/* adjacent to the first */
	{ 0x40000, 0x50000 },
};
const size_t fix_std_nvmas = sizeof(fix_std_vmas) / sizeof(fix_std_vmas[0]);

const struct fix_pe fix_std_pes[] = {
	{ 0x10000, 2, PE_PRESENT, 0 },			/* record 2 */
	{ 0x13000, 2, PE_PRESENT, 0 },			/* record 3: across VMAs 0 and 1 */
	{ 0x18000, 4, PE_LAZY | PE_PRESENT, 0 },	/* record 4 */
	{ 0x40000, 2, PE_LAZY, 0 },			/* record 5 */
	{ 0x44000, 1, PE_PRESENT, 0 },			/* record 6 */
};
const size_t fix_std_npes = sizeof(fix_std_pes) / sizeof(fix_std_pes[0]);

void fix_write_std_task(int dirfd)
{
	uint32_t pid = FIX_PID;

	fix_write_inventory(dirfd);
	fix_write_pstree(dirfd, &pid, 1);
	fix_write_mm(dirfd, FIX_PID, fix_std_vmas, fix_std_nvmas);
	fix_write_memory(dirfd, 1, fix_std_pes, fix_std_npes);
}
