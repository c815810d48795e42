/* Internal: the deadlock detector's entry points for the layers.
 *
 * The sync layer's tracking paths (the _tracked functions of twine/sync.h,
 * built in every configuration) call these for every Lock, RLock and
 * Semaphore they take; the other layers call the rest from code compiled
 * with TW_DEBUG only, each behind `#ifdef TW_DEBUG`, so that a build without
 * it calls nothing here. docs/deadlocks.md describes the whole detector:
 *
 *   graph.c   classes (by init site, name, address), the address map, the
 *             order graph, the chain cache and the order reports;
 *   thread.c  per-thread records (held stacks, waits, roles), thread exit,
 *             the loop's entry and exit, locks left held;
 *   wait.c    waits, the live wait-for check, learned signallers, the
 *             pools', thread work's and DeferredLocks' part of the graph.
 *
 * Nothing here allocates: every table is static with a fixed capacity, and
 * a full table is reported once (TW_DIAG_WARNING, TW_EFULL). Reports are
 * made with no lock of the detector held. */
#ifndef TW_DEBUG_DEBUG_H
#define TW_DEBUG_DEBUG_H

#include <stddef.h>

#include <twine/sync.h>

/* What an object is, for its class and for the waits on it. */
enum tw__dk {
    TW__DK_NONE = 0,
    TW__DK_LOCK = 1,  /* held by threads, in the order graph */
    TW__DK_RLOCK = 2,
    TW__DK_SEM = 3,   /* a Semaphore: in the graph while it is used as a lock */
    TW__DK_LOOP = 4,  /* pseudo-locks: a reactor's loop (held by the loop thread */
    TW__DK_WORK = 5,  /* while it runs), a thread function (held while it runs), */
    TW__DK_DLOCK = 6, /* a DeferredLock or DeferredSemaphore (held by tw_dlock_run */
    TW__DK_DSEM = 7,  /* while its function runs and until its Deferred fires) */
    TW__DK_EVENT = 8, /* waits only */
    TW__DK_COND = 9,
    TW__DK_BCALL = 10, /* tw_blocking_call_from_thread */
    TW__DK_POOL = 11   /* tw_pool_stop */
};

/* Acquire flags. */
#define TW__DA_TRY 1u /* cannot wait: adds no edge */

/* Non-zero once any thread has tracked something: the tracking release
 * paths, which every build calls (tw_cond_release), do nothing else until
 * then. relaxed: a stale 0 only skips forgetting what nobody remembered. */
extern uint32_t tw__dbg_on;

/* ---- classes ------------------------------------------------------------- */

/* obj's class is the one of its init call's site from now on. */
void tw__dbg_init_site(const void *obj, enum tw__dk kind, const char *file, int line);
/* obj's class is c from now on. 0, or TW_EINVAL / TW_EFULL. */
int tw__dbg_class_add(tw_lock_class *c, const void *obj, enum tw__dk kind);
/* Classes in use (tests). */
uint32_t tw__dbg_class_count(void);
/* The block [p, p + n) is being freed: forgets the objects in it. */
void tw__dbg_forget(const void *p, size_t n);

/* ---- taking and giving back ---------------------------------------------
 * A tracking acquire calls tw__dbg_acquire before it tries the object (the
 * order is checked, and an inversion reported, before it can wait), and
 * tw__dbg_acquired once it holds it. A release calls tw__dbg_release. */
typedef struct tw__dbg_acq {
    void *t;        /* the thread's record; NULL: not tracked */
    uint32_t cls;   /* the object's class (its subclass, if asked) */
    uint32_t slot;  /* its address map slot, or UINT32_MAX */
    uint64_t chain; /* the held stack's key once it is pushed */
} tw__dbg_acq;

void tw__dbg_acquire(tw__dbg_acq *a, const void *obj, enum tw__dk kind, unsigned sub,
                     unsigned flags, const char *file, int line, const char *function);
void tw__dbg_acquired(tw__dbg_acq *a, const void *obj, enum tw__dk kind, unsigned flags,
                      const char *file, int line);
