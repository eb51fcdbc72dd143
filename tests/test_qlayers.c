/* test_qlayers.c — quantization-aware layers: BitLinear's forward and
 * identity-STE backward against QAT_MATH.md computed by hand, the wrappers'
 * learned quantizer parameters (names, flat buffers, LSQ step gradient by its
 * formula), model conversion keeping weights, quant modes, per-layer
 * controls, iteration, error messages, random-direction gradient checks and a
 * BitLinear MLP training smoke test. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/autograd_internal.h"
#include "tests/test_util.h"

static const char *str(const char *s) { return s; }

static bg_tensor *param(bg_module *m, const char *name) {
    bg_tensor *t = bg_module_find_param(m, name);
    CHECK_MSG(t != NULL, "no parameter %s", name);
    return t;
}

/* x [N,K] row-major doubles -> a persistent f32 tensor with a grad. */
static bg_tensor *leaf(int64_t n, int64_t k, const double *v) {
    bg_tensor *t = bg_tensor_new(BG_DTYPE_F32, 2, (const int64_t[]){n, k});
    for (int64_t i = 0; i < n * k; i++) bg_f32(t)[i] = (float)v[i];
    bg_set_requires_grad(t, true);
    return t;
}

static double rnd(bg_rng *r) { return 2.0 * bg_rng_uniform(r) - 1.0; }

// ---------------------------------------------------------------------------
// BitLinear: forward and backward by hand (QAT_MATH.md "BitLinear")

enum { BN = 3, BK = 5, BM = 4 };

static void test_bitlinear_by_hand(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 1);
    bg_module *bl = bg_bitlinear_new(BK, BM, &rng);
    CHECK(bl != NULL);
    if (!bl) return;
    CHECK_STR(bg_module_kind(bl), "BitLinear");
    CHECK(bg_module_param_count(bl) == 1);   // latent weight only: no bias, no gain
    CHECK_STR(bg_module_param_name(bl, 0), "weight");
    // W with |W| mean 0.3: levels chosen so W/gamma lands clearly off the .5 ties.
    double W[BM * BK] = {0.5, -0.05, 0.31, -0.62, 0.02,  0.12, 0.7,  -0.2, 0.05, -0.4,
                         -0.33, 0.1, 0.6,  0.25, -0.08, 0.01, -0.5, 0.22, 0.45, 0.27};
    double gamma = 0;
    for (int i = 0; i < BM * BK; i++) gamma += fabs(W[i]);
    gamma /= BM * BK;
    bg_tensor *w = bg_module_param(bl, 0);
    for (int i = 0; i < BM * BK; i++) bg_f32(w)[i] = (float)W[i];
    double X[BN * BK];
    for (int i = 0; i < BN * BK; i++) X[i] = 3.0 * rnd(&rng);
    double R[BN * BM];
    for (int i = 0; i < BN * BM; i++) R[i] = rnd(&rng);

    // By hand: xn = rmsnorm(x); s_x = 127/max|xn|; xq = clip(round(xn s_x), -128, 127);
    // Wq = clip(round(W/gamma), -1, 1); y = (xq Wq^T) gamma / s_x.
    double xn[BN * BK], xq[BN * BK], sx[BN], r[BN], Wq[BM * BK], y[BN * BM];
    for (int i = 0; i < BM * BK; i++) Wq[i] = fmax(-1, fmin(1, nearbyint(W[i] / gamma)));
    int ternary_expect[BM * BK] = {1, 0, 1, -1, 0, 0, 1, -1, 0, -1, -1, 0, 1, 1, 0, 0, -1, 1, 1, 1};
    bool same = true;
    for (int i = 0; i < BM * BK; i++) same &= Wq[i] == ternary_expect[i];
    CHECK_MSG(same, "hand-computed ternary levels (gamma = %g)", gamma);
    for (int n = 0; n < BN; n++) {
        double ms = 0, amax = 0;
        for (int k = 0; k < BK; k++) ms += X[n * BK + k] * X[n * BK + k];
        r[n] = 1.0 / sqrt(ms / BK + 1e-6);
        for (int k = 0; k < BK; k++) {
            xn[n * BK + k] = X[n * BK + k] * r[n];
            amax = fmax(amax, fabs(xn[n * BK + k]));
        }
        sx[n] = 127.0 / amax;
        for (int k = 0; k < BK; k++) xq[n * BK + k] = fmax(-128, fmin(127, nearbyint(xn[n * BK + k] * sx[n])));
        for (int m = 0; m < BM; m++) {
            double acc = 0;
            for (int k = 0; k < BK; k++) acc += xq[n * BK + k] * Wq[m * BK + k];
            y[n * BM + m] = acc * gamma / sx[n];
        }
    }

    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = leaf(BN, BK, X);
    bg_tensor *out = bg_module_forward(ctx, bl, x);
    CHECK_MSG(out != NULL, "forward: %s", bg_ctx_error(ctx));
    if (out) {
        float yf[BN * BM];
        for (int i = 0; i < BN * BM; i++) yf[i] = (float)y[i];
        CHECK(out->ndim == 2 && out->shape[0] == BN && out->shape[1] == BM);
        CHECK_ARRAYS("BitLinear y", bg_f32(out), yf, BN * BM, 1e-5, 1e-5);

        // Backward with dy = R (loss = sum(y * R)). Identity STE:
        //   dW = dy^T x~ (x~ = xq / s_x, the quantized activations)
        //   dxn = dy W~ (W~ = gamma Wq), dx = rmsnorm backward of dxn.
        float Rf[BN * BM];
        for (int i = 0; i < BN * BM; i++) Rf[i] = (float)R[i];
        bg_tensor *Rt = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(BN, BM), Rf);
        bg_module_zero_grad(bl);
        CHECK(bg_backward(ctx, bg_sum_all(ctx, bg_mul(ctx, out, Rt))) == BG_OK);
        float dW[BM * BK], dx[BN * BK];
        for (int m = 0; m < BM; m++)
            for (int k = 0; k < BK; k++) {
                double acc = 0;
                for (int n = 0; n < BN; n++) acc += R[n * BM + m] * xq[n * BK + k] / sx[n];
                dW[m * BK + k] = (float)acc;
            }
        for (int n = 0; n < BN; n++) {
            double g[BK], gx = 0;
            for (int k = 0; k < BK; k++) {
                g[k] = 0;
                for (int m = 0; m < BM; m++) g[k] += R[n * BM + m] * gamma * Wq[m * BK + k];
                gx += g[k] * X[n * BK + k];
            }
            // xn = x r, r = (mean x^2 + eps)^-1/2: dx = r g - r^3 x (g.x)/K
            for (int k = 0; k < BK; k++)
                dx[n * BK + k] = (float)(r[n] * g[k] - r[n] * r[n] * r[n] * X[n * BK + k] * gx / BK);
        }
        CHECK_ARRAYS("BitLinear dW (identity STE)", bg_f32(w->grad), dW, BM * BK, 1e-5, 1e-4);
        CHECK_ARRAYS("BitLinear dx (identity STE through rmsnorm)", bg_f32(x->grad), dx, BN * BK, 1e-5, 1e-4);
    }

    // The STE passes gradient where |W/gamma| > 1.5 too (no clipping mask):
    // a weight far outside still gets dW = dy^T x~.
    bg_ctx_reset(ctx);
    bg_f32(w)[0] = 10.0f;
    bg_module_zero_grad(bl);
    out = bg_module_forward(ctx, bl, x);
    bg_tensor *loss = out ? bg_sum_all(ctx, out) : NULL;
    CHECK(loss && bg_backward(ctx, loss) == BG_OK);
    CHECK_MSG(fabsf(bg_f32(w->grad)[0]) > 1e-3f, "dW[0] = %g under identity STE", (double)bg_f32(w->grad)[0]);

    // Without its own norm (a model with explicit norms in front): the same
    // by hand with xn = x.
    bg_f32(w)[0] = (float)W[0];
    CHECK(bg_bitlinear_norm(bl) && bg_bitlinear_set_norm(bl, false) == BG_OK && !bg_bitlinear_norm(bl));
    bg_ctx_reset(ctx);
    out = bg_module_forward(ctx, bl, x);
    if (out) {
        float yn[BN * BM];
        for (int n = 0; n < BN; n++) {
            double amax = 0;
            for (int k = 0; k < BK; k++) amax = fmax(amax, fabs(X[n * BK + k]));
            double s = 127.0 / amax;
            for (int m = 0; m < BM; m++) {
                double acc = 0;
                for (int k = 0; k < BK; k++)
                    acc += fmax(-128, fmin(127, nearbyint(X[n * BK + k] * s))) * Wq[m * BK + k];
                yn[n * BM + m] = (float)(acc * gamma / s);
            }
        }
        CHECK_ARRAYS("BitLinear(norm=false) y", bg_f32(out), yn, BN * BM, 1e-5, 1e-5);
    }
    char d[160];
    bg_module_describe(bl, d, sizeof d);
    CHECK_STR(str(d), "BitLinear(in_features=5, out_features=4, w=ternary:absmean, a=int8:per_token:absmax, norm=false)");
    bg_module *relu = bg_relu_new();
    CHECK(bg_bitlinear_set_norm(relu, false) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "bitlinear_set_norm: not a BitLinear: ReLU");
    bg_module_free(relu);
    bg_bitlinear_set_norm(bl, true);

    // bitlinear_from keeps the latent weights and drops the bias.
    bg_module *lin = bg_linear_new(BK, BM, true, &rng);
    bg_module *bl2 = bg_bitlinear_from(lin);
    CHECK(bl2 && bg_module_param_count(bl2) == 1);
    if (bl2) CHECK(memcmp(bg_module_param(bl2, 0)->data, bg_module_param(lin, 0)->data, sizeof(float) * BM * BK) == 0);
    bg_module_free(bl2);
    bg_module_free(lin);
    bg_tensor_free(x);
    bg_ctx_free(ctx);
    bg_module_free(bl);
}

