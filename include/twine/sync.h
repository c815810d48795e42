/*
 * twine/sync.h — blocking primitives for threads: Python's threading module in C.
 *
 * Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition and Barrier, with
 * Python's semantics, plus guards that release a lock on every way out of a
 * block. Every object here is allocated by the caller, is valid when all-zero
 * (or from its TW_*_INIT initializer), never allocates, and may be used from
 * any thread. None needs a destroy call: an object nobody waits on can simply
 * be forgotten.
 *
 *     static tw_lock lock = TW_LOCK_INIT;
 *     static long counter;
 *
 *     void bump(void)
 *     {
 *         TW_WITH(&lock) {              // released on every exit from the block:
 *             if (counter < 0)          // return, break, goto or falling off
 *                 return;
 *             counter++;
 *         }
 *     }
 *
 *     // producer/consumer over a Condition that uses the lock above
 *     static tw_cond ready = TW_COND_INIT_LOCK(&lock);
 *     TW_WITH(&ready) {
 *         while (queue_empty())
 *             tw_cond_wait(&ready);     // releases the lock, sleeps, re-takes it
 *         take_item();
 *     }
 *
 * Waiting. Every blocking operation has three forms: the plain call blocks,
 * *_try_* never blocks (TW_EBUSY when it would have), and *_timeout takes a
 * relative timeout in seconds (negative = forever, 0 = do not block, NaN =
 * TW_EINVAL) and returns TW_ETIMEDOUT when it expires. The timeout is measured
 * on the monotonic clock as an absolute deadline: a timeout never returns
 * before the time asked, and spurious wake-ups never stretch it.
 *
 * Errors. Releasing what is not held is TW_EPERM and changes nothing; a NULL
 * object is TW_EINVAL. The only operation that can wait and then fail for
 * another reason is a Barrier wait (TW_EBROKEN).
 *
 * Cost. The uncontended Lock acquire and release are one atomic instruction
 * each, inlined here; a release only enters the kernel when a thread is
 * parked. docs/sync.md describes each state word and its memory orders.
 *
 * Deadlocks. In code compiled with TW_DEBUG defined empty or to a non-zero
 * number (undefined or 0: off; a word such as ON counts as 0), the calls of
 * Lock, RLock, Semaphore and a Condition's lock go out of line with their
 * file and line, and twine watches for deadlocks (docs/deadlocks.md). Every
 * object belongs to a class: all the Locks initialised at one line, or a
 * class you name. An acquire made holding others records the order of their
 * classes, and the first one that closes a cycle is reported through the
 * diagnostic hook (TW_DIAG_WARNING, TW_EDEADLK) with the file:line of every
 * acquire involved, on the first run that takes both orders, before any
 * thread waits:
 *
 *     #define TW_DEBUG 1          // before including twine
 *     #include <twine.h>
 *
 *     // thread 1                        // later, thread 2
 *     TW_WITH(&accounts)                 TW_WITH(&audit_log)
 *         TW_WITH(&audit_log) log();         TW_WITH(&accounts) check();
 *     // -> "lock order inversion: thread 2 took ... at f.c:12 holding ...
 *     //     (taken at f.c:11); thread 1 took ... at f.c:4 holding ..."
 *
 * Two objects of one class nested on purpose take a subclass
 * (tw_lock_acquire_nested); orders can be declared (tw_lock_class_order) and
 * classes silenced (tw_lock_class_quiet). A thread that has waited longer than
 * the threshold (1 s, tw_deadlock_set_threshold) on a twine primitive reports
 * the threads that wait for each other, itself included (seed 003's Lock
 * taken twice is the one-thread case) — and, in a library built with
 * TW_DEBUG, the loop, pools, thread work and DeferredLocks are part of that
 * graph; a thread that exits holding a Lock, or a loop callback that returns
 * holding one, is reported too (seed 002). Reports never stop the program.
 * Without TW_DEBUG none of this runs and the inline paths are unchanged.
 */
#ifndef TWINE_SYNC_H
#define TWINE_SYNC_H

#include "base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== Lock ================================================================
 * A mutual-exclusion lock in one 32-bit word. Not recursive: a thread that
 * acquires a Lock it already holds waits forever (use tw_rlock), unless
 * another thread releases it; TW_DEBUG code reports such a wait (above).
 * Like Python's Lock, any thread may release it, not only the one that took it.
 * Unfair: a newcomer may take a just-released lock before a parked waiter. */
typedef struct tw_lock {
    uint32_t word; /* 0 = unlocked, 1 = locked, 2 = locked and threads may be parked */
} tw_lock;

#define TW_LOCK_INIT {0}

TW_API int tw__lock_acquire_slow(tw_lock *l, tw_deadline deadline);
TW_API int tw__lock_release_slow(tw_lock *l, uint32_t old);

