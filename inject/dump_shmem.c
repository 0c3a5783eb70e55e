/*
 * Shared memory objects of a dump: see dump_shmem.h.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "dump_area.h"
#include "dump_shmem.h"
#include "files.pb-c.h"
#include "image.h"
#include "pagemap.h"
#include "pagemap.pb-c.h"
#include "why.h"

#define SHM_PAGE	4096ull
#define SHM_CHUNK	(1ull << 20)	/* bytes read at a time */
#define SHM_TMPFS_MAGIC	0x01021994
#define SHM_HUGETLBFS_MAGIC	0x958458f6

#ifndef F_GET_SEALS
#define F_GET_SEALS	1034
#endif

static bool has_suffix(const char *s, const char *suf)
{
	size_t n = strlen(s), k = strlen(suf);

	return n >= k && !strcmp(s + n - k, suf);
}

static bool is_anon_name(const char *name)
{
	return !strcmp(name, "/dev/zero (deleted)") || !strncmp(name, "[anon_shmem:", 12);
}

bool dump_shmem_area(const struct procfs_vma *v)
{
	const char *name = v->name ? v->name : "";

	if (!v->inode || (v->vmflags & (PFV_HT | PFV_PF | PFV_IO | PFV_MM)))
		return false;
	if (v->perms[3] == 's' && is_anon_name(name))
		return true;
	return !strncmp(name, "/memfd:", 7);
}

const struct dump_shmem_obj *dump_shmem_find(const struct dump_shmem *s, uint64_t dev,
					     uint64_t ino)
{
	for (size_t i = 0; s && i < s->n; i++)
		if (s->o[i].dev == dev && s->o[i].ino == ino)
			return &s->o[i];
	return NULL;
}

/* The memfd's name from its maps name or fd link, "/memfd:NAME (deleted)". */
static void memfd_name(const char *link, char *name, size_t len)
{
	size_t k;

	snprintf(name, len, "%s", link + 7);
	k = strlen(name);
	if (has_suffix(name, " (deleted)"))
		name[k - 10] = '\0';
}

/* Open the object at SRC (WHAT and LINK for messages) and add it unless known. */
static int add(struct dump_shmem *s, const char *src, const char *what,
	       const char *link, bool anon)
{
	struct dump_shmem_obj *o, *no;
	struct statfs sfs;
	struct stat st;
	int fd, seals;

	fd = open(src, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;

		return why_set(s->why, sizeof(s->why), e, "%s %s: cannot open %s: %s%s", what,
			       link, src, strerror(e), e == EPERM || e == EACCES ?
			       " (reading a shared memory object through /proc needs root or "
			       "CAP_CHECKPOINT_RESTORE)" : "");
	}
	if (fstat(fd, &st) < 0 || fstatfs(fd, &sfs) < 0) {
		int e = errno;

		close(fd);
		return why_set(s->why, sizeof(s->why), e, "%s: %s", src, strerror(e));
	}
	if (dump_shmem_find(s, st.st_dev, st.st_ino)) {
		close(fd);
		return 0;
	}
	if (!S_ISREG(st.st_mode) || sfs.f_type != SHM_TMPFS_MAGIC) {
		close(fd);
		return why_set(s->why, sizeof(s->why), ENOTSUP, "%s %s is %s: not supported (only "
			       "shmem memfds and shared anonymous memory are)", what, link,
			       sfs.f_type == SHM_HUGETLBFS_MAGIC ? "a hugetlb memfd" :
			       "not a shmem object");
	}
	if (s->n >= DUMP_SHMEM_MAX) {
		close(fd);
		return why_set(s->why, sizeof(s->why), ENOTSUP, "%s %s: more than %d shared "
			       "memory objects in one dump", what, link, DUMP_SHMEM_MAX);
	}
	no = realloc(s->o, (s->n + 1) * sizeof(*no));
	if (!no) {
		close(fd);
		return why_set(s->why, sizeof(s->why), ENOMEM, "out of memory");
	}
	s->o = no;
	o = &s->o[s->n];
	memset(o, 0, sizeof(*o));
	o->dev = st.st_dev;
	o->ino = st.st_ino;
	o->size = (uint64_t)st.st_size;
	o->uid = st.st_uid;
	o->gid = st.st_gid;
	o->mode = st.st_mode;
	seals = fcntl(fd, F_GET_SEALS);
	o->seals = seals < 0 ? 0 : (uint32_t)seals;
	o->anon = anon;
	if (anon)
		snprintf(o->name, sizeof(o->name), "%s", DUMP_SHMEM_NAME);
	else
		memfd_name(link, o->name, sizeof(o->name));
	snprintf(o->src, sizeof(o->src), "%s", src);
	o->fd = fd;
	o->inode_id = (uint32_t)s->n + 1;
	s->n++;
	return 0;
}

