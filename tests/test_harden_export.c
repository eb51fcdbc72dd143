/* test_harden_export.c — bad numbers and inconsistent fields around the
 * export (issue 10, items 12 and 13), each with its exact message:
 * - bg_export refuses non-finite parameters (naming the parameter), float
 *   tensors beyond 1e30 and weights whose scales leave [1e-30, 1e30], and
 *   writes nothing (a previous file stays, no temporary file);
 * - bg_infer_load refuses non-finite or huge float weights / biases / norm
 *   gains, scales outside [1e-30, 1e30] (NaN, 3e38, 1e-45), unknown enum
 *   strings, a weight "shape" or "layout" that disagrees with the layer,
 *   an "out_shape" that disagrees with what the layer computes, non-boolean
 *   flags, code ranges a format cannot hold, duplicate layer names, tensors
 *   no layer reads and a bad "output_size";
 * - bg_infer_run refuses NaN / Inf inputs naming the example and feature,
 *   with the output untouched. */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/test_util.h"

static char dir[128], good[256], bad[256];

static int count_entries(void) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

static void read_text(const char *path, char *buf, size_t len) {
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(buf, 1, len - 1, f) : 0;
    buf[n] = '\0';
    if (f) fclose(f);
}

// ---------------------------------------------------------------------------
// bg_export

/* Exports net to bad (which holds "previous"): must fail with want_status
 * and exactly want (after the "export: " prefix), leaving "previous" and no
 * other file. */
static void expect_export_fails(bg_module *net, bg_status want_status, const char *want, const char *label) {
    FILE *f = fopen(bad, "wb");
    if (f) {
        fputs("previous", f);
        fclose(f);
    }
    const int entries = count_entries();
    bg_status s = bg_export(net, bad, NULL);
    CHECK_MSG(s == want_status, "%s: status %s, want %s (%s)", label, bg_status_str(s), bg_status_str(want_status),
              bg_last_error());
    CHECK_STR(bg_last_error(), want);
    char buf[64];
    read_text(bad, buf, sizeof buf);
    const char *content = buf;
    CHECK_STR(content, "previous");
    CHECK_MSG(count_entries() == entries, "%s: %d entries, want %d", label, count_entries(), entries);
    unlink(bad);
}

static void set_param(bg_module *m, const char *name, int64_t index, float v) {
    bg_tensor *t = bg_module_find_param(m, name);
    CHECK_MSG(t != NULL, "no parameter %s", name);
    if (t) bg_f32(t)[index] = v;
}

static void test_export_numbers(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 4);
    // float layers: the parameters are stored as they are
    bg_module *net = bg_sequential_new(3, (bg_module *[]){bg_linear_new(6, 4, true, &rng), bg_relu_new(),
                                                          bg_linear_new(4, 2, true, &rng)});
    set_param(net, "0.weight", 5, NAN);
    expect_export_fails(net, BG_ERR_NAN, "export: layer 0: parameter 0.weight has a NaN or Inf at index 5 (value nan)",
                        "nan weight");
    set_param(net, "0.weight", 5, 0.5f);
    set_param(net, "2.bias", 1, -INFINITY);
    expect_export_fails(net, BG_ERR_NAN, "export: layer 2: parameter 2.bias has a NaN or Inf at index 1 (value -inf)",
                        "inf bias");
    set_param(net, "2.bias", 1, 0.0f);
    set_param(net, "0.weight", 3, 3e38f);
    expect_export_fails(net, BG_ERR_ARG,
                        "export: layer 0: parameter 0.weight holds 3e+38 at index 3, beyond the exportable magnitude 1e+30",
                        "3e38 float weight");
    set_param(net, "0.weight", 3, 0.5f);
    CHECK_MSG(bg_export(net, bad, NULL) == BG_OK, "repaired: %s", bg_last_error());
    unlink(bad);
    bg_module_free(net);

    // quantized weights: NaN in the latent weights, and weights so large that
    // the scale leaves [1e-30, 1e30]
    net = bg_sequential_new(1, (bg_module *[]){bg_bitlinear_new(8, 1, &rng)});
    set_param(net, "0.weight", 2, NAN);
    expect_export_fails(net, BG_ERR_NAN, "export: layer 0: parameter 0.weight has a NaN or Inf at index 2 (value nan)",
                        "nan latent weight");
    for (int i = 0; i < 8; i++) set_param(net, "0.weight", i, i % 2 ? 3e38f : -3e38f);
    bg_model_set_quant_mode(net, BG_QUANT_MODE_EVAL);
    expect_export_fails(net, BG_ERR_ARG,
                        "export: layer 0: weight scale 0 is 3e+38, outside [1e-30, 1e+30] (the largest |weight| is 3e+38)",
                        "3e38 ternary weights");
    bg_module_free(net);

    // int8 affine min-max: one weight of 3e38 gives a finite scale of
    // 3e38 / 255, still far outside the range
    bg_quant_spec w8;
    CHECK(bg_quant_spec_parse("int8:affine", &w8) == BG_OK);
    net = bg_sequential_new(1, (bg_module *[]){bg_qlinear_new(4, 2, false, &w8, NULL, &rng)});
    set_param(net, "0.weight", 0, 3e38f);
    bg_ctx *ctx = bg_ctx_new(0);
    bg_set_grad_enabled(ctx, false);
    bg_module_forward(ctx, net, bg_full(ctx, BG_SHAPE(1, 4), 1.0f));   // the weight observer sees the weights
    bg_ctx_free(ctx);
    bg_model_set_quant_mode(net, BG_QUANT_MODE_EVAL);
    expect_export_fails(net, BG_ERR_ARG,
                        "export: layer 0: weight scale 0 is 1.17647e+36, outside [1e-30, 1e+30] (the largest |weight| is 3e+38)",
                        "3e38 int8 weight");
    bg_module_free(net);

    // all-zero weights are fine: their scales are floored, not refused
    net = bg_sequential_new(1, (bg_module *[]){bg_bitlinear_new(8, 2, &rng)});
    for (int i = 0; i < 16; i++) set_param(net, "0.weight", i, 0.0f);
    bg_model_set_quant_mode(net, BG_QUANT_MODE_EVAL);
    CHECK_MSG(bg_export(net, good, NULL) == BG_OK, "zero weights: %s", bg_last_error());
    bg_infer_model *m = NULL;
    CHECK_MSG(bg_infer_load(good, &m) == BG_OK, "zero weights: %s", bg_last_error());
    bg_infer_free(m);
    unlink(good);
    bg_module_free(net);
}

