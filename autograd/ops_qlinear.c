/* ops_qlinear.c — qlinear_int: the product of a fake-quantized linear layer
 * run on integer kernels (int8 activation codes x int8 / ternary weight
 * codes -> int32, times the two scales), with linear's backward on the
 * fake-quantized f32 tensors. Calls tensor/, kernels/ (the integer kernel
 * table: quantize_rows to recover the codes, gemm_s8; bg_gemm_s8_dnnl) and
 * ops_matmul.c's linear backward. */
#include <math.h>
#include <string.h>

#include "autograd/autograd_internal.h"
#include "kernels/kernels.h"

#define OP "qlinear_int"

// --- qlinear_int ---------------------------------------------------------------------
/* y = xq wq^T + b, computed as y[r,m] = (float)(cx[r] . cw[m]) * sx[r] * sw[m] + b[m]
 * where cx = nearbyint(xq / sx) in [-128,127] and cw = nearbyint(wq / sw) in
 * [-127,127]: exact integer dot products, so y equals the f32 product of xq
 * and wq up to float rounding when xq and wq lie on those grids (the output
 * of a symmetric fake quant with these scales). xq [...,K], wq [M,K], b [M]
 * or NULL; x_scale has rows or 1 elements, w_scale M or 1 (all > 0).
 * Saved (linear's layout, so linear's backward applies): contiguous xq and
 * wq, and bg_linear_args. */

/* The same rows with kp - K zero bytes after each (the integer kernels'
 * padded layout). */
static int8_t *padded(bg_ctx *ctx, const int8_t *q, int64_t rows, int64_t K, int64_t kp) {
    int8_t *p = bg_ctx_alloc(ctx, (size_t)(rows * kp) + 1);
    if (!p) return NULL;
    for (int64_t r = 0; r < rows; r++) {
        memcpy(p + r * kp, q + r * K, (size_t)K);
        memset(p + r * kp + K, 0, (size_t)(kp - K));
    }
    return p;
}

static bool all_positive(const bg_tensor *s) {
    const float *v = bg_f32(s);
    for (int64_t i = 0; i < bg_numel(s); i++)
        if (!(v[i] > 0.0f) || isinf(v[i])) return false;
    return true;
}

bg_tensor *bg_qlinear_int(bg_ctx *ctx, bg_tensor *xq, bg_tensor *wq, bg_tensor *b, const bg_tensor *x_scale,
                          const bg_tensor *w_scale) {
    return bg_qlinear_int_codes(ctx, xq, wq, b, NULL, x_scale, NULL, w_scale);
}

/* Given codes must be contiguous I8 of the operand's shape. */
static bool codes_fit(bg_ctx *ctx, const bg_tensor *codes, const bg_tensor *of, const char *name) {
    if (!codes) return true;
    char a[BG_SHAPE_STR_MAX], b[BG_SHAPE_STR_MAX];
    if (codes->dtype != BG_DTYPE_I8 || !bg_is_contiguous(codes) || !bg_same_shape(codes, of)) {
        bg_ctx_fail(ctx, BG_ERR_ARG, OP ": %s must be contiguous i8 of shape %s: it is %s %s", name,
                    bg_shape_str(of, a, sizeof a), bg_dtype_name(codes->dtype), bg_shape_str(codes, b, sizeof b));
        return false;
    }
    return true;
}

