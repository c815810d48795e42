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

#include <twine/async.h>

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

struct tw__co;
/* The core's (coro.c): where a context made by tw__ctx_make goes when its
 * function returns r, on its own stack; it ends with tw__ctx_exit. */
__attribute__((noreturn)) void tw__co_returned(struct tw__co *co, void *ptr, tw_drop_fn drop);

/* Prepares *ctx so that the first switch to it (tw__ctx_resume_first) calls
 * fn(arg) on the stack [lo, lo + size) (lo and size 16-byte aligned); when
 * fn returns, tw__co_returned(co, its result) runs there. Inline for x86-64
 * (below). */
#ifndef TW__SWITCH_X86_64
void tw__ctx_make(tw__ctx *ctx, void *lo, size_t size, tw_result (*fn)(void *), void *arg,
                  struct tw__co *co);
#endif

/* The four switches, always in this pattern: a resumer calls
 * tw__ctx_resume(from, to), which returns when the context `to` switches
 * back with tw__ctx_suspend(to, from), or ends with tw__ctx_exit(to, from).
 * The first switch to a context made by tw__ctx_make is
 * tw__ctx_resume_first. */
#ifdef TW__SWITCH_X86_64
/* A return right after a switch goes to an address the return-stack
 * predictor does not hold (it holds the other context's callers), and is
 * mispredicted; so is a return that pops an address another context pushed.
 * So:
 *  - the switches are inline: no call and no return around a change of
 *    stack. Each place that switches has its own indirect jump, whose
 *    target the predictor learns. TW__SWITCH_ASM_X86_64 (twine/async.h, also
 *    inlined by tw_await into a coroutine's own function) saves rsp, where
 *    to continue, rbp, MXCSR and the x87 control word in *from; declares the
 *    other callee-saved registers clobbered, so that the compiler keeps what
 *    it needs of them in the switching function's frame; and continues *to.
 *    Nothing is pushed below rsp (the red zone may be in use). The signal
 *    mask is not touched.
 *  - a resume, though, is a call, to tw__ctx_resume_asm (switch_x86_64.c),
 *    which calls once more before saving the resumer, so that the
 *    predictor's top entry is T, the address after that inner call. A
 *    coroutine that suspends from its own function (tw_await inlined) has
 *    returned from nothing and called nothing that is still open, so the
 *    resumer, resumed, finds T on top: it returns to T, then out of
 *    tw__ctx_resume_asm, both predicted. And a new context's function is
 *    entered with T as its return address: when it returns, T is on top
 *    again, and that return is predicted too. At T, a word of the stack
 *    tells the two apart. The end (tw__ctx_exit) then lands the resumer
 *    past its own return to T, which the function's return consumed. */
_Static_assert(offsetof(tw__ctx, sp) == 0 && offsetof(tw__ctx, pc) == 8 &&
                   offsetof(tw__ctx, fp) == 16 && offsetof(tw__ctx, mxcsr) == 24 &&
                   offsetof(tw__ctx, fpucw) == 28,
               "the layout TW__SWITCH_ASM_X86_64 reads and writes");

/* switch_x86_64.c: T (never called). */
void tw__ctx_ret(void);

/* A new context's first frame, from its rsp up (switch_x86_64.c says why):
 * T, 0, fn, arg, co; tw__ctx_resume_first enters fn from there, so pc and
 * fp are not read. No floating-point modes: tw__ctx_resume_first leaves it
 * those of its first resumer. */
static inline __attribute__((always_inline)) void tw__ctx_make(tw__ctx *ctx, void *lo,
                                                               size_t size,
                                                               tw_result (*fn)(void *),
                                                               void *arg, struct tw__co *co)
{
    void **sp = (void **)((char *)lo + size) - 5; /* 8 mod 16 */

    sp[0] = (void *)tw__ctx_ret;
    sp[1] = NULL;
    sp[2] = (void *)fn;
    sp[3] = arg;
    sp[4] = co;
    ctx->sp = sp;
}

/* The call skips the red zone of the function it is inlined in. */
#define TW__CTX_CALL(target)                                                               \
    "leaq -128(%%rsp), %%rsp\n\t"                                                          \
    "call " target "\n\t"                                                                  \
    "leaq 128(%%rsp), %%rsp"

static inline __attribute__((always_inline)) void tw__ctx_resume(tw__ctx *from, tw__ctx *to)
{
    TW__SWITCH_X86_64_ASM(TW__CTX_CALL("tw__ctx_resume_asm"), from, to);
}
/* A new context starts with the floating-point modes of its first resumer,
 * which are left as they are (reading MXCSR, stmxcsr, is the slow part of a
 * switch; loading it after reading is slower still). */
static inline __attribute__((always_inline)) void tw__ctx_resume_first(tw__ctx *from,
                                                                       tw__ctx *to)
{
    TW__SWITCH_X86_64_ASM(TW__CTX_CALL("tw__ctx_resume_first_asm"), from, to);
}
static inline __attribute__((always_inline)) void tw__ctx_suspend(tw__ctx *from, tw__ctx *to)
{
    TW__SWITCH_ASM_X86_64(from, to);
}
/* Nothing of the ending context is saved. */
static inline __attribute__((always_inline, noreturn)) void tw__ctx_exit(tw__ctx *from,
                                                                         tw__ctx *to)
{
    (void)from;
    TW__SWITCH_X86_64_ASM(TW__SWITCH_X86_64_LOAD_FP "movq 16(%%rsi), %%rbp\n\t"
                                                    "movq 0(%%rsi), %%rsp\n\t"
                                                    "jmp tw__ctx_exited",
                          NULL, to);
    __builtin_unreachable();
}
#else
/* Saves the running context in *from and continues *to. Returns when
 * something switches back to *from. */
void tw__ctx_switch(tw__ctx *from, tw__ctx *to);
static inline void tw__ctx_resume(tw__ctx *from, tw__ctx *to)
{
    tw__ctx_switch(from, to);
}
/* A new context starts with its creator's floating-point modes. */
static inline void tw__ctx_resume_first(tw__ctx *from, tw__ctx *to)
{
    tw__ctx_switch(from, to);
}
static inline void tw__ctx_suspend(tw__ctx *from, tw__ctx *to)
{
    tw__ctx_switch(from, to);
}
static inline __attribute__((noreturn)) void tw__ctx_exit(tw__ctx *from, tw__ctx *to)
{
    tw__ctx_switch(from, to);
    __builtin_unreachable();
}
#endif

#endif
