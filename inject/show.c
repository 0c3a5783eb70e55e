/* Summarize an image directory: per task, VMAs, entries and page counts. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "files.pb-c.h"
#include "image.h"
#include "imgtask.h"
#include "pagemap.h"
#include "pagemap.pb-c.h"
#include "inventory.pb-c.h"
#include "show.h"

static json_object *task_json(const struct img_task *t)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "pid", json_object_new_int64(t->pid));
	json_object_object_add(o, "vmas", json_object_new_uint64(t->mm ? t->mm->n_vmas : 0));
	json_object_object_add(o, "entries", json_object_new_uint64(t->pm ? t->pm->n : 0));
	json_object_object_add(o, "present_pages",
			       json_object_new_uint64(t->pm ? t->pm->present_pages : 0));
	json_object_object_add(o, "lazy_pages", json_object_new_uint64(t->pm ? t->pm->lazy_pages : 0));
	json_object_object_add(o, "parent_pages",
			       json_object_new_uint64(t->pm ? t->pm->parent_pages : 0));
	return o;
}

/* Count the entries and present pages of pagemap-shmem-SHMID.img; 0 or -errno with ERR. */
static int shmem_pages(int dirfd, uint64_t shmid, size_t *entries, uint64_t *present,
		       uint32_t *pages_id, struct img_err *err)
{
	char name[64];
	struct img_reader r;
	ProtobufCMessage *m;
	int ret;

	*entries = 0;
	*present = 0;
	snprintf(name, sizeof(name), "pagemap-shmem-%" PRIu64 ".img", shmid);
	ret = img_open(&r, dirfd, name, IMG_SHMEM_PAGEMAP_MAGIC, err);
	if (ret == -ENOENT)	/* both CRIU and uffd-inject write one for every object */
		return img_errf(err, ENOENT, name, 0, "missing: memfd.img names the object, but "
				"its contents are not in the dump");
	if (ret < 0)
		return ret;
	ret = img_next(&r, &pagemap_head__descriptor, &m, err);
	if (ret == 0)
		ret = img_errf(err, EINVAL, name, 1, "missing: the file has no pagemap_head record");
	if (ret > 0) {
		*pages_id = ((PagemapHead *)m)->pages_id;
		protobuf_c_message_free_unpacked(m, NULL);
	}
	while (ret > 0 && (ret = img_next(&r, &pagemap_entry__descriptor, &m, err)) > 0) {
		const PagemapEntry *e = (const PagemapEntry *)m;
		uint64_t nr = e->has_nr_pages ? e->nr_pages : e->compat_nr_pages;

		(*entries)++;
		if (!e->has_flags || (e->flags & PE_PRESENT))
			*present += nr;
		protobuf_c_message_free_unpacked(m, NULL);
	}
	img_close(&r);
	return ret;
}

/*
 * Report the shared memory objects of memfd.img (shared anonymous memory and
 * memfds, each once for the whole dump) and their pages. 0 (also when there
 * is no memfd.img), or 1 after saying what is wrong.
 */
static int show_shmem(int dirfd, const char *path, json_object *all, FILE *out)
{
	struct img_reader r;
	struct img_err err;
	ProtobufCMessage *m;
	json_object *arr = NULL;
	bool head = false;
	int ret;

	ret = img_open(&r, dirfd, "memfd.img", IMG_MEMFD_INODE_MAGIC, &err);
	if (ret == -ENOENT)
		return 0;
	if (ret < 0) {
		fprintf(stderr, "uffd-inject: %s/%s\n", path, err.msg);
		return 1;
	}
	if (all) {
		arr = json_object_new_array();
		json_object_object_add(all, "shmem", arr);
	}
	while ((ret = img_next(&r, &memfd_inode_entry__descriptor, &m, &err)) > 0) {
		const MemfdInodeEntry *e = (const MemfdInodeEntry *)m;
		size_t entries;
		uint64_t present;
		uint32_t pages_id = 0;

		ret = shmem_pages(dirfd, e->shmid, &entries, &present, &pages_id, &err);
		if (ret < 0) {
			protobuf_c_message_free_unpacked(m, NULL);
			break;
		}
		if (arr) {
			json_object *o = json_object_new_object();

			json_object_object_add(o, "shmid", json_object_new_uint64(e->shmid));
			json_object_object_add(o, "name", json_object_new_string(e->name));
			json_object_object_add(o, "size", json_object_new_uint64(e->size));
			json_object_object_add(o, "seals", json_object_new_uint64(e->seals));
			json_object_object_add(o, "pages_id", json_object_new_uint64(pages_id));
			json_object_object_add(o, "entries", json_object_new_uint64(entries));
			json_object_object_add(o, "present_pages", json_object_new_uint64(present));
			json_object_array_add(arr, o);
		} else {
			if (!head)
				fprintf(out, "shared memory (memfd.img):\n%10s %12s %8s %10s  %s\n",
					"SHMID", "SIZE", "ENTRIES", "PRESENT", "NAME");
			head = true;
			fprintf(out, "%10u %12" PRIu64 " %8zu %10" PRIu64 "  %s\n", e->shmid, e->size,
				entries, present, e->name);
		}
		protobuf_c_message_free_unpacked(m, NULL);
	}
	img_close(&r);
	if (ret < 0) {
		fprintf(stderr, "uffd-inject: %s/%s\n", path, err.msg);
		return 1;
	}
	return 0;
}

