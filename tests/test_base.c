/* Unit tests for twine/base.h: error table, monotonic time and deadlines,
 * version, diagnostic hook. */
#include "harness.h"
#include "base/errno_map.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- error table --------------------------------------------------------- */

struct err_row {
    int code;
    const char *name;
    const char *message;
};

static const struct err_row err_rows[] = {
#define ROW(name, value, msg) {value, #name, msg},
    TW_ERROR_TABLE(ROW)
#undef ROW
};
#define N_ERR_ROWS (sizeof err_rows / sizeof err_rows[0])

static void test_error_table_names_and_messages(void **state)
{
    (void)state;
    assert_true(N_ERR_ROWS >= 18);
    for (size_t i = 0; i < N_ERR_ROWS; i++) {
        const char *name = tw_err_name(err_rows[i].code);
        const char *msg = tw_strerror(err_rows[i].code);
        assert_non_null(name);
        assert_non_null(msg);
        assert_string_equal(name, err_rows[i].name);
        assert_string_equal(msg, err_rows[i].message);
        assert_true(strlen(msg) > 0);
        assert_string_not_equal(msg, "unknown error");
        assert_string_not_equal(name, "TW_E?");
    }
}

static void test_error_table_distinct(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ERR_ROWS; i++) {
        for (size_t j = i + 1; j < N_ERR_ROWS; j++) {
            if (err_rows[i].code == err_rows[j].code)
                fail_msg("codes %s and %s share the value %d", err_rows[i].name,
                         err_rows[j].name, err_rows[i].code);
            if (strcmp(tw_err_name(err_rows[i].code), tw_err_name(err_rows[j].code)) == 0)
                fail_msg("codes %d and %d share the name %s", err_rows[i].code,
                         err_rows[j].code, tw_err_name(err_rows[i].code));
            if (strcmp(tw_strerror(err_rows[i].code), tw_strerror(err_rows[j].code)) == 0)
                fail_msg("codes %d and %d share the message \"%s\"", err_rows[i].code,
                         err_rows[j].code, tw_strerror(err_rows[i].code));
        }
    }
}

/* The values are part of the ABI: a renumbering must break this test. */
static void test_error_values_stable(void **state)
{
    (void)state;
    assert_int_equal(TW_OK, 0);
    assert_int_equal(TW_EINVAL, -1);
    assert_int_equal(TW_EPERM, -2);
    assert_int_equal(TW_ETIMEDOUT, -3);
    assert_int_equal(TW_EBUSY, -4);
    assert_int_equal(TW_EOVERFLOW, -5);
    assert_int_equal(TW_EUNDERFLOW, -6);
    assert_int_equal(TW_EBROKEN, -7);
    assert_int_equal(TW_EQUIT, -8);
    assert_int_equal(TW_EALREADY, -9);
    assert_int_equal(TW_ECANCELED, -10);
    assert_int_equal(TW_EDEADLK, -11);
    assert_int_equal(TW_ENOMEM, -12);
    assert_int_equal(TW_ESHUTDOWN, -13);
    assert_int_equal(TW_EEMPTY, -14);
    assert_int_equal(TW_EFULL, -15);
    assert_int_equal(TW_ENOTSUP, -16);
    assert_int_equal(TW_ESYS, -17);
    assert_int_equal(TW_EABANDONED, -18);
    assert_int_equal(TW_ECONNREFUSED, -19);
    assert_int_equal(TW_ECONNRESET, -20);
    assert_int_equal(TW_ECONNDONE, -21);
    assert_int_equal(TW_ECONNLOST, -22);
    assert_int_equal(TW_ECONNABORTED, -23);
    assert_int_equal(TW_EUNREACH, -24);
    assert_int_equal(TW_ENOTFOUND, -25);
    assert_int_equal(TW_EADDRINUSE, -26);
    assert_int_equal(TW_EIO, -27);
    assert_int_equal(TW_EPROTO, -28);
    assert_int_equal(TW_EREMOTE, -29);
    assert_int_equal(TW_ENOTCONN, -30);
    assert_int_equal(TW_ETLS, -31);
    assert_int_equal(TW_ELEASE, -32);
    assert_int_equal(TW_EACCES, -33);
    assert_int_equal(TW_ESTALE, -34);
    assert_string_equal(tw_err_name(TW_ETIMEDOUT), "TW_ETIMEDOUT");
    assert_string_equal(tw_strerror(TW_ETIMEDOUT), "timed out");
    assert_string_equal(tw_err_name(TW_OK), "TW_OK");
    assert_string_equal(tw_strerror(TW_OK), "success");
}

