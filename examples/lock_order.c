/*
 * lock_order — two code paths that take two Locks in opposite orders.
 *
 * A transfer takes the accounts, then the audit log; an audit takes the
 * audit log, then the accounts. Run at the same time, each can end up
 * holding the lock the other waits for, and both wait forever: the classic
 * deadlock, which only hangs on the unlucky run. Here they run one after
 * the other, so nothing ever waits, and yet the inversion is reported on
 * this first run that takes both orders: compiled with TW_DEBUG, as this
 * program is, every acquire made holding another Lock adds an order to
 * twine's graph, and the one that closes a cycle is reported through the
 * diagnostic hook with the file:line of every acquire involved
 * (docs/deadlocks.md).
 *
 * The Locks are put in named classes, so that the report names them; each
 * TW_WITH is a site of the report.
 */
#define TW_DEBUG 1
#include <twine.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static tw_lock accounts = TW_LOCK_INIT;
static tw_lock audit_log = TW_LOCK_INIT;
static tw_lock_class accounts_class = TW_LOCK_CLASS_INIT("accounts");
static tw_lock_class audit_class = TW_LOCK_CLASS_INIT("audit log");
static long balance, entries;

/* The diagnostic hook: keeps the reports. */
static int n_reports;
static char report[2048];
static int report_code;

static void keep_report(void *ctx, const tw_diag *d)
{
    (void)ctx;
    if (n_reports++ == 0) {
        report_code = d->code;
        snprintf(report, sizeof report, "%s", d->message);
    }
}

/* Path one: a transfer updates the balance, then writes the log. */
static void *transfer(void *arg)
{
    (void)arg;
    TW_WITH(&accounts)
    {
        balance += 10;
        TW_WITH(&audit_log)
        {
            entries++;
        }
    }
    return NULL;
}

/* Path two: an audit reads the log, then checks the balance: the other
 * order. */
static void *audit(void *arg)
{
    long *seen = arg;
    TW_WITH(&audit_log)
    {
        TW_WITH(&accounts)
        {
            *seen = balance * 1000 + entries;
        }
    }
    return NULL;
}

static int run_alone(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    if (pthread_create(&t, NULL, fn, arg) != 0)
        return -1;
    return pthread_join(t, NULL);
}

int main(void)
{
    long seen = 0;
    tw_lock_class_add(&accounts_class, &accounts);
    tw_lock_class_add(&audit_class, &audit_log);
    tw_set_diag_hook(keep_report, NULL);

    printf("a transfer (accounts, then the audit log), then an audit (the audit log, then "
           "the accounts),\none after the other: nothing waits\n");
    if (run_alone(transfer, NULL) != 0 || run_alone(audit, &seen) != 0) {
        fprintf(stderr, "lock_order: could not start a thread\n");
        return 1;
    }
    tw_set_diag_hook(NULL, NULL);
    printf("  balance %ld, log entries %ld, the audit saw %ld\n", balance, entries, seen);
    printf("the report, made by the audit's second acquire, before any thread waited:\n"
           "  %s: %s\n",
           tw_err_name(report_code), report);

    /* One report, naming both classes and both paths' lines. */
    if (n_reports != 1 || report_code != TW_EDEADLK || !strstr(report, "\"accounts\"") ||
        !strstr(report, "\"audit log\"") || !strstr(report, "lock_order.c:") ||
        seen != 10001) {
        fprintf(stderr, "lock_order: expected one report naming both paths (got %d)\n",
                n_reports);
        return 1;
    }
    printf("ok\n");
    return 0;
}
