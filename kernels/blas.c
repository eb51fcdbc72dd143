/* blas.c — the OpenBLAS backend of bg_sgemm (cblas_sgemm, row-major) and its
 * thread count. Empty stubs when BG_WITH_OPENBLAS is off. */
#include "kernels/kernels_internal.h"

#if defined(BG_WITH_OPENBLAS)
#include <cblas.h>

void bg_sgemm_openblas(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                       float *C, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N, (blasint)K, alpha, A,
                (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

void bg_openblas_set_num_threads(int n) { openblas_set_num_threads(n); }

#else

void bg_openblas_set_num_threads(int n) { (void)n; }

#endif
