#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t tw_test_scaled(uint64_t n, uint64_t floor)
{
    const char *s = getenv("TW_TEST_SCALE");
    double scale = s ? strtod(s, NULL) : 1.0;
    uint64_t v;
    if (!(scale > 0.0) || scale > 1.0)
        scale = 1.0;
    v = (uint64_t)((double)n * scale);
    return v < floor ? floor : v;
}

pthread_t tw_test_start(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    int rc = pthread_create(&t, NULL, fn, arg);
    assert_int_equal(rc, 0);
    return t;
}

void *tw_test_join(pthread_t t)
{
    void *ret = NULL;
    assert_int_equal(pthread_join(t, &ret), 0);
    return ret;
}

void tw_test_run_threads(int n, void *(*fn)(void *), void *base, size_t stride)
{
    pthread_t *ts = calloc((size_t)n, sizeof *ts);
    assert_non_null(ts);
    for (int i = 0; i < n; i++)
        ts[i] = tw_test_start(fn, (char *)base + (size_t)i * stride);
    for (int i = 0; i < n; i++)
        tw_test_join(ts[i]);
    free(ts);
}

double tw_test_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void tw_test_check_elapsed_at_least(double t0, double t1, double asked)
{
    double elapsed = t1 - t0;
    if (elapsed < asked - TW_TEST_ROUNDING_SLACK)
        fail_msg("timeout %.3f s returned early, after %.9f s", asked, elapsed);
    if (elapsed > asked + 5.0)
        fail_msg("timeout %.3f s returned only after %.3f s", asked, elapsed);
}

void tw_test_tally_init(tw_test_tally *t)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &a);
    pthread_condattr_destroy(&a);
    pthread_mutex_init(&t->mu, NULL);
    t->count = 0;
}

void tw_test_tally_destroy(tw_test_tally *t)
{
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
}

void tw_test_tally_add(tw_test_tally *t)
{
    pthread_mutex_lock(&t->mu);
    t->count++;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

int tw_test_tally_get(tw_test_tally *t)
{
    int n;
    pthread_mutex_lock(&t->mu);
    n = t->count;
    pthread_mutex_unlock(&t->mu);
    return n;
}

bool tw_test_tally_wait(tw_test_tally *t, int n, double seconds)
{
    struct timespec until;
    bool ok;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)seconds;
    until.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&t->mu);
    while (t->count < n) {
        if (pthread_cond_timedwait(&t->cv, &t->mu, &until) != 0 && t->count < n)
            break;
    }
    ok = t->count >= n;
    pthread_mutex_unlock(&t->mu);
    return ok;
}

void tw_test_must_reach(tw_test_tally *t, int n, double seconds, const char *what)
{
    if (!tw_test_tally_wait(t, n, seconds)) {
        fprintf(stderr, "FATAL: %s: %d of %d threads proceeded within %.0f s\n", what,
                tw_test_tally_get(t), n, seconds);
        abort();
    }
}

struct bounded_arg {
    void *(*fn)(void *);
    void *arg;
    tw_test_tally *done;
};

static void *bounded_main(void *p)
{
    struct bounded_arg *b = p;
    b->fn(b->arg);
    tw_test_tally_add(b->done);
    return NULL;
}

void tw_test_run_threads_bounded(int n, void *(*fn)(void *), void *base, size_t stride,
                                 const char *what)
{
    struct bounded_arg args[16];
    pthread_t t[16];
    tw_test_tally done;
    assert_true(n <= 16);
    tw_test_tally_init(&done);
    for (int i = 0; i < n; i++) {
        args[i] = (struct bounded_arg){fn, (char *)base + (size_t)i * stride, &done};
        t[i] = tw_test_start(bounded_main, &args[i]);
    }
    tw_test_must_reach(&done, n, 60.0, what);
    for (int i = 0; i < n; i++)
        tw_test_join(t[i]);
    tw_test_tally_destroy(&done);
}

int tw_test_count_task(void *arg)
{
    __atomic_fetch_add((int *)arg, 1, __ATOMIC_SEQ_CST);
    return 0;
}

int tw_test_set_event_task(void *arg)
{
    tw_event_set(arg);
    return 0;
}

void tw_test_wait_event(tw_event *e, double limit)
{
    assert_int_equal(tw_event_wait_timeout(e, limit), 0);
}

void tw_test_log_add(tw_lock *lock, size_t *n, int *v, size_t cap, int value)
{
    tw_lock_acquire(lock);
    if (*n < cap)
        v[*n] = value;
    (*n)++;
    tw_lock_release(lock);
}

size_t tw_test_log_len(tw_lock *lock, const size_t *n)
{
    size_t got;
    tw_lock_acquire(lock);
    got = *n;
    tw_lock_release(lock);
    return got;
}

