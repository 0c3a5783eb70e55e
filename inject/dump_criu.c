/*
 * What CRIU 4.2's restore needs of a dump besides our own records: see
 * dump_criu.h.
 */
#include <asm/ldt.h>
#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core.h"
#include "dump_criu.h"
#include "image.h"
#include "imgtask.h"
#include "ptrace.h"
#include "seccomp.pb-c.h"
#include "timens.pb-c.h"
#include "why.h"

#ifndef PTRACE_GET_THREAD_AREA
#define PTRACE_GET_THREAD_AREA	25
#endif

/* CRIU's namespace ids, in the order its dump meets them (as in its own images). */
enum { NS_PID = 1, NS_NET, NS_IPC, NS_UTS, NS_TIME, NS_MNT, NS_USER, NS_CGROUP };

/* The ids of a process (KOBJ) that shares every namespace with the tool. */
static void kobj_ids(TaskKobjIdsEntry *e, uint32_t kobj)
{
	task_kobj_ids_entry__init(e);
	e->vm_id = e->files_id = e->fs_id = e->sighand_id = kobj;
	e->has_pid_ns_id = e->has_net_ns_id = e->has_ipc_ns_id = e->has_uts_ns_id = 1;
	e->has_mnt_ns_id = e->has_user_ns_id = e->has_cgroup_ns_id = e->has_time_ns_id = 1;
	e->pid_ns_id = NS_PID;
	e->net_ns_id = NS_NET;
	e->ipc_ns_id = NS_IPC;
	e->uts_ns_id = NS_UTS;
	e->time_ns_id = NS_TIME;
	e->mnt_ns_id = NS_MNT;
	e->user_ns_id = NS_USER;
	e->cgroup_ns_id = NS_CGROUP;
}

/* Read the small file PATH into BUF (NUL-terminated). Length or -errno. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	n = read(fd, buf, cap - 1);
	if (n < 0)
		n = -errno;
	else
		buf[n] = '\0';
	close(fd);
	return n;
}

/* N numbers of the status field KEY ("Uid:\t0\t0\t0\t0") into OUT, in BASE. */
static int status_nums(const char *st, const char *key, int base, uint64_t *out, int n)
{
	const char *v = procfs_text_field(st, key);
	char *end;

	if (!v)
		return -EIO;
	for (int i = 0; i < n; i++) {
		errno = 0;
		out[i] = strtoull(v, &end, base);
		if (end == v || errno)
			return -EIO;
		v = end;
	}
	return 0;
}

/* Credentials of thread T from /proc/PID/task/TID/status. */
static int thread_creds(pid_t pid, struct dump_criu_thread *t, char *why, size_t len)
{
	static const char *const capk[5] = { "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb" };
	char path[96], st[8192];
	uint64_t v[4];
	const char *g;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/status", (int)pid, (int)t->tid);
	if (read_small(path, st, sizeof(st)) < 0)
		return why_set(why, len, errno, "%s: %s", path, strerror(errno));
	if (status_nums(st, "Uid", 10, v, 4) < 0)
		return why_set(why, len, EIO, "%s: no Uid", path);
	for (int i = 0; i < 4; i++)
		t->uid[i] = (uint32_t)v[i];
	if (status_nums(st, "Gid", 10, v, 4) < 0)
		return why_set(why, len, EIO, "%s: no Gid", path);
	for (int i = 0; i < 4; i++)
		t->gid[i] = (uint32_t)v[i];
	for (int i = 0; i < 5; i++)
		if (status_nums(st, capk[i], 16, &t->cap[i], 1) < 0)
			return why_set(why, len, EIO, "%s: no %s", path, capk[i]);
	if (status_nums(st, "NoNewPrivs", 10, v, 1) == 0)
		t->no_new_privs = (uint32_t)v[0];
	g = procfs_text_field(st, "Groups");
	if (g) {
		/* A group takes two characters at least, its digit and a blank. */
		t->groups = calloc(strcspn(g, "\n") / 2 + 1, sizeof(*t->groups));
		if (!t->groups)
			return why_set(why, len, ENOMEM, "out of memory");
	}
	while (g && *g && *g != '\n') {
		char *end;
		unsigned long gid;

		g += strspn(g, " \t");
		if (!*g || *g == '\n')
			break;
		gid = strtoul(g, &end, 10);
		if (end == g)
			return why_set(why, len, EIO, "%s: bad Groups", path);
		t->groups[t->ngroups++] = (uint32_t)gid;
		g = end;
	}
	return 0;
}

