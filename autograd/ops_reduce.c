/* ops_reduce.c — reductions and losses: sum/mean/max over an axis or over
 * everything, softmax and log_softmax over any axis, cross_entropy, mse.
 * Calls tensor/ and kernels/ (through kernels.h). */
#include <math.h>
#include <string.h>

#include "autograd/autograd_internal.h"
#include "kernels/kernels.h"

// ---------------------------------------------------------------------------
// shared: an axis splits a contiguous tensor into [outer, len, inner]

typedef struct axis_split {
    int64_t outer, len, inner;
} axis_split;

static axis_split split_at(const bg_tensor *x, int axis) {
    axis_split s = {1, x->shape[axis], 1};
    for (int i = 0; i < axis; i++) s.outer *= x->shape[i];
    for (int i = axis + 1; i < x->ndim; i++) s.inner *= x->shape[i];
    return s;
}

/* The whole tensor as one axis. */
static axis_split split_all(const bg_tensor *x) { return (axis_split){1, bg_numel(x), 1}; }

/* x's shape with axis removed (or kept as 1). */
static int reduced_shape(const bg_tensor *x, int axis, bool keepdim, int64_t *shape) {
    int nd = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (i != axis)
            shape[nd++] = x->shape[i];
        else if (keepdim)
            shape[nd++] = 1;
    }
    return nd;
}

/* The reductions' values: the axis split, and sum / mean's scale. */
typedef struct reduce_args {
    axis_split split;
    float scale;
} reduce_args;
BG_ARGS_FIT(reduce_args);

static void save_split(bg_node *n, axis_split s) { BG_ARGS(n, reduce_args)->split = s; }

static axis_split load_split(const bg_node *n) { return BG_ARGS(n, reduce_args)->split; }

// ---------------------------------------------------------------------------
// sum and mean

/* y[o,i] = scale * sum_r x[o,r,i] (x contiguous [outer,len,inner]); the sum
 * goes through the kernel table (sum: double accumulation; col_sum). */
static void sum_forward(float *y, const float *x, axis_split s, float scale) {
    const bg_kernels *k = bg_kernels_get();
    if (s.inner == 1) {
        for (int64_t o = 0; o < s.outer; o++) y[o] = s.len ? k->sum(x + o * s.len, s.len) : 0.0f;
    } else {
        memset(y, 0, sizeof *y * (size_t)(s.outer * s.inner));
        if (s.len)
            for (int64_t o = 0; o < s.outer; o++)
                k->col_sum(y + o * s.inner, x + o * s.len * s.inner, s.len, s.inner);
    }
    if (scale != 1.0f) k->scale(y, y, scale, s.outer * s.inner);
}

/* Mean over an empty axis is NaN (0/0), as in PyTorch. */
static float mean_scale(int64_t len) { return len ? 1.0f / (float)len : NAN; }

static bg_tensor *reduce_sum(bg_ctx *ctx, bg_op id, const char *name, bg_tensor *x, int axis,
                             bool keepdim, bool all) {
    if (!bg_check_f32(ctx, name, x, "x")) return NULL;
    if (!all && !bg_check_axis(ctx, name, x, &axis)) return NULL;
    bg_tensor *xc = bg_contiguous(ctx, x);
    if (!xc) return NULL;
    int64_t shape[BG_MAX_DIMS] = {0};
    int nd = all ? 0 : reduced_shape(x, axis, keepdim, shape);
    bg_tensor *y = bg_out(ctx, nd, shape);
    if (!y) return NULL;
    axis_split s = all ? split_all(x) : split_at(x, axis);
    float scale = id == BG_OP_MEAN ? mean_scale(s.len) : 1.0f;
    sum_forward(bg_f32(y), bg_f32(xc), s, scale);
    bg_node *n = bg_record(ctx, id, y, 1, &x);
    if (n) {
        save_split(n, s);
        BG_ARGS(n, reduce_args)->scale = scale;
    }
    return bg_ctx_status(ctx) == BG_OK ? y : NULL;
}

