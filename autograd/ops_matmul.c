/* ops_matmul.c — the products: matmul (2-D, batched, shared b, transpose
 * flags), linear (x W^T + b, the MLP's hot path) and scaled dot-product
 * attention composed from them. Calls tensor/, kernels/ (bg_sgemm, col_sum)
 * and other autograd builders (attention). Transposed operands are passed to
 * bg_sgemm as strides, never copied; backward sgemms accumulate with beta = 1
 * straight into the grad buffers. Causal attention is ops_attention.c's. */
#include <math.h>
#include <string.h>

#include "autograd/autograd_internal.h"
#include "kernels/kernels.h"

// --- helpers --------------------------------------------------------------------

/* Product of dims [from, to). */
static int64_t dims_prod(const bg_tensor *t, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; i++) p *= t->shape[i];
    return p;
}

/* C = alpha op(A) op(B) + beta C with empty operands handled: BLAS wants
 * leading dimensions >= 1, and K == 0 means C = beta C. */
static void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0) {
        if (beta == 0.0f) memset(C, 0, sizeof *C * (size_t)(M * N));  // ldc == N here
        return;
    }
    bg_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

// --- matmul ------------------------------------------------------------------------
/* What matmul's backward needs: C [batch, M, N] = op(A) [batch, M, K] op(B);
 * shared: one B for the whole batch. */
typedef struct matmul_args {
    bool trans_a, trans_b, shared;
    int64_t batch, M, N, K;
} matmul_args;
BG_ARGS_FIT(matmul_args);

/* C = op(A) op(B); A [B..,M,K] (stored [B..,K,M] when trans_a), B [K,N] shared
 * or [B..,K,N] batched (stored [..,N,K] when trans_b) -> C [B..,M,N].
 * Saved: contiguous A and B; i[] = trans_a, trans_b, batch, M, N, K, shared. */

bg_tensor *bg_matmul(bg_ctx *ctx, bg_tensor *a, bg_tensor *b, bool trans_a, bool trans_b) {
    if (!bg_check_f32(ctx, "matmul", a, "a") || !bg_check_f32(ctx, "matmul", b, "b")) return NULL;
    char sa[BG_SHAPE_STR_MAX], sb[BG_SHAPE_STR_MAX];
    bg_shape_str(a, sa, sizeof sa);
    bg_shape_str(b, sb, sizeof sb);
    if (a->ndim < 2 || b->ndim < 2)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "matmul: operands need at least 2 dims: a is %s, b is %s",
                           sa, sb);
    const int na = a->ndim, nb = b->ndim;
    const bool shared = nb == 2;
    if (!shared) {
        bool same = nb == na;
        for (int i = 0; same && i < na - 2; i++) same = a->shape[i] == b->shape[i];
        if (!same)
            return bg_ctx_fail(ctx, BG_ERR_SHAPE,
                               "matmul: batch dimensions differ: a is %s, b is %s", sa, sb);
    }
    const int64_t M = a->shape[na - (trans_a ? 1 : 2)], Ka = a->shape[na - (trans_a ? 2 : 1)];
    const int64_t Kb = b->shape[nb - (trans_b ? 1 : 2)], N = b->shape[nb - (trans_b ? 2 : 1)];
    if (Ka != Kb) {
        if (trans_a || trans_b)
            return bg_ctx_fail(ctx, BG_ERR_SHAPE,
                               "matmul: inner dimensions differ: a is %s%s, b is %s%s", sa,
                               trans_a ? " (transposed)" : "", sb, trans_b ? " (transposed)" : "");
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "matmul: inner dimensions differ: a is %s, b is %s",
                           sa, sb);
    }
    const int64_t K = Ka, batch = dims_prod(a, 0, na - 2);

    bg_tensor *ac = bg_contiguous(ctx, a), *bc = bg_contiguous(ctx, b);
    int64_t oshape[BG_MAX_DIMS];
    memcpy(oshape, a->shape, sizeof oshape);
    oshape[na - 2] = M;
    oshape[na - 1] = N;
    bg_tensor *out = bg_out(ctx, na, oshape);
    if (!ac || !bc || !out) return NULL;

    const float *A = bg_f32(ac), *B = bg_f32(bc);
    float *C = bg_f32(out);
    const int64_t lda = trans_a ? M : K, ldb = trans_b ? K : N;
    if (shared && !trans_a) {
        // The batch is just more rows of A: one sgemm.
        gemm(false, trans_b, batch * M, N, K, A, lda, B, ldb, 0.0f, C, N);
    } else {
        const int64_t sb_ = shared ? 0 : K * N;
        for (int64_t i = 0; i < batch; i++)
            gemm(trans_a, trans_b, M, N, K, A + i * M * K, lda, B + i * sb_, ldb, 0.0f,
                 C + i * M * N, N);
    }

    bg_node *n = bg_record(ctx, BG_OP_MATMUL, out, 2, (bg_tensor *[]){a, b});
    if (n) {
        n->saved[0] = ac;
        n->saved[1] = bc;
        *BG_ARGS(n, matmul_args) = (matmul_args){
            .trans_a = trans_a, .trans_b = trans_b, .shared = shared, .batch = batch, .M = M, .N = N, .K = K};
    }
    return ctx->status == BG_OK ? out : NULL;
}

