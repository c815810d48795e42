/*
 * Deadlock detection, the order graph (docs/deadlocks.md): lock classes by
 * init site and by name, the edges an acquire adds while holding others,
 * and the one report of the first edge that closes a cycle, naming every
 * edge with its file:line, made before any thread waits.
 *
 * This file defines TW_DEBUG itself, so its calls take the tracking paths
 * whatever the library's build. The graph lives as long as the process, so
 * every test uses classes of its own: Locks initialised on lines of their
 * own (a class is its init call's site), or static ones (a Lock without an
 * init call is its own class). Reports go to a hook of this file, which keeps
 * whole messages.
 */
#define TW_DEBUG 1
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "debug/debug.h"

/* ---- reports ---------------------------------------------------------------- */

#define KEEP 16
static pthread_mutex_t kept_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    int code;
    char function[64];
    char message[2048];
} kept[KEEP];
static int n_kept;

static void keep(void *ctx, const tw_diag *d)
{
    (void)ctx;
    pthread_mutex_lock(&kept_mu);
    if (n_kept < KEEP) {
        kept[n_kept].code = d->code;
        snprintf(kept[n_kept].function, sizeof kept[n_kept].function, "%s",
                 d->function ? d->function : "");
        snprintf(kept[n_kept].message, sizeof kept[n_kept].message, "%s",
                 d->message ? d->message : "");
    }
    n_kept++;
    pthread_mutex_unlock(&kept_mu);
    if (getenv("TW_TEST_ECHO")) /* to read the reports: TW_TEST_ECHO=1 */
        fprintf(stderr, "report (%s) in %s: %s\n", tw_err_name(d->code), d->function,
                d->message);
}

static int reports(void)
{
    pthread_mutex_lock(&kept_mu);
    int n = n_kept;
    pthread_mutex_unlock(&kept_mu);
    return n;
}

static const char *report(int i)
{
    assert_true(i < reports() && i < KEEP);
    return kept[i].message;
}

/* Fails unless `needle` is in report i. */
static void expect_in(int i, const char *needle)
{
    const char *m = report(i);
    if (!strstr(m, needle))
        fail_msg("report %d lacks \"%s\": %s", i, needle, m);
}

/* "test_deadlock.c:<line>" */
static const char *at(int line)
{
    static char buf[8][64];
    static int next;
    char *b = buf[next++ % 8];
    snprintf(b, 64, "test_deadlock.c:%d", line);
    return b;
}

