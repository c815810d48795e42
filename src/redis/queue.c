/* The distributed queue: the DeferredQueue's shape on a Redis stream with a
 * consumer group.
 *
 * put is XADD (field "d" holds the payload). get takes the oldest entry this
 * consumer has read and not yet handed out, or waits while the queue
 * fetches more. Fetching runs only while gets outnumber the entries read,
 * one command at a time, in this order:
 *
 *   GROUP    XGROUP CREATE ... 0 MKSTREAM (again after a NOGROUP: a server
 *            that lost its data)
 *   PENDING  this consumer's own pending entries (a script: XREADGROUP
 *            ... <cursor>, with each entry's delivery count from XPENDING):
 *            from the start when the queue opens (an earlier run's), and
 *            after a read whose reply was lost from the highest id this
 *            queue has taken so far: the lost read can only have taken
 *            newer entries, and the older ones pending for us are in hand
 *            (handed to a get, or buffered), so re-reading them would
 *            deliver them twice and count a delivery that never happened
 *   CLAIM    entries idle for claim_idle from any consumer (a script:
 *            XAUTOCLAIM), a full pass every claim_idle/2
 *   READ     new entries: XREADGROUP ... BLOCK ... > on the queue's own
 *            connection, since a blocking read holds its connection
 *
 * The PENDING and CLAIM scripts move an entry that would be delivered more
 * than max_deliveries times to the dead-letter stream (XADD with its id,
 * payload, delivery count, group and last consumer; then XACK and XDEL)
 * instead of returning it. ack is XACK then XDEL, one script. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "redis/redis.h"

#define FIELD "d"

/* Shared by PENDING and CLAIM: each entry is returned as (id, deliveries,
 * payload) after the cursor, or dead-lettered. KEYS: stream dead. */
#define ENTRY_FILTER                                                                   \
    "local out = {''}\n"                                                               \
    "local function take(id, fields)\n"                                                \
    "  if not fields then\n"                                                           \
    "    redis.call('XACK', KEYS[1], ARGV[1], id)\n"                                   \
    "    return\n"                                                                     \
    "  end\n"                                                                          \
    "  local payload = fields[2] or ''\n"                                              \
    "  for i = 1, #fields, 2 do\n"                                                     \
    "    if fields[i] == '" FIELD "' then payload = fields[i + 1] end\n"               \
    "  end\n"                                                                          \
    "  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)\n"                \
    "  local n = (p[1] and p[1][4]) or 1\n"                                            \
    "  if n > tonumber(ARGV[3]) then\n"                                                \
    "    redis.call('XADD', KEYS[2], '*', 'id', id, '" FIELD "', payload,\n"           \
    "               'deliveries', n - 1, 'group', ARGV[1], 'consumer', ARGV[2])\n"     \
    "    redis.call('XACK', KEYS[1], ARGV[1], id)\n"                                   \
    "    redis.call('XDEL', KEYS[1], id)\n"                                            \
    "    out[#out + 1] = id\n"                                                         \
    "    out[#out + 1] = -1\n"                                                         \
    "    out[#out + 1] = ''\n"                                                         \
    "    return\n"                                                                     \
    "  end\n"                                                                          \
    "  out[#out + 1] = id\n"                                                           \
    "  out[#out + 1] = n\n"                                                            \
    "  out[#out + 1] = payload\n"                                                      \
    "end\n"

/* ARGV: group consumer max start count. out[1]: the last id read ('' when
 * there was none: the pass is over). */
static tw__script pending_script = {
    "queue pending",
    ENTRY_FILTER
    "local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[5],\n"
    "                     'STREAMS', KEYS[1], ARGV[4])\n"
    "local entries = (r and r[1] and r[1][2]) or {}\n"
    "for _, e in ipairs(entries) do\n"
    "  out[1] = e[1]\n"
    "  take(e[1], e[2])\n"
    "end\n"
    "return out\n",
    TW__SCRIPT_QUEUE_PENDING,
    "", false};

/* ARGV: group consumer max min_idle_ms cursor count. out[1]: the next cursor
 * ("0-0": the pass is over). */
