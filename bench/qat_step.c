/* qat_step.c — what quantization-aware training costs, in one run:
 *
 *  1. the training step of the Fashion-MNIST MLP (784-512-512-10 ReLU, batch
 *     128, Adam) with BitLinear on the hidden layers (ternary absmean weights,
 *     per-token int8 absmax activations, RMSNorm) against the same step in
 *     fp32: medians over --steps steps after --warmup warm-up steps, the
 *     models measured in alternating blocks so that a change of machine load
 *     hits all (target: ratio <= 1.15). The BitLinear step runs its forward
 *     products on the integer kernels (bg_qlinear_int, the default) and, as
 *     a third model, in f32 on the fake-quantized tensors
 *     (bg_model_set_int_forward(false));
 *  2. the fake-quant kernel (bg_quant_kernels_get()->fake_quant, int8 codes)
 *     over one buffer of --mib MiB per-tensor, per-channel (1024 channels) and
 *     per-group (G = 64), writing y only and y + codes + STE mask, beside a
 *     plain memcpy of the same buffer (target: >= 50% of memcpy's GB/s).
 *     GB/s counts the bytes of x (n * 4) per second for every line.
 *
 *     ./build/bench/qat_step [--steps N] [--warmup N] [--threads N] [--mib N] [--data DIR]
 *                            [--only fp32|bitlinear|bitlinear-f32]
 *
 * --only runs the steps of one model (no timing table, no kernel section) on
 * the test split (quicker to load), for counting: e.g. callgrind's
 * instructions of --steps 30 minus --steps 10, divided by 20, is one step's
 * count, free of load noise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_util.h"
#include "bitgrad.h"
#include "bench/bench_step.h"

#define BATCH 128


/* Process CPU time: what a step costs without the time the scheduler gave
 * other jobs (this machine is shared; at 1 thread it is the step's own work). */
static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}



// --- the training step ----------------------------------------------------------

typedef bench_net net;

static bool net_init(net *b, const char *name, const bg_dataset *train, bool bitnet, bool int_forward) {
    b->name = name;
    b->batch = BATCH;
    bg_rng rng;
    bg_rng_seed(&rng, 0);
    b->mlp = bg_sequential_new(5, (bg_module *[]){
        bg_linear_new(784, 512, true, &rng), bg_relu_new(),
        bg_linear_new(512, 512, true, &rng), bg_relu_new(),
        bg_linear_new(512, 10, true, &rng),
    });
    if (!b->mlp) return false;
    if (bitnet && (bg_quantize_layer(b->mlp, "0", "bitnet", NULL) != BG_OK ||
                   bg_quantize_layer(b->mlp, "2", "bitnet", NULL) != BG_OK))
        return false;
    bg_model_set_int_forward(b->mlp, int_forward);
    b->opt = bg_adam_new(b->mlp, NULL);
    b->ctx = bg_ctx_new(0);
    return b->opt && b->ctx &&
           bg_batcher_new(train, &(bg_batcher_opts){.batch_size = BATCH, .shuffle = true, .seed = 0}, &b->batches) ==
               BG_OK;
}

static void net_free(net *b) {
    bg_ctx_free(b->ctx);
    bg_optim_free(b->opt);
    bg_module_free(b->mlp);
    bg_batcher_free(b->batches);
}

// --- the fake-quant kernel ---------------------------------------------------------

typedef struct fq_case {
    const char *name;
    int64_t outer, channels, inner;
} fq_case;

/* Median seconds of reps calls. */
static double time_fq(const bg_quant_kernels *k, const fq_case *c, float *y, int8_t *codes, uint8_t *mask,
                      const float *x, const float *scale, int reps, double *scratch) {
    for (int r = 0; r < reps + 2; r++) {
        double t0 = now_seconds();
        k->fake_quant(y, codes, mask, x, c->outer, c->channels, c->inner, scale, NULL, -128, 127);
        if (r >= 2) scratch[r - 2] = now_seconds() - t0;
    }
    return median(scratch, reps);
}

static double time_memcpy(float *y, const float *x, size_t n, int reps, double *scratch) {
    for (int r = 0; r < reps + 2; r++) {
        double t0 = now_seconds();
        memcpy(y, x, n * sizeof(float));
        __asm__ __volatile__("" : : "r"(y) : "memory");
        if (r >= 2) scratch[r - 2] = now_seconds() - t0;
    }
    return median(scratch, reps);
}

