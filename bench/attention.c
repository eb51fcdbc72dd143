/* attention.c — causal attention, forward + backward: the fused op
 * (bg_causal_attention) against the same attention composed from bg_matmul,
 * bg_scale, bg_add of a [T,T] mask tensor, bg_softmax and bg_matmul.
 *
 *     ./build/bench/attention [--reps N] [--threads N] [--B N --H N --T N --D N]
 *
 * Defaults: q, k, v [32, 4, 128, 64], 1 thread, 30 reps after 3 warm-up
 * reps. Each rep times both, alternating which runs first; a run is the
 * forward, bg_backward_with_grad with a fixed upstream gradient, and
 * bg_ctx_reset (the grads are zeroed outside the timing). Prints the median
 * ms of each, their ratio, and each run's arena high-water mark. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_util.h"
#include "bitgrad.h"
#include "kernels/kernels.h"




static bg_tensor *composed(bg_ctx *ctx, bg_tensor *q, bg_tensor *k, bg_tensor *v, float scale) {
    const int64_t T = q->shape[2];
    bg_tensor *mask = bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(T, T));
    if (!mask) return NULL;
    for (int64_t i = 0; i < T; i++)
        for (int64_t j = 0; j < T; j++) bg_f32(mask)[i * T + j] = j > i ? -INFINITY : 0.0f;
    bg_tensor *s = bg_add(ctx, bg_scale(ctx, bg_matmul(ctx, q, k, false, true), scale), mask);
    return bg_matmul(ctx, bg_softmax(ctx, s, -1), v, false, false);
}

/* One forward + backward; seconds, or -1 on failure. */
static double run(bg_ctx *ctx, bool fused, bg_tensor *q, bg_tensor *k, bg_tensor *v, const float *dout, size_t *peak) {
    bg_tensor *in[3] = {q, k, v};
    for (int i = 0; i < 3; i++) memset(in[i]->grad->data, 0, bg_nbytes(in[i]->grad));
    const float scale = 1.0f / sqrtf((float)q->shape[3]);
    double t0 = now_seconds();
    bg_tensor *o = fused ? bg_causal_attention(ctx, q, k, v, scale) : composed(ctx, q, k, v, scale);
    bg_tensor *g = o ? bg_from_data(ctx, BG_DTYPE_F32, o->ndim, o->shape, dout) : NULL;
    bool ok = g && bg_backward_with_grad(ctx, o, g) == BG_OK;
    *peak = bg_ctx_used_bytes(ctx);
    bg_ctx_reset(ctx);
    double t1 = now_seconds();
    if (!ok) {
        fprintf(stderr, "attention: %s\n", bg_ctx_error(ctx));
        return -1.0;
    }
    return t1 - t0;
}

int main(int argc, char **argv) {
    int reps = 30, threads = 1;
    int64_t B = 32, H = 4, T = 128, D = 64;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--B") && i + 1 < argc) B = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--H") && i + 1 < argc) H = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--T") && i + 1 < argc) T = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--D") && i + 1 < argc) D = atoll(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--reps N] [--threads N] [--B N --H N --T N --D N]\n", argv[0]);
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (reps < 1 || B < 1 || H < 1 || T < 1 || D < 1) {
        fprintf(stderr, "attention: --reps, --B, --H, --T and --D must be >= 1\n");
        return 2;
    }
    bg_set_num_threads(threads);
    bg_rng rng;
    bg_rng_seed(&rng, 1);
    bg_tensor *in[3];
    for (int i = 0; i < 3; i++) {
        in[i] = bg_tensor_new(BG_DTYPE_F32, BG_SHAPE(B, H, T, D));
        if (!in[i] || bg_init_uniform(in[i], &rng, -1.0f, 1.0f) != BG_OK || bg_set_requires_grad(in[i], true) != BG_OK) {
            fprintf(stderr, "attention: %s\n", bg_last_error());
            return 1;
        }
    }
    const int64_t n = B * H * T * D;
    float *dout = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) dout[i] = 2.0f * bg_rng_uniform(&rng) - 1.0f;

    bg_ctx *ctx = bg_ctx_new(0);
    double *tf = malloc(sizeof(double) * (size_t)reps), *tc = malloc(sizeof(double) * (size_t)reps);
    size_t peak_f = 0, peak_c = 0;
    for (int r = -3; r < reps; r++) {
        // alternate the order: neither variant always runs on a warm cache
        double a, b;
        if (r % 2 == 0) {
            a = run(ctx, true, in[0], in[1], in[2], dout, &peak_f);
            b = run(ctx, false, in[0], in[1], in[2], dout, &peak_c);
        } else {
            b = run(ctx, false, in[0], in[1], in[2], dout, &peak_c);
            a = run(ctx, true, in[0], in[1], in[2], dout, &peak_f);
        }
        if (a < 0 || b < 0) return 1;
        if (r >= 0) tf[r] = a, tc[r] = b;
    }
    double mf = median(tf, reps) * 1e3, mc = median(tc, reps) * 1e3;
    printf("causal attention forward+backward, q/k/v [%lld,%lld,%lld,%lld], %d thread%s, median of %d:\n",
           (long long)B, (long long)H, (long long)T, (long long)D, threads, threads == 1 ? "" : "s", reps);
    printf("  fused    (bg_causal_attention)             %8.2f ms   arena %7.1f MiB\n", mf, (double)peak_f / 1048576.0);
    printf("  composed (matmul, scale, mask, softmax, matmul) %5.2f ms   arena %7.1f MiB\n", mc,
           (double)peak_c / 1048576.0);
    printf("  composed / fused = %.2f\n", mc / mf);
    free(tf), free(tc), free(dout);
    for (int i = 0; i < 3; i++) bg_tensor_free(in[i]);
    bg_ctx_free(ctx);
    return 0;
}
