/*
 * Pre-copy end to end: `uffd-inject pre-dump` rounds on a target that never
 * stops writing (test/helpers/pcwriter.c: random words and per-page
 * counters, a deterministic history it can replay to check every byte of
 * its memory), then `dump --prev-images --kill` restored by `uffd-inject
 * restore` (eagerly, and served by a uffd-manager started here), or `lazy
 * --prev-images` / `lazy --pre-copy` handed to that manager. Between rounds
 * the target makes new areas, grows, moves, drops (MADV_DONTNEED), and
 * re-protects them, forks, maps THP; after every step it checks itself.
 *
 * This process becomes a child subreaper so that restored processes are
 * ours to reap.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

#include "manager.pb-c.h"
#include "tserve.h"
#include "twork.h"
#include "wire.h"

static char tmp[64];
static pid_t kids[16];
static int nkids;
static int outs[16];
static int nouts;
static struct ts_daemon dmn;
static bool dmn_on;

static const char *build_dir(void)
{
	const char *b = getenv("UFFD_TEST_BUILD");

	return b ? b : TEST_BUILDDIR;
}

static void setup(void)
{
	snprintf(tmp, sizeof(tmp), "/tmp/uffd-pctest-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp), "mkdtemp: %s", strerror(errno));
	cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	nkids = nouts = 0;
	dmn_on = false;
}

static void teardown(void)
{
	char cmd[128];

	for (int i = 0; i < nkids; i++)
		if (kids[i] > 0) {
			kill(kids[i], SIGKILL);
			waitpid(kids[i], NULL, 0);
		}
	for (int i = 0; i < nouts; i++)
		close(outs[i]);
	if (dmn_on)
		ts_daemon_finish(&dmn, 5000);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
	if (!getenv("UFFD_TEST_KEEP") && system(cmd)) {
	}
}

static void forget(pid_t pid)
{
	for (int i = 0; i < nkids; i++)
		if (kids[i] == pid)
			kids[i] = 0;
}

/* Read a whole file into a NUL-terminated malloc'd buffer (empty if missing). */
static char *slurp(const char *path)
{
	size_t cap = 4096, n = 0;
	char *b = malloc(cap);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t k;

	cr_assert_not_null(b);
	while (fd >= 0 && (k = read(fd, b + n, cap - n - 1)) > 0) {
		n += (size_t)k;
		if (cap - n < 2) {
			cap *= 2;
			b = realloc(b, cap);
			cr_assert_not_null(b);
		}
	}
	if (fd >= 0)
		close(fd);
	b[n] = '\0';
	return b;
}

/* How many times S occurs in the file at PATH. */
static int count_in(const char *path, const char *s)
{
	char *b = slurp(path), *p = b;
	int n = 0;

	while ((p = strstr(p, s))) {
		n++;
		p += strlen(s);
	}
	free(b);
	return n;
}

/*
 * Run ARGV, a pcwriter command line, with "--log tmp/log.TAG" added (LOG
 * gets the path); only fds 0-2, stdout a pipe; wait for its "ready".
 */
static pid_t pcw_exec(const char *tag, const char *const *args, char *log, size_t loglen)
{
	char line[128];
	const char *argv[24];
	int p[2], n = 0;
	size_t got = 0;
	pid_t pid;

	snprintf(log, loglen, "%s/log.%s", tmp, tag);
	for (int i = 0; args[i] && n < 21; i++)
		argv[n++] = args[i];
	argv[n++] = "--log";
	argv[n++] = log;
	argv[n] = NULL;
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);

		dup2(nul, 0);
		dup2(p[1], 1);
		dup2(nul, 2);
		close_range(3, ~0u, 0);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	kids[nkids++] = pid;
	outs[nouts++] = p[0];
	while (got < sizeof(line) - 1) {
		struct pollfd pf = { p[0], POLLIN, 0 };

		cr_assert_gt(poll(&pf, 1, 20000), 0, "pcwriter did not start");
		cr_assert_eq(read(p[0], line + got, 1), 1, "pcwriter died at start");
		if (line[got++] == '\n')
			break;
	}
	line[got] = '\0';
	cr_assert_not_null(strstr(line, "ready pid="), "pcwriter said: %s", line);
	return pid;
}

/* Start pcwriter with ARGS (its log in tmp/log.TAG). */
static pid_t pcw_start(const char *tag, const char *const *args, char *log, size_t loglen)
{
	const char *argv[20];
	char bin[256];
	int n = 0;

	snprintf(bin, sizeof(bin), "%s/test/helpers/pcwriter", build_dir());
	argv[n++] = bin;
	for (int i = 0; args[i] && n < 19; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	return pcw_exec(tag, argv, log, loglen);
}

/*
 * pcwriter in a pid namespace of its own, as in a container: `unshare -p -f`
 * forks it as the namespace's init. Returns its pid as we see it (it says
 * "ready pid=1"); both it and unshare are ours to kill at the end.
 */
static pid_t pcw_start_ns(const char *tag, const char *const *args, char *log, size_t loglen)
{
	const char *argv[20] = { "/usr/bin/unshare", "-p", "-f" };
	char bin[256], path[96], *kids_of;
	pid_t mid, pid;
	int n = 3;

	if (geteuid() != 0)
		cr_skip_test("not root: unshare -p needs CAP_SYS_ADMIN");
	snprintf(bin, sizeof(bin), "%s/test/helpers/pcwriter", build_dir());
	argv[n++] = bin;
	for (int i = 0; args[i] && n < 19; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	mid = pcw_exec(tag, argv, log, loglen);
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)mid, (int)mid);
	kids_of = slurp(path);
	pid = (pid_t)atoi(kids_of);
	free(kids_of);
	cr_assert_gt(pid, 1, "no child of unshare %d", (int)mid);
	kids[nkids++] = pid;
	return pid;
}