/* The untracked paths: tw_lock_acquire, try_acquire and release outside
 * TW_DEBUG code. acquire: the CAS pairs with the release exchange in
 * tw__lock_release_plain; release: exchanging 0 into an unlocked word is a
 * no-op, so the TW_EPERM case leaves it untouched. */
static inline int tw__lock_acquire_plain(tw_lock *l)
{
    uint32_t unlocked = 0;
    if (l && __atomic_compare_exchange_n(&l->word, &unlocked, 1, false, __ATOMIC_ACQUIRE,
                                         __ATOMIC_RELAXED))
        return 0;
    return tw__lock_acquire_slow(l, TW_DEADLINE_NEVER);
}

static inline int tw__lock_try_acquire_plain(tw_lock *l)
{
    uint32_t unlocked = 0;
    if (!l)
        return TW_EINVAL;
    return __atomic_compare_exchange_n(&l->word, &unlocked, 1, false, __ATOMIC_ACQUIRE,
                                       __ATOMIC_RELAXED)
               ? 0
               : TW_EBUSY;
}

static inline int tw__lock_release_plain(tw_lock *l)
{
    uint32_t old;
    if (!l)
        return TW_EINVAL;
    old = __atomic_exchange_n(&l->word, 0, __ATOMIC_RELEASE);
    if (old == 1)
        return 0;
    return tw__lock_release_slow(l, old);
}

/* The tracking paths, which code compiled with TW_DEBUG on (see the top of
 * this header) calls instead, with the calling file and line. They keep the
 * calling thread's held stack, put each object in its class and check the
 * order of every acquire made holding others (docs/deadlocks.md); they exist
 * in every build of the library. An entry must be forgotten by the hold's
 * release, or it would outlive the hold, so the library tracks only where
 * the release tracks too:
 *   - tw_cond_acquire*, the exported tw_lock_acquire_timeout and the other
 *     exported acquires that return holding their caller's object use the
 *     untracked paths (code compiled with TW_DEBUG gets macros for tracking
 *     ones), and so do Condition waits;
 *   - tw_cond_release always forgets (tw__lock_release_tracked);
 *   - tw_lock_run, TW_WITH and the lock worker take and give back the Lock
 *     themselves, tracked when the library is built with -DTW_DEBUG=ON (and
 *     TW_WITH in code compiled with TW_DEBUG whatever the library).
 * docs/sync.md has the details. */
TW_API void tw__lock_init_tracked(tw_lock *l, const char *file, int line);
TW_API int tw__lock_acquire_tracked(tw_lock *l, unsigned subclass, const char *file, int line);
TW_API int tw__lock_try_acquire_tracked(tw_lock *l, const char *file, int line);
TW_API int tw__lock_acquire_timeout_tracked(tw_lock *l, double timeout, const char *file,
                                            int line);
TW_API int tw__lock_release_tracked(tw_lock *l);
TW_API int tw__lock_run_tracked(tw_lock *l, int (*fn)(void *arg), void *arg, const char *file,
                                int line);
#if defined(TW_DEBUG) && ((TW_DEBUG + 0) != 0 || (1 - TW_DEBUG - 1) == 2)
#define TW__LOCK_DBG 1
#else
#define TW__LOCK_DBG 0
#endif

/* Subclasses 1 .. TW_LOCK_SUBCLASSES - 1 (the _nested calls): two objects of
 * one class nested on purpose. */
#define TW_LOCK_SUBCLASSES 8

static inline void tw_lock_init(tw_lock *l)
{
    if (l)
        __atomic_store_n(&l->word, 0, __ATOMIC_RELAXED);
}

/* Blocks until the lock is held. 0, or TW_EINVAL for NULL. */
static inline int tw_lock_acquire(tw_lock *l)
{
    return tw__lock_acquire_plain(l);
}

/* As tw_lock_acquire, for a Lock of a class the thread already holds one of
 * (the other taken first): in code compiled with TW_DEBUG, l counts as
 * subclass `subclass` (1 .. TW_LOCK_SUBCLASSES - 1) of its class, a class of
 * its own for the order graph (docs/deadlocks.md). */
static inline int tw_lock_acquire_nested(tw_lock *l, unsigned subclass)
{
    (void)subclass;
    return tw__lock_acquire_plain(l);
}

/* Takes the lock if it is free: 0, or TW_EBUSY. Never blocks. */
static inline int tw_lock_try_acquire(tw_lock *l)
{
    return tw__lock_try_acquire_plain(l);
}

/* 0, TW_ETIMEDOUT, or TW_EINVAL (NULL lock, NaN timeout). */
TW_API int tw_lock_acquire_timeout(tw_lock *l, double timeout);

/* 0; TW_EPERM if the lock was not held (nothing changes); TW_EINVAL for NULL. */
static inline int tw_lock_release(tw_lock *l)
{
    return tw__lock_release_plain(l);
}

