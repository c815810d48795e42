/*
 * twine/redis.h — Redis on the reactor: commands that return Deferreds.
 * Link with libtwine-redis (pkg-config hiredis); not included by twine.h.
 *
 * A tw_redis is one connection to one Redis server, driven by the reactor's
 * fd watchers and timers through hiredis's asynchronous interface. Every
 * command returns a Deferred that fires with a copy of the reply, or fails:
 *
 *     static tw_result show(tw_result r, void *arg)
 *     {
 *         if (tw_result_is_failure(r)) {                  // a Redis error, a timeout, ...
 *             fprintf(stderr, "%s\n", tw_failure_message(tw_result_as_failure(r)));
 *         } else {
 *             const tw_redis_reply *rep = r.ptr;          // freed with r
 *             printf("%lld\n", rep->integer);
 *         }
 *         tw_result_drop(r);
 *         return tw_result_none();
 *     }
 *
 *     tw_redis_config cfg = TW_REDIS_CONFIG_INIT;       // 127.0.0.1:6379
 *     tw_redis *c;
 *     tw_redis_connect(reactor, &cfg, &c);              // connects in the background
 *     tw_deferred *d;
 *     tw_redis_command(c, &d, "INCR %s", "visits");     // hiredis's format: %s, %b (ptr, len)
 *     tw_deferred_add_both(d, show, NULL);
 *     tw_deferred_unref(d);
 *
 * No command vanishes. A command issued while the connection is down waits
 * for the reconnection, which is retried with a jittered exponential
 * backoff; each command has a timeout (the config's), counted from the call.
 * How a command fails says what became of it:
 *   TW_EREMOTE   Redis answered with an error; the message is Redis's text.
 *   TW_ENOTCONN  it was never sent: no connection within its timeout.
 *   TW_ETIMEDOUT it was sent and no reply came within its timeout: it may
 *                or may not have run (a reply arriving later is dropped).
 *   TW_ECONNLOST it was sent and the connection broke first: it may or may
 *                not have run.
 *   TW_ESHUTDOWN the connection was closed before it could complete.
 *   TW_ECANCELED its Deferred was cancelled (a reply arriving later is dropped).
 * hiredis 0.14 has no timeouts of its own; these are reactor timers, so a
 * reactor with a fake clock drives them exactly.
 *
 * Threads. A connection belongs to the reactor's loop thread (before the
 * reactor first calls it back: the thread that created it); builds with
 * TW_DEBUG report a call from another thread. Other threads hand their
 * commands to the loop with tw_reactor_call_from_thread, or wait for a reply
 * with tw_blocking_call_from_thread and a function that issues the command
 * and returns its Deferred.
 *
 * SIGPIPE. hiredis writes with write(2), which raises SIGPIPE when a server
 * has gone away; connecting sets SIGPIPE to SIG_IGN if it is at its default
 * (as CPython does at start-up), so a lost server is an error, not the end of
 * the process. An application's own SIGPIPE handler is left in place.
 *
 * Beyond one machine. On a connection sit the DeferredLock, DeferredSemaphore
 * and DeferredQueue of twine/deferred.h, with the same shapes of call, shared
 * by every process that uses the same names on the same Redis: moving seed
 * 000's NetworkCounter from one process to many is a change of type.
 *
 *     static tw_result next(void *arg)                    // runs holding the lock
 *     {
 *         counter *k = arg;
 *         tw_deferred *d;
 *         tw_redis_command(k->c, &d, "GET %s", "count");
 *         tw_deferred_add_callback(d, write_plus_one, k); // a fenced SET, below
 *         return tw_result_deferred(d);                   // released when it fires
 *     }
 *
 *     tw_redis_lock *lock;
 *     tw_redis_lock_create(c, "count", 10.0, &lock);      // name, lease in seconds
 *     tw_redis_lock_run(lock, next, &k, &d);              // acquire, next, release
 *
 * A lock holder's lease can run out under it (a pause longer than the TTL):
 * each grant carries a fencing token, and tw_redis_lock_fenced_set is a SET
 * that Redis itself refuses once a newer token exists. write_plus_one:
 *
 *     tw_redis_lock_fenced_set(k->lock, "count", buf, len, &d);
 *
 * examples/dist_counter.c is this program; four of them end at exactly 4N.
 * The queue (Redis Streams, a consumer group) gives at-least-once delivery,
 * and tw_redis_worker runs its entries on a thread pool: seed 001's pool,
 * spread over processes.
 *
 * docs/redis.md has the guarantees and their limits: one primary (no
 * Redlock), what each persistence setting keeps, when entries are delivered
 * twice.
 */
