/* test_autoquant.c — automatic precision: the batch cache replays its
 * batches, calibration equals an observer pass computed by hand and then
 * freezes, sensitivities (base loss = the float model's, 8 bits costs less
 * than ternary on a trained model, the model comes back unchanged), export
 * sizes, the budget solver (never above the budget, optimal against brute
 * force) and the quality gate's moves. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitgrad.h"
#include "tests/test_util.h"

enum { ROWS = 256, FEAT = 12, CLASSES = 3, BATCH = 32 };

static float xs[ROWS * FEAT];
static int32_t ys[ROWS];

static bg_dataset *dataset(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 4);
    for (int i = 0; i < ROWS; i++) {
        ys[i] = (int32_t)bg_rng_below(&rng, CLASSES);
        for (int k = 0; k < FEAT; k++) xs[i * FEAT + k] = 2.0f * (bg_rng_uniform(&rng) - 0.5f) + (k % CLASSES == ys[i]);
    }
    bg_dataset *ds = NULL;
    CHECK(bg_dataset_from_arrays(BG_DTYPE_F32, xs, 2, (int64_t[]){ROWS, FEAT}, ys, &ds) == BG_OK);
    return ds;
}

static bg_module *mlp(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 2);
    return bg_sequential_new(3, (bg_module *[]){bg_linear_new(FEAT, 32, true, &rng), bg_relu_new(),
                                                bg_linear_new(32, CLASSES, true, &rng)});
}

static void test_cache_and_calibration(void) {
    bg_dataset *ds = dataset();
    bg_batcher *b = NULL;
    CHECK(bg_batcher_new(ds, &(bg_batcher_opts){.batch_size = BATCH}, &b) == BG_OK);
    bg_ctx *ctx = bg_ctx_new(0);
    bg_batch_source src = bg_batcher_source(b);
    bg_batch_cache *c = NULL;
    CHECK(bg_batch_cache_new(ctx, &src, 3, &c) == BG_OK);
    CHECK(bg_batch_cache_batches(c) == 3);
    // two passes give the same batches, the first rows of the data set
    bg_batch_source cs = bg_batch_cache_source(c);
    bg_tensor *x, *y;
    for (int pass = 0; pass < 2; pass++) {
        int k = 0;
        while (cs.next(cs.src, ctx, &x, &y)) {
            CHECK(x->shape[0] == BATCH && memcmp(bg_f32(x), xs + k * BATCH * FEAT, sizeof(float) * BATCH * FEAT) == 0);
            CHECK(((int32_t *)y->data)[5] == ys[k * BATCH + 5]);
            k++;
        }
        CHECK_MSG(k == 3, "pass %d gave %d batches", pass, k);
    }
    bg_ctx_reset(ctx);
    // calibration: layer 0's input observer holds min / max of those 96 rows
    bg_module *m = mlp();
    CHECK(bg_quantize_model(m, "int8", "int8") == BG_OK);
    int64_t seen = 0;
    CHECK(bg_calibrate(ctx, m, &cs, &seen) == BG_OK);
    CHECK(seen == 3);
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int i = 0; i < 3 * BATCH * FEAT; i++) lo = fminf(lo, xs[i]), hi = fmaxf(hi, xs[i]);
    bg_quant_state *in0 = bg_qlayer_input_state(bg_qlayer_at(m, 0));
    float rmin, rmax, scale;
    bg_quant_state_flags f;
    CHECK(bg_quant_state_get_buffers(in0, &rmin, &rmax, &scale, NULL, &f) == BG_OK);
    CHECK_MSG(rmin == lo && rmax == hi, "observed [%g, %g], by hand [%g, %g]", rmin, rmax, lo, hi);
    CHECK(f.observed && !f.observer_on);   // frozen after calibration
    // symmetric int8: scale = max(|min|, |max|) / 127.5, as torch's MinMaxObserver
    CHECK_CLOSE(scale, fmaxf(-lo, hi) / 127.5f, 1e-7, 1e-6);
    // a frozen observer: another batch leaves the range alone
    CHECK(bg_batcher_seek(b, 0, 5) == BG_OK);
    CHECK(bg_batcher_next(b, ctx, &x, &y) && bg_module_forward(ctx, m, x));
    float rmin2, rmax2;
    bg_quant_state_get_buffers(in0, &rmin2, &rmax2, NULL, NULL, NULL);
    CHECK(rmin2 == rmin && rmax2 == rmax);
    bg_ctx_reset(ctx);
    bg_batch_cache_free(c);
    // errors
    bg_batch_cache *none = (bg_batch_cache *)&none;
    CHECK(bg_batch_cache_new(ctx, &src, 0, &none) == BG_ERR_ARG && none == NULL);
    CHECK(bg_calibrate(ctx, NULL, &src, NULL) == BG_ERR_ARG);
    bg_module_free(m);
    bg_ctx_free(ctx);
    bg_batcher_free(b);
    bg_dataset_free(ds);
}

static void test_sensitivity(void) {
    bg_dataset *ds = dataset();
    bg_batcher *b = NULL;
    CHECK(bg_batcher_new(ds, &(bg_batcher_opts){.batch_size = BATCH, .shuffle = true, .seed = 3}, &b) == BG_OK);
    bg_ctx *ctx = bg_ctx_new(0);
    bg_module *m = mlp();
    bg_optim *opt = bg_adam_new(m, &(bg_adam_opts){.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f});
    double loss;
    for (int e = 0; e < 8; e++) CHECK(bg_train_epoch(ctx, m, opt, b, NULL, &loss) == BG_OK);
    bg_optim_free(opt);
    bg_batch_source src = bg_batcher_source(b);
    bg_batch_cache *calib = NULL;
    CHECK(bg_batch_cache_new(ctx, &src, 4, &calib) == BG_OK);
    bg_batch_source cs = bg_batch_cache_source(calib);
    double float_loss;
    CHECK(bg_evaluate_loss(ctx, m, &cs, &float_loss) == BG_OK);
    CHECK(bg_quantize_model(m, "int8", NULL) == BG_OK);
    CHECK(bg_calibrate(ctx, m, &cs, NULL) == BG_OK);
    // logits before and after: the model must come back as it was
    bg_module_train(m, false);
    bg_batch_source cs2 = bg_batch_cache_source(calib);
    bg_tensor *x, *y;
    CHECK(cs2.next(cs2.src, ctx, &x, &y));
    bg_tensor *before = bg_module_forward(ctx, m, x);
    float *b0 = malloc(sizeof(float) * (size_t)bg_numel(before));
    memcpy(b0, bg_f32(before), sizeof(float) * (size_t)bg_numel(before));
    bg_ctx_reset(ctx);
    const char *specs[] = {"ternary", "int4", "int8"};
    double base, delta[2 * 3];
    CHECK(bg_weight_sensitivity(ctx, m, calib, specs, 3, &base, delta) == BG_OK);
    CHECK_MSG(base == float_loss, "base loss %.9g, the float model's %.9g", base, float_loss);
    for (int i = 0; i < 2; i++) {
        printf("layer %d: loss +%.5f ternary, +%.5f int4, +%.5f int8 (float %.4f)\n", i, delta[i * 3], delta[i * 3 + 1],
               delta[i * 3 + 2], base);
        CHECK_MSG(fabs(delta[i * 3 + 2]) < 0.02, "layer %d at int8 moved the loss by %g", i, delta[i * 3 + 2]);
        CHECK_MSG(delta[i * 3] > delta[i * 3 + 2], "layer %d: ternary %g not above int8 %g", i, delta[i * 3], delta[i * 3 + 2]);
    }
    cs2 = bg_batch_cache_source(calib);
    CHECK(cs2.next(cs2.src, ctx, &x, &y));
    bg_tensor *after = bg_module_forward(ctx, m, x);
    CHECK_MSG(after && memcmp(b0, bg_f32(after), sizeof(float) * (size_t)bg_numel(after)) == 0,
              "the model's int8 forward changed after the sensitivity pass");
    // GPTQ start: the latent weights become GPTQ's compensated weights, and
    // the calibration loss of the int4 model is printed next to round to nearest's
    double rtn_loss, gptq_loss;
    bg_module *g = mlp();
    memcpy(bg_module_flat_params(g, &(int64_t){0}), bg_module_flat_params(m, &(int64_t){0}),
           sizeof(float) * (size_t)bg_module_numel(g));
    bg_module *r = mlp();
    memcpy(bg_module_flat_params(r, &(int64_t){0}), bg_module_flat_params(m, &(int64_t){0}),
           sizeof(float) * (size_t)bg_module_numel(r));
    CHECK(bg_quantize_model(g, "int4", NULL) == BG_OK && bg_quantize_model(r, "int4", NULL) == BG_OK);
    int done = 0;
    CHECK(bg_gptq_model(ctx, g, calib, 0.01, &done) == BG_OK);
    CHECK(done == 2);
    // the latent weights moved off the float ones (the compensation), the
    // quantizer's scale is the one observed from the float weights
    for (int i = 0; i < 2; i++) {
        bg_tensor *wg = bg_qlayer_weight(bg_qlayer_at(g, i)), *wr = bg_qlayer_weight(bg_qlayer_at(r, i));
        int64_t moved = 0;
        for (int64_t k = 0; k < bg_numel(wg); k++) moved += bg_f32(wg)[k] != bg_f32(wr)[k];
        CHECK_MSG(moved > bg_numel(wg) / 2, "layer %d: GPTQ moved %lld of %lld weights", i, (long long)moved,
                  (long long)bg_numel(wg));
    }
    cs = bg_batch_cache_source(calib);
    CHECK(bg_calibrate(ctx, r, &cs, NULL) == BG_OK && bg_calibrate(ctx, g, &cs, NULL) == BG_OK);
    CHECK(bg_evaluate_loss(ctx, r, &cs, &rtn_loss) == BG_OK && bg_evaluate_loss(ctx, g, &cs, &gptq_loss) == BG_OK);
    printf("int4 weights: calibration loss %.5f round to nearest, %.5f GPTQ (float %.5f)\n", rtn_loss, gptq_loss, base);
    bg_module_free(g);
    bg_module_free(r);
    const char *bad[] = {"int9"};
    CHECK(bg_weight_sensitivity(ctx, m, calib, bad, 1, &base, delta) == BG_ERR_ARG);
    free(b0);
    bg_batch_cache_free(calib);
    bg_module_free(m);
    bg_ctx_free(ctx);
    bg_batcher_free(b);
    bg_dataset_free(ds);
}

static void test_export_bytes(void) {
    bg_quant_spec t, i4, i8;
    CHECK(bg_quant_spec_parse("ternary", &t) == BG_OK && bg_quant_spec_parse("int4", &i4) == BG_OK &&
          bg_quant_spec_parse("int8:per_channel", &i8) == BG_OK);
    // 512 x 784: t2 rows of 896/4 bytes, one scale; i4 392 bytes a row; i8 784 + a scale per row; + bias
    CHECK(bg_export_layer_bytes(512, 784, &t, true) == 512 * 224 + 4 + 512 * 4);
    CHECK(bg_export_layer_bytes(512, 784, &i4, true) == 512 * 392 + 4 + 512 * 4);
    CHECK(bg_export_layer_bytes(512, 784, &i8, false) == 512 * 784 + 512 * 4);
    CHECK(bg_export_layer_bytes(10, 512, NULL, true) == 10 * 512 * 4 + 40);
}

/* Brute force over every choice of n layers x k options. */
static double brute(int n, int k, const int64_t *bytes, const double *cost, int64_t budget) {
    double best = DBL_MAX;
    int c[8] = {0};
    for (;;) {
        int64_t b = 0;
        double s = 0;
        for (int i = 0; i < n; i++) b += bytes[i * k + c[i]], s += cost[i * k + c[i]];
        if (b <= budget && s < best) best = s;
        int i = 0;
        while (i < n && ++c[i] == k) c[i++] = 0;
        if (i == n) return best;
    }
}

