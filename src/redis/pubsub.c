/* Pub/sub: a second connection per tw_redis (a connection that has
 * subscribed can run no other command), made on first use.
 *
 * Each channel is one record, given to hiredis as the privdata of its
 * SUBSCRIBE; hiredis keeps one callback per channel name, so listeners of
 * the same channel share the record. hiredis calls the record back with
 * every message, with the unsubscribe confirmation, and with NULL when the
 * context goes away; a record is freed only when hiredis has let go
 * (in_hiredis false) and no listener is left. After every reconnection the
 * channels with listeners are subscribed again, and when the server has
 * confirmed it the listeners are told (a NULL payload) that messages may
 * have been missed meanwhile, so that they can ask for what they waited for.
 *
 * Listeners removed while a message is being delivered (a listener's code
 * may drop others) are only marked, and freed when the delivery ends. */
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "redis/redis.h"

typedef struct chan {
    struct chan *prev, *next;
    struct tw__pubsub *ps; /* NULL once the pub/sub side has closed */
    char *name;
    size_t len;
    tw__sub *listeners;
    unsigned delivering; /* deliveries on the stack */
    bool in_hiredis;     /* SUBSCRIBE sent on the current context, not yet given back */
    bool confirmed;      /* the server confirmed it on the current context */
    bool ever;           /* ... or on an earlier one: a confirmation now ends a gap */
    bool unsubscribing;  /* UNSUBSCRIBE sent: never twice (hiredis 0.14 would hand an
                            unknown channel's reply to the previous callback) */
} chan;

struct tw__sub {
    tw__sub *prev, *next;
    chan *ch;
    tw__message_fn fn; /* NULL: removed during a delivery */
    void *arg;
    tw_deferred *ready; /* fires at the first confirmation */
};

struct tw__pubsub {
    tw_redis *conn;
    chan *chans;
};

static void fire_ready(tw__sub *s, tw_result r)
{
    tw_deferred *d = s->ready;
    if (!d) {
        tw_result_drop(r);
        return;
    }
    s->ready = NULL;
    tw_deferred_callback(d, r);
    tw_deferred_unref(d);
}

static void chan_free(chan *ch)
{
    if (ch->ps) {
        if (ch->prev)
            ch->prev->next = ch->next;
        else
            ch->ps->chans = ch->next;
        if (ch->next)
            ch->next->prev = ch->prev;
    }
    tw__free(ch->name, ch->len + 1);
    TW__DELETE(ch);
}

/* Frees the channel if nothing holds it any more. */
static void chan_check(chan *ch)
{
    if (!ch->listeners && !ch->in_hiredis && !ch->delivering)
        chan_free(ch);
}

static void listener_free(tw__sub *s)
{
    chan *ch = s->ch;
    if (s->prev)
        s->prev->next = s->next;
    else
        ch->listeners = s->next;
    if (s->next)
        s->next->prev = s->prev;
    fire_ready(s, tw_result_fail(TW_ECANCELED, "unsubscribed"));
    TW__DELETE(s);
}

/* Frees the listeners marked during deliveries. */
static void sweep(chan *ch)
{
    tw__sub *s = ch->listeners, *next;
    for (; s; s = next) {
        next = s->next;
        if (!s->fn)
            listener_free(s);
    }
}

static void chan_send(chan *ch);

/* No listener left: unsubscribe, or free the channel if hiredis has none. */
static void chan_release(chan *ch)
{
    if (ch->listeners || ch->delivering)
        return;
    if (ch->in_hiredis && !ch->unsubscribing && ch->ps && tw_redis_connected(ch->ps->conn) &&
        tw__redis_raw(ch->ps->conn, NULL, NULL, "UNSUBSCRIBE %b", ch->name, ch->len) == 0) {
        ch->unsubscribing = true;
        ch->confirmed = false;
        return; /* freed at the confirmation, or when the context ends */
    }
    chan_check(ch);
}

static void on_chan_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    chan *ch = privdata;
    redisReply *r = reply;
    (void)ac;
    if (!r) { /* the context is going away */
        ch->in_hiredis = false;
        ch->confirmed = false;
        ch->unsubscribing = false;
        chan_check(ch);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str;
    if (strcmp(kind, "message") == 0) {
        if (r->element[2]->type != REDIS_REPLY_STRING)
            return;
        ch->delivering++;
        for (tw__sub *s = ch->listeners; s; s = s->next)
            if (s->fn)
                s->fn(s->arg, r->element[2]->str, r->element[2]->len);
        ch->delivering--;
        if (!ch->delivering) {
            sweep(ch);
            chan_release(ch);
        }
    } else if (strcmp(kind, "subscribe") == 0) {
        bool gap = ch->ever;
        ch->confirmed = ch->ever = true;
        ch->delivering++;
        for (tw__sub *s = ch->listeners; s; s = s->next) {
            if (s->fn)
                fire_ready(s, tw_result_none());
            if (s->fn && gap)
                s->fn(s->arg, NULL, 0);
        }
        ch->delivering--;
        if (!ch->delivering) {
            sweep(ch);
            chan_release(ch);
        }
    } else if (strcmp(kind, "unsubscribe") == 0) {
        ch->in_hiredis = false; /* hiredis dropped it from its table */
        ch->confirmed = false;
        ch->unsubscribing = false;
        if (ch->listeners) /* wanted again since the UNSUBSCRIBE left */
            chan_send(ch);
        else
            chan_check(ch);
    }
}

