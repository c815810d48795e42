/* Per-thread reuse of same-sized blocks, for objects made and freed at a high
 * rate on one thread (Deferreds on the loop thread).
 *
 * Each cache has a slot in a thread-local array: a free list of at most
 * `max` blocks. Cached blocks are still allocated as far as the allocator
 * and `tw_allocator_live` are concerned, so the calling thread's caches are
 * given back to the allocator before either switches allocators or counts
 * live blocks (tw__caches_flush), and a thread's caches go back when it
 * exits (a pthread key destructor, armed on the thread's first cached free). */
#include <pthread.h>

#include "base/alloc.h"

_Thread_local struct tw__cache_slot tw__cache_slots[TW__CACHE_SLOTS]
    __attribute__((tls_model("initial-exec")));
static _Thread_local bool armed __attribute__((tls_model("initial-exec")));

static pthread_key_t exit_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void flush_mine(void)
{
    for (int i = 0; i < TW__CACHE_SLOTS; i++) {
        struct tw__cache_slot *s = &tw__cache_slots[i];
        while (s->head) {
            struct tw__cache_block *b = s->head;
            s->head = b->next;
            tw__free(b, s->size);
        }
        s->room = armed ? s->max : 0;
    }
}

static void on_thread_exit(void *unused)
{
    (void)unused;
    /* A later destructor may still free a Deferred: it re-arms the key,
     * which runs this again (up to PTHREAD_DESTRUCTOR_ITERATIONS). */
    armed = false;
    flush_mine(); /* room 0: nothing is cached until then */
}

static void make_key(void)
{
    if (pthread_key_create(&exit_key, on_thread_exit) != 0)
        exit_key = (pthread_key_t)-1;
}

void tw__caches_flush(void)
{
    flush_mine();
}

void tw__cache_free_slow(const tw__block_cache *c, void *p)
{
    struct tw__cache_slot *s = &tw__cache_slots[c->slot];
    /* Room is 0 when the list is full, or when the exit hook is not armed:
     * without it the blocks would outlive the thread. */
    if (!armed) {
        pthread_once(&key_once, make_key);
        if (exit_key != (pthread_key_t)-1 && pthread_setspecific(exit_key, &armed) == 0) {
            armed = true;
            s->max = c->max;
            s->size = c->size;
            s->room = c->max; /* the list is empty: flushed when the hook last ran */
            if (s->room) {
                tw__cache_free(c, p);
                return;
            }
        }
    }
    tw__free(p, c->size);
}
