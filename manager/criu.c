/* CRIU lazy-pages mode: its images, its start and end, and the end-of-run report (criu.h). */
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
#include "criuconn.h"
#include "daemon.h"
#include "log.h"
#include "pagemap.h"
#include "remote.h"
#include "rserve.h"
#include "target.h"

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

/*
 * Remote mode's keep-alive: ask for a page of a process being served, else,
 * before the restore has handed any over, for the first lazy page of a
 * task's images (no process owns it: the answer is dropped).
 */
static void criu_keepalive(struct daemon *d, struct remote *r)
{
	struct criu *c = d->criu;

	if (!c || rserve_keepalive(d, r))
		return;
	for (size_t i = 0; i < c->nr_tasks; i++) {
		const struct pagemap *pm = c->tasks[i].img ? c->tasks[i].img->task.pm : NULL;

		for (size_t k = 0; pm && k < pm->n; k++) {
			if (!(pm->e[k].flags & PE_LAZY))
				continue;
			log_debug("criu: keep-alive: asking for 0x%" PRIx64 " of pid %d", pm->e[k].start,
				  c->tasks[i].pid);
			remote_request(d->remote, 0, (uint32_t)c->tasks[i].pid, pm->e[k].start,
				       pm->e[k].start, 1, false);
			return;
		}
	}
}

static struct remote_ops criu_remote_ops;

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
	criu_remote_ops = rserve_ops;
	criu_remote_ops.idle = criu_keepalive;
	if (n == 0 && o->ps_addr)
		n = remote_open(d, o->ps_addr, o->ps_port, &criu_remote_ops, &o->tls, why, len);
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
		criu_stop_listening(c);
		c->phase = CP_BROKEN;
	} else if (!d->fill_held) {
		/* RSTF came: every range is registered; the fill can finish the job. */
		log_info("criu: stopping: serving %u processes to the end first", d->nr_targets);
		d->loop.idle_pending = true;
	} else {
		log_warnx("criu: stopping before the restore finished (no RSTF): killing the %u processes not fully served, so that none reads zeros",
			  d->nr_targets);
		if (c->phase != CP_BROKEN)
			criu_broke(c, "stopped by a signal before RSTF, after %zu of %zu tasks",
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

	criu_close_conn(c);
	criu_stop_listening(c);
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

