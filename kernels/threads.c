/* threads.c — the thread count of our OpenMP kernels, OpenBLAS and oneDNN,
 * set together, and auto mode: one thread per core while the machine is
 * quiet, fewer while other processes keep cores busy.
 *
 * Why adapt: every kernel ends at a barrier, so a step at N threads runs at
 * the pace of its slowest thread. When another process takes a core, one of
 * our threads waits for it at every barrier and the step becomes ~3x slower
 * than at one thread (bench/contention.sh). OpenMP's passive wait policy
 * avoids that but costs 60% on a quiet machine, and libgomp reads its
 * policy only at start-up; so we keep the spinning pool and change its size.
 *
 * The signal: runnable tasks of the whole machine (/proc/loadavg) minus our
 * own runnable threads (/proc/self/task/N/stat) = tasks of other processes
 * that want a core now, sampled at step boundaries and averaged. Reads only
 * /proc; nothing above kernels/. */
#include <dirent.h>
#include <fcntl.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>
#include <time.h>
#include <unistd.h>

#include "kernels/kernels_internal.h"

// ---------------------------------------------------------------------------
// the policy (no I/O: tests feed it samples)

/* Weight of a new sample in the moving average: a competitor that starts is
 * seen after ~3 samples, a one-sample blip (a shell command) never. */
#define EMA_NEW 0.25
/* Samples after a change before the next one: no flapping. */
#define SETTLE_SAMPLES 8
/* Hysteresis: a thread goes when fewer than threads - DROP_AT cores are
 * free, comes back when at least threads + RAISE_AT are. */
#define DROP_AT 0.6
#define RAISE_AT 0.75

void bg_thread_policy_init(bg_thread_policy *p, int cores, int max) {
    if (cores < 1) cores = 1;
    if (max < 1) max = cores;
    *p = (bg_thread_policy){.cores = cores, .max = max, .threads = max, .others = 0.0, .settle = 0};
}

int bg_thread_policy_feed(bg_thread_policy *p, double others) {
    if (others < 0) others = 0;
    p->others = p->samples++ ? (1.0 - EMA_NEW) * p->others + EMA_NEW * others : others;
    if (p->settle > 0) {
        p->settle--;
        return p->threads;
    }
    double free_cores = (double)p->cores - p->others;
    int before = p->threads;
    if (p->threads > 1 && free_cores <= (double)p->threads - DROP_AT) p->threads--;
    else if (p->threads < p->max && free_cores >= (double)p->threads + RAISE_AT) p->threads++;
    if (p->threads != before) {
        p->settle = SETTLE_SAMPLES;
        p->changes++;
    }
    return p->threads;
}

// ---------------------------------------------------------------------------
// samples from /proc

/* Reads a small /proc file into buf (NUL-terminated); false when it cannot. */
static bool read_small(const char *path, char *buf, size_t len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n <= 0) return false;
    buf[n] = '\0';
    return true;
}

/* Runnable tasks of the machine: "R" of the 4th field "R/T" of /proc/loadavg
 * (the running and runnable tasks at this moment, this reader included). */
static int machine_runnable(void) {
    char buf[128];
    double a, b, c;
    int r, t;
    if (!read_small("/proc/loadavg", buf, sizeof buf) || sscanf(buf, "%lf %lf %lf %d/%d", &a, &b, &c, &r, &t) != 5)
        return -1;
    return r;
}

/* Our own threads in state R (running or waiting for a core): the state is
 * the field after the command name, which ends at the last ')'. */
static int own_runnable(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/self/task/%.20s/stat", e->d_name);
        if (!read_small(path, buf, sizeof buf)) continue;   // the thread just ended
        const char *paren = strrchr(buf, ')');
        if (paren && paren[1] == ' ' && paren[2] == 'R') n++;
    }
    closedir(d);
    return n;
}

/* Tasks of other processes that want a core now; -1 when /proc is missing. */
static int others_runnable(void) {
    int own = own_runnable(), all = machine_runnable();
    if (own < 0 || all < 0) return -1;
    return all > own ? all - own : 0;
}

// ---------------------------------------------------------------------------
// the process's setting

/* A sample at most this often: the /proc reads cost ~20 us, a short step
 * (the MLP's) ~2.5 ms. */
#define SAMPLE_NS 5000000LL

static struct {
    mtx_t lock;         /* bg_adapt_threads from two training threads: one samples */
    bool adaptive;
    bg_thread_policy policy;
    long long next_ns;  /* earliest time of the next sample */
    bool no_proc;       /* /proc unreadable: auto mode stays at its maximum */
} state;
static once_flag state_once = ONCE_FLAG_INIT;

static void apply(int n) {
    omp_set_num_threads(n);
    bg_openblas_set_num_threads(n);
}

/* Auto unless OMP_NUM_THREADS pins the count, as OpenMP users expect. */
static void state_init(void) {
    mtx_init(&state.lock, mtx_plain);
    const char *e = getenv("OMP_NUM_THREADS");
    state.adaptive = !(e && *e);
    bg_thread_policy_init(&state.policy, omp_get_num_procs(), omp_get_max_threads());
}

void bg_set_num_threads(int n) {
    call_once(&state_once, state_init);
    mtx_lock(&state.lock);
    state.adaptive = n <= 0;
    int cores = omp_get_num_procs();
    bg_thread_policy_init(&state.policy, cores, n > 0 ? n : cores);
    state.next_ns = 0;
    mtx_unlock(&state.lock);
    apply(n > 0 ? n : cores);
}

int bg_get_num_threads(void) { return omp_get_max_threads(); }

bool bg_threads_auto(void) {
    call_once(&state_once, state_init);
    return state.adaptive;
}

int bg_threads_changes(void) {
    call_once(&state_once, state_init);
    return state.policy.changes;
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void bg_adapt_threads(void) {
    call_once(&state_once, state_init);
    if (!state.adaptive || state.no_proc) return;
    long long t = now_ns();
    if (t < state.next_ns || mtx_trylock(&state.lock) != thrd_success) return;
    state.next_ns = t + SAMPLE_NS;
    int others = others_runnable();
    if (others < 0) state.no_proc = true;
    int before = state.policy.threads;
    int n = others < 0 ? before : bg_thread_policy_feed(&state.policy, others);
    mtx_unlock(&state.lock);
    if (n != before || n != omp_get_max_threads()) apply(n);
}
