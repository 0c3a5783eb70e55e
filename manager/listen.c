/* Create or adopt the listening socket. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "listen.h"

#define SD_LISTEN_FDS_START	3

/* Is something listening at ADDR? */
static bool socket_alive(const struct sockaddr_un *addr)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	bool alive;

	if (fd < 0)
		return false;
	alive = connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0;
	close(fd);
	return alive;
}

int listen_bind(const char *path, char *why, size_t len)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	char dir[sizeof(addr.sun_path)];
	struct stat st;
	mode_t old;
	char *slash;
	int fd, ret;

	if (strlen(path) >= sizeof(addr.sun_path)) {
		snprintf(why, len, "%s: path too long for a unix socket", path);
		return -ENAMETOOLONG;
	}
	strcpy(addr.sun_path, path);
	/* The default directory under /run may not exist yet. */
	strcpy(dir, path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
			ret = -errno;
			snprintf(why, len, "mkdir %s: %s", dir, strerror(errno));
			return ret;
		}
	}
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(why, len, "%s exists and is not a socket", path);
			return -EEXIST;
		}
		if (socket_alive(&addr)) {
			snprintf(why, len, "%s: another manager is listening there", path);
			return -EADDRINUSE;
		}
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		snprintf(why, len, "socket: %s", strerror(errno));
		return ret;
	}
	/* Mode 0600 from the start: no window in which others could connect. */
	old = umask(0177);
	ret = bind(fd, (struct sockaddr *)&addr, sizeof(addr));
	umask(old);
	if (ret < 0 || listen(fd, 128) < 0) {
		ret = -errno;
		snprintf(why, len, "%s: %s", path, strerror(errno));
		close(fd);
		return ret;
	}
	return fd;
}

int listen_from_systemd(char *why, size_t len)
{
	const char *spid = getenv("LISTEN_PID"), *sfds = getenv("LISTEN_FDS");
	int type = 0, listening = 0, fd = SD_LISTEN_FDS_START;
	socklen_t sl = sizeof(int);

	if (!spid || !sfds || atoi(spid) != getpid() || atoi(sfds) < 1)
		return -1;
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (atoi(sfds) != 1) {
		snprintf(why, len, "systemd passed %s sockets; expected one", sfds);
		return -EINVAL;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &sl) < 0 || type != SOCK_SEQPACKET ||
	    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &sl) < 0 || !listening) {
		snprintf(why, len, "fd 3 from systemd is not a listening SOCK_SEQPACKET socket");
		return -EINVAL;
	}
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}
