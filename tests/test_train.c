/* test_train.c — bg_train_epoch and bg_evaluate on a small synthetic image
 * set: learning happens, callbacks are honoured, errors carry the message. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/test_util.h"

enum { N = 64, SIDE = 4, F = SIDE * SIDE };

/* Class 0 is bright on the left half, class 1 on the right, with noise. */
static void make_data(bg_dataset *ds, uint8_t *pixels, int32_t *labels) {
    bg_rng rng;
    bg_rng_seed(&rng, 9);
    for (int i = 0; i < N; i++) {
        labels[i] = i % 2;
        for (int p = 0; p < F; p++) {
            bool left = p % SIDE < SIDE / 2;
            int base = (left == (labels[i] == 0)) ? 180 : 40;
            pixels[i * F + p] = (uint8_t)(base + (int)bg_rng_below(&rng, 60));
        }
    }
    *ds = (bg_dataset){.n = N, .channels = 1, .height = SIDE, .width = SIDE, .n_classes = 2,
                       .pixels = pixels, .labels = labels};
}

typedef struct counters {
    int losses;
    int64_t last_step;
    int64_t stop_at;
} counters;

static bg_tensor *counting_loss(bg_ctx *ctx, bg_tensor *out, bg_tensor *x, bg_tensor *y, void *user) {
    (void)x;
    ((counters *)user)->losses++;
    return bg_cross_entropy(ctx, out, y, NULL);
}

static bg_status before_step(int64_t step, void *user) {
    counters *c = user;
    CHECK(step == c->last_step + 1);
    c->last_step = step;
    return step == c->stop_at ? bg_set_error(BG_ERR_STATE, "schedule: stop requested") : BG_OK;
}

/* Issue 10 case 11: a NaN weight stops training at the first step with the
 * step in the message and the parameters as they were; the same through a
 * BitLinear (whose quantizers used to hide it), a non-finite gradient, and
 * a checkpoint of such a model. */
static void test_nonfinite_stops(bg_ctx *ctx, bg_batcher *b) {
    bg_rng rng;
    bg_rng_seed(&rng, 3);
    bg_module *mlp = bg_sequential_new(3, (bg_module *[]){bg_linear_new(F, 8, true, &rng), bg_relu_new(),
                                                          bg_linear_new(8, 2, true, &rng)});
    bg_optim *opt = bg_adam_new(mlp, NULL);
    int64_t n;
    float *p = bg_module_flat_params(mlp, &n);
    p[5] = NAN;   // 0.weight[0,5]
    float *before = malloc(sizeof(float) * (size_t)n);
    memcpy(before, p, sizeof(float) * (size_t)n);
    double loss = 0;
    CHECK(bg_train_epoch(ctx, mlp, opt, b, NULL, &loss) == BG_ERR_NAN);
    CHECK_STR(bg_last_error(), "train_epoch: step 0: the loss is nan; nothing was updated (a non-finite loss stops "
                               "training: look for a NaN/Inf input or weight, or lower the lr)");
    CHECK(memcmp(before, p, sizeof(float) * (size_t)n) == 0 && bg_optim_step_count(opt) == 0);
    // Checkpoints refuse it, and the good file at the path stays.
    char path[] = "/tmp/bg_test_train_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
    p[5] = 0.25f;
    CHECK(bg_checkpoint_save(path, &(bg_checkpoint){.model = mlp}) == BG_OK);
    p[5] = NAN;
    CHECK(bg_checkpoint_save(path, &(bg_checkpoint){.model = mlp}) == BG_ERR_NAN);
    char want[256];
    snprintf(want, sizeof want,
             "checkpoint_save: %s: parameter 0.weight has a NaN or Inf at index 5 (value nan); nothing was written",
             path);
    CHECK_STR(bg_last_error(), want);
    bg_module *back = NULL;
    CHECK(bg_checkpoint_load_model(path, &back) == BG_OK && back && bg_f32(bg_module_param(back, 0))[5] == 0.25f);
    bg_module_free(back);
    unlink(path);
    // A non-finite gradient with a finite loss: the optimizer refuses the step.
    p[5] = 0.25f;
    bg_optim_zero_grad(opt);
    memcpy(before, p, sizeof(float) * (size_t)n);
    bg_f32(bg_module_param(mlp, 1)->grad)[7] = INFINITY;   // 0.bias[7]
    CHECK(bg_optim_step(opt) == BG_ERR_NAN);
    CHECK_STR(bg_last_error(), "adam: the gradient of 0.bias is inf at element 7; nothing was updated (a non-finite "
                               "gradient stops training: look for a NaN/Inf input, weight or loss, or lower the lr)");
    CHECK(memcmp(before, p, sizeof(float) * (size_t)n) == 0 && bg_optim_step_count(opt) == 0);
    bg_optim_set_check_finite(opt, false);   // switched off: the step runs
    CHECK(bg_optim_step(opt) == BG_OK && bg_optim_step_count(opt) == 1);
    bg_optim_free(opt);
    // A BitLinear's absmean quantizer refuses a NaN latent weight instead of
    // turning it into codes.
    CHECK(bg_bitnet_model(mlp) == BG_OK);
    bg_optim *opt2 = bg_adam_new(mlp, NULL);
    p = bg_module_flat_params(mlp, &n);
    p[5] = NAN;
    CHECK(bg_train_epoch(ctx, mlp, opt2, b, NULL, &loss) == BG_ERR_NAN);
    CHECK(strstr(bg_last_error(), "train_epoch: step 0: fake_quant: the absmean range of x [8,16] is not finite (scale nan") != NULL);
    CHECK_MSG(strstr(bg_last_error(), "x holds a NaN or an infinity") != NULL, "%s", bg_last_error());
    bg_optim_free(opt2);
    free(before);
    bg_module_free(mlp);
}

