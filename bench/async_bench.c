/*
 * async_bench.c — twine's coroutines (twine/async.h) against swapcontext and
 * against twine's own callback style; bench/py_async.py runs the Deferred
 * workloads with Twisted's inlineCallbacks.
 *
 *   async_switch           one suspend and one resume of a coroutine, 10^7
 *                          times: "twine suspend+resume" is the pair of
 *                          switches every await of a pending Deferred makes
 *                          (the library's resume and suspend, sanitizer hooks
 *                          and all, without the Deferred around them);
 *                          "swapcontext" is glibc's, two calls per pair, 10^6
 *   async_await_ready      an already-fired Deferred's result taken, 10^6
 *                          times: tw_deferred_succeed, then
 *                          "twine add_callback": tw_deferred_add_callback of a
 *                          callback that takes the result, tw_deferred_unref;
 *                          "twine await": tw_await inside one coroutine
 *   async_await_pending    the same with a Deferred that fires later, 10^6
 *                          times: "twine add_callback": create, add the
 *                          callback, fire, unref; "twine await": the coroutine
 *                          creates it and awaits it (suspends), the driver
 *                          fires it (the coroutine resumes), unref
 *   async_network_counter  seed 000's NetworkCounter.next() as the examples
 *                          run it: two overlapping calls, then the "network"
 *                          (a tw_fake_clock) completes the records they sent
 *                          RECORD_DELAY seconds later; 10^6 calls. "twine
 *                          callbacks": tw_dlock_run of the callback version
 *                          (examples/network_counter.c); "twine await":
 *                          tw_async of the coroutine version with
 *                          TW_AWAIT_WITH (examples/network_counter_async.c).
 *                          The same network serves both.
 *   async_network_counter_bare  the same over a network that costs nothing:
 *                          a FIFO of record Deferreds the driver fires,
 *                          oldest first, until none is left. What is left is
 *                          the cost of the two styles alone.
 *
 * The figure is ns per operation (a pair of switches, an await, a next()),
 * the median of BENCH_REPS runs, the implementations of a workload taking
 * turns (A, B, A, B, ...). The extra metric `cpu` is the same run's thread
 * CPU time per operation: on a shared machine, wall time also counts the
 * time other processes had the CPU. Checks: every run counts its switches, every
 * await and callback checks that it got the value its Deferred fired with,
 * every next() must answer its position (1, 2, 3, ... in call order: the lock
 * serializes them), and a run is invalid if twine reported anything through
 * the diagnostic hook, left a block allocated or a coroutine running. A
 * failed check stops the program with exit status 2 and no figure.
 *
 * usage: twine_bench_async [--csv PATH] [--scale F] [--only WORKLOAD[,...]] [--impl NAME[,...]]
 */
#define _GNU_SOURCE
#include "bench_util.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <twine/async.h>
#include <ucontext.h>

#include "async/coro.h" /* the coroutine core's resume and suspend, for async_switch */

#define N_SWITCH 10000000L
#define N_SWAPCONTEXT 1000000L
#define N_AWAIT 1000000L
#define N_COUNTER 1000000L

#define CHECK_TW(what, expr)                                                                   \
    do {                                                                                       \
        int rc_ = (expr);                                                                      \
        if (__builtin_expect(rc_ != 0, 0))                                                     \
            bench_die_tw(what, rc_);                                                           \
    } while (0)

static long ops;  /* operations a run did (switches, awaits, calls) */
static long hits; /* ... that saw the value they had to */

/* ==== async_switch ============================================================== */

static volatile bool sw_stop;

static tw_result sw_body(void *arg)
{
    (void)arg;
    for (;;) {
        ops++;
        tw__co_suspend(tw__co_current);
        if (sw_stop)
            return tw_result_none();
    }
}

static double run_switch_twine(long n)
{
    tw__co *co = tw__co_new(sw_body, NULL, __FILE__, __LINE__);
    double t0, t1;
    if (!co)
        bench_die("tw__co_new", "no stack");
    sw_stop = false;
    tw__co_start(co); /* it suspends at once */
    ops = 0;
    t0 = bench_now();
    for (long i = 0; i < n; i++)
        tw__co_resume(co);
    t1 = bench_now();
    hits = ops;
    sw_stop = true;
    tw__co_resume(co);
    if (!tw__co_finished(co))
        bench_die("async_switch", "the coroutine did not finish");
    tw__co_free(co);
    return t1 - t0;
}

static ucontext_t uc_main, uc_co;

static void uc_body(void)
{
    for (;;) {
        ops++;
        swapcontext(&uc_co, &uc_main);
    }
}