/* Differentiates C = op(A) op(B):
 *   d op(A) = dC op(B)^T  ->  dA += dC op(B)^T, or (trans_a) dA += op(B) dC^T
 *   d op(B) = op(A)^T dC  ->  dB += op(A)^T dC, or (trans_b) dB += dC^T op(A)
 * A shared B sums its gradient over the batch (beta = 1 each time). */
void bg_op_matmul_backward(bg_ctx *ctx, bg_node *n) {
    const matmul_args *a = BG_ARGS(n, matmul_args);
    const bool ta = a->trans_a, tb = a->trans_b, shared = a->shared;
    const int64_t batch = a->batch, M = a->M, N = a->N, K = a->K;
    const int64_t lda = ta ? M : K, ldb = tb ? K : N;
    const float *A = bg_f32(n->saved[0]), *B = bg_f32(n->saved[1]);
    const float *dC = bg_f32(n->out->grad);
    float *dA = bg_grad_of(ctx, n->in[0]);
    float *dB = bg_grad_of(ctx, n->in[1]);
    const int64_t sb = shared ? 0 : K * N;

    if (dA) {
        if (!ta && shared) {
            gemm(false, !tb, batch * M, K, N, dC, N, B, ldb, 1.0f, dA, K);
        } else {
            for (int64_t i = 0; i < batch; i++) {
                const float *dCi = dC + i * M * N, *Bi = B + i * sb;
                float *dAi = dA + i * M * K;
                if (!ta)
                    gemm(false, !tb, M, K, N, dCi, N, Bi, ldb, 1.0f, dAi, K);
                else
                    gemm(tb, true, K, M, N, Bi, ldb, dCi, N, 1.0f, dAi, M);
            }
        }
    }
    if (dB) {
        if (!ta && shared) {
            // Rows of every batch are rows of one tall A: one sgemm sums them.
            if (!tb)
                gemm(true, false, K, N, batch * M, A, K, dC, N, 1.0f, dB, N);
            else
                gemm(true, false, N, K, batch * M, dC, N, A, K, 1.0f, dB, K);
        } else {
            for (int64_t i = 0; i < batch; i++) {
                const float *Ai = A + i * M * K, *dCi = dC + i * M * N;
                float *dBi = dB + i * sb;
                if (!tb)
                    gemm(!ta, false, K, N, M, Ai, lda, dCi, N, 1.0f, dBi, N);
                else
                    gemm(true, ta, N, K, M, dCi, N, Ai, lda, 1.0f, dBi, K);
            }
        }
    }
}

// --- linear -------------------------------------------------------------------------
/* y = x W^T + b; x [...,K] viewed as [rows,K], W [M,K], b [M] -> y [...,M].
 * One sgemm with beta = 1 onto rows pre-filled with b.
 * Saved: contiguous x and W; i[] = rows, M, K. */

bg_tensor *bg_linear(bg_ctx *ctx, bg_tensor *x, bg_tensor *w, bg_tensor *b) {
    if (!bg_check_f32(ctx, "linear", x, "x") || !bg_check_f32(ctx, "linear", w, "w")) return NULL;
    if (b && !bg_check_f32(ctx, "linear", b, "b")) return NULL;
    char sx[BG_SHAPE_STR_MAX], sw[BG_SHAPE_STR_MAX], sbias[BG_SHAPE_STR_MAX];
    bg_shape_str(x, sx, sizeof sx);
    bg_shape_str(w, sw, sizeof sw);
    if (w->ndim != 2)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "linear: w must be 2-D [out,in]: w is %s", sw);
    if (x->ndim < 1)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "linear: x needs at least 1 dim: x is %s", sx);
    const int64_t M = w->shape[0], K = w->shape[1];
    if (x->shape[x->ndim - 1] != K)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "linear: input features differ: x is %s, w is %s", sx,
                           sw);
    if (b && (b->ndim != 1 || b->shape[0] != M))
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "linear: bias shape differs: b is %s, want [%lld]",
                           bg_shape_str(b, sbias, sizeof sbias), (long long)M);
    const int64_t rows = dims_prod(x, 0, x->ndim - 1);

    bg_tensor *xc = bg_contiguous(ctx, x), *wc = bg_contiguous(ctx, w);
    bg_tensor *bc = b ? bg_contiguous(ctx, b) : NULL;
    int64_t oshape[BG_MAX_DIMS];
    memcpy(oshape, x->shape, sizeof oshape);
    oshape[x->ndim - 1] = M;
    bg_tensor *out = bg_out(ctx, x->ndim, oshape);
    if (!xc || !wc || (b && !bc) || !out) return NULL;

    float *y = bg_f32(out);
    if (bc) {
        const float *bias = bg_f32(bc);
        for (int64_t r = 0; r < rows; r++) memcpy(y + r * M, bias, sizeof *y * (size_t)M);
    }
    gemm(false, true, rows, M, K, bg_f32(xc), K, bg_f32(wc), K, bc ? 1.0f : 0.0f, y, M);

    bg_node *n = bg_record(ctx, BG_OP_LINEAR, out, 3, (bg_tensor *[]){x, w, b});
    if (n) {
        n->saved[0] = xc;
        n->saved[1] = wc;
        *BG_ARGS(n, bg_linear_args) = (bg_linear_args){.rows = rows, .M = M, .K = K};
    }
    return ctx->status == BG_OK ? out : NULL;
}

