/*
 * Restart: a new daemon on the same socket takes back every process the
 * one before served (restart.h). The processes here keep no copy of their
 * uffd: only the daemon and its keeper hold it, as for a forked child. The
 * daemon dies by SIGKILL, leaves on SIGUSR2, or is replaced by another
 * build; every byte of every process is compared against the images (or
 * zero where the process dropped it), in the processes themselves.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tserve.h"

#define BASE	0x520000000000ull
#define MOVED	0x530000000000ull	/* where processes move areas to */
#define SEED	0x5eedbeefull
#define MiB	(1ull << 20)

static struct ts_daemon dmn;
static char imgdir[160];
static pid_t keepers[512];
static int nkeepers;

/* Note the keeper of the daemon running now (to end it, should the test fail). */
static void note_keeper(void)
{
	pid_t k = ts_keeper_pid(&dmn);

	if (k > 0 && nkeepers < 512)
		keepers[nkeepers++] = k;
}

static void setup(const struct ts_area *areas, int n, const char *const *args)
{
	nkeepers = 0;
	ts_daemon_start(&dmn, args);
	note_keeper();
	snprintf(imgdir, sizeof(imgdir), "%s/img", dmn.dir);
	ts_write_images(imgdir, TS_IMAGE_ID, areas, n, SEED);
}

/* The last daemon exits cleanly; no keeper we started outlives the test. */
static void teardown(void)
{
	cr_expect(ts_daemon_finish(&dmn, 20000), "uffd-manager did not exit cleanly");
	for (int i = 0; i < nkeepers; i++) {
		for (int t = 0; t < 200 && kill(keepers[i], 0) == 0; t++)
			usleep(10000);
		if (kill(keepers[i], 0) == 0) {
			cr_expect_fail("keeper %d still runs after its processes were done", keepers[i]);
			kill(keepers[i], SIGKILL);	/* ours: started by a daemon we started */
		}
	}
}

/* Kill the daemon (SIG) and start another on its socket (BIN, or ours). */
static void replace_daemon(int sig, const char *bin, const char *const *args)
{
	int st;

	kill(dmn.pid, sig);
	st = ts_daemon_wait(&dmn, 10000);
	cr_assert_neq(st, -1, "the daemon did not go on signal %d", sig);
	if (sig == SIGUSR2)
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGUSR2: exit status %d", st);
	ts_daemon_again(&dmn, bin, args);
	note_keeper();
}

#define STATUS_UNTIL(s, cond)                                                  \
	do {                                                                   \
		int tries_;                                                    \
		for (tries_ = 0; tries_ < 2000; tries_++) {                    \
			cr_assert_eq(ts_status_get(&dmn, &(s)), 0);            \
			if (cond)                                              \
				break;                                         \
			ts_status_free(&(s));                                  \
			usleep(5000);                                          \
		}                                                              \
		cr_assert_lt(tries_, 2000, "status never got to: %s", #cond);  \
	} while (0)

static const struct ts_area one8[] = { { BASE, 8 * MiB, 7 } };

/* The "N pages were in already" of the new daemon's log, or -1. */
static long pages_in_already(void)
{
	char buf[1 << 16], *p;
	FILE *f = fopen(dmn.log, "re");
	size_t n;

	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	p = strstr(buf, " pages were in already");
	if (!p)
		return -1;
	while (p > buf && p[-1] >= '0' && p[-1] <= '9')
		p--;
	return atol(p);
}

/*
 * What a process did before the daemon goes: it read the first quarter,
 * dropped [1/8, 3/8) (half of it read before, half never), moved
 * [1/2, 5/8) to MOVED, and forked a child that checks after the restart.
 */
#define DROP_OFF	(one8[0].len / 8)
#define DROP_LEN	(one8[0].len / 4)
#define MOVE_OFF	(one8[0].len / 2)
#define MOVE_LEN	(one8[0].len / 8)

/* Check everything that process has, after what it did. */
static int check_after(const struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	uint64_t s = a->start;
	long bad = 0;

	bad += ts_check(s, DROP_OFF, s, a, c->seed);
	bad += ts_check_zero(s + DROP_OFF, DROP_LEN);
	bad += ts_check(s + DROP_OFF + DROP_LEN, MOVE_OFF - DROP_OFF - DROP_LEN,
			s + DROP_OFF + DROP_LEN, a, c->seed);
	bad += ts_check(MOVED, MOVE_LEN, s + MOVE_OFF, a, c->seed);
	bad += ts_check(s + MOVE_OFF + MOVE_LEN, a->len - MOVE_OFF - MOVE_LEN,
			s + MOVE_OFF + MOVE_LEN, a, c->seed);
	return bad != 0;
}

static int sc_events_then_restart(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	int p[2], st, bad;
	pid_t kid;
	char b;

	if (ts_check(a->start, a->len / 4, a->start, a, c->seed))
		return 1;
	if (madvise((void *)(uintptr_t)(a->start + DROP_OFF), DROP_LEN, MADV_DONTNEED) < 0)
		return ts_fail("madvise: %s", strerror(errno));
	if (mremap((void *)(uintptr_t)(a->start + MOVE_OFF), MOVE_LEN, MOVE_LEN,
		   MREMAP_MAYMOVE | MREMAP_FIXED, (void *)(uintptr_t)MOVED) == MAP_FAILED)
		return ts_fail("mremap: %s", strerror(errno));
	if (pipe(p) < 0)
		return ts_fail("pipe");
	kid = fork();
	if (kid == 0) {
		if (read(p[0], &b, 1) != 1) {
		}
		_exit(check_after(c));
	}
	ts_wait_go(c);	/* the daemon is replaced meanwhile */
	if (write(p[1], "G", 1) != 1) {
	}
	bad = check_after(c);
	if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st))
		bad = 1;
	return bad;
}

