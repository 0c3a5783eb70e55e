/* Daemon-wide decisions that the modules share. */
#include "daemon.h"

void daemon_check_done(struct daemon *d)
{
	if (d->nr_targets)
		return;
	if (d->draining || (d->o.exit_when_done && d->had_target && !d->nr_clients))
		d->loop.stop = true;
}

bool daemon_fill_enabled(const struct daemon *d)
{
	return !d->o.no_fill || d->draining;
}
