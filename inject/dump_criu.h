/*
 * What real CRIU 4.2's restore needs of a dump besides what uffd-inject's own
 * restore reads, with the values CRIU's dump would write:
 *
 *  - per process: ids-PID.img (its kernel-object and namespace ids), and in
 *    every core-TID.img the credentials, scheduling policy, GDT TLS slots,
 *    the XSAVE areas by feature, empty signal queues, and in the main
 *    thread's the itimers, rlimits, loginuid and oom_score_adj;
 *  - per dump: timens-0.img (the clocks at the dump) and seccomp.img (no
 *    filters), the inventory's fdinfo_per_id, root_ids and friends;
 *  - in mm-PID.img: the exe file's id, file-backed areas named by their
 *    files.img id (shmid) with the mode their file was opened with
 *    (fdflags), [vvar] and [vvar_vclock] as one area, the saved auxv without
 *    its AT_NULL terminator (CRIU takes at most 44 words), dumpable and
 *    thp_disabled.
 *
 * Collected while the process is frozen (core_collect() calls
 * dump_criu_collect()); written by core_write() and dump_image.c. Namespaces
 * are never dumped: every id says "the namespaces of the tool that dumped
 * it", so CRIU restores it into its own, as uffd-inject restore does.
 */
#ifndef UFFD_INJECT_DUMP_CRIU_H
#define UFFD_INJECT_DUMP_CRIU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "core.pb-c.h"
#include "inventory.pb-c.h"
#include "mm.pb-c.h"
#include "procfs.h"

struct pt;
struct core;

#define DUMP_CRIU_NLIMITS	16	/* RLIM_NLIMITS */
#define DUMP_CRIU_NTLS		3	/* GDT_ENTRY_TLS_ENTRIES */
#define DUMP_CRIU_TLS_MIN	12	/* GDT_ENTRY_TLS_MIN on x86_64 */

/*
 * The files_id of a dumped process: its fds are in fdinfo-<files_id>.img.
 * One process per dump today, so 1 (CORE_FDINFO_IMG). The ids of the tool
 * that dumped it (the inventory's root_ids) are 0, which no process has: a
 * root task whose ids equal root_ids is refused by CRIU as corrupt.
 */
#define DUMP_CRIU_FILES_ID	1
#define DUMP_CRIU_ROOT_KOBJ_ID	0

/* File names of the images written here. */
#define DUMP_CRIU_TIMENS_IMG	"timens-0.img"
#define DUMP_CRIU_SECCOMP_IMG	"seccomp.img"
#define IMG_IDS_MAGIC		0x54432030u
#define IMG_TIMENS_MAGIC	0x43114433u
#define IMG_SECCOMP_MAGIC	0x64413049u

/* The credentials and scheduling of one thread; its GDT TLS slots. */
struct dump_criu_thread {
	pid_t tid;
	uint32_t uid[4], gid[4];	/* real, effective, saved, fs */
	uint64_t cap[5];		/* inheritable, permitted, effective, bounding, ambient */
	uint32_t *groups;
	size_t ngroups;
	uint32_t no_new_privs;
	uint32_t secbits;
	uint32_t sched_policy, sched_prio;
	int32_t sched_nice;
	struct {
		uint32_t entry_number, base_addr, limit, flags;	/* struct user_desc */
	} tls[DUMP_CRIU_NTLS];
	bool has_tls;
};

/* The mode a file-backed area's file was opened with (/proc/PID/map_files). */
struct dump_criu_fmode {
	uint64_t start;
	uint32_t fdflags;
};

struct dump_criu {
	pid_t pid;
	uint32_t kobj;		/* its ids (mm, files, fs, sighand): its files_id */
	bool per_dump;		/* it writes the dump's timens and seccomp images (the root) */
	unsigned published;	/* bit I: its file I (ids, timens, seccomp) has its final name */
	struct dump_criu_thread *th;	/* in the order of the core's threads */
	size_t nth;
	uint64_t rlim[DUMP_CRIU_NLIMITS][2];	/* cur, max */
	bool has_loginuid;
	uint32_t loginuid;
	int32_t oom_score_adj;
	int32_t dumpable;
	bool thp_disabled;
	struct timespec monotonic, boottime;	/* at the freeze */
	struct dump_criu_fmode *fmode;
	size_t nfmode;
};

