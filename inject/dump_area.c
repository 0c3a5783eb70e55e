/*
 * Area classification for a dump: see dump_area.h. The refusals name the
 * area and the reason, for a person to read.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "dump_area.h"
#include "dump_shmem.h"
#include "imgtask.h"
#include "pagemap.h"
#include "ptrace.h"

#define DUMP_PAGE	4096ull

/* The eager ranges being gathered, and the areas they must lie in. */
struct eager {
	struct pt *pt;
	const struct procfs_stat *stat;
	size_t nauxv;
	const VmaEntry *vmas;
	size_t nvmas;
	struct dump_range *r;
	size_t n;
};

/* The madvise state CRIU keeps in vma_entry.madv: 1 << MADV_* per VmFlags code. */
static uint64_t vmflags_madv(uint32_t f)
{
	uint64_t m = 0;

	if (f & PFV_DC)
		m |= 1ull << MADV_DONTFORK;
	if (f & PFV_DD)
		m |= 1ull << MADV_DONTDUMP;
	if (f & PFV_MG)
		m |= 1ull << MADV_MERGEABLE;
	if (f & PFV_HG)
		m |= 1ull << MADV_HUGEPAGE;
	if (f & PFV_NH)
		m |= 1ull << MADV_NOHUGEPAGE;
	if (f & PFV_WF)
		m |= 1ull << MADV_WIPEONFORK;
	return m;
}

static bool has_suffix(const char *s, const char *suf)
{
	size_t n = strlen(s), k = strlen(suf);

	return n >= k && !strcmp(s + n - k, suf);
}

