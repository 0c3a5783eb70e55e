/*
 * The helper process of a restore: see restore_helper.h. Everything before
 * restore_helper_start() runs in the forked child, which reports a failure
 * through the pipe and exits.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core.h"
#include "restore_helper.h"

#define RS_READY_MS	10000
#define RS_MAX_FDS	1024

/* The helper's fds while it moves them into place. */
struct hs {
	int wfd;			/* the pipe to us */
	struct rs_report *rep;
	int tmpfd[RS_MAX_FDS];		/* of each dumped fd, in r->fdi order */
	bool is_dumped_fd[3];		/* fds 0-2 that were files */
	int maxfd;			/* the highest dumped fd */
	int stdio_fd;			/* --stdio, or -1 */
	int hi;				/* every fd is moved at or above this */
};

static void report_fail(int wfd, struct rs_report *rep, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), noreturn));

/* In the helper: say why we fail and exit. */
static void report_fail(int wfd, struct rs_report *rep, const char *fmt, ...)
{
	va_list ap;
	ssize_t n;

	rep->err = errno ? errno : EIO;
	va_start(ap, fmt);
	vsnprintf(rep->msg, sizeof(rep->msg), fmt, ap);
	va_end(ap);
	n = write(wfd, rep, sizeof(*rep));
	(void)n;
	_exit(1);
}

/* In the helper: move FD above HI (and off the low numbers); returns the new fd. */
static int lift(int fd, int hi)
{
	int nfd = fcntl(fd, F_DUPFD, hi);

	if (nfd >= 0)
		close(fd);
	return nfd;
}

/* Block every signal, die with us, and check the dump's fds fit. */
static void helper_init(struct rs *r, struct hs *h, int pid_err)
{
	sigset_t all;

	memset(h->rep, 0, sizeof(*h->rep));
	h->rep->uffd = -1;
	h->rep->nspid = getpid();
	h->rep->pid_err = pid_err;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* A tree's helper whose parent helper died before the prctl: nobody waits for it. */
	if (r->tree && r->tree->parent[r->idx] >= 0 &&
	    getppid() != r->tree->now[r->tree->parent[r->idx]])
		_exit(1);
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	errno = 0;
	if (r->nfdi > sizeof(h->tmpfd) / sizeof(h->tmpfd[0]))
		report_fail(h->wfd, h->rep, "too many open files in the dump (%zu)", r->nfdi);
}

