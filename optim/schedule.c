/* schedule.c — learning-rate schedules as plain values: constant, step decay
 * (PyTorch StepLR), cosine with linear warm-up. Pure arithmetic; calls
 * nothing. */
#include <math.h>

#include "optim/optim.h"

bg_lr_schedule bg_lr_constant(float lr) {
    return (bg_lr_schedule){.kind = BG_LR_CONSTANT, .base_lr = lr};
}

bg_lr_schedule bg_lr_step(float lr, int64_t step_size, float gamma) {
    return (bg_lr_schedule){.kind = BG_LR_STEP, .base_lr = lr, .step_size = step_size, .gamma = gamma};
}

bg_lr_schedule bg_lr_cosine(float lr, int64_t warmup_steps, int64_t total_steps, float min_lr) {
    return (bg_lr_schedule){.kind = BG_LR_COSINE, .base_lr = lr, .warmup_steps = warmup_steps,
                            .total_steps = total_steps, .min_lr = min_lr};
}

bg_status bg_lr_schedule_check(const bg_lr_schedule *s) {
    if (!s) return bg_set_error(BG_ERR_ARG, "lr_schedule: schedule is NULL");
    if (!isfinite(s->base_lr) || s->base_lr < 0.0f)
        return bg_set_error(BG_ERR_ARG, "lr_schedule: base_lr must be finite and >= 0: %g", (double)s->base_lr);
    switch (s->kind) {
    case BG_LR_CONSTANT: return BG_OK;
    case BG_LR_STEP:
        if (s->step_size <= 0)
            return bg_set_error(BG_ERR_ARG, "lr_schedule: step needs step_size > 0: %lld", (long long)s->step_size);
        if (!isfinite(s->gamma) || s->gamma < 0.0f)
            return bg_set_error(BG_ERR_ARG, "lr_schedule: step needs a finite gamma >= 0: %g", (double)s->gamma);
        return BG_OK;
    case BG_LR_COSINE:
        if (s->warmup_steps < 0)
            return bg_set_error(BG_ERR_ARG, "lr_schedule: cosine needs warmup_steps >= 0: %lld",
                                (long long)s->warmup_steps);
        if (s->total_steps <= s->warmup_steps)
            return bg_set_error(BG_ERR_ARG, "lr_schedule: cosine needs total_steps > warmup_steps: total %lld, warmup %lld",
                                (long long)s->total_steps, (long long)s->warmup_steps);
        if (!isfinite(s->min_lr) || s->min_lr < 0.0f)
            return bg_set_error(BG_ERR_ARG, "lr_schedule: cosine needs a finite min_lr >= 0: %g", (double)s->min_lr);
        return BG_OK;
    default: return bg_set_error(BG_ERR_ARG, "lr_schedule: unknown kind %d", (int)s->kind);
    }
}

float bg_lr_at(const bg_lr_schedule *s, int64_t step) {
    // A pure function: check without touching the thread's last error.
    if (!s || s->kind < 0 || s->kind >= BG_LR_KIND_COUNT || !isfinite(s->base_lr) || s->base_lr < 0.0f ||
        (s->kind == BG_LR_STEP && (s->step_size <= 0 || !isfinite(s->gamma) || s->gamma < 0.0f)) ||
        (s->kind == BG_LR_COSINE && (s->warmup_steps < 0 || s->total_steps <= s->warmup_steps ||
                                     !isfinite(s->min_lr) || s->min_lr < 0.0f)))
        return NAN;
    if (step < 0) step = 0;
    double base = s->base_lr;
    switch (s->kind) {
    case BG_LR_STEP: return (float)(base * pow((double)s->gamma, (double)(step / s->step_size)));
    case BG_LR_COSINE: {
        int64_t w = s->warmup_steps, total = s->total_steps;
        if (step < w) return (float)(base * (double)(step + 1) / (double)w);
        if (step >= total) return s->min_lr;
        double progress = (double)(step - w) / (double)(total - w);
        double lo = s->min_lr;
        return (float)(lo + (base - lo) * 0.5 * (1.0 + cos(3.14159265358979323846 * progress)));
    }
    default: return s->base_lr;
    }
}
