#define _GNU_SOURCE
#include "bench_util.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <twine/base.h>
#include <unistd.h>

static FILE *csv_file;
static int pin_cpu = -1;
static cpu_set_t allowed_cpus; /* the process's mask at bench_placement_init */
/* What bench_place_self last did in this thread: 0 nothing, 1 pinned, 2 freed. */
static _Thread_local int placed;
static double scale = 1.0;

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void bench_open_csv(const char *path)
{
    if (!path)
        return;
    csv_file = fopen(path, "w");
    if (!csv_file) {
        fprintf(stderr, "bench: cannot open %s: %s\n", path, strerror(errno));
        exit(1);
    }
    fprintf(csv_file, "workload,impl,metric,value,unit\n");
}

void bench_close_csv(void)
{
    if (csv_file && fclose(csv_file) != 0) {
        fprintf(stderr, "bench: writing the CSV failed: %s\n", strerror(errno));
        exit(1);
    }
    csv_file = NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void bench_record(const char *workload, const char *impl, const char *unit, bool higher_is_better,
                  const double *samples, int n)
{
    double sorted[BENCH_REPS * 4];
    double best, worst, median;
    int i;

    if (n < 1 || n > (int)(sizeof sorted / sizeof sorted[0]))
        abort();
    memcpy(sorted, samples, (size_t)n * sizeof *samples);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_double);
    best = higher_is_better ? sorted[n - 1] : sorted[0];
    worst = higher_is_better ? sorted[0] : sorted[n - 1];
    median = (n % 2) ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);

    printf("  %-24s %-26s median %12.4g  best %12.4g  worst %12.4g  %s\n", workload, impl, median,
           best, worst, unit);
    fflush(stdout);
    if (!csv_file)
        return;
    fprintf(csv_file, "%s,%s,median,%.6g,%s\n", workload, impl, median, unit);
    fprintf(csv_file, "%s,%s,best,%.6g,%s\n", workload, impl, best, unit);
    fprintf(csv_file, "%s,%s,worst,%.6g,%s\n", workload, impl, worst, unit);
    for (i = 0; i < n; i++)
        fprintf(csv_file, "%s,%s,rep%d,%.6g,%s\n", workload, impl, i + 1, samples[i], unit);
    fflush(csv_file);
}

void bench_record_extra(const char *workload, const char *impl, const char *metric,
                        const char *unit, const double *samples, int n)
{
    double sorted[BENCH_REPS * 4], median;

    if (n < 1 || n > (int)(sizeof sorted / sizeof sorted[0]))
        abort();
    memcpy(sorted, samples, (size_t)n * sizeof *samples);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_double);
    median = (n % 2) ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    printf("  %-24s %-26s %s %.3g %s\n", workload, impl, metric, median, unit);
    if (csv_file)
        fprintf(csv_file, "%s,%s,%s,%.6g,%s\n", workload, impl, metric, median, unit);
}

void bench_check_count(const char *workload, const char *impl, long got, long want)
{
    if (got == want)
        return;
    fprintf(stderr, "bench: %s / %s: count is %ld, expected %ld — the run is invalid\n", workload,
            impl, got, want);
    exit(2);
}

void bench_placement_init(void)
{
    cpu_set_t set;
    int cpu;

    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) {
        fprintf(stderr, "bench: sched_getaffinity: %s\n", strerror(errno));
        exit(1);
    }
    allowed_cpus = set;
    for (cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (CPU_ISSET(cpu, &set)) {
            pin_cpu = cpu;
            return;
        }
    }
    fprintf(stderr, "bench: no CPU in the affinity mask\n");
    exit(1);
}

int bench_pin_cpu(void)
{
    return pin_cpu;
}

void bench_pin_self(void)
{
    cpu_set_t set;
    int rc;

    CPU_ZERO(&set);
    CPU_SET(pin_cpu, &set);
    rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    if (rc != 0) {
        fprintf(stderr, "bench: pthread_setaffinity_np(CPU %d): %s\n", pin_cpu, strerror(rc));
        exit(1);
    }
}

void bench_place_self(bool pin)
{
    int rc;

    if (placed == (pin ? 1 : 2))
        return;
    if (pin) {
        bench_pin_self();
    } else {
        rc = pthread_setaffinity_np(pthread_self(), sizeof allowed_cpus, &allowed_cpus);
        if (rc != 0) {
            fprintf(stderr, "bench: pthread_setaffinity_np(all CPUs): %s\n", strerror(rc));
            exit(1);
        }
    }
    placed = pin ? 1 : 2;
}

static int parked_pipe[2] = {-1, -1};
static pthread_t parked_thread;

static void *parked_main(void *arg)
{
    char c;
    ssize_t r;
    (void)arg;
    do
        r = read(parked_pipe[0], &c, 1);
    while (r < 0 && errno == EINTR);
    return NULL;
}

void bench_parked_start(void)
{
    int rc;
    if (pipe(parked_pipe) != 0) {
        fprintf(stderr, "bench: pipe: %s\n", strerror(errno));
        exit(1);
    }
    rc = pthread_create(&parked_thread, NULL, parked_main, NULL);
    if (rc != 0) {
        fprintf(stderr, "bench: pthread_create: %s\n", strerror(rc));
        exit(1);
    }
}

