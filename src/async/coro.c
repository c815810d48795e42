/* The coroutine core: a body on a stack of its own, resumed and suspended in
 * strict nesting, like calls. resume() switches from whatever runs (the
 * thread's own stack or another coroutine) into a coroutine, and returns
 * when that coroutine suspends or its body returns; suspend() switches back
 * to the context that resumed it. So the chain of contexts waiting in
 * resume() is a stack, and each coroutine knows only the one below it.
 *
 * Every switch is bracketed by the sanitizers' fiber annotations (sanitize.h),
 * in the order their documentation asks: AddressSanitizer's start before and
 * finish after, on the stack switched to; ThreadSanitizer's switch right
 * before. The last switch out of a finished coroutine passes no fake-stack
 * slot to ASan, which frees the coroutine's fake frames.
 *
 * Single-threaded: a coroutine is resumed only on the thread that created it
 * (async.c checks that in TW_DEBUG builds). */
#include "async/coro.h"
#include "async/sanitize.h"

_Thread_local tw__co *tw__co_current __attribute__((tls_model("initial-exec")));
/* Coroutines of this thread started and not finished. */
static _Thread_local size_t running __attribute__((tls_model("initial-exec")));

size_t tw__co_running(void)
{
    return running;
}

/* The first code on a new stack. */
static void entry(void *p)
{
    tw__co *co = p;

    tw__asan_finish(NULL, &co->from_lo, &co->from_size);
    co->body(co->body_arg);
    co->finished = true;
    running--;
    /* For good: ASan frees this stack's fake frames (no slot to keep them). */
    tw__asan_start(NULL, co->from_lo, co->from_size);
    tw__tsan_switch(co->tsan_resumer);
    tw__ctx_switch(&co->ctx, &co->resumer);
    __builtin_unreachable();
}

tw__co *tw__co_new(void (*body)(void *arg), void *arg, const char *file, int line)
{
    tw__co *co = tw__stack_take();

    if (!co)
        return NULL;
    co->body = body;
    co->body_arg = arg;
    co->thread = tw__self();
    co->file = file;
    co->line = line;
    co->tsan_fiber = tw__tsan_create();
    tw__ctx_make(&co->ctx, tw__co_stack_lo(co), tw__co_stack_size(co), entry, co);
    running++;
    return co;
}

void tw__co_resume(tw__co *co)
{
    void *fake = NULL; /* this stack's fake frames while it waits here (ASan) */

    co->parent = tw__co_current;
    tw__co_current = co;
    tw__asan_start(&fake, tw__co_stack_lo(co), tw__co_stack_size(co));
    co->tsan_resumer = tw__tsan_current();
    tw__tsan_switch(co->tsan_fiber);
    tw__ctx_switch(&co->resumer, &co->ctx);
    tw__asan_finish(fake, NULL, NULL);
    tw__co_current = co->parent;
}

void tw__co_suspend(void)
{
    tw__co *co = tw__co_current;

    tw__asan_start(&co->asan_fake, co->from_lo, co->from_size);
    tw__tsan_switch(co->tsan_resumer);
    tw__ctx_switch(&co->ctx, &co->resumer);
    /* Resumed, perhaps from another stack than last time. */
    tw__asan_finish(co->asan_fake, &co->from_lo, &co->from_size);
}

bool tw__co_finished(const tw__co *co)
{
    return co->finished;
}

void tw__co_free(tw__co *co)
{
    if (!co->finished)
        running--; /* never ran */
    tw__tsan_destroy(co->tsan_fiber);
    tw__stack_give(co);
}

const char *tw__co_switch_name(void)
{
    return TW__SWITCH_NAME;
}
