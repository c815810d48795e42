/* A Redis connection on the reactor: hiredis's asynchronous context driven by
 * the reactor's fd watchers (through the adapter hooks hiredis calls to start
 * and stop reading and writing) and timers (connect timeout, reconnection
 * backoff, command deadlines; hiredis 0.14 has no timers).
 *
 * The link's states:
 *
 *   CONNECTING --connected--> READY --lost--> BACKOFF --timer--> CONNECTING
 *        |  \--failed or connect timeout---------^                   ...
 *        any state --tw_redis_close--> CLOSING --nothing in flight--> CLOSED
 *
 * Commands are ours until sent: while the link is not READY they wait on
 * c->waiting, in call order, and are handed to hiredis in that order when it
 * becomes READY, so a reconnection never reorders them. Once sent, hiredis
 * owns the record as its callback's privdata and calls back exactly once,
 * with the reply or (when the context goes away) with NULL; that callback
 * frees the record. A record settled earlier (timeout, cancel) only has its
 * Deferred cleared, and the late reply is dropped.
 *
 * Lifetime of the context: hiredis frees it inside its own calls (a read
 * error, a failed connect, redisAsyncFree) after running the callbacks and
 * our cleanup hook, which clears c->ac; so after any call into hiredis, c->ac
 * is read again, never a copy. The tw_redis itself outlives every call into
 * it: public functions and reactor callbacks bracket their work with
 * tw__redis_enter/leave, and a closed connection is freed only when the
 * outermost of them returns.
 *
 * Writes: a command appends to hiredis's output buffer. Called from outside
 * our callbacks, it is written at once (no writer watch, no loop
 * iteration); called from inside a reply callback, the write waits until the
 * callback chain returns, so the commands a batch of replies issues leave in
 * one write. The writer watch is registered only when the socket cannot
 * take everything. */
#define _GNU_SOURCE
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <twine/sync.h>

#include "redis/redis.h"

/* ---- lists --------------------------------------------------------------------- */

static void rl_push(tw__rlist *l, tw__rcmd *x)
{
    x->next = NULL;
    x->prev = l->tail;
    if (l->tail)
        l->tail->next = x;
    else
        l->head = x;
    l->tail = x;
    l->n++;
}

static void rl_remove(tw__rlist *l, tw__rcmd *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        l->head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    else
        l->tail = x->prev;
    x->prev = x->next = NULL;
    l->n--;
}

/* ---- small things -------------------------------------------------------------- */

