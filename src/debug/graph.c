/* The order graph: lock classes, the address map, edges between classes, the
 * chain cache, and the report of the first edge that closes a cycle.
 *
 * Classes. A class is what the graph orders: every Lock (RLock, Semaphore)
 * initialised at one site is one class, so a thousand per-connection locks
 * cost one node. Its key is, by precedence:
 *   NAMED   a tw_lock_class the application put the object in (one class
 *           whatever the kind of the objects put in it);
 *   SITE    the file and line of its init call in tracking code (two init
 *           calls on one line of one file are one class, whatever their
 *           translation unit);
 *   ADDR    the object's own address, for an object never initialised in
 *           tracking code: a static Lock is its own class, as its
 *           TW_LOCK_INIT is its one init site; a Lock on the heap or the
 *           stack without an init call is too, until twine frees its block
 *           (tw__dbg_forget) or an init call re-keys it;
 *   PSEUDO  a reactor's loop, a thread function, a DeferredLock;
 *   SUB     subclass 1..7 of another class (lockdep's _nested), a class of
 *           its own for the graph.
 * Class ids are small integers below DBG_CLASSES. An ADDR or PSEUDO class
 * goes away with its object (its edges unlinked, its id reused), and the
 * chain cache's generation moves so that no cached stack names a reused id.
 *
 * The address map is an open-addressing table from an object's address to
 * its class and, for a Lock, its tracked holder (`owner`). Lookups are
 * lock-free: a slot's class is stored before its key (release), and a
 * reader re-reads the key after the class. Inserts and removals hold
 * tw__dbg_mu.
 *
 * Edges. Taking class B while holding class A adds A -> B, once, with the
 * file:line where A and B were taken and the thread. A new edge is checked
 * with a breadth-first search from B for A: a path B -> ... -> A means the
 * new edge closes a cycle, which is reported once, naming every edge. The
 * closing edge is kept, marked CLOSING, so that it is never reported again,
 * and is not followed by later searches (one inversion makes one report,
 * not one for every cycle built on it). Declared orders
 * (tw_lock_class_order) are edges too, marked DECLARED.
 *
 * The chain cache: each held entry carries a key hashed from the classes
 * below it (and whether each was a try), as lockdep keys its lock chains. A
 * stack whose key is in the cache has had all its edges checked, so the
 * acquire does nothing more. The cache is a direct-mapped array of keys: a
 * collision only costs a check that finds every edge already there. */
#include <stdarg.h>
#include <stdint.h>

#include "base/thread.h"
#include "debug/fast.h"

tw_lock tw__dbg_mu = TW_LOCK_INIT;
uint32_t tw__dbg_on;

static void flush_full(void);
static uint32_t full_pending; /* atomic: FULL_* bits to report once mu is free */
static uint32_t full_once;    /* atomic: FULL_* bits already reported */

void tw__dbg_lock(void)
{
    tw__lock_acquire_plain(&tw__dbg_mu);
}

void tw__dbg_unlock(void)
{
    tw__lock_release_plain(&tw__dbg_mu);
    if (LD(full_pending))
        flush_full();
}

#define mix64 tw__dbg_mix

/* ---- reports ------------------------------------------------------------------ */

const char *tw__dbg_base(const char *file)
{
    const char *s = file ? strrchr(file, '/') : NULL;
    return s ? s + 1 : file ? file : "?";
}

void tw__dbg_report(int code, const char *function, const char *message)
{
    tw__dbg_thread *t = tw__dbg_me_if();
    if (t && LD(t->reporting))
        return; /* the hook took a tracked lock and met a problem of its own */
    if (t)
        ST(t->reporting, true); /* atomic: see report_left in thread.c */
    tw_diag_report(TW_DIAG_WARNING, code, function, message);
    if (t)
        ST(t->reporting, false);
}

/* The report waits until mu is free (tw__dbg_unlock): a hook may take a
 * tracked Lock, which may need mu. */
void tw__dbg_full_locked(unsigned bit)
{
    if (!(LD(full_once) & bit))
        __atomic_fetch_or(&full_pending, bit, __ATOMIC_RELAXED);
}

void tw__dbg_full(unsigned bit)
{
    tw__dbg_full_locked(bit);
    flush_full();
}

static const char *const full_what[] = {
    "threads", "objects a thread holds", "lock classes", "lock orders", "tracked objects",
    "Deferreds and DeferredLocks", "reactors"};

static void flush_full(void)
{
    uint32_t bits = __atomic_exchange_n(&full_pending, 0, __ATOMIC_RELAXED);
    for (unsigned b = 0; b < sizeof full_what / sizeof full_what[0]; b++) {
        char msg[200];
        if (!(bits & (1u << b)) ||
            (__atomic_fetch_or(&full_once, 1u << b, __ATOMIC_RELAXED) & (1u << b)))
            continue;
        snprintf(msg, sizeof msg,
                 "deadlock detection: the table of %s is full; what does not fit is not "
                 "checked (docs/deadlocks.md, \"Tables\")",
                 full_what[b]);
        tw__dbg_report(TW_EFULL, "twine debug", msg);
    }
}

/* ---- classes ---------------------------------------------------------------------- */

