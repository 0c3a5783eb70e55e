/* The keeper: shares the daemon's fd table, keeps its processes when it dies (keeper.h). */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fdpass.h"
#include "journal.h"
#include "keeper.h"
#include "log.h"
#include "procfs.h"

enum { KP_LISTEN = 1 };

struct keeper_msg {
	uint32_t op;
	int32_t fd;
};

/* A process the keeper holds for, once the daemon is gone. */
struct kheld {
	uint64_t id, parent;
	int uffd, pidfd;
	pid_t pid, parent_pid;
};

struct kstate {
	int sock, dpidfd, lfd, jfd;
	struct journal j;
	bool have_journal;
	struct kheld *e;
	size_t n, cap;
	size_t nstray;		/* uffds no record names (kept after a crash) */
	bool orphan;
};

static struct kheld *kheld_add(struct kstate *s)
{
	if (s->n == s->cap) {
		size_t c = s->cap ? s->cap * 2 : 64;
		struct kheld *ne = realloc(s->e, c * sizeof(*ne));

		if (!ne)
			return NULL;
		s->e = ne;
		s->cap = c;
	}
	return &s->e[s->n++];
}

static void record(struct kstate *s, uint32_t type, uint64_t id, int fd, uint64_t a0,
		   uint64_t a1, uint64_t a2)
{
	struct jrec r = { .type = type, .fd = { fd, -1, -1 }, .id = id, .a = { a0, a1, a2 } };

	if (s->have_journal)
		journal_append(&s->j, &r);
}

/* Record what message M of ID's uffd did; a FORK's child gets a new id (returned). */
static uint64_t keeper_record(struct kstate *s, uint64_t id, const struct uffd_msg *m)
{
	uint64_t child = 0;

	switch (m->event) {
	case UFFD_EVENT_FORK:
		child = s->have_journal ? ++s->j.h->next_id : 0;
		record(s, J_FORK, id, (int)m->arg.fork.ufd, child, 0, 0);
		break;
	case UFFD_EVENT_REMAP:
		record(s, J_REMAP, id, -1, m->arg.remap.from, m->arg.remap.to, m->arg.remap.len);
		break;
	case UFFD_EVENT_REMOVE:
		record(s, J_REMOVE, id, -1, m->arg.remove.start, m->arg.remove.end, 0);
		break;
	case UFFD_EVENT_UNMAP:
		record(s, J_UNMAP, id, -1, m->arg.remove.start, m->arg.remove.end, 0);
		break;
	}
	return child;
}

static void settle_one(void *arg, uint64_t id, const struct uffd_msg *m)
{
	keeper_record(arg, id, m);
}

/* Entry I's process exited: record it, let go of its fds. */
static void kheld_end(struct kstate *s, size_t i)
{
	record(s, J_END, s->e[i].id, -1, 0, 0, 0);
	close(s->e[i].uffd);
	if (s->e[i].pidfd >= 0)
		close(s->e[i].pidfd);
	s->e[i] = s->e[--s->n];
}

static bool is_uffd(int fd)
{
	char kind[64];

	return procfs_fd_kind(fd, kind, sizeof(kind)) == 0 &&
	       !strcmp(kind, "anon_inode:[userfaultfd]");
}

/* The fds open in our (the shared) table, in *FDS (malloc'd). */
static size_t list_fds(int **fds)
{
	DIR *dir = opendir("/proc/self/fd");
	struct dirent *de;
	size_t n = 0, cap = 0;
	int self;

	*fds = NULL;
	if (!dir)
		return 0;
	self = dirfd(dir);
	while ((de = readdir(dir))) {
		int fd = atoi(de->d_name);

		if (de->d_name[0] == '.' || fd == self)
			continue;
		if (n == cap) {
			int *nf = realloc(*fds, (cap = cap ? cap * 2 : 256) * sizeof(int));

			if (!nf)
				break;
			*fds = nf;
		}
		(*fds)[n++] = fd;
	}
	closedir(dir);
	return n;
}

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/*
 * The daemon is gone: keep what the journal says is still served (and,
 * after a crash, every uffd it does not name), close the rest.
 */
