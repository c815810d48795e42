/* Endpoint strings, in Twisted's grammar: TYPE:ARG:ARG:KEY=VALUE..., where
 * an argument is positional unless it holds an unescaped '=', and a
 * backslash makes the next character literal (so tcp:7000:interface=\:\:1), and
 * so are colons inside square brackets that open a value
 * (tcp:7000:interface=[::1], tcp:[::1]:80), except in a Unix socket's path,
 * where brackets are plain characters.
 * Every mistake is TW_EINVAL with a message quoting the string and saying
 * what is wrong. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/net.h"

#define MAX_ARGS 8
#define MAX_LEN 1024

typedef struct parsed {
    const char *desc;
    char buf[MAX_LEN + 1]; /* the arguments, unescaped, each NUL-terminated */
    int n;                 /* arguments after the type */
    const char *type;
    const char *key[MAX_ARGS]; /* NULL: positional */
    const char *val[MAX_ARGS];
} parsed;

static tw_failure *bad(const parsed *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static tw_failure *bad(const parsed *p, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    /* The usual mistake: an IPv6 address split at its colons. */
    const char *hint = strstr(p->desc, "::") ? " (write ':' inside an address as \\:)" : "";
    return tw_failure_new(TW_EINVAL, "endpoint \"%s\": %s%s", p->desc, what, hint);
}

static tw_failure *tokenize(parsed *p, const char *desc)
{
    p->desc = desc;
    p->n = 0;
    if (!*desc)
        return bad(p, "empty description");
    if (strlen(desc) > MAX_LEN)
        return bad(p, "longer than %d bytes", MAX_LEN);
    char *w = p->buf;
    const char *s = desc;
    int field = -1; /* -1: the type */
    char *start = w;
    char *eq = NULL;
    for (;;) {
        char ch = *s;
        if (ch == '\\') {
            if (!s[1])
                return bad(p, "ends with a lone backslash");
            *w++ = s[1];
            s += 2;
            continue;
        }
        /* [::1]: colons inside brackets are the address's, where a value
         * starts; a Unix socket's path has no addresses, only characters. */
        if (ch == '[' && field >= 0 && w == (eq ? eq : start) && strcmp(p->type, "unix") != 0) {
            const char *close = strchr(s, ']');
            if (!close)
                return bad(p, "'[' without ']'");
            memcpy(w, s, (size_t)(close - s) + 1);
            w += close - s + 1;
            s = close + 1;
            continue;
        }
        if (ch == '=' && field >= 0 && !eq) {
            *w++ = '\0';
            eq = w;
            s++;
            continue;
        }
        if (ch == ':' || ch == '\0') {
            *w++ = '\0';
            if (field < 0) {
                p->type = start;
            } else {
                if (field >= MAX_ARGS)
                    return bad(p, "more than %d arguments", MAX_ARGS);
                p->key[field] = eq ? start : NULL;
                p->val[field] = eq ? eq : start;
                if (eq && !*start)
                    return bad(p, "an argument has an empty name");
                p->n = field + 1;
            }
            field++;
            start = w;
            eq = NULL;
            if (!ch)
                return NULL;
            s++;
            continue;
        }
        *w++ = ch;
        s++;
    }
}

/* Fills out[i] for each name in names (a NULL-terminated list, positional
 * order) from the positional and keyword arguments. */
static tw_failure *bind_args(parsed *p, const char *const *names, const char **out)
{
    int nnames = 0;
    while (names[nnames])
        out[nnames] = NULL, nnames++;
    int pos = 0;
    for (int i = 0; i < p->n; i++) {
        int k;
        if (!p->key[i]) {
            if (pos >= nnames)
                return bad(p, "too many arguments (at most %d without names)", nnames);
            k = pos++;
        } else {
            for (k = 0; k < nnames && strcmp(names[k], p->key[i]) != 0; k++)
                ;
            if (k == nnames)
                return bad(p, "unknown option \"%s\" for %s", p->key[i], p->type);
        }
        if (out[k])
            return bad(p, "\"%s\" given twice", names[k]);
        out[k] = p->val[i];
    }
    return NULL;
}

static tw_failure *number(parsed *p, const char *what, const char *s, long lo, long hi, int base,
                          long *out)
{
    char *end;
    errno = 0;
    long v = s && *s ? strtol(s, &end, base) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi)
        return bad(p, "%s \"%s\" is not a number from %ld to %ld", what, s ? s : "", lo, hi);
    *out = v;
    return NULL;
}

static tw_failure *seconds(parsed *p, const char *s, double *out)
{
    char *end;
    double v = s && *s ? strtod(s, &end) : NAN;
    if (!s || !*s || *end || !(v >= 0) || isinf(v))
        return bad(p, "timeout \"%s\" is not a number of seconds", s ? s : "");
    *out = v;
    return NULL;
}

static tw_failure *unix_path(parsed *p, const char *path, tw_address *a)
{
    if (!path || !*path)
        return bad(p, "missing the socket's path");
    if (tw_address_unix(a, path) != 0)
        return bad(p, "path of %zu bytes: at most %zu fit in a Unix socket address", strlen(path),
                   sizeof a->u.un.sun_path - 1);
    return NULL;
}

