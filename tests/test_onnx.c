/* test_onnx.c — bg_export_onnx checked by runtimes that are not ours: four
 * briefly trained Fashion-MNIST models (int8 QLinear, BitLinear hidden
 * layers, ternary per-channel weights with int8 activations, a QConv2d CNN
 * with a per-group int4 head and uint8 activations) are exported, run by
 * onnxruntime-node (tests/onnx/run_model.js) on 256 real test images and
 * compared with bitgrad's eval forward (max abs difference printed,
 * tolerance 1e-4 of the logit range); Debian's python3-onnx checker must
 * accept each file. Missing node / onnxruntime-node / python3-onnx FAIL the
 * test (run scripts/install-deps.sh), they are never skipped. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "infer/infer.h"
#include "tests/test_util.h"

enum { N_EVAL = 256, N_TRAIN = 2048, BATCH = 64, CLASSES = 10 };

static char tmpdir[64];
enum { MAX_MODELS = 16 };
static struct {
    char path[256], name[32];
    long long bytes;
} exported[MAX_MODELS];
static int n_exported;
static bool have_tools = true;

static bg_module *mlp(bg_rng *rng) {
    return bg_sequential_new(5, (bg_module *[]){
        bg_linear_new(784, 512, true, rng), bg_relu_new(),
        bg_linear_new(512, 512, true, rng), bg_relu_new(),
        bg_linear_new(512, 10, true, rng)});
}

/* conv8-maxpool-conv16-avgpool-flatten-10: 28 -> 26 -> 13 -> 11 -> 5. */
static bg_module *cnn(bg_rng *rng) {
    return bg_sequential_new(8, (bg_module *[]){
        bg_conv2d_new(1, 8, 3, 3, NULL, true, rng), bg_relu_new(), bg_max_pool2d_new(2, 0, 0),
        bg_conv2d_new(8, 16, 3, 3, NULL, true, rng), bg_relu_new(), bg_avg_pool2d_new(2, 0, 0),
        bg_flatten_new(), bg_linear_new(400, 10, true, rng)});
}

/* One epoch over the first N_TRAIN training images (observers calibrate,
 * weights move), then eval quant mode. */
static bool train_briefly(bg_module *net, const bg_dataset *train, bool nchw) {
    bg_dataset sub = *train;
    sub.n = N_TRAIN;
    bg_batcher *b = NULL;
    bg_adam_opts ao = BG_ADAM_DEFAULTS;
    ao.lr = nchw ? 5e-3f : 1e-3f;
    bg_optim *opt = bg_adam_new(net, &ao);
    bg_ctx *ctx = bg_ctx_new(0);
    double loss = 0;
    bool ok = opt && ctx &&
              bg_batcher_new(&sub, &(bg_batcher_opts){.batch_size = BATCH, .shuffle = true, .seed = 3, .nchw = nchw},
                             &b) == BG_OK &&
              bg_train_epoch(ctx, net, opt, b, NULL, &loss) == BG_OK;
    CHECK_MSG(ok, "training failed: %s", bg_last_error());
    CHECK_MSG(ok && loss < 2.0, "mean loss of the epoch %g", loss);
    bg_batcher_free(b);
    bg_ctx_free(ctx);
    bg_optim_free(opt);
    bg_module_train(net, false);
    bg_model_set_quant_mode(net, BG_QUANT_MODE_EVAL);
    return ok;
}

static int run(const char *cmd) {
    int rc = system(cmd);
    return rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

/* Checks that node, onnxruntime-node and python3-onnx are there; a missing
 * one is a failure with the way to install it. */
static void check_tools(void) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "node -e 'require(\"%s/tests/onnx/node_modules/onnxruntime-node\")' >/dev/null 2>&1",
             bg_test_source_dir());
    bool ort = run(cmd) == 0;
    bool onnx = run("/usr/bin/python3 -c 'import onnx' >/dev/null 2>&1") == 0;
    CHECK_MSG(ort, "node or onnxruntime-node is missing (%s/tests/onnx/node_modules): run scripts/install-deps.sh",
              bg_test_source_dir());
    CHECK_MSG(onnx, "Debian's python3-onnx is missing (/usr/bin/python3 -c 'import onnx'): run scripts/install-deps.sh");
    have_tools = ort && onnx;
}

