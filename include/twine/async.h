/*
 * twine/async.h — coroutines over Deferreds: await in C (Twisted's
 * inlineCallbacks).
 *
 * A function that needs several asynchronous steps is, with Deferreds alone,
 * a chain of callbacks that pass their state along in a struct. With this
 * header it reads top to bottom: tw_async runs it as a coroutine, on a stack
 * of its own, and inside it tw_await(d) returns d's result, suspending the
 * coroutine until d fires if it has not. Seed 000's NetworkCounter.next:
 *
 *     static tw_result next(void *arg)                  // runs as a coroutine
 *     {
 *         network_counter *c = arg;
 *         int rc;
 *         TW_AWAIT_WITH(&c->lock, &rc) {                // a DeferredLock, held for
 *             c->count += 1;                            // the block, released on
 *             tw_result r = tw_await(record(c, c->count)); // every way out of it
 *             if (tw_result_is_failure(r))
 *                 return r;                             // the caller's Deferred fails
 *             tw_result_drop(r);
 *             return int_result(c->count);              // ... or fires with this
 *         }
 *         return tw_result_fail(rc, "no lock");         // cancelled while queued
 *     }
 *
 *     tw_deferred *d;
 *     tw_async(next, &counter, &d);     // runs next() up to its first wait
 *     tw_deferred_add_callback(d, show, NULL);
 *     tw_deferred_unref(d);
 *
 * What tw_await gives. A value or a failure, owned by the caller; there are
 * no exceptions, so a failure is a result to test (tw_result_is_failure). An
 * already-fired Deferred is taken at once, without a switch, however many
 * follow one another: a loop of awaits on ready results runs in constant
 * stack. tw_await takes the caller's reference to d, as returning
 * tw_result_deferred(d) from a callback does; d's chain goes on with none.
 *
 * No loop is needed. A suspended coroutine is resumed by the callback
 * tw_await added to d, on whatever stack fires d. So coroutines run on the
 * thread that fires their Deferreds, which must be the thread that started
 * them (in practice the reactor's loop thread): a coroutine never moves
 * between threads, and TW_DEBUG builds report a Deferred it awaits fired on
 * another thread. Thread work comes back through the loop as usual:
 *
 *     tw_deferred *w;
 *     tw_result r = tw_await_call(tw_defer_to_thread(reactor, slurp, path, &w), &w);
 *     if (tw_await_sleep(tw_reactor_clock(reactor), 0.5) != 0) ...  // cancelled
 *
 * Cancelling. tw_deferred_cancel on the Deferred tw_async gave cancels the
 * Deferred the coroutine is waiting on; the coroutine sees TW_ECANCELED (or
 * whatever that Deferred's canceller made of it) at its await and may go on:
 * its Deferred fires with what it finally returns, as in Twisted. Cancelled
 * while it runs, it is cancelled at its next await of a Deferred that has not
 * fired.
 *
 * Abandoned. A coroutine waiting on a Deferred whose last other reference
 * goes before it fires is resumed with TW_EABANDONED (docs/deferred.md), so
 * it can clean up and end; its stack is freed then.
 *
 * Where a failure came from. Each await's file and line are recorded. A
 * coroutine that returns a failure it got from an await returns it wrapped:
 * the same code, the message "awaited at FILE:LINE in the coroutine started
 * at FILE:LINE", the original as its cause. A failure passed up through
 * several coroutines thus carries the chain of awaits it crossed, and an
 * unhandled one is reported with it (tw_failure_format prints the chain).
 *
 * Stacks. Each coroutine has its own stack, mapped with a guard region below
 * it: 64 KiB by default (256 KiB in sanitizer builds), set for the coroutines
 * started afterwards with tw_async_set_stack_size. Only the pages a
 * coroutine touches cost memory. Each thread keeps up to 64 freed stacks for
 * reuse. A coroutine that overflows its stack faults on the guard; the
 * process then dies of SIGSEGV after one line on stderr naming the coroutine
 * (a SIGSEGV handler, installed on first use, recognises the guard and hands
 * every other fault to the handler that was there before). Each live stack
 * is two memory mappings; Linux's default vm.max_map_count (65530) bounds a
 * process to about 32000 of them.
 *
 * Rules. tw_await and the helpers below are for the code of a coroutine (its
 * function and what it calls), not for a Deferred callback: a callback runs
 * on the stack of whatever fired its Deferred, and one that awaited would
 * suspend that code with it. Outside any coroutine they fail with TW_EPERM
 * (reported as misuse). A callback may start coroutines (tw_async) freely.
 * docs/async.md has the state machine, the switch and the costs.
 */
