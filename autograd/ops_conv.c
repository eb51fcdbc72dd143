/* ops_conv.c — conv2d (NCHW, stride, padding, dilation, groups), max_pool2d
 * and avg_pool2d with PyTorch's semantics. Calls tensor/ and the kernels'
 * conv2d (oneDNN or reference) and pooling entry points; this file only
 * validates shapes and wires the tape. */
#include <string.h>

#include "autograd/autograd_internal.h"
#include "kernels/kernels.h"

// --- conv2d ---------------------------------------------------------------------
/* y[n,o,i,j] = b[o] + sum_{c in group(o), p, q}
 *     x[n, c, i*sh - ph + p*dh, j*sw - pw + q*dw] * w[o, c mod C/g, p, q]
 * x [N,C,H,W], w [OC,C/groups,KH,KW], b [OC] or NULL -> y [N,OC,OH,OW],
 * OH = (H + 2ph - dh(KH-1) - 1) / sh + 1 (floor), OW likewise.
 * Saved: contiguous x and w; extra = the bg_conv2d_shape. */

bg_tensor *bg_conv2d(bg_ctx *ctx, bg_tensor *x, bg_tensor *w, bg_tensor *b,
                     const bg_conv2d_opts *opts) {
    if (!bg_check_f32(ctx, "conv2d", x, "x") || !bg_check_f32(ctx, "conv2d", w, "w")) return NULL;
    if (b && !bg_check_f32(ctx, "conv2d", b, "b")) return NULL;
    const bg_conv2d_opts o = opts ? *opts : BG_CONV2D_DEFAULTS;
    char sx[BG_SHAPE_STR_MAX], sw[BG_SHAPE_STR_MAX], sb[BG_SHAPE_STR_MAX];
    bg_shape_str(x, sx, sizeof sx);
    bg_shape_str(w, sw, sizeof sw);
    if (x->ndim != 4)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "conv2d: x must be 4-D [N,C,H,W]: x is %s", sx);
    if (w->ndim != 4)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "conv2d: w must be 4-D [OC,C/groups,KH,KW]: w is %s", sw);
    if (o.stride[0] < 1 || o.stride[1] < 1)
        return bg_ctx_fail(ctx, BG_ERR_ARG, "conv2d: stride must be >= 1: got %lldx%lld",
                           (long long)o.stride[0], (long long)o.stride[1]);
    if (o.padding[0] < 0 || o.padding[1] < 0)
        return bg_ctx_fail(ctx, BG_ERR_ARG, "conv2d: padding must be >= 0: got %lldx%lld",
                           (long long)o.padding[0], (long long)o.padding[1]);
    if (o.dilation[0] < 1 || o.dilation[1] < 1)
        return bg_ctx_fail(ctx, BG_ERR_ARG, "conv2d: dilation must be >= 1: got %lldx%lld",
                           (long long)o.dilation[0], (long long)o.dilation[1]);
    const int64_t g = o.groups, C = x->shape[1], OC = w->shape[0];
    if (g < 1) return bg_ctx_fail(ctx, BG_ERR_ARG, "conv2d: groups must be >= 1: got %lld", (long long)g);
    if (C % g != 0)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE,
                           "conv2d: input channels are not divisible by groups: x is %s, groups %lld",
                           sx, (long long)g);
    if (OC % g != 0)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE,
                           "conv2d: output channels are not divisible by groups: w is %s, groups %lld",
                           sw, (long long)g);
    if (w->shape[1] != C / g)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE,
                           "conv2d: channels per group differ: x is %s with groups %lld (%lld per "
                           "group), w is %s",
                           sx, (long long)g, (long long)(C / g), sw);
    if (b && (b->ndim != 1 || b->shape[0] != OC))
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "conv2d: b must be [%lld] for w %s: b is %s",
                           (long long)OC, sw, bg_shape_str(b, sb, sizeof sb));
    bg_conv2d_shape s = {
        .n = x->shape[0], .c = C, .h = x->shape[2], .w = x->shape[3],
        .oc = OC, .kh = w->shape[2], .kw = w->shape[3],
        .stride_h = o.stride[0], .stride_w = o.stride[1],
        .pad_h = o.padding[0], .pad_w = o.padding[1],
        .dil_h = o.dilation[0], .dil_w = o.dilation[1], .groups = g,
    };
    const int64_t ekh = s.dil_h * (s.kh - 1) + 1, ekw = s.dil_w * (s.kw - 1) + 1;
    if (s.kh < 1 || s.kw < 1 || ekh > s.h + 2 * s.pad_h || ekw > s.w + 2 * s.pad_w)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE,
                           "conv2d: kernel %lldx%lld (dilation %lldx%lld) does not fit the padded "
                           "input %lldx%lld (padding %lldx%lld): x is %s, w is %s",
                           (long long)s.kh, (long long)s.kw, (long long)s.dil_h, (long long)s.dil_w,
                           (long long)s.h, (long long)s.w, (long long)s.pad_h, (long long)s.pad_w,
                           sx, sw);
    if (!bg_conv2d_shape_infer(&s))
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "conv2d: the output would be empty: x is %s, w is %s",
                           sx, sw);

    bg_tensor *xc = bg_contiguous(ctx, x), *wc = bg_contiguous(ctx, w);
    bg_tensor *bc = b ? bg_contiguous(ctx, b) : NULL;
    bg_tensor *out = bg_out(ctx, 4, (int64_t[]){s.n, s.oc, s.oh, s.ow});
    if (!xc || !wc || (b && !bc) || !out) return NULL;
    if (bg_numel(out) > 0)
        bg_conv2d_forward(&s, bg_f32(out), bg_f32(xc), bg_f32(wc), bc ? bg_f32(bc) : NULL);

    bg_node *n = bg_record(ctx, BG_OP_CONV2D, out, 3, (bg_tensor *[]){x, w, b});
    if (n) {
        bg_conv2d_shape *ps = bg_ctx_alloc(ctx, sizeof *ps);
        if (!ps) return NULL;
        *ps = s;
        n->extra = ps;
        n->saved[0] = xc;
        n->saved[1] = wc;
    }
    return ctx->status == BG_OK ? out : NULL;
}

