/*
 * qat — what walks a model for quantization-aware training: progressive
 * bit-width schedules, distillation, per-layer quantization metrics. The
 * quantizers themselves (specs, states, range math) are in quant/quant.h,
 * the quantized layers in layers/layers.h.
 */
#ifndef BG_QAT_H
#define BG_QAT_H

#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>

#include "layers/layers.h"
#include "quant/quant.h"
#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------
// progressive schedules (schedule.c)
//
// A schedule maps the training step to each quantizer's spec. Its string:
//     schedule := rule (';' rule)*
//     rule     := ['[' PATTERN ']'] phase (',' phase)*
//     phase    := SPEC '@' WHEN        WHEN := STEPS | EPOCHS 'ep'
// e.g. "fp32@0,int8@100,int4@200,int2@300,ternary@400;[fc3*]int8@0".
// SPEC is "fp32" (quantizer disabled: fp32 warm-up / delay), a bare kind
// ("int4", "ternary", "binary": only the kind and bits of the layer's current
// spec change, so per-channel, per-group, LSQ ... stay; an observed range
// becomes absmean for ternary / binary and minmax again for an int kind after
// absmean; a minmax or moving_minmax range becomes an MSE search (mse, with
// the spec's grid and momentum) for an int kind of 4 bits or fewer, since
// min-max ranges waste most low-bit levels on outliers; it costs a grid
// search over a sample of the input per forward. Learned LSQ steps, which
// stay LSQ and are re-initialised from the weights at each transition, are
// cheaper and were more accurate in README's progressive rows)
// or a full spec string ("int4:per_group=64:lsq", replacing the
// spec). Before a rule's first phase
// the layer is fp32 (a quantization delay). A layer follows the first rule
// whose PATTERN ('*' any run, '?' one character) matches its name, else the
// rule without a pattern, else the schedule leaves it alone. Phase steps
// increase strictly within a rule; "3ep" is 3 * steps_per_epoch steps.
// The struct is plain data (copy it); bg_schedule_save / bg_schedule_load
// turn it, with its progress, into a short string for checkpoints.

#define BG_SCHEDULE_MAX_RULES 8
#define BG_SCHEDULE_MAX_PHASES 12
#define BG_SCHEDULE_PATTERN_MAX 48
#define BG_SCHEDULE_STR_MAX 4096

typedef struct bg_schedule_phase {
    int64_t at;                          /* first step of the phase */
    bool fp32;                           /* quantizer disabled */
    bool kind_only;                      /* only kind + bits change */
    bg_quant_spec spec;                  /* parsed (kind_only: kind and bits used) */
    char text[BG_QUANT_SPEC_STR_MAX];    /* the spec as written ("int4", "fp32") */
} bg_schedule_phase;

typedef struct bg_schedule_rule {
    char pattern[BG_SCHEDULE_PATTERN_MAX];  /* "" = every layer not matched elsewhere */
    int n_phases;
    bg_schedule_phase phases[BG_SCHEDULE_MAX_PHASES];
    int current;                         /* phase last applied; -1 = before the first; -2 = never applied */
} bg_schedule_rule;

typedef struct bg_schedule {
    int n_rules;
    bg_schedule_rule rules[BG_SCHEDULE_MAX_RULES];
    int64_t last_step;                   /* step of the last apply; -1 = never */
} bg_schedule;

/* Parses str into *out (progress reset). steps_per_epoch converts "ep"
 * boundaries (0 when none are used). BG_ERR_ARG + bg_last_error() naming
 * the token, e.g. `schedule: missing '@' in "int8"`; *out untouched then. */
bg_status bg_schedule_parse(const char *str, int64_t steps_per_epoch, bg_schedule *out);
/* Writes str with "[*weight_quant]" put before every rule that has no
 * [PATTERN], so that a plain schedule ("int8@0,int4@1ep") drives the weight
 * quantizers and leaves the activations' specs alone (what the command line
 * programs take). BG_ERR_ARG + bg_last_error() when buf (len bytes) is too
 * small. */
