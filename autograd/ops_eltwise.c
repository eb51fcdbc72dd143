/* ops_eltwise.c — element-wise autograd ops: add/sub/mul/div with NumPy
 * broadcasting, scale, neg, exp, log, sqrt, abs, clamp, relu, leaky_relu,
 * gelu, silu, sigmoid, tanh, dropout. Calls tensor/, kernels/ (through
 * kernels.h) and the broadcasting helpers of broadcast.c. */
#include <math.h>
#include <string.h>

#include "autograd/autograd_internal.h"
#include "kernels/kernels.h"

// ---------------------------------------------------------------------------
// binary ops with broadcasting

typedef enum binop { BIN_ADD, BIN_SUB, BIN_MUL, BIN_DIV } binop;

/* y (contiguous, padded shape sh) = a op b, a and b read through padded
 * strides sa, sb (0 along broadcast dims). The scalar path for broadcasts
 * that are not "rows" and for non-contiguous inputs. */
#define STRIDED_LOOP(EXPR)                                                              \
    for (int64_t i0 = 0; i0 < sh[0]; i0++)                                              \
        for (int64_t i1 = 0; i1 < sh[1]; i1++)                                          \
            for (int64_t i2 = 0; i2 < sh[2]; i2++) {                                    \
                const float *pa = a + i0 * sa[0] + i1 * sa[1] + i2 * sa[2];             \
                const float *pb = b + i0 * sb[0] + i1 * sb[1] + i2 * sb[2];             \
                for (int64_t i3 = 0; i3 < sh[3]; i3++) {                                \
                    float x = pa[i3 * sa[3]], z = pb[i3 * sb[3]];                       \
                    *y++ = (EXPR);                                                      \
                }                                                                       \
            }

static void binary_strided(binop op, float *y, const int64_t sh[4], const float *a,
                           const int64_t sa[4], const float *b, const int64_t sb[4]) {
    switch (op) {
    case BIN_ADD: STRIDED_LOOP(x + z); break;
    case BIN_SUB: STRIDED_LOOP(x - z); break;
    case BIN_MUL: STRIDED_LOOP(x * z); break;
    case BIN_DIV: STRIDED_LOOP(x / z); break;
    }
}
#undef STRIDED_LOOP

typedef void (*bin_kernel)(float *y, const float *a, const float *b, int64_t n);

static bin_kernel kernel_of(binop op) {
    const bg_kernels *k = bg_kernels_get();
    switch (op) {
    case BIN_ADD: return k->add;
    case BIN_SUB: return k->sub;
    case BIN_MUL: return k->mul;
    case BIN_DIV: return k->div;
    }
    return k->add;
}

/* y = a op b where y (contiguous) has the broadcast shape of a and b, which
 * may have any strides. Fast paths: same shape (one kernel call) and one
 * side broadcast along rows ([N,M] op [M]: one kernel call per row). Returns
 * false when a contiguous copy failed (the ctx error is set). */
static bool binary_apply(bg_ctx *ctx, binop op, bg_tensor *y, bg_tensor *a, bg_tensor *b) {
    int64_t n = bg_numel(y);
    if (n == 0) return true;
    bin_kernel kern = kernel_of(op);
    bool a_full = bg_same_shape(a, y), b_full = bg_same_shape(b, y);
    if (a_full && b_full) {
        bg_tensor *ac = bg_contiguous(ctx, a), *bc = bg_contiguous(ctx, b);
        if (!ac || !bc) return false;
        kern(bg_f32(y), bg_f32(ac), bg_f32(bc), n);
        return true;
    }
    if (a_full && bg_is_contiguous(a) && bg_is_contiguous(b) &&
        bg_is_row_broadcast(b->ndim, b->shape, y->ndim, y->shape)) {
        int64_t m = bg_numel(b);
        for (int64_t r = 0; r < n / m; r++) kern(bg_f32(y) + r * m, bg_f32(a) + r * m, bg_f32(b), m);
        return true;
    }
    if (b_full && bg_is_contiguous(a) && bg_is_contiguous(b) &&
        bg_is_row_broadcast(a->ndim, a->shape, y->ndim, y->shape)) {
        int64_t m = bg_numel(a);
        for (int64_t r = 0; r < n / m; r++) kern(bg_f32(y) + r * m, bg_f32(a), bg_f32(b) + r * m, m);
        return true;
    }
    int64_t sh[4] = {1, 1, 1, 1}, sa[4], sb[4];
    for (int i = 0; i < y->ndim; i++) sh[4 - y->ndim + i] = y->shape[i];
    bg_broadcast_strides(a, y->ndim, y->shape, sa);
    bg_broadcast_strides(b, y->ndim, y->shape, sb);
    binary_strided(op, bg_f32(y), sh, bg_f32(a), sa, bg_f32(b), sb);
    return true;
}

