/* Key-value lines of /proc files. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "procinfo.h"

int procinfo_field(const char *path, const char *key, char *val, size_t len)
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
