/*
 * net_common.h — what the net suite's load client (net_bench.c) and its C
 * servers (net_*_server.c) agree on: the workloads, their message sizes and
 * contents, and the servers' command line. bench/py_net_server.py repeats
 * these constants for Twisted; the two must stay the same.
 *
 * A server is run as `SERVER WORKLOAD PORT [COUNT]`:
 *   pingpong, stream  echo every byte of every connection back; when the
 *                     client closes its side, send what is left and close
 *   accept            on every connection, write the 8-byte greeting, then
 *                     wait for the client to go (it resets the connection)
 *                     and close
 *   write_batch       on every connection, write COUNT (default 10^6)
 *                     8-byte messages, one library write call each, as fast
 *                     as it can; message i is i as a little-endian uint64;
 *                     then close once all of it is sent
 * It listens on 127.0.0.1:PORT (0: any free port) with a backlog of
 * NET_BACKLOG, has TCP_NODELAY on every connection it accepts (twine's
 * transports do by default, so every server does), prints the bound port on
 * one line of stdout as soon as it accepts, and exits 0 on SIGTERM.
 */
#ifndef TWINE_BENCH_NET_COMMON_H
#define TWINE_BENCH_NET_COMMON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NET_PINGPONG_SIZE 64   /* bytes per ping-pong message */
#define NET_STREAM_MSG 4096    /* bytes per streaming write of the client */
#define NET_STREAM_CONNS 100   /* streaming connections */
#define NET_ACCEPT_CLIENTS 100 /* clients connecting at once */
#define NET_GREETING "greeting"
#define NET_GREETING_SIZE 8
#define NET_BATCH_MSG 8 /* bytes per write_batch message */
#define NET_BATCH_COUNT 1000000L
#define NET_BACKLOG 1024

enum net_workload { NET_PINGPONG, NET_STREAM, NET_ACCEPT, NET_WRITE_BATCH };

static const char *const net_workload_names[] = {"pingpong", "stream", "accept", "write_batch"};

/* The workload named s, or -1. */
static inline int net_workload_parse(const char *s)
{
    int i;
    for (i = 0; i < 4; i++)
        if (strcmp(s, net_workload_names[i]) == 0)
            return i;
    return -1;
}

/* Message i of write_batch, as it must arrive: i as a little-endian uint64. */
static inline void net_batch_msg(unsigned char out[NET_BATCH_MSG], uint64_t i)
{
    int b;
    for (b = 0; b < NET_BATCH_MSG; b++)
        out[b] = (unsigned char)(i >> (8 * b));
}

/* An array of messages 0..n-1 in order (n * NET_BATCH_MSG bytes): the bytes
 * the client must read, which every C server writes from one message at a
 * time. Exits when out of memory. */
static inline unsigned char *net_batch_alloc(long n)
{
    unsigned char *m = malloc((size_t)n * NET_BATCH_MSG);
    long i;
    if (!m) {
        fprintf(stderr, "server: out of memory for %ld messages\n", n);
        exit(1);
    }
    for (i = 0; i < n; i++)
        net_batch_msg(m + (size_t)i * NET_BATCH_MSG, (uint64_t)i);
    return m;
}

/* A server's command line: SERVER WORKLOAD PORT [COUNT]. Prints the usage
 * and exits 2 when it is wrong. */
static inline void net_server_args(int argc, char **argv, int *workload, int *port, long *count)
{
    char *end;
    long p;

    *count = NET_BATCH_COUNT;
    if (argc < 3 || argc > 4 || (*workload = net_workload_parse(argv[1])) < 0)
        goto usage;
    p = strtol(argv[2], &end, 10);
    if (*end || p < 0 || p > 65535)
        goto usage;
    *port = (int)p;
    if (argc == 4) {
        *count = strtol(argv[3], &end, 10);
        if (*end || *count < 1)
            goto usage;
    }
    return;
usage:
    fprintf(stderr, "usage: %s pingpong|stream|accept|write_batch PORT [COUNT]\n", argv[0]);
    exit(2);
}

/* Tells the client the server is listening: the port on one line. */
static inline void net_server_ready(int port)
{
    printf("%d\n", port);
    fflush(stdout);
}

#endif /* TWINE_BENCH_NET_COMMON_H */