#ifndef TWINE_ASYNC_H
#define TWINE_ASYNC_H

#include "base.h"
#include "deferred.h"
#include "sync.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== coroutines ========================================================== */

/* Runs fn(arg) as a coroutine on the calling thread, now, until it first
 * waits or returns; *out (one reference, the caller's) fires with what fn
 * returns: a value, a failure, or the result of a Deferred it returns. The
 * macro records the call site, which names the coroutine in reports.
 * TW_EINVAL for a NULL fn or out, TW_ENOMEM when no stack or Deferred can be
 * had (fn does not run). */
TW_API int tw_async_at(tw_result_fn fn, void *arg, tw_deferred **out, const char *file,
                       int line);
#define tw_async(fn, arg, out) tw_async_at((fn), (arg), (out), __FILE__, __LINE__)

/* Inside a coroutine: d's result (a value or a failure, the caller's to
 * drop), suspending until d fires if it has not. Takes the caller's
 * reference to d in every case. Failures of its own: TW_EINVAL for NULL,
 * TW_EPERM outside a coroutine, TW_EDEADLK for the coroutine's own
 * Deferred, TW_ENOMEM. */
TW_API tw_result tw_await_at(tw_deferred *d, const char *file, int line);
#define tw_await(d) TW__AWAIT((d), __FILE__, __LINE__)

/* For the common shape of producer, int f(..., tw_deferred **out): awaits
 * *d if rc is 0, else returns a failure with code rc (*d is not read):
 *     tw_result r = tw_await_call(tw_dlock_acquire(&lock, &d), &d);       */
TW_API tw_result tw_await_call_at(int rc, tw_deferred **d, const char *file, int line);
#define tw_await_call(rc, d) TW__AWAIT_CALL((rc), (d), __FILE__, __LINE__)

/* Suspends the coroutine for `seconds` (>= 0, finite) on `clock` (a
 * tw_reactor_clock, or a tw_fake_clock's). 0 when the time has passed,
 * TW_ECANCELED when the coroutine was cancelled meanwhile (the clock call is
 * then cancelled too), TW_EINVAL, TW_EPERM outside a coroutine, or the
 * clock's error. A sleep on a clock that stops (a reactor shut down) before
 * the time never ends. */
TW_API int tw_await_sleep_at(tw_clock *clock, double seconds, const char *file, int line);
#define tw_await_sleep(clock, seconds) tw_await_sleep_at((clock), (seconds), __FILE__, __LINE__)

/* Awaits n Deferreds together (Twisted's gatherResults), taking the
 * caller's references: a value, a tw_list_result * whose items hold the n
 * values in order (dropping the result frees them), once all have fired; or,
 * as soon as one fails, a failure as tw_gather_results makes it (the input's
 * code, its failure as cause, tw_failure_index naming it). Failures of the
 * other inputs are consumed. n == 0 gives an empty list at once. */
TW_API tw_result tw_await_all_at(tw_deferred *const *ds, size_t n, const char *file, int line);
#define tw_await_all(ds, n) tw_await_all_at((ds), (n), __FILE__, __LINE__)

/* Awaits the first of n Deferreds to fire with a value (Twisted's race),
 * taking the caller's references: that value, with *index (may be NULL) set
 * to its position; the others are cancelled then, their results dropped.
 * If every one fails: a failure with the first input's code, its failure as
 * cause, and *index SIZE_MAX. TW_EINVAL for n == 0. The array must stay
 * valid until the await returns. */
TW_API tw_result tw_await_any_at(tw_deferred *const *ds, size_t n, size_t *index,
                                 const char *file, int line);
#define tw_await_any(ds, n, index) tw_await_any_at((ds), (n), (index), __FILE__, __LINE__)

/* Whether the calling code runs inside a coroutine. */
TW_API bool tw_async_inside(void);

/* ==== DeferredLock and DeferredSemaphore guards ===========================
 * TW_AWAIT_WITH(p, &rc) { ... } awaits p — a tw_dlock * or tw_dsem * — and
 * holds it for the block, releasing it on every way out: falling off the
 * end, return, break, continue, or goto out of the block (the cleanup
 * attribute, as TW_WITH in twine/sync.h; the same caveats). *rc is 0 when the
 * block ran; if p could not be acquired (the wait was cancelled, TW_EINVAL
 * for NULL, ...) the block does not run and *rc holds the failure's code.
 * Only inside a coroutine (else *rc = TW_EPERM). */
