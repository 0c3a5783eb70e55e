/*
 * Reasons of failures, for the caller to print: each is written into a
 * buffer the caller owns (WHY, LEN bytes), naming the pid, file or address
 * at fault, and the function returns -errno. One formatter for every
 * module that reports this way.
 */
#ifndef UFFD_WHY_H
#define UFFD_WHY_H

#include <stdarg.h>
#include <stddef.h>

/*
 * The return value for CODE: -CODE for an errno, CODE itself when already
 * negative, -EIO for 0 (a failure must never read as success).
 */
int why_code(int code);

/* Write the reason into WHY (nothing if WHY is NULL), replacing what is there. */
int why_set(char *why, size_t len, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
int why_vset(char *why, size_t len, int code, const char *fmt, va_list ap)
	__attribute__((format(printf, 4, 0)));

/*
 * Keep the first reason: write PREFIX (may be NULL) and the reason only if
 * WHY is still empty, so that a later, consequent failure does not hide
 * the cause.
 */
int why_vfirst(char *why, size_t len, int code, const char *prefix, const char *fmt,
	       va_list ap) __attribute__((format(printf, 5, 0)));
int why_first(char *why, size_t len, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif
