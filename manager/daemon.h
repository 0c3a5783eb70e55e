/* The daemon's state: one struct, passed down; nothing global. */
#ifndef UFFD_DAEMON_H
#define UFFD_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "journal.h"
#include "keeper.h"
#include "log.h"
#include "loop.h"
#include "pages.h"

struct target;
struct client;
struct procconn;
struct criu;
struct remote;
struct released;
struct loader;
struct stray;

/*
 * The daemon's modes, and everything each changes (this is the one place
 * that says so; the flags below carry it out):
 *
 * MODE_HANDOVER (uffd-manager): processes come by HELLO on the socket,
 *   any number at any time, each served from its own images (client.c).
 *   The fill runs unless --no-fill. The daemon runs until SIGTERM, or with
 *   --exit-when-done (o.exit_when_done) until it has served one (had_target)
 *   and no process or client is left.
 * MODE_CRIU (uffd-manager criu): one restore connects on lazy-pages.socket
 *   and hands over every task (criu.c, d->criu). No fill until the restore
 *   says RSTF (fill_held); the daemon does not stop while tasks may still
 *   come (hold_exit), and stops when the last process is gone, reporting
 *   each task (target_ended). With --page-server the lazy pages come from
 *   a page server (d->remote, the rserve_source of each task); hand-overs
 *   on --socket are still served from their images.
 * Draining (SIGTERM, in either mode): no new processes; the fill runs even
 *   with --no-fill (in CRIU mode only after RSTF); the daemon stops when
 *   no process is left.
 * A process that leaves fully served is still read until it exits
 * (released.c), and the daemon stops no sooner than DAEMON_SETTLE_NS after
 * the last such release.
 */
enum daemon_mode {
	MODE_HANDOVER,
	MODE_CRIU,
};

struct daemon_opts {
	const char *socket_path;
	uint64_t fault_window;		/* the most served around a fault */
	bool fixed_window;		/* the whole aligned window at every fault */
	unsigned spin_us;		/* loop.spin_ns, in us */
	bool no_collapse;		/* no MADV_COLLAPSE of served blocks */
	bool no_prefault;		/* no pages_prefault of the images */
	const char *wset_dir;		/* working-set records (wset.h); NULL: none */
	uint64_t fill_chunk;		/* bytes per background step */
	unsigned fill_workers;		/* threads that fill, the loop counted (fillw.h) */
	bool no_fill;
	bool exit_when_done;
	unsigned max_clients;		/* connections and served processes together */
	unsigned handshake_ms;
	int verbose;
	bool use_syslog;
	bool no_procconn;		/* do not subscribe to the proc connector */
	bool no_keeper;			/* no keeper process holding copies of the uffds */
	bool status_socket;		/* CRIU mode: listen on socket_path too (status) */
	unsigned ps_timeout_ms;		/* remote mode: an answer is due within this; 0: default */
	unsigned ps_keepalive_ms;	/* remote mode: ask for a page when quiet this long; 0: never */
	unsigned ps_grace_ms;		/* remote mode: reconnect this long before giving up; 0: at once */
	uint64_t max_image_entries;	/* pagemap entries one hand-over may load; 0: no limit */
};

struct daemon_totals {
	uint64_t served;		/* processes fully served and released */
	uint64_t exited;		/* processes that exited before being fully served */
	uint64_t refused;
	uint64_t pages_copied;
	uint64_t pages_zeroed;
	uint64_t pages_poisoned;
	uint64_t pages_continued;
	uint64_t minor_faults;
	uint64_t pages_read;		/* faults' image pages read before their copy (serve.c) */
	uint64_t faults;
	uint64_t failed;		/* processes that could not be served correctly (killed, lost) */
	uint64_t fd_reserve_used;	/* reserve fds freed for a FORK event that found none (daemon_reserve_take) */
	uint64_t adopted;		/* processes taken back from a daemon before this one */
};

/* Reserve fds for FORK events (daemon.fd_reserve). */
#define DAEMON_FD_RESERVE	4

