/*
 * Collect, check and write the non-memory state of a process for restore:
 * registers and FPU state through ptrace, signal handlers, timers and the
 * like through syscalls run in the target, files from /proc.
 */
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "arch.h"
#include "core.h"
#include "dump_shmem.h"
#include "procfs.h"
#include "core.pb-c.h"
#include "files.pb-c.h"
#include "image.h"
#include "ptrace.h"
#include "why.h"

#ifndef NT_X86_XSTATE
#define NT_X86_XSTATE	0x202
#endif
#ifndef PTRACE_GETSIGMASK
#define PTRACE_GETSIGMASK	0x420a
#endif
#ifndef PTRACE_GET_RSEQ_CONFIGURATION
#define PTRACE_GET_RSEQ_CONFIGURATION	0x420f
#endif
#ifndef PR_GET_TID_ADDRESS
#define PR_GET_TID_ADDRESS	40
#endif

#define CORE_XSTATE_MAX	(64u << 10)
#define CORE_MAX_FILES	4096

struct rseq_conf {
	uint64_t rseq_abi_pointer;
	uint32_t rseq_abi_size;
	uint32_t signature;
	uint32_t flags;
	uint32_t pad;
};

static uint64_t ts_ns(const struct timespec *t)
{
	return (uint64_t)t->tv_sec * 1000000000ull + (uint64_t)t->tv_nsec;
}

/* Read a small /proc/PID/NAME into BUF (NUL-terminated). Returns the length or -errno. */
static ssize_t proc_small(pid_t pid, const char *name, char *buf, size_t cap)
{
	char path[128];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, cap - 1);
	if (n < 0)
		n = -errno;
	else
		buf[n] = '\0';
	close(fd);
	return n;
}

static struct core_file *add_file(struct core *c)
{
	struct core_file *nf;

	if (c->nf >= CORE_MAX_FILES)
		return NULL;
	nf = realloc(c->f, (c->nf + 1) * sizeof(*nf));
	if (!nf)
		return NULL;
	c->f = nf;
	memset(&c->f[c->nf], 0, sizeof(c->f[0]));
	c->f[c->nf].id = (c->id_base ? c->id_base : CORE_FILE_ID_BASE) + (uint32_t)c->nf;
	c->f[c->nf].fd = -1;
	return &c->f[c->nf++];
}

/* Record PATH as seen through the process (ST); refuse one not reachable by that name. */
static int note_path(struct core *c, const char *what, const char *path, const struct stat *st,
		     uint32_t *id, char *why, size_t len)
{
	struct core_file *f;
	struct stat ps;
	size_t k = strlen(path);

	if (k > 10 && !strcmp(path + k - 10, " (deleted)"))
		return why_set(why, len, ENOTSUP, "%s %s: the file is deleted; restore needs it by "
			     "name", what, path);
	if (path[0] != '/' || stat(path, &ps) < 0 || ps.st_ino != st->st_ino ||
	    ps.st_dev != st->st_dev)
		return why_set(why, len, ENOTSUP, "%s %s is not reachable by that name from here "
			     "(another mount namespace or a renamed file)", what, path);
	f = add_file(c);
	if (!f || !(f->path = strdup(path)))
		return why_set(why, len, ENOMEM, "out of memory");
	f->dev = st->st_dev;
	f->ino = st->st_ino;
	f->size = (uint64_t)st->st_size;
	f->mtime_ns = ts_ns(&st->st_mtim);
	f->mode = st->st_mode;
	if (id)
		*id = f->id;
	return 0;
}

static bool is_plain_chardev(const char *path)
{
	static const char *const ok[] = { "/dev/null", "/dev/zero", "/dev/full", "/dev/random",
					  "/dev/urandom" };

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (!strcmp(path, ok[i]))
			return true;
	return false;
}

/* Read pos and flags of fd FD from /proc/PID/fdinfo. */
static int fd_info(pid_t pid, int fd, uint64_t *pos, uint32_t *flags)
{
	char name[64], buf[4096];
	const char *p;

	snprintf(name, sizeof(name), "fdinfo/%d", fd);
	if (proc_small(pid, name, buf, sizeof(buf)) < 0)
		return -errno;
	p = procfs_text_field(buf, "pos");
	if (!p)
		return -EIO;
	*pos = strtoull(p, NULL, 10);
	p = procfs_text_field(buf, "flags");
	if (!p)
		return -EIO;
	*flags = (uint32_t)strtoul(p, NULL, 8);
	return 0;
}

/* A memfd file for the shared memory object DEV, INO (PATH as /proc shows it). */
static int note_memfd(struct core *c, const char *what, const char *path, uint64_t dev,
		      uint64_t ino, char *why, size_t len)
{
	const struct dump_shmem_obj *o = dump_shmem_find(c->shm, dev, ino);
	struct core_file *f;

	if (!o)
		return why_set(why, len, ENOTSUP, "%s %s: a shared memory object the dump did "
			       "not collect (the last dump of a pre-copy chain, --prev-images, "
			       "does not record shared memory: dump without it)", what, path);
	f = add_file(c);
	if (!f || !(f->path = strdup(path)))
		return why_set(why, len, ENOMEM, "out of memory");
	f->memfd = true;
	f->inode_id = o->inode_id;
	f->dev = dev;
	f->ino = ino;
	f->size = o->size;
	f->mode = o->mode;
	return 0;
}

