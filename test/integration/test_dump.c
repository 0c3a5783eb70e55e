/*
 * uffd-inject dump against real processes (test/helpers/workload): every
 * dumped page compared with the pattern the workload wrote and with the
 * target's memory, holes where pages are zero or never touched, flags by
 * kind of area, refusals that leave the target running and the directory
 * empty, and consistency while threads write.
 */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dump.h"
#include "imgtask.h"
#include "inventory.pb-c.h"
#include "pagemap.h"
#include "procfs.h"
#include "pstree.pb-c.h"
#include "twork.h"

#define PAGE	4096ull

/* The workload's pattern (test/helpers/workload.c). */
static uint64_t pat(uint64_t seed, uint64_t addr)
{
	return tw_pat(seed, addr);
}

static uint64_t filepat(uint64_t off)
{
	return 0xF11E000000000000ull | off;
}

static struct tw wl;
static char tmp[64];
static char file_path[128];

static void setup(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/uffd-dumptest-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp), "mkdtemp: %s", strerror(errno));
	snprintf(file_path, sizeof(file_path), "%s/mapped", tmp);
	memset(&wl, 0, sizeof(wl));
	wl.in = wl.out = -1;
}

static void teardown(void)
{
	char cmd[128];

	tw_stop(&wl);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	if (!getenv("UFFD_TEST_KEEP") && system(cmd)) {
	}
}

static void wl_idle(void)
{
	cr_assert_eq(tw_idle(&wl, 5000), 0, "the workload never blocked in read()");
}

/* Start the workload with ARGS (NULL-terminated) and wait for its "ready" line. */
static void wl_start(const char *const *args)
{
	char why[1200];

	cr_assert_eq(tw_start(&wl, args, why, sizeof(why)), 0, "%s", why);
}

/* Ask the workload to check all its memory; returns its answer. */
static const char *wl_verify(void)
{
	const char *line = tw_ask(&wl, "v", 20000);

	cr_assert_not_null(line, "workload did not answer");
	wl_idle();
	return line;
}

/* The target is neither traced nor stopped. */
static void assert_running_free(pid_t pid)
{
	char why[256];

	cr_assert(tw_running_free(pid, why, sizeof(why)), "%s", why);
}

/* Run build/uffd-inject with ARGS; capture stdout and stderr. Returns the exit code. */
static int run_tool(const char *const *args, char *out, size_t outlen, char *err, size_t errlen)
{
	int rc = tw_run_tool(tmp, args, out, outlen, err, errlen);

	cr_assert_geq(rc, 0, "uffd-inject died");
	return rc;
}

/* uffd-inject dump --pid PID --images DIR [EXTRA]: returns the exit code. */
static int dump_cli(pid_t pid, const char *dir, const char *extra, char *out, size_t outlen,
		    char *err, size_t errlen)
{
	char pidarg[16];
	const char *args[] = { "dump", "--pid", pidarg, "--images", dir, extra, NULL };

	snprintf(pidarg, sizeof(pidarg), "%d", (int)pid);
	return run_tool(args, out, outlen, err, errlen);
}

/* A loaded dump. */
struct img {
	int dirfd;
	struct pages_cache cache;
	struct img_task t;
};

static void img_load(struct img *im, const char *dir, pid_t pid)
{
	struct img_err err;
	int ret;

	memset(im, 0, sizeof(*im));
	im->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(im->dirfd, 0, "%s: %s", dir, strerror(errno));
	ret = img_task_load(&im->t, im->dirfd, pid, &im->cache, &err);
	cr_assert_eq(ret, 0, "img_task_load: %s", err.msg);
	cr_assert_not_null(im->t.mm);
	cr_assert_not_null(im->t.pm);
}

static void img_free(struct img *im)
{
	img_task_free(&im->t, &im->cache);
	close(im->dirfd);
}

/* The image bytes of the page at ADDR, or NULL for a hole. */
static const uint8_t *img_page(const struct img *im, uint64_t addr, uint32_t *flags)
{
	const struct pm_entry *e = pagemap_find(im->t.pm, addr);

	if (!e)
		return NULL;
	cr_assert(e->flags & PE_PRESENT, "entry at 0x%" PRIx64 " without data", addr);
	if (flags)
		*flags = e->flags;
	return im->t.pm->pages->base + e->off + (addr - e->start);
}

/* Copy LEN bytes at ADDR out of the images (holes read zero). */
static void img_read(const struct img *im, uint64_t addr, void *dst, size_t len)
{
	uint8_t *d = dst;

	while (len) {
		uint64_t pg = addr & ~(PAGE - 1), in = addr - pg;
		size_t n = PAGE - in < len ? PAGE - in : len;
		const uint8_t *p = img_page(im, pg, NULL);

		if (p)
			memcpy(d, p + in, n);
		else
			memset(d, 0, n);
		addr += n;
		d += n;
		len -= n;
	}
}

/* Count the words of the page at ADDR in the images that differ from the pattern. */
static unsigned pat_mismatches(const uint8_t *p, uint64_t addr)
{
	unsigned bad = 0;

	for (unsigned k = 0; k < PAGE / 8; k++)
		bad += ((const uint64_t *)(const void *)p)[k] != pat(wl.seed, addr + k * 8);
	return bad;
}

/* The anonymous region: pattern pages LAZY|PRESENT, zero and untouched pages holes. */
static void check_anon(const struct img *im, bool full)
{
	unsigned bad = 0, holes = 0;

	for (uint64_t i = 0; i < wl.anon.len / PAGE; i++) {
		uint64_t addr = wl.anon.addr + i * PAGE;
		uint32_t flags = 0;
		const uint8_t *p = img_page(im, addr, &flags);

		if (full || (i % 16 != 3 && i % 16 != 7 && i % 16 != 11)) {
			cr_assert_not_null(p, "anon page %" PRIu64 " (0x%" PRIx64 ") missing", i, addr);
			cr_assert_eq(flags, PE_LAZY | PE_PRESENT, "anon page %" PRIu64 " flags %u", i,
				     flags);
			bad += pat_mismatches(p, addr);
		} else {
			cr_assert_null(p, "anon page %" PRIu64 " (%s) is not a hole", i,
				       i % 16 == 3 ? "never touched" : "zero");
			holes++;
		}
	}
	cr_assert_eq(bad, 0, "%u words of the anon region differ from the pattern", bad);
	cr_assert_eq(holes, full ? 0 : wl.anon.len / PAGE / 16 * 3);
}

