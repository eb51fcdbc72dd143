/*
 * autograd — the eager tape, bg_backward, the ops, gradcheck.
 *
 * Every op computes its result at once (in the ctx's arena) and, when grad
 * is enabled and an input requires grad, records a node on the ctx's tape.
 * bg_backward walks the tape in reverse and ACCUMULATES into each leaf's
 * grad, so micro-batches accumulate until the caller zeroes the grads.
 *
 *     // f(x) = mean((relu(x W^T + b) - t)^2)
 *     bg_tensor *h = bg_linear(ctx, x, W, b);      // x [N,K], W [M,K], b [M]
 *     bg_tensor *loss = bg_mse(ctx, bg_relu(ctx, h), t);
 *     if (bg_backward(ctx, loss) != BG_OK)          // W->grad, b->grad += ...
 *         fprintf(stderr, "%s\n", bg_ctx_error(ctx)); // first failure of the step
 *     bg_ctx_reset(ctx);
 *
 * Contract of every builder: returns an arena tensor, or NULL when the ctx
 * has already failed or the inputs are bad (then the ctx's sticky error and
 * bg_last_error hold "<op>: <what>: <values>"). Inputs may be NULL only after
 * an earlier failure; NULL otherwise is itself an error. Inputs may have any
 * strides unless said otherwise; results are contiguous.
 */
#ifndef BG_AUTOGRAD_H
#define BG_AUTOGRAD_H

#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One value per differentiable op, from the op registry autograd/ops.def
 * (name, arity, backward). Every value has a gradcheck case in
 * tests/test_gradcheck.c, and a test fails when one is missing. */
typedef enum bg_op {
    BG_OP_NONE = 0,
#define BG_OP(id, name, arity) BG_OP_##id,
#include "autograd/ops.def"
#undef BG_OP
    BG_OP_COUNT
} bg_op;

/* The op's name, as used in error messages and gradcheck reports. */
const char *bg_op_name(bg_op op);

// ---------------------------------------------------------------------------
// backward

/* loss must be a single element that requires grad. Seeds dloss = 1 and
 * accumulates into every leaf's grad.
 * One backward per step: a second backward on a tape already walked (the
 * same loss again, or another loss recorded in the same step) fails with
 * BG_ERR_STATE instead of adding the shared nodes' gradients twice; sum the
 * losses first, or bg_ctx_reset and run the forward again (PyTorch's
 * retain_graph is not supported). A loss recorded on another ctx, or before
 * ctx's last bg_ctx_reset, fails too; so does an op given an arena tensor
 * from before its ctx's last reset (its memory holds newer data). A live
 * tensor of another ctx is a valid op input (a dataset kept in its own ctx). */
bg_status bg_backward(bg_ctx *ctx, bg_tensor *loss);
/* Same with an explicit upstream gradient dout (same shape as out). */
bg_status bg_backward_with_grad(bg_ctx *ctx, bg_tensor *out, const bg_tensor *dout);

// ---------------------------------------------------------------------------
// element-wise (ops_eltwise.c). Binary ops broadcast as in NumPy/PyTorch.

