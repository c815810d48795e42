/* Internal: the Redis layer's connection, scripts and pub/sub, shared by its
 * modules (conn.c, reply.c, script.c, pubsub.c, run.c, lock.c, sem.c, queue.c,
 * worker.c). */
#ifndef TW_REDIS_INTERNAL_H
#define TW_REDIS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <twine/redis.h>

#include "base/alloc.h"
#include "base/diag.h"

struct redisAsyncContext;
struct redisReply;

/* ---- scripts (script.c) ------------------------------------------------------
 * The layer's Lua scripts. A script is sent as EVAL the first time on each
 * connection (which caches it on the server) and as EVALSHA afterwards; a
 * NOSCRIPT answer (the cache was flushed) sends it again as EVAL. */
typedef struct tw__script {
    const char *name; /* for messages */
    const char *text;
    int id;           /* bit in tw_redis.scripts_sent; < 32 */
    char sha[41];     /* filled on first use, by whichever loop thread sends it first */
    bool ready;       /* sha is filled: stored with release after it, loaded with acquire */
} tw__script;

/* Script ids (bits of tw_redis.scripts_sent), one per script of the layer. */
enum {
    TW__SCRIPT_LOCK_ACQUIRE = 0,
    TW__SCRIPT_LOCK_RELEASE = 1,
    TW__SCRIPT_LOCK_EXTEND = 2,
    TW__SCRIPT_FENCED_SET = 3,
    TW__SCRIPT_SEM_ACQUIRE = 4,
    TW__SCRIPT_SEM_RELEASE = 5,
    TW__SCRIPT_SEM_RENEW = 6,
    TW__SCRIPT_TEST = 7, /* the tests' own */
    TW__SCRIPT_QUEUE_PENDING = 8,
    TW__SCRIPT_QUEUE_CLAIM = 9,
    TW__SCRIPT_QUEUE_ACK = 10,
    TW__SCRIPT_LOCK_PASS = 11
};

/* The SHA-1 of text, in hex, into out[41] (libcrypto's digest); TW_ENOMEM
 * if it cannot be computed, out untouched. */
int tw__sha1_hex(const char *text, size_t len, char out[41]);

/* ---- commands (conn.c) ------------------------------------------------------- */

enum { CMD_WAITING = 1, CMD_SENT = 2, CMD_DONE = 3 };

/* A command on its way: waiting for a connection (on c->waiting, ours) or
 * sent (on c->sent until settled; hiredis holds it as privdata until its
 * reply, or NULL, comes back, and the reply callback frees it). */
typedef struct tw__rcmd {
    struct tw__rcmd *prev, *next;
    tw_redis *c;
    tw_deferred *d;             /* the caller's; NULL once settled */
    char *buf;                  /* the formatted command (hiredis's allocation) */
    size_t len;
    double deadline;            /* reactor seconds; INFINITY: none */
    tw__script *script;         /* an EVALSHA of this script, or NULL */
    uint8_t where;              /* CMD_* */
    bool is_eval;               /* buf has been turned into an EVAL of the script */
    bool retried;               /* NOSCRIPT already sent it again */
    char name[24];              /* the command's name, for messages */
} tw__rcmd;

typedef struct tw__rlist {
    tw__rcmd *head, *tail;
    size_t n;
} tw__rlist;

enum { LINK_CONNECTING = 1, LINK_READY, LINK_BACKOFF, LINK_CLOSING, LINK_CLOSED };

/* Called when a connection comes up (every time) or goes down. */
typedef void (*tw__redis_event_fn)(void *arg, tw_redis *c, bool up);

struct tw_redis {
    tw_reactor *r;
    uint32_t thread; /* TW_DEBUG: the loop thread (the creator until the loop calls back) */

    /* configuration, strings owned */
    char *host, *unix_path, *password;
    int port, db;
    double connect_timeout, command_timeout, reconnect_min, reconnect_max;
    char addr[96]; /* "host:port" or "unix:path", for messages */

    /* the link: one hiredis context at a time */
    struct redisAsyncContext *ac; /* NULL while not connecting or connected */
    int fd;
    unsigned watching; /* TW_READABLE | TW_WRITABLE registered with the reactor */
    int state;         /* LINK_* */
    uint64_t generation;
    uint32_t scripts_sent; /* bit per script: EVAL'd on this connection */
    double backoff;        /* the next reconnect delay, before jitter */
    uint64_t rng;
    tw_delayed_call *link_timer; /* connect timeout (CONNECTING), reconnect (BACKOFF) */
    tw_delayed_call *cmd_timer;  /* the earliest command deadline, when armed */
    double cmd_timer_at;

    tw__rlist waiting, sent;

    /* re-entrancy: hiredis and the reactor call in, and a Deferred fired
     * from there may call the public functions again */
    unsigned depth;     /* calls of ours on the stack */
    bool in_send;       /* inside redisAsyncFormattedCommand */
    bool write_noted;   /* hiredis asked to write during in_send */
    bool flush_pending; /* a write to do when the outermost call returns */
    bool freeing;       /* close finished: free at depth 0 */
    unsigned in_hiredis; /* calls into hiredis on the stack (conn.c) */
    int pending_kill;    /* a redisAsyncFree/Disconnect asked for inside one */

