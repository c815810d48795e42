#include <unistd.h>

#include "base/thread.h"

static uint32_t next_id;
/* initial-exec: no __tls_get_addr call, even from the shared library. */
static __thread uint32_t my_id __attribute__((tls_model("initial-exec")));

uint32_t tw__thread_id(void)
{
    uint32_t id = my_id;
    if (__builtin_expect(id == 0, 0)) {
        do /* relaxed: only uniqueness matters, not ordering */
            id = __atomic_add_fetch(&next_id, 1, __ATOMIC_RELAXED);
        while (id == 0);
        my_id = id;
    }
    return id;
}

static int spin_limit = -1;

int tw__spin_limit(void)
{
    int n = __atomic_load_n(&spin_limit, __ATOMIC_RELAXED);
    if (n < 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus > 1 ? 100 : 0;
        __atomic_store_n(&spin_limit, n, __ATOMIC_RELAXED);
    }
    return n;
}
