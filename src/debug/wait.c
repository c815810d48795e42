/* Waits and the live check: a thread that has waited longer than the
 * threshold (1 s unless tw_deadlock_set_threshold says otherwise) on a
 * twine primitive looks at what every waiting thread waits for, and reports
 * a set of threads none of which can go on.
 *
 * The wait-for graph. Each waiting thread waits for a resource, and each
 * resource can be freed by some threads:
 *   Lock         its tracked holder (the address map's owner), else the
 *                threads whose held stacks have it;
 *   RLock        its owner;
 *   Semaphore    used as a lock: the threads holding it; used as a signal:
 *                the threads seen releasing it (see "learned" below);
 *   Event        the threads seen setting it;
 *   Condition    the threads seen notifying it (a notified waiter only
 *                waits for the lock, which it will get);
 *   blocking call (tw_blocking_call_from_thread): the loop thread of its
 *                reactor, until the call's function returns a Deferred that
 *                has not fired; then that Deferred;
 *   pool stop    the pool's busy threads;
 *   a Deferred   of tw_defer_to_thread: the thread running its function, or,
 *                queued, every busy thread of its pool (and the loop that
 *                delivers it); of a DeferredLock acquire: the DeferredLock,
 *                whose holds by tw_dlock_run last until their Deferreds fire.
 * A set S of waiting threads is deadlocked when every member waits for a
 * resource that only members of S could free (for a Semaphore, Event or
 * Condition: every thread known to free it is in S). S is found as a greatest
 * fixed point: start from every waiting thread (those that waited at least
 * half the threshold; idle pool threads are not waiting for anything) and
 * drop, until nothing changes, each thread whose resource could be freed by
 * a thread outside S, or is free already. If the checking thread is left in
 * S, following for each member the member that blocks it gives the cycle.
 * What the check reads of other threads may be stale, so the cycle is
 * reported only if every member is still in the same wait (its wseq) after
 * the check. A cycle is reported once: its key is the set of (thread, wait)
 * pairs, so every member's check, and every later check, finds it reported.
 *
 * Learned signallers. A Semaphore released, an Event set or a Condition
 * notified records the calling thread (the last two distinct ones; a third
 * makes it "many", which is never a deadlock) in a lossy direct-mapped
 * cache. Who set an Event is believed only if the Event's count of sets is
 * still the one that set left (a newer set, or another Event at a reused
 * address, has another count); who released a Semaphore or notified a
 * Condition is not believed for an object on a thread's stack, where
 * addresses are reused all the time.
 *
 * Nothing here takes tw__dbg_mu while reading: every field read across
 * threads is an atomic, and the async table's entries carry a sequence
 * number. One check runs at a time (a flag); a thread that finds another
 * checking checks at its next wake-up. */
#include <sched.h>
#include <stdarg.h>

#include "base/time.h"
#include "debug/fast.h"
#include "platform/wait.h"
#include "sync/lock.h"

/* ---- the threshold ------------------------------------------------------------ */

static int64_t threshold_ns = 1000000000; /* atomic */

int64_t tw__dbg_threshold(void)
{
    return LD(threshold_ns);
}

int tw_deadlock_set_threshold(double seconds)
{
    int64_t ns;
    if (tw__delay_ns(seconds, &ns) != 0)
        return TW_EINVAL;
    ST(threshold_ns, ns);
    return 0;
}

void tw__lock_set_self_wait_report(int64_t ns)
{
    ST(threshold_ns, ns < 0 ? 0 : ns);
}

/* ---- learned signallers ---------------------------------------------------------- */

#define MANY UINT32_MAX

typedef struct sig {
    uint32_t seq;    /* atomic: odd while written */
    uint32_t stamp;  /* atomic: an Event's count of sets after the last set */
    uintptr_t addr;  /* atomic */
    uint32_t kind;   /* atomic: what was signalled there */
    uint32_t tid[2]; /* atomic: the last signaller, the one before (or MANY) */
} sig;

static sig sigs[DBG_SIGNALS];

static inline uint32_t sig_index(uintptr_t a)
{
    a ^= a >> 17;
    a *= 0xed5ad4bbu;
    a ^= a >> 11;
    return (uint32_t)a & (DBG_SIGNALS - 1);
}