TW_API tw__guard tw__await_guard_dlock(tw_dlock *l, int *rc, const char *file, int line);
TW_API tw__guard tw__await_guard_dsem(tw_dsem *s, int *rc, const char *file, int line);

#define TW__AWAIT_GUARD_ENTER(p, rc)                                                   \
    _Generic((p),                                                                      \
        tw_dlock *: TW__AWAIT_GUARD_DLOCK,                                             \
        tw_dsem *: TW__AWAIT_GUARD_DSEM)((p), (rc), __FILE__, __LINE__)
#define TW__AWAIT_WITH(p, rc, g)                                                       \
    for (tw__guard g __attribute__((cleanup(tw__guard_exit))) =                        \
             TW__AWAIT_GUARD_ENTER(p, rc);                                             \
         g.once; g.once = 0)
#define TW_AWAIT_WITH(p, rc) TW__AWAIT_WITH(p, rc, TW__CAT(tw__aguard_, __COUNTER__))

/* ==== stacks ============================================================== */

/* Bytes of stack for coroutines started from now on, process-wide: rounded
 * up to whole pages; TW_EINVAL below 16 KiB or above 1 GiB. The block that
 * describes a coroutine (a few hundred bytes) sits at the top of its stack. */
TW_API int tw_async_set_stack_size(size_t bytes);
TW_API size_t tw_async_stack_size(void);

typedef struct tw_async_stats {
    size_t running;       /* coroutines of the calling thread started and not finished */
    size_t stacks_cached; /* freed stacks kept by the calling thread */
    size_t stacks_mapped; /* stacks mapped in the process (running, suspended or cached) */
} tw_async_stats;
TW_API void tw_async_stats_get(tw_async_stats *out);

/* ==== how tw_await switches (not API) =====================================
 * A return right after a switch of stacks goes where the return-stack
 * predictor cannot know: it holds the other stack's callers. So where the
 * compiler allows, the switch of an await is inline in the coroutine's own
 * function: tw__await_begin does everything before it (and returns 0 with
 * the result when there is no switch to make, or when the library switches
 * itself: sanitizer builds, the ucontext and aarch64 switches), the
 * coroutine's function switches from a->from to a->to, and is resumed with
 * the result in a->r (the callback that resumes it writes it there, into
 * the suspended frame). Anywhere else tw_await is
 * tw_await_at. TW__SWITCH_ASM_X86_64 is the library's x86-64 switch
 * (src/async/switch.h): it saves rsp, where to continue, rbp, MXCSR and the
 * x87 control word in *from, declares the other callee-saved registers
 * clobbered (the compiler keeps what it needs of them in the frame), and
 * continues *to, with no push and no call. */
typedef struct tw__await {
    tw_result r;     /* the result: when tw__await_begin returns 0, or once resumed */
    void *from, *to; /* when it returns 1: the contexts to switch between */
} tw__await;
TW_API int tw__await_begin(tw_deferred *d, const char *file, int line, tw__await *a);
TW_API int tw__await_guard_begin(void *p, int sem, const char *file, int line, tw__await *a);
TW_API tw__guard tw__await_guard_end(void *p, int sem, int *rc, tw_result r);
/* A guard's release of a tw_dlock * or a tw_dsem *. */
TW_API int tw__await_release_dlock(void *l);
TW_API int tw__await_release_dsem(void *s);

#if defined(__GNUC__) && defined(__x86_64__) && defined(__ELF__) && !defined(__CET__) &&  \
    !defined(__APX_F__) && !defined(TW_ASYNC_UCONTEXT)
#ifdef __AVX512F__
#define TW__CLOBBER_AVX512                                                                 \
    "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24",       \
        "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "k0", "k1", "k2",   \
        "k3", "k4", "k5", "k6", "k7",
#else
#define TW__CLOBBER_AVX512
#endif
/* The parts: SAVE stores the running context in *from (rdi), LOAD continues
 * *to (rsi); LOAD_FP restores *to's floating-point control state. */
#define TW__SWITCH_X86_64_SAVE                                                             \
    "leaq 1f(%%rip), %%rax\n\t"                                                            \
    "movq %%rsp, 0(%%rdi)\n\t"                                                             \
    "movq %%rax, 8(%%rdi)\n\t"                                                             \
    "movq %%rbp, 16(%%rdi)\n\t"                                                            \
    "stmxcsr 24(%%rdi)\n\t"                                                                \
    "fnstcw 28(%%rdi)\n\t"
