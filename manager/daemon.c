/* Daemon-wide decisions that the modules share. */
#include "daemon.h"
#include "released.h"

void daemon_check_done(struct daemon *d)
{
	if (d->nr_targets || d->hold_exit)
		return;
	/* CRIU mode ends when the restore is over and nobody is left, even if nobody came. */
	if (!(d->draining || d->criu ||
	      (d->o.exit_when_done && d->had_target && !d->nr_clients)))
		return;
	/* Events picked up just before the last release must still be read. */
	if (!released_settling(d))
		d->loop.stop = true;
}

bool daemon_fill_enabled(const struct daemon *d)
{
	if (d->fill_held)
		return false;
	return !d->o.no_fill || d->draining;
}
