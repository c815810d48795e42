/* Adaptive spin-then-sleep: the policy is described in spin_wait.h. */
#include <sched.h>

#include "base/spin_wait.h"
#include "base/thread.h"

#define PAUSES_PER_PROBE 4
#define PROBES_PER_CLOCK 8 /* 32 pauses: 0.3 us at 10 ns a pause, 1.5 us at 45 */
#define YIELD_EVERY_NS 1000
#define RECHECK_EVERY 64

static __thread uint32_t recheck __attribute__((tls_model("initial-exec")));

bool tw__spin_wait(tw__spin_state *s, bool (*ready)(const void *arg), const void *arg,
                   int64_t max_ns)
{
    /* A partner sharing this CPU (the only one allowed, or the one the
     * scheduler chose for both) runs now. */
    sched_yield();
    if (ready(arg))
        return true;
    /* The affinity is measured again now and then: a thread that was pinned
     * to one CPU and is no longer (or the reverse) adapts within
     * RECHECK_EVERY waits. */
    if (++recheck == RECHECK_EVERY) {
        recheck = 0;
        tw__spin_limit_forget();
    }
    if (tw__spin_limit() == 0)
        return false;

    int64_t budget;
    bool probe = s->cut >= TW__SPIN_ZERO_CUT;
    if (probe) {
        if (++s->waits % TW__SPIN_PROBE != 0)
            return false;
        budget = TW__SPIN_WAIT_NS;
    } else {
        budget = TW__SPIN_WAIT_NS >> s->cut;
    }
    if (max_ns >= 0 && max_ns < budget)
        budget = max_ns;
    if (budget == 0)
        return false; /* no time to watch at all: nothing learnt either */

    int64_t start = tw_now_ns(), yielded = start, now = start;
    while (now - start < budget) {
        for (int p = 0; p < PROBES_PER_CLOCK; p++) {
            tw__pause_n(PAUSES_PER_PROBE);
            if (ready(arg))
                goto seen;
        }
        now = tw_now_ns();
        if (now - yielded >= YIELD_EVERY_NS) {
            sched_yield();
            yielded = now;
            if (ready(arg))
                goto seen;
        }
    }
    /* Ran out. A watch cut short by the caller's cap counts too: were it
     * not to, a loop whose next timer is always nearer than the budget
     * would watch every time, forever. */
    if (!probe)
        s->cut++;
    return false;
seen:
    s->cut = 0;
    s->waits = 0;
    return true;
}