/*
 * Hand over, do the events, replace the daemon by SIG (BIN: another
 * build), go on: every byte right, the counters carried over.
 */
static void run_events_then_restart(int sig, const char *bin, const char *const *args,
				    bool fill)
{
	struct ts_child c = { .d = &dmn, .areas = one8, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;

	setup(one8, 1, args);
	pid = ts_child_start(&c, sc_events_then_restart);
	if (fill) {
		/*
		 * The fork is read (so recorded), or the fill served the parent
		 * before it forked; either way the kill comes while the fill runs.
		 */
		for (int i = 0; i < 2000 && !ts_log_has(&dmn, "forked:") &&
				!ts_log_has(&dmn, "fully served"); i++)
			usleep(5000);
		cr_assert(ts_log_has(&dmn, "forked:") || ts_log_has(&dmn, "fully served"),
			  "the daemon never read the fork nor served the parent");
		replace_daemon(sig, bin, args);
		cr_assert(ts_log_has(&dmn, "restart 1: took back"), "the new daemon took nothing back");
		ts_say_go(&c);
		cr_assert_eq(ts_child_wait(pid, 60000), 0,
			     "after the restart: dropped pages must read zero, moved ones their data, the rest data");
		return;
	}
	/* Both processes served, every event read (so recorded). */
	STATUS_UNTIL(s, s.n == 2 && ts_status_pid(&s, pid) &&
		     ts_status_pid(&s, pid)->ev_remove >= 1 && ts_status_pid(&s, pid)->ev_remap >= 1 &&
		     ts_status_pid(&s, pid)->ev_fork == 1);
	ts_status_free(&s);
	replace_daemon(sig, bin, args);
	cr_assert(ts_log_has(&dmn, "took back 2 processes"), "the new daemon took back no processes");
	/*
	 * The pages the parent had were found (pagemap), not copied again: most
	 * of the 256 it read and kept (the child's too, if its pid was known).
	 */
	cr_expect_geq(pages_in_already(), 128, "the scan found only %ld pages in already",
		      pages_in_already());
	/* Counters carried over, and the adoption said so. */
	STATUS_UNTIL(s, s.n >= 1 && ts_status_pid(&s, pid));
	{
		const StatusTarget *t = ts_status_pid(&s, pid);

		cr_expect_geq(t->ev_remove, 1, "REMOVE count not carried over");
		cr_expect_geq(t->ev_remap, 1, "REMAP count not carried over");
		cr_expect_eq(t->ev_fork, 1, "FORK count not carried over");
		cr_expect_geq(t->pages_copied, one8[0].len / 4 / TS_PAGE * 6 / 7,
			      "pages copied before the restart not carried over (%" PRIu64 ")",
			      t->pages_copied);
		cr_expect(t->has_adopted && t->adopted == 1, "not shown as adopted");
		cr_expect(s.tot->has_restarts && s.tot->restarts == 1);
		cr_expect(s.tot->has_adopted && s.tot->adopted == 2);
	}
	ts_status_free(&s);
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 60000), 0,
		     "after the restart: dropped pages must read zero, moved ones their data, the rest data");
}

