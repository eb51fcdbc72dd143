/*
 * quant — quantizers, as plain data and numbers (below autograd: the
 * fake-quant op and the kernels use them; nothing here knows a module or a
 * model): the quantizer spec
 * (plain data, parsed from and printed to a short string), the quantizer
 * state (observed ranges, learned step sizes), and the parameters a
 * fake-quant op needs. The op itself is bg_fake_quant (autograd, below).
 *
 *     // int4 weights, one learned step per group of 64 inputs (LSQ)
 *     bg_quant_spec spec;
 *     if (bg_quant_spec_parse("int4:per_group=64:sym:lsq", &spec) != BG_OK)
 *         fprintf(stderr, "%s\n", bg_last_error());
 *     bg_quant_state *st;
 *     bg_quant_state_new(&spec, W->ndim, W->shape, &st);   // W [out,in]
 *     // its learned step is a parameter: give it to the optimizer
 *     bg_tensor *step = bg_quant_state_param(st, 0);         // [out, in/64]
 *     bg_tensor *Wq = bg_fake_quant(ctx, W, &spec, st);      // forward + tape
 *     ... bg_backward: W->grad (STE, masked) and step->grad (LSQ) ...
 *     bg_quant_state_free(st);
 *
 * Codes. A b-bit integer quantizer maps x to an integer code
 *     q = nearbyint(x * (1/s)) + z,   code = clamp(q, qmin, qmax)
 * and back to y = (code - z) * s, with 1/s computed once per scale in
 * float, exactly as PyTorch's fake_quantize_per_{tensor,channel}_affine do
 * (bit for bit). The STE mask is qmin <= q <= qmax on the unclamped q.
 * Ranges: sym signed [-2^(b-1), 2^(b-1)-1] (z = 0), sym unsigned
 * [0, 2^b-1] (z = 0), affine unsigned [0, 2^b-1] (or signed with
 * "signed"), "narrow" drops the lowest code. Ternary is the integer range
 * [-1, 1]; binary maps to {-1, +1} (code = x > 0 ? +1 : -1, y = code*s).
 *
 * Granularity: x is viewed as [outer, channels, inner] and element
 * (o, c, i) uses scale[c]: per-tensor (1,1,n); per-channel on axis a
 * (prod(shape[:a]), shape[a], prod(shape[a+1:])); per-group of G along the
 * last axis (1, n/G, G); per-token, one scale per row of the last axis
 * (1, n/last, last).
 *
 * Spec strings: tokens separated by ':' in any order, exactly one kind.
 *   kind        int1 .. int8 | ternary | binary
 *   mapping     sym (default) | affine | signed | unsigned | narrow
 *   granularity per_tensor (default) | per_channel[=AXIS] (default axis 0)
 *               | per_group=G | per_token
 *   rounding    nearest (default, half to even) | stochastic[=SEED]
 *   range       minmax (default for int) | moving_minmax[=MOMENTUM]
 *               | percentile[=P] | mse[=GRID] | scale=S[:zp=Z] (fixed)
 *               | lsq | lsq_plus | pact[=ALPHA0]
 *               | absmean (default for ternary, binary) | absmax
 *   backward    ste | clipped_ste (default: see bg_quant_backward)
 *   other       gscale=auto|none|F (LSQ gradient scale) | check (NaN/Inf)
 * e.g. "int8", "int4:per_group=64:sym:lsq", "ternary:absmean",
 * "int8:per_token:absmax" (BitNet activations), "int4:unsigned:pact".
 * bg_quant_spec_format prints the canonical form, which parses back to the
 * same spec.
 *
 * Errors: parse/validate return BG_ERR_ARG and set bg_last_error() to one
 * sentence ending in the string, e.g.
 *   quant_spec: bits must be 1..8, got 9 in "int9"
 */
#ifndef BG_QUANT_H
#define BG_QUANT_H

#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------
// constants

/* Longest canonical spec string, NUL included. */
#define BG_QUANT_SPEC_STR_MAX 160
/* The smallest scale an observer or a learned step may take: float32's
 * machine epsilon, PyTorch's observer eps. */
