/*
 * bench_util.h — what the twine benchmark programs share: the command line,
 * failure exits, the watchdog, twine's own checks (diagnostics, leaks), timing,
 * statistics, CSV output and thread placement. bench/pybench.py is its Python
 * counterpart.
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
#include <string.h>
#include <sys/types.h>
#include <twine/base.h>

/* Five, not three: two-thread runs are bimodal on a small machine (one thread
 * may hog a lock for a whole run), and a median of five is steadier. */
#define BENCH_REPS 5

/* The number of elements of array a. */
#define BENCH_COUNT_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---- command line ----------------------------------------------------------------
 * Every program takes --csv PATH, --scale F (multiplies every iteration count;
 * 0.01 for a smoke run) and --only WORKLOAD[,...] (selects workloads by name
 * prefix, see bench_selected); those that compare implementations also take
 * --impl NAME[,...] (by exact name, see bench_listed). */
struct bench_args {
    const char *csv;  /* NULL: no CSV */
    const char *only; /* NULL: every workload */
    const char *impl; /* NULL: every implementation */
};

/* An option of the program's own that takes no value. */
struct bench_flag {
    const char *name; /* e.g. "--exact" */
    bool *set;        /* set to true when the option is given */
};

/* Parses argv[1..argc) into *a (cleared first): the options above, --impl
 * only if with_impl, and `flags` (NULL, or a list ending with {NULL, NULL}).
 * --scale goes to bench_set_scale. On an unknown option or a missing value,
 * prints "usage: ARGV0 USAGE" to stderr and returns false: the program then
 * exits with status 2. */
bool bench_parse_args(int argc, char **argv, bool with_impl, const struct bench_flag *flags,
                      const char *usage, struct bench_args *a);

/* ---- failing ---------------------------------------------------------------------
 * A setup step that fails stops the program with exit status 1:
 * "bench: WHAT failed[: DETAIL]". */
__attribute__((noreturn)) void bench_die(const char *what, const char *detail);

/* The same when rc (an errno value, or its negation) is not 0. Inline, so
 * that a check inside a timed loop costs a compare and a branch. */
static inline void bench_die_rc(const char *what, int rc)
{
    if (rc != 0)
        bench_die(what, strerror(rc < 0 ? -rc : rc));
}

/* The same when rc (a twine return code) is not 0. */
static inline void bench_die_tw(const char *what, int rc)
{
    if (rc != 0)
        bench_die(what, tw_strerror(rc));
}

/* ---- watchdog ----------------------------------------------------------------------
 * A run that takes longer than this is a hang (a lost wake-up): the program
 * stops with exit status 3 and names the run. */
#define BENCH_RUN_TIMEOUT_S 120

/* Installs the SIGALRM handler; call once from main. */
void bench_watchdog_init(void);
/* Arms the watchdog for a run named `what`, or disarms it (NULL). */
void bench_watch(const char *what);
/* A child process the watchdog kills (SIGKILL) before stopping the program;
 * 0: none. */
void bench_watch_child(pid_t pid);

/* ---- twine's own checks --------------------------------------------------------------
 * Any diagnostic report from twine, and any twine block left allocated after a
 * run, make the run invalid. */

/* Installs a diagnostic hook that counts twine's reports (from any thread)
 * and prints the first. */
void bench_twine_diag_init(void);
/* Stops the program (exit status 2, as bench_check_count) if twine reported
 * anything, or if tw_allocator_live() is not live0 (what it was before the
 * run). */
void bench_twine_check(const char *workload, size_t live0);

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
#endif
}

/* Sorts v[0..n) ascending, then: the value below which a share p (0..1) of
 * them lie (nearest rank). */
void bench_sort(double *v, long n);
double bench_percentile(const double *sorted, long n, double p);

/* An array reused across runs (samples, preallocated nodes) that must hold n
 * elements of `size` bytes: returns p if it holds that many already (*len:
 * how many it holds), else frees it and returns a new one, written with zeros
 * at once so that a timed run that fills it takes no page faults. Exits when
 * out of memory ("bench: malloc failed: WHAT"). */
void *bench_reserve(void *p, long *len, long n, size_t size, const char *what);

/* The figures of one round-trip run from its n latencies v[0..n): the mean
 * (summed in the order measured), then, with v sorted, the median and the
 * 99th percentile (nearest rank). */
void bench_latency_stats(double *v, long n, double *median, double *p99, double *mean);

/* Scales an iteration count by the --scale option (never below 1). */
long bench_scaled(long n);
void bench_set_scale(double scale);

/* Whether name is one of the comma-separated names in list (NULL: all). */
bool bench_listed(const char *list, const char *name);
/* Whether a comma-separated entry of list (NULL: all) is a prefix of
 * workload: "cond_pingpong" selects both of its variants. */
bool bench_selected(const char *list, const char *workload);

#endif /* TWINE_BENCH_UTIL_H */