bg_status bg_schedule_weights_only(const char *str, char *buf, size_t len);
/* Canonical string (boundaries in steps); parses back to the same phases. */
int bg_schedule_format(const bg_schedule *s, char *buf, size_t len);

/* The rule layer `name` follows (-1: none), its phase at step (-1: before
 * the first phase, fp32), the phase's spec text ("fp32" before the first),
 * and the rule's phase boundaries (returns their count, writes at most max). */
int bg_schedule_rule_for(const bg_schedule *s, const char *name);
int bg_schedule_phase_at(const bg_schedule *s, const char *name, int64_t step);
const char *bg_schedule_spec_name(const bg_schedule *s, const char *name, int64_t step);
int bg_schedule_boundaries(const bg_schedule *s, const char *name, int64_t *out, int max);

/* Brings n quantizers (states[i] named names[i]) to their phase at step.
 * For each rule whose phase differs from the one it last applied, every
 * layer following it transitions: fp32 disables the state; otherwise the
 * new spec is set (bg_quant_state_set_spec: observers reset, learned
 * parameters marked for re-init), the state enabled, and when weights[i]
 * is given (weights may be NULL, entries may be NULL: activations) the
 * ranges / LSQ steps are re-initialised from it now (init_from).
 * *transitioned (may be NULL) tells whether anything changed (log it).
 * The first call always applies. Errors (an incompatible spec for a state)
 * return the state's status with bg_last_error() prefixed by
 * "schedule: layer NAME at step S: ". Call it with the same layers each step. */
bg_status bg_schedule_apply(bg_schedule *s, int64_t step, bg_quant_state *const *states,
                            const char *const *names, const bg_tensor *const *weights, int n,
                            bool *transitioned);

/* Schedule + progress as one line ("<format>#<last_step>:<cur0>:<cur1>...")
 * and back: a restored schedule takes the same decisions as the original. */
int bg_schedule_save(const bg_schedule *s, char *buf, size_t len);
bg_status bg_schedule_load(const char *str, bg_schedule *out);
/* After a restore: puts each state in its rule's current phase (enabled or
 * not, the phase's spec) without re-initialising anything when the spec is
 * already right (a checkpoint's restored ranges and steps stay). Layers of
 * a rule never applied are left alone. Errors as for apply. */
bg_status bg_schedule_sync(const bg_schedule *s, bg_quant_state *const *states, const char *const *names, int n);

// ---------------------------------------------------------------------------
// distillation (distill.c)

struct bg_module;

/* Hinton KD: (1-alpha) * CE(labels, student) + alpha * T^2 *
 * KL(softmax(teacher/T) || softmax(student/T)), the KL summed over classes
 * and averaged over the batch (PyTorch's KLDivLoss(reduction='batchmean')).
 * student, teacher [N,C] f32; labels [N] i32 (may be NULL when alpha == 1).
 * The teacher gets no gradient (it is detached). Returns [] or NULL + ctx
 * error ("kd_loss: T must be > 0, got 0"). */
bg_tensor *bg_kd_loss(bg_ctx *ctx, bg_tensor *student, bg_tensor *teacher, bg_tensor *labels,
                      float T, float alpha);
/* mean((student - teacher)^2) with the teacher detached. */
bg_tensor *bg_logit_mse_loss(bg_ctx *ctx, bg_tensor *student, bg_tensor *teacher);
/* sum_i w_i * mean((s_i - t_i)^2) over n pairs (weights NULL = all 1),
 * teachers detached; pairs must have equal shapes. */
bg_tensor *bg_feature_mse_loss(bg_ctx *ctx, bg_tensor *const *students, bg_tensor *const *teachers,
                               const float *weights, int n);
/* A copy of x with no tape history and no grad (an arena tensor). */
bg_tensor *bg_detach(bg_ctx *ctx, bg_tensor *x);

/* Runs a frozen teacher on ctx with grad disabled: nothing is recorded and
 * no gradient reaches the teacher. Returns the output (arena) or NULL. */