bg_tensor *bg_qlinear_int_codes(bg_ctx *ctx, bg_tensor *xq, bg_tensor *wq, bg_tensor *b, const bg_tensor *x_codes,
                                const bg_tensor *x_scale, const bg_tensor *w_codes, const bg_tensor *w_scale) {
    if (!bg_check_f32(ctx, OP, xq, "xq") || !bg_check_f32(ctx, OP, wq, "wq")) return NULL;
    if (b && !bg_check_f32(ctx, OP, b, "b")) return NULL;
    if (!bg_check_f32(ctx, OP, x_scale, "x_scale") || !bg_check_f32(ctx, OP, w_scale, "w_scale")) return NULL;
    char sx[BG_SHAPE_STR_MAX], sw[BG_SHAPE_STR_MAX], ss[BG_SHAPE_STR_MAX];
    bg_shape_str(xq, sx, sizeof sx);
    bg_shape_str(wq, sw, sizeof sw);
    if (wq->ndim != 2) return bg_ctx_fail(ctx, BG_ERR_SHAPE, OP ": wq must be 2-D [out,in]: wq is %s", sw);
    if (xq->ndim < 1) return bg_ctx_fail(ctx, BG_ERR_SHAPE, OP ": xq needs at least 1 dim: xq is %s", sx);
    const int64_t M = wq->shape[0], K = wq->shape[1];
    if (xq->shape[xq->ndim - 1] != K)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, OP ": input features differ: xq is %s, wq is %s", sx, sw);
    if (b && (b->ndim != 1 || b->shape[0] != M))
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, OP ": bias shape differs: b is %s, want [%lld]",
                           bg_shape_str(b, ss, sizeof ss), (long long)M);
    int64_t rows = 1;
    for (int i = 0; i < xq->ndim - 1; i++) rows *= xq->shape[i];
    const int64_t nxs = bg_numel(x_scale), nws = bg_numel(w_scale);
    if (nxs != 1 && nxs != rows)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, OP ": x_scale must have 1 or %lld elements: x_scale is %s",
                           (long long)rows, bg_shape_str(x_scale, ss, sizeof ss));
    if (nws != 1 && nws != M)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, OP ": w_scale must have 1 or %lld elements: w_scale is %s",
                           (long long)M, bg_shape_str(w_scale, ss, sizeof ss));
    if (!codes_fit(ctx, x_codes, xq, "x_codes") || !codes_fit(ctx, w_codes, wq, "w_codes")) return NULL;
    bg_tensor *xsc = bg_contiguous(ctx, (bg_tensor *)x_scale), *wsc = bg_contiguous(ctx, (bg_tensor *)w_scale);
    if (!xsc || !wsc) return NULL;
    if (!all_positive(xsc) || !all_positive(wsc))
        return bg_ctx_fail(ctx, BG_ERR_ARG, OP ": scales must be finite and > 0: %s has %s",
                           all_positive(xsc) ? "w_scale" : "x_scale", "a value <= 0, NaN or Inf");

    bg_tensor *xc = bg_contiguous(ctx, xq), *wc = bg_contiguous(ctx, wq);
    bg_tensor *bc = b ? bg_contiguous(ctx, b) : NULL;
    int64_t oshape[BG_MAX_DIMS];
    memcpy(oshape, xq->shape, sizeof oshape);
    oshape[xq->ndim - 1] = M;
    bg_tensor *out = bg_out(ctx, xq->ndim, oshape);
    if (!xc || !wc || (b && !bc) || !out) return NULL;

    int8_t *cx = x_codes ? x_codes->data : bg_ctx_alloc(ctx, (size_t)(rows * K) + 1);
    int8_t *cw = w_codes ? w_codes->data : bg_ctx_alloc(ctx, (size_t)(M * K) + 1);
    int32_t *acc = bg_ctx_alloc(ctx, sizeof(int32_t) * (size_t)(rows * M + 1));
    if (!cx || !cw || !acc) return NULL;
    float *y = bg_f32(out);
    if (rows > 0 && M > 0) {
        // Codes not given are recovered by the fake-quant kernel's arithmetic
        // (quantize_rows): on-grid inputs give back exactly their codes.
        const bg_int_kernels *ik = bg_int_kernels_get();
        if (!x_codes) ik->quantize_rows(cx, bg_f32(xc), rows, K, K, bg_f32(xsc), nxs > 1, 0, -128, 127);
        if (!w_codes) ik->quantize_rows(cw, bg_f32(wc), M, K, K, bg_f32(wsc), nws > 1, 0, -127, 127);
        // oneDNN's s8 x s8 -> s32 matmul when built in, else the integer
        // kernel table on the padded layout.
        if (!bg_gemm_s8_dnnl(acc, cx, cw, rows, M, K, K, K)) {
            const int64_t kp = bg_int_padded_k(K);
            int8_t *px = padded(ctx, cx, rows, K, kp), *pw = padded(ctx, cw, M, K, kp);
            if (!px || !pw) return NULL;
            ik->gemm_s8(acc, px, pw, rows, M, kp);
        }
        const float *xs = bg_f32(xsc), *ws = bg_f32(wsc), *bias = bc ? bg_f32(bc) : NULL;
#pragma omp parallel for schedule(static) if (rows * M >= (1 << 16))
        for (int64_t r = 0; r < rows; r++) {
            const float sr = xs[nxs > 1 ? r : 0];
            const int32_t *ar = acc + r * M;
            float *yr = y + r * M;
            const float f = sr * ws[0];
            if (nws > 1) {
#pragma omp simd
                for (int64_t m = 0; m < M; m++) yr[m] = (float)ar[m] * (sr * ws[m]);
            } else {
#pragma omp simd
                for (int64_t m = 0; m < M; m++) yr[m] = (float)ar[m] * f;
            }
            if (bias) {
#pragma omp simd
                for (int64_t m = 0; m < M; m++) yr[m] += bias[m];
            }
        }
    }

    bg_node *n = bg_record(ctx, BG_OP_QLINEAR_INT, out, 3, (bg_tensor *[]){xq, wq, b});
    if (n) {
        n->saved[0] = xc;
        n->saved[1] = wc;
        *BG_ARGS(n, bg_linear_args) = (bg_linear_args){.rows = rows, .M = M, .K = K};
    }
    return ctx->status == BG_OK ? out : NULL;
}

/* From y = xq wq^T + b (the integer forward is that product, exactly up to
 * float rounding): linear's dxq += dy wq, dwq += dy^T xq, db += sum_rows dy. */
void bg_op_qlinear_int_backward(bg_ctx *ctx, bg_node *n) { bg_op_linear_backward(ctx, n); }
