/* fuzz_infer.c — libFuzzer target for the inference runtime's loader: the
 * input bytes are an export file, loaded with bg_infer_load; when that
 * succeeds, the model runs on a few examples (zeros and a ramp). Any input
 * must give BG_OK or an error, never a crash, a leak or undefined
 * behaviour.
 *
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DBG_FUZZ=ON
 *   cmake --build build-fuzz --target fuzz_infer
 *   build-fuzz/fuzz_infer -max_total_time=60 tests/fuzz/corpus_infer
 *
 * BG_FUZZ_WRITE_SEEDS=DIR build-fuzz/fuzz_infer writes the seed corpus
 * (exports of small models covering every weight format and layer kind, as
 * tests/fuzz/corpus_infer/ holds) and exits. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/fuzz/fuzz_util.h"
#include "infer/infer.h"
#include "io/export.h"
#include "kernels/kernels.h"
#include "qat/qat.h"

static char path[64];
static bool verbose;   /* BG_FUZZ_VERBOSE set: print each load's status */

/* Exports small models into dir: an MLP of quantized layers (t2, i4 per
 * group, u4, i8, u8, per-token and static inputs), a CNN, and an MLP of the
 * remaining kinds and fields (norms with and without gains, the other
 * activations, per-channel and per-token inputs on QLinear, small i8 groups,
 * identity). mlp.bgx and cnn.bgx in tests/fuzz/corpus_infer/ were written
 * before the loader checked every field (test_modules loads them as old
 * exports); kinds.bgx after. */
static int write_seeds(const char *dir) {
    bg_rng rng;
    bg_rng_seed(&rng, 1);
    bg_quant_spec t, g4, u4, i8, u8, a8, aa;
    bg_quant_spec_parse("ternary", &t);
    bg_quant_spec_parse("int4:per_group=64:lsq", &g4);
    bg_quant_spec_parse("int4:affine:per_channel", &u4);
    bg_quant_spec_parse("int8:per_channel", &i8);
    bg_quant_spec_parse("int8:affine", &u8);
    bg_quant_spec_parse("int8", &a8);
    bg_quant_spec_parse("int8:affine", &aa);
    bg_module *mlp = bg_sequential_new(9, (bg_module *[]){
        bg_qlinear_new(128, 16, true, &g4, &a8, &rng), bg_relu_new(), bg_qlinear_new(16, 16, true, &u4, &aa, &rng),
        bg_layernorm_new(16, 1e-5f, true), bg_qlinear_new(16, 12, false, &i8, &a8, &rng), bg_gelu_new(false),
        bg_qlinear_new(12, 8, true, &u8, NULL, &rng), bg_bitlinear_new(8, 4, &rng), bg_qlinear_new(4, 3, true, &t, &a8, &rng)});
    bg_conv2d_opts o = BG_CONV2D_DEFAULTS;
    o.padding[0] = o.padding[1] = 1;
    bg_module *cnn = bg_sequential_new(6, (bg_module *[]){
        bg_qconv2d_new(1, 2, 3, 3, &o, true, &i8, &a8, &rng), bg_relu_new(), bg_max_pool2d_new(2, 0, 0),
        bg_avg_pool2d_new(2, 0, 0), bg_flatten_new(), bg_linear_new(2 * 2 * 2, 3, true, &rng)});
    bg_quant_spec c4, ac, g8, at;
    bg_quant_spec_parse("int4:per_channel", &c4);
    bg_quant_spec_parse("int8:per_channel=-1", &ac);
    bg_quant_spec_parse("int8:per_group=5", &g8);
    bg_quant_spec_parse("int8:per_token:absmax", &at);
    bg_module *kinds = bg_sequential_new(14, (bg_module *[]){
        bg_linear_new(16, 12, true, &rng), bg_layernorm_new(12, 1e-5f, false), bg_leaky_relu_new(0.1f),
        bg_qlinear_new(12, 10, true, &c4, &ac, &rng), bg_rmsnorm_new(10, 1e-6f), bg_gelu_new(true),
        bg_dropout_new(0.5f, 1), bg_qlinear_new(10, 8, false, &g8, &at, &rng), bg_silu_new(),
        bg_linear_new(8, 4, true, &rng), bg_tanh_new(), bg_linear_new(4, 3, false, &rng), bg_sigmoid_new(),
        bg_gelu_new(false)});
    if (!mlp || !cnn || !kinds) {
        fprintf(stderr, "%s\n", bg_last_error());
        return 1;
    }
    bg_ctx *ctx = bg_ctx_new(0);
    bg_set_grad_enabled(ctx, false);
    bg_tensor *x = bg_full(ctx, BG_SHAPE(4, 128), 0.25f), *xc = bg_full(ctx, BG_SHAPE(4, 1, 8, 8), 0.5f);
    bg_tensor *xk = bg_full(ctx, BG_SHAPE(4, 16), 0.3f);
    if (!bg_module_forward(ctx, mlp, x) || !bg_module_forward(ctx, cnn, xc) || !bg_module_forward(ctx, kinds, xk)) {
        fprintf(stderr, "%s\n", bg_ctx_error(ctx));
        return 1;
    }
    bg_ctx_free(ctx);
    bg_model_set_quant_mode(mlp, BG_QUANT_MODE_EVAL);
    bg_model_set_quant_mode(cnn, BG_QUANT_MODE_EVAL);
    bg_model_set_quant_mode(kinds, BG_QUANT_MODE_EVAL);
    bg_module_train(kinds, false);
    char p[512];
    snprintf(p, sizeof p, "%s/mlp.bgx", dir);
    bg_status s = bg_export(mlp, p, NULL);
    snprintf(p, sizeof p, "%s/cnn.bgx", dir);
    if (s == BG_OK) s = bg_export(cnn, p, &(bg_export_opts){.input_ndim = 3, .input_shape = {1, 8, 8}});
    snprintf(p, sizeof p, "%s/kinds.bgx", dir);
    if (s == BG_OK) s = bg_export(kinds, p, NULL);
    if (s != BG_OK) fprintf(stderr, "%s\n", bg_last_error());
    bg_module_free(mlp);
    bg_module_free(cnn);
    bg_module_free(kinds);
    return s == BG_OK ? 0 : 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    verbose = fuzz_init("infer", "bgx", write_seeds, path, sizeof path);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!fuzz_write(path, data, size)) return 0;
    bg_infer_model *m = NULL;
    bg_status s = bg_infer_load_opts(path, &(bg_infer_opts){.max_batch = 2}, &m);
    if (verbose) fprintf(stderr, "load: %d %s\n", (int)s, s == BG_OK ? "" : bg_last_error());
    if (s == BG_OK) {
        // loads only accept chains whose shapes fit: a run must be safe
        int64_t F = bg_infer_input_features(m), C = bg_infer_output_size(m);
        if (F <= (1 << 16) && C <= (1 << 16)) {
            float *x = calloc((size_t)(3 * F), sizeof(float)), *y = malloc(sizeof(float) * (size_t)(3 * C));
            for (int64_t i = 0; x && i < F; i++) x[2 * F + i] = (float)i / (float)F - 0.5f;
            if (x && y) bg_infer_run(m, x, 3, y);
            free(x);
            free(y);
        }
        bg_infer_free(m);
    }
    unlink(path);
    return 0;
}
