/*
 * dump of shared memory, in CRIU 4.2's format (test/data/criu-4.2/shm-*):
 * test/helpers/shmwl.c maps two shared anonymous areas and a memfd (mapped
 * twice, longer than its mapping, sealed, open at fd 5) and keeps a second
 * memfd open at fd 7 only; in fork2 a child writes some pages of each. After
 * the dump every object is found once in memfd.img with CRIU's name, seals
 * and shmid (its inode), every byte of its recorded contents is what the
 * workload wrote (holes read zero), its areas are memfd files as CRIU
 * records them, its descriptors MEMFD fdinfo entries, and crit decodes
 * every file. System V shm is still refused.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

#include "files.pb-c.h"
#include "image.h"
#include "imgtask.h"
#include "mm.pb-c.h"
#include "pagemap.h"
#include "pagemap.pb-c.h"
#include "core.h"
#include "shmwl.h"

#define F_SEAL_SEAL_	1
#define F_SEAL_SHRINK_	2
#define MEMFD_TYPE	18
#define MEMFD_STATUS	(VMA_AREA_REGULAR | VMA_FILE_SHARED | VMA_AREA_MEMFD)

static char tmp[64];
static pid_t wl, wchild;
static int wlfd = -1, wchildfd = -1;	/* pidfds: the workload and the child it forked */

/* The workload's objects, as seen through /proc before the dump. */
struct obj {
	uint64_t ino;
	size_t pages;
	bool seen;
};

/* A shared area of the workload, from its maps. */
struct area {
	uint64_t start, end, pgoff, ino;
	unsigned k;
	bool priv;
};

struct wlview {
	struct obj o[SHMWL_NOBJ];
	struct area a[16];
	size_t na;
};

static const char *build_dir(void)
{
	const char *b = getenv("UFFD_TEST_BUILD");

	return b ? b : TEST_BUILDDIR;
}

static void setup(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/uffd-shmtest-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp), "mkdtemp: %s", strerror(errno));
	wl = wchild = 0;
	wlfd = wchildfd = -1;
}

static void teardown(void)
{
	char cmd[128];

	/* Only what this test started: the workload and the child it forked. */
	if (wchildfd >= 0) {
		syscall(SYS_pidfd_send_signal, wchildfd, SIGKILL, NULL, 0);
		close(wchildfd);
	}
	if (wlfd >= 0) {
		syscall(SYS_pidfd_send_signal, wlfd, SIGKILL, NULL, 0);
		close(wlfd);
	}
	if (wl > 0)
		waitpid(wl, NULL, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	if (tmp[0] && system(cmd)) {
	}
}

/* Start shmwl MODE and wait until it says it is ready. */
static void start(const char *mode)
{
	char bin[512], ready[128], line[128];
	int st;

	snprintf(bin, sizeof(bin), "%s/test/helpers/shmwl", build_dir());
	snprintf(ready, sizeof(ready), "%s/ready", tmp);
	wl = fork();
	cr_assert_geq(wl, 0);
	if (wl == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(null, 0);
		dup2(null, 1);
		execl(bin, "shmwl", mode, ready, (char *)NULL);
		_exit(127);
	}
	wlfd = (int)syscall(SYS_pidfd_open, wl, 0);
	for (;;) {
		FILE *f = fopen(ready, "r");
		int a = 0, b = 0;

		if (f) {
			int n = fgets(line, sizeof(line), f) ? sscanf(line, "ready %d %d", &a, &b) : 0;

			fclose(f);
			if (n >= 1 && a == wl) {
				wchild = n == 2 ? b : 0;
				if (wchild)
					wchildfd = (int)syscall(SYS_pidfd_open, wchild, 0);
				return;
			}
		}
		cr_assert_eq(waitpid(wl, &st, WNOHANG), 0, "shmwl %s exited (status 0x%x)", mode, st);
		usleep(2000);
	}
}

/* Look at PID's shared memory through /proc: its objects and areas. */
static void view(pid_t pid, struct wlview *v)
{
	char path[64], line[512];
	struct stat st;
	FILE *f;

	memset(v, 0, sizeof(*v));
	for (unsigned k = 0; k < SHMWL_NOBJ; k++)
		v->o[k].pages = shmwl_pages(k);
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, SHMWL_MFD_FD);
	cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
	v->o[SHMWL_M].ino = st.st_ino;
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, SHMWL_FDO_FD);
	cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
	v->o[SHMWL_F].ino = st.st_ino;
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long long s, e, off, ino;
		char perms[8], name[256] = "";
		struct area *a;

		if (sscanf(line, "%llx-%llx %7s %llx %*s %llu %255[^\n]", &s, &e, perms, &off, &ino,
			   name) < 5 || !ino)
			continue;
		if (!strstr(name, "/dev/zero (deleted)") && !strstr(name, "memfd:shmwl"))
			continue;
		cr_assert_lt(v->na, 16);
		a = &v->a[v->na++];
		*a = (struct area){ s, e, off, ino, 0, perms[3] == 'p' };
		if (strstr(name, "memfd:")) {
			a->k = SHMWL_M;
		} else {
			a->k = e - s == SHMWL_A_PAGES * SHMWL_PAGE ? SHMWL_A : SHMWL_N;
			v->o[a->k].ino = ino;
		}
	}
	fclose(f);
	cr_assert(v->o[SHMWL_A].ino && v->o[SHMWL_N].ino && v->o[SHMWL_A].ino != v->o[SHMWL_N].ino);
}

