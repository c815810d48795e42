/* Internal: a coroutine's block, shared by the core (coro.c), its stacks
 * (stack.c) and the async layer (async.c, helpers.c).
 *
 * Each coroutine lives in one mapping, from low to high addresses:
 *
 *     [ guard page | stack, growing down ............ | struct tw__co ]
 *
 * The block sits at the top of its own stack's mapping, so starting a
 * coroutine allocates nothing once the thread's cache holds a stack, and a
 * cached stack keeps its block. Everything here belongs to the thread that
 * created the coroutine. */
#ifndef TW_ASYNC_CORO_H
#define TW_ASYNC_CORO_H

#include <stdint.h>

#include <twine/async.h>

#include "async/core.h"
#include "async/sanitize.h"
#include "async/switch.h"

typedef struct tw__stack {
    char *base;             /* the mapping; its first `guard` bytes are PROT_NONE */
    size_t size;            /* of the whole mapping */
    size_t guard;
    unsigned vg_id;         /* Valgrind's name for the stack */
    struct tw__stack *next; /* in a thread's cache */
} tw__stack;

/* States of a coroutine as the async layer drives it (async.c). */
enum {
    TW__CO_RUNNING = 0, /* its code runs (or has resumed another coroutine) */
    TW__CO_AWAITING,    /* inside tw_await, not yet switched out: a result that
                           arrives now is taken without a switch */
    TW__CO_SUSPENDED,   /* switched out, waiting for waiting_on to fire */
    TW__CO_DONE         /* fn returned; its result is being delivered */
};

struct tw__co {
    tw__stack st;        /* first, and kept while the stack is cached */
    tw__ctx ctx;         /* its context while it does not run */
    tw__ctx resumer;     /* the context that resumed it, while it runs */
    tw__co *parent;      /* the running coroutine when it was resumed (NULL: none) */
    tw_result_fn body;
    void *body_arg;
    tw_result result;    /* what body returned, once finished */
    uint32_t thread;     /* TW_DEBUG builds: tw__self() of its creator, the only
                            thread it runs on */
    bool finished;       /* body returned */
    const char *file;    /* where it was started */
    int line;
    /* AddressSanitizer: its fake stack while switched out, and the bounds of
     * the stack that resumed it (learnt at each resume). */
    void *asan_fake;
    const void *from_lo;
    size_t from_size;
    /* ThreadSanitizer: its fiber, and the one that resumed it. */
    void *tsan_fiber;
    void *tsan_resumer;

    /* ---- the async layer (async.c) ---- */
    tw_deferred *out;        /* the Deferred its result goes to (one reference);
                                NULL once delivered by a cancel */
    tw_deferred *waiting_on; /* while SUSPENDED: the Deferred awaited (weak: it
                                lives until our callback on it has run) */
    tw_result *dest;         /* while AWAITING or SUSPENDED: where on_result puts
                                the await's result (in the awaiting frame) */
    uint8_t state;
    bool cancel_pending;     /* cancelled while running: cancel the next await */
    const char *await_file;  /* the current (or last) await */
    int await_line;
    tw_failure *last_fail;   /* the last failure an await returned (a reference) */
    const char *fail_file;   /* ... and where */
    int fail_line;
    tw__co *next_done;       /* in the thread's queue of results to deliver */
};

/* The coroutine whose stack the thread is on (NULL: the thread's own). */
extern _Thread_local tw__co *tw__co_current __attribute__((tls_model("initial-exec")));

/* Coroutines of the calling thread started and not finished. */
extern _Thread_local size_t tw__co_live __attribute__((tls_model("initial-exec")));

/* The usable stack below the block. */
static inline char *tw__co_stack_lo(const tw__co *co)
{
    return co->st.base + co->st.guard;
}
static inline size_t tw__co_stack_size(const tw__co *co)
{
    return (size_t)(((uintptr_t)co & ~(uintptr_t)15) - (uintptr_t)tw__co_stack_lo(co));
}

/* ---- making and freeing (the stack functions are below) ---- */
static inline tw__co *tw__stack_take(void);
static inline void tw__stack_give(tw__co *co);
#ifdef TW__ASAN
/* coro.c: the first code on a new stack tells ASan which stack it came from,
 * then runs the body. */
tw_result tw__co_asan_begin(void *co);
#endif

/* A coroutine that will run body(arg) when first resumed (tw__co_start).
 * file:line names it in reports (a stack overflow). NULL when no stack can
 * be had. parent and tsan_resumer are set by each resume; the ASan fields
 * by each switch. */
static inline __attribute__((always_inline)) tw__co *tw__co_new(tw_result_fn body, void *arg,
                                                                const char *file, int line)
{
    tw__co *co = tw__stack_take();

    if (!co)
        return NULL;
    co->body = body;
    co->body_arg = arg;
#ifdef TW_DEBUG
    co->thread = tw__self(); /* read only by the wrong-thread report */
#endif
    co->finished = false;
    co->file = file;
    co->line = line;
#ifdef TW__ASAN
    co->asan_fake = NULL;
    co->from_lo = NULL;
    co->from_size = 0;
    tw__ctx_make(&co->ctx, tw__co_stack_lo(co), tw__co_stack_size(co), tw__co_asan_begin, co, co);
#else
    tw__ctx_make(&co->ctx, tw__co_stack_lo(co), tw__co_stack_size(co), body, arg, co);
#endif
    co->tsan_fiber = tw__tsan_create();
    tw__co_live++;
    return co;
}

