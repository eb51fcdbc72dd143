/* bitgrad lm — the BitNet transformer language model from the command line:
 * `lm train` trains one on a byte-level text (the King James Bible by
 * default), fp32 or BitNet, with an optional progressive schedule and
 * distillation from a finished checkpoint, evaluating validation bits per
 * byte on fixed windows; `lm sample` continues a prompt from a checkpoint.
 * The loop is the library's (bg_train_steps); this file wires options,
 * progress, evaluation, the log and the checkpoint. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/commands.h"
#include "tools/tools.h"

typedef struct lm_opts {
    const char *data, *out, *log, *resume, *teacher, *schedule, *init;
    bool quiet;   /* no per-run header (the demo prints its own) */
    bg_lm_config cfg;
    bool bitnet, recompute;
    int64_t steps, stop_after, batch, warmup, eval_every, eval_batches;
    int threads;
    float lr, min_lr_frac, wd, clip, kd_T, kd_alpha;
    uint64_t seed;
} lm_opts;

static void train_usage(FILE *f) {
    fprintf(f,
            "usage: bitgrad lm train [options]\n"
            "Trains a BitNet transformer language model (llama.cpp's bitnet graph) on the bytes of a\n"
            "text file: the first 90%% trains, validation bits per byte are measured on fixed windows\n"
            "of the last 10%%.\n"
            "  --data FILE       text (default: the King James Bible from Debian's bible-kjv)\n"
            "  --bitnet          ternary BitLinear projections (int8 activations) instead of fp32\n"
            "  --schedule S      progressive schedule of the projections' weights, e.g.\n"
            "                    int8@0,int4@100,int2@200,ternary@300 (implies --bitnet)\n"
            "  --teacher CKPT    distil from this finished LM checkpoint (per-position KD)\n"
            "  --kd-T X          distillation temperature (default 2)\n"
            "  --kd-alpha X      weight of the distillation term (default 0.5)\n"
            "  --steps N         optimizer steps (default 300)\n"
            "  --stop-after N    save and stop after N steps of this run (resume later with --resume)\n"
            "  --batch N         windows per step (default 32)\n"
            "  --ctx N           context, tokens per window (default 128)\n"
            "  --d N --layers N --heads N --ff N   model sizes (default 256, 4, 4, 768)\n"
            "  --lr X            AdamW peak learning rate (default 2e-3), betas 0.9/0.95\n"
            "  --warmup N        linear warm-up steps, then cosine down (default 50)\n"
            "  --min-lr X        the cosine's floor as a fraction of --lr (default 0.1)\n"
            "  --wd X            weight decay of the projection matrices (default 0.1)\n"
            "  --clip X          gradient-norm clipping, 0 = off (default 1)\n"
            "  --eval-every N    validation every N steps (default 100)\n"
            "  --eval-batches N  validation batches of --batch windows (default 16)\n"
            "  --threads N       threads; 0 = auto: one per core, one fewer per core\n"
            "                    other processes keep busy, N pins N (default 0)\n"
            "  --no-recompute    keep every block's activations for the backward (faster; 2.2-2.5x\n"
            "                    the peak memory) instead of running each block again in the backward\n"
            "  --seed N          initialisation and data seed (default 0)\n"
            "  --out FILE        the checkpoint (default lm.safetensors)\n"
            "  --log FILE        training log, JSON lines (default lm.jsonl; bitgrad plot draws it)\n"
            "  --resume CKPT     continue a run from its checkpoint (model, optimizer, data position)\n"
            "  --init CKPT       start from this checkpoint's weights (a fresh optimizer; with --bitnet\n"
            "                    its projections become BitLinears)\n");
}

static lm_opts lm_defaults(void) {
    return (lm_opts){.out = "lm.safetensors", .log = "lm.jsonl", .steps = 300, .batch = 32, .warmup = 50,
                   .eval_every = 100, .eval_batches = 16, .lr = 2e-3f, .min_lr_frac = 0.1f, .wd = 0.1f,
                   .clip = 1.0f, .recompute = true, .kd_T = 2.0f, .kd_alpha = 0.5f,
                   .cfg = {.vocab = BG_TEXT_VOCAB, .d_model = 256, .n_layers = 4, .n_heads = 4, .d_ff = 768,
                           .ctx = 128}};
}

