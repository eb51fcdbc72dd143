/* test_tensor.c — bg_tensor, views, the ctx arena, sticky errors, the PRNG and
 * the initializers. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "tests/test_util.h"

static void test_shapes_and_views(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(2, 3, 4));
    CHECK(x && bg_numel(x) == 24 && bg_is_contiguous(x));
    CHECK(((uintptr_t)x->data & (BG_ALIGN - 1)) == 0);
    CHECK(x->stride[0] == 12 && x->stride[1] == 4 && x->stride[2] == 1);
    for (int i = 0; i < 24; i++) bg_f32(x)[i] = (float)i;

    bg_tensor *t = bg_view_transpose(ctx, x, 1, 2);   // [2,4,3]
    CHECK(t && t->shape[1] == 4 && t->shape[2] == 3 && !bg_is_contiguous(t));
    CHECK(bg_get_f32(t, (int64_t[]){1, 2, 1}) == 12 + 4 * 1 + 2);
    bg_tensor *c = bg_contiguous(ctx, t);
    CHECK(c && c != t && bg_is_contiguous(c));
    CHECK(bg_f32(c)[1 * 12 + 2 * 3 + 1] == 18.0f);

    bg_tensor *n = bg_view_narrow(ctx, x, 2, 1, 2);   // [2,3,2]
    CHECK(n && bg_get_f32(n, (int64_t[]){1, 2, 0}) == 12 + 8 + 1);

    bg_tensor *r = bg_view_reshape(ctx, x, BG_SHAPE(6, 4));
    CHECK(r && r->data == x->data && r->shape[0] == 6);

    bg_tensor *p = bg_view_permute(ctx, x, (int[]){2, 0, 1});  // [4,2,3]
    CHECK(p && p->shape[0] == 4 && bg_get_f32(p, (int64_t[]){3, 1, 2}) == 12 + 8 + 3);

    char buf[BG_SHAPE_STR_MAX];
    CHECK_STR(bg_shape_str(x, buf, sizeof buf), "[2,3,4]");
    bg_ctx_free(ctx);
}

static void test_errors_are_sticky(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(2, 3));
    CHECK(bg_view_reshape(ctx, x, BG_SHAPE(4, 2)) == NULL);
    CHECK(bg_ctx_status(ctx) == BG_ERR_SHAPE);
    CHECK_STR(bg_ctx_error(ctx), "reshape: element counts differ: [2,3] to [4,2]");
    CHECK_STR(bg_last_error(), "reshape: element counts differ: [2,3] to [4,2]");
    // Later calls return NULL without computing and keep the first message.
    CHECK(bg_view_narrow(ctx, x, 5, 0, 1) == NULL);
    CHECK(bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(1)) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "reshape: element counts differ: [2,3] to [4,2]");
    bg_ctx_reset(ctx);
    CHECK(bg_ctx_status(ctx) == BG_OK);
    CHECK(bg_view_narrow(ctx, bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(2, 3)), 1, 2, 2) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "narrow: [2, 4) is outside dim 1 of [2,3]");
    bg_ctx_reset(ctx);
    CHECK(bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(2, -1)) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "empty: dimension 1 is negative (-1)");
    CHECK(bg_view_permute(ctx, NULL, (int[]){0}) == NULL);
    bg_ctx_reset(ctx);
    CHECK(bg_view_permute(ctx, NULL, (int[]){0}) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "permute: tensor is NULL");
    CHECK(strcmp(bg_status_str(BG_ERR_SHAPE), "shape mismatch") == 0);
    bg_ctx_free(ctx);
}

static void test_arena_reuse(void) {
    bg_ctx *ctx = bg_ctx_new(4096);
    // Step 1 outgrows the first block and chains more.
    for (int i = 0; i < 10; i++) CHECK(bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(1000)) != NULL);
    size_t peak = bg_ctx_peak_bytes(ctx);
    CHECK(peak >= 10 * 4000);
    bg_ctx_reset(ctx);
    uint64_t before = bg_alloc_count();
    for (int step = 0; step < 5; step++) {
        for (int i = 0; i < 10; i++) CHECK(bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(1000)) != NULL);
        bg_ctx_reset(ctx);
    }
    CHECK_MSG(bg_alloc_count() == before, "steady state allocated %llu times",
              (unsigned long long)(bg_alloc_count() - before));
    CHECK(bg_ctx_used_bytes(ctx) == 0);
    bg_ctx_free(ctx);
}

static void test_persistent(void) {
    bg_tensor *w = bg_tensor_new(BG_DTYPE_F32, BG_SHAPE(3, 5));
    CHECK(w && w->persistent && ((uintptr_t)w->data % BG_ALIGN) == 0);
    CHECK(bg_f32(w)[14] == 0.0f);
    CHECK(bg_set_requires_grad(w, true) == BG_OK && w->grad && w->owns_grad);
    bg_tensor *i8 = bg_tensor_new(BG_DTYPE_I8, BG_SHAPE(4));
    CHECK(bg_set_requires_grad(i8, true) == BG_ERR_DTYPE);
    CHECK_STR(bg_last_error(), "set_requires_grad: only f32 tensors have gradients, not i8");
    CHECK(bg_tensor_new(BG_DTYPE_F32, 5, (int64_t[]){1, 1, 1, 1, 1}) == NULL);
    CHECK_STR(bg_last_error(), "tensor_new: ndim 5 is outside 0..4");
    bg_tensor_free(w);
    bg_tensor_free(i8);
    bg_tensor_free(NULL);
}

static void test_rng_and_init(void) {
    bg_rng a, b;
    bg_rng_seed(&a, 42);
    bg_rng_seed(&b, 42);
    bool same = true;
    for (int i = 0; i < 100; i++) same &= bg_rng_next(&a) == bg_rng_next(&b);
    CHECK(same);
    bg_rng_seed(&b, 43);
    CHECK(bg_rng_next(&a) != bg_rng_next(&b));

    // Moments of the normal and uniform draws.
    double s = 0, s2 = 0;
    bg_rng_seed(&a, 1);
    for (int i = 0; i < 100000; i++) {
        double v = bg_rng_normal(&a);
        s += v;
        s2 += v * v;
    }
    CHECK_CLOSE(s / 1e5, 0.0, 0.02, 0);
    CHECK_CLOSE(s2 / 1e5, 1.0, 0.02, 0);
    float umin = 1, umax = 0;
    for (int i = 0; i < 100000; i++) {
        float u = bg_rng_uniform(&a);
        umin = fminf(umin, u);
        umax = fmaxf(umax, u);
    }
    CHECK(umin >= 0.0f && umin < 1e-3f && umax < 1.0f && umax > 0.999f);
    int hist[7] = {0};
    for (int i = 0; i < 70000; i++) hist[bg_rng_below(&a, 7)]++;
    for (int i = 0; i < 7; i++) CHECK_CLOSE(hist[i], 10000, 400, 0);

    // PyTorch's Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bg_tensor *w = bg_tensor_new(BG_DTYPE_F32, BG_SHAPE(64, 100));
    bg_init_torch_default(w, &a);
    float lo = 1, hi = -1;
    for (int i = 0; i < 6400; i++) {
        lo = fminf(lo, bg_f32(w)[i]);
        hi = fmaxf(hi, bg_f32(w)[i]);
    }
    CHECK(lo >= -0.1f && lo < -0.098f && hi <= 0.1f && hi > 0.098f);
    CHECK(bg_fan_in(w) == 100);
    // Conv weight [8,4,3,3]: fan_in = 36, kaiming_normal std = sqrt(2/36).
    bg_tensor *cw = bg_tensor_new(BG_DTYPE_F32, BG_SHAPE(8, 4, 3, 3));
    CHECK(bg_fan_in(cw) == 36);
    bg_tensor *big = bg_tensor_new(BG_DTYPE_F32, BG_SHAPE(400, 100));
    bg_init_kaiming_normal(big, &a, 0.0f);
    double v = 0;
    for (int i = 0; i < 40000; i++) v += (double)bg_f32(big)[i] * bg_f32(big)[i];
    CHECK_CLOSE(v / 40000, 2.0 / 100, 0.001, 0);
    bg_init_xavier_uniform(big, &a, 1.0f);
    float m = 0;
    for (int i = 0; i < 40000; i++) m = fmaxf(m, fabsf(bg_f32(big)[i]));
    CHECK(m <= sqrtf(6.0f / 500.0f) && m > 0.99f * sqrtf(6.0f / 500.0f));
    bg_tensor_free(w);
    bg_tensor_free(cw);
    bg_tensor_free(big);
}

static void test_copy(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *a = bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(2, 2), (int32_t[]){1, 2, 3, 4});
    bg_tensor *b = bg_zeros(ctx, BG_DTYPE_I32, BG_SHAPE(2, 2));
    CHECK(bg_copy(b, bg_view_transpose(ctx, a, 0, 1)) == BG_OK);
    CHECK(((int32_t *)b->data)[1] == 3 && ((int32_t *)b->data)[2] == 2);
    bg_tensor *f = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(2, 2));
    CHECK(bg_copy(f, a) == BG_ERR_DTYPE);
    CHECK_STR(bg_last_error(), "copy: dtypes differ: dst is f32, src is i32");
    bg_ctx_free(ctx);
}

/* Issue 10, cases 2, 4, 5, 6, 16: sizes that overflow, NULL arguments. */
static void test_size_limits(void) {
    const int64_t big = (int64_t)1 << 31;
    CHECK(bg_tensor_new(BG_DTYPE_F32, 2, (int64_t[]){big, big}) == NULL);
    CHECK_STR(bg_last_error(), "tensor_new: shape [2147483648,2147483648] has more than 2^48 elements");
    CHECK(bg_tensor_new(BG_DTYPE_F32, 2, (int64_t[]){(int64_t)1 << 62, 8}) == NULL);
    CHECK_STR(bg_last_error(), "tensor_new: shape [4611686018427387904,8] has more than 2^48 elements");
    CHECK(bg_tensor_new(BG_DTYPE_F32, 4, (int64_t[]){0, (int64_t)1 << 40, (int64_t)1 << 40, 2}) == NULL);
    bg_tensor *empty = bg_tensor_new(BG_DTYPE_F32, 2, (int64_t[]){0, (int64_t)1 << 40});
    CHECK(empty && bg_numel(empty) == 0 && bg_nbytes(empty) == 0);
    bg_tensor_free(empty);
    bg_ctx *ctx = bg_ctx_new(4096);
    CHECK(bg_empty(ctx, BG_DTYPE_F32, 2, (int64_t[]){big, big}) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "empty: shape [2147483648,2147483648] has more than 2^48 elements");
    bg_ctx_clear_error(ctx);
    // The arena refuses sizes it cannot add without wrapping.
    CHECK(bg_ctx_alloc(ctx, SIZE_MAX) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "arena: cannot allocate 18446744073709551615 bytes (more than 2^60)");
    bg_ctx_clear_error(ctx);
    unsigned char *first = bg_ctx_alloc(ctx, 100);
    CHECK(first != NULL);
    CHECK(bg_ctx_alloc(ctx, SIZE_MAX - 100) == NULL);
    bg_ctx_clear_error(ctx);
    unsigned char *next = bg_ctx_alloc(ctx, 100);
    CHECK(next && (next >= first + 100 || next + 100 <= first));   // no overlap
    CHECK(bg_ctx_used_bytes(ctx) == 256);
    bg_ctx_free(ctx);
    // NULL arguments.
    CHECK(bg_numel(NULL) == 0 && bg_nbytes(NULL) == 0);
    bg_tensor *t = bg_tensor_new(BG_DTYPE_F32, BG_SHAPE(4));
    CHECK(bg_init_normal(t, NULL, 0.0f, 1.0f) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "init_normal: rng is NULL");
    CHECK(bg_init_uniform(t, NULL, 0.0f, 1.0f) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "init_uniform: rng is NULL");
    bg_tensor_free(t);
    CHECK(bg_tensor_wrap(BG_DTYPE_F32, BG_SHAPE(2, 3), NULL) == NULL);
    CHECK_STR(bg_last_error(), "tensor_wrap: data is NULL for a [2,3] tensor");
    bg_tensor *w0 = bg_tensor_wrap(BG_DTYPE_F32, BG_SHAPE(0, 3), NULL);
    CHECK(w0 && bg_numel(w0) == 0);
    bg_tensor_free(w0);
}

int main(void) {
    test_shapes_and_views();
    test_errors_are_sticky();
    test_arena_reuse();
    test_persistent();
    test_rng_and_init();
    test_copy();
    test_size_limits();
    return bg_test_finish();
}
