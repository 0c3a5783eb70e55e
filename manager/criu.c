/* CRIU lazy-pages mode: the restore's connection, its records, and the end-of-run report. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "criu.h"
#include "daemon.h"
#include "log.h"
#include "procinfo.h"
#include "remote.h"
#include "rserve.h"
#include "sender.h"
#include "serve.h"
#include "target.h"
#include "uffd.h"

#define CRIU_MAX_FDS	8	/* fds taken from one message, so that extras can be closed */
#define UFFD_INITIALIZED (1ull << 31)	/* the kernel's "through UFFDIO_API" mark in fdinfo */

/* Where the restore connection is. */
enum criu_phase {
	CP_LISTEN,	/* waiting for the restore to connect */
	CP_RECORDS,	/* reading pid (+ uffd) records */
	CP_RSTF,	/* every task handed over: the next word must be RSTF */
	CP_FINISHED,	/* RSTF read: only EOF may follow */
	CP_BROKEN,	/* closed before RSTF, or a bad record */
};

enum ctask_state {
	CT_WAITING,	/* no record yet */
	CT_ZOMBIE,	/* a negative pid: nothing to serve */
	CT_SERVING,
	CT_ENDED,
};

/* One task of pstree.img. */
struct criu_task {
	pid_t pid;		/* from the message: its pid in its own namespace, the image id */
	pid_t host;		/* the kernel's: the sender of its record, in ours; 0 until then */
	struct timage *img;	/* its images; no mm or pagemap for a zombie at dump time */
	uint64_t lazy;		/* pages to serve, from the images */
	enum ctask_state state;
	uint64_t target_id;	/* while serving */
	enum target_end end;
	uint64_t left;		/* pages not served when it ended */
	char why[64];		/* how it ended, when not fully served */
};

struct criu {
	struct daemon *d;
	struct criu_opts o;
	int dirfd;
	char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct ev listen_ev;
	int listen_fd;
	struct ev conn_ev;
	int conn_fd;
	enum criu_phase phase;
	uint8_t word[4];	/* the int being read */
	size_t have;
	struct criu_task *want_fd;	/* read its pid; its uffd comes next */
	bool pidfds;			/* the kernel names senders with SCM_PIDFD */
	bool no_pidfds;			/* UFFD_MANAGER_NO_SCM_PIDFD: use SCM_CREDENTIALS */
	struct sender word_from;	/* the sender of the pid word (kept until its uffd came) */
	struct criu_task *tasks;
	size_t nr_tasks;
	size_t nr_records;	/* records read, zombies included */
	unsigned forks_failed;
	uint64_t t_accept, t_rstf, t_last;
	char broke[512];	/* why the restore failed, for the last word */
};

static void criu_on_accept(struct ev *ev, uint32_t events);
static void criu_on_conn(struct ev *ev, uint32_t events);

static struct criu_task *task_find(struct criu *c, long pid)
{
	for (size_t i = 0; i < c->nr_tasks; i++)
		if (c->tasks[i].pid == pid)
			return &c->tasks[i];
	return NULL;
}

static void criu_free(struct criu *c)
{
	for (size_t i = 0; c->tasks && i < c->nr_tasks; i++)
		timage_put(c->d, c->tasks[i].img);
	free(c->tasks);
	sender_clear(&c->word_from);
	if (c->dirfd >= 0)
		close(c->dirfd);
	free(c);
}

/* Load the images of one task and build its model once, to refuse bad images before serving. */
static int task_load(struct criu *c, struct criu_task *t, char *why, size_t len)
{
	char reason[512] = "";
	struct img_err err;
	struct timage *img;

	/* The directory is ours, shared by every task. */
	img = timage_load(c->d, c->dirfd, false, t->pid, &err);
	if (!img) {
		snprintf(why, len, "%s: %s", c->o.imgdir, err.msg);
		return -EINVAL;
	}
	t->img = img;
	if (!img->task.mm && !img->task.pm)
		return 0;	/* no memory images: a zombie at dump time */
	if (timage_check(img, t->pid, c->o.ps_addr != NULL, &t->lazy, reason, sizeof(reason)) < 0) {
		snprintf(why, len, "%s: pid %d: %s", c->o.imgdir, t->pid, reason);
		return -EINVAL;
	}
	log_info("criu: pid %d: %" PRIu64 " lazy pages (%" PRIu64 " KiB) in the images", t->pid,
		 t->lazy, t->lazy * 4);
	return 0;
}

