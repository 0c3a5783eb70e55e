/* uffd-manager: serve the memory of other processes through userfaultfd. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/userfaultfd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client.h"
#include "collapse.h"
#include "fillw.h"
#include "criu.h"
#include "daemon.h"
#include "fill.h"
#include "handover.h"
#include "listen.h"
#include "log.h"
#include "pagesrv.h"
#include "procconn.h"
#include "released.h"
#include "serve.h"
#include "remote.h"
#include "rserve.h"
#include "restart.h"
#include "status_client.h"
#include "loader.h"
#include "sysutil.h"
#include "target.h"
#include "tls.h"
#include "version.h"

#define DEFAULT_WINDOW		(64u << 10)
#define DEFAULT_FILL_CHUNK	(256u << 10)
#define DEFAULT_SPIN_US		100
#define DEFAULT_MAX_CLIENTS	4096
#define DEFAULT_HANDSHAKE_MS	5000
/* About 100 MiB of pagemap decoded, 128 MiB of index: far more than real dumps have. */
#define DEFAULT_MAX_IMAGE_ENTRIES	(4u << 20)

static void usage(FILE *out)
{
	fputs("usage: uffd-manager [OPTIONS]           serve handed-over processes\n"
	      "       uffd-manager status [--json] [--socket PATH]\n"
	      "       uffd-manager criu -D IMGDIR [...]   stand in for `criu lazy-pages`\n"
	      "       uffd-manager page-server -D IMGDIR --port P [...]\n"
	      "                                           serve an image dir's lazy pages over TCP\n"
	      "\n"
	      "  -s, --socket PATH          listen here (default /run/uffd-manager/manager.sock\n"
	      "                             for root, else $XDG_RUNTIME_DIR/uffd-manager.sock)\n"
	      "  -w, --fault-window SIZE    serve at most this much around a fault, a power\n"
	      "                             of two (default 64K): sequential faults grow the\n"
	      "                             window up to SIZE, a random one gets one page\n"
	      "      --fixed-window         serve the whole aligned SIZE at every fault\n"
	      "      --spin USEC            while faults come at most USEC apart, poll for\n"
	      "                             USEC after each instead of sleeping (default 100;\n"
	      "                             0: always sleep)\n"
	      "      --no-collapse          no huge pages made of fully served 2 MiB blocks\n"
	      "      --no-prefault          do not map the images' cached pages ahead (saves\n"
	      "                             2 MiB of page tables per GiB of images)\n"
	      "      --working-set-dir DIR  record the order of each image's first faults here,\n"
	      "                             and fill those pages first when it comes again\n"
	      "                             (default: working-sets beside the socket)\n"
	      "      --no-working-set       neither record nor replay working sets\n"
	      "      --fill-chunk SIZE      bytes per background fill step (default 256K)\n"
	      "      --fill-workers N       threads that fill in the background, the event\n"
	      "                             loop counted (1 to 8; default 2 when it may run on\n"
	      "                             two CPUs or more, else 1)\n"
	      "      --no-fill              serve on demand only\n"
	      "      --exit-when-done       exit 0 once the last process is fully served\n"
	      "      --max-clients N        processes served at once, forks included; more\n"
	      "                             hand-overs are refused (default 4096)\n"
	      "      --handshake-timeout MS a client must send its request within MS\n"
	      "                             (default 5000)\n"
	      "      --max-image-entries N  refuse a hand-over whose pagemaps hold more than N\n"
	      "                             entries (default 4M; 0: no limit)\n"
	      "      --page-server-grace MS a hand-over served from a page server (uffd-inject\n"
	      "                             restore --page-server) waits this long while a\n"
	      "                             broken connection is made again (default 60000)\n"
	      "      --ready-fd N           write one byte to fd N once listening, then close it\n"
	      "      --no-proc-connector    learn forked children's pids only from the thread id\n"
	      "                             of their first fault (no netlink subscription)\n"
	      "      --no-keeper            no keeper process: if the daemon dies, processes it\n"
	      "                             serves (and their children) may read zeros\n"
	      "      --syslog               log to syslog instead of stderr\n"
	      "  -v, --verbose              debug log (every fork, pid learned, stale range)\n"
	      "  -h, --help                 this help\n"
	      "  -V, --version              the version\n"
	      "\n"
	      "SIGTERM serves every process to the end, then exits. SIGUSR2 leaves at once:\n"
	      "the keeper keeps every process, and the next uffd-manager started on the same\n"
	      "socket takes them back (restart, upgrade): see RESTART in uffd-manager(8).\n"
	      "\n"
	      "See uffd-manager(8).\n", out);
}

/* Parse SIZE with an optional K, M or G suffix. */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return -1;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	}
	if (*end)
		return -1;
	*out = v;
	return 0;
}

/* --tls and its options (tls.h): the same on `criu --page-server` and `page-server`. */
enum { O_TLS = 512, O_TLS_CACERT, O_TLS_CACRL, O_TLS_CERT, O_TLS_KEY, O_TLS_NO_CN };
#define TLS_LONGOPTS							\
	{ "tls", no_argument, NULL, O_TLS },				\
	{ "tls-cacert", required_argument, NULL, O_TLS_CACERT },	\
	{ "tls-cacrl", required_argument, NULL, O_TLS_CACRL },		\
	{ "tls-cert", required_argument, NULL, O_TLS_CERT },		\
	{ "tls-key", required_argument, NULL, O_TLS_KEY },		\
	{ "tls-no-cn-verify", no_argument, NULL, O_TLS_NO_CN }

static const char tls_help[] =
	"      --tls                  TLS on the page-server connection (GnuTLS); both\n"
	"                             sides show a certificate and check the other's\n"
	"      --tls-cacert FILE      the CA that signed the peer's certificate (default\n"
	"                             " TLS_DEF_CACERT "; without it the system's CAs\n"
	"                             are trusted too)\n"
	"      --tls-cacrl FILE       revoked certificates (default " TLS_DEF_CACRL ",\n"
	"                             if readable)\n"
	"      --tls-cert FILE        our certificate (default " TLS_DEF_CERT ")\n"
	"      --tls-key FILE         its private key (default " TLS_DEF_KEY ")\n"
	"      --tls-no-cn-verify     do not check that the peer's certificate names the\n"
	"                             --address (as criu's option of that name)\n";