/* ---- servers ------------------------------------------------------------------------ */

static tw_failure *parse_server(const char *desc, tw_address *a, tw_listen_options *opt)
{
    parsed p;
    tw_failure *f = tokenize(&p, desc);
    if (f)
        return f;
    const char *v[3];
    long n = 0; /* set by number() whenever it is read */
    memset(opt, 0, sizeof *opt);
    bool v6 = strcmp(p.type, "tcp6") == 0;
    if (v6 || strcmp(p.type, "tcp") == 0) {
        static const char *const names[] = {"port", "interface", "backlog", NULL};
        if ((f = bind_args(&p, names, v)))
            return f;
        if (!v[0])
            return bad(&p, "missing the port");
        if ((f = number(&p, "port", v[0], 0, 65535, 10, &n)))
            return f;
        const char *ifc = v[1] ? v[1] : v6 ? "::" : "0.0.0.0";
        if (tw_address_ip(a, ifc, (uint16_t)n) != 0)
            return bad(&p, "interface \"%s\" is not a numeric IP address", ifc);
        if (v6 && a->u.sa.sa_family != AF_INET6)
            return bad(&p, "tcp6 needs an IPv6 interface, not \"%s\"", ifc);
        if (v[2] && (f = number(&p, "backlog", v[2], 1, 65535, 10, &n)))
            return f;
        opt->backlog = v[2] ? (int)n : 0;
        return NULL;
    }
    if (strcmp(p.type, "unix") == 0) {
        static const char *const names[] = {"address", "mode", "backlog", NULL};
        if ((f = bind_args(&p, names, v)) || (f = unix_path(&p, v[0], a)))
            return f;
        if (v[1] && (f = number(&p, "mode", v[1], 0, 0777, 8, &n)))
            return f;
        opt->mode = v[1] ? (unsigned)n : 0;
        if (v[2] && (f = number(&p, "backlog", v[2], 1, 65535, 10, &n)))
            return f;
        opt->backlog = v[2] ? (int)n : 0;
        return NULL;
    }
    return bad(&p, "unknown type \"%s\" for a server (tcp, tcp6 and unix are known)", p.type);
}

int tw_endpoint_listen(tw_reactor *r, const char *endpoint, const tw_factory *f,
                       tw_listener **out, tw_failure **err)
{
    if (err)
        *err = NULL;
    if (!r || !endpoint || !f || !f->protocol || !out) {
        if (err)
            *err = tw_failure_new(TW_EINVAL, "tw_endpoint_listen: invalid argument");
        return TW_EINVAL;
    }
    TW__NCHECK(r, "the reactor", "tw_endpoint_listen");
    tw_address a;
    tw_listen_options opt;
    tw_failure *why = parse_server(endpoint, &a, &opt);
    if (why) {
        if (err)
            *err = why;
        else
            tw_failure_unref(why);
        return TW_EINVAL;
    }
    return tw__listen(r, &a, &opt, f, out, err);
}

/* ---- clients ------------------------------------------------------------------------ */

int tw_endpoint_connect(tw_reactor *r, const char *endpoint, const tw_factory *f,
                        tw_deferred **out)
{
    if (!r || !endpoint || !f || !f->protocol || !out)
        return TW_EINVAL;
    TW__NCHECK(r, "the reactor", "tw_endpoint_connect");
    parsed p;
    tw_failure *why = tokenize(&p, endpoint);
    const char *v[3];
    long port = 0;
    double timeout = 30.0;
    tw_address a;
    if (why)
        return tw_deferred_fail(out, why);
    if (strcmp(p.type, "tcp") == 0) {
        static const char *const names[] = {"host", "port", "timeout", NULL};
        if (!(why = bind_args(&p, names, v)) && !v[0])
            why = bad(&p, "missing the host");
        if (!why && !*v[0])
            why = bad(&p, "empty host");
        if (!why && !v[1])
            why = bad(&p, "missing the port");
        if (!why)
            why = number(&p, "port", v[1], 1, 65535, 10, &port);
        if (!why && v[2])
            why = seconds(&p, v[2], &timeout);
        if (why)
            return tw_deferred_fail(out, why);
        if (tw_address_ip(&a, v[0], (uint16_t)port) == 0)
            return tw__connect(r, NULL, &a, 0, timeout, f, out);
        return tw__connect(r, v[0], NULL, (uint16_t)port, timeout, f, out);
    }
    if (strcmp(p.type, "unix") == 0) {
        static const char *const names[] = {"path", "timeout", NULL};
        if (!(why = bind_args(&p, names, v)))
            why = unix_path(&p, v[0], &a);
        if (!why && v[1])
            why = seconds(&p, v[1], &timeout);
        if (why)
            return tw_deferred_fail(out, why);
        return tw__connect(r, NULL, &a, 0, timeout, f, out);
    }
    return tw_deferred_fail(out, bad(&p, "unknown type \"%s\" for a client (tcp and unix are "
                                         "known)", p.type));
}