/* Read the task list of pstree.img and every task's images. */
static int load_tasks(struct criu *c, char *why, size_t len)
{
	struct img_err err;
	uint32_t *pids;
	size_t n;
	bool from_pstree;
	int ret;

	if (img_list_tasks(c->dirfd, &pids, &n, &from_pstree, &err) < 0) {
		snprintf(why, len, "%s: %s", c->o.imgdir, err.msg);
		return -EINVAL;
	}
	if (!from_pstree) {
		free(pids);
		snprintf(why, len, "%s: no pstree.img: not a CRIU dump", c->o.imgdir);
		return -ENOENT;
	}
	c->tasks = calloc(n, sizeof(*c->tasks));
	if (!c->tasks) {
		free(pids);
		snprintf(why, len, "out of memory for %zu tasks", n);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		if (pids[i] > INT_MAX) {
			free(pids);
			snprintf(why, len, "%s: pstree.img: pid %u out of range", c->o.imgdir, pids[i]);
			return -EINVAL;
		}
		c->tasks[i].pid = (pid_t)pids[i];
	}
	c->nr_tasks = n;
	free(pids);
	for (size_t i = 0; i < n; i++) {
		ret = task_load(c, &c->tasks[i], why, len);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* One line on how a served process ended, with its counters. */
static void log_end(const struct target *tg, const char *why)
{
	const struct target_stats *st = &tg->st;

	char who[96];

	/* The image's pid (the task's own, in its namespace) and the process's, in ours. */
	if (tg->parent_id)
		snprintf(who, sizeof(who), "child of pid %u (host %d) uffd %d:", tg->image_id,
			 (int)tg->parent_pid, tg->uffd);
	else
		snprintf(who, sizeof(who), "pid %u (host %d) uffd %d:", tg->image_id, (int)tg->pid,
			 tg->uffd);
	(tg->end == TE_FAILED ? log_warnx : log_info)(
		"criu: %s %s%s: %" PRIu64 " of %" PRIu64 " lazy pages copied, %" PRIu64 " left, %" PRIu64 " zeroed, %" PRIu64 " faults; events fork %" PRIu64 " remap %" PRIu64 " remove %" PRIu64 " unmap %" PRIu64,
		who, tg->parent_id ? "(forked) " : "", why ? why : "served", st->pages_copied,
		st->pages_total, tg->map.nr_missing, st->pages_zeroed, st->faults, st->ev_fork,
		st->ev_remap, st->ev_remove, st->ev_unmap);
}

/* Note how a served process ended: for a task of the restore, remember it for the report. */
static void criu_target_ended(struct daemon *d, const struct target *tg, const char *why)
{
	struct criu *c = d->criu;
	struct criu_task *t = NULL;

	for (size_t i = 0; !t && i < c->nr_tasks; i++)
		if (c->tasks[i].state == CT_SERVING && c->tasks[i].target_id == tg->id)
			t = &c->tasks[i];
	c->t_last = now_ns();
	log_end(tg, why);
	if (!t) {
		/* A forked child (or a hand-over on --socket): it counts only if it failed. */
		c->forks_failed += tg->end == TE_FAILED;
		return;
	}
	t->state = CT_ENDED;
	t->end = tg->end;
	t->left = tg->map.nr_missing;
	snprintf(t->why, sizeof(t->why), "%s", why ? why : "served");
}

static void close_conn(struct criu *c)
{
	if (c->conn_fd < 0)
		return;
	loop_del(&c->d->loop, &c->conn_ev);
	close(c->conn_fd);
	c->conn_fd = -1;
}

static void stop_listening(struct criu *c)
{
	if (c->listen_fd < 0)
		return;
	loop_del(&c->d->loop, &c->listen_ev);
	close(c->listen_fd);
	c->listen_fd = -1;
	unlink(c->sock_path);
}

/*
 * The restore broke (bad record, or the connection closed before RSTF):
 * take nothing more from it. What was received is served on demand only,
 * never filled (without RSTF nobody says which ranges are registered), and
 * nobody is let go with pages missing: the daemon stays while they live.
 */
static void restore_broke(struct criu *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void restore_broke(struct criu *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->broke, sizeof(c->broke), fmt, ap);
	va_end(ap);
	log_warnx("criu: restore failed: %s", c->broke);
	c->phase = CP_BROKEN;
	c->want_fd = NULL;
	sender_clear(&c->word_from);
	close_conn(c);
	c->d->hold_exit = false;
	if (c->d->nr_targets && c->d->fill_held)
		log_warnx("criu: serving the %u processes already handed over on demand only (no background fill without RSTF) until they are fully served or exit",
			  c->d->nr_targets);
	daemon_check_done(c->d);
}

/* What /proc/self/fd says FD is. */
static void fd_kind(int fd, char *buf, size_t len)
{
	char path[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, buf, len - 1);
	if (n < 0)
		snprintf(buf, len, "unreadable: %s", strerror(errno));
	else
		buf[n] = 0;
}

/* The raw features word of a uffd's fdinfo (with the kernel's initialized mark). */
static int uffd_raw_features(int uffd, uint64_t *raw)
{
	char path[64], val[128];
	unsigned long long api, feat;
	int ret;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", uffd);
	ret = procinfo_field(path, "API", val, sizeof(val));
	if (ret < 0)
		return ret;
	if (sscanf(val, "%llx:%llx:", &api, &feat) != 2)
		return -EINVAL;
	*raw = feat;
	return 0;
}

/* Log the features of a task's uffd; warn about the events it will not report. */
static void log_features(const struct criu_task *t, int uffd, uint64_t feat)
{
	log_info("criu: pid %d uffd %d: features 0x%" PRIx64 ":%s%s%s%s%s", t->pid, uffd, feat,
		 feat & UFFD_FEATURE_EVENT_FORK ? " EVENT_FORK" : "",
		 feat & UFFD_FEATURE_EVENT_REMAP ? " EVENT_REMAP" : "",
		 feat & UFFD_FEATURE_EVENT_REMOVE ? " EVENT_REMOVE" : "",
		 feat & UFFD_FEATURE_EVENT_UNMAP ? " EVENT_UNMAP" : "",
		 feat & UFFD_FEATURE_THREAD_ID ? " THREAD_ID" : "");
	if ((feat & UFFD_NEEDED_FEATURES) != UFFD_NEEDED_FEATURES)
		log_warnx("criu: pid %d: its uffd lacks some of EVENT_FORK/REMAP/REMOVE/UNMAP (an old kernel?): fork, mremap, madvise and munmap of lazy memory are not tracked",
			  t->pid);
}

/*
 * Who sent task T's record, from the kernel: both its messages (the pid,
 * FD_FROM the uffd) must come from one process, which must call itself T's
 * pid in its own pid namespace. That process is the restored task (criu's
 * restorer sends from inside it); its pid in ours is *HOST, *PIDFD the
 * caller's. 0, or -1 after restore_broke.
 */
static int record_sender(struct criu *c, struct criu_task *t, struct sender *fd_from, int *pidfd,
			 pid_t *host)
{
	char why[256];
	pid_t other, inner;
	int fd2;

	if (sender_pidfd(&c->word_from, pidfd, host, why, sizeof(why)) < 0) {
		restore_broke(c, "pid %d: who sent its pid: %s", t->pid, why);
		return -1;
	}
	if (sender_pidfd(fd_from, &fd2, &other, why, sizeof(why)) < 0) {
		close(*pidfd);
		restore_broke(c, "pid %d (host %d): who sent its uffd: %s", t->pid, *host, why);
		return -1;
	}
	close(fd2);
	inner = other == *host ? sender_inner_pid(*host) : 0;
	if (other != *host || inner != t->pid) {
		close(*pidfd);
		if (other != *host)
			restore_broke(c, "pid %d: its pid came from process %d and its uffd from process %d: each task must send its own record",
				      t->pid, *host, other);
		else if (inner < 0)
			restore_broke(c, "pid %d: cannot read the pid namespaces of its sender, process %d: %s",
				      t->pid, *host, strerror(-inner));
		else
			restore_broke(c, "pid %d: its record came from process %d, which is pid %d in its own pid namespace, not %d: each task must send its own record",
				      t->pid, *host, inner, t->pid);
		return -1;
	}
	return 0;
}

/* Check the fd of task T's record and start serving it. Returns 0, or -1 after restore_broke. */
static int task_serve(struct criu *c, struct criu_task *t, int uffd, struct sender *fd_from)
{
	char kind[128], reason[512] = "";
	uint64_t raw;
	struct target *tg;
	int pidfd;
	pid_t host;

	fd_kind(uffd, kind, sizeof(kind));
	if (strcmp(kind, "anon_inode:[userfaultfd]") || uffd_raw_features(uffd, &raw) < 0) {
		restore_broke(c, "pid %d: the fd it sent is not a userfaultfd (%s)", t->pid, kind);
		return -1;
	}
	if (!(raw & UFFD_INITIALIZED)) {
		restore_broke(c, "pid %d: its userfaultfd has not been through UFFDIO_API", t->pid);
		return -1;
	}
	log_features(t, uffd, raw & ~UFFD_INITIALIZED);
	if (!t->img || !t->img->task.pm) {
		restore_broke(c, "pid %d: the images hold no memory for it (no mm-%d.img, pagemap-%d.img): a zombie cannot send a uffd",
			      t->pid, t->pid, t->pid);
		return -1;
	}
	if (record_sender(c, t, fd_from, &pidfd, &host) < 0)
		return -1;
	t->host = host;
	if (c->d->remote && !remote_alive(c->d->remote) && t->lazy) {
		/* Nothing can be fetched for it: it must not run on zeros. */
		log_warnx("criu: pid %d (host %d): the page server connection is lost; killing it so that it never reads zeros",
			  t->pid, host);
		syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
		close(pidfd);
		close(uffd);
		t->state = CT_ENDED;
		t->end = TE_FAILED;
		t->left = t->lazy;
		snprintf(t->why, sizeof(t->why), "killed: page server connection lost");
		c->d->tot.failed++;
		return 0;
	}
	log_info("criu: pid %d (host %d): its record came from the process itself; serving it",
		 t->pid, host);
	tg = target_create(c->d, uffd, pidfd, host, (uint32_t)t->pid, t->img, true,
			   c->d->remote ? &rserve_source : &serve_from_images, reason,
			   sizeof(reason));
	if (!tg) {
		close(pidfd);
		restore_broke(c, "pid %d (host %d): %s", t->pid, host, reason);
		return -1;
	}
	t->state = CT_SERVING;
	t->target_id = tg->id;
	return 0;
}

/* Every record is in: the next word must be RSTF. */
static void record_done(struct criu *c)
{
	c->nr_records++;
	if (c->nr_records < c->nr_tasks)
		return;
	c->phase = CP_RSTF;
	log_info("criu: all %zu tasks handed over; serving faults, background fill waits for RSTF",
		 c->nr_tasks);
}

/* A pid word: a zombie (negative, complete) or a task whose uffd comes next. */
static void on_pid(struct criu *c, int32_t pid)
{
	struct criu_task *t;

	if ((uint32_t)pid == CRIU_RSTF) {
		restore_broke(c, "RSTF after only %zu of %zu tasks were handed over",
			      c->nr_records, c->nr_tasks);
		return;
	}
	if (pid == 0 || pid == INT32_MIN) {
		restore_broke(c, "record %zu: pid %d is not a task pid", c->nr_records + 1, pid);
		return;
	}
	t = task_find(c, pid < 0 ? -(long)pid : pid);
	if (!t) {
		restore_broke(c, "record %zu: pid %d is not a task of %s/pstree.img",
			      c->nr_records + 1, pid < 0 ? -pid : pid, c->o.imgdir);
		return;
	}
	if (t->state != CT_WAITING) {
		restore_broke(c, "record %zu: pid %d was already handed over", c->nr_records + 1,
			      t->pid);
		return;
	}
	if (pid > 0) {
		c->want_fd = t;
		return;
	}
	t->state = CT_ZOMBIE;
	log_info("criu: pid %d: a zombie, nothing to serve", t->pid);
	record_done(c);
}

/* The message after a positive pid: one byte carrying exactly one fd. */
static void on_fd_msg(struct criu *c, int *fds, int nfds, struct sender *from)
{
	struct criu_task *t = c->want_fd;

	c->want_fd = NULL;
	if (nfds != 1) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		if (nfds == 0)
			restore_broke(c, "pid %d: the message after its pid carries no fd (its uffd)",
				      t->pid);
		else
			restore_broke(c, "pid %d: the message after its pid carries %d fds; one uffd was expected",
				      t->pid, nfds);
		return;
	}
	if (task_serve(c, t, fds[0], from) < 0) {
		close(fds[0]);
		return;
	}
	sender_clear(&c->word_from);
	record_done(c);
}

static void on_rstf(struct criu *c, uint32_t w)
{
	struct daemon *d = c->d;

	if (w != CRIU_RSTF) {
		restore_broke(c, "after the %zu records: 0x%08x where RSTF (0x%08x) was expected",
			      c->nr_records, w, CRIU_RSTF);
		return;
	}
	c->phase = CP_FINISHED;
	c->t_rstf = now_ns();
	log_info("criu: restore finished (RSTF) %.1f ms after it connected; %u processes to serve, %s",
		 (c->t_rstf - c->t_accept) / 1e6, d->nr_targets,
		 d->o.no_fill ? "on demand only (--no-fill)" : "background fill starts");
	d->fill_held = false;
	d->hold_exit = false;
	d->loop.idle_pending = true;
	daemon_check_done(d);
}

/*
 * Receive up to LEN bytes and the fds that came with them (at most
 * CRIU_MAX_FDS, the rest cut: *CUT), and what the kernel says of their
 * sender into FROM. Returns bytes, 0 at EOF, or -errno.
 */
static ssize_t conn_recv(int fd, void *buf, size_t len, int *fds, int *nfds, bool *cut,
			 struct sender *from)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * CRIU_MAX_FDS) + SENDER_CMSG_SPACE];
	} cbuf;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = cbuf.b,
		.msg_controllen = sizeof(cbuf.b),
	};
	struct cmsghdr *cm;
	ssize_t n;

	*nfds = 0;
	do
		n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		size_t k;

		if (sender_take(from, cm) || cm->cmsg_level != SOL_SOCKET ||
		    cm->cmsg_type != SCM_RIGHTS)
			continue;
		k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		if (k > (size_t)(CRIU_MAX_FDS - *nfds))
			k = CRIU_MAX_FDS - *nfds;
		memcpy(fds + *nfds, CMSG_DATA(cm), k * sizeof(int));
		*nfds += (int)k;
	}
	*cut = mh.msg_flags & MSG_CTRUNC;
	return n;
}

