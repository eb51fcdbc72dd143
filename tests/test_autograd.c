/* test_autograd.c — the tape itself: no-grad scopes, gradient accumulation
 * across micro-batches, backward's contract and errors, the op table. */
#include <math.h>
#include <string.h>

#include "tests/test_util.h"

static bg_tensor *param(int ndim, const int64_t *shape, bg_rng *rng) {
    bg_tensor *t = bg_tensor_new(BG_DTYPE_F32, ndim, shape);
    bg_init_normal(t, rng, 0.0f, 1.0f);
    bg_set_requires_grad(t, true);
    return t;
}

static void test_no_grad_records_nothing(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 1);
    bg_tensor *w = param(BG_SHAPE(3, 4), &rng);
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = bg_full(ctx, BG_SHAPE(2, 4), 1.0f);

    bool prev = bg_set_grad_enabled(ctx, false);
    CHECK(prev == true && !bg_grad_enabled(ctx));
    bg_tensor *y = bg_relu(ctx, bg_linear(ctx, x, w, NULL));
    CHECK(y && !y->requires_grad && y->node == NULL);
    bg_tensor *loss = bg_sum_all(ctx, y);
    CHECK(bg_backward(ctx, loss) == BG_ERR_STATE);
    CHECK_STR(bg_ctx_error(ctx),
              "backward: output does not require grad (no input requires grad, or grad was disabled)");
    bg_set_grad_enabled(ctx, prev);
    bg_ctx_reset(ctx);

    // Scopes nest: the inner restore keeps the outer scope's mode.
    bool outer = bg_set_grad_enabled(ctx, false);
    bool inner = bg_set_grad_enabled(ctx, false);
    bg_set_grad_enabled(ctx, inner);
    CHECK(!bg_grad_enabled(ctx));
    bg_set_grad_enabled(ctx, outer);
    CHECK(bg_grad_enabled(ctx));

    x = bg_full(ctx, BG_SHAPE(2, 4), 1.0f);
    y = bg_linear(ctx, x, w, NULL);
    CHECK(y && y->requires_grad && y->node != NULL);
    bg_ctx_free(ctx);
    bg_tensor_free(w);
}

/* Two half-batches with loss/2 each accumulate to the full batch's gradient. */
static void test_micro_batch_accumulation(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 2);
    bg_tensor *w = param(BG_SHAPE(5, 6), &rng), *b = param(BG_SHAPE(5), &rng);
    bg_ctx *ctx = bg_ctx_new(0);
    float xs[8 * 6];
    int32_t ys[8];
    for (int i = 0; i < 48; i++) xs[i] = bg_rng_normal(&rng);
    for (int i = 0; i < 8; i++) ys[i] = (int32_t)bg_rng_below(&rng, 5);

    bg_tensor *x = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(8, 6), xs);
    bg_tensor *y = bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(8), ys);
    CHECK(bg_backward(ctx, bg_cross_entropy(ctx, bg_linear(ctx, x, w, b), y, NULL)) == BG_OK);
    float full_w[30], full_b[5];
    memcpy(full_w, bg_f32(w->grad), sizeof full_w);
    memcpy(full_b, bg_f32(b->grad), sizeof full_b);
    bg_ctx_reset(ctx);

    memset(w->grad->data, 0, bg_nbytes(w->grad));
    memset(b->grad->data, 0, bg_nbytes(b->grad));
    for (int half = 0; half < 2; half++) {
        bg_tensor *xh = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(4, 6), xs + half * 24);
        bg_tensor *yh = bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(4), ys + half * 4);
        bg_tensor *loss = bg_scale(ctx, bg_cross_entropy(ctx, bg_linear(ctx, xh, w, b), yh, NULL), 0.5f);
        CHECK(bg_backward(ctx, loss) == BG_OK);
        bg_ctx_reset(ctx);
    }
    CHECK_ARRAYS("accumulated dW", bg_f32(w->grad), full_w, 30, 1e-6, 1e-5);
    CHECK_ARRAYS("accumulated db", bg_f32(b->grad), full_b, 5, 1e-6, 1e-5);
    bg_ctx_free(ctx);
    bg_tensor_free(w);
    bg_tensor_free(b);
}