/* One of TLS_LONGOPTS into T; false if C is not one of them. */
static bool opt_tls(struct tls_opts *t, int c, const char *arg)
{
	static const char *const names[] = { "tls", "tls-cacert", "tls-cacrl", "tls-cert",
					     "tls-key", "tls-no-cn-verify" };

	if (c < O_TLS || c > O_TLS_NO_CN)
		return false;
	tls_opt(t, names[c - O_TLS], arg);
	return true;
}

/* A --tls-* option without --tls is a mistake worth saying. 0, or 2 after saying it. */
static int check_tls(const struct tls_opts *t, const char *cmd)
{
	if (!t->on && (t->cacert || t->cacrl || t->cert || t->key || t->no_cn_verify)) {
		fprintf(stderr, "uffd-manager %s: --tls-cacert, --tls-cacrl, --tls-cert, --tls-key and --tls-no-cn-verify go with --tls\n", cmd);
		return 2;
	}
	return 0;
}

static void usage_criu(FILE *out)
{
	fputs("usage: uffd-manager criu -D IMGDIR [-W WORKDIR] [--daemon] [--pidfile FILE]\n"
	      "                         [--status-fd N] [-o LOG] [-v] [TUNING]\n"
	      "                         [--page-server --address A --port P\n"
	      "                          [--page-server-timeout MS] [--page-server-keepalive MS]\n"
	      "                          [--page-server-grace MS] [--tls [--tls-cacert F] ...]]\n"
	      "\n"
	      "Serve the lazy pages of `criu restore --lazy-pages` from the images in IMGDIR,\n"
	      "in place of `criu lazy-pages`. Exits 0 once every lazy page of every task is\n"
	      "served or its task has exited; 1 if the restore failed or a task could not be\n"
	      "served (each such task is named in the log, with the pages left).\n"
	      "\n"
	      "  -D, --images-dir DIR       the dump to serve (pstree.img, mm-, pagemap-, pages-)\n"
	      "  -W, --work-dir DIR         put lazy-pages.socket here (default: IMGDIR)\n"
	      "      --daemon               go to the background; return once the socket listens\n"
	      "      --pidfile FILE         write the daemon's pid here\n"
	      "      --status-fd N          write one byte to fd N once listening, then close it\n"
	      "      --page-server          remote mode: fetch the lazy pages' data from a page\n"
	      "                             server (CRIU's protocol: `criu page-server\n"
	      "                             --lazy-pages` or `uffd-manager page-server`); the\n"
	      "                             images in IMGDIR still give the memory layout\n"
	      "      --address A            the page server's host (with --page-server)\n"
	      "      --port P               its TCP port (with --page-server)\n"
	      "      --page-server-timeout MS\n"
	      "                             each answer of the page server is due within MS\n"
	      "                             (default 10000); else the connection counts as\n"
	      "                             lost: processes still missing pages are killed,\n"
	      "                             named in the log, and the exit status is 1\n"
	      "      --page-server-keepalive MS\n"
	      "                             when nothing was asked for MS (default 20000),\n"
	      "                             ask for one missing page, so that a page server\n"
	      "                             that closes quiet clients keeps us; 0: never\n"
	      "  -o, --log-file LOG         append the log to LOG (default: stderr; with\n"
	      "                             --daemon and no -o, syslog)\n"
	      "  -v, --verbose              debug log (-v4 and up too, as criu takes it)\n"
	      "  -s, --socket PATH          also listen here for `uffd-manager status`\n"
	      "  -w, --fault-window SIZE    serve at most this much around a fault (default 64K)\n"
	      "      --fixed-window         serve the whole aligned window at every fault\n"
	      "      --spin USEC            poll while faults come densely (default 100)\n"
	      "      --no-collapse          no huge pages made of fully served 2 MiB blocks\n"
	      "      --no-prefault          do not map the images' cached pages ahead\n"
	      "      --fill-chunk SIZE      bytes per background fill step (default 256K)\n"
	      "      --fill-workers N       threads that fill, the event loop counted (default 2)\n"
	      "      --no-fill              serve on demand only, even after RSTF\n"
	      "      --no-proc-connector    do not subscribe to the proc connector\n"
	      "      --no-keeper            no keeper process holding copies of the uffds\n"
	      "  -h, --help                 this help\n"
	      "\n"
	      "      --page-server-grace MS if the connection breaks or stalls, the processes\n"
	      "                             wait while it is made again, with back-off, for up\n"
	      "                             to MS (default 60000); then, or at once with 0,\n"
	      "                             every process still missing pages is killed\n", out);
	fputs(tls_help, out);
	fputs("\nSee uffd-manager(8), sections CRIU, PAGE SERVER and EXAMPLES.\n", out);
}

/* --fault-window: a power of two from 4K to 1G. */
static int opt_window(struct daemon *d, const char *arg)
{
	uint64_t v;

	if (parse_size(arg, &v) < 0 || v < 4096 || (v & (v - 1)) || v > (1u << 30)) {
		fprintf(stderr, "uffd-manager: --fault-window %s: want a power of two from 4K to 1G\n", arg);
		return -1;
	}
	d->o.fault_window = v;
	return 0;
}

/* --spin: microseconds, 0 to 10000. */
static int opt_spin(struct daemon *d, const char *arg)
{
	uint64_t v;

	if (parse_size(arg, &v) < 0 || v > 10000) {
		fprintf(stderr, "uffd-manager: --spin %s: want microseconds from 0 to 10000\n", arg);
		return -1;
	}
	d->o.spin_us = (unsigned)v;
	return 0;
}

/* Beside the socket: DIR/working-sets for a socket DIR/NAME; NULL when it has no directory. */
static const char *default_wset_dir(const char *sock, char *buf, size_t len)
{
	const char *slash = strrchr(sock, '/');

	if (!slash || slash == sock || sock[0] != '/')
		return NULL;
	snprintf(buf, len, "%.*s/working-sets", (int)(slash - sock), sock);
	return buf;
}