static int parse_train(int argc, char **argv, lm_opts *o) {
    *o = lm_defaults();
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        long long n = 0;
        bool ok = true;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            train_usage(stdout);
            return 1;
        } else if (!strcmp(a, "--data")) ok = tool_str_arg(argc, argv, &i, &o->data);
        else if (!strcmp(a, "--out")) ok = tool_str_arg(argc, argv, &i, &o->out);
        else if (!strcmp(a, "--log")) ok = tool_str_arg(argc, argv, &i, &o->log);
        else if (!strcmp(a, "--resume")) ok = tool_str_arg(argc, argv, &i, &o->resume);
        else if (!strcmp(a, "--init")) ok = tool_str_arg(argc, argv, &i, &o->init);
        else if (!strcmp(a, "--teacher")) ok = tool_str_arg(argc, argv, &i, &o->teacher);
        else if (!strcmp(a, "--schedule")) ok = tool_str_arg(argc, argv, &i, &o->schedule), o->bitnet = true;
        else if (!strcmp(a, "--bitnet")) o->bitnet = true;
        else if (!strcmp(a, "--no-recompute")) o->recompute = false;
        else if (!strcmp(a, "--steps")) ok = tool_int_arg(argc, argv, &i, 1, 100000000, &n), o->steps = n;
        else if (!strcmp(a, "--stop-after")) ok = tool_int_arg(argc, argv, &i, 1, 100000000, &n), o->stop_after = n;
        else if (!strcmp(a, "--batch")) ok = tool_int_arg(argc, argv, &i, 1, 65536, &n), o->batch = n;
        else if (!strcmp(a, "--ctx")) ok = tool_int_arg(argc, argv, &i, 1, 65536, &n), o->cfg.ctx = n;
        else if (!strcmp(a, "--d")) ok = tool_int_arg(argc, argv, &i, 2, 65536, &n), o->cfg.d_model = n;
        else if (!strcmp(a, "--layers")) ok = tool_int_arg(argc, argv, &i, 1, 1024, &n), o->cfg.n_layers = n;
        else if (!strcmp(a, "--heads")) ok = tool_int_arg(argc, argv, &i, 1, 1024, &n), o->cfg.n_heads = n;
        else if (!strcmp(a, "--ff")) ok = tool_int_arg(argc, argv, &i, 1, 1 << 20, &n), o->cfg.d_ff = n;
        else if (!strcmp(a, "--warmup")) ok = tool_int_arg(argc, argv, &i, 0, 100000000, &n), o->warmup = n;
        else if (!strcmp(a, "--eval-every")) ok = tool_int_arg(argc, argv, &i, 1, 100000000, &n), o->eval_every = n;
        else if (!strcmp(a, "--eval-batches")) ok = tool_int_arg(argc, argv, &i, 1, 100000, &n), o->eval_batches = n;
        else if (!strcmp(a, "--threads")) ok = tool_int_arg(argc, argv, &i, 0, 1024, &n), o->threads = (int)n;
        else if (!strcmp(a, "--seed")) ok = tool_int_arg(argc, argv, &i, 0, 1LL << 62, &n), o->seed = (uint64_t)n;
        else if (!strcmp(a, "--lr")) ok = tool_float_arg(argc, argv, &i, 1e-9, 10, &o->lr);
        else if (!strcmp(a, "--min-lr")) ok = tool_float_arg(argc, argv, &i, 0, 1, &o->min_lr_frac);
        else if (!strcmp(a, "--wd")) ok = tool_float_arg(argc, argv, &i, 0, 10, &o->wd);
        else if (!strcmp(a, "--clip")) ok = tool_float_arg(argc, argv, &i, 0, 1e6, &o->clip);
        else if (!strcmp(a, "--kd-T")) ok = tool_float_arg(argc, argv, &i, 0.01, 100, &o->kd_T);
        else if (!strcmp(a, "--kd-alpha")) ok = tool_float_arg(argc, argv, &i, 0, 1, &o->kd_alpha);
        else {
            fprintf(stderr, "bitgrad lm train: unknown option %s (see --help)\n", a);
            return 2;
        }
        if (!ok) return 2;
        (void)n;
    }
    if (bg_lm_config_check(&o->cfg) != BG_OK) {
        fprintf(stderr, "bitgrad lm train: %s\n", bg_last_error());
        return 2;
    }
    return 0;
}

