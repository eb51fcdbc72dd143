/* test_infer.c — the inference runtime against the fake-quant model it was
 * exported from: the Fashion-MNIST MLP trained briefly as BitLinear (ternary
 * weights, per-token int8 activations) and as int8 QLinear (per-channel
 * weights, static per-tensor activations), run on the whole test set; a
 * small CNN with QConv2d / pools / per-group int4 / affine inputs; and
 * corrupt exports. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/test_util.h"

/* Logits of the runtime and of the fake-quant model (eval quant mode) may
 * differ by float rounding (the runtime sums exact integers and scales once;
 * the model sums dequantized floats), which is ~1e-6 of a logit, and, rarely,
 * by one activation code where a hidden value sits on a rounding boundary of
 * the next layer's quantizer (one code step times one weight, summed through
 * the rest of the network). The documented tolerance: max |difference| <=
 * 2% of the largest |logit| over the test set, and predictions agree on
 * >= 99.9% of the images. */
#define LOGIT_TOL_REL 0.02

static bg_module *build_mlp(bg_rng *rng) {
    return bg_sequential_new(5, (bg_module *[]){
        bg_linear_new(784, 512, true, rng), bg_relu_new(),
        bg_linear_new(512, 512, true, rng), bg_relu_new(),
        bg_linear_new(512, 10, true, rng),
    });
}

static bool train_epoch(bg_module *net, const bg_dataset *train, float lr, int64_t max_batches) {
    bg_adam_opts ao = BG_ADAM_DEFAULTS;
    ao.lr = lr;
    bg_optim *opt = bg_adam_new(net, &ao);
    bg_batcher *b = NULL;
    bg_ctx *ctx = bg_ctx_new(0);
    bool ok = opt && ctx &&
              bg_batcher_new(train, &(bg_batcher_opts){.batch_size = 128, .shuffle = true, .seed = 7}, &b) == BG_OK;
    bg_tensor *x, *y;
    int64_t i = 0;
    while (ok && i++ < max_batches && bg_batcher_next(b, ctx, &x, &y)) {
        bg_tensor *loss = bg_cross_entropy(ctx, bg_module_forward(ctx, net, x), y, NULL);
        ok = loss && bg_backward(ctx, loss) == BG_OK && bg_optim_step(opt) == BG_OK;
        bg_module_zero_grad(net);
        bg_ctx_reset(ctx);
    }
    if (!ok) fprintf(stderr, "training failed: %s %s\n", bg_last_error(), ctx ? bg_ctx_error(ctx) : "");
    bg_batcher_free(b);
    bg_ctx_free(ctx);
    bg_optim_free(opt);
    return ok;
}

/* The model's no-grad forward over n examples of x, in batches of 1000. */
static bool model_logits(bg_module *net, const float *x, int64_t n, int64_t features, float *out, int64_t classes) {
    bg_ctx *ctx = bg_ctx_new(0);
    if (!ctx) return false;
    bg_set_grad_enabled(ctx, false);
    bool ok = true;
    for (int64_t s = 0; ok && s < n; s += 1000) {
        int64_t m = n - s < 1000 ? n - s : 1000;
        bg_tensor *xt = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(m, features), x + s * features);
        bg_tensor *y = xt ? bg_module_forward(ctx, net, xt) : NULL;
        ok = y && bg_numel(y) == m * classes;
        if (ok) {
            bg_tensor *yc = bg_contiguous(ctx, y);
            memcpy(out + s * classes, bg_f32(yc), sizeof(float) * (size_t)(m * classes));
        }
        bg_ctx_reset(ctx);
    }
    if (!ok) fprintf(stderr, "forward failed: %s\n", bg_ctx_error(ctx));
    bg_ctx_free(ctx);
    return ok;
}

static int argmax(const float *v, int64_t n) {
    int best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = (int)i;
    return best;
}

/* Exports net (eval quant mode), runs the runtime over the test set and
 * compares with the fake-quant model. */