/* From y = conv(x, w) + b: dx += conv_transpose(dy, w), dw += corr(x, dy),
 * db += sum over n, i, j of dy. */
void bg_op_conv2d_backward(bg_ctx *ctx, bg_node *n) {
    const bg_conv2d_shape *s = n->extra;
    if (bg_numel(n->out) == 0) return;
    const float *dy = bg_f32(n->out->grad);
    float *dx = bg_grad_of(ctx, n->in[0]);
    float *dw = bg_grad_of(ctx, n->in[1]);
    float *db = bg_grad_of(ctx, n->in[2]);
    if (dx) bg_conv2d_backward_data(s, dx, dy, bg_f32(n->saved[1]));
    if (!dw && db) {
        // The kernel computes dw and db together; give it a scratch dw.
        bg_tensor *t = bg_zeros(ctx, BG_DTYPE_F32, n->in[1]->ndim, n->in[1]->shape);
        if (!t) return;
        dw = bg_f32(t);
    }
    if (dw) bg_conv2d_backward_weights(s, dw, db, dy, bg_f32(n->saved[0]));
}

// --- pooling ------------------------------------------------------------------------------
/* Square windows of size k, stride s (0 = k, PyTorch's default), padding p:
 * OH = floor((H + 2p - k) / s) + 1 (ceil_mode off), PyTorch's rule p <= k/2.
 * max: y = max over the window (padding is -inf); argmax saved for backward.
 * avg: y = sum over the window / k^2 (count_include_pad=True). */