    char error[192]; /* the last connection error */
    size_t users;    /* locks, semaphores, queues on c */
    tw_deferred *close_d;
    tw_deferred **ready_waiters; /* tw_redis_wait_connected */
    size_t n_ready, cap_ready;
    tw__redis_event_fn on_event;
    void *on_event_arg;
    struct tw__pubsub *pubsub;     /* the subscriber connection (pubsub.c), or NULL */
    struct tw__lock_hub *lock_hub; /* the locks' shared state (lock.c), or NULL */
    tw_redis_stats stats;
};

#ifdef TW_DEBUG
#define TW__REDIS_CHECK(c, fn)                                                         \
    do {                                                                               \
        if ((c)->thread != tw__self())                                                 \
            tw__wrong_thread("a Redis connection", (c)->thread, (fn));                 \
    } while (0)
#else
#define TW__REDIS_CHECK(c, fn) ((void)0)
#endif

/* Sends buf (formatted by hiredis; taken in every case) with `timeout`
 * seconds (negative: none); script: buf is an EVALSHA of it. */
int tw__redis_send(tw_redis *c, char *buf, size_t len, double timeout, tw__script *script,
                   tw_deferred **out);
/* EVALSHA of `script` with nkeys keys then the other arguments (argc in
 * all, each with its length); the connection's command timeout. */
int tw__redis_eval(tw_redis *c, tw__script *script, int nkeys, int argc,
                   const char *const *argv, const size_t *lens, tw_deferred **out);
/* A new connection with c's configuration. */
int tw__redis_clone(tw_redis *c, tw_redis **out);
/* Closes c at once: commands in flight fail with TW_ESHUTDOWN. */
void tw__redis_abort(tw_redis *c);
/* A command handed to hiredis directly with its own callback (pub/sub):
 * TW_ENOTCONN unless the connection is up. */
typedef void (*tw__raw_fn)(struct redisAsyncContext *ac, void *reply, void *privdata);
int tw__redis_raw(tw_redis *c, tw__raw_fn fn, void *privdata, const char *fmt, ...);
/* Calls into c from outside hiredis: the outermost one frees a closed
 * connection and makes the writes its callees deferred. */
void tw__redis_enter(tw_redis *c);
void tw__redis_leave(tw_redis *c);
/* Copies a hiredis reply into one block (NULL when memory is short). */
tw_redis_reply *tw__redis_reply_copy(const struct redisReply *r);
/* The reply as a value result, or a failure for an error reply. */
tw_result tw__redis_reply_result(const struct redisReply *r);
/* Whether a command's failure is one of the moment, worth the same command
 * again later: it was not sent or its outcome is unknown (no connection, a
 * timeout, a lost connection, no memory), or the server refused it for a
 * passing state: LOADING (reading its data after a restart), BUSY (a
 * script running too long), TRYAGAIN, MASTERDOWN. */
bool tw__redis_transient(const tw_failure *f);
/* A random 64-bit value for jitter and ids (per connection). */
uint64_t tw__redis_random(tw_redis *c);

/* The reactor of the queue's connection (queue.c, for worker.c). */
tw_reactor *tw__redis_queue_reactor(const tw_redis_queue *q);

/* ---- pub/sub (pubsub.c) ------------------------------------------------------
 * One subscriber connection per tw_redis, made on first use, which
 * subscribes again to every channel after each reconnection. Messages sent
 * while it is down are lost: when the subscription is confirmed again, each
 * listener is called with a NULL payload, and asks the server for what it
 * was waiting to hear of. */
typedef void (*tw__message_fn)(void *arg, const char *payload, size_t len);
typedef struct tw__sub tw__sub;
/* Subscribes fn(arg) to channel; *ready (may be NULL) fires with none once
 * the server has confirmed the first subscription (fails with TW_ESHUTDOWN
 * if the subscription ends first). */
int tw__redis_subscribe(tw_redis *c, const char *channel, tw__message_fn fn, void *arg,
                        tw__sub **out, tw_deferred **ready);
/* Stops fn being called, at once; the record goes when hiredis lets go. */
void tw__redis_unsubscribe(tw__sub *s);
/* Closes the subscriber connection of c (when c closes). */
void tw__redis_pubsub_close(tw_redis *c);

/* ---- run under a grant (run.c) -----------------------------------------------
 * tw_redis_lock_run and tw_redis_sem_run: acquire, call fn, release on every
 * way out; a grant lost while fn ran turns fn's value into TW_ELEASE. The
 * primitive (prim) is kept by ref/unref from the acquire to the end. */
typedef struct tw__redis_run_ops {
    /* The message of the TW_ELEASE failure, with the primitive's name (%s). */
    const char *lost_fmt;
    const char *(*name)(void *prim);
    int (*acquire)(void *prim, tw_deferred **out);
    /* What was granted (consumes r, the acquire's value): a token that
     * release recognises. */
    uint64_t (*granted)(void *prim, tw_result r);
    /* fn has returned. True with *rd the release's Deferred when one was
     * sent; false when there is nothing to release (fn released the grant
     * itself, the primitive was destroyed) or the release could not be
     * sent. *lost: the grant was already lost. */
    bool (*release)(void *prim, uint64_t token, bool *lost, tw_deferred **rd);
    void (*ref)(void *prim);
    void (*unref)(void *prim);
} tw__redis_run_ops;
/* The caller has checked prim, fn and the thread. */
int tw__redis_run(const tw__redis_run_ops *ops, void *prim, tw_result_fn fn, void *arg,
                  tw_deferred **out);

#endif