static void keeper_orphan(struct kstate *s)
{
	struct jentry *e = NULL;
	size_t ne = 0, nf, nkeep = 0, nended = 0;
	int *fds, *keep, *ended;
	bool clean = false;

	s->orphan = true;
	if (journal_open(&s->j, s->jfd) == 0) {
		uint64_t id = s->j.h->reading;
		unsigned n;

		/* The daemon died inside a read: record what it read, as it would have. */
		s->have_journal = true;
		n = journal_settle(&s->j, settle_one, s);
		if (id)
			log_info("keeper: the daemon died reading the uffd of process %" PRIu64 "; its %u messages are recorded", id, n);
		if (journal_scan(&s->j, &e, &ne) < 0)
			s->have_journal = false;
	}
	if (s->have_journal) {
		clean = s->j.h->clean;
	} else {
		log_warnx("keeper: the journal cannot be read; keeping every userfaultfd");
		s->jfd = -1;
	}
	nf = list_fds(&fds);
	keep = calloc(3 * ne + 8, sizeof(int));
	ended = calloc(ne + 1, sizeof(int));
	if (!keep || !ended)
		_exit(1);	/* nothing can be decided: let go rather than hold at random */
	keep[nkeep++] = s->jfd;
	keep[nkeep++] = s->lfd;
	keep[nkeep++] = s->dpidfd;
	keep[nkeep++] = 2;
	for (size_t i = 0; i < ne; i++) {
		struct kheld *h;

		if (e[i].state == JE_ENDED && e[i].uffd >= 0)
			ended[nended++] = e[i].uffd;	/* its end recorded, its close not yet done */
		if (e[i].state == JE_ENDED || e[i].uffd < 0)
			continue;
		keep[nkeep++] = e[i].uffd;
		keep[nkeep++] = e[i].pidfd;
		keep[nkeep++] = e[i].dirfd;
		h = kheld_add(s);
		if (h)
			*h = (struct kheld){ e[i].id, e[i].parent, e[i].uffd, e[i].pidfd, e[i].pid,
					     e[i].parent_pid };
	}
	free(e);
	qsort(keep, nkeep, sizeof(int), cmp_int);
	qsort(ended, nended, sizeof(int), cmp_int);
	for (size_t i = 0; i < nf; i++) {
		if (bsearch(&fds[i], keep, nkeep, sizeof(int), cmp_int))
			continue;
		/*
		 * A uffd the journal names nowhere is kept after a crash (a fork
		 * read in the daemon's last read is recorded by now, so this is
		 * rare); one of a process whose end is recorded is closed: the
		 * daemon died between that record and the close.
		 */
		if ((!clean || !s->have_journal) && is_uffd(fds[i]) &&
		    !bsearch(&fds[i], ended, nended, sizeof(int), cmp_int)) {
			s->nstray++;
			continue;
		}
		close(fds[i]);
	}
	free(fds);
	free(keep);
	free(ended);
	s->sock = -1;	/* closed with the rest */
	if (s->n || s->nstray)
		log_warnx("keeper: the daemon is gone; holding %zu processes (%zu userfaultfds no record names) so that they wait for their missing pages rather than read zeros%s",
			  s->n, s->nstray, s->lfd >= 0 ? ", until a new daemon takes them" : "");
	/* From now on nobody reads our output: hold no one's pipe open. */
	{
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);

		if (null >= 0) {
			dup2(null, 2);
			close(null);
		}
	}
}

/*
 * With the daemon gone, learn the pid of a child the daemon never named:
 * read what its uffd holds, recording every event in the journal for the
 * next daemon. A fault carries its thread id; a fork, the grandchild's
 * uffd (held too, so grandchildren wait as well). The fault itself is lost:
 * the next daemon wakes every waiter, and it faults again.
 */
