/* errno values as twine codes: one mapping for every layer that makes system
 * calls for the caller. */
#include "base/errno_map.h"

#include <errno.h>
#include <twine/base.h>

int tw__from_errno(int err)
{
    switch (err) {
    case ECONNREFUSED:
        return TW_ECONNREFUSED;
    case ECONNRESET:
    case EPIPE:
        return TW_ECONNRESET;
    case ECONNABORTED:
        return TW_ECONNABORTED;
    case EHOSTUNREACH:
    case ENETUNREACH:
    case ENETDOWN:
    case EHOSTDOWN:
        return TW_EUNREACH;
    case ETIMEDOUT:
        return TW_ETIMEDOUT;
    case EADDRINUSE:
        return TW_EADDRINUSE;
    case EACCES:
    case EPERM:
        return TW_EACCES;
    case ENOTCONN:
        return TW_ENOTCONN;
    case ENOMEM:
    case ENOBUFS:
        return TW_ENOMEM;
    case EMFILE:
    case ENFILE:
    case EAGAIN:
    case EADDRNOTAVAIL: /* no local port left, or an address this host lacks */
        return TW_ESYS;
    case EINVAL:
    case EAFNOSUPPORT:
    case EPROTONOSUPPORT:
        return TW_EINVAL;
    case ENOENT:
        return TW_ENOTFOUND;
    case ECANCELED:
        return TW_ECANCELED;
    default:
        return TW_EIO;
    }
}
