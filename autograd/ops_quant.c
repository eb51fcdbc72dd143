/* ops_quant.c — the fake-quant autograd op: forward quantizes then
 * dequantizes in one kernel pass (values, and the STE mask when the backward
 * needs it); backward applies the spec's rule. Calls tensor/, kernels/
 * (kernels.h) and quant/'s spec and state functions (quant.h, below
 * autograd): the op's ranges and learned parameters live in a quantizer
 * state. */
#include <math.h>
#include <string.h>

#include "autograd/autograd_internal.h"
#include "kernels/kernels.h"
#include "quant/quant.h"

#define OP "fake_quant"

/* What the backward needs, kept in the arena beside the node. */
typedef struct fq_saved {
    bg_quant_backward rule;
    bool stochastic;
    int64_t outer, channels, inner;
    int32_t qmin, qmax;
    float grad_factor;          /* LSQ / LSQ+ */
    float alpha;                /* PACT */
    const float *x;             /* contiguous input */
    const uint8_t *mask;        /* clipped STE, stochastic LSQ */
    const float *scale;         /* [channels], as used by the forward */
    const float *zero_point;    /* forward zero points (NULL = 0) */
    const float *zero_point_bwd;/* LSQ+: PyTorch's backward zero point, trunc(clamp(z + 0.5)) */
} fq_saved;

bg_tensor *bg_fake_quant(bg_ctx *ctx, bg_tensor *x, const bg_quant_spec *spec, bg_quant_state *st) {
    return bg_fake_quant_codes(ctx, x, spec, st, NULL, NULL);
}

/* y = (clamp(nearbyint(x/s) + z, qmin, qmax) - z) * s, per the spec's
 * granularity; binary: y = (x/s > 0 ? +1 : -1) * s. x any shape -> y same.
 * The kernel writes the codes in the same pass when they are asked for. */
