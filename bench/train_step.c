/* train_step.c — times one training step of the Fashion-MNIST MLP
 * (784-512-512-10 ReLU, batch 128, Adam) and, in the same process, the same
 * matrix products alone through bg_sgemm, so the ratio shows what the engine
 * (tape, element-wise ops, loss, optimizer, batching) adds over the BLAS.
 * Also prints the arena's high-water mark, the process's peak RSS, the step
 * time at 1 and 2 threads, and whether the steady state allocates.
 *
 *     ./build/bench/train_step [--steps N] [--warmup N] [--data DIR]
 *
 * A step = next batch (bytes -> f32) + forward + cross-entropy + backward +
 * Adam step + zero grads + ctx reset. Steps and the products alone run
 * alternately in 10 rounds; times are medians (p10-p90) over --steps of each
 * after --warmup of each. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench/bench_util.h"
#include "bitgrad.h"
#include "bench/bench_step.h"

#define BATCH 128




// --- the training step ----------------------------------------------------------------

typedef bench_net bench;

/* Times `n` steps into out[0..n); false on failure. */
static bool time_steps(bench *b, int n, double *out) {
    for (int i = 0; i < n; i++) {
        double t0 = now_seconds();
        if (!bench_train_step(b)) return false;
        out[i] = 1e3 * (now_seconds() - t0);
    }
    return true;
}

// --- the same products alone ------------------------------------------------------------

/* The 8 products of one MLP step, with the step's shapes (row-major):
 * forward  h1 = x W1^T, h2 = a1 W2^T, z = a2 W3^T;
 * backward dW3 += dz^T a2, da2 = dz W3, dW2 += dh2^T a1, da1 = dh2 W2,
 *          dW1 += dh1^T x (x needs no gradient). */
typedef struct gemm_set {
    float *x, *w1, *w2, *w3, *h1, *h2, *z, *dw1, *dw2, *dw3, *d1, *d2;
} gemm_set;

static float *filled(size_t n, bg_rng *rng) {
    float *p = bg_aligned_alloc(n * sizeof(float));
    if (p)
        for (size_t i = 0; i < n; i++) p[i] = bg_rng_uniform(rng) - 0.5f;
    return p;
}

static void run_gemms(gemm_set *g) {
    const int64_t B = BATCH;
    bg_sgemm(false, true, B, 512, 784, 1.0f, g->x, 784, g->w1, 784, 0.0f, g->h1, 512);
    bg_sgemm(false, true, B, 512, 512, 1.0f, g->h1, 512, g->w2, 512, 0.0f, g->h2, 512);
    bg_sgemm(false, true, B, 10, 512, 1.0f, g->h2, 512, g->w3, 512, 0.0f, g->z, 10);
    bg_sgemm(true, false, 10, 512, B, 1.0f, g->z, 10, g->h2, 512, 1.0f, g->dw3, 512);
    bg_sgemm(false, false, B, 512, 10, 1.0f, g->z, 10, g->w3, 512, 0.0f, g->d2, 512);
    bg_sgemm(true, false, 512, 512, B, 1.0f, g->d2, 512, g->h1, 512, 1.0f, g->dw2, 512);
    bg_sgemm(false, false, B, 512, 512, 1.0f, g->d2, 512, g->w2, 512, 0.0f, g->d1, 512);
    bg_sgemm(true, false, 512, 784, B, 1.0f, g->d1, 512, g->x, 784, 1.0f, g->dw1, 784);
}

static void time_gemms(gemm_set *g, int n, double *out) {
    for (int i = 0; i < n; i++) {
        double t0 = now_seconds();
        run_gemms(g);
        out[i] = 1e3 * (now_seconds() - t0);
    }
}

/* Steps and the matmuls alone, alternating in ROUNDS rounds so that the
 * shared machine's load hits both alike; medians into *step, *gemm and
 * their p10-p90 into lo/hi. */
