/*
 * deferred_bench.c — twine's Deferreds and DeferredLock; bench/py_deferred.py
 * runs the same workloads with Twisted.
 *
 *   deferred_chain              tw_deferred_create; 10 x tw_deferred_add_callback;
 *                               tw_deferred_callback with a value;
 *                               tw_deferred_unref; 10^6 times
 *   deferred_chain_fired_first  tw_deferred_create; tw_deferred_callback; 10 x
 *                               tw_deferred_add_callback (each runs at once);
 *                               tw_deferred_unref; 10^6 times
 *   deferred_lock               tw_dlock_run of a function that returns an
 *                               already-fired Deferred (tw_deferred_succeed);
 *                               the Deferred run returns is checked and
 *                               unreffed; 10^6 times
 *   deferred_nest_{outer,inner}_first_{1e4,1e5}
 *                               a nest of N + 1 Deferreds, N = 10^4 or 10^5:
 *                               d[i]'s first callback returns d[i+1], its
 *                               second adds 1 to the value. d[0..N-1] are
 *                               fired outermost first (d[0], d[1], ...) or
 *                               innermost first (d[N-1], d[N-2], ...), each
 *                               then waiting on the next, and d[N] last,
 *                               which unwinds the nest; then every Deferred
 *                               is unreffed. 10^5 links a run (10 nests of
 *                               10^4, or one of 10^5)
 *
 * The figure is ns per operation (one Deferred's life, one run, or one link
 * of a nest: everything a nest costs, from creating its Deferreds to freeing
 * them, divided by N), the median of BENCH_REPS timed runs. A nest's time is
 * linear in N when the figure is the same at 10^4 and 10^5.
 *
 * Checks. Every callback adds one to a counter and returns its input
 * unchanged; the tenth also checks that it received the value the Deferred
 * was fired with (a different one for every Deferred). The lock's function
 * counts its calls; every Deferred tw_dlock_run returns must have fired with
 * that function's value (tw_deferred_peek), and the lock must be free and
 * without waiters after the run. In a nest, every Deferred but the innermost
 * must wait on the next once fired, the adding callbacks must run N times,
 * and the outermost must end with the innermost's value plus N. Any diagnostic report (misuse, an unhandled
 * failure) and any block still allocated after a run (a leak) make the run
 * invalid as well: the program stops with exit status 2 and no figure.
 *
 * Allocations. A counting allocator (tw_set_allocator) is installed before
 * the first twine call and stays installed for every run, timed ones
 * included: it counts calls to alloc and realloc (and frees, for the leak
 * check) with plain increments and otherwise calls malloc/realloc/free, as
 * the default allocator does, through the same one indirect call. Its cost
 * in a timed run is one increment per allocation and per free.
 * --libc-alloc leaves the default allocator in place, to measure exactly that
 * cost (the allocs rows are then not written). The CSV gets `allocs` (alloc +
 * realloc calls per operation, over each timed run) and `frees` for each
 * workload. twine keeps a few freed Deferreds per thread for reuse, so in a
 * long run nearly every Deferred comes from that cache and `allocs` is close
 * to 0; `allocs_cold` is what one operation takes from the allocator with the
 * cache empty (tw_allocator_live gives the cached blocks back, and
 * run_once calls it before every run), i.e. every block the operation needs.
 *
 * usage: twine_bench_deferred [--csv PATH] [--scale F] [--only WORKLOAD[,...]] [--exact]
 *                             [--libc-alloc]
 *   --scale multiplies every iteration count (0.01 for a smoke run), --only
 *   selects workloads by name prefix, or by exact name with --exact (for perf:
 *   deferred_chain alone, without deferred_chain_fired_first).
 */
#define _GNU_SOURCE
#include "bench_util.h"

#include <stdint.h>
#include <stdlib.h>
#include <twine/deferred.h>

#define N_CHAIN 1000000L
#define N_LOCK 1000000L
#define N_NEST_LINKS 100000L /* per run, for every nest depth */
#define N_WARM_UP 10000L /* untimed operations before a workload's first run */
#define CALLBACKS 10     /* per Deferred: 9 steps and the final one */

#define CHECK_TW(what, expr)                                                                   \
    do {                                                                                       \
        int rc_ = (expr);                                                                      \
        if (__builtin_expect(rc_ != 0, 0))                                                     \
            bench_die_tw(what, rc_);                                                           \
    } while (0)

