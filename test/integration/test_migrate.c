/*
 * A page-server connection that breaks or stalls, between two "hosts":
 * network namespaces joined by a veth pair, made (and removed) by each test.
 * The page server runs in one, the daemon and criu-sim (the restored tasks)
 * in the other. Cuts and stalls are made there: the link dropped, the page
 * server paused with SIGSTOP, killed and started again on the same port.
 * Within --page-server-grace the tasks wait (they never read a zero where
 * data was: criu-sim compares every lazy page with pages-N.img) while the
 * daemon reconnects and asks again for what was in flight; past the grace
 * the old ending applies: every task not fully served is killed.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "imgfix.h"
#include "tcert.h"
#include "tcriu.h"

#define FORK3		FIX_CRIU_DIR "/fork3"
#define SINGLE		FIX_CRIU_DIR "/single"
#define SIM_MS		90000
#define EXIT_MS		30000
#define SRV_IP		"10.231.0.1"
#define CLI_IP		"10.231.0.2"

static struct tc_run run;
static struct tc_certs certs;
static char ns_srv[32], ns_cli[32], veth_srv[16], veth_cli[16];
static bool have_ns;
static int kids[16];	/* pidfds of processes a test started or restored: killed at teardown */
static int nkids;
static const char *srv_addr = SRV_IP;	/* what the daemon is told: the address, or a name */
static const char *bound[4];	/* paths bind_file mounted over, in order */
static int nbound;

/* Kill PID at teardown, through a pidfd: never another process that got its number. */
static void own(pid_t pid)
{
	int fd = pid > 0 && nkids < 16 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;

	if (fd >= 0)
		kids[nkids++] = fd;
}

/* Run a shell command (ip); true if it exited 0. */
static bool sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static bool sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd) == 0;
}