/* Run uffd-inject with ARGS (ENVS: NAME=VALUE strings, NULL-terminated, or NULL); output in OUT, ERR. Exit code. */
static int tool_envs(const char *const *envs, const char *const *args, char *out, size_t olen,
		     char *err, size_t elen)
{
	char bin[256], of[128], ef[128], *b;
	const char *argv[24];
	int n = 0, st;
	pid_t pid;

	snprintf(bin, sizeof(bin), "%s/uffd-inject", build_dir());
	snprintf(of, sizeof(of), "%s/tool.out", tmp);
	snprintf(ef, sizeof(ef), "%s/tool.err", tmp);
	argv[n++] = bin;
	for (int i = 0; args[i] && n < 23; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int o = open(of, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(ef, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		dup2(o, 1);
		dup2(e, 2);
		close_range(3, ~0u, 0);
		for (int i = 0; envs && envs[i]; i++)
			putenv((char *)envs[i]);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	b = slurp(of);
	snprintf(out, olen, "%s", b);
	free(b);
	b = slurp(ef);
	snprintf(err, elen, "%s", b);
	free(b);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The same with one NAME=VALUE (or NULL). */
static int tool_env(const char *env, const char *const *args, char *out, size_t olen, char *err,
		    size_t elen)
{
	const char *envs[] = { env, NULL };

	return tool_envs(envs, args, out, olen, err, elen);
}

static int tool(const char *const *args, char *out, size_t olen, char *err, size_t elen)
{
	return tool_env(NULL, args, out, olen, err, elen);
}

/* Wait until the file at PATH holds S at least N times; false after MS milliseconds. */
static bool wait_count(const char *path, const char *s, int n, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		if (count_in(path, s) >= n)
			return true;
		usleep(10000);
	}
	return false;
}

/* Have PID check every byte of its memory; assert it says ok. */
static void verify(pid_t pid, const char *log)
{
	int n = count_in(log, "verify ");
	char *b, *last;

	cr_assert_eq(kill(pid, SIGUSR1), 0);
	cr_assert(wait_count(log, "verify ", n + 1, 60000), "pid %d does not answer", (int)pid);
	b = slurp(log);
	last = strrchr(b, '\n');
	*last = '\0';
	last = strrchr(b, '\n');
	last = last ? last + 1 : b;
	cr_assert_eq(strncmp(last, "verify ok", 9), 0, "pid %d: %s", (int)pid, last);
	free(b);
}

/* Have PID make its next N changes of layout (see pcwriter.c). */
static void change(pid_t pid, const char *log, int n)
{
	for (int i = 0; i < n; i++) {
		int c = count_in(log, "change ");

		cr_assert_eq(kill(pid, SIGUSR2), 0);
		cr_assert(wait_count(log, "change ", c + 1, 20000), "no change");
	}
	cr_assert_eq(count_in(log, "failed"), 0, "%s", slurp(log));
	cr_assert_eq(count_in(log, "fork bad"), 0, "%s", slurp(log));
}

/* A number after the text S in TEXT (the first occurrence), or -1. */
static long num_before(const char *text, const char *s)
{
	const char *p = strstr(text, s);

	if (!p)
		return -1;
	while (p > text && p[-1] == ' ')
		p--;
	while (p > text && p[-1] >= '0' && p[-1] <= '9')
		p--;
	return strtol(p, NULL, 10);
}

/* How many userfaultfds PID holds, and how many of its areas are registered write-protect. */
static void uffd_state(pid_t pid, int *nfds, int *nuw)
{
	char path[64], link[64], *b, *p;
	struct dirent *de;
	DIR *d;

	*nfds = *nuw = 0;
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	cr_assert_not_null(d);
	while ((de = readdir(d))) {
		char lp[320];
		ssize_t n;

		snprintf(lp, sizeof(lp), "%s/%s", path, de->d_name);
		n = readlink(lp, link, sizeof(link) - 1);
		if (n > 0) {
			link[n] = '\0';
			*nfds += !strcmp(link, "anon_inode:[userfaultfd]");
		}
	}
	closedir(d);
	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	b = slurp(path);
	for (p = b; (p = strstr(p, "VmFlags:")); p++) {
		char *e = strchr(p, '\n');

		if (e)
			*e = '\0';
		*nuw += strstr(p, " uw") != NULL;
		if (e)
			*e = '\n';
	}
	free(b);
}

/* pre-dump PID into tmp/DIR (after tmp/PREV if given); assert it worked; its output in OUT. */
static void predump(pid_t pid, const char *dir, const char *prev, char *out, size_t olen)
{
	char ps[16], d[128], pv[128], err[4096];
	const char *args[] = { "pre-dump", "--pid", ps, "--images", d, prev ? "--prev-images" : NULL,
			       pv, NULL };
	int rc;

	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/%s", tmp, dir);
	snprintf(pv, sizeof(pv), "%s/%s", tmp, prev ? prev : "");
	rc = tool(args, out, olen, err, sizeof(err));
	cr_assert_eq(rc, 0, "pre-dump %s exit %d: %s", dir, rc, err);
	cr_log_info("%s: %s", dir, strstr(out, "round") ? strstr(out, "round") : out);
}

/* The last round: dump --kill after tmp/PREV into tmp/DIR. */
static void dump_kill(pid_t pid, const char *dir, const char *prev, char *out, size_t olen)
{
	char ps[16], d[128], pv[128], err[4096];
	const char *args[] = { "dump", "--pid", ps, "--images", d, "--kill", "--prev-images", pv,
			       NULL };
	int rc, st;

	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/%s", tmp, dir);
	snprintf(pv, sizeof(pv), "%s/%s", tmp, prev);
	rc = tool(args, out, olen, err, sizeof(err));
	cr_assert_eq(rc, 0, "dump exit %d: %s", rc, err);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	forget(pid);
}

/* Restore tmp/DIR (served by the daemon, or --eager); returns the new pid. */
static pid_t restore(const char *dir, bool served)
{
	char d[128], out[2048], err[2048];
	const char *args[] = { "restore", "--images", d, "--stdio", "null",
			       served ? "--socket" : "--eager", served ? dmn.sock : NULL, NULL };
	pid_t pid;
	int rc;

	snprintf(d, sizeof(d), "%s/%s", tmp, dir);
	rc = tool(args, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "restore exit %d: %s", rc, err);
	pid = (pid_t)strtol(out, NULL, 10);
	cr_assert_gt(pid, 0, "restore said: %s", out);
	kids[nkids++] = pid;
	return pid;
}

static void daemon_on(void)
{
	ts_daemon_start(&dmn, NULL);
	dmn_on = true;
}

/* Kill a restored PID and reap it. */
static void end(pid_t pid)
{
	cr_assert_eq(kill(pid, SIGKILL), 0);
	waitpid(pid, NULL, 0);
	forget(pid);
}

/*
 * A chain of ROUNDS pre-dump rounds with CHANGES[r] layout changes before
 * round r+1 (and the dump), then dump --kill, restored eagerly and by the
 * daemon, both checked whole.
 */
static void chain(int rounds, const int *changes, long *dropped)
{
	const char *args[] = { "--pages", "4096", "--hot", "256", NULL };
	char log[128], out[4096], dir[16], prev[16];
	struct timespec ts[2];
	struct stat sb;
	long parent, copied;
	pid_t pid, r;

	pid = pcw_start("w", args, log, sizeof(log));
	*dropped = 0;
	for (int i = 1; i <= rounds; i++) {
		snprintf(dir, sizeof(dir), "r%d", i);
		snprintf(prev, sizeof(prev), "r%d", i - 1);
		predump(pid, dir, i > 1 ? prev : NULL, out, sizeof(out));
		cr_assert_not_null(strstr(out, "writes tracked"), "%s", out);
		if (i > 1) {
			/* Most of slot 0 is never written: it stays in the parent. */
			parent = num_before(out, "left in the parent");
			cr_assert_gt(parent, 2048, "%s", out);
			if (num_before(out, "dropped") > 0)
				*dropped += num_before(out, "dropped");
		}
		verify(pid, log);
		change(pid, log, changes ? changes[i - 1] : 0);
		usleep(50000);
	}
	snprintf(prev, sizeof(prev), "r%d", rounds);
	dump_kill(pid, "last", prev, out, sizeof(out));
	cr_log_info("last: %s", out);
	parent = num_before(out, "left in the parent");
	copied = num_before(out, "pages (");
	cr_assert_gt(parent, 2048, "%s", out);
	cr_assert_lt(copied, parent, "the last round copied more than it left: %s", out);
	cr_assert_not_null(strstr(out, "tracking ended"), "%s", out);
	if (num_before(out, "dropped") > 0)
		*dropped += num_before(out, "dropped");
	/* Its pages file was allocated ahead, for more than it copied: cut to what it wrote. */
	{
		char pf[160];

		snprintf(pf, sizeof(pf), "%s/last/pages-1.img", tmp);
		cr_assert_eq(stat(pf, &sb), 0, "%s: %s", pf, strerror(errno));
		cr_assert_eq(sb.st_size, copied * 4096, "%s holds %lld bytes for %ld pages copied: %s",
			     pf, (long long)sb.st_size, copied, out);
	}
	/* show counts the same pages in the parent, read through the chain. */
	{
		char d[128], sout[4096], serr[1024], want[64];
		const char *sa[] = { "show", "--json", d, NULL };

		snprintf(d, sizeof(d), "%s/last", tmp);
		cr_assert_eq(tool(sa, sout, sizeof(sout), serr, sizeof(serr)), 0, "%s", serr);
		snprintf(want, sizeof(want), "\"parent_pages\": %ld", parent);
		if (!strstr(sout, want))
			snprintf(want, sizeof(want), "\"parent_pages\":%ld", parent);
		cr_assert_not_null(strstr(sout, want), "no %s in %s", want, sout);
	}

	cr_assert_eq(stat(log, &sb), 0);
	r = restore("last", false);
	verify(r, log);
	end(r);
	/* The log as it was at the dump, so that restore takes it again. */
	cr_assert_eq(truncate(log, sb.st_size), 0);
	ts[0] = sb.st_atim;
	ts[1] = sb.st_mtim;
	cr_assert_eq(utimensat(AT_FDCWD, log, ts, 0), 0);
	daemon_on();
	r = restore("last", true);
	verify(r, log);
	end(r);
}

Test(precopy, chain_of_1, .init = setup, .fini = teardown, .timeout = 180)
{
	long dropped;

	chain(1, NULL, &dropped);
}

Test(precopy, chain_of_2, .init = setup, .fini = teardown, .timeout = 180)
{
	static const int changes[] = { 1, 0 };	/* a new area between the rounds */
	long dropped;

	chain(2, changes, &dropped);
}

Test(precopy, chain_of_5_areas_change_between_rounds, .init = setup, .fini = teardown,
     .timeout = 240)
{
	/* new | drop | grow, move | protect, fork | thp, unmap: see pcwriter.c */
	static const int changes[] = { 1, 1, 2, 2, 2 };
	long dropped;

	chain(5, changes, &dropped);
	/* The drop came after its area was in the chain: those pages became holes. */
	cr_assert_gt(dropped, 0, "no dropped page seen");
}

/*
 * The same with the written set of every round read by two threads, each
 * taking half of the tracked bytes (an area cut in two where the half
 * falls), as large targets get it.
 */
Test(precopy, chain_of_5_scanned_by_two_threads, .init = setup, .fini = teardown,
     .timeout = 240)
{
	static const int changes[] = { 1, 1, 2, 2, 2 };
	long dropped;

	cr_assert_eq(setenv("UFFD_INJECT_TEST_SCAN_SPLIT", "1", 1), 0);
	chain(5, changes, &dropped);
	cr_assert_gt(dropped, 0, "no dropped page seen");
}

/* A chain served to a process that goes on: lazy --prev-images. */
Test(precopy, lazy_prev_images_serves_the_chain, .init = setup, .fini = teardown,
     .timeout = 180)
{
	const char *args[] = { "--pages", "8192", "--hot", "512", NULL };
	char log[128], out[4096], err[4096], ps[16], d[128], pv[128];
	const char *la[] = { "lazy", "--pid", ps, "--images", d, "--socket", dmn.sock,
			     "--prev-images", pv, NULL };
	struct ts_status s;
	int rc, nfds, nuw;
	pid_t pid;

	daemon_on();
	pid = pcw_start("w", args, log, sizeof(log));
	predump(pid, "r1", NULL, out, sizeof(out));
	uffd_state(pid, &nfds, &nuw);
	cr_assert_eq(nfds, 1, "%d userfaultfds after round 1", nfds);
	cr_assert_gt(nuw, 0, "nothing write-protect registered after round 1");
	change(pid, log, 1);
	predump(pid, "r2", "r1", out, sizeof(out));
	change(pid, log, 2);
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/lazy", tmp);
	snprintf(pv, sizeof(pv), "%s/r2", tmp);
	rc = tool(la, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "lazy exit %d: %s", rc, err);
	cr_log_info("lazy: %s", out);
	cr_assert_not_null(strstr(out, "frozen"), "%s", out);
	cr_assert_gt(num_before(out, "taken from the chain"), 4096, "%s", out);
	/* The tracker is gone: only the kept copy of the hand-over's uffd, nothing write-protected. */
	uffd_state(pid, &nfds, &nuw);
	cr_assert_eq(nfds, 1, "%d userfaultfds", nfds);
	cr_assert_eq(nuw, 0, "%d areas still write-protect registered", nuw);
	verify(pid, log);
	change(pid, log, 3);
	verify(pid, log);
	/* The daemon served every lazy page, most of them from the parents. */
	cr_assert_eq(ts_status_get(&dmn, &s), 0);
	cr_assert_geq(s.tot->pages_copied, 8192, "copied %" PRIu64, s.tot->pages_copied);
	ts_status_free(&s);
}

Test(precopy, lazy_pre_copy_does_the_rounds, .init = setup, .fini = teardown, .timeout = 180)
{
	const char *args[] = { "--pages", "8192", "--hot", "256", NULL };
	char log[128], out[4096], err[4096], ps[16], d[128];
	const char *la[] = { "lazy", "--pid", ps, "--images", d, "--socket", dmn.sock,
			     "--pre-copy", "--max-rounds", "3", NULL };
	pid_t pid;
	int rc;

	daemon_on();
	pid = pcw_start("w", args, log, sizeof(log));
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/lazy", tmp);
	rc = tool(la, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "lazy exit %d: %s", rc, err);
	cr_log_info("lazy --pre-copy: %s", out);
	cr_assert_not_null(strstr(out, "pre-copy round 1:"), "%s", out);
	cr_assert_null(strstr(out, "pre-copy round 4:"), "more than --max-rounds: %s", out);
	cr_assert_not_null(strstr(out, "frozen"), "%s", out);
	cr_assert_gt(num_before(out, "taken from the chain"), 4096, "%s", out);
	verify(pid, log);
	change(pid, log, 8);
	verify(pid, log);
}

/* CRIU's crit decodes every image of a chain; parent entries are PE_PARENT (1), lazy (3). */
Test(precopy, crit_decodes_the_chain, .init = setup, .fini = teardown, .timeout = 120)
{
	const char *args[] = { "--pages", "2048", "--hot", "64", NULL };
	static const char *const files[] = { "inventory.img", "pstree.img", "mm", "pagemap" };
	char log[128], out[4096], cmd[512], name[64];
	pid_t pid;

	if (system("command -v crit >/dev/null 2>&1"))
		cr_skip_test("crit is not installed (Debian: apt-get install criu python3-protobuf; "
			     "make deps does it)");
	pid = pcw_start("w", args, log, sizeof(log));
	predump(pid, "r1", NULL, out, sizeof(out));
	predump(pid, "r2", "r1", out, sizeof(out));
	for (int d = 1; d <= 2; d++)
		for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
			FILE *p;
			size_t n;
			static char js[1 << 20];

			if (strstr(files[f], ".img"))
				snprintf(name, sizeof(name), "%s", files[f]);
			else
				snprintf(name, sizeof(name), "%s-%d.img", files[f], (int)pid);
			snprintf(cmd, sizeof(cmd), "crit decode -i %s/r%d/%s 2>&1", tmp, d, name);
			p = popen(cmd, "r");
			cr_assert_not_null(p);
			n = fread(js, 1, sizeof(js) - 1, p);
			js[n] = '\0';
			cr_assert_eq(pclose(p), 0, "%s: %s", cmd, js);
			if (d == 2 && strstr(name, "pagemap"))
				cr_assert(strstr(js, "\"flags\": 3}") || strstr(js, "\"flags\": 1}"),
					  "no PE_PARENT entry in %s", js);
		}
	snprintf(cmd, sizeof(cmd), "%s/r2/parent", tmp);
	cr_assert_eq(readlink(cmd, name, sizeof(name)) > 0, true, "no parent link");
}

/* A round resets the written set: the dir it continued cannot be continued again. */
Test(precopy, refuses_a_continued_or_foreign_dir, .init = setup, .fini = teardown,
     .timeout = 120)
{
	const char *args[] = { "--pages", "1024", NULL };
	char log[128], log2[128], out[4096], err[4096], ps[16], d[128], pv[128];
	const char *pa[] = { "pre-dump", "--pid", ps, "--images", d, "--prev-images", pv, NULL };
	const char *da[] = { "dump", "--pid", ps, "--images", d, "--prev-images", pv, NULL };
	pid_t pid, other;
	int rc;

	pid = pcw_start("w", args, log, sizeof(log));
	other = pcw_start("o", args, log2, sizeof(log2));
	predump(pid, "r1", NULL, out, sizeof(out));
	predump(pid, "r2", "r1", out, sizeof(out));
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/again", tmp);
	snprintf(pv, sizeof(pv), "%s/r1", tmp);
	rc = tool(pa, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 1, "%s", err);
	cr_assert_not_null(strstr(err, "was continued already"), "%s", err);
	rc = tool(da, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 1, "%s", err);
	cr_assert_not_null(strstr(err, "was continued already"), "%s", err);
	/* Another process's chain: no record of it there. */
	snprintf(ps, sizeof(ps), "%d", (int)other);
	snprintf(pv, sizeof(pv), "%s/r2", tmp);
	rc = tool(pa, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 1, "%s", err);
	cr_assert_not_null(strstr(err, "uffd-track-"), "%s", err);
	/* Refusals left no images and did not spend r2: it goes on. */
	snprintf(d, sizeof(d), "%s/again/pstree.img", tmp);
	cr_assert_neq(access(d, F_OK), 0);
	predump(pid, "r3", "r2", out, sizeof(out));
	verify(pid, log);
	verify(other, log2);
}

/*
 * uffd-inject SIGKILLed in each phase of a round: the target runs on,
 * unblocked, every byte right, and a new chain can start over it.
 */
Test(precopy, tool_killed_in_each_phase, .init = setup, .fini = teardown, .timeout = 240)
{
	static const char *const phases[] = { "armed", "scanned", "running", "copied" };
	const char *args[] = { "--pages", "2048", "--hot", "128", NULL };
	char log[128], out[4096], err[4096], ps[16], d[128], pv[128], env[64], tag[32];
	const char *pa[] = { "pre-dump", "--pid", ps, "--images", d, NULL, NULL, NULL };
	pid_t pid, r;
	int rc;

	pid = pcw_start("w", args, log, sizeof(log));
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	for (size_t i = 0; i < sizeof(phases) / sizeof(phases[0]); i++) {
		/* Round 1 and a round 2 killed there. */
		snprintf(env, sizeof(env), "UFFD_INJECT_TEST_DIE_AT=%s", phases[i]);
		for (int round = 1; round <= 2; round++) {
			snprintf(tag, sizeof(tag), "k%zu-%d", i, round);
			snprintf(d, sizeof(d), "%s/%s", tmp, tag);
			if (round == 2) {
				snprintf(tag, sizeof(tag), "base%zu", i);
				predump(pid, tag, NULL, out, sizeof(out));
				snprintf(pv, sizeof(pv), "%s/%s", tmp, tag);
				pa[5] = "--prev-images";
				pa[6] = pv;
			} else {
				pa[5] = NULL;
			}
			if (round == 2 && !strcmp(phases[i], "armed"))
				continue;	/* round 2 arms nothing */
			rc = tool_env(env, pa, out, sizeof(out), err, sizeof(err));
			cr_assert_eq(rc, 128 + SIGKILL, "%s round %d: exit %d: %s", phases[i],
				     round, rc, err);
			/* It runs: it answers, every byte right, its fork comes back. */
			verify(pid, log);
			change(pid, log, 6);
			verify(pid, log);
		}
	}
	/* The last round, a hand-over, killed after the scan and after the copy. */
	daemon_on();
	for (int k = 0; k < 2; k++) {
		const char *la[] = { "lazy", "--pid", ps, "--images", d, "--socket", dmn.sock,
				     "--prev-images", pv, NULL };

		snprintf(tag, sizeof(tag), "lbase%d", k);
		predump(pid, tag, NULL, out, sizeof(out));
		snprintf(pv, sizeof(pv), "%s/%s", tmp, tag);
		snprintf(d, sizeof(d), "%s/lazy%d", tmp, k);
		snprintf(env, sizeof(env), "UFFD_INJECT_TEST_DIE_AT=%s", k ? "copied" : "scanned");
		rc = tool_env(env, la, out, sizeof(out), err, sizeof(err));
		cr_assert_eq(rc, 128 + SIGKILL, "lazy %d: exit %d: %s", k, rc, err);
		verify(pid, log);
		change(pid, log, 6);
		verify(pid, log);
	}
	/* A chain starts over whatever was left, and tracks again. */
	predump(pid, "fresh", NULL, out, sizeof(out));
	change(pid, log, 1);
	predump(pid, "fresh2", "fresh", out, sizeof(out));
	cr_assert_gt(num_before(out, "left in the parent"), 1024, "not tracked: %s", out);
	dump_kill(pid, "last", "fresh2", out, sizeof(out));
	r = restore("last", false);
	verify(r, log);
	end(r);
}

/* The target exits while a round copies: the round fails naming it, no images left. */
Test(precopy, target_exits_mid_round, .init = setup, .fini = teardown, .timeout = 120)
{
	const char *args[] = { "--pages", "2048", NULL };
	char log[128], out[4096], err[4096], ps[16], d[128], pv[128];
	const char *pa[] = { "pre-dump", "--pid", ps, "--images", d, "--prev-images", pv, NULL };
	pid_t pid;
	int rc;

	pid = pcw_start("w", args, log, sizeof(log));
	predump(pid, "r1", NULL, out, sizeof(out));
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/r2", tmp);
	snprintf(pv, sizeof(pv), "%s/r1", tmp);
	rc = tool_env("UFFD_INJECT_TEST_KILL_TARGET_AT=running", pa, out, sizeof(out), err,
		      sizeof(err));
	cr_assert_eq(rc, 1, "exit %d: %s", rc, err);
	snprintf(ps, sizeof(ps), "pid %d:", (int)pid);
	cr_assert_not_null(strstr(err, ps), "%s", err);
	cr_assert(strstr(err, "gone") || strstr(err, "No such process"), "%s", err);
	snprintf(d, sizeof(d), "%s/r2/pagemap-%d.img", tmp, (int)pid);
	cr_assert_neq(access(d, F_OK), 0, "a failed round left images");
	waitpid(pid, NULL, 0);
	forget(pid);
}

/* dump --prev-images without --kill: the target runs on untracked, as it was. */
Test(precopy, dump_prev_images_ends_tracking, .init = setup, .fini = teardown, .timeout = 120)
{
	const char *args[] = { "--pages", "2048", "--hot", "64", NULL };
	char log[128], out[4096], err[4096], ps[16], d[128], pv[128];
	const char *da[] = { "dump", "--pid", ps, "--images", d, "--prev-images", pv, NULL };
	int rc, nfds, nuw;
	pid_t pid;

	pid = pcw_start("w", args, log, sizeof(log));
	predump(pid, "r1", NULL, out, sizeof(out));
	change(pid, log, 2);
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/last", tmp);
	snprintf(pv, sizeof(pv), "%s/r1", tmp);
	rc = tool(da, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "dump exit %d: %s", rc, err);
	cr_assert_not_null(strstr(out, "tracking ended"), "%s", out);
	cr_assert_not_null(strstr(out, "read ahead of their writing: the target was let go"),
			   "%s", out);
	uffd_state(pid, &nfds, &nuw);
	cr_assert_eq(nfds, 0, "%d userfaultfds left in it", nfds);
	cr_assert_eq(nuw, 0, "%d areas still registered", nuw);
	verify(pid, log);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	forget(pid);
}

/* A "manager" that takes the probe, then refuses the HELLO (after the pages were dropped). */
static void *refuser(void *arg)
{
	int lfd = *(int *)arg, fd, fds[WIRE_MAX_FDS], nfds;
	uint8_t buf[WIRE_MAX_MSG];
	Reply r = REPLY__INIT;
	HelloReply hr = HELLO_REPLY__INIT;
	ssize_t n;

	for (int k = 0; k < 2; k++) {	/* lazy probes before the target is touched */
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			return NULL;
		if (poll(&(struct pollfd){ .fd = fd, .events = POLLIN }, 1, 30000) > 0 &&
		    (n = wire_recv(fd, buf, sizeof(buf), fds, &nfds, WIRE_MAX_FDS)) > 0) {
			for (int i = 0; i < nfds; i++)
				close(fds[i]);
			hr.ok = 0;
			hr.reason = "refused by the test";
			r.hello = &hr;
			wire_send(fd, &r.base, NULL, 0);
			close(fd);
			return NULL;
		}
		close(fd);
	}
	return NULL;
}

/* A refused hand-over of a chain puts every page back, from the parents too. */
Test(precopy, refused_lazy_puts_the_chain_back, .init = setup, .fini = teardown, .timeout = 120)
{
	const char *args[] = { "--pages", "4096", "--hot", "128", NULL };
	char log[128], out[4096], err[4096], ps[16], d[128], pv[128];
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	const char *la[] = { "lazy", "--pid", ps, "--images", d, "--socket", a.sun_path,
			     "--prev-images", pv, NULL };
	int lfd, rc, nfds, nuw;
	pthread_t th;
	pid_t pid;

	pid = pcw_start("w", args, log, sizeof(log));
	predump(pid, "r1", NULL, out, sizeof(out));
	change(pid, log, 2);	/* new, drop */
	predump(pid, "r2", "r1", out, sizeof(out));
	snprintf(a.sun_path, sizeof(a.sun_path), "%s/refuse.sock", tmp);
	lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	cr_assert_geq(lfd, 0);
	cr_assert_eq(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(lfd, 4), 0);
	cr_assert_eq(pthread_create(&th, NULL, refuser, &lfd), 0);
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/lazy", tmp);
	snprintf(pv, sizeof(pv), "%s/r2", tmp);
	rc = tool(la, out, sizeof(out), err, sizeof(err));
	pthread_join(th, NULL);
	close(lfd);
	cr_assert_eq(rc, 1, "lazy exit %d: %s", rc, err);
	cr_assert_not_null(strstr(err, "refused by the test"), "%s", err);
	cr_assert_not_null(strstr(err, "memory is back in place"), "%s", err);
	uffd_state(pid, &nfds, &nuw);
	cr_assert_eq(nfds, 0, "%d userfaultfds left", nfds);
	cr_assert_eq(nuw, 0, "%d areas registered", nuw);
	verify(pid, log);
	change(pid, log, 4);
	verify(pid, log);
}

/* Transparent huge pages written between rounds: tracked per pmd, every byte right. */
Test(precopy, thp_area_written_between_rounds, .init = setup, .fini = teardown, .timeout = 180)
{
	const char *args[] = { "--thp", "--pages", "2048", "--hot", "700", NULL };
	char log[128], out[4096], path[64], *b, *p;
	long huge = 0;
	pid_t pid, r;

	pid = pcw_start("w", args, log, sizeof(log));
	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	b = slurp(path);
	for (p = b; (p = strstr(p, "AnonHugePages:")); p++)
		huge += strtol(p + 14, NULL, 10);
	free(b);
	if (huge == 0)
		cr_log_warn("no huge page in the target (THP off here?): tracked as small pages");
	predump(pid, "r1", NULL, out, sizeof(out));
	predump(pid, "r2", "r1", out, sizeof(out));
	verify(pid, log);
	change(pid, log, 2);
	predump(pid, "r3", "r2", out, sizeof(out));
	dump_kill(pid, "last", "r3", out, sizeof(out));
	r = restore("last", false);
	verify(r, log);
	end(r);
}

/* A tracked target can still be dumped plainly, and handed over without the chain. */
Test(precopy, plain_dump_and_lazy_of_a_tracked_target, .init = setup, .fini = teardown,
     .timeout = 180)
{
	const char *args[] = { "--pages", "2048", "--hot", "64", NULL };
	char log[128], out[4096], err[4096], ps[16], d[128];
	const char *da[] = { "dump", "--pid", ps, "--images", d, NULL };
	const char *la[] = { "lazy", "--pid", ps, "--images", d, "--socket", dmn.sock, NULL };
	int rc, nfds, nuw;
	pid_t pid;

	daemon_on();
	pid = pcw_start("w", args, log, sizeof(log));
	predump(pid, "r1", NULL, out, sizeof(out));
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/plain", tmp);
	rc = tool(da, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "dump exit %d: %s", rc, err);
	/* The plain dump left the tracking alone: the chain goes on. */
	uffd_state(pid, &nfds, &nuw);
	cr_assert_eq(nfds, 1);
	cr_assert_gt(nuw, 0);
	predump(pid, "r2", "r1", out, sizeof(out));
	cr_assert_gt(num_before(out, "left in the parent"), 1024, "%s", out);
	/* lazy without the chain takes the tracker down and hands everything over. */
	snprintf(d, sizeof(d), "%s/lazy", tmp);
	rc = tool(la, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "lazy exit %d: %s", rc, err);
	uffd_state(pid, &nfds, &nuw);
	cr_assert_eq(nfds, 1, "%d userfaultfds: the tracker is still there", nfds);
	cr_assert_eq(nuw, 0);
	verify(pid, log);
	change(pid, log, 3);
	verify(pid, log);
}

/* Memory the kernel writes without a fault (io_uring here) cannot be tracked: refused. */
Test(precopy, refuses_io_uring, .init = setup, .fini = teardown, .timeout = 60)
{
	const char *wargs[] = { "--uring", NULL };
	char why[256], out[4096], err[4096], ps[16], d[128];
	const char *pa[] = { "pre-dump", "--pid", ps, "--images", d, NULL };
	struct tw w;
	int rc, nfds, nuw;

	cr_assert_eq(tw_start(&w, wargs, why, sizeof(why)), 0, "%s", why);
	kids[nkids++] = w.pid;
	snprintf(ps, sizeof(ps), "%d", (int)w.pid);
	snprintf(d, sizeof(d), "%s/r1", tmp);
	rc = tool(pa, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 1, "pre-dump exit %d: %s", rc, err);
	cr_assert_not_null(strstr(err, "io_uring"), "%s", err);
	cr_assert_neq(access(d, F_OK), 0, "a refused round left %s", d);
	uffd_state(w.pid, &nfds, &nuw);
	cr_assert_eq(nfds + nuw, 0, "a refused round left a tracker");
	cr_assert_str_eq(tw_ask(&w, "v", 30000), "ok");
	tw_stop(&w);
	forget(w.pid);
}

/*
 * The areas are read before the freeze (smaps walks every page table) and
 * checked at it against /proc/PID/maps. With UFFD_INJECT_TEST_SIGNAL_AT=preread
 * the tool sends SIG to the target between that read and the freeze and
 * waits until it logs the change. The last round, dump --prev-images
 * --leave-stopped, into tmp/last; its exit code, output in OUT and ERR.
 */
static int last_round_with(pid_t pid, int sig, const char *log, char *out, size_t olen, char *err,
			   size_t elen)
{
	char ps[16], d[128], pv[128], se[32], ge[160];
	const char *envs[] = { "UFFD_INJECT_TEST_SIGNAL_AT=preread", se, ge, NULL };
	const char *args[] = { "dump", "--pid", ps, "--images", d, "--leave-stopped",
			       "--prev-images", pv, NULL };

	predump(pid, "r1", NULL, out, olen);
	verify(pid, log);
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/last", tmp);
	snprintf(pv, sizeof(pv), "%s/r1", tmp);
	snprintf(se, sizeof(se), "UFFD_INJECT_TEST_SIGNAL=%d", sig);
	snprintf(ge, sizeof(ge), "UFFD_INJECT_TEST_WAIT_GROW=%s", log);
	return tool_envs(sig ? envs : NULL, args, out, olen, err, elen);
}

/* Kill the stopped original PID, restore tmp/last eagerly, have the copy check every byte. */
static void restore_and_verify(pid_t pid, const char *log)
{
	pid_t r;

	end(pid);
	r = restore("last", false);
	verify(r, log);
	end(r);
}

Test(precopy, areas_read_before_the_freeze, .init = setup, .fini = teardown, .timeout = 120)
{
	const char *args[] = { "--pages", "2048", "--hot", "64", NULL };
	char log[128], out[4096], err[4096];
	pid_t pid;
	int rc;

	pid = pcw_start("w", args, log, sizeof(log));
	rc = last_round_with(pid, 0, log, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "dump exit %d: %s", rc, err);
	cr_assert_not_null(strstr(out, "VmFlags read before the freeze"), "%s", out);
	cr_assert_not_null(strstr(out, "left stopped"), "%s", out);
	/* Stopped once every page was read, before the pages file was written. */
	cr_assert_not_null(strstr(out, "read ahead of their writing: the target was stopped"),
			   "%s", out);
	restore_and_verify(pid, log);
}

Test(precopy, area_created_between_read_and_freeze, .init = setup, .fini = teardown,
     .timeout = 120)
{
	const char *args[] = { "--pages", "2048", "--hot", "64", NULL };
	char log[128], out[4096], err[4096];
	pid_t pid;
	int rc;

	pid = pcw_start("w", args, log, sizeof(log));
	/* SIGUSR2: its first change maps a new slot of 64 pages, each with data. */
	rc = last_round_with(pid, SIGUSR2, log, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "dump exit %d: %s", rc, err);
	cr_assert_eq(count_in(log, "change new\n"), 1, "%s", slurp(log));
	cr_assert_not_null(strstr(out, "VmFlags read again at the freeze"), "%s", out);
	restore_and_verify(pid, log);
}

Test(precopy, area_unmapped_between_read_and_freeze, .init = setup, .fini = teardown,
     .timeout = 180)
{
	const char *args[] = { "--pages", "2048", "--hot", "64", NULL };
	char log[128], out[4096], err[4096];
	pid_t pid;
	int rc;

	pid = pcw_start("w", args, log, sizeof(log));
	change(pid, log, 7);	/* new, drop, grow, move, protect, fork, thp: next is unmap */
	rc = last_round_with(pid, SIGUSR2, log, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "dump exit %d: %s", rc, err);
	cr_assert_eq(count_in(log, "change unmap\n"), 1, "%s", slurp(log));
	cr_assert_not_null(strstr(out, "VmFlags read again at the freeze"), "%s", out);
	restore_and_verify(pid, log);
}

Test(precopy, mlock_between_read_and_freeze_reads_again, .init = setup, .fini = teardown,
     .timeout = 120)
{
	const char *args[] = { "--pages", "2048", "--hot", "64", NULL };
	char log[128], out[4096], err[4096];
	pid_t pid;
	int rc;

#if defined(__SANITIZE_ADDRESS__)
	/* These need the target's areas still between the two reads; its ASan runtime maps its own. */
	cr_skip_test("under ASan the target's runtime changes its areas between the reads");
#endif
	pid = pcw_start("w", args, log, sizeof(log));
	/* SIGURG: mlock() of slot 0, which leaves maps as it was; VmLck moves. */
	rc = last_round_with(pid, SIGURG, log, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "dump exit %d: %s", rc, err);
	cr_assert_eq(count_in(log, "flags mlock\n"), 1, "%s", slurp(log));
	cr_assert_not_null(strstr(out, "VmFlags read again at the freeze"), "%s", out);
	cr_assert_not_null(strstr(err, "is locked in memory"), "%s", err);
	restore_and_verify(pid, log);
}

Test(precopy, madvise_between_read_and_freeze_fails_the_dump, .init = setup, .fini = teardown,
     .timeout = 120)
{
	const char *args[] = { "--pages", "2048", "--hot", "64", NULL };
	char log[128], out[4096], err[4096], ps[16], d[128], path[200];
	const char *again[] = { "dump", "--pid", ps, "--images", d, "--leave-stopped", NULL };
	struct stat sb;
	pid_t pid;
	int rc;

#if defined(__SANITIZE_ADDRESS__)
	/* These need the target's areas still between the two reads; its ASan runtime maps its own. */
	cr_skip_test("under ASan the target's runtime changes its areas between the reads");
#endif
	pid = pcw_start("w", args, log, sizeof(log));
	/*
	 * SIGWINCH: madvise(MADV_NOHUGEPAGE) of the whole of slot 0: neither
	 * maps nor VmLck shows it. The check after the stop must.
	 */
	rc = last_round_with(pid, SIGWINCH, log, out, sizeof(out), err, sizeof(err));
	cr_assert_neq(rc, 0, "the dump did not see the change: %s", out);
	cr_assert_eq(count_in(log, "flags nohugepage\n"), 1, "%s", slurp(log));
	cr_assert_not_null(strstr(err, "its VmFlags went from"), "%s", err);
	cr_assert_not_null(strstr(err, " nh"), "%s", err);
	snprintf(path, sizeof(path), "%s/last/inventory.img", tmp);
	cr_assert_neq(stat(path, &sb), 0, "images were published");
	/* It was stopped for the check, and goes on after the refusal. */
	verify(pid, log);
	/* Dumped again, the change is in the images; the copy is whole. */
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/last", tmp);
	rc = tool(again, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "dump exit %d: %s", rc, err);
	cr_assert_not_null(strstr(out, "VmFlags read before the freeze"), "%s", out);
	restore_and_verify(pid, log);
}

/* ---- the drop out of the freeze: big areas moved to a graveyard, freed after the thaw ---- */

static void daemon_with(const char *const *args)
{
	ts_daemon_start(&dmn, args);
	dmn_on = true;
}

/*
 * The graveyard [*A, *B) and the dropper's code *STUB that uffd-inject's
 * TEXT names (its summary line, or its debug line when it died first).
 */
static void grave_of(const char *text, uint64_t *a, uint64_t *b, uint64_t *stub)
{
	const char *p = strstr(text, "(to 0x");

	*a = *b = *stub = 0;
	if (p)
		cr_assert_eq(sscanf(p, "(to 0x%" SCNx64 "-0x%" SCNx64, a, b), 2);
	else if ((p = strstr(text, "(graveyard 0x")))
		cr_assert_eq(sscanf(p, "(graveyard 0x%" SCNx64 "-0x%" SCNx64, a, b), 2);
	cr_assert_gt(*b, *a, "no graveyard named in: %s", text);
	if ((p = strstr(text, "code (0x")))
		cr_assert_eq(sscanf(p, "code (0x%" SCNx64, stub), 1);
}

/* Does any line of the maps file PATH overlap [A, B)? */
static bool maps_overlap(const char *path, uint64_t a, uint64_t b)
{
	char *m = slurp(path), *line = m;
	bool hit = false;

	while (line && *line) {
		uint64_t s, e;

		if (sscanf(line, "%" SCNx64 "-%" SCNx64, &s, &e) == 2 && s < b && e > a)
			hit = true;
		line = strchr(line, '\n');
		line = line ? line + 1 : NULL;
	}
	free(m);
	return hit;
}

static bool mapped(pid_t pid, uint64_t a, uint64_t b)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	return maps_overlap(path, a, b);
}

/* Wait up to MS for [A, B) to leave PID's maps. */
static bool unmapped_within(pid_t pid, uint64_t a, uint64_t b, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		if (!mapped(pid, a, b))
			return true;
		usleep(10000);
	}
	return false;
}

