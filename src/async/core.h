/* Internal: the coroutine core (coro.c). A coroutine runs body(arg) on a
 * stack of its own, on the thread that created it, and keeps what body
 * returns; it knows nothing of Deferreds. */
#ifndef TW_ASYNC_CORE_H
#define TW_ASYNC_CORE_H

#include <stdbool.h>

#include <twine/async.h>

typedef struct tw__co tw__co;

/* A coroutine that will run body(arg) when first resumed (tw__co_start).
 * file:line names it in reports (a stack overflow). NULL when no stack can
 * be had. */
tw__co *tw__co_new(tw_result_fn body, void *arg, const char *file, int line);
/* tw__co_start, tw__co_resume and tw__co_suspend, the switches, are inline,
 * in coro.h: a switch is cheapest inline in the code that switches. */
/* Its body has returned (what it returned is the block's `result`). */
bool tw__co_finished(const tw__co *co);
/* Frees a coroutine that has finished or never ran: its stack goes back to
 * the thread's cache. */
void tw__co_free(tw__co *co);
/* Which switch the library was built with: "x86-64", "aarch64" or
 * "ucontext" (the tests and benchmarks say so). */
const char *tw__co_switch_name(void);

#endif
