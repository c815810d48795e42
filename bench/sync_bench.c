/*
 * sync_bench.c — twine's L1 primitives against C peers on the same workloads.
 *
 *   lock_uncontended        10^7 acquire + release in one thread, a second thread
 *                           parked in the kernel the whole time; ns/op
 *   lock_nested             the same with two locks, A then B, released in reverse:
 *                           10^7 times; ns per pair of acquires and releases
 *   (both also with "twine Lock tracked": the Lock through the tracking paths
 *   of code compiled with TW_DEBUG, sync_bench_tracked.c)
 *   lock_contended          2 threads x 5*10^6 lock / increment / unlock of one
 *                           counter on its own cache line; ops/s for both together
 *   cond_pingpong_pinned    2 threads hand a token back and forth through a turn
 *   cond_pingpong_unpinned  variable under a lock (wait while it is not my turn,
 *                           flip it, notify): 2*10^5 round trips with both threads
 *                           on one CPU, 2*10^4 placed freely; us per round trip
 *
 * Every implementation of a workload runs in the same process, round-robin,
 * BENCH_REPS times; each row reports the median (the headline figure) and the
 * best repetition. Every run ends with a check of the count it should have
 * produced. Two-thread workloads also report how much of the elapsed time both
 * threads were running (see pair_overlap).
 *
 * usage: twine_bench_sync [--csv PATH] [--scale F] [--only WORKLOAD[,...]] [--impl NAME[,...]]
 *   --scale multiplies every iteration count (e.g. 0.01 for a smoke run);
 *   --only selects workloads by name prefix, --impl implementations by exact
 *   name (for profiling one of them under perf).
 */
#define _GNU_SOURCE
#include "bench_util.h"

#include <glib.h>
#include <nsync.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <twine/sync.h>

#define N_UNCONTENDED 10000000L
#define N_CONTENDED 5000000L /* per thread */
#define N_PINGPONG 200000L   /* round trips, pinned */
/* Unpinned, every hand-off wakes a thread on the other CPU; on a virtual
 * machine whose idle CPU halts that costs tens of microseconds, so this run is
 * ten times shorter to keep the whole suite within a few minutes. */
#define N_PINGPONG_UNPINNED 20000L

/* Every runner has this shape so that one table-driven loop runs them all:
 * it sets up, runs n iterations, checks its count and returns the figure. */
typedef double (*run_fn)(const char *impl, long n, bool pin);

struct impl {
    const char *name;
    run_fn run;
};

/* ---- two threads started together ------------------------------------------
 * Both threads place themselves (pinned or not), meet at a barrier, and run
 * body(id). Each thread reads the clock itself right after the barrier and
 * right after its body; the elapsed time runs from the earlier start to the
 * later end. (The main thread cannot time them: on two CPUs it may not be
 * scheduled again until the workers are done.) */
struct pair_arg {
    void (*body)(int id);
    bool pin;
    int id;
    pthread_barrier_t *gate;
    double start, end;
};

static void *pair_thread(void *p)
{
    struct pair_arg *a = p;
    if (a->pin)
        bench_pin_self();
    pthread_barrier_wait(a->gate);
    a->start = bench_now();
    a->body(a->id);
    a->end = bench_now();
    return NULL;
}

/* The share of the last run_pair's elapsed time during which both threads
 * were running their bodies: near 1 when the work interleaved, near 0.5 when
 * one thread did all its work while the other hardly progressed. */
static double pair_overlap;

static double run_pair(void (*body)(int id), bool pin)
{
    pthread_barrier_t gate;
    struct pair_arg args[2];
    pthread_t th[2];
    double t0, t1;
    int i;

    bench_die_rc("pthread_barrier_init", pthread_barrier_init(&gate, NULL, 2));
    for (i = 0; i < 2; i++) {
        args[i] = (struct pair_arg){body, pin, i, &gate, 0, 0};
        bench_die_rc("pthread_create", pthread_create(&th[i], NULL, pair_thread, &args[i]));
    }
    for (i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&gate);
    t0 = args[0].start < args[1].start ? args[0].start : args[1].start;
    t1 = args[0].end > args[1].end ? args[0].end : args[1].end;
    {
        double both_from = args[0].start > args[1].start ? args[0].start : args[1].start;
        double both_to = args[0].end < args[1].end ? args[0].end : args[1].end;
        pair_overlap = t1 > t0 && both_to > both_from ? (both_to - both_from) / (t1 - t0) : 0.0;
    }
    return t1 - t0;
}