static void check_against_model(const char *what, bg_module *net, const float *X, const int32_t *labels, int64_t n,
                                 const char *want_path) {
    bg_model_set_quant_mode(net, BG_QUANT_MODE_EVAL);
    bg_module_train(net, false);
    // the reference is the f32 product of the fake-quantized tensors (not the
    // model's integer forward, which would share the runtime's kernels)
    bg_model_set_int_forward(net, false);
    char path[256];
    snprintf(path, sizeof path, "/tmp/bg_test_infer_%d_%s.bgx", (int)getpid(), what);
    bg_status s = bg_export(net, path, NULL);
    CHECK_MSG(s == BG_OK, "%s: export: %s", what, bg_last_error());
    if (s != BG_OK) return;
    bg_infer_model *rt = NULL;
    s = bg_infer_load(path, &rt);
    CHECK_MSG(s == BG_OK, "%s: load: %s", what, bg_last_error());
    if (s != BG_OK) {
        unlink(path);
        return;
    }
    printf("%s runtime layers:\n", what);
    bg_infer_print(rt, stdout);
    CHECK(bg_infer_input_features(rt) == 784);
    CHECK(bg_infer_output_size(rt) == 10);
    CHECK_STR(bg_infer_layer_path(rt, 0), want_path);
    float *ref = malloc(sizeof(float) * (size_t)n * 10), *got = malloc(sizeof(float) * (size_t)n * 10);
    if (ref && got && model_logits(net, X, n, 784, ref, 10) && bg_infer_run(rt, X, n, got) == BG_OK) {
        int64_t same = 0, correct_rt = 0, correct_model = 0;
        double maxdiff = 0, maxlogit = 0;
        for (int64_t i = 0; i < n; i++) {
            int a = argmax(ref + i * 10, 10), b = argmax(got + i * 10, 10);
            same += a == b;
            correct_model += a == labels[i];
            correct_rt += b == labels[i];
            for (int j = 0; j < 10; j++) {
                double d = fabs((double)ref[i * 10 + j] - got[i * 10 + j]);
                maxdiff = d > maxdiff ? d : maxdiff;
                maxlogit = fabs(ref[i * 10 + j]) > maxlogit ? fabs(ref[i * 10 + j]) : maxlogit;
            }
        }
        printf("%s: %lld images: same class %lld (%.3f%%), accuracy model %.4f runtime %.4f, max |logit diff| %.3g "
               "(max |logit| %.3g, tolerance %.3g)\n",
               what, (long long)n, (long long)same, 100.0 * same / n, (double)correct_model / n,
               (double)correct_rt / n, maxdiff, maxlogit, LOGIT_TOL_REL * maxlogit);
        CHECK_MSG(same * 1000 >= n * 999, "%s: same class on %lld of %lld", what, (long long)same, (long long)n);
        CHECK_MSG(maxdiff <= LOGIT_TOL_REL * maxlogit, "%s: max logit diff %g > %g", what, maxdiff,
                  LOGIT_TOL_REL * maxlogit);
        CHECK_MSG((double)correct_rt / n > 0.7, "%s: runtime accuracy %.4f", what, (double)correct_rt / n);
        // chunked runs (max_batch smaller than n, odd sizes) give the same numbers
        bg_infer_model *rt2 = NULL;
        float *got2 = malloc(sizeof(float) * 100 * 10);
        if (got2 && bg_infer_load_opts(path, &(bg_infer_opts){.max_batch = 7}, &rt2) == BG_OK &&
            bg_infer_run(rt2, X, 100, got2) == BG_OK)
            CHECK_ARRAYS("chunked run", got2, got, 100 * 10, 0, 0);
        else
            CHECK_MSG(false, "%s: chunked run: %s", what, bg_last_error());
        // the f32 path of the same export agrees too
        bg_infer_model *rt3 = NULL;
        if (bg_infer_load_opts(path, &(bg_infer_opts){.force_f32 = true}, &rt3) == BG_OK &&
            bg_infer_run(rt3, X, 100, got2) == BG_OK)
            CHECK_ARRAYS("f32 path", got2, ref, 100 * 10, LOGIT_TOL_REL * maxlogit, 0);
        else
            CHECK_MSG(false, "%s: f32 path: %s", what, bg_last_error());
        CHECK_STR(bg_infer_layer_path(rt3, 0), "f32");
        bg_infer_free(rt2);
        bg_infer_free(rt3);
        free(got2);
    } else {
        CHECK_MSG(false, "%s: run failed: %s", what, bg_last_error());
    }
    free(ref);
    free(got);
    bg_infer_free(rt);
    unlink(path);
}