/* ---- the counting allocator ---------------------------------------------------
 * One thread uses twine here, so the counters are plain. */
static struct {
    long allocs; /* alloc and realloc calls */
    long frees;
} counted;
static bool counting;

static void *count_alloc(void *ctx, size_t size)
{
    (void)ctx;
    counted.allocs++;
    return malloc(size);
}

static void *count_realloc(void *ctx, void *ptr, size_t old_size, size_t new_size)
{
    (void)ctx;
    (void)old_size;
    counted.allocs++;
    return realloc(ptr, new_size);
}

static void count_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    (void)size;
    counted.frees++;
    free(ptr);
}

/* ==== deferred_chain, deferred_chain_fired_first ============================== */
static struct {
    long steps;       /* callbacks run */
    long hits;        /* final callbacks that saw the value fired */
    uintptr_t expect; /* the value the current Deferred is fired with */
} chain;

static tw_result chain_step(tw_result r, void *arg)
{
    (void)arg;
    chain.steps++;
    return r;
}

static tw_result chain_last(tw_result r, void *arg)
{
    (void)arg;
    chain.steps++;
    if (tw_result_is_value(r) && (uintptr_t)r.ptr == chain.expect)
        chain.hits++;
    return r;
}

static void chain_add(tw_deferred *d)
{
    int k;

    for (k = 0; k < CALLBACKS - 1; k++)
        CHECK_TW("tw_deferred_add_callback", tw_deferred_add_callback(d, chain_step, NULL));
    CHECK_TW("tw_deferred_add_callback", tw_deferred_add_callback(d, chain_last, NULL));
}

/* Values are 1..n, never NULL, with no drop function. */
static void chain_run(long n, bool fired_first)
{
    tw_deferred *d;
    long i;

    chain.steps = chain.hits = 0;
    for (i = 1; i <= n; i++) {
        CHECK_TW("tw_deferred_create", tw_deferred_create(&d, NULL, NULL));
        chain.expect = (uintptr_t)i;
        if (fired_first) {
            CHECK_TW("tw_deferred_callback",
                     tw_deferred_callback(d, tw_result_value((void *)(uintptr_t)i, NULL)));
            chain_add(d);
        } else {
            chain_add(d);
            CHECK_TW("tw_deferred_callback",
                     tw_deferred_callback(d, tw_result_value((void *)(uintptr_t)i, NULL)));
        }
        tw_deferred_unref(d);
    }
}

static void run_chain(long n)
{
    chain_run(n, false);
}

static void run_chain_fired_first(long n)
{
    chain_run(n, true);
}

static void check_chain(const char *workload, const char *impl, long n)
{
    bench_check_count(workload, impl, chain.steps, CALLBACKS * n);
    bench_check_count(workload, "twine Deferred (final callbacks on the right value)", chain.hits,
                      n);
}

/* ==== deferred_lock ========================================================== */
static struct {
    tw_dlock lock;
    long calls;       /* of lock_fn */
    long hits;        /* run Deferreds that had fired with lock_fn's value */
    uintptr_t value;  /* what lock_fn's Deferred fires with */
} dl;

static tw_result lock_fn(void *arg)
{
    tw_deferred *d;
    int rc;

    (void)arg;
    dl.calls++;
    rc = tw_deferred_succeed(&d, (void *)dl.value, NULL);
    if (rc != 0)
        return tw_result_fail(rc, "tw_deferred_succeed");
    return tw_result_deferred(d);
}

static void run_lock(long n)
{
    tw_deferred *d;
    tw_result r;
    long i;

    dl.calls = dl.hits = 0;
    for (i = 1; i <= n; i++) {
        dl.value = (uintptr_t)i;
        CHECK_TW("tw_dlock_run", tw_dlock_run(&dl.lock, lock_fn, NULL, &d));
        if (tw_deferred_peek(d, &r) && tw_result_is_value(r) && (uintptr_t)r.ptr == (uintptr_t)i)
            dl.hits++;
        tw_deferred_unref(d);
    }
}

