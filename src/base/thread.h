/* Internal: per-thread identity and spinning helpers. */
#ifndef TW_BASE_THREAD_H
#define TW_BASE_THREAD_H

#include <stdint.h>

/* A non-zero id for the calling thread, unique among all threads the process
 * has had (until 2^32 - 1 threads have asked). Cheap after the first call. */
uint32_t tw__thread_id(void);

/* Iterations a waiter spins before parking; 0 on a single CPU, where spinning
 * can only delay the thread it waits for. */
int tw__spin_limit(void);

static inline void tw__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