bg_tensor *bg_teacher_forward(bg_ctx *ctx, struct bg_module *teacher, bg_tensor *x);
/* bg_sequential_forward_capture (layers/layers.h) runs a student or a
 * teacher and returns its hidden outputs for bg_feature_mse_loss. */

// ---------------------------------------------------------------------------
// metrics (metrics.c): quantization error per layer, cheap enough to log
//
//     bg_model_track_quant(net, true);          // layers/layers.h: sums on each forward
//     ... a training step ...
//     bg_qat_layer_metrics m[16];
//     int n = bg_qat_metrics(net, m, 16);       // also advances the flip reference
//     bg_qat_metrics_print(m, n, stdout);
//
// Definitions: quant/quant.h "quantization error sums".
// Ternary / binary weights: zero fraction = #(q == 0)/n; flip fraction =
// #(level changed)/n between the last tracked forward and the last tracked
// forward seen by the previous bg_qat_metrics call (0 on the first call).

#define BG_QAT_NAME_MAX 128

struct bg_module;   /* layers/layers.h */

typedef struct bg_qat_layer_metrics {
    char name[BG_QAT_NAME_MAX];   /* path in the model ("0", "2.1") */
    const char *kind;             /* "QLinear", "BitLinear", ... (static) */
    int w_bits, a_bits;           /* spec bits (ternary 2, binary 1); 0 = float */
    bool has_weight, has_input;   /* a tracked forward exists for that side */
    bg_quant_error weight, input;
    bool ternary;                 /* weight kind ternary or binary */
    double zero_frac, flip_frac;  /* ternary / binary weights only, else 0 */
} bg_qat_layer_metrics;

/* Fills out[0..min(count, max)) for the quantized layers of model (pre-order,
 * see bg_qlayer_at) and returns their count (call with max 0 to size).
 * Advances each ternary layer's flip reference to its last tracked forward. */
int bg_qat_metrics(struct bg_module *model, bg_qat_layer_metrics *out, int max);
/* One line per layer: name, kind, bits, weight / input SQNR, MSE, cosine,
 * and the zero and flip fractions for ternary layers. */
void bg_qat_metrics_print(const bg_qat_layer_metrics *m, int n, FILE *f);

// ---------------------------------------------------------------------------
// automatic precision (autoquant.c): what a layer costs in an export, and
// the bit-widths that fit a budget with the least predicted loss. The
// predicted loss of a choice is the sum of its layers' sensitivities
// (io/calibrate.h bg_weight_sensitivity: each measured alone).

/* Bytes of a Linear-like layer [rows, cols] in a bitgrad export at spec
 * (NULL: float weights): t2 (ternary, binary; rows padded to 128 weights),
 * i4 (1-4 bits), i8 (5-8 bits) or f32 weights, f32 scales (and zero points
 * when not symmetric), and an f32 bias when `bias`. */
int64_t bg_export_layer_bytes(int64_t rows, int64_t cols, const bg_quant_spec *spec, bool bias);

/* One option per layer, exactly: the least sum of cost[i*n_opt + choice[i]]
 * with sum bytes[i*n_opt + choice[i]] <= budget, by dynamic programming
 * over the budget in units of ceil(budget / 65536) bytes, sizes rounded up,
 * so the choice never exceeds the budget and is optimal when budget <
 * 65536 bytes (in general within one unit per layer of the optimum).
 * BG_ERR_ARG with the smallest possible size when even that does not fit.
 * total_cost / total_bytes may be NULL. */
bg_status bg_budget_solve(int n_layers, int n_opt, const int64_t *bytes, const double *cost, int64_t budget,
                          int *choice, double *total_cost, int64_t *total_bytes);

/* The quality gate's move: the k layers whose cost at their current option
 * is largest (the most sensitive) move up one option (options ordered from
 * fewest to most bits). Returns how many moved; 0 when all are at the top. */
int bg_gate_raise(int n_layers, int n_opt, const double *cost, int *choice, int k);

#ifdef __cplusplus
}
#endif
#endif /* BG_QAT_H */