/* The stack pointer of PID's thread other than the main one (pcwriter --sleeper). */
static uint64_t sleeper_sp(pid_t pid)
{
	char path[96], *b, *p;
	struct dirent *de;
	uint64_t sp = 0;
	pid_t tid = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	cr_assert_not_null(d);
	while ((de = readdir(d)))
		if (atoi(de->d_name) > 0 && atoi(de->d_name) != pid)
			tid = atoi(de->d_name);
	closedir(d);
	cr_assert_gt(tid, 0, "no sleeper thread");
	/* "NR ARG1 .. ARG6 SP PC" once it sleeps in a syscall ("running" before) */
	snprintf(path, sizeof(path), "/proc/%d/task/%d/syscall", (int)pid, (int)tid);
	for (int i = 0; i < 500 && !sp; i++) {
		b = slurp(path);
		p = b;
		for (int f = 0; f < 7 && p; f++) {
			p = strchr(p, ' ');
			p = p ? p + 1 : NULL;
		}
		if (p)
			sp = strtoull(p, NULL, 0);
		free(b);
		if (!sp)
			usleep(10000);
	}
	cr_assert_gt(sp, 0, "%s: no stack pointer", path);
	return sp;
}

/* Is the page at ADDR of PID present (its pagemap word)? */
static bool present(pid_t pid, uint64_t addr)
{
	char path[64];
	uint64_t w = 0;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &w, 8, (off_t)(addr / 4096 * 8)), 8);
	close(fd);
	return w >> 63;
}

