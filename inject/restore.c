/*
 * Restore a process from images without CRIU.
 *
 * A helper, forked at the dumped pid when that is free, prepares what needs
 * no memory of the old process (open files at their numbers, cwd, umask,
 * signal handlers, the main thread's sigaltstack, tid address, robust list
 * and comm, the userfaultfd), maps a two-page trampoline (a syscall
 * instruction and a scratch page) at an address free in both layouts,
 * blocks every signal and sleeps. We seize it and, through the trampoline,
 * unmap everything it had, move its vdso and vvar to the dumped addresses,
 * map every dumped area (files from the same files, anonymous areas empty),
 * write the eager pages, set the mm fields, clone every other thread (at its
 * dumped tid when free; each traced from birth, stopped before its first
 * instruction) and give each its own sigaltstack, robust list, rseq and
 * name, set the main thread's rseq, hand the userfaultfd to the manager,
 * unmap the trampoline, install every thread's dumped registers, FPU state
 * and signal mask, and let them go. No thread runs a user-space
 * instruction of its own before all of that is done.
 *
 * This file runs the steps in order and cleans up: restore_plan.c reads the
 * images and plans, restore_helper.c is the helper, restore_build.c the
 * rebuild through the ptrace engine. Their shared state is struct rs (rs.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "procfs.h"
#include "restore.h"
#include "restore_remote.h"
#include "restore_build.h"
#include "restore_helper.h"
#include "restore_plan.h"
#include "restore_tree.h"
#include "rs.h"
#include "why.h"

int rs_fail(struct rs *r, int code, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = why_vfirst(r->why, sizeof(r->why), code, NULL, fmt, ap);
	va_end(ap);
	return ret;
}

static double since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/*
 * Collect every child and tracee of ours once the half-built process is
 * killed: the helper (our child, or --pidns init's), the threads it cloned,
 * traced from birth (one we did not get to adopt included: its leader
 * cannot be reaped before it), and the init. This tool has no others.
 */
static void reap_all(void)
{
	for (int i = 0; i < 5000; i++) {
		pid_t w = waitpid(-1, NULL, __WALL | WNOHANG);

		if (w < 0 && errno == ECHILD)
			return;
		if (w <= 0)
			usleep(1000);
	}
}

void rs_release(struct rs *r, bool ok)
{
	if (!ok && (r->child > 0 || r->init > 0)) {
		if (r->child > 0)
			kill(r->child, SIGKILL);
		/* Its init gone, a pid namespace loses every process in it. */
		if (r->init > 0)
			kill(r->init, SIGKILL);
		if (r->seized)
			pt_detach(&r->pt);
		r->seized = false;
		reap_all();
	}
	if (r->uffd >= 0)
		close(r->uffd);
	for (int i = 0; i < 2; i++)
		if (r->keep[i] >= 0)
			close(r->keep[i]);
	rsr_close(r->ps);
	r->ps = NULL;
	if (r->pidfd >= 0)
		close(r->pidfd);
	if (r->dirfd >= 0)
		close(r->dirfd);
	if (r->task_loaded)
		img_task_free(&r->task, &r->cache);
	if (r->core)
		core_entry__free_unpacked(r->core, NULL);
	for (size_t i = 1; i < r->nth; i++)
		if (r->th[i].core)
			core_entry__free_unpacked(r->th[i].core, NULL);
	free(r->th);
	if (r->fs)
		fs_entry__free_unpacked(r->fs, NULL);
	for (size_t i = 0; i < r->nfiles; i++)
		file_entry__free_unpacked(r->files[i], NULL);
	for (size_t i = 0; i < r->nfdi; i++)
		fdinfo_entry__free_unpacked(r->fdi[i], NULL);
	free(r->files);
	free(r->fdi);
	free(r->extra);
	free(r->vma_mf);
	free(r->vma_wr);
}

