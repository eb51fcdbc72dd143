/* test_ops_struct.c — the structural ops (ops_shape.c, ops_matmul.c,
 * ops_norm.c, ops_conv.c): forward values on small hand-computed cases, the
 * backward of a few of them, a handful of gradchecks, and exact error
 * messages. The full per-op gradcheck suite and the PyTorch comparisons live
 * in other test files. */
#include <math.h>
#include <string.h>

#include "tests/test_util.h"

#define ARR(...) ((const float[]){__VA_ARGS__})
#define NARR(...) (int64_t)(sizeof((float[]){__VA_ARGS__}) / sizeof(float))
/* Checks that t is non-NULL, has exactly the listed values (within atol). */
#define CHECK_T(what, t, atol, ...)                                                          \
    do {                                                                                     \
        const bg_tensor *t_ = (t);                                                           \
        if (CHECK_MSG(t_ != NULL, "%s is NULL: %s", what, bg_last_error()) &&                \
            CHECK_MSG(bg_numel(t_) == NARR(__VA_ARGS__), "%s has %lld elements, want %lld",  \
                      what, (long long)bg_numel(t_), (long long)NARR(__VA_ARGS__)))          \
            CHECK_ARRAYS(what, bg_f32(t_), ARR(__VA_ARGS__), NARR(__VA_ARGS__), atol, 1e-6); \
    } while (0)
#define CHECK_SHAPE(t, want)                                                                 \
    do {                                                                                     \
        char s_[BG_SHAPE_STR_MAX];                                                           \
        CHECK_STR((t) ? bg_shape_str((t), s_, sizeof s_) : "(null)", want);                  \
    } while (0)

static bg_tensor *T(bg_ctx *ctx, int ndim, const int64_t *shape, const float *data) {
    return bg_from_data(ctx, BG_DTYPE_F32, ndim, shape, data);
}

/* A persistent leaf that requires grad, filled with data or (data NULL)
 * seeded uniform values in [-1, 1). */
static bg_tensor *leaf(int ndim, const int64_t *shape, const float *data, uint64_t seed) {
    bg_tensor *t = bg_tensor_new(BG_DTYPE_F32, ndim, shape);
    if (!t) return NULL;
    if (data) {
        memcpy(t->data, data, bg_nbytes(t));
    } else {
        bg_rng rng;
        bg_rng_seed(&rng, seed);
        bg_init_uniform(t, &rng, -1.0f, 1.0f);
    }
    bg_set_requires_grad(t, true);
    return t;
}

/* Reference C[M,N] = op(A) op(B) for one matrix pair, in double. */
static void naive_mm(float *C, const float *A, const float *B, int64_t M, int64_t N, int64_t K,
                     bool ta, bool tb) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++)
                s += (double)(ta ? A[k * M + i] : A[i * K + k]) * (double)(tb ? B[j * K + k] : B[k * N + j]);
            C[i * N + j] = (float)s;
        }
}

// ---------------------------------------------------------------------------
// products

static void test_matmul_2d(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    // A [2,3], B [3,2]; At and Bt hold the same matrices transposed.
    const float A[] = {1, 2, 3, 4, 5, 6}, At[] = {1, 4, 2, 5, 3, 6};
    const float B[] = {7, 8, 9, 10, 11, 12}, Bt[] = {7, 9, 11, 8, 10, 12};
    // [1 2 3; 4 5 6] [7 8; 9 10; 11 12] = [58 64; 139 154]
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            bg_tensor *a = ta ? T(ctx, BG_SHAPE(3, 2), At) : T(ctx, BG_SHAPE(2, 3), A);
            bg_tensor *b = tb ? T(ctx, BG_SHAPE(2, 3), Bt) : T(ctx, BG_SHAPE(3, 2), B);
            bg_tensor *c = bg_matmul(ctx, a, b, ta, tb);
            CHECK_SHAPE(c, "[2,2]");
            CHECK_T(ta ? (tb ? "matmul tt" : "matmul tn") : (tb ? "matmul nt" : "matmul nn"), c, 0.0f,
                    58, 64, 139, 154);
        }
    // A non-contiguous operand (a transposed view) gives the same product.
    bg_tensor *av = bg_view_transpose(ctx, T(ctx, BG_SHAPE(3, 2), At), 0, 1);
    CHECK_T("matmul view", bg_matmul(ctx, av, T(ctx, BG_SHAPE(3, 2), B), false, false), 0.0f, 58, 64,
            139, 154);
    bg_ctx_free(ctx);
}

