/*
 * The daemon out of fds. A fork event's read installs the child's new uffd
 * in the daemon's fd table; with no room the read fails (EMFILE) and the
 * kernel keeps the event queued, the forking process waiting. The daemon
 * must read it again once fds are free, never let the process go (its
 * missing pages would read zeros).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "tserve.h"

#define BASE	0x520000000000ull
#define SEED	0x5eedf00dull
#define MiB	(1ull << 20)
#define CONNS	100	/* more than the daemon has room for under LOW_FDS */
#define LOW_FDS	64
#define KIDS	(DAEMON_FD_RESERVE + 1)	/* one fork more than the daemon keeps fds for */

static struct ts_daemon dmn;
static char imgdir[160];
static pid_t child;
static int conns[CONNS];

static const struct ts_area one2[] = { { BASE, 2 * MiB, 3 } };

/* Our child never left waiting on a fork the daemon will not read; then the daemon. */
static void teardown(void)
{
	for (int i = 0; i < CONNS; i++)
		if (conns[i] > 0)
			close(conns[i]);
	if (child > 0)
		ts_child_wait(child, 1);	/* killed if it still runs */
	cr_expect(ts_daemon_finish(&dmn, 10000), "uffd-manager did not exit cleanly");
}

/* A connection to the daemon that says nothing. */
static int conn_open(void)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	strcpy(addr.sun_path, dmn.sock);
	cr_assert_eq(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0, "connect: %s",
		     strerror(errno));
	return fd;
}

/*
 * Read the first half, wait for the word, fork KIDS children that wait for
 * the last fork before they check every byte; then the parent checks. Each
 * fork takes one fd of the daemon's until its child is served: the last
 * one finds the reserve spent.
 */
static int sc_fork_when_told(struct ts_child *c)
{
	const struct ts_area *a = &c->areas[0];
	pid_t kid[KIDS];
	int st, bad, p[2];
	char b;

	if (ts_check(a->start, a->len / 2, a->start, a, c->seed))
		return 1;
	if (pipe(p) < 0)
		return ts_fail("pipe");
	ts_wait_go(c);
	for (int k = 0; k < KIDS; k++) {
		kid[k] = fork();
		if (kid[k] == 0) {
			close(p[1]);
			if (read(p[0], &b, 1) != 0) {
			}
			_exit(ts_check(a->start, a->len, a->start, a, c->seed) != 0);
		}
		if (kid[k] < 0)
			return ts_fail("fork");
	}
	close(p[1]);	/* every fork is through: the children go on */
	bad = ts_check(a->start, a->len, a->start, a, c->seed) != 0;
	for (int k = 0; k < KIDS; k++)
		if (waitpid(kid[k], &st, 0) != kid[k] || !WIFEXITED(st) || WEXITSTATUS(st))
			bad = 1;
	return bad;
}

/* Wait until the daemon's log holds S or NOT (a bounded wait, not a timed assertion). */
static bool log_either(const char *s, const char *not)
{
	for (int tries = 0; tries < 4000; tries++) {
		if (ts_log_has(&dmn, s))
			return true;
		if (ts_log_has(&dmn, not))
			return false;
		usleep(5000);
	}
	return false;
}

/*
 * A served process forks while the daemon's fd table is full (its limit
 * lowered, connections filling the rest): the first forks take the
 * daemon's reserve fds, the last one waits, the daemon says so, and once
 * the connections are gone that fork is read, the children served, and
 * every byte of all is the image's.
 */
Test(fds, fork_with_no_fd_free_waits_for_one, .timeout = 90, .fini = teardown)
{
	const char *args[] = { "--no-fill", "--handshake-timeout", "60000", NULL };
	struct ts_child c = { .d = &dmn, .areas = one2, .n = 1, .seed = SEED, .imgdir = imgdir };
	struct rlimit low = { LOW_FDS, LOW_FDS };
	struct ts_status s;
	int tries;

	ts_daemon_start(&dmn, args);
	snprintf(imgdir, sizeof(imgdir), "%s/img", dmn.dir);
	ts_write_images(imgdir, TS_IMAGE_ID, one2, 1, SEED);
	child = ts_child_start(&c, sc_fork_when_told);
	cr_assert_gt(child, 0);
	/* Handed over: now fill the daemon's fd table, until its accept backs off. */
	cr_assert_eq(prlimit(dmn.pid, RLIMIT_NOFILE, &low, NULL), 0, "prlimit: %s",
		     strerror(errno));
	for (int i = 0; i < CONNS; i++)
		conns[i] = conn_open();	/* the last ones wait in the backlog */
	cr_assert(log_either("backing off", "no such line"), "the daemon's table never filled");
	ts_say_go(&c);
	cr_assert(log_either("no fd free for the new uffd of a fork event", "lost its uffd"),
		  "the daemon did not wait for an fd (log %s)", dmn.log);
	cr_expect(ts_log_has(&dmn, "the reserve is spent"), "the last fork waited with fds in reserve");
	for (int i = 0; i < CONNS; i++) {
		close(conns[i]);
		conns[i] = 0;
	}
	cr_assert_eq(ts_child_wait(child, 60000), 0, "a process saw wrong memory");
	child = 0;
	for (tries = 0; tries < 2000; tries++) {
		cr_assert_eq(ts_status_get(&dmn, &s), 0);
		if (s.tot->served + s.tot->exited == 1 + KIDS)
			break;
		ts_status_free(&s);
		usleep(5000);
	}
	cr_assert_lt(tries, 2000, "the parent and its child never ended");
	cr_expect_eq(s.tot->served, 1 + KIDS, "parent and children fully served");
	ts_status_free(&s);
	cr_expect(ts_log_has(&dmn, "forked:"), "no fork in the daemon's log");
	cr_expect(ts_log_has(&dmn, "read again after"), "no word that fds were free again");
}
