/*
 * Deadlock detection with a full table (docs/deadlocks.md, "Tables"): the
 * class table fills up, which is reported once (TW_DIAG_WARNING, TW_EFULL);
 * objects past it have no class and are left out of the order checks — never
 * reported falsely — while every call keeps working. An executable of its
 * own: the table stays full for the rest of the process.
 */
#define TW_DEBUG 1
#include "harness.h"

#include <stdio.h>
#include <string.h>

#include "debug/debug.h"

static int reports, full_reports, deadlock_reports;

static void count(void *ctx, const tw_diag *d)
{
    (void)ctx;
    __atomic_fetch_add(&reports, 1, __ATOMIC_RELAXED);
    if (d->code == TW_EFULL && strstr(d->message, "lock classes"))
        __atomic_fetch_add(&full_reports, 1, __ATOMIC_RELAXED);
    if (d->code == TW_EDEADLK)
        __atomic_fetch_add(&deadlock_reports, 1, __ATOMIC_RELAXED);
}

enum { N = 5000 }; /* more than the class table holds */
static tw_lock_class names[N];
static tw_lock locks[N];

static void test_class_table_full(void **state)
{
    (void)state;
    int refused = 0;
    tw_set_diag_hook(count, NULL);
    for (int i = 0; i < N; i++) {
        names[i] = (tw_lock_class)TW_LOCK_CLASS_INIT("one of many");
        int rc = tw_lock_class_add(&names[i], &locks[i]);
        assert_true(rc == 0 || rc == TW_EFULL);
        if (rc == TW_EFULL)
            refused++;
    }
    assert_true(refused > 0);
    assert_int_equal(full_reports, 1); /* once, however many were refused */
    /* Locks without a class (the last ones, and fresh ones) still work, in
     * any order, and are never reported. */
    static tw_lock a, b;
    for (int round = 0; round < 2; round++) {
        tw_lock_acquire(&locks[N - 1]);
        tw_lock_acquire(&a);
        tw_lock_acquire(&b);
        tw_lock_release(&b);
        tw_lock_release(&a);
        tw_lock_release(&locks[N - 1]);
        tw_lock_acquire(&b);
        tw_lock_acquire(&a);
        tw_lock_acquire(&locks[N - 1]);
        tw_lock_release(&locks[N - 1]);
        tw_lock_release(&a);
        tw_lock_release(&b);
    }
    assert_int_equal(deadlock_reports, 0);
    assert_int_equal(reports, full_reports);
    tw_set_diag_hook(NULL, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_class_table_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
