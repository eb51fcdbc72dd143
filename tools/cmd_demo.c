/* bitgrad demo — the library end to end on Fashion-MNIST: an fp32 MLP
 * teacher, a BitLinear (ternary weights, int8 activations) student started
 * from the teacher's weights and fine-tuned with a progressive schedule
 * 8 -> 4 -> 2 -> ternary and distillation, its checkpoint and export, the
 * export run by the integer runtime, a summary table and the figures. */
#include <stdlib.h>
#include <string.h>

#include "tools/commands.h"
#include "tools/tools.h"
#include "infer/infer.h"

typedef struct demo_opts {
    int teacher_epochs, epochs, threads;
    const char *out, *data;
    uint64_t seed;
} demo_opts;

static void demo_usage(FILE *f) {
    fprintf(f,
            "usage: bitgrad demo [options]\n"
            "Trains an fp32 Fashion-MNIST MLP teacher, fine-tunes a ternary BitLinear student from it\n"
            "(schedule int8 -> int4 -> int2 -> ternary, four equal phases, distillation from the\n"
            "teacher), saves both checkpoints, exports the student, runs the export with the integer\n"
            "runtime, prints a summary and draws the figures.\n"
            "  --teacher-epochs N  fp32 teacher epochs (default 3)\n"
            "  --epochs N          student epochs (default 4: one per schedule phase)\n"
            "  --out DIR           output folder (default bitgrad-demo)\n"
            "  --threads N         threads; 0 = auto: one per core, one fewer per core\n"
            "                      other processes keep busy, N pins N (default 0)\n"
            "  --seed N            seed of the weights and the shuffle (default 0)\n"
            "  --data DIR          Fashion-MNIST folder (default $BG_FMNIST_DIR or %s)\n"
            "  --help              this text\n"
            "bitgrad demo lm runs the language-model demo instead (bitgrad demo lm --help).\n",
            BG_FMNIST_DEFAULT_DIR);
}

/* 0 to run, 1 after --help, 2 on a bad command line. */
static int parse(int argc, char **argv, demo_opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long long n;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            demo_usage(stdout);
            return 1;
        } else if (!strcmp(a, "--teacher-epochs")) {
            if (!tool_int_arg(argc, argv, &i, 1, 100, &n)) return 2;
            o->teacher_epochs = (int)n;
        } else if (!strcmp(a, "--epochs")) {
            if (!tool_int_arg(argc, argv, &i, 1, 100, &n)) return 2;
            o->epochs = (int)n;
        } else if (!strcmp(a, "--threads")) {
            if (!tool_int_arg(argc, argv, &i, 0, 1024, &n)) return 2;
            o->threads = (int)n;
        } else if (!strcmp(a, "--seed")) {
            if (!tool_int_arg(argc, argv, &i, 0, INT64_MAX, &n)) return 2;
            o->seed = (uint64_t)n;
        } else if (!strcmp(a, "--out")) {
            if (!tool_str_arg(argc, argv, &i, &o->out)) return 2;
        } else if (!strcmp(a, "--data")) {
            if (!tool_str_arg(argc, argv, &i, &o->data)) return 2;
        } else {
            fprintf(stderr, "bitgrad demo: unknown option %s (try --help)\n", a);
            return 2;
        }
    }
    return 0;
}

static bg_module *build_mlp(uint64_t seed) {
    bg_rng rng;
    bg_rng_seed(&rng, seed);
    return bg_sequential_new(5, (bg_module *[]){
        bg_linear_new(784, 512, true, &rng), bg_relu_new(),
        bg_linear_new(512, 512, true, &rng), bg_relu_new(),
        bg_linear_new(512, 10, true, &rng),
    });
}

static bool fail(void) {
    fprintf(stderr, "bitgrad demo: %s\n", bg_last_error());
    return false;
}

static void path_in(char *buf, size_t len, const char *dir, const char *name) {
    snprintf(buf, len, "%s/%s", dir, name);
}

static bool demo_export(bg_module *student, const char *path) {
    return bg_export(student, path, NULL) == BG_OK;
}

static int64_t argmax(const float *v, int64_t n) {
    int64_t best = 0;
    for (int64_t k = 1; k < n; k++)
        if (v[k] > v[best]) best = k;
    return best;
}

/* What the summary table prints. */
typedef struct summary {
    double teacher_acc, teacher_ips;
    double student_acc, student_ips;      /* fake-quant eval mode */
    double runtime_acc, runtime_ips;      /* the export through the integer runtime */
    double agree;                         /* runtime and fake-quant predict the same class */
    int64_t teacher_bytes, student_bytes, export_bytes, f32_param_bytes;
    double teacher_s, student_s;
} summary;

/* Runs the export through the integer runtime over the test set: accuracy,
 * images/s, and how often it predicts the fake-quant model's class. */