static bg_tensor *binary(bg_ctx *ctx, bg_op id, binop op, const char *name, bg_tensor *a,
                         bg_tensor *b) {
    if (!bg_check_f32(ctx, name, a, "a") || !bg_check_f32(ctx, name, b, "b")) return NULL;
    int nd;
    int64_t shape[BG_MAX_DIMS];
    if (!bg_broadcast_shapes(a->ndim, a->shape, b->ndim, b->shape, &nd, shape)) {
        char sa[BG_SHAPE_STR_MAX], sb[BG_SHAPE_STR_MAX];
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "%s: shapes cannot broadcast: a is %s, b is %s", name,
                           bg_shape_str(a, sa, sizeof sa), bg_shape_str(b, sb, sizeof sb));
    }
    bg_tensor *y = bg_out(ctx, nd, shape);
    if (!y || !binary_apply(ctx, op, y, a, b)) return NULL;
    bg_record(ctx, id, y, 2, (bg_tensor *[]){a, b});
    return bg_ctx_status(ctx) == BG_OK ? y : NULL;
}

/* dout op v (broadcast) into a new arena tensor shaped like out. */
static bg_tensor *dout_times(bg_ctx *ctx, binop op, bg_node *n, bg_tensor *v) {
    bg_tensor *t = bg_out(ctx, n->out->ndim, n->out->shape);
    if (!t || !binary_apply(ctx, op, t, n->out->grad, v)) return NULL;
    return t;
}

/* da += sum_to(a.shape, alpha * g), g shaped like out. */
static void reduce_into(bg_ctx *ctx, bg_node *n, int which, const bg_tensor *g, float alpha) {
    bg_tensor *x = n->in[which];
    float *dx = bg_grad_of(ctx, x);
    if (!dx) return;
    bg_sum_to_shape(dx, x->ndim, x->shape, bg_f32(g), g->ndim, g->shape, alpha);
}

/* y = a + b, broadcast; a [..], b [..] -> broadcast shape */
bg_tensor *bg_add(bg_ctx *ctx, bg_tensor *a, bg_tensor *b) {
    return binary(ctx, BG_OP_ADD, BIN_ADD, "add", a, b);
}

/* da += sum_to(a, dy); db += sum_to(b, dy) */
void bg_op_add_backward(bg_ctx *ctx, bg_node *n) {
    reduce_into(ctx, n, 0, n->out->grad, 1.0f);
    reduce_into(ctx, n, 1, n->out->grad, 1.0f);
}

/* y = a - b, broadcast */
bg_tensor *bg_sub(bg_ctx *ctx, bg_tensor *a, bg_tensor *b) {
    return binary(ctx, BG_OP_SUB, BIN_SUB, "sub", a, b);
}

/* da += sum_to(a, dy); db -= sum_to(b, dy) */
void bg_op_sub_backward(bg_ctx *ctx, bg_node *n) {
    reduce_into(ctx, n, 0, n->out->grad, 1.0f);
    reduce_into(ctx, n, 1, n->out->grad, -1.0f);
}

/* y = a * b, broadcast */
bg_tensor *bg_mul(bg_ctx *ctx, bg_tensor *a, bg_tensor *b) {
    return binary(ctx, BG_OP_MUL, BIN_MUL, "mul", a, b);
}

/* da += sum_to(a, dy * b); db += sum_to(b, dy * a) */
void bg_op_mul_backward(bg_ctx *ctx, bg_node *n) {
    bg_tensor *a = n->in[0], *b = n->in[1];
    if (a->requires_grad) {
        bg_tensor *t = dout_times(ctx, BIN_MUL, n, b);
        if (t) reduce_into(ctx, n, 0, t, 1.0f);
    }
    if (b->requires_grad) {
        bg_tensor *t = dout_times(ctx, BIN_MUL, n, a);
        if (t) reduce_into(ctx, n, 1, t, 1.0f);
    }
}

/* y = a / b, broadcast */
bg_tensor *bg_div(bg_ctx *ctx, bg_tensor *a, bg_tensor *b) {
    return binary(ctx, BG_OP_DIV, BIN_DIV, "div", a, b);
}