static void test_budget_solver(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 8);
    for (int trial = 0; trial < 200; trial++) {
        int n = 1 + (int)bg_rng_below(&rng, 6), k = 1 + (int)bg_rng_below(&rng, 3);
        int64_t bytes[6 * 3], lo = 0, hi = 0;
        double cost[6 * 3];
        for (int i = 0; i < n; i++) {
            int64_t mn = INT64_MAX, mx = 0;
            for (int j = 0; j < k; j++) {
                bytes[i * k + j] = 1 + (int64_t)bg_rng_below(&rng, 400);
                cost[i * k + j] = bg_rng_uniform(&rng) - 0.1;   // a few negative, as measured losses can be
                mn = bytes[i * k + j] < mn ? bytes[i * k + j] : mn, mx = bytes[i * k + j] > mx ? bytes[i * k + j] : mx;
            }
            lo += mn, hi += mx;
        }
        int64_t budget = lo + (int64_t)bg_rng_below(&rng, (uint64_t)(hi - lo + 1));
        int choice[6];
        double total;
        int64_t used;
        CHECK(bg_budget_solve(n, k, bytes, cost, budget, choice, &total, &used) == BG_OK);
        int64_t b = 0;
        double s = 0;
        for (int i = 0; i < n; i++) b += bytes[i * k + choice[i]], s += cost[i * k + choice[i]];
        CHECK_MSG(b == used && b <= budget, "trial %d: %lld bytes for a budget of %lld", trial, (long long)b,
                  (long long)budget);
        double want = brute(n, k, bytes, cost, budget);
        CHECK_MSG(fabs(s - want) < 1e-9 && fabs(total - want) < 1e-9, "trial %d: cost %.9g, brute force %.9g", trial,
                  s, want);
    }
    // large sizes: units of more than a byte, still never above the budget
    int64_t big[3 * 3] = {1600003, 3200001, 6400007, 800011, 1600019, 3200023, 40009, 80021, 160003};
    double cost[3 * 3] = {0.9, 0.2, 0.01, 0.5, 0.1, 0.0, 0.3, 0.05, 0.0};
    int choice[3];
    int64_t used;
    CHECK(bg_budget_solve(3, 3, big, cost, 5000000, choice, NULL, &used) == BG_OK);
    CHECK(used <= 5000000);
    CHECK(choice[0] == 1 && choice[1] == 1 && choice[2] == 2);   // 3200001 + 1600019 + 160003
    CHECK(bg_budget_solve(3, 3, big, cost, 2000000, choice, NULL, NULL) == BG_ERR_ARG);
    CHECK(strstr(bg_last_error(), "smallest choice, 2440023 bytes") != NULL);
}

