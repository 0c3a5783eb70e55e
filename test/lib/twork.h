/*
 * Drive test/helpers/workload from a test: start it on pipes, read what it
 * says about its regions, send it one-letter commands, and run the
 * uffd-inject binary against it.
 *
 * No Criterion here (helper programs link this too): failures come back as
 * return values with a message.
 */
#ifndef UFFD_TEST_TWORK_H
#define UFFD_TEST_TWORK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct tw_region {
	uint64_t addr;
	uint64_t len;
};

/* A running workload and what it said about itself. */
struct tw {
	pid_t pid;
	int in;			/* its stdin */
	int out;		/* its stdout */
	uint64_t seed;
	struct tw_region anon, none, heap, file, shared, thra, thrb;
	struct tw_region rseq;	/* bytes the kernel may write while the workload idles */
	int threads;
};

/* The build directory: $UFFD_TEST_BUILD, else the one the tests were built in. */
const char *tw_build_dir(void);

/* The workload's pattern: splitmix64 of seed and address. */
uint64_t tw_pat(uint64_t seed, uint64_t addr);

/* Read one line from FD within TIMEOUT_MS; returns its length or -1. */
int tw_read_line(int fd, char *buf, size_t len, int timeout_ms);

/*
 * Start the workload with ARGS (NULL-terminated), wait for its "ready" line
 * and until it sits in read(2). Returns 0, or -1 with WHY filled.
 */
int tw_start(struct tw *w, const char *const *args, char *why, size_t len);

/* Wait until its main thread sits in read(2) on stdin. 0, or -1 on timeout. */
int tw_idle(const struct tw *w, int timeout_ms);

/* Send CMD and return the line it answers (a static buffer), or NULL on timeout. */
const char *tw_ask(struct tw *w, const char *cmd, int timeout_ms);

/* SIGKILL it (if running), reap it, close the pipes. */
void tw_stop(struct tw *w);

/* Is PID neither traced nor stopped? Fills WHY when not. */
bool tw_running_free(pid_t pid, char *why, size_t len);

/*
 * Run build/uffd-inject with ARGS (NULL-terminated), stdout and stderr into
 * OUT and ERR (files under TMPDIR). Returns the exit code, or -1 when it
 * did not exit normally.
 */
int tw_run_tool(const char *tmpdir, const char *const *args, char *out, size_t outlen, char *err,
		size_t errlen);

/* A field "KEY: N kB" of /proc/PID/status, in bytes; 0 when absent. */
uint64_t tw_status_bytes(pid_t pid, const char *key);

#endif
