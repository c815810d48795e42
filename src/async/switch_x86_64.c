/* The context switch for x86-64 (System V ABI, ELF), selected by switch.h,
 * where the switch itself is: inline in each place that switches, so that
 * no return follows a change of stack.
 *
 * A context that is not running is a tw__ctx: where it continues, rsp, rbp,
 * MXCSR and the x87 control word (rounding modes and exception masks belong
 * to the context that set them). The other registers a call must preserve
 * (rbx, r12-r15) the switch declares clobbered: the compiler keeps what it
 * needs of them in the switching function's frame, on that context's own
 * stack. The signal mask is not touched.
 *
 * This file has what is not inline: the start of a new context. */
#include "async/switch.h"

#ifdef TW__SWITCH_X86_64

void tw__ctx_start(void); /* where a new context starts; never called */

/* A new context starts here with rsp 16-byte aligned and, at rsp, the
 * argument and then the entry: so the call below meets the ABI. entry never
 * returns. Backtraces stop here: there is no caller. */
__asm__(".text\n\t"
        ".p2align 4\n\t"
        ".globl tw__ctx_start\n\t"
        ".hidden tw__ctx_start\n\t"
        ".type tw__ctx_start, @function\n"
        "tw__ctx_start:\n\t"
        ".cfi_startproc\n\t"
        ".cfi_undefined rip\n\t"
        "movq (%rsp), %rdi\n\t"
        "callq *8(%rsp)\n\t"
        "ud2\n\t"
        ".cfi_endproc\n\t"
        ".size tw__ctx_start, .-tw__ctx_start\n\t");

void tw__ctx_make(tw__ctx *ctx, void *lo, size_t size, void (*entry)(void *), void *arg)
{
    void **sp = (void **)((char *)lo + size) - 2;

    sp[0] = arg;
    sp[1] = (void *)entry;
    ctx->sp = sp;
    ctx->pc = (void *)tw__ctx_start;
    ctx->fp = 0; /* the end of the frame chain */
    /* A new context starts with the creator's floating-point modes. */
    __asm__ __volatile__("stmxcsr %0" : "=m"(ctx->mxcsr));
    __asm__ __volatile__("fnstcw %0" : "=m"(ctx->fpucw));
}

#endif
