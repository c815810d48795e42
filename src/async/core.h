/* Internal: the coroutine core (coro.c). A coroutine runs body(arg) on a
 * stack of its own, on the thread that created it, and keeps what body
 * returns; it knows nothing of Deferreds. */
#ifndef TW_ASYNC_CORE_H
#define TW_ASYNC_CORE_H

#include <stdbool.h>

#include <twine/async.h>

typedef struct tw__co tw__co;

/* tw__co_new (a coroutine that will run body(arg) when first resumed),
 * tw__co_free, and the switches tw__co_start, tw__co_resume and
 * tw__co_suspend are inline, in coro.h: a switch is cheapest inline in the
 * code that switches, and making or freeing a coroutine whose stack is
 * cached is a few stores, cheaper than a call. */
/* Its body has returned (what it returned is the block's `result`). */
bool tw__co_finished(const tw__co *co);
/* Which switch the library was built with: "x86-64", "aarch64" or
 * "ucontext" (the tests and benchmarks say so). */
const char *tw__co_switch_name(void);

#endif
