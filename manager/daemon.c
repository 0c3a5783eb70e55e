/* Daemon-wide decisions that the modules share. */
#include <fcntl.h>
#include <unistd.h>

#include "daemon.h"

static void settle_timer(struct timer *tm)
{
	daemon_check_done(container_of(tm, struct daemon, settle));
}

/* True (and a timer armed) while the last release is younger than DAEMON_SETTLE_NS. */
static bool settling(struct daemon *d)
{
	uint64_t now = now_ns();

	if (!d->nr_released || now - d->last_release_ns >= DAEMON_SETTLE_NS)
		return false;
	if (!d->settle.armed)
		timer_arm(&d->loop, &d->settle, d->last_release_ns + DAEMON_SETTLE_NS - now,
			  settle_timer);
	return true;
}

void daemon_check_done(struct daemon *d)
{
	if (d->nr_targets || d->hold_exit)
		return;
	/* CRIU mode ends when the restore is over and nobody is left, even if nobody came. */
	if (!(d->draining || d->mode == MODE_CRIU ||
	      (d->o.exit_when_done && d->had_target && !d->nr_clients)))
		return;
	/* Events picked up just before the last release must still be read. */
	if (!settling(d))
		d->loop.stop = true;
}

bool daemon_fill_enabled(const struct daemon *d)
{
	if (d->fill_held)
		return false;
	return !d->o.no_fill || d->draining;
}

void daemon_reserve_fill(struct daemon *d)
{
	while (d->nr_fd_reserve < DAEMON_FD_RESERVE) {
		int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

		if (fd < 0)
			return;	/* no fd free: try again on a later read */
		d->fd_reserve[d->nr_fd_reserve++] = fd;
	}
}

bool daemon_reserve_take(struct daemon *d)
{
	if (!d->nr_fd_reserve)
		return false;
	close(d->fd_reserve[--d->nr_fd_reserve]);
	return true;
}

void daemon_reserve_close(struct daemon *d)
{
	while (daemon_reserve_take(d))
		;
}
