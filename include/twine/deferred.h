/*
 * twine/deferred.h — Deferreds, failures, a clock interface, and the async
 * DeferredLock, DeferredSemaphore and DeferredQueue.
 *
 * A Deferred is a promise of one result that arrives later, plus the chain of
 * callbacks that will process it. The producer fires it once with a value or a
 * failure; each callback receives the current result and returns the next one:
 *
 *     static tw_result parse(tw_result r, void *arg)      // runs on success
 *     {
 *         char *text = r.ptr;                              // we own r now
 *         int *n = malloc(sizeof *n);
 *         *n = atoi(text);
 *         tw_result_drop(r);                               // frees text (its drop fn)
 *         return tw_result_value(n, free);                 // the next callback owns n
 *     }
 *     static tw_result report(tw_result r, void *arg)     // runs on failure
 *     {
 *         fprintf(stderr, "fetch failed: %s\n", tw_failure_message(tw_result_as_failure(r)));
 *         tw_result_drop(r);                               // handled: the chain goes on with none
 *         return tw_result_none();
 *     }
 *
 *     tw_deferred *d;
 *     fetch_async(url, &d);                 // some producer hands us a reference
 *     tw_deferred_add_callbacks(d, parse, NULL, report, NULL);
 *     tw_deferred_unref(d);                 // the producer keeps it alive until it fires
 *
 * This layer is single-threaded bookkeeping: a Deferred, and everything built
 * on one, belongs to the thread that created it (in practice the loop thread).
 * Builds with TW_DEBUG report a call from another thread through the
 * diagnostic hook, naming the function: a Deferred belongs to the thread
 * that created it, a DeferredLock or DeferredSemaphore to the thread of its
 * first use, a DeferredQueue to the thread that created it. (Twisted's
 * classic bug: a DeferredQueue put from a pool thread.) Nothing here blocks or knows a loop;
 * time comes from a tw_clock, and tw_fake_clock drives tests deterministically.
 *
 * Ownership, in four rules (docs/deferred.md walks through an example):
 *  1. A tw_result owns what it carries: a value's pointer together with its
 *     drop function (NULL: nothing to free), or one reference to a failure, or
 *     one reference to a Deferred to wait for. Passing a result passes that
 *     ownership; tw_result_drop() releases it.
 *  2. A callback owns the result it receives and must return or drop it.
 *     Returning a Deferred suspends the chain until that Deferred fires, then
 *     the chain continues with its result (chaining). Returning the Deferred
 *     the callback belongs to, or one that waits on it, would wait forever:
 *     the chain continues with a TW_EDEADLK failure instead. That check,
 *     like a cancel's way to the innermost Deferred, takes amortised
 *     constant time however deep the nest and in whichever order it fires.
 *  3. Firing (tw_deferred_callback / _errback) always consumes the result,
 *     even when it fails: a result that cannot be delivered is dropped.
 *  4. Deferreds are reference counted. Whoever creates or is handed one holds
 *     a reference and gives it back with tw_deferred_unref(). A Deferred that
 *     loses its last reference before it fires can never fire: it is fired
 *     with TW_EABANDONED, so every callback and every Deferred waiting on it
 *     learns so, instead of waiting forever in silence. One left paused with
 *     callbacks to run is reported as misuse, unpaused, and runs them.
 *
 * Arguments. A function given for a call that may never be made — a
 * canceller (the Deferred fires first), on_timeout (the result arrives
 * first), run's function (its acquire is cancelled) — comes with its
 * argument, and the _full form of each such call also takes a drop function
 * for that argument, as a value has one: tw_deferred_create_full,
 * tw_deferred_add_timeout_full, tw_dlock_run_full, tw_dsem_run_full. The
 * call then owns the argument and drops it exactly once, as soon as the
 * function can no longer be called (after its last call, or when it is
 * known never to come), and before returning when the call fails. The
 * reactor's _full calls (twine/reactor.h) follow the same rule. Callbacks
 * need no drop function: every entry of a chain is reached, on one side or
 * the other (an abandoned Deferred runs its chain too), so
 * tw_deferred_add_both, or a pair sharing its argument, can release it.
 *
 * A failure that reaches the end of a chain and is still there when the
 * Deferred is freed is reported once: to the unhandled-failure hook
 * (tw_set_unhandled_hook), which gets the tw_failure itself and where the
 * Deferred was created; without one, to the diagnostic hook
 * (TW_DIAG_UNHANDLED) as one line with the code, the message and the
 * creation site.
 */