/* Run uffd-inject with ARGS; its exit status, stderr in ERR. */
static int tool(const char *const *args, char *err, size_t elen)
{
	char bin[512], ef[128];
	const char *argv[16];
	int st, n = 0, fd;
	pid_t p;
	ssize_t k;

	snprintf(bin, sizeof(bin), "%s/uffd-inject", build_dir());
	snprintf(ef, sizeof(ef), "%s/stderr", tmp);
	argv[n++] = "uffd-inject";
	while (*args && n < 15)
		argv[n++] = *args++;
	argv[n] = NULL;
	p = fork();
	cr_assert_geq(p, 0);
	if (p == 0) {
		int e = open(ef, O_WRONLY | O_CREAT | O_TRUNC, 0600), null = open("/dev/null", O_RDWR);

		dup2(null, 0);
		dup2(null, 1);
		dup2(e, 2);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	cr_assert_eq(waitpid(p, &st, 0), p);
	fd = open(ef, O_RDONLY);
	k = fd >= 0 ? read(fd, err, elen - 1) : 0;
	err[k > 0 ? k : 0] = '\0';
	if (fd >= 0)
		close(fd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Every record of NAME in DIR as DESC; *N of them. */
static ProtobufCMessage **records(const char *dir, const char *name, uint32_t magic,
				  const ProtobufCMessageDescriptor *desc, size_t *n)
{
	ProtobufCMessage **m = calloc(4096, sizeof(*m));
	struct img_reader r;
	struct img_err err;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY), ret;

	cr_assert_geq(dfd, 0);
	ret = img_open(&r, dfd, name, magic, &err);
	cr_assert_eq(ret, 0, "%s/%s: %s", dir, name, ret == -ENOENT ? "missing" : err.msg);
	*n = 0;
	while (*n < 4096 && (ret = img_next(&r, desc, &m[*n], &err)) > 0)
		(*n)++;
	cr_assert_eq(ret, 0, "%s/%s: %s", dir, name, err.msg);
	img_close(&r);
	close(dfd);
	return m;
}

static void free_records(ProtobufCMessage **m, size_t n)
{
	for (size_t i = 0; i < n; i++)
		protobuf_c_message_free_unpacked(m[i], NULL);
	free(m);
}

/* Check every byte of object K's recorded contents (SHMID, SIZE) against what shmwl wrote. */
static void check_contents(const char *dir, unsigned k, uint64_t shmid, uint64_t size,
			   bool fork2, uint32_t min_pages_id, uint32_t *pages_id)
{
	char name[64], path[256];
	ProtobufCMessage **m;
	uint8_t *got = calloc(1, size), *want = calloc(1, size);
	uint64_t total = 0;
	struct stat st;
	size_t n;
	int fd;

	cr_assert(got && want);
	snprintf(name, sizeof(name), "pagemap-shmem-%" PRIu64 ".img", shmid);
	m = records(dir, name, IMG_SHMEM_PAGEMAP_MAGIC, &pagemap_head__descriptor, &n);
	cr_assert_geq(n, 2, "%s: no entries", name);
	/* The head was decoded as a head; the entries again as entries below. */
	*pages_id = ((PagemapHead *)m[0])->pages_id;
	cr_assert_geq(*pages_id, min_pages_id, "%s: pages_id %u collides with a process's",
		      name, *pages_id);
	free_records(m, n);
	{
		struct img_reader r;
		struct img_err err;
		ProtobufCMessage *e;
		int dfd = open(dir, O_RDONLY | O_DIRECTORY), ret;

		snprintf(path, sizeof(path), "%s/pages-%u.img", dir, *pages_id);
		fd = open(path, O_RDONLY);
		cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
		cr_assert_eq(img_open(&r, dfd, name, IMG_SHMEM_PAGEMAP_MAGIC, &err), 0);
		cr_assert_eq(img_next(&r, &pagemap_head__descriptor, &e, &err), 1);
		protobuf_c_message_free_unpacked(e, NULL);
		while ((ret = img_next(&r, &pagemap_entry__descriptor, &e, &err)) > 0) {
			const PagemapEntry *pe = (const PagemapEntry *)e;

			cr_assert(pe->has_flags && pe->flags == PE_PRESENT, "%s: flags 0x%x", name,
				  pe->flags);
			cr_assert(pe->has_nr_pages && pe->nr_pages);
			cr_assert_eq(pe->vaddr % SHMWL_PAGE, 0);
			cr_assert_leq(pe->vaddr + pe->nr_pages * SHMWL_PAGE,
				      (size + SHMWL_PAGE - 1) / SHMWL_PAGE * SHMWL_PAGE,
				      "%s: entry at 0x%" PRIx64 " beyond the object", name, pe->vaddr);
			cr_assert_eq(pread(fd, got + pe->vaddr, pe->nr_pages * SHMWL_PAGE,
					   (off_t)total), (ssize_t)(pe->nr_pages * SHMWL_PAGE),
				     "%s: short", path);
			total += pe->nr_pages * SHMWL_PAGE;
			protobuf_c_message_free_unpacked(e, NULL);
		}
		cr_assert_eq(ret, 0, "%s", err.msg);
		img_close(&r);
		close(dfd);
	}
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_eq((uint64_t)st.st_size, total, "%s holds %lld bytes, the entries %" PRIu64,
		     path, (long long)st.st_size, total);
	close(fd);
	for (size_t i = 0; i < size / SHMWL_PAGE; i++) {
		uint64_t seed = shmwl_seed(k, i, fork2);
		uint64_t *q = (uint64_t *)(void *)(want + i * SHMWL_PAGE);

		for (size_t w = 0; seed && w < SHMWL_PAGE / 8; w++)
			q[w] = shmwl_word(seed, k, i, w);
	}
	for (uint64_t b = 0; b < size; b++)
		cr_assert_eq(got[b], want[b], "object %u (shmem %" PRIu64 ") byte %" PRIu64
			     " (page %" PRIu64 "): 0x%02x, wrote 0x%02x", k, shmid, b,
			     b / SHMWL_PAGE, got[b], want[b]);
	free(got);
	free(want);
}

/* The object of V whose inode is INO, or -1. */
static int obj_of(const struct wlview *v, uint64_t ino)
{
	for (unsigned k = 0; k < SHMWL_NOBJ; k++)
		if (v->o[k].ino == ino)
			return (int)k;
	return -1;
}

/*
 * Check memfd.img and every object's contents: each of the WANT objects
 * (bit k) once, with CRIU's name, seals, size and shmid. Returns the
 * inode_id of each object in IDS (0: not recorded).
 */
static void check_objects(const char *dir, const struct wlview *v, unsigned want, bool fork2,
			  uint32_t nproc, uint32_t ids[SHMWL_NOBJ])
{
	ProtobufCMessage **m;
	uint32_t pids[SHMWL_NOBJ] = { 0 };
	unsigned seen = 0;
	size_t n;

	m = records(dir, "memfd.img", IMG_MEMFD_INODE_MAGIC, &memfd_inode_entry__descriptor, &n);
	cr_assert_eq(n, (size_t)__builtin_popcount(want), "memfd.img: %zu objects", n);
	memset(ids, 0, SHMWL_NOBJ * sizeof(ids[0]));
	for (size_t i = 0; i < n; i++) {
		const MemfdInodeEntry *e = (const MemfdInodeEntry *)m[i];
		int k = obj_of(v, e->shmid);
		const char *name = k == SHMWL_M ? "shmwl-memfd" : k == SHMWL_F ? "shmwl-fdonly" :
				   "/dev/zero";

		cr_assert_geq(k, 0, "memfd.img: shmid %u is no object of the workload", e->shmid);
		cr_assert(!(seen & (1u << k)), "memfd.img: object %d (shmid %u) twice", k, e->shmid);
		cr_assert(want & (1u << k), "memfd.img: object %d not expected", k);
		seen |= 1u << k;
		cr_assert_str_eq(e->name, name);
		cr_assert_eq(e->size, shmwl_pages((unsigned)k) * SHMWL_PAGE, "object %d size", k);
		cr_assert_eq(e->seals, k == SHMWL_M ? F_SEAL_SHRINK_ : F_SEAL_SEAL_,
			     "object %d seals 0x%x", k, e->seals);
		cr_assert_eq(e->uid, getuid());
		cr_assert_eq(e->gid, getgid());
		cr_assert_eq(e->inode_id, i + 1, "inode ids in order");
		ids[k] = (uint32_t)e->inode_id;
		check_contents(dir, (unsigned)k, e->shmid, e->size, fork2, nproc + 1, &pids[k]);
		for (int j = 0; j < k; j++)
			cr_assert(!pids[j] || pids[j] != pids[k], "pages ids %u twice", pids[k]);
	}
	cr_assert_eq(seen, want);
	free_records(m, n);
}

/* The file_entry of id ID in files.img records M (N of them), or NULL. */
static const FileEntry *file_of(ProtobufCMessage **m, size_t n, uint32_t id)
{
	for (size_t i = 0; i < n; i++)
		if (((const FileEntry *)m[i])->id == id)
			return (const FileEntry *)m[i];
	return NULL;
}

/*
 * Check mm-PID.img's shared areas against V (the areas of PID) and files.img,
 * and fdinfo-FILES_ID.img's memfd descriptors (with FDS: 5 and 7).
 */
static void check_records(const char *dir, pid_t pid, uint32_t files_id, const struct wlview *v,
			  const uint32_t ids[SHMWL_NOBJ], bool fds)
{
	ProtobufCMessage **fm, **mm, **fi;
	size_t nf, nm, nfi, found = 0;
	const MmEntry *me;
	char name[64];
	bool fd5 = false, fd7 = false;

	fm = records(dir, "files.img", 0x56303138u, &file_entry__descriptor, &nf);
	snprintf(name, sizeof(name), "mm-%d.img", (int)pid);
	mm = records(dir, name, IMG_MM_MAGIC, &mm_entry__descriptor, &nm);
	cr_assert_eq(nm, 1);
	me = (const MmEntry *)mm[0];
	for (size_t i = 0; i < me->n_vmas; i++) {
		const VmaEntry *e = me->vmas[i];
		const struct area *a = NULL;
		const FileEntry *f;

		for (size_t j = 0; j < v->na; j++)
			if (v->a[j].start == e->start)
				a = &v->a[j];
		if (!a) {
			cr_assert(!(e->status & VMA_AREA_MEMFD), "0x%" PRIx64 ": status 0x%x",
				  e->start, e->status);
			continue;
		}
		found++;
		cr_assert_eq(e->end, a->end);
		cr_assert_eq(e->pgoff, a->pgoff, "0x%" PRIx64 ": pgoff", e->start);
		if (a->priv) {
			cr_assert_eq(e->status, VMA_AREA_REGULAR | VMA_FILE_PRIVATE | VMA_AREA_MEMFD);
			cr_assert_eq(e->flags, MAP_PRIVATE);
		} else {
			cr_assert_eq(e->status, MEMFD_STATUS, "0x%" PRIx64 ": status 0x%x", e->start,
				     e->status);
			cr_assert_eq(e->flags, MAP_SHARED);
			cr_assert(e->has_fdflags && e->fdflags == O_RDWR, "fdflags 0x%x", e->fdflags);
		}
		cr_assert_eq(e->fd, -1);
		f = file_of(fm, nf, (uint32_t)e->shmid);
		cr_assert_not_null(f, "0x%" PRIx64 ": shmid %" PRIu64 " is no file", e->start,
				   e->shmid);
		cr_assert_eq(f->type, MEMFD_TYPE);
		cr_assert_not_null(f->memfd);
		cr_assert_eq(f->memfd->id, f->id);
		cr_assert_eq(f->memfd->inode_id, ids[a->k], "0x%" PRIx64 ": inode_id %u, want %u",
			     e->start, f->memfd->inode_id, ids[a->k]);
		cr_assert_eq(f->memfd->flags, 0);
		cr_assert_eq(f->memfd->pos, 0);
	}
	cr_assert_eq(found, v->na, "mm has %zu of the %zu shared areas", found, v->na);
	snprintf(name, sizeof(name), "fdinfo-%u.img", files_id);
	fi = records(dir, name, 0x56213732u, &fdinfo_entry__descriptor, &nfi);
	for (size_t i = 0; i < nfi; i++) {
		const FdinfoEntry *e = (const FdinfoEntry *)fi[i];
		const FileEntry *f = file_of(fm, nf, e->id);
		unsigned k = e->fd == SHMWL_MFD_FD ? SHMWL_M : SHMWL_F;

		if (e->fd != SHMWL_MFD_FD && e->fd != SHMWL_FDO_FD) {
			cr_assert_neq(e->type, MEMFD_TYPE, "fd %u", e->fd);
			continue;
		}
		fd5 |= e->fd == SHMWL_MFD_FD;
		fd7 |= e->fd == SHMWL_FDO_FD;
		cr_assert_eq(e->type, MEMFD_TYPE, "fd %u: type %u", e->fd, e->type);
		cr_assert_eq(e->flags, e->fd == SHMWL_FDO_FD ? FD_CLOEXEC : 0, "fd %u", e->fd);
		cr_assert_not_null(f);
		cr_assert_eq(f->type, MEMFD_TYPE);
		cr_assert_not_null(f->memfd);
		cr_assert_eq(f->memfd->inode_id, ids[k], "fd %u: inode_id", e->fd);
		cr_assert_eq(f->memfd->flags & O_ACCMODE, O_RDWR, "fd %u: flags 0%o", e->fd,
			     f->memfd->flags);
	}
	cr_assert(fd5 == fds && fd7 == fds, "fdinfo: fd 5 %d, fd 7 %d", fd5, fd7);
	free_records(fm, nf);
	free_records(mm, nm);
	free_records(fi, nfi);
}

/* Decode FILE of DIR with crit; require success and NEEDLE in the output. */
static void crit_decodes(const char *dir, const char *file, const char *needle)
{
	static char out[1 << 20];
	char cmd[512];
	size_t n;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "crit show %s/%s 2>&1", dir, file);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = 0;
	cr_assert_eq(pclose(f), 0, "%s: %s", cmd, out);
	cr_assert_not_null(strstr(out, needle), "%s: no %s in %s", cmd, needle, out);
}

/* Is pid P (one of ours) gone as a zombie? */
static bool reaped_killed(pid_t p)
{
	int st;

	return waitpid(p, &st, 0) == p && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
}

Test(shmdump, kill_records_each_object_once_with_every_byte, .init = setup, .fini = teardown,
     .timeout = 120)
{
	const char *args[] = { "dump", "--kill", "--pid", NULL, "--images", NULL, NULL };
	char dir[128], pid[16], err[4096];
	struct wlview v;
	uint32_t ids[SHMWL_NOBJ];
	int rc;

	start("single");
	view(wl, &v);
	cr_assert_eq(v.na, 4, "shared areas: %zu", v.na);
	snprintf(pid, sizeof(pid), "%d", (int)wl);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	args[3] = pid;
	args[5] = dir;
	rc = tool(args, err, sizeof(err));
	cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
	cr_assert(reaped_killed(wl));
	wl = 0;
	check_objects(dir, &v, 0xf, false, 1, ids);
	check_records(dir, wl ? wl : (pid_t)atoi(pid), 1, &v, ids, true);
}

/*
 * dump --tree of shmwl fork2 with HOW (--kill, --leave-stopped or NULL):
 * each object once for the parent and the child, every byte, the records of
 * both (with a restore's images only).
 */
static void tree_case(const char *how)
{
	const char *args[] = { "dump", "--tree", "--pid", NULL, "--images", NULL, how, NULL };
	char dir[128], pid[16], err[4096], path[64];
	struct wlview v, vc;
	uint32_t ids[SHMWL_NOBJ];
	bool core = how != NULL;
	struct stat st;
	pid_t p, c;
	int rc;

	start("fork2");
	cr_assert_gt(wchild, 0);
	p = wl;
	c = wchild;
	view(p, &v);
	view(c, &vc);
	cr_assert_eq(memcmp(v.o, vc.o, sizeof(v.o)), 0, "the child maps other objects");
	snprintf(pid, sizeof(pid), "%d", (int)p);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	args[3] = pid;
	args[5] = dir;
	rc = tool(args, err, sizeof(err));
	cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
	if (how && !strcmp(how, "--kill")) {
		cr_assert(reaped_killed(p));
		wl = 0;
	} else {
		snprintf(path, sizeof(path), "/proc/%d", (int)c);
		cr_assert_eq(stat(path, &st), 0, "the child is gone");
	}
	/*
	 * Each object once for the two processes; pages ids after the two
	 * processes'. Without a restore's images, only the mapped ones.
	 */
	check_objects(dir, &v, core ? 0xf : 0x7, true, 2, ids);
	if (core) {
		check_records(dir, p, 1, &v, ids, true);
		check_records(dir, c, 2, &vc, ids, true);
	}
}

Test(shmdump, tree_records_each_shared_object_once, .init = setup, .fini = teardown,
     .timeout = 120)
{
	tree_case("--kill");
}

Test(shmdump, tree_leave_stopped_records_each_shared_object_once, .init = setup,
     .fini = teardown, .timeout = 120)
{
	tree_case("--leave-stopped");
}

Test(shmdump, plain_tree_dump_records_the_mapped_objects_once, .init = setup, .fini = teardown,
     .timeout = 120)
{
	tree_case(NULL);
}

Test(shmdump, plain_dump_records_mapped_objects_and_leaves_it_running, .init = setup,
     .fini = teardown, .timeout = 120)
{
	const char *args[] = { "dump", "--pid", NULL, "--images", NULL, NULL };
	char dir[128], pid[16], err[4096];
	struct wlview v;
	uint32_t ids[SHMWL_NOBJ];
	int rc, st;

	start("single");
	view(wl, &v);
	snprintf(pid, sizeof(pid), "%d", (int)wl);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	args[2] = pid;
	args[4] = dir;
	rc = tool(args, err, sizeof(err));
	cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
	cr_assert_eq(waitpid(wl, &st, WNOHANG), 0, "the workload is gone");
	/* No files.img without --kill or --leave-stopped: the mapped objects only. */
	check_objects(dir, &v, (1u << SHMWL_A) | (1u << SHMWL_N) | (1u << SHMWL_M), false, 1, ids);
}

/*
 * The child alone, without --tree: its parent, which this dump does not
 * freeze, maps the same objects, so they could change while read and a
 * restore would part them. Refused, naming the parent; nothing written,
 * both run on.
 */
Test(shmdump, an_object_shared_outside_the_dump_is_refused_by_pid, .init = setup,
     .fini = teardown, .timeout = 120)
{
	const char *args[] = { "dump", "--pid", NULL, "--images", NULL, "--leave-stopped", NULL };
	char dir[128], pid[16], err[4096], want[64], path[64];
	struct stat st;
	int rc;

	start("fork2");
	cr_assert_gt(wchild, 0);
	snprintf(pid, sizeof(pid), "%d", (int)wchild);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	args[2] = pid;
	args[4] = dir;
	rc = tool(args, err, sizeof(err));
	cr_assert_eq(rc, 1, "exit %d: %s", rc, err);
	snprintf(want, sizeof(want), "also mapped or open in pid %d,", (int)wl);
	cr_assert_not_null(strstr(err, want), "%s", err);
	cr_assert_not_null(strstr(err, "--tree"), "%s", err);
	cr_assert_neq(access(dir, F_OK), 0, "%s was left behind", dir);
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)wchild);
	cr_assert_eq(stat(path, &st), 0, "the child is gone");
	for (int i = 0;; i++) {
		char b[512], *r;
		FILE *f = fopen(path, "r");

		cr_assert_not_null(f);
		r = fgets(b, sizeof(b), f) ? strrchr(b, ')') : NULL;
		fclose(f);
		cr_assert_not_null(r);
		if (r[2] != 'T' && r[2] != 't')
			break;
		cr_assert_lt(i, 500, "the child was left stopped");
		usleep(10000);
	}
}

