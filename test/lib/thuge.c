/* Huge pages in the pool for the time of a test (thuge.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "thuge.h"

#define NR_HUGEPAGES	"/proc/sys/vm/nr_hugepages"

static long read_long(int fd)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return strtol(buf, NULL, 10);
}

static int write_long(int fd, long v)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%ld\n", v);

	return pwrite(fd, buf, (size_t)n, 0) == n ? 0 : -1;
}

/* HugePages_Free of /proc/meminfo, or -1. */
static long free_huge(void)
{
	char line[128];
	long v = -1;
	FILE *f = fopen("/proc/meminfo", "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "HugePages_Free: %ld", &v) == 1)
			break;
	fclose(f);
	return v;
}

/* Open the pool's size, locked; -1 with WHY. */
static int open_locked(char *why, size_t len)
{
	int fd = open(NR_HUGEPAGES, O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		if (why)
			snprintf(why, len, "%s: %s (writing it needs root)", NR_HUGEPAGES,
				 strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX) < 0) {
		if (why)
			snprintf(why, len, "flock %s: %s", NR_HUGEPAGES, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

bool th_reserve(unsigned n, char *why, size_t len)
{
	long cur, before;
	int fd = open_locked(why, len);

	if (fd < 0)
		return false;
	cur = read_long(fd);
	before = free_huge();
	if (cur < 0 || before < 0 || write_long(fd, cur + n) < 0) {
		snprintf(why, len, "cannot set %s to %ld: %s", NR_HUGEPAGES, cur + (long)n,
			 strerror(errno));
		close(fd);
		return false;
	}
	if (read_long(fd) < cur + (long)n) {
		snprintf(why, len, "the kernel found memory for only %ld of %u more huge pages",
			 read_long(fd) - cur, n);
		write_long(fd, cur);
		close(fd);
		return false;
	}
	close(fd);	/* the lock goes with it */
	return true;
}

void th_release(unsigned n)
{
	int fd = open_locked(NULL, 0);
	long cur;

	if (fd < 0)
		return;
	cur = read_long(fd);
	if (cur >= (long)n)
		write_long(fd, cur - n);
	close(fd);
}
