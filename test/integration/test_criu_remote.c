/*
 * Remote mode of `uffd-manager criu`: the lazy pages' data comes over TCP
 * from `uffd-manager page-server` (CRIU's page-server protocol) on
 * loopback, while the layout still comes from the local images. criu-sim
 * plays `criu restore --lazy-pages`, every lazy page is compared byte by
 * byte with pages-N.img; a server that cuts or stalls is a loss, reported
 * within the deadline. Then the page server alone, spoken to with raw
 * headers: answers checked against the images, bad requests refused, and
 * the limits: out of fds, --max-clients, --idle-timeout.
 *
 * Real CRIU cannot restore on this kernel, so compatibility with `criu
 * page-server --lazy-pages` rests on the protocol facts in manager/pswire.h.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "imgfix.h"
#include "imgtask.h"
#include "loop.h"
#include "pswire.h"
#include "tcriu.h"

#define SINGLE		FIX_CRIU_DIR "/single"
#define FORK3		FIX_CRIU_DIR "/fork3"
#define MiB		(1ull << 20)
#define PG		4096ull
#define SIM_MS		60000
#define EXIT_MS		20000

static struct tc_run run;

static void setup(void)
{
	tc_init(&run);
}

static void teardown(void)
{
	tc_finish(&run);
}

static void need_root(void)
{
	if (geteuid() != 0)
		cr_skip_test("criu-sim needs root to create tasks under their image pids");
}

/* Start the page server on SRC with ARGS, then the daemon on DIR in remote mode with ARGS. */
static void start_remote(const char *dir, const char *const *ps_args, const char *const *args)
{
	const char *a[16] = { "--page-server", "--address", "127.0.0.1", "--port", NULL };
	int n = 5;

	cr_assert(tc_pagesrv_start(&run, dir, ps_args), "the page server did not start; log in %s",
		  run.ps_log);
	a[4] = run.ps_port;
	for (int i = 0; args && args[i] && n < 15; i++)
		a[n++] = args[i];
	a[n] = NULL;
	cr_assert(tc_daemon_start(&run, dir, a), "uffd-manager criu did not start; log in %s",
		  run.log);
}

/* Lazy pages of every task of DIR, from the images. */
static uint64_t total_lazy(const char *dir)
{
	uint32_t pids[16];
	size_t n = tc_tasks(dir, pids, 16);
	uint64_t sum = 0;

	for (size_t i = 0; i < n; i++)
		sum += tc_lazy_pages(dir, pids[i]);
	return sum;
}

/* The sim and the daemon succeed; every lazy page came from the page server, once. */
static void expect_clean_remote_run(const char *dir, const char *const *sim_args)
{
	int sim;

	sim = tc_sim_run(&run, dir, sim_args, SIM_MS);
	cr_assert_eq(sim, 0, "criu-sim: a task saw wrong memory or failed (exit %d); see %s", sim,
		     run.simout);
	cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 0, "the daemon must exit 0; log in %s",
		     run.log);
	cr_expect(tc_file_has(run.log, "criu: done:"), "log in %s", run.log);
	cr_expect_eq(tc_file_number(run.log, "processes served, 0 exited first; "),
		     (double)total_lazy(dir), "every lazy page copied once; log in %s", run.log);
	cr_expect(tc_file_has(run.log, "remote: connected to the page server 127.0.0.1:"),
		  "log in %s", run.log);
	/* The daemon ended the session as criu lazy-pages does: CLOSE, status, hang up. */
	cr_expect_eq(tc_pagesrv_stop(&run), 0, "page server log in %s", run.ps_log);
	cr_expect(tc_file_has(run.ps_log, "done (CLOSE, then hung up)"), "log in %s", run.ps_log);
	cr_expect(tc_file_has(run.ps_log, "0 requests refused"), "log in %s", run.ps_log);
}

Test(criu_remote, single_every_byte, .init = setup, .fini = teardown, .timeout = 90)
{
	uint32_t pid;
	uint64_t v[64][2], start = 0, bytes = 0;
	char pat[128];
	size_t n;
	const char *sim[] = { "--pattern", pat, NULL };

	need_root();
	/* lazyapp single 8: its 8 MiB region (seed 0x1234567) is the largest lazy VMA. */
	cr_assert_eq(tc_tasks(SINGLE, &pid, 1), 1);
	n = tc_lazy_vmas(SINGLE, pid, v, 64);
	for (size_t i = 0; i < n; i++)
		if (v[i][1] - v[i][0] > bytes) {
			start = v[i][0];
			bytes = v[i][1] - v[i][0];
		}
	cr_assert_eq(bytes, 8 * MiB);
	snprintf(pat, sizeof(pat), "%u:%" PRIx64 ":%" PRIx64 ":1234567:0", pid, start, bytes);
	start_remote(SINGLE, NULL, NULL);
	expect_clean_remote_run(SINGLE, sim);
	cr_expect(tc_file_has(run.simout, "lazyapp pattern checked"), "%s", run.simout);
	cr_expect_eq(tc_file_number(run.log, "remote: fetched "), (double)total_lazy(SINGLE),
		     "every page fetched once; log in %s", run.log);
	run.passed = true;
}

Test(criu_remote, fork3_every_byte, .init = setup, .fini = teardown, .timeout = 90)
{
	need_root();
	start_remote(FORK3, NULL, NULL);
	expect_clean_remote_run(FORK3, NULL);
	cr_expect(tc_file_has(run.log, "4 tasks, 4 processes served"), "log in %s", run.log);
	/* Several requests were on the wire at once. */
	cr_expect_gt(tc_file_number(run.log, "short answers, up to "), 1, "log in %s", run.log);
	run.passed = true;
}

