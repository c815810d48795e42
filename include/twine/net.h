/*
 * twine/net.h — transports and protocols over TCP (IPv4, IPv6) and Unix
 * stream sockets, listening and connecting, endpoint strings, and a name
 * resolver in the reactor's pool. Twisted's network reactor, in C.
 *
 * A protocol is a table of callbacks; a factory makes one context per
 * connection. The reactor calls the protocol on its loop thread when a
 * connection is made, when data arrives, when the peer closes its sending
 * side, and once, last, when the connection is lost. The protocol talks
 * back through its transport, which never blocks: what the socket does not
 * take is queued and sent as the socket drains.
 *
 *     static void echo(void *ctx, tw_transport *t, const void *data, size_t len)
 *     {
 *         tw_transport_write(t, data, len);         // copied if it cannot go now
 *     }
 *     static const tw_protocol echo_protocol = {.data_received = echo};
 *
 *     tw_factory f = {&echo_protocol, NULL, NULL}; // every connection's context: NULL
 *     tw_listener *l;
 *     tw_failure *why;
 *     if (tw_endpoint_listen(r, "tcp:7000:interface=127.0.0.1", &f, &l, &why) != 0) {
 *         fprintf(stderr, "%s\n", tw_failure_message(why));   // names the address
 *         tw_failure_unref(why);
 *     }
 *     ...
 *     tw_deferred *d;                      // fires with the protocol's context
 *     tw_endpoint_connect(r, "tcp:localhost:7000:timeout=5", &client_factory, &d);
 *     tw_deferred_add_callbacks(d, connected, NULL, could_not_connect, NULL);
 *     tw_deferred_unref(d);
 *
 * Lifetimes. A protocol context is made by the factory's build function (or
 * is the factory's arg for every connection) and is the protocol's: nothing
 * calls the protocol after connection_lost, so connection_lost is where the
 * protocol frees it. The transport stays valid until connection_lost has
 * returned. Code that keeps it longer (a timer, a pool thread that will
 * write to it) takes a reference with tw_transport_ref first and gives it
 * back with tw_transport_unref; on a transport that has closed, every call
 * is harmless and writing is TW_ENOTCONN. connection_lost is never called
 * from inside a transport function: after tw_transport_abort_connection (or
 * a write that finds the peer gone) the caller's frame goes on safely, and
 * connection_lost comes when the callback that made the call has returned
 * (or in the next loop iteration, for a call made outside the protocol's
 * callbacks).
 *
 * Why a connection ended: connection_lost's reason is a tw_failure whose
 * code says how, and whose message names the peer's address:
 * TW_ECONNDONE (closed cleanly, by either side), TW_ECONNRESET (reset by
 * the peer), TW_ECONNABORTED (tw_transport_abort_connection), TW_ETIMEDOUT
 * (the system gave up, as with keep-alive), TW_ECONNLOST (any other error,
 * or the reactor shutting down).
 *
 * Writing. Writes made inside the protocol's callbacks are queued and sent
 * together, in one sendmsg, when the callback returns; a write made outside
 * them goes to the socket at once when nothing is queued. A transport above
 * its high-water mark (64 KiB by default) pauses its registered producer and
 * resumes it at the low-water mark (16 KiB), Twisted's producer and consumer;
 * a protocol that cannot keep up pauses reading. A peer that stops reading
 * therefore costs at most the high-water mark plus one write, not memory
 * without bound. SIGPIPE never reaches the process (sends use MSG_NOSIGNAL).
 *
 * Threads. Every function here belongs to the reactor's loop thread, except
 * tw_transport_ref, tw_transport_unref and tw_transport_write_from_thread,
 * which any thread may call. Writing to a transport from another thread
 * corrupts it (Twisted's seed 001 trap): builds with TW_DEBUG report such a
 * call through the diagnostic hook, naming the function. A pool thread
 * writes with tw_transport_write_from_thread instead, which hands the bytes
 * to the loop through call_from_thread, in the order that thread wrote them.
 *
 * Shutdown. During the reactor's shutdown (the during-shutdown phase) every
 * connection still open is closed and its protocol gets connection_lost
 * with TW_ECONNLOST; listeners stop accepting (their handles stay valid
 * until tw_listener_stop); pending connects and lookups fail with
 * TW_ESHUTDOWN. To close connections gracefully first, do it in a
 * before-shutdown trigger (examples/echo_server.c does).
 */
#ifndef TWINE_NET_H
#define TWINE_NET_H

#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <netinet/in.h>

#include "base.h"
#include "deferred.h"
#include "reactor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ==== addresses ===========================================================
 * An IPv4, IPv6 or Unix-domain socket address, by value. */
