/* uffd-inject show: summarize the memory images of a dump. */
#ifndef UFFD_INJECT_SHOW_H
#define UFFD_INJECT_SHOW_H

#include <stdio.h>

/* Print the summary of the image dir PATH to OUT; errors go to stderr. Returns an exit code. */
int show_images(const char *path, int json, FILE *out);

#endif
