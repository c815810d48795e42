/* Linux backend: private futexes. FUTEX_WAIT_BITSET takes an absolute
 * CLOCK_MONOTONIC deadline, so a wait interrupted by a signal or a spurious
 * wake-up never stretches the caller's timeout. */
#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "platform/wait.h"

int tw__wait(uint32_t *addr, uint32_t expect, tw_deadline deadline)
{
    struct timespec ts, *tsp = NULL;
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
    if (rc == -1 && errno == ETIMEDOUT)
        return TW_ETIMEDOUT;
    return 0; /* woken, EAGAIN (value changed), EINTR: all mean "re-check" */
}

void tw__wake(uint32_t *addr, int n)
{
    syscall(SYS_futex, addr, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, n, NULL, NULL, 0);
}

int tw__requeue(uint32_t *from, uint32_t from_val, uint32_t *to)
{
    long rc = syscall(SYS_futex, from, FUTEX_CMP_REQUEUE | FUTEX_PRIVATE_FLAG, 0,
                      (void *)(uintptr_t)1, to, from_val);
    if (rc < 0)
        return TW_ENOTSUP; /* EAGAIN: *from changed; the caller wakes instead */
    return rc > 0 ? 1 : 0;
}
