/* Internal: the context switch under the coroutines, one implementation per
 * architecture, chosen here and nowhere else:
 *
 *   switch_x86_64.c    x86-64 System V (ELF): the callee-saved registers
 *                      (rbx, rbp, r12-r15, rsp), MXCSR and the x87 control
 *                      word; the switch itself is inline, below
 *   switch_aarch64.c   AArch64 AAPCS64 (ELF): x19-x30, sp, d8-d15
 *   switch_ucontext.c  anything else, or any build with TW_ASYNC_UCONTEXT
 *                      (CMake: -DTW_ASYNC_UCONTEXT=ON): getcontext,
 *                      makecontext, swapcontext
 *
 * Each file compiles to nothing unless it is the one selected. The
 * hand-written switches save only what the ABI says a call preserves, and
 * never touch the signal mask (swapcontext does: a system call per switch,
 * which is why it is only the fallback). Everything else a switch needs
 * (sanitizer annotations, the running coroutine) is coro.c's, shared by all. */
#ifndef TW_ASYNC_SWITCH_H
#define TW_ASYNC_SWITCH_H

#include <stddef.h>

#if defined(TW_ASYNC_UCONTEXT) && TW_ASYNC_UCONTEXT
#define TW__SWITCH_UCONTEXT 1
#elif defined(__CET__)
/* Built for Intel CET (-fcf-protection): a shadow stack must be switched with
 * the stack, and the x86-64 switch lands where no end-branch marker is.
 * glibc's swapcontext does both. */
#define TW__SWITCH_UCONTEXT 1
#elif defined(__x86_64__) && defined(__APX_F__)
/* APX's sixteen more general registers are not in the x86-64 switch's list. */
#define TW__SWITCH_UCONTEXT 1
#elif defined(__x86_64__) && defined(__ELF__)
#define TW__SWITCH_X86_64 1
#elif defined(__aarch64__) && defined(__ELF__)
#define TW__SWITCH_AARCH64 1
#else
#define TW__SWITCH_UCONTEXT 1
#endif

#ifdef TW__SWITCH_UCONTEXT
#include <ucontext.h>
typedef struct tw__ctx {
    ucontext_t uc;
} tw__ctx;
#define TW__SWITCH_NAME "ucontext"
#elif defined(TW__SWITCH_X86_64)
#include <stdint.h>
/* A context that is not running: where it continues, its stack and frame
 * pointers, and its floating-point control state. */
typedef struct tw__ctx {
    void *sp;
    void *pc;
    void *fp;       /* rbp */
    uint32_t mxcsr; /* stored whole; its control bits are what matters */
    uint16_t fpucw; /* the x87 control word */
} tw__ctx;
#define TW__SWITCH_NAME "x86-64"
#else
/* The stack pointer of a context that is not running: its registers are
 * saved on its own stack, just below that address. */
typedef struct tw__ctx {
    void *sp;
} tw__ctx;
#define TW__SWITCH_NAME "aarch64"
#endif

#ifdef TW__SWITCH_X86_64
/* Saves the running context in *from and continues *to (made by
 * tw__ctx_make, or saved by an earlier switch). Returns when something
 * switches back to *from.
 *
 * Inline, with no call and no return around the change of stack: a return
 * right after a switch goes to an address the return-stack predictor does
 * not hold (it holds the other context's callers), and each such return is
 * mispredicted. Inline, the switch adds none of its own; and each place that
 * switches has its own indirect jump, whose target the predictor learns.
 *
 * What a call preserves is declared clobbered, so the compiler saves only
 * the registers that hold something across the switch, in the frame of the
 * function that switches; rbp is saved here, as it may be the frame pointer.
 * Nothing is pushed: the code around may use the red zone below rsp. The
 * signal mask is not touched. */
#ifdef __AVX512F__
#define TW__CLOBBER_AVX512                                                                 \
    "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24",       \
        "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "k0", "k1", "k2",   \
        "k3", "k4", "k5", "k6", "k7",
#else
#define TW__CLOBBER_AVX512
#endif
static inline __attribute__((always_inline)) void tw__ctx_switch(tw__ctx *from, tw__ctx *to)
{
    __asm__ __volatile__("leaq 1f(%%rip), %%rax\n\t"
                         "movq %%rsp, 0(%%rdi)\n\t"
                         "movq %%rax, 8(%%rdi)\n\t"
                         "movq %%rbp, 16(%%rdi)\n\t"
                         "stmxcsr 24(%%rdi)\n\t"
                         "fnstcw 28(%%rdi)\n\t"
                         "ldmxcsr 24(%%rsi)\n\t"
                         "fldcw 28(%%rsi)\n\t"
                         "movq 16(%%rsi), %%rbp\n\t"
                         "movq 0(%%rsi), %%rsp\n\t" /* from here on, the other stack */
                         "jmpq *8(%%rsi)\n"
                         "1:"
                         : "+D"(from), "+S"(to)
                         :
                         : "rax", "rbx", "rcx", "rdx", "r8", "r9", "r10", "r11", "r12", "r13",
                           "r14", "r15", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
                           "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
                           "xmm15", TW__CLOBBER_AVX512 "st", "st(1)", "st(2)", "st(3)", "st(4)",
                           "st(5)", "st(6)", "st(7)", "mm0", "mm1", "mm2", "mm3", "mm4", "mm5",
                           "mm6", "mm7", "cc", "memory");
}
#else
/* Saves the running context in *from and continues *to (made by
 * tw__ctx_make, or saved by an earlier switch). Returns when something
 * switches back to *from. */
void tw__ctx_switch(tw__ctx *from, tw__ctx *to);
#endif

/* Prepares *ctx so that the first switch to it calls entry(arg) on the stack
 * [lo, lo + size) (lo and size 16-byte aligned). entry must never return: it
 * ends by switching away for good. */
void tw__ctx_make(tw__ctx *ctx, void *lo, size_t size, void (*entry)(void *), void *arg);

#endif