#define BG_QUANT_EPS 1.1920928955078125e-07f
/* BitNet's clamp of absmean / absmax (both clamp(min=1e-5)). */
#define BG_QUANT_BITNET_EPS 1e-5f

// ---------------------------------------------------------------------------
// the spec

typedef enum bg_quant_kind {
    BG_QUANT_INT = 0,       /* b-bit integer codes, 1 <= b <= 8 */
    BG_QUANT_TERNARY,       /* {-1, 0, +1} * s */
    BG_QUANT_BINARY,        /* {-1, +1} * s */
    BG_QUANT_KIND_COUNT
} bg_quant_kind;

typedef enum bg_quant_granularity {
    BG_QUANT_PER_TENSOR = 0,
    BG_QUANT_PER_CHANNEL,   /* one scale per index of `axis` */
    BG_QUANT_PER_GROUP,     /* one scale per group_size consecutive elements of the last axis */
    BG_QUANT_PER_TOKEN,     /* one scale per row of the last axis; always dynamic */
    BG_QUANT_GRANULARITY_COUNT
} bg_quant_granularity;

typedef enum bg_quant_rounding {
    BG_QUANT_ROUND_NEAREST = 0, /* nearbyint: half to even, as PyTorch */
    BG_QUANT_ROUND_STOCHASTIC,  /* floor(u + r), r uniform [0,1) from (seed, call, index) */
    BG_QUANT_ROUNDING_COUNT
} bg_quant_rounding;

/* Where the scale (and zero point) come from. Observers keep a range in the
 * state, updated on every forward while the observer is enabled; dynamic
 * sources recompute it from each input; learned ones are parameters. */
typedef enum bg_quant_range {
    BG_QUANT_RANGE_MINMAX = 0,    /* running min / max of all inputs (MinMaxObserver) */
    BG_QUANT_RANGE_MOVING_MINMAX, /* min/max averaged with momentum (MovingAverageMinMaxObserver) */
    BG_QUANT_RANGE_PERCENTILE,    /* the percentile-th |x| (sym) or x (affine) from a histogram, averaged */
    BG_QUANT_RANGE_MSE,           /* the clipping range minimising sum (x - q(x))^2 over a grid (on a strided
                                     sample of <= 4096 elements per call), averaged */
    BG_QUANT_RANGE_FIXED,         /* spec.scale and spec.zero_point */
    BG_QUANT_RANGE_LSQ,           /* learned step s (Esser et al. 2020) */
    BG_QUANT_RANGE_LSQ_PLUS,      /* learned step s and offset (PyTorch's learnable zero point) */
    BG_QUANT_RANGE_PACT,          /* learned clipping value alpha: s = alpha / qmax (Choi et al. 2018) */
    BG_QUANT_RANGE_ABSMEAN,       /* dynamic: s = max(mean|x|, 1e-5) (BitNet b1.58 weights) */
    BG_QUANT_RANGE_ABSMAX,        /* dynamic: s = max(max|x|, 1e-5) / qmax (BitNet activations) */
    BG_QUANT_RANGE_COUNT
} bg_quant_range;

/* The backward rule. Defaults: LSQ, LSQ+ and PACT ranges use their own rule;
 * absmean and absmax use the identity STE (BitNet); observers and fixed
 * ranges use the clipped STE (torch.ao). */
typedef enum bg_quant_backward {
    BG_QUANT_BWD_DEFAULT = 0, /* only before validation: resolved from the range */
    BG_QUANT_BWD_STE,         /* dx = dy */
    BG_QUANT_BWD_CLIPPED_STE, /* dx = dy * mask */
    BG_QUANT_BWD_LSQ,         /* dx = dy * mask; ds per PyTorch's learnable backward */
    BG_QUANT_BWD_LSQ_PLUS,    /* as LSQ, plus dz (the offset) */
    BG_QUANT_BWD_PACT,        /* dx = dy * 1[0 <= x < alpha]; dalpha = sum dy * 1[x >= alpha] */
    BG_QUANT_BACKWARD_COUNT
} bg_quant_backward;

