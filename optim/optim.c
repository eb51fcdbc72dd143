/* optim.c — SGD, Adam and AdamW over a module's flat buffers (one kernel call
 * per contiguous run of trainable parameters: one call when nothing is
 * frozen), and gradient-norm clipping. Calls layers/ (flat access), kernels/
 * (adam_update, sgd_update, scale) and tensor/. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "optim/optim.h"

typedef enum optim_kind { OPTIM_SGD, OPTIM_ADAM, OPTIM_ADAMW } optim_kind;

struct bg_optim {
    optim_kind kind;
    bg_module *module;
    float *params, *grads;   /* the module's flat buffers when the optimizer was made */
    int64_t n;               /* their length (padding included) */
    float lr;
    bool has_schedule;
    bg_lr_schedule schedule;
    int64_t steps;
    bool skip_finite_check;  /* bg_optim_set_check_finite(o, false) */
    bool *no_decay;          /* per parameter: true = weight decay 0 (bg_optim_decay_only); NULL = all decay */
    bg_sgd_opts sgd;
    bg_adam_opts adam;
    float *state[2];         /* SGD: momentum_buffer; Adam(W): exp_avg, exp_avg_sq */
    int n_state;
};

static const char *kind_name(optim_kind k) {
    switch (k) {
    case OPTIM_SGD: return "SGD";
    case OPTIM_ADAM: return "Adam";
    case OPTIM_ADAMW: return "AdamW";
    }
    return "optim";
}

/* The lower-case name used in error messages, as the constructors' ("adam:"). */
static const char *who_name(optim_kind k) {
    switch (k) {
    case OPTIM_SGD: return "sgd";
    case OPTIM_ADAM: return "adam";
    case OPTIM_ADAMW: return "adamw";
    }
    return "optim";
}

static bg_optim *optim_new(optim_kind kind, bg_module *m, const char *who, int n_state) {
    if (!m) {
        bg_set_error(BG_ERR_ARG, "%s: module is NULL", who);
        return NULL;
    }
    int64_t n;
    float *p = bg_module_flat_params(m, &n);
    int64_t ng;
    float *g = bg_module_flat_grads(m, &ng);
    if (!p || !g || n == 0) {
        bg_set_error(BG_ERR_STATE, "%s: the %s has no parameters (or is not finalized)", who,
                     bg_module_kind(m));
        return NULL;
    }
    bg_optim *o = bg_aligned_alloc(sizeof *o);
    if (!o) {
        bg_set_error(BG_ERR_NOMEM, "%s: out of memory", who);
        return NULL;
    }
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->module = m;
    o->params = p;
    o->grads = g;
    o->n = n;
    for (int i = 0; i < n_state; i++) {
        o->state[i] = bg_aligned_alloc((size_t)n * sizeof(float));
        if (!o->state[i]) {
            bg_optim_free(o);
            bg_set_error(BG_ERR_NOMEM, "%s: cannot allocate %lld floats of state", who, (long long)n);
            return NULL;
        }
        memset(o->state[i], 0, (size_t)n * sizeof(float));
        o->n_state = i + 1;
    }
    o->n_state = n_state;
    return o;
}

void bg_optim_free(bg_optim *o) {
    if (!o) return;
    for (int i = 0; i < 2; i++) bg_aligned_free(o->state[i]);
    free(o->no_decay);
    bg_aligned_free(o);
}

/* Like (x >= lo), but false for NaN. */
static bool at_least(float x, float lo) { return x >= lo; }