static void test_matmul_batched(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    enum { NB = 3, M = 2, K = 4, N = 3 };
    float a[NB * M * K], b[NB * K * N], bs[K * N], want[NB * M * N];
    for (int i = 0; i < NB * M * K; i++) a[i] = (float)((i * 7) % 11) - 5.0f;
    for (int i = 0; i < NB * K * N; i++) b[i] = (float)((i * 5) % 9) - 4.0f;
    for (int i = 0; i < K * N; i++) bs[i] = (float)((i * 3) % 7) - 3.0f;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            // The stored buffers are read as [K,M] / [N,K] when transposed.
            int64_t sa[3] = {NB, ta ? K : M, ta ? M : K}, sb[3] = {NB, tb ? N : K, tb ? K : N};
            bg_tensor *ta_ = T(ctx, 3, sa, a), *tb_ = T(ctx, 3, sb, b);
            bg_tensor *c = bg_matmul(ctx, ta_, tb_, ta, tb);
            for (int i = 0; i < NB; i++)
                naive_mm(want + i * M * N, a + i * M * K, b + i * K * N, M, N, K, ta, tb);
            CHECK_SHAPE(c, "[3,2,3]");
            if (c) CHECK_ARRAYS("matmul batched", bg_f32(c), want, NB * M * N, 1e-5, 1e-6);
            // Shared 2-D b.
            bg_tensor *b2 = T(ctx, 2, sb + 1, bs);
            c = bg_matmul(ctx, ta_, b2, ta, tb);
            for (int i = 0; i < NB; i++) naive_mm(want + i * M * N, a + i * M * K, bs, M, N, K, ta, tb);
            CHECK_SHAPE(c, "[3,2,3]");
            if (c) CHECK_ARRAYS("matmul shared b", bg_f32(c), want, NB * M * N, 1e-5, 1e-6);
        }
    bg_ctx_free(ctx);
}

static void test_matmul_backward(void) {
    // C = A B with A [1,2,2] batched against shared B [2,2]: dB sums over the
    // batch, and backward accumulates into grads that already hold values.
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *a = leaf(BG_SHAPE(2, 1, 2), ARR(1, 2, 3, 4), 0);
    bg_tensor *b = leaf(BG_SHAPE(2, 2), ARR(5, 6, 7, 8), 0);
    bg_f32(b->grad)[0] = 100.0f;
    bg_tensor *c = bg_matmul(ctx, a, b, false, false);  // [2,1,2]
    CHECK(bg_backward(ctx, bg_sum_all(ctx, c)) == BG_OK);
    // dA = 1 B^T: each row [5+6, 7+8]; dB = A^T 1 = [1+3, 1+3; 2+4, 2+4] (+100).
    CHECK_T("matmul dA", a->grad, 0.0f, 11, 15, 11, 15);
    CHECK_T("matmul dB", b->grad, 0.0f, 104, 4, 6, 6);
    bg_tensor_free(a);
    bg_tensor_free(b);
    bg_ctx_free(ctx);
}

static void test_linear(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = leaf(BG_SHAPE(2, 3), ARR(1, 2, 3, 4, 5, 6), 0);
    bg_tensor *w = leaf(BG_SHAPE(2, 3), ARR(1, 0, -1, 0.5f, 0.5f, 0.5f), 0);
    bg_tensor *b = leaf(BG_SHAPE(2), ARR(10, 20), 0);
    // x w^T = [1-3, 3; 4-6, 7.5] = [-2 3; -2 7.5]; + b
    bg_tensor *y = bg_linear(ctx, x, w, b);
    CHECK_SHAPE(y, "[2,2]");
    CHECK_T("linear", y, 0.0f, 8, 23, 8, 27.5f);
    CHECK_T("linear no bias", bg_linear(ctx, x, w, NULL), 0.0f, -2, 3, -2, 7.5f);
    // Leading dims are flattened: x [2,1,3] -> [2,1,2].
    bg_tensor *x3 = bg_reshape(ctx, x, BG_SHAPE(2, 1, 3));
    bg_tensor *y3 = bg_linear(ctx, x3, w, b);
    CHECK_SHAPE(y3, "[2,1,2]");
    CHECK_T("linear 3-D", y3, 0.0f, 8, 23, 8, 27.5f);
    // Backward of sum(y * [[1,2],[3,4]]).
    bg_tensor *g = T(ctx, BG_SHAPE(2, 2), ARR(1, 2, 3, 4));
    CHECK(bg_backward_with_grad(ctx, y, g) == BG_OK);
    // dx = g w = [1*1+2*.5, 0+1, -1+1; 3+2, 2, -3+2]; dw = g^T x; db = col sums
    CHECK_T("linear dx", x->grad, 1e-6, 2, 1, 0, 5, 2, -1);
    CHECK_T("linear dw", w->grad, 1e-6, 13, 17, 21, 18, 24, 30);
    CHECK_T("linear db", b->grad, 0.0f, 4, 6);
    bg_tensor_free(x);
    bg_tensor_free(w);
    bg_tensor_free(b);
    bg_ctx_free(ctx);
}