/* The CPUs this process may run on (its affinity), at least 1. */
static int usable_cpus(void)
{
	cpu_set_t cs;

	if (sched_getaffinity(0, sizeof(cs), &cs) < 0)
		return (int)sysconf(_SC_NPROCESSORS_ONLN);
	return CPU_COUNT(&cs) > 0 ? CPU_COUNT(&cs) : 1;
}

/* --fill-workers: 1 to FILLW_MAX. */
static int opt_fill_workers(struct daemon *d, const char *arg)
{
	uint64_t v;

	if (parse_size(arg, &v) < 0 || v < 1 || v > FILLW_MAX) {
		fprintf(stderr, "uffd-manager: --fill-workers %s: want 1 to %d\n", arg, FILLW_MAX);
		return -1;
	}
	d->o.fill_workers = (unsigned)v;
	return 0;
}

/* --fill-chunk: a multiple of 4K up to 1G. */
static int opt_fill_chunk(struct daemon *d, const char *arg)
{
	uint64_t v;

	if (parse_size(arg, &v) < 0 || v < 4096 || v % 4096 || v > (1u << 30)) {
		fprintf(stderr, "uffd-manager: --fill-chunk %s: want a multiple of 4K up to 1G\n", arg);
		return -1;
	}
	d->o.fill_chunk = v;
	return 0;
}

static void on_listen(struct ev *ev, uint32_t events)
{
	struct daemon *d = container_of(ev, struct daemon, listen_ev);

	(void)events;
	client_accept(d);
}

/* Stop accepting; serve what we have to the end, then exit. */
static void start_draining(struct daemon *d)
{
	if (d->draining)
		return;
	d->draining = true;
	log_info("stopping: no new processes; serving %u to the end", d->nr_targets);
	if (d->listen_fd >= 0) {
		loop_del(&d->loop, &d->listen_ev);
		close(d->listen_fd);
		d->listen_fd = -1;
		if (d->unlink_socket)
			unlink(d->o.socket_path);
	}
	timer_cancel(&d->loop, &d->accept_retry);
	d->loop.idle_pending = true;
	daemon_check_done(d);
}

/*
 * Restart (restart.h): SIGUSR2 leaves at once, everything still held by the
 * keeper (which shares our fd table) for the next daemon on this socket;
 * nothing is filled first. Not in CRIU mode (no daemon takes its tasks back).
 */
static void leave_to_next(struct daemon *d)
{
	if (!d->keeper.running || d->journal.fd < 0 || !d->keeper_path[0]) {
		log_warnx("SIGUSR2: no keeper or journal to leave the processes to; ignored");
		return;
	}
	log_info("SIGUSR2: leaving %u processes (and %u released) to the keeper (pid %d) for the next daemon on %s",
		 d->nr_targets, d->nr_released, (int)d->keeper.pid, d->o.socket_path);
	_exit(0);
}

static void restart_test_hooks(struct daemon *d);

/*
 * Start the journal and the keeper (before any thread: the keeper is a
 * clone sharing our fd table), and in hand-over mode take back what the
 * keeper of a daemon before us holds. Before listen: the old keeper has let
 * go of the old listening socket by then.
 */
static void restart_start(struct daemon *d)
{
	char why[512] = "";
	int ret;

	log_info("uffd-manager %s, pid %d", UFFD_VERSION, (int)getpid());
	restart_test_hooks(d);
	if (d->o.no_keeper) {
		d->journal.fd = -1;
	} else if ((ret = journal_create(&d->journal)) < 0) {
		log_warnx("cannot make the journal: %s; a new daemon could not take over", strerror(-ret));
	} else if ((ret = keeper_start(&d->keeper, &d->journal)) < 0) {
		log_warnx("cannot start the keeper: %s; if this daemon dies, the processes it "
			  "serves may read zeros", strerror(-ret));
	} else {
		log_info("keeper pid %d holds a copy of every userfaultfd served", (int)d->keeper.pid);
	}
	if (d->mode != MODE_HANDOVER ||
	    restart_keeper_path(d->o.socket_path, d->keeper_path, sizeof(d->keeper_path)) < 0) {
		d->keeper_path[0] = 0;
		return;
	}
	ret = restart_adopt(d, d->keeper_path, why, sizeof(why));
	if (ret < 0)
		log_warnx("restart: cannot take over from the keeper at %s: %s", d->keeper_path, why);
}

/* UFFD_TEST_DIE_IN_READ=remove|fork|remap|unmap: see RESTART in uffd-manager(8). */
static void restart_test_hooks(struct daemon *d)
{
	const char *e = getenv("UFFD_TEST_DIE_IN_READ");

	if (!e)
		return;
	d->die_in_read = !strcmp(e, "remove") ? UFFD_EVENT_REMOVE : !strcmp(e, "fork") ? UFFD_EVENT_FORK :
			 !strcmp(e, "remap") ? UFFD_EVENT_REMAP : !strcmp(e, "unmap") ? UFFD_EVENT_UNMAP : 0;
	log_warnx("UFFD_TEST_DIE_IN_READ=%s: this daemon kills itself inside its first read of such an event (a test)", e);
}

/*
 * UFFD_TEST_PREFAULT_NAP_US=N: the prefault worker sleeps N us after each
 * step (256 KiB), so that tests can act while it runs.
 */
static void prefault_test_hooks(struct daemon *d)
{
	const char *e = getenv("UFFD_TEST_PREFAULT_NAP_US");

	if (!e)
		return;
	d->pages.pq_nap_us = (unsigned)strtoul(e, NULL, 10);
	log_warnx("UFFD_TEST_PREFAULT_NAP_US=%s: the prefault worker sleeps after each step (a test)", e);
}

/* Listen on the adoption socket, for the daemon after us. */
static void restart_ready(struct daemon *d)
{
	char why[512] = "";

	if (!d->keeper_path[0] || !d->keeper.running)
		return;
	if (restart_listen(d, d->keeper_path, why, sizeof(why)) < 0) {
		log_warnx("restart: cannot listen on %s: %s; a new daemon could not take over", d->keeper_path, why);
		d->keeper_path[0] = 0;
	}
}

