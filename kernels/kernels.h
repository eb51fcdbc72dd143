/*
 * kernels — the only place with SIMD, OpenBLAS and oneDNN calls.
 *
 * Kernels are pure functions over pointers and sizes: they do not allocate
 * (except oneDNN's cached primitives), know nothing of tensors or the tape,
 * and report no errors; callers check shapes first. Each element-wise,
 * reduction and norm kernel has a scalar reference (`_ref`, the
 * specification) and AVX2 / AVX-512 variants; one table is filled once at run
 * time from the CPU's features, capped by BG_ISA=ref|avx2|avx512.
 *
 *     const bg_kernels *k = bg_kernels_get();
 *     k->add(y, a, b, n);                         // y = a + b
 *     bg_sgemm(false, true, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);  // y = x w^T
 *     printf("isa: %s\n", k->isa);
 *
 * All arrays are contiguous f32 unless said otherwise; "rows x cols" arrays
 * are row-major. Backward kernels ACCUMULATE (+=) into their dx outputs unless
 * the comment says "writes".
 */
#ifndef BG_KERNELS_H
#define BG_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum bg_isa {
    BG_ISA_REF = 0,
    BG_ISA_AVX2,
    BG_ISA_AVX512,
    BG_ISA_COUNT
} bg_isa;

/* One row of function pointers per ISA; see the _ref file for the exact math. */
typedef struct bg_kernels {
    bg_isa isa_id;
    const char *isa;   /* "ref", "avx2", "avx512" */

    // --- element-wise (y may alias an input) ---
    void (*add)(float *y, const float *a, const float *b, int64_t n);   /* y = a + b */
    void (*sub)(float *y, const float *a, const float *b, int64_t n);   /* y = a - b */
    void (*mul)(float *y, const float *a, const float *b, int64_t n);   /* y = a * b */
    void (*div)(float *y, const float *a, const float *b, int64_t n);   /* y = a / b */
    void (*scale)(float *y, const float *x, float a, int64_t n);        /* y = a * x */
    void (*axpy)(float *y, const float *x, float a, int64_t n);         /* y += a * x */
    void (*add_scalar)(float *y, const float *x, float a, int64_t n);   /* y = x + a */
    void (*relu_forward)(float *y, const float *x, int64_t n);
    void (*relu_backward)(float *dx, const float *x, const float *dy, int64_t n); /* dx += dy*(x>0) */
    void (*exp)(float *y, const float *x, int64_t n);
    void (*sigmoid_forward)(float *y, const float *x, int64_t n);
    void (*tanh_forward)(float *y, const float *x, int64_t n);
    void (*gelu_forward)(float *y, const float *x, int64_t n);           /* erf form */
    void (*gelu_backward)(float *dx, const float *x, const float *dy, int64_t n);
    void (*gelu_tanh_forward)(float *y, const float *x, int64_t n);      /* tanh form */
    void (*gelu_tanh_backward)(float *dx, const float *x, const float *dy, int64_t n);
    void (*silu_forward)(float *y, const float *x, int64_t n);
    void (*silu_backward)(float *dx, const float *x, const float *dy, int64_t n);

    // --- reductions (fixed partition: the result does not depend on timing) ---
    float (*sum)(const float *x, int64_t n);      /* accumulates in double */
    float (*max)(const float *x, int64_t n);      /* n >= 1 */
    float (*dot)(const float *a, const float *b, int64_t n);
    void (*col_sum)(float *y, const float *x, int64_t rows, int64_t cols); /* y[c] += sum_r x[r,c] */

    // --- rows ---
    /* y[r,:] = softmax(x[r,:]) (max-subtracted) */
    void (*softmax_rows)(float *y, const float *x, int64_t rows, int64_t cols);
    void (*log_softmax_rows)(float *y, const float *x, int64_t rows, int64_t cols);
    /* LayerNorm over cols: y = (x-mean)*rstd*w + b; writes mean[rows], rstd[rows].
     * w, b may be NULL (1 and 0). */
    void (*layernorm_forward)(float *y, float *mean, float *rstd, const float *x, const float *w,
                              const float *b, int64_t rows, int64_t cols, float eps);
    /* dx += ..., dw += ..., db += ... (dw, db may be NULL) */
    void (*layernorm_backward)(float *dx, float *dw, float *db, const float *dy, const float *x,
                               const float *w, const float *mean, const float *rstd, int64_t rows,
                               int64_t cols);
    /* RMSNorm over cols: y = x*rstd*w, rstd = 1/sqrt(mean(x^2)+eps); w may be NULL. */
    void (*rmsnorm_forward)(float *y, float *rstd, const float *x, const float *w, int64_t rows,
                            int64_t cols, float eps);
    void (*rmsnorm_backward)(float *dx, float *dw, const float *dy, const float *x, const float *w,
                             const float *rstd, int64_t rows, int64_t cols);

    // --- optimizers, over flat parameter buffers ---
    /* Adam(W): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
     * p -= lr * (m/bc1) / (sqrt(v/bc2) + eps); decoupled: p -= lr*wd*p first
     * (PyTorch's order); coupled (Adam): g += wd*p first.
     * bc1 = 1 - b1^t, bc2 = 1 - b2^t for step t >= 1 (computed in double, passed
     * as float). The kernel recomputes torch's double scalars from these (shortest
     * decimal of lr, b1, b2, wd; the step t behind bc1, bc2) and follows
     * torch 1.13's float op order: 10 steps match torch.optim.Adam/AdamW bitwise. */
    void (*adam_update)(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1,
                        float b2, float eps, float wd, bool decoupled, float bc1, float bc2);
    /* SGD as torch.optim.SGD: g' = g + wd*p; with momentum != 0:
     * buf = g' on the first step, else buf = momentum*buf + (1-dampening)*g';
     * g' = nesterov ? g' + momentum*buf : buf; then p -= lr*g'.
     * buf may be NULL when momentum == 0. */
    void (*sgd_update)(float *p, const float *g, float *buf, int64_t n, float lr, float momentum,
                       float dampening, float wd, bool nesterov, bool first_step);
} bg_kernels;

