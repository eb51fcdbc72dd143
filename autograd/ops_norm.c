/* ops_norm.c — LayerNorm and RMSNorm over the last dim. Calls tensor/ and the
 * kernels' layernorm/rmsnorm forward/backward pairs; the forward saves mean
 * and rstd (one float per row) for the backward, as llm.c does. */
#include <string.h>

#include "autograd/autograd_internal.h"
#include "kernels/kernels.h"

/* Both norms normalise rows of C features. */
typedef struct norm_args {
    int64_t rows, C;
} norm_args;
BG_ARGS_FIT(norm_args);

// --- helpers ---------------------------------------------------------------------

/* Checks x (f32, >= 1 dim) and an optional per-channel parameter p ([C]). */
static bool check_norm(bg_ctx *ctx, const char *op, const bg_tensor *x, const bg_tensor *p,
                       const char *pname, float eps) {
    if (!bg_check_f32(ctx, op, x, "x")) return false;
    if (p && !bg_check_f32(ctx, op, p, pname)) return false;
    char sx[BG_SHAPE_STR_MAX], sp[BG_SHAPE_STR_MAX];
    if (x->ndim < 1) {
        bg_ctx_fail(ctx, BG_ERR_SHAPE, "%s: x needs at least 1 dim: x is %s", op,
                    bg_shape_str(x, sx, sizeof sx));
        return false;
    }
    const int64_t C = x->shape[x->ndim - 1];
    if (p && (p->ndim != 1 || p->shape[0] != C)) {
        bg_ctx_fail(ctx, BG_ERR_SHAPE, "%s: %s must be [%lld] for x %s: %s is %s", op, pname,
                    (long long)C, bg_shape_str(x, sx, sizeof sx), pname, bg_shape_str(p, sp, sizeof sp));
        return false;
    }
    if (!(eps >= 0.0f)) {
        bg_ctx_fail(ctx, BG_ERR_ARG, "%s: eps must be >= 0: got %g", op, (double)eps);
        return false;
    }
    return true;
}

/* The x gradient buffer, or a zeroed scratch one when only the parameters
 * want gradients (the kernels always write dx). */
static float *dx_or_scratch(bg_ctx *ctx, bg_tensor *x) {
    float *dx = bg_grad_of(ctx, x);
    if (dx) return dx;
    bg_tensor *t = bg_zeros(ctx, BG_DTYPE_F32, x->ndim, x->shape);
    return t ? bg_f32(t) : NULL;
}

// --- layernorm ----------------------------------------------------------------------
/* y = (x - mean) * rstd * w + b over the last dim C; rstd = 1/sqrt(var + eps)
 * (biased variance, as PyTorch). x [..,C], w and b [C] or NULL -> [..,C].
 * Saved: x, w (contiguous), mean [rows], rstd [rows]; i[] = rows, C. */

bg_tensor *bg_layernorm(bg_ctx *ctx, bg_tensor *x, bg_tensor *w, bg_tensor *b, float eps) {
    if (!check_norm(ctx, "layernorm", x, w, "w", eps) || !check_norm(ctx, "layernorm", x, b, "b", eps))
        return NULL;
    const int64_t C = x->shape[x->ndim - 1], rows = C ? bg_numel(x) / C : 0;
    bg_tensor *xc = bg_contiguous(ctx, x);
    bg_tensor *wc = w ? bg_contiguous(ctx, w) : NULL, *bc = b ? bg_contiguous(ctx, b) : NULL;
    bg_tensor *out = bg_out(ctx, x->ndim, x->shape);
    bg_tensor *mean = bg_out(ctx, 1, &rows), *rstd = bg_out(ctx, 1, &rows);
    if (!xc || (w && !wc) || (b && !bc) || !out || !mean || !rstd) return NULL;
    if (rows > 0 && C > 0)
        bg_kernels_get()->layernorm_forward(bg_f32(out), bg_f32(mean), bg_f32(rstd), bg_f32(xc),
                                            wc ? bg_f32(wc) : NULL, bc ? bg_f32(bc) : NULL, rows, C,
                                            eps);

    bg_node *n = bg_record(ctx, BG_OP_LAYERNORM, out, 3, (bg_tensor *[]){x, w, b});
    if (n) {
        n->saved[0] = xc;
        n->saved[1] = wc;
        n->saved[2] = mean;
        n->saved[3] = rstd;
        *BG_ARGS(n, norm_args) = (norm_args){.rows = rows, .C = C};
    }
    return ctx->status == BG_OK ? out : NULL;
}

