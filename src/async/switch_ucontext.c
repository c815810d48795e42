/* The fallback context switch: POSIX ucontext (getcontext, makecontext,
 * swapcontext), selected by switch.h on architectures without a hand-written
 * switch, or everywhere with TW_ASYNC_UCONTEXT. swapcontext also saves and
 * restores the signal mask, a system call per switch: correct, and about an
 * order of magnitude slower than the hand-written switches. */
#include "async/switch.h"

#ifdef TW__SWITCH_UCONTEXT

#include <stdint.h>
#include <stdlib.h>

/* makecontext passes int arguments only: each pointer travels as two halves. */
static void start(unsigned e_hi, unsigned e_lo, unsigned a_hi, unsigned a_lo)
{
    uintptr_t e = ((uintptr_t)(((uint64_t)e_hi << 32) | e_lo));
    uintptr_t a = ((uintptr_t)(((uint64_t)a_hi << 32) | a_lo));
    ((void (*)(void *))e)((void *)a);
    abort(); /* entry never returns */
}

void tw__ctx_make(tw__ctx *ctx, void *lo, size_t size, void (*entry)(void *), void *arg)
{
    uint64_t e = (uint64_t)(uintptr_t)entry, a = (uint64_t)(uintptr_t)arg;

    getcontext(&ctx->uc);
    ctx->uc.uc_stack.ss_sp = lo;
    ctx->uc.uc_stack.ss_size = size;
    ctx->uc.uc_link = NULL;
    makecontext(&ctx->uc, (void (*)(void))start, 4, (unsigned)(e >> 32), (unsigned)e,
                (unsigned)(a >> 32), (unsigned)a);
}

void tw__ctx_switch(tw__ctx *from, tw__ctx *to)
{
    swapcontext(&from->uc, &to->uc);
}

#endif
