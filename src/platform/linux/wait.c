/* Linux backend: private futexes. FUTEX_WAIT_BITSET takes an absolute
 * CLOCK_MONOTONIC deadline, so a wait interrupted by a signal or a spurious
 * wake-up never stretches the caller's timeout. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "platform/wait.h"

/* syscall() reports failure through errno; twine never changes the caller's
 * errno, so every call here saves and restores it. */
int tw__wait(uint32_t *addr, uint32_t expect, tw_deadline deadline)
{
    struct timespec ts, *tsp = NULL;
    int saved = errno, timed_out;
    long rc;
    if (deadline != TW_DEADLINE_NEVER) {
        if (deadline <= tw_now_ns())
            return TW_ETIMEDOUT;
        ts.tv_sec = deadline / 1000000000;
        ts.tv_nsec = deadline % 1000000000;
        tsp = &ts;
    }
    rc = syscall(SYS_futex, addr, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expect, tsp, NULL,
                 FUTEX_BITSET_MATCH_ANY);
    timed_out = rc == -1 && errno == ETIMEDOUT;
    errno = saved;
    /* woken, EAGAIN (value changed), EINTR: all mean "re-check" */
    return timed_out ? TW_ETIMEDOUT : 0;
}

void tw__wake(uint32_t *addr, int n)
{
    int saved = errno;
    syscall(SYS_futex, addr, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, n, NULL, NULL, 0);
    errno = saved;
}

int tw__requeue(uint32_t *from, uint32_t from_val, uint32_t *to)
{
    int saved = errno;
    long rc = syscall(SYS_futex, from, FUTEX_CMP_REQUEUE | FUTEX_PRIVATE_FLAG, 0,
                      (void *)(uintptr_t)1, to, from_val);
    errno = saved;
    if (rc < 0)
        return TW_ENOTSUP; /* EAGAIN: *from changed; the caller wakes instead */
    return rc > 0 ? 1 : 0;
}

int tw__thread_cpus(void)
{
    cpu_set_t set;
    int saved = errno, n;
    /* A machine with more CPUs than cpu_set_t holds makes this fail: then
     * count the CPUs online instead. */
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    else
        n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    errno = saved;
    return n > 0 ? n : 1;
}