static void test_attention(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    // q = 0: the scores are equal, so non-causal output is the mean of v's
    // rows, and causal row i is the mean of rows 0..i.
    bg_tensor *q = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(1, 3, 2));
    bg_tensor *k = T(ctx, BG_SHAPE(1, 3, 2), ARR(1, 2, 3, 4, 5, 6));
    bg_tensor *v = T(ctx, BG_SHAPE(1, 3, 2), ARR(1, 10, 2, 20, 6, 60));
    CHECK_T("attention", bg_attention(ctx, q, k, v, false), 1e-5, 3, 30, 3, 30, 3, 30);
    CHECK_T("attention causal", bg_attention(ctx, q, k, v, true), 1e-5, 1, 10, 1.5f, 15, 3, 30);
    // One key: softmax is 1 whatever the score.
    bg_tensor *q1 = T(ctx, BG_SHAPE(2, 2), ARR(0.3f, -2, 5, 1));
    CHECK_T("attention 1 key", bg_attention(ctx, q1, T(ctx, BG_SHAPE(1, 2), ARR(1, 1)),
                                            T(ctx, BG_SHAPE(1, 3), ARR(4, 5, 6)), false),
            1e-6, 4, 5, 6, 4, 5, 6);
    bg_ctx_free(ctx);
}

// ---------------------------------------------------------------------------
// shapes

static void test_reshape_permute(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = leaf(BG_SHAPE(2, 3), ARR(0, 1, 2, 3, 4, 5), 0);
    bg_tensor *r = bg_reshape(ctx, x, BG_SHAPE(3, -1));
    CHECK_SHAPE(r, "[3,2]");
    CHECK(r && r->data == x->data && r != x && r->node != NULL);
    bg_tensor *t = bg_transpose(ctx, x, 0, -1);
    CHECK_SHAPE(t, "[3,2]");
    CHECK(t && bg_is_contiguous(t));
    CHECK_T("transpose", t, 0.0f, 0, 3, 1, 4, 2, 5);
    bg_tensor *x3 = T(ctx, BG_SHAPE(2, 3, 2), ARR(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11));
    bg_tensor *p = bg_permute(ctx, x3, (int[]){2, 0, 1});  // [2,2,3], y[k,i,j] = x[i,j,k]
    CHECK_SHAPE(p, "[2,2,3]");
    CHECK_T("permute", p, 0.0f, 0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11);
    // Reshape of a non-contiguous input copies it first.
    bg_tensor *rv = bg_reshape(ctx, bg_view_transpose(ctx, x, 0, 1), BG_SHAPE(6));
    CHECK_T("reshape of a view", rv, 0.0f, 0, 3, 1, 4, 2, 5);
    // Backward: weights on r and t flow back in x's element order.
    CHECK(bg_backward_with_grad(ctx, r, T(ctx, BG_SHAPE(3, 2), ARR(1, 2, 3, 4, 5, 6))) == BG_OK);
    CHECK_T("reshape dx", x->grad, 0.0f, 1, 2, 3, 4, 5, 6);
    memset(x->grad->data, 0, bg_nbytes(x->grad));
    bg_ctx_reset(ctx);
    t = bg_transpose(ctx, x, 1, 0);
    CHECK(bg_backward_with_grad(ctx, t, T(ctx, BG_SHAPE(3, 2), ARR(1, 2, 3, 4, 5, 6))) == BG_OK);
    CHECK_T("transpose dx", x->grad, 0.0f, 1, 3, 5, 2, 4, 6);
    bg_tensor_free(x);
    bg_ctx_free(ctx);
}

static void test_concat_slice(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *a = leaf(BG_SHAPE(2, 2), ARR(1, 2, 3, 4), 0);
    bg_tensor *b = leaf(BG_SHAPE(2, 1), ARR(5, 6), 0);
    bg_tensor *c = bg_concat(ctx, (bg_tensor *[]){a, b, a}, 3, -1);
    CHECK_SHAPE(c, "[2,5]");
    CHECK_T("concat axis 1", c, 0.0f, 1, 2, 5, 1, 2, 3, 4, 6, 3, 4);
    CHECK_T("concat axis 0", bg_concat(ctx, (bg_tensor *[]){a, a}, 2, 0), 0.0f, 1, 2, 3, 4, 1, 2, 3, 4);
    // a appears twice: its gradient is the sum of both pieces.
    CHECK(bg_backward_with_grad(ctx, c, T(ctx, BG_SHAPE(2, 5), ARR(1, 2, 3, 4, 5, 6, 7, 8, 9, 10))) == BG_OK);
    CHECK_T("concat da", a->grad, 0.0f, 1 + 4, 2 + 5, 6 + 9, 7 + 10);
    CHECK_T("concat db", b->grad, 0.0f, 3, 8);

    bg_ctx_reset(ctx);
    bg_tensor *x = leaf(BG_SHAPE(2, 4), ARR(0, 1, 2, 3, 4, 5, 6, 7), 0);
    bg_tensor *s = bg_slice(ctx, x, 1, 1, 3);
    CHECK_SHAPE(s, "[2,2]");
    CHECK_T("slice", s, 0.0f, 1, 2, 5, 6);
    CHECK_T("slice empty", bg_slice(ctx, x, 0, 1, 1), 0.0f);
    CHECK_T("slice of view", bg_slice(ctx, bg_view_transpose(ctx, x, 0, 1), 0, 2, 4), 0.0f, 2, 6, 3, 7);
    CHECK(bg_backward_with_grad(ctx, s, T(ctx, BG_SHAPE(2, 2), ARR(1, 2, 3, 4))) == BG_OK);
    CHECK_T("slice dx", x->grad, 0.0f, 0, 1, 2, 0, 0, 3, 4, 0);
    bg_tensor_free(a);
    bg_tensor_free(b);
    bg_tensor_free(x);
    bg_ctx_free(ctx);
}

