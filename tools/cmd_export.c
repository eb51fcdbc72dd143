/* bitgrad export CKPT OUT [--format bitgrad|onnx|gguf] [--type T] [--input-shape F | C,H,W]:
 * loads a checkpoint (io/checkpoint.c) and writes the model for inference —
 * the packed export the integer runtime reads (io/export.c, the default),
 * ONNX (io/onnx.c) or, for a language model, GGUF for llama.cpp
 * (io/gguf_export.c) — and prints the f32 parameter bytes, the export's size
 * and their ratio. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/commands.h"
#include "tools/tools.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: bitgrad export CKPT OUT [--format bitgrad|onnx|gguf] [--type T] [--input-shape F | C,H,W]\n"
            "  CKPT            a checkpoint written by bitgrad (bg_checkpoint_save)\n"
            "  OUT             the file to write (atomically); not CKPT itself, and not an\n"
            "                  existing device, FIFO or folder\n"
            "  --format        bitgrad: packed low-bit weights for `bitgrad infer` (default)\n"
            "                  onnx: opset 13 with int8 QDQ, for other runtimes\n"
            "                  gguf: a language model (`bitgrad lm`) for llama.cpp's bitnet graph\n"
            "  --type          gguf only, the projections' ggml type: tq2_0 (2.06 bits per\n"
            "                  weight) or tq1_0 (1.69) for a BitNet model, whose d_model and\n"
            "                  d_ff must then be multiples of 256; f16 or f32 for any model.\n"
            "                  Default: tq2_0 for a BitNet model, f32 for a float one\n"
            "  --input-shape   one example's shape; default: the first Linear's features, or\n"
            "                  1,28,28 (Fashion-MNIST) when the model starts with a convolution\n");
}

/* The first non-Sequential module of the tree. */
static const bg_module *first_leaf(const bg_module *m) {
    while (m && bg_module_type_of(m) == &bg_sequential_type && bg_module_num_children(m) > 0) m = bg_module_child(m, 0);
    return m;
}

/* --type: the GGUF type of the projections; false for anything else. */
static bool parse_gguf_type(const char *s, bg_gguf_type *t) {
    static const struct { const char *name; bg_gguf_type type; } types[] = {
        {"tq2_0", BG_GGUF_TYPE_TQ2_0}, {"tq1_0", BG_GGUF_TYPE_TQ1_0},
        {"f16", BG_GGUF_TYPE_F16}, {"f32", BG_GGUF_TYPE_F32}};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (!strcmp(s, types[i].name)) {
            *t = types[i].type;
            return true;
        }
    return false;
}

/* True when the language model's first projection is a BitLinear (a BitNet
 * model, bg_bitnet_model), false for a float one. */
static bool lm_is_bitnet(const bg_module *lm) {
    const bg_module *blk = bg_module_find_child(lm, "blk");
    const bg_module *b0 = blk && bg_module_num_children(blk) > 0 ? bg_module_child(blk, 0) : NULL;
    const bg_module *q = b0 ? bg_module_find_child(b0, "attn_q") : NULL;
    return q && bg_module_type_of(q) == &bg_bitlinear_type;
}

static bool parse_shape(const char *s, bg_export_opts *o) {
    o->input_ndim = 0;
    const char *p = s;
    while (*p && o->input_ndim < 3) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v <= 0) return false;
        o->input_shape[o->input_ndim++] = v;
        if (*end == ',') end++;
        else if (*end) return false;
        p = end;
    }
    return *p == '\0' && (o->input_ndim == 1 || o->input_ndim == 3);
}

