/* The unhandled-failure report: the hook that gets the failure itself, and
 * the diagnostic line that stands in for it when no hook is installed.
 *
 * The hook is a (function, context) pair that any thread may install while
 * others report (every loop thread frees Deferreds), so a reader must never
 * pair a new function with an old context. The pair sits behind a sequence
 * counter: a writer makes `seq` odd, stores both fields and makes it even
 * again; a reader retries while it sees `seq` odd or changed under it.
 * Writers take turns on `writing`. Nothing allocates, so a report made when
 * memory is short still arrives. */
#include <stdio.h>

#include "deferred/deferred.h"

static uint32_t seq;     /* odd while a writer is storing */
static uint32_t writing; /* writers' mutual exclusion */
static tw_unhandled_fn hook_fn; /* NULL: the diagnostic hook gets a line */
static void *hook_ctx;

void tw_set_unhandled_hook(tw_unhandled_fn fn, void *ctx)
{
    while (__atomic_exchange_n(&writing, 1, __ATOMIC_ACQUIRE))
        ; /* installs are rare and short */
    __atomic_store_n(&seq, __atomic_load_n(&seq, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    /* release: each field's store is ordered after the odd seq, so a reader
     * that sees a new field (acquire) sees the odd seq too and retries. */
    __atomic_store_n(&hook_fn, fn, __ATOMIC_RELEASE);
    __atomic_store_n(&hook_ctx, ctx, __ATOMIC_RELEASE);
    /* release: both fields before the even seq (pairs with the reader's
     * acquire load of seq). */
    __atomic_store_n(&seq, __atomic_load_n(&seq, __ATOMIC_RELAXED) + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&writing, 0, __ATOMIC_RELEASE);
}

void tw__deferred_report_unhandled(tw_failure *f, const char *file, int line)
{
    tw_unhandled_fn fn;
    void *ctx;
    uint32_t s0, s1;
    do {
        s0 = __atomic_load_n(&seq, __ATOMIC_ACQUIRE);
        /* acquire: the second load of seq stays after these. */
        fn = __atomic_load_n(&hook_fn, __ATOMIC_ACQUIRE);
        ctx = __atomic_load_n(&hook_ctx, __ATOMIC_ACQUIRE);
        s1 = __atomic_load_n(&seq, __ATOMIC_RELAXED);
    } while ((s0 & 1) || s0 != s1);
    if (fn) {
        tw_unhandled u = {f, file, file ? line : 0};
        fn(ctx, &u);
        return;
    }
    char text[384], msg[512];
    tw_failure_format(f, text, sizeof text);
    if (file)
        snprintf(msg, sizeof msg, "Deferred created at %s:%d ended with %s", file, line, text);
    else
        snprintf(msg, sizeof msg, "Deferred ended with %s", text);
    tw_diag_report(TW_DIAG_UNHANDLED, tw_failure_code(f), "tw_deferred_unref", msg);
}
