/*
 * criu-sim: play the restore side of `criu restore --lazy-pages` against
 * the lazy-pages daemon, with the tasks of a real CRIU image dir.
 *
 *   criu-sim -D IMGDIR [-W WORKDIR] [--zombie PID] [--fork-remap PID]
 *            [--drop-after N] [--hold] [--read-delay MS]
 *            [--pattern PID:ADDR:LEN:SEED[:WORD0]]...
 *
 * For each task of pstree.img a child is created under the task's own pid
 * (clone3 with set_tid, as criu does), re-executes itself without address
 * randomization so that its own mappings stay clear of the dump's, maps the
 * task's lazy VMAs at their addresses and creates a userfaultfd with the four
 * event features. The main process connects to the daemon and passes the
 * connection down to each task in turn; each task sends its own record, as
 * criu's restorer does from inside the restored process, in criu's framing:
 * an int pid and a one-byte message carrying the uffd (a zombie's record,
 * a negative pid with nothing after it, is sent by the main process). Then
 * it tells each child to register its ranges and to start reading, and
 * sends RSTF.
 * Each child reads every page of its lazy VMAs and compares it with the
 * images (pages-N.img read on its own, the offset found through the
 * pagemap), and the lazyapp pattern where --pattern says.
 *
 * --zombie PID      send PID as a zombie (-PID) and start no child for it
 * --fork-remap PID  that task forks and moves its largest lazy VMA (mremap),
 *                   drops 64 KiB of it (MADV_DONTNEED), and both check it all
 * --drop-after N    close the connection after N records, without RSTF;
 *                   tasks whose records were not sent exit without reading
 * --hold            send every record but no RSTF, and keep the connection
 *                   open until the tasks are done (a restore that hangs)
 * --pattern ...     the words of [ADDR, ADDR+LEN) of task PID are lazyapp's
 *                   pattern for SEED, from word index WORD0 (default 0)
 * --read-delay MS   children wait MS after the word to go before reading
 * --pidns           restore into a new pid namespace, as for a container:
 *                   the tasks get their image pids inside it (the first
 *                   task of pstree.img must be pid 1) and other numbers
 *                   outside; pid 1 lives until every other task is done
 * --wrong-sender PID the main process sends task PID's pid word itself (the
 *                   task sends its uffd): the daemon must refuse the record
 *
 * Prints "sim: ..." figures on stdout; exits 0 when every child saw the
 * right bytes. Holds a lock file for its whole run, the pids being global,
 * unless it makes its own pid namespace.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/sched.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "imgfix.h"
#include "imgtask.h"

#define PG		4096ull
#define RSTF		0x52535446u
#define MAX_PATTERNS	16
#define MAX_LAZY	64
#define LOCK_PATH	"/tmp/uffd-criu-sim.lock"
#define CTL_TIMEOUT_MS	20000

struct pattern {
	long pid;
	uint64_t addr, len, seed;
	uint64_t w0;		/* index of the word at ADDR */
};

struct sim_opts {
	const char *imgdir;
	const char *workdir;
	long zombie;
	long fork_remap;
	long drop_after;	/* -1: never */
	long read_delay_ms;
	long wrong_sender;
	bool hold;
	bool pidns;
	struct pattern pat[MAX_PATTERNS];
	int npat;
};

/* One task as the main process sees it. */
struct sim_task {
	pid_t pid;		/* its image pid: its pid in its own namespace */
	pid_t host;		/* its pid in ours */
	bool zombie;
	int ctl;		/* our end of the control socket */
	bool sent;		/* its record went to the daemon */
};