// --- the run ------------------------------------------------------------------------

typedef struct lm_run {
    const lm_opts *o;
    bg_module *model, *teacher;
    bg_text_batcher *train;
    bg_schedule sched;
    bool has_sched;
    bg_quantizer_list *q;
    bg_trainlog_writer *log;
    double t0, loss_window;
    int64_t n_window, first_step, tokens_per_step;
    bool tty, tracking;
} lm_run;

static bg_tensor *kd_loss(bg_ctx *ctx, bg_tensor *out, bg_tensor *x, bg_tensor *y, void *user) {
    lm_run *r = user;
    bg_tensor *t = bg_teacher_forward(ctx, r->teacher, x);
    int64_t V = out->shape[out->ndim - 1], N = bg_numel(out) / V;
    bg_tensor *s2 = bg_reshape(ctx, out, 2, (int64_t[]){N, V});
    bg_tensor *t2 = t ? bg_reshape(ctx, t, 2, (int64_t[]){N, V}) : NULL;
    bg_tensor *y1 = bg_reshape(ctx, y, 1, (int64_t[]){N});
    return s2 && t2 && y1 ? bg_kd_loss(ctx, s2, t2, y1, r->o->kd_T, r->o->kd_alpha) : NULL;
}

/* A log failure is not fatal: the warning is printed once and logging stops. */
static void log_check(lm_run *r, bg_status s) {
    if (s == BG_OK || !r->log) return;
    fprintf(stderr, "%swarning: training log: %s (logging stops)\n", r->tty ? "\n" : "", bg_last_error());
    bg_trainlog_close(r->log);
    r->log = NULL;
}

/* The quantized layers' latent weights with their levels (the histogram figure). */
static void log_histograms(lm_run *r, int64_t step) {
    if (r->log && r->q->n) log_check(r, bg_trainlog_model_hists(r->log, step, r->model, 64, true));
}

/* Quantization metrics are measured on the last step of each phase (the
 * SQNR figure's bars), on the run's last step and every TOOL_METRICS_EVERY
 * steps: the step's forward tracks them, after_step logs them. */
static void track_if_due(lm_run *r, int64_t step) {
    r->tracking = r->q->n && r->log &&
                  (step % TOOL_METRICS_EVERY == TOOL_METRICS_EVERY - 1 || step + 1 == r->o->steps ||
                   (r->has_sched && tool_phase_ending(&r->sched, r->q, step + 1)));
    if (r->tracking) bg_model_track_quant(r->model, true);
}

static bg_status before_step(int64_t step, void *user) {
    lm_run *r = user;
    if (!r->has_sched) {
        if (step == 0) log_histograms(r, step);
        track_if_due(r, step);
        return BG_OK;
    }
    if (tool_phase_ending(&r->sched, r->q, step)) log_histograms(r, step);
    bool changed = false;
    bg_status s = bg_schedule_apply(&r->sched, step, r->q->states, r->q->names, r->q->weights, r->q->n, &changed);
    if (s == BG_OK && changed && r->log) log_check(r, tool_log_phases(r->log, step, r->q));
    if (s == BG_OK && changed && r->sched.last_step > 0) {
        printf("%s  step %lld: schedule moves to %s\n", r->tty ? "\n" : "", (long long)step,
               bg_schedule_spec_name(&r->sched, r->q->names[0], step));
        fflush(stdout);
    }
    if (s == BG_OK && step == 0) log_histograms(r, step);   // the first phase's start
    if (s == BG_OK) track_if_due(r, step);
    return s;
}

