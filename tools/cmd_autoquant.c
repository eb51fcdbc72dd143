/* bitgrad ptq / bitgrad autoquant — automatic precision for the
 * Fashion-MNIST models (Sequential MLPs and CNNs from a float checkpoint)
 * and the transformer language model (on text; quality = validation loss):
 *   ptq: calibrate a post-training-quantized model at one spec (optionally
 *        with GPTQ-rounded weights), print its accuracy, save it;
 *   autoquant: measure each layer's sensitivity at ternary / int4 / int8,
 *        choose the widths that fit an export budget with the least
 *        predicted loss (exact, bg_budget_solve), start QAT from GPTQ
 *        weights, fine-tune, then the quality gate: while the accuracy drop
 *        exceeds --max-drop, the most sensitive layer moves up one width
 *        and QAT runs again from the float weights at the new widths. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tools/commands.h"
#include "tools/tools.h"

#define N_WIDTHS 3
static const char *const widths[N_WIDTHS] = {"ternary", "int4", "int8"};
static const char *const width_names[N_WIDTHS] = {"ternary", "4 bits", "8 bits"};

typedef struct aq_opts {
    const char *ckpt, *out, *export_path, *data, *wspec, *aspec, *uniform, *plots;
    long long calib, steps, rounds, budget_kib, threads;
    float max_drop, lr;
    bool gptq;
    uint64_t seed;
} aq_opts;

static void ptq_usage(FILE *f) {
    fprintf(f,
            "usage: bitgrad ptq CKPT --wspec SPEC [options]\n"
            "Post-training quantization of a float Fashion-MNIST model: every Linear/Conv2d gets the\n"
            "weight (and activation) quantizer, observers see --calib training batches, then freeze.\n"
            "Prints the float and the quantized test accuracy and saves the quantized checkpoint.\n"
            "  --wspec SPEC     weight quantizer, e.g. int4, int8:per_channel, ternary (required)\n"
            "  --aspec SPEC     activation quantizer, e.g. int8 (default: float activations)\n"
            "  --calib N        calibration batches of 128 (default 8)\n"
            "  --gptq           round the weights with GPTQ (Linear layers) instead of to nearest\n"
            "  --out FILE       the quantized checkpoint (default ptq.safetensors)\n"
            "  --data DIR       Fashion-MNIST folder (default $BG_FMNIST_DIR or %s)\n"
            "  --threads N      threads; 0 = auto (default 0)\n",
            BG_FMNIST_DEFAULT_DIR);
}

static void autoquant_usage(FILE *f) {
    fprintf(f,
            "usage: bitgrad autoquant CKPT --budget-kib N --max-drop D [options]\n"
            "Chooses a width per Linear/Conv2d (ternary, 4 or 8 bits) of a float Fashion-MNIST model\n"
            "so that its weights fit N KiB of export with the least predicted loss (each layer's\n"
            "loss increase measured alone on calibration data; exact dynamic programming), starts\n"
            "QAT from GPTQ-rounded weights, fine-tunes, and while the test accuracy is more than D\n"
            "points below the float model's, moves the most sensitive layer up one width and\n"
            "fine-tunes again. Prints each round and the final table; saves the checkpoint and\n"
            "the export. A TransformerLM checkpoint works the same way on text (--data FILE, default\n"
            "the KJV): its quality is the validation loss, and it is saved as a checkpoint only.\n"
            "  --budget-kib N   export budget of the quantized layers, KiB (required)\n"
            "  --max-drop D     largest drop allowed: accuracy points, or nats/byte of validation loss\n"
            "                   for a language model (required)\n"
            "  --steps N        QAT steps of each round, from the float weights (default 300)\n"
            "  --rounds N       most gate rounds (default 6)\n"
            "  --calib N        calibration batches of 128 (default 8)\n"
            "  --lr X           Adam learning rate of the fine-tuning (default 2e-4)\n"
            "  --no-gptq        start QAT from round-to-nearest weights\n"
            "  --uniform W      every layer at width W (ternary, int4 or int8) instead of the\n"
            "                   budget's choice: the baseline the mixed widths are compared with\n"
            "  --out FILE       checkpoint (default autoquant.safetensors)\n"
            "  --export FILE    bitgrad export of the result (default autoquant.bgx)\n"
            "  --plots DIR      sensitivity.png (bars) and rounds.png (accuracy against size per\n"
            "                   round) (default autoquant-plots)\n"
            "  --data DIR       Fashion-MNIST folder (default $BG_FMNIST_DIR or %s); a text file\n"
            "                   for a language model\n"
            "  --threads N      threads; 0 = auto (default 0)\n"
            "  --seed N         shuffle seed (default 0)\n",
            BG_FMNIST_DEFAULT_DIR);
}

/* 1 after --help, -1 on a bad command line, 0 to run. */
static int parse(int argc, char **argv, aq_opts *o, void (*usage)(FILE *)) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long long n;
        bool ok = true;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        } else if (a[0] != '-') {
            if (o->ckpt) {
                fprintf(stderr, "unexpected argument: %s (try --help)\n", a);
                return -1;
            }
            o->ckpt = a;
        } else if (!strcmp(a, "--wspec")) ok = tool_str_arg(argc, argv, &i, &o->wspec);
        else if (!strcmp(a, "--aspec")) ok = tool_str_arg(argc, argv, &i, &o->aspec);
        else if (!strcmp(a, "--uniform")) ok = tool_str_arg(argc, argv, &i, &o->uniform);
        else if (!strcmp(a, "--calib")) ok = tool_int_arg(argc, argv, &i, 1, 1000, &o->calib);
        else if (!strcmp(a, "--steps")) ok = tool_int_arg(argc, argv, &i, 0, 1000000, &o->steps);
        else if (!strcmp(a, "--rounds")) ok = tool_int_arg(argc, argv, &i, 0, 100, &o->rounds);
        else if (!strcmp(a, "--budget-kib")) ok = tool_int_arg(argc, argv, &i, 1, 1LL << 30, &o->budget_kib);
        else if (!strcmp(a, "--threads")) ok = tool_int_arg(argc, argv, &i, 0, 1024, &o->threads);
        else if (!strcmp(a, "--seed")) ok = tool_int_arg(argc, argv, &i, 0, INT64_MAX, &n), o->seed = (uint64_t)n;
        else if (!strcmp(a, "--max-drop")) ok = tool_float_arg(argc, argv, &i, 0, 100, &o->max_drop);
        else if (!strcmp(a, "--lr")) ok = tool_float_arg(argc, argv, &i, 1e-9, 10, &o->lr);
        else if (!strcmp(a, "--gptq")) o->gptq = true;
        else if (!strcmp(a, "--no-gptq")) o->gptq = false;
        else if (!strcmp(a, "--out")) ok = tool_str_arg(argc, argv, &i, &o->out);
        else if (!strcmp(a, "--export")) ok = tool_str_arg(argc, argv, &i, &o->export_path);
        else if (!strcmp(a, "--plots")) ok = tool_str_arg(argc, argv, &i, &o->plots);
        else if (!strcmp(a, "--data")) ok = tool_str_arg(argc, argv, &i, &o->data);
        else {
            fprintf(stderr, "unknown option: %s (try --help)\n", a);
            return -1;
        }
        if (!ok) return -1;
    }
    if (!o->ckpt) {
        fprintf(stderr, "missing CKPT (try --help)\n");
        return -1;
    }
    return 0;
}

