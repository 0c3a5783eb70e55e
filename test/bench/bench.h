/*
 * uffd-bench: `make bench`. Every figure is put next to a baseline measured
 * in the same run (issue 7); nothing here is a timed assertion.
 *
 * Helpers shared by the measures: clocks, CPU pinning, a daemon without -v,
 * image dirs, a hand-over from the calling process, /proc readers, the table.
 */
#ifndef UFFD_BENCH_H
#define UFFD_BENCH_H

#include <linux/userfaultfd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/types.h>

#define B_PAGE		4096ull
#define B_BASE		0x580000000000ull	/* outside the ASan heap */
#define B_IMAGE_ID	4243u
#define B_SEED		11u
#define B_FEATURES	(UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |		\
			 UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP |		\
			 UFFD_FEATURE_THREAD_ID)

/* What the run is allowed to spend. */
struct bconf {
	bool quick;
	uint64_t big;		/* bytes of the big image (1 GiB; 256 MiB quick) */
	long nfaults;		/* timed first touches per latency case */
	int fill_reps;
	int resume_reps;
	int scale_faults;	/* faults per child in the scale test */
	int max_procs;
	const char *tmp;	/* where images go */
	char dir[80];		/* this run's temp dir */
	char bigimg[96];	/* the big pattern image dir */
};

/* --- util.c --- */
extern bool b_failed;	/* set by b_die: keep the daemon logs */
uint64_t b_now(void);
void b_pin_self(int cpu);
/* Pin every thread of PID to CPU (-1: both CPUs). */
void b_pin_pid(pid_t pid, int cpu);
void b_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void *b_shared(size_t len);
int b_cmp_u64(const void *a, const void *b);
int b_cmp_dbl(const void *a, const void *b);
/* Poll PATH (its first 64 KiB) until it holds S; false after TIMEOUT_MS. */
bool b_file_has(const char *path, const char *s, int timeout_ms);
/* Sort V and return its Pth percentile (0..100). */
uint64_t b_pct(uint64_t *v, size_t n, double p);
void b_shuffle(uint64_t *v, size_t n, uint64_t seed);

/* A daemon started for one measure, with extra ARGS (NULL-terminated). */
struct bdaemon {
	pid_t pid;
	char dir[96];
	char sock[120];
	char log[128];
};
void bd_start(struct bdaemon *d, const struct bconf *c, const char *const *args);
void bd_stop(struct bdaemon *d);
/* Start another daemon on D's socket (the one before is gone); its log is a new file. */
void bd_again(struct bdaemon *d, const char *const *args);
/* Wait until the daemon has fully served SERVED processes; false on timeout. */
bool bd_wait_served(const struct bdaemon *d, uint64_t served, int timeout_ms);
/* Wait until N processes were fully served (or, with EXITED_TOO, left before); false on timeout. */
bool bd_wait_ended(const struct bdaemon *d, uint64_t n, bool exited_too, int timeout_ms);
/* CPU time (user + system) of PID in ns, and its VmRSS and RssAnon in KiB. */
uint64_t b_cpu_ns(pid_t pid);
void b_rss_kib(pid_t pid, long *rss, long *anon);
/* PID's page tables (VmPTE), in KiB; -1 if unknown. */
long b_pte_kib(pid_t pid);
/* Transparent huge pages not "never" in sysfs. */
bool b_thp_usable(void);
/* Resident pages of PID, from statm. */
long b_statm_resident(pid_t pid);

/* In the calling process: map [B_BASE, +LEN) empty, create a uffd with FEATURES. */
int b_map_area(uint64_t len);
int b_uffd(uint64_t features, bool nonblock);
int b_register(int uffd, uint64_t start, uint64_t len);
/* Hand the calling process over to SOCK with the images in IMGDIR; 0 or -errno. */
int b_handover(const char *sock, const char *imgdir, int uffd, char *why, size_t len);

/* --- images.c --- */
/* Write an image dir: one lazy area [B_BASE, +LEN) of ts_word(B_SEED) data; SPARSE leaves a hole file. */
void bimg_write(const char *dir, uint64_t len, bool sparse);
/* The sum of every 64-bit word of that image, as a target reading it all gets. */
uint64_t bimg_sum(uint64_t len);

/* --- the table --- */
void row(const char *sect, const char *what, const char *val, const char *vs);
void goal(const char *what, double got, double want, bool le, const char *note);
void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void rows_print(FILE *f, bool md);

/* --- the measures --- */
void bench_latency(const struct bconf *c);
void bench_fill(const struct bconf *c);
void bench_touch(const struct bconf *c);
void bench_resume(const struct bconf *c);
/* Remove uffd-inject dumps a run interrupted inside bench_resume left behind. */
void resume_cleanup(void);
void bench_scale(const struct bconf *c);
/* --- thp.c --- */
void bench_thp(const struct bconf *c);
/* --- wset.c --- */
void bench_wset(const struct bconf *c);
/* --- precopy.c: 8. pre-copy frozen times (issue 14) --- */
void bench_precopy(const struct bconf *c);
/* --- migrate.c: 9. post-copy across hosts, TLS and a cut (issue 15) --- */
void bench_migrate(const struct bconf *c);
/* --- restart.c: a. restart, SIGKILL to the first fault served again (issue 16) --- */
void bench_restart(const struct bconf *c);
/* --- criu.c: b. criu restore --lazy-pages, our daemon against criu's (CRIU=) --- */
void bench_criu(const struct bconf *c);
/* --- loader.c: c. a fault's latency while another process hands over a 4M-entry pagemap --- */
void bench_loader(const struct bconf *c);

#endif
