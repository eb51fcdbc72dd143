/* bitgrad finetune — quantization-aware fine-tuning of a checkpoint: load
 * the model, make it quantization-aware (BitLinear hidden layers, or
 * --wspec/--aspec on every Linear/Conv2d), train it on Fashion-MNIST with a
 * progressive schedule and optional distillation from a teacher checkpoint,
 * save the result and a training log. --data x.npy --labels y.npy trains on
 * the user's own arrays instead (io/dataset.h, bg_dataset_from_npy). */
#include <string.h>

#include "tools/commands.h"
#include "tools/tools.h"

#define MAX_LINEARS 64

typedef struct finetune_opts {
    const char *ckpt, *teacher, *schedule, *wspec, *aspec, *out, *log, *data;
    const char *labels, *val_data, *val_labels; /* .npy training / validation arrays */
    int epochs, threads;
    float lr, kd_T, kd_alpha;
    uint64_t seed;
} finetune_opts;

static void finetune_usage(FILE *f) {
    fprintf(f,
            "usage: bitgrad finetune CKPT [options]\n"
            "Fine-tunes the model of checkpoint CKPT quantization-aware on Fashion-MNIST. Unless\n"
            "--wspec/--aspec are given, every Linear but the last becomes a BitLinear (ternary\n"
            "weights, int8 activations; the latent weights are kept). A checkpoint that is already\n"
            "quantized is trained as it is.\n"
            "  --schedule S     progressive schedule of the weight quantizers\n"
            "                   (default int8@0,int4@1ep,int2@2ep,ternary@3ep; 'none' for none)\n"
            "  --teacher CKPT   distil from this (fp32) checkpoint's model\n"
            "  --kd-T X         distillation temperature (default 4)\n"
            "  --kd-alpha X     weight of the distillation term (default 0.5)\n"
            "  --wspec SPEC     weight quantizer of every Linear/Conv2d instead (e.g. int4:per_group=16)\n"
            "  --aspec SPEC     activation quantizer with --wspec (e.g. int8)\n"
            "  --epochs N       epochs (default 4)\n"
            "  --lr X           Adam learning rate (default 5e-4)\n"
            "  --out FILE       the fine-tuned checkpoint (default finetuned.safetensors)\n"
            "  --log FILE       training log, JSON lines (default finetune.jsonl; draw it with bitgrad plot)\n"
            "  --threads N      threads; 0 = auto: one per core, one fewer per core\n"
            "                   other processes keep busy, N pins N (default 0)\n"
            "  --seed N         shuffle seed (default 0)\n"
            "  --data DIR       Fashion-MNIST folder (default $BG_FMNIST_DIR or %s)\n"
            "  --data X.npy --labels Y.npy\n"
            "                   train on your own arrays instead: X [N,F] or [N,C,H,W] floats or u8\n"
            "                   pixels (scaled to [0,1]), Y [N] integer labels\n"
            "  --val-data X.npy --val-labels Y.npy\n"
            "                   evaluate on these arrays (default: the training arrays)\n",
            BG_FMNIST_DEFAULT_DIR);
}

