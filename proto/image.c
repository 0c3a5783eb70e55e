/* Read and write CRIU-format record files. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"

#define IMG_WBUF	(1u << 20)

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = v;
	p[1] = v >> 8;
	p[2] = v >> 16;
	p[3] = v >> 24;
}

static const char *magic_name(uint32_t magic)
{
	switch (magic) {
	case IMG_INVENTORY_MAGIC: return "inventory";
	case IMG_PSTREE_MAGIC: return "pstree";
	case IMG_PAGEMAP_MAGIC: return "pagemap";
	case IMG_CORE_MAGIC: return "core";
	case IMG_MM_MAGIC: return "mm";
	}
	return "unknown";
}

int img_errf(struct img_err *err, int code, const char *file, unsigned rec,
	     const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!err)
		return -code;
	if (rec)
		n = snprintf(err->msg, sizeof(err->msg), "%s: record %u: ", file, rec);
	else
		n = snprintf(err->msg, sizeof(err->msg), "%s: ", file);
	if (n < 0 || (size_t)n >= sizeof(err->msg))
		return -code;
	va_start(ap, fmt);
	vsnprintf(err->msg + n, sizeof(err->msg) - n, fmt, ap);
	va_end(ap);
	return -code;
}

/* What MODE is, for "X is a FIFO, not a regular file". */
static const char *mode_name(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFDIR: return "directory";
	case S_IFIFO: return "FIFO";
	case S_IFLNK: return "symbolic link";
	case S_IFSOCK: return "socket";
	case S_IFCHR: return "character device";
	case S_IFBLK: return "block device";
	}
	return "special file";
}

/* Refuse LABEL, of MODE: it is no regular file. */
static int not_regular(struct img_err *err, const char *label, mode_t mode)
{
	if (err)
		snprintf(err->msg, sizeof(err->msg), "%s is a %s, not a regular file", label,
			 mode_name(mode));
	return -EINVAL;
}

int img_open_regular(int dirfd, const char *name, const char *label, struct stat *st,
		     struct img_err *err)
{
	struct stat ls;
	int fd, e;

	/*
	 * O_NONBLOCK: opening a FIFO for reading would wait for a writer, and
	 * stop the whole daemon with it. O_NOCTTY: a tty never becomes ours.
	 */
	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		e = errno;
		/* A symlink (ELOOP), a socket (ENXIO), ...: say what it is, not the errno. */
		if (e != ENOENT && fstatat(dirfd, name, &ls, AT_SYMLINK_NOFOLLOW) == 0 &&
		    !S_ISREG(ls.st_mode))
			return not_regular(err, label, ls.st_mode);
		return img_errf(err, e, label, 0, "open: %s", strerror(e));
	}
	if (fstat(fd, st) < 0) {
		e = errno;
		close(fd);
		return img_errf(err, e, label, 0, "stat: %s", strerror(e));
	}
	if (!S_ISREG(st->st_mode)) {
		close(fd);
		return not_regular(err, label, st->st_mode);
	}
	return fd;
}

/* Read the whole of FD (described by ST) into a fresh buffer, refusing files over the cap. */
static int slurp(int fd, const struct stat *stp, const char *name, uint8_t **bufp, size_t *lenp,
		 struct img_err *err)
{
	struct stat st = *stp;
	uint8_t *buf;
	size_t len = 0;

	if ((uint64_t)st.st_size > IMG_MAX_FILE)
		return img_errf(err, EFBIG, name, 0, "%lld bytes, over the %u MiB limit",
				(long long)st.st_size, IMG_MAX_FILE >> 20);
	buf = malloc(st.st_size ? st.st_size : 1);
	if (!buf)
		return img_errf(err, ENOMEM, name, 0, "out of memory");
	while (len < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + len, st.st_size - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;

			free(buf);
			return img_errf(err, e, name, 0, "read: %s", strerror(e));
		}
		if (n == 0)
			break;	/* shrank under us: the parser reports what is missing */
		len += n;
	}
	*bufp = buf;
	*lenp = len;
	return 0;
}

int img_open_buf(struct img_reader *r, const char *name, uint8_t *buf, size_t len,
		 uint32_t magic, struct img_err *err)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->buf = buf;
	r->len = len;

	if (len == 0)
		return img_errf(err, EINVAL, name, 0, "empty file");
	if (magic == IMG_INVENTORY_MAGIC) {
		if (len < 4)
			return img_errf(err, EINVAL, name, 0, "truncated magic (%zu bytes)", len);
		if (get_le32(buf) != magic)
			return img_errf(err, EINVAL, name, 0,
					"wrong magic 0x%08x (want 0x%08x for inventory)",
					get_le32(buf), magic);
		r->off = 4;
		return 0;
	}
	if (len < 8)
		return img_errf(err, EINVAL, name, 0, "truncated magic (%zu bytes)", len);
	if (get_le32(buf) != IMG_COMMON_MAGIC)
		return img_errf(err, EINVAL, name, 0, "wrong common magic 0x%08x (want 0x%08x)",
				get_le32(buf), IMG_COMMON_MAGIC);
	if (get_le32(buf + 4) != magic)
		return img_errf(err, EINVAL, name, 0, "wrong type magic 0x%08x (want 0x%08x for %s)",
				get_le32(buf + 4), magic, magic_name(magic));
	r->off = 8;
	return 0;
}

int img_open_as(struct img_reader *r, int dirfd, const char *name, const char *label,
		uint32_t magic, struct img_err *err)
{
	uint8_t *buf = NULL;
	struct stat st;
	size_t len = 0;
	int fd, ret;

	memset(r, 0, sizeof(*r));
	fd = img_open_regular(dirfd, name, label, &st, err);
	if (fd < 0)
		return fd;
	ret = slurp(fd, &st, label, &buf, &len, err);
	close(fd);
	if (ret < 0)
		return ret;
	ret = img_open_buf(r, label, buf, len, magic, err);
	if (ret < 0)
		img_close(r);
	return ret;
}