/* A lazy VMA of the task, in a child. */
struct lazy_vma {
	uint64_t start, end;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "criu-sim[%d]: ", getpid());
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(3);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "criu-sim[%d]: ", getpid());
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Send one byte of control, with FD attached if >= 0. */
static int ctl_send(int sk, char c, int fd)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (fd >= 0) {
		struct cmsghdr *cm;

		memset(&cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf.b;
		mh.msg_controllen = sizeof(cbuf.b);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	return sendmsg(sk, &mh, MSG_NOSIGNAL) == 1 ? 0 : -1;
}

/* Wait for one byte of control (and the fd it carries); '\0' on EOF or timeout. */
static char ctl_recv(int sk, int *fd)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct pollfd p = { .fd = sk, .events = POLLIN };
	char c = 0;
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf.b, .msg_controllen = sizeof(cbuf.b),
	};
	struct cmsghdr *cm;

	if (fd)
		*fd = -1;
	if (poll(&p, 1, CTL_TIMEOUT_MS) != 1 || recvmsg(sk, &mh, MSG_CMSG_CLOEXEC) != 1)
		return 0;
	cm = CMSG_FIRSTHDR(&mh);
	if (fd && cm && cm->cmsg_type == SCM_RIGHTS)
		memcpy(fd, CMSG_DATA(cm), sizeof(int));
	return c;
}

/* ---- the child: one restored task ---- */

struct child {
	uint32_t pid;
	int ctl;
	int pages_fd;
	struct img_task task;
	struct pages_cache cache;
	struct lazy_vma lv[MAX_LAZY];
	int nlv;
	bool fork_remap;
	bool pidns_init;	/* pid 1 of the namespace the sim made */
	long read_delay_ms;
	struct pattern pat[MAX_PATTERNS];
	int npat;
};

/* The VMAs of the task that hold PE_LAZY pages (criu maps and registers these). */
static void find_lazy_vmas(struct child *ch)
{
	const MmEntry *mm = ch->task.mm;

	for (size_t i = 0; i < mm->n_vmas; i++) {
		const VmaEntry *v = mm->vmas[i];
		bool lazy = false;

		for (uint64_t a = v->start; a < v->end && !lazy;) {
			struct pm_run run;

			pagemap_resolve(ch->task.pm, a, v->end - a, &run);
			lazy = run.flags & PE_LAZY;
			a += run.len;
		}
		if (!lazy)
			continue;
		if (!(v->status & VMA_ANON_PRIVATE))
			die("pid %u: lazy pages in 0x%" PRIx64 "-0x%" PRIx64 ", not anonymous private",
			    ch->pid, v->start, v->end);
		if (ch->nlv == MAX_LAZY)
			die("pid %u: more than %d lazy VMAs", ch->pid, MAX_LAZY);
		ch->lv[ch->nlv++] = (struct lazy_vma){ v->start, v->end };
	}
}

/* Print what of our own address space lies in [START, END): the clash. */
static void show_clash(uint64_t start, uint64_t end)
{
	char line[512];
	FILE *f = fopen("/proc/self/maps", "r");

	while (f && fgets(line, sizeof(line), f)) {
		unsigned long long a, b;

		if (sscanf(line, "%llx-%llx", &a, &b) == 2 && a < end && b > start)
			fprintf(stderr, "  clash: %s", line);
	}
	if (f)
		fclose(f);
}

/* Read the image bytes of the page at image address IMG into BUF; false for a hole. */
static bool image_page(struct child *ch, uint64_t img, uint8_t *buf)
{
	struct pm_run run;

	pagemap_resolve(ch->task.pm, img, PG, &run);
	if (run.src == PM_HOLE)
		return false;
	if (run.src != PM_DATA || run.pf != ch->task.pm->pages)
		die("pid %u: page 0x%" PRIx64 " has no data in pages-%u.img (parent images are not simulated)",
		    ch->pid, img, ch->task.pm->pages_id);
	if (pread(ch->pages_fd, buf, PG, (off_t)run.off) != (ssize_t)PG)
		die("pid %u: pread pages-%u.img at %" PRIu64 ": %s", ch->pid, ch->task.pm->pages_id,
		    run.off, strerror(errno));
	return true;
}