/* What both commands start from: the float model, the data, its quality
 * and the calibration batches. Quality is higher-is-better: the test
 * accuracy of a Fashion-MNIST model, minus the validation loss (nats/byte)
 * of a language model. */
typedef struct aq_run {
    bg_module *model;
    bool lm;                        /* a TransformerLM on text */
    tool_data d;                    /* Fashion-MNIST */
    bg_text *text;                  /* the LM's text */
    bg_text_batcher *train_tb, *val_tb;
    bg_batch_source train;          /* the QAT batches */
    bg_ctx *ctx;
    bg_batch_cache *calib;
    double float_q;
} aq_run;

static void run_free(aq_run *r) {
    bg_batch_cache_free(r->calib);
    bg_ctx_free(r->ctx);
    bg_module_free(r->model);
    tool_data_free(&r->d);
    bg_text_batcher_free(r->train_tb);
    bg_text_batcher_free(r->val_tb);
    bg_text_free(r->text);
}

/* The model's quality now (eval mode, as its quantizers are set). */
static bool measure(aq_run *r, double *q) {
    if (!r->lm) return bg_evaluate(r->ctx, r->model, r->d.test_b, q) == BG_OK;
    bg_batch_source v = bg_text_source(r->val_tb);
    double loss;
    if (bg_evaluate_loss(r->ctx, r->model, &v, &loss) != BG_OK) return false;
    *q = -loss;
    return true;
}

