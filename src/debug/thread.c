/* Per-thread records: what each thread holds, what it waits for, what it is
 * (a loop thread, a pool's thread), and the reports made when a thread or a
 * loop callback leaves a Lock held.
 *
 * A thread gets a record at its first tracked call (a free slot of a static
 * table, claimed with a CAS on its tid) and gives it back when it exits (a
 * pthread key destructor, which first reports the Locks it still holds).
 * The held stack is the thread's own; others read it only through the
 * atomics the live check and a serving loop thread use.
 *
 * An entry may outlive its hold: a Lock may be released by another thread
 * (Python's rule), and code not compiled with TW_DEBUG releases without
 * telling. So an entry is checked before it is believed (tw__dbg_entry_valid):
 *   - a Lock released by a thread that did not take it has its taker's
 *     entry tagged (bit 0 of obj) by the releaser; a tagged entry is dead,
 *     and its object is never read (it may be freed);
 *   - a Lock whose map slot names another tracked holder, or that is
 *     unlocked, is not held;
 *   - an RLock is held if its owner is the thread;
 *   - a Semaphore is held while its class is not a signal. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "debug/fast.h"

tw__dbg_thread tw__dbg_threads[DBG_THREADS];
uint32_t tw__dbg_threads_hwm;

/* The default TLS model: this is in every build of the library, used by
 * tracking code only, and must not take static TLS from a dlopen'd libtwine. */
__thread tw__dbg_thread *tw__dbg_self;
#define me tw__dbg_self
static __thread bool no_record; /* the table was full when it asked */
static pthread_key_t exit_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static bool key_made;

/* ---- records ------------------------------------------------------------------ */

static void report_left_at_exit(tw__dbg_thread *t);

static void on_thread_exit(void *p)
{
    tw__dbg_thread *t = p;
    if (!t)
        return;
    report_left_at_exit(t);
    ST(t->depth, 0);
    ST(t->wkind, 0);
    ST(t->pool, NULL);
    ST(t->task, NULL);
    ST(t->work, NULL);
    ST(t->loop, NULL);
    ST(t->serving, NULL);
    me = NULL;
    /* release: a later owner of the slot starts from the stores above. */
    __atomic_store_n(&t->tid, 0, __ATOMIC_RELEASE);
}

static void make_key(void)
{
    key_made = pthread_key_create(&exit_key, on_thread_exit) == 0;
}

extern void *__libc_stack_end __attribute__((weak));

/* The calling thread's stack, for telling objects on a stack from the rest. */
static void stack_bounds(uintptr_t *lo, uintptr_t *hi)
{
    *lo = *hi = 0;
    if (syscall(SYS_gettid) == getpid()) {
        /* The main thread: glibc's pthread_getattr_np reads /proc for it,
         * with stdio; its top and the stack limit are enough. */
        struct rlimit rl;
        if (&__libc_stack_end && __libc_stack_end && getrlimit(RLIMIT_STACK, &rl) == 0) {
            uintptr_t top = (uintptr_t)__libc_stack_end + 4096;
            rlim_t size = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (64u << 20)
                              ? (64u << 20)
                              : rl.rlim_cur;
            *hi = top;
            *lo = top - (uintptr_t)size;
        }
        return;
    }
    pthread_attr_t attr;
    void *addr;
    size_t size;
    if (pthread_getattr_np(pthread_self(), &attr) != 0)
        return;
    if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
        *lo = (uintptr_t)addr;
        *hi = (uintptr_t)addr + size;
    }
    pthread_attr_destroy(&attr);
}

