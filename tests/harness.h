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

#endif
