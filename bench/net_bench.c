/*
 * twine_bench_net — the net suite: one load client, written once here, drives
 * every server over loopback, so that only the server differs. The servers
 * are programs of their own (bench/net_server_*.c, bench/py_net_server.py),
 * each started for its runs and stopped with SIGTERM after them:
 *
 *   twine net              net_server_twine (twine's net layer)
 *   epoll floor            net_server_epoll (a minimal epoll echo: what the kernel allows)
 *   libuv                  net_server_uv
 *   libevent bufferevent   net_server_event
 *   python Twisted         py_net_server.py (when TW_BENCH_TWISTED_PYTHON names an
 *                          interpreter with Twisted; bench/run.sh sets it)
 *
 * Loopback traffic on a small VM is bound by the kernel and the hypervisor,
 * so every workload reports the server's CPU time per operation beside the
 * throughput: the sum of the first field of /proc/PID/task/(each)/schedstat
 * (ns on the CPU) before and after the timed part. That is what separates
 * servers when the kernel or the client is the limit.
 *
 *   net_pingpong       one connection, 64-byte messages, send then wait for the echo
 *   net_stream         100 connections, 4 KiB messages, up to 128 KiB in flight each
 *   net_accept         rounds of 100 clients connecting at once; each sends one byte,
 *                      waits for its echo and closes with a reset (SO_LINGER 0), so
 *                      the client's ports are not the limit
 *   net_write_batch    the server writes 10^6 8-byte messages to one connection as fast
 *                      as its library's flow control lets it (one write call each); the
 *                      client reads them all. Extra workload net_write_batch_syscalls:
 *                      the server's send system calls per 1000 messages, counted by
 *                      net_syscount.so (LD_PRELOAD)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"

extern char **environ;

typedef struct impl {
    const char *name;
    const char *exe; /* beside this program, or the Python script */
    bool python;
    bool batch; /* has the batch mode */
} impl;

static const impl impls[] = {
    {"twine net", "net_server_twine", false, true},
    {"epoll floor", "net_server_epoll", false, false},
    {"libuv", "net_server_uv", false, true},
    {"libevent bufferevent", "net_server_event", false, true},
    {"python Twisted", "py_net_server.py", true, true},
};

static char bindir[PATH_MAX];
static const char *twisted_python;

/* ---- servers ---------------------------------------------------------------------- */

typedef struct server {
    pid_t pid;
    int port;
} server;

static void server_start(const impl *im, const char *mode, long count, const char *syscount,
                         server *s)
{
    char exe[PATH_MAX + 64], cnt[32], preload[PATH_MAX + 64], sc[PATH_MAX + 64];
    char *argv[6];
    int k = 0;
    if (im->python) {
        snprintf(exe, sizeof exe, "%s/py_net_server.py", TW_BENCH_SOURCE_DIR);
        argv[k++] = (char *)twisted_python;
    } else {
        snprintf(exe, sizeof exe, "%s/%s", bindir, im->exe);
    }
    argv[k++] = exe;
    argv[k++] = (char *)mode;
    if (count) {
        snprintf(cnt, sizeof cnt, "%ld", count);
        argv[k++] = cnt;
    }
    argv[k] = NULL;
    /* the environment, plus the counter when asked */
    int n = 0;
    while (environ[n])
        n++;
    char **env = calloc((size_t)n + 3, sizeof *env);
    memcpy(env, environ, (size_t)n * sizeof *env);
    if (syscount) {
        snprintf(preload, sizeof preload, "LD_PRELOAD=%s/libnet_syscount.so", bindir);
        snprintf(sc, sizeof sc, "TW_BENCH_SYSCOUNT=%s", syscount);
        env[n++] = preload;
        env[n++] = sc;
    }
    int out[2];
    bench_die_rc("pipe", pipe(out) ? errno : 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    int rc = posix_spawn(&s->pid, argv[0], &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    free(env);
    close(out[1]);
    if (rc)
        bench_die("starting a server", strerror(rc));
    bench_watch_child(s->pid);
    char line[128];
    size_t len = 0;
    while (len < sizeof line - 1 && !memchr(line, '\n', len)) {
        struct pollfd p = {out[0], POLLIN, 0};
        if (poll(&p, 1, 20000) != 1)
            bench_die("a server did not say where it listens", im->name);
        ssize_t got = read(out[0], line + len, sizeof line - 1 - len);
        if (got <= 0)
            bench_die("a server exited before listening", im->name);
        len += (size_t)got;
    }
    close(out[0]);
    line[len] = '\0';
    if (sscanf(line, "listening on %d", &s->port) != 1)
        bench_die("a server's first line", line);
}

/* Waits for the server to exit (after SIGTERM if `term`). */
static void server_stop(server *s, bool term)
{
    if (term)
        kill(s->pid, SIGTERM);
    for (int i = 0; i < 2000; i++) {
        if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
            bench_watch_child(0);
            return;
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    bench_watch_child(0);
}

/* The server's CPU time so far, in seconds, over all its threads. */
static double server_cpu(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        bench_die("reading a server's CPU time", path);
    double ns = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char p[320];
        snprintf(p, sizeof p, "/proc/%d/task/%s/schedstat", (int)pid, e->d_name);
        FILE *f = fopen(p, "r");
        unsigned long long run = 0;
        if (f) {
            if (fscanf(f, "%llu", &run) != 1)
                run = 0;
            fclose(f);
        }
        ns += (double)run;
    }
    closedir(d);
    return ns * 1e-9;
}

/* ---- the load client -------------------------------------------------------------------- */

static int dial(int port, bool blocking)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (blocking ? 0 : SOCK_NONBLOCK), 0);
    if (fd < 0)
        bench_die("socket", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS)
        bench_die("connect", strerror(errno));
    return fd;
}

