/* The swappable allocator.
 *
 * `live` counts blocks handed out and not yet freed; tw_set_allocator refuses
 * to switch while it is non-zero, so every block goes back to the allocator
 * that made it. The current allocator is read without a lock: it can only
 * change while nothing is live, i.e. while no other thread can be inside an
 * allocation that needs it — provided the application does not allocate on
 * one thread while switching on another, which the contract forbids. */
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "debug/debug.h"

static void *libc_alloc(void *ctx, size_t size)
{
    (void)ctx;
    return malloc(size);
}

static void *libc_realloc(void *ctx, void *ptr, size_t old_size, size_t new_size)
{
    (void)ctx;
    (void)old_size;
    return realloc(ptr, new_size);
}

static void libc_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    (void)size;
    free(ptr);
}

static const tw_allocator libc = {libc_alloc, libc_realloc, libc_free, NULL};
static tw_allocator current = {libc_alloc, libc_realloc, libc_free, NULL};
static size_t live;

int tw_set_allocator(const tw_allocator *a)
{
    if (a && (!a->alloc || !a->realloc || !a->free))
        return TW_EINVAL;
    tw__caches_flush();
    if (__atomic_load_n(&live, __ATOMIC_ACQUIRE) != 0)
        return TW_EBUSY;
    current = a ? *a : libc;
    return 0;
}

size_t tw_allocator_live(void)
{
    tw__caches_flush();
    return __atomic_load_n(&live, __ATOMIC_RELAXED);
}

void *tw__alloc(size_t size)
{
    void *p = current.alloc(current.ctx, size ? size : 1);
    if (p)
        __atomic_fetch_add(&live, 1, __ATOMIC_RELAXED);
    return p;
}

void *tw__zalloc(size_t size)
{
    void *p = tw__alloc(size);
    if (p)
        memset(p, 0, size);
    return p;
}

void *tw__realloc(void *ptr, size_t old_size, size_t new_size)
{
    if (!ptr)
        return tw__alloc(new_size);
    return current.realloc(current.ctx, ptr, old_size, new_size ? new_size : 1);
}

void tw__free(void *ptr, size_t size)
{
    if (!ptr)
        return;
#ifdef TW_DEBUG
    tw__dbg_forget(ptr, size); /* the Locks in the block are gone (their classes too) */
#endif
    current.free(current.ctx, ptr, size);
    /* release: pairs with the acquire in tw_set_allocator. */
    __atomic_fetch_sub(&live, 1, __ATOMIC_RELEASE);
}