/* Map the lazy VMAs where the dump had them, and put in their non-lazy pages (criu restores those eagerly). */
static void map_vmas(struct child *ch)
{
	uint8_t buf[PG];

	for (int i = 0; i < ch->nlv; i++) {
		uint64_t s = ch->lv[i].start, len = ch->lv[i].end - s;
		void *p = mmap((void *)(uintptr_t)s, len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

		if (p != (void *)(uintptr_t)s) {
			show_clash(s, s + len);
			die("pid %u: cannot map lazy VMA 0x%" PRIx64 "-0x%" PRIx64 " at its address: %s",
			    ch->pid, s, s + len, p == MAP_FAILED ? strerror(errno) : "moved");
		}
		for (uint64_t a = s; a < s + len; a += PG) {
			const struct pm_entry *e = pagemap_find(ch->task.pm, a);

			if (e && !(e->flags & PE_LAZY) && image_page(ch, a, buf))
				memcpy((void *)(uintptr_t)a, buf, PG);
		}
	}
}

static int make_uffd(void)
{
	struct uffdio_api api = {
		.api = UFFD_API,
		/* What criu asks for when the kernel has them. */
		.features = UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |
			    UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMOVE,
	};
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) < 0)
		die("userfaultfd: %s", strerror(errno));
	return uffd;
}

static void register_vmas(struct child *ch, int uffd)
{
	for (int i = 0; i < ch->nlv; i++) {
		struct uffdio_register r = {
			.range = { .start = ch->lv[i].start, .len = ch->lv[i].end - ch->lv[i].start },
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};

		if (ioctl(uffd, UFFDIO_REGISTER, &r) < 0)
			die("pid %u: UFFDIO_REGISTER 0x%" PRIx64 ": %s", ch->pid, ch->lv[i].start,
			    strerror(errno));
	}
}

/* Touch every page of [S, E) in a scattered order, so that faults land all over. */
static void touch_scattered(uint64_t s, uint64_t e)
{
	uint64_t np = (e - s) / PG;

	for (uint64_t k = 0; k < np; k++)
		(void)*(volatile uint8_t *)(uintptr_t)(s + ((k * 7919) % np) * PG);
}

/*
 * Compare [ADDR, ADDR+LEN), which holds image addresses from IMG on, with
 * the images, page by page. ZERO_TO: image addresses below it must read zero
 * (dropped). Returns the pages that differ.
 */
static long check_range(struct child *ch, uint64_t addr, uint64_t len, uint64_t img,
			uint64_t zero_to, uint64_t *data)
{
	static const uint8_t zero[PG];
	uint8_t want[PG];
	long bad = 0;

	for (uint64_t off = 0; off < len; off += PG) {
		const uint8_t *got = (const uint8_t *)(uintptr_t)(addr + off);
		bool has = img + off >= zero_to && image_page(ch, img + off, want);

		if (!memcmp(got, has ? want : zero, PG)) {
			*data += has;
			continue;
		}
		if (bad++ < 3)
			say("pid %u: page 0x%" PRIx64 " (image 0x%" PRIx64 ") differs from %s",
			    ch->pid, addr + off, img + off, has ? "the image" : "zero");
	}
	return bad;
}

/* Check the lazyapp pattern of every --pattern region, found DELTA bytes from where it was when in [MS, ME). */
static long check_patterns(struct child *ch, uint64_t ms, uint64_t me, int64_t delta)
{
	long bad = 0;

	for (int i = 0; i < ch->npat; i++) {
		const struct pattern *p = &ch->pat[i];
		uint64_t base = p->addr + (p->addr >= ms && p->addr < me ? delta : 0);

		for (uint64_t w = 0; w < p->len / 8; w++) {
			uint64_t got = *(volatile uint64_t *)(uintptr_t)(base + w * 8);

			if (got != fix_pat(p->seed, p->w0 + w) && bad++ < 3)
				say("pid %u: lazyapp pattern (seed 0x%" PRIx64 ") wrong at word %" PRIu64,
				    ch->pid, p->seed, w);
		}
	}
	return bad;
}

/* Read and check every lazy VMA in place. */
static long check_all(struct child *ch, uint64_t *data)
{
	long bad = 0;

	for (int i = 0; i < ch->nlv; i++)
		touch_scattered(ch->lv[i].start, ch->lv[i].end);
	for (int i = 0; i < ch->nlv; i++)
		bad += check_range(ch, ch->lv[i].start, ch->lv[i].end - ch->lv[i].start,
				   ch->lv[i].start, 0, data);
	return bad + check_patterns(ch, 0, 0, 0);
}

