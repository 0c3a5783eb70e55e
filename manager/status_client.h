/* uffd-manager status: ask a running daemon and print what it says. */
#ifndef UFFD_STATUS_CLIENT_H
#define UFFD_STATUS_CLIENT_H

#include <stdio.h>

/* Query the daemon at SOCKET_PATH; print text or JSON to OUT. Returns an exit code. */
int status_query(const char *socket_path, int json, FILE *out);

#endif
