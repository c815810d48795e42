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
 * primitives for threads) and twine/worker.h (workers, team, pool, Queue).
 */
#ifndef TWINE_H
#define TWINE_H

#include "twine/base.h"
#include "twine/sync.h"
#include "twine/worker.h"

#endif /* TWINE_H */