int dump_classify(const struct procfs_vma *v, VmaEntry *e, struct dump_area *a, char *why,
		  size_t len)
{
	static const VmaEntry init = VMA_ENTRY__INIT;
	const char *name = v->name ? v->name : "";
	bool shared = v->perms[3] == 's';
	unsigned long long s = v->start, t = v->end;
	uint64_t madv;

	*e = init;
	memset(a, 0, sizeof(*a));
	e->start = v->start;
	e->end = v->end;
	e->pgoff = v->pgoff;
	e->fd = -1;
	e->prot = (v->perms[0] == 'r' ? PROT_READ : 0) | (v->perms[1] == 'w' ? PROT_WRITE : 0) |
		  (v->perms[2] == 'x' ? PROT_EXEC : 0);
	madv = vmflags_madv(v->vmflags);
	if (madv) {
		e->has_madv = 1;
		e->madv = madv;
	}
	a->note_locked = v->vmflags & PFV_LO;

	if (v->vmflags & PFV_HT) {
		/*
		 * Anonymous private hugetlb (MAP_HUGETLB|MAP_PRIVATE), as CRIU
		 * records it: dumped and served in whole huge pages, whose size
		 * dump_area_classify_all() reads from smaps. Shared hugetlb and
		 * hugetlbfs files are refused.
		 */
		if (shared || strcmp(name, "/anon_hugepage (deleted)"))
			goto refuse_ht;
		e->status = VMA_AREA_REGULAR | VMA_ANON_PRIVATE;
		e->flags = MAP_PRIVATE | MAP_ANONYMOUS | VMA_MAP_HUGETLB;
		e->shmid = v->inode;
		a->kind = DUMP_ANON;
		a->hpage = 1;	/* the size comes later */
		a->pe_flags = PE_LAZY | PE_PRESENT;
		return 0;
	}
	if (v->vmflags & (PFV_UM | PFV_UW | PFV_UI)) {
		snprintf(why, len, "0x%llx-0x%llx %s is registered with a userfaultfd "
			 "(VmFlags: %s): its missing pages are known only to that fd's owner",
			 s, t, name[0] ? name : "(anonymous)", v->vmflags_text);
		return -ENOTSUP;
	}
	if (v->vmflags & PFV_SS) {
		snprintf(why, len, "0x%llx-0x%llx is a shadow stack: not supported", s, t);
		return -ENOTSUP;
	}

	/* The kernel's own areas: recorded so the layout is whole, never read. */
	if (!strcmp(name, "[vvar]") || !strcmp(name, "[vvar_vclock]")) {
		e->status = VMA_AREA_VVAR | VMA_ANON_PRIVATE;
		e->flags = MAP_PRIVATE | MAP_ANONYMOUS;
		return 0;
	}
	if (!strcmp(name, "[vsyscall]")) {
		e->status = VMA_AREA_VSYSCALL | VMA_ANON_PRIVATE;
		e->flags = MAP_PRIVATE | MAP_ANONYMOUS;
		return 0;
	}
	if (!strcmp(name, "[vdso]")) {
		e->status = VMA_AREA_REGULAR | VMA_AREA_VDSO | VMA_ANON_PRIVATE;
		e->flags = MAP_PRIVATE | MAP_ANONYMOUS;
		a->kind = DUMP_ALL;
		a->pe_flags = PE_PRESENT;
		return 0;
	}
	if (v->vmflags & (PFV_PF | PFV_IO | PFV_MM)) {
		snprintf(why, len, "0x%llx-0x%llx %s maps device memory (VmFlags: %s): "
			 "its contents cannot be dumped", s, t, name[0] ? name : "(no name)",
			 v->vmflags_text);
		return -ENOTSUP;
	}
	if (shared && dump_shmem_area(v)) {
		/*
		 * Shared anonymous memory or a memfd, recorded as CRIU 4.2 does:
		 * a memfd file (shmid becomes its files.img id) whose object's
		 * contents dump_shmem.c writes once for the whole dump.
		 */
		e->status = VMA_AREA_REGULAR | VMA_FILE_SHARED | VMA_AREA_MEMFD;
		e->flags = MAP_SHARED;
		e->shmid = v->inode;
		return 0;
	}
	if (shared && !strncmp(name, "/SYSV", 5)) {
		snprintf(why, len, "0x%llx-0x%llx %s is System V shared memory: not supported "
			 "(CRIU restores it from images of the ipc namespace, which are not "
			 "dumped; `lazy` hands it over)", s, t, name);
		return -ENOTSUP;
	}
	if (shared && v->inode == 0) {
		snprintf(why, len, "0x%llx-0x%llx %s is shared memory of no file: not supported",
			 s, t, name[0] ? name : "(no name)");
		return -ENOTSUP;
	}
	if (name[0] == '[' && strcmp(name, "[heap]") && strcmp(name, "[stack]") &&
	    strncmp(name, "[stack:", 7) && strncmp(name, "[anon:", 6)) {
		snprintf(why, len, "0x%llx-0x%llx is the special mapping %s: not supported", s, t,
			 name);
		return -ENOTSUP;
	}

	if (v->inode == 0) {
		/* Anonymous private: [heap], [stack], [anon:NAME] or nameless. */
		e->status = VMA_AREA_REGULAR | VMA_ANON_PRIVATE;
		e->flags = MAP_PRIVATE | MAP_ANONYMOUS;
		if (!strcmp(name, "[heap]"))
			e->status |= VMA_AREA_HEAP;
		if (!strcmp(name, "[stack]")) {
			e->status |= VMA_AREA_STACK;
			e->flags |= MAP_GROWSDOWN;
		}
		if (v->vmflags & PFV_GD)
			e->flags |= MAP_GROWSDOWN;
		a->kind = DUMP_ANON;
		/*
		 * Never lazy: a forked child must see a wipe-on-fork area empty,
		 * not the parent's pages; a sealed area cannot be dropped; a
		 * droppable one cannot be registered with a userfaultfd.
		 */
		a->pe_flags = v->vmflags & (PFV_WF | PFV_SL | PFV_DP) ? PE_PRESENT :
			      PE_LAZY | PE_PRESENT;
		return 0;
	}

	e->shmid = v->inode;
	if (shared) {
		if (has_suffix(name, " (deleted)")) {
			snprintf(why, len, "0x%llx-0x%llx is a shared mapping of the deleted file "
				 "%s: its contents would be lost", s, t, name);
			return -ENOTSUP;
		}
		e->status = VMA_AREA_REGULAR | VMA_FILE_SHARED;
		e->flags = MAP_SHARED;
		return 0;
	}
	e->status = VMA_AREA_REGULAR | VMA_FILE_PRIVATE;
	if (dump_shmem_area(v))
		e->status |= VMA_AREA_MEMFD;	/* a memfd mapped private: its file is the memfd */
	e->flags = MAP_PRIVATE;
	if (v->vmflags & PFV_GD)
		e->flags |= MAP_GROWSDOWN;
	a->kind = DUMP_COW;
	a->pe_flags = PE_PRESENT;
	return 0;

refuse_ht:
	snprintf(why, len, "0x%llx-0x%llx %s is %s hugetlb memory: not supported (only "
		 "anonymous private hugetlb is)", s, t, name[0] ? name : "(no name)",
		 shared ? "shared" : "file-backed");
	return -ENOTSUP;
}