static void test_embedding(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *w = leaf(BG_SHAPE(4, 2), ARR(0, 1, 10, 11, 20, 21, 30, 31), 0);
    bg_tensor *ids = bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(2, 2), (const int32_t[]){3, 1, 1, 0});
    bg_tensor *y = bg_embedding(ctx, w, ids);
    CHECK_SHAPE(y, "[2,2,2]");
    CHECK_T("embedding", y, 0.0f, 30, 31, 10, 11, 10, 11, 0, 1);
    CHECK(bg_backward_with_grad(ctx, y, T(ctx, BG_SHAPE(2, 2, 2), ARR(1, 2, 3, 4, 5, 6, 7, 8))) == BG_OK);
    // id 1 appears twice: its rows add.
    CHECK_T("embedding dw", w->grad, 0.0f, 7, 8, 8, 10, 0, 0, 1, 2);
    bg_tensor_free(w);
    bg_ctx_free(ctx);
}

// ---------------------------------------------------------------------------
// norms

static void test_norms(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    // Row [1,2,3,4]: mean 2.5, var 1.25; row [2,2,2,2]: var 0 -> 0 (+ b).
    bg_tensor *x = T(ctx, BG_SHAPE(2, 4), ARR(1, 2, 3, 4, 2, 2, 2, 2));
    bg_tensor *w = T(ctx, BG_SHAPE(4), ARR(1, 2, 1, 1));
    bg_tensor *b = T(ctx, BG_SHAPE(4), ARR(0, 0, 0, 1));
    const float r = 1.0f / sqrtf(1.25f + 1e-5f);
    CHECK_T("layernorm", bg_layernorm(ctx, x, w, b, 1e-5f), 1e-5, -1.5f * r, -0.5f * r * 2, 0.5f * r,
            1.5f * r + 1, 0, 0, 0, 1);
    CHECK_T("layernorm no affine", bg_layernorm(ctx, x, NULL, NULL, 1e-5f), 1e-5, -1.5f * r,
            -0.5f * r, 0.5f * r, 1.5f * r, 0, 0, 0, 0);
    // RMSNorm of [3,4]: rms = sqrt(12.5); of [0,-2]: sqrt(2).
    bg_tensor *x2 = T(ctx, BG_SHAPE(2, 2), ARR(3, 4, 0, -2));
    const float r1 = 1.0f / sqrtf(12.5f), r2 = 1.0f / sqrtf(2.0f);
    CHECK_T("rmsnorm", bg_rmsnorm(ctx, x2, T(ctx, BG_SHAPE(2), ARR(1, 2)), 0.0f), 1e-6, 3 * r1,
            8 * r1, 0, -4 * r2);
    bg_ctx_free(ctx);
}

// ---------------------------------------------------------------------------
// convolution and pooling

