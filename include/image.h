/*
 * CRIU-format image files: the framing shared by every record file, and a
 * writer for the same. Layout: u32 common magic + u32 type magic (inventory
 * has its own single magic), then records of u32 size (LE) + protobuf message.
 */
#ifndef UFFD_IMAGE_H
#define UFFD_IMAGE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <protobuf-c/protobuf-c.h>

#define IMG_COMMON_MAGIC	0x54564319u
#define IMG_INVENTORY_MAGIC	0x58313116u
#define IMG_PSTREE_MAGIC	0x50273030u
#define IMG_PAGEMAP_MAGIC	0x56084025u
#define IMG_CORE_MAGIC		0x55053847u
#define IMG_MM_MAGIC		0x57492820u
/* pagemap-shmem-SHMID.img: CRIU gives it the pagemap's magic. */
#define IMG_SHMEM_PAGEMAP_MAGIC	IMG_PAGEMAP_MAGIC
/* memfd.img: one memfd_inode_entry per memfd object. */
#define IMG_MEMFD_INODE_MAGIC	0x48453499u

/* CRIU's image version, written to inventory.img. */
#define IMG_VERSION		2

/* Caps on what a file may make us allocate. */
#define IMG_MAX_FILE		(256u << 20)
#define IMG_MAX_RECORD		(32u << 20)

/* A failure, named by file, record and cause, ready to print. */
struct img_err {
	char msg[512];
};

/* Format ERR as "FILE: record REC: ..." (REC 0 = the file as a whole); return -CODE. */
int img_errf(struct img_err *err, int code, const char *file, unsigned rec,
	     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* One record file, read into memory whole, consumed record by record. */
struct img_reader {
	char name[128];
	uint8_t *buf;
	size_t len;
	size_t off;
	unsigned rec;		/* records consumed so far */
};

/*
 * Open NAME in DIRFD and check its magic. Returns 0, -ENOENT when the file
 * does not exist, or another -errno with ERR filled.
 */
int img_open(struct img_reader *r, int dirfd, const char *name, uint32_t magic,
	     struct img_err *err);

/* The same, naming the file LABEL in errors (a path relative to the dump). */
int img_open_as(struct img_reader *r, int dirfd, const char *name, const char *label,
		uint32_t magic, struct img_err *err);

/*
 * Open NAME in DIRFD for reading, never blocking (a FIFO must not stall the
 * caller), and only if it is a regular file: else "LABEL is a FIFO, not a
 * regular file" in ERR. Returns the fd with *ST filled, -ENOENT, or -errno.
 */
int img_open_regular(int dirfd, const char *name, const char *label, struct stat *st,
		     struct img_err *err);

/* Open an in-memory image (tests, and files already read). Takes BUF. */
int img_open_buf(struct img_reader *r, const char *name, uint8_t *buf, size_t len,
		 uint32_t magic, struct img_err *err);

/*
 * Decode the next record as DESC. Returns 1 with *MSG set (free it with
 * protobuf_c_message_free_unpacked), 0 at a clean end of file, or -errno.
 */
int img_next(struct img_reader *r, const ProtobufCMessageDescriptor *desc,
	     ProtobufCMessage **msg, struct img_err *err);

/* Decode exactly one record as DESC and require the end of file after it. */
int img_read_one(int dirfd, const char *name, uint32_t magic,
		 const ProtobufCMessageDescriptor *desc, ProtobufCMessage **msg,
		 struct img_err *err);

void img_close(struct img_reader *r);

/* A record file being written; records are buffered and flushed in batches. */
struct img_writer {
	char name[128];
	int fd;
	unsigned rec;
	uint8_t *buf;
	size_t len;
	size_t cap;
};

/* Create (truncate) NAME in DIRFD, mode 0600, and write its magic. */
int img_create(struct img_writer *w, int dirfd, const char *name, uint32_t magic,
	       struct img_err *err);
int img_write(struct img_writer *w, const ProtobufCMessage *msg, struct img_err *err);
/* Flush, fsync and close; on error the file is left incomplete and named in ERR. */
int img_finish(struct img_writer *w, struct img_err *err);
/* Close without flushing (error paths). */
void img_abort(struct img_writer *w);

#endif
