/* The loader thread: images read and models built off the loop, as the client (loader.h). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/fsuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "loader.h"
#include "remote.h"
#include "rserve.h"
#include "log.h"
#include "target.h"

struct loader {
	struct daemon *d;
	loader_done_fn done;
	pthread_t th;
	pthread_mutex_t lock;		/* guards everything below */
	pthread_cond_t cv;
	struct loader_job *todo, **todo_tail;
	struct loader_job *ready, **ready_tail;
	bool stop;
	int efd;			/* the thread's "ready" doorbell, read on the loop */
	unsigned pending;		/* submitted, not yet given back (loop only) */
	struct ev ev;
	/* The thread's own credentials, put back after every job. */
	uid_t fsuid0;
	gid_t fsgid0;
	gid_t *groups0;
	int ngroups0;
};

/*
 * Take the client's credentials for file access, in this thread only:
 * glibc's setgroups() would change every thread of the daemon (it signals
 * them all), the raw syscall changes the caller's alone; setfsuid and
 * setfsgid are per thread. Leaving fsuid 0 drops CAP_DAC_OVERRIDE and
 * CAP_DAC_READ_SEARCH from the thread's effective set, so the kernel checks
 * the modes. A root client keeps the daemon's rights; a daemon that is not
 * root can read only as itself.
 */
static int creds_enter(struct loader *l, struct loader_job *j, bool *switched)
{
	*switched = false;
	if (j->uid == 0)
		return 0;
	if (l->fsuid0 != 0) {
		if (j->uid == l->fsuid0)
			return 0;
		snprintf(j->reason, sizeof(j->reason),
			 "the manager runs as uid %u and cannot read images as uid %u",
			 (unsigned)l->fsuid0, (unsigned)j->uid);
		return -EPERM;
	}
	*switched = true;
	if (syscall(SYS_setgroups, j->ngroups, j->groups) < 0)
		return -errno;
	setfsgid(j->gid);
	if ((gid_t)setfsgid(-1) != j->gid)
		return -EPERM;
	setfsuid(j->uid);
	if ((uid_t)setfsuid(-1) != j->uid)
		return -EPERM;
	return 0;
}

/* Become the daemon again; a thread stuck with a client's rights is a broken invariant. */
static void creds_leave(struct loader *l)
{
	setfsuid(l->fsuid0);
	setfsgid(l->fsgid0);
	if ((uid_t)setfsuid(-1) != l->fsuid0 || (gid_t)setfsgid(-1) != l->fsgid0 ||
	    syscall(SYS_setgroups, l->ngroups0, l->groups0) < 0)
		fatalx("loader: cannot take back the daemon's credentials");
}

/* Load one job's images and build its model, as its client. */
static void loader_run(struct loader *l, struct loader_job *j)
{
	uint64_t t0 = now_ns();
	struct img_err err = { "" };
	bool switched;
	int ret;

	ret = creds_enter(l, j, &switched);
	if (ret < 0) {
		if (!j->reason[0])
			snprintf(j->reason, sizeof(j->reason),
				 "cannot take the client's credentials (uid %u gid %u): %s",
				 (unsigned)j->uid, (unsigned)j->gid, strerror(-ret));
		j->ret = ret;
	} else {
		j->img = timage_read(&l->d->pages, j->dirfd, j->image_id, j->max_entries,
				     j->load_flags, &err);
		if (!j->img) {
			j->ret = -EINVAL;
			snprintf(j->reason, sizeof(j->reason), "%s", err.msg);
		} else if (j->ps_host) {
			/* Its page server, with its TLS files read as the client; a blocking connect. */
			j->ret = remote_connect(l->d, j->ps_host, j->ps_port, &rserve_ops, &j->tls,
						&j->rem, j->reason, sizeof(j->reason));
			if (j->ret < 0) {
				timage_put(l->d, j->img);
				j->img = NULL;
			}
		}
	}
	if (switched)
		creds_leave(l);
	if (j->img && j->ret == 0) {
		j->img->dirfd = j->dirfd;	/* the images own it from here on */
		j->dirfd = -1;
		j->ret = timage_model(j->img, j->image_id, j->remote, &j->map, j->reason,
				      sizeof(j->reason));
	}
	j->load_ns = now_ns() - t0;
}