/*
 * The process forks after the restore: half of the largest VMA is read
 * first; the child checks everything; the parent moves that VMA (mremap),
 * drops its first 64 KiB (MADV_DONTNEED: zero from then on) and checks it all.
 */
static long fork_remap(struct child *ch, uint64_t *data)
{
	struct lazy_vma *big = &ch->lv[0];
	uint64_t len, drop = 64 << 10;
	long bad = 0;
	void *dst;
	pid_t kid;
	int st;

	for (int i = 1; i < ch->nlv; i++)
		if (ch->lv[i].end - ch->lv[i].start > big->end - big->start)
			big = &ch->lv[i];
	len = big->end - big->start;
	bad += check_range(ch, big->start, len / 2, big->start, 0, data);
	kid = fork();
	if (kid < 0)
		die("fork: %s", strerror(errno));
	if (kid == 0) {
		uint64_t d = 0;

		_exit(check_all(ch, &d) ? 1 : 0);
	}
	dst = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (dst == MAP_FAILED ||
	    mremap((void *)(uintptr_t)big->start, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dst) != dst)
		die("mremap: %s", strerror(errno));
	if (madvise(dst, drop, MADV_DONTNEED) < 0)
		die("madvise: %s", strerror(errno));
	touch_scattered((uintptr_t)dst, (uintptr_t)dst + len);
	bad += check_range(ch, (uintptr_t)dst, len, big->start, big->start + drop, data);
	for (int i = 0; i < ch->nlv; i++)
		if (&ch->lv[i] != big)
			bad += check_range(ch, ch->lv[i].start, ch->lv[i].end - ch->lv[i].start,
					   ch->lv[i].start, 0, data);
	/* The pattern of the dropped part is gone: check only what follows it. */
	for (int i = 0; i < ch->npat; i++)
		if (ch->pat[i].addr == big->start && ch->pat[i].len > drop) {
			ch->pat[i].addr += drop;
			ch->pat[i].len -= drop;
			ch->pat[i].w0 += drop / 8;
		}
	bad += check_patterns(ch, big->start, big->end, (int64_t)((uintptr_t)dst - big->start));
	if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st)) {
		say("pid %u: its forked child saw wrong memory (status 0x%x)", ch->pid, st);
		bad++;
	}
	return bad;
}

/* The restored task: map, hand the uffd up, register when told, read when told. */
static int run_child(struct child *ch, const char *imgdir)
{
	struct img_err err;
	uint64_t data = 0, t0;
	char name[64], c;
	long bad;
	int dirfd, uffd, sk = -1;

	dirfd = open(imgdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0 || img_task_load(&ch->task, dirfd, ch->pid, &ch->cache, &err) < 0)
		die("pid %u: %s", ch->pid, dirfd < 0 ? strerror(errno) : err.msg);
	snprintf(name, sizeof(name), "pages-%u.img", ch->task.pm->pages_id);
	ch->pages_fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (ch->pages_fd < 0)
		die("%s: %s", name, strerror(errno));
	find_lazy_vmas(ch);
	map_vmas(ch);
	uffd = make_uffd();
	if (ctl_send(ch->ctl, 'U', -1) < 0)
		die("pid %u: saying it is ready: %s", ch->pid, strerror(errno));
	c = ctl_recv(ch->ctl, &sk);
	if (c == 'S' || c == 'W') {
		/* Our own record, on the restore's connection: pid ('W': sent by main), then uffd. */
		int pid = (int)ch->pid;

		if (sk < 0 || (c == 'S' && send(sk, &pid, sizeof(pid), MSG_NOSIGNAL) != sizeof(pid)) ||
		    ctl_send(sk, 0, uffd) < 0)
			die("pid %u: sending its record: %s", ch->pid, strerror(errno));
		close(sk);
		if (ctl_send(ch->ctl, 's', -1) < 0)
			die("pid %u: saying its record is sent", ch->pid);
		c = ctl_recv(ch->ctl, NULL);
	}
	if (c == 'X')
		_exit(0);	/* never handed over: nothing to read */
	if (c != 'R')
		die("pid %u: no word to register", ch->pid);
	register_vmas(ch, uffd);
	close(uffd);	/* as criu's restorer does: the daemon holds the only copy */
	if (ctl_send(ch->ctl, 'r', -1) < 0 || ctl_recv(ch->ctl, NULL) != 'G')
		die("pid %u: no word to go", ch->pid);
	if (ch->read_delay_ms)
		usleep(ch->read_delay_ms * 1000);
	t0 = now_ns();
	bad = ch->fork_remap ? fork_remap(ch, &data) : check_all(ch, &data);
	say("pid %u: %s: %d lazy VMAs read, %" PRIu64 " data pages matched the images in %.1f ms%s",
	    ch->pid, bad ? "WRONG MEMORY" : "ok", ch->nlv, data, (now_ns() - t0) / 1e6,
	    ch->npat ? ", lazyapp pattern checked" : "");
	/* The init of a pid namespace takes every other task with it: it goes last. */
	if (ch->pidns_init && ctl_recv(ch->ctl, NULL) != 'Q')
		say("pid %u: no word to quit", ch->pid);
	_exit(bad ? 1 : 0);
}