static ssize_t mem_read(pid_t pid, uint64_t addr, void *buf, size_t len);

/*
 * The private file mapping: only the pages copied on write, PRESENT, not
 * LAZY. With a live PID, the pages left out must be the file's own.
 */
static void check_file(const struct img *im, pid_t pid)
{
	for (uint64_t i = 0; i < wl.file.len / PAGE; i++) {
		uint64_t addr = wl.file.addr + i * PAGE;
		uint32_t flags = 0;
		const uint8_t *p = img_page(im, addr, &flags);

		if (i % 4 == 1 || i % 8 == 6) {
			cr_assert_not_null(p, "copied file page %" PRIu64 " missing", i);
			cr_assert_eq(flags, PE_PRESENT, "file page %" PRIu64 " flags %u", i, flags);
			if (i % 4 == 1) {
				cr_assert_eq(pat_mismatches(p, addr), 0, "file page %" PRIu64, i);
			} else {
				/* all zero, and still dumped: a hole would show the file */
				for (unsigned k = 0; k < PAGE; k++)
					cr_assert_eq(p[k], 0, "zeroed file page %" PRIu64, i);
			}
		} else {
			uint64_t w[PAGE / 8];

			cr_assert_null(p, "file page %" PRIu64 " (the file's own) was dumped", i);
			if (!pid)
				continue;
			cr_assert_eq(mem_read(pid, addr, w, PAGE), (ssize_t)PAGE);
			for (unsigned k = 0; k < PAGE / 8; k++)
				cr_assert_eq(w[k], filepat(i * PAGE + k * 8), "file page %" PRIu64, i);
		}
	}
}

/* The PROT_NONE region and the heap chunk: pattern. */
static void check_none_heap(const struct img *im)
{
	uint8_t *buf = malloc(wl.heap.len);

	for (uint64_t a = wl.none.addr; a < wl.none.addr + wl.none.len; a += PAGE) {
		uint32_t flags = 0;
		const uint8_t *p = img_page(im, a, &flags);

		cr_assert_not_null(p, "PROT_NONE page 0x%" PRIx64 " missing", a);
		cr_assert_eq(flags, PE_LAZY | PE_PRESENT);
		cr_assert_eq(pat_mismatches(p, a), 0, "PROT_NONE page 0x%" PRIx64, a);
	}
	img_read(im, wl.heap.addr, buf, wl.heap.len);
	for (uint64_t k = 0; k < wl.heap.len / 8; k++)
		cr_assert_eq(((uint64_t *)(void *)buf)[k], pat(wl.seed, wl.heap.addr + k * 8),
			     "heap word %" PRIu64, k);
	free(buf);
}

/* Read LEN bytes of PID's memory at ADDR through /proc/PID/mem. */
static ssize_t mem_read(pid_t pid, uint64_t addr, void *buf, size_t len)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
	fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0);
	n = pread(fd, buf, len, (off_t)addr);
	close(fd);
	return n;
}

/*
 * Are the N bytes A (dumped) and B (read later) at ADDR equal, but for the
 * rseq area, whose CPU number the kernel rewrites when the idle thread is
 * woken by the freeze and moves to another CPU?
 */
static bool same_but_rseq(const uint8_t *a, const uint8_t *b, uint64_t n, uint64_t addr)
{
	if (!memcmp(a, b, n))
		return true;
	for (uint64_t i = 0; i < n; i++)
		if (a[i] != b[i] && !(addr + i >= wl.rseq.addr && addr + i < wl.rseq.addr + wl.rseq.len))
			return false;
	return true;
}

/* Every dumped page equals the (idle) target's memory; returns the pages compared. */
static uint64_t check_vs_memory(const struct img *im, pid_t pid)
{
	const struct pagemap *pm = im->t.pm;
	uint8_t *buf = malloc(1 << 20);
	uint64_t pages = 0;

	for (size_t i = 0; i < pm->n; i++) {
		for (uint64_t a = pm->e[i].start; a < pm->e[i].end; a += 1 << 20) {
			uint64_t n = pm->e[i].end - a < (1 << 20) ? pm->e[i].end - a : (1 << 20);

			cr_assert_eq(mem_read(pid, a, buf, n), (ssize_t)n, "read 0x%" PRIx64, a);
			cr_assert(same_but_rseq(pm->pages->base + pm->e[i].off + (a - pm->e[i].start),
					       buf, n, a),
				  "dumped bytes at 0x%" PRIx64 " differ from the target's", a);
			pages += n / PAGE;
		}
	}
	free(buf);
	return pages;
}

/* Read the whole of a small file. */
static size_t slurp(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY);
	size_t n = 0;
	ssize_t r;

	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	while (n < len && (r = read(fd, buf + n, len - n)) > 0)
		n += r;
	close(fd);
	return n;
}

