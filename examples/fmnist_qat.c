/* fmnist_qat.c — quantization-aware training of the Fashion-MNIST MLP
 * (784-512-512-10 ReLU) or CNN (conv32-pool-conv64-pool-128-10) and, per
 * epoch, the mean training loss, the test accuracy (fake-quant eval mode),
 * each quantized layer's active spec and bits and its weight / input SQNR.
 *
 *     ./build/fmnist_qat                                        # fp32 MLP
 *     ./build/fmnist_qat --wspec int8 --aspec int8              # every Linear/Conv2d
 *     ./build/fmnist_qat --wspec int4:per_group=64 --aspec int8
 *     ./build/fmnist_qat --bitnet                               # BitLinear on layers 0 and 2
 *     ./build/fmnist_qat --aspec int8 --schedule int8@0,int4@1ep,int2@2ep,ternary@3ep
 *     ./build/fmnist_qat --save-teacher teacher.safetensors     # fp32 run, saves its weights
 *     ./build/fmnist_qat --wspec ternary --aspec int8 --teacher teacher.safetensors
 *     ./build/fmnist_qat --model cnn --epochs 3 --wspec ternary --aspec int8
 *     # the recommended ternary CNN: learned per-channel weight steps (LSQ)
 *     # and a moving-average activation range; README: 87.42% (87.56% with
 *     # f32 products) against 88.22% in fp32, where plain absmean ternary +
 *     # min-max int8 loses 3.2 to 3.6 points
 *     ./build/fmnist_qat --model cnn --epochs 3 --wspec ternary:per_channel:lsq --aspec int8:moving_minmax
 *
 * --schedule phases without a [PATTERN] apply to the weight quantizers only
 * ("[*weight_quant]" is put in front); write a pattern to reach activations
 * ("[*input_quant]int8@0"). Layers the schedule covers start from --wspec
 * (default int8:lsq: learned steps, re-initialised from the weights at each
 * boundary) and change kind and bits at each boundary (qat.h: a bare kind
 * keeps the rest of the spec; from a min-max range, <= 4 bits search the
 * range by MSE).
 *
 * --f32-forward runs the products of QLinear / BitLinear layers in f32 on the
 * fake-quantized tensors instead of the integer kernels (same values up to
 * float rounding; layers.h bg_model_set_int_forward). */
#include <math.h>

#include "examples/example_common.h"

#define MAX_LAYER_SPECS 16
#define MAX_QUANTIZERS 32
/* The weight spec a --schedule starts from without --wspec when all its
 * phases are bare kinds (or fp32): LSQ steps keep through kind-only phases
 * and are re-initialised from the weights at each boundary (README: 87.34%
 * for int8@0,int4@1ep,int2@2ep,ternary@3ep against 86.48% from min-max
 * int8). A phase with a full spec string replaces the spec, which must keep
 * the learned parameters of the start: then the start is plain int8. */
#define SCHEDULE_START "int8:lsq"
#define SCHEDULE_START_FULL "int8"

// --- models --------------------------------------------------------------------

static bg_module *build_mlp(bg_rng *rng) {
    return bg_sequential_new(5, (bg_module *[]){
        bg_linear_new(784, 512, true, rng), bg_relu_new(),
        bg_linear_new(512, 512, true, rng), bg_relu_new(),
        bg_linear_new(512, 10, true, rng),
    });
}

static bg_module *build_cnn(bg_rng *rng) {
    return bg_sequential_new(10, (bg_module *[]){
        bg_conv2d_new(1, 32, 3, 3, NULL, true, rng), bg_relu_new(), bg_max_pool2d_new(2, 0, 0),
        bg_conv2d_new(32, 64, 3, 3, NULL, true, rng), bg_relu_new(), bg_max_pool2d_new(2, 0, 0),
        bg_flatten_new(),
        bg_linear_new(1600, 128, true, rng), bg_relu_new(),
        bg_linear_new(128, 10, true, rng),
    });
}

// --- the QAT flags ---------------------------------------------------------------

