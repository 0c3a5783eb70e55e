/* The one /proc reader: key-value lines, areas, stat, auxv, threads (procfs.h). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "procfs.h"
#include "why.h"

/* smaps of a process at the default vm.max_map_count is about 70 MiB. */
#define PROCFS_MAX_FILE	(512u << 20)

int procfs_field(const char *path, const char *key, char *val, size_t len)
{
	size_t klen = strlen(key);
	char line[512];
	FILE *f = fopen(path, "re");
	int ret = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char *v;

		if (strncmp(line, key, klen) || line[klen] != ':')
			continue;
		v = line + klen + 1;
		v += strspn(v, " \t");
		v[strcspn(v, "\n")] = 0;
		snprintf(val, len, "%s", v);
		ret = 0;
		break;
	}
	fclose(f);
	return ret;
}

int procfs_fd_kind(int fd, char *buf, size_t len)
{
	char path[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, buf, len - 1);
	if (n < 0) {
		int e = errno;

		snprintf(buf, len, "unreadable: %s", strerror(e));
		return -e;
	}
	buf[n] = 0;
	return 0;
}

pid_t procfs_child_of_tid(pid_t parent, pid_t tid)
{
	char path[64], ours[64], theirs[64];
	long long tgid, ppid;
	ssize_t n, m;

	if (parent <= 0 || tid <= 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/ns/pid", parent);
	n = readlink(path, theirs, sizeof(theirs));
	m = readlink("/proc/self/ns/pid", ours, sizeof(ours));
	if (n <= 0 || n != m || memcmp(ours, theirs, (size_t)n))
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/status", tid);
	if (procfs_field_num(path, "Tgid", &tgid) < 0 || tgid <= 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%lld/status", tgid);
	if (procfs_field_num(path, "PPid", &ppid) < 0 || ppid != parent)
		return 0;
	return (pid_t)tgid;
}

const char *procfs_text_field(const char *text, const char *key)
{
	size_t k = strlen(key);

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (!strncmp(p, key, k) && p[k] == ':')
			return p + k + 1;
	return NULL;
}

int procfs_field_num(const char *path, const char *key, long long *val)
{
	char buf[128], *end;
	int ret = procfs_field(path, key, buf, sizeof(buf));

	if (ret < 0)
		return ret;
	errno = 0;
	*val = strtoll(buf, &end, 10);
	return end == buf || errno ? -EINVAL : 0;
}

int procfs_uffd_api(const char *path, uint64_t *raw)
{
	unsigned long long api, feat;
	char val[128];
	int ret = procfs_field(path, "API", val, sizeof(val));

	if (ret < 0)
		return ret == -ENOENT ? -EINVAL : ret;
	if (sscanf(val, "%llx:%llx:", &api, &feat) != 2)
		return -EINVAL;
	*raw = feat;
	return 0;
}


/*
 * Read /proc/PID/NAME whole, NUL-terminated. A proc file has no size, so
 * grow the buffer until read() says end of file.
 */
static int slurp(pid_t pid, const char *name, char **out, size_t *lenp, char *why, size_t wlen)
{
	char path[64];
	size_t cap = 64 << 10, len = 0;
	char *buf;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return why_set(why, wlen, errno, "%s: %s", path,
			    errno == ENOENT ? "no such process" : strerror(errno));
	buf = malloc(cap);
	if (!buf) {
		close(fd);
		return why_set(why, wlen, ENOMEM, "%s: out of memory", path);
	}
	for (;;) {
		ssize_t n;

		if (cap - len < 4096) {
			char *nb;

			if (cap >= PROCFS_MAX_FILE) {
				free(buf);
				close(fd);
				return why_set(why, wlen, EFBIG, "%s: over %u MiB", path,
					    PROCFS_MAX_FILE >> 20);
			}
			nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				close(fd);
				return why_set(why, wlen, ENOMEM, "%s: out of memory", path);
			}
			buf = nb;
			cap *= 2;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;

			free(buf);
			close(fd);
			return why_set(why, wlen, e, "%s: read: %s", path,
				    e == ESRCH ? "the process is gone" : strerror(e));
		}
		if (n == 0)
			break;
		len += n;
	}
	close(fd);
	buf[len] = '\0';
	*out = buf;
	*lenp = len;
	return 0;
}

/* Parse a hex number at *P; it must start with a hex digit. */
static int hex_at(char **p, uint64_t *v)
{
	char *e;

	if (!isxdigit((unsigned char)**p))
		return -EINVAL;
	errno = 0;
	*v = strtoull(*p, &e, 16);
	if (errno)
		return -EINVAL;
	*p = e;
	return 0;
}

/* Require character C at *P and step over it. */
static int expect(char **p, char c)
{
	if (**p != c)
		return -EINVAL;
	(*p)++;
	return 0;
}

int procfs_parse_maps_line(char *line, struct procfs_vma *v)
{
	char *p = line, *e;
	uint64_t maj, min;

	memset(v, 0, sizeof(*v));
	if (hex_at(&p, &v->start) || expect(&p, '-') || hex_at(&p, &v->end) || expect(&p, ' '))
		return -EINVAL;
	for (int i = 0; i < 4; i++) {
		if (!*p || *p == ' ')
			return -EINVAL;
		v->perms[i] = *p++;
	}
	v->perms[4] = '\0';
	if (!strchr("r-", v->perms[0]) || !strchr("w-", v->perms[1]) ||
	    !strchr("x-", v->perms[2]) || !strchr("ps", v->perms[3]))
		return -EINVAL;
	if (expect(&p, ' ') || hex_at(&p, &v->pgoff) || expect(&p, ' ') || hex_at(&p, &maj) ||
	    expect(&p, ':') || hex_at(&p, &min) || expect(&p, ' '))
		return -EINVAL;
	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	errno = 0;
	v->inode = strtoull(p, &e, 10);
	if (errno)
		return -EINVAL;
	p = e;
	if (*p && *p != ' ')
		return -EINVAL;
	while (*p == ' ')
		p++;
	v->dev_major = maj;
	v->dev_minor = min;
	v->name = p;
	if (v->start >= v->end || (v->start | v->end) & 0xfff)
		return -EINVAL;
	return 0;
}

uint32_t procfs_parse_vmflags(const char *s)
{
	static const struct {
		char code[3];
		uint32_t bit;
	} tab[] = {
		{ "sh", PFV_SH }, { "gd", PFV_GD }, { "pf", PFV_PF }, { "lo", PFV_LO },
		{ "io", PFV_IO }, { "dc", PFV_DC }, { "dd", PFV_DD }, { "ht", PFV_HT },
		{ "mm", PFV_MM }, { "hg", PFV_HG }, { "nh", PFV_NH }, { "mg", PFV_MG },
		{ "wf", PFV_WF }, { "um", PFV_UM }, { "uw", PFV_UW }, { "ss", PFV_SS },
		{ "ui", PFV_UI }, { "sl", PFV_SL }, { "dp", PFV_DP },
	};
	uint32_t bits = 0;

	while (*s) {
		while (*s == ' ')
			s++;
		if (s[0] && s[1] && (s[2] == ' ' || s[2] == '\0' || s[2] == '\n')) {
			for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
				if (s[0] == tab[i].code[0] && s[1] == tab[i].code[1])
					bits |= tab[i].bit;
		}
		while (*s && *s != ' ')
			s++;
	}
	return bits;
}

/* Is LINE the header of an smaps block (it starts with a lower-case hex address)? */
static int is_header(const char *line)
{
	return isdigit((unsigned char)line[0]) || (line[0] >= 'a' && line[0] <= 'f');
}

int procfs_check_maps(pid_t pid, const struct procfs_maps *m, char *why, size_t len)
{
	char *text, *line, *save = NULL;
	size_t tlen, i = 0;
	int ret;

	ret = slurp(pid, "maps", &text, &tlen, why, len);
	if (ret < 0)
		return ret;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save), i++) {
		struct procfs_vma v;

		if (procfs_parse_maps_line(line, &v) < 0) {
			ret = why_set(why, len, EINVAL, "/proc/%d/maps: line %zu: cannot parse '%.80s'",
				   (int)pid, i + 1, line);
			break;
		}
		if (i >= m->n || v.start != m->v[i].start || v.end != m->v[i].end ||
		    strcmp(v.perms, m->v[i].perms) || v.inode != m->v[i].inode ||
		    v.pgoff != m->v[i].pgoff || v.dev_major != m->v[i].dev_major ||
		    v.dev_minor != m->v[i].dev_minor || strcmp(v.name, m->v[i].name)) {
			ret = why_set(why, len, EAGAIN,
				   "/proc/%d/maps and smaps disagree at line %zu (0x%llx-0x%llx): "
				   "the address space changed",
				   (int)pid, i + 1, (unsigned long long)v.start,
				   (unsigned long long)v.end);
			break;
		}
	}
	if (ret == 0 && i != m->n)
		ret = why_set(why, len, EAGAIN,
			   "/proc/%d/maps has %zu areas, smaps %zu: the address space changed",
			   (int)pid, i, m->n);
	free(text);
	return ret;
}