/* The restore hung up. After RSTF that is the normal end; before it the restore failed. */
static void on_eof(struct criu *c)
{
	if (c->phase == CP_FINISHED) {
		log_debug("criu: the restore closed its connection");
		close_conn(c);
		return;
	}
	if (c->want_fd)
		restore_broke(c, "the restore connection closed before RSTF, after %zu of %zu tasks were handed over (pid %d sent its pid but not its uffd)",
			      c->nr_records, c->nr_tasks, c->want_fd->pid);
	else
		restore_broke(c, "the restore connection closed before RSTF, after %zu of %zu tasks were handed over",
			      c->nr_records, c->nr_tasks);
}

/* Read one piece of the stream (a word, or the one byte carrying a uffd). False: stop for now. */
static bool read_step(struct criu *c)
{
	int fds[CRIU_MAX_FDS], nfds;
	struct sender from;
	uint8_t byte;
	bool cut;
	ssize_t n;
	uint32_t w;

	sender_init(&from);
	if (c->want_fd || c->phase == CP_FINISHED)
		n = conn_recv(c->conn_fd, &byte, 1, fds, &nfds, &cut, &from);
	else
		n = conn_recv(c->conn_fd, c->word + c->have, sizeof(c->word) - c->have, fds, &nfds,
			      &cut, &from);
	if (n > 0 && c->phase == CP_RECORDS && !c->want_fd) {
		/* A byte of a pid word: keep who sent it for the check at its uffd. */
		sender_clear(&c->word_from);
		c->word_from = from;
		sender_init(&from);
	}
	if (c->want_fd && n > 0 && !cut && nfds) {
		on_fd_msg(c, fds, nfds, &from);
		sender_clear(&from);
		return c->conn_fd >= 0;
	}
	sender_clear(&from);
	if (n == -EAGAIN)
		return false;
	if (n < 0) {
		restore_broke(c, "reading the restore connection: %s", strerror((int)-n));
		return false;
	}
	if (n == 0) {
		on_eof(c);
		return false;
	}
	if (cut || (nfds && !c->want_fd)) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		restore_broke(c, "record %zu: %s", c->nr_records + 1,
			      cut ? "descriptors cut off (more than a record carries, or no free fd here)" :
				    "an fd came with the bytes of a pid or of RSTF");
		return false;
	}
	if (c->want_fd) {
		on_fd_msg(c, fds, nfds, &from);
		return c->conn_fd >= 0;
	}
	if (c->phase == CP_FINISHED) {
		restore_broke(c, "bytes after RSTF");
		return false;
	}
	c->have += (size_t)n;
	if (c->have < sizeof(c->word))
		return true;
	c->have = 0;
	memcpy(&w, c->word, sizeof(w));
	if (c->phase == CP_RSTF)
		on_rstf(c, w);
	else
		on_pid(c, (int32_t)w);
	return c->conn_fd >= 0;
}