/* System errors map onto the network codes; the rest is TW_EIO. */
static void test_errno_map(void **state)
{
    (void)state;
    assert_rc(tw__from_errno(ECONNREFUSED), TW_ECONNREFUSED);
    assert_rc(tw__from_errno(ECONNRESET), TW_ECONNRESET);
    assert_rc(tw__from_errno(EPIPE), TW_ECONNRESET);
    assert_rc(tw__from_errno(EHOSTUNREACH), TW_EUNREACH);
    assert_rc(tw__from_errno(ENETUNREACH), TW_EUNREACH);
    assert_rc(tw__from_errno(ETIMEDOUT), TW_ETIMEDOUT);
    assert_rc(tw__from_errno(EADDRINUSE), TW_EADDRINUSE);
    assert_rc(tw__from_errno(EACCES), TW_EACCES);
    assert_rc(tw__from_errno(ENOMEM), TW_ENOMEM);
    assert_rc(tw__from_errno(EMFILE), TW_ESYS);
    assert_rc(tw__from_errno(EINVAL), TW_EINVAL);
    assert_rc(tw__from_errno(EBADMSG), TW_EIO);
}

static void test_error_unknown_codes(void **state)
{
    static const int unknown[] = {1, 2, 17, 100, -35, -36, -100, -1000, INT_MAX, INT_MIN,
                                  INT_MIN + 1};
    (void)state;
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *name = tw_err_name(unknown[i]);
        const char *msg = tw_strerror(unknown[i]);
        assert_non_null(name);
        assert_non_null(msg);
        assert_string_equal(name, "TW_E?");
        assert_string_equal(msg, "unknown error");
    }
}

/* ---- monotonic time ------------------------------------------------------ */

static int64_t clock_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void test_now_monotonic(void **state)
{
    int64_t prev = tw_now_ns();
    (void)state;
    assert_true(prev > 0);
    for (int i = 0; i < 100000; i++) {
        int64_t now = tw_now_ns();
        if (now < prev)
            fail_msg("tw_now_ns went backwards: %lld after %lld", (long long)now,
                     (long long)prev);
        prev = now;
    }
}

/* tw_now_ns is CLOCK_MONOTONIC: it lies between two readings of that clock. */
static void test_now_is_clock_monotonic(void **state)
{
    (void)state;
    for (int i = 0; i < 1000; i++) {
        int64_t before = clock_monotonic_ns();
        int64_t now = tw_now_ns();
        int64_t after = clock_monotonic_ns();
        assert_true(before <= now);
        assert_true(now <= after);
    }
}

/* ---- deadlines ----------------------------------------------------------- */

static void test_deadline_never(void **state)
{
    static const double forever[] = {-1.0, -0.5, -1e-9, -1e300, -DBL_MAX, -INFINITY, INFINITY};
    (void)state;
    for (size_t i = 0; i < sizeof forever / sizeof forever[0]; i++) {
        tw_deadline d = 0;
        assert_rc(tw_deadline_from_timeout(forever[i], &d), 0);
        if (d != TW_DEADLINE_NEVER)
            fail_msg("timeout %g gave deadline %lld, not TW_DEADLINE_NEVER", forever[i],
                     (long long)d);
    }
}

