/*
 * net_bench.c — the net suite's load client. It starts every server (each a
 * program of its own: net_*_server, py_net_server.py), drives them over
 * loopback with the same client code, and checks every byte, so that only
 * the server differs from one row to the next.
 *
 *   tcp_pingpong     one connection, 64-byte messages: the client writes one,
 *                    waits for its echo, checks it and writes the next
 *                    (blocking socket); 20,000 round trips; round trips/s
 *   tcp_stream       100 connections, each streaming 2 MiB of 4 KiB messages
 *                    with at most 64 KiB (16 messages) sent and not yet
 *                    echoed back; each write carries every whole message
 *                    the window has room for (one epoll thread); MB/s of
 *                    echoed bytes (MB = 10^6 bytes)
 *   tcp_accept       100 clients at once, each connecting (non-blocking),
 *                    reading the 8-byte greeting and closing with a reset
 *                    (SO_LINGER 0: no TIME_WAIT, so the client's ports are
 *                    not the limit), then connecting again; 10,000
 *                    connections; connections/s
 *   tcp_write_batch  the server writes 10^6 8-byte messages to one
 *                    connection as fast as it can, one library write call
 *                    each (the server side of libuv's tcp_write_batch);
 *                    MB/s from connect to the end of the stream
 * Every byte is checked: echoes against what was sent, the greeting, each
 * write_batch message's number, and exact totals (after its last expected
 * byte a connection must reach end of stream).
 *
 * CPU: for every run, the server's CPU time before and after; tcp_*_cpu is
 * the server's CPU per round trip, per MB or per connection, with the extra
 * metrics `client` (this program's own CPU per operation, getrusage) and
 * `user` (the share of the server's CPU spent in user space, from utime and
 * stime of /proc/PID/stat); the throughput rows get `server_busy` and
 * `client_busy`, the CPU time each side used over the run's wall time (100%:
 * one CPU all the time), which say which side was the limit. The total comes from the server's CPU clock
 * (clock_getcpuclockid), the count /proc/PID/stat rounds to 10 ms ticks.
 *
 * Write system calls: tcp_write_batch_writes is the server's write, writev,
 * sendmsg and sendto calls per 1000 messages, counted by `strace -c -f` on
 * one separate run per server (ptrace slows the server, so that run gives no
 * other figure). /proc/PID/io's syscw would need no second run, but it counts
 * only write and writev: Twisted's socket.send is a sendto, and a writer
 * that uses send or sendmsg with MSG_NOSIGNAL would count as none. It is
 * kept as the extra metric `syscw` of the timed runs.
 *
 * tcp_pingpong_kernel is not a server: two threads of this program doing the
 * same ping-pong with blocking send and recv, what the kernel allows with no
 * event loop on either side.
 *
 * Method: each workload starts every server once, warms each up with a short
 * run (write_batch: a whole one), then runs them in turn (floor, libuv,
 * libevent, twine, Twisted, floor, ...) NET_REPS (9) times, write_batch
 * BENCH_REPS (5) times; medians as in the other suites. A server that echoes a wrong byte, sends one too many or too
 * few, closes early, or does not exit with status 0 on SIGTERM invalidates
 * the run: exit status 2, no figure.
 *
 * Servers: the programs net_epoll_server ("epoll floor"), net_uv_server
 * ("libuv uv_tcp"), net_event_server ("libevent bufferevent") and
 * net_twine_server ("twine net") found next to this program, plus any given
 * with --server NAME=COMMAND (the command is split at spaces; bench/run.sh
 * adds "python Twisted=PYTHON bench/py_net_server.py"). Each is run as
 * COMMAND WORKLOAD 0 [COUNT] and prints its port (bench/net_common.h).
 *
 * usage: twine_bench_net [--csv PATH] [--scale F] [--only WORKLOAD[,...]] [--impl NAME[,...]]
 *                        [--server NAME=COMMAND]... [--no-strace] [--syscalls]
 *   --impl selects servers by name ("kernel blocking pair" for the probe),
 *   --no-strace skips the strace runs; --syscalls adds one run of every
 *   workload and server under strace -c -f and prints the server's system
 *   calls per operation, by name, the ten most frequent (not in the CSV;
 *   the count covers the server's whole life, start-up, warm-up and exit
 *   included, which is under 1% of a full-size run's calls except in
 *   write_batch, whose 8 MB take few calls).
 */
#define _GNU_SOURCE
#include "bench_util.h"
#include "net_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N_PINGPONG 20000L
#define STREAM_PER_CONN (2L << 20)
#define STREAM_WINDOW (64 * 1024)
#define N_ACCEPT 10000L
#define READ_BUF (256 * 1024)
#define MAX_SERVERS 8
/* Repetitions of each server in ping-pong, streaming and accepting: more than
 * BENCH_REPS, because on this 2-CPU VM a run is fast or slow (often 2x) by
 * where the scheduler puts the client and the server, and a median of 9 is
 * steadier than one of 5. */