/* A tensor used twice receives both contributions; an unused branch none. */
static void test_fan_out_and_dead_branches(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 3);
    bg_tensor *a = param(BG_SHAPE(4), &rng);
    bg_ctx *ctx = bg_ctx_new(0);
    // loss = sum(a*a + 3a); d/da = 2a + 3
    bg_tensor *dead = bg_exp(ctx, a);  // recorded but not part of the loss
    CHECK(dead != NULL);
    bg_tensor *loss = bg_sum_all(ctx, bg_add(ctx, bg_mul(ctx, a, a), bg_scale(ctx, a, 3.0f)));
    CHECK(bg_backward(ctx, loss) == BG_OK);
    float want[4];
    for (int i = 0; i < 4; i++) want[i] = 2.0f * bg_f32(a)[i] + 3.0f;
    CHECK_ARRAYS("d(a*a + 3a)", bg_f32(a->grad), want, 4, 1e-6, 1e-6);
    CHECK(dead->grad == NULL);
    bg_ctx_free(ctx);
    bg_tensor_free(a);
}

static void test_backward_errors(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 4);
    bg_tensor *a = param(BG_SHAPE(2, 3), &rng);
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *y = bg_relu(ctx, a);
    CHECK(bg_backward(ctx, y) == BG_ERR_SHAPE);
    CHECK_STR(bg_ctx_error(ctx), "backward: loss must have one element, got [2,3]");
    bg_ctx_reset(ctx);

    CHECK(bg_backward(ctx, NULL) == BG_ERR_ARG);
    CHECK_STR(bg_ctx_error(ctx), "backward: output is NULL");
    bg_ctx_reset(ctx);

    y = bg_relu(ctx, a);
    bg_tensor *bad = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(3, 2));
    CHECK(bg_backward_with_grad(ctx, y, bad) == BG_ERR_SHAPE);
    CHECK_STR(bg_ctx_error(ctx), "backward: dout must be f32 shaped like out: out is [2,3], dout is [3,2]");
    bg_ctx_reset(ctx);

    // After a failed op the step is poisoned: backward reports the first error.
    bg_tensor *b = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(4));
    CHECK(bg_add(ctx, a, b) == NULL);
    CHECK(bg_backward(ctx, bg_sum_all(ctx, bg_relu(ctx, a))) == BG_ERR_SHAPE);
    CHECK(strncmp(bg_ctx_error(ctx), "add: ", 5) == 0);
    bg_ctx_free(ctx);
    bg_tensor_free(a);
}

static void test_op_table(void) {
    for (int op = 1; op < BG_OP_COUNT; op++) {
        const char *name = bg_op_name((bg_op)op);
        CHECK_MSG(name && strcmp(name, "unknown") != 0 && name[0], "op %d has no name", op);
        for (int other = 1; other < op; other++)
            CHECK_MSG(strcmp(name, bg_op_name((bg_op)other)) != 0, "ops %d and %d share the name %s",
                      op, other, name);
    }
    CHECK_STR(bg_op_name(BG_OP_MATMUL), "matmul");
    CHECK_STR(bg_op_name(BG_OP_COUNT), "unknown");
}

/* Issue 10 cases 9 and 10: one backward per step, and tensors of another
 * ctx or of an earlier step. */
