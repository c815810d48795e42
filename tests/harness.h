/* Shared helpers for the test executables: cmocka, threads, scaling. */
#ifndef TW_TEST_HARNESS_H
#define TW_TEST_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <twine.h>

/* Stress sizes are multiplied by TW_TEST_SCALE (a number in (0, 1], default 1),
 * which the sanitizer and valgrind runs lower. Only sizes scale, never checks.
 * The result is at least `floor`. */
uint64_t tw_test_scaled(uint64_t n, uint64_t floor);

/* Starts n threads running fn(arg_i) where arg_i = base + i * stride (bytes);
 * joins them all. Fails the test if a thread cannot be created. */
void tw_test_run_threads(int n, void *(*fn)(void *), void *base, size_t stride);

/* A started thread, for tests that need to join later. */
pthread_t tw_test_start(void *(*fn)(void *), void *arg);
void *tw_test_join(pthread_t t);

/* Monotonic seconds, for timing assertions (only where timing is the behaviour). */
double tw_test_now(void);

/* Fails with both codes and their names spelled out when a twine return code
 * is not the expected one. */
#define assert_rc(expr, want)                                                          \
    do {                                                                               \
        int got_rc_ = (expr);                                                          \
        int want_rc_ = (want);                                                         \
        if (got_rc_ != want_rc_)                                                       \
            fail_msg("%s returned %d (%s), expected %d (%s)", #expr, got_rc_,          \
                     tw_err_name(got_rc_), want_rc_, tw_err_name(want_rc_));            \
    } while (0)

/* tw_test_now is a double of seconds since boot: its rounding error is a few
 * nanoseconds. This slack covers that rounding only, never an early return. */
#define TW_TEST_ROUNDING_SLACK 1e-8

/* Fails unless t1 - t0 is at least `asked` (less rounding) and at most asked + 5 s. */
void tw_test_check_elapsed_at_least(double t0, double t1, double asked);

/* ---- thread hand-off built on pthreads only, so that tests do not depend on
 * the twine primitives under test ------------------------------------------ */

/* A count that threads raise and others wait on (pthread mutex + monotonic cond). */
typedef struct tw_test_tally {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int count;
} tw_test_tally;

/* Initialises t with a count of zero. */
void tw_test_tally_init(tw_test_tally *t);
/* Destroys t; no thread may still use it. */
void tw_test_tally_destroy(tw_test_tally *t);
/* Raises the count by one and wakes every waiter. */
void tw_test_tally_add(tw_test_tally *t);
/* The current count. */
int tw_test_tally_get(tw_test_tally *t);
/* Waits until the count reaches n; false if `seconds` pass first. */
bool tw_test_tally_wait(tw_test_tally *t, int n, double seconds);

/* Waits for threads that must proceed. If they do not, they are stuck on
 * objects in the test's frame and can be neither joined nor abandoned
 * safely: stops the program with a message naming `what` instead of hanging
 * until the CTest timeout. */
void tw_test_must_reach(tw_test_tally *t, int n, double seconds, const char *what);

/* tw_test_run_threads (n <= 16), except that threads which never finish (a
 * lost wake-up) stop the program after a minute instead of hanging it. */
void tw_test_run_threads_bounded(int n, void *(*fn)(void *), void *base, size_t stride,
                                 const char *what);

/* ---- helpers for the worker, team and pool tests ---------------------------- */

/* A task: atomically adds one to the int at arg. */
int tw_test_count_task(void *arg);
/* A task: sets the tw_event at arg. */
int tw_test_set_event_task(void *arg);
/* Fails unless e is set within `limit` seconds. */
void tw_test_wait_event(tw_event *e, double limit);

/* Runs what worker w has accepted: a memory worker (`memory`) performs until
 * it is empty; a thread worker (`thread`) is waited on, for at most `limit`
 * seconds, to run a marker task queued behind them; a lock worker has already
 * run them. */
void tw_test_settle(tw_worker *w, bool memory, bool thread, double limit);

/* An append-only int log guarded by *lock: v[*n] = value while *n < cap; *n
 * counts every append, kept or not. */
void tw_test_log_add(tw_lock *lock, size_t *n, int *v, size_t cap, int value);
/* The count *n of such a log, read under *lock. */
size_t tw_test_log_len(tw_lock *lock, const size_t *n);
/* Fails unless got_n == n and got[i] == want[i] for every i < n. */
void tw_test_expect_log(const int *got, size_t got_n, const int *want, size_t n);

/* ---- twine diagnostics and leaks: the per-test fixture of the Deferred and
 * reactor tests ---------------------------------------------------------------
 * tw_test_twine_setup installs a diagnostic hook that records every report
 * (from any thread) and notes how many twine blocks are live;
 * tw_test_twine_teardown removes the hook and fails the test if blocks were
 * left live or if a report came that the test did not expect. */

/* One report that reached the hook. */
typedef struct tw_test_diag {
    enum tw_diag_kind kind;
    int code;
    char function[96];
    char message[512];
} tw_test_diag;