static void chan_send(chan *ch)
{
    if (!ch->ps || ch->in_hiredis || !tw_redis_connected(ch->ps->conn))
        return;
    if (tw__redis_raw(ch->ps->conn, on_chan_reply, ch, "SUBSCRIBE %b", ch->name, ch->len) == 0)
        ch->in_hiredis = true;
}

/* The subscriber connection came up (again): subscribe to everything wanted. */
static void on_conn_event(void *arg, tw_redis *conn, bool up)
{
    struct tw__pubsub *ps = arg;
    (void)conn;
    if (!up)
        return;
    for (chan *ch = ps->chans; ch; ch = ch->next)
        if (ch->listeners)
            chan_send(ch);
}

int tw__redis_subscribe(tw_redis *c, const char *channel, tw__message_fn fn, void *arg,
                        tw__sub **out, tw_deferred **ready)
{
    if (!c->pubsub) {
        struct tw__pubsub *ps = TW__NEW(struct tw__pubsub);
        if (!ps)
            return TW_ENOMEM;
        int rc = tw__redis_clone(c, &ps->conn);
        if (rc) {
            TW__DELETE(ps);
            return rc;
        }
        ps->conn->on_event = on_conn_event;
        ps->conn->on_event_arg = ps;
        c->pubsub = ps;
    }
    struct tw__pubsub *ps = c->pubsub;
    size_t len = strlen(channel);
    chan *ch = ps->chans;
    while (ch && (ch->len != len || memcmp(ch->name, channel, len) != 0))
        ch = ch->next;
    bool fresh = !ch;
    if (fresh) {
        ch = TW__NEW(chan);
        if (!ch)
            return TW_ENOMEM;
        ch->name = tw__alloc(len + 1);
        if (!ch->name) {
            TW__DELETE(ch);
            return TW_ENOMEM;
        }
        memcpy(ch->name, channel, len + 1);
        ch->len = len;
        ch->ps = ps;
        ch->next = ps->chans;
        if (ch->next)
            ch->next->prev = ch;
        ps->chans = ch;
    }
    tw__sub *s = TW__NEW(tw__sub);
    int rc = s ? 0 : TW_ENOMEM;
    if (s && ready) {
        if (ch->confirmed)
            rc = tw_deferred_succeed(ready, NULL, NULL);
        else if ((rc = tw_deferred_create(&s->ready, NULL, NULL)) == 0)
            *ready = tw_deferred_ref(s->ready);
    }
    if (rc) {
        if (s)
            TW__DELETE(s);
        if (fresh)
            chan_check(ch);
        return rc;
    }
    s->ch = ch;
    s->fn = fn;
    s->arg = arg;
    s->next = ch->listeners;
    if (s->next)
        s->next->prev = s;
    ch->listeners = s;
    chan_send(ch);
    *out = s;
    return 0;
}

void tw__redis_unsubscribe(tw__sub *s)
{
    if (!s)
        return;
    chan *ch = s->ch;
    if (ch->delivering) {
        s->fn = NULL; /* freed when the delivery ends */
        fire_ready(s, tw_result_fail(TW_ECANCELED, "unsubscribed"));
        return;
    }
    listener_free(s);
    chan_release(ch);
}

void tw__redis_pubsub_close(tw_redis *c)
{
    struct tw__pubsub *ps = c->pubsub;
    if (!ps)
        return;
    c->pubsub = NULL;
    /* Every listener is gone (the connection's users are). Channels hiredis
     * still holds are freed by its NULL callbacks, which closing the
     * connection runs (now, or when the callbacks on the stack return). */
    while (ps->chans) {
        chan *ch = ps->chans;
        ps->chans = ch->next;
        ch->prev = ch->next = NULL;
        ch->ps = NULL;
        if (ch->delivering) {
            /* closed from a listener's callback (a grant's user code): the
             * delivery still walks the listeners, and sweeps them after */
            for (tw__sub *s = ch->listeners; s; s = s->next)
                if (s->fn) {
                    s->fn = NULL;
                    fire_ready(s, tw_result_fail(TW_ECANCELED, "unsubscribed"));
                }
            continue;
        }
        while (ch->listeners)
            listener_free(ch->listeners);
        chan_check(ch);
    }
    ps->conn->on_event = NULL;
    tw_redis_close(ps->conn, NULL);
    TW__DELETE(ps);
}
