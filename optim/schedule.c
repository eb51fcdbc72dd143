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

float bg_lr_at(const bg_lr_schedule *s, int64_t step) {
    if (!s) return 0.0f;
    if (step < 0) step = 0;
    double base = s->base_lr;
    switch (s->kind) {
    case BG_LR_CONSTANT: return s->base_lr;
    case BG_LR_STEP:
        if (s->step_size <= 0) return s->base_lr;
        return (float)(base * pow((double)s->gamma, (double)(step / s->step_size)));
    case BG_LR_COSINE: {
        int64_t w = s->warmup_steps < 0 ? 0 : s->warmup_steps, total = s->total_steps;
        if (total <= w) return s->base_lr;
        if (step < w) return (float)(base * (double)(step + 1) / (double)w);
        if (step >= total) return s->min_lr;
        double progress = (double)(step - w) / (double)(total - w);
        double lo = s->min_lr;
        return (float)(lo + (base - lo) * 0.5 * (1.0 + cos(3.14159265358979323846 * progress)));
    }
    default: return s->base_lr;
    }
}