Test(criu_remote, fork_and_mremap_after_rstf, .init = setup, .fini = teardown, .timeout = 90)
{
	/* No fill: every page reaches the processes through faults and events. */
	const char *args[] = { "--no-fill", NULL };
	char spid[16], want[96];
	const char *sim[] = { "--fork-remap", spid, NULL };
	uint32_t pid;

	need_root();
	tc_tasks(SINGLE, &pid, 1);
	snprintf(spid, sizeof(spid), "%u", pid);
	start_remote(SINGLE, NULL, args);
	cr_assert_eq(tc_sim_run(&run, SINGLE, sim, SIM_MS), 0, "see %s", run.simout);
	cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 0, "log in %s", run.log);
	snprintf(want, sizeof(want), ": served: %" PRIu64 " of %" PRIu64 " lazy pages copied, 0 left",
		 tc_lazy_pages(SINGLE, pid), tc_lazy_pages(SINGLE, pid));
	cr_expect(tc_file_has(run.log, want), "%s; log in %s", want, run.log);
	cr_expect(tc_file_has(run.log, "events fork 1 remap 1 remove 1 unmap"), "log in %s", run.log);
	cr_expect(tc_file_has(run.log, "(forked) served"), "log in %s", run.log);
	cr_expect(tc_file_has(run.log, "1 tasks, 2 processes served, 0 exited first"), "log in %s",
		  run.log);
	/* Only faults asked: no background request. */
	cr_expect(tc_file_has(run.log, " for faults, 0 in the background, "), "log in %s", run.log);
	run.passed = true;
}

/*
 * Our page server closes a client quiet for --idle-timeout. A remote daemon
 * that fills nothing (--no-fill) while its task does not touch its memory
 * is such a client: its keep-alive asks for a page when quiet, so the
 * connection lives and the task, reading two seconds later, gets every
 * byte. With the keep-alive off, the same run loses its connection.
 */
static void quiet_run(const char *keepalive, bool want_ok)
{
	const char *ps[] = { "--idle-timeout", "600", NULL };
	/* No grace: a closed connection is the end (else the daemon would come back, see test_migrate.c). */
	const char *args[] = { "--no-fill", "--page-server-keepalive", keepalive,
			       "--page-server-grace", "0", NULL };
	const char *sim[] = { "--read-delay", "2000", NULL };
	int st;

	need_root();
	start_remote(SINGLE, ps, args);
	st = tc_sim_run(&run, SINGLE, sim, SIM_MS);
	if (want_ok) {
		cr_assert_eq(st, 0, "a task failed; see %s", run.simout);
		cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 0, "log in %s", run.log);
		cr_expect(tc_file_has(run.log, "keep-alive: asking for"), "log in %s", run.log);
		cr_expect(!tc_file_has(run.ps_log, "quiet since"), "log in %s", run.ps_log);
	} else {
		cr_assert_neq(st, 0, "the task ran without its pages? see %s", run.simout);
		cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 1, "log in %s", run.log);
		cr_expect(tc_file_has(run.log, "remote: lost the page server"), "log in %s", run.log);
	}
	run.passed = true;
}

Test(criu_remote, keepalive_holds_a_quiet_connection, .init = setup, .fini = teardown,
     .timeout = 90)
{
	quiet_run("150", true);
}

Test(criu_remote, without_keepalive_a_quiet_connection_is_closed, .init = setup,
     .fini = teardown, .timeout = 90)
{
	quiet_run("0", false);
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

Test(criu_remote, status_while_serving, .init = setup, .fini = teardown, .timeout = 90)
{
	char sock[128], out[8192], want[96];
	const char *args[] = { "--no-fill", "--socket", sock, NULL };
	const char *sim[] = { "--read-delay", "1500", NULL };
	uint32_t pid;
	pid_t sp;

	need_root();
	tc_tasks(SINGLE, &pid, 1);
	snprintf(sock, sizeof(sock), "%s/m.sock", run.dir);
	start_remote(SINGLE, NULL, args);
	sp = tc_sim_start(&run, SINGLE, sim);
	cr_assert(tc_file_wait(run.log, "criu: restore finished (RSTF)", 20000), "log in %s", run.log);
	status_json(sock, out, sizeof(out));
	snprintf(want, sizeof(want), "\"pid\":%u,", pid);
	cr_expect_not_null(strstr(out, want), "%s", out);
	snprintf(want, sizeof(want), "\"pages_remaining\":%" PRIu64 ",", tc_lazy_pages(SINGLE, pid));
	cr_expect_not_null(strstr(out, want), "%s", out);
	cr_assert_eq(tc_sim_wait(sp, SIM_MS), 0, "see %s", run.simout);
	cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 0, "log in %s", run.log);
	run.passed = true;
}

/*
 * The page server fails after N answers (PS_ARGS: it cuts the connection,
 * or stalls). The daemon names every task with the pages it did not get
 * and exits 1; no task reads a zero where data was: each either checked
 * every byte or was killed (SIGKILL) before it could read one that never
 * came. PS_WANT and WANT: what the server's log and the daemon's say.
 */
static void server_fails(const char *dir, const char *const *ps, const char *const *args,
			 const char *const *sim, const char *ps_want, const char *want_lost)
{
	uint32_t pids[16];
	size_t n = tc_tasks(dir, pids, 16);
	unsigned killed = 0;
	char want[160];
	int rc;
	const char *a[16] = { "--page-server-grace", "0", NULL };
	int na = 2;

	/* No grace: the loss is final at once (reconnects are test_migrate.c's). */
	for (int i = 0; args && args[i] && na < 15; i++)
		a[na++] = args[i];
	a[na] = NULL;
	need_root();
	start_remote(dir, ps, a);
	cr_assert_eq(tc_sim_run(&run, dir, sim, SIM_MS), 1, "some task must have failed; see %s",
		     run.simout);
	rc = tc_daemon_exit_code(&run, EXIT_MS);
	cr_assert_eq(rc, 1, "exit %d; log in %s", rc, run.log);
	cr_expect(tc_file_has(run.log, "remote: lost the page server 127.0.0.1:"), "log in %s",
		  run.log);
	cr_expect(tc_file_has(run.log, want_lost), "want \"%s\"; log in %s", want_lost, run.log);
	cr_expect(tc_file_has(run.ps_log, ps_want), "want \"%s\"; log in %s", ps_want, run.ps_log);
	cr_expect_not(tc_file_has(run.simout, "differs from"), "a task read wrong memory: %s",
		      run.simout);
	cr_expect_not(tc_file_has(run.simout, "WRONG MEMORY"), "%s", run.simout);
	for (size_t i = 0; i < n; i++) {
		snprintf(want, sizeof(want), "task %u failed (wait status 0x9)", pids[i]);
		if (!tc_file_has(run.simout, want))
			continue;
		killed++;
		/* Named in the report, with the pages it did not get. */
		snprintf(want, sizeof(want), "criu: pid %u (host %u): ", pids[i], pids[i]);
		cr_expect(tc_file_has(run.log, want), "log in %s", run.log);
		snprintf(want, sizeof(want), " of %" PRIu64 " lazy pages not served (killed: page server connection lost)",
			 tc_lazy_pages(dir, pids[i]));
		cr_expect(tc_file_has(run.log, want), "%s; log in %s", want, run.log);
	}
	cr_expect_gt(killed, 0, "see %s", run.simout);
	cr_expect(tc_file_has(run.log, "criu: exit 1: "), "log in %s", run.log);
	run.passed = true;
}

