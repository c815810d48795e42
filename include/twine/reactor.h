/*
 * twine/reactor.h — the event loop, and the bridge between the loop and threads.
 *
 * A reactor runs one loop on the thread that calls tw_reactor_run: timers,
 * fd watchers, shutdown triggers, and the calls other threads post to it.
 * Everything registered with it runs on that thread, so loop code — and the
 * Deferreds it uses — needs no locks:
 *
 *     static tw_result blocking_read(void *path, tw_cancel *cancel)   // a pool thread
 *     {
 *         char *text = slurp(path);                                   // may block
 *         return text ? tw_result_value(text, free)
 *                     : tw_result_fail(TW_ESYS, "cannot read %s", (char *)path);
 *     }
 *     static tw_result show(tw_result r, void *arg)                  // the loop thread
 *     {
 *         if (tw_result_is_failure(r))
 *             fprintf(stderr, "%s\n", tw_failure_message(tw_result_as_failure(r)));
 *         else
 *             puts(r.ptr);
 *         tw_result_drop(r);
 *         tw_reactor_stop(arg);
 *         return tw_result_none();
 *     }
 *
 *     tw_reactor *r;
 *     tw_reactor_create(&r);
 *     tw_deferred *d;
 *     tw_defer_to_thread(r, blocking_read, "/etc/hostname", &d);
 *     tw_deferred_add_both(d, show, r);          // success or failure, it stops
 *     tw_deferred_unref(d);
 *     tw_reactor_run(r);                        // returns after stop and shutdown
 *     tw_reactor_destroy(r);
 *
 * Threads. The thread-safe entry points are tw_reactor_call_from_thread,
 * tw_reactor_post, tw_blocking_call_from_thread (from any thread but the
 * loop's) and tw_reactor_stop; a thread function's tw_cancel_* calls are its
 * own. tw_reactor_run and tw_reactor_iterate may be called from any thread,
 * which becomes the loop thread. Every other function here belongs to the
 * loop thread (before it first runs: the thread that created the reactor;
 * once shut down: whoever cleans up); builds with TW_DEBUG report a call from
 * another thread through the diagnostic hook, naming the function.
 *
 * Arguments. The calls whose function may never run — a timer cancelled or
 * still pending at shutdown, a call_when_running on a reactor destroyed
 * without running, a defer_to_thread cancelled before it started — have a
 * _full form that also takes a drop function for the argument, as in
 * twine/deferred.h: the call owns the argument and drops it exactly once,
 * when the function can no longer be called (after it ran, or once it never
 * will), and before returning when the call fails.
 *
 * Shutdown (docs/reactor.md has it step by step). tw_reactor_stop starts it:
 * the before-shutdown triggers run and the loop keeps running until every
 * Deferred they returned has fired; then blocking calls still waiting are
 * released with TW_ESHUTDOWN and new ones refused; then the during-shutdown
 * triggers run and the reactor's pool stops (waiting at most
 * pool_stop_timeout); then the after-shutdown triggers; then other threads'
 * posts are refused with TW_ESHUTDOWN and the calls already posted are run
 * until none is left. Every accepted call runs exactly once.
 */
#ifndef TWINE_REACTOR_H
#define TWINE_REACTOR_H

#include "base.h"
#include "deferred.h"
#include "sync.h"
#include "worker.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tw_reactor tw_reactor;
typedef void (*tw_call_fn)(void *arg);

/* ==== the loop ============================================================ */

enum tw_poller {
    TW_POLLER_DEFAULT = 0, /* epoll on Linux builds, poll(2) on the portable backend */
    TW_POLLER_EPOLL = 1,   /* TW_ENOTSUP where not built */
    TW_POLLER_POLL = 2
};

typedef struct tw_reactor_config {
    enum tw_poller poller;
    bool fake_clock;          /* time starts at 0 and moves only by tw_reactor_advance */
    size_t pool_max;          /* the reactor pool's limit; 0 means 10 */
    double pool_stop_timeout; /* seconds shutdown waits for pool threads; negative: forever */
} tw_reactor_config;

#define TW_REACTOR_CONFIG_INIT {TW_POLLER_DEFAULT, false, 10, 30.0}

