/* ops_attention.c — what a transformer's attention needs beyond the
 * products: rotary position embedding (RoPE, NEOX mode) and causal attention
 * as one fused op (scores, mask, softmax and the value product per head,
 * without a [Tq,Tk] mask tensor). Calls tensor/ and kernels/ (the softmax
 * and dot rows, bg_sgemm_serial); OpenMP over rows (RoPE) and over heads
 * (attention), each element or head computed by one thread in a fixed
 * order, so results do not depend on the thread count. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "autograd/autograd_internal.h"
#include "kernels/kernels.h"

/* Loops over at least this many elements go parallel (as kernels/). */
#define PAR_MIN ((int64_t)1 << 16)

// --- rope ---------------------------------------------------------------------------
/* x [..., T, hd] -> same shape: row t of every leading index (batch, head)
 * is rotated by the angles of position pos0 + t, pairs (i, i + hd/2):
 *     y_i = x_i cos a - x_j sin a,  y_j = x_j cos a + x_i sin a,
 *     a = (pos0 + t) * theta^(-2i/hd),  j = i + hd/2.
 * The angles, cosines and sines are computed in double into the arena (a
 * [T, hd/2] table per call, kept for the backward in n->extra) and each
 * output is rounded once from double, so it is within half an ulp of the
 * float64 result at any position (a float angle would be off by 2e-4 at
 * position 4096). No saved tensor: the backward is the inverse rotation. */
typedef struct rope_args {
    int64_t rows, T, half;
} rope_args;
BG_ARGS_FIT(rope_args);

/* The table: cos of row t, pair i at [t*half + i], sin at [(T + t)*half + i]. */
static double *rope_table(bg_ctx *ctx, int64_t T, int64_t half, int64_t pos0, float theta) {
    double *tab = bg_ctx_alloc(ctx, sizeof(double) * (size_t)(2 * T * half + half));
    if (!tab) return NULL;
    double *inv = tab + 2 * T * half;   // theta^(-2i/hd), as torch's theta ** (-arange(0, hd, 2) / hd)
    for (int64_t i = 0; i < half; i++) inv[i] = pow((double)theta, -(double)(2 * i) / (double)(2 * half));
#pragma omp parallel for schedule(static) if (T * half >= PAR_MIN / 16)
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < half; i++) {
            double a = (double)(pos0 + t) * inv[i];
            tab[t * half + i] = cos(a);
            tab[(T + t) * half + i] = sin(a);
        }
    return tab;
}

bg_tensor *bg_rope(bg_ctx *ctx, bg_tensor *x, int64_t pos0, float theta) {
    if (!bg_check_f32(ctx, "rope", x, "x")) return NULL;
    char sx[BG_SHAPE_STR_MAX];
    bg_shape_str(x, sx, sizeof sx);
    if (x->ndim < 2)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "rope: x must be [..., T, hd] (at least 2 dims): x is %s", sx);
    const int64_t T = x->shape[x->ndim - 2], hd = x->shape[x->ndim - 1];
    if (hd % 2 != 0)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE,
                           "rope: head dim %lld is odd (x is %s): NEOX RoPE rotates the pairs (i, i + hd/2)",
                           (long long)hd, sx);
    if (pos0 < 0 || pos0 > BG_MAX_NUMEL)
        return bg_ctx_fail(ctx, BG_ERR_ARG, "rope: pos0 must be in [0, 2^48]: got %lld", (long long)pos0);
    if (!(theta > 0.0f) || !isfinite(theta))
        return bg_ctx_fail(ctx, BG_ERR_ARG, "rope: theta must be finite and > 0: got %g", (double)theta);
    const int64_t half = hd / 2, rows = hd ? bg_numel(x) / hd : 0;

    bg_tensor *xc = bg_contiguous(ctx, x);
    bg_tensor *out = bg_out(ctx, x->ndim, x->shape);
    double *tab = xc && out && rows > 0 ? rope_table(ctx, T, half, pos0, theta) : NULL;
    if (!xc || !out || (rows > 0 && !tab)) return NULL;

    const float *xs = bg_f32(xc);
    float *y = bg_f32(out);