// ---------------------------------------------------------------------------
// bg_infer_load

/* The reference export: every weight format family and flag the edits
 * below touch. Layers: 0 QLinear int8 per-channel weights + affine static
 * input (zero point), 1 ReLU, 2 BitLinear (t2, per-token, norm), 3 LayerNorm,
 * 4 Linear (f32), 5 RMSNorm, 6 Linear. */
static bg_module *reference_model(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 7);
    bg_quant_spec w8, a8;
    bg_quant_spec_parse("int8:per_channel", &w8);
    bg_quant_spec_parse("int8:affine", &a8);
    bg_module *net = bg_sequential_new(7, (bg_module *[]){
        bg_qlinear_new(40, 16, true, &w8, &a8, &rng), bg_relu_new(), bg_bitlinear_new(16, 12, &rng),
        bg_layernorm_new(12, 1e-5f, true), bg_linear_new(12, 8, true, &rng), bg_rmsnorm_new(8, 1e-6f),
        bg_linear_new(8, 3, true, &rng)});
    bg_ctx *ctx = bg_ctx_new(0);
    bg_set_grad_enabled(ctx, false);
    bg_tensor *x = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(4, 40));
    for (int i = 0; i < 160; i++) bg_f32(x)[i] = (float)(i % 13) / 13.0f - 0.3f;
    CHECK(bg_module_forward(ctx, net, x) != NULL);
    bg_ctx_free(ctx);
    bg_model_set_quant_mode(net, BG_QUANT_MODE_EVAL);
    return net;
}

typedef struct edit {
    const char *tensor;       /* tensor to change (a copy), or NULL */
    int64_t index;            /* element set to value (f32) */
    float value;
    const char *drop_tensor;  /* tensor left out, or NULL */
    const char *extra_tensor; /* an added F32 [1] tensor, or NULL */
    const char *key;          /* metadata key set to text, or NULL */
    const char *text;
} edit;

