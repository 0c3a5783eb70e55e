/* uffd-inject: dump, hand over and restore the memory of processes. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "show.h"
#include "version.h"

static void usage(FILE *out)
{
	fputs("usage: uffd-inject COMMAND [OPTIONS]\n"
	      "\n"
	      "commands:\n"
	      "  show DIR [--json]   summarize the memory images of a CRIU-format dump:\n"
	      "                      per task, VMAs, pagemap entries, present, lazy and\n"
	      "                      parent pages\n"
	      "\n"
	      "options:\n"
	      "  -h, --help          show this help\n"
	      "  -V, --version       show the version\n"
	      "\n"
	      "See uffd-inject(8).\n", out);
}

static int cmd_show(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int json = 0, c;

	while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			json = 1;
			break;
		case 'h':
			fputs("usage: uffd-inject show DIR [--json]\n", stdout);
			return 0;
		default:
			fputs("usage: uffd-inject show DIR [--json]\n", stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		fputs("uffd-inject show: expects one image directory\n"
		      "usage: uffd-inject show DIR [--json]\n", stderr);
		return 2;
	}
	return show_images(argv[optind], json, stdout);
}

int main(int argc, char **argv)
{
	log_init("uffd-inject", LOG_LVL_INFO, 0);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
		printf("uffd-inject %s\n", UFFD_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "show"))
		return cmd_show(argc - 1, argv + 1);
	fprintf(stderr, "uffd-inject: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