bg_optim *bg_sgd_new(bg_module *m, const bg_sgd_opts *opts) {
    bg_sgd_opts s = opts ? *opts : BG_SGD_DEFAULTS;
    if (!(s.lr > 0.0f) || !isfinite(s.lr)) {
        bg_set_error(BG_ERR_ARG, "sgd: lr must be positive: %g", (double)s.lr);
        return NULL;
    }
    if (!at_least(s.momentum, 0.0f) || !at_least(s.dampening, 0.0f) || !at_least(s.weight_decay, 0.0f)) {
        bg_set_error(BG_ERR_ARG, "sgd: momentum, dampening and weight_decay must be >= 0: %g, %g, %g",
                     (double)s.momentum, (double)s.dampening, (double)s.weight_decay);
        return NULL;
    }
    if (s.nesterov && (s.momentum <= 0.0f || s.dampening != 0.0f)) {
        bg_set_error(BG_ERR_ARG, "sgd: nesterov needs momentum > 0 and dampening = 0: momentum %g, dampening %g",
                     (double)s.momentum, (double)s.dampening);
        return NULL;
    }
    bg_optim *o = optim_new(OPTIM_SGD, m, "sgd", s.momentum != 0.0f ? 1 : 0);
    if (!o) return NULL;
    o->sgd = s;
    o->lr = s.lr;
    return o;
}

static bg_optim *adam_new(optim_kind kind, bg_module *m, const bg_adam_opts *opts) {
    const char *who = kind == OPTIM_ADAMW ? "adamw" : "adam";
    bg_adam_opts a = opts ? *opts : (kind == OPTIM_ADAMW ? BG_ADAMW_DEFAULTS : BG_ADAM_DEFAULTS);
    if (!(a.lr > 0.0f) || !isfinite(a.lr)) {
        bg_set_error(BG_ERR_ARG, "%s: lr must be positive: %g", who, (double)a.lr);
        return NULL;
    }
    if (!(at_least(a.beta1, 0.0f) && a.beta1 < 1.0f) || !(at_least(a.beta2, 0.0f) && a.beta2 < 1.0f)) {
        bg_set_error(BG_ERR_ARG, "%s: betas must be in [0,1): %g, %g", who, (double)a.beta1,
                     (double)a.beta2);
        return NULL;
    }
    if (!at_least(a.eps, 0.0f) || !at_least(a.weight_decay, 0.0f)) {
        bg_set_error(BG_ERR_ARG, "%s: eps and weight_decay must be >= 0: %g, %g", who, (double)a.eps,
                     (double)a.weight_decay);
        return NULL;
    }
    bg_optim *o = optim_new(kind, m, who, 2);
    if (!o) return NULL;
    o->adam = a;
    o->lr = a.lr;
    return o;
}

bg_optim *bg_adam_new(bg_module *m, const bg_adam_opts *opts) { return adam_new(OPTIM_ADAM, m, opts); }
bg_optim *bg_adamw_new(bg_module *m, const bg_adam_opts *opts) { return adam_new(OPTIM_ADAMW, m, opts); }

const char *bg_optim_kind(const bg_optim *o) { return o ? kind_name(o->kind) : ""; }

// ---------------------------------------------------------------------------
// the step

/* Applies the update to floats [a, b) of the flat buffers. */
static void update_range(const bg_kernels *k, bg_optim *o, float lr, bool decay, int64_t a, int64_t b) {
    int64_t n = b - a;
    if (n <= 0) return;
    if (o->kind == OPTIM_SGD) {
        const bg_sgd_opts *s = &o->sgd;
        k->sgd_update(o->params + a, o->grads + a, o->state[0] ? o->state[0] + a : NULL, n, lr,
                      s->momentum, s->dampening, decay ? s->weight_decay : 0.0f, s->nesterov, o->steps == 0);
    } else {
        const bg_adam_opts *s = &o->adam;
        // Bias corrections of step t = steps + 1, in double like PyTorch's
        // Python scalars.
        double t = (double)(o->steps + 1);
        float bc1 = (float)(1.0 - pow((double)s->beta1, t));
        float bc2 = (float)(1.0 - pow((double)s->beta2, t));
        k->adam_update(o->params + a, o->grads + a, o->state[0] + a, o->state[1] + a, n, lr, s->beta1,
                       s->beta2, s->eps, decay ? s->weight_decay : 0.0f, o->kind == OPTIM_ADAMW, bc1, bc2);
    }
}