/* Whether some thread holds the lock (a snapshot). */
static inline bool tw_lock_locked(const tw_lock *l)
{
    return l && __atomic_load_n(&l->word, __ATOMIC_RELAXED) != 0;
}

/* Runs fn(arg) holding the lock and releases it however fn returns.
 * Returns fn's result, or TW_EINVAL without calling fn (NULL lock or fn). */
TW_API int tw_lock_run(tw_lock *l, int (*fn)(void *arg), void *arg);

/* In code compiled with TW_DEBUG the calls above are these macros. The name
 * in parentheses, or its address, still gives the untracked function. */
#if TW__LOCK_DBG
#define tw_lock_init(l) tw__lock_init_tracked((l), __FILE__, __LINE__)
#define tw_lock_acquire(l) tw__lock_acquire_tracked((l), 0, __FILE__, __LINE__)
#define tw_lock_acquire_nested(l, sub) tw__lock_acquire_tracked((l), (sub), __FILE__, __LINE__)
#define tw_lock_try_acquire(l) tw__lock_try_acquire_tracked((l), __FILE__, __LINE__)
#define tw_lock_acquire_timeout(l, timeout)                                                \
    tw__lock_acquire_timeout_tracked((l), (timeout), __FILE__, __LINE__)
#define tw_lock_release(l) tw__lock_release_tracked(l)
#define tw_lock_run(l, fn, arg) tw__lock_run_tracked((l), (fn), (arg), __FILE__, __LINE__)
#endif

/* ==== RLock ===============================================================
 * A reentrant lock: the owning thread may acquire it again, and must release
 * it as many times. Only the owner may release (else TW_EPERM). 12 bytes. */
typedef struct tw_rlock {
    tw_lock lock;   /* held while owned */
    uint32_t owner; /* twine thread id of the owner, 0 when free */
    uint32_t count; /* recursion depth; read and written by the owner only */
} tw_rlock;

#define TW_RLOCK_INIT {TW_LOCK_INIT, 0, 0}

TW_API int tw__rlock_acquire_slow(tw_rlock *r, uint32_t me);

TW_API void tw_rlock_init(tw_rlock *r);

/* Blocks until the calling thread owns r, one level deeper. 0; TW_EOVERFLOW
 * at depth UINT32_MAX; TW_EINVAL for NULL. */
static inline int tw_rlock_acquire(tw_rlock *r)
{
    uint32_t me, unlocked = 0;
    if (!r)
        return TW_EINVAL;
    me = tw__self();
    /* relaxed: only this thread can have stored its own id there. */
    if (__atomic_load_n(&r->owner, __ATOMIC_RELAXED) == me) {
        if (r->count == UINT32_MAX)
            return TW_EOVERFLOW;
        r->count++;
        return 0;
    }
    /* acquire: pairs with the release exchange in tw__lock_release_plain. */
    if (__atomic_compare_exchange_n(&r->lock.word, &unlocked, 1, false, __ATOMIC_ACQUIRE,
                                    __ATOMIC_RELAXED)) {
        __atomic_store_n(&r->owner, me, __ATOMIC_RELAXED);
        r->count = 1;
        return 0;
    }
    return tw__rlock_acquire_slow(r, me);
}

TW_API int tw_rlock_try_acquire(tw_rlock *r);
TW_API int tw_rlock_acquire_timeout(tw_rlock *r, double timeout);

/* 0, or TW_EPERM if the calling thread does not own it (nothing changes). */
static inline int tw_rlock_release(tw_rlock *r)
{
    if (!r)
        return TW_EINVAL;
    if (__atomic_load_n(&r->owner, __ATOMIC_RELAXED) != tw__self())
        return TW_EPERM;
    if (--r->count != 0)
        return 0;
    __atomic_store_n(&r->owner, 0, __ATOMIC_RELAXED);
    return tw__lock_release_plain(&r->lock); /* an RLock's Lock is never tracked */
}
/* Whether the calling thread owns it. */
TW_API bool tw_rlock_is_owned(const tw_rlock *r);
/* The calling thread's recursion depth: 0 unless it owns the lock. */
TW_API uint32_t tw_rlock_count(const tw_rlock *r);
/* Whether any thread owns it (a snapshot). */
TW_API bool tw_rlock_locked(const tw_rlock *r);
TW_API int tw_rlock_run(tw_rlock *r, int (*fn)(void *arg), void *arg);
/* As tw_rlock_acquire; in TW_DEBUG code r counts as subclass `subclass` of
 * its class (see tw_lock_acquire_nested). A re-entry is a re-entry. */
static inline int tw_rlock_acquire_nested(tw_rlock *r, unsigned subclass)
{
    (void)subclass;
    return tw_rlock_acquire(r);
}

TW_API void tw__rlock_init_tracked(tw_rlock *r, const char *file, int line);
TW_API int tw__rlock_acquire_tracked(tw_rlock *r, unsigned subclass, const char *file,
                                     int line);
