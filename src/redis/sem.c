/* The distributed semaphore: the DeferredSemaphore's shape on Redis.
 *
 * On the server, per name N: "twine:sem:{N}", a sorted set of permit ids
 * scored by expiry (server ms). Every operation is one Lua script, and each
 * first drops expired permits, which is how a dead holder's permit returns
 * to the pool. A release PUBLISHes on "twine:sem:wake:{N}", which every
 * process waiting for the name listens to.
 *
 * In the process, per tw_redis_sem: a FIFO of acquire Deferreds; only the
 * head tries, under a permit id kept across the retries of one try (an
 * acquire that timed out and ran is recognised: the id is already in the
 * set). A grant goes to the head and the next waiter tries at once (more
 * permits may be free). When none is free the waiters wait for a release
 * message, or retry when the first permit would expire. Each permit held
 * has its own watchdog renewing it every ttl/3; release stops it before it
 * returns. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis/redis.h"

enum { S_IDLE = 0, S_TRYING, S_WAITING };
#define NAME_MAX_LEN 512

/* KEYS: set. ARGV: id ttl_ms limit. {1, ttl}: granted; {0, ms until the
 * first permit expires}. */
static tw__script acquire_script = {
    "semaphore acquire",
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local Z, id, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2])\n"
    "redis.call('ZREMRANGEBYSCORE', Z, '-inf', now)\n"
    "if redis.call('ZSCORE', Z, id) or redis.call('ZCARD', Z) < tonumber(ARGV[3]) then\n"
    "  redis.call('ZADD', Z, now + ttl, id)\n"
    "  return {1, ttl}\n"
    "end\n"
    "local first = redis.call('ZRANGE', Z, 0, 0, 'WITHSCORES')\n"
    "return {0, tonumber(first[2]) - now}\n",
    TW__SCRIPT_SEM_ACQUIRE,
    "", false};

/* KEYS: set. ARGV: id channel. 1: given back; 0: it had expired (or was
 * never held). A waiter withdraws with it too. */
static tw__script release_script = {
    "semaphore release",
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local score = redis.call('ZSCORE', KEYS[1], ARGV[1])\n"
    "if not score then return 0 end\n"
    "redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "redis.call('PUBLISH', ARGV[2], ARGV[1])\n"
    "if tonumber(score) > now then return 1 end\n"
    "return 0\n",
    TW__SCRIPT_SEM_RELEASE,
    "", false};

/* KEYS: set. ARGV: id ttl_ms. 1: renewed; 0: it had expired (now gone). */
static tw__script renew_script = {
    "semaphore renew",
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local score = redis.call('ZSCORE', KEYS[1], ARGV[1])\n"
    "if score and tonumber(score) > now then\n"
    "  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])\n"
    "  return 1\n"
    "end\n"
    "redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "return 0\n",
    TW__SCRIPT_SEM_RENEW,
    "", false};

struct tw_redis_permit {
    tw_redis_sem *s;
    tw_redis_permit *prev, *next; /* the semaphore's held permits */
    char id[48];
    double deadline;
    bool lost;
    uint64_t lease; /* renewals for an older number are stale */
    tw_delayed_call *timer;
    tw_deferred **watchers;
    size_t nwatch, capwatch;
    unsigned firing; /* watcher callbacks on the stack: the permit outlives them */
    bool released;   /* given back (unlinked); freed when firing is 0 */
};

struct tw_redis_sem {
    tw_redis *c;
    char *name;
    size_t name_len;
    char *key, *channel;
    size_t key_len, channel_len;
    uint32_t limit;
    char limit_s[16];
    double ttl;
    char ttl_ms[24];
    char procid[20];

    tw_deferred **q;
    size_t qn, qcap;
    int state;
    char try_id[48];
    uint64_t seq, attempt, leases;
    bool wake_seen; /* a release was announced while TRYING */
    double retry_delay;
    tw_delayed_call *timer; /* WAITING: the retry */

    tw__sub *sub;
    tw_deferred *sub_ready;
    bool ready;

    tw_redis_permit *permits;
    size_t held;
    unsigned refs;
    bool dead;
};