Test(shmdump, private_memfd_mapping_is_a_memfd_file, .init = setup, .fini = teardown,
     .timeout = 120)
{
	const char *args[] = { "dump", "--leave-stopped", "--pid", NULL, "--images", NULL, NULL };
	char dir[128], pid[16], err[4096];
	struct wlview v;
	uint32_t ids[SHMWL_NOBJ];
	size_t npriv = 0;
	int rc;

	start("private");
	view(wl, &v);
	for (size_t i = 0; i < v.na; i++)
		npriv += v.a[i].priv;
	cr_assert_eq(npriv, 1);
	snprintf(pid, sizeof(pid), "%d", (int)wl);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	args[3] = pid;
	args[5] = dir;
	rc = tool(args, err, sizeof(err));
	cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
	/* The object keeps its own page 1: the private copy is the process's. */
	check_objects(dir, &v, 0xf, false, 1, ids);
	check_records(dir, wl, 1, &v, ids, true);
	/* And that copy is in the process's own pagemap, every byte of it. */
	{
		struct pages_cache c = { 0 };
		struct img_err e = { "" };
		struct img_task task;
		struct pm_run run;
		uint64_t at = 0;
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		for (size_t i = 0; i < v.na; i++)
			if (v.a[i].priv)
				at = v.a[i].start + SHMWL_PAGE;
		cr_assert_geq(dfd, 0);
		cr_assert_neq(at, 0);
		cr_assert_eq(img_task_load(&task, dfd, (uint32_t)wl, &c, &e), 0, "%s", e.msg);
		close(dfd);
		pagemap_resolve(task.pm, at, SHMWL_PAGE, &run);
		cr_assert_eq(run.src, PM_DATA, "the private copy at 0x%" PRIx64 " is not in the "
			     "pagemap (source %d)", at, (int)run.src);
		cr_assert_geq(run.len, SHMWL_PAGE);
		for (size_t b = 0; b < SHMWL_PAGE; b++)
			cr_assert_eq(run.pf->base[run.off + b], 0xc5, "byte %zu of the private copy",
				     b);
		img_task_free(&task, &c);
	}
}