Test(restart, sigkill_events_every_byte, .timeout = 120, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };

	run_events_then_restart(SIGKILL, NULL, args, false);
}

Test(restart, sigkill_with_fill, .timeout = 120, .fini = teardown)
{
	const char *args[] = { "--fill-chunk", "16K", NULL };

	run_events_then_restart(SIGKILL, NULL, args, true);
}

Test(restart, sigusr2_planned, .timeout = 120, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };

	run_events_then_restart(SIGUSR2, NULL, args, false);
	cr_expect(ts_log_has(&dmn, "took back 2 processes"));
}

Test(restart, upgrade_to_another_build, .timeout = 120, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };
	char alt[256];
	const char *build = getenv("UFFD_TEST_BUILD");

	snprintf(alt, sizeof(alt), "%s/alt/uffd-manager", build ? build : TEST_BUILDDIR);
	cr_assert_eq(access(alt, X_OK), 0, "%s is not built (make check builds it)", alt);
	run_events_then_restart(SIGUSR2, alt, args, false);
	cr_expect(ts_log_has(&dmn, "uffd-manager 0.1.0+alt"), "the other build did not take over");
}

/* Twice in a row: the journal a new daemon writes lets a third take over too. */
Test(restart, twice, .timeout = 120, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };
	struct ts_child c = { .d = &dmn, .areas = one8, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_status s;
	pid_t pid;

	setup(one8, 1, args);
	pid = ts_child_start(&c, sc_events_then_restart);
	STATUS_UNTIL(s, s.n == 2 && ts_status_pid(&s, pid) && ts_status_pid(&s, pid)->ev_fork == 1);
	ts_status_free(&s);
	replace_daemon(SIGKILL, NULL, args);
	replace_daemon(SIGKILL, NULL, args);
	cr_assert(ts_log_has(&dmn, "took back 2 processes"));
	STATUS_UNTIL(s, s.n >= 1 && ts_status_pid(&s, pid));
	cr_expect_eq(ts_status_pid(&s, pid)->adopted, 2);
	cr_expect_eq(s.tot->restarts, 2);
	ts_status_free(&s);
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 60000), 0);
}

/*
 * The randomized test: processes that fault, fork, mremap and DONTNEED at
 * random, each keeping a shadow of what every page must hold (its data, or
 * zero once dropped), while the daemon is killed at random points and a
 * new one takes over, with the fill on now and then. Each process checks
 * every page it reads and, at the end, every page; each reports on a pipe.
 * A process may be killed by a new daemon only in the one case it cannot
 * rebuild (the daemon before died inside the read of its events), and then
 * the log names it.
 */
static const struct ts_area churn16[] = { { BASE, 16 * MiB, 5 } };
#define CH_PAGES	(16 * MiB / TS_PAGE)
#define CH_KEEP		(CH_PAGES * 3 / 4)	/* pages from here on are moved to MOVED */
#define CH_AWAY		0x540000000000ull	/* where chunks go and come back from */

struct churn {
	struct ts_child *c;
	int results;		/* write end: "S pid" at start, "E pid ok|bad" at the end */
	uint8_t data[CH_PAGES];	/* 1: the page holds its image data; 0: zero (dropped) */
	unsigned seed;
	int depth;
};

static uint64_t ch_addr(uint64_t i)
{
	return i < CH_KEEP ? BASE + i * TS_PAGE : MOVED + (i - CH_KEEP) * TS_PAGE;
}

/* Check pages [I, I + N) against the shadow. */
static long ch_check(struct churn *ch, uint64_t i, uint64_t n)
{
	long bad = 0;

	for (uint64_t k = i; k < i + n && k < CH_PAGES; k++)
		bad += ch->data[k] ? ts_check(ch_addr(k), TS_PAGE, BASE + k * TS_PAGE, &churn16[0], SEED) :
				     ts_check_zero(ch_addr(k), TS_PAGE);
	return bad;
}

static void ch_report(struct churn *ch, char what, const char *how)
{
	char line[64];
	int n = snprintf(line, sizeof(line), "%c %d %s\n", what, (int)getpid(), how);

	if (write(ch->results, line, (size_t)n) != n) {
	}
}