void bench_parked_stop(void)
{
    char c = 'x';
    if (write(parked_pipe[1], &c, 1) != 1) {
        fprintf(stderr, "bench: waking the parked thread failed: %s\n", strerror(errno));
        exit(1);
    }
    pthread_join(parked_thread, NULL);
    close(parked_pipe[0]);
    close(parked_pipe[1]);
    parked_pipe[0] = parked_pipe[1] = -1;
}

void bench_warm_up(double seconds)
{
    volatile unsigned long sink = 0;
    double end = bench_now() + seconds;
    while (bench_now() < end) {
        unsigned long i;
        for (i = 0; i < 10000; i++)
            sink += i * i;
    }
}

void bench_sort(double *v, long n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
}

double bench_percentile(const double *sorted, long n, double p)
{
    double rank = p * (double)n;
    long k;
    if (n < 1)
        return 0.0;
    /* nearest rank: the smallest value with at least p * n values at or below
     * it, i.e. index ceil(p * n) - 1 */
    k = (long)rank;
    if ((double)k < rank)
        k++;
    k--;
    if (k < 0)
        k = 0;
    if (k > n - 1)
        k = n - 1;
    return sorted[k];
}

void *bench_reserve(void *p, long *len, long n, size_t size, const char *what)
{
    if (*len >= n)
        return p;
    free(p);
    p = malloc((size_t)n * size);
    if (!p)
        bench_die("malloc", what);
    memset(p, 0, (size_t)n * size);
    *len = n;
    return p;
}

void bench_latency_stats(double *v, long n, double *median, double *p99, double *mean)
{
    double sum = 0;
    long i;

    for (i = 0; i < n; i++)
        sum += v[i];
    bench_sort(v, n);
    *median = bench_percentile(v, n, 0.5);
    *p99 = bench_percentile(v, n, 0.99);
    *mean = sum / (double)n;
}

void bench_set_scale(double s)
{
    if (s > 0)
        scale = s;
}

long bench_scaled(long n)
{
    long v = (long)((double)n * scale);
    return v < 1 ? 1 : v;
}

bool bench_listed(const char *list, const char *name)
{
    size_t len = strlen(name);
    const char *p = list;
    if (!p)
        return true;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && strncmp(p, name, n) == 0)
            return true;
        if (!end)
            break;
        p = end + 1;
    }
    return false;
}

bool bench_selected(const char *list, const char *workload)
{
    size_t len = strlen(workload);
    const char *p = list;
    if (!p)
        return true;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 0 && n <= len && strncmp(p, workload, n) == 0)
            return true;
        if (!end)
            break;
        p = end + 1;
    }
    return false;
}

bool bench_parse_args(int argc, char **argv, bool with_impl, const struct bench_flag *flags,
                      const char *usage, struct bench_args *a)
{
    int i;

    a->csv = a->only = a->impl = NULL;
    for (i = 1; i < argc; i++) {
        const struct bench_flag *f = flags;
        while (f && f->name && strcmp(argv[i], f->name) != 0)
            f++;
        if (f && f->name) {
            *f->set = true;
        } else if (strcmp(argv[i], "--csv") == 0 && i + 1 < argc) {
            a->csv = argv[++i];
        } else if (strcmp(argv[i], "--scale") == 0 && i + 1 < argc) {
            bench_set_scale(strtod(argv[++i], NULL));
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            a->only = argv[++i];
        } else if (with_impl && strcmp(argv[i], "--impl") == 0 && i + 1 < argc) {
            a->impl = argv[++i];
        } else {
            fprintf(stderr, "usage: %s %s\n", argv[0], usage);
            return false;
        }
    }
    return true;
}

void bench_die(const char *what, const char *detail)
{
    fprintf(stderr, "bench: %s failed%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

static const char *volatile watched;
static volatile pid_t watched_child;

static void on_alarm(int sig)
{
    static const char msg[] = "bench: a run hung (no result after the time limit): ";
    (void)sig;
    if (watched_child > 0)
        kill(watched_child, SIGKILL);
    if (write(2, msg, sizeof msg - 1) < 0 ||
        (watched && write(2, watched, strlen(watched)) < 0) || write(2, "\n", 1) < 0)
        _exit(3);
    _exit(3);
}

void bench_watchdog_init(void)
{
    signal(SIGALRM, on_alarm);
}

void bench_watch(const char *what)
{
    watched = what;
    alarm(what ? BENCH_RUN_TIMEOUT_S : 0);
}

void bench_watch_child(pid_t pid)
{
    watched_child = pid;
}

static long diag_reports; /* atomic: any thread may report */

static void on_diag(void *ctx, const tw_diag *d)
{
    (void)ctx;
    if (__atomic_fetch_add(&diag_reports, 1, __ATOMIC_RELAXED) == 0)
        fprintf(stderr, "bench: twine reported (%d, %s) in %s: %s\n", (int)d->kind,
                tw_strerror(d->code), d->function ? d->function : "?",
                d->message ? d->message : "");
}

void bench_twine_diag_init(void)
{
    tw_set_diag_hook(on_diag, NULL);
}

void bench_twine_check(const char *workload, size_t live0)
{
    bench_check_count(workload, "twine (diagnostic reports)",
                      __atomic_load_n(&diag_reports, __ATOMIC_RELAXED), 0);
    bench_check_count(workload, "twine (blocks still allocated after the run)",
                      (long)(tw_allocator_live() - live0), 0);
}