#ifndef TWINE_REDIS_H
#define TWINE_REDIS_H

#include <stdarg.h>

#include "base.h"
#include "deferred.h"
#include "reactor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tw_redis tw_redis;

/* ==== replies ============================================================= */

enum tw_redis_type {
    TW_REDIS_NIL = 0,     /* a nil bulk string or nil array */
    TW_REDIS_STRING = 1,  /* a bulk string (any bytes) */
    TW_REDIS_STATUS = 2,  /* a status line ("OK", "PONG") */
    TW_REDIS_INTEGER = 3,
    TW_REDIS_ARRAY = 4,
    TW_REDIS_ERROR = 5    /* an error inside an array (EXEC); a top-level error is a failure */
};

/* A reply: one block, immutable, freed with tw_redis_reply_free (which is
 * the drop function of the value a command's Deferred fires with). */
typedef struct tw_redis_reply {
    enum tw_redis_type type;
    long long integer;                    /* TW_REDIS_INTEGER */
    size_t len;                           /* bytes of str; elements of an array */
    const char *str;                      /* STRING, STATUS, ERROR: len bytes, then a NUL */
    const struct tw_redis_reply *element; /* ARRAY: len replies */
} tw_redis_reply;

/* Frees a reply (a tw_drop_fn). NULL is ignored. */
TW_API void tw_redis_reply_free(void *reply);

/* ==== connections ========================================================= */

typedef struct tw_redis_config {
    const char *host;       /* a numeric address or a name (resolved when connecting) */
    int port;               /* 1..65535 */
    const char *unix_path;  /* a Unix socket instead of host and port (NULL: TCP) */
    double connect_timeout; /* seconds for one connection attempt; > 0 */
    double command_timeout; /* seconds from a command's call to its reply; negative: none */
    double reconnect_min;   /* first delay before reconnecting; > 0 */
    double reconnect_max;   /* the delay doubles up to this; >= reconnect_min */
    const char *password;   /* AUTH on every connection (NULL: none) */
    int db;                 /* SELECT on every connection (0: the default) */
} tw_redis_config;

#define TW_REDIS_CONFIG_INIT {"127.0.0.1", 6379, NULL, 5.0, 10.0, 0.05, 2.0, NULL, 0}

/* Creates a connection on r and starts connecting; commands may be issued
 * at once. The config's strings are copied. TW_EINVAL for a bad config
 * (port out of range, a timeout that is NaN or not positive, ...). */
TW_API int tw_redis_connect(tw_reactor *r, const tw_redis_config *cfg, tw_redis **out);

/* Parses "HOST:PORT", "[IPV6]:PORT" or "unix:PATH" into cfg's host and port
 * (or unix_path), which then point into `buf` (a copy of addr the caller
 * keeps while cfg is in use). TW_EINVAL for anything else. */
TW_API int tw_redis_parse_address(const char *addr, char *buf, size_t size,
                                  tw_redis_config *cfg);

/* Sends a command written in hiredis's format ("SET %s %b", key, val, len);
 * *out fires with the tw_redis_reply or fails as the essay says. TW_EINVAL
 * for a format hiredis cannot read; TW_ESHUTDOWN once closing. */
TW_API int tw_redis_command(tw_redis *c, tw_deferred **out, const char *fmt, ...);
TW_API int tw_redis_commandv(tw_redis *c, tw_deferred **out, const char *fmt, va_list ap);
/* The same with each argument given with its length (binary safe). */
TW_API int tw_redis_command_argv(tw_redis *c, int argc, const char *const *argv,
                                 const size_t *lens, tw_deferred **out);
