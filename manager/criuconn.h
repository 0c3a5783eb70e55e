/*
 * CRIU mode's state and the restore's connection (private to criu.c and
 * criuconn.c). criuconn.c accepts the one restore connection and reads it:
 * per task an int pid, whose sender the kernel names (sender.h), then a
 * message carrying that task's uffd from the same process; each task is
 * checked and taken over (target_create) as its record completes; RSTF
 * ends the records and lets the fill start. A bad record or an early
 * hang-up breaks the restore (criu_broke). criu.c loads the images, opens
 * and closes the mode, and reports.
 */
#ifndef UFFD_CRIUCONN_H
#define UFFD_CRIUCONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>

#include "criu.h"
#include "daemon.h"
#include "loop.h"
#include "proc.h"
#include "sender.h"

/* Where the restore connection is. */
enum criu_phase {
	CP_LISTEN,	/* waiting for the restore to connect */
	CP_RECORDS,	/* reading pid (+ uffd) records */
	CP_RSTF,	/* every task handed over: the next word must be RSTF */
	CP_FINISHED,	/* RSTF read: only EOF may follow */
	CP_BROKEN,	/* closed before RSTF, or a bad record */
};
enum ctask_state {
	CT_WAITING,	/* no record yet */
	CT_ZOMBIE,	/* a negative pid: nothing to serve */
	CT_SERVING,
	CT_ENDED,
};

/* One task of pstree.img. */
struct criu_task {
	pid_t pid;		/* from the message: its pid in its own namespace, the image id */
	pid_t host;		/* the kernel's: the sender of its record, in ours; 0 until then */
	struct timage *img;	/* its images; no mm or pagemap for a zombie at dump time */
	uint64_t lazy;		/* pages to serve, from the images */
	enum ctask_state state;
	uint64_t target_id;	/* while serving */
	enum target_end end;
	uint64_t left;		/* pages not served when it ended */
	char why[64];		/* how it ended, when not fully served */
};

struct criu {
	struct daemon *d;
	struct criu_opts o;
	int dirfd;
	char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct ev listen_ev;
	int listen_fd;
	struct ev conn_ev;
	int conn_fd;
	enum criu_phase phase;
	uint8_t word[4];	/* the int being read */
	size_t have;
	struct criu_task *want_fd;	/* read its pid; its uffd comes next */
	bool pidfds;			/* the kernel names senders with SCM_PIDFD */
	bool no_pidfds;			/* UFFD_MANAGER_NO_SCM_PIDFD: use SCM_CREDENTIALS */
	struct sender word_from;	/* the sender of the pid word (kept until its uffd came) */
	struct criu_task *tasks;
	size_t nr_tasks;
	size_t nr_records;	/* records read, zombies included */
	unsigned forks_failed;
	uint64_t t_accept, t_rstf, t_last;
	char broke[512];	/* why the restore failed, for the last word */
};

/* The task of pstree.img with image pid PID, or NULL. */
struct criu_task *criu_task_find(struct criu *c, long pid);

/*
 * The restore broke (bad record, or the connection closed before RSTF):
 * say why (printf-like), take nothing more from it; see criuconn.c.
 */
void criu_broke(struct criu *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Close the restore's connection, if open. */
void criu_close_conn(struct criu *c);

/* Stop listening on lazy-pages.socket and remove it. */
void criu_stop_listening(struct criu *c);

/* The listening socket's handler: take the one restore connection. */
void criu_on_accept(struct ev *ev, uint32_t events);

#endif
