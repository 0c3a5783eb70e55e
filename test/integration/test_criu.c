/*
 * uffd-manager criu: a drop-in for `criu lazy-pages`, against the real CRIU
 * 4.2 images in test/data/criu-4.2. criu-sim plays `criu restore
 * --lazy-pages`: tasks under their image pids, their lazy VMAs mapped where
 * the dump had them, uffds handed over in criu's framing, RSTF. Every lazy
 * byte is compared with pages-N.img and with lazyapp's pattern; the
 * daemon's counters are checked against counts taken from the images.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "imgfix.h"
#include "tcriu.h"

#define SINGLE		FIX_CRIU_DIR "/single"
#define FORK3		FIX_CRIU_DIR "/fork3"
#define MiB		(1ull << 20)
#define RSTF		0x52535446
#define SIM_MS		60000
#define EXIT_MS		20000

static struct tc_run run;

static void setup(void)
{
	tc_init(&run);
}

/* The work dir of a test that did not get to its end is kept: its logs say why. */
static void teardown(void)
{
	tc_finish(&run);
}

/* Start the daemon on DIR with ARGS, or fail the test naming its log. */
static void start(const char *dir, const char *const *args)
{
	cr_assert(tc_daemon_start(&run, dir, args), "uffd-manager criu did not start; log in %s",
		  run.log);
}

/* criu-sim gives its tasks their image pids (clone3 with set_tid), as criu does: root only. */
static void need_root(void)
{
	if (geteuid() != 0)
		cr_skip_test("criu-sim needs root to create tasks under their image pids");
}

/* Run the sim; it and the daemon must both succeed. */
static void expect_clean_run(const char *dir, const char *const *sim_args)
{
	int sim;

	need_root();
	sim = tc_sim_run(&run, dir, sim_args, SIM_MS);
	cr_assert_eq(sim, 0, "criu-sim: a task saw wrong memory or failed (exit %d); see %s", sim,
		     run.simout);
	cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 0, "the daemon must exit 0; log in %s",
		     run.log);
	cr_expect(tc_file_has(run.log, "criu: done:"), "log in %s", run.log);
}

/* Lazy pages of every task of DIR but SKIP, from the images. */
static uint64_t total_lazy(const char *dir, uint32_t skip)
{
	uint32_t pids[16];
	size_t n = tc_tasks(dir, pids, 16);
	uint64_t sum = 0;

	for (size_t i = 0; i < n; i++)
		if (pids[i] != skip)
			sum += tc_lazy_pages(dir, pids[i]);
	return sum;
}

/* The largest lazy VMA of PID in DIR. */
static void largest_lazy(const char *dir, uint32_t pid, uint64_t *start, uint64_t *len)
{
	uint64_t v[64][2];
	size_t n = tc_lazy_vmas(dir, pid, v, 64);

	cr_assert_gt(n, 0, "pid %u has no lazy VMA", pid);
	*start = v[0][0];
	*len = v[0][1] - v[0][0];
	for (size_t i = 1; i < n; i++)
		if (v[i][1] - v[i][0] > *len) {
			*start = v[i][0];
			*len = v[i][1] - v[i][0];
		}
}

/* A --pattern argument for the sim. */
static const char *pattern(char *buf, size_t len, uint32_t pid, uint64_t addr, uint64_t bytes,
			   uint64_t seed, uint64_t w0)
{
	snprintf(buf, len, "%u:%" PRIx64 ":%" PRIx64 ":%" PRIx64 ":%" PRIx64, pid, addr, bytes,
		 seed, w0);
	return buf;
}

/* lazyapp single 8: one 8 MiB region, seed 0x1234567: the largest lazy VMA. */
static const char *single_pattern(char *buf, size_t len)
{
	uint32_t pid;
	uint64_t start, bytes;

	cr_assert_eq(tc_tasks(SINGLE, &pid, 1), 1);
	largest_lazy(SINGLE, pid, &start, &bytes);
	cr_assert_eq(bytes, 8 * MiB, "the 8 MiB region of `lazyapp single 8`");
	return pattern(buf, len, pid, start, bytes, 0x1234567, 0);
}

