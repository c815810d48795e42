/* Internal: the context switch under the coroutines, one implementation per
 * architecture, chosen here and nowhere else:
 *
 *   switch_x86_64.c    x86-64 System V (ELF): the callee-saved registers
 *                      (rbx, rbp, r12-r15, rsp), MXCSR and the x87 control word
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
#else
/* The stack pointer of a context that is not running: its registers are
 * saved on its own stack, just below that address. */
typedef struct tw__ctx {
    void *sp;
} tw__ctx;
#ifdef TW__SWITCH_X86_64
#define TW__SWITCH_NAME "x86-64"
#else
#define TW__SWITCH_NAME "aarch64"
#endif
#endif

/* Saves the running context in *from and continues *to (made by
 * tw__ctx_make, or saved by an earlier switch). Returns when something
 * switches back to *from. */
void tw__ctx_switch(tw__ctx *from, tw__ctx *to);

/* Prepares *ctx so that the first switch to it calls entry(arg) on the stack
 * [lo, lo + size) (lo and size 16-byte aligned). entry must never return: it
 * ends by switching away for good. */
void tw__ctx_make(tw__ctx *ctx, void *lo, size_t size, void (*entry)(void *), void *arg);

#endif
