/* infer.c — the integer matmul kernels against f32 baselines measured in the
 * same run, on one 4096 x 4096 weight matrix: the ternary x int8 and the
 * int8 x int8 kernels (bg_int_kernels, every ISA this CPU runs) at batch 1
 * (matrix-vector, against cblas_sgemv) and at batch 8 and 128 (against
 * cblas_sgemm), with oneDNN's f32 matmul (bg_sgemm's DNNL backend) and its
 * s8 matmul (bg_gemm_s8_dnnl) beside them. Then the Fashion-MNIST MLP
 * (784-512-512-10): images/s of the ternary export (BitLinear layers,
 * bg_export + bg_infer_run) against the f32 model's no-grad forward, at
 * batch 1 and 256, on the test images (random ones when the data set is not
 * installed). Medians over repeats; the ratio is baseline time / time
 * (> 1: faster than the f32 baseline).
 *
 *     ./build/bench/infer [--threads N] [--reps N]
 *
 * OpenBLAS picks its kernels from the CPU it detects (printed); Debian's
 * 0.3.21 does not know this machine's CPU and falls back to its Prescott
 * (SSE3) kernels. So that cblas is a fair baseline, the bench re-runs itself
 * with OPENBLAS_CORETYPE=SkylakeX on AVX-512 CPUs when the variable is
 * unset (set it yourself to choose another core). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench_util.h"
#include "bitgrad.h"

char *openblas_get_corename(void);   /* OpenBLAS's cblas.h has it, netlib's not */

enum { DIM = 4096 };



/* what one timed call does */
typedef enum op {
    OP_SGEMV,          /* cblas_sgemv */
    OP_SGEMM_BLAS,     /* cblas_sgemm, y = x w^T */
    OP_SGEMM_DNNL,     /* bg_sgemm_with(DNNL) */
    OP_TERNARY,        /* ik->gemm_ternary */
    OP_S8,             /* ik->gemm_s8 */
    OP_S8_DNNL,        /* bg_gemm_s8_dnnl */
    OP_LAYER_TERNARY,  /* absmax_rows + quantize_rows + gemm_ternary + rescale: a whole layer */
} op;

typedef struct bufs {
    float *wf, *xf, *yf;      /* f32 weights [DIM, DIM], inputs [128, DIM], outputs [128, DIM] */
    uint8_t *wt;              /* packed ternary [DIM, DIM/4] */
    int8_t *ws, *xq;          /* int8 weights [DIM, DIM], codes [128, DIM] */
    int32_t *acc;             /* [128, DIM] */
    float amax[128], scale[128];
} bufs;

static void run(op o, const bg_int_kernels *ik, bufs *b, int64_t M) {
    const int64_t N = DIM, K = DIM;
    switch (o) {
    case OP_SGEMV:
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)N, (int)K, 1.0f, b->wf, (int)K, b->xf, 1,
                    0.0f, b->yf, 1);
        break;
    case OP_SGEMM_BLAS:
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, b->xf,
                    (int)K, b->wf, (int)K, 0.0f, b->yf, (int)N);
        break;
    case OP_SGEMM_DNNL:
        bg_sgemm_with(BG_GEMM_DNNL, false, true, M, N, K, 1.0f, b->xf, K, b->wf, K, 0.0f, b->yf, N);
        break;
    case OP_TERNARY: ik->gemm_ternary(b->acc, b->xq, b->wt, M, N, K); break;
    case OP_S8: ik->gemm_s8(b->acc, b->xq, b->ws, M, N, K); break;
    case OP_S8_DNNL: bg_gemm_s8_dnnl(b->acc, b->xq, b->ws, M, N, K, K, K); break;
    case OP_LAYER_TERNARY:
        /* per-token absmax int8 activations, ternary weights with one scale */
        ik->absmax_rows(b->amax, b->xf, M, K);
        for (int64_t m = 0; m < M; m++) b->scale[m] = b->amax[m] > 0 ? b->amax[m] / 127.0f : 1.0f;
        ik->quantize_rows(b->xq, b->xf, M, K, K, b->scale, 1, 0, -128, 127);
        ik->gemm_ternary(b->acc, b->xq, b->wt, M, N, K);
        for (int64_t m = 0; m < M; m++) {
            const float s = b->scale[m] * 0.02f;
            for (int64_t n = 0; n < N; n++) b->yf[m * N + n] = (float)b->acc[m * N + n] * s;
        }
        break;
    }
}