Test(criu, single_every_byte, .init = setup, .fini = teardown, .timeout = 90)
{
	char pat[128];
	const char *sim[] = { "--pattern", single_pattern(pat, sizeof(pat)), NULL };

	start(SINGLE, NULL);
	expect_clean_run(SINGLE, sim);
	cr_expect_eq(tc_file_number(run.log, "processes served, 0 exited first; "),
		     (double)total_lazy(SINGLE, 0),
		     "every lazy page copied once; log in %s", run.log);
	cr_expect(tc_file_has(run.simout, "lazyapp pattern checked"), "%s", run.simout);
	run.passed = true;
}

/*
 * lazyapp fork3 8: the parent's 4 MiB lazy VMA is its own 2 MiB (seed
 * 0x1111) below the 2 MiB it filled before forking (0x5555); child c's own
 * region, part / (c + 1) bytes, holds seed 0x9000 + c from its start.
 */
static void fork3_patterns(const char **argv, char bufs[][128])
{
	uint32_t pids[4];
	uint64_t start, bytes, part = 2 * MiB, v[64][2];
	int n = 0;

	cr_assert_eq(tc_tasks(FORK3, pids, 4), 4);
	largest_lazy(FORK3, pids[0], &start, &bytes);
	cr_assert_eq(bytes, 2 * part, "the parent's two adjacent regions");
	argv[n++] = "--pattern";
	argv[n++] = pattern(bufs[0], 128, pids[0], start, part, 0x1111, 0);
	argv[n++] = "--pattern";
	argv[n++] = pattern(bufs[1], 128, pids[0], start + part, part, 0x5555, 0);
	for (int c = 0; c < 3; c++) {
		uint64_t mine = part / (c + 1), want = (mine + 4095) & ~4095ull;
		size_t k = tc_lazy_vmas(FORK3, pids[c + 1], v, 64), i;

		/* Its own region: the lazy VMA of that size that is not the inherited one. */
		for (i = 0; i < k; i++)
			if (v[i][1] - v[i][0] == want && v[i][0] != start + part)
				break;
		cr_assert_lt(i, k, "child %d (pid %u): no lazy VMA of %" PRIu64 " bytes", c,
			     pids[c + 1], want);
		argv[n++] = "--pattern";
		argv[n++] = pattern(bufs[2 + c], 128, pids[c + 1], v[i][0], mine & ~7ull,
				    0x9000 + c, 0);
	}
	argv[n] = NULL;
}

Test(criu, fork3_every_byte, .init = setup, .fini = teardown, .timeout = 90)
{
	char bufs[5][128];
	const char *sim[12];

	fork3_patterns(sim, bufs);
	start(FORK3, NULL);
	expect_clean_run(FORK3, sim);
	cr_expect_eq(tc_file_number(run.log, "criu: done: "), 4, "log in %s", run.log);
	cr_expect_eq(tc_file_number(run.log, "processes served, 0 exited first; "),
		     (double)total_lazy(FORK3, 0), "log in %s", run.log);
	cr_expect(tc_file_has(run.log, "4 tasks, 4 processes served"), "log in %s", run.log);
	run.passed = true;
}

Test(criu, zombie_record, .init = setup, .fini = teardown, .timeout = 90)
{
	uint32_t pids[4];
	char zpid[16], want[64];
	const char *sim[] = { "--zombie", zpid, NULL };

	tc_tasks(FORK3, pids, 4);
	snprintf(zpid, sizeof(zpid), "%u", pids[2]);
	start(FORK3, NULL);
	expect_clean_run(FORK3, sim);
	snprintf(want, sizeof(want), "criu: pid %u: a zombie, nothing to serve", pids[2]);
	cr_expect(tc_file_has(run.log, want), "log in %s", run.log);
	cr_expect(tc_file_has(run.log, "4 tasks, 3 processes served"), "log in %s", run.log);
	cr_expect_eq(tc_file_number(run.log, "processes served, 0 exited first; "),
		     (double)total_lazy(FORK3, pids[2]), "a zombie's pages are not served");
	run.passed = true;
}

