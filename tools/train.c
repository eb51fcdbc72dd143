/* train.c — the training loop of `bitgrad demo` and `bitgrad finetune`:
 * bg_train_epoch with a progressive schedule, distillation, a training log
 * and a progress line. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/tools.h"

typedef struct loop {
    const tool_train_opts *o;
    bg_module *model;
    bg_schedule sched;
    bool has_sched;
    bg_quantizer_list *q;
    int epoch;
    int64_t steps_per_epoch;
    double loss_sum, window_sum;   /* this epoch's losses; since the last log record */
    int64_t loss_n, window_n;
    bool tty;
    bg_status log_status;
} loop;

// --- the log ---------------------------------------------------------------------

static void log_check(loop *l, bg_status s) {
    if (s != BG_OK && l->log_status == BG_OK) {
        l->log_status = s;
        fprintf(stderr, "warning: training log: %s (logging stops)\n", bg_last_error());
    }
}

/* The layer path of a quantizer name ("2.weight_quant" -> "2"), as the
 * metrics records name layers. */
static const char *layer_of(const char *quantizer, char *buf, size_t len) {
    const char *dot = strrchr(quantizer, '.');
    size_t n = dot ? (size_t)(dot - quantizer) : strlen(quantizer);
    snprintf(buf, len, "%.*s", (int)n, quantizer);
    return buf;
}

/* Bits of a spec as the log and plots show them: ternary 2 ("1.58"), binary 1. */
static int spec_bits(const bg_quant_spec *s) {
    return s->kind == BG_QUANT_INT ? s->bits : s->kind == BG_QUANT_TERNARY ? 2 : 1;
}

bg_status tool_log_phases(bg_trainlog_writer *log, int64_t step, const bg_quantizer_list *q) {
    bg_status s = BG_OK;
    for (int i = 0; i < q->n && s == BG_OK; i++) {
        if (!q->weights[i]) continue;   // activations follow their own fixed spec
        const bg_quant_spec *sp = bg_quant_state_spec(q->states[i]);
        bool on = bg_quant_state_enabled(q->states[i]);
        const char *name = on ? (sp->kind == BG_QUANT_INT ? NULL : bg_quant_kind_name(sp->kind)) : "fp32";
        char buf[16];
        if (!name) {
            snprintf(buf, sizeof buf, "int%d", sp->bits);
            name = buf;
        }
        char layer[BG_PARAM_NAME_MAX];
        s = bg_trainlog_phase(log, step, layer_of(q->names[i], layer, sizeof layer), name, on ? spec_bits(sp) : 0);
    }
    return s;
}

static void log_phases(loop *l, int64_t step) {
    if (l->o->log && l->log_status == BG_OK) log_check(l, tool_log_phases(l->o->log, step, l->q));
}

/* Histogram of each quantized layer's latent weights with the levels of its
 * current quantizer. */
static void log_histograms(loop *l, int64_t step) {
    if (l->o->log && l->log_status == BG_OK)
        log_check(l, bg_trainlog_model_hists(l->o->log, step, l->model, 64, true));
}

bg_status tool_log_metrics(bg_trainlog_writer *log, int64_t step, bg_module *model, int n_quantizers) {
    int max = n_quantizers;   // a qlayer has at least one quantizer
    bg_qat_layer_metrics *m = malloc(sizeof *m * (size_t)(max + 1));
    if (!m) return bg_set_error(BG_ERR_NOMEM, "out of memory for the metrics of %d quantizers", max);
    int n = bg_qat_metrics(model, m, max);
    bg_status s = bg_trainlog_qat_metrics(log, step, m, n < max ? n : max);
    free(m);
    return s;
}

static void log_metrics(loop *l, int64_t step) {
    if (l->o->log && l->log_status == BG_OK) log_check(l, tool_log_metrics(l->o->log, step, l->model, l->q->n));
}

