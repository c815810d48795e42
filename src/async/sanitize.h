/* Internal: what the sanitizers and Valgrind must be told about coroutine
 * stacks, as no-ops in a build without them.
 *
 * AddressSanitizer keeps per-stack state (bounds, fake frames for
 * use-after-return): every switch is bracketed by
 * __sanitizer_start_switch_fiber (before, naming the stack switched to) and
 * __sanitizer_finish_switch_fiber (after, on the stack switched to, which
 * learns the bounds of the one it came from). ThreadSanitizer keeps a
 * shadow call stack and a clock per fiber: __tsan_switch_to_fiber right
 * before each switch. Valgrind must know a stack's bounds to tell a stack
 * switch from a wild stack pointer. */
#ifndef TW_ASYNC_SANITIZE_H
#define TW_ASYNC_SANITIZE_H

#include <stddef.h>

/* Always inlined. Under ThreadSanitizer an out-of-line wrapper would be
 * instrumented: its entry would go on the shadow call stack of the fiber
 * switched from and its exit come off the one switched to, which then runs
 * out below its base. */
#define TW__SAN_INLINE inline __attribute__((always_inline))

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TW__ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define TW__TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(TW__ASAN)
#define TW__ASAN 1
#endif
#if defined(__SANITIZE_THREAD__) && !defined(TW__TSAN)
#define TW__TSAN 1
#endif

#ifdef TW__ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
static TW__SAN_INLINE void tw__asan_start(void **fake, const void *bottom, size_t size)
{
    __sanitizer_start_switch_fiber(fake, bottom, size);
}
static TW__SAN_INLINE void tw__asan_finish(void *fake, const void **bottom, size_t *size)
{
    __sanitizer_finish_switch_fiber(fake, bottom, size);
}
/* A stack taken from the cache may still carry the poisoned redzones of
 * frames that never returned (a coroutine's last frames). */
static TW__SAN_INLINE void tw__asan_unpoison(void *p, size_t n)
{
    __asan_unpoison_memory_region(p, n);
}
#else
static TW__SAN_INLINE void tw__asan_start(void **fake, const void *bottom, size_t size)
{
    (void)fake, (void)bottom, (void)size;
}
static TW__SAN_INLINE void tw__asan_finish(void *fake, const void **bottom, size_t *size)
{
    (void)fake, (void)bottom, (void)size;
}
static TW__SAN_INLINE void tw__asan_unpoison(void *p, size_t n)
{
    (void)p, (void)n;
}
#endif

#ifdef TW__TSAN
#include <sanitizer/tsan_interface.h>
static TW__SAN_INLINE void *tw__tsan_current(void)
{
    return __tsan_get_current_fiber();
}
static TW__SAN_INLINE void *tw__tsan_create(void)
{
    return __tsan_create_fiber(0);
}
static TW__SAN_INLINE void tw__tsan_destroy(void *fiber)
{
    __tsan_destroy_fiber(fiber);
}
/* Flags 0: the switch synchronises, as a hand-off between the two fibers of
 * one thread does. */
static TW__SAN_INLINE void tw__tsan_switch(void *fiber)
{
    __tsan_switch_to_fiber(fiber, 0);
}
#else
static TW__SAN_INLINE void *tw__tsan_current(void)
{
    return NULL;
}
static TW__SAN_INLINE void *tw__tsan_create(void)
{
    return NULL;
}
static TW__SAN_INLINE void tw__tsan_destroy(void *fiber)
{
    (void)fiber;
}
static TW__SAN_INLINE void tw__tsan_switch(void *fiber)
{
    (void)fiber;
}
#endif

/* Valgrind's client requests, when its header is installed (Debian:
 * valgrind); they cost a few instructions outside Valgrind. */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define TW__VALGRIND 1
#endif
#endif
static TW__SAN_INLINE unsigned tw__valgrind_register(void *lo, void *hi)
{
#ifdef TW__VALGRIND
    return VALGRIND_STACK_REGISTER(lo, hi);
#else
    (void)lo, (void)hi;
    return 0;
#endif
}
static TW__SAN_INLINE void tw__valgrind_deregister(unsigned id)
{
#ifdef TW__VALGRIND
    VALGRIND_STACK_DEREGISTER(id);
#else
    (void)id;
#endif
}

#endif