uint64_t tw__redis_random(tw_redis *c)
{
    /* xorshift64*: jitter and ids, not secrets */
    uint64_t x = c->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    c->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static double now_s(tw_redis *c)
{
    return tw_reactor_seconds(c->r);
}

static char *dup_str(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *p = tw__alloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

static void free_str(char *s)
{
    if (s)
        tw__free(s, strlen(s) + 1);
}

/* The command's name from its RESP form ("*N\r\n$len\r\nNAME..."). */
static void cmd_name(tw__rcmd *x)
{
    const char *p = memchr(x->buf, '$', x->len < 32 ? x->len : 32);
    size_t n = 0;
    if (p) {
        const char *nl = memchr(p, '\n', x->len - (size_t)(p - x->buf));
        if (nl) {
            size_t want = (size_t)strtoul(p + 1, NULL, 10);
            const char *s = nl + 1;
            size_t left = x->len - (size_t)(s - x->buf);
            n = want < left ? want : left;
            if (n > sizeof x->name - 1)
                n = sizeof x->name - 1;
            for (size_t i = 0; i < n; i++)
                x->name[i] = (char)((s[i] >= 'a' && s[i] <= 'z') ? s[i] - 32 : s[i]);
        }
    }
    x->name[n] = 0;
    if (x->script)
        snprintf(x->name, sizeof x->name, "%s", x->script->name);
}

static void cmd_free(tw__rcmd *x)
{
    if (x->buf)
        redisFreeCommand(x->buf);
    TW__DELETE(x);
}

/* Fires the command's Deferred (once) with r; consumes r. */
static void cmd_settle(tw__rcmd *x, tw_result r)
{
    tw_deferred *d = x->d;
    if (!d) {
        tw_result_drop(r);
        return;
    }
    x->d = NULL;
    tw_deferred_callback(d, r);
    tw_deferred_unref(d);
}

/* ---- the adapter: hiredis asks for reads and writes ------------------------- */

static void on_readable(int fd, unsigned events, void *arg);
static void on_writable(int fd, unsigned events, void *arg);

static void watch(tw_redis *c, unsigned bit, bool on)
{
    if (c->fd < 0 || on == ((c->watching & bit) != 0))
        return;
    int rc;
    if (on)
        rc = bit == TW_READABLE ? tw_reactor_add_reader(c->r, c->fd, on_readable, c)
                                : tw_reactor_add_writer(c->r, c->fd, on_writable, c);
    else
        rc = bit == TW_READABLE ? tw_reactor_remove_reader(c->r, c->fd)
                                : tw_reactor_remove_writer(c->r, c->fd);
    if (rc == 0)
        c->watching ^= bit;
    else
        tw_diag_report(TW_DIAG_WARNING, rc, "tw_redis",
                       "the reactor refused to watch the Redis connection's socket");
}

static void ev_add_read(void *p)
{
    watch(p, TW_READABLE, true);
}
static void ev_del_read(void *p)
{
    watch(p, TW_READABLE, false);
}
static void ev_add_write(void *p)
{
    tw_redis *c = p;
    if (c->in_send) /* written when the command is queued; see the file comment */
        c->write_noted = true;
    else
        watch(c, TW_WRITABLE, true);
}
static void ev_del_write(void *p)
{
    watch(p, TW_WRITABLE, false);
}
/* hiredis is freeing the context: nothing of it may be touched after. */
static void ev_cleanup(void *p)
{
    tw_redis *c = p;
    watch(c, TW_READABLE, false);
    watch(c, TW_WRITABLE, false);
    c->ac = NULL;
    c->fd = -1;
}

static void conn_free(tw_redis *c);
static void close_finish(tw_redis *c);

/* Calls into hiredis that may run callbacks (and so our users' code) are
 * counted: a close asked for inside one must not free the context under it,
 * so it is done when the outermost one returns (run_pending_kill). hiredis's
 * own "in callback" flag does not cover its connect callback. */
enum { KILL_NONE = 0, KILL_DISCONNECT = 1, KILL_FREE = 2 };

static void run_pending_kill(tw_redis *c);

static void hiredis_read(tw_redis *c)
{
    c->in_hiredis++;
    redisAsyncHandleRead(c->ac);
    c->in_hiredis--;
    run_pending_kill(c);
}

static void hiredis_write(tw_redis *c)
{
    c->in_hiredis++;
    redisAsyncHandleWrite(c->ac);
    c->in_hiredis--;
    run_pending_kill(c);
}

/* Ends the context: KILL_DISCONNECT after the replies in flight, KILL_FREE
 * now (pending replies get NULL). Deferred while inside hiredis. */
static void kill_ac(tw_redis *c, int how)
{
    if (c->in_hiredis) {
        if (how > c->pending_kill)
            c->pending_kill = how;
        return;
    }
    c->pending_kill = KILL_NONE;
    if (!c->ac)
        return;
    c->in_hiredis++;
    if (how == KILL_FREE)
        redisAsyncFree(c->ac);
    else
        redisAsyncDisconnect(c->ac);
    c->in_hiredis--;
    /* A context that never connected gets no disconnect callback. */
    if (!c->ac && c->state == LINK_CLOSING)
        close_finish(c);
    run_pending_kill(c);
}

static void run_pending_kill(tw_redis *c)
{
    if (c->in_hiredis || !c->pending_kill)
        return;
    int how = c->pending_kill;
    c->pending_kill = KILL_NONE;
    if (c->ac)
        kill_ac(c, how);
    else if (c->state == LINK_CLOSING)
        close_finish(c);
}

/* Writes what hiredis holds for the socket (the outermost call does it). */
static void flush(tw_redis *c)
{
    while (c->flush_pending && c->ac && c->state == LINK_READY && !c->in_hiredis) {
        c->flush_pending = false;
        hiredis_write(c);
    }
}

void tw__redis_enter(tw_redis *c)
{
    c->depth++;
}

void tw__redis_leave(tw_redis *c)
{
    if (c->depth == 1)
        flush(c);
    if (--c->depth == 0 && c->freeing)
        conn_free(c);
}

static void on_readable(int fd, unsigned events, void *arg)
{
    tw_redis *c = arg;
    (void)fd;
    (void)events;
    c->thread = tw__self();
    if (!c->ac)
        return;
    tw__redis_enter(c);
    hiredis_read(c);
    tw__redis_leave(c);
}

static void on_writable(int fd, unsigned events, void *arg)
{
    tw_redis *c = arg;
    (void)fd;
    (void)events;
    c->thread = tw__self();
    if (!c->ac)
        return;
    tw__redis_enter(c);
    hiredis_write(c);
    tw__redis_leave(c);
}

/* ---- command deadlines ----------------------------------------------------------
 * One timer per connection, at the earliest deadline it was armed for. When
 * it fires it fails every command past its deadline and re-arms for the
 * earliest one left. Commands complete long before their deadlines in the
 * common case, so the timer fires about once per command_timeout, not per
 * command. */

static void cmd_timer_fired(void *arg);

static void arm_cmd_timer(tw_redis *c, double deadline)
{
    if (isinf(deadline))
        return;
    if (c->cmd_timer && tw_delayed_call_active(c->cmd_timer)) {
        if (c->cmd_timer_at <= deadline)
            return;
        double in = deadline - now_s(c);
        if (tw_delayed_call_reset(c->cmd_timer, in > 0 ? in : 0) == 0) {
            c->cmd_timer_at = deadline;
            return;
        }
    }
    if (c->cmd_timer) {
        tw_delayed_call_unref(c->cmd_timer);
        c->cmd_timer = NULL;
    }
    double in = deadline - now_s(c);
    if (tw_reactor_call_later(c->r, in > 0 ? in : 0, cmd_timer_fired, c, &c->cmd_timer) == 0)
        c->cmd_timer_at = deadline;
    else
        c->cmd_timer = NULL; /* shut down: the reactor runs no more timers */
}

static void fail_not_sent(tw_redis *c, tw__rcmd *x, int code, double waited)
{
    rl_remove(&c->waiting, x);
    x->where = CMD_DONE;
    if (code == TW_ENOTCONN)
        cmd_settle(x, tw_result_fail(TW_ENOTCONN,
                                     "redis %s: %s not sent: no connection within %g s (%s)",
                                     c->addr, x->name, waited,
                                     c->error[0] ? c->error : "still connecting"));
    else
        cmd_settle(x, tw_result_fail(code, "redis %s: %s not sent: the connection is closed",
                                     c->addr, x->name));
    cmd_free(x);
}

static bool sent_unsettled(const tw_redis *c)
{
    for (tw__rcmd *x = c->sent.head; x; x = x->next)
        if (x->d)
            return true;
    return false;
}

static tw__rcmd *first_expired(const tw__rlist *l, double now)
{
    for (tw__rcmd *x = l->head; x; x = x->next)
        if (x->deadline <= now)
            return x;
    return NULL;
}


/* One expired command at a time, each found afresh: the callbacks its
 * failure runs may add, cancel or complete others. Expired ones sit at the
 * heads of the lists in the common case (one timeout for all commands). */
static void cmd_timer_fired(void *arg)
{
    tw_redis *c = arg;
    tw__redis_enter(c);
    tw_delayed_call_unref(c->cmd_timer);
    c->cmd_timer = NULL;
    double now = now_s(c), next = INFINITY;
    tw__rcmd *x;
    while ((x = first_expired(&c->waiting, now))) {
        c->stats.timeouts++;
        fail_not_sent(c, x, TW_ENOTCONN, c->command_timeout);
    }
    while ((x = first_expired(&c->sent, now))) {
        /* Still hiredis's: only the Deferred goes; the reply is dropped. */
        rl_remove(&c->sent, x);
        x->where = CMD_DONE;
        c->stats.timeouts++;
        cmd_settle(x, tw_result_fail(TW_ETIMEDOUT,
                                     "redis %s: %s timed out: no reply within its timeout; it "
                                     "may or may not have run",
                                     c->addr, x->name));
    }
    for (x = c->waiting.head; x; x = x->next)
        if (x->deadline < next)
            next = x->deadline;
    for (x = c->sent.head; x; x = x->next)
        if (x->deadline < next)
            next = x->deadline;
    arm_cmd_timer(c, next);
    /* A close that waits for replies that can no longer matter ends now. */
    if (c->state == LINK_CLOSING && c->ac && !sent_unsettled(c))
        kill_ac(c, KILL_FREE);
    tw__redis_leave(c);
}

/* ---- sending --------------------------------------------------------------------- */

static void on_reply(struct redisAsyncContext *ac, void *reply, void *privdata);

/* The EVAL form of an EVALSHA record: the script's text replaces the sha. */
static int to_eval(tw__rcmd *x)
{
    /* "*N\r\n$7\r\nEVALSHA\r\n$40\r\n<sha>\r\n<rest>" */
    const char *p = x->buf;
    const char *sha = strstr(p, "EVALSHA\r\n$40\r\n");
    if (!sha)
        return TW_EINVAL;
    size_t head = (size_t)(strchr(p, '\n') + 1 - p); /* "*N\r\n" */
    const char *rest = sha + strlen("EVALSHA\r\n$40\r\n") + 40 + 2;
    size_t rest_len = x->len - (size_t)(rest - p);
    size_t tlen = strlen(x->script->text);
    char num[32];
    int nl = snprintf(num, sizeof num, "$%zu\r\n", tlen);
    size_t len = head + strlen("$4\r\nEVAL\r\n") + (size_t)nl + tlen + 2 + rest_len;
    char *buf = malloc(len + 1); /* freed by redisFreeCommand (free) like hiredis's */
    if (!buf)
        return TW_ENOMEM;
    char *q = buf;
    memcpy(q, p, head);
    q += head;
    memcpy(q, "$4\r\nEVAL\r\n", 10);
    q += 10;
    memcpy(q, num, (size_t)nl);
    q += nl;
    memcpy(q, x->script->text, tlen);
    q += tlen;
    memcpy(q, "\r\n", 2);
    q += 2;
    memcpy(q, rest, rest_len);
    q += rest_len;
    *q = 0;
    redisFreeCommand(x->buf);
    x->buf = buf;
    x->len = len;
    return 0;
}

/* Hands x to hiredis (the link is READY). false: hiredis refused it (the
 * context is going away); x is then the caller's still. */
static bool hand_over(tw_redis *c, tw__rcmd *x)
{
    if (x->script && !x->is_eval && !(c->scripts_sent & (1u << x->script->id))) {
        if (to_eval(x) == 0) {
            x->is_eval = true; /* the server caches it: EVALSHA from now on */
            c->scripts_sent |= 1u << x->script->id;
        }
    }
    c->in_send = true;
    c->write_noted = false;
    int rc = redisAsyncFormattedCommand(c->ac, on_reply, x, x->buf, x->len);
    c->in_send = false;
    if (rc != REDIS_OK)
        return false;
    if (c->write_noted)
        c->flush_pending = true;
    x->where = CMD_SENT;
    rl_push(&c->sent, x);
    c->stats.commands++;
    return true;
}

static void send_waiting(tw_redis *c)
{
    while (c->waiting.head && c->ac && c->state == LINK_READY) {
        tw__rcmd *x = c->waiting.head;
        rl_remove(&c->waiting, x);
        if (!hand_over(c, x)) {
            /* hiredis is tearing the context down: wait for the next one */
            x->prev = NULL;
            x->next = c->waiting.head;
            if (c->waiting.head)
                c->waiting.head->prev = x;
            else
                c->waiting.tail = x;
            c->waiting.head = x;
            c->waiting.n++;
            break;
        }
    }
}

static void cmd_cancel(tw_deferred *d, void *arg)
{
    tw__rcmd *x = arg;
    tw_redis *c = x->c;
    (void)d;
    /* d fails with TW_ECANCELED when this returns; tw_deferred_cancel keeps
     * it alive until then, so our reference can go now. */
    x->d = NULL;
    tw_deferred_unref(d);
    if (x->where == CMD_WAITING) {
        rl_remove(&c->waiting, x);
        cmd_free(x);
    } else if (x->where == CMD_SENT) {
        rl_remove(&c->sent, x); /* hiredis frees it when the reply comes */
        x->where = CMD_DONE;
    }
}

int tw__redis_send(tw_redis *c, char *buf, size_t len, double timeout, tw__script *script,
                   tw_deferred **out)
{
    if (c->state == LINK_CLOSING || c->state == LINK_CLOSED) {
        redisFreeCommand(buf);
        return TW_ESHUTDOWN;
    }
    tw__rcmd *x = TW__NEW(tw__rcmd);
    if (!x) {
        redisFreeCommand(buf);
        return TW_ENOMEM;
    }
    x->c = c;
    x->buf = buf;
    x->len = len;
    x->script = script;
    cmd_name(x);
    int rc = tw_deferred_create(&x->d, cmd_cancel, x);
    if (rc) {
        cmd_free(x);
        return rc;
    }
    x->deadline = timeout < 0 || isinf(timeout) ? INFINITY : now_s(c) + timeout;
    *out = tw_deferred_ref(x->d);
    tw__redis_enter(c);
    x->where = CMD_WAITING;
    if (c->state == LINK_READY && c->ac && !c->waiting.head && hand_over(c, x)) {
        /* sent */
    } else {
        x->where = CMD_WAITING;
        rl_push(&c->waiting, x);
    }
    arm_cmd_timer(c, x->deadline);
    tw__redis_leave(c);
    return 0;
}

/* ---- replies ----------------------------------------------------------------- */

static void on_reply(struct redisAsyncContext *ac, void *reply, void *privdata)
{
    tw__rcmd *x = privdata;
    tw_redis *c = x->c;
    redisReply *rep = reply;
    if (x->where == CMD_SENT)
        rl_remove(&c->sent, x);
    bool live = x->d != NULL;
    x->where = CMD_DONE;
    if (!rep) {
        if (live) {
            if (c->state == LINK_CLOSING || c->state == LINK_CLOSED)
                cmd_settle(x, tw_result_fail(TW_ESHUTDOWN,
                                             "redis %s: %s did not complete: the connection "
                                             "was closed",
                                             c->addr, x->name));
            else
                cmd_settle(x, tw_result_fail(TW_ECONNLOST,
                                             "redis %s: connection lost (%s) with %s in "
                                             "flight: it may or may not have run",
                                             c->addr,
                                             ac->err && ac->errstr[0] ? ac->errstr
                                                                      : "closed",
                                             x->name));
        }
        cmd_free(x);
        return;
    }
    c->stats.replies++;
    if (rep->type == REDIS_REPLY_ERROR && x->script && !x->is_eval && !x->retried &&
        strncmp(rep->str, "NOSCRIPT", 8) == 0 && c->ac && c->state == LINK_READY) {
        /* The server lost its script cache (SCRIPT FLUSH): send the text
         * this time. Commands pipelined behind this one have run before it
         * by now (docs/redis.md). */
        x->retried = true;
        c->scripts_sent &= ~(1u << x->script->id);
        if (live && hand_over(c, x)) {
            c->stats.commands--; /* the same command */
            return;
        }
    }
    if (live)
        cmd_settle(x, tw__redis_reply_result(rep));
    cmd_free(x);
}

/* ---- the link ---------------------------------------------------------------- */

static void link_connect(tw_redis *c);
static void link_timer_fired(void *arg);

static void cancel_link_timer(tw_redis *c)
{
    if (c->link_timer) {
        tw_delayed_call_cancel(c->link_timer);
        tw_delayed_call_unref(c->link_timer);
        c->link_timer = NULL;
    }
}

static void arm_link_timer(tw_redis *c, double seconds)
{
    cancel_link_timer(c);
    if (tw_reactor_call_later(c->r, seconds, link_timer_fired, c, &c->link_timer) != 0)
        c->link_timer = NULL; /* the reactor has shut down: nothing will run again */
}

static void schedule_reconnect(tw_redis *c)
{
    if (c->state == LINK_CLOSING) {
        close_finish(c);
        return;
    }
    c->state = LINK_BACKOFF;
    /* jitter: a delay in [backoff/2, backoff], so that clients that lost one
     * server together do not come back in step */
    double u = (double)(tw__redis_random(c) >> 11) / 9007199254740992.0;
    double delay = c->backoff * (0.5 + 0.5 * u);
    c->backoff = c->backoff * 2 > c->reconnect_max ? c->reconnect_max : c->backoff * 2;
    arm_link_timer(c, delay);
}

static void set_error(tw_redis *c, const char *what, const char *detail)
{
    snprintf(c->error, sizeof c->error, "%s%s%s", what, detail && detail[0] ? ": " : "",
             detail ? detail : "");
}

static void fire_ready_waiters(tw_redis *c, tw_result r)
{
    while (c->n_ready) {
        tw_deferred *d = c->ready_waiters[0];
        memmove(c->ready_waiters, c->ready_waiters + 1, --c->n_ready * sizeof *c->ready_waiters);
        tw_deferred_callback(d, tw_result_is_failure(r) ? tw_result_failure(tw_failure_ref(
                                                              tw_result_as_failure(r)))
                                                        : tw_result_none());
        tw_deferred_unref(d);
    }
    tw_result_drop(r);
}

/* The prelude every connection sends first (AUTH, SELECT): its failure is
 * what the following commands will fail with, and becomes the last error. */
static tw_result prelude_done(tw_result r, void *arg)
{
    tw_redis *c = arg;
    if (tw_result_is_failure(r) && !c->error[0]) { /* the first one says why */
        set_error(c, "connection set-up failed", tw_failure_message(tw_result_as_failure(r)));
        tw_result_drop(r);
        return tw_result_none();
    }
    tw_result_drop(r);
    return tw_result_none();
}

static void send_prelude(tw_redis *c, const char *fmt, ...)
{
    va_list ap;
    char *buf;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&buf, fmt, ap);
    va_end(ap);
    if (len < 0)
        return;
    tw__rcmd *x = TW__NEW(tw__rcmd);
    if (!x) {
        redisFreeCommand(buf);
        return;
    }
    x->c = c;
    x->buf = buf;
    x->len = (size_t)len;
    cmd_name(x);
    x->deadline = c->command_timeout < 0 ? INFINITY : now_s(c) + c->command_timeout;
    if (tw_deferred_create(&x->d, cmd_cancel, x) != 0) {
        cmd_free(x);
        return;
    }
    tw_deferred_add_both(x->d, prelude_done, c);
    if (!hand_over(c, x)) {
        cmd_settle(x, tw_result_fail(TW_ECONNLOST, "redis %s: the connection went away",
                                     c->addr));
        cmd_free(x);
        return;
    }
    arm_cmd_timer(c, x->deadline);
}

static void on_connect(const struct redisAsyncContext *cac, int status)
{
    struct redisAsyncContext *ac = (struct redisAsyncContext *)cac;
    tw_redis *c = ac->data;
    cancel_link_timer(c);
    if (status != REDIS_OK) {
        /* hiredis frees the context when this returns */
        set_error(c, "connect failed", ac->errstr);
        schedule_reconnect(c);
        return;
    }
    c->state = LINK_READY;
    c->generation++;
    c->scripts_sent = 0;
    c->backoff = c->reconnect_min;
    c->error[0] = 0;
    c->stats.connects++;
    if (!c->unix_path)
        redisEnableKeepAlive(&ac->c);
    if (c->password)
        send_prelude(c, "AUTH %s", c->password);
    if (c->db)
        send_prelude(c, "SELECT %d", c->db);
    if (c->on_event)
        c->on_event(c->on_event_arg, c, true);
    send_waiting(c);
    fire_ready_waiters(c, tw_result_none());
}

static void on_disconnect(const struct redisAsyncContext *cac, int status)
{
    tw_redis *c = cac->data;
    /* ev_cleanup has run: c->ac is NULL already */
    c->ac = NULL;
    if (c->state == LINK_CLOSING || c->state == LINK_CLOSED) {
        close_finish(c);
        return;
    }
    c->stats.disconnects++;
    set_error(c, "connection lost", status == REDIS_OK ? "closed" : cac->errstr);
    if (c->on_event)
        c->on_event(c->on_event_arg, c, false);
    schedule_reconnect(c);
}

static void link_connect(tw_redis *c)
{
    struct redisAsyncContext *ac;
    c->state = LINK_CONNECTING;
    ac = c->unix_path ? redisAsyncConnectUnix(c->unix_path)
                      : redisAsyncConnect(c->host, c->port);
    if (!ac) {
        set_error(c, "connect failed", "out of memory");
        schedule_reconnect(c);
        return;
    }
    if (ac->err) {
        set_error(c, "connect failed", ac->errstr);
        redisAsyncFree(ac);
        schedule_reconnect(c);
        return;
    }
    c->ac = ac;
    c->fd = ac->c.fd;
    c->watching = 0;
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisAsyncSetConnectCallback(ac, on_connect); /* watches for writable */
    arm_link_timer(c, c->connect_timeout);
}

static void link_timer_fired(void *arg)
{
    tw_redis *c = arg;
    tw__redis_enter(c);
    tw_delayed_call_unref(c->link_timer);
    c->link_timer = NULL;
    if (c->state == LINK_CONNECTING && c->ac) {
        char why[64];
        snprintf(why, sizeof why, "no connection within %g s", c->connect_timeout);
        set_error(c, "connect timed out", why);
        kill_ac(c, KILL_FREE); /* not connected: no disconnect callback */
        c->ac = NULL;
        schedule_reconnect(c);
    } else if (c->state == LINK_BACKOFF) {
        link_connect(c);
    }
    tw__redis_leave(c);
}

/* ---- public ------------------------------------------------------------------- */

static bool bad_seconds(double s, bool may_be_negative)
{
    return isnan(s) || (!may_be_negative && !(s > 0)) || (may_be_negative && s == 0);
}

static void ignore_sigpipe(void)
{
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) &&
        sa.sa_handler == SIG_DFL) {
        sa.sa_handler = SIG_IGN;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0;
        sigaction(SIGPIPE, &sa, NULL);
    }
}

