/*
 * Queue: argument errors; FIFO, LIFO and priority order (ties leave in the
 * order they came) checked against a reference model through growth and
 * ring wrap-around; the try and timeout forms; blocking put and get woken by
 * the other side; task_done and join; shutdown, soft and immediate, with
 * blocked putters, getters and joiners; is_shutdown; drop on immediate
 * shutdown and on destroy; and every allocation failing in turn.
 *
 * Threads report through Events. "Blocked" is checked by watching a thread's
 * done Event stay clear for QUIET_WINDOW: a correct queue never sets it, so
 * the window can only miss a bug, never invent one. Nothing sleeps to order
 * threads. Worker threads never call cmocka; the main thread asserts on what
 * they recorded.
 */
#include "harness.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Exactly representable in binary, so the nanosecond deadline is exact. */
#define SHORT_TIMEOUT 0.0625
/* How long to watch for a thread that should stay blocked. */
#define QUIET_WINDOW 0.05
/* Bound that turns a hang into a failure message. */
#define HANG_LIMIT 10.0

#define P(i) ((void *)(uintptr_t)(i))
#define U(p) ((uintptr_t)(p))

static const enum tw_queue_kind KINDS[] = {TW_QUEUE_FIFO, TW_QUEUE_LIFO, TW_QUEUE_PRIORITY};

static const char *kind_name(enum tw_queue_kind k)
{
    return k == TW_QUEUE_FIFO ? "fifo" : k == TW_QUEUE_LIFO ? "lifo" : "priority";
}

/* Priority items are integers: the key above bit 20, below it an index the
 * comparison ignores, so items with equal keys are "equal" (fits 32 bits). */
#define ITEM(key, idx) (((uintptr_t)(key) << 20) | (uintptr_t)(idx))
#define KEY(v) ((uintptr_t)(v) >> 20)
#define IDX(v) ((uintptr_t)(v) & 0xfffffu)

static int cmp_key(const void *a, const void *b, void *ctx)
{
    uintptr_t ka = KEY(U(a)), kb = KEY(U(b));
    if (ctx)
        (*(size_t *)ctx)++;
    return ka < kb ? -1 : ka > kb;
}

/* ---- drop recorder ------------------------------------------------------- */

#define REC_MAX 4096

typedef struct recorder {
    tw_queue *q;       /* if set, drop also looks at the queue */
    uintptr_t items[REC_MAX];
    size_t n;
    size_t sizes_seen; /* tw_queue_size(q) summed over the drops */
    int put_rc;        /* what a put from inside drop returned */
} recorder;

static void rec_drop(void *item, void *ctx)
{
    recorder *r = ctx;
    if (r->n < REC_MAX)
        r->items[r->n] = U(item);
    r->n++;
    if (r->q) {
        /* Drop runs without the queue's lock: these must not deadlock. */
        r->sizes_seen += tw_queue_size(r->q);
        r->put_rc = tw_queue_try_put(r->q, P(0));
    }
}

static tw_queue *make_queue(enum tw_queue_kind kind, size_t maxsize, recorder *rec)
{
    tw_queue_config cfg;
    tw_queue *q = NULL;
    memset(&cfg, 0, sizeof cfg);
    cfg.kind = kind;
    cfg.maxsize = maxsize;
    if (kind == TW_QUEUE_PRIORITY)
        cfg.cmp = cmp_key;
    if (rec) {
        memset(rec, 0, sizeof *rec);
        cfg.drop = rec_drop;
        cfg.drop_ctx = rec;
    }
    assert_int_equal(tw_queue_create_with(&cfg, &q), 0);
    assert_non_null(q);
    return q;
}

static void destroy_checked(tw_queue *q)
{
    assert_int_equal(tw_queue_destroy(q), 0);
    assert_int_equal(tw_allocator_live(), 0);
}

static void *get_ok(tw_queue *q)
{
    void *item = P(0xdead);
    assert_int_equal(tw_queue_try_get(q, &item), 0);
    return item;
}

/* ---- reference model ------------------------------------------------------ */

#define MODEL_MAX 8192

typedef struct model {
    enum tw_queue_kind kind;
    uintptr_t v[MODEL_MAX];
    uint64_t seq[MODEL_MAX];
    size_t n;
    uint64_t next;
} model;

static void model_put(model *m, uintptr_t v)
{
    assert_true(m->n < MODEL_MAX);
    m->v[m->n] = v;
    m->seq[m->n] = m->next++;
    m->n++;
}

/* The item the queue must hand out next: oldest, newest, or the smallest
 * key with the oldest sequence among equals. */
static uintptr_t model_get(model *m)
{
    size_t best = 0;
    uintptr_t v;
    assert_true(m->n > 0);
    for (size_t i = 1; i < m->n; i++) {
        bool better;
        switch (m->kind) {
        case TW_QUEUE_FIFO:
            better = m->seq[i] < m->seq[best];
            break;
        case TW_QUEUE_LIFO:
            better = m->seq[i] > m->seq[best];
            break;
        default:
            better = KEY(m->v[i]) < KEY(m->v[best]) ||
                     (KEY(m->v[i]) == KEY(m->v[best]) && m->seq[i] < m->seq[best]);
            break;
        }
        if (better)
            best = i;
    }
    v = m->v[best];
    m->n--;
    m->v[best] = m->v[m->n];
    m->seq[best] = m->seq[m->n];
    return v;
}