static bool demo_runtime(bg_module *student, const char *export_path, tool_data *d, summary *sum) {
    const int64_t chunk = 1000, features = bg_dataset_features(d->test);
    bg_infer_model *rt = NULL;
    bg_ctx *ctx = bg_ctx_new(0);
    float *x = malloc((size_t)(chunk * features) * sizeof *x);
    float *logits = malloc((size_t)chunk * 10 * sizeof *logits);
    bool ok = false;
    if (!ctx || !x || !logits || bg_infer_load_opts(export_path, &(bg_infer_opts){.max_batch = chunk}, &rt) != BG_OK) {
        fail();
        goto done;
    }
    int64_t correct = 0, same = 0;
    double seconds = 0;
    bool grad = bg_set_grad_enabled(ctx, false);
    bg_module_train(student, false);
    for (int64_t at = 0; at < d->test->n; at += chunk) {
        int64_t n = d->test->n - at < chunk ? d->test->n - at : chunk;
        for (int64_t i = 0; i < n * features; i++) x[i] = (float)d->test->pixels[at * features + i] / 255.0f;
        double t0 = tool_now();
        if (bg_infer_run(rt, x, n, logits) != BG_OK) {
            fail();
            goto done;
        }
        seconds += tool_now() - t0;
        bg_tensor *xt = bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(n, features));
        if (xt) memcpy(bg_f32(xt), x, (size_t)(n * features) * sizeof *x);
        bg_tensor *fq = xt ? bg_module_forward(ctx, student, xt) : NULL;
        if (!fq) {
            fprintf(stderr, "bitgrad demo: %s\n", bg_ctx_error(ctx));
            goto done;
        }
        for (int64_t i = 0; i < n; i++) {
            int64_t k = argmax(logits + i * 10, 10);
            correct += k == d->test->labels[at + i];
            same += k == argmax(bg_f32(fq) + i * 10, 10);
        }
        bg_ctx_reset(ctx);
    }
    bg_set_grad_enabled(ctx, grad);
    sum->runtime_acc = (double)correct / (double)d->test->n;
    sum->agree = (double)same / (double)d->test->n;
    sum->runtime_ips = seconds > 0 ? (double)d->test->n / seconds : 0;
    ok = true;
done:
    bg_module_train(student, true);
    bg_infer_free(rt);
    bg_ctx_free(ctx);
    free(x);
    free(logits);
    return ok;
}