static int parse(int argc, char **argv, finetune_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long long n;
        bool ok = true;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            finetune_usage(stdout);
            return 1;
        } else if (a[0] != '-') {
            if (o->ckpt) {
                fprintf(stderr, "bitgrad finetune: one checkpoint expected, got %s and %s\n", o->ckpt, a);
                return 2;
            }
            o->ckpt = a;
        } else if (!strcmp(a, "--schedule")) {
            ok = tool_str_arg(argc, argv, &i, &o->schedule);
        } else if (!strcmp(a, "--teacher")) {
            ok = tool_str_arg(argc, argv, &i, &o->teacher);
        } else if (!strcmp(a, "--wspec")) {
            ok = tool_str_arg(argc, argv, &i, &o->wspec);
        } else if (!strcmp(a, "--aspec")) {
            ok = tool_str_arg(argc, argv, &i, &o->aspec);
        } else if (!strcmp(a, "--out")) {
            ok = tool_str_arg(argc, argv, &i, &o->out);
        } else if (!strcmp(a, "--log")) {
            ok = tool_str_arg(argc, argv, &i, &o->log);
        } else if (!strcmp(a, "--data")) {
            ok = tool_str_arg(argc, argv, &i, &o->data);
        } else if (!strcmp(a, "--labels")) {
            ok = tool_str_arg(argc, argv, &i, &o->labels);
        } else if (!strcmp(a, "--val-data")) {
            ok = tool_str_arg(argc, argv, &i, &o->val_data);
        } else if (!strcmp(a, "--val-labels")) {
            ok = tool_str_arg(argc, argv, &i, &o->val_labels);
        } else if (!strcmp(a, "--kd-T")) {
            ok = tool_float_arg(argc, argv, &i, 0.01, 100, &o->kd_T);
        } else if (!strcmp(a, "--kd-alpha")) {
            ok = tool_float_arg(argc, argv, &i, 0, 1, &o->kd_alpha);
        } else if (!strcmp(a, "--lr")) {
            ok = tool_float_arg(argc, argv, &i, 1e-8, 10, &o->lr);
        } else if (!strcmp(a, "--epochs")) {
            ok = tool_int_arg(argc, argv, &i, 1, 1000, &n);
            o->epochs = (int)n;
        } else if (!strcmp(a, "--threads")) {
            ok = tool_int_arg(argc, argv, &i, 0, 1024, &n);
            o->threads = (int)n;
        } else if (!strcmp(a, "--seed")) {
            ok = tool_int_arg(argc, argv, &i, 0, INT64_MAX, &n);
            o->seed = (uint64_t)n;
        } else {
            fprintf(stderr, "bitgrad finetune: unknown option %s (try --help)\n", a);
            return 2;
        }
        if (!ok) return 2;
    }
    if (!o->ckpt) {
        fprintf(stderr, "bitgrad finetune: which checkpoint? (usage: bitgrad finetune CKPT [options])\n");
        return 2;
    }
    if (o->aspec && !o->wspec) {
        fprintf(stderr, "bitgrad finetune: --aspec needs --wspec\n");
        return 2;
    }
    size_t dlen = o->data ? strlen(o->data) : 0;
    if (!o->labels && dlen > 4 && !strcmp(o->data + dlen - 4, ".npy")) {
        fprintf(stderr, "bitgrad finetune: --data %s needs --labels Y.npy\n", o->data);
        return 2;
    }
    if (o->labels && !o->data) {
        fprintf(stderr, "bitgrad finetune: --labels needs --data X.npy\n");
        return 2;
    }
    if (!o->val_data != !o->val_labels || (o->val_data && !o->labels)) {
        fprintf(stderr, "bitgrad finetune: --val-data and --val-labels go together, with --data and --labels\n");
        return 2;
    }
    if (!strcmp(o->schedule, "none")) o->schedule = NULL;
    // the outputs must not replace an input (nor each other)
    if (!tool_check_output("finetune", o->out, "checkpoint", o->ckpt) ||
        (o->teacher && !tool_check_output("finetune", o->out, "teacher checkpoint", o->teacher)) ||
        !tool_check_output("finetune", o->log, "checkpoint", o->ckpt) ||
        (o->teacher && !tool_check_output("finetune", o->log, "teacher checkpoint", o->teacher)) ||
        !tool_check_output("finetune", o->log, "output checkpoint", o->out))
        return 2;
    return 0;
}

/* Paths of the Linear layers of m's tree, in order. */
static int find_linears(const bg_module *m, const char *prefix, char paths[][BG_PARAM_NAME_MAX], int n) {
    for (int i = 0; i < bg_module_num_children(m); i++) {
        const bg_module *c = bg_module_child(m, i);
        char path[BG_PARAM_NAME_MAX];
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", bg_module_child_name(m, i));
        if (bg_module_type_of(c) == &bg_linear_type) {
            if (n < MAX_LINEARS) snprintf(paths[n], BG_PARAM_NAME_MAX, "%s", path);
            n++;
        } else {
            n = find_linears(c, path, paths, n);
        }
    }
    return n;
}

/* BitLinear for every Linear but the last (the classifier stays in float):
 * the usual BitNet recipe. */
static bg_status bitnet_hidden(bg_module *model) {
    char paths[MAX_LINEARS][BG_PARAM_NAME_MAX];
    int n = find_linears(model, "", paths, 0);
    if (n > MAX_LINEARS) return bg_set_error(BG_ERR_ARG, "finetune: more than %d Linear layers", MAX_LINEARS);
    if (n < 2) return bg_set_error(BG_ERR_ARG, "finetune: --bitnet needs at least two Linear layers, found %d", n);
    for (int i = 0; i < n - 1; i++)
        if (bg_quantize_layer(model, paths[i], "bitnet", NULL) != BG_OK) return BG_ERR_ARG;
    return BG_OK;
}