// ---------------------------------------------------------------------------
// a small CNN through every layer kind of the f32 paths

static void test_cnn(const float *X, int64_t n) {
    bg_rng rng;
    bg_rng_seed(&rng, 3);
    bg_quant_spec w4, aff, w8g;
    bg_quant_spec_parse("int4:per_group=4", &w4);
    bg_quant_spec_parse("int8:affine", &aff);
    bg_quant_spec_parse("int8:per_channel", &w8g);
    bg_conv2d_opts o = BG_CONV2D_DEFAULTS;
    o.padding[0] = o.padding[1] = 1;
    bg_module *net = bg_sequential_new(9, (bg_module *[]){
        bg_qconv2d_new(1, 4, 3, 3, &o, true, &w8g, &aff, &rng), bg_relu_new(), bg_max_pool2d_new(2, 0, 0),
        bg_conv2d_new(4, 4, 3, 3, NULL, true, &rng), bg_silu_new(), bg_avg_pool2d_new(2, 0, 0), bg_flatten_new(),
        bg_qlinear_new(144, 16, true, &w4, &aff, &rng), bg_bitlinear_new(16, 10, &rng)});
    CHECK_MSG(net != NULL, "cnn: %s", bg_last_error());
    if (!net) return;
    // observe the inputs' ranges in train mode, then freeze
    float *got = malloc(sizeof(float) * (size_t)n * 10);
    bg_ctx *ctx = bg_ctx_new(0);
    bg_set_grad_enabled(ctx, false);
    bg_tensor *xt = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(200, 1, 28, 28), (void *)X);
    CHECK(xt && bg_module_forward(ctx, net, xt) != NULL);
    bg_ctx_free(ctx);
    bg_model_set_quant_mode(net, BG_QUANT_MODE_EVAL);
    bg_model_set_int_forward(net, false);
    char path[256];
    snprintf(path, sizeof path, "/tmp/bg_test_infer_%d_cnn.bgx", (int)getpid());
    CHECK_MSG(bg_export(net, path, NULL) != BG_OK, "a CNN without an input shape exports");
    CHECK_STR(bg_last_error(), "export: the model starts with a QConv2d: give the input shape (bg_export_opts)");
    bg_status s = bg_export(net, path, &(bg_export_opts){.input_ndim = 3, .input_shape = {1, 28, 28}});
    CHECK_MSG(s == BG_OK, "cnn export: %s", bg_last_error());
    bg_infer_model *rt = NULL;
    if (s == BG_OK && bg_infer_load(path, &rt) == BG_OK) {
        bg_infer_print(rt, stdout);
        CHECK_STR(bg_infer_layer_kind(rt, 0), "conv2d");
        CHECK_STR(bg_infer_layer_path(rt, 7), "f32");          // per-group int4 weights, G = 4
        CHECK_STR(bg_infer_layer_path(rt, 8), "int ternary");  // BitLinear
        CHECK(bg_infer_num_layers(rt) == 9);
        bg_ctx *c2 = bg_ctx_new(0);
        bg_set_grad_enabled(c2, false);
        bg_tensor *x4 = bg_from_data(c2, BG_DTYPE_F32, BG_SHAPE(n, 1, 28, 28), (void *)X);
        bg_tensor *y = x4 ? bg_module_forward(c2, net, x4) : NULL;
        CHECK_MSG(y != NULL, "cnn forward: %s", bg_ctx_error(c2));
        if (y && bg_infer_run(rt, X, n, got) == BG_OK) {
            bg_tensor *yc = bg_contiguous(c2, y);
            double maxdiff = 0, maxlogit = 0;
            int64_t same = 0;
            for (int64_t i = 0; i < n; i++) {
                same += argmax(bg_f32(yc) + i * 10, 10) == argmax(got + i * 10, 10);
                for (int j = 0; j < 10; j++) {
                    double d = fabs((double)bg_f32(yc)[i * 10 + j] - got[i * 10 + j]);
                    maxdiff = d > maxdiff ? d : maxdiff;
                    maxlogit = fabs(bg_f32(yc)[i * 10 + j]) > maxlogit ? fabs(bg_f32(yc)[i * 10 + j]) : maxlogit;
                }
            }
            printf("cnn: %lld images, same class %lld, max |logit diff| %.3g (max |logit| %.3g)\n", (long long)n,
                   (long long)same, maxdiff, maxlogit);
            CHECK_MSG(maxdiff <= LOGIT_TOL_REL * maxlogit, "cnn: max logit diff %g", maxdiff);
            CHECK_MSG(same * 100 >= n * 99, "cnn: same class on %lld of %lld", (long long)same, (long long)n);
        }
        bg_ctx_free(c2);
    } else if (s == BG_OK) {
        CHECK_MSG(false, "cnn load: %s", bg_last_error());
    }
    bg_infer_free(rt);
    unlink(path);
    free(got);
    bg_module_free(net);
}