/* Map the trampoline: a syscall instruction, then a scratch page. */
static void map_trampoline(struct rs *r, struct hs *h)
{
	uint8_t *t;

	t = mmap((void *)(uintptr_t)r->tramp, 2 * RS_PAGE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (t != (void *)(uintptr_t)r->tramp)
		report_fail(h->wfd, h->rep, "mmap trampoline at 0x%" PRIx64 ": %s", r->tramp,
			    strerror(errno));
	memset(t, 0xcc, RS_PAGE);
	t[0] = 0x0f;
	t[1] = 0x05;
	if (mprotect(t, RS_PAGE, PROT_READ | PROT_EXEC) < 0)
		report_fail(h->wfd, h->rep, "mprotect trampoline: %s", strerror(errno));
}

/* Open every file first, anywhere: the dumped fds, the files to map, --stdio. */
static void open_files(struct rs *r, struct hs *h)
{
	for (size_t i = 0; i < r->nfdi; i++) {
		const RegFileEntry *re = rs_file_by_id(r, r->fdi[i]->id);
		const struct shm_file *sf;
		int fl;

		if ((int)r->fdi[i]->fd > h->maxfd)
			h->maxfd = (int)r->fdi[i]->fd;
		if (r->fdi[i]->fd <= 2)
			h->is_dumped_fd[r->fdi[i]->fd] = true;
		if (!re) {
			/* A memfd: the open file we made, shared with every process that had it. */
			sf = r->shm ? shm_file_by_id(r->shm->set, r->fdi[i]->id) : NULL;
			h->tmpfd[i] = sf ? dup(r->shm->ffd[sf - r->shm->set->file]) : -1;
			if (h->tmpfd[i] < 0)
				report_fail(h->wfd, h->rep, "fd %u: the memfd of file id %u: %s",
					    r->fdi[i]->fd, r->fdi[i]->id, sf ? strerror(errno) :
					    "not made");
			continue;
		}
		fl = (int)(re->flags & ~(uint32_t)(O_CREAT | O_TRUNC | O_EXCL | O_CLOEXEC));

		h->tmpfd[i] = open(re->name, fl | O_NOCTTY);
		if (h->tmpfd[i] < 0)
			report_fail(h->wfd, h->rep, "fd %u: open %s: %s", r->fdi[i]->fd, re->name,
				    strerror(errno));
		if (!S_ISCHR(re->mode) && !S_ISDIR(re->mode) &&
		    lseek(h->tmpfd[i], (off_t)re->pos, SEEK_SET) < 0)
			report_fail(h->wfd, h->rep, "fd %u: seek %s: %s", r->fdi[i]->fd, re->name,
				    strerror(errno));
	}
	for (int k = 0; k < r->nmf; k++) {
		h->rep->mapfd[k] = open(r->mf[k].re->name, (r->mf[k].rw ? O_RDWR : O_RDONLY));
		if (h->rep->mapfd[k] < 0)
			report_fail(h->wfd, h->rep, "open %s: %s", r->mf[k].re->name,
				    strerror(errno));
	}
	/* The shared memory objects, to map (the fds are ours, inherited: take copies). */
	for (size_t k = 0; k < RS_MAX_SHM; k++) {
		h->rep->shmfd[k] = -1;
		if (r->shm && k < r->shm->set->nobj && r->shm->fd[k] >= 0 &&
		    (h->rep->shmfd[k] = dup(r->shm->fd[k])) < 0)
			report_fail(h->wfd, h->rep, "dup of shared memory object %zu: %s", k,
				    strerror(errno));
	}
	if (r->o->stdio && strcmp(r->o->stdio, "inherit")) {
		const char *p = strcmp(r->o->stdio, "null") ? r->o->stdio : "/dev/null";

		h->stdio_fd = open(p, strcmp(p, "/dev/null") ? O_WRONLY | O_CREAT | O_APPEND :
				   O_RDWR, 0600);
		if (h->stdio_fd < 0)
			report_fail(h->wfd, h->rep, "--stdio %s: %s", p, strerror(errno));
	}
}

/* Lift every fd we hold above both what is open now and the highest dumped fd. */
static void lift_all(struct hs *h, size_t nfdi, int nmf)
{
	struct dirent *de;
	DIR *dir;

	/* Everything open now is below some bound: find it. */
	dir = opendir("/proc/self/fd");
	if (!dir)
		report_fail(h->wfd, h->rep, "/proc/self/fd: %s", strerror(errno));
	while ((de = readdir(dir)))
		if (de->d_name[0] != '.' && atoi(de->d_name) > h->hi)
			h->hi = atoi(de->d_name);
	closedir(dir);
	if (h->maxfd > h->hi)
		h->hi = h->maxfd;
	h->hi++;
	for (size_t i = 0; i < nfdi; i++)
		if ((h->tmpfd[i] = lift(h->tmpfd[i], h->hi)) < 0)
			report_fail(h->wfd, h->rep, "dup: %s", strerror(errno));
	for (int k = 0; k < nmf; k++)
		if ((h->rep->mapfd[k] = lift(h->rep->mapfd[k], h->hi)) < 0)
			report_fail(h->wfd, h->rep, "dup: %s", strerror(errno));
	for (int k = 0; k < RS_MAX_SHM; k++)
		if (h->rep->shmfd[k] >= 0 && (h->rep->shmfd[k] = lift(h->rep->shmfd[k], h->hi)) < 0)
			report_fail(h->wfd, h->rep, "dup: %s", strerror(errno));
	if (h->stdio_fd >= 0 && (h->stdio_fd = lift(h->stdio_fd, h->hi)) < 0)
		report_fail(h->wfd, h->rep, "dup: %s", strerror(errno));
	if ((h->wfd = lift(h->wfd, h->hi)) < 0)
		_exit(1);
}

/* Close every fd of ours below the lifted ones, and put the dumped fds at their numbers. */
static void place_fds(struct rs *r, struct hs *h)
{
	/* Only stdio stays, when inherited. */
	for (int fd = h->stdio_fd >= 0 ? 0 : 3; fd < h->hi; fd++)
		close(fd);
	for (size_t i = 0; i < r->nfdi; i++) {
		int fl = r->fdi[i]->flags & FD_CLOEXEC ? O_CLOEXEC : 0;

		if (dup3(h->tmpfd[i], (int)r->fdi[i]->fd, fl) < 0)
			report_fail(h->wfd, h->rep, "dup3 to fd %u: %s", r->fdi[i]->fd,
				    strerror(errno));
		close(h->tmpfd[i]);
	}
}

/* Of fds 0-2 that were not files, those it had get --stdio; the others stay closed. */
static void set_stdio(struct rs *r, struct hs *h)
{
	const TaskCoreEntry *tc = r->core->tc;

	for (int fd = 0; fd < 3; fd++)
		if (!h->is_dumped_fd[fd] && tc->has_nonfile_stdio &&
		    !(tc->nonfile_stdio & (1u << fd)))
			close(fd);
	if (h->stdio_fd < 0)
		return;
	for (int fd = 0; fd < 3; fd++) {
		if (h->is_dumped_fd[fd] ||
		    (tc->has_nonfile_stdio && !(tc->nonfile_stdio & (1u << fd))))
			continue;
		if (fd == 0 && strcmp(r->o->stdio, "null")) {
			int nfd = open("/dev/null", O_RDONLY);

			if (nfd >= 0 && nfd != 0) {
				dup2(nfd, 0);
				close(nfd);
			}
			continue;
		}
		dup2(h->stdio_fd, fd);
	}
	close(h->stdio_fd);
}

/* The userfaultfd the manager will serve, high and close-on-exec. */
static void make_uffd(struct rs *r, struct hs *h)
{
	struct uffdio_api api = { .api = UFFD_API, .features = r->features };
	int u = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK), keep;
	struct rlimit nofile;

	if (u < 0 || ioctl(u, UFFDIO_API, &api) < 0)
		report_fail(h->wfd, h->rep, "userfaultfd: %s", strerror(errno));
	/* A copy of its own, high and close-on-exec: if the manager dies, faults
	 * wait instead of reading zeros. */
	keep = 1023;
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur <= 1023)
		keep = (int)nofile.rlim_cur - 1;
	if (keep <= h->wfd + r->nmf + 1)
		keep = h->wfd + r->nmf + 1;
	h->rep->uffd = fcntl(u, F_DUPFD_CLOEXEC, keep);
	if (h->rep->uffd < 0)
		report_fail(h->wfd, h->rep, "dup uffd: %s", strerror(errno));
	close(u);
}