/* "87.26%" or "1.2345 nats/byte". */
static const char *quality_str(const aq_run *r, double q, char *buf, size_t len) {
    if (r->lm) snprintf(buf, len, "validation %.4f nats/byte", -q);
    else snprintf(buf, len, "test accuracy %.2f%%", 100 * q);
    return buf;
}

/* How far below the float model: accuracy points, or nats/byte. */
static double drop_of(const aq_run *r, double q) { return (r->lm ? 1.0 : 100.0) * (r->float_q - q); }

/* The language model's data: the text (--data FILE, else the KJV), random
 * training windows of the model's context, 16 fixed validation batches. */
static bool lm_data(aq_run *r, const aq_opts *o) {
    bg_lm_config cfg;
    if (bg_lm_config_of(r->model, &cfg) != BG_OK) return false;
    if ((o->data ? bg_text_load(o->data, &r->text) : bg_text_load_kjv(&r->text)) != BG_OK) return false;
    bg_text_batcher_opts to = {.batch_size = 16, .context = cfg.ctx, .seed = o->seed};
    bg_text_batcher_opts vo = {.batch_size = 16, .context = cfg.ctx, .split = BG_TEXT_VAL, .fixed = true,
                               .max_windows = 256};
    if (bg_text_batcher_new(r->text, &to, &r->train_tb) != BG_OK || bg_text_batcher_new(r->text, &vo, &r->val_tb) != BG_OK)
        return false;
    r->train = bg_text_source(r->train_tb);
    return true;
}

static bool run_start(aq_run *r, const aq_opts *o, const char *cmd) {
    bg_set_num_threads((int)o->threads);
    if (bg_checkpoint_load_model(o->ckpt, &r->model) != BG_OK) return false;
    if (bg_qlayer_count(r->model) > 0) {
        bg_set_error(BG_ERR_ARG, "%s is already quantized; %s starts from a float checkpoint", o->ckpt, cmd);
        return false;
    }
    r->lm = strcmp(bg_module_kind(r->model), "TransformerLM") == 0;
    r->d.nchw = tool_model_takes_images(r->model);
    if (r->lm ? !lm_data(r, o) : !tool_data_load(&r->d, o->data, 128, 1000, o->seed)) return false;
    if (!r->lm) r->train = bg_batcher_source(r->d.train_b);
    if (!(r->ctx = bg_ctx_new(0))) return false;
    char q[64];
    if (!measure(r, &r->float_q) || bg_batch_cache_new(r->ctx, &r->train, o->calib, &r->calib) != BG_OK) return false;
    printf("bitgrad %s: %s, float %s, %lld calibration batches, %d threads\n", cmd, o->ckpt,
           quality_str(r, r->float_q, q, sizeof q), (long long)bg_batch_cache_batches(r->calib), bg_get_num_threads());
    return true;
}

// --- ptq -------------------------------------------------------------------------------

int bg_cmd_ptq(int argc, char **argv) {
    aq_opts o = {.out = "ptq.safetensors", .calib = 8};
    int p = parse(argc, argv, &o, ptq_usage);
    if (p) return p > 0 ? 0 : 2;
    if (!o.wspec) {
        fprintf(stderr, "bitgrad ptq: --wspec is required (try --help)\n");
        return 2;
    }
    if (!tool_check_output("ptq", o.out, "checkpoint", o.ckpt)) return 2;
    aq_run r = {0};
    int status = 1;
    int gptq_layers = 0;
    double acc = 0;
    bg_batch_source cs;
    if (!run_start(&r, &o, "ptq") || bg_quantize_model(r.model, o.wspec, o.aspec) != BG_OK) goto fail;
    if (o.gptq && bg_gptq_model(r.ctx, r.model, r.calib, 0.01, &gptq_layers) != BG_OK) goto fail;
    cs = bg_batch_cache_source(r.calib);
    if (bg_calibrate(r.ctx, r.model, &cs, NULL) != BG_OK || !measure(&r, &acc)) goto fail;
    char q[64];
    printf("weights %s, activations %s%s: %s (%+.4g %s below the float model)\n", o.wspec, o.aspec ? o.aspec : "float",
           o.gptq ? ", GPTQ" : ", round to nearest", quality_str(&r, acc, q, sizeof q), drop_of(&r, acc),
           r.lm ? "nats/byte" : "points");
    if (o.gptq) printf("GPTQ rounded %d layer(s)\n", gptq_layers);
    if (bg_checkpoint_save(o.out, &(bg_checkpoint){.model = r.model}) != BG_OK) goto fail;
    printf("saved %s\n", o.out);
    status = 0;
    goto done;
fail:
    fprintf(stderr, "bitgrad ptq: %s\n", bg_last_error());
done:
    run_free(&r);
    return status;
}

