/*
 * optim — SGD (momentum, dampening, Nesterov, weight decay), Adam, AdamW,
 * learning-rate schedules (constant, step, cosine with linear warm-up) and
 * gradient-norm clipping, over a module's flat parameter and grad buffers.
 *
 *     bg_adam_opts ao = BG_ADAM_DEFAULTS;                 // lr 1e-3, PyTorch's
 *     bg_optim *opt = bg_adam_new(model, &ao);           // after the model is built
 *     bg_lr_schedule sched = bg_lr_cosine(1e-3f, 100, 5000, 0.0f);
 *     bg_optim_set_schedule(opt, &sched);                 // optional
 *     for (int64_t step = 0; step < 5000; step++) {
 *         bg_tensor *loss = bg_cross_entropy(ctx, bg_module_forward(ctx, model, x), y, NULL);
 *         bg_backward(ctx, loss);
 *         float norm = bg_clip_grad_norm(model, 1.0f);    // optional
 *         bg_optim_step(opt);                             // one flat kernel call
 *         bg_optim_zero_grad(opt); bg_ctx_reset(ctx);
 *     }
 *     bg_optim_free(opt);
 *
 * Semantics are PyTorch 1.13's (torch.optim, foreach=False), so a trajectory
 * matches PyTorch's from the same initial weights:
 *   SGD:   g = grad + wd*p; first step: buf = g, later buf = momentum*buf +
 *          (1-dampening)*g; g = nesterov ? g + momentum*buf : buf; p -= lr*g.
 *   Adam:  g = grad + wd*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
 *          p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps), t = 1, 2, ...
 *   AdamW: p *= 1 - lr*wd (decoupled), then Adam with no coupled decay.
 * Frozen parameters (requires_grad false) are skipped entirely, as PyTorch
 * skips parameters whose grad is None. amsgrad and maximize are not
 * supported.
 *
 * Memory: moment / momentum buffers are 64-byte aligned, laid out exactly like
 * the module's flat params (bg_module_flat_params, padding included),
 * allocated once by the constructor and freed by bg_optim_free; a step
 * allocates nothing. An optimizer keeps pointers into its module: create it
 * after the model is complete (bg_module_finalize), free it before the model.
 */
#ifndef BG_OPTIM_H
#define BG_OPTIM_H

#include "layers/layers.h"
#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------
// options

typedef struct bg_sgd_opts {
    float lr;             /* > 0 */
    float momentum;       /* >= 0; 0 = plain SGD */
    float dampening;      /* >= 0 */
    float weight_decay;   /* >= 0, coupled (L2 added to the gradient) */
    bool nesterov;        /* needs momentum > 0 and dampening == 0 */
} bg_sgd_opts;
#define BG_SGD_DEFAULTS \
    ((bg_sgd_opts){.lr = 0.01f, .momentum = 0.0f, .dampening = 0.0f, .weight_decay = 0.0f, .nesterov = false})

typedef struct bg_adam_opts {
    float lr;             /* > 0 */
    float beta1, beta2;   /* in [0,1) */
    float eps;            /* >= 0 */
    float weight_decay;   /* >= 0; coupled for Adam, decoupled for AdamW */
} bg_adam_opts;
#define BG_ADAM_DEFAULTS \
    ((bg_adam_opts){.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.0f})
#define BG_ADAMW_DEFAULTS \
    ((bg_adam_opts){.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 1e-2f})

// ---------------------------------------------------------------------------
// learning-rate schedules: plain values, no allocation. `step` counts the
// optimizer steps already taken (0 for the first step).

typedef enum bg_lr_kind {
    BG_LR_CONSTANT = 0,   /* lr = base_lr */
    BG_LR_STEP,           /* lr = base_lr * gamma^floor(step / step_size) (PyTorch StepLR) */
    BG_LR_COSINE,         /* linear warm-up, then cosine decay to min_lr: see bg_lr_cosine */
    BG_LR_KIND_COUNT
} bg_lr_kind;

typedef struct bg_lr_schedule {
    bg_lr_kind kind;
    float base_lr;
    int64_t step_size;      /* STEP: > 0 */
    float gamma;            /* STEP */
    int64_t warmup_steps;   /* COSINE: >= 0 */
    int64_t total_steps;    /* COSINE: warm-up included, > warmup_steps */
    float min_lr;           /* COSINE */
} bg_lr_schedule;

bg_lr_schedule bg_lr_constant(float lr);
bg_lr_schedule bg_lr_step(float lr, int64_t step_size, float gamma);
/* step <  warmup:        lr * (step + 1) / warmup
 * warmup <= step < total: min_lr + (lr - min_lr) * (1 + cos(pi * (step - warmup)
 *                                                   / (total - warmup))) / 2
 * step >= total:          min_lr
 * (computed in double; with warmup 0 this is PyTorch's CosineAnnealingLR
 * with T_max = total, eta_min = min_lr). */
bg_lr_schedule bg_lr_cosine(float lr, int64_t warmup_steps, int64_t total_steps, float min_lr);

/* BG_OK, or BG_ERR_ARG with one sentence naming the bad field, e.g.
 * "lr_schedule: cosine needs total_steps > warmup_steps: total 10, warmup 10"
 * (step_size <= 0, total <= warmup, warmup < 0, an unknown kind, a
 * non-finite or negative rate). */