void tw_test_expect_log(const int *got, size_t got_n, const int *want, size_t n)
{
    assert_int_equal(got_n, n);
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i])
            fail_msg("log[%zu] = %d, expected %d", i, got[i], want[i]);
}

void tw_test_settle(tw_worker *w, bool memory, bool thread, double limit)
{
    if (memory) {
        while (tw_memory_worker_perform(w, NULL))
            ;
    } else if (thread) {
        tw_event done = TW_EVENT_INIT;
        assert_int_equal(tw_worker_do(w, tw_test_set_event_task, &done), 0);
        tw_test_wait_event(&done, limit);
    }
}

/* ---- twine diagnostics and leaks ------------------------------------------------ */

#define DIAG_KINDS 4 /* by kind: TW_DIAG_* are 1..3; 0 holds any other value */

static pthread_mutex_t diag_mu = PTHREAD_MUTEX_INITIALIZER;
static tw_test_diag diag_kept[TW_TEST_DIAG_CAP];
static tw_test_diag diag_latest[DIAG_KINDS];
static int diag_total;             /* every report, kept or not */
static int diag_counts[DIAG_KINDS];
static enum tw_test_diag_echo diag_echo;
static size_t live_at_setup;

static int diag_slot(enum tw_diag_kind kind)
{
    return (int)kind > 0 && (int)kind < DIAG_KINDS ? (int)kind : 0;
}

static void diag_record(void *ctx, const tw_diag *d)
{
    tw_test_diag rec;
    enum tw_test_diag_echo echo;
    int k = diag_slot(d->kind);
    (void)ctx;
    rec.kind = d->kind;
    rec.code = d->code;
    snprintf(rec.function, sizeof rec.function, "%s", d->function ? d->function : "");
    snprintf(rec.message, sizeof rec.message, "%s", d->message ? d->message : "");
    pthread_mutex_lock(&diag_mu);
    if (diag_total < TW_TEST_DIAG_CAP)
        diag_kept[diag_total] = rec;
    diag_total++;
    diag_counts[k]++;
    diag_latest[k] = rec;
    echo = diag_echo;
    pthread_mutex_unlock(&diag_mu);
    if (echo == TW_TEST_DIAG_ECHO_ALL ||
        (echo == TW_TEST_DIAG_ECHO_OTHER && d->kind != TW_DIAG_UNHANDLED))
        fprintf(stderr, "%sdiagnostic (kind %d, %s) in %s: %s\n",
                echo == TW_TEST_DIAG_ECHO_OTHER ? "unexpected " : "", (int)d->kind,
                tw_err_name(d->code), d->function ? d->function : "?",
                d->message ? d->message : "");
}

void tw_test_diag_reset(void)
{
    pthread_mutex_lock(&diag_mu);
    diag_total = 0;
    memset(diag_counts, 0, sizeof diag_counts);
    pthread_mutex_unlock(&diag_mu);
}

void tw_test_diag_reset_kind(enum tw_diag_kind kind)
{
    pthread_mutex_lock(&diag_mu);
    diag_counts[diag_slot(kind)] = 0;
    pthread_mutex_unlock(&diag_mu);
}

void tw_test_twine_setup(enum tw_test_diag_echo echo)
{
    tw_test_diag_reset();
    pthread_mutex_lock(&diag_mu);
    diag_echo = echo;
    pthread_mutex_unlock(&diag_mu);
    tw_set_diag_hook(diag_record, NULL);
    live_at_setup = tw_allocator_live();
}

int tw_test_twine_teardown(unsigned tolerated)
{
    size_t live = tw_allocator_live();
    int unexpected = 0, bad = 0;
    tw_set_diag_hook(NULL, NULL);
    if (live != live_at_setup) {
        fprintf(stderr, "twine blocks still live after the test: %zu (was %zu)\n", live,
                live_at_setup);
        bad = 1;
    }
    pthread_mutex_lock(&diag_mu);
    for (int k = 0; k < DIAG_KINDS; k++)
        if (!(tolerated & TW_TEST_DIAG_BIT(k)))
            unexpected += diag_counts[k];
    pthread_mutex_unlock(&diag_mu);
    if (unexpected != 0) {
        fprintf(stderr, "%d unexpected diagnostic report(s)\n", unexpected);
        bad = 1;
    }
    return bad ? -1 : 0;
}

int tw_test_diag_count(void)
{
    pthread_mutex_lock(&diag_mu);
    int n = diag_total;
    pthread_mutex_unlock(&diag_mu);
    return n;
}

int tw_test_diag_count_kind(enum tw_diag_kind kind)
{
    pthread_mutex_lock(&diag_mu);
    int n = diag_counts[diag_slot(kind)];
    pthread_mutex_unlock(&diag_mu);
    return n;
}