enum { K_ADDR = 1, K_SITE, K_NAMED, K_PSEUDO, K_SUB };

/* Fields marked atomic are read without mu (the address map's readers, the
 * subclass cache, the flags); the rest only under mu. */
typedef struct lclass {
    const void *key;  /* ADDR, NAMED, PSEUDO: the key; SITE: NULL */
    const char *file; /* SITE: the init call's site */
    int line;
    uint32_t parent;  /* SUB: the base class */
    uint32_t sub;
    uint32_t kind;    /* atomic: enum tw__dk */
    uint32_t keykind; /* atomic: K_*, 0 for a free id */
    uint32_t flags;   /* atomic: CF_* */
    uint32_t subs[DBG_SUBCLASSES]; /* atomic: subclass ids, 0 until made */
    uint32_t out, in; /* edge lists */
    uint32_t hnext;   /* hash chain; the free list for free ids */
} lclass;

#define CLASS_BUCKETS 4096
static lclass classes[DBG_CLASSES];
static uint32_t class_bucket[CLASS_BUCKETS];
static uint32_t class_top = 1; /* ids below it have been used */
static uint32_t class_free;    /* a free list of retired ids */
static uint32_t class_live;

/* The chain cache generation: moves when a class id is retired. atomic. */
uint64_t tw__dbg_chain_gen = 0x9e3779b97f4a7c15ULL;

static uint32_t site_hash(const char *file, int line, uint32_t kind)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *s = file; s && *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (uint32_t)mix64(h ^ ((uint64_t)line << 8) ^ kind);
}

static uint32_t key_hash(const void *key, uint32_t keykind, uint32_t kind)
{
    return (uint32_t)mix64((uint64_t)(uintptr_t)key ^ ((uint64_t)keykind << 56) ^
                           ((uint64_t)kind << 48));
}

static uint32_t class_hash(uint32_t keykind, const void *key, uint32_t kind, const char *file,
                           int line)
{
    return (keykind == K_SITE ? site_hash(file, line, kind) : key_hash(key, keykind, kind)) %
           CLASS_BUCKETS;
}

/* mu held. The class with this key, or 0. A named class has kind 0. */
static uint32_t class_find(const void *key, uint32_t keykind, uint32_t kind, const char *file,
                           int line)
{
    for (uint32_t c = class_bucket[class_hash(keykind, key, kind, file, line)]; c;
         c = classes[c].hnext) {
        lclass *k = &classes[c];
        if (k->keykind != keykind || k->kind != kind)
            continue;
        if (keykind != K_SITE ? k->key == key
                              : k->line == line && file && k->file && strcmp(k->file, file) == 0)
            return c;
    }
    return 0;
}

/* mu held. A new class, or 0 when the table is full (reported). */
static uint32_t class_new(const void *key, uint32_t keykind, uint32_t kind, const char *file,
                          int line)
{
    uint32_t c = class_free;
    if (c) {
        class_free = classes[c].hnext;
    } else if (class_top < DBG_CLASSES) {
        c = class_top++;
    } else {
        tw__dbg_full_locked(FULL_CLASSES);
        return 0;
    }
    lclass *k = &classes[c];
    k->key = key;
    k->file = file;
    k->line = line;
    k->parent = 0;
    k->sub = 0;
    k->out = k->in = 0;
    ST(k->flags, 0);
    for (unsigned s = 0; s < DBG_SUBCLASSES; s++)
        ST(k->subs[s], 0);
    ST(k->kind, kind);
    ST(k->keykind, keykind);
    if (keykind != K_SUB) {
        uint32_t b = class_hash(keykind, key, kind, file, line);
        k->hnext = class_bucket[b];
        class_bucket[b] = c;
    }
    class_live++;
    return c;
}

static uint32_t class_get(const void *key, uint32_t keykind, uint32_t kind, const char *file,
                          int line)
{
    uint32_t c = class_find(key, keykind, kind, file, line);
    return c ? c : class_new(key, keykind, kind, file, line);
}

uint32_t tw__dbg_class_flags(uint32_t cls)
{
    return cls && cls < DBG_CLASSES ? LD(classes[cls].flags) : 0;
}

void tw__dbg_class_flag(uint32_t cls, uint32_t flag)
{
    if (cls && cls < DBG_CLASSES && !(LD(classes[cls].flags) & flag))
        __atomic_fetch_or(&classes[cls].flags, flag, __ATOMIC_RELAXED);
}

uint32_t tw__dbg_subclass(uint32_t base, unsigned sub)
{
    uint32_t c;
    if (!base || sub == 0)
        return base;
    if (sub >= DBG_SUBCLASSES)
        sub = DBG_SUBCLASSES - 1;
    /* acquire: the class's fields, written before its id was published. */
    if ((c = __atomic_load_n(&classes[base].subs[sub], __ATOMIC_ACQUIRE)))
        return c;
    tw__dbg_lock();
    if (!(c = classes[base].subs[sub])) {
        c = class_new(NULL, K_SUB, classes[base].kind, NULL, 0);
        if (c) {
            classes[c].parent = base;
            classes[c].sub = sub;
            __atomic_store_n(&classes[base].subs[sub], c, __ATOMIC_RELEASE);
        } else {
            c = base; /* full: nested without a class of its own */
        }
    }
    tw__dbg_unlock();
    return c;
}

