/*
 * Huge pages for tests of hugetlb memory: reserve some in the pool
 * (/proc/sys/vm/nr_hugepages, default size) for the time of a test, and give
 * them back after. Every change is made under a lock on that file, as an
 * increment or a decrement of what is there, so tests running at once (and
 * in any order) leave the pool as they found it.
 */
#ifndef UFFD_TEST_THUGE_H
#define UFFD_TEST_THUGE_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Add N free huge pages of the default size to the pool. False, with WHY
 * saying what is missing (root to write /proc/sys/vm/nr_hugepages, or free
 * memory), when it could not; nothing is left changed then.
 */
bool th_reserve(unsigned n, char *why, size_t len);

/* Take back the N pages th_reserve() added. */
void th_release(unsigned n);

#endif