static void after_step(int64_t step, double loss, int64_t batch, void *user) {
    lm_run *r = user;
    (void)batch;
    r->loss_window += loss, r->n_window++;
    if (r->tracking) {
        log_check(r, tool_log_metrics(r->log, step + 1, r->model, r->q->n));
        bg_model_track_quant(r->model, false);
        r->tracking = false;
    }
    if (r->log && (step + 1) % 10 == 0) log_check(r, bg_trainlog_step(r->log, step + 1, 0, loss, 0));
    double el = tool_now() - r->t0, done = (double)(step + 1 - r->first_step);
    double tps = done * (double)r->tokens_per_step / el;
    double eta = (double)(r->o->steps - step - 1) * el / done;
    if (r->tty || (step + 1) % 50 == 0) {
        printf("%s  step %lld/%lld  loss %.4f  %.0f tokens/s  ETA %.0f s%s", r->tty ? "\r" : "",
               (long long)(step + 1), (long long)r->o->steps, r->loss_window / (double)r->n_window, tps, eta,
               r->tty ? "   " : "\n");
        fflush(stdout);
    }
}

/* Validation loss in nats per byte over the fixed windows. */
static bool validate(lm_run *r, const bg_text *text, bg_ctx *ctx, double *nats) {
    bg_text_batcher *vb = NULL;
    bg_text_batcher_opts vo = {.batch_size = r->o->batch, .context = r->o->cfg.ctx, .split = BG_TEXT_VAL,
                               .fixed = true, .max_windows = r->o->batch * r->o->eval_batches};
    if (bg_text_batcher_new(text, &vo, &vb) != BG_OK) return false;
    const bg_batch_source src = bg_text_source(vb);
    bool quant = r->q->n > 0;
    if (quant) bg_model_set_quant_mode(r->model, BG_QUANT_MODE_EVAL);
    bool ok = bg_evaluate_loss(ctx, r->model, &src, nats) == BG_OK;
    if (quant) bg_model_set_quant_mode(r->model, BG_QUANT_MODE_TRAIN);
    bg_text_batcher_free(vb);
    return ok;
}

static bool decays(const char *name, const bg_tensor *p, void *user) {
    (void)user;
    return p->ndim == 2 && strncmp(name, "blk.", 4) == 0;   // the projections, not the embedding
}