/* From y = x W^T + b: dx += dy W, dW += dy^T x, db += sum_rows dy. */
void bg_op_linear_backward(bg_ctx *ctx, bg_node *n) {
    const bg_linear_args *a = BG_ARGS(n, bg_linear_args);
    const int64_t rows = a->rows, M = a->M, K = a->K;
    const float *x = bg_f32(n->saved[0]), *w = bg_f32(n->saved[1]);
    const float *dy = bg_f32(n->out->grad);
    float *dx = bg_grad_of(ctx, n->in[0]);
    float *dw = bg_grad_of(ctx, n->in[1]);
    float *db = bg_grad_of(ctx, n->in[2]);
    if (dx) gemm(false, false, rows, K, M, dy, M, w, K, 1.0f, dx, K);
    if (dw) gemm(true, false, M, K, rows, dy, M, x, K, 1.0f, dw, K);
    if (db && rows > 0 && M > 0) bg_kernels_get()->col_sum(db, dy, rows, M);
}

// --- attention ------------------------------------------------------------------------
/* softmax(q k^T / sqrt(D) + mask) v; q [..,Tq,D], k [..,Tk,D], v [..,Tk,Dv]
 * -> [..,Tq,Dv]. Causal: query i sees keys j <= i + Tk - Tq; the fused op
 * bg_causal_attention (ops_attention.c) computes it, unless k and v are 2-D
 * and shared by a batched q: then a constant [Tq,Tk] mask, -inf where
 * j > i + Tk - Tq, broadcast by bg_add. No node of its own otherwise: the
 * pieces record theirs. */

bg_tensor *bg_attention(bg_ctx *ctx, bg_tensor *q, bg_tensor *k, bg_tensor *v, bool causal) {
    if (!bg_check_f32(ctx, "attention", q, "q") || !bg_check_f32(ctx, "attention", k, "k") ||
        !bg_check_f32(ctx, "attention", v, "v"))
        return NULL;
    char sq[BG_SHAPE_STR_MAX], sk[BG_SHAPE_STR_MAX], sv[BG_SHAPE_STR_MAX];
    bg_shape_str(q, sq, sizeof sq);
    bg_shape_str(k, sk, sizeof sk);
    bg_shape_str(v, sv, sizeof sv);
    if (q->ndim < 2 || k->ndim < 2 || v->ndim < 2)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE,
                           "attention: q, k and v need at least 2 dims: q is %s, k is %s, v is %s",
                           sq, sk, sv);
    const int64_t Tq = q->shape[q->ndim - 2], D = q->shape[q->ndim - 1];
    const int64_t Tk = k->shape[k->ndim - 2];
    if (k->shape[k->ndim - 1] != D)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "attention: head dims differ: q is %s, k is %s", sq,
                           sk);
    if (v->shape[v->ndim - 2] != Tk || v->ndim != k->ndim)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE,
                           "attention: key and value shapes do not fit: k is %s, v is %s", sk, sv);

    const float scale = D > 0 ? 1.0f / sqrtf((float)D) : 1.0f;
    const bool shared_kv = k->ndim == 2 && q->ndim > 2;
    if (causal && !shared_kv) return bg_causal_attention_named(ctx, "attention", q, k, v, scale);
    if (causal && Tq > Tk)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE,
                           "attention: causal attention needs at most as many queries as keys: q is %s, k is %s "
                           "(query i sees keys j <= i + Tk - Tq)",
                           sq, sk);

    bg_tensor *s = bg_matmul(ctx, q, k, false, true);  // [..,Tq,Tk]
    s = bg_scale(ctx, s, scale);
    if (causal && s) {
        bg_tensor *mask = bg_out(ctx, 2, (int64_t[]){Tq, Tk});
        if (!mask) return NULL;
        float *m = bg_f32(mask);
        for (int64_t i = 0; i < Tq; i++)
            for (int64_t j = 0; j < Tk; j++) m[i * Tk + j] = j > i + (Tk - Tq) ? -INFINITY : 0.0f;
        s = bg_add(ctx, s, mask);
    }
    bg_tensor *p = bg_softmax(ctx, s, -1);
    return bg_matmul(ctx, p, v, false, false);
}