/* The same images through bitgrad's integer runtime (bg_export +
 * bg_infer_run), against onnxruntime-node's logits got. */
static void compare_runtime(const char *name, bg_module *net, const bg_tensor *x, const float *got, double range) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s.bgx", tmpdir, name);
    bg_export_opts eo = {.input_ndim = x->ndim - 1};
    for (int i = 1; i < x->ndim; i++) eo.input_shape[i - 1] = x->shape[i];
    bg_infer_model *rt = NULL;
    bool ok = bg_export(net, path, &eo) == BG_OK && bg_infer_load(path, &rt) == BG_OK;
    CHECK_MSG(ok, "%s: export / load for the integer runtime failed: %s", name, bg_last_error());
    static float rt_out[N_EVAL * CLASSES];
    if (ok) {
        CHECK(bg_infer_run(rt, bg_f32(x), N_EVAL, rt_out) == BG_OK);
        double maxdiff = 0;
        for (int i = 0; i < N_EVAL * CLASSES; i++) {
            double d = fabs((double)got[i] - (double)rt_out[i]);
            maxdiff = d > maxdiff || isnan(d) ? d : maxdiff;
        }
        double tol = 1e-4 * range;
        printf("%-10s onnxruntime-node vs bitgrad integer runtime: max abs diff %.3g (tol %.3g)\n", name, maxdiff, tol);
        CHECK_MSG(maxdiff <= tol, "%s: vs the integer runtime: max abs diff %g > %g", name, maxdiff, tol);
    }
    bg_infer_free(rt);
    unlink(path);
}

/* Exports net, runs it in onnxruntime-node on x [N_EVAL, ...] and compares
 * with bitgrad's eval forward; runs the onnx checker. */