/* Policy, priority and nice of thread T, as CRIU reads them. */
static int thread_sched(struct dump_criu_thread *t, char *why, size_t len)
{
	struct sched_param sp;
	long r;

	r = syscall(SYS_sched_getscheduler, t->tid);
	if (r < 0)
		return why_set(why, len, errno, "thread %d: sched_getscheduler: %s", (int)t->tid,
			     strerror(errno));
	t->sched_policy = (uint32_t)r;
	if (r == SCHED_FIFO || r == SCHED_RR) {
		if (sched_getparam(t->tid, &sp) < 0)
			return why_set(why, len, errno, "thread %d: sched_getparam: %s",
				     (int)t->tid, strerror(errno));
		t->sched_prio = (uint32_t)sp.sched_priority;
	}
	errno = 0;
	r = getpriority(PRIO_PROCESS, (id_t)t->tid);
	if (r == -1 && errno)
		return why_set(why, len, errno, "thread %d: getpriority: %s", (int)t->tid,
			     strerror(errno));
	t->sched_nice = (int32_t)r;
	return 0;
}

/* The GDT TLS slots of thread T (PTRACE_GET_THREAD_AREA); none on a kernel without them. */
static void thread_tls(struct dump_criu_thread *t)
{
	for (int i = 0; i < DUMP_CRIU_NTLS; i++) {
		struct user_desc ud;

		memset(&ud, 0, sizeof(ud));
		if (ptrace(PTRACE_GET_THREAD_AREA, t->tid, (void *)(long)(DUMP_CRIU_TLS_MIN + i),
			   &ud) < 0)
			return;
		t->tls[i].entry_number = ud.entry_number;
		t->tls[i].base_addr = ud.base_addr;
		t->tls[i].limit = ud.limit;
		memcpy(&t->tls[i].flags, (const char *)&ud + 3 * sizeof(uint32_t), sizeof(uint32_t));
	}
	t->has_tls = true;
}

/* Run prctl(OP) in thread I of PT; its result in *OUT. */
static int run_prctl(struct pt *pt, int i, int op, long *out, char *why, size_t len)
{
	int r = pt_syscall_in(pt, i, out, SYS_prctl, op, 0, 0, 0, 0, 0);

	if (r < 0)
		return why_set(why, len, -r, "thread %d: cannot run prctl(%d) in it: %s",
			     (int)pt->th[i].tid, op, strerror(-r));
	if (*out < 0 && *out > -4096)
		return why_set(why, len, (int)-*out, "thread %d: prctl(%d): %s", (int)pt->th[i].tid,
			     op, strerror((int)-*out));
	return 0;
}