static void criu_on_conn(struct ev *ev, uint32_t events)
{
	struct criu *c = container_of(ev, struct criu, conn_ev);

	(void)events;
	while (c->conn_fd >= 0 && read_step(c))
		;
}

/* Take the restore's connection (root or our own uid only), then stop listening. */
static void criu_on_accept(struct ev *ev, uint32_t events)
{
	struct criu *c = container_of(ev, struct criu, listen_ev);
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	int fd;

	(void)events;
	fd = accept4(c->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
			return;
		stop_listening(c);
		restore_broke(c, "accept on %s: %s", c->sock_path, strerror(errno));
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
		log_warn("criu: SO_PEERCRED");
		close(fd);
		return;
	}
	if (cred.uid != 0 && cred.uid != geteuid()) {
		log_warnx("criu: connection from pid %d uid %u refused: only root or uid %u may restore through this daemon",
			  cred.pid, (unsigned)cred.uid, (unsigned)geteuid());
		close(fd);
		return;
	}
	stop_listening(c);
	/* Each task sends its own record: the kernel, not the message, says who it is. */
	if (sender_enable(fd, c->no_pidfds, &c->pidfds) < 0) {
		close(fd);
		restore_broke(c, "SO_PASSCRED: %s", strerror(errno));
		return;
	}
	if (loop_add(&c->d->loop, &c->conn_ev, fd, EPOLLIN, criu_on_conn) < 0) {
		close(fd);
		restore_broke(c, "epoll: %s", strerror(errno));
		return;
	}
	c->conn_fd = fd;
	c->phase = CP_RECORDS;
	c->t_accept = now_ns();
	log_info("criu: restore connected (pid %d); waiting for %zu tasks; senders named by %s",
		 cred.pid, c->nr_tasks, c->pidfds ? "SCM_PIDFD" : "SCM_CREDENTIALS");
}

