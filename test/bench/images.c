/* Image dirs for the bench: one lazy anonymous area of pattern data (or a sparse pages file). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "image.h"
#include "imgtask.h"
#include "inventory.pb-c.h"
#include "mm.pb-c.h"
#include "pagemap.h"
#include "pagemap.pb-c.h"
#include "pstree.pb-c.h"
#include "tserve.h"

#define CHUNK	(1u << 20)

static uint64_t sum_len, sum_val;

static void put(struct img_writer *w, const ProtobufCMessage *m)
{
	struct img_err err;

	if (img_write(w, m, &err) < 0)
		b_die("%s", err.msg);
}

static void create(struct img_writer *w, int dfd, const char *name, uint32_t magic)
{
	struct img_err err;

	if (img_create(w, dfd, name, magic, &err) < 0)
		b_die("%s", err.msg);
}

static void finish(struct img_writer *w)
{
	struct img_err err;

	if (img_finish(w, &err) < 0)
		b_die("%s", err.msg);
}

void bimg_write(const char *dir, uint64_t len, bool sparse)
{
	InventoryEntry inv = INVENTORY_ENTRY__INIT;
	PstreeEntry ps = PSTREE_ENTRY__INIT;
	MmEntry mm = MM_ENTRY__INIT;
	VmaEntry vma = VMA_ENTRY__INIT, *vp = &vma;
	PagemapHead ph = PAGEMAP_HEAD__INIT;
	PagemapEntry pe = PAGEMAP_ENTRY__INIT;
	struct img_writer w;
	char name[64];
	int dfd, pfd;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		b_die("mkdir %s: %s", dir, strerror(errno));
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		b_die("open %s: %s", dir, strerror(errno));

	inv.img_version = IMG_VERSION;
	create(&w, dfd, "inventory.img", IMG_INVENTORY_MAGIC);
	put(&w, &inv.base);
	finish(&w);

	ps.pid = ps.pgid = ps.sid = B_IMAGE_ID;
	create(&w, dfd, "pstree.img", IMG_PSTREE_MAGIC);
	put(&w, &ps.base);
	finish(&w);

	vma.start = B_BASE;
	vma.end = B_BASE + len;
	vma.prot = PROT_READ | PROT_WRITE;
	vma.flags = MAP_PRIVATE | MAP_ANONYMOUS;
	vma.status = VMA_AREA_REGULAR | VMA_ANON_PRIVATE;
	vma.fd = -1;
	mm.n_vmas = 1;
	mm.vmas = &vp;
	snprintf(name, sizeof(name), "mm-%u.img", B_IMAGE_ID);
	create(&w, dfd, name, IMG_MM_MAGIC);
	put(&w, &mm.base);
	finish(&w);

	snprintf(name, sizeof(name), "pagemap-%u.img", B_IMAGE_ID);
	create(&w, dfd, name, IMG_PAGEMAP_MAGIC);
	ph.pages_id = 1;
	put(&w, &ph.base);
	pe.vaddr = B_BASE;
	pe.has_nr_pages = 1;
	pe.nr_pages = len / B_PAGE;
	pe.compat_nr_pages = (uint32_t)pe.nr_pages;
	pe.has_flags = 1;
	pe.flags = PE_LAZY | PE_PRESENT;
	put(&w, &pe.base);
	finish(&w);

	pfd = openat(dfd, "pages-1.img", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (pfd < 0)
		b_die("pages-1.img: %s", strerror(errno));
	if (sparse) {
		if (ftruncate(pfd, (off_t)len) < 0)
			b_die("ftruncate: %s", strerror(errno));
	} else {
		uint64_t *buf = malloc(CHUNK), sum = 0;

		if (!buf)
			b_die("out of memory");
		for (uint64_t off = 0; off < len; off += CHUNK) {
			uint64_t n = len - off < CHUNK ? len - off : CHUNK;

			for (uint64_t k = 0; k < n / 8; k++) {
				buf[k] = ts_word(B_SEED, B_BASE + off + k * 8);
				sum += buf[k];
			}
			if (write(pfd, buf, n) != (ssize_t)n)
				b_die("write pages: %s", strerror(errno));
		}
		free(buf);
		/* On disk before the measures start: no writeback under them. */
		if (fsync(pfd) < 0)
			b_die("fsync pages: %s", strerror(errno));
		sum_len = len;
		sum_val = sum;
	}
	close(pfd);
	close(dfd);
}

uint64_t bimg_sum(uint64_t len)
{
	return len == sum_len ? sum_val : 0;
}