/* The memfds open at PID's descriptors. */
static int collect_fds(struct dump_shmem *s, pid_t pid)
{
	char dpath[64];
	struct dirent *de;
	DIR *d;
	int ret = 0;

	snprintf(dpath, sizeof(dpath), "/proc/%d/fd", (int)pid);
	d = opendir(dpath);
	if (!d)
		return why_set(s->why, sizeof(s->why), errno, "%s: %s", dpath, strerror(errno));
	while (ret == 0 && (de = readdir(d))) {
		char lpath[320], link[PATH_MAX], what[288];
		ssize_t n;

		if (de->d_name[0] == '.')
			continue;
		snprintf(lpath, sizeof(lpath), "%s/%s", dpath, de->d_name);
		n = readlink(lpath, link, sizeof(link) - 1);
		if (n < 0)
			continue;	/* closed meanwhile: impossible while frozen */
		link[n] = '\0';
		if (strncmp(link, "/memfd:", 7))
			continue;
		snprintf(what, sizeof(what), "fd %s", de->d_name);
		ret = add(s, lpath, what, link, false);
	}
	closedir(d);
	return ret;
}

int dump_shmem_collect(struct dump_shmem *s, pid_t pid, const struct procfs_maps *maps,
		       bool fds)
{
	for (size_t i = 0; i < maps->n; i++) {
		const struct procfs_vma *v = &maps->v[i];
		char src[96], what[96];
		int ret;

		if (!dump_shmem_area(v))
			continue;
		snprintf(src, sizeof(src), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, (int)pid,
			 v->start, v->end);
		snprintf(what, sizeof(what), "area 0x%" PRIx64 "-0x%" PRIx64, v->start, v->end);
		ret = add(s, src, what, v->name, strncmp(v->name, "/memfd:", 7) != 0);
		if (ret < 0)
			return ret;
	}
	return fds ? collect_fds(s, pid) : 0;
}

int dump_shmem_check_users(struct dump_shmem *s, const pid_t *pids, size_t n)
{
	struct dump_area_obj *o;
	size_t which = 0;
	pid_t u;

	if (!s->n)
		return 0;
	o = calloc(s->n, sizeof(*o));
	if (!o)
		return why_set(s->why, sizeof(s->why), ENOMEM, "out of memory");
	for (size_t i = 0; i < s->n; i++)
		o[i] = (struct dump_area_obj){ major(s->o[i].dev), minor(s->o[i].dev), s->o[i].ino };
	u = dump_area_shmem_user(o, s->n, pids, n, DUMP_AREA_MAPS | DUMP_AREA_FDS, &which);
	free(o);
	if (u < 0)
		return why_set(s->why, sizeof(s->why), -u, "cannot tell whether a process this dump "
			       "does not freeze uses its shared memory: reading /proc: %s",
			       strerror(-u));
	if (u > 0) {
		const struct dump_shmem_obj *b = &s->o[which];

		return why_set(s->why, sizeof(s->why), EBUSY, "%s%s (inode %" PRIu64 ", at %s) is "
			       "also mapped or open in pid %d, which this dump does not freeze: it "
			       "could change while it is read, and a restore would not share it "
			       "with pid %d (dump a tree that holds both, with --tree)",
			       b->anon ? "shared anonymous memory" : "memfd:",
			       b->anon ? "" : b->name, b->ino, b->src, (int)u, (int)u);
	}
	return 0;
}

static void names(const struct dump_shmem_obj *o, char name[2][64], char tmp[2][72])
{
	snprintf(name[0], 64, "pagemap-shmem-%" PRIu64 ".img", o->ino);
	snprintf(name[1], 64, "pages-%u.img", o->pages_id);
	for (int i = 0; i < 2; i++)
		snprintf(tmp[i], 72, "%s.part", name[i]);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	const uint64_t *w = (const uint64_t *)p;

	for (size_t i = 0; i < n / 8; i++)
		if (w[i])
			return false;
	return true;
}

/* A pagemap entry being gathered: NR pages at byte offset OFF. */
struct run {
	uint64_t off, nr;
};