/* A quantizer, as plain data (copy it, compare it with bg_quant_spec_equal,
 * store it as its string). Fill it with bg_quant_spec_parse or
 * bg_quant_spec_init + field edits + bg_quant_spec_validate. */
typedef struct bg_quant_spec {
    bg_quant_kind kind;
    int bits;                   /* INT: 1..8; ternary: 2; binary: 1 (storage bits) */
    bool symmetric;             /* zero point 0 (else affine: zero point from the range) */
    bool is_unsigned;           /* codes [0, 2^b-1] instead of [-2^(b-1), 2^(b-1)-1] */
    bool narrow;                /* drop the lowest code (e.g. int8 sym: [-127, 127]) */
    bg_quant_granularity granularity;
    int axis;                   /* PER_CHANNEL: the channel axis (negative counts from the end) */
    int64_t group_size;         /* PER_GROUP: G > 0 */
    bg_quant_rounding rounding;
    uint64_t seed;              /* STOCHASTIC */
    bg_quant_range range;
    float momentum;             /* MOVING_MINMAX / PERCENTILE / MSE: weight of a new batch, (0,1]; 0.01 */
    float percentile;           /* PERCENTILE: (50, 100]; 99.99 */
    int mse_grid;               /* MSE: candidate clipping ratios k/grid, k = 1..grid; 100 */
    float scale;                /* FIXED: > 0 */
    int32_t zero_point;         /* FIXED: in [qmin, qmax] */
    float pact_init;            /* PACT: alpha's first value; 0 = max(x) of the first input */
    float grad_scale;           /* LSQ/LSQ+ gradient scale; 0 = auto, 1/sqrt(numel(x) * qmax) */
    bg_quant_backward backward;
    bool check_finite;          /* fail on NaN / Inf in the input (BG_ERR_NAN) */
} bg_quant_spec;

/* The defaults for a kind: sym, signed, per-tensor, nearest, minmax (int) or
 * absmean (ternary, binary), resolved backward. bits is used for INT only. */
void bg_quant_spec_init(bg_quant_spec *spec, bg_quant_kind kind, int bits);

/* Parses a spec string (see the top of this file) into *out, validated, with
 * defaults resolved. BG_ERR_ARG + bg_last_error() on a bad string; *out is
 * then untouched. */
bg_status bg_quant_spec_parse(const char *str, bg_quant_spec *out);

/* Writes the canonical string (snprintf rules: returns the length it needed,
 * writes at most len bytes). Parsing it gives back an equal spec. */
int bg_quant_spec_format(const bg_quant_spec *spec, char *buf, size_t len);

/* Checks a hand-edited spec (ranges of the fields, conflicts) and resolves
 * BG_QUANT_BWD_DEFAULT. BG_ERR_ARG + bg_last_error() when invalid. */
bg_status bg_quant_spec_validate(bg_quant_spec *spec);

/* Field-by-field equality (unused fields of the range are ignored). */
bool bg_quant_spec_equal(const bg_quant_spec *a, const bg_quant_spec *b);

/* The integer code range [*qmin, *qmax] ({-1, 1} for binary). */
void bg_quant_spec_qrange(const bg_quant_spec *spec, int32_t *qmin, int32_t *qmax);

/* True when the range keeps state across calls (observers, learned). */
bool bg_quant_spec_is_stateful(const bg_quant_spec *spec);
/* True for LSQ, LSQ+ and PACT. */
bool bg_quant_spec_is_learned(const bg_quant_spec *spec);

/* Static names: "int", "per_group", "moving_minmax", "clipped_ste", ... */
const char *bg_quant_kind_name(bg_quant_kind kind);
const char *bg_quant_granularity_name(bg_quant_granularity g);
const char *bg_quant_range_name(bg_quant_range range);
const char *bg_quant_backward_name(bg_quant_backward bwd);

// ---------------------------------------------------------------------------
// the state: observed ranges, scales, zero points, learned parameters