/* Frees a coroutine that has finished or never ran: its stack goes back to
 * the thread's cache. */
static inline __attribute__((always_inline)) void tw__co_free(tw__co *co)
{
    if (!co->finished)
        tw__co_live--; /* never ran */
    tw__tsan_destroy(co->tsan_fiber);
    tw__stack_give(co);
}

/* ---- resume and suspend --------------------------------------------------
 * Inline, as the switch under them (switch.h): where they are inlined into a
 * function that returns right after, that return is the one a return-stack
 * predictor gets wrong. Every switch is bracketed by the sanitizers' fiber
 * annotations, in the order their documentation asks: AddressSanitizer's
 * start before and finish after, on the stack switched to;
 * ThreadSanitizer's switch right before. */

/* Runs co until it suspends or its body returns. Only on co's thread, and
 * only while co is not running; the first time, tw__co_start. */
#define TW__CO_RESUME(co, SWITCH)                                                          \
    do {                                                                                   \
        void *fake_ = NULL; /* this stack's fake frames while it waits here (ASan) */      \
        (co)->parent = tw__co_current;                                                     \
        tw__co_current = (co);                                                             \
        tw__asan_start(&fake_, tw__co_stack_lo(co), tw__co_stack_size(co));                \
        (co)->tsan_resumer = tw__tsan_current();                                           \
        tw__tsan_switch((co)->tsan_fiber);                                                 \
        SWITCH(&(co)->resumer, &(co)->ctx);                                                \
        tw__asan_finish(fake_, NULL, NULL);                                                \
        tw__co_current = (co)->parent;                                                     \
    } while (0)
static inline __attribute__((always_inline)) void tw__co_resume(tw__co *co)
{
    TW__CO_RESUME(co, tw__ctx_resume);
}
/* The first resume of a coroutine tw__co_new made: it starts with the
 * caller's floating-point modes. */
static inline __attribute__((always_inline)) void tw__co_start(tw__co *co)
{
    TW__CO_RESUME(co, tw__ctx_resume_first);
}

/* From inside co, the running coroutine: back to what resumed it; returns
 * when it is resumed again. */
static inline __attribute__((always_inline)) void tw__co_suspend(tw__co *co)
{
    tw__asan_start(&co->asan_fake, co->from_lo, co->from_size);
    tw__tsan_switch(co->tsan_resumer);
    tw__ctx_suspend(&co->ctx, &co->resumer);
    /* Resumed, perhaps from another stack than last time. */
    tw__asan_finish(co->asan_fake, &co->from_lo, &co->from_size);
}

/* ---- stack.c ---- */
#define TW__GUARD (16 * 1024)   /* bytes of PROT_NONE below each stack */
#define TW__STACK_CACHE 64      /* freed stacks a thread keeps */

/* Bytes of stack (tw_async_stack_size), relaxed: read once per stack taken
 * or given back. */
extern size_t tw__stack_setting;

/* The calling thread's freed stacks. A cached stack's block keeps st. */
struct tw__stacks {
    tw__stack *cache; /* all of the size current when cached */
    size_t cached;
    void *alt;        /* the alternate signal stack stack.c installed */
    bool ready;       /* handler installed, alt stack checked, exit hook armed */
};
extern _Thread_local struct tw__stacks tw__stacks __attribute__((tls_model("initial-exec")));

/* The size of a whole mapping (guard included) under the current setting. */
static inline size_t tw__stack_want(void)
{
    return __atomic_load_n(&tw__stack_setting, __ATOMIC_RELAXED) + TW__GUARD;
}

/* The out-of-line halves of the two below: mapping, unmapping, the thread's
 * first stack, stacks cached under an older size setting. */
tw__co *tw__stack_take_slow(void);
void tw__stack_give_slow(tw__co *co);

/* A stack of the current size with its block (only st is set), from the
 * calling thread's cache or newly mapped; NULL when it cannot be mapped.
 * The first call of a thread also prepares the overflow report (the SIGSEGV
 * handler, once per process, and an alternate signal stack for the thread).
 * A non-empty cache implies that preparation was made: stacks are cached
 * only once it has been. */
static inline tw__co *tw__stack_take(void)
{
    tw__stack *s = tw__stacks.cache;
    if (__builtin_expect(s != NULL && s->size == tw__stack_want(), 1)) {
        tw__stacks.cache = s->next;
        tw__stacks.cached--;
        tw__co *co = (tw__co *)s; /* st is the block's first member */
        tw__asan_unpoison(tw__co_stack_lo(co), tw__co_stack_size(co));
        return co;
    }
    return tw__stack_take_slow();
}
/* Back to the calling thread's cache (or unmapped when the cache is full,
 * the size setting has changed, or the thread is exiting). */
static inline void tw__stack_give(tw__co *co)
{
    tw__stack *s = &co->st;
    if (__builtin_expect(tw__stacks.cached < TW__STACK_CACHE && s->size == tw__stack_want() &&
                             tw__stacks.ready,
                         1)) {
        s->next = tw__stacks.cache;
        tw__stacks.cache = s;
        tw__stacks.cached++;
        return;
    }
    tw__stack_give_slow(co);
}
/* Stacks in the calling thread's cache; stacks mapped in the process. */
size_t tw__stack_cached(void);
size_t tw__stack_mapped(void);

#endif