// ---------------------------------------------------------------------------
// per-group int4 weights (G = 112: 7 groups of 784) on the grouped integer path

static void test_groups(const float *X, int64_t n) {
    bg_rng rng;
    bg_rng_seed(&rng, 4);
    bg_quant_spec w4, a8;
    bg_quant_spec_parse("int4:per_group=112:lsq", &w4);
    bg_quant_spec_parse("int8", &a8);
    bg_module *net = bg_sequential_new(3, (bg_module *[]){bg_qlinear_new(784, 64, true, &w4, &a8, &rng), bg_relu_new(),
                                                          bg_bitlinear_new(64, 10, &rng)});
    CHECK_MSG(net != NULL, "groups: %s", bg_last_error());
    if (!net) return;
    bg_ctx *ctx = bg_ctx_new(0);
    bg_set_grad_enabled(ctx, false);
    bg_tensor *xt = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(500, 784), X);
    CHECK(xt && bg_module_forward(ctx, net, xt) != NULL);   // observers and LSQ steps see data
    bg_ctx_free(ctx);
    bg_model_set_quant_mode(net, BG_QUANT_MODE_EVAL);
    bg_model_set_int_forward(net, false);
    char path[256];
    snprintf(path, sizeof path, "/tmp/bg_test_infer_%d_groups.bgx", (int)getpid());
    bg_infer_model *rt = NULL;
    float *ref = malloc(sizeof(float) * (size_t)n * 10), *got = malloc(sizeof(float) * (size_t)n * 10);
    if (bg_export(net, path, NULL) == BG_OK && bg_infer_load(path, &rt) == BG_OK) {
        CHECK_STR(bg_infer_layer_path(rt, 0), "int s8 groups");
        if (model_logits(net, X, n, 784, ref, 10) && bg_infer_run(rt, X, n, got) == BG_OK) {
            double maxdiff = 0, maxlogit = 0;
            int64_t same = 0;
            for (int64_t i = 0; i < n; i++) {
                same += argmax(ref + i * 10, 10) == argmax(got + i * 10, 10);
                for (int j = 0; j < 10; j++) {
                    double d = fabs((double)ref[i * 10 + j] - got[i * 10 + j]);
                    maxdiff = d > maxdiff ? d : maxdiff;
                    maxlogit = fabs(ref[i * 10 + j]) > maxlogit ? fabs(ref[i * 10 + j]) : maxlogit;
                }
            }
            printf("groups: %lld images, same class %lld, max |logit diff| %.3g (max |logit| %.3g)\n", (long long)n,
                   (long long)same, maxdiff, maxlogit);
            CHECK_MSG(maxdiff <= LOGIT_TOL_REL * maxlogit, "groups: max logit diff %g", maxdiff);
            CHECK_MSG(same * 100 >= n * 99, "groups: same class on %lld of %lld", (long long)same, (long long)n);
        } else {
            CHECK_MSG(false, "groups: run: %s", bg_last_error());
        }
    } else {
        CHECK_MSG(false, "groups: %s", bg_last_error());
    }
    bg_infer_free(rt);
    unlink(path);
    free(ref);
    free(got);
    bg_module_free(net);
}

// ---------------------------------------------------------------------------
// one int8 layer: weight codes -128 (sparse fix), integer vs f32 path