#ifdef TW_DEBUG
#define CHECK(s, fn)                                                                   \
    do {                                                                               \
        if ((s)->c->thread != tw__self())                                              \
            tw__wrong_thread("a Redis semaphore", (s)->c->thread, (fn));               \
    } while (0)
#else
#define CHECK(s, fn) ((void)0)
#endif

static double dmin(double a, double b)
{
    return a < b ? a : b;
}

static double now_s(const tw_redis_sem *s)
{
    return tw_reactor_seconds(s->c->r);
}

static double jitter(tw_redis_sem *s, double lo, double hi)
{
    double u = (double)(tw__redis_random(s->c) >> 11) / 9007199254740992.0;
    return lo + (hi - lo) * u;
}

static tw_result ignore_result(tw_result r, void *arg)
{
    (void)arg;
    tw_result_drop(r);
    return tw_result_none();
}

static void sem_unref(tw_redis_sem *s)
{
    if (--s->refs)
        return;
    tw__free(s->name, s->name_len + 1);
    tw__free(s->key, s->key_len + 1);
    tw__free(s->channel, s->channel_len + 1);
    tw__free(s->q, s->qcap * sizeof *s->q);
    TW__DELETE(s);
}

typedef struct sem_op {
    tw_redis_sem *s;
    tw_redis_permit *p; /* a renewal's permit (NULL once released) */
    uint64_t stamp;
    double sent_at;
    tw_deferred *done;
    bool was_lost;
    double until;  /* a release: the permit lasts at most until then */
    char id[48];   /* ... and its id */
} sem_op;

static sem_op *op_new(tw_redis_sem *s, uint64_t stamp)
{
    sem_op *op = TW__NEW(sem_op);
    if (!op)
        return NULL;
    op->s = s;
    op->stamp = stamp;
    op->sent_at = now_s(s);
    s->refs++;
    return op;
}

static void op_free(sem_op *op)
{
    tw_redis_sem *s = op->s;
    TW__DELETE(op);
    sem_unref(s);
}

static long long elem_int(const tw_redis_reply *rep, size_t i)
{
    if (rep->type != TW_REDIS_ARRAY || rep->len <= i)
        return -1;
    const tw_redis_reply *e = &rep->element[i];
    if (e->type == TW_REDIS_INTEGER)
        return e->integer;
    if (e->type == TW_REDIS_STRING)
        return strtoll(e->str, NULL, 10);
    return -1;
}

static int send_release(tw_redis_sem *s, const char *id, tw_deferred **out)
{
    const char *argv[3] = {s->key, id, s->channel};
    size_t lens[3] = {s->key_len, strlen(id), s->channel_len};
    return tw__redis_eval(s->c, &release_script, 1, 3, argv, lens, out);
}

/* ---- the local queue ------------------------------------------------------------- */

static int q_push(tw_redis_sem *s, tw_deferred *d)
{
    if (s->qn == s->qcap) {
        size_t cap = s->qcap ? s->qcap * 2 : 8;
        void *p = tw__realloc(s->q, s->qcap * sizeof *s->q, cap * sizeof *s->q);
        if (!p)
            return TW_ENOMEM;
        s->q = p;
        s->qcap = cap;
    }
    s->q[s->qn++] = d;
    return 0;
}

static tw_deferred *q_pop(tw_redis_sem *s)
{
    if (!s->qn)
        return NULL;
    tw_deferred *d = s->q[0];
    memmove(s->q, s->q + 1, --s->qn * sizeof *s->q);
    return d;
}

static void fail_waiters(tw_redis_sem *s, tw_failure *f)
{
    tw_deferred *d;
    while ((d = q_pop(s))) {
        tw_deferred_errback(d, tw_failure_ref(f));
        tw_deferred_unref(d);
    }
    tw_failure_unref(f);
}

/* ---- permits ------------------------------------------------------------------ */

static void permit_stop(tw_redis_permit *p)
{
    if (p->timer) {
        tw_delayed_call_cancel(p->timer);
        tw_delayed_call_unref(p->timer);
        p->timer = NULL;
    }
}