typedef struct bg_quant_state bg_quant_state;   /* opaque */

/* A state for quantizing tensors shaped like (ndim, shape) under spec (which
 * is copied). The shape fixes the number of scales P: per-tensor 1,
 * per-channel shape[axis], per-group numel/G (shaped like x with the last
 * dim divided by G); per-token keeps none (ndim may be 0). Learned
 * parameters are persistent f32 tensors with requires_grad and a grad:
 * LSQ "scale" [P]; LSQ+ "scale" and "zero_point" [P]; PACT "alpha" [1].
 * They are initialised from the first input the state sees (LSQ: s =
 * 2 mean|x| / sqrt(qmax); LSQ+: min/max; PACT: max x or spec.pact_init).
 * A fresh observer that has seen nothing gives s = 1, z = 0 (PyTorch).
 * On failure *out is NULL and bg_last_error() says why (e.g. "quant_state:
 * group size 64 does not divide the last dim 100 of [8,100]").
 * Lifetime: the learned parameters are inputs of the tape nodes of every
 * bg_fake_quant that used the state, so the state (or the tensors bound to
 * it) must outlive those ops' backward. */
bg_status bg_quant_state_new(const bg_quant_spec *spec, int ndim, const int64_t *shape,
                             bg_quant_state **out);
/* Frees the state and the tensors it owns (not bound ones). NULL is a no-op. */
void bg_quant_state_free(bg_quant_state *st);

/* The spec the state was made for (owned by the state). */
const bg_quant_spec *bg_quant_state_spec(const bg_quant_state *st);
/* Replaces the spec (e.g. a schedule's next bit-width). The new spec must
 * keep the number of scales and the set of learned parameters; ranges are
 * reset and learned parameters re-initialised from the next input.
 * BG_ERR_ARG / BG_ERR_STATE + bg_last_error() otherwise. */
bg_status bg_quant_state_set_spec(bg_quant_state *st, const bg_quant_spec *spec);

/* The current scale and zero point, [P] f32 (zero points are integers except
 * LSQ+'s learned float offset). Updated by each forward; owned by the state
 * (or bound). NULL for per-token. For LSQ the scale IS the learned step. */
bg_tensor *bg_quant_state_scale(const bg_quant_state *st);
bg_tensor *bg_quant_state_zero_point(const bg_quant_state *st);

/* Learned parameters, for the optimizer: count, i-th tensor, its name
 * ("scale", "zero_point", "alpha"). NULL when i is out of range. */
int bg_quant_state_num_params(const bg_quant_state *st);
bg_tensor *bg_quant_state_param(const bg_quant_state *st, int i);
const char *bg_quant_state_param_name(const bg_quant_state *st, int i);
/* Uses t (f32, contiguous, same numel as parameter i, e.g. a module's
 * collated parameter) instead of the state's own tensor from now on; t gets
 * requires_grad and the state's own tensor is freed. When the state is
 * initialised its current value is copied into t; otherwise t keeps its
 * value and the next input initialises it (see set_initialized). t stays
 * owned by the caller and must outlive the state's use. */
bg_status bg_quant_state_bind_param(bg_quant_state *st, int i, bg_tensor *t);
/* Marks the learned parameters as holding their values (e.g. restored from a
 * checkpoint, or set by hand) so that the next input does not re-initialise
 * them; false makes the next input initialise them. */
void bg_quant_state_set_initialized(bg_quant_state *st, bool initialized);
bool bg_quant_state_initialized(const bg_quant_state *st);

/* Observer on/off (on by default): when off, observed ranges are frozen.
 * Fake quant on/off (on by default): when off, bg_fake_quant returns x
 * itself (fp32 mode) and observes nothing. */
void bg_quant_state_set_observer(bg_quant_state *st, bool enabled);
bool bg_quant_state_observer_enabled(const bg_quant_state *st);
void bg_quant_state_set_enabled(bg_quant_state *st, bool enabled);
bool bg_quant_state_enabled(const bg_quant_state *st);

/* Forgets the observed range (back to s = 1, z = 0 until the next
 * observation) and marks learned parameters for re-initialisation from the
 * next input. */
