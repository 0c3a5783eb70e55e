/* Logging to stderr or syslog, one line per call. */
#include <errno.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "log.h"

/*
 * The only process-wide state: set once at start-up by log_init() before any
 * thread exists, read-only afterwards.
 */
static const char *log_prog = "uffd";
static int log_lvl = LOG_LVL_INFO;
static int log_syslog;

void log_init(const char *prog, int level, int use_syslog)
{
	log_prog = prog;
	log_lvl = level;
	log_syslog = use_syslog;
	if (use_syslog)
		openlog(prog, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

int log_level(void)
{
	return log_lvl;
}

/* Emit one line at LEVEL; append the text of ERR when it is not 0. */
static void log_vemit(int level, int err, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

static void log_vemit(int level, int err, const char *fmt, va_list ap)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char msg[1024];
	int n;

	if (level > log_lvl)
		return;
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (n < 0)
		return;
	if (err && (size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - n, ": %s", strerror(err));
	if (log_syslog) {
		syslog(prio[level], "%s", msg);
		return;
	}
	fprintf(stderr, "%s: %s\n", log_prog, msg);
}

void log_warn(const char *fmt, ...)
{
	int err = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vemit(LOG_LVL_WARN, err, fmt, ap);
	va_end(ap);
	errno = err;
}

void log_warnx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vemit(LOG_LVL_WARN, 0, fmt, ap);
	va_end(ap);
}

void log_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vemit(LOG_LVL_INFO, 0, fmt, ap);
	va_end(ap);
}

void log_debug_(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vemit(LOG_LVL_DEBUG, 0, fmt, ap);
	va_end(ap);
}

void fatal(const char *fmt, ...)
{
	int err = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vemit(LOG_LVL_ERR, err, fmt, ap);
	va_end(ap);
	exit(1);
}

void fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vemit(LOG_LVL_ERR, 0, fmt, ap);
	va_end(ap);
	exit(1);
}

bool log_rl(struct log_rl *rl, unsigned *dropped)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (ts.tv_sec != rl->sec) {
		rl->sec = ts.tv_sec;
		rl->n = 0;
	}
	if (rl->n >= LOG_RL_BURST) {
		rl->dropped++;
		return false;
	}
	rl->n++;
	*dropped = rl->dropped;
	rl->dropped = 0;
	return true;
}
