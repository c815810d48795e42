/*
 * twine.h — the whole library: one include for every layer.
 *
 *     #include <twine.h>
 *
 *     tw_lock lock = TW_LOCK_INIT;
 *     TW_WITH(&lock) { ... }
 *
 * Each layer also has its own header under twine/, usable alone:
 * twine/base.h (errors, time, allocator, diagnostics), twine/sync.h (blocking
 * primitives for threads), twine/worker.h (workers, team, pool, Queue) and
 * twine/deferred.h (Deferreds, failures, clocks, DeferredLock/Semaphore/Queue)
 * and twine/reactor.h (the event loop and its bridge to threads).
 * twine/net.h: transports and protocols over TCP and Unix sockets, endpoints,
 * the resolver.
 */
#ifndef TWINE_H
#define TWINE_H

#include "twine/base.h"
#include "twine/sync.h"
#include "twine/worker.h"
#include "twine/deferred.h"
#include "twine/async.h"
#include "twine/reactor.h"
#include "twine/net.h"

#endif /* TWINE_H */