// ---------------------------------------------------------------------------
// wrappers: learned parameters are module parameters and get gradients

static void test_wrapper_params(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 2);
    bg_quant_spec ws, as, ap, apc;
    CHECK(bg_quant_spec_parse("int4:lsq", &ws) == BG_OK);
    CHECK(bg_quant_spec_parse("int8:lsq_plus:affine", &as) == BG_OK);
    CHECK(bg_quant_spec_parse("int4:unsigned:pact", &ap) == BG_OK);
    CHECK(bg_quant_spec_parse("int8:per_channel=1", &apc) == BG_OK);
    bg_module *net = bg_sequential_new(3, (bg_module *[]){
        bg_qlinear_new(6, 8, true, &ws, &as, &rng), bg_relu_new(), bg_qlinear_new(8, 3, false, &ws, &ap, &rng)});
    CHECK(net != NULL);
    if (!net) return;
    const char *want[] = {"0.weight", "0.bias", "0.weight_quant.scale", "0.input_quant.scale",
                          "0.input_quant.zero_point", "2.weight", "2.weight_quant.scale", "2.input_quant.alpha"};
    CHECK(bg_module_param_count(net) == 8);
    for (int i = 0; i < 8 && i < bg_module_param_count(net); i++)
        CHECK_MSG(strcmp(bg_module_param_name(net, i), want[i]) == 0, "param %d is %s, want %s", i,
                  bg_module_param_name(net, i), want[i]);
    // They live in the flat buffers (the optimizer's view).
    int64_t nflat;
    float *P = bg_module_flat_params(net, &nflat);
    bg_tensor *step = param(net, "0.weight_quant.scale");
    CHECK(P && step && (float *)step->data >= P && (float *)step->data < P + nflat);
    CHECK(bg_quant_state_param(bg_qlayer_weight_state(bg_module_child(net, 0)), 0) == step);

    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = bg_tensor_new(BG_DTYPE_F32, BG_SHAPE(5, 6));
    bg_init_normal(x, &rng, 0.0f, 1.0f);
    bg_tensor *y = bg_module_forward(ctx, net, x);
    CHECK_MSG(y != NULL, "%s", bg_ctx_error(ctx));
    bg_tensor *lbl = bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(5), (int32_t[]){0, 1, 2, 0, 1});
    CHECK(y && bg_backward(ctx, bg_cross_entropy(ctx, y, lbl, NULL)) == BG_OK);
    // The step was initialised from the first weights (2 mean|W| / sqrt(7)).
    bg_tensor *W0 = param(net, "0.weight");
    double mabs = 0;
    for (int i = 0; i < 48; i++) mabs += fabsf(bg_f32(W0)[i]);
    CHECK_CLOSE(bg_f32(step)[0], 2 * mabs / 48 / sqrt(7.0), 1e-6, 1e-5);
    // (LSQ+'s offset gets gradient only from clipped inputs: none on the
    // batch it was initialised from.)
    CHECK(param(net, "0.input_quant.zero_point")->requires_grad);
    const char *learned[] = {"0.weight_quant.scale", "0.input_quant.scale", "2.weight_quant.scale",
                             "2.input_quant.alpha"};
    for (int i = 0; i < 4; i++) {
        bg_tensor *t = param(net, learned[i]);
        CHECK_MSG(t && t->requires_grad && fabsf(bg_f32(t->grad)[0]) > 0, "%s grad = %g", learned[i],
                  t ? (double)bg_f32(t->grad)[0] : 0.0);
    }
    // One optimizer step moves them.
    float before = bg_f32(step)[0];
    bg_optim *opt = bg_sgd_new(net, &(bg_sgd_opts){.lr = 0.1f});
    CHECK(opt && bg_optim_step(opt) == BG_OK);
    CHECK(bg_f32(step)[0] != before);
    bg_optim_free(opt);

    // Conv2d wrapper with a per-channel input observer on axis 1.
    bg_quant_spec w8;
    CHECK(bg_quant_spec_parse("int8:per_channel", &w8) == BG_OK);
    bg_module *qc = bg_qconv2d_new(2, 3, 3, 3, NULL, true, &w8, &apc, &rng);
    CHECK_MSG(qc != NULL, "%s", bg_last_error());
    bg_ctx_reset(ctx);
    bg_tensor *xc = bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(2, 2, 5, 5));
    bg_init_normal(xc, &rng, 0.0f, 1.0f);
    bg_tensor *yc = qc ? bg_module_forward(ctx, qc, xc) : NULL;
    CHECK_MSG(yc && yc->shape[1] == 3 && yc->shape[2] == 3, "%s", bg_ctx_error(ctx));
    CHECK(qc && bg_quant_state_scale(bg_qlayer_input_state(qc))->shape[0] == 2);
    bg_module_free(qc);

    // Errors.
    CHECK(bg_qembedding_new(10, 4, NULL, NULL) == NULL);
    CHECK_STR(bg_last_error(), "QEmbedding: rng is NULL");
    bg_quant_spec pg;
    CHECK(bg_quant_spec_parse("int8:per_group=2", &pg) == BG_OK);
    CHECK(bg_qlinear_new(4, 4, true, NULL, &pg, &rng) == NULL);
    CHECK_STR(bg_last_error(), "QLinear: per_group input quantization is not supported: \"int8:per_group=2:minmax\"");
    bg_module *emb = bg_embedding_new(10, 4, &rng);
    CHECK(bg_quantize_module(emb, &ws, &as) == NULL);
    CHECK(strncmp(str(bg_last_error()), "QEmbedding: ids are integers and take no input quantizer", 56) == 0);
    bg_module *qe = bg_quantize_module(emb, &ws, NULL);
    CHECK(qe && memcmp(bg_module_param(qe, 0)->data, bg_module_param(emb, 0)->data, 40 * sizeof(float)) == 0);
    bg_module *relu = bg_relu_new();
    CHECK(bg_quantize_module(relu, &ws, NULL) == NULL);
    CHECK_STR(bg_last_error(), "quantize_module: not a Linear, Conv2d or Embedding: ReLU");
    bg_module_free(relu);
    bg_module_free(qe);
    bg_module_free(emb);
    bg_tensor_free(x);
    bg_ctx_free(ctx);
    bg_module_free(net);
}