/* da += sum_to(a, dy / b); db -= sum_to(b, dy * (a/b) / b), i.e. dy * y / b
 * (PyTorch's form, which reuses y = a / b). */
void bg_op_div_backward(bg_ctx *ctx, bg_node *n) {
    bg_tensor *a = n->in[0], *b = n->in[1];
    if (a->requires_grad) {
        bg_tensor *t = dout_times(ctx, BIN_DIV, n, b);
        if (t) reduce_into(ctx, n, 0, t, 1.0f);
    }
    if (b->requires_grad) {
        bg_tensor *t = bg_out(ctx, n->out->ndim, n->out->shape);
        if (!t) return;
        int64_t cnt = bg_numel(t);
        const float *dy = bg_f32(n->out->grad), *y = bg_f32(n->out);
        float *tp = bg_f32(t);
        for (int64_t i = 0; i < cnt; i++) tp[i] = dy[i] * y[i];
        if (!binary_apply(ctx, BIN_DIV, t, t, b)) return;
        reduce_into(ctx, n, 1, t, -1.0f);
    }
}

// ---------------------------------------------------------------------------
// unary ops

/* Checks x, makes it contiguous (*xc) and allocates y shaped like x. */
static bg_tensor *unary_begin(bg_ctx *ctx, const char *name, bg_tensor *x, bg_tensor **xc) {
    if (!bg_check_f32(ctx, name, x, "x")) return NULL;
    *xc = bg_contiguous(ctx, x);
    if (!*xc) return NULL;
    return bg_out(ctx, x->ndim, x->shape);
}

/* Records a one-input node saving xc; returns y, or NULL when recording
 * failed (out of memory). */
static bg_tensor *unary_end(bg_ctx *ctx, bg_op id, bg_tensor *y, bg_tensor *x, bg_tensor *xc,
                            bg_node **node) {
    bg_node *n = bg_record(ctx, id, y, 1, &x);
    if (n) n->saved[0] = xc;
    if (node) *node = n;
    return bg_ctx_status(ctx) == BG_OK ? y : NULL;
}

/* The pieces every unary backward uses: dx (NULL when x needs no grad), dy,
 * the saved input, the output and the element count. */
typedef struct unary_bw {
    float *dx;
    const float *dy, *x, *y;
    int64_t n;
} unary_bw;

static bool unary_bw_get(bg_ctx *ctx, bg_node *n, unary_bw *u) {
    u->dx = bg_grad_of(ctx, n->in[0]);
    if (!u->dx) return false;
    u->dy = bg_f32(n->out->grad);
    u->x = n->saved[0] ? bg_f32(n->saved[0]) : NULL;
    u->y = bg_f32(n->out);
    u->n = bg_numel(n->out);
    return true;
}

typedef struct scale_args { float s; } scale_args;
BG_ARGS_FIT(scale_args);

/* y = s * x */
bg_tensor *bg_scale(bg_ctx *ctx, bg_tensor *x, float s) {
    bg_tensor *xc, *y = unary_begin(ctx, "scale", x, &xc);
    if (!y) return NULL;
    bg_kernels_get()->scale(bg_f32(y), bg_f32(xc), s, bg_numel(y));
    bg_node *n;
    y = unary_end(ctx, BG_OP_SCALE, y, x, NULL, &n);
    if (n) BG_ARGS(n, scale_args)->s = s;
    return y;
}

/* dx += s * dy */
void bg_op_scale_backward(bg_ctx *ctx, bg_node *n) {
    unary_bw u;
    if (unary_bw_get(ctx, n, &u)) bg_kernels_get()->axpy(u.dx, u.dy, BG_ARGS(n, scale_args)->s, u.n);
}

/* y = -x */
bg_tensor *bg_neg(bg_ctx *ctx, bg_tensor *x) {
    bg_tensor *xc, *y = unary_begin(ctx, "neg", x, &xc);
    if (!y) return NULL;
    bg_kernels_get()->scale(bg_f32(y), bg_f32(xc), -1.0f, bg_numel(y));
    return unary_end(ctx, BG_OP_NEG, y, x, NULL, NULL);
}

/* dx -= dy */
void bg_op_neg_backward(bg_ctx *ctx, bg_node *n) {
    unary_bw u;
    if (unary_bw_get(ctx, n, &u)) bg_kernels_get()->axpy(u.dx, u.dy, -1.0f, u.n);
}