static void permit_free(tw_redis_permit *p)
{
    tw__free(p->watchers, p->capwatch * sizeof *p->watchers);
    TW__DELETE(p);
}

/* The callbacks may release p (the natural answer to a lost permit): it is
 * then freed here, when the last of them has returned. */
static void permit_fire_watchers(tw_redis_permit *p, tw_failure *f)
{
    p->firing++;
    while (p->nwatch) {
        tw_deferred *d = p->watchers[--p->nwatch];
        if (f)
            tw_deferred_errback(d, tw_failure_ref(f));
        else
            tw_deferred_callback(d, tw_result_none());
        tw_deferred_unref(d);
    }
    p->firing--;
    if (f)
        tw_failure_unref(f);
    if (p->released && !p->firing)
        permit_free(p);
}

static void permit_lost(tw_redis_permit *p, const char *why)
{
    if (p->lost)
        return;
    p->lost = true;
    permit_stop(p);
    permit_fire_watchers(p, tw_failure_new(TW_ELEASE,
                                           "redis semaphore \"%s\": permit %s lost: %s",
                                           p->s->name, p->id, why));
}

static void permit_tick(void *arg);

/* p if s still holds it (a pointer only: compare leases to be sure). */
static tw_redis_permit *held_permit(const tw_redis_sem *s, const tw_redis_permit *p)
{
    tw_redis_permit *x = s->permits;
    while (x && x != p)
        x = x->next;
    return x;
}

static void permit_arm(tw_redis_permit *p, double at)
{
    permit_stop(p);
    double in = at - now_s(p->s);
    if (tw_reactor_call_later(p->s->c->r, in > 0 ? in : 0, permit_tick, p, &p->timer) != 0)
        p->timer = NULL;
}

static tw_result on_renew_reply(tw_result r, void *arg)
{
    sem_op *op = arg;
    tw_redis_permit *p = op->s->dead ? NULL : held_permit(op->s, op->p);
    if (p && p->lease == op->stamp && !p->lost) {
        if (tw_result_is_failure(r)) {
            permit_arm(p, dmin(now_s(p->s) + p->s->ttl / 10.0, p->deadline));
        } else if (((const tw_redis_reply *)r.ptr)->integer == 1) {
            p->deadline = op->sent_at + p->s->ttl;
            permit_arm(p, dmin(op->sent_at + p->s->ttl / 3.0, p->deadline));
        } else {
            permit_lost(p, "it expired on the server");
        }
    }
    tw_result_drop(r);
    op_free(op);
    return tw_result_none();
}

static void permit_tick(void *arg)
{
    tw_redis_permit *p = arg;
    tw_redis_sem *s = p->s;
    tw_delayed_call_unref(p->timer);
    p->timer = NULL;
    if (p->lost)
        return;
    double now = now_s(s);
    if (now >= p->deadline) {
        permit_lost(p, "no renewal succeeded within the TTL");
        return;
    }
    permit_arm(p, p->deadline); /* the deadline check, until the reply moves it */
    sem_op *op = op_new(s, p->lease);
    if (!op)
        return;
    op->p = p;
    const char *argv[3] = {s->key, p->id, s->ttl_ms};
    size_t lens[3] = {s->key_len, strlen(p->id), strlen(s->ttl_ms)};
    tw_deferred *d;
    if (tw__redis_eval(s->c, &renew_script, 1, 3, argv, lens, &d) != 0) {
        op_free(op);
        return;
    }
    tw_deferred_add_both(d, on_renew_reply, op);
    tw_deferred_unref(d);
}

/* ---- tries ------------------------------------------------------------------- */

static void try_acquire(tw_redis_sem *s);

static void stop_timer(tw_redis_sem *s)
{
    if (s->timer) {
        tw_delayed_call_cancel(s->timer);
        tw_delayed_call_unref(s->timer);
        s->timer = NULL;
    }
}

static void retry_fired(void *arg)
{
    tw_redis_sem *s = arg;
    tw_delayed_call_unref(s->timer);
    s->timer = NULL;
    if (s->state == S_WAITING)
        try_acquire(s);
}

