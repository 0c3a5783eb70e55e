/* Follow forks and exits through the proc connector, with libnl-3. */
#include <errno.h>
#include <inttypes.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/kcmp.h>
#include <linux/netlink.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "proc.h"
#include "procconn.h"
#include "target.h"

struct procconn {
	struct daemon *d;
	struct nl_sock *sk;
	struct ev ev;
	uint64_t events;
	uint64_t forks, exits, other;	/* of the events: other, neither fork nor exit */
};

/*
 * Kernels from 6.6 take an event mask with PROC_CN_MCAST_LISTEN (their
 * struct proc_input, which older uapi headers lack): only the listed events
 * are sent to this socket.
 */
struct procconn_input {
	uint32_t mcast_op;	/* enum proc_cn_mcast_op */
	uint32_t event_type;	/* enum proc_cn_event: a mask */
};

/* Does CHILD share PARENT's memory (vfork, posix_spawn, CLONE_VM)? Unknown counts as no. */
static bool shares_mm(pid_t parent, pid_t child)
{
	return syscall(SYS_kcmp, parent, child, KCMP_VM, 0, 0) == 0;
}

/*
 * A fork by PARENT: the oldest child of PARENT whose pid is unknown gets
 * CHILD, as a guess (proc.h: pid_confirmed). Nothing ties the event to a
 * uffd: a child that shares PARENT's memory made no FORK event (its uffd is
 * PARENT's), and a pid another target holds is not this one's.
 */
static void on_fork(struct daemon *d, pid_t parent, pid_t child)
{
	struct target *t, *oldest = NULL;

	/* The list is newest first; the FORK events of one parent arrive in fork order. */
	for (t = d->targets; t; t = t->next) {
		if (t->pid == child && !t->dead)
			return;
		if (!t->pid && t->parent_pid == parent && !t->dead && !t->pid_from_fault_only)
			oldest = t;
	}
	if (!oldest)
		return;
	if (shares_mm(parent, child)) {
		log_debug("proc connector: child %d of %d shares its memory (vfork): not a forked process of ours",
			  child, parent);
		return;
	}
	target_set_pid(oldest, child, false);
}

static void on_exit_(struct daemon *d, pid_t pid)
{
	struct target *t, *next;

	for (t = d->targets; t; t = next) {
		next = t->next;
		if (t->pid == pid && t->pidfd < 0 && !t->dead) {
			target_pid_exited(t);
		}
	}
}

static int on_msg(struct nl_msg *msg, void *arg)
{
	struct procconn *pc = arg;
	struct nlmsghdr *nh = nlmsg_hdr(msg);
	struct cn_msg *cn;
	struct proc_event evbuf, *ev = &evbuf;

	if (nh->nlmsg_len < NLMSG_HDRLEN + sizeof(*cn) + sizeof(*ev))
		return NL_SKIP;
	cn = nlmsg_data(nh);
	if (cn->id.idx != CN_IDX_PROC || cn->id.val != CN_VAL_PROC ||
	    cn->len < sizeof(*ev))
		return NL_SKIP;
	/* The payload is only 4-byte aligned; struct proc_event wants 8. */
	memcpy(&evbuf, cn->data, sizeof(evbuf));
	if (ev->what == PROC_EVENT_NONE)
		return NL_SKIP;	/* the kernel's answer to a PROC_CN_MCAST_* message */
	pc->events++;
	switch (ev->what) {
	case PROC_EVENT_FORK:
		pc->forks++;
		/* A new process, not a thread: its own thread group. */
		if (ev->event_data.fork.child_pid == ev->event_data.fork.child_tgid &&
		    ev->event_data.fork.child_tgid != ev->event_data.fork.parent_tgid)
			on_fork(pc->d, ev->event_data.fork.parent_tgid,
				ev->event_data.fork.child_tgid);
		break;
	case PROC_EVENT_EXIT:
		pc->exits++;
		if (ev->event_data.exit.process_pid == ev->event_data.exit.process_tgid)
			on_exit_(pc->d, ev->event_data.exit.process_tgid);
		break;
	default:
		pc->other++;
		break;
	}
	return NL_SKIP;
}

