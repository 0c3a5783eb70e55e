/*
 * The loader: one thread that reads a hand-over's images and builds its
 * memory model, so that the event loop (and the faults of every process
 * already served) never waits on a client's images, however large or slow.
 *
 * The loop submits a job and goes on; the thread reads the images with the
 * client's credentials (fsuid, fsgid and groups of the socket peer: the
 * kernel's permission checks apply as if the client opened each file), builds
 * the model, and queues the job back; the loop finds it through an eventfd
 * and calls the done hook, which adopts the model (target_adopt) or drops it.
 * Jobs run one at a time, in order.
 */
#ifndef UFFD_LOADER_H
#define UFFD_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon.h"
#include "model.h"
#include "tls.h"
#include "proc.h"

struct loader_job {
	struct loader_job *next;
	void *owner;		/* the loop's: who waits (NULL once it has gone) */
	/* In: what to load, as whom. */
	int dirfd;		/* the job's until it is done; then the images' */
	uint32_t image_id;
	bool remote;
	size_t max_entries;	/* pagemap entries, 0: no limit */
	unsigned load_flags;	/* IMG_LOAD_* */
	uid_t uid;
	gid_t gid;
	gid_t *groups;		/* supplementary groups, malloc'd */
	size_t ngroups;
	char *ps_host, *ps_port;	/* HELLO's page server (malloc'd), or NULL: connected as the client */
	struct tls_opts tls;	/* its TLS options (paths malloc'd), read as the client */
	/* Out. */
	int ret;		/* 0, or -errno with REASON filled */
	char reason[512];
	struct timage *img;	/* one reference, owning DIRFD */
	struct model map;	/* built from IMG, for target_adopt */
	struct remote *rem;	/* with ps_host: the connection, not yet in the loop */
	uint64_t load_ns;	/* time the thread spent on it */
};

/* Called on the loop for each job that is done; it owns the job from then on. */
typedef void (*loader_done_fn)(struct daemon *d, struct loader_job *j);

struct loader;

/* Start the thread and watch its eventfd in D's loop; sets d->loader. 0 or -errno. */
int loader_start(struct daemon *d, loader_done_fn done);

/* Queue J (its DIRFD counted in d->fds_in_use by the caller). */
void loader_submit(struct loader *l, struct loader_job *j);

/* Jobs submitted and not yet given back to the done hook. */
unsigned loader_pending(const struct loader *l);

/* Free J and whatever it still holds (images, model, dirfd). On the loop only. */
void loader_job_free(struct daemon *d, struct loader_job *j);

/* Stop the thread (after the job it is on) and free every job left. */
void loader_stop(struct daemon *d);

#endif
