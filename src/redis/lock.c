/* The distributed lock: the DeferredLock's shape on Redis.
 *
 * On the server, per lock name N (all keys share the hash tag {N}):
 *   twine:lock:{N}          the holder's owner id, with the lease as its PX expiry
 *   twine:lock:{N}:fence    the fencing counter: INCR'd at every grant, never expires,
 *                           so while a holder holds, its value is the holder's token
 *   twine:lock:{N}:queue    waiting owners, scored by arrival (a FIFO)
 *   twine:lock:{N}:expiry   waiting owners, scored by when their registration lapses
 *   twine:lock:{N}:ttl      waiting owners' lease lengths, for a hand-off
 * Every operation is one Lua script. A release that finds a live waiter grants
 * the lock to the oldest one on the spot (SET, INCR) and PUBLISHes the grant
 * on that owner's process channel, "twine:lock:wake:<process id>". A waiter
 * whose registration lapses (its process died) is dropped by the next
 * script that looks; an acquire that finds the lock free but another owner
 * first in line hands it to that owner the same way. So the lock passes in
 * arrival order, a grant costs its new holder no round trip, and nobody
 * polls: a waiter only retries when the lease it waits behind would run out
 * (the PTTL the script returned, plus jitter), which also refreshes its
 * registration.
 *
 * In the process, per tw_redis_lock: a FIFO of acquire Deferreds, of which
 * only the head contends in Redis, under an owner id ("<process id>:<seq>",
 * seq counted by the hub: every lock on a connection shares its process id,
 * and an id must name one turn of one lock) that is kept across retries of
 * one turn (an acquire that timed out and
 * ran anyway is then recognised: the lock is already ours) and renewed for
 * every turn. States:
 *
 *   IDLE --acquire--> (WAIT_HUB: the wake channel not yet subscribed) --> TRYING
 *   TRYING --granted--> HELD --release--> IDLE (the next waiter's turn: TRYING)
 *   TRYING --queued--> WAITING --grant message or retry--> HELD / TRYING
 *
 * `attempt` numbers the scripts whose replies still matter and `lease`
 * numbers the leases: a reply for an older one is dropped, which is how
 * release stops the watchdog synchronously (a renewal in flight is ignored). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis/redis.h"

enum { L_IDLE = 0, L_WAIT_HUB, L_TRYING, L_WAITING, L_HELD, L_PASSING };
enum { K_LOCK = 0, K_FENCE, K_QUEUE, K_EXPIRY, K_TTL, K_COUNT };

#define WAKE_PREFIX "twine:lock:wake:"
#define NAME_MAX_LEN 512

/* ---- scripts ----------------------------------------------------------------- */

/* Each script starts with its common case, written with KEYS and ARGV
 * directly: a free lock nobody waits for (acquire: three commands), a
 * release nobody waits for (three), a pass to the next local turn (three
 * or four). Only when that does not apply does it define the helpers
 * below (building closures costs the server on every call) and go on.
 * KEYS: lock fence queue expiry ttl. clock() is the server's time in ms
 * (and TIME's answer); purge() also drops the waiters whose registration
 * lapsed, which a script does before it grants the lock to a waiter. */
#define HELPERS                                                                        \
    "local L, F, Q, E, T = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]\n"              \
    "local function unqueue(w)\n"                                                      \
    "  redis.call('ZREM', Q, w); redis.call('ZREM', E, w); redis.call('HDEL', T, w)\n" \
    "end\n"                                                                            \
    "local function clock()\n"                                                         \
    "  local t = redis.call('TIME')\n"                                                 \
    "  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), t\n"          \
    "end\n"                                                                            \
    "local function purge()\n"                                                         \
    "  local now, t = clock()\n"                                                       \
    "  for _, w in ipairs(redis.call('ZRANGEBYSCORE', E, '-inf', now)) do unqueue(w) end\n" \
    "  return now, t\n"                                                                \
    "end\n"                                                                            \
    "local function grant(w, ttl)\n"                                                   \
    "  redis.call('SET', L, w, 'PX', ttl)\n"                                           \
    "  unqueue(w)\n"                                                                   \
    "  return redis.call('INCR', F)\n"                                                 \
    "end\n"                                                                            \
    "local function handoff(prefix, name, now)\n"                                      \
    "  local head = redis.call('ZRANGE', Q, 0, 0)[1]\n"                                \
    "  if not head then return false end\n"                                            \
    "  local ttl = tonumber(redis.call('HGET', T, head)) or 1000\n"                    \
    "  local tok = grant(head, ttl)\n"                                                 \
    "  redis.call('PUBLISH', prefix .. string.match(head, '^[^:]*'),\n"                \
    "             head .. ' ' .. tok .. ' ' .. ttl .. ' ' .. string.format('%.0f', now)\n" \
    "             .. ' ' .. name)\n"                                                   \
    "  return true\n"                                                                  \
    "end\n"

/* ARGV: owner ttl_ms prefix name. {1, token, pttl} when granted; {0, wait
 * ms, the server's time in ms} when queued (the waiter retries after about
 * `wait`; a grant handed to it later says when it was made, on the same
 * clock). A free lock with waiters goes to the first of them (and the
 * caller queues); a held one needs no purge, since nothing is granted. */
static tw__script acquire_script = {
    "lock acquire",
    "local owner, ttl = ARGV[1], tonumber(ARGV[2])\n"
    "if redis.call('EXISTS', KEYS[3]) == 0 and\n"
    "   redis.call('SET', KEYS[1], owner, 'NX', 'PX', ARGV[2]) then\n"
    "  return {1, redis.call('INCR', KEYS[2]), ttl}\n"
    "end\n"
    HELPERS
    "local cur = redis.call('GET', L)\n"
    "if cur == owner then\n"
    "  unqueue(owner)\n"
    "  return {1, tonumber(redis.call('GET', F)), redis.call('PTTL', L)}\n"
    "end\n"
    "local now, t\n"
    "if not cur then\n"
    "  now, t = purge()\n"
    "  local head = redis.call('ZRANGE', Q, 0, 0)[1]\n"
    "  if not head or head == owner then return {1, grant(owner, ttl), ttl} end\n"
    "  handoff(ARGV[3], ARGV[4], now)\n"
    "else\n"
    "  now, t = clock()\n"
    "end\n"
    "local wait = redis.call('PTTL', L)\n"
    "if wait < 0 then wait = ttl end\n"
    "redis.call('ZADD', Q, 'NX', tonumber(t[1]) * 1000000 + tonumber(t[2]), owner)\n"
    "redis.call('ZADD', E, now + 2 * math.max(wait, ttl) + 1000, owner)\n"
    "redis.call('HSET', T, owner, ttl)\n"
    "return {0, wait, now}\n",
    TW__SCRIPT_LOCK_ACQUIRE,
    "", false};