typedef struct qat_options {
    bool cnn;
    const char *wspec, *aspec;
    bool bitnet, bitnet_all, f32_forward;
    int n_layer_specs;
    const char *layer_path[MAX_LAYER_SPECS];
    const char *layer_wspec[MAX_LAYER_SPECS];
    char layer_buf[MAX_LAYER_SPECS][BG_PARAM_NAME_MAX];
    const char *schedule;
    const char *teacher, *save_teacher;
    float kd_T, kd_alpha;
} qat_options;

static void qat_usage(void) {
    printf("quantization-aware training:\n"
           "  --model mlp|cnn      the MLP 784-512-512-10 (default) or the CNN\n"
           "  --wspec SPEC         weight quantizer of every Linear/Conv2d (e.g. int8, int4:per_group=64,\n"
           "                       ternary); none = fp32. Ternary CNN: ternary:per_channel:lsq with\n"
           "                       --aspec int8:moving_minmax stays within 1 point of fp32\n"
           "  --aspec SPEC         input (activation) quantizer of every Linear/Conv2d (e.g. int8)\n"
           "  --bitnet             BitLinear on the hidden Linear layers (MLP: 0 and 2; CNN: 7)\n"
           "  --bitnet-all         BitLinear on every Linear\n"
           "  --layer-spec P=SPEC  weight spec of layer P only (repeatable; SPEC 'bitnet' = BitLinear)\n"
           "  --schedule STR       progressive schedule, e.g. int8@0,int4@1ep,int2@2ep,ternary@3ep\n"
           "  --teacher FILE       distil from the fp32 weights in FILE (saved by --save-teacher)\n"
           "  --save-teacher FILE  after training, save the (fp32) model to FILE, a bitgrad checkpoint\n"
           "  --kd-T X             distillation temperature (default 4)\n"
           "  --kd-alpha X         weight of the KD term (default 0.5)\n"
           "  --f32-forward        quantized products in f32, not on the integer kernels\n");
}

static int parse_float(const char *flag, const char *s, double lo, double hi, float *out) {
    char *end;
    double x = strtod(s, &end);
    if (end == s || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "%s: expected a number in %g..%g, got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = (float)x;
    return 0;
}

/* Takes the QAT flags out of argv (compacting it for parse_args). Returns 0,
 * 1 after --help, -1 on error. */
static int parse_qat_args(int *argc, char **argv, qat_options *q) {
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            qat_usage();
            argv[out++] = argv[i];
            continue;
        }
        if (!strcmp(a, "--bitnet")) { q->bitnet = true; continue; }
        if (!strcmp(a, "--bitnet-all")) { q->bitnet_all = true; continue; }
        if (!strcmp(a, "--f32-forward")) { q->f32_forward = true; continue; }
        bool takes = !strcmp(a, "--model") || !strcmp(a, "--wspec") || !strcmp(a, "--aspec") ||
                     !strcmp(a, "--layer-spec") || !strcmp(a, "--schedule") || !strcmp(a, "--teacher") ||
                     !strcmp(a, "--save-teacher") || !strcmp(a, "--kd-T") || !strcmp(a, "--kd-alpha");
        if (!takes) {
            argv[out++] = argv[i];
            continue;
        }
        if (i + 1 >= *argc) {
            fprintf(stderr, "%s: missing value (try --help)\n", a);
            return -1;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) {
            if (strcmp(v, "mlp") && strcmp(v, "cnn")) {
                fprintf(stderr, "--model: expected mlp or cnn, got '%s'\n", v);
                return -1;
            }
            q->cnn = !strcmp(v, "cnn");
        } else if (!strcmp(a, "--wspec")) {
            q->wspec = strcmp(v, "none") && strcmp(v, "fp32") ? v : NULL;
        } else if (!strcmp(a, "--aspec")) {
            q->aspec = strcmp(v, "none") && strcmp(v, "fp32") ? v : NULL;
        } else if (!strcmp(a, "--layer-spec")) {
            const char *eq = strchr(v, '=');
            if (!eq || eq == v || !eq[1] || (size_t)(eq - v) >= BG_PARAM_NAME_MAX ||
                q->n_layer_specs == MAX_LAYER_SPECS) {
                fprintf(stderr, "--layer-spec: expected PATH=SPEC (at most %d), got '%s'\n", MAX_LAYER_SPECS, v);
                return -1;
            }
            int k = q->n_layer_specs++;
            memcpy(q->layer_buf[k], v, (size_t)(eq - v));
            q->layer_buf[k][eq - v] = 0;
            q->layer_path[k] = q->layer_buf[k];
            q->layer_wspec[k] = eq + 1;
        } else if (!strcmp(a, "--schedule")) {
            q->schedule = v;
        } else if (!strcmp(a, "--teacher")) {
            q->teacher = v;
        } else if (!strcmp(a, "--save-teacher")) {
            q->save_teacher = v;
        } else if (!strcmp(a, "--kd-T")) {
            if (parse_float(a, v, 0.01, 100, &q->kd_T)) return -1;
        } else if (!strcmp(a, "--kd-alpha")) {
            if (parse_float(a, v, 0, 1, &q->kd_alpha)) return -1;
        }
    }
    *argc = out;
    argv[out] = NULL;
    return 0;
}