/* The same with a timeout of its own (seconds; negative: none), for a
 * command that blocks on the server (BLPOP, XREADGROUP BLOCK). */
TW_API int tw_redis_command_argv_timeout(tw_redis *c, double timeout, int argc,
                                         const char *const *argv, const size_t *lens,
                                         tw_deferred **out);

/* A Deferred that fires (with none) once the connection is up: at once if
 * it is. It fails with TW_ESHUTDOWN if the connection is closed first; add
 * a timeout (tw_deferred_add_timeout) to bound the wait. */
TW_API int tw_redis_wait_connected(tw_redis *c, tw_deferred **out);
/* The connection is up. */
TW_API bool tw_redis_connected(const tw_redis *c);
/* The last connection error ("" if none): what a reconnection is trying to
 * get past. Valid until the next call on c. */
TW_API const char *tw_redis_last_error(const tw_redis *c);

typedef struct tw_redis_stats {
    uint64_t connects;    /* connections made */
    uint64_t disconnects; /* connections lost (not counting close) */
    uint64_t commands;    /* commands sent to the server */
    uint64_t replies;     /* replies received (errors included) */
    uint64_t timeouts;    /* commands failed with TW_ETIMEDOUT or TW_ENOTCONN */
    size_t waiting;       /* commands waiting for a connection */
    size_t in_flight;     /* commands sent whose reply has not come */
} tw_redis_stats;
TW_API void tw_redis_stats_get(const tw_redis *c, tw_redis_stats *out);

/* Closes the connection: new commands are refused (TW_ESHUTDOWN), commands
 * waiting for a connection fail with TW_ESHUTDOWN, commands in flight get
 * their replies (or their timeouts); then the connection is freed and *out
 * (if not NULL) fires with none. c must not be used after this call.
 * TW_EBUSY (and nothing done) while locks, semaphores or queues made on c
 * still exist. */
TW_API int tw_redis_close(tw_redis *c, tw_deferred **out);

/* ==== distributed lock ====================================================
 * The DeferredLock's shape, across processes: acquire gives a Deferred that
 * fires (with the lock's address) when this process holds the lock named
 * `name` on the server; release gives it up; run(fn, arg) acquires, calls
 * fn, and releases when fn's result is ready, on success and failure alike.
 *
 * Each grant comes with a fencing token, strictly increasing per name, and a
 * lease of `ttl` seconds that a watchdog renews every ttl/3 while the lock is
 * held; release stops the watchdog before it returns. If a renewal fails
 * (the lease expired, or another owner has the lock) the lease is lost:
 * tw_redis_lock_lease_lost's Deferreds fail with TW_ELEASE, time_left is 0,
 * and run's result becomes a TW_ELEASE failure. Writes that must not land
 * after a lost lease go through tw_redis_lock_fenced_set, which Redis refuses
 * (TW_ESTALE) once a newer token has been issued.
 *
 * Waiting costs no polling: a release hands the lock to the oldest waiting
 * process in Redis and wakes it by pub/sub; a waiter otherwise retries when
 * the holder's lease would run out (the TTL the server reports, with
 * jitter), which is also how it gets past a holder that died. The waiters of
 * one tw_redis_lock are served in FIFO order, and processes in the order
 * they began to wait; a release with a waiter of its own lock object passes
 * it on in the same round trip (a new token all the same), at most 4 times
 * in a row while another process waits. To bound a wait (Redisson's
 * tryLock), add a timeout to the acquire's Deferred: cancelling an acquire
 * withdraws it from the server's queue. A tw_redis_lock belongs to its
 * connection's loop thread. */

typedef struct tw_redis_lock tw_redis_lock;

/* name: 1..512 bytes (the keys are "twine:lock:{name}" and a few beside
 * it); ttl: the lease, in seconds, from 0.01 to 10^6. TW_EINVAL otherwise. */
