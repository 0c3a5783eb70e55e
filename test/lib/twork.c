/* Drive test/helpers/workload from a test: see twork.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "twork.h"

const char *tw_build_dir(void)
{
	const char *b = getenv("UFFD_TEST_BUILD");

	return b ? b : TEST_BUILDDIR;
}

uint64_t tw_pat(uint64_t seed, uint64_t addr)
{
	uint64_t z = seed + addr * 0x9E3779B97F4A7C15ull;

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

int tw_read_line(int fd, char *buf, size_t len, int timeout_ms)
{
	size_t n = 0;

	while (n + 1 < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;

		if (poll(&p, 1, timeout_ms) <= 0)
			return -1;
		r = read(fd, buf + n, 1);
		if (r <= 0)
			return -1;
		if (buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = '\0';
	return (int)n;
}

static int parse_region(const char *line, const char *key, struct tw_region *r)
{
	char k[32];
	const char *p;

	snprintf(k, sizeof(k), " %s=", key);
	p = strstr(line, k);
	if (!p)
		return 0;
	return sscanf(p + strlen(k), "%" SCNx64 ":%" SCNx64, &r->addr, &r->len) == 2 ? 0 : -1;
}

int tw_idle(const struct tw *w, int timeout_ms)
{
	char path[64], buf[64];

	snprintf(path, sizeof(path), "/proc/%d/syscall", (int)w->pid);
	for (int i = 0; i < timeout_ms; i++) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

		if (fd >= 0)
			close(fd);
		if (n > 2 && !strncmp(buf, "0 0x0 ", 6))	/* read(0, ...) */
			return 0;
		usleep(1000);
	}
	return -1;
}

int tw_start(struct tw *w, const char *const *args, char *why, size_t len)
{
	static const char *const keys[] = { "anon", "none", "heap", "file", "shared", "thra",
					    "thrb", "rseq" };
	struct tw_region *regs[] = { &w->anon, &w->none, &w->heap, &w->file, &w->shared,
				     &w->thra, &w->thrb, &w->rseq };
	char bin[256], line[1024];
	const char *argv[24];
	int in[2], out[2], n = 0;
	const char *p;

	memset(w, 0, sizeof(*w));
	w->in = w->out = -1;
	snprintf(bin, sizeof(bin), "%s/test/helpers/workload", tw_build_dir());
	argv[n++] = bin;
	for (; args && *args && n < 22; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
		snprintf(why, len, "pipe: %s", strerror(errno));
		return -1;
	}
	w->pid = fork();
	if (w->pid < 0) {
		snprintf(why, len, "fork: %s", strerror(errno));
		return -1;
	}
	if (w->pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		close_range(3, ~0u, 0);	/* no fd of the test runner leaks into the workload */
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	w->in = in[1];
	w->out = out[0];
	if (tw_read_line(w->out, line, sizeof(line), 20000) < 0) {
		snprintf(why, len, "the workload did not start");
		return -1;
	}
	p = strstr(line, " seed=");
	if (strncmp(line, "ready ", 6) || !p || !strstr(line, " threads=")) {
		snprintf(why, len, "the workload said '%s'", line);
		return -1;
	}
	w->seed = strtoull(p + 6, NULL, 16);
	w->threads = atoi(strstr(line, " threads=") + 9);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (parse_region(line, keys[i], regs[i]) < 0) {
			snprintf(why, len, "bad %s in '%s'", keys[i], line);
			return -1;
		}
	if (tw_idle(w, 5000) < 0) {
		snprintf(why, len, "the workload never blocked in read()");
		return -1;
	}
	return 0;
}

const char *tw_ask(struct tw *w, const char *cmd, int timeout_ms)
{
	static char line[512];
	size_t n = strlen(cmd);

	if (write(w->in, cmd, n) != (ssize_t)n)
		return NULL;
	if (tw_read_line(w->out, line, sizeof(line), timeout_ms) < 0)
		return NULL;
	return line;
}

void tw_stop(struct tw *w)
{
	if (w->pid > 0) {
		kill(w->pid, SIGKILL);
		waitpid(w->pid, NULL, 0);
		w->pid = 0;
	}
	if (w->in >= 0)
		close(w->in);
	if (w->out >= 0)
		close(w->out);
	w->in = w->out = -1;
}

bool tw_running_free(pid_t pid, char *why, size_t len)
{
	char path[64], line[256];
	int tracer = -1;
	char state = '?';
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f) {
		snprintf(why, len, "%s: %s", path, strerror(errno));
		return false;
	}
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "TracerPid: %d", &tracer);
		sscanf(line, "State: %c", &state);
	}
	fclose(f);
	if (tracer != 0) {
		snprintf(why, len, "pid %d still traced by %d", (int)pid, tracer);
		return false;
	}
	if (state == 't' || state == 'T') {
		snprintf(why, len, "pid %d left stopped (%c)", (int)pid, state);
		return false;
	}
	return true;
}

static void slurp_into(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t r = fd >= 0 ? read(fd, buf, len - 1) : -1;

	buf[r > 0 ? r : 0] = '\0';
	if (fd >= 0)
		close(fd);
}

int tw_run_tool(const char *tmpdir, const char *const *args, char *out, size_t outlen, char *err,
		size_t errlen)
{
	char bin[256], of[192], ef[192];
	const char *argv[20];
	int n = 0, st;
	pid_t pid;

	snprintf(bin, sizeof(bin), "%s/uffd-inject", tw_build_dir());
	snprintf(of, sizeof(of), "%s/tool.out", tmpdir);
	snprintf(ef, sizeof(ef), "%s/tool.err", tmpdir);
	argv[n++] = bin;
	for (; *args && n < 19; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int o = open(of, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		int e = open(ef, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

		dup2(o, 1);
		dup2(e, 2);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	slurp_into(of, out, outlen);
	slurp_into(ef, err, errlen);
	return WEXITSTATUS(st);
}

uint64_t tw_status_bytes(pid_t pid, const char *key)
{
	char path[64], line[256];
	size_t k = strlen(key);
	uint64_t v = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, k) && line[k] == ':') {
			v = strtoull(line + k + 1, NULL, 10) * 1024;
			break;
		}
	fclose(f);
	return v;
}
