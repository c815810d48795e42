/* Internal to src/debug/ and the tracking paths (src/sync/lock_debug.c):
 * what an acquire or a release of a Lock does when nothing is new, inline,
 * so that it costs one call: the calling thread's record, the first probe
 * of the address map, the chain key and the chain cache, the push and the
 * pop of the held stack. Anything else (a record to make, a class to make,
 * a stack never seen, a release out of order) goes to the functions of
 * internal.h. */
#ifndef TW_DEBUG_FAST_H
#define TW_DEBUG_FAST_H

#include "debug/internal.h"

extern __thread tw__dbg_thread *tw__dbg_self; /* thread.c: NULL until the first call */
extern uintptr_t tw__dbg_map_key[DBG_MAP];    /* graph.c: the address map */
extern uint32_t tw__dbg_map_cls[DBG_MAP];
extern uint32_t tw__dbg_map_owner[DBG_MAP];
extern uint64_t tw__dbg_chains[DBG_CHAINS];   /* graph.c: the chain cache */
extern uint64_t tw__dbg_chain_gen;

/* A map slot's class word: the class id, and for an address class the
 * kind of object it was made for. */
#define MAP_CLASS 0xffffu
#define MAP_KIND_SHIFT 16
#define MAP_ADDR (1u << 24)

static inline uint64_t tw__dbg_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* Fibonacci hashing: objects are at least 4-byte aligned. */
static inline uint32_t tw__dbg_map_hash(uintptr_t a)
{
    return (uint32_t)(((uint64_t)a * 0x9e3779b97f4a7c15ULL) >> 48) & (DBG_MAP - 1);
}

/* One multiply and a fold per class: a collision between two stacks only
 * lets one of them skip a check it would have passed, most likely. */
static inline uint64_t tw__dbg_chain(uint64_t prev, uint32_t cls, bool try_)
{
    if (!prev)
        prev = LD(tw__dbg_chain_gen);
    uint64_t x = (prev + ((uint64_t)cls << 1 | (try_ ? 1 : 0))) * 0xff51afd7ed558ccdULL;
    return (x ^ (x >> 31)) | 1;
}

static inline bool tw__dbg_chain_known(uint64_t key)
{
    return LD(tw__dbg_chains[key & (DBG_CHAINS - 1)]) == key;
}

/* obj's class from the first probe of the map, with its slot; 0 if that
 * probe does not have it (then tw__dbg_class_of). Without the second look
 * at the key that slot_class (graph.c) takes: a slot freed and given to
 * another object between the two loads would have to be an object freed
 * while being taken. */
static inline uint32_t tw__dbg_class_fast(const void *obj, enum tw__dk kind, uint32_t *slot)
{
    uintptr_t a = (uintptr_t)obj;
    uint32_t i = tw__dbg_map_hash(a);
    /* acquire: the class stored before the key (graph.c, map_set). */
    if (__atomic_load_n(&tw__dbg_map_key[i], __ATOMIC_ACQUIRE) != a)
        return 0;
    uint32_t c = LD(tw__dbg_map_cls[i]);
    if ((c & MAP_ADDR) && ((c >> MAP_KIND_SHIFT) & 0xffu) != (uint32_t)kind)
        return 0;
    *slot = i;
    return c & MAP_CLASS;
}

#endif