/* Append the page at OFF to the runs *R (N of them, capacity *CAP). */
static int run_add(struct run **r, size_t *n, size_t *cap, uint64_t off)
{
	if (*n && (*r)[*n - 1].off + (*r)[*n - 1].nr * SHM_PAGE == off) {
		(*r)[*n - 1].nr++;
		return 0;
	}
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
		struct run *nr = realloc(*r, nc * sizeof(*nr));

		if (!nr)
			return -ENOMEM;
		*r = nr;
		*cap = nc;
	}
	(*r)[(*n)++] = (struct run){ off, 1 };
	return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : -EIO;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Read object O (the data the kernel reports, page by page) into PFD; gather the runs. */
static int read_object(struct dump_shmem *s, struct dump_shmem_obj *o, int pfd, const char *dir,
		       const char *pname, struct run **r, size_t *nr)
{
	size_t cap = 0;
	uint64_t off = 0, end = (o->size + SHM_PAGE - 1) & ~(SHM_PAGE - 1);
	uint8_t *buf = malloc(SHM_CHUNK);
	int ret = 0;

	if (!buf)
		return why_set(s->why, sizeof(s->why), ENOMEM, "out of memory");
	while (ret == 0 && off < end) {
		off_t data = lseek(o->fd, (off_t)off, SEEK_DATA), hole;

		if (data < 0 && errno == ENXIO)
			break;	/* no data after OFF */
		if (data < 0 || (hole = lseek(o->fd, data, SEEK_HOLE)) < 0) {
			ret = why_set(s->why, sizeof(s->why), errno, "%s (shmem %" PRIu64 "): "
				      "lseek: %s", o->src, o->ino, strerror(errno));
			break;
		}
		off = (uint64_t)data & ~(SHM_PAGE - 1);
		if ((uint64_t)hole > end || (uint64_t)hole <= off)
			hole = (off_t)end;
		while (ret == 0 && off < (uint64_t)hole) {
			size_t want = (uint64_t)hole - off < SHM_CHUNK ? (size_t)((uint64_t)hole - off) :
				      SHM_CHUNK;
			ssize_t got;

			want = (want + SHM_PAGE - 1) & ~(size_t)(SHM_PAGE - 1);
			memset(buf, 0, want);
			got = pread(o->fd, buf, want, (off_t)off);
			if (got < 0) {
				ret = why_set(s->why, sizeof(s->why), errno, "%s (shmem %" PRIu64 "): "
					      "read at offset %" PRIu64 ": %s", o->src, o->ino, off,
					      strerror(errno));
				break;
			}
			if (got == 0)
				want = 0;	/* past the size: the rest reads zero */
			for (size_t p = 0; ret == 0 && p < want; p += SHM_PAGE) {
				if (all_zero(buf + p, SHM_PAGE)) {
					o->holes++;
					continue;
				}
				ret = run_add(r, nr, &cap, off + p);
				if (ret < 0)
					ret = why_set(s->why, sizeof(s->why), ENOMEM, "out of memory");
				else if ((ret = write_all(pfd, buf + p, SHM_PAGE)) < 0)
					why_set(s->why, sizeof(s->why), -ret, "%s/%s: write: %s", dir,
						pname, strerror(-ret));
				else
					o->pages++;
			}
			if (want == 0)
				break;
			off += want;
		}
		if (off < (uint64_t)hole)
			break;
	}
	free(buf);
	return ret;
}