static bool ch_stopped(const struct churn *ch)
{
	struct pollfd p = { .fd = ch->c->go[0], .events = POLLIN };

	return poll(&p, 1, 0) == 1;	/* never read: every process sees it */
}

/* One process's loop; returns its exit code. */
static int ch_run(struct churn *ch)
{
	pid_t kids[4];
	int nkids = 0, bad = 0, st;

	ch_report(ch, 'S', "");
	while (!ch_stopped(ch) && !bad) {
		unsigned op = (unsigned)rand_r(&ch->seed) % 9;
		uint64_t i = (uint64_t)rand_r(&ch->seed) % CH_PAGES;
		uint64_t n = 1 + (uint64_t)rand_r(&ch->seed) % 32;

		if (op <= 3) {
			bad = ch_check(ch, i, n) != 0;
		} else if (op == 4) {
			/* Within one mapping: the kept part, or the moved one. */
			uint64_t end = i < CH_KEEP ? CH_KEEP : CH_PAGES;

			if (i + n > end)
				n = end - i;
			if (madvise((void *)(uintptr_t)ch_addr(i), n * TS_PAGE, MADV_DONTNEED) < 0)
				bad = ts_fail("madvise: %s", strerror(errno));
			memset(&ch->data[i], 0, n);
		} else if (op == 5 && i + n <= CH_KEEP) {
			void *at = (void *)(uintptr_t)ch_addr(i);

			if (mremap(at, n * TS_PAGE, n * TS_PAGE, MREMAP_MAYMOVE | MREMAP_FIXED,
				   (void *)(uintptr_t)CH_AWAY) == MAP_FAILED ||
			    mremap((void *)(uintptr_t)CH_AWAY, n * TS_PAGE, n * TS_PAGE,
				   MREMAP_MAYMOVE | MREMAP_FIXED, at) == MAP_FAILED)
				bad = ts_fail("mremap: %s", strerror(errno));
		} else if (op == 6 && ch->depth < 2 && nkids < 2 && rand_r(&ch->seed) % 8 == 0) {
			pid_t kid = fork();

			if (kid == 0) {
				ch->depth++;
				ch->seed = ch->seed * 7919u + (unsigned)getpid();
				_exit(ch_run(ch));
			}
			if (kid > 0)
				kids[nkids++] = kid;
		} else {
			usleep((useconds_t)(rand_r(&ch->seed) % 2000));
		}
	}
	if (!bad)
		bad = ch_check(ch, 0, CH_PAGES) != 0;
	/* Each child reports for itself (a killed one is judged from the logs). */
	for (int k = 0; k < nkids; k++)
		waitpid(kids[k], &st, 0);
	ch_report(ch, 'E', bad ? "bad" : "ok");
	return bad;
}

static int sc_churn(struct ts_child *c)
{
	struct churn *ch = malloc(sizeof(*ch));

	if (!ch)
		return ts_fail("malloc");
	ch->c = c;
	ch->results = *(int *)c->arg;
	ch->seed = (unsigned)getpid() * 2654435761u;
	ch->depth = 0;
	memset(ch->data, 1, sizeof(ch->data));
	for (uint64_t i = 0; i < CH_PAGES; i++)
		ch->data[i] = 1;
	if (mremap((void *)(uintptr_t)(BASE + CH_KEEP * TS_PAGE), (CH_PAGES - CH_KEEP) * TS_PAGE,
		   (CH_PAGES - CH_KEEP) * TS_PAGE, MREMAP_MAYMOVE | MREMAP_FIXED,
		   (void *)(uintptr_t)MOVED) == MAP_FAILED)
		return ts_fail("mremap: %s", strerror(errno));
	return ch_run(ch);
}

/* Does any daemon log (of this test's socket) say it killed PID? */
static bool some_log_killed(pid_t pid)
{
	char needle[64], path[sizeof(dmn.log)];

	snprintf(needle, sizeof(needle), "pid %d", (int)pid);
	for (unsigned g = 0; g <= dmn.gen; g++) {
		struct ts_daemon d = dmn;

		if (g)
			snprintf(path, sizeof(path), "%.64s/manager.%u.log", dmn.dir, g);
		else
			snprintf(path, sizeof(path), "%.64s/manager.log", dmn.dir);
		snprintf(d.log, sizeof(d.log), "%s", path);
		if (ts_log_has(&d, needle) && ts_log_has(&d, "so that it never reads a wrong byte"))
			return true;
	}
	return false;
}

