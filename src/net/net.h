/* Internal: the net layer's state per reactor, the transport's layout, and
 * the interfaces between its modules: state.c (per-reactor state, shutdown),
 * transport.c (reading, writing, closing, flow control), wqueue.c (the write
 * queue), listen.c, connect.c, resolve.c, endpoint.c, address.c, sock.c (the
 * few system calls that differ between systems).
 *
 * Threads: everything here is the loop thread's, except a transport's
 * reference count and a lookup record's count and state, which are atomic. */
#ifndef TW_NET_INTERNAL_H
#define TW_NET_INTERNAL_H

#include <twine/net.h>

#include "base/diag.h"
#include "reactor/owner.h"

/* ---- sizes ----------------------------------------------------------------- */
#define TW__NET_RBUF (64 * 1024)    /* the read buffer, one per reactor */
#define TW__NET_CHUNK (16 * 1024)   /* a write queue's copy chunk */
#define TW__NET_CHUNK_CACHE 8       /* free chunks a reactor keeps */
#define TW__NET_IOV 64              /* segments one sendmsg takes */
#define TW__NET_SMALL 256           /* an owned buffer this small is copied */
#define TW__NET_READS 4             /* reads per wake-up while they fill the buffer */
#define TW__NET_ACCEPTS 128         /* accepts per wake-up */
#define TW__NET_HIGH (64 * 1024)
#define TW__NET_LOW (16 * 1024)
#define TW__NET_BACKLOG 1024

/* ---- an intrusive circular list with a sentinel ------------------------------ */
typedef struct tw__ring {
    struct tw__ring *prev, *next;
} tw__ring;

#define TW__RING_ITEM(l, type, field) ((type *)(void *)((char *)(l) - offsetof(type, field)))

static inline void tw__ring_init(tw__ring *s)
{
    s->prev = s->next = s;
}
static inline bool tw__ring_empty(const tw__ring *s)
{
    return s->next == s;
}
static inline void tw__ring_push_back(tw__ring *s, tw__ring *l)
{
    l->prev = s->prev;
    l->next = s;
    s->prev->next = l;
    s->prev = l;
}
static inline void tw__ring_remove(tw__ring *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->prev = l->next = l;
}

/* ---- per-reactor state (state.c) ------------------------------------------------
 * Made on first use and found through a registry keyed by the reactor; freed
 * by the reactor's after-shutdown trigger, once its during-shutdown trigger
 * has closed everything (or by its tick, if one is still posted then).
 *
 * depth counts the net layer's entries from the reactor in progress (fd
 * callbacks, timers, posted calls, the shutdown trigger). While it is
 * non-zero, writes are queued and the transport is put on `dirty`, and a
 * transport that closes goes on `lost`; the outermost exit (tw__net_leave)
 * flushes the dirty transports (one writev each) and delivers connection_lost
 * to the lost ones, so connection_lost never runs inside a call the protocol
 * made. Outside any entry, a closing transport posts `tick`, which enters
 * and leaves. */
typedef struct tw__lookup tw__lookup;

typedef struct tw__net {
    struct tw__net *next; /* registry */
    tw_reactor *r;
    uint32_t depth;
    bool closed;          /* the during-shutdown trigger has run */
    bool tick_posted;     /* `tick` is in the reactor's queue */
    bool free_after_tick; /* the after-shutdown trigger found the tick posted */
    tw_call tick;
    tw_transport *dirty_head, *dirty_tail; /* through next_dirty */
    tw_transport *lost_head, *lost_tail;   /* through next_lost */
    tw__ring transports;                   /* not yet delivered */
    tw__ring listeners;
    tw__ring connectors;
    char *rbuf; /* TW__NET_RBUF bytes, made on first read */
    void *chunks[TW__NET_CHUNK_CACHE];
    unsigned nchunks;
    /* the resolver (resolve.c) */
    tw__ring lookups_waiting; /* not yet handed to the pool, oldest first */
    tw__ring lookups_running; /* handed to the pool, answer not yet back */
    size_t lookups_in_pool;   /* records handed over whose answer has not come back */
} tw__net;

