/* test_gradcheck.c — a numerical gradient check for every op (bg_gradcheck:
 * loss = sum(out * R), central differences accumulated in double).
 *
 * op_cases[] has ONE entry per bg_op value, indexed by BG_OP_*; the test
 * fails when a value has none, and when an entry's forward does not record
 * a node of its op (so an entry cannot silently test something else).
 * extra_cases[] covers variants and composites (attention, gelu tanh,
 * broadcasting, batched/transposed matmul, conv2d options, cross-entropy
 * options). Inputs are kept away from kinks (relu/abs/clamp at 0 and the
 * bounds, ties in max and max-pooling) by more than eps.
 *
 * An op whose true derivative is useless for a numerical check (fake
 * quantization: 0 almost everywhere, its backward is an STE/LSQ rule) sets
 * .check instead: a function that builds the op on the case's inputs and
 * compares its backward with the rule's formula (STYLE.md, "Gradcheck for
 * every op"). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/autograd_internal.h"
#include "tests/test_util.h"

// ---------------------------------------------------------------------------
// input specs

typedef enum gen_kind {
    GEN_UNIFORM = 0,  /* U(lo, hi) */
    GEN_SIGNED,       /* |x| ~ U(lo, hi), random sign: away from 0 */
    GEN_AVOID,        /* U(lo, hi), pushed at least 0.05 away from p0 and p1 */
    GEN_DISTINCT,     /* a permutation of values spaced lo apart: no ties */
    GEN_INT,          /* i32 uniform in [lo, hi) */
    GEN_VALUES,       /* i32 from ivals */
} gen_kind;

typedef struct input_spec {
    bg_dtype dtype;
    int ndim;
    int64_t shape[BG_MAX_DIMS];
    gen_kind gen;
    float lo, hi, p0, p1;
    const int32_t *ivals;
} input_spec;

#define NDIMS(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define IN_U(l, h, ...) \
    {.dtype = BG_DTYPE_F32, .ndim = NDIMS(__VA_ARGS__), .shape = {__VA_ARGS__}, .gen = GEN_UNIFORM, .lo = (l), .hi = (h)}
#define IN_SIGNED(l, h, ...) \
    {.dtype = BG_DTYPE_F32, .ndim = NDIMS(__VA_ARGS__), .shape = {__VA_ARGS__}, .gen = GEN_SIGNED, .lo = (l), .hi = (h)}
#define IN_AVOID(l, h, a, b, ...)                                                                 \
    {.dtype = BG_DTYPE_F32, .ndim = NDIMS(__VA_ARGS__), .shape = {__VA_ARGS__}, .gen = GEN_AVOID, \
     .lo = (l), .hi = (h), .p0 = (a), .p1 = (b)}
#define IN_DISTINCT(step, ...) \
    {.dtype = BG_DTYPE_F32, .ndim = NDIMS(__VA_ARGS__), .shape = {__VA_ARGS__}, .gen = GEN_DISTINCT, .lo = (step)}
#define IN_INT(l, h, ...) \
    {.dtype = BG_DTYPE_I32, .ndim = NDIMS(__VA_ARGS__), .shape = {__VA_ARGS__}, .gen = GEN_INT, .lo = (l), .hi = (h)}
#define IN_VALUES(vals, ...) \
    {.dtype = BG_DTYPE_I32, .ndim = NDIMS(__VA_ARGS__), .shape = {__VA_ARGS__}, .gen = GEN_VALUES, .ivals = (vals)}

static void fill_input(bg_tensor *t, const input_spec *s, bg_rng *rng) {
    int64_t n = bg_numel(t);
    float *f = bg_f32(t);
    int32_t *iv = (int32_t *)t->data;
    switch (s->gen) {
    case GEN_UNIFORM:
        for (int64_t i = 0; i < n; i++) f[i] = s->lo + (s->hi - s->lo) * bg_rng_uniform(rng);
        break;
    case GEN_SIGNED:
        for (int64_t i = 0; i < n; i++) {
            float m = s->lo + (s->hi - s->lo) * bg_rng_uniform(rng);
            f[i] = bg_rng_uniform(rng) < 0.5f ? -m : m;
        }
        break;
    case GEN_AVOID:
        for (int64_t i = 0; i < n; i++) {
            float x = s->lo + (s->hi - s->lo) * bg_rng_uniform(rng);
            const float pts[2] = {s->p0, s->p1}, margin = 0.05f;
            for (int k = 0; k < 2; k++)
                if (fabsf(x - pts[k]) < margin) x = x < pts[k] ? x - margin : x + margin;
            f[i] = x;
        }
        break;
    case GEN_DISTINCT:
        // Fisher-Yates over 0..n-1, centred, spaced by lo, jittered < lo/4.
        for (int64_t i = 0; i < n; i++) f[i] = (float)i;
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)bg_rng_below(rng, (uint64_t)i + 1);
            float tmp = f[i];
            f[i] = f[j];
            f[j] = tmp;
        }
        for (int64_t i = 0; i < n; i++)
            f[i] = (f[i] - (float)n / 2) * s->lo + 0.25f * s->lo * bg_rng_uniform(rng);
        break;
    case GEN_INT:
        for (int64_t i = 0; i < n; i++) iv[i] = (int32_t)s->lo + (int32_t)bg_rng_below(rng, (uint64_t)(s->hi - s->lo));
        break;
    case GEN_VALUES:
        for (int64_t i = 0; i < n; i++) iv[i] = s->ivals[i];
        break;
    }
}

// ---------------------------------------------------------------------------
// cases

typedef struct gc_case gc_case;
typedef struct gc_case {
    const char *name;
    bg_op op;               /* the op the forward must record (NONE: don't check) */
    bg_gradcheck_fn fn;
    int n_in;
    input_spec in[4];
    double eps, atol, rtol;
    /* Optional replacement for bg_gradcheck (see the top comment): returns
     * true when the backward matches the op's rule; prints its own report. */
    bool (*check)(const gc_case *c, bg_tensor *const *in);
} gc_case;

#define IN0 in[0]
#define IN1 in[1]
#define IN2 in[2]
#define FN(name) static bg_tensor *name(bg_ctx *ctx, bg_tensor *const *in, void *user)
#define UNUSED (void)user