TW_API int tw__rlock_try_acquire_tracked(tw_rlock *r, const char *file, int line);
TW_API int tw__rlock_acquire_timeout_tracked(tw_rlock *r, double timeout, const char *file,
                                             int line);
TW_API int tw__rlock_release_tracked(tw_rlock *r);
TW_API int tw__rlock_run_tracked(tw_rlock *r, int (*fn)(void *arg), void *arg,
                                 const char *file, int line);
#if TW__LOCK_DBG
#define tw_rlock_init(r) tw__rlock_init_tracked((r), __FILE__, __LINE__)
#define tw_rlock_acquire(r) tw__rlock_acquire_tracked((r), 0, __FILE__, __LINE__)
#define tw_rlock_acquire_nested(r, sub) tw__rlock_acquire_tracked((r), (sub), __FILE__, __LINE__)
#define tw_rlock_try_acquire(r) tw__rlock_try_acquire_tracked((r), __FILE__, __LINE__)
#define tw_rlock_acquire_timeout(r, timeout)                                               \
    tw__rlock_acquire_timeout_tracked((r), (timeout), __FILE__, __LINE__)
#define tw_rlock_release(r) tw__rlock_release_tracked(r)
#define tw_rlock_run(r, fn, arg) tw__rlock_run_tracked((r), (fn), (arg), __FILE__, __LINE__)
#endif

/* ==== Semaphore ===========================================================
 * A counter of available tokens. acquire takes one (waiting while there are
 * none); release(n) gives n back and wakes up to n waiters. The value is at
 * most TW_SEM_VALUE_MAX. A zeroed semaphore has value 0. 8 bytes. */
typedef struct tw_sem {
    uint32_t value;   /* available tokens; the futex word waiters sleep on */
    uint32_t waiters; /* threads inside the slow path; release wakes only if > 0 */
} tw_sem;

#define TW_SEM_VALUE_MAX 0x7fffffffu
#define TW_SEM_INIT(v) {(v), 0}

TW_API int tw__sem_acquire_slow(tw_sem *s, tw_deadline deadline);

/* 0, or TW_EINVAL (NULL, value > TW_SEM_VALUE_MAX). Only on an unused semaphore. */
TW_API int tw_sem_init(tw_sem *s, uint32_t value);

static inline int tw_sem_try_acquire(tw_sem *s)
{
    uint32_t v;
    if (!s)
        return TW_EINVAL;
    v = __atomic_load_n(&s->value, __ATOMIC_RELAXED);
    while (v > 0) {
        /* acquire: pairs with the release add in tw_sem_release. */
        if (__atomic_compare_exchange_n(&s->value, &v, v - 1, true, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED))
            return 0;
    }
    return TW_EBUSY;
}

static inline int tw_sem_acquire(tw_sem *s)
{
    if (tw_sem_try_acquire(s) == 0)
        return 0;
    return tw__sem_acquire_slow(s, TW_DEADLINE_NEVER);
}

TW_API int tw_sem_acquire_timeout(tw_sem *s, double timeout);
/* Adds n tokens (n >= 1, else TW_EINVAL) and wakes up to n waiters.
 * TW_EOVERFLOW if the value would pass TW_SEM_VALUE_MAX; nothing changes. */
TW_API int tw_sem_release(tw_sem *s, uint32_t n);
TW_API uint32_t tw_sem_value(const tw_sem *s);
TW_API int tw_sem_run(tw_sem *s, int (*fn)(void *arg), void *arg);

/* ==== BoundedSemaphore ====================================================
 * A semaphore that refuses to be released above its initial value: such a
 * release returns TW_EOVERFLOW and leaves the value as it was — the bug of
 * releasing more often than acquiring is caught where it happens. */
typedef struct tw_bsem {
    tw_sem sem;
    uint32_t limit; /* the initial value; releases never raise the value above it */
} tw_bsem;

#define TW_BSEM_INIT(v) {TW_SEM_INIT(v), (v)}

TW_API int tw_bsem_init(tw_bsem *b, uint32_t value);
static inline int tw_bsem_acquire(tw_bsem *b) { return tw_sem_acquire(b ? &b->sem : NULL); }
static inline int tw_bsem_try_acquire(tw_bsem *b) { return tw_sem_try_acquire(b ? &b->sem : NULL); }
static inline tw_sem *tw__bsem_sem(tw_bsem *b) { return b ? &b->sem : NULL; }
TW_API int tw_bsem_acquire_timeout(tw_bsem *b, double timeout);
/* TW_EOVERFLOW if value + n would exceed the initial value (nothing changes). */
TW_API int tw_bsem_release(tw_bsem *b, uint32_t n);
TW_API uint32_t tw_bsem_value(const tw_bsem *b);
TW_API uint32_t tw_bsem_limit(const tw_bsem *b);
TW_API int tw_bsem_run(tw_bsem *b, int (*fn)(void *arg), void *arg);