/* y = sum_axis x; x [.., L, ..] -> [.., ..] (or [.., 1, ..] with keepdim) */
bg_tensor *bg_sum(bg_ctx *ctx, bg_tensor *x, int axis, bool keepdim) {
    return reduce_sum(ctx, BG_OP_SUM, "sum", x, axis, keepdim, false);
}

/* y = sum x over every element -> [] */
bg_tensor *bg_sum_all(bg_ctx *ctx, bg_tensor *x) {
    return reduce_sum(ctx, BG_OP_SUM, "sum_all", x, 0, false, true);
}

/* y = (1/L) sum_axis x */
bg_tensor *bg_mean(bg_ctx *ctx, bg_tensor *x, int axis, bool keepdim) {
    return reduce_sum(ctx, BG_OP_MEAN, "mean", x, axis, keepdim, false);
}

/* y = mean of every element -> [] */
bg_tensor *bg_mean_all(bg_ctx *ctx, bg_tensor *x) {
    return reduce_sum(ctx, BG_OP_MEAN, "mean_all", x, 0, false, true);
}

/* y[o,i] = scale * sum_r x[o,r,i]  =>  dx[o,r,i] += scale * dy[o,i] */
static void sum_backward(bg_ctx *ctx, bg_node *n) {
    float *dx = bg_grad_of(ctx, n->in[0]);
    if (!dx) return;
    const bg_kernels *k = bg_kernels_get();
    const float *dy = bg_f32(n->out->grad);
    axis_split s = load_split(n);
    float scale = BG_ARGS(n, reduce_args)->scale;
    for (int64_t o = 0; o < s.outer; o++) {
        float *row = dx + o * s.len * s.inner;
        if (s.inner == 1) {
            k->add_scalar(row, row, scale * dy[o], s.len);
        } else {
            for (int64_t r = 0; r < s.len; r++)
                k->axpy(row + r * s.inner, dy + o * s.inner, scale, s.inner);
        }
    }
}

void bg_op_sum_backward(bg_ctx *ctx, bg_node *n) { sum_backward(ctx, n); }
void bg_op_mean_backward(bg_ctx *ctx, bg_node *n) { sum_backward(ctx, n); }

// ---------------------------------------------------------------------------
// max

/* y[o,i] = max_r x[o,r,i], idx[o,i] = the first r reaching it (a NaN counts
 * as the maximum, so it propagates as in PyTorch). */
static void max_forward(float *y, int64_t *idx, const float *x, axis_split s) {
    for (int64_t o = 0; o < s.outer; o++)
        for (int64_t i = 0; i < s.inner; i++) {
            const float *p = x + o * s.len * s.inner + i;
            float best = p[0];
            int64_t arg = 0;
            for (int64_t r = 1; r < s.len && !isnan(best); r++) {
                float v = p[r * s.inner];
                if (v > best || isnan(v)) {
                    best = v;
                    arg = r;
                }
            }
            y[o * s.inner + i] = best;
            idx[o * s.inner + i] = arg;
        }
}

static bg_tensor *reduce_max(bg_ctx *ctx, const char *name, bg_tensor *x, int axis, bool keepdim,
                             bool all) {
    if (!bg_check_f32(ctx, name, x, "x")) return NULL;
    if (!all && !bg_check_axis(ctx, name, x, &axis)) return NULL;
    axis_split s = all ? split_all(x) : split_at(x, axis);
    if (s.len == 0) {
        char sx[BG_SHAPE_STR_MAX];
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "%s: cannot reduce over zero elements: x is %s", name,
                           bg_shape_str(x, sx, sizeof sx));
    }
    bg_tensor *xc = bg_contiguous(ctx, x);
    if (!xc) return NULL;
    int64_t shape[BG_MAX_DIMS] = {0};
    int nd = all ? 0 : reduced_shape(x, axis, keepdim, shape);
    bg_tensor *y = bg_out(ctx, nd, shape);
    int64_t *idx = y ? bg_ctx_alloc(ctx, sizeof *idx * (size_t)(s.outer * s.inner)) : NULL;
    if (!idx) return NULL;
    max_forward(bg_f32(y), idx, bg_f32(xc), s);
    bg_node *n = bg_record(ctx, BG_OP_MAX, y, 1, &x);
    if (n) {
        save_split(n, s);
        n->extra = idx;
    }
    return bg_ctx_status(ctx) == BG_OK ? y : NULL;
}