static void *loader_main(void *arg)
{
	struct loader *l = arg;
	uint64_t one = 1;

	pthread_mutex_lock(&l->lock);
	for (;;) {
		struct loader_job *j;

		while (!l->todo && !l->stop)
			pthread_cond_wait(&l->cv, &l->lock);
		if (l->stop)
			break;
		j = l->todo;
		l->todo = j->next;
		if (!l->todo)
			l->todo_tail = &l->todo;
		pthread_mutex_unlock(&l->lock);

		j->next = NULL;
		loader_run(l, j);

		pthread_mutex_lock(&l->lock);
		*l->ready_tail = j;
		l->ready_tail = &j->next;
		if (write(l->efd, &one, sizeof(one)) != sizeof(one)) {
			/* Only an overflowing counter fails, and then it is readable anyway. */
		}
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

/* The doorbell: hand every finished job to the done hook. */
static void loader_on_ready(struct ev *ev, uint32_t events)
{
	struct loader *l = container_of(ev, struct loader, ev);
	struct loader_job *j;
	uint64_t n;

	(void)events;
	if (read(l->efd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_warn("loader eventfd");
	pthread_mutex_lock(&l->lock);
	j = l->ready;
	l->ready = NULL;
	l->ready_tail = &l->ready;
	pthread_mutex_unlock(&l->lock);
	while (j) {
		struct loader_job *next = j->next;

		j->next = NULL;
		l->pending--;
		l->done(l->d, j);
		j = next;
	}
}

int loader_start(struct daemon *d, loader_done_fn done)
{
	struct loader *l = calloc(1, sizeof(*l));
	int ret;

	if (!l)
		return -ENOMEM;
	l->d = d;
	l->done = done;
	l->todo_tail = &l->todo;
	l->ready_tail = &l->ready;
	l->fsuid0 = (uid_t)setfsuid(-1);
	l->fsgid0 = (gid_t)setfsgid(-1);
	l->ngroups0 = getgroups(0, NULL);
	if (l->ngroups0 < 0 || !(l->groups0 = calloc(l->ngroups0 + 1, sizeof(gid_t))) ||
	    getgroups(l->ngroups0, l->groups0) != l->ngroups0) {
		free(l->groups0);
		free(l);
		return -ENOMEM;
	}
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->cv, NULL);
	l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->efd < 0 || loop_add(&d->loop, &l->ev, l->efd, EPOLLIN, loader_on_ready) < 0) {
		ret = -errno;
		goto fail;
	}
	ret = -pthread_create(&l->th, NULL, loader_main, l);
	if (ret < 0) {
		loop_del(&d->loop, &l->ev);
		goto fail;
	}
	pthread_setname_np(l->th, "uffd-loader");	/* for ps, and tests that hold it */
	d->fds_in_use++;
	d->loader = l;
	return 0;
fail:
	if (l->efd >= 0)
		close(l->efd);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->lock);
	free(l->groups0);
	free(l);
	return ret;
}

unsigned loader_pending(const struct loader *l)
{
	return l ? l->pending : 0;
}

void loader_submit(struct loader *l, struct loader_job *j)
{
	l->pending++;
	j->next = NULL;
	pthread_mutex_lock(&l->lock);
	*l->todo_tail = j;
	l->todo_tail = &j->next;
	pthread_cond_signal(&l->cv);
	pthread_mutex_unlock(&l->lock);
}

void loader_job_free(struct daemon *d, struct loader_job *j)
{
	if (!j)
		return;
	model_free(&j->map);
	remote_free(j->rem, false);
	free(j->ps_host);
	free(j->ps_port);
	free((char *)j->tls.cacert);
	free((char *)j->tls.cacrl);
	free((char *)j->tls.cert);
	free((char *)j->tls.key);
	timage_put(d, j->img);
	if (j->dirfd >= 0) {
		close(j->dirfd);
		d->fds_in_use--;
	}
	free(j->groups);
	free(j);
}

static void free_list(struct daemon *d, struct loader_job *j)
{
	while (j) {
		struct loader_job *next = j->next;

		loader_job_free(d, j);
		j = next;
	}
}

void loader_stop(struct daemon *d)
{
	struct loader *l = d->loader;

	if (!l)
		return;
	pthread_mutex_lock(&l->lock);
	l->stop = true;
	pthread_cond_signal(&l->cv);
	pthread_mutex_unlock(&l->lock);
	pthread_join(l->th, NULL);
	loop_del(&d->loop, &l->ev);
	close(l->efd);
	d->fds_in_use--;
	free_list(d, l->todo);
	free_list(d, l->ready);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->lock);
	free(l->groups0);
	free(l);
	d->loader = NULL;
}