void bg_quant_state_reset(bg_quant_state *st);
/* Re-initialises learned parameters (and, for observers, the range) from x
 * now, e.g. at a schedule transition from the current weights. */
bg_status bg_quant_state_init_from(bg_quant_state *st, const bg_tensor *x);

/* Number of forwards that observed or initialised (the stochastic rounding
 * stream also advances with it). Counts from 0 again after INT64_MAX. */
int64_t bg_quant_state_calls(const bg_quant_state *st);

/* The non-parameter state, for checkpoints: everything a forward reads or
 * updates besides the learned parameters (which are module parameters and
 * saved as such). */
typedef struct bg_quant_state_flags {
    bool observed;       /* the observed range holds data */
    bool initialized;    /* learned parameters hold their values */
    bool observer_on, enabled;
    int64_t calls;       /* forwards so far (the stochastic rounding stream) */
} bg_quant_state_flags;
/* P, the number of scales (0 for per-token). */
int64_t bg_quant_state_num_scales(const bg_quant_state *st);
/* Copies out the observed range rmin[P], rmax[P], the current scale[P] and
 * zero_point[P] and the flags (any pointer may be NULL to skip it).
 * BG_ERR_ARG for a NULL state. */
bg_status bg_quant_state_get_buffers(const bg_quant_state *st, float *rmin, float *rmax, float *scale,
                                     float *zero_point, bg_quant_state_flags *flags);
/* Restores them (NULL pointers skip). scale / zero_point are written only
 * where they are not learned parameters (those are restored as module
 * parameters). Never fails for a non-NULL state. */
bg_status bg_quant_state_set_buffers(bg_quant_state *st, const float *rmin, const float *rmax, const float *scale,
                                     const float *zero_point, const bg_quant_state_flags *flags);

// ---------------------------------------------------------------------------
// quantization parameters for one input

/* What the kernels need to quantize x: the [outer, channels, inner] view,
 * one scale and zero point per channel, the code range, the stochastic
 * rounding key. Arrays live in the ctx's arena (or in the state). */
typedef struct bg_quant_params {
    int64_t outer, channels, inner;
    const float *scale;         /* [channels], each > 0 */
    const float *zero_point;    /* [channels], integer-valued; NULL = all 0 */
    int32_t qmin, qmax;
    uint32_t key;               /* stochastic rounding stream of this call */
    float alpha;                /* PACT's clipping value (else 0) */
} bg_quant_params;

/* Computes the parameters for quantizing x (any strides) under spec and st
 * (st may be NULL for stateless specs: fixed, absmean, absmax): checks x
 * (NaN/Inf when spec->check_finite, the layout), observes x when the
 * observer is on, initialises learned parameters on first use and keeps
 * them >= BG_QUANT_EPS (in place). Returns BG_OK, or the ctx's sticky error
 * (also in bg_last_error()), e.g. "fake_quant: x has a NaN or Inf at index
 * 3 (value inf)". */
bg_status bg_quant_params_compute(bg_ctx *ctx, const bg_quant_spec *spec, bg_quant_state *st,
                                  const bg_tensor *x, bg_quant_params *out);

/* Integer codes of x (contiguous copy if needed): *codes is an arena tensor
 * of x's shape, I8 when qmin < 0 else U8; *params as above. For export and
 * metrics; records nothing. */
bg_status bg_quantize(bg_ctx *ctx, const bg_quant_spec *spec, bg_quant_state *st,
                      const bg_tensor *x, bg_tensor **codes, bg_quant_params *params);

// ---------------------------------------------------------------------------
// quantization error sums (stats.c), kept by each FakeQuant module when
// tracking is on and read by qat/ metrics
//
// Definitions over one tensor x and its fake-quantized q (n elements):
//   MSE     = sum (x-q)^2 / n
//   SQNR dB = 10 log10(sum x^2 / sum (x-q)^2); +INFINITY when q == x exactly
//             (also for an all-zero x), -INFINITY when x is all zero and q not
//   cosine  = sum x q / sqrt(sum x^2 sum q^2); 1 when both are all zero, 0
//             when only one is
// Sums are accumulated in double, in one pass over (x, q).