/* y = max_axis x; the gradient goes to the first maximum only. */
bg_tensor *bg_max(bg_ctx *ctx, bg_tensor *x, int axis, bool keepdim) {
    return reduce_max(ctx, "max", x, axis, keepdim, false);
}

/* y = max of every element -> []; the gradient goes to the first maximum
 * (PyTorch's max() without dim splits it evenly among ties instead). */
bg_tensor *bg_max_all(bg_ctx *ctx, bg_tensor *x) { return reduce_max(ctx, "max_all", x, 0, false, true); }

/* dx[o, idx[o,i], i] += dy[o,i] */
void bg_op_max_backward(bg_ctx *ctx, bg_node *n) {
    float *dx = bg_grad_of(ctx, n->in[0]);
    if (!dx) return;
    const float *dy = bg_f32(n->out->grad);
    const int64_t *idx = n->extra;
    axis_split s = load_split(n);
    for (int64_t o = 0; o < s.outer; o++)
        for (int64_t i = 0; i < s.inner; i++) {
            int64_t j = o * s.inner + i;
            dx[(o * s.len + idx[j]) * s.inner + i] += dy[j];
        }
}

// ---------------------------------------------------------------------------
// softmax and log_softmax

/* softmax (log_form false) or log_softmax along r of x[o,r,i] with inner > 1:
 * max-subtracted, the normaliser summed in double. */
static void softmax_strided(float *y, const float *x, axis_split s, bool log_form) {
    for (int64_t o = 0; o < s.outer; o++)
        for (int64_t i = 0; i < s.inner; i++) {
            const float *p = x + o * s.len * s.inner + i;
            float *q = y + o * s.len * s.inner + i;
            float m = -INFINITY;
            for (int64_t r = 0; r < s.len; r++) m = fmaxf(m, p[r * s.inner]);
            double z = 0.0;
            for (int64_t r = 0; r < s.len; r++) z += exp((double)p[r * s.inner] - m);
            if (log_form) {
                float lz = (float)log(z);
                for (int64_t r = 0; r < s.len; r++) q[r * s.inner] = (p[r * s.inner] - m) - lz;
            } else {
                for (int64_t r = 0; r < s.len; r++)
                    q[r * s.inner] = (float)(exp((double)p[r * s.inner] - m) / z);
            }
        }
}

static bg_tensor *softmax_op(bg_ctx *ctx, bg_op id, const char *name, bg_tensor *x, int axis) {
    if (!bg_check_f32(ctx, name, x, "x") || !bg_check_axis(ctx, name, x, &axis)) return NULL;
    bg_tensor *xc = bg_contiguous(ctx, x);
    bg_tensor *y = xc ? bg_out(ctx, x->ndim, x->shape) : NULL;
    if (!y) return NULL;
    axis_split s = split_at(x, axis);
    bool log_form = id == BG_OP_LOG_SOFTMAX;
    if (bg_numel(x) > 0) {
        if (s.inner == 1) {  // the last axis (or trailing ones): row kernels
            const bg_kernels *k = bg_kernels_get();
            (log_form ? k->log_softmax_rows : k->softmax_rows)(bg_f32(y), bg_f32(xc), s.outer, s.len);
        } else {
            softmax_strided(bg_f32(y), bg_f32(xc), s, log_form);
        }
    }
    bg_node *n = bg_record(ctx, id, y, 1, &x);
    if (n) save_split(n, s);
    return bg_ctx_status(ctx) == BG_OK ? y : NULL;
}