static void procconn_on_read(struct ev *e, uint32_t events)
{
	struct procconn *pc = container_of(e, struct procconn, ev);
	int ret;

	(void)events;
	do
		ret = nl_recvmsgs_default(pc->sk);
	while (ret >= 0);
	if (ret != -NLE_AGAIN && ret != -NLE_NOMEM)
		log_debug("proc connector: %s", nl_geterror(ret));
}

/* Ask the kernel to start (or stop) sending us process events. */
static int mcast(struct procconn *pc, enum proc_cn_mcast_op op)
{
	struct {
		struct cn_msg cn;
		enum proc_cn_mcast_op op;
	} __attribute__((packed)) m;

	memset(&m, 0, sizeof(m));
	m.cn.id.idx = CN_IDX_PROC;
	m.cn.id.val = CN_VAL_PROC;
	m.cn.len = sizeof(m.op);
	m.op = op;
	return nl_send_simple(pc->sk, NLMSG_DONE, 0, &m, sizeof(m));
}

/*
 * Ask for forks and exits only, once listening: every other process event
 * of the machine (exec, comm, uid, ...) would wake the loop for nothing. A
 * kernel before 6.6 ignores a message of this size (it wants the op alone),
 * and goes on sending everything, as the LISTEN before asked.
 */
static int mcast_filter(struct procconn *pc)
{
	struct {
		struct cn_msg cn;
		struct procconn_input in;
	} __attribute__((packed)) m;

	memset(&m, 0, sizeof(m));
	m.cn.id.idx = CN_IDX_PROC;
	m.cn.id.val = CN_VAL_PROC;
	m.cn.len = sizeof(m.in);
	m.in.mcast_op = PROC_CN_MCAST_LISTEN;
	m.in.event_type = PROC_EVENT_FORK | PROC_EVENT_EXIT;
	return nl_send_simple(pc->sk, NLMSG_DONE, 0, &m, sizeof(m));
}

struct procconn *procconn_open(struct daemon *d)
{
	struct procconn *pc = calloc(1, sizeof(*pc));
	int ret;

	if (!pc)
		return NULL;
	pc->d = d;
	pc->sk = nl_socket_alloc();
	if (!pc->sk)
		goto fail;
	nl_socket_disable_seq_check(pc->sk);
	nl_socket_disable_auto_ack(pc->sk);
	nl_socket_modify_cb(pc->sk, NL_CB_MSG_IN, NL_CB_CUSTOM, on_msg, pc);
	ret = nl_connect(pc->sk, NETLINK_CONNECTOR);
	if (ret == 0)
		ret = nl_socket_add_membership(pc->sk, CN_IDX_PROC);
	if (ret == 0)
		ret = nl_socket_set_nonblocking(pc->sk);
	if (ret == 0)
		ret = nl_socket_set_buffer_size(pc->sk, 1 << 20, 0);
	if (ret == 0)
		ret = mcast(pc, PROC_CN_MCAST_LISTEN) < 0 ? -NLE_FAILURE : 0;
	if (ret == 0 && mcast_filter(pc) < 0)
		log_debug("proc connector: cannot ask for forks and exits only: every process event comes");
	if (ret < 0) {
		log_warnx("proc connector unavailable (%s): forked children's pids come from their first fault",
			  nl_geterror(ret));
		goto fail;
	}
	if (loop_add(&d->loop, &pc->ev, nl_socket_get_fd(pc->sk), EPOLLIN, procconn_on_read) < 0)
		goto fail;
	return pc;
fail:
	if (pc->sk)
		nl_socket_free(pc->sk);
	free(pc);
	return NULL;
}

void procconn_close(struct procconn *pc)
{
	if (!pc)
		return;
	loop_del(&pc->d->loop, &pc->ev);
	log_debug("proc connector: %" PRIu64 " events: %" PRIu64 " forks, %" PRIu64 " exits, %"
		  PRIu64 " other (only a kernel before 6.6 sends those)", pc->events, pc->forks,
		  pc->exits, pc->other);
	mcast(pc, PROC_CN_MCAST_IGNORE);
	nl_socket_free(pc->sk);
	free(pc);
}