/*
 * lazy --pre-copy of a target whose big areas go to the graveyard: every
 * byte right, the graveyard and the dropper's code gone afterwards, RssAnon
 * down (no fill brings pages back), and the pages that must stay resident
 * (the sleeper thread's stack top, in a moved area) there, without a fault.
 */
Test(precopy, lazy_moves_big_areas_out_of_the_freeze, .init = setup, .fini = teardown,
     .timeout = 180)
{
	const char *args[] = { "--pages", "16384", "--hot", "256", "--sleeper", NULL };
	const char *dargs[] = { "--no-fill", NULL };
	char log[128], out[8192], err[8192], ps[16], d[128];
	const char *la[] = { "lazy", "--pid", ps, "--images", d, "--socket", dmn.sock,
			     "--pre-copy", "--max-rounds", "3", NULL };
	uint64_t a, b, stub, before, sp;
	pid_t pid;
	int rc;

	daemon_with(dargs);
	pid = pcw_start("w", args, log, sizeof(log));
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/lazy", tmp);
	before = tw_status_bytes(pid, "RssAnon");
	sp = sleeper_sp(pid);
	rc = tool(la, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "lazy exit %d: %s", rc, err);
	cr_log_info("lazy --pre-copy: %s", out);
	/*
	 * Slot 0 (64 MiB) and the sleeper's stack area (4 MiB; the kernel may
	 * have merged the two), not the counters (128 KiB).
	 */
	cr_assert(strstr(out, "drop: 1 area ") || strstr(out, "drop: 2 areas"), "%s", out);
	grave_of(out, &a, &b, &stub);
	cr_assert(!mapped(pid, a, b), "the graveyard 0x%" PRIx64 "-0x%" PRIx64 " is mapped", a, b);
	cr_assert(!mapped(pid, stub, stub + 8192), "the dropper's code is mapped");
	cr_assert_null(strstr(out, "which stays"), "%s", out);
	/* The one-thread stop after the thaw is printed apart from the freeze. */
	cr_assert_not_null(strstr(out, "s (and one thread 0."), "%s", out);
	cr_assert(present(pid, sp), "the sleeper's stack page 0x%" PRIx64 " is not resident", sp);
	cr_assert_lt(tw_status_bytes(pid, "RssAnon"), before / 4, "RssAnon %" PRIu64 " from %"
		     PRIu64, tw_status_bytes(pid, "RssAnon"), before);
	verify(pid, log);
	change(pid, log, 8);
	verify(pid, log);
}

