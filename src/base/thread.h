/* Internal: per-thread identity and spinning helpers. */
#ifndef TW_BASE_THREAD_H
#define TW_BASE_THREAD_H

#include <stdbool.h>
#include <stdint.h>

#include <twine/base.h>

/* A non-zero id for the calling thread: tw__self in twine/base.h. */
static inline uint32_t tw__thread_id(void)
{
    return tw__self();
}

/* The calling thread's spin budget, in pause instructions: TW__SPIN_MAX, or 0
 * when the thread may run on one CPU only — there, spinning can only delay
 * the thread it waits for. Measured once per thread and kept until
 * tw__spin_limit_forget, which the spin-wait before sleeping calls every 64
 * waits that get past its first look (so on such a thread the Lock's answer
 * is refreshed too). */
#define TW__SPIN_MAX 255
int tw__spin_limit(void);
/* Makes the next tw__spin_limit measure the affinity again. */
void tw__spin_limit_forget(void);

static inline void tw__cpu_relax(void);

/* Pauses n times; always true, so it can sit in a loop condition. */
static inline bool tw__pause_n(int n)
{
    for (int k = 0; k < n; k++)
        tw__cpu_relax();
    return true;
}

/* Bounded spinning with exponential backoff: the first probe is immediate,
 * then each waits twice as long as the one before (1, 2, 4, ... pauses), at
 * most TW__SPIN_MAX pauses (~3 us on a current x86) in all. Backing off keeps
 * the spinner from stealing the cache line its owner is using.
 *     for (TW__SPIN(i, d)) { probe; break when done }                        */
#define TW__SPIN(i, d)                                                               \
    int i = 0, d = 0, tw__limit_ = tw__spin_limit();                                 \
    i + d <= tw__limit_ && tw__pause_n(d); i += d, d = d ? d << 1 : 1

static inline void tw__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