static tw__script claim_script = {
    "queue claim",
    ENTRY_FILTER
    "local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[4], ARGV[5],\n"
    "                     'COUNT', ARGV[6])\n"
    "out[1] = r[1]\n"
    "for _, e in ipairs(r[2]) do take(e[1], e[2]) end\n"
    "return out\n",
    TW__SCRIPT_QUEUE_CLAIM,
    "", false};

/* KEYS: stream. ARGV: group id. */
static tw__script ack_script = {
    "queue ack",
    "local n = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "if n == 1 then redis.call('XDEL', KEYS[1], ARGV[2]) end\n"
    "return n\n",
    TW__SCRIPT_QUEUE_ACK,
    "", false};

enum { OP_GROUP = 1, OP_PENDING, OP_CLAIM, OP_READ };

struct tw_redis_queue {
    tw_redis *c, *reader;
    char *stream, *group, *consumer, *dlq;
    size_t stream_len, group_len, consumer_len, dlq_len;
    double claim_idle, block;
    char claim_ms[24], max_s[16], batch_s[16], block_ms[24];

    tw_deferred **gets;
    size_t ng, capg;
    tw_redis_entry **buf;
    size_t nb, capb;

    bool group_ready;
    bool fetching; /* a fetch command in flight */
    bool pending_done;
    char pending_cursor[48]; /* re-read our pending entries after this id */
    char seen[48];           /* the highest id taken from any reply ("": none) */
    char claim_cursor[48];
    double next_claim;
    double retry_delay;
    tw_delayed_call *timer;
    tw_failure *broken; /* a permanent error: gets fail with it */

    unsigned refs;
    bool dead;
    tw_redis_queue_stats stats;
};

#ifdef TW_DEBUG
#define CHECK(q, fn)                                                                   \
    do {                                                                               \
        if ((q)->c->thread != tw__self())                                              \
            tw__wrong_thread("a Redis queue", (q)->c->thread, (fn));                   \
    } while (0)
#else
#define CHECK(q, fn) ((void)0)
#endif

static void fetch(tw_redis_queue *q);

static double now_s(const tw_redis_queue *q)
{
    return tw_reactor_seconds(q->c->r);
}

static char *dup_n(const char *s, size_t *len)
{
    *len = strlen(s);
    char *p = tw__alloc(*len + 1);
    if (p)
        memcpy(p, s, *len + 1);
    return p;
}

/* Stream ids ("<ms>-<seq>") in order; an id that does not parse counts as 0-0. */
static void id_parse(const char *s, uint64_t *ms, uint64_t *seq)
{
    char *end;
    *ms = strtoull(s, &end, 10);
    *seq = *end == '-' ? strtoull(end + 1, NULL, 10) : 0;
}

static int id_cmp(const char *a, const char *b)
{
    uint64_t am, as, bm, bs;
    id_parse(a, &am, &as);
    id_parse(b, &bm, &bs);
    if (am != bm)
        return am < bm ? -1 : 1;
    return as < bs ? -1 : as > bs;
}

/* Notes an id taken from a reply (kept or not: either way it is no longer
 * what a lost read may have taken). */
static void note_seen(tw_redis_queue *q, const char *id, size_t len)
{
    if (len >= sizeof q->seen)
        return;
    if (!q->seen[0] || id_cmp(id, q->seen) > 0) {
        memcpy(q->seen, id, len);
        q->seen[len] = 0;
    }
}

/* An entry of a reply could not be kept (no memory): it stays pending for
 * us, and the pending pass goes back to just before it. */
static void lost_in_hand(tw_redis_queue *q, const char *before)
{
    if (q->pending_done || id_cmp(before, q->pending_cursor) < 0) {
        snprintf(q->pending_cursor, sizeof q->pending_cursor, "%s", before);
        q->pending_done = false;
    }
}

static void q_unref(tw_redis_queue *q)
{
    if (--q->refs)
        return;
    tw__free(q->stream, q->stream_len + 1);
    tw__free(q->group, q->group_len + 1);
    tw__free(q->consumer, q->consumer_len + 1);
    tw__free(q->dlq, q->dlq_len + 1);
    tw__free(q->gets, q->capg * sizeof *q->gets);
    tw__free(q->buf, q->capb * sizeof *q->buf);
    if (q->broken)
        tw_failure_unref(q->broken);
    TW__DELETE(q);
}