// --- autoquant -------------------------------------------------------------------------

typedef struct aq_layers {
    int n;
    char names[64][BG_PARAM_NAME_MAX];
    int64_t bytes[64 * N_WIDTHS];
    double delta[64 * N_WIDTHS];
    int choice[64];
} aq_layers;

/* Export bytes of every qlayer at every width. */
static bool layer_sizes(bg_module *m, aq_layers *L) {
    L->n = bg_qlayer_count(m);
    if (L->n > 64) {
        bg_set_error(BG_ERR_ARG, "autoquant: %d quantized layers, at most 64", L->n);
        return false;
    }
    bg_quant_spec s[N_WIDTHS];
    for (int j = 0; j < N_WIDTHS; j++)
        if (bg_quant_spec_parse(widths[j], &s[j]) != BG_OK) return false;
    for (int i = 0; i < L->n; i++) {
        bg_module *q = bg_qlayer_at(m, i);
        bg_qlayer_name(m, i, L->names[i], sizeof L->names[i]);
        bg_tensor *w = bg_qlayer_weight(q);
        bool bias = false;
        for (int k = 0; k < bg_module_param_count(q); k++) bias |= strstr(bg_module_param_name(q, k), "bias") != NULL;
        for (int j = 0; j < N_WIDTHS; j++)
            L->bytes[i * N_WIDTHS + j] = bg_export_layer_bytes(w->shape[0], bg_numel(w) / w->shape[0], &s[j], bias);
    }
    return true;
}

static int64_t chosen_bytes(const aq_layers *L) {
    int64_t b = 0;
    for (int i = 0; i < L->n; i++) b += L->bytes[i * N_WIDTHS + L->choice[i]];
    return b;
}

/* Sets every layer's weight spec to its chosen width (the range observed
 * again from its weights). */
static bool apply_widths(bg_module *m, const aq_layers *L) {
    for (int i = 0; i < L->n; i++) {
        bg_module *q = bg_qlayer_at(m, i);
        bg_quant_spec s;
        bg_quant_state *st = bg_qlayer_weight_state(q);
        if (bg_quant_spec_parse(widths[L->choice[i]], &s) != BG_OK || bg_quant_state_set_spec(st, &s) != BG_OK ||
            bg_quant_state_init_from(st, bg_qlayer_weight(q)) != BG_OK)
            return false;
    }
    return true;
}

/* QAT for `steps` steps over the training batches (epochs wrap), then the
 * test accuracy in eval mode. */
static bool finetune(aq_run *r, bg_optim *opt, int64_t steps, double *acc) {
    bg_model_set_quant_mode(r->model, BG_QUANT_MODE_TRAIN);
    for (int64_t done = 0; done < steps;) {
        int64_t before = bg_optim_step_count(opt);
        double loss;
        if (bg_train_steps(r->ctx, r->model, opt, &r->train, steps - done, &(bg_train_opts){.clip_grad_norm = 1.0f},
                           &loss) != BG_OK)
            return false;
        done += bg_optim_step_count(opt) - before;
    }
    bg_model_set_quant_mode(r->model, BG_QUANT_MODE_EVAL);
    return measure(r, acc);
}

/* Accuracy against export size, one point per round, for rounds.png. */
typedef struct aq_history {
    int n;
    double kib[64], acc[64];
    char names[64][24];
} aq_history;

/* One QAT run at the layers' current widths: the float weights again, the
 * widths applied, the GPTQ start (or round to nearest), a fresh Adam, then
 * `steps` steps. *start_acc: the quality before training (may be NULL);
 * *gptq_layers: the layers GPTQ rounded (may be NULL). */
static bool qat_from_float(aq_run *r, const aq_opts *o, const aq_layers *L, const float *float_params, int64_t steps,
                           double *start_acc, double *acc, int *gptq_layers) {
    int64_t n = 0;
    float *params = bg_module_flat_params(r->model, &n);
    memcpy(params, float_params, sizeof(float) * (size_t)n);
    if (!apply_widths(r->model, L) || (o->gptq && bg_gptq_model(r->ctx, r->model, r->calib, 0.01, gptq_layers) != BG_OK))
        return false;
    bg_model_set_quant_mode(r->model, BG_QUANT_MODE_EVAL);
    if (start_acc && !measure(r, start_acc)) return false;
    bg_adam_opts ao = BG_ADAM_DEFAULTS;
    ao.lr = o->lr;
    bg_optim *opt = bg_adam_new(r->model, &ao);
    bool ok = opt && finetune(r, opt, steps, acc);
    bg_optim_free(opt);
    return ok;
}