int tw_redis_connect(tw_reactor *r, const tw_redis_config *cfg, tw_redis **out)
{
    if (!r || !cfg || !out)
        return TW_EINVAL;
    if (!cfg->unix_path && (!cfg->host || !cfg->host[0] || cfg->port <= 0 || cfg->port > 65535))
        return TW_EINVAL;
    if (cfg->unix_path && !cfg->unix_path[0])
        return TW_EINVAL;
    if (bad_seconds(cfg->connect_timeout, false) || bad_seconds(cfg->command_timeout, true) ||
        bad_seconds(cfg->reconnect_min, false) || isnan(cfg->reconnect_max) ||
        cfg->reconnect_max < cfg->reconnect_min || cfg->db < 0)
        return TW_EINVAL;
    tw_redis *c = TW__NEW(tw_redis);
    if (!c)
        return TW_ENOMEM;
    c->r = r;
    c->thread = tw__self();
    c->fd = -1;
    c->port = cfg->port;
    c->db = cfg->db;
    c->connect_timeout = cfg->connect_timeout;
    c->command_timeout = cfg->command_timeout;
    c->reconnect_min = cfg->reconnect_min;
    c->reconnect_max = cfg->reconnect_max;
    c->backoff = cfg->reconnect_min;
    c->host = dup_str(cfg->unix_path ? NULL : cfg->host);
    c->unix_path = dup_str(cfg->unix_path);
    c->password = dup_str(cfg->password);
    if ((!cfg->unix_path && !c->host) || (cfg->unix_path && !c->unix_path) ||
        (cfg->password && !c->password)) {
        free_str(c->host);
        free_str(c->unix_path);
        free_str(c->password);
        TW__DELETE(c);
        return TW_ENOMEM;
    }
    if (c->unix_path)
        snprintf(c->addr, sizeof c->addr, "unix:%s", c->unix_path);
    else if (strchr(c->host, ':'))
        snprintf(c->addr, sizeof c->addr, "[%s]:%d", c->host, c->port);
    else
        snprintf(c->addr, sizeof c->addr, "%s:%d", c->host, c->port);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    c->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)c ^
             0x9E3779B97F4A7C15ULL;
    if (!c->rng)
        c->rng = 1;
    ignore_sigpipe();
    tw__redis_enter(c);
    link_connect(c);
    tw__redis_leave(c);
    *out = c;
    return 0;
}