/*
 * The drop stays in the freeze when asked (test hook), for a seccomp'd
 * target (its first thread, or another one only), and for KSM areas.
 */
Test(precopy, lazy_drop_falls_back_into_the_freeze, .init = setup, .fini = teardown,
     .timeout = 180)
{
	const char *plain[] = { "--pages", "8192", "--hot", "256", NULL };
	const char *filtered[] = { "--pages", "8192", "--hot", "256", "--seccomp", NULL };
	const char *sleeper_filtered[] = { "--pages", "8192", "--hot", "256", "--seccomp-sleeper",
					   NULL };
	const char *mergeable[] = { "--pages", "8192", "--hot", "256", "--ksm", NULL };
	char log[128], log2[128], out[8192], err[8192], ps[16], d[128];
	const char *la[] = { "lazy", "--pid", ps, "--images", d, "--socket", dmn.sock,
			     "--pre-copy", "--max-rounds", "2", NULL };
	pid_t pid;
	int rc;

	daemon_on();
	pid = pcw_start("w", plain, log, sizeof(log));
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/lazy", tmp);
	rc = tool_env("UFFD_INJECT_TEST_NO_GRAVEYARD=1", la, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "lazy exit %d: %s", rc, err);
	cr_assert_not_null(strstr(out, "drop: in the freeze (UFFD_INJECT_TEST_NO_GRAVEYARD"),
			   "%s", out);
	verify(pid, log);
	change(pid, log, 8);
	verify(pid, log);

	pid = pcw_start("s", filtered, log2, sizeof(log2));
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/lazy2", tmp);
	rc = tool(la, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "lazy exit %d: %s", rc, err);
	cr_assert_not_null(strstr(out, "drop: in the freeze (it has a seccomp filter"), "%s", out);
	verify(pid, log2);
	change(pid, log2, 8);
	verify(pid, log2);

	/* A filter in one thread but the first: filters are per thread. */
	pid = pcw_start("t", sleeper_filtered, log2, sizeof(log2));
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/lazy3", tmp);
	rc = tool(la, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "lazy exit %d: %s", rc, err);
	cr_assert_not_null(strstr(out, "drop: in the freeze (it has a seccomp filter"), "%s", out);
	verify(pid, log2);
	change(pid, log2, 8);
	verify(pid, log2);

	/* KSM: a move would unmerge every shared page first, in the freeze. */
	pid = pcw_start("k", mergeable, log2, sizeof(log2));
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/lazy4", tmp);
	rc = tool(la, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "lazy exit %d: %s", rc, err);
	cr_assert_not_null(strstr(out, "drop: in the freeze (no area holds 2 MiB"), "%s", out);
	verify(pid, log2);
	change(pid, log2, 8);
	verify(pid, log2);
}