static const char *kind_name(uint32_t kind)
{
    switch (kind) {
    case TW__DK_LOCK: return "Lock";
    case TW__DK_RLOCK: return "RLock";
    case TW__DK_SEM: return "Semaphore";
    case TW__DK_LOOP: return "the loop of reactor";
    case TW__DK_WORK: return "thread function";
    case TW__DK_DLOCK: return "DeferredLock";
    case TW__DK_DSEM: return "DeferredSemaphore";
    case TW__DK_EVENT: return "Event";
    case TW__DK_COND: return "Condition";
    default: return "object";
    }
}

const char *tw__dbg_kind_name(enum tw__dk kind)
{
    return kind_name(kind);
}

/* mu held. */
static void class_name(uint32_t cls, char *buf, size_t n)
{
    unsigned sub = 0;
    if (cls && cls < DBG_CLASSES && classes[cls].keykind == K_SUB) {
        sub = classes[cls].sub;
        cls = classes[cls].parent;
    }
    if (!cls || cls >= DBG_CLASSES || !classes[cls].keykind) {
        snprintf(buf, n, "a class not tracked");
        return;
    }
    lclass *k = &classes[cls];
    int len;
    switch (k->keykind) {
    case K_NAMED: {
        const tw_lock_class *named = k->key;
        len = snprintf(buf, n, "\"%s\"", named->name ? named->name : "?");
        break;
    }
    case K_SITE:
        len = snprintf(buf, n, "%s of %s:%d", kind_name(k->kind), tw__dbg_base(k->file), k->line);
        break;
    default:
        len = snprintf(buf, n, "%s %p", kind_name(k->kind), k->key);
        break;
    }
    if (sub && len > 0 && (size_t)len < n)
        snprintf(buf + len, n - (size_t)len, "/%u", sub);
}

void tw__dbg_class_name(uint32_t cls, char *buf, size_t n)
{
    tw__dbg_lock();
    class_name(cls, buf, n);
    tw__dbg_unlock();
}

/* ---- the address map ---------------------------------------------------------- */

#define MAP_EMPTY ((uintptr_t)0)
#define MAP_TOMB ((uintptr_t)1)
/* map_cls holds the class packed with what its slot needs for the fast
 * path (fast.h): MAP_ADDR and the kind of object it was made for, if it is
 * an address class (another kind at the address is a reused block). */
uintptr_t tw__dbg_map_key[DBG_MAP];  /* atomic */
uint32_t tw__dbg_map_cls[DBG_MAP];   /* atomic */
uint32_t tw__dbg_map_owner[DBG_MAP]; /* atomic: a Lock's tracked holder, 0 if none */
#define map_key tw__dbg_map_key
#define map_cls tw__dbg_map_cls
#define map_owner tw__dbg_map_owner
/* One bit per hashed 64-byte line where a mapped object or a learned
 * signaller has been: the free hook looks only at lines whose bit is set.
 * Bits are never cleared. */
static uint64_t map_lines[DBG_MAP / 64]; /* atomic */

static inline uint32_t map_hash(uintptr_t a)
{
    return tw__dbg_map_hash(a);
}

static inline uint32_t line_bit(uintptr_t a)
{
    return (uint32_t)mix64(a >> 6) & (DBG_MAP - 1);
}

void tw__dbg_mark_line(const void *obj)
{
    uint32_t b = line_bit((uintptr_t)obj);
    if (!(LD(map_lines[b / 64]) & (1ULL << (b % 64))))
        __atomic_fetch_or(&map_lines[b / 64], 1ULL << (b % 64), __ATOMIC_RELAXED);
}

static bool line_marked(uintptr_t a)
{
    uint32_t b = line_bit(a);
    return (LD(map_lines[b / 64]) >> (b % 64)) & 1;
}

uint32_t tw__dbg_slot_of(const void *obj)
{
    uintptr_t a = (uintptr_t)obj;
    uint32_t i = map_hash(a);
    for (uint32_t n = 0; n < DBG_MAP; n++, i = (i + 1) & (DBG_MAP - 1)) {
        /* acquire: pairs with the release that published the key. */
        uintptr_t k = __atomic_load_n(&map_key[i], __ATOMIC_ACQUIRE);
        if (k == a)
            return i;
        if (k == MAP_EMPTY)
            break;
    }
    return UINT32_MAX;
}

bool tw__dbg_slot_is(uint32_t slot, const void *obj)
{
    return slot < DBG_MAP && LD(map_key[slot]) == (uintptr_t)obj;
}

uint32_t tw__dbg_slot_class(uint32_t slot, const void *obj);

uint32_t *tw__dbg_owner(uint32_t slot)
{
    return &map_owner[slot];
}

/* The class in slot i if it still belongs to a. */
static inline uint32_t slot_class(uint32_t i, uintptr_t a)
{
    /* acquire: the key is re-read after the class. */
    uint32_t c = __atomic_load_n(&map_cls[i], __ATOMIC_ACQUIRE);
    return LD(map_key[i]) == a ? c & MAP_CLASS : 0;
}