/* Does DIR hold more than one process (a dump --tree)? Errors are left to the plan. */
static bool holds_tree(const char *dir)
{
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct img_err err;
	uint32_t *pids = NULL;
	size_t n = 0;
	bool from_pstree = false;

	if (dirfd < 0)
		return false;
	if (img_list_tasks(dirfd, &pids, &n, &from_pstree, &err) < 0)
		n = 0;
	close(dirfd);
	free(pids);
	return n > 1 && from_pstree;
}

int restore_run(const struct restore_opts *o, struct restore_stats *st)
{
	struct restore_stats local;
	struct procfs_maps own;
	struct rs_shm *shm = NULL;
	struct rs *r;
	char why[256];
	int ret;

	if (!st)
		st = &local;
	memset(st, 0, sizeof(*st));
	if (holds_tree(o->dir))
		return restore_tree_run(o, st);
	r = calloc(1, sizeof(*r));
	if (!r) {
		fprintf(stderr, "uffd-inject: restore: out of memory\n");
		return -ENOMEM;
	}
	memset(&own, 0, sizeof(own));
	r->o = o;
	r->st = st;
	r->dirfd = r->pidfd = r->uffd = -1;
	r->keep[0] = r->keep[1] = -1;
	r->features = RS_FEATURES;
	clock_gettime(CLOCK_MONOTONIC, &r->t0);

	ret = restore_plan_load(r);
	if (ret == 0)
		ret = restore_plan_check_files(r);
	if (ret == 0)
		ret = restore_plan_areas(r);
	if (ret == 0)
		ret = rs_shm_plan(&shm, &r, 1);
	if (ret == 0) {
		ret = restore_plan_read_maps(getpid(), &own, why, sizeof(why));
		if (ret < 0)
			rs_fail(r, ret, "%s", why);
	}
	if (ret == 0)
		ret = restore_plan_specials(r, &own);
	if (ret == 0)
		ret = restore_plan_trampoline(r, &own);
	procfs_maps_free(&own);
	/* Before the helper is forked: it inherits them. */
	if (ret == 0 && shm)
		ret = rs_shm_make(shm, r);
	if (ret == 0)
		ret = restore_helper_start(r);
	if (ret == 0)
		ret = restore_build(r);
	if (ret == 0)
		ret = restore_helper_release(r);
	st->total_s = since(&r->t0);
	if (shm)
		st->eager_pages += shm->written;
	if (ret == 0) {
		char ns[64] = "";

		st->pid = r->child;
		st->nspid = r->th[0].now;
		st->init = r->init;
		if (o->pidns)
			snprintf(ns, sizeof(ns), " (pid %d in a new pid namespace)",
				 (int)r->th[0].now);
		for (size_t i = 0; i < r->nth; i++)
			if (r->th[i].now != (pid_t)r->th[i].tid)
				fprintf(stderr, "uffd-inject: restore: %s: %s %u is now %s %d (%u: %s)\n",
					o->dir, i ? "thread" : "pid", r->th[i].tid,
					i ? "tid" : "pid", (int)r->th[i].now, r->th[i].tid,
					r->th[i].err == EEXIST ? "taken" : strerror(r->th[i].err));
		if (o->out) {
			fprintf(o->out, "%d\n", (int)r->child);
			fprintf(o->out, "uffd-inject: restored %s (pid %u) as pid %d%s in %.1f ms: "
				"%" PRIu64 " pages written, %" PRIu64 " lazy%s, %" PRIu64 " poisoned, "
				"%u syscalls, %u thread%s (%u not at the dumped tid)\n",
				o->dir, r->pid, (int)r->child, ns, st->total_s * 1e3, st->eager_pages,
				st->lazy_pages, o->eager ? "" : " (served by the manager)",
				st->poisoned_pages, st->syscalls, st->threads, st->threads == 1 ? "" : "s",
				st->moved);
			fflush(o->out);
		}
	} else {
		fprintf(stderr, "uffd-inject: restore: %s: %s\n", o->dir,
			r->why[0] ? r->why : strerror(-ret));
	}
	rs_release(r, ret == 0);
	rs_shm_free(shm);
	free(r);
	return ret;
}