/* The calling thread gives back up to n holds of obj (a Semaphore may be
 * held more than once). Returns how many holds it had; a Semaphore released
 * by a thread that held none is a signal from then on (no longer in the
 * order graph), and its releaser is remembered for the live check. */
unsigned tw__dbg_release(const void *obj, enum tw__dk kind, unsigned n);
/* A Condition wait gives its Lock up (held = false) and takes it back. */
void tw__dbg_cond_lock(const void *lock, bool held);

/* ---- waits ---------------------------------------------------------------
 * A blocking call that may wait brackets its wait with begin and end; the
 * parks inside go through tw__dbg_park, which wakes up at the threshold to
 * run the checks. An inner begin (an Event wait inside a blocking call)
 * keeps the outer one. `extra`: an Event's count of sets when the wait
 * began, a Condition waiter's node, a blocking call's reactor. */
int tw__dbg_wait_begin(enum tw__dk kind, const void *obj, uintptr_t extra, const char *file,
                       int line, const char *function);
void tw__dbg_wait_end(int token);
/* tw__wait, checking for deadlocks at the threshold; returns 0 (as a
 * spurious wake-up) after a check. */
int tw__dbg_park(uint32_t *addr, uint32_t expect, tw_deadline deadline);
/* obj (an Event: stamp is its count of sets after this one; a Condition; a
 * Semaphore) was signalled by the calling thread. */
void tw__dbg_signal(enum tw__dk kind, const void *obj, uint32_t stamp);

/* ---- the loop, pools, thread work and DeferredLocks ------------------------
 * The hooks of src/reactor, src/worker/pool.c and src/deferred/prim.c. */

/* The calling thread runs r's loop (run or iterate) until loop_leave. */
void tw__dbg_loop_enter(const void *r);
void tw__dbg_loop_leave(const void *r);
/* Between two iterations: reports Locks a loop callback left held. */
void tw__dbg_loop_idle(const void *r);
/* r is destroyed. */
void tw__dbg_reactor_gone(const void *r);

/* tw_blocking_call_from_thread, around its wait: the thread waits for r's
 * loop to run the call `w`. */
int tw__dbg_bcall_begin(const void *r, const void *w);
/* The loop thread runs blocked call w's function (serving) and stops. */
void tw__dbg_bcall_serve(const void *w, bool serving);
/* w's function returned a Deferred that had not fired: the blocked thread
 * waits for it now. */
void tw__dbg_bcall_waits(const void *w, const void *deferred);

/* The calling thread is one of pool p's (p NULL: it leaves the pool). */
void tw__dbg_pool_thread(const void *p);
/* The calling pool thread starts task `task` (NULL: it is idle again). */
void tw__dbg_pool_task(const void *task);
/* tw_pool_stop waits for p's threads (bracketed like a wait). */
int tw__dbg_pool_stop_begin(const void *p);

/* defer_to_thread: Deferred d waits for thread work of pool p, whose
 * function is fn, delivered by r's loop; done when its result is delivered
 * or it is failed. */
void tw__dbg_work_submitted(const void *d, const void *p, const void *fn, const void *r);
void tw__dbg_work_done(const void *d);
/* A pool thread runs the thread function fn of d's work (NULLs: it has
 * returned). */
void tw__dbg_work_run(const void *d, const void *fn);

/* DeferredLock / DeferredSemaphore p (limit tokens): an acquire, granted
 * at once (d fired) or queued (d pending); a grant to a queued one; a
 * release; and run(): its function runs (begin) and its Deferred `until`
 * (NULL if it had fired) keeps p held until it fires. */
void tw__dbg_dprim_acquire(const void *p, uint32_t limit, const void *d, bool granted);
void tw__dbg_dprim_granted(const void *p, uint32_t limit);
void tw__dbg_dprim_release(const void *p);
void tw__dbg_dprim_run(const void *p, uint32_t limit, bool begin, const void *until);

#endif