/* As tw_sem_acquire; in TW_DEBUG code s counts as subclass `subclass` of
 * its class (see tw_lock_acquire_nested). */
static inline int tw_sem_acquire_nested(tw_sem *s, unsigned subclass)
{
    (void)subclass;
    return tw_sem_acquire(s);
}

/* A Semaphore is in the order graph while it is used as a lock: a thread
 * that releases one it did not take makes its class a signal, and then it
 * is only in the live check (docs/deadlocks.md). */
TW_API int tw__sem_init_tracked(tw_sem *s, uint32_t value, const char *file, int line);
TW_API int tw__sem_acquire_tracked(tw_sem *s, unsigned subclass, const char *file, int line);
TW_API int tw__sem_try_acquire_tracked(tw_sem *s, const char *file, int line);
TW_API int tw__sem_acquire_timeout_tracked(tw_sem *s, double timeout, const char *file,
                                           int line);
TW_API int tw__sem_release_tracked(tw_sem *s, uint32_t n);
TW_API int tw__sem_run_tracked(tw_sem *s, int (*fn)(void *arg), void *arg, const char *file,
                               int line);
TW_API int tw__bsem_init_tracked(tw_bsem *b, uint32_t value, const char *file, int line);
TW_API int tw__bsem_release_tracked(tw_bsem *b, uint32_t n);
TW_API int tw__bsem_run_tracked(tw_bsem *b, int (*fn)(void *arg), void *arg, const char *file,
                                int line);
#if TW__LOCK_DBG
#define tw_sem_init(s, v) tw__sem_init_tracked((s), (v), __FILE__, __LINE__)
#define tw_sem_acquire(s) tw__sem_acquire_tracked((s), 0, __FILE__, __LINE__)
#define tw_sem_acquire_nested(s, sub) tw__sem_acquire_tracked((s), (sub), __FILE__, __LINE__)
#define tw_sem_try_acquire(s) tw__sem_try_acquire_tracked((s), __FILE__, __LINE__)
#define tw_sem_acquire_timeout(s, timeout)                                                  \
    tw__sem_acquire_timeout_tracked((s), (timeout), __FILE__, __LINE__)
#define tw_sem_release(s, n) tw__sem_release_tracked((s), (n))
#define tw_sem_run(s, fn, arg) tw__sem_run_tracked((s), (fn), (arg), __FILE__, __LINE__)
#define tw_bsem_init(b, v) tw__bsem_init_tracked((b), (v), __FILE__, __LINE__)
#define tw_bsem_acquire(b) tw__sem_acquire_tracked(tw__bsem_sem(b), 0, __FILE__, __LINE__)
#define tw_bsem_try_acquire(b) tw__sem_try_acquire_tracked(tw__bsem_sem(b), __FILE__, __LINE__)
#define tw_bsem_acquire_timeout(b, timeout)                                                 \
    tw__sem_acquire_timeout_tracked(tw__bsem_sem(b), (timeout), __FILE__, __LINE__)
#define tw_bsem_release(b, n) tw__bsem_release_tracked((b), (n))
#define tw_bsem_run(b, fn, arg) tw__bsem_run_tracked((b), (fn), (arg), __FILE__, __LINE__)
#endif

/* ==== Event ===============================================================
 * A flag threads can wait for. set wakes every waiter; clear resets it. A
 * waiter returns 0 if the event was set at any moment during its wait, even
 * if it was cleared again before the waiter ran. 4 bytes. */
typedef struct tw_event {
    uint32_t word; /* bit 0 set, bit 1 waiters parked, bits 2..31 count of sets */
} tw_event;

#define TW_EVENT_INIT {0}

static inline void tw_event_init(tw_event *e)
{
    if (e)
        __atomic_store_n(&e->word, 0, __ATOMIC_RELAXED);
}
TW_API int tw_event_set(tw_event *e);
TW_API int tw_event_clear(tw_event *e);
static inline bool tw_event_is_set(const tw_event *e)
{
    /* acquire: pairs with the release in tw_event_set, so what the setter
     * wrote before set is visible to a thread that sees the flag. */
    return e && (__atomic_load_n(&e->word, __ATOMIC_ACQUIRE) & 1u);
}
/* Blocks until set: 0 (or TW_EINVAL). */
TW_API int tw_event_wait(tw_event *e);
/* 0 if set now, else TW_EBUSY. Never blocks. */
TW_API int tw_event_try_wait(tw_event *e);
/* 0 if set within the timeout, else TW_ETIMEDOUT. */
TW_API int tw_event_wait_timeout(tw_event *e, double timeout);

