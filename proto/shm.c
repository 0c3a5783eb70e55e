/* The shared memory objects of an image directory (shm.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "files.pb-c.h"
#include "shm.h"

/* One memfd_inode_entry into O, checked against the objects before it. */
static int obj_from_record(const struct shm_set *s, const MemfdInodeEntry *me,
			   const char *name, unsigned rec, struct shm_obj *o, struct img_err *err)
{
	size_t len = me->name ? strlen(me->name) : 0;

	memset(o, 0, sizeof(*o));
	if (len == 0 || len > SHM_NAME_MAX)
		return img_errf(err, EINVAL, name, rec, "object inode %" PRIu64 ": name of %zu "
				"bytes (1 to %d)", me->inode_id, len, SHM_NAME_MAX);
	if (me->size > SHM_MAX_SIZE)
		return img_errf(err, EINVAL, name, rec, "object inode %" PRIu64 ": %" PRIu64
				" bytes, over the limit of %llu", me->inode_id, me->size,
				(unsigned long long)SHM_MAX_SIZE);
	if (me->seals & ~0x1fu)
		return img_errf(err, EINVAL, name, rec, "object inode %" PRIu64 ": unknown seals "
				"0x%x", me->inode_id, me->seals);
	for (size_t i = 0; i < s->nobj; i++)
		if (s->obj[i].inode_id == me->inode_id || s->obj[i].shmid == me->shmid)
			return img_errf(err, EINVAL, name, rec, "object inode %" PRIu64 " shmid %u: "
					"inode or shmid listed twice", me->inode_id, me->shmid);
	o->inode_id = me->inode_id;
	o->shmid = me->shmid;
	memcpy(o->name, me->name, len + 1);
	o->anon = !strcmp(me->name, SHM_ANON_NAME);
	o->hugetlb = me->has_hugetlb_flag && me->hugetlb_flag;
	o->size = me->size;
	o->seals = me->seals;
	o->uid = me->uid;
	o->gid = me->gid;
	o->mode = me->has_mode ? me->mode : 0;
	return 0;
}

/* memfd.img: the objects, each with its contents. */
static int load_objects(struct shm_set *s, int dirfd, struct pages_cache *c, size_t max_entries,
			struct img_err *err)
{
	struct img_reader r;
	ProtobufCMessage *m;
	size_t entries = 0;
	int ret;

	ret = img_open(&r, dirfd, "memfd.img", IMG_MEMFD_INODE_MAGIC, err);
	if (ret == -ENOENT)
		return 0;
	if (ret < 0)
		return ret;
	while ((ret = img_next(&r, &memfd_inode_entry__descriptor, &m, err)) > 0) {
		struct shm_obj o, *no;

		if (s->nobj >= SHM_MAX_OBJS) {
			protobuf_c_message_free_unpacked(m, NULL);
			ret = img_errf(err, E2BIG, r.name, r.rec, "more than %d objects", SHM_MAX_OBJS);
			break;
		}
		ret = obj_from_record(s, (MemfdInodeEntry *)m, r.name, r.rec, &o, err);
		protobuf_c_message_free_unpacked(m, NULL);
		if (ret < 0)
			break;
		/* 0 would mean no limit: the cap reached is the cap passed. */
		if (max_entries && entries >= max_entries) {
			ret = img_errf(err, E2BIG, r.name, r.rec, "object \"%s\" (shmid %u): more "
				       "than %zu pagemap entries in all", o.name, o.shmid, max_entries);
			break;
		}
		ret = pagemap_load_shmem(&o.pm, dirfd, o.shmid, o.size, c,
					 max_entries ? max_entries - entries : 0, err);
		if (ret == -ENOENT)
			ret = img_errf(err, EINVAL, r.name, r.rec, "object \"%s\" (shmid %u): its "
				       "contents, pagemap-shmem-%u.img, are missing", o.name, o.shmid,
				       o.shmid);
		if (ret < 0)
			break;
		entries += o.pm->n;
		no = realloc(s->obj, (s->nobj + 1) * sizeof(*no));
		if (!no) {
			pagemap_free(o.pm, c);
			ret = img_errf(err, ENOMEM, r.name, r.rec, "out of memory");
			break;
		}
		s->obj = no;
		s->obj[s->nobj++] = o;
	}
	img_close(&r);
	return ret;
}

static int cmp_file(const void *a, const void *b)
{
	uint32_t x = ((const struct shm_file *)a)->id, y = ((const struct shm_file *)b)->id;

	return x < y ? -1 : x > y;
}