Test(restart, random_kills, .timeout = 1800, .fini = teardown)
{
	const char *nofill[] = { "--no-fill", NULL };
	const char *fill[] = { "--fill-chunk", "8K", NULL };
	const char *env = getenv("UFFD_RESTART_KILLS");
	int kills = env ? atoi(env) : 20, res[2], nproc = 3, started = 0, ok = 0, killed = 0;
	struct ts_child c[3];
	pid_t pids[3], spids[1024];
	bool ended[1024] = { false };
	unsigned seed = (unsigned)time(NULL);
	char buf[1 << 16];
	size_t have = 0;
	const char *build = getenv("UFFD_TEST_BUILD");
	char alt[256];

	cr_log_info("random_kills: %d kills, seed %u", kills, seed);
	setup(churn16, 1, nofill);
	cr_assert_eq(pipe2(res, O_CLOEXEC), 0);
	for (int k = 0; k < nproc; k++) {
		c[k] = (struct ts_child){ .d = &dmn, .areas = churn16, .n = 1, .seed = SEED,
					  .imgdir = imgdir, .arg = &res[1] };
		pids[k] = ts_child_start(&c[k], sc_churn);
	}
	close(res[1]);
	snprintf(alt, sizeof(alt), "%s/alt/uffd-manager", build ? build : TEST_BUILDDIR);
	for (int k = 0; k < kills; k++) {
		usleep(20000 + (useconds_t)(rand_r(&seed) % 200000));
		/*
		 * Mostly SIGKILL; every fifth a planned restart (SIGUSR2), every
		 * seventh the other build taking over. The fill serves everything
		 * in milliseconds: on only in the last fifth.
		 */
		replace_daemon(k % 5 == 1 ? SIGUSR2 : SIGKILL, k % 7 == 3 ? alt : NULL,
			       k >= kills - kills / 5 - 1 ? fill : nofill);
	}
	usleep(200000);
	for (int k = 0; k < nproc; k++)
		ts_say_go(&c[k]);
	/* Every report, until the last process closes the pipe. */
	for (;;) {
		struct pollfd p = { .fd = res[0], .events = POLLIN };
		ssize_t n;

		cr_assert_eq(poll(&p, 1, 120000), 1, "processes still running 120 s after the stop");
		n = read(res[0], buf + have, sizeof(buf) - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
		cr_assert_lt(have, sizeof(buf) - 1);
	}
	buf[have] = 0;
	close(res[0]);
	for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n")) {
		int pid = 0;
		char how[16] = "";

		if (l[0] == 'S' && sscanf(l, "S %d", &pid) == 1 && started < 1024) {
			spids[started++] = pid;
		} else if (l[0] == 'E' && sscanf(l, "E %d %15s", &pid, how) == 2) {
			cr_expect_str_eq(how, "ok", "process %d read a wrong byte", pid);
			for (int k = 0; k < started; k++)
				if (spids[k] == pid)
					ended[k] = true;
			ok += !strcmp(how, "ok");
		}
	}
	for (int k = 0; k < started; k++) {
		if (ended[k])
			continue;
		cr_expect(some_log_killed(spids[k]),
			  "process %d never reported, and no daemon says it killed it", spids[k]);
		killed++;
	}
	for (int k = 0; k < nproc; k++)
		ts_child_wait(pids[k], 30000);
	cr_log_info("random_kills: %d kills; %d processes (forks included), %d right to the end, %d killed by a new daemon (named in its log)",
		    kills, started, ok, killed);
	fprintf(stderr, "random_kills: %d kills; %d processes (forks included), %d right to the end, %d killed by a new daemon (named in its log)\n",
		kills, started, ok, killed);
	cr_expect_geq(started, nproc);
	cr_expect_eq(ok + killed, started);
	if (ok + killed != started || ok < started - killed)
		setenv("UFFD_TEST_KEEP", "1", 1);	/* keep every daemon's log for a look */
}