/* ==== Condition ===========================================================
 * Waits for a state change under a lock. A zeroed Condition uses a private
 * RLock, as Python's Condition() does; tw_cond_init_lock / _rlock bind it to
 * a lock of yours instead, and several Conditions may share one lock.
 *
 * wait releases the lock fully — an RLock held recursively too — sleeps until
 * notified (or the timeout), and re-takes the lock at the depth it had before
 * returning. notify(n) wakes the n longest waiters, in order. Waiting or
 * notifying without holding the lock is TW_EPERM. (For a plain Lock only "held
 * by somebody" can be checked; an RLock checks the owner.) Waiters queue on
 * nodes on their own stacks: nothing is allocated. On notify_all the woken
 * threads re-take the lock one after another, each waking the next once it
 * holds the lock, instead of all rushing the lock at once. */
struct tw__cond_waiter;

typedef struct tw_cond {
    void *lock;    /* tw_lock * or tw_rlock *; NULL means `own` */
    uint32_t kind; /* 0 = own rlock, 1 = tw_lock, 2 = tw_rlock */
    tw_rlock own;
    struct tw__cond_waiter *head, *tail; /* FIFO of waiters; guarded by the lock */
} tw_cond;

#define TW_COND_INIT {NULL, 0, TW_RLOCK_INIT, NULL, NULL}
#define TW_COND_INIT_LOCK(l) {(l), 1, TW_RLOCK_INIT, NULL, NULL}
#define TW_COND_INIT_RLOCK(r) {(r), 2, TW_RLOCK_INIT, NULL, NULL}

TW_API void tw_cond_init(tw_cond *c);
TW_API int tw_cond_init_lock(tw_cond *c, tw_lock *l);
TW_API int tw_cond_init_rlock(tw_cond *c, tw_rlock *r);
/* The condition's lock. */
TW_API int tw_cond_acquire(tw_cond *c);
TW_API int tw_cond_try_acquire(tw_cond *c);
TW_API int tw_cond_acquire_timeout(tw_cond *c, double timeout);
TW_API int tw_cond_release(tw_cond *c);
/* 0 when notified; TW_EPERM when the lock is not held. */
TW_API int tw_cond_wait(tw_cond *c);
/* 0 when notified, TW_ETIMEDOUT otherwise; the lock is held again either way
 * (unless TW_EPERM / TW_EINVAL, when nothing happened). */
TW_API int tw_cond_wait_timeout(tw_cond *c, double timeout);
/* Waits until pred(arg) is true, re-checking it after each wake-up; the
 * timeout bounds the whole wait. 0 once pred is true (checked first, so a true
 * pred never waits), TW_ETIMEDOUT if it is still false at the deadline. */
TW_API int tw_cond_wait_for(tw_cond *c, bool (*pred)(void *arg), void *arg, double timeout);
/* Wakes up to n waiters (n = 0 does nothing). TW_EPERM when the lock is not held. */
TW_API int tw_cond_notify(tw_cond *c, uint32_t n);
TW_API int tw_cond_notify_all(tw_cond *c);
TW_API int tw_cond_run(tw_cond *c, int (*fn)(void *arg), void *arg);

/* In TW_DEBUG code: the lock of a zeroed (own-RLock) Condition is of the
 * class of its init call; acquires track (timeout < 0 waits, 0 is a try). */
TW_API void tw__cond_init_tracked(tw_cond *c, const char *file, int line);
TW_API int tw__cond_acquire_tracked(tw_cond *c, double timeout, const char *file, int line);
TW_API int tw__cond_try_acquire_tracked(tw_cond *c, const char *file, int line);
TW_API int tw__cond_run_tracked(tw_cond *c, int (*fn)(void *arg), void *arg, const char *file,
                                int line);
#if TW__LOCK_DBG
#define tw_cond_init(c) tw__cond_init_tracked((c), __FILE__, __LINE__)
#define tw_cond_acquire(c) tw__cond_acquire_tracked((c), -1.0, __FILE__, __LINE__)
#define tw_cond_try_acquire(c) tw__cond_try_acquire_tracked((c), __FILE__, __LINE__)
#define tw_cond_acquire_timeout(c, timeout)                                                 \
    tw__cond_acquire_tracked((c), (timeout), __FILE__, __LINE__)
#define tw_cond_run(c, fn, arg) tw__cond_run_tracked((c), (fn), (arg), __FILE__, __LINE__)
#endif