static void on_signal(struct ev *ev, uint32_t events)
{
	struct daemon *d = container_of(ev, struct daemon, signal_ev);
	struct signalfd_siginfo si;

	(void)events;
	while (read(d->signal_fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGUSR2 && d->mode == MODE_HANDOVER)
			leave_to_next(d);
		if (si.ssi_signo != SIGTERM && si.ssi_signo != SIGINT)
			continue;
		if (d->mode == MODE_CRIU)
			criu_stop(d);
		else
			start_draining(d);
	}
}

static bool on_idle(struct loop *l)
{
	struct daemon *d = container_of(l, struct daemon, loop);

	return fill_step(d);
}

static void before_sleep(struct loop *l)
{
	struct daemon *d = container_of(l, struct daemon, loop);

	serve_retry_parked(d);
	if (d->remote || d->remotes) {
		/* Keep background requests in flight; send what the faults asked for first. */
		fill_step(d);
		remote_pump(d);
		rserve_gc(d);
	}
}

static int setup_signals(struct daemon *d)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR2 };

	d->signal_fd = sys_signalfd(sigs, 4);
	if (d->signal_fd < 0)
		return d->signal_fd;
	return loop_add(&d->loop, &d->signal_ev, d->signal_fd, EPOLLIN, on_signal);
}

/* Listen on the manager's socket: the one systemd passes, or our own. */
static void listen_manager(struct daemon *d)
{
	char why[256] = "";

	d->listen_fd = listen_from_systemd(why, sizeof(why));
	if (d->listen_fd == -1) {
		d->listen_fd = listen_bind(d->o.socket_path, why, sizeof(why));
		d->unlink_socket = d->listen_fd >= 0;
	} else if (d->listen_fd >= 0) {
		d->o.socket_path = "(from systemd)";
	}
	if (d->listen_fd < 0)
		fatalx("cannot listen: %s", why);
	if (loop_add(&d->loop, &d->listen_ev, d->listen_fd, EPOLLIN, on_listen) < 0)
		fatal("epoll_ctl");
}

static int run_daemon(struct daemon *d, int ready_fd)
{
	char why[512] = "";
	int ret, status = 0;

	d->start_ns = now_ns();
	d->fd_limit = sys_raise_nofile();
	d->fds_in_use = 16;
	daemon_reserve_fill(d);	/* first: the lowest numbers, under any limit set later */
	if (loop_init(&d->loop) < 0)
		fatal("epoll_create1");
	d->loop.idle = on_idle;
	d->loop.before_sleep = before_sleep;
	d->loop.spin_ns = (uint64_t)d->o.spin_us * 1000;
	prefault_test_hooks(d);
	if (setup_signals(d) < 0)
		fatal("signalfd");

	d->listen_fd = -1;
	restart_start(d);
	if (d->mode == MODE_HANDOVER || d->o.status_socket)
		listen_manager(d);
	restart_ready(d);
	/* Now, not at the first HELLO: its fd is part of the daemon from the start. */
	if (d->listen_fd >= 0 && (ret = loader_start(d, client_loaded)) < 0)
		log_warnx("cannot start the image loader thread: %s (hand-overs will be refused)",
			  strerror(-ret));
	if ((ret = fillw_start(d, d->o.fill_workers)) < 0)
		log_warnx("cannot start the fill workers: %s (the event loop fills alone)",
			  strerror(-ret));
	if (d->mode == MODE_CRIU && criu_listen(d, why, sizeof(why)) < 0)
		fatalx("criu: cannot listen: %s", why);
	if (!d->o.no_procconn)
		d->pc = procconn_open(d);
	log_info("listening on %s (fault window %" PRIu64 " KiB, fill %s with %u worker%s, fd limit %u)",
		 d->mode == MODE_CRIU ? CRIU_SOCK_NAME : d->o.socket_path, d->o.fault_window >> 10,
		 d->o.no_fill ? "off" : d->mode == MODE_CRIU ? "after RSTF" : "on",
		 fillw_count(d), fillw_count(d) == 1 ? "" : "s", d->fd_limit);
	if (ready_fd >= 0) {
		if (write(ready_fd, "R", 1) != 1)
			log_warn("--ready-fd %d", ready_fd);
		close(ready_fd);
	}

	ret = loop_run(&d->loop);
	if (ret < 0)
		log_warnx("event loop: %s", strerror(-ret));
	released_close_all(d);
	while (d->clients)
		client_close(d->clients);
	loader_stop(d);		/* after the clients: their jobs are dropped */
	collapse_stop(d);
	fillw_stop(d);
	pages_prefault_stop(&d->pages);
	procconn_close(d->pc);
	if (d->listen_fd >= 0) {
		close(d->listen_fd);
		if (d->unlink_socket)
			unlink(d->o.socket_path);
	}
	if (d->mode == MODE_CRIU)
		status = criu_finish(d);
	/* Every process is served or gone: the keeper ends with us. */
	if (d->keeper_path[0])
		unlink(d->keeper_path);
	keeper_close(&d->keeper, &d->journal);
	daemon_reserve_close(d);
	loop_fini(&d->loop);
	log_debug("loop: %" PRIu64 " epoll waits, %" PRIu64 " spins (%" PRIu64 " ended by work), %" PRIu64
		  " yields; hot fd polled alone %" PRIu64 " times, %" PRIu64 " with work",
		  d->loop.spin.waits, d->loop.spin.spins, d->loop.spin.hits, d->loop.spin.yields,
		  d->loop.spin.hot_polls, d->loop.spin.hot_hits);
	log_info("exiting: %" PRIu64 " processes served, %" PRIu64 " exited early, %" PRIu64
		 " refused; %" PRIu64 " pages read from the images before their copy",
		 d->tot.served, d->tot.exited, d->tot.refused, d->tot.pages_read);
	return ret < 0 ? 1 : status;
}

/*
 * --daemon: fork; the parent returns only when the child says it listens
 * (a byte on the pipe) or has died (EOF). The child gets *READY_FD.
 */