/* LSQ weight step: ds = gf * sum_i dW~_i * (round(w/s) - w/s) inside the
 * range, qmin / qmax outside, gf = 1/sqrt(numel * qmax) (QAT_MATH.md "LSQ");
 * dW = dW~ * 1[inside]. With a float input, dW~ = dy^T x. */
static void test_lsq_step_formula(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 3);
    bg_quant_spec ws;
    CHECK(bg_quant_spec_parse("int3:lsq", &ws) == BG_OK);
    bg_module *ql = bg_qlinear_new(7, 5, false, &ws, NULL, &rng);
    CHECK(ql != NULL);
    if (!ql) return;
    bg_tensor *w = param(ql, "weight"), *s = param(ql, "weight_quant.scale");
    // Fix the step so some weights clip: s = 0.08, range [-4, 3] * s.
    bg_f32(s)[0] = 0.08f;
    bg_quant_state_set_initialized(bg_qlayer_weight_state(ql), true);
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = bg_tensor_new(BG_DTYPE_F32, BG_SHAPE(4, 7)), *R = bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(4, 5));
    bg_init_normal(x, &rng, 0.0f, 1.0f);
    bg_init_normal(R, &rng, 0.0f, 1.0f);
    bg_tensor *y = bg_module_forward(ctx, ql, x);
    CHECK(y && bg_backward(ctx, bg_sum_all(ctx, bg_mul(ctx, y, R))) == BG_OK);
    double ds = 0, gf = 1.0 / sqrt(35.0 * 3.0);
    float dW[35];
    int clipped = 0;
    for (int m = 0; m < 5; m++)
        for (int k = 0; k < 7; k++) {
            double g = 0;
            for (int n = 0; n < 4; n++) g += (double)bg_f32(R)[n * 5 + m] * bg_f32(x)[n * 7 + k];
            double v = bg_f32(w)[m * 7 + k] * (double)(1.0f / 0.08f), q = nearbyint(v);
            bool in = q >= -4 && q <= 3;
            clipped += !in;
            ds += g * (in ? q - v : q < -4 ? -4 : 3);
            dW[m * 7 + k] = in ? (float)g : 0.0f;
        }
    CHECK_MSG(clipped > 0, "want some clipped weights, got %d", clipped);
    CHECK_CLOSE(bg_f32(s->grad)[0], gf * ds, 1e-5, 1e-4);
    CHECK_ARRAYS("LSQ dW (masked STE)", bg_f32(w->grad), dW, 35, 1e-5, 1e-5);

    // A restored step survives the next forward once marked initialised;
    // after a reset the next input re-initialises it (2 mean|W| / sqrt(3)).
    bg_model_reset_observers(ql);
    bg_f32(s)[0] = 0.5f;
    bg_model_set_quant_initialized(ql, true);
    bg_ctx_reset(ctx);
    CHECK(bg_module_forward(ctx, ql, x) != NULL);
    CHECK(bg_f32(s)[0] == 0.5f);
    bg_model_reset_observers(ql);
    bg_ctx_reset(ctx);
    CHECK(bg_module_forward(ctx, ql, x) != NULL);
    double mabs = 0;
    for (int i = 0; i < 35; i++) mabs += fabsf(bg_f32(w)[i]);
    CHECK_CLOSE(bg_f32(s)[0], 2 * mabs / 35 / sqrt(3.0), 1e-6, 1e-5);
    bg_tensor_free(x);
    bg_ctx_free(ctx);
    bg_module_free(ql);
}

