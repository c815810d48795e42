#include "base/thread.h"
#include "platform/wait.h"

static uint32_t next_id;
/* Exported for the inline paths (tw__self in twine/base.h). Code in this library reads
 * it with the initial-exec model (no __tls_get_addr call). */
_Thread_local uint32_t tw__my_id __attribute__((tls_model("initial-exec")));

uint32_t tw__thread_id_slow(void)
{
    uint32_t id;
    do /* relaxed: only uniqueness matters, not ordering */
        id = __atomic_add_fetch(&next_id, 1, __ATOMIC_RELAXED);
    while (id == 0);
    tw__my_id = id;
    return id;
}

/* The spin budget plus one; 0 = not measured yet. */
static __thread int spin_budget __attribute__((tls_model("initial-exec")));

void tw__spin_limit_forget(void)
{
    spin_budget = 0;
}

int tw__spin_limit(void)
{
    if (__builtin_expect(spin_budget == 0, 0))
        spin_budget = 1 + (tw__thread_cpus() > 1 ? TW__SPIN_MAX : 0);
    return spin_budget - 1;
}