static tw__dbg_thread *attach(void)
{
    if (no_record)
        return NULL;
    pthread_once(&key_once, make_key);
    uint32_t tid = tw__self();
    for (uint32_t i = 0; i < DBG_THREADS; i++) {
        tw__dbg_thread *t = &tw__dbg_threads[i];
        uint32_t free_ = 0;
        /* acquire: the previous owner's last stores (on_thread_exit). */
        if (__atomic_load_n(&t->tid, __ATOMIC_ACQUIRE) != 0 ||
            !__atomic_compare_exchange_n(&t->tid, &free_, tid, false, __ATOMIC_ACQUIRE,
                                         __ATOMIC_RELAXED))
            continue;
        uintptr_t lo, hi;
        ST(t->depth, 0);
        ST(t->wseq, LD(t->wseq) + 1);
        ST(t->wkind, 0);
        ST(t->wsub, NULL);
        t->wdepth = 0;
        ST(t->pool, NULL);
        ST(t->task, NULL);
        ST(t->work, NULL);
        ST(t->loop, NULL);
        ST(t->serving, NULL);
        t->loop_base = 0;
        ST(t->reporting, false);
        stack_bounds(&lo, &hi);
        ST(t->stack_lo, lo);
        ST(t->stack_hi, hi);
        uint32_t hwm = LD(tw__dbg_threads_hwm);
        while (hwm < i + 1 && !__atomic_compare_exchange_n(&tw__dbg_threads_hwm, &hwm, i + 1,
                                                            true, __ATOMIC_RELEASE,
                                                            __ATOMIC_RELAXED))
            ;
        me = t;
        if (key_made)
            pthread_setspecific(exit_key, t);
        return t;
    }
    no_record = true;
    tw__dbg_full(FULL_THREADS);
    return NULL;
}

tw__dbg_thread *tw__dbg_me(void)
{
    tw__dbg_thread *t = me;
    return __builtin_expect(t != NULL, 1) ? t : attach();
}

tw__dbg_thread *tw__dbg_me_if(void)
{
    return me;
}

tw__dbg_thread *tw__dbg_thread_of(uint32_t tid)
{
    uint32_t n = __atomic_load_n(&tw__dbg_threads_hwm, __ATOMIC_ACQUIRE);
    if (!tid)
        return NULL;
    for (uint32_t i = 0; i < n; i++)
        if (LD(tw__dbg_threads[i].tid) == tid)
            return &tw__dbg_threads[i];
    return NULL;
}

/* ---- the held stack ------------------------------------------------------------- */

#define TAGGED(p) (((uintptr_t)(p)) & 1u)

bool tw__dbg_push(tw__dbg_thread *t, const void *obj, enum tw__dk kind, uint32_t cls,
                  uint32_t slot, unsigned flags, const char *file, int line, uint64_t chain)
{
    uint32_t d = t->depth;
    if (d >= DBG_HELD) {
        tw__dbg_full(FULL_HELD);
        return false;
    }
    tw__dbg_held *h = &t->held[d];
    ST(h->obj, obj);
    ST(h->file, file);
    ST(h->line, line);
    ST(h->cls, cls);
    ST(h->kind, (uint8_t)kind);
    ST(h->flags, (uint8_t)flags);
    ST(h->slot, slot);
    h->chain = chain;
    /* release: a reader that sees the depth sees the entry. */
    __atomic_store_n(&t->depth, d + 1, __ATOMIC_RELEASE);
    return true;
}

void tw__dbg_remove(tw__dbg_thread *t, uint32_t i)
{
    uint32_t d = t->depth;
    if (i + 1 == d) {
        ST(t->depth, d - 1);
        return;
    }
    for (uint32_t j = i; j + 1 < d; j++) {
        tw__dbg_held *h = &t->held[j], *n = &t->held[j + 1];
        ST(h->obj, LD(n->obj));
        ST(h->file, n->file);
        ST(h->line, n->line);
        ST(h->cls, n->cls);
        ST(h->kind, n->kind);
        ST(h->flags, LD(n->flags));
        ST(h->slot, n->slot);
        h->chain = tw__dbg_chain(j ? t->held[j - 1].chain : 0, h->cls,
                                 (h->flags & HF_TRY) != 0);
    }
    ST(t->depth, d - 1);
}

bool tw__dbg_entry_valid(const tw__dbg_thread *t, uint32_t i)
{
    const tw__dbg_held *h = &t->held[i];
    const void *obj = LD(h->obj);
    uint32_t slot = LD(h->slot);
    if (LD(h->flags) & HF_PSEUDO)
        return true; /* a thread function's address may be odd: never tagged */
    if (TAGGED(obj))
        return false;
    switch (LD(h->kind)) {
    case TW__DK_LOCK: {
        if (slot != UINT32_MAX) {
            if (!tw__dbg_slot_is(slot, obj))
                return false; /* its block was freed */
            uint32_t o = LD(*tw__dbg_owner(slot));
            if (o && o != LD(t->tid))
                return false;
        }
        return LD(((const tw_lock *)obj)->word) != 0;
    }
    case TW__DK_RLOCK:
        if (slot != UINT32_MAX && !tw__dbg_slot_is(slot, obj))
            return false;
        return LD(((const tw_rlock *)obj)->owner) == LD(t->tid);
    case TW__DK_SEM:
        return !(tw__dbg_class_flags(LD(h->cls)) & CF_SIGNAL);
    default:
        return true;
    }
}

