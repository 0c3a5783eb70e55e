/*
 * uffd-bench: uffd-manager against the physical floor, side by side in one
 * run. `make bench` runs it and writes the figures into BENCHMARKS.md.
 *
 *   uffd-bench [--quick] [--md FILE] [--only LIST]
 *
 * --quick (or BENCH_QUICK=1): smaller sizes, under a minute. --only 1,3
 * runs some measures. Images go to $BENCH_TMPDIR (default /tmp), into a
 * fresh directory removed at the end.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

static char rundir[256];
static pid_t owner;

/* Remove this run's files; only in the bench itself, not in a child that exits. */
static void cleanup(void)
{
	char cmd[300];

	if (getpid() != owner)
		return;
	resume_cleanup();
	if (!rundir[0] || getenv("BENCH_KEEP"))
		return;
	if (b_failed) {
		/* Drop the images, keep the daemon logs the error message names. */
		snprintf(cmd, sizeof(cmd), "rm -rf %s/big %s/resume-*", rundir, rundir);
		if (system(cmd)) {
		}
		fprintf(stderr, "uffd-bench: daemon logs kept in %s\n", rundir);
		rundir[0] = 0;
		return;
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", rundir);
	if (system(cmd)) {
	}
	rundir[0] = 0;
}

static void on_signal(int sig)
{
	(void)sig;
	exit(130);	/* runs cleanup(); children die with us (PDEATHSIG) */
}

/* A /proc/meminfo field in KiB. */
static long meminfo(const char *key)
{
	char line[256];
	long v = -1;
	FILE *f = fopen("/proc/meminfo", "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key)) && line[strlen(key)] == ':')
			v = atol(line + strlen(key) + 1);
	fclose(f);
	return v;
}

/* CPU time used on the whole machine so far, ns (all CPUs, from /proc/stat). */
static uint64_t machine_busy_ns(void)
{
	unsigned long long u, n, sy, id, io, irq, sirq, st;
	FILE *f = fopen("/proc/stat", "re");
	int ok;

	if (!f)
		return 0;
	ok = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &u, &n, &sy, &id, &io, &irq,
		    &sirq, &st) == 8;
	fclose(f);
	return ok ? (u + n + sy + irq + sirq) * (1000000000ull / sysconf(_SC_CLK_TCK)) : 0;
}

/* CPU time of this process and every child it has reaped, ns. */
static uint64_t own_busy_ns(void)
{
	struct rusage a, b;

	getrusage(RUSAGE_SELF, &a);
	getrusage(RUSAGE_CHILDREN, &b);
	return (a.ru_utime.tv_sec + a.ru_stime.tv_sec + b.ru_utime.tv_sec + b.ru_stime.tv_sec) *
		       1000000000ull +
	       (a.ru_utime.tv_usec + a.ru_stime.tv_usec + b.ru_utime.tv_usec + b.ru_stime.tv_usec) *
		       1000ull;
}

/* One line about this machine. */
static void machine(char *buf, size_t len)
{
	char line[512], model[256] = "unknown CPU";
	struct utsname u;
	FILE *f = fopen("/proc/cpuinfo", "re");

	while (f && fgets(line, sizeof(line), f)) {
		char *p = strchr(line, ':');

		if (!strncmp(line, "model name", 10) && p) {
			snprintf(model, sizeof(model), "%s", p + 2);
			model[strcspn(model, "\n")] = 0;
			break;
		}
	}
	if (f)
		fclose(f);
	uname(&u);
	line[0] = 0;
	f = fopen("/proc/loadavg", "re");
	if (f) {
		if (!fgets(line, 15, f))
			line[0] = 0;
		fclose(f);
	}
	snprintf(buf, len, "%s, %ld CPUs, %.1f GiB RAM, Linux %s %s; load average at start %s", model,
		 sysconf(_SC_NPROCESSORS_ONLN), meminfo("MemTotal") / 1048576.0, u.release, u.machine,
		 strtok(line, " ") ? line : "?");
}

/* HEAD of the source tree, for the record. */
static void revision(char *buf, size_t len)
{
	FILE *f = popen("git -C " TEST_SRCDIR " describe --always --dirty 2>/dev/null", "r");

	snprintf(buf, len, "unknown");
	if (f) {
		if (fgets(buf, (int)len, f))
			buf[strcspn(buf, "\n")] = 0;
		pclose(f);
	}
}

/* Replace the text between the markers for MODE in FILE with a new section. */
static void write_md(const char *file, bool quick, const char *mach, const char *rev,
		     const char *cmd, double wall_s, const char *when)
{
	char begin[64], end[64], *old = NULL, *b, *e;
	size_t n = 0;
	FILE *f = fopen(file, "re"), *out;
	char tmp[600];

	snprintf(begin, sizeof(begin), "<!-- bench:%s:begin -->", quick ? "quick" : "full");
	snprintf(end, sizeof(end), "<!-- bench:%s:end -->", quick ? "quick" : "full");
	if (f) {
		old = malloc(1 << 20);
		if (old)
			n = fread(old, 1, (1 << 20) - 1, f);
		fclose(f);
		if (old)
			old[n] = 0;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", file);
	out = fopen(tmp, "we");
	if (!out) {
		fprintf(stderr, "uffd-bench: %s: %s\n", tmp, strerror(errno));
		free(old);
		return;
	}
	b = old ? strstr(old, begin) : NULL;
	e = b ? strstr(b, end) : NULL;
	if (b && e)
		fwrite(old, 1, b - old, out);
	else if (old)
		fprintf(out, "%s\n", old);
	fprintf(out, "%s\n", begin);
	fprintf(out, "Produced by `%s` on %s (%.0f s wall), source %s.\n\nMachine: %s.\n\n", cmd,
		when, wall_s, rev, mach);
	rows_print(out, true);
	fprintf(out, "%s", end);
	if (b && e)
		fputs(e + strlen(end), out);
	else
		fputc('\n', out);
	fclose(out);
	if (rename(tmp, file) < 0)
		fprintf(stderr, "uffd-bench: rename %s: %s\n", file, strerror(errno));
	free(old);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "quick", no_argument, NULL, 'q' },
		{ "md", required_argument, NULL, 'm' },
		{ "only", required_argument, NULL, 'o' },
		{ NULL, 0, NULL, 0 },
	};
	struct bconf c = { 0 };
	const char *md = NULL, *only = "123456789abc", *q = getenv("BENCH_QUICK");
	char mach[512], rev[64], when[64], cmd[128];
	struct statvfs vfs;
	uint64_t t0 = b_now(), busy0 = machine_busy_ns(), own0 = own_busy_ns(), other;
	time_t now = time(NULL);
	int opt;

	c.quick = q && *q && strcmp(q, "0");
	while ((opt = getopt_long(argc, argv, "qm:o:", opts, NULL)) != -1) {
		switch (opt) {
		case 'q': c.quick = true; break;
		case 'm': md = optarg; break;
		case 'o': only = optarg; break;
		default:
			fprintf(stderr, "usage: uffd-bench [--quick] [--md FILE] [--only 123456789abc]\n");
			return 2;
		}
	}
	if (c.quick) {
		c.big = 256ull << 20;
		c.nfaults = 3000;
		c.fill_reps = 3;
		c.resume_reps = 15;
		c.scale_faults = 8;
	} else {
		c.big = 1ull << 30;
		c.nfaults = 20000;
		c.fill_reps = 5;
		c.resume_reps = 41;
		c.scale_faults = 20;
	}
	c.max_procs = 1000;
	c.tmp = getenv("BENCH_TMPDIR") ? getenv("BENCH_TMPDIR") : "/tmp";

	if (statvfs(c.tmp, &vfs) < 0 || (uint64_t)vfs.f_bavail * vfs.f_frsize < c.big + (2ull << 30))
		b_die("%s: want %llu MiB free for the images", c.tmp,
		      (unsigned long long)((c.big + (2ull << 30)) >> 20));
	if (meminfo("MemAvailable") >= 0 &&
	    (uint64_t)meminfo("MemAvailable") * 1024 < 3 * c.big + (5ull << 30))
		b_die("want %llu MiB of available memory", (unsigned long long)((3 * c.big + (5ull << 30)) >> 20));
	snprintf(c.dir, sizeof(c.dir), "%s/uffd-bench-XXXXXX", c.tmp);
	if (!mkdtemp(c.dir))
		b_die("mkdtemp %s: %s", c.dir, strerror(errno));
	snprintf(rundir, sizeof(rundir), "%s", c.dir);
	owner = getpid();
	atexit(cleanup);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);
	setvbuf(stdout, NULL, _IOLBF, 0);

	machine(mach, sizeof(mach));
	revision(rev, sizeof(rev));
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M UTC", gmtime(&now));
	snprintf(cmd, sizeof(cmd), "%smake bench", c.quick ? "BENCH_QUICK=1 " : "");
	printf("uffd-bench%s: %s\nsource %s; images in %s\n", c.quick ? " (quick)" : "", mach, rev,
	       c.dir);

	snprintf(c.bigimg, sizeof(c.bigimg), "%s/big", c.dir);
	bimg_write(c.bigimg, c.big, false);
	printf("wrote a %llu MiB pattern image in %.1f s\n", (unsigned long long)(c.big >> 20),
	       (b_now() - t0) / 1e9);

	if (strchr(only, '1'))
		bench_latency(&c);
	if (strchr(only, '2'))
		bench_fill(&c);
	if (strchr(only, '3'))
		bench_touch(&c);
	if (strchr(only, '4'))
		bench_resume(&c);
	if (strchr(only, '5'))
		bench_scale(&c);
	if (strchr(only, '6'))
		bench_thp(&c);
	if (strchr(only, '7'))
		bench_wset(&c);
	if (strchr(only, '8'))
		bench_precopy(&c);
	if (strchr(only, '9'))
		bench_migrate(&c);
	if (strchr(only, 'a'))
		bench_restart(&c);
	if (strchr(only, 'b'))
		bench_criu(&c);
	if (strchr(only, 'c'))
		bench_loader(&c);

	cleanup();
	other = machine_busy_ns() - busy0;
	other = other > own_busy_ns() - own0 ? other - (own_busy_ns() - own0) : 0;
	note("other load on the machine during the run: %.1f CPU-s over %.0f s wall (%.0f%% of one CPU)%s",
	     other / 1e9, (b_now() - t0) / 1e9, 100.0 * other / (b_now() - t0),
	     other * 10 > b_now() - t0 ? "; figures are disturbed, run again on a quiet machine" : "");
	printf("\n== uffd-bench%s: %.0f s wall\n", c.quick ? " (quick)" : "", (b_now() - t0) / 1e9);
	rows_print(stdout, false);
	if (md) {
		write_md(md, c.quick, mach, rev, cmd, (b_now() - t0) / 1e9, when);
		printf("\nfigures written to %s\n", md);
	}
	return 0;
}