int tw__redis_clone(tw_redis *c, tw_redis **out)
{
    tw_redis_config cfg = {c->host, c->port, c->unix_path, c->connect_timeout,
                           c->command_timeout, c->reconnect_min, c->reconnect_max,
                           c->password, c->db};
    return tw_redis_connect(c->r, &cfg, out);
}

int tw_redis_parse_address(const char *addr, char *buf, size_t size, tw_redis_config *cfg)
{
    if (!addr || !buf || !cfg || strlen(addr) + 1 > size)
        return TW_EINVAL;
    memcpy(buf, addr, strlen(addr) + 1);
    if (strncmp(buf, "unix:", 5) == 0) {
        if (!buf[5])
            return TW_EINVAL;
        cfg->unix_path = buf + 5;
        cfg->host = NULL;
        return 0;
    }
    char *host = buf, *colon;
    if (buf[0] == '[') {
        char *close = strchr(buf, ']');
        if (!close || close[1] != ':')
            return TW_EINVAL;
        *close = 0;
        host = buf + 1;
        colon = close + 1;
    } else {
        colon = strrchr(buf, ':');
        if (!colon || strchr(buf, ':') != colon)
            return TW_EINVAL;
    }
    *colon = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (!host[0] || !colon[1] || *end || port <= 0 || port > 65535)
        return TW_EINVAL;
    cfg->host = host;
    cfg->port = (int)port;
    cfg->unix_path = NULL;
    return 0;
}

