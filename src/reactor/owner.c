/* Which thread a reactor belongs to, for the layers built on it. */
#include "reactor/reactor.h"

uint32_t tw__reactor_thread(const tw_reactor *r)
{
    if (r->state == R_NEW && !r->in_run)
        return r->owner;
    if (r->state == R_DONE && !r->in_run)
        return 0;
    return __atomic_load_n(&r->loop_thread, __ATOMIC_RELAXED);
}