/* ---- the main process: criu's side of the socket ---- */

/* Create the child for task T under its image pid, and have it re-execute itself. */
static void spawn(struct sim_task *t, const struct sim_opts *o, char **argv0)
{
	struct clone_args ca = { .exit_signal = SIGCHLD };
	pid_t tid = t->pid, got = -1;
	char spid[16], sctl[16], delay[24], patbuf[MAX_PATTERNS][80];
	const char *args[16 + 2 * MAX_PATTERNS];
	int sv[2], n = 0;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair: %s", strerror(errno));
	ca.set_tid = (uintptr_t)&tid;
	ca.set_tid_size = 1;
	/* Another process may hold the pid for a moment: retry for a while. */
	for (int tries = 0; tries < 250; tries++) {
		got = (pid_t)syscall(SYS_clone3, &ca, sizeof(ca));
		if (got >= 0 || errno != EEXIST)
			break;
		usleep(20000);
	}
	if (got < 0)
		die("clone3 with pid %d: %s%s", t->pid, strerror(errno),
		    errno == EEXIST ? " (another process holds the pid)" :
		    errno == EINVAL && o->pidns ? " (the first task of a new pid namespace must be pid 1)" : "");
	if (got > 0) {
		close(sv[1]);
		t->ctl = sv[0];
		t->host = got;
		return;
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (personality(ADDR_NO_RANDOMIZE) < 0)
		die("personality: %s", strerror(errno));
	fcntl(sv[1], F_SETFD, 0);
	snprintf(spid, sizeof(spid), "%d", t->pid);
	snprintf(sctl, sizeof(sctl), "%d", sv[1]);
	snprintf(delay, sizeof(delay), "%ld", o->read_delay_ms);
	args[n++] = argv0[0];
	args[n++] = "--task";
	args[n++] = spid;
	args[n++] = "--ctl";
	args[n++] = sctl;
	args[n++] = "-D";
	args[n++] = o->imgdir;
	args[n++] = "--read-delay";
	args[n++] = delay;
	if (o->fork_remap == t->pid)
		args[n++] = "--fork-remap";
	if (o->pidns && t->pid == 1)
		args[n++] = "--pidns-init";
	for (int i = 0; i < o->npat; i++) {
		if (o->pat[i].pid != t->pid)
			continue;
		snprintf(patbuf[i], sizeof(patbuf[i]),
			 "%ld:0x%" PRIx64 ":0x%" PRIx64 ":0x%" PRIx64 ":0x%" PRIx64, o->pat[i].pid,
			 o->pat[i].addr, o->pat[i].len, o->pat[i].seed, o->pat[i].w0);
		args[n++] = "--pattern";
		args[n++] = patbuf[i];
	}
	args[n] = NULL;
	execv("/proc/self/exe", (char *const *)args);
	die("exec: %s", strerror(errno));
}

static int connect_daemon(const char *workdir)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/lazy-pages.socket", workdir);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		die("connect %s: %s", addr.sun_path, strerror(errno));
	return fd;
}