/* Write the pages and the pagemap of object O. */
static int write_object(struct dump_shmem *s, struct dump_shmem_obj *o, int dirfd,
			const char *dir)
{
	char name[2][64], tmp[2][72];
	PagemapHead head = PAGEMAP_HEAD__INIT;
	struct img_writer w;
	struct img_err err;
	struct run *r = NULL;
	size_t nr = 0;
	int pfd, ret;

	names(o, name, tmp);
	pfd = openat(dirfd, tmp[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (pfd < 0)
		return why_set(s->why, sizeof(s->why), errno, "%s/%s: create: %s", dir, tmp[1],
			       strerror(errno));
	o->made[1] = true;
	ret = read_object(s, o, pfd, dir, tmp[1], &r, &nr);
	if (ret == 0 && fsync(pfd) < 0)
		ret = why_set(s->why, sizeof(s->why), errno, "%s/%s: fsync: %s", dir, tmp[1],
			      strerror(errno));
	close(pfd);
	if (ret < 0)
		goto out;
	head.pages_id = o->pages_id;
	ret = img_create(&w, dirfd, tmp[0], IMG_SHMEM_PAGEMAP_MAGIC, &err);
	if (ret < 0) {
		why_set(s->why, sizeof(s->why), -ret, "%s/%s", dir, err.msg);
		goto out;
	}
	o->made[0] = true;
	ret = img_write(&w, &head.base, &err);
	for (size_t i = 0; ret == 0 && i < nr; i++) {
		PagemapEntry e = PAGEMAP_ENTRY__INIT;

		e.vaddr = r[i].off;
		e.compat_nr_pages = r[i].nr <= UINT32_MAX ? (uint32_t)r[i].nr : 0;
		e.has_nr_pages = 1;
		e.nr_pages = r[i].nr;
		e.has_flags = 1;
		e.flags = PE_PRESENT;
		ret = img_write(&w, &e.base, &err);
	}
	if (ret < 0) {
		img_abort(&w);
		why_set(s->why, sizeof(s->why), -ret, "%s/%s", dir, err.msg);
		goto out;
	}
	ret = img_finish(&w, &err);
	if (ret < 0)
		why_set(s->why, sizeof(s->why), -ret, "%s/%s", dir, err.msg);
out:
	free(r);
	return ret;
}

/* memfd.img: one memfd_inode_entry per object, in inode_id order. */
static int write_inodes(struct dump_shmem *s, int dirfd, const char *dir)
{
	struct img_writer w;
	struct img_err err;
	int ret;

	ret = img_create(&w, dirfd, "memfd.img.part", IMG_MEMFD_INODE_MAGIC, &err);
	if (ret < 0)
		return why_set(s->why, sizeof(s->why), -ret, "%s/%s", dir, err.msg);
	s->made_inodes = true;
	for (size_t i = 0; ret == 0 && i < s->n; i++) {
		const struct dump_shmem_obj *o = &s->o[i];
		MemfdInodeEntry e = MEMFD_INODE_ENTRY__INIT;

		e.name = (char *)o->name;
		e.uid = o->uid;
		e.gid = o->gid;
		e.size = o->size;
		e.shmid = (uint32_t)o->ino;
		e.seals = o->seals;
		e.inode_id = o->inode_id;
		e.has_mode = 1;
		e.mode = o->mode;
		ret = img_write(&w, &e.base, &err);
	}
	if (ret < 0) {
		img_abort(&w);
		return why_set(s->why, sizeof(s->why), -ret, "%s/%s", dir, err.msg);
	}
	ret = img_finish(&w, &err);
	return ret < 0 ? why_set(s->why, sizeof(s->why), -ret, "%s/%s", dir, err.msg) : 0;
}

int dump_shmem_write(struct dump_shmem *s, int dirfd, const char *dir, uint32_t first_pages_id)
{
	int ret = 0;

	if (!s->n)
		return 0;
	for (size_t i = 0; ret == 0 && i < s->n; i++) {
		s->o[i].pages_id = first_pages_id + (uint32_t)i;
		ret = write_object(s, &s->o[i], dirfd, dir);
		close(s->o[i].fd);
		s->o[i].fd = -1;
	}
	return ret == 0 ? write_inodes(s, dirfd, dir) : ret;
}

int dump_shmem_publish(struct dump_shmem *s, int dirfd, const char *dir)
{
	for (size_t i = 0; i < s->n; i++) {
		struct dump_shmem_obj *o = &s->o[i];
		char name[2][64], tmp[2][72];

		names(o, name, tmp);
		o->published = true;	/* abort removes what got its name */
		for (int k = 1; k >= 0; k--)
			if (renameat(dirfd, tmp[k], dirfd, name[k]) < 0)
				return why_set(s->why, sizeof(s->why), errno, "%s/%s: rename: %s",
					       dir, name[k], strerror(errno));
	}
	if (s->made_inodes) {
		if (renameat(dirfd, "memfd.img.part", dirfd, "memfd.img") < 0)
			return why_set(s->why, sizeof(s->why), errno, "%s/memfd.img: rename: %s",
				       dir, strerror(errno));
		s->published_inodes = true;
	}
	return 0;
}

void dump_shmem_abort(struct dump_shmem *s, int dirfd)
{
	for (size_t i = 0; i < s->n; i++) {
		struct dump_shmem_obj *o = &s->o[i];
		char name[2][64], tmp[2][72];

		names(o, name, tmp);
		for (int k = 0; k < 2; k++) {
			if (o->made[k])
				unlinkat(dirfd, tmp[k], 0);
			if (o->published)
				unlinkat(dirfd, name[k], 0);
			o->made[k] = false;
		}
		o->published = false;
	}
	if (s->made_inodes)
		unlinkat(dirfd, "memfd.img.part", 0);
	if (s->published_inodes)
		unlinkat(dirfd, "memfd.img", 0);
	s->made_inodes = s->published_inodes = false;
}

void dump_shmem_free(struct dump_shmem *s)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->o[i].fd >= 0)
			close(s->o[i].fd);
	free(s->o);
	s->o = NULL;
	s->n = 0;
}