#define TW__SWITCH_X86_64_LOAD_FP                                                          \
    "ldmxcsr 24(%%rsi)\n\t"                                                                \
    "fldcw 28(%%rsi)\n\t"
#define TW__SWITCH_X86_64_LOAD                                                             \
    "movq 16(%%rsi), %%rbp\n\t"                                                            \
    "movq 0(%%rsi), %%rsp\n\t"                                                             \
    "jmpq *8(%%rsi)\n"                                                                     \
    "1:"
#define TW__SWITCH_X86_64_ASM(code, from, to)                                              \
    do {                                                                                   \
        void *tw__from = (from), *tw__to = (to);                                           \
        __asm__ __volatile__(code                                                          \
                             : "+D"(tw__from), "+S"(tw__to)                                \
                             :                                                             \
                             : "rax", "rbx", "rcx", "rdx", "r8", "r9", "r10", "r11",       \
                               "r12", "r13", "r14", "r15", "xmm0", "xmm1", "xmm2",         \
                               "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",     \
                               "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",       \
                               TW__CLOBBER_AVX512 "st", "st(1)", "st(2)", "st(3)",         \
                               "st(4)", "st(5)", "st(6)", "st(7)", "mm0", "mm1", "mm2",    \
                               "mm3", "mm4", "mm5", "mm6", "mm7", "cc", "memory");         \
    } while (0)
#define TW__SWITCH_ASM_X86_64(from, to)                                                    \
    TW__SWITCH_X86_64_ASM(TW__SWITCH_X86_64_SAVE TW__SWITCH_X86_64_LOAD_FP                 \
                              TW__SWITCH_X86_64_LOAD,                                      \
                          from, to)

static inline __attribute__((always_inline)) tw_result tw__await_inline(tw_deferred *d,
                                                                         const char *file,
                                                                         int line)
{
    tw__await a;
    if (tw__await_begin(d, file, line, &a))
        TW__SWITCH_ASM_X86_64(a.from, a.to); /* resumed with the result in a.r */
    return a.r;
}
static inline __attribute__((always_inline)) tw_result tw__await_call_inline(int rc,
                                                                              tw_deferred **d,
                                                                              const char *file,
                                                                              int line)
{
    if (rc || !d)
        return tw_await_call_at(rc, d, file, line);
    return tw__await_inline(*d, file, line);
}
static inline __attribute__((always_inline)) tw__guard tw__await_guard_inline(void *p, int sem,
                                                                              int *rc,
                                                                              const char *file,
                                                                              int line)
{
    tw__await a;
    tw_result r;
    if (tw__await_guard_begin(p, sem, file, line, &a))
        TW__SWITCH_ASM_X86_64(a.from, a.to); /* resumed with the result in a.r */
    r = a.r;
    /* A grant is none (taken at once) or the primitive, a value without a
     * drop; anything else (a failure: cancelled, abandoned) is
     * tw__await_guard_end's to report. */
    if (__builtin_expect(r.drop == NULL, 1)) {
        tw__guard g = {p, sem ? tw__await_release_dsem : tw__await_release_dlock, 1};
        if (rc)
            *rc = 0;
        return g;
    }
    return tw__await_guard_end(p, sem, rc, r);
}
static inline __attribute__((always_inline)) tw__guard tw__await_guard_dlock_inline(
    tw_dlock *l, int *rc, const char *file, int line)
{
    return tw__await_guard_inline(l, 0, rc, file, line);
}
static inline __attribute__((always_inline)) tw__guard tw__await_guard_dsem_inline(
    tw_dsem *s, int *rc, const char *file, int line)
{
    return tw__await_guard_inline(s, 1, rc, file, line);
}
#define TW__AWAIT tw__await_inline
#define TW__AWAIT_CALL tw__await_call_inline
#define TW__AWAIT_GUARD_DLOCK tw__await_guard_dlock_inline
#define TW__AWAIT_GUARD_DSEM tw__await_guard_dsem_inline
#else
#define TW__AWAIT tw_await_at
#define TW__AWAIT_CALL tw_await_call_at
#define TW__AWAIT_GUARD_DLOCK tw__await_guard_dlock
#define TW__AWAIT_GUARD_DSEM tw__await_guard_dsem
#endif

#ifdef __cplusplus
}
#endif

#endif /* TWINE_ASYNC_H */