/* ---- entries -------------------------------------------------------------------- */

void tw_redis_entry_free(void *entry)
{
    tw_redis_entry *e = entry;
    if (!e)
        return;
    tw__free(e, sizeof *e + strlen(e->id) + 1 + e->len + 1);
}

static tw_redis_entry *entry_new(const char *id, size_t id_len, const char *data, size_t len,
                                 uint32_t deliveries)
{
    tw_redis_entry *e = tw__alloc(sizeof *e + id_len + 1 + len + 1);
    if (!e)
        return NULL;
    char *p = (char *)(e + 1);
    memcpy(p, id, id_len);
    p[id_len] = 0;
    e->id = p;
    p += id_len + 1;
    if (len)
        memcpy(p, data, len);
    p[len] = 0;
    e->data = p;
    e->len = len;
    e->deliveries = deliveries;
    return e;
}

static bool buf_push(tw_redis_queue *q, tw_redis_entry *e)
{
    if (q->nb == q->capb) {
        size_t cap = q->capb ? q->capb * 2 : 16;
        void *p = tw__realloc(q->buf, q->capb * sizeof *q->buf, cap * sizeof *q->buf);
        if (!p)
            return false;
        q->buf = p;
        q->capb = cap;
    }
    q->buf[q->nb++] = e;
    return true;
}

/* Hands entries to gets, oldest to oldest. */
static void deliver(tw_redis_queue *q)
{
    while (q->ng && q->nb && !q->dead) {
        tw_deferred *d = q->gets[0];
        memmove(q->gets, q->gets + 1, --q->ng * sizeof *q->gets);
        tw_redis_entry *e = q->buf[0];
        memmove(q->buf, q->buf + 1, --q->nb * sizeof *q->buf);
        q->stats.delivered++;
        if (e->deliveries > 1)
            q->stats.redelivered++;
        tw_deferred_callback(d, tw_result_value(e, tw_redis_entry_free));
        tw_deferred_unref(d);
    }
}

/* ---- fetching ---------------------------------------------------------------------- */

typedef struct q_op {
    tw_redis_queue *q;
    int kind;
} q_op;

static void retry_fired(void *arg)
{
    tw_redis_queue *q = arg;
    tw_delayed_call_unref(q->timer);
    q->timer = NULL;
    fetch(q);
}

static void break_queue(tw_redis_queue *q, tw_failure *f)
{
    if (q->broken)
        tw_failure_unref(q->broken);
    q->broken = f;
    while (q->ng) {
        tw_deferred *d = q->gets[0];
        memmove(q->gets, q->gets + 1, --q->ng * sizeof *q->gets);
        tw_deferred_errback(d, tw_failure_ref(f));
        tw_deferred_unref(d);
    }
}

/* An error: NOGROUP re-creates the group; a lost or late reply re-reads our
 * own pending entries after a pause; anything else breaks the queue (its
 * gets fail with the error, and the next get tries again). */
static void fetch_failed(tw_redis_queue *q, tw_failure *f, int kind)
{
    int code = tw_failure_code(f);
    const char *msg = tw_failure_message(f);
    if (code == TW_EREMOTE && strncmp(msg, "NOGROUP", 7) == 0) {
        q->group_ready = false;
        q->pending_done = false;
        fetch(q);
        return;
    }
    if (tw__redis_transient(f)) {
        /* A read that may have run took only entries newer than any we
         * have; a pending pass that may have run goes on from its cursor
         * (what it read again is pending for us still). */
        if (kind == OP_READ) {
            q->pending_done = false;
            snprintf(q->pending_cursor, sizeof q->pending_cursor, "%s",
                     q->seen[0] ? q->seen : "0");
        }
        double d = q->retry_delay;
        q->retry_delay = q->retry_delay * 2 > 1.0 ? 1.0 : q->retry_delay * 2;
        if (tw_reactor_call_later(q->c->r, d, retry_fired, q, &q->timer) != 0)
            q->timer = NULL;
        return;
    }
    break_queue(q, tw_failure_wrap(tw_failure_ref(f), code, "redis queue \"%s\": %s", q->stream,
                                   msg));
}