/* ==== Barrier =============================================================
 * parties threads meet: each wait blocks until the last one arrives, then all
 * return together with distinct indices 0..parties-1 (the order of arrival).
 * The optional action runs once per cycle, in the last thread to arrive,
 * before the others are released and without the barrier's lock held (it may
 * call tw_barrier_n_waiting, abort or reset); if it returns non-zero the
 * barrier breaks. Threads arriving while an action runs wait for it to end
 * before they join the next cycle, so actions never overlap. An abort or
 * reset while the action runs fails that cycle's waiters too.
 * A barrier breaks when a waiter times out, when the action fails, or on
 * abort: every thread waiting then, and every later wait, gets TW_EBROKEN
 * until reset. reset breaks the current cycle for its waiters (TW_EBROKEN) and
 * makes the barrier usable again. A zeroed barrier has no parties: wait
 * returns TW_EINVAL until it is initialised.
 * A default timeout (Python's Barrier(parties, action, timeout)) is part of
 * the barrier's initialisation: tw_barrier_init_timeout or
 * TW_BARRIER_INIT_TIMEOUT. tw_barrier_wait, which has no timeout of its
 * own, then waits at most that long, and like a timed wait breaks the
 * barrier when it runs out; tw_barrier_wait_timeout's own timeout always
 * wins (a negative one waits forever). tw_barrier_init, TW_BARRIER_INIT and
 * a zeroed barrier have none: wait blocks until the cycle completes. reset
 * keeps the default. */
struct tw__barrier_waiter;

typedef struct tw_barrier {
    tw_lock lock;     /* guards every field below */
    uint32_t parties;
    uint32_t count;   /* threads waiting in this cycle */
    uint32_t broken;
    uint32_t drain;   /* bit 0: a completed cycle's action is running; +2 when it ends */
    uint32_t drain_broken; /* abort/reset came while the action ran */
    int (*action)(void *arg);
    void *arg;
    struct tw__barrier_waiter *head; /* waiters of this cycle, newest first */
    uint32_t timed;  /* tw_barrier_wait uses `timeout` (0: it waits forever) */
    double timeout;  /* the default timeout, in seconds, when timed */
} tw_barrier;

#define TW_BARRIER_INIT(parties, action, arg) \
    {TW_LOCK_INIT, (parties), 0, 0, 0, 0, (action), (arg), NULL, 0, 0.0}
/* With a default timeout for tw_barrier_wait, in seconds (a NaN makes every
 * wait TW_EINVAL). */
#define TW_BARRIER_INIT_TIMEOUT(parties, action, arg, timeout) \
    {TW_LOCK_INIT, (parties), 0, 0, 0, 0, (action), (arg), NULL, 1, (timeout)}
#define TW_BARRIER_PARTIES_MAX 0x7fffffffu

/* 0, or TW_EINVAL (NULL, parties 0 or above TW_BARRIER_PARTIES_MAX). Only on an unused barrier. */
TW_API int tw_barrier_init(tw_barrier *b, uint32_t parties, int (*action)(void *arg), void *arg);
/* The same with a default timeout for tw_barrier_wait, in seconds, as a
 * timed wait takes it (negative: forever; 0: do not block). TW_EINVAL also
 * for a NaN timeout. */
TW_API int tw_barrier_init_timeout(tw_barrier *b, uint32_t parties, int (*action)(void *arg),
                                   void *arg, double timeout);
/* The arrival index (>= 0), or TW_EBROKEN / TW_EINVAL. With a default
 * timeout, waits at most that long: when it runs out the barrier breaks and
 * TW_EBROKEN is returned, as from tw_barrier_wait_timeout. */
TW_API int tw_barrier_wait(tw_barrier *b);
/* Completes the cycle if the caller is the last party (returns its index);
 * otherwise TW_EBUSY without joining or breaking anything. */
TW_API int tw_barrier_try_wait(tw_barrier *b);
/* As wait; at the deadline the barrier breaks and TW_EBROKEN is returned. */
TW_API int tw_barrier_wait_timeout(tw_barrier *b, double timeout);
TW_API int tw_barrier_abort(tw_barrier *b);
TW_API int tw_barrier_reset(tw_barrier *b);
TW_API uint32_t tw_barrier_parties(const tw_barrier *b);
TW_API uint32_t tw_barrier_n_waiting(tw_barrier *b);
TW_API bool tw_barrier_broken(tw_barrier *b);

/* ==== Guards ==============================================================
 * TW_WITH(p) { ... } holds p — a tw_lock *, tw_rlock *, tw_sem *, tw_bsem * or
 * tw_cond * (its lock) — for the block and releases it on every way out:
 * falling off the end, return, break, continue, or goto out of the block. It
 * uses the compiler's cleanup attribute (GCC and Clang); longjmp out of the
 * block skips it, as it skips every cleanup. `break` and `continue` inside the
 * block leave the block, not an enclosing loop. If p cannot be acquired (NULL)
 * the block does not run and the misuse is reported to the diagnostic hook. */
typedef struct tw__guard {
    void *obj; /* NULL once released or if acquiring failed */
    int (*release)(void *obj);
    int once;
} tw__guard;

/* track: the caller is TW_DEBUG code (the guard tracks then, and in a
 * library built with TW_DEBUG); file, line: the TW_WITH. */