static void test_deadline_huge_saturates(void **state)
{
    static const double huge[] = {1e10, 1e19, 1e300, DBL_MAX, 9.3e9};
    (void)state;
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        tw_deadline d = 0;
        assert_rc(tw_deadline_from_timeout(huge[i], &d), 0);
        if (d != TW_DEADLINE_NEVER)
            fail_msg("timeout %g gave deadline %lld, not TW_DEADLINE_NEVER", huge[i],
                     (long long)d);
    }
}

/* Near the end of the range: a timeout whose deadline would pass INT64_MAX
 * saturates, and one just short of it gives an exact, positive deadline. */
static void test_deadline_near_range_limit(void **state)
{
    int64_t now = tw_now_ns();
    double over = ((double)INT64_MAX - (double)now / 2) / 1e9;
    double under = ((double)INT64_MAX - (double)now - 1e12) / 1e9;
    tw_deadline d = 0;
    (void)state;
    assert_true(now > 1000000); /* uptime well above the double's spacing here */
    assert_rc(tw_deadline_from_timeout(over, &d), 0);
    if (d != TW_DEADLINE_NEVER)
        fail_msg("timeout %.17g s (now %lld ns) gave %lld, not TW_DEADLINE_NEVER", over,
                 (long long)now, (long long)d);
    assert_rc(tw_deadline_from_timeout(under, &d), 0);
    if (d == TW_DEADLINE_NEVER || d < INT64_MAX - 2000000000000LL)
        fail_msg("timeout %.17g s (now %lld ns) gave %lld, expected about INT64_MAX - 1e12",
                 under, (long long)now, (long long)d);
}

static void test_deadline_zero_is_now(void **state)
{
    tw_deadline d = -5;
    int64_t before, after;
    (void)state;
    before = tw_now_ns();
    assert_rc(tw_deadline_from_timeout(0.0, &d), 0);
    after = tw_now_ns();
    assert_true(d >= before);
    assert_true(d <= after);
    assert_true(d != TW_DEADLINE_NEVER);
}

static void test_deadline_positive(void **state)
{
    static const double secs[] = {1e-9, 0.001, 0.25, 1.5, 3600.0, 86400.0 * 365};
    (void)state;
    for (size_t i = 0; i < sizeof secs / sizeof secs[0]; i++) {
        tw_deadline d = 0;
        int64_t before, after, ns = (int64_t)(secs[i] * 1e9);
        before = tw_now_ns();
        assert_rc(tw_deadline_from_timeout(secs[i], &d), 0);
        after = tw_now_ns();
        /* One nanosecond of slack either way for the double -> ns rounding. */
        if (d < before + ns - 1 || d > after + ns + 1)
            fail_msg("timeout %g: deadline %lld outside [%lld, %lld]", secs[i], (long long)d,
                     (long long)(before + ns), (long long)(after + ns));
    }
}

static void test_deadline_nan_and_null(void **state)
{
    tw_deadline d = 12345;
    (void)state;
    assert_rc(tw_deadline_from_timeout(NAN, &d), TW_EINVAL);
    assert_true(d == 12345); /* *out untouched */
    assert_rc(tw_deadline_from_timeout(-NAN, &d), TW_EINVAL);
    assert_true(d == 12345);
    assert_rc(tw_deadline_from_timeout(1.0, NULL), TW_EINVAL);
    assert_rc(tw_deadline_from_timeout(0.0, NULL), TW_EINVAL);
    assert_rc(tw_deadline_from_timeout(-1.0, NULL), TW_EINVAL);
    assert_rc(tw_deadline_from_timeout(NAN, NULL), TW_EINVAL);
}

