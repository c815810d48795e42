/* Scoped guards (TW_WITH): acquire in the for-loop initialiser, release in
 * the cleanup handler. A guard whose acquire failed has obj == NULL and
 * once == 0, so neither the body nor the release runs. */
#include <twine/sync.h>

static int release_lock(void *p) { return tw_lock_release(p); }
static int release_rlock(void *p) { return tw_rlock_release(p); }
static int release_sem(void *p) { return tw_sem_release(p, 1); }
static int release_bsem(void *p) { return tw_bsem_release(p, 1); }
static int release_cond(void *p) { return tw_cond_release(p); }

static tw__guard make(void *obj, int rc, int (*release)(void *), const char *what)
{
    tw__guard g = {obj, release, 1};
    if (rc != 0) {
        tw_diag_report(TW_DIAG_MISUSE, rc, what,
                       "could not acquire the guarded object; the block was skipped");
        g.obj = NULL;
        g.once = 0;
    }
    return g;
}

tw__guard tw__guard_lock(tw_lock *l)
{
    return make(l, tw_lock_acquire(l), release_lock, "TW_WITH(tw_lock *)");
}

tw__guard tw__guard_rlock(tw_rlock *r)
{
    return make(r, tw_rlock_acquire(r), release_rlock, "TW_WITH(tw_rlock *)");
}

tw__guard tw__guard_sem(tw_sem *s)
{
    return make(s, tw_sem_acquire(s), release_sem, "TW_WITH(tw_sem *)");
}

tw__guard tw__guard_bsem(tw_bsem *b)
{
    return make(b, tw_bsem_acquire(b), release_bsem, "TW_WITH(tw_bsem *)");
}

tw__guard tw__guard_cond(tw_cond *c)
{
    return make(c, tw_cond_acquire(c), release_cond, "TW_WITH(tw_cond *)");
}
