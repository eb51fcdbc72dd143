/* test_export.c — bg_export: the 4-bit packing, every weight format decoded
 * from the file by the rules of doc/export-format.md and compared with the
 * fake-quantized weights the model uses, metadata, the size of the ternary
 * MLP's export against its f32 parameters, and bad inputs (a clear error, no
 * file written, a previous file untouched). */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/test_util.h"

static char dir[256];

static void test_pack4(void) {
    const int8_t c[3] = {1, -2, 3};
    uint8_t p[2];
    bg_export_pack4(p, c, 1, 3);
    CHECK(p[0] == 0xE1 && p[1] == 0x03);   // code 2j low nibble, 2j+1 high, two's complement
    int8_t codes[5 * 7], back[5 * 7];
    uint8_t packed[5 * 4];
    for (int s = 0; s < 2; s++)
        for (int k = 6; k <= 7; k++) {
            for (int i = 0; i < 5 * k; i++) codes[i] = (int8_t)(s ? (i * 7) % 16 - 8 : (i * 5) % 16);
            bg_export_pack4(packed, codes, 5, k);
            bg_export_unpack4(back, packed, 5, k, s == 1);
            CHECK_MSG(memcmp(codes, back, (size_t)(5 * k)) == 0, "pack4 round trip, signed %d, k %d", s, k);
            if (k == 7) CHECK((packed[3] >> 4) == 0);   // a missing last code is 0
        }
}

static bg_module *child_named(const bg_module *m, const char *name) {
    for (int i = 0; i < bg_module_num_children(m); i++)
        if (!strcmp(bg_module_child_name(m, i), name)) return bg_module_child(m, i);
    return NULL;
}

/* Decodes "<layer>.weight" as the format page says: codes, (code - z[c]) *
 * scale[c] with c = (e / inner) % channels. */
static bool decode(const bg_safetensors *st, json_t *lj, const char *lname, float *w, int64_t n) {
    json_t *wj = json_object_get(lj, "weight");
    const char *fmt = json_string_value(json_object_get(wj, "format"));
    int64_t rows = json_integer_value(json_object_get(wj, "rows")), k = json_integer_value(json_object_get(wj, "k"));
    json_t *lay = json_object_get(wj, "layout");
    int64_t C = json_integer_value(json_array_get(lay, 1)), inner = json_integer_value(json_array_get(lay, 2));
    if (!fmt || rows * k != n) return false;
    char name[128];
    bg_tensor t, ts, tz;
    snprintf(name, sizeof name, "%s.weight", lname);
    if (bg_safetensors_get(st, name, &t) != BG_OK) return false;
    snprintf(name, sizeof name, "%s.weight_scale", lname);
    if (bg_safetensors_get(st, name, &ts) != BG_OK || bg_numel(&ts) != C) return false;
    const int32_t *zp = NULL;
    snprintf(name, sizeof name, "%s.weight_zero_point", lname);
    if (json_is_true(json_object_get(wj, "zero_point"))) {
        if (bg_safetensors_get(st, name, &tz) != BG_OK || tz.dtype != BG_DTYPE_I32) return false;
        zp = tz.data;
    }
    const uint8_t *b = t.data;
    for (int64_t e = 0; e < n; e++) {
        int64_t r = e / k, j = e % k;
        int code;
        if (!strcmp(fmt, "t2")) {
            int64_t kp = (k + 127) / 128 * 128;
            uint8_t byte = b[r * (kp / 4) + (j / 128) * 32 + (j % 32)];
            code = ((byte >> (2 * ((j % 128) / 32))) & 3) - 1;
        } else if (!strcmp(fmt, "i4") || !strcmp(fmt, "u4")) {
            code = (b[r * ((k + 1) / 2) + j / 2] >> (4 * (j & 1))) & 15;
            if (fmt[0] == 'i' && code >= 8) code -= 16;
        } else if (!strcmp(fmt, "i8")) {
            code = ((const int8_t *)t.data)[e];
        } else {
            code = b[e];
        }
        int64_t c = (e / inner) % C;
        w[e] = (float)(code - (zp ? zp[c] : 0)) * bg_f32(&ts)[c];
    }
    return true;
}