static uint32_t lcg(uint32_t *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

/* ---- threads ---------------------------------------------------------------- */

enum op_kind { OP_PUT, OP_PUT_TIMEOUT, OP_GET, OP_GET_TIMEOUT, OP_JOIN, OP_JOIN_TIMEOUT };

typedef struct op {
    tw_queue *q;
    enum op_kind kind;
    void *item; /* to put, or got */
    int rc;
    const size_t *progress; /* if set, read right after the call returns */
    size_t progress_seen;
    tw_event started, done;
    pthread_t thread;
} op;

static void *op_main(void *arg)
{
    op *o = arg;
    tw_event_set(&o->started);
    switch (o->kind) {
    case OP_PUT:
        o->rc = tw_queue_put(o->q, o->item);
        break;
    case OP_PUT_TIMEOUT:
        o->rc = tw_queue_put_timeout(o->q, o->item, HANG_LIMIT);
        break;
    case OP_GET:
        o->rc = tw_queue_get(o->q, &o->item);
        break;
    case OP_GET_TIMEOUT:
        o->rc = tw_queue_get_timeout(o->q, &o->item, HANG_LIMIT);
        break;
    case OP_JOIN:
        o->rc = tw_queue_join(o->q);
        break;
    case OP_JOIN_TIMEOUT:
        o->rc = tw_queue_join_timeout(o->q, HANG_LIMIT);
        break;
    }
    if (o->progress)
        o->progress_seen = __atomic_load_n(o->progress, __ATOMIC_ACQUIRE);
    tw_event_set(&o->done);
    return NULL;
}

static void op_start_with(op *o, tw_queue *q, enum op_kind kind, void *item,
                          const size_t *progress)
{
    memset(o, 0, sizeof *o);
    o->q = q;
    o->kind = kind;
    o->item = item;
    o->progress = progress;
    o->rc = 1;
    tw_event_init(&o->started);
    tw_event_init(&o->done);
    o->thread = tw_test_start(op_main, o);
    assert_int_equal(tw_event_wait_timeout(&o->started, HANG_LIMIT), 0);
}

static void op_start(op *o, tw_queue *q, enum op_kind kind, void *item)
{
    op_start_with(o, q, kind, item, NULL);
}

/* The thread is still inside its call after QUIET_WINDOW. */
static void op_expect_blocked(op *o)
{
    if (tw_event_wait_timeout(&o->done, QUIET_WINDOW) != TW_ETIMEDOUT)
        fail_msg("a blocking call returned %s though it should still wait",
                 tw_err_name(o->rc));
}

/* Joins the thread and returns what its call returned. */
static int op_finish(op *o)
{
    if (tw_event_wait_timeout(&o->done, HANG_LIMIT) != 0)
        fail_msg("a blocked call was not woken within %.0f s", HANG_LIMIT);
    tw_test_join(o->thread);
    return o->rc;
}

/* ==== arguments ============================================================ */

static void test_queue_bad_arguments(void **state)
{
    tw_queue_config cfg;
    tw_queue *q = P(0x1);
    void *item = NULL;
    (void)state;

    assert_int_equal(tw_queue_create(TW_QUEUE_FIFO, 0, NULL), TW_EINVAL);
    assert_int_equal(tw_queue_create((enum tw_queue_kind)3, 0, &q), TW_EINVAL);
    assert_int_equal(tw_queue_create((enum tw_queue_kind)-1, 0, &q), TW_EINVAL);
    /* A priority queue needs a comparison, which this form cannot give. */
    assert_int_equal(tw_queue_create(TW_QUEUE_PRIORITY, 0, &q), TW_EINVAL);
    assert_int_equal(tw_queue_create_with(NULL, &q), TW_EINVAL);
    memset(&cfg, 0, sizeof cfg);
    cfg.kind = TW_QUEUE_PRIORITY;
    assert_int_equal(tw_queue_create_with(&cfg, &q), TW_EINVAL);
    cfg.cmp = cmp_key;
    assert_int_equal(tw_queue_create_with(&cfg, NULL), TW_EINVAL);
    assert_ptr_equal(q, P(0x1)); /* untouched by the failures */
    assert_int_equal(tw_allocator_live(), 0);

    assert_int_equal(tw_queue_put(NULL, NULL), TW_EINVAL);
    assert_int_equal(tw_queue_try_put(NULL, NULL), TW_EINVAL);
    assert_int_equal(tw_queue_put_timeout(NULL, NULL, 1.0), TW_EINVAL);
    assert_int_equal(tw_queue_get(NULL, &item), TW_EINVAL);
    assert_int_equal(tw_queue_try_get(NULL, &item), TW_EINVAL);
    assert_int_equal(tw_queue_get_timeout(NULL, &item, 1.0), TW_EINVAL);
    assert_int_equal(tw_queue_task_done(NULL), TW_EINVAL);
    assert_int_equal(tw_queue_join(NULL), TW_EINVAL);
    assert_int_equal(tw_queue_join_timeout(NULL, 1.0), TW_EINVAL);
    assert_int_equal(tw_queue_shutdown(NULL, false), TW_EINVAL);
    assert_int_equal(tw_queue_shutdown(NULL, true), TW_EINVAL);
    assert_int_equal(tw_queue_destroy(NULL), TW_EINVAL);
    assert_int_equal(tw_queue_size(NULL), 0);
    assert_true(tw_queue_empty(NULL));
    assert_false(tw_queue_full(NULL));

    assert_int_equal(tw_queue_create(TW_QUEUE_FIFO, 0, &q), 0);
    assert_int_equal(tw_queue_put(q, P(7)), 0);
    /* A NULL out-pointer fails without taking the item. */
    assert_int_equal(tw_queue_get(q, NULL), TW_EINVAL);
    assert_int_equal(tw_queue_try_get(q, NULL), TW_EINVAL);
    assert_int_equal(tw_queue_get_timeout(q, NULL, 0.0), TW_EINVAL);
    assert_int_equal(tw_queue_size(q), 1);
    /* NaN timeouts, before anything else happens. */
    assert_int_equal(tw_queue_put_timeout(q, P(8), NAN), TW_EINVAL);
    assert_int_equal(tw_queue_get_timeout(q, &item, NAN), TW_EINVAL);
    assert_int_equal(tw_queue_join_timeout(q, NAN), TW_EINVAL);
    assert_int_equal(tw_queue_size(q), 1);
    /* NULL is a valid item. */
    assert_int_equal(tw_queue_put(q, NULL), 0);
    assert_ptr_equal(get_ok(q), P(7));
    item = P(1);
    assert_int_equal(tw_queue_get(q, &item), 0);
    assert_null(item);
    destroy_checked(q);
}

/* ==== order ================================================================= */

static void test_queue_fifo_lifo_order(void **state)
{
    tw_queue *q;
    (void)state;

    q = make_queue(TW_QUEUE_FIFO, 0, NULL);
    for (uintptr_t i = 0; i < 100; i++)
        assert_int_equal(tw_queue_put(q, P(i)), 0);
    for (uintptr_t i = 0; i < 100; i++)
        assert_int_equal(U(get_ok(q)), i);
    destroy_checked(q);

    q = make_queue(TW_QUEUE_LIFO, 0, NULL);
    for (uintptr_t i = 0; i < 100; i++)
        assert_int_equal(tw_queue_put(q, P(i)), 0);
    for (uintptr_t i = 100; i-- > 0;)
        assert_int_equal(U(get_ok(q)), i);
    destroy_checked(q);
}

static void test_queue_priority_ties_fifo(void **state)
{
    tw_queue_config cfg;
    tw_queue *q;
    size_t calls = 0;
    uintptr_t prev = 0;
    enum { N = 1000, KEYS = 7 };
    (void)state;

    memset(&cfg, 0, sizeof cfg);
    cfg.kind = TW_QUEUE_PRIORITY;
    cfg.cmp = cmp_key;
    cfg.cmp_ctx = &calls; /* proves cmp_ctx reaches cmp */
    assert_int_equal(tw_queue_create_with(&cfg, &q), 0);
    /* Keys in a scrambled order, many items per key; idx = put order. */
    for (uint32_t i = 0; i < N; i++)
        assert_int_equal(tw_queue_put(q, P(ITEM((i * 5u + 3u) % KEYS, i))), 0);
    assert_true(calls > 0);
    for (int i = 0; i < N; i++) {
        uintptr_t v = U(get_ok(q));
        if (i > 0) {
            assert_true(KEY(v) >= KEY(prev));
            if (KEY(v) == KEY(prev) && IDX(v) <= IDX(prev))
                fail_msg("key %lu: item %lu left after item %lu, which came later",
                         (unsigned long)KEY(v), (unsigned long)IDX(v), (unsigned long)IDX(prev));
        }
        prev = v;
    }
    assert_true(tw_queue_empty(q));
    destroy_checked(q);
}

/* Random puts and gets (try forms) against the model: order, size, empty,
 * full, TW_EFULL / TW_EEMPTY, through growth and ring wrap-around. */
static void test_queue_model(void **state)
{
    static model m;
    static const size_t maxsizes[] = {0, 1, 7, 100};
    (void)state;

    for (size_t k = 0; k < 3; k++) {
        for (size_t s = 0; s < sizeof maxsizes / sizeof maxsizes[0]; s++) {
            size_t maxsize = maxsizes[s];
            tw_queue *q = make_queue(KINDS[k], maxsize, NULL);
            uint32_t rnd = (uint32_t)(k * 31 + s + 1);
            memset(&m, 0, sizeof m);
            m.kind = KINDS[k];
            for (int step = 0; step < 6000; step++) {
                /* Phases that mostly fill, then mostly drain. */
                unsigned put_pct = (step / 500) % 2 ? 30 : 70;
                void *got = NULL;
                if (lcg(&rnd) % 100 < put_pct) {
                    uintptr_t v = ITEM(lcg(&rnd) % 13, step);
                    int rc = tw_queue_try_put(q, P(v));
                    if (maxsize && m.n == maxsize) {
                        assert_int_equal(rc, TW_EFULL);
                    } else {
                        assert_int_equal(rc, 0);
                        model_put(&m, v);
                    }
                } else {
                    int rc = tw_queue_try_get(q, &got);
                    if (m.n == 0) {
                        assert_int_equal(rc, TW_EEMPTY);
                    } else {
                        uintptr_t want = model_get(&m);
                        assert_int_equal(rc, 0);
                        if (U(got) != want)
                            fail_msg("%s maxsize %zu step %d: got %#lx, expected %#lx",
                                     kind_name(KINDS[k]), maxsize, step, (unsigned long)U(got),
                                     (unsigned long)want);
                    }
                }
                assert_int_equal(tw_queue_size(q), m.n);
                assert_int_equal(tw_queue_empty(q), m.n == 0);
                assert_int_equal(tw_queue_full(q), maxsize != 0 && m.n == maxsize);
            }
            destroy_checked(q);
        }
    }
}

/* ==== try and timeout forms ================================================== */

static void test_queue_try_forms(void **state)
{
    tw_queue *q;
    void *item = P(0x55);
    (void)state;

    q = make_queue(TW_QUEUE_FIFO, 2, NULL);
    assert_true(tw_queue_empty(q));
    assert_false(tw_queue_full(q));
    assert_int_equal(tw_queue_try_get(q, &item), TW_EEMPTY);
    assert_ptr_equal(item, P(0x55)); /* untouched */
    assert_int_equal(tw_queue_try_put(q, P(1)), 0);
    assert_int_equal(tw_queue_try_put(q, P(2)), 0);
    assert_true(tw_queue_full(q));
    assert_int_equal(tw_queue_try_put(q, P(3)), TW_EFULL);
    assert_int_equal(tw_queue_size(q), 2);
    assert_ptr_equal(get_ok(q), P(1));
    assert_int_equal(tw_queue_try_put(q, P(3)), 0);
    assert_ptr_equal(get_ok(q), P(2));
    assert_ptr_equal(get_ok(q), P(3));
    destroy_checked(q);

    /* Unbounded: never full. */
    q = make_queue(TW_QUEUE_LIFO, 0, NULL);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(tw_queue_try_put(q, P(i)), 0);
    assert_false(tw_queue_full(q));
    assert_int_equal(tw_queue_size(q), 1000);
    destroy_checked(q);
}

static void check_elapsed(double t0, double asked, const char *what)
{
    double elapsed = tw_test_now() - t0;
    if (elapsed < asked)
        fail_msg("%s gave up after %.9f s, asked for %.9f s", what, elapsed, asked);
}

static void test_queue_timeouts(void **state)
{
    tw_queue *q;
    void *item = NULL;
    double t0;
    (void)state;

    q = make_queue(TW_QUEUE_FIFO, 1, NULL);

    /* Timeout 0 does not block, and is a timeout, not EEMPTY / EFULL. */
    assert_int_equal(tw_queue_get_timeout(q, &item, 0.0), TW_ETIMEDOUT);
    t0 = tw_test_now();
    assert_int_equal(tw_queue_get_timeout(q, &item, SHORT_TIMEOUT), TW_ETIMEDOUT);
    check_elapsed(t0, SHORT_TIMEOUT, "get_timeout");

    assert_int_equal(tw_queue_put_timeout(q, P(1), 0.0), 0);
    assert_int_equal(tw_queue_put_timeout(q, P(2), 0.0), TW_ETIMEDOUT);
    t0 = tw_test_now();
    assert_int_equal(tw_queue_put_timeout(q, P(2), SHORT_TIMEOUT), TW_ETIMEDOUT);
    check_elapsed(t0, SHORT_TIMEOUT, "put_timeout");
    assert_int_equal(tw_queue_size(q), 1);

    /* One item put, not done. */
    assert_int_equal(tw_queue_join_timeout(q, 0.0), TW_ETIMEDOUT);
    t0 = tw_test_now();
    assert_int_equal(tw_queue_join_timeout(q, SHORT_TIMEOUT), TW_ETIMEDOUT);
    check_elapsed(t0, SHORT_TIMEOUT, "join_timeout");

    /* Negative = forever, which returns at once when nothing has to wait. */
    assert_int_equal(tw_queue_get_timeout(q, &item, -1.0), 0);
    assert_ptr_equal(item, P(1));
    assert_int_equal(tw_queue_put_timeout(q, P(3), -1.0), 0);
    assert_int_equal(tw_queue_get_timeout(q, &item, INFINITY), 0);
    assert_ptr_equal(item, P(3));
    assert_int_equal(tw_queue_task_done(q), 0);
    assert_int_equal(tw_queue_task_done(q), 0);
    assert_int_equal(tw_queue_join_timeout(q, -1.0), 0);
    assert_int_equal(tw_queue_join_timeout(q, 0.0), 0);

    /* A timed-out waiter took nothing with it. */
    assert_int_equal(tw_queue_put(q, P(4)), 0);
    assert_ptr_equal(get_ok(q), P(4));
    destroy_checked(q);
}

/* A timed get and a timed put woken by the other side long before the end. */
static void test_queue_timed_waiters_woken(void **state)
{
    tw_queue *q;
    op o;
    (void)state;

    q = make_queue(TW_QUEUE_FIFO, 1, NULL);
    op_start(&o, q, OP_GET_TIMEOUT, NULL);
    op_expect_blocked(&o);
    assert_int_equal(tw_queue_put(q, P(11)), 0);
    assert_int_equal(op_finish(&o), 0);
    assert_ptr_equal(o.item, P(11));

    assert_int_equal(tw_queue_put(q, P(12)), 0);
    op_start(&o, q, OP_PUT_TIMEOUT, P(13));
    op_expect_blocked(&o);
    assert_ptr_equal(get_ok(q), P(12));
    assert_int_equal(op_finish(&o), 0);
    assert_ptr_equal(get_ok(q), P(13));
    destroy_checked(q);
}

/* ==== blocking ================================================================ */

static void test_queue_put_blocks_until_get(void **state)
{
    (void)state;
    for (size_t k = 0; k < 3; k++) {
        tw_queue *q = make_queue(KINDS[k], 2, NULL);
        op o;
        assert_int_equal(tw_queue_put(q, P(ITEM(1, 1))), 0);
        assert_int_equal(tw_queue_put(q, P(ITEM(2, 2))), 0);
        op_start(&o, q, OP_PUT, P(ITEM(0, 3)));
        op_expect_blocked(&o);
        assert_int_equal(tw_queue_size(q), 2);
        void *first = get_ok(q);
        assert_int_equal(op_finish(&o), 0);
        assert_int_equal(tw_queue_size(q), 2);
        void *a = get_ok(q), *b = get_ok(q);
        switch (KINDS[k]) {
        case TW_QUEUE_FIFO:
            assert_int_equal(U(first), ITEM(1, 1));
            assert_int_equal(U(a), ITEM(2, 2));
            assert_int_equal(U(b), ITEM(0, 3));
            break;
        case TW_QUEUE_LIFO:
            assert_int_equal(U(first), ITEM(2, 2));
            assert_int_equal(U(a), ITEM(0, 3));
            assert_int_equal(U(b), ITEM(1, 1));
            break;
        default:
            assert_int_equal(U(first), ITEM(1, 1));
            assert_int_equal(U(a), ITEM(0, 3));
            assert_int_equal(U(b), ITEM(2, 2));
            break;
        }
        destroy_checked(q);
    }
}

static void test_queue_get_blocks_until_put(void **state)
{
    tw_queue *q;
    op o;
    (void)state;

    q = make_queue(TW_QUEUE_FIFO, 0, NULL);
    op_start(&o, q, OP_GET, NULL);
    op_expect_blocked(&o);
    assert_int_equal(tw_queue_put(q, P(42)), 0);
    assert_int_equal(op_finish(&o), 0);
    assert_ptr_equal(o.item, P(42));
    assert_true(tw_queue_empty(q));
    destroy_checked(q);
}

/* Several getters, then several putters, blocked at once: each put wakes a
 * getter and each get a putter, and nothing is lost or duplicated. */
static void test_queue_many_waiters(void **state)
{
    enum { N = 4 };
    tw_queue *q;
    op o[N];
    bool seen[N + 1];
    (void)state;

    q = make_queue(TW_QUEUE_FIFO, 1, NULL);
    for (int i = 0; i < N; i++)
        op_start(&o[i], q, i % 2 ? OP_GET : OP_GET_TIMEOUT, NULL);
    for (int i = 0; i < N; i++)
        op_expect_blocked(&o[i]);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < N; i++)
        assert_int_equal(tw_queue_put(q, P(i + 1)), 0); /* bounded 1: waits for a getter */
    for (int i = 0; i < N; i++) {
        assert_int_equal(op_finish(&o[i]), 0);
        assert_true(U(o[i].item) >= 1 && U(o[i].item) <= N);
        assert_false(seen[U(o[i].item)]);
        seen[U(o[i].item)] = true;
    }
    assert_true(tw_queue_empty(q));

    assert_int_equal(tw_queue_put(q, P(100)), 0);
    for (int i = 0; i < N; i++)
        op_start(&o[i], q, i % 2 ? OP_PUT : OP_PUT_TIMEOUT, P(i + 1));
    for (int i = 0; i < N; i++)
        op_expect_blocked(&o[i]);
    memset(seen, 0, sizeof seen);
    assert_ptr_equal(get_ok(q), P(100));
    for (int i = 0; i < N; i++) {
        void *item = NULL;
        assert_int_equal(tw_queue_get_timeout(q, &item, HANG_LIMIT), 0);
        assert_true(U(item) >= 1 && U(item) <= N);
        assert_false(seen[U(item)]);
        seen[U(item)] = true;
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(op_finish(&o[i]), 0);
    assert_true(tw_queue_empty(q));
    destroy_checked(q);
}

/* ==== task_done and join ======================================================= */

static void test_queue_task_done_join(void **state)
{
    enum { N = 3 };
    tw_queue *q;
    op o[N];
    size_t done = 0;
    (void)state;

    q = make_queue(TW_QUEUE_FIFO, 0, NULL);
    assert_int_equal(tw_queue_join(q), 0); /* nothing put */
    assert_int_equal(tw_queue_task_done(q), TW_EOVERFLOW);
    assert_int_equal(tw_queue_join_timeout(q, 0.0), 0);

    for (int i = 0; i < 3; i++)
        assert_int_equal(tw_queue_put(q, P(i)), 0);
    /* Each joiner reads `done` as it returns: it must see the last step. */
    for (int i = 0; i < N; i++)
        op_start_with(&o[i], q, i % 2 ? OP_JOIN_TIMEOUT : OP_JOIN, NULL, &done);
    for (int i = 0; i < N; i++)
        op_expect_blocked(&o[i]);

    for (int i = 0; i < 3; i++) {
        assert_ptr_equal(get_ok(q), P(i));
        if (i < 2) {
            __atomic_store_n(&done, (size_t)i + 1, __ATOMIC_RELEASE);
            assert_int_equal(tw_queue_task_done(q), 0);
            for (int j = 0; j < N; j++)
                op_expect_blocked(&o[j]);
        }
    }
    /* Still blocked with the queue empty: join waits for task_done, not get. */
    assert_int_equal(tw_queue_join_timeout(q, 0.0), TW_ETIMEDOUT);
    __atomic_store_n(&done, 3, __ATOMIC_RELEASE);
    assert_int_equal(tw_queue_task_done(q), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(op_finish(&o[i]), 0);
        assert_int_equal(o[i].progress_seen, 3); /* returned after the last task_done */
    }

    /* Once more than put: refused, and nothing changes. */
    assert_int_equal(tw_queue_task_done(q), TW_EOVERFLOW);
    assert_int_equal(tw_queue_join_timeout(q, 0.0), 0);
    assert_int_equal(tw_queue_put(q, P(9)), 0);
    assert_int_equal(tw_queue_join_timeout(q, 0.0), TW_ETIMEDOUT);
    /* As in Python, task_done counts against puts: an item still queued may
     * be marked done. */
    assert_int_equal(tw_queue_task_done(q), 0);
    assert_int_equal(tw_queue_task_done(q), TW_EOVERFLOW);
    assert_int_equal(tw_queue_join(q), 0);
    assert_int_equal(tw_queue_size(q), 1);
    destroy_checked(q);
}

/* ==== shutdown =============================================================== */

static void test_queue_shutdown_drains(void **state)
{
    (void)state;
    for (size_t k = 0; k < 3; k++) {
        recorder rec;
        tw_queue *q = make_queue(KINDS[k], 0, &rec);
        void *item = NULL;
        for (uintptr_t i = 1; i <= 3; i++)
            assert_int_equal(tw_queue_put(q, P(ITEM(i, i))), 0);
        assert_int_equal(tw_queue_shutdown(q, false), 0);
        assert_int_equal(tw_queue_shutdown(q, false), 0); /* twice is fine */

        /* Every put fails at once, even with room. */
        assert_int_equal(tw_queue_put(q, P(9)), TW_ESHUTDOWN);
        assert_int_equal(tw_queue_try_put(q, P(9)), TW_ESHUTDOWN);
        assert_int_equal(tw_queue_put_timeout(q, P(9), 1.0), TW_ESHUTDOWN);
        assert_int_equal(tw_queue_size(q), 3);

        /* Gets drain, in order, then fail instead of blocking. */
        for (int i = 0; i < 3; i++) {
            uintptr_t want = KINDS[k] == TW_QUEUE_LIFO ? ITEM(3 - i, 3 - i) : ITEM(i + 1, i + 1);
            switch (i) {
            case 0:
                assert_int_equal(tw_queue_get(q, &item), 0);
                break;
            case 1:
                assert_int_equal(tw_queue_get_timeout(q, &item, 1.0), 0);
                break;
            default:
                assert_int_equal(tw_queue_try_get(q, &item), 0);
                break;
            }
            assert_int_equal(U(item), want);
        }
        item = P(0x77);
        assert_int_equal(tw_queue_get(q, &item), TW_ESHUTDOWN);
        assert_int_equal(tw_queue_try_get(q, &item), TW_ESHUTDOWN);
        assert_int_equal(tw_queue_get_timeout(q, &item, 1.0), TW_ESHUTDOWN);
        assert_int_equal(tw_queue_get_timeout(q, &item, -1.0), TW_ESHUTDOWN);
        assert_ptr_equal(item, P(0x77));

        /* task_done and join still work. */
        assert_int_equal(tw_queue_join_timeout(q, 0.0), TW_ETIMEDOUT);
        for (int i = 0; i < 3; i++)
            assert_int_equal(tw_queue_task_done(q), 0);
        assert_int_equal(tw_queue_task_done(q), TW_EOVERFLOW);
        assert_int_equal(tw_queue_join(q), 0);
        destroy_checked(q);
        assert_int_equal(rec.n, 0); /* a soft shutdown drops nothing */
    }
}

static void test_queue_shutdown_wakes_putters(void **state)
{
    enum { N = 3 };
    tw_queue *q;
    op o[N];
    (void)state;

    q = make_queue(TW_QUEUE_FIFO, 1, NULL);
    assert_int_equal(tw_queue_put(q, P(1)), 0);
    for (int i = 0; i < N; i++)
        op_start(&o[i], q, i % 2 ? OP_PUT_TIMEOUT : OP_PUT, P(i + 2));
    for (int i = 0; i < N; i++)
        op_expect_blocked(&o[i]);
    assert_int_equal(tw_queue_shutdown(q, false), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(op_finish(&o[i]), TW_ESHUTDOWN);
    /* The item already in stays to be got. */
    assert_int_equal(tw_queue_size(q), 1);
    assert_ptr_equal(get_ok(q), P(1));
    void *item;
    assert_int_equal(tw_queue_try_get(q, &item), TW_ESHUTDOWN);
    destroy_checked(q);
}

static void test_queue_shutdown_wakes_getters(void **state)
{
    enum { N = 4 };
    (void)state;
    for (int immediate = 0; immediate < 2; immediate++) {
        tw_queue *q = make_queue(TW_QUEUE_FIFO, 0, NULL);
        op o[N];
        for (int i = 0; i < N; i++)
            op_start(&o[i], q, i % 2 ? OP_GET_TIMEOUT : OP_GET, P(0x99));
        for (int i = 0; i < N; i++)
            op_expect_blocked(&o[i]);
        assert_int_equal(tw_queue_shutdown(q, immediate), 0);
        for (int i = 0; i < N; i++) {
            assert_int_equal(op_finish(&o[i]), TW_ESHUTDOWN);
            assert_ptr_equal(o[i].item, P(0x99)); /* nothing written */
        }
        destroy_checked(q);
    }
}

static void test_queue_shutdown_immediate(void **state)
{
    (void)state;
    for (size_t k = 0; k < 3; k++) {
        recorder rec;
        tw_queue *q = make_queue(KINDS[k], 0, &rec);
        void *item = P(0x33);
        uintptr_t keys[] = {5, 2, 9, 2, 7, 1};
        enum { N = 6 };
        model m;
        op j;

        memset(&m, 0, sizeof m);
        m.kind = KINDS[k];
        for (uint32_t i = 0; i < N; i++) {
            assert_int_equal(tw_queue_put(q, P(ITEM(keys[i], i))), 0);
            model_put(&m, ITEM(keys[i], i));
        }
        /* One item got and not yet done: it keeps the joiner waiting. */
        assert_int_equal(U(get_ok(q)), model_get(&m));
        op_start(&j, q, OP_JOIN, NULL);
        op_expect_blocked(&j);

        rec.q = q; /* drop looks at the queue: it runs without the lock */
        assert_int_equal(tw_queue_shutdown(q, true), 0);
        /* Exactly the remaining items, each once, in the order get would
         * have returned them. */
        assert_int_equal(rec.n, N - 1);
        for (size_t i = 0; i < rec.n; i++)
            assert_int_equal(rec.items[i], model_get(&m));
        assert_int_equal(rec.sizes_seen, 0); /* the queue was already empty */
        assert_int_equal(rec.put_rc, TW_ESHUTDOWN);

        assert_int_equal(tw_queue_size(q), 0);
        assert_int_equal(tw_queue_get(q, &item), TW_ESHUTDOWN);
        assert_int_equal(tw_queue_try_get(q, &item), TW_ESHUTDOWN);
        assert_int_equal(tw_queue_put(q, P(1)), TW_ESHUTDOWN);
        assert_ptr_equal(item, P(0x33));

        /* The dropped items are done; the got one is not. */
        op_expect_blocked(&j);
        assert_int_equal(tw_queue_task_done(q), 0);
        assert_int_equal(op_finish(&j), 0);
        assert_int_equal(tw_queue_task_done(q), TW_EOVERFLOW);

        /* Again: nothing left to drop. */
        rec.q = NULL;
        assert_int_equal(tw_queue_shutdown(q, true), 0);
        assert_int_equal(tw_queue_shutdown(q, false), 0); /* does not downgrade */
        assert_int_equal(tw_queue_get(q, &item), TW_ESHUTDOWN);
        assert_int_equal(rec.n, N - 1);
        destroy_checked(q);
        assert_int_equal(rec.n, N - 1);
    }
}

/* An immediate shutdown releases joiners waiting on items still queued. */
static void test_queue_shutdown_immediate_releases_joiners(void **state)
{
    enum { N = 3 };
    recorder rec;
    tw_queue *q;
    op o[N];
    (void)state;

    q = make_queue(TW_QUEUE_FIFO, 2, &rec);
    assert_int_equal(tw_queue_put(q, P(1)), 0);
    assert_int_equal(tw_queue_put(q, P(2)), 0);
    /* The joiners look at the drop count as they return: both drops ran
     * before they were released. */
    op_start_with(&o[0], q, OP_JOIN, NULL, &rec.n);
    op_start_with(&o[1], q, OP_JOIN_TIMEOUT, NULL, &rec.n);
    op_start(&o[2], q, OP_PUT, P(3)); /* blocked: full */
    for (int i = 0; i < N; i++)
        op_expect_blocked(&o[i]);
    assert_int_equal(tw_queue_shutdown(q, true), 0);
    assert_int_equal(op_finish(&o[0]), 0);
    assert_int_equal(op_finish(&o[1]), 0);
    assert_int_equal(o[0].progress_seen, 2);
    assert_int_equal(o[1].progress_seen, 2);
    assert_int_equal(op_finish(&o[2]), TW_ESHUTDOWN);
    assert_int_equal(rec.n, 2);
    assert_int_equal(rec.items[0], 1);
    assert_int_equal(rec.items[1], 2);
    assert_int_equal(tw_queue_join_timeout(q, 0.0), 0);
    destroy_checked(q);
    assert_int_equal(rec.n, 2);
}

/* A soft shutdown upgraded to immediate drops what the getters left. */
static void test_queue_shutdown_upgrade(void **state)
{
    recorder rec;
    tw_queue *q;
    void *item;
    (void)state;

    q = make_queue(TW_QUEUE_FIFO, 0, &rec);
    for (int i = 1; i <= 4; i++)
        assert_int_equal(tw_queue_put(q, P(i)), 0);
    assert_int_equal(tw_queue_shutdown(q, false), 0);
    assert_ptr_equal(get_ok(q), P(1));
    assert_int_equal(rec.n, 0);
    assert_int_equal(tw_queue_shutdown(q, true), 0);
    assert_int_equal(rec.n, 3);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(rec.items[i], i + 2);
    assert_int_equal(tw_queue_try_get(q, &item), TW_ESHUTDOWN);
    assert_int_equal(tw_queue_task_done(q), 0); /* for item 1 */
    assert_int_equal(tw_queue_join_timeout(q, 0.0), 0);
    destroy_checked(q);
    assert_int_equal(rec.n, 3);

    /* No drop function: the items simply go. */
    q = make_queue(TW_QUEUE_LIFO, 0, NULL);
    for (int i = 1; i <= 40; i++)
        assert_int_equal(tw_queue_put(q, P(i)), 0);
    assert_int_equal(tw_queue_shutdown(q, true), 0);
    assert_int_equal(tw_queue_size(q), 0);
    assert_int_equal(tw_queue_join(q), 0);
    destroy_checked(q);
}

/* is_shutdown (Python 3.13's Queue.is_shutdown): false until shutdown, true
 * after either kind, whatever is left in the queue. */
static void test_queue_is_shutdown(void **state)
{
    recorder rec;
    tw_queue *q;
    (void)state;

    assert_false(tw_queue_is_shutdown(NULL));
    for (int immediate = 0; immediate <= 1; immediate++) {
        q = make_queue(TW_QUEUE_FIFO, 2, &rec);
        assert_false(tw_queue_is_shutdown(q));
        assert_int_equal(tw_queue_put(q, P(1)), 0);
        assert_false(tw_queue_is_shutdown(q));
        assert_int_equal(tw_queue_shutdown(q, immediate), 0);
        assert_true(tw_queue_is_shutdown(q));
        assert_int_equal(tw_queue_shutdown(q, false), 0); /* again: still shut down */
        assert_true(tw_queue_is_shutdown(q));
        if (!immediate)
            assert_ptr_equal(get_ok(q), P(1)); /* drained, still shut down */
        assert_true(tw_queue_is_shutdown(q));
        if (!immediate)
            assert_int_equal(tw_queue_task_done(q), 0);
        destroy_checked(q);
    }
}

static void test_queue_destroy_drops(void **state)
{
    (void)state;
    for (size_t k = 0; k < 3; k++) {
        recorder rec;
        tw_queue *q = make_queue(KINDS[k], 0, &rec);
        model m;
        memset(&m, 0, sizeof m);
        m.kind = KINDS[k];
        /* Wrap the ring first, so destroy walks a wrapped store. */
        for (uint32_t i = 0; i < 20; i++) {
            assert_int_equal(tw_queue_put(q, P(ITEM(i % 3, i))), 0);
            model_put(&m, ITEM(i % 3, i));
        }
        for (int i = 0; i < 12; i++)
            assert_int_equal(U(get_ok(q)), model_get(&m));
        for (uint32_t i = 20; i < 30; i++) {
            assert_int_equal(tw_queue_put(q, P(ITEM(i % 3, i))), 0);
            model_put(&m, ITEM(i % 3, i));
        }
        size_t left = m.n;
        destroy_checked(q);
        assert_int_equal(rec.n, left);
        for (size_t i = 0; i < left; i++)
            assert_int_equal(rec.items[i], model_get(&m));
    }
    /* An unused queue, and one without a drop function. */
    tw_queue *q = make_queue(TW_QUEUE_PRIORITY, 3, NULL);
    destroy_checked(q);
    q = make_queue(TW_QUEUE_FIFO, 0, NULL);
    assert_int_equal(tw_queue_put(q, P(1)), 0);
    destroy_checked(q);
}

/* ==== allocation failure ========================================================= */

typedef struct failing {
    size_t calls;    /* alloc and realloc calls so far */
    size_t fail_at;  /* the call that fails (1-based); 0 = none */
    size_t failures;
} failing;

static void *failing_alloc(void *ctx, size_t size)
{
    failing *f = ctx;
    if (++f->calls == f->fail_at) {
        f->failures++;
        return NULL;
    }
    return malloc(size);
}

static void *failing_realloc(void *ctx, void *ptr, size_t old_size, size_t new_size)
{
    failing *f = ctx;
    (void)old_size;
    if (++f->calls == f->fail_at) {
        f->failures++;
        return NULL;
    }
    return realloc(ptr, new_size);
}

static void failing_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    (void)size;
    free(ptr);
}

/* For each kind and bound: fail allocation 1, 2, ... of create + puts that
 * grow the store several times (with the ring wrapped), until a run sees no
 * failure. Each failing call must be TW_ENOMEM with the queue unchanged; the
 * same put then succeeds, the contents come out in order, and destroy leaves
 * nothing allocated. */
static void test_queue_alloc_failure(void **state)
{
    static model m;
    static const size_t maxsizes[] = {0, 200};
    enum { ITEMS = 300 };
    (void)state;

    for (size_t k = 0; k < 3; k++) {
        for (size_t s = 0; s < 2; s++) {
            size_t runs_with_failure = 0;
            for (size_t n = 1;; n++) {
                failing f = {0, n, 0};
                tw_allocator a = {failing_alloc, failing_realloc, failing_free, &f};
                tw_queue_config cfg;
                tw_queue *q = NULL;
                size_t maxsize = maxsizes[s];
                int rc, fails = 0;

                assert_int_equal(tw_set_allocator(&a), 0);
                memset(&cfg, 0, sizeof cfg);
                cfg.kind = KINDS[k];
                cfg.maxsize = maxsize;
                cfg.cmp = cmp_key;
                rc = tw_queue_create_with(&cfg, &q);
                if (rc != 0) {
                    assert_int_equal(rc, TW_ENOMEM);
                    assert_null(q);
                    assert_int_equal(f.failures, 1);
                    assert_int_equal(tw_allocator_live(), 0);
                    assert_int_equal(tw_set_allocator(NULL), 0);
                    runs_with_failure++;
                    continue;
                }
                memset(&m, 0, sizeof m);
                m.kind = KINDS[k];
                for (uint32_t i = 0; i < ITEMS; i++) {
                    uintptr_t v = ITEM(i % 5, i);
                    size_t before = m.n;
                    /* Now and then take a few, so the ring wraps before it grows. */
                    if (i % 16 == 9) {
                        for (int t = 0; t < 3; t++)
                            assert_int_equal(U(get_ok(q)), model_get(&m));
                        before = m.n;
                    }
                    if (maxsize && m.n == maxsize) {
                        assert_int_equal(U(get_ok(q)), model_get(&m));
                        before = m.n;
                    }
                    rc = tw_queue_try_put(q, P(v));
                    if (rc != 0) {
                        assert_int_equal(rc, TW_ENOMEM);
                        assert_int_equal(tw_queue_size(q), before);
                        fails++;
                        rc = tw_queue_try_put(q, P(v)); /* still usable */
                    }
                    assert_int_equal(rc, 0);
                    model_put(&m, v);
                }
                assert_int_equal((size_t)fails, f.failures);
                assert_int_equal(tw_queue_size(q), m.n);
                while (m.n > 0)
                    assert_int_equal(U(get_ok(q)), model_get(&m));
                assert_int_equal(tw_queue_put(q, P(1)), 0);
                assert_ptr_equal(get_ok(q), P(1));
                destroy_checked(q);
                assert_int_equal(tw_set_allocator(NULL), 0);
                if (f.failures == 0)
                    break;
                runs_with_failure++;
            }
            /* create, the first buffer, and at least a few doublings. */
            if (runs_with_failure < 5)
                fail_msg("%s maxsize %zu: only %zu allocations to fail", kind_name(KINDS[k]),
                         maxsizes[s], runs_with_failure);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queue_bad_arguments),
        cmocka_unit_test(test_queue_fifo_lifo_order),
        cmocka_unit_test(test_queue_priority_ties_fifo),
        cmocka_unit_test(test_queue_model),
        cmocka_unit_test(test_queue_try_forms),
        cmocka_unit_test(test_queue_timeouts),
        cmocka_unit_test(test_queue_timed_waiters_woken),
        cmocka_unit_test(test_queue_put_blocks_until_get),
        cmocka_unit_test(test_queue_get_blocks_until_put),
        cmocka_unit_test(test_queue_many_waiters),
        cmocka_unit_test(test_queue_task_done_join),
        cmocka_unit_test(test_queue_shutdown_drains),
        cmocka_unit_test(test_queue_shutdown_wakes_putters),
        cmocka_unit_test(test_queue_shutdown_wakes_getters),
        cmocka_unit_test(test_queue_shutdown_immediate),
        cmocka_unit_test(test_queue_shutdown_immediate_releases_joiners),
        cmocka_unit_test(test_queue_shutdown_upgrade),
        cmocka_unit_test(test_queue_is_shutdown),
        cmocka_unit_test(test_queue_destroy_drops),
        cmocka_unit_test(test_queue_alloc_failure),
    };
    return cmocka_run_group_tests_name("queue", tests, NULL, NULL);
}