static double run_switch_ucontext(long n)
{
    size_t size = 256 * 1024;
    void *stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    double t0, t1;
    if (stack == MAP_FAILED)
        bench_die("mmap", "no stack for swapcontext");
    getcontext(&uc_co);
    uc_co.uc_stack.ss_sp = stack;
    uc_co.uc_stack.ss_size = size;
    uc_co.uc_link = NULL;
    makecontext(&uc_co, uc_body, 0);
    swapcontext(&uc_main, &uc_co); /* starts it: it switches back at once */
    ops = 0;
    t0 = bench_now();
    for (long i = 0; i < n; i++)
        swapcontext(&uc_main, &uc_co);
    t1 = bench_now();
    hits = ops;
    munmap(stack, size); /* the context is left suspended for good */
    return t1 - t0;
}

/* ==== async_await_ready, async_await_pending ========================================= */

/* Takes the result, as an await does: the Deferred goes on with none. */
static tw_result take(tw_result r, void *arg)
{
    *(tw_result *)arg = r;
    return tw_result_none();
}

static double run_ready_callback(long n)
{
    double t0 = bench_now();
    for (long i = 1; i <= n; i++) {
        tw_deferred *d;
        tw_result r = tw_result_none();
        CHECK_TW("tw_deferred_succeed", tw_deferred_succeed(&d, (void *)(intptr_t)i, NULL));
        CHECK_TW("tw_deferred_add_callback", tw_deferred_add_callback(d, take, &r));
        hits += (intptr_t)r.ptr == i;
        ops++;
        tw_deferred_unref(d);
    }
    return bench_now() - t0;
}

static tw_result ready_co(void *arg)
{
    long n = *(long *)arg;
    for (long i = 1; i <= n; i++) {
        tw_deferred *d;
        CHECK_TW("tw_deferred_succeed", tw_deferred_succeed(&d, (void *)(intptr_t)i, NULL));
        tw_result r = tw_await(d);
        hits += (intptr_t)r.ptr == i;
        ops++;
    }
    return tw_result_none();
}

static double run_ready_await(long n)
{
    tw_deferred *out;
    double t0 = bench_now();
    CHECK_TW("tw_async", tw_async(ready_co, &n, &out));
    double t1 = bench_now();
    if (!tw_deferred_called(out))
        bench_die("async_await_ready", "the coroutine did not finish");
    tw_deferred_unref(out);
    return t1 - t0;
}

static double run_pending_callback(long n)
{
    double t0 = bench_now();
    for (long i = 1; i <= n; i++) {
        tw_deferred *d;
        tw_result r = tw_result_none();
        CHECK_TW("tw_deferred_create", tw_deferred_create(&d, NULL, NULL));
        CHECK_TW("tw_deferred_add_callback", tw_deferred_add_callback(d, take, &r));
        CHECK_TW("tw_deferred_callback",
                 tw_deferred_callback(d, tw_result_value((void *)(intptr_t)i, NULL)));
        hits += (intptr_t)r.ptr == i;
        ops++;
        tw_deferred_unref(d);
    }
    return bench_now() - t0;
}

static tw_deferred *pend; /* the Deferred the coroutine waits on (the driver's reference) */

static tw_result pending_co(void *arg)
{
    long n = *(long *)arg;
    for (long i = 1; i <= n; i++) {
        CHECK_TW("tw_deferred_create", tw_deferred_create(&pend, NULL, NULL));
        tw_result r = tw_await(tw_deferred_ref(pend));
        hits += (intptr_t)r.ptr == i;
        ops++;
    }
    pend = NULL;
    return tw_result_none();
}

static double run_pending_await(long n)
{
    tw_deferred *out;
    double t0 = bench_now();
    CHECK_TW("tw_async", tw_async(pending_co, &n, &out));
    for (long i = 1; i <= n; i++) {
        tw_deferred *d = pend;
        CHECK_TW("tw_deferred_callback",
                 tw_deferred_callback(d, tw_result_value((void *)(intptr_t)i, NULL)));
        tw_deferred_unref(d);
    }
    double t1 = bench_now();
    if (!tw_deferred_called(out))
        bench_die("async_await_pending", "the coroutine did not finish");
    tw_deferred_unref(out);
    return t1 - t0;
}

/* ==== async_network_counter ============================================================ */

typedef struct network_counter {
    intptr_t count;
    tw_dlock lock;
} network_counter;

