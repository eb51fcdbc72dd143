/* bench_util.h — what every benchmark repeats: a monotonic clock, the
 * median of a sample (sorted in place), and how much CPU other processes
 * took while it measured (bench/quiet.sh does the same for the shell
 * benchmarks). Header-only. */
#ifndef BG_BENCH_UTIL_H
#define BG_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static inline double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v (so quantiles can be read after) and returns its median. */
static inline double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Other processes' CPU during a measurement: the machine's busy time
 * (/proc/stat) minus ours and our children's (getrusage), over the wall
 * time, in cores. */
typedef struct bench_quiet {
    double t0, busy0, own0;
} bench_quiet;

static inline double bench_busy_seconds(void) {
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[8] = {0};
    int got = f ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                         &v[6], &v[7])
                : 0;
    if (f) fclose(f);
    if (got != 8) return -1;
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);   // not idle, iowait
}

static inline double bench_own_seconds(void) {
    struct rusage a, b;
    getrusage(RUSAGE_SELF, &a);
    getrusage(RUSAGE_CHILDREN, &b);
    return (double)(a.ru_utime.tv_sec + a.ru_stime.tv_sec + b.ru_utime.tv_sec + b.ru_stime.tv_sec) +
           1e-6 * (double)(a.ru_utime.tv_usec + a.ru_stime.tv_usec + b.ru_utime.tv_usec + b.ru_stime.tv_usec);
}

static inline bench_quiet bench_quiet_begin(void) {
    return (bench_quiet){.t0 = now_seconds(), .busy0 = bench_busy_seconds(), .own0 = bench_own_seconds()};
}

/* Prints the other processes' share and returns it (cores; -1 without /proc). */
static inline double bench_quiet_end(const bench_quiet *q) {
    double wall = now_seconds() - q->t0, busy = bench_busy_seconds();
    if (busy < 0 || q->busy0 < 0 || wall <= 0) return -1;
    double other = (busy - q->busy0 - (bench_own_seconds() - q->own0)) / wall;
    if (other < 0) other = 0;
    if (other >= 0.1)
        printf("NOT QUIET: other processes used %.2f cores during the measurement; do not quote these figures\n", other);
    else
        printf("quiet: other processes used %.2f cores during the measurement\n", other);
    return other;
}

#endif