const tw_test_diag *tw_test_diag_at(int i)
{
    const tw_test_diag *found = NULL;
    pthread_mutex_lock(&diag_mu);
    if (i >= 0 && i < diag_total && i < TW_TEST_DIAG_CAP)
        found = &diag_kept[i];
    pthread_mutex_unlock(&diag_mu);
    return found;
}

const tw_test_diag *tw_test_diag_find(enum tw_diag_kind kind)
{
    const tw_test_diag *found = NULL;
    pthread_mutex_lock(&diag_mu);
    for (int i = 0; i < diag_total && i < TW_TEST_DIAG_CAP; i++)
        if (diag_kept[i].kind == kind) {
            found = &diag_kept[i];
            break;
        }
    pthread_mutex_unlock(&diag_mu);
    return found;
}

const tw_test_diag *tw_test_diag_last(enum tw_diag_kind kind)
{
    int k = diag_slot(kind);
    const tw_test_diag *found = NULL;
    pthread_mutex_lock(&diag_mu);
    if (diag_counts[k] > 0)
        found = &diag_latest[k];
    pthread_mutex_unlock(&diag_mu);
    return found;
}

/* ---- TW_DEBUG ----------------------------------------------------------------------- */

int tw_test_build_has_tw_debug(void)
{
    char path[4096];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 32);
    if (n <= 0)
        return -1;
    path[n] = '\0';
    /* the executable is BUILD/tests/NAME: the cache is BUILD/CMakeCache.txt */
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(path, '/');
        if (!slash)
            return -1;
        *slash = '\0';
    }
    strcat(path, "/CMakeCache.txt");
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[512];
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "TW_DEBUG:BOOL=", 14) == 0) {
            const char *v = line + 14;
            found = (strncmp(v, "ON", 2) == 0 || strncmp(v, "TRUE", 4) == 0 ||
                     strncmp(v, "1", 1) == 0 || strncmp(v, "YES", 3) == 0 ||
                     strncmp(v, "Y", 1) == 0)
                        ? 1
                        : 0;
            break;
        }
    }
    fclose(f);
    return found;
}

void tw_test_require_debug_report(int reports, const char *what)
{
    if (reports > 0)
        return;
    if (tw_test_build_has_tw_debug() == 1)
        fail_msg("TW_DEBUG build: %s from another thread was not reported", what);
    print_message("no report: the library was built without TW_DEBUG, which this check "
                  "needs; skipped\n");
    skip();
}

/* ---- trace --------------------------------------------------------------------------- */

char tw_test_trace[1 << 14];

void tw_test_tr(const char *fmt, ...)
{
    size_t len = strlen(tw_test_trace);
    va_list ap;
    if (len > 0 && len + 1 < sizeof tw_test_trace) {
        tw_test_trace[len++] = ' ';
        tw_test_trace[len] = '\0';
    }
    va_start(ap, fmt);
    vsnprintf(tw_test_trace + len, sizeof tw_test_trace - len, fmt, ap);
    va_end(ap);
}

void tw_test_trace_clear(void)
{
    tw_test_trace[0] = '\0';
}

/* ---- Deferred helpers ------------------------------------------------------------------ */

int *tw_test_int_new(int v)
{
    int *p = malloc(sizeof *p);
    assert_non_null(p);
    *p = v;
    return p;
}

tw_result tw_test_int_value(int v)
{
    return tw_result_value(tw_test_int_new(v), free);
}

tw_deferred *tw_test_new_deferred_at(const char *file, int line)
{
    tw_deferred *d = NULL;
    assert_rc(tw_deferred_create_at(&d, NULL, NULL, file, line), 0);
    assert_non_null(d);
    return d;
}

static tw_result capture_cb(tw_result r, void *arg)
{
    tw_test_capture *c = arg;
    if (c->calls++ > 0)
        tw_result_drop(c->r);
    c->r = r;
    return tw_result_none();
}

void tw_test_capture_add(tw_deferred *d, tw_test_capture *c)
{
    c->calls = 0;
    c->r = tw_result_none();
    assert_rc(tw_deferred_add_both(d, capture_cb, c), 0);
}

void tw_test_capture_release(tw_test_capture *c)
{
    tw_result_drop(c->r);
    c->r = tw_result_none();
}

/* ---- reactor helpers -------------------------------------------------------------------- */

static bool watchdog_fired;

static void watchdog_call(void *arg)
{
    watchdog_fired = true;
    tw_reactor_stop(arg);
}

void tw_test_arm_watchdog(tw_reactor *r, double seconds)
{
    watchdog_fired = false;
    assert_rc(tw_reactor_call_later(r, seconds, watchdog_call, r, NULL), 0);
}

bool tw_test_watchdog_fired(void)
{
    return watchdog_fired;
}
