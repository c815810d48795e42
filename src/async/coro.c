/* The coroutine core: a body on a stack of its own, resumed and suspended in
 * strict nesting, like calls. resume() switches from whatever runs (the
 * thread's own stack or another coroutine) into a coroutine, and returns
 * when that coroutine suspends or its body returns; suspend() switches back
 * to the context that resumed it. So the chain of contexts waiting in
 * resume() is a stack, and each coroutine knows only the one below it.
 *
 * Every switch is bracketed by the sanitizers' fiber annotations (coro.h,
 * sanitize.h). The last switch out of a finished coroutine passes no
 * fake-stack slot to ASan, which frees the coroutine's fake frames.
 *
 * Single-threaded: a coroutine is resumed only on the thread that created it
 * (async.c checks that in TW_DEBUG builds). */
#include "async/coro.h"

_Thread_local tw__co *tw__co_current __attribute__((tls_model("initial-exec")));
_Thread_local size_t tw__co_live __attribute__((tls_model("initial-exec")));

/* A body's return lands here, on its own stack (the switch's start frame
 * sees to that: switch.h); from here for good back to what resumed it. */
void tw__co_returned(tw__co *co, void *ptr, tw_drop_fn drop)
{
    co->result = tw_result_value(ptr, drop);
    co->finished = true;
    tw__co_live--;
    /* For good: ASan frees this stack's fake frames (no slot to keep them). */
    tw__asan_start(NULL, co->from_lo, co->from_size);
    tw__tsan_switch(co->tsan_resumer);
    tw__ctx_exit(&co->ctx, &co->resumer);
}

#ifdef TW__ASAN
tw_result tw__co_asan_begin(void *p)
{
    tw__co *co = p;
    tw__asan_finish(NULL, &co->from_lo, &co->from_size);
    return co->body(co->body_arg);
}
#endif

bool tw__co_finished(const tw__co *co)
{
    return co->finished;
}

const char *tw__co_switch_name(void)
{
    return TW__SWITCH_NAME;
}
