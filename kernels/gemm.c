/* gemm.c — f32 matmul: the scalar reference (double accumulation, the
 * specification the backends are tested against) and bg_sgemm's choice of
 * backend per shape. Calls blas.c and dnnl.c through kernels_internal.h. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels_internal.h"

// ---------------------------------------------------------------------------
// reference

/* C = alpha op(A) op(B) + beta C; beta == 0 writes C without reading it (BLAS) */
void bg_sgemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                  int64_t ldc) {
    /* element (i,k) of op(A) is A[i*sa_i + k*sa_k] */
    int64_t sa_i = trans_a ? 1 : lda, sa_k = trans_a ? lda : 1;
    int64_t sb_k = trans_b ? 1 : ldb, sb_j = trans_b ? ldb : 1;
#pragma omp parallel for schedule(static) if (M * N * K >= BG_PAR_MIN)
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++)
                s += (double)A[i * sa_i + k * sa_k] * (double)B[k * sb_k + j * sb_j];
            float r = alpha * (float)s;
            C[i * ldc + j] = beta == 0.0f ? r : r + beta * C[i * ldc + j];
        }
    }
}

// ---------------------------------------------------------------------------
// backend choice

#if defined(BG_WITH_DNNL)
#define HAVE_DNNL 1
#else
#define HAVE_DNNL 0
#endif
#if defined(BG_WITH_OPENBLAS)
#define HAVE_OPENBLAS 1
#else
#define HAVE_OPENBLAS 0
#endif

/* The backend for a shape. bench/gemm at the MLP's shapes (batch 128, this
 * machine's AVX-512 Xeon, 1 thread, median us):
 *
 *     shape (M,N,K)          OpenBLAS  OpenBLAS(SkylakeX)  oneDNN
 *     128x512x784  x w^T       3308          806            693
 *     512x784x128  dy^T x      3166          646            691
 *     128x512x512  x w^T       2108          532            439
 *     128x10x512   x w^T         64           35             14
 *     step total              12945         2976           2780
 *     step total, 2 threads    6685         1828           1431
 *
 * OpenBLAS 0.3.21 does not recognise this CPU and runs its Prescott (SSE3)
 * kernels unless OPENBLAS_CORETYPE=SkylakeX is set before it loads; even
 * then oneDNN is ~1.1x faster at the MLP's shapes and ~2.4x on the 10-wide
 * layer, and never measurably slower. So: oneDNN whenever it is built in. */
static bg_gemm_backend pick_backend(int64_t M, int64_t N, int64_t K) {
    (void)M, (void)N, (void)K;
    if (HAVE_DNNL) return BG_GEMM_DNNL;
    if (HAVE_OPENBLAS) return BG_GEMM_OPENBLAS;
    return BG_GEMM_REF;
}

bool bg_sgemm_with(bg_gemm_backend backend, bool trans_a, bool trans_b, int64_t M, int64_t N,
                   int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                   int64_t ldb, float beta, float *C, int64_t ldc) {
    if (backend == BG_GEMM_AUTO) backend = pick_backend(M, N, K);
    if (backend <= BG_GEMM_AUTO || backend >= BG_GEMM_BACKEND_COUNT) return false;
    if ((backend == BG_GEMM_OPENBLAS && !HAVE_OPENBLAS) || (backend == BG_GEMM_DNNL && !HAVE_DNNL))
        return false;
    if (M <= 0 || N <= 0) return true;
    if (K <= 0) {   /* C = beta C, without reading C when beta is 0 */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
        return true;
    }
    switch (backend) {
    case BG_GEMM_REF:
        bg_sgemm_ref(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return true;
    case BG_GEMM_OPENBLAS:
#if defined(BG_WITH_OPENBLAS)
        bg_sgemm_openblas(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return true;
#else
        return false;
#endif
    case BG_GEMM_DNNL:
#if defined(BG_WITH_DNNL)
        // oneDNN may refuse a shape; the reference then gives the same result.
        if (!bg_sgemm_dnnl(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
            bg_sgemm_ref(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return true;
#else
        return false;
#endif
    default:
        return false;
    }
}

void bg_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (!bg_sgemm_with(BG_GEMM_AUTO, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C,
                       ldc))
        bg_sgemm_ref(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* One thread for the libraries: inside a parallel region oneDNN and OpenBLAS
 * already run on the calling thread; outside one, the thread count of this
 * task is set to 1 for the call (an ICV of the calling task only) and put
 * back. */
void bg_sgemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                     float *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {   /* C = beta C, without reading C when beta is 0 */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
        return;
    }
    const int outer = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (outer > 1) omp_set_num_threads(1);
    bool done = false;
#if defined(BG_WITH_DNNL)
    done = bg_sgemm_dnnl_serial(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
#if defined(BG_WITH_OPENBLAS)
    if (!done) {
        bg_sgemm_openblas(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        done = true;
    }
#endif
    if (!done) bg_sgemm_ref(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (outer > 1) omp_set_num_threads(outer);
}