bg_status bg_lr_schedule_check(const bg_lr_schedule *s);
/* The learning rate at step (>= 0; steps < 0 count as 0). NaN for NULL or a
 * schedule that bg_lr_schedule_check refuses: a bad schedule never turns
 * quietly into a constant rate. */
float bg_lr_at(const bg_lr_schedule *s, int64_t step);

// ---------------------------------------------------------------------------
// optimizers

typedef struct bg_optim bg_optim;   /* opaque */

/* Optimizers over every parameter of m's subtree (m may be a sub-module).
 * opts NULL = the defaults above. NULL + bg_last_error() on bad options
 * ("sgd: nesterov needs momentum > 0 and dampening = 0: momentum 0,
 * dampening 0"), a module without parameters or not finalized, or out of
 * memory. */
bg_optim *bg_sgd_new(bg_module *m, const bg_sgd_opts *opts);
bg_optim *bg_adam_new(bg_module *m, const bg_adam_opts *opts);
bg_optim *bg_adamw_new(bg_module *m, const bg_adam_opts *opts);
/* NULL is a no-op. Does not free the module. */
void bg_optim_free(bg_optim *o);

/* "SGD", "Adam" or "AdamW". */
const char *bg_optim_kind(const bg_optim *o);

/* One update from the current grads (which it does not zero). When nothing
 * is frozen this is one kernel call over the whole flat buffer; frozen
 * parameters split it into runs. With a schedule, the lr is first set to
 * bg_lr_at(schedule, step_count). Then step_count += 1. BG_ERR_STATE when
 * the module was finalized again after the optimizer was made (its buffers
 * moved); BG_ERR_ARG for NULL. Allocates nothing.
 * First, by default, every gradient must be finite: a NaN or infinity fails
 * with BG_ERR_NAN before anything is updated, naming the step, the
 * parameter and the element ("adam: the gradient of 0.weight is nan at
 * element 5; nothing was updated ..."; bg_train_epoch adds the step). The check is one vectorised pass
 * over the flat grads (bench/train_step prints its cost). */
bg_status bg_optim_step(bg_optim *o);
/* Parameter groups for weight decay: from now on only the parameters for
 * which decays(name, p, user) is true get the optimizer's weight decay; the
 * others get none (PyTorch's two param groups, e.g. projection matrices
 * decayed, embeddings and norms not). A configuration, not state: a
 * checkpoint does not hold it; set it again after building the optimizer. */
bg_status bg_optim_decay_only(bg_optim *o, bool (*decays)(const char *name, const bg_tensor *p, void *user),
                              void *user);
/* Turns that check off (false) or on again (true, the default). */
void bg_optim_set_check_finite(bg_optim *o, bool on);
/* bg_module_zero_grad on the optimizer's module. */
void bg_optim_zero_grad(bg_optim *o);

/* The lr of the next step (the schedule's when one is set) and a manual
 * override (which detaches any schedule). */
float bg_optim_lr(const bg_optim *o);
void bg_optim_set_lr(bg_optim *o, float lr);
/* Copies *s; the lr of each step becomes bg_lr_at(s, step_count). NULL
 * detaches. BG_ERR_ARG (nothing changed) for a NULL optimizer or a schedule
 * that bg_lr_schedule_check refuses. */
bg_status bg_optim_set_schedule(bg_optim *o, const bg_lr_schedule *s);
/* For checkpoints: the options the optimizer was made with (*sgd for SGD,
 * *adam for Adam/AdamW; either may be NULL), and its lr schedule (true and
 * *s filled, or false when none is attached). */
void bg_optim_get_opts(const bg_optim *o, bg_sgd_opts *sgd, bg_adam_opts *adam);
bool bg_optim_get_schedule(const bg_optim *o, bg_lr_schedule *s);

/* Steps taken (PyTorch's state "step"); settable for resuming a checkpoint.
 * SGD's momentum buffer is taken as initialised once step_count > 0. */
int64_t bg_optim_step_count(const bg_optim *o);
bg_status bg_optim_set_step_count(bg_optim *o, int64_t steps);

/* State buffers, for checkpoints: SGD with momentum has one,
 * "momentum_buffer"; Adam/AdamW have "exp_avg" and "exp_avg_sq" (PyTorch's
 * names). Each is laid out like bg_module_flat_params of the module (same
 * length n, same per-parameter offsets, bg_module_param_offset). Returns the
 * buffer (writable, owned by o) and sets *name and *n, or NULL when i is out
 * of range. */
int bg_optim_state_count(const bg_optim *o);
float *bg_optim_state(const bg_optim *o, int i, const char **name, int64_t *n);

// ---------------------------------------------------------------------------
// gradient norm

/* The global L2 norm of every gradient of m's subtree (frozen ones included;
 * they are zero unless something wrote them), accumulated in double over the
 * flat grad buffer. 0 for a module without parameters, -1 (+ bg_last_error)
 * for NULL. */
float bg_grad_norm(const bg_module *m);
/* torch.nn.utils.clip_grad_norm_(params, max_norm): computes the norm as
 * above; when norm > max_norm scales every grad by max_norm / (norm + 1e-6).
 * Returns the norm before clipping, or -1 (+ bg_last_error) when m is NULL or
 * max_norm <= 0. */
float bg_clip_grad_norm(bg_module *m, float max_norm);

#ifdef __cplusplus
}
#endif
#endif /* BG_OPTIM_H */
