/*
 * bench_util.h — timing, statistics, CSV output and thread placement shared by
 * the twine benchmark programs.
 *
 * Every measurement is repeated BENCH_REPS times inside one process; the rows
 * written for it are its median (the headline figure), best and worst over
 * the repetitions plus every single repetition, in the CSV layout
 * `workload,impl,metric,value,unit`:
 *
 *     lock_uncontended,twine Lock,median,9.80,ns/op
 *     lock_uncontended,twine Lock,best,9.71,ns/op
 *     lock_uncontended,twine Lock,worst,9.93,ns/op
 *     lock_uncontended,twine Lock,rep1,9.93,ns/op
 *
 * Implementation names follow one convention that bench/table.py relies on:
 * names starting with "twine " are twine, names starting with "python " are
 * CPython's threading module, everything else is a C peer.
 */
#ifndef TWINE_BENCH_UTIL_H
#define TWINE_BENCH_UTIL_H

#include <stdbool.h>
#include <stdio.h>

/* Five, not three: two-thread runs are bimodal on a small machine (one thread
 * may hog a lock for a whole run), and a median of five is steadier. */
#define BENCH_REPS 5

/* Seconds on the monotonic clock. */
double bench_now(void);

/* Opens the CSV (with its header) at path; NULL path writes no CSV. Exits on error. */
void bench_open_csv(const char *path);
void bench_close_csv(void);

/* One measured implementation: samples[0..n) in `unit`. higher_is_better
 * picks whether best is the maximum (throughput) or the minimum (time). */
void bench_record(const char *workload, const char *impl, const char *unit, bool higher_is_better,
                  const double *samples, int n);

/* A secondary figure (median over the samples), e.g. metric "overlap". */
void bench_record_extra(const char *workload, const char *impl, const char *metric,
                        const char *unit, const double *samples, int n);

/* Stops the program when a workload's final count is not what it must be: a
 * figure from a run that lost or invented operations is worthless. */
void bench_check_count(const char *workload, const char *impl, long got, long want);

/* The CPU "pinned" runs use: CPU 0 if this process may run there, else the
 * lowest CPU it may run on. Call bench_placement_init() once from main first. */
void bench_placement_init(void);
int bench_pin_cpu(void);
/* Pins the calling thread to bench_pin_cpu(); exits on failure. */
void bench_pin_self(void);
/* Pins the calling thread (pin) or gives it back every CPU the process had
 * when bench_placement_init ran (!pin). Remembers per thread what it did
 * last, so calling it on every task of a pool costs one thread-local read
 * once the thread is placed. Exits on failure. */
void bench_place_self(bool pin);

/* A second thread that exists and sleeps in the kernel for as long as it is
 * started, so single-thread shortcuts in a C library stay off. */
void bench_parked_start(void);
void bench_parked_stop(void);

/* Busy work for about `seconds`, so the CPU clock is up before the first sample. */
void bench_warm_up(double seconds);

/* One pause in a spin-wait loop. */
static inline void bench_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
/* Whether name is one of the comma-separated names in list (NULL: all). */
bool bench_listed(const char *list, const char *name);
/* Whether a comma-separated entry of list (NULL: all) is a prefix of
 * workload: "cond_pingpong" selects both of its variants. */
bool bench_selected(const char *list, const char *workload);

#endif
}

/* Sorts v[0..n) ascending, then: the value below which a share p (0..1) of
 * them lie (nearest rank). */
void bench_sort(double *v, long n);
double bench_percentile(const double *sorted, long n, double p);

/* Scales an iteration count by the --scale option (never below 1). */
long bench_scaled(long n);
void bench_set_scale(double scale);

/* Whether name is one of the comma-separated names in list (NULL: all). */
bool bench_listed(const char *list, const char *name);
/* Whether a comma-separated entry of list (NULL: all) is a prefix of
 * workload: "cond_pingpong" selects both of its variants. */
bool bench_selected(const char *list, const char *workload);

#endif /* TWINE_BENCH_UTIL_H */