static void check_model(const char *name, bg_module *net, const bg_tensor *x, int ndim, const int64_t *shape,
                        double min_range) {
    char path[256], xin[256], out[256], cmd[2048];
    snprintf(path, sizeof path, "%s/%s.onnx", tmpdir, name);
    snprintf(xin, sizeof xin, "%s/%s.x.bin", tmpdir, name);
    snprintf(out, sizeof out, "%s/%s.out.bin", tmpdir, name);
    bg_status st = bg_export_onnx(net, path, ndim, shape);
    CHECK_MSG(st == BG_OK, "%s: export failed: %s", name, bg_last_error());
    if (st != BG_OK) return;
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && sb.st_size > 1000);

    // bitgrad's eval forward
    bg_ctx *ctx = bg_ctx_new(0);
    bg_set_grad_enabled(ctx, false);
    bg_tensor *y = bg_module_forward(ctx, net, (bg_tensor *)x);
    CHECK_MSG(y && bg_numel(y) == N_EVAL * CLASSES, "%s: forward failed: %s", name, bg_ctx_error(ctx));
    if (!y) {
        bg_ctx_free(ctx);
        return;
    }
    const float *want = bg_f32(y);

    // the Debian checker runs once over every file, at the end (run_checker)
    if (n_exported < MAX_MODELS) {
        snprintf(exported[n_exported].path, sizeof exported[n_exported].path, "%s", path);
        snprintf(exported[n_exported].name, sizeof exported[n_exported].name, "%s", name);
        exported[n_exported++].bytes = (long long)sb.st_size;
    }

    // onnxruntime-node
    FILE *f = fopen(xin, "wb");
    CHECK(f && fwrite(bg_f32(x), sizeof(float), (size_t)bg_numel(x), f) == (size_t)bg_numel(x));
    if (f) fclose(f);
    int n = snprintf(cmd, sizeof cmd, "node %s/tests/onnx/run_model.js %s %s:%lld", bg_test_source_dir(), path, xin,
                     (long long)x->shape[0]);
    for (int i = 1; i < x->ndim; i++) n += snprintf(cmd + n, sizeof cmd - (size_t)n, ",%lld", (long long)x->shape[i]);
    snprintf(cmd + n, sizeof cmd - (size_t)n, " %s >/dev/null", out);
    int rc = have_tools ? run(cmd) : -1;
    CHECK_MSG(rc == 0, "%s: onnxruntime-node failed (exit %d): %s", name, rc, cmd);
    static float got[N_EVAL * CLASSES];
    f = rc == 0 ? fopen(out, "rb") : NULL;
    bool read = f && fread(got, sizeof(float), N_EVAL * CLASSES, f) == N_EVAL * CLASSES && fgetc(f) == EOF;
    if (f) fclose(f);
    CHECK_MSG(rc != 0 || read, "%s: %s does not hold %d floats", name, out, N_EVAL * CLASSES);
    if (read) {
        float lo = INFINITY, hi = -INFINITY;
        double maxdiff = 0;
        int same_class = 0;
        for (int i = 0; i < N_EVAL * CLASSES; i++) {
            lo = want[i] < lo ? want[i] : lo;
            hi = want[i] > hi ? want[i] : hi;
            double d = fabs((double)got[i] - (double)want[i]);
            maxdiff = d > maxdiff || isnan(d) ? d : maxdiff;
        }
        for (int r = 0; r < N_EVAL; r++) {
            int ag = 0, aw = 0;
            for (int c = 1; c < CLASSES; c++) {
                if (got[r * CLASSES + c] > got[r * CLASSES + ag]) ag = c;
                if (want[r * CLASSES + c] > want[r * CLASSES + aw]) aw = c;
            }
            same_class += ag == aw;
        }
        double range = (double)hi - (double)lo, tol = 1e-4 * range;
        printf("%-10s onnxruntime-node vs bitgrad eval forward: max abs diff %.3g (logit range %.3g, tol %.3g), "
               "same class %d/%d\n",
               name, maxdiff, range, tol, same_class, N_EVAL);
        CHECK_MSG(maxdiff <= tol, "%s: max abs diff %g > %g (1e-4 of the logit range %g)", name, maxdiff, tol, range);
        CHECK_MSG(same_class == N_EVAL, "%s: %d of %d predicted classes differ", name, N_EVAL - same_class, N_EVAL);
        CHECK_MSG(range > min_range, "%s: logit range %g <= %g: the model computes nothing useful", name, range,
                  min_range);
        if (min_range >= 1.0) compare_runtime(name, net, x, got, range);   // the trained models
    }
    bg_ctx_free(ctx);
    unlink(xin);
    unlink(out);
}

/* Every other path of the exporter on small models with calibrated random
 * weights (no training): per-group int4 LSQ weights, int4 activations (the
 * QCDQ Clip), binary weights, per-channel activations, affine / unsigned
 * activations, narrow int8, per-token absmax in a QLinear, float Linear /
 * Conv2d, padded strided convs, the activations, Dropout, RMSNorm, pools. */