/*
 * Collect, from the frozen process PT (areas in MAPS), what CRIU needs and
 * uffd-inject's own records do not hold. Runs prctl() in its threads.
 * Returns 0 or -errno with WHY naming the pid, thread or file at fault.
 */
int dump_criu_collect(struct dump_criu *dc, struct pt *pt, const struct procfs_maps *maps,
		      char *why, size_t len);

void dump_criu_free(struct dump_criu *dc);

/* Storage for what dump_criu_core() hangs on a CoreEntry; valid until it is written. */
struct dump_criu_core_buf {
	TaskTimersEntry timers;
	ItimerEntry itimer[3];
	TaskRlimitsEntry rlimits;
	RlimitEntry rl[DUMP_CRIU_NLIMITS];
	RlimitEntry *rlp[DUMP_CRIU_NLIMITS];
	SignalQueueEntry sigq_s, sigq_p;
	CredsEntry creds;
	uint32_t caps[5][2];
	UserDescT tls[DUMP_CRIU_NTLS];
	UserDescT *tlsp[DUMP_CRIU_NTLS];
	UserX86XsaveEntry xsave;
	uint32_t ymmh[64];
	uint64_t bndreg[8], bndcsr[8], opmask[8], zmm_upper[64], hi16_zmm[128];
	uint32_t pkru[2];
	UserX86CetEntry cet;
};

/*
 * Add CRIU's fields to CE, the core of thread I (0: the main thread, which
 * also carries the task's); XSTATE is that thread's NT_X86_XSTATE regset.
 */
void dump_criu_core(const struct dump_criu *dc, size_t i, const uint8_t *xstate,
		    size_t xstate_len, CoreEntry *ce, struct dump_criu_core_buf *b);

/* The XSAVE areas of XSTATE by feature, as CRIU records them, into XS (storage in B). */
void dump_criu_xsave(const uint8_t *xstate, size_t xstate_len, UserX86XsaveEntry *xs,
		     struct dump_criu_core_buf *b);

/*
 * Write ids-PID.img (the process's) and timens-0.img and seccomp.img (the
 * dump's: a dump of several processes writes those once) as NAME.part into
 * DIRFD. 0 or -errno with WHY.
 */
int dump_criu_write(const struct dump_criu *dc, int dirfd, char *why, size_t len);
/* Rename them into place. */
int dump_criu_publish(struct dump_criu *dc, int dirfd, char *why, size_t len);
/* Remove what dump_criu_write and dump_criu_publish made. */
void dump_criu_abort(const struct dump_criu *dc, int dirfd);

/* Storage for what dump_criu_inventory() hangs on an InventoryEntry. */
struct dump_criu_inv_buf {
	TaskKobjIdsEntry root;
	PluginsEntry plugins;
	char run_id[64];
};

/* Fill the inventory's fields CRIU 4.2 requires and writes (storage in B). */
void dump_criu_inventory(InventoryEntry *inv, struct dump_criu_inv_buf *b);

/* An mm record made CRIU-restorable: its own copies of the areas. */
struct dump_criu_mm {
	VmaEntry *v;
	VmaEntry **vp;
	size_t n;
};

/*
 * Make MM, whose areas are VMAS (N of them), what CRIU 4.2 restores, from
 * what core C (with its dump_criu) says: see the top of this file. MM's
 * vmas then point into B (free it with dump_criu_mm_free after the write).
 * 0 or -ENOMEM.
 */
int dump_criu_mm(const struct core *c, MmEntry *mm, const VmaEntry *vmas, size_t n,
		 struct dump_criu_mm *b);
void dump_criu_mm_free(struct dump_criu_mm *b);

#endif