// --- model conversion ----------------------------------------------------------

/* Applies the per-layer overrides, BitLinear, then --wspec/--aspec to the
 * layers still in float. */
static bg_status quantize(bg_module *model, const qat_options *q) {
    for (int k = 0; k < q->n_layer_specs; k++)
        if (bg_quantize_layer(model, q->layer_path[k], q->layer_wspec[k], q->aspec) != BG_OK) return BG_ERR_ARG;
    if (q->bitnet_all) {
        if (bg_bitnet_model(model) != BG_OK) return BG_ERR_ARG;
    } else if (q->bitnet) {
        const char *hidden_mlp[] = {"0", "2"}, *hidden_cnn[] = {"7"};
        const char **h = q->cnn ? hidden_cnn : hidden_mlp;
        int nh = q->cnn ? 1 : 2;
        for (int k = 0; k < nh; k++)
            if (bg_quantize_layer(model, h[k], "bitnet", NULL) != BG_OK) return BG_ERR_ARG;
    }
    const char *w = q->wspec;
    if (w || q->aspec) return bg_quantize_model(model, w, q->aspec);
    return BG_OK;
}

// --- teacher weights -----------------------------------------------------------

/* The fp32 model as a bitgrad checkpoint: --teacher reads it back, and
 * `bitgrad ptq` / `bitgrad autoquant` start from it. */
static bg_status save_weights(bg_module *model, const char *path) {
    return bg_checkpoint_save(path, &(bg_checkpoint){.model = model});
}

static bg_status load_weights(bg_module *model, const char *path) {
    return bg_checkpoint_load(path, &(bg_checkpoint){.model = model});
}

// --- training hooks ------------------------------------------------------------

typedef struct hooks {
    bg_module *teacher;
    float T, alpha;
    bg_schedule *sched;
    bg_quantizer_list *q;   /* the model's quantizers, for the schedule */
    int64_t transitions;
} hooks;

static bg_tensor *kd_loss(bg_ctx *ctx, bg_tensor *out, bg_tensor *x, bg_tensor *y, void *user) {
    hooks *h = user;
    bg_tensor *t = bg_teacher_forward(ctx, h->teacher, x);
    return t ? bg_kd_loss(ctx, out, t, y, h->T, h->alpha) : NULL;
}

static bg_status apply_schedule(int64_t step, void *user) {
    hooks *h = user;
    if (!h->sched) return BG_OK;
    bool changed = false;
    bg_status s = bg_schedule_apply(h->sched, step, h->q->states, h->q->names, h->q->weights, h->q->n, &changed);
    if (changed) h->transitions++;
    return s;
}

// --- reporting -----------------------------------------------------------------

