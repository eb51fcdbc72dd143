/* test_train.c — bg_train_epoch and bg_evaluate on a small synthetic image
 * set: learning happens, callbacks are honoured, errors carry the message. */
#include <string.h>

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
    CHECK_STR(bg_last_error(), "train_epoch: schedule: stop requested");
    CHECK(bg_ctx_status(ctx) == BG_OK);

    // A model that does not fit the data fails with the layer's message.
    bg_module *wrong = bg_sequential_new(1, (bg_module *[]){bg_linear_new(F + 1, 2, true, &rng)});
    CHECK(bg_evaluate(ctx, wrong, b, &acc) != BG_OK);
    CHECK(strstr(bg_last_error(), "evaluate: ") == bg_last_error());
    CHECK(bg_train_epoch(NULL, model, opt, b, NULL, &loss) == BG_ERR_ARG);

    bg_module_free(wrong);
    bg_ctx_free(ctx);
    bg_optim_free(opt);
    bg_module_free(model);
    bg_batcher_free(b);
    return bg_test_finish();
}