/* The open mode of every file-backed area's file, from the mode of its map_files link. */
static int file_modes(struct dump_criu *dc, const struct procfs_maps *maps, char *why, size_t len)
{
	dc->fmode = calloc(maps->n + 1, sizeof(*dc->fmode));
	if (!dc->fmode)
		return why_set(why, len, ENOMEM, "out of memory");
	for (size_t i = 0; i < maps->n; i++) {
		const struct procfs_vma *v = &maps->v[i];
		char path[96];
		struct stat st;

		if (!v->inode || !v->name ||
		    (v->name[0] != '/' && strncmp(v->name, "[anon_shmem:", 12)))
			continue;
		snprintf(path, sizeof(path), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, (int)dc->pid,
			 (uint64_t)v->start, (uint64_t)v->end);
		if (lstat(path, &st) < 0) {
			if (errno == ENOENT)
				continue;	/* no link: CRIU guesses from prot, so will restore */
			return why_set(why, len, errno, "%s: %s", path, strerror(errno));
		}
		dc->fmode[dc->nfmode].start = v->start;
		switch (st.st_mode & 0600) {
		case 0200: dc->fmode[dc->nfmode].fdflags = O_WRONLY; break;
		case 0600: dc->fmode[dc->nfmode].fdflags = O_RDWR; break;
		default: dc->fmode[dc->nfmode].fdflags = O_RDONLY; break;
		}
		dc->nfmode++;
	}
	return 0;
}

int dump_criu_collect(struct dump_criu *dc, struct pt *pt, const struct procfs_maps *maps,
		      char *why, size_t len)
{
	char path[64], buf[64];
	long r;
	int ret;

	memset(dc, 0, sizeof(*dc));
	dc->pid = pt->pid;
	clock_gettime(CLOCK_MONOTONIC, &dc->monotonic);
	clock_gettime(CLOCK_BOOTTIME, &dc->boottime);
	dc->th = calloc((size_t)pt->nr_threads + 1, sizeof(*dc->th));
	if (!dc->th)
		return why_set(why, len, ENOMEM, "out of memory");
	dc->nth = (size_t)pt->nr_threads;
	for (size_t i = 0; i < dc->nth; i++) {
		struct dump_criu_thread *t = &dc->th[i];

		t->tid = pt->th[i].tid;
		if ((ret = thread_creds(dc->pid, t, why, len)) < 0 ||
		    (ret = thread_sched(t, why, len)) < 0 ||
		    (ret = run_prctl(pt, (int)i, PR_GET_SECUREBITS, &r, why, len)) < 0)
			return ret;
		t->secbits = (uint32_t)r;
		thread_tls(t);
	}
	if ((ret = run_prctl(pt, 0, PR_GET_DUMPABLE, &r, why, len)) < 0)
		return ret;
	dc->dumpable = (int32_t)r;
	if ((ret = run_prctl(pt, 0, PR_GET_THP_DISABLE, &r, why, len)) < 0)
		return ret;
	dc->thp_disabled = r != 0;
	for (int i = 0; i < DUMP_CRIU_NLIMITS; i++) {
		struct rlimit rl;

		if (prlimit(dc->pid, (enum __rlimit_resource)i, NULL, &rl) < 0)
			return why_set(why, len, errno, "prlimit(%d): %s", i, strerror(errno));
		dc->rlim[i][0] = rl.rlim_cur;
		dc->rlim[i][1] = rl.rlim_max;
	}
	snprintf(path, sizeof(path), "/proc/%d/loginuid", (int)dc->pid);
	if (read_small(path, buf, sizeof(buf)) > 0) {
		dc->has_loginuid = true;
		dc->loginuid = (uint32_t)strtoul(buf, NULL, 10);
	}
	snprintf(path, sizeof(path), "/proc/%d/oom_score_adj", (int)dc->pid);
	if (read_small(path, buf, sizeof(buf)) < 0)
		return why_set(why, len, errno, "%s: %s", path, strerror(errno));
	dc->oom_score_adj = (int32_t)strtol(buf, NULL, 10);
	return file_modes(dc, maps, why, len);
}

void dump_criu_free(struct dump_criu *dc)
{
	for (size_t i = 0; i < dc->nth; i++)
		free(dc->th[i].groups);
	free(dc->th);
	free(dc->fmode);
	memset(dc, 0, sizeof(*dc));
}

/*
 * The XSAVE features CRIU records, by their bit in XCR0: the field, its
 * element size and the size of the area (which CRIU requires exactly).
 */