/* ==== lock_uncontended ======================================================
 * The object sits alone on a cache line; the counter increment is the
 * critical section, so the loop cannot be reduced to nothing. */
static _Alignas(64) union {
    tw_lock tw_lock;
    tw_rlock tw_rlock;
    tw_sem tw_sem;
    pthread_mutex_t pmutex;
    sem_t sem;
    nsync_mu nmu;
    GMutex gmutex;
    GRecMutex grec;
    char line[64];
} unc_obj;
static long unc_count;

#define UNCONTENDED(fn, field, SETUP, LOCK, UNLOCK, TEARDOWN)                  \
    static double fn(const char *impl, long n, bool pin)                       \
    {                                                                          \
        __typeof__(unc_obj.field) *o = &unc_obj.field;                         \
        double t0, t1;                                                         \
        long i;                                                                \
        (void)pin;                                                             \
        memset(&unc_obj, 0, sizeof unc_obj);                                   \
        unc_count = 0;                                                         \
        SETUP;                                                                 \
        t0 = bench_now();                                                      \
        for (i = 0; i < n; i++) {                                              \
            LOCK;                                                              \
            unc_count++;                                                       \
            UNLOCK;                                                            \
        }                                                                      \
        t1 = bench_now();                                                      \
        TEARDOWN;                                                              \
        bench_check_count("lock_uncontended", impl, unc_count, n);             \
        return (t1 - t0) * 1e9 / (double)n;                                    \
    }

UNCONTENDED(unc_tw_lock, tw_lock, tw_lock_init(o), tw_lock_acquire(o), tw_lock_release(o),
            (void)0)
UNCONTENDED(unc_tw_rlock, tw_rlock, tw_rlock_init(o), tw_rlock_acquire(o), tw_rlock_release(o),
            (void)0)
UNCONTENDED(unc_tw_sem, tw_sem, bench_die_rc("tw_sem_init", tw_sem_init(o, 1)), tw_sem_acquire(o),
            tw_sem_release(o, 1), (void)0)
UNCONTENDED(unc_pmutex, pmutex, bench_die_rc("pthread_mutex_init", pthread_mutex_init(o, NULL)),
            pthread_mutex_lock(o), pthread_mutex_unlock(o), pthread_mutex_destroy(o))
UNCONTENDED(unc_pmutex_rec, pmutex,
            pthread_mutexattr_t attr;
            pthread_mutexattr_init(&attr);
            pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
            bench_die_rc("pthread_mutex_init", pthread_mutex_init(o, &attr));
            pthread_mutexattr_destroy(&attr),
            pthread_mutex_lock(o), pthread_mutex_unlock(o), pthread_mutex_destroy(o))
UNCONTENDED(unc_sem_t, sem, if (sem_init(o, 0, 1) != 0) bench_die_rc("sem_init", 1), sem_wait(o),
            sem_post(o), sem_destroy(o))
UNCONTENDED(unc_nsync, nmu, nsync_mu_init(o), nsync_mu_lock(o), nsync_mu_unlock(o), (void)0)
UNCONTENDED(unc_gmutex, gmutex, g_mutex_init(o), g_mutex_lock(o), g_mutex_unlock(o),
            g_mutex_clear(o))
UNCONTENDED(unc_grec, grec, g_rec_mutex_init(o), g_rec_mutex_lock(o), g_rec_mutex_unlock(o),
            g_rec_mutex_clear(o))

/* sync_bench_tracked.c (TW_DEBUG code). */
double bench_tracked_lock_uncontended(long n);
double bench_tracked_lock_nested(long n);

static double unc_tw_lock_tracked(const char *impl, long n, bool pin)
{
    (void)impl;
    (void)pin;
    return bench_tracked_lock_uncontended(n);
}