// ---------------------------------------------------------------------------
// conversion keeps the weights; modes

static bg_tensor *run(bg_ctx *ctx, bg_module *m, bg_tensor *x, float *out, int64_t n) {
    bg_tensor *y = bg_module_forward(ctx, m, x);
    CHECK_MSG(y != NULL, "forward: %s", bg_ctx_error(ctx));
    if (y && out) memcpy(out, y->data, sizeof(float) * (size_t)n);
    return y;
}

static void test_quantize_model_and_modes(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 4);
    bg_module *inner = bg_sequential_new(2, (bg_module *[]){bg_linear_new(8, 12, true, &rng), bg_tanh_new()});
    bg_module *net = bg_sequential_new(4, (bg_module *[]){
        bg_conv2d_new(1, 2, 3, 3, NULL, true, &rng), bg_flatten_new(), inner, bg_linear_new(12, 3, true, &rng)});
    CHECK(net != NULL);
    if (!net) return;
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = bg_tensor_new(BG_DTYPE_F32, BG_SHAPE(4, 1, 4, 4));
    bg_init_normal(x, &rng, 0.0f, 1.0f);
    float y0[12], y1[12], y2[12], y3[12];
    bg_set_grad_enabled(ctx, false);
    run(ctx, net, x, y0, 12);
    int np0 = bg_module_param_count(net);
    float w2[8 * 12];
    memcpy(w2, param(net, "2.0.weight")->data, sizeof w2);

    CHECK(bg_quantize_model(net, "int8:per_channel", "int8") == BG_OK);
    CHECK(bg_qlayer_count(net) == 3);
    const char *names[] = {"0", "2.0", "3"}, *kinds[] = {"QConv2d", "QLinear", "QLinear"};
    for (int i = 0; i < 3; i++) {
        char nm[64];
        CHECK(bg_qlayer_name(net, i, nm, sizeof nm) >= 0);
        CHECK_MSG(strcmp(nm, names[i]) == 0 && strcmp(bg_module_kind(bg_qlayer_at(net, i)), kinds[i]) == 0,
                  "qlayer %d: %s %s", i, nm, bg_module_kind(bg_qlayer_at(net, i)));
    }
    CHECK(bg_qlayer_at(net, 3) == NULL && bg_qlayer_name(net, 3, NULL, 0) == -1);
    CHECK(bg_module_param_count(net) == np0);   // observers: no learned parameters
    CHECK(memcmp(param(net, "2.0.weight")->data, w2, sizeof w2) == 0);
    bg_ctx_reset(ctx);
    bg_model_set_quant_mode(net, BG_QUANT_MODE_FP32);
    run(ctx, net, x, y1, 12);
    CHECK(memcmp(y0, y1, sizeof y0) == 0);   // fp32 mode: exactly the float model
    bg_ctx_reset(ctx);
    bg_model_set_quant_mode(net, BG_QUANT_MODE_TRAIN);
    run(ctx, net, x, y2, 12);
    double maxd = 0;
    for (int i = 0; i < 12; i++) maxd = fmax(maxd, fabs(y2[i] - y0[i]));
    CHECK_MSG(maxd > 0 && maxd < 0.05, "int8 vs float max diff %g", maxd);

    // EVAL freezes the input observer: a 10x larger input keeps the scale.
    bg_quant_state *ist = bg_qlayer_input_state(bg_qlayer_at(net, 0));
    float s_train = bg_f32(bg_quant_state_scale(ist))[0];
    bg_tensor *x10 = bg_tensor_new(BG_DTYPE_F32, BG_SHAPE(4, 1, 4, 4));
    for (int i = 0; i < 64; i++) bg_f32(x10)[i] = 10 * bg_f32(x)[i];
    bg_model_set_quant_mode(net, BG_QUANT_MODE_EVAL);
    CHECK(!bg_quant_state_observer_enabled(ist) && bg_quant_state_enabled(ist));
    bg_ctx_reset(ctx);
    run(ctx, net, x10, y3, 12);
    CHECK(bg_f32(bg_quant_state_scale(ist))[0] == s_train);
    bg_model_set_quant_mode(net, BG_QUANT_MODE_TRAIN);
    bg_ctx_reset(ctx);
    run(ctx, net, x10, y3, 12);
    CHECK_CLOSE(bg_f32(bg_quant_state_scale(ist))[0], 10 * s_train, 0, 1e-5);   // running max grew 10x
    // Per layer: freeze one layer's observers, reset them.
    bg_model_set_observers(bg_qlayer_at(net, 0), false);
    CHECK(!bg_quant_state_observer_enabled(ist));
    CHECK(bg_quant_state_observer_enabled(bg_qlayer_input_state(bg_qlayer_at(net, 1))));
    bg_model_reset_observers(bg_qlayer_at(net, 0));
    CHECK(bg_f32(bg_quant_state_scale(ist))[0] == 1.0f);   // a fresh observer: s = 1
    bg_model_set_quant_mode(net, BG_QUANT_MODE_FP32);
    CHECK(!bg_quant_state_enabled(ist));

    // One layer by path; errors.
    CHECK(bg_quantize_layer(net, "2.7", "int8", NULL) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "quantize_layer: no layer named 2.7");
    CHECK(bg_quantize_model(net, "int9", NULL) == BG_ERR_ARG);
    CHECK(strstr(bg_last_error(), "bits must be 1..8") != NULL);
    bg_module *lin = bg_linear_new(2, 2, true, &rng);
    CHECK(bg_quantize_model(lin, "int8", NULL) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "quantize_model: the model is itself a Linear; put it in a Sequential");
    bg_module_free(lin);

    // replace_child errors; spec structs.
    bg_module *seq = bg_sequential_new(2, (bg_module *[]){bg_linear_new(3, 3, false, &rng), bg_relu_new()});
    CHECK(bg_module_replace_child(seq, 2, bg_relu_new()) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "module_replace_child: index out of range");
    CHECK(bg_module_replace_child(seq, 1, bg_module_child(seq, 0)) == BG_ERR_STATE);
    CHECK_STR(bg_last_error(), "module_replace_child: this Linear already belongs to a Sequential");
    bg_quant_spec t;
    CHECK(bg_quant_spec_parse("ternary", &t) == BG_OK);
    CHECK(bg_quantize_model_specs(seq, &t, NULL) == BG_OK);
    CHECK(bg_qlayer_count(seq) == 1 && bg_qlayer_input_state(bg_qlayer_at(seq, 0)) == NULL);
    CHECK(bg_quant_state_spec(bg_qlayer_weight_state(bg_qlayer_at(seq, 0)))->kind == BG_QUANT_TERNARY);
    bg_module_free(seq);

    // bitnet: every Linear -> BitLinear (bias dropped), by path too.
    bg_module *mlp = bg_sequential_new(5, (bg_module *[]){
        bg_linear_new(8, 16, true, &rng), bg_relu_new(), bg_linear_new(16, 16, true, &rng), bg_relu_new(),
        bg_linear_new(16, 4, true, &rng)});
    float w0[16 * 8];
    memcpy(w0, param(mlp, "0.weight")->data, sizeof w0);
    CHECK(bg_quantize_layer(mlp, "2", "bitnet", NULL) == BG_OK);
    CHECK(bg_qlayer_count(mlp) == 1 && strcmp(bg_module_kind(bg_module_child(mlp, 2)), "BitLinear") == 0);
    CHECK(bg_bitnet_model(mlp) == BG_OK);
    CHECK(bg_qlayer_count(mlp) == 3 && bg_module_param_count(mlp) == 3);
    CHECK_STR(bg_module_param_name(mlp, 1), "2.weight");
    CHECK(memcmp(param(mlp, "0.weight")->data, w0, sizeof w0) == 0);
    char d[256];
    bg_module_describe(bg_module_child(mlp, 0), d, sizeof d);
    CHECK_STR(str(d), "BitLinear(in_features=8, out_features=16, w=ternary:absmean, a=int8:per_token:absmax)");
    // The quantizers for a schedule: names, states, weights.
    {
        bg_quant_state *sts[8];
        const char *nms[8];
        const bg_tensor *wts[8];
        char buf[8 * BG_PARAM_NAME_MAX];
        CHECK(bg_model_quantizers(mlp, NULL, NULL, NULL, NULL, 0) == 6);
        CHECK(bg_model_quantizers(mlp, sts, nms, buf, wts, 8) == 6);
        CHECK_STR(nms[0], "0.weight_quant");
        CHECK_STR(nms[5], "4.input_quant");
        CHECK(sts[2] == bg_qlayer_weight_state(bg_module_child(mlp, 2)) && sts[3] == bg_qlayer_input_state(bg_module_child(mlp, 2)));
        CHECK(wts[2] == param(mlp, "2.weight") && wts[3] == NULL);
        // The same list, allocated to the model's size.
        bg_quantizer_list *ql = bg_model_quantizer_list(mlp);
        CHECK(ql && ql->n == 6);
        for (int i = 0; ql && i < 6; i++)
            CHECK(ql->states[i] == sts[i] && strcmp(ql->names[i], nms[i]) == 0 && ql->weights[i] == wts[i]);
        bg_quantizer_list_free(ql);
        bg_quantizer_list *none = bg_model_quantizer_list(bg_module_child(mlp, 1));   // a ReLU
        CHECK(none && none->n == 0);
        bg_quantizer_list_free(none);
        // A spec change through the state is what the next forward uses.
        bg_quant_spec b;
        CHECK(bg_quant_spec_parse("binary", &b) == BG_OK);
        CHECK(bg_quant_state_set_spec(sts[2], &b) == BG_OK);
        bg_ctx_reset(ctx);
        bg_tensor *xm = bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(2, 8));
        bg_init_normal(xm, &rng, 0.0f, 1.0f);
        bg_model_track_quant(mlp, true);
        CHECK(bg_module_forward(ctx, mlp, xm) != NULL);
        bg_quant_stats *st2 = bg_qlayer_stats(bg_module_child(mlp, 2), false);
        CHECK(st2 && st2->n == 256 && st2->zeros == 0);   // binary: no zero level
    }
    bg_module_free(mlp);
    bg_tensor_free(x10);
    bg_tensor_free(x);
    bg_ctx_free(ctx);
    bg_module_free(net);
}