/* cwd, umask, personality. */
static void set_fs(struct rs *r, struct hs *h)
{
	const RegFileEntry *cwd = rs_file_by_id(r, r->fs->cwd_id);

	if (cwd && chdir(cwd->name) < 0)
		report_fail(h->wfd, h->rep, "chdir %s: %s", cwd->name, strerror(errno));
	umask(r->fs->has_umask ? r->fs->umask : 022);
	if (personality(r->core->tc->personality) < 0)
		report_fail(h->wfd, h->rep, "personality: %s", strerror(errno));
}

/* Handlers: the kernel's own struct, so the dumped restorer stays. */
static void set_sigactions(struct rs *r, struct hs *h)
{
	const TaskCoreEntry *tc = r->core->tc;

	for (int sig = 1; sig <= CORE_NSIG; sig++) {
		uint64_t ksa[4] = { 0, 0, 0, 0 };

		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		for (size_t i = 0; i < tc->n_sigactions; i++) {
			const SaEntry *s = tc->sigactions[i];

			if (s->has_uffd_signo && (int)s->uffd_signo == sig) {
				ksa[0] = s->sigaction;
				ksa[1] = s->flags;
				ksa[2] = s->restorer;
				ksa[3] = s->mask;
			}
		}
		if (syscall(SYS_rt_sigaction, sig, ksa, NULL, 8) < 0 && sig < 32)
			report_fail(h->wfd, h->rep, "rt_sigaction %d: %s", sig, strerror(errno));
	}
}

/* sigaltstack, tid address, robust list, comm. */
static void set_thread(struct rs *r, struct hs *h)
{
	const TaskCoreEntry *tc = r->core->tc;
	const ThreadCoreEntry *th = r->core->thread_core;

	if (th->sas && !(th->sas->ss_flags & SS_DISABLE)) {
		stack_t ss = { .ss_sp = (void *)(uintptr_t)th->sas->ss_sp,
			       .ss_flags = (int)(th->sas->ss_flags & ~SS_ONSTACK),
			       .ss_size = th->sas->ss_size };

		if (sigaltstack(&ss, NULL) < 0)
			report_fail(h->wfd, h->rep, "sigaltstack: %s", strerror(errno));
	}
	syscall(SYS_set_tid_address, r->core->thread_info->clear_tid_addr);
	if (tc->has_uffd_robust_list && tc->uffd_robust_list &&
	    syscall(SYS_set_robust_list, tc->uffd_robust_list, tc->uffd_robust_list_len) < 0)
		report_fail(h->wfd, h->rep, "set_robust_list: %s", strerror(errno));
	prctl(PR_SET_NAME, tc->comm, 0, 0, 0);
}

