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

#include "tensor/tensor.h"

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
    /* y = x / 255 for bytes: a division, so the values equal torch's ToTensor */
    void (*unit_from_u8)(float *y, const uint8_t *x, int64_t n);
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
    int64_t (*first_nonfinite)(const float *x, int64_t n);   /* index of the first NaN/Inf, or -1 */
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
 * n > 0 pins n threads. n <= 0 is auto: one per core while the machine is
 * quiet, fewer while other processes keep cores busy (bg_adapt_threads), so
 * that no thread of ours waits at a barrier for one that has no core.
 * Without a call the count is auto, unless OMP_NUM_THREADS pins it.
 * Results do not depend on the count for our kernels and OpenBLAS; oneDNN's
 * convolution gradients differ in the last bits between counts, so pin the
 * count when a convolutional run must repeat bit for bit on a loaded machine. */
void bg_set_num_threads(int n);
/* The count the next kernel uses. */
int bg_get_num_threads(void);
/* Whether the count is auto (adapts to the machine's load). */
bool bg_threads_auto(void);
/* How often auto mode has changed the count since the last bg_set_num_threads. */
int bg_threads_changes(void);
/* A step boundary: the training loop calls it once per step. In auto mode it
 * samples the machine's load (at most every 5 ms; ~20 us of /proc reads) and
 * drops a thread while other processes' runnable tasks leave fewer cores
 * free than we use, adding it back when they go. Otherwise a no-op. Call it
 * from the thread that runs the kernels. */
void bg_adapt_threads(void);

/* Auto mode's decision, apart from /proc so that tests can drive it: a moving
 * average of other processes' runnable tasks, with hysteresis and a settling
 * time after each change. */
typedef struct bg_thread_policy {
    int cores, max;   /* cores we may use; the most threads to run */
    int threads;      /* the count now */
    double others;    /* moving average of other processes' runnable tasks */
    int settle;       /* samples to wait before the next change */
    int samples, changes;
} bg_thread_policy;
void bg_thread_policy_init(bg_thread_policy *p, int cores, int max);
/* Feeds one sample (other processes' runnable tasks now); returns the count. */
int bg_thread_policy_feed(bg_thread_policy *p, double others);

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
/* bg_sgemm on the calling thread alone, for callers that run many small
 * products at once from their own OpenMP loop (one attention head per
 * iteration): no lock and no threads of its own, so calls from several
 * threads run side by side (bg_sgemm's oneDNN backend serialises them on its
 * primitive cache's lock), and a result does not depend on the thread count
 * around it. oneDNN's stateless dnnl_sgemm when built in, else OpenBLAS, else
 * the reference. */
void bg_sgemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                     const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                     float *C, int64_t ldc);

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

// ---------------------------------------------------------------------------
// quantization (quant.c = the _ref specification, quant_avx2.c, quant_avx512.c)
//
// x is contiguous and viewed as [outer, channels, inner]: element (o, c, i)
// at (o*channels + c)*inner + i uses scale[c] and zero_point[c] (integer-
// valued floats; zero_point NULL = 0). Per-tensor is (1, 1, n); per-channel
// on axis a (prod(shape[:a]), shape[a], prod(shape[a+1:])); per-group of G
// along the last axis (1, n/G, G); per-token (1, rows, cols). Every variant
// is bit-identical to the reference, sums included. Own table (not in
// bg_kernels), chosen by the same CPU features and BG_ISA cap.