/* y = e^x */
bg_tensor *bg_exp(bg_ctx *ctx, bg_tensor *x) {
    bg_tensor *xc, *y = unary_begin(ctx, "exp", x, &xc);
    if (!y) return NULL;
    bg_kernels_get()->exp(bg_f32(y), bg_f32(xc), bg_numel(y));
    return unary_end(ctx, BG_OP_EXP, y, x, NULL, NULL);
}

/* y = e^x  =>  dx += dy * y */
void bg_op_exp_backward(bg_ctx *ctx, bg_node *n) {
    unary_bw u;
    if (!unary_bw_get(ctx, n, &u)) return;
    for (int64_t i = 0; i < u.n; i++) u.dx[i] += u.dy[i] * u.y[i];
}

/* y = ln x (x <= 0 gives -inf / NaN, as in PyTorch) */
bg_tensor *bg_log(bg_ctx *ctx, bg_tensor *x) {
    bg_tensor *xc, *y = unary_begin(ctx, "log", x, &xc);
    if (!y) return NULL;
    const float *xp = bg_f32(xc);
    float *yp = bg_f32(y);
    for (int64_t i = 0, n = bg_numel(y); i < n; i++) yp[i] = logf(xp[i]);
    return unary_end(ctx, BG_OP_LOG, y, x, xc, NULL);
}

/* y = ln x  =>  dx += dy / x */
void bg_op_log_backward(bg_ctx *ctx, bg_node *n) {
    unary_bw u;
    if (!unary_bw_get(ctx, n, &u)) return;
    for (int64_t i = 0; i < u.n; i++) u.dx[i] += u.dy[i] / u.x[i];
}

/* y = sqrt(x) (x < 0 gives NaN, as in PyTorch) */
bg_tensor *bg_sqrt(bg_ctx *ctx, bg_tensor *x) {
    bg_tensor *xc, *y = unary_begin(ctx, "sqrt", x, &xc);
    if (!y) return NULL;
    const float *xp = bg_f32(xc);
    float *yp = bg_f32(y);
    for (int64_t i = 0, n = bg_numel(y); i < n; i++) yp[i] = sqrtf(xp[i]);
    return unary_end(ctx, BG_OP_SQRT, y, x, NULL, NULL);
}

/* y = sqrt(x)  =>  dx += dy / (2 y) */
void bg_op_sqrt_backward(bg_ctx *ctx, bg_node *n) {
    unary_bw u;
    if (!unary_bw_get(ctx, n, &u)) return;
    for (int64_t i = 0; i < u.n; i++) u.dx[i] += u.dy[i] / (2.0f * u.y[i]);
}

/* y = |x| */
bg_tensor *bg_abs(bg_ctx *ctx, bg_tensor *x) {
    bg_tensor *xc, *y = unary_begin(ctx, "abs", x, &xc);
    if (!y) return NULL;
    const float *xp = bg_f32(xc);
    float *yp = bg_f32(y);
    for (int64_t i = 0, n = bg_numel(y); i < n; i++) yp[i] = fabsf(xp[i]);
    return unary_end(ctx, BG_OP_ABS, y, x, xc, NULL);
}

/* y = |x|  =>  dx += dy * sign(x), sign(0) = 0 (PyTorch's sgn) */
void bg_op_abs_backward(bg_ctx *ctx, bg_node *n) {
    unary_bw u;
    if (!unary_bw_get(ctx, n, &u)) return;
    for (int64_t i = 0; i < u.n; i++) {
        float s = u.x[i] > 0.0f ? 1.0f : u.x[i] < 0.0f ? -1.0f : 0.0f;
        u.dx[i] += u.dy[i] * s;
    }
}

typedef struct clamp_args { float lo, hi; } clamp_args;
BG_ARGS_FIT(clamp_args);

/* y = min(max(x, lo), hi); NaN in x stays NaN. lo > hi (or a NaN bound) is an
 * error rather than PyTorch's "everything becomes hi". */
bg_tensor *bg_clamp(bg_ctx *ctx, bg_tensor *x, float lo, float hi) {
    if (ctx && ctx->status == BG_OK && !(lo <= hi))
        return bg_ctx_fail(ctx, BG_ERR_ARG, "clamp: lo must not exceed hi: lo is %g, hi is %g",
                           (double)lo, (double)hi);
    bg_tensor *xc, *y = unary_begin(ctx, "clamp", x, &xc);
    if (!y) return NULL;
    const float *xp = bg_f32(xc);
    float *yp = bg_f32(y);
    for (int64_t i = 0, n = bg_numel(y); i < n; i++)
        yp[i] = xp[i] < lo ? lo : xp[i] > hi ? hi : xp[i];
    bg_node *nd;
    y = unary_end(ctx, BG_OP_CLAMP, y, x, xc, &nd);
    if (nd) *BG_ARGS(nd, clamp_args) = (clamp_args){.lo = lo, .hi = hi};
    return y;
}