TW_API int tw_redis_lock_create(tw_redis *c, const char *name, double ttl,
                                tw_redis_lock **out);
/* Pending acquires fail with TW_ESHUTDOWN and leave the server's queue.
 * TW_EBUSY (nothing done) while the lock is held: release it first. */
TW_API int tw_redis_lock_destroy(tw_redis_lock *l);

TW_API int tw_redis_lock_acquire(tw_redis_lock *l, tw_deferred **out);
/* Gives the lock up: the watchdog is stopped now, the next waiter of this
 * tw_redis_lock starts its turn, and *out (may be NULL) fires with none once
 * the server has released it, or fails with TW_ELEASE if the lease had been
 * lost, or with the command's failure (TW_ECONNLOST, ...) if its outcome is
 * unknown: the release is then sent again in the background, while the
 * lease could still be live, so that a broken connection does not leave the
 * lock to a holder that let go. TW_EPERM if the lock is not held. */
TW_API int tw_redis_lock_release(tw_redis_lock *l, tw_deferred **out);
/* out may be NULL. The result is fn's (a value, a failure, or a Deferred's
 * result), delivered once the lock is released; TW_ELEASE instead of a
 * value if the lease was lost before the release. */
TW_API int tw_redis_lock_run(tw_redis_lock *l, tw_result_fn fn, void *arg, tw_deferred **out);

TW_API bool tw_redis_lock_held(const tw_redis_lock *l);
TW_API size_t tw_redis_lock_waiting(const tw_redis_lock *l);
/* The holder's fencing token; 0 when not held. */
TW_API uint64_t tw_redis_lock_token(const tw_redis_lock *l);
/* Seconds the lease surely has left, on the reactor's clock (measured from
 * when the acquire or the last renewal was sent, or for a lease handed over
 * by another process's release, from when the server granted it); 0 when
 * not held or lost. */
TW_API double tw_redis_lock_time_left(const tw_redis_lock *l);
/* A Deferred that fails with TW_ELEASE if the current lease is lost, and
 * fires with none when the lock is released first. TW_EPERM if not held. */
TW_API int tw_redis_lock_lease_lost(tw_redis_lock *l, tw_deferred **out);

typedef struct tw_redis_lock_stats {
    uint64_t acquired;   /* grants */
    uint64_t handoffs;   /* grants announced by pub/sub (a release handed it over) */
    uint64_t passes;     /* grants passed from this lock's holder to its next waiter */
    uint64_t attempts;   /* acquire scripts sent */
    uint64_t retries;    /* of them, sent by a waiter's timer */
    uint64_t renewals;   /* leases renewed by the watchdog */
    uint64_t lost;       /* leases lost */
} tw_redis_lock_stats;
TW_API void tw_redis_lock_stats_get(const tw_redis_lock *l, tw_redis_lock_stats *out);

/* SET key value, if `token` is still the newest fencing token of the lock
 * `lock_name`: fires with the reply, fails with TW_ESTALE once a newer
 * token has been issued (TW_EREMOTE for a token never issued). */
TW_API int tw_redis_fenced_set(tw_redis *c, const char *lock_name, uint64_t token,
                               const char *key, const void *value, size_t len,
                               tw_deferred **out);
/* The same with the holder's token. TW_EPERM if not held. */
TW_API int tw_redis_lock_fenced_set(tw_redis_lock *l, const char *key, const void *value,
                                    size_t len, tw_deferred **out);

/* ==== distributed semaphore ===============================================
 * `permits` permits shared by every process using the name `name`; each
 * held permit is an id in a sorted set ("twine:sem:{name}") scored by its
 * expiry, renewed every ttl/3 while held. A permit whose holder died expires
 * after `ttl` and returns to the pool. acquire gives a Deferred that fires
 * with the permit (a tw_redis_permit, the semaphore's until released);
 * release gives that permit back by its id; run releases on success and
 * failure. A release wakes waiting processes by pub/sub; a waiter otherwise
 * retries when the first permit would expire. The waiters of one
 * tw_redis_sem are served in FIFO order. Every process must use the same
 * `permits` for a name. */