bg_tensor *bg_add(bg_ctx *ctx, bg_tensor *a, bg_tensor *b);
bg_tensor *bg_sub(bg_ctx *ctx, bg_tensor *a, bg_tensor *b);
bg_tensor *bg_mul(bg_ctx *ctx, bg_tensor *a, bg_tensor *b);
bg_tensor *bg_div(bg_ctx *ctx, bg_tensor *a, bg_tensor *b);
bg_tensor *bg_scale(bg_ctx *ctx, bg_tensor *x, float s);          /* s * x */
bg_tensor *bg_neg(bg_ctx *ctx, bg_tensor *x);
bg_tensor *bg_exp(bg_ctx *ctx, bg_tensor *x);
bg_tensor *bg_log(bg_ctx *ctx, bg_tensor *x);
bg_tensor *bg_sqrt(bg_ctx *ctx, bg_tensor *x);
bg_tensor *bg_abs(bg_ctx *ctx, bg_tensor *x);
bg_tensor *bg_clamp(bg_ctx *ctx, bg_tensor *x, float lo, float hi); /* grad 1 inside [lo,hi] */
bg_tensor *bg_relu(bg_ctx *ctx, bg_tensor *x);
bg_tensor *bg_leaky_relu(bg_ctx *ctx, bg_tensor *x, float slope);
/* tanh_approx false: x*Phi(x) (erf); true: PyTorch's approximate='tanh'. */
bg_tensor *bg_gelu(bg_ctx *ctx, bg_tensor *x, bool tanh_approx);
bg_tensor *bg_silu(bg_ctx *ctx, bg_tensor *x);
bg_tensor *bg_sigmoid(bg_ctx *ctx, bg_tensor *x);
bg_tensor *bg_tanh(bg_ctx *ctx, bg_tensor *x);
/* Inverted dropout: zeroes with probability p, scales the rest by 1/(1-p).
 * Identity when p == 0. rng supplies the mask (seeded: reproducible). */
bg_tensor *bg_dropout(bg_ctx *ctx, bg_tensor *x, float p, bg_rng *rng);

// ---------------------------------------------------------------------------
// reductions and losses (ops_reduce.c). axis may be negative (-1 = last).

bg_tensor *bg_sum(bg_ctx *ctx, bg_tensor *x, int axis, bool keepdim);
bg_tensor *bg_mean(bg_ctx *ctx, bg_tensor *x, int axis, bool keepdim);
bg_tensor *bg_max(bg_ctx *ctx, bg_tensor *x, int axis, bool keepdim); /* grad to the first max */
bg_tensor *bg_sum_all(bg_ctx *ctx, bg_tensor *x);   /* shape [] (one element) */
bg_tensor *bg_mean_all(bg_ctx *ctx, bg_tensor *x);
/* Ties: the whole gradient goes to the first maximum in row-major order
 * (PyTorch spreads it evenly over the tied elements). */
bg_tensor *bg_max_all(bg_ctx *ctx, bg_tensor *x);
bg_tensor *bg_softmax(bg_ctx *ctx, bg_tensor *x, int axis);
bg_tensor *bg_log_softmax(bg_ctx *ctx, bg_tensor *x, int axis);

typedef struct bg_cross_entropy_opts {
    float label_smoothing;   /* 0 = none (PyTorch's definition) */
    int32_t ignore_index;    /* labels equal to it add nothing; default -100 */
} bg_cross_entropy_opts;
#define BG_CROSS_ENTROPY_DEFAULTS ((bg_cross_entropy_opts){.label_smoothing = 0.0f, .ignore_index = -100})

/* Mean cross-entropy of logits [N,C] against i32 labels [N] in [0,C).
 * opts may be NULL (defaults). Returns shape []. When every label is
 * ignore_index the loss is 0 with a zero gradient (PyTorch gives NaN): a
 * batch of padding alone leaves the model alone and does not trip the
 * trainer's non-finite check. */
bg_tensor *bg_cross_entropy(bg_ctx *ctx, bg_tensor *logits, bg_tensor *labels,
                            const bg_cross_entropy_opts *opts);
/* mean((a - b)^2), shape []; both inputs receive gradients. */
bg_tensor *bg_mse(bg_ctx *ctx, bg_tensor *a, bg_tensor *b);

// ---------------------------------------------------------------------------
// shapes (ops_shape.c)

bg_tensor *bg_reshape(bg_ctx *ctx, bg_tensor *x, int ndim, const int64_t *shape);
bg_tensor *bg_transpose(bg_ctx *ctx, bg_tensor *x, int d0, int d1);
bg_tensor *bg_permute(bg_ctx *ctx, bg_tensor *x, const int *perm);
/* Concatenates n tensors of equal shape but along axis. */
bg_tensor *bg_concat(bg_ctx *ctx, bg_tensor *const *xs, int n, int axis);
/* x[..., start:end, ...] along axis (end exclusive). */
bg_tensor *bg_slice(bg_ctx *ctx, bg_tensor *x, int axis, int64_t start, int64_t end);
/* weight [V,D], ids i32 of any shape with values in [0,V) -> [ids..., D]. */
bg_tensor *bg_embedding(bg_ctx *ctx, bg_tensor *weight, bg_tensor *ids);