Test(criu, fork_and_mremap_after_rstf, .init = setup, .fini = teardown, .timeout = 90)
{
	/* No fill: every page reaches the processes through faults and events. */
	const char *args[] = { "--no-fill", NULL };
	char pat[128], spid[16], want[96];
	const char *sim[] = { "--fork-remap", spid, "--pattern", pat, NULL };
	uint32_t pid;

	single_pattern(pat, sizeof(pat));
	tc_tasks(SINGLE, &pid, 1);
	snprintf(spid, sizeof(spid), "%u", pid);
	start(SINGLE, args);
	expect_clean_run(SINGLE, sim);
	snprintf(want, sizeof(want), ": served: %" PRIu64 " of %" PRIu64 " lazy pages copied, 0 left",
		 tc_lazy_pages(SINGLE, pid), tc_lazy_pages(SINGLE, pid));
	cr_expect(tc_file_has(run.log, want), "%s; log in %s", want, run.log);
	cr_expect(tc_file_has(run.log, "events fork 1 remap 1 remove 1 unmap"),
		  "the task forked once, moved once, dropped once; log in %s", run.log);
	cr_expect(tc_file_has(run.log, "(forked) served"), "the forked child was served; log in %s",
		  run.log);
	cr_expect(tc_file_has(run.log, "1 tasks, 2 processes served, 0 exited first"), "log in %s",
		  run.log);
	run.passed = true;
}

Test(criu, record_from_another_process_is_refused, .init = setup, .fini = teardown, .timeout = 90)
{
	/* The restore's main process sends the task's pid, the task its uffd: not one sender. */
	char spid[16], want[160];
	const char *sim[] = { "--wrong-sender", spid, NULL };
	uint32_t pid;

	need_root();
	tc_tasks(SINGLE, &pid, 1);
	snprintf(spid, sizeof(spid), "%u", pid);
	start(SINGLE, NULL);
	cr_expect_neq(tc_sim_run(&run, SINGLE, sim, SIM_MS), 0, "see %s", run.simout);
	cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 1, "log in %s", run.log);
	snprintf(want, sizeof(want), "restore failed: pid %u: its pid came from process ", pid);
	cr_expect(tc_file_has(run.log, want), "%s; log in %s", want, run.log);
	cr_expect(tc_file_has(run.log, "each task must send its own record"), "log in %s", run.log);
	run.passed = true;
}

Test(criu, connection_dropped_before_rstf, .init = setup, .fini = teardown, .timeout = 90)
{
	const char *sim[] = { "--drop-after", "1", NULL };
	int sim_rc;

	need_root();
	start(SINGLE, NULL);
	sim_rc = tc_sim_run(&run, SINGLE, sim, SIM_MS);
	/* The task handed over is served to the end, on demand: it never reads zeros. */
	cr_assert_eq(sim_rc, 0, "the task saw wrong memory; see %s", run.simout);
	cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 1, "log in %s", run.log);
	cr_expect(tc_file_has(run.log,
			      "restore failed: the restore connection closed before RSTF, after 1 of 1 tasks were handed over"),
		  "log in %s", run.log);
	cr_expect(tc_file_has(run.log, "on demand only (no background fill without RSTF)"),
		  "log in %s", run.log);
	cr_expect(tc_file_has(run.log, "fully served: "), "log in %s", run.log);
	run.passed = true;
}

Test(criu, connection_dropped_mid_records, .init = setup, .fini = teardown, .timeout = 90)
{
	const char *sim[] = { "--drop-after", "2", NULL };
	uint32_t pids[4];
	char want[96];

	need_root();
	tc_tasks(FORK3, pids, 4);
	start(FORK3, NULL);
	cr_assert_eq(tc_sim_run(&run, FORK3, sim, SIM_MS), 0, "see %s", run.simout);
	cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 1, "log in %s", run.log);
	cr_expect(tc_file_has(run.log, "after 2 of 4 tasks were handed over"), "log in %s", run.log);
	for (int i = 2; i < 4; i++) {
		snprintf(want, sizeof(want), "criu: pid %u: never handed over; its %" PRIu64 " lazy pages",
			 pids[i], tc_lazy_pages(FORK3, pids[i]));
		cr_expect(tc_file_has(run.log, want), "%s: log in %s", want, run.log);
	}
	run.passed = true;
}

/* `uffd-manager status --json` against the daemon's --socket SOCK. */
static void status_json(const char *sock, char *out, size_t len)
{
	const char *build = getenv("UFFD_TEST_BUILD") ? getenv("UFFD_TEST_BUILD") : TEST_BUILDDIR;
	char cmd[400];
	size_t n;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "%s/uffd-manager status --json --socket %s", build, sock);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	n = fread(out, 1, len - 1, f);
	out[n] = 0;
	cr_assert_eq(pclose(f), 0, "%s: %s", cmd, out);
}