#define NET_REPS 9

/* The bytes clients send: a pseudo-random pattern of a prime length, so a
 * misplaced byte shows, followed by its first READ_BUF bytes again so that
 * any READ_BUF bytes starting anywhere in it are contiguous. */
#define PATTERN_LEN 65521
static unsigned char pattern[PATTERN_LEN + READ_BUF];

static const unsigned char *pattern_at(long long offset)
{
    return pattern + offset % PATTERN_LEN;
}

static void pattern_init(void)
{
    uint64_t x = 0x9e3779b97f4a7c15u;
    size_t i;
    for (i = 0; i < PATTERN_LEN; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        pattern[i] = (unsigned char)(x >> 24);
    }
    for (i = PATTERN_LEN; i < sizeof pattern; i++)
        pattern[i] = pattern[i - PATTERN_LEN];
}

/* ---- servers ------------------------------------------------------------------ */
struct server {
    char name[64];
    char *argv[24]; /* the command; WORKLOAD 0 [COUNT] are added when it starts */
    int argc;
    pid_t pid;    /* what was started: the server, or strace running it */
    pid_t server; /* the server's own process */
    int out;      /* read end of its stdout */
    int port;
};

static struct server servers[MAX_SERVERS];
static int n_servers;
static const char *impl_list;
static bool use_strace = true;
static bool count_syscalls; /* --syscalls */
static const char *strace_path;
static char strace_out[PATH_MAX];

/* Servers running now, killed if this program stops early (the watchdog's
 * _exit included: they also get SIGKILL when this program dies). */
static void kill_servers(void)
{
    int i;
    for (i = 0; i < n_servers; i++) {
        if (servers[i].server > 0)
            kill(servers[i].server, SIGKILL);
        if (servers[i].pid > 0)
            kill(servers[i].pid, SIGKILL);
    }
}

__attribute__((noreturn)) static void invalid(const struct server *s, const char *workload,
                                              const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "bench: %s / %s: ", workload, s ? s->name : "kernel");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " - the run is invalid\n");
    exit(2);
}

