/* gemm.c — times bg_sgemm's backends (OpenBLAS, oneDNN, and what
 * BG_GEMM_AUTO picks) at the Fashion-MNIST MLP's shapes (784-512-512-10,
 * batch 128): each layer's forward y = x w^T, backward dx = dy w and
 * dw += dy^T x, at 1 and 2 threads. Prints the median time per call and the
 * OpenBLAS/oneDNN ratio; the rule in kernels/gemm.c (pick_backend) encodes
 * what this measures.
 *
 *     ./build/bench/gemm [--reps N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_util.h"
#include "kernels/kernels.h"



typedef struct shape {
    const char *name;
    bool ta, tb;
    int64_t M, N, K;
    float beta;
} shape;

/* batch 128; layer (in -> out): w is [out, in] */
static const shape shapes[] = {
    {"fc1 fwd  y=x w^T   ", false, true, 128, 512, 784, 0.0f},
    {"fc1 bwd  dw+=dy^T x", true, false, 512, 784, 128, 1.0f},
    {"fc2 fwd  y=x w^T   ", false, true, 128, 512, 512, 0.0f},
    {"fc2 bwd  dx=dy w   ", false, false, 128, 512, 512, 1.0f},
    {"fc2 bwd  dw+=dy^T x", true, false, 512, 512, 128, 1.0f},
    {"fc3 fwd  y=x w^T   ", false, true, 128, 10, 512, 0.0f},
    {"fc3 bwd  dx=dy w   ", false, false, 128, 512, 10, 1.0f},
    {"fc3 bwd  dw+=dy^T x", true, false, 10, 512, 128, 1.0f},
};
#define N_SHAPES ((int)(sizeof shapes / sizeof shapes[0]))

/* median seconds per call over `reps` timed batches */
static double time_gemm(bg_gemm_backend be, const shape *s, const float *A, const float *B,
                        float *C, int reps) {
    int64_t lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N, ldc = s->N;
    int inner = 1;
    /* batches of >= ~2 ms so the clock's resolution does not matter */
    double t0 = now_seconds();
    bg_sgemm_with(be, s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, lda, B, ldb, s->beta, C, ldc);
    double one = now_seconds() - t0;
    if (one < 2e-3) inner = (int)(2e-3 / (one > 1e-7 ? one : 1e-7)) + 1;
    double *t = malloc((size_t)reps * sizeof(double));
    if (!t) return -1.0;
    for (int r = 0; r < reps; r++) {
        t0 = now_seconds();
        for (int i = 0; i < inner; i++)
            bg_sgemm_with(be, s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, lda, B, ldb, s->beta, C,
                          ldc);
        t[r] = (now_seconds() - t0) / inner;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    double med = t[reps / 2];
    free(t);
    return med;
}

int main(int argc, char **argv) {
    int reps = 15;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--reps N]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    size_t maxe = 784 * 512;
    float *A = malloc(maxe * sizeof(float)), *B = malloc(maxe * sizeof(float)),
          *C = malloc(maxe * sizeof(float));
    if (!A || !B || !C) return 1;
    for (size_t i = 0; i < maxe; i++) {
        A[i] = (float)((i * 7919u) % 1000) * 1e-3f - 0.5f;
        B[i] = (float)((i * 104729u) % 1000) * 1e-3f - 0.5f;
        C[i] = 0.0f;
    }
    float probe = 0, one = 1;
    bool have_blas = bg_sgemm_with(BG_GEMM_OPENBLAS, false, false, 1, 1, 1, 1, &one, 1, &one, 1, 0, &probe, 1);
    bool have_dnnl = bg_sgemm_with(BG_GEMM_DNNL, false, false, 1, 1, 1, 1, &one, 1, &one, 1, 0, &probe, 1);
    printf("gemm backends at the MLP's shapes (batch 128), median us per call over %d reps\n", reps);
    printf("openblas: %s, onednn: %s\n", have_blas ? "yes" : "not built", have_dnnl ? "yes" : "not built");
#if defined(BG_WITH_OPENBLAS)
    {
        /* 0.3.21 reads this machine's CPU as Prescott (SSE3 kernels) unless
         * OPENBLAS_CORETYPE=SkylakeX is set before it loads */
        extern char *openblas_get_corename(void);
        extern int openblas_get_parallel(void);
        printf("openblas core: %s, threading: %s\n", openblas_get_corename(),
               openblas_get_parallel() == 2 ? "openmp" : openblas_get_parallel() == 1 ? "pthreads" : "none");
    }
#endif
    double total[3][2] = {{0}};
    for (int th = 1; th <= 2; th++) {
        bg_set_num_threads(th);
        printf("\nthreads %d\n%-22s %5s %5s %5s %10s %10s %10s %9s\n", th, "shape", "M", "N", "K",
               "openblas", "onednn", "auto", "blas/dnnl");
        for (int i = 0; i < N_SHAPES; i++) {
            const shape *s = &shapes[i];
            double tb = have_blas ? time_gemm(BG_GEMM_OPENBLAS, s, A, B, C, reps) : 0;
            double td = have_dnnl ? time_gemm(BG_GEMM_DNNL, s, A, B, C, reps) : 0;
            double ta = time_gemm(BG_GEMM_AUTO, s, A, B, C, reps);
            total[0][th - 1] += tb, total[1][th - 1] += td, total[2][th - 1] += ta;
            printf("%-22s %5lld %5lld %5lld %10.1f %10.1f %10.1f %9.2f\n", s->name, (long long)s->M,
                   (long long)s->N, (long long)s->K, tb * 1e6, td * 1e6, ta * 1e6,
                   td > 0 ? tb / td : 0.0);
        }
        printf("%-22s %17s %10.1f %10.1f %10.1f %9.2f\n", "step total", "", total[0][th - 1] * 1e6,
               total[1][th - 1] * 1e6, total[2][th - 1] * 1e6,
               total[1][th - 1] > 0 ? total[0][th - 1] / total[1][th - 1] : 0.0);
    }
    printf("\n2-thread speed-up: openblas %.2fx, onednn %.2fx, auto %.2fx\n",
           total[0][1] > 0 ? total[0][0] / total[0][1] : 0.0,
           total[1][1] > 0 ? total[1][0] / total[1][1] : 0.0, total[2][0] / total[2][1]);
    free(A), free(B), free(C);
    return 0;
}