// ---------------------------------------------------------------------------
// random-direction gradient checks (kann). Fake quant has zero derivative
// almost everywhere, so the wrappers are checked in FP32 mode (the plumbing:
// weights, bias, conv options, embedding rows, BitLinear's RMSNorm and
// matmul with the quantizers as identities) and the STE rules by formula
// above.

static double fake_loss(bg_ctx *ctx, bg_module *m, bg_tensor *x, const float *R) {
    bg_tensor *y = bg_module_forward(ctx, m, x);
    if (!y) return NAN;
    double s = 0;
    for (int64_t i = 0, n = bg_numel(y); i < n; i++) s += (double)bg_f32(y)[i] * R[i];
    return s;
}

static void direction_check(const char *what, bg_module *m, bg_tensor *x, double eps, double rtol) {
    bg_rng rng;
    bg_rng_seed(&rng, 11);
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *y = bg_module_forward(ctx, m, x);
    CHECK_MSG(y != NULL, "%s: forward failed: %s", what, bg_ctx_error(ctx));
    if (!y) {
        bg_ctx_free(ctx);
        return;
    }
    bg_tensor *R = bg_tensor_new(BG_DTYPE_F32, y->ndim, y->shape);
    bg_init_normal(R, &rng, 0.0f, 1.0f);
    bg_tensor *Rc = bg_from_data(ctx, BG_DTYPE_F32, y->ndim, y->shape, R->data);
    bg_module_zero_grad(m);
    CHECK(bg_backward(ctx, bg_sum_all(ctx, bg_mul(ctx, y, Rc))) == BG_OK);
    bg_ctx_reset(ctx);
    int64_t n;
    float *P = bg_module_flat_params(m, &n), *G = bg_module_flat_grads(m, NULL);
    float *p0 = malloc((size_t)n * sizeof(float)), *dd = malloc((size_t)n * sizeof(float));
    memcpy(p0, P, (size_t)n * sizeof(float));
    double gd = 0, nn = 0;
    for (int64_t i = 0; i < n; i++) {
        dd[i] = bg_rng_normal(&rng);
        gd += (double)G[i] * dd[i];
        nn += (double)dd[i] * dd[i];
    }
    double sc = 1.0 / sqrt(nn);
    gd *= sc;
    bg_set_grad_enabled(ctx, false);
    for (int64_t i = 0; i < n; i++) P[i] = (float)(p0[i] + eps * sc * dd[i]);
    double lp = fake_loss(ctx, m, x, bg_f32(R));
    bg_ctx_reset(ctx);
    for (int64_t i = 0; i < n; i++) P[i] = (float)(p0[i] - eps * sc * dd[i]);
    double lm = fake_loss(ctx, m, x, bg_f32(R));
    memcpy(P, p0, (size_t)n * sizeof(float));
    double numeric = (lp - lm) / (2 * eps);
    CHECK_MSG(bg_test_close(gd, numeric, 1e-5, rtol), "%s: grad.d = %.8g, numeric = %.8g", what, gd, numeric);
    CHECK_MSG(fabs(gd) > 1e-3, "%s: grad.d = %g is too small to test anything", what, gd);
    free(p0);
    free(dd);
    bg_tensor_free(R);
    bg_ctx_free(ctx);
}