int tw__redis_raw(tw_redis *c, tw__raw_fn fn, void *privdata, const char *fmt, ...)
{
    if (c->state != LINK_READY || !c->ac)
        return TW_ENOTCONN;
    va_list ap;
    char *buf;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&buf, fmt, ap);
    va_end(ap);
    if (len < 0)
        return len == -1 ? TW_ENOMEM : TW_EINVAL;
    tw__redis_enter(c);
    c->in_send = true;
    c->write_noted = false;
    int rc = redisAsyncFormattedCommand(c->ac, fn, privdata, buf, (size_t)len);
    c->in_send = false;
    if (c->write_noted)
        c->flush_pending = true;
    redisFreeCommand(buf);
    tw__redis_leave(c);
    return rc == REDIS_OK ? 0 : TW_ENOTCONN;
}

int tw_redis_commandv(tw_redis *c, tw_deferred **out, const char *fmt, va_list ap)
{
    if (!c || !out || !fmt)
        return TW_EINVAL;
    TW__REDIS_CHECK(c, "tw_redis_command");
    char *buf;
    int len = redisvFormatCommand(&buf, fmt, ap);
    if (len == -1)
        return TW_ENOMEM;
    if (len <= 0) /* -2: a format hiredis cannot read */
        return TW_EINVAL;
    if (strncmp(buf, "*0\r\n", 4) == 0) {
        /* no words at all: the server would never answer it, and every
         * later reply would go to the wrong command */
        redisFreeCommand(buf);
        return TW_EINVAL;
    }
    return tw__redis_send(c, buf, (size_t)len, c->command_timeout, NULL, out);
}