static void test_formats(void) {
    static const struct { const char *spec, *format, *granularity; bool zp; } cases[] = {
        {"ternary", "t2", "per_tensor", false},
        {"ternary:per_channel", "t2", "per_channel", false},
        {"binary", "t2", "per_tensor", false},
        {"int4:per_group=8", "i4", "per_group", false},
        {"int4:affine:per_channel", "u4", "per_channel", true},
        {"int3", "i4", "per_tensor", false},
        {"int8:per_channel", "i8", "per_channel", false},
        {"int8:affine", "u8", "per_tensor", true},
        {"int6:per_group=20", "i8", "per_group", false},
    };
    const int nc = (int)(sizeof cases / sizeof cases[0]);
    bg_rng rng;
    bg_rng_seed(&rng, 5);
    bg_module *layers[2 * 16];
    for (int i = 0; i < nc; i++) {   // 40 -> 40 each: per_group sizes 8 and 20 divide 40
        bg_quant_spec ws;
        CHECK(bg_quant_spec_parse(cases[i].spec, &ws) == BG_OK);
        layers[2 * i] = bg_qlinear_new(40, 40, i % 2 == 0, &ws, NULL, &rng);
        layers[2 * i + 1] = bg_relu_new();
    }
    bg_module *net = bg_sequential_new(2 * nc, layers);
    CHECK_MSG(net != NULL, "model: %s", bg_last_error());
    if (!net) return;
    // a forward in train mode: the weight observers see the weights
    bg_ctx *ctx = bg_ctx_new(0);
    bg_set_grad_enabled(ctx, false);
    bg_tensor *x = bg_full(ctx, BG_SHAPE(2, 40), 0.5f);
    CHECK(bg_module_forward(ctx, net, x) != NULL);
    bg_model_set_quant_mode(net, BG_QUANT_MODE_EVAL);
    char path[300];
    snprintf(path, sizeof path, "%s/formats.bgx", dir);
    bg_status s = bg_export(net, path, NULL);
    CHECK_MSG(s == BG_OK, "export: %s", bg_last_error());
    bg_safetensors *st = NULL;
    if (s != BG_OK || bg_safetensors_open(path, &st) != BG_OK) {
        bg_ctx_free(ctx);
        bg_module_free(net);
        return;
    }
    CHECK_STR(bg_safetensors_metadata(st, "format"), "bitgrad-export");
    CHECK_STR(bg_safetensors_metadata(st, "version"), "1");
    CHECK_STR(bg_safetensors_metadata(st, "input_shape"), "[40]");
    CHECK_STR(bg_safetensors_metadata(st, "output_size"), "40");
    json_error_t je;
    json_t *model = json_loads(bg_safetensors_metadata(st, "model") ? bg_safetensors_metadata(st, "model") : "", 0, &je);
    CHECK_MSG(model != NULL, "metadata \"model\" is JSON");
    json_decref(model);
    json_t *lj = json_loads(bg_safetensors_metadata(st, "layers"), 0, &je);
    CHECK(json_is_array(lj) && (int)json_array_size(lj) == 2 * nc);
    for (int i = 0; lj && i < nc; i++) {
        json_t *l = json_array_get(lj, (size_t)(2 * i));
        char lname[16];
        snprintf(lname, sizeof lname, "%d", 2 * i);
        json_t *wj = json_object_get(l, "weight");
        CHECK_STR(json_string_value(json_object_get(l, "kind")), "linear");
        CHECK_STR(json_string_value(json_object_get(l, "source")), "QLinear");
        CHECK_STR(json_string_value(json_object_get(wj, "format")), cases[i].format);
        CHECK_STR(json_string_value(json_object_get(wj, "granularity")), cases[i].granularity);
        CHECK_MSG(json_is_true(json_object_get(wj, "zero_point")) == cases[i].zp, "%s: zero_point flag", cases[i].spec);
        CHECK(json_is_true(json_object_get(l, "bias")) == (i % 2 == 0));
        CHECK(json_is_null(json_object_get(l, "input_quant")));
        // the stored tensor's dtype and shape
        bg_tensor t;
        char name[64];
        snprintf(name, sizeof name, "%s.weight", lname);
        int64_t rows = 40, k = 40;
        CHECK(bg_safetensors_get(st, name, &t) == BG_OK);
        int64_t want_cols = !strcmp(cases[i].format, "t2") ? bg_int_padded_k(k) / 4
                            : cases[i].format[1] == '4'     ? (k + 1) / 2
                                                            : k;
        CHECK_MSG(t.ndim == 2 && t.shape[0] == rows && t.shape[1] == want_cols, "%s: weight shape [%lld,%lld]",
                  cases[i].spec, (long long)t.shape[0], (long long)t.shape[1]);
        CHECK(t.dtype == (!strcmp(cases[i].format, "i8") ? BG_DTYPE_I8 : BG_DTYPE_U8));
        // decoded weights == the model's fake-quantized weights, bit for bit
        const bg_module *q = bg_module_child(net, 2 * i);
        bg_tensor *W = bg_qlayer_weight(q);
        bg_tensor *Wq = bg_module_forward(ctx, child_named(q, "weight_quant"), W);
        float *dec = malloc(sizeof(float) * (size_t)(rows * k));
        CHECK(Wq && decode(st, l, lname, dec, rows * k));
        if (Wq) CHECK_ARRAYS(cases[i].spec, dec, bg_f32(bg_contiguous(ctx, Wq)), rows * k, 0, 0);
        free(dec);
    }
    json_decref(lj);
    bg_safetensors_free(st);
    bg_ctx_free(ctx);
    bg_module_free(net);
    unlink(path);
}