static int setup(void **state)
{
    (void)state;
    pthread_mutex_lock(&kept_mu);
    n_kept = 0;
    pthread_mutex_unlock(&kept_mu);
    tw_set_diag_hook(keep, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tw_set_diag_hook(NULL, NULL);
    return 0;
}

/* ---- two code paths, one after the other --------------------------------------- */

static tw_lock lock_a, lock_b;
static int line_ab_a, line_ab_b, line_ba_b, line_ba_a;

static void *path_ab(void *arg)
{
    (void)arg;
    line_ab_a = __LINE__ + 1;
    tw_lock_acquire(&lock_a);
    line_ab_b = __LINE__ + 1;
    tw_lock_acquire(&lock_b);
    tw_lock_release(&lock_b);
    tw_lock_release(&lock_a);
    return NULL;
}

static void *path_ba(void *arg)
{
    (void)arg;
    line_ba_b = __LINE__ + 1;
    tw_lock_acquire(&lock_b);
    line_ba_a = __LINE__ + 1;
    tw_lock_acquire(&lock_a);
    tw_lock_release(&lock_a);
    tw_lock_release(&lock_b);
    return NULL;
}

/* A then B in one thread, B then A in another, run one after the other:
 * nothing waits, and one report names both paths' four sites. Running the
 * second path again reports nothing more. */
static void test_ab_then_ba_reported_once(void **state)
{
    (void)state;
    tw_test_join(tw_test_start(path_ab, NULL));
    assert_int_equal(reports(), 0);
    tw_test_join(tw_test_start(path_ba, NULL));
    assert_int_equal(reports(), 1);
    assert_int_equal(kept[0].code, TW_EDEADLK);
    assert_string_equal(kept[0].function, "tw_lock_acquire");
    expect_in(0, "lock order inversion");
    expect_in(0, at(line_ab_a));
    expect_in(0, at(line_ab_b));
    expect_in(0, at(line_ba_b));
    expect_in(0, at(line_ba_a));
    tw_test_join(tw_test_start(path_ba, NULL));
    tw_test_join(tw_test_start(path_ab, NULL));
    assert_int_equal(reports(), 1);
}

/* ---- three locks --------------------------------------------------------------- */

static tw_lock three[3];
static int three_lines[3][2];

static void *take_pair(void *arg)
{
    int i = (int)(intptr_t)arg, j = (i + 1) % 3;
    three_lines[i][0] = __LINE__ + 1;
    tw_lock_acquire(&three[i]);
    three_lines[i][1] = __LINE__ + 1;
    tw_lock_acquire(&three[j]);
    tw_lock_release(&three[j]);
    tw_lock_release(&three[i]);
    return NULL;
}

/* 0 -> 1, 1 -> 2 (no cycle yet), 2 -> 0 closes one of three edges. */
static void test_three_lock_cycle(void **state)
{
    (void)state;
    tw_test_join(tw_test_start(take_pair, (void *)0));
    tw_test_join(tw_test_start(take_pair, (void *)1));
    assert_int_equal(reports(), 0);
    tw_test_join(tw_test_start(take_pair, (void *)2));
    assert_int_equal(reports(), 1);
    expect_in(0, "lock order cycle of 3");
    for (int i = 0; i < 3; i++) {
        expect_in(0, at(three_lines[i][0]));
        expect_in(0, at(three_lines[i][1]));
    }
}

/* ---- a class of 1000 ----------------------------------------------------------- */

enum { CONNS = 1000 };
static tw_lock conns[CONNS];
static tw_lock registry;

/* Every connection Lock is initialised here: one class. */
static void conns_init(void)
{
    for (int i = 0; i < CONNS; i++)
        tw_lock_init(&conns[i]);
}

/* The registry before connection 0; then connection 999 before the
 * registry: the same two classes, so the inversion is seen, once, although
 * no one instance was ever taken both ways. */
static void test_one_class_of_a_thousand(void **state)
{
    (void)state;
    uint32_t before = tw__dbg_class_count();
    conns_init();
    assert_int_equal(tw__dbg_class_count(), before + 1);
    tw_lock_acquire(&registry);
    tw_lock_acquire(&conns[0]);
    tw_lock_release(&conns[0]);
    tw_lock_release(&registry);
    for (int i = 1; i < CONNS; i++) {
        tw_lock_acquire(&conns[i]);
        tw_lock_release(&conns[i]);
    }
    assert_int_equal(reports(), 0);
    tw_lock_acquire(&conns[CONNS - 1]);
    tw_lock_acquire(&registry);
    tw_lock_release(&registry);
    tw_lock_release(&conns[CONNS - 1]);
    assert_int_equal(reports(), 1);
    expect_in(0, "lock order inversion");
    expect_in(0, "Lock of test_deadlock.c:"); /* the class, by its init site */
    /* 999 more acquires in the bad order report nothing more. */
    for (int i = 1; i < CONNS - 1; i++) {
        tw_lock_acquire(&conns[i]);
        tw_lock_acquire(&registry);
        tw_lock_release(&registry);
        tw_lock_release(&conns[i]);
    }
    assert_int_equal(reports(), 1);
    assert_int_equal(tw__dbg_class_count(), before + 2); /* and the registry's */
}

/* ---- nesting within a class ---------------------------------------------------- */

/* Two accounts of one class, one taken holding the other: reported (a
 * transfer each way at once deadlocks); with a subclass for the second, as
 * a transfer ordered by account number does, nothing is. */
static void test_nesting_within_a_class(void **state)
{
    (void)state;
    tw_lock acct[4];
    for (int i = 0; i < 4; i++)
        tw_lock_init(&acct[i]);
    tw_lock_acquire(&acct[0]);
    tw_lock_acquire_nested(&acct[1], 1);
    tw_lock_release(&acct[1]);
    tw_lock_release(&acct[0]);
    tw_lock_acquire(&acct[1]);
    tw_lock_acquire_nested(&acct[0], 1);
    tw_lock_release(&acct[0]);
    tw_lock_release(&acct[1]);
    assert_int_equal(reports(), 0);
    int line = __LINE__ + 1;
    tw_lock_acquire(&acct[2]);
    tw_lock_acquire(&acct[3]);
    tw_lock_release(&acct[3]);
    tw_lock_release(&acct[2]);
    assert_int_equal(reports(), 1);
    expect_in(0, "two objects of one class");
    expect_in(0, at(line));
    expect_in(0, at(line + 1));
}

/* ---- what adds no edge ---------------------------------------------------------- */

/* A before B; then B with a try of A, which cannot wait: no report. */
static void test_reverse_try_acquire_not_reported(void **state)
{
    (void)state;
    tw_lock a, b;
    tw_lock_init(&a);
    tw_lock_init(&b);
    tw_lock_acquire(&a);
    tw_lock_acquire(&b);
    tw_lock_release(&b);
    tw_lock_release(&a);
    tw_lock_acquire(&b);
    assert_int_equal(tw_lock_try_acquire(&a), 0);
    tw_lock_release(&a);
    assert_int_equal(tw_lock_acquire_timeout(&a, 0), 0); /* no wait either */
    tw_lock_release(&a);
    tw_lock_release(&b);
    assert_int_equal(reports(), 0);
}

/* R before L; then, holding R and L, R again: a re-entry, no L -> R. */
static void test_rlock_reentry_not_reported(void **state)
{
    (void)state;
    tw_rlock r;
    tw_lock l;
    tw_rlock_init(&r);
    tw_lock_init(&l);
    tw_rlock_acquire(&r);
    tw_lock_acquire(&l);
    assert_int_equal(tw_rlock_acquire(&r), 0);
    assert_int_equal(tw_rlock_count(&r), 2);
    assert_int_equal(tw_rlock_acquire_timeout(&r, 1.0), 0);
    assert_int_equal(tw_rlock_try_acquire(&r), 0);
    tw_rlock_release(&r);
    tw_rlock_release(&r);
    tw_rlock_release(&r);
    tw_lock_release(&l);
    tw_rlock_release(&r);
    assert_int_equal(reports(), 0);
    /* But a fresh acquire of R holding L is the other order. */
    tw_lock_acquire(&l);
    tw_rlock_acquire(&r);
    tw_rlock_release(&r);
    tw_lock_release(&l);
    assert_int_equal(reports(), 1);
    expect_in(0, "RLock of test_deadlock.c:");
}

/* A timed acquire can wait: its edge counts. */
static void test_timed_acquire_adds_its_edge(void **state)
{
    (void)state;
    tw_lock a, b;
    tw_lock_init(&a);
    tw_lock_init(&b);
    tw_lock_acquire(&a);
    int line = __LINE__ + 1;
    assert_int_equal(tw_lock_acquire_timeout(&b, 5.0), 0);
    tw_lock_release(&b);
    tw_lock_release(&a);
    tw_lock_acquire(&b);
    tw_lock_acquire(&a);
    tw_lock_release(&a);
    tw_lock_release(&b);
    assert_int_equal(reports(), 1);
    expect_in(0, at(line));
}

/* ---- names, declared orders, quiet classes ------------------------------------- */

static tw_lock_class ledger_class = TW_LOCK_CLASS_INIT("ledger");
static tw_lock_class account_class = TW_LOCK_CLASS_INIT("account");

/* The declared order (ledger before account) is checked at the first
 * acquire that breaks it, before the other order was ever seen. */
static void test_declared_order(void **state)
{
    (void)state;
    tw_lock ledger, acct;
    tw_lock_init(&ledger);
    tw_lock_init(&acct);
    assert_int_equal(tw_lock_class_add(&ledger_class, &ledger), 0);
    assert_int_equal(tw_lock_class_add(&account_class, &acct), 0);
    assert_int_equal(tw_lock_class_order(&ledger_class, &account_class), 0);
    tw_lock_acquire(&ledger);
    tw_lock_acquire(&acct);
    tw_lock_release(&acct);
    tw_lock_release(&ledger);
    assert_int_equal(reports(), 0);
    tw_lock_acquire(&acct);
    tw_lock_acquire(&ledger);
    tw_lock_release(&ledger);
    tw_lock_release(&acct);
    assert_int_equal(reports(), 1);
    expect_in(0, "\"ledger\"");
    expect_in(0, "\"account\"");
    expect_in(0, "declared order");
    assert_int_equal(tw_lock_class_order(NULL, &ledger_class), TW_EINVAL);
    assert_int_equal(tw_lock_class_order(&ledger_class, &ledger_class), TW_EINVAL);
}

/* A declaration that contradicts an order already seen is reported. */
static void test_declaration_contradicting_the_past(void **state)
{
    (void)state;
    static tw_lock_class first = TW_LOCK_CLASS_INIT("first");
    static tw_lock_class second = TW_LOCK_CLASS_INIT("second");
    tw_lock a, b;
    tw_lock_init(&a);
    tw_lock_init(&b);
    tw_lock_class_add(&first, &a);
    tw_lock_class_add(&second, &b);
    tw_lock_acquire(&b);
    tw_lock_acquire(&a);
    tw_lock_release(&a);
    tw_lock_release(&b);
    assert_int_equal(reports(), 0);
    assert_int_equal(tw_lock_class_order(&first, &second), 0);
    assert_int_equal(reports(), 1);
    assert_string_equal(kept[0].function, "tw_lock_class_order");
}

/* A quiet class is named in no report. */
static void test_quiet_class(void **state)
{
    (void)state;
    static tw_lock_class noisy = TW_LOCK_CLASS_INIT("known inversion");
    tw_lock a, b;
    tw_lock_init(&a);
    tw_lock_init(&b);
    tw_lock_class_add(&noisy, &a);
    assert_int_equal(tw_lock_class_quiet(&noisy), 0);
    tw_lock_acquire(&a);
    tw_lock_acquire(&b);
    tw_lock_release(&b);
    tw_lock_release(&a);
    tw_lock_acquire(&b);
    tw_lock_acquire(&a);
    tw_lock_release(&a);
    tw_lock_release(&b);
    assert_int_equal(reports(), 0);
    assert_int_equal(tw_lock_class_quiet(NULL), TW_EINVAL);
}

/* ---- Semaphores, Conditions, guards ---------------------------------------------- */

/* A Semaphore used as a lock is in the graph. */
static void test_semaphore_as_a_lock(void **state)
{
    (void)state;
    tw_sem pool;
    tw_lock l;
    tw_sem_init(&pool, 2);
    tw_lock_init(&l);
    tw_sem_acquire(&pool);
    tw_lock_acquire(&l);
    tw_lock_release(&l);
    tw_sem_release(&pool, 1);
    tw_lock_acquire(&l);
    tw_sem_acquire(&pool);
    tw_sem_release(&pool, 1);
    tw_lock_release(&l);
    assert_int_equal(reports(), 1);
    expect_in(0, "Semaphore of test_deadlock.c:");
}

/* A Semaphore released by a thread that did not take it is a signal: no
 * order is kept for it. */
static void *give(void *arg)
{
    tw_sem_release(arg, 1);
    return NULL;
}

static void test_semaphore_as_a_signal(void **state)
{
    (void)state;
    tw_sem ready;
    tw_lock l;
    tw_sem_init(&ready, 0);
    tw_lock_init(&l);
    tw_test_join(tw_test_start(give, &ready));
    tw_sem_acquire(&ready);
    tw_lock_acquire(&l); /* "holding" ready, which is not held by anyone */
    tw_lock_release(&l);
    tw_lock_acquire(&l);
    tw_test_join(tw_test_start(give, &ready));
    tw_sem_acquire(&ready);
    tw_lock_release(&l);
    assert_int_equal(reports(), 0);
}

/* A zeroed Condition's own RLock is of the class of its init call; TW_WITH
 * takes it tracked, at the TW_WITH's line. */
static void test_condition_and_guards(void **state)
{
    (void)state;
    tw_cond c;
    tw_lock l;
    tw_cond_init(&c);
    tw_lock_init(&l);
    TW_WITH(&c)
    {
        TW_WITH(&l)
        {
        }
    }
    int line = __LINE__ + 1;
    TW_WITH(&l)
    {
        TW_WITH(&c)
        {
        }
    }
    assert_int_equal(reports(), 1);
    expect_in(0, at(line));
    expect_in(0, at(line + 2));
    expect_in(0, "RLock of test_deadlock.c:");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ab_then_ba_reported_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_three_lock_cycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_class_of_a_thousand, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nesting_within_a_class, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reverse_try_acquire_not_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rlock_reentry_not_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timed_acquire_adds_its_edge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_declared_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_declaration_contradicting_the_past, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_quiet_class, setup, teardown),
        cmocka_unit_test_setup_teardown(test_semaphore_as_a_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_semaphore_as_a_signal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_condition_and_guards, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