static void keeper_learn(struct kstate *s, size_t i)
{
	struct uffd_msg m[16];
	ssize_t n = read(s->e[i].uffd, m, sizeof(m));

	for (ssize_t k = 0; n > 0 && k < n / (ssize_t)sizeof(m[0]); k++) {
		struct kheld *h, *p = &s->e[i];

		switch (m[k].event) {
		case UFFD_EVENT_FORK: {
			uint64_t pid_parent = p->id, id = keeper_record(s, p->id, &m[k]);
			pid_t ppid = p->pid;

			h = kheld_add(s);	/* may move the array: P is stale after */
			if (h)
				*h = (struct kheld){ id, pid_parent, (int)m[k].arg.fork.ufd, -1, 0, ppid };
			break;
		}
		case UFFD_EVENT_REMAP:
		case UFFD_EVENT_REMOVE:
		case UFFD_EVENT_UNMAP:
			keeper_record(s, p->id, &m[k]);
			break;
		case UFFD_EVENT_PAGEFAULT:
			if (p->pidfd < 0 && m[k].arg.pagefault.feat.ptid) {
				pid_t pid = procfs_child_of_tid(p->parent_pid,
								(pid_t)m[k].arg.pagefault.feat.ptid);
				int pfd = pid ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;

				if (pfd >= 0) {
					p->pidfd = pfd;
					p->pid = pid;
					record(s, J_PID, p->id, pfd, (uint64_t)pid, 0, 0);
					for (size_t c = 0; c < s->n; c++)
						if (s->e[c].parent == p->id && !s->e[c].parent_pid)
							s->e[c].parent_pid = pid;
				}
			}
			break;
		}
	}
}

/* Send every fd we hold (and the journal first) to a new daemon; true once it has them all. */
static bool keeper_give(struct kstate *s, int conn)
{
	struct keeper_adopt_msg m = { .op = KA_JOURNAL, .n = 1 };
	struct pollfd p = { .fd = conn, .events = POLLIN };
	int *fds, batch[KA_BATCH];
	size_t nf = list_fds(&fds);
	char ok = 0;

	m.old[0] = s->jfd;
	if (s->jfd < 0 || fdpass_send(conn, &m, sizeof(m), &s->jfd, 1, 0) < 0) {
		free(fds);
		return false;
	}
	m.op = KA_FDS;
	m.n = 0;
	for (size_t i = 0; i <= nf; i++) {
		int fd = i < nf ? fds[i] : -1;

		if (i < nf && (fd == conn || fd == s->lfd || fd == s->dpidfd || fd == s->jfd || fd <= 2))
			continue;
		if (i < nf) {
			m.old[m.n] = fd;
			batch[m.n++] = fd;
		}
		if (m.n == KA_BATCH || (i == nf && m.n)) {
			if (fdpass_send(conn, &m, sizeof(m), batch, (int)m.n, 0) < 0) {
				free(fds);
				return false;
			}
			m.n = 0;
		}
	}
	free(fds);
	m.op = KA_DONE;
	if (fdpass_send(conn, &m, sizeof(m), NULL, 0, 0) < 0)
		return false;
	/* It says 'T' once everything is in its own table (shared with its keeper). */
	return poll(&p, 1, 120000) == 1 && read(conn, &ok, 1) == 1 && ok == 'T';
}

/* A new daemon knocks: hand over if it runs as us (or root) and ours is gone. */
static void keeper_accept(struct kstate *s)
{
	int conn = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
	struct ucred cr;
	socklen_t cl = sizeof(cr);

	if (conn < 0)
		return;
	if (!s->orphan || getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0 ||
	    (cr.uid != 0 && cr.uid != geteuid())) {
		close(conn);	/* our daemon lives (or a stranger): nothing to give */
		return;
	}
	if (keeper_give(s, conn))
		_exit(0);	/* it has everything: our copies may go */
	close(conn);
}

static void keeper_main(struct kstate *s) __attribute__((noreturn));