/*
 * uffd-inject SIGKILLed at each step of the drop out of the freeze:
 *   graveyard  reserved, nothing moved: the target runs on, all of it there;
 *   moved      areas moved, not yet registered: the kernel kills the target
 *              with us (it must never run on empty areas);
 *   dropper, eager, dropped  the dropper started (eager: before the other
 *              areas' pages are dropped), no manager has the target: it
 *              waits on its missing pages, and the graveyard is freed;
 *   thawed     handed over and running: served, every byte right, the
 *              graveyard freed; the dropper's 8 KiB stay (documented).
 */
Test(precopy, lazy_drop_tool_killed_in_each_phase, .init = setup, .fini = teardown,
     .timeout = 300)
{
	static const char *const phases[] = { "graveyard", "moved", "dropper", "eager",
					      "dropped", "thawed" };
	const char *args[] = { "--pages", "4096", "--hot", "256", NULL };
	char log[128], out[8192], err[8192], ps[16], d[128], pv[128], env[64], tag[32];
	const char *envs[] = { env, "UFFD_INJECT_DEBUG=1", NULL };
	const char *la[] = { "lazy", "--pid", ps, "--images", d, "--socket", dmn.sock,
			     "--prev-images", pv, NULL };
	uint64_t a, b, stub;
	pid_t pid;
	int rc, st;

	daemon_on();
	for (size_t i = 0; i < sizeof(phases) / sizeof(phases[0]); i++) {
		snprintf(tag, sizeof(tag), "w%zu", i);
		pid = pcw_start(tag, args, log, sizeof(log));
		snprintf(tag, sizeof(tag), "r%zu", i);
		predump(pid, tag, NULL, out, sizeof(out));
		snprintf(ps, sizeof(ps), "%d", (int)pid);
		snprintf(pv, sizeof(pv), "%s/%s", tmp, tag);
		snprintf(d, sizeof(d), "%s/lazy%zu", tmp, i);
		snprintf(env, sizeof(env), "UFFD_INJECT_TEST_DIE_AT=%s", phases[i]);
		rc = tool_envs(envs, la, out, sizeof(out), err, sizeof(err));
		cr_assert_eq(rc, 128 + SIGKILL, "%s: exit %d: %s", phases[i], rc, err);
		if (!strcmp(phases[i], "graveyard")) {
			verify(pid, log);
			change(pid, log, 6);
			verify(pid, log);
			continue;
		}
		if (!strcmp(phases[i], "moved")) {
			pid_t w = 0;

			for (int k = 0; k < 2000 && w == 0; k++) {
				w = waitpid(pid, &st, WNOHANG);
				if (w == 0)
					usleep(10000);
			}
			cr_assert_eq(w, pid, "moved: the target was not killed with the tool: %s",
				     slurp(log));
			forget(pid);
			cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s: status 0x%x",
				  phases[i], st);
			cr_assert_eq(count_in(log, "bad"), 0, "%s", slurp(log));
			continue;
		}
		grave_of(err, &a, &b, &stub);
		cr_assert(unmapped_within(pid, a, b, 20000), "%s: the graveyard 0x%" PRIx64
			  "-0x%" PRIx64 " was not freed", phases[i], a, b);
		if (!strcmp(phases[i], "thawed")) {
			verify(pid, log);
			change(pid, log, 6);
			verify(pid, log);
			continue;
		}
		/* Nobody serves it: it waits on its pages, it never reads a zero. */
		{
			int n = count_in(log, "verify ");

			cr_assert_eq(kill(pid, SIGUSR1), 0);
			cr_assert(!wait_count(log, "verify ", n + 1, 1000),
				  "%s: it answered with nobody serving it: %s", phases[i], slurp(log));
		}
	}
}

/*
 * A fork while the graveyard lives (the dropper made to sleep first): the
 * child gets no copy of it (MADV_DONTFORK), and both have every byte right.
 */
Test(precopy, lazy_fork_while_the_graveyard_lives, .init = setup, .fini = teardown,
     .timeout = 180)
{
	const char *args[] = { "--pages", "8192", "--hot", "256", NULL };
	char log[128], out[8192], err[8192], ps[16], d[128], pv[128], grow[160], maps[160];
	const char *envs[] = { "UFFD_INJECT_TEST_DROPPER_DELAY_MS=1500",
			       "UFFD_INJECT_TEST_SIGNAL_AT=thawed", "UFFD_INJECT_TEST_SIGNAL=12",
			       grow, NULL };
	const char *la[] = { "lazy", "--pid", ps, "--images", d, "--socket", dmn.sock,
			     "--prev-images", pv, NULL };
	uint64_t a, b, stub;
	pid_t pid;
	int rc;

	daemon_on();
	snprintf(maps, sizeof(maps), "%s/fork-maps", tmp);
	cr_assert_eq(setenv("PCW_FORK_MAPS", maps, 1), 0);
	pid = pcw_start("w", args, log, sizeof(log));
	unsetenv("PCW_FORK_MAPS");
	predump(pid, "r1", NULL, out, sizeof(out));
	change(pid, log, 5);	/* new, drop, grow, move, protect: the next one forks */
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/lazy", tmp);
	snprintf(pv, sizeof(pv), "%s/r1", tmp);
	snprintf(grow, sizeof(grow), "UFFD_INJECT_TEST_WAIT_GROW=%s", log);
	rc = tool_envs(envs, la, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "lazy exit %d: %s", rc, err);
	cr_log_info("lazy: %s", out);
	grave_of(out, &a, &b, &stub);
	cr_assert(wait_count(log, "change fork", 1, 60000), "no fork: %s", slurp(log));
	cr_assert_eq(count_in(log, "fork ok"), 1, "%s", slurp(log));
	cr_assert_gt(strlen(slurp(maps)), 0, "the child wrote no maps");
	cr_assert(!maps_overlap(maps, a, b), "the child holds the graveyard 0x%" PRIx64 "-0x%"
		  PRIx64 ":\n%s", a, b, slurp(maps));
	cr_assert(!maps_overlap(maps, stub, stub + 8192), "the child holds the dropper's code");
	cr_assert(!mapped(pid, a, b));
	verify(pid, log);
	change(pid, log, 3);
	verify(pid, log);
}

/*
 * The target execs while the dropper runs (made to sleep first): exec ends
 * the dropper with the old memory; the stub's address means nothing in the
 * new one, and uffd-inject leaves it alone. The new program runs on.
 */
Test(precopy, lazy_exec_while_the_graveyard_lives, .init = setup, .fini = teardown,
     .timeout = 180)
{
	const char *args[] = { "--pages", "4096", "--hot", "256", "--exec-on-hup", NULL };
	char log[128], out[8192], err[8192], ps[16], d[128], pv[128], grow[160], exe[256];
	char link[64];
	const char *envs[] = { "UFFD_INJECT_TEST_DROPPER_DELAY_MS=1500",
			       "UFFD_INJECT_TEST_SIGNAL_AT=thawed", "UFFD_INJECT_TEST_SIGNAL=1",
			       grow, NULL };
	const char *la[] = { "lazy", "--pid", ps, "--images", d, "--socket", dmn.sock,
			     "--prev-images", pv, NULL };
	ssize_t n;
	pid_t pid;
	int rc;

	daemon_on();
	pid = pcw_start("w", args, log, sizeof(log));
	predump(pid, "r1", NULL, out, sizeof(out));
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/lazy", tmp);
	snprintf(pv, sizeof(pv), "%s/r1", tmp);
	snprintf(grow, sizeof(grow), "UFFD_INJECT_TEST_WAIT_GROW=%s", log);
	rc = tool_envs(envs, la, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "lazy exit %d: %s", rc, err);
	cr_log_info("lazy: %s%s", out, err);
	cr_assert_eq(count_in(log, "exec"), 1, "%s", slurp(log));
	/* The dropper ended with the old memory, and its code too: nothing touched. */
	cr_assert_not_null(strstr(out, "which went with its memory: it exec'd"), "%s", out);
	snprintf(link, sizeof(link), "/proc/%d/exe", (int)pid);
	n = readlink(link, exe, sizeof(exe) - 1);
	cr_assert_gt(n, 0);
	exe[n] = '\0';
	cr_assert_not_null(strstr(exe, "sleep"), "it runs %s", exe);
	cr_assert_eq(kill(pid, 0), 0, "the new program died");
	cr_assert_eq(waitpid(pid, NULL, WNOHANG), 0, "the new program ended");
}

/*
 * A hand-over that fails after big areas were moved, at the first, second
 * or third registration (test hook), cleanly or half way through (the first
 * half of that area registered): areas registered get their pages back
 * from the images, the others straight from the graveyard; the areas fork
 * as before (the graveyard's MADV_DONTFORK does not stay on them), nothing
 * of ours is left, every byte right.
 */