static void server_add(const char *name, const char *command)
{
    struct server *s;
    char *cmd, *tok, *save;

    if (n_servers == MAX_SERVERS)
        bench_die("--server", "too many servers");
    s = &servers[n_servers];
    memset(s, 0, sizeof *s); /* a server --impl left out may have used the slot */
    snprintf(s->name, sizeof s->name, "%s", name);
    cmd = strdup(command);
    if (!cmd)
        bench_die("strdup", NULL);
    for (tok = strtok_r(cmd, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        if (s->argc == BENCH_COUNT_OF(s->argv) - 6)
            bench_die("--server", "command too long");
        s->argv[s->argc++] = tok;
    }
    if (s->argc == 0)
        bench_die("--server", "empty command");
    if (bench_listed(impl_list, s->name))
        n_servers++;
}

/* The built-in servers that exist next to this program. */
static void servers_builtin(void)
{
    static const char *const builtin[][2] = {
        {"epoll floor", "net_epoll_server"},
        {"libuv uv_tcp", "net_uv_server"},
        {"libevent bufferevent", "net_event_server"},
        {"twine net", "net_twine_server"},
    };
    char self[PATH_MAX], path[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    char *slash;
    int i;

    if (n < 0)
        bench_die("readlink /proc/self/exe", strerror(errno));
    self[n] = '\0';
    slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    for (i = 0; i < BENCH_COUNT_OF(builtin); i++) {
        snprintf(path, sizeof path, "%s/%s", self, builtin[i][1]);
        if (access(path, X_OK) == 0)
            server_add(builtin[i][0], path);
        else if (bench_listed(impl_list, builtin[i][0]))
            printf("  (%s: %s not built; no rows)\n", builtin[i][0], path);
    }
}

/* The traced server: strace's only child. */
static pid_t strace_child(pid_t strace)
{
    char path[64];
    long pid = 0;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/task/%d/children", strace, strace);
    f = fopen(path, "r");
    if (!f || fscanf(f, "%ld", &pid) != 1)
        bench_die("reading strace's child", path);
    fclose(f);
    return (pid_t)pid;
}

/* Starts server s for workload (count: write_batch's messages). trace: NULL,
 * or an strace -e expression ("" for every call): the server then runs under
 * strace -c -f, whose table goes to strace_out when it exits. */
static void server_start(struct server *s, int workload, long count, const char *trace)
{
    char *argv[40], portarg[] = "0", countarg[32], line[32];
    int p[2], argc = 0, i;
    size_t got = 0;
    pid_t parent = getpid();

    if (trace) {
        argv[argc++] = (char *)strace_path;
        argv[argc++] = "-f";
        argv[argc++] = "-qq";
        argv[argc++] = "-c";
        if (*trace) {
            argv[argc++] = "--seccomp-bpf"; /* only the traced calls stop the server */
            argv[argc++] = "-e";
            argv[argc++] = (char *)trace;
        }
        argv[argc++] = "-o";
        argv[argc++] = strace_out;
    }
    for (i = 0; i < s->argc; i++)
        argv[argc++] = s->argv[i];
    argv[argc++] = (char *)net_workload_names[workload];
    argv[argc++] = portarg;
    if (workload == NET_WRITE_BATCH) {
        snprintf(countarg, sizeof countarg, "%ld", count);
        argv[argc++] = countarg;
    }
    argv[argc] = NULL;

    if (pipe2(p, O_CLOEXEC) != 0)
        bench_die("pipe2", strerror(errno));
    fflush(NULL);
    s->pid = fork();
    if (s->pid < 0)
        bench_die("fork", strerror(errno));
    if (s->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        if (dup2(p[1], 1) < 0)
            _exit(127);
        execvp(argv[0], argv);
        fprintf(stderr, "bench: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(p[1]);
    s->out = p[0];
    s->server = s->pid;
    bench_watch_child(s->pid);
    while (got < sizeof line - 1) {
        ssize_t r = read(s->out, line + got, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            invalid(s, net_workload_names[workload], "the server exited before listening");
        if (line[got] == '\n')
            break;
        got++;
    }
    line[got] = '\0';
    s->port = atoi(line);
    if (s->port <= 0 || s->port > 65535)
        invalid(s, net_workload_names[workload], "the server printed '%s', not its port", line);
    if (trace)
        s->server = strace_child(s->pid);
    bench_watch_child(0);
}

/* SIGTERM to the server; it must exit with status 0 within 10 s. */
static void server_stop(struct server *s, const char *workload)
{
    int status = 0, i;
    pid_t r = 0;

    if (kill(s->server, SIGTERM) != 0)
        bench_die("kill", strerror(errno));
    for (i = 0; i < 1000 && r == 0; i++) {
        r = waitpid(s->pid, &status, WNOHANG);
        if (r == 0)
            usleep(10000);
    }
    if (r == 0) {
        kill(s->server, SIGKILL);
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &status, 0);
        s->pid = s->server = 0;
        invalid(s, workload, "the server did not exit within 10 s of SIGTERM");
    }
    s->pid = s->server = 0;
    close(s->out);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        invalid(s, workload, "the server ended with %s %d on SIGTERM",
                WIFEXITED(status) ? "exit status" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

/* ---- measuring --------------------------------------------------------------- */
/* A process's CPU time. utime and stime of /proc/PID/stat are in clock ticks
 * (10 ms here), too coarse for runs of a second in which an efficient server
 * spends a few hundred ms; the kernel keeps the same total in ns, and
 * clock_getcpuclockid gives it for another process (every thread, exited
 * ones too, as /proc/PID/stat counts them). So `total` is that clock and
 * utime and stime give only the split between user and kernel space. */
struct cpu {
    double user, sys; /* seconds, from /proc/PID/stat (ticks) */
    double total;     /* seconds, the process's CPU clock */
};

static long clk_tck;

static double cpu_clock(pid_t pid)
{
    struct timespec ts;
    clockid_t id;

    if (clock_getcpuclockid(pid, &id) != 0 || clock_gettime(id, &ts) != 0)
        bench_die("reading the server's CPU clock", strerror(errno));
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static struct cpu server_cpu(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long long ut = 0, st = 0;
    struct cpu c;
    ssize_t n;
    int fd;

    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        bench_die("open", path);
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        bench_die("read", path);
    buf[n] = '\0';
    /* the command name, in parentheses, may hold spaces: fields count from
     * its closing parenthesis, which ends field 2; utime and stime are 14 and 15 */
    p = strrchr(buf, ')');
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        bench_die("parsing", path);
    c.user = (double)ut / (double)clk_tck;
    c.sys = (double)st / (double)clk_tck;
    c.total = cpu_clock(pid);
    return c;
}

static struct cpu self_cpu(void)
{
    struct rusage ru;
    struct cpu c;
    getrusage(RUSAGE_SELF, &ru);
    c.user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6;
    c.sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
    c.total = c.user + c.sys;
    return c;
}

/* /proc/PID/io's syscw: write and writev calls (not send, sendto, sendmsg). */
static long server_syscw(pid_t pid)
{
    char path[64], line[128];
    long v = -1;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/io", pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "syscw:", 6) == 0)
            v = atol(line + 6);
    fclose(f);
    return v;
}

/* One timed run. */
struct run {
    double ops; /* round trips, MB or connections */
    double t0, seconds;
    struct cpu srv0, srv, cli0, cli; /* CPU at the start, then spent during the run */
    long syscw0, syscw;
};

static void run_begin(struct run *r, pid_t pid)
{
    r->srv0 = server_cpu(pid);
    r->syscw0 = server_syscw(pid);
    r->cli0 = self_cpu();
    r->t0 = bench_now();
}

static struct cpu cpu_minus(struct cpu a, struct cpu b)
{
    struct cpu d = {a.user - b.user, a.sys - b.sys, a.total - b.total};
    return d;
}

static void run_end(struct run *r, pid_t pid, double ops)
{
    r->seconds = bench_now() - r->t0;
    r->cli = cpu_minus(self_cpu(), r->cli0);
    r->srv = cpu_minus(server_cpu(pid), r->srv0);
    r->syscw = server_syscw(pid) - r->syscw0;
    r->ops = ops;
}

/* ---- client sockets -------------------------------------------------------------- */
static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    return sa;
}

/* A connected blocking socket with TCP_NODELAY. */
static int dial(const struct server *s, const char *workload, int port)
{
    struct sockaddr_in sa = loopback(port);
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        bench_die("socket", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        invalid(s, workload, "connect: %s", strerror(errno));
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        bench_die("setsockopt(TCP_NODELAY)", strerror(errno));
    return fd;
}

static void write_all(const struct server *s, const char *workload, int fd, const void *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            invalid(s, workload, "write: %s", strerror(errno));
        }
        p = (const char *)p + w;
        n -= (size_t)w;
    }
}

static void read_exact(const struct server *s, const char *workload, int fd, void *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            invalid(s, workload, "read: %s", strerror(errno));
        if (r == 0)
            invalid(s, workload, "the server closed the connection early");
        p = (char *)p + r;
        n -= (size_t)r;
    }
}

/* ---- tcp_pingpong ------------------------------------------------------------------ */
static void pingpong_loop(const struct server *s, int fd, long first, long n)
{
    unsigned char in[NET_PINGPONG_SIZE];
    long i;

    for (i = first; i < first + n; i++) {
        const unsigned char *msg = pattern_at((long long)i * 7);
        write_all(s, "tcp_pingpong", fd, msg, NET_PINGPONG_SIZE);
        read_exact(s, "tcp_pingpong", fd, in, NET_PINGPONG_SIZE);
        if (memcmp(in, msg, NET_PINGPONG_SIZE) != 0)
            invalid(s, "tcp_pingpong", "round trip %ld came back different", i);
    }
}

/* After the last checked reply nothing more may come: the peer must close. */
static void expect_eof(const struct server *s, const char *workload, int fd)
{
    char c;
    ssize_t r;

    if (shutdown(fd, SHUT_WR) != 0)
        invalid(s, workload, "shutdown: %s", strerror(errno));
    do
        r = read(fd, &c, 1);
    while (r < 0 && errno == EINTR);
    if (r != 0)
        invalid(s, workload, "%s after the last expected byte",
                r > 0 ? "the server sent more" : strerror(errno));
    close(fd);
}

static void run_pingpong(struct server *s, long n, long warm, struct run *r)
{
    int fd = dial(s, "tcp_pingpong", s->port);

    pingpong_loop(s, fd, 0, warm);
    run_begin(r, s->server);
    pingpong_loop(s, fd, warm, n);
    run_end(r, s->server, (double)n);
    expect_eof(s, "tcp_pingpong", fd);
}

/* The kernel alone: a thread echoing with blocking recv and send. */
static void *kernel_echo(void *arg)
{
    int lfd = (int)(intptr_t)arg, fd = accept(lfd, NULL, NULL), one = 1;
    unsigned char buf[NET_PINGPONG_SIZE];
    ssize_t n;

    if (fd < 0)
        bench_die("accept", strerror(errno));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    while ((n = recv(fd, buf, sizeof buf, 0)) > 0)
        if (send(fd, buf, (size_t)n, 0) != n)
            break;
    close(fd);
    return NULL;
}

static void run_kernel_pingpong(long n, long warm, struct run *r)
{
    struct sockaddr_in sa = loopback(0);
    socklen_t len = sizeof sa;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), fd;
    pthread_t t;

    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 1) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &len) != 0)
        bench_die("kernel echo listener", strerror(errno));
    bench_die_rc("pthread_create", pthread_create(&t, NULL, kernel_echo, (void *)(intptr_t)lfd));
    fd = dial(NULL, "tcp_pingpong", ntohs(sa.sin_port));
    pingpong_loop(NULL, fd, 0, warm);
    r->t0 = bench_now();
    pingpong_loop(NULL, fd, warm, n);
    r->seconds = bench_now() - r->t0;
    r->ops = (double)n;
    close(fd);
    pthread_join(t, NULL);
    close(lfd);
}