/* (id, deliveries, payload) triples after the cursor; `before`: the id the
 * pass read after (a pending pass, in id order), or NULL (a claim). */
static void take_triples(tw_redis_queue *q, const tw_redis_reply *rep, bool claimed,
                         const char *before)
{
    char prev[48];
    snprintf(prev, sizeof prev, "%s", before ? before : "");
    for (size_t i = 1; i + 2 < rep->len; i += 3) {
        const tw_redis_reply *id = &rep->element[i], *n = &rep->element[i + 1],
                             *data = &rep->element[i + 2];
        if (id->type != TW_REDIS_STRING || n->type != TW_REDIS_INTEGER)
            continue;
        note_seen(q, id->str, id->len);
        if (n->integer < 0) {
            q->stats.dead++;
            continue;
        }
        tw_redis_entry *e = entry_new(id->str, id->len, data->str ? data->str : "", data->len,
                                      (uint32_t)n->integer);
        if (!e || !buf_push(q, e)) {
            /* no memory: it stays pending for us; a claimed one is claimed
             * again after claim_idle, a re-read one is read again */
            tw_redis_entry_free(e);
            if (before)
                lost_in_hand(q, prev);
            continue;
        }
        if (claimed)
            q->stats.claimed++;
        if (id->len < sizeof prev)
            snprintf(prev, sizeof prev, "%s", id->str);
    }
}

/* XREADGROUP's answer: [[stream, [[id, [field, value, ...]], ...]]], or nil. */
static void take_read(tw_redis_queue *q, const tw_redis_reply *rep)
{
    if (rep->type != TW_REDIS_ARRAY)
        return;
    for (size_t s = 0; s < rep->len; s++) {
        const tw_redis_reply *st = &rep->element[s];
        if (st->type != TW_REDIS_ARRAY || st->len < 2 || st->element[1].type != TW_REDIS_ARRAY)
            continue;
        const tw_redis_reply *entries = &st->element[1];
        for (size_t i = 0; i < entries->len; i++) {
            const tw_redis_reply *en = &entries->element[i];
            if (en->type != TW_REDIS_ARRAY || en->len < 2 ||
                en->element[0].type != TW_REDIS_STRING)
                continue;
            const tw_redis_reply *fields = &en->element[1];
            const char *data = "";
            size_t len = 0;
            if (fields->type == TW_REDIS_ARRAY && fields->len >= 2) {
                data = fields->element[1].str ? fields->element[1].str : "";
                len = fields->element[1].len;
                for (size_t f = 0; f + 1 < fields->len; f += 2)
                    if (fields->element[f].len == 1 && fields->element[f].str[0] == FIELD[0]) {
                        data = fields->element[f + 1].str ? fields->element[f + 1].str : "";
                        len = fields->element[f + 1].len;
                    }
            }
            char before[48];
            snprintf(before, sizeof before, "%s", q->seen[0] ? q->seen : "0");
            note_seen(q, en->element[0].str, en->element[0].len);
            tw_redis_entry *e =
                entry_new(en->element[0].str, en->element[0].len, data, len, 1);
            if (!e || !buf_push(q, e)) {
                tw_redis_entry_free(e);
                lost_in_hand(q, before);
            }
        }
    }
}

