/* uffd-inject: dump, hand over and restore the memory of processes. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dump.h"
#include "handover.h"
#include "lazy.h"
#include "log.h"
#include "restore.h"
#include "tls.h"
#include "show.h"
#include "version.h"

static void usage(FILE *out)
{
	fputs("usage: uffd-inject COMMAND [OPTIONS]\n"
	      "\n"
	      "commands:\n"
	      "  dump --pid PID --images DIR [--kill] [--prev-images DIR0]\n"
	      "                      freeze a running process and write its memory to DIR\n"
	      "                      as CRIU images; --kill ends it once they are on disk\n"
	      "                      (and records what restore needs, refusing what it\n"
	      "                      cannot bring back); --prev-images: only what it wrote\n"
	      "                      since the pre-dump into DIR0\n"
	      "  pre-dump --pid PID --images DIR [--prev-images DIR0]\n"
	      "                      copy its memory while it runs, tracking its writes,\n"
	      "                      so that a later round or dump copies only those\n"
	      "  lazy --pid PID --images DIR [--socket S] [--prev-images DIR0 | --pre-copy]\n"
	      "                      dump a running process, then hand its memory to\n"
	      "                      uffd-manager: it runs on while its pages come back\n"
	      "  restore --images DIR [--socket S] [--eager] [--stdio inherit|null|FILE]\n"
	      "                      bring back a process dumped with --kill, its memory\n"
	      "                      served lazily by uffd-manager; prints the new pid\n"
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

static const char dump_usage[] =
	"usage: uffd-inject dump --pid PID --images DIR [--kill | --leave-stopped]\n"
	"                        [--tree] [--prev-images DIR0]\n";

static const char dump_help[] =
	"\n"
	"Freeze every thread of process PID, read its memory areas and pages, and\n"
	"write inventory.img, pstree.img, mm-PID.img, pagemap-PID.img and pages-1.img\n"
	"into DIR (created if missing; it must not hold a dump already). Anonymous\n"
	"private pages are marked lazy; those that read all zero are left out.\n"
	"The process runs on afterwards, unchanged, unless --kill or --leave-stopped\n"
	"is given.\n"
	"Shared anonymous memory and memfds are recorded as CRIU 4.2 records them\n"
	"(memfd.img, pagemap-shmem-INO.img): each object once per dump, whole, in\n"
	"pages files numbered after the processes'. System V shm is refused.\n"
	"\n"
	"options:\n"
	"  -p, --pid PID       the process to dump (needs ptrace rights over it)\n"
	"  -D, --images DIR    where to write the images\n"
	"  -k, --kill          SIGKILL the process once the images are complete and\n"
	"                      synced to disk, and wait until it is gone; also write\n"
	"                      what `uffd-inject restore` needs (every thread's\n"
	"                      registers, signal mask, alternate stack, rseq, robust\n"
	"                      list and tid address in core-TID.img; the handlers,\n"
	"                      open files and cwd: files.img, fdinfo-1.img,\n"
	"                      fs-PID.img), and refuse, before reading a page, a\n"
	"                      process restore cannot bring back (sockets, pipes,\n"
	"                      timers, an exited main thread, ...)\n"
	"  -S, --leave-stopped as --kill, but stop the process (SIGSTOP) instead of\n"
	"                      killing it: kill it once its copy runs elsewhere, or\n"
	"                      resume it with SIGCONT (criu dump --leave-stopped)\n"
	"  -t, --tree          dump PID and every descendant, all frozen together\n"
	"                      before any memory is read; pstree.img holds one\n"
	"                      record per process, parents first, each process its\n"
	"                      own mm-PID.img, pagemap-PID.img and pages-N.img\n"
	"                      (N: its place in pstree.img, from 1), and with\n"
	"                      --kill or --leave-stopped its core-TID.img,\n"
	"                      fs-PID.img and fdinfo-N.img (restore brings the\n"
	"                      tree back); without them, every process is let go\n"
	"                      once the images are written; refuses a zombie\n"
	"                      child, a child in another pid namespace, and memory\n"
	"                      shared with CLONE_VM, naming the pid\n"
	"  -P, --prev-images DIR0\n"
	"                      the last round of `uffd-inject pre-dump`: copy only the\n"
	"                      pages written since (while frozen) and mark the rest\n"
	"                      as in the parent (PE_PARENT entries, DIR/parent links\n"
	"                      to DIR0); the write tracking ends\n"
	"  -h, --help          show this help\n"
	"\n"
	"Exit status: 0 dumped, 1 failed (the process is left running as it was and\n"
	"DIR without images), 2 usage error. See uffd-inject(8).\n";

/* Parse a pid: a decimal number from 1 to INT_MAX, nothing else. */
static int parse_pid(const char *s, pid_t *pid)
{
	char *e;
	long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtol(s, &e, 10);
	if (errno || *e || v <= 0 || v > INT_MAX)
		return -1;
	*pid = (pid_t)v;
	return 0;
}

