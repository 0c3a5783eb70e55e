/*
 * libFuzzer harness: load an image directory built from the input, with the
 * calls the daemon (img_task_load, then timage_check, which builds the memory
 * model as a hand-over does) and `uffd-inject show` (show_images) make.
 *
 * Input framing (mkseeds.py writes it from real dumps): records to
 * the end of the input, each
 *   u8 flags: bits 0-1 depth (0: the image dir, N: its Nth `parent`),
 *             bits 2-4 type (0 regular, 1 sparse regular, 2 FIFO,
 *             3 directory, 4 symlink, 5 unix socket, 6-7 regular)
 *   name, NUL-terminated (at most 40 bytes; anything but [A-Za-z0-9._-] -> _)
 *   u32 LE length, then that many bytes (fewer if the input ends)
 * A sparse file is LENGTH pages of holes (up to 16 MiB) and takes no bytes;
 * a symlink's first byte picks its target from a small menu. Every dir has
 * a `parent` symlink to the next unless a record says otherwise.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz.h"
#include "imgtask.h"
#include "inventory.pb-c.h"
#include "log.h"
#include "show.h"
#include "target.h"

#define DEPTHS		4
#define MAX_NAME	40
#define MAX_SPARSE	(16u << 20)
#define MAX_TASKS	64

static char base[64];
static FILE *devnull;

/* Remove everything under DIRFD (not DIRFD itself). */
static void rm_under(int dirfd)
{
	DIR *d;
	struct dirent *de;
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (de->d_type == DT_DIR) {
			int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			if (sub >= 0) {
				rm_under(sub);
				close(sub);
			}
			unlinkat(dirfd, de->d_name, AT_REMOVEDIR);
		} else {
			unlinkat(dirfd, de->d_name, 0);
		}
	}
	closedir(d);
}

/* Leave no empty scratch dir behind (libFuzzer ends with exit()). */
static void remove_base(void)
{
	rmdir(base);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_init("fuzz-images", getenv("FUZZ_LOG") ? LOG_LVL_DEBUG : LOG_LVL_ERR, 0);
	snprintf(base, sizeof(base), "/dev/shm/uffd-fuzz-images-XXXXXX");
	if (!mkdtemp(base)) {
		snprintf(base, sizeof(base), "/tmp/uffd-fuzz-images-XXXXXX");
		if (!mkdtemp(base)) {
			perror("fuzz: mkdtemp");
			abort();
		}
	}
	atexit(remove_base);
	devnull = fopen("/dev/null", "we");
	if (!devnull)
		abort();
	return 0;
}

static void sanitize(char *name)
{
	for (char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' || *p == '_'))
			*p = '_';
	if (!name[0] || !strcmp(name, ".") || !strcmp(name, ".."))
		strcpy(name, "x");
}

/* Create one record's file in DIRFD. */
static void make_file(int dirfd, unsigned type, const char *name, const uint8_t *data,
		      uint32_t len, size_t have)
{
	static const char *const targets[] = {
		"../d1", "../d2", "../d3", "../d0", ".", "..", "missing", "../d1/parent",
	};
	int fd;

	unlinkat(dirfd, name, 0);
	unlinkat(dirfd, name, AT_REMOVEDIR);
	switch (type) {
	case 1:
		fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd >= 0) {
			uint64_t size = (uint64_t)len * 4096;

			if (ftruncate(fd, size > MAX_SPARSE ? MAX_SPARSE : (off_t)size) < 0) {
			}
			close(fd);
		}
		break;
	case 2:
		mkfifoat(dirfd, name, 0600);
		break;
	case 3:
		mkdirat(dirfd, name, 0700);
		break;
	case 4:
		symlinkat(targets[have ? data[0] % 8 : 0], dirfd, name);
		break;
	case 5: {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		char path[200];
		int sk;

		/* Bound by path: the socket file stays after its fd is closed. */
		if (fcntl(dirfd, F_GETFD) < 0)
			break;
		snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", dirfd, name);
		if (strlen(path) >= sizeof(sa.sun_path))
			break;
		strcpy(sa.sun_path, path);
		sk = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (sk >= 0) {
			if (bind(sk, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			}
			close(sk);
		}
		break;
	}
	default:
		fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd >= 0) {
			if (have && write(fd, data, have) < 0) {
			}
			close(fd);
		}
		break;
	}
}

/* The daemon's path: list the tasks, load each, build its model. */
static void load_like_daemon(int dirfd)
{
	struct pages_cache cache = { 0 };
	ProtobufCMessage *inv = NULL;
	struct img_err err;
	uint32_t *pids = NULL;
	bool from_pstree;
	size_t n;

	if (img_read_one(dirfd, "inventory.img", IMG_INVENTORY_MAGIC, &inventory_entry__descriptor,
			 &inv, &err) == 0)
		protobuf_c_message_free_unpacked(inv, NULL);
	if (img_list_tasks(dirfd, &pids, &n, &from_pstree, &err) < 0)
		return;
	for (size_t i = 0; i < n && i < MAX_TASKS; i++) {
		struct timage ti = { .refs = 1, .dirfd = -1 };
		char reason[512];
		uint64_t lazy;

		if (img_task_load(&ti.task, dirfd, pids[i], &cache, &err) < 0)
			continue;
		timage_check(&ti, pids[i], false, &lazy, reason, sizeof(reason));
		timage_check(&ti, pids[i], true, &lazy, reason, sizeof(reason));
		img_task_free(&ti.task, &cache);
	}
	free(pids);
	if (cache.head || cache.nr_files || cache.mapped_bytes) {
		fprintf(stderr, "fuzz: pages files left mapped: %u files, %llu bytes\n",
			cache.nr_files, (unsigned long long)cache.mapped_bytes);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	int dirs[DEPTHS], basefd, fds0;
	char path[96];

	fds0 = fz_lowest_free_fd();
	basefd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (basefd < 0)
		abort();
	for (int i = 0; i < DEPTHS; i++) {
		char name[8];

		snprintf(name, sizeof(name), "d%d", i);
		mkdirat(basefd, name, 0700);
		dirs[i] = openat(basefd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dirs[i] < 0)
			abort();
		snprintf(name, sizeof(name), "../d%d", i + 1);
		if (i + 1 < DEPTHS)
			symlinkat(name, dirs[i], "parent");
	}
	while (in.n) {
		uint8_t flags = fz_u8(&in);
		char name[MAX_NAME + 1];
		size_t k = 0;
		uint32_t len;

		while (in.n && *in.p && k < MAX_NAME)
			name[k++] = (char)fz_u8(&in);
		name[k] = 0;
		if (in.n && !*in.p)
			fz_u8(&in);
		sanitize(name);
		len = fz_u32(&in);
		{
			unsigned type = (flags >> 2) & 7;
			/* A sparse file's length counts pages, not bytes of the input. */
			size_t have = type == 1 ? 0 : len < in.n ? len : in.n;

			make_file(dirs[flags & 3], type, name, in.p, len, have);
			in.p += have;
			in.n -= have;
		}
	}
	load_like_daemon(dirs[0]);
	snprintf(path, sizeof(path), "%s/d0", base);
	show_images(path, 1, devnull);
	fflush(devnull);
	for (int i = 0; i < DEPTHS; i++)
		close(dirs[i]);
	rm_under(basefd);
	close(basefd);
	fz_check_fds(fds0, "loading an image dir");
	return 0;
}