/* y = exp(x - max) / sum_axis exp(x - max); shape unchanged */
bg_tensor *bg_softmax(bg_ctx *ctx, bg_tensor *x, int axis) {
    return softmax_op(ctx, BG_OP_SOFTMAX, "softmax", x, axis);
}

/* y = x - max - log sum_axis exp(x - max); shape unchanged */
bg_tensor *bg_log_softmax(bg_ctx *ctx, bg_tensor *x, int axis) {
    return softmax_op(ctx, BG_OP_LOG_SOFTMAX, "log_softmax", x, axis);
}

/* y = softmax(x)  =>  dx += y * (dy - sum_axis(dy * y)) */
void bg_op_softmax_backward(bg_ctx *ctx, bg_node *n) {
    float *dx = bg_grad_of(ctx, n->in[0]);
    if (!dx) return;
    const bg_kernels *k = bg_kernels_get();
    const float *dy = bg_f32(n->out->grad), *y = bg_f32(n->out);
    axis_split s = load_split(n);
    if (s.len == 0) return;
    for (int64_t o = 0; o < s.outer; o++)
        for (int64_t i = 0; i < s.inner; i++) {
            int64_t base = o * s.len * s.inner + i, st = s.inner;
            float dot;
            if (st == 1) {
                dot = k->dot(dy + base, y + base, s.len);
            } else {
                double acc = 0.0;
                for (int64_t r = 0; r < s.len; r++) acc += (double)dy[base + r * st] * y[base + r * st];
                dot = (float)acc;
            }
            for (int64_t r = 0; r < s.len; r++) {
                int64_t j = base + r * st;
                dx[j] += y[j] * (dy[j] - dot);
            }
        }
}

/* y = log_softmax(x)  =>  dx += dy - exp(y) * sum_axis(dy) */
void bg_op_log_softmax_backward(bg_ctx *ctx, bg_node *n) {
    float *dx = bg_grad_of(ctx, n->in[0]);
    if (!dx) return;
    const bg_kernels *k = bg_kernels_get();
    const float *dy = bg_f32(n->out->grad), *y = bg_f32(n->out);
    axis_split s = load_split(n);
    if (s.len == 0) return;
    for (int64_t o = 0; o < s.outer; o++)
        for (int64_t i = 0; i < s.inner; i++) {
            int64_t base = o * s.len * s.inner + i, st = s.inner;
            float sum;
            if (st == 1) {
                sum = k->sum(dy + base, s.len);
            } else {
                double acc = 0.0;
                for (int64_t r = 0; r < s.len; r++) acc += dy[base + r * st];
                sum = (float)acc;
            }
            for (int64_t r = 0; r < s.len; r++) {
                int64_t j = base + r * st;
                dx[j] += dy[j] - expf(y[j]) * sum;
            }
        }
}

// ---------------------------------------------------------------------------
// cross_entropy

static int32_t label_at(const bg_tensor *labels, int64_t i) {
    return ((const int32_t *)labels->data)[i * labels->stride[0]];
}

/* cross_entropy's values: the examples counted, the ignored label, the
 * label smoothing. */
typedef struct ce_args {
    int64_t count;
    int32_t ignore_index;
    float eps;
} ce_args;
BG_ARGS_FIT(ce_args);

/* PyTorch's F.cross_entropy(logits, labels, ignore_index, label_smoothing=eps),
 * reduction 'mean'. With lp = log_softmax(logits) [N,C] and K the rows whose
 * label is not ignore_index:
 *   loss = (1/|K|) sum_{i in K} [ (1-eps) * -lp[i,y_i] + eps * mean_c(-lp[i,c]) ]
 * logits [N,C], labels i32 [N] -> []. When every label is ignored PyTorch
 * returns NaN (0/0); we return 0 and a zero gradient, so a batch made only of
 * padding does not poison the step. saved[0] = lp; i[0] = |K|, i[1] =
 * ignore_index; f[0] = eps. */
