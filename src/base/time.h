/* Internal: durations on twine's nanosecond timelines (the monotonic clock,
 * or a fake clock). */
#ifndef TW_BASE_TIME_H
#define TW_BASE_TIME_H

#include <twine/base.h>

/* seconds (>= 0 and finite) as nanoseconds, saturating at INT64_MAX;
 * TW_EINVAL for a negative, infinite or NaN delay (*out untouched). */
int tw__delay_ns(double seconds, int64_t *out);

/* t + d, saturating at INT64_MAX. Precondition: t >= 0 and d >= 0. */
static inline int64_t tw__add_sat(int64_t t, int64_t d)
{
    return d > INT64_MAX - t ? INT64_MAX : t + d;
}

#endif