/* bg_train_steps: the same loop for a number of steps from any source, with
 * gradient clipping. */
static void test_train_steps(bg_ctx *ctx, const bg_dataset *ds) {
    bg_batcher *b = NULL;
    CHECK(bg_batcher_new(ds, &(bg_batcher_opts){.batch_size = 10, .shuffle = true, .seed = 2}, &b) == BG_OK);
    bg_rng rng;
    bg_rng_seed(&rng, 5);
    bg_module *m = bg_sequential_new(1, (bg_module *[]){bg_linear_new(F, 2, true, &rng)});
    bg_optim *opt = bg_sgd_new(m, &(bg_sgd_opts){.lr = 0.1f});
    const bg_batch_source src = bg_batcher_source(b);
    double loss = -1;
    CHECK(bg_train_steps(ctx, m, opt, &src, 3, &(bg_train_opts){.clip_grad_norm = 1e-3f}, &loss) == BG_OK);
    CHECK(bg_optim_step_count(opt) == 3 && loss > 0);
    CHECK(bg_train_steps(ctx, m, opt, &src, -1, NULL, &loss) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "train_steps: steps must not be negative: -1");
    bg_batcher_free(b);
    bg_optim_free(opt);
    bg_module_free(m);
}

int main(void) {
    static uint8_t pixels[N * F];
    static int32_t labels[N];
    bg_dataset ds;
    make_data(&ds, pixels, labels);
    bg_batcher *b = NULL;
    CHECK(bg_batcher_new(&ds, &(bg_batcher_opts){.batch_size = 10, .shuffle = true, .seed = 1}, &b) == BG_OK);
    bg_rng rng;
    bg_rng_seed(&rng, 0);
    bg_module *model = bg_sequential_new(1, (bg_module *[]){bg_linear_new(F, 2, true, &rng)});
    bg_adam_opts ao = BG_ADAM_DEFAULTS;
    ao.lr = 0.05f;
    bg_optim *opt = bg_adam_new(model, &ao);
    bg_ctx *ctx = bg_ctx_new(0);

    double acc0 = -1, acc = -1, first = 0, loss = 0;
    CHECK(bg_evaluate(ctx, model, b, &acc0) == BG_OK);
    CHECK(bg_module_is_training(model));
    counters c = {.last_step = -1, .stop_at = -1};
    bg_train_opts to = {.loss = counting_loss, .user = &c, .before_step = before_step};
    for (int e = 0; e < 20; e++) {
        CHECK(bg_train_epoch(ctx, model, opt, b, &to, &loss) == BG_OK);
        if (e == 0) first = loss;
    }
    CHECK(bg_evaluate(ctx, model, b, &acc) == BG_OK);
    CHECK_MSG(c.losses == 20 * 7, "loss called %d times, want 140", c.losses);
    CHECK(c.last_step == 139);
    CHECK_MSG(loss < 0.1 * first, "loss went from %g to %g", first, loss);
    CHECK_MSG(acc == 1.0, "accuracy %g (before training %g)", acc, acc0);

    // A callback's failure stops the epoch and keeps its message.
    c.stop_at = c.last_step + 3;
    CHECK(bg_train_epoch(ctx, model, opt, b, &to, &loss) == BG_ERR_STATE);
    CHECK_STR(bg_last_error(), "train_epoch: step 142: schedule: stop requested");
    CHECK(bg_ctx_status(ctx) == BG_OK);

    // A model that does not fit the data fails with the layer's message.
    bg_module *wrong = bg_sequential_new(1, (bg_module *[]){bg_linear_new(F + 1, 2, true, &rng)});
    CHECK(bg_evaluate(ctx, wrong, b, &acc) != BG_OK);
    CHECK(strstr(bg_last_error(), "evaluate: ") == bg_last_error());
    CHECK(bg_train_epoch(NULL, model, opt, b, NULL, &loss) == BG_ERR_ARG);

    bg_module_free(wrong);
    test_nonfinite_stops(ctx, b);
    test_train_steps(ctx, &ds);
    bg_ctx_free(ctx);
    bg_optim_free(opt);
    bg_module_free(model);
    bg_batcher_free(b);
    return bg_test_finish();
}
