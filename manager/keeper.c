/* The keeper of userfaultfd copies: see keeper.h. */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
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
#include "keeper.h"
#include "procfs.h"
#include "log.h"

enum { KP_HOLD = 1, KP_PID, KP_DROP };

struct keeper_msg {
	uint32_t op;
	int32_t parent;		/* KP_HOLD: the parent's pid, or 0 */
	uint64_t id;
};

struct kentry {
	uint64_t id;
	int uffd;
	int pidfd;	/* -1 until the daemon knows the process */
	pid_t parent;	/* its parent's pid, to check a fault's thread id against; 0: unknown */
};

/* The keeper's own state (in the forked process only). */
struct kstate {
	int sock;
	struct kentry *e;
	size_t n, cap;
	bool orphan;	/* the daemon is gone */
};

static void kentry_close(struct kstate *s, size_t i)
{
	close(s->e[i].uffd);
	if (s->e[i].pidfd >= 0)
		close(s->e[i].pidfd);
	s->e[i] = s->e[--s->n];
}

static struct kentry *kentry_find(struct kstate *s, uint64_t id)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->e[i].id == id)
			return &s->e[i];
	return NULL;
}

/* One message from the daemon; false when it is gone. */
static bool keeper_recv(struct kstate *s)
{
	struct keeper_msg m;
	struct kentry *e;
	int fd = -1;
	struct fdpass_in in = { .fds = &fd, .max = 1 };
	ssize_t n = fdpass_recv(s->sock, &m, sizeof(m), 0, &in);

	if (n <= 0)
		return false;
	if (n != sizeof(m)) {
		if (fd >= 0)
			close(fd);
		return true;
	}
	e = kentry_find(s, m.id);
	switch (m.op) {
	case KP_HOLD:
		if (fd < 0 || e)
			break;
		if (s->n == s->cap) {
			size_t cap = s->cap ? s->cap * 2 : 64;
			struct kentry *ne = realloc(s->e, cap * sizeof(*ne));

			if (!ne) {
				log_warnx("keeper: out of memory: not holding process %llu",
					  (unsigned long long)m.id);
				break;
			}
			s->e = ne;
			s->cap = cap;
		}
		s->e[s->n++] = (struct kentry){ m.id, fd, -1, m.parent };
		fd = -1;
		break;
	case KP_PID:
		if (fd < 0 || !e || e->pidfd >= 0)
			break;
		e->pidfd = fd;
		fd = -1;
		break;
	case KP_DROP:
		if (e)
			kentry_close(s, (size_t)(e - s->e));
		break;
	}
	if (fd >= 0)
		close(fd);
	return true;
}