// ---------------------------------------------------------------------------
// products (ops_matmul.c)

/* op(a) @ op(b), op = transpose of the last two dims when the flag is set.
 * a is [M,K] or [B...,M,K]; b is [K,N] (shared across the batch) or
 * [B...,K,N] with the same batch dims. */
bg_tensor *bg_matmul(bg_ctx *ctx, bg_tensor *a, bg_tensor *b, bool trans_a, bool trans_b);
/* x W^T + b: x [..., K], W [M,K], b [M] or NULL -> [..., M]. */
bg_tensor *bg_linear(bg_ctx *ctx, bg_tensor *x, bg_tensor *w, bg_tensor *b);
/* bg_linear of fake-quantized operands on integer kernels (ops_qlinear.c):
 * y = (cx cw^T) * sx * sw + b with the codes cx = nearbyint(xq/sx) clamped
 * to [-128,127] and cw = nearbyint(wq/sw) clamped to [-127,127], the int32
 * products exact (oneDNN s8 matmul, else the integer kernel table). When xq
 * and wq are the output of symmetric fake quants with these scales (BitNet's
 * per-token int8 and ternary, int8 sym ...) y equals bg_linear(xq, wq, b) up
 * to float rounding; the backward is bg_linear's (dxq = dy wq, dwq = dy^T
 * xq). x_scale: 1 or rows (per token) values, w_scale: 1 or M (per output
 * channel), all finite and > 0 (else BG_ERR_ARG). */
bg_tensor *bg_qlinear_int(bg_ctx *ctx, bg_tensor *xq, bg_tensor *wq, bg_tensor *b, const bg_tensor *x_scale,
                          const bg_tensor *w_scale);
/* The same with the codes given (I8 tensors of xq's and wq's shapes, as
 * bg_fake_quant_codes made them in its one pass) instead of recovered from
 * xq and wq; either may be NULL (recovered). The op the quantized layers
 * run: activations and weights are quantized once. */
bg_tensor *bg_qlinear_int_codes(bg_ctx *ctx, bg_tensor *xq, bg_tensor *wq, bg_tensor *b, const bg_tensor *x_codes,
                                const bg_tensor *x_scale, const bg_tensor *w_codes, const bg_tensor *w_scale);
/* Scaled dot-product attention softmax(q k^T / sqrt(D) + mask) v.
 * q [..., Tq, D], k and v [..., Tk, D]. Not causal: built from the ops above.
 * Causal: query i sees keys j <= i + Tk - Tq (the queries are the last Tq
 * of Tk positions; j <= i when Tq == Tk), Tq <= Tk, computed by the fused
 * bg_causal_attention with scale 1/sqrt(D); only k and v 2-D and shared by
 * a batched q take the composed path with a [Tq,Tk] mask tensor. */
bg_tensor *bg_attention(bg_ctx *ctx, bg_tensor *q, bg_tensor *k, bg_tensor *v, bool causal);

// ---------------------------------------------------------------------------
// transformer attention (ops_attention.c)

/* Rotary position embedding, NEOX mode (rotate halves, llama.cpp's `bitnet`
 * graph): x [..., T, hd] -> same shape; the row at time t of every leading
 * index is rotated by position pos0 + t: for i < hd/2, j = i + hd/2 and
 * a = (pos0 + t) * theta^(-2i/hd),
 *     y_i = x_i cos a - x_j sin a,   y_j = x_j cos a + x_i sin a.
 * Layout [..., H, T, hd] (time second to last: [B, H, T, hd], or the heads
 * folded into the batch [B*H, T, hd]): the layout bg_causal_attention takes,
 * so q and k go from the rotation to the attention without another copy,
 * and one [T, hd/2] table of angles serves every batch and head. Angles,
 * cos and sin in double, in the ctx's arena (no heap), each output rounded
 * once: within half an ulp of the float64 rotation at any position. The
 * backward is the inverse rotation. hd must be even (BG_ERR_SHAPE, "rope:
 * head dim 5 is odd (x is [2,3,5]): NEOX RoPE rotates the pairs (i, i +
 * hd/2)"), pos0 in [0, 2^48] and theta finite and > 0 (BG_ERR_ARG). */