static void keeper_main(struct kstate *s)
{
	struct pollfd *p = NULL;
	size_t cap = 0;

	for (;;) {
		size_t np = 0, base;

		if (s->orphan && s->n == 0 && s->nstray == 0)
			_exit(0);
		if (cap < s->n + 4) {
			struct pollfd *q = realloc(p, (s->n + 64) * sizeof(*q));

			if (q) {
				p = q;
				cap = s->n + 64;
			}
		}
		if (!p) {
			sleep(1);
			continue;
		}
		p[np++] = (struct pollfd){ .fd = s->orphan ? -1 : s->dpidfd, .events = POLLIN };
		p[np++] = (struct pollfd){ .fd = s->orphan ? -1 : s->sock, .events = POLLIN };
		p[np++] = (struct pollfd){ .fd = s->lfd, .events = POLLIN };
		base = np;
		/* A pidfd says when the process exits; a uffd without one may tell its pid. */
		for (size_t i = 0; s->orphan && i < s->n && np < cap; i++)
			p[np++] = (struct pollfd){
				.fd = s->e[i].pidfd >= 0 ? s->e[i].pidfd : s->e[i].uffd,
				.events = POLLIN };
		if (poll(p, np, -1) < 0) {
			if (errno != EINTR)
				sleep(1);
			continue;
		}
		if (p[1].revents) {
			struct keeper_msg m;
			ssize_t n = recv(s->sock, &m, sizeof(m), MSG_DONTWAIT);

			if (n == sizeof(m) && m.op == KP_LISTEN)
				s->lfd = m.fd;
			else if (n == 0)
				p[0].revents = POLLIN;	/* our end closed: the daemon is going */
		}
		if (p[0].revents) {
			/* Wait until it is really gone: its last closes must be done. */
			struct pollfd d = { .fd = s->dpidfd, .events = POLLIN };

			if (poll(&d, 1, -1) == 1)
				keeper_orphan(s);
			continue;
		}
		if (p[2].revents) {
			keeper_accept(s);
			continue;	/* a failed hand-over changed nothing, but poll again */
		}
		for (size_t i = s->n; s->orphan && i-- > 0;) {
			size_t slot = base + i;

			if (slot >= np || !(p[slot].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (s->e[i].pidfd >= 0 && p[slot].fd == s->e[i].pidfd)
				kheld_end(s, i);
			else if (s->e[i].pidfd < 0 && p[slot].fd == s->e[i].uffd)
				keeper_learn(s, i);
		}
	}
}

/* Threads of ours (from /proc/self/task), or -1. */
static int nr_threads(void)
{
	long long n;

	return procfs_field_num("/proc/self/status", "Threads", &n) == 0 ? (int)n : -1;
}

int keeper_start(struct keeper *k, const struct journal *j)
{
	struct kstate s = { .lfd = -1, .jfd = j->fd };
	int sv[2], dpidfd;
	pid_t pid;

	k->running = false;
	dpidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (dpidfd < 0)
		return -errno;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		int e = errno;

		close(dpidfd);
		return -e;
	}
	fcntl(dpidfd, F_SETFD, FD_CLOEXEC);
	/*
	 * Like fork, but sharing the fd table. clone() runs no atfork handlers,
	 * so no other thread may hold a lock the child could want (malloc's):
	 * wait out a short-lived one (an unmap of a large image, runtime/pages.c).
	 */
	for (int i = 0; i < 200 && nr_threads() > 1; i++)
		usleep(5000);
	if (nr_threads() != 1) {
		close(sv[0]);
		close(sv[1]);
		close(dpidfd);
		return -EBUSY;
	}
	pid = (pid_t)syscall(SYS_clone, CLONE_FILES | SIGCHLD, NULL, NULL, NULL, NULL);
	if (pid < 0) {
		int e = errno;

		close(sv[0]);
		close(sv[1]);
		close(dpidfd);
		return -e;
	}
	if (pid == 0) {
		signal(SIGTERM, SIG_IGN);
		signal(SIGINT, SIG_IGN);
		signal(SIGHUP, SIG_IGN);
		signal(SIGUSR2, SIG_IGN);
		signal(SIGPIPE, SIG_IGN);
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		prctl(PR_SET_NAME, "uffd-keeper");
		prctl(PR_SET_PDEATHSIG, 0);
		s.sock = sv[1];
		s.dpidfd = dpidfd;
		keeper_main(&s);
	}
	k->sock = sv[0];
	k->pid = pid;
	k->running = true;
	return 0;
}

void keeper_listen(struct keeper *k, int fd)
{
	struct keeper_msg m = { .op = KP_LISTEN, .fd = fd };

	if (k->running && send(k->sock, &m, sizeof(m), MSG_DONTWAIT) != sizeof(m))
		log_warn("keeper (pid %d): cannot give it its adoption socket", (int)k->pid);
}

void keeper_close(struct keeper *k, struct journal *j)
{
	if (j->h)
		j->h->clean = 1;
	if (k->running)
		close(k->sock);
	k->running = false;
}