/*
 * Have one task's record sent as criu does: the task itself sends its pid,
 * then one byte carrying its uffd, on the connection it is given; a
 * zombie's negative pid comes from here. WRONG: send the pid word from here.
 */
static void send_record(int sk, const struct sim_task *t, bool wrong)
{
	int pid = t->zombie ? -t->pid : t->pid;

	if (t->zombie || wrong) {
		if (send(sk, &pid, sizeof(pid), MSG_NOSIGNAL) != sizeof(pid))
			die("sending pid %d: %s", pid, strerror(errno));
		if (t->zombie)
			return;
	}
	if (ctl_send(t->ctl, wrong ? 'W' : 'S', sk) < 0 || ctl_recv(t->ctl, NULL) != 's')
		die("task %d did not send its record", t->pid);
}

static void parse_pattern(struct sim_opts *o, const char *s)
{
	struct pattern *p = &o->pat[o->npat];

	p->w0 = 0;
	if (o->npat == MAX_PATTERNS ||
	    sscanf(s, "%ld:%" SCNx64 ":%" SCNx64 ":%" SCNx64 ":%" SCNx64, &p->pid, &p->addr,
		   &p->len, &p->seed, &p->w0) < 4)
		die("--pattern %s: want PID:ADDR:LEN:SEED[:WORD0] (hex)", s);
	o->npat++;
}

/* Wait for every child; returns how many failed. */
static int reap(struct sim_task *tasks, size_t n, bool pidns)
{
	int failed = 0, st;

	/* In a pid namespace pid 1 goes last: its exit would kill the others. */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < n; i++) {
			bool init = pidns && tasks[i].pid == 1;

			if (tasks[i].zombie || init != (pass == 1))
				continue;
			if (init)
				ctl_send(tasks[i].ctl, 'Q', -1);
			if (waitpid(tasks[i].host, &st, 0) != tasks[i].host || !WIFEXITED(st) ||
			    WEXITSTATUS(st)) {
				say("task %d failed (wait status 0x%x)", tasks[i].pid, st);
				failed++;
			}
		}
	}
	return failed;
}