/* Drops the entries that no longer stand for a hold (before edges are added
 * from them, and before a thread's held stack is reported). */
static void drop_dead(tw__dbg_thread *t)
{
    for (uint32_t i = t->depth; i-- > 0;)
        if (!tw__dbg_entry_valid(t, i))
            tw__dbg_remove(t, i);
}

/* ---- acquire and release -------------------------------------------------------- */

void tw__dbg_acquire(tw__dbg_acq *a, const void *obj, enum tw__dk kind, unsigned sub,
                     unsigned flags, const char *file, int line, const char *function)
{
    tw__dbg_thread *t = tw__dbg_me();
    a->t = t;
    if (!t)
        return;
    if (__builtin_expect(!LD(tw__dbg_on), 0))
        __atomic_store_n(&tw__dbg_on, 1, __ATOMIC_RELAXED);
    uint32_t slot = UINT32_MAX, cls = tw__dbg_class_of(obj, kind, &slot);
    if (sub)
        cls = tw__dbg_subclass(cls, sub);
    a->cls = cls;
    a->slot = slot;
    if (kind == TW__DK_SEM && (tw__dbg_class_flags(cls) & CF_SIGNAL)) {
        a->t = NULL; /* a signal, not a lock: no entry */
        return;
    }
    uint32_t d = t->depth;
    bool try_ = flags & TW__DA_TRY;
    uint64_t key = tw__dbg_chain(d ? t->held[d - 1].chain : 0, cls, try_);
    a->chain = key;
    /* Nothing held: no order to check. A try: it cannot wait, so it adds no
     * edge. A stack seen before: every edge is in the graph already. No
     * class (the table is full): nothing to order. */
    if (d == 0 || try_ || !cls || tw__dbg_chain_known(key))
        return;
    drop_dead(t);
    d = t->depth;
    key = tw__dbg_chain(d ? t->held[d - 1].chain : 0, cls, false);
    a->chain = d ? tw__dbg_validate(t, obj, cls, file, line, function, key) : key;
}

void tw__dbg_acquired(tw__dbg_acq *a, const void *obj, enum tw__dk kind, unsigned flags,
                      const char *file, int line)
{
    tw__dbg_thread *t = a->t;
    if (!t)
        return;
    if (!tw__dbg_push(t, obj, kind, a->cls, a->slot, (flags & TW__DA_TRY) ? HF_TRY : 0, file,
                      line, a->chain))
        return;
    if (kind == TW__DK_LOCK && a->slot != UINT32_MAX)
        ST(*tw__dbg_owner(a->slot), LD(t->tid));
}

/* Another thread's tracked hold of Lock obj ends with our release: its
 * entry is tagged dead, so that it is never read again (the Lock may be
 * freed once released). */
