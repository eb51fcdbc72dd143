/* train.c — the training and evaluation loops over a batcher. Calls
 * autograd/, layers/, optim/, dist/ (data parallel: one allreduce of the
 * gradients per step when started by mpirun) and the batcher; nothing above
 * io/. */
#include <math.h>
#include <stdio.h>

#include "dist/dist.h"
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
static bg_status fail_at_step(bg_ctx *ctx, const char *what, int64_t step, bg_status st) {
    char msg[BG_ERROR_MAX];
    if (bg_ctx_status(ctx) != BG_OK) st = bg_ctx_status(ctx);
    snprintf(msg, sizeof msg, "%s", bg_ctx_status(ctx) != BG_OK ? bg_ctx_error(ctx) : bg_last_error());
    bg_set_error(st, "%s: step %lld: %s", what, (long long)step, msg);
    bg_ctx_reset(ctx);
    return st;
}

bg_tensor *bg_cross_entropy_flat(bg_ctx *ctx, bg_tensor *out, bg_tensor *y) {
    if (!out || !y || out->ndim <= 2) return bg_cross_entropy(ctx, out, y, NULL);
    int64_t C = out->shape[out->ndim - 1];
    bg_tensor *o2 = bg_reshape(ctx, out, 2, (int64_t[]){bg_numel(out) / C, C});
    bg_tensor *y1 = o2 ? bg_reshape(ctx, y, 1, (int64_t[]){bg_numel(y)}) : NULL;
    return y1 ? bg_cross_entropy(ctx, o2, y1, NULL) : NULL;
}

static bg_status train_loop(bg_ctx *ctx, bg_module *model, bg_optim *opt, const bg_batch_source *src,
                            int64_t max_steps, const bg_train_opts *opts, double *mean_loss, const char *what) {
    bg_train_opts o = opts ? *opts : (bg_train_opts){0};
    bg_module_train(model, true);
    double loss_sum = 0;
    int64_t seen = 0;
    bg_tensor *x, *y;
    for (int64_t done = 0; (max_steps < 0 || done < max_steps) && src->next(src->src, ctx, &x, &y); done++) {
        int64_t step = bg_optim_step_count(opt);
        bg_adapt_threads();
        if (o.before_step) {
            bg_status st = o.before_step(step, o.user);
            if (st != BG_OK) return fail_at_step(ctx, what, step, st);
        }
        bg_tensor *out = bg_module_forward(ctx, model, x);
        bg_tensor *loss = o.loss ? (out ? o.loss(ctx, out, x, y, o.user) : NULL) : bg_cross_entropy_flat(ctx, out, y);
        bg_status st = BG_OK;
        if (loss && !o.allow_nonfinite_loss && !isfinite(bg_f32(loss)[0])) {
            bg_ctx_fail(ctx, BG_ERR_NAN,
                        "the loss is %g; nothing was updated (a non-finite loss stops training: look "
                        "for a NaN/Inf input or weight, or lower the lr)",
                        isnan(bg_f32(loss)[0]) ? (double)NAN : (double)bg_f32(loss)[0]);   // never "-nan"
            st = BG_ERR_NAN;
        } else if (!loss || bg_backward(ctx, loss) != BG_OK) {
            st = BG_ERR_STATE;
        }
        double rows = (double)y->shape[0], batch_loss = st == BG_OK ? (double)bg_f32(loss)[0] : 0.0;
        if (bg_dist_size() > 1) {
            // One collective per step: the global batch's rows and loss, and
            // whether any rank failed, so that all ranks stop together.
            double v[3] = {st == BG_OK ? rows : 0.0, batch_loss * rows, st != BG_OK};
            bg_status cst = bg_dist_sum_doubles(v, 3);
            if (st == BG_OK && cst != BG_OK) bg_ctx_fail(ctx, st = cst, "%s", bg_last_error());
            if (st == BG_OK && v[2] > 0)
                bg_ctx_fail(ctx, st = BG_ERR_STATE, "%g other rank(s) failed at this step (each says why on its stderr)",
                            v[2]);
            if (st == BG_OK) {
                double global = v[0], weight = rows * bg_dist_size() == global ? 1.0 : rows * bg_dist_size() / global;
                st = bg_dist_allreduce_grads(model, weight);
                if (st != BG_OK) bg_ctx_fail(ctx, st, "%s", bg_last_error());
                rows = global, batch_loss = v[1] / global;
            }
        }
        if (st != BG_OK) return fail_at_step(ctx, what, step, st);
        if (o.clip_grad_norm > 0.0f && bg_clip_grad_norm(model, o.clip_grad_norm) < 0.0f)
            return fail_at_step(ctx, what, step, BG_ERR_ARG);
        st = bg_optim_step(opt);
        if (st == BG_OK && bg_dist_size() > 1) st = bg_dist_sync_state(model);
        if (st != BG_OK) return fail_at_step(ctx, what, step, st);
        loss_sum += batch_loss * rows;
        seen += (int64_t)rows;
        if (o.after_step) o.after_step(step, batch_loss, (int64_t)rows, o.user);
        bg_optim_zero_grad(opt);
        bg_ctx_reset(ctx);
    }
    if (bg_ctx_status(ctx) != BG_OK) return fail_step(ctx, what, BG_ERR_STATE);
    *mean_loss = seen ? loss_sum / (double)seen : 0.0;
    return BG_OK;
}