/* The connection breaks in the middle of the answer to request DROP + 1. */
static void connection_cut(const char *dir, const char *drop, const char *const *sim)
{
	const char *ps[] = { "--drop-after", drop, NULL };

	/* EOF in the middle of an answer, or a reset (the server had unread requests). */
	server_fails(dir, ps, NULL, sim, "cut in the middle of an answer (--drop-after)", ": ");
}

Test(criu_remote, connection_cut_while_reading, .init = setup, .fini = teardown, .timeout = 90)
{
	connection_cut(FORK3, "8", NULL);
}

Test(criu_remote, connection_cut_before_reading, .init = setup, .fini = teardown, .timeout = 90)
{
	/* The fill runs into the cut before any task reads: all are killed, none reads zeros. */
	const char *sim[] = { "--read-delay", "1000", NULL };

	connection_cut(SINGLE, "3", sim);
	cr_expect(tc_file_has(run.log, ", 0 faults; events"), "log in %s", run.log);
}

Test(criu_remote, server_stalls, .init = setup, .fini = teardown, .timeout = 60)
{
	/* The server answers 8 requests, then nothing, the connection still up: no EOF, no reset. */
	const char *ps[] = { "--stall-after", "8", NULL };
	const char *args[] = { "--page-server-timeout", "300", NULL };
	uint64_t t0 = now_ns();
	double s;

	server_fails(FORK3, ps, args, NULL, "stalling after 8 answers (--stall-after)",
		     ": no answer within 300 ms to GET ");
	/* Killed and reported at the deadline, not after the sim's own 60 s (a wide margin: a loaded machine is slow). */
	s = (now_ns() - t0) / 1e9;
	cr_expect_lt(s, 40.0, "%.1f s", s);
	cr_expect(tc_file_has(run.log, "(answers due within 300 ms)"), "log in %s", run.log);
	cr_expect(tc_file_has(run.ps_log, "hung up while stalled"), "the daemon hung up; log in %s",
		  run.ps_log);
}

Test(criu_remote, timeout_needs_page_server, .init = setup, .fini = teardown, .timeout = 30)
{
	const char *a[] = { "--page-server-timeout", "300", NULL };
	const char *b[] = { "--page-server", "--address", "127.0.0.1", "--port", "1",
			    "--page-server-timeout", "0", NULL };

	cr_assert_not(tc_daemon_start(&run, SINGLE, a));
	cr_expect_eq(tc_daemon_exit_code(&run, EXIT_MS), 2);
	cr_expect(tc_file_has(run.err, "--page-server-timeout, --page-server-keepalive and --page-server-grace go with --page-server"), "%s",
		  run.err);
	cr_assert_not(tc_daemon_start(&run, SINGLE, b));
	cr_expect_eq(tc_daemon_exit_code(&run, EXIT_MS), 2);
	cr_expect(tc_file_has(run.err, "--page-server-timeout 0: want 1 to "), "%s", run.err);
	run.passed = true;
}

/* A TCP listener on loopback for a hand-played page server; its port in PORT. */
static int fake_server(char *port, size_t len)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	cr_assert_eq(listen(fd, 4), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	snprintf(port, len, "%u", ntohs(sin.sin_port));
	return fd;
}

static bool recv_all(int sk, void *buf, size_t len);

Test(criu_remote, close_status_in_pieces, .init = setup, .fini = teardown, .timeout = 30)
{
	/* TCP may deliver CLOSE's status word in pieces: the daemon waits for all of it. */
	char port[16];
	const char *a[] = { "--page-server", "--address", "127.0.0.1", "--port", port, NULL };
	uint8_t hb[PS_HDR_SIZE];
	int32_t status = 0;
	struct ps_hdr h;
	int lfd = fake_server(port, sizeof(port)), sk;

	uint32_t pid;
	int rsk;

	tc_tasks(SINGLE, &pid, 1);
	cr_assert(tc_daemon_start(&run, SINGLE, a), "log in %s", run.log);
	sk = accept(lfd, NULL, NULL);
	cr_assert_geq(sk, 0);
	/* A restore that succeeds with nothing to fetch (its one task a zombie): CLOSE. */
	rsk = tc_connect(&run);
	tc_send_int(rsk, -(int)pid);
	tc_send_int(rsk, 0x52535446);
	cr_assert(recv_all(sk, hb, sizeof(hb)), "no CLOSE; log in %s", run.log);
	ps_decode(hb, &h);
	cr_assert_eq(h.cmd, PS_IOV_CLOSE, "cmd 0x%x", h.cmd);
	cr_assert_eq(send(sk, &status, 2, MSG_NOSIGNAL), 2);
	usleep(300 * 1000);
	cr_assert_eq(send(sk, (uint8_t *)&status + 2, 2, MSG_NOSIGNAL), 2);
	cr_expect_eq(tc_daemon_exit_code(&run, EXIT_MS), 0, "log in %s", run.log);
	close(rsk);
	cr_expect_not(tc_file_has(run.log, "did not answer CLOSE"), "log in %s", run.log);
	cr_expect_not(tc_file_has(run.log, "answered CLOSE with status"), "log in %s", run.log);
	cr_expect(tc_file_has(run.log, "remote: fetched 0 pages"), "log in %s", run.log);
	close(sk);
	close(lfd);
	run.passed = true;
}