static const struct {
	int bit;
	size_t size;
} xfeatures[] = {
	{ 2, 256 },	/* YMM: ymmh_space */
	{ 3, 64 },	/* BNDREGS: bndreg_state */
	{ 4, 64 },	/* BNDCSR: bndcsr_state */
	{ 5, 64 },	/* OPMASK: opmask_reg */
	{ 6, 512 },	/* ZMM_Hi256: zmm_upper */
	{ 7, 1024 },	/* Hi16_ZMM: hi16_zmm */
	{ 9, 8 },	/* PKRU: pkru */
};

#define XSTATE_XCR0_OFF		464	/* the kernel's copy of XCR0 in the regset's sw bytes */
#define XSTATE_HDR_OFF		512

/* Does the CPU have shadow stacks (CPUID 7.0 ECX bit 7)? CRIU records the CET state then. */
static bool cpu_has_shstk(void)
{
	unsigned eax, ebx, ecx, edx;

	return __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 7));
}

void dump_criu_xsave(const uint8_t *xstate, size_t xstate_len, UserX86XsaveEntry *xs,
		     struct dump_criu_core_buf *b)
{
	void *dst[] = { b->ymmh, b->bndreg, b->bndcsr, b->opmask, b->zmm_upper, b->hi16_zmm,
			b->pkru };
	uint64_t xcr0;

	user_x86_xsave_entry__init(xs);
	if (!xstate || xstate_len < XSTATE_HDR_OFF + 8)
		return;
	/* None in use (an area with a shadow stack is refused): both zero. */
	if (cpu_has_shstk()) {
		user_x86_cet_entry__init(&b->cet);
		xs->cet = &b->cet;
	}
	memcpy(&xcr0, xstate + XSTATE_XCR0_OFF, 8);
	memcpy(&xs->xstate_bv, xstate + XSTATE_HDR_OFF, 8);
	for (size_t i = 0; i < sizeof(xfeatures) / sizeof(xfeatures[0]); i++) {
		unsigned eax, ebx, ecx, edx;
		size_t n;

		if (!(xcr0 & (1ull << xfeatures[i].bit)) ||
		    !__get_cpuid_count(0xd, (unsigned)xfeatures[i].bit, &eax, &ebx, &ecx, &edx) ||
		    eax != xfeatures[i].size || (size_t)ebx + eax > xstate_len)
			continue;
		memcpy(dst[i], xstate + ebx, eax);
		n = xfeatures[i].bit == 2 || xfeatures[i].bit == 9 ? eax / 4 : eax / 8;
		switch (xfeatures[i].bit) {
		case 2: xs->n_ymmh_space = n; xs->ymmh_space = b->ymmh; break;
		case 3: xs->n_bndreg_state = n; xs->bndreg_state = b->bndreg; break;
		case 4: xs->n_bndcsr_state = n; xs->bndcsr_state = b->bndcsr; break;
		case 5: xs->n_opmask_reg = n; xs->opmask_reg = b->opmask; break;
		case 6: xs->n_zmm_upper = n; xs->zmm_upper = b->zmm_upper; break;
		case 7: xs->n_hi16_zmm = n; xs->hi16_zmm = b->hi16_zmm; break;
		case 9: xs->n_pkru = n; xs->pkru = b->pkru; break;
		}
	}
}