static int cmd_dump(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pid", required_argument, NULL, 'p' },
		{ "images", required_argument, NULL, 'D' },
		{ "kill", no_argument, NULL, 'k' },
		{ "leave-stopped", no_argument, NULL, 'S' },
		{ "tree", no_argument, NULL, 't' },
		{ "prev-images", required_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct dump_opts o = { .out = stdout };
	int c;

	while ((c = getopt_long(argc, argv, "p:D:kStP:h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (parse_pid(optarg, &o.pid) < 0) {
				fprintf(stderr, "uffd-inject dump: bad pid '%s'\n%s", optarg,
					dump_usage);
				return 2;
			}
			break;
		case 'D':
			o.dir = optarg;
			break;
		case 'k':
			o.kill = true;
			break;
		case 'S':
			o.leave_stopped = true;
			break;
		case 't':
			o.tree = true;
			break;
		case 'P':
			if (!optarg[0]) {
				fprintf(stderr, "uffd-inject dump: empty --prev-images\n%s",
					dump_usage);
				return 2;
			}
			o.prev = optarg;
			break;
		case 'h':
			fputs(dump_usage, stdout);
			fputs(dump_help, stdout);
			return 0;
		default:
			fputs(dump_usage, stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "uffd-inject dump: unexpected argument '%s'\n%s", argv[optind],
			dump_usage);
		return 2;
	}
	if (o.kill && o.leave_stopped) {
		fprintf(stderr, "uffd-inject dump: --kill or --leave-stopped, not both\n%s",
			dump_usage);
		return 2;
	}
	if (o.tree && o.prev) {
		fprintf(stderr, "uffd-inject dump: --tree goes without --prev-images\n%s",
			dump_usage);
		return 2;
	}
	if (!o.pid || !o.dir || !o.dir[0]) {
		fprintf(stderr, "uffd-inject dump: %s is required\n%s",
			!o.pid ? "--pid" : "--images", dump_usage);
		return 2;
	}
	return dump_run(&o, NULL, NULL) < 0 ? 1 : 0;
}

static const char predump_usage[] =
	"usage: uffd-inject pre-dump --pid PID --images DIR [--prev-images DIR0]\n";

static const char predump_help[] =
	"\n"
	"One round of pre-copy: write the memory of process PID into DIR as CRIU\n"
	"images while it runs, and track what it writes from then on, so that the\n"
	"next round (pre-dump, dump or lazy with --prev-images DIR) copies only\n"
	"that. The first round makes a userfaultfd inside the process (kept at a\n"
	"high close-on-exec fd), registers its anonymous private areas in\n"
	"write-protect mode (asynchronous: a write is never blocked) and copies\n"
	"everything; a round with --prev-images copies what was written since\n"
	"DIR0 and marks the rest as in the parent (PE_PARENT entries; DIR/parent\n"
	"links to DIR0, as with criu pre-dump). The process is frozen only while\n"
	"the written set is read and reset, one page-table walk; a page written\n"
	"while it is copied is copied again next round. Each DIR0 can be\n"
	"continued once (DIR0/uffd-track-PID.next names its successor).\n"
	"\n"
	"options:\n"
	"  -p, --pid PID       the process (needs ptrace rights over it)\n"
	"  -D, --images DIR    where to write this round (created; must hold no dump)\n"
	"  -P, --prev-images DIR0\n"
	"                      the previous round of the same chain\n"
	"  -h, --help          show this help\n"
	"\n"
	"Exit status: 0 written, 1 failed (DIR without images; the process runs on,\n"
	"its tracking ended: start again without --prev-images), 2 usage error.\n"
	"See uffd-inject(8).\n";

static int cmd_predump(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pid", required_argument, NULL, 'p' },
		{ "images", required_argument, NULL, 'D' },
		{ "prev-images", required_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct dump_opts o = { .out = stdout, .predump = true };
	int c;

	while ((c = getopt_long(argc, argv, "p:D:P:h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (parse_pid(optarg, &o.pid) < 0) {
				fprintf(stderr, "uffd-inject pre-dump: bad pid '%s'\n%s", optarg,
					predump_usage);
				return 2;
			}
			break;
		case 'D':
			o.dir = optarg;
			break;
		case 'P':
			if (!optarg[0]) {
				fprintf(stderr, "uffd-inject pre-dump: empty --prev-images\n%s",
					predump_usage);
				return 2;
			}
			o.prev = optarg;
			break;
		case 'h':
			fputs(predump_usage, stdout);
			fputs(predump_help, stdout);
			return 0;
		default:
			fputs(predump_usage, stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "uffd-inject pre-dump: unexpected argument '%s'\n%s",
			argv[optind], predump_usage);
		return 2;
	}
	if (!o.pid || !o.dir || !o.dir[0]) {
		fprintf(stderr, "uffd-inject pre-dump: %s is required\n%s",
			!o.pid ? "--pid" : "--images", predump_usage);
		return 2;
	}
	return dump_run(&o, NULL, NULL) < 0 ? 1 : 0;
}

static const char lazy_usage[] =
	"usage: uffd-inject lazy --pid PID --images DIR [--socket S] [--timeout MS]\n"
	"                        [--prev-images DIR0 | --pre-copy [--max-rounds N]]\n";

static const char lazy_help[] =
	"\n"
	"Dump process PID into DIR as `dump` does, then, with it still frozen,\n"
	"create a userfaultfd inside it, register its anonymous areas, drop their\n"
	"pages (except the argument block, the stack pages under each thread's stack\n"
	"pointer and the rseq areas) and hand the userfaultfd to the uffd-manager\n"
	"listening at S. The process then runs on; its pages come back on first\n"
	"touch and in the background. It keeps a close-on-exec copy of the\n"
	"userfaultfd at a high fd so that, should the manager die, it waits for its\n"
	"missing pages instead of reading zeros.\n"
	"\n"
	"options:\n"
	"  -p, --pid PID       the process to hand over (needs ptrace rights over it)\n"
	"  -D, --images DIR    where to write the images (the manager reads them)\n"
	"  -s, --socket S      the manager's socket (default\n"
	"                      /run/uffd-manager/manager.sock for root, else\n"
	"                      $XDG_RUNTIME_DIR/uffd-manager.sock)\n"
	"  -t, --timeout MS    wait this long for the manager's answer (default 10000)\n"
	"  -P, --prev-images DIR0\n"
	"                      the last round of `uffd-inject pre-dump`: while frozen,\n"
	"                      copy only the pages written since; the rest is served\n"
	"                      from DIR0's chain (DIR/parent links to it)\n"
	"  -c, --pre-copy      do the pre-dump rounds first, into DIR/pre-1, DIR/pre-2,\n"
	"                      ... while it runs, each copying what was written during\n"
	"                      the one before, until that shrinks by less than a tenth;\n"
	"                      then freeze and hand over as with --prev-images\n"
	"  -r, --max-rounds N  with --pre-copy: at most N rounds (1 to 32, default 8)\n"
	"  -h, --help          show this help\n"
	"\n"
	"Exit status: 0 handed over, 1 failed (the process runs on with all of its\n"
	"memory), 2 usage error. See uffd-inject(8).\n";

static int cmd_lazy(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pid", required_argument, NULL, 'p' },
		{ "images", required_argument, NULL, 'D' },
		{ "socket", required_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 't' },
		{ "prev-images", required_argument, NULL, 'P' },
		{ "pre-copy", no_argument, NULL, 'c' },
		{ "max-rounds", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct lazy_opts o = { .out = stdout };
	char defsock[108];
	char *e;
	long v;
	int c;

	while ((c = getopt_long(argc, argv, "p:D:s:t:P:cr:h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (parse_pid(optarg, &o.pid) < 0) {
				fprintf(stderr, "uffd-inject lazy: bad pid '%s'\n%s", optarg,
					lazy_usage);
				return 2;
			}
			break;
		case 'D':
			o.dir = optarg;
			break;
		case 's':
			o.socket = optarg;
			break;
		case 't':
			errno = 0;
			v = strtol(optarg, &e, 10);
			if (errno || *e || v <= 0 || v > 3600000) {
				fprintf(stderr, "uffd-inject lazy: bad timeout '%s' (1 to 3600000 "
					"ms)\n%s", optarg, lazy_usage);
				return 2;
			}
			o.timeout_ms = (int)v;
			break;
		case 'P':
			if (!optarg[0]) {
				fprintf(stderr, "uffd-inject lazy: empty --prev-images\n%s",
					lazy_usage);
				return 2;
			}
			o.prev = optarg;
			break;
		case 'c':
			o.pre_copy = true;
			break;
		case 'r':
			errno = 0;
			v = strtol(optarg, &e, 10);
			if (errno || *e || v < 1 || v > 32) {
				fprintf(stderr, "uffd-inject lazy: bad --max-rounds '%s' (1 to 32)\n%s",
					optarg, lazy_usage);
				return 2;
			}
			o.max_rounds = (unsigned)v;
			break;
		case 'h':
			fputs(lazy_usage, stdout);
			fputs(lazy_help, stdout);
			return 0;
		default:
			fputs(lazy_usage, stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "uffd-inject lazy: unexpected argument '%s'\n%s", argv[optind],
			lazy_usage);
		return 2;
	}
	if (!o.pid || !o.dir || !o.dir[0]) {
		fprintf(stderr, "uffd-inject lazy: %s is required\n%s",
			!o.pid ? "--pid" : "--images", lazy_usage);
		return 2;
	}
	if (o.prev && o.pre_copy) {
		fprintf(stderr, "uffd-inject lazy: --prev-images and --pre-copy exclude each "
			"other\n%s", lazy_usage);
		return 2;
	}
	if (o.max_rounds && !o.pre_copy) {
		fprintf(stderr, "uffd-inject lazy: --max-rounds needs --pre-copy\n%s", lazy_usage);
		return 2;
	}
	if (!o.socket) {
		if (handover_default_socket(defsock, sizeof(defsock)) < 0) {
			fprintf(stderr, "uffd-inject lazy: no --socket given and XDG_RUNTIME_DIR "
				"is not set\n%s", lazy_usage);
			return 2;
		}
		o.socket = defsock;
	}
	return lazy_run(&o, NULL) < 0 ? 1 : 0;
}

static const char restore_usage[] =
	"usage: uffd-inject restore --images DIR [--socket S] [--eager] "
	"[--stdio inherit|null|FILE]\n"
	"                           [--pidns]\n"
	"                           [--page-server HOST:PORT [--tls [--tls-cacert F]\n"
	"                            [--tls-cacrl F] [--tls-cert F] [--tls-key F]\n"
	"                            [--tls-no-cn-verify]]]\n";

static const char restore_help[] =
	"\n"
	"Bring back the process dumped into DIR by `uffd-inject dump --kill`, every\n"
	"thread of it: same address space, files, cwd, signal handlers; each thread\n"
	"with its registers, FPU state, signal mask, alternate stack, rseq, robust\n"
	"list and tid address, a thread blocked in a system call running it again.\n"
	"The pid and tids are the dumped ones where they are free (else others, and\n"
	"it says which). Its anonymous memory is left empty and handed to\n"
	"uffd-manager, which serves the faults of all its threads on demand; the\n"
	"pages the kernel reads for others (argv, environment, auxv, the stack under\n"
	"each thread's stack pointer, rseq) are written before it runs. Prints the\n"
	"new pid.\n"
	"A tree (dump --tree) comes back whole: each process's helper is forked by\n"
	"its parent's, so every parent is the parent of its children again, with\n"
	"pids, process groups and sessions as recorded; each process is handed over\n"
	"on its own (or written, --eager), all are let go together once every one\n"
	"is built, and if any fails every one is killed. Prints the root's pid,\n"
	"then a line per process: its dumped pid and its pid now.\n"
	"\n"
	"options:\n"
	"  -D, --images DIR    the dump\n"
	"  -s, --socket PATH   the manager's socket (default: uffd-manager's)\n"
	"  -e, --eager         write every page before it runs; no manager needed\n"
	"      --pidns         in a new pid namespace, under an init of ours (its pid\n"
	"                      1), so that the dumped pid and tids are free whatever\n"
	"                      runs here; prints the pid in ours (needs CAP_SYS_ADMIN)\n"
	"      --stdio WHAT    fds 0-2 that were not files: inherit ours (default),\n"
	"                      null (/dev/null), or FILE (output appended to FILE)\n"
	"      --page-server HOST:PORT\n"
	"                      the manager fetches the lazy pages' data from this page\n"
	"                      server (`uffd-manager page-server` on the source host,\n"
	"                      criu's protocol), and restore the pages it writes first\n"
	"                      (the server needs --all-pages): DIR's pages files are\n"
	"                      not read (they may be sparse stand-ins of the same size)\n"
	"      --tls           ... over TLS, as criu's options of the same names (files\n"
	"                      read by the manager with your rights):\n"
	"      --tls-cacert F  the CA that signed the server's certificate\n"
	"                      (default /etc/pki/CA/cacert.pem)\n"
	"      --tls-cacrl F   revoked certificates (default /etc/pki/CA/cacrl.pem)\n"
	"      --tls-cert F    the certificate shown to the server\n"
	"                      (default /etc/pki/criu/cert.pem)\n"
	"      --tls-key F     its key (default /etc/pki/criu/private/key.pem)\n"
	"      --tls-no-cn-verify  do not check that the server's certificate names HOST\n"
	"  -h, --help          show this help\n"
	"\n"
	"Exit status: 0 restored (it runs), 1 failed (nothing is left running),\n"
	"2 usage error. See uffd-inject(8).\n";

static int cmd_restore(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "images", required_argument, NULL, 'D' },
		{ "socket", required_argument, NULL, 's' },
		{ "eager", no_argument, NULL, 'e' },
		{ "stdio", required_argument, NULL, 'S' },
		{ "page-server", required_argument, NULL, 'P' },
		{ "pidns", no_argument, NULL, 'n' },
		{ "tls", no_argument, NULL, 1000 },
		{ "tls-cacert", required_argument, NULL, 1001 },
		{ "tls-cacrl", required_argument, NULL, 1002 },
		{ "tls-cert", required_argument, NULL, 1003 },
		{ "tls-key", required_argument, NULL, 1004 },
		{ "tls-no-cn-verify", no_argument, NULL, 1005 },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static const char *const tls_names[] = { "tls", "tls-cacert", "tls-cacrl", "tls-cert",
						 "tls-key", "tls-no-cn-verify" };
	struct restore_opts o = { .out = stdout };
	char abs[6][PATH_MAX];
	char sock[108];
	int c;

	while ((c = getopt_long(argc, argv, "D:s:eh", opts, NULL)) != -1) {
		switch (c) {
		case 'D':
			o.dir = optarg;
			break;
		case 's':
			o.socket = optarg;
			break;
		case 'e':
			o.eager = true;
			break;
		case 'n':
			o.pidns = true;
			break;
		case 'S':
			if (!optarg[0]) {
				fprintf(stderr, "uffd-inject restore: --stdio needs inherit, null or "
					"a file\n%s", restore_usage);
				return 2;
			}
			o.stdio = optarg;
			break;
		case 'P':
			if (!strrchr(optarg, ':') || strrchr(optarg, ':') == optarg ||
			    !strrchr(optarg, ':')[1]) {
				fprintf(stderr, "uffd-inject restore: --page-server %s: want HOST:PORT\n%s",
					optarg, restore_usage);
				return 2;
			}
			o.page_server = optarg;
			break;
		case 1000: case 1001: case 1002: case 1003: case 1004: case 1005:
			/* The manager reads the files: give it absolute paths. */
			if (optarg && optarg[0] != '/' && realpath(optarg, abs[c - 1000]))
				optarg = abs[c - 1000];
			tls_opt(&o.tls, tls_names[c - 1000], optarg);
			break;
		case 'h':
			fputs(restore_usage, stdout);
			fputs(restore_help, stdout);
			return 0;
		default:
			fputs(restore_usage, stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "uffd-inject restore: unexpected argument '%s'\n%s", argv[optind],
			restore_usage);
		return 2;
	}
	if (!o.dir || !o.dir[0]) {
		fprintf(stderr, "uffd-inject restore: --images is required\n%s", restore_usage);
		return 2;
	}
	if ((o.tls.on || o.tls.cacert || o.tls.cacrl || o.tls.cert || o.tls.key ||
	     o.tls.no_cn_verify) && (!o.page_server || !o.tls.on)) {
		fprintf(stderr, "uffd-inject restore: --tls goes with --page-server, and the --tls-* options with --tls\n%s",
			restore_usage);
		return 2;
	}
	if (o.page_server && o.eager) {
		fprintf(stderr, "uffd-inject restore: --eager writes every page from DIR: no --page-server\n%s",
			restore_usage);
		return 2;
	}
	if (!o.eager && !o.socket) {
		if (handover_default_socket(sock, sizeof(sock)) < 0) {
			fprintf(stderr, "uffd-inject restore: no default manager socket: give "
				"--socket, or --eager\n%s", restore_usage);
			return 2;
		}
		o.socket = sock;
	}
	return restore_run(&o, NULL) < 0 ? 1 : 0;
}

/*
 * SIGCHLD as pt_wait_thread() needs it: its default action (a SIG_IGN
 * inherited across exec would have the kernel send none for a tracee's
 * stops) and blocked in every thread
 * (each one we start inherits the mask), so that it stays pending for the
 * thread that waits for it with sigtimedwait() instead of being taken and
 * discarded by another. A process we fork and rebuild gets its own mask and
 * actions from its images (restore_helper.c).
 */
static void sigchld_setup(void)
{
	struct sigaction sa;
	sigset_t chld;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	sigaction(SIGCHLD, &sa, NULL);
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
}

int main(int argc, char **argv)
{
	/* UFFD_INJECT_DEBUG: the steps of a dump or a hand-over, timed, on stderr. */
	log_init("uffd-inject", getenv("UFFD_INJECT_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_INFO, 0);
	sigchld_setup();
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
	if (!strcmp(argv[1], "restore"))
		return cmd_restore(argc - 1, argv + 1);
	if (!strcmp(argv[1], "dump"))
		return cmd_dump(argc - 1, argv + 1);
	if (!strcmp(argv[1], "lazy"))
		return cmd_lazy(argc - 1, argv + 1);
	if (!strcmp(argv[1], "pre-dump"))
		return cmd_predump(argc - 1, argv + 1);
	fprintf(stderr, "uffd-inject: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