typedef struct tw_address {
    socklen_t len; /* 0: no address */
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
        struct sockaddr_un un;
        struct sockaddr_storage storage;
    } u;
} tw_address;

/* Enough for any address tw_address_format writes, with its terminator. */
#define TW_ADDRESS_STRLEN 128

/* A numeric IPv4 or IPv6 address ("127.0.0.1", "::1", "[::1]", "fe80::1%lo")
 * and a port. TW_EINVAL for anything else (names go through
 * tw_reactor_resolve). */
TW_API int tw_address_ip(tw_address *a, const char *ip, uint16_t port);
/* A Unix-domain path. TW_EINVAL if empty or longer than sun_path allows. */
TW_API int tw_address_unix(tw_address *a, const char *path);
/* AF_INET, AF_INET6, AF_UNIX, or 0 for an empty address. */
TW_API int tw_address_family(const tw_address *a);
/* The port of an IP address; TW_EINVAL for other kinds. */
TW_API int tw_address_port(const tw_address *a);
/* "127.0.0.1:80", "[::1]:80", "unix:/run/x.sock" ("unix:" for an unnamed
 * socket), snprintf-style: returns the full length, writes at most size. */
TW_API size_t tw_address_format(const tw_address *a, char *buf, size_t size);

/* The addresses a lookup found, in the order the system gave them. */
typedef struct tw_address_list {
    size_t count;
    tw_address items[];
} tw_address_list;

/* ==== protocols and factories =============================================
 * Every callback is optional and runs on the loop thread. `ctx` is the
 * connection's context. */
typedef struct tw_transport tw_transport;

typedef struct tw_protocol {
    /* The connection is up; t is valid until connection_lost returns. */
    void (*connection_made)(void *ctx, tw_transport *t);
    /* Bytes arrived. data is valid during the call only (it is the reactor's
     * read buffer). Without this callback data is discarded. */
    void (*data_received)(void *ctx, tw_transport *t, const void *data, size_t len);
    /* The peer closed its sending side. Return true to keep the connection
     * open for writing (half-close: close it later with lose_connection or
     * close_write); false, or no callback, closes it once what is queued
     * has been sent. */
    bool (*eof_received)(void *ctx, tw_transport *t);
    /* The last call, exactly once per connection_made. reason (borrowed;
     * tw_failure_ref to keep it) says why: see the codes above. */
    void (*connection_lost)(void *ctx, tw_transport *t, tw_failure *reason);
} tw_protocol;

/* What a listener (or a connect) makes a protocol with. build makes a new
 * connection's context in *ctx (peer: its address); a non-zero return
 * refuses the connection (it is closed; a connect fails with that code).
 * Without build, every connection's context is arg. The struct is copied. */
typedef struct tw_factory {
    const tw_protocol *protocol;
    int (*build)(void *arg, const tw_address *peer, void **ctx);
    void *arg;
} tw_factory;

/* ==== transports ========================================================== */

/* Sends len bytes: what the socket does not take now is copied and queued.
 * 0 once sent or queued; TW_ENOTCONN if the transport is closing or closed
 * or its write side is shut (nothing is queued); the code of a send error
 * (TW_ECONNRESET, ...) when the peer is gone, whose connection_lost follows. */
TW_API int tw_transport_write(tw_transport *t, const void *data, size_t len);
/* The same for a gather list (iovcnt >= 0), sent in order. */
TW_API int tw_transport_writev(tw_transport *t, const struct iovec *iov, int iovcnt);
/* Takes data, which drop frees (may be NULL for static data), instead of
 * copying it: queued as is, dropped once sent. The transport owns data in
 * every case, so an error return has dropped it already; a connection that
 * closes drops what it still holds. (A small buffer may be copied and
 * dropped at once when that saves a system call.) drop runs on the loop
 * thread, exactly once, possibly inside a transport call; it may call the
 * transport again, for instance to write the next buffer of a chain (what
 * libuv's write callback is used for): by then the buffer is out of the
 * queue. */
TW_API int tw_transport_write_owned(tw_transport *t, void *data, size_t len, tw_drop_fn drop);
/* Bytes queued and not yet taken by the socket. */
TW_API size_t tw_transport_buffered(const tw_transport *t);
/* The producer's marks: paused above high, resumed at or below low. TW_EINVAL
 * unless low <= high and high >= 1. */
TW_API int tw_transport_set_write_limits(tw_transport *t, size_t high, size_t low);

/* Sends what is queued, then closes: connection_lost with TW_ECONNDONE.
 * Reading stops at once. TW_ENOTCONN if already closing or closed. */
TW_API int tw_transport_lose_connection(tw_transport *t);
/* Closes now, dropping what is queued; the peer sees a reset.
 * connection_lost with TW_ECONNABORTED. TW_ENOTCONN if already closed (a
 * transport closing after lose_connection is aborted). */