/* ---- tcp_stream -------------------------------------------------------------------- */
struct sconn {
    int fd;
    long long sent, recvd;
    long long phase; /* where in the pattern this connection's bytes start */
    bool want_out;   /* watching EPOLLOUT: the socket was full */
};

/* Writes every whole message the connection's window has room for, in one
 * write: one write per 4 KiB message would cost the client more CPU per MB
 * than the floor server spends (each segment's loopback receive runs in the
 * sender's system call), and the client would be the limit (bench/README.md). */
static void stream_fill(const struct server *s, int ep, struct sconn *c, long long total)
{
    long long end = (c->recvd + STREAM_WINDOW) / NET_STREAM_MSG * NET_STREAM_MSG;
    bool full = false;

    if (end > total)
        end = total;
    while (c->sent < end) {
        ssize_t w = write(c->fd, pattern_at(c->phase + c->sent), (size_t)(end - c->sent));
        if (w < 0) {
            if (errno == EAGAIN) {
                full = true;
                break;
            }
            invalid(s, "tcp_stream", "write: %s", strerror(errno));
        }
        c->sent += w;
    }
    if (full != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (full ? EPOLLOUT : 0u),
                                 .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
            bench_die("epoll_ctl", strerror(errno));
        c->want_out = full;
    }
}

