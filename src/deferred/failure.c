/* Failures and results.
 *
 * A failure is immutable once shared; only its reference count changes, and
 * that atomically, so a failure made on one thread may be released on
 * another. The message lives in the same block as the failure. The immortal
 * TW_ENOMEM failure is what tw_failure_new returns when memory is short: its
 * count is never changed, so it needs no allocation and no freeing. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "deferred/deferred.h"

#define IMMORTAL UINT32_MAX

struct tw_failure {
    uint32_t refs; /* IMMORTAL for the static out-of-memory failure */
    int code;
    size_t index; /* list input index, or SIZE_MAX */
    tw_failure *cause;
    void *payload;
    tw_drop_fn payload_drop;
    const char *message; /* points just past the struct, or to static text */
    size_t size;         /* of the whole block, for tw__free */
};

static tw_failure nomem = {IMMORTAL, TW_ENOMEM, SIZE_MAX, NULL, NULL, NULL,
                           "out of memory while making a failure", 0};

/* Takes the reference to cause (NULL allowed). */
static tw_failure *make(tw_failure *cause, int code, const char *fmt, va_list ap)
{
    if (code == 0) {
        tw_diag_report(TW_DIAG_MISUSE, TW_EINVAL, "tw_failure_new",
                       "a failure needs a non-zero code; TW_EINVAL used instead");
        code = TW_EINVAL;
    }
    char small[160];
    const char *text = small;
    size_t len;
    va_list ap2;
    if (!fmt) {
        text = tw_strerror(code);
        len = strlen(text);
    } else {
        va_copy(ap2, ap);
        int n = vsnprintf(small, sizeof small, fmt, ap2);
        va_end(ap2);
        len = n < 0 ? 0 : (size_t)n;
        if (n < 0)
            small[0] = '\0';
    }
    size_t size = sizeof(tw_failure) + len + 1;
    tw_failure *f = tw__alloc(size);
    if (!f) {
        if (cause)
            tw_failure_unref(cause);
        return &nomem;
    }
    char *msg = (char *)(f + 1);
    if (fmt && len >= sizeof small) {
        va_copy(ap2, ap);
        vsnprintf(msg, len + 1, fmt, ap2);
        va_end(ap2);
    } else {
        memcpy(msg, text, len);
        msg[len] = '\0';
    }
    f->refs = 1;
    f->code = code;
    f->index = SIZE_MAX;
    f->cause = cause;
    f->payload = NULL;
    f->payload_drop = NULL;
    f->message = msg;
    f->size = size;
    return f;
}

tw_failure *tw_failure_newv(int code, const char *fmt, va_list ap)
{
    return make(NULL, code, fmt, ap);
}

tw_failure *tw_failure_new(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tw_failure *f = make(NULL, code, fmt, ap);
    va_end(ap);
    return f;
}

tw_failure *tw_failure_wrap(tw_failure *cause, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tw_failure *f = make(cause, code, fmt, ap);
    va_end(ap);
    return f;
}

tw_result tw_result_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tw_failure *f = make(NULL, code, fmt, ap);
    va_end(ap);
    return tw_result_failure(f);
}

int tw_failure_set_payload(tw_failure *f, void *payload, tw_drop_fn drop)
{
    if (!f || f == &nomem)
        return TW_EINVAL;
    /* relaxed: only the caller's own reference can make it 1, and sharing
     * it afterwards is what the caller must not have done yet. */
    if (__atomic_load_n(&f->refs, __ATOMIC_RELAXED) != 1)
        return TW_EBUSY;
    if (f->payload || f->payload_drop)
        return TW_EALREADY;
    f->payload = payload;
    f->payload_drop = drop;
    return 0;
}

void tw__failure_set_index(tw_failure *f, size_t index)
{
    if (f != &nomem)
        f->index = index;
}

tw_failure *tw_failure_ref(tw_failure *f)
{
    /* relaxed: a new reference is made from an existing one, which already
     * orders everything before it. */
    if (f && f != &nomem)
        __atomic_fetch_add(&f->refs, 1, __ATOMIC_RELAXED);
    return f;
}

void tw_failure_unref(tw_failure *f)
{
    /* Iterative along the cause chain, so a long chain frees in bounded stack. */
    while (f && f != &nomem) {
        /* acq_rel: the last release sees every other holder's use (release
         * half of theirs, acquire half of ours) before freeing. */
        if (__atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL) != 0)
            return;
        tw_failure *cause = f->cause;
        if (f->payload_drop)
            f->payload_drop(f->payload);
        tw__free(f, f->size);
        f = cause;
    }
}

int tw_failure_code(const tw_failure *f)
{
    return f ? f->code : TW_EINVAL;
}

const char *tw_failure_message(const tw_failure *f)
{
    return f ? f->message : "";
}

tw_failure *tw_failure_cause(const tw_failure *f)
{
    return f ? f->cause : NULL;
}

void *tw_failure_payload(const tw_failure *f)
{
    return f ? f->payload : NULL;
}

size_t tw_failure_index(const tw_failure *f)
{
    return f ? f->index : SIZE_MAX;
}

bool tw_failure_check(const tw_failure *f, int code)
{
    return f && f->code == code;
}

tw_failure *tw_failure_find(const tw_failure *f, int code)
{
    for (; f; f = f->cause)
        if (f->code == code)
            return (tw_failure *)f;
    return NULL;
}

int tw__failure_trap(const tw_failure *f, const int *codes, size_t n)
{
    if (!f)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (codes[i] != 0 && f->code == codes[i])
            return codes[i];
    return 0;
}

size_t tw_failure_format(const tw_failure *f, char *buf, size_t size)
{
    size_t total = 0;
    for (const tw_failure *g = f; g; g = g->cause) {
        /* A code outside twine's table is the application's own: it has
         * no TW_ name, and is shown as what it is rather than as a twine
         * code nobody can look up. */
        char name[48];
        const char *n = tw_err_name(g->code);
        if (strcmp(n, "TW_E?") == 0) {
            snprintf(name, sizeof name, "application error %d", g->code);
            n = name;
        }
        int w = snprintf(total < size ? buf + total : NULL, total < size ? size - total : 0,
                         "%s%s: %s", g == f ? "" : "; caused by ", n, g->message);
        if (w > 0)
            total += (size_t)w;
    }
    if (!f && size)
        buf[0] = '\0';
    return total;
}

void tw_result_drop(tw_result r)
{
    if (r.drop == TW__RESULT_FAILURE)
        tw_failure_unref(r.ptr);
    else if (r.drop == TW__RESULT_DEFERRED)
        tw_deferred_unref(r.ptr);
    else if (r.drop)
        r.drop(r.ptr);
}
