/* DeferredList and gather_results.
 *
 * One context per list, owned by the entries on its inputs (one each, until
 * that input's result reaches it) plus the constructor while it runs. The
 * context holds a reference to the list's Deferred until it is freed, so a
 * list whose caller let go still fires (and reports an unhandled failure)
 * when its inputs finish. It points to each input weakly: an input is alive
 * until its entry has run — the entry runs at the latest when the input is
 * abandoned — and the entry clears the pointer. */
#include <stdio.h>

#include "base/alloc.h"
#include "deferred/deferred.h"

typedef struct list_ctx list_ctx;

typedef struct list_slot {
    list_ctx *ctx;
    tw_deferred *input; /* weak; NULL once its result arrived */
} list_slot;

struct list_ctx {
    tw_deferred *list;    /* strong */
    tw_list_result *res;  /* until the list fires with it */
    size_t n, remaining, owners;
    unsigned flags;
    list_slot slots[];
};

static size_t res_size(size_t n)
{
    return sizeof(tw_list_result) + n * sizeof(tw_list_item);
}

static void free_res(void *ptr)
{
    tw_list_result *res = ptr;
    for (size_t i = 0; i < res->count; i++)
        if (res->items[i].done)
            tw_result_drop(res->items[i].result);
    tw__free(res, res_size(res->count));
}

static void put(list_ctx *c)
{
    if (--c->owners)
        return;
    if (c->res)
        free_res(c->res);
    tw_deferred_unref(c->list);
    tw__free(c, sizeof *c + c->n * sizeof(list_slot));
}

static void fire_with_items(list_ctx *c, size_t index)
{
    tw_list_result *res = c->res;
    c->res = NULL;
    res->index = index;
    tw__deferred_fire(c->list, tw_result_value(res, free_res));
}

static tw_result on_input(tw_result r, void *arg)
{
    list_slot *s = arg;
    list_ctx *c = s->ctx;
    size_t i = (size_t)(s - c->slots);
    s->input = NULL;
    c->remaining--;
    tw_failure *f = tw_result_as_failure(r);
    bool consume = c->flags & TW_LIST_CONSUME_ERRORS;
    tw_result pass = r;
    if (!tw_deferred_called(c->list)) {
        tw_list_item *it = &c->res->items[i];
        it->done = true;
        it->ok = !f;
        if (f) {
            it->result = tw_result_failure(tw_failure_ref(f));
        } else {
            it->result = r; /* the list takes the value */
            pass = tw_result_none();
        }
        if (!f && (c->flags & TW_LIST_FIRE_ON_ONE_CALLBACK)) {
            fire_with_items(c, i);
        } else if (f && (c->flags & TW_LIST_FIRE_ON_ONE_ERRBACK)) {
            tw_failure *first = tw_failure_wrap(tw_failure_ref(f), tw_failure_code(f),
                                                "input #%zu failed: %s", i,
                                                tw_failure_message(f));
            tw__failure_set_index(first, i);
            tw__deferred_fire(c->list, tw_result_failure(first));
        } else if (c->remaining == 0) {
            fire_with_items(c, SIZE_MAX);
        }
    }
    if (f && consume) {
        tw_failure_unref(f);
        pass = tw_result_none();
    }
    put(c);
    return pass;
}

/* Canceller of the list: cancels every input that has not reported. */
static void cancel_inputs(tw_deferred *d, void *arg)
{
    (void)d;
    list_ctx *c = arg;
    c->owners++;
    for (size_t i = 0; i < c->n; i++)
        if (c->slots[i].input)
            tw_deferred_cancel(c->slots[i].input);
    put(c);
}

int tw_deferred_list(tw_deferred *const *inputs, size_t n, unsigned flags, tw_deferred **out)
{
    if (!out || (n && !inputs) || (flags & ~7u) || n > SIZE_MAX / 2 / sizeof(tw_list_item))
        return TW_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!inputs[i])
            return TW_EINVAL;
    list_ctx *c = tw__alloc(sizeof *c + n * sizeof(list_slot));
    tw_list_result *res = tw__alloc(res_size(n));
    tw_deferred *list = NULL;
    if (!c || !res || tw__deferred_new(&list, cancel_inputs, c, NULL, 0))
        goto nomem;
    res->count = n;
    res->index = SIZE_MAX;
    for (size_t i = 0; i < n; i++)
        res->items[i] = (tw_list_item){false, false, {NULL, NULL}};
    c->list = list;
    c->res = res;
    c->n = c->remaining = n;
    c->owners = n + 1;
    c->flags = flags;
    /* Attach to every input before running any chain, so that either all
     * are attached or, when an array cannot grow, none is: the entries just
     * pushed are the last of their arrays and come off in reverse order
     * (which also holds when an input is listed twice). */
    for (size_t i = 0; i < n; i++) {
        c->slots[i] = (list_slot){c, inputs[i]};
        if (tw__deferred_reserve(inputs[i], 1)) {
            while (i-- > 0)
                inputs[i]->count--;
            goto nomem;
        }
        TW__CHECK_THREAD(inputs[i], "tw_deferred_list");
        tw__deferred_push(inputs[i], (tw__fnptr)on_input, &c->slots[i], E_BOTH);
    }
    *out = tw_deferred_ref(list);
    if (n == 0)
        fire_with_items(c, SIZE_MAX);
    for (size_t i = 0; i < n; i++)
        tw__deferred_run(inputs[i]);
    put(c);
    return 0;
nomem:
    if (list) {
        list->canceller = NULL;
        tw_deferred_unref(list);
    }
    if (res)
        tw__free(res, res_size(n));
    if (c)
        tw__free(c, sizeof *c + n * sizeof(list_slot));
    return TW_ENOMEM;
}

int tw_gather_results(tw_deferred *const *inputs, size_t n, bool consume_errors,
                      tw_deferred **out)
{
    return tw_deferred_list(inputs, n,
                            TW_LIST_FIRE_ON_ONE_ERRBACK |
                                (consume_errors ? TW_LIST_CONSUME_ERRORS : 0),
                            out);
}