/*
 * The daemon dies inside a read of an event (UFFD_TEST_DIE_IN_READ: it
 * kills itself with SIGKILL right after read(2) returned, before recording
 * anything, as a SIGKILL landing in the read would leave it). The event is
 * complete for the process (its madvise returned, its fork went on), so it
 * is in the journal's read buffer alone: the keeper records it, and the new
 * daemon serves zeros where the process dropped its pages, and the child
 * the fork made, every byte.
 */
static void run_die_in_read(const char *event)
{
	const char *args[] = { "--no-fill", NULL };
	struct ts_child c = { .d = &dmn, .areas = one8, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct ts_daemon old;
	pid_t pid;
	int st;

	setenv("UFFD_TEST_DIE_IN_READ", event, 1);
	setup(one8, 1, args);
	unsetenv("UFFD_TEST_DIE_IN_READ");
	pid = ts_child_start(&c, sc_events_then_restart);
	st = ts_daemon_wait(&dmn, 30000);
	cr_assert(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
		  "the daemon did not die in its read of a %s (wait status %d)", event, st);
	old = dmn;
	/* The keeper notices, records what the read held, and waits for us. */
	for (int i = 0; i < 500 && !ts_log_has(&old, "messages are recorded"); i++)
		usleep(10000);
	cr_assert(ts_log_has(&old, "the daemon died reading the uffd of process"),
		  "the keeper did not record the read the daemon died in");
	ts_daemon_again(&dmn, NULL, args);
	note_keeper();
	/* Before a fork, only the parent exists; after one, its child too. */
	cr_assert(ts_log_has(&dmn, strcmp(event, "fork") ? "took back 1 processes" : "took back 2 processes"),
		  "the new daemon did not take back every process");
	cr_expect(!ts_log_has(&dmn, "killing it"), "the new daemon killed a process");
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 60000), 0,
		     "after a death inside the read of a %s: dropped pages must read zero, moved ones their data, the rest data",
		     event);
}

Test(restart, killed_inside_the_read_of_a_remove, .timeout = 120, .fini = teardown)
{
	run_die_in_read("remove");
}

Test(restart, killed_inside_the_read_of_a_fork, .timeout = 120, .fini = teardown)
{
	run_die_in_read("fork");
}

Test(restart, killed_inside_the_read_of_a_remap, .timeout = 120, .fini = teardown)
{
	run_die_in_read("remap");
}

/* A second daemon on the socket of one that lives takes nothing, and says why. */
Test(restart, refused_while_the_daemon_lives, .timeout = 120, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };
	struct ts_child c = { .d = &dmn, .areas = one8, .n = 1, .seed = SEED, .imgdir = imgdir };
	const char *build = getenv("UFFD_TEST_BUILD");
	char bin[256], log[sizeof(dmn.log)];
	struct ts_status s;
	pid_t pid, second;
	int st;

	setup(one8, 1, args);
	pid = ts_child_start(&c, sc_events_then_restart);
	STATUS_UNTIL(s, s.n == 2);
	ts_status_free(&s);
	snprintf(bin, sizeof(bin), "%s/uffd-manager", build ? build : TEST_BUILDDIR);
	snprintf(log, sizeof(log), "%.64s/second.log", dmn.dir);
	second = fork();
	if (second == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		dup2(fd, 2);
		execl(bin, bin, "--socket", dmn.sock, "--no-fill", (char *)NULL);
		_exit(127);
	}
	cr_assert_eq(waitpid(second, &st, 0), second);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "the second daemon: wait status %d", st);
	{
		struct ts_daemon d2 = dmn;

		snprintf(d2.log, sizeof(d2.log), "%s", log);
		cr_expect(ts_log_has(&d2, "another manager is listening"), "the second daemon did not say why");
		cr_expect(!ts_log_has(&d2, "took back"), "the second daemon took processes from a live one");
	}
	/* The first serves on, untouched. */
	STATUS_UNTIL(s, s.n == 2);
	ts_status_free(&s);
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 60000), 0);
}

/*
 * A new daemon dies half way through the take-over (with everything the
 * keeper sent in its table, before it says so): the old keeper keeps it
 * all, and the next daemon takes over, every byte right.
 */