/* The MEMFD records of files.img. */
static int load_files(struct shm_set *s, int dirfd, struct img_err *err)
{
	struct img_reader r;
	ProtobufCMessage *m;
	int ret;

	ret = img_open(&r, dirfd, "files.img", IMG_FILES_MAGIC, err);
	if (ret == -ENOENT)
		return 0;
	if (ret < 0)
		return ret;
	while ((ret = img_next(&r, &file_entry__descriptor, &m, err)) > 0) {
		const FileEntry *fe = (FileEntry *)m;
		const MemfdFileEntry *mf = fe->memfd;
		struct shm_file f = { 0 }, *nf;
		size_t k;

		if (fe->type != SHM_FD_TYPE_MEMFD) {
			protobuf_c_message_free_unpacked(m, NULL);
			continue;
		}
		ret = 0;
		if (!mf || mf->id != fe->id)
			ret = img_errf(err, EINVAL, r.name, r.rec, "file id %u: type MEMFD without "
				       "its memfd record (or with another id)", fe->id);
		for (k = 0; ret == 0 && k < s->nobj && s->obj[k].inode_id != mf->inode_id; k++)
			;
		if (ret == 0 && k == s->nobj)
			ret = img_errf(err, EINVAL, r.name, r.rec, "file id %u: memfd inode %u is "
				       "not in memfd.img", fe->id, mf->inode_id);
		if (ret == 0 && s->nfile >= SHM_MAX_FILES)
			ret = img_errf(err, E2BIG, r.name, r.rec, "more than %d memfd files",
				       SHM_MAX_FILES);
		if (ret == 0) {
			f = (struct shm_file){ .id = fe->id, .flags = mf->flags, .pos = mf->pos,
					       .obj = k };
			nf = realloc(s->file, (s->nfile + 1) * sizeof(*nf));
			if (!nf)
				ret = img_errf(err, ENOMEM, r.name, r.rec, "out of memory");
			else
				s->file = nf;
		}
		protobuf_c_message_free_unpacked(m, NULL);
		if (ret < 0)
			break;
		s->file[s->nfile++] = f;
	}
	/* Sorted by id, for shm_file_by_id: a file listed twice is next to itself. */
	if (ret == 0 && s->nfile > 1)
		qsort(s->file, s->nfile, sizeof(*s->file), cmp_file);
	for (size_t i = 1; ret == 0 && i < s->nfile; i++)
		if (s->file[i].id == s->file[i - 1].id)
			ret = img_errf(err, EINVAL, r.name, 0, "file id %u listed twice",
				       s->file[i].id);
	img_close(&r);
	return ret;
}

/* The MEMFD entries of one fdinfo file: their objects are open as descriptors. */
static int load_fdinfo(struct shm_set *s, int dirfd, const char *file, struct img_err *err)
{
	struct img_reader r;
	ProtobufCMessage *m;
	int ret;

	ret = img_open(&r, dirfd, file, IMG_FDINFO_MAGIC, err);
	if (ret < 0)
		return ret;
	while ((ret = img_next(&r, &fdinfo_entry__descriptor, &m, err)) > 0) {
		const FdinfoEntry *fd = (FdinfoEntry *)m;
		const struct shm_file *f = fd->type == SHM_FD_TYPE_MEMFD ?
					   shm_file_by_id(s, fd->id) : NULL;

		ret = 0;
		if (fd->type == SHM_FD_TYPE_MEMFD && !f)
			ret = img_errf(err, EINVAL, r.name, r.rec, "fd %u: memfd file id %u is not "
				       "in files.img", fd->fd, fd->id);
		else if (f)
			s->obj[f->obj].open_fd = true;
		protobuf_c_message_free_unpacked(m, NULL);
		if (ret < 0)
			break;
	}
	img_close(&r);
	return ret;
}

/* Every fdinfo-N.img of DIRFD (their numbers are ids, not pids: find them all). */
static int load_all_fdinfo(struct shm_set *s, int dirfd, struct img_err *err)
{
	struct dirent *de;
	int fd, ret = 0;
	DIR *d;

	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd))) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		return img_errf(err, e, "image dir", 0, "read: %s", strerror(e));
	}
	while (ret == 0 && (de = readdir(d))) {
		unsigned id;
		char tail;

		if (sscanf(de->d_name, "fdinfo-%u.im%c", &id, &tail) != 2 || tail != 'g' ||
		    strlen(de->d_name) != (size_t)snprintf(NULL, 0, "fdinfo-%u.img", id))
			continue;
		ret = load_fdinfo(s, dirfd, de->d_name, err);
	}
	closedir(d);
	return ret;
}

int shm_load(struct shm_set **out, int dirfd, struct pages_cache *c, size_t max_entries,
	     struct img_err *err)
{
	struct shm_set *s = calloc(1, sizeof(*s));
	int ret;

	*out = NULL;
	if (!s)
		return img_errf(err, ENOMEM, "memfd.img", 0, "out of memory");
	ret = load_objects(s, dirfd, c, max_entries, err);
	if (ret == 0 && s->nobj)
		ret = load_files(s, dirfd, err);
	if (ret == 0 && s->nfile)
		ret = load_all_fdinfo(s, dirfd, err);
	if (ret < 0) {
		shm_free(s, c);
		return ret;
	}
	for (size_t i = 0; i < s->nobj; i++) {
		struct shm_obj *o = &s->obj[i];

		o->lazy = !o->open_fd && !o->hugetlb && !(o->seals & SHM_WRITE_SEALS);
	}
	*out = s;
	return 0;
}

void shm_free(struct shm_set *s, struct pages_cache *c)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->nobj; i++)
		pagemap_free(s->obj[i].pm, c);
	free(s->obj);
	free(s->file);
	free(s);
}

const struct shm_file *shm_file_by_id(const struct shm_set *s, uint32_t id)
{
	struct shm_file key = { .id = id };

	return s->nfile ? bsearch(&key, s->file, s->nfile, sizeof(*s->file), cmp_file) : NULL;
}