/* The reactor's state, made if needed. TW_ESHUTDOWN once its shutdown has
 * reached the during phase; TW_ENOMEM. Loop thread. */
int tw__net_get(tw_reactor *r, tw__net **out);

static inline void tw__net_enter(tw__net *ns)
{
    ns->depth++;
}
/* transport.c: the outermost exit flushes and delivers (see above). */
void tw__net_leave(tw__net *ns);
/* A transport closed while no entry was in progress: post the tick. */
void tw__net_schedule(tw__net *ns);

/* Copy chunks: a cache of TW__NET_CHUNK-sized blocks (wqueue.c). */
void *tw__net_chunk_get(tw__net *ns);
void tw__net_chunk_put(tw__net *ns, void *chunk);
void tw__net_chunks_free(tw__net *ns);

/* Shutdown's during phase: each module closes what it has. */
void tw__transports_shutdown(tw__net *ns);
void tw__listeners_shutdown(tw__net *ns);
void tw__connectors_shutdown(tw__net *ns);
void tw__lookups_shutdown(tw__net *ns);

/* ---- the write queue (wqueue.c) ---------------------------------------------------
 * A ring of segments, each a run of bytes still to send with what frees it:
 * the caller's buffer and drop function (write_owned), or a copy chunk of
 * ours. Copies append to the last chunk while it has room, so many small
 * writes make one segment. */
typedef struct tw__chunk {
    size_t cap, used;
    char data[];
} tw__chunk;

typedef struct tw__seg {
    const char *p;   /* next byte to send */
    size_t len;      /* bytes left */
    tw_drop_fn drop; /* frees owner; TW__SEG_CHUNK for a chunk of ours; NULL: nothing */
    void *owner;
} tw__seg;

#define TW__SEG_CHUNK ((tw_drop_fn)(uintptr_t)1)
#define TW__INLINE_SEGS 4

typedef struct tw__wqueue {
    tw__seg *segs; /* ring of cap entries (a power of two); inline ones at first */
    uint32_t head, n, cap;
    size_t bytes;
    tw__seg inline_segs[TW__INLINE_SEGS];
} tw__wqueue;

void tw__wq_init(tw__wqueue *q);
/* Appends a copy of len bytes. TW_ENOMEM leaves the queue as it was. */
int tw__wq_copy(tw__net *ns, tw__wqueue *q, const void *data, size_t len);
/* Appends len bytes at p of the caller's buffer `owner`, which drop frees
 * once they are sent (copied, and owner dropped at once, if small). On
 * TW_ENOMEM the caller still owns it. */
int tw__wq_own(tw__net *ns, tw__wqueue *q, const char *p, size_t len, tw_drop_fn drop,
               void *owner);
/* Sends with sendmsg until the queue is empty or the socket is full. 0, or
 * the negative errno of a failed send. */
int tw__wq_send(tw__net *ns, tw__wqueue *q, int fd);
/* Drops every segment and frees a grown ring. */
void tw__wq_clear(tw__net *ns, tw__wqueue *q);

/* ---- transports (transport.c) ------------------------------------------------------ */
enum {
    T_OPEN = 0,    /* reading and writing */
    T_CLOSING = 1, /* lose_connection: flushing, then closing */
    T_CLOSED = 2,  /* socket closed, connection_lost to deliver */
    T_DEAD = 3     /* connection_lost delivered */
};

enum {
    TF_READING = 1u << 0,     /* reader registered */
    TF_WRITING = 1u << 1,     /* writer registered */
    TF_PAUSED = 1u << 2,      /* pause_reading */
    TF_EOF = 1u << 3,         /* the peer shut its sending side */
    TF_WR_CLOSING = 1u << 4,  /* close_write: shut the write side once flushed */
    TF_WR_SHUT = 1u << 5,     /* write side shut */
    TF_DIRTY = 1u << 6,       /* on ns->dirty */
    TF_PRODUCER = 1u << 7,    /* a producer is registered */
    TF_PROD_PAUSED = 1u << 8, /* and paused */
    TF_RESUME = 1u << 9,      /* resume it at the next writable event */
    TF_UNIX = 1u << 10
};