static void run_stream(struct server *s, long long per_conn, struct run *r)
{
    static struct sconn conns[NET_STREAM_CONNS];
    static unsigned char buf[READ_BUF];
    struct epoll_event evs[NET_STREAM_CONNS];
    int ep = epoll_create1(EPOLL_CLOEXEC), i, done = 0;

    if (ep < 0)
        bench_die("epoll_create1", strerror(errno));
    for (i = 0; i < NET_STREAM_CONNS; i++) {
        struct sconn *c = &conns[i];
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        c->fd = dial(s, "tcp_stream", s->port);
        c->sent = c->recvd = 0;
        c->phase = (long long)i * 4099;
        c->want_out = false;
        if (fcntl(c->fd, F_SETFL, O_NONBLOCK) != 0 ||
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
            bench_die("fcntl or epoll_ctl", strerror(errno));
    }
    run_begin(r, s->server);
    for (i = 0; i < NET_STREAM_CONNS; i++)
        stream_fill(s, ep, &conns[i], per_conn);
    while (done < NET_STREAM_CONNS) {
        int n = epoll_wait(ep, evs, NET_STREAM_CONNS, -1);
        if (n < 0 && errno != EINTR)
            bench_die("epoll_wait", strerror(errno));
        for (i = 0; i < n; i++) {
            struct sconn *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                ssize_t got = read(c->fd, buf, sizeof buf);
                if (got == 0)
                    invalid(s, "tcp_stream", "the server closed a connection early");
                if (got < 0 && errno != EAGAIN)
                    invalid(s, "tcp_stream", "read: %s", strerror(errno));
                if (got > 0) {
                    if (c->recvd + got > c->sent)
                        invalid(s, "tcp_stream", "the server sent bytes it was not sent");
                    if (memcmp(buf, pattern_at(c->phase + c->recvd), (size_t)got) != 0)
                        invalid(s, "tcp_stream", "an echoed byte differs");
                    c->recvd += got;
                    if (c->recvd == per_conn)
                        done++;
                }
            }
            stream_fill(s, ep, c, per_conn);
        }
    }
    run_end(r, s->server, (double)per_conn * NET_STREAM_CONNS / 1e6);
    for (i = 0; i < NET_STREAM_CONNS; i++) {
        if (fcntl(conns[i].fd, F_SETFL, 0) != 0)
            bench_die("fcntl", strerror(errno));
        expect_eof(s, "tcp_stream", conns[i].fd);
    }
    close(ep);
}

/* ---- tcp_accept -------------------------------------------------------------------- */
struct aconn {
    int fd;
    int got; /* bytes of the greeting read */
    char buf[NET_GREETING_SIZE * 2];
};

static void accept_open(const struct server *s, int ep, struct aconn *c)
{
    struct sockaddr_in sa = loopback(s->port);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};

    c->got = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        bench_die("socket", strerror(errno));
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS)
        invalid(s, "tcp_accept", "connect: %s", strerror(errno));
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        bench_die("epoll_ctl", strerror(errno));
}