/* The pid of the process holding the page server connection, from the daemon's log, or 0. */
static pid_t holder_pid(void)
{
	double v = tc_file_number(run.log, "now held by process ");

	return v > 0 ? (pid_t)v : 0;
}

/* The holder must be ours: a child of the daemon we started, named so. */
static void end_holder(pid_t holder)
{
	char path[64], comm[32] = "";
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/comm", holder);
	f = fopen(path, "r");
	cr_assert_not_null(f, "holder %d is gone", holder);
	cr_assert_not_null(fgets(comm, sizeof(comm), f));
	fclose(f);
	cr_assert_eq(strcmp(comm, "uffd-ps-hold\n"), 0, "pid %d is \"%s\", not the holder", holder,
		     comm);
	kill(holder, SIGTERM);
}

/*
 * A failed restore must not end the source: no CLOSE (nor a plain hang-up,
 * which CRIU 4.2 takes as the same), the connection kept open after the
 * daemon exits; when its holder is ended, a reset.
 */
static void expect_source_left_waiting(void)
{
	pid_t holder;

	cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 1, "log in %s", run.log);
	cr_expect(tc_file_has(run.log, "remote: the restore did not finish: CLOSE not sent"),
		  "log in %s", run.log);
	holder = holder_pid();
	cr_assert_gt(holder, 0, "no holder named; log in %s", run.log);
	usleep(200 * 1000);
	cr_expect_not(tc_file_has(run.ps_log, "done (CLOSE"), "the source was ended; log in %s",
		      run.ps_log);
	cr_expect_not(tc_file_has(run.ps_log, "hung up without CLOSE"),
		      "a plain hang-up ends the source too; log in %s", run.ps_log);
	end_holder(holder);
	cr_expect(tc_file_wait(run.ps_log, "Connection reset by peer", 5000),
		  "a reset once the holder ends; log in %s", run.ps_log);
	cr_expect_not(tc_file_has(run.ps_log, "done (CLOSE"), "log in %s", run.ps_log);
}

Test(criu_remote, failed_restore_leaves_the_source_waiting, .init = setup, .fini = teardown,
     .timeout = 60)
{
	/* The restore sends a bad record: it fails before anything was fetched. */
	char spid[16];
	const char *sim[] = { "--wrong-sender", spid, NULL };
	uint32_t pid;

	need_root();
	tc_tasks(SINGLE, &pid, 1);
	snprintf(spid, sizeof(spid), "%u", pid);
	start_remote(SINGLE, NULL, NULL);
	cr_expect_neq(tc_sim_run(&run, SINGLE, sim, SIM_MS), 0, "see %s", run.simout);
	expect_source_left_waiting();
	cr_expect(tc_file_has(run.log, "each task must send its own record"), "log in %s", run.log);
	run.passed = true;
}

Test(criu_remote, task_not_served_leaves_the_source_waiting, .init = setup, .fini = teardown,
     .timeout = 60)
{
	/* All of fork3 restored, then the restore dies before RSTF: the tasks are killed. */
	const char *sim[] = { "--hold", "--read-delay", "20000", NULL };
	pid_t sp;

	need_root();
	start_remote(FORK3, NULL, NULL);
	sp = tc_sim_start(&run, FORK3, sim);
	cr_assert(tc_file_wait(run.log, "all 4 tasks handed over", SIM_MS), "log in %s", run.log);
	kill(run.pid, SIGTERM);
	expect_source_left_waiting();
	cr_expect(tc_file_has(run.log, "lazy pages not served (killed: stopped before RSTF)"),
		  "log in %s", run.log);
	tc_sim_wait(sp, SIM_MS);
	run.passed = true;
}

Test(criu_remote, page_server_unreachable, .init = setup, .fini = teardown, .timeout = 30)
{
	/* A port nobody listens on: refused before anything listens. */
	const char *a[] = { "--page-server", "--address", "127.0.0.1", "--port", "1", NULL };

	cr_assert_not(tc_daemon_start(&run, SINGLE, a));
	cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 1, "log in %s", run.log);
	cr_expect(tc_file_has(run.err, "cannot connect to the page server at 127.0.0.1:1"),
		  "stderr in %s", run.err);
	cr_expect(access(run.sock, F_OK) != 0, "nothing listens");
	run.passed = true;
}

/* ---- the page server alone, with raw headers ---- */

static void send_hdr(int sk, uint32_t cmd, uint64_t nr, uint64_t vaddr, uint64_t dst)
{
	struct ps_hdr h = { .cmd = cmd, .nr_pages = nr, .vaddr = vaddr, .dst_id = dst };
	uint8_t b[PS_HDR_SIZE];

	ps_encode(b, &h);
	cr_assert_eq(send(sk, b, sizeof(b), MSG_NOSIGNAL), (ssize_t)sizeof(b));
}

/* Read exactly LEN bytes within 5 s; false on EOF or timeout. */
static bool recv_all(int sk, void *buf, size_t len)
{
	struct pollfd p = { .fd = sk, .events = POLLIN };

	for (size_t got = 0; got < len;) {
		ssize_t n;

		if (poll(&p, 1, 5000) != 1)
			return false;
		n = recv(sk, (uint8_t *)buf + got, len - got, 0);
		if (n <= 0)
			return false;
		got += (size_t)n;
	}
	return true;
}

/* The peer closes without sending anything more. */
static bool closed_silently(int sk)
{
	uint8_t b;
	struct pollfd p = { .fd = sk, .events = POLLIN };

	return poll(&p, 1, 5000) == 1 && recv(sk, &b, 1, 0) == 0;
}

