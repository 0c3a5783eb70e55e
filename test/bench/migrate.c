/*
 * 9. Migrate: post-copy of a whole process from a page server on another
 * "host" (network namespaces joined by a veth pair, made here and removed
 * at the end), the way `criu restore --lazy-pages` takes it: criu-sim plays
 * the restore and reads (and compares) every byte while the daemon fetches
 * the rest in the background. The figure is the time from the restore's
 * RSTF to the last page placed ("fully served"), the median of a few runs:
 * over TLS against plain TCP in the same run, and over TLS with the link cut
 * for 5 s in the middle against the same without the cut.
 *
 * The image is a real dump (uffd-inject dump) of the workload helper with
 * c->big of anonymous memory, every page data.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "tcert.h"
#include "tcriu.h"

#define SRV_IP	"10.231.0.1"
#define CLI_IP	"10.231.0.2"
/* How long the link is cut: 5 s (2 s quick, which stays under a minute). */
static unsigned cut_ms = 5000;

static char ns_srv[32], ns_cli[32], veth[16];
static int home_ns = -1;
static pid_t ns_owner;	/* only the bench itself removes them, not a child that exits */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int sh(const char *fmt, ...)
{
	char cmd[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

static void enter_ns(const char *name)
{
	char path[96];
	int fd;

	snprintf(path, sizeof(path), "/run/netns/%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
		b_die("migrate: setns %s: %s", name, strerror(errno));
	close(fd);
}

static void net_free(void)
{
	if (getpid() != ns_owner)
		return;
	if (home_ns >= 0) {
		setns(home_ns, CLONE_NEWNET);
		close(home_ns);
		home_ns = -1;
	}
	if (ns_srv[0]) {
		sh("ip netns del %s 2>/dev/null", ns_srv);
		sh("ip netns del %s 2>/dev/null", ns_cli);
		ns_srv[0] = 0;
	}
}

/* Two namespaces and a veth pair; false (with a note) when this machine cannot. */
static bool net_make(void)
{
	unsigned id = (unsigned)getpid();

	if (geteuid() != 0 || sh("ip -V >/dev/null 2>&1")) {
		note("migrate: skipped: needs root and ip(8) for its network namespaces");
		return false;
	}
	ns_owner = getpid();
	home_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	atexit(net_free);	/* also when b_die or a signal ends the run */
	snprintf(ns_srv, sizeof(ns_srv), "uffdbench-%u-s", id);
	snprintf(ns_cli, sizeof(ns_cli), "uffdbench-%u-c", id);
	snprintf(veth, sizeof(veth), "ub%us", id % 1000000);
	if (sh("ip netns add %s && ip netns add %s", ns_srv, ns_cli) ||
	    sh("ip -n %s link add %s type veth peer name %sc netns %s", ns_srv, veth, veth, ns_cli) ||
	    sh("ip -n %s addr add %s/24 dev %s && ip -n %s link set %s up && ip -n %s link set lo up",
	       ns_srv, SRV_IP, veth, ns_srv, veth, ns_srv) ||
	    sh("ip -n %s addr add %s/24 dev %sc && ip -n %s link set %sc up && ip -n %s link set lo up",
	       ns_cli, CLI_IP, veth, ns_cli, veth, ns_cli)) {
		net_free();
		b_die("migrate: cannot make the network namespaces");
	}
	return true;
}

/* Dump the workload with LEN of data into DIR; the workload ends. */
static void make_image(const char *dir, uint64_t len)
{
	const char *b = getenv("UFFD_TEST_BUILD") ? getenv("UFFD_TEST_BUILD") : TEST_BUILDDIR;
	char wl[300], mib[24], line[512];
	int in[2], out[2], pid = 0, st;
	pid_t w;
	FILE *f;

	snprintf(mib, sizeof(mib), "%llu", (unsigned long long)(len >> 20));
	snprintf(wl, sizeof(wl), "%s/test/helpers/workload", b);
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
		b_die("migrate: pipe");
	w = fork();
	if (w < 0)
		b_die("migrate: fork");
	if (w == 0) {
		/* Its stdin stays open (our pipe) until we kill it. */
		dup2(in[0], 0);
		dup2(out[1], 1);
		execl(wl, wl, "--anon", mib, "--full", (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	f = fdopen(out[0], "r");
	if (!f || !fgets(line, sizeof(line), f) || sscanf(line, "ready pid=%d", &pid) != 1 || pid != w)
		b_die("migrate: the workload did not start");
	if (sh("%s/uffd-inject dump --pid %d --images %s >/dev/null 2>&1", b, pid, dir))
		b_die("migrate: uffd-inject dump --pid %d failed", pid);
	kill(w, SIGKILL);
	waitpid(w, &st, 0);
	fclose(f);
	close(in[1]);
}

struct mrun {
	struct tc_run r;
	pid_t sim;
};

/*
 * One post-copy of IMG: the page server in the server's namespace, the
 * daemon and criu-sim in the client's. With CUT, the link goes down
 * AT_MS after RSTF for cut_ms. Returns ms from RSTF to fully served.
 */
static double one_run(const char *img, const struct tc_certs *cs, bool tls, unsigned at_ms)
{
	const char *ps[16] = { "--address", SRV_IP };
	const char *da[24] = { "--page-server", "--address", SRV_IP, "--port", NULL };
	struct mrun m;
	int n = 2, k = 5, st;
	double ms;

	tc_init(&m.r);
	if (tls)
		n = tc_tls_args(ps, n, cs->ca, cs->cert, cs->key);
	ps[n] = NULL;
	enter_ns(ns_srv);
	if (!tc_pagesrv_start(&m.r, img, ps))
		b_die("migrate: the page server did not start; log in %s", m.r.ps_log);
	enter_ns(ns_cli);
	da[4] = m.r.ps_port;
	if (tls)
		k = tc_tls_args(da, k, cs->ca, cs->cert, cs->key);
	da[k] = NULL;
	if (!tc_daemon_start(&m.r, img, da))
		b_die("migrate: the daemon did not start; log in %s", m.r.log);
	m.sim = tc_sim_start(&m.r, img, NULL);
	if (at_ms) {
		if (!tc_file_wait(m.r.log, "criu: restore finished (RSTF)", 60000))
			b_die("migrate: no RSTF; log in %s", m.r.log);
		usleep(at_ms * 1000);
		sh("ip -n %s link set %s down", ns_srv, veth);
		usleep(cut_ms * 1000);
		sh("ip -n %s link set %s up", ns_srv, veth);
	}
	st = tc_sim_wait(m.sim, 300000);
	if (st != 0)
		b_die("migrate: a task saw wrong memory or failed (%d); see %s", st, m.r.simout);
	if (tc_daemon_exit_code(&m.r, 60000) != 0)
		b_die("migrate: the daemon failed; log in %s", m.r.log);
	ms = tc_file_number(m.r.log, "last one ended ");
	if (ms < 0)
		b_die("migrate: no end time in %s", m.r.log);
	tc_pagesrv_stop(&m.r);
	m.r.passed = true;
	tc_finish(&m.r);
	setns(home_ns, CLONE_NEWNET);
	return ms;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), b_cmp_dbl);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void bench_migrate(const struct bconf *c)
{
	char img[160], certdir[160], val[64], vs[96], what[112];
	struct tc_certs cs;
	double plain[5], tls[5], mp, mt, cut;
	int reps = c->quick ? 2 : 3;
	uint64_t mib = c->big >> 20;

	cut_ms = c->quick ? 2000 : 5000;
	printf("\n9. migrate: post-copy of %llu MiB from a page server across a veth pair\n",
	       (unsigned long long)mib);
	if (!net_make())
		return;
	snprintf(img, sizeof(img), "%s/migrate-img", c->dir);
	snprintf(certdir, sizeof(certdir), "%s/migrate-certs", c->dir);
	if (mkdir(certdir, 0700) < 0 || !tc_certs_make(&cs, certdir, SRV_IP)) {
		net_free();
		b_die("migrate: cannot make certificates (certtool, package gnutls-bin)");
	}
	make_image(img, c->big);
	/* Alternate, so that a change of load hits both alike. */
	for (int i = 0; i < reps; i++) {
		plain[i] = one_run(img, &cs, false, 0);
		tls[i] = one_run(img, &cs, true, 0);
		printf("  run %d: plain %.0f ms, TLS %.0f ms\n", i + 1, plain[i], tls[i]);
	}
	mp = median(plain, reps);
	mt = median(tls, reps);
	snprintf(what, sizeof(what), "%llu MiB post-copy over TLS, RSTF to fully served", (unsigned long long)mib);
	snprintf(val, sizeof(val), "%.0f ms", mt);
	snprintf(vs, sizeof(vs), "%.2fx plain TCP (%.0f ms)", mt / mp, mp);
	row("migrate", what, val, vs);
	goal("migrate: TLS / plain, time to fully served", mt / mp, 1.3, true, NULL);
	cut = one_run(img, &cs, true, (unsigned)(mt / 3));
	snprintf(what, sizeof(what), "the same with the link cut %u s at %.0f ms", cut_ms / 1000, mt / 3);
	snprintf(val, sizeof(val), "%.0f ms", cut);
	snprintf(vs, sizeof(vs), "+%.2f s over the TLS median (cut %u s)", (cut - mt) / 1e3,
		 cut_ms / 1000);
	row("migrate", what, val, vs);
	snprintf(what, sizeof(what), "migrate: time a %u s cut adds, s", cut_ms / 1000);
	goal(what, (cut - mt) / 1e3, cut_ms / 1e3 + 1, true, "every byte checked by the restored task");
	net_free();
}