static void read_exact(int fd, char *buf, size_t n)
{
    while (n) {
        ssize_t k = read(fd, buf, n);
        if (k <= 0)
            bench_die("reading an echo", k == 0 ? "end of file" : strerror(errno));
        buf += k;
        n -= (size_t)k;
    }
}

typedef struct sample {
    double rate; /* operations (or MB) per second */
    double cpu;  /* server CPU seconds per operation (or MB) */
} sample;

static sample pingpong(const server *s, long n)
{
    int fd = dial(s->port, true);
    char msg[64], back[64];
    memset(msg, 'p', sizeof msg);
    for (int i = 0; i < 1000; i++) { /* warm the path */
        if (write(fd, msg, sizeof msg) != (ssize_t)sizeof msg)
            bench_die("write", strerror(errno));
        read_exact(fd, back, sizeof back);
    }
    double c0 = server_cpu(s->pid), t0 = bench_now();
    for (long i = 0; i < n; i++) {
        if (write(fd, msg, sizeof msg) != (ssize_t)sizeof msg)
            bench_die("write", strerror(errno));
        read_exact(fd, back, sizeof back);
    }
    double t1 = bench_now(), c1 = server_cpu(s->pid);
    close(fd);
    return (sample){(double)n / (t1 - t0), (c1 - c0) / (double)n};
}

#define STREAM_CONNS 100
#define STREAM_MSG 4096
#define STREAM_WINDOW (128 * 1024)

typedef struct sconn {
    int fd;
    long sent, got;
    bool want_out, done;
} sconn;

static sample stream(const server *s, long per_conn)
{
    static sconn c[STREAM_CONNS];
    static char out[STREAM_MSG], in[65536];
    memset(out, 's', sizeof out);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < STREAM_CONNS; i++) {
        c[i] = (sconn){dial(s->port, true), 0, 0, true, false};
        fcntl(c[i].fd, F_SETFL, fcntl(c[i].fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event e = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &e);
    }
    double c0 = server_cpu(s->pid), t0 = bench_now();
    int done = 0;
    struct epoll_event evs[STREAM_CONNS];
    while (done < STREAM_CONNS) {
        int n = epoll_wait(ep, evs, STREAM_CONNS, 10000);
        if (n <= 0)
            bench_die("stream", "no progress for 10 s");
        for (int k = 0; k < n; k++) {
            sconn *x = &c[evs[k].data.u32];
            if (evs[k].events & EPOLLIN) {
                ssize_t r;
                while ((r = read(x->fd, in, sizeof in)) > 0)
                    x->got += r;
                if (r == 0)
                    bench_die("stream", "the server closed a connection");
                if (x->got == per_conn && !x->done) {
                    x->done = true;
                    done++;
                }
            }
            while (x->sent < per_conn && x->sent - x->got < STREAM_WINDOW) {
                long want = per_conn - x->sent < STREAM_MSG ? per_conn - x->sent : STREAM_MSG;
                ssize_t w = write(x->fd, out, (size_t)want);
                if (w <= 0)
                    break;
                x->sent += w;
            }
            bool want_out = x->sent < per_conn && x->sent - x->got < STREAM_WINDOW;
            if (want_out != x->want_out) {
                x->want_out = want_out;
                struct epoll_event e = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0u),
                                        .data.u32 = evs[k].data.u32};
                epoll_ctl(ep, EPOLL_CTL_MOD, x->fd, &e);
            }
        }
    }
    double t1 = bench_now(), c1 = server_cpu(s->pid);
    for (int i = 0; i < STREAM_CONNS; i++)
        close(c[i].fd);
    close(ep);
    double mb = (double)per_conn * STREAM_CONNS / 1e6;
    return (sample){mb / (t1 - t0), (c1 - c0) / mb};
}