Test(precopy, lazy_failing_after_the_move_moves_back, .init = setup, .fini = teardown,
     .timeout = 240)
{
	const char *args[] = { "--pages", "4096", "--hot", "256", NULL };
	char log[128], out[8192], err[8192], ps[16], d[128], pv[128], env[64], tag[16];
	const char *envs[] = { env, "UFFD_INJECT_DEBUG=1", NULL, NULL };
	const char *la[] = { "lazy", "--pid", ps, "--images", d, "--socket", dmn.sock,
			     "--prev-images", pv, NULL };
	uint64_t a, b, stub;
	int rc, nfds, nuw;
	pid_t pid;

	daemon_on();
	for (int i = 0; i < 6; i++) {
		int k = i % 3 + 1;

		/* The last three fail half way through, the first half registered. */
		if (i == 3)
			envs[2] = "UFFD_INJECT_TEST_FAIL_REGISTER_HALF=1";
		snprintf(tag, sizeof(tag), "w%d", i);
		pid = pcw_start(tag, args, log, sizeof(log));
		snprintf(tag, sizeof(tag), "r%d", i);
		predump(pid, tag, NULL, out, sizeof(out));
		snprintf(ps, sizeof(ps), "%d", (int)pid);
		snprintf(d, sizeof(d), "%s/lazy%d", tmp, i);
		snprintf(pv, sizeof(pv), "%s/%s", tmp, tag);
		snprintf(env, sizeof(env), "UFFD_INJECT_TEST_FAIL_REGISTER=%d", k);
		rc = tool_envs(envs, la, out, sizeof(out), err, sizeof(err));
		cr_assert_eq(rc, 1, "%d: lazy exit %d: %s", i, rc, err);
		cr_assert_not_null(strstr(err, "cannot register"), "%s", err);
		cr_assert_not_null(strstr(err, "memory is back in place"), "%s", err);
		grave_of(err, &a, &b, &stub);
		cr_assert(!mapped(pid, a, b), "%d: the graveyard is still mapped", i);
		uffd_state(pid, &nfds, &nuw);
		cr_assert_eq(nfds, 0, "%d: %d userfaultfds left", i, nfds);
		cr_assert_eq(nuw, 0, "%d: %d areas registered", i, nuw);
		verify(pid, log);
		change(pid, log, 8);	/* a fork among them: its child checks its copy */
		cr_assert_eq(count_in(log, "fork ok"), 1, "%s", slurp(log));
		verify(pid, log);
	}
}

/*
 * A target in a pid namespace of its own (a container): clone() in it gives
 * the dropper a tid of that namespace, which names nothing here or another
 * task. The dropper must be watched under its tid as we see it, and its
 * code left until it has ended: made to sleep first, a dropper taken for
 * ended would have its code unmapped under it and kill the target.
 */
Test(precopy, lazy_drop_in_a_pid_namespace, .init = setup, .fini = teardown, .timeout = 180)
{
	const char *args[] = { "--pages", "16384", "--hot", "256", NULL };
	char log[128], out[8192], err[8192], ps[16], d[128], pv[128];
	const char *envs[] = { "UFFD_INJECT_TEST_DROPPER_DELAY_MS=1000", NULL };
	const char *la[] = { "lazy", "--pid", ps, "--images", d, "--socket", dmn.sock,
			     "--prev-images", pv, NULL };
	uint64_t a, b, stub;
	char *st;
	pid_t pid;
	int rc;

	daemon_on();
	pid = pcw_start_ns("w", args, log, sizeof(log));
	predump(pid, "r1", NULL, out, sizeof(out));
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/lazy", tmp);
	snprintf(pv, sizeof(pv), "%s/r1", tmp);
	rc = tool_envs(envs, la, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "lazy exit %d: %s", rc, err);
	cr_log_info("lazy: %s%s", out, err);
	cr_assert_not_null(strstr(out, "drop: 1 area "), "%s", out);
	cr_assert_null(strstr(out, "which stays"), "%s%s", out, err);
	grave_of(out, &a, &b, &stub);
	cr_assert_gt(stub, 0, "%s", out);
	cr_assert(!mapped(pid, a, b), "the graveyard 0x%" PRIx64 "-0x%" PRIx64 " is mapped", a, b);
	cr_assert(!mapped(pid, stub, stub + 8192), "the dropper's code is mapped");
	usleep(200000);	/* a dropper still running would fault about now */
	snprintf(d, sizeof(d), "/proc/%d/stat", (int)pid);
	st = slurp(d);
	cr_assert(strstr(st, ") S ") || strstr(st, ") R "), "the target died: %s %s", st,
		  slurp(log));
	free(st);
	verify(pid, log);
	change(pid, log, 8);
	verify(pid, log);
}

/*
 * A move that fails the way mremap(MREMAP_FIXED) can, its destination
 * unmapped before the error (test hook: the first of two moves): the hole
 * is reserved again in the freeze, so the areas the target maps after the
 * thaw (a new slot, while the dropper is made to sleep first) do not land
 * in the graveyard, to be emptied and unmapped by the dropper.
 */
Test(precopy, lazy_failed_move_leaves_no_hole, .init = setup, .fini = teardown,
     .timeout = 180)
{
	/* Two areas to move: slot 0 (THP, kept apart) and its counters with the sleeper's stack. */
	const char *args[] = { "--pages", "4096", "--hot", "256", "--thp", "--sleeper", NULL };
	char log[128], out[8192], err[8192], ps[16], d[128], pv[128], grow[160];
	const char *envs[] = { "UFFD_INJECT_TEST_FAIL_MOVE=1",
			       "UFFD_INJECT_TEST_DROPPER_DELAY_MS=1500",
			       "UFFD_INJECT_TEST_SIGNAL_AT=thawed", "UFFD_INJECT_TEST_SIGNAL=12",
			       grow, NULL };
	const char *la[] = { "lazy", "--pid", ps, "--images", d, "--socket", dmn.sock,
			     "--prev-images", pv, NULL };
	uint64_t a, b, stub;
	pid_t pid;
	int rc;

	daemon_on();
	pid = pcw_start("w", args, log, sizeof(log));
	predump(pid, "r1", NULL, out, sizeof(out));
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/lazy", tmp);
	snprintf(pv, sizeof(pv), "%s/r1", tmp);
	snprintf(grow, sizeof(grow), "UFFD_INJECT_TEST_WAIT_GROW=%s", log);
	rc = tool_envs(envs, la, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "lazy exit %d: %s", rc, err);
	cr_log_info("lazy: %s%s", out, err);
	cr_assert_not_null(strstr(out, "drop: 1 area "), "%s", out);
	grave_of(out, &a, &b, &stub);
	cr_assert(wait_count(log, "change new", 1, 20000), "no new slot: %s", slurp(log));
	cr_assert(!mapped(pid, a, b), "the graveyard 0x%" PRIx64 "-0x%" PRIx64 " is mapped", a, b);
	verify(pid, log);
	change(pid, log, 8);
	verify(pid, log);
}

/*
 * A resident range that runs past the end of a moved area, as the dump's
 * merge of touching ranges across areas makes (test hook: one page each
 * side of the first moved area's end): only the part in the area comes back
 * from the graveyard; the read does not run past it there.
 */
Test(precopy, lazy_eager_range_across_a_moved_area, .init = setup, .fini = teardown,
     .timeout = 120)
{
	const char *args[] = { "--pages", "4096", "--hot", "256", NULL };
	char log[128], out[8192], err[8192], ps[16], d[128], pv[128];
	const char *envs[] = { "UFFD_INJECT_TEST_EAGER_ACROSS=1", NULL };
	const char *la[] = { "lazy", "--pid", ps, "--images", d, "--socket", dmn.sock,
			     "--prev-images", pv, NULL };
	pid_t pid;
	int rc;

	daemon_on();
	pid = pcw_start("w", args, log, sizeof(log));
	predump(pid, "r1", NULL, out, sizeof(out));
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/lazy", tmp);
	snprintf(pv, sizeof(pv), "%s/r1", tmp);
	rc = tool_envs(envs, la, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "lazy exit %d: %s", rc, err);
	cr_assert_not_null(strstr(out, "drop: 1 area "), "%s", out);
	verify(pid, log);
	change(pid, log, 8);
	verify(pid, log);
}

/*
 * The dropper's munmap of the graveyard fails (test hook: an address not
 * aligned; its MADV_DONTNEEDs fail the same way): the graveyard is unmapped
 * after the thaw from the thread stopped to take the stub out, and the
 * stub with it; every byte right.
 */
Test(precopy, lazy_dropper_munmap_failing_is_done_after_it, .init = setup, .fini = teardown,
     .timeout = 120)
{
	const char *args[] = { "--pages", "4096", "--hot", "256", NULL };
	char log[128], out[8192], err[8192], ps[16], d[128];
	const char *envs[] = { "UFFD_INJECT_TEST_DROPPER_MUNMAP_FAIL=1", NULL };
	const char *la[] = { "lazy", "--pid", ps, "--images", d, "--socket", dmn.sock, NULL };
	uint64_t a, b, stub;
	pid_t pid;
	int rc;

	daemon_on();
	pid = pcw_start("w", args, log, sizeof(log));
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/lazy", tmp);
	rc = tool_envs(envs, la, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "lazy exit %d: %s", rc, err);
	cr_assert_not_null(strstr(out, "drop: 1 area "), "%s", out);
	cr_assert_null(strstr(err, "warning"), "%s", err);
	grave_of(out, &a, &b, &stub);
	cr_assert(!mapped(pid, a, b), "the graveyard 0x%" PRIx64 "-0x%" PRIx64 " is mapped", a, b);
	cr_assert(!mapped(pid, stub, stub + 8192), "the dropper's code is mapped");
	verify(pid, log);
	change(pid, log, 8);
	verify(pid, log);
}

/*
 * The tool killed inside that munmap of the graveyard, after the call and
 * before the thread's registers are back (test hook): the thread goes on
 * after the syscall instruction with our registers. There the stub has a
 * ud2: the target dies of SIGILL, where it used to run on into the
 * dropper's code (drop and unmap the graveyard's range, then exit: the
 * only thread, it would have ended with status 0, silently).
 */
Test(precopy, lazy_tool_killed_in_the_after_thaw_munmap_kills_the_target, .init = setup,
     .fini = teardown, .timeout = 120)
{
	const char *args[] = { "--pages", "4096", "--hot", "256", NULL };
	char log[128], out[8192], err[8192], ps[16], d[128];
	const char *envs[] = { "UFFD_INJECT_TEST_DROPPER_MUNMAP_FAIL=1",
			       "UFFD_INJECT_TEST_DIE_IN_MUNMAP=G", NULL };
	const char *la[] = { "lazy", "--pid", ps, "--images", d, "--socket", dmn.sock, NULL };
	pid_t pid;
	int rc, st;

	daemon_on();
	pid = pcw_start("w", args, log, sizeof(log));
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/lazy", tmp);
	rc = tool_envs(envs, la, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 128 + SIGKILL, "lazy exit %d: %s", rc, err);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	forget(pid);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGILL, "the target ended with 0x%x", st);
}