struct tw_transport {
    tw__net *ns;   /* while open; the protocol's calls use it */
    tw_reactor *r;
    int fd;
    uint32_t state;
    uint32_t flags;
    uint32_t refs; /* atomic: the net layer's (until delivery) and the holders' */
    const tw_protocol *proto;
    void *ctx;
    tw__wqueue q;
    size_t high, low;
    tw_producer prod;
    void *prod_arg;
    tw_failure *reason; /* for connection_lost */
    tw_transport *next_dirty, *next_lost;
    tw__ring link; /* in ns->transports until delivered */
    tw_address peer;
};

/* A transport for a connected, non-blocking socket (taken: closed on
 * failure too), with the factory's protocol and context; the caller then
 * calls tw__transport_start inside an entry. */
int tw__transport_new(tw__net *ns, int fd, bool is_unix, const tw_address *peer,
                      const tw_factory *f, tw_transport **out);
/* (peer is given for an accepted socket, NULL for a connected one.) */
/* Calls connection_made. */
void tw__transport_start(tw_transport *t);

/* ---- listeners (listen.c) -------------------------------------------------------------- */
/* tw_reactor_listen once its arguments are checked. */
int tw__listen(tw_reactor *r, const tw_address *addr, const tw_listen_options *options,
               const tw_factory *f, tw_listener **out, tw_failure **err);

/* ---- connectors (connect.c) ------------------------------------------------------------ */
/* Connects to addr, or (host not NULL, addr NULL) to the addresses the
 * resolver finds for host with `port`; the arguments are checked. */
int tw__connect(tw_reactor *r, const char *host, const tw_address *addr, uint16_t port,
                double timeout, const tw_factory *f, tw_deferred **out);

/* ---- sockets (sock.c) ------------------------------------------------------------------
 * Non-blocking, close-on-exec, and never raising SIGPIPE. Each returns the
 * fd, or a negative errno. */
int tw__sock_open(int family);
/* Linux gives an accepted TCP socket its listener's TCP_NODELAY, which
 * listeners set: one system call less per connection. */
#ifdef __linux__
#define TW__SOCK_ACCEPT_INHERITS_NODELAY 1
#else
#define TW__SOCK_ACCEPT_INHERITS_NODELAY 0
#endif
int tw__sock_accept(int lfd, tw_address *peer);
/* sendmsg without SIGPIPE: bytes sent, or a negative errno. */
ssize_t tw__sock_send(int fd, const struct iovec *iov, int n);
/* The message of a negative errno, thread-safe. */
const char *tw__sock_strerror(int neg_errno, char *buf, size_t size);

/* ---- the resolver (resolve.c) --------------------------------------------------------- */
/* Tests only: called on the pool thread before each lookup; a non-zero
 * return is taken as getaddrinfo's error code (and getaddrinfo is skipped).
 * Set it before any lookup starts. */
extern int (*tw__resolver_hook)(const char *host);

/* Test inspection. */
size_t tw__resolver_in_pool(tw_reactor *r);
uint64_t tw__listener_fd_shortages(const tw_listener *l);
bool tw__listener_backing_off(const tw_listener *l);

/* ---- thread checks ------------------------------------------------------------------------ */
#ifdef TW_DEBUG
#define TW__NCHECK(r, what, fn)                                                          \
    do {                                                                                 \
        uint32_t owner_ = tw__reactor_thread(r);                                         \
        if (owner_ && owner_ != tw__self())                                              \
            tw__wrong_thread((what), owner_, (fn));                                      \
    } while (0)
#else
#define TW__NCHECK(r, what, fn) ((void)0)
#endif

#endif