FN(f_add) { UNUSED; return bg_add(ctx, IN0, IN1); }
FN(f_sub) { UNUSED; return bg_sub(ctx, IN0, IN1); }
FN(f_mul) { UNUSED; return bg_mul(ctx, IN0, IN1); }
FN(f_div) { UNUSED; return bg_div(ctx, IN0, IN1); }
FN(f_scale) { UNUSED; return bg_scale(ctx, IN0, -1.7f); }
FN(f_neg) { UNUSED; return bg_neg(ctx, IN0); }
FN(f_exp) { UNUSED; return bg_exp(ctx, IN0); }
FN(f_log) { UNUSED; return bg_log(ctx, IN0); }
FN(f_sqrt) { UNUSED; return bg_sqrt(ctx, IN0); }
FN(f_abs) { UNUSED; return bg_abs(ctx, IN0); }
FN(f_clamp) { UNUSED; return bg_clamp(ctx, IN0, -0.5f, 0.7f); }
FN(f_relu) { UNUSED; return bg_relu(ctx, IN0); }
FN(f_leaky_relu) { UNUSED; return bg_leaky_relu(ctx, IN0, 0.1f); }
FN(f_gelu) { UNUSED; return bg_gelu(ctx, IN0, false); }
FN(f_gelu_tanh) { UNUSED; return bg_gelu(ctx, IN0, true); }
FN(f_silu) { UNUSED; return bg_silu(ctx, IN0); }
FN(f_sigmoid) { UNUSED; return bg_sigmoid(ctx, IN0); }
FN(f_tanh) { UNUSED; return bg_tanh(ctx, IN0); }
/* The same mask on every evaluation: a fresh generator with a fixed seed. */
FN(f_dropout) {
    UNUSED;
    bg_rng rng;
    bg_rng_seed(&rng, 77);
    return bg_dropout(ctx, IN0, 0.3f, &rng);
}
FN(f_sum) { UNUSED; return bg_sum(ctx, IN0, 1, false); }
FN(f_sum_keepdim) { UNUSED; return bg_sum(ctx, IN0, -1, true); }
FN(f_sum_all) { UNUSED; return bg_sum_all(ctx, IN0); }
FN(f_mean) { UNUSED; return bg_mean(ctx, IN0, 0, false); }
FN(f_mean_all) { UNUSED; return bg_mean_all(ctx, IN0); }
FN(f_max) { UNUSED; return bg_max(ctx, IN0, 1, false); }
FN(f_max_keepdim) { UNUSED; return bg_max(ctx, IN0, -1, true); }
FN(f_max_all) { UNUSED; return bg_max_all(ctx, IN0); }
FN(f_softmax) { UNUSED; return bg_softmax(ctx, IN0, -1); }
FN(f_softmax_axis0) { UNUSED; return bg_softmax(ctx, IN0, 0); }
FN(f_log_softmax) { UNUSED; return bg_log_softmax(ctx, IN0, -1); }
FN(f_log_softmax_axis1) { UNUSED; return bg_log_softmax(ctx, IN0, 1); }
FN(f_cross_entropy) { UNUSED; return bg_cross_entropy(ctx, IN0, IN1, NULL); }
FN(f_cross_entropy_smooth_ignore) {
    UNUSED;
    bg_cross_entropy_opts o = {.label_smoothing = 0.1f, .ignore_index = 2};
    return bg_cross_entropy(ctx, IN0, IN1, &o);
}
FN(f_mse) { UNUSED; return bg_mse(ctx, IN0, IN1); }
FN(f_reshape) { UNUSED; return bg_reshape(ctx, IN0, BG_SHAPE(4, 6)); }
FN(f_reshape_infer) { UNUSED; return bg_reshape(ctx, IN0, BG_SHAPE(3, 8)); }
FN(f_permute) { UNUSED; return bg_permute(ctx, IN0, (const int[]){2, 0, 1}); }
FN(f_transpose) { UNUSED; return bg_transpose(ctx, IN0, 0, 2); }
FN(f_concat) { UNUSED; return bg_concat(ctx, in, 3, 1); }
FN(f_concat_axis0) { UNUSED; return bg_concat(ctx, in, 2, 0); }
FN(f_slice) { UNUSED; return bg_slice(ctx, IN0, 1, 1, 3); }
FN(f_embedding) { UNUSED; return bg_embedding(ctx, IN0, IN1); }
FN(f_matmul) { UNUSED; return bg_matmul(ctx, IN0, IN1, false, false); }
FN(f_matmul_ta) { UNUSED; return bg_matmul(ctx, IN0, IN1, true, false); }
FN(f_matmul_tb) { UNUSED; return bg_matmul(ctx, IN0, IN1, false, true); }
FN(f_matmul_tatb) { UNUSED; return bg_matmul(ctx, IN0, IN1, true, true); }
FN(f_linear) { UNUSED; return bg_linear(ctx, IN0, IN1, IN2); }
FN(f_linear_nobias) { UNUSED; return bg_linear(ctx, IN0, IN1, NULL); }
FN(f_layernorm) { UNUSED; return bg_layernorm(ctx, IN0, IN1, IN2, 1e-5f); }
FN(f_rmsnorm) { UNUSED; return bg_rmsnorm(ctx, IN0, IN1, 1e-6f); }
FN(f_conv2d) { UNUSED; return bg_conv2d(ctx, IN0, IN1, IN2, NULL); }
FN(f_conv2d_stride_pad) {
    UNUSED;
    bg_conv2d_opts o = {.stride = {2, 2}, .padding = {1, 1}, .dilation = {1, 1}, .groups = 1};
    return bg_conv2d(ctx, IN0, IN1, IN2, &o);
}
FN(f_conv2d_dilation) {
    UNUSED;
    bg_conv2d_opts o = {.stride = {1, 1}, .padding = {2, 2}, .dilation = {2, 2}, .groups = 1};
    return bg_conv2d(ctx, IN0, IN1, NULL, &o);
}
FN(f_conv2d_groups) {
    UNUSED;
    bg_conv2d_opts o = {.stride = {2, 1}, .padding = {1, 0}, .dilation = {1, 1}, .groups = 2};
    return bg_conv2d(ctx, IN0, IN1, IN2, &o);
}
FN(f_conv2d_pad1) {
    UNUSED;
    bg_conv2d_opts o = {.stride = {1, 1}, .padding = {1, 1}, .dilation = {1, 1}, .groups = 1};
    return bg_conv2d(ctx, IN0, IN1, IN2, &o);
}
FN(f_max_pool2d) { UNUSED; return bg_max_pool2d(ctx, IN0, 2, 2, 0); }
FN(f_max_pool2d_pad) { UNUSED; return bg_max_pool2d(ctx, IN0, 3, 2, 1); }
FN(f_avg_pool2d) { UNUSED; return bg_avg_pool2d(ctx, IN0, 2, 2, 0); }
FN(f_avg_pool2d_pad) { UNUSED; return bg_avg_pool2d(ctx, IN0, 3, 2, 1); }
FN(f_attention) { UNUSED; return bg_attention(ctx, IN0, IN1, IN2, false); }
FN(f_attention_causal) { UNUSED; return bg_attention(ctx, IN0, IN1, IN2, true); }
FN(f_rope) { UNUSED; return bg_rope(ctx, IN0, 0, 10000.0f); }
FN(f_rope_far) { UNUSED; return bg_rope(ctx, IN0, 4000, 500.0f); }
/* A block for bg_recompute: y = tanh(x * w) + x, w read from the case's
 * second input (an arena leaf: its gradient comes from the recomputed run). */
