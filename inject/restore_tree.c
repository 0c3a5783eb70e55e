/*
 * Restore a process tree (an image directory dumped with dump --tree):
 * every process planned from its own images (restore_plan.c) before any is
 * made; the root's helper forked by us (under a pid namespace's init with
 * --pidns), and every other helper by its parent's helper, so that each
 * restored parent is the real parent of its restored children
 * (restore_helper.c); each helper rebuilt in turn (restore_build.c) and
 * left stopped; then all let go together. If any step fails for any
 * process, every process of the tree is killed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "image.h"
#include "pstree.pb-c.h"
#include "restore_build.h"
#include "restore_helper.h"
#include "restore_plan.h"
#include "restore_tree.h"
#include "rs.h"
#include "why.h"

#define TREE_MAX	1024

struct rtree {
	const struct restore_opts *o;
	struct rs_tree t;
	PstreeEntry **ps;
	size_t nps;
	struct restore_stats *st;	/* one per process */
	struct rs_shm *shm;		/* the shared memory of them all, or NULL */
	char why[1024];
};

static int tfail(struct rtree *x, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int tfail(struct rtree *x, int code, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = why_vfirst(x->why, sizeof(x->why), code, NULL, fmt, ap);
	va_end(ap);
	return ret;
}

static double since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Read pstree.img. */
static int load_pstree(struct rtree *x)
{
	struct img_reader rd;
	struct img_err err;
	ProtobufCMessage *m;
	int dirfd, ret;

	dirfd = open(x->o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return tfail(x, errno, "%s: %s", x->o->dir, strerror(errno));
	ret = img_open(&rd, dirfd, "pstree.img", IMG_PSTREE_MAGIC, &err);
	close(dirfd);
	if (ret < 0)
		return tfail(x, ret, "%s/%s", x->o->dir, err.msg);
	while ((ret = img_next(&rd, &pstree_entry__descriptor, &m, &err)) == 1) {
		PstreeEntry **nv;

		if (x->nps == TREE_MAX) {
			protobuf_c_message_free_unpacked(m, NULL);
			img_close(&rd);
			return tfail(x, ENOTSUP, "%s/pstree.img: more than %d processes", x->o->dir,
				     TREE_MAX);
		}
		nv = realloc(x->ps, (x->nps + 1) * sizeof(*nv));
		if (!nv) {
			protobuf_c_message_free_unpacked(m, NULL);
			img_close(&rd);
			return tfail(x, ENOMEM, "out of memory");
		}
		x->ps = nv;
		x->ps[x->nps++] = (PstreeEntry *)m;
	}
	img_close(&rd);
	if (ret < 0)
		return tfail(x, ret, "%s/%s", x->o->dir, err.msg);
	return 0;
}

/* Is K made before I: an ancestor of I, or forked before one of I's ancestors (or I) by the same parent? */
static bool made_before(const struct rs_tree *t, int k, int i)
{
	for (int a = i; a >= 0; a = t->parent[a]) {
		if (t->parent[a] == k)
			return true;
		if (a != 0 && t->parent[k] == t->parent[a] && k < a)
			return true;
	}
	return false;
}

/*
 * Who is whose parent, and how each process gets its session and group;
 * refuse, naming the pid, what the helpers could not make.
 */
static int plan_tree(struct rtree *x)
{
	struct rs_tree *t = &x->t;
	size_t n = x->nps;

	t->n = n;
	t->r = calloc(n, sizeof(*t->r));
	t->parent = calloc(n, sizeof(*t->parent));
	t->leader = calloc(n, sizeof(*t->leader));
	t->setsid = calloc(n, sizeof(*t->setsid));
	t->now = calloc(n, sizeof(*t->now));
	t->pipe = calloc(n, sizeof(*t->pipe));
	x->st = calloc(n, sizeof(*x->st));
	if (!t->r || !t->parent || !t->leader || !t->setsid || !t->now || !t->pipe || !x->st)
		return tfail(x, ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		t->pipe[i][0] = t->pipe[i][1] = -1;
	for (size_t i = 0; i < n; i++) {
		const PstreeEntry *p = x->ps[i];

		if (!p->pid || p->pid > INT32_MAX)
			return tfail(x, EINVAL, "%s/pstree.img: bad pid %u", x->o->dir, p->pid);
		t->parent[i] = -1;
		for (size_t k = 0; k < n; k++) {
			if (k != i && x->ps[k]->pid == p->pid)
				return tfail(x, EINVAL, "%s/pstree.img: pid %u is listed twice",
					     x->o->dir, p->pid);
			if (k < i && x->ps[k]->pid == p->ppid)
				t->parent[i] = (int)k;
		}
		if (i > 0 && t->parent[i] < 0)
			return tfail(x, EINVAL, "%s/pstree.img: the parent %u of pid %u is not "
				     "listed before it", x->o->dir, p->ppid, p->pid);
	}
	for (size_t i = 0; i < n; i++) {
		const PstreeEntry *p = x->ps[i];
		int par = t->parent[i];

		t->setsid[i] = p->sid == p->pid;
		if (!t->setsid[i] && par >= 0 && p->sid != x->ps[par]->sid)
			return tfail(x, ENOTSUP, "pid %u: its session %u is neither its own nor its "
				     "parent's (%u): not supported", p->pid, p->sid,
				     x->ps[par]->sid);
		if (t->setsid[i] && p->pgid != p->pid)
			return tfail(x, EINVAL, "%s/pstree.img: pid %u leads its session but not "
				     "its group %u", x->o->dir, p->pid, p->pgid);
		if (p->pgid == p->pid) {
			t->leader[i] = (int)i;
			continue;
		}
		if (par < 0 || p->pgid == x->ps[par]->pgid) {
			t->leader[i] = RS_PG_INHERIT;
			continue;
		}
		t->leader[i] = -2;
		for (size_t k = 0; k < n; k++)
			if (x->ps[k]->pid == p->pgid && x->ps[k]->sid == p->sid &&
			    made_before(t, (int)k, (int)i))
				t->leader[i] = (int)k;
		if (t->leader[i] == -2)
			return tfail(x, ENOTSUP, "pid %u: its process group %u is led by no "
				     "process of its session made before it: not supported", p->pid,
				     p->pgid);
	}
	return 0;
}

/* Plan every process from its images, before any is made. */
static int plan_all(struct rtree *x, struct timespec t0)
{
	struct procfs_maps own;
	char why[256];
	int ret = 0;

	memset(&own, 0, sizeof(own));
	for (size_t i = 0; ret == 0 && i < x->t.n; i++) {
		struct rs *r = calloc(1, sizeof(*r));

		if (!r)
			return tfail(x, ENOMEM, "out of memory");
		x->t.r[i] = r;
		r->o = x->o;
		r->st = &x->st[i];
		r->dirfd = r->pidfd = r->uffd = -1;
		r->keep[0] = r->keep[1] = -1;
		r->t0 = t0;
		r->tree = &x->t;
		r->idx = (int)i;
		r->pid = x->ps[i]->pid;
		r->files_id = (uint32_t)i + 1;
		r->hold = true;
		r->features = RS_FEATURES;
		ret = restore_plan_load(r);
		if (ret == 0)
			ret = restore_plan_check_files(r);
		if (ret == 0)
			ret = restore_plan_areas(r);
		if (ret < 0)
			return tfail(x, ret, "pid %u: %s", r->pid, r->why);
	}
	ret = rs_shm_plan(&x->shm, x->t.r, x->t.n);
	for (size_t i = 0; ret < 0 && i < x->t.n; i++)
		if (x->t.r[i]->why[0])
			return tfail(x, ret, "pid %u: %s", x->t.r[i]->pid, x->t.r[i]->why);
	if (ret < 0)
		return tfail(x, ret, "shared memory: %s", strerror(-ret));
	/* Every helper is a fork of ours, made after this: our layout is theirs. */
	ret = restore_plan_read_maps(getpid(), &own, why, sizeof(why));
	if (ret < 0)
		return tfail(x, ret, "%s", why);
	for (size_t i = 0; ret == 0 && i < x->t.n; i++) {
		struct rs *r = x->t.r[i];

		ret = restore_plan_specials(r, &own);
		if (ret == 0)
			ret = restore_plan_trampoline(r, &own);
		if (ret < 0)
			tfail(x, ret, "pid %u: %s", r->pid, r->why);
	}
	procfs_maps_free(&own);
	for (size_t i = 0; ret == 0 && i < x->t.n; i++)
		if (pipe2(x->t.pipe[i], O_CLOEXEC) < 0)
			ret = tfail(x, errno, "pipe: %s", strerror(errno));
	return ret;
}

/* Make every helper, the root's first; each other one is forked by its parent's. */
static int make_helpers(struct rtree *x)
{
	struct rs_tree *t = &x->t;
	int ret = restore_helper_start(t->r[0]);

	if (ret < 0)
		return tfail(x, ret, "pid %u: %s", t->r[0]->pid, t->r[0]->why);
	for (size_t i = 1; i < t->n; i++) {
		struct rs *r = t->r[i];

		ret = restore_helper_await(r, t->r[t->parent[i]]->child);
		if (ret < 0)
			return tfail(x, ret, "pid %u: %s", r->pid, r->why);
	}
	return 0;
}

/* Rebuild every process, each left stopped; then let them all go. */
static int build_all(struct rtree *x)
{
	struct rs_tree *t = &x->t;
	int ret;

	for (size_t i = 0; i < t->n; i++) {
		ret = restore_build(t->r[i]);
		if (ret < 0)
			return tfail(x, ret, "pid %u: %s", t->r[i]->pid, t->r[i]->why);
		if (getenv("UFFD_INJECT_TEST_TREE_FAIL_AT") &&
		    (uint32_t)atoi(getenv("UFFD_INJECT_TEST_TREE_FAIL_AT")) == t->r[i]->pid)
			return tfail(x, EIO, "pid %u: failed on purpose (UFFD_INJECT_TEST_TREE_FAIL_AT)",
				     t->r[i]->pid);
	}
	/* The seals that forbid new writable mappings, now that every process has its own. */
	if (x->shm && (ret = rs_shm_seal_late(x->shm, t->r[0])) < 0)
		return tfail(x, ret, "%s", t->r[0]->why);
	/*
	 * Children first: a parent runs only once its children are let go, so
	 * what it does to them (a signal, a wait) finds them running. One that
	 * is already gone (ESRCH: another process of the tree killed it) was
	 * let go: its end is the tree's business, not a failed restore.
	 */
	for (size_t i = t->n; i-- > 0;) {
		ret = pt_detach(&t->r[i]->pt);
		t->r[i]->seized = false;
		if (ret < 0 && ret != -ESRCH)
			return tfail(x, ret, "pid %u: detach: %s", t->r[i]->pid, strerror(-ret));
	}
	return restore_helper_release(t->r[0]) < 0 ?
	       tfail(x, EIO, "%s", t->r[0]->why) : 0;
}

/* Say what became of every process: its dumped pid and its pid now. */
static void report(struct rtree *x, struct restore_stats *st)
{
	const struct restore_opts *o = x->o;
	struct rs_tree *t = &x->t;

	/* The pages written into the shared objects, once for the tree: the root's. */
	if (x->shm)
		t->r[0]->st->eager_pages += x->shm->written;
	for (size_t i = 0; i < t->n; i++) {
		struct rs *r = t->r[i];

		r->st->pid = r->child;
		r->st->nspid = r->th[0].now;
		for (size_t k = 0; k < r->nth; k++)
			if (r->th[k].now != (pid_t)r->th[k].tid)
				fprintf(stderr, "uffd-inject: restore: %s: %s %u is now %s %d (%u: %s)\n",
					o->dir, k ? "thread" : "pid", r->th[k].tid,
					k ? "tid" : "pid", (int)r->th[k].now, r->th[k].tid,
					r->th[k].err == EEXIST ? "taken" : strerror(r->th[k].err));
		st->eager_pages += r->st->eager_pages;
		st->lazy_pages += r->st->lazy_pages;
		st->poisoned_pages += r->st->poisoned_pages;
		st->syscalls += r->st->syscalls;
		st->threads += r->st->threads;
		st->moved += r->st->moved;
	}
	st->pid = t->r[0]->child;
	st->nspid = t->r[0]->th[0].now;
	st->init = t->r[0]->init;
	if (!o->out)
		return;
	fprintf(o->out, "%d\n", (int)st->pid);
	for (size_t i = 0; i < t->n; i++) {
		struct rs *r = t->r[i];
		char ns[64] = "";

		if (o->pidns)
			snprintf(ns, sizeof(ns), " (pid %d in a new pid namespace)",
				 (int)r->th[0].now);
		fprintf(o->out, "uffd-inject: restored %s (pid %u, child of %u) as pid %d%s: "
			"%" PRIu64 " pages written, %" PRIu64 " lazy%s, %" PRIu64 " poisoned, "
			"%u syscalls, %u thread%s (%u not at the dumped tid)\n",
			o->dir, r->pid, x->ps[i]->ppid, (int)r->child, ns, r->st->eager_pages,
			r->st->lazy_pages, o->eager ? "" : " (served by the manager)",
			r->st->poisoned_pages, r->st->syscalls, r->st->threads,
			r->st->threads == 1 ? "" : "s", r->st->moved);
	}
	fprintf(o->out, "uffd-inject: restored the tree of %zu processes in %.1f ms\n", t->n,
		st->total_s * 1e3);
	fflush(o->out);
}

/* Kill every process of the tree we know of (by pidfd: they are not all our children). */
static void kill_all(struct rtree *x)
{
	for (size_t i = x->t.n; i-- > 0;) {
		struct rs *r = x->t.r[i];

		if (r && r->pidfd >= 0)
			syscall(SYS_pidfd_send_signal, r->pidfd, SIGKILL, NULL, 0);
	}
}

/* Was any process of the tree made (its helper forked)? */
static bool made_any(const struct rtree *x)
{
	const struct rs *r = x->t.r ? x->t.r[0] : NULL;

	return r && (r->child > 0 || r->init > 0);
}

static void free_all(struct rtree *x, bool ok)
{
	struct rs_tree *t = &x->t;

	if (!ok)
		kill_all(x);
	/* The root last: it kills its helper (and init) and reaps every child and tracee. */
	for (size_t i = t->n; i-- > 0;) {
		if (!t->r || !t->r[i])
			continue;
		rs_release(t->r[i], ok || i > 0);
		free(t->r[i]);
	}
	for (size_t i = 0; t->pipe && i < t->n; i++)
		for (int k = 0; k < 2; k++)
			if (t->pipe[i][k] >= 0)
				close(t->pipe[i][k]);
	for (size_t i = 0; i < x->nps; i++)
		pstree_entry__free_unpacked(x->ps[i], NULL);
	free(x->ps);
	rs_shm_free(x->shm);
	free(t->r);
	free(t->parent);
	free(t->leader);
	free(t->setsid);
	free(t->now);
	free(t->pipe);
	free(x->st);
}

int restore_tree_run(const struct restore_opts *o, struct restore_stats *st)
{
	struct rtree x;
	struct timespec t0;
	int ret;

	memset(&x, 0, sizeof(x));
	x.o = o;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ret = o->page_server ? tfail(&x, ENOTSUP, "--page-server restores one process; this "
				     "directory holds a tree") : 0;
	if (ret == 0)
		ret = load_pstree(&x);
	if (ret == 0)
		ret = plan_tree(&x);
	if (ret == 0)
		ret = plan_all(&x, t0);
	/* Once, before any helper is forked: they all inherit them. */
	if (ret == 0 && x.shm && (ret = rs_shm_make(x.shm, x.t.r[0])) < 0)
		tfail(&x, ret, "%s", x.t.r[0]->why);
	if (ret == 0)
		ret = make_helpers(&x);
	if (ret == 0)
		ret = build_all(&x);
	st->total_s = since(&t0);
	if (ret == 0)
		report(&x, st);
	else
		fprintf(stderr, "uffd-inject: restore: %s: %s%s\n", o->dir,
			x.why[0] ? x.why : strerror(-ret), made_any(&x) ?
			"; every process of the tree killed" : "");
	free_all(&x, ret == 0);
	return ret;
}