static void check_lock(const char *workload, const char *impl, long n)
{
    bench_check_count(workload, impl, dl.calls, n);
    bench_check_count(workload, "twine DeferredLock (run Deferreds fired with the value)", dl.hits,
                      n);
    bench_check_count(workload, "twine DeferredLock (held after the run)",
                      tw_dlock_locked(&dl.lock) ? 1 : 0, 0);
    bench_check_count(workload, "twine DeferredLock (waiters after the run)",
                      (long)tw_dlock_waiting(&dl.lock), 0);
}

/* ==== deferred_nest_* ========================================================== */
static struct {
    tw_deferred **ds; /* N_NEST_LINKS + 1 of them */
    long adds;        /* the adding callbacks run */
    long hits;        /* nests whose outermost ended with the right value */
    long waiting;     /* Deferreds found waiting on the next one after firing */
    long nests;       /* nests made */
} nest;

static tw_result nest_link(tw_result r, void *arg)
{
    tw_result_drop(r);
    return tw_result_deferred(tw_deferred_ref(*(tw_deferred **)arg));
}

static tw_result nest_add(tw_result r, void *arg)
{
    (void)arg;
    nest.adds++;
    return tw_result_value((void *)((uintptr_t)r.ptr + 1), NULL);
}

/* One nest of depth n, fired outermost or innermost first. */
static void nest_once(long n, bool inner_first)
{
    tw_deferred **ds = nest.ds;
    tw_result r;
    long i;

    for (i = 0; i <= n; i++)
        CHECK_TW("tw_deferred_create", tw_deferred_create(&ds[i], NULL, NULL));
    for (i = 0; i < n; i++) {
        CHECK_TW("tw_deferred_add_callback", tw_deferred_add_callback(ds[i], nest_link, &ds[i + 1]));
        CHECK_TW("tw_deferred_add_callback", tw_deferred_add_callback(ds[i], nest_add, NULL));
    }
    for (i = 0; i < n; i++) {
        long k = inner_first ? n - 1 - i : i;
        CHECK_TW("tw_deferred_callback", tw_deferred_callback(ds[k], tw_result_none()));
        if (tw_deferred_waiting_on(ds[k]) == ds[k + 1])
            nest.waiting++;
    }
    CHECK_TW("tw_deferred_callback",
             tw_deferred_callback(ds[n], tw_result_value((void *)(uintptr_t)7, NULL)));
    if (tw_deferred_peek(ds[0], &r) && tw_result_is_value(r) &&
        (uintptr_t)r.ptr == 7 + (uintptr_t)n)
        nest.hits++;
    for (i = 0; i <= n; i++)
        tw_deferred_unref(ds[i]);
}

/* n links: nests of `depth` and, when depth does not divide n (a --scale
 * run), one shallower nest for the rest. */
static void nest_run(long n, long depth, bool inner_first)
{
    long done;

    if (!nest.ds) {
        nest.ds = calloc((size_t)N_NEST_LINKS + 1, sizeof *nest.ds);
        if (!nest.ds)
            bench_die("calloc", "no memory for the nest");
    }
    nest.adds = nest.hits = nest.waiting = nest.nests = 0;
    for (done = 0; done < n; done += depth) {
        nest_once(n - done < depth ? n - done : depth, inner_first);
        nest.nests++;
    }
}

static void run_nest_outer_1e4(long n)
{
    nest_run(n, 10000, false);
}

static void run_nest_outer_1e5(long n)
{
    nest_run(n, 100000, false);
}

static void run_nest_inner_1e4(long n)
{
    nest_run(n, 10000, true);
}

static void run_nest_inner_1e5(long n)
{
    nest_run(n, 100000, true);
}

static void check_nest(const char *workload, const char *impl, long n)
{
    bench_check_count(workload, impl, nest.adds, n);
    bench_check_count(workload, "twine Deferred (links waiting once fired)", nest.waiting, n);
    bench_check_count(workload, "twine Deferred (nests ending with the right value)", nest.hits,
                      nest.nests);
}

/* ==== driver ================================================================= */
struct workload {
    const char *name;
    const char *impl;
    long n;
    void (*run)(long n);
    void (*check)(const char *workload, const char *impl, long n);
};