/* How many of PID's fds are open on a file named NAME. */
static int fds_on(pid_t pid, const char *name)
{
	char dir[64], path[400], target[400];
	size_t nl = strlen(name);
	struct dirent *de;
	int n = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	d = opendir(dir);
	cr_assert_not_null(d, "%s", dir);
	while ((de = readdir(d))) {
		ssize_t len;

		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		len = readlink(path, target, sizeof(target) - 1);
		if (len <= (ssize_t)nl)
			continue;
		target[len] = 0;
		if (target[len - nl - 1] == '/' && !strcmp(target + len - nl, name))
			n++;
	}
	closedir(d);
	return n;
}

Test(criu, sigterm_before_rstf_kills_rather_than_zeros, .init = setup, .fini = teardown,
     .timeout = 90)
{
	/* All records, no RSTF, the connection held open; the tasks sleep before reading. */
	const char *sim[] = { "--hold", "--read-delay", "30000", NULL };
	char sock[128], out[8192], want[128];
	const char *args[] = { "--socket", sock, NULL };
	uint32_t pid;
	pid_t sp;

	need_root();
	tc_tasks(SINGLE, &pid, 1);
	snprintf(sock, sizeof(sock), "%s/m.sock", run.dir);
	start(SINGLE, args);
	sp = tc_sim_start(&run, SINGLE, sim);
	cr_assert(tc_file_wait(run.log, "all 1 tasks handed over", 20000), "log in %s", run.log);
	/* The status command works in this mode too. */
	status_json(sock, out, sizeof(out));
	snprintf(want, sizeof(want), "\"pid\":%u,\"image_id\":%u,", pid, pid);
	cr_expect_not_null(strstr(out, want), "%s", out);
	snprintf(want, sizeof(want), "\"pages_remaining\":%" PRIu64 ",", tc_lazy_pages(SINGLE, pid));
	cr_expect_not_null(strstr(out, want), "%s", out);
	/* Its images loaded before the daemon ran, the pages file is kept open as in hand-over mode. */
	cr_expect_eq(fds_on(run.pid, "pages-1.img"), 1, "the pages file is not open once while served");
	kill(run.pid, SIGTERM);
	cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 1, "log in %s", run.log);
	/* The task was killed, not left to read zeros once the daemon was gone. */
	cr_expect_eq(tc_sim_wait(sp, SIM_MS), 1, "see %s", run.simout);
	snprintf(want, sizeof(want), "task %u failed (wait status 0x9)", pid);
	cr_expect(tc_file_has(run.simout, want), "see %s", run.simout);
	cr_expect(tc_file_has(run.log, "killing the 1 processes not fully served"), "log in %s",
		  run.log);
	/* Nothing was read: every lazy page was still missing. */
	snprintf(want, sizeof(want), "criu: pid %u (host %u): %" PRIu64 " of %" PRIu64 " lazy pages not served",
		 pid, pid, tc_lazy_pages(SINGLE, pid), tc_lazy_pages(SINGLE, pid));
	cr_expect(tc_file_has(run.log, want), "%s; log in %s", want, run.log);
	run.passed = true;
}

Test(criu, sigterm_after_rstf_serves_to_the_end, .init = setup, .fini = teardown, .timeout = 90)
{
	/* No fill, and the task reads only seconds later: everything is still missing at SIGTERM. */
	const char *args[] = { "--no-fill", NULL };
	const char *sim[] = { "--read-delay", "3000", NULL };
	pid_t sp;

	need_root();
	start(SINGLE, args);
	sp = tc_sim_start(&run, SINGLE, sim);
	cr_assert(tc_file_wait(run.log, "criu: restore finished (RSTF)", 20000), "log in %s", run.log);
	kill(run.pid, SIGTERM);
	cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 0, "log in %s", run.log);
	cr_expect(tc_file_has(run.log, "criu: stopping: serving 1 processes to the end first"),
		  "log in %s", run.log);
	cr_expect(tc_file_has(run.log, ", 0 faults; last one ended"), "log in %s", run.log);
	/* The task reads after the daemon has gone: every page must be there. */
	cr_assert_eq(tc_sim_wait(sp, SIM_MS), 0, "the task saw wrong memory; see %s", run.simout);
	run.passed = true;
}

/* ---- refused before anything is served ---- */

struct corrupt {
	const char *name;
	const char *how;	/* "magic", "truncate", "size" */
	const char *want;	/* in the message, besides the file name */
};