int criu_open(struct daemon *d, const struct criu_opts *o, char *why, size_t len)
{
	struct criu *c = calloc(1, sizeof(*c));
	const char *wd = o->workdir ? o->workdir : o->imgdir;
	int n;

	if (!c) {
		snprintf(why, len, "out of memory");
		return -ENOMEM;
	}
	c->d = d;
	c->o = *o;
	c->listen_fd = c->conn_fd = -1;
	sender_init(&c->word_from);
	c->no_pidfds = getenv("UFFD_MANAGER_NO_SCM_PIDFD") != NULL;
	n = snprintf(c->sock_path, sizeof(c->sock_path), "%s/%s", wd, CRIU_SOCK_NAME);
	if (n < 0 || (size_t)n >= sizeof(c->sock_path)) {
		snprintf(why, len, "%s/%s: path too long for a unix socket", wd, CRIU_SOCK_NAME);
		free(c);
		return -ENAMETOOLONG;
	}
	c->dirfd = open(o->imgdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->dirfd < 0) {
		n = -errno;
		snprintf(why, len, "%s: %s", o->imgdir, strerror(errno));
		free(c);
		return n;
	}
	n = load_tasks(c, why, len);
	if (n == 0 && o->ps_addr)
		n = remote_open(d, o->ps_addr, o->ps_port, &rserve_ops, why, len);
	if (n < 0) {
		criu_free(c);
		return n;
	}
	d->criu = c;
	d->mode = MODE_CRIU;
	d->fill_held = true;
	d->hold_exit = true;
	d->target_ended = criu_target_ended;
	return 0;
}

