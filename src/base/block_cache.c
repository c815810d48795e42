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

struct cached {
    struct cached *next;
};

/* initial-exec, as the library's other hot thread-locals: every Deferred's
 * allocation and free reads these, and the default model costs a
 * __tls_get_addr call in a shared library. */
static _Thread_local struct slot {
    struct cached *head;
    uint32_t n;
    uint32_t size;
} slots[TW__CACHE_SLOTS] __attribute__((tls_model("initial-exec")));
static _Thread_local bool armed __attribute__((tls_model("initial-exec")));

static pthread_key_t exit_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void flush_mine(void)
{
    for (int i = 0; i < TW__CACHE_SLOTS; i++) {
        struct slot *s = &slots[i];
        while (s->head) {
            struct cached *b = s->head;
            s->head = b->next;
            tw__free(b, s->size);
        }
        s->n = 0;
    }
}

static void on_thread_exit(void *unused)
{
    (void)unused;
    flush_mine();
    /* A later destructor may still free a Deferred: it re-arms the key,
     * which runs this again (up to PTHREAD_DESTRUCTOR_ITERATIONS). */
    armed = false;
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

void tw__cache_free(const tw__block_cache *c, void *p)
{
    struct slot *s = &slots[c->slot];
    if (s->n >= c->max) {
        tw__free(p, c->size);
        return;
    }
    if (!armed) {
        /* Without the exit hook the blocks would outlive the thread: cache nothing. */
        pthread_once(&key_once, make_key);
        if (exit_key == (pthread_key_t)-1 || pthread_setspecific(exit_key, &armed) != 0) {
            tw__free(p, c->size);
            return;
        }
        armed = true;
    }
    struct cached *b = p;
    b->next = s->head;
    s->head = b;
    s->size = (uint32_t)c->size;
    s->n++;
}

void *tw__cache_alloc(const tw__block_cache *c)
{
    struct slot *s = &slots[c->slot];
    struct cached *b = s->head;
    if (b) {
        s->head = b->next;
        s->n--;
        return b;
    }
    return tw__alloc(c->size);
}