static void print_round(int round, const char *what, const aq_layers *L, const aq_run *r, double acc, aq_history *h) {
    if (h->n < 64) {
        h->kib[h->n] = (double)chosen_bytes(L) / 1024, h->acc[h->n] = r->lm ? -acc : 100 * acc;
        snprintf(h->names[h->n], sizeof h->names[h->n], "round %d", round);
        h->n++;
    }
    char q[64];
    printf("round %d (%s): %.1f KiB, %s, drop %.4g; widths", round, what, (double)chosen_bytes(L) / 1024,
           quality_str(r, acc, q, sizeof q), drop_of(r, acc));
    for (int i = 0; i < L->n; i++) printf(" %s", widths[L->choice[i]]);
    printf("\n");
    fflush(stdout);
}

/* sensitivity.png and rounds.png in dir. */
static bool write_plots(const char *dir, const aq_layers *L, const aq_history *h, const aq_run *r) {
    char a[1024], b[1024], title[128];
    const char *groups[64], *labels[64];
    if (!tool_make_dir(dir)) return false;
    snprintf(a, sizeof a, "%s/sensitivity.png", dir);
    snprintf(b, sizeof b, "%s/rounds.png", dir);
    for (int i = 0; i < L->n; i++) groups[i] = L->names[i];
    for (int i = 0; i < h->n; i++) labels[i] = h->names[i];
    char q[64];
    snprintf(title, sizeof title, "%s against export size per round (float model: %s)",
             r->lm ? "validation loss" : "test accuracy", quality_str(r, r->float_q, q, sizeof q));
    if (bg_plot_bars(a, "loss increase with only that layer quantized, per width", "calibration loss increase", L->n,
                     groups, N_WIDTHS, widths, L->delta) != BG_OK ||
        bg_plot_points(b, title, "quantized layers, KiB", r->lm ? "nats per byte" : "test accuracy (%)", h->n, h->kib,
                       h->acc, labels) != BG_OK)
        return false;
    printf("plots: %s, %s\n", a, b);
    return true;
}