/* ARGV: owner prefix name. 1: released; 2: released and handed over; 0:
 * the owner did not hold it (its lease was lost). A waiter withdraws with
 * it too (and gives back a grant it has not seen yet). */
static tw__script release_script = {
    "lock release",
    "local owner = ARGV[1]\n"
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur == owner and redis.call('EXISTS', KEYS[3]) == 0 then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  return 1\n"
    "end\n"
    HELPERS
    "if cur ~= owner then\n"
    "  unqueue(owner)\n"
    "  return 0\n"
    "end\n"
    "local now = purge()\n"
    "if handoff(ARGV[2], ARGV[3], now) then return 2 end\n"
    "redis.call('DEL', L)\n"
    "return 1\n",
    TW__SCRIPT_LOCK_RELEASE,
    "", false};

/* A release that passes the lock to the next waiter of the same process in
 * one round trip: no wake-up of another process, a new token all the same.
 * It passes only while no other process waits, or for at most `max` turns in
 * a row (`streak` so far) while one does; then it hands the lock over as a
 * release does. ARGV: old new ttl_ms streak max prefix name. {1, token,
 * ttl}: passed; {2}: handed to another process; {0}: old did not hold it. */
static tw__script pass_script = {
    "lock pass",
    "local old, new, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])\n"
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur == old and (tonumber(ARGV[4]) < tonumber(ARGV[5]) or\n"
    "                   redis.call('EXISTS', KEYS[3]) == 0) then\n"
    "  redis.call('SET', KEYS[1], new, 'PX', ARGV[3])\n"
    "  return {1, redis.call('INCR', KEYS[2]), ttl}\n"
    "end\n"
    HELPERS
    "if cur ~= old then\n"
    "  unqueue(old)\n"
    "  return {0}\n"
    "end\n"
    "local now = purge()\n"
    "if handoff(ARGV[6], ARGV[7], now) then return {2} end\n"
    "redis.call('SET', L, new, 'PX', ttl)\n"
    "return {1, redis.call('INCR', F), ttl}\n",
    TW__SCRIPT_LOCK_PASS,
    "", false};

/* Passes in a row while another process waits: 4 turns in all. */
#define PASS_MAX "3"

/* KEYS: lock. ARGV: owner ttl_ms. 1: renewed; 0: not the owner. */
static tw__script extend_script = {
    "lock extend",
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "  return 1\n"
    "end\n"
    "return 0\n",
    TW__SCRIPT_LOCK_EXTEND,
    "", false};

/* KEYS: fence target. ARGV: token value. */
static tw__script fenced_set_script = {
    "fenced set",
    "local cur = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "local tok = tonumber(ARGV[1])\n"
    "if not tok or tok < cur then\n"
    "  return redis.error_reply('STALE fencing token ' .. ARGV[1] .. ' is older than ' .. cur)\n"
    "end\n"
    "if tok > cur then\n"
    "  return redis.error_reply('ERR fencing token ' .. ARGV[1] ..\n"
    "                           ' was never issued (the newest is ' .. cur .. ')')\n"
    "end\n"
    "return redis.call('SET', KEYS[2], ARGV[2])\n",
    TW__SCRIPT_FENCED_SET,
    "", false};

/* ---- state ------------------------------------------------------------------- */

struct tw__lock_hub {
    tw_redis *c;
    char procid[20];
    char channel[48];
    tw__sub *sub;
    tw_deferred *ready_d;
    bool ready; /* the wake channel is subscribed (or we stopped waiting for it) */
    uint64_t seq; /* the last turn's number, across the hub's locks */
    tw_redis_lock *locks;
};

struct tw_redis_lock {
    struct tw__lock_hub *hub;
    tw_redis *c;
    tw_redis_lock *prev, *next; /* the hub's */
    char *name;
    size_t name_len;
    char *keys[K_COUNT];
    size_t key_len[K_COUNT];
    double ttl;
    char ttl_ms[24];

    tw_deferred **q; /* acquires, oldest first */
    size_t qn, qcap;

    int state;
    char owner[48]; /* this turn's owner id; "" between turns */
    uint64_t attempt;
    double retry_delay; /* after a transient error */
    unsigned streak;    /* grants in a row passed within this process */
    bool grant_seen;    /* a grant message came while TRYING */
    bool resync;        /* the wake channel was subscribed again while TRYING */
    uint64_t seen_token;
    long long seen_ttl, seen_at; /* its lease (ms) and when it was granted (server ms) */
    /* The two clocks, tied by the last "queued" answer of this turn: the
     * server's time when its script ran (ms), and when it was sent here.
     * A hand-off granted at server time G started, here, no earlier than
     * sync_local + (G - sync_server): its lease is measured from then. */
    bool synced;
    double sync_local;
    long long sync_server;

    uint64_t token;
    double deadline; /* the lease surely lasts until then (reactor seconds) */
    bool lost;
    uint64_t lease;
    tw_delayed_call *timer; /* WAITING: the retry; HELD: the watchdog */

    tw_deferred **watchers; /* lease_lost */
    size_t nwatch, capwatch;

    unsigned refs; /* the owner's (until destroy) + one per command in flight */
    bool dead;
    uint32_t thread;
    tw_redis_lock_stats stats;
};

#ifdef TW_DEBUG
#define CHECK(l, fn)                                                                   \
    do {                                                                               \
        if ((l)->c->thread != tw__self())                                              \
            tw__wrong_thread("a Redis lock", (l)->c->thread, (fn));                    \
    } while (0)
#else
#define CHECK(l, fn) ((void)0)
#endif

/* (no libm: the library does not link it) */
static double dmin(double a, double b)
{
    return a < b ? a : b;
}
static double dmax(double a, double b)
{
    return a > b ? a : b;
}

static double now_s(const tw_redis_lock *l)
{
    return tw_reactor_seconds(l->c->r);
}

static void lock_unref(tw_redis_lock *l);
static void kick(tw_redis_lock *l);

/* For commands whose outcome changes nothing: a withdrawal, a hand-back. */
static tw_result ignore_result(tw_result r, void *arg)
{
    (void)arg;
    tw_result_drop(r);
    return tw_result_none();
}
static void try_acquire(tw_redis_lock *l, bool retry);
static void grant(tw_redis_lock *l, uint64_t token, double deadline, bool by_message);
static int send_release(tw_redis *c, char *const keys[K_COUNT], const size_t key_len[K_COUNT],
                        const char *owner, const char *name, size_t name_len,
                        tw_deferred **out);

/* ---- commands in flight -------------------------------------------------------- */

typedef struct lock_op {
    tw_redis_lock *l;
    uint64_t stamp; /* the attempt or lease it belongs to */
    double sent_at;
    tw_deferred *done; /* release's *out */
    bool was_lost;
    double until;   /* a release: the lease it gives up lasts at most until then */
    char owner[48]; /* ... and the owner id it gives up */
} lock_op;

static lock_op *op_new(tw_redis_lock *l, uint64_t stamp)
{
    lock_op *op = TW__NEW(lock_op);
    if (!op)
        return NULL;
    op->l = l;
    op->stamp = stamp;
    op->sent_at = now_s(l);
    l->refs++;
    return op;
}

static void op_free(lock_op *op)
{
    tw_redis_lock *l = op->l;
    TW__DELETE(op);
    lock_unref(l);
}

/* The integer at element i of an array reply, or -1. */
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

/* ---- the local queue ------------------------------------------------------------- */

static int q_push(tw_redis_lock *l, tw_deferred *d)
{
    if (l->qn == l->qcap) {
        size_t cap = l->qcap ? l->qcap * 2 : 8;
        void *p = tw__realloc(l->q, l->qcap * sizeof *l->q, cap * sizeof *l->q);
        if (!p)
            return TW_ENOMEM;
        l->q = p;
        l->qcap = cap;
    }
    l->q[l->qn++] = d;
    return 0;
}

static tw_deferred *q_pop(tw_redis_lock *l)
{
    if (!l->qn)
        return NULL;
    tw_deferred *d = l->q[0];
    memmove(l->q, l->q + 1, --l->qn * sizeof *l->q);
    return d;
}

static bool q_remove(tw_redis_lock *l, tw_deferred *d)
{
    for (size_t i = 0; i < l->qn; i++)
        if (l->q[i] == d) {
            memmove(l->q + i, l->q + i + 1, (l->qn - i - 1) * sizeof *l->q);
            l->qn--;
            return true;
        }
    return false;
}

/* ---- timers ----------------------------------------------------------------- */

static void stop_timer(tw_redis_lock *l)
{
    if (l->timer) {
        tw_delayed_call_cancel(l->timer);
        tw_delayed_call_unref(l->timer);
        l->timer = NULL;
    }
}

static void arm_timer(tw_redis_lock *l, double seconds, tw_call_fn fn)
{
    stop_timer(l);
    if (seconds < 0)
        seconds = 0;
    if (tw_reactor_call_later(l->c->r, seconds, fn, l, &l->timer) != 0)
        l->timer = NULL;
}

static double jitter(tw_redis_lock *l, double lo, double hi)
{
    double u = (double)(tw__redis_random(l->c) >> 11) / 9007199254740992.0;
    return lo + (hi - lo) * u;
}

/* ---- turns --------------------------------------------------------------------- */

static void new_owner(tw_redis_lock *l)
{
    l->synced = false;
    snprintf(l->owner, sizeof l->owner, "%s:%llu", l->hub->procid,
             (unsigned long long)++l->hub->seq);
}

/* Ends this turn in Redis (dequeues the owner, gives back a grant not yet
 * seen) and forgets it here: its replies and messages are stale now. */
static void withdraw(tw_redis_lock *l)
{
    if (l->owner[0]) {
        tw_deferred *d;
        if (send_release(l->c, l->keys, l->key_len, l->owner, l->name, l->name_len, &d) == 0) {
            tw_deferred_add_both(d, ignore_result, NULL);
            tw_deferred_unref(d);
        }
    }
    stop_timer(l);
    l->owner[0] = 0;
    l->attempt++;
    l->state = L_IDLE;
}

static void fail_waiters(tw_redis_lock *l, tw_failure *f)
{
    tw_deferred *d;
    while ((d = q_pop(l))) {
        tw_deferred_errback(d, tw_failure_ref(f));
        tw_deferred_unref(d);
    }
    tw_failure_unref(f);
}

static void retry_fired(void *arg)
{
    tw_redis_lock *l = arg;
    tw_delayed_call_unref(l->timer);
    l->timer = NULL;
    if (l->state == L_WAITING)
        try_acquire(l, true);
}

/* The deadline of a lease of ttl_ms handed over at server time granted_ms,
 * on the reactor's clock: false if the clocks have not been tied this turn. */
static bool handoff_deadline(const tw_redis_lock *l, long long granted_ms, long long ttl_ms,
                             double *out)
{
    if (!l->synced || granted_ms < 0 || ttl_ms < 0)
        return false;
    double d = l->sync_local + (double)(granted_ms - l->sync_server) / 1000.0 +
               (double)ttl_ms / 1000.0;
    *out = dmin(d, now_s(l) + (double)ttl_ms / 1000.0); /* granted by now, at the latest */
    return true;
}

static tw_result on_acquire_reply(tw_result r, void *arg)
{
    lock_op *op = arg;
    tw_redis_lock *l = op->l;
    if (l->dead || op->stamp != l->attempt || l->state != L_TRYING) {
        tw_result_drop(r); /* a turn that was withdrawn: its release follows this */
        op_free(op);
        return tw_result_none();
    }
    tw_failure *f = tw_result_as_failure(r);
    if (f) {
        int code = tw_failure_code(f);
        if (tw__redis_transient(f)) {
            /* It may have run: the same owner tries again, and finds the
             * lock already its own if it did. (Or the server is loading its
             * data after a restart: it will answer soon.) */
            l->state = L_WAITING;
            double d = l->retry_delay;
            l->retry_delay = dmin(l->retry_delay * 2, dmax(l->ttl / 2, 0.05));
            arm_timer(l, d * jitter(l, 0.5, 1.0), retry_fired);
        } else {
            withdraw(l);
            fail_waiters(l, tw_failure_wrap(tw_failure_ref(f), code,
                                            "redis lock \"%s\": acquire failed: %s", l->name,
                                            tw_failure_message(f)));
            kick(l);
        }
        tw_result_drop(r);
        op_free(op);
        return tw_result_none();
    }
    const tw_redis_reply *rep = r.ptr;
    long long granted = elem_int(rep, 0);
    l->retry_delay = 0.01;
    if (granted == 1) {
        long long token = elem_int(rep, 1), pttl = elem_int(rep, 2);
        if (pttl < 0)
            pttl = 0;
        grant(l, (uint64_t)token, op->sent_at + (double)pttl / 1000.0, false);
    } else { /* queued */
        long long at = elem_int(rep, 2);
        l->synced = at >= 0;
        l->sync_local = op->sent_at;
        l->sync_server = at;
        double deadline;
        if (l->grant_seen && handoff_deadline(l, l->seen_at, l->seen_ttl, &deadline)) {
            grant(l, l->seen_token, deadline, true);
        } else if (l->grant_seen || l->resync) {
            /* a grant made after this script ran, unreadable or published
             * while the wake channel was down: ask, and the script reports
             * the lease left */
            try_acquire(l, true);
        } else {
            long long wait = elem_int(rep, 1);
            if (wait < 0)
                wait = (long long)(l->ttl * 1000);
            l->state = L_WAITING;
            /* just after the lease it waits behind would run out */
            arm_timer(l, (double)wait / 1000.0 * jitter(l, 1.0, 1.1) + 0.001, retry_fired);
        }
    }
    tw_result_drop(r);
    op_free(op);
    return tw_result_none();
}

static void try_acquire(tw_redis_lock *l, bool retry)
{
    l->state = L_TRYING;
    l->grant_seen = false;
    l->resync = false;
    l->attempt++;
    lock_op *op = op_new(l, l->attempt);
    tw_deferred *d;
    int rc = TW_ENOMEM;
    if (op) {
        const char *argv[K_COUNT + 4] = {l->keys[0], l->keys[1], l->keys[2], l->keys[3],
                                         l->keys[4], l->owner, l->ttl_ms, WAKE_PREFIX, l->name};
        size_t lens[K_COUNT + 4] = {l->key_len[0], l->key_len[1], l->key_len[2],
                                    l->key_len[3], l->key_len[4], strlen(l->owner),
                                    strlen(l->ttl_ms), strlen(WAKE_PREFIX), l->name_len};
        rc = tw__redis_eval(l->c, &acquire_script, K_COUNT, K_COUNT + 4, argv, lens, &d);
    }
    if (rc) {
        if (op)
            op_free(op);
        l->state = L_IDLE;
        l->owner[0] = 0;
        fail_waiters(l, tw_failure_new(rc, "redis lock \"%s\": acquire not sent: %s", l->name,
                                       tw_strerror(rc)));
        return;
    }
    l->stats.attempts++;
    if (retry)
        l->stats.retries++;
    tw_deferred_add_both(d, on_acquire_reply, op);
    tw_deferred_unref(d);
}

/* Starts the head waiter's turn if none is under way. */
static void kick(tw_redis_lock *l)
{
    if (l->dead || !l->qn || (l->state != L_IDLE && l->state != L_WAIT_HUB))
        return;
    if (!l->hub->ready) {
        l->state = L_WAIT_HUB;
        return;
    }
    new_owner(l);
    l->retry_delay = 0.01;
    try_acquire(l, false);
}

/* ---- holding --------------------------------------------------------------------- */

static void watchdog_fired(void *arg);

static void fire_watchers(tw_redis_lock *l, tw_failure *f)
{
    while (l->nwatch) {
        tw_deferred *d = l->watchers[--l->nwatch];
        if (f)
            tw_deferred_errback(d, tw_failure_ref(f));
        else
            tw_deferred_callback(d, tw_result_none());
        tw_deferred_unref(d);
    }
    if (f)
        tw_failure_unref(f);
}

static void lease_lost(tw_redis_lock *l, const char *why)
{
    if (l->lost)
        return;
    l->lost = true;
    l->stats.lost++;
    stop_timer(l);
    fire_watchers(l, tw_failure_new(TW_ELEASE,
                                    "redis lock \"%s\": lease lost (token %llu): %s", l->name,
                                    (unsigned long long)l->token, why));
}

/* Renew a third of the way through the lease; and notice, at the deadline,
 * a lease that no renewal has saved. */
static void arm_watchdog(tw_redis_lock *l, double from)
{
    double at = dmin(from + l->ttl / 3.0, l->deadline);
    arm_timer(l, at - now_s(l), watchdog_fired);
}

static tw_result on_extend_reply(tw_result r, void *arg)
{
    lock_op *op = arg;
    tw_redis_lock *l = op->l;
    if (l->dead || l->state != L_HELD || op->stamp != l->lease || l->lost) {
        tw_result_drop(r); /* released meanwhile: the watchdog is over */
        op_free(op);
        return tw_result_none();
    }
    if (tw_result_is_failure(r)) {
        /* try again soon, while the lease lasts */
        arm_timer(l, dmin(l->ttl / 10.0, l->deadline - now_s(l)), watchdog_fired);
    } else if (((const tw_redis_reply *)r.ptr)->integer == 1) {
        l->deadline = op->sent_at + l->ttl;
        l->stats.renewals++;
        arm_watchdog(l, op->sent_at);
    } else {
        lease_lost(l, "another owner holds the lock, or its key expired");
    }
    tw_result_drop(r);
    op_free(op);
    return tw_result_none();
}

static void watchdog_fired(void *arg)
{
    tw_redis_lock *l = arg;
    tw_delayed_call_unref(l->timer);
    l->timer = NULL;
    if (l->state != L_HELD || l->lost)
        return;
    double now = now_s(l);
    if (now >= l->deadline) {
        lease_lost(l, "no renewal succeeded within the TTL");
        return;
    }
    /* the deadline check stands until the renewal's reply moves it */
    arm_timer(l, l->deadline - now, watchdog_fired);
    lock_op *op = op_new(l, l->lease);
    if (!op)
        return;
    const char *argv[3] = {l->keys[K_LOCK], l->owner, l->ttl_ms};
    size_t lens[3] = {l->key_len[K_LOCK], strlen(l->owner), strlen(l->ttl_ms)};
    tw_deferred *d;
    if (tw__redis_eval(l->c, &extend_script, 1, 3, argv, lens, &d) != 0) {
        op_free(op);
        return;
    }
    tw_deferred_add_both(d, on_extend_reply, op);
    tw_deferred_unref(d);
}

static void grant(tw_redis_lock *l, uint64_t token, double deadline, bool by_message)
{
    tw_deferred *d = q_pop(l);
    stop_timer(l);
    if (l->state != L_PASSING)
        l->streak = 0;
    l->state = L_HELD;
    l->token = token;
    l->deadline = deadline;
    l->lost = false;
    l->lease++;
    l->stats.acquired++;
    if (by_message)
        l->stats.handoffs++;
    if (!d) { /* every waiter gave up meanwhile */
        tw_redis_lock_release(l, NULL);
        return;
    }
    arm_watchdog(l, now_s(l));
    tw_deferred_callback(d, tw_result_value(l, NULL));
    tw_deferred_unref(d);
}

/* The wake channel was subscribed again after its connection came back:
 * grants published meanwhile were lost. A waiter asks now (the acquire
 * script finds the lock its own if it was handed over) instead of at its
 * retry, up to a TTL away, by when the lease it was handed would be over. */
static void on_resubscribed(struct tw__lock_hub *hub)
{
    /* by timers: an acquire that cannot be sent fails its waiters, whose
     * callbacks may destroy locks of this list */
    for (tw_redis_lock *l = hub->locks; l; l = l->next) {
        if (l->state == L_WAITING)
            arm_timer(l, 0, retry_fired);
        else if (l->state == L_TRYING)
            l->resync = true;
    }
}

/* A grant announced on the wake channel: "owner token ttl_ms granted_ms
 * name" (granted_ms: the server's time of the grant); NULL after a gap in
 * the subscription. */
static void on_wake(void *arg, const char *payload, size_t len)
{
    struct tw__lock_hub *hub = arg;
    char buf[64 + NAME_MAX_LEN + 80];
    if (!payload) {
        on_resubscribed(hub);
        return;
    }
    if (len >= sizeof buf)
        return;
    memcpy(buf, payload, len);
    buf[len] = 0;
    char *owner = buf, *p = strchr(buf, ' ');
    if (!p)
        return;
    *p++ = 0;
    char *end;
    unsigned long long token = strtoull(p, &end, 10);
    if (*end != ' ')
        return;
    long long ttl_ms = strtoll(end + 1, &end, 10);
    if (*end != ' ')
        return;
    long long at = strtoll(end + 1, &end, 10);
    if (*end != ' ')
        return;
    const char *name = end + 1;
    size_t name_len = len - (size_t)(name - buf);
    for (tw_redis_lock *l = hub->locks; l; l = l->next) {
        if (strcmp(l->owner, owner) != 0 || l->name_len != name_len ||
            memcmp(l->name, name, name_len) != 0)
            continue;
        double deadline;
        if (l->state == L_WAITING && handoff_deadline(l, at, ttl_ms, &deadline)) {
            grant(l, token, deadline, true);
        } else if (l->state == L_WAITING) {
            /* no "queued" answer this turn to measure the lease from (its
             * acquires timed out): ask, and the script reports it */
            try_acquire(l, true);
        } else if (l->state == L_TRYING) { /* the acquire's reply decides */
            l->grant_seen = true;
            l->seen_token = token;
            l->seen_ttl = ttl_ms;
            l->seen_at = at;
        }
        return;
    }
    /* Nobody here wants it (a turn withdrawn, a lock destroyed): pass it on. */
    char key_buf[K_COUNT][NAME_MAX_LEN + 40];
    char *keys[K_COUNT];
    size_t key_len[K_COUNT];
    static const char *const suffix[K_COUNT] = {"", ":fence", ":queue", ":expiry", ":ttl"};
    for (int i = 0; i < K_COUNT; i++) {
        int n = snprintf(key_buf[i], sizeof key_buf[i], "twine:lock:{%.*s}%s", (int)name_len,
                         name, suffix[i]);
        keys[i] = key_buf[i];
        key_len[i] = (size_t)n;
    }
    tw_deferred *d;
    if (send_release(hub->c, keys, key_len, owner, name, name_len, &d) == 0) {
        tw_deferred_add_both(d, ignore_result, NULL);
        tw_deferred_unref(d);
    }
}

/* ---- the hub -------------------------------------------------------------------- */

static void kick_fired(void *arg)
{
    tw_redis_lock *l = arg;
    tw_delayed_call_unref(l->timer);
    l->timer = NULL;
    kick(l);
}

static tw_result hub_ready(tw_result r, void *arg)
{
    struct tw__lock_hub *hub = arg;
    tw_result_drop(r); /* subscribed, or given up waiting: go on either way */
    if (hub->ready_d) {
        tw_deferred_unref(hub->ready_d);
        hub->ready_d = NULL;
    }
    hub->ready = true;
    /* by timers, as on_resubscribed does */
    for (tw_redis_lock *l = hub->locks; l; l = l->next)
        if (l->state == L_WAIT_HUB)
            arm_timer(l, 0, kick_fired);
    return tw_result_none();
}

static int hub_get(tw_redis *c, struct tw__lock_hub **out)
{
    if (c->lock_hub) {
        *out = c->lock_hub;
        return 0;
    }
    struct tw__lock_hub *hub = TW__NEW(struct tw__lock_hub);
    if (!hub)
        return TW_ENOMEM;
    hub->c = c;
    snprintf(hub->procid, sizeof hub->procid, "%016llx",
             (unsigned long long)tw__redis_random(c));
    snprintf(hub->channel, sizeof hub->channel, "%s%s", WAKE_PREFIX, hub->procid);
    tw_deferred *ready;
    int rc = tw__redis_subscribe(c, hub->channel, on_wake, hub, &hub->sub, &ready);
    if (rc) {
        TW__DELETE(hub);
        return rc;
    }
    /* Acquires wait for the subscription, so that no hand-off is missed;
     * for at most the connect timeout, after which waiters rely on retries. */
    hub->ready_d = ready;
    tw_deferred_add_timeout(ready, c->connect_timeout, tw_reactor_clock(c->r), NULL, NULL);
    c->lock_hub = hub;
    tw_deferred_add_both(ready, hub_ready, hub);
    *out = hub;
    return 0;
}

static void hub_put(struct tw__lock_hub *hub)
{
    if (hub->locks)
        return;
    hub->c->lock_hub = NULL;
    tw__redis_unsubscribe(hub->sub);
    if (hub->ready_d) {
        tw_deferred *d = hub->ready_d;
        hub->ready_d = NULL;
        tw_deferred_cancel(d); /* runs hub_ready, which must not see the hub: */
        tw_deferred_unref(d);
    }
    TW__DELETE(hub);
}

/* ---- public ----------------------------------------------------------------------- */

static bool bad_name(const char *name)
{
    return !name || !name[0] || strlen(name) > NAME_MAX_LEN;
}

int tw_redis_lock_create(tw_redis *c, const char *name, double ttl, tw_redis_lock **out)
{
    if (!c || bad_name(name) || !out || isnan(ttl) || !(ttl >= 0.01) || !(ttl <= 1e6))
        return TW_EINVAL;
    TW__REDIS_CHECK(c, "tw_redis_lock_create");
    if (c->state == LINK_CLOSING || c->state == LINK_CLOSED)
        return TW_ESHUTDOWN;
    tw_redis_lock *l = TW__NEW(tw_redis_lock);
    if (!l)
        return TW_ENOMEM;
    l->c = c;
    l->ttl = ttl;
    snprintf(l->ttl_ms, sizeof l->ttl_ms, "%lld", (long long)(ttl * 1000.0 + 0.5));
    l->name_len = strlen(name);
    l->name = tw__alloc(l->name_len + 1);
    static const char *const suffix[K_COUNT] = {"", ":fence", ":queue", ":expiry", ":ttl"};
    bool ok = l->name != NULL;
    for (int i = 0; ok && i < K_COUNT; i++) {
        l->key_len[i] = strlen("twine:lock:{}") + l->name_len + strlen(suffix[i]);
        l->keys[i] = tw__alloc(l->key_len[i] + 1);
        ok = l->keys[i] != NULL;
        if (ok)
            snprintf(l->keys[i], l->key_len[i] + 1, "twine:lock:{%s}%s", name, suffix[i]);
    }
    struct tw__lock_hub *hub = NULL;
    int rc = ok ? hub_get(c, &hub) : TW_ENOMEM;
    if (rc) {
        for (int i = 0; i < K_COUNT; i++)
            if (l->keys[i])
                tw__free(l->keys[i], l->key_len[i] + 1);
        if (l->name)
            tw__free(l->name, l->name_len + 1);
        TW__DELETE(l);
        return rc;
    }
    memcpy(l->name, name, l->name_len + 1);
    l->hub = hub;
    l->next = hub->locks;
    if (l->next)
        l->next->prev = l;
    hub->locks = l;
    l->refs = 1;
    l->retry_delay = 0.01;
    c->users++;
    *out = l;
    return 0;
}

static void lock_unref(tw_redis_lock *l)
{
    if (--l->refs)
        return;
    for (int i = 0; i < K_COUNT; i++)
        tw__free(l->keys[i], l->key_len[i] + 1);
    tw__free(l->name, l->name_len + 1);
    tw__free(l->q, l->qcap * sizeof *l->q);
    tw__free(l->watchers, l->capwatch * sizeof *l->watchers);
    TW__DELETE(l);
}

int tw_redis_lock_destroy(tw_redis_lock *l)
{
    if (!l || l->dead)
        return TW_EINVAL;
    CHECK(l, "tw_redis_lock_destroy");
    if (l->state == L_HELD)
        return TW_EBUSY;
    if (l->state == L_TRYING || l->state == L_WAITING || l->state == L_PASSING)
        withdraw(l);
    l->state = L_IDLE;
    fail_waiters(l, tw_failure_new(TW_ESHUTDOWN, "redis lock \"%s\" was destroyed", l->name));
    l->dead = true;
    stop_timer(l);
    struct tw__lock_hub *hub = l->hub;
    if (l->prev)
        l->prev->next = l->next;
    else
        hub->locks = l->next;
    if (l->next)
        l->next->prev = l->prev;
    l->c->users--;
    hub_put(hub);
    lock_unref(l);
    return 0;
}

static void acquire_cancel(tw_deferred *d, void *arg)
{
    tw_redis_lock *l = arg;
    bool head = l->qn && l->q[0] == d;
    if (!q_remove(l, d))
        return;
    tw_deferred_unref(d); /* tw_deferred_cancel holds it until it has failed */
    if (head && !l->qn &&
        (l->state == L_TRYING || l->state == L_WAITING || l->state == L_PASSING))
        withdraw(l); /* the next waiter would have inherited the turn: none */
}

int tw_redis_lock_acquire(tw_redis_lock *l, tw_deferred **out)
{
    if (!l || !out || l->dead)
        return TW_EINVAL;
    CHECK(l, "tw_redis_lock_acquire");
    tw_deferred *d;
    int rc = tw_deferred_create(&d, acquire_cancel, l);
    if (rc)
        return rc;
    rc = q_push(l, d);
    if (rc) {
        tw_deferred_unref(d);
        return rc;
    }
    *out = tw_deferred_ref(d);
    kick(l);
    return 0;
}

static int send_release(tw_redis *c, char *const keys[K_COUNT], const size_t key_len[K_COUNT],
                        const char *owner, const char *name, size_t name_len,
                        tw_deferred **out)
{
    const char *argv[K_COUNT + 3] = {keys[0], keys[1], keys[2], keys[3], keys[4],
                                     owner,   WAKE_PREFIX, name};
    size_t lens[K_COUNT + 3] = {key_len[0], key_len[1], key_len[2], key_len[3], key_len[4],
                                strlen(owner), strlen(WAKE_PREFIX), name_len};
    return tw__redis_eval(c, &release_script, K_COUNT, K_COUNT + 3, argv, lens, out);
}

/* Fires release's *out with r (none, or a failure); consumes r. */
static void release_done(lock_op *op, tw_result r)
{
    tw_deferred *done = op->done;
    op->done = NULL;
    if (done) {
        tw_deferred_callback(done, r);
        tw_deferred_unref(done);
    } else {
        tw_result_drop(r);
    }
}

/* A release whose outcome is unknown (its connection broke before the
 * reply, no reply in time, not sent within its timeout) is sent again in
 * the background while the lease it gives up could still be live: the
 * script is owner-checked, so a second run is harmless, and without it the
 * lock would stay with a holder that has let go until the lease ran out.
 * The caller's Deferred has been told already what became of the first. */
typedef struct resend {
    tw_redis_lock *l;
    double until;
    char owner[48];
} resend;

static void resend_release(tw_redis_lock *l, const char *owner, double until);

static tw_result on_resent(tw_result r, void *arg)
{
    resend *rs = arg;
    tw_failure *f = tw_result_as_failure(r);
    if (f && tw__redis_transient(f) && now_s(rs->l) < rs->until)
        resend_release(rs->l, rs->owner, rs->until);
    tw_result_drop(r);
    lock_unref(rs->l);
    TW__DELETE(rs);
    return tw_result_none();
}

static void resend_release(tw_redis_lock *l, const char *owner, double until)
{
    if (now_s(l) >= until)
        return; /* the lease is over: nothing is held to give back */
    resend *rs = TW__NEW(resend);
    if (!rs)
        return;
    rs->l = l;
    rs->until = until;
    snprintf(rs->owner, sizeof rs->owner, "%s", owner);
    tw_deferred *d;
    if (send_release(l->c, l->keys, l->key_len, rs->owner, l->name, l->name_len, &d) != 0) {
        TW__DELETE(rs);
        return;
    }
    l->refs++;
    tw_deferred_add_both(d, on_resent, rs);
    tw_deferred_unref(d);
}

static tw_result lease_was_lost(const tw_redis_lock *l)
{
    return tw_result_fail(TW_ELEASE, "redis lock \"%s\": released after its lease was lost",
                          l->name);
}

static tw_result on_release_reply(tw_result r, void *arg)
{
    lock_op *op = arg;
    tw_redis_lock *l = op->l;
    if (tw_result_is_failure(r)) {
        if (tw__redis_transient(tw_result_as_failure(r)))
            resend_release(l, op->owner, op->until);
        release_done(op, r);
    } else {
        long long v = ((const tw_redis_reply *)r.ptr)->integer;
        tw_result_drop(r);
        release_done(op, v == 0 || op->was_lost ? lease_was_lost(l) : tw_result_none());
    }
    op_free(op);
    return tw_result_none();
}

/* The pass script's answer: the release's outcome, and the next turn's. */
static tw_result on_pass_reply(tw_result r, void *arg)
{
    lock_op *op = arg;
    tw_redis_lock *l = op->l;
    bool current = !l->dead && op->stamp == l->attempt && l->state == L_PASSING;
    tw_failure *f = tw_result_as_failure(r);
    if (f) {
        /* it may not have run: the old owner lets go again first, then
         * the new one finds out by acquiring whether it got the lock */
        if (tw__redis_transient(f))
            resend_release(l, op->owner, op->until);
        release_done(op, tw_result_failure(tw_failure_ref(f)));
        if (current) {
            l->state = L_WAITING;
            arm_timer(l, l->retry_delay * jitter(l, 0.5, 1.0), retry_fired);
        }
        tw_result_drop(r);
        op_free(op);
        return tw_result_none();
    }
    const tw_redis_reply *rep = r.ptr;
    long long how = elem_int(rep, 0);
    release_done(op, how == 0 || op->was_lost ? lease_was_lost(l) : tw_result_none());
    if (current) {
        if (how == 1) {
            l->streak++;
            l->stats.passes++;
            long long token = elem_int(rep, 1), ttl = elem_int(rep, 2);
            grant(l, (uint64_t)token, op->sent_at + (double)(ttl > 0 ? ttl : 0) / 1000.0,
                  false);
        } else { /* handed to another process, or it was not ours: wait in line */
            l->streak = 0;
            try_acquire(l, false);
        }
    }
    tw_result_drop(r);
    op_free(op);
    return tw_result_none();
}

int tw_redis_lock_release(tw_redis_lock *l, tw_deferred **out)
{
    if (!l || l->dead)
        return TW_EINVAL;
    CHECK(l, "tw_redis_lock_release");
    if (l->state != L_HELD)
        return TW_EPERM;
    lock_op *op = op_new(l, 0);
    if (!op)
        return TW_ENOMEM;
    int rc = 0;
    if (out) {
        rc = tw_deferred_create(&op->done, NULL, NULL);
        if (rc) {
            op_free(op);
            return rc;
        }
    }
    tw_deferred *d;
    char old[sizeof l->owner], next[sizeof l->owner];
    bool pass = l->qn > 0 && !l->lost;
    if (pass) {
        /* the next waiter's turn starts in the same round trip, under an
         * id taken now (sending may run callbacks that start other turns) */
        memcpy(old, l->owner, sizeof old);
        snprintf(next, sizeof next, "%s:%llu", l->hub->procid,
                 (unsigned long long)++l->hub->seq);
        char streak[16];
        snprintf(streak, sizeof streak, "%u", l->streak);
        const char *argv[K_COUNT + 7] = {l->keys[0], l->keys[1], l->keys[2], l->keys[3],
                                         l->keys[4], old,        next,       l->ttl_ms,
                                         streak,     PASS_MAX,   WAKE_PREFIX, l->name};
        size_t lens[K_COUNT + 7] = {l->key_len[0], l->key_len[1],  l->key_len[2],
                                    l->key_len[3], l->key_len[4],  strlen(old),
                                    strlen(next),  strlen(l->ttl_ms), strlen(streak),
                                    strlen(PASS_MAX), strlen(WAKE_PREFIX), l->name_len};
        rc = tw__redis_eval(l->c, &pass_script, K_COUNT, K_COUNT + 7, argv, lens, &d);
    } else {
        rc = send_release(l->c, l->keys, l->key_len, l->owner, l->name, l->name_len, &d);
    }
    if (rc) {
        if (op->done)
            tw_deferred_unref(op->done);
        op_free(op);
        return rc;
    }
    if (out)
        *out = tw_deferred_ref(op->done);
    op->was_lost = l->lost;
    op->until = l->lost ? 0 : l->deadline;
    memcpy(op->owner, l->owner, sizeof op->owner);
    if (!pass) {
        tw_deferred_add_both(d, on_release_reply, op);
        tw_deferred_unref(d);
    }
    /* the watchdog stops here: a renewal in flight finds the lease over */
    stop_timer(l);
    l->lease++;
    l->state = L_IDLE;
    l->owner[0] = 0;
    l->token = 0;
    bool was_lost = l->lost;
    l->lost = false;
    if (pass) {
        memcpy(l->owner, next, sizeof l->owner); /* the pass script's name for it */
        l->synced = false;
        l->state = L_PASSING;
        l->retry_delay = 0.01;
        op->stamp = ++l->attempt;
        tw_deferred_add_both(d, on_pass_reply, op);
        tw_deferred_unref(d);
    } else {
        kick(l); /* the next waiter's acquire goes right behind the release */
    }
    /* last: the watchers' callbacks may acquire again */
    if (!was_lost)
        fire_watchers(l, NULL);
    return 0;
}

bool tw_redis_lock_held(const tw_redis_lock *l)
{
    return l && l->state == L_HELD;
}

size_t tw_redis_lock_waiting(const tw_redis_lock *l)
{
    return l ? l->qn : 0;
}

uint64_t tw_redis_lock_token(const tw_redis_lock *l)
{
    return l && l->state == L_HELD ? l->token : 0;
}

double tw_redis_lock_time_left(const tw_redis_lock *l)
{
    if (!l || l->state != L_HELD || l->lost)
        return 0;
    double left = l->deadline - now_s(l);
    return left > 0 ? left : 0;
}

int tw_redis_lock_lease_lost(tw_redis_lock *l, tw_deferred **out)
{
    if (!l || !out || l->dead)
        return TW_EINVAL;
    CHECK(l, "tw_redis_lock_lease_lost");
    if (l->state != L_HELD)
        return TW_EPERM;
    if (l->lost)
        return tw_deferred_fail(out, tw_failure_new(TW_ELEASE,
                                                    "redis lock \"%s\": lease lost (token %llu)",
                                                    l->name, (unsigned long long)l->token));
    if (l->nwatch == l->capwatch) {
        size_t cap = l->capwatch ? l->capwatch * 2 : 4;
        void *p = tw__realloc(l->watchers, l->capwatch * sizeof *l->watchers,
                              cap * sizeof *l->watchers);
        if (!p)
            return TW_ENOMEM;
        l->watchers = p;
        l->capwatch = cap;
    }
    tw_deferred *d;
    int rc = tw_deferred_create(&d, NULL, NULL);
    if (rc)
        return rc;
    l->watchers[l->nwatch++] = d;
    *out = tw_deferred_ref(d);
    return 0;
}

void tw_redis_lock_stats_get(const tw_redis_lock *l, tw_redis_lock_stats *out)
{
    if (l && out)
        *out = l->stats;
}

/* ---- run ----------------------------------------------------------------------- */

static const char *run_name(void *l)
{
    return ((tw_redis_lock *)l)->name;
}

static int run_acquire(void *l, tw_deferred **out)
{
    return tw_redis_lock_acquire(l, out);
}

static uint64_t run_granted(void *l, tw_result r)
{
    tw_result_drop(r); /* the lock's address */
    return ((tw_redis_lock *)l)->lease;
}

static bool run_release(void *p, uint64_t lease, bool *lost, tw_deferred **rd)
{
    tw_redis_lock *l = p;
    /* fn may have released it itself (and it may be held again since, by
     * another turn): then there is nothing to release or wait for */
    if (l->dead || l->state != L_HELD || l->lease != lease)
        return false;
    *lost = l->lost;
    return tw_redis_lock_release(l, rd) == 0;
}

static void run_ref(void *l)
{
    ((tw_redis_lock *)l)->refs++;
}

static void run_unref(void *l)
{
    lock_unref(l);
}

static const tw__redis_run_ops run_ops = {
    "redis lock \"%s\": the lease was lost while the critical section ran; its result was "
    "dropped",
    run_name, run_acquire, run_granted, run_release, run_ref, run_unref};

int tw_redis_lock_run(tw_redis_lock *l, tw_result_fn fn, void *arg, tw_deferred **out)
{
    if (!l || !fn || l->dead)
        return TW_EINVAL;
    CHECK(l, "tw_redis_lock_run");
    return tw__redis_run(&run_ops, l, fn, arg, out);
}

/* ---- fencing ----------------------------------------------------------------------- */

static tw_result stale_errback(tw_result r, void *arg)
{
    (void)arg;
    tw_failure *f = tw_result_as_failure(r);
    if (tw_failure_check(f, TW_EREMOTE) && strncmp(tw_failure_message(f), "STALE ", 6) == 0) {
        tw_result out = tw_result_failure(
            tw_failure_wrap(tw_failure_ref(f), TW_ESTALE, "%s", tw_failure_message(f) + 6));
        tw_result_drop(r);
        return out;
    }
    return r;
}

int tw_redis_fenced_set(tw_redis *c, const char *lock_name, uint64_t token, const char *key,
                        const void *value, size_t len, tw_deferred **out)
{
    if (!c || bad_name(lock_name) || !key || (!value && len) || !out)
        return TW_EINVAL;
    TW__REDIS_CHECK(c, "tw_redis_fenced_set");
    char fence[NAME_MAX_LEN + 32], tok[24];
    int n = snprintf(fence, sizeof fence, "twine:lock:{%s}:fence", lock_name);
    snprintf(tok, sizeof tok, "%llu", (unsigned long long)token);
    const char *argv[4] = {fence, key, tok, value ? (const char *)value : ""};
    size_t lens[4] = {(size_t)n, strlen(key), strlen(tok), len};
    tw_deferred *d;
    int rc = tw__redis_eval(c, &fenced_set_script, 2, 4, argv, lens, &d);
    if (rc)
        return rc;
    tw_deferred_add_errback(d, stale_errback, NULL);
    *out = d;
    return 0;
}

int tw_redis_lock_fenced_set(tw_redis_lock *l, const char *key, const void *value, size_t len,
                             tw_deferred **out)
{
    if (!l || l->dead)
        return TW_EINVAL;
    CHECK(l, "tw_redis_lock_fenced_set");
    if (l->state != L_HELD)
        return TW_EPERM;
    return tw_redis_fenced_set(l->c, l->name, l->token, key, value, len, out);
}