static void daemonize(bool to_syslog, const char *logfile, int *ready_fd)
{
	int p[2], st, null;
	pid_t pid;
	char b;

	if (pipe2(p, O_CLOEXEC) < 0 || (pid = fork()) < 0) {
		fprintf(stderr, "uffd-manager criu: --daemon: %s\n", strerror(errno));
		exit(1);
	}
	if (pid > 0) {
		close(p[1]);
		if (read(p[0], &b, 1) == 1)
			exit(0);
		waitpid(pid, &st, 0);
		fprintf(stderr, "uffd-manager criu: the daemon did not start (exit status %d)%s%s\n",
			WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st),
			logfile ? "; see " : "", logfile ? logfile : "");
		exit(1);
	}
	close(p[0]);
	setsid();
	null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		if (to_syslog)
			dup2(null, 2);
		close(null);
	}
	*ready_fd = p[1];
}

/* Send the log to LOG (appended) from now on; keep the old stderr for the caller. */
static int log_to_file(const char *log, int *old_err)
{
	int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

	if (fd < 0) {
		fprintf(stderr, "uffd-manager criu: -o %s: %s\n", log, strerror(errno));
		return -1;
	}
	*old_err = fcntl(2, F_DUPFD_CLOEXEC, 3);
	dup2(fd, 2);
	close(fd);
	return 0;
}

/* -v, -vv, or criu's -vN (4 and up is debug). */
static void opt_verbose(struct daemon *d, const char *arg)
{
	if (!arg || arg[0] == 'v' || atoi(arg) >= 4)
		d->o.verbose++;
}

/*
 * PATH as criu takes its -o and --pidfile: a relative one is in the work dir
 * (-W, else -D), where `criu lazy-pages` would put it. NULL if too long.
 */
static const char *in_workdir(const struct criu_opts *co, const char *opt, const char *path,
			      char *buf, size_t len)
{
	const char *dir = co->workdir ? co->workdir : co->imgdir;

	if (path[0] == '/')
		return path;
	if ((size_t)snprintf(buf, len, "%s/%s", dir, path) >= len) {
		fprintf(stderr, "uffd-manager criu: %s %s: the path in %s is too long\n", opt, path,
			dir);
		return NULL;
	}
	return buf;
}

