/*
 * rlock_nesting — a lock that its owner may take again.
 *
 * A shared record has two parts that must be read together. get_first_part and
 * get_second_part each lock the record; get_both_parts locks it too, so that no
 * writer can slip in between its two calls. With a plain tw_lock the inner
 * acquire would wait forever for a lock its own thread holds. A tw_rlock lets
 * the owner re-enter, counts the depth, and must be released as many times.
 *
 * The program shows:
 *   - the depth seen inside the nested calls (tw_rlock_count),
 *   - that get_both_parts never sees a half-written record while a writer runs,
 *   - that a plain tw_lock taken twice by one thread does not come back (shown
 *     with a timeout, so nothing actually deadlocks), and that code compiled
 *     with TW_DEBUG=1, as this program is, gets a "probable self-deadlock"
 *     report through the diagnostic hook after a second of such a wait,
 *   - that a thread which does not own the RLock cannot release it (TW_EPERM).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* Debug Lock paths for this file: a thread that waits on a Lock it acquired
 * itself is reported (twine/sync.h). */
#define TW_DEBUG 1
#include <twine.h>

enum { UPDATES = 20000, READS = 20000 };

static struct {
    long first, second; /* a writer always sets both to the same value */
} record;
static tw_rlock record_lock = TW_RLOCK_INIT;

/* The diagnostic hook: keeps the last report. */
static struct {
    int count;
    enum tw_diag_kind kind;
    int code;
    char function[64];
    char message[256];
} seen;

static void keep_report(void *ctx, const tw_diag *d)
{
    (void)ctx;
    seen.count++;
    seen.kind = d->kind;
    seen.code = d->code;
    snprintf(seen.function, sizeof seen.function, "%s", d->function ? d->function : "?");
    snprintf(seen.message, sizeof seen.message, "%s", d->message ? d->message : "");
}

static uint32_t inner_depth; /* depth seen inside get_first_part */
static uint32_t outer_depth; /* depth seen inside get_both_parts */

static long get_first_part(void)
{
    long v = 0;
    TW_WITH(&record_lock) {
        inner_depth = tw_rlock_count(&record_lock);
        v = record.first;
    }
    return v;
}

static long get_second_part(void)
{
    long v = 0;
    TW_WITH(&record_lock) {
        v = record.second;
    }
    return v;
}

/* Both parts from one moment: the lock is held across both calls. */
static void get_both_parts(long *first, long *second)
{
    *first = 0;
    *second = -1; /* stays inconsistent if the block never ran */
    TW_WITH(&record_lock) {
        outer_depth = tw_rlock_count(&record_lock);
        *first = get_first_part();
        *second = get_second_part();
    }
}

static void *writer(void *arg)
{
    (void)arg;
    for (long i = 1; i <= UPDATES; i++) {
        TW_WITH(&record_lock) {
            record.first = i;
            record.second = i;
        }
    }
    return NULL;
}

struct release_attempt {
    int rc;
    bool owned;
};

static void *release_from_other_thread(void *arg)
{
    struct release_attempt *a = arg;
    a->owned = tw_rlock_is_owned(&record_lock);
    a->rc = tw_rlock_release(&record_lock);
    return NULL;
}

int main(void)
{
    int ok = 1;
    long torn = 0;
    pthread_t w;

    /* 1. Nested acquisition while a writer updates the record. */
    if (pthread_create(&w, NULL, writer, NULL) != 0) {
        fprintf(stderr, "rlock_nesting: cannot start a thread\n");
        return 1;
    }
    for (int i = 0; i < READS; i++) {
        long a, b;
        get_both_parts(&a, &b);
        if (a != b)
            torn++;
    }
    pthread_join(w, NULL);
    printf("get_both_parts holds the RLock at depth %u; the nested get_first_part re-enters at "
           "depth %u\n",
           outer_depth, inner_depth);
    printf("  %d reads during %d writes, %ld inconsistent; depth after return: %u\n", READS,
           UPDATES, torn, tw_rlock_count(&record_lock));
    ok &= outer_depth == 1 && inner_depth == 2 && torn == 0 && !tw_rlock_locked(&record_lock);

    /* 2. The same nesting with a plain Lock: the second acquire never succeeds.
     *    Compiled with TW_DEBUG=1, the wait is reported after a second. */
    {
        tw_lock plain = TW_LOCK_INIT;
        int rc;
        tw_set_diag_hook(keep_report, NULL);
        tw_lock_acquire(&plain);
        rc = tw_lock_acquire_timeout(&plain, 1.5); /* a plain acquire would hang here */
        tw_set_diag_hook(NULL, NULL);
        printf("a plain tw_lock taken again by its holder: acquire_timeout(1.5 s) -> %s\n"
               "  (a plain acquire there would wait forever: a self-deadlock)\n",
               tw_err_name(rc));
        printf("  the debug build's report, after 1 s: %s %s in %s:\n    %s\n",
               seen.kind == TW_DIAG_WARNING ? "warning" : "?", tw_err_name(seen.code),
               seen.function, seen.message);
        ok &= rc == TW_ETIMEDOUT;
        ok &= seen.count == 1 && seen.kind == TW_DIAG_WARNING && seen.code == TW_EDEADLK &&
              strstr(seen.message, "probable self-deadlock") != NULL;
        ok &= tw_lock_release(&plain) == 0;
    }

    /* 3. Only the owner may release an RLock. */
    {
        struct release_attempt other = {0, true};
        int rc;
        tw_rlock_acquire(&record_lock);
        tw_rlock_acquire(&record_lock);
        if (pthread_create(&w, NULL, release_from_other_thread, &other) != 0) {
            fprintf(stderr, "rlock_nesting: cannot start a thread\n");
            return 1;
        }
        pthread_join(w, NULL);
        printf("another thread releasing our RLock -> %s; we still hold it at depth %u\n",
               tw_err_name(other.rc), tw_rlock_count(&record_lock));
        ok &= other.rc == TW_EPERM && !other.owned && tw_rlock_count(&record_lock) == 2;

        ok &= tw_rlock_release(&record_lock) == 0;
        ok &= tw_rlock_locked(&record_lock); /* one release per acquire: still held */
        ok &= tw_rlock_release(&record_lock) == 0;
        rc = tw_rlock_release(&record_lock); /* one too many */
        printf("two acquires, two releases, then a third release -> %s\n", tw_err_name(rc));
        ok &= rc == TW_EPERM && !tw_rlock_locked(&record_lock);
    }

    puts(ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