uint32_t tw__dbg_slot_class(uint32_t slot, const void *obj)
{
    return slot < DBG_MAP ? slot_class(slot, (uintptr_t)obj) : 0;
}

/* mu held. Slot for a (existing or new), or UINT32_MAX when full. */
static uint32_t map_claim(uintptr_t a, bool *fresh)
{
    uint32_t i = map_hash(a), tomb = UINT32_MAX;
    *fresh = false;
    for (uint32_t n = 0; n < DBG_MAP; n++, i = (i + 1) & (DBG_MAP - 1)) {
        uintptr_t k = map_key[i];
        if (k == a)
            return i;
        if (k == MAP_TOMB && tomb == UINT32_MAX)
            tomb = i;
        if (k == MAP_EMPTY) {
            *fresh = true;
            return tomb != UINT32_MAX ? tomb : i;
        }
    }
    *fresh = tomb != UINT32_MAX;
    return tomb;
}

/* mu held. Points slot i (claimed for a) at class c. */
static void map_set(uint32_t i, uintptr_t a, uint32_t c, bool fresh)
{
    uint32_t packed = c;
    if (classes[c].keykind == K_ADDR)
        packed |= MAP_ADDR | (classes[c].kind << MAP_KIND_SHIFT);
    ST(map_owner[i], 0);
    /* release: a reader that sees the key sees the class (slot_class). */
    __atomic_store_n(&map_cls[i], packed, __ATOMIC_RELEASE);
    if (fresh) {
        __atomic_store_n(&map_key[i], a, __ATOMIC_RELEASE);
        tw__dbg_mark_line((const void *)a);
    }
}

static void retire(uint32_t c);

static bool addr_class_of(uint32_t c, uintptr_t a)
{
    return c && classes[c].keykind == K_ADDR && (uintptr_t)classes[c].key == a;
}

/* mu held. Drops slot i; its class goes too if it was keyed by the address. */
static void map_drop(uint32_t i)
{
    uintptr_t a = map_key[i];
    uint32_t c = map_cls[i] & MAP_CLASS;
    __atomic_store_n(&map_key[i], MAP_TOMB, __ATOMIC_RELEASE);
    ST(map_cls[i], 0);
    ST(map_owner[i], 0);
    if (addr_class_of(c, a))
        retire(c);
}

/* Whether class c fits an object of this kind: a site's or a name's class
 * does (the application chose it); an address class only for the kind it
 * was made for (another kind at that address is a reused block). */
static inline bool fits(uint32_t c, uint32_t kind)
{
    return LD(classes[c].keykind) != K_ADDR || LD(classes[c].kind) == kind;
}

uint32_t tw__dbg_class_of(const void *obj, enum tw__dk kind, uint32_t *slot)
{
    uintptr_t a = (uintptr_t)obj;
    uint32_t i = tw__dbg_slot_of(obj), c;
    if (i != UINT32_MAX && (c = slot_class(i, a)) && fits(c, kind)) {
        *slot = i;
        return c;
    }
    /* First sight (or another kind of object at a reused address). */
    bool fresh;
    tw__dbg_lock();
    i = map_claim(a, &fresh);
    c = i != UINT32_MAX && !fresh ? map_cls[i] & MAP_CLASS : 0;
    if (!c || !fits(c, kind)) {
        if (addr_class_of(c, a))
            retire(c);
        c = class_get(obj, K_ADDR, kind, NULL, 0);
        if (i != UINT32_MAX)
            map_set(i, a, c, fresh);
        else
            tw__dbg_full_locked(FULL_MAP);
    }
    tw__dbg_unlock();
    *slot = i;
    return c;
}

/* mu held. Puts obj in class c (a site's or a name's), replacing an address
 * class. */
static void map_assign(const void *obj, uint32_t c)
{
    uintptr_t a = (uintptr_t)obj;
    bool fresh;
    uint32_t i = map_claim(a, &fresh);
    if (i == UINT32_MAX) {
        tw__dbg_full_locked(FULL_MAP);
        return;
    }
    uint32_t old = fresh ? 0 : map_cls[i] & MAP_CLASS;
    if (old && old != c && addr_class_of(old, a))
        retire(old);
    map_set(i, a, c, fresh);
}

void tw__dbg_init_site(const void *obj, enum tw__dk kind, const char *file, int line)
{
    if (!obj)
        return;
    if (!LD(tw__dbg_on))
        __atomic_store_n(&tw__dbg_on, 1, __ATOMIC_RELAXED);
    /* An init call makes a new object: whatever class its address had (a
     * name given to an object that lived there before) is not its own.
     * tw_lock_class_add comes after the init call. */
    tw__dbg_lock();
    uint32_t c = class_get(NULL, K_SITE, kind, file ? file : "?", line);
    if (c)
        map_assign(obj, c);
    tw__dbg_unlock();
}

/* mu held. */
static uint32_t named_class(tw_lock_class *nc)
{
    /* acquire: the class's fields, published with the id. */
    uint32_t c = __atomic_load_n(&nc->id, __ATOMIC_ACQUIRE);
    if (c && c < DBG_CLASSES && classes[c].keykind == K_NAMED && classes[c].key == nc)
        return c;
    c = class_get(nc, K_NAMED, 0, NULL, 0);
    if (c)
        __atomic_store_n(&nc->id, c, __ATOMIC_RELEASE);
    return c;
}