static void arm_retry(tw_redis_sem *s, double seconds)
{
    stop_timer(s);
    s->state = S_WAITING;
    if (tw_reactor_call_later(s->c->r, seconds, retry_fired, s, &s->timer) != 0)
        s->timer = NULL;
}

static void kick(tw_redis_sem *s)
{
    if (s->dead || !s->qn || s->state != S_IDLE || !s->ready)
        return;
    snprintf(s->try_id, sizeof s->try_id, "%s:%llu", s->procid, (unsigned long long)++s->seq);
    s->retry_delay = 0.01;
    try_acquire(s);
}

/* Ends this try: the id leaves the set if a grant came after all. */
static void withdraw(tw_redis_sem *s)
{
    if (s->try_id[0]) {
        tw_deferred *d;
        if (send_release(s, s->try_id, &d) == 0) {
            tw_deferred_add_both(d, ignore_result, NULL);
            tw_deferred_unref(d);
        }
    }
    stop_timer(s);
    s->try_id[0] = 0;
    s->attempt++;
    s->state = S_IDLE;
}

static void grant(tw_redis_sem *s, double deadline)
{
    tw_redis_permit *p = TW__NEW(tw_redis_permit);
    if (!p) { /* give it back; the waiter tries again */
        withdraw(s);
        kick(s);
        return;
    }
    p->s = s;
    memcpy(p->id, s->try_id, sizeof p->id);
    p->deadline = deadline;
    p->lease = ++s->leases;
    p->next = s->permits;
    if (p->next)
        p->next->prev = p;
    s->permits = p;
    s->held++;
    s->try_id[0] = 0;
    s->state = S_IDLE;
    permit_arm(p, dmin(now_s(s) + s->ttl / 3.0, deadline));
    tw_deferred *d = q_pop(s);
    if (d) {
        tw_deferred_callback(d, tw_result_value(p, NULL));
        tw_deferred_unref(d);
    } else {
        tw_redis_sem_release(s, p, NULL);
    }
    kick(s); /* more permits may be free */
}

static tw_result on_acquire_reply(tw_result r, void *arg)
{
    sem_op *op = arg;
    tw_redis_sem *s = op->s;
    if (s->dead || op->stamp != s->attempt || s->state != S_TRYING) {
        tw_result_drop(r);
        op_free(op);
        return tw_result_none();
    }
    tw_failure *f = tw_result_as_failure(r);
    if (f) {
        int code = tw_failure_code(f);
        if (tw__redis_transient(f)) {
            double d = s->retry_delay;
            s->retry_delay = dmin(s->retry_delay * 2, s->ttl / 2 > 0.05 ? s->ttl / 2 : 0.05);
            arm_retry(s, d * jitter(s, 0.5, 1.0));
        } else {
            withdraw(s);
            fail_waiters(s, tw_failure_wrap(tw_failure_ref(f), code,
                                            "redis semaphore \"%s\": acquire failed: %s",
                                            s->name, tw_failure_message(f)));
        }
    } else {
        const tw_redis_reply *rep = r.ptr;
        s->retry_delay = 0.01;
        if (elem_int(rep, 0) == 1) {
            long long ttl = elem_int(rep, 1);
            grant(s, op->sent_at + (double)(ttl > 0 ? ttl : 0) / 1000.0);
        } else if (s->wake_seen) {
            try_acquire(s); /* a permit came back while this was on its way */
        } else {
            long long wait = elem_int(rep, 1);
            if (wait < 0)
                wait = 0;
            arm_retry(s, (double)wait / 1000.0 * jitter(s, 1.0, 1.1) + 0.001);
        }
    }
    tw_result_drop(r);
    op_free(op);
    return tw_result_none();
}