static void test_conv2d(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = T(ctx, BG_SHAPE(1, 1, 3, 3), ARR(1, 2, 3, 4, 5, 6, 7, 8, 9));
    bg_tensor *ones = bg_full(ctx, BG_SHAPE(1, 1, 2, 2), 1.0f);
    bg_tensor *y = bg_conv2d(ctx, x, ones, NULL, NULL);
    CHECK_SHAPE(y, "[1,1,2,2]");
    CHECK_T("conv2d", y, 1e-6, 12, 16, 24, 28);
    // padding 1, stride 2: windows start at -1 and 1.
    bg_conv2d_opts o = BG_CONV2D_DEFAULTS;
    o.padding[0] = o.padding[1] = 1;
    o.stride[0] = o.stride[1] = 2;
    CHECK_T("conv2d pad stride", bg_conv2d(ctx, x, ones, T(ctx, BG_SHAPE(1), ARR(0.5f)), &o), 1e-6,
            1.5f, 5.5f, 11.5f, 28.5f);
    // dilation 2: the four corners.
    o = BG_CONV2D_DEFAULTS;
    o.dilation[0] = o.dilation[1] = 2;
    CHECK_T("conv2d dilation", bg_conv2d(ctx, x, ones, NULL, &o), 1e-6, 20);
    // groups 2, 1x1 kernels: each output channel scales its own input channel.
    bg_tensor *x2 = T(ctx, BG_SHAPE(1, 2, 1, 2), ARR(1, 2, 3, 4));
    o = BG_CONV2D_DEFAULTS;
    o.groups = 2;
    bg_tensor *y2 = bg_conv2d(ctx, x2, T(ctx, BG_SHAPE(2, 1, 1, 1), ARR(2, -3)),
                              T(ctx, BG_SHAPE(2), ARR(1, 0)), &o);
    CHECK_SHAPE(y2, "[1,2,1,2]");
    CHECK_T("conv2d groups", y2, 1e-6, 3, 5, -9, -12);
    // Two images, two input channels mixed by one 1x2 kernel per output channel.
    bg_tensor *x3 = T(ctx, BG_SHAPE(2, 2, 1, 2), ARR(1, 2, 3, 4, 5, 6, 7, 8));
    bg_tensor *y3 = bg_conv2d(ctx, x3, T(ctx, BG_SHAPE(1, 2, 1, 2), ARR(1, 0, 0, 1)), NULL, NULL);
    CHECK_T("conv2d channels", y3, 1e-6, 1 + 4, 5 + 8);
    bg_ctx_free(ctx);
}

static void test_pooling(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = leaf(BG_SHAPE(1, 1, 4, 4),
                        ARR(1, 5, 2, 0, 3, 4, 8, 7, -1, -2, -3, -4, -5, -6, -7, -0.5f), 0);
    bg_tensor *y = bg_max_pool2d(ctx, x, 2, 2, 0);
    CHECK_SHAPE(y, "[1,1,2,2]");
    CHECK_T("max_pool2d", y, 0.0f, 5, 8, -1, -0.5f);
    CHECK(bg_backward_with_grad(ctx, y, T(ctx, BG_SHAPE(1, 1, 2, 2), ARR(1, 2, 3, 4))) == BG_OK);
    CHECK_T("max_pool2d dx", x->grad, 0.0f, 0, 1, 0, 0, 0, 0, 2, 0, 3, 0, 0, 0, 0, 0, 0, 4);
    bg_ctx_reset(ctx);
    // avg with padding counts the padding: 3x3 input, k 2, s 2, p 1.
    bg_tensor *x2 = T(ctx, BG_SHAPE(1, 1, 3, 3), ARR(1, 2, 3, 4, 5, 6, 7, 8, 9));
    CHECK_T("avg_pool2d pad", bg_avg_pool2d(ctx, x2, 2, 2, 1), 1e-6, 0.25f, 1.25f, 2.75f, 7);
    CHECK_T("max_pool2d pad", bg_max_pool2d(ctx, x2, 2, 2, 1), 0.0f, 1, 3, 7, 9);
    CHECK_T("avg_pool2d stride 1", bg_avg_pool2d(ctx, x2, 2, 1, 0), 1e-6, 3, 4, 6, 7);
    CHECK_T("max_pool2d stride 0", bg_max_pool2d(ctx, x2, 2, 0, 0), 0.0f, 5);
    bg_tensor_free(x);
    bg_ctx_free(ctx);
}

// ---------------------------------------------------------------------------
// gradcheck

typedef enum gc_case {
    GC_MATMUL_BATCHED_NT, GC_MATMUL_SHARED_TN, GC_MATMUL_SHARED_NT, GC_LINEAR, GC_LAYERNORM,
    GC_RMSNORM, GC_CONV2D, GC_CONCAT_SLICE, GC_PERMUTE, GC_EMBEDDING, GC_MAX_POOL, GC_AVG_POOL,
    GC_ATTENTION, GC_COUNT
} gc_case;

static const char *const gc_names[GC_COUNT] = {
    [GC_MATMUL_BATCHED_NT] = "matmul batched nt", [GC_MATMUL_SHARED_TN] = "matmul shared tn",
    [GC_MATMUL_SHARED_NT] = "matmul shared nt",   [GC_LINEAR] = "linear",
    [GC_LAYERNORM] = "layernorm",                 [GC_RMSNORM] = "rmsnorm",
    [GC_CONV2D] = "conv2d",                       [GC_CONCAT_SLICE] = "concat+slice",
    [GC_PERMUTE] = "permute",                     [GC_EMBEDDING] = "embedding",
    [GC_MAX_POOL] = "max_pool2d",                 [GC_AVG_POOL] = "avg_pool2d",
    [GC_ATTENTION] = "attention causal",
};