static bool pool_shape(bg_ctx *ctx, const char *op, const bg_tensor *x, int64_t kernel,
                       int64_t stride, int64_t padding, bg_pool2d_shape *s) {
    if (!bg_check_f32(ctx, op, x, "x")) return false;
    char sx[BG_SHAPE_STR_MAX];
    bg_shape_str(x, sx, sizeof sx);
    if (x->ndim != 4) {
        bg_ctx_fail(ctx, BG_ERR_SHAPE, "%s: x must be 4-D [N,C,H,W]: x is %s", op, sx);
        return false;
    }
    if (kernel < 1 || stride < 0 || padding < 0) {
        bg_ctx_fail(ctx, BG_ERR_ARG,
                    "%s: kernel must be >= 1, stride >= 0 and padding >= 0: got kernel %lld, "
                    "stride %lld, padding %lld",
                    op, (long long)kernel, (long long)stride, (long long)padding);
        return false;
    }
    if (stride == 0) stride = kernel;  // PyTorch's default stride
    if (padding > kernel / 2) {
        bg_ctx_fail(ctx, BG_ERR_ARG, "%s: padding must be at most half the kernel: got padding %lld, kernel %lld",
                    op, (long long)padding, (long long)kernel);
        return false;
    }
    *s = (bg_pool2d_shape){
        .n = x->shape[0], .c = x->shape[1], .h = x->shape[2], .w = x->shape[3],
        .kh = kernel, .kw = kernel, .stride_h = stride, .stride_w = stride,
        .pad_h = padding, .pad_w = padding, .dil_h = 1, .dil_w = 1, .ceil_mode = false,
    };
    if (kernel > s->h + 2 * padding || kernel > s->w + 2 * padding) {
        bg_ctx_fail(ctx, BG_ERR_SHAPE,
                    "%s: kernel %lld is larger than the padded input: x is %s, padding %lld", op,
                    (long long)kernel, sx, (long long)padding);
        return false;
    }
    if (s->h * s->w > INT32_MAX) {
        bg_ctx_fail(ctx, BG_ERR_SHAPE, "%s: a plane of x %s has more than 2^31 elements", op, sx);
        return false;
    }
    if (!bg_pool2d_shape_infer(s)) {
        bg_ctx_fail(ctx, BG_ERR_SHAPE, "%s: the output would be empty: x is %s, kernel %lld", op, sx,
                    (long long)kernel);
        return false;
    }
    return true;
}

bg_tensor *bg_max_pool2d(bg_ctx *ctx, bg_tensor *x, int64_t kernel, int64_t stride, int64_t padding) {
    bg_pool2d_shape s;
    if (!pool_shape(ctx, "max_pool2d", x, kernel, stride, padding, &s)) return NULL;
    const int64_t oshape[4] = {s.n, s.c, s.oh, s.ow};
    bg_tensor *xc = bg_contiguous(ctx, x);
    bg_tensor *out = bg_out(ctx, 4, oshape);
    bg_tensor *argmax = bg_empty(ctx, BG_DTYPE_I32, 4, oshape);
    if (!xc || !out || !argmax) return NULL;
    if (bg_numel(out) > 0) bg_max_pool2d_forward(&s, bg_f32(out), (int32_t *)argmax->data, bg_f32(xc));

    bg_node *n = bg_record(ctx, BG_OP_MAX_POOL2D, out, 1, &x);
    if (n) {
        bg_pool2d_shape *ps = bg_ctx_alloc(ctx, sizeof *ps);
        if (!ps) return NULL;
        *ps = s;
        n->extra = ps;
        n->saved[0] = argmax;
    }
    return ctx->status == BG_OK ? out : NULL;
}

/* From y = x[argmax]: dx[argmax] += dy (ties went to the first max). */
void bg_op_max_pool2d_backward(bg_ctx *ctx, bg_node *n) {
    float *dx = bg_grad_of(ctx, n->in[0]);
    if (!dx || bg_numel(n->out) == 0) return;
    bg_max_pool2d_backward(n->extra, dx, bg_f32(n->out->grad), (const int32_t *)n->saved[0]->data);
}

bg_tensor *bg_avg_pool2d(bg_ctx *ctx, bg_tensor *x, int64_t kernel, int64_t stride, int64_t padding) {
    bg_pool2d_shape s;
    if (!pool_shape(ctx, "avg_pool2d", x, kernel, stride, padding, &s)) return NULL;
    bg_tensor *xc = bg_contiguous(ctx, x);
    bg_tensor *out = bg_out(ctx, 4, (int64_t[]){s.n, s.c, s.oh, s.ow});
    if (!xc || !out) return NULL;
    if (bg_numel(out) > 0) bg_avg_pool2d_forward(&s, bg_f32(out), bg_f32(xc));

    bg_node *n = bg_record(ctx, BG_OP_AVG_POOL2D, out, 1, &x);
    if (n) {
        bg_pool2d_shape *ps = bg_ctx_alloc(ctx, sizeof *ps);
        if (!ps) return NULL;
        *ps = s;
        n->extra = ps;
    }
    return ctx->status == BG_OK ? out : NULL;
}

/* From y = sum(window) / k^2: dx[window] += dy / k^2. */
void bg_op_avg_pool2d_backward(bg_ctx *ctx, bg_node *n) {
    float *dx = bg_grad_of(ctx, n->in[0]);
    if (!dx || bg_numel(n->out) == 0) return;
    bg_avg_pool2d_backward(n->extra, dx, bg_f32(n->out->grad));
}