static void print_layers(bg_module *model, hooks *h) {
    bg_qat_layer_metrics m[MAX_QUANTIZERS];
    int n = bg_qat_metrics(model, m, MAX_QUANTIZERS);
    if (n > MAX_QUANTIZERS) n = MAX_QUANTIZERS;
    for (int i = 0; i < n; i++) {
        bg_module *ql = bg_qlayer_at(model, i);
        bg_quant_state *ws = bg_qlayer_weight_state(ql), *as = bg_qlayer_input_state(ql);
        char wtxt[BG_QUANT_SPEC_STR_MAX] = "fp32", atxt[BG_QUANT_SPEC_STR_MAX] = "fp32";
        if (ws && bg_quant_state_enabled(ws)) bg_quant_spec_format(bg_quant_state_spec(ws), wtxt, sizeof wtxt);
        if (as && bg_quant_state_enabled(as)) bg_quant_spec_format(bg_quant_state_spec(as), atxt, sizeof atxt);
        printf("  layer %-2s %-9s W %-26s (%d bit)  A %-22s (%d bit)  W SQNR %6.2f dB", m[i].name, m[i].kind,
               wtxt, ws && bg_quant_state_enabled(ws) ? m[i].w_bits : 32, atxt,
               as && bg_quant_state_enabled(as) ? m[i].a_bits : 32, m[i].has_weight ? m[i].weight.sqnr_db : NAN);
        printf("  A SQNR %6.2f dB", m[i].has_input ? m[i].input.sqnr_db : NAN);
        if (m[i].ternary) printf("  zeros %.3f", m[i].zero_frac);
        printf("\n");
    }
    (void)h;
}

// --- main ------------------------------------------------------------------------