static void test_gradient_direction(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 12);
    bg_quant_spec w4, a8;
    CHECK(bg_quant_spec_parse("int4:per_channel", &w4) == BG_OK);
    CHECK(bg_quant_spec_parse("int8", &a8) == BG_OK);
    bg_module *mlp = bg_sequential_new(4, (bg_module *[]){
        bg_bitlinear_new(6, 10, &rng), bg_tanh_new(), bg_qlinear_new(10, 8, true, &w4, &a8, &rng),
        bg_bitlinear_new(8, 3, &rng)});
    bg_tensor *x = bg_tensor_new(BG_DTYPE_F32, BG_SHAPE(5, 6));
    bg_init_normal(x, &rng, 0.0f, 1.0f);
    CHECK(mlp != NULL);
    if (mlp) {
        bg_model_set_quant_mode(mlp, BG_QUANT_MODE_FP32);
        direction_check("bitlinear mlp (fp32 mode)", mlp, x, 1e-2, 5e-4);
    }
    bg_module_free(mlp);
    bg_tensor_free(x);

    bg_conv2d_opts o = {.stride = {2, 1}, .padding = {1, 0}, .dilation = {1, 1}, .groups = 1};
    bg_module *cnn = bg_sequential_new(3, (bg_module *[]){
        bg_qconv2d_new(2, 3, 3, 2, &o, true, &w4, &a8, &rng), bg_sigmoid_new(), bg_flatten_new()});
    x = bg_tensor_new(BG_DTYPE_F32, BG_SHAPE(2, 2, 5, 5));
    bg_init_normal(x, &rng, 0.0f, 1.0f);
    CHECK(cnn != NULL);
    if (cnn) {
        bg_model_set_quant_mode(cnn, BG_QUANT_MODE_FP32);
        direction_check("qconv2d (fp32 mode)", cnn, x, 2e-3, 5e-4);
    }
    bg_module *pc = bg_sequential_new(3, (bg_module *[]){
        bg_conv2d_new(2, 3, 3, 2, &o, true, &rng), bg_sigmoid_new(), bg_flatten_new()});
    if (cnn && pc) {
        bg_module_set_param(pc, "0.weight", param(cnn, "0.weight"));
        bg_module_set_param(pc, "0.bias", param(cnn, "0.bias"));
    }
    direction_check("plain conv2d", pc, x, 2e-3, 5e-4);
    bg_module_free(pc);
    bg_module_free(cnn);
    bg_tensor_free(x);

    bg_module *emb = bg_sequential_new(2, (bg_module *[]){bg_qembedding_new(7, 4, &w4, &rng), bg_tanh_new()});
    x = bg_tensor_new(BG_DTYPE_I32, BG_SHAPE(2, 3));
    int32_t ids[6] = {0, 3, 6, 3, 1, 2};
    memcpy(x->data, ids, sizeof ids);
    CHECK(emb != NULL);
    if (emb) {
        bg_model_set_quant_mode(emb, BG_QUANT_MODE_FP32);
        direction_check("qembedding (fp32 mode)", emb, x, 1e-2, 5e-4);
    }
    bg_module_free(emb);
    bg_tensor_free(x);
}

// ---------------------------------------------------------------------------
// training smoke test: a BitLinear MLP on 4 Gaussian blobs in 12-d

static void test_bitlinear_training(void) {
    enum { D = 12, C = 4, B = 64, STEPS = 300, NTEST = 512 };
    bg_rng rng;
    bg_rng_seed(&rng, 5);
    float centers[C][D];
    for (int c = 0; c < C; c++)
        for (int d = 0; d < D; d++) centers[c][d] = 1.5f * bg_rng_normal(&rng);
    bg_module *net = bg_sequential_new(3, (bg_module *[]){
        bg_bitlinear_new(D, 32, &rng), bg_relu_new(), bg_bitlinear_new(32, C, &rng)});
    CHECK(net != NULL);
    if (!net) return;
    bg_optim *opt = bg_adam_new(net, &(bg_adam_opts){.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f});
    bg_ctx *ctx = bg_ctx_new(0);
    float xb[NTEST * D];
    int32_t yb[NTEST];
    for (int step = 0; step < STEPS; step++) {
        for (int i = 0; i < B; i++) {
            int c = (int)bg_rng_below(&rng, C);
            yb[i] = c;
            for (int d = 0; d < D; d++) xb[i * D + d] = centers[c][d] + bg_rng_normal(&rng);
        }
        bg_tensor *x = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(B, D), xb);
        bg_tensor *y = bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(B), yb);
        bg_tensor *loss = bg_cross_entropy(ctx, bg_module_forward(ctx, net, x), y, NULL);
        if (!loss || bg_backward(ctx, loss) != BG_OK) {
            CHECK_MSG(false, "step %d: %s", step, bg_ctx_error(ctx));
            break;
        }
        bg_optim_step(opt);
        bg_module_zero_grad(net);
        bg_ctx_reset(ctx);
    }
    for (int i = 0; i < NTEST; i++) {
        int c = (int)bg_rng_below(&rng, C);
        yb[i] = c;
        for (int d = 0; d < D; d++) xb[i * D + d] = centers[c][d] + bg_rng_normal(&rng);
    }
    bg_model_set_quant_mode(net, BG_QUANT_MODE_EVAL);
    bg_set_grad_enabled(ctx, false);
    bg_tensor *out = bg_module_forward(ctx, net, bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(NTEST, D), xb));
    int correct = 0;
    for (int i = 0; out && i < NTEST; i++) {
        int best = 0;
        for (int c = 1; c < C; c++)
            if (bg_f32(out)[i * C + c] > bg_f32(out)[i * C + best]) best = c;
        correct += best == yb[i];
    }
    double acc = (double)correct / NTEST;
    printf("BitLinear MLP, %d steps: test accuracy %.4f\n", STEPS, acc);
    CHECK_MSG(acc >= 0.95, "BitLinear MLP accuracy %.4f < 0.95", acc);
    bg_optim_free(opt);
    bg_ctx_free(ctx);
    bg_module_free(net);
}

// ---------------------------------------------------------------------------
// integer forward (bg_qlinear_int) against the f32 product of the fake-quantized tensors