enum { ROUNDS = 10 };
static bool time_alternating(bench *b, gemm_set *g, int warmup, int steps, double *ss, double *gs, double step[3],
                             double gemm[3]) {
    int per = steps / ROUNDS > 0 ? steps / ROUNDS : 1, n = per * ROUNDS;
    if (!time_steps(b, warmup, ss)) return false;
    time_gemms(g, warmup, gs);
    for (int r = 0; r < ROUNDS; r++) {
        if (!time_steps(b, per, ss + r * per)) return false;
        time_gemms(g, per, gs + r * per);
    }
    step[0] = median(ss, n), gemm[0] = median(gs, n);   // sorted: quantiles follow
    step[1] = ss[n / 10], step[2] = ss[n - 1 - n / 10];
    gemm[1] = gs[n / 10], gemm[2] = gs[n - 1 - n / 10];
    return true;
}

// --- main ------------------------------------------------------------------------

int main(int argc, char **argv) {
    int steps = 200, warmup = 20;
    const char *data = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--steps N] [--warmup N] [--data DIR]\n", argv[0]);
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (steps < 1 || warmup < 0) {
        fprintf(stderr, "train_step: --steps must be >= 1 and --warmup >= 0\n");
        return 2;
    }

    int status = 1;
    bench b = {0};
    bg_dataset *train = NULL;
    gemm_set g = {0};
    if (warmup > steps) warmup = steps;
    double *scratch = malloc((size_t)steps * sizeof *scratch), *scratch2 = malloc((size_t)steps * sizeof *scratch2);
    if (bg_fmnist_load(data, BG_FMNIST_TRAIN, &train) != BG_OK ||
        bg_batcher_new(train, &(bg_batcher_opts){.batch_size = BATCH, .shuffle = true, .seed = 0},
                       &b.batches) != BG_OK) {
        fprintf(stderr, "train_step: %s\n", bg_last_error());
        goto done;
    }
    bg_rng rng;
    bg_rng_seed(&rng, 0);
    b.mlp = bg_sequential_new(5, (bg_module *[]){
        bg_linear_new(784, 512, true, &rng), bg_relu_new(),
        bg_linear_new(512, 512, true, &rng), bg_relu_new(),
        bg_linear_new(512, 10, true, &rng),
    });
    b.opt = b.mlp ? bg_adam_new(b.mlp, NULL) : NULL;
    b.name = "train_step";
    b.batch = BATCH;
    b.ctx = bg_ctx_new(0);
    g.x = filled(BATCH * 784, &rng), g.w1 = filled(512 * 784, &rng);
    g.w2 = filled(512 * 512, &rng), g.w3 = filled(10 * 512, &rng);
    g.h1 = filled(BATCH * 512, &rng), g.h2 = filled(BATCH * 512, &rng);
    g.z = filled(BATCH * 10, &rng), g.d1 = filled(BATCH * 512, &rng);
    g.d2 = filled(BATCH * 512, &rng), g.dw1 = filled(512 * 784, &rng);
    g.dw2 = filled(512 * 512, &rng), g.dw3 = filled(10 * 512, &rng);
    if (!b.mlp || !b.opt || !b.ctx || !scratch || !scratch2 || !g.x || !g.w1 || !g.w2 || !g.w3 || !g.h1 ||
        !g.h2 || !g.z || !g.d1 || !g.d2 || !g.dw1 || !g.dw2 || !g.dw3) {
        fprintf(stderr, "train_step: setup failed: %s\n", bg_last_error());
        goto done;
    }

    bg_set_num_threads(0);
    int cores = bg_get_num_threads();
    printf("train_step: MLP 784-512-512-10 ReLU, batch %d, Adam; medians over %d steps after %d "
           "warm-up steps\n",
           BATCH, steps, warmup);
    bench_quiet quiet = bench_quiet_begin();
    printf("%-8s %24s %24s %8s\n", "threads", "step ms (p10-p90)", "matmuls ms (p10-p90)", "ratio");
    int counts[3] = {1, 2, cores};
    int n_counts = cores == 1 || cores == 2 ? 2 : 3;
    double step_ms[3] = {0}, gemm_ms[3] = {0};
    uint64_t allocs = 0;
    for (int k = 0; k < n_counts; k++) {
        bg_set_num_threads(counts[k]);
        double st[3], gm[3];
        if (!time_alternating(&b, &g, warmup, steps, scratch, scratch2, st, gm)) goto done;
        step_ms[k] = st[0], gemm_ms[k] = gm[0];
        if (k == 0) {
            // Measure the steady state once the arena has grown.
            uint64_t before = bg_alloc_count();
            for (int i = 0; i < 20; i++)
                if (!bench_train_step(&b)) goto done;
            allocs = bg_alloc_count() - before;
        }
        printf("%-8d %8.3f (%.3f-%.3f) %10.3f (%.3f-%.3f) %8.2f\n", counts[k], st[0], st[1], st[2], gm[0], gm[1],
               gm[2], step_ms[k] / gemm_ms[k]);
        fflush(stdout);
    }
    int d = cores == 1 ? 0 : cores == 2 ? 1 : 2;   // the row of the default thread count
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("at %d threads (the default): %.3f ms/step; the same matmuls alone through bg_sgemm "
           "%.3f ms; ratio %.2f (target <= 1.15)\n",
           counts[d], step_ms[d], gemm_ms[d], step_ms[d] / gemm_ms[d]);
    printf("an epoch of %lld steps at that rate: %.2f s (matmuls alone %.2f s)\n",
           (long long)bg_batcher_batches(b.batches),
           1e-3 * step_ms[d] * (double)bg_batcher_batches(b.batches),
           1e-3 * gemm_ms[d] * (double)bg_batcher_batches(b.batches));
    printf("2 threads vs 1: %.3f vs %.3f ms/step (%s)\n", step_ms[1], step_ms[0],
           step_ms[1] < step_ms[0] ? "2 threads faster" : "2 threads NOT faster");
    // The optimizer's non-finite gradient check, on (the default) and off,
    // alternating in rounds so the shared machine's load hits both alike.
    bg_set_num_threads(counts[d]);
    {
        int per = steps / ROUNDS > 0 ? steps / ROUNDS : 1;
        double *on = malloc(sizeof(double) * (size_t)(per * ROUNDS)), *off = malloc(sizeof(double) * (size_t)(per * ROUNDS));
        if (!on || !off) goto done;
        for (int r = 0; r < ROUNDS; r++)
            for (int variant = 0; variant < 2; variant++) {
                bg_optim_set_check_finite(b.opt, variant == 0);
                double *dst = variant == 0 ? on : off;
                for (int i = 0; i < per; i++) {
                    double t0 = now_seconds();
                    if (!bench_train_step(&b)) goto done;
                    dst[r * per + i] = 1e3 * (now_seconds() - t0);
                }
            }
        bg_optim_set_check_finite(b.opt, true);
        int m = per * ROUNDS;
        double mon = median(on, m), moff = median(off, m);   // sorts: the quantiles below read them
        printf("non-finite gradient check: %.3f ms/step with it (p10-p90 %.3f-%.3f), %.3f without (%.3f-%.3f); "
               "ratio %.4f (target <= 1.02)\n",
               mon, on[m / 10], on[m - 1 - m / 10], moff, off[m / 10], off[m - 1 - m / 10], mon / moff);
        free(on);
        free(off);
    }
    printf("arena high-water mark: %.2f MiB\n", (double)bg_ctx_peak_bytes(b.ctx) / (1 << 20));
    printf("peak RSS: %.1f MiB\n", (double)ru.ru_maxrss / 1024);
    printf("heap allocations in 20 steady-state steps: %llu\n", (unsigned long long)allocs);
    bench_quiet_end(&quiet);
    status = 0;
done:
    bg_aligned_free(g.x), bg_aligned_free(g.w1), bg_aligned_free(g.w2), bg_aligned_free(g.w3);
    bg_aligned_free(g.h1), bg_aligned_free(g.h2), bg_aligned_free(g.z), bg_aligned_free(g.d1);
    bg_aligned_free(g.d2), bg_aligned_free(g.dw1), bg_aligned_free(g.dw2), bg_aligned_free(g.dw3);
    free(scratch);
    free(scratch2);
    bg_ctx_free(b.ctx);
    bg_optim_free(b.opt);
    bg_module_free(b.mlp);
    bg_batcher_free(b.batches);
    bg_dataset_free(train);
    return status;
}
