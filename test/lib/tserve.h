/*
 * Integration test kit for uffd-manager: a daemon run as a child process,
 * synthetic image dirs of patterned memory, and a served child process that
 * hands itself over and then runs a scenario.
 *
 * No Criterion here: set-up failures abort with a message.
 */
#ifndef UFFD_TEST_TSERVE_H
#define UFFD_TEST_TSERVE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "manager.pb-c.h"

#define TS_PAGE		4096ull
#define TS_IMAGE_ID	4242u

/* The word the images hold at image address ADDR for SEED. */
uint64_t ts_word(uint64_t seed, uint64_t addr);

/* A lazy area of the images: LEN bytes at START; every HOLE_EVERY-th page a hole (0 = none). */
struct ts_area {
	uint64_t start;
	uint64_t len;
	unsigned hole_every;
};

/* Is the page at image address ADDR of area A a hole (reads zero)? */
bool ts_is_hole(const struct ts_area *a, uint64_t addr);

/* Write an image dir DIR for IMAGE_ID with N areas (mm, pagemap with LAZY|PRESENT, pages). */
void ts_write_images(const char *dir, uint32_t image_id, const struct ts_area *areas, int n,
		     uint64_t seed);

/* A running uffd-manager. */
struct ts_daemon {
	pid_t pid;
	char dir[64];		/* temp dir: socket, images, log */
	char sock[128];
	char log[128];
	unsigned gen;		/* daemons started on this socket before this one */
};

/* Start build/uffd-manager with extra ARGS (NULL-terminated), wait until it listens. */
void ts_daemon_start(struct ts_daemon *d, const char *const *args);
/*
 * Start another daemon on D's socket (after the one before died or left):
 * BIN, or build/uffd-manager when NULL. Its log is a new file, D->log.
 */
void ts_daemon_again(struct ts_daemon *d, const char *bin, const char *const *args);
/* SIGTERM it and return its exit status (wait status), waiting at most TIMEOUT_MS. */
int ts_daemon_stop(struct ts_daemon *d, int timeout_ms);
/* Wait for it to exit on its own. Returns the wait status or -1 on timeout. */
int ts_daemon_wait(struct ts_daemon *d, int timeout_ms);
/*
 * Stop the daemon if it runs, and remove its directory (kept, and named on
 * stderr, when UFFD_TEST_KEEP is set). Returns true if it exited 0.
 */
bool ts_daemon_finish(struct ts_daemon *d, int timeout_ms);
/* Does the daemon's log contain S? */
bool ts_log_has(const struct ts_daemon *d, const char *s);

/* The pid of the daemon's keeper, from its log; 0 if it has none. */
pid_t ts_keeper_pid(const struct ts_daemon *d);

/* Status as the daemon reports it. */
struct ts_status {
	StatusTarget *t[4096];
	int n;
	StatusTotals *tot;
	Reply *replies[4097];
	int nr;
};
int ts_status_get(const struct ts_daemon *d, struct ts_status *s);
void ts_status_free(struct ts_status *s);
/* The status of the process PID, or NULL. */
const StatusTarget *ts_status_pid(const struct ts_status *s, pid_t pid);

/* Verify every byte of [ADDR, ADDR+LEN), which holds image address IMG onwards. */
long ts_check(uint64_t addr, uint64_t len, uint64_t img, const struct ts_area *a, uint64_t seed);
long ts_check_zero(uint64_t addr, uint64_t len);

/* What a served child does after the hand-over: return 0 on success. */
struct ts_child;
typedef int (*ts_scenario)(struct ts_child *c);

struct ts_child {
	const struct ts_daemon *d;
	const struct ts_area *areas;
	int n;
	uint64_t seed;
	const char *imgdir;
	uint32_t image_id;
	uint64_t features;	/* 0 = the four events + THREAD_ID */
	uint32_t flags;		/* HELLO flags */
	bool keep_uffd;		/* keep a copy of the uffd, as uffd-inject lazy's target does */
	uid_t as_uid;		/* non-zero: become this uid (and gid) after making the uffd and pidfd */
	bool path_fd;		/* hand the image dir over as an O_PATH fd */
	int uffd;		/* in the child, with keep_uffd: that copy */
	void *arg;
	int go[2];		/* parent -> child: proceed */
	int ready[2];		/* child -> parent: handed over */
};

/*
 * Fork a child that maps the areas empty, creates a uffd, hands itself over
 * and runs SC. Returns its pid once the hand-over is accepted (or the child
 * exited: see ts_child_wait).
 */
pid_t ts_child_start(struct ts_child *c, ts_scenario sc);
/* Wait for the child; returns its exit code, or -signal, or -1000 on timeout (then kills it). */
int ts_child_wait(pid_t pid, int timeout_ms);

/* The child waits for, and the test gives, the word to go on. */
void ts_wait_go(struct ts_child *c);
void ts_say_go(struct ts_child *c);

/* Fail inside a child with a message. */
int ts_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