TW_API int tw_reactor_create(tw_reactor **out);
TW_API int tw_reactor_create_with(const tw_reactor_config *cfg, tw_reactor **out);
/* TW_EBUSY while run() or iterate() is active (from one of its callbacks).
 * A reactor that never ran is shut down first (triggers, pool, posted
 * calls), as at the end of run(). If shutdown had to leave stuck pool
 * threads running (pool_stop_timeout), the pool and the reactor's closed
 * call queue are not freed, since those threads may still post to it. */
TW_API int tw_reactor_destroy(tw_reactor *r);

/* Runs the loop on the calling thread until stop and shutdown are complete.
 * A reactor runs once: TW_EALREADY for a second run (or while running). */
TW_API int tw_reactor_run(tw_reactor *r);
/* Runs one iteration, waiting at most `timeout` seconds for something to do
 * (0: do not wait). For tests and for embedding; not while run() or another
 * iterate() is active (TW_EBUSY). TW_ESHUTDOWN once the reactor has shut
 * down. The calling thread is the loop thread from then on. */
TW_API int tw_reactor_iterate(tw_reactor *r, double timeout);
/* Starts shutdown. Any thread, and safe in a signal handler. TW_EALREADY if
 * already stopping or stopped. A stop before run makes run shut down at once. */
TW_API int tw_reactor_stop(tw_reactor *r);
/* Calls fn(arg) when the loop starts (at once if it is running);
 * TW_ESHUTDOWN once shut down. A reactor destroyed without running never
 * calls it. */
TW_API int tw_reactor_call_when_running(tw_reactor *r, tw_call_fn fn, void *arg);
/* The same, and drop(arg) (drop may be NULL) once fn has returned, or when a
 * reactor that never ran is destroyed, or on an error return. */
TW_API int tw_reactor_call_when_running_full(tw_reactor *r, tw_call_fn fn, void *arg,
                                             tw_drop_fn drop);
/* True from the first iteration (run, or iterate) until shutdown completes. */
TW_API bool tw_reactor_running(const tw_reactor *r);

/* SIGINT and SIGTERM stop this reactor cleanly (the previous handlers come
 * back when run() returns or the reactor is destroyed). One reactor at a
 * time: TW_EBUSY if another has them; TW_ESHUTDOWN once shut down. */
TW_API int tw_reactor_handle_signals(tw_reactor *r);

/* Now on the reactor's clock, in seconds (fake or monotonic). */
TW_API double tw_reactor_seconds(const tw_reactor *r);
/* The reactor as the deferred layer's clock (tw_deferred_add_timeout). Its
 * calls stop at shutdown. A call's handle is valid until the call runs or
 * is cancelled, even after the reactor is freed, so a Deferred with a
 * timeout may outlive its reactor. */
TW_API tw_clock *tw_reactor_clock(tw_reactor *r);
/* Fake clock only (else TW_ENOTSUP): moves time forward and runs the timers
 * that fall due, in order. */
TW_API int tw_reactor_advance(tw_reactor *r, double seconds);

/* ==== timers ==============================================================
 * tw_reactor_call_later runs fn(arg) once, `seconds` from now (>= 0, finite).
 * Timers due at the same time run in the order they were scheduled. With
 * out != NULL the caller gets a handle (one reference, given back with
 * tw_delayed_call_unref) to cancel, reset, delay or query the call; the
 * handle stays valid after the call ran or was cancelled. */
typedef struct tw_delayed_call tw_delayed_call;

/* TW_ESHUTDOWN once the reactor has shut down. */
TW_API int tw_reactor_call_later(tw_reactor *r, double seconds, tw_call_fn fn, void *arg,
                                 tw_delayed_call **out);
/* The same, and drop(arg) (drop may be NULL) once the call is over: after fn
 * has returned, when it is cancelled, or when the reactor is destroyed with
 * it still pending (calls stop at shutdown); on an error return, before
 * returning. */
TW_API int tw_reactor_call_later_full(tw_reactor *r, double seconds, tw_call_fn fn, void *arg,
                                      tw_drop_fn drop, tw_delayed_call **out);