bg_tensor *bg_fake_quant_codes(bg_ctx *ctx, bg_tensor *x, const bg_quant_spec *spec, bg_quant_state *st,
                               bg_tensor **codes_out, bg_quant_params *params_out) {
    if (codes_out) *codes_out = NULL;
    if (!bg_check_f32(ctx, OP, x, "x")) return NULL;
    if (!spec) return bg_ctx_fail(ctx, BG_ERR_ARG, OP ": spec is NULL");
    if (st && !bg_quant_state_enabled(st)) return x;   // fp32 mode

    bg_tensor *xc = bg_contiguous(ctx, x);
    if (!xc) return NULL;
    bg_quant_params p;
    if (bg_quant_params_compute(ctx, spec, st, xc, &p) != BG_OK) return NULL;
    bg_tensor *y = bg_out(ctx, x->ndim, x->shape);
    if (!y) return NULL;
    bg_tensor *codes = NULL;
    if (codes_out && !(codes = bg_empty(ctx, p.qmin < 0 ? BG_DTYPE_I8 : BG_DTYPE_U8, x->ndim, x->shape))) return NULL;
    int8_t *cv = codes ? codes->data : NULL;

    // Inputs: x, then the spec's learned parameters (scale [, zero_point] or alpha).
    bg_tensor *in[4] = {x};
    int n_in = 1;
    bool any = x->requires_grad;
    for (int i = 0; st && i < bg_quant_state_num_params(st) && n_in < 4; i++) {
        in[n_in] = bg_quant_state_param(st, i);
        any |= in[n_in]->requires_grad;
        n_in++;
    }
    const bool record = bg_grad_enabled(ctx) && any;
    const bool stochastic = spec->rounding == BG_QUANT_ROUND_STOCHASTIC && spec->kind != BG_QUANT_BINARY;
    const bool lsq = spec->backward == BG_QUANT_BWD_LSQ || spec->backward == BG_QUANT_BWD_LSQ_PLUS;
    uint8_t *mask = NULL;
    if (record && (spec->backward == BG_QUANT_BWD_CLIPPED_STE || (lsq && stochastic))) {
        mask = bg_ctx_alloc(ctx, (size_t)bg_numel(x) + 1);
        if (!mask) return NULL;
    }

    const bg_quant_kernels *k = bg_quant_kernels_get();
    const float *xv = bg_f32(xc);
    if (spec->kind == BG_QUANT_BINARY)
        k->fake_binary(bg_f32(y), cv, mask, xv, p.outer, p.channels, p.inner, p.scale);
    else if (stochastic)
        k->fake_quant_stochastic(bg_f32(y), cv, mask, xv, p.outer, p.channels, p.inner, p.scale,
                                 p.zero_point, p.qmin, p.qmax, p.key);
    else
        k->fake_quant(bg_f32(y), cv, mask, xv, p.outer, p.channels, p.inner, p.scale, p.zero_point,
                      p.qmin, p.qmax);
    if (codes_out) *codes_out = codes;
    if (params_out) *params_out = p;
    if (!record) return y;

    bg_node *n = bg_record(ctx, BG_OP_FAKE_QUANT, y, n_in, in);
    fq_saved *s = n ? bg_ctx_alloc(ctx, sizeof *s) : NULL;
    if (!s) return bg_ctx_status(ctx) == BG_OK ? y : NULL;
    *s = (fq_saved){
        .rule = spec->backward, .stochastic = stochastic,
        .outer = p.outer, .channels = p.channels, .inner = p.inner,
        .qmin = p.qmin, .qmax = p.qmax, .alpha = p.alpha,
        .x = xv, .mask = mask, .scale = p.scale, .zero_point = p.zero_point,
    };
    if (lsq) {
        // PyTorch: grad_factor = 1/sqrt(numel * quant_max) (whole tensor, also per channel)
        s->grad_factor = spec->grad_scale > 0.0f
                             ? spec->grad_scale
                             : (float)(1.0 / sqrt((double)bg_numel(x) * (double)(p.qmax > 0 ? p.qmax : 1)));
        if (spec->backward == BG_QUANT_BWD_LSQ_PLUS) {
            // The learnable backward reads z as trunc(clamp(z + 0.5, qmin, qmax)),
            // unlike the forward's nearbyint (PyTorch's _get_zero_point_from_tensor).
            float *zb = bg_ctx_alloc(ctx, sizeof(float) * (size_t)(p.channels ? p.channels : 1));
            if (!zb) return NULL;
            const float *z = bg_f32(in[2]);
            for (int64_t c = 0; c < p.channels; c++) {
                float v = z[c] + 0.5f;
                v = v > (float)p.qmin ? v : (float)p.qmin;
                v = v < (float)p.qmax ? v : (float)p.qmax;
                zb[c] = isfinite(v) ? truncf(v) : 0.0f;
            }
            s->zero_point_bwd = zb;
        }
    }
    n->saved[0] = xc;
    n->extra = s;
    return bg_ctx_status(ctx) == BG_OK ? y : NULL;
}

// ---------------------------------------------------------------------------
// backward rules

/* identity STE: dx += dy (BitNet; y = x + (q(x) - x).detach()) */
static void ste_backward(bg_ctx *ctx, bg_node *n) {
    float *dx = bg_grad_of(ctx, n->in[0]);
    if (dx) bg_kernels_get()->add(dx, dx, bg_f32(n->out->grad), bg_numel(n->out));
}

/* clipped STE: dx += dy * 1[qmin <= q <= qmax] (torch.ao's fake_quantize mask) */
static void clipped_ste_backward(bg_ctx *ctx, bg_node *n, const fq_saved *s) {
    float *dx = bg_grad_of(ctx, n->in[0]);
    if (dx) bg_quant_kernels_get()->mask_backward(dx, bg_f32(n->out->grad), s->mask, bg_numel(n->out));
}

/* LSQ / LSQ+ (PyTorch's _fake_quantize_learnable_*_backward):
 *   in range:  dx += dy, ds += dy*(x̂ - x)/s * g
 *   outside:   ds += dy*(qmin - z)*g or dy*(qmax - z)*g, dz += -dy*s*g
 * summed per scale in double; g = the gradient scale. */
