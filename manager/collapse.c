/* Huge pages back: MADV_COLLAPSE of fully served blocks, off the loop (collapse.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "collapse.h"
#include "daemon.h"
#include "log.h"
#include "model.h"
#include "proc.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE	25
#endif

#define THP_ENABLED	"/sys/kernel/mm/transparent_hugepage/enabled"
#define MAX_BLOCKS	(1u << 20)	/* per process: 2 TiB of lazy memory */

struct collapse_job {
	struct collapse_job *next;
	int pidfd;			/* the job's own */
	char pfx[64];			/* the process, for the log */
	size_t n;
	uint64_t blocks[];
};

struct collapser {
	pthread_t th;
	pthread_mutex_t lock;		/* guards todo and stop */
	pthread_cond_t cv;
	struct collapse_job *todo, **tail;
	atomic_bool stop;
	atomic_bool refused;		/* EPERM once: no CAP_SYS_NICE; stop asking */
	atomic_uint_fast64_t collapsed, failed;
};

enum thp_mode collapse_parse_mode(const char *text)
{
	if (strstr(text, "[always]"))
		return THP_ALWAYS;
	if (strstr(text, "[madvise]"))
		return THP_MADVISE;
	return THP_NEVER;
}

static enum thp_mode read_mode(void)
{
	char buf[128];
	ssize_t n;
	int fd = open(THP_ENABLED, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return THP_NEVER;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return THP_NEVER;
	buf[n] = '\0';
	return collapse_parse_mode(buf);
}

size_t collapse_blocks(uint64_t start, uint64_t end, uint32_t vmflags, enum thp_mode mode,
		       uint64_t *out, size_t max)
{
	uint64_t a = (start + COLLAPSE_BLOCK - 1) & ~(COLLAPSE_BLOCK - 1);
	size_t n = 0;

	if (mode == THP_NEVER || (mode == THP_MADVISE && !(vmflags & PFV_HG)) ||
	    (vmflags & (PFV_NH | PFV_SH | PFV_HT | PFV_IO | PFV_PF)))
		return 0;
	for (; a >= start && a < end && end - a >= COLLAPSE_BLOCK && n < max; a += COLLAPSE_BLOCK)
		out[n++] = a;
	return n;
}

/* Collapse one job's blocks, one call each so that one refusal costs one block. */
static void run_job(struct collapser *c, struct collapse_job *j)
{
	size_t ok = 0, bad = 0;
	int first_err = 0;

	for (size_t i = 0; i < j->n && !atomic_load(&c->refused) && !atomic_load(&c->stop); i++) {
		struct iovec iov = { (void *)(uintptr_t)j->blocks[i], COLLAPSE_BLOCK };
		ssize_t r = syscall(SYS_process_madvise, j->pidfd, &iov, 1, MADV_COLLAPSE, 0);

		if (r == (ssize_t)COLLAPSE_BLOCK) {
			ok++;
			continue;
		}
		if (errno == ESRCH)
			break;		/* it has exited */
		if (errno == EPERM) {
			atomic_store(&c->refused, true);
			log_warnx("MADV_COLLAPSE of %s refused (EPERM: process_madvise needs "
				  "CAP_SYS_NICE): no huge pages are made again for any process",
				  j->pfx);
			break;
		}
		/* EINVAL: the block is no longer one THP-able VMA; EAGAIN, ENOMEM: no huge page now. */
		if (!first_err)
			first_err = errno;
		bad++;
	}
	atomic_fetch_add(&c->collapsed, ok);
	atomic_fetch_add(&c->failed, bad);
	if (bad)
		log_debug("%s %zu of %zu 2 MiB blocks collapsed into huge pages (%zu not: first %s)",
			  j->pfx, ok, j->n, bad, strerror(first_err));
	else
		log_debug("%s %zu of %zu 2 MiB blocks collapsed into huge pages", j->pfx, ok, j->n);
}

static void *collapse_main(void *arg)
{
	struct collapser *c = arg;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		struct collapse_job *j;

		while (!c->todo && !c->stop)
			pthread_cond_wait(&c->cv, &c->lock);
		if (c->stop)
			break;
		j = c->todo;
		c->todo = j->next;
		if (!c->todo)
			c->tail = &c->todo;
		pthread_mutex_unlock(&c->lock);
		run_job(c, j);
		close(j->pidfd);
		free(j);
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

static struct collapser *collapser_get(struct daemon *d)
{
	struct collapser *c = d->collapse;

	if (c)
		return c;
	if (!(c = calloc(1, sizeof(*c))))
		return NULL;
	c->tail = &c->todo;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cv, NULL);
	if (pthread_create(&c->th, NULL, collapse_main, c)) {
		log_warnx("cannot start the huge-page thread: no huge pages are made");
		pthread_cond_destroy(&c->cv);
		pthread_mutex_destroy(&c->lock);
		free(c);
		d->o.no_collapse = true;
		return NULL;
	}
	d->collapse = c;
	return c;
}

/* Did the process turn THP off (PR_SET_THP_DISABLE)? */
static bool thp_disabled(pid_t pid)
{
	char path[64];
	long long v;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	return procfs_field_num(path, "THP_enabled", &v) == 0 && v == 0;
}

void collapse_target(struct daemon *d, struct target *t, const struct procfs_maps *m)
{
	enum thp_mode mode;
	struct collapser *c;
	struct collapse_job *j;
	size_t max = 0, n = 0;
	struct area *v;

	if (d->o.no_collapse || t->pidfd < 0 || !t->pid || (d->collapse && d->collapse->refused))
		return;
	mode = read_mode();
	if (mode == THP_NEVER || thp_disabled(t->pid))
		return;
	for (v = model_first(&t->map, 0); v; v = model_next(&t->map, v))
		max += (v->end - v->start) / COLLAPSE_BLOCK;
	if (!max)
		return;
	if (max > MAX_BLOCKS)
		max = MAX_BLOCKS;
	if (!(j = malloc(sizeof(*j) + max * sizeof(uint64_t))))
		return;
	for (size_t i = 0; i < m->n && n < max; i++) {
		const struct procfs_vma *vma = &m->v[i];

		for (v = model_first(&t->map, vma->start); v && v->start < vma->end && n < max;
		     v = model_next(&t->map, v)) {
			uint64_t s = v->start > vma->start ? v->start : vma->start;
			uint64_t e = v->end < vma->end ? v->end : vma->end;

			/* Shared memory's pages are its object's, under another THP policy. */
			if (s < e && !v->shared)
				n += collapse_blocks(s, e, vma->vmflags, mode, j->blocks + n, max - n);
		}
	}
	j->n = n;
	j->pidfd = n ? fcntl(t->pidfd, F_DUPFD_CLOEXEC, 0) : -1;
	if (!n || j->pidfd < 0 || !(c = collapser_get(d))) {
		if (j->pidfd >= 0)
			close(j->pidfd);
		free(j);
		return;
	}
	snprintf(j->pfx, sizeof(j->pfx), "%s", t->pfx);
	j->next = NULL;
	pthread_mutex_lock(&c->lock);
	*c->tail = j;
	c->tail = &j->next;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->lock);
}

void collapse_stop(struct daemon *d)
{
	struct collapser *c = d->collapse;

	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stop = true;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->th, NULL);
	while (c->todo) {
		struct collapse_job *j = c->todo;

		c->todo = j->next;
		close(j->pidfd);
		free(j);
	}
	if (c->collapsed || c->failed)
		log_info("huge pages: %" PRIu64 " 2 MiB blocks collapsed, %" PRIu64 " not",
			 (uint64_t)c->collapsed, (uint64_t)c->failed);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->lock);
	free(c);
	d->collapse = NULL;
}