/* The table for the best ISA this CPU supports (capped by BG_ISA). Thread-safe,
 * filled once. */
const bg_kernels *bg_kernels_get(void);
/* The table for one ISA, or NULL when this CPU cannot run it (tests compare
 * each against the reference). */
const bg_kernels *bg_kernels_for(bg_isa isa);

// ---------------------------------------------------------------------------
// threads

/* Sets the thread count of our OpenMP kernels, OpenBLAS and oneDNN together.
 * n <= 0 means the number of cores. */
void bg_set_num_threads(int n);
int bg_get_num_threads(void);

// ---------------------------------------------------------------------------
// f32 matmul, row-major: C = alpha * op(A) op(B) + beta * C,
// op(A) is M x K, op(B) is K x N, C is M x N.

typedef enum bg_gemm_backend {
    BG_GEMM_AUTO = 0,   /* the fastest backend measured for the shape */
    BG_GEMM_REF,        /* scalar reference */
    BG_GEMM_OPENBLAS,
    BG_GEMM_DNNL,
    BG_GEMM_BACKEND_COUNT
} bg_gemm_backend;

void bg_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc);
/* Same with a forced backend; false when that backend is not built in. */
bool bg_sgemm_with(bg_gemm_backend backend, bool trans_a, bool trans_b, int64_t M, int64_t N,
                   int64_t K, float alpha, const float *A, int64_t lda, const float *B,
                   int64_t ldb, float beta, float *C, int64_t ldc);

// ---------------------------------------------------------------------------
// convolution (NCHW input, OIHW weight with I = C/groups) and pooling

typedef struct bg_conv2d_shape {
    int64_t n, c, h, w;          /* input */
    int64_t oc, kh, kw;          /* weight [oc, c/groups, kh, kw] */
    int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
    int64_t oh, ow;              /* output, filled by bg_conv2d_shape_infer */
} bg_conv2d_shape;

/* Fills oh, ow; false when the output would be empty. */
bool bg_conv2d_shape_infer(bg_conv2d_shape *s);
/* y[n,oc,oh,ow] = conv(x, w) + b (b may be NULL). Writes y. oneDNN when built
 * in, else the reference. */
void bg_conv2d_forward(const bg_conv2d_shape *s, float *y, const float *x, const float *w,
                       const float *b);
/* dx += conv_transpose(dy, w) */
void bg_conv2d_backward_data(const bg_conv2d_shape *s, float *dx, const float *dy, const float *w);
/* dw += ..., db += ... (db may be NULL) */
void bg_conv2d_backward_weights(const bg_conv2d_shape *s, float *dw, float *db, const float *dy,
                                const float *x);
/* The scalar references of the three, for tests. */
void bg_conv2d_forward_ref(const bg_conv2d_shape *s, float *y, const float *x, const float *w,
                           const float *b);
void bg_conv2d_backward_data_ref(const bg_conv2d_shape *s, float *dx, const float *dy,
                                 const float *w);
void bg_conv2d_backward_weights_ref(const bg_conv2d_shape *s, float *dw, float *db,
                                    const float *dy, const float *x);

// ---------------------------------------------------------------------------
// pooling (NCHW), PyTorch semantics. Scalar C with OpenMP over n*c.

typedef struct bg_pool2d_shape {
    int64_t n, c, h, w;          /* input */
    int64_t kh, kw, stride_h, stride_w, pad_h, pad_w;
    int64_t dil_h, dil_w;        /* max pool only; 0 is read as 1; avg pool ignores them */
    bool ceil_mode;
    int64_t oh, ow;              /* output, filled by bg_pool2d_shape_infer */
} bg_pool2d_shape;

/* Fills oh, ow as torch does (with ceil_mode, a last window that would start
 * inside the right padding is dropped); false when the output would be empty.
 * Callers check pad <= kernel/2 (torch's rule) themselves. */
bool bg_pool2d_shape_infer(bg_pool2d_shape *s);
/* y[n,c,oh,ow] = max over the window (padding counts as -inf; NaN wins);
 * argmax[n,c,oh,ow] = ih*w + iw of the chosen input element, as torch's
 * indices. Writes y and argmax. */
void bg_max_pool2d_forward(const bg_pool2d_shape *s, float *y, int32_t *argmax, const float *x);
/* dx[n,c,argmax] += dy */
void bg_max_pool2d_backward(const bg_pool2d_shape *s, float *dx, const float *dy,
                            const int32_t *argmax);
/* y = mean over the window, count_include_pad=True (torch's default): the
 * divisor counts padding but not the ceil_mode overhang. Writes y. */
void bg_avg_pool2d_forward(const bg_pool2d_shape *s, float *y, const float *x);
/* dx += dy / divisor over each window */
void bg_avg_pool2d_backward(const bg_pool2d_shape *s, float *dx, const float *dy);

#ifdef __cplusplus
}
#endif
#endif /* BG_KERNELS_H */