TW_API int tw_transport_abort_connection(tw_transport *t);
/* Half-close: sends what is queued, then shuts the write side (the peer
 * reads end of file); reading goes on. When the peer has closed its side
 * too, the connection is done (TW_ECONNDONE). TW_ENOTCONN if not open for
 * writing. */
TW_API int tw_transport_close_write(tw_transport *t);

/* Stops (resumes) reading: a slow consumer's flow control. The peer's
 * writes back up to its own buffers. TW_ENOTCONN once closing. */
TW_API int tw_transport_pause_reading(tw_transport *t);
TW_API int tw_transport_resume_reading(tw_transport *t);

/* A streaming producer (Twisted's IPushProducer): paused when the transport
 * is above its high-water mark, resumed at its low-water mark, stopped
 * before connection_lost. Each is called on the loop thread; pause is called
 * from inside the write that crossed the mark. stop may be NULL. Once the
 * transport takes no more writes (lose_connection, close_write) a paused
 * producer is not resumed: it stays paused until it is stopped. */
typedef struct tw_producer {
    void (*pause_producing)(void *arg);
    void (*resume_producing)(void *arg);
    void (*stop_producing)(void *arg);
} tw_producer;
/* One producer per transport (TW_EBUSY otherwise; the struct is copied). A
 * producer registered above the high-water mark is paused at once.
 * TW_ENOTCONN once closed. */
TW_API int tw_transport_register_producer(tw_transport *t, const tw_producer *p, void *arg);
/* TW_EINVAL if none is registered. */
TW_API int tw_transport_unregister_producer(tw_transport *t);

/* TW_ENOTCONN once closed (the peer's is kept: it works then too). */
TW_API int tw_transport_local_address(const tw_transport *t, tw_address *out);
TW_API int tw_transport_peer_address(const tw_transport *t, tw_address *out);
/* TCP_NODELAY (on by default) and SO_KEEPALIVE (off by default). TW_ENOTSUP
 * on a Unix socket, TW_ENOTCONN once closed. */
TW_API int tw_transport_set_nodelay(tw_transport *t, bool on);
TW_API int tw_transport_set_keepalive(tw_transport *t, bool on);
/* The socket, for options twine does not wrap; TW_ENOTCONN once closed. The
 * transport owns it: never close it or read from it. */
TW_API int tw_transport_fileno(const tw_transport *t);
/* Open, and not closing. */
TW_API bool tw_transport_connected(const tw_transport *t);
TW_API void *tw_transport_context(const tw_transport *t);
TW_API tw_reactor *tw_transport_reactor(const tw_transport *t);

/* References, from any thread (the caller must hold one already, or be in a
 * protocol callback). The transport's memory goes with the last one. */
TW_API tw_transport *tw_transport_ref(tw_transport *t);
TW_API void tw_transport_unref(tw_transport *t);

/* From any thread, the caller holding a reference: copies the bytes and has
 * the loop thread write them (tw_reactor_call_from_thread), after every
 * earlier write_from_thread of the same thread. If the transport no longer
 * takes writes by then (closing or closed, or its write side shut), the
 * bytes are dropped (its protocol hears of the close through connection_lost).
 * If the loop cannot queue them (out of memory), the connection ends
 * (connection_lost, TW_ECONNLOST) rather than go on with a hole in the stream.
 * 0 once handed over; TW_ESHUTDOWN once the reactor refuses calls; TW_ENOMEM.
 * The reference keeps the transport's memory, not the reactor: the reactor
 * must not be destroyed while a thread may still call this. */
TW_API int tw_transport_write_from_thread(tw_transport *t, const void *data, size_t len);

/* ==== listening ===========================================================
 * A listener accepts connections and gives each a protocol from its
 * factory. It accepts in batches per wake-up. Out of file descriptors, it
 * stops accepting for a while (from 0.1 s, doubling to 1.6 s while the
 * shortage lasts) instead of spinning, and says so once per shortage
 * through the diagnostic hook (TW_DIAG_WARNING, TW_ESYS). */
typedef struct tw_listener tw_listener;

typedef struct tw_listen_options {
    int backlog;   /* 0: 1024 (the system caps it at somaxconn) */
    unsigned mode; /* Unix sockets: the socket file's permissions; 0: as the umask leaves them */
} tw_listen_options;

/* Listens on addr (port 0: the system picks one; tw_listener_address tells
 * which), with SO_REUSEADDR. options may be NULL. On failure the code is
 * returned and, if err is not NULL, *err gets a failure (yours) whose message
 * names the address: TW_EADDRINUSE, TW_EACCES, TW_EINVAL, ...; TW_ESHUTDOWN
 * once the reactor is shutting down. */
