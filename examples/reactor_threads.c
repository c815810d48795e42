/*
 * reactor_threads — seed 001: Twisted's threading howto, on a twine reactor.
 *
 * Everything registered with a reactor runs on its loop thread, so loop code
 * needs no locks. Blocking work goes to threads, and threads and the loop
 * meet only through a few thread-safe bridges. One chain of Deferreds walks
 * through them on the loop thread, each step waiting for the one before:
 *
 *  1. call_from_thread: a plain pthread hands a call to the loop.
 *  2. call_in_thread: the loop hands blocking work to the reactor's pool
 *     (which hands its answer back with call_from_thread).
 *  3. defer_to_thread: the same, with the result coming back as a Deferred.
 *  4. blocking_call_from_thread: a pool thread asks the loop for a result
 *     (a Deferred the loop fires later) and waits for it. On the loop thread
 *     it would wait for itself: TW_EDEADLK at once.
 *  5. suggest_thread_pool_size: the pool's limit, read back from its stats.
 *  6. The trap: "blocker" tasks (q.get() + q.get()) fill a pool at its limit
 *     while the "unblocker" tasks that would feed them wait behind them.
 *     A pool with wedge detection reports it and grows one thread past its
 *     limit, so the unblockers run.
 *  7. Shutdown: a pool thread blocked in blocking_call_from_thread when the
 *     loop stops is released with TW_ESHUTDOWN instead of hanging the pool's
 *     stop, and so the whole shutdown, forever (Twisted #10124).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <twine.h>

static tw_reactor *reactor;
static pthread_t loop_thread; /* main(), which runs the loop */
static bool passed;           /* set by the end of the chain */

static bool on_loop(void)
{
    return pthread_equal(pthread_self(), loop_thread);
}

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "reactor_threads: %s: %s\n", what, tw_err_name(rc));
        exit(1);
    }
}

