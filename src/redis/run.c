/* Runs a function under a held Redis lock or semaphore permit, released on
 * every way out: the shape shared by tw_redis_lock_run and tw_redis_sem_run.
 * The primitive's own module says how to acquire, what was granted, and how
 * to release it (tw__redis_run_ops). */
#include "redis/redis.h"

typedef struct run_ctx {
    const tw__redis_run_ops *ops;
    void *prim;
    tw_result_fn fn;
    void *arg;
    tw_result result; /* fn's, while the release is on its way */
    uint64_t token;   /* the grant fn ran under */
    bool lost;        /* the grant was lost before the release was sent */
} run_ctx;

static tw_result run_released(tw_result r, void *arg)
{
    run_ctx *ctx = arg;
    tw_result res = ctx->result;
    bool lost = ctx->lost || (tw_result_is_failure(r) &&
                              tw_failure_check(tw_result_as_failure(r), TW_ELEASE));
    if (lost && !tw_result_is_failure(res)) {
        tw_result_drop(res);
        res = tw_result_fail(TW_ELEASE, ctx->ops->lost_fmt, ctx->ops->name(ctx->prim));
    }
    /* A release that failed otherwise (connection lost) leaves the grant to
     * expire: the section's own result stands. */
    tw_result_drop(r);
    ctx->ops->unref(ctx->prim);
    TW__DELETE(ctx);
    return res;
}

static tw_result run_finish(tw_result r, void *arg)
{
    run_ctx *ctx = arg;
    tw_deferred *rd = NULL;
    ctx->result = r;
    if (!ctx->ops->release(ctx->prim, ctx->token, &ctx->lost, &rd))
        return run_released(tw_result_none(), ctx);
    tw_deferred_add_both(rd, run_released, ctx);
    return tw_result_deferred(rd);
}

static tw_result run_granted(tw_result r, void *arg)
{
    run_ctx *ctx = arg;
    ctx->token = ctx->ops->granted(ctx->prim, r);
    tw_result res = ctx->fn(ctx->arg);
    if (tw_result_is_deferred(res)) {
        tw_deferred_add_both(res.ptr, run_finish, ctx);
        return res;
    }
    return run_finish(res, ctx);
}

static tw_result run_not_granted(tw_result r, void *arg)
{
    run_ctx *ctx = arg;
    ctx->ops->unref(ctx->prim);
    TW__DELETE(ctx);
    return r;
}

int tw__redis_run(const tw__redis_run_ops *ops, void *prim, tw_result_fn fn, void *arg,
                  tw_deferred **out)
{
    run_ctx *ctx = TW__NEW(run_ctx);
    if (!ctx)
        return TW_ENOMEM;
    ctx->ops = ops;
    ctx->prim = prim;
    ctx->fn = fn;
    ctx->arg = arg;
    tw_deferred *d;
    int rc = ops->acquire(prim, &d);
    if (rc) {
        TW__DELETE(ctx);
        return rc;
    }
    ops->ref(prim);
    tw_deferred_add_callbacks(d, run_granted, ctx, run_not_granted, ctx);
    if (out)
        *out = d;
    else
        tw_deferred_unref(d);
    return 0;
}