int tw_redis_command(tw_redis *c, tw_deferred **out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = tw_redis_commandv(c, out, fmt, ap);
    va_end(ap);
    return rc;
}

int tw_redis_command_argv_timeout(tw_redis *c, double timeout, int argc,
                                  const char *const *argv, const size_t *lens,
                                  tw_deferred **out)
{
    if (!c || !out || argc <= 0 || !argv || isnan(timeout))
        return TW_EINVAL;
    TW__REDIS_CHECK(c, "tw_redis_command_argv");
    for (int i = 0; i < argc; i++)
        if (!argv[i])
            return TW_EINVAL;
    char *buf;
    long long len = redisFormatCommandArgv(&buf, argc, (const char **)argv, lens);
    if (len == -1)
        return TW_ENOMEM;
    if (len <= 0)
        return TW_EINVAL;
    return tw__redis_send(c, buf, (size_t)len, timeout, NULL, out);
}

int tw_redis_command_argv(tw_redis *c, int argc, const char *const *argv, const size_t *lens,
                          tw_deferred **out)
{
    if (!c)
        return TW_EINVAL;
    return tw_redis_command_argv_timeout(c, c->command_timeout, argc, argv, lens, out);
}

/* The scripts are shared by every connection of the process, and loops on
 * several threads may send one for the first time at once: its digest is
 * computed under sha_lock, then published by the release store of `ready`,
 * which the acquire load here pairs with. */