/* The pid PIDFD names (its fdinfo's Pid), or 0. */
static pid_t pidfd_pid(int pidfd)
{
	char path[64];
	long long pid;

	if (pidfd < 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
	return procfs_field_num(path, "Pid", &pid) == 0 && pid > 0 ? (pid_t)pid : 0;
}

/*
 * With the daemon gone, learn the pid of an entry the daemon never named:
 * read what its uffd holds. A fault carries its thread id (THREAD_ID); a
 * fork carries the child's uffd, held too, so grandchildren wait as well.
 * The events are read and let the process go on with its munmap or mremap;
 * its missing pages stay missing, and it waits on them.
 */
static void keeper_learn(struct kstate *s, size_t i)
{
	struct uffd_msg m[16];
	ssize_t n = read(s->e[i].uffd, m, sizeof(m));

	for (ssize_t k = 0; n > 0 && k < n / (ssize_t)sizeof(m[0]); k++) {
		if (m[k].event == UFFD_EVENT_FORK) {
			if (s->n == s->cap) {
				struct kentry *ne = realloc(s->e, (s->cap + 64) * sizeof(*ne));

				if (!ne)
					continue;	/* still held in our fd table */
				s->e = ne;
				s->cap += 64;
			}
			s->e[s->n++] = (struct kentry){ 0, (int)m[k].arg.fork.ufd, -1,
							pidfd_pid(s->e[i].pidfd) };
		} else if (m[k].event == UFFD_EVENT_PAGEFAULT && s->e[i].pidfd < 0 &&
			   m[k].arg.pagefault.feat.ptid) {
			pid_t pid = procfs_child_of_tid(s->e[i].parent,
							(pid_t)m[k].arg.pagefault.feat.ptid);

			if (pid)
				s->e[i].pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
		}
	}
}

static void keeper_main(int sock) __attribute__((noreturn));

static void keeper_main(int sock)
{
	struct kstate s = { .sock = sock };
	struct pollfd *p = NULL;
	size_t cap = 0;

	for (;;) {
		size_t np = 0, k;

		if (s.orphan && s.n == 0)
			_exit(0);
		if (cap < s.n + 1) {
			struct pollfd *q = realloc(p, (s.n + 64) * sizeof(*q));

			if (q) {
				p = q;
				cap = s.n + 64;
			}
		}
		if (!s.orphan && np < cap)
			p[np++] = (struct pollfd){ .fd = s.sock, .events = POLLIN };
		/* A pidfd says when the process exits; orphaned, a uffd without one may tell its pid. */
		for (size_t i = 0; i < s.n && np < cap; i++)
			p[np++] = (struct pollfd){
				.fd = s.e[i].pidfd >= 0 ? s.e[i].pidfd : s.orphan ? s.e[i].uffd : -1,
				.events = POLLIN };
		if (poll(p, np, -1) < 0) {
			if (errno != EINTR)
				sleep(1);
			continue;
		}
		k = 0;
		if (!s.orphan && (p[k++].revents & (POLLIN | POLLHUP | POLLERR)) &&
		    !keeper_recv(&s)) {
			int null = open("/dev/null", O_RDWR | O_CLOEXEC);

			s.orphan = true;
			close(s.sock);
			if (s.n)
				log_warnx("keeper: the daemon is gone; holding %zu userfaultfds so "
					  "that their processes wait for their missing pages rather "
					  "than read zeros", s.n);
			/* From now on nobody reads our output: hold no one's pipe open. */
			if (null >= 0) {
				dup2(null, 2);
				close(null);
			}
			continue;	/* the entries may have moved: poll again */
		}
		/* The processes that exited (entries after K, in order, unless moved). */
		for (size_t i = s.n; i-- > 0;) {
			size_t slot = k + i;

			if (slot >= np || !(p[slot].revents & (POLLIN | POLLHUP)))
				continue;
			if (s.e[i].pidfd >= 0 && p[slot].fd == s.e[i].pidfd)
				kentry_close(&s, i);
			else if (s.e[i].pidfd < 0 && p[slot].fd == s.e[i].uffd)
				keeper_learn(&s, i);
		}
	}
}

int keeper_start(struct keeper *k)
{
	int sv[2];
	pid_t pid;

	k->running = false;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		int e = errno;

		close(sv[0]);
		close(sv[1]);
		return -e;
	}
	if (pid == 0) {
		/* Only its socket and stderr: nothing of the daemon's, no one's pipes. */
		int null = open("/dev/null", O_RDWR);

		if (dup2(sv[1], 3) < 0 || null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0)
			_exit(1);
		close_range(4, ~0u, 0);
		signal(SIGTERM, SIG_IGN);
		signal(SIGINT, SIG_IGN);
		signal(SIGHUP, SIG_IGN);
		signal(SIGPIPE, SIG_IGN);
		prctl(PR_SET_NAME, "uffd-keeper");
		keeper_main(3);
	}
	close(sv[1]);
	k->sock = sv[0];
	k->pid = pid;
	k->running = true;
	return 0;
}

static void keeper_send(struct keeper *k, uint32_t op, uint64_t id, int fd, pid_t parent)
{
	struct keeper_msg m = { .op = op, .parent = parent, .id = id };
	ssize_t n;

	if (!k->running)
		return;
	/* Never wait for it: a stopped keeper must not stall everyone we serve. */
	n = fdpass_send(k->sock, &m, sizeof(m), &fd, fd >= 0, MSG_DONTWAIT);
	if (n < 0) {
		errno = (int)-n;
		log_warn("keeper (pid %d) is %s; processes now depend on this daemon alone",
			 (int)k->pid, n == -EAGAIN ? "not keeping up" : "gone");
		close(k->sock);
		k->running = false;
	}
}

void keeper_hold(struct keeper *k, uint64_t id, int uffd, pid_t parent)
{
	keeper_send(k, KP_HOLD, id, uffd, parent);
}

void keeper_pid(struct keeper *k, uint64_t id, int pidfd)
{
	keeper_send(k, KP_PID, id, pidfd, 0);
}

void keeper_drop(struct keeper *k, uint64_t id)
{
	keeper_send(k, KP_DROP, id, -1, 0);
}

void keeper_close(struct keeper *k)
{
	if (k->running)
		close(k->sock);
	k->running = false;
}