/* The network, one of two:
 *  - bare: a FIFO of records in flight that the driver completes, oldest
 *    first, until none is left; nothing but the Deferreds themselves;
 *  - clock: as in examples/network_counter*.c, a record completes
 *    RECORD_DELAY seconds after it is sent on a tw_fake_clock, which the
 *    driver advances by one delay twice after each pair of calls (the
 *    second record is sent when the first completes). */
#define RECORD_DELAY 0.5

static struct {
    bool clock;            /* which network */
    tw_fake_clock *fc;
    tw_deferred *ring[64]; /* bare: records in flight */
    unsigned head, n;
} net;

static void record_done(void *arg)
{
    tw_deferred *d = arg;
    CHECK_TW("tw_deferred_callback", tw_deferred_callback(d, tw_result_none()));
    tw_deferred_unref(d); /* the network's reference */
}

static tw_deferred *record(intptr_t value)
{
    tw_deferred *d;
    (void)value; /* a real client would send it */
    CHECK_TW("tw_deferred_create", tw_deferred_create(&d, NULL, NULL));
    if (net.clock) {
        tw_clock_call *call;
        CHECK_TW("tw_clock_call_later", tw_clock_call_later(tw_fake_clock_clock(net.fc),
                                                            RECORD_DELAY, record_done,
                                                            tw_deferred_ref(d), &call));
        return d;
    }
    if (net.n == 64)
        bench_die("async_network_counter", "more than 64 records in flight");
    net.ring[(net.head + net.n++) % 64] = tw_deferred_ref(d);
    return d;
}

static void network_run(void)
{
    if (net.clock) { /* two records at most, one after the other */
        CHECK_TW("tw_fake_clock_advance", tw_fake_clock_advance(net.fc, RECORD_DELAY));
        CHECK_TW("tw_fake_clock_advance", tw_fake_clock_advance(net.fc, RECORD_DELAY));
        return;
    }
    while (net.n) {
        tw_deferred *d = net.ring[net.head];
        net.head = (net.head + 1) % 64;
        net.n--;
        record_done(d);
    }
}

/* The callback version: next_body in the lock, recorded() after the record. */
static tw_result recorded(tw_result ignored, void *arg)
{
    network_counter *c = arg;
    tw_result_drop(ignored);
    return tw_result_value((void *)c->count, NULL);
}

static tw_result next_body(void *arg)
{
    network_counter *c = arg;
    c->count += 1;
    tw_deferred *recording = record(c->count);
    CHECK_TW("tw_deferred_add_callback", tw_deferred_add_callback(recording, recorded, c));
    return tw_result_deferred(recording);
}

/* The coroutine version. */
static tw_result next_co(void *arg)
{
    network_counter *c = arg;
    int rc;
    TW_AWAIT_WITH(&c->lock, &rc) {
        c->count += 1;
        tw_result r = tw_await(record(c->count));
        if (tw_result_is_failure(r))
            return r;
        tw_result_drop(r);
        return tw_result_value((void *)c->count, NULL);
    }
    return tw_result_fail(rc, "no lock");
}

static intptr_t expect_answer;

static tw_result check_answer(tw_result r, void *arg)
{
    (void)arg;
    hits += tw_result_is_value(r) && (intptr_t)r.ptr == ++expect_answer;
    ops++;
    return r;
}

static double run_counter(long n, bool await_style, bool clock)
{
    network_counter c = {0, TW_DLOCK_INIT};
    double t0, t1;

    net.clock = clock;
    if (clock)
        CHECK_TW("tw_fake_clock_create", tw_fake_clock_create(&net.fc));
    expect_answer = 0;
    t0 = bench_now();
    for (long i = 0; i < n; i += 2) {
        tw_deferred *d[2];
        for (int k = 0; k < 2; k++) {
            if (await_style)
                CHECK_TW("tw_async", tw_async(next_co, &c, &d[k]));
            else
                CHECK_TW("tw_dlock_run", tw_dlock_run(&c.lock, next_body, &c, &d[k]));
            CHECK_TW("tw_deferred_add_callback", tw_deferred_add_callback(d[k], check_answer, NULL));
        }
        network_run();
        tw_deferred_unref(d[0]);
        tw_deferred_unref(d[1]);
    }
    t1 = bench_now();
    if (tw_dlock_locked(&c.lock) || tw_dlock_waiting(&c.lock))
        bench_die("async_network_counter", "the lock is held after the run");
    if (clock)
        CHECK_TW("tw_fake_clock_destroy", tw_fake_clock_destroy(net.fc));
    return t1 - t0;
}

static double run_counter_callbacks(long n)
{
    return run_counter(n, false, true);
}

static double run_counter_await(long n)
{
    return run_counter(n, true, true);
}