/* Copies good to bad through the safetensors writer with e applied. */
static bool rewrite(const edit *e) {
    bg_safetensors *st;
    if (bg_safetensors_open(good, &st) != BG_OK) return false;
    bg_safetensors_writer *w = bg_safetensors_writer_new();
    bool ok = w != NULL;
    void *copy = NULL;
    float one = 1.0f;
    for (int i = 0; ok && i < bg_safetensors_count(st); i++) {
        bg_tensor v;
        const char *name = bg_safetensors_name(st, i);
        ok = bg_safetensors_get(st, name, &v) == BG_OK;
        if (e->drop_tensor && !strcmp(name, e->drop_tensor)) continue;
        if (ok && e->tensor && !strcmp(name, e->tensor)) {
            copy = malloc(bg_nbytes(&v));
            memcpy(copy, v.data, bg_nbytes(&v));
            ((float *)copy)[e->index] = e->value;
            v.data = copy;
        }
        ok = ok && bg_safetensors_writer_add(w, name, &v) == BG_OK;
    }
    if (ok && e->extra_tensor) {
        bg_tensor t = {0};
        t.dtype = BG_DTYPE_F32, t.ndim = 1, t.shape[0] = 1, t.stride[0] = 1, t.data = &one;
        ok = bg_safetensors_writer_add(w, e->extra_tensor, &t) == BG_OK;
    }
    const char *keys[] = {"format", "version", "input_shape", "output_size", "layers", "model"};
    for (int i = 0; ok && i < 6; i++) {
        const char *v = e->key && !strcmp(e->key, keys[i]) ? e->text : bg_safetensors_metadata(st, keys[i]);
        if (v) ok = bg_safetensors_writer_meta(w, keys[i], v) == BG_OK;
    }
    ok = ok && bg_safetensors_writer_save(w, bad) == BG_OK;
    bg_safetensors_writer_free(w);
    free(copy);
    bg_safetensors_free(st);
    return ok;
}

/* The "layers" metadata of good with layer `layer`'s field path (a key, or
 * "weight.key" / "input_quant.key") set to the JSON value `json` (NULL:
 * removed). Returned string is malloc'ed. */
static char *layers_with(int layer, const char *field, const char *json) {
    bg_safetensors *st;
    if (bg_safetensors_open(good, &st) != BG_OK) return NULL;
    json_error_t je;
    json_t *root = json_loads(bg_safetensors_metadata(st, "layers"), 0, &je);
    bg_safetensors_free(st);
    json_t *obj = json_array_get(root, (size_t)layer);
    char key[64];
    snprintf(key, sizeof key, "%s", field);
    char *dot = strchr(key, '.');
    if (dot) {
        *dot = '\0';
        obj = json_object_get(obj, key);
        memmove(key, dot + 1, strlen(dot + 1) + 1);
    }
    if (json) json_object_set_new(obj, key, json_loads(json, JSON_DECODE_ANY, &je));
    else json_object_del(obj, key);
    char *out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    return out;
}

/* Loading bad must fail with BG_ERR_FORMAT and "infer_load: <bad>: " + want. */
static void expect_load_fails(const edit *e, const char *want, const char *label) {
    CHECK_MSG(rewrite(e), "%s: rewrite: %s", label, bg_last_error());
    bg_infer_model *m = (bg_infer_model *)&m;
    bg_status s = bg_infer_load(bad, &m);
    char full[1024];
    snprintf(full, sizeof full, "infer_load: %s: %s", bad, want);
    CHECK_MSG(s == BG_ERR_FORMAT && m == NULL, "%s: status %s (%s)", label, bg_status_str(s), bg_last_error());
    CHECK_STR(bg_last_error(), full);
}

static void expect_layers_fail(int layer, const char *field, const char *json, const char *want) {
    char *text = layers_with(layer, field, json);
    CHECK(text != NULL);
    expect_load_fails(&(edit){.key = "layers", .text = text}, want, field);
    free(text);
}

static void test_load_numbers(void) {
    // scales: NaN, huge, subnormal, zero
    expect_load_fails(&(edit){.tensor = "0.weight_scale", .index = 3, .value = 3e38f},
                      "layer 0: weight scale 3 is 3e+38, outside [1e-30, 1e+30]", "huge weight scale");
    expect_load_fails(&(edit){.tensor = "0.weight_scale", .index = 0, .value = 1e-45f},
                      "layer 0: weight scale 0 is 1.4013e-45, outside [1e-30, 1e+30]", "subnormal weight scale");
    expect_load_fails(&(edit){.tensor = "2.weight_scale", .index = 0, .value = NAN},
                      "layer 2: weight scale 0 is nan, outside [1e-30, 1e+30]", "nan weight scale");
    expect_load_fails(&(edit){.tensor = "0.input_scale", .index = 0, .value = 3e38f},
                      "layer 0: input scale 0 is 3e+38, outside [1e-30, 1e+30]", "huge input scale");
    expect_load_fails(&(edit){.tensor = "0.input_scale", .index = 0, .value = 1e-45f},
                      "layer 0: input scale 0 is 1.4013e-45, outside [1e-30, 1e+30]", "subnormal input scale");
    // float tensors: NaN, Inf, beyond 1e30
    expect_load_fails(&(edit){.tensor = "4.weight", .index = 7, .value = NAN},
                      "layer 4: 4.weight has a NaN or Inf at index 7 (value nan)", "nan f32 weight");
    expect_load_fails(&(edit){.tensor = "4.weight", .index = 0, .value = 3e38f},
                      "layer 4: 4.weight holds 3e+38 at index 0, beyond the export's limit 1e+30", "huge f32 weight");
    expect_load_fails(&(edit){.tensor = "6.bias", .index = 2, .value = INFINITY},
                      "layer 6: 6.bias has a NaN or Inf at index 2 (value inf)", "inf bias");
    expect_load_fails(&(edit){.tensor = "0.bias", .index = 0, .value = -INFINITY},
                      "layer 0: 0.bias has a NaN or Inf at index 0 (value -inf)", "inf bias of an int layer");
    expect_load_fails(&(edit){.tensor = "3.weight", .index = 1, .value = NAN},
                      "layer 3: 3.weight has a NaN or Inf at index 1 (value nan)", "nan layernorm gain");
    expect_load_fails(&(edit){.tensor = "5.weight", .index = 1, .value = -1e31f},
                      "layer 5: 5.weight holds -1e+31 at index 1, beyond the export's limit 1e+30", "huge rmsnorm gain");
}