static const struct corrupt corruptions[] = {
	{ "bad type magic", "magic", "wrong type magic" },
	{ "record cut short", "truncate", "truncated" },
	{ "record size past the end", "size", "size says 16777216 bytes" },
};

#define NR_CORRUPT	(sizeof(corruptions) / sizeof(corruptions[0]))

/* Rows by index: Criterion copies parameters into another process, pointers and all. */
ParameterizedTestParameters(criu, corrupt_pagemap_refused)
{
	static unsigned idx[NR_CORRUPT];

	for (unsigned i = 0; i < NR_CORRUPT; i++)
		idx[i] = i;
	return cr_make_param_array(unsigned, idx, NR_CORRUPT);
}

/* Break pagemap-PID.img in DIR as C says. */
static void break_pagemap(const char *dir, uint32_t pid, const struct corrupt *c)
{
	char name[64];
	struct fix_recs rs;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	uint8_t *buf;
	size_t len;

	snprintf(name, sizeof(name), "pagemap-%u.img", pid);
	cr_assert_eq(fix_parse_records(&rs, dfd, name, IMG_PAGEMAP_MAGIC), 0);
	cr_assert_gt(rs.n, 2);
	buf = fix_read_file(dfd, name, &len);
	cr_assert_not_null(buf);
	if (!strcmp(c->how, "magic")) {
		buf[4] ^= 0xff;
	} else if (!strcmp(c->how, "truncate")) {
		len = rs.r[rs.n - 1].off + 4 + rs.r[rs.n - 1].len / 2;
	} else {
		uint32_t big = 1u << 24;

		memcpy(buf + rs.r[rs.n - 1].off, &big, sizeof(big));
	}
	fix_write_file(dfd, name, buf, len);
	free(buf);
	fix_recs_free(&rs);
	close(dfd);
}

ParameterizedTest(unsigned *row, criu, corrupt_pagemap_refused, .init = setup,
		  .fini = teardown, .timeout = 30)
{
	const struct corrupt *c = &corruptions[*row];
	char dir[160], want[64];
	uint32_t pid;

	tc_tasks(SINGLE, &pid, 1);
	snprintf(dir, sizeof(dir), "%s/img", run.dir);
	tc_copy_dir(SINGLE, dir);
	break_pagemap(dir, pid, c);
	cr_assert_not(tc_daemon_start(&run, dir, NULL), "%s: the daemon must refuse to start",
		      c->name);
	cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 1, "log in %s", run.log);
	snprintf(want, sizeof(want), "pagemap-%u.img", pid);
	cr_expect(tc_file_has(run.log, want), "%s: the message names the file; log in %s", c->name,
		  run.log);
	cr_expect(tc_file_has(run.err, want), "%s: and the caller of -o LOG sees it too", c->name);
	cr_expect(tc_file_has(run.log, c->want), "%s: log in %s", c->name, run.log);
	cr_expect(access(run.sock, F_OK) != 0, "%s: nothing listens", c->name);
	run.passed = true;
}

/* ---- malformed restore connections ---- */

enum bad_kind { BK_PID_UNKNOWN, BK_PID_ZERO, BK_ZOMBIE_UNKNOWN, BK_NO_FD, BK_TWO_FDS, BK_PIPE,
		BK_NO_API, BK_FD_WITH_PID, BK_SHORT_PID, BK_BAD_RSTF };

struct bad_record {
	enum bad_kind kind;
	const char *want;
};

static const struct bad_record bad_records[] = {
	{ BK_PID_UNKNOWN, "record 1: pid 123456 is not a task of " },
	{ BK_PID_ZERO, "record 1: pid 0 is not a task pid" },
	{ BK_ZOMBIE_UNKNOWN, "record 1: pid 777 is not a task of " },
	{ BK_NO_FD, "the message after its pid carries no fd (its uffd)" },
	{ BK_TWO_FDS, "the message after its pid carries 2 fds; one uffd was expected" },
	{ BK_PIPE, "the fd it sent is not a userfaultfd (pipe:" },
	{ BK_NO_API, "its userfaultfd has not been through UFFDIO_API" },
	{ BK_FD_WITH_PID, "an fd came with the bytes of a pid or of RSTF" },
	{ BK_SHORT_PID, "closed before RSTF, after 0 of 1 tasks were handed over" },
	{ BK_BAD_RSTF, "0x12345678 where RSTF (0x52535446) was expected" },
};