/* One training run; *val_out gets the last validation loss (nats/byte). */
static int lm_run_train(lm_opts o, double *val_out) {
    int status = 1;
    bg_text *text = NULL;
    bg_optim *opt = NULL;
    bg_ctx *ctx = NULL;
    lm_run r = {.o = &o, .tty = isatty(STDOUT_FILENO)};
    bg_status s = o.data ? bg_text_load(o.data, &text) : bg_text_load_kjv(&text);
    bg_rng rng;
    bg_rng_seed(&rng, o.seed);
    if (s == BG_OK) {
        if (o.resume || o.init) {
            s = bg_checkpoint_load_model(o.resume ? o.resume : o.init, &r.model);
            if (s == BG_OK) s = bg_lm_config_of(r.model, &o.cfg);
            if (s == BG_OK && o.init && o.bitnet) s = bg_bitnet_model(r.model);
        } else {
            r.model = bg_lm_new(&o.cfg, &rng);
            s = r.model && o.bitnet ? bg_bitnet_model(r.model) : r.model ? BG_OK : bg_last_status();
        }
    }
    if (s == BG_OK && o.teacher) {
        s = bg_checkpoint_load_model(o.teacher, &r.teacher);
        if (s == BG_OK) bg_module_freeze(r.teacher, true), bg_module_train(r.teacher, false);
        if (s == BG_OK) s = bg_lm_set_recompute(r.teacher, o.recompute);
    }
    if (s == BG_OK) s = bg_lm_set_recompute(r.model, o.recompute);
    // Data parallel (mpirun -np N): each rank takes its slice of every global batch of --batch windows.
    bg_text_batcher_opts to = {.batch_size = o.batch, .context = o.cfg.ctx, .seed = o.seed,
                               .shard_rank = bg_dist_rank(), .shard_count = bg_dist_size()};
    if (s == BG_OK) s = bg_text_batcher_new(text, &to, &r.train);
    if (s == BG_OK && !(r.q = bg_model_quantizer_list(r.model))) s = bg_last_status();
    if (s == BG_OK && o.schedule) {
        char buf[BG_SCHEDULE_STR_MAX];
        s = bg_schedule_weights_only(o.schedule, buf, sizeof buf);
        if (s == BG_OK) s = bg_schedule_parse(buf, 0, &r.sched);
        r.has_sched = s == BG_OK;
    }
    bg_adam_opts ao = {.lr = o.lr, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = o.wd};
    if (s == BG_OK && !(opt = bg_adamw_new(r.model, &ao))) s = bg_last_status();
    if (s == BG_OK) s = bg_optim_decay_only(opt, decays, NULL);
    bg_lr_schedule lrs = bg_lr_cosine(o.lr, o.warmup, o.steps, o.lr * o.min_lr_frac);
    if (s == BG_OK) s = bg_optim_set_schedule(opt, &lrs);
    bg_checkpoint ck = {.model = r.model, .opt = opt, .schedule = r.has_sched ? &r.sched : NULL, .rng = &rng};
    if (s == BG_OK && o.resume) {
        s = bg_checkpoint_load(o.resume, &ck);
        if (s == BG_OK) s = bg_text_batcher_seek(r.train, ck.batch_in_epoch);   // the data position
        if (s == BG_OK && r.has_sched) s = bg_schedule_sync(&r.sched, r.q->states, r.q->names, r.q->n);
        if (s == BG_OK && ck.ranks != bg_dist_size())
            printf("note: %s was trained on %lld rank(s), this run has %d: the same global batches follow, but the "
                   "gradients' sums over ranks run in another order, so the run is not bit for bit the one that "
                   "continued on %lld\n",
                   o.resume, (long long)ck.ranks, bg_dist_size(), (long long)ck.ranks);
    }
    if (s == BG_OK) s = bg_dist_broadcast_model(r.model);   // ranks start equal whatever they read
    if (s == BG_OK && !(ctx = bg_ctx_new(0))) s = bg_last_status();
    if (s == BG_OK && o.log && bg_dist_is_root() && (o.resume ? bg_trainlog_append(o.log, &r.log) : bg_trainlog_open(o.log, &r.log)) != BG_OK)
        fprintf(stderr, "warning: training log: %s (no log)\n", bg_last_error());
    if (s != BG_OK) {
        fprintf(stderr, "bitgrad lm train: %s\n", bg_last_error());
        goto done;
    }
    if (r.log && !o.resume) bg_trainlog_meta(r.log, o.bitnet ? "BitNet LM" : "fp32 LM");
    bg_model_set_quant_mode(r.model, BG_QUANT_MODE_TRAIN);
    char desc[256];
    bg_module_describe(r.model, desc, sizeof desc);
    if (!o.quiet)
        printf("lm train: %s%s, %lld parameters; %lld training / %lld validation bytes; %d threads\n", desc,
               o.bitnet ? " (BitNet)" : "", (long long)bg_module_numel(r.model), (long long)text->n_train,
               (long long)text->n_val, bg_get_num_threads());
    r.tokens_per_step = o.batch * o.cfg.ctx;
    r.first_step = bg_optim_step_count(opt);
    r.t0 = tool_now();
    const bg_batch_source src = bg_text_source(r.train);
    bg_train_opts topts = {.loss = r.teacher ? kd_loss : NULL, .user = &r, .before_step = before_step,
                           .after_step = after_step, .clip_grad_norm = o.clip};
    int64_t end = o.stop_after && r.first_step + o.stop_after < o.steps ? r.first_step + o.stop_after : o.steps;
    while (bg_optim_step_count(opt) < end) {
        int64_t at = bg_optim_step_count(opt), n = o.eval_every - at % o.eval_every;
        if (n > end - at) n = end - at;
        double mean = 0, val = 0;
        r.loss_window = 0, r.n_window = 0;
        if (bg_train_steps(ctx, r.model, opt, &src, n, &topts, &mean) != BG_OK || !validate(&r, text, ctx, &val)) {
            fprintf(stderr, "%sbitgrad lm train: %s\n", r.tty ? "\n" : "", bg_last_error());
            goto done;
        }
        int64_t step = bg_optim_step_count(opt);
        printf("%sstep %lld: train loss %.4f, validation %.4f nats/byte = %.4f bits/byte\n", r.tty ? "\n" : "",
               (long long)step, mean, val, val / log(2.0));
        fflush(stdout);
        if (r.log) log_check(&r, bg_trainlog_eval(r.log, step, "validation nats/byte", val));
        if (val_out) *val_out = val;
    }
    ck.step = bg_optim_step_count(opt);
    if (ck.step == o.steps) log_histograms(&r, ck.step);
    ck.batch_in_epoch = bg_text_batcher_position(r.train);
    ck.ranks = bg_dist_size();
    if (bg_dist_is_root() && bg_checkpoint_save(o.out, &ck) != BG_OK) {
        fprintf(stderr, "bitgrad lm train: %s\n", bg_last_error());
        goto done;
    }
    printf("wrote %s (%lld steps, %.1f s, %.0f tokens/s)\n", o.out, (long long)ck.step, tool_now() - r.t0,
           (double)(ck.step - r.first_step) * (double)r.tokens_per_step / (tool_now() - r.t0));
    tool_print_dist_stats(ck.step - r.first_step);
    status = 0;
done:
    if (r.log) bg_trainlog_close(r.log);
    bg_ctx_free(ctx);
    bg_optim_free(opt);
    bg_quantizer_list_free(r.q);
    bg_text_batcher_free(r.train);
    bg_module_free(r.teacher);
    bg_module_free(r.model);
    bg_text_free(text);
    return status;
}

