/* Portable backend: a fixed table of buckets, each a pthread mutex and a FIFO
 * list of parked threads; an address hashes to one bucket. Each parked thread
 * waits on its own condition variable (on its stack), so tw__wake(addr, n)
 * wakes exactly the n oldest waiters of that address and nobody else.
 *
 * Atomicity: the waiter compares *addr with expect while holding the bucket
 * mutex, and a waker takes the same mutex after changing *addr, so a wake
 * either comes after the waiter is listed or the waiter sees the new value.
 *
 * Lock order: a bucket mutex is a leaf; nothing else is taken under it. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

#include "platform/wait.h"

typedef struct waiter {
    struct waiter *next;
    uint32_t *addr;
    pthread_cond_t cond;
    bool woken;
} waiter;

typedef struct bucket {
    _Alignas(64) pthread_mutex_t mu; /* one cache line (or more) per bucket */
    waiter *head, *tail;
} bucket;

#define NBUCKETS 256
static bucket table[NBUCKETS];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;
static pthread_condattr_t monotonic;

static void table_init(void)
{
    for (int i = 0; i < NBUCKETS; i++)
        pthread_mutex_init(&table[i].mu, NULL);
    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
}

static bucket *bucket_of(const uint32_t *addr)
{
    uintptr_t a = (uintptr_t)addr;
    a ^= a >> 17;
    a *= (uintptr_t)0x9E3779B97F4A7C15ull;
    pthread_once(&table_once, table_init);
    return &table[(a >> 24) % NBUCKETS];
}

static void unlink_waiter(bucket *b, waiter *w)
{
    waiter **pp = &b->head, *prev = NULL;
    while (*pp && *pp != w) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = w->next;
    if (b->tail == w)
        b->tail = prev;
}

int tw__wait(uint32_t *addr, uint32_t expect, tw_deadline deadline)
{
    bucket *b = bucket_of(addr);
    waiter w = {NULL, addr, PTHREAD_COND_INITIALIZER, false};
    struct timespec ts;
    int rc = 0, cancel_state;

    if (deadline != TW_DEADLINE_NEVER) {
        if (deadline <= tw_now_ns())
            return TW_ETIMEDOUT;
        ts.tv_sec = deadline / 1000000000;
        ts.tv_nsec = deadline % 1000000000;
    }
    /* twine's waits are not cancellation points (as on the futex backend): a
     * thread cancelled here would leave the bucket locked and its node listed. */
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel_state);
    pthread_cond_init(&w.cond, &monotonic);
    pthread_mutex_lock(&b->mu);
    /* seq_cst: the check must see any value stored before the waker took the
     * bucket mutex; the mutex itself orders the rest. */
    if (__atomic_load_n(addr, __ATOMIC_SEQ_CST) == expect) {
        if (b->tail)
            b->tail->next = &w;
        else
            b->head = &w;
        b->tail = &w;
        while (!w.woken && rc != ETIMEDOUT) {
            if (deadline == TW_DEADLINE_NEVER)
                pthread_cond_wait(&w.cond, &b->mu);
            else
                rc = pthread_cond_timedwait(&w.cond, &b->mu, &ts);
        }
        if (!w.woken)
            unlink_waiter(b, &w);
    }
    pthread_mutex_unlock(&b->mu);
    pthread_cond_destroy(&w.cond);
    pthread_setcancelstate(cancel_state, NULL);
    return (!w.woken && rc == ETIMEDOUT) ? TW_ETIMEDOUT : 0;
}

void tw__wake(uint32_t *addr, int n)
{
    bucket *b = bucket_of(addr);
    waiter **pp, *prev = NULL;
    pthread_mutex_lock(&b->mu);
    pp = &b->head;
    while (*pp && n > 0) {
        waiter *w = *pp;
        if (w->addr != addr) {
            prev = w;
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        if (b->tail == w)
            b->tail = prev;
        w->woken = true;
        /* Signalled under the mutex: w lives on its thread's stack and that
         * thread cannot return before it re-takes the mutex. */
        pthread_cond_signal(&w->cond);
        n--;
    }
    pthread_mutex_unlock(&b->mu);
}

/* A parked thread waits on its condition variable with its bucket's mutex;
 * moving it to another bucket would pair that condition variable with a
 * second mutex, so this backend does not move waiters. */
int tw__requeue(uint32_t *from, uint32_t from_val, uint32_t *to)
{
    (void)from;
    (void)from_val;
    (void)to;
    return TW_ENOTSUP;
}

int tw__thread_cpus(void)
{
    int saved = errno; /* sysconf may set it (no /sys); twine keeps the caller's */
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    errno = saved;
    return n > 0 ? (int)n : 1;
}