static tw_lock sha_lock = TW_LOCK_INIT;

static int script_digest(tw__script *script)
{
    if (__atomic_load_n(&script->ready, __ATOMIC_ACQUIRE))
        return 0;
    int rc = 0;
    tw_lock_acquire(&sha_lock);
    if (!__atomic_load_n(&script->ready, __ATOMIC_RELAXED)) { /* sha_lock orders it */
        rc = tw__sha1_hex(script->text, strlen(script->text), script->sha);
        if (rc == 0)
            __atomic_store_n(&script->ready, true, __ATOMIC_RELEASE);
    }
    tw_lock_release(&sha_lock);
    return rc;
}

int tw__redis_eval(tw_redis *c, tw__script *script, int nkeys, int argc,
                   const char *const *argv, const size_t *lens, tw_deferred **out)
{
    enum { MAX = 16 };
    const char *a[MAX + 3];
    size_t l[MAX + 3];
    char nk[16];
    if (argc > MAX || nkeys > argc)
        return TW_EINVAL;
    int rc = script_digest(script);
    if (rc)
        return rc;
    snprintf(nk, sizeof nk, "%d", nkeys);
    a[0] = "EVALSHA";
    l[0] = 7;
    a[1] = script->sha;
    l[1] = 40;
    a[2] = nk;
    l[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        a[3 + i] = argv[i];
        l[3 + i] = lens ? lens[i] : strlen(argv[i]);
    }
    char *buf;
    long long len = redisFormatCommandArgv(&buf, argc + 3, a, l);
    if (len == -1)
        return TW_ENOMEM;
    if (len <= 0)
        return TW_EINVAL;
    return tw__redis_send(c, buf, (size_t)len, c->command_timeout, script, out);
}