static void test_deadline_remaining(void **state)
{
    tw_deadline d;
    double r;
    (void)state;
    assert_true(tw_deadline_remaining(TW_DEADLINE_NEVER) == -1.0);

    /* Passed deadlines: exactly 0. */
    assert_true(tw_deadline_remaining(tw_now_ns() - 1000) == 0.0);
    assert_true(tw_deadline_remaining(tw_now_ns() - 1000000000LL) == 0.0);
    assert_true(tw_deadline_remaining(0) == 0.0);
    assert_true(tw_deadline_remaining(INT64_MIN) == 0.0);

    /* A deadline from a 0 timeout has passed (or is now) by the time we ask. */
    assert_rc(tw_deadline_from_timeout(0.0, &d), 0);
    assert_true(tw_deadline_remaining(d) == 0.0);

    /* A future deadline: positive, never more than what was asked. */
    assert_rc(tw_deadline_from_timeout(2.0, &d), 0);
    r = tw_deadline_remaining(d);
    assert_true(r > 0.0);
    assert_true(r <= 2.0);
    assert_true(r > 1.0); /* this test does not take a second between the two calls */

    d = tw_now_ns() + 3600LL * 1000000000LL;
    r = tw_deadline_remaining(d);
    assert_true(r <= 3600.0);
    assert_true(r > 3599.0);

    /* A saturated deadline is NEVER, so its remaining time is -1 too. */
    assert_rc(tw_deadline_from_timeout(1e300, &d), 0);
    assert_true(tw_deadline_remaining(d) == -1.0);
}

/* ---- version ------------------------------------------------------------- */

static void test_version(void **state)
{
    char buf[64];
    (void)state;
    assert_non_null(tw_version());
    assert_string_equal(tw_version(), TW_VERSION_STRING);
    assert_int_equal(tw_version_number(), TW_VERSION_NUMBER);
    assert_int_equal(TW_VERSION_NUMBER,
                     TW_VERSION_MAJOR * 10000 + TW_VERSION_MINOR * 100 + TW_VERSION_PATCH);
    snprintf(buf, sizeof buf, "%d.%d.%d", TW_VERSION_MAJOR, TW_VERSION_MINOR, TW_VERSION_PATCH);
    assert_string_equal(buf, TW_VERSION_STRING);
}

/* ---- diagnostic hook ----------------------------------------------------- */

struct diag_log {
    int calls; /* updated atomically: the hook may run on any thread */
    enum tw_diag_kind kind;
    int code;
    char function[64];
    char message[128];
    void *ctx;
};

static struct diag_log diag_a, diag_b;

static void copy_str(char *dst, size_t cap, const char *src)
{
    if (!src) {
        dst[0] = '\0';
        return;
    }
    strncpy(dst, src, cap - 1);
    dst[cap - 1] = '\0';
}

static void diag_record(void *ctx, const tw_diag *diag)
{
    struct diag_log *log = ctx;
    if (__atomic_add_fetch(&log->calls, 1, __ATOMIC_RELAXED) == 1) {
        log->ctx = ctx;
        log->kind = diag->kind;
        log->code = diag->code;
        copy_str(log->function, sizeof log->function, diag->function);
        copy_str(log->message, sizeof log->message, diag->message);
    }
}

static int diag_teardown(void **state)
{
    (void)state;
    tw_set_diag_hook(NULL, NULL);
    memset(&diag_a, 0, sizeof diag_a);
    memset(&diag_b, 0, sizeof diag_b);
    return 0;
}

static void test_diag_hook_receives_reports(void **state)
{
    (void)state;
    memset(&diag_a, 0, sizeof diag_a);
    tw_set_diag_hook(diag_record, &diag_a);
    tw_diag_report(TW_DIAG_WARNING, TW_EDEADLK, "tw_test_function", "a probable deadlock");
    assert_int_equal(diag_a.calls, 1);
    assert_ptr_equal(diag_a.ctx, &diag_a);
    assert_int_equal(diag_a.kind, TW_DIAG_WARNING);
    assert_rc(diag_a.code, TW_EDEADLK);
    assert_string_equal(diag_a.function, "tw_test_function");
    assert_string_equal(diag_a.message, "a probable deadlock");

    tw_diag_report(TW_DIAG_MISUSE, TW_EINVAL, "tw_other", "second");
    assert_int_equal(diag_a.calls, 2);
}

