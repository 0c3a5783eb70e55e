/* CRIU mode: the restore's connection, its records, and each task taken over (criuconn.h). */
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
#include <unistd.h>

#include "criuconn.h"
#include "fdpass.h"
#include "log.h"
#include "procfs.h"
#include "remote.h"
#include "rserve.h"
#include "serve.h"
#include "target.h"
#include "uffd.h"

#define CRIU_MAX_FDS	8	/* fds taken from one message, so that extras can be closed */

static void criu_on_conn(struct ev *ev, uint32_t events);

struct criu_task *criu_task_find(struct criu *c, long pid)
{
	for (size_t i = 0; i < c->nr_tasks; i++)
		if (c->tasks[i].pid == pid)
			return &c->tasks[i];
	return NULL;
}

void criu_close_conn(struct criu *c)
{
	if (c->conn_fd < 0)
		return;
	loop_del(&c->d->loop, &c->conn_ev);
	close(c->conn_fd);
	c->conn_fd = -1;
}

void criu_stop_listening(struct criu *c)
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
void criu_broke(struct criu *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->broke, sizeof(c->broke), fmt, ap);
	va_end(ap);
	log_warnx("criu: restore failed: %s", c->broke);
	c->phase = CP_BROKEN;
	c->want_fd = NULL;
	sender_clear(&c->word_from);
	criu_close_conn(c);
	c->d->hold_exit = false;
	if (c->d->nr_targets && c->d->fill_held)
		log_warnx("criu: serving the %u processes already handed over on demand only (no background fill without RSTF) until they are fully served or exit",
			  c->d->nr_targets);
	daemon_check_done(c->d);
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
		criu_broke(c, "pid %d: who sent its pid: %s", t->pid, why);
		return -1;
	}
	if (sender_pidfd(fd_from, &fd2, &other, why, sizeof(why)) < 0) {
		close(*pidfd);
		criu_broke(c, "pid %d (host %d): who sent its uffd: %s", t->pid, *host, why);
		return -1;
	}
	close(fd2);
	inner = other == *host ? sender_inner_pid(*host) : 0;
	if (other != *host || inner != t->pid) {
		close(*pidfd);
		if (other != *host)
			criu_broke(c, "pid %d: its pid came from process %d and its uffd from process %d: each task must send its own record",
				      t->pid, *host, other);
		else if (inner < 0)
			criu_broke(c, "pid %d: cannot read the pid namespaces of its sender, process %d: %s",
				      t->pid, *host, strerror(-inner));
		else
			criu_broke(c, "pid %d: its record came from process %d, which is pid %d in its own pid namespace, not %d: each task must send its own record",
				      t->pid, *host, inner, t->pid);
		return -1;
	}
	return 0;
}

