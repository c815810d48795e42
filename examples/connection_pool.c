/*
 * connection_pool — a BoundedSemaphore limits how many threads use a resource.
 *
 * A pool holds POOL_SIZE "connections". A tw_bsem starts with one token per
 * connection: a worker takes a token before checking a connection out and gives
 * it back after returning the connection, so at most POOL_SIZE are ever out,
 * and a worker that finds the pool empty waits for a token instead of failing.
 * The pool's slot table has its own tw_lock, held only to pick or free a slot.
 *
 * Then the bug a BoundedSemaphore exists for: code that gives a token back
 * twice. A plain tw_sem accepts the extra release and now admits one worker
 * more than there are connections; a tw_bsem refuses it with TW_EOVERFLOW at
 * the line that has the bug.
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>

#include <twine.h>

enum { POOL_SIZE = 3, WORKERS = 8, CHECKOUTS = 2000 };

static tw_bsem tokens = TW_BSEM_INIT(POOL_SIZE);

static tw_lock slots_lock = TW_LOCK_INIT; /* guards every field below */
static bool in_use[POOL_SIZE];
static long uses[POOL_SIZE];
static int out_now, out_max;
static long checkouts, no_free_slot;

/* Called holding a token, so a free slot must exist. -1 only if the pool is broken. */
static int checkout(void)
{
    int slot = -1;
    tw_bsem_acquire(&tokens);
    TW_WITH(&slots_lock) {
        for (int i = 0; i < POOL_SIZE && slot < 0; i++)
            if (!in_use[i])
                slot = i;
        if (slot < 0) {
            no_free_slot++;
            break; /* leaves the TW_WITH block; the guard releases slots_lock */
        }
        in_use[slot] = true;
        uses[slot]++;
        checkouts++;
        if (++out_now > out_max)
            out_max = out_now;
    }
    return slot;
}

static void give_back(int slot)
{
    TW_WITH(&slots_lock) {
        in_use[slot] = false;
        out_now--;
    }
    tw_bsem_release(&tokens, 1);
}

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < CHECKOUTS; i++) {
        int slot = checkout();
        if (slot < 0) {
            tw_bsem_release(&tokens, 1);
            continue;
        }
        sched_yield(); /* "use" the connection; lets other workers pile up */
        give_back(slot);
    }
    return NULL;
}

int main(void)
{
    pthread_t threads[WORKERS];
    int ok = 1, rc;

    for (int i = 0; i < WORKERS; i++) {
        if (pthread_create(&threads[i], NULL, worker, NULL) != 0) {
            fprintf(stderr, "connection_pool: cannot start a thread\n");
            return 1;
        }
    }
    for (int i = 0; i < WORKERS; i++)
        pthread_join(threads[i], NULL);

    printf("%d workers made %ld checkouts from a pool of %d connections (uses: %ld %ld %ld)\n",
           WORKERS, checkouts, POOL_SIZE, uses[0], uses[1], uses[2]);
    printf("  most connections out at once: %d (limit %d); checkouts that found no free "
           "connection: %ld\n",
           out_max, POOL_SIZE, no_free_slot);
    ok &= checkouts == (long)WORKERS * CHECKOUTS && out_max <= POOL_SIZE && out_max >= 1 &&
          no_free_slot == 0 && out_now == 0 && tw_bsem_value(&tokens) == POOL_SIZE;

    /* The double release, with a plain Semaphore: accepted, and the limit is gone. */
    {
        tw_sem plain = TW_SEM_INIT(POOL_SIZE);
        int admitted = 0;
        rc = tw_sem_release(&plain, 1);
        while (tw_sem_try_acquire(&plain) == 0)
            admitted++;
        printf("extra release on a plain tw_sem -> %s; it now admits %d workers for %d "
               "connections\n",
               tw_err_name(rc), admitted, POOL_SIZE);
        ok &= rc == 0 && admitted == POOL_SIZE + 1;
    }

    /* The same bug with the BoundedSemaphore: refused, value unchanged. */
    rc = tw_bsem_release(&tokens, 1);
    printf("extra release on the tw_bsem -> %s (%s); value stays %u of %u\n", tw_err_name(rc),
           tw_strerror(rc), tw_bsem_value(&tokens), tw_bsem_limit(&tokens));
    ok &= rc == TW_EOVERFLOW && tw_bsem_value(&tokens) == POOL_SIZE;

    puts(ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
