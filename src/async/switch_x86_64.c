/* The context switch for x86-64 (System V ABI, ELF), selected by switch.h.
 *
 * A context that is not running is its stack pointer; below it, on its own
 * stack, lie what a function call must preserve and the callee-clobbered
 * registers need not: rbp, rbx, r12-r15, the control bits of MXCSR and the
 * x87 control word (rounding modes and exception masks belong to the context
 * that set them), and the return address. The layout, from the saved sp up:
 *
 *     sp+0   MXCSR (4 bytes), x87 control word (2), padding (2)
 *     sp+8   r15, r14, r13, r12, rbx, rbp        (6 x 8 bytes)
 *     sp+56  return address
 *
 * The saved sp is 16-byte aligned (a call leaves rsp at 8 mod 16; six pushes
 * and the 8-byte slot bring it back to 0). The signal mask is not touched.
 * Loading MXCSR and the control word is about a fifth of a switch's cost;
 * testing whether they changed, to skip the loads, costs more than them. */
#include "async/switch.h"

#ifdef TW__SWITCH_X86_64

#include <stdint.h>

void tw__ctx_start(void); /* the first "return" of a new context; never called */

__asm__(".text\n\t"
        ".p2align 4\n\t"
        ".globl tw__ctx_switch\n\t"
        ".hidden tw__ctx_switch\n\t"
        ".type tw__ctx_switch, @function\n"
        "tw__ctx_switch:\n\t"
        ".cfi_startproc\n\t"
        "pushq %rbp\n\t"
        "pushq %rbx\n\t"
        "pushq %r12\n\t"
        "pushq %r13\n\t"
        "pushq %r14\n\t"
        "pushq %r15\n\t"
        "subq $8, %rsp\n\t"
        "stmxcsr (%rsp)\n\t"
        "fnstcw 4(%rsp)\n\t"
        "movq %rsp, (%rdi)\n\t" /* from->sp */
        "movq (%rsi), %rsp\n\t" /* to->sp: from here on, the other stack */
        "ldmxcsr (%rsp)\n\t"
        "fldcw 4(%rsp)\n\t"
        "addq $8, %rsp\n\t"
        "popq %r15\n\t"
        "popq %r14\n\t"
        "popq %r13\n\t"
        "popq %r12\n\t"
        "popq %rbx\n\t"
        "popq %rbp\n\t"
        /* Not ret: the return-stack predictor holds our own caller, never
         * the other context's, so a ret would be mispredicted every time;
         * the indirect-branch predictor learns a jump's targets. */
        "popq %r8\n\t"
        "jmp *%r8\n\t"
        ".cfi_endproc\n\t"
        ".size tw__ctx_switch, .-tw__ctx_switch\n\t"
        /* A new context "returns" here with r12 = arg and r13 = entry, and
         * rsp 16-byte aligned, so the call below meets the ABI. entry never
         * returns. Backtraces stop here: there is no caller. */
        ".p2align 4\n\t"
        ".globl tw__ctx_start\n\t"
        ".hidden tw__ctx_start\n\t"
        ".type tw__ctx_start, @function\n"
        "tw__ctx_start:\n\t"
        ".cfi_startproc\n\t"
        ".cfi_undefined rip\n\t"
        "movq %r12, %rdi\n\t"
        "callq *%r13\n\t"
        "ud2\n\t"
        ".cfi_endproc\n\t"
        ".size tw__ctx_start, .-tw__ctx_start\n\t");

void tw__ctx_make(tw__ctx *ctx, void *lo, size_t size, void (*entry)(void *), void *arg)
{
    uint64_t *sp = (uint64_t *)((char *)lo + size) - 10; /* 8 frame words, 16 bytes spare */
    uint32_t mxcsr;
    uint16_t fpucw;

    /* A new context starts with the creator's floating-point modes. */
    __asm__ __volatile__("stmxcsr %0" : "=m"(mxcsr));
    __asm__ __volatile__("fnstcw %0" : "=m"(fpucw));
    sp[0] = (uint64_t)mxcsr | (uint64_t)fpucw << 32;
    sp[1] = 0;                          /* r15 */
    sp[2] = 0;                          /* r14 */
    sp[3] = (uint64_t)(uintptr_t)entry; /* r13 */
    sp[4] = (uint64_t)(uintptr_t)arg;   /* r12 */
    sp[5] = 0;                          /* rbx */
    sp[6] = 0;                          /* rbp: the end of the frame chain */
    sp[7] = (uint64_t)(uintptr_t)tw__ctx_start;
    ctx->sp = sp;
}

#endif