/* The page size of PID's area at START, from the KernelPageSize line of smaps; 0 if unknown. */
static uint64_t smaps_page_size(pid_t pid, uint64_t start)
{
	char path[64], line[512];
	unsigned long long s, kb;
	bool in = false;
	uint64_t size = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%llx-", &s) == 1 && strchr(line, ' ') > strchr(line, '-'))
			in = s == start;
		else if (in && sscanf(line, "KernelPageSize: %llu kB", &kb) == 1) {
			size = kb << 10;
			break;
		}
	}
	fclose(f);
	return size;
}

/*
 * Is V shared memory whose contents only the process's mappings hold (shared
 * anonymous, memfd or another deleted file, System V shm)? A hand-over
 * leaves it resident; a dump refuses it (its contents would be lost).
 */
static bool shared_memory(const struct procfs_vma *v)
{
	const char *name = v->name ? v->name : "";

	return v->perms[3] == 's' && !(v->vmflags & (PFV_HT | PFV_PF | PFV_IO | PFV_MM)) &&
	       (v->inode == 0 || !strcmp(name, "/dev/zero (deleted)") ||
		!strncmp(name, "[anon_shmem:", 12) || !strncmp(name, "/SYSV", 5) ||
		has_suffix(name, " (deleted)"));
}

/* Is V shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS, reachable only through mappings)? */
static bool shared_anon(const struct procfs_vma *v)
{
	const char *name = v->name ? v->name : "";

	return v->perms[3] == 's' && v->inode &&
	       (!strcmp(name, "/dev/zero (deleted)") || !strncmp(name, "[anon_shmem:", 12));
}

static bool in_set(const pid_t *set, size_t n, long pid)
{
	for (size_t i = 0; i < n; i++)
		if (set[i] == pid)
			return true;
	return false;
}

/* The object of O (N of them) at MAJ:MIN INO, or -1. */
static long obj_index(const struct dump_area_obj *o, size_t n, unsigned maj, unsigned min,
		      uint64_t ino)
{
	for (size_t i = 0; i < n; i++)
		if (o[i].ino == ino && o[i].dev_major == maj && o[i].dev_minor == min)
			return (long)i;
	return -1;
}

/* Can a descriptor whose /proc link reads LINK be shmem memory? */
static bool shmem_link(const char *link)
{
	return !strncmp(link, "/memfd:", 7) || !strncmp(link, "/dev/zero", 9) ||
	       !strncmp(link, "/[anon_shmem:", 13) || !strncmp(link, "[anon_shmem:", 12);
}

/*
 * May a process whose /proc entry failed with E be passed over? When it is
 * gone (ENOENT, ESRCH), and when this tool may not look at it (EACCES,
 * EPERM: an LSM or another user namespace guards it, as some machines' pid
 * 1): a process root cannot inspect is taken to share nothing with the
 * target, as the man page says. Any other error stops the scan.
 */