static void check_coverage(const bg_tensor *xf, const bg_tensor *xc) {
    bg_rng rng;
    bg_rng_seed(&rng, 11);
    // Quantized layers first, fed by exact ops (pixels, ReLU, LeakyReLU);
    // the transcendental activations (whose last bits differ between libm
    // and onnxruntime) only in the float tail, where no quantizer rounds
    // their outputs.
    bg_module *net = bg_sequential_new(20, (bg_module *[]){
        bg_linear_new(784, 64, true, &rng), bg_relu_new(),
        bg_linear_new(64, 48, true, &rng), bg_leaky_relu_new(0.1f),
        bg_linear_new(48, 48, false, &rng), bg_relu_new(),
        bg_linear_new(48, 40, true, &rng), bg_relu_new(),
        bg_linear_new(40, 32, true, &rng), bg_dropout_new(0.5f, 1),
        bg_linear_new(32, 32, true, &rng), bg_silu_new(), bg_rmsnorm_new(32, 1e-5f), bg_sigmoid_new(),
        bg_linear_new(32, 24, true, &rng), bg_tanh_new(), bg_gelu_new(false), bg_gelu_new(true),
        bg_linear_new(24, 10, true, &rng), bg_relu_new()});
    CHECK(bg_quantize_layer(net, "0", "int4:per_group=16:lsq", "int4") == BG_OK);
    CHECK(bg_quantize_layer(net, "2", "binary:per_channel", "int8:per_channel=-1") == BG_OK);
    CHECK(bg_quantize_layer(net, "4", "int8:narrow", "int8:affine") == BG_OK);
    CHECK(bg_quantize_layer(net, "6", "int8:per_channel", "int8:per_token:absmax") == BG_OK);
    CHECK(bg_quantize_layer(net, "8", "ternary", "int6:unsigned") == BG_OK);
    bg_ctx *ctx = bg_ctx_new(0);
    bg_set_grad_enabled(ctx, false);
    CHECK(bg_module_forward(ctx, net, (bg_tensor *)xf) != NULL);   // calibrate observers, init LSQ
    bg_module_train(net, false);
    bg_model_set_quant_mode(net, BG_QUANT_MODE_EVAL);
    check_model("mixed_mlp", net, xf, 2, (const int64_t[]){1, 784}, 0.05);

    // Exporting in train quant mode (observers on) moves no range: the eval
    // forward is bit-identical before and after.
    static float before[N_EVAL * CLASSES];
    bg_tensor *y0 = bg_module_forward(ctx, net, (bg_tensor *)xf);
    CHECK(y0 != NULL);
    if (y0) memcpy(before, bg_f32(y0), sizeof before);
    char path[256];
    snprintf(path, sizeof path, "%s/train_mode.onnx", tmpdir);
    bg_model_set_quant_mode(net, BG_QUANT_MODE_TRAIN);
    CHECK(bg_export_onnx(net, path, 2, (const int64_t[]){1, 784}) == BG_OK);
    bg_model_set_quant_mode(net, BG_QUANT_MODE_EVAL);
    bg_tensor *y1 = bg_module_forward(ctx, net, (bg_tensor *)xf);
    CHECK(y1 && y0 && memcmp(before, bg_f32(y1), sizeof before) == 0);
    unlink(path);
    bg_module_free(net);

    bg_conv2d_opts o = BG_CONV2D_DEFAULTS;
    o.stride[0] = o.stride[1] = 2, o.padding[0] = o.padding[1] = 1;
    bg_module *cnn = bg_sequential_new(9, (bg_module *[]){
        bg_conv2d_new(1, 6, 3, 3, &o, true, &rng), bg_relu_new(),            // 28 -> 14
        bg_conv2d_new(6, 8, 3, 3, NULL, false, &rng), bg_relu_new(),         // 14 -> 12
        bg_avg_pool2d_new(3, 2, 1),                                           // 12 -> 6
        bg_conv2d_new(8, 8, 3, 3, &o, true, &rng),                            // 6 -> 3
        bg_max_pool2d_new(2, 1, 0),                                           // 3 -> 2
        bg_flatten_new(), bg_linear_new(32, 10, true, &rng)});
    CHECK(bg_quantize_layer(cnn, "2", "int8:per_channel", "int8:per_channel=1:affine") == BG_OK);
    CHECK(bg_quantize_layer(cnn, "5", "ternary:per_channel", "int8:unsigned") == BG_OK);
    CHECK(bg_module_forward(ctx, cnn, (bg_tensor *)xc) != NULL);
    bg_module_train(cnn, false);
    bg_model_set_quant_mode(cnn, BG_QUANT_MODE_EVAL);
    check_model("mixed_cnn", cnn, xc, 4, (const int64_t[]){1, 1, 28, 28}, 0.05);

    // fp32 quant mode: the quantizers are left out, as in the forward
    bg_model_set_quant_mode(cnn, BG_QUANT_MODE_FP32);
    check_model("fp32_cnn", cnn, xc, 4, (const int64_t[]){1, 1, 28, 28}, 0.05);
    bg_module_free(cnn);
    bg_ctx_free(ctx);
}