// --- main ----------------------------------------------------------------------------

int main(int argc, char **argv) {
    int steps = 300, warmup = 30, threads = 1, mib = 16;
    const char *data = NULL, *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--steps N] [--warmup N] [--threads N] [--mib N] [--data DIR] "
                            "[--only fp32|bitlinear|bitlinear-f32]\n", argv[0]);
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (steps < 10 || warmup < 0 || threads < 0 || mib < 1 || mib > 1024) {
        fprintf(stderr, "qat_step: --steps >= 10, --warmup >= 0, --threads >= 0, --mib in 1..1024\n");
        return 2;
    }
    int status = 1;
    bg_dataset *train = NULL;
    net fp = {0}, bit = {0}, bitf = {0};
    float *x = NULL, *y = NULL, *scale = NULL;
    int8_t *codes = NULL;
    uint8_t *mask = NULL;
    double *t_fp = malloc((size_t)steps * sizeof *t_fp), *t_bit = malloc((size_t)steps * sizeof *t_bit);
    double *t_bitf = malloc((size_t)steps * sizeof *t_bitf);
    double *c_fp = malloc((size_t)steps * sizeof *c_fp), *c_bit = malloc((size_t)steps * sizeof *c_bit);
    double *c_bitf = malloc((size_t)steps * sizeof *c_bitf);
    if (!t_fp || !t_bit || !t_bitf || !c_fp || !c_bit || !c_bitf) goto done;
    if (bg_fmnist_load(data, only ? BG_FMNIST_TEST : BG_FMNIST_TRAIN, &train) != BG_OK || !net_init(&fp, "fp32", train, false, true) ||
        !net_init(&bit, "bitlinear", train, true, true) || !net_init(&bitf, "bitlinear-f32", train, true, false)) {
        fprintf(stderr, "qat_step: %s\n", bg_last_error());
        goto done;
    }
    bg_set_num_threads(threads);
    if (only) {
        net *one = !strcmp(only, "fp32") ? &fp : !strcmp(only, "bitlinear") ? &bit
                 : !strcmp(only, "bitlinear-f32") ? &bitf : NULL;
        if (!one) {
            fprintf(stderr, "qat_step: --only fp32, bitlinear or bitlinear-f32, got '%s'\n", only);
            status = 2;
            goto done;
        }
        for (int i = 0; i < warmup + steps; i++)
            if (!bench_train_step(one)) goto done;
        printf("qat_step: %d steps of %s\n", warmup + steps, one->name);
        status = 0;
        goto done;
    }

    // 1. steps, in alternating blocks of 10
    for (int i = 0; i < warmup; i++)
        if (!bench_train_step(&fp) || !bench_train_step(&bit) || !bench_train_step(&bitf)) goto done;
    const int block = 10;
    for (int s = 0; s < steps; s += block) {
        for (int i = s; i < s + block && i < steps; i++) {
            double t0 = now_seconds(), u0 = cpu_seconds();
            if (!bench_train_step(&fp)) goto done;
            t_fp[i] = 1e3 * (now_seconds() - t0);
            c_fp[i] = 1e3 * (cpu_seconds() - u0);
        }
        for (int i = s; i < s + block && i < steps; i++) {
            double t0 = now_seconds(), u0 = cpu_seconds();
            if (!bench_train_step(&bit)) goto done;
            t_bit[i] = 1e3 * (now_seconds() - t0);
            c_bit[i] = 1e3 * (cpu_seconds() - u0);
        }
        for (int i = s; i < s + block && i < steps; i++) {
            double t0 = now_seconds(), u0 = cpu_seconds();
            if (!bench_train_step(&bitf)) goto done;
            t_bitf[i] = 1e3 * (now_seconds() - t0);
            c_bitf[i] = 1e3 * (cpu_seconds() - u0);
        }
    }
    double ms_fp = median(t_fp, steps), ms_bit = median(t_bit, steps), ms_bitf = median(t_bitf, steps);
    double cpu_fp = median(c_fp, steps), cpu_bit = median(c_bit, steps), cpu_bitf = median(c_bitf, steps);
    printf("qat_step: MLP 784-512-512-10, batch %d, Adam, %d thread(s); medians over %d steps after %d warm-up\n",
           BATCH, bg_get_num_threads(), steps, warmup);
    printf("  fp32 step                                  %8.3f ms\n", ms_fp);
    printf("  BitLinear hidden layers (ternary + int8)   %8.3f ms   (integer forward products)\n", ms_bit);
    printf("  the same, f32 forward products             %8.3f ms   (bg_model_set_int_forward(false))\n", ms_bitf);
    printf("  ratio BitLinear / fp32                     %8.3f   (target <= 1.15: %s)\n", ms_bit / ms_fp,
           ms_bit / ms_fp <= 1.15 ? "met" : "NOT met");
    printf("  ratio BitLinear f32 forward / fp32         %8.3f\n", ms_bitf / ms_fp);
    printf("  process CPU time per step (medians): fp32 %.3f ms, BitLinear %.3f ms, f32 forward %.3f ms;\n"
           "    ratios %.3f (integer forward) and %.3f (f32 forward)\n",
           cpu_fp, cpu_bit, cpu_bitf, cpu_bit / cpu_fp, cpu_bitf / cpu_fp);

    // 2. the fake-quant kernel
    const bg_quant_kernels *k = bg_quant_kernels_get();
    size_t n = (size_t)mib << 18;   // floats
    x = bg_aligned_alloc(n * sizeof *x);
    y = bg_aligned_alloc(n * sizeof *y);
    codes = bg_aligned_alloc(n);
    mask = bg_aligned_alloc(n);
    scale = bg_aligned_alloc((n / 64) * sizeof *scale);
    if (!x || !y || !codes || !mask || !scale) {
        fprintf(stderr, "qat_step: out of memory\n");
        goto done;
    }
    bg_rng rng;
    bg_rng_seed(&rng, 1);
    for (size_t i = 0; i < n; i++) x[i] = 4.0f * (bg_rng_uniform(&rng) - 0.5f);
    for (size_t i = 0; i < n / 64; i++) scale[i] = 2.0f / 127.0f * (1.0f + 0.01f * (float)(i % 7));
    memset(y, 0, n * sizeof *y);
    memset(codes, 0, n);
    memset(mask, 0, n);
    const int reps = 31;
    double *scratch = t_fp;   // steps >= 10; reps fit when steps >= 31
    double *tmp = NULL;
    if (steps < reps) {
        tmp = malloc(reps * sizeof *tmp);
        if (!tmp) goto done;
        scratch = tmp;
    }
    double gb = (double)(n * sizeof(float)) * 1e-9;
    double t_mc = time_memcpy(y, x, n, reps, scratch);
    printf("fake-quant kernel (%s table), int8 [-128,127], %d MiB of f32 (%zu elements); median of %d; GB/s of x\n",
           k->isa, mib, n, reps);
    printf("  %-40s %8.2f GB/s\n", "memcpy (same buffer)", gb / t_mc);
    fq_case cases[3] = {
        {"per-tensor", 1, 1, (int64_t)n},
        {"per-channel (1024 channels)", 1, 1024, (int64_t)n / 1024},
        {"per-group (G = 64)", 1, (int64_t)n / 64, 64},
    };
    for (int c = 0; c < 3; c++) {
        double t1 = time_fq(k, &cases[c], y, NULL, NULL, x, scale, reps, scratch);
        double t2 = time_fq(k, &cases[c], y, codes, mask, x, scale, reps, scratch);
        printf("  %-28s y only    %8.2f GB/s (%5.1f%% of memcpy)   y+codes+mask %8.2f GB/s (%5.1f%%)\n",
               cases[c].name, gb / t1, 100 * t_mc / t1, gb / t2, 100 * t_mc / t2);
    }
    free(tmp);
    status = 0;
done:
    bg_aligned_free(x);
    bg_aligned_free(y);
    bg_aligned_free(codes);
    bg_aligned_free(mask);
    bg_aligned_free(scale);
    free(t_fp);
    free(t_bit);
    free(t_bitf);
    free(c_fp);
    free(c_bit);
    free(c_bitf);
    net_free(&fp);
    net_free(&bit);
    net_free(&bitf);
    bg_dataset_free(train);
    return status;
}