static void test_tape_reuse_and_stale_tensors(void) {
    float w0[3] = {1.0f, 2.0f, 3.0f};
    bg_tensor *w = bg_tensor_new(BG_DTYPE_F32, BG_SHAPE(3));
    memcpy(w->data, w0, sizeof w0);
    bg_set_requires_grad(w, true);
    bg_ctx *ctx = bg_ctx_new(0);
    // A second backward over the same tape is refused; the gradient stays 2w.
    bg_tensor *l = bg_sum_all(ctx, bg_mul(ctx, w, w));
    CHECK(bg_backward(ctx, l) == BG_OK);
    CHECK(bg_backward(ctx, l) == BG_ERR_STATE);
    CHECK_STR(bg_ctx_error(ctx), "backward: this step's tape was already walked by a backward; call bg_ctx_reset "
                                 "and run the forward again (one backward per step)");
    CHECK(bg_f32(w->grad)[0] == 2.0f && bg_f32(w->grad)[1] == 4.0f && bg_f32(w->grad)[2] == 6.0f);
    // A second loss on a walked tape: refused as well.
    bg_ctx_reset(ctx);
    memset(w->grad->data, 0, sizeof w0);
    bg_tensor *l1 = bg_sum_all(ctx, bg_mul(ctx, w, w));
    bg_tensor *l2 = bg_sum_all(ctx, bg_scale(ctx, w, 3.0f));
    CHECK(bg_backward(ctx, l1) == BG_OK);
    CHECK(bg_backward(ctx, l2) == BG_ERR_STATE);
    CHECK(bg_f32(w->grad)[0] == 2.0f && bg_f32(w->grad)[2] == 6.0f);
    // Their sum in one backward is PyTorch's 5 7 9 (2w + 3).
    bg_ctx_reset(ctx);
    memset(w->grad->data, 0, sizeof w0);
    CHECK(bg_backward(ctx, bg_add(ctx, bg_sum_all(ctx, bg_mul(ctx, w, w)), bg_sum_all(ctx, bg_scale(ctx, w, 3.0f)))) ==
          BG_OK);
    CHECK(bg_f32(w->grad)[0] == 5.0f && bg_f32(w->grad)[1] == 7.0f && bg_f32(w->grad)[2] == 9.0f);
    // A loss recorded on another ctx.
    bg_ctx_reset(ctx);
    bg_ctx *other = bg_ctx_new(0);
    bg_tensor *lo = bg_sum_all(other, bg_mul(other, w, w));
    CHECK(bg_backward(ctx, lo) == BG_ERR_STATE);
    CHECK_STR(bg_ctx_error(ctx), "backward: the output was built on another ctx: pass the ctx that recorded its tape");
    // Another ctx's live tensor is a valid input (a dataset in its own ctx).
    bg_ctx_reset(ctx);
    bg_tensor *data = bg_full(other, BG_SHAPE(3), 2.0f);
    bg_tensor *y = bg_mul(ctx, w, data);
    CHECK(y && bg_f32(y)[2] == 6.0f);
    bg_ctx_free(other);
    // A loss, and an input, from before the last reset.
    bg_ctx_reset(ctx);
    bg_tensor *old = bg_sum_all(ctx, bg_mul(ctx, w, w));
    bg_tensor *x_old = bg_full(ctx, BG_SHAPE(3), 1.0f);
    bg_ctx_reset(ctx);
    CHECK(bg_backward(ctx, old) == BG_ERR_STATE);
    CHECK_STR(bg_ctx_error(ctx),
              "backward: the output was built before the last bg_ctx_reset: its memory now holds newer data");
    bg_ctx_reset(ctx);
    CHECK(bg_add(ctx, w, x_old) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "add: b was built before the last bg_ctx_reset: its memory now holds newer data");
    bg_ctx_free(ctx);
    bg_tensor_free(w);
}

/* bg_recompute's refusals: a block that changes the shape or returns no
 * f32, and a missing forward, each with its sentence. */
static bg_tensor *widen(bg_ctx *ctx, void *user, bg_tensor *x) {
    (void)user;
    return bg_concat(ctx, (bg_tensor *[]){x, x}, 2, 1);
}
static bg_tensor *to_codes(bg_ctx *ctx, void *user, bg_tensor *x) {
    (void)user;
    return bg_empty(ctx, BG_DTYPE_I32, x->ndim, x->shape);
}

static void test_recompute_errors(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = bg_full(ctx, 2, (int64_t[]){2, 3}, 0.5f);
    bg_set_requires_grad(x, true);
    CHECK(bg_recompute(ctx, &(bg_recompute_fn){.forward = widen}, x) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "recompute: the block must keep the shape of its input: x is [2,3], f(x) is [2,6]");
    bg_ctx_reset(ctx);
    x = bg_full(ctx, 2, (int64_t[]){2, 3}, 0.5f);
    bg_set_requires_grad(x, true);
    CHECK(bg_recompute(ctx, &(bg_recompute_fn){.forward = to_codes}, x) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "recompute: the block must return f32, not i32");
    bg_ctx_reset(ctx);
    CHECK(bg_recompute(ctx, &(bg_recompute_fn){0}, bg_full(ctx, 1, (int64_t[]){1}, 1.0f)) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "recompute: no forward function");
    bg_ctx_free(ctx);
}

int main(void) {
    test_recompute_errors();
    test_no_grad_records_nothing();
    test_micro_batch_accumulation();
    test_fan_out_and_dead_branches();
    test_backward_errors();
    test_tape_reuse_and_stale_tensors();
    test_op_table();
    return bg_test_finish();
}
