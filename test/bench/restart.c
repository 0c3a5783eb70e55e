/*
 * 6. Restart: a handed-over parent and its K-1 forked children (K = 1,
 * 1000), each with a few pages in; the daemon is SIGKILLed, the parent
 * touches a missing page (it waits: only the keeper holds its uffd), and a
 * new daemon is started on the same socket. Measured: from the kill to
 * that fault served again, and the daemon's own count of the take-over.
 * The baseline is K=1 in the same run, and a fresh daemon's start.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "tserve.h"

struct rshm {
	volatile int ready, touch, fail;
	volatile uint64_t t1;		/* when the fault after the kill was served */
};

static struct rshm *rs;

/* The served parent: hand over, fork K-1 children that take two pages each, then the timed touch. */
static int parent(const struct bconf *c, const char *sock, int k, int exit_fd)
{
	char why[512], b;
	int uffd, ok = 0;
	int p[2];

	b_pin_self(0);
	if (b_map_area(c->big) < 0 || (uffd = b_uffd(B_FEATURES, true)) < 0)
		return 10;
	if (b_handover(sock, c->bigimg, uffd, why, sizeof(why)) < 0) {
		fprintf(stderr, "hand-over: %s\n", why);
		return 11;
	}
	close(uffd);
	if (pipe(p) < 0)
		return 12;
	for (int i = 1; i < k; i++) {
		pid_t pid = fork();

		if (pid < 0)
			return 12;
		if (pid == 0) {
			uint64_t a = B_BASE + (uint64_t)i * 2 * B_PAGE;

			close(p[0]);
			if (*(volatile uint64_t *)(uintptr_t)a != ts_word(B_SEED, a))
				rs->fail = 2;
			if (write(p[1], "c", 1) != 1) {
			}
			if (read(exit_fd, &b, 1) < 0) {
			}
			_exit(0);
		}
	}
	close(p[1]);
	for (int i = 1; i < k; i++)
		ok += read(p[0], &b, 1) == 1;
	if (ok != k - 1)
		return 13;
	rs->ready = 1;
	while (!rs->touch)
		usleep(50);
	{
		/* A page nobody touched: missing, so it waits for a daemon. */
		uint64_t a = B_BASE + c->big - B_PAGE;

		if (*(volatile uint64_t *)(uintptr_t)a != ts_word(B_SEED, a))
			rs->fail = 3;
		rs->t1 = b_now();
	}
	if (read(exit_fd, &b, 1) < 0) {
	}
	while (wait(NULL) > 0)
		;
	return 0;
}

/* The "took back N processes ... in X ms" of the new daemon's log, or -1. */
static double took_ms(const char *log)
{
	char buf[1 << 16], *p;
	FILE *f = fopen(log, "re");
	size_t n;

	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	p = strstr(buf, "took back ");
	p = p ? strstr(p, ") in ") : NULL;
	return p ? atof(p + 5) : -1;
}

struct rres {
	double restart_ms, takeover_ms, fresh_ms;
	double dead_ms, ready_ms;	/* kill to reaped; kill to the new daemon listening */
};

static void one(const struct bconf *c, int k, struct rres *r)
{
	const char *args[] = { "--no-fill", NULL };
	struct bdaemon d;
	uint64_t t0, t, limit;
	int ex[2], st;
	pid_t pid;

	memset((void *)rs, 0, sizeof(*rs));
	t = b_now();
	bd_start(&d, c, args);
	r->fresh_ms += (b_now() - t) / 1e6;
	/* Close-on-exec: the daemon started after this must not hold it open. */
	if (pipe2(ex, O_CLOEXEC) < 0)
		b_die("pipe");
	pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(ex[1]);
		_exit(parent(c, d.sock, k, ex[0]));
	}
	close(ex[0]);
	limit = b_now() + 120000000000ull;
	while (!rs->ready && !rs->fail && b_now() < limit)
		usleep(200);
	if (!rs->ready)
		b_die("restart %d: the processes did not get ready; log in %s", k, d.log);
	usleep(100000);	/* let the daemon settle */
	t0 = b_now();
	kill(d.pid, SIGKILL);
	waitpid(d.pid, &st, 0);
	rs->touch = 1;	/* faults with no daemon: waits */
	t = b_now();
	r->dead_ms += (t - t0) / 1e6;
	bd_again(&d, args);
	r->ready_ms += (b_now() - t0) / 1e6;
	while (!rs->t1 && b_now() < limit)
		usleep(20);
	if (!rs->t1 || rs->fail)
		b_die("restart %d: the fault after the restart was %s; log in %s", k,
		      rs->fail ? "answered with wrong data" : "never served", d.log);
	r->restart_ms += (rs->t1 - t0) / 1e6;
	r->takeover_ms += took_ms(d.log);
	close(ex[1]);
	waitpid(pid, &st, 0);
	bd_stop(&d);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		b_die("restart %d: the served parent failed (wait status %d)", k, st);
}

void bench_restart(const struct bconf *c)
{
	static const int ks[] = { 1, 1000 };
	int rounds = c->quick ? 2 : 3, nk = c->max_procs >= 1000 ? 2 : 1;
	struct rres r[2];
	char what[128], v[64], vs[128];

	rs = b_shared(sizeof(*rs));
	printf("\n[a] restart: a served parent (%llu MiB lazy) and K-1 forked children, two pages in each;\n"
	       "    SIGKILL the daemon, touch a missing page, start a new daemon; %d rounds averaged\n",
	       (unsigned long long)(c->big >> 20), rounds);
	memset(r, 0, sizeof(r));
	for (int n = 0; n < rounds; n++)
		for (int i = 0; i < nk; i++)
			one(c, ks[i], &r[i]);
	for (int i = 0; i < nk; i++) {
		r[i].restart_ms /= rounds;
		r[i].takeover_ms /= rounds;
		r[i].fresh_ms /= rounds;
		r[i].dead_ms /= rounds;
		r[i].ready_ms /= rounds;
	}
	for (int i = 0; i < nk; i++) {
		snprintf(what, sizeof(what), "K=%d: SIGKILL to the first fault served by the new daemon",
			 ks[i]);
		snprintf(v, sizeof(v), "%.1f ms", r[i].restart_ms);
		snprintf(vs, sizeof(vs), "%.2fx K=1; a fresh daemon starts in %.1f ms", 
			 r[i].restart_ms / r[0].restart_ms, r[i].fresh_ms);
		row("restart", what, v, i ? vs : "baseline");
		snprintf(what, sizeof(what), "K=%d: take-over inside the new daemon (its log)", ks[i]);
		snprintf(v, sizeof(v), "%.1f ms", r[i].takeover_ms);
		snprintf(vs, sizeof(vs), "%.1f us per process", r[i].takeover_ms * 1e3 / ks[i]);
		row("restart", what, v, vs);
		snprintf(what, sizeof(what), "K=%d: SIGKILL to the new daemon listening (to the old one reaped)",
			 ks[i]);
		snprintf(v, sizeof(v), "%.1f ms", r[i].ready_ms);
		snprintf(vs, sizeof(vs), "%.1f ms", r[i].dead_ms);
		row("restart", what, v, vs);
	}
}