/* The images' bytes for [ADDR, ADDR + LEN) of PID in DIR, resolved on our own; lazy or not. */
static void image_bytes(const char *dir, uint32_t pid, uint64_t addr, uint64_t len, uint8_t *out,
			bool *lazy)
{
	struct pages_cache c = { 0 };
	struct img_task t;
	struct img_err err;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	cr_assert_eq(img_task_load(&t, dfd, pid, &c, &err), 0, "%s", err.msg);
	*lazy = true;
	for (uint64_t off = 0; off < len; off += PG) {
		struct pm_run r;

		pagemap_resolve(t.pm, addr + off, PG, &r);
		*lazy &= (r.flags & PE_LAZY) != 0;
		cr_assert_eq(r.src, PM_DATA);
		memcpy(out + off, r.pf->base + r.off, PG);
	}
	img_task_free(&t, &c);
	close(dfd);
}

/* GET NR pages at ADDR of PID (DST as sent); check the answer against the images. Returns its page count. */
static uint64_t get_and_check(int sk, const char *dir, uint32_t pid, uint64_t dst, uint64_t addr,
			      uint64_t nr)
{
	uint8_t hb[PS_HDR_SIZE], *got, *want;
	struct ps_hdr h;
	bool lazy;

	send_hdr(sk, ps_cmd(PS_IOV_GET, 0), nr, addr, dst);
	cr_assert(recv_all(sk, hb, sizeof(hb)), "no answer; log in %s", run.ps_log);
	ps_decode(hb, &h);
	cr_assert_eq(h.cmd, ps_cmd(PS_IOV_ADD_F, PS_FLAG_PRESENT), "cmd 0x%x", h.cmd);
	cr_assert_eq(h.vaddr, addr);
	cr_assert_eq(h.dst_id, dst);
	cr_assert(h.nr_pages >= 1 && h.nr_pages <= nr && h.nr_pages <= 1024, "%" PRIu64, h.nr_pages);
	got = malloc(h.nr_pages * PG);
	want = malloc(h.nr_pages * PG);
	cr_assert(recv_all(sk, got, h.nr_pages * PG));
	image_bytes(dir, pid, addr, h.nr_pages * PG, want, &lazy);
	cr_assert(lazy, "the server sent pages that are not lazy");
	cr_assert_eq(memcmp(got, want, h.nr_pages * PG), 0, "the data differs from the images");
	free(got);
	free(want);
	return h.nr_pages;
}

/* The first lazy pagemap entry of PID in DIR: its start and pages. */
static void first_lazy(const char *dir, uint32_t pid, uint64_t *start, uint64_t *nr)
{
	struct pages_cache c = { 0 };
	struct img_task t;
	struct img_err err;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	cr_assert_eq(img_task_load(&t, dfd, pid, &c, &err), 0, "%s", err.msg);
	*nr = 0;
	for (size_t i = 0; i < t.pm->n && !*nr; i++)
		if (t.pm->e[i].flags & PE_LAZY) {
			*start = t.pm->e[i].start;
			*nr = (t.pm->e[i].end - t.pm->e[i].start) / PG;
		}
	cr_assert_gt(*nr, 0);
	img_task_free(&t, &c);
	close(dfd);
}

Test(pagesrv, answers_match_the_images, .init = setup, .fini = teardown, .timeout = 30)
{
	uint32_t pids[4];
	uint64_t start, nr, got;
	uint8_t st[4];
	int sk, sk2;

	cr_assert_eq(tc_tasks(FORK3, pids, 4), 4);
	cr_assert(tc_pagesrv_start(&run, FORK3, NULL), "log in %s", run.ps_log);
	sk = tc_pagesrv_connect(&run);
	sk2 = tc_pagesrv_connect(&run);
	for (int i = 0; i < 4; i++) {
		first_lazy(FORK3, pids[i], &start, &nr);
		/* Two clients at once, interleaved. */
		cr_expect_eq(get_and_check(i % 2 ? sk2 : sk, FORK3, pids[i], pids[i], start, 1), 1);
		/* Asked past the entry (and far past the cap): fewer pages, as criu allows. */
		got = get_and_check(i % 2 ? sk : sk2, FORK3, pids[i], pids[i], start, 1ull << 40);
		cr_expect_eq(got, nr < 1024 ? nr : 1024, "pid %u", pids[i]);
	}
	/* CLOSE: a zero status word, then the server waits for us to hang up. */
	send_hdr(sk, PS_IOV_CLOSE, 0, 0, 0);
	cr_assert(recv_all(sk, st, sizeof(st)));
	cr_expect_eq(st[0] | st[1] | st[2] | st[3], 0);
	close(sk);
	/* FORCE_CLOSE: the status word, then the server hangs up itself. */
	send_hdr(sk2, PS_IOV_FORCE_CLOSE, 0, 0, 0);
	cr_assert(recv_all(sk2, st, sizeof(st)));
	cr_expect_eq(st[0] | st[1] | st[2] | st[3], 0);
	cr_expect(closed_silently(sk2));
	close(sk2);
	cr_expect_eq(tc_pagesrv_stop(&run), 0);
	cr_expect(tc_file_has(run.ps_log, "done (FORCE_CLOSE)"), "log in %s", run.ps_log);
	cr_expect(tc_file_has(run.ps_log, "done (CLOSE, then hung up)"), "log in %s", run.ps_log);
	cr_expect(tc_file_has(run.ps_log, "0 requests refused"), "log in %s", run.ps_log);
	run.passed = true;
}