#define NR_BAD	(sizeof(bad_records) / sizeof(bad_records[0]))

ParameterizedTestParameters(criu, bad_record_fails_the_restore)
{
	static unsigned idx[NR_BAD];

	for (unsigned i = 0; i < NR_BAD; i++)
		idx[i] = i;
	return cr_make_param_array(unsigned, idx, NR_BAD);
}

/* Send the bad record of KIND for the single task PID. */
static void send_bad(int sk, enum bad_kind kind, int pid)
{
	int p[2], fds[2], uffd;

	cr_assert_eq(pipe(p), 0);
	switch (kind) {
	case BK_PID_UNKNOWN: tc_send_int(sk, 123456); break;
	case BK_PID_ZERO: tc_send_int(sk, 0); break;
	case BK_ZOMBIE_UNKNOWN: tc_send_int(sk, -777); break;
	case BK_NO_FD:
		tc_send_int(sk, pid);
		tc_send_fds(sk, NULL, 0);
		break;
	case BK_TWO_FDS:
		tc_send_int(sk, pid);
		tc_send_fds(sk, p, 2);
		break;
	case BK_PIPE:
		tc_send_int(sk, pid);
		tc_send_fds(sk, p, 1);
		break;
	case BK_NO_API:
		uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
		cr_assert_geq(uffd, 0);
		tc_send_int(sk, pid);
		tc_send_fds(sk, &uffd, 1);
		close(uffd);
		break;
	case BK_FD_WITH_PID:
		fds[0] = p[0];
		tc_send_fds(sk, fds, 1);	/* a byte of the pid, with an fd */
		break;
	case BK_SHORT_PID:
		cr_assert_eq(send(sk, "\1\2", 2, 0), 2);
		break;
	case BK_BAD_RSTF:
		tc_send_int(sk, -pid);	/* a zombie: a complete restore of one task */
		tc_send_int(sk, 0x12345678);
		break;
	}
	close(p[0]);
	close(p[1]);
}

ParameterizedTest(unsigned *row, criu, bad_record_fails_the_restore, .init = setup,
		  .fini = teardown, .timeout = 30)
{
	const struct bad_record *b = &bad_records[*row];
	uint32_t pid;
	int sk;

	tc_tasks(SINGLE, &pid, 1);
	start(SINGLE, NULL);
	sk = tc_connect(&run);
	send_bad(sk, b->kind, (int)pid);
	close(sk);
	cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 1, "log in %s", run.log);
	cr_expect(tc_file_has(run.log, b->want), "want \"%s\"; log in %s", b->want, run.log);
	cr_expect(tc_file_has(run.log, "criu: exit 1: the restore of "), "log in %s", run.log);
	cr_expect(access(run.sock, F_OK) != 0, "the socket is gone once the restore connected");
	run.passed = true;
}

Test(criu, zombie_only_restore_exits_0, .init = setup, .fini = teardown, .timeout = 30)
{
	uint32_t pid;
	int sk;

	tc_tasks(SINGLE, &pid, 1);
	start(SINGLE, NULL);
	sk = tc_connect(&run);
	tc_send_int(sk, -(int)pid);
	tc_send_int(sk, RSTF);
	cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 0, "log in %s", run.log);
	close(sk);
	cr_expect(tc_file_has(run.log, "criu: done: 1 tasks, 0 processes served"), "log in %s",
		  run.log);
	run.passed = true;
}