static void test_s8_fix(const float *X) {
    bg_rng rng;
    bg_rng_seed(&rng, 9);
    bg_quant_spec w8, a8;
    bg_quant_spec_parse("int8:per_channel", &w8);
    bg_quant_spec_parse("int8:affine", &a8);   // u8 codes: the shifted-zero-point path
    bg_module *net = bg_sequential_new(1, (bg_module *[]){bg_qlinear_new(784, 32, true, &w8, &a8, &rng)});
    bg_ctx *ctx = bg_ctx_new(0);
    bg_set_grad_enabled(ctx, false);
    bg_tensor *xt = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(300, 784), X);
    CHECK(net && xt && bg_module_forward(ctx, net, xt) != NULL);
    bg_ctx_free(ctx);
    bg_model_set_quant_mode(net, BG_QUANT_MODE_EVAL);
    char path[256];
    snprintf(path, sizeof path, "/tmp/bg_test_infer_%d_s8.bgx", (int)getpid());
    bg_infer_model *a = NULL, *b = NULL;
    bg_safetensors *st = NULL;
    float *ya = malloc(sizeof(float) * 300 * 32), *yb = malloc(sizeof(float) * 300 * 32);
    if (bg_export(net, path, NULL) == BG_OK && bg_infer_load(path, &a) == BG_OK &&
        bg_infer_load_opts(path, &(bg_infer_opts){.force_f32 = true}, &b) == BG_OK &&
        bg_safetensors_open(path, &st) == BG_OK) {
        bg_tensor w;
        int64_t n128 = 0;
        if (bg_safetensors_get(st, "0.weight", &w) == BG_OK && w.dtype == BG_DTYPE_I8)
            for (int64_t i = 0; i < bg_numel(&w); i++) n128 += ((const int8_t *)w.data)[i] == -128;
        printf("s8: %lld weight codes -128\n", (long long)n128);
        CHECK(n128 > 0);
        CHECK_STR(bg_infer_layer_path(a, 0), "int s8");
        CHECK(bg_infer_run(a, X, 300, ya) == BG_OK && bg_infer_run(b, X, 300, yb) == BG_OK);
        CHECK_ARRAYS("int s8 vs f32 path", ya, yb, 300 * 32, 1e-4, 1e-5);
    } else {
        CHECK_MSG(false, "s8: %s", bg_last_error());
    }
    bg_safetensors_free(st);
    bg_infer_free(a);
    bg_infer_free(b);
    free(ya);
    free(yb);
    unlink(path);
    bg_module_free(net);
}

// ---------------------------------------------------------------------------
// activation quantizers: PACT (unsigned 4-bit), LSQ+ (affine, learned zero
// point), per-token absmax on a QLinear, a fixed scale / zero point

