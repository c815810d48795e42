#include "base/thread_start.h"

#include <twine/base.h>

static unsigned fail_countdown; /* 0 = disarmed */

void tw__thread_fail_nth(unsigned nth)
{
    __atomic_store_n(&fail_countdown, nth, __ATOMIC_RELAXED);
}

static int injected_failure(void)
{
    unsigned n = __atomic_load_n(&fail_countdown, __ATOMIC_RELAXED);
    while (n > 0) {
        if (__atomic_compare_exchange_n(&fail_countdown, &n, n - 1, false, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
            return n == 1;
    }
    return 0;
}

int tw__thread_start(pthread_t *t, void *(*fn)(void *), void *arg, size_t stack_size,
                     int detached)
{
    pthread_attr_t attr;
    int rc;
    if (injected_failure())
        return TW_ESYS;
    if (pthread_attr_init(&attr) != 0)
        return TW_ESYS;
    if (stack_size && pthread_attr_setstacksize(&attr, stack_size) != 0) {
        pthread_attr_destroy(&attr);
        return TW_EINVAL;
    }
    if (detached)
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return rc == 0 ? 0 : TW_ESYS;
}