/* TW_EALREADY if it already ran or was cancelled. */
TW_API int tw_delayed_call_cancel(tw_delayed_call *c);
/* Runs `seconds` from now instead. TW_EALREADY if not active. */
TW_API int tw_delayed_call_reset(tw_delayed_call *c, double seconds);
/* Runs `seconds` later than planned. TW_EALREADY if not active. */
TW_API int tw_delayed_call_delay(tw_delayed_call *c, double seconds);
/* Neither run nor cancelled. */
TW_API bool tw_delayed_call_active(const tw_delayed_call *c);
/* When it runs (or was due), in tw_reactor_seconds terms. */
TW_API double tw_delayed_call_time(const tw_delayed_call *c);
TW_API void tw_delayed_call_unref(tw_delayed_call *c);

/* ==== fd watchers =========================================================
 * A reader is called when fd is readable (or at end of file, or on error), a
 * writer when it is writable (or on error). One reader and one writer per
 * fd; adding again replaces the function. The reactor never closes fds:
 * remove them before closing. Once an fd's last watcher is removed, no
 * event of the current batch reaches that fd number again, so a callback
 * may close it and watch a new fd that got the same number. */
enum { TW_READABLE = 1, TW_WRITABLE = 2 };
typedef void (*tw_fd_fn)(int fd, unsigned events, void *arg);

/* TW_EINVAL for a negative fd or one the poller refuses (a regular file with
 * epoll). */
TW_API int tw_reactor_add_reader(tw_reactor *r, int fd, tw_fd_fn fn, void *arg);
TW_API int tw_reactor_add_writer(tw_reactor *r, int fd, tw_fd_fn fn, void *arg);
/* TW_EINVAL if fd has no reader (writer). */
TW_API int tw_reactor_remove_reader(tw_reactor *r, int fd);
TW_API int tw_reactor_remove_writer(tw_reactor *r, int fd);

/* ==== shutdown triggers ===================================================
 * fn runs in its phase, in the order added. A before-shutdown trigger may
 * return a Deferred: shutdown waits for it (the loop keeps running). A
 * failure returned by any trigger is reported through the diagnostic hook
 * (TW_DIAG_WARNING) and shutdown goes on. id may be NULL. */
enum tw_trigger_phase {
    TW_BEFORE_SHUTDOWN = 0,
    TW_DURING_SHUTDOWN = 1,
    TW_AFTER_SHUTDOWN = 2
};

/* TW_ESHUTDOWN once that phase has run (a trigger added to a phase while it
 * runs still runs). */
TW_API int tw_reactor_add_trigger(tw_reactor *r, enum tw_trigger_phase phase, tw_result_fn fn,
                                  void *arg, uint64_t *id);
/* TW_EINVAL for an id that is not registered (or whose phase has run). */
TW_API int tw_reactor_remove_trigger(tw_reactor *r, uint64_t id);

/* ==== calls from other threads ============================================
 * The one way into the loop from another thread. Calls run on the loop
 * thread in the order each thread posted them, once each, in batches: a loop
 * iteration runs up to 4096 of them (the rest run in the next iterations,
 * which do not sleep while calls wait), and one write to an eventfd (a pipe
 * on the portable backend) wakes the loop however many calls arrive while it
 * sleeps. Nearly
 * every call goes through a ring of 4096 (fn, arg) cells and allocates
 * nothing. When the ring is full, a poster waits while the loop makes
 * progress, so a poster faster than the loop runs at the loop's pace; if the
 * loop runs nothing for a millisecond (it may be blocked), and on the loop
 * thread at once, the call goes on a node instead (the caller's for
 * tw_reactor_post, an allocated one otherwise); calls that went on nodes run
 * in one batch, outside the 4096 limit.
 *
 * When shutdown reaches its last step (after the after-shutdown triggers),
 * posting from other threads returns TW_ESHUTDOWN and the call is not taken;
 * calls still being run may post more (on the loop thread), and those run
 * too before run() returns. Every accepted call runs exactly once. */
typedef struct tw_call {
    struct tw_call *next; /* the reactor's while it holds the node */
    tw_call_fn fn;
    void *arg;
} tw_call;

#define TW_CALL_INIT(fn, arg) {NULL, (fn), (arg)}

/* A reactor must not be destroyed while another thread may still be inside
 * one of these calls; a call that has returned no longer touches it.
 * TW_ENOMEM only when the ring is full and no node can be allocated. */
