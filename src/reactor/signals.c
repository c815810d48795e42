/* SIGINT and SIGTERM stop the reactor that asked for them. The handler only
 * calls tw_reactor_stop, which is an atomic exchange and a write. One
 * reactor owns the signals at a time; the previous handlers come back when
 * its run() returns or it is destroyed. */
#include <sched.h>
#include <signal.h>
#include <string.h>

#include "reactor/reactor.h"

static tw_reactor *owner;  /* atomic */
static uint32_t in_handler; /* atomic: handlers between loading owner and done */
static struct sigaction old_int, old_term;

static void on_signal(int sig)
{
    (void)sig;
    __atomic_fetch_add(&in_handler, 1, __ATOMIC_SEQ_CST);
    tw_reactor *r = __atomic_load_n(&owner, __ATOMIC_SEQ_CST);
    if (r)
        tw_reactor_stop(r);
    __atomic_fetch_sub(&in_handler, 1, __ATOMIC_SEQ_CST);
}

int tw_reactor_handle_signals(tw_reactor *r)
{
    if (!r)
        return TW_EINVAL;
    TW__RCHECK(r, "tw_reactor_handle_signals");
    if (r->state == R_DONE)
        return TW_ESHUTDOWN;
    tw_reactor *expect = NULL;
    if (!__atomic_compare_exchange_n(&owner, &expect, r, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return expect == r ? 0 : TW_EBUSY;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGINT, &sa, &old_int) != 0) {
        __atomic_store_n(&owner, NULL, __ATOMIC_RELEASE);
        return TW_ESYS;
    }
    if (sigaction(SIGTERM, &sa, &old_term) != 0) {
        sigaction(SIGINT, &old_int, NULL);
        __atomic_store_n(&owner, NULL, __ATOMIC_RELEASE);
        return TW_ESYS;
    }
    r->owns_signals = true;
    return 0;
}

void tw__signals_release(tw_reactor *r)
{
    if (!r->owns_signals)
        return;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    r->owns_signals = false;
    __atomic_store_n(&owner, NULL, __ATOMIC_SEQ_CST);
    /* A handler that loaded the owner before the store may still be using r. */
    while (__atomic_load_n(&in_handler, __ATOMIC_SEQ_CST))
        sched_yield();
}