static void test_act_kinds(const float *X, int64_t n) {
    static const char *const specs[4][2] = {
        {"int4:per_channel", "int4:unsigned:pact"},
        {"int8:per_channel:lsq", "int8:affine:lsq_plus"},
        {"ternary", "int8:per_token:absmax"},
        {"int6", "int8:affine:scale=0.05:zp=3"},
    };
    const int64_t dims[5] = {784, 32, 16, 12, 10};
    bg_rng rng;
    bg_rng_seed(&rng, 12);
    bg_module *layers[7];
    for (int i = 0; i < 4; i++) {
        bg_quant_spec w, a;
        CHECK_MSG(bg_quant_spec_parse(specs[i][0], &w) == BG_OK && bg_quant_spec_parse(specs[i][1], &a) == BG_OK,
                  "spec: %s", bg_last_error());
        layers[2 * i] = bg_qlinear_new(dims[i], dims[i + 1], true, &w, &a, &rng);
        if (i < 3) layers[2 * i + 1] = bg_relu_new();
    }
    bg_module *net = bg_sequential_new(7, layers);
    CHECK_MSG(net != NULL, "act kinds: %s", bg_last_error());
    if (!net) return;
    bg_ctx *ctx = bg_ctx_new(0);
    bg_set_grad_enabled(ctx, false);
    bg_tensor *xt = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(500, 784), X);
    CHECK(xt && bg_module_forward(ctx, net, xt) != NULL);   // initialise PACT / LSQ+ / observers
    bg_ctx_free(ctx);
    bg_model_set_quant_mode(net, BG_QUANT_MODE_EVAL);
    bg_model_set_int_forward(net, false);
    char path[256];
    snprintf(path, sizeof path, "/tmp/bg_test_infer_%d_acts.bgx", (int)getpid());
    bg_infer_model *rt = NULL;
    float *ref = malloc(sizeof(float) * (size_t)n * 10), *got = malloc(sizeof(float) * (size_t)n * 10);
    bg_status s = bg_export(net, path, NULL);
    CHECK_MSG(s == BG_OK, "act kinds: export: %s", bg_last_error());
    if (s == BG_OK && bg_infer_load(path, &rt) == BG_OK) {
        bg_infer_print(rt, stdout);
        for (int i = 0; i < 4; i++) CHECK_MSG(strncmp(bg_infer_layer_path(rt, 2 * i), "int", 3) == 0, "layer %d on %s", 2 * i, bg_infer_layer_path(rt, 2 * i));
        if (model_logits(net, X, n, 784, ref, 10) && bg_infer_run(rt, X, n, got) == BG_OK) {
            double maxdiff = 0, maxlogit = 0;
            int64_t same = 0;
            for (int64_t i = 0; i < n; i++) {
                same += argmax(ref + i * 10, 10) == argmax(got + i * 10, 10);
                for (int j = 0; j < 10; j++) {
                    double d = fabs((double)ref[i * 10 + j] - got[i * 10 + j]);
                    maxdiff = d > maxdiff ? d : maxdiff;
                    maxlogit = fabs(ref[i * 10 + j]) > maxlogit ? fabs(ref[i * 10 + j]) : maxlogit;
                }
            }
            printf("act kinds: %lld images, same class %lld, max |logit diff| %.3g (max |logit| %.3g)\n", (long long)n,
                   (long long)same, maxdiff, maxlogit);
            CHECK_MSG(maxdiff <= LOGIT_TOL_REL * maxlogit, "act kinds: max logit diff %g", maxdiff);
            CHECK_MSG(same * 100 >= n * 99, "act kinds: same class on %lld of %lld", (long long)same, (long long)n);
        } else {
            CHECK_MSG(false, "act kinds: run: %s", bg_last_error());
        }
    } else if (s == BG_OK) {
        CHECK_MSG(false, "act kinds: load: %s", bg_last_error());
    }
    bg_infer_free(rt);
    unlink(path);
    free(ref);
    free(got);
    bg_module_free(net);
}

// ---------------------------------------------------------------------------
// float layers: norms and the other activations

static void test_float_kinds(const float *X, int64_t n) {
    bg_rng rng;
    bg_rng_seed(&rng, 11);
    bg_module *net = bg_sequential_new(12, (bg_module *[]){
        bg_linear_new(784, 64, true, &rng), bg_layernorm_new(64, 1e-5f, true), bg_gelu_new(false),
        bg_linear_new(64, 64, false, &rng), bg_rmsnorm_new(64, 1e-6f), bg_leaky_relu_new(0.1f), bg_dropout_new(0.5f, 1),
        bg_linear_new(64, 32, true, &rng), bg_tanh_new(), bg_linear_new(32, 32, true, &rng), bg_gelu_new(true),
        bg_linear_new(32, 10, true, &rng)});
    CHECK_MSG(net != NULL, "float kinds: %s", bg_last_error());
    if (!net) return;
    bg_module_train(net, false);
    char path[256];
    snprintf(path, sizeof path, "/tmp/bg_test_infer_%d_float.bgx", (int)getpid());
    bg_infer_model *rt = NULL;
    float *ref = malloc(sizeof(float) * (size_t)n * 10), *got = malloc(sizeof(float) * (size_t)n * 10);
    if (bg_export(net, path, NULL) == BG_OK && bg_infer_load(path, &rt) == BG_OK) {
        CHECK_STR(bg_infer_layer_kind(rt, 1), "layernorm");
        CHECK_STR(bg_infer_layer_kind(rt, 4), "rmsnorm");
        CHECK_STR(bg_infer_layer_kind(rt, 10), "gelu_tanh");
        if (model_logits(net, X, n, 784, ref, 10) && bg_infer_run(rt, X, n, got) == BG_OK)
            CHECK_ARRAYS("float kinds", got, ref, n * 10, 1e-5, 1e-4);
        else
            CHECK_MSG(false, "float kinds: run: %s", bg_last_error());
    } else {
        CHECK_MSG(false, "float kinds: %s", bg_last_error());
    }
    bg_infer_free(rt);
    unlink(path);
    free(ref);
    free(got);
    bg_module_free(net);
}