#define ACCEPT_CLIENTS 100

static sample accept_rounds(const server *s, long rounds)
{
    int fds[ACCEPT_CLIENTS];
    int ep = epoll_create1(EPOLL_CLOEXEC);
    double c0 = server_cpu(s->pid), t0 = bench_now();
    for (long r = 0; r < rounds; r++) {
        for (int i = 0; i < ACCEPT_CLIENTS; i++) {
            fds[i] = dial(s->port, false);
            struct epoll_event e = {.events = EPOLLOUT, .data.u32 = (uint32_t)i};
            epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &e);
        }
        int phase[ACCEPT_CLIENTS] = {0}, finished = 0;
        struct epoll_event evs[ACCEPT_CLIENTS];
        while (finished < ACCEPT_CLIENTS) {
            int n = epoll_wait(ep, evs, ACCEPT_CLIENTS, 10000);
            if (n <= 0)
                bench_die("accept", "no progress for 10 s");
            for (int k = 0; k < n; k++) {
                int i = (int)evs[k].data.u32;
                char b = 'a';
                if (phase[i] == 0) { /* connected: send a byte, wait for it back */
                    int err = 0;
                    socklen_t len = sizeof err;
                    getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &err, &len);
                    if (err)
                        bench_die("accept: connect", strerror(err));
                    if (write(fds[i], &b, 1) != 1)
                        bench_die("accept: write", strerror(errno));
                    struct epoll_event e = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
                    epoll_ctl(ep, EPOLL_CTL_MOD, fds[i], &e);
                    phase[i] = 1;
                } else if (read(fds[i], &b, 1) == 1) {
                    struct linger lg = {1, 0};
                    setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
                    epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
                    close(fds[i]); /* a reset */
                    phase[i] = 2;
                    finished++;
                }
            }
        }
    }
    double t1 = bench_now(), c1 = server_cpu(s->pid);
    close(ep);
    double conns = (double)rounds * ACCEPT_CLIENTS;
    return (sample){conns / (t1 - t0), (c1 - c0) / conns};
}

typedef struct batch_sample {
    double mbps;
    double syscalls_per_1000;
} batch_sample;

static batch_sample write_batch(const impl *im, long count, bool counted)
{
    char path[64] = "";
    if (counted)
        snprintf(path, sizeof path, "/tmp/twine-syscount-%d", (int)getpid());
    server s;
    server_start(im, "batch", count, counted ? path : NULL, &s);
    double t0 = bench_now();
    int fd = dial(s.port, true);
    static char buf[1 << 16];
    long total = 0;
    ssize_t k;
    while ((k = read(fd, buf, sizeof buf)) > 0)
        total += k;
    double t1 = bench_now();
    close(fd);
    server_stop(&s, false); /* it exits once its batch is written */
    bench_check_count("net_write_batch", im->name, total, count * 8);
    batch_sample out = {(double)total / 1e6 / (t1 - t0), 0};
    if (counted) {
        FILE *f = fopen(path, "r");
        long calls = -1;
        if (!f || fscanf(f, "%ld", &calls) != 1)
            bench_die("reading the send count", path);
        fclose(f);
        unlink(path);
        out.syscalls_per_1000 = (double)calls * 1000.0 / (double)count;
    }
    return out;
}