static void run_accept(struct server *s, long n, struct run *r)
{
    static struct aconn conns[NET_ACCEPT_CLIENTS];
    static const struct linger reset = {1, 0};
    struct epoll_event evs[NET_ACCEPT_CLIENTS];
    int ep = epoll_create1(EPOLL_CLOEXEC), i;
    long started = 0, done = 0;

    if (ep < 0)
        bench_die("epoll_create1", strerror(errno));
    run_begin(r, s->server);
    for (i = 0; i < NET_ACCEPT_CLIENTS && started < n; i++, started++)
        accept_open(s, ep, &conns[i]);
    while (done < n) {
        int k = epoll_wait(ep, evs, NET_ACCEPT_CLIENTS, -1);
        if (k < 0 && errno != EINTR)
            bench_die("epoll_wait", strerror(errno));
        for (i = 0; i < k; i++) {
            struct aconn *c = evs[i].data.ptr;
            ssize_t got = read(c->fd, c->buf + c->got, sizeof c->buf - (size_t)c->got);
            if (got < 0 && errno == EAGAIN)
                continue;
            if (got < 0)
                invalid(s, "tcp_accept", "connection %ld: %s", done, strerror(errno));
            if (got == 0)
                invalid(s, "tcp_accept", "the server closed a connection before its greeting");
            c->got += (int)got;
            if (c->got > NET_GREETING_SIZE ||
                memcmp(c->buf, NET_GREETING, (size_t)c->got) != 0)
                invalid(s, "tcp_accept", "the greeting came wrong");
            if (c->got < NET_GREETING_SIZE)
                continue;
            if (setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset) != 0)
                bench_die("setsockopt(SO_LINGER)", strerror(errno));
            close(c->fd);
            done++;
            if (started < n) {
                accept_open(s, ep, c);
                started++;
            }
        }
    }
    run_end(r, s->server, (double)n);
    close(ep);
}

/* ---- tcp_write_batch ----------------------------------------------------------------- */
static unsigned char *batch_expected; /* messages 0..count-1 */
static long batch_expected_n;

static void run_write_batch(struct server *s, long count, struct run *r)
{
    static unsigned char buf[READ_BUF];
    long long total = (long long)count * NET_BATCH_MSG, off = 0;
    int fd;

    if (batch_expected_n != count) {
        free(batch_expected);
        batch_expected = net_batch_alloc(count);
        batch_expected_n = count;
    }
    run_begin(r, s->server);
    fd = dial(s, "tcp_write_batch", s->port);
    for (;;) {
        ssize_t got = read(fd, buf, sizeof buf);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            invalid(s, "tcp_write_batch", "read: %s", strerror(errno));
        if (got == 0)
            break;
        if (off + got > total)
            invalid(s, "tcp_write_batch", "the server sent more than %lld bytes", total);
        if (memcmp(buf, batch_expected + off, (size_t)got) != 0)
            invalid(s, "tcp_write_batch", "message %lld came wrong", off / NET_BATCH_MSG);
        off += got;
    }
    run_end(r, s->server, (double)total / 1e6);
    close(fd);
    if (off != total)
        invalid(s, "tcp_write_batch", "%lld of %lld bytes arrived", off, total);
}

/* ---- workloads ---------------------------------------------------------------------- */
struct workload {
    const char *name; /* tcp_pingpong, ... */
    int kind;         /* enum net_workload */
    const char *unit, *cpu_unit;
    double cpu_scale; /* server seconds per op -> cpu_unit */
    int reps;         /* repetitions of each server, at most NET_REPS */
};

static const struct workload workloads[] = {
    {"tcp_pingpong", NET_PINGPONG, "roundtrips/s", "us CPU/roundtrip", 1e6, NET_REPS},
    {"tcp_stream", NET_STREAM, "MB/s", "us CPU/MB", 1e6, NET_REPS},
    {"tcp_accept", NET_ACCEPT, "conns/s", "us CPU/conn", 1e6, NET_REPS},
    /* libuv's 10^6 uv_write calls take seconds a run; the ratio is 100x */
    {"tcp_write_batch", NET_WRITE_BATCH, "MB/s", "us CPU/MB", 1e6, BENCH_REPS},
};

static void run_one(const struct workload *w, struct server *s, bool warm, struct run *r)
{
    switch (w->kind) {
    case NET_PINGPONG:
        run_pingpong(s, warm ? bench_scaled(N_PINGPONG / 20) : bench_scaled(N_PINGPONG), 200, r);
        break;
    case NET_STREAM:
        run_stream(s, warm ? bench_scaled(STREAM_PER_CONN / 20) : bench_scaled(STREAM_PER_CONN),
                   r);
        break;
    case NET_ACCEPT:
        run_accept(s, warm ? bench_scaled(N_ACCEPT / 20) : bench_scaled(N_ACCEPT), r);
        break;
    default:
        run_write_batch(s, bench_scaled(NET_BATCH_COUNT), r);
    }
}

/* ---- system calls, counted by strace ------------------------------------------------ */
/* A system call's count in an strace -c table. */
struct syscall_count {
    char name[32];
    long calls; /* failed calls included */
};

static int by_calls(const void *a, const void *b)
{
    const struct syscall_count *x = a, *y = b;
    return (y->calls > x->calls) - (y->calls < x->calls);
}

/* Reads the table strace -c left in strace_out (and removes the file) into
 * out[0..max), most calls first; returns how many rows it read. */