static bool unreadable_ok(int e)
{
	return e == ENOENT || e == ESRCH || e == EACCES || e == EPERM;
}

/* Process OTHER's maps: does one of O map? -errno when they cannot be read. */
static long scan_maps(long other, const struct dump_area_obj *o, size_t n)
{
	char path[64], line[512];
	unsigned maj, min;
	unsigned long long ino;
	long found = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/maps", other);
	f = fopen(path, "re");
	if (!f)
		return unreadable_ok(errno) ? -1 : -errno;
	while (found < 0 && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%*x-%*x %*s %*x %x:%x %llu", &maj, &min, &ino) == 3 && ino)
			found = obj_index(o, n, maj, min, ino);
		/* A line longer than the buffer: skip its tail. */
		while (!strchr(line, '\n') && fgets(line, sizeof(line), f))
			;
	}
	fclose(f);
	return found;
}

/* Process OTHER's descriptors: does one hold one of O open? -errno when unreadable. */
static long scan_fds(long other, const struct dump_area_obj *o, size_t n)
{
	char path[64];
	struct dirent *fe;
	long found = -1;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%ld/fd", other);
	d = opendir(path);
	if (!d)
		return unreadable_ok(errno) ? -1 : -errno;
	while (found < 0 && (fe = readdir(d))) {
		char link[64];
		ssize_t k;
		struct stat st;

		if (fe->d_name[0] == '.')
			continue;
		k = readlinkat(dirfd(d), fe->d_name, link, sizeof(link) - 1);
		if (k <= 0)
			continue;	/* closed meanwhile */
		link[k] = '\0';
		/* Only shmem is stat'ed: a hung NFS or FUSE file elsewhere cannot stall us. */
		if (shmem_link(link) && fstatat(dirfd(d), fe->d_name, &st, 0) == 0)
			found = obj_index(o, n, major(st.st_dev), minor(st.st_dev), st.st_ino);
	}
	closedir(d);
	return found;
}

pid_t dump_area_shmem_user(const struct dump_area_obj *o, size_t n, const pid_t *skip,
			   size_t nskip, unsigned what, size_t *which)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	long self = (long)getpid();
	pid_t user = 0;

	if (!d)
		return -errno;
	while (user == 0 && (de = readdir(d))) {
		char *end;
		long other = strtol(de->d_name, &end, 10);
		bool skipped = in_set(skip, nskip, other);
		long k = -1;

		if (*end || other <= 0 || other == self)
			continue;
		if ((what & DUMP_AREA_MAPS) && !skipped)
			k = scan_maps(other, o, n);
		if (k == -1 && (what & DUMP_AREA_FDS) && (!skipped || (what & DUMP_AREA_FDS_ALL)))
			k = scan_fds(other, o, n);
		if (k < -1)
			user = (pid_t)k;
		else if (k >= 0) {
			user = (pid_t)other;
			if (which)
				*which = (size_t)k;
		}
	}
	closedir(d);
	return user;
}

bool dump_area_mapped_elsewhere(pid_t pid, unsigned dev_major, unsigned dev_minor,
				uint64_t inode)
{
	struct dump_area_obj o = { dev_major, dev_minor, inode };

	return dump_area_shmem_user(&o, 1, &pid, 1, DUMP_AREA_MAPS, NULL) != 0;
}

bool dump_area_open_anywhere(unsigned dev_major, unsigned dev_minor, uint64_t inode)
{
	struct dump_area_obj o = { dev_major, dev_minor, inode };

	return dump_area_shmem_user(&o, 1, NULL, 0, DUMP_AREA_FDS, NULL) != 0;
}

/* Is V a memfd mapped shared (its name "/memfd:NAME (deleted)")? */
static bool shared_memfd(const struct procfs_vma *v)
{
	return v->perms[3] == 's' && v->inode && v->name && !strncmp(v->name, "/memfd:", 7);
}

