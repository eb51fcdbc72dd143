/* bench_step.h — one MLP training step on the next full batch, shared by the
 * benchmarks that time steps (train_step.c, qat_step.c). Header-only. */
#ifndef BG_BENCH_STEP_H
#define BG_BENCH_STEP_H

#include <stdio.h>

#include "bitgrad.h"

typedef struct bench_net {
    const char *name;     /* in error messages */
    int64_t batch;        /* steps only ever see full batches of this size */
    bg_ctx *ctx;
    bg_module *mlp;
    bg_optim *opt;
    bg_batcher *batches;
} bench_net;

/* One step; false (after printing the error) on failure. */
static bool bench_train_step(bench_net *b) {
    bg_tensor *x = NULL, *y = NULL;
    // The next full batch: past the end of an epoch (next returns false once,
    // then starts the following epoch) and its short last batch.
    for (int tries = 0; tries < 4; tries++) {
        if (bg_batcher_next(b->batches, b->ctx, &x, &y)) {
            if (x->shape[0] == b->batch) break;
            bg_ctx_reset(b->ctx);
        } else if (bg_ctx_status(b->ctx) != BG_OK) {
            goto fail;
        }
        x = NULL;
    }
    if (!x) {
        fprintf(stderr, "%s: no full batch of %lld from the data set\n", b->name, (long long)b->batch);
        return false;
    }
    bg_tensor *loss = bg_cross_entropy(b->ctx, bg_module_forward(b->ctx, b->mlp, x), y, NULL);
    if (!loss || bg_backward(b->ctx, loss) != BG_OK || bg_optim_step(b->opt) != BG_OK) goto fail;
    bg_optim_zero_grad(b->opt);
    bg_ctx_reset(b->ctx);
    return true;
fail:
    fprintf(stderr, "%s: %s\n", b->name,
            bg_ctx_status(b->ctx) != BG_OK ? bg_ctx_error(b->ctx) : bg_last_error());
    return false;
}

#endif