Test(shmdump, crit_decodes_every_new_file, .init = setup, .fini = teardown, .timeout = 120)
{
	const char *args[] = { "dump", "--kill", "--pid", NULL, "--images", NULL, NULL };
	char dir[128], pid[16], err[4096], name[64];
	struct wlview v;
	int rc;

	if (system("command -v crit >/dev/null 2>&1"))
		cr_skip_test("crit is not installed (Debian: apt-get install criu python3-protobuf)");
	start("single");
	view(wl, &v);
	snprintf(pid, sizeof(pid), "%d", (int)wl);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	args[3] = pid;
	args[5] = dir;
	rc = tool(args, err, sizeof(err));
	cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
	cr_assert(reaped_killed(wl));
	crit_decodes(dir, "memfd.img", "\"name\": \"shmwl-memfd\"");
	crit_decodes(dir, "memfd.img", "\"seals\": \"F_SEAL_SEAL\"");
	crit_decodes(dir, "files.img", "\"type\": \"MEMFD\"");
	crit_decodes(dir, "fdinfo-1.img", "\"type\": \"MEMFD\"");
	snprintf(name, sizeof(name), "mm-%s.img", pid);
	crit_decodes(dir, name, "VMA_AREA_REGULAR | VMA_FILE_SHARED | 0x4000");
	for (unsigned k = 0; k < SHMWL_NOBJ; k++) {
		snprintf(name, sizeof(name), "pagemap-shmem-%" PRIu64 ".img", v.o[k].ino);
		crit_decodes(dir, name, "\"flags\": \"PE_PRESENT\"");
	}
	wl = 0;
}