static tw_result on_fetch_reply(tw_result r, void *arg)
{
    q_op *op = arg;
    tw_redis_queue *q = op->q;
    int kind = op->kind;
    TW__DELETE(op);
    if (q->dead) {
        tw_result_drop(r); /* read entries stay pending in Redis */
        q_unref(q);
        return tw_result_none();
    }
    q->fetching = false;
    tw_failure *f = tw_result_as_failure(r);
    if (f) {
        fetch_failed(q, f, kind);
        tw_result_drop(r);
        q_unref(q);
        return tw_result_none();
    }
    q->retry_delay = 0.01;
    const tw_redis_reply *rep = r.ptr;
    switch (kind) {
    case OP_GROUP:
        q->group_ready = true;
        break;
    case OP_PENDING:
        if (rep->type == TW_REDIS_ARRAY && rep->len >= 1) {
            char before[48];
            memcpy(before, q->pending_cursor, sizeof before);
            if (rep->element[0].len == 0) {
                q->pending_done = true;
            } else {
                snprintf(q->pending_cursor, sizeof q->pending_cursor, "%s", rep->element[0].str);
            }
            take_triples(q, rep, false, before);
        } else {
            q->pending_done = true;
        }
        break;
    case OP_CLAIM:
        if (rep->type == TW_REDIS_ARRAY && rep->len >= 1 &&
            rep->element[0].type == TW_REDIS_STRING) {
            snprintf(q->claim_cursor, sizeof q->claim_cursor, "%s", rep->element[0].str);
            take_triples(q, rep, true, NULL);
        } else {
            snprintf(q->claim_cursor, sizeof q->claim_cursor, "0-0");
        }
        if (strcmp(q->claim_cursor, "0-0") == 0)
            q->next_claim = now_s(q) + q->claim_idle / 2;
        break;
    case OP_READ:
        take_read(q, rep);
        break;
    }
    tw_result_drop(r);
    deliver(q);
    fetch(q);
    q_unref(q);
    return tw_result_none();
}

static tw_result on_group_reply(tw_result r, void *arg)
{
    tw_failure *f = tw_result_as_failure(r);
    if (f && tw_failure_code(f) == TW_EREMOTE &&
        strncmp(tw_failure_message(f), "BUSYGROUP", 9) == 0) {
        tw_result_drop(r); /* it exists: as good */
        r = tw_result_none();
    }
    return on_fetch_reply(r, arg);
}

static void fetch(tw_redis_queue *q)
{
    if (q->dead || q->fetching || q->timer || q->ng <= q->nb)
        return;
    q_op *op = TW__NEW(q_op);
    if (!op)
        return; /* the next get tries again */
    op->q = q;
    tw_deferred *d = NULL;
    int rc;
    tw_callback_fn fn = on_fetch_reply;
    if (!q->group_ready) {
        op->kind = OP_GROUP;
        const char *argv[7] = {"XGROUP", "CREATE", q->stream, q->group, "0", "MKSTREAM"};
        size_t lens[7] = {6, 6, q->stream_len, q->group_len, 1, 8};
        rc = tw_redis_command_argv(q->c, 6, argv, lens, &d);
        fn = on_group_reply;
    } else if (!q->pending_done) {
        op->kind = OP_PENDING;
        const char *argv[7] = {q->stream,   q->dlq,   q->group,          q->consumer,
                               q->max_s,    q->pending_cursor, q->batch_s};
        size_t lens[7] = {q->stream_len, q->dlq_len, q->group_len, q->consumer_len,
                          strlen(q->max_s), strlen(q->pending_cursor), strlen(q->batch_s)};
        rc = tw__redis_eval(q->c, &pending_script, 2, 7, argv, lens, &d);
    } else if (now_s(q) >= q->next_claim) {
        op->kind = OP_CLAIM;
        const char *argv[8] = {q->stream,      q->dlq,         q->group,
                               q->consumer,    q->max_s,        q->claim_ms,
                               q->claim_cursor, q->batch_s};
        size_t lens[8] = {q->stream_len,          q->dlq_len,         q->group_len,
                          q->consumer_len,        strlen(q->max_s),    strlen(q->claim_ms),
                          strlen(q->claim_cursor), strlen(q->batch_s)};
        rc = tw__redis_eval(q->c, &claim_script, 2, 8, argv, lens, &d);
    } else {
        op->kind = OP_READ;
        double wait = q->block;
        if (q->next_claim - now_s(q) < wait) /* wake up for the next claim pass */
            wait = q->next_claim - now_s(q) > 0.001 ? q->next_claim - now_s(q) : 0.001;
        char block_ms[24];
        snprintf(block_ms, sizeof block_ms, "%lld", (long long)(wait * 1000.0 + 0.5));
        const char *argv[10] = {"XREADGROUP", "GROUP", q->group, q->consumer, "COUNT",
                                q->batch_s,  "BLOCK", block_ms, "STREAMS",   q->stream};
        size_t lens[10] = {10, 5, q->group_len, q->consumer_len, 5, strlen(q->batch_s),
                           5, strlen(block_ms), 7, q->stream_len};
        const char *argv2[11];
        size_t lens2[11];
        memcpy(argv2, argv, sizeof argv);
        memcpy(lens2, lens, sizeof lens);
        argv2[10] = ">";
        lens2[10] = 1;
        double timeout = q->reader->command_timeout < 0 ? -1 : wait + q->reader->command_timeout;
        rc = tw_redis_command_argv_timeout(q->reader, timeout, 11, argv2, lens2, &d);
        q->stats.reads++;
    }
    if (rc) {
        TW__DELETE(op);
        if (rc != TW_ESHUTDOWN)
            break_queue(q, tw_failure_new(rc, "redis queue \"%s\": cannot send: %s", q->stream,
                                          tw_strerror(rc)));
        return;
    }
    q->fetching = true;
    q->refs++;
    tw_deferred_add_both(d, fn, op);
    tw_deferred_unref(d);
}