static double run_bare_callbacks(long n)
{
    return run_counter(n, false, false);
}

static double run_bare_await(long n)
{
    return run_counter(n, true, false);
}

/* ==== driver ============================================================================= */

struct impl {
    const char *name;
    long n;
    double (*run)(long n);
};

struct workload {
    const char *name;
    struct impl impls[2];
};

static const struct workload workloads[] = {
    {"async_switch",
     {{"twine suspend+resume", N_SWITCH, run_switch_twine},
      {"swapcontext", N_SWAPCONTEXT, run_switch_ucontext}}},
    {"async_await_ready",
     {{"twine add_callback", N_AWAIT, run_ready_callback},
      {"twine await", N_AWAIT, run_ready_await}}},
    {"async_await_pending",
     {{"twine add_callback", N_AWAIT, run_pending_callback},
      {"twine await", N_AWAIT, run_pending_await}}},
    {"async_network_counter",
     {{"twine callbacks", N_COUNTER, run_counter_callbacks},
      {"twine await", N_COUNTER, run_counter_await}}},
    {"async_network_counter_bare",
     {{"twine callbacks", N_COUNTER, run_bare_callbacks},
      {"twine await", N_COUNTER, run_bare_await}}},
};

/* The calling thread's CPU time, in seconds: what a run cost without the
 * time other processes had the CPU (the machine is shared). */
static double thread_cpu(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* One run, checked. Returns seconds; *cpu gets the thread's CPU seconds. */
static double run_once(const struct workload *w, const struct impl *im, long n, double *cpu)
{
    size_t live0 = tw_allocator_live();
    tw_async_stats st;
    double s, c0;

    ops = hits = 0;
    bench_watch(w->name);
    c0 = thread_cpu();
    s = im->run(n);
    *cpu = thread_cpu() - c0;
    bench_watch(NULL);
    bench_check_count(w->name, im->name, ops, n);
    bench_check_count(w->name, "(operations that saw the right value)", hits, n);
    bench_twine_check(w->name, live0);
    tw_async_stats_get(&st);
    bench_check_count(w->name, "(coroutines left running)", (long)st.running, 0);
    return s;
}

static void run_workload(const struct workload *w, const struct bench_args *a)
{
    double ns[2][BENCH_REPS], cpu[2][BENCH_REPS], c;
    long n[2];
    int k, rep;

    for (k = 0; k < 2; k++) {
        n[k] = bench_scaled(w->impls[k].n);
        n[k] += n[k] & 1; /* NetworkCounter calls come in pairs; the rest do not mind */
    }
    printf("%s: %ld / %ld operations, %d repetitions, taking turns\n", w->name, n[0], n[1],
           BENCH_REPS);
    fflush(stdout);
    for (k = 0; k < 2; k++)
        if (bench_listed(a->impl, w->impls[k].name))
            run_once(w, &w->impls[k], n[k] < 10000 ? n[k] : 10000, &c); /* warm-up */
    for (rep = 0; rep < BENCH_REPS; rep++)
        for (k = 0; k < 2; k++)
            if (bench_listed(a->impl, w->impls[k].name)) {
                ns[k][rep] = run_once(w, &w->impls[k], n[k], &c) * 1e9 / (double)n[k];
                cpu[k][rep] = c * 1e9 / (double)n[k];
            }
    for (k = 0; k < 2; k++) {
        if (!bench_listed(a->impl, w->impls[k].name))
            continue;
        bench_record(w->name, w->impls[k].name, "ns/op", false, ns[k], BENCH_REPS);
        bench_record_extra(w->name, w->impls[k].name, "cpu", "ns/op", cpu[k], BENCH_REPS);
        /* the figure the ≤ 20 ns target reads (bench/table.py) */
        if (w->impls[k].run == run_switch_twine)
            bench_record_extra(w->name, w->impls[k].name, "ns", "ns", ns[k], BENCH_REPS);
    }
}

int main(int argc, char **argv)
{
    struct bench_args args;

    bench_watchdog_init();
    if (!bench_parse_args(argc, argv, true, NULL,
                          "[--csv PATH] [--scale F] [--only WORKLOAD[,...]] [--impl NAME[,...]]",
                          &args))
        return 2;
    bench_twine_diag_init();
    printf("(coroutine switch: %s)\n", tw__co_switch_name());
    bench_open_csv(args.csv);
    bench_warm_up(0.2);
    for (int i = 0; i < BENCH_COUNT_OF(workloads); i++)
        if (bench_selected(args.only, workloads[i].name))
            run_workload(&workloads[i], &args);
    bench_close_csv();
    return 0;
}