Test(shmdump, refuses_sysv_shm_by_pid_and_address, .init = setup, .fini = teardown,
     .timeout = 60)
{
	const char *args[] = { "dump", "--kill", "--pid", NULL, "--images", NULL, NULL };
	char dir[128], pid[16], err[4096], want[64];
	int rc, st;

	start("sysv");
	snprintf(pid, sizeof(pid), "%d", (int)wl);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	args[3] = pid;
	args[5] = dir;
	rc = tool(args, err, sizeof(err));
	cr_assert_eq(rc, 1, "exit %d: %s", rc, err);
	snprintf(want, sizeof(want), "pid %d", (int)wl);
	cr_assert_not_null(strstr(err, want), "stderr: %s", err);
	cr_assert_not_null(strstr(err, "System V shared memory"), "stderr: %s", err);
	cr_assert_not_null(strstr(err, "/SYSV"), "stderr: %s", err);
	cr_assert_eq(access(dir, F_OK), -1, "the refused dump left %s", dir);
	cr_assert_eq(waitpid(wl, &st, WNOHANG), 0, "the workload is gone");
}

Test(shmdump, refuses_a_hugetlb_memfd_by_pid_and_fd, .init = setup, .fini = teardown,
     .timeout = 60)
{
	const char *args[] = { "dump", "--kill", "--pid", NULL, "--images", NULL, NULL };
	char dir[128], pid[16], err[4096], want[64];
	int rc, st;

	start("hugefd");
	snprintf(pid, sizeof(pid), "%d", (int)wl);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	args[3] = pid;
	args[5] = dir;
	rc = tool(args, err, sizeof(err));
	cr_assert_eq(rc, 1, "exit %d: %s", rc, err);
	snprintf(want, sizeof(want), "pid %d: cannot dump: fd 3 /memfd:shmwl-huge", (int)wl);
	cr_assert_not_null(strstr(err, want), "stderr: %s", err);
	cr_assert_not_null(strstr(err, "is a hugetlb memfd"), "stderr: %s", err);
	cr_assert_eq(access(dir, F_OK), -1, "the refused dump left %s", dir);
	cr_assert_eq(waitpid(wl, &st, WNOHANG), 0, "the workload is gone");
}