static void test_diag_hook_replace(void **state)
{
    (void)state;
    tw_set_diag_hook(diag_record, &diag_a);
    tw_set_diag_hook(diag_record, &diag_b);
    tw_diag_report(TW_DIAG_MISUSE, TW_EPERM, "f", "to b");
    assert_int_equal(diag_a.calls, 0);
    assert_int_equal(diag_b.calls, 1);
    assert_int_equal(diag_b.kind, TW_DIAG_MISUSE);
    assert_rc(diag_b.code, TW_EPERM);
    assert_string_equal(diag_b.message, "to b");
}

/* Runs one report with fd 2 redirected to a temporary file; returns what was written. */
static size_t capture_stderr_report(char *out, size_t cap)
{
    FILE *tmp = tmpfile();
    int saved;
    size_t n;
    assert_non_null(tmp);
    fflush(stderr);
    saved = dup(2);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), 2) >= 0);
    tw_diag_report(TW_DIAG_WARNING, TW_EBUSY, "tw_default_check", "default-hook-line-7f3a");
    fflush(stderr);
    assert_true(dup2(saved, 2) >= 0);
    close(saved);
    rewind(tmp);
    n = fread(out, 1, cap - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
    return n;
}

static void test_diag_null_restores_default(void **state)
{
    char buf[1024];
    size_t n, newlines = 0;
    (void)state;
    tw_set_diag_hook(diag_record, &diag_a);
    tw_set_diag_hook(NULL, NULL);
    n = capture_stderr_report(buf, sizeof buf);
    assert_int_equal(diag_a.calls, 0); /* the old hook no longer receives reports */
    assert_true(n > 0);
    assert_non_null(strstr(buf, "default-hook-line-7f3a"));
    for (size_t i = 0; i < n; i++)
        newlines += buf[i] == '\n';
    assert_int_equal(newlines, 1); /* one line */
    assert_true(buf[n - 1] == '\n');
}

static void *diag_report_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100; i++)
        tw_diag_report(TW_DIAG_WARNING, TW_EBUSY, "thread", "from a thread");
    return NULL;
}

static void test_diag_hook_from_threads(void **state)
{
    (void)state;
    tw_set_diag_hook(diag_record, &diag_a);
    tw_test_run_threads(4, diag_report_thread, NULL, 0);
    assert_int_equal(__atomic_load_n(&diag_a.calls, __ATOMIC_RELAXED), 400);
    assert_string_equal(diag_a.message, "from a thread");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_table_names_and_messages),
        cmocka_unit_test(test_error_table_distinct),
        cmocka_unit_test(test_error_values_stable),
        cmocka_unit_test(test_error_unknown_codes),
        cmocka_unit_test(test_errno_map),
        cmocka_unit_test(test_now_monotonic),
        cmocka_unit_test(test_now_is_clock_monotonic),
        cmocka_unit_test(test_deadline_never),
        cmocka_unit_test(test_deadline_huge_saturates),
        cmocka_unit_test(test_deadline_near_range_limit),
        cmocka_unit_test(test_deadline_zero_is_now),
        cmocka_unit_test(test_deadline_positive),
        cmocka_unit_test(test_deadline_nan_and_null),
        cmocka_unit_test(test_deadline_remaining),
        cmocka_unit_test(test_version),
        cmocka_unit_test_teardown(test_diag_hook_receives_reports, diag_teardown),
        cmocka_unit_test_teardown(test_diag_hook_replace, diag_teardown),
        cmocka_unit_test_teardown(test_diag_null_restores_default, diag_teardown),
        cmocka_unit_test_teardown(test_diag_hook_from_threads, diag_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