void dump_criu_core(const struct dump_criu *dc, size_t i, const uint8_t *xstate,
		    size_t xstate_len, CoreEntry *ce, struct dump_criu_core_buf *b)
{
	const struct dump_criu_thread *t = &dc->th[i];
	ThreadCoreEntry *th = ce->thread_core;
	TaskCoreEntry *tc = ce->tc;
	CredsEntry *cr = &b->creds;

	signal_queue_entry__init(&b->sigq_p);
	th->signals_p = &b->sigq_p;	/* pending signals are refused at dump */
	th->has_sched_policy = th->has_sched_nice = 1;
	th->sched_policy = t->sched_policy;
	th->sched_nice = t->sched_nice;
	if (t->sched_policy == SCHED_FIFO || t->sched_policy == SCHED_RR) {
		th->has_sched_prio = 1;
		th->sched_prio = t->sched_prio;
	}
	creds_entry__init(cr);
	cr->uid = t->uid[0];
	cr->euid = t->uid[1];
	cr->suid = t->uid[2];
	cr->fsuid = t->uid[3];
	cr->gid = t->gid[0];
	cr->egid = t->gid[1];
	cr->sgid = t->gid[2];
	cr->fsgid = t->gid[3];
	for (int k = 0; k < 5; k++) {
		b->caps[k][0] = (uint32_t)t->cap[k];
		b->caps[k][1] = (uint32_t)(t->cap[k] >> 32);
	}
	cr->n_cap_inh = cr->n_cap_prm = cr->n_cap_eff = cr->n_cap_bnd = cr->n_cap_amb = 2;
	cr->cap_inh = b->caps[0];
	cr->cap_prm = b->caps[1];
	cr->cap_eff = b->caps[2];
	cr->cap_bnd = b->caps[3];
	cr->cap_amb = b->caps[4];
	cr->secbits = t->secbits;
	cr->n_groups = t->ngroups;
	cr->groups = t->groups;
	cr->has_no_new_privs = 1;
	cr->no_new_privs = t->no_new_privs;
	th->creds = cr;

	if (t->has_tls) {
		for (int k = 0; k < DUMP_CRIU_NTLS; k++) {
			uint32_t f = t->tls[k].flags;

			user_desc_t__init(&b->tls[k]);
			b->tls[k].entry_number = t->tls[k].entry_number;
			b->tls[k].base_addr = t->tls[k].base_addr;
			b->tls[k].limit = t->tls[k].limit;
			b->tls[k].seg_32bit = f & 1;
			b->tls[k].contents_h = (f >> 2) & 1;
			b->tls[k].contents_l = (f >> 1) & 1;
			b->tls[k].read_exec_only = (f >> 3) & 1;
			b->tls[k].limit_in_pages = (f >> 4) & 1;
			b->tls[k].seg_not_present = (f >> 5) & 1;
			b->tls[k].usable = (f >> 6) & 1;
			b->tlsp[k] = &b->tls[k];
		}
		ce->thread_info->n_tls = DUMP_CRIU_NTLS;
		ce->thread_info->tls = b->tlsp;
	}
	dump_criu_xsave(xstate, xstate_len, &b->xsave, b);
	ce->thread_info->fpregs->xsave = &b->xsave;

	if (!tc)
		return;
	for (size_t k = 0; k < tc->n_sigactions; k++)
		tc->sigactions[k]->has_compat_sigaction = 1;	/* false: 64-bit handlers */
	task_timers_entry__init(&b->timers);
	for (int k = 0; k < 3; k++)
		itimer_entry__init(&b->itimer[k]);	/* armed itimers are refused at dump */
	b->timers.real = &b->itimer[0];
	b->timers.virt = &b->itimer[1];
	b->timers.prof = &b->itimer[2];
	tc->timers = &b->timers;
	task_rlimits_entry__init(&b->rlimits);
	for (int k = 0; k < DUMP_CRIU_NLIMITS; k++) {
		rlimit_entry__init(&b->rl[k]);
		b->rl[k].cur = dc->rlim[k][0];
		b->rl[k].max = dc->rlim[k][1];
		b->rlp[k] = &b->rl[k];
	}
	b->rlimits.n_rlimits = DUMP_CRIU_NLIMITS;
	b->rlimits.rlimits = b->rlp;
	tc->rlimits = &b->rlimits;
	signal_queue_entry__init(&b->sigq_s);
	tc->signals_s = &b->sigq_s;
	if (dc->has_loginuid) {
		tc->has_loginuid = 1;
		tc->loginuid = dc->loginuid;
	}
	tc->has_oom_score_adj = 1;
	tc->oom_score_adj = dc->oom_score_adj;
}

/* ---- the files ---- */