int tw_redis_wait_connected(tw_redis *c, tw_deferred **out)
{
    if (!c || !out)
        return TW_EINVAL;
    TW__REDIS_CHECK(c, "tw_redis_wait_connected");
    if (c->state == LINK_CLOSING || c->state == LINK_CLOSED)
        return TW_ESHUTDOWN;
    if (c->state == LINK_READY)
        return tw_deferred_succeed(out, NULL, NULL);
    if (c->n_ready == c->cap_ready) {
        size_t cap = c->cap_ready ? c->cap_ready * 2 : 4;
        void *p = tw__realloc(c->ready_waiters, c->cap_ready * sizeof *c->ready_waiters,
                              cap * sizeof *c->ready_waiters);
        if (!p)
            return TW_ENOMEM;
        c->ready_waiters = p;
        c->cap_ready = cap;
    }
    tw_deferred *d;
    int rc = tw_deferred_create(&d, NULL, NULL);
    if (rc)
        return rc;
    c->ready_waiters[c->n_ready++] = d;
    *out = tw_deferred_ref(d);
    return 0;
}

bool tw_redis_connected(const tw_redis *c)
{
    return c && c->state == LINK_READY;
}

const char *tw_redis_last_error(const tw_redis *c)
{
    return c ? c->error : "";
}

void tw_redis_stats_get(const tw_redis *c, tw_redis_stats *out)
{
    if (!c || !out)
        return;
    *out = c->stats;
    out->waiting = c->waiting.n;
    out->in_flight = c->sent.n;
}

static void close_finish(tw_redis *c)
{
    if (c->state == LINK_CLOSED)
        return;
    c->state = LINK_CLOSED;
    cancel_link_timer(c);
    if (c->cmd_timer) {
        tw_delayed_call_cancel(c->cmd_timer);
        tw_delayed_call_unref(c->cmd_timer);
        c->cmd_timer = NULL;
    }
    c->freeing = true;
    tw_deferred *d = c->close_d;
    c->close_d = NULL;
    if (d) {
        tw_deferred_callback(d, tw_result_none());
        tw_deferred_unref(d);
    }
}

static void conn_free(tw_redis *c)
{
    free_str(c->host);
    free_str(c->unix_path);
    free_str(c->password);
    tw__free(c->ready_waiters, c->cap_ready * sizeof *c->ready_waiters);
    TW__DELETE(c);
}

/* force: in-flight commands fail now (TW_ESHUTDOWN) instead of getting
 * their replies. */
static int close_impl(tw_redis *c, tw_deferred **out, bool force)
{
    if (c->state == LINK_CLOSING || c->state == LINK_CLOSED)
        return TW_EALREADY;
    if (c->users)
        return TW_EBUSY;
    tw_deferred *d = NULL;
    if (out) {
        int rc = tw_deferred_create(&d, NULL, NULL);
        if (rc)
            return rc;
        *out = tw_deferred_ref(d);
    }
    tw__redis_enter(c);
    tw__redis_pubsub_close(c);
    int was = c->state;
    c->state = LINK_CLOSING;
    c->close_d = d;
    cancel_link_timer(c);
    while (c->waiting.head)
        fail_not_sent(c, c->waiting.head, TW_ESHUTDOWN, 0);
    fire_ready_waiters(c, tw_result_fail(TW_ESHUTDOWN, "redis %s: the connection was closed",
                                         c->addr));
    if (c->ac && was == LINK_READY && sent_unsettled(c) && !force)
        kill_ac(c, KILL_DISCONNECT); /* after the replies in flight */
    else if (c->ac)
        kill_ac(c, KILL_FREE); /* a connect in progress, or nothing to wait for */
    else
        close_finish(c);
    tw__redis_leave(c);
    return 0;
}

int tw_redis_close(tw_redis *c, tw_deferred **out)
{
    if (!c)
        return TW_EINVAL;
    TW__REDIS_CHECK(c, "tw_redis_close");
    return close_impl(c, out, false);
}

void tw__redis_abort(tw_redis *c)
{
    if (c)
        close_impl(c, NULL, true);
}