int main(int argc, char **argv) {
    (void)run_fmnist_example;   // the shared fp32 loop; this program has its own
    qat_options q = {.kd_T = 4.0f, .kd_alpha = 0.5f};
    int r = parse_qat_args(&argc, argv, &q);
    if (r) return 2;
    options o = {.epochs = 5, .batch = 128, .lr = 1e-3f, .optim = "adam", .threads = 0, .seed = 0,
                 .what = "Quantization-aware training of the Fashion-MNIST MLP or CNN."};
    r = parse_args(argc, argv, &o);
    if (r) return r > 0 ? 0 : 2;

    if (!dist_begin()) return 1;
    bg_set_num_threads(o.threads);
    int status = 1;
    bg_dataset *train = NULL, *test = NULL;
    bg_batcher *train_b = NULL, *test_b = NULL;
    bg_module *model = NULL, *teacher = NULL;
    bg_optim *opt = NULL;
    bg_ctx *ctx = NULL;
    bg_schedule sched;
    hooks h = {.T = q.kd_T, .alpha = q.kd_alpha};
    bg_batcher_opts train_opts = {.batch_size = o.batch, .shuffle = true, .seed = o.seed, .nchw = q.cnn,
                                  .shard_rank = bg_dist_rank(), .shard_count = bg_dist_size()};
    bg_batcher_opts test_opts = {.batch_size = q.cnn ? 250 : 1000, .nchw = q.cnn};
    if (bg_fmnist_load(o.data, BG_FMNIST_TRAIN, &train) != BG_OK ||
        bg_fmnist_load(o.data, BG_FMNIST_TEST, &test) != BG_OK ||
        bg_batcher_new(train, &train_opts, &train_b) != BG_OK || bg_batcher_new(test, &test_opts, &test_b) != BG_OK)
        goto fail;
    bg_rng rng;
    bg_rng_seed(&rng, o.seed);
    model = q.cnn ? build_cnn(&rng) : build_mlp(&rng);
    // The schedule is parsed first: its phases choose the default start spec.
    char sched_buf[BG_SCHEDULE_STR_MAX];
    if (q.schedule) {
        if (bg_schedule_weights_only(q.schedule, sched_buf, sizeof sched_buf) != BG_OK) goto fail;
        if (bg_schedule_parse(sched_buf, bg_batcher_batches(train_b), &sched) != BG_OK) goto fail;
        bool bare = true;
        for (int i = 0; i < sched.n_rules; i++)
            for (int j = 0; j < sched.rules[i].n_phases; j++)
                bare &= sched.rules[i].phases[j].fp32 || sched.rules[i].phases[j].kind_only;
        if (!q.wspec) q.wspec = bare ? SCHEDULE_START : SCHEDULE_START_FULL;
    }
    if (!model || quantize(model, &q) != BG_OK || bg_dist_broadcast_model(model) != BG_OK) goto fail;
    bg_model_set_int_forward(model, !q.f32_forward);
    if (q.teacher) {
        bg_rng trng;
        bg_rng_seed(&trng, o.seed);
        teacher = q.cnn ? build_cnn(&trng) : build_mlp(&trng);
        if (!teacher || load_weights(teacher, q.teacher) != BG_OK) goto fail;
        bg_module_freeze(teacher, true);
        bg_module_train(teacher, false);
        h.teacher = teacher;
    }
    if (q.schedule) {
        h.sched = &sched;
        if (!(h.q = bg_model_quantizer_list(model))) goto fail;
    }
    opt = build_optim(model, &o);
    ctx = bg_ctx_new(0);
    if (!opt || !ctx) goto fail;

    char sched_txt[BG_SCHEDULE_STR_MAX] = "none";
    if (h.sched) bg_schedule_format(h.sched, sched_txt, sizeof sched_txt);
    printf("fmnist_qat: %s, %lld parameters; %s lr %g, batch %lld, seed %llu, %d threads\n"
           "  wspec %s, aspec %s, bitnet %s, schedule %s, teacher %s (T %g, alpha %g)\n",
           q.cnn ? "CNN conv32-pool-conv64-pool-128-10" : "MLP 784-512-512-10", (long long)bg_module_numel(model),
           bg_optim_kind(opt), (double)o.lr, (long long)o.batch, (unsigned long long)o.seed, bg_get_num_threads(),
           q.wspec ? q.wspec : "fp32", q.aspec ? q.aspec : "fp32",
           q.bitnet_all ? "all" : q.bitnet ? "hidden" : "no", sched_txt, q.teacher ? q.teacher : "none",
           (double)q.kd_T, (double)q.kd_alpha);
    fflush(stdout);

    bg_train_opts topts = {.loss = teacher ? kd_loss : NULL, .user = &h, .before_step = apply_schedule};
    double acc = 0;
    for (int e = 0; e < o.epochs; e++) {
        double loss, t0 = now_seconds();
        bg_model_set_quant_mode(model, BG_QUANT_MODE_TRAIN);
        if (h.sched && h.sched->last_step >= 0 && bg_schedule_sync(h.sched, h.q->states, h.q->names, h.q->n) != BG_OK)
            goto fail;
        if (bg_train_epoch(ctx, model, opt, train_b, &topts, &loss) != BG_OK) goto fail;
        double t1 = now_seconds();
        // Evaluate in fake-quant eval mode; tracking keeps the sums of the
        // last test batch's forward for the per-layer SQNR.
        bg_model_set_quant_mode(model, BG_QUANT_MODE_EVAL);
        if (h.sched && bg_schedule_sync(h.sched, h.q->states, h.q->names, h.q->n) != BG_OK) goto fail;
        bg_model_track_quant(model, true);
        bg_status s = bg_evaluate(ctx, model, test_b, &acc);
        bg_model_track_quant(model, false);
        if (s != BG_OK) goto fail;
        double t2 = now_seconds();
        printf("epoch %d/%d  train loss %.4f  test acc %.2f%%  %.2f s (train %.2f s, test %.2f s)\n", e + 1,
               o.epochs, loss, 100 * acc, t2 - t0, t1 - t0, t2 - t1);
        print_layers(model, &h);
        fflush(stdout);
    }
    printf("final test accuracy %.2f%%\n", 100 * acc);
    if (q.save_teacher) {
        if (bg_dist_is_root() && save_weights(model, q.save_teacher) != BG_OK) goto fail;
        printf("saved the weights to %s\n", q.save_teacher);
    }
    status = 0;
    goto done;
fail:
    fprintf(stderr, "%s\n", ctx && bg_ctx_status(ctx) != BG_OK ? bg_ctx_error(ctx) : bg_last_error());
done:
    bg_quantizer_list_free(h.q);
    bg_ctx_free(ctx);
    bg_optim_free(opt);
    bg_module_free(teacher);
    bg_module_free(model);
    bg_batcher_free(train_b);
    bg_batcher_free(test_b);
    bg_dataset_free(train);
    bg_dataset_free(test);
    return dist_end(status);
}