struct names {
	char name[3][48];
	char tmp[3][56];
};

static void names(const struct dump_criu *dc, struct names *n)
{
	snprintf(n->name[0], sizeof(n->name[0]), "ids-%d.img", (int)dc->pid);
	snprintf(n->name[1], sizeof(n->name[1]), "%s", DUMP_CRIU_TIMENS_IMG);
	snprintf(n->name[2], sizeof(n->name[2]), "%s", DUMP_CRIU_SECCOMP_IMG);
	for (int i = 0; i < 3; i++)
		snprintf(n->tmp[i], sizeof(n->tmp[i]), "%s.part", n->name[i]);
}

static int write_one(int dirfd, const char *name, uint32_t magic, const ProtobufCMessage *m,
		     char *why, size_t len)
{
	struct img_writer w;
	struct img_err err;
	int ret;

	ret = img_create(&w, dirfd, name, magic, &err);
	if (ret == 0 && (ret = img_write(&w, m, &err)) < 0)
		img_abort(&w);
	if (ret == 0)
		ret = img_finish(&w, &err);
	return ret < 0 ? why_set(why, len, -ret, "%s", err.msg) : 0;
}

int dump_criu_write(const struct dump_criu *dc, int dirfd, char *why, size_t len)
{
	TaskKobjIdsEntry ids;
	TimensEntry te = TIMENS_ENTRY__INIT;
	Timespec mono = TIMESPEC__INIT, boot = TIMESPEC__INIT;
	SeccompEntry se = SECCOMP_ENTRY__INIT;
	struct names n;
	int ret;

	names(dc, &n);
	kobj_ids(&ids, dc->kobj ? dc->kobj : DUMP_CRIU_FILES_ID);
	mono.tv_sec = (uint64_t)dc->monotonic.tv_sec;
	mono.tv_nsec = (uint64_t)dc->monotonic.tv_nsec;
	boot.tv_sec = (uint64_t)dc->boottime.tv_sec;
	boot.tv_nsec = (uint64_t)dc->boottime.tv_nsec;
	te.monotonic = &mono;
	te.boottime = &boot;
	ret = write_one(dirfd, n.tmp[0], IMG_IDS_MAGIC, &ids.base, why, len);
	if (ret == 0 && dc->per_dump)
		ret = write_one(dirfd, n.tmp[1], IMG_TIMENS_MAGIC, &te.base, why, len);
	if (ret == 0 && dc->per_dump)
		ret = write_one(dirfd, n.tmp[2], IMG_SECCOMP_MAGIC, &se.base, why, len);
	if (ret < 0)
		dump_criu_abort(dc, dirfd);
	return ret;
}

int dump_criu_publish(struct dump_criu *dc, int dirfd, char *why, size_t len)
{
	struct names n;

	names(dc, &n);
	for (int i = 0; i < (dc->per_dump ? 3 : 1); i++) {
		if (renameat(dirfd, n.tmp[i], dirfd, n.name[i]) < 0)
			return why_set(why, len, errno, "%s: rename: %s", n.name[i],
				     strerror(errno));
		dc->published |= 1u << i;
	}
	return 0;
}

void dump_criu_abort(const struct dump_criu *dc, int dirfd)
{
	struct names n;

	names(dc, &n);
	for (int i = 0; i < (dc->per_dump ? 3 : 1); i++)
		unlinkat(dirfd, n.tmp[i], 0);
	/* Only the process's own file: the dump's may be another's (a CRIU dump beside). */
	if (dc->pid > 0)
		unlinkat(dirfd, n.name[0], 0);
	/* The dump's files: only once they are the ones this dump gave their names. */
	for (int i = 1; i < 3; i++)
		if (dc->published & (1u << i))
			unlinkat(dirfd, n.name[i], 0);
}