static pid_t fork_at(pid_t want, int *err);
static void helper(struct rs *r, int wfd, int pid_err) __attribute__((noreturn));

/* The pid as restored of the leader of the group process I joins. */
static pid_t leader_now(const struct rs_tree *t, int i)
{
	return t->now[t->leader[i]];
}

/*
 * A process of a tree: take its session or process group as recorded, then
 * fork its children (each the helper of its own process, at its dumped pid
 * where free), in pstree order, and keep no report pipe but its own. A
 * session leader calls setsid() before it forks anyone; a group leader is
 * in its group before the children that join it are forked, and a child
 * joining the group of a sibling forked before it is put there by its
 * parent as well as by itself (as a shell does), so neither waits for the
 * other.
 */
static void tree_fork(struct rs *r, struct hs *h)
{
	struct rs_tree *t = r->tree;
	int i = r->idx;

	/* First: our parent may not have written it before it forked us. */
	t->now[i] = getpid();
	if (t->setsid[i]) {
		if (setsid() < 0)
			report_fail(h->wfd, h->rep, "setsid: %s", strerror(errno));
	} else if (t->leader[i] >= 0 && getpgrp() != leader_now(t, i) &&
		   setpgid(0, leader_now(t, i)) < 0) {
		report_fail(h->wfd, h->rep, "setpgid into the group of pid %u (now pid %d): %s",
			    t->r[t->leader[i]]->pid, (int)leader_now(t, i), strerror(errno));
	}
	for (size_t c = 0; c < t->n; c++) {
		int err;
		pid_t p;

		if (t->parent[c] != i)
			continue;
		p = fork_at((pid_t)t->r[c]->pid, &err);
		if (p < 0)
			report_fail(h->wfd, h->rep, "fork of the helper of pid %u: %s", t->r[c]->pid,
				    strerror(errno));
		if (p == 0) {
			errno = 0;
			helper(t->r[c], t->pipe[c][1], err);
		}
		t->now[c] = p;
		if (!t->setsid[c] && t->leader[c] >= 0)
			setpgid(p, leader_now(t, c));	/* it does so too: either may come first */
	}
	for (size_t j = 0; j < t->n; j++) {
		close(t->pipe[j][0]);
		if ((int)j != i)
			close(t->pipe[j][1]);
	}
}

/*
 * The helper: set up everything that needs no memory of the old process,
 * then sleep. PID_ERR: why it is not at the dumped pid, or 0.
 */
static void helper(struct rs *r, int wfd, int pid_err)
{
	struct hs h = { .wfd = wfd, .rep = &r->rep, .maxfd = 2, .stdio_fd = -1, .hi = 3 };

	helper_init(r, &h, pid_err);
	if (r->tree)
		tree_fork(r, &h);
	map_trampoline(r, &h);
	open_files(r, &h);
	lift_all(&h, r->nfdi, r->nmf);
	place_fds(r, &h);
	set_stdio(r, &h);
	if (!r->o->eager)
		make_uffd(r, &h);
	set_fs(r, &h);
	set_sigactions(r, &h);
	set_thread(r, &h);

	if (write(h.wfd, h.rep, sizeof(*h.rep)) != (ssize_t)sizeof(*h.rep))
		_exit(1);
	close(h.wfd);
	for (;;)
		pause();	/* every signal blocked: only ptrace wakes us */
}

/*
 * Fork at pid WANT (clone3 with set_tid, which needs CAP_SYS_ADMIN or
 * CAP_CHECKPOINT_RESTORE over our pid namespace), or, when it is taken or
 * not ours to ask, at any pid with *ERR saying why. This tool is
 * single-threaded here, so the raw clone is a fork without atfork handlers,
 * and the child runs only plain system calls and stdio until it is rebuilt.
 */
static pid_t fork_at(pid_t want, int *err)
{
	pid_t tid = want;
	struct clone_args_ {
		uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
		uint64_t set_tid, set_tid_size, cgroup;
	} ca = { .exit_signal = SIGCHLD, .set_tid = (uintptr_t)&tid, .set_tid_size = 1 };
	long ret = syscall(SYS_clone3, &ca, sizeof(ca));

	*err = 0;
	if (ret >= 0)
		return (pid_t)ret;
	*err = errno;
	return fork();
}