/* From y = xhat * w + b, xhat = (x - mean) * rstd:
 * db += sum dy, dw += sum dy*xhat,
 * dx += rstd * (g - mean(g) - xhat * mean(g*xhat)), g = dy*w (kernel). */
void bg_op_layernorm_backward(bg_ctx *ctx, bg_node *n) {
    const int64_t rows = BG_ARGS(n, norm_args)->rows, C = BG_ARGS(n, norm_args)->C;
    if (rows == 0 || C == 0) return;
    float *dw = bg_grad_of(ctx, n->in[1]), *db = bg_grad_of(ctx, n->in[2]);
    float *dx = dx_or_scratch(ctx, n->in[0]);
    if (!dx) return;
    bg_kernels_get()->layernorm_backward(dx, dw, db, bg_f32(n->out->grad), bg_f32(n->saved[0]),
                                         n->saved[1] ? bg_f32(n->saved[1]) : NULL,
                                         bg_f32(n->saved[2]), bg_f32(n->saved[3]), rows, C);
}

// --- rmsnorm ---------------------------------------------------------------------------
/* y = x * rstd * w over the last dim C; rstd = 1/sqrt(mean(x^2) + eps).
 * x [..,C], w [C] or NULL -> [..,C]. Saved: x, w, rstd; i[] = rows, C. */

bg_tensor *bg_rmsnorm(bg_ctx *ctx, bg_tensor *x, bg_tensor *w, float eps) {
    if (!check_norm(ctx, "rmsnorm", x, w, "w", eps)) return NULL;
    const int64_t C = x->shape[x->ndim - 1], rows = C ? bg_numel(x) / C : 0;
    bg_tensor *xc = bg_contiguous(ctx, x);
    bg_tensor *wc = w ? bg_contiguous(ctx, w) : NULL;
    bg_tensor *out = bg_out(ctx, x->ndim, x->shape);
    bg_tensor *rstd = bg_out(ctx, 1, &rows);
    if (!xc || (w && !wc) || !out || !rstd) return NULL;
    if (rows > 0 && C > 0)
        bg_kernels_get()->rmsnorm_forward(bg_f32(out), bg_f32(rstd), bg_f32(xc),
                                          wc ? bg_f32(wc) : NULL, rows, C, eps);

    bg_node *n = bg_record(ctx, BG_OP_RMSNORM, out, 2, (bg_tensor *[]){x, w});
    if (n) {
        n->saved[0] = xc;
        n->saved[1] = wc;
        n->saved[2] = rstd;
        *BG_ARGS(n, norm_args) = (norm_args){.rows = rows, .C = C};
    }
    return ctx->status == BG_OK ? out : NULL;
}

/* From y = x * rstd * w: dw += sum dy*x*rstd,
 * dx += rstd * (g - x * rstd^2 * mean(g*x)), g = dy*w (kernel). */
void bg_op_rmsnorm_backward(bg_ctx *ctx, bg_node *n) {
    const int64_t rows = BG_ARGS(n, norm_args)->rows, C = BG_ARGS(n, norm_args)->C;
    if (rows == 0 || C == 0) return;
    float *dw = bg_grad_of(ctx, n->in[1]);
    float *dx = dx_or_scratch(ctx, n->in[0]);
    if (!dx) return;
    bg_kernels_get()->rmsnorm_backward(dx, dw, bg_f32(n->out->grad), bg_f32(n->saved[0]),
                                       n->saved[1] ? bg_f32(n->saved[1]) : NULL,
                                       bg_f32(n->saved[2]), rows, C);
}