static bg_tensor *gc_fn(bg_ctx *ctx, bg_tensor *const *in, void *user) {
    switch (*(const gc_case *)user) {
    case GC_MATMUL_BATCHED_NT: return bg_matmul(ctx, in[0], in[1], false, true);
    case GC_MATMUL_SHARED_TN: return bg_matmul(ctx, in[0], in[1], true, false);
    case GC_MATMUL_SHARED_NT: return bg_matmul(ctx, in[0], in[1], false, true);
    case GC_LINEAR: return bg_linear(ctx, in[0], in[1], in[2]);
    case GC_LAYERNORM: return bg_layernorm(ctx, in[0], in[1], in[2], 1e-5f);
    case GC_RMSNORM: return bg_rmsnorm(ctx, in[0], in[1], 1e-5f);
    case GC_CONV2D: {
        bg_conv2d_opts o = {.stride = {2, 1}, .padding = {1, 0}, .dilation = {1, 2}, .groups = 2};
        return bg_conv2d(ctx, in[0], in[1], in[2], &o);
    }
    case GC_CONCAT_SLICE:
        return bg_slice(ctx, bg_concat(ctx, (bg_tensor *[]){in[0], in[1]}, 2, 1), 1, 1, 4);
    case GC_PERMUTE: return bg_permute(ctx, in[0], (int[]){1, 2, 0});
    case GC_EMBEDDING: {
        bg_tensor *ids = bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(4), (const int32_t[]){2, 0, 2, 1});
        return bg_embedding(ctx, in[0], ids);
    }
    case GC_MAX_POOL: return bg_max_pool2d(ctx, in[0], 2, 1, 1);
    case GC_AVG_POOL: return bg_avg_pool2d(ctx, in[0], 3, 2, 1);
    case GC_ATTENTION: return bg_attention(ctx, in[0], in[1], in[2], true);
    default: return NULL;
    }
}

static void test_gradcheck(void) {
    // Distinct values with gaps > 2 eps so that max pooling has no near-ties.
    float spread[25];
    for (int i = 0; i < 25; i++) spread[i] = (float)((i * 7) % 25) * 0.1f - 1.2f;
    const struct {
        gc_case c;
        int n;
        int ndim[3];
        int64_t shape[3][4];
        const float *data[3];
        unsigned no_grad;  /* bit i: input i does not require grad */
    } cases[] = {
        {GC_MATMUL_BATCHED_NT, 2, {3, 3}, {{2, 2, 3}, {2, 4, 3}}, {0}, 0},
        {GC_MATMUL_SHARED_TN, 2, {3, 2}, {{2, 3, 2}, {3, 4}}, {0}, 0},
        {GC_MATMUL_SHARED_NT, 2, {3, 2}, {{2, 2, 3}, {4, 3}}, {0}, 0},
        {GC_LINEAR, 3, {3, 2, 1}, {{2, 2, 3}, {4, 3}, {4}}, {0}, 0},
        {GC_LAYERNORM, 3, {2, 1, 1}, {{3, 5}, {5}, {5}}, {0}, 0},
        {GC_LAYERNORM, 3, {2, 1, 1}, {{2, 4}, {4}, {4}}, {0}, 1u},
        {GC_RMSNORM, 2, {2, 1}, {{3, 5}, {5}}, {0}, 0},
        {GC_RMSNORM, 2, {2, 1}, {{2, 3}, {3}}, {0}, 1u},
        {GC_CONV2D, 3, {4, 4, 1}, {{2, 4, 4, 5}, {4, 2, 2, 2}, {4}}, {0}, 0},
        {GC_CONV2D, 3, {4, 4, 1}, {{1, 2, 3, 4}, {2, 1, 2, 2}, {2}}, {0}, 3u},
        {GC_CONCAT_SLICE, 2, {2, 2}, {{2, 2}, {2, 3}}, {0}, 0},
        {GC_PERMUTE, 1, {3}, {{2, 3, 2}}, {0}, 0},
        {GC_EMBEDDING, 1, {2}, {{3, 2}}, {0}, 0},
        {GC_MAX_POOL, 1, {4}, {{1, 1, 5, 5}}, {spread}, 0},
        {GC_AVG_POOL, 1, {4}, {{1, 2, 5, 4}}, {0}, 0},
        {GC_ATTENTION, 3, {3, 3, 3}, {{2, 3, 2}, {2, 3, 2}, {2, 3, 3}}, {0}, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bg_tensor *in[3] = {NULL};
        for (int i = 0; i < cases[c].n; i++) {
            in[i] = leaf(cases[c].ndim[i], cases[c].shape[i], cases[c].data[i], 100 * c + i);
            // Only some inputs want grads: the kernels' scratch-buffer paths.
            if (cases[c].no_grad >> i & 1) bg_set_requires_grad(in[i], false);
        }
        gc_case cc = cases[c].c;
        bg_gradcheck_report rep;
        bg_status st = bg_gradcheck(gc_fn, in, cases[c].n, &cc, 1e-2, 2e-3, 1e-2, &rep);
        CHECK_MSG(st == BG_OK && rep.checked > 0, "gradcheck %s: %s (checked %lld)", gc_names[cc],
                  bg_last_error(), (long long)rep.checked);
        for (int i = 0; i < cases[c].n; i++) bg_tensor_free(in[i]);
    }
}

// ---------------------------------------------------------------------------
// errors

static void test_errors(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *a = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(128, 784));
    bg_tensor *b = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(512, 512));
    CHECK(bg_matmul(ctx, a, b, false, false) == NULL);
    CHECK(bg_ctx_status(ctx) == BG_ERR_SHAPE);
    CHECK_STR(bg_ctx_error(ctx), "matmul: inner dimensions differ: a is [128,784], b is [512,512]");
    CHECK_STR(bg_last_error(), "matmul: inner dimensions differ: a is [128,784], b is [512,512]");
    // Sticky: later ops return NULL and keep the first message.
    CHECK(bg_linear(ctx, a, b, NULL) == NULL);
    CHECK(bg_reshape(ctx, a, BG_SHAPE(-1)) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "matmul: inner dimensions differ: a is [128,784], b is [512,512]");

