/* Internal: adaptive spin-then-sleep for a thread that expects work soon.
 *
 * A thread about to sleep while a hand-off is likely to arrive within
 * microseconds (a reactor's loop with defer_to_thread work in flight, a pool
 * thread that has just finished a task) calls tw__spin_wait before sleeping.
 * Sleeping makes the other side pay for a wake-up: a few microseconds on
 * bare metal, 35-45 between the vCPUs of the virtual machine the benchmarks
 * run on. Watching for the hand-off instead costs CPU, so the watch is
 * bounded and adapts. The full budget covers such a wake-up, so that one
 * side still watching is enough for a ping-pong to find its way back to
 * watching on both sides after a stall (a shorter budget, 20 us, left it
 * stuck sleeping on both sides):
 *
 *   - one CPU (the thread's affinity allows only one, measured again every
 *     64 waits that get past the first look): yield once and look again, no
 *     spinning; the thread it waits for can only run once we stop. (The
 *     portable backend counts the CPUs online instead of the affinity.)
 *   - otherwise yield once (a partner on this CPU runs now), then watch with
 *     pauses, reading the clock every 32 pauses and yielding at the first
 *     read a microsecond or more after the last yield, so that a partner the
 *     scheduler put on this CPU still runs, for at most the current budget
 *     (or the caller's cap, if smaller; a cap of 0 means no watch);
 *   - a watch that sees the work restores the full budget (TW__SPIN_WAIT_NS;
 *     work seen at the first look, right after the yield, changes nothing);
 *     one that runs out, capped or not, halves it, and below a microsecond
 *     it becomes 0;
 *   - at 0 the thread only yields once, except that every TW__SPIN_PROBE-th
 *     wait probes with the full budget, so a workload that turns into
 *     ping-pong is noticed again.
 *
 * Worst case with nothing ever arriving: the halvings (about 2 budgets in
 * all), then one full budget per TW__SPIN_PROBE waits — on average a few
 * microseconds of CPU per sleep. The watch makes system calls (the yields),
 * but never a sleeping one, and spares the partner its wake-up call.
 *
 * The state is the caller's, used by one thread at a time; zero-initialised
 * is "full budget". */
#ifndef TW_BASE_SPIN_WAIT_H
#define TW_BASE_SPIN_WAIT_H

#include <stdbool.h>
#include <stdint.h>

#define TW__SPIN_WAIT_NS 50000 /* the full budget, in nanoseconds */
#define TW__SPIN_PROBE 16      /* at budget 0, one wait in this many probes */
/* Budgets below a microsecond are not worth a watch: this many halvings
 * (50 -> 25 -> 12.5 -> 6.3 -> 3.1 -> 1.6 us) means "only yield". */
#define TW__SPIN_ZERO_CUT 6u

typedef struct tw__spin_state {
    uint32_t cut;   /* halvings since the last success; budget = full >> cut */
    uint32_t waits; /* waits at budget 0, for the periodic probe */
} tw__spin_state;

/* Waits until ready(arg) returns true or the budget (capped at max_ns when
 * max_ns >= 0) runs out. Returns ready's last answer: true means "do not
 * sleep". ready must be cheap and must not block. */
bool tw__spin_wait(tw__spin_state *s, bool (*ready)(const void *arg), const void *arg,
                   int64_t max_ns);

#endif