/* The areas of the images against /proc/PID/maps, and the flags of entries by area. */
static void check_vmas(const struct img *im, pid_t pid)
{
	const MmEntry *mm = im->t.mm;
	const struct pagemap *pm = im->t.pm;
	static char maps[1 << 20];
	char path[64], *line, *save = NULL;
	size_t i = 0, e = 0, eager = 0, threads = 0;
	bool heap = false, stack = false, vdso = false, arg_eager = false;
	DIR *task;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	task = opendir(path);
	cr_assert(task, "%s: %s", path, strerror(errno));
	for (struct dirent *de; (de = readdir(task));)
		threads += de->d_name[0] != '.';
	closedir(task);
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	maps[slurp(path, maps, sizeof(maps) - 1)] = '\0';
	for (line = strtok_r(maps, "\n", &save); line; line = strtok_r(NULL, "\n", &save), i++) {
		struct procfs_vma v;
		const VmaEntry *ve;

		cr_assert_lt(i, mm->n_vmas, "more areas in maps than in the images");
		cr_assert_eq(procfs_parse_maps_line(line, &v), 0, "'%s'", line);
		ve = mm->vmas[i];
		cr_assert_eq(ve->start, v.start, "area %zu", i);
		cr_assert_eq(ve->end, v.end, "area %zu", i);
		cr_assert_eq(ve->fd, -1);
		if (!strcmp(v.name, "[heap]")) {
			heap = true;
			cr_assert_eq(ve->status, VMA_AREA_REGULAR | VMA_ANON_PRIVATE | VMA_AREA_HEAP);
			cr_assert_eq(mm->mm_brk, ve->end);
		} else if (!strcmp(v.name, "[stack]")) {
			stack = true;
			cr_assert_eq(ve->status, VMA_AREA_REGULAR | VMA_ANON_PRIVATE | VMA_AREA_STACK);
			cr_assert_eq(ve->flags, MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN);
		} else if (!strcmp(v.name, "[vdso]")) {
			vdso = true;
			cr_assert_eq(ve->status, VMA_AREA_REGULAR | VMA_ANON_PRIVATE | VMA_AREA_VDSO);
		} else if (!strncmp(v.name, "[vvar", 5)) {
			cr_assert_eq(ve->status, VMA_ANON_PRIVATE | VMA_AREA_VVAR);
		} else if (!strcmp(v.name, "[vsyscall]")) {
			cr_assert_eq(ve->status, VMA_ANON_PRIVATE | VMA_AREA_VSYSCALL);
		} else if (v.inode) {
			cr_assert_eq(ve->shmid, v.inode);
			cr_assert_eq(ve->pgoff, v.pgoff);
			cr_assert_eq(ve->status, VMA_AREA_REGULAR |
				     (v.perms[3] == 's' ? VMA_FILE_SHARED : VMA_FILE_PRIVATE));
			cr_assert_eq(ve->flags, v.perms[3] == 's' ? MAP_SHARED : MAP_PRIVATE);
		} else {
			cr_assert_eq(ve->status, VMA_AREA_REGULAR | VMA_ANON_PRIVATE);
			cr_assert_eq(ve->flags & ~MAP_GROWSDOWN, MAP_PRIVATE | MAP_ANONYMOUS);
			cr_assert_eq(ve->shmid, 0);
		}
		cr_assert_eq(ve->prot, (v.perms[0] == 'r' ? PROT_READ : 0) |
			     (v.perms[1] == 'w' ? PROT_WRITE : 0) | (v.perms[2] == 'x' ? PROT_EXEC : 0),
			     "area %zu prot", i);

		/*
		 * Entries inside this area: flags by kind, none in areas without
		 * pages. Anonymous pages are lazy except the few the kernel reads
		 * for others (the argument block, each stack pointer's page and
		 * the one below, rseq areas): those are present only.
		 */
		for (; e < pm->n && pm->e[e].start < ve->end; e++) {
			uint32_t want = (ve->status & VMA_ANON_PRIVATE) && !(ve->status & VMA_AREA_VDSO) ?
					PE_LAZY | PE_PRESENT : PE_PRESENT;

			cr_assert_geq(pm->e[e].start, ve->start, "entry %zu outside its area", e);
			cr_assert_leq(pm->e[e].end, ve->end, "entry %zu crosses an area end", e);
			cr_assert(!(ve->status & (VMA_AREA_VVAR | VMA_AREA_VSYSCALL | VMA_FILE_SHARED)),
				  "entry %zu in an area that has no pages", e);
			if (want != pm->e[e].flags && pm->e[e].flags == PE_PRESENT) {
				eager += (pm->e[e].end - pm->e[e].start) / PAGE;
				if (pm->e[e].start <= mm->mm_arg_start && mm->mm_arg_start < pm->e[e].end)
					arg_eager = true;
				continue;
			}
			cr_assert_eq(pm->e[e].flags, want, "entry %zu flags", e);
		}
	}
	cr_assert_eq(i, mm->n_vmas, "the images have %zu areas, maps %zu", mm->n_vmas, i);
	cr_assert_eq(e, pm->n);
	cr_assert(stack && vdso);
	cr_assert(arg_eager, "the page of the argument area is lazy");
	cr_assert_leq(eager, 4 + 5 * threads, "%zu anonymous pages kept out of the lazy set", eager);
	(void)heap;	/* no [heap] under ASan, whose malloc does not use brk */
	cr_assert_eq(pm->pages->size, (pm->present_pages) * PAGE, "pages file size");
}

/* mm fields against /proc: auxv words, and the argument area holds the command line. */
static void check_mm(const struct img *im, pid_t pid)
{
	const MmEntry *mm = im->t.mm;
	char path[64], buf[8192], args[8192];
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/auxv", (int)pid);
	n = slurp(path, buf, sizeof(buf));
	cr_assert_eq(mm->n_mm_saved_auxv * 8, n, "auxv: %zu words, /proc has %zu bytes",
		     mm->n_mm_saved_auxv, n);
	cr_assert(!memcmp(mm->mm_saved_auxv, buf, n), "auxv words differ");

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	n = slurp(path, buf, sizeof(buf));
	cr_assert_eq(mm->mm_arg_end - mm->mm_arg_start, n);
	img_read(im, mm->mm_arg_start, args, n);
	cr_assert(!memcmp(args, buf, n), "the argument area in the images is not the command line");
	cr_assert_lt(mm->mm_start_code, mm->mm_end_code);
	cr_assert_leq(mm->mm_start_brk, mm->mm_brk);
	cr_assert_neq(mm->mm_start_stack, 0);
	cr_assert_lt(mm->mm_env_start, mm->mm_env_end);
}