static int lm_train(int argc, char **argv) {
    lm_opts o;
    int pr = parse_train(argc, argv, &o);
    if (pr) return pr == 1 ? 0 : pr;
    bg_set_num_threads(o.threads);
    return lm_run_train(o, NULL);
}

// --- sample -------------------------------------------------------------------------

static void sample_usage(FILE *f) {
    fprintf(f, "usage: bitgrad lm sample CKPT --prompt TEXT [-n N] [--temperature T] [--top-k K] [--seed S]\n"
               "Continues TEXT by N bytes (default 200) with the checkpoint's model (temperature 0.8,\n"
               "top-k 0 = all, seed 0 by default; temperature 0 is greedy).\n");
}

static int lm_sample(int argc, char **argv) {
    const char *ckpt = NULL, *prompt = NULL;
    long long n = 200, k = 0, seed = 0;
    float temp = 0.8f;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        bool ok = true;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            sample_usage(stdout);
            return 0;
        } else if (a[0] != '-') {
            ckpt = a;
        } else if (!strcmp(a, "--prompt")) ok = tool_str_arg(argc, argv, &i, &prompt);
        else if (!strcmp(a, "-n")) ok = tool_int_arg(argc, argv, &i, 0, 1 << 20, &n);
        else if (!strcmp(a, "--top-k")) ok = tool_int_arg(argc, argv, &i, 0, 1 << 20, &k);
        else if (!strcmp(a, "--seed")) ok = tool_int_arg(argc, argv, &i, 0, 1LL << 62, &seed);
        else if (!strcmp(a, "--temperature")) ok = tool_float_arg(argc, argv, &i, 0, 100, &temp);
        else {
            fprintf(stderr, "bitgrad lm sample: unknown option %s (see --help)\n", a);
            return 2;
        }
        if (!ok) return 2;
    }
    if (!ckpt || !prompt || !prompt[0]) {
        sample_usage(stderr);
        return 2;
    }
    bg_module *m = NULL;
    int64_t np = (int64_t)strlen(prompt);
    int32_t *ids = malloc(sizeof *ids * (size_t)np), *out = malloc(sizeof *out * (size_t)(n ? n : 1));
    int status = 1;
    if (!ids || !out) goto done;
    for (int64_t i = 0; i < np; i++) ids[i] = (unsigned char)prompt[i];
    bg_sample_opts so = {.temperature = temp, .top_k = k, .seed = (uint64_t)seed};
    if (bg_checkpoint_load_model(ckpt, &m) != BG_OK || bg_lm_generate(m, ids, np, n, &so, out) != BG_OK) {
        fprintf(stderr, "bitgrad lm sample: %s\n", bg_last_error());
        goto done;
    }
    fputs(prompt, stdout);
    for (long long i = 0; i < n; i++) putchar(out[i]);
    putchar('\n');
    status = 0;