/* One timed variant: calls per timed batch (>= ~5 ms) and its samples. */
typedef struct bench_case {
    op o;
    const bg_int_kernels *ik;
    char name[64];
    int inner;
    double t[64];
    double best;   /* the fastest round (a hint of the unloaded time) */
} bench_case;

/* Medians of seconds per call over reps rounds; each round times every case
 * once, so the cases see the same machine load (the cores are shared). */
static bench_case make_case(op o, const bg_int_kernels *ik, const char *name) {
    bench_case c = {.o = o, .ik = ik};
    snprintf(c.name, sizeof c.name, "%s", name);
    return c;
}

static void time_cases(bench_case *c, int nc, bufs *b, int64_t M, int reps) {
    for (int i = 0; i < nc; i++) {
        run(c[i].o, c[i].ik, b, M);   /* warm-up: caches, oneDNN primitive creation */
        double t0 = now_seconds();
        run(c[i].o, c[i].ik, b, M);
        double one = now_seconds() - t0;
        c[i].inner = one > 0 ? (int)(5e-3 / one) : 1000;
        if (c[i].inner < 1) c[i].inner = 1;
        if (c[i].inner > 1000) c[i].inner = 1000;
    }
    for (int r = 0; r < reps; r++)
        for (int i = 0; i < nc; i++) {
            double t0 = now_seconds();
            for (int k = 0; k < c[i].inner; k++) run(c[i].o, c[i].ik, b, M);
            c[i].t[r] = (now_seconds() - t0) / c[i].inner;
        }
    for (int i = 0; i < nc; i++) {
        qsort(c[i].t, (size_t)reps, sizeof c[i].t[0], cmp_double);
        c[i].best = c[i].t[0];
        c[i].t[0] = c[i].t[reps / 2];   /* the median, kept in t[0] */
    }
}

static void *xalloc(size_t n) {
    void *p = aligned_alloc(64, (n + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "infer: out of memory\n");
        exit(1);
    }
    return p;
}

static void row(const char *what, int64_t M, double t, double base, double best) {
    double ops = 2.0 * (double)M * DIM * DIM;
    printf("  %-36s %10.1f us  %7.1f GOP/s  %7.2fx   (fastest %.1f us)\n", what, t * 1e6,
           ops / t * 1e-9, base / t, best * 1e6);
}


// ---------------------------------------------------------------------------
// the MLP through the runtime vs the f32 model's forward

static bg_module *build_mlp(bg_rng *rng) {
    return bg_sequential_new(5, (bg_module *[]){
        bg_linear_new(784, 512, true, rng), bg_relu_new(),
        bg_linear_new(512, 512, true, rng), bg_relu_new(),
        bg_linear_new(512, 10, true, rng),
    });
}

/* median seconds per pass over n images in batches of `batch` */
static double time_model(bg_module *net, bg_ctx *ctx, const float *X, int64_t n, int64_t batch,
                         int reps) {
    double t[64];
    if (reps > 64) reps = 64;
    for (int r = 0; r < reps + 1; r++) {   /* the first pass warms up */
        double t0 = now_seconds();
        for (int64_t s = 0; s < n; s += batch) {
            int64_t m = n - s < batch ? n - s : batch;
            bg_tensor *x = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(m, 784), X + s * 784);
            bg_tensor *y = x ? bg_module_forward(ctx, net, x) : NULL;
            if (!y) {
                fprintf(stderr, "infer: model forward: %s\n", bg_ctx_error(ctx));
                return -1;
            }
            bg_ctx_reset(ctx);
        }
        if (r > 0) t[r - 1] = now_seconds() - t0;
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp_double);
    return t[reps / 2];
}