int img_open(struct img_reader *r, int dirfd, const char *name, uint32_t magic,
	     struct img_err *err)
{
	return img_open_as(r, dirfd, name, name, magic, err);
}

int img_next(struct img_reader *r, const ProtobufCMessageDescriptor *desc,
	     ProtobufCMessage **msg, struct img_err *err)
{
	size_t left = r->len - r->off;
	uint32_t size;
	unsigned rec = r->rec + 1;

	*msg = NULL;
	if (left == 0)
		return 0;
	if (left < 4)
		return img_errf(err, EINVAL, r->name, 0, "%zu trailing bytes after record %u",
				left, r->rec);
	size = get_le32(r->buf + r->off);
	if (size > IMG_MAX_RECORD)
		return img_errf(err, EINVAL, r->name, rec, "size %u over the %u MiB limit", size,
				IMG_MAX_RECORD >> 20);
	if (size > left - 4)
		return img_errf(err, EINVAL, r->name, rec,
				"truncated: size says %u bytes, %zu left in the file", size, left - 4);
	*msg = protobuf_c_message_unpack(desc, NULL, size, r->buf + r->off + 4);
	if (!*msg)
		return img_errf(err, EINVAL, r->name, rec, "cannot decode %u bytes as %s", size,
				desc->name);
	r->off += 4 + (size_t)size;
	r->rec = rec;
	return 1;
}

int img_read_one(int dirfd, const char *name, uint32_t magic,
		 const ProtobufCMessageDescriptor *desc, ProtobufCMessage **msg,
		 struct img_err *err)
{
	struct img_reader r;
	ProtobufCMessage *extra;
	int ret;

	*msg = NULL;
	ret = img_open(&r, dirfd, name, magic, err);
	if (ret < 0)
		return ret;
	ret = img_next(&r, desc, msg, err);
	if (ret == 0)
		ret = img_errf(err, EINVAL, name, 1, "missing: the file has no %s record", desc->name);
	if (ret > 0) {
		ret = img_next(&r, desc, &extra, err);
		if (ret > 0) {
			protobuf_c_message_free_unpacked(extra, NULL);
			ret = img_errf(err, EINVAL, name, r.rec, "unexpected record after the first");
		}
	}
	img_close(&r);
	if (ret < 0 && *msg) {
		protobuf_c_message_free_unpacked(*msg, NULL);
		*msg = NULL;
	}
	return ret;
}

void img_close(struct img_reader *r)
{
	free(r->buf);
	r->buf = NULL;
	r->len = r->off = 0;
}

/* Write out what is buffered. */
static int img_flush(struct img_writer *w, struct img_err *err)
{
	size_t done = 0;

	while (done < w->len) {
		ssize_t n = write(w->fd, w->buf + done, w->len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return img_errf(err, errno, w->name, 0, "write: %s", strerror(errno));
		done += n;
	}
	w->len = 0;
	return 0;
}

/* Make room for N more bytes in the buffer, flushing or growing it. */
static int img_reserve(struct img_writer *w, size_t n, struct img_err *err)
{
	int ret;

	if (w->len + n <= w->cap)
		return 0;
	ret = img_flush(w, err);
	if (ret < 0)
		return ret;
	if (n > w->cap) {
		uint8_t *nb = realloc(w->buf, n);

		if (!nb)
			return img_errf(err, ENOMEM, w->name, 0, "out of memory");
		w->buf = nb;
		w->cap = n;
	}
	return 0;
}

int img_create(struct img_writer *w, int dirfd, const char *name, uint32_t magic,
	       struct img_err *err)
{
	memset(w, 0, sizeof(*w));
	snprintf(w->name, sizeof(w->name), "%s", name);
	w->buf = malloc(IMG_WBUF);
	if (!w->buf)
		return img_errf(err, ENOMEM, name, 0, "out of memory");
	w->cap = IMG_WBUF;
	w->fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (w->fd < 0) {
		int e = errno;

		free(w->buf);
		w->buf = NULL;
		return img_errf(err, e, name, 0, "create: %s", strerror(e));
	}
	if (magic == IMG_INVENTORY_MAGIC) {
		put_le32(w->buf, magic);
		w->len = 4;
	} else {
		put_le32(w->buf, IMG_COMMON_MAGIC);
		put_le32(w->buf + 4, magic);
		w->len = 8;
	}
	return 0;
}

int img_write(struct img_writer *w, const ProtobufCMessage *msg, struct img_err *err)
{
	size_t size = protobuf_c_message_get_packed_size(msg);
	int ret;

	if (size > IMG_MAX_RECORD)
		return img_errf(err, EFBIG, w->name, w->rec + 1, "%zu bytes, over the record limit",
				size);
	ret = img_reserve(w, 4 + size, err);
	if (ret < 0)
		return ret;
	put_le32(w->buf + w->len, size);
	protobuf_c_message_pack(msg, w->buf + w->len + 4);
	w->len += 4 + size;
	w->rec++;
	return 0;
}

int img_finish(struct img_writer *w, struct img_err *err)
{
	int ret = img_flush(w, err);

	if (ret == 0 && fsync(w->fd) < 0)
		ret = img_errf(err, errno, w->name, 0, "fsync: %s", strerror(errno));
	if (close(w->fd) < 0 && ret == 0)
		ret = img_errf(err, errno, w->name, 0, "close: %s", strerror(errno));
	w->fd = -1;
	free(w->buf);
	w->buf = NULL;
	return ret;
}

void img_abort(struct img_writer *w)
{
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
	free(w->buf);
	w->buf = NULL;
}
