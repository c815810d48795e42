/*
 * producer_consumer — a bounded buffer between threads, built on Conditions.
 *
 * Producers put numbers into a small ring buffer; consumers take them out and
 * add them up. Two Conditions share the buffer's one tw_lock: not_empty (for
 * consumers) and not_full (for producers). Each side waits with
 * tw_cond_wait_for and a predicate, which re-checks the state after every
 * wake-up, and notifies the other side after changing the buffer. All buffer
 * access happens inside TW_WITH blocks, so the lock is released on every path.
 *
 * When the last producer finishes it wakes every consumer; a consumer stops
 * once the buffer is empty and no producer is left. The program checks that
 * the consumers saw every item exactly: the count and the sum must match.
 * Every wait has a generous timeout, so a bug shows up as a failure, not a hang.
 */
#include <pthread.h>
#include <stdio.h>

#include <twine.h>

enum { PRODUCERS = 2, CONSUMERS = 3, ITEMS = 20000, CAPACITY = 4 };
#define WAIT_LIMIT 10.0 /* seconds; only reached if something is broken */

static tw_lock buffer_lock = TW_LOCK_INIT; /* guards everything below */
static tw_cond not_empty = TW_COND_INIT_LOCK(&buffer_lock);
static tw_cond not_full = TW_COND_INIT_LOCK(&buffer_lock);
static long ring[CAPACITY];
static int head, count, fullest;
static int producers_left = PRODUCERS;
static int timeouts;

/* Predicates: called by tw_cond_wait_for with buffer_lock held. */
static bool has_room(void *arg)
{
    (void)arg;
    return count < CAPACITY;
}

static bool has_item_or_done(void *arg)
{
    (void)arg;
    return count > 0 || producers_left == 0;
}

static void *producer(void *arg)
{
    (void)arg;
    for (long v = 1; v <= ITEMS; v++) {
        TW_WITH(&not_full) {
            if (tw_cond_wait_for(&not_full, has_room, NULL, WAIT_LIMIT) != 0) {
                timeouts++;
                return NULL; /* the guard releases buffer_lock */
            }
            ring[(head + count) % CAPACITY] = v;
            if (++count > fullest)
                fullest = count;
            tw_cond_notify(&not_empty, 1);
        }
    }
    TW_WITH(&buffer_lock) {
        if (--producers_left == 0)
            tw_cond_notify_all(&not_empty); /* consumers waiting on an empty buffer may stop */
    }
    return NULL;
}

struct tally {
    long items, sum;
};

static void *consumer(void *arg)
{
    struct tally *t = arg;
    bool done = false;
    while (!done) {
        TW_WITH(&not_empty) {
            if (tw_cond_wait_for(&not_empty, has_item_or_done, NULL, WAIT_LIMIT) != 0) {
                timeouts++;
                done = true;
                break; /* leaves the TW_WITH block (not the while loop) */
            }
            if (count == 0) { /* empty, and no producer is left */
                done = true;
                break;
            }
            t->sum += ring[head];
            t->items++;
            head = (head + 1) % CAPACITY;
            count--;
            tw_cond_notify(&not_full, 1);
        }
    }
    return NULL;
}

int main(void)
{
    pthread_t p[PRODUCERS], c[CONSUMERS];
    struct tally tallies[CONSUMERS] = {{0, 0}};
    long items = 0, sum = 0;
    const long want_items = (long)PRODUCERS * ITEMS;
    const long want_sum = (long)PRODUCERS * ITEMS * (ITEMS + 1) / 2;
    int ok;

    for (int i = 0; i < CONSUMERS; i++)
        if (pthread_create(&c[i], NULL, consumer, &tallies[i]) != 0)
            return 1;
    for (int i = 0; i < PRODUCERS; i++)
        if (pthread_create(&p[i], NULL, producer, NULL) != 0)
            return 1;
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(p[i], NULL);
    for (int i = 0; i < CONSUMERS; i++) {
        pthread_join(c[i], NULL);
        items += tallies[i].items;
        sum += tallies[i].sum;
    }

    printf("%d producers x %d items through a %d-slot buffer to %d consumers\n", PRODUCERS,
           ITEMS, CAPACITY, CONSUMERS);
    printf("  consumed %ld items (expected %ld), sum %ld (expected %ld)\n", items, want_items,
           sum, want_sum);
    printf("  per consumer:");
    for (int i = 0; i < CONSUMERS; i++)
        printf(" %ld", tallies[i].items);
    printf("; buffer never held more than %d; waits timed out: %d\n", fullest, timeouts);

    ok = items == want_items && sum == want_sum && fullest <= CAPACITY && timeouts == 0 &&
         count == 0;
    puts(ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