void dump_criu_inventory(InventoryEntry *inv, struct dump_criu_inv_buf *b)
{
	char uuid[64];

	kobj_ids(&b->root, DUMP_CRIU_ROOT_KOBJ_ID);
	plugins_entry__init(&b->plugins);
	inv->plugins_entry = &b->plugins;	/* none used: CRIU's restore then runs none */
	/* A run id, as CRIU's (a UUID); it would name an nftables lock table. */
	if (read_small("/proc/sys/kernel/random/uuid", uuid, sizeof(uuid)) > 0) {
		uuid[strcspn(uuid, "\n")] = '\0';
		snprintf(b->run_id, sizeof(b->run_id), "%s", uuid);
		inv->dump_criu_run_id = b->run_id;
	}
	inv->has_fdinfo_per_id = inv->fdinfo_per_id = 1;
	inv->root_ids = &b->root;
	inv->has_ns_per_id = inv->ns_per_id = 1;
	inv->has_lsmtype = 1;
	inv->lsmtype = 0;		/* NO_LSM: no profile is dumped */
	inv->has_network_lock_method = 1;
	inv->network_lock_method = 0;	/* iptables, never used: no sockets are dumped */
}

/*
 * The files.img id of the file whose inode is INO (a mapped file's record
 * first), a memfd's if MEMFD, else a regular file's: the two live on
 * different devices and may share an inode number.
 */
static uint32_t file_id(const struct core *c, uint64_t ino, bool memfd)
{
	for (size_t i = 0; i < c->nf; i++)
		if (c->f[i].fd < 0 && c->f[i].ino == ino && c->f[i].memfd == memfd)
			return c->f[i].id;
	for (size_t i = 0; i < c->nf; i++)
		if (c->f[i].ino == ino && c->f[i].memfd == memfd)
			return c->f[i].id;
	return 0;
}

int dump_criu_mm(const struct core *c, MmEntry *mm, const VmaEntry *vmas, size_t n,
		 struct dump_criu_mm *b)
{
	const struct dump_criu *dc = &c->criu;

	b->v = calloc(n + 1, sizeof(*b->v));
	b->vp = calloc(n + 1, sizeof(*b->vp));
	b->n = 0;
	if (!b->v || !b->vp) {
		dump_criu_mm_free(b);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		VmaEntry *v = &b->v[b->n];

		*v = vmas[i];
		if (v->status & VMA_AREA_VVAR) {
			VmaEntry *prev = b->n ? &b->v[b->n - 1] : NULL;

			/* CRIU takes [vvar] and [vvar_vclock] as one area. */
			if (prev && (prev->status & VMA_AREA_VVAR) && prev->end == v->start) {
				prev->end = v->end;
				continue;
			}
			v->status |= VMA_AREA_REGULAR;
		}
		if (v->status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED)) {
			v->shmid = file_id(c, v->shmid, v->status & VMA_AREA_MEMFD);
			for (size_t k = 0; k < dc->nfmode; k++) {
				if (dc->fmode[k].start == v->start) {
					v->has_fdflags = 1;
					v->fdflags = dc->fmode[k].fdflags;
					break;
				}
			}
		}
		b->vp[b->n++] = v;
	}
	mm->n_vmas = b->n;
	mm->vmas = b->vp;
	mm->exe_file_id = c->exe_id;
	/* The kernel ends the saved auxv with AT_NULL; CRIU takes 44 words at most. */
	if (mm->n_mm_saved_auxv >= 2 && !mm->mm_saved_auxv[mm->n_mm_saved_auxv - 2] &&
	    !mm->mm_saved_auxv[mm->n_mm_saved_auxv - 1])
		mm->n_mm_saved_auxv -= 2;
	mm->has_dumpable = 1;
	mm->dumpable = dc->dumpable;
	mm->has_thp_disabled = 1;
	mm->thp_disabled = dc->thp_disabled;
	return 0;
}

void dump_criu_mm_free(struct dump_criu_mm *b)
{
	free(b->v);
	free(b->vp);
	b->v = NULL;
	b->vp = NULL;
	b->n = 0;
}
