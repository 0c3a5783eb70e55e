/* uffd-manager: serve the memory of other processes through userfaultfd. */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "version.h"

int main(int argc, char **argv)
{
	log_init("uffd-manager", LOG_LVL_INFO, 0);
	if (argc > 1 && (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version"))) {
		printf("uffd-manager %s\n", UFFD_VERSION);
		return 0;
	}
	fputs("usage: uffd-manager [-V]\n(the daemon is not built yet)\n", argc > 1 && !strcmp(argv[1], "--help") ? stdout : stderr);
	return argc > 1 && !strcmp(argv[1], "--help") ? 0 : 2;
}