/* Reports kept for tw_test_diag_at / tw_test_diag_find; every one is counted. */
#define TW_TEST_DIAG_CAP 64

/* What the hook also writes to stderr, one line a report. */
enum tw_test_diag_echo {
    TW_TEST_DIAG_QUIET,     /* nothing */
    TW_TEST_DIAG_ECHO_ALL,  /* every report: "diagnostic (kind K, TW_E...) in FN: MSG" */
    TW_TEST_DIAG_ECHO_OTHER /* every report but TW_DIAG_UNHANDLED, as "unexpected diagnostic ..." */
};

/* Kinds of report a teardown lets pass: a mask of TW_TEST_DIAG_BIT(kind). */
#define TW_TEST_DIAG_BIT(kind) (1u << (unsigned)(kind))
#define TW_TEST_DIAGS_NONE 0u   /* every report fails the test */
#define TW_TEST_DIAGS_ANY (~0u) /* the tests check their reports themselves */

/* Setup: forgets every report, installs the recording hook (echoing as asked)
 * and notes tw_allocator_live(). */
void tw_test_twine_setup(enum tw_test_diag_echo echo);
/* Teardown: restores twine's default hook; returns -1 (after saying why on
 * stderr) if tw_allocator_live() differs from what setup noted, or if reports
 * of a kind not in `tolerated` were counted; 0 otherwise. */
int tw_test_twine_teardown(unsigned tolerated);

/* Reports counted since setup (or the last reset): all, or of one kind. */
int tw_test_diag_count(void);
int tw_test_diag_count_kind(enum tw_diag_kind kind);
/* The i-th report kept, or NULL. */
const tw_test_diag *tw_test_diag_at(int i);
/* The first kept report of `kind`, or NULL. */
const tw_test_diag *tw_test_diag_find(enum tw_diag_kind kind);
/* The latest report of `kind` (kept or not), or NULL if none was counted. */
const tw_test_diag *tw_test_diag_last(enum tw_diag_kind kind);
/* Forgets every report. */
void tw_test_diag_reset(void);
/* Zeroes the count of `kind` only (the other counts, which the teardown may
 * check, stay). */
void tw_test_diag_reset_kind(enum tw_diag_kind kind);

/* ---- TW_DEBUG ------------------------------------------------------------------ */

/* Whether the library was configured with TW_DEBUG, from the CMakeCache.txt of
 * the build tree this executable lives in: 1 yes, 0 no, -1 unknown. The tests
 * do not get the library's private TW_DEBUG definition. */
int tw_test_build_has_tw_debug(void);

/* For a misuse that only a TW_DEBUG build reports (a call from the wrong
 * thread), after `reports` reports of it: returns if there was one; if not,
 * fails the test when the library was built with TW_DEBUG (its check is
 * missing), and skips the test otherwise. `what` names the misused call. */
void tw_test_require_debug_report(int reports, const char *what);

/* ---- a trace: what callbacks did, compared as a whole ------------------------------ */

/* Entries separated by one space; tw_test_twine_setup does not clear it. */
extern char tw_test_trace[1 << 14];
/* Appends one entry (printf format), with a space before it unless it is the first. */
void tw_test_tr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Empties the trace. */
void tw_test_trace_clear(void);
/* Fails unless the trace is exactly `want`. */
#define EXPECT_TRACE(want) assert_string_equal(tw_test_trace, (want))

/* ---- helpers for the Deferred tests ------------------------------------------------ */

/* A malloc'd int holding v (fails the test when out of memory). */
int *tw_test_int_new(int v);
/* A value result carrying tw_test_int_new(v), with free as its drop function. */
tw_result tw_test_int_value(int v);
/* A new unfired Deferred without canceller (fails the test on error). A macro,
 * like tw_deferred_create, so that the creation site twine records (and
 * names in reports) is the test's own line. */
#define tw_test_new_deferred() tw_test_new_deferred_at(__FILE__, __LINE__)
tw_deferred *tw_test_new_deferred_at(const char *file, int line);

/* The result a Deferred reached, taken by a callback on both sides: the chain
 * goes on with none. calls counts the times the callback ran (a later result
 * replaces and drops an earlier one). */
typedef struct tw_test_capture {
    int calls;
    tw_result r;
} tw_test_capture;
/* Resets c and adds its callback to d. */
void tw_test_capture_add(tw_deferred *d, tw_test_capture *c);
/* Drops the result c holds. */
void tw_test_capture_release(tw_test_capture *c);

/* ---- helpers for the reactor tests --------------------------------------------------- */

/* Arms a watchdog: a timer that stops r after `seconds` on r's clock, so that a
 * loop whose own stop never comes ends run() (and the test fails on
 * tw_test_watchdog_fired) instead of hanging. */
void tw_test_arm_watchdog(tw_reactor *r, double seconds);
/* Whether the watchdog armed last has fired. */
bool tw_test_watchdog_fired(void);

#endif
