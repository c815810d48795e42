/*
 * net_syscount.so — counts a server's send system calls, for the net suite's
 * write-coalescing workload: loaded with LD_PRELOAD, it wraps write, writev,
 * send, sendto and sendmsg, counts the calls made on sockets (whatever the
 * library calls them through) and, at exit, writes the count to the file
 * named by TW_BENCH_SYSCOUNT. A descriptor's kind is looked up once (fstat)
 * and forgotten when it is closed.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAXFD 4096
static unsigned char kind[MAXFD]; /* 0 unknown, 1 socket, 2 other */
static atomic_long calls;

static bool is_socket(int fd)
{
    if (fd < 0 || fd >= MAXFD)
        return false;
    if (!kind[fd]) {
        struct stat st;
        kind[fd] = fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) ? 1 : 2;
    }
    return kind[fd] == 1;
}

#define REAL(name, ret, ...)                                                   \
    static ret (*real_##name)(__VA_ARGS__);                                    \
    if (!real_##name)                                                          \
        real_##name = (ret(*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *b, size_t n)
{
    REAL(write, ssize_t, int, const void *, size_t);
    if (is_socket(fd))
        atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
    return real_write(fd, b, n);
}

ssize_t writev(int fd, const struct iovec *v, int n)
{
    REAL(writev, ssize_t, int, const struct iovec *, int);
    if (is_socket(fd))
        atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
    return real_writev(fd, v, n);
}

ssize_t send(int fd, const void *b, size_t n, int flags)
{
    REAL(send, ssize_t, int, const void *, size_t, int);
    atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
    return real_send(fd, b, n, flags);
}

ssize_t sendto(int fd, const void *b, size_t n, int flags, const struct sockaddr *a, socklen_t l)
{
    REAL(sendto, ssize_t, int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
    return real_sendto(fd, b, n, flags, a, l);
}

ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
    REAL(sendmsg, ssize_t, int, const struct msghdr *, int);
    atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
    return real_sendmsg(fd, m, flags);
}

int close(int fd)
{
    REAL(close, int, int);
    if (fd >= 0 && fd < MAXFD)
        kind[fd] = 0;
    return real_close(fd);
}

__attribute__((destructor)) static void report(void)
{
    const char *path = getenv("TW_BENCH_SYSCOUNT");
    FILE *f = path ? fopen(path, "w") : NULL;
    if (f) {
        fprintf(f, "%ld\n", atomic_load(&calls));
        fclose(f);
    }
}