static void test_size(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 1);
    bg_module *net = bg_sequential_new(5, (bg_module *[]){
        bg_linear_new(784, 512, true, &rng), bg_relu_new(), bg_linear_new(512, 512, true, &rng), bg_relu_new(),
        bg_linear_new(512, 10, true, &rng)});
    CHECK(net && bg_bitnet_model(net) == BG_OK);
    char path[300];
    snprintf(path, sizeof path, "%s/mlp.bgx", dir);
    CHECK_MSG(bg_export(net, path, NULL) == BG_OK, "export: %s", bg_last_error());
    struct stat sb;
    int64_t size = stat(path, &sb) == 0 ? (int64_t)sb.st_size : -1;
    int64_t f32 = bg_module_numel(net) * 4;
    printf("ternary MLP 784-512-512-10: f32 parameters %lld bytes, export %lld bytes (1/%.1f)\n", (long long)f32,
           (long long)size, size > 0 ? (double)f32 / (double)size : 0.0);
    CHECK_MSG(size > 0 && size * 12 <= f32, "export %lld bytes > 1/12 of %lld", (long long)size, (long long)f32);
    // the packed payload is exactly 2 bits per (padded) weight
    bg_safetensors *st;
    if (bg_safetensors_open(path, &st) == BG_OK) {
        bg_tensor t;
        CHECK(bg_safetensors_get(st, "0.weight", &t) == BG_OK && t.shape[0] == 512 && t.shape[1] == 896 / 4);
        CHECK(bg_safetensors_get(st, "4.weight", &t) == BG_OK && t.shape[0] == 10 && t.shape[1] == 512 / 4);
        CHECK(bg_safetensors_get(st, "0.bias", &t) != BG_OK);   // BitLinear has none
        bg_safetensors_free(st);
    }
    unlink(path);
    bg_module_free(net);
}

static int count_files(void) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

static void test_bad_inputs(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 2);
    char path[300], want[512];
    snprintf(path, sizeof path, "%s/bad.bgx", dir);
    FILE *f = fopen(path, "w");
    fputs("previous", f);
    fclose(f);

    CHECK(bg_export(NULL, path, NULL) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "export: model is NULL");

    bg_module *net = bg_sequential_new(3, (bg_module *[]){bg_linear_new(8, 4, true, &rng), bg_relu_new(),
                                                          bg_embedding_new(4, 2, &rng)});
    CHECK(bg_export(net, path, NULL) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "export: layer 2: kind \"Embedding\" has no export form (the runtime runs Linear, "
                               "Conv2d, their quantized forms, activations, Flatten, pools, norms, in Sequentials)");
    bg_module_free(net);

    // an input quantizer that never saw data
    bg_quant_spec a8;
    bg_quant_spec_parse("int8", &a8);
    net = bg_sequential_new(1, (bg_module *[]){bg_qlinear_new(8, 4, true, NULL, &a8, &rng)});
    CHECK(bg_export(net, path, NULL) == BG_ERR_STATE);
    CHECK_MSG(strstr(bg_last_error(), "export: layer 0: input quantizer \"int8") &&
                  strstr(bg_last_error(), "has not observed any data (run forwards first)"),
              "message: %s", bg_last_error());
    bg_module_free(net);

    // shapes that do not chain
    net = bg_sequential_new(2, (bg_module *[]){bg_conv2d_new(1, 2, 3, 3, NULL, true, &rng), bg_linear_new(8, 4, true, &rng)});
    CHECK(bg_export(net, path, &(bg_export_opts){.input_ndim = 3, .input_shape = {1, 5, 5}}) == BG_ERR_SHAPE);
    CHECK_STR(bg_last_error(), "export: layer 1: Linear expects [8] per example, the previous layer gives [2,3,3] (add a Flatten)");
    CHECK(bg_export(net, path, &(bg_export_opts){.input_ndim = 2}) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "export: input_ndim must be 1 ([features]) or 3 ([C,H,W]), got 2");
    bg_module_free(net);

    // an unwritable destination: the writer's error, nothing left behind
    net = bg_sequential_new(1, (bg_module *[]){bg_linear_new(8, 4, true, &rng)});
    snprintf(want, sizeof want, "%s/no/such/dir/x.bgx", dir);
    CHECK(bg_export(net, want, NULL) == BG_ERR_IO);
    bg_module_free(net);

    // nothing half-written: the previous file is intact, no temporary files
    f = fopen(path, "r");
    char buf[32] = {0};
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
    }
    const char *content = buf;
    CHECK_STR(content, "previous");
    CHECK_MSG(count_files() == 1, "%d files in %s", count_files(), dir);
    unlink(path);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/bg_test_export_%d", (int)getpid());
    mkdir(dir, 0755);
    test_pack4();
    test_formats();
    test_size();
    test_bad_inputs();
    rmdir(dir);
    return bg_test_finish();
}