int procfs_read_smaps(pid_t pid, struct procfs_maps *m, char *why, size_t len)
{
	char *line, *next;
	size_t tlen, cap = 0, lineno = 0;
	int ret;

	memset(m, 0, sizeof(*m));
	ret = slurp(pid, "smaps", &m->text, &tlen, why, len);
	if (ret < 0)
		return ret;
	for (line = m->text; *line; line = next) {
		lineno++;
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		else
			next = line + strlen(line);
		if (is_header(line)) {
			if (m->n == cap) {
				size_t ncap = cap ? cap * 2 : 256;
				struct procfs_vma *nv = realloc(m->v, ncap * sizeof(*nv));

				if (!nv) {
					ret = why_set(why, len, ENOMEM, "/proc/%d/smaps: out of memory",
						   (int)pid);
					goto out;
				}
				m->v = nv;
				cap = ncap;
			}
			if (procfs_parse_maps_line(line, &m->v[m->n]) < 0) {
				ret = why_set(why, len, EINVAL,
					   "/proc/%d/smaps: line %zu: cannot parse '%.80s'", (int)pid,
					   lineno, line);
				goto out;
			}
			m->v[m->n].vmflags_text = "";
			if (m->n && m->v[m->n].start < m->v[m->n - 1].end) {
				ret = why_set(why, len, EINVAL,
					   "/proc/%d/smaps: line %zu: areas out of order", (int)pid,
					   lineno);
				goto out;
			}
			m->n++;
		} else if (!strncmp(line, "VmFlags:", 8)) {
			if (!m->n) {
				ret = why_set(why, len, EINVAL,
					   "/proc/%d/smaps: line %zu: VmFlags before any area",
					   (int)pid, lineno);
				goto out;
			}
			m->v[m->n - 1].vmflags_text = line + 9;
			m->v[m->n - 1].vmflags = procfs_parse_vmflags(line + 8);
		}
	}
	ret = 0;
out:
	if (ret < 0)
		procfs_maps_free(m);
	return ret;
}

