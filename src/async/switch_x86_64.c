/* The context switch for x86-64 (System V ABI, ELF), selected by switch.h,
 * where the switches themselves are, inline, with why a resume is a call.
 *
 * A context that is not running is a tw__ctx: where it continues, rsp, rbp,
 * MXCSR and the x87 control word (rounding modes and exception masks belong
 * to the context that set them). The other registers a call must preserve
 * (rbx, r12-r15) every switch declares clobbered: the compiler keeps what it
 * needs of them in the switching function's frame, on that context's own
 * stack. The signal mask is not touched.
 *
 * This file has the resumer's side of a switch and the start of a new
 * context. tw__ctx_resume_asm(from = rdi, to = rsi) is called from
 * tw__ctx_resume's inline asm, which declares every register but rsp and
 * rbp clobbered, so nothing here needs keeping. Its stack, from the saved
 * rsp up, while the resumer waits:
 *
 *     T               pushed by the inner call: where the resumer returns
 *                     first, and what the return-stack predictor holds
 *     caller's return back into tw__ctx_resume's caller
 *
 * A context made by tw__ctx_make has this frame, from rsp up, so that its
 * function is entered as if called from T:
 *
 *     T, 0, fn, arg, co
 *
 * The 0 is how T tells a returning function (the word above its return
 * address is that 0) from the resumer (the word is its caller's return
 * address); backtraces stop there too. The first switch to it
 * (tw__ctx_resume_first_asm) jumps straight to fn: a jump of its own, apart
 * from the resume's jump to where a context suspended, whose target changes
 * with every await site and would be mispredicted all the more for a first
 * entry in the mix. */
#include "async/switch.h"

#ifdef TW__SWITCH_X86_64

__asm__(".text\n\t"
        ".p2align 4\n\t"
        ".globl tw__ctx_resume_first_asm\n\t"
        ".hidden tw__ctx_resume_first_asm\n\t"
        ".type tw__ctx_resume_first_asm, @function\n"
        "tw__ctx_resume_first_asm:\n\t"
        ".cfi_startproc\n\t"
        "xorl %eax, %eax\n\t" /* a new context: keep the floating-point modes */
        "jmp 0f\n\t"
        ".globl tw__ctx_resume_asm\n\t"
        ".hidden tw__ctx_resume_asm\n\t"
        ".type tw__ctx_resume_asm, @function\n"
        "tw__ctx_resume_asm:\n\t"
        "movl $1, %eax\n"
        "0:\n\t"
        "call 1f\n\t"
        ".globl tw__ctx_ret\n\t"
        ".hidden tw__ctx_ret\n"
        "tw__ctx_ret:\n\t"
        "cmpq $0, (%rsp)\n\t"
        "je 3f\n\t"
        "ret\n" /* the resumer, back to its caller */
        "3:\n\t"
        /* A context's function returned its result (rax, rdx) here, on its
         * own stack: rsp points at the 0, co is 24 bytes above. The core
         * ends the context; it is jumped to with a return address of 0 (no
         * call: a call would leave an address for the resumer to pop). */
        "movq 24(%rsp), %rdi\n\t"
        "movq %rax, %rsi\n\t"
        "pushq $0\n\t"
        "jmp tw__co_returned\n"
        "1:\n\t"
        ".cfi_adjust_cfa_offset 8\n\t"
        "leaq 4f(%rip), %rcx\n\t"
        "movq %rsp, 0(%rdi)\n\t"
        "movq %rcx, 8(%rdi)\n\t"
        "movq %rbp, 16(%rdi)\n\t"
        "stmxcsr 24(%rdi)\n\t"
        "fnstcw 28(%rdi)\n\t"
        "testl %eax, %eax\n\t"
        "jz 2f\n\t"
        "ldmxcsr 24(%rsi)\n\t"
        "fldcw 28(%rsi)\n\t"
        "movq 16(%rsi), %rbp\n\t"
        "movq 0(%rsi), %rsp\n\t" /* from here on, the other stack */
        "jmpq *8(%rsi)\n"
        "2:\n\t"
        /* A new context: fn(arg) with rsp at T (8 mod 16, as after a call),
         * rbp 0 (the end of the frame chain). */
        "movq 0(%rsi), %rsp\n\t"
        "xorl %ebp, %ebp\n\t"
        "movq 24(%rsp), %rdi\n\t"
        "jmpq *16(%rsp)\n"
        "4:\n\t"
        "ret\n\t" /* suspended back to us: to T, the predicted return */
        /* The context ended (tw__ctx_exit): its function's return took T
         * off the predictor, so the resumer skips it. */
        ".globl tw__ctx_exited\n\t"
        ".hidden tw__ctx_exited\n"
        "tw__ctx_exited:\n\t"
        "addq $8, %rsp\n\t"
        ".cfi_adjust_cfa_offset -8\n\t"
        "ret\n\t"
        ".cfi_endproc\n\t"
        ".size tw__ctx_resume_first_asm, .-tw__ctx_resume_first_asm\n\t");

#endif