TW_API int tw_reactor_listen(tw_reactor *r, const tw_address *addr, const tw_listen_options *options,
                             const tw_factory *f, tw_listener **out, tw_failure **err);
/* The bound address (and so the port). */
TW_API int tw_listener_address(const tw_listener *l, tw_address *out);
/* Stops listening and frees l; connections already accepted are not
 * touched. A Unix socket's file is removed. *out (out may be NULL) is a
 * Deferred that has already fired with none, for Twisted's shape. A
 * listener the reactor's shutdown closed is only freed. */
TW_API int tw_listener_stop(tw_listener *l, tw_deferred **out);

/* ==== connecting ==========================================================
 * *out fires with the connection's protocol context (after connection_made
 * has run; valid until its connection_lost) or fails: TW_ECONNREFUSED,
 * TW_EUNREACH, TW_ETIMEDOUT after `timeout` seconds (negative or infinite: never),
 * TW_ENOTFOUND for a name nobody knows, or the build function's code; every
 * message names the address. Cancelling it abandons the attempt (TW_ECANCELED),
 * also from inside the factory's build or the protocol's connection_made
 * (before the Deferred has fired): that connection is then aborted once
 * connection_made has returned, and its connection_lost (TW_ECONNABORTED)
 * follows. The return code is non-zero only when no Deferred could be made
 * (TW_EINVAL for a NULL argument, TW_ENOMEM, TW_ESHUTDOWN). */
TW_API int tw_reactor_connect(tw_reactor *r, const tw_address *addr, double timeout,
                              const tw_factory *f, tw_deferred **out);

/* ==== endpoint strings (Twisted's) ========================================
 * Servers:  tcp:PORT[:interface=ADDR][:backlog=N]   (interface: numeric; default all IPv4)
 *           tcp6:PORT[:interface=ADDR][:backlog=N]  (default interface ::)
 *           unix:PATH[:mode=0660][:backlog=N]
 * Clients:  tcp:HOST:PORT[:timeout=SECONDS]           (HOST numeric, or a name to resolve;
 *                                                      each address is tried in turn)
 *           unix:PATH[:timeout=SECONDS]
 * Arguments are positional or key=value (tcp: port, interface, backlog;
 * host, port, timeout; unix: address, mode, backlog; path, timeout). A
 * backslash makes the next character literal, so an IPv6 address is written
 * tcp:7000:interface=\:\:1, or in square brackets that open the value
 * (interface=[::1], tcp:[::1]:80); in a Unix socket's path brackets are
 * plain characters. The default connect timeout is 30 s.
 * A malformed string is TW_EINVAL with a message saying what is wrong: for
 * listen in *err, for connect as the Deferred's failure. tw_endpoint_listen
 * returns what tw_reactor_listen does; tw_endpoint_connect, like
 * tw_reactor_connect, returns non-zero only when no Deferred could be made
 * (TW_EINVAL for a NULL argument, TW_ENOMEM, TW_ESHUTDOWN). */
TW_API int tw_endpoint_listen(tw_reactor *r, const char *endpoint, const tw_factory *f,
                              tw_listener **out, tw_failure **err);
TW_API int tw_endpoint_connect(tw_reactor *r, const char *endpoint, const tw_factory *f,
                               tw_deferred **out);

/* ==== the resolver ========================================================
 * getaddrinfo on a pool thread of the reactor; *out fires on the loop
 * thread with a tw_address_list (the value's drop frees it) of stream
 * addresses carrying `port`, or fails with TW_ENOTFOUND (or TW_ENOMEM,
 * TW_EIO; TW_EINVAL for a name over 1024 bytes; TW_ECANCELED; TW_ESHUTDOWN
 * when the reactor shuts down first) and a message naming the host. family:
 * AF_UNSPEC, AF_INET or AF_INET6. A numeric host is parsed on the spot and
 * *out has already fired (TW_ENOTFOUND if it is not of `family`). Returns
 * 0 once *out is made; TW_EINVAL for a NULL or empty host or another
 * family, TW_ENOMEM, TW_ESHUTDOWN once the reactor is shutting down.
 *
 * Lookups use at most half of the pool's threads (at least one), so slow
 * name servers cannot starve other thread work; the rest wait their turn,
 * in order. Cancelling a lookup that waits removes it; one that runs fails
 * at once with TW_ECANCELED and its thread's answer is dropped when it
 * comes (getaddrinfo itself cannot be interrupted). */
TW_API int tw_reactor_resolve(tw_reactor *r, const char *host, uint16_t port, int family,
                              tw_deferred **out);

#ifdef __cplusplus
}
#endif

#endif /* TWINE_NET_H */