bool tool_phase_ending(const bg_schedule *sched, const bg_quantizer_list *q, int64_t step) {
    if (sched->last_step < 0) return false;   // not started
    for (int i = 0; i < q->n; i++) {
        int rule = bg_schedule_rule_for(sched, q->names[i]);
        if (rule >= 0 && bg_schedule_phase_at(sched, q->names[i], step) != sched->rules[rule].current) return true;
    }
    return false;
}

// --- the hooks of bg_train_epoch ---------------------------------------------------

static bg_tensor *kd_loss(bg_ctx *ctx, bg_tensor *out, bg_tensor *x, bg_tensor *y, void *user) {
    loop *l = user;
    bg_tensor *t = bg_teacher_forward(ctx, l->o->teacher, x);
    return t ? bg_kd_loss(ctx, out, t, y, l->o->kd_T, l->o->kd_alpha) : NULL;
}


static bg_status before_step(int64_t step, void *user) {
    loop *l = user;
    if (l->q->n && l->o->log && step % TOOL_METRICS_EVERY == TOOL_METRICS_EVERY - 1) bg_model_track_quant(l->model, true);
    if (!l->has_sched) return BG_OK;
    int64_t local = step;   // the optimizer is new: its steps count from 0
    bool first = l->sched.last_step < 0;
    // A phase about to end: its weights and levels go to the histogram figure.
    if (tool_phase_ending(&l->sched, l->q, local)) log_histograms(l, step);
    bool applied = false;
    bg_status s = bg_schedule_apply(&l->sched, local, l->q->states, l->q->names, l->q->weights, l->q->n, &applied);
    if (s != BG_OK) return s;
    if (applied) {
        log_phases(l, step);
        if (!first && !l->o->quiet) {
            if (l->tty) printf("\n");
            printf("  step %lld: schedule moves to %s\n", (long long)step,
                   bg_schedule_spec_name(&l->sched, l->q->names[0], local));
            fflush(stdout);
        }
    }
    return BG_OK;
}

static void after_step(int64_t step, double loss, int64_t batch, void *user) {
    loop *l = user;
    (void)batch;
    if (l->q->n && l->o->log && step % TOOL_METRICS_EVERY == TOOL_METRICS_EVERY - 1) {
        log_metrics(l, step + 1);
        bg_model_track_quant(l->model, false);
    }
    l->loss_sum += loss, l->window_sum += loss;
    l->loss_n++, l->window_n++;
    int every = l->o->log_every > 0 ? l->o->log_every : 10;
    if (l->o->log && l->log_status == BG_OK && (step + 1) % every == 0) {
        log_check(l, bg_trainlog_step(l->o->log, step + 1, l->epoch, l->window_sum / (double)l->window_n, NAN));
        l->window_sum = 0, l->window_n = 0;
    }
    if (l->tty && !l->o->quiet && (l->loss_n % 8 == 0 || l->loss_n == l->steps_per_epoch)) {
        int width = 30, done = (int)(width * l->loss_n / l->steps_per_epoch);
        printf("\r  %s epoch %d/%d [%.*s%*s] %3d%%  loss %.4f", l->o->label, l->epoch + 1, l->o->epochs, done,
               "##############################", width - done, "", (int)(100 * l->loss_n / l->steps_per_epoch),
               l->loss_sum / (double)l->loss_n);
        fflush(stdout);
    }
}

// --- the loop ----------------------------------------------------------------------

static bool fail(bg_ctx *ctx) {
    fprintf(stderr, "%s\n", ctx && bg_ctx_status(ctx) != BG_OK ? bg_ctx_error(ctx) : bg_last_error());
    return false;
}

