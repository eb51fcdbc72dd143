/* kernels_internal.h — what the kernel files share with dispatch.c: one
 * designated-initialiser table per ISA file (its variants stay static there),
 * the size thresholds for OpenMP, and the gemm/conv backend entry points.
 * Only declarations and macros, so ISA-flagged files may include it. */
#ifndef BG_KERNELS_INTERNAL_H
#define BG_KERNELS_INTERNAL_H

#include "kernels/kernels.h"

/* Element-wise loops go parallel from this many elements; below, the fork
 * costs more than it saves. */
#define BG_PAR_MIN ((int64_t)1 << 16)
/* Reductions split n into this many contiguous blocks, each summed alone and
 * combined in block order, whatever the thread count: results are bitwise
 * the same at 1 and N threads. */
#define BG_RED_BLOCKS 64

/* The ISA this process uses (CPU features capped by BG_ISA), chosen once, and
 * whether the CPU can run a given ISA. Every kernel table follows them. */
bg_isa bg_isa_selected(void);
bool bg_isa_usable(bg_isa isa);
/* Fills the NULL function pointers of a table (from byte offset first to
 * size) with those of the ISA below, so an ISA file may leave entries out. */
void bg_fill_table_gaps(void *dst, const void *lower, size_t first, size_t size);

/* Tables, possibly partial: dispatch.c fills NULL entries of a table from the
 * ISA below it. */
extern const bg_kernels bg_kernels_ref_table;
extern const bg_kernels bg_kernels_avx2_table;
extern const bg_kernels bg_kernels_avx512_table;

/* The scalars of one Adam(W) step, computed in double from the decimals the
 * caller wrote, as torch does with its Python floats (eltwise.c). */
typedef struct bg_adam_scalars {
    float b1, b2, omb1, omb2;   /* b, 1 - b */
    float neg_step;             /* -lr / bc1 */
    float bc2_sqrt;             /* sqrt(bc2) */
    float decay;                /* 1 - lr*wd (AdamW) */
} bg_adam_scalars;
void bg_adam_scalars_init(bg_adam_scalars *k, float lr, float b1, float b2, float wd, float bc1,
                          float bc2);

/* gemm backends (blas.c, dnnl.c, gemm.c); same contract as bg_sgemm. */
void bg_sgemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                  int64_t ldc);
void bg_sgemm_openblas(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                       float *C, int64_t ldc);
/* oneDNN's matmul; false (C untouched) when oneDNN is not ready or refused
 * the shape: the dispatcher (gemm.c) then runs another backend. */
bool bg_sgemm_dnnl(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                   int64_t ldc);
/* oneDNN's dnnl_sgemm (no primitive, no lock) for bg_sgemm_serial; false
 * when oneDNN refused the call. */
bool bg_sgemm_dnnl_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                          const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                          float *C, int64_t ldc);
void bg_openblas_set_num_threads(int n);

/* oneDNN convolution (dnnl.c); false when oneDNN refused the shape, and the
 * caller falls back to the reference. */
bool bg_conv2d_forward_dnnl(const bg_conv2d_shape *s, float *y, const float *x, const float *w,
                            const float *b);
bool bg_conv2d_backward_data_dnnl(const bg_conv2d_shape *s, float *dx, const float *dy,
                                  const float *w);
bool bg_conv2d_backward_weights_dnnl(const bg_conv2d_shape *s, float *dw, float *db,
                                     const float *dy, const float *x);

#endif