Test(shmdump, predump_still_refuses_shared_memory, .init = setup, .fini = teardown,
     .timeout = 60)
{
	const char *args[] = { "pre-dump", "--pid", NULL, "--images", NULL, NULL };
	char dir[128], pid[16], err[4096];
	int rc, st;

	start("single");
	snprintf(pid, sizeof(pid), "%d", (int)wl);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	args[2] = pid;
	args[4] = dir;
	rc = tool(args, err, sizeof(err));
	cr_assert_eq(rc, 1, "exit %d: %s", rc, err);
	cr_assert_not_null(strstr(err, "pre-copy rounds do not support it"), "stderr: %s", err);
	cr_assert_eq(waitpid(wl, &st, WNOHANG), 0, "the workload is gone");
}

/* The pages of object K that hold data (what show counts present). */
static uint64_t present_of(unsigned k, bool fork2)
{
	uint64_t n = 0;

	for (size_t i = 0; i < shmwl_pages(k); i++)
		n += shmwl_seed(k, i, fork2) != 0;
	return n;
}

Test(shmdump, show_counts_each_object_once, .init = setup, .fini = teardown, .timeout = 120)
{
	const char *args[] = { "dump", "--tree", "--kill", "--pid", NULL, "--images", NULL, NULL };
	const char *show[] = { "show", "--json", NULL, NULL };
	char dir[128], pid[16], err[4096], out[8192], path[192];
	struct json_object *all, *arr;
	struct wlview v;
	unsigned seen = 0;
	pid_t p;
	FILE *f;
	size_t n;
	int rc;

	start("fork2");
	p = wl;
	view(p, &v);
	snprintf(pid, sizeof(pid), "%d", (int)p);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	args[4] = pid;
	args[6] = dir;
	rc = tool(args, err, sizeof(err));
	cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
	cr_assert(reaped_killed(p));
	wl = 0;
	/* show's stdout: run it with stdout to a file. */
	snprintf(path, sizeof(path), "%s/show.json", tmp);
	{
		char bin[512];
		pid_t c;
		int st;

		snprintf(bin, sizeof(bin), "%s/uffd-inject", build_dir());
		show[2] = dir;
		c = fork();
		cr_assert_geq(c, 0);
		if (c == 0) {
			int o = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

			dup2(o, 1);
			execl(bin, "uffd-inject", show[0], show[1], show[2], (char *)NULL);
			_exit(127);
		}
		cr_assert_eq(waitpid(c, &st, 0), c);
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "show: status 0x%x", st);
	}
	f = fopen(path, "r");
	cr_assert_not_null(f);
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = 0;
	fclose(f);
	all = json_tokener_parse(out);
	cr_assert_not_null(all, "show: %s", out);
	cr_assert(json_object_object_get_ex(all, "shmem", &arr), "no shmem in %s", out);
	cr_assert_eq(json_object_array_length(arr), SHMWL_NOBJ, "%s", out);
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *o = json_object_array_get_idx(arr, i), *x;
		uint64_t shmid, present;
		int k;

		cr_assert(json_object_object_get_ex(o, "shmid", &x));
		shmid = json_object_get_uint64(x);
		k = obj_of(&v, shmid);
		cr_assert_geq(k, 0, "shmid %" PRIu64, shmid);
		cr_assert(!(seen & (1u << k)));
		seen |= 1u << k;
		cr_assert(json_object_object_get_ex(o, "present_pages", &x));
		present = json_object_get_uint64(x);
		cr_assert_eq(present, present_of((unsigned)k, true), "object %d: %" PRIu64 " present",
			     k, present);
		cr_assert(json_object_object_get_ex(o, "size", &x));
		cr_assert_eq(json_object_get_uint64(x), shmwl_pages((unsigned)k) * SHMWL_PAGE);
		cr_assert(json_object_object_get_ex(o, "pages_id", &x));
		cr_assert_gt(json_object_get_uint64(x), 2, "pages id of a process");
	}
	json_object_put(all);
}