TW_API tw__guard tw__guard_lock(tw_lock *l, const char *file, int line, int track);
TW_API tw__guard tw__guard_rlock(tw_rlock *r, const char *file, int line, int track);
TW_API tw__guard tw__guard_sem(tw_sem *s, const char *file, int line, int track);
TW_API tw__guard tw__guard_bsem(tw_bsem *b, const char *file, int line, int track);
TW_API tw__guard tw__guard_cond(tw_cond *c, const char *file, int line, int track);

static inline void tw__guard_exit(tw__guard *g)
{
    if (g->obj)
        g->release(g->obj);
}

#define TW__GUARD_ENTER(p)                     \
    _Generic((p),                              \
        tw_lock *: tw__guard_lock,             \
        tw_rlock *: tw__guard_rlock,           \
        tw_sem *: tw__guard_sem,               \
        tw_bsem *: tw__guard_bsem,             \
        tw_cond *: tw__guard_cond)((p), __FILE__, __LINE__, TW__LOCK_DBG)
#define TW__CAT2(a, b) a##b
#define TW__CAT(a, b) TW__CAT2(a, b)
#define TW__WITH(p, g)                                                                  \
    for (tw__guard g __attribute__((cleanup(tw__guard_exit))) = TW__GUARD_ENTER(p); g.once; \
         g.once = 0)
#define TW_WITH(p) TW__WITH(p, TW__CAT(tw__guard_, __COUNTER__))
/* Spelled-out forms, for readers who like the type in view. */
#define TW_WITH_LOCK(l) TW_WITH((tw_lock *)(l))
#define TW_WITH_RLOCK(r) TW_WITH((tw_rlock *)(r))
#define TW_WITH_SEM(s) TW_WITH((tw_sem *)(s))

/* ==== Deadlock detection (docs/deadlocks.md) ==============================
 * Code compiled with TW_DEBUG (and the library built with it) keeps, for
 * every Lock, RLock and Semaphore, the class it belongs to and the order in
 * which classes are taken; the first acquire that closes a cycle of that
 * order is reported, and so is a set of threads that wait for each other
 * longer than the threshold. These calls exist in every build.
 *
 * A class is every object initialised at one site, or a class you name:
 *
 *     static tw_lock_class accounts = TW_LOCK_CLASS_INIT("account");
 *     tw_lock_class_add(&accounts, &acct->lock);  // a Lock, RLock, Semaphore,
 *                                                 // BoundedSemaphore or Condition
 */
typedef struct tw_lock_class {
    const char *name; /* in reports */
    uint32_t id;      /* twine's: 0 until the class is first used */
} tw_lock_class;

#define TW_LOCK_CLASS_INIT(name) {(name), 0}

/* Puts p in class c from now on (until an init call of p: name it after).
 * 0; TW_EINVAL for NULL; TW_EFULL when the class table is full. */
#define tw_lock_class_add(c, p)                    \
    _Generic((p),                                  \
        tw_lock *: tw__lock_class_add_lock,        \
        tw_rlock *: tw__lock_class_add_rlock,      \
        tw_sem *: tw__lock_class_add_sem,          \
        tw_bsem *: tw__lock_class_add_bsem,        \
        tw_cond *: tw__lock_class_add_cond)((c), (p))

/* Declares that `first` is always taken before `second` when both are held
 * (Go's lock ranking): an acquire in the other order is reported at once,
 * and so is a declaration that contradicts an order already seen. 0;
 * TW_EINVAL for NULL or first == second; TW_EFULL when a table is full. */
TW_API int tw_lock_class_order(tw_lock_class *first, tw_lock_class *second);
/* No report names c again. 0, TW_EINVAL, TW_EFULL. */
TW_API int tw_lock_class_quiet(tw_lock_class *c);
/* How long a thread waits on a twine primitive before it looks for a
 * deadlock (and reports a wait for a Lock it holds itself): 1 s unless set.
 * 0, or TW_EINVAL for a negative or NaN number of seconds. */
TW_API int tw_deadlock_set_threshold(double seconds);

TW_API int tw__lock_class_add(tw_lock_class *c, void *obj, int kind);
TW_API int tw__lock_class_add_cond(tw_lock_class *c, tw_cond *cond);
/* kind: 1 Lock, 2 RLock, 3 Semaphore (src/debug/debug.h) */
static inline int tw__lock_class_add_lock(tw_lock_class *c, tw_lock *l)
{
    return tw__lock_class_add(c, l, 1);
}
static inline int tw__lock_class_add_rlock(tw_lock_class *c, tw_rlock *r)
{
    return tw__lock_class_add(c, r, 2);
}
static inline int tw__lock_class_add_sem(tw_lock_class *c, tw_sem *s)
{
    return tw__lock_class_add(c, s, 3);
}
static inline int tw__lock_class_add_bsem(tw_lock_class *c, tw_bsem *b)
{
    return tw__lock_class_add(c, b, 3);
}

#ifdef __cplusplus
}
#endif

#endif /* TWINE_SYNC_H */