#ifndef TWINE_DEFERRED_H
#define TWINE_DEFERRED_H

#include <stdarg.h>

#include "base.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tw_failure tw_failure;
typedef struct tw_deferred tw_deferred;

/* ==== results ============================================================= */

/* Frees a value. Called once, with the value's pointer. */
typedef void (*tw_drop_fn)(void *ptr);

/* A value, a failure, or a Deferred to wait for. Two words, passed by value.
 * Read the kind with the tw_result_is_* helpers; never call `drop` directly
 * (for a failure or a Deferred it holds a tag, not a function). */
typedef struct tw_result {
    void *ptr;       /* the value; or the tw_failure *; or the tw_deferred * */
    tw_drop_fn drop; /* a value's destructor (NULL: none); otherwise a tag */
} tw_result;

#define TW__RESULT_FAILURE ((tw_drop_fn)(uintptr_t)1)
#define TW__RESULT_DEFERRED ((tw_drop_fn)(uintptr_t)2)

/* A value. drop (may be NULL) frees ptr when the value is dropped unused. */
static inline tw_result tw_result_value(void *ptr, tw_drop_fn drop)
{
    tw_result r = {ptr, drop};
    return r;
}
/* The empty value (Python's None). */
static inline tw_result tw_result_none(void)
{
    return tw_result_value(NULL, NULL);
}
/* A failure; takes the caller's reference to f. */
static inline tw_result tw_result_failure(tw_failure *f)
{
    tw_result r = {f, TW__RESULT_FAILURE};
    return r;
}
/* A Deferred to wait for; takes the caller's reference to d. Only a callback
 * (or a tw_result_fn) may return one; firing with one is TW_EINVAL. */
static inline tw_result tw_result_deferred(tw_deferred *d)
{
    tw_result r = {d, TW__RESULT_DEFERRED};
    return r;
}
static inline bool tw_result_is_failure(tw_result r)
{
    return r.drop == TW__RESULT_FAILURE;
}
static inline bool tw_result_is_deferred(tw_result r)
{
    return r.drop == TW__RESULT_DEFERRED;
}
static inline bool tw_result_is_value(tw_result r)
{
    return !tw_result_is_failure(r) && !tw_result_is_deferred(r);
}
/* The failure r carries (borrowed), or NULL if r is not a failure. */
static inline tw_failure *tw_result_as_failure(tw_result r)
{
    return tw_result_is_failure(r) ? (tw_failure *)r.ptr : NULL;
}
/* Releases what r owns: calls a value's drop, unrefs a failure or a Deferred. */
TW_API void tw_result_drop(tw_result r);

/* A new failure result: tw_result_failure(tw_failure_new(code, ...)). */
TW_API tw_result tw_result_fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ==== failures ============================================================
 * What travels down the errback side: a non-zero code (a TW_E* code, or any
 * code of the application's own), a message, an optional cause (the failure
 * this one explains) and an optional payload with its destructor. Reference
 * counted, atomically, so a failure made on a pool thread may be handed to
 * the loop thread. Immutable once shared, apart from its reference count.
 *
 * tw_failure_new never returns NULL: when memory is short it returns a
 * shared, immortal TW_ENOMEM failure (whose payload cannot be set). */

/* code 0 is not a failure: it is reported as misuse and becomes TW_EINVAL.
 * fmt may be NULL (the message is then tw_strerror(code)). */