/* dx += dy * (lo <= x <= hi): inclusive at both ends, as PyTorch's clamp
 * backward (so a value sitting exactly on a bound still learns). */
void bg_op_clamp_backward(bg_ctx *ctx, bg_node *n) {
    unary_bw u;
    if (!unary_bw_get(ctx, n, &u)) return;
    const float lo = BG_ARGS(n, clamp_args)->lo, hi = BG_ARGS(n, clamp_args)->hi;
    for (int64_t i = 0; i < u.n; i++)
        if (u.x[i] >= lo && u.x[i] <= hi) u.dx[i] += u.dy[i];
}

/* y = max(0, x) */
bg_tensor *bg_relu(bg_ctx *ctx, bg_tensor *x) {
    bg_tensor *xc, *y = unary_begin(ctx, "relu", x, &xc);
    if (!y) return NULL;
    bg_kernels_get()->relu_forward(bg_f32(y), bg_f32(xc), bg_numel(y));
    return unary_end(ctx, BG_OP_RELU, y, x, xc, NULL);
}

/* dx += dy * (x > 0) */
void bg_op_relu_backward(bg_ctx *ctx, bg_node *n) {
    unary_bw u;
    if (unary_bw_get(ctx, n, &u)) bg_kernels_get()->relu_backward(u.dx, u.x, u.dy, u.n);
}

typedef struct leaky_args { float slope; } leaky_args;
BG_ARGS_FIT(leaky_args);

/* y = x > 0 ? x : slope * x */
bg_tensor *bg_leaky_relu(bg_ctx *ctx, bg_tensor *x, float slope) {
    bg_tensor *xc, *y = unary_begin(ctx, "leaky_relu", x, &xc);
    if (!y) return NULL;
    const float *xp = bg_f32(xc);
    float *yp = bg_f32(y);
    for (int64_t i = 0, n = bg_numel(y); i < n; i++) yp[i] = xp[i] > 0.0f ? xp[i] : slope * xp[i];
    bg_node *nd;
    y = unary_end(ctx, BG_OP_LEAKY_RELU, y, x, xc, &nd);
    if (nd) BG_ARGS(nd, leaky_args)->slope = slope;
    return y;
}

/* dx += dy * (x > 0 ? 1 : slope) */
void bg_op_leaky_relu_backward(bg_ctx *ctx, bg_node *n) {
    unary_bw u;
    if (!unary_bw_get(ctx, n, &u)) return;
    const float slope = BG_ARGS(n, leaky_args)->slope;
    for (int64_t i = 0; i < u.n; i++) u.dx[i] += u.x[i] > 0.0f ? u.dy[i] : slope * u.dy[i];
}

typedef struct gelu_args { bool tanh_approx; } gelu_args;
BG_ARGS_FIT(gelu_args);

/* erf form: y = x * Phi(x) = x/2 * (1 + erf(x/sqrt 2));
 * tanh form: y = x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))).
 * The node keeps which form (gelu_args). */
bg_tensor *bg_gelu(bg_ctx *ctx, bg_tensor *x, bool tanh_approx) {
    bg_tensor *xc, *y = unary_begin(ctx, "gelu", x, &xc);
    if (!y) return NULL;
    const bg_kernels *k = bg_kernels_get();
    (tanh_approx ? k->gelu_tanh_forward : k->gelu_forward)(bg_f32(y), bg_f32(xc), bg_numel(y));
    bg_node *nd;
    y = unary_end(ctx, BG_OP_GELU, y, x, xc, &nd);
    if (nd) BG_ARGS(nd, gelu_args)->tanh_approx = tanh_approx;
    return y;
}

/* dx += dy * gelu'(x), in the form the forward used */
void bg_op_gelu_backward(bg_ctx *ctx, bg_node *n) {
    unary_bw u;
    if (!unary_bw_get(ctx, n, &u)) return;
    const bg_kernels *k = bg_kernels_get();
    (BG_ARGS(n, gelu_args)->tanh_approx ? k->gelu_tanh_backward : k->gelu_backward)(u.dx, u.x, u.dy, u.n);
}