Test(pagesrv, parent_chain, .init = setup, .fini = teardown, .timeout = 30)
{
	/* The top dump has half of an 8-page lazy area in its parent (generation 1), half its own (2). */
	const struct fix_pe parent_pe[] = { { 0x40000, 8, PE_LAZY | PE_PRESENT, 0 } };
	const struct fix_pe top_pe[] = {
		{ 0x40000, 4, PE_LAZY | PE_PARENT, 0 },
		{ 0x44000, 4, PE_LAZY | PE_PRESENT, 0 },
	};
	const struct fix_vma vma = { 0x40000, 0x48000 };
	uint32_t pid = FIX_PID;
	uint8_t hb[PS_HDR_SIZE], data[8 * 4096];
	struct ps_hdr h;
	char top[160];
	int dfd, pfd, sk;

	snprintf(top, sizeof(top), "%s/top", run.dir);
	cr_assert_eq(mkdir(top, 0700), 0);
	dfd = fix_open_dir(top);
	pfd = fix_mkdir(dfd, "p1");
	fix_write_pagemap(pfd, FIX_PID, FIX_PAGES_ID, parent_pe, 1);
	fix_write_pages(pfd, FIX_PAGES_ID, 1, parent_pe, 1);
	fix_write_mm(pfd, FIX_PID, &vma, 1);
	fix_symlink(dfd, "parent", "p1");
	fix_write_inventory(dfd);
	fix_write_pstree(dfd, &pid, 1);
	fix_write_mm(dfd, FIX_PID, &vma, 1);
	fix_write_pagemap(dfd, FIX_PID, FIX_PAGES_ID, top_pe, 2);
	fix_write_pages(dfd, FIX_PAGES_ID, 2, top_pe, 2);
	close(pfd);
	close(dfd);
	cr_assert(tc_pagesrv_start(&run, top, NULL), "log in %s", run.ps_log);
	sk = tc_pagesrv_connect(&run);
	for (uint64_t a = 0x40000; a < 0x48000;) {
		send_hdr(sk, ps_cmd(PS_IOV_GET, 0), (0x48000 - a) / PG, a, FIX_PID);
		cr_assert(recv_all(sk, hb, sizeof(hb)), "log in %s", run.ps_log);
		ps_decode(hb, &h);
		cr_assert_eq(h.vaddr, a);
		/* Each answer stops where its source does. */
		cr_assert_eq(h.nr_pages, 4);
		cr_assert(recv_all(sk, data, h.nr_pages * PG));
		for (uint64_t w = 0; w < h.nr_pages * PG / 8; w++)
			cr_assert_eq(((uint64_t *)data)[w], fix_word(a < 0x44000 ? 1 : 2, a + w * 8),
				     "word at 0x%" PRIx64, a + w * 8);
		a += h.nr_pages * PG;
	}
	close(sk);
	run.passed = true;
}

/* ---- bad requests: refused, the connection closed, the server goes on ---- */

enum bad_get { BG_UNKNOWN_PID, BG_PUSH_FORM_DST, BG_NOT_LAZY, BG_HOLE, BG_UNALIGNED,
	       BG_ZERO_PAGES, BG_WRAP, BG_PUSH, BG_UNKNOWN_CMD };

struct bad_req {
	enum bad_get kind;
	const char *want;
};

static const struct bad_req bad_reqs[] = {
	{ BG_UNKNOWN_PID, "no task with that pid in " },
	/* A GET names the bare pid, as criu's page_server_get_pages sends it; never pid << 8 | 1. */
	{ BG_PUSH_FORM_DST, "this is the dump side's form of pid " },
	{ BG_NOT_LAZY, "restored eagerly" },
	{ BG_HOLE, "not in its pagemap" },
	{ BG_UNALIGNED, "the address is not page aligned" },
	{ BG_ZERO_PAGES, "no pages asked" },
	{ BG_WRAP, "the range wraps around" },
	{ BG_PUSH, "it does not take a dump" },
	{ BG_UNKNOWN_CMD, "unknown command 0x4d" },
};

#define NR_BAD	(sizeof(bad_reqs) / sizeof(bad_reqs[0]))

ParameterizedTestParameters(pagesrv, bad_request_refused)
{
	static unsigned idx[NR_BAD];

	for (unsigned i = 0; i < NR_BAD; i++)
		idx[i] = i;
	return cr_make_param_array(unsigned, idx, NR_BAD);
}

/* A page of PID in DIR whose entry is not lazy (restored eagerly). */
static uint64_t eager_page(const char *dir, uint32_t pid)
{
	struct pages_cache c = { 0 };
	struct img_task t;
	struct img_err err;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	uint64_t a = 0;

	cr_assert_eq(img_task_load(&t, dfd, pid, &c, &err), 0, "%s", err.msg);
	for (size_t i = 0; i < t.pm->n && !a; i++)
		if (!(t.pm->e[i].flags & PE_LAZY))
			a = t.pm->e[i].start;
	img_task_free(&t, &c);
	close(dfd);
	cr_assert_neq(a, 0, "no eager page");
	return a;
}

ParameterizedTest(unsigned *row, pagesrv, bad_request_refused, .init = setup, .fini = teardown,
		  .timeout = 30)
{
	const struct bad_req *b = &bad_reqs[*row];
	uint64_t start, nr;
	uint32_t pid;
	int sk;

	tc_tasks(SINGLE, &pid, 1);
	first_lazy(SINGLE, pid, &start, &nr);
	cr_assert(tc_pagesrv_start(&run, SINGLE, NULL), "log in %s", run.ps_log);
	sk = tc_pagesrv_connect(&run);
	switch (b->kind) {
	case BG_UNKNOWN_PID: send_hdr(sk, PS_IOV_GET, 1, start, 4242); break;
	case BG_PUSH_FORM_DST: send_hdr(sk, PS_IOV_GET, 1, start, (uint64_t)pid << 8 | 1); break;
	case BG_NOT_LAZY: send_hdr(sk, PS_IOV_GET, 1, eager_page(SINGLE, pid), pid); break;
	case BG_HOLE: send_hdr(sk, PS_IOV_GET, 1, 0x1000, pid); break;
	case BG_UNALIGNED: send_hdr(sk, PS_IOV_GET, 1, start + 8, pid); break;
	case BG_ZERO_PAGES: send_hdr(sk, PS_IOV_GET, 0, start, pid); break;
	case BG_WRAP: send_hdr(sk, PS_IOV_GET, 16, 0xfffffffffffff000ull, pid); break;
	case BG_PUSH: send_hdr(sk, ps_cmd(PS_IOV_ADD_F, PS_FLAG_PRESENT), 1, start, pid); break;
	case BG_UNKNOWN_CMD: send_hdr(sk, 0x4d, 1, start, pid); break;
	}
	cr_expect(closed_silently(sk), "%s: the connection must end with no answer", b->want);
	close(sk);
	cr_expect(tc_file_has(run.ps_log, b->want), "want \"%s\"; log in %s", b->want, run.ps_log);
	cr_expect(tc_file_has(run.ps_log, "closing the connection"), "log in %s", run.ps_log);
	/* The server goes on serving others. */
	sk = tc_pagesrv_connect(&run);
	cr_expect_eq(get_and_check(sk, SINGLE, pid, pid, start, 1), 1);
	close(sk);
	cr_expect_eq(tc_pagesrv_stop(&run), 0);
	cr_expect(tc_file_has(run.ps_log, "1 requests refused"), "log in %s", run.ps_log);
	run.passed = true;
}