/* pstree.img and inventory.img; no temporary files left. */
static void check_tree(const char *dir, pid_t pid, size_t threads)
{
	ProtobufCMessage *m;
	struct img_err err;
	PstreeEntry *ps;
	struct dirent *de;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY);
	DIR *d;

	cr_assert_geq(dfd, 0);
	cr_assert_eq(img_read_one(dfd, "pstree.img", IMG_PSTREE_MAGIC, &pstree_entry__descriptor,
				  &m, &err), 0, "%s", err.msg);
	ps = (PstreeEntry *)m;
	cr_assert_eq(ps->pid, (uint32_t)pid);
	cr_assert_eq(ps->ppid, 0);	/* the root of the dump, as CRIU's restore wants it */
	cr_assert_eq(ps->pgid, (uint32_t)getpgrp());	/* the workload is our child */
	cr_assert_eq(ps->sid, (uint32_t)getsid(0));
	cr_assert_eq(ps->n_threads, threads);
	cr_assert_eq(ps->threads[0], (uint32_t)pid);
	protobuf_c_message_free_unpacked(m, NULL);
	cr_assert_eq(img_read_one(dfd, "inventory.img", IMG_INVENTORY_MAGIC,
				  &inventory_entry__descriptor, &m, &err), 0, "%s", err.msg);
	cr_assert_eq(((InventoryEntry *)m)->img_version, IMG_VERSION);
	protobuf_c_message_free_unpacked(m, NULL);
	d = fdopendir(dfd);
	while ((de = readdir(d)))
		cr_assert_null(strstr(de->d_name, ".part"), "%s left behind", de->d_name);
	closedir(d);
}

/* How many entries DIR holds, . and .. aside; -1 when it does not exist. */
static int dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	closedir(d);
	return n;
}

static char out[8192], err[8192];

