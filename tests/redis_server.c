/* A redis-server child process for the tests and benchmarks (redis_server.h). */
#define _GNU_SOURCE /* mkdtemp, nftw */
#include "redis_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A pause between two probes of a child process coming up: there is no
 * event to wait on for another program's readiness. */
static void pause_ms(int ms)
{
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

bool tw_test_redis_available(void)
{
    const char *path = getenv("PATH");
    char buf[4096];
    if (!path)
        return false;
    while (*path) {
        const char *end = strchr(path, ':');
        size_t n = end ? (size_t)(end - path) : strlen(path);
        snprintf(buf, sizeof buf, "%.*s/redis-server", (int)n, path);
        if (access(buf, X_OK) == 0)
            return true;
        path += n + (end ? 1 : 0);
    }
    return false;
}

/* A port on 127.0.0.1 that was free a moment ago, or -1. */
static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static void log_tail(const tw_test_redis *s, char *out, size_t size)
{
    char path[192];
    snprintf(path, sizeof path, "%s/server.log", s->dir);
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (line[0]) {
            size_t n = strlen(line);
            if (n >= size)
                n = size - 1;
            memcpy(out, line, n);
            out[n] = 0;
        }
    }
    fclose(f);
}

static bool log_says(const tw_test_redis *s, const char *what)
{
    char path[192], line[512];
    bool found = false;
    snprintf(path, sizeof path, "%s/server.log", s->dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, what) != NULL;
    fclose(f);
    return found;
}

static pid_t spawn(tw_test_redis *s)
{
    char port[16];
    const char *argv[16 + TW_TEST_REDIS_MAX_ARGS + 1];
    int n = 0;
    snprintf(port, sizeof port, "%d", s->port);
    argv[n++] = "redis-server";
    argv[n++] = "--port";
    argv[n++] = port;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--dir";
    argv[n++] = s->dir;
    argv[n++] = "--daemonize";
    argv[n++] = "no";
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "no";
    argv[n++] = "--enable-debug-command";
    argv[n++] = "yes";
    for (int i = 0; i < s->nextra; i++)
        argv[n++] = s->extra[i];
    argv[n] = NULL;

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* The child: dies with the test process, logs to the directory. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    char path[192];
    snprintf(path, sizeof path, "%s/server.log", s->dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    int null = open("/dev/null", O_RDONLY);
    if (null >= 0) {
        dup2(null, 0);
        close(null);
    }
    execvp("redis-server", (char *const *)argv);
    _exit(127);
}

/* Waits until the child answers PING (1), exits (0), or 10 s pass (-1). */
static int await_ready(tw_test_redis *s)
{
    double deadline = now_s() + 10.0;
    while (now_s() < deadline) {
        int status;
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            return 0;
        }
        struct timeval tv = {0, 200000};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
        if (c && !c->err) {
            redisReply *r = redisCommand(c, "PING");
            /* PONG, or a refusal that needs a password: either way it runs
             * (a server still loading its data answers LOADING) */
            bool ok = r && ((r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0) ||
                            (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOAUTH", 6) == 0));
            if (r)
                freeReplyObject(r);
            redisFree(c);
            if (ok)
                return 1;
        } else if (c) {
            redisFree(c);
        }
        pause_ms(10);
    }
    return -1;
}

static void reap(tw_test_redis *s, int sig)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, sig);
    double deadline = now_s() + 10.0;
    for (;;) {
        int status;
        pid_t p = waitpid(s->pid, &status, sig == SIGKILL ? 0 : WNOHANG);
        if (p == s->pid || (p < 0 && errno != EINTR))
            break;
        if (now_s() > deadline) { /* a clean shutdown that hangs: crash it */
            kill(s->pid, SIGKILL);
            sig = SIGKILL;
        } else if (p == 0) {
            pause_ms(5);
        }
    }
    s->pid = 0;
}