static void try_acquire(tw_redis_sem *s)
{
    s->state = S_TRYING;
    s->wake_seen = false;
    s->attempt++;
    sem_op *op = op_new(s, s->attempt);
    tw_deferred *d;
    int rc = TW_ENOMEM;
    if (op) {
        const char *argv[4] = {s->key, s->try_id, s->ttl_ms, s->limit_s};
        size_t lens[4] = {s->key_len, strlen(s->try_id), strlen(s->ttl_ms), strlen(s->limit_s)};
        rc = tw__redis_eval(s->c, &acquire_script, 1, 4, argv, lens, &d);
    }
    if (rc) {
        if (op)
            op_free(op);
        s->state = S_IDLE;
        s->try_id[0] = 0;
        fail_waiters(s, tw_failure_new(rc, "redis semaphore \"%s\": acquire not sent: %s",
                                       s->name, tw_strerror(rc)));
        return;
    }
    tw_deferred_add_both(d, on_acquire_reply, op);
    tw_deferred_unref(d);
}

/* A permit came back somewhere, or (a NULL payload) the wake channel was
 * subscribed again after a gap in which releases may have gone unheard:
 * the head tries again now. */
static void on_wake(void *arg, const char *payload, size_t len)
{
    tw_redis_sem *s = arg;
    (void)payload;
    (void)len;
    if (s->state == S_WAITING) {
        stop_timer(s);
        try_acquire(s);
    } else if (s->state == S_TRYING) {
        s->wake_seen = true;
    }
}

static tw_result on_sub_ready(tw_result r, void *arg)
{
    tw_redis_sem *s = arg;
    tw_result_drop(r); /* subscribed, or given up waiting: go on either way */
    if (s->sub_ready) {
        tw_deferred_unref(s->sub_ready);
        s->sub_ready = NULL;
    }
    s->ready = true;
    kick(s);
    return tw_result_none();
}

/* ---- public ------------------------------------------------------------------ */

static char *dup_fmt(size_t *len, const char *a, const char *b, const char *c)
{
    *len = strlen(a) + strlen(b) + strlen(c);
    char *p = tw__alloc(*len + 1);
    if (p)
        snprintf(p, *len + 1, "%s%s%s", a, b, c);
    return p;
}

int tw_redis_sem_create(tw_redis *c, const char *name, uint32_t permits, double ttl,
                        tw_redis_sem **out)
{
    if (!c || !name || !name[0] || strlen(name) > NAME_MAX_LEN || !permits || !out ||
        isnan(ttl) || !(ttl >= 0.01) || !(ttl <= 1e6))
        return TW_EINVAL;
    TW__REDIS_CHECK(c, "tw_redis_sem_create");
    if (c->state == LINK_CLOSING || c->state == LINK_CLOSED)
        return TW_ESHUTDOWN;
    tw_redis_sem *s = TW__NEW(tw_redis_sem);
    if (!s)
        return TW_ENOMEM;
    s->c = c;
    s->limit = permits;
    s->ttl = ttl;
    snprintf(s->limit_s, sizeof s->limit_s, "%u", (unsigned)permits);
    snprintf(s->ttl_ms, sizeof s->ttl_ms, "%lld", (long long)(ttl * 1000.0 + 0.5));
    snprintf(s->procid, sizeof s->procid, "%016llx", (unsigned long long)tw__redis_random(c));
    s->name_len = strlen(name);
    s->name = tw__alloc(s->name_len + 1);
    s->key = dup_fmt(&s->key_len, "twine:sem:{", name, "}");
    s->channel = dup_fmt(&s->channel_len, "twine:sem:wake:{", name, "}");
    s->refs = 1;
    int rc = s->name && s->key && s->channel ? 0 : TW_ENOMEM;
    if (!rc) {
        memcpy(s->name, name, s->name_len + 1);
        rc = tw__redis_subscribe(c, s->channel, on_wake, s, &s->sub, &s->sub_ready);
    }
    if (rc) {
        if (s->name)
            tw__free(s->name, s->name_len + 1);
        if (s->key)
            tw__free(s->key, s->key_len + 1);
        if (s->channel)
            tw__free(s->channel, s->channel_len + 1);
        TW__DELETE(s);
        return rc;
    }
    /* Tries wait for the subscription so that no release is missed; for at
     * most the connect timeout, after which waiters rely on retries. */
    tw_deferred_add_timeout(s->sub_ready, c->connect_timeout, tw_reactor_clock(c->r), NULL,
                            NULL);
    tw_deferred_add_both(s->sub_ready, on_sub_ready, s);
    c->users++;
    *out = s;
    return 0;
}