#pragma omp parallel for schedule(static) if (rows * hd >= PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t t = r % T;
        const double *c = tab + t * half, *s = tab + (T + t) * half;
        const float *xr = xs + r * hd;
        float *yr = y + r * hd;
        for (int64_t i = 0; i < half; i++) {
            const double a = xr[i], b = xr[i + half];
            yr[i] = (float)(a * c[i] - b * s[i]);
            yr[i + half] = (float)(b * c[i] + a * s[i]);
        }
    }

    bg_node *n = bg_record(ctx, BG_OP_ROPE, out, 1, &x);
    if (n) {
        *BG_ARGS(n, rope_args) = (rope_args){.rows = rows, .T = T, .half = half};
        n->extra = tab;
    }
    return ctx->status == BG_OK ? out : NULL;
}

/* The inverse rotation: dx_i += dy_i cos a + dy_j sin a,
 * dx_j += dy_j cos a - dy_i sin a. */
void bg_op_rope_backward(bg_ctx *ctx, bg_node *n) {
    const rope_args *a = BG_ARGS(n, rope_args);
    float *dx = bg_grad_of(ctx, n->in[0]);
    if (!dx || a->rows == 0) return;
    const int64_t T = a->T, half = a->half, hd = 2 * half, rows = a->rows;
    const double *tab = n->extra;
    const float *dy = bg_f32(n->out->grad);
#pragma omp parallel for schedule(static) if (rows * hd >= PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t t = r % T;
        const double *c = tab + t * half, *s = tab + (T + t) * half;
        const float *g = dy + r * hd;
        float *dr = dx + r * hd;
        for (int64_t i = 0; i < half; i++) {
            const double gi = g[i], gj = g[i + half];
            dr[i] += (float)(gi * c[i] + gj * s[i]);
            dr[i + half] += (float)(gj * c[i] - gi * s[i]);
        }
    }
}

// --- causal attention ------------------------------------------------------------------
/* O = softmax(q k^T * scale + M) v per head, M = -inf where key j > i + off,
 * off = Tk - Tq >= 0: q [..., Tq, D], k [..., Tk, D], v [..., Tk, Dv] with the
 * same leading dims (each leading index, e.g. (batch, head), is one
 * independent head). Per head, in blocks of ROW_BLOCK query rows [r0, r1):
 * only the first min(Tk, r1 + off) key columns can be visible, so
 *     S = q[r0:r1] k[:cols]^T * scale     (bg_sgemm_serial, into P's rows)
 *     P_i = softmax(S_i[: i + off + 1]), 0 beyond     (row by row, in place)
 *     O[r0:r1] = P[:, :cols] v[:cols]
 * Saved: contiguous q, k, v and P [..., Tq, Tk]. Heads are spread over the
 * OpenMP threads; each head runs on one thread with single-threaded
 * products, so the result is the same at any thread count. */
typedef struct attn_args {
    int64_t batch, Tq, Tk, D, Dv;
    float scale;
} attn_args;
BG_ARGS_FIT(attn_args);

/* Query rows per block. Smaller blocks skip more of the masked triangle
 * (at Tq = Tk, (1 + ROW_BLOCK/Tq)/2 of the products remain) but make
 * smaller products. bench/attention at [32,4,128,64], 1 thread, forward +
 * backward: 16 rows 17.2 ms, 32 13.4, 64 14.1, 128 (no skipping) 14.9. */
#define ROW_BLOCK 32

/* True when the heads are worth the threads: at least ~1M multiply-adds. */
static bool attn_parallel(const attn_args *a) {
    return a->batch > 1 && a->batch * a->Tq * a->Tk * (a->D + a->Dv) >= ((int64_t)1 << 20);
}