/* Names the first non-finite gradient (the flat buffer holds one at i). */
static bg_status nonfinite_error(const bg_optim *o, int64_t i) {
    const bg_module *m = o->module;
    const char *name = "padding";
    int64_t at = i;
    for (int p = 0; p < bg_module_param_count(m); p++) {
        int64_t off = bg_module_param_offset(m, p) / (int64_t)sizeof(float);
        if (i >= off && i < off + bg_numel(bg_module_param(m, p))) {
            name = bg_module_param_name(m, p);
            at = i - off;
        }
    }
    return bg_set_error(BG_ERR_NAN,
                        "%s: the gradient of %s is %g at element %lld; nothing was updated (a non-finite gradient "
                        "stops training: look for a NaN/Inf input, weight or loss, or lower the lr)",
                        who_name(o->kind), name, isnan(o->grads[i]) ? (double)NAN : (double)o->grads[i],
                        (long long)at);
}

bg_status bg_optim_decay_only(bg_optim *o, bool (*decays)(const char *name, const bg_tensor *p, void *user),
                              void *user) {
    if (!o || !decays) return bg_set_error(BG_ERR_ARG, "optim_decay_only: %s is NULL", o ? "decays" : "optimizer");
    int count = bg_module_param_count(o->module);
    bool *mask = calloc((size_t)(count ? count : 1), sizeof *mask);
    if (!mask) return bg_set_error(BG_ERR_NOMEM, "optim_decay_only: out of memory");
    for (int i = 0; i < count; i++)
        mask[i] = !decays(bg_module_param_name(o->module, i), bg_module_param(o->module, i), user);
    free(o->no_decay);
    o->no_decay = mask;
    return BG_OK;
}

void bg_optim_set_check_finite(bg_optim *o, bool on) {
    if (o) o->skip_finite_check = !on;
}

bg_status bg_optim_step(bg_optim *o) {
    if (!o) return bg_set_error(BG_ERR_ARG, "optim_step: optimizer is NULL");
    int64_t n;
    float *p = bg_module_flat_params(o->module, &n);
    if (p != o->params || n != o->n)
        return bg_set_error(BG_ERR_STATE,
                            "%s: the %s was finalized again after the optimizer was made; make a new optimizer",
                            who_name(o->kind), bg_module_kind(o->module));
    const bg_kernels *k = bg_kernels_get();
    if (!o->skip_finite_check) {
        int64_t bad = k->first_nonfinite(o->grads, o->n);
        if (bad >= 0) return nonfinite_error(o, bad);
    }
    if (o->has_schedule) o->lr = bg_lr_at(&o->schedule, o->steps);
    const bg_module *m = o->module;
    int count = bg_module_param_count(m);
    bool uniform = !o->no_decay;
    for (int i = 0; i < count && uniform; i++) uniform = bg_module_param(m, i)->requires_grad;
    if (uniform) {
        update_range(k, o, o->lr, true, 0, o->n);   // padding is zero and stays zero
    } else {
        // Runs of consecutive parameters alike (trainable, decayed or not),
        // each up to the next parameter's offset so its padding goes with it.
        int64_t run = -1;
        int kind = 0;   // 0 frozen, 1 trainable without decay, 2 trainable with decay
        for (int i = 0; i <= count; i++) {
            int ki = i == count ? -1
                     : !bg_module_param(m, i)->requires_grad ? 0
                     : o->no_decay && o->no_decay[i] ? 1 : 2;
            int64_t off = i < count ? bg_module_param_offset(m, i) / (int64_t)sizeof(float) : o->n;
            if (run >= 0 && ki != kind) {
                update_range(k, o, o->lr, kind == 2, run, off);
                run = -1;
            }
            if (ki > 0 && run < 0) run = off, kind = ki;
        }
    }
    o->steps++;
    return BG_OK;
}