int tw_redis_sem_destroy(tw_redis_sem *s)
{
    if (!s || s->dead)
        return TW_EINVAL;
    CHECK(s, "tw_redis_sem_destroy");
    if (s->held)
        return TW_EBUSY;
    if (s->state != S_IDLE)
        withdraw(s);
    fail_waiters(s, tw_failure_new(TW_ESHUTDOWN, "redis semaphore \"%s\" was destroyed",
                                   s->name));
    s->dead = true;
    stop_timer(s);
    if (s->sub_ready) {
        tw_deferred *d = s->sub_ready;
        s->sub_ready = NULL;
        s->ready = true;
        tw_deferred_cancel(d); /* on_sub_ready finds s dead */
        tw_deferred_unref(d);
    }
    tw__redis_unsubscribe(s->sub);
    s->c->users--;
    sem_unref(s);
    return 0;
}

static void acquire_cancel(tw_deferred *d, void *arg)
{
    tw_redis_sem *s = arg;
    bool head = s->qn && s->q[0] == d;
    size_t i = 0;
    while (i < s->qn && s->q[i] != d)
        i++;
    if (i == s->qn)
        return;
    memmove(s->q + i, s->q + i + 1, (s->qn - i - 1) * sizeof *s->q);
    s->qn--;
    tw_deferred_unref(d); /* tw_deferred_cancel holds it until it has failed */
    if (head && !s->qn && s->state != S_IDLE)
        withdraw(s);
}

int tw_redis_sem_acquire(tw_redis_sem *s, tw_deferred **out)
{
    if (!s || !out || s->dead)
        return TW_EINVAL;
    CHECK(s, "tw_redis_sem_acquire");
    tw_deferred *d;
    int rc = tw_deferred_create(&d, acquire_cancel, s);
    if (rc)
        return rc;
    rc = q_push(s, d);
    if (rc) {
        tw_deferred_unref(d);
        return rc;
    }
    *out = tw_deferred_ref(d);
    kick(s);
    return 0;
}

/* A release whose outcome is unknown is sent again in the background
 * while the permit could still be live (owner-checked by its id, so a
 * second run is harmless); else the permit would stay taken by a holder
 * that let go until it expired. */
static tw_result on_release_reply(tw_result r, void *arg);

static void resend_release(tw_redis_sem *s, const char *id, double until)
{
    if (now_s(s) >= until)
        return;
    sem_op *op = op_new(s, 0);
    if (!op)
        return;
    op->until = until;
    snprintf(op->id, sizeof op->id, "%s", id);
    tw_deferred *d;
    if (send_release(s, op->id, &d) != 0) {
        op_free(op);
        return;
    }
    tw_deferred_add_both(d, on_release_reply, op);
    tw_deferred_unref(d);
}

static tw_result on_release_reply(tw_result r, void *arg)
{
    sem_op *op = arg;
    tw_result out;
    if (tw_result_is_failure(r)) {
        if (tw__redis_transient(tw_result_as_failure(r)))
            resend_release(op->s, op->id, op->until);
        out = r;
    } else {
        long long v = ((const tw_redis_reply *)r.ptr)->integer;
        tw_result_drop(r);
        out = v == 1 && !op->was_lost
                  ? tw_result_none()
                  : tw_result_fail(TW_ELEASE,
                                   "redis semaphore \"%s\": released a permit that had expired",
                                   op->s->name);
    }
    if (op->done) {
        tw_deferred_callback(op->done, out);
        tw_deferred_unref(op->done);
    } else {
        tw_result_drop(out);
    }
    op_free(op);
    return tw_result_none();
}