static double time_runtime(bg_infer_model *rt, const float *X, float *out, int64_t n,
                           int64_t batch, int reps) {
    double t[64];
    if (reps > 64) reps = 64;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now_seconds();
        for (int64_t s = 0; s < n; s += batch) {
            int64_t m = n - s < batch ? n - s : batch;
            if (bg_infer_run(rt, X + s * 784, m, out + s * 10) != BG_OK) {
                fprintf(stderr, "infer: %s\n", bg_last_error());
                return -1;
            }
        }
        if (r > 0) t[r - 1] = now_seconds() - t0;
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp_double);
    return t[reps / 2];
}

static void bench_mlp(int reps) {
    bg_dataset *test = NULL;
    int64_t n = 10000;
    const char *src = "Fashion-MNIST test images";
    if (bg_fmnist_load(NULL, BG_FMNIST_TEST, &test) != BG_OK) {
        test = NULL;
        src = "random images (Fashion-MNIST not found)";
    } else {
        n = test->n;
    }
    float *X = xalloc(sizeof(float) * (size_t)(n * 784)), *out = xalloc(sizeof(float) * (size_t)(n * 10));
    bg_rng rng;
    bg_rng_seed(&rng, 2);
    for (int64_t i = 0; i < n * 784; i++)
        X[i] = test ? (float)test->pixels[i] / 255.0f : bg_rng_uniform(&rng);
    bg_dataset_free(test);

    /* the f32 model and a BitLinear model of the same shapes, exported */
    bg_module *f32 = build_mlp(&rng), *bit = build_mlp(&rng);
    bg_ctx *ctx = bg_ctx_new(0);
    char path[64];
    snprintf(path, sizeof path, "/tmp/bg_bench_infer_%d.bgx", (int)getpid());
    bg_infer_model *rt = NULL;
    if (!f32 || !bit || !ctx || bg_bitnet_model(bit) != BG_OK) {
        fprintf(stderr, "infer: building the MLP: %s\n", bg_last_error());
        goto done;
    }
    bg_set_grad_enabled(ctx, false);
    bg_module_train(f32, false);
    bg_module_train(bit, false);
    bg_model_set_quant_mode(bit, BG_QUANT_MODE_EVAL);
    if (bg_export(bit, path, NULL) != BG_OK ||
        bg_infer_load_opts(path, &(bg_infer_opts){.max_batch = 256}, &rt) != BG_OK) {
        fprintf(stderr, "infer: export / load: %s\n", bg_last_error());
        goto done;
    }
    unlink(path);
    printf("\nMLP 784-512-512-10 on %lld %s (runtime layers: ", (long long)n, src);
    for (int i = 0; i < bg_infer_num_layers(rt); i++)
        printf("%s%s %s", i ? ", " : "", bg_infer_layer_kind(rt, i), bg_infer_layer_path(rt, i));
    printf(")\n");
    const int64_t batches[] = {1, 256};
    for (int bi = 0; bi < 2; bi++) {
        int64_t batch = batches[bi], nb = batch == 1 ? (n < 2000 ? n : 2000) : n;
        double tf = time_model(f32, ctx, X, nb, batch, reps);
        double tq = time_model(bit, ctx, X, nb, batch, reps);
        double tr = time_runtime(rt, X, out, nb, batch, reps);
        if (tf <= 0 || tq <= 0 || tr <= 0) goto done;
        printf("  batch %-4lld f32 forward %9.0f images/s | fake-quant forward %9.0f images/s (%.2fx) | "
               "ternary runtime %9.0f images/s (%.2fx)\n",
               (long long)batch, nb / tf, nb / tq, tf / tq, nb / tr, tf / tr);
    }
done:
    bg_infer_free(rt);
    bg_ctx_free(ctx);
    bg_module_free(f32);
    bg_module_free(bit);
    free(X);
    free(out);
}