/* One head's forward: P is written, [Tq, Tk] (ld Tk), or when block_only
 * [ROW_BLOCK, Tk] scratch reused by every block (no backward to keep it for). */
static void attn_head_forward(const attn_args *a, const float *q, const float *k, const float *v, float *P,
                              bool block_only, float *o, const bg_kernels *kern) {
    const int64_t Tq = a->Tq, Tk = a->Tk, D = a->D, Dv = a->Dv, off = Tk - Tq;
    for (int64_t r0 = 0; r0 < Tq; r0 += ROW_BLOCK) {
        const int64_t nb = Tq - r0 < ROW_BLOCK ? Tq - r0 : ROW_BLOCK;
        const int64_t cols = r0 + nb + off;   // <= Tk
        float *Pb = block_only ? P : P + r0 * Tk;
        bg_sgemm_serial(false, true, nb, cols, D, a->scale, q + r0 * D, D, k, D, 0.0f, Pb, Tk);
        for (int64_t i = 0; i < nb; i++) {
            const int64_t len = r0 + i + off + 1;   // visible keys of row r0 + i
            float *p = Pb + i * Tk;
            kern->softmax_rows(p, p, 1, len);
            memset(p + len, 0, sizeof *p * (size_t)(Tk - len));
        }
        bg_sgemm_serial(false, false, nb, Dv, cols, 1.0f, Pb, Tk, v, Dv, 0.0f, o + r0 * Dv, Dv);
    }
}

/* Checks the three operands; on success fills *a (all but scale). `op` names
 * the caller in messages (causal_attention, or attention for bg_attention). */
static bool check_attention(bg_ctx *ctx, const char *op, const bg_tensor *q, const bg_tensor *k,
                            const bg_tensor *v, attn_args *a) {
    if (!bg_check_f32(ctx, op, q, "q") || !bg_check_f32(ctx, op, k, "k") || !bg_check_f32(ctx, op, v, "v"))
        return false;
    char sq[BG_SHAPE_STR_MAX], sk[BG_SHAPE_STR_MAX], sv[BG_SHAPE_STR_MAX];
    bg_shape_str(q, sq, sizeof sq);
    bg_shape_str(k, sk, sizeof sk);
    bg_shape_str(v, sv, sizeof sv);
    if (q->ndim < 2 || k->ndim < 2 || v->ndim < 2) {
        bg_ctx_fail(ctx, BG_ERR_SHAPE, "%s: q, k and v need at least 2 dims: q is %s, k is %s, v is %s", op, sq,
                    sk, sv);
        return false;
    }
    bool same = q->ndim == k->ndim && q->ndim == v->ndim;
    for (int i = 0; same && i < q->ndim - 2; i++) same = q->shape[i] == k->shape[i] && q->shape[i] == v->shape[i];
    if (!same) {
        bg_ctx_fail(ctx, BG_ERR_SHAPE,
                    "%s: the leading (batch, head) dims of q, k and v differ: q is %s, k is %s, v is %s", op, sq,
                    sk, sv);
        return false;
    }
    const int nd = q->ndim;
    const int64_t Tq = q->shape[nd - 2], D = q->shape[nd - 1], Tk = k->shape[nd - 2];
    if (k->shape[nd - 1] != D) {
        bg_ctx_fail(ctx, BG_ERR_SHAPE, "%s: head dims differ: q is %s, k is %s", op, sq, sk);
        return false;
    }
    if (v->shape[nd - 2] != Tk) {
        bg_ctx_fail(ctx, BG_ERR_SHAPE, "%s: key and value shapes do not fit: k is %s, v is %s", op, sk, sv);
        return false;
    }
    if (Tq > Tk) {
        bg_ctx_fail(ctx, BG_ERR_SHAPE,
                    "%s: causal attention needs at most as many queries as keys: q is %s, k is %s "
                    "(query i sees keys j <= i + Tk - Tq)",
                    op, sq, sk);
        return false;
    }
    int64_t batch = 1;
    for (int i = 0; i < nd - 2; i++) batch *= q->shape[i];
    *a = (attn_args){.batch = batch, .Tq = Tq, .Tk = Tk, .D = D, .Dv = v->shape[nd - 1]};
    return true;
}