/* The user's .npy arrays as train and test sets (the test set is the
 * validation arrays, or the training arrays again). */
static bool npy_data_load(tool_data *d, const finetune_opts *o) {
    *d = (tool_data){0};
    const char *vx = o->val_data ? o->val_data : o->data, *vy = o->val_labels ? o->val_labels : o->labels;
    if (bg_dataset_from_npy(o->data, o->labels, &d->train) != BG_OK || bg_dataset_from_npy(vx, vy, &d->test) != BG_OK) {
        tool_data_free(d);
        return false;
    }
    if (bg_dataset_features(d->test) != bg_dataset_features(d->train)) {
        bg_set_error(BG_ERR_SHAPE, "finetune: %s has %lld features per example but %s has %lld", vx,
                     (long long)bg_dataset_features(d->test), o->data, (long long)bg_dataset_features(d->train));
        tool_data_free(d);
        return false;
    }
    if (!tool_data_batchers(d, 128, 1000, o->seed)) return false;
    printf("bitgrad finetune: %lld training examples of %lld features, %lld classes, from %s; evaluating on %s\n",
           (long long)d->train->n, (long long)bg_dataset_features(d->train), (long long)d->train->n_classes, o->data,
           vx);
    return true;
}

static int run(const finetune_opts *o) {
    int status = 1;
    tool_data d = {0};
    bg_module *model = NULL, *teacher = NULL;
    bg_trainlog_writer *log = NULL;
    bg_set_num_threads(o->threads);
    if (bg_checkpoint_load_model(o->ckpt, &model) != BG_OK) goto fail;
    d.nchw = tool_model_takes_images(model);   // a CNN gets [B,1,28,28] images
    if (bg_qlayer_count(model) == 0) {
        bg_status s = o->wspec ? bg_quantize_model(model, o->wspec, o->aspec) : bitnet_hidden(model);
        if (s != BG_OK) goto fail;
    }
    if (o->teacher) {
        if (bg_checkpoint_load_model(o->teacher, &teacher) != BG_OK) goto fail;
        bg_module_freeze(teacher, true);
        bg_module_train(teacher, false);
    }
    if (!(o->labels ? npy_data_load(&d, o) : tool_data_load(&d, o->data, 128, 1000, o->seed)) ||
        (bg_dist_is_root() && bg_trainlog_open(o->log, &log) != BG_OK) || bg_dist_broadcast_model(model) != BG_OK)
        goto fail;
    printf("bitgrad finetune: %s -> %s, %d epochs, schedule %s, teacher %s, %d threads\n", o->ckpt, o->out, o->epochs,
           o->schedule ? o->schedule : "none", o->teacher ? o->teacher : "none", bg_get_num_threads());
    bg_module_print(model, stdout);
    fflush(stdout);
    tool_train_opts topts = {.label = "student", .epochs = o->epochs, .lr = o->lr, .schedule = o->schedule,
                             .teacher = teacher, .kd_T = o->kd_T, .kd_alpha = o->kd_alpha, .log = log,
                             .log_every = 20};
    tool_train_result r;
    if (!tool_train(model, &d, &topts, &r)) goto done;
    bg_model_set_quant_mode(model, BG_QUANT_MODE_EVAL);
    if (bg_dist_is_root() &&
        bg_checkpoint_save(o->out, &(bg_checkpoint){.model = model, .step = r.steps, .ranks = bg_dist_size()}) != BG_OK)
        goto fail;
    tool_print_dist_stats(r.steps);
    printf("final test accuracy %.2f%% (fake-quant eval); saved %s; log %s\n", 100 * r.accuracy, o->out, o->log);
    status = 0;
    goto done;
fail:
    fprintf(stderr, "bitgrad finetune: %s\n", bg_last_error());
done:
    if (bg_trainlog_close(log) != BG_OK && status == 0) {
        fprintf(stderr, "bitgrad finetune: %s\n", bg_last_error());
        status = 1;
    }
    bg_module_free(teacher);
    bg_module_free(model);
    tool_data_free(&d);
    return status;
}

int bg_cmd_finetune(int argc, char **argv) {
    finetune_opts o = {.schedule = "int8@0,int4@1ep,int2@2ep,ternary@3ep", .out = "finetuned.safetensors",
                       .log = "finetune.jsonl", .epochs = 4, .lr = 5e-4f, .kd_T = 4.0f, .kd_alpha = 0.5f};
    int r = parse(argc, argv, &o);
    if (r) return r == 1 ? 0 : 2;
    return run(&o);
}