static void test_load_fields(void) {
    // unknown enum strings
    expect_layers_fail(0, "weight.granularity", "\"per_atom\"",
                       "layer 0: weight granularity \"per_atom\" is not per_tensor, per_channel, per_group or per_token");
    expect_layers_fail(0, "weight.granularity", NULL, "layer 0: weight has no \"granularity\"");
    expect_layers_fail(0, "weight.format", "\"i3\"", "layer 0: unknown weight format \"i3\"");
    expect_layers_fail(0, "input_quant.mode", "\"dynamic\"", "layer 0: unknown input_quant mode \"dynamic\"");
    expect_layers_fail(0, "input_quant.granularity", "\"per_row\"",
                       "layer 0: input_quant granularity must be per_tensor or per_channel");
    // shapes against the tensors and the layer
    expect_layers_fail(0, "weight.shape", "[2147483647,2147483647]",
                       "layer 0: weight \"shape\" is [2147483647,2147483647], the layer's weight is [16,40]");
    expect_layers_fail(4, "weight.shape", "[8,12,1]", "layer 4: weight \"shape\" is [8,12,1], the layer's weight is [8,12]");
    expect_layers_fail(0, "weight.layout", "[1,1,640]",
                       "layer 0: weight \"layout\" is [1,1,640], per_channel of [16,40] gives [1,16,40]");
    expect_layers_fail(0, "weight.axis", "1", "layer 0: weight \"layout\" is [1,16,40], per_channel of [16,40] gives [16,40,1]");
    expect_layers_fail(0, "weight.axis", "2", "layer 0: weight \"axis\" is missing or not in -2..1");
    expect_layers_fail(2, "weight.granularity", "\"per_group\"",
                       "layer 2: weight \"group_size\" is missing or does not divide the last dim 16");
    // the chain: out_shape must be what the layer computes
    expect_layers_fail(0, "out_shape", "[5]", "layer 0: \"out_shape\" is [5], the layer computes [16]");
    expect_layers_fail(1, "out_shape", "[16,1,1]", "layer 1: \"out_shape\" is [16,1,1], the layer computes [16]");
    expect_layers_fail(6, "out_shape", NULL, "layer 6: \"out_shape\" is missing, the layer computes [3]");
    // code ranges a format cannot hold
    expect_layers_fail(2, "weight.qmin", "-128", "layer 2: weight qmin/qmax [-128,1] do not fit format \"t2\" (ternary codes in [-1,1])");
    expect_layers_fail(0, "weight.qmax", "255", "layer 0: weight qmin/qmax [-128,255] do not fit format \"i8\" (signed codes in [-128,127])");
    expect_layers_fail(0, "input_quant.qmin", "-128", "layer 0: input_quant qmin/qmax [-128,255] are neither int8 nor uint8 codes");
    // flags must be booleans, and say what the file holds
    expect_layers_fail(0, "bias", "\"yes\"", "layer 0: \"bias\" must be true or false");
    expect_layers_fail(0, "weight.zero_point", "1", "layer 0: weight \"zero_point\" must be true or false");
    expect_layers_fail(0, "input_quant.zero_point", NULL, "layer 0: input_quant \"zero_point\" must be true or false");
    expect_layers_fail(3, "weight", "null", "layer 3: layernorm \"weight\" and \"bias\" must be true or false");
    expect_layers_fail(5, "bias", "true", "layer 5: rmsnorm has no bias (\"bias\" must be false)");
    expect_layers_fail(0, "input_quant", NULL, "layer 0: no \"input_quant\" (null or an object)");
    expect_layers_fail(0, "input_quant.granularity", "\"per_channel\"",
                       "layer 0: input_quant per_channel \"axis\" must be -1 (the features)");
    // a tensor the list does not account for
    expect_layers_fail(6, "bias", "false",
                       "tensor \"6.bias\" is read by no layer (no layer has its name, or its layer says it is absent)");
    expect_load_fails(&(edit){.extra_tensor = "junk"},
                      "tensor \"junk\" is read by no layer (no layer has its name, or its layer says it is absent)",
                      "extra tensor");
    expect_layers_fail(1, "name", "\"0\"", "entries 0 and 1 are both named \"0\"");
    expect_load_fails(&(edit){.key = "output_size", .text = "3abc"},
                      "metadata \"output_size\" is \"3abc\", the layers give 3", "output_size");
    expect_load_fails(&(edit){.drop_tensor = "0.input_zero_point"}, "layer 0: tensor 0.input_zero_point is missing",
                      "missing zero point");
}

