/*
 * The unhandled-failure report: a Deferred freed with a failure as its result
 * gives the failure itself (code, message, cause, payload) and its creation
 * site to the unhandled-failure hook (tw_set_unhandled_hook), like the
 * Failure a Twisted log observer gets; without a hook, one line goes to the
 * diagnostic hook. Codes of the application's own, outside twine's table,
 * are written as such everywhere a failure or a report is formatted
 * (tw_failure_format, the diagnostic line, the default diagnostic hook's
 * stderr line), never as an unknown twine code.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define APP_CODE (-2102) /* an application's code: outside twine's table */

static int setup(void **state)
{
    (void)state;
    tw_test_twine_setup(TW_TEST_DIAG_QUIET);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tw_set_unhandled_hook(NULL, NULL);
    return tw_test_twine_teardown(TW_TEST_DIAGS_ANY);
}

/* ---- a recording hook ---------------------------------------------------------- */

typedef struct seen {
    int calls;
    void *ctx;
    tw_failure *failure; /* a reference of the hook's own */
    const char *file;
    int line;
} seen;

static seen got;

static void record(void *ctx, const tw_unhandled *u)
{
    got.calls++;
    got.ctx = ctx;
    if (got.failure)
        tw_failure_unref(got.failure);
    got.failure = tw_failure_ref(u->failure); /* kept past the call */
    got.file = u->file;
    got.line = u->line;
}

static void forget(void)
{
    if (got.failure)
        tw_failure_unref(got.failure);
    memset(&got, 0, sizeof got);
}

static int payload_drops;
static void payload_drop(void *p)
{
    payload_drops++;
    free(p);
}

/* The failure itself, with everything it carries, and where the Deferred
 * was made; the diagnostic hook gets nothing. */
static void test_hook_gets_the_failure(void **state)
{
    (void)state;
    int marker;
    forget();
    payload_drops = 0;
    tw_set_unhandled_hook(record, &marker);

    tw_deferred *d;
    int line = __LINE__ + 1;
    assert_rc(tw_deferred_create(&d, NULL, NULL), 0);
    tw_failure *cause = tw_failure_new(TW_ECANCELED, "the fetch was cancelled");
    tw_failure *f = tw_failure_wrap(cause, APP_CODE, "record %d unavailable", 7);
    int *payload = malloc(sizeof *payload);
    assert_non_null(payload);
    *payload = 99;
    assert_rc(tw_failure_set_payload(f, payload, payload_drop), 0);
    assert_rc(tw_deferred_errback(d, f), 0);
    assert_int_equal(got.calls, 0);
    tw_deferred_unref(d);

    assert_int_equal(got.calls, 1);
    assert_ptr_equal(got.ctx, &marker);
    assert_ptr_equal(got.failure, f);
    assert_int_equal(tw_failure_code(got.failure), APP_CODE);
    assert_string_equal(tw_failure_message(got.failure), "record 7 unavailable");
    assert_int_equal(tw_failure_code(tw_failure_cause(got.failure)), TW_ECANCELED);
    assert_ptr_equal(tw_failure_payload(got.failure), payload);
    assert_int_equal(*(int *)tw_failure_payload(got.failure), 99);
    assert_non_null(got.file);
    assert_non_null(strstr(got.file, "test_deferred_unhandled.c"));
    assert_int_equal(got.line, line);
    assert_int_equal(tw_test_diag_count(), 0);

    /* The hook's reference keeps the failure (and its payload) alive. */
    assert_int_equal(payload_drops, 0);
    forget();
    assert_int_equal(payload_drops, 1);
}

/* Deferreds made without a creation site (tw_deferred_fail, the library's
 * own) report NULL and 0; each failure is reported once, also after a chain
 * hands it from an inner Deferred to the outer one. */
static tw_result cb_return(tw_result r, void *arg)
{
    tw_result_drop(r);
    return tw_result_deferred(tw_deferred_ref(arg));
}

static void test_hook_without_site_and_chained(void **state)
{
    (void)state;
    forget();
    tw_set_unhandled_hook(record, NULL);
    tw_deferred *d;
    assert_rc(tw_deferred_fail(&d, tw_failure_new(TW_EBUSY, "busy")), 0);
    tw_deferred_unref(d);
    assert_int_equal(got.calls, 1);
    assert_null(got.file);
    assert_int_equal(got.line, 0);
    assert_int_equal(tw_failure_code(got.failure), TW_EBUSY);

    tw_deferred *outer, *inner;
    int line = __LINE__ + 1;
    assert_rc(tw_deferred_create(&outer, NULL, NULL), 0);
    assert_rc(tw_deferred_create(&inner, NULL, NULL), 0);
    assert_rc(tw_deferred_add_callback(outer, cb_return, inner), 0);
    assert_rc(tw_deferred_callback(outer, tw_result_none()), 0);
    assert_rc(tw_deferred_errback(inner, tw_failure_new(APP_CODE, "inner")), 0);
    tw_deferred_unref(inner);
    assert_int_equal(got.calls, 1);
    tw_deferred_unref(outer);
    assert_int_equal(got.calls, 2);
    assert_int_equal(got.line, line); /* the outer one's site */
    assert_int_equal(tw_failure_code(got.failure), APP_CODE);
    assert_int_equal(tw_test_diag_count(), 0);

    /* Removed: the diagnostic hook has the report again. */
    tw_set_unhandled_hook(NULL, NULL);
    assert_rc(tw_deferred_fail(&d, tw_failure_new(TW_EBUSY, "busy")), 0);
    tw_deferred_unref(d);
    assert_int_equal(got.calls, 2);
    assert_int_equal(tw_test_diag_count_kind(TW_DIAG_UNHANDLED), 1);
    forget();
}