static void ms_sleep(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Enter the network namespace NAME (this test process and all it starts from now on). */
static void enter_ns(const char *name)
{
	char path[96];
	int fd;

	snprintf(path, sizeof(path), "/run/netns/%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(setns(fd, CLONE_NEWNET), 0, "setns %s: %s", name, strerror(errno));
	close(fd);
}

/* Two namespaces, a veth pair between them, addresses up; unique names per test process. */
static void net_make(void)
{
	unsigned id = (unsigned)getpid();

	if (geteuid() != 0)
		cr_skip_test("network namespaces and criu-sim need root");
	if (system("ip -V >/dev/null 2>&1") != 0)
		cr_skip_test("no ip(8) (package iproute2)");
	snprintf(ns_srv, sizeof(ns_srv), "uffdmig-%u-s", id);
	snprintf(ns_cli, sizeof(ns_cli), "uffdmig-%u-c", id);
	snprintf(veth_srv, sizeof(veth_srv), "um%us", id % 1000000);
	snprintf(veth_cli, sizeof(veth_cli), "um%uc", id % 1000000);
	cr_assert(sh("ip netns add %s", ns_srv));
	cr_assert(sh("ip netns add %s", ns_cli));
	have_ns = true;
	cr_assert(sh("ip -n %s link add %s type veth peer name %s netns %s", ns_srv, veth_srv,
		     veth_cli, ns_cli));
	cr_assert(sh("ip -n %s addr add %s/24 dev %s && ip -n %s link set %s up && ip -n %s link set lo up",
		     ns_srv, SRV_IP, veth_srv, ns_srv, veth_srv, ns_srv));
	cr_assert(sh("ip -n %s addr add %s/24 dev %s && ip -n %s link set %s up && ip -n %s link set lo up",
		     ns_cli, CLI_IP, veth_cli, ns_cli, veth_cli, ns_cli));
}

/* Drop or restore the link (the server's end: nothing passes either way). */
static void link_set(bool up)
{
	cr_assert(sh("ip -n %s link set %s %s", ns_srv, veth_srv, up ? "up" : "down"));
}

static void setup(void)
{
	tc_init(&run);
	cr_assert(tc_certs_make(&certs, run.dir, SRV_IP), "certtool (package gnutls-bin)");
	net_make();
}

static void teardown(void)
{
	/* Files bound over /etc by the test (stacked: one umount each), before its dir goes. */
	for (; nbound > 0; nbound--)
		umount2(bound[nbound - 1], MNT_DETACH);
	srv_addr = SRV_IP;
	for (int i = 0; i < nkids; i++) {
		syscall(SYS_pidfd_send_signal, kids[i], SIGKILL, NULL, 0);
		close(kids[i]);
	}
	nkids = 0;
	tc_finish(&run);
	if (have_ns) {
		/* Removing the namespaces removes the veth pair. */
		sh("ip netns del %s", ns_srv);
		sh("ip netns del %s", ns_cli);
		have_ns = false;
	}
}

/* Start the page server in the server's namespace (on PORT: "0" for any), under TLS if TLS. */
static void ps_start(const char *dir, const char *port, bool tls, const char *const *extra)
{
	const char *a[32] = { "--address", SRV_IP, "--port", port };
	int n = 4;

	if (tls)
		n = tc_tls_args(a, n, certs.ca, certs.cert, certs.key);
	for (int i = 0; extra && extra[i] && n < 31; i++)
		a[n++] = extra[i];
	a[n] = NULL;
	enter_ns(ns_srv);
	cr_assert(tc_pagesrv_start(&run, dir, a), "the page server did not start; log in %s",
		  run.ps_log);
	enter_ns(ns_cli);
}

/* Start the daemon in the client's namespace: remote mode on the page server, with ARGS. */
static void daemon_start(const char *dir, bool tls, const char *const *args)
{
	const char *a[40] = { "--page-server", "--address", srv_addr, "--port", run.ps_port,
			      "--socket", NULL };
	char sock[160];
	int n = 6;

	snprintf(sock, sizeof(sock), "%s/status.sock", run.dir);
	a[n++] = sock;
	if (tls)
		n = tc_tls_args(a, n, certs.ca, certs.cert, certs.key);
	for (int i = 0; args && args[i] && n < 39; i++)
		a[n++] = args[i];
	a[n] = NULL;
	enter_ns(ns_cli);
	cr_assert(tc_daemon_start(&run, dir, a), "uffd-manager criu did not start; log in %s",
		  run.log);
}

/* `uffd-manager status --json --socket SOCK` into OUT. */
static void status_json_at(const char *sock, char *out, size_t len)
{
	char cmd[512];
	FILE *f;
	size_t n;

	snprintf(cmd, sizeof(cmd), "%s/uffd-manager status --json --socket %s",
		 getenv("UFFD_TEST_BUILD") ? getenv("UFFD_TEST_BUILD") : TEST_BUILDDIR, sock);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	n = fread(out, 1, len - 1, f);
	out[n] = 0;
	pclose(f);
}

/* The same for the CRIU-mode daemon of the run. */
static void status_json(char *out, size_t len)
{
	char sock[160];

	snprintf(sock, sizeof(sock), "%s/status.sock", run.dir);
	status_json_at(sock, out, len);
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

/* The run ends well: every task checked every byte, every lazy page placed once. */
static void expect_all_served(const char *dir, pid_t sim)
{
	int st = tc_sim_wait(sim, SIM_MS);

	cr_assert_eq(st, 0, "criu-sim: a task saw wrong memory or failed (%d); see %s", st,
		     run.simout);
	cr_expect_not(tc_file_has(run.simout, "differs from"), "%s", run.simout);
	cr_assert_eq(tc_daemon_exit_code(&run, EXIT_MS), 0, "log in %s", run.log);
	cr_expect(tc_file_has(run.log, "criu: done:"), "log in %s", run.log);
	cr_expect_eq(tc_file_number(run.log, "processes served, 0 exited first; "),
		     (double)total_lazy(dir), "every lazy page copied once; log in %s", run.log);
}

/*
 * The link drops after the restore is done and before the tasks read
 * (they wait 1 s): their faults wait through the cut; the daemon finds
 * the connection silent, tries new ones (they fail while the link is down)
 * and, once it is back, goes on: every byte right.
 */
static void link_drop(bool tls)
{
	const char *sim[] = { "--read-delay", "1000", NULL };
	const char *args[] = { "--no-fill", "--page-server-timeout", "1500", NULL };
	static char st[65536];
	pid_t sp;

	ps_start(FORK3, "0", tls, NULL);
	daemon_start(FORK3, tls, args);
	sp = tc_sim_start(&run, FORK3, sim);
	cr_assert(tc_file_wait(run.log, "criu: restore finished (RSTF)", 20000), "log in %s", run.log);
	link_set(false);
	/* The link stays down until the daemon has noticed (status says so), and 1 s more. */
	for (int i = 0; i < 300; i++) {
		status_json(st, sizeof(st));
		if (strstr(st, "\"state\":\"reconnecting\"") || strstr(st, "\"state\":\"stalled\""))
			break;
		ms_sleep(100);
	}
	cr_expect(strstr(st, "\"state\":\"reconnecting\"") || strstr(st, "\"state\":\"stalled\""),
		  "status during the cut: %s", st);
	cr_expect(strstr(st, "\"address\":\"" SRV_IP ":"), "%s", st);
	ms_sleep(1000);
	link_set(true);
	expect_all_served(FORK3, sp);
	cr_expect(tc_file_has(run.log, "reconnected to the page server " SRV_IP) ||
		  tc_file_has(run.log, "answers again after"), "log in %s", run.log);
	cr_expect(tc_file_has(run.log, " connection breaks or stalls, "), "log in %s", run.log);
	cr_expect_not(tc_file_has(run.log, "remote: lost the page server"), "log in %s", run.log);
	run.passed = true;
}

Test(migrate, link_drop_tls, .init = setup, .fini = teardown, .timeout = 120)
{
	link_drop(true);
}

Test(migrate, link_drop_plain, .init = setup, .fini = teardown, .timeout = 120)
{
	link_drop(false);
}

/*
 * The page server is paused (SIGSTOP) while the tasks read: no
 * reset, no EOF, only silence. Under TLS a new connection is tried
 * alongside (its handshake cannot finish while the server sleeps); when the
 * server goes on, one of the two serves the rest. Every byte right.
 */
Test(migrate, server_paused, .init = setup, .fini = teardown, .timeout = 120)
{
	const char *sim[] = { "--read-delay", "500", NULL };
	const char *args[] = { "--no-fill", NULL };
	pid_t sp;

	ps_start(FORK3, "0", true, NULL);
	daemon_start(FORK3, true, args);
	sp = tc_sim_start(&run, FORK3, sim);
	cr_assert(tc_file_wait(run.log, "criu: restore finished (RSTF)", 20000), "log in %s", run.log);
	cr_assert_eq(kill(run.ps_pid, SIGSTOP), 0);
	/* Paused until the daemon has seen the stall, and 1 s more. */
	cr_expect(tc_file_wait(run.log, "sent nothing for", 30000), "the stall was seen; log in %s",
		  run.log);
	ms_sleep(1000);
	cr_assert_eq(kill(run.ps_pid, SIGCONT), 0);
	expect_all_served(FORK3, sp);
	cr_expect(tc_file_has(run.log, "answers again after") ||
		  tc_file_has(run.log, "reconnected to the page server"), "log in %s", run.log);
	run.passed = true;
}

/*
 * The page server is killed (SIGKILL) in the middle of the transfer and
 * started again 2 s later on the same port: the daemon, refused meanwhile,
 * reconnects to the new one, asks again for what was in flight and ends
 * the session there (CLOSE). Every byte right.
 */
static void server_restarted(bool tls)
{
	const char *sim[] = { "--read-delay", "300", NULL };
	const char *args[] = { "--fill-chunk", "64K", NULL };
	/* The first server stalls after 20 answers, so the kill lands mid-transfer. */
	const char *stall[] = { "--stall-after", "20", NULL };
	char port[16], old_log[200];
	pid_t sp;
	int st;

	ps_start(FORK3, "0", tls, stall);
	snprintf(port, sizeof(port), "%s", run.ps_port);
	daemon_start(FORK3, tls, args);
	sp = tc_sim_start(&run, FORK3, sim);
	cr_assert(tc_file_wait(run.ps_log, "stalling after 20 answers", 20000), "log in %s", run.ps_log);
	kill(run.ps_pid, SIGKILL);
	waitpid(run.ps_pid, &st, 0);
	run.ps_pid = 0;
	ms_sleep(2000);
	cr_expect_eq(waitpid(sp, &st, WNOHANG), 0, "the tasks wait (not killed, not done)");
	/* A new server, its own log, the same port. */
	snprintf(old_log, sizeof(old_log), "%s.1", run.ps_log);
	rename(run.ps_log, old_log);
	ps_start(FORK3, port, tls, NULL);
	cr_assert_str_eq(run.ps_port, port);
	expect_all_served(FORK3, sp);
	cr_expect(tc_file_has(run.log, "reconnected to the page server " SRV_IP), "log in %s", run.log);
	cr_expect(tc_file_has(run.log, "requests asked again"), "log in %s", run.log);
	cr_expect_eq(tc_pagesrv_stop(&run), 0);
	cr_expect(tc_file_has(run.ps_log, "done (CLOSE, then hung up)"), "log in %s", run.ps_log);
	cr_expect(tc_file_has(run.ps_log, "0 requests refused"), "log in %s", run.ps_log);
	run.passed = true;
}

Test(migrate, server_killed_and_restarted_tls, .init = setup, .fini = teardown, .timeout = 120)
{
	server_restarted(true);
}

Test(migrate, server_killed_and_restarted_plain, .init = setup, .fini = teardown, .timeout = 120)
{
	server_restarted(false);
}

/* Bind-mount a file of CONTENT over PATH (in this test's own mount namespace). */
static void bind_file(const char *path, const char *name, const char *content)
{
	char src[256];
	FILE *f;

	snprintf(src, sizeof(src), "%s/%s", run.dir, name);
	f = fopen(src, "w");
	cr_assert_not_null(f, "%s: %s", src, strerror(errno));
	fputs(content, f);
	cr_assert_eq(fclose(f), 0);
	cr_assert_eq(mount(src, path, NULL, MS_BIND, NULL), 0, "bind %s over %s: %s", src, path,
		     strerror(errno));
	if (nbound < 4)
		bound[nbound++] = path;
}

/*
 * The daemon is given the page server by name (/etc/hosts, in a mount
 * namespace of this test's own). The server is killed, and while it is
 * down the name stops resolving: /etc/hosts loses it and the name server
 * is one that is not there, as in an outage that takes the resolver too.
 * The daemon reconnects to the address the name gave at the start, so the
 * restarted server serves the rest: every byte right. (It used to look the
 * name up again at each try, on its loop: every try failed, and with a
 * silent name server each lookup held every other process for seconds.)
 */
Test(migrate, server_restarted_name_gone, .init = setup, .fini = teardown, .timeout = 120)
{
	cr_assert_eq(unshare(CLONE_NEWNS), 0, "unshare(CLONE_NEWNS): %s", strerror(errno));
	cr_assert_eq(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0, "%s", strerror(errno));
	bind_file("/etc/hosts", "hosts-named", "127.0.0.1 localhost\n" SRV_IP " uffd-test-ps\n");
	srv_addr = "uffd-test-ps";

	const char *sim[] = { "--read-delay", "300", NULL };
	const char *args[] = { "--fill-chunk", "64K", "--page-server-grace", "20000", NULL };
	const char *stall[] = { "--stall-after", "20", NULL };
	char port[16], old_log[200];
	pid_t sp;
	int st;

	ps_start(FORK3, "0", false, stall);
	snprintf(port, sizeof(port), "%s", run.ps_port);
	daemon_start(FORK3, false, args);
	cr_assert(tc_file_has(run.log, "connected to the page server uffd-test-ps:"), "log in %s",
		  run.log);
	sp = tc_sim_start(&run, FORK3, sim);
	cr_assert(tc_file_wait(run.ps_log, "stalling after 20 answers", 20000), "log in %s", run.ps_log);
	/* The name goes away before the server does, so every try meets it gone. */
	bind_file("/etc/hosts", "hosts-gone", "127.0.0.1 localhost\n");
	bind_file("/etc/resolv.conf", "resolv-gone", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n");
	kill(run.ps_pid, SIGKILL);
	waitpid(run.ps_pid, &st, 0);
	run.ps_pid = 0;
	cr_assert(tc_file_wait(run.log, "reconnect attempt 2 ", 20000), "log in %s", run.log);
	cr_expect_eq(waitpid(sp, &st, WNOHANG), 0, "the tasks wait (not killed, not done)");
	snprintf(old_log, sizeof(old_log), "%s.1", run.ps_log);
	rename(run.ps_log, old_log);
	ps_start(FORK3, port, false, NULL);
	cr_assert_str_eq(run.ps_port, port);
	expect_all_served(FORK3, sp);
	cr_expect(tc_file_has(run.log, "reconnected to the page server uffd-test-ps:"), "log in %s",
		  run.log);
	cr_expect_not(tc_file_has(run.log, "name resolution"), "log in %s", run.log);
	cr_expect_eq(tc_pagesrv_stop(&run), 0);
	cr_expect(tc_file_has(run.ps_log, "done (CLOSE, then hung up)"), "log in %s", run.ps_log);
	run.passed = true;
}

/*
 * The page server dies for good: past --page-server-grace the old ending
 * applies. Every task not fully served is killed and named, none read a
 * zero where data was, and the daemon exits 1.
 */
Test(migrate, grace_runs_out, .init = setup, .fini = teardown, .timeout = 120)
{
	const char *sim[] = { "--read-delay", "300", NULL };
	const char *args[] = { "--page-server-grace", "1500", "--fill-chunk", "64K", NULL };
	const char *stall[] = { "--stall-after", "20", NULL };
	pid_t sp;
	int st;

	ps_start(FORK3, "0", true, stall);
	daemon_start(FORK3, true, args);
	sp = tc_sim_start(&run, FORK3, sim);
	cr_assert(tc_file_wait(run.ps_log, "stalling after 20 answers", 20000), "log in %s", run.ps_log);
	kill(run.ps_pid, SIGKILL);
	waitpid(run.ps_pid, &st, 0);
	run.ps_pid = 0;
	st = tc_sim_wait(sp, SIM_MS);
	cr_assert_neq(st, 0, "the tasks ran without their pages? %s", run.simout);
	cr_expect_not(tc_file_has(run.simout, "differs from"), "%s", run.simout);
	cr_expect(tc_file_has(run.simout, "failed (wait status 0x9)"), "%s", run.simout);
	cr_expect_eq(tc_daemon_exit_code(&run, EXIT_MS), 1, "log in %s", run.log);
	cr_expect(tc_file_has(run.log, "(--page-server-grace), "), "log in %s", run.log);
	cr_expect(tc_file_has(run.log, "lazy pages not served (killed: page server connection lost)"),
		  "log in %s", run.log);
	run.passed = true;
}

/* ---- uffd-inject restore --page-server: one daemon, a local and a remote restore ---- */

static const char *bdir(void)
{
	return getenv("UFFD_TEST_BUILD") ? getenv("UFFD_TEST_BUILD") : TEST_BUILDDIR;
}

/* Start rworkload counting into LOG with MIB of pattern; its pid once it said ready. */
static pid_t rw_start(const char *log, const char *mib)
{
	char bin[256], line[256] = "";
	int p[2];
	pid_t pid;
	FILE *f;

	snprintf(bin, sizeof(bin), "%s/test/helpers/rworkload", bdir());
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);

		dup2(nul, 0);
		dup2(p[1], 1);
		dup2(nul, 2);
		close_range(3, ~0u, 0);
		execl(bin, bin, "--log", log, "--mib", mib, "--tick", "50", (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	f = fdopen(p[0], "r");
	own(pid);
	cr_assert(f && fgets(line, sizeof(line), f) && strstr(line, "ready pid="),
		  "rworkload said: %s", line);
	fclose(f);
	return pid;
}

/* Run uffd-inject with ARGS; its exit code, stdout in OUT (stderr appended). */
static int inject(const char *const *args, char *out, size_t len)
{
	char cmd[2048] = "";
	size_t n;
	FILE *f;
	int st;

	snprintf(cmd, sizeof(cmd), "%s/uffd-inject", bdir());
	for (int i = 0; args[i]; i++) {
		strncat(cmd, " '", sizeof(cmd) - strlen(cmd) - 1);
		strncat(cmd, args[i], sizeof(cmd) - strlen(cmd) - 1);
		strncat(cmd, "'", sizeof(cmd) - strlen(cmd) - 1);
	}
	strncat(cmd, " 2>&1", sizeof(cmd) - strlen(cmd) - 1);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	n = fread(out, 1, len - 1, f);
	out[n] = 0;
	st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Dump PID (killed) into DIR. */
static void dump_kill(pid_t pid, const char *dir)
{
	char ps[16], out[4096];
	const char *a[] = { "dump", "--pid", ps, "--images", dir, "--kill", NULL };
	int st;

	snprintf(ps, sizeof(ps), "%d", (int)pid);
	cr_assert_eq(inject(a, out, sizeof(out)), 0, "dump: %s", out);
	waitpid(pid, &st, 0);
}

/* Wait until FILE has S; false after MS. */
static bool file_wait(const char *file, const char *s, int ms)
{
	return tc_file_wait(file, s, ms);
}

/*
 * Two processes dumped; one daemon restores the first from its images and
 * the second from a page server in the other namespace, over TLS, at the
 * same time. Both verify every word of their region (rworkload's SIGUSR2)
 * and count on; the daemon's log says the second's lazy pages all came
 * from the page server, which was then told CLOSE.
 */
Test(migrate, restore_from_page_server, .init = setup, .fini = teardown, .timeout = 120)
{
	char d_loc[160], d_rem[160], l_loc[160], l_rem[160], out[4096], ps_addr[64], sock[160];
	char o_loc[160], o_rem[160];
	const char *ra[24];
	pid_t w1, w2, p1, p2;
	int n;

	snprintf(d_loc, sizeof(d_loc), "%s/local", run.dir);
	snprintf(d_rem, sizeof(d_rem), "%s/remote", run.dir);
	snprintf(l_loc, sizeof(l_loc), "%s/local.log", run.dir);
	snprintf(l_rem, sizeof(l_rem), "%s/remote.log", run.dir);
	snprintf(o_loc, sizeof(o_loc), "%s/local.out", run.dir);
	snprintf(o_rem, sizeof(o_rem), "%s/remote.out", run.dir);
	snprintf(sock, sizeof(sock), "%s/m.sock", run.dir);
	w1 = rw_start(l_loc, "32");
	w2 = rw_start(l_rem, "64");
	cr_assert(file_wait(l_loc, "count 3\n", 20000) && file_wait(l_rem, "count 3\n", 20000));
	dump_kill(w1, d_loc);
	dump_kill(w2, d_rem);
	/* The page server has the second dump, on the other host (restore asks it for its eager pages too). */
	ps_start(d_rem, "0", true, (const char *[]){ "--all-pages", NULL });
	snprintf(ps_addr, sizeof(ps_addr), "%s:%s", SRV_IP, run.ps_port);
	/* One daemon, handing-over mode, in the client's namespace. */
	{
		/* No fill: the processes stay served (and in status) until they read their memory. */
		const char *da[] = { "--socket", sock, "-v", "--no-fill", NULL };
		char bin[256];
		pid_t d;
		int p[2];
		char c;

		snprintf(bin, sizeof(bin), "%s/uffd-manager", bdir());
		cr_assert_eq(pipe(p), 0);
		d = fork();
		if (d == 0) {
			int lf = open(run.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
			char fdarg[16];

			prctl(PR_SET_PDEATHSIG, SIGKILL);
			dup2(lf, 2);
			dup2(p[1], 9);
			snprintf(fdarg, sizeof(fdarg), "9");
			execl(bin, bin, da[0], da[1], da[2], da[3], "--ready-fd", fdarg, (char *)NULL);
			_exit(127);
		}
		close(p[1]);
		cr_assert_eq(read(p[0], &c, 1), 1, "the daemon did not start; log in %s", run.log);
		close(p[0]);
		run.pid = d;
	}
	/* Both restores at once on one daemon. */
	{
		const char *a[] = { "restore", "--images", d_loc, "--socket", sock, "--stdio", o_loc, NULL };

		cr_assert_eq(inject(a, out, sizeof(out)), 0, "local restore: %s", out);
		p1 = (pid_t)strtol(out, NULL, 10);
		own(p1);
	}
	n = 0;
	ra[n++] = "restore";
	ra[n++] = "--images";
	ra[n++] = d_rem;
	ra[n++] = "--socket";
	ra[n++] = sock;
	ra[n++] = "--stdio";
	ra[n++] = o_rem;
	ra[n++] = "--page-server";
	ra[n++] = ps_addr;
	n = tc_tls_args(ra, n, certs.ca, certs.cert, certs.key);
	ra[n] = NULL;
	cr_assert_eq(inject(ra, out, sizeof(out)), 0, "remote restore: %s", out);
	p2 = (pid_t)strtol(out, NULL, 10);
	own(p2);
	cr_assert_gt(p1, 0);
	cr_assert_gt(p2, 0);
	/* status names the page server of the remote one, and of it alone (both still served: no fill). */
	{
		static char js[65536];
		char want[128];
		const char *hit;

		status_json_at(sock, js, sizeof(js));
		snprintf(want, sizeof(want), "\"page_server\":\"%s\",\"page_server_state\":\"up\"", ps_addr);
		hit = strstr(js, want);
		cr_expect_not_null(hit, "%s", js);
		cr_expect_null(hit ? strstr(hit + 1, "\"page_server\":\"") : NULL,
			       "only one process is served from a page server: %s", js);
		cr_expect_not_null(strstr(js, "\"processes\":[{"), "%s", js);
	}
	/* Both check every word of their region and go on counting. */
	cr_assert_eq(kill(p1, SIGUSR2), 0);
	cr_assert_eq(kill(p2, SIGUSR2), 0);
	cr_expect(file_wait(l_loc, "verify ok", 20000), "%s", l_loc);
	cr_expect(file_wait(l_rem, "verify ok", 20000), "%s", l_rem);
	cr_expect_not(tc_file_has(l_loc, "verify bad"), "%s", l_loc);
	cr_expect_not(tc_file_has(l_rem, "verify bad"), "%s", l_rem);
	/* Its 64 MiB region came from the page server, over TLS: status counts the pages placed. */
	{
		static char js[65536];
		char key[32];
		const char *o, *pp;

		status_json_at(sock, js, sizeof(js));
		snprintf(key, sizeof(key), "\"pid\":%d,", (int)p2);
		o = strstr(js, key);
		pp = o ? strstr(o, "\"pages_present\":") : NULL;
		cr_assert_not_null(pp, "%s", js);
		cr_expect_geq(strtoull(pp + 16, NULL, 10), 16384ull, "%s", js);
	}
	cr_expect(tc_file_has(run.log, "over TLS (certificate checked)"), "log in %s", run.log);
	/* Once its process is gone, the daemon ends that connection with CLOSE. */
	cr_assert_eq(kill(p2, SIGKILL), 0);
	cr_expect(tc_file_wait(run.ps_log, "done (CLOSE, then hung up)", 20000), "%s", run.ps_log);
	cr_expect(tc_file_wait(run.log, "remote: fetched ", 20000), "log in %s", run.log);
	cr_expect_geq(tc_file_number(run.log, "remote: fetched "), 16384.0, "log in %s", run.log);
	/* Two connections: restore's own (its eager pages) and the daemon's. */
	cr_expect_eq(tc_pagesrv_stop(&run), 0);
	cr_expect_eq(tc_file_number(run.ps_log, "stopping: "), 2.0, "%s", run.ps_log);
	kill(p1, SIGKILL);
	run.passed = true;
}

/* A restore naming a page server whose certificate its CA did not sign is refused, saying why. */
Test(migrate, restore_refuses_untrusted_server, .init = setup, .fini = teardown, .timeout = 60)
{
	char d_rem[160], l_rem[160], out[4096], ps_addr[64], sock[160];
	const char *ra[24];
	pid_t w;
	int n;

	snprintf(d_rem, sizeof(d_rem), "%s/remote", run.dir);
	snprintf(l_rem, sizeof(l_rem), "%s/remote.log", run.dir);
	snprintf(sock, sizeof(sock), "%s/m.sock", run.dir);
	w = rw_start(l_rem, "4");
	cr_assert(file_wait(l_rem, "count 2\n", 20000));
	dump_kill(w, d_rem);
	/* The server shows the other CA's certificate. */
	{
		const char *a[16] = { "--address", SRV_IP, "--port", "0" };
		int k = tc_tls_args(a, 4, certs.rogue_ca, certs.rogue_cert, certs.rogue_key);

		a[k] = NULL;
		enter_ns(ns_srv);
		cr_assert(tc_pagesrv_start(&run, d_rem, a), "log in %s", run.ps_log);
		enter_ns(ns_cli);
	}
	snprintf(ps_addr, sizeof(ps_addr), "%s:%s", SRV_IP, run.ps_port);
	{
		char bin[256], c;
		int p[2];
		pid_t d;

		snprintf(bin, sizeof(bin), "%s/uffd-manager", bdir());
		cr_assert_eq(pipe(p), 0);
		d = fork();
		if (d == 0) {
			int lf = open(run.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

			prctl(PR_SET_PDEATHSIG, SIGKILL);
			dup2(lf, 2);
			dup2(p[1], 9);
			execl(bin, bin, "--socket", sock, "--ready-fd", "9", (char *)NULL);
			_exit(127);
		}
		close(p[1]);
		cr_assert_eq(read(p[0], &c, 1), 1, "log in %s", run.log);
		close(p[0]);
		run.pid = d;
	}
	n = 0;
	ra[n++] = "restore";
	ra[n++] = "--images";
	ra[n++] = d_rem;
	ra[n++] = "--socket";
	ra[n++] = sock;
	ra[n++] = "--stdio";
	ra[n++] = "null";
	ra[n++] = "--page-server";
	ra[n++] = ps_addr;
	n = tc_tls_args(ra, n, certs.ca, certs.cert, certs.key);
	ra[n] = NULL;
	cr_assert_eq(inject(ra, out, sizeof(out)), 1, "the restore went on: %s", out);
	cr_expect_not_null(strstr(out, "certificate is refused"), "%s", out);
	cr_expect_not_null(strstr(out, SRV_IP), "%s", out);
	run.passed = true;
}

/* ---- scripts/migrate: host A is the server's namespace, host B the client's ---- */

/* Start `uffd-manager` (hand-overs) in B's namespace on SOCK, with ARGS (up to 3, NULL-ended); its log is run.log. */
static void b_daemon_start_with(const char *sock, const char *const *args);

static void b_daemon_start(const char *sock)
{
	b_daemon_start_with(sock, (const char *[]){ NULL });
}

static void b_daemon_start_with(const char *sock, const char *const *args)
{
	char bin[256], c;
	int p[2];
	pid_t d;

	snprintf(bin, sizeof(bin), "%s/uffd-manager", bdir());
	cr_assert_eq(pipe(p), 0);
	enter_ns(ns_cli);
	d = fork();
	if (d == 0) {
		int lf = open(run.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(lf, 2);
		dup2(p[1], 9);
		execl(bin, bin, "--socket", sock, "--ready-fd", "9", "-v", args[0],
		      args[0] ? args[1] : NULL, args[0] && args[1] ? args[2] : NULL, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	cr_assert_eq(read(p[0], &c, 1), 1, "the daemon did not start; log in %s", run.log);
	close(p[0]);
	run.pid = d;
}

/* Run scripts/migrate in A's namespace for PID; its exit code, stdout in OUT, stderr in ERR (a file). */
static int migrate_run(pid_t pid, const char *sock, const char *err, char *out, size_t len)
{
	char cmd[3000];
	size_t n;
	FILE *f;
	int st;

	snprintf(cmd, sizeof(cmd),
		 "UFFD_INJECT=%s/uffd-inject UFFD_MANAGER=%s/uffd-manager ip netns exec %s "
		 "%s/scripts/migrate --pid %d --images %s/a --b-images %s/b --address %s "
		 "--netns-b %s --socket-b %s --timeout 120 "
		 "--tls --tls-cacert %s --tls-cert %s --tls-key %s 2>%s",
		 bdir(), bdir(), ns_srv, TEST_SRCDIR, (int)pid, run.dir, run.dir, SRV_IP, ns_cli,
		 sock, certs.ca, certs.cert, certs.key, err);
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	n = fread(out, 1, len - 1, f);
	out[n] = 0;
	st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Do the "count N" lines of FILE go 1, 2, 3, ... without a gap or a repeat? Their last N in *LAST. */
static bool counts_consecutive(const char *file, unsigned long *last)
{
	char line[256];
	unsigned long want = 1, n;
	FILE *f = fopen(file, "r");

	*last = 0;
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "count %lu", &n) == 1) {
			if (n != want) {
				fclose(f);
				return false;
			}
			*last = n;
			want++;
		}
	fclose(f);
	return true;
}

/* The number after S in FILE (a pid), or 0. */
static pid_t pid_after(const char *file, const char *s)
{
	double v = tc_file_number(file, s);

	return v > 0 ? (pid_t)v : 0;
}

/*
 * scripts/migrate moves a running process from A to B: dumped on A, restored
 * on B from a copy holding none of its pages, every page pulled from A over
 * TLS; the process goes on counting on B, and checks every word of its region
 * there; A's page server is gone and A's copy of the state removed once B's
 * manager had every page.
 */
Test(migrate, script_moves_a_process, .init = setup, .fini = teardown, .timeout = 180)
{
	char log[160], sock[160], err[160], out[512], path[200];
	unsigned long last;
	pid_t w, np;
	int rc, st;

	snprintf(log, sizeof(log), "%s/work.log", run.dir);
	snprintf(sock, sizeof(sock), "%s/b.sock", run.dir);
	snprintf(err, sizeof(err), "%s/migrate.err", run.dir);
	b_daemon_start(sock);
	w = rw_start(log, "64");
	cr_assert(file_wait(log, "count 3\n", 20000));
	rc = migrate_run(w, sock, err, out, sizeof(out));
	cr_assert_eq(rc, 0, "scripts/migrate failed (%d); see %s", rc, err);
	/* Stopped at the dump, killed once B had every page. */
	cr_assert_eq(waitpid(w, &st, 0), w);
	cr_expect(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "wait status 0x%x", st);
	np = (pid_t)strtol(out, NULL, 10);
	own(np);
	cr_assert_gt(np, 0, "it printed: %s", out);
	cr_assert_neq(np, w);
	/* It counts on from where it was (its counter is in the memory that moved), every word right. */
	cr_assert(file_wait(log, "count 10\n", 20000), "%s", log);
	cr_assert_eq(kill(np, SIGUSR2), 0);
	cr_expect(file_wait(log, "verify ok", 20000), "%s", log);
	cr_expect_not(tc_file_has(log, "verify bad"), "%s", log);
	cr_expect(counts_consecutive(log, &last), "the count skipped or repeated: %s", log);
	cr_expect_geq(last, 10);
	/* All of its 64 MiB came from A: none was in B's copy. */
	cr_expect(tc_file_has(run.log, "over TLS (certificate checked)"), "log in %s", run.log);
	cr_expect_geq(tc_file_number(run.log, "remote: fetched "), 16384.0, "log in %s", run.log);
	snprintf(path, sizeof(path), "%s/b/final/pages-1.img", run.dir);
	{
		struct stat sb;

		cr_assert_eq(stat(path, &sb), 0, "%s", path);
		cr_expect_eq(sb.st_blocks, 0, "B's pages file is a stand-in without data");
	}
	cr_expect(tc_file_has(err, "every page reached B"), "%s", err);
	/* With pre-copy rounds (uffd-inject pre-dump), B's chain is B's own copy, not A's path. */
	snprintf(path, sizeof(path), "%s/b/final/parent", run.dir);
	if (tc_file_has(err, "pre-copy round 2")) {
		char to[256] = "";
		ssize_t k = readlink(path, to, sizeof(to) - 1);

		cr_expect_gt(k, 0, "%s", path);
		cr_expect_str_eq(to, "../pre-2");
	}
	snprintf(path, sizeof(path), "%s/a/final", run.dir);
	cr_expect_neq(access(path, F_OK), 0, "A's state is removed at the end");
	kill(np, SIGKILL);
	run.passed = true;
}

/*
 * B cannot take the process (no manager there): scripts/migrate resumes the
 * stopped process on A (SIGCONT: the same pid) and exits 1; it goes on
 * counting there with every word right.
 */
Test(migrate, script_failure_resumes_on_a, .init = setup, .fini = teardown, .timeout = 180)
{
	char log[160], sock[160], err[160], out[512];
	unsigned long last;
	pid_t w, np;
	int rc, st;

	snprintf(log, sizeof(log), "%s/work.log", run.dir);
	snprintf(sock, sizeof(sock), "%s/nobody.sock", run.dir);
	snprintf(err, sizeof(err), "%s/migrate.err", run.dir);
	w = rw_start(log, "16");
	cr_assert(file_wait(log, "count 3\n", 20000));
	rc = migrate_run(w, sock, err, out, sizeof(out));
	cr_assert_eq(rc, 1, "scripts/migrate: %d; see %s", rc, err);
	cr_expect(tc_file_has(err, "restore on B: "), "%s", err);
	np = pid_after(err, "resumed on A as pid ");
	cr_assert_eq(np, w, "not the same process; see %s", err);
	cr_assert_eq(waitpid(w, &st, WNOHANG), 0, "it is not running: wait status 0x%x", st);
	cr_assert(file_wait(log, "count 8\n", 20000), "%s", log);
	cr_assert_eq(kill(np, SIGUSR2), 0);
	cr_expect(file_wait(log, "verify ok", 20000), "%s", log);
	cr_expect_not(tc_file_has(log, "verify bad"), "%s", log);
	cr_expect(counts_consecutive(log, &last), "the count skipped or repeated: %s", log);
	kill(w, SIGKILL);
	waitpid(w, &st, 0);
	run.passed = true;
}

/* ---- a restore from a page server that dies while the process still misses pages ---- */

/*
 * Restore (no fill: the pages wait for the process to read them) from a
 * page server in A, then SIGKILL the server. With RESTART it comes back on
 * the same port after the daemon has seen the break: the process, reading
 * its region meanwhile, waits and gets every word right. Without, past the
 * grace (1.5 s) the daemon kills the process: it never reads a zero.
 */
static void restore_server_dies(bool restart)
{
	char d[160], log[160], sock[160], out[4096], ps_addr[64], port[16];
	const char *ra[24];
	pid_t w, np;
	int n, st, pfd;

	snprintf(d, sizeof(d), "%s/dump", run.dir);
	snprintf(log, sizeof(log), "%s/work.log", run.dir);
	snprintf(sock, sizeof(sock), "%s/b.sock", run.dir);
	w = rw_start(log, "32");
	cr_assert(file_wait(log, "count 3\n", 20000));
	dump_kill(w, d);
	ps_start(d, "0", true, (const char *[]){ "--all-pages", NULL });
	snprintf(port, sizeof(port), "%s", run.ps_port);
	snprintf(ps_addr, sizeof(ps_addr), "%s:%s", SRV_IP, port);
	/* No fill: the pages wait for the process to read them. */
	b_daemon_start_with(sock, (const char *[]){ "--no-fill", "--page-server-grace",
						    restart ? "60000" : "1500", NULL });
	n = 0;
	ra[n++] = "restore";
	ra[n++] = "--images";
	ra[n++] = d;
	ra[n++] = "--socket";
	ra[n++] = sock;
	ra[n++] = "--stdio";
	ra[n++] = "null";
	ra[n++] = "--page-server";
	ra[n++] = ps_addr;
	n = tc_tls_args(ra, n, certs.ca, certs.cert, certs.key);
	ra[n] = NULL;
	cr_assert_eq(inject(ra, out, sizeof(out)), 0, "restore: %s", out);
	np = (pid_t)strtol(out, NULL, 10);
	own(np);
	cr_assert_gt(np, 0, "%s", out);
	pfd = (int)syscall(SYS_pidfd_open, np, 0);
	cr_assert_geq(pfd, 0);
	/* The server dies; the daemon sees its connection break. */
	kill(run.ps_pid, SIGKILL);
	waitpid(run.ps_pid, &st, 0);
	run.ps_pid = 0;
	cr_assert(tc_file_wait(run.log, "broke: ", 20000), "log in %s", run.log);
	/* The process reads its whole region now: its faults wait. */
	cr_assert_eq(kill(np, SIGUSR2), 0);
	if (restart) {
		char old[200];

		cr_assert(tc_file_wait(run.log, "reconnect attempt 1 ", 20000), "log in %s", run.log);
		snprintf(old, sizeof(old), "%s.1", run.ps_log);
		rename(run.ps_log, old);
		ps_start(d, port, true, (const char *[]){ "--all-pages", NULL });
		cr_expect(file_wait(log, "verify ok", 30000), "%s", log);
		cr_expect_not(tc_file_has(log, "verify bad"), "%s", log);
		cr_expect(tc_file_has(run.log, "reconnected to the page server " SRV_IP), "log in %s",
			  run.log);
		cr_expect_eq(syscall(SYS_pidfd_send_signal, pfd, 0, NULL, 0), 0, "it runs on");
	} else {
		struct pollfd p = { .fd = pfd, .events = POLLIN };

		cr_assert_eq(poll(&p, 1, 30000), 1, "the process was not ended; log in %s", run.log);
		cr_expect(tc_file_has(run.log, "(--page-server-grace)"), "log in %s", run.log);
		cr_expect(tc_file_has(run.log, "killing it so that it never reads zeros"), "log in %s",
			  run.log);
		cr_expect_not(tc_file_has(log, "verify"), "it read its memory after all: %s", log);
	}
	close(pfd);
	run.passed = true;
}

Test(migrate, restore_server_killed_and_restarted, .init = setup, .fini = teardown, .timeout = 120)
{
	restore_server_dies(true);
}

Test(migrate, restore_server_gone_past_grace, .init = setup, .fini = teardown, .timeout = 120)
{
	restore_server_dies(false);
}

/*
 * A daemon that serves a restore from a page server dies; a new one on the
 * same socket takes back its processes (issue 16), but not that one: it
 * cannot be served from the local images (a stand-in may hold no data), so
 * it is killed, named in the log, and never reads a zero.
 */
Test(migrate, restart_kills_a_page_server_restore, .init = setup, .fini = teardown, .timeout = 120)
{
	char d[160], log[160], sock[160], out[4096], ps_addr[64];
	const char *ra[24];
	struct pollfd p;
	pid_t w, np;
	int n, st, pfd;

	snprintf(d, sizeof(d), "%s/dump", run.dir);
	snprintf(log, sizeof(log), "%s/work.log", run.dir);
	snprintf(sock, sizeof(sock), "%s/b.sock", run.dir);
	w = rw_start(log, "32");
	cr_assert(file_wait(log, "count 3\n", 20000));
	dump_kill(w, d);
	ps_start(d, "0", true, (const char *[]){ "--all-pages", NULL });
	snprintf(ps_addr, sizeof(ps_addr), "%s:%s", SRV_IP, run.ps_port);
	b_daemon_start_with(sock, (const char *[]){ "--no-fill", NULL });
	n = 0;
	ra[n++] = "restore";
	ra[n++] = "--images";
	ra[n++] = d;
	ra[n++] = "--socket";
	ra[n++] = sock;
	ra[n++] = "--stdio";
	ra[n++] = "null";
	ra[n++] = "--page-server";
	ra[n++] = ps_addr;
	n = tc_tls_args(ra, n, certs.ca, certs.cert, certs.key);
	ra[n] = NULL;
	cr_assert_eq(inject(ra, out, sizeof(out)), 0, "restore: %s", out);
	np = (pid_t)strtol(out, NULL, 10);
	own(np);
	cr_assert_gt(np, 0, "%s", out);
	pfd = (int)syscall(SYS_pidfd_open, np, 0);
	cr_assert_geq(pfd, 0);
	/* The daemon dies; the process reads its region: its faults wait on the keeper. */
	kill(run.pid, SIGKILL);
	waitpid(run.pid, &st, 0);
	run.pid = 0;
	cr_assert_eq(kill(np, SIGUSR2), 0);
	usleep(200000);
	cr_expect_eq(syscall(SYS_pidfd_send_signal, pfd, 0, NULL, 0), 0, "it waits, alive");
	/* A new daemon on the same socket. */
	b_daemon_start_with(sock, (const char *[]){ "--no-fill", NULL });
	p = (struct pollfd){ .fd = pfd, .events = POLLIN };
	cr_assert_eq(poll(&p, 1, 30000), 1, "the process was not ended; log in %s", run.log);
	cr_expect(tc_file_wait(run.log, "its pages come from a page server", 5000), "log in %s",
		  run.log);
	cr_expect_not(tc_file_has(log, "verify"), "it read its memory after all: %s", log);
	close(pfd);
	run.passed = true;
}
