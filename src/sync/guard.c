/* Scoped guards (TW_WITH): acquire in the for-loop initialiser, release in
 * the cleanup handler. A guard whose acquire failed has obj == NULL and
 * once == 0, so neither the body nor the release runs.
 *
 * A guard takes and gives back its object itself, so it may track: it does
 * when the TW_WITH is in code compiled with TW_DEBUG (track) and when the
 * library is; its acquire then names the TW_WITH's file and line. */
#include <twine/sync.h>

#ifdef TW_DEBUG
#define LIB_TRACKS 1
#else
#define LIB_TRACKS 0
#endif

static int release_lock(void *p) { return tw__lock_release_plain(p); }
static int release_lock_tracked(void *p) { return tw__lock_release_tracked(p); }
static int release_rlock(void *p) { return (tw_rlock_release)(p); }
static int release_rlock_tracked(void *p) { return tw__rlock_release_tracked(p); }
static int release_sem(void *p) { return (tw_sem_release)(p, 1); }
static int release_sem_tracked(void *p) { return tw__sem_release_tracked(p, 1); }
static int release_bsem(void *p) { return (tw_bsem_release)(p, 1); }
static int release_bsem_tracked(void *p) { return tw__bsem_release_tracked(p, 1); }
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

tw__guard tw__guard_lock(tw_lock *l, const char *file, int line, int track)
{
    if (track || LIB_TRACKS)
        return make(l, tw__lock_acquire_tracked(l, 0, file, line), release_lock_tracked,
                    "TW_WITH(tw_lock *)");
    return make(l, tw__lock_acquire_plain(l), release_lock, "TW_WITH(tw_lock *)");
}

tw__guard tw__guard_rlock(tw_rlock *r, const char *file, int line, int track)
{
    if (track || LIB_TRACKS)
        return make(r, tw__rlock_acquire_tracked(r, 0, file, line), release_rlock_tracked,
                    "TW_WITH(tw_rlock *)");
    return make(r, (tw_rlock_acquire)(r), release_rlock, "TW_WITH(tw_rlock *)");
}

tw__guard tw__guard_sem(tw_sem *s, const char *file, int line, int track)
{
    if (track || LIB_TRACKS)
        return make(s, tw__sem_acquire_tracked(s, 0, file, line), release_sem_tracked,
                    "TW_WITH(tw_sem *)");
    return make(s, (tw_sem_acquire)(s), release_sem, "TW_WITH(tw_sem *)");
}

tw__guard tw__guard_bsem(tw_bsem *b, const char *file, int line, int track)
{
    if (track || LIB_TRACKS)
        return make(b, tw__sem_acquire_tracked(b ? &b->sem : NULL, 0, file, line),
                    release_bsem_tracked, "TW_WITH(tw_bsem *)");
    return make(b, (tw_bsem_acquire)(b), release_bsem, "TW_WITH(tw_bsem *)");
}

tw__guard tw__guard_cond(tw_cond *c, const char *file, int line, int track)
{
    /* tw_cond_release forgets in every build. */
    if (track || LIB_TRACKS)
        return make(c, tw__cond_acquire_tracked(c, -1.0, file, line), release_cond,
                    "TW_WITH(tw_cond *)");
    return make(c, (tw_cond_acquire)(c), release_cond, "TW_WITH(tw_cond *)");
}