bg_tensor *bg_cross_entropy(bg_ctx *ctx, bg_tensor *logits, bg_tensor *labels,
                            const bg_cross_entropy_opts *opts) {
    const char *name = "cross_entropy";
    if (!bg_check_f32(ctx, name, logits, "logits")) return NULL;
    if (!labels) return bg_ctx_fail(ctx, BG_ERR_ARG, "cross_entropy: labels is NULL");
    bg_cross_entropy_opts o = opts ? *opts : BG_CROSS_ENTROPY_DEFAULTS;
    char sl[BG_SHAPE_STR_MAX], sy[BG_SHAPE_STR_MAX];
    if (labels->dtype != BG_DTYPE_I32)
        return bg_ctx_fail(ctx, BG_ERR_DTYPE, "cross_entropy: labels is %s %s, want i32",
                           bg_dtype_name(labels->dtype), bg_shape_str(labels, sy, sizeof sy));
    if (logits->ndim != 2)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "cross_entropy: logits must be [N,C]: logits is %s",
                           bg_shape_str(logits, sl, sizeof sl));
    int64_t N = logits->shape[0], C = logits->shape[1];
    if (labels->ndim != 1 || labels->shape[0] != N)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE,
                           "cross_entropy: labels must be [N] for logits [N,C]: logits is %s, labels is %s",
                           bg_shape_str(logits, sl, sizeof sl), bg_shape_str(labels, sy, sizeof sy));
    if (C == 0)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "cross_entropy: logits has no classes: logits is %s",
                           bg_shape_str(logits, sl, sizeof sl));
    float eps = o.label_smoothing;
    if (!(eps >= 0.0f && eps <= 1.0f))
        return bg_ctx_fail(ctx, BG_ERR_ARG, "cross_entropy: label_smoothing must be in [0, 1]: it is %g",
                           (double)eps);
    int64_t count = 0;
    for (int64_t i = 0; i < N; i++) {
        int32_t y = label_at(labels, i);
        if (y == o.ignore_index) continue;
        if (y < 0 || y >= C)
            return bg_ctx_fail(ctx, BG_ERR_ARG, "cross_entropy: label %d at index %lld is outside [0, %lld)",
                               (int)y, (long long)i, (long long)C);
        count++;
    }

    bg_tensor *xc = bg_contiguous(ctx, logits);
    bg_tensor *lp = xc ? bg_out(ctx, 2, logits->shape) : NULL;
    bg_tensor *out = lp ? bg_out(ctx, 0, NULL) : NULL;
    if (!out) return NULL;
    if (N > 0) bg_kernels_get()->log_softmax_rows(bg_f32(lp), bg_f32(xc), N, C);
    const float *l = bg_f32(lp);
    double total = 0.0;
    for (int64_t i = 0; i < N; i++) {
        int32_t y = label_at(labels, i);
        if (y == o.ignore_index) continue;
        const float *row = l + i * C;
        double nll = -(double)row[y], smooth = 0.0;
        if (eps != 0.0f) {
            for (int64_t c = 0; c < C; c++) smooth -= row[c];
            smooth /= (double)C;
        }
        total += (1.0 - eps) * nll + eps * smooth;
    }
    bg_f32(out)[0] = count ? (float)(total / (double)count) : 0.0f;
    bg_node *n = bg_record(ctx, BG_OP_CROSS_ENTROPY, out, 2, (bg_tensor *[]){logits, labels});
    if (n) {
        n->saved[0] = lp;
        *BG_ARGS(n, ce_args) = (ce_args){.count = count, .ignore_index = o.ignore_index, .eps = eps};
    }
    return bg_ctx_status(ctx) == BG_OK ? out : NULL;
}