/*
 * May the memfd under area V of PID have its pages punched and copied back
 * by the manager? Not when writes are sealed (F_SEAL_WRITE or
 * F_SEAL_FUTURE_WRITE: no punch, and a read-only sharer's data is final), nor
 * when the seals cannot be read.
 */
static bool memfd_unsealed(pid_t pid, const struct procfs_vma *v)
{
	char path[96];
	int fd, seals;

	snprintf(path, sizeof(path), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, (int)pid,
		 v->start, v->end);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	seals = fcntl(fd, F_GET_SEALS);
	close(fd);
	return seals >= 0 && !(seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE));
}

/*
 * Can area I of M be served lazily as shared memory (DUMP_SHMEM)? Shared
 * anonymous memory, or a memfd mapped shared, that no other process maps
 * (its pages could not be taken from under a sharer that no userfaultfd
 * watches), not locked, and every area of this process on the same object
 * qualifies too (punching the object takes the pages from all of them). A
 * memfd must also be open at no descriptor, in this process or any other
 * (read(2) of a punched page gives zeros, with no fault to serve), and not
 * sealed against writes. System V segments can be reached without a
 * mapping (a later shmat()): they stay resident, as do memfds that fail
 * these checks.
 */
static bool shmem_lazy(const struct procfs_maps *m, pid_t pid, size_t i)
{
	const struct procfs_vma *v = &m->v[i];
	bool memfd = false;

	for (size_t k = 0; k < m->n; k++) {
		const struct procfs_vma *u = &m->v[k];

		if (u->inode != v->inode || u->dev_major != v->dev_major ||
		    u->dev_minor != v->dev_minor)
			continue;
		if (u->vmflags & (PFV_LO | PFV_UM | PFV_UW | PFV_UI))
			return false;
		if (shared_memfd(u))
			memfd = true;
		else if (!shared_anon(u))
			return false;
	}
	if (memfd && (!memfd_unsealed(pid, v) ||
		      dump_area_open_anywhere(v->dev_major, v->dev_minor, v->inode)))
		return false;
	return !dump_area_mapped_elsewhere(pid, v->dev_major, v->dev_minor, v->inode);
}

int dump_area_classify_all(const struct procfs_maps *m, pid_t pid, bool no_locked,
			   bool allow_wp, bool resident_shared, VmaEntry **vmas,
			   struct dump_area **areas, char *why, size_t len)
{
	char what[512];