/* Debian's python3-onnx checker over every exported file (one interpreter
 * start); prints one line per file and removes it. */
static void run_checker(void) {
    char cmd[8192];
    int n = snprintf(cmd, sizeof cmd,
                     "/usr/bin/python3 -c \"import onnx,sys\n"
                     "for p in sys.argv[1:]:\n"
                     "    try:\n"
                     "        onnx.checker.check_model(onnx.load(p)); print('ok', p)\n"
                     "    except Exception as e:\n"
                     "        print('rejected', p, str(e).replace(chr(10), ' ')[:300])\n\"");
    for (int i = 0; i < n_exported; i++) n += snprintf(cmd + n, sizeof cmd - (size_t)n, " %s", exported[i].path);
    FILE *p = have_tools && n_exported ? popen(cmd, "r") : NULL;
    char line[1024];
    int ok = 0;
    while (p && fgets(line, sizeof line, p)) {
        for (int i = 0; i < n_exported; i++) {
            size_t pl = strlen(exported[i].path);
            if (strncmp(line, "ok ", 3) == 0 && strncmp(line + 3, exported[i].path, pl) == 0 && line[3 + pl] == '\n') {
                printf("%-10s onnx.checker.check_model: ok (%lld bytes)\n", exported[i].name, exported[i].bytes);
                ok++;
            }
        }
        if (strncmp(line, "rejected ", 9) == 0) CHECK_MSG(false, "onnx.checker.check_model: %s", line);
    }
    if (p) pclose(p);
    CHECK_MSG(ok == n_exported && n_exported > 0, "onnx.checker.check_model accepted %d of %d files", ok, n_exported);
    for (int i = 0; i < n_exported; i++) unlink(exported[i].path);
}