/* Write our pid to the pidfile. */
static int write_pidfile(const char *path, char *why, size_t len)
{
	char buf[32];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int n = snprintf(buf, sizeof(buf), "%d\n", getpid());

	if (fd < 0 || write(fd, buf, n) != n) {
		n = -errno;
		snprintf(why, len, "--pidfile %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return n;
	}
	close(fd);
	return 0;
}

int criu_listen(struct daemon *d, char *why, size_t len)
{
	struct criu *c = d->criu;
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int ret;

	if (d->remote && (ret = remote_attach(d)) < 0) {
		snprintf(why, len, "epoll: %s", strerror(-ret));
		return ret;
	}
	strcpy(addr.sun_path, c->sock_path);
	/* A socket left by an earlier run is stale: nobody accepts twice on it. */
	if (lstat(c->sock_path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(why, len, "%s exists and is not a socket", c->sock_path);
			return -EEXIST;
		}
		unlink(c->sock_path);
	}
	c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->listen_fd < 0) {
		ret = -errno;
		snprintf(why, len, "socket: %s", strerror(errno));
		return ret;
	}
	/*
	 * Senders are named on the listening socket already: a connection
	 * inherits it at connect(), so a record sent before accept() carries
	 * its sender too (Linux 6.16 and later; before, only at accept()).
	 */
	if (sender_enable(c->listen_fd, c->no_pidfds, &c->pidfds) < 0) {
		ret = -errno;
		snprintf(why, len, "SO_PASSCRED: %s", strerror(errno));
		close(c->listen_fd);
		c->listen_fd = -1;
		return ret;
	}
	/* Mode 0600 from the start: no window in which others could connect. */
	old = umask(0177);
	ret = bind(c->listen_fd, (struct sockaddr *)&addr, sizeof(addr));
	umask(old);
	if (ret < 0 || listen(c->listen_fd, 1) < 0 ||
	    loop_add(&d->loop, &c->listen_ev, c->listen_fd, EPOLLIN, criu_on_accept) < 0) {
		ret = -errno;
		snprintf(why, len, "%s: %s", c->sock_path, strerror(errno));
		close(c->listen_fd);
		c->listen_fd = -1;
		return ret;
	}
	log_info("criu: listening on %s for the restore of %zu tasks from %s", c->sock_path,
		 c->nr_tasks, c->o.imgdir);
	if (c->o.pidfile && (ret = write_pidfile(c->o.pidfile, why, len)) < 0)
		return ret;
	if (c->o.status_fd >= 0) {
		/* As criu does: one zero byte, then close. */
		if (write(c->o.status_fd, "", 1) != 1)
			log_warn("criu: --status-fd %d", c->o.status_fd);
		close(c->o.status_fd);
		c->o.status_fd = -1;
	}
	return 0;
}