int bg_cmd_export(int argc, char **argv) {
    const char *ckpt = NULL, *out = NULL, *format = "bitgrad", *type = NULL;
    bg_export_opts eo = {0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--format")) {
            if (!tool_str_arg(argc, argv, &i, &format)) return 2;
        } else if (!strcmp(argv[i], "--type")) {
            if (!tool_str_arg(argc, argv, &i, &type)) return 2;
        } else if (!strcmp(argv[i], "--input-shape")) {
            const char *s = NULL;
            if (!tool_str_arg(argc, argv, &i, &s)) return 2;
            if (!parse_shape(s, &eo)) {
                fprintf(stderr, "--input-shape: expected F or C,H,W with positive sizes, got '%s'\n", s);
                return 2;
            }
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "bitgrad export: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (!ckpt) {
            ckpt = argv[i];
        } else if (!out) {
            out = argv[i];
        } else {
            fprintf(stderr, "bitgrad export: unexpected argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!ckpt || !out) {
        usage(stderr);
        return 2;
    }
    if (strcmp(format, "bitgrad") && strcmp(format, "onnx") && strcmp(format, "gguf")) {
        fprintf(stderr, "--format: expected bitgrad, onnx or gguf, got '%s'\n", format);
        return 2;
    }
    bg_gguf_type gtype = BG_GGUF_TYPE_TQ2_0;
    if (type && strcmp(format, "gguf")) {
        fprintf(stderr, "--type: only for --format gguf\n");
        return 2;
    }
    if (type && !parse_gguf_type(type, &gtype)) {
        fprintf(stderr, "--type: expected tq2_0, tq1_0, f16 or f32, got '%s'\n", type);
        return 2;
    }
    // Writing onto the checkpoint would replace it; a device node as OUT is
    // refused by the library's writer (format/atomic.c).
    if (!tool_check_output("export", out, "checkpoint", ckpt)) return 2;
    bg_module *model = NULL;
    if (bg_checkpoint_load_model(ckpt, &model) != BG_OK) {
        fprintf(stderr, "bitgrad export: %s\n", bg_last_error());
        return 1;
    }
    if (!eo.input_ndim) {
        const bg_module *f = first_leaf(model);
        if (f && (bg_module_type_of(f) == &bg_conv2d_type || bg_module_type_of(f) == &bg_qconv2d_type)) {
            eo.input_ndim = 3;
            eo.input_shape[0] = 1, eo.input_shape[1] = 28, eo.input_shape[2] = 28;
        }
    }
    bg_status s;
    if (!strcmp(format, "gguf")) {
        // --- GGUF for llama.cpp (io/gguf_export.c) ------------------------------
        if (!type) gtype = lm_is_bitnet(model) ? BG_GGUF_TYPE_TQ2_0 : BG_GGUF_TYPE_F32;
        s = bg_export_gguf(model, out, gtype);
        format = gtype == BG_GGUF_TYPE_TQ2_0 ? "gguf TQ2_0" : gtype == BG_GGUF_TYPE_TQ1_0 ? "gguf TQ1_0"
                 : gtype == BG_GGUF_TYPE_F16 ? "gguf F16" : "gguf F32";
    } else if (!strcmp(format, "onnx")) {
        // --- ONNX (io/onnx.c): dims of one batch, dim 0 symbolic ---------------
        int64_t shape[4] = {1, 0, 0, 0};
        int ndim = 2;
        if (eo.input_ndim) {
            for (int i = 0; i < eo.input_ndim; i++) shape[1 + i] = eo.input_shape[i];
            ndim = 1 + eo.input_ndim;
        } else {
            const bg_module *f = first_leaf(model);
            const bg_tensor *w = bg_module_is_qlayer(f) ? bg_qlayer_weight(f) : bg_module_find_param(f, "weight");
            shape[1] = w && w->ndim == 2 ? w->shape[1] : 784;
        }
        s = bg_export_onnx(model, out, ndim, shape);
    } else {
        // --- the packed export for the integer runtime (io/export.c) ----------
        s = bg_export(model, out, eo.input_ndim ? &eo : NULL);
    }
    if (s != BG_OK) {
        fprintf(stderr, "bitgrad export: %s\n", bg_last_error());
        bg_module_free(model);
        return 1;
    }
    int64_t f32 = bg_module_numel(model) * (int64_t)sizeof(float), size = tool_file_size(out), ck = tool_file_size(ckpt);
    printf("%s: %s export, %lld bytes\n", out, format, (long long)size);
    printf("f32 parameters: %lld bytes (checkpoint file %lld bytes)\n", (long long)f32, (long long)ck);
    if (size > 0) printf("ratio: export = 1/%.2f of the f32 parameter bytes\n", (double)f32 / (double)size);
    bg_module_free(model);
    return 0;
}