	*vmas = calloc(m->n ? m->n : 1, sizeof(**vmas));
	*areas = calloc(m->n ? m->n : 1, sizeof(**areas));
	if (!*vmas || !*areas) {
		snprintf(why, len, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < m->n; i++) {
		const struct procfs_vma *v = &m->v[i];
		const struct dump_area *a = &(*areas)[i];

		struct procfs_vma vv = *v;

		if (allow_wp)
			vv.vmflags &= ~PFV_UW;
		if (resident_shared && shared_memory(&vv) &&
		    !(vv.vmflags & (PFV_UM | PFV_UW | PFV_UI))) {
			/*
			 * A hand-over. Recorded as CRIU records shared anonymous
			 * memory. Served lazily when shmem_lazy() says it can be;
			 * otherwise the process keeps it resident, with no pages in
			 * the images, and its sharers see every write.
			 */
			VmaEntry *e = &(*vmas)[i];
			static const VmaEntry init = VMA_ENTRY__INIT;

			*e = init;
			e->start = v->start;
			e->end = v->end;
			e->pgoff = v->pgoff;
			e->fd = -1;
			e->shmid = v->inode;
			e->prot = (v->perms[0] == 'r' ? PROT_READ : 0) |
				  (v->perms[1] == 'w' ? PROT_WRITE : 0) |
				  (v->perms[2] == 'x' ? PROT_EXEC : 0);
			e->status = VMA_AREA_REGULAR | VMA_ANON_SHARED;
			e->flags = MAP_SHARED | MAP_ANONYMOUS;
			memset(&(*areas)[i], 0, sizeof((*areas)[i]));
			(*areas)[i].note_locked = v->vmflags & PFV_LO;
			if (shmem_lazy(m, pid, i)) {
				(*areas)[i].kind = DUMP_SHMEM;
				(*areas)[i].pe_flags = PE_LAZY | PE_PRESENT;
			}
		} else if (dump_classify(&vv, &(*vmas)[i], &(*areas)[i], what, sizeof(what)) < 0) {
			snprintf(why, len, "cannot dump: %s", what);
			return -ENOTSUP;
		} else if (resident_shared) {
			/* A hand-over records a memfd mapped private as any private file. */
			(*vmas)[i].status &= ~VMA_AREA_MEMFD;
		}
		if (a->hpage) {
			uint64_t hs = smaps_page_size(pid, v->start);
			unsigned shift = hs ? (unsigned)__builtin_ctzll(hs) : 0;

			if (!hs || (hs & (hs - 1)) || shift > 30 || shift <= 12 ||
			    ((v->start | v->end) & (hs - 1))) {
				snprintf(why, len, "cannot dump: 0x%" PRIx64 "-0x%" PRIx64 " is hugetlb "
					 "memory of page size %" PRIu64 " (from smaps): not supported",
					 v->start, v->end, hs);
				return -ENOTSUP;
			}
			(*areas)[i].hpage = hs;
			(*vmas)[i].flags |= shift << VMA_MAP_HUGE_SHIFT;
		}
		if (a->note_locked && no_locked) {
			snprintf(why, len, "0x%" PRIx64 "-0x%" PRIx64 " %s is locked in memory "
				 "(mlock): its pages cannot be handed over", v->start, v->end,
				 v->name[0] ? v->name : "(anonymous)");
			return -ENOTSUP;
		}
		if (a->note_locked)
			fprintf(stderr, "uffd-inject: note: pid %d: 0x%" PRIx64 "-0x%" PRIx64
				" %s is locked in memory; dumped, but the images do not record "
				"the lock\n", (int)pid, v->start, v->end,
				v->name[0] ? v->name : "(anonymous)");
	}
	return 0;
}

bool dump_range_has(const struct dump_range *r, size_t n, uint64_t addr)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (addr < r[mid].start)
			hi = mid;
		else if (addr >= r[mid].end)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

static int range_cmp(const void *a, const void *b)
{
	const struct dump_range *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* Add [START, END) rounded out to pages and clipped to the area holding ADDR. */
static int eager_add(struct eager *eg, uint64_t addr, uint64_t start, uint64_t end)
{
	struct dump_range *nr;

	start &= ~(DUMP_PAGE - 1);
	end = (end + DUMP_PAGE - 1) & ~(DUMP_PAGE - 1);
	for (size_t i = 0; i < eg->nvmas; i++) {
		const VmaEntry *v = &eg->vmas[i];

		if (addr < v->start || addr >= v->end)
			continue;
		if (start < v->start)
			start = v->start;
		if (end > v->end)
			end = v->end;
		if (start >= end)
			return 0;
		nr = realloc(eg->r, (eg->n + 1) * sizeof(*nr));
		if (!nr)
			return -ENOMEM;
		eg->r = nr;
		eg->r[eg->n++] = (struct dump_range){ start, end, (uint32_t)i };
		return 0;
	}
	return 0;	/* not mapped: nothing to keep */
}

/* Count the strings in the target's argument and environment areas. */
static uint64_t count_strings(struct eager *eg, uint64_t start, uint64_t end)
{
	uint8_t buf[4096];
	uint64_t n = 0;

	if (end - start > (8u << 20))	/* more than the kernel lets exec pass */
		end = start + (8u << 20);
	while (start < end) {
		size_t k = end - start < sizeof(buf) ? end - start : sizeof(buf);

		if (pt_read(eg->pt, start, buf, k) < 0)
			return (end - start);	/* unreadable: assume the worst */
		for (size_t i = 0; i < k; i++)
			n += buf[i] == 0;
		start += k;
	}
	return n;
}

/*
 * Find the pages other processes read through the kernel, which must not
 * wait for a page server: the argument, environment and auxiliary vector
 * block at the top of the main stack (argc and the pointer arrays below
 * start_stack included), the stack page under every thread's stack pointer
 * and the one below it (signal frames), every thread's rseq area, and what
 * the kernel writes at thread exit (clear_child_tid, the robust list).
 */
static int find_eager(struct eager *eg)
{
	const struct procfs_stat *st = eg->stat;
	uint64_t lo, strings;
	int ret;

	if (st->arg_start && st->env_end > st->arg_start) {
		/* Below start_stack lie argc, the argv and envp arrays, auxv,
		 * the AT_RANDOM bytes and the platform strings. */
		strings = count_strings(eg, st->arg_start, st->env_end);
		lo = st->start_stack < st->arg_start ? st->start_stack : st->arg_start;
		lo = lo > 8 * (strings + 3 + eg->nauxv) + 256 ? lo - 8 * (strings + 3 + eg->nauxv) - 256 : 0;
		ret = eager_add(eg, st->arg_start, lo, st->env_end);
		if (ret < 0)
			return ret;
	}
	for (int i = 0; i < eg->pt->nr_threads; i++) {
		struct __ptrace_rseq_configuration rc;
		uint64_t sp, tls, head = 0;
		size_t hlen = 0;

		if (pt_thread_sp(eg->pt, i, &sp) == 0) {
			ret = eager_add(eg, sp, sp - DUMP_PAGE, sp + 1);
			if (ret < 0)
				return ret;
		}
		/*
		 * What the kernel writes as a thread exits, when a missing
		 * page can no longer be waited for: the clear_child_tid word
		 * and the robust futex list. glibc keeps both in its struct
		 * pthread at the thread pointer; the list head is asked too.
		 */
		if (pt_thread_tls(eg->pt, i, &tls) == 0 && tls) {
			ret = eager_add(eg, tls, tls, tls + 2 * DUMP_PAGE);
			if (ret < 0)
				return ret;
		}
		if (syscall(SYS_get_robust_list, eg->pt->th[i].tid, &head, &hlen) == 0 && head) {
			ret = eager_add(eg, head, head, head + (hlen ? hlen : 24));
			if (ret < 0)
				return ret;
		}
		memset(&rc, 0, sizeof(rc));
		if (ptrace(PTRACE_GET_RSEQ_CONFIGURATION, eg->pt->th[i].tid, sizeof(rc), &rc) > 0 &&
		    rc.rseq_abi_pointer && rc.rseq_abi_size) {
			ret = eager_add(eg, rc.rseq_abi_pointer, rc.rseq_abi_pointer,
					rc.rseq_abi_pointer + rc.rseq_abi_size);
			if (ret < 0)
				return ret;
		}
	}
	/* Sort and merge. */
	if (eg->n) {
		size_t k = 0;

		qsort(eg->r, eg->n, sizeof(*eg->r), range_cmp);
		for (size_t i = 1; i < eg->n; i++) {
			if (eg->r[i].start <= eg->r[k].end) {
				if (eg->r[i].end > eg->r[k].end)
					eg->r[k].end = eg->r[i].end;
			} else {
				eg->r[++k] = eg->r[i];
			}
		}
		eg->n = k + 1;
	}
	return 0;
}

int dump_area_find_eager(struct pt *pt, const struct procfs_stat *st, size_t nauxv,
			 const VmaEntry *vmas, size_t nvmas, struct dump_range **eager,
			 size_t *neager)
{
	struct eager e = { pt, st, nauxv, vmas, nvmas, NULL, 0 };
	int ret = find_eager(&e);

	*eager = e.r;
	*neager = e.n;
	return ret;
}