/* Sums of the last tracked forward of one quantizer (owned by its layer). */
typedef struct bg_quant_stats {
    int64_t n;                  /* elements (0: nothing tracked yet) */
    double sum_x2, sum_err2, sum_xq, sum_q2;
    int64_t zeros;              /* elements with q == 0 */
    int64_t version;            /* bumped by each tracked forward */
    int8_t *levels;             /* ternary/binary: sign(q) of the last tracked forward, [n] */
    int8_t *prev_levels;        /* the levels at the previous metrics call */
    int64_t prev_version;       /* version of prev_levels; -1 = none */
    int64_t n_levels;
} bg_quant_stats;

/* Overwrites the sums of s with those of (x, q) (n elements, one pass);
 * with levels non-NULL also writes sign(q) into levels[0..n). */
void bg_quant_stats_compute(bg_quant_stats *s, const float *x, const float *q, int64_t n, int8_t *levels);

typedef struct bg_quant_error {
    double mse, sqnr_db, cosine;
} bg_quant_error;

/* MSE, SQNR and cosine from the sums (see the definitions above); NaN for
 * all three when s->n == 0. */
void bg_quant_error_from_stats(const bg_quant_stats *s, bg_quant_error *out);
/* The same for two arrays directly. */
void bg_quant_error_compute(const float *x, const float *q, int64_t n, bg_quant_error *out);

// ---------------------------------------------------------------------------
// GPTQ (gptq.c): post-training rounding of a weight matrix that pushes each
// column's rounding error onto the columns not yet rounded (Frantar et al.
// 2022, without lazy blocking), given the layer's input Hessian

/* GPTQ rounding of a weight matrix w [rows, cols] (row-major, rows = output
 * channels): columns are quantized in order 0..cols-1 and each column's
 * rounding error, scaled by the inverse Hessian's Cholesky factor, is pushed
 * onto the columns not yet quantized. H [cols, cols] (double, row-major) is
 * the layer's input Hessian 2/n X^T X from calibration inputs X [n, cols];
 * it is not modified. A column whose H diagonal is 0 (an input never
 * active) gets w = 0 for that column and H_jj = 1; then dampening:
 * percdamp * mean(diag H) (the mean after that fix) is added to the
 * diagonal (GPTQ's 0.01). With U the upper Cholesky factor of
 * (H + damp)^-1, column j of each row r rounds W[r][j] and then
 * W[r][k] -= (W[r][j] - q) / U[j][j] * U[j][k] for k > j (in double).
 * Codes: q = clamp(round_half_even(W[r][j] / scale[r]), qmin, qmax) (a
 * division in double, not float's multiply by 1/s), scale[r] > 0 per row
 * given by the caller (repeat one value for a per-tensor scale); zero point
 * 0 (symmetric). Writes the dequantized result q*scale into wq
 * [rows, cols] (may not alias w), and, when rounded_from is not NULL, the
 * error-compensated weights each code was rounded from (round(rounded_from
 * / scale) clamped = the codes): a latent start for QAT that keeps each
 * weight's place inside its bin. A diagonal H gives plain round to
 * nearest. O(cols^3 + rows*cols^2) time, 2 cols^2 + rows*cols doubles.
 * BG_ERR_ARG for bad sizes/NULL/qmin > qmax/scale <= 0/percdamp < 0,
 * BG_ERR_NOMEM, BG_ERR_NAN when H is not positive definite after
 * dampening, each via bg_set_error, e.g.
 *   gptq_quantize: H + 0 damping is not positive definite: Cholesky pivot -1 at column 0 */
bg_status bg_gptq_quantize(const float *w, int64_t rows, int64_t cols, const double *H, const float *scale,
                           int32_t qmin, int32_t qmax, double percdamp, float *wq, float *rounded_from);

#ifdef __cplusplus
}
#endif
#endif /* BG_QUANT_H */