void bg_optim_zero_grad(bg_optim *o) {
    if (o) bg_module_zero_grad(o->module);
}

float bg_optim_lr(const bg_optim *o) {
    if (!o) return 0.0f;
    return o->has_schedule ? bg_lr_at(&o->schedule, o->steps) : o->lr;
}

void bg_optim_set_lr(bg_optim *o, float lr) {
    if (!o) return;
    o->lr = lr;
    o->has_schedule = false;
}

bg_status bg_optim_set_schedule(bg_optim *o, const bg_lr_schedule *s) {
    if (!o) return bg_set_error(BG_ERR_ARG, "optim_set_schedule: optimizer is NULL");
    if (s && bg_lr_schedule_check(s) != BG_OK) return bg_last_status();
    o->has_schedule = s != NULL;
    if (s) o->schedule = *s;
    return BG_OK;
}

void bg_optim_get_opts(const bg_optim *o, bg_sgd_opts *sgd, bg_adam_opts *adam) {
    if (!o) return;
    if (sgd) *sgd = o->sgd;
    if (adam) *adam = o->adam;
}

bool bg_optim_get_schedule(const bg_optim *o, bg_lr_schedule *s) {
    if (!o || !o->has_schedule) return false;
    if (s) *s = o->schedule;
    return true;
}

int64_t bg_optim_step_count(const bg_optim *o) { return o ? o->steps : 0; }

bg_status bg_optim_set_step_count(bg_optim *o, int64_t steps) {
    if (!o) return bg_set_error(BG_ERR_ARG, "optim_set_step_count: optimizer is NULL");
    if (steps < 0)
        return bg_set_error(BG_ERR_ARG, "optim_set_step_count: steps must be >= 0: %lld", (long long)steps);
    o->steps = steps;
    return BG_OK;
}

int bg_optim_state_count(const bg_optim *o) { return o ? o->n_state : 0; }

float *bg_optim_state(const bg_optim *o, int i, const char **name, int64_t *n) {
    if (!o || i < 0 || i >= o->n_state) {
        if (name) *name = NULL;
        if (n) *n = 0;
        return NULL;
    }
    if (name) *name = o->kind == OPTIM_SGD ? "momentum_buffer" : i == 0 ? "exp_avg" : "exp_avg_sq";
    if (n) *n = o->n;
    return o->state[i];
}

// ---------------------------------------------------------------------------
// gradient norm

static double sum_squares(const float *g, int64_t n) {
    // Four partial sums in a fixed order: deterministic, and not one long
    // dependency chain.
    double s[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s[0] += (double)g[i] * g[i];
        s[1] += (double)g[i + 1] * g[i + 1];
        s[2] += (double)g[i + 2] * g[i + 2];
        s[3] += (double)g[i + 3] * g[i + 3];
    }
    for (; i < n; i++) s[0] += (double)g[i] * g[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

float bg_grad_norm(const bg_module *m) {
    if (!m) {
        bg_set_error(BG_ERR_ARG, "grad_norm: module is NULL");
        return -1.0f;
    }
    int64_t n;
    const float *g = bg_module_flat_grads(m, &n);
    return g ? (float)sqrt(sum_squares(g, n)) : 0.0f;
}

float bg_clip_grad_norm(bg_module *m, float max_norm) {
    if (!m) {
        bg_set_error(BG_ERR_ARG, "clip_grad_norm: module is NULL");
        return -1.0f;
    }
    if (!(max_norm > 0.0f)) {
        bg_set_error(BG_ERR_ARG, "clip_grad_norm: max_norm must be positive: %g", (double)max_norm);
        return -1.0f;
    }
    int64_t n;
    float *g = bg_module_flat_grads(m, &n);
    if (!g) return 0.0f;
    float norm = (float)sqrt(sum_squares(g, n));
    // torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1 (f32).
    float coef = max_norm / (norm + 1e-6f);
    if (coef < 1.0f) bg_kernels_get()->scale(g, g, coef, n);
    return norm;
}