static int start_on(tw_test_redis *s, bool new_port)
{
    for (int attempt = 0; attempt < 20; attempt++) {
        if (new_port || attempt > 0) {
            s->port = free_port();
            if (s->port <= 0) {
                snprintf(s->why, sizeof s->why, "no free port on 127.0.0.1: %s",
                         strerror(errno));
                return -1;
            }
        }
        s->pid = spawn(s);
        if (s->pid < 0) {
            s->pid = 0;
            snprintf(s->why, sizeof s->why, "fork: %s", strerror(errno));
            return -1;
        }
        int rc = await_ready(s);
        if (rc == 1)
            return 0;
        if (rc < 0) {
            char tail[200];
            log_tail(s, tail, sizeof tail);
            reap(s, SIGKILL);
            snprintf(s->why, sizeof s->why, "redis-server did not answer PING within 10 s: %s",
                     tail);
            return -1;
        }
        /* It exited: a port taken meanwhile is retried on another one. */
        if (!log_says(s, "Address already in use") || !new_port)
            break;
    }
    char tail[200];
    log_tail(s, tail, sizeof tail);
    snprintf(s->why, sizeof s->why, "redis-server exited at start: %s",
             tail[0] ? tail : "(no log; is redis-server installed?)");
    return -1;
}

int tw_test_redis_start(tw_test_redis *s, const char *const *extra)
{
    memset(s, 0, sizeof *s);
    if (!tw_test_redis_available()) {
        snprintf(s->why, sizeof s->why,
                 "redis-server is not installed (Debian: apt-get install redis-server)");
        return -1;
    }
    /* hiredis writes with write(2): a server that goes away must not kill the
     * test with SIGPIPE (the Redis layer ignores it too). */
    signal(SIGPIPE, SIG_IGN);
    snprintf(s->dir, sizeof s->dir, "/tmp/twine-redis-XXXXXX");
    if (!mkdtemp(s->dir)) {
        snprintf(s->why, sizeof s->why, "mkdtemp: %s", strerror(errno));
        s->dir[0] = 0;
        return -1;
    }
    for (; extra && extra[s->nextra]; s->nextra++) {
        if (s->nextra == TW_TEST_REDIS_MAX_ARGS) {
            snprintf(s->why, sizeof s->why, "more than %d extra arguments",
                     TW_TEST_REDIS_MAX_ARGS);
            tw_test_redis_stop(s);
            return -1;
        }
        s->extra[s->nextra] = strdup(extra[s->nextra]);
    }
    if (start_on(s, true) != 0) {
        char why[sizeof s->why];
        memcpy(why, s->why, sizeof why);
        tw_test_redis_stop(s);
        memcpy(s->why, why, sizeof why);
        return -1;
    }
    return 0;
}

void tw_test_redis_kill(tw_test_redis *s, int sig)
{
    reap(s, sig);
}

int tw_test_redis_restart(tw_test_redis *s)
{
    reap(s, SIGKILL);
    return start_on(s, false);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void tw_test_redis_stop(tw_test_redis *s)
{
    reap(s, SIGKILL);
    if (s->dir[0])
        nftw(s->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    s->dir[0] = 0;
    for (int i = 0; i < s->nextra; i++)
        free(s->extra[i]);
    s->nextra = 0;
}

redisContext *tw_test_redis_connect(const tw_test_redis *s)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

static redisReply *vcmd(const tw_test_redis *s, const char *fmt, va_list ap)
{
    redisContext *c = tw_test_redis_connect(s);
    if (!c)
        return NULL;
    redisReply *r = redisvCommand(c, fmt, ap);
    redisFree(c);
    return r;
}

redisReply *tw_test_redis_cmd(const tw_test_redis *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(s, fmt, ap);
    va_end(ap);
    return r;
}

long long tw_test_redis_int(const tw_test_redis *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(s, fmt, ap);
    va_end(ap);
    long long v = -1;
    if (!r)
        return -1;
    if (r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r->type == REDIS_REPLY_NIL)
        v = 0;
    else if (r->type == REDIS_REPLY_STRING) {
        char *end;
        v = strtoll(r->str, &end, 10);
        if (end == r->str || *end)
            v = -1;
    }
    freeReplyObject(r);
    return v;
}
