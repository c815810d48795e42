/* The diagnostic hook.
 *
 * The hook is a (function, context) pair that must be read consistently: a
 * reader must never call a new function with an old context. The pair is
 * guarded by a sequence counter (a seqlock): a writer makes `seq` odd, stores
 * both fields, and makes it even again; a reader retries while `seq` is odd or
 * changed under it. Writers serialise on `writing`. Nothing allocates, so the
 * hook works when memory is short. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/diag.h"

static uint32_t seq;     /* odd while a writer is storing */
static uint32_t writing; /* writers' mutual exclusion flag */
static tw_diag_fn hook_fn; /* NULL = default hook */
static void *hook_ctx;

static void default_hook(void *ctx, const tw_diag *d)
{
    (void)ctx;
    /* An unhandled failure may carry the application's own code, which has
     * no TW_ name: shown as a number, not as an unknown twine code. */
    char code[48];
    const char *name = tw_err_name(d->code);
    if (strcmp(name, "TW_E?") == 0) {
        snprintf(code, sizeof code, "application error %d", d->code);
        name = code;
    }
    fprintf(stderr, "twine: %s: %s in %s: %s\n",
            d->kind == TW_DIAG_MISUSE      ? "misuse"
            : d->kind == TW_DIAG_UNHANDLED ? "unhandled failure"
                                           : "warning", name,
            d->function ? d->function : "?", d->message ? d->message : "");
}

void tw_set_diag_hook(tw_diag_fn fn, void *ctx)
{
    while (__atomic_exchange_n(&writing, 1, __ATOMIC_ACQUIRE))
        ; /* installs are rare and short */
    __atomic_store_n(&seq, __atomic_load_n(&seq, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    /* release: each field store keeps the odd seq before it, so a reader that
     * sees a new field (acquire) also sees the odd seq and retries. */
    __atomic_store_n(&hook_fn, fn, __ATOMIC_RELEASE);
    __atomic_store_n(&hook_ctx, ctx, __ATOMIC_RELEASE);
    /* release: the fields before the even seq (pairs with the reader's acquire). */
    __atomic_store_n(&seq, __atomic_load_n(&seq, __ATOMIC_RELAXED) + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&writing, 0, __ATOMIC_RELEASE);
}

void tw_diag_report(enum tw_diag_kind kind, int code, const char *function, const char *message)
{
    tw_diag d = {kind, code, function, message};
    tw_diag_fn fn;
    void *ctx;
    uint32_t s0, s1;
    int saved = errno; /* a hook (or stderr) may set it; twine keeps the caller's */
    do {
        s0 = __atomic_load_n(&seq, __ATOMIC_ACQUIRE);
        /* acquire: the second seq load cannot move before these. */
        fn = __atomic_load_n(&hook_fn, __ATOMIC_ACQUIRE);
        ctx = __atomic_load_n(&hook_ctx, __ATOMIC_ACQUIRE);
        s1 = __atomic_load_n(&seq, __ATOMIC_RELAXED);
    } while ((s0 & 1) || s0 != s1);
    if (fn)
        fn(ctx, &d);
    else
        default_hook(NULL, &d);
    errno = saved;
}

void tw__wrong_thread(const char *what, uint32_t owner, const char *function)
{
    char msg[320];
    snprintf(msg, sizeof msg,
             "%s of thread %u used from thread %u; it belongs to one thread (hand work over "
             "with call_from_thread)",
             what, (unsigned)owner, (unsigned)tw__self());
    tw_diag_report(TW_DIAG_MISUSE, TW_EPERM, function, msg);
}