static int cmd_criu(struct daemon *d, int argc, char **argv)
{
	enum { O_DAEMON = 256, O_PIDFILE, O_STATUS_FD, O_FILL_CHUNK, O_NO_FILL, O_NO_PROCCONN,
	       O_PAGE_SERVER, O_ADDRESS, O_PORT, O_PS_TIMEOUT, O_PS_KEEPALIVE, O_NO_KEEPER,
	       O_FIXED_WINDOW, O_SPIN, O_NO_COLLAPSE, O_PS_GRACE, O_FILL_WORKERS, O_NO_PREFAULT };
	static const struct option opts[] = {
		{ "images-dir", required_argument, NULL, 'D' },
		{ "work-dir", required_argument, NULL, 'W' },
		{ "daemon", no_argument, NULL, O_DAEMON },
		{ "pidfile", required_argument, NULL, O_PIDFILE },
		{ "status-fd", required_argument, NULL, O_STATUS_FD },
		{ "log-file", required_argument, NULL, 'o' },
		{ "verbose", optional_argument, NULL, 'v' },
		{ "socket", required_argument, NULL, 's' },
		{ "fault-window", required_argument, NULL, 'w' },
		{ "fixed-window", no_argument, NULL, O_FIXED_WINDOW },
		{ "spin", required_argument, NULL, O_SPIN },
		{ "no-collapse", no_argument, NULL, O_NO_COLLAPSE },
		{ "no-prefault", no_argument, NULL, O_NO_PREFAULT },
		{ "fill-chunk", required_argument, NULL, O_FILL_CHUNK },
		{ "fill-workers", required_argument, NULL, O_FILL_WORKERS },
		{ "no-fill", no_argument, NULL, O_NO_FILL },
		{ "no-proc-connector", no_argument, NULL, O_NO_PROCCONN },
		{ "no-keeper", no_argument, NULL, O_NO_KEEPER },
		{ "page-server", no_argument, NULL, O_PAGE_SERVER },
		{ "address", required_argument, NULL, O_ADDRESS },
		{ "port", required_argument, NULL, O_PORT },
		{ "page-server-timeout", required_argument, NULL, O_PS_TIMEOUT },
		{ "page-server-keepalive", required_argument, NULL, O_PS_KEEPALIVE },
		{ "page-server-grace", required_argument, NULL, O_PS_GRACE },
		TLS_LONGOPTS,
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct criu_opts co = { .status_fd = -1 };
	const char *logfile = NULL, *addr = NULL, *port = NULL;
	char logpath[PATH_MAX], pidpath[PATH_MAX];
	bool bg = false, remote = false, ps_timeout = false;
	char why[1024];
	int c, ready_fd = -1, old_err = -1;
	uint64_t v;

	while ((c = getopt_long(argc, argv, "D:W:o:v::s:w:h", opts, NULL)) != -1) {
		switch (c) {
		case 'D': co.imgdir = optarg; break;
		case 'W': co.workdir = optarg; break;
		case O_DAEMON: bg = true; break;
		case O_PIDFILE: co.pidfile = optarg; break;
		case O_STATUS_FD:
			if (parse_size(optarg, &v) < 0 || v > INT_MAX || fcntl((int)v, F_GETFD) < 0) {
				fprintf(stderr, "uffd-manager criu: --status-fd %s: not an open fd\n", optarg);
				return 2;
			}
			co.status_fd = (int)v;
			break;
		case 'o': logfile = optarg; break;
		case 'v': opt_verbose(d, optarg); break;
		case 's':
			d->o.socket_path = optarg;
			d->o.status_socket = true;
			break;
		case 'w':
			if (opt_window(d, optarg) < 0)
				return 2;
			break;
		case O_FIXED_WINDOW: d->o.fixed_window = true; break;
		case O_SPIN:
			if (opt_spin(d, optarg) < 0)
				return 2;
			break;
		case O_NO_COLLAPSE: d->o.no_collapse = true; break;
		case O_NO_PREFAULT: d->o.no_prefault = true; break;
		case O_FILL_CHUNK:
			if (opt_fill_chunk(d, optarg) < 0)
				return 2;
			break;
		case O_FILL_WORKERS:
			if (opt_fill_workers(d, optarg) < 0)
				return 2;
			break;
		case O_NO_FILL: d->o.no_fill = true; break;
		case O_NO_PROCCONN: d->o.no_procconn = true; break;
		case O_NO_KEEPER: d->o.no_keeper = true; break;
		case O_PAGE_SERVER: remote = true; break;
		case O_ADDRESS: addr = optarg; break;
		case O_PORT: port = optarg; break;
		case O_PS_TIMEOUT:
			if (parse_size(optarg, &v) < 0 || v < 1 || v > 86400000) {
				fprintf(stderr, "uffd-manager criu: --page-server-timeout %s: want 1 to 86400000 ms\n", optarg);
				return 2;
			}
			d->o.ps_timeout_ms = (unsigned)v;
			ps_timeout = true;
			break;
		case O_PS_KEEPALIVE:
			if (parse_size(optarg, &v) < 0 || v > 86400000) {
				fprintf(stderr, "uffd-manager criu: --page-server-keepalive %s: want 0 to 86400000 ms\n", optarg);
				return 2;
			}
			d->o.ps_keepalive_ms = (unsigned)v;
			ps_timeout = true;
			break;
		case O_PS_GRACE:
			if (parse_size(optarg, &v) < 0 || v > 86400000) {
				fprintf(stderr, "uffd-manager criu: --page-server-grace %s: want 0 to 86400000 ms\n", optarg);
				return 2;
			}
			d->o.ps_grace_ms = (unsigned)v;
			ps_timeout = true;
			break;
		case 'h':
			usage_criu(stdout);
			return 0;
		default:
			if (opt_tls(&co.tls, c, optarg))
				break;
			usage_criu(stderr);
			return 2;
		}
	}
	if (check_tls(&co.tls, "criu"))
		return 2;
	if (co.tls.on && !remote) {
		fputs("uffd-manager criu: --tls goes with --page-server\n", stderr);
		return 2;
	}
	if (optind != argc) {
		fprintf(stderr, "uffd-manager criu: unexpected argument '%s'\n", argv[optind]);
		usage_criu(stderr);
		return 2;
	}
	if (!co.imgdir) {
		fputs("uffd-manager criu: -D IMGDIR is required\n", stderr);
		usage_criu(stderr);
		return 2;
	}
	if (remote != (addr || port) || (remote && (!addr || !port))) {
		fputs("uffd-manager criu: --page-server needs --address and --port (and they need it)\n",
		      stderr);
		return 2;
	}
	if (ps_timeout && !remote) {
		fputs("uffd-manager criu: --page-server-timeout, --page-server-keepalive and --page-server-grace go with --page-server\n", stderr);
		return 2;
	}
	co.ps_addr = addr;
	co.ps_port = port;
	/* As criu's: a relative log or pidfile is in the work dir (else the images dir). */
	if ((logfile && !(logfile = in_workdir(&co, "-o", logfile, logpath, sizeof(logpath)))) ||
	    (co.pidfile &&
	     !(co.pidfile = in_workdir(&co, "--pidfile", co.pidfile, pidpath, sizeof(pidpath)))))
		return 2;
	if (logfile && log_to_file(logfile, &old_err) < 0)
		return 1;
	log_init("uffd-manager", d->o.verbose ? LOG_LVL_DEBUG : LOG_LVL_INFO, bg && !logfile);
	if (criu_open(d, &co, why, sizeof(why)) < 0) {
		/* Refused before anything listens: say it where the caller looks too. */
		log_warnx("criu: %s", why);
		if (old_err >= 0)
			dprintf(old_err, "uffd-manager criu: %s\n", why);
		else if (bg)
			fprintf(stderr, "uffd-manager criu: %s\n", why);
		return 1;
	}
	if (old_err >= 0)
		close(old_err);
	if (bg)
		daemonize(!logfile, logfile, &ready_fd);
	return run_daemon(d, ready_fd);
}

static void usage_pagesrv(FILE *out)
{
	fputs("usage: uffd-manager page-server -D IMGDIR [--address A] --port P [--status-fd N]\n"
	      "                                [--max-clients N] [--idle-timeout MS] [-o LOG] [-v]\n"
	      "                                [--all-pages] [--tls [--tls-cacert F] [--tls-cacrl F] [--tls-cert F]\n"
	      "                                 [--tls-key F] [--tls-no-cn-verify]]\n"
	      "\n"
	      "Serve the lazy pages of the dump in IMGDIR (and its parent chain) over TCP in\n"
	      "CRIU's page-server protocol, to `uffd-manager criu --page-server` or `criu\n"
	      "lazy-pages --page-server`. Serves clients one after another or at once, until\n"
	      "SIGTERM or SIGINT.\n"
	      "\n"
	      "  -D, --images-dir DIR       the dump to serve\n"
	      "      --address A            listen on this address only (default: all). There\n"
	      "                             is no authentication: anyone who can reach the\n"
	      "                             port can read the dumped memory\n"
	      "      --port P               TCP port; 0 picks a free one\n"
	      "      --status-fd N          write the port (decimal, newline) to fd N once\n"
	      "                             listening, then close it\n"
	      "      --max-clients N        connections open at once (default 1024); more wait\n"
	      "                             until one closes\n"
	      "      --idle-timeout MS      close a connection quiet for MS either way: no\n"
	      "                             request and no reading of an answer, before its\n"
	      "                             first request or after its last (default 60000)\n"
	      "  -o, --log-file LOG         append the log to LOG (default: stderr)\n"
	      "  -v, --verbose              debug log (every request)\n"
	      "      --drop-after N         testing: cut every connection in the middle of its\n"
	      "                             answer N + 1\n"
	      "      --stall-after N        testing: after N answers on a connection, answer\n"
	      "                             nothing more and keep it open\n"
	      "      --all-pages            answer GET for pages restored eagerly too (not only\n"
	      "                             lazy ones): for `uffd-inject restore --page-server`\n"
	      "                             from a copy of the dump without its pages files\n"
	      "  -h, --help                 this help\n", out);
	fputs(tls_help, out);
	fputs("                             (a client whose certificate our CA did not sign\n"
	      "                             is refused; with --address, its certificate must\n"
	      "                             name that address unless --tls-no-cn-verify)\n"
	      "\n"
	      "A client that comes back (after a cut) is served like a new one.\n"
	      "See uffd-manager(8), section PAGE SERVER.\n", out);
}

static int cmd_pagesrv(int argc, char **argv)
{
	enum { O_ADDRESS = 256, O_PORT, O_STATUS_FD, O_DROP_AFTER, O_STALL_AFTER, O_MAX_CLIENTS,
	       O_IDLE, O_ALL_PAGES };
	static const struct option opts[] = {
		{ "images-dir", required_argument, NULL, 'D' },
		{ "address", required_argument, NULL, O_ADDRESS },
		{ "port", required_argument, NULL, O_PORT },
		{ "status-fd", required_argument, NULL, O_STATUS_FD },
		{ "log-file", required_argument, NULL, 'o' },
		{ "verbose", optional_argument, NULL, 'v' },
		{ "drop-after", required_argument, NULL, O_DROP_AFTER },
		{ "stall-after", required_argument, NULL, O_STALL_AFTER },
		{ "max-clients", required_argument, NULL, O_MAX_CLIENTS },
		{ "idle-timeout", required_argument, NULL, O_IDLE },
		{ "all-pages", no_argument, NULL, O_ALL_PAGES },
		TLS_LONGOPTS,
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct pagesrv_opts po = { .status_fd = -1 };
	const char *logfile = NULL;
	int c, verbose = 0, old_err = -1;
	uint64_t v;

	while ((c = getopt_long(argc, argv, "D:o:v::h", opts, NULL)) != -1) {
		switch (c) {
		case 'D': po.imgdir = optarg; break;
		case O_ADDRESS: po.addr = optarg; break;
		case O_PORT: po.port = optarg; break;
		case O_STATUS_FD:
			if (parse_size(optarg, &v) < 0 || v > INT_MAX || fcntl((int)v, F_GETFD) < 0) {
				fprintf(stderr, "uffd-manager page-server: --status-fd %s: not an open fd\n", optarg);
				return 2;
			}
			po.status_fd = (int)v;
			break;
		case 'o': logfile = optarg; break;
		case 'v': verbose++; break;
		case O_DROP_AFTER:
			if (parse_size(optarg, &v) < 0 || v < 1 || v > UINT32_MAX) {
				fprintf(stderr, "uffd-manager page-server: --drop-after %s: want a count from 1\n", optarg);
				return 2;
			}
			po.drop_after = (unsigned)v;
			break;
		case O_STALL_AFTER:
			if (parse_size(optarg, &v) < 0 || v < 1 || v > UINT32_MAX) {
				fprintf(stderr, "uffd-manager page-server: --stall-after %s: want a count from 1\n", optarg);
				return 2;
			}
			po.stall_after = (unsigned)v;
			break;
		case O_MAX_CLIENTS:
			if (parse_size(optarg, &v) < 0 || v < 1 || v > 1000000) {
				fprintf(stderr, "uffd-manager page-server: --max-clients %s: want 1 to 1000000\n", optarg);
				return 2;
			}
			po.max_clients = (unsigned)v;
			break;
		case O_IDLE:
			if (parse_size(optarg, &v) < 0 || v < 1 || v > 86400000) {
				fprintf(stderr, "uffd-manager page-server: --idle-timeout %s: want 1 to 86400000 ms\n", optarg);
				return 2;
			}
			po.idle_ms = (unsigned)v;
			break;
		case O_ALL_PAGES:
			po.all_pages = true;
			break;
		case 'h':
			usage_pagesrv(stdout);
			return 0;
		default:
			if (opt_tls(&po.tls, c, optarg))
				break;
			usage_pagesrv(stderr);
			return 2;
		}
	}
	if (check_tls(&po.tls, "page-server"))
		return 2;
	if (optind != argc || !po.imgdir || !po.port) {
		fputs(optind != argc ? "uffd-manager page-server: unexpected argument\n" :
				       "uffd-manager page-server: -D IMGDIR and --port P are required\n",
		      stderr);
		usage_pagesrv(stderr);
		return 2;
	}
	if (logfile && log_to_file(logfile, &old_err) < 0)
		return 1;
	if (old_err >= 0)
		close(old_err);
	log_init("uffd-manager", verbose ? LOG_LVL_DEBUG : LOG_LVL_INFO, 0);
	return pagesrv_run(&po);
}

static int cmd_status(int argc, char **argv, const char *defpath)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "socket", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = defpath;
	int json = 0, c;

	while ((c = getopt_long(argc, argv, "js:h", opts, NULL)) != -1) {
		switch (c) {
		case 'j': json = 1; break;
		case 's': path = optarg; break;
		case 'h':
			puts("usage: uffd-manager status [--json] [--socket PATH]");
			return 0;
		default:
			fputs("usage: uffd-manager status [--json] [--socket PATH]\n", stderr);
			return 2;
		}
	}
	if (!path) {
		fputs("uffd-manager status: no --socket and no default (XDG_RUNTIME_DIR unset)\n", stderr);
		return 2;
	}
	return status_query(path, json, stdout);
}

int main(int argc, char **argv)
{
	enum { O_FILL_CHUNK = 256, O_NO_FILL, O_EXIT_DONE, O_MAX_CLIENTS, O_HANDSHAKE,
	       O_READY_FD, O_SYSLOG, O_NO_PROCCONN, O_NO_KEEPER, O_MAX_ENTRIES, O_FIXED_WINDOW,
	       O_SPIN, O_NO_COLLAPSE, O_WSET_DIR, O_NO_WSET, O_FILL_WORKERS, O_NO_PREFAULT };
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "fault-window", required_argument, NULL, 'w' },
		{ "fixed-window", no_argument, NULL, O_FIXED_WINDOW },
		{ "spin", required_argument, NULL, O_SPIN },
		{ "no-collapse", no_argument, NULL, O_NO_COLLAPSE },
		{ "no-prefault", no_argument, NULL, O_NO_PREFAULT },
		{ "working-set-dir", required_argument, NULL, O_WSET_DIR },
		{ "no-working-set", no_argument, NULL, O_NO_WSET },
		{ "fill-chunk", required_argument, NULL, O_FILL_CHUNK },
		{ "fill-workers", required_argument, NULL, O_FILL_WORKERS },
		{ "no-fill", no_argument, NULL, O_NO_FILL },
		{ "exit-when-done", no_argument, NULL, O_EXIT_DONE },
		{ "max-clients", required_argument, NULL, O_MAX_CLIENTS },
		{ "handshake-timeout", required_argument, NULL, O_HANDSHAKE },
		{ "ready-fd", required_argument, NULL, O_READY_FD },
		{ "max-image-entries", required_argument, NULL, O_MAX_ENTRIES },
		{ "page-server-grace", required_argument, NULL, 600 },	/* restore --page-server */
		{ "syslog", no_argument, NULL, O_SYSLOG },
		{ "no-proc-connector", no_argument, NULL, O_NO_PROCCONN },
		{ "no-keeper", no_argument, NULL, O_NO_KEEPER },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	static struct daemon d;
	char defpath[108], wsdir[PATH_MAX];
	bool no_wset = false;
	int c, ready_fd = -1;
	uint64_t v;

	d.o.fault_window = DEFAULT_WINDOW;
	d.o.fill_chunk = DEFAULT_FILL_CHUNK;
	d.o.fill_workers = usable_cpus() >= 2 ? 2 : 1;
	d.o.spin_us = DEFAULT_SPIN_US;
	d.o.max_clients = DEFAULT_MAX_CLIENTS;
	d.o.handshake_ms = DEFAULT_HANDSHAKE_MS;
	d.o.max_image_entries = DEFAULT_MAX_IMAGE_ENTRIES;
	d.o.ps_timeout_ms = REMOTE_TIMEOUT_MS;
	d.o.ps_keepalive_ms = REMOTE_KEEPALIVE_MS;
	d.o.ps_grace_ms = REMOTE_GRACE_MS;
	/*
	 * Faults read cold image pages (serve.c). Set before any image is
	 * loaded: criu mode loads its tasks' images before the daemon runs.
	 */
	d.pages.keep_fds = true;
	if (handover_default_socket(defpath, sizeof(defpath)) == 0)
		d.o.socket_path = defpath;

	if (argc > 1 && !strcmp(argv[1], "status"))
		return cmd_status(argc - 1, argv + 1, d.o.socket_path);
	if (argc > 1 && !strcmp(argv[1], "criu"))
		return cmd_criu(&d, argc - 1, argv + 1);
	if (argc > 1 && !strcmp(argv[1], "page-server"))
		return cmd_pagesrv(argc - 1, argv + 1);

	while ((c = getopt_long(argc, argv, "s:w:vhV", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			d.o.socket_path = optarg;
			break;
		case 'w':
			if (opt_window(&d, optarg) < 0)
				return 2;
			break;
		case O_FIXED_WINDOW:
			d.o.fixed_window = true;
			break;
		case O_SPIN:
			if (opt_spin(&d, optarg) < 0)
				return 2;
			break;
		case O_NO_COLLAPSE:
			d.o.no_collapse = true;
			break;
		case O_NO_PREFAULT:
			d.o.no_prefault = true;
			break;
		case O_WSET_DIR:
			d.o.wset_dir = optarg;
			break;
		case O_NO_WSET:
			no_wset = true;
			break;
		case O_FILL_CHUNK:
			if (opt_fill_chunk(&d, optarg) < 0)
				return 2;
			break;
		case O_FILL_WORKERS:
			if (opt_fill_workers(&d, optarg) < 0)
				return 2;
			break;
		case O_NO_FILL:
			d.o.no_fill = true;
			break;
		case O_EXIT_DONE:
			d.o.exit_when_done = true;
			break;
		case O_MAX_CLIENTS:
			if (parse_size(optarg, &v) < 0 || v < 1 || v > 1000000) {
				fprintf(stderr, "uffd-manager: --max-clients %s: want 1 to 1000000\n", optarg);
				return 2;
			}
			d.o.max_clients = v;
			break;
		case O_HANDSHAKE:
			if (parse_size(optarg, &v) < 0 || v < 1 || v > 3600000) {
				fprintf(stderr, "uffd-manager: --handshake-timeout %s: want 1 to 3600000 ms\n", optarg);
				return 2;
			}
			d.o.handshake_ms = v;
			break;
		case O_MAX_ENTRIES:
			if (parse_size(optarg, &v) < 0 || v > (1ull << 40)) {
				fprintf(stderr, "uffd-manager: --max-image-entries %s: want 0 to 1T\n", optarg);
				return 2;
			}
			d.o.max_image_entries = v;
			break;
		case 600:	/* --page-server-grace, for hand-overs with a page server */
			if (parse_size(optarg, &v) < 0 || v > 86400000) {
				fprintf(stderr, "uffd-manager: --page-server-grace %s: want 0 to 86400000 ms\n", optarg);
				return 2;
			}
			d.o.ps_grace_ms = (unsigned)v;
			break;
		case O_READY_FD:
			if (parse_size(optarg, &v) < 0 || v > INT_MAX) {
				fprintf(stderr, "uffd-manager: --ready-fd %s: not an fd\n", optarg);
				return 2;
			}
			ready_fd = (int)v;
			break;
		case O_NO_KEEPER:
			d.o.no_keeper = true;
			break;
		case O_NO_PROCCONN:
			d.o.no_procconn = true;
			break;
		case O_SYSLOG:
			d.o.use_syslog = true;
			break;
		case 'v':
			d.o.verbose++;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("uffd-manager %s\n", UFFD_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "uffd-manager: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (!d.o.socket_path) {
		fputs("uffd-manager: no --socket given and XDG_RUNTIME_DIR is not set\n", stderr);
		return 2;
	}
	if (!no_wset && !d.o.wset_dir)
		d.o.wset_dir = default_wset_dir(d.o.socket_path, wsdir, sizeof(wsdir));
	log_init("uffd-manager", LOG_LVL_WARN + 1 + d.o.verbose > LOG_LVL_DEBUG ? LOG_LVL_DEBUG :
		 LOG_LVL_WARN + 1 + d.o.verbose, d.o.use_syslog);
	return run_daemon(&d, ready_fd);
}