TW_API int tw_reactor_call_from_thread(tw_reactor *r, tw_call_fn fn, void *arg);
/* Caller's node, no allocation: the reactor holds it until it calls fn, and
 * does not touch it afterwards (fn may free or reuse it). */
TW_API int tw_reactor_post(tw_reactor *r, tw_call *node);

/* ==== the reactor's thread pool ===========================================
 * A tw_pool created on first use (min 0, max pool_max) and stopped during
 * shutdown; afterwards the functions below that use it return TW_ESHUTDOWN
 * (tw_defer_to_thread_pool, on the application's pool, works until the
 * reactor has shut down). */

/* Sets the pool's limit (n >= 1), now or when the pool is created. */
TW_API int tw_reactor_suggest_thread_pool_size(tw_reactor *r, size_t n);
/* The pool (borrowed; the reactor stops and frees it), created if needed.
 * tw_pool_stats_get gives its statistics. */
TW_API int tw_reactor_get_thread_pool(tw_reactor *r, tw_pool **out);
/* Runs fn(arg) on a pool thread; its non-zero return goes to the pool's
 * error hook (by default the diagnostic hook). */
TW_API int tw_reactor_call_in_thread(tw_reactor *r, tw_task_fn fn, void *arg);

typedef struct tw_thread_call {
    tw_task_fn fn;
    void *arg;
} tw_thread_call;
/* Runs the n calls one after the other on one pool thread (the array is
 * copied). Every call runs; the task's error is the first non-zero code
 * (later ones are reported through the diagnostic hook). */
TW_API int tw_reactor_call_multiple_in_thread(tw_reactor *r, const tw_thread_call *calls,
                                              size_t n);

/* A cancellation request a thread function can poll or wait on. */
typedef struct tw_cancel tw_cancel;
TW_API bool tw_cancel_requested(const tw_cancel *c);
/* 0 once cancellation is requested; TW_ETIMEDOUT after `timeout` seconds
 * (negative: wait forever). */
TW_API int tw_cancel_wait(tw_cancel *c, double timeout);

/* Runs on a pool thread; returns a value or a failure (not a Deferred:
 * Deferreds belong to the loop thread). */
typedef tw_result (*tw_thread_fn)(void *arg, tw_cancel *cancel);

/* Runs fn(arg, cancel) on the reactor's pool; *out fires on the loop thread
 * with its result. Cancelling *out fails it with TW_ECANCELED at once and
 * requests cancellation: a task that has not started never runs, a running
 * one sees tw_cancel_requested and its result, when it comes, is dropped.
 * The Deferred fires exactly once either way. */
TW_API int tw_defer_to_thread(tw_reactor *r, tw_thread_fn fn, void *arg, tw_deferred **out);
/* The same on a pool of the application's. The reactor never stops or frees
 * that pool: the application does, and must stop it (or let the tasks it was
 * given finish) before destroying the reactor, to which they post. */
TW_API int tw_defer_to_thread_pool(tw_reactor *r, tw_pool *pool, tw_thread_fn fn, void *arg,
                                   tw_deferred **out);
/* Either of the two (pool NULL: the reactor's), and drop(arg) (drop may be
 * NULL), on the pool thread, once fn has returned or, cancelled before it
 * started, will never run; on an error return, before returning. */
TW_API int tw_defer_to_thread_full(tw_reactor *r, tw_pool *pool, tw_thread_fn fn, void *arg,
                                   tw_drop_fn drop, tw_deferred **out);

/* From a thread that is not the loop's: runs fn(arg) on the loop thread and
 * waits for its result; fn may return a Deferred, whose result is then
 * awaited. 0 with the result (value or failure) in *out, owned by the
 * caller. TW_EDEADLK at once on the loop thread (it would wait for itself;
 * before run, the thread that created the reactor counts as the loop's);
 * TW_ESHUTDOWN once shutdown has reached the during-shutdown phase, and for
 * calls still waiting then (so a pool thread blocked here cannot hang the
 * pool's stop). */
TW_API int tw_blocking_call_from_thread(tw_reactor *r, tw_result_fn fn, void *arg,
                                        tw_result *out);

#ifdef __cplusplus
}
#endif

#endif /* TWINE_REACTOR_H */
