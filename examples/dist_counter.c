/*
 * dist_counter — seed 000's NetworkCounter, across processes and machines.
 *
 *     dist_counter --redis HOST:PORT --name NAME --count N
 *
 * Increments the counter held in the Redis string key NAME N times. Each
 * increment is a read-modify-write, GET then SET, and would lose updates if
 * two processes interleaved them; so each runs inside the distributed lock
 * named NAME (tw_redis_lock_run, the DeferredLock's run on Redis), and the
 * SET is fenced: it carries the lock's token, and Redis refuses it if a
 * newer holder exists. Prints "done N" on its last line. Four of these
 * started together against one Redis leave the counter at exactly 4N.
 *
 * All N increments are queued at once: the lock serves them in order, one
 * at a time, and every release hands the lock to the next process waiting.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <twine/reactor.h>
#include <twine/redis.h>

typedef struct counter {
    tw_redis *c;
    tw_redis_lock *lock;
    const char *name;
    long done, failed, count;
} counter;

/* After the GET: write value + 1 with the lock's fencing token. */
static tw_result write_next(tw_result r, void *arg)
{
    counter *k = arg;
    if (tw_result_is_failure(r))
        return r;
    const tw_redis_reply *rep = r.ptr;
    long long v = rep->type == TW_REDIS_STRING ? strtoll(rep->str, NULL, 10) : 0;
    tw_result_drop(r);
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%lld", v + 1);
    tw_deferred *d;
    int rc = tw_redis_lock_fenced_set(k->lock, k->name, buf, (size_t)n, &d);
    if (rc)
        return tw_result_fail(rc, "fenced SET not sent");
    return tw_result_deferred(d);
}

/* The critical section: runs while this process holds the lock. */
static tw_result increment(void *arg)
{
    counter *k = arg;
    tw_deferred *d;
    int rc = tw_redis_command(k->c, &d, "GET %s", k->name);
    if (rc)
        return tw_result_fail(rc, "GET not sent");
    tw_deferred_add_callback(d, write_next, k);
    return tw_result_deferred(d);
}

static tw_result finished(tw_result r, void *arg)
{
    counter *k = arg;
    if (tw_result_is_failure(r)) {
        char buf[512];
        tw_failure_format(tw_result_as_failure(r), buf, sizeof buf);
        fprintf(stderr, "dist_counter: an increment failed: %s\n", buf);
        k->failed++;
    }
    k->done++;
    tw_result_drop(r);
    return tw_result_none();
}

static int usage(void)
{
    fprintf(stderr, "usage: dist_counter --redis HOST:PORT --name NAME --count N\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *name = NULL;
    long count = -1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--redis"))
            addr = argv[i + 1];
        else if (!strcmp(argv[i], "--name"))
            name = argv[i + 1];
        else if (!strcmp(argv[i], "--count"))
            count = strtol(argv[i + 1], NULL, 10);
        else
            return usage();
    }
    if (argc % 2 == 0 || !addr || !name || !name[0] || count < 0)
        return usage();

    tw_redis_config cfg = TW_REDIS_CONFIG_INIT;
    char buf[256];
    if (tw_redis_parse_address(addr, buf, sizeof buf, &cfg) != 0) {
        fprintf(stderr, "dist_counter: bad address \"%s\" (HOST:PORT)\n", addr);
        return 2;
    }
    tw_reactor *r;
    counter k = {NULL, NULL, name, 0, 0, count};
    int rc = tw_reactor_create(&r);
    if (!rc)
        rc = tw_redis_connect(r, &cfg, &k.c);
    if (!rc) { /* a clear error, rather than increments waiting for a server that is not there */
        tw_deferred *up;
        rc = tw_redis_wait_connected(k.c, &up);
        if (!rc) {
            tw_deferred_add_timeout(up, 5.0, tw_reactor_clock(r), NULL, NULL);
            while (!tw_deferred_called(up))
                tw_reactor_iterate(r, 1.0);
            tw_result res;
            tw_deferred_peek(up, &res);
            if (tw_result_is_failure(res)) {
                fprintf(stderr, "dist_counter: cannot reach redis at %s: %s\n", addr,
                        tw_redis_last_error(k.c));
                return 1;
            }
            tw_deferred_unref(up);
        }
    }
    if (!rc)
        rc = tw_redis_lock_create(k.c, name, 10.0, &k.lock);
    for (long i = 0; !rc && i < count; i++) {
        tw_deferred *d;
        rc = tw_redis_lock_run(k.lock, increment, &k, &d);
        if (!rc) {
            tw_deferred_add_both(d, finished, &k);
            tw_deferred_unref(d);
        }
    }
    if (rc) {
        fprintf(stderr, "dist_counter: %s\n", tw_strerror(rc));
        return 1;
    }
    while (k.done < count)
        tw_reactor_iterate(r, 1.0);

    tw_redis_lock_destroy(k.lock);
    tw_deferred *closed;
    tw_redis_close(k.c, &closed);
    while (!tw_deferred_called(closed))
        tw_reactor_iterate(r, 1.0);
    tw_deferred_unref(closed);
    tw_reactor_destroy(r);
    if (k.failed) {
        fprintf(stderr, "dist_counter: %ld of %ld increments failed\n", k.failed, count);
        return 1;
    }
    printf("done %ld\n", count);
    return 0;
}