static bg_tensor *causal_attention(bg_ctx *ctx, const char *op, bg_tensor *q, bg_tensor *k, bg_tensor *v,
                                   float scale) {
    attn_args a;
    if (!check_attention(ctx, op, q, k, v, &a)) return NULL;
    if (!isfinite(scale)) return bg_ctx_fail(ctx, BG_ERR_ARG, "%s: scale must be finite: got %g", op, (double)scale);
    a.scale = scale;
    const int nd = q->ndim;
    bg_tensor *qc = bg_contiguous(ctx, q), *kc = bg_contiguous(ctx, k), *vc = bg_contiguous(ctx, v);
    int64_t oshape[BG_MAX_DIMS], pshape[BG_MAX_DIMS];
    memcpy(oshape, q->shape, sizeof oshape);
    memcpy(pshape, q->shape, sizeof pshape);
    oshape[nd - 1] = a.Dv;
    pshape[nd - 1] = a.Tk;
    bg_tensor *out = bg_out(ctx, nd, oshape);
    // P is kept for the backward; without one, each thread reuses one block.
    const bool keep = ctx->grad_enabled && (q->requires_grad || k->requires_grad || v->requires_grad);
    const int nthr = attn_parallel(&a) ? omp_get_max_threads() : 1;
    bg_tensor *P = keep ? bg_out(ctx, nd, pshape)
                        : bg_empty(ctx, BG_DTYPE_F32, 1, (int64_t[]){(int64_t)nthr * ROW_BLOCK * a.Tk});
    if (!qc || !kc || !vc || !out || !P) return NULL;

    const float *Q = bg_f32(qc), *K = bg_f32(kc), *V = bg_f32(vc);
    float *O = bg_f32(out), *Ps = bg_f32(P);
    const bg_kernels *kern = bg_kernels_get();
    const int64_t batch = a.batch, Tq = a.Tq, Tk = a.Tk, D = a.D, Dv = a.Dv;
#pragma omp parallel for schedule(static) num_threads(nthr) if (nthr > 1)
    for (int64_t b = 0; b < batch; b++) {
        float *Pb = keep ? Ps + b * Tq * Tk : Ps + (int64_t)omp_get_thread_num() * ROW_BLOCK * Tk;
        attn_head_forward(&a, Q + b * Tq * D, K + b * Tk * D, V + b * Tk * Dv, Pb, !keep, O + b * Tq * Dv, kern);
    }

    bg_node *n = bg_record(ctx, BG_OP_CAUSAL_ATTENTION, out, 3, (bg_tensor *[]){q, k, v});
    if (n) {
        n->saved[0] = qc;
        n->saved[1] = kc;
        n->saved[2] = vc;
        n->saved[3] = P;
        *BG_ARGS(n, attn_args) = a;
    }
    return ctx->status == BG_OK ? out : NULL;
}

bg_tensor *bg_causal_attention(bg_ctx *ctx, bg_tensor *q, bg_tensor *k, bg_tensor *v, float scale) {
    return causal_attention(ctx, "causal_attention", q, k, v, scale);
}

bg_tensor *bg_causal_attention_named(bg_ctx *ctx, const char *op, bg_tensor *q, bg_tensor *k, bg_tensor *v,
                                   float scale) {
    return causal_attention(ctx, op, q, k, v, scale);
}