Test(restart, new_daemon_dies_taking_over, .timeout = 120, .fini = teardown)
{
	const char *args[] = { "--no-fill", NULL };
	struct ts_child c = { .d = &dmn, .areas = one8, .n = 1, .seed = SEED, .imgdir = imgdir };
	const char *build = getenv("UFFD_TEST_BUILD");
	char bin[256], log[sizeof(dmn.log)];
	struct ts_status s;
	pid_t pid, half;
	int st;

	setup(one8, 1, args);
	pid = ts_child_start(&c, sc_events_then_restart);
	STATUS_UNTIL(s, s.n == 2 && ts_status_pid(&s, pid) && ts_status_pid(&s, pid)->ev_fork == 1);
	ts_status_free(&s);
	kill(dmn.pid, SIGKILL);
	cr_assert_neq(ts_daemon_wait(&dmn, 10000), -1);
	/* The daemon that dies half way. */
	snprintf(bin, sizeof(bin), "%s/uffd-manager", build ? build : TEST_BUILDDIR);
	snprintf(log, sizeof(log), "%.64s/half.log", dmn.dir);
	half = fork();
	if (half == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		dup2(fd, 2);
		setenv("UFFD_TEST_DIE_IN_ADOPT", "1", 1);
		execl(bin, bin, "--socket", dmn.sock, "--no-fill", "-v", (char *)NULL);
		_exit(127);
	}
	cr_assert_eq(waitpid(half, &st, 0), half);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the half-way daemon: wait status %d", st);
	{
		struct ts_daemon d2 = dmn;
		pid_t k;

		snprintf(d2.log, sizeof(d2.log), "%s", log);
		k = ts_keeper_pid(&d2);	/* its own keeper: ours to end if it lingers */
		if (k > 0 && nkeepers < 512)
			keepers[nkeepers++] = k;
	}
	ts_daemon_again(&dmn, NULL, args);
	note_keeper();
	cr_assert(ts_log_has(&dmn, "took back 2 processes"), "the next daemon took nothing back");
	ts_say_go(&c);
	cr_assert_eq(ts_child_wait(pid, 60000), 0);
}

#define NOBODY	65534

/* Let everyone read DIR and the files in it (the images are written 0600). */
static void set_mode(const char *dir, mode_t files, mode_t self)
{
	struct dirent *de;
	DIR *dp = opendir(dir);
	char path[512];

	cr_assert_not_null(dp, "%s", dir);
	while ((de = readdir(dp))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		chmod(path, files);
	}
	closedir(dp);
	cr_assert_eq(chmod(dir, self), 0);
}

/*
 * A client that is not root: the new daemon reads its images again as that
 * client. Readable: taken back, every byte right. Made unreadable after the
 * hand-over: killed, named, never served from what it could not read.
 */
static void run_as_nobody(bool readable)
{
	const char *args[] = { "--no-fill", NULL };
	struct ts_child c = { .d = &dmn, .areas = one8, .n = 1, .seed = SEED, .imgdir = imgdir,
			      .as_uid = NOBODY };
	struct ts_status s;
	pid_t pid;
	int ret;

	setup(one8, 1, args);
	cr_assert_eq(chmod(dmn.dir, 0755), 0);
	cr_assert_eq(chmod(dmn.sock, 0666), 0);
	set_mode(imgdir, 0644, 0755);
	pid = ts_child_start(&c, sc_events_then_restart);
	STATUS_UNTIL(s, s.n == 2 && ts_status_pid(&s, pid) && ts_status_pid(&s, pid)->ev_fork == 1);
	ts_status_free(&s);
	if (!readable)
		set_mode(imgdir, 0600, 0700);	/* root's alone now */
	replace_daemon(SIGKILL, NULL, args);
	signal(SIGPIPE, SIG_IGN);	/* a killed child is gone before its word to go */
	ts_say_go(&c);
	ret = ts_child_wait(pid, 60000);
	if (readable) {
		cr_assert(ts_log_has(&dmn, "took back 2 processes"));
		cr_assert_eq(ret, 0, "after the restart, as uid %d: every byte", NOBODY);
	} else {
		cr_expect_eq(ret, -SIGKILL, "a process whose images the new daemon cannot read as its client: exit %d", ret);
		cr_expect(ts_log_has(&dmn, "its images cannot be read again") &&
			  ts_log_has(&dmn, "Permission denied"),
			  "the new daemon does not say why it killed the process");
	}
}

Test(restart, client_not_root, .timeout = 120, .fini = teardown)
{
	run_as_nobody(true);
}

Test(restart, client_not_root_images_now_unreadable, .timeout = 120, .fini = teardown)
{
	run_as_nobody(false);
}