/* Close the write ends of the report pipes (every helper's, for a tree) in the forker. */
static void close_writers(struct rs *r, int wfd)
{
	if (!r->tree) {
		close(wfd);
		return;
	}
	for (size_t j = 0; j < r->tree->n; j++)
		if (r->tree->pipe[j][1] >= 0) {
			close(r->tree->pipe[j][1]);
			r->tree->pipe[j][1] = -1;
		}
}

/*
 * --pidns: the init of a new pid namespace (its pid 1): fork the helper at
 * the dumped pid there, which is free unless it is 1, then reap every child
 * (the restored process, and any orphan of it) and exit as the restored
 * process did, which ends the namespace. It first waits for the tool to say
 * the restore is done (a byte on KEEP, answered): if the tool dies or gives
 * up first (end of file), it exits, and the namespace ends with it; before
 * the helper is seized (PTRACE_O_EXITKILL) nothing else would end it.
 */
static void pidns_init(struct rs *r, int wfd, int keep) __attribute__((noreturn));

static void pidns_init(struct rs *r, int wfd, int keep)
{
	int err, st, code = 0;
	sigset_t chld;
	pid_t h, w;
	char c;

	prctl(PR_SET_NAME, "uffd-pidns-init", 0, 0, 0);
	/* The tool's blocked SIGCHLD (main.c) is no business of this init's. */
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_UNBLOCK, &chld, NULL);
	h = fork_at((pid_t)r->pid, &err);
	if (h == 0)
		helper(r, wfd, err);
	if (h < 0) {
		memset(&r->rep, 0, sizeof(r->rep));
		errno = errno ? errno : EIO;
		report_fail(wfd, &r->rep, "fork in the new pid namespace: %s", strerror(errno));
	}
	close_writers(r, wfd);
	if (read(keep, &c, 1) != 1 || write(keep, &c, 1) != 1)
		_exit(1);
	close_range(0, ~0u, 0);
	for (;;) {
		w = wait(&st);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			break;
		if (w == h)
			code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	}
	_exit(code);
}

/* Fork the init of a new pid namespace (clone3 with CLONE_NEWPID). */
static pid_t fork_pidns(void)
{
	struct clone_args_ {
		uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
	} ca = { .flags = CLONE_NEWPID, .exit_signal = SIGCHLD };
	long ret = syscall(SYS_clone3, &ca, sizeof(ca));

	return ret < 0 ? -1 : (pid_t)ret;
}

/* --pidns: the helper is the only child of the init; its pid in ours. */
static pid_t pidns_helper(pid_t init)
{
	char path[64], buf[64];
	long pid = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)init, (int)init);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n > 0) {
		buf[n] = '\0';
		pid = strtol(buf, NULL, 10);
	}
	return pid > 0 ? (pid_t)pid : -1;
}

/* Read the helper's report from RFD (and close it): 0, or -errno with why it failed. */
static int await_report(struct rs *r, int rfd)
{
	struct pollfd p = { .fd = rfd, .events = POLLIN };
	ssize_t n;
	char c;

	if (poll(&p, 1, RS_READY_MS) <= 0) {
		close(rfd);
		return rs_fail(r, ETIMEDOUT, "the helper did not get ready");
	}
	n = read(rfd, &r->rep, sizeof(r->rep));
	if (n != (ssize_t)sizeof(r->rep)) {
		close(rfd);
		return rs_fail(r, EIO, "the helper died while getting ready");
	}
	if (r->rep.err || r->rep.msg[0]) {
		close(rfd);
		return rs_fail(r, r->rep.err ? r->rep.err : EIO, "%s", r->rep.msg);
	}
	/* End of file: it closed its end too, and has nothing left to do but sleep. */
	if (poll(&p, 1, RS_READY_MS) <= 0 || read(rfd, &c, 1) != 0) {
		close(rfd);
		return rs_fail(r, EIO, "the helper did not close its pipe");
	}
	close(rfd);
	return 0;
}

/* Its pids in its own namespace and in ours, and a pidfd. */
static int ready(struct rs *r)
{
	r->th[0].now = r->rep.nspid;
	r->th[0].host = r->child;
	r->th[0].err = r->rep.pid_err;
	r->pidfd = (int)syscall(SYS_pidfd_open, r->child, 0);
	if (r->pidfd < 0)
		return rs_fail(r, errno, "pidfd_open: %s", strerror(errno));
	return 0;
}