static int strace_table(struct syscall_count *out, int max)
{
    char line[256];
    int n = 0;
    FILE *f = fopen(strace_out, "r");

    if (!f)
        return 0;
    /* "% time seconds usecs/call calls [errors] syscall" rows, then the total */
    while (n < max && fgets(line, sizeof line, f)) {
        struct syscall_count *c = &out[n];
        if ((sscanf(line, "%*f %*f %*d %ld %*[0-9 ] %31s", &c->calls, c->name) == 2 ||
             sscanf(line, "%*f %*f %*d %ld %31s", &c->calls, c->name) == 2) &&
            strcmp(c->name, "total") != 0)
            n++;
    }
    fclose(f);
    unlink(strace_out);
    qsort(out, (size_t)n, sizeof *out, by_calls);
    return n;
}

/* One more run of workload w on server s, started under strace -c -f with the
 * -e expression trace ("" for every call): the rows of its table in out,
 * most calls first, and how many there are; the run's operations in *ops.
 * The server's whole life is counted: starting, listening, the run (its
 * connections included) and exiting. ptrace slows every traced call, so the
 * run gives no other figure. */
static int strace_run(const struct workload *w, struct server *s, const char *trace,
                      struct syscall_count *out, int max, double *ops)
{
    char what[128];
    struct run r;

    snprintf(what, sizeof what, "%.40s / %.63s under strace", w->name, s->name);
    bench_watch(what);
    server_start(s, w->kind, bench_scaled(NET_BATCH_COUNT), trace);
    run_one(w, s, false, &r);
    server_stop(s, w->name);
    bench_watch(NULL);
    *ops = r.ops;
    return strace_table(out, max);
}

static void run_workload(const struct workload *w)
{
    static struct run runs[MAX_SERVERS][NET_REPS];
    double v[NET_REPS], cpu[NET_REPS], cli[NET_REPS], user[NET_REPS], sysw[NET_REPS];
    double cbusy[NET_REPS], sbusy[NET_REPS];
    double kernel[NET_REPS];
    char cpu_name[64], what[128];
    bool with_kernel = w->kind == NET_PINGPONG && bench_listed(impl_list, "kernel blocking pair");
    struct run warm;
    int i, rep;

    printf("%s\n", w->name);
    fflush(stdout);
    snprintf(cpu_name, sizeof cpu_name, "%s_cpu", w->name);
    for (i = 0; i < n_servers; i++) {
        snprintf(what, sizeof what, "%.40s / %.63s (start and warm-up)", w->name, servers[i].name);
        bench_watch(what);
        server_start(&servers[i], w->kind, bench_scaled(NET_BATCH_COUNT), NULL);
        run_one(w, &servers[i], true, &warm);
    }
    for (rep = 0; rep < w->reps; rep++) {
        if (with_kernel) {
            struct run r;
            bench_watch("tcp_pingpong / kernel blocking pair");
            run_kernel_pingpong(bench_scaled(N_PINGPONG), 200, &r);
            kernel[rep] = r.ops / r.seconds;
        }
        for (i = 0; i < n_servers; i++) {
            snprintf(what, sizeof what, "%.40s / %.63s", w->name, servers[i].name);
            bench_watch(what);
            run_one(w, &servers[i], false, &runs[i][rep]);
        }
    }
    for (i = 0; i < n_servers; i++) {
        bench_watch(w->name);
        server_stop(&servers[i], w->name);
    }
    bench_watch(NULL);

    if (with_kernel)
        bench_record("tcp_pingpong_kernel", "kernel blocking pair", w->unit, true, kernel,
                     w->reps);
    for (i = 0; i < n_servers; i++) {
        for (rep = 0; rep < w->reps; rep++) {
            const struct run *r = &runs[i][rep];
            v[rep] = r->ops / r->seconds;
            cbusy[rep] = 100.0 * r->cli.total / r->seconds;
            sbusy[rep] = 100.0 * r->srv.total / r->seconds;
            /* ops is MB here: messages = ops * 10^6 / 8 */
            sysw[rep] = r->syscw >= 0 ? (double)r->syscw * 1000.0 / (r->ops * 1e6 / NET_BATCH_MSG)
                                      : -1;
        }
        bench_record(w->name, servers[i].name, w->unit, true, v, w->reps);
        bench_record_extra(w->name, servers[i].name, "server_busy", "% of one CPU", sbusy,
                           w->reps);
        bench_record_extra(w->name, servers[i].name, "client_busy", "% of one CPU", cbusy,
                           w->reps);
        if (w->kind == NET_WRITE_BATCH && sysw[0] >= 0)
            bench_record_extra(w->name, servers[i].name, "syscw", "writes/1000 msgs", sysw,
                               w->reps);
    }
    for (i = 0; i < n_servers; i++) {
        for (rep = 0; rep < w->reps; rep++) {
            const struct run *r = &runs[i][rep];
            double ticks = r->srv.user + r->srv.sys;
            cpu[rep] = r->srv.total / r->ops * w->cpu_scale;
            cli[rep] = r->cli.total / r->ops * w->cpu_scale;
            user[rep] = ticks > 0 ? 100.0 * r->srv.user / ticks : 0;
        }
        bench_record(cpu_name, servers[i].name, w->cpu_unit, false, cpu, w->reps);
        bench_record_extra(cpu_name, servers[i].name, "client", w->cpu_unit, cli, w->reps);
        bench_record_extra(cpu_name, servers[i].name, "user", "% of server CPU", user,
                           w->reps);
    }

    if (w->kind == NET_WRITE_BATCH && use_strace) {
        for (i = 0; i < n_servers; i++) {
            struct syscall_count calls[8];
            double ops, writes = 0;
            int n = strace_run(w, &servers[i], "trace=write,writev,sendmsg,sendto", calls,
                               BENCH_COUNT_OF(calls), &ops);
            if (n == 0) {
                printf("  (%s: strace gave no count)\n", servers[i].name);
                continue;
            }
            while (n-- > 0)
                writes += (double)calls[n].calls;
            /* ops is MB: messages = ops * 10^6 / 8 */
            writes *= 1000.0 / (ops * 1e6 / NET_BATCH_MSG);
            bench_record("tcp_write_batch_writes", servers[i].name, "writes/1000 msgs", false,
                         &writes, 1);
        }
    }
    if (count_syscalls && strace_path) {
        for (i = 0; i < n_servers; i++) {
            struct syscall_count calls[64];
            double ops;
            int n = strace_run(w, &servers[i], "", calls, BENCH_COUNT_OF(calls), &ops), k;
            printf("  %-24s %-26s system calls per %s:", w->name, servers[i].name,
                   strchr(w->cpu_unit, '/') + 1);
            for (k = 0; k < n && k < 10 && (double)calls[k].calls / ops >= 0.01; k++)
                printf(" %s %.3g", calls[k].name, (double)calls[k].calls / ops);
            printf("\n");
        }
    }
    printf("\n");
}

