/*
 * The proc connector (procconn.c): the daemon asks the kernel for fork and
 * exit events only, so that the rest of the machine's process events (exec,
 * comm, uid, ...) do not wake it. Kernels from 6.6 filter; older ones send
 * everything and the daemon skips what it does not use.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tserve.h"

#define RENAMES	200

static struct ts_daemon dmn;

static void teardown(void)
{
	cr_expect(ts_daemon_finish(&dmn, 10000), "uffd-manager did not exit cleanly");
}

/* Does the running kernel filter proc connector events (6.6 and later)? */
static bool kernel_filters(void)
{
	struct utsname u;
	int major = 0, minor = 0;

	return uname(&u) == 0 && sscanf(u.release, "%d.%d", &major, &minor) == 2 &&
	       (major > 6 || (major == 6 && minor >= 6));
}

/* The count of events other than forks and exits in the daemon's last word on them; -1: none. */
static long other_events(void)
{
	const char *key = " exits, ";
	char line[1024];
	long n = -1;
	FILE *f = fopen(dmn.log, "re");

	cr_assert_not_null(f, "%s", dmn.log);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "proc connector: ") && strstr(line, key))
			n = strtol(strstr(line, key) + strlen(key), NULL, 10);
	fclose(f);
	return n;
}

/*
 * A child renames itself RENAMES times (a COMM event each, sent to every
 * listener that did not filter it out); the daemon, stopped after, counts
 * no event but forks and exits.
 */
Test(procconn, only_forks_and_exits_come, .timeout = 60, .fini = teardown)
{
	const char *args[] = { "--no-fill", "-v", NULL };
	long other;
	int st;
	pid_t pid;

	if (!kernel_filters())
		cr_skip_test("the kernel sends every process event (filters from 6.6)");
	ts_daemon_start(&dmn, args);
	if (ts_log_has(&dmn, "proc connector unavailable"))
		cr_skip_test("no proc connector here");
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		for (int i = 0; i < RENAMES; i++)
			prctl(PR_SET_NAME, i % 2 ? "procconn-a" : "procconn-b", 0, 0, 0);
		_exit(0);
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* Not a timing assertion: time for the daemon to read what was sent before it stops. */
	usleep(200 * 1000);
	st = ts_daemon_stop(&dmn, 10000);
	dmn.pid = 0;	/* stopped: teardown only removes its directory */
	cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "wait status %d", st);
	other = other_events();
	cr_assert_geq(other, 0, "no count of proc connector events in %s", dmn.log);
	/* Not 0: an exec or a rename elsewhere on the machine may have come before the filter. */
	cr_expect_lt(other, RENAMES / 2,
		     "%ld events other than forks and exits came (%d renames were made)", other,
		     RENAMES);
}