int procfs_read_maps(pid_t pid, struct procfs_maps *m, char *why, size_t len)
{
	int ret = procfs_read_smaps(pid, m, why, len);

	if (ret == 0 && (ret = procfs_check_maps(pid, m, why, len)) < 0)
		procfs_maps_free(m);
	return ret;
}

void procfs_maps_free(struct procfs_maps *m)
{
	free(m->v);
	free(m->text);
	memset(m, 0, sizeof(*m));
}

int procfs_parse_stat(const char *text, struct procfs_stat *st)
{
	/* Fields 3 to 51 follow the comm, whose ')' is the last one in the line. */
	const char *p = strrchr(text, ')');
	uint64_t f[52] = { 0 };
	int k;

	memset(st, 0, sizeof(*st));
	if (!p || p[1] != ' ')
		return -EINVAL;
	p += 2;
	if (!*p || *p == ' ')
		return -EINVAL;
	st->state = *p++;
	for (k = 4; k <= 51; k++) {
		char *e;

		if (*p != ' ')
			return -EINVAL;
		p++;
		errno = 0;
		if (*p == '-')
			f[k] = (uint64_t)strtoll(p, &e, 10);
		else
			f[k] = strtoull(p, &e, 10);
		if (e == p || errno)
			return -EINVAL;
		p = e;
	}
	st->ppid = f[4];
	st->pgid = f[5];
	st->sid = f[6];
	st->num_threads = f[20];
	st->start_code = f[26];
	st->end_code = f[27];
	st->start_stack = f[28];
	st->start_data = f[45];
	st->end_data = f[46];
	st->start_brk = f[47];
	st->arg_start = f[48];
	st->arg_end = f[49];
	st->env_start = f[50];
	st->env_end = f[51];
	return 0;
}