static void check_errors(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 5);
    bg_module *net = mlp(&rng);
    char path[256];
    snprintf(path, sizeof path, "%s/bad.onnx", tmpdir);
    CHECK(bg_export_onnx(net, path, 2, (const int64_t[]){1, 780}) == BG_ERR_SHAPE);
    CHECK_STR(bg_last_error(), "onnx_export: layer 0 expects 784 input features, the input has 780");
    CHECK(bg_export_onnx(NULL, path, 2, (const int64_t[]){1, 784}) == BG_ERR_ARG);
    CHECK(bg_export_onnx(net, path, 1, (const int64_t[]){784}) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "onnx_export: the input needs 2..8 dims (batch first), got 1");
    CHECK(access(path, F_OK) != 0);   // nothing written
    bg_module_free(net);

    // stochastic rounding cannot be reproduced by another runtime
    bg_rng_seed(&rng, 5);
    net = mlp(&rng);
    CHECK(bg_quantize_model(net, "int8:stochastic=1", NULL) == BG_OK);
    CHECK(bg_export_onnx(net, path, 2, (const int64_t[]){1, 784}) == BG_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(bg_last_error(), "onnx_export: layer 0 weight: stochastic rounding has no ONNX form") ==
                  bg_last_error(),
              "message: %s", bg_last_error());
    bg_module_free(net);

    // a layer with no ONNX form
    net = bg_sequential_new(1, (bg_module *[]){bg_layernorm_new(784, 1e-5f, true)});
    CHECK(bg_export_onnx(net, path, 2, (const int64_t[]){1, 784}) == BG_ERR_UNSUPPORTED);
    CHECK_STR(bg_last_error(), "onnx_export: layer 0: LayerNorm has no ONNX form here");
    bg_module_free(net);

    // a path that cannot be written
    bg_rng_seed(&rng, 5);
    net = mlp(&rng);
    CHECK(bg_export_onnx(net, "/nonexistent-dir/x.onnx", 2, (const int64_t[]){1, 784}) == BG_ERR_IO);
    bg_module_free(net);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/bg_test_onnx_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        CHECK_MSG(false, "mkdtemp failed");
        return bg_test_finish();
    }
    check_tools();
    check_errors();

    bg_dataset *train = NULL, *test = NULL;
    bool data = bg_fmnist_load(NULL, BG_FMNIST_TRAIN, &train) == BG_OK &&
                bg_fmnist_load(NULL, BG_FMNIST_TEST, &test) == BG_OK;
    CHECK_MSG(data, "Fashion-MNIST: %s", bg_last_error());
    if (data) {
        // the first 256 test images, as the batcher makes them
        bg_ctx *xctx = bg_ctx_new(0);
        bg_batcher *bf = NULL, *bc = NULL;
        bg_tensor *xf = NULL, *xc = NULL, *y = NULL;
        CHECK(bg_batcher_new(test, &(bg_batcher_opts){.batch_size = N_EVAL}, &bf) == BG_OK);
        CHECK(bg_batcher_new(test, &(bg_batcher_opts){.batch_size = N_EVAL, .nchw = true}, &bc) == BG_OK);
        CHECK(bg_batcher_next(bf, xctx, &xf, &y) && bg_batcher_next(bc, xctx, &xc, &y));
        const int64_t mlp_shape[2] = {1, 784}, cnn_shape[4] = {1, 1, 28, 28};
        bg_rng rng;

        // int8 weights per channel, int8 activations (QLinear)
        bg_rng_seed(&rng, 1);
        bg_module *net = mlp(&rng);
        CHECK(bg_quantize_model(net, "int8:per_channel", "int8") == BG_OK);
        if (train_briefly(net, train, false) && xf) check_model("mlp_int8", net, xf, 2, mlp_shape, 1.0);
        bg_module_free(net);

        // BitLinear hidden layers (RMSNorm, per-token absmax int8, ternary absmean), float head
        bg_rng_seed(&rng, 2);
        net = mlp(&rng);
        CHECK(bg_quantize_layer(net, "0", "bitnet", NULL) == BG_OK);
        CHECK(bg_quantize_layer(net, "2", "bitnet", NULL) == BG_OK);
        if (train_briefly(net, train, false) && xf) check_model("mlp_bitnet", net, xf, 2, mlp_shape, 1.0);
        bg_module_free(net);

        // ternary per-channel weights, int8 activations
        bg_rng_seed(&rng, 3);
        net = mlp(&rng);
        CHECK(bg_quantize_model(net, "ternary:per_channel", "int8") == BG_OK);
        if (train_briefly(net, train, false) && xf) check_model("mlp_tern", net, xf, 2, mlp_shape, 1.0);
        bg_module_free(net);

        // CNN: int8 per-channel QConv2d; the head int4 per group of 16 with
        // affine (uint8) activations
        bg_rng_seed(&rng, 4);
        net = cnn(&rng);
        CHECK(bg_quantize_layer(net, "0", "int8:per_channel", "int8") == BG_OK);
        CHECK(bg_quantize_layer(net, "3", "int8:per_channel", "int8") == BG_OK);
        CHECK(bg_quantize_layer(net, "7", "int4:per_group=16", "int8:affine") == BG_OK);
        if (train_briefly(net, train, true) && xc) check_model("cnn_int8", net, xc, 4, cnn_shape, 1.0);
        bg_module_free(net);

        if (xf && xc) check_coverage(xf, xc);
        bg_batcher_free(bf);
        bg_batcher_free(bc);
        bg_ctx_free(xctx);
    }
    run_checker();
    bg_dataset_free(train);
    bg_dataset_free(test);
    rmdir(tmpdir);
    return bg_test_finish();
}
