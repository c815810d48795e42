/* The diagnostic hook. The hook and its context are published together as
 * one pointer to an immutable pair, so a reader never sees a new function
 * with an old context. Pairs installed are never freed (they are few and
 * small): a report racing with an install may still use the old pair. */
#include <stdio.h>
#include <stdlib.h>

#include <twine/base.h>

typedef struct hook {
    tw_diag_fn fn;
    void *ctx;
} hook;

static hook *current; /* NULL = default hook */

static void default_hook(void *ctx, const tw_diag *d)
{
    (void)ctx;
    fprintf(stderr, "twine: %s: %s in %s: %s\n",
            d->kind == TW_DIAG_MISUSE ? "misuse" : "warning", tw_err_name(d->code),
            d->function ? d->function : "?", d->message ? d->message : "");
}

void tw_set_diag_hook(tw_diag_fn fn, void *ctx)
{
    hook *h = NULL;
    if (fn) {
        /* The only allocation in the base layer; it bypasses the allocator
         * hooks on purpose, since diagnostics must work when they fail. */
        h = malloc(sizeof *h);
        if (!h) {
            tw_diag_report(TW_DIAG_WARNING, TW_ENOMEM, "tw_set_diag_hook",
                           "no memory for the hook; keeping the previous one");
            return;
        }
        h->fn = fn;
        h->ctx = ctx;
    }
    /* release: pairs with the acquire load in tw_diag_report. */
    __atomic_store_n(&current, h, __ATOMIC_RELEASE);
}

void tw_diag_report(enum tw_diag_kind kind, int code, const char *function, const char *message)
{
    tw_diag d = {kind, code, function, message};
    hook *h = __atomic_load_n(&current, __ATOMIC_ACQUIRE);
    if (h)
        h->fn(h->ctx, &d);
    else
        default_hook(NULL, &d);
}