static void tag_foreign(uint32_t holder, const void *obj)
{
    tw__dbg_thread *o = tw__dbg_thread_of(holder);
    if (!o)
        return;
    uint32_t d = __atomic_load_n(&o->depth, __ATOMIC_ACQUIRE);
    for (uint32_t i = d < DBG_HELD ? d : DBG_HELD; i-- > 0;) {
        const void *want = obj;
        if (__atomic_compare_exchange_n(&o->held[i].obj, &want,
                                        (const void *)((uintptr_t)obj | 1u), false,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return;
    }
}

unsigned tw__dbg_release(const void *obj, enum tw__dk kind, unsigned n)
{
    tw__dbg_thread *t = me;
    unsigned popped = 0;
    uint32_t slot = UINT32_MAX;
    if (!LD(tw__dbg_on))
        return 0;
    if (t) {
        uint32_t d = t->depth;
        for (uint32_t i = d; i-- > 0 && popped < n;) {
            if (LD(t->held[i].obj) != obj || t->held[i].kind != kind)
                continue;
            slot = t->held[i].slot;
            tw__dbg_remove(t, i);
            popped++;
        }
    }
    if (kind == TW__DK_LOCK) {
        if (slot == UINT32_MAX)
            slot = tw__dbg_slot_of(obj);
        if (slot != UINT32_MAX) {
            uint32_t *owner = tw__dbg_owner(slot), o = LD(*owner);
            if (o && (!t || o != LD(t->tid)))
                tag_foreign(o, obj);
            if (o)
                ST(*owner, 0);
        }
    } else if (kind == TW__DK_SEM && popped == 0) {
        /* Released by a thread that did not take it: a signal from now on. */
        uint32_t s, cls = tw__dbg_class_of(obj, TW__DK_SEM, &s);
        tw__dbg_class_flag(cls, CF_SIGNAL);
        tw__dbg_signal(TW__DK_SEM, obj, 0);
    }
    return popped;
}

void tw__dbg_cond_lock(const void *lock, bool held)
{
    tw__dbg_thread *t = me;
    if (!t)
        return;
    for (uint32_t i = t->depth; i-- > 0;) {
        tw__dbg_held *h = &t->held[i];
        if (LD(h->obj) != lock || h->kind != TW__DK_LOCK)
            continue;
        uint8_t f = LD(h->flags);
        ST(h->flags, (uint8_t)(held ? f & ~HF_GIVEN_UP : f | HF_GIVEN_UP));
        if (h->slot != UINT32_MAX && tw__dbg_slot_is(h->slot, lock))
            ST(*tw__dbg_owner(h->slot), held ? LD(t->tid) : 0);
        return;
    }
}

/* ---- pseudo-locks ------------------------------------------------------------------ */

/* Pseudo-locks. The loop, a thread function and a DeferredLock run by
 * tw_dlock_run are held by the thread that runs them, so that what it takes
 * meanwhile is ordered after them; but nothing waits to get them, so they
 * are pushed like a try, without edges into them (hold). A wait for one (a
 * blocking call waits for the loop) is checked like an acquire, and pushes
 * nothing (!hold). */
void tw__dbg_pseudo_acquire(tw__dbg_thread *t, const void *key, enum tw__dk kind, uint32_t cls,
                            const char *file, int line, const char *function, bool hold)
{
    uint32_t d = t->depth;
    uint64_t k = tw__dbg_chain(d ? t->held[d - 1].chain : 0, cls, hold);
    if (hold) {
        tw__dbg_push(t, key, kind, cls, UINT32_MAX, HF_PSEUDO | HF_TRY, file, line, k);
        return;
    }
    if (d && cls && !tw__dbg_chain_known(k)) {
        drop_dead(t);
        d = t->depth;
        if (d)
            tw__dbg_validate(t, key, cls, file, line, function,
                             tw__dbg_chain(t->held[d - 1].chain, cls, false));
    }
}

void tw__dbg_pseudo_release(tw__dbg_thread *t, const void *key, enum tw__dk kind)
{
    for (uint32_t i = t->depth; i-- > 0;)
        if (LD(t->held[i].obj) == key && t->held[i].kind == kind) {
            tw__dbg_remove(t, i);
            return;
        }
}

/* ---- locks left held -------------------------------------------------------------- */

/* Reports the Locks and RLocks of t's stack from `from` up that are still
 * held and not reported yet; `how` says who leaves them. */
static void report_left(tw__dbg_thread *t, uint32_t from, const char *function,
                        const char *how)
{
    char msg[1024];
    size_t len = 0;
    int n = 0;
    /* Atomics only, though the record is the thread's own: this also runs in
     * a thread's exit destructor, whose synchronisation ThreadSanitizer does
     * not follow (the record's next owner would look racing with it). */
    for (uint32_t i = from; i < LD(t->depth); i++) {
        tw__dbg_held *h = &t->held[i];
        uint8_t kind = LD(h->kind), flags = LD(h->flags);
        if ((kind != TW__DK_LOCK && kind != TW__DK_RLOCK) || (flags & HF_LEFT) ||
            !tw__dbg_entry_valid(t, i) || tw__dbg_class_quiet(LD(h->cls)))
            continue;
        ST(h->flags, (uint8_t)(flags | HF_LEFT));
        char name[96];
        tw__dbg_class_name(LD(h->cls), name, sizeof name);
        if (n++ == 0)
            tw__dbg_put(msg, sizeof msg, &len, "%s holding ", how);
        else
            tw__dbg_put(msg, sizeof msg, &len, ", and ");
        tw__dbg_put(msg, sizeof msg, &len, "%s %p (%s), taken at ",
                    tw__dbg_kind_name((enum tw__dk)kind), LD(h->obj), name);
        tw__dbg_put_site(msg, sizeof msg, &len, LD(h->file), LD(h->line));
    }
    if (!n)
        return;
    tw__dbg_put(msg, sizeof msg, &len, "; a thread that waits for it waits forever (release "
                                       "on every path: TW_WITH, tw_lock_run)");
    tw__dbg_report(TW_EDEADLK, function, msg);
}

static void report_left_at_exit(tw__dbg_thread *t)
{
    char how[64];
    snprintf(how, sizeof how, "thread %u exits", (unsigned)LD(t->tid));
    report_left(t, 0, "thread exit", how);
}

/* ---- the loop --------------------------------------------------------------------- */

typedef struct rrec {
    const void *r; /* atomic */
    uint32_t tid;  /* atomic: its loop thread */
    uint32_t cls;  /* the pseudo-lock of its loop */
} rrec;
static rrec reactors[DBG_REACTORS];

/* mu held. r's record, made if `make`. */
static rrec *reactor_rec(const void *r, bool make)
{
    rrec *spare = NULL;
    for (uint32_t i = 0; i < DBG_REACTORS; i++) {
        if (reactors[i].r == r)
            return &reactors[i];
        if (!reactors[i].r && !spare)
            spare = &reactors[i];
    }
    if (!make || !spare)
        return NULL;
    ST(spare->tid, 0);
    spare->cls = 0;
    ST(spare->r, r);
    return spare;
}

uint32_t tw__dbg_loop_thread(const void *r)
{
    for (uint32_t i = 0; i < DBG_REACTORS; i++)
        if (LD(reactors[i].r) == r)
            return LD(reactors[i].tid);
    return 0;
}

void tw__dbg_loop_enter(const void *r)
{
    tw__dbg_thread *t = tw__dbg_me();
    if (!t)
        return;
    if (!LD(tw__dbg_on))
        __atomic_store_n(&tw__dbg_on, 1, __ATOMIC_RELAXED);
    tw__dbg_lock();
    rrec *rr = reactor_rec(r, true);
    if (rr)
        ST(rr->tid, LD(t->tid));
    else
        tw__dbg_full_locked(FULL_REACTORS);
    uint32_t cls = rr ? rr->cls : 0;
    tw__dbg_unlock();
    if (rr && !cls) {
        cls = tw__dbg_pseudo_class(r, TW__DK_LOOP);
        tw__dbg_lock();
        if (reactors[rr - reactors].r == r)
            rr->cls = cls;
        tw__dbg_unlock();
    }
    ST(t->loop, r);
    /* The loop thread holds its loop while it runs callbacks: a Lock a
     * callback takes is ordered after the loop, and a thread that waits for
     * the loop (blocking_call_from_thread) holding it closes a cycle. */
    if (cls)
        tw__dbg_pseudo_acquire(t, r, TW__DK_LOOP, cls, "tw_reactor_run", 0, "tw_reactor_run",
                               true);
    t->loop_base = t->depth;
}

void tw__dbg_loop_idle(const void *r)
{
    tw__dbg_thread *t = me;
    if (!t || LD(t->loop) != r || t->depth <= t->loop_base)
        return;
    report_left(t, t->loop_base, "tw_reactor_run", "a loop callback returned to the loop");
}

void tw__dbg_loop_leave(const void *r)
{
    tw__dbg_thread *t = me;
    if (!t)
        return;
    tw__dbg_loop_idle(r);
    tw__dbg_pseudo_release(t, r, TW__DK_LOOP);
    ST(t->loop, NULL);
}

void tw__dbg_reactor_gone(const void *r)
{
    tw__dbg_lock();
    rrec *rr = reactor_rec(r, false);
    if (rr) {
        ST(rr->tid, 0);
        ST(rr->r, NULL);
    }
    tw__dbg_unlock();
    tw__dbg_retire_key(r);
}