/*
 * A memfd (on the shmem device) and a mapped file (on a disk) may have the
 * same inode number: each area must name its own file in files.img.
 */
Test(shmdump, memfd_and_file_of_one_inode_number_keep_their_ids)
{
	struct core_file f[2] = {
		{ .id = 1, .fd = -1, .ino = 77, .dev = 0x801 },
		{ .id = 2, .fd = -1, .ino = 77, .dev = 1, .memfd = true, .inode_id = 1 },
	};
	VmaEntry v[2] = { VMA_ENTRY__INIT, VMA_ENTRY__INIT };
	struct dump_criu_mm b;
	MmEntry mm = MM_ENTRY__INIT;
	struct core c;

	memset(&c, 0, sizeof(c));
	c.f = f;
	c.nf = 2;
	v[0].start = 0x1000;
	v[0].end = 0x2000;
	v[0].shmid = 77;
	v[0].status = VMA_AREA_REGULAR | VMA_FILE_PRIVATE;
	v[1].start = 0x3000;
	v[1].end = 0x4000;
	v[1].shmid = 77;
	v[1].status = MEMFD_STATUS;
	cr_assert_eq(dump_criu_mm(&c, &mm, v, 2, &b), 0);
	cr_assert_eq(mm.n_vmas, 2);
	cr_assert_eq(mm.vmas[0]->shmid, 1, "the file's area names file %" PRIu64, mm.vmas[0]->shmid);
	cr_assert_eq(mm.vmas[1]->shmid, 2, "the memfd's area names file %" PRIu64,
		     mm.vmas[1]->shmid);
	dump_criu_mm_free(&b);
}