// ---------------------------------------------------------------------------
// bg_infer_run

static void test_run_inputs(void) {
    bg_infer_model *m = NULL;
    CHECK_MSG(bg_infer_load_opts(good, &(bg_infer_opts){.max_batch = 2}, &m) == BG_OK, "load: %s", bg_last_error());
    if (!m) return;
    float x[5 * 40], y[5 * 3], y0[5 * 3];
    for (int i = 0; i < 5 * 40; i++) x[i] = (float)(i % 11) / 11.0f;
    CHECK(bg_infer_run(m, x, 5, y0) == BG_OK);
    static const float bads[3] = {NAN, INFINITY, -INFINITY};
    static const char *const names[3] = {"nan", "inf", "-inf"};
    for (int b = 0; b < 3; b++) {
        x[3 * 40 + 17] = bads[b];   // example 3 (in the second chunk of 2), feature 17
        for (int i = 0; i < 15; i++) y[i] = -7.0f;
        bg_status s = bg_infer_run(m, x, 5, y);
        CHECK_MSG(s == BG_ERR_NAN, "%s input: %s", names[b], bg_status_str(s));
        char want[128];
        snprintf(want, sizeof want, "infer_run: example 3 has a NaN or Inf at feature 17 (value %s)", names[b]);
        CHECK_STR(bg_last_error(), want);
        bool untouched = true;
        for (int i = 0; i < 15; i++) untouched &= y[i] == -7.0f;
        CHECK_MSG(untouched, "%s input: the output was written", names[b]);
    }
    // the first element, and the last
    x[3 * 40 + 17] = (float)((3 * 40 + 17) % 11) / 11.0f;
    x[0] = NAN;
    CHECK(bg_infer_run(m, x, 5, y) == BG_ERR_NAN);
    CHECK_STR(bg_last_error(), "infer_run: example 0 has a NaN or Inf at feature 0 (value nan)");
    x[0] = 0.0f;
    x[5 * 40 - 1] = INFINITY;
    CHECK(bg_infer_run(m, x, 5, y) == BG_ERR_NAN);
    CHECK_STR(bg_last_error(), "infer_run: example 4 has a NaN or Inf at feature 39 (value inf)");
    // rows before the bad one are not looked at when n stops before it
    CHECK(bg_infer_run(m, x, 4, y) == BG_OK);
    CHECK_ARRAYS("first 4 examples", y, y0, 4 * 3, 0, 0);
    // large finite inputs are inputs
    x[5 * 40 - 1] = 3e38f;
    CHECK(bg_infer_run(m, x, 5, y) == BG_OK);
    bg_infer_free(m);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/bg_test_harden_export_%d", (int)getpid());
    mkdir(dir, 0755);
    snprintf(good, sizeof good, "%s/good.bgx", dir);
    snprintf(bad, sizeof bad, "%s/bad.bgx", dir);
    test_export_numbers();
    bg_module *net = reference_model();
    CHECK_MSG(bg_export(net, good, NULL) == BG_OK, "reference export: %s", bg_last_error());
    bg_infer_model *m = NULL;
    CHECK_MSG(bg_infer_load(good, &m) == BG_OK, "reference load: %s", bg_last_error());
    bg_infer_free(m);
    CHECK(rewrite(&(edit){0}) && bg_infer_load(bad, &m) == BG_OK);   // the copy itself loads
    bg_infer_free(m);
    test_load_numbers();
    test_load_fields();
    test_run_inputs();
    bg_module_free(net);
    unlink(good);
    unlink(bad);
    rmdir(dir);
    return bg_test_finish();
}
