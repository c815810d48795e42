/* Pub/sub: a second connection per tw_redis (a connection that has
 * subscribed can run no other command), made on first use.
 *
 * Each channel is one tw__sub record, given to hiredis as the privdata of
 * its SUBSCRIBE. hiredis keeps it in its channel table and calls back with
 * every message, with the unsubscribe confirmation, and with NULL when the
 * context goes away; so a record is freed only when hiredis has let go
 * (in_hiredis false) and its owner has unsubscribed (fn NULL), whichever
 * comes last. After every reconnection, the records still wanted are
 * subscribed again. */
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "redis/redis.h"

struct tw__sub {
    struct tw__sub *prev, *next;
    struct tw__pubsub *ps; /* NULL once the pub/sub side has closed */
    char *channel;
    size_t len;
    tw__message_fn fn; /* NULL: unsubscribed */
    void *arg;
    tw_deferred *ready; /* fires at the first confirmation */
    bool in_hiredis;    /* SUBSCRIBE sent on the current context, not yet given back */
};

struct tw__pubsub {
    tw_redis *conn;
    tw__sub *subs;
};

static void sub_unlink(tw__sub *s)
{
    if (!s->ps)
        return;
    if (s->prev)
        s->prev->next = s->next;
    else
        s->ps->subs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    s->ps = NULL;
}

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

static void sub_free(tw__sub *s)
{
    sub_unlink(s);
    fire_ready(s, tw_result_fail(TW_ESHUTDOWN, "the subscription ended"));
    tw__free(s->channel, s->len + 1);
    TW__DELETE(s);
}

static void on_sub_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    tw__sub *s = privdata;
    redisReply *r = reply;
    (void)ac;
    if (!r) { /* the context is going away */
        s->in_hiredis = false;
        if (!s->fn)
            sub_free(s);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str;
    if (strcmp(kind, "message") == 0) {
        if (s->fn && r->element[2]->type == REDIS_REPLY_STRING)
            s->fn(s->arg, r->element[2]->str, r->element[2]->len);
    } else if (strcmp(kind, "subscribe") == 0) {
        fire_ready(s, tw_result_none());
    } else if (strcmp(kind, "unsubscribe") == 0) {
        s->in_hiredis = false; /* hiredis dropped the record from its table */
        if (!s->fn)
            sub_free(s);
    }
}

static void sub_send(tw__sub *s)
{
    tw_redis *conn = s->ps->conn;
    if (s->in_hiredis || !tw_redis_connected(conn))
        return;
    if (tw__redis_raw(conn, on_sub_reply, s, "SUBSCRIBE %b", s->channel, s->len) == 0)
        s->in_hiredis = true;
}

/* The subscriber connection came up (again): subscribe to everything wanted. */
static void on_conn_event(void *arg, tw_redis *conn, bool up)
{
    struct tw__pubsub *ps = arg;
    (void)conn;
    if (!up)
        return;
    for (tw__sub *s = ps->subs; s; s = s->next)
        if (s->fn)
            sub_send(s);
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
    tw__sub *s = TW__NEW(tw__sub);
    if (!s)
        return TW_ENOMEM;
    s->len = strlen(channel);
    s->channel = tw__alloc(s->len + 1);
    if (!s->channel) {
        TW__DELETE(s);
        return TW_ENOMEM;
    }
    memcpy(s->channel, channel, s->len + 1);
    if (ready) {
        int rc = tw_deferred_create(&s->ready, NULL, NULL);
        if (rc) {
            tw__free(s->channel, s->len + 1);
            TW__DELETE(s);
            return rc;
        }
        *ready = tw_deferred_ref(s->ready);
    }
    s->fn = fn;
    s->arg = arg;
    s->ps = c->pubsub;
    s->next = c->pubsub->subs;
    if (s->next)
        s->next->prev = s;
    c->pubsub->subs = s;
    sub_send(s);
    *out = s;
    return 0;
}

void tw__redis_unsubscribe(tw__sub *s)
{
    if (!s)
        return;
    s->fn = NULL;
    fire_ready(s, tw_result_fail(TW_ECANCELED, "unsubscribed"));
    if (s->in_hiredis && s->ps && tw_redis_connected(s->ps->conn) &&
        tw__redis_raw(s->ps->conn, NULL, NULL, "UNSUBSCRIBE %b", s->channel, s->len) == 0)
        return; /* freed by the confirmation (or the context's end) */
    if (!s->in_hiredis)
        sub_free(s);
}

void tw__redis_pubsub_close(tw_redis *c)
{
    struct tw__pubsub *ps = c->pubsub;
    if (!ps)
        return;
    c->pubsub = NULL;
    /* Records hiredis still holds are freed by its NULL callbacks, which
     * closing the connection runs (now, or when its callbacks return). */
    while (ps->subs) {
        tw__sub *s = ps->subs;
        sub_unlink(s);
        s->fn = NULL;
        if (!s->in_hiredis)
            sub_free(s);
    }
    ps->conn->on_event = NULL;
    tw_redis_close(ps->conn, NULL);
    TW__DELETE(ps);
}
