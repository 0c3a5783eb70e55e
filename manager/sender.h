/*
 * Who a process is, from the kernel rather than from a message: the sender
 * of a unix-socket message (SCM_PIDFD, or SCM_CREDENTIALS where the kernel
 * lacks it), and whether a pidfd names a whole process or one thread.
 *
 * A pid written in a message is a number in the sender's pid namespace;
 * these are numbers and pidfds in ours.
 */
#ifndef UFFD_SENDER_H
#define UFFD_SENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifndef SO_PASSPIDFD
#define SO_PASSPIDFD	76	/* Linux 6.5 */
#endif
#ifndef SCM_PIDFD
#define SCM_PIDFD	0x04
#endif

/* What the kernel said about the sender of one message. */
struct sender {
	int pidfd;		/* SCM_PIDFD: ours to close; -1 if none came */
	int pidfd_err;		/* a negative value in its place: the kernel could not make one */
	bool has_cred;
	struct ucred cred;	/* SCM_CREDENTIALS: pid in our namespace, 0 if not visible */
};

/* Room for both kinds of sender control message, beside others. */
#define SENDER_CMSG_SPACE	(CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(struct ucred)))

/*
 * Ask the kernel to name the sender of every message on the unix socket FD:
 * SO_PASSPIDFD, or SO_PASSCRED when it lacks that (*PIDFDS false then) or
 * when NO_PIDFD asks for the fallback. 0 or -errno.
 */
int sender_enable(int fd, bool no_pidfd, bool *pidfds);

/* Start S empty. */
void sender_init(struct sender *s);

/* Take the sender's part of control message CM, if it is one; true if it was. */
bool sender_take(struct sender *s, const struct cmsghdr *cm);

/* Close what S holds and empty it. */
void sender_clear(struct sender *s);

/*
 * Turn S into a pidfd of the sending process (*PIDFD, the caller's) and its
 * pid in our namespace. With SCM_PIDFD the pidfd is the kernel's own; with
 * SCM_CREDENTIALS it is opened from the pid and checked (a process, uid).
 * 0, or -errno with WHY filled.
 */
int sender_pidfd(struct sender *s, int *pidfd, pid_t *pid, char *why, size_t len);

/*
 * Check that PIDFD names a live thread-group leader (a process), not one
 * thread of it (a PIDFD_THREAD pidfd of another thread): *PID is its pid in
 * our namespace. 0; -ESRCH if it exited; -EINVAL with WHY filled if it
 * names a thread (*PID is then the thread's id) or cannot be read.
 */
int sender_check_process(int pidfd, pid_t *pid, char *why, size_t len);

/*
 * The pid of PID (ours) inside its own innermost pid namespace: the last
 * number of NSpid in /proc/PID/status, which is what a process restored
 * into a pid namespace calls itself. >0, or -errno.
 */
pid_t sender_inner_pid(pid_t pid);

#endif
