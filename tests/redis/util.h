/* Helpers shared by the Redis layer's tests: a reactor driven by
 * tw_reactor_iterate, connections to the test's own redis-server
 * (../redis_server.h), and waits for Deferreds that fail the test after a
 * bounded time instead of hanging it. */
#ifndef TW_TEST_REDIS_UTIL_H
#define TW_TEST_REDIS_UTIL_H

#include "harness.h"
#include "redis_server.h"

#include <twine/reactor.h>
#include <twine/redis.h>

/* The server of the test group (started by rt_group_setup). */
extern tw_test_redis rt_server;

/* Group fixture: starts rt_server (skips every test, saying why, when
 * redis-server is missing) / stops it. */
int rt_group_setup(void **state);
int rt_group_teardown(void **state);
/* Per-test fixture: FLUSHALL, the diagnostics recorder, and at the end the
 * check that no twine block is left. */
int rt_setup(void **state);
int rt_teardown(void **state);
/* Skips the test if the group has no server. */
void rt_require_server(void);
/* A server of the test's own (for tests that kill or restart it), started
 * with the extra arguments (NULL-terminated, or NULL); the test is skipped,
 * saying why, if it cannot start. rt_teardown stops it, also when the test
 * failed half-way. */
tw_test_redis *rt_own_server(const char *const *extra);

/* Makes s reload its data (DEBUG RELOAD of 2000 keys, each delayed by
 * key-load-delay) so that for about `seconds` it answers every command
 * but a few with "LOADING", as a restarted server does while it reads its
 * AOF; returns once it does. rt_loading_end waits until it is done. */
redisContext *rt_loading_begin(const tw_test_redis *s, double seconds);
void rt_loading_end(redisContext *reload);

tw_reactor *rt_reactor(bool fake_clock);
/* Destroys r (every connection must be closed). */
void rt_reactor_free(tw_reactor *r);

/* A config for 127.0.0.1:port with the given command timeout and quick
 * reconnections. */
tw_redis_config rt_config(int port, double command_timeout);
/* Connects to rt_server and waits until the connection is up. */
tw_redis *rt_connect(tw_reactor *r);
tw_redis *rt_connect_to(tw_reactor *r, const tw_redis_config *cfg);
/* Closes c and iterates until it is freed. */
void rt_close(tw_reactor *r, tw_redis *c);

/* Iterates r until *flag is true; fails after `limit` seconds of real time. */
void rt_until(tw_reactor *r, const bool *flag, double limit);
/* Iterates r until `key` no longer exists on rt_server (a release sent
 * has been run); fails after `limit` seconds of real time. */
void rt_until_gone(tw_reactor *r, const char *key, double limit);
/* Iterates r until d fires; returns its result (the caller owns it) and
 * gives back the caller's reference to d. Fails after 20 s. */
tw_result rt_wait(tw_reactor *r, tw_deferred *d);
/* rt_wait, expecting a reply: returns it (free with tw_redis_reply_free). */
tw_redis_reply *rt_reply(tw_reactor *r, tw_deferred *d);
/* rt_wait, expecting a failure: returns its code, its message in msg. */
int rt_failure(tw_reactor *r, tw_deferred *d, char *msg, size_t size);
/* Sends a command and waits for the reply (which must come). */
tw_redis_reply *rt_cmd(tw_reactor *r, tw_redis *c, const char *fmt, ...);
/* The integer of a command's reply (an INTEGER, or a STRING holding one). */
long long rt_int(tw_reactor *r, tw_redis *c, const char *fmt, ...);

#endif
