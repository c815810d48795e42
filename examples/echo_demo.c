/*
 * echo_demo — runs examples/echo_server (built beside it) and checks it from
 * a twine client, over TCP on 127.0.0.1, over IPv6 on ::1 when the machine
 * has it, and over a Unix socket:
 *
 *  1. starts `echo_server ENDPOINT` and reads its "listening on ..." line;
 *  2. connects 8 clients at once; each sends 256 KiB of its own bytes in
 *     writes of assorted sizes, closes its sending side, and checks that
 *     every byte comes back, in order, before the server closes cleanly;
 *  3. keeps one more connection open, idle, and sends the server SIGTERM:
 *     the server closes that connection cleanly and exits with status 0.
 *
 * Everything stays on this machine. Exits 0 when every check passed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <twine.h>

extern char **environ;

#define CLIENTS 8
#define BYTES (256 * 1024)

static void die(const char *what)
{
    fprintf(stderr, "echo_demo: %s\n", what);
    exit(1);
}

/* ---- the echo_server process -------------------------------------------------- */

static pid_t server;

/* Starts echo_server ENDPOINT; returns what follows "listening on ". */
static void start_server(const char *endpoint, char *where, size_t size)
{
    char exe[PATH_MAX], path[PATH_MAX + 16];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        die("cannot find my own path");
    exe[n] = '\0';
    *strrchr(exe, '/') = '\0';
    snprintf(path, sizeof path, "%s/echo_server", exe);
    int out[2];
    if (pipe(out) != 0)
        die("pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    char *argv[] = {path, (char *)endpoint, NULL};
    if (posix_spawn(&server, path, &fa, NULL, argv, environ) != 0)
        die("cannot start echo_server (build it first)");
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    char line[256];
    size_t len = 0;
    while (len < sizeof line - 1 && !memchr(line, '\n', len)) {
        struct pollfd p = {out[0], POLLIN, 0};
        if (poll(&p, 1, 10000) != 1)
            die("echo_server did not say where it listens within 10 s");
        ssize_t k = read(out[0], line + len, sizeof line - 1 - len);
        if (k <= 0)
            die("echo_server exited before listening");
        len += (size_t)k;
    }
    close(out[0]);
    line[len] = '\0';
    *strchr(line, '\n') = '\0';
    if (strncmp(line, "listening on ", 13) != 0)
        die("echo_server's first line is not \"listening on ...\"");
    snprintf(where, size, "%s", line + 13);
    printf("   echo_server %s: %s\n", endpoint, line);
}

/* Waits for the server, which was sent SIGTERM, to exit. */
static int wait_server(void)
{
    for (int i = 0; i < 1000; i++) { /* 10 s at most */
        int status;
        pid_t p = waitpid(server, &status, WNOHANG);
        if (p == server)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(server, SIGKILL);
    waitpid(server, NULL, 0);
    return -1;
}

/* ---- the clients ------------------------------------------------------------------ */

typedef struct client {
    unsigned char out[BYTES], in[BYTES];
    size_t got;
    bool idle; /* sends nothing: the one SIGTERM must close */
    int lost;  /* the reason's code, once lost */
    bool done;
} client;

static client clients[CLIENTS + 1];
static int finished;

static void made(void *ctx, tw_transport *t)
{
    client *c = ctx;
    if (c->idle)
        return;
    for (size_t off = 0, n = 1; off < BYTES; off += n, n = n * 3 % 9973 + 1) {
        if (n > BYTES - off)
            n = BYTES - off;
        tw_transport_write(t, c->out + off, n);
    }
    tw_transport_close_write(t); /* the server sends the rest, then closes */
}

static void received(void *ctx, tw_transport *t, const void *data, size_t len)
{
    (void)t;
    client *c = ctx;
    if (c->got + len > BYTES)
        die("more bytes came back than were sent");
    memcpy(c->in + c->got, data, len);
    c->got += len;
}

static void lost(void *ctx, tw_transport *t, tw_failure *why)
{
    (void)t;
    client *c = ctx;
    c->lost = tw_failure_code(why);
    c->done = true;
    finished++;
}

static const tw_protocol client_protocol = {made, received, NULL, lost};

static int build(void *arg, const tw_address *peer, void **ctx)
{
    (void)peer;
    *ctx = arg;
    return 0;
}

static bool run_until(tw_reactor *r, int n, double seconds)
{
    double left = seconds;
    while (finished < n && left > 0) {
        tw_reactor_iterate(r, 0.01);
        left -= 0.01; /* at least; a bound, not a measure */
    }
    return finished >= n;
}

static void check(const char *endpoint, const char *client_fmt)
{
    char where[256], ep[512];
    start_server(endpoint, where, sizeof where);
    snprintf(ep, sizeof ep, client_fmt, where);
    tw_reactor *r;
    if (tw_reactor_create(&r) != 0)
        die("tw_reactor_create");
    memset(clients, 0, sizeof clients);
    finished = 0;
    tw_deferred *d[CLIENTS + 1];
    for (int i = 0; i <= CLIENTS; i++) {
        client *c = &clients[i];
        c->idle = i == CLIENTS;
        for (size_t k = 0; k < BYTES; k++)
            c->out[k] = (unsigned char)(k * 31 + (size_t)i * 7 + k / 251);
        tw_factory f = {&client_protocol, build, c};
        if (tw_endpoint_connect(r, ep, &f, &d[i]) != 0)
            die("tw_endpoint_connect");
    }
    if (!run_until(r, CLIENTS, 20))
        die("the echoes did not all come back within 20 s");
    for (int i = 0; i < CLIENTS; i++) {
        client *c = &clients[i];
        if (c->got != BYTES || memcmp(c->in, c->out, BYTES) != 0)
            die("an echo differs from what was sent");
        if (c->lost != TW_ECONNDONE)
            die("a connection did not end cleanly");
    }
    printf("   %d clients x %d KiB echoed byte for byte, each closed cleanly\n", CLIENTS,
           BYTES / 1024);
    if (clients[CLIENTS].done)
        die("the idle connection closed before SIGTERM");
    kill(server, SIGTERM);
    if (!run_until(r, CLIENTS + 1, 10) || clients[CLIENTS].lost != TW_ECONNDONE)
        die("SIGTERM did not close the idle connection cleanly");
    int status = wait_server();
    if (status != 0)
        die("echo_server did not exit with status 0 on SIGTERM");
    printf("   SIGTERM: the idle connection closed cleanly, echo_server exited 0\n");
    for (int i = 0; i <= CLIENTS; i++)
        tw_deferred_unref(d[i]);
    tw_reactor_destroy(r);
}

static bool have_ipv6_loopback(void)
{
    tw_address a;
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0 || tw_address_ip(&a, "::1", 0) != 0)
        return false;
    bool ok = bind(fd, &a.u.sa, a.len) == 0;
    close(fd);
    return ok;
}

int main(void)
{
    check("tcp:0:interface=127.0.0.1", "tcp:127.0.0.1:%s");
    if (have_ipv6_loopback())
        check("tcp6:0:interface=\\:\\:1", "tcp:\\:\\:1:%s");
    else
        printf("   (no ::1 on this machine: IPv6 skipped)\n");
    char dir[] = "/tmp/twine-echo-XXXXXX";
    if (!mkdtemp(dir))
        die("mkdtemp");
    char ep[128];
    snprintf(ep, sizeof ep, "unix:%s/echo.sock", dir);
    check(ep, "unix:%s");
    if (rmdir(dir) != 0) /* empty: the server removed its socket file when it stopped */
        die("echo_server left its socket file behind");
    printf("echo_demo: all checks passed\n");
    return 0;
}