Test(pagesrv, header_in_pieces, .init = setup, .fini = teardown, .timeout = 30)
{
	/* A request that arrives a few bytes at a time is still one request. */
	struct ps_hdr h;
	uint8_t b[PS_HDR_SIZE], *data = malloc(PG), want[PG];
	uint64_t start, nr;
	uint32_t pid;
	bool lazy;
	int sk;

	tc_tasks(SINGLE, &pid, 1);
	first_lazy(SINGLE, pid, &start, &nr);
	cr_assert(tc_pagesrv_start(&run, SINGLE, NULL), "log in %s", run.ps_log);
	sk = tc_pagesrv_connect(&run);
	h = (struct ps_hdr){ .cmd = PS_IOV_GET, .nr_pages = 1, .vaddr = start, .dst_id = pid };
	ps_encode(b, &h);
	for (size_t off = 0; off < sizeof(b); off += 5) {
		cr_assert_gt(send(sk, b + off, sizeof(b) - off < 5 ? sizeof(b) - off : 5, 0), 0);
		usleep(2000);
	}
	cr_assert(recv_all(sk, b, sizeof(b)));
	ps_decode(b, &h);
	cr_assert_eq(h.nr_pages, 1);
	cr_assert(recv_all(sk, data, PG));
	image_bytes(SINGLE, pid, start, PG, want, &lazy);
	cr_expect_eq(memcmp(data, want, PG), 0);
	free(data);
	close(sk);
	run.passed = true;
}

/* ---- the page server under load: fds, slots, silent clients, exposure ---- */

/* How many times S occurs in the file at PATH. */
static unsigned count_in_file(const char *path, const char *s)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	unsigned n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		for (char *p = line; (p = strstr(p, s)); p += strlen(s))
			n++;
	fclose(f);
	return n;
}

static long file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* User and system CPU time of PID so far, in clock ticks. */
static unsigned long cpu_ticks(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	cr_assert_not_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	p = strrchr(buf, ')');
	cr_assert_not_null(p);
	/* After "pid (comm)": state is field 3, utime 14, stime 15. */
	cr_assert_eq(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st), 2);
	return ut + st;
}

/* Connect without waiting for the server to accept (the backlog takes it). */
static int connect_nb(const struct tc_run *r)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(atoi(r->ps_port)),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	int fl;

	cr_assert_geq(fd, 0);
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		cr_assert_eq(errno, EINPROGRESS, "connect: %s", strerror(errno));
		/* A full backlog drops the SYN: the connection is still on its way, fine. */
		poll(&p, 1, 200);
	}
	fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	return fd;
}

#define NR_MANY	40

Test(pagesrv, out_of_fds_backs_off, .init = setup, .fini = teardown, .timeout = 30)
{
	/* 24 fds: some clients are taken, the rest meet EMFILE. */
	int sk[NR_MANY];
	uint64_t start, nr;
	unsigned long t0;
	uint32_t pid;
	long size;

	tc_tasks(SINGLE, &pid, 1);
	first_lazy(SINGLE, pid, &start, &nr);
	run.ps_nofile = 24;
	cr_assert(tc_pagesrv_start(&run, SINGLE, NULL), "log in %s", run.ps_log);
	for (int i = 0; i < NR_MANY; i++)
		sk[i] = connect_nb(&run);
	cr_assert(tc_file_wait(run.ps_log, "accept: Too many open files", 5000), "log in %s",
		  run.ps_log);
	/* Out of fds, it neither spins nor floods its log. */
	t0 = cpu_ticks(run.ps_pid);
	usleep(500 * 1000);
	cr_expect_lt(cpu_ticks(run.ps_pid) - t0, 10ul, "CPU ticks in 0.5 s out of fds");
	size = file_size(run.ps_log);
	cr_expect_lt(size, 16384, "log of %ld bytes; see %s", size, run.ps_log);
	cr_expect_eq(count_in_file(run.ps_log, "Too many open files"), 1, "once; log in %s",
		     run.ps_log);
	cr_expect(tc_file_has(run.ps_log, "not accepting until an fd is free"), "log in %s",
		  run.ps_log);
	/* The clients it has are served meanwhile. */
	cr_expect_eq(get_and_check(sk[0], SINGLE, pid, pid, start, 1), 1);
	/* The last one waits in the backlog; once the others leave, it is served. */
	send_hdr(sk[NR_MANY - 1], ps_cmd(PS_IOV_GET, 0), 1, start, pid);
	for (int i = 0; i < NR_MANY - 1; i++)
		close(sk[i]);
	cr_expect_eq(get_and_check(sk[NR_MANY - 1], SINGLE, pid, pid, start, 1), 1,
		     "log in %s", run.ps_log);
	cr_expect(tc_file_has(run.ps_log, "accepting again after "), "log in %s", run.ps_log);
	close(sk[NR_MANY - 1]);
	cr_expect_eq(tc_pagesrv_stop(&run), 0, "log in %s", run.ps_log);
	cr_expect_eq(tc_file_number(run.ps_log, "stopping: "), NR_MANY, "every client taken; log in %s",
		     run.ps_log);
	run.passed = true;
}

