/* Internal: system errors as twine codes, for the layers that call the
 * operating system on the caller's behalf (sockets, name lookups). */
#ifndef TW_BASE_ERRNO_MAP_H
#define TW_BASE_ERRNO_MAP_H

#include <twine/base.h>

/* The TW_E* code for an errno value: the network errors have codes of their
 * own (ECONNREFUSED -> TW_ECONNREFUSED, EHOSTUNREACH and ENETUNREACH ->
 * TW_EUNREACH, EPIPE -> TW_ECONNRESET, ...), ENOMEM is TW_ENOMEM, EINVAL is
 * TW_EINVAL, and anything else is TW_EIO. err must be positive. */
TW_API int tw__from_errno(int err); /* TW_API: the component libraries use it too */

#endif