void criu_stop(struct daemon *d)
{
	struct criu *c = d->criu;

	if (d->draining)
		return;
	d->draining = true;
	d->hold_exit = false;
	if (c->phase == CP_LISTEN) {
		log_warnx("criu: stopping: no restore connected");
		stop_listening(c);
		c->phase = CP_BROKEN;
	} else if (!d->fill_held) {
		/* RSTF came: every range is registered; the fill can finish the job. */
		log_info("criu: stopping: serving %u processes to the end first", d->nr_targets);
		d->loop.idle_pending = true;
	} else {
		log_warnx("criu: stopping before the restore finished (no RSTF): killing the %u processes not fully served, so that none reads zeros",
			  d->nr_targets);
		if (c->phase != CP_BROKEN)
			restore_broke(c, "stopped by a signal before RSTF, after %zu of %zu tasks",
				      c->nr_records, c->nr_tasks);
		while (d->targets)
			target_kill(d->targets, "killed: stopped before RSTF");
	}
	daemon_check_done(d);
}

/* Name every task that was not served to the end; true if any. */
static bool report_tasks(struct criu *c)
{
	bool bad = false;

	for (size_t i = 0; i < c->nr_tasks; i++) {
		struct criu_task *t = &c->tasks[i];

		switch (t->state) {
		case CT_WAITING:
			log_warnx("criu: pid %d: never handed over; its %" PRIu64 " lazy pages were not served",
				  t->pid, t->lazy);
			bad = true;
			break;
		case CT_ZOMBIE:
			break;
		case CT_SERVING:
			log_warnx("criu: pid %d (host %d): still being served when the daemon stopped",
				  t->pid, t->host);
			bad = true;
			break;
		case CT_ENDED:
			if (t->end == TE_FAILED) {
				log_warnx("criu: pid %d (host %d): %" PRIu64 " of %" PRIu64 " lazy pages not served (%s)",
					  t->pid, t->host, t->left, t->lazy, t->why);
				bad = true;
			} else if (t->left) {
				log_info("criu: pid %d (host %d): exited with %" PRIu64 " of %" PRIu64 " lazy pages never needed",
					 t->pid, t->host, t->left, t->lazy);
			}
			break;
		}
	}
	return bad;
}