TW_API tw_failure *tw_failure_new(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
TW_API tw_failure *tw_failure_newv(int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* A failure caused by `cause` (takes the caller's reference to it; may be NULL). */
TW_API tw_failure *tw_failure_wrap(tw_failure *cause, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Attaches a payload, freed by drop (may be NULL) with the failure. Only
 * before the failure is shared: TW_EBUSY if another reference exists,
 * TW_EALREADY if it has a payload, TW_EINVAL for NULL f or the immortal one. */
TW_API int tw_failure_set_payload(tw_failure *f, void *payload, tw_drop_fn drop);

TW_API tw_failure *tw_failure_ref(tw_failure *f);
TW_API void tw_failure_unref(tw_failure *f);

TW_API int tw_failure_code(const tw_failure *f);
TW_API const char *tw_failure_message(const tw_failure *f); /* never NULL */
TW_API tw_failure *tw_failure_cause(const tw_failure *f);   /* borrowed; may be NULL */
TW_API void *tw_failure_payload(const tw_failure *f);
/* For a failure made by a DeferredList or gather_results: the index of the
 * input that failed. SIZE_MAX for any other failure. */
TW_API size_t tw_failure_index(const tw_failure *f);

/* f's own code is `code`. */
TW_API bool tw_failure_check(const tw_failure *f, int code);
/* The first failure along f's cause chain (f first) whose code is `code`; NULL if none. */
TW_API tw_failure *tw_failure_find(const tw_failure *f, int code);
/* Twisted's trap: the one of the listed codes that f has, or 0 if none does.
 * An errback traps what it handles and passes the rest on:
 *     if (!tw_failure_trap(f, TW_ETIMEDOUT, TW_ECANCELED)) return r;     */
#define tw_failure_trap(f, ...)                                                        \
    tw__failure_trap((f), (const int[]){__VA_ARGS__},                                  \
                     sizeof((const int[]){__VA_ARGS__}) / sizeof(int))
TW_API int tw__failure_trap(const tw_failure *f, const int *codes, size_t n);

/* Writes "TW_ENAME: message" and each cause ("; caused by ...") into buf,
 * snprintf-style: returns the full length, writes at most size bytes. A code
 * outside twine's table is the application's own and is written as
 * "application error CODE: message". */
TW_API size_t tw_failure_format(const tw_failure *f, char *buf, size_t size);

/* ==== clocks ==============================================================
 * The time source this layer asks for timeouts. The reactor implements it;
 * tw_fake_clock implements it for tests. An implementation embeds tw_clock as
 * its first member. */

typedef struct tw_clock tw_clock;
typedef struct tw_clock_call tw_clock_call; /* a scheduled call; opaque, the clock's own */
typedef void (*tw_clock_fn)(void *arg);

typedef struct tw_clock_ops {
    /* Now, in nanoseconds on the clock's monotonic timeline. */
    int64_t (*now)(tw_clock *c);
    /* Schedules fn(arg) `seconds` from now (>= 0, finite); *out identifies it
     * until it runs or is cancelled. */
    int (*call_later)(tw_clock *c, double seconds, tw_clock_fn fn, void *arg, tw_clock_call **out);
    /* Cancels a call that has neither run nor been cancelled: its fn never
     * runs. A handle is dead once its call ran or was cancelled. */
    int (*cancel)(tw_clock *c, tw_clock_call *call);
} tw_clock_ops;

struct tw_clock {
    const tw_clock_ops *ops;
};

/* 0 for a NULL clock. */
static inline int64_t tw_clock_now(tw_clock *c)
{
    return c && c->ops ? c->ops->now(c) : 0;
}
static inline int tw_clock_call_later(tw_clock *c, double seconds, tw_clock_fn fn, void *arg,
                                      tw_clock_call **out)
{
    return c && c->ops ? c->ops->call_later(c, seconds, fn, arg, out) : TW_EINVAL;
}
static inline int tw_clock_cancel(tw_clock *c, tw_clock_call *call)
{
    return c && c->ops ? c->ops->cancel(c, call) : TW_EINVAL;
}

/* A clock that moves only when told: calls run inside tw_fake_clock_advance,
 * in deadline order, calls due at the same time in the order scheduled. It
 * starts at 0 ns. */
typedef struct tw_fake_clock tw_fake_clock;
TW_API int tw_fake_clock_create(tw_fake_clock **out);
TW_API tw_clock *tw_fake_clock_clock(tw_fake_clock *fc);
/* Moves time forward by `seconds` (>= 0, finite; else TW_EINVAL), running
 * every call that falls due, including calls scheduled by those calls. */
TW_API int tw_fake_clock_advance(tw_fake_clock *fc, double seconds);
/* Calls scheduled and not yet run or cancelled. */
TW_API size_t tw_fake_clock_pending(const tw_fake_clock *fc);
/* Frees the clock. Calls still pending never run; TW_EBUSY and nothing freed
 * if there are any (run or cancel them first), TW_EINVAL for NULL. */
TW_API int tw_fake_clock_destroy(tw_fake_clock *fc);

/* ==== Deferreds =========================================================== */

/* A callback: receives (and owns) the current result, returns the next. */
typedef tw_result (*tw_callback_fn)(tw_result r, void *arg);
/* A function whose result may be a value, a failure or a Deferred. */
typedef tw_result (*tw_result_fn)(void *arg);
/* Called by tw_deferred_cancel on a Deferred that has not fired. It may fire
 * d (its result then stands); if it does not, d fails with TW_ECANCELED. */
typedef void (*tw_canceller_fn)(tw_deferred *d, void *arg);

/* Creates an unfired Deferred; *out holds the one reference. canceller may be
 * NULL. The macro records the creation site for diagnostics. */
TW_API int tw_deferred_create(tw_deferred **out, tw_canceller_fn canceller, void *arg);
TW_API int tw_deferred_create_at(tw_deferred **out, tw_canceller_fn canceller, void *arg,
                                 const char *file, int line);
#define tw_deferred_create(out, canceller, arg)                                        \
    tw_deferred_create_at((out), (canceller), (arg), __FILE__, __LINE__)
/* The same, and the Deferred owns arg: drop(arg) (drop may be NULL) is
 * called once the canceller can no longer run: when the Deferred has fired
 * (by its producer, by a cancel, or abandoned), after the callbacks that
 * firing ran and after the canceller if it is running, before the call that
 * fired it returns; on an error return, before returning. */
TW_API int tw_deferred_create_full(tw_deferred **out, tw_canceller_fn canceller, void *arg,
                                   tw_drop_fn drop);
TW_API int tw_deferred_create_full_at(tw_deferred **out, tw_canceller_fn canceller, void *arg,
                                      tw_drop_fn drop, const char *file, int line);
#define tw_deferred_create_full(out, canceller, arg, drop)                             \
    tw_deferred_create_full_at((out), (canceller), (arg), (drop), __FILE__, __LINE__)

/* Already-fired Deferreds (Twisted's succeed and fail). Consume the result
 * even on failure (TW_ENOMEM). */
TW_API int tw_deferred_succeed(tw_deferred **out, void *ptr, tw_drop_fn drop);
TW_API int tw_deferred_fail(tw_deferred **out, tw_failure *f);
/* Calls fn(arg) now. A Deferred result is handed back as is; a value or a
 * failure comes back in an already-fired Deferred. On TW_ENOMEM the result
 * is dropped. */
TW_API int tw_maybe_deferred(tw_result_fn fn, void *arg, tw_deferred **out);

TW_API tw_deferred *tw_deferred_ref(tw_deferred *d);
/* Gives a reference back. The last one frees d: an unhandled failure is
 * reported; a Deferred that never fired is first fired with TW_EABANDONED;
 * one left paused with callbacks to run is reported, unpaused and run. */
TW_API void tw_deferred_unref(tw_deferred *d);

/* Appends a (callback, errback) pair. Exactly one side runs, chosen by
 * whether the current result is a failure; a NULL side passes the result
 * through. If d has fired (and is not paused or waiting), the chain runs now;
 * a callback added from inside a callback of d runs when that one returns.
 * TW_EINVAL if both are NULL; TW_ENOMEM when storage cannot grow (nothing
 * added). A Deferred stores 12 entries inline; longer chains allocate. */
TW_API int tw_deferred_add_callbacks(tw_deferred *d, tw_callback_fn callback, void *cb_arg,
                                     tw_callback_fn errback, void *eb_arg);
TW_API int tw_deferred_add_callback(tw_deferred *d, tw_callback_fn fn, void *arg);
TW_API int tw_deferred_add_errback(tw_deferred *d, tw_callback_fn fn, void *arg);
/* fn runs on both sides. */
TW_API int tw_deferred_add_both(tw_deferred *d, tw_callback_fn fn, void *arg);

/* Fires d with r (a value or a failure) and runs the chain. Consumes r in
 * every case. TW_EALREADY if d had fired — except the one late result after
 * a cancel without canceller, which is swallowed (0). TW_EINVAL if r is a
 * Deferred. */
TW_API int tw_deferred_callback(tw_deferred *d, tw_result r);
/* tw_deferred_callback(d, tw_result_failure(f)). */
TW_API int tw_deferred_errback(tw_deferred *d, tw_failure *f);

/* Pauses the chain: callbacks stop running until the matching unpause.
 * Unpausing a Deferred that is not paused is TW_EPERM (the count stays 0);
 * TW_EOVERFLOW past UINT32_MAX pauses. */
TW_API int tw_deferred_pause(tw_deferred *d);
TW_API int tw_deferred_unpause(tw_deferred *d);

/* Twisted's cancel. Not fired: runs the canceller once if there is one; if d
 * is still unfired afterwards it fails with TW_ECANCELED (without a
 * canceller, the producer's one late result is then swallowed). Fired and
 * waiting on a chained Deferred: cancels the innermost one it waits on
 * (found in amortised constant time, however deep the nest). Otherwise
 * nothing happens. Returns 0 (TW_EINVAL for NULL). */
TW_API int tw_deferred_cancel(tw_deferred *d);

/* Turns a result reached after a timeout; the default (NULL) changes
 * TW_ECANCELED into TW_ETIMEDOUT (with the cancel as its cause). */
typedef tw_result (*tw_timeout_fn)(tw_result r, double seconds, void *arg);
/* Cancels d if it has no result `seconds` from now on `clock`; the callbacks
 * already added see the cancellation, and on_timeout then converts the
 * result. The timer is cancelled when d's chain reaches this point first. */
TW_API int tw_deferred_add_timeout(tw_deferred *d, double seconds, tw_clock *clock,
                                   tw_timeout_fn on_timeout, void *arg);
/* The same, and the timeout owns arg: drop(arg) (drop may be NULL) is called
 * once d's chain has passed the timeout's entry: after on_timeout if the
 * timeout came first, at once if the result did (on_timeout never runs); on
 * an error return, before returning. */
TW_API int tw_deferred_add_timeout_full(tw_deferred *d, double seconds, tw_clock *clock,
                                        tw_timeout_fn on_timeout, void *arg, tw_drop_fn drop);

/* ---- unhandled failures ----
 * What the hook is told of a Deferred freed with a failure as its result. */
typedef struct tw_unhandled {
    tw_failure *failure; /* borrowed for the call: tw_failure_ref it to keep it */
    const char *file;    /* where the Deferred was created, or NULL if not recorded */
    int line;            /* 0 when file is NULL */
} tw_unhandled;
typedef void (*tw_unhandled_fn)(void *ctx, const tw_unhandled *u);
/* Installs fn (NULL restores the default: one TW_DIAG_UNHANDLED line to the
 * diagnostic hook, which then gets nothing else). Process-wide, like the
 * diagnostic hook: fn is called on the thread that frees the Deferred, from
 * inside the twine call that freed it, so it must not call back into the
 * objects that thread is using; it may keep the failure (tw_failure_ref: the
 * count is atomic) and hand it to another thread. Thread-safe and
 * allocation-free; a report already in progress may still reach the old
 * hook. */
TW_API void tw_set_unhandled_hook(tw_unhandled_fn fn, void *ctx);

/* ---- inspection (mostly for tests) ---- */
TW_API bool tw_deferred_called(const tw_deferred *d);
TW_API unsigned tw_deferred_paused(const tw_deferred *d);
/* The Deferred d waits on (borrowed), or NULL. */
TW_API tw_deferred *tw_deferred_waiting_on(const tw_deferred *d);
/* Borrows the current result: true if d has fired and is not waiting. */
TW_API bool tw_deferred_peek(const tw_deferred *d, tw_result *out);

/* ==== lists =============================================================== */

enum {
    TW_LIST_FIRE_ON_ONE_CALLBACK = 1, /* fire with the first value (items[index]) */
    TW_LIST_FIRE_ON_ONE_ERRBACK = 2,  /* fail with the first failure, its index attached */
    TW_LIST_CONSUME_ERRORS = 4        /* an input's failure continues its own chain as none */
};

typedef struct tw_list_item {
    bool done;        /* the input reached the list before it fired */
    bool ok;          /* result is a value (else a failure) */
    tw_result result; /* owned by the list result */
} tw_list_item;

/* The value a list fires with (its drop frees the items' results). */
typedef struct tw_list_result {
    size_t count; /* number of inputs */
    size_t index; /* the input that fired the list early, or SIZE_MAX */
    tw_list_item items[];
} tw_list_result;

/* Twisted's DeferredList over n inputs (the caller keeps its references).
 * Until the list fires, it takes each input's value (the input's chain goes
 * on with none; an input listed twice gives its value to the first slot and
 * none to the second) and a reference to each failure (the input keeps its
 * own unless TW_LIST_CONSUME_ERRORS). Inputs that arrive after the list
 * fired keep their values. An empty list fires at once, whatever the flags.
 * TW_LIST_FIRE_ON_ONE_ERRBACK fails the list with a failure made as
 * tw_gather_results describes. Cancelling a list that has not fired cancels
 * every input that has not reached it; a fired list cancels like any
 * Deferred (only what it waits on). TW_EINVAL for unknown flags or a NULL
 * input (nothing is attached then).
 * Kept on purpose, unlike Twisted: an empty list with
 * TW_LIST_FIRE_ON_ONE_CALLBACK fires at once (index SIZE_MAX, no items),
 * where Twisted's never fires; no input could ever fire it, so its callbacks
 * would only wait forever. */
TW_API int tw_deferred_list(tw_deferred *const *inputs, size_t n, unsigned flags,
                            tw_deferred **out);
/* A list with TW_LIST_FIRE_ON_ONE_ERRBACK: fires with the same
 * tw_list_result (every item ok, values in input order), or fails with the
 * first failure: a new failure with that input's code, message "input #i
 * failed: ...", the input's failure as cause, and tw_failure_index() == i. */
TW_API int tw_gather_results(tw_deferred *const *inputs, size_t n, bool consume_errors,
                             tw_deferred **out);

/* ==== DeferredLock, DeferredSemaphore =====================================
 * Async mutual exclusion for the loop thread. acquire returns a Deferred that
 * fires (with the lock's address as its value) when the caller holds it.
 * Hand-off is direct and strictly FIFO: release passes the lock to the oldest
 * waiter and runs its chain before returning, so no one can barge in. A
 * release made while another release of the same lock is handing off returns
 * at once and the outer hand-off continues, so 10^5 waiters that each release
 * at once run in bounded stack (in a different order from Twisted, which
 * recurses: a waiter's code after its release runs before the next waiter).
 *
 * run(fn, arg) acquires, calls fn, and releases when fn's result — a value, a
 * failure, or a Deferred once it fires — is ready, on success and failure
 * alike; the returned Deferred fires with that result.
 *
 * Caller-allocated; an all-zero tw_dlock is an unlocked lock. A lock must
 * outlive its waiters. A waiter is held by the lock until it is handed the
 * lock or cancelled; cancelling a pending acquire removes it (it fails with
 * TW_ECANCELED), cancelling one that has been granted does nothing. */

typedef struct tw__dprim {
    tw_deferred *head, *tail; /* pending acquires, oldest first */
    size_t waiting;
    uint32_t held;   /* grants outstanding */
    uint32_t limit;  /* tokens; 0 in a zeroed lock means 1 */
    uint32_t firing; /* a release up the stack is handing off */
    uint32_t thread; /* TW_DEBUG builds: the thread of its first use (0: none yet) */
} tw__dprim;

typedef struct tw_dlock {
    tw__dprim p;
} tw_dlock;
#define TW_DLOCK_INIT {{NULL, NULL, 0, 0, 0, 0, 0}}

TW_API int tw_dlock_acquire(tw_dlock *l, tw_deferred **out);
/* TW_EPERM if the lock is not held. */
TW_API int tw_dlock_release(tw_dlock *l);
/* out may be NULL when the caller does not need the result (a failure is
 * then reported as unhandled when the chain ends with it). */
TW_API int tw_dlock_run(tw_dlock *l, tw_result_fn fn, void *arg, tw_deferred **out);
/* The same, and run owns arg: drop(arg) (drop may be NULL) is called once
 * fn's result is ready and the lock released, or, when fn never runs (the
 * pending acquire was cancelled), once the acquire has failed; on an error
 * return, before returning. So arg may serve a Deferred fn returns until it
 * fires. */
TW_API int tw_dlock_run_full(tw_dlock *l, tw_result_fn fn, void *arg, tw_drop_fn drop,
                             tw_deferred **out);
TW_API bool tw_dlock_locked(const tw_dlock *l);
TW_API size_t tw_dlock_waiting(const tw_dlock *l);

typedef struct tw_dsem {
    tw__dprim p;
} tw_dsem;

/* The most tokens a DeferredSemaphore holds: TW_SEM_VALUE_MAX, as a tw_sem. */
#define TW_DSEM_TOKENS_MAX 0x7fffffffu
/* 1 <= tokens <= TW_DSEM_TOKENS_MAX, else TW_EINVAL (a -1 passed by mistake
 * arrives as 4294967295 and is refused). A zeroed tw_dsem must be
 * initialised. */
TW_API int tw_dsem_init(tw_dsem *s, uint32_t tokens);
TW_API int tw_dsem_acquire(tw_dsem *s, tw_deferred **out);
/* TW_EOVERFLOW when every token is already back (more releases than grants). */
TW_API int tw_dsem_release(tw_dsem *s);
TW_API int tw_dsem_run(tw_dsem *s, tw_result_fn fn, void *arg, tw_deferred **out);
/* As tw_dlock_run_full: drop(arg) once the token is back, or once a
 * cancelled acquire has failed. */
TW_API int tw_dsem_run_full(tw_dsem *s, tw_result_fn fn, void *arg, tw_drop_fn drop,
                            tw_deferred **out);
TW_API uint32_t tw_dsem_tokens(const tw_dsem *s); /* free tokens */
TW_API uint32_t tw_dsem_limit(const tw_dsem *s);
TW_API size_t tw_dsem_waiting(const tw_dsem *s);

/* ==== DeferredQueue =======================================================
 * put hands an item to the oldest waiting get (running its chain before
 * returning) or keeps it; get returns a Deferred that fires with the oldest
 * item, at once if one is kept. `size` bounds the items kept, `backlog` the
 * gets waiting; TW_UNBOUNDED for no bound. Items are values with an optional
 * drop function; the queue owns an item from a successful put until a get's
 * Deferred takes it.
 *
 * Like the lock's release, a put made inside a getter's chain (itself run by
 * a put) only keeps its item and returns; the outer put hands it on, so long
 * runs of getters that put again use a bounded stack. Items and waiting gets
 * are never both present except during such a hand-off, when a new get
 * queues behind the waiting ones. */

#define TW_UNBOUNDED SIZE_MAX

typedef struct tw_dqueue tw_dqueue;
TW_API int tw_dqueue_create(size_t size, size_t backlog, tw_dqueue **out);
/* TW_EOVERFLOW when the queue keeps `size` items and no get waits, TW_ENOMEM
 * when it cannot grow; either way the item stays the caller's. */
TW_API int tw_dqueue_put(tw_dqueue *q, void *ptr, tw_drop_fn drop);
/* TW_EUNDERFLOW when nothing is kept and `backlog` gets already wait. */
TW_API int tw_dqueue_get(tw_dqueue *q, tw_deferred **out);
TW_API size_t tw_dqueue_pending(const tw_dqueue *q); /* items kept */
TW_API size_t tw_dqueue_waiting(const tw_dqueue *q); /* gets waiting */
/* Drops the items kept; waiting gets fail with TW_ESHUTDOWN (their
 * callbacks see put and get return TW_ESHUTDOWN). Called from inside the
 * queue's own hand-off or destroy it does nothing but report misuse. */
TW_API void tw_dqueue_destroy(tw_dqueue *q);

#ifdef __cplusplus
}
#endif

#endif /* TWINE_DEFERRED_H */
