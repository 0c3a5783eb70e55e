/*
 * The background fill: while no event is ready, copy a chunk of some
 * locally served process's missing pages, one process after another (each
 * goes to the back of the line after its step), from where its last fault
 * or fill step was. Remote processes are filled by rserve_fill, which this
 * calls too.
 */
#ifndef UFFD_FILL_H
#define UFFD_FILL_H

#include <stdbool.h>

#include "daemon.h"

/* Do one step of background fill on some process; false when none has work. */
bool fill_step(struct daemon *d);

/* Give the idle fill workers (fillw.h) jobs, from the processes with background work. */
void fill_feed(struct daemon *d);

#endif