int tw__dbg_class_add(tw_lock_class *nc, const void *obj, enum tw__dk kind)
{
    (void)kind;
    if (!nc || !obj)
        return TW_EINVAL;
    if (!LD(tw__dbg_on))
        __atomic_store_n(&tw__dbg_on, 1, __ATOMIC_RELAXED);
    tw__dbg_lock();
    uint32_t c = named_class(nc);
    if (c)
        map_assign(obj, c);
    tw__dbg_unlock();
    return c ? 0 : TW_EFULL;
}

/* Thread functions' classes, cached: one is looked up at every run of a
 * thread function. A word packs the function's address (below 2^48 in user
 * space) and its class; a miss goes to the class table. */
#define FN_CACHE 256
static uint64_t fn_cache[FN_CACHE]; /* atomic */

uint32_t tw__dbg_pseudo_class(const void *key, enum tw__dk kind)
{
    uint64_t *slot = NULL;
    if (kind == TW__DK_WORK && (uintptr_t)key < (1ULL << 48)) {
        slot = &fn_cache[((uintptr_t)key * 0x9e3779b97f4a7c15ULL) >> 56];
        uint64_t w = LD(*slot);
        if (w && (w & ((1ULL << 48) - 1)) == (uintptr_t)key)
            return (uint32_t)(w >> 48);
    }
    tw__dbg_lock();
    uint32_t c = class_get(key, K_PSEUDO, kind, NULL, 0);
    if (slot && c)
        ST(*slot, (uint64_t)c << 48 | (uintptr_t)key);
    if (c && (kind == TW__DK_DLOCK || kind == TW__DK_DSEM))
        tw__dbg_mark_line(key); /* forgotten with its block (tw__dbg_forget) */
    tw__dbg_unlock();
    return c;
}

uint32_t tw__dbg_pseudo_class_if(const void *key, enum tw__dk kind)
{
    tw__dbg_lock();
    uint32_t c = class_find(key, K_PSEUDO, kind, NULL, 0);
    tw__dbg_unlock();
    return c;
}

/* ---- edges ------------------------------------------------------------------------ */

enum { EF_DECLARED = 1, EF_CLOSING = 2 };

typedef struct edge {
    uint32_t from, to;          /* atomic: compared by lock-free lookups */
    uint32_t next_out, next_in; /* the from class's out list, the to class's in list */
    const char *from_file, *to_file;
    int32_t from_line, to_line;
    uint32_t tid;
    uint32_t flags;
} edge;

#define EH_EMPTY 0u
#define EH_TOMB UINT32_MAX
static edge edges[DBG_EDGES];
static uint32_t edge_hash[DBG_EDGE_HASH]; /* atomic: edge ids */
static uint32_t edge_top = 1, edge_free;

static inline uint32_t edge_h(uint32_t from, uint32_t to)
{
    return (uint32_t)mix64(((uint64_t)from << 32) | to) & (DBG_EDGE_HASH - 1);
}

/* Lock-free: the edge from -> to, or 0. */
static uint32_t edge_find(uint32_t from, uint32_t to)
{
    uint32_t i = edge_h(from, to);
    for (uint32_t n = 0; n < DBG_EDGE_HASH; n++, i = (i + 1) & (DBG_EDGE_HASH - 1)) {
        /* acquire: the edge's fields, written before its id was published. */
        uint32_t e = __atomic_load_n(&edge_hash[i], __ATOMIC_ACQUIRE);
        if (e == EH_EMPTY)
            return 0;
        if (e != EH_TOMB && LD(edges[e].from) == from && LD(edges[e].to) == to)
            return e;
    }
    return 0;
}

/* mu held. A new edge, linked and hashed, or 0 when the table is full. */
static uint32_t edge_add(uint32_t from, uint32_t to, const char *ffile, int fline,
                         const char *tfile, int tline, uint32_t tid, uint32_t flags)
{
    uint32_t e = edge_free;
    if (e) {
        edge_free = edges[e].next_out;
    } else if (edge_top < DBG_EDGES) {
        e = edge_top++;
    } else {
        tw__dbg_full_locked(FULL_EDGES);
        return 0;
    }
    edge *d = &edges[e];
    ST(d->from, from);
    ST(d->to, to);
    d->from_file = ffile;
    d->from_line = fline;
    d->to_file = tfile;
    d->to_line = tline;
    d->tid = tid;
    d->flags = flags;
    d->next_out = classes[from].out;
    classes[from].out = e;
    d->next_in = classes[to].in;
    classes[to].in = e;
    uint32_t i = edge_h(from, to);
    while (edge_hash[i] != EH_EMPTY && edge_hash[i] != EH_TOMB)
        i = (i + 1) & (DBG_EDGE_HASH - 1);
    /* release: the fields above before the id (edge_find). */
    __atomic_store_n(&edge_hash[i], e, __ATOMIC_RELEASE);
    return e;
}

