/* Replies: hiredis frees its reply when the callback returns, so the value a
 * Deferred fires with is a copy, made in one block:
 *
 *   [size_t size][tw_redis_reply nodes ...][string bytes ...]
 *
 * An array's elements are consecutive nodes, reserved before its children
 * are filled (depth first), so every `element` points into the block. */
#include <string.h>

#include <hiredis/hiredis.h>

#include "redis/redis.h"

/* Newer hiredis (RESP3) has more reply types; they map onto these. */
static enum tw_redis_type kind_of(const redisReply *r)
{
    switch (r->type) {
    case REDIS_REPLY_STRING:
        return TW_REDIS_STRING;
    case REDIS_REPLY_ARRAY:
        return TW_REDIS_ARRAY;
    case REDIS_REPLY_INTEGER:
        return TW_REDIS_INTEGER;
    case REDIS_REPLY_STATUS:
        return TW_REDIS_STATUS;
    case REDIS_REPLY_ERROR:
        return TW_REDIS_ERROR;
#ifdef REDIS_REPLY_DOUBLE
    case REDIS_REPLY_DOUBLE:
    case REDIS_REPLY_BIGNUM:
    case REDIS_REPLY_VERB:
        return TW_REDIS_STRING;
    case REDIS_REPLY_BOOL:
        return TW_REDIS_INTEGER;
    case REDIS_REPLY_MAP:
    case REDIS_REPLY_SET:
    case REDIS_REPLY_PUSH:
    case REDIS_REPLY_ATTR:
        return TW_REDIS_ARRAY;
#endif
    default:
        return TW_REDIS_NIL;
    }
}

static bool has_str(enum tw_redis_type k)
{
    return k == TW_REDIS_STRING || k == TW_REDIS_STATUS || k == TW_REDIS_ERROR;
}

static void measure(const redisReply *r, size_t *nodes, size_t *bytes)
{
    enum tw_redis_type k = kind_of(r);
    if (has_str(k))
        *bytes += r->len + 1;
    if (k == TW_REDIS_ARRAY) {
        *nodes += r->elements;
        for (size_t i = 0; i < r->elements; i++)
            measure(r->element[i], nodes, bytes);
    }
}

static void fill(tw_redis_reply *n, const redisReply *r, tw_redis_reply **next_node,
                 char **next_byte)
{
    enum tw_redis_type k = kind_of(r);
    memset(n, 0, sizeof *n);
    n->type = k;
    if (k == TW_REDIS_INTEGER) {
        n->integer = r->integer;
    } else if (has_str(k)) {
        char *s = *next_byte;
        if (r->len)
            memcpy(s, r->str, r->len);
        s[r->len] = 0;
        *next_byte += r->len + 1;
        n->str = s;
        n->len = r->len;
    } else if (k == TW_REDIS_ARRAY) {
        tw_redis_reply *kids = *next_node;
        *next_node += r->elements;
        n->len = r->elements;
        n->element = r->elements ? kids : NULL;
        for (size_t i = 0; i < r->elements; i++)
            fill(&kids[i], r->element[i], next_node, next_byte);
    }
}

tw_redis_reply *tw__redis_reply_copy(const redisReply *r)
{
    size_t nodes = 1, bytes = 0;
    measure(r, &nodes, &bytes);
    size_t head = sizeof(size_t);
    /* nodes start aligned for tw_redis_reply */
    size_t off = (head + _Alignof(tw_redis_reply) - 1) & ~(_Alignof(tw_redis_reply) - 1);
    size_t size = off + nodes * sizeof(tw_redis_reply) + bytes;
    char *block = tw__alloc(size);
    if (!block)
        return NULL;
    memcpy(block, &size, sizeof size);
    tw_redis_reply *root = (tw_redis_reply *)(void *)(block + off);
    tw_redis_reply *next_node = root + 1;
    char *next_byte = (char *)(root + nodes);
    fill(root, r, &next_node, &next_byte);
    return root;
}

void tw_redis_reply_free(void *reply)
{
    if (!reply)
        return;
    size_t off = (sizeof(size_t) + _Alignof(tw_redis_reply) - 1) &
                 ~(_Alignof(tw_redis_reply) - 1);
    char *block = (char *)reply - off;
    size_t size;
    memcpy(&size, block, sizeof size);
    tw__free(block, size);
}

tw_result tw__redis_reply_result(const redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR)
        return tw_result_fail(TW_EREMOTE, "%.*s", (int)(r->len > 4000 ? 4000 : r->len),
                              r->str);
    tw_redis_reply *copy = tw__redis_reply_copy(r);
    if (!copy)
        return tw_result_fail(TW_ENOMEM, "no memory for a Redis reply");
    return tw_result_value(copy, tw_redis_reply_free);
}

bool tw__redis_transient(const tw_failure *f)
{
    static const char *const passing[] = {"LOADING ", "BUSY ", "TRYAGAIN ", "MASTERDOWN "};
    switch (tw_failure_code(f)) {
    case TW_ETIMEDOUT:
    case TW_ECONNLOST:
    case TW_ENOTCONN:
    case TW_ENOMEM:
        return true;
    case TW_EREMOTE:
        for (size_t i = 0; i < sizeof passing / sizeof *passing; i++)
            if (strncmp(tw_failure_message(f), passing[i], strlen(passing[i])) == 0)
                return true;
        return false;
    default:
        return false;
    }
}