typedef struct tw_redis_sem tw_redis_sem;
typedef struct tw_redis_permit tw_redis_permit;

/* name: 1..512 bytes; permits >= 1; ttl as for the lock. */
TW_API int tw_redis_sem_create(tw_redis *c, const char *name, uint32_t permits, double ttl,
                               tw_redis_sem **out);
/* Pending acquires fail with TW_ESHUTDOWN. TW_EBUSY while permits are held. */
TW_API int tw_redis_sem_destroy(tw_redis_sem *s);
TW_API int tw_redis_sem_acquire(tw_redis_sem *s, tw_deferred **out);
/* Gives p back (p is freed): its renewals stop now; *out (may be NULL)
 * fires with none once the server has taken it back, or fails with
 * TW_ELEASE if it had expired, or with the command's failure if its
 * outcome is unknown (it is then sent again in the background while the
 * permit could still be live). TW_EPERM if p is not a permit s holds. */
TW_API int tw_redis_sem_release(tw_redis_sem *s, tw_redis_permit *p, tw_deferred **out);
TW_API int tw_redis_sem_run(tw_redis_sem *s, tw_result_fn fn, void *arg, tw_deferred **out);
/* Permits this tw_redis_sem holds, and acquires waiting. */
TW_API size_t tw_redis_sem_held(const tw_redis_sem *s);
TW_API size_t tw_redis_sem_waiting(const tw_redis_sem *s);

/* The permit's id (its member in the sorted set). */
TW_API const char *tw_redis_permit_id(const tw_redis_permit *p);
/* Seconds the permit surely has left; 0 once lost. */
TW_API double tw_redis_permit_time_left(const tw_redis_permit *p);
/* A Deferred that fails with TW_ELEASE if the permit is lost (it expired
 * or was taken away), and fires with none when it is released first. */
TW_API int tw_redis_permit_lost(tw_redis_permit *p, tw_deferred **out);

/* ==== distributed queue (Redis Streams) ===================================
 * The DeferredQueue's shape across processes: put adds an entry to a
 * stream (XADD) and fires with its id once Redis has it; get gives a
 * Deferred that fires with the next entry for this consumer of the group.
 * An entry stays pending for this consumer until it is acknowledged (ack),
 * which removes it; an entry that is never acknowledged (the consumer died,
 * or its processing failed) is claimed by another consumer once it has been
 * idle `claim_idle` seconds, and after `max_deliveries` deliveries it moves
 * to the dead-letter stream instead. A consumer that starts first re-reads
 * its own pending entries (left by an earlier run under the same name). So
 * delivery is at least once: an entry put and not yet acknowledged is
 * delivered again until it is, for as long as Redis keeps it (docs/redis.md
 * says which persistence settings keep it across a restart).
 *
 * The queue reads with XREADGROUP BLOCK on a connection of its own (made
 * with the same configuration), and only while gets are waiting; it reads up
 * to `batch` entries at a time, which later gets take without a round trip. */

typedef struct tw_redis_queue tw_redis_queue;

typedef struct tw_redis_queue_config {
    const char *stream;      /* the stream's key (required) */
    const char *group;       /* the consumer group, created if missing */
    const char *consumer;    /* this consumer's name (NULL: made from host, pid, random) */
    const char *dead_letter; /* the dead-letter stream (NULL: "<stream>:dead") */
    double claim_idle;       /* seconds pending before another consumer may claim it; > 0 */
    uint32_t max_deliveries; /* deliveries before dead-lettering; >= 1 */
    uint32_t batch;          /* entries per read; >= 1 */
    double block;            /* seconds one blocking read waits; > 0 */
} tw_redis_queue_config;

#define TW_REDIS_QUEUE_CONFIG_INIT {NULL, "twine", NULL, NULL, 30.0, 5, 16, 1.0}

/* An entry, as a get's Deferred fires with it (freed with its value's drop
 * function, tw_redis_entry_free). */
