/* Internal: the reactor's layout and the interfaces between its modules:
 * loop.c (lifecycle, iteration, shutdown, triggers), timers.c, io.c (fd
 * watchers), post.c (calls from threads), threads.c (pool bridge), signals.c,
 * and the pollers (poller_poll.c here, epoll in src/platform/linux/).
 *
 * Threads: every field is the loop thread's, except those marked atomic,
 * which other threads touch through post.c, tw_reactor_stop and
 * tw_blocking_call_from_thread. */
#ifndef TW_REACTOR_INTERNAL_H
#define TW_REACTOR_INTERNAL_H

#include <twine/reactor.h>

#include "base/diag.h"
#include "base/dlist.h"
#include "base/spin_wait.h"
#include "reactor/owner.h"

/* ---- pollers ---------------------------------------------------------------
 * One interface, one file per implementation. Events are TW_READABLE and
 * TW_WRITABLE; an error or hang-up is reported as both. */
typedef struct tw__poller tw__poller;

typedef struct tw__poll_event {
    int fd;
    unsigned events;
} tw__poll_event;

#define TW__POLL_BATCH 256 /* events one poll reports at most */

typedef struct tw__poller_ops {
    const char *name;
    int (*create)(tw__poller **out);
    void (*destroy)(tw__poller *p);
    /* Sets fd's interest from `old` to `events` (0 removes it). TW_EINVAL if
     * the system refuses the fd (bad, or a regular file for epoll). */
    int (*set)(tw__poller *p, int fd, unsigned old, unsigned events);
    /* Waits up to timeout_ms (-1: forever) and fills at most max events;
     * returns their number (0 on timeout or interruption). */
    int (*wait)(tw__poller *p, int timeout_ms, tw__poll_event *out, int max);
} tw__poller_ops;

extern const tw__poller_ops tw__poller_poll;
/* The platform's native poller (epoll), or NULL where there is none. */
const tw__poller_ops *tw__poller_native(void);

/* ---- waker (eventfd on Linux, a pipe elsewhere) ---------------------------- */
int tw__waker_open(int *read_fd, int *write_fd);
void tw__waker_close(int read_fd, int write_fd);
/* Async-signal-safe; a full pipe or counter already wakes. */
void tw__waker_wake(int write_fd);
void tw__waker_drain(int read_fd);

/* ---- the reactor ------------------------------------------------------------ */

enum tw__rstate {
    R_NEW = 0,     /* not run yet */
    R_RUNNING,     /* loop running (or iterated) */
    R_BEFORE,      /* shutdown: before-shutdown triggers' Deferreds outstanding */
    R_DONE         /* shut down */
};

struct tw_delayed_call {
    tw_reactor *r;
    int64_t when; /* ns on the reactor's clock */
    uint64_t seq; /* FIFO among equal times */
    size_t index; /* in the heap while pending */
    tw_call_fn fn;
    void *arg;
    tw_drop_fn drop; /* of arg, once the call ran or never will; may be NULL */
    uint32_t refs; /* the reactor's while pending, plus handles */
    uint8_t state; /* DC_PENDING, DC_RAN, DC_CANCELLED */
    struct tw__rclock *rclock; /* made through tw_clock: its handle's references (to
                                  this call and to the clock) end when it runs */
};

/* The reactor as a tw_clock, in a block of its own: a clock call's handle
 * keeps it alive, so a Deferred with a timeout may outlive the reactor (its
 * cancel then finds the reactor gone). References: the reactor's, and one
 * per clock call's handle. */
typedef struct tw__rclock {
    tw_clock clock; /* first */
    tw_reactor *r;  /* NULL once the reactor is destroyed */
    uint32_t refs;
} tw__rclock;
enum { DC_PENDING = 0, DC_RAN = 1, DC_CANCELLED = 2 };

typedef struct tw__fdrec {
    tw_fd_fn rfn, wfn;
    void *rarg, *warg;
    unsigned events; /* registered with the poller */
} tw__fdrec;

typedef struct tw__trigger {
    struct tw__trigger *next;
    uint64_t id;
    tw_result_fn fn;
    void *arg;
} tw__trigger;

typedef struct tw__startup {
    struct tw__startup *next;
    tw_call_fn fn;
    void *arg;
    tw_drop_fn drop; /* of arg, once fn ran or never will; may be NULL */
} tw__startup;


struct tw_reactor {
    tw__rclock *rclock; /* the deferred layer's clock */
    enum tw__rstate state;
    bool in_run;
    bool fake;
    int64_t fake_now;
    uint32_t owner;       /* creating thread */
    uint32_t loop_thread; /* atomic: set when the loop first runs */

    /* stop: atomic, any thread or a signal handler */
    int stop_requested;
    uint32_t stoppers; /* atomic: tw_reactor_stop calls in progress */

    /* calls from threads (post.c): a ring of (fn, arg) cells, and for when it
     * is full a lock-free LIFO of tw_call, reversed per batch;
     * TW__POST_CLOSED once the reactor has shut down. atomic. */
    tw_call *posted;
    int wake_rfd, wake_wfd;
    struct tw__cell *ring; /* TW__RING_SIZE cells, from a cache line's start in ring_mem */
    void *ring_mem;
    /* Each on its own cache line: what posters write (the tail), what the
     * loop writes per call (the head) or per iteration (the wake flag), and
     * what posters only read (ovf, rarely written), so that neither side
     * invalidates the other's lines on every call. */
    _Alignas(64) uint64_t ring_tail; /* atomic: next slot to claim; RING_CLOSED bit when closed */
    uint64_t head_seen; /* atomic, posters': a recent ring_head, so that a claim
                         * reads the loop's line only when the ring looks full */
    _Alignas(64) uint32_t ovf;       /* atomic: calls on the overflow stack not yet run */
    _Alignas(64) uint32_t wake_pending; /* atomic: a wake-up is written and not yet consumed */
    _Alignas(64) uint64_t ring_head;    /* the loop's: next cell to run */
    _Alignas(64) char after_hot[1];