int show_images(const char *path, int json, FILE *out)
{
	struct pages_cache cache = { 0 };
	ProtobufCMessage *inv = NULL;
	json_object *all = NULL, *tasks = NULL;
	struct img_err err;
	uint32_t *pids = NULL;
	bool from_pstree;
	size_t n;
	int dirfd, ret, failed = 0;

	dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		fprintf(stderr, "uffd-inject: %s: %s\n", path, strerror(errno));
		return 1;
	}
	/* inventory.img is optional here, but a broken one is an error. */
	ret = img_read_one(dirfd, "inventory.img", IMG_INVENTORY_MAGIC,
			   &inventory_entry__descriptor, &inv, &err);
	if (ret < 0 && ret != -ENOENT) {
		fprintf(stderr, "uffd-inject: %s/%s\n", path, err.msg);
		close(dirfd);
		return 1;
	}
	if (inv)
		protobuf_c_message_free_unpacked(inv, NULL);

	if (img_list_tasks(dirfd, &pids, &n, &from_pstree, &err) < 0) {
		fprintf(stderr, "uffd-inject: %s/%s\n", path, err.msg);
		close(dirfd);
		return 1;
	}

	if (json) {
		all = json_object_new_object();
		tasks = json_object_new_array();
		json_object_object_add(all, "images", json_object_new_string(path));
		json_object_object_add(all, "tasks", tasks);
	} else {
		fprintf(out, "%s: %zu task%s (from %s)\n%10s %6s %8s %10s %10s %10s\n", path, n,
			n == 1 ? "" : "s", from_pstree ? "pstree.img" : "pagemap files", "PID",
			"VMAS", "ENTRIES", "PRESENT", "LAZY", "PARENT");
	}

	for (size_t i = 0; i < n; i++) {
		struct img_task t;
		size_t vmas, entries;
		uint64_t present, lazy, parent;

		ret = img_task_load(&t, dirfd, pids[i], &cache, &err);
		if (ret < 0) {
			failed = 1;
			fprintf(stderr, "uffd-inject: %s/%s\n", path, err.msg);
			if (json) {
				json_object *o = json_object_new_object();

				json_object_object_add(o, "pid", json_object_new_int64(pids[i]));
				json_object_object_add(o, "error", json_object_new_string(err.msg));
				json_object_array_add(tasks, o);
			}
			continue;
		}
		vmas = t.mm ? t.mm->n_vmas : 0;
		entries = t.pm ? t.pm->n : 0;
		present = t.pm ? t.pm->present_pages : 0;
		lazy = t.pm ? t.pm->lazy_pages : 0;
		parent = t.pm ? t.pm->parent_pages : 0;
		if (json)
			json_object_array_add(tasks, task_json(&t));
		else
			fprintf(out, "%10u %6zu %8zu %10" PRIu64 " %10" PRIu64 " %10" PRIu64 "%s\n",
				t.pid, vmas, entries, present, lazy, parent,
				t.pm ? "" : "  (no memory images: zombie)");
		img_task_free(&t, &cache);
	}
	if (show_shmem(dirfd, path, all, out))
		failed = 1;
	if (json) {
		fprintf(out, "%s\n", json_object_to_json_string_ext(
				     all, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(all);
	}
	free(pids);
	close(dirfd);
	return failed;
}