done:
    free(ids);
    free(out);
    bg_module_free(m);
    return status;
}

// --- the demo -----------------------------------------------------------------------

static void demo_usage(FILE *f) {
    fprintf(f, "usage: bitgrad demo lm [--steps N] [--out DIR] [--data FILE] [--threads N] [--seed N]\n"
               "The language-model demo (about 5 minutes on 2 cores): trains an fp32 BitNet-architecture\n"
               "teacher on the King James Bible for N steps (default 400), fine-tunes a ternary student\n"
               "from it for N steps with the progressive schedule 8 -> 4 -> 2 -> ternary and distillation,\n"
               "then prints both models' validation bits per byte, a sample from each, and the plots.\n"
               "Model: d 128, 4 layers, 4 heads, d_ff 384, context 128, batch 16, AdamW 3e-3.\n");
}

/* Prints a continuation of the prompt by ckpt's model (temperature 0.8, seed 0). */
static void demo_sample(const char *label, const char *ckpt, const char *prompt) {
    bg_module *m = NULL;
    int32_t ids[64], out[160];
    int64_t np = (int64_t)strlen(prompt);
    for (int64_t i = 0; i < np; i++) ids[i] = (unsigned char)prompt[i];
    bg_sample_opts so = {.temperature = 0.8f, .seed = 0};
    if (bg_checkpoint_load_model(ckpt, &m) != BG_OK || bg_lm_generate(m, ids, np, 160, &so, out) != BG_OK) {
        fprintf(stderr, "sample: %s\n", bg_last_error());
    } else {
        printf("%s:\n  %s", label, prompt);
        for (int i = 0; i < 160; i++) putchar(out[i] == '\n' ? '\n' : out[i]);
        printf("\n");
    }
    bg_module_free(m);
}

/* The teacher's training figure; every figure of the student (training,
 * weight histograms, ternary zeros and flips, SQNR) into its own folder. */
static bool demo_plots(const char *tlog, const char *tpng, const char *slog, const char *sdir, bg_plot_files *files) {
    bg_trainlog *t = NULL, *st = NULL;
    bool ok = bg_trainlog_read(tlog, &t) == BG_OK && bg_plot_training(t, tpng) == BG_OK &&
              bg_trainlog_read(slog, &st) == BG_OK && bg_plot_all(st, sdir, files) == BG_OK;
    if (!ok) fprintf(stderr, "plot: %s\n", bg_last_error());
    bg_trainlog_free(t);
    bg_trainlog_free(st);
    return ok;
}

