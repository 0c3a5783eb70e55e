/* Logging shared by uffd-manager, uffd-inject and the tests. */
#ifndef UFFD_LOG_H
#define UFFD_LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum log_level {
	LOG_LVL_ERR,
	LOG_LVL_WARN,
	LOG_LVL_INFO,
	LOG_LVL_DEBUG,
};

/* Start logging as PROG at LEVEL, to syslog if USE_SYSLOG else stderr. */
void log_init(const char *prog, int level, int use_syslog);
int log_level(void);

/* _warn variants append strerror(errno); _warnx ones do not. */
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/*
 * A log line that a flood could repeat (one per refused connection): at
 * most LOG_RL_BURST a second go through, the rest are counted.
 */
#define LOG_RL_BURST	10
struct log_rl {
	long sec;		/* CLOCK_MONOTONIC second of the count */
	unsigned n;		/* lines let through in it */
	unsigned dropped;	/* lines dropped since the last one let through */
};

/*
 * May this line be logged now? When it may, *DROPPED gets the number of
 * lines dropped before it (for the line to say so), and the count restarts.
 */
bool log_rl(struct log_rl *rl, unsigned *dropped);

/* Costs one comparison when debug logging is off: arguments are not evaluated. */
#define log_debug(...)                                                         \
	do {                                                                   \
		if (log_level() >= LOG_LVL_DEBUG)                              \
			log_debug_(__VA_ARGS__);                               \
	} while (0)

#endif