/* Every open fd: regular files, directories and /dev/null-like devices are kept; stdio of
 * another kind is left to restore's --stdio; anything else is refused. */
static int collect_fds(struct core *c, char *why, size_t len)
{
	char dpath[64];
	struct dirent *de;
	DIR *d;
	int ret = 0;

	snprintf(dpath, sizeof(dpath), "/proc/%d/fd", (int)c->pid);
	d = opendir(dpath);
	if (!d)
		return why_set(why, len, errno, "%s: %s", dpath, strerror(errno));
	while (ret == 0 && (de = readdir(d))) {
		char lpath[96], link[PATH_MAX];
		struct stat st;
		uint32_t flags = 0;
		uint64_t pos = 0;
		ssize_t n;
		int fd;

		if (de->d_name[0] == '.')
			continue;
		fd = atoi(de->d_name);
		snprintf(lpath, sizeof(lpath), "%s/%d", dpath, fd);
		n = readlink(lpath, link, sizeof(link) - 1);
		if (n < 0 || stat(lpath, &st) < 0 || fd_info(c->pid, fd, &pos, &flags) < 0) {
			if (errno == ENOENT)
				continue;	/* closed meanwhile: impossible while frozen */
			ret = why_set(why, len, errno, "fd %d: %s", fd, strerror(errno));
			break;
		}
		link[n] = '\0';
		if (!strncmp(link, "/memfd:", 7)) {
			char what[32];

			snprintf(what, sizeof(what), "fd %d:", fd);
			ret = note_memfd(c, what, link, st.st_dev, st.st_ino, why, len);
			if (ret == 0) {
				struct core_file *f = &c->f[c->nf - 1];

				f->fd = fd;
				f->cloexec = flags & O_CLOEXEC;
				f->flags = flags & ~(uint32_t)O_CLOEXEC;
				f->pos = pos;
			}
			continue;
		}
		if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) ||
		    (S_ISCHR(st.st_mode) && is_plain_chardev(link))) {
			char what[32];

			snprintf(what, sizeof(what), "fd %d:", fd);
			ret = note_path(c, what, link, &st, NULL, why, len);
			if (ret == 0) {
				struct core_file *f = &c->f[c->nf - 1];

				f->fd = fd;
				f->cloexec = flags & O_CLOEXEC;
				f->flags = flags & ~(uint32_t)O_CLOEXEC;
				f->pos = pos;
			}
			continue;
		}
		if (fd <= 2) {
			c->stdio |= 1u << fd;	/* a tty, a pipe, a socket: --stdio at restore */
			continue;
		}
		/*
		 * A userfaultfd with no area registered (dump_classify refused any
		 * registered one) is inert: the copy a restored process keeps of
		 * its own. Restore makes a new one; this one is not carried over.
		 */
		if (!strcmp(link, "anon_inode:[userfaultfd]"))
			continue;
		ret = why_set(why, len, ENOTSUP, "fd %d is %s%s: only regular files, directories "
			    "and stdio can be restored", fd,
			    S_ISSOCK(st.st_mode) ? "a socket " :
			    S_ISFIFO(st.st_mode) ? "a pipe " :
			    S_ISCHR(st.st_mode) ? "the device " : "", link);
	}
	closedir(d);
	return ret;
}

/* Does the VmFlags text T ("rd wr mr ...") hold the two-letter code CODE? */
static bool has_vmflag(const char *t, const char *code)
{
	while (t && *t) {
		size_t k;

		t += strspn(t, " ");
		k = strcspn(t, " \n");
		if (k == 2 && !strncmp(t, code, 2))
			return true;
		if (!k)
			break;
		t += k;
	}
	return false;
}