static void test_gate(void) {
    const double cost[3 * 3] = {0.30, 0.10, 0.00,   // layer 0: ternary, int4, int8
                                0.90, 0.40, 0.01,   // layer 1: the most sensitive
                                0.05, 0.02, 0.00};
    int choice[3] = {0, 0, 0};
    CHECK(bg_gate_raise(3, 3, cost, choice, 1) == 1);
    CHECK(choice[0] == 0 && choice[1] == 1 && choice[2] == 0);
    CHECK(bg_gate_raise(3, 3, cost, choice, 1) == 1);   // layer 1 at int4 (0.40) still the worst
    CHECK(choice[1] == 2);
    CHECK(bg_gate_raise(3, 3, cost, choice, 2) == 2);   // layer 0 (0.30), then layer 0 again (0.10 > 0.05)
    CHECK(choice[0] == 2 && choice[2] == 0);
    CHECK(bg_gate_raise(3, 3, cost, choice, 10) == 2);   // layer 2's two steps are all that is left
    CHECK(choice[0] == 2 && choice[1] == 2 && choice[2] == 2);
    CHECK(bg_gate_raise(3, 3, cost, choice, 1) == 0);   // all at the top: the gate stops
}

int main(void) {
    test_cache_and_calibration();
    test_sensitivity();
    test_export_bytes();
    test_budget_solver();
    test_gate();
    return bg_test_finish();
}
