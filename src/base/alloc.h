/* Internal: twine's allocation entry points (see tw_set_allocator). */
#ifndef TW_BASE_ALLOC_H
#define TW_BASE_ALLOC_H

#include <stddef.h>

#include <twine/base.h>

/* Exported (TW_API) for the component libraries (libtwine-redis, ...),
 * which allocate through the same allocator. */
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

void *tw__cache_alloc(const tw__block_cache *c);
void tw__cache_free(const tw__block_cache *c, void *p);
/* Gives the calling thread's cached blocks back to the allocator. */
void tw__caches_flush(void);

#define TW__NEW(type) ((type *)tw__zalloc(sizeof(type)))
#define TW__DELETE(p) tw__free((p), sizeof *(p))

#endif