// ---------------------------------------------------------------------------
// corrupt exports

/* Copies the export at src to dst through the safetensors writer, with
 * tensor `bad` (if any) changed by edit and metadata key `key` (if any) set
 * to value. */
static bool rewrite(const char *src, const char *dst, const char *bad, void (*edit)(bg_tensor *), const char *key,
                    const char *value) {
    bg_safetensors *st;
    if (bg_safetensors_open(src, &st) != BG_OK) return false;
    bg_safetensors_writer *w = bg_safetensors_writer_new();
    bool ok = w != NULL;
    void *copies[64];
    int n_copies = 0;
    for (int i = 0; ok && i < bg_safetensors_count(st); i++) {
        bg_tensor v;
        const char *name = bg_safetensors_name(st, i);
        ok = bg_safetensors_get(st, name, &v) == BG_OK;
        if (ok && bad && !strcmp(name, bad) && n_copies < 64) {
            void *c = malloc(bg_nbytes(&v));
            memcpy(c, v.data, bg_nbytes(&v));
            v.data = c;
            copies[n_copies++] = c;
            edit(&v);
        }
        ok = ok && bg_safetensors_writer_add(w, name, &v) == BG_OK;
    }
    const char *keys[] = {"format", "version", "input_shape", "output_size", "layers", "model"};
    for (int i = 0; ok && i < 6; i++) {
        const char *v = key && !strcmp(key, keys[i]) ? value : bg_safetensors_metadata(st, keys[i]);
        if (v) ok = bg_safetensors_writer_meta(w, keys[i], v) == BG_OK;
    }
    ok = ok && bg_safetensors_writer_save(w, dst) == BG_OK;
    bg_safetensors_writer_free(w);
    for (int i = 0; i < n_copies; i++) free(copies[i]);
    bg_safetensors_free(st);
    return ok;
}

static void code3(bg_tensor *t) { ((uint8_t *)t->data)[5] = 0xff; }
static void shrink(bg_tensor *t) { t->shape[1] -= 1; }