bg_tensor *bg_rope(bg_ctx *ctx, bg_tensor *x, int64_t pos0, float theta);
/* Causal attention as one op: softmax(q k^T * scale + M) v, M = -inf where
 * key j > i + (Tk - Tq): the queries are the last Tq of Tk positions (Tq ==
 * Tk: the usual j > i; Tq < Tk: new queries over earlier keys). q
 * [..., Tq, D], k [..., Tk, D], v [..., Tk, Dv] -> [..., Tq, Dv], the
 * leading dims the same for all three, each leading index one head:
 * [B, H, T, hd], or [B*H, T, hd]. No [Tq,Tk] mask tensor: per head, blocks
 * of 32 query rows multiply only the keys they can see, the softmax runs in
 * place, and P = softmax(..) [..., Tq, Tk] is the one tensor kept for the
 * backward (none when no input requires grad). Heads are spread over the
 * OpenMP threads, each computed whole by one thread: results are the same
 * at any thread count. Errors (BG_ERR_SHAPE): Tq > Tk ("causal_attention:
 * causal attention needs at most as many queries as keys: q is [1,5,4], k
 * is [1,3,4] (query i sees keys j <= i + Tk - Tq)"), leading dims that
 * differ, head dims that differ, k and v of different lengths; a scale that
 * is not finite (BG_ERR_ARG). */
bg_tensor *bg_causal_attention(bg_ctx *ctx, bg_tensor *q, bg_tensor *k, bg_tensor *v, float scale);

// ---------------------------------------------------------------------------
// activation checkpointing: recomputed blocks (ops_recompute.c)

/* A block y = forward(ctx, user, x), y shaped like x, whose intermediate
 * values are recomputed in the backward instead of kept. The block may
 * update state as it runs (quantizer observers, their call counts): save
 * copies that state into the ctx's arena before the first run and restore
 * puts it back before the second, so both runs compute the same values.
 * Either may be NULL when the block updates nothing. */
typedef struct bg_recompute_fn {
    bg_tensor *(*forward)(bg_ctx *ctx, void *user, bg_tensor *x);
    void *(*save)(bg_ctx *ctx, void *user);
    void (*restore)(void *user, void *saved);
    void *user;
} bg_recompute_fn;

/* y = f(x), keeping only y: the block runs once here and once more in the
 * backward, each time on a tape and arena memory handed back when it ends,
 * so training keeps one block's activations at a time (plus every block's
 * output) for one more forward per step. Gradients equal the plain block's
 * bitwise. f (copied) and user must live until the backward. Without grad
 * mode, or when x does not require grad, f runs once and only y is kept
 * (evaluation and teachers hold one block's values at a time). Errors: a block
 * that changes the shape (BG_ERR_SHAPE, "recompute: the block must keep
 * the shape of its input: x is [2,3], f(x) is [2,4]") or returns no f32. */
bg_tensor *bg_recompute(bg_ctx *ctx, const bg_recompute_fn *f, bg_tensor *x);

// ---------------------------------------------------------------------------
// norms (ops_norm.c), over the last dim

bg_tensor *bg_layernorm(bg_ctx *ctx, bg_tensor *x, bg_tensor *w, bg_tensor *b, float eps);
bg_tensor *bg_rmsnorm(bg_ctx *ctx, bg_tensor *x, bg_tensor *w, float eps);

// ---------------------------------------------------------------------------
// convolution and pooling (ops_conv.c), NCHW

