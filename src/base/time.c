/* Monotonic time and deadlines. */
#include <math.h>
#include <time.h>

#include <twine/base.h>

int64_t tw_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int tw_deadline_from_timeout(double seconds, tw_deadline *out)
{
    int64_t now;
    double ns;
    if (!out || isnan(seconds))
        return TW_EINVAL;
    if (seconds < 0 || isinf(seconds)) {
        *out = TW_DEADLINE_NEVER;
        return 0;
    }
    now = tw_now_ns();
    ns = seconds * 1e9;
    /* Saturate instead of overflowing: anything past ~292 years is "never". */
    if (ns >= (double)(TW_DEADLINE_NEVER - now))
        *out = TW_DEADLINE_NEVER;
    else
        *out = now + (int64_t)ns;
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