static void test_corrupt(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 1);
    bg_module *net = bg_sequential_new(3, (bg_module *[]){bg_bitlinear_new(40, 16, &rng), bg_relu_new(),
                                                          bg_linear_new(16, 3, true, &rng)});
    char good[256], bad[256];
    snprintf(good, sizeof good, "/tmp/bg_test_infer_%d_good.bgx", (int)getpid());
    snprintf(bad, sizeof bad, "/tmp/bg_test_infer_%d_bad.bgx", (int)getpid());
    CHECK(net && bg_export(net, good, NULL) == BG_OK);
    bg_infer_model *m = NULL;
    char want[512];

    CHECK(bg_infer_load("/nonexistent/x.bgx", &m) == BG_ERR_IO && m == NULL);

    // truncated: the safetensors reader's check
    FILE *f = fopen(good, "rb"), *g = fopen(bad, "wb");
    char buf[4096];
    size_t got = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (g) fwrite(buf, 1, got > 300 ? 300 : got, g);
    if (f) fclose(f);
    if (g) fclose(g);
    CHECK(bg_infer_load(bad, &m) == BG_ERR_FORMAT && m == NULL);
    printf("truncated: %s\n", bg_last_error());

    // a safetensors file that is not an export
    CHECK(rewrite(good, bad, NULL, NULL, "format", "bitgrad-checkpoint"));
    CHECK(bg_infer_load(bad, &m) == BG_ERR_FORMAT && m == NULL);
    snprintf(want, sizeof want,
             "infer_load: %s: not a bitgrad export (metadata \"format\" is \"bitgrad-checkpoint\", want "
             "\"bitgrad-export\")",
             bad);
    CHECK_STR(bg_last_error(), want);

    CHECK(rewrite(good, bad, NULL, NULL, "version", "7"));
    CHECK(bg_infer_load(bad, &m) == BG_ERR_FORMAT);
    snprintf(want, sizeof want, "infer_load: %s: unsupported export version 7 (this runtime reads version 1)", bad);
    CHECK_STR(bg_last_error(), want);

    CHECK(rewrite(good, bad, NULL, NULL, "layers", "[{\"name\":\"0\"}"));
    CHECK(bg_infer_load(bad, &m) == BG_ERR_FORMAT);
    snprintf(want, sizeof want, "infer_load: %s: metadata \"layers\" is missing or not a non-empty JSON array", bad);
    CHECK_STR(bg_last_error(), want);

    // implausible sizes are refused before anything is allocated
    CHECK(rewrite(good, bad, NULL, NULL, "layers", "[{\"name\":\"0\",\"kind\":\"linear\",\"in\":1073741824,\"out\":16}]"));
    CHECK(bg_infer_load(bad, &m) == BG_ERR_FORMAT && m == NULL);
    snprintf(want, sizeof want, "infer_load: %s: layer 0: \"in\"/\"out\" missing or not in 1..16777216", bad);
    CHECK_STR(bg_last_error(), want);

    // an invalid packed ternary code
    CHECK(rewrite(good, bad, "0.weight", code3, NULL, NULL));
    CHECK(bg_infer_load(bad, &m) == BG_ERR_FORMAT && m == NULL);
    snprintf(want, sizeof want, "infer_load: %s: layer 0: weight row 0: packed byte 5 holds the invalid code 3", bad);
    CHECK_STR(bg_last_error(), want);

    // a packed weight of the wrong shape
    CHECK(rewrite(good, bad, "0.weight", shrink, NULL, NULL));
    CHECK(bg_infer_load(bad, &m) == BG_ERR_FORMAT && m == NULL);
    snprintf(want, sizeof want, "infer_load: %s: layer 0: 0.weight is u8 [16,31], want u8 [16,32]", bad);
    CHECK_STR(bg_last_error(), want);

    // a layer list that does not chain: linear in 16 after a [40] input
    CHECK(rewrite(good, bad, NULL, NULL, "input_shape", "[41]"));
    CHECK(bg_infer_load(bad, &m) == BG_ERR_FORMAT);
    snprintf(want, sizeof want, "infer_load: %s: layer 0: linear expects [40], the previous layer gives [41]", bad);
    CHECK_STR(bg_last_error(), want);

    CHECK(bg_infer_run(NULL, NULL, 1, NULL) == BG_ERR_ARG);
    unlink(good);
    unlink(bad);
    bg_module_free(net);
}

int main(void) {
    bg_dataset *train = NULL, *test = NULL;
    if (bg_fmnist_load(NULL, BG_FMNIST_TRAIN, &train) != BG_OK || bg_fmnist_load(NULL, BG_FMNIST_TEST, &test) != BG_OK) {
        CHECK_MSG(false, "Fashion-MNIST: %s", bg_last_error());
        return bg_test_finish();
    }
    const int64_t n = test->n;
    float *X = malloc(sizeof(float) * (size_t)(n * 784));
    for (int64_t i = 0; i < n * 784; i++) X[i] = (float)test->pixels[i] / 255.0f;

    test_corrupt();
    test_cnn(X, 500);
    test_groups(X, 2000);
    test_s8_fix(X);
    test_float_kinds(X, 500);
    test_act_kinds(X, 1000);

    bg_rng rng;
    bg_rng_seed(&rng, 42);
    bg_module *bit = build_mlp(&rng);
    CHECK(bit && bg_bitnet_model(bit) == BG_OK);
    if (bit && train_epoch(bit, train, 2e-3f, 100)) check_against_model("bitnet", bit, X, test->labels, n, "int ternary");
    bg_module_free(bit);

    bg_rng_seed(&rng, 43);
    bg_module *q8 = build_mlp(&rng);
    CHECK(q8 && bg_quantize_model(q8, "int8:per_channel", "int8") == BG_OK);
    if (q8 && train_epoch(q8, train, 1e-3f, 100)) check_against_model("int8", q8, X, test->labels, n, "int s8");
    bg_module_free(q8);

    free(X);
    bg_dataset_free(train);
    bg_dataset_free(test);
    return bg_test_finish();
}