struct daemon {
	struct daemon_opts o;
	enum daemon_mode mode;
	struct loop loop;
	struct ev listen_ev;
	bool accept_paused;	/* out of fds: the listen socket is not watched until a retry */
	int listen_fd;			/* -1 once we stop accepting */
	bool unlink_socket;		/* we created the socket file */
	struct ev signal_ev;
	int signal_fd;
	struct pages_cache pages;
	/* A fault's cold image pages are read into this first (serve.c); mapped on first use. */
	void *rbuf;
	/* Zeros to copy a huge page from (hugetlb has no UFFDIO_ZEROPAGE); mapped on first use. */
	const uint8_t *hzero;
	uint64_t hzero_len;
	struct target *targets;
	unsigned nr_targets;
	uint64_t next_target_id;
	unsigned nr_parked;		/* processes with faults parked on EAGAIN */
	struct released *released;	/* fully served, read until they exit (released.h) */
	unsigned nr_released;
	uint64_t last_release_ns;	/* when released.c last took a uffd */
	struct timer settle;		/* exit waits for the last release to settle */
	struct client *clients;
	unsigned nr_clients;
	struct procconn *pc;
	struct keeper keeper;		/* holds uffd copies in case we die (keeper.h) */
	struct journal journal;		/* what a new daemon needs to take over (journal.h); fd -1: none */
	bool journal_full;		/* said once */
	uint64_t restarts;		/* daemons before this one that served these processes */
	struct timer journal_sync;	/* counters to the journal's slots (restart.h) */
	char keeper_path[108];		/* the adoption socket (restart.h); "" when none */
	struct stray *strays;		/* uffds no record named at a restart (restart.c) */
	uint8_t die_in_read;		/* tests: SIGKILL ourselves right after a read returns this event */
	/* Mode state: see the table above. */
	bool draining;			/* SIGTERM: finish serving, then exit */
	bool had_target;		/* HANDOVER --exit-when-done: one came */
	uint64_t start_ns;
	unsigned fd_limit;		/* RLIMIT_NOFILE soft limit after raising it */
	unsigned fds_in_use;		/* estimate: base + clients + per target */
	/*
	 * Low fds held for a FORK event's new uffd (daemon_reserve_*): the
	 * kernel installs it as it hands the event over, and with no fd free
	 * the event goes back to the queue behind later ones.
	 */
	int fd_reserve[DAEMON_FD_RESERVE];
	unsigned nr_fd_reserve;
	struct daemon_totals tot;
	struct timer accept_retry;	/* after EMFILE */
	struct log_rl refuse_rl;	/* refusals of connections over the cap */
	struct criu *criu;		/* CRIU lazy-pages mode; NULL when serving hand-overs */
	struct remote *remote;		/* remote mode: page data from a page server; else NULL */
	struct remote *remotes;		/* hand-overs' own page servers (restore --page-server), rserve.c */
	struct loader *loader;		/* loads hand-overs off the loop (loader.h); NULL until one comes */
	struct collapser *collapse;	/* makes huge pages (collapse.h); NULL until needed */
	struct fillw_pool *fw;		/* the fill workers (fillw.h); NULL: the loop fills alone */
	bool hold_exit;			/* more processes may come: do not stop at the last one */
	bool fill_held;			/* no background fill yet (CRIU: until the restore says RSTF) */
	/* Told when a process that was being served leaves (WHY: NULL when fully served). */
	void (*target_ended)(struct daemon *d, const struct target *t, const char *why);
};

/* The daemon stops no sooner than this after the last release (released.h). */
#define DAEMON_SETTLE_NS	(200 * 1000000ull)

/* Stop the loop when there is nothing left to do (exit-when-done, draining). */
void daemon_check_done(struct daemon *d);

/* Take the reserve's fds back where some are missing (as many as can be had now). */
void daemon_reserve_fill(struct daemon *d);
/* Free one fd of the reserve for a read that found none; false when it is empty. */
bool daemon_reserve_take(struct daemon *d);
/* Close the reserve, at exit. */
void daemon_reserve_close(struct daemon *d);

/* True if fill should run (not held, and no --no-fill or draining). */
bool daemon_fill_enabled(const struct daemon *d);

#endif
