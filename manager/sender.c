/* The kernel's word on who a process is: message senders and pidfds. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "procfs.h"
#include "sender.h"

/* A pid read from a /proc file line: >0, -ESRCH for -1 or 0 (gone, or not in our namespace). */
static int read_pid(const char *path, const char *key, pid_t *pid)
{
	char val[128];
	int ret = procfs_field(path, key, val, sizeof(val));

	if (ret < 0)
		return ret;
	ret = atoi(val);
	if (ret <= 0)
		return -ESRCH;
	*pid = ret;
	return 0;
}

/* The pid a pidfd names, from its fdinfo. */
static int pidfd_pid(int pidfd, pid_t *pid)
{
	char path[64];
	int ret;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
	ret = read_pid(path, "Pid", pid);
	return ret == -ENOENT ? -EINVAL : ret;
}

int sender_enable(int fd, bool no_pidfd, bool *pidfds)
{
	int one = 1;

	*pidfds = false;
	if (!no_pidfd && setsockopt(fd, SOL_SOCKET, SO_PASSPIDFD, &one, sizeof(one)) == 0) {
		*pidfds = true;
		return 0;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0)
		return -errno;
	return 0;
}

void sender_init(struct sender *s)
{
	memset(s, 0, sizeof(*s));
	s->pidfd = -1;
}

bool sender_take(struct sender *s, const struct cmsghdr *cm)
{
	if (cm->cmsg_level != SOL_SOCKET)
		return false;
	if (cm->cmsg_type == SCM_PIDFD && cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
		int fd;

		memcpy(&fd, CMSG_DATA(cm), sizeof(fd));
		if (s->pidfd >= 0)
			close(s->pidfd);
		s->pidfd = fd >= 0 ? fd : -1;
		s->pidfd_err = fd < 0 ? fd : 0;
		return true;
	}
	if (cm->cmsg_type == SCM_CREDENTIALS && cm->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
		memcpy(&s->cred, CMSG_DATA(cm), sizeof(s->cred));
		s->has_cred = true;
		return true;
	}
	return false;
}

void sender_clear(struct sender *s)
{
	if (s->pidfd >= 0)
		close(s->pidfd);
	sender_init(s);
}

int sender_check_process(int pidfd, pid_t *pid, char *why, size_t len)
{
	char path[64];
	pid_t tgid = 0, again;
	int fl, ret;

	ret = pidfd_pid(pidfd, pid);
	if (ret < 0) {
		snprintf(why, len, "%s", ret == -ESRCH ? "the process has exited" :
			 "cannot read the pidfd's pid");
		return ret;
	}
	snprintf(path, sizeof(path), "/proc/%d/status", *pid);
	ret = read_pid(path, "Tgid", &tgid);
	/* The number is only good while the pidfd still names a live task: check after. */
	if (pidfd_pid(pidfd, &again) < 0 || again != *pid) {
		snprintf(why, len, "the process has exited");
		return -ESRCH;
	}
	if (ret < 0) {
		snprintf(why, len, "cannot read the thread group of pid %d: %s", *pid,
			 strerror(-ret));
		return -EINVAL;
	}
	if (tgid != *pid) {
		snprintf(why, len, "the pidfd names thread %d of process %d, not the process (a PIDFD_THREAD pidfd: when that thread exits the process would lose its pages; send a pidfd of the process)",
			 *pid, tgid);
		return -EINVAL;
	}
	/* PIDFD_THREAD is O_EXCL: even of the main thread it reports that thread's exit alone. */
	fl = fcntl(pidfd, F_GETFL);
	if (fl >= 0 && (fl & O_EXCL)) {
		snprintf(why, len, "the pidfd was opened with PIDFD_THREAD (pid %d): it reports the exit of the main thread, not of the process; send a pidfd of the process",
			 *pid);
		return -EINVAL;
	}
	return 0;
}

pid_t sender_inner_pid(pid_t pid)
{
	char path[64], val[256], *last;
	int ret;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	ret = procfs_field(path, "NSpid", val, sizeof(val));
	if (ret < 0)
		return ret;
	last = strrchr(val, '\t');
	last = last ? last + 1 : val;
	if (strrchr(last, ' '))
		last = strrchr(last, ' ') + 1;
	ret = atoi(last);
	return ret > 0 ? ret : -ESRCH;
}

/* SCM_CREDENTIALS only: open the pid it names and check it is the same process still. */
static int pidfd_from_cred(const struct sender *s, int *pidfd, pid_t *pid, char *why, size_t len)
{
	char path[64], val[128];
	unsigned ruid;
	int fd, ret;

	if (s->cred.pid <= 0) {
		snprintf(why, len, "the sender is not visible in the daemon's pid namespace");
		return -ESRCH;
	}
	fd = (int)syscall(SYS_pidfd_open, s->cred.pid, 0);
	if (fd < 0) {
		ret = -errno;
		snprintf(why, len, "the sender, pid %d, is gone: pidfd_open: %s", s->cred.pid,
			 strerror(errno));
		return ret;
	}
	/*
	 * The pid could only name another process if the sender exited and the
	 * number came round again since: check it is a process of the same uid.
	 */
	ret = sender_check_process(fd, pid, why, len);
	snprintf(path, sizeof(path), "/proc/%d/status", *pid);
	if (ret == 0 && (procfs_field(path, "Uid", val, sizeof(val)) < 0 ||
			 sscanf(val, "%u", &ruid) != 1 || ruid != s->cred.uid)) {
		snprintf(why, len, "pid %d is no longer the process that sent the message", *pid);
		ret = -ESRCH;
	}
	if (ret < 0) {
		close(fd);
		return ret;
	}
	*pidfd = fd;
	return 0;
}

int sender_pidfd(struct sender *s, int *pidfd, pid_t *pid, char *why, size_t len)
{
	int ret;

	if (s->pidfd < 0 && s->pidfd_err) {
		snprintf(why, len, "the kernel could not name the sender (SCM_PIDFD: %s): it has exited",
			 strerror(-s->pidfd_err));
		return s->pidfd_err;
	}
	if (s->pidfd < 0) {
		if (!s->has_cred) {
			snprintf(why, len, "the kernel did not name the sender (no SCM_PIDFD or SCM_CREDENTIALS)");
			return -EPROTO;
		}
		return pidfd_from_cred(s, pidfd, pid, why, len);
	}
	ret = pidfd_pid(s->pidfd, pid);
	if (ret < 0) {
		snprintf(why, len, "%s", ret == -ESRCH ?
			 "the sender has exited, or is not in the daemon's pid namespace" :
			 "cannot read the sender's pidfd");
		return ret;
	}
	*pidfd = s->pidfd;
	s->pidfd = -1;
	return 0;
}