static bool next_image_batch(void *src, bg_ctx *ctx, bg_tensor **x, bg_tensor **y) {
    return bg_batcher_next(src, ctx, x, y);
}

static bool next_text_batch(void *src, bg_ctx *ctx, bg_tensor **x, bg_tensor **y) {
    return bg_text_batcher_next(src, ctx, x, y);
}

bg_batch_source bg_batcher_source(bg_batcher *b) { return (bg_batch_source){.next = next_image_batch, .src = b}; }
bg_batch_source bg_text_source(bg_text_batcher *b) { return (bg_batch_source){.next = next_text_batch, .src = b}; }

bg_status bg_train_epoch(bg_ctx *ctx, bg_module *model, bg_optim *opt, bg_batcher *batches,
                         const bg_train_opts *opts, double *mean_loss) {
    if (!ctx || !model || !opt || !batches || !mean_loss)
        return bg_set_error(BG_ERR_ARG, "train_epoch: ctx, model, optimizer, batches and mean_loss must not be NULL");
    const bg_batch_source src = bg_batcher_source(batches);
    return train_loop(ctx, model, opt, &src, -1, opts, mean_loss, "train_epoch");
}

bg_status bg_train_steps(bg_ctx *ctx, bg_module *model, bg_optim *opt, const bg_batch_source *src, int64_t steps,
                         const bg_train_opts *opts, double *mean_loss) {
    if (!ctx || !model || !opt || !src || !src->next || !mean_loss)
        return bg_set_error(BG_ERR_ARG, "train_steps: ctx, model, optimizer, source and mean_loss must not be NULL");
    if (steps < 0) return bg_set_error(BG_ERR_ARG, "train_steps: steps must not be negative: %lld", (long long)steps);
    return train_loop(ctx, model, opt, src, steps, opts, mean_loss, "train_steps");
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

bg_status bg_evaluate_loss(bg_ctx *ctx, bg_module *model, const bg_batch_source *src, double *mean_loss) {
    if (!ctx || !model || !src || !src->next || !mean_loss)
        return bg_set_error(BG_ERR_ARG, "evaluate_loss: ctx, model, source and mean_loss must not be NULL");
    bool was_training = bg_module_is_training(model);
    bg_module_train(model, false);
    bool grad = bg_set_grad_enabled(ctx, false);
    double sum = 0;
    int64_t seen = 0;
    bg_tensor *x, *y;
    while (src->next(src->src, ctx, &x, &y)) {
        bg_tensor *loss = bg_cross_entropy_flat(ctx, bg_module_forward(ctx, model, x), y);
        if (!loss) break;
        sum += (double)bg_f32(loss)[0] * (double)bg_numel(y);   // batches may differ in size
        seen += bg_numel(y);
        bg_ctx_reset(ctx);
    }
    bg_set_grad_enabled(ctx, grad);
    bg_module_train(model, was_training);
    if (bg_ctx_status(ctx) != BG_OK) return fail_step(ctx, "evaluate_loss", BG_ERR_STATE);
    *mean_loss = seen ? sum / (double)seen : 0.0;
    return BG_OK;
}