#define EXPECT_ERR(call, msg)                \
    do {                                     \
        bg_ctx_reset(ctx);                   \
        CHECK((call) == NULL);               \
        CHECK_STR(bg_ctx_error(ctx), msg);   \
    } while (0)
#define Z(...) bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(__VA_ARGS__))
#define ZI(...) bg_zeros(ctx, BG_DTYPE_I32, BG_SHAPE(__VA_ARGS__))
    EXPECT_ERR(bg_matmul(ctx, Z(2, 3), Z(4, 5), true, false),
               "matmul: inner dimensions differ: a is [2,3] (transposed), b is [4,5]");
    EXPECT_ERR(bg_matmul(ctx, Z(2, 2, 3), Z(3, 3, 2), false, false),
               "matmul: batch dimensions differ: a is [2,2,3], b is [3,3,2]");
    EXPECT_ERR(bg_matmul(ctx, Z(3), Z(3, 2), false, false),
               "matmul: operands need at least 2 dims: a is [3], b is [3,2]");
    EXPECT_ERR(bg_matmul(ctx, ZI(2, 3), Z(3, 2), false, false), "matmul: a is i32 [2,3], want f32");
    EXPECT_ERR(bg_matmul(ctx, Z(2, 3), NULL, false, false), "matmul: b is NULL");
    EXPECT_ERR(bg_linear(ctx, NULL, Z(4, 3), NULL), "linear: x is NULL");
    EXPECT_ERR(bg_linear(ctx, Z(2, 5), Z(4, 3), NULL),
               "linear: input features differ: x is [2,5], w is [4,3]");
    EXPECT_ERR(bg_linear(ctx, Z(2, 3), Z(4, 3), Z(3)), "linear: bias shape differs: b is [3], want [4]");
    EXPECT_ERR(bg_attention(ctx, Z(2, 3, 4), Z(2, 3, 5), Z(2, 3, 4), false),
               "attention: head dims differ: q is [2,3,4], k is [2,3,5]");

    EXPECT_ERR(bg_reshape(ctx, Z(2, 3), BG_SHAPE(4, 2)), "reshape: element counts differ: [2,3] to [4,2]");
    EXPECT_ERR(bg_reshape(ctx, Z(2, 3), BG_SHAPE(4, -1)),
               "reshape: element counts differ: [2,3] to [4,-1]");
    EXPECT_ERR(bg_reshape(ctx, Z(2, 3), BG_SHAPE(-1, -1)),
               "reshape: only one dim may be -1: [2,3] to [-1,-1]");
    EXPECT_ERR(bg_permute(ctx, Z(2, 3), (int[]){0, 0}),
               "permute: perm[1] = 0 is not a permutation of the dims of [2,3]");
    EXPECT_ERR(bg_transpose(ctx, Z(2, 3), 0, 2), "transpose: axis 2 is out of range for [2,3]");
    EXPECT_ERR(bg_concat(ctx, (bg_tensor *[]){Z(2, 2), Z(2, 2)}, 2, 2),
               "concat: axis 2 is out of range for [2,2]");
    EXPECT_ERR(bg_concat(ctx, (bg_tensor *[]){Z(2, 2), Z(2, 3)}, 2, 0),
               "concat: shapes differ outside axis 0: input 0 is [2,2], input 1 is [2,3]");
    EXPECT_ERR(bg_concat(ctx, (bg_tensor *[]){Z(2, 2), NULL}, 2, 0), "concat: input 1 is NULL");
    EXPECT_ERR(bg_slice(ctx, Z(2, 4), -3, 0, 1), "slice: axis -3 is out of range for [2,4]");
    EXPECT_ERR(bg_slice(ctx, Z(2, 4), 1, 1, 5), "slice: [1, 5) is outside axis 1 of [2,4]");
    EXPECT_ERR(bg_embedding(ctx, Z(4, 2), bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(2, 2),
                                                       (const int32_t[]){0, 1, 4, 0})),
               "embedding: ids[1,0] = 4 is outside [0, 4)");
    EXPECT_ERR(bg_embedding(ctx, Z(4, 2), bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(3),
                                                       (const int32_t[]){0, -1, 2})),
               "embedding: ids[1] = -1 is outside [0, 4)");
    EXPECT_ERR(bg_embedding(ctx, Z(4, 2), Z(3)), "embedding: ids is f32 [3], want i32");

    EXPECT_ERR(bg_layernorm(ctx, Z(2, 4), Z(3), NULL, 1e-5f), "layernorm: w must be [4] for x [2,4]: w is [3]");
    EXPECT_ERR(bg_rmsnorm(ctx, Z(2, 4), NULL, -1.0f), "rmsnorm: eps must be >= 0: got -1");

    bg_conv2d_opts g2 = BG_CONV2D_DEFAULTS;
    g2.groups = 2;
    EXPECT_ERR(bg_conv2d(ctx, Z(1, 4, 5, 5), Z(8, 3, 3, 3), NULL, &g2),
               "conv2d: channels per group differ: x is [1,4,5,5] with groups 2 (2 per group), w is [8,3,3,3]");
    EXPECT_ERR(bg_conv2d(ctx, Z(1, 3, 5, 5), Z(8, 3, 3, 3), NULL, &g2),
               "conv2d: input channels are not divisible by groups: x is [1,3,5,5], groups 2");
    EXPECT_ERR(bg_conv2d(ctx, Z(1, 1, 3, 3), Z(1, 1, 5, 5), NULL, NULL),
               "conv2d: kernel 5x5 (dilation 1x1) does not fit the padded input 3x3 (padding 0x0): "
               "x is [1,1,3,3], w is [1,1,5,5]");
    EXPECT_ERR(bg_conv2d(ctx, Z(1, 3, 3), Z(1, 1, 1, 1), NULL, NULL),
               "conv2d: x must be 4-D [N,C,H,W]: x is [1,3,3]");
    EXPECT_ERR(bg_conv2d(ctx, Z(1, 1, 3, 3), Z(2, 1, 1, 1), Z(3), NULL),
               "conv2d: b must be [2] for w [2,1,1,1]: b is [3]");
    EXPECT_ERR(bg_max_pool2d(ctx, Z(1, 1, 4, 4), 3, 1, 2),
               "max_pool2d: padding must be at most half the kernel: got padding 2, kernel 3");
    EXPECT_ERR(bg_max_pool2d(ctx, Z(1, 1, 4, 4), 2, -1, 0),
               "max_pool2d: kernel must be >= 1, stride >= 0 and padding >= 0: got kernel 2, stride -1, padding 0");
    EXPECT_ERR(bg_avg_pool2d(ctx, Z(1, 1, 2, 2), 3, 1, 0),
               "avg_pool2d: kernel 3 is larger than the padded input: x is [1,1,2,2], padding 0");
#undef EXPECT_ERR
#undef Z
#undef ZI
    bg_ctx_free(ctx);
}

// ---------------------------------------------------------------------------
// no grad: nothing is recorded, results are the same

static void test_no_grad(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *w = leaf(BG_SHAPE(3, 2), ARR(1, 2, 3, 4, 5, 6), 0);
    bool g = bg_set_grad_enabled(ctx, false);
    bg_tensor *y = bg_linear(ctx, T(ctx, BG_SHAPE(1, 2), ARR(1, -1)), w, NULL);
    bg_set_grad_enabled(ctx, g);
    CHECK_T("linear no grad", y, 0.0f, -1, -1, -1);
    CHECK(y && !y->requires_grad && y->node == NULL);
    bg_tensor_free(w);
    bg_ctx_free(ctx);
}

int main(void) {
    test_matmul_2d();
    test_matmul_batched();
    test_matmul_backward();
    test_linear();
    test_attention();
    test_reshape_permute();
    test_concat_slice();
    test_embedding();
    test_norms();
    test_conv2d();
    test_pooling();
    test_gradcheck();
    test_errors();
    test_no_grad();
    return bg_test_finish();
}