/* ---- main ---------------------------------------------------------------------------------- */

static void record(const char *workload, const impl *im, const char *unit, bool higher,
                   const double *v, int n)
{
    bench_record(workload, im->name, unit, higher, v, n);
}

int main(int argc, char **argv)
{
    struct bench_args a;
    if (!bench_parse_args(argc, argv, true, NULL,
                          "[--csv PATH] [--scale F] [--only WORKLOAD,...] [--impl NAME,...]", &a))
        return 2;
    bench_watchdog_init();
    signal(SIGPIPE, SIG_IGN);
    ssize_t n = readlink("/proc/self/exe", bindir, sizeof bindir - 1);
    if (n <= 0)
        bench_die("finding this program's folder", NULL);
    bindir[n] = '\0';
    *strrchr(bindir, '/') = '\0';
    twisted_python = getenv("TW_BENCH_TWISTED_PYTHON");
    if (twisted_python && !*twisted_python)
        twisted_python = NULL;
    bench_open_csv(a.csv);

    long pp = bench_scaled(20000), per_conn = bench_scaled(4L << 20), rounds = bench_scaled(50);
    long batch = bench_scaled(1000000);
    for (int i = 0; i < BENCH_COUNT_OF(impls); i++) {
        const impl *im = &impls[i];
        if (!bench_listed(a.impl, im->name))
            continue;
        if (im->python && !twisted_python) {
            printf("  (python Twisted skipped: TW_BENCH_TWISTED_PYTHON is not set)\n");
            continue;
        }
        double rate[BENCH_REPS], cpu[BENCH_REPS];
        server s;
        if (bench_selected(a.only, "net_pingpong")) {
            server_start(im, "echo", 0, NULL, &s);
            for (int r = 0; r < BENCH_REPS; r++) {
                bench_watch("net_pingpong");
                sample x = pingpong(&s, pp);
                rate[r] = x.rate;
                cpu[r] = x.cpu * 1e6;
            }
            bench_watch(NULL);
            server_stop(&s, true);
            record("net_pingpong", im, "roundtrips/s", true, rate, BENCH_REPS);
            record("net_pingpong_cpu", im, "us CPU/roundtrip", false, cpu, BENCH_REPS);
        }
        if (bench_selected(a.only, "net_stream")) {
            server_start(im, "echo", 0, NULL, &s);
            for (int r = 0; r < BENCH_REPS; r++) {
                bench_watch("net_stream");
                sample x = stream(&s, per_conn);
                rate[r] = x.rate;
                cpu[r] = x.cpu * 1e6;
            }
            bench_watch(NULL);
            server_stop(&s, true);
            record("net_stream", im, "MB/s", true, rate, BENCH_REPS);
            record("net_stream_cpu", im, "us CPU/MB", false, cpu, BENCH_REPS);
        }
        if (bench_selected(a.only, "net_accept")) {
            server_start(im, "echo", 0, NULL, &s);
            for (int r = 0; r < BENCH_REPS; r++) {
                bench_watch("net_accept");
                sample x = accept_rounds(&s, rounds);
                rate[r] = x.rate;
                cpu[r] = x.cpu * 1e6;
            }
            bench_watch(NULL);
            server_stop(&s, true);
            record("net_accept", im, "conns/s", true, rate, BENCH_REPS);
            record("net_accept_cpu", im, "us CPU/conn", false, cpu, BENCH_REPS);
        }
        if (im->batch && bench_selected(a.only, "net_write_batch")) {
            double sys[BENCH_REPS];
            for (int r = 0; r < BENCH_REPS; r++) {
                bench_watch("net_write_batch");
                rate[r] = write_batch(im, batch, false).mbps;
            }
            bench_watch("net_write_batch_syscalls");
            batch_sample counted = write_batch(im, batch, true); /* a separate, counted run */
            bench_watch(NULL);
            sys[0] = counted.syscalls_per_1000;
            record("net_write_batch", im, "MB/s", true, rate, BENCH_REPS);
            record("net_write_batch_syscalls", im, "sends/1000 msgs", false, sys, 1);
        }
    }
    bench_close_csv();
    return 0;
}
