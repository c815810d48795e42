/* Internal: twine's allocation entry points (see tw_set_allocator). */
#ifndef TW_BASE_ALLOC_H
#define TW_BASE_ALLOC_H

#include <stddef.h>

#include <twine/base.h>

/* TW_API: the component libraries (libtwine-http, libtwine-redis) allocate
 * through them across the shared library's boundary. */
TW_API void *tw__alloc(size_t size);
TW_API void *tw__zalloc(size_t size);
/* On failure returns NULL and leaves ptr untouched. */
TW_API void *tw__realloc(void *ptr, size_t old_size, size_t new_size);
TW_API void tw__free(void *ptr, size_t size);

/* A per-thread cache of blocks of one size (block_cache.c). Each cache
 * names its own slot below TW__CACHE_SLOTS. */
#define TW__CACHE_SLOTS 1
typedef struct tw__block_cache {
    size_t size;  /* >= sizeof(void *) */
    uint32_t max; /* blocks kept per thread */
    int slot;
} tw__block_cache;
#define TW__CACHE_SLOT_DEFERRED 0

/* A thread's slot: a free list, and how many more blocks it may take.
 * `room` is 0 until the thread's exit hook is armed (block_cache.c), so a
 * free with room needs no other test. */
struct tw__cache_block {
    struct tw__cache_block *next;
};
struct tw__cache_slot {
    struct tw__cache_block *head;
    uint32_t room; /* max minus the blocks held; 0 while the exit hook is not armed */
    uint32_t max;  /* set with the hook */
    size_t size;
};
/* initial-exec, as the library's other hot thread-locals: every Deferred's
 * allocation and free reads them, and the default model costs a
 * __tls_get_addr call in a shared library. */
extern _Thread_local struct tw__cache_slot tw__cache_slots[TW__CACHE_SLOTS]
    __attribute__((tls_model("initial-exec")));

/* The out-of-line half of tw__cache_free: a full list, or the thread's
 * first free (which arms the exit hook). */
void tw__cache_free_slow(const tw__block_cache *c, void *p);

/* Inline, with no call in the common case: a Deferred is made and freed a
 * few times per callback chain. */
static inline void *tw__cache_alloc(const tw__block_cache *c)
{
    struct tw__cache_slot *s = &tw__cache_slots[c->slot];
    struct tw__cache_block *b = s->head;
    if (__builtin_expect(b != NULL, 1)) {
        s->head = b->next;
        s->room++;
        return b;
    }
    return tw__alloc(c->size);
}
static inline void tw__cache_free(const tw__block_cache *c, void *p)
{
    struct tw__cache_slot *s = &tw__cache_slots[c->slot];
    if (__builtin_expect(s->room != 0, 1)) {
        struct tw__cache_block *b = p;
        b->next = s->head;
        s->head = b;
        s->room--;
        return;
    }
    tw__cache_free_slow(c, p);
}
/* Gives the calling thread's cached blocks back to the allocator. */
void tw__caches_flush(void);

#define TW__NEW(type) ((type *)tw__zalloc(sizeof(type)))
#define TW__DELETE(p) tw__free((p), sizeof *(p))

#endif
