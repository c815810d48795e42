/* The fallback context switch: POSIX ucontext (getcontext, makecontext,
 * swapcontext), selected by switch.h on architectures without a hand-written
 * switch, or everywhere with TW_ASYNC_UCONTEXT. swapcontext also saves and
 * restores the signal mask, a system call per switch: correct, and about an
 * order of magnitude slower than the hand-written switches. */
#include "async/switch.h"

#ifdef TW__SWITCH_UCONTEXT

#include <stdint.h>

/* makecontext passes int arguments only: each pointer travels as two halves. */
static void *join(unsigned hi, unsigned lo)
{
    return (void *)(uintptr_t)(((uint64_t)hi << 32) | lo);
}

static void start(unsigned f_hi, unsigned f_lo, unsigned a_hi, unsigned a_lo, unsigned c_hi,
                  unsigned c_lo)
{
    tw_result (*fn)(void *) = (tw_result(*)(void *))(uintptr_t)join(f_hi, f_lo);
    tw_result r = fn(join(a_hi, a_lo));
    tw__co_returned(join(c_hi, c_lo), r.ptr, r.drop); /* never returns */
}

void tw__ctx_make(tw__ctx *ctx, void *lo, size_t size, tw_result (*fn)(void *), void *arg,
                  struct tw__co *co)
{
    uint64_t f = (uint64_t)(uintptr_t)fn, a = (uint64_t)(uintptr_t)arg;
    uint64_t c = (uint64_t)(uintptr_t)co;

    getcontext(&ctx->uc);
    ctx->uc.uc_stack.ss_sp = lo;
    ctx->uc.uc_stack.ss_size = size;
    ctx->uc.uc_link = NULL;
    makecontext(&ctx->uc, (void (*)(void))start, 6, (unsigned)(f >> 32), (unsigned)f,
                (unsigned)(a >> 32), (unsigned)a, (unsigned)(c >> 32), (unsigned)c);
}

void tw__ctx_switch(tw__ctx *from, tw__ctx *to)
{
    swapcontext(&from->uc, &to->uc);
}

#endif