int tool_lm_demo(int argc, char **argv) {
    const char *dir = "bitgrad-demo-lm", *data = NULL;
    long long steps = 400, threads = 0, seed = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        bool ok = true;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            demo_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--steps")) ok = tool_int_arg(argc, argv, &i, 8, 1000000, &steps);
        else if (!strcmp(a, "--out")) ok = tool_str_arg(argc, argv, &i, &dir);
        else if (!strcmp(a, "--data")) ok = tool_str_arg(argc, argv, &i, &data);
        else if (!strcmp(a, "--threads")) ok = tool_int_arg(argc, argv, &i, 0, 1024, &threads);
        else if (!strcmp(a, "--seed")) ok = tool_int_arg(argc, argv, &i, 0, 1LL << 62, &seed);
        else {
            fprintf(stderr, "bitgrad demo lm: unknown option %s (see --help)\n", a);
            return 2;
        }
        if (!ok) return 2;
    }
    if (!tool_make_dir(dir)) return 1;
    bg_set_num_threads((int)threads);
    char teacher[512], student[512], tlog[512], slog[512], tpng[512], sdir[512], sched[128];
    snprintf(teacher, sizeof teacher, "%s/teacher.safetensors", dir);
    snprintf(student, sizeof student, "%s/student.safetensors", dir);
    snprintf(tlog, sizeof tlog, "%s/teacher.jsonl", dir);
    snprintf(slog, sizeof slog, "%s/student.jsonl", dir);
    snprintf(tpng, sizeof tpng, "%s/teacher-training.png", dir);
    snprintf(sdir, sizeof sdir, "%s/student-plots", dir);
    // Four equal phases over the student's steps.
    snprintf(sched, sizeof sched, "int8@0,int4@%lld,int2@%lld,ternary@%lld", steps / 4, steps / 2, 3 * steps / 4);
    lm_opts o = lm_defaults();
    o.data = data, o.seed = (uint64_t)seed, o.steps = steps, o.batch = 16, o.warmup = steps / 10 + 1;
    o.eval_every = steps / 4, o.eval_batches = 8, o.lr = 3e-3f, o.quiet = true;
    o.cfg.d_model = 128, o.cfg.n_layers = 4, o.cfg.n_heads = 4, o.cfg.d_ff = 384;
    double t0 = tool_now(), t_val = 0, s_val = 0;
    printf("1/3 fp32 teacher: TransformerLM d 128, 4 layers, 4 heads, d_ff 384, ctx 128; %lld steps of 16 x 128 bytes\n",
           steps);
    lm_opts t = o;
    t.out = teacher, t.log = tlog;
    if (lm_run_train(t, &t_val) != 0) return 1;
    printf("2/3 ternary student from the teacher's weights: schedule %s, distilled (T 2, alpha 0.5)\n", sched);
    lm_opts st = o;
    st.out = student, st.log = slog, st.init = teacher, st.teacher = teacher, st.bitnet = true, st.schedule = sched;
    if (lm_run_train(st, &s_val) != 0) return 1;
    printf("3/3 samples (temperature 0.8, seed 0)\n");
    const char *prompt = "And God said, ";
    demo_sample("fp32 teacher", teacher, prompt);
    demo_sample("ternary student", student, prompt);
    bg_plot_files files = {0};
    bool plots = demo_plots(tlog, tpng, slog, sdir, &files);
    printf("\nsummary (validation, fixed windows of the last 10%% of the text)\n");
    printf("  fp32 teacher      %.4f nats/byte  %.4f bits/byte\n", t_val, t_val / log(2.0));
    printf("  ternary student   %.4f nats/byte  %.4f bits/byte  (%+.4f nats)\n", s_val, s_val / log(2.0),
           s_val - t_val);
    printf("  checkpoints %s, %s\n", teacher, student);
    if (plots) {
        printf("  plots %s", tpng);
        for (int i = 0; i < files.n; i++) printf(", %s", files.path[i]);
        printf("\n");
    }
    printf("  %.0f s in all\n", tool_now() - t0);
    return 0;
}

int bg_cmd_lm(int argc, char **argv) {
    const char *sub = argc > 1 ? argv[1] : NULL;
    if (sub && !strcmp(sub, "train")) return lm_train(argc, argv);
    if (sub && !strcmp(sub, "sample")) return lm_sample(argc, argv);
    FILE *f = sub && (!strcmp(sub, "--help") || !strcmp(sub, "-h")) ? stdout : stderr;
    fprintf(f, "usage: bitgrad lm train|sample [options]   (bitgrad lm train --help)\n");
    return f == stdout ? 0 : 2;
}