void tw__dbg_signal(enum tw__dk kind, const void *obj, uint32_t stamp)
{
    tw__dbg_thread *t = tw__dbg_me();
    if (!t)
        return;
    uint32_t tid = LD(t->tid);
    sig *s = &sigs[sig_index((uintptr_t)obj)];
    uint32_t seq = LD(s->seq);
    if (LD(s->addr) == (uintptr_t)obj && LD(s->tid[0]) == tid && LD(s->stamp) == stamp &&
        LD(s->kind) == (uint32_t)kind)
        return; /* nothing new */
    /* acquire: the fields below after the seq that makes it ours. */
    if ((seq & 1) || !__atomic_compare_exchange_n(&s->seq, &seq, seq + 1, false,
                                                  __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return; /* another thread writes it: lossy */
    if (LD(s->addr) != (uintptr_t)obj || LD(s->kind) != (uint32_t)kind) {
        /* Another object (or another kind of object at a reused address). */
        ST(s->addr, (uintptr_t)obj);
        ST(s->kind, (uint32_t)kind);
        ST(s->tid[0], tid);
        ST(s->tid[1], 0);
        tw__dbg_mark_line(obj);
    } else if (LD(s->tid[0]) != tid) {
        uint32_t prev = LD(s->tid[0]), older = LD(s->tid[1]);
        ST(s->tid[1], older == 0 || older == tid ? prev : MANY);
        ST(s->tid[0], tid);
    }
    ST(s->stamp, stamp);
    /* release: the fields before the even seq (pairs with the reader's acquire). */
    __atomic_store_n(&s->seq, seq + 2, __ATOMIC_RELEASE);
}

/* The signallers of obj (a `kind`) into tid[2] (0 for none); false if
 * unknown. */
static bool signallers(const void *obj, uint32_t kind, uint32_t *stamp, uint32_t tid[2])
{
    sig *s = &sigs[sig_index((uintptr_t)obj)];
    uint32_t s0 = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
    uintptr_t a = LD(s->addr);
    uint32_t k = LD(s->kind);
    *stamp = LD(s->stamp);
    tid[0] = LD(s->tid[0]);
    tid[1] = LD(s->tid[1]);
    /* acquire fence: the field loads above before the second seq load. */
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if ((s0 & 1) || LD(s->seq) != s0 || a != (uintptr_t)obj || k != kind || !tid[0] ||
        tid[1] == MANY)
        return false;
    return true;
}

void tw__dbg_signals_forget(uintptr_t from, uintptr_t to)
{
    for (uintptr_t a = from; a < to; a += 4) {
        sig *s = &sigs[sig_index(a)];
        uint32_t seq = LD(s->seq);
        if (LD(s->addr) != a || (seq & 1) ||
            !__atomic_compare_exchange_n(&s->seq, &seq, seq + 1, false, __ATOMIC_ACQUIRE,
                                         __ATOMIC_RELAXED))
            continue;
        if (LD(s->addr) == a)
            ST(s->addr, 0);
        __atomic_store_n(&s->seq, seq + 2, __ATOMIC_RELEASE);
    }
}

/* Whether obj lies on a live thread's stack. */
static bool on_a_stack(const void *obj)
{
    uintptr_t a = (uintptr_t)obj;
    uint32_t n = __atomic_load_n(&tw__dbg_threads_hwm, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < n; i++) {
        tw__dbg_thread *t = &tw__dbg_threads[i];
        if (LD(t->tid) && a >= LD(t->stack_lo) && a < LD(t->stack_hi))
            return true;
    }
    return false;
}

/* ---- the async table: thread work and DeferredLocks -------------------------------
 * One entry per defer_to_thread Deferred in flight (WORK: its pool, its
 * thread function, the reactor that delivers it) and per DeferredLock or
 * DeferredSemaphore held (DPRIM: its holds, and the WORK Deferreds holds by
 * tw_dlock_run wait for). Written under mu; read by the live check, which
 * copies an entry under its sequence number (odd while it is written) and
 * may miss one that moves (a miss only means "not stuck"). Removals leave
 * tombstones; when they make a quarter of the table it is rebuilt. */

enum { A_WORK = 1, A_DPRIM = 2 };
#define A_UNTIL 4

typedef struct anode {
    uint32_t seq;   /* atomic: odd while the entry is written */
    uint32_t kind;  /* atomic */
    const void *key; /* atomic: a Deferred (WORK) or a DeferredLock (DPRIM); 0 free */
    int64_t since;  /* atomic */
    const void *pool, *fn, *reactor; /* atomic: WORK */
    uint32_t holds, limit;           /* atomic: DPRIM */
    const void *until[A_UNTIL];      /* atomic: DPRIM */
} anode;

#define A_TOMB ((const void *)1)
static anode anodes[DBG_ASYNC];
static uint32_t a_used, a_tombs; /* mu */

static inline uint32_t a_hash(const void *key)
{
    uintptr_t a = (uintptr_t)key;
    a ^= a >> 21;
    a *= 0x9e3779b97f4a7c15ULL;
    a ^= a >> 29;
    return (uint32_t)a & (DBG_ASYNC - 1);
}

static anode *a_find(const void *key)
{
    uint32_t i = a_hash(key);
    for (uint32_t n = 0; n < DBG_ASYNC; n++, i = (i + 1) & (DBG_ASYNC - 1)) {
        const void *k = __atomic_load_n(&anodes[i].key, __ATOMIC_ACQUIRE);
        if (k == key)
            return &anodes[i];
        if (!k)
            return NULL;
    }
    return NULL;
}

/* mu held: brackets a change of entry a (a seqlock's writer). */
static void a_open(anode *a)
{
    ST(a->seq, a->seq + 1);
    /* release fence: the odd seq before the field stores that follow. */
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static void a_close(anode *a)
{
    /* release: the fields before the even seq (pairs with a_copy's acquire). */
    __atomic_store_n(&a->seq, a->seq + 1, __ATOMIC_RELEASE);
}

/* Lock-free: a consistent copy of key's entry into *out; false if none. */
static bool a_copy(const void *key, anode *out)
{
    for (int tries = 0; tries < 4; tries++) {
        anode *a = a_find(key);
        if (!a)
            return false;
        uint32_t s0 = __atomic_load_n(&a->seq, __ATOMIC_ACQUIRE);
        out->kind = LD(a->kind);
        out->key = LD(a->key);
        out->since = LD(a->since);
        out->pool = LD(a->pool);
        out->fn = LD(a->fn);
        out->reactor = LD(a->reactor);
        out->holds = LD(a->holds);
        out->limit = LD(a->limit);
        for (int u = 0; u < A_UNTIL; u++)
            out->until[u] = LD(a->until[u]);
        /* acquire fence: the loads above before the second seq load. */
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (!(s0 & 1) && LD(a->seq) == s0 && out->key == key)
            return true;
    }
    return false;
}

static anode *a_insert(const void *key, uint32_t kind, int64_t since);

/* mu held. Puts every live entry back without tombstones. */
static void a_rebuild(void)
{
    static anode keep[DBG_ASYNC]; /* mu */
    uint32_t n = 0;
    for (uint32_t i = 0; i < DBG_ASYNC; i++) {
        anode *a = &anodes[i];
        if (a->key && a->key != A_TOMB)
            keep[n++] = *a;
        if (a->key) {
            a_open(a);
            __atomic_store_n(&a->key, NULL, __ATOMIC_RELEASE);
            a_close(a);
        }
    }
    a_used = a_tombs = 0;
    for (uint32_t k = 0; k < n; k++) {
        anode *a = a_insert(keep[k].key, keep[k].kind, keep[k].since);
        a_open(a);
        ST(a->pool, keep[k].pool);
        ST(a->fn, keep[k].fn);
        ST(a->reactor, keep[k].reactor);
        ST(a->holds, keep[k].holds);
        ST(a->limit, keep[k].limit);
        for (int u = 0; u < A_UNTIL; u++)
            ST(a->until[u], keep[k].until[u]);
        a_close(a);
    }
}

/* mu held. A new entry for key (not in the table); NULL when full. */
static anode *a_insert(const void *key, uint32_t kind, int64_t since)
{
    if (a_used + 1 > DBG_ASYNC - DBG_ASYNC / 8) {
        if (a_tombs < DBG_ASYNC / 4) {
            tw__dbg_full_locked(FULL_ASYNC);
            return NULL;
        }
        a_rebuild();
    }
    uint32_t i = a_hash(key);
    while (anodes[i].key && anodes[i].key != A_TOMB)
        i = (i + 1) & (DBG_ASYNC - 1);
    anode *a = &anodes[i];
    if (a->key == A_TOMB)
        a_tombs--;
    else
        a_used++;
    a_open(a);
    ST(a->kind, kind);
    ST(a->since, since);
    ST(a->pool, NULL);
    ST(a->fn, NULL);
    ST(a->reactor, NULL);
    ST(a->holds, 0);
    ST(a->limit, 0);
    for (int u = 0; u < A_UNTIL; u++)
        ST(a->until[u], NULL);
    /* release: a_find's reader sees the fields with the key. */
    __atomic_store_n(&a->key, key, __ATOMIC_RELEASE);
    a_close(a);
    return a;
}

/* mu held. key's entry of `kind`, made if needed (NULL when full). */
static anode *a_get(const void *key, uint32_t kind)
{
    anode *a = a_find(key);
    if (a && a->kind == kind)
        return a;
    return a ? NULL : a_insert(key, kind, tw_now_ns());
}

/* mu held. */
static void a_drop(anode *a)
{
    a_open(a);
    __atomic_store_n(&a->key, A_TOMB, __ATOMIC_RELEASE);
    a_close(a);
    a_tombs++;
}

void tw__dbg_work_submitted(const void *d, const void *p, const void *fn, const void *r)
{
    tw__dbg_lock();
    anode *a = a_get(d, A_WORK);
    if (a) {
        a_open(a);
        ST(a->pool, p);
        ST(a->fn, fn);
        ST(a->reactor, r);
        a_close(a);
    }
    tw__dbg_unlock();
}

void tw__dbg_work_done(const void *d)
{
    tw__dbg_lock();
    anode *a = a_find(d);
    if (a && a->kind == A_WORK)
        a_drop(a);
    tw__dbg_unlock();
}

void tw__dbg_work_run(const void *d, const void *fn)
{
    tw__dbg_thread *t = tw__dbg_me();
    if (!t)
        return;
    ST(t->work, d);
    if (fn) {
        uint32_t cls = tw__dbg_pseudo_class(fn, TW__DK_WORK);
        if (cls)
            tw__dbg_pseudo_acquire(t, fn, TW__DK_WORK, cls, "a thread function", 0,
                                   "tw_defer_to_thread", true);
    } else {
        for (uint32_t i = t->depth; i-- > 0;)
            if (t->held[i].kind == TW__DK_WORK) {
                tw__dbg_remove(t, i);
                break;
            }
    }
}

/* The class of DeferredLock / DeferredSemaphore p. */
static uint32_t dprim_class(const void *p, uint32_t limit)
{
    return tw__dbg_pseudo_class(p, limit > 1 ? TW__DK_DSEM : TW__DK_DLOCK);
}

/* mu held: one more hold of p. */
static void dprim_hold(const void *p, uint32_t limit)
{
    anode *a = a_get(p, A_DPRIM);
    if (a) {
        a_open(a);
        ST(a->limit, limit);
        ST(a->holds, a->holds + 1);
        a_close(a);
    }
}

void tw__dbg_dprim_acquire(const void *p, uint32_t limit, const void *d, bool granted)
{
    (void)d;
    tw__dbg_thread *loop = tw__dbg_me();
    tw__dbg_thread *t = loop ? LD(loop->serving) : NULL;
    if (t) {
        /* The loop runs a blocked thread's call: the acquire is that thread's,
         * ordered after what it holds, and if it has to wait, the thread
         * waits for p (the call returns the pending acquire, or a Deferred
         * after it). */
        uint32_t cls = dprim_class(p, limit);
        uint32_t dep = __atomic_load_n(&t->depth, __ATOMIC_ACQUIRE);
        if (cls && dep) {
            uint64_t key = tw__dbg_chain(t->held[dep - 1].chain, cls, false);
            if (!tw__dbg_chain_known(key))
                tw__dbg_validate(t, p, cls, "tw_blocking_call_from_thread", 0,
                                 limit > 1 ? "tw_dsem_acquire" : "tw_dlock_acquire", key);
        }
        if (!granted)
            ST(t->wprim, p);
    }
    if (granted) {
        tw__dbg_lock();
        dprim_hold(p, limit);
        tw__dbg_unlock();
    }
}

void tw__dbg_dprim_granted(const void *p, uint32_t limit)
{
    tw__dbg_lock();
    dprim_hold(p, limit);
    tw__dbg_unlock();
}

void tw__dbg_dprim_release(const void *p)
{
    tw__dbg_lock();
    anode *a = a_find(p);
    if (a && a->kind == A_DPRIM) {
        uint32_t h = a->holds;
        if (h <= 1) {
            a_drop(a);
        } else {
            a_open(a);
            ST(a->holds, h - 1);
            /* A hold by run ends when its Deferred fires, which first ends the
             * work it waited for (tw__dbg_work_done): forget those. */
            for (int u = 0; u < A_UNTIL; u++) {
                anode *w = a->until[u] ? a_find(a->until[u]) : NULL;
                if (a->until[u] && (!w || w->kind != A_WORK))
                    ST(a->until[u], NULL);
            }
            a_close(a);
        }
    }
    tw__dbg_unlock();
}

void tw__dbg_dprim_run(const void *p, uint32_t limit, bool begin, const void *until)
{
    tw__dbg_thread *t = tw__dbg_me();
    enum tw__dk kind = limit > 1 ? TW__DK_DSEM : TW__DK_DLOCK;
    const char *run = limit > 1 ? "tw_dsem_run" : "tw_dlock_run";
    if (!t)
        return;
    if (begin) {
        /* While run's function runs, the loop thread holds p. Its class is
         * made only once an order involves it (a blocked thread's acquire, a
         * hold across thread work): a program's many DeferredLocks do not
         * each take one. Until then the entry orders nothing (class 0). */
        tw__dbg_pseudo_acquire(t, p, kind, tw__dbg_pseudo_class_if(p, kind), run, 0, run, true);
        return;
    }
    tw__dbg_pseudo_release(t, p, kind);
    if (!until)
        return;
    /* p stays held until `until` fires. If that is thread work, p is held
     * across it: p -> its thread function in the graph. */
    const void *fn = NULL;
    tw__dbg_lock();
    anode *w = a_find(until), *a;
    if (w && w->kind == A_WORK && (a = a_get(p, A_DPRIM))) {
        fn = w->fn;
        a_open(a);
        for (int u = 0; u < A_UNTIL; u++)
            if (!a->until[u]) {
                ST(a->until[u], until);
                break;
            }
        a_close(a);
    }
    tw__dbg_unlock();
    if (!fn)
        return;
    uint32_t from = dprim_class(p, limit), to = tw__dbg_pseudo_class(fn, TW__DK_WORK);
    if (from && to)
        tw__dbg_add_order(from, to, run, 0, "tw_defer_to_thread", 0, LD(t->tid), run);
}

/* ---- waits -------------------------------------------------------------------------- */

int tw__dbg_wait_begin(enum tw__dk kind, const void *obj, uintptr_t extra, const char *file,
                       int line, const char *function)
{
    tw__dbg_thread *t = tw__dbg_me();
    if (!t)
        return 0;
    if (t->wdepth++ > 0)
        return 1; /* inside an outer wait, which says what the thread waits for */
    ST(t->wobj, obj);
    ST(t->wextra, extra);
    ST(t->wsub, NULL);
    ST(t->wprim, NULL);
    ST(t->wfile, file);
    ST(t->wline, line);
    ST(t->wfn, function);
    ST(t->wsince, 0); /* set at the first park */
    ST(t->wkind, (uint8_t)kind);
    /* release: a checker that sees the new seq sees the fields above. */
    __atomic_store_n(&t->wseq, t->wseq + 1, __ATOMIC_RELEASE);
    return 1;
}

void tw__dbg_wait_end(int token)
{
    tw__dbg_thread *t = tw__dbg_me_if();
    if (!token || !t || --t->wdepth > 0)
        return;
    ST(t->wkind, 0);
    ST(t->wsub, NULL);
    /* seq_cst, against the checker's seq_cst increment of readers and load of
     * wseq (pin in check): either it sees the wait over and reads nothing of
     * it, or we see it reading and wait, since the object waited on may go
     * (a stack frame returning) as soon as we return. */
    __atomic_store_n(&t->wseq, t->wseq + 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&t->readers, __ATOMIC_SEQ_CST))
        sched_yield();
}

int tw__dbg_bcall_begin(const void *r, const void *w)
{
    tw__dbg_thread *t = tw__dbg_me();
    if (!t)
        return 0;
    /* A wait for the loop is an acquire of the loop's pseudo-lock: what the
     * thread holds is ordered before it. */
    uint32_t cls = tw__dbg_pseudo_class(r, TW__DK_LOOP);
    if (cls && t->depth)
        tw__dbg_pseudo_acquire(t, r, TW__DK_LOOP, cls, "tw_blocking_call_from_thread", 0,
                               "tw_blocking_call_from_thread", false);
    return tw__dbg_wait_begin(TW__DK_BCALL, w, (uintptr_t)r, "tw_blocking_call_from_thread", 0,
                              "tw_blocking_call_from_thread");
}

/* The thread blocked in blocking call w, or NULL. */
static tw__dbg_thread *bcall_waiter(const void *w)
{
    uint32_t n = __atomic_load_n(&tw__dbg_threads_hwm, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < n; i++) {
        tw__dbg_thread *t = &tw__dbg_threads[i];
        if (LD(t->tid) && LD(t->wkind) == TW__DK_BCALL && LD(t->wobj) == w)
            return t;
    }
    return NULL;
}

void tw__dbg_bcall_serve(const void *w, bool serving)
{
    tw__dbg_thread *t = tw__dbg_me();
    if (t)
        ST(t->serving, serving ? bcall_waiter(w) : NULL);
}

void tw__dbg_bcall_waits(const void *w, const void *deferred)
{
    tw__dbg_thread *t = bcall_waiter(w);
    if (t)
        ST(t->wsub, deferred);
}

void tw__dbg_pool_thread(const void *p)
{
    tw__dbg_thread *t = tw__dbg_me();
    if (t) {
        ST(t->task, NULL);
        ST(t->pool, p);
    }
}

void tw__dbg_pool_task(const void *task)
{
    tw__dbg_thread *t = tw__dbg_me_if();
    if (t)
        ST(t->task, task);
}

int tw__dbg_pool_stop_begin(const void *p)
{
    return tw__dbg_wait_begin(TW__DK_POOL, p, 0, "tw_pool_stop", 0, "tw_pool_stop");
}

/* ---- the live check ----------------------------------------------------------------- */

typedef struct snap {
    tw__dbg_thread *t;
    uint32_t tid, seq;
    uint32_t kind;
    bool pinned; /* a reader of t's wait: its object stays while the check runs */
    const void *obj, *sub, *prim;
    uintptr_t extra;
    const char *file, *fn;
    int line;
    bool in;
} snap;

/* Scratch of the one check running (checking). */
static uint32_t checking; /* atomic flag */
static snap snaps[DBG_THREADS];
static int nsnap;
static int64_t check_now, min_age;
#define SEEN 64
static uint64_t seen[SEEN]; /* keys of the cycles reported */
static unsigned seen_next;

static int member(uint32_t tid)
{
    if (!tid)
        return -1;
    for (int i = 0; i < nsnap; i++)
        if (snaps[i].tid == tid)
            return snaps[i].in ? i : -1;
    return -1;
}

/* A description of the hop being evaluated, when asked for. */
typedef struct hop {
    char *buf;
    size_t n, len;
} hop;

static void say(hop *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(hop *h, const char *fmt, ...)
{
    va_list ap;
    if (!h || h->len >= h->n)
        return;
    va_start(ap, fmt);
    int k = vsnprintf(h->buf + h->len, h->n - h->len, fmt, ap);
    va_end(ap);
    if (k > 0)
        h->len += (size_t)k;
}

static void say_site(hop *h, const char *file, int line)
{
    if (h)
        tw__dbg_put_site(h->buf, h->n, &h->len, file, line);
}

static void say_class(hop *h, const void *obj)
{
    if (!h)
        return;
    uint32_t i = tw__dbg_slot_of(obj), c = 0;
    if (i != UINT32_MAX)
        c = tw__dbg_slot_class(i, obj);
    if (c) {
        char name[96];
        tw__dbg_class_name(c, name, sizeof name);
        say(h, " (%s)", name);
    }
}

/* The member holding `obj` through an untagged entry of its stack, or -1;
 * *any is set if some thread outside S holds it. */
static int holder_by_stack(const void *obj, int kind, bool *outside, const char **file,
                           int *line)
{
    uint32_t n = __atomic_load_n(&tw__dbg_threads_hwm, __ATOMIC_ACQUIRE);
    int found = -1;
    for (uint32_t i = 0; i < n; i++) {
        tw__dbg_thread *t = &tw__dbg_threads[i];
        uint32_t tid = LD(t->tid);
        if (!tid)
            continue;
        uint32_t d = __atomic_load_n(&t->depth, __ATOMIC_ACQUIRE);
        for (uint32_t k = 0; k < d && k < DBG_HELD; k++) {
            tw__dbg_held *h = &t->held[k];
            if (LD(h->obj) != obj || LD(h->kind) != kind || (LD(h->flags) & HF_GIVEN_UP))
                continue;
            int m = member(tid);
            if (m < 0) {
                *outside = true;
            } else if (found < 0) {
                found = m;
                *file = LD(h->file);
                *line = LD(h->line);
            }
        }
    }
    return found;
}

static int stuck_loop(const void *r, hop *h)
{
    uint32_t tid = tw__dbg_loop_thread(r);
    int m = member(tid);
    if (m >= 0)
        say(h, "the loop of reactor %p (thread %u)", r, (unsigned)tid);
    return m;
}

/* Known signallers all in S: the first of them; else -1. */
static int stuck_signalled(const void *obj, uint32_t kind, uint32_t stamp_want,
                           bool check_stamp, hop *h, const char *verb)
{
    uint32_t stamp, tid[2];
    if (!signallers(obj, kind, &stamp, tid) || (check_stamp && stamp != stamp_want))
        return -1;
    if (!check_stamp && on_a_stack(obj))
        return -1;
    int a = member(tid[0]), b = tid[1] ? member(tid[1]) : a;
    if (a < 0 || b < 0)
        return -1;
    if (tid[1])
        say(h, ", which only threads %u and %u %s, and they wait too", (unsigned)tid[0],
            (unsigned)tid[1], verb);
    else
        say(h, ", which only thread %u %s, and it waits too", (unsigned)tid[0], verb);
    return a;
}

static int stuck_deferred(const void *d, hop *h, int depth);

static int stuck_dprim(const void *p, hop *h, int depth)
{
    anode a;
    if (!a_copy(p, &a) || a.kind != A_DPRIM)
        return -1;
    uint32_t known = 0;
    const void *until[A_UNTIL];
    for (int u = 0; u < A_UNTIL; u++)
        if ((until[known] = a.until[u]))
            known++;
    if (!a.holds || known < a.holds)
        return -1; /* a hold of which nothing is known may end any time */
    int first = -1;
    for (uint32_t u = 0; u < known; u++) {
        int m = stuck_deferred(until[u], NULL, depth + 1);
        if (m < 0)
            return -1;
        if (first < 0)
            first = m;
    }
    say(h, "%s %p, which tw_%s_run holds until the Deferred of tw_defer_to_thread fires: ",
        a.limit > 1 ? "DeferredSemaphore" : "DeferredLock", p, a.limit > 1 ? "dsem" : "dlock");
    stuck_deferred(until[0], h, depth + 1);
    return first;
}

static int stuck_deferred(const void *d, hop *h, int depth)
{
    anode a;
    if (depth > 8 || !a_copy(d, &a) || a.kind != A_WORK)
        return -1;
    uint32_t n = __atomic_load_n(&tw__dbg_threads_hwm, __ATOMIC_ACQUIRE);
    /* Running: its thread. */
    for (uint32_t i = 0; i < n; i++) {
        tw__dbg_thread *t = &tw__dbg_threads[i];
        uint32_t tid = LD(t->tid);
        if (tid && LD(t->work) == d) {
            int m = member(tid);
            if (m >= 0)
                say(h, "thread work (function %p) that thread %u runs", a.fn, (unsigned)tid);
            return m >= 0 ? m : stuck_loop(a.reactor, NULL) >= 0 ? stuck_loop(a.reactor, h) : -1;
        }
    }
    /* Queued: a thread of its pool must become free, and none can. */
    if (check_now - a.since < min_age)
        return -1;
    int first = -1, busy = 0;
    for (uint32_t i = 0; i < n; i++) {
        tw__dbg_thread *t = &tw__dbg_threads[i];
        uint32_t tid = LD(t->tid);
        if (!tid || LD(t->pool) != a.pool)
            continue;
        int m = member(tid);
        if (!LD(t->task) || m < 0) {
            first = -2; /* an idle or running thread of the pool takes it */
            break;
        }
        busy++;
        if (first < 0)
            first = m;
    }
    if (first >= 0) {
        say(h, "thread work (function %p) queued in pool %p behind all %d of its threads, "
               "busy and waiting in this cycle",
            a.fn, a.pool, busy);
        return first;
    }
    return stuck_loop(a.reactor, NULL) >= 0 ? stuck_loop(a.reactor, h) : -1;
}

/* The member that keeps member i waiting, or -1; describes the hop into h. */
static int stuck(int i, hop *h)
{
    snap *s = &snaps[i];
    const void *obj = s->obj;
    int m = -1;
    if (h) {
        say(h, "thread %u waits in %s", (unsigned)s->tid, s->fn ? s->fn : "a twine call");
        if (s->line > 0) {
            say(h, " (");
            say_site(h, s->file, s->line);
            say(h, ")");
        }
        say(h, " for ");
    }
    switch (s->kind) {
    case TW__DK_LOCK: {
        if (!LD(((const tw_lock *)obj)->word))
            return -1;
        uint32_t slot = tw__dbg_slot_of(obj), o = slot != UINT32_MAX ? LD(*tw__dbg_owner(slot)) : 0;
        const char *file = NULL;
        int line = 0;
        if (o) {
            m = member(o);
            tw__dbg_thread *ot = tw__dbg_thread_of(o);
            for (uint32_t k = 0; ot && k < LD(ot->depth) && k < DBG_HELD; k++)
                if (LD(ot->held[k].obj) == obj) {
                    file = LD(ot->held[k].file);
                    line = LD(ot->held[k].line);
                }
        } else {
            bool outside = false;
            m = holder_by_stack(obj, TW__DK_LOCK, &outside, &file, &line);
            if (outside)
                m = -1;
        }
        if (m >= 0 && h) {
            say(h, "Lock %p", obj);
            say_class(h, obj);
            say(h, ", held by thread %u", (unsigned)snaps[m].tid);
            if (file) {
                say(h, " (taken at ");
                say_site(h, file, line);
                say(h, ")");
            }
        }
        return m;
    }
    case TW__DK_RLOCK: {
        uint32_t o = LD(((const tw_rlock *)obj)->owner);
        m = member(o);
        if (m >= 0 && h) {
            say(h, "RLock %p", obj);
            say_class(h, obj);
            say(h, ", owned by thread %u", (unsigned)o);
        }
        return m;
    }
    case TW__DK_SEM: {
        if (LD(((const tw_sem *)obj)->value) > 0)
            return -1;
        uint32_t slot = tw__dbg_slot_of(obj), c = 0;
        if (slot != UINT32_MAX)
            c = tw__dbg_slot_class(slot, obj);
        if (!(tw__dbg_class_flags(c) & CF_SIGNAL)) {
            bool outside = false;
            const char *file = NULL;
            int line = 0;
            m = holder_by_stack(obj, TW__DK_SEM, &outside, &file, &line);
            if (outside)
                return -1;
            if (m >= 0) {
                if (h) {
                    say(h, "Semaphore %p", obj);
                    say_class(h, obj);
                    say(h, ", held by thread %u (taken at ", (unsigned)snaps[m].tid);
                    say_site(h, file, line);
                    say(h, ")");
                }
                return m;
            }
        }
        say(h, "Semaphore %p", obj);
        return stuck_signalled(obj, TW__DK_SEM, 0, false, h, "released");
    }
    case TW__DK_EVENT: {
        uint32_t w = LD(((const tw_event *)obj)->word);
        if ((w & 1u) || (w >> 2) != (uint32_t)s->extra)
            return -1;
        say(h, "Event %p", obj);
        return stuck_signalled(obj, TW__DK_EVENT, (uint32_t)s->extra, true, h, "set");
    }
    case TW__DK_COND: {
        const uint32_t *state = (const uint32_t *)s->extra;
        if (state && (LD(*state) & 3u) != 0)
            return -1; /* notified: it only waits for the lock */
        say(h, "Condition %p", obj);
        return stuck_signalled(obj, TW__DK_COND, 0, false, h, "notified");
    }
    case TW__DK_BCALL:
        /* The call has not run yet (or runs now): the loop. It returned a
         * Deferred: thread work's, or one after a DeferredLock it queued for. */
        if (!s->sub)
            return stuck_loop((const void *)s->extra, h);
        if (s->prim) {
            say(h, "a Deferred waiting for ");
            return stuck_dprim(s->prim, h, 0);
        }
        return stuck_deferred(s->sub, h, 0);
    case TW__DK_POOL: {
        uint32_t n = __atomic_load_n(&tw__dbg_threads_hwm, __ATOMIC_ACQUIRE);
        for (uint32_t k = 0; k < n; k++) {
            tw__dbg_thread *t = &tw__dbg_threads[k];
            uint32_t tid = LD(t->tid);
            if (tid && LD(t->pool) == obj && LD(t->task) && (m = member(tid)) >= 0) {
                say(h, "pool %p, whose thread %u is busy", obj, (unsigned)tid);
                return m;
            }
        }
        return -1;
    }
    default:
        return -1;
    }
}

static uint64_t cycle_key(const int *cyc, int n)
{
    uint64_t k = 0;
    for (int i = 0; i < n; i++) {
        uint64_t x = ((uint64_t)snaps[cyc[i]].tid << 32 | snaps[cyc[i]].seq) * 0x9e3779b97f4a7c15ULL;
        x ^= x >> 31;
        k += x; /* a sum: the same set whatever member is first */
    }
    return k | 1;
}

/* Reports the self-wait: a Lock the thread took itself. */
static void report_self(const snap *s)
{
    char msg[400];
    const char *file = NULL;
    int line = 0;
    tw__dbg_thread *t = s->t;
    for (uint32_t k = 0; k < t->depth; k++)
        if (LD(t->held[k].obj) == s->obj) {
            file = t->held[k].file;
            line = t->held[k].line;
        }
    size_t len = (size_t)snprintf(msg, sizeof msg,
                                  "probable self-deadlock: thread %u waits for Lock %p, which "
                                  "it acquired itself",
                                  (unsigned)s->tid, s->obj);
    if (file && len < sizeof msg) {
        tw__dbg_put(msg, sizeof msg, &len, " at ");
        tw__dbg_put_site(msg, sizeof msg, &len, file, line);
    }
    tw__dbg_put(msg, sizeof msg, &len, " and has not released (a Lock is not reentrant: use "
                                       "tw_rlock); it keeps waiting");
    tw__dbg_report(TW_EDEADLK, s->fn ? s->fn : "tw_lock_acquire", msg);
}

static void check(tw__dbg_thread *me)
{
    uint32_t zero = 0;
    if (!__atomic_compare_exchange_n(&checking, &zero, 1, false, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED))
        return; /* another thread checks; ours comes at the next wake-up */
    char msg[2048];
    bool report = false;
    int self = -1;
    check_now = tw_now_ns();
    min_age = tw__dbg_threshold() / 2;

    /* Everyone waiting (long enough), except idle pool threads. */
    nsnap = 0;
    uint32_t n = __atomic_load_n(&tw__dbg_threads_hwm, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < n; i++) {
        tw__dbg_thread *t = &tw__dbg_threads[i];
        snap *s = &snaps[nsnap];
        s->tid = LD(t->tid);
        /* acquire: the wait's fields, stored before its seq. */
        s->seq = __atomic_load_n(&t->wseq, __ATOMIC_ACQUIRE);
        s->kind = LD(t->wkind);
        if (!s->tid || !s->kind)
            continue;
        int64_t since = LD(t->wsince);
        if (t != me && (!since || check_now - since < min_age))
            continue;
        if (LD(t->pool) && !LD(t->task))
            continue; /* an idle pool thread waits for work, not for anyone */
        /* Pin the wait: read its object only while it lasts (wait_end). */
        if (t != me) {
            __atomic_fetch_add(&t->readers, 1, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(&t->wseq, __ATOMIC_SEQ_CST) != s->seq) {
                __atomic_fetch_sub(&t->readers, 1, __ATOMIC_RELEASE);
                continue;
            }
        }
        s->pinned = t != me;
        s->t = t;
        s->obj = LD(t->wobj);
        s->sub = LD(t->wsub);
        s->prim = LD(t->wprim);
        s->extra = LD(t->wextra);
        s->file = LD(t->wfile);
        s->line = LD(t->wline);
        s->fn = LD(t->wfn);
        s->in = true;
        if (t == me)
            self = nsnap;
        nsnap++;
    }
    /* The greatest set whose members all wait for members. */
    for (bool changed = true; changed && self >= 0;) {
        changed = false;
        for (int i = 0; i < nsnap; i++)
            if (snaps[i].in && stuck(i, NULL) < 0) {
                snaps[i].in = false;
                changed = true;
            }
    }
    if (self >= 0 && snaps[self].in) {
        /* Follow the blockers from this thread to the cycle. */
        static int order[DBG_THREADS], pos[DBG_THREADS]; /* checking's */
        int len = 0, at = self;
        for (int i = 0; i < nsnap; i++)
            pos[i] = -1;
        while (at >= 0 && pos[at] < 0) {
            pos[at] = len;
            order[len++] = at;
            at = stuck(at, NULL);
        }
        if (at >= 0) {
            int *cyc = &order[pos[at]], nc = len - pos[at];
            bool same = true, quiet = false;
            for (int i = 0; i < nc && same; i++) {
                snap *s = &snaps[cyc[i]];
                same = __atomic_load_n(&s->t->wseq, __ATOMIC_ACQUIRE) == s->seq &&
                       LD(s->t->tid) == s->tid;
                uint32_t slot = tw__dbg_slot_of(s->obj);
                if (slot != UINT32_MAX && tw__dbg_class_quiet(tw__dbg_slot_class(slot, s->obj)))
                    quiet = true;
            }
            uint64_t key = cycle_key(cyc, nc);
            for (unsigned i = 0; i < SEEN && same; i++)
                if (seen[i] == key)
                    same = false;
            if (same && !quiet) {
                seen[seen_next++ % SEEN] = key;
                if (nc == 1 && snaps[cyc[0]].kind == TW__DK_LOCK && cyc[0] == self) {
                    report_self(&snaps[self]);
                } else {
                    hop h = {msg, sizeof msg, 0};
                    say(&h, "deadlock: ");
                    for (int i = 0; i < nc; i++) {
                        if (i)
                            say(&h, "; ");
                        stuck(cyc[i], &h);
                    }
                    say(&h, "; none of them can go on");
                    report = true;
                }
            }
        }
    }
    const char *fn = self >= 0 && snaps[self].fn ? snaps[self].fn : "twine";
    for (int i = 0; i < nsnap; i++)
        if (snaps[i].pinned)
            __atomic_fetch_sub(&snaps[i].t->readers, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&checking, 0, __ATOMIC_RELEASE);
    if (report)
        tw__dbg_report(TW_EDEADLK, fn, msg);
}

int tw__dbg_park(uint32_t *addr, uint32_t expect, tw_deadline deadline)
{
    tw__dbg_thread *t = tw__dbg_me_if();
    if (!t || !t->wdepth)
        return tw__wait(addr, expect, deadline);
    int64_t now = tw_now_ns();
    int64_t since = LD(t->wsince);
    if (!since) {
        ST(t->wsince, now);
        since = now;
        t->wnext = tw__add_sat(now, tw__dbg_threshold());
    }
    if (t->wnext >= deadline)
        return tw__wait(addr, expect, deadline);
    if (now < t->wnext) {
        int rc = tw__wait(addr, expect, t->wnext);
        if (rc != TW_ETIMEDOUT)
            return rc;
        now = tw_now_ns();
        if (now < t->wnext)
            return 0;
    }
    check(t);
    /* Again after as long as it has waited so far: a long wait is looked at
     * a few times, not every threshold. */
    int64_t again = now - since;
    if (again < tw__dbg_threshold())
        again = tw__dbg_threshold();
    if (again < 1000000)
        again = 1000000;
    t->wnext = tw__add_sat(now, again);
    return 0;
}
