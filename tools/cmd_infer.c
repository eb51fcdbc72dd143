/* bitgrad infer EXPORT --data fashion-mnist [--batch N] [--threads N]
 * [--f32] [--dnnl] [--compare CKPT]: runs an export (io/export.c) with the
 * integer runtime (infer/) over the Fashion-MNIST test set and prints the
 * accuracy and images/s; --compare also times the checkpoint's model
 * forward (no grad) in fp32 and in fake-quant eval mode on the same images. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/commands.h"
#include "tools/tools.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: bitgrad infer EXPORT --data fashion-mnist [--data-dir DIR] [--batch N] [--threads N]\n"
            "                     [--f32] [--dnnl] [--compare CKPT]\n"
            "  --batch N      images per run call (default 256)\n"
            "  --threads N    kernel threads (default: all cores)\n"
            "  --f32          run every layer on the runtime's f32 path\n"
            "  --dnnl         int8 x int8 layers through oneDNN instead of our kernel\n"
            "  --compare CKPT also time that checkpoint's model forward (fp32 and fake-quant)\n");
}

static int argmax(const float *v, int64_t n) {
    int b = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[b]) b = (int)i;
    return b;
}

static double accuracy_of(const float *logits, const bg_dataset *ds, int64_t classes) {
    int64_t ok = 0;
    for (int64_t i = 0; i < ds->n; i++) ok += argmax(logits + i * classes, classes) == ds->labels[i];
    return (double)ok / (double)ds->n;
}

/* The model's no-grad forward over the test set in batches; images/s of the
 * best of `reps` passes. */
static bool model_pass(bg_module *model, const float *X, const bg_dataset *ds, int64_t batch, bool conv, int reps,
                       float *out, double *ips) {
    bg_ctx *ctx = bg_ctx_new(0);
    if (!ctx) return false;
    bg_set_grad_enabled(ctx, false);
    const int64_t F = bg_dataset_features(ds);
    double best = 0;
    bool ok = true;
    for (int r = 0; ok && r < reps + 1; r++) {   // the first pass warms up
        double t0 = tool_now();
        for (int64_t s = 0; ok && s < ds->n; s += batch) {
            int64_t m = ds->n - s < batch ? ds->n - s : batch;
            bg_tensor *x = conv ? bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(m, ds->channels, ds->height, ds->width), X + s * F)
                                : bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(m, F), X + s * F);
            bg_tensor *y = x ? bg_module_forward(ctx, model, x) : NULL;
            if (!(ok = y != NULL)) break;
            y = bg_contiguous(ctx, y);
            if (out) memcpy(out + s * y->shape[1], bg_f32(y), sizeof(float) * (size_t)bg_numel(y));
            bg_ctx_reset(ctx);
        }
        double t = tool_now() - t0;
        if (r > 0 && t > 0 && ds->n / t > best) best = ds->n / t;
    }
    if (!ok) fprintf(stderr, "bitgrad infer: model forward: %s\n", bg_ctx_error(ctx));
    bg_ctx_free(ctx);
    *ips = best;
    return ok;
}