static int run_main(struct sim_opts *o, char **argv)
{
	struct sim_task *tasks;
	struct img_err err;
	uint32_t *pids;
	size_t n;
	bool from_pstree;
	int dirfd, lock, sk, failed;
	unsigned rstf = RSTF;
	long sent = 0;
	uint64_t t0;

	if (o->pidns) {
		/* Our children go into a new pid namespace; no other sim can take their pids. */
		lock = -1;
		if (unshare(CLONE_NEWPID) < 0)
			die("unshare(CLONE_NEWPID): %s", strerror(errno));
	} else {
		lock = open(LOCK_PATH, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (lock < 0 || flock(lock, LOCK_EX) < 0)
			die("%s: %s", LOCK_PATH, strerror(errno));
	}
	dirfd = open(o->imgdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0 || img_list_tasks(dirfd, &pids, &n, &from_pstree, &err) < 0)
		die("%s: %s", o->imgdir, dirfd < 0 ? strerror(errno) : err.msg);
	tasks = calloc(n, sizeof(*tasks));
	if (!tasks)
		die("out of memory");
	for (size_t i = 0; i < n; i++) {
		tasks[i] = (struct sim_task){ .pid = (pid_t)pids[i], .ctl = -1,
					      .zombie = pids[i] == o->zombie };
		if (!tasks[i].zombie)
			spawn(&tasks[i], o, argv);
	}
	free(pids);
	for (size_t i = 0; i < n; i++)
		if (!tasks[i].zombie && ctl_recv(tasks[i].ctl, NULL) != 'U')
			die("task %d is not ready", tasks[i].pid);

	sk = connect_daemon(o->workdir);
	for (size_t i = 0; i < n && sent != o->drop_after; i++, sent++) {
		send_record(sk, &tasks[i], tasks[i].pid == o->wrong_sender);
		tasks[i].sent = true;
	}
	for (size_t i = 0; i < n; i++) {
		if (!tasks[i].zombie &&
		    (ctl_send(tasks[i].ctl, tasks[i].sent ? 'R' : 'X', -1) < 0 ||
		     (tasks[i].sent && ctl_recv(tasks[i].ctl, NULL) != 'r')))
			die("task %d did not register its ranges", tasks[i].pid);
	}
	if (sent == o->drop_after) {
		say("closing the connection after %ld records, without RSTF", sent);
		close(sk);
		sk = -1;
	}
	t0 = now_ns();
	for (size_t i = 0; i < n; i++)
		if (tasks[i].sent && !tasks[i].zombie)
			ctl_send(tasks[i].ctl, 'G', -1);
	if (sk >= 0 && !o->hold &&
	    send(sk, &rstf, sizeof(rstf), MSG_NOSIGNAL) != sizeof(rstf))
		die("sending RSTF: %s", strerror(errno));
	if (sk >= 0 && !o->hold)
		close(sk);
	failed = reap(tasks, n, o->pidns);
	printf("sim: %zu tasks, %ld records sent%s, %d failed; every task done %.1f ms after the word to go\n",
	       n, sent, sk < 0 ? "" : o->hold ? ", no RSTF (held)" : " and RSTF", failed,
	       (now_ns() - t0) / 1e6);
	if (sk >= 0 && o->hold)
		close(sk);
	for (size_t i = 0; i < n; i++)
		if (tasks[i].ctl >= 0)
			close(tasks[i].ctl);
	free(tasks);
	close(dirfd);
	if (lock >= 0)
		close(lock);
	return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct sim_opts o = { .zombie = -1, .fork_remap = -1, .drop_after = -1, .wrong_sender = -1 };
	struct child ch = { .ctl = -1 };
	bool task = false;
	int rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--fork-remap") && task) {
			ch.fork_remap = true;
			continue;
		}
		if (!strcmp(a, "--hold")) {
			o.hold = true;
			continue;
		}
		if (!strcmp(a, "--pidns")) {
			o.pidns = true;
			continue;
		}
		if (!strcmp(a, "--pidns-init") && task) {
			ch.pidns_init = true;
			continue;
		}
		if (!v)
			die("%s: missing value", a);
		i++;
		if (!strcmp(a, "-D"))
			o.imgdir = v;
		else if (!strcmp(a, "-W"))
			o.workdir = v;
		else if (!strcmp(a, "--zombie"))
			o.zombie = atol(v);
		else if (!strcmp(a, "--fork-remap"))
			o.fork_remap = atol(v);
		else if (!strcmp(a, "--drop-after"))
			o.drop_after = atol(v);
		else if (!strcmp(a, "--wrong-sender"))
			o.wrong_sender = atol(v);
		else if (!strcmp(a, "--read-delay"))
			o.read_delay_ms = atol(v);
		else if (!strcmp(a, "--pattern"))
			parse_pattern(&o, v);
		else if (!strcmp(a, "--task"))
			task = true, ch.pid = (uint32_t)atol(v);
		else if (!strcmp(a, "--ctl"))
			ch.ctl = atoi(v);
		else
			die("unknown option %s", a);
	}
	if (!o.imgdir)
		die("usage: criu-sim -D IMGDIR [-W WORKDIR] [--zombie PID] [--fork-remap PID] [--drop-after N] [--pattern PID:ADDR:LEN:SEED] [--read-delay MS]");
	if (task) {
		ch.read_delay_ms = o.read_delay_ms;
		memcpy(ch.pat, o.pat, sizeof(o.pat));
		ch.npat = o.npat;
		return run_child(&ch, o.imgdir);
	}
	if (!o.workdir)
		o.workdir = o.imgdir;
	rc = run_main(&o, argv);
	/*
	 * With --pidns our own new processes would go into the namespace whose
	 * pid 1 is gone, where none can be made: LeakSanitizer's exit-time
	 * tracer among them. Nothing is left to free: end here.
	 */
	if (o.pidns) {
		fflush(NULL);
		_exit(rc);
	}
	return rc;
}