static bg_tensor *recompute_block(bg_ctx *ctx, void *user, bg_tensor *x) {
    return bg_add(ctx, bg_tanh(ctx, bg_mul(ctx, x, (bg_tensor *)user)), x);
}
FN(f_recompute) {
    UNUSED;
    return bg_recompute(ctx, &(bg_recompute_fn){.forward = recompute_block, .user = IN1}, IN0);
}
FN(f_causal_attention) { UNUSED; return bg_causal_attention(ctx, IN0, IN1, IN2, 0.6f); }
/* A small composite: linear -> gelu -> layernorm -> cross-entropy. */
FN(f_mlp_block) {
    UNUSED;
    bg_tensor *h = bg_gelu(ctx, bg_linear(ctx, IN0, IN1, NULL), false);
    h = bg_layernorm(ctx, h, NULL, NULL, 1e-5f);
    return bg_cross_entropy(ctx, h, in[2], NULL);
}

/* The state of the latest fake-quant forward. The tape node reads the
 * state's own (unbound) parameters, e.g. LSQ+'s zero point, during backward,
 * so a state lives until the next forward (bg_gradcheck runs backward right
 * after its first forward) or the end of the case. */
static bg_quant_state *fq_live;
static void fq_release(void) {
    bg_quant_state_free(fq_live);
    fq_live = NULL;
}

/* Fake quantization (ops_quant.c) under a spec string; param (the learned
 * step or alpha, may be NULL) is bound to the state as given. */
static bg_tensor *fake_quant_with(bg_ctx *ctx, bg_tensor *x, const char *str, bg_tensor *param) {
    bg_quant_spec s;
    if (bg_quant_spec_parse(str, &s) != BG_OK) return bg_ctx_fail(ctx, BG_ERR_ARG, "%s", bg_last_error());
    bg_quant_state *st = NULL;
    if (bg_quant_spec_is_stateful(&s) && bg_quant_state_new(&s, x->ndim, x->shape, &st) != BG_OK)
        return bg_ctx_fail(ctx, BG_ERR_ARG, "%s", bg_last_error());
    if (param && bg_quant_state_bind_param(st, 0, param) != BG_OK) {
        bg_quant_state_free(st);
        return bg_ctx_fail(ctx, BG_ERR_ARG, "%s", bg_last_error());
    }
    bg_quant_state_set_initialized(st, true);
    bg_tensor *y = bg_fake_quant(ctx, x, &s, st);
    fq_release();
    fq_live = st;
    return y;
}
static bg_tensor *detached(bg_ctx *ctx, bg_tensor *x) { return bg_view_reshape(ctx, x, x->ndim, x->shape); }
/* int8 with a fixed step 1e-3 and eps 1e-2: a central difference spans 20
 * levels, so the staircase's slope is 1 in range and 0 beyond it, as the
 * clipped STE says (inputs kept 0.05 away from the bounds -0.128, 0.127). */
FN(f_fake_quant) { UNUSED; return fake_quant_with(ctx, IN0, "int8:scale=0.001", NULL); }
FN(f_fake_quant_ste) { UNUSED; return fake_quant_with(ctx, IN0, "int8:scale=0.001:ste", NULL); }
/* Learned-range gradients where they are true derivatives: every x beyond the
 * range (x held fixed), so y = qmin*s or qmax*s (LSQ, LSQ+ with z = 0) and
 * y = alpha or 0 (PACT). In range they are STE rules: see .check below. */
FN(f_fake_quant_lsq_clipped) { UNUSED; return fake_quant_with(ctx, detached(ctx, IN0), "int3:lsq:gscale=1", IN1); }
FN(f_fake_quant_lsq_plus_clipped) {
    UNUSED;
    return fake_quant_with(ctx, detached(ctx, IN0), "int3:lsq_plus:gscale=1", IN1);
}
FN(f_fake_quant_pact_clipped) { UNUSED; return fake_quant_with(ctx, detached(ctx, IN0), "int4:pact", IN1); }
FN(f_fake_quant_lsq) { UNUSED; return fake_quant_with(ctx, IN0, "int3:lsq:gscale=1", IN1); }

/* LSQ in range and clipped, against the formula: with u = x*(1/s) and q =
 * nearbyint(u), dx = R*1[-4 <= q <= 3]; ds = sum R*(q - u) in range,
 * R*qmin or R*qmax beyond it (int3, gradient scale 1). */