/* Without a hook: one line, with the application's code as such. */
static void test_diag_line_names_application_codes(void **state)
{
    (void)state;
    tw_deferred *d;
    char where[64];
    int line = __LINE__ + 1;
    assert_rc(tw_deferred_create(&d, NULL, NULL), 0);
    snprintf(where, sizeof where, "test_deferred_unhandled.c:%d", line);
    tw_failure *cause = tw_failure_new(7, "disk quota");
    assert_rc(tw_deferred_errback(d, tw_failure_wrap(cause, APP_CODE, "save failed")), 0);
    tw_deferred_unref(d);
    assert_int_equal(tw_test_diag_count(), 1);
    const tw_test_diag *r = tw_test_diag_find(TW_DIAG_UNHANDLED);
    assert_non_null(r);
    assert_int_equal(r->code, APP_CODE);
    if (!strstr(r->message, where) ||
        !strstr(r->message, "application error -2102: save failed; caused by application "
                            "error 7: disk quota"))
        fail_msg("report \"%s\"", r->message);
    assert_null(strstr(r->message, "TW_E?"));
}

/* tw_failure_format: twine's codes by name, the application's as such. */
static void test_format_application_codes(void **state)
{
    (void)state;
    char buf[256];
    tw_failure *f = tw_failure_wrap(
        tw_failure_wrap(tw_failure_new(TW_ETIMEDOUT, "slow"), 2102, "positive"), APP_CODE,
        "negative");
    const char *want = "application error -2102: negative; caused by application error 2102: "
                       "positive; caused by TW_ETIMEDOUT: slow";
    assert_int_equal(tw_failure_format(f, buf, sizeof buf), strlen(want));
    assert_string_equal(buf, want);
    tw_failure_unref(f);

    /* Just past twine's table is not a twine code either. */
    f = tw_failure_new(TW_ESTALE - 1, "next");
    tw_failure_format(f, buf, sizeof buf);
    snprintf(buf + 128, 128, "application error %d: next", TW_ESTALE - 1);
    assert_string_equal(buf, buf + 128);
    tw_failure_unref(f);
}

/* The default diagnostic hook's stderr line names the application's code as
 * such, not as an unknown twine code ("TW_E?"). */
static void test_default_diag_hook_line(void **state)
{
    (void)state;
    char out[2048];
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);

    tw_set_diag_hook(NULL, NULL); /* twine's default: one line on stderr */
    tw_deferred *d;
    assert_rc(tw_deferred_fail(&d, tw_failure_new(APP_CODE, "quota")), 0);
    tw_deferred_unref(d);
    tw_diag_report(TW_DIAG_WARNING, TW_EBUSY, "somewhere", "a twine code");
    fflush(stderr);

    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, sizeof out - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
    tw_test_twine_setup(TW_TEST_DIAG_QUIET); /* the recording hook back for the teardown */

    if (!strstr(out, "twine: unhandled failure: application error -2102 in tw_deferred_unref: "
                     "Deferred ended with application error -2102: quota") ||
        !strstr(out, "twine: warning: TW_EBUSY in somewhere: a twine code") ||
        strstr(out, "TW_E?"))
        fail_msg("stderr had:\n%s", out);
}

/* Installing and removing the hook while another thread reports: each
 * report reaches one hook with its own context, never a mix of the two. */
typedef struct racer {
    int stop;      /* atomic */
    int installs;  /* by the installing thread */
} racer;

static int mixed, calls_a, calls_b; /* atomic */
static int ctx_a, ctx_b;

static void hook_a(void *ctx, const tw_unhandled *u)
{
    (void)u;
    if (ctx != &ctx_a)
        __atomic_fetch_add(&mixed, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&calls_a, 1, __ATOMIC_RELAXED);
}

static void hook_b(void *ctx, const tw_unhandled *u)
{
    (void)u;
    if (ctx != &ctx_b)
        __atomic_fetch_add(&mixed, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&calls_b, 1, __ATOMIC_RELAXED);
}

static void *installer(void *arg)
{
    racer *rc = arg;
    while (!__atomic_load_n(&rc->stop, __ATOMIC_ACQUIRE)) {
        tw_set_unhandled_hook(hook_a, &ctx_a);
        tw_set_unhandled_hook(hook_b, &ctx_b);
        rc->installs++;
    }
    return NULL;
}

static void test_hook_installed_while_reporting(void **state)
{
    (void)state;
    racer rc = {0, 0};
    int n = (int)tw_test_scaled(20000, 200);
    tw_set_unhandled_hook(hook_a, &ctx_a);
    pthread_t t = tw_test_start(installer, &rc);
    for (int i = 0; i < n; i++) {
        tw_deferred *d;
        assert_rc(tw_deferred_fail(&d, tw_failure_new(APP_CODE, NULL)), 0);
        tw_deferred_unref(d);
    }
    __atomic_store_n(&rc.stop, 1, __ATOMIC_RELEASE);
    tw_test_join(t);
    tw_set_unhandled_hook(NULL, NULL);
    assert_int_equal(__atomic_load_n(&mixed, __ATOMIC_RELAXED), 0);
    assert_int_equal(calls_a + calls_b, n);
    assert_int_equal(tw_test_diag_count(), 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_hook_gets_the_failure),
        T(test_hook_without_site_and_chained),
        T(test_diag_line_names_application_codes),
        T(test_format_application_codes),
        T(test_default_diag_hook_line),
        T(test_hook_installed_while_reporting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