/* Fork the helper (under a pid namespace's init with --pidns) and wait until it is ready. */
int restore_helper_start(struct rs *r)
{
	int own[2], *pfd = r->tree ? r->tree->pipe[0] : own, err = 0, ret;
	pid_t f;

	if (!r->tree && pipe2(pfd, O_CLOEXEC) < 0)
		return rs_fail(r, errno, "pipe: %s", strerror(errno));
	if (r->o->pidns && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, r->keep) < 0) {
		err = errno;
		close(pfd[0]);
		pfd[0] = -1;	/* a tree's: free_all() closes what is left */
		close_writers(r, pfd[1]);
		return rs_fail(r, err, "socketpair: %s", strerror(err));
	}
	fflush(NULL);
	f = r->o->pidns ? fork_pidns() : fork_at((pid_t)r->pid, &err);
	if (f < 0) {
		err = errno;
		close(pfd[0]);
		pfd[0] = -1;
		close_writers(r, pfd[1]);
		if (r->o->pidns)
			return rs_fail(r, err, "clone3(CLONE_NEWPID): %s%s", strerror(err),
				       err == EPERM ? " (--pidns needs CAP_SYS_ADMIN)" : "");
		return rs_fail(r, err, "fork: %s", strerror(err));
	}
	if (f == 0) {
		close(pfd[0]);
		if (r->o->pidns) {
			close(r->keep[0]);
			pidns_init(r, pfd[1], r->keep[1]);
		}
		errno = 0;
		helper(r, pfd[1], err);
	}
	if (r->o->pidns) {
		r->init = f;
		close(r->keep[1]);
		r->keep[1] = -1;
	} else {
		r->child = f;
	}
	close_writers(r, pfd[1]);
	ret = await_report(r, pfd[0]);
	pfd[0] = -1;
	if (ret < 0)
		return ret;
	if (getenv("UFFD_INJECT_TEST_DIE_AT") && !strcmp(getenv("UFFD_INJECT_TEST_DIE_AT"),
							 "helper-ready"))
		raise(SIGKILL);
	if (r->o->pidns && (r->child = pidns_helper(r->init)) < 0)
		return rs_fail(r, ESRCH, "the helper in the new pid namespace is gone");
	return ready(r);
}

/* The last pid of the NSpid line of /proc/PID/status (its pid in its own namespace), or -1. */
static pid_t ns_pid(pid_t pid)
{
	char path[64], buf[4096], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	p = strstr(buf, "\nNSpid:");
	if (!p)
		return -1;
	p[strcspn(p + 1, "\n") + 1] = '\0';
	p = strrchr(p, '\t') ? strrchr(p, '\t') : strrchr(p, ' ');
	return p ? (pid_t)strtol(p + 1, NULL, 10) : -1;
}

int restore_helper_await(struct rs *r, pid_t parent)
{
	char path[64], buf[8192], *p, *e;
	ssize_t n;
	int fd, ret;

	ret = await_report(r, r->tree->pipe[r->idx][0]);
	r->tree->pipe[r->idx][0] = -1;
	if (ret < 0)
		return ret;
	if (!r->o->pidns) {
		r->child = r->rep.nspid;	/* in our namespace: the same number */
		return ready(r);
	}
	/* In the new namespace: the child of PARENT (ours) that has that pid there. */
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)parent, (int)parent);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return rs_fail(r, errno, "%s: %s", path, strerror(errno));
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	for (p = buf; *p; p = e) {
		long c = strtol(p, &e, 10);

		if (e == p)
			break;
		if (c > 0 && ns_pid((pid_t)c) == r->rep.nspid) {
			r->child = (pid_t)c;
			return ready(r);
		}
	}
	return rs_fail(r, ESRCH, "its helper (pid %d in the new namespace) is not among the "
		       "children of %d", (int)r->rep.nspid, (int)parent);
}

int restore_helper_release(struct rs *r)
{
	struct pollfd p = { .fd = r->keep[0], .events = POLLIN };
	char c = 'k';

	if (r->keep[0] < 0)
		return 0;
	if (write(r->keep[0], &c, 1) != 1 || poll(&p, 1, RS_READY_MS) != 1 ||
	    read(r->keep[0], &c, 1) != 1)
		return rs_fail(r, EIO, "the init of the new pid namespace did not answer");
	return 0;
}