static bool check_fake_quant_lsq(const gc_case *c, bg_tensor *const *in) {
    bg_ctx *ctx = bg_ctx_new(0);
    for (int i = 0; i < 2; i++) memset(in[i]->grad->data, 0, bg_nbytes(in[i]->grad));
    bg_tensor *y = c->fn(ctx, in, NULL);
    int64_t n = bg_numel(in[0]);
    bg_tensor *r = y ? bg_empty(ctx, BG_DTYPE_F32, y->ndim, y->shape) : NULL;
    bg_rng rng;
    bg_rng_seed(&rng, 0x5eed);
    for (int64_t i = 0; r && i < n; i++) bg_f32(r)[i] = 2.0f * bg_rng_uniform(&rng) - 1.0f;
    bool ok = r && bg_backward_with_grad(ctx, y, r) == BG_OK;
    const float *x = bg_f32(in[0]), *R = r ? bg_f32(r) : NULL, *dx = bg_f32(in[0]->grad);
    const float s = bg_f32(in[1])[0], inv = 1.0f / s;
    double ds = 0.0, err = 0.0;
    int64_t clipped = 0;
    for (int64_t i = 0; ok && i < n; i++) {
        float u = x[i] * inv, q = nearbyintf(u);
        bool inside = q >= -4.0f && q <= 3.0f;
        clipped += !inside;
        ds += inside ? (double)R[i] * ((double)q - (double)u) : (double)R[i] * (q < -4.0f ? -4.0 : 3.0);
        err = fmax(err, fabs((double)dx[i] - (inside ? (double)R[i] : 0.0)));
    }
    double got = bg_f32(in[1]->grad)[0];
    ok = ok && err == 0.0 && fabs(got - ds) <= 1e-5 * fmax(1.0, fabs(ds)) && clipped > 0 && clipped < n;
    printf("%-28s %-4s rule check: dx max err %.2e, ds %.7g vs formula %.7g (%lld of %lld clipped)\n", c->name,
           ok ? "ok" : "FAIL", err, got, ds, (long long)clipped, (long long)n);
    bg_ctx_free(ctx);
    return ok;
}

/* qlinear_int on fake-quantized operands (int8 step 0.01, ternary step
 * 0.05, both identity STE) against the same fake quants + bg_linear (user
 * non-NULL): the forward is exact integer arithmetic, so it is compared with
 * the f32 product and the backward with linear's, not by differences. */
FN(f_qlinear_int) {
    bg_tensor *xq = fake_quant_with(ctx, IN0, "int8:scale=0.01:ste", NULL);
    bg_quant_state *keep = fq_live;
    fq_live = NULL;
    bg_tensor *wq = fake_quant_with(ctx, IN1, "ternary:scale=0.05:ste", NULL);
    bg_quant_state_free(keep);   // stateless specs: no state
    if (user) return bg_linear(ctx, xq, wq, IN2);
    bg_tensor *xs = bg_empty(ctx, BG_DTYPE_F32, 1, (int64_t[]){1}), *ws = bg_empty(ctx, BG_DTYPE_F32, 1, (int64_t[]){1});
    if (!xs || !ws) return NULL;
    bg_f32(xs)[0] = 0.01f, bg_f32(ws)[0] = 0.05f;
    return bg_qlinear_int(ctx, xq, wq, IN2, xs, ws);
}

/* Runs c->fn with user NULL (qlinear_int) and non-NULL (f32 reference),
 * each with the same random upstream gradient: outputs within float
 * rounding (rel 1e-5 of the largest), input grads identical. */
static bool check_qlinear_int(const gc_case *c, bg_tensor *const *in) {
    float *y[2] = {0}, *g[2][3] = {{0}};
    int64_t ny = 0;
    bool ok = true;
    for (int path = 0; path < 2 && ok; path++) {
        bg_ctx *ctx = bg_ctx_new(0);
        for (int i = 0; i < c->n_in; i++) memset(in[i]->grad->data, 0, bg_nbytes(in[i]->grad));
        bg_tensor *out = c->fn(ctx, in, path ? (void *)1 : NULL);
        bg_tensor *r = out ? bg_empty(ctx, BG_DTYPE_F32, out->ndim, out->shape) : NULL;
        ok = r != NULL;
        if (ok) {
            ny = bg_numel(out);
            bg_rng rng;
            bg_rng_seed(&rng, 0x5eed);
            for (int64_t i = 0; i < ny; i++) bg_f32(r)[i] = 2.0f * bg_rng_uniform(&rng) - 1.0f;
            ok = bg_backward_with_grad(ctx, out, r) == BG_OK;
        }
        if (ok) {
            y[path] = malloc(sizeof(float) * (size_t)ny);
            memcpy(y[path], bg_f32(out), sizeof(float) * (size_t)ny);
            for (int i = 0; i < c->n_in; i++) {
                g[path][i] = malloc(bg_nbytes(in[i]->grad));
                memcpy(g[path][i], in[i]->grad->data, bg_nbytes(in[i]->grad));
            }
        }
        bg_ctx_free(ctx);
    }
    double ymax = 0.0, yerr = 0.0, gerr = 0.0;
    for (int64_t i = 0; ok && i < ny; i++) {
        ymax = fmax(ymax, fabs((double)y[1][i]));
        yerr = fmax(yerr, fabs((double)y[0][i] - (double)y[1][i]));
    }
    for (int i = 0; ok && i < c->n_in; i++)
        for (int64_t k = 0; k < bg_numel(in[i]); k++) gerr = fmax(gerr, fabs((double)g[0][i][k] - (double)g[1][i][k]));
    ok = ok && ymax > 0.0 && yerr <= 1e-5 * ymax && gerr == 0.0;
    printf("%-28s %-4s vs fake quant + linear: y max rel err %.2e, grads max abs diff %.2e\n", c->name,
           ok ? "ok" : "FAIL", ymax > 0.0 ? yerr / ymax : 0.0, gerr);
    for (int p = 0; p < 2; p++) {
        free(y[p]);
        for (int i = 0; i < 3; i++) free(g[p][i]);
    }
    return ok;
}

static const int32_t ce_labels_ignore[8] = {0, 2, 4, 1, 2, 3, 0, 4};
static const int32_t emb_ids[6] = {0, 3, 3, 4, 1, 0};  /* repeats: grads accumulate */