typedef struct bg_quant_kernels {
    bg_isa isa_id;
    const char *isa;
    /* One pass, PyTorch's arithmetic: inv = 1.0f/scale[c] (once per scale),
     * q = nearbyintf(x*inv) + z, code = min(max(q, qmin), qmax) (NaN -> qmin),
     * y = (code - z)*scale[c]; mask = qmin <= q <= qmax (0 for NaN).
     * Writes y; codes (one byte per element: int8 when qmin < 0, uint8
     * otherwise) and mask may be NULL. qmin < qmax, both in -128..255. */
    void (*fake_quant)(float *y, int8_t *codes, uint8_t *mask, const float *x, int64_t outer,
                       int64_t channels, int64_t inner, const float *scale, const float *zero_point,
                       int32_t qmin, int32_t qmax);
    /* The same with stochastic rounding: q = floorf(x*inv + r) + z, r =
     * bg_quant_uniform(key, flat index). */
    void (*fake_quant_stochastic)(float *y, int8_t *codes, uint8_t *mask, const float *x,
                                  int64_t outer, int64_t channels, int64_t inner, const float *scale,
                                  const float *zero_point, int32_t qmin, int32_t qmax, uint32_t key);
    /* {-1,+1}: u = x*inv; code = u > 0 ? 1 : -1; y = code*scale[c];
     * mask = -1 <= u <= 1. */
    void (*fake_binary)(float *y, int8_t *codes, uint8_t *mask, const float *x, int64_t outer,
                        int64_t channels, int64_t inner, const float *scale);
    /* Per-channel reductions over outer and inner; they write. minmax skips
     * NaN; absmax returns NaN for a channel holding one (a scale from it is
     * then not finite and the quantizer refuses it). No element gives min
     * +inf, max -inf, absmax 0. Zeros come out as +0. */
    void (*minmax)(float *mn, float *mx, const float *x, int64_t outer, int64_t channels,
                   int64_t inner);
    void (*absmax)(float *amax, const float *x, int64_t outer, int64_t channels, int64_t inner);
    /* sum |x| in double: 16 partial sums per channel, element i of each
     * inner row going to partial i % 16 (rows in order), combined as
     * p[j] += p[j+w] for w = 8, 4, 2, 1. */
    void (*abssum)(double *sum, const float *x, int64_t outer, int64_t channels, int64_t inner);
    /* dx += mask ? dy : 0 (a select: dy = inf where mask = 0 adds 0). */
    void (*mask_backward)(float *dx, const float *dy, const uint8_t *mask, int64_t n);
    /* PyTorch's _fake_quantize_learnable_per_{tensor,channel}_affine
     * backward per element, z = the backward zero point:
     * xq = nearbyintf(z + x*inv); in range: dx += dy, ds = dy*((xq-z)*s - x)*inv*gf;
     * below / above: ds = dy*(qmin-z)*gf / dy*(qmax-z)*gf, dz = dy*(-1)*s*gf.
     * dscale[c], dzero[c] += the per-element terms (float) summed in double in
     * element order; dzero may be NULL. */
    void (*lsq_backward)(float *dx, double *dscale, double *dzero, const float *dy, const float *x,
                         int64_t outer, int64_t channels, int64_t inner, const float *scale,
                         const float *zero_point, int32_t qmin, int32_t qmax, float grad_factor);
} bg_quant_kernels;

/* The table for the best ISA (capped by BG_ISA); thread-safe, filled once. */
const bg_quant_kernels *bg_quant_kernels_get(void);
/* The table for one ISA, or NULL when this CPU cannot run it. */
const bg_quant_kernels *bg_quant_kernels_for(bg_isa isa);
/* The stochastic rounding draw in [0,1) (24 bits) for element index of the
 * stream key; the index wraps at 2^32. */
float bg_quant_uniform(uint32_t key, uint64_t index);
/* Per-ISA tables (entries left NULL are taken from the ISA below). */
extern const bg_quant_kernels bg_quant_kernels_ref_table;
extern const bg_quant_kernels bg_quant_kernels_avx2_table;
extern const bg_quant_kernels bg_quant_kernels_avx512_table;


// ---------------------------------------------------------------------------
// integer matmul (igemm.c = the _ref specification, igemm_avx2.c,
// igemm_vnni.c): exact int32 products of int8 activations with ternary or
// int8 weights, for the inference runtime (infer/) and the integer forward
// of quantization-aware layers. Own table, same CPU features + BG_ISA cap
// (the VNNI variant is the AVX-512 level when the CPU has AVX512_VNNI).
//
// K is padded: activation and weight rows are stored with kp =
// bg_int_padded_k(K) entries, the padding zero, so kernels need no tails.
//
// Packed ternary rows (the export's "T2" dtype, README "Export format"):
// a row of kp weights w in {-1,0,+1} is kp/4 bytes, in blocks of
// BG_TERNARY_BLOCK = 128 weights = 32 bytes; within a block, byte i
// (0..31) holds code(w[i]) in bits 0-1, code(w[i+32]) in bits 2-3,
// code(w[i+64]) in bits 4-5, code(w[i+96]) in bits 6-7, code(w) = w + 1
// (0, 1, 2; 3 never occurs). Shifts and one mask give 32 consecutive
// weights as unsigned bytes {0,1,2}, ready for VNNI's u8 x s8 product:
// sum (w+1) x - sum x.