int procfs_read_stat(pid_t pid, struct procfs_stat *st, char *why, size_t len)
{
	char *text;
	size_t tlen;
	int ret;

	ret = slurp(pid, "stat", &text, &tlen, why, len);
	if (ret < 0)
		return ret;
	ret = procfs_parse_stat(text, st);
	if (ret < 0)
		why_set(why, len, EINVAL, "/proc/%d/stat: cannot parse fields 3 to 51 of '%.120s'",
		     (int)pid, text);
	else if (!st->start_code && !st->end_code && !st->start_stack)
		ret = why_set(why, len, ESRCH,
			   "/proc/%d/stat: no address space (a kernel thread, or exiting)",
			   (int)pid);
	free(text);
	return ret;
}

int procfs_read_auxv(pid_t pid, uint64_t **words, size_t *n, char *why, size_t len)
{
	char *text;
	size_t tlen, nw;
	uint64_t *w;
	int ret;

	ret = slurp(pid, "auxv", &text, &tlen, why, len);
	if (ret < 0)
		return ret;
	if (tlen == 0 || tlen % 16) {
		free(text);
		return why_set(why, len, EINVAL, "/proc/%d/auxv: %zu bytes, not whole pairs of words",
			    (int)pid, tlen);
	}
	w = malloc(tlen);
	if (!w) {
		free(text);
		return why_set(why, len, ENOMEM, "/proc/%d/auxv: out of memory", (int)pid);
	}
	memcpy(w, text, tlen);
	free(text);
	for (nw = 0; nw < tlen / 8; nw += 2)
		if (w[nw] == 0) {	/* AT_NULL ends the vector; keep it */
			nw += 2;
			break;
		}
	*words = w;
	*n = nw;
	return 0;
}

/* Order tids ascending. */
static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

int procfs_read_tasks(pid_t pid, uint32_t **tids, size_t *n, char *why, size_t len)
{
	char path[64];
	struct dirent *de;
	uint32_t *t = NULL;
	size_t cnt = 0, cap = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (!d)
		return why_set(why, len, errno, "%s: %s", path,
			    errno == ENOENT ? "no such process" : strerror(errno));
	while ((de = readdir(d))) {
		char *e;
		unsigned long v;

		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		v = strtoul(de->d_name, &e, 10);
		if (*e || v == 0 || v > INT32_MAX)
			continue;
		if (cnt == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			uint32_t *nt = realloc(t, ncap * sizeof(*nt));

			if (!nt) {
				free(t);
				closedir(d);
				return why_set(why, len, ENOMEM, "%s: out of memory", path);
			}
			t = nt;
			cap = ncap;
		}
		t[cnt++] = v;
	}
	closedir(d);
	if (!cnt) {
		free(t);
		return why_set(why, len, ESRCH, "%s: no threads (the process is exiting)", path);
	}
	qsort(t, cnt, sizeof(*t), cmp_u32);
	for (size_t i = 0; i < cnt; i++)
		if (t[i] == (uint32_t)pid) {
			memmove(t + 1, t, i * sizeof(*t));
			t[0] = pid;
			break;
		}
	if (t[0] != (uint32_t)pid) {
		free(t);
		return why_set(why, len, ESRCH, "%s: the main thread is gone", path);
	}
	*tids = t;
	*n = cnt;
	return 0;
}
