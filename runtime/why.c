/* Reasons of failures into the caller's buffer (why.h). */
#include <errno.h>
#include <stdio.h>

#include "why.h"

int why_code(int code)
{
	return code > 0 ? -code : code ? code : -EIO;
}

int why_vset(char *why, size_t len, int code, const char *fmt, va_list ap)
{
	if (why && len)
		vsnprintf(why, len, fmt, ap);
	return why_code(code);
}

int why_set(char *why, size_t len, int code, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = why_vset(why, len, code, fmt, ap);
	va_end(ap);
	return ret;
}

int why_vfirst(char *why, size_t len, int code, const char *prefix, const char *fmt, va_list ap)
{
	int n = 0;

	if (!why || !len || why[0])
		return why_code(code);
	if (prefix)
		n = snprintf(why, len, "%s", prefix);
	if (n >= 0 && (size_t)n < len)
		vsnprintf(why + n, len - (size_t)n, fmt, ap);
	return why_code(code);
}

int why_first(char *why, size_t len, int code, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = why_vfirst(why, len, code, NULL, fmt, ap);
	va_end(ap);
	return ret;
}
