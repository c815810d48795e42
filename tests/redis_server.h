/* A real redis-server for the Redis tests and benchmarks: started as a child
 * process on a free loopback port with a temporary directory, never a system
 * service, and stopped (killed and reaped, its directory removed) at the end.
 *
 *     tw_test_redis srv;
 *     if (tw_test_redis_start(&srv, NULL) != 0)     // no redis-server: say so, skip
 *         ...;
 *     ... connect to 127.0.0.1:srv.port ...
 *     tw_test_redis_stop(&srv);
 *
 * The server dies with the process that started it (PR_SET_PDEATHSIG), so a
 * test that crashes leaves no server behind. The port is found by binding a
 * socket to port 0 and closing it (redis has no --port 0); a server that
 * cannot bind it (another process took it meanwhile) is retried on a new one.
 */
#ifndef TW_TEST_REDIS_SERVER_H
#define TW_TEST_REDIS_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

#define TW_TEST_REDIS_MAX_ARGS 24

typedef struct tw_test_redis {
    pid_t pid;      /* the running server; 0 when stopped */
    int port;       /* its port on 127.0.0.1 */
    char dir[128];  /* its working directory (dump, AOF, log) */
    char why[256];  /* why start failed */
    int nextra;
    char *extra[TW_TEST_REDIS_MAX_ARGS]; /* more arguments, kept for a restart */
} tw_test_redis;

/* Whether redis-server can be found on PATH. */
bool tw_test_redis_available(void);

/* Starts a server with `--save '' --appendonly no` and the NULL-terminated
 * `extra` arguments after them (which may override them, e.g. "--appendonly",
 * "yes"), and waits (at most 10 s) until it answers PING. 0 on success; -1
 * with the reason in s->why otherwise (nothing left running). */
int tw_test_redis_start(tw_test_redis *s, const char *const *extra);

/* Kills the server with `sig` (SIGKILL: a crash; SIGTERM: a clean shutdown
 * that writes what its persistence settings say) and reaps it. The port and
 * directory are kept for tw_test_redis_restart. */
void tw_test_redis_kill(tw_test_redis *s, int sig);

/* Starts the server again on the same port, directory and arguments (after
 * tw_test_redis_kill); waits until it answers PING (and has loaded its data).
 * 0 or -1 as tw_test_redis_start. */
int tw_test_redis_restart(tw_test_redis *s);

/* Stops the server (SIGKILL) if it runs, reaps it and removes its directory.
 * Safe to call twice and after a failed start. */
void tw_test_redis_stop(tw_test_redis *s);

/* A blocking hiredis connection to the server (NULL on failure), for the
 * tests' own checks and control commands (CLIENT KILL, DEBUG SLEEP, ...). */
redisContext *tw_test_redis_connect(const tw_test_redis *s);

/* One command on a new blocking connection; the reply (free it with
 * freeReplyObject) or NULL if the server could not be reached. */
redisReply *tw_test_redis_cmd(const tw_test_redis *s, const char *fmt, ...);

/* An integer from one command: an integer reply, or a string reply that
 * parses as one, or a nil reply (0). -1 on anything else. */
long long tw_test_redis_int(const tw_test_redis *s, const char *fmt, ...);

#endif