int criu_finish(struct daemon *d)
{
	struct criu *c = d->criu;
	uint64_t end = c->t_last ? c->t_last : now_ns();
	bool bad;
	int status;

	close_conn(c);
	stop_listening(c);
	if (c->o.pidfile)
		unlink(c->o.pidfile);
	bad = report_tasks(c);
	if (c->phase != CP_FINISHED) {
		log_warnx("criu: exit 1: the restore of %s failed (%s); %zu of %zu tasks were handed over, %" PRIu64 " processes could not be served",
			  c->o.imgdir, c->broke, c->nr_records, c->nr_tasks, d->tot.failed);
		status = 1;
	} else if (bad || d->tot.failed || c->forks_failed) {
		log_warnx("criu: exit 1: %" PRIu64 " processes of the restore of %s could not be served fully (named above)",
			  d->tot.failed, c->o.imgdir);
		status = 1;
	} else {
		log_info("criu: done: %zu tasks, %" PRIu64 " processes served, %" PRIu64 " exited first; %" PRIu64 " pages copied, %" PRIu64 " zeroed, %" PRIu64 " faults; last one ended %.1f ms after RSTF, %.1f ms after the restore connected",
			 c->nr_tasks, d->tot.served, d->tot.exited, d->tot.pages_copied,
			 d->tot.pages_zeroed, d->tot.faults,
			 end > c->t_rstf ? (end - c->t_rstf) / 1e6 : 0.0,
			 (end - c->t_accept) / 1e6);
		status = 0;
	}
	/* The page server's CLOSE ends the source: only when every page reached its process. */
	remote_close(d, status == 0);
	d->criu = NULL;
	d->target_ended = NULL;
	criu_free(c);
	return status;
}