/* mu held. Unhashes edge e and frees it (unlinked from its lists already). */
static void edge_release(uint32_t e)
{
    uint32_t i = edge_h(edges[e].from, edges[e].to);
    while (edge_hash[i] != e)
        i = (i + 1) & (DBG_EDGE_HASH - 1);
    __atomic_store_n(&edge_hash[i], EH_TOMB, __ATOMIC_RELEASE);
    ST(edges[e].from, 0);
    ST(edges[e].to, 0);
    edges[e].next_out = edge_free;
    edge_free = e;
}

static void unlink_out(uint32_t cls, uint32_t e)
{
    for (uint32_t *p = &classes[cls].out; *p; p = &edges[*p].next_out)
        if (*p == e) {
            *p = edges[e].next_out;
            return;
        }
}

static void unlink_in(uint32_t cls, uint32_t e)
{
    for (uint32_t *p = &classes[cls].in; *p; p = &edges[*p].next_in)
        if (*p == e) {
            *p = edges[e].next_in;
            return;
        }
}

/* mu held. Class c goes away: its subclasses, its edges, its hash entry. */
static void retire(uint32_t c)
{
    lclass *k = &classes[c];
    for (unsigned s = 1; s < DBG_SUBCLASSES; s++) {
        uint32_t sc = k->subs[s];
        if (sc) {
            ST(k->subs[s], 0);
            retire(sc);
        }
    }
    while (k->out) {
        uint32_t e = k->out;
        k->out = edges[e].next_out;
        unlink_in(edges[e].to, e);
        edge_release(e);
    }
    while (k->in) {
        uint32_t e = k->in;
        k->in = edges[e].next_in;
        unlink_out(edges[e].from, e);
        edge_release(e);
    }
    if (k->keykind != K_SUB) {
        uint32_t b = class_hash(k->keykind, k->key, k->kind, k->file, k->line);
        for (uint32_t *p = &class_bucket[b]; *p; p = &classes[*p].hnext)
            if (*p == c) {
                *p = k->hnext;
                break;
            }
    }
    ST(k->keykind, 0);
    ST(k->flags, 0);
    k->hnext = class_free;
    class_free = c;
    class_live--;
    /* No cached stack may name the id once it is reused. */
    __atomic_fetch_add(&tw__dbg_chain_gen, 0x9e3779b97f4a7c15ULL, __ATOMIC_RELAXED);
}

void tw__dbg_retire_key(const void *key)
{
    tw__dbg_lock();
    for (uint32_t kind = TW__DK_LOOP; kind <= TW__DK_DSEM; kind++) {
        uint32_t c = class_find(key, K_PSEUDO, kind, NULL, 0);
        if (c)
            retire(c);
    }
    tw__dbg_unlock();
}

void tw__dbg_forget(const void *p, size_t n)
{
    uintptr_t a0 = (uintptr_t)p, a1 = a0 + n;
    if (!p || !LD(tw__dbg_on))
        return;
    for (uintptr_t line = a0 & ~(uintptr_t)63; line < a1; line += 64) {
        if (!line_marked(line))
            continue;
        uintptr_t from = line < a0 ? (a0 + 3) & ~(uintptr_t)3 : line;
        uintptr_t to = line + 64 < a1 ? line + 64 : a1;
        tw__dbg_lock();
        for (uintptr_t a = from; a < to; a += 4) {
            uint32_t i = tw__dbg_slot_of((const void *)a);
            if (i != UINT32_MAX)
                map_drop(i);
            /* A DeferredLock's or DeferredSemaphore's class goes too. */
            for (uint32_t kind = TW__DK_DLOCK; kind <= TW__DK_DSEM; kind++) {
                uint32_t c = class_find((const void *)a, K_PSEUDO, kind, NULL, 0);
                if (c)
                    retire(c);
            }
        }
        tw__dbg_unlock();
        tw__dbg_signals_forget(from, to);
    }
}

/* ---- the chain cache ---------------------------------------------------------------- */

uint64_t tw__dbg_chains[DBG_CHAINS]; /* atomic */

/* ---- search and report --------------------------------------------------------------- */

/* Breadth-first search scratch, mu held. */
static uint32_t visit_gen;
static uint32_t visited[DBG_CLASSES];
static uint32_t via[DBG_CLASSES];
static uint32_t bfs_queue[DBG_CLASSES];

#define PATH_MAX_EDGES 12

/* mu held. The edges of a path src -> ... -> dst (not through CLOSING
 * edges): the first ones into path[] (at most PATH_MAX_EDGES), their total
 * number returned; 0 if there is no path. */
static int find_path(uint32_t src, uint32_t dst, uint32_t *path)
{
    uint32_t head = 0, tail = 0;
    if (++visit_gen == 0) {
        memset(visited, 0, sizeof visited);
        visit_gen = 1;
    }
    visited[src] = visit_gen;
    bfs_queue[tail++] = src;
    while (head < tail) {
        uint32_t c = bfs_queue[head++];
        for (uint32_t e = classes[c].out; e; e = edges[e].next_out) {
            if (edges[e].flags & EF_CLOSING)
                continue;
            uint32_t nx = edges[e].to;
            if (visited[nx] == visit_gen)
                continue;
            visited[nx] = visit_gen;
            via[nx] = e;
            if (nx != dst) {
                bfs_queue[tail++] = nx;
                continue;
            }
            int len = 0;
            for (uint32_t x = dst; x != src; x = edges[via[x]].from)
                len++;
            int k = len;
            for (uint32_t x = dst; x != src; x = edges[via[x]].from)
                if (--k < PATH_MAX_EDGES)
                    path[k] = via[x];
            return len;
        }
    }
    return 0;
}