typedef struct bg_conv2d_opts {
    int64_t stride[2], padding[2], dilation[2], groups;
} bg_conv2d_opts;
#define BG_CONV2D_DEFAULTS \
    ((bg_conv2d_opts){.stride = {1, 1}, .padding = {0, 0}, .dilation = {1, 1}, .groups = 1})

/* x [N,C,H,W], w [OC,C/groups,KH,KW], b [OC] or NULL; opts NULL = defaults. */
bg_tensor *bg_conv2d(bg_ctx *ctx, bg_tensor *x, bg_tensor *w, bg_tensor *b,
                     const bg_conv2d_opts *opts);
/* PyTorch semantics; avg counts padding (count_include_pad=True); stride 0
 * means stride = kernel (PyTorch's default). */
bg_tensor *bg_max_pool2d(bg_ctx *ctx, bg_tensor *x, int64_t kernel, int64_t stride, int64_t padding);
bg_tensor *bg_avg_pool2d(bg_ctx *ctx, bg_tensor *x, int64_t kernel, int64_t stride, int64_t padding);

// ---------------------------------------------------------------------------
// quantization (ops_quant.c); specs and states are in quant/quant.h

struct bg_quant_spec;
struct bg_quant_state;

/* Fake quantization: y = dequantize(quantize(x)) under spec, same shape as
 * x (any strides), with the ranges of state (which may be NULL for
 * stateless specs: fixed, absmean, absmax). The forward observes x when the
 * state's observer is on and initialises learned parameters on first use;
 * when the state is disabled it returns x itself. Backward is the spec's
 * rule: identity STE, clipped STE (mask), LSQ / LSQ+ (dx masked, d scale and
 * d zero point into the state's parameters, PyTorch's formulas and
 * gradient scale), PACT (d alpha). The state must outlive the backward
 * (its parameters are the node's inputs). Errors: NULL + ctx error, e.g.
 * "fake_quant: group size 64 does not divide the last dim 100 of [8,100]". */
bg_tensor *bg_fake_quant(bg_ctx *ctx, bg_tensor *x, const struct bg_quant_spec *spec,
                         struct bg_quant_state *state);
/* bg_fake_quant that also hands out what its one kernel pass made: *codes,
 * the integer codes (an arena tensor of x's shape, I8 when params->qmin < 0,
 * else U8), and *params, the scales, zero points, code range and
 * [outer, channels, inner] view it used (quant/quant.h). When the state is
 * disabled it returns x with *codes NULL. */
struct bg_quant_params;
bg_tensor *bg_fake_quant_codes(bg_ctx *ctx, bg_tensor *x, const struct bg_quant_spec *spec,
                               struct bg_quant_state *state, bg_tensor **codes, struct bg_quant_params *params);

// ---------------------------------------------------------------------------
// gradient check

typedef struct bg_gradcheck_report {
    int input;            /* index of the worst input */
    int64_t index;        /* flat index of the worst element */
    double analytic, numeric;
    double max_abs_err, max_rel_err;
    int64_t checked;      /* elements compared */
    int64_t failed;       /* elements outside atol + rtol*|numeric| */
} bg_gradcheck_report;

/* f builds an output from inputs on ctx (it may use user). */
typedef bg_tensor *(*bg_gradcheck_fn)(bg_ctx *ctx, bg_tensor *const *inputs, void *user);

/* Compares the tape's gradient of loss = sum(f(inputs) * R), R fixed random
 * (seeded), with central differences (step eps, accumulated in double) for
 * every element of every input that requires grad. Inputs must be persistent
 * f32 tensors; their grads are zeroed and overwritten. Returns BG_OK when
 * every element satisfies |analytic - numeric| <= atol + rtol*|numeric|,
 * BG_ERR_STATE otherwise (report holds the worst element), or the error f
 * raised. */
bg_status bg_gradcheck(bg_gradcheck_fn f, bg_tensor *const *inputs, int n_inputs, void *user,
                       double eps, double atol, double rtol, bg_gradcheck_report *report);

#ifdef __cplusplus
}
#endif
#endif /* BG_AUTOGRAD_H */