/* ---- public ------------------------------------------------------------------- */

int tw_redis_queue_open(tw_redis *c, const tw_redis_queue_config *cfg, tw_redis_queue **out)
{
    if (!c || !cfg || !out || !cfg->stream || !cfg->stream[0] || !cfg->group ||
        !cfg->group[0] || (cfg->consumer && !cfg->consumer[0]) ||
        (cfg->dead_letter && !cfg->dead_letter[0]) || isnan(cfg->claim_idle) ||
        !(cfg->claim_idle > 0) || !(cfg->claim_idle < 1e9) || !cfg->max_deliveries ||
        !cfg->batch || isnan(cfg->block) || !(cfg->block > 0) || !(cfg->block < 1e6))
        return TW_EINVAL;
    TW__REDIS_CHECK(c, "tw_redis_queue_open");
    if (c->state == LINK_CLOSING || c->state == LINK_CLOSED)
        return TW_ESHUTDOWN;
    tw_redis_queue *q = TW__NEW(tw_redis_queue);
    if (!q)
        return TW_ENOMEM;
    q->c = c;
    q->refs = 1;
    q->claim_idle = cfg->claim_idle;
    q->block = cfg->block;
    q->retry_delay = 0.01;
    snprintf(q->claim_ms, sizeof q->claim_ms, "%lld", (long long)(cfg->claim_idle * 1000 + 0.5));
    snprintf(q->max_s, sizeof q->max_s, "%u", (unsigned)cfg->max_deliveries);
    snprintf(q->batch_s, sizeof q->batch_s, "%u", (unsigned)cfg->batch);
    snprintf(q->pending_cursor, sizeof q->pending_cursor, "0");
    snprintf(q->claim_cursor, sizeof q->claim_cursor, "0-0");
    char name[128];
    if (!cfg->consumer) {
        char host[64] = "host";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = 0;
        snprintf(name, sizeof name, "%s-%d-%08x", host, (int)getpid(),
                 (unsigned)(tw__redis_random(c) & 0xffffffffu));
    }
    q->stream = dup_n(cfg->stream, &q->stream_len);
    q->group = dup_n(cfg->group, &q->group_len);
    q->consumer = dup_n(cfg->consumer ? cfg->consumer : name, &q->consumer_len);
    if (cfg->dead_letter) {
        q->dlq = dup_n(cfg->dead_letter, &q->dlq_len);
    } else { /* "<stream>:dead", however long the stream's name */
        q->dlq_len = strlen(cfg->stream) + strlen(":dead");
        q->dlq = tw__alloc(q->dlq_len + 1);
        if (q->dlq)
            snprintf(q->dlq, q->dlq_len + 1, "%s:dead", cfg->stream);
    }
    int rc = q->stream && q->group && q->consumer && q->dlq ? 0 : TW_ENOMEM;
    if (!rc)
        rc = tw__redis_clone(c, &q->reader);
    if (rc) {
        q_unref(q);
        return rc;
    }
    c->users++;
    *out = q;
    return 0;
}