int tw_redis_sem_release(tw_redis_sem *s, tw_redis_permit *p, tw_deferred **out)
{
    if (!s || !p || s->dead)
        return TW_EINVAL;
    CHECK(s, "tw_redis_sem_release");
    if (!held_permit(s, p))
        return TW_EPERM;
    sem_op *op = op_new(s, 0);
    if (!op)
        return TW_ENOMEM;
    int rc = out ? tw_deferred_create(&op->done, NULL, NULL) : 0;
    tw_deferred *d = NULL;
    if (!rc)
        rc = send_release(s, p->id, &d);
    if (rc) {
        if (op->done)
            tw_deferred_unref(op->done);
        op_free(op);
        return rc;
    }
    if (out)
        *out = tw_deferred_ref(op->done);
    op->was_lost = p->lost;
    op->until = p->lost ? 0 : p->deadline;
    snprintf(op->id, sizeof op->id, "%s", p->id);
    tw_deferred_add_both(d, on_release_reply, op);
    tw_deferred_unref(d);
    /* renewals stop here; one in flight finds the permit gone */
    permit_stop(p);
    if (p->prev)
        p->prev->next = p->next;
    else
        s->permits = p->next;
    if (p->next)
        p->next->prev = p->prev;
    s->held--;
    /* last, the permit no longer held: the watchers' callbacks may call in
     * again (a second release of p is then refused) */
    p->released = true;
    if (!p->lost)
        permit_fire_watchers(p, NULL); /* frees p */
    else if (!p->firing)
        permit_free(p);
    return 0;
}

size_t tw_redis_sem_held(const tw_redis_sem *s)
{
    return s ? s->held : 0;
}

size_t tw_redis_sem_waiting(const tw_redis_sem *s)
{
    return s ? s->qn : 0;
}

const char *tw_redis_permit_id(const tw_redis_permit *p)
{
    return p ? p->id : "";
}

double tw_redis_permit_time_left(const tw_redis_permit *p)
{
    if (!p || p->lost)
        return 0;
    double left = p->deadline - now_s(p->s);
    return left > 0 ? left : 0;
}

int tw_redis_permit_lost(tw_redis_permit *p, tw_deferred **out)
{
    if (!p || !out)
        return TW_EINVAL;
    CHECK(p->s, "tw_redis_permit_lost");
    if (p->lost)
        return tw_deferred_fail(out, tw_failure_new(TW_ELEASE,
                                                    "redis semaphore \"%s\": permit %s lost",
                                                    p->s->name, p->id));
    if (p->nwatch == p->capwatch) {
        size_t cap = p->capwatch ? p->capwatch * 2 : 4;
        void *np = tw__realloc(p->watchers, p->capwatch * sizeof *p->watchers,
                               cap * sizeof *p->watchers);
        if (!np)
            return TW_ENOMEM;
        p->watchers = np;
        p->capwatch = cap;
    }
    tw_deferred *d;
    int rc = tw_deferred_create(&d, NULL, NULL);
    if (rc)
        return rc;
    p->watchers[p->nwatch++] = d;
    *out = tw_deferred_ref(d);
    return 0;
}

/* ---- run ------------------------------------------------------------------------ */

static const char *run_name(void *s)
{
    return ((tw_redis_sem *)s)->name;
}

static int run_acquire(void *s, tw_deferred **out)
{
    return tw_redis_sem_acquire(s, out);
}

static uint64_t run_granted(void *s, tw_result r)
{
    (void)s;
    return (uint64_t)(uintptr_t)r.ptr; /* the permit */
}

static bool run_release(void *ps, uint64_t token, bool *lost, tw_deferred **rd)
{
    tw_redis_sem *s = ps;
    tw_redis_permit *p = (tw_redis_permit *)(uintptr_t)token;
    if (s->dead || !held_permit(s, p)) /* fn released it */
        return false;
    *lost = p->lost;
    return tw_redis_sem_release(s, p, rd) == 0;
}

static void run_ref(void *s)
{
    ((tw_redis_sem *)s)->refs++;
}

static void run_unref(void *s)
{
    sem_unref(s);
}

static const tw__redis_run_ops run_ops = {
    "redis semaphore \"%s\": the permit was lost while the section ran; its result was "
    "dropped",
    run_name, run_acquire, run_granted, run_release, run_ref, run_unref};

int tw_redis_sem_run(tw_redis_sem *s, tw_result_fn fn, void *arg, tw_deferred **out)
{
    if (!s || !fn || s->dead)
        return TW_EINVAL;
    CHECK(s, "tw_redis_sem_run");
    return tw__redis_run(&run_ops, s, fn, arg, out);
}
