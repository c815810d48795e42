/* Socket addresses: numeric IP and Unix-path constructors, formatting. */
#include <arpa/inet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/net.h"

int tw_address_ip(tw_address *a, const char *ip, uint16_t port)
{
    if (!a || !ip)
        return TW_EINVAL;
    char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 4];
    size_t n = strlen(ip);
    if (n >= 2 && ip[0] == '[' && ip[n - 1] == ']') { /* [::1] */
        if (n - 2 >= sizeof buf)
            return TW_EINVAL;
        memcpy(buf, ip + 1, n - 2);
        buf[n - 2] = '\0';
        ip = buf;
    }
    memset(a, 0, sizeof *a);
    if (inet_pton(AF_INET, ip, &a->u.in.sin_addr) == 1) {
        a->u.in.sin_family = AF_INET;
        a->u.in.sin_port = htons(port);
        a->len = sizeof a->u.in;
        return 0;
    }
    char host[INET6_ADDRSTRLEN + 1];
    const char *pct = strchr(ip, '%');
    size_t hl = pct ? (size_t)(pct - ip) : strlen(ip);
    if (hl >= sizeof host)
        return TW_EINVAL;
    memcpy(host, ip, hl);
    host[hl] = '\0';
    if (inet_pton(AF_INET6, host, &a->u.in6.sin6_addr) != 1)
        return TW_EINVAL;
    if (pct) { /* fe80::1%lo: a scope, by interface name or number */
        unsigned idx = if_nametoindex(pct + 1);
        if (!idx) {
            char *end;
            unsigned long v = strtoul(pct + 1, &end, 10);
            if (!pct[1] || *end || v > UINT32_MAX)
                return TW_EINVAL;
            idx = (unsigned)v;
        }
        a->u.in6.sin6_scope_id = idx;
    }
    a->u.in6.sin6_family = AF_INET6;
    a->u.in6.sin6_port = htons(port);
    a->len = sizeof a->u.in6;
    return 0;
}

int tw_address_unix(tw_address *a, const char *path)
{
    if (!a || !path)
        return TW_EINVAL;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof a->u.un.sun_path)
        return TW_EINVAL;
    memset(a, 0, sizeof *a);
    a->u.un.sun_family = AF_UNIX;
    memcpy(a->u.un.sun_path, path, n + 1);
    a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

int tw_address_family(const tw_address *a)
{
    return a && a->len ? a->u.sa.sa_family : 0;
}

int tw_address_port(const tw_address *a)
{
    switch (tw_address_family(a)) {
    case AF_INET:
        return ntohs(a->u.in.sin_port);
    case AF_INET6:
        return ntohs(a->u.in6.sin6_port);
    default:
        return TW_EINVAL;
    }
}

size_t tw_address_format(const tw_address *a, char *buf, size_t size)
{
    char ip[INET6_ADDRSTRLEN];
    int n;
    switch (tw_address_family(a)) {
    case AF_INET:
        inet_ntop(AF_INET, &a->u.in.sin_addr, ip, sizeof ip);
        n = snprintf(buf, size, "%s:%u", ip, (unsigned)ntohs(a->u.in.sin_port));
        break;
    case AF_INET6:
        inet_ntop(AF_INET6, &a->u.in6.sin6_addr, ip, sizeof ip);
        if (a->u.in6.sin6_scope_id)
            n = snprintf(buf, size, "[%s%%%u]:%u", ip, (unsigned)a->u.in6.sin6_scope_id,
                         (unsigned)ntohs(a->u.in6.sin6_port));
        else
            n = snprintf(buf, size, "[%s]:%u", ip, (unsigned)ntohs(a->u.in6.sin6_port));
        break;
    case AF_UNIX: {
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t max = a->len > off ? a->len - off : 0;
        if (max > sizeof a->u.un.sun_path)
            max = sizeof a->u.un.sun_path;
        if (max && a->u.un.sun_path[0] == '\0') /* Linux's abstract namespace */
            n = snprintf(buf, size, "unix:@%.*s", (int)(max - 1), a->u.un.sun_path + 1);
        else
            n = snprintf(buf, size, "unix:%.*s", (int)strnlen(a->u.un.sun_path, max),
                         a->u.un.sun_path);
        break;
    }
    default:
        n = snprintf(buf, size, "(no address)");
        break;
    }
    return n < 0 ? 0 : (size_t)n;
}