/* Number of tape nodes of op on ctx. */
static int count_op(const bg_ctx *ctx, bg_op op) {
    int k = 0;
    for (const bg_node *n = ctx->tape_tail; n; n = n->prev) k += n->op == op;
    return k;
}

/* One layer lay (input width K) run twice on the same x and upstream
 * gradient, integer and f32 forward: want_int qlinear_int nodes on the
 * integer run, outputs within 1e-5 relative (of the largest), every
 * parameter grad identical. */
static void int_vs_f32(const char *name, bg_module *lay, int64_t K, int want_int) {
    enum { N = 16 };
    bg_rng rng;
    bg_rng_seed(&rng, 11);
    bg_ctx *ctx = bg_ctx_new(0);
    float *y[2] = {0}, *g[2] = {0};
    int64_t ny = 0, ng = bg_module_numel(lay);
    int n_int[2] = {0, 0};
    bg_tensor *x = bg_tensor_new(BG_DTYPE_F32, 2, (const int64_t[]){N, K});
    bg_init_normal(x, &rng, 0.0f, 1.0f);
    for (int path = 0; path < 2; path++) {
        bg_model_set_int_forward(lay, path == 0);
        bg_module_zero_grad(lay);
        bg_tensor *out = bg_module_forward(ctx, lay, x);
        if (!CHECK_MSG(out != NULL, "%s: %s", name, bg_ctx_error(ctx))) break;
        ny = bg_numel(out);
        bg_tensor *r = bg_empty(ctx, BG_DTYPE_F32, out->ndim, out->shape);
        bg_rng_seed(&rng, 12);
        for (int64_t i = 0; i < ny; i++) bg_f32(r)[i] = (float)rnd(&rng);
        n_int[path] = count_op(ctx, BG_OP_QLINEAR_INT);
        CHECK(bg_backward_with_grad(ctx, out, r) == BG_OK);
        y[path] = malloc(sizeof(float) * (size_t)ny);
        g[path] = malloc(sizeof(float) * (size_t)ng);
        memcpy(y[path], bg_f32(out), sizeof(float) * (size_t)ny);
        for (int64_t i = 0, o = 0; i < bg_module_param_count(lay); i++) {
            const bg_tensor *p = bg_module_param(lay, (int)i);
            memcpy(g[path] + o, bg_f32(p->grad), sizeof(float) * (size_t)bg_numel(p));
            o += bg_numel(p);
        }
        bg_ctx_reset(ctx);
    }
    if (y[0] && y[1]) {
        double ymax = 0, yerr = 0, gerr = 0;
        for (int64_t i = 0; i < ny; i++) {
            ymax = fmax(ymax, fabs((double)y[1][i]));
            yerr = fmax(yerr, fabs((double)y[0][i] - (double)y[1][i]));
        }
        for (int64_t i = 0; i < ng; i++) gerr = fmax(gerr, fabs((double)g[0][i] - (double)g[1][i]));
        printf("%-44s int forward nodes %d / %d, y max rel err %.2e, param grads max diff %.2e\n", name, n_int[0],
               n_int[1], ymax > 0 ? yerr / ymax : 0.0, gerr);
        CHECK_MSG(n_int[0] == want_int && n_int[1] == 0, "%s: %d / %d qlinear_int nodes, want %d / 0", name,
                  n_int[0], n_int[1], want_int);
        CHECK_MSG(ymax > 0 && yerr <= 1e-5 * ymax, "%s: y max rel err %.3g", name, yerr / ymax);
        CHECK_MSG(gerr == 0.0, "%s: param grads differ by %.3g", name, gerr);
    }
    for (int p = 0; p < 2; p++) free(y[p]), free(g[p]);
    bg_model_set_int_forward(lay, true);
    bg_tensor_free(x);
    bg_ctx_free(ctx);
    bg_module_free(lay);
}

static void test_int_forward(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 10);
    bg_quant_spec t, t_pc, i4_pc, i8n, i8, i8_tok, i4_g, i8_aff;
    CHECK(bg_quant_spec_parse("ternary", &t) == BG_OK && bg_quant_spec_parse("ternary:per_channel", &t_pc) == BG_OK &&
          bg_quant_spec_parse("int4:per_channel", &i4_pc) == BG_OK &&
          bg_quant_spec_parse("int8:narrow", &i8n) == BG_OK && bg_quant_spec_parse("int8", &i8) == BG_OK &&
          bg_quant_spec_parse("int8:per_token:absmax", &i8_tok) == BG_OK &&
          bg_quant_spec_parse("int4:per_group=8", &i4_g) == BG_OK && bg_quant_spec_parse("int8:affine", &i8_aff) == BG_OK);
    int_vs_f32("BitLinear 200 -> 24", bg_bitlinear_new(200, 24, &rng), 200, 1);
    int_vs_f32("QLinear ternary W, int8 A", bg_qlinear_new(40, 24, true, &t, &i8, &rng), 40, 1);
    int_vs_f32("QLinear ternary per-channel W, int8 per-token A", bg_qlinear_new(40, 24, true, &t_pc, &i8_tok, &rng),
               40, 1);
    int_vs_f32("QLinear int4 per-channel W, int8 A", bg_qlinear_new(40, 24, false, &i4_pc, &i8, &rng), 40, 1);
    int_vs_f32("QLinear int8 narrow W, int8 A", bg_qlinear_new(40, 24, true, &i8n, &i8, &rng), 40, 1);
    bg_quant_spec t_lsq;
    CHECK(bg_quant_spec_parse("ternary:per_channel:lsq", &t_lsq) == BG_OK);
    int_vs_f32("QLinear ternary per-channel LSQ W, int8 A", bg_qlinear_new(40, 24, true, &t_lsq, &i8, &rng), 40, 1);
    // Not applicable: f32 product both times.
    int_vs_f32("QLinear int8 W (code -128), int8 A", bg_qlinear_new(40, 24, true, &i8, &i8, &rng), 40, 0);
    int_vs_f32("QLinear int4 per-group W, int8 A", bg_qlinear_new(40, 24, true, &i4_g, &i8, &rng), 40, 0);
    int_vs_f32("QLinear ternary W, int8 affine A", bg_qlinear_new(40, 24, true, &t, &i8_aff, &rng), 40, 0);
    int_vs_f32("QLinear ternary W, float A", bg_qlinear_new(40, 24, true, &t, NULL, &rng), 40, 0);
    // bg_qlinear_int's own checks
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *xq = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(2, 3)), *wq = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(4, 3));
    bg_tensor *s5 = bg_full(ctx, BG_SHAPE(5), 1.0f), *s1 = bg_full(ctx, BG_SHAPE(1), 1.0f);
    CHECK(bg_qlinear_int(ctx, xq, wq, NULL, s5, s1) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "qlinear_int: x_scale must have 1 or 2 elements: x_scale is [5]");
    bg_ctx_reset(ctx);
    xq = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(2, 3)), wq = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(4, 2));
    s1 = bg_full(ctx, BG_SHAPE(1), 1.0f);
    CHECK(bg_qlinear_int(ctx, xq, wq, NULL, s1, s1) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "qlinear_int: input features differ: xq is [2,3], wq is [4,2]");
    bg_ctx_reset(ctx);
    xq = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(2, 3)), wq = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(4, 3));
    s1 = bg_full(ctx, BG_SHAPE(1), 1.0f);
    bg_tensor *s0 = bg_full(ctx, BG_SHAPE(1), 0.0f);
    CHECK(bg_qlinear_int(ctx, xq, wq, NULL, s1, s0) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "qlinear_int: scales must be finite and > 0: w_scale has a value <= 0, NaN or Inf");
    bg_ctx_free(ctx);
}

