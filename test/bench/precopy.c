/*
 * 8. Pre-copy (issue 14): the frozen time of `uffd-inject lazy --pre-copy`
 * and of `dump --prev-images` after one pre-dump round, for targets of
 * 64 MiB, 1 GiB and 4 GiB (64 MiB, 128 MiB, 512 MiB quick) that keep writing
 * a fixed 32 MiB hot set (test/helpers/pcwriter), against the full freeze
 * of today's `lazy` and `dump` on the same targets in the same run; and a
 * target that writes faster than pages can be copied: how the rounds go.
 *
 * Every figure is the frozen time the tool prints itself (from the freeze
 * to the detach or the hand-over); for lazy, the moment one
 * thread is stopped after the thaw to remove the code of the thread that
 * freed the graveyard (the drop out of the freeze, inject/grave.h), which
 * the tool prints apart, is added, and also shown on its own row.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define PC_HOT_PAGES	8192	/* 32 MiB */

static char pcdir[200];

static const char *build(void)
{
	const char *b = getenv("UFFD_TEST_BUILD");

	return b ? b : "build";
}

/* Start pcwriter of LEN bytes writing HOT pages (0: all; FAST: without pause). */
static pid_t writer(uint64_t len, uint64_t hot, bool fast, const char *log)
{
	char bin[256], pages[32], hots[32], line[64];
	int p[2];
	size_t got = 0;
	pid_t pid;

	snprintf(bin, sizeof(bin), "%s/test/helpers/pcwriter", build());
	snprintf(pages, sizeof(pages), "%llu", (unsigned long long)(len / B_PAGE));
	snprintf(hots, sizeof(hots), "%llu", (unsigned long long)hot);
	if (pipe2(p, O_CLOEXEC) < 0)
		b_die("pipe");
	pid = fork();
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(nul, 0);
		dup2(p[1], 1);
		dup2(nul, 2);
		close_range(3, ~0u, 0);
		execl(bin, bin, "--log", log, "--pages", pages, "--hot", hots,
		      fast ? "--fast" : NULL, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	while (got < sizeof(line) - 1) {
		struct pollfd pf = { p[0], POLLIN, 0 };

		if (poll(&pf, 1, 120000) <= 0 || read(p[0], line + got, 1) != 1)
			b_die("pcwriter of %llu MiB did not start", (unsigned long long)(len >> 20));
		if (line[got++] == '\n')
			break;
	}
	close(p[0]);
	usleep(200000);	/* let it write a while */
	return pid;
}

/* Run uffd-inject with ARGS, its stdout into OUT. Exit status, -1 if killed. */
static int inject(const char *const *args, char *out, size_t olen)
{
	char bin[256], of[300];
	const char *argv[20];
	int n = 0, st, fd;
	ssize_t k;
	pid_t pid;

	snprintf(bin, sizeof(bin), "%s/uffd-inject", build());
	snprintf(of, sizeof(of), "%s/inject.out", pcdir);
	argv[n++] = bin;
	for (int i = 0; args[i] && n < 19; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	pid = fork();
	if (pid == 0) {
		int o = open(of, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		dup2(o, 1);
		close_range(3, ~0u, 0);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	waitpid(pid, &st, 0);
	fd = open(of, O_RDONLY | O_CLOEXEC);
	k = fd >= 0 ? read(fd, out, olen - 1) : 0;
	out[k > 0 ? k : 0] = '\0';
	if (fd >= 0)
		close(fd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The frozen time in ms the tool printed last in OUT, or -1. */
static double frozen_ms(const char *out)
{
	const char *p = out, *q = NULL;

	while ((p = strstr(p, "frozen ")))
		q = p++;
	return q ? atof(q + 7) * 1e3 : -1;
}

static void kill_wait(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static void rmdir_r(const char *d)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", d);
	if (system(cmd)) {
	}
}

/* What one size gives: frozen ms of each way. */
struct pcres {
	double lazy_full, lazy_pc, dump_full, dump_prev;
	double lazy_pc_stop;	/* ms of it: one thread stopped after the thaw (-1: none) */
	bool lazy_pc_grave;	/* its drop went out of the freeze */
	int rounds;
};

/* The one-thread stop after the thaw the tool printed in OUT, in ms, or -1. */
static double stop_ms(const char *out)
{
	const char *p = strstr(out, "one thread stopped ");

	return p ? atof(p + 19) * 1e3 : -1;
}

/* lazy's frozen time in OUT with the one-thread stop after the thaw, which it prints apart. */
static double lazy_frozen_ms(const char *out)
{
	double f = frozen_ms(out), s = stop_ms(out);

	return f >= 0 && s > 0 ? f + s : f;
}

static void one_size(const struct bconf *c, const char *sock, uint64_t len, struct pcres *r)
{
	char log[260], dir[260], d0[260], pid_s[16], out[8192];
	const char *lz[] = { "lazy", "--pid", pid_s, "--images", dir, "--socket", sock, NULL,
			     NULL, NULL, NULL };
	const char *pd[] = { "pre-dump", "--pid", pid_s, "--images", d0, NULL };
	const char *dp[] = { "dump", "--pid", pid_s, "--images", dir, NULL, NULL, NULL };
	pid_t pid;
	const char *p;

	(void)c;
	snprintf(log, sizeof(log), "%s/log", pcdir);
	snprintf(dir, sizeof(dir), "%s/img", pcdir);
	snprintf(d0, sizeof(d0), "%s/pre", pcdir);

	/* Today's lazy: everything copied frozen. */
	pid = writer(len, PC_HOT_PAGES, false, log);
	snprintf(pid_s, sizeof(pid_s), "%d", (int)pid);
	r->lazy_full = inject(lz, out, sizeof(out)) == 0 ? lazy_frozen_ms(out) : -1;
	kill_wait(pid);
	rmdir_r(dir);

	/* lazy --pre-copy. */
	pid = writer(len, PC_HOT_PAGES, false, log);
	snprintf(pid_s, sizeof(pid_s), "%d", (int)pid);
	lz[7] = "--pre-copy";
	r->lazy_pc = inject(lz, out, sizeof(out)) == 0 ? lazy_frozen_ms(out) : -1;
	r->rounds = (p = strstr(out, "pre-copy: ")) ? atoi(p + 10) : 0;
	r->lazy_pc_stop = stop_ms(out);
	r->lazy_pc_grave = strstr(out, "drop: in the freeze") == NULL && r->lazy_pc_stop >= 0;
	lz[7] = NULL;
	kill_wait(pid);
	rmdir_r(dir);

	/* Today's dump (the target left running), then dump --prev-images after one round. */
	pid = writer(len, PC_HOT_PAGES, false, log);
	snprintf(pid_s, sizeof(pid_s), "%d", (int)pid);
	r->dump_full = inject(dp, out, sizeof(out)) == 0 ? frozen_ms(out) : -1;
	rmdir_r(dir);
	r->dump_prev = -1;
	if (inject(pd, out, sizeof(out)) == 0) {
		usleep(200000);
		dp[5] = "--prev-images";
		dp[6] = d0;
		r->dump_prev = inject(dp, out, sizeof(out)) == 0 ? frozen_ms(out) : -1;
		dp[5] = dp[6] = NULL;
	}
	kill_wait(pid);
	rmdir_r(dir);
	rmdir_r(d0);
	unlink(log);
}

/* A writer faster than copying: the rounds of lazy --pre-copy, as printed. */
static void fast_writer(const char *sock, uint64_t len)
{
	char log[260], dir[260], pid_s[16], out[8192], what[200], v[64];
	const char *lz[] = { "lazy", "--pid", pid_s, "--images", dir, "--socket", sock,
			     "--pre-copy", "--max-rounds", "6", NULL };
	const char *p;
	pid_t pid;
	int k = 0;

	snprintf(log, sizeof(log), "%s/log", pcdir);
	snprintf(dir, sizeof(dir), "%s/fast", pcdir);
	pid = writer(len, 0, true, log);
	snprintf(pid_s, sizeof(pid_s), "%d", (int)pid);
	if (inject(lz, out, sizeof(out)) != 0) {
		row("pre-copy", "fast writer: lazy --pre-copy", "failed", "");
		kill_wait(pid);
		rmdir_r(dir);
		return;
	}
	for (p = out; (p = strstr(p, "pre-copy round ")); p++) {
		const char *w = strstr(p, "written since");
		unsigned long copied = strtoul(strstr(p, ": ") + 2, NULL, 10);

		snprintf(what, sizeof(what), "fast writer, %llu MiB, round %d: pages copied "
			 "(written during the round before)", (unsigned long long)(len >> 20), ++k);
		snprintf(v, sizeof(v), "%lu", copied);
		row("pre-copy", what, v, w && k > 1 ? "" : "everything");
	}
	snprintf(what, sizeof(what), "fast writer, %llu MiB: frozen, lazy --pre-copy (%d rounds)",
		 (unsigned long long)(len >> 20), k);
	snprintf(v, sizeof(v), "%.1f ms", frozen_ms(out));
	row("pre-copy", what, v, "");
	note("fast writer: the written set does not shrink from one round to the next (it "
	     "writes its whole area faster than a round copies it); the rounds stop at the "
	     "first that did not shrink it by a tenth, and the frozen copy is that set");
	kill_wait(pid);
	rmdir_r(dir);
	unlink(log);
}

void bench_precopy(const struct bconf *c)
{
	static const char *const names[] = { "64 MiB", "1 GiB", "4 GiB" };
	static const char *const qnames[] = { "64 MiB", "128 MiB", "512 MiB" };
	uint64_t sizes[3] = { 64ull << 20, 1ull << 30, 4ull << 30 };
	struct pcres r[3];
	struct bdaemon d;
	struct statvfs v;
	char what[200], val[64], vs[64];

	printf("\n8. pre-copy: frozen time with a 32 MiB hot set being written\n");
	if (c->quick) {
		sizes[1] = 128ull << 20;
		sizes[2] = 512ull << 20;	/* a quick run stays under a minute */
	}
	/* Images in memory when there is room: the figure is the tool's, not the disk's. */
	if (statvfs("/dev/shm", &v) == 0 && (uint64_t)v.f_bavail * v.f_frsize > 2 * sizes[2])
		snprintf(pcdir, sizeof(pcdir), "/dev/shm/uffd-bench-pc-%d", (int)getpid());
	else
		snprintf(pcdir, sizeof(pcdir), "%s/pc", c->dir);
	if (mkdir(pcdir, 0700) < 0 && errno != EEXIST)
		b_die("mkdir %s: %s", pcdir, strerror(errno));
	printf("    images under %s, one case at a time\n", pcdir);
	bd_start(&d, c, NULL);
	for (int i = 0; i < 3; i++) {
		const char *n = c->quick ? qnames[i] : names[i];

		one_size(c, d.sock, sizes[i], &r[i]);
		snprintf(what, sizeof(what), "lazy (everything copied frozen), %s", n);
		snprintf(val, sizeof(val), "%.1f ms", r[i].lazy_full);
		row("pre-copy", what, val, i ? "" : "baseline");
		snprintf(what, sizeof(what), "lazy --pre-copy (%d rounds), frozen, %s", r[i].rounds, n);
		snprintf(val, sizeof(val), "%.1f ms", r[i].lazy_pc);
		snprintf(vs, sizeof(vs), "%.2fx full; %.2fx 64 MiB", r[i].lazy_pc / r[i].lazy_full,
			 r[i].lazy_pc / r[0].lazy_pc);
		row("pre-copy", what, val, vs);
		snprintf(what, sizeof(what), "lazy --pre-copy: of it, one thread stopped after the "
			 "thaw to unmap the dropper, %s", n);
		snprintf(val, sizeof(val), "%.2f ms", r[i].lazy_pc_stop);
		row("pre-copy", what, r[i].lazy_pc_grave ? val : "-",
		    r[i].lazy_pc_grave ? "drop out of the freeze" : "drop in the freeze");
		snprintf(what, sizeof(what), "dump (everything copied frozen), %s", n);
		snprintf(val, sizeof(val), "%.1f ms", r[i].dump_full);
		row("pre-copy", what, val, "");
		snprintf(what, sizeof(what), "dump --prev-images after 1 pre-dump, frozen, %s", n);
		snprintf(val, sizeof(val), "%.1f ms", r[i].dump_prev);
		snprintf(vs, sizeof(vs), "%.2fx full; %.2fx 64 MiB", r[i].dump_prev / r[i].dump_full,
			 r[i].dump_prev / r[0].dump_prev);
		row("pre-copy", what, val, vs);
	}
	goal(c->quick ? "pre-copy frozen 512 MiB / 64 MiB, lazy --pre-copy" :
			"pre-copy frozen 4 GiB / 64 MiB, lazy --pre-copy",
	     r[2].lazy_pc / r[0].lazy_pc, 1.2, true, NULL);
	goal(c->quick ? "pre-copy frozen 512 MiB / 64 MiB, dump --prev-images" :
			"pre-copy frozen 4 GiB / 64 MiB, dump --prev-images",
	     r[2].dump_prev / r[0].dump_prev, 1.2, true, NULL);
	goal(c->quick ? "lazy --pre-copy / full lazy frozen, 512 MiB" :
			"lazy --pre-copy / full lazy frozen, 4 GiB",
	     r[2].lazy_pc / r[2].lazy_full, 0.1, true, NULL);
	goal(c->quick ? "dump --prev-images / full dump frozen, 512 MiB" :
			"dump --prev-images / full dump frozen, 4 GiB",
	     r[2].dump_prev / r[2].dump_full, 0.1, true, NULL);
	fast_writer(d.sock, c->quick ? 128ull << 20 : 1ull << 30);
	bd_stop(&d);
	rmdir_r(pcdir);
}
