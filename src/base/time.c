/* Monotonic time and deadlines. */
#include <math.h>
#include <time.h>

#include "base/time.h"

int64_t tw_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int tw__delay_ns(double seconds, int64_t *out)
{
    if (!(seconds >= 0) || isinf(seconds))
        return TW_EINVAL;
    double ns = seconds * 1e9;
    /* Saturate instead of overflowing (2^63 ns, ~292 years, is "never"). */
    *out = ns >= 0x1p63 ? INT64_MAX : (int64_t)ns;
    return 0;
}

int tw_deadline_from_timeout(double seconds, tw_deadline *out)
{
    int64_t ns = 0;
    if (!out || isnan(seconds))
        return TW_EINVAL;
    if (seconds < 0 || isinf(seconds)) {
        *out = TW_DEADLINE_NEVER;
        return 0;
    }
    tw__delay_ns(seconds, &ns);
    *out = tw__add_sat(tw_now_ns(), ns); /* TW_DEADLINE_NEVER is INT64_MAX */
    return 0;
}

double tw_deadline_remaining(tw_deadline d)
{
    int64_t now;
    if (d == TW_DEADLINE_NEVER)
        return -1.0;
    now = tw_now_ns();
    /* Compare before subtracting: d may be any int64_t, even INT64_MIN. */
    return d > now ? (double)(d - now) * 1e-9 : 0.0;
}