int bg_cmd_infer(int argc, char **argv) {
    const char *path = NULL, *data = NULL, *dir = NULL, *compare = NULL;
    long long batch = 256, threads = 0;
    bool f32 = false, dnnl = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--data")) {
            if (!tool_str_arg(argc, argv, &i, &data)) return 2;
        } else if (!strcmp(argv[i], "--data-dir")) {
            if (!tool_str_arg(argc, argv, &i, &dir)) return 2;
        } else if (!strcmp(argv[i], "--compare")) {
            if (!tool_str_arg(argc, argv, &i, &compare)) return 2;
        } else if (!strcmp(argv[i], "--batch")) {
            if (!tool_int_arg(argc, argv, &i, 1, 1 << 20, &batch)) return 2;
        } else if (!strcmp(argv[i], "--threads")) {
            if (!tool_int_arg(argc, argv, &i, 0, 1024, &threads)) return 2;
        } else if (!strcmp(argv[i], "--f32")) {
            f32 = true;
        } else if (!strcmp(argv[i], "--dnnl")) {
            dnnl = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "bitgrad infer: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (!path) {
            path = argv[i];
        } else {
            fprintf(stderr, "bitgrad infer: unexpected argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!path || !data) {
        usage(stderr);
        return 2;
    }
    if (strcmp(data, "fashion-mnist") != 0) {
        fprintf(stderr, "--data: only fashion-mnist is supported, got '%s'\n", data);
        return 2;
    }
    bg_set_num_threads((int)threads);
    bg_dataset *test = NULL;
    bg_infer_model *rt = NULL;
    bg_module *model = NULL;
    float *X = NULL, *logits = NULL, *ref = NULL;
    int rc = 1;
    if (bg_fmnist_load(dir, BG_FMNIST_TEST, &test) != BG_OK ||
        bg_infer_load_opts(path, &(bg_infer_opts){.max_batch = batch, .force_f32 = f32, .use_dnnl = dnnl}, &rt) !=
            BG_OK) {
        fprintf(stderr, "bitgrad infer: %s\n", bg_last_error());
        goto done;
    }
    const int64_t F = bg_dataset_features(test), n = test->n, C = bg_infer_output_size(rt);
    if (bg_infer_input_features(rt) != F) {
        fprintf(stderr, "bitgrad infer: %s takes %lld features per example, Fashion-MNIST has %lld\n", path,
                (long long)bg_infer_input_features(rt), (long long)F);
        goto done;
    }
    X = malloc(sizeof(float) * (size_t)(n * F));
    logits = malloc(sizeof(float) * (size_t)(n * C));
    if (!X || !logits) {
        fprintf(stderr, "bitgrad infer: out of memory\n");
        goto done;
    }
    for (int64_t i = 0; i < n * F; i++) X[i] = (float)test->pixels[i] / 255.0f;
    printf("%s: %d layers, int kernels %s, %d threads, batch %lld\n", path, bg_infer_num_layers(rt),
           bg_int_kernels_get()->isa, bg_get_num_threads(), batch);
    bg_infer_print(rt, stdout);
    // a warm-up pass, then the best of three timed passes over the test set
    double best = 0;
    for (int r = 0; r < 4; r++) {
        double t0 = tool_now();
        if (bg_infer_run(rt, X, n, logits) != BG_OK) {
            fprintf(stderr, "bitgrad infer: %s\n", bg_last_error());
            goto done;
        }
        double t = tool_now() - t0;
        if (r > 0 && t > 0 && n / t > best) best = n / t;
    }
    printf("runtime: accuracy %.4f on %lld test images, %.0f images/s\n", accuracy_of(logits, test, C), (long long)n,
           best);
    if (compare) {
        if (bg_checkpoint_load_model(compare, &model) != BG_OK) {
            fprintf(stderr, "bitgrad infer: %s\n", bg_last_error());
            goto done;
        }
        const bg_module *f = model;
        while (f && bg_module_type_of(f) == &bg_sequential_type && bg_module_num_children(f) > 0) f = bg_module_child(f, 0);
        bool conv = f && (bg_module_type_of(f) == &bg_conv2d_type || bg_module_type_of(f) == &bg_qconv2d_type);
        ref = malloc(sizeof(float) * (size_t)(n * C));
        double ips_fq = 0, ips_f32 = 0;
        bg_module_train(model, false);
        if (!ref || !model_pass(model, X, test, batch, conv, 2, ref, &ips_fq)) goto done;
        int64_t same = 0;
        double maxdiff = 0;
        for (int64_t i = 0; i < n; i++) {
            same += argmax(ref + i * C, C) == argmax(logits + i * C, C);
            for (int64_t j = 0; j < C; j++) {
                double d = ref[i * C + j] - logits[i * C + j];
                d = d < 0 ? -d : d;
                maxdiff = d > maxdiff ? d : maxdiff;
            }
        }
        printf("model (checkpoint's quant mode): accuracy %.4f, %.0f images/s; runtime agrees on %lld/%lld, "
               "max |logit diff| %.3g\n",
               accuracy_of(ref, test, C), ips_fq, (long long)same, (long long)n, maxdiff);
        bg_model_set_quant_mode(model, BG_QUANT_MODE_FP32);
        if (!model_pass(model, X, test, batch, conv, 2, ref, &ips_f32)) goto done;
        printf("model (fp32, quantizers off): accuracy %.4f, %.0f images/s\n", accuracy_of(ref, test, C), ips_f32);
        if (ips_f32 > 0) printf("runtime / fp32 forward: %.2fx\n", best / ips_f32);
    }
    rc = 0;
done:
    free(X);
    free(logits);
    free(ref);
    bg_module_free(model);
    bg_infer_free(rt);
    bg_dataset_free(test);
    return rc;
}