int main(int argc, char **argv) {
    int threads = 0, reps = 11;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--threads N] [--reps N]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    if (!getenv("OPENBLAS_CORETYPE") && __builtin_cpu_supports("avx512f")) {
        /* OpenBLAS reads it when it is loaded, before main: run again */
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
        execv("/proc/self/exe", argv);
        perror("infer: re-running with OPENBLAS_CORETYPE=SkylakeX");   /* and go on */
    }
    bg_set_num_threads(threads);

    bufs b;
    b.wf = xalloc((size_t)DIM * DIM * sizeof(float));
    b.xf = xalloc((size_t)128 * DIM * sizeof(float));
    b.yf = xalloc((size_t)128 * DIM * sizeof(float));
    b.wt = xalloc((size_t)DIM * DIM / 4);
    b.ws = xalloc((size_t)DIM * DIM);
    b.xq = xalloc((size_t)128 * DIM);
    b.acc = xalloc((size_t)128 * DIM * sizeof(int32_t));
    int8_t *tern = xalloc((size_t)DIM * DIM);
    bg_rng rng;
    bg_rng_seed(&rng, 1);
    for (int64_t i = 0; i < (int64_t)DIM * DIM; i++) {
        tern[i] = (int8_t)((int)bg_rng_below(&rng, 3) - 1);
        b.ws[i] = (int8_t)((int)bg_rng_below(&rng, 255) - 127);
        b.wf[i] = 0.02f * (float)tern[i];
    }
    bg_ternary_pack(b.wt, tern, DIM, DIM);
    free(tern);
    for (int64_t i = 0; i < (int64_t)128 * DIM; i++) {
        b.xf[i] = bg_rng_normal(&rng);
        b.xq[i] = (int8_t)((int)bg_rng_below(&rng, 256) - 128);
    }

    const bg_int_kernels *best = bg_int_kernels_get();
    printf("bench/infer: %d x %d weights, %d threads, median of %d, int kernels: %s, OpenBLAS core: %s\n",
           DIM, DIM, bg_get_num_threads(), reps, best->isa, openblas_get_corename());
    printf("  (median us per call, ratio = cblas f32 median (first line of each block) / median;\n"
           "   OPENBLAS_CORETYPE=%s)\n",
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "unset");

    if (reps > 64) reps = 64;
    const int64_t batches[] = {1, 8, 128};
    for (int bi = 0; bi < 3; bi++) {
        const int64_t M = batches[bi];
        bench_case c[16];
        int nc = 0, it = -1, is8 = -1;
        c[nc++] = make_case(M == 1 ? OP_SGEMV : OP_SGEMM_BLAS, NULL,
                            M == 1 ? "f32 cblas_sgemv" : "f32 cblas_sgemm");
        c[nc++] = make_case(OP_SGEMM_DNNL, NULL, "f32 oneDNN matmul (bg_sgemm)");
        for (int kind = 0; kind < 2; kind++)
            for (int isa = BG_ISA_COUNT - 1; isa >= BG_ISA_REF; isa--) {
                const bg_int_kernels *ik = bg_int_kernels_for((bg_isa)isa);
                if (!ik || (isa == BG_ISA_REF && M > 1)) continue;   /* the reference is slow */
                if (ik == best) *(kind ? &is8 : &it) = nc;
                char name[64];
                snprintf(name, sizeof name, "%s (%s)", kind ? "int8 x int8" : "ternary x int8",
                         ik->isa);
                c[nc++] = make_case(kind ? OP_S8 : OP_TERNARY, ik, name);
            }
        c[nc++] = make_case(OP_S8_DNNL, NULL, "int8 x int8 (oneDNN s8 matmul)");
        c[nc++] = make_case(OP_LAYER_TERNARY, best, "ternary layer (quantize+gemm+scale)");
        time_cases(c, nc, &b, M, reps);
        printf("\nbatch %lld  (y[%lld, %d] = x w^T)\n", (long long)M, (long long)M, DIM);
        const double tblas = c[0].t[0], tdnnl = c[1].t[0];
        for (int i = 0; i < nc; i++) row(c[i].name, M, c[i].t[0], tblas, c[i].best);
        printf("  => ternary %s: %.2fx %s, %.2fx oneDNN f32; int8: %.2fx %s, %.2fx oneDNN f32\n",
               best->isa, tblas / c[it].t[0], M == 1 ? "cblas_sgemv" : "cblas_sgemm",
               tdnnl / c[it].t[0], tblas / c[is8].t[0], M == 1 ? "cblas_sgemv" : "cblas_sgemm",
               tdnnl / c[is8].t[0]);
    }
    free(b.wf), free(b.xf), free(b.yf), free(b.wt), free(b.ws), free(b.xq), free(b.acc);
    bench_mlp(reps);
    return 0;
}