Test(dump, live_target_every_byte, .init = setup, .fini = teardown, .timeout = 60)
{
	const char *args[] = { "--file", file_path, NULL };
	char dir[128];
	struct img im;
	uint64_t compared;
	int rc;

	wl_start(args);
	snprintf(dir, sizeof(dir), "%s/img", tmp);	/* created by the dump */
	rc = dump_cli(wl.pid, dir, NULL, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
	cr_assert_str_empty(err, "stderr: %s", err);
	cr_assert_not_null(strstr(out, " zero pages left as holes"), "summary: %s", out);
	cr_assert_not_null(strstr(out, "left running"), "summary: %s", out);

	img_load(&im, dir, wl.pid);
	check_anon(&im, false);
	check_file(&im, wl.pid);
	check_none_heap(&im);
	check_vmas(&im, wl.pid);
	check_mm(&im, wl.pid);
	check_tree(dir, wl.pid, 1);
	compared = check_vs_memory(&im, wl.pid);
	cr_assert_eq(compared, im.t.pm->present_pages);
	cr_assert_gt(im.t.pm->lazy_pages, 0);
	cr_assert_lt(im.t.pm->lazy_pages, im.t.pm->present_pages, "COW and vdso pages are not lazy");
	img_free(&im);

	/* The target noticed nothing. */
	assert_running_free(wl.pid);
	cr_assert_str_eq(wl_verify(), "ok");
}

Test(dump, kill_after_complete_images, .init = setup, .fini = teardown, .timeout = 60)
{
	const char *args[] = { "--file", file_path, NULL };
	char dir[128];
	struct img im;
	int rc, st;

	wl_start(args);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	rc = dump_cli(wl.pid, dir, "--kill", out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
	cr_assert_not_null(strstr(out, "killed"), "summary: %s", out);
	/* Gone by the time the tool returns: already a zombie, no waiting. */
	cr_assert_eq(waitpid(wl.pid, &st, WNOHANG), wl.pid, "the target is still alive");
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "wait status %d", st);
	img_load(&im, dir, wl.pid);
	check_anon(&im, false);
	check_file(&im, 0);
	check_none_heap(&im);
	check_tree(dir, wl.pid, 1);
	img_free(&im);
	wl.pid = 0;
}

Test(dump, no_such_process, .init = setup, .fini = teardown, .timeout = 30)
{
	char dir[128], want[64];
	pid_t gone = fork();
	int rc;

	cr_assert_geq(gone, 0);
	if (gone == 0)
		_exit(0);
	cr_assert_eq(waitpid(gone, NULL, 0), gone);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	rc = dump_cli(gone, dir, NULL, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 1, "exit %d", rc);
	snprintf(want, sizeof(want), "pid %d: no such process", (int)gone);
	cr_assert_not_null(strstr(err, want), "stderr: %s", err);
	cr_assert_eq(dir_entries(dir), -1, "a failed dump created %s", dir);
}

/* Pages A and B of thread K, read as one sequence: x...x then (x-1)...(x-1), x >= 1. */
static void check_counter(const struct img *im, int k)
{
	uint64_t w[2 * PAGE / 8], x;
	size_t i = 0;

	img_read(im, wl.thra.addr + k * PAGE, w, PAGE);
	img_read(im, wl.thrb.addr + k * PAGE, w + PAGE / 8, PAGE);
	x = w[0];
	cr_assert_geq(x, 1, "thread %d never ran", k);
	while (i < 2 * PAGE / 8 && w[i] == x)
		i++;
	while (i < 2 * PAGE / 8 && w[i] == x - 1)
		i++;
	cr_assert_eq(i, 2 * PAGE / 8,
		     "thread %d: word %zu is %" PRIu64 " after counter %" PRIu64
		     ": the dump is not a snapshot", k, i, w[i], x);
}

/*
 * Wait (30 s at most) until every one of the workload's N threads has
 * written its counter at least once: started threads may wait long for a
 * CPU on a loaded machine, and a dump taken before a thread ran has nothing
 * of it to check.
 */
static void wait_threads_ran(int n)
{
	for (int k = 0; k < n; k++) {
		for (int i = 0;; i++) {
			uint64_t x = 0;
			struct iovec l = { &x, sizeof(x) };
			struct iovec r = { (void *)(uintptr_t)(wl.thra.addr + k * PAGE), sizeof(x) };

			cr_assert_eq(process_vm_readv(wl.pid, &l, 1, &r, 1, 0), (ssize_t)sizeof(x),
				     "read thread %d's page: %s", k, strerror(errno));
			if (x >= 1)
				break;
			cr_assert_lt(i, 3000, "thread %d did not run in 30 s", k);
			usleep(10000);
		}
	}
}

Test(dump, threads_frozen_consistently, .init = setup, .fini = teardown, .timeout = 90)
{
	const char *args[] = { "--threads", "4", "--anon", "16", NULL };
	char dir[128];

	wl_start(args);
	cr_assert_eq(wl.threads, 4);
	for (int round = 0; round < 3; round++) {
		struct img im;
		int rc;

		usleep(50000);
		wait_threads_ran(4);
		snprintf(dir, sizeof(dir), "%s/img%d", tmp, round);
		rc = dump_cli(wl.pid, dir, NULL, out, sizeof(out), err, sizeof(err));
		cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
		img_load(&im, dir, wl.pid);
		for (int k = 0; k < 4; k++)
			check_counter(&im, k);
		check_anon(&im, false);
		img_free(&im);
		check_tree(dir, wl.pid, 5);
		assert_running_free(wl.pid);
	}
	cr_assert_str_eq(wl_verify(), "ok");
}

/* Pull the number after KEY in a JSON line. */
static uint64_t json_num(const char *s, const char *key)
{
	char k[64];
	const char *p;

	snprintf(k, sizeof(k), "\"%s\":", key);
	p = strstr(s, k);
	cr_assert_not_null(p, "no %s in %s", key, s);
	return strtoull(p + strlen(k), NULL, 10);
}

Test(dump, show_and_loader_agree, .init = setup, .fini = teardown, .timeout = 60)
{
	const char *args[] = { "--file", file_path, NULL };
	char dir[128], maps[64], mapstext[1 << 16], pages[32];
	const char *show[] = { "show", "--json", dir, NULL };
	struct img im;
	size_t lines = 0, n;
	int rc;

	wl_start(args);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	rc = dump_cli(wl.pid, dir, NULL, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
	img_load(&im, dir, wl.pid);
	snprintf(pages, sizeof(pages), ": %" PRIu64 " pages", im.t.pm->present_pages);
	cr_assert_not_null(strstr(out, pages), "the summary '%s' does not say '%s'", out, pages);

	rc = run_tool(show, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "show: exit %d: %s", rc, err);
	cr_assert_eq(json_num(out, "pid"), (uint64_t)wl.pid);
	cr_assert_eq(json_num(out, "vmas"), im.t.mm->n_vmas);
	cr_assert_eq(json_num(out, "entries"), im.t.pm->n);
	cr_assert_eq(json_num(out, "present_pages"), im.t.pm->present_pages);
	cr_assert_eq(json_num(out, "lazy_pages"), im.t.pm->lazy_pages);
	cr_assert_eq(json_num(out, "parent_pages"), 0);

	snprintf(maps, sizeof(maps), "/proc/%d/maps", (int)wl.pid);
	n = slurp(maps, mapstext, sizeof(mapstext));
	for (size_t i = 0; i < n; i++)
		lines += mapstext[i] == '\n';
	cr_assert_eq(im.t.mm->n_vmas, lines, "%zu VMAs, %zu lines in maps", im.t.mm->n_vmas, lines);
	img_free(&im);
}

/*
 * show --json names the image dir as given, whatever its characters: a
 * path with a quote, a backslash, a newline and a tab stays valid JSON
 * and reads back the same.
 */
Test(dump, show_json_escapes_the_path, .init = setup, .fini = teardown, .timeout = 60)
{
	char dir[256];
	const char *show[] = { "show", "--json", dir, NULL };
	json_object *o, *img, *tasks;
	int rc;

	snprintf(dir, sizeof(dir), "%s/we\"ird\\dir\nname\t", tmp);
	cr_assert_eq(symlink(TEST_SRCDIR "/test/data/criu-4.2/fork3", dir), 0, "symlink: %s",
		     strerror(errno));
	rc = run_tool(show, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "show: exit %d: %s", rc, err);
	o = json_tokener_parse(out);
	cr_assert_not_null(o, "not JSON: %s", out);
	cr_assert(json_object_object_get_ex(o, "images", &img));
	cr_assert_str_eq(json_object_get_string(img), dir);
	cr_assert(json_object_object_get_ex(o, "tasks", &tasks));
	cr_assert_eq(json_object_array_length(tasks), 4);
	json_object_put(o);
}

/* Decode DIR/FILE with CRIU's crit; returns its JSON. */
static const char *crit(const char *dir, const char *file)
{
	static char text[1 << 20];
	char cmd[320];
	size_t n;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "crit decode -i %s/%s 2>&1", dir, file);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	cr_assert_eq(pclose(f), 0, "%s: %s", cmd, text);
	return text;
}

Test(dump, crit_decodes_the_dump, .init = setup, .fini = teardown, .timeout = 60)
{
	const char *args[] = { "--file", file_path, NULL };
	char dir[128], name[64], want[64];
	const char *j;
	struct img im;
	size_t n = 0;
	int rc;

	if (system("crit --help >/dev/null 2>&1"))
		cr_skip_test("crit is not installed (Debian package criu)");
	wl_start(args);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	rc = dump_cli(wl.pid, dir, NULL, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
	img_load(&im, dir, wl.pid);

	cr_assert_not_null(strstr(crit(dir, "inventory.img"), "\"img_version\": 2"));
	snprintf(want, sizeof(want), "\"pid\": %d", (int)wl.pid);
	cr_assert_not_null(strstr(crit(dir, "pstree.img"), want));
	snprintf(name, sizeof(name), "mm-%d.img", (int)wl.pid);
	j = crit(dir, name);
	for (const char *p = j; (p = strstr(p, "\"start\":")); p++)
		n++;
	cr_assert_eq(n, im.t.mm->n_vmas, "crit sees %zu VMAs, we wrote %zu", n, im.t.mm->n_vmas);
	snprintf(name, sizeof(name), "pagemap-%d.img", (int)wl.pid);
	j = crit(dir, name);
	cr_assert_not_null(strstr(j, "\"pages_id\": 1"));
	n = 0;
	for (const char *p = j; (p = strstr(p, "\"vaddr\":")); p++)
		n++;
	cr_assert_eq(n, im.t.pm->n, "crit sees %zu entries, we wrote %zu", n, im.t.pm->n);
	cr_assert_not_null(strstr(j, "\"flags\": 6"), "no LAZY|PRESENT entry: %.200s", j);
	img_free(&im);
}

/* Compare file NAME of two dump dirs byte for byte. */
static void same_file(const char *a, const char *b, const char *name)
{
	char pa[192], pb[192];
	struct stat sa, sb;
	uint8_t *ma, *mb;
	int fa, fb;

	snprintf(pa, sizeof(pa), "%s/%s", a, name);
	snprintf(pb, sizeof(pb), "%s/%s", b, name);
	fa = open(pa, O_RDONLY);
	fb = open(pb, O_RDONLY);
	cr_assert(fa >= 0 && fb >= 0, "%s", name);
	fstat(fa, &sa);
	fstat(fb, &sb);
	cr_assert_eq(sa.st_size, sb.st_size, "%s: %lld and %lld bytes", name,
		     (long long)sa.st_size, (long long)sb.st_size);
	if (sa.st_size) {
		ma = mmap(NULL, sa.st_size, PROT_READ, MAP_SHARED, fa, 0);
		mb = mmap(NULL, sb.st_size, PROT_READ, MAP_SHARED, fb, 0);
		cr_assert(ma != MAP_FAILED && mb != MAP_FAILED);
		cr_assert(!memcmp(ma, mb, sa.st_size), "%s differs between %s and %s", name, a, b);
		munmap(ma, sa.st_size);
		munmap(mb, sb.st_size);
	}
	close(fa);
	close(fb);
}

/* The pages of two dumps of the same idle target agree (the rseq area aside). */
static void same_pages(const char *a, const char *b)
{
	struct img ia, ib;

	img_load(&ia, a, wl.pid);
	img_load(&ib, b, wl.pid);
	cr_assert_eq(ia.t.pm->pages->size, ib.t.pm->pages->size);
	for (size_t i = 0; i < ia.t.pm->n; i++) {
		const struct pm_entry *e = &ia.t.pm->e[i];

		cr_assert(same_but_rseq(ia.t.pm->pages->base + e->off, ib.t.pm->pages->base + e->off,
					e->end - e->start, e->start),
			  "pages of 0x%" PRIx64 "-0x%" PRIx64 " differ between %s and %s", e->start,
			  e->end, a, b);
	}
	img_free(&ia);
	img_free(&ib);
}

/*
 * 96 MiB of the hole pattern is some 4,600 runs: more than one PAGEMAP_SCAN
 * vector holds, so the scan resumes; the pagemap words must agree.
 */
Test(dump, pagemap_words_and_buffered_write_agree, .init = setup, .fini = teardown,
     .timeout = 60)
{
	const char *args[] = { "--file", file_path, "--anon", "96", NULL };
	char a[128], b[128], c[128], pm[64], mm[64];
	struct dump_stats st;
	struct img im;
	struct dump_opts o;
	int rc;

	wl_start(args);
	snprintf(a, sizeof(a), "%s/scan", tmp);
	snprintf(b, sizeof(b), "%s/words", tmp);
	snprintf(c, sizeof(c), "%s/buffered", tmp);
	rc = dump_cli(wl.pid, a, NULL, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "exit %d: %s", rc, err);

	o = (struct dump_opts){ .pid = wl.pid, .dir = b, .no_scan = true };
	cr_assert_eq(dump_run(&o, &st, NULL), 0);
	cr_assert(!st.scanned, "PAGEMAP_SCAN used although told not to");
	cr_assert_gt(st.holes, 0);

	o = (struct dump_opts){ .pid = wl.pid, .dir = c, .buffered = true };
	cr_assert_eq(dump_run(&o, &st, NULL), 0);
	cr_assert(st.scanned);

	snprintf(pm, sizeof(pm), "pagemap-%d.img", (int)wl.pid);
	snprintf(mm, sizeof(mm), "mm-%d.img", (int)wl.pid);
	same_file(a, b, pm);
	same_file(a, b, mm);
	same_file(a, c, pm);
	same_pages(a, b);
	same_pages(a, c);
	img_load(&im, a, wl.pid);
	check_anon(&im, false);
	check_file(&im, wl.pid);
	cr_assert_eq(check_vs_memory(&im, wl.pid), im.t.pm->present_pages);
	img_free(&im);
	assert_running_free(wl.pid);
	cr_assert_str_eq(wl_verify(), "ok");
}

Test(dump, refuses_a_dir_with_a_dump, .init = setup, .fini = teardown, .timeout = 60)
{
	char dir[128];
	struct img im;
	int rc;

	wl_start(NULL);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	rc = dump_cli(wl.pid, dir, NULL, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
	rc = dump_cli(wl.pid, dir, NULL, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 1);
	cr_assert_not_null(strstr(err, "already holds a dump (pstree.img)"), "stderr: %s", err);
	cr_assert_eq(dir_entries(dir), 5);
	img_load(&im, dir, wl.pid);	/* the first dump is untouched */
	check_anon(&im, false);
	img_free(&im);
	assert_running_free(wl.pid);
}

Test(dump, locked_memory_is_noted, .init = setup, .fini = teardown, .timeout = 60)
{
	const char *args[] = { "--lock", NULL };
	char dir[128];
	struct img im;
	int rc;

	wl_start(args);
	snprintf(dir, sizeof(dir), "%s/img", tmp);
	rc = dump_cli(wl.pid, dir, NULL, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
	cr_assert_not_null(strstr(err, "is locked in memory"), "stderr: %s", err);
	img_load(&im, dir, wl.pid);
	check_anon(&im, false);
	img_free(&im);
	cr_assert_str_eq(wl_verify(), "ok");
}

Test(dump, usage_errors, .init = setup, .fini = teardown, .timeout = 30)
{
	const char *help[] = { "dump", "--help", NULL };
	const char *nopid[] = { "dump", "--images", tmp, NULL };
	const char *nodir[] = { "dump", "--pid", "1", NULL };
	const char *badpid[] = { "dump", "--pid", "12x", "--images", tmp, NULL };
	const char *extra[] = { "dump", "--pid", "1", "--images", tmp, "more", NULL };
	const char *badopt[] = { "dump", "--frobnicate", NULL };

	cr_assert_eq(run_tool(help, out, sizeof(out), err, sizeof(err)), 0);
	cr_assert_not_null(strstr(out, "usage: uffd-inject dump --pid PID --images DIR [--kill | --leave-stopped]"));
	cr_assert_not_null(strstr(out, "--kill"));
	cr_assert_eq(run_tool(nopid, out, sizeof(out), err, sizeof(err)), 2);
	cr_assert_not_null(strstr(err, "--pid is required"), "%s", err);
	cr_assert_eq(run_tool(nodir, out, sizeof(out), err, sizeof(err)), 2);
	cr_assert_not_null(strstr(err, "--images is required"), "%s", err);
	cr_assert_eq(run_tool(badpid, out, sizeof(out), err, sizeof(err)), 2);
	cr_assert_not_null(strstr(err, "bad pid '12x'"), "%s", err);
	cr_assert_eq(run_tool(extra, out, sizeof(out), err, sizeof(err)), 2);
	cr_assert_not_null(strstr(err, "unexpected argument 'more'"), "%s", err);
	cr_assert_eq(run_tool(badopt, out, sizeof(out), err, sizeof(err)), 2);
	cr_assert_eq(dir_entries(tmp), 2, "usage errors wrote something");	/* tool.out, tool.err */
}

/* The /proc parsers and the area classifier, on fixed text. */
Test(procfs, maps_lines)
{
	char l1[] = "7f6dd7c0b000-7f6dd7c31000 r--p 00026000 fe:00 332835     /usr/lib/x86_64-linux-gnu/libc.so.6";
	char l2[] = "7ffec884f000-7ffec8870000 rw-p 00000000 00:00 0                          [stack]";
	char l3[] = "555bc1d11000-555bc1d32000 rw-p 00000000 00:00 0";
	char l4[] = "7f00-7e00 rw-p 00000000 00:00 0";
	char l5[] = "7f000000-7f001000 rwzp 00000000 00:00 0";
	char l6[] = "7f000000-7f001000 r--s 00000000 00:01 5 /my file (deleted)";
	struct procfs_vma v;

	cr_assert_eq(procfs_parse_maps_line(l1, &v), 0);
	cr_assert_eq(v.start, 0x7f6dd7c0b000ull);
	cr_assert_eq(v.end, 0x7f6dd7c31000ull);
	cr_assert_eq(v.pgoff, 0x26000);
	cr_assert_eq(v.dev_major, 0xfe);
	cr_assert_eq(v.inode, 332835);
	cr_assert_str_eq(v.perms, "r--p");
	cr_assert_str_eq(v.name, "/usr/lib/x86_64-linux-gnu/libc.so.6");
	cr_assert_eq(procfs_parse_maps_line(l2, &v), 0);
	cr_assert_str_eq(v.name, "[stack]");
	cr_assert_eq(procfs_parse_maps_line(l3, &v), 0);
	cr_assert_str_eq(v.name, "");
	cr_assert_eq(procfs_parse_maps_line(l4, &v), -EINVAL);
	cr_assert_eq(procfs_parse_maps_line(l5, &v), -EINVAL);
	cr_assert_eq(procfs_parse_maps_line(l6, &v), 0);
	cr_assert_str_eq(v.name, "/my file (deleted)");
	cr_assert_eq(procfs_parse_vmflags(" rd wr mr mw me gd ac "), PFV_GD);
	cr_assert_eq(procfs_parse_vmflags("rd mr pf io de dd"), PFV_PF | PFV_IO | PFV_DD);
	cr_assert_eq(procfs_parse_vmflags("rd wr ht lo um"), PFV_HT | PFV_LO | PFV_UM);
}

Test(procfs, stat_fields)
{
	/* A comm with spaces and parentheses; fields 4..52 of a real 6.x line. */
	const char *s = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 "
			"123 1000 50 18446744073709551615 94000000 94001000 140000000 0 0 0 0 0 0 "
			"0 0 0 17 1 0 0 0 0 0 95000000 95000100 96000000 140000100 140000200 "
			"140000200 140000300 0";
	struct procfs_stat st;

	cr_assert_eq(procfs_parse_stat(s, &st), 0);
	cr_assert_eq(st.state, 'S');
	cr_assert_eq(st.ppid, 1);
	cr_assert_eq(st.pgid, 4242);
	cr_assert_eq(st.sid, 4242);
	cr_assert_eq(st.num_threads, 1);
	cr_assert_eq(st.start_code, 94000000);
	cr_assert_eq(st.end_code, 94001000);
	cr_assert_eq(st.start_stack, 140000000);
	cr_assert_eq(st.start_data, 95000000);
	cr_assert_eq(st.end_data, 95000100);
	cr_assert_eq(st.start_brk, 96000000);
	cr_assert_eq(st.arg_start, 140000100);
	cr_assert_eq(st.arg_end, 140000200);
	cr_assert_eq(st.env_start, 140000200);
	cr_assert_eq(st.env_end, 140000300);
	cr_assert_eq(procfs_parse_stat("4242 (short) S 1 2 3", &st), -EINVAL);
}

Test(dump, classify_areas)
{
	static const struct {
		const char *line;
		const char *flags;
		int ret;
		uint32_t status;
		uint32_t mapflags;
		enum dump_kind kind;
		uint32_t pe;
	} tab[] = {
		{ "1000-2000 rw-p 00000000 00:00 0", "rd wr mr mw me ac", 0,
		  VMA_AREA_REGULAR | VMA_ANON_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS, DUMP_ANON,
		  PE_LAZY | PE_PRESENT },
		{ "1000-2000 rw-p 00000000 00:00 0 [heap]", "rd wr", 0,
		  VMA_AREA_REGULAR | VMA_ANON_PRIVATE | VMA_AREA_HEAP, MAP_PRIVATE | MAP_ANONYMOUS,
		  DUMP_ANON, PE_LAZY | PE_PRESENT },
		{ "1000-2000 rw-p 00000000 00:00 0 [stack]", "rd wr gd", 0,
		  VMA_AREA_REGULAR | VMA_ANON_PRIVATE | VMA_AREA_STACK,
		  MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN, DUMP_ANON, PE_LAZY | PE_PRESENT },
		{ "1000-2000 rw-p 00000000 00:00 0 [anon:cache]", "rd wr", 0,
		  VMA_AREA_REGULAR | VMA_ANON_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS, DUMP_ANON,
		  PE_LAZY | PE_PRESENT },
		{ "1000-2000 r-xp 00000000 00:00 0 [vdso]", "rd ex mr mw me de", 0,
		  VMA_AREA_REGULAR | VMA_ANON_PRIVATE | VMA_AREA_VDSO, MAP_PRIVATE | MAP_ANONYMOUS,
		  DUMP_ALL, PE_PRESENT },
		{ "1000-2000 r--p 00000000 00:00 0 [vvar]", "rd mr pf io de dd", 0,
		  VMA_ANON_PRIVATE | VMA_AREA_VVAR, MAP_PRIVATE | MAP_ANONYMOUS, DUMP_NONE, 0 },
		{ "1000-2000 r--p 00000000 00:00 0 [vvar_vclock]", "rd mr pf io de dd", 0,
		  VMA_ANON_PRIVATE | VMA_AREA_VVAR, MAP_PRIVATE | MAP_ANONYMOUS, DUMP_NONE, 0 },
		{ "1000-2000 --xp 00000000 00:00 0 [vsyscall]", "ex", 0,
		  VMA_ANON_PRIVATE | VMA_AREA_VSYSCALL, MAP_PRIVATE | MAP_ANONYMOUS, DUMP_NONE, 0 },
		{ "1000-2000 r--p 00002000 fe:00 77 /lib/x.so", "rd mr mw me", 0,
		  VMA_AREA_REGULAR | VMA_FILE_PRIVATE, MAP_PRIVATE, DUMP_COW, PE_PRESENT },
		{ "1000-2000 r--s 00000000 fe:00 77 /var/cache", "rd sh mr mw me ms", 0,
		  VMA_AREA_REGULAR | VMA_FILE_SHARED, MAP_SHARED, DUMP_NONE, 0 },
		{ "1000-2000 rw-p 00000000 00:00 0", "rd wr lo", 0,
		  VMA_AREA_REGULAR | VMA_ANON_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS, DUMP_ANON,
		  PE_LAZY | PE_PRESENT },
		/* Shared anonymous memory and memfds: memfd files, as CRIU 4.2 records them. */
		{ "1000-2000 rw-s 00000000 00:01 9 /dev/zero (deleted)", "rd wr sh", 0,
		  VMA_AREA_REGULAR | VMA_FILE_SHARED | VMA_AREA_MEMFD, MAP_SHARED, DUMP_NONE, 0 },
		{ "1000-2000 rw-s 00000000 00:01 9 [anon_shmem:x]", "rd wr sh", 0,
		  VMA_AREA_REGULAR | VMA_FILE_SHARED | VMA_AREA_MEMFD, MAP_SHARED, DUMP_NONE, 0 },
		{ "1000-2000 rw-s 00000000 00:01 9 /memfd:x (deleted)", "rd wr sh", 0,
		  VMA_AREA_REGULAR | VMA_FILE_SHARED | VMA_AREA_MEMFD, MAP_SHARED, DUMP_NONE, 0 },
		{ "1000-2000 rw-p 00000000 00:01 9 /memfd:x (deleted)", "rd wr", 0,
		  VMA_AREA_REGULAR | VMA_FILE_PRIVATE | VMA_AREA_MEMFD, MAP_PRIVATE, DUMP_COW,
		  PE_PRESENT },
		{ "1000-2000 rw-s 00000000 00:01 9 /SYSV00000000 (deleted)", "rd wr sh", -ENOTSUP, 0, 0, DUMP_NONE, 0 },
		{ "1000-2000 rw-s 00000000 fe:00 9 /var/x (deleted)", "rd wr sh", -ENOTSUP, 0, 0, DUMP_NONE, 0 },
		{ "1000-2000 rw-s 00000000 00:10 9 /memfd:h (deleted)", "rd wr sh ht", -ENOTSUP, 0, 0, DUMP_NONE, 0 },
		{ "1000-2000 rw-p 00000000 00:10 9 /anon_hugepage (deleted)", "rd wr ht", 0,
		  VMA_AREA_REGULAR | VMA_ANON_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB,
		  DUMP_ANON, PE_LAZY | PE_PRESENT },
		{ "1000-2000 rw-s 00000000 00:10 9 /anon_hugepage (deleted)", "rd wr sh ht", -ENOTSUP, 0, 0, DUMP_NONE, 0 },
		{ "1000-2000 rw-p 00000000 00:10 9 /dev/hugepages/f", "rd wr ht", -ENOTSUP, 0, 0, DUMP_NONE, 0 },
		{ "1000-2000 rw-p 00000000 00:00 0", "rd wr um", -ENOTSUP, 0, 0, DUMP_NONE, 0 },
		{ "1000-2000 rw-s 00000000 00:06 9 /dev/mem", "rd wr sh io pf", -ENOTSUP, 0, 0, DUMP_NONE, 0 },
		{ "1000-2000 r-xp 00000000 00:00 0 [uprobes]", "rd ex", -ENOTSUP, 0, 0, DUMP_NONE, 0 },
	};

	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		char line[160], why[256];
		struct procfs_vma v;
		struct dump_area a;
		VmaEntry e;

		snprintf(line, sizeof(line), "%s", tab[i].line);
		cr_assert_eq(procfs_parse_maps_line(line, &v), 0, "%s", tab[i].line);
		v.vmflags = procfs_parse_vmflags(tab[i].flags);
		v.vmflags_text = tab[i].flags;
		cr_assert_eq(dump_classify(&v, &e, &a, why, sizeof(why)), tab[i].ret, "%s",
			     tab[i].line);
		if (tab[i].ret)
			continue;
		cr_assert_eq(e.status, tab[i].status, "%s: status 0x%x", tab[i].line, e.status);
		cr_assert_eq(e.flags, tab[i].mapflags, "%s: flags 0x%x", tab[i].line, e.flags);
		cr_assert_eq(a.kind, tab[i].kind, "%s", tab[i].line);
		cr_assert_eq(a.pe_flags, tab[i].pe, "%s", tab[i].line);
		cr_assert_eq(e.fd, -1);
	}
}