static bool class_quiet(uint32_t c)
{
    if (c && c < DBG_CLASSES && classes[c].keykind == K_SUB)
        c = classes[c].parent;
    return tw__dbg_class_flags(c) & CF_QUIET;
}

bool tw__dbg_class_quiet(uint32_t c)
{
    return class_quiet(c);
}

void tw__dbg_put(char *buf, size_t n, size_t *len, const char *fmt, ...)
{
    va_list ap;
    if (*len >= n)
        return;
    va_start(ap, fmt);
    int k = vsnprintf(buf + *len, n - *len, fmt, ap);
    va_end(ap);
    if (k > 0)
        *len += (size_t)k;
}

void tw__dbg_put_site(char *buf, size_t n, size_t *len, const char *file, int line)
{
    if (line > 0)
        tw__dbg_put(buf, n, len, "%s:%d", tw__dbg_base(file), line);
    else
        tw__dbg_put(buf, n, len, "%s", file ? file : "an untracked call");
}

static bool pseudo_kind(uint32_t kind)
{
    return kind >= TW__DK_LOOP && kind <= TW__DK_DSEM;
}

/* mu held. "thread 3 took B at b.c:20 holding A (taken at a.c:10)"; for the
 * pseudo-locks, "waited for the loop of reactor R at ...", "in a callback of
 * the loop of reactor R", "in thread function F". */
static void put_edge(char *buf, size_t n, size_t *len, const edge *d)
{
    char a[96], b[96];
    uint32_t fk = classes[d->from].kind, tk = classes[d->to].kind;
    class_name(d->from, a, sizeof a);
    class_name(d->to, b, sizeof b);
    if ((d->flags & EF_DECLARED) && d->from_line == 0) {
        tw__dbg_put(buf, n, len, "the declared order takes %s before %s (tw_lock_class_order)",
                    a, b);
        return;
    }
    tw__dbg_put(buf, n, len, "thread %u %s %s at ", (unsigned)d->tid,
                pseudo_kind(tk) ? "waited for" : "took", b);
    tw__dbg_put_site(buf, n, len, d->to_file, d->to_line);
    if (fk == TW__DK_LOOP) {
        tw__dbg_put(buf, n, len, " in a callback of %s", a);
    } else if (fk == TW__DK_WORK) {
        tw__dbg_put(buf, n, len, " in %s", a);
    } else {
        tw__dbg_put(buf, n, len, " holding %s (taken at ", a);
        tw__dbg_put_site(buf, n, len, d->from_file, d->from_line);
        tw__dbg_put(buf, n, len, ")");
    }
}

/* mu held. The report of the cycle that `closing` makes with the path of
 * np edges (path[] has the first PATH_MAX_EDGES of them) into msg; false if a
 * class of it is quiet. */
static bool describe_cycle(const edge *closing, const uint32_t *path, int np, char *msg,
                           size_t n)
{
    size_t len = 0;
    int shown = np < PATH_MAX_EDGES ? np : PATH_MAX_EDGES;
    if (class_quiet(closing->from) || class_quiet(closing->to))
        return false;
    for (int i = 0; i < shown; i++)
        if (class_quiet(edges[path[i]].to))
            return false;
    if (np == 1)
        tw__dbg_put(msg, n, &len, "lock order inversion: ");
    else
        tw__dbg_put(msg, n, &len, "lock order cycle of %d: ", np + 1);
    put_edge(msg, n, &len, closing);
    tw__dbg_put(msg, n, &len, (closing->flags & EF_DECLARED) && closing->from_line == 0
                                  ? " (this declaration)"
                                  : " (this acquire)");
    for (int i = 0; i < shown; i++) {
        tw__dbg_put(msg, n, &len, "; ");
        put_edge(msg, n, &len, &edges[path[i]]);
    }
    if (shown < np)
        tw__dbg_put(msg, n, &len, "; and %d more", np - shown);
    tw__dbg_put(msg, n, &len, "; taken at the same time, these orders deadlock");
    return true;
}

/* mu held. Records from -> to for an acquire; the cycle it closes, if any,
 * is written to msg (true). */
