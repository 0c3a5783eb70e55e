/*
 * procfs_check_maps(), which lets a dump keep the smaps it read before the
 * freeze: it must see every change of an area's maps line, here on a child
 * of ours that holds a shared mapping of a file while we change the file.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "procfs.h"

static char dir[64];
static char file[96];
static pid_t child = -1;

/* A child that maps FILE shared, says so on a pipe, and waits to be killed. */
static void start(void)
{
	int p[2];
	char c;

	snprintf(dir, sizeof(dir), "/tmp/uffd-procfs-XXXXXX");
	cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
	snprintf(file, sizeof(file), "%s/shared", dir);
	cr_assert_eq(pipe(p), 0);
	child = fork();
	cr_assert_geq(child, 0);
	if (child == 0) {
		int fd = open(file, O_RDWR | O_CREAT | O_EXCL, 0600);

		if (fd < 0 || ftruncate(fd, 4 * 4096) < 0 ||
		    mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED)
			_exit(1);
		if (write(p[1], "r", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(p[1]);
	cr_assert_eq(read(p[0], &c, 1), 1, "the child did not map the file");
	close(p[0]);
}

static void stop(void)
{
	if (child > 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	child = -1;
	unlink(file);
	rmdir(dir);
}

Test(procfs, check_maps_accepts_the_areas_smaps_read, .init = start, .fini = stop)
{
	struct procfs_maps m;
	char why[512];

	cr_assert_eq(procfs_read_smaps(child, &m, why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(procfs_check_maps(child, &m, why, sizeof(why)), 0, "%s", why);
	procfs_maps_free(&m);
}

/*
 * Unlinking the file changes only the name of the area (" (deleted)"):
 * bounds, offset, device and inode stay. A dump must see it, since a shared
 * mapping of a deleted file is refused.
 */
Test(procfs, check_maps_sees_a_renamed_area, .init = start, .fini = stop)
{
	struct procfs_maps m;
	char why[512];
	bool found = false;

	cr_assert_eq(procfs_read_smaps(child, &m, why, sizeof(why)), 0, "%s", why);
	for (size_t i = 0; i < m.n; i++)
		found |= !strcmp(m.v[i].name, file);
	cr_assert(found, "no area of %s in smaps", file);
	cr_assert_eq(unlink(file), 0);
	why[0] = '\0';
	cr_assert_eq(procfs_check_maps(child, &m, why, sizeof(why)), -EAGAIN, "%s", why);
	cr_assert_not_null(strstr(why, "disagree"), "%s", why);
	procfs_maps_free(&m);
}