#define BG_TERNARY_BLOCK 128

/* K rounded up to a multiple of BG_TERNARY_BLOCK (the row stride, in
 * elements, of every integer-kernel operand). */
int64_t bg_int_padded_k(int64_t k);
/* Packs w (int8 [rows, k], values in {-1,0,+1}) into rows * kp/4 bytes,
 * padding with zero weights. */
void bg_ternary_pack(uint8_t *dst, const int8_t *w, int64_t rows, int64_t k);
/* The inverse: int8 [rows, k] from packed rows. */
void bg_ternary_unpack(int8_t *w, const uint8_t *src, int64_t rows, int64_t k);

typedef struct bg_int_kernels {
    bg_isa isa_id;
    const char *isa;   /* "ref", "avx2", "avx512_vnni" (or "avx512" without VNNI) */
    /* acc[m,n] = sum_k x[m,k] * w[n,k] (int32, writes). x int8 [M, kp],
     * w packed ternary [N, kp/4 bytes]. OpenMP over N (and M). */
    void (*gemm_ternary)(int32_t *acc, const int8_t *x, const uint8_t *w, int64_t M, int64_t N,
                         int64_t kp);
    /* acc[m,n] = sum_k x[m,k] * w[n,k] (int32, writes). x int8 [M, kp] in
     * -128..127, w int8 [N, kp] in -127..127 (int8 narrow, int4, int2 ...
     * codes; |w| <= 127 keeps the u8 x s8 trick exact). */
    void (*gemm_s8)(int32_t *acc, const int8_t *x, const int8_t *w, int64_t M, int64_t N,
                    int64_t kp);
    /* Per-row int8 codes for the activations: q[m,k] = clamp(nearbyintf(
     * x[m,k] * inv) + z, qmin, qmax), inv = 1.0f / scale[m * scale_stride]
     * (the fake-quant kernel's arithmetic, so the codes are identical);
     * scale_stride 1 = per token, 0 = one per-tensor scale. z is an integer
     * zero point (0 when symmetric; callers correct acc with z * the
     * weights' row sums). Entries K..kp-1 of each row are written 0 (the
     * padded weights are zero, so they add nothing). */
    void (*quantize_rows)(int8_t *q, const float *x, int64_t M, int64_t K, int64_t kp,
                          const float *scale, int64_t scale_stride, int32_t z, int32_t qmin,
                          int32_t qmax);
    /* Per-row absmax (for per-token scales): amax[m] = max_k |x[m,k]|
     * (NaN for a row holding one, as the quant absmax; 0 for an all-zero row). */
    void (*absmax_rows)(float *amax, const float *x, int64_t M, int64_t K);
} bg_int_kernels;

/* The table for the best ISA (capped by BG_ISA); thread-safe, filled once. */
const bg_int_kernels *bg_int_kernels_get(void);
/* The table for one ISA, or NULL when this CPU cannot run it. */
const bg_int_kernels *bg_int_kernels_for(bg_isa isa);
/* int8 x int8 -> int32 through oneDNN's matmul (acc = x w^T, same operands
 * as gemm_s8 but unpadded K allowed); false when oneDNN is not built in, or
 * runs without VNNI (its int16 pair sums then saturate: inexact). */
bool bg_gemm_s8_dnnl(int32_t *acc, const int8_t *x, const int8_t *w, int64_t M, int64_t N,
                     int64_t K, int64_t ldx, int64_t ldw);

// ---------------------------------------------------------------------------
// sampling (sample.c)

typedef struct bg_sample_opts {
    float temperature;   /* 0: greedy (argmax) */
    int64_t top_k;       /* 0: the whole vocabulary */
    float top_p;         /* nucleus: 0 or 1 = off */
    uint64_t seed;       /* the caller's rng seed (bg_lm_generate, bitgrad generate) */
} bg_sample_opts;
/* The next token from logits[V]: greedy (argmax, the first of ties) when
 * temperature is 0, else drawn from softmax(logits / temperature) restricted
 * to the top_k largest logits and then to the most probable tokens whose
 * probabilities first sum to top_p (ties at either cut kept). scratch holds
 * 2 V floats. One draw from rng when sampling, none when greedy. */
int32_t bg_sample_logits(const float *logits, int64_t V, const bg_sample_opts *o, float *scratch, bg_rng *rng);

#ifdef __cplusplus
}
#endif
#endif /* BG_KERNELS_H */
