/* io/train.h — the training loop over a batcher (io/train.c). */
#ifndef BG_IO_TRAIN_H
#define BG_IO_TRAIN_H

#include "io/dataset.h"
#include "io/text.h"
#include "layers/layers.h"
#include "optim/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------
// training loops over a batcher (io/train.c): what every program that trains
// on a dataset repeats, written once.

/* The loss of one batch from the model's output; NULL with the ctx error set
 * on failure. */
typedef bg_tensor *(*bg_loss_fn)(bg_ctx *ctx, bg_tensor *out, bg_tensor *x, bg_tensor *y,
                                 void *user);

typedef struct bg_train_opts {
    bg_loss_fn loss;   /* NULL: bg_cross_entropy(out, y) */
    void *user;        /* passed to loss and before_step */
    /* Optional, called before each step with the optimizer's step count (for
     * schedules); a non-BG_OK return stops the epoch with that status. */
    bg_status (*before_step)(int64_t step, void *user);
    /* Optional, called after each step with the step just taken (the
     * optimizer's count before it), the batch's mean loss and its size: for
     * logs and progress lines. */
    void (*after_step)(int64_t step, double loss, int64_t batch, void *user);
    /* true: a NaN/Inf loss does not stop the epoch (off by default). */
    bool allow_nonfinite_loss;
    /* > 0: bg_clip_grad_norm(model, clip_grad_norm) between backward and the
     * optimizer step. */
    float clip_grad_norm;
} bg_train_opts;

/* Where a training loop takes its batches from: next fills x and y on ctx
 * and returns true, or false at the end (or on error, with the ctx's error
 * set). bg_batcher and bg_text_batcher both fit. */
typedef struct bg_batch_source {
    bool (*next)(void *src, bg_ctx *ctx, bg_tensor **x, bg_tensor **y);
    void *src;
} bg_batch_source;

/* Sources over the two batchers: the image batcher (one epoch, then
 * false once) and the text batcher (random windows without end, or one pass
 * of the fixed set). */
bg_batch_source bg_batcher_source(bg_batcher *b);
bg_batch_source bg_text_source(bg_text_batcher *b);

/* cross_entropy of out [..., C] against labels y [...] (both flattened over
 * the leading dims: a language model's [B,T,V] logits against [B,T] ids);
 * the loss the loops use when opts->loss is NULL. */
bg_tensor *bg_cross_entropy_flat(bg_ctx *ctx, bg_tensor *out, bg_tensor *y);

/* One epoch of train mode: forward, loss, backward, optimizer step, zero
 * grads, ctx reset per batch. *mean_loss gets the example-weighted mean loss.
 * opts may be NULL. On failure returns the status; bg_last_error() holds the
 * ctx's message (the ctx is left reset).
 * A loss that is NaN or infinite stops the epoch before backward with
 * BG_ERR_NAN ("train_epoch: step 0: the loss is nan; nothing was updated
 * ..."). Every failure inside a step names it ("train_epoch: step 12: ..."), and so does a non-finite gradient (bg_optim_step's check): the
 * parameters keep the values of the last good step. */
bg_status bg_train_epoch(bg_ctx *ctx, bg_module *model, bg_optim *opt, bg_batcher *batches,
                         const bg_train_opts *opts, double *mean_loss);
/* The same loop for `steps` steps from any source (an endless one, such as
 * bg_text_batcher's random windows), or until it ends; errors name
 * "train_steps: step N: ...". */
bg_status bg_train_steps(bg_ctx *ctx, bg_module *model, bg_optim *opt, const bg_batch_source *src, int64_t steps,
                         const bg_train_opts *opts, double *mean_loss);

/* The mean cross-entropy per label (nats; bg_cross_entropy_flat) over
 * every batch the source gives until it ends, in eval mode without a tape:
 * a language model's validation loss per byte over a fixed window set. */
bg_status bg_evaluate_loss(bg_ctx *ctx, bg_module *model, const bg_batch_source *src, double *mean_loss);

/* Accuracy in [0,1] of argmax(model(x)) == y over one epoch of batches, in
 * eval mode without a tape (the model is put back into train mode). */
bg_status bg_evaluate(bg_ctx *ctx, bg_module *model, bg_batcher *batches, double *accuracy);

#ifdef __cplusplus
}
#endif
#endif /* BG_IO_TRAIN_H */
