/* A transport's write queue: a ring of segments (see net.h), sent with one
 * sendmsg of up to TW__NET_IOV segments at a time.
 *
 * Copies go into chunks of TW__NET_CHUNK bytes (a larger copy gets a chunk
 * of its own size); a copy appends to the last segment while that segment
 * ends where its chunk's free room begins. Chunks of the standard size come
 * from, and go back to, a small cache per reactor, so a transport that
 * streams allocates nothing in its steady state. */
#include <errno.h>
#include <string.h>

#include "base/alloc.h"
#include "net/net.h"

/* ---- chunks ------------------------------------------------------------------------ */

void *tw__net_chunk_get(tw__net *ns)
{
    tw__chunk *c = ns->nchunks ? ns->chunks[--ns->nchunks]
                               : tw__alloc(sizeof(tw__chunk) + TW__NET_CHUNK);
    if (c) {
        c->cap = TW__NET_CHUNK;
        c->used = 0;
    }
    return c;
}

static void chunk_free(tw__net *ns, tw__chunk *c)
{
    if (c->cap == TW__NET_CHUNK && ns && ns->nchunks < TW__NET_CHUNK_CACHE)
        ns->chunks[ns->nchunks++] = c;
    else
        tw__free(c, sizeof *c + c->cap);
}

void tw__net_chunk_put(tw__net *ns, void *chunk)
{
    chunk_free(ns, chunk);
}

void tw__net_chunks_free(tw__net *ns)
{
    while (ns->nchunks)
        tw__free(ns->chunks[--ns->nchunks], sizeof(tw__chunk) + TW__NET_CHUNK);
}

/* ---- the ring ------------------------------------------------------------------------ */

void tw__wq_init(tw__wqueue *q)
{
    q->segs = q->inline_segs;
    q->head = q->n = 0;
    q->cap = TW__INLINE_SEGS;
    q->bytes = 0;
}

static tw__seg *seg_at(tw__wqueue *q, uint32_t i)
{
    return &q->segs[(q->head + i) & (q->cap - 1)];
}

/* Room for one more segment. */
static int reserve(tw__wqueue *q)
{
    if (q->n < q->cap)
        return 0;
    uint32_t cap = q->cap * 2;
    if (cap < q->cap)
        return TW_ENOMEM;
    tw__seg *s = tw__alloc(cap * sizeof *s);
    if (!s)
        return TW_ENOMEM;
    for (uint32_t i = 0; i < q->n; i++)
        s[i] = *seg_at(q, i);
    if (q->segs != q->inline_segs)
        tw__free(q->segs, q->cap * sizeof *s);
    q->segs = s;
    q->cap = cap;
    q->head = 0;
    return 0;
}

static void seg_drop(tw__net *ns, tw__seg *s)
{
    if (s->drop == TW__SEG_CHUNK)
        chunk_free(ns, s->owner);
    else if (s->drop)
        s->drop(s->owner);
}

/* The chunk whose free room the last segment ends at, or NULL. */
static tw__chunk *tail_chunk(tw__wqueue *q)
{
    if (q->n == 0)
        return NULL;
    tw__seg *s = seg_at(q, q->n - 1);
    if (s->drop != TW__SEG_CHUNK)
        return NULL;
    tw__chunk *c = s->owner;
    return s->p + s->len == c->data + c->used && c->used < c->cap ? c : NULL;
}

int tw__wq_copy(tw__net *ns, tw__wqueue *q, const void *data, size_t len)
{
    const char *p = data;
    tw__chunk *c = tail_chunk(q);
    if (c) { /* fill the tail chunk's room first */
        size_t k = c->cap - c->used < len ? c->cap - c->used : len;
        memcpy(c->data + c->used, p, k);
        c->used += k;
        seg_at(q, q->n - 1)->len += k;
        q->bytes += k;
        p += k;
        len -= k;
    }
    if (len == 0)
        return 0;
    if (reserve(q))
        goto undo;
    if (len <= TW__NET_CHUNK) {
        c = tw__net_chunk_get(ns);
    } else {
        c = tw__alloc(sizeof *c + len);
        if (c) {
            c->cap = len;
            c->used = 0;
        }
    }
    if (!c)
        goto undo;
    memcpy(c->data, p, len);
    c->used = len;
    *seg_at(q, q->n) = (tw__seg){c->data, len, TW__SEG_CHUNK, c};
    q->n++;
    q->bytes += len;
    return 0;
undo:
    /* Take back what went into the tail chunk: a failed write queues nothing. */
    if (p != data) {
        size_t k = (size_t)(p - (const char *)data);
        tw__seg *s = seg_at(q, q->n - 1);
        ((tw__chunk *)s->owner)->used -= k;
        s->len -= k;
        q->bytes -= k;
    }
    return TW_ENOMEM;
}

int tw__wq_own(tw__net *ns, tw__wqueue *q, const char *p, size_t len, tw_drop_fn drop,
               void *owner)
{
    if (len <= TW__NET_SMALL) {
        tw__chunk *c = tail_chunk(q);
        if (c && c->cap - c->used >= len) { /* one segment, one iovec: worth a small copy */
            int rc = tw__wq_copy(ns, q, p, len);
            if (rc == 0 && drop)
                drop(owner);
            return rc;
        }
    }
    if (reserve(q))
        return TW_ENOMEM;
    *seg_at(q, q->n) = (tw__seg){p, len, drop, owner};
    q->n++;
    q->bytes += len;
    return 0;
}

/* Drop functions are the caller's code, and may write again (the next
 * buffer of a chain, as from a write callback) or close: each runs only once
 * its segment is out of the ring and the queue's accounting is whole. */
int tw__wq_send(tw__net *ns, tw__wqueue *q, int fd)
{
    while (q->n) {
        struct iovec iov[TW__NET_IOV];
        tw__seg sent_segs[TW__NET_IOV];
        int k = 0, done = 0;
        size_t want = 0;
        for (uint32_t i = 0; i < q->n && k < TW__NET_IOV; i++, k++) {
            tw__seg *s = seg_at(q, i);
            iov[k].iov_base = (void *)s->p;
            iov[k].iov_len = s->len;
            want += s->len;
        }
        ssize_t sent = tw__sock_send(fd, iov, k);
        if (sent < 0)
            return sent == -EAGAIN || sent == -EWOULDBLOCK ? 0 : (int)sent;
        size_t left = (size_t)sent;
        q->bytes -= left;
        while (left) {
            tw__seg *s = seg_at(q, 0);
            if (left < s->len) {
                s->p += left;
                s->len -= left;
                break;
            }
            left -= s->len;
            sent_segs[done++] = *s;
            q->head = (q->head + 1) & (q->cap - 1);
            q->n--;
        }
        for (int i = 0; i < done; i++)
            seg_drop(ns, &sent_segs[i]);
        if ((size_t)sent < want)
            return 0; /* the socket is full: another call would only say so */
    }
    return 0;
}

void tw__wq_clear(tw__net *ns, tw__wqueue *q)
{
    while (q->n) { /* out of the ring before its drop runs, as above */
        tw__seg s = *seg_at(q, 0);
        q->head = (q->head + 1) & (q->cap - 1);
        q->n--;
        q->bytes -= s.len;
        seg_drop(ns, &s);
    }
    if (q->segs != q->inline_segs)
        tw__free(q->segs, q->cap * sizeof *q->segs);
    tw__wq_init(q);
}