static const struct impl uncontended_impls[] = {
    {"twine Lock", unc_tw_lock},
    {"twine Lock tracked", unc_tw_lock_tracked},
    {"twine RLock", unc_tw_rlock},
    {"twine Semaphore", unc_tw_sem},
    {"pthread_mutex", unc_pmutex},
    {"pthread_mutex recursive", unc_pmutex_rec},
    {"sem_t", unc_sem_t},
    {"nsync_mu", unc_nsync},
    {"GMutex", unc_gmutex},
    {"GRecMutex", unc_grec},
};

/* ==== lock_nested ===========================================================
 * Two locks, each alone on a cache line, taken in one order and released in
 * the other: what an order checker sees on every nested acquire. */
static _Alignas(64) union {
    pthread_mutex_t pmutex;
    tw_lock tw_lock;
    GMutex gmutex;
    char line[64];
} nest_obj[2];
static long nest_count;

#define NESTED(fn, field, SETUP, LOCK, UNLOCK, TEARDOWN)                      \
    static double fn(const char *impl, long n, bool pin)                       \
    {                                                                          \
        __typeof__(nest_obj[0].field) *a = &nest_obj[0].field, *b = &nest_obj[1].field; \
        double t0, t1;                                                         \
        long i;                                                                \
        (void)pin;                                                             \
        memset(nest_obj, 0, sizeof nest_obj);                                  \
        nest_count = 0;                                                        \
        SETUP;                                                                 \
        t0 = bench_now();                                                      \
        for (i = 0; i < n; i++) {                                              \
            LOCK(a);                                                           \
            LOCK(b);                                                           \
            nest_count++;                                                      \
            UNLOCK(b);                                                         \
            UNLOCK(a);                                                         \
        }                                                                      \
        t1 = bench_now();                                                      \
        TEARDOWN;                                                              \
        bench_check_count("lock_nested", impl, nest_count, n);                 \
        return (t1 - t0) * 1e9 / (double)n;                                    \
    }

NESTED(nest_tw_lock, tw_lock, (tw_lock_init(a), tw_lock_init(b)), tw_lock_acquire,
       tw_lock_release, (void)0)
NESTED(nest_pmutex, pmutex,
       (bench_die_rc("pthread_mutex_init", pthread_mutex_init(a, NULL)),
        bench_die_rc("pthread_mutex_init", pthread_mutex_init(b, NULL))),
       pthread_mutex_lock, pthread_mutex_unlock,
       (pthread_mutex_destroy(a), pthread_mutex_destroy(b)))
NESTED(nest_gmutex, gmutex, (g_mutex_init(a), g_mutex_init(b)), g_mutex_lock, g_mutex_unlock,
       (g_mutex_clear(a), g_mutex_clear(b)))

static double nest_tw_lock_tracked(const char *impl, long n, bool pin)
{
    (void)impl;
    (void)pin;
    return bench_tracked_lock_nested(n);
}

static const struct impl nested_impls[] = {
    {"twine Lock", nest_tw_lock},
    {"twine Lock tracked", nest_tw_lock_tracked},
    {"pthread_mutex", nest_pmutex},
    {"GMutex", nest_gmutex},
};

/* ==== lock_contended ========================================================
 * The lock and the counter each have a cache line of their own. */
static struct {
    long per_thread;
    _Alignas(64) union {
        tw_lock tw_lock;
        pthread_mutex_t pmutex;
        nsync_mu nmu;
        GMutex gmutex;
        char line[64];
    } lock;
    _Alignas(64) long counter;
    char pad[64 - sizeof(long)];
} con;

