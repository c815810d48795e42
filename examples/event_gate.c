/*
 * event_gate — hold worker threads at a gate until setup is done.
 *
 * Workers start early and wait on a tw_event; the main thread prepares the
 * shared configuration and then sets the event, which releases every waiter at
 * once. Whatever the main thread wrote before tw_event_set is visible to a
 * worker after its wait returns, so the configuration needs no lock of its own.
 *
 * Each worker reports its arrival through a tw_sem, so the main thread knows
 * they are all at the gate (without sleeping) before it opens it. While the gate
 * is closed, a wait with a timeout returns TW_ETIMEDOUT, no earlier than asked.
 */
#include <pthread.h>
#include <stdio.h>

#include <twine.h>

enum { WORKERS = 4 };

static tw_event gate = TW_EVENT_INIT;
static tw_sem arrived = TW_SEM_INIT(0);

static struct {
    int answer; /* written by main before the gate opens, read-only after */
    const char *greeting;
} config;

static int passed; /* workers past the gate (atomic) */

struct worker_result {
    int rc;
    bool saw_config;
};

static void *worker(void *arg)
{
    struct worker_result *r = arg;
    tw_sem_release(&arrived, 1);
    r->rc = tw_event_wait(&gate);
    __atomic_fetch_add(&passed, 1, __ATOMIC_RELAXED);
    r->saw_config = config.answer == 42 && config.greeting != NULL;
    return NULL;
}

int main(void)
{
    pthread_t threads[WORKERS];
    struct worker_result results[WORKERS];
    int ok = 1, rc, seen = 0, before;
    int64_t t0, waited_ns;

    for (int i = 0; i < WORKERS; i++) {
        results[i].rc = -1;
        results[i].saw_config = false;
        if (pthread_create(&threads[i], NULL, worker, &results[i]) != 0) {
            fprintf(stderr, "event_gate: cannot start a thread\n");
            return 1;
        }
    }
    for (int i = 0; i < WORKERS; i++)
        tw_sem_acquire(&arrived);

    /* The gate is closed: a timed wait gives up, and nobody has passed. */
    t0 = tw_now_ns();
    rc = tw_event_wait_timeout(&gate, 0.05);
    waited_ns = tw_now_ns() - t0;
    before = __atomic_load_n(&passed, __ATOMIC_RELAXED);
    printf("%d workers at the closed gate; wait_timeout(0.05 s) -> %s after %.3f s; passed: %d\n",
           WORKERS, tw_err_name(rc), (double)waited_ns / 1e9, before);
    ok &= rc == TW_ETIMEDOUT && waited_ns >= 50000000 && before == 0;

    /* Setup, then open the gate. */
    config.answer = 42;
    config.greeting = "hello";
    tw_event_set(&gate);
    for (int i = 0; i < WORKERS; i++) {
        pthread_join(threads[i], NULL);
        ok &= results[i].rc == 0;
        seen += results[i].saw_config;
    }
    printf("gate opened after setup: %d workers passed, %d saw the finished configuration\n",
           __atomic_load_n(&passed, __ATOMIC_RELAXED), seen);
    ok &= passed == WORKERS && seen == WORKERS;

    /* An open gate lets latecomers straight through; clear closes it again. */
    rc = tw_event_try_wait(&gate);
    printf("a latecomer at the open gate: try_wait -> %s", tw_err_name(rc));
    ok &= rc == 0;
    tw_event_clear(&gate);
    rc = tw_event_wait_timeout(&gate, 0);
    printf("; after clear: wait_timeout(0) -> %s\n", tw_err_name(rc));
    ok &= rc == TW_ETIMEDOUT;

    puts(ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