/* A file for every file-backed area (one per inode); the MAP_NORESERVE areas. */
static int collect_maps(struct core *c, const struct procfs_maps *maps, char *why, size_t len)
{
	c->noreserve = calloc(maps->n + 1, sizeof(*c->noreserve));
	if (!c->noreserve)
		return why_set(why, len, ENOMEM, "out of memory");
	for (size_t i = 0; i < maps->n; i++) {
		const struct procfs_vma *v = &maps->v[i];
		struct stat st;
		bool seen = false;
		char what[80];
		int ret;

		if (has_vmflag(v->vmflags_text, "nr"))
			c->noreserve[c->nnoreserve++] = v->start;

		if (dump_shmem_area(v)) {
			uint64_t dev = makedev(v->dev_major, v->dev_minor);

			for (size_t k = 0; k < c->nf; k++)
				if (c->f[k].fd < 0 && c->f[k].memfd && c->f[k].ino == v->inode &&
				    c->f[k].dev == dev)
					seen = true;
			snprintf(what, sizeof(what), "area 0x%" PRIx64 "-0x%" PRIx64 " maps",
				 v->start, v->end);
			if (!seen && (ret = note_memfd(c, what, v->name, dev, v->inode, why,
						       len)) < 0)
				return ret;
			continue;
		}

		if (!v->inode || !v->name || v->name[0] != '/')
			continue;
		/* Anonymous hugetlb: memory, not a file (dump_area.c). */
		if (has_vmflag(v->vmflags_text, "ht") && !strcmp(v->name, "/anon_hugepage (deleted)"))
			continue;
		for (size_t k = 0; k < c->nf; k++) {
			/* A memfd's inode number may be a file's on another device. */
			if (c->f[k].fd < 0 && !c->f[k].memfd && c->f[k].ino == v->inode) {
				if (strcmp(c->f[k].path, v->name))
					return why_set(why, len, ENOTSUP, "two mapped files share inode "
						     "%" PRIu64 " (%s, %s): not supported",
						     v->inode, c->f[k].path, v->name);
				seen = true;
			}
		}
		if (seen)
			continue;
		snprintf(what, sizeof(what), "area 0x%" PRIx64 "-0x%" PRIx64 " maps", v->start,
			 v->end);
		if (stat(v->name, &st) < 0 || st.st_ino != v->inode)
			return why_set(why, len, ENOTSUP, "%s %s, which is %s", what, v->name,
				     strstr(v->name, " (deleted)") ? "deleted" :
				     "not reachable by that name from here");
		ret = note_path(c, what, v->name, &st, NULL, why, len);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int collect_fs(struct core *c, char *why, size_t len)
{
	static const char *const names[] = { "exe", "cwd", "root" };
	uint32_t *ids[] = { &c->exe_id, &c->cwd_id, &c->root_id };

	for (int i = 0; i < 3; i++) {
		char lpath[64], link[PATH_MAX];
		struct stat st;
		ssize_t n;
		int ret;

		snprintf(lpath, sizeof(lpath), "/proc/%d/%s", (int)c->pid, names[i]);
		n = readlink(lpath, link, sizeof(link) - 1);
		if (n < 0 || stat(lpath, &st) < 0)
			return why_set(why, len, errno, "%s: %s", lpath, strerror(errno));
		link[n] = '\0';
		if (i == 2 && strcmp(link, "/"))
			return why_set(why, len, ENOTSUP, "it runs chrooted in %s: not supported", link);
		ret = note_path(c, names[i], link, &st, ids[i], why, len);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Read /proc/PID/task/TID/NAME into BUF. Returns the length or -errno. */
static ssize_t task_small(pid_t pid, pid_t tid, const char *name, char *buf, size_t cap)
{
	char rel[96];

	snprintf(rel, sizeof(rel), "task/%d/%s", (int)tid, name);
	return proc_small(pid, rel, buf, cap);
}

/* What each thread's own /proc files tell: refuse what restore could not bring back. */
static int check_thread(struct core *c, pid_t tid, char *why, size_t len)
{
	char st[8192];
	const char *v;
	unsigned uid[4], gid[4];
	unsigned long long pnd = 0;

	if (task_small(c->pid, tid, "status", st, sizeof(st)) < 0)
		return why_set(why, len, errno, "/proc/%d/task/%d/status: %s", (int)c->pid,
			     (int)tid, strerror(errno));
	v = procfs_text_field(st, "Seccomp");
	if (v && atoi(v) != 0)
		return why_set(why, len, ENOTSUP, "thread %d runs under seccomp (mode %d): not "
			     "supported", (int)tid, atoi(v));
	v = procfs_text_field(st, "Uid");
	if (!v || sscanf(v, "%u %u %u %u", &uid[0], &uid[1], &uid[2], &uid[3]) != 4)
		return why_set(why, len, EIO, "/proc/%d/task/%d/status: no Uid", (int)c->pid,
			     (int)tid);
	v = procfs_text_field(st, "Gid");
	if (!v || sscanf(v, "%u %u %u %u", &gid[0], &gid[1], &gid[2], &gid[3]) != 4)
		return why_set(why, len, EIO, "/proc/%d/task/%d/status: no Gid", (int)c->pid,
			     (int)tid);
	for (int i = 0; i < 4; i++)
		if (uid[i] != getuid() || gid[i] != getgid())
			return why_set(why, len, ENOTSUP, "thread %d runs as uid %u gid %u, not as "
				     "this tool (uid %u gid %u): restore would change its "
				     "credentials", (int)tid, uid[i], gid[i], getuid(), getgid());
	if ((v = procfs_text_field(st, "SigPnd")))
		pnd = strtoull(v, NULL, 16);
	if (pnd)
		return why_set(why, len, ENOTSUP, "thread %d has pending signals (mask 0x%llx): "
			     "they would be lost", (int)tid, pnd);
	if (!c->tree && task_small(c->pid, tid, "children", st, sizeof(st)) > 0 && st[0] &&
	    st[0] != '\n')
		return why_set(why, len, ENOTSUP, "it has child processes (%.40s): they would not "
			     "be its children after restore (dump --tree takes them along)", st);
	return 0;
}

/* What /proc tells without touching the process; refusals first. */
static int collect_proc(struct core *c, struct pt *pt, char *why, size_t len)
{
	char st[8192], buf[4096];
	const char *v;
	unsigned long long shd = 0;
	siginfo_t si;
	int ret;

	/* pt_seize puts the leader first when it lives; a zombie one is not seized. */
	if (pt->nr_threads < 1 || pt->th[0].tid != c->pid)
		return why_set(why, len, ENOTSUP, "its main thread %d has exited (the others "
			     "run on): restore needs the thread group leader", (int)c->pid);
	if (pt->nr_threads > CORE_MAX_THREADS)
		return why_set(why, len, ENOTSUP, "it has %d threads: restore takes at most %d",
			     pt->nr_threads, CORE_MAX_THREADS);
	c->th = calloc((size_t)pt->nr_threads, sizeof(*c->th));
	if (!c->th)
		return why_set(why, len, ENOMEM, "out of memory");
	c->nth = (size_t)pt->nr_threads;
	for (size_t i = 0; i < c->nth; i++) {
		c->th[i].tid = pt->th[i].tid;
		ret = check_thread(c, c->th[i].tid, why, len);
		if (ret < 0)
			return ret;
		if (task_small(c->pid, c->th[i].tid, "comm", buf, sizeof(buf)) > 0) {
			buf[strcspn(buf, "\n")] = '\0';
			buf[sizeof(c->th[i].comm) - 1] = '\0';
			memcpy(c->th[i].comm, buf, sizeof(c->th[i].comm));
		}
	}
	if (proc_small(c->pid, "status", st, sizeof(st)) < 0)
		return why_set(why, len, errno, "/proc/%d/status: %s", (int)c->pid, strerror(errno));
	/*
	 * /proc says 't' for any ptrace stop; the siginfo of the stop the
	 * engine left it in tells a group stop (the stop signal) from its own
	 * interrupt (SIGTRAP). Read before any syscall runs in it.
	 */
	if (ptrace(PTRACE_GETSIGINFO, pt->th[0].tid, NULL, &si) == 0 &&
	    (si.si_code >> 8) == PTRACE_EVENT_STOP &&
	    (si.si_signo == SIGSTOP || si.si_signo == SIGTSTP || si.si_signo == SIGTTIN ||
	     si.si_signo == SIGTTOU))
		c->stopped = true;
	v = procfs_text_field(st, "Umask");
	c->umask = v ? (uint32_t)strtoul(v, NULL, 8) : 022;
	if ((v = procfs_text_field(st, "ShdPnd")))
		shd = strtoull(v, NULL, 16);
	if (shd)
		return why_set(why, len, ENOTSUP, "it has pending signals (mask 0x%llx): they "
			     "would be lost", shd);
	if (proc_small(c->pid, "timers", buf, sizeof(buf)) > 0)
		return why_set(why, len, ENOTSUP, "it has POSIX timers (timer_create): not "
			     "supported");
	memcpy(c->comm, c->th[0].comm, sizeof(c->comm));
	if (proc_small(c->pid, "personality", buf, sizeof(buf)) > 0)
		c->personality = (uint32_t)strtoul(buf, NULL, 16);
	return 0;
}

/* Registers, FPU state, signal mask and rseq of thread I through ptrace. */
static int collect_regs(struct core_thread *t, struct pt *pt, int i, char *why, size_t len)
{
	pid_t tid = pt->th[i].tid;
	struct rseq_conf rc;
	struct iovec iov;
	long r;

	if (ptrace(PTRACE_GETREGS, tid, NULL, &t->regs) < 0)
		return why_set(why, len, errno, "thread %d: PTRACE_GETREGS: %s", (int)tid,
			     strerror(errno));
	t->xstate = malloc(CORE_XSTATE_MAX);
	if (!t->xstate)
		return why_set(why, len, ENOMEM, "out of memory");
	iov.iov_base = t->xstate;
	iov.iov_len = CORE_XSTATE_MAX;
	if (ptrace(PTRACE_GETREGSET, tid, (void *)NT_X86_XSTATE, &iov) < 0)
		return why_set(why, len, errno, "thread %d: PTRACE_GETREGSET NT_X86_XSTATE: %s",
			     (int)tid, strerror(errno));
	t->xstate_len = iov.iov_len;
	if (ptrace(PTRACE_GETSIGMASK, tid, (void *)sizeof(t->sigmask), &t->sigmask) < 0)
		return why_set(why, len, errno, "thread %d: PTRACE_GETSIGMASK: %s", (int)tid,
			     strerror(errno));
	r = ptrace(PTRACE_GET_RSEQ_CONFIGURATION, tid, (void *)sizeof(rc), &rc);
	if (r < 0 && errno != EIO && errno != EINVAL)
		return why_set(why, len, errno, "thread %d: PTRACE_GET_RSEQ_CONFIGURATION: %s",
			     (int)tid, strerror(errno));
	if (r >= 0 && rc.rseq_abi_pointer) {
		t->has_rseq = true;
		t->rseq_ptr = rc.rseq_abi_pointer;
		t->rseq_len = rc.rseq_abi_size;
		t->rseq_sig = rc.signature;
	}
	return 0;
}

/* Run syscall NR in thread I of the target; its result in *RET. */
static int run(struct pt *pt, int i, long *ret, long nr, long a1, long a2, long a3, long a4,
	       char *why, size_t len)
{
	int r = pt_syscall_in(pt, i, ret, nr, a1, a2, a3, a4, 0, 0);

	if (r < 0)
		return why_set(why, len, -r, "cannot run syscall %ld in thread %d: %s", nr,
			     (int)pt->th[i].tid, strerror(-r));
	return 0;
}

/*
 * Signal handlers and timers (the process's), then the tid address, robust
 * list, sigaltstack and parent-death signal of every thread: read by syscalls
 * run in the target, each thread's in itself.
 */
static int collect_syscalls(struct core *c, struct pt *pt, char *why, size_t len)
{
	uint64_t scratch, buf[8];
	long ret;
	int r;

	r = run(pt, 0, &ret, SYS_mmap, 0, 4096, PROT_READ | PROT_WRITE,
		MAP_PRIVATE | MAP_ANONYMOUS, why, len);
	if (r < 0)
		return r;
	if (ret < 0 && ret > -4096)
		return why_set(why, len, (int)-ret, "mmap in it: %s", strerror((int)-ret));
	scratch = (uint64_t)ret;
#define RUN(i, nr, a, b, cc, d) do { \
		r = run(pt, i, &ret, nr, a, b, cc, d, why, len); \
		if (r == 0 && ret >= 0) \
			r = pt_read(pt, scratch, buf, sizeof(buf)); \
		if (r < 0) goto out; \
	} while (0)

	for (int sig = 1; sig <= CORE_NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		RUN(0, SYS_rt_sigaction, sig, 0, (long)scratch, 8);
		if (ret < 0)
			continue;
		/* Every signal in order, defaults too, as CRIU lists them. */
		c->sa[c->nsa++] = (struct core_sigaction){ sig, buf[0], buf[1], buf[2], buf[3] };
	}
	for (int which = 0; which < 3; which++) {
		static const char *const names[] = { "ITIMER_REAL (alarm, setitimer)",
						     "ITIMER_VIRTUAL", "ITIMER_PROF" };

		RUN(0, SYS_getitimer, which, (long)scratch, 0, 0);
		if (ret == 0 && (buf[2] | buf[3])) {
			r = why_set(why, len, ENOTSUP, "it has the interval timer %s armed: not "
				  "supported", names[which]);
			goto out;
		}
	}
	for (size_t i = 0; i < c->nth; i++) {
		struct core_thread *t = &c->th[i];

		RUN((int)i, SYS_prctl, PR_GET_TID_ADDRESS, (long)scratch, 0, 0);
		if (ret == 0)
			t->tid_addr = buf[0];
		RUN((int)i, SYS_get_robust_list, 0, (long)scratch, (long)scratch + 8, 0);
		if (ret == 0) {
			t->robust = buf[0];
			t->robust_len = buf[1];
		}
		RUN((int)i, SYS_sigaltstack, 0, (long)scratch, 0, 0);
		if (ret == 0) {
			t->ss_sp = buf[0];
			t->ss_flags = (uint32_t)buf[1];
			t->ss_size = buf[2];
		}
		RUN((int)i, SYS_prctl, PR_GET_PDEATHSIG, (long)scratch, 0, 0);
		if (ret == 0)
			t->pdeath = (uint32_t)buf[0];
	}
#undef RUN
	r = 0;
out:
	if (run(pt, 0, &ret, SYS_munmap, (long)scratch, 4096, 0, 0, why, len) < 0 && r == 0)
		r = -EIO;
	return r;
}

int core_collect(struct core *c, struct pt *pt, const struct procfs_maps *maps, char *why,
		 size_t len)
{
	uint32_t id_base = c->id_base, files_id = c->files_id;
	bool elsewhere = c->files_elsewhere, tree = c->tree;
	const struct dump_shmem *shm = c->shm;
	int ret;

	memset(c, 0, sizeof(*c));
	c->id_base = id_base;	/* set by a tree before */
	c->files_id = files_id;
	c->files_elsewhere = elsewhere;
	c->tree = tree;
	c->shm = shm;
	c->pid = pt->pid;
	ret = collect_proc(c, pt, why, len);
	if (ret == 0)
		ret = collect_fds(c, why, len);
	if (ret == 0)
		ret = collect_maps(c, maps, why, len);
	if (ret == 0)
		ret = collect_fs(c, why, len);
	for (size_t i = 0; ret == 0 && i < c->nth; i++)
		ret = collect_regs(&c->th[i], pt, (int)i, why, len);
	if (ret == 0)
		ret = collect_syscalls(c, pt, why, len);
	if (ret == 0)
		ret = dump_criu_collect(&c->criu, pt, maps, why, len);
	/* In a tree each process has ids of its own; the root writes the dump's images. */
	c->criu.kobj = c->files_id ? c->files_id : DUMP_CRIU_FILES_ID;
	c->criu.per_dump = !c->files_elsewhere;
	return ret;
}

/* ---- writing ---- */

struct core_names {
	char name[3][48];
	char tmp[3][56];
};

/* fdinfo-ID.img of C, and its temporary name. */
static void fdinfo_names(const struct core *c, char *name, char *tmp, size_t len)
{
	snprintf(name, len, "fdinfo-%u.img", c->files_id ? c->files_id : 1);
	snprintf(tmp, len, "fdinfo-%u.img.part", c->files_id ? c->files_id : 1);
}

static void names(const struct core *c, struct core_names *n)
{
	snprintf(n->name[0], sizeof(n->name[0]), "core-%d.img", (int)c->pid);
	snprintf(n->name[1], sizeof(n->name[1]), "%s", CORE_FILES_IMG);
	snprintf(n->name[2], sizeof(n->name[2]), "fs-%d.img", (int)c->pid);
	for (int i = 0; i < 3; i++)
		snprintf(n->tmp[i], sizeof(n->tmp[i]), "%s.part", n->name[i]);
}

static int write_msgs(int dirfd, const char *name, uint32_t magic,
		      const ProtobufCMessage *const *msgs, size_t n, char *why, size_t len)
{
	struct img_writer w;
	struct img_err err;
	int ret;

	ret = img_create(&w, dirfd, name, magic, &err);
	for (size_t i = 0; ret == 0 && i < n; i++)
		ret = img_write(&w, msgs[i], &err);
	if (ret < 0) {
		img_abort(&w);
		return why_set(why, len, -ret, "%s", err.msg);
	}
	ret = img_finish(&w, &err);
	if (ret < 0)
		return why_set(why, len, -ret, "%s", err.msg);
	return 0;
}

/* The core-TID.img of thread T; the task's own records too for the main thread. */
static int write_core(const struct core *c, const struct core_thread *t, int dirfd,
		      const char *name, char *why, size_t len)
{
	const struct user_regs_struct *g = &t->regs;
	bool main_thread = t == &c->th[0];
	CoreEntry ce = CORE_ENTRY__INIT;
	ThreadInfoX86 ti = THREAD_INFO_X86__INIT;
	UserX86RegsEntry gp = USER_X86_REGS_ENTRY__INIT;
	UserX86FpregsEntry fp = USER_X86_FPREGS_ENTRY__INIT;
	TaskCoreEntry tc = TASK_CORE_ENTRY__INIT;
	ThreadCoreEntry th = THREAD_CORE_ENTRY__INIT;
	ThreadSasEntry sas = THREAD_SAS_ENTRY__INIT;
	RseqEntry rs = RSEQ_ENTRY__INIT;
	SaEntry sa[CORE_NSIG], *sap[CORE_NSIG];
	struct dump_criu_core_buf cb;
	const ProtobufCMessage *m = &ce.base;
	uint32_t st_space[32], xmm_space[64];
	const uint8_t *fx = t->xstate;

	ce.mtype = 1;
	gp.r15 = g->r15; gp.r14 = g->r14; gp.r13 = g->r13; gp.r12 = g->r12;
	gp.bp = g->rbp; gp.bx = g->rbx; gp.r11 = g->r11; gp.r10 = g->r10;
	gp.r9 = g->r9; gp.r8 = g->r8; gp.ax = g->rax; gp.cx = g->rcx;
	gp.dx = g->rdx; gp.si = g->rsi; gp.di = g->rdi; gp.orig_ax = g->orig_rax;
	gp.ip = g->rip; gp.cs = g->cs; gp.flags = g->eflags; gp.sp = g->rsp;
	gp.ss = g->ss; gp.fs_base = g->fs_base; gp.gs_base = g->gs_base;
	gp.ds = g->ds; gp.es = g->es; gp.fs = g->fs; gp.gs = g->gs;
	gp.has_mode = 1;
	gp.mode = 1;
	/*
	 * A thread stopped in a system call the kernel would restart: CRIU's
	 * restore returns to it with the registers as they are (a sigreturn, no
	 * restart), so its dump rewrites them: run the call again (ax back to
	 * the call's number, ip back over the 2-byte syscall instruction), or
	 * EINTR for a restart block. Written the same way here; the registers as
	 * they were stay beside, for uffd-inject restore, which lets the kernel
	 * restart the call.
	 */
	if ((int64_t)g->orig_rax >= 0) {
		switch ((int64_t)g->rax) {
		case -ARCH_ERESTARTSYS:
		case -ARCH_ERESTARTNOINTR:
		case -ARCH_ERESTARTNOHAND:
			gp.ax = g->orig_rax;
			gp.ip = g->rip - 2;
			break;
		case -ARCH_ERESTART_RESTARTBLOCK:
			gp.ax = (uint64_t)-EINTR;
			break;
		}
		if (gp.ax != g->rax || gp.ip != g->rip) {
			gp.has_uffd_stopped_ax = gp.has_uffd_stopped_ip = 1;
			gp.uffd_stopped_ax = g->rax;
			gp.uffd_stopped_ip = g->rip;
		}
	}
	/* The legacy (fxsave) part of the xstate, as CRIU lays it out. */
	if (t->xstate_len >= 512) {
		uint16_t w16;
		uint32_t w32;

		memcpy(&w16, fx + 0, 2); fp.cwd = w16;
		memcpy(&w16, fx + 2, 2); fp.swd = w16;
		memcpy(&w16, fx + 4, 2); fp.twd = w16;
		memcpy(&w16, fx + 6, 2); fp.fop = w16;
		memcpy(&fp.rip, fx + 8, 8);
		memcpy(&fp.rdp, fx + 16, 8);
		memcpy(&w32, fx + 24, 4); fp.mxcsr = w32;
		memcpy(&w32, fx + 28, 4); fp.mxcsr_mask = w32;
		memcpy(st_space, fx + 32, sizeof(st_space));
		memcpy(xmm_space, fx + 160, sizeof(xmm_space));
		fp.n_st_space = 32;
		fp.st_space = st_space;
		fp.n_xmm_space = 64;
		fp.xmm_space = xmm_space;
	}
	fp.has_uffd_xstate = 1;
	fp.uffd_xstate.data = t->xstate;
	fp.uffd_xstate.len = t->xstate_len;
	ti.clear_tid_addr = t->tid_addr;
	ti.gpregs = &gp;
	ti.fpregs = &fp;
	ce.thread_info = &ti;

	tc.task_state = c->stopped ? 3 : 1;	/* CRIU's TASK_STOPPED, TASK_ALIVE */
	tc.personality = c->personality;
	tc.blk_sigset = t->sigmask;
	tc.comm = (char *)c->comm;
	for (int i = 0; i < c->nsa; i++) {
		sa_entry__init(&sa[i]);
		sa[i].sigaction = c->sa[i].handler;
		sa[i].flags = c->sa[i].flags;
		sa[i].restorer = c->sa[i].restorer;
		sa[i].mask = c->sa[i].mask;
		sa[i].has_uffd_signo = 1;
		sa[i].uffd_signo = (uint32_t)c->sa[i].sig;
		sap[i] = &sa[i];
	}
	tc.n_sigactions = (size_t)c->nsa;
	tc.sigactions = sap;
	tc.has_uffd_exe_file_id = 1;
	tc.uffd_exe_file_id = c->exe_id;
	tc.has_uffd_umask = 1;
	tc.uffd_umask = c->umask;
	tc.has_uffd_robust_list = 1;
	tc.uffd_robust_list = t->robust;
	tc.has_uffd_robust_list_len = 1;
	tc.uffd_robust_list_len = t->robust_len;
	tc.has_nonfile_stdio = 1;
	tc.nonfile_stdio = c->stdio;
	tc.n_uffd_noreserve = c->nnoreserve;
	tc.uffd_noreserve = c->noreserve;
	tc.has_uffd_shmid_file_id = 1;
	tc.uffd_shmid_file_id = 1;	/* dump_criu_mm() */
	/* As CRIU: only the main thread's core holds the task's state. */
	if (main_thread)
		ce.tc = &tc;

	th.futex_rla = t->robust;
	th.futex_rla_len = (uint32_t)t->robust_len;
	th.has_blk_sigset = 1;
	th.blk_sigset = t->sigmask;
	sas.ss_sp = t->ss_sp;
	sas.ss_size = t->ss_size;
	sas.ss_flags = t->ss_flags;
	th.sas = &sas;
	th.has_pdeath_sig = 1;
	th.pdeath_sig = t->pdeath;
	th.comm = (char *)t->comm;
	if (t->has_rseq) {
		rs.rseq_abi_pointer = t->rseq_ptr;
		rs.rseq_abi_size = t->rseq_len;
		rs.signature = t->rseq_sig;
		th.rseq_entry = &rs;
	}
	ce.thread_core = &th;
	dump_criu_core(&c->criu, (size_t)(t - c->th), t->xstate, t->xstate_len, &ce, &cb);
	return write_msgs(dirfd, name, IMG_CORE_MAGIC, &m, 1, why, len);
}

uint32_t core_last_id(const struct core *c)
{
	return (c->id_base ? c->id_base : CORE_FILE_ID_BASE) + (uint32_t)c->nf - 1;
}

/* The I-th file of C and of the cores of C->more after it. */
static const struct core_file *nth_file(const struct core *c, size_t i)
{
	if (i < c->nf)
		return &c->f[i];
	i -= c->nf;
	for (size_t k = 0; k < c->nmore; k++) {
		if (i < c->more[k]->nf)
			return &c->more[k]->f[i];
		i -= c->more[k]->nf;
	}
	return NULL;
}

static int write_files(const struct core *c, int dirfd, const char *name, char *why, size_t len)
{
	size_t nf = c->nf;
	FileEntry *fe;
	RegFileEntry *re;
	MemfdFileEntry *me;
	FownEntry fown = FOWN_ENTRY__INIT;
	const ProtobufCMessage **m;
	int ret;

	for (size_t k = 0; k < c->nmore; k++)
		nf += c->more[k]->nf;
	fe = calloc(nf + 1, sizeof(*fe));
	re = calloc(nf + 1, sizeof(*re));
	me = calloc(nf + 1, sizeof(*me));
	m = calloc(nf + 1, sizeof(*m));
	if (!fe || !re || !me || !m) {
		ret = why_set(why, len, ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < nf; i++) {
		const struct core_file *f = nth_file(c, i);

		if (f->memfd) {
			/* CRIU's memfd_file_entry: the object is in memfd.img. */
			file_entry__init(&fe[i]);
			memfd_file_entry__init(&me[i]);
			me[i].id = f->id;
			me[i].flags = f->flags;
			me[i].pos = f->pos;
			me[i].fown = &fown;
			me[i].inode_id = f->inode_id;
			fe[i].type = CORE_FD_MEMFD;
			fe[i].id = f->id;
			fe[i].memfd = &me[i];
			m[i] = &fe[i].base;
			continue;
		}
		file_entry__init(&fe[i]);
		reg_file_entry__init(&re[i]);
		re[i].id = f->id;
		re[i].flags = f->flags;
		re[i].pos = f->pos;
		re[i].fown = &fown;
		re[i].name = f->path;
		re[i].has_size = 1;
		re[i].size = f->size;
		re[i].has_mode = 1;
		re[i].mode = f->mode;
		re[i].has_uffd_dev = 1;
		re[i].uffd_dev = f->dev;
		re[i].has_uffd_ino = 1;
		re[i].uffd_ino = f->ino;
		re[i].has_uffd_mtime_ns = 1;
		re[i].uffd_mtime_ns = f->mtime_ns;
		fe[i].type = 1;
		fe[i].id = f->id;
		fe[i].reg = &re[i];
		m[i] = &fe[i].base;
	}
	ret = write_msgs(dirfd, name, IMG_FILES_MAGIC, m, nf, why, len);
out:
	free(fe);
	free(re);
	free(me);
	free(m);
	return ret;
}

static int write_fdinfo(const struct core *c, int dirfd, const char *name, char *why, size_t len)
{
	FdinfoEntry *fi = calloc(c->nf + 1, sizeof(*fi));
	const ProtobufCMessage **m = calloc(c->nf + 1, sizeof(*m));
	size_t n = 0;
	int ret;

	if (!fi || !m) {
		free(fi);
		free(m);
		return why_set(why, len, ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < c->nf; i++) {
		if (c->f[i].fd < 0)
			continue;
		fdinfo_entry__init(&fi[n]);
		fi[n].id = c->f[i].id;
		fi[n].flags = c->f[i].cloexec ? FD_CLOEXEC : 0;
		fi[n].type = c->f[i].memfd ? CORE_FD_MEMFD : 1;
		fi[n].fd = (uint32_t)c->f[i].fd;
		m[n] = &fi[n].base;
		n++;
	}
	ret = write_msgs(dirfd, name, IMG_FDINFO_MAGIC, m, n, why, len);
	free(fi);
	free(m);
	return ret;
}

/* The names of the core image of thread I > 0 (the main thread's is in struct core_names). */
static void thread_names(const struct core *c, size_t i, char *name, char *tmp, size_t len)
{
	snprintf(name, len, "core-%d.img", (int)c->th[i].tid);
	snprintf(tmp, len, "core-%d.img.part", (int)c->th[i].tid);
}

int core_write(const struct core *c, int dirfd, char *why, size_t len)
{
	FsEntry fs = FS_ENTRY__INIT;
	const ProtobufCMessage *m = &fs.base;
	struct core_names n;
	char fdi[64], fdt[64], tn[48], tt[56];
	int ret;

	names(c, &n);
	fdinfo_names(c, fdi, fdt, sizeof(fdi));
	ret = write_core(c, &c->th[0], dirfd, n.tmp[0], why, len);
	for (size_t i = 1; ret == 0 && i < c->nth; i++) {
		thread_names(c, i, tn, tt, sizeof(tt));
		ret = write_core(c, &c->th[i], dirfd, tt, why, len);
	}
	if (ret == 0 && !c->files_elsewhere)
		ret = write_files(c, dirfd, n.tmp[1], why, len);
	if (ret == 0)
		ret = write_fdinfo(c, dirfd, fdt, why, len);
	if (ret == 0) {
		fs.cwd_id = c->cwd_id;
		fs.root_id = c->root_id;
		fs.has_umask = 1;
		fs.umask = c->umask;
		ret = write_msgs(dirfd, n.tmp[2], IMG_FS_MAGIC, &m, 1, why, len);
	}
	if (ret == 0)
		ret = dump_criu_write(&c->criu, dirfd, why, len);
	if (ret < 0)
		core_abort(c, dirfd);
	return ret;
}

int core_publish(struct core *c, int dirfd, char *why, size_t len)
{
	struct core_names n;
	char fdi[64], fdt[64], tn[48], tt[56];
	int ret;

	names(c, &n);
	fdinfo_names(c, fdi, fdt, sizeof(fdi));
	if (renameat(dirfd, fdt, dirfd, fdi) < 0)
		return why_set(why, len, errno, "%s: rename: %s", fdi, strerror(errno));
	if ((ret = dump_criu_publish(&c->criu, dirfd, why, len)) < 0)
		return ret;
	for (size_t i = 1; i < c->nth; i++) {
		thread_names(c, i, tn, tt, sizeof(tt));
		if (renameat(dirfd, tt, dirfd, tn) < 0)
			return why_set(why, len, errno, "%s: rename: %s", tn, strerror(errno));
	}
	for (int i = 0; i < 3; i++)
		if ((i != 1 || !c->files_elsewhere) &&
		    renameat(dirfd, n.tmp[i], dirfd, n.name[i]) < 0)
			return why_set(why, len, errno, "%s: rename: %s", n.name[i],
				     strerror(errno));
	return 0;
}

void core_abort(const struct core *c, int dirfd)
{
	struct core_names n;
	char fdi[64], fdt[64], tn[48], tt[56];

	names(c, &n);
	dump_criu_abort(&c->criu, dirfd);
	fdinfo_names(c, fdi, fdt, sizeof(fdi));
	unlinkat(dirfd, fdt, 0);
	unlinkat(dirfd, fdi, 0);
	for (int i = 0; i < 3; i++) {
		if (i == 1 && c->files_elsewhere)
			continue;
		unlinkat(dirfd, n.tmp[i], 0);
		unlinkat(dirfd, n.name[i], 0);
	}
	for (size_t i = 1; i < c->nth; i++) {
		thread_names(c, i, tn, tt, sizeof(tt));
		unlinkat(dirfd, tt, 0);
		unlinkat(dirfd, tn, 0);
	}
}

void core_free(struct core *c)
{
	for (size_t i = 0; i < c->nf; i++)
		free(c->f[i].path);
	free(c->f);
	for (size_t i = 0; i < c->nth; i++)
		free(c->th[i].xstate);
	free(c->th);
	free(c->noreserve);
	dump_criu_free(&c->criu);
	memset(c, 0, sizeof(*c));
}
