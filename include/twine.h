/*
 * twine.h — the whole library: one include for every layer.
 *
 *     #include <twine.h>
 *
 *     tw_lock lock = TW_LOCK_INIT;
 *     TW_WITH(&lock) { ... }
 *
 * Each layer also has its own header under twine/, usable alone:
 * twine/base.h (errors, time, diagnostics) and twine/sync.h (blocking
 * primitives for threads).
 */
#ifndef TWINE_H
#define TWINE_H

#include "twine/base.h"
#include "twine/sync.h"

#endif /* TWINE_H */
