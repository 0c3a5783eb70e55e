/*
 * Test kit for `uffd-manager criu`: the daemon run as a child process on a
 * CRIU image dir, the criu-sim helper that plays the restore side, a raw
 * restore connection for malformed records, and what the images say.
 *
 * No Criterion here: set-up failures abort with a message.
 */
#ifndef UFFD_TEST_TCRIU_H
#define UFFD_TEST_TCRIU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* One daemon run: its private work dir (socket, log, sim output). */
struct tc_run {
	char dir[64];
	char sock[128];
	char log[128];		/* the daemon's -o */
	char err[128];		/* the daemon's stderr: what a caller of -o sees */
	char simout[128];	/* criu-sim's stdout and stderr */
	pid_t pid;		/* the daemon while it runs, else 0 */
	pid_t ps_pid;		/* the page server while it runs, else 0 */
	char ps_port[16];	/* its TCP port */
	char ps_log[128];	/* its -o */
	unsigned ps_nofile;	/* set before tc_pagesrv_start: its RLIMIT_NOFILE (soft and hard); 0: inherited */
	bool passed;		/* set by the test at its end: else the dir is kept */
};

/* Make the work dir. */
void tc_init(struct tc_run *r);

/*
 * Start `uffd-manager criu -D IMGDIR -W DIR --status-fd N -o LOG -v ARGS`.
 * True once it listens; false if it exited first (then tc_daemon_wait tells how).
 */
bool tc_daemon_start(struct tc_run *r, const char *imgdir, const char *const *args);

/*
 * Start `uffd-manager page-server -D IMGDIR --address 127.0.0.1 --port 0
 * --status-fd N -o PS_LOG -v ARGS`; true once it listens (its port in
 * r->ps_port). With r->ps_nofile, it starts with only fds 0-2 and that
 * RLIMIT_NOFILE.
 */
bool tc_pagesrv_start(struct tc_run *r, const char *imgdir, const char *const *args);

/* Stop the page server (SIGTERM); its exit code, or -1 if it had to be killed. */
int tc_pagesrv_stop(struct tc_run *r);

/* Connect to the page server over TCP. */
int tc_pagesrv_connect(const struct tc_run *r);

/* Wait for the daemon to exit: its wait status, or -1 after TIMEOUT_MS (then it is killed). */
int tc_daemon_wait(struct tc_run *r, int timeout_ms);

/* The daemon's exit code, or -1 if it did not exit by itself within TIMEOUT_MS. */
int tc_daemon_exit_code(struct tc_run *r, int timeout_ms);

/* Run criu-sim -D IMGDIR -W DIR ARGS; its exit code, or -1 after TIMEOUT_MS. */
int tc_sim_run(struct tc_run *r, const char *imgdir, const char *const *args, int timeout_ms);

/* Start criu-sim in the background; tc_sim_wait collects it. */
pid_t tc_sim_start(struct tc_run *r, const char *imgdir, const char *const *args);
int tc_sim_wait(pid_t pid, int timeout_ms);

/* Does the file contain S? */
bool tc_file_has(const char *path, const char *s);

/* The number after the first occurrence of S in the file, or -1. */
double tc_file_number(const char *path, const char *s);

/* Wait until the file contains S, at most TIMEOUT_MS. */
bool tc_file_wait(const char *path, const char *s, int timeout_ms);

/* Kill the daemon and the page server if they still run; remove the dir unless the test did not pass (or UFFD_TEST_KEEP). */
void tc_finish(struct tc_run *r);

/* Connect to the daemon's lazy-pages.socket as the restore would. */
int tc_connect(const struct tc_run *r);

/* Send an int as criu does (host endianness). */
void tc_send_int(int sk, int v);

/* Send one byte with NFDS fds attached. */
void tc_send_fds(int sk, const int *fds, int nfds);

/* The task pids of pstree.img in DIR, in order; returns how many (at most MAX). */
size_t tc_tasks(const char *dir, uint32_t *pids, size_t max);

/* The PE_LAZY pages of task PID in DIR, counted from its pagemap entries. */
uint64_t tc_lazy_pages(const char *dir, uint32_t pid);

/* The lazy VMAs (anonymous private, holding PE_LAZY pages) of PID; returns how many. */
size_t tc_lazy_vmas(const char *dir, uint32_t pid, uint64_t (*vma)[2], size_t max);

/*
 * Copy the images of SRC to DST (made) with its N tasks renumbered to PIDS
 * (same order): per-task files renamed, pstree.img rewritten (the first
 * task the parent of the rest). For dumps of containers: pids 1, 6, ...
 */
void tc_renumber(const char *src, const char *dst, const uint32_t *pids, size_t n);
/* Copy the *.img files of SRC into the directory DST (made). */
void tc_copy_dir(const char *src, const char *dst);

#endif