/* dlogits[i,c] += dloss/|K| * (softmax[i,c] - q[i,c]) for i in K, with the
 * target distribution q = (1-eps) onehot(y_i) + eps/C (which sums to 1). */
void bg_op_cross_entropy_backward(bg_ctx *ctx, bg_node *n) {
    float *dx = bg_grad_of(ctx, n->in[0]);
    const ce_args *a = BG_ARGS(n, ce_args);
    int64_t count = a->count;
    if (!dx || count == 0) return;
    const bg_tensor *labels = n->in[1], *lp = n->saved[0];
    int64_t N = lp->shape[0], C = lp->shape[1];
    int32_t ignore = a->ignore_index;
    float eps = a->eps, g = bg_f32(n->out->grad)[0] / (float)count, off = eps / (float)C;
    const float *l = bg_f32(lp);
    for (int64_t i = 0; i < N; i++) {
        int32_t y = label_at(labels, i);
        if (y == ignore) continue;
        const float *row = l + i * C;
        float *d = dx + i * C;
        for (int64_t c = 0; c < C; c++) d[c] += g * (expf(row[c]) - off);
        d[y] -= g * (1.0f - eps);
    }
}

// ---------------------------------------------------------------------------
// mse

/* loss = mean((a - b)^2); a, b same shape -> []. saved[0] = a - b. An empty
 * input gives NaN (0/0), as in PyTorch. */
bg_tensor *bg_mse(bg_ctx *ctx, bg_tensor *a, bg_tensor *b) {
    if (!bg_check_f32(ctx, "mse", a, "a") || !bg_check_f32(ctx, "mse", b, "b")) return NULL;
    if (!bg_same_shape(a, b)) {
        char sa[BG_SHAPE_STR_MAX], sb[BG_SHAPE_STR_MAX];
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "mse: shapes differ: a is %s, b is %s",
                           bg_shape_str(a, sa, sizeof sa), bg_shape_str(b, sb, sizeof sb));
    }
    bg_tensor *ac = bg_contiguous(ctx, a), *bc = ac ? bg_contiguous(ctx, b) : NULL;
    bg_tensor *d = bc ? bg_out(ctx, a->ndim, a->shape) : NULL;
    bg_tensor *out = d ? bg_out(ctx, 0, NULL) : NULL;
    if (!out) return NULL;
    const bg_kernels *k = bg_kernels_get();
    int64_t cnt = bg_numel(a);
    float *dp = bg_f32(d);
    if (cnt > 0) {
        k->sub(dp, bg_f32(ac), bg_f32(bc), cnt);
        bg_f32(out)[0] = k->dot(dp, dp, cnt) / (float)cnt;
    } else {
        bg_f32(out)[0] = NAN;
    }
    bg_node *n = bg_record(ctx, BG_OP_MSE, out, 2, (bg_tensor *[]){a, b});
    if (n) n->saved[0] = d;
    return bg_ctx_status(ctx) == BG_OK ? out : NULL;
}

/* loss = (1/n) sum (a-b)^2  =>  da += 2 dloss/n (a-b), db -= 2 dloss/n (a-b) */
void bg_op_mse_backward(bg_ctx *ctx, bg_node *n) {
    const bg_tensor *d = n->saved[0];
    int64_t cnt = bg_numel(d);
    if (cnt == 0) return;
    float g = 2.0f * bg_f32(n->out->grad)[0] / (float)cnt;
    const bg_kernels *k = bg_kernels_get();
    float *da = bg_grad_of(ctx, n->in[0]);
    if (da) k->axpy(da, bg_f32(d), g, cnt);
    float *db = bg_grad_of(ctx, n->in[1]);
    if (db) k->axpy(db, bg_f32(d), -g, cnt);
}