static void lsq_backward(bg_ctx *ctx, bg_node *n, const fq_saved *s) {
    float *dx = bg_grad_of(ctx, n->in[0]);
    float *ds = n->n_in > 1 ? bg_grad_of(ctx, n->in[1]) : NULL;
    float *dz = n->n_in > 2 ? bg_grad_of(ctx, n->in[2]) : NULL;
    const int64_t C = s->channels;
    double *sum_s = bg_ctx_alloc(ctx, sizeof(double) * (size_t)(2 * C + 1));
    if (!sum_s) return;
    double *sum_z = sum_s + C;
    memset(sum_s, 0, sizeof(double) * (size_t)(2 * C));
    const float *dy = bg_f32(n->out->grad), *x = s->x, *yv = bg_f32(n->out);
    const float gf = s->grad_factor;
    if (!s->stochastic) {
        bg_quant_kernels_get()->lsq_backward(dx, sum_s, sum_z, dy, x, s->outer, C, s->inner, s->scale,
                                             s->zero_point_bwd, s->qmin, s->qmax, gf);
    } else {
        // The forward's random rounding is in y and the mask: in range,
        // (x̂ - x)/s with x̂ = y; outside, the side of the range decides.
        const float lo = (float)s->qmin, hi = (float)s->qmax, mid = 0.5f * (lo + hi);
        for (int64_t c = 0; c < C; c++) {
            const float sc = s->scale[c], inv = 1.0f / sc, z = s->zero_point ? s->zero_point[c] : 0.0f;
            for (int64_t o = 0; o < s->outer; o++)
                for (int64_t i = (o * C + c) * s->inner, e = i + s->inner; i < e; i++) {
                    float g = dy[i];
                    if (s->mask[i]) {
                        if (dx) dx[i] += g;
                        sum_s[c] += (double)(g * (yv[i] - x[i]) * inv * gf);
                    } else {
                        bool below = x[i] * inv + z < mid;
                        sum_s[c] += (double)((below ? g * (lo - z) : g * (hi - z)) * gf);
                        sum_z[c] += (double)(g * -1.0f * sc * gf);
                    }
                }
        }
    }
    for (int64_t c = 0; c < C; c++) {
        if (ds) ds[c] += (float)sum_s[c];
        if (dz) dz[c] += (float)sum_z[c];
    }
}

/* PACT: y = clip(x, 0, alpha) quantized; dx += dy * 1[0 <= x < alpha],
 * dalpha += sum dy * 1[x >= alpha] (Choi et al. 2018, STE on the rounding). */
static void pact_backward(bg_ctx *ctx, bg_node *n, const fq_saved *s) {
    float *dx = bg_grad_of(ctx, n->in[0]);
    float *da = n->n_in > 1 ? bg_grad_of(ctx, n->in[1]) : NULL;
    const float *dy = bg_f32(n->out->grad), *x = s->x, a = s->alpha;
    double acc = 0.0;
    for (int64_t i = 0, m = bg_numel(n->out); i < m; i++) {
        if (x[i] >= a) acc += (double)dy[i];
        else if (dx && x[i] >= 0.0f) dx[i] += dy[i];
    }
    if (da) da[0] += (float)acc;
}

void bg_op_fake_quant_backward(bg_ctx *ctx, bg_node *n) {
    const fq_saved *s = n->extra;
    switch (s->rule) {
    case BG_QUANT_BWD_STE: ste_backward(ctx, n); break;
    case BG_QUANT_BWD_CLIPPED_STE: clipped_ste_backward(ctx, n, s); break;
    case BG_QUANT_BWD_LSQ:
    case BG_QUANT_BWD_LSQ_PLUS: lsq_backward(ctx, n, s); break;
    case BG_QUANT_BWD_PACT: pact_backward(ctx, n, s); break;
    default: bg_ctx_fail(ctx, BG_ERR_STATE, OP ": unknown backward rule %d", (int)s->rule); break;
    }
}