/* Takes this program's own options (--server NAME=COMMAND, --no-strace,
 * --syscalls) out
 * of argv and returns the new argc. */
static int own_options(int argc, char **argv, const char **server_opts, int *n_server_opts)
{
    int i, out = 1;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--server") == 0 && i + 1 < argc) {
            if (*n_server_opts == MAX_SERVERS)
                bench_die("--server", "too many servers");
            server_opts[(*n_server_opts)++] = argv[++i];
        } else if (strcmp(argv[i], "--no-strace") == 0) {
            use_strace = false;
        } else if (strcmp(argv[i], "--syscalls") == 0) {
            count_syscalls = true;
        } else {
            argv[out++] = argv[i];
        }
    }
    argv[out] = NULL;
    return out;
}

static const char *find_strace(void)
{
    static const char *const paths[] = {"/usr/bin/strace", "/bin/strace", "/usr/local/bin/strace"};
    int i;
    for (i = 0; i < BENCH_COUNT_OF(paths); i++)
        if (access(paths[i], X_OK) == 0)
            return paths[i];
    return NULL;
}

int main(int argc, char **argv)
{
    const char *server_opts[MAX_SERVERS];
    struct bench_args args;
    int n_server_opts = 0, i;

    bench_watchdog_init();
    argc = own_options(argc, argv, server_opts, &n_server_opts);
    if (!bench_parse_args(argc, argv, true, NULL,
                          "[--csv PATH] [--scale F] [--only WORKLOAD[,...]] [--impl NAME[,...]] "
                          "[--server NAME=COMMAND]... [--no-strace] [--syscalls]",
                          &args))
        return 2;
    impl_list = args.impl;
    clk_tck = sysconf(_SC_CLK_TCK);
    signal(SIGPIPE, SIG_IGN);
    atexit(kill_servers);
    pattern_init();

    servers_builtin();
    for (i = 0; i < n_server_opts; i++) {
        char *eq = strchr(server_opts[i], '=');
        char name[64];
        if (!eq || eq == server_opts[i] || (size_t)(eq - server_opts[i]) >= sizeof name)
            bench_die("--server", "takes NAME=COMMAND");
        memcpy(name, server_opts[i], (size_t)(eq - server_opts[i]));
        name[eq - server_opts[i]] = '\0';
        server_add(name, eq + 1);
    }
    strace_path = find_strace();
    if (!strace_path && (use_strace || count_syscalls)) {
        printf("  (strace not found: no tcp_write_batch_writes rows; Debian: strace)\n");
        use_strace = count_syscalls = false;
    }
    snprintf(strace_out, sizeof strace_out, "/tmp/twine_bench_net.%d.strace", (int)getpid());

    bench_open_csv(args.csv);
    bench_warm_up(0.2);
    for (i = 0; i < BENCH_COUNT_OF(workloads); i++)
        if (bench_selected(args.only, workloads[i].name))
            run_workload(&workloads[i]);
    bench_close_csv();
    return 0;
}