/* One head's backward, block by block as the forward (dS in scratch
 * [ROW_BLOCK, Tk]):
 *     dV[:cols] += P^T dO             dP = dO v[:cols]^T
 *     dS_i = P_i * (dP_i - dP_i . P_i)   (0 beyond the visible keys)
 *     dQ[r0:r1] += dS k[:cols] * scale   dK[:cols] += dS^T q[r0:r1] * scale
 * dq, dk, dv may be NULL (no grad) and may alias (q, k, v one tensor): the
 * head's updates run in this order on one thread. */
static void attn_head_backward(const attn_args *a, const float *q, const float *k, const float *v, const float *P,
                               const float *dO, float *dq, float *dk, float *dv, float *dS, const bg_kernels *kern) {
    const int64_t Tq = a->Tq, Tk = a->Tk, D = a->D, Dv = a->Dv, off = Tk - Tq;
    for (int64_t r0 = 0; r0 < Tq; r0 += ROW_BLOCK) {
        const int64_t nb = Tq - r0 < ROW_BLOCK ? Tq - r0 : ROW_BLOCK;
        const int64_t cols = r0 + nb + off;
        const float *Pb = P + r0 * Tk, *dOb = dO + r0 * Dv;
        if (dv) bg_sgemm_serial(true, false, cols, Dv, nb, 1.0f, Pb, Tk, dOb, Dv, 1.0f, dv, Dv);
        if (!dq && !dk) continue;
        bg_sgemm_serial(false, true, nb, cols, Dv, 1.0f, dOb, Dv, v, Dv, 0.0f, dS, cols);
        for (int64_t i = 0; i < nb; i++) {
            const int64_t len = r0 + i + off + 1;
            const float *p = Pb + i * Tk;
            float *g = dS + i * cols;
            const float dot = len > 0 ? kern->dot(g, p, len) : 0.0f;
            for (int64_t j = 0; j < len; j++) g[j] = p[j] * (g[j] - dot);
            memset(g + len, 0, sizeof *g * (size_t)(cols - len));
        }
        if (dq) bg_sgemm_serial(false, false, nb, D, cols, a->scale, dS, cols, k, D, 1.0f, dq + r0 * D, D);
        if (dk) bg_sgemm_serial(true, false, cols, D, nb, a->scale, dS, cols, q + r0 * D, D, 1.0f, dk, D);
    }
}

void bg_op_causal_attention_backward(bg_ctx *ctx, bg_node *n) {
    const attn_args *a = BG_ARGS(n, attn_args);
    float *dq = bg_grad_of(ctx, n->in[0]), *dk = bg_grad_of(ctx, n->in[1]), *dv = bg_grad_of(ctx, n->in[2]);
    if ((!dq && !dk && !dv) || ctx->status != BG_OK) return;
    const int nthr = attn_parallel(a) ? omp_get_max_threads() : 1;
    float *scratch = bg_ctx_alloc(ctx, sizeof(float) * (size_t)((int64_t)nthr * ROW_BLOCK * a->Tk + 1));
    if (!scratch) return;
    const float *Q = bg_f32(n->saved[0]), *K = bg_f32(n->saved[1]), *V = bg_f32(n->saved[2]);
    const float *P = bg_f32(n->saved[3]), *dO = bg_f32(n->out->grad);
    const bg_kernels *kern = bg_kernels_get();
    const int64_t batch = a->batch, Tq = a->Tq, Tk = a->Tk, D = a->D, Dv = a->Dv;
#pragma omp parallel for schedule(static) num_threads(nthr) if (nthr > 1)
    for (int64_t b = 0; b < batch; b++)
        attn_head_backward(a, Q + b * Tq * D, K + b * Tk * D, V + b * Tk * Dv, P + b * Tq * Tk, dO + b * Tq * Dv,
                           dq ? dq + b * Tq * D : NULL, dk ? dk + b * Tk * D : NULL, dv ? dv + b * Tk * Dv : NULL,
                           scratch + (int64_t)omp_get_thread_num() * ROW_BLOCK * Tk, kern);
}
