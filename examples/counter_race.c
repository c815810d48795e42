/*
 * counter_race — why a shared counter needs a lock.
 *
 * Several threads each add 1 to a shared counter many times. An increment is
 * three steps: read the value, compute value + 1, write it back. When two
 * threads read the same value, both write value + 1 and one increment is lost.
 *
 * The counter here is read and written with separate (relaxed) atomic loads
 * and stores, so the program has no undefined behaviour, yet the
 * read-modify-write as a whole is not atomic: exactly the bug above. A yield
 * between the read and the write makes a lost update likely, not certain. The
 * losses are often large: a thread that read the counter, was descheduled, and
 * then writes its stale value + 1 erases every increment made in the meantime.
 *
 * The run without a lock reports what happened; whether it lost updates this
 * time depends on the scheduler. The run with a tw_lock must be exact, and it
 * is the only thing this program's exit status depends on.
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

#include <twine.h>

enum { THREADS = 4, ITERATIONS = 100000, YIELD_EVERY = 64 };

static long counter;                 /* accessed only through relaxed atomics */
static tw_lock counter_lock = TW_LOCK_INIT;
static tw_event start = TW_EVENT_INIT; /* opened once every thread exists */

/* One increment, deliberately split into a read and a later write. */
static void increment(long i)
{
    long v = __atomic_load_n(&counter, __ATOMIC_RELAXED);
    if (i % YIELD_EVERY == 0)
        sched_yield(); /* another thread may read the same v meanwhile */
    __atomic_store_n(&counter, v + 1, __ATOMIC_RELAXED);
}

static void *unprotected_worker(void *arg)
{
    (void)arg;
    tw_event_wait(&start);
    for (long i = 0; i < ITERATIONS; i++)
        increment(i);
    return NULL;
}

static void *locked_worker(void *arg)
{
    (void)arg;
    tw_event_wait(&start);
    for (long i = 0; i < ITERATIONS; i++) {
        TW_WITH(&counter_lock) {
            increment(i); /* the same racy code, now one thread at a time */
        }
    }
    return NULL;
}

/* Runs THREADS copies of fn from a common start line; returns the final count. */
static long run(void *(*fn)(void *))
{
    pthread_t threads[THREADS];

    __atomic_store_n(&counter, 0, __ATOMIC_RELAXED);
    tw_event_clear(&start);
    for (int i = 0; i < THREADS; i++) {
        if (pthread_create(&threads[i], NULL, fn, NULL) != 0) {
            fprintf(stderr, "counter_race: cannot start a thread\n");
            exit(1);
        }
    }
    tw_event_set(&start);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    return __atomic_load_n(&counter, __ATOMIC_RELAXED);
}

int main(void)
{
    const long expected = (long)THREADS * ITERATIONS;
    long racy, locked;

    printf("%d threads each add 1 to a shared counter %d times; expected total %ld\n",
           THREADS, ITERATIONS, expected);

    racy = run(unprotected_worker);
    if (racy != expected)
        printf("  without a lock: %ld -- %ld updates lost\n", racy, expected - racy);
    else
        printf("  without a lock: %ld -- no update lost this run; the race is still there\n",
               racy);

    locked = run(locked_worker);
    printf("  with a tw_lock: %ld -- %s\n", locked, locked == expected ? "exact" : "WRONG");

    puts(locked == expected ? "ok" : "FAILED");
    return locked == expected ? 0 : 1;
}