static bool run(const demo_opts *o) {
    bool ok = false;
    tool_data d = {0};
    bg_module *teacher = NULL, *student = NULL;
    bg_trainlog_writer *log = NULL;
    bg_trainlog *parsed = NULL;
    summary sum = {0};
    char teacher_ckpt[1024], student_ckpt[1024], export_path[1024], log_path[1024], plot_dir[1024];
    path_in(teacher_ckpt, sizeof teacher_ckpt, o->out, "teacher.safetensors");
    path_in(student_ckpt, sizeof student_ckpt, o->out, "student.safetensors");
    path_in(export_path, sizeof export_path, o->out, "student.bgx");
    path_in(log_path, sizeof log_path, o->out, "train.jsonl");
    path_in(plot_dir, sizeof plot_dir, o->out, "plots");
    char schedule[128];

    bg_set_num_threads(o->threads);
    printf("bitgrad demo: Fashion-MNIST, MLP 784-512-512-10, %d threads, output in %s/\n", bg_get_num_threads(),
           o->out);
    if (!tool_make_dir(o->out)) goto done;
    if (!tool_data_load(&d, o->data, 128, 1000, o->seed)) {
        fail();
        goto done;
    }
    // Four equal phases over the student's steps (1ep, 2ep, 3ep for 4 epochs).
    int64_t total = o->epochs * bg_batcher_batches(d.train_b);
    snprintf(schedule, sizeof schedule, "int8@0,int4@%lld,int2@%lld,ternary@%lld", (long long)(total / 4),
             (long long)(total / 2), (long long)(3 * total / 4));

    // 1. the fp32 teacher
    printf("\n[1/5] fp32 teacher: %d epochs, Adam 1e-3, batch 128\n", o->teacher_epochs);
    fflush(stdout);
    teacher = build_mlp(o->seed);
    if (!teacher) {
        fail();
        goto done;
    }
    tool_train_result tr;
    tool_train_opts topts = {.label = "teacher", .epochs = o->teacher_epochs, .lr = 1e-3f};
    if (!tool_train(teacher, &d, &topts, &tr)) goto done;
    sum.teacher_acc = tr.accuracy, sum.teacher_s = tr.seconds;
    if (bg_checkpoint_save(teacher_ckpt, &(bg_checkpoint){.model = teacher, .step = tr.steps}) != BG_OK) {
        fail();
        goto done;
    }
    sum.teacher_bytes = tool_file_size(teacher_ckpt);
    sum.f32_param_bytes = 4 * bg_module_numel(teacher);
    printf("  saved %s (%.1f KiB)\n", teacher_ckpt, (double)sum.teacher_bytes / 1024);

    // 2. the student: the teacher's checkpoint, hidden Linear layers -> BitLinear
    printf("\n[2/5] ternary student: the teacher's weights, BitLinear hidden layers (int8 activations),\n"
           "      schedule %s, distillation T=4 alpha=0.5, %d epochs, Adam 5e-4\n", schedule, o->epochs);
    fflush(stdout);
    if (bg_checkpoint_load_model(teacher_ckpt, &student) != BG_OK ||
        bg_quantize_layer(student, "0", "bitnet", NULL) != BG_OK ||
        bg_quantize_layer(student, "2", "bitnet", NULL) != BG_OK || bg_trainlog_open(log_path, &log) != BG_OK) {
        fail();
        goto done;
    }
    bg_module_freeze(teacher, true);
    bg_module_train(teacher, false);
    if (bg_trainlog_meta(log, "Fashion-MNIST MLP: ternary BitLinear student") != BG_OK ||
        bg_trainlog_ref(log, "fp32 teacher", "acc", sum.teacher_acc) != BG_OK) {
        fail();
        goto done;
    }
    tool_train_opts sopts = {.label = "student", .epochs = o->epochs, .lr = 5e-4f, .schedule = schedule,
                             .teacher = teacher, .kd_T = 4.0f, .kd_alpha = 0.5f, .log = log, .log_every = 20};
    if (!tool_train(student, &d, &sopts, &tr)) goto done;
    sum.student_s = tr.seconds;
    if (bg_trainlog_close(log) != BG_OK) {
        log = NULL;
        fail();
        goto done;
    }
    log = NULL;

    // 3. checkpoint and export
    printf("\n[3/5] checkpoint and export\n");
    bg_model_set_quant_mode(student, BG_QUANT_MODE_EVAL);
    if (bg_checkpoint_save(student_ckpt, &(bg_checkpoint){.model = student, .step = tr.steps}) != BG_OK ||
        !demo_export(student, export_path)) {
        fail();
        goto done;
    }
    sum.student_bytes = tool_file_size(student_ckpt);
    sum.export_bytes = tool_file_size(export_path);
    printf("  %s (%.1f KiB)\n  %s (%.1f KiB)\n", student_ckpt, (double)sum.student_bytes / 1024, export_path,
           (double)sum.export_bytes / 1024);

    // 4. the three models on the test set
    printf("\n[4/5] the test set (10000 images) through each model\n");
    fflush(stdout);
    bg_model_set_quant_mode(student, BG_QUANT_MODE_EVAL);
    if (!tool_eval_speed(teacher, &d, &sum.teacher_acc, &sum.teacher_ips) ||
        !tool_eval_speed(student, &d, &sum.student_acc, &sum.student_ips) ||
        !demo_runtime(student, export_path, &d, &sum))
        goto done;

    // 5. figures
    printf("\n[5/5] figures\n");
    bg_plot_files files;
    if (bg_trainlog_read(log_path, &parsed) != BG_OK || bg_plot_all(parsed, plot_dir, &files) != BG_OK) {
        fail();
        goto done;
    }
    for (int i = 0; i < files.n; i++) printf("  %s\n", files.path[i]);
    printf("  (the log they were drawn from: %s; redraw with `bitgrad plot %s`)\n", log_path, log_path);

    printf("\nsummary (Fashion-MNIST test set, %d threads)\n", bg_get_num_threads());
    printf("  %-38s %9s %11s %12s\n", "model", "accuracy", "images/s", "file");
    printf("  %-38s %8.2f%% %11.0f %9.1f KiB  (checkpoint; %.1f s training)\n", "fp32 teacher", 100 * sum.teacher_acc,
           sum.teacher_ips, (double)sum.teacher_bytes / 1024, sum.teacher_s);
    printf("  %-38s %8.2f%% %11.0f %9.1f KiB  (checkpoint; %.1f s fine-tuning)\n",
           "ternary student, fake-quant model", 100 * sum.student_acc, sum.student_ips,
           (double)sum.student_bytes / 1024, sum.student_s);
    printf("  %-38s %8.2f%% %11.0f %9.1f KiB  (export; %.2f%% same class as fake-quant)\n",
           "ternary student, integer runtime", 100 * sum.runtime_acc, sum.runtime_ips,
           (double)sum.export_bytes / 1024, 100 * sum.agree);
    printf("  f32 parameters %.1f KiB; export / f32 parameters = 1/%.1f\n", (double)sum.f32_param_bytes / 1024,
           (double)sum.f32_param_bytes / (double)sum.export_bytes);
    ok = true;
done:
    bg_trainlog_close(log);
    bg_trainlog_free(parsed);
    bg_module_free(student);
    bg_module_free(teacher);
    tool_data_free(&d);
    return ok;
}

int bg_cmd_demo(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "lm")) return tool_lm_demo(argc, argv);
    demo_opts o = {.teacher_epochs = 3, .epochs = 4, .out = "bitgrad-demo"};
    int r = parse(argc, argv, &o);
    if (r) return r == 1 ? 0 : 2;
    return run(&o) ? 0 : 1;
}