/* Default tolerances for float32 forwards with eps = 1e-3. */
#define TOL .eps = 1e-3, .atol = 5e-4, .rtol = 5e-3
/* Products (matmul, linear, conv2d) are linear in each input: central
 * differences have no truncation error, so a larger eps only shrinks the
 * float32 rounding noise of the loss. */
#define TOL_LINEAR .eps = 1e-2, .atol = 5e-4, .rtol = 5e-3

static const gc_case op_cases[BG_OP_COUNT] = {
    [BG_OP_ADD]        = {"add", BG_OP_ADD, f_add, 2, {IN_U(-1, 1, 3, 4), IN_U(-1, 1, 3, 4)}, TOL},
    [BG_OP_SUB]        = {"sub", BG_OP_SUB, f_sub, 2, {IN_U(-1, 1, 3, 4), IN_U(-1, 1, 4)}, TOL},
    [BG_OP_MUL]        = {"mul", BG_OP_MUL, f_mul, 2, {IN_U(-1, 1, 3, 4), IN_U(-1, 1, 3, 4)}, TOL},
    [BG_OP_DIV]        = {"div", BG_OP_DIV, f_div, 2, {IN_U(-1, 1, 3, 4), IN_SIGNED(0.5, 2, 3, 4)}, TOL},
    [BG_OP_SCALE]      = {"scale", BG_OP_SCALE, f_scale, 1, {IN_U(-1, 1, 3, 4)}, TOL},
    [BG_OP_NEG]        = {"neg", BG_OP_NEG, f_neg, 1, {IN_U(-1, 1, 3, 4)}, TOL},
    [BG_OP_EXP]        = {"exp", BG_OP_EXP, f_exp, 1, {IN_U(-2, 2, 3, 4)}, TOL},
    [BG_OP_LOG]        = {"log", BG_OP_LOG, f_log, 1, {IN_U(0.5, 3, 3, 4)}, TOL},
    [BG_OP_SQRT]       = {"sqrt", BG_OP_SQRT, f_sqrt, 1, {IN_U(0.5, 3, 3, 4)}, TOL},
    [BG_OP_ABS]        = {"abs", BG_OP_ABS, f_abs, 1, {IN_SIGNED(0.2, 2, 3, 4)}, TOL},
    [BG_OP_CLAMP]      = {"clamp", BG_OP_CLAMP, f_clamp, 1, {IN_AVOID(-1, 1, -0.5, 0.7, 4, 5)}, TOL},
    [BG_OP_RELU]       = {"relu", BG_OP_RELU, f_relu, 1, {IN_SIGNED(0.1, 2, 3, 4)}, TOL},
    [BG_OP_LEAKY_RELU] = {"leaky_relu", BG_OP_LEAKY_RELU, f_leaky_relu, 1, {IN_SIGNED(0.1, 2, 3, 4)}, TOL},
    [BG_OP_GELU]       = {"gelu", BG_OP_GELU, f_gelu, 1, {IN_U(-3, 3, 3, 5)}, TOL},
    [BG_OP_SILU]       = {"silu", BG_OP_SILU, f_silu, 1, {IN_U(-4, 4, 3, 5)}, TOL},
    [BG_OP_SIGMOID]    = {"sigmoid", BG_OP_SIGMOID, f_sigmoid, 1, {IN_U(-4, 4, 3, 5)}, TOL},
    [BG_OP_TANH]       = {"tanh", BG_OP_TANH, f_tanh, 1, {IN_U(-2, 2, 3, 5)}, TOL},
    [BG_OP_DROPOUT]    = {"dropout", BG_OP_DROPOUT, f_dropout, 1, {IN_U(-1, 1, 4, 5)}, TOL},
    [BG_OP_SUM]        = {"sum", BG_OP_SUM, f_sum, 1, {IN_U(-1, 1, 2, 3, 4)}, TOL},
    [BG_OP_MEAN]       = {"mean", BG_OP_MEAN, f_mean, 1, {IN_U(-1, 1, 2, 3, 4)}, TOL},
    [BG_OP_MAX]        = {"max", BG_OP_MAX, f_max, 1, {IN_DISTINCT(0.1, 2, 5, 3)}, TOL},
    [BG_OP_SOFTMAX]    = {"softmax", BG_OP_SOFTMAX, f_softmax, 1, {IN_U(-2, 2, 3, 5)}, TOL},
    [BG_OP_LOG_SOFTMAX] = {"log_softmax", BG_OP_LOG_SOFTMAX, f_log_softmax, 1, {IN_U(-2, 2, 3, 5)}, TOL},
    [BG_OP_CROSS_ENTROPY] = {"cross_entropy", BG_OP_CROSS_ENTROPY, f_cross_entropy, 2,
                             {IN_U(-2, 2, 6, 5), IN_INT(0, 5, 6)}, TOL},
    [BG_OP_MSE]        = {"mse", BG_OP_MSE, f_mse, 2, {IN_U(-1, 1, 3, 4), IN_U(-1, 1, 3, 4)}, TOL},
    [BG_OP_RESHAPE]    = {"reshape", BG_OP_RESHAPE, f_reshape, 1, {IN_U(-1, 1, 2, 3, 4)}, TOL},
    [BG_OP_PERMUTE]    = {"permute", BG_OP_PERMUTE, f_permute, 1, {IN_U(-1, 1, 2, 3, 4)}, TOL},
    [BG_OP_CONCAT]     = {"concat", BG_OP_CONCAT, f_concat, 3,
                          {IN_U(-1, 1, 2, 3), IN_U(-1, 1, 2, 1), IN_U(-1, 1, 2, 2)}, TOL},
    [BG_OP_SLICE]      = {"slice", BG_OP_SLICE, f_slice, 1, {IN_U(-1, 1, 3, 4)}, TOL},
    [BG_OP_EMBEDDING]  = {"embedding", BG_OP_EMBEDDING, f_embedding, 2,
                          {IN_U(-1, 1, 5, 3), IN_VALUES(emb_ids, 2, 3)}, TOL},
    [BG_OP_MATMUL]     = {"matmul", BG_OP_MATMUL, f_matmul, 2, {IN_U(-1, 1, 3, 4), IN_U(-1, 1, 4, 5)}, TOL_LINEAR},
    [BG_OP_LINEAR]     = {"linear", BG_OP_LINEAR, f_linear, 3,
                          {IN_U(-1, 1, 3, 4), IN_U(-1, 1, 5, 4), IN_U(-1, 1, 5)}, TOL_LINEAR},
    [BG_OP_LAYERNORM]  = {"layernorm", BG_OP_LAYERNORM, f_layernorm, 3,
                          {IN_U(-2, 2, 3, 6), IN_U(0.5, 1.5, 6), IN_U(-1, 1, 6)}, TOL},
    [BG_OP_RMSNORM]    = {"rmsnorm", BG_OP_RMSNORM, f_rmsnorm, 2, {IN_U(-2, 2, 3, 6), IN_U(0.5, 1.5, 6)}, TOL},
    [BG_OP_CONV2D]     = {"conv2d", BG_OP_CONV2D, f_conv2d, 3,
                          {IN_U(-1, 1, 2, 3, 5, 5), IN_U(-1, 1, 4, 3, 3, 3), IN_U(-1, 1, 4)}, TOL_LINEAR},
    [BG_OP_MAX_POOL2D] = {"max_pool2d", BG_OP_MAX_POOL2D, f_max_pool2d, 1, {IN_DISTINCT(0.05, 2, 2, 4, 6)}, TOL},
    [BG_OP_AVG_POOL2D] = {"avg_pool2d", BG_OP_AVG_POOL2D, f_avg_pool2d, 1, {IN_U(-1, 1, 2, 2, 4, 6)}, TOL},
    [BG_OP_FAKE_QUANT] = {"fake_quant", BG_OP_FAKE_QUANT, f_fake_quant, 1, {IN_AVOID(-0.2, 0.2, -0.128, 0.127, 4, 6)},
                          .eps = 1e-2, .atol = 5e-4, .rtol = 5e-3},
    [BG_OP_ROPE]       = {"rope", BG_OP_ROPE, f_rope, 1, {IN_U(-1, 1, 2, 2, 5, 6)}, TOL},
    // Tq = 3 queries over Tk = 5 keys: query i sees keys j <= i + 2
    [BG_OP_CAUSAL_ATTENTION] = {"causal_attention", BG_OP_CAUSAL_ATTENTION, f_causal_attention, 3,
                                {IN_U(-1, 1, 2, 3, 4), IN_U(-1, 1, 2, 5, 4), IN_U(-1, 1, 2, 5, 3)}, TOL},
    [BG_OP_RECOMPUTE] = {"recompute", BG_OP_RECOMPUTE, f_recompute, 2, {IN_U(-1, 1, 3, 4), IN_U(-1, 1, 3, 4)},
                          TOL},
    [BG_OP_QLINEAR_INT] = {"qlinear_int", BG_OP_QLINEAR_INT, f_qlinear_int, 3,
                           {IN_U(-1, 1, 5, 40), IN_U(-0.1, 0.1, 6, 40), IN_U(-1, 1, 6)}, TOL_LINEAR,
                           .check = check_qlinear_int},
};