typedef struct tw_redis_entry {
    const char *id;      /* the stream id ("1700000000000-0") */
    const char *data;    /* the payload: len bytes, then a NUL */
    size_t len;
    uint32_t deliveries; /* 1 the first time; more when redelivered */
} tw_redis_entry;

TW_API void tw_redis_entry_free(void *entry);

TW_API int tw_redis_queue_open(tw_redis *c, const tw_redis_queue_config *cfg,
                               tw_redis_queue **out);
/* Gets waiting fail with TW_ESHUTDOWN; entries read but not yet handed to
 * a get stay pending in Redis (re-read by a consumer of the same name, or
 * claimed by others). */
TW_API int tw_redis_queue_close(tw_redis_queue *q);
/* *out fires with the entry's id (a TW_REDIS_STRING reply) once Redis has
 * added it. Any bytes, any length Redis accepts. */
TW_API int tw_redis_queue_put(tw_redis_queue *q, const void *data, size_t len,
                              tw_deferred **out);
TW_API int tw_redis_queue_get(tw_redis_queue *q, tw_deferred **out);
/* Acknowledges (and deletes) the entry: *out (may be NULL) fires with an
 * INTEGER reply, 1, or 0 if it was no longer pending (acknowledged already,
 * or dead-lettered). */
TW_API int tw_redis_queue_ack(tw_redis_queue *q, const char *id, tw_deferred **out);
TW_API size_t tw_redis_queue_waiting(const tw_redis_queue *q); /* gets waiting */
TW_API size_t tw_redis_queue_buffered(const tw_redis_queue *q); /* entries read, not yet got */
TW_API const char *tw_redis_queue_consumer(const tw_redis_queue *q);

typedef struct tw_redis_queue_stats {
    uint64_t delivered;   /* entries handed to gets */
    uint64_t redelivered; /* of them, delivered before (deliveries > 1) */
    uint64_t claimed;     /* taken over from other consumers */
    uint64_t dead;        /* moved to the dead-letter stream by this consumer */
    uint64_t reads;       /* blocking reads sent */
} tw_redis_queue_stats;
TW_API void tw_redis_queue_stats_get(const tw_redis_queue *q, tw_redis_queue_stats *out);

/* ==== the pool across machines ============================================
 * A worker takes entries from a queue and runs each on a thread pool
 * (tw_defer_to_thread): when the task succeeds the entry is acknowledged;
 * when it fails the entry stays pending, to be claimed again after the
 * queue's claim_idle (by this process or another) and dead-lettered after
 * max_deliveries. Run one worker per process against the same stream and
 * group, and the pool spans them. */

typedef struct tw_redis_worker tw_redis_worker;

/* Runs on a pool thread. e is borrowed for the call. A value (dropped on
 * the loop thread) means done: the entry is acknowledged; a failure leaves
 * it for redelivery. */
typedef tw_result (*tw_redis_task_fn)(const tw_redis_entry *e, void *arg, tw_cancel *cancel);

/* Keeps `concurrency` (>= 1) entries in hand. pool NULL: the reactor's
 * pool. The queue must outlive the worker (stop it before closing the
 * queue). */
TW_API int tw_redis_worker_start(tw_redis_queue *q, tw_pool *pool, size_t concurrency,
                                 tw_redis_task_fn fn, void *arg, tw_redis_worker **out);
/* Stops taking entries; *out (may be NULL) fires with none once the tasks
 * running have finished and their acknowledgements have been answered;
 * then the worker is freed. */
TW_API int tw_redis_worker_stop(tw_redis_worker *w, tw_deferred **out);

typedef struct tw_redis_worker_stats {
    uint64_t started;  /* tasks started */
    uint64_t done;     /* tasks that succeeded (their entries acknowledged) */
    uint64_t failed;   /* tasks that failed (their entries left for redelivery) */
    uint64_t acked;    /* acknowledgements Redis confirmed */
} tw_redis_worker_stats;
TW_API void tw_redis_worker_stats_get(const tw_redis_worker *w, tw_redis_worker_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* TWINE_REDIS_H */