#define CONTENDED(fn, field, SETUP, LOCK, UNLOCK, TEARDOWN)                    \
    static void fn##_body(int id)                                              \
    {                                                                          \
        __typeof__(con.lock.field) *o = &con.lock.field;                       \
        long i, n = con.per_thread;                                            \
        (void)id;                                                              \
        for (i = 0; i < n; i++) {                                              \
            LOCK;                                                              \
            con.counter++;                                                     \
            UNLOCK;                                                            \
        }                                                                      \
    }                                                                          \
    static double fn(const char *impl, long n, bool pin)                       \
    {                                                                          \
        __typeof__(con.lock.field) *o = &con.lock.field;                       \
        double secs;                                                           \
        memset(&con.lock, 0, sizeof con.lock);                                 \
        con.counter = 0;                                                       \
        con.per_thread = n;                                                    \
        SETUP;                                                                 \
        secs = run_pair(fn##_body, pin);                                       \
        TEARDOWN;                                                              \
        bench_check_count("lock_contended", impl, con.counter, 2 * n);         \
        return (double)(2 * n) / secs;                                         \
    }

CONTENDED(con_tw_lock, tw_lock, tw_lock_init(o), tw_lock_acquire(o), tw_lock_release(o),
          (void)0)
CONTENDED(con_pmutex, pmutex, bench_die_rc("pthread_mutex_init", pthread_mutex_init(o, NULL)),
          pthread_mutex_lock(o), pthread_mutex_unlock(o), pthread_mutex_destroy(o))
CONTENDED(con_nsync, nmu, nsync_mu_init(o), nsync_mu_lock(o), nsync_mu_unlock(o), (void)0)
CONTENDED(con_gmutex, gmutex, g_mutex_init(o), g_mutex_lock(o), g_mutex_unlock(o),
          g_mutex_clear(o))

static const struct impl contended_impls[] = {
    {"twine Lock", con_tw_lock},
    {"pthread_mutex", con_pmutex},
    {"nsync_mu", con_nsync},
    {"GMutex", con_gmutex},
};

/* ==== cond_pingpong =========================================================
 * Thread 0 owns the token first. Each thread, rounds times: take the lock,
 * wait while turn is not its own, flip turn, count, notify, release. One round
 * trip is a pass there and back. The Event variant passes the token through
 * two Events instead: thread 0 sets ev[1] and waits for ev[0], thread 1 waits
 * for ev[1] and sets ev[0]; each clears the Event it woke on before passing
 * the token on, so a set is never lost. */
static struct {
    long rounds;
    _Alignas(64) union {
        tw_lock tw_lock;
        pthread_mutex_t pmutex;
        nsync_mu nmu;
        GMutex gmutex;
    } mu;
    union {
        tw_cond tw_cond;
        pthread_cond_t pcond;
        nsync_cv ncv;
        GCond gcond;
    } cv;
    int turn;
    long flips;
    _Alignas(64) tw_event ev[2];
} pp;

#define PINGPONG(fn, workload, SETUP, LOCK, UNLOCK, WAIT, SIGNAL, TEARDOWN)   \
    static void fn##_body(int me)                                              \
    {                                                                          \
        long i;                                                                \
        for (i = 0; i < pp.rounds; i++) {                                      \
            LOCK;                                                              \
            while (pp.turn != me)                                              \
                WAIT;                                                          \
            pp.turn = !me;                                                     \
            pp.flips++;                                                        \
            SIGNAL;                                                            \
            UNLOCK;                                                            \
        }                                                                      \
    }                                                                          \
    static double fn(const char *impl, long n, bool pin)                       \
    {                                                                          \
        double secs;                                                           \
        memset(&pp, 0, sizeof pp);                                             \
        pp.rounds = n;                                                         \
        SETUP;                                                                 \
        secs = run_pair(fn##_body, pin);                                       \
        TEARDOWN;                                                              \
        bench_check_count(workload, impl, pp.flips, 2 * n);                    \
        return secs * 1e6 / (double)n;                                         \
    }

#define PP_WORKLOAD (pin ? "cond_pingpong_pinned" : "cond_pingpong_unpinned")

/* twine Condition bound to a tw_lock, the counterpart of a mutex + condvar. */
PINGPONG(pp_tw_cond, PP_WORKLOAD,
         bench_die_rc("tw_cond_init_lock", tw_cond_init_lock(&pp.cv.tw_cond, &pp.mu.tw_lock)),
         tw_lock_acquire(&pp.mu.tw_lock), tw_lock_release(&pp.mu.tw_lock),
         tw_cond_wait(&pp.cv.tw_cond), tw_cond_notify(&pp.cv.tw_cond, 1), (void)0)
/* A zeroed twine Condition: its own RLock, like Python's threading.Condition(). */
PINGPONG(pp_tw_cond_rlock, PP_WORKLOAD, tw_cond_init(&pp.cv.tw_cond),
         tw_cond_acquire(&pp.cv.tw_cond), tw_cond_release(&pp.cv.tw_cond),
         tw_cond_wait(&pp.cv.tw_cond), tw_cond_notify(&pp.cv.tw_cond, 1), (void)0)
PINGPONG(pp_pcond, PP_WORKLOAD,
         bench_die_rc("pthread_mutex_init", pthread_mutex_init(&pp.mu.pmutex, NULL));
         bench_die_rc("pthread_cond_init", pthread_cond_init(&pp.cv.pcond, NULL)),
         pthread_mutex_lock(&pp.mu.pmutex), pthread_mutex_unlock(&pp.mu.pmutex),
         pthread_cond_wait(&pp.cv.pcond, &pp.mu.pmutex), pthread_cond_signal(&pp.cv.pcond),
         pthread_cond_destroy(&pp.cv.pcond);
         pthread_mutex_destroy(&pp.mu.pmutex))
PINGPONG(pp_nsync, PP_WORKLOAD, nsync_mu_init(&pp.mu.nmu); nsync_cv_init(&pp.cv.ncv),
         nsync_mu_lock(&pp.mu.nmu), nsync_mu_unlock(&pp.mu.nmu),
         nsync_cv_wait(&pp.cv.ncv, &pp.mu.nmu), nsync_cv_signal(&pp.cv.ncv), (void)0)
PINGPONG(pp_gcond, PP_WORKLOAD, g_mutex_init(&pp.mu.gmutex); g_cond_init(&pp.cv.gcond),
         g_mutex_lock(&pp.mu.gmutex), g_mutex_unlock(&pp.mu.gmutex),
         g_cond_wait(&pp.cv.gcond, &pp.mu.gmutex), g_cond_signal(&pp.cv.gcond),
         g_cond_clear(&pp.cv.gcond);
         g_mutex_clear(&pp.mu.gmutex))

static void pp_tw_event_body(int me)
{
    long i;
    for (i = 0; i < pp.rounds; i++) {
        if (me == 0) {
            pp.flips++;
            tw_event_set(&pp.ev[1]);
            tw_event_wait(&pp.ev[0]);
            tw_event_clear(&pp.ev[0]);
        } else {
            tw_event_wait(&pp.ev[1]);
            tw_event_clear(&pp.ev[1]);
            pp.flips++;
            tw_event_set(&pp.ev[0]);
        }
    }
}

static double pp_tw_event(const char *impl, long n, bool pin)
{
    double secs;
    memset(&pp, 0, sizeof pp);
    pp.rounds = n;
    tw_event_init(&pp.ev[0]);
    tw_event_init(&pp.ev[1]);
    secs = run_pair(pp_tw_event_body, pin);
    bench_check_count(PP_WORKLOAD, impl, pp.flips, 2 * n);
    return secs * 1e6 / (double)n;
}

static const struct impl pingpong_impls[] = {
    {"twine Condition", pp_tw_cond},
    {"twine Condition(RLock)", pp_tw_cond_rlock},
    {"twine Event pair", pp_tw_event},
    {"pthread_cond", pp_pcond},
    {"nsync_cv", pp_nsync},
    {"GCond", pp_gcond},
};

/* ==== machine probe ==========================================================
 * Not a workload: two threads spin on one word, each waiting for its turn
 * and handing it over, with no lock and no system call. The round trip is
 * two cache-line transfers between the threads' CPUs. On a virtual machine
 * it swings with where the host places the virtual CPUs (sibling hyper-
 * threads share a cache, separate cores do not), and lock_contended swings
 * with it, so the probe runs right before and after that workload. */
#define N_PROBE 100000L

static struct {
    _Alignas(64) uint32_t turn;
    char pad[64 - sizeof(uint32_t)];
    long rounds;
} probe;

static void probe_body(int me)
{
    long i;
    for (i = 0; i < probe.rounds; i++) {
        /* acquire/release: the turn word is the only data handed over */
        while (__atomic_load_n(&probe.turn, __ATOMIC_ACQUIRE) != (uint32_t)me)
            bench_relax();
        __atomic_store_n(&probe.turn, (uint32_t)!me, __ATOMIC_RELEASE);
    }
}

static void run_probe(const char *when)
{
    double samples[BENCH_REPS], secs;
    char impl[64];
    int rep;

    for (rep = 0; rep < BENCH_REPS; rep++) {
        probe.turn = 0;
        probe.rounds = bench_scaled(N_PROBE);
        secs = run_pair(probe_body, false);
        samples[rep] = secs * 1e9 / (double)probe.rounds;
    }
    snprintf(impl, sizeof impl, "atomic spin %s", when);
    bench_record("machine_probe", impl, "ns/roundtrip", false, samples, BENCH_REPS);
}

/* ==== driver =============================================================== */
static const char *impl_list; /* --impl */

static void run_workload(const char *workload, const char *unit, bool higher_is_better,
                         const struct impl *impls, int count, long n, bool pin)
{
    double samples[16][BENCH_REPS], overlap[16][BENCH_REPS];
    bool pair = strcmp(workload, "lock_uncontended") != 0 && strcmp(workload, "lock_nested") != 0;
    int rep, i;

    if (count > 16)
        abort();
    printf("%s: %ld iterations, %d round-robin repetitions\n", workload, n, BENCH_REPS);
    fflush(stdout);
    for (rep = 0; rep < BENCH_REPS; rep++) {
        for (i = 0; i < count; i++) {
            if (!bench_listed(impl_list, impls[i].name))
                continue;
            samples[i][rep] = impls[i].run(impls[i].name, n, pin);
            overlap[i][rep] = pair_overlap;
        }
    }
    for (i = 0; i < count; i++) {
        if (!bench_listed(impl_list, impls[i].name))
            continue;
        bench_record(workload, impls[i].name, unit, higher_is_better, samples[i], BENCH_REPS);
        if (pair)
            bench_record_extra(workload, impls[i].name, "overlap", "fraction", overlap[i],
                               BENCH_REPS);
    }
}

int main(int argc, char **argv)
{
    struct bench_args args;

    if (!bench_parse_args(argc, argv, true, NULL,
                          "[--csv PATH] [--scale F] [--only WORKLOAD[,...]] [--impl NAME[,...]]",
                          &args))
        return 2;
    impl_list = args.impl;

    bench_open_csv(args.csv);
    bench_placement_init();
    bench_warm_up(0.2);

    if (bench_selected(args.only, "lock_uncontended")) {
        bench_parked_start();
        run_workload("lock_uncontended", "ns/op", false, uncontended_impls,
                     BENCH_COUNT_OF(uncontended_impls), bench_scaled(N_UNCONTENDED), false);
        bench_parked_stop();
    }
    if (bench_selected(args.only, "lock_nested")) {
        bench_parked_start();
        run_workload("lock_nested", "ns/op", false, nested_impls, BENCH_COUNT_OF(nested_impls),
                     bench_scaled(N_UNCONTENDED), false);
        bench_parked_stop();
    }
    if (bench_selected(args.only, "lock_contended")) {
        run_probe("before");
        run_workload("lock_contended", "ops/s", true, contended_impls,
                     BENCH_COUNT_OF(contended_impls), bench_scaled(N_CONTENDED), false);
        run_probe("after");
    }
    if (bench_selected(args.only, "cond_pingpong_pinned")) {
        printf("(pinned: both threads on CPU %d)\n", bench_pin_cpu());
        run_workload("cond_pingpong_pinned", "us/roundtrip", false, pingpong_impls,
                     BENCH_COUNT_OF(pingpong_impls), bench_scaled(N_PINGPONG), true);
    }
    if (bench_selected(args.only, "cond_pingpong_unpinned"))
        run_workload("cond_pingpong_unpinned", "us/roundtrip", false, pingpong_impls,
                     BENCH_COUNT_OF(pingpong_impls), bench_scaled(N_PINGPONG_UNPINNED), false);

    bench_close_csv();
    return 0;
}