static const gc_case extra_cases[] = {
    {"add_bcast", BG_OP_ADD, f_add, 2, {IN_U(-1, 1, 2, 1, 4), IN_U(-1, 1, 3, 1)}, TOL},
    {"sub_bcast", BG_OP_SUB, f_sub, 2, {IN_U(-1, 1, 3, 1), IN_U(-1, 1, 2, 3, 4)}, TOL},
    {"mul_bcast", BG_OP_MUL, f_mul, 2, {IN_U(-1, 1, 2, 1, 4), IN_U(-1, 1, 3, 1)}, TOL},
    {"mul_self_shape_1", BG_OP_MUL, f_mul, 2, {IN_U(-1, 1, 3, 4), IN_U(-1, 1, 1)}, TOL},
    {"div_bcast", BG_OP_DIV, f_div, 2, {IN_U(-1, 1, 2, 3, 4), IN_SIGNED(0.5, 2, 1, 4)}, TOL},
    {"gelu_tanh", BG_OP_GELU, f_gelu_tanh, 1, {IN_U(-3, 3, 3, 5)}, TOL},
    {"sum_keepdim", BG_OP_SUM, f_sum_keepdim, 1, {IN_U(-1, 1, 2, 3, 4)}, TOL},
    {"sum_all", BG_OP_NONE, f_sum_all, 1, {IN_U(-1, 1, 3, 4)}, TOL},
    {"mean_all", BG_OP_NONE, f_mean_all, 1, {IN_U(-1, 1, 3, 4)}, TOL},
    {"max_keepdim", BG_OP_MAX, f_max_keepdim, 1, {IN_DISTINCT(0.1, 3, 6)}, TOL},
    {"max_all", BG_OP_MAX, f_max_all, 1, {IN_DISTINCT(0.1, 3, 4)}, TOL},
    {"softmax_axis0", BG_OP_SOFTMAX, f_softmax_axis0, 1, {IN_U(-2, 2, 4, 3)}, TOL},
    {"log_softmax_axis1", BG_OP_LOG_SOFTMAX, f_log_softmax_axis1, 1, {IN_U(-2, 2, 2, 4, 3)}, TOL},
    {"cross_entropy_smooth_ignore", BG_OP_CROSS_ENTROPY, f_cross_entropy_smooth_ignore, 2,
     {IN_U(-2, 2, 8, 5), IN_VALUES(ce_labels_ignore, 8)}, TOL},
    {"reshape_3x8", BG_OP_RESHAPE, f_reshape_infer, 1, {IN_U(-1, 1, 2, 3, 4)}, TOL},
    {"transpose", BG_OP_NONE, f_transpose, 1, {IN_U(-1, 1, 2, 3, 4)}, TOL},
    {"concat_axis0", BG_OP_CONCAT, f_concat_axis0, 2, {IN_U(-1, 1, 1, 2, 3), IN_U(-1, 1, 2, 2, 3)}, TOL},
    {"matmul_ta", BG_OP_MATMUL, f_matmul_ta, 2, {IN_U(-1, 1, 4, 3), IN_U(-1, 1, 4, 5)}, TOL_LINEAR},
    {"matmul_tb", BG_OP_MATMUL, f_matmul_tb, 2, {IN_U(-1, 1, 3, 4), IN_U(-1, 1, 5, 4)}, TOL_LINEAR},
    {"matmul_batched", BG_OP_MATMUL, f_matmul, 2, {IN_U(-1, 1, 2, 3, 4), IN_U(-1, 1, 2, 4, 5)}, TOL_LINEAR},
    {"matmul_batched_tatb", BG_OP_MATMUL, f_matmul_tatb, 2, {IN_U(-1, 1, 2, 4, 3), IN_U(-1, 1, 2, 5, 4)}, TOL_LINEAR},
    {"matmul_shared_b_tb", BG_OP_MATMUL, f_matmul_tb, 2, {IN_U(-1, 1, 2, 2, 3, 4), IN_U(-1, 1, 5, 4)}, TOL_LINEAR},
    {"linear_nobias", BG_OP_LINEAR, f_linear_nobias, 2, {IN_U(-1, 1, 3, 4), IN_U(-1, 1, 5, 4)}, TOL_LINEAR},
    {"linear_3d", BG_OP_LINEAR, f_linear, 3, {IN_U(-1, 1, 2, 3, 4), IN_U(-1, 1, 5, 4), IN_U(-1, 1, 5)}, TOL_LINEAR},
    {"conv2d_stride_pad", BG_OP_CONV2D, f_conv2d_stride_pad, 3,
     {IN_U(-1, 1, 2, 3, 6, 5), IN_U(-1, 1, 4, 3, 3, 3), IN_U(-1, 1, 4)}, TOL_LINEAR},
    {"conv2d_dilation", BG_OP_CONV2D, f_conv2d_dilation, 2, {IN_U(-1, 1, 1, 2, 6, 6), IN_U(-1, 1, 3, 2, 3, 3)}, TOL_LINEAR},
    {"conv2d_groups", BG_OP_CONV2D, f_conv2d_groups, 3,
     {IN_U(-1, 1, 2, 4, 5, 5), IN_U(-1, 1, 6, 2, 3, 2), IN_U(-1, 1, 6)}, TOL_LINEAR},
    {"max_pool2d_pad", BG_OP_MAX_POOL2D, f_max_pool2d_pad, 1, {IN_DISTINCT(0.05, 1, 2, 5, 5)}, TOL},
    {"avg_pool2d_pad", BG_OP_AVG_POOL2D, f_avg_pool2d_pad, 1, {IN_U(-1, 1, 1, 2, 5, 5)}, TOL},
    {"attention", BG_OP_SOFTMAX, f_attention, 3,
     {IN_U(-1, 1, 2, 3, 4), IN_U(-1, 1, 2, 5, 4), IN_U(-1, 1, 2, 5, 4)}, TOL},
    {"attention_causal", BG_OP_CAUSAL_ATTENTION, f_attention_causal, 3,
     {IN_U(-1, 1, 2, 4, 4), IN_U(-1, 1, 2, 4, 4), IN_U(-1, 1, 2, 4, 4)}, TOL},
    {"attention_4d_causal", BG_OP_CAUSAL_ATTENTION, f_attention_causal, 3,
     {IN_U(-1, 1, 1, 2, 3, 4), IN_U(-1, 1, 1, 2, 3, 4), IN_U(-1, 1, 1, 2, 3, 4)}, TOL},
    // k and v 2-D, shared by a batched q: the composed path, its mask offset by Tk - Tq = 2
    {"attention_causal_shared_kv", BG_OP_SOFTMAX, f_attention_causal, 3,
     {IN_U(-1, 1, 2, 3, 4), IN_U(-1, 1, 5, 4), IN_U(-1, 1, 5, 4)}, TOL},
    // positions 4000..4004, another theta, [T, hd] alone
    {"rope_far", BG_OP_ROPE, f_rope_far, 1, {IN_U(-1, 1, 5, 8)}, TOL},
    // 40 query rows over 45 keys: two row blocks of the fused op, heads in [B, H, T, D]
    {"causal_attention_blocks", BG_OP_CAUSAL_ATTENTION, f_causal_attention, 3,
     {IN_U(-1, 1, 1, 2, 40, 3), IN_U(-1, 1, 1, 2, 45, 3), IN_U(-1, 1, 1, 2, 45, 2)}, TOL},
    {"mlp_block", BG_OP_NONE, f_mlp_block, 3, {IN_U(-1, 1, 4, 6), IN_U(-1, 1, 5, 6), IN_INT(0, 5, 4)}, TOL},
    // Larger shapes: SIMD bodies + tails and BLAS/oneDNN-sized products.
    {"gelu_67", BG_OP_GELU, f_gelu, 1, {IN_U(-4, 4, 67)}, TOL},
    {"silu_67", BG_OP_SILU, f_silu, 1, {IN_U(-4, 4, 67)}, TOL},
    // Rows of 37: a perturbation moves every output of the row, so float32
    // rounding of the loss grows; eps 1e-2 keeps it small (smooth functions:
    // the truncation error, eps^2/6 times the third derivative, stays ~1e-5).
    {"softmax_3x37", BG_OP_SOFTMAX, f_softmax, 1, {IN_U(-2, 2, 3, 37)}, .eps = 1e-2, .atol = 5e-4, .rtol = 5e-3},
    {"log_softmax_3x37", BG_OP_LOG_SOFTMAX, f_log_softmax, 1, {IN_U(-2, 2, 3, 37)},
     .eps = 1e-2, .atol = 5e-4, .rtol = 5e-3},
    {"layernorm_4x37", BG_OP_LAYERNORM, f_layernorm, 3, {IN_U(-2, 2, 4, 37), IN_U(0.5, 1.5, 37), IN_U(-1, 1, 37)},
     .eps = 1e-2, .atol = 5e-4, .rtol = 5e-3},
    {"rmsnorm_4x37", BG_OP_RMSNORM, f_rmsnorm, 2, {IN_U(-2, 2, 4, 37), IN_U(0.5, 1.5, 37)},
     .eps = 1e-2, .atol = 5e-4, .rtol = 5e-3},
    {"matmul_32x16x33", BG_OP_MATMUL, f_matmul, 2, {IN_U(-1, 1, 32, 16), IN_U(-1, 1, 16, 33)},
     TOL_LINEAR},
    {"linear_33x16x32", BG_OP_LINEAR, f_linear, 3, {IN_U(-1, 1, 33, 16), IN_U(-1, 1, 32, 16), IN_U(-1, 1, 32)},
     TOL_LINEAR},
    {"conv2d_8x8_pad1", BG_OP_CONV2D, f_conv2d_pad1, 3,
     {IN_U(-1, 1, 1, 8, 5, 5), IN_U(-1, 1, 8, 8, 3, 3), IN_U(-1, 1, 8)}, TOL_LINEAR},
    {"max_pool2d_4x8x8", BG_OP_MAX_POOL2D, f_max_pool2d, 1, {IN_DISTINCT(0.05, 1, 4, 8, 8)}, TOL},
    {"fake_quant_ste", BG_OP_FAKE_QUANT, f_fake_quant_ste, 1, {IN_U(-0.1, 0.1, 3, 5)}, .eps = 1e-2, .atol = 5e-4, .rtol = 5e-3},
    // s = 0.25: |x/s| in [4.8, 8] is beyond int3's [-4, 3] (or [0, 7] for lsq_plus)
    {"fake_quant_lsq_clipped", BG_OP_FAKE_QUANT, f_fake_quant_lsq_clipped, 2,
     {IN_SIGNED(1.2, 2.0, 3, 4), IN_U(0.25, 0.25, 1)}, TOL},
    {"fake_quant_lsq_plus_clipped", BG_OP_FAKE_QUANT, f_fake_quant_lsq_plus_clipped, 2,
     {IN_SIGNED(2.0, 3.0, 3, 4), IN_U(0.25, 0.25, 1)}, TOL},
    // alpha = 0.5: x < 0 gives 0, x >= 0.7 gives alpha
    {"fake_quant_pact_clipped", BG_OP_FAKE_QUANT, f_fake_quant_pact_clipped, 2,
     {IN_SIGNED(0.7, 2.0, 3, 4), IN_U(0.5, 0.5, 1)}, TOL},
    // u = x/s = integer + [0, 0.25): never near a rounding tie
    {"fake_quant_lsq", BG_OP_FAKE_QUANT, f_fake_quant_lsq, 2, {IN_DISTINCT(0.25, 3, 4), IN_U(0.25, 0.25, 1)}, TOL,
     .check = check_fake_quant_lsq},
};

