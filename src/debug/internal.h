/* Internal to src/debug/: the detector's tables and the functions its three
 * files share. See debug.h for the entry points and docs/deadlocks.md for
 * the design.
 *
 * Locks: one lock, `tw__dbg_mu` (a plain Lock, never tracked), guards every
 * change to the class table, the address map's keys, the edges and the
 * async tables; it is never held while the diagnostic hook runs or while
 * anything outside src/debug/ is called. Readers on the hot paths (the
 * address map, the chain cache, the edge hash) read without it, with
 * atomics, and re-check under it before they change anything.
 *
 * Thread records are written by their own thread only, with relaxed atomic
 * stores, and read by other threads (the live check, a loop thread serving a
 * blocked thread's call) with relaxed atomic loads; `wseq` moves with every
 * wait, so a reader can tell that a thread stayed in the same wait. */
#ifndef TW_DEBUG_INTERNAL_H
#define TW_DEBUG_INTERNAL_H

#include <stdio.h>
#include <string.h>

#include "debug/debug.h"

#define LD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define ST(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

/* ---- capacities (docs/deadlocks.md, "Tables") ---------------------------- */
#define DBG_THREADS 1024     /* threads alive at once */
#define DBG_HELD 48          /* objects one thread holds at once */
#define DBG_CLASSES 4096     /* class ids 1 .. DBG_CLASSES - 1 */
#define DBG_EDGES 32768      /* edge ids 1 .. DBG_EDGES - 1 */
#define DBG_EDGE_HASH 65536  /* slots of the (from, to) -> edge hash */
#define DBG_MAP 65536        /* slots of the address -> class map */
#define DBG_CHAINS 65536     /* chain cache: validated held stacks (lossy) */
#define DBG_SIGNALS 8192     /* learned signallers (lossy) */
#define DBG_ASYNC 16384      /* thread work in flight and DeferredLocks held */
#define DBG_REACTORS 256     /* reactors alive at once */
#define DBG_SUBCLASSES TW_LOCK_SUBCLASSES

/* ---- held objects --------------------------------------------------------- */
enum {
    HF_TRY = 1,      /* taken with a try: no edge led to it */
    HF_PSEUDO = 2,   /* the loop, thread work, a DeferredLock's run */
    HF_LEFT = 4,     /* reported as left held */
    HF_GIVEN_UP = 8  /* its Condition wait has given the Lock up for now */
};

typedef struct tw__dbg_held {
    const void *obj;  /* atomic */
    const char *file; /* atomic: where it was taken */
    int32_t line;     /* atomic */
    uint32_t cls;     /* atomic */
    uint8_t kind;     /* atomic */
    uint8_t flags;    /* atomic */
    uint32_t slot;    /* its address map slot (a Lock's owner), or UINT32_MAX */
    uint64_t chain;   /* key of the stack up to and including this entry */
} tw__dbg_held;

typedef struct tw__dbg_thread {
    /* atomic, read with LD even by the owner: a thread attaching races for
     * free records with CASes, and ThreadSanitizer counts a failed CAS as a
     * write. */
    uint32_t tid;   /* tw__self(); 0 = a free record */
    uint32_t depth; /* atomic: entries in held */
    tw__dbg_held held[DBG_HELD];

    /* The wait in progress (wkind 0: none). */
    uint32_t wseq;        /* atomic: +1 at every begin and end */
    uint8_t wkind;        /* atomic */
    const void *wobj;     /* atomic */
    uintptr_t wextra;     /* atomic */
    const void *wsub;     /* atomic: a blocking call's Deferred, set by the loop thread */
    const void *wprim;    /* atomic: the DeferredLock that call queued for */
    const char *wfile;    /* atomic */
    int32_t wline;        /* atomic */
    const char *wfn;      /* atomic */
    int64_t wsince;       /* atomic: when the wait began */
    int64_t wnext;        /* own: the next check */
    int wdepth;           /* own: nested begins */
    uint32_t readers;     /* atomic: live checks reading the object of the wait in
                             progress; its end waits for them (wait.c) */

    /* Roles. */
    const void *pool;     /* atomic: the pool it is a thread of */
    const void *task;     /* atomic: that pool's task it runs; NULL: idle */
    const void *work;     /* atomic: the Deferred whose thread function it runs */
    const void *loop;     /* atomic: the reactor whose loop it runs */
    uint32_t loop_base;   /* own: depth when it entered the loop */
    struct tw__dbg_thread *serving; /* atomic: a loop thread running this blocked
                                       thread's call */
    uintptr_t stack_lo, stack_hi; /* atomic: its stack, for the learned signallers */
    bool reporting;       /* own: inside the diagnostic hook */
} tw__dbg_thread;

extern tw__dbg_thread tw__dbg_threads[DBG_THREADS];
extern uint32_t tw__dbg_threads_hwm; /* atomic: records in use are below it */

/* The calling thread's record (made on first use), or NULL when the table
 * is full. */
tw__dbg_thread *tw__dbg_me(void);
/* The calling thread's record if it has one. */
tw__dbg_thread *tw__dbg_me_if(void);
/* The record of live thread tid, or NULL. */
tw__dbg_thread *tw__dbg_thread_of(uint32_t tid);

/* ---- the detector's lock ------------------------------------------------- */
extern tw_lock tw__dbg_mu;
void tw__dbg_lock(void);
void tw__dbg_unlock(void);