static bool add_order(uint32_t from, uint32_t to, const char *ffile, int fline,
                      const char *tfile, int tline, uint32_t tid, char *msg, size_t n)
{
    uint32_t path[PATH_MAX_EDGES];
    edge d = {from, to, 0, 0, ffile, tfile, fline, tline, tid, 0};
    if (edge_find(from, to))
        return false;
    if (from == to) {
        /* Two objects of one class, one taken holding the other: two threads
         * taking them the other way round deadlock. */
        edge_add(from, to, ffile, fline, tfile, tline, tid, EF_CLOSING);
        if (class_quiet(from))
            return false;
        char a[96];
        size_t len = 0;
        class_name(from, a, sizeof a);
        tw__dbg_put(msg, n, &len, "lock order: thread %u took two objects of one class, %s: "
                                  "one at ", (unsigned)tid, a);
        tw__dbg_put_site(msg, n, &len, tfile, tline);
        tw__dbg_put(msg, n, &len, " holding another (taken at ");
        tw__dbg_put_site(msg, n, &len, ffile, fline);
        tw__dbg_put(msg, n, &len, "); two threads taking two of them in opposite orders "
                                  "deadlock (nest them on purpose with a subclass: "
                                  "tw_lock_acquire_nested)");
        return true;
    }
    int np = find_path(to, from, path);
    edge_add(from, to, ffile, fline, tfile, tline, tid, np ? EF_CLOSING : 0);
    return np && describe_cycle(&d, path, np, msg, n);
}

#define REPORT_LEN 1536

void tw__dbg_add_order(uint32_t from, uint32_t to, const char *ffile, int fline,
                       const char *tfile, int tline, uint32_t tid, const char *function)
{
    char msg[REPORT_LEN];
    if (edge_find(from, to))
        return;
    msg[0] = 0;
    tw__dbg_lock();
    bool report = add_order(from, to, ffile, fline, tfile, tline, tid, msg, sizeof msg);
    tw__dbg_unlock();
    if (report)
        tw__dbg_report(TW_EDEADLK, function, msg);
}

uint64_t tw__dbg_validate(tw__dbg_thread *t, const void *obj, uint32_t cls, const char *file,
                          int line, const char *function, uint64_t key)
{
    char msg[REPORT_LEN];
    uint32_t depth = t->depth;
    /* A Lock the thread holds already: waiting for itself, not an order
     * (the live check reports the self-wait); no edges into it. */
    for (uint32_t i = 0; i < depth; i++)
        if (LD(t->held[i].obj) == obj && t->held[i].kind == TW__DK_LOCK &&
            tw__dbg_entry_valid(t, i))
            return key;
    for (uint32_t i = 0; i < depth; i++) {
        tw__dbg_held *h = &t->held[i];
        if (LD(h->obj) == obj || !h->cls || (h->flags & HF_GIVEN_UP) || !tw__dbg_entry_valid(t, i))
            continue; /* the same object (counted, or a self-wait), or not held */
        if (edge_find(h->cls, cls))
            continue;
        msg[0] = 0;
        tw__dbg_lock();
        bool report =
            add_order(h->cls, cls, h->file, h->line, file, line, LD(t->tid), msg, sizeof msg);
        tw__dbg_unlock();
        if (report)
            tw__dbg_report(TW_EDEADLK, function, msg);
    }
    ST(tw__dbg_chains[key & (DBG_CHAINS - 1)], key);
    return key;
}

/* ---- the public class calls ------------------------------------------------------- */

int tw_lock_class_order(tw_lock_class *first, tw_lock_class *second)
{
    char msg[REPORT_LEN];
    uint32_t path[PATH_MAX_EDGES];
    bool report = false;
    int rc = 0;
    if (!first || !second || first == second)
        return TW_EINVAL;
    if (!LD(tw__dbg_on))
        __atomic_store_n(&tw__dbg_on, 1, __ATOMIC_RELAXED);
    tw__dbg_lock();
    uint32_t a = named_class(first), b = named_class(second);
    if (!a || !b) {
        rc = TW_EFULL;
    } else {
        uint32_t e = edge_find(a, b);
        if (e) {
            edges[e].flags |= EF_DECLARED;
        } else {
            int np = find_path(b, a, path);
            edge d = {a, b, 0, 0, "tw_lock_class_order", "tw_lock_class_order", 0, 0,
                      tw__self(), EF_DECLARED};
            if (!edge_add(a, b, d.from_file, 0, d.to_file, 0, d.tid,
                          EF_DECLARED | (np ? EF_CLOSING : 0)))
                rc = TW_EFULL;
            if (np)
                report = describe_cycle(&d, path, np, msg, sizeof msg);
        }
    }
    tw__dbg_unlock();
    if (report)
        tw__dbg_report(TW_EDEADLK, "tw_lock_class_order", msg);
    return rc;
}

int tw_lock_class_quiet(tw_lock_class *c)
{
    if (!c)
        return TW_EINVAL;
    if (!LD(tw__dbg_on))
        __atomic_store_n(&tw__dbg_on, 1, __ATOMIC_RELAXED);
    tw__dbg_lock();
    uint32_t k = named_class(c);
    if (k)
        __atomic_fetch_or(&classes[k].flags, CF_QUIET, __ATOMIC_RELAXED);
    tw__dbg_unlock();
    return k ? 0 : TW_EFULL;
}

int tw__lock_class_add(tw_lock_class *c, void *obj, int kind)
{
    if (kind < TW__DK_LOCK || kind > TW__DK_SEM)
        return TW_EINVAL;
    return tw__dbg_class_add(c, obj, (enum tw__dk)kind);
}

uint32_t tw__dbg_class_count(void)
{
    tw__dbg_lock();
    uint32_t n = class_live;
    tw__dbg_unlock();
    return n;
}