static bool evaluate(loop *l, bg_ctx *ctx, tool_data *d, double *acc) {
    bool quantized = l->q->n > 0;
    if (quantized) {
        bg_model_set_quant_mode(l->model, BG_QUANT_MODE_EVAL);
        if (l->has_sched && bg_schedule_sync(&l->sched, l->q->states, l->q->names, l->q->n) != BG_OK) return false;
        bg_model_track_quant(l->model, true);
    }
    bg_status s = bg_evaluate(ctx, l->model, d->test_b, acc);
    if (quantized) {
        bg_model_track_quant(l->model, false);
        bg_model_set_quant_mode(l->model, BG_QUANT_MODE_TRAIN);
        if (l->has_sched && bg_schedule_sync(&l->sched, l->q->states, l->q->names, l->q->n) != BG_OK) return false;
    }
    return s == BG_OK;
}

bool tool_train(bg_module *model, tool_data *d, const tool_train_opts *o, tool_train_result *r) {
    loop l = {.o = o, .model = model, .tty = isatty(STDOUT_FILENO)};
    *r = (tool_train_result){0};
    l.steps_per_epoch = bg_batcher_batches(d->train_b);
    if (o->schedule) {
        char buf[BG_SCHEDULE_STR_MAX];
        if (bg_schedule_weights_only(o->schedule, buf, sizeof buf) != BG_OK) return fail(NULL);
        if (bg_schedule_parse(buf, l.steps_per_epoch, &l.sched) != BG_OK) return fail(NULL);
        l.has_sched = true;
    }
    if (!(l.q = bg_model_quantizer_list(model))) return fail(NULL);
    bg_adam_opts ao = BG_ADAM_DEFAULTS;
    ao.lr = o->lr;
    bg_optim *opt = bg_adam_new(model, &ao);
    bg_ctx *ctx = bg_ctx_new(0);
    bool ok = false;
    if (!opt || !ctx) {
        fail(NULL);
        goto done;
    }
    bg_train_opts topts = {.loss = o->teacher ? kd_loss : NULL, .user = &l, .before_step = before_step,
                           .after_step = after_step};
    if (l.q->n) bg_model_set_quant_mode(model, BG_QUANT_MODE_TRAIN);
    for (l.epoch = 0; l.epoch < o->epochs; l.epoch++) {
        l.loss_sum = 0, l.loss_n = 0;
        double loss, acc, t0 = tool_now();
        if (bg_train_epoch(ctx, model, opt, d->train_b, &topts, &loss) != BG_OK) {
            if (l.tty) printf("\n");
            fail(ctx);
            goto done;
        }
        double t1 = tool_now();
        r->seconds += t1 - t0;
        r->steps = bg_optim_step_count(opt);
        if (!evaluate(&l, ctx, d, &acc)) {
            fail(ctx);
            goto done;
        }
        r->accuracy = acc;
        if (o->log && l.log_status == BG_OK)
            log_check(&l, bg_trainlog_eval(o->log, r->steps, o->label, acc));
        if (l.q->n) log_metrics(&l, r->steps);
        if (!o->quiet) {
            if (l.tty) printf("\r%*s\r", 80, "");
            printf("  %s epoch %d/%d  loss %.4f  test acc %.2f%%  %.1f s", o->label, l.epoch + 1, o->epochs, loss,
                   100 * acc, t1 - t0);
            if (l.has_sched) printf("  [%s]", bg_schedule_spec_name(&l.sched, l.q->names[0], r->steps - 1));
            printf("\n");
            fflush(stdout);
        }
    }
    if (l.q->n) log_histograms(&l, r->steps);
    ok = true;
done:
    bg_ctx_free(ctx);
    bg_optim_free(opt);
    bg_quantizer_list_free(l.q);
    return ok;
}

bool tool_eval_speed(bg_module *model, tool_data *d, double *accuracy, double *images_per_s) {
    bg_ctx *ctx = bg_ctx_new(0);
    if (!ctx) return fail(NULL);
    double t0 = tool_now();
    bg_status s = bg_evaluate(ctx, model, d->test_b, accuracy);
    double t = tool_now() - t0;
    bool ok = s == BG_OK || fail(ctx);
    bg_ctx_free(ctx);
    *images_per_s = t > 0 ? (double)d->test->n / t : 0;
    return ok;
}