/* y = x * sigmoid(x) */
bg_tensor *bg_silu(bg_ctx *ctx, bg_tensor *x) {
    bg_tensor *xc, *y = unary_begin(ctx, "silu", x, &xc);
    if (!y) return NULL;
    bg_kernels_get()->silu_forward(bg_f32(y), bg_f32(xc), bg_numel(y));
    return unary_end(ctx, BG_OP_SILU, y, x, xc, NULL);
}

/* dx += dy * s(x) * (1 + x (1 - s(x))) */
void bg_op_silu_backward(bg_ctx *ctx, bg_node *n) {
    unary_bw u;
    if (unary_bw_get(ctx, n, &u)) bg_kernels_get()->silu_backward(u.dx, u.x, u.dy, u.n);
}

/* y = 1 / (1 + e^-x) */
bg_tensor *bg_sigmoid(bg_ctx *ctx, bg_tensor *x) {
    bg_tensor *xc, *y = unary_begin(ctx, "sigmoid", x, &xc);
    if (!y) return NULL;
    bg_kernels_get()->sigmoid_forward(bg_f32(y), bg_f32(xc), bg_numel(y));
    return unary_end(ctx, BG_OP_SIGMOID, y, x, NULL, NULL);
}

/* dx += dy * y * (1 - y) */
void bg_op_sigmoid_backward(bg_ctx *ctx, bg_node *n) {
    unary_bw u;
    if (!unary_bw_get(ctx, n, &u)) return;
    for (int64_t i = 0; i < u.n; i++) u.dx[i] += u.dy[i] * u.y[i] * (1.0f - u.y[i]);
}

/* y = tanh(x) */
bg_tensor *bg_tanh(bg_ctx *ctx, bg_tensor *x) {
    bg_tensor *xc, *y = unary_begin(ctx, "tanh", x, &xc);
    if (!y) return NULL;
    bg_kernels_get()->tanh_forward(bg_f32(y), bg_f32(xc), bg_numel(y));
    return unary_end(ctx, BG_OP_TANH, y, x, NULL, NULL);
}

/* dx += dy * (1 - y^2) */
void bg_op_tanh_backward(bg_ctx *ctx, bg_node *n) {
    unary_bw u;
    if (!unary_bw_get(ctx, n, &u)) return;
    for (int64_t i = 0; i < u.n; i++) u.dx[i] += u.dy[i] * (1.0f - u.y[i] * u.y[i]);
}

// ---------------------------------------------------------------------------
// dropout

/* Inverted dropout: y = x * m, m_i = (u_i >= p) / (1 - p) with u_i =
 * bg_rng_uniform(rng) drawn once per element in row-major order (so a seeded
 * rng gives the same mask on any thread count). p == 0 returns x itself: no
 * copy, no node, no draws. saved[0] is the mask m. */
bg_tensor *bg_dropout(bg_ctx *ctx, bg_tensor *x, float p, bg_rng *rng) {
    if (!bg_check_f32(ctx, "dropout", x, "x")) return NULL;
    if (!(p >= 0.0f && p < 1.0f))
        return bg_ctx_fail(ctx, BG_ERR_ARG, "dropout: p must be in [0, 1): p is %g", (double)p);
    if (p == 0.0f) return x;
    if (!rng) return bg_ctx_fail(ctx, BG_ERR_ARG, "dropout: rng is NULL");
    bg_tensor *xc, *y = unary_begin(ctx, "dropout", x, &xc);
    bg_tensor *m = y ? bg_out(ctx, x->ndim, x->shape) : NULL;
    if (!m) return NULL;
    float keep = 1.0f / (1.0f - p), *mp = bg_f32(m);
    int64_t n = bg_numel(y);
    for (int64_t i = 0; i < n; i++) mp[i] = bg_rng_uniform(rng) >= p ? keep : 0.0f;
    bg_kernels_get()->mul(bg_f32(y), bg_f32(xc), mp, n);
    bg_node *nd;
    return unary_end(ctx, BG_OP_DROPOUT, y, x, m, &nd);   // the mask m is all the backward needs
}

/* dx += dy * m */
void bg_op_dropout_backward(bg_ctx *ctx, bg_node *n) {
    unary_bw u;
    if (!unary_bw_get(ctx, n, &u)) return;
    for (int64_t i = 0; i < u.n; i++) u.dx[i] += u.dy[i] * u.x[i];
}
