/* The context switch for AArch64 (AAPCS64, ELF), selected by switch.h.
 *
 * A context that is not running is its stack pointer; above it, on its own
 * stack, lie the registers a call must preserve: x19-x28, the frame pointer
 * x29, the link register x30 (where the switch returns to), the low halves
 * d8-d15 of v8-v15, and FPCR (rounding mode and trap enables belong to the
 * context that set them, as MXCSR does on x86-64). The frame is 176 bytes,
 * from the saved sp up:
 *
 *     sp+0    x19 x20 | x21 x22 | x23 x24 | x25 x26 | x27 x28 | x29 x30
 *     sp+96   d8 d9 | d10 d11 | d12 d13 | d14 d15
 *     sp+160  FPCR, then 8 bytes of padding (sp stays 16-byte aligned)
 *
 * The signal mask is not touched. */
#include "async/switch.h"

#ifdef TW__SWITCH_AARCH64

#include <stdint.h>
#include <string.h>

void tw__ctx_start(void); /* the first "return" of a new context; never called */

/* hint #34 is BTI c, a no-op on cores without branch target identification. */
__asm__(".text\n\t"
        ".p2align 4\n\t"
        ".globl tw__ctx_switch\n\t"
        ".hidden tw__ctx_switch\n\t"
        ".type tw__ctx_switch, %function\n"
        "tw__ctx_switch:\n\t"
        ".cfi_startproc\n\t"
        "hint #34\n\t"
        "sub sp, sp, #176\n\t"
        "stp x19, x20, [sp, #0]\n\t"
        "stp x21, x22, [sp, #16]\n\t"
        "stp x23, x24, [sp, #32]\n\t"
        "stp x25, x26, [sp, #48]\n\t"
        "stp x27, x28, [sp, #64]\n\t"
        "stp x29, x30, [sp, #80]\n\t"
        "stp d8, d9, [sp, #96]\n\t"
        "stp d10, d11, [sp, #112]\n\t"
        "stp d12, d13, [sp, #128]\n\t"
        "stp d14, d15, [sp, #144]\n\t"
        "mrs x9, fpcr\n\t"
        "str x9, [sp, #160]\n\t"
        "mov x9, sp\n\t"
        "str x9, [x0]\n\t" /* from->sp */
        "ldr x9, [x1]\n\t" /* to->sp: from here on, the other stack */
        "mov sp, x9\n\t"
        "ldp x19, x20, [sp, #0]\n\t"
        "ldp x21, x22, [sp, #16]\n\t"
        "ldp x23, x24, [sp, #32]\n\t"
        "ldp x25, x26, [sp, #48]\n\t"
        "ldp x27, x28, [sp, #64]\n\t"
        "ldp x29, x30, [sp, #80]\n\t"
        "ldp d8, d9, [sp, #96]\n\t"
        "ldp d10, d11, [sp, #112]\n\t"
        "ldp d12, d13, [sp, #128]\n\t"
        "ldp d14, d15, [sp, #144]\n\t"
        "ldr x9, [sp, #160]\n\t"
        "msr fpcr, x9\n\t"
        "add sp, sp, #176\n\t"
        "ret\n\t"
        ".cfi_endproc\n\t"
        ".size tw__ctx_switch, .-tw__ctx_switch\n\t"
        /* A new context "returns" here with x19 = arg, x20 = fn and x21 =
         * co; fn's result (x0, x1) goes to tw__co_returned, which never
         * returns. Backtraces stop here: there is no caller. */
        ".p2align 4\n\t"
        ".globl tw__ctx_start\n\t"
        ".hidden tw__ctx_start\n\t"
        ".type tw__ctx_start, %function\n"
        "tw__ctx_start:\n\t"
        ".cfi_startproc\n\t"
        ".cfi_undefined x30\n\t"
        "hint #34\n\t"
        "mov x0, x19\n\t"
        "blr x20\n\t"
        "mov x2, x1\n\t"
        "mov x1, x0\n\t"
        "mov x0, x21\n\t"
        "bl tw__co_returned\n\t"
        "brk #0\n\t"
        ".cfi_endproc\n\t"
        ".size tw__ctx_start, .-tw__ctx_start\n\t");

void tw__ctx_make(tw__ctx *ctx, void *lo, size_t size, tw_result (*fn)(void *), void *arg,
                  struct tw__co *co)
{
    uint64_t *sp = (uint64_t *)((char *)lo + size - 176);
    uint64_t fpcr;

    /* A new context starts with the creator's floating-point modes. */
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    memset(sp, 0, 176);
    sp[20] = fpcr;
    sp[0] = (uint64_t)(uintptr_t)arg; /* x19 */
    sp[1] = (uint64_t)(uintptr_t)fn;  /* x20 */
    sp[2] = (uint64_t)(uintptr_t)co;  /* x21 */
    sp[10] = 0;                         /* x29: the end of the frame chain */
    sp[11] = (uint64_t)(uintptr_t)tw__ctx_start; /* x30 */
    ctx->sp = sp;
}

#endif
