/* Read one "Key:\tvalue" line of a /proc file (status, fdinfo). */
#ifndef UFFD_PROCINFO_H
#define UFFD_PROCINFO_H

#include <stddef.h>

/*
 * Find the line of PATH that starts with KEY followed by ':' and copy what
 * follows the colon and blanks into VAL. Returns 0, -ENOENT if no such line,
 * or -errno if PATH cannot be read.
 */
int procinfo_field(const char *path, const char *key, char *val, size_t len);

#endif
