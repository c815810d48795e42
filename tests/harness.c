#include "harness.h"

#include <stdlib.h>
#include <time.h>

uint64_t tw_test_scaled(uint64_t n, uint64_t floor)
{
    const char *s = getenv("TW_TEST_SCALE");
    double scale = s ? strtod(s, NULL) : 1.0;
    uint64_t v;
    if (!(scale > 0.0) || scale > 1.0)
        scale = 1.0;
    v = (uint64_t)((double)n * scale);
    return v < floor ? floor : v;
}

pthread_t tw_test_start(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    int rc = pthread_create(&t, NULL, fn, arg);
    assert_int_equal(rc, 0);
    return t;
}

void *tw_test_join(pthread_t t)
{
    void *ret = NULL;
    assert_int_equal(pthread_join(t, &ret), 0);
    return ret;
}

void tw_test_run_threads(int n, void *(*fn)(void *), void *base, size_t stride)
{
    pthread_t *ts = calloc((size_t)n, sizeof *ts);
    assert_non_null(ts);
    for (int i = 0; i < n; i++)
        ts[i] = tw_test_start(fn, (char *)base + (size_t)i * stride);
    for (int i = 0; i < n; i++)
        tw_test_join(ts[i]);
    free(ts);
}

double tw_test_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