static const struct workload workloads[] = {
    {"deferred_chain", "twine Deferred", N_CHAIN, run_chain, check_chain},
    {"deferred_chain_fired_first", "twine Deferred", N_CHAIN, run_chain_fired_first, check_chain},
    {"deferred_lock", "twine DeferredLock", N_LOCK, run_lock, check_lock},
    {"deferred_nest_outer_first_1e4", "twine Deferred", N_NEST_LINKS, run_nest_outer_1e4,
     check_nest},
    {"deferred_nest_outer_first_1e5", "twine Deferred", N_NEST_LINKS, run_nest_outer_1e5,
     check_nest},
    {"deferred_nest_inner_first_1e4", "twine Deferred", N_NEST_LINKS, run_nest_inner_1e4,
     check_nest},
    {"deferred_nest_inner_first_1e5", "twine Deferred", N_NEST_LINKS, run_nest_inner_1e5,
     check_nest},
};

/* One run, checked: counts, diagnostics, blocks left allocated. Returns
 * seconds; *allocs and *frees get the allocator calls it made. */
static double run_once(const struct workload *w, long n, long *allocs, long *frees)
{
    long a0 = counted.allocs, f0 = counted.frees;
    size_t live0 = tw_allocator_live();
    double t0, t1;

    bench_watch(w->name);
    t0 = bench_now();
    w->run(n);
    t1 = bench_now();
    bench_watch(NULL);
    w->check(w->name, w->impl, n);
    bench_twine_check(w->name, live0);
    *allocs = counted.allocs - a0;
    *frees = counted.frees - f0;
    if (counting)
        bench_check_count(w->name, "twine (allocations not freed)", *allocs - *frees, 0);
    return t1 - t0;
}

static void run_workload(const struct workload *w)
{
    double ns[BENCH_REPS], allocs[BENCH_REPS], frees[BENCH_REPS], cold;
    long n = bench_scaled(w->n), a, f;
    int rep;

    printf("%s: %ld operations, %d repetitions\n", w->name, n, BENCH_REPS);
    fflush(stdout);
    run_once(w, n < N_WARM_UP ? n : N_WARM_UP, &a, &f);
    for (rep = 0; rep < BENCH_REPS; rep++) {
        ns[rep] = run_once(w, n, &a, &f) * 1e9 / (double)n;
        allocs[rep] = (double)a / (double)n;
        frees[rep] = (double)f / (double)n;
    }
    bench_record(w->name, w->impl, "ns/op", false, ns, BENCH_REPS);
    if (counting) {
        bench_record_extra(w->name, w->impl, "allocs", "allocs/op", allocs, BENCH_REPS);
        bench_record_extra(w->name, w->impl, "frees", "frees/op", frees, BENCH_REPS);
        /* One operation right after run_once has emptied the thread's block
         * cache (tw_allocator_live gives cached blocks back): every block the
         * operation needs comes from the allocator. */
        run_once(w, 1, &a, &f);
        cold = (double)a;
        bench_record_extra(w->name, w->impl, "allocs_cold", "allocs/op", &cold, 1);
    }
}

int main(int argc, char **argv)
{
    static const tw_allocator counter = {count_alloc, count_realloc, count_free, NULL};
    bool libc_alloc = false, exact = false;
    const struct bench_flag flags[] = {
        {"--exact", &exact}, {"--libc-alloc", &libc_alloc}, {NULL, NULL}};
    struct bench_args args;
    int i, rc;

    bench_watchdog_init();
    if (!bench_parse_args(argc, argv, false, flags,
                          "[--csv PATH] [--scale F] [--only WORKLOAD[,...]] [--exact] "
                          "[--libc-alloc]",
                          &args))
        return 2;

    bench_twine_diag_init();
    if (!libc_alloc) {
        rc = tw_set_allocator(&counter);
        if (rc != 0)
            bench_die_tw("tw_set_allocator (the counting allocator)", rc);
        counting = true;
    } else {
        printf("(--libc-alloc: the default allocator; allocations are not counted)\n");
    }

    bench_open_csv(args.csv);
    bench_warm_up(0.2);
    for (i = 0; i < BENCH_COUNT_OF(workloads); i++)
        if (exact ? bench_listed(args.only, workloads[i].name)
                  : bench_selected(args.only, workloads[i].name))
            run_workload(&workloads[i]);
    bench_close_csv();
    if (counting && tw_set_allocator(NULL) != 0)
        bench_die("tw_set_allocator (back to the default)", "blocks are still allocated");
    return 0;
}