/* ---- classes and the address map (graph.c) --------------------------------- */
enum { CF_QUIET = 1, CF_SIGNAL = 2, CF_NAMED = 4 };

/* obj's class (creating an address class on first sight), and its map slot
 * in *slot (UINT32_MAX when the map is full). 0 when the class table is full. */
uint32_t tw__dbg_class_of(const void *obj, enum tw__dk kind, uint32_t *slot);
/* The class for a pseudo-lock keyed by key (a reactor, a function, a
 * DeferredLock), made on first use; _if: 0 unless made already. */
uint32_t tw__dbg_pseudo_class(const void *key, enum tw__dk kind);
uint32_t tw__dbg_pseudo_class_if(const void *key, enum tw__dk kind);
/* Subclass sub (1 .. DBG_SUBCLASSES - 1) of base. */
uint32_t tw__dbg_subclass(uint32_t base, unsigned sub);
/* A class keyed by key goes away (a reactor destroyed), with its edges. */
void tw__dbg_retire_key(const void *key);
uint32_t tw__dbg_class_flags(uint32_t cls);
void tw__dbg_class_flag(uint32_t cls, uint32_t flag);
/* "Lock of t.c:12", "\"accounts\"", "Lock 0x55..", ... into buf. */
void tw__dbg_class_name(uint32_t cls, char *buf, size_t n);
/* The owner word of map slot `slot` (a Lock's tracked holder). */
uint32_t *tw__dbg_owner(uint32_t slot);
/* The map slot of obj, or UINT32_MAX. */
uint32_t tw__dbg_slot_of(const void *obj);
/* The class in map slot `slot` if the slot still belongs to obj, else 0. */
uint32_t tw__dbg_slot_class(uint32_t slot, const void *obj);
/* Whether map slot `slot` still belongs to obj. */
bool tw__dbg_slot_is(uint32_t slot, const void *obj);
/* Marks obj's line for the free hook (tw__dbg_forget). */
void tw__dbg_mark_line(const void *obj);
bool tw__dbg_class_quiet(uint32_t cls);
const char *tw__dbg_kind_name(enum tw__dk kind);
/* The chain key of class cls (try or not) on top of `prev` (0: bottom), and
 * whether it is in the cache: fast.h. */
/* Checks the order of taking class cls (object obj) on top of what t holds:
 * adds the missing edges, reports the cycle one closes, and caches key
 * (returned). t is the calling thread, or a thread blocked in a call the
 * calling loop thread runs for it. */
uint64_t tw__dbg_validate(tw__dbg_thread *t, const void *obj, uint32_t cls, const char *file,
                          int line, const char *function, uint64_t key);
/* Adds from -> to (an order between pseudo-locks), reporting a cycle. */
void tw__dbg_add_order(uint32_t from, uint32_t to, const char *ffile, int fline,
                       const char *tfile, int tline, uint32_t tid, const char *function);

/* ---- reports -------------------------------------------------------------- */
/* file's last path component. */
const char *tw__dbg_base(const char *file);
/* Sends a report unless the thread is already reporting (a hook that takes
 * tracked locks would report again from inside itself). Never with mu held. */
void tw__dbg_report(int code, const char *function, const char *message);
/* A table is full: reported once per table, when mu is free. */
enum {
    FULL_THREADS = 1, FULL_HELD = 2, FULL_CLASSES = 4, FULL_EDGES = 8, FULL_MAP = 16,
    FULL_ASYNC = 32, FULL_REACTORS = 64
};
void tw__dbg_full_locked(unsigned bit); /* mu held: reported at the unlock */
void tw__dbg_full(unsigned bit);        /* mu not held */
/* Appends to buf (n bytes) at *len: printf, a site ("t.c:12" or a name). */
void tw__dbg_put(char *buf, size_t n, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void tw__dbg_put_site(char *buf, size_t n, size_t *len, const char *file, int line);

/* ---- thread.c ---------------------------------------------------------------- */
/* Pushes an entry; false if the stack is full (reported once). */
bool tw__dbg_push(tw__dbg_thread *t, const void *obj, enum tw__dk kind, uint32_t cls,
                  uint32_t slot, unsigned flags, const char *file, int line, uint64_t chain);
/* Removes entry i, re-keying those above it. */
void tw__dbg_remove(tw__dbg_thread *t, uint32_t i);
/* Whether entry i still stands for a hold of t's (a Lock another thread
 * released, an RLock it no longer owns, a Semaphore become a signal: no). */
bool tw__dbg_entry_valid(const tw__dbg_thread *t, uint32_t i);
/* The loop reactor r's thread, or 0. */
uint32_t tw__dbg_loop_thread(const void *r);

/* The calling thread takes pseudo-lock cls (keyed by key): checked against
 * what it holds, and pushed if `hold`. */
void tw__dbg_pseudo_acquire(tw__dbg_thread *t, const void *key, enum tw__dk kind, uint32_t cls,
                            const char *file, int line, const char *function, bool hold);
void tw__dbg_pseudo_release(tw__dbg_thread *t, const void *key, enum tw__dk kind);

/* ---- wait.c ---------------------------------------------------------------- */
/* The wait threshold, ns. */
int64_t tw__dbg_threshold(void);
/* The block [from, to) is freed: forgets its learned signallers. */
void tw__dbg_signals_forget(uintptr_t from, uintptr_t to);

#endif