/* Check the fd of task T's record and start serving it. Returns 0, or -1 after restore_broke. */
static int task_serve(struct criu *c, struct criu_task *t, int uffd, struct sender *fd_from)
{
	char kind[128], reason[512] = "";
	char fdinfo[64];
	uint64_t raw;
	struct target *tg;
	int pidfd;
	pid_t host;

	procfs_fd_kind(uffd, kind, sizeof(kind));
	snprintf(fdinfo, sizeof(fdinfo), "/proc/self/fdinfo/%d", uffd);
	if (strcmp(kind, "anon_inode:[userfaultfd]") || procfs_uffd_api(fdinfo, &raw) < 0) {
		criu_broke(c, "pid %d: the fd it sent is not a userfaultfd (%s)", t->pid, kind);
		return -1;
	}
	if (!(raw & PROCFS_UFFD_INITIALIZED)) {
		criu_broke(c, "pid %d: its userfaultfd has not been through UFFDIO_API", t->pid);
		return -1;
	}
	log_features(t, uffd, raw & ~PROCFS_UFFD_INITIALIZED);
	if (!t->img || !t->img->task.pm) {
		criu_broke(c, "pid %d: the images hold no memory for it (no mm-%d.img, pagemap-%d.img): a zombie cannot send a uffd",
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
		criu_broke(c, "pid %d (host %d): %s", t->pid, host, reason);
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
		criu_broke(c, "RSTF after only %zu of %zu tasks were handed over",
			      c->nr_records, c->nr_tasks);
		return;
	}
	if (pid == 0 || pid == INT32_MIN) {
		criu_broke(c, "record %zu: pid %d is not a task pid", c->nr_records + 1, pid);
		return;
	}
	t = criu_task_find(c, pid < 0 ? -(long)pid : pid);
	if (!t) {
		criu_broke(c, "record %zu: pid %d is not a task of %s/pstree.img",
			      c->nr_records + 1, pid < 0 ? -pid : pid, c->o.imgdir);
		return;
	}
	if (t->state != CT_WAITING) {
		criu_broke(c, "record %zu: pid %d was already handed over", c->nr_records + 1,
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
			criu_broke(c, "pid %d: the message after its pid carries no fd (its uffd)",
				      t->pid);
		else
			criu_broke(c, "pid %d: the message after its pid carries %d fds; one uffd was expected",
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
		criu_broke(c, "after the %zu records: 0x%08x where RSTF (0x%08x) was expected",
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
/* The control messages that name the sender, for fdpass_recv. */
static bool take_sender(void *arg, const struct cmsghdr *cm)
{
	return sender_take(arg, cm);
}

static ssize_t conn_recv(int fd, void *buf, size_t len, int *fds, int *nfds, bool *cut,
			 struct sender *from)
{
	struct fdpass_in in = { .fds = fds, .max = CRIU_MAX_FDS, .other = take_sender,
				.arg = from };
	ssize_t n = fdpass_recv(fd, buf, len, MSG_DONTWAIT, &in);

	*nfds = in.nfds;
	*cut = in.cut;
	return n;
}

/* The restore hung up. After RSTF that is the normal end; before it the restore failed. */
static void on_eof(struct criu *c)
{
	if (c->phase == CP_FINISHED) {
		log_debug("criu: the restore closed its connection");
		criu_close_conn(c);
		return;
	}
	if (c->want_fd)
		criu_broke(c, "the restore connection closed before RSTF, after %zu of %zu tasks were handed over (pid %d sent its pid but not its uffd)",
			      c->nr_records, c->nr_tasks, c->want_fd->pid);
	else
		criu_broke(c, "the restore connection closed before RSTF, after %zu of %zu tasks were handed over",
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
		criu_broke(c, "reading the restore connection: %s", strerror((int)-n));
		return false;
	}
	if (n == 0) {
		on_eof(c);
		return false;
	}
	if (cut || (nfds && !c->want_fd)) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		criu_broke(c, "record %zu: %s", c->nr_records + 1,
			      cut ? "descriptors cut off (more than a record carries, or no free fd here)" :
				    "an fd came with the bytes of a pid or of RSTF");
		return false;
	}
	if (c->want_fd) {
		on_fd_msg(c, fds, nfds, &from);
		return c->conn_fd >= 0;
	}
	if (c->phase == CP_FINISHED) {
		criu_broke(c, "bytes after RSTF");
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
void criu_on_accept(struct ev *ev, uint32_t events)
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
		criu_stop_listening(c);
		criu_broke(c, "accept on %s: %s", c->sock_path, strerror(errno));
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
	criu_stop_listening(c);
	/* Each task sends its own record: the kernel, not the message, says who it is. */
	if (sender_enable(fd, c->no_pidfds, &c->pidfds) < 0) {
		close(fd);
		criu_broke(c, "SO_PASSCRED: %s", strerror(errno));
		return;
	}
	if (loop_add(&c->d->loop, &c->conn_ev, fd, EPOLLIN, criu_on_conn) < 0) {
		close(fd);
		criu_broke(c, "epoll: %s", strerror(errno));
		return;
	}
	c->conn_fd = fd;
	c->phase = CP_RECORDS;
	c->t_accept = now_ns();
	log_info("criu: restore connected (pid %d); waiting for %zu tasks; senders named by %s",
		 cred.pid, c->nr_tasks, c->pidfds ? "SCM_PIDFD" : "SCM_CREDENTIALS");
}