Test(pagesrv, max_clients_wait_their_turn, .init = setup, .fini = teardown, .timeout = 30)
{
	const char *args[] = { "--max-clients", "2", NULL };
	struct pollfd p;
	uint64_t start, nr;
	uint32_t pid;
	int a, b, c;

	tc_tasks(SINGLE, &pid, 1);
	first_lazy(SINGLE, pid, &start, &nr);
	cr_assert(tc_pagesrv_start(&run, SINGLE, args), "log in %s", run.ps_log);
	a = tc_pagesrv_connect(&run);
	b = tc_pagesrv_connect(&run);
	c = tc_pagesrv_connect(&run);
	cr_expect_eq(get_and_check(b, SINGLE, pid, pid, start, 1), 1);
	send_hdr(c, ps_cmd(PS_IOV_GET, 0), 1, start, pid);
	p = (struct pollfd){ .fd = c, .events = POLLIN };
	cr_expect_eq(poll(&p, 1, 300), 0, "the third client waits while two are open");
	cr_expect(tc_file_has(run.ps_log, "2 connections open (--max-clients): new ones wait"),
		  "log in %s", run.ps_log);
	close(a);
	cr_expect_eq(get_and_check(c, SINGLE, pid, pid, start, 1), 1, "log in %s", run.ps_log);
	cr_expect(tc_file_has(run.ps_log, "accepting again after "), "log in %s", run.ps_log);
	close(b);
	close(c);
	cr_expect_eq(tc_pagesrv_stop(&run), 0);
	run.passed = true;
}

Test(pagesrv, silent_client_closed, .init = setup, .fini = teardown, .timeout = 30)
{
	const char *args[] = { "--idle-timeout", "200", NULL };
	struct pollfd p;
	uint64_t start, nr;
	uint32_t pid;
	int quiet, busy;

	tc_tasks(SINGLE, &pid, 1);
	first_lazy(SINGLE, pid, &start, &nr);
	cr_assert(tc_pagesrv_start(&run, SINGLE, args), "log in %s", run.ps_log);
	quiet = tc_pagesrv_connect(&run);
	busy = tc_pagesrv_connect(&run);
	/* A client that asks within the idle time is kept however long it stays. */
	for (int i = 0; i < 8; i++) {
		cr_expect_eq(get_and_check(busy, SINGLE, pid, pid, start, 1), 1);
		usleep(80 * 1000);
	}
	cr_expect(closed_silently(quiet), "a client that never asks is closed");
	cr_expect(tc_file_has(run.ps_log, "sent no request for "), "log in %s", run.ps_log);
	p = (struct pollfd){ .fd = busy, .events = POLLIN };
	cr_expect_eq(poll(&p, 1, 0), 0, "the client that asks is kept");
	cr_expect_eq(get_and_check(busy, SINGLE, pid, pid, start, 2), 2);
	close(quiet);
	close(busy);
	cr_expect_eq(tc_pagesrv_stop(&run), 0);
	cr_expect(tc_file_has(run.ps_log, ", 1 idle connections closed"), "log in %s", run.ps_log);
	run.passed = true;
}

Test(pagesrv, warns_when_not_on_loopback, .init = setup, .fini = teardown, .timeout = 30)
{
	/* Like criu page-server, it listens on every address unless told; it says what that means. */
	const char *any[] = { "--address", "0.0.0.0", NULL };
	int sk;

	cr_assert(tc_pagesrv_start(&run, SINGLE, any), "log in %s", run.ps_log);
	cr_expect(tc_file_has(run.ps_log, "0.0.0.0 is not a loopback address and the protocol has no authentication: anyone who can reach port "),
		  "log in %s", run.ps_log);
	sk = tc_pagesrv_connect(&run);
	close(sk);
	cr_expect_eq(tc_pagesrv_stop(&run), 0);
	run.passed = true;
	tc_finish(&run);

	tc_init(&run);
	cr_assert(tc_pagesrv_start(&run, SINGLE, NULL), "log in %s", run.ps_log);
	cr_expect_not(tc_file_has(run.ps_log, "not a loopback address"), "127.0.0.1 is; log in %s",
		      run.ps_log);
	cr_expect_eq(tc_pagesrv_stop(&run), 0);
	run.passed = true;
}

/* ---- figures ---- */

Test(criu_remote, measure_single, .init = setup, .fini = teardown, .timeout = 90)
{
	/* The task waits before reading: the background requests alone bring all 8 MiB. */
	const char *sim[] = { "--read-delay", "1000", NULL };
	double fill_ms, demand_ms, rtt_us;

	need_root();
	start_remote(SINGLE, NULL, NULL);
	expect_clean_remote_run(SINGLE, sim);
	fill_ms = tc_file_number(run.log, "last one ended ");
	cr_expect(tc_file_has(run.log, " (0 for faults, "), "no fault: the fill got there first; log in %s",
		  run.log);
	run.passed = true;
	tc_finish(&run);

	/* The task reads at once: faults and background requests together. */
	tc_init(&run);
	start_remote(SINGLE, NULL, NULL);
	expect_clean_remote_run(SINGLE, NULL);
	demand_ms = tc_file_number(run.log, "last one ended ");
	rtt_us = tc_file_number(run.log, "fault round trip ");
	fprintf(stderr, "criu_remote/measure_single: 8 MiB of `single` from the page server on loopback by background requests alone in %.1f ms after RSTF (%.0f MiB/s); with the task reading at once: %.1f ms, fault request round trip %.0f us\n",
		fill_ms, 8.0 / (fill_ms / 1000.0), demand_ms, rtt_us);
	cr_expect_gt(fill_ms, 0);
	cr_expect_gt(demand_ms, 0);
	run.passed = true;
}
