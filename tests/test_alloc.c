/* test_alloc.c — DESIGN's memory model, measured: after the first training
 * step, the steady state performs no malloc. The Fashion-MNIST MLP
 * (784-512-512-10, ReLU) trains on random data at batch 128 with Adam (and
 * with SGD + momentum + clipping); bitgrad's allocation counter must not move
 * over steps 3..10, the arena must be one block, and its high-water mark must
 * not grow. Peeks at the ctx's blocks through tensor_internal.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/tensor_internal.h"
#include "tests/test_util.h"

enum { BATCH = 128, IN = 784, OUT = 10, STEPS = 10 };

static int arena_blocks(const bg_ctx *ctx) {
    int n = 0;
    for (const bg_arena_block *b = ctx->blocks; b; b = b->next) n++;
    return n;
}

static void train(const char *what, bool use_sgd) {
    bg_rng rng;
    bg_rng_seed(&rng, 0);
    bg_module *mlp = bg_sequential_new(5, (bg_module *[]){
        bg_linear_new(IN, 512, true, &rng), bg_relu_new(), bg_linear_new(512, 512, true, &rng),
        bg_relu_new(), bg_linear_new(512, OUT, true, &rng)});
    CHECK(mlp != NULL);
    if (!mlp) return;
    bg_optim *opt = use_sgd ? bg_sgd_new(mlp, &(bg_sgd_opts){.lr = 0.05f, .momentum = 0.9f})
                            : bg_adam_new(mlp, NULL);
    CHECK(opt != NULL);
    if (use_sgd) {
        bg_lr_schedule s = bg_lr_cosine(0.05f, 2, STEPS, 0.0f);
        bg_optim_set_schedule(opt, &s);
    }

    // One fixed random batch: the loss must fall as it is learned.
    float *xs = malloc(sizeof(float) * BATCH * IN);
    int32_t *ys = malloc(sizeof(int32_t) * BATCH);
    for (int i = 0; i < BATCH * IN; i++) xs[i] = bg_rng_uniform(&rng);
    for (int i = 0; i < BATCH; i++) ys[i] = (int32_t)bg_rng_below(&rng, OUT);

    // A small first block, so the first step has to chain blocks and the
    // reset has to merge them into one.
    bg_ctx *ctx = bg_ctx_new(1 << 20);
    uint64_t allocs[STEPS + 1];
    size_t peaks[STEPS + 1];
    float losses[STEPS];
    int blocks_after_reset = 0;
    for (int step = 0; step < STEPS; step++) {
        bg_tensor *x = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(BATCH, IN), xs);
        bg_tensor *y = bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(BATCH), ys);
        bg_tensor *loss = bg_cross_entropy(ctx, bg_module_forward(ctx, mlp, x), y, NULL);
        bg_status st = bg_backward(ctx, loss);
        CHECK_MSG(st == BG_OK, "%s step %d: %s", what, step, bg_ctx_error(ctx));
        if (st != BG_OK) break;
        losses[step] = bg_f32(loss)[0];
        if (use_sgd) bg_clip_grad_norm(mlp, 1.0f);
        CHECK(bg_optim_step(opt) == BG_OK);
        bg_optim_zero_grad(opt);
        bg_ctx_reset(ctx);
        allocs[step + 1] = bg_alloc_count();
        peaks[step + 1] = bg_ctx_peak_bytes(ctx);
        if (step >= 1) blocks_after_reset = arena_blocks(ctx);
        if (step == 0) CHECK_MSG(peaks[1] > (size_t)1 << 20, "%s: step 1 used %zu bytes", what, peaks[1]);
    }
    // Steps 3..10 (after step 2 ends, counters at index 2) allocate nothing.
    CHECK_MSG(allocs[STEPS] == allocs[2], "%s: steps 3..%d made %llu allocations", what, STEPS,
              (unsigned long long)(allocs[STEPS] - allocs[2]));
    CHECK_MSG(peaks[STEPS] == peaks[2], "%s: arena peak grew from %zu to %zu", what, peaks[2], peaks[STEPS]);
    CHECK_MSG(blocks_after_reset == 1, "%s: arena has %d blocks", what, blocks_after_reset);
    CHECK(bg_ctx_used_bytes(ctx) == 0);
    CHECK_MSG(losses[0] > 2.0f && losses[0] < 2.7f, "%s: initial loss %g, want ~ln(10)", what, losses[0]);
    // Adam memorises the batch quickly; clipped SGD with a cosine schedule
    // moves more slowly.
    CHECK_MSG(losses[STEPS - 1] < (use_sgd ? 0.98f : 0.8f) * losses[0], "%s: loss %g -> %g did not fall", what, losses[0],
              losses[STEPS - 1]);
    printf("%s: loss %.4f -> %.4f, arena peak %.1f MiB, %llu allocations in steps 3..%d\n", what,
           losses[0], losses[STEPS - 1], (double)peaks[STEPS] / (1 << 20),
           (unsigned long long)(allocs[STEPS] - allocs[2]), STEPS);
    free(xs);
    free(ys);
    bg_ctx_free(ctx);
    bg_optim_free(opt);
    bg_module_free(mlp);
}

int main(void) {
    train("adam", false);
    train("sgd", true);
    return bg_test_finish();
}