int bg_cmd_autoquant(int argc, char **argv) {
    aq_opts o = {.out = "autoquant.safetensors", .export_path = "autoquant.bgx", .plots = "autoquant-plots", .calib = 8,
                 .steps = 300, .rounds = 6,
                 .lr = 2e-4f, .gptq = true, .max_drop = -1};
    int p = parse(argc, argv, &o, autoquant_usage);
    if (p) return p > 0 ? 0 : 2;
    if ((!o.budget_kib && !o.uniform) || o.max_drop < 0) {
        fprintf(stderr, "bitgrad autoquant: --budget-kib (or --uniform) and --max-drop are required (try --help)\n");
        return 2;
    }
    if (!tool_check_output("autoquant", o.out, "checkpoint", o.ckpt)) return 2;
    aq_run r = {0};
    aq_layers L = {0};
    aq_history hist = {0};
    float *float_params = NULL;
    int status = 1;
    double base = 0, predicted = 0, acc = 0;
    int64_t used = 0;
    if (!run_start(&r, &o, "autoquant") || bg_quantize_model(r.model, "int8", NULL) != BG_OK) goto fail;
    // Sensitivities, measured on the calibration batches.
    bg_batch_source cs = bg_batch_cache_source(r.calib);
    if (bg_calibrate(r.ctx, r.model, &cs, NULL) != BG_OK || !layer_sizes(r.model, &L) ||
        bg_weight_sensitivity(r.ctx, r.model, r.calib, widths, N_WIDTHS, &base, L.delta) != BG_OK)
        goto fail;
    printf("\nsensitivity: calibration loss increase with only that layer quantized (float loss %.4f)\n", base);
    printf("  %-10s %10s %10s %10s   %s\n", "layer", widths[0], widths[1], widths[2], "KiB at each width");
    for (int i = 0; i < L.n; i++)
        printf("  %-10s %+10.5f %+10.5f %+10.5f   %.1f / %.1f / %.1f\n", L.names[i], L.delta[i * 3], L.delta[i * 3 + 1],
               L.delta[i * 3 + 2], (double)L.bytes[i * 3] / 1024, (double)L.bytes[i * 3 + 1] / 1024,
               (double)L.bytes[i * 3 + 2] / 1024);
    // The widths under the budget, then QAT from the GPTQ start.
    if (o.uniform) {
        int w = -1;
        for (int j = 0; j < N_WIDTHS; j++) w = strcmp(o.uniform, widths[j]) ? w : j;
        if (w < 0) {
            bg_set_error(BG_ERR_ARG, "--uniform: expected ternary, int4 or int8, got \"%s\"", o.uniform);
            goto fail;
        }
        for (int i = 0; i < L.n; i++) L.choice[i] = w, predicted += L.delta[i * N_WIDTHS + w];
        used = chosen_bytes(&L);
    } else if (bg_budget_solve(L.n, N_WIDTHS, L.bytes, L.delta, o.budget_kib * 1024, L.choice, &predicted, &used) !=
               BG_OK) {
        goto fail;
    }
    if (o.uniform)
        printf("\nuniform %s: %.1f KiB, predicted loss increase %+.5f\n", o.uniform, (double)used / 1024, predicted);
    else
        printf("\nchosen under %lld KiB: %.1f KiB, predicted loss increase %+.5f\n", o.budget_kib, (double)used / 1024,
               predicted);
    int64_t np;
    const float *fp = bg_module_flat_params(r.model, &np);
    if (!(float_params = malloc(sizeof(float) * (size_t)np))) {
        bg_set_error(BG_ERR_NOMEM, "autoquant: out of memory");
        goto fail;
    }
    memcpy(float_params, fp, sizeof(float) * (size_t)np);
    double start_acc;
    int gptq_layers = 0;
    if (!qat_from_float(&r, &o, &L, float_params, o.steps, &start_acc, &acc, &gptq_layers)) goto fail;
    char start[96];
    snprintf(start, sizeof start, "%s, no training",
             gptq_layers ? "GPTQ start" : o.gptq ? "round to nearest (GPTQ covers Linear layers of a Sequential)"
                                                 : "round to nearest");
    print_round(0, start, &L, &r, start_acc, &hist);
    print_round(1, "QAT", &L, &r, acc, &hist);
    // The quality gate.
    for (int round = 2; drop_of(&r, acc) > o.max_drop && round < 2 + o.rounds; round++) {
        if (bg_gate_raise(L.n, N_WIDTHS, L.delta, L.choice, 1) == 0) {
            printf("every layer is at 8 bits: the gate stops\n");
            break;
        }
        if (!qat_from_float(&r, &o, &L, float_params, o.steps, NULL, &acc, NULL)) goto fail;
        print_round(round, "gate: the most sensitive layer up one width, QAT again from the float weights", &L, &r, acc,
                    &hist);
    }
    printf("\n  %-10s %12s %10s %10s\n", "layer", "sensitivity", "width", "KiB");
    for (int i = 0; i < L.n; i++)
        printf("  %-10s %+12.5f %10s %10.1f\n", L.names[i], L.delta[i * 3 + L.choice[i]], width_names[L.choice[i]],
               (double)L.bytes[i * 3 + L.choice[i]] / 1024);
    char q1[64], q2[64];
    printf("  quantized layers %.1f KiB (budget %lld KiB, 0: none); %s (float: %s; drop %.4g, allowed %.4g)\n",
           (double)chosen_bytes(&L) / 1024, o.budget_kib, quality_str(&r, acc, q1, sizeof q1),
           quality_str(&r, r.float_q, q2, sizeof q2), drop_of(&r, acc), (double)o.max_drop);
    if (bg_checkpoint_save(o.out, &(bg_checkpoint){.model = r.model}) != BG_OK) goto fail;
    if (r.lm) {
        // The language-model export holds ternary BitLinear or float projections only.
        printf("saved %s (language models export BitLinear projections only: no export of mixed widths)\n", o.out);
    } else {
        if (bg_export(r.model, o.export_path, r.d.nchw ? &(bg_export_opts){3, {1, 28, 28}} : NULL) != BG_OK) goto fail;
        printf("saved %s; export %s: %lld bytes\n", o.out, o.export_path, (long long)tool_file_size(o.export_path));
    }
    if (!write_plots(o.plots, &L, &hist, &r)) goto fail;
    status = 0;
    goto done;
fail:
    fprintf(stderr, "bitgrad autoquant: %s\n", bg_last_error());
done:
    free(float_params);
    run_free(&r);
    return status;
}