/* One pass: bg_fake_quant_codes gives the codes and scales its kernel
 * made (y is exactly codes * scale), and the product on those codes is
 * bitwise the product on codes recovered from the fake-quantized values. */
static void test_codes_one_pass(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_rng rng;
    bg_rng_seed(&rng, 8);
    bg_tensor *x = bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(5, 40)), *w = bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(7, 40));
    for (int64_t i = 0; i < 200; i++) bg_f32(x)[i] = 3.0f * bg_rng_normal(&rng);
    for (int64_t i = 0; i < 280; i++) bg_f32(w)[i] = 0.1f * bg_rng_normal(&rng);
    bg_quant_spec as, ws;
    CHECK(bg_quant_spec_parse("int8:per_token:absmax", &as) == BG_OK && bg_quant_spec_parse("ternary:absmean", &ws) == BG_OK);
    bg_tensor *xc, *wc;
    bg_quant_params xp, wp;
    bg_tensor *xq = bg_fake_quant_codes(ctx, x, &as, NULL, &xc, &xp);
    bg_tensor *wq = bg_fake_quant_codes(ctx, w, &ws, NULL, &wc, &wp);
    CHECK(xq && wq && xc && wc && xc->dtype == BG_DTYPE_I8 && wc->dtype == BG_DTYPE_I8);
    CHECK(xp.channels == 5 && xp.inner == 40 && wp.channels == 1 && wp.qmin == -1 && wp.qmax == 1);
    int64_t off = 0;
    for (int64_t i = 0; xq && xc && i < 200; i++)
        off += bg_f32(xq)[i] != (float)((int8_t *)xc->data)[i] * xp.scale[i / 40];
    for (int64_t i = 0; wq && wc && i < 280; i++) off += bg_f32(wq)[i] != (float)((int8_t *)wc->data)[i] * wp.scale[0];
    CHECK_MSG(off == 0, "%lld values are not code * scale", (long long)off);
    bg_tensor *xs = bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(5)), *wsc = bg_full(ctx, BG_SHAPE(1), wp.scale[0]);
    memcpy(xs->data, xp.scale, sizeof(float) * 5);
    bg_tensor *given = bg_qlinear_int_codes(ctx, xq, wq, NULL, xc, xs, wc, wsc);
    bg_tensor *recovered = bg_qlinear_int(ctx, xq, wq, NULL, xs, wsc);
    CHECK(given && recovered && memcmp(given->data, recovered->data, sizeof(float) * 35) == 0);
    CHECK(bg_qlinear_int_codes(ctx, xq, wq, NULL, wc, xs, wc, wsc) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "qlinear_int: x_codes must be contiguous i8 of shape [5,40]: it is i8 [7,40]");
    bg_ctx_free(ctx);
}

// ---------------------------------------------------------------------------
// the FakeQuant module on its own (e.g. between two layers)

static void test_fake_quant_module(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 6);
    bg_quant_spec a4;
    CHECK(bg_quant_spec_parse("int4:lsq", &a4) == BG_OK);
    bg_module *net = bg_sequential_new(3, (bg_module *[]){
        bg_linear_new(4, 6, true, &rng), bg_fake_quant_new(&a4, 0, NULL), bg_linear_new(6, 2, true, &rng)});
    CHECK(net != NULL);
    if (!net) return;
    CHECK(bg_module_param_count(net) == 5);
    CHECK_STR(bg_module_param_name(net, 2), "1.scale");
    CHECK(bg_qlayer_count(net) == 0);   // a FakeQuant alone is not a qlayer
    bg_module *fq = bg_module_child(net, 1);
    CHECK(bg_qlayer_weight_state(fq) != NULL && bg_qlayer_weight_state(fq) == bg_qlayer_input_state(fq));
    char d[128];
    bg_module_describe(fq, d, sizeof d);
    CHECK_STR(str(d), "FakeQuant(int4:lsq)");
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(3, 4));
    bg_init_normal(x, &rng, 0.0f, 1.0f);
    bg_tensor *y = bg_module_forward(ctx, net, x);
    CHECK(y && bg_backward(ctx, bg_sum_all(ctx, bg_mul(ctx, y, y))) == BG_OK);
    CHECK(fabsf(bg_f32(bg_module_param(net, 2)->grad)[0]) > 0);
    // The hidden activations really are on the 4-bit grid: h = k * s, k in [-8, 7].
    bg_ctx_reset(ctx);
    x = bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(3, 4));
    bg_init_normal(x, &rng, 0.0f, 1.0f);
    bg_tensor *h = bg_module_forward(ctx, fq, bg_module_forward(ctx, bg_module_child(net, 0), x));
    float s = bg_f32(bg_module_param(net, 2))[0];
    bool grid = h != NULL;
    for (int i = 0; h && i < 18; i++) {
        float k = bg_f32(h)[i] / s;
        grid &= fabsf(k - nearbyintf(k)) < 1e-4f && k >= -8.0f && k <= 7.0f;
    }
    CHECK(grid);
    // Modes reach it too.
    bg_model_set_quant_mode(net, BG_QUANT_MODE_FP32);
    CHECK(!bg_quant_state_enabled(bg_qlayer_weight_state(fq)));
    bg_ctx_free(ctx);
    bg_module_free(net);
}

int main(void) {
    test_fake_quant_module();
    test_bitlinear_by_hand();
    test_wrapper_params();
    test_lsq_step_formula();
    test_quantize_model_and_modes();
    test_gradient_direction();
    test_bitlinear_training();
    test_int_forward();
    test_codes_one_pass();
    return bg_test_finish();
}