Test(criu, daemon_mode_returns_when_listening, .init = setup, .fini = teardown, .timeout = 30)
{
	char cmd[600], pidfile[160];
	const char *build = getenv("UFFD_TEST_BUILD") ? getenv("UFFD_TEST_BUILD") : TEST_BUILDDIR;
	uint32_t pid;
	FILE *f;
	int dpid = 0, st, sk;

	/* The daemon is our grandchild: be its reaper to learn how it exits. */
	cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	tc_tasks(SINGLE, &pid, 1);
	snprintf(pidfile, sizeof(pidfile), "%s/daemon.pid", run.dir);
	snprintf(cmd, sizeof(cmd), "%s/uffd-manager criu --daemon --pidfile %s -D %s -W %s -o %s",
		 build, pidfile, SINGLE, run.dir, run.log);
	cr_assert_eq(system(cmd), 0, "%s; log in %s", cmd, run.log);
	/* It listens and says who it is before --daemon returns. */
	cr_assert_eq(access(run.sock, F_OK), 0, "no socket when --daemon returned");
	f = fopen(pidfile, "r");
	cr_assert_not_null(f, "no pidfile");
	cr_assert_eq(fscanf(f, "%d", &dpid), 1);
	fclose(f);
	cr_assert_eq(kill(dpid, 0), 0, "pid %d from the pidfile is not running", dpid);
	run.pid = dpid;		/* killed by the teardown if it stays */
	sk = tc_connect(&run);
	tc_send_int(sk, -(int)pid);
	tc_send_int(sk, RSTF);
	close(sk);
	st = tc_daemon_wait(&run, EXIT_MS);
	cr_expect(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "wait status %d; log in %s", st,
		  run.log);
	cr_expect(access(pidfile, F_OK) != 0, "the pidfile is removed at exit");
	run.passed = true;
}

/* As criu's: relative -o and --pidfile are in the work dir, wherever we run it from. */
Test(criu, relative_log_and_pidfile_go_to_the_work_dir, .init = setup, .fini = teardown,
     .timeout = 30)
{
	char cmd[600], pidfile[200], log[200];
	const char *build = getenv("UFFD_TEST_BUILD") ? getenv("UFFD_TEST_BUILD") : TEST_BUILDDIR;
	uint32_t pid;
	FILE *f;
	int dpid = 0, sk;

	cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	tc_tasks(SINGLE, &pid, 1);
	snprintf(pidfile, sizeof(pidfile), "%s/rel.pid", run.dir);
	snprintf(log, sizeof(log), "%s/rel.log", run.dir);
	snprintf(cmd, sizeof(cmd), "cd / && %s/uffd-manager criu --daemon --pidfile rel.pid -D %s "
		 "-W %s -o rel.log", build, SINGLE, run.dir);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
	f = fopen(pidfile, "r");
	cr_assert_not_null(f, "no %s", pidfile);
	cr_assert_eq(fscanf(f, "%d", &dpid), 1);
	fclose(f);
	run.pid = dpid;
	cr_assert(tc_file_has(log, "listening"), "no log in %s", log);
	cr_expect_neq(access("/rel.log", F_OK), 0, "a log in the cwd");
	sk = tc_connect(&run);
	tc_send_int(sk, -(int)pid);
	tc_send_int(sk, RSTF);
	close(sk);
	cr_expect(tc_daemon_wait(&run, EXIT_MS) != -1, "log in %s", log);
	cr_expect(access(pidfile, F_OK) != 0, "the pidfile is removed at exit");
	run.passed = true;
}

Test(criu, sigterm_before_a_restore_connects, .init = setup, .fini = teardown, .timeout = 30)
{
	start(SINGLE, NULL);
	kill(run.pid, SIGTERM);
	cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 1, "log in %s", run.log);
	cr_expect(tc_file_has(run.log, "stopping: no restore connected"), "log in %s", run.log);
	cr_expect(access(run.sock, F_OK) != 0, "the socket is removed");
	run.passed = true;
}

/* ---- figures ---- */

Test(criu, measure_single, .init = setup, .fini = teardown, .timeout = 90)
{
	/* The tasks wait before reading: the daemon's fill alone serves all 8 MiB. */
	const char *sim[] = { "--read-delay", "1000", NULL };
	double fill_ms, demand_ms;

	start(SINGLE, NULL);
	expect_clean_run(SINGLE, sim);
	fill_ms = tc_file_number(run.log, "last one ended ");
	cr_expect(tc_file_has(run.log, ", 0 faults; last one ended"),
		  "no fault: the fill got there first; log in %s", run.log);
	run.passed = true;
	tc_finish(&run);

	/* The tasks read at once: faults and fill together. */
	tc_init(&run);
	start(SINGLE, NULL);
	expect_clean_run(SINGLE, NULL);
	demand_ms = tc_file_number(run.log, "last one ended ");
	fprintf(stderr, "criu/measure_single: 8 MiB of `single` served by background fill alone in %.1f ms after RSTF (%.0f MiB/s); with the task reading at once: %.1f ms\n",
		fill_ms, 8.0 / (fill_ms / 1000.0), demand_ms);
	cr_expect_gt(fill_ms, 0);
	cr_expect_gt(demand_ms, 0);
	run.passed = true;
}