/* ---- lazy reads the areas before the freeze too (dump.c, preread()) ---- */

/*
 * lazy (after one pre-dump round into tmp/r1 when PREV, so that the
 * freeze's walk is the tracker's) with SIG sent to the target between the
 * read of its areas before the freeze and the freeze; its exit code, the
 * output in OUT and ERR.
 */
static int lazy_with_at(pid_t pid, const char *at, int sig, bool prev, const char *more,
			const char *log, char *out, size_t olen, char *err, size_t elen)
{
	char ps[16], d[128], pv[128], se[32], ge[160], ae[64];
	const char *envs[] = { ae, se, ge, more, NULL };
	const char *args[] = { "lazy", "--pid", ps, "--images", d, "--socket", dmn.sock,
			       prev ? "--prev-images" : NULL, pv, NULL };

	if (prev) {
		predump(pid, "r1", NULL, out, olen);
		verify(pid, log);
	}
	snprintf(ps, sizeof(ps), "%d", (int)pid);
	snprintf(d, sizeof(d), "%s/lazy", tmp);
	snprintf(pv, sizeof(pv), "%s/r1", tmp);
	snprintf(ae, sizeof(ae), "UFFD_INJECT_TEST_SIGNAL_AT=%s", at);
	snprintf(se, sizeof(se), "UFFD_INJECT_TEST_SIGNAL=%d", sig);
	snprintf(ge, sizeof(ge), "UFFD_INJECT_TEST_WAIT_GROW=%s", log);
	return tool_envs(envs, args, out, olen, err, elen);
}

/*
 * The tests of a change made between the read of the VmFlags before the
 * freeze and the freeze need that read to stand, which it does only while
 * the target's maps stay as they were. Built with ASan (make asan), the
 * target's own sanitizer runtime maps memory as its handler for the test's
 * signal runs, so the maps always changed and the read is made again,
 * frozen: there is nothing to test.
 */
static void preread_must_stand(void)
{
#if defined(__SANITIZE_ADDRESS__)
	cr_skip_test("built with ASan: the target's sanitizer runtime changes its maps between the two reads, so the read before the freeze never stands");
#endif
}

static int lazy_with(pid_t pid, int sig, bool prev, const char *log, char *out, size_t olen,
		     char *err, size_t elen)
{
	return lazy_with_at(pid, "preread", sig, prev, NULL, log, out, olen, err, elen);
}

/* How many areas of PID have VmFlags code FLAG (" um", " dc"...). */
static int flag_areas(pid_t pid, const char *flag)
{
	char path[64], *b, *p;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	b = slurp(path);
	for (p = b; (p = strstr(p, "VmFlags:")); p++) {
		char *e = strchr(p, '\n');

		if (e)
			*e = '\0';
		n += strstr(p, flag) != NULL;
		if (e)
			*e = '\n';
	}
	free(b);
	return n;
}

/*
 * A guard marker placed in a big area after its VmFlags were read (no
 * "gu" then): the freeze's walk of the area meets it, so the area is not
 * moved into the graveyard, which would take the marker with it and leave
 * the page to be served as a zero page. PREV: the walk is the tracker's
 * last scan (precopy.c; with MORE "UFFD_INJECT_TEST_SCAN_SPLIT=1", its
 * two threads); else dump_pages.c's.
 */
static void guard_after_the_read(bool prev, const char *more)
{
	const char *args[] = { "--pages", "4096", "--hot", "64", NULL };
	const char *dargs[] = { "--no-fill", NULL };
	char log[128], out[8192], err[8192];
	pid_t pid;
	int rc;

	preread_must_stand();
	daemon_with(dargs);
	pid = pcw_start("w", args, log, sizeof(log));
	rc = lazy_with_at(pid, "preread", SIGPWR, prev, more, log, out, sizeof(out), err,
			  sizeof(err));
	cr_assert_eq(rc, 0, "lazy exit %d: %s", rc, err);
	cr_log_info("lazy: %s", out);
	cr_assert_eq(count_in(log, "flags guard\n"), 1, "%s", slurp(log));
	cr_assert_not_null(strstr(out, "VmFlags read before the freeze"), "%s", out);
	/* Slot 0 (16 MiB) stayed where it was, for its guard; the counters are too small. */
	cr_assert_not_null(strstr(out, "drop: in the freeze (the areas big enough may hold "
				  "guard markers"), "%s", out);
	/* The check after the thaw sees the marker too. */
	cr_assert_not_null(strstr(out, "checked again after the thaw: changed"), "%s", out);
	cr_assert_not_null(strstr(err, "guard markers now"), "%s", err);
	/* Every byte, and the guard page still no page: no fault, EFAULT. */
	verify(pid, log);
}

Test(precopy, lazy_guard_placed_after_the_read_is_not_moved, .init = setup, .fini = teardown,
     .timeout = 120)
{
	guard_after_the_read(true, NULL);
}

Test(precopy, lazy_split_scan_guard_placed_after_the_read_is_not_moved, .init = setup,
     .fini = teardown, .timeout = 120)
{
	guard_after_the_read(true, "UFFD_INJECT_TEST_SCAN_SPLIT=1");
}

Test(precopy, lazy_plain_guard_placed_after_the_read_is_not_moved, .init = setup,
     .fini = teardown, .timeout = 120)
{
	guard_after_the_read(false, NULL);
}

/*
 * A big area registered with a userfaultfd of the target's own after its
 * VmFlags were read, the fd kept by another process (its fd table shows
 * nothing): the hand-over is refused before the area moves, and the
 * target's registration stays (a move and a move back would have lost it).
 */
Test(precopy, lazy_uffd_registered_after_the_read_is_refused, .init = setup, .fini = teardown,
     .timeout = 120)
{
	const char *args[] = { "--pages", "4096", "--hot", "64", NULL };
	char log[128], out[8192], err[8192];
	pid_t pid;
	int rc;

	preread_must_stand();
	daemon_on();
	pid = pcw_start("w", args, log, sizeof(log));
	cr_assert_eq(flag_areas(pid, " um"), 0);
	rc = lazy_with(pid, SIGVTALRM, false, log, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 1, "lazy exit %d: %s%s", rc, out, err);
	cr_assert_eq(count_in(log, "flags uffd\n"), 1, "%s", slurp(log));
	cr_assert_eq(flag_areas(pid, " um"), 1, "the target's own registration is gone: %s", err);
	cr_assert_not_null(strstr(err, "registered with a userfaultfd of its own"), "%s", err);
	cr_assert_not_null(strstr(err, "memory is back in place"), "%s", err);
	verify(pid, log);
}

/*
 * An mlock between the read of VmLck and the walk of smaps before the
 * freeze (test hook "locked"): VmLck moves from that read to the freeze,
 * so the areas are read again frozen and the locked area refused.
 */
Test(precopy, lazy_mlock_between_the_two_reads_is_seen, .init = setup, .fini = teardown,
     .timeout = 120)
{
	const char *args[] = { "--pages", "4096", "--hot", "64", NULL };
	char log[128], out[8192], err[8192];
	pid_t pid;
	int rc;

#if defined(__SANITIZE_ADDRESS__)
	cr_skip_test("under ASan the target's runtime changes its areas between the reads");
#endif
	daemon_on();
	pid = pcw_start("w", args, log, sizeof(log));
	rc = lazy_with_at(pid, "locked", SIGURG, false, NULL, log, out, sizeof(out), err,
			  sizeof(err));
	cr_assert_eq(count_in(log, "flags mlock\n"), 1, "%s", slurp(log));
	cr_assert_eq(rc, 1, "lazy exit %d: %s%s", rc, out, err);
	cr_assert_not_null(strstr(err, "is locked in memory"), "%s", err);
	verify(pid, log);
}

/*
 * MADV_DONTFORK of a big area after its VmFlags were read, then a failed
 * hand-over (the first registration fails, test hook) after the area was
 * moved: it comes back still MADV_DONTFORK, as it was at the freeze.
 */
Test(precopy, lazy_dontfork_after_the_read_survives_a_move_back, .init = setup,
     .fini = teardown, .timeout = 120)
{
	const char *args[] = { "--pages", "4096", "--hot", "64", NULL };
	char log[128], out[8192], err[8192];
	pid_t pid;
	int rc;

	daemon_on();
	pid = pcw_start("w", args, log, sizeof(log));
	cr_assert_eq(flag_areas(pid, " dc"), 0);
	rc = lazy_with_at(pid, "preread", SIGPROF, false, "UFFD_INJECT_TEST_FAIL_REGISTER=1", log,
			  out, sizeof(out), err, sizeof(err));
	cr_assert_eq(count_in(log, "flags dontfork\n"), 1, "%s", slurp(log));
	cr_assert_eq(rc, 1, "lazy exit %d: %s%s", rc, out, err);
	cr_assert_not_null(strstr(err, "memory is back in place"), "%s", err);
	cr_assert_eq(flag_areas(pid, " dc"), 1, "MADV_DONTFORK lost in the move back");
	verify(pid, log);
}

/*
 * MADV_WIPEONFORK of a big area after its VmFlags were read: the area is
 * handed over lazily, where read frozen it would have stayed resident. The
 * check after the thaw says so (a later fork's child would be served the
 * parent's pages there), and the target's own bytes are all right.
 */
Test(precopy, lazy_wipeonfork_after_the_read_is_said, .init = setup, .fini = teardown,
     .timeout = 120)
{
	const char *args[] = { "--pages", "4096", "--hot", "64", NULL };
	char log[128], out[8192], err[8192];
	pid_t pid;
	int rc;

	preread_must_stand();
	daemon_on();
	pid = pcw_start("w", args, log, sizeof(log));
	rc = lazy_with(pid, SIGXCPU, false, log, out, sizeof(out), err, sizeof(err));
	cr_assert_eq(rc, 0, "lazy exit %d: %s", rc, err);
	cr_assert_eq(count_in(log, "flags wipeonfork\n"), 1, "%s", slurp(log));
	cr_assert_not_null(strstr(out, "checked again after the thaw: changed"), "%s", out);
	cr_assert_not_null(strstr(err, "warning"), "%s", err);
	cr_assert_not_null(strstr(err, " wf"), "%s", err);
	cr_assert_not_null(strstr(err, "not zeros"), "%s", err);
	verify(pid, log);
}