// ---------------------------------------------------------------------------
// running a case

/* Does the forward record a node of op (on a fresh ctx)? */
static bool records_op(const gc_case *c, bg_tensor *const *in, bg_op op) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *out = c->fn(ctx, in, NULL);
    bool found = false;
    for (const bg_node *n = ctx->tape_tail; out && n; n = n->prev) found |= n->op == op;
    bg_ctx_free(ctx);
    return found;
}

static int case_seed;

static void run_case(const gc_case *c) {
    bg_tensor *in[4] = {0};
    bg_rng rng;
    bg_rng_seed(&rng, 1000 + (uint64_t)case_seed++);
    bool ok = true;
    for (int i = 0; i < c->n_in; i++) {
        const input_spec *s = &c->in[i];
        in[i] = bg_tensor_new(s->dtype, s->ndim, s->shape);
        if (!in[i]) {
            ok = false;
            break;
        }
        fill_input(in[i], s, &rng);
        if (s->dtype == BG_DTYPE_F32 && bg_set_requires_grad(in[i], true) != BG_OK) ok = false;
    }
    if (!CHECK_MSG(ok, "%s: cannot make inputs: %s", c->name, bg_last_error())) goto done;
    if (c->op != BG_OP_NONE)
        CHECK_MSG(records_op(c, in, c->op), "%s: the forward does not record a %s node (%s)", c->name,
                  bg_op_name(c->op), bg_last_error());

    if (c->check) {
        CHECK_MSG(c->check(c, in), "%s: backward does not match its rule", c->name);
        goto done;
    }
    bg_gradcheck_report rep, rel;
    bg_status st = bg_gradcheck(c->fn, in, c->n_in, NULL, c->eps, c->atol, c->rtol, &rep);
    // bg_gradcheck's max_rel_err counts elements beyond atol only; a second
    // pass with atol = 1e-6 reports the relative error of every element whose
    // error is not negligible (printed, not asserted).
    bg_gradcheck(c->fn, in, c->n_in, NULL, c->eps, 1e-6, 1e30, &rel);
    printf("%-28s %-4s checked %4lld  max abs err %.2e  max rel err %.2e\n", c->name,
           st == BG_OK ? "ok" : "FAIL", (long long)rep.checked, rep.max_abs_err, rel.max_rel_err);
    CHECK_MSG(st == BG_OK, "%s: %s (status %s)", c->name, bg_last_error(), bg_status_str(st));
    CHECK_MSG(st != BG_OK || rep.checked > 0, "%s: no element was checked", c->name);
done:
    fq_release();
    for (int i = 0; i < c->n_in; i++) bg_tensor_free(in[i]);
}

int main(void) {
    // Every op has an entry, named like the op table says.
    for (int op = 1; op < BG_OP_COUNT; op++) {
        const gc_case *c = &op_cases[op];
        if (!CHECK_MSG(c->fn != NULL, "BG_OP %d (%s) has no gradcheck entry in tests/test_gradcheck.c", op,
                       bg_op_name((bg_op)op)))
            continue;
        CHECK_MSG(c->op == (bg_op)op && strcmp(c->name, bg_op_name((bg_op)op)) == 0,
                  "op_cases[%d] is \"%s\", want \"%s\"", op, c->name, bg_op_name((bg_op)op));
    }
    CHECK(op_cases[BG_OP_NONE].fn == NULL);

    for (int op = 1; op < BG_OP_COUNT; op++)
        if (op_cases[op].fn) run_case(&op_cases[op]);
    for (size_t i = 0; i < sizeof extra_cases / sizeof extra_cases[0]; i++) run_case(&extra_cases[i]);
    return bg_test_finish();
}