/* The chain goes on with none if cond holds, else with a failure. */
static tw_result expect(bool cond, const char *what)
{
    return cond ? tw_result_none() : tw_result_fail(TW_EINVAL, "%s", what);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- 1. call_from_thread ------------------------------------------------------- */

static pthread_t plain;

static void greet(void *arg) /* posted by the plain thread */
{
    tw_deferred *d = arg;
    printf("1. call_from_thread from a plain pthread: the call ran on the %s thread\n",
           on_loop() ? "loop" : "WRONG");
    tw_deferred_callback(d, expect(on_loop(), "call_from_thread ran off the loop"));
    tw_deferred_unref(d);
}

static void *plain_main(void *arg)
{
    /* The Deferred belongs to the loop: only the loop may fire it. */
    check(tw_reactor_call_from_thread(reactor, greet, arg), "call_from_thread");
    return NULL;
}

static tw_result step1(tw_result prev, void *arg)
{
    tw_deferred *d;
    (void)arg;
    tw_result_drop(prev);
    check(tw_deferred_create(&d, NULL, NULL), "deferred_create");
    check(pthread_create(&plain, NULL, plain_main, tw_deferred_ref(d)), "pthread_create");
    return tw_result_deferred(d);
}

/* ---- 2. call_in_thread --------------------------------------------------------- */

static struct {
    tw_deferred *d;   /* the loop's */
    bool ran_on_loop; /* written by the task before it posts its answer */
} task;

static void task_answer(void *arg) /* posted by the task */
{
    (void)arg;
    printf("2. call_in_thread: the task ran on %s, its answer came back with "
           "call_from_thread\n", task.ran_on_loop ? "the LOOP thread" : "a pool thread");
    tw_deferred_callback(task.d, expect(!task.ran_on_loop && on_loop(), "call_in_thread"));
    tw_deferred_unref(task.d);
}

static int blocking_task(void *arg) /* a pool thread */
{
    (void)arg;
    task.ran_on_loop = on_loop();
    sleep_ms(10); /* something that blocks */
    return tw_reactor_call_from_thread(reactor, task_answer, NULL);
}

static tw_result step2(tw_result prev, void *arg)
{
    (void)arg;
    tw_result_drop(prev);
    check(tw_deferred_create(&task.d, NULL, NULL), "deferred_create");
    check(tw_reactor_call_in_thread(reactor, blocking_task, NULL), "call_in_thread");
    return tw_result_deferred(tw_deferred_ref(task.d));
}

/* ---- 3. defer_to_thread -------------------------------------------------------- */

static tw_result long_calculation(void *arg, tw_cancel *cancel) /* a pool thread */
{
    (void)arg;
    (void)cancel;
    sleep_ms(10); /* time.sleep(3) in the howto */
    return on_loop() ? tw_result_fail(TW_EINVAL, "ran on the loop")
                     : tw_result_value((void *)(intptr_t)3, NULL);
}

static tw_result print_result(tw_result r, void *arg)
{
    intptr_t x = (intptr_t)r.ptr;
    (void)arg;
    printf("3. defer_to_thread: the pool thread's result %ld came back as a Deferred, "
           "on the %s thread\n", (long)x, on_loop() ? "loop" : "WRONG");
    tw_result_drop(r);
    return expect(x == 3 && on_loop(), "defer_to_thread");
}

static tw_result step3(tw_result prev, void *arg)
{
    tw_deferred *d;
    (void)arg;
    tw_result_drop(prev);
    check(tw_defer_to_thread(reactor, long_calculation, NULL, &d), "defer_to_thread");
    check(tw_deferred_add_callback(d, print_result, NULL), "add_callback");
    return tw_result_deferred(d);
}

/* ---- 4. blocking_call_from_thread -------------------------------------------------- */

#define PAGE "<html>made on the loop</html>"

static void page_ready(void *arg) /* a timer on the loop */
{
    tw_deferred *d = arg;
    tw_deferred_callback(d, tw_result_value(PAGE, NULL));
    tw_deferred_unref(d);
}

/* getPage: runs on the loop; its result is a Deferred that fires 10 ms later. */
static tw_result get_page(void *arg)
{
    tw_deferred *d;
    (void)arg;
    check(tw_deferred_create(&d, NULL, NULL), "deferred_create");
    check(tw_reactor_call_later(reactor, 0.01, page_ready, tw_deferred_ref(d), NULL),
          "call_later");
    return tw_result_deferred(d);
}

static tw_result fetch(void *arg, tw_cancel *cancel) /* a pool thread */
{
    tw_result page;
    (void)arg;
    (void)cancel;
    /* Waits for the loop's Deferred; its value (or failure) is ours. */
    int rc = tw_blocking_call_from_thread(reactor, get_page, NULL, &page);
    return rc ? tw_result_fail(rc, "blocking_call_from_thread") : page;
}

static tw_result print_page(tw_result r, void *arg)
{
    bool ok = tw_result_is_value(r) && r.ptr && strcmp(r.ptr, PAGE) == 0;
    (void)arg;
    printf("   from a pool thread: waited for the loop's Deferred and got \"%s\"\n",
           ok ? (char *)r.ptr : "(wrong)");
    tw_result_drop(r);
    return expect(ok, "blocking_call_from_thread");
}

static tw_result step4(tw_result prev, void *arg)
{
    tw_result out;
    tw_deferred *d;
    (void)arg;
    tw_result_drop(prev);
    int rc = tw_blocking_call_from_thread(reactor, get_page, NULL, &out);
    printf("4. blocking_call_from_thread on the loop thread: %s at once "
           "(it would wait for itself)\n", tw_err_name(rc));
    if (rc != TW_EDEADLK)
        return tw_result_fail(TW_EINVAL, "blocking_call_from_thread on the loop");
    check(tw_defer_to_thread(reactor, fetch, NULL, &d), "defer_to_thread");
    check(tw_deferred_add_callback(d, print_page, NULL), "add_callback");
    return tw_result_deferred(d);
}

/* ---- 5. the pool's size ------------------------------------------------------------ */

static tw_result step5(tw_result prev, void *arg)
{
    tw_pool *pool;
    tw_pool_stats before, after;
    (void)arg;
    tw_result_drop(prev);
    check(tw_reactor_get_thread_pool(reactor, &pool), "get_thread_pool");
    check(tw_pool_stats_get(pool, &before), "pool_stats_get");
    check(tw_reactor_suggest_thread_pool_size(reactor, 4), "suggest_thread_pool_size");
    check(tw_pool_stats_get(pool, &after), "pool_stats_get");
    printf("5. suggest_thread_pool_size(4): the reactor pool's limits went from (%zu, %zu) "
           "to (%zu, %zu)\n", before.min, before.max, after.min, after.max);
    return expect(before.max == 10 && after.max == 4, "suggest_thread_pool_size");
}

/* ---- 6. the wedge ------------------------------------------------------------------- */

static tw_pool *wedge_pool;
static tw_queue *q;
static char wedge_report[256];

static void on_diag(void *ctx, const tw_diag *d) /* the pool's monitor thread */
{
    (void)ctx;
    if (d->code == TW_EDEADLK && !wedge_report[0])
        snprintf(wedge_report, sizeof wedge_report, "%s", d->message);
}

/* print(q.get() + q.get()) -- the timeout only keeps a broken build from hanging */
static tw_result blocker(void *arg, tw_cancel *cancel)
{
    void *a, *b;
    (void)arg;
    (void)cancel;
    if (tw_queue_get_timeout(q, &a, 10.0) || tw_queue_get_timeout(q, &b, 10.0))
        return tw_result_fail(TW_ETIMEDOUT, "the blocker was never unblocked");
    return tw_result_value((void *)((intptr_t)a + (intptr_t)b), NULL);
}

/* q.put(a); q.put(b) -- unblocker i puts 2i + 1 and 2i + 2 */
static tw_result unblocker(void *arg, tw_cancel *cancel)
{
    intptr_t i = (intptr_t)arg;
    (void)cancel;
    if (tw_queue_put(q, (void *)(2 * i + 1)) || tw_queue_put(q, (void *)(2 * i + 2)))
        return tw_result_fail(TW_EINVAL, "put");
    return tw_result_none();
}

static tw_result wedge_broken(tw_result r, void *arg)
{
    tw_list_result *all = r.ptr;
    intptr_t sum = (intptr_t)all->items[0].result.ptr + (intptr_t)all->items[1].result.ptr;
    tw_pool_stats st;
    (void)arg;
    tw_result_drop(r);
    /* The application's pool: the application stops and frees it. Once
     * stopped, its threads are joined and the report is safe to read. */
    check(tw_pool_stop(wedge_pool, 10.0, NULL), "pool_stop");
    check(tw_pool_stats_get(wedge_pool, &st), "pool_stats_get");
    tw_set_diag_hook(NULL, NULL);
    tw_pool_destroy(wedge_pool);
    tw_queue_destroy(q);
    printf("6. two blockers (q.get() + q.get()) hold both threads of a pool limited to 2;\n"
           "   the two unblockers that would feed them wait behind them. Reported:\n"
           "   \"%s\"\n"
           "   one thread past the limit ran the unblockers: the blockers answered %ld in all "
           "(1+2+3+4), %llu of 4 tasks completed\n",
           wedge_report[0] ? wedge_report : "(nothing)", (long)sum,
           (unsigned long long)st.team.completed);
    return expect(wedge_report[0] && st.wedges == 1 && sum == 10 && st.team.completed == 4,
                  "the wedge");
}

static tw_result step6(tw_result prev, void *arg)
{
    tw_pool_config cfg = TW_POOL_CONFIG_INIT(0, 2);
    tw_deferred *d[4], *all;
    (void)arg;
    tw_result_drop(prev);
    cfg.wedge_timeout = 0.2; /* the default 5 s is too long for a demo */
    cfg.wedge_extra = 1;
    tw_set_diag_hook(on_diag, NULL);
    check(tw_queue_create(TW_QUEUE_FIFO, 0, &q), "queue_create");
    check(tw_pool_create_with(&cfg, &wedge_pool), "pool_create_with");
    for (intptr_t i = 0; i < 2; i++)
        check(tw_defer_to_thread_pool(reactor, wedge_pool, blocker, NULL, &d[i]), "blocker");
    for (intptr_t i = 0; i < 2; i++)
        check(tw_defer_to_thread_pool(reactor, wedge_pool, unblocker, (void *)i, &d[2 + i]),
              "unblocker");
    check(tw_gather_results(d, 4, true, &all), "gather_results");
    for (int i = 0; i < 4; i++)
        tw_deferred_unref(d[i]);
    check(tw_deferred_add_callback(all, wedge_broken, NULL), "add_callback");
    return tw_result_deferred(all);
}

/* ---- 7. a blocking call during shutdown ------------------------------------------------ */

static tw_deferred *never; /* what the pool thread asked for; it never comes */

static tw_result never_ready(void *arg) /* the loop, for the pool thread */
{
    (void)arg;
    check(tw_deferred_create(&never, NULL, NULL), "deferred_create");
    puts("7. a pool thread waits in blocking_call_from_thread for a Deferred that never "
         "fires,\n   and the loop stops meanwhile");
    tw_reactor_stop(reactor);
    return tw_result_deferred(tw_deferred_ref(never));
}

static tw_result wait_forever(void *arg, tw_cancel *cancel) /* a pool thread */
{
    tw_result out;
    (void)arg;
    (void)cancel;
    int rc = tw_blocking_call_from_thread(reactor, never_ready, NULL, &out);
    if (rc == 0)
        tw_result_drop(out); /* not expected: `never` never fires */
    return tw_result_value((void *)(intptr_t)rc, NULL);
}

static tw_result released(tw_result r, void *arg)
{
    int rc = (int)(intptr_t)r.ptr;
    (void)arg;
    tw_result_drop(r);
    printf("   the shutdown released it: %s, so the pool (and the reactor) could stop\n",
           tw_err_name(rc));
    return expect(rc == TW_ESHUTDOWN, "blocking call during shutdown");
}

static tw_result step7(tw_result prev, void *arg)
{
    tw_deferred *d;
    (void)arg;
    tw_result_drop(prev);
    check(tw_defer_to_thread(reactor, wait_forever, NULL, &d), "defer_to_thread");
    check(tw_deferred_add_callback(d, released, NULL), "add_callback");
    return tw_result_deferred(d);
}

/* ---- the chain ------------------------------------------------------------------------- */

static tw_result finish(tw_result r, void *arg)
{
    (void)arg;
    if (tw_result_is_failure(r))
        printf("FAILED: %s\n", tw_failure_message(tw_result_as_failure(r)));
    passed = !tw_result_is_failure(r);
    tw_result_drop(r);
    tw_reactor_stop(reactor); /* already stopping after step 7; not after a failure */
    return tw_result_none();
}

static void start(void *arg)
{
    static const tw_callback_fn steps[] = {step1, step2, step3, step4, step5, step6, step7};
    tw_deferred *d;
    (void)arg;
    check(tw_deferred_succeed(&d, NULL, NULL), "succeed");
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        check(tw_deferred_add_callback(d, steps[i], NULL), "add_callback");
    check(tw_deferred_add_both(d, finish, NULL), "add_both");
    tw_deferred_unref(d); /* while it waits, the Deferred it waits on holds it */
}

int main(void)
{
    loop_thread = pthread_self();
    check(tw_reactor_create(&reactor), "reactor_create");
    check(tw_reactor_call_when_running(reactor, start, NULL), "call_when_running");
    check(tw_reactor_run(reactor), "run");

    pthread_join(plain, NULL);
    if (never)
        tw_deferred_unref(never); /* fires it with TW_EABANDONED: nobody waits any more */
    check(tw_reactor_destroy(reactor), "reactor_destroy");
    puts(passed ? "ok" : "FAILED");
    return passed ? 0 : 1;
}
