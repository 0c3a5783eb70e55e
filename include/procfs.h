/*
 * The one reader of /proc, for the daemon, uffd-inject and the tests: the
 * "Key:\tvalue" lines of status and fdinfo files (a userfaultfd's API
 * line among them), a process's memory areas (maps, smaps VmFlags), the
 * address-space fields of stat, the saved auxv and the thread list. The
 * process readers return 0 or -errno and fill WHY (naming the pid and the
 * file) on failure. Knows nothing of what the callers do with it.
 */
#ifndef UFFD_PROCFS_H
#define UFFD_PROCFS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Find the line of PATH that starts with KEY followed by ':' and copy what
 * follows the colon and blanks into VAL. Returns 0, -ENOENT if no such line,
 * or -errno if PATH cannot be read.
 */
int procfs_field(const char *path, const char *key, char *val, size_t len);

/*
 * In TEXT, a whole "Key:\tvalue" file already read: what follows "KEY:" on
 * its line (blanks included), or NULL.
 */
const char *procfs_text_field(const char *text, const char *key);

/* The same, as a decimal number (the first one of the value: "N kB" gives N). */
int procfs_field_num(const char *path, const char *key, long long *val);

/*
 * The features word of the userfaultfd whose fdinfo is PATH, from its
 * "API:\t<api>:<features>:<ioctls>" line, with the kernel's private
 * "initialized" mark (bit 31) kept in *RAW. Returns 0, -EINVAL if PATH is
 * not a userfaultfd's fdinfo, or -errno.
 */
int procfs_uffd_api(const char *path, uint64_t *raw);

/* The kernel's "through UFFDIO_API" mark in a userfaultfd's features word. */
#define PROCFS_UFFD_INITIALIZED	(1ull << 31)

/*
 * What /proc/self/fd says our FD is ("anon_inode:[userfaultfd]", a path...),
 * into BUF. Returns 0, or -errno with BUF saying "unreadable: ...".
 */
int procfs_fd_kind(int fd, char *buf, size_t len);

/*
 * The process a fault's thread id TID names, if it is a child of PARENT (a
 * pid in our namespace); else 0. The kernel reports that id as the faulting
 * thread sees it, in its own pid namespace: it names the same thread here
 * only when PARENT lives in our namespace and the process found is
 * PARENT's child (a child made with CLONE_NEWPID reports 1, which here is
 * init).
 */
pid_t procfs_child_of_tid(pid_t parent, pid_t tid);

/* smaps VmFlags codes we act on; others are kept only in the text. */
#define PFV_SH	(1u << 0)	/* sh: shared */
#define PFV_GD	(1u << 1)	/* gd: grows down */
#define PFV_PF	(1u << 2)	/* pf: pure PFN range */
#define PFV_LO	(1u << 3)	/* lo: locked */
#define PFV_IO	(1u << 4)	/* io: memory-mapped I/O */
#define PFV_DC	(1u << 5)	/* dc: do not copy on fork */
#define PFV_DD	(1u << 6)	/* dd: do not include in core dumps */
#define PFV_HT	(1u << 7)	/* ht: hugetlb */
#define PFV_MM	(1u << 8)	/* mm: mixed map */
#define PFV_HG	(1u << 9)	/* hg: MADV_HUGEPAGE */
#define PFV_NH	(1u << 10)	/* nh: MADV_NOHUGEPAGE */
#define PFV_MG	(1u << 11)	/* mg: KSM mergeable */
#define PFV_WF	(1u << 12)	/* wf: wipe on fork */
#define PFV_UM	(1u << 13)	/* um: userfaultfd missing mode */
#define PFV_UW	(1u << 14)	/* uw: userfaultfd write-protect mode */
#define PFV_SS	(1u << 15)	/* ss: shadow stack */
#define PFV_UI	(1u << 16)	/* ui: userfaultfd minor mode */
#define PFV_SL	(1u << 17)	/* sl: sealed (mseal) */
#define PFV_DP	(1u << 18)	/* dp: droppable (MAP_DROPPABLE) */

struct procfs_vma {
	uint64_t start;
	uint64_t end;
	uint64_t pgoff;		/* byte offset in the file, as maps shows it */
	uint64_t inode;
	unsigned dev_major;
	unsigned dev_minor;
	char perms[5];		/* "rwxp" / "r--s" */
	uint32_t vmflags;	/* PFV_* */
	const char *name;	/* path, [special] or "": points into procfs_maps */
	const char *vmflags_text;	/* the VmFlags line's codes, for messages */
};

struct procfs_maps {
	struct procfs_vma *v;
	size_t n;
	char *text;		/* the smaps text the strings point into */
};

/*
 * Read the areas of PID from /proc/PID/smaps, and check that /proc/PID/maps
 * lists the same areas (the address space must hold still while we look).
 */
int procfs_read_maps(pid_t pid, struct procfs_maps *m, char *why, size_t len);

/*
 * Check that /proc/PID/maps lists exactly the areas of M (same bounds,
 * permissions, offset, device, inode and name): 0, or -EAGAIN with WHY
 * naming the first difference. Reading maps walks no page table, so this
 * costs the same at any size.
 */
int procfs_check_maps(pid_t pid, const struct procfs_maps *m, char *why, size_t len);

/* The same without the check against maps: for a process that may be changing its memory. */
int procfs_read_smaps(pid_t pid, struct procfs_maps *m, char *why, size_t len);
void procfs_maps_free(struct procfs_maps *m);

/*
 * Parse one maps (or smaps header) line, in place: LINE is cut into the
 * name. Returns 0 or -EINVAL.
 */
int procfs_parse_maps_line(char *line, struct procfs_vma *v);

/* Turn the text after "VmFlags:" into PFV_* bits. */
uint32_t procfs_parse_vmflags(const char *s);

/* The fields of /proc/PID/stat that the images need (proc(5) numbering). */
struct procfs_stat {
	char state;		/* 3 */
	pid_t ppid;		/* 4 */
	pid_t pgid;		/* 5 */
	pid_t sid;		/* 6 */
	long num_threads;	/* 20 */
	uint64_t start_code;	/* 26 */
	uint64_t end_code;	/* 27 */
	uint64_t start_stack;	/* 28 */
	uint64_t start_data;	/* 45 */
	uint64_t end_data;	/* 46 */
	uint64_t start_brk;	/* 47 */
	uint64_t arg_start;	/* 48 */
	uint64_t arg_end;	/* 49 */
	uint64_t env_start;	/* 50 */
	uint64_t env_end;	/* 51 */
};

int procfs_read_stat(pid_t pid, struct procfs_stat *st, char *why, size_t len);

/* Parse the text of a stat file (for tests). */
int procfs_parse_stat(const char *text, struct procfs_stat *st);

/* Read /proc/PID/auxv as 64-bit words, up to and including AT_NULL. *WORDS is malloc'd. */
int procfs_read_auxv(pid_t pid, uint64_t **words, size_t *n, char *why, size_t len);

/* List the threads of PID: PID first, then the rest ascending. *TIDS is malloc'd. */
int procfs_read_tasks(pid_t pid, uint32_t **tids, size_t *n, char *why, size_t len);

#endif
