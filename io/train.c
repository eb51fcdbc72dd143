/* train.c — the training and evaluation loops over a batcher. Calls
 * autograd/, layers/, optim/ and the batcher; nothing above io/. */
#include <math.h>
#include <stdio.h>

#include "io/io.h"

/* Fails with the ctx's message (or the thread's, for non-ctx calls) and leaves
 * the ctx reset for the caller's next use. */
static bg_status fail_step(bg_ctx *ctx, const char *what, bg_status st) {
    char msg[BG_ERROR_MAX];  // the thread's message is also the output buffer
    if (bg_ctx_status(ctx) != BG_OK) st = bg_ctx_status(ctx);
    snprintf(msg, sizeof msg, "%s", bg_ctx_status(ctx) != BG_OK ? bg_ctx_error(ctx) : bg_last_error());
    bg_set_error(st, "%s: %s", what, msg);
    bg_ctx_reset(ctx);
    return st;
}

/* The same for a failure inside training step `step`, which it names. */
static bg_status fail_at_step(bg_ctx *ctx, int64_t step, bg_status st) {
    char msg[BG_ERROR_MAX];
    if (bg_ctx_status(ctx) != BG_OK) st = bg_ctx_status(ctx);
    snprintf(msg, sizeof msg, "%s", bg_ctx_status(ctx) != BG_OK ? bg_ctx_error(ctx) : bg_last_error());
    bg_set_error(st, "train_epoch: step %lld: %s", (long long)step, msg);
    bg_ctx_reset(ctx);
    return st;
}

bg_status bg_train_epoch(bg_ctx *ctx, bg_module *model, bg_optim *opt, bg_batcher *batches,
                         const bg_train_opts *opts, double *mean_loss) {
    if (!ctx || !model || !opt || !batches || !mean_loss)
        return bg_set_error(BG_ERR_ARG, "train_epoch: ctx, model, optimizer, batches and mean_loss must not be NULL");
    bg_train_opts o = opts ? *opts : (bg_train_opts){0};
    bg_module_train(model, true);
    double loss_sum = 0;
    int64_t seen = 0;
    bg_tensor *x, *y;
    while (bg_batcher_next(batches, ctx, &x, &y)) {
        int64_t step = bg_optim_step_count(opt);
        if (o.before_step) {
            bg_status st = o.before_step(step, o.user);
            if (st != BG_OK) return fail_at_step(ctx, step, st);
        }
        bg_tensor *out = bg_module_forward(ctx, model, x);
        bg_tensor *loss = o.loss ? (out ? o.loss(ctx, out, x, y, o.user) : NULL)
                                 : bg_cross_entropy(ctx, out, y, NULL);
        if (loss && !o.allow_nonfinite_loss && !isfinite(bg_f32(loss)[0])) {
            bg_ctx_fail(ctx, BG_ERR_NAN,
                        "the loss is %g; nothing was updated (a non-finite loss stops training: look "
                        "for a NaN/Inf input or weight, or lower the lr)",
                        isnan(bg_f32(loss)[0]) ? (double)NAN : (double)bg_f32(loss)[0]);   // never "-nan"
            return fail_at_step(ctx, step, BG_ERR_NAN);
        }
        if (!loss || bg_backward(ctx, loss) != BG_OK) return fail_at_step(ctx, step, BG_ERR_STATE);
        bg_status st = bg_optim_step(opt);
        if (st != BG_OK) return fail_at_step(ctx, step, st);
        double batch_loss = (double)bg_f32(loss)[0];
        loss_sum += batch_loss * (double)y->shape[0];
        seen += y->shape[0];
        if (o.after_step) o.after_step(step, batch_loss, y->shape[0], o.user);
        bg_optim_zero_grad(opt);
        bg_ctx_reset(ctx);
    }
    if (bg_ctx_status(ctx) != BG_OK) return fail_step(ctx, "train_epoch", BG_ERR_STATE);
    *mean_loss = seen ? loss_sum / (double)seen : 0.0;
    return BG_OK;
}

/* Index of the largest of n values (the first on ties). */
static int64_t argmax(const float *v, int64_t n) {
    int64_t best = 0;
    for (int64_t k = 1; k < n; k++)
        if (v[k] > v[best]) best = k;
    return best;
}

bg_status bg_evaluate(bg_ctx *ctx, bg_module *model, bg_batcher *batches, double *accuracy) {
    if (!ctx || !model || !batches || !accuracy)
        return bg_set_error(BG_ERR_ARG, "evaluate: ctx, model, batches and accuracy must not be NULL");
    bool was_training = bg_module_is_training(model);
    bg_module_train(model, false);
    bool grad = bg_set_grad_enabled(ctx, false);
    int64_t correct = 0, seen = 0;
    bg_tensor *x, *y;
    while (bg_batcher_next(batches, ctx, &x, &y)) {
        bg_tensor *logits = bg_module_forward(ctx, model, x);   // [B,classes]
        if (!logits) break;
        const int32_t *label = y->data;
        int64_t classes = logits->shape[logits->ndim - 1];
        for (int64_t i = 0; i < y->shape[0]; i++)
            correct += argmax(bg_f32(logits) + i * classes, classes) == label[i];
        seen += y->shape[0];
        bg_ctx_reset(ctx);
    }
    bg_set_grad_enabled(ctx, grad);
    bg_module_train(model, was_training);
    if (bg_ctx_status(ctx) != BG_OK) return fail_step(ctx, "evaluate", BG_ERR_STATE);
    *accuracy = seen ? (double)correct / (double)seen : 0.0;
    return BG_OK;
}
