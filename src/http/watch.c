/* Curl's socket and timer callbacks as the reactor's fd watchers and timer.
 *
 * Curl says, per socket, what it waits for (CURL_POLL_IN, _OUT, _INOUT) or
 * that it no longer needs it (CURL_POLL_REMOVE); and, per multi handle, when
 * it wants to be called back (a timeout in ms, -1 for never). The client
 * keeps, per fd number, the events it registered with the reactor
 * (`watched`), so that a change costs the reactor calls for the difference
 * only, and closing the client knows what to remove. No per-socket record
 * is assigned with curl_multi_assign: that would call curl from inside its
 * own callback, and the table indexed by fd serves the same purpose.
 *
 * Closed fds. Curl 7.88 says CURL_POLL_REMOVE before it closes a socket,
 * but the contract is kept even if it does not: removing a watcher of a
 * closed fd is harmless (the reactor's poller forgets it either way). The
 * real danger is a number curl closes and reuses at once: the reactor would
 * still hold the old registration. So the close-socket callback forgets the
 * fd's watchers before the close, and a change the poller refuses (epoll's
 * ENOENT for a number it no longer knows) is retried as a fresh
 * registration.
 *
 * The timer. A timeout of 0 means "call me soon", never from inside this
 * callback: the reactor runs a timer for now in its next pass. Failures to
 * reach the reactor cannot be returned to curl 7.88 without killing the
 * whole multi handle (a -1 makes it dead), so they are recorded as the
 * client's `fatal` and every transfer fails with them once curl returns. */
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "http/http.h"

static void on_fd(int fd, unsigned events, void *arg)
{
    tw_http_client *c = arg;
    int flags = (events & TW_READABLE ? CURL_CSELECT_IN : 0) |
                (events & TW_WRITABLE ? CURL_CSELECT_OUT : 0);
    c->fd_events++;
    tw__http_action(c, fd, flags);
}

static void on_timeout(void *arg)
{
    tw_http_client *c = arg;
    tw_delayed_call_unref(c->timer);
    c->timer = NULL;
    tw__http_action(c, CURL_SOCKET_TIMEOUT, 0);
}

static void remove_events(tw_http_client *c, int fd, unsigned events)
{
    /* TW_EINVAL only if the reactor has no such watcher: nothing to undo. */
    if (events & TW_READABLE)
        (void)tw_reactor_remove_reader(c->r, fd);
    if (events & TW_WRITABLE)
        (void)tw_reactor_remove_writer(c->r, fd);
}

/* Adds the watchers for `events` that `have` lacks; on failure, removes
 * those it added. */
static int add_events(tw_http_client *c, int fd, unsigned have, unsigned events)
{
    int rc = 0;
    if ((events & TW_READABLE) && !(have & TW_READABLE))
        rc = tw_reactor_add_reader(c->r, fd, on_fd, c);
    if (rc == 0 && (events & TW_WRITABLE) && !(have & TW_WRITABLE)) {
        rc = tw_reactor_add_writer(c->r, fd, on_fd, c);
        if (rc && (events & TW_READABLE) && !(have & TW_READABLE))
            (void)tw_reactor_remove_reader(c->r, fd);
    }
    return rc;
}

/* Grows the table to cover fd (doubling from 64, new entries 0). */
static int cover(tw_http_client *c, int fd)
{
    if ((size_t)fd < c->nwatched)
        return 0;
    size_t n = c->nwatched ? c->nwatched : 64;
    while (n <= (size_t)fd)
        n *= 2;
    uint8_t *t = tw__realloc(c->watched, c->nwatched, n);
    if (!t)
        return TW_ENOMEM;
    memset(t + c->nwatched, 0, n - c->nwatched);
    c->watched = t;
    c->nwatched = n;
    return 0;
}

int tw__http_watch(tw_http_client *c, int fd, unsigned events)
{
    if (fd < 0)
        return TW_EINVAL;
    if (cover(c, fd) != 0)
        return TW_ENOMEM;
    unsigned have = c->watched[fd];
    if (have == events)
        return 0;
    remove_events(c, fd, have & ~events);
    have &= events;
    int rc = add_events(c, fd, have, events);
    if (rc == TW_EINVAL && have) {
        /* The poller refused to change a registration it no longer has:
         * the number was closed and opened again. Register it afresh. */
        remove_events(c, fd, have);
        have = 0;
        rc = add_events(c, fd, 0, events);
    }
    c->watched[fd] = (uint8_t)(rc ? have : events);
    return rc;
}

void tw__http_unwatch(tw_http_client *c, int fd)
{
    if (fd < 0 || (size_t)fd >= c->nwatched || !c->watched[fd])
        return;
    remove_events(c, fd, c->watched[fd]);
    c->watched[fd] = 0;
}

void tw__http_unwatch_all(tw_http_client *c)
{
    for (size_t fd = 0; fd < c->nwatched; fd++)
        tw__http_unwatch(c, (int)fd);
    tw__free(c->watched, c->nwatched);
    c->watched = NULL;
    c->nwatched = 0;
    if (c->timer) {
        (void)tw_delayed_call_cancel(c->timer);
        tw_delayed_call_unref(c->timer);
        c->timer = NULL;
    }
}

int tw__http_on_socket(CURL *easy, curl_socket_t fd, int what, void *client, void *sockp)
{
    tw_http_client *c = client;
    (void)easy;
    (void)sockp;
    if (what == CURL_POLL_REMOVE) {
        tw__http_unwatch(c, fd);
        return 0;
    }
    if (c->close_code)
        return 0; /* closing: curl_multi_cleanup only removes */
    unsigned events = (what & CURL_POLL_IN ? TW_READABLE : 0u) |
                      (what & CURL_POLL_OUT ? TW_WRITABLE : 0u);
    int rc = events ? tw__http_watch(c, fd, events) : 0;
    if (rc && !c->fatal) {
        c->fatal = rc;
        c->fatal_why = "the reactor cannot watch a socket of this transfer";
    }
    return 0;
}

int tw__http_on_timer(CURLM *multi, long timeout_ms, void *client)
{
    tw_http_client *c = client;
    (void)multi;
    if (c->close_code)
        return 0;
    if (timeout_ms < 0) {
        if (c->timer) {
            (void)tw_delayed_call_cancel(c->timer);
            tw_delayed_call_unref(c->timer);
            c->timer = NULL;
        }
        return 0;
    }
    double s = (double)timeout_ms / 1000.0;
    if (c->timer && tw_delayed_call_reset(c->timer, s) == 0)
        return 0;
    if (c->timer) {
        tw_delayed_call_unref(c->timer);
        c->timer = NULL;
    }
    int rc = tw_reactor_call_later(c->r, s, on_timeout, c, &c->timer);
    if (rc) {
        c->timer = NULL;
        if (!c->fatal) {
            c->fatal = rc;
            c->fatal_why = "the reactor cannot run curl's timer";
        }
    }
    return 0;
}

int tw__http_on_close_socket(void *client, curl_socket_t fd)
{
    tw__http_unwatch(client, fd);
    return close(fd);
}