    /* poller and fds (io.c) */
    const tw__poller_ops *pops;
    tw__poller *poller;
    tw__fdrec *fds;
    size_t nfds;
    size_t nwatched; /* fds with a reader or a writer */
    tw__poll_event events[TW__POLL_BATCH];
    int ev_next, ev_end; /* the batch being dispatched: events[ev_next..ev_end) to go */

    /* timers (timers.c): a binary min-heap by (when, seq) */
    tw_delayed_call **heap;
    size_t heap_len, heap_cap;
    uint64_t timer_seq;

    /* lifecycle (loop.c) */
    tw__trigger *triggers[3], **trigger_tail[3];
    uint64_t trigger_seq;
    size_t before_pending; /* Deferreds of before-shutdown triggers not yet fired */
    int phases_run;        /* trigger phases whose triggers have run (0..3) */
    tw__startup *startup, **startup_tail;

    /* pool bridge (threads.c) */
    tw_pool *pool;
    size_t pool_max;
    double pool_stop_timeout;
    bool pool_closed;
    int bcalls_refused; /* atomic */
    tw__dlink *bcalls;      /* tw__bcall.link: blocking calls waiting on a Deferred */
    tw__dlink *dthreads;    /* tw__dthread.link: defer_to_thread calls in flight */
    tw__spin_state spin;    /* the loop's watch for their results */

    bool owns_signals;
};

#define TW__POST_CLOSED ((tw_call *)(uintptr_t)1)

/* Grows *table, an array indexed by fd of *len elements of `elem` bytes, to
 * cover fd: the length doubles from 64, new elements get every byte set to
 * `fill` (0, or 0xff for an int of -1). 0, or TW_ENOMEM with *table and
 * *len untouched. io.c's fd records and the poll poller's slots. */
int tw__fd_table_cover(void **table, size_t *len, size_t elem, int fd, int fill);

/* loop.c */
int64_t tw__reactor_now(const tw_reactor *r);
#ifdef TW_DEBUG
/* Reports a call to fn made on a thread that does not own r now
 * (tw__reactor_thread). */
#define TW__RCHECK(r, fn)                                                              \
    do {                                                                               \
        uint32_t want_ = tw__reactor_thread(r);                                        \
        if (want_ && want_ != tw__self())                                              \
            tw__wrong_thread("the reactor", want_, (fn));                              \
    } while (0)
#else
#define TW__RCHECK(r, fn) ((void)0)
#endif

/* timers.c */
/* Runs the timers due at `now`, not those they schedule for now. */
void tw__timers_run(tw_reactor *r, int64_t now);
/* ns until the next timer (0 if due), or -1 if there is none. */
int64_t tw__timers_next(const tw_reactor *r, int64_t now);
void tw__timers_destroy(tw_reactor *r);
int tw__clock_create(tw_reactor *r);
/* The reactor is going: the clock stays while handles hold it. */
void tw__clock_detach(tw_reactor *r);

/* io.c */
int tw__io_init(tw_reactor *r, enum tw_poller which);
/* Waits up to timeout_ms and dispatches fd events (and drains the waker). */
void tw__io_poll(tw_reactor *r, int timeout_ms);
void tw__io_destroy(tw_reactor *r);

/* post.c */
#define TW__RING_SIZE 4096  /* a power of two */
#define TW__POST_BUDGET 4096 /* ring calls one iteration runs at most */
typedef struct tw__cell {
    uint64_t seq; /* atomic: the slot's position + 1 once its call is published */
    tw_call_fn fn;
    void *arg;
} __attribute__((aligned(32))) tw__cell; /* two a cache line, never straddling one */
int tw__post_init(tw_reactor *r);
void tw__post_destroy(tw_reactor *r);
/* Runs the calls posted before now, in order; returns whether any ran. */
bool tw__posted_run(tw_reactor *r);
bool tw__posted_pending(const tw_reactor *r);
/* A call the loop can run now: the next ring cell published, or calls on the
 * stack. Reads neither the tail nor anything posters write per call but the
 * cell itself; a call claimed and not yet published does not count. */
bool tw__posted_ready(const tw_reactor *r);
/* Runs every posted call until none is left, then refuses new ones. */
void tw__posted_close(tw_reactor *r);
/* Clears the coalescing flag before the loop decides how long to sleep. */
void tw__reactor_rearm(tw_reactor *r);
void tw__reactor_wake(tw_reactor *r);

/* threads.c */
/* Shutdown, at the start of the during phase: refuse blocking calls and
 * release those waiting. */
void tw__threads_refuse_blocking(tw_reactor *r);
/* Shutdown, during phase: stop the pool. */
void tw__threads_stop_pool(tw_reactor *r);
/* After the last posted call: fail the defer_to_thread Deferreds whose
 * results can no longer arrive. */
void tw__threads_close(tw_reactor *r);
/* True if the pool was abandoned with stuck threads: they may still post, so
 * the reactor's post state must not be freed. */
bool tw__threads_destroy(tw_reactor *r);

/* signals.c */
void tw__signals_release(tw_reactor *r);


#endif