int tw_redis_queue_close(tw_redis_queue *q)
{
    if (!q || q->dead)
        return TW_EINVAL;
    CHECK(q, "tw_redis_queue_close");
    q->dead = true;
    if (q->timer) {
        tw_delayed_call_cancel(q->timer);
        tw_delayed_call_unref(q->timer);
        q->timer = NULL;
    }
    tw_failure *f = tw_failure_new(TW_ESHUTDOWN, "redis queue \"%s\" was closed", q->stream);
    while (q->ng) {
        tw_deferred *d = q->gets[0];
        memmove(q->gets, q->gets + 1, --q->ng * sizeof *q->gets);
        tw_deferred_errback(d, tw_failure_ref(f));
        tw_deferred_unref(d);
    }
    tw_failure_unref(f);
    while (q->nb)
        tw_redis_entry_free(q->buf[--q->nb]);
    /* the blocking read in flight is abandoned: what it read stays pending */
    tw__redis_abort(q->reader);
    q->reader = NULL;
    q->c->users--;
    q_unref(q);
    return 0;
}

int tw_redis_queue_put(tw_redis_queue *q, const void *data, size_t len, tw_deferred **out)
{
    if (!q || q->dead || (!data && len) || !out)
        return TW_EINVAL;
    CHECK(q, "tw_redis_queue_put");
    const char *argv[5] = {"XADD", q->stream, "*", FIELD, data ? (const char *)data : ""};
    size_t lens[5] = {4, q->stream_len, 1, 1, len};
    return tw_redis_command_argv(q->c, 5, argv, lens, out);
}

static void get_cancel(tw_deferred *d, void *arg)
{
    tw_redis_queue *q = arg;
    for (size_t i = 0; i < q->ng; i++)
        if (q->gets[i] == d) {
            memmove(q->gets + i, q->gets + i + 1, (q->ng - i - 1) * sizeof *q->gets);
            q->ng--;
            tw_deferred_unref(d); /* tw_deferred_cancel holds it until it has failed */
            return;
        }
}

int tw_redis_queue_get(tw_redis_queue *q, tw_deferred **out)
{
    if (!q || q->dead || !out)
        return TW_EINVAL;
    CHECK(q, "tw_redis_queue_get");
    if (q->ng == q->capg) {
        size_t cap = q->capg ? q->capg * 2 : 16;
        void *p = tw__realloc(q->gets, q->capg * sizeof *q->gets, cap * sizeof *q->gets);
        if (!p)
            return TW_ENOMEM;
        q->gets = p;
        q->capg = cap;
    }
    tw_deferred *d;
    int rc = tw_deferred_create(&d, get_cancel, q);
    if (rc)
        return rc;
    if (q->broken) { /* try again: the error may be gone */
        tw_failure_unref(q->broken);
        q->broken = NULL;
    }
    q->gets[q->ng++] = d;
    *out = tw_deferred_ref(d);
    deliver(q);
    fetch(q);
    return 0;
}

int tw_redis_queue_ack(tw_redis_queue *q, const char *id, tw_deferred **out)
{
    if (!q || q->dead || !id || !id[0])
        return TW_EINVAL;
    CHECK(q, "tw_redis_queue_ack");
    const char *argv[3] = {q->stream, q->group, id};
    size_t lens[3] = {q->stream_len, q->group_len, strlen(id)};
    tw_deferred *d;
    int rc = tw__redis_eval(q->c, &ack_script, 1, 3, argv, lens, &d);
    if (rc)
        return rc;
    if (out)
        *out = d;
    else
        tw_deferred_unref(d); /* a failure is reported as unhandled */
    return 0;
}

tw_reactor *tw__redis_queue_reactor(const tw_redis_queue *q)
{
    return q->c->r;
}

size_t tw_redis_queue_waiting(const tw_redis_queue *q)
{
    return q ? q->ng : 0;
}

size_t tw_redis_queue_buffered(const tw_redis_queue *q)
{
    return q ? q->nb : 0;
}

const char *tw_redis_queue_consumer(const tw_redis_queue *q)
{
    return q ? q->consumer : "";
}

void tw_redis_queue_stats_get(const tw_redis_queue *q, tw_redis_queue_stats *out)
{
    if (q && out)
        *out = q->stats;
}
