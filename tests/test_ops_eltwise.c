/* test_ops_eltwise.c — the element-wise and reduction ops: forward values on
 * small hand-checked cases (values marked "torch" were printed by torch 1.13),
 * broadcasting forward and backward, a few gradchecks, and the exact error
 * messages (broadcast, dtype, NULL, sticky). The full per-op gradcheck suite
 * lives in test_gradcheck.c. */
#include <math.h>
#include <string.h>

#include "tests/test_util.h"

#define ARR(...) ((const float[]){__VA_ARGS__})
#define NARR(...) (int64_t)(sizeof((float[]){__VA_ARGS__}) / sizeof(float))
#define CHECK_T(what, t, atol, ...)                                                        \
    do {                                                                                   \
        const bg_tensor *t_ = (t);                                                         \
        if (CHECK_MSG(t_ != NULL, "%s is NULL: %s", what, bg_last_error()) &&              \
            CHECK_MSG(bg_numel(t_) == NARR(__VA_ARGS__), "%s has %lld elements", what,     \
                      (long long)bg_numel(t_)))                                            \
            CHECK_ARRAYS(what, bg_f32(t_), ARR(__VA_ARGS__), NARR(__VA_ARGS__), atol, 1e-6); \
    } while (0)

static bg_tensor *tensor(bg_ctx *ctx, int ndim, const int64_t *shape, const float *v) {
    return bg_from_data(ctx, BG_DTYPE_F32, ndim, shape, v);
}

/* A persistent leaf that requires grad. */
static bg_tensor *leaf(int ndim, const int64_t *shape, const float *v) {
    bg_tensor *t = bg_tensor_new(BG_DTYPE_F32, ndim, shape);
    memcpy(t->data, v, bg_nbytes(t));
    bg_set_requires_grad(t, true);
    return t;
}

static bool has_shape(const bg_tensor *t, int ndim, const int64_t *shape) {
    if (!t || t->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return false;
    return true;
}

// ---------------------------------------------------------------------------
// forward values

static void test_binary_forward(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *a = tensor(ctx, BG_SHAPE(2, 3), ARR(1, 2, 3, 4, 5, 6));
    bg_tensor *r = tensor(ctx, BG_SHAPE(3), ARR(10, 20, 30));
    bg_tensor *c = tensor(ctx, BG_SHAPE(2, 1), ARR(100, 200));
    CHECK_T("add same", bg_add(ctx, a, a), 0, 2, 4, 6, 8, 10, 12);
    CHECK_T("add rows", bg_add(ctx, a, r), 0, 11, 22, 33, 14, 25, 36);
    CHECK_T("sub rows (a broadcast)", bg_sub(ctx, r, a), 0, 9, 18, 27, 6, 15, 24);
    CHECK_T("mul cols", bg_mul(ctx, a, c), 0, 100, 200, 300, 800, 1000, 1200);
    CHECK_T("div outer", bg_div(ctx, c, r), 1e-6, 10, 5, 100.0f / 30, 20, 10, 200.0f / 30);
    bg_tensor *o = bg_sub(ctx, c, r);  // [2,1] - [3] -> [2,3]
    CHECK(has_shape(o, BG_SHAPE(2, 3)));
    CHECK_T("sub outer", o, 0, 90, 80, 70, 190, 180, 170);
    // [2,1,3] * [4,1] -> [2,4,3]
    bg_tensor *a3 = bg_view_reshape(ctx, a, BG_SHAPE(2, 1, 3));
    bg_tensor *k = tensor(ctx, BG_SHAPE(4, 1), ARR(1, -1, 2, 0));
    bg_tensor *m = bg_mul(ctx, a3, k);
    CHECK(has_shape(m, BG_SHAPE(2, 4, 3)));
    CHECK_T("mul 3d", m, 0, 1, 2, 3, -1, -2, -3, 2, 4, 6, 0, 0, 0,
            4, 5, 6, -4, -5, -6, 8, 10, 12, 0, 0, 0);
    // A transposed (non-contiguous) input, same shape and broadcast.
    bg_tensor *at = bg_view_transpose(ctx, a, 0, 1);  // [3,2]: 1 4 / 2 5 / 3 6
    bg_tensor *b32 = tensor(ctx, BG_SHAPE(3, 2), ARR(1, 1, 1, 1, 1, 1));
    CHECK_T("add transposed", bg_add(ctx, at, b32), 0, 2, 5, 3, 6, 4, 7);
    CHECK_T("mul transposed bcast", bg_mul(ctx, at, tensor(ctx, BG_SHAPE(2), ARR(1, 10))), 0,
            1, 40, 2, 50, 3, 60);
    // A scalar ([] shape) broadcasts to everything.
    bg_tensor *s = bg_from_data(ctx, BG_DTYPE_F32, 0, NULL, ARR(2));
    CHECK_T("mul scalar", bg_mul(ctx, a, s), 0, 2, 4, 6, 8, 10, 12);
    CHECK(bg_ctx_status(ctx) == BG_OK);
    bg_ctx_free(ctx);
}

static void test_unary_forward(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = tensor(ctx, BG_SHAPE(6), ARR(-2, -0.5f, 0, 0.5f, 1, 3));
    CHECK_T("scale", bg_scale(ctx, x, 3), 0, -6, -1.5f, 0, 1.5f, 3, 9);
    CHECK_T("neg", bg_neg(ctx, x), 0, 2, 0.5f, 0, -0.5f, -1, -3);
    CHECK_T("abs", bg_abs(ctx, x), 0, 2, 0.5f, 0, 0.5f, 1, 3);
    CHECK_T("relu", bg_relu(ctx, x), 0, 0, 0, 0, 0.5f, 1, 3);
    CHECK_T("leaky_relu", bg_leaky_relu(ctx, x, 0.1f), 1e-7, -0.2f, -0.05f, 0, 0.5f, 1, 3);
    CHECK_T("clamp", bg_clamp(ctx, x, -1, 0.5f), 0, -1, -0.5f, 0, 0.5f, 0.5f, 0.5f);
    CHECK_T("exp", bg_exp(ctx, x), 1e-6, 0.13533528f, 0.60653066f, 1, 1.6487213f, 2.7182818f,
            20.085537f);
    bg_tensor *p = tensor(ctx, BG_SHAPE(3), ARR(1, 4, 0.25f));
    CHECK_T("log", bg_log(ctx, p), 1e-6, 0, 1.3862944f, -1.3862944f);
    CHECK_T("sqrt", bg_sqrt(ctx, p), 1e-7, 1, 2, 0.5f);
    // torch
    CHECK_T("gelu", bg_gelu(ctx, x, false), 1e-6, -0.04550010f, -0.15426879f, 0, 0.34573120f,
            0.84134471f, 2.99595022f);
    CHECK_T("gelu tanh", bg_gelu(ctx, x, true), 1e-6, -0.04540229f, -0.15428600f, 0, 0.34571400f,
            0.84119201f, 2.99636269f);
    CHECK_T("silu", bg_silu(ctx, x), 1e-6, -0.23840584f, -0.18877034f, 0, 0.31122968f,
            0.73105860f, 2.85772252f);
    CHECK_T("sigmoid", bg_sigmoid(ctx, x), 1e-6, 0.11920292f, 0.37754068f, 0.5f, 0.62245935f,
            0.73105860f, 0.95257413f);
    CHECK_T("tanh", bg_tanh(ctx, x), 1e-6, -0.96402758f, -0.46211717f, 0, 0.46211717f,
            0.76159418f, 0.99505478f);
    CHECK(bg_ctx_status(ctx) == BG_OK);
    bg_ctx_free(ctx);
}

static void test_reduce_forward(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = tensor(ctx, BG_SHAPE(2, 3), ARR(1, 2, 3, 4, 0, -1));
    bg_tensor *s0 = bg_sum(ctx, x, 0, false), *s1 = bg_sum(ctx, x, -1, true);
    CHECK(has_shape(s0, BG_SHAPE(3)) && has_shape(s1, BG_SHAPE(2, 1)));
    CHECK_T("sum 0", s0, 0, 5, 2, 2);
    CHECK_T("sum -1 keepdim", s1, 0, 6, 3);
    CHECK_T("mean 1", bg_mean(ctx, x, 1, false), 1e-7, 2, 1);
    bg_tensor *sa = bg_sum_all(ctx, x);
    CHECK(sa && sa->ndim == 0 && bg_numel(sa) == 1);
    CHECK_T("sum_all", sa, 0, 9);
    CHECK_T("mean_all", bg_mean_all(ctx, x), 1e-7, 1.5f);
    CHECK_T("max 0", bg_max(ctx, x, 0, false), 0, 4, 2, 3);
    CHECK_T("max 1", bg_max(ctx, x, 1, true), 0, 3, 4);
    CHECK_T("max_all", bg_max_all(ctx, x), 0, 4);
    // Middle axis of a 3-D tensor (the strided paths).
    bg_tensor *y = tensor(ctx, BG_SHAPE(2, 2, 2), ARR(1, 2, 3, 4, 5, 6, 7, 8));
    CHECK_T("sum mid", bg_sum(ctx, y, 1, false), 0, 4, 6, 12, 14);
    CHECK_T("max mid", bg_max(ctx, y, 1, false), 0, 3, 4, 7, 8);
    // torch
    bg_tensor *z = tensor(ctx, BG_SHAPE(2, 3), ARR(1, 2, 3, 4, 0, -1));
    CHECK_T("softmax 0", bg_softmax(ctx, z, 0), 1e-6, 0.04742587f, 0.88079703f, 0.98201376f,
            0.95257413f, 0.11920292f, 0.01798621f);
    CHECK_T("log_softmax 1", bg_log_softmax(ctx, z, 1), 1e-5, -2.40760589f, -1.40760589f,
            -0.40760595f, -0.02474492f, -4.02474499f, -5.02474499f);
    bg_tensor *zt = bg_view_transpose(ctx, z, 0, 1);  // softmax over a transposed view
    CHECK_T("softmax transposed", bg_softmax(ctx, zt, 1), 1e-6, 0.04742587f, 0.95257413f,
            0.88079703f, 0.11920292f, 0.98201376f, 0.01798621f);
    CHECK_T("mse", bg_mse(ctx, x, bg_full(ctx, BG_SHAPE(2, 3), 1)), 1e-6,
            (0 + 1 + 4 + 9 + 1 + 4) / 6.0f);
    CHECK(bg_ctx_status(ctx) == BG_OK);
    bg_ctx_free(ctx);
}

// ---------------------------------------------------------------------------
// backward

/* loss = sum_all(f(a, b)); checks a's and b's grads. */
static void test_broadcast_backward(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *a = leaf(BG_SHAPE(2, 3), ARR(1, 2, 3, 4, 5, 6));
    bg_tensor *b = leaf(BG_SHAPE(3), ARR(1, 2, 4));
    bg_tensor *c = leaf(BG_SHAPE(2, 1), ARR(2, -1));

    CHECK(bg_backward(ctx, bg_sum_all(ctx, bg_add(ctx, a, b))) == BG_OK);
    CHECK_T("add da", a->grad, 0, 1, 1, 1, 1, 1, 1);
    CHECK_T("add db", b->grad, 0, 2, 2, 2);
    // Accumulation: a second backward adds on top.
    bg_ctx_reset(ctx);
    CHECK(bg_backward(ctx, bg_sum_all(ctx, bg_sub(ctx, a, b))) == BG_OK);
    CHECK_T("sub da (accumulated)", a->grad, 0, 2, 2, 2, 2, 2, 2);
    CHECK_T("sub db (accumulated)", b->grad, 0, 0, 0, 0);

    memset(a->grad->data, 0, bg_nbytes(a));
    memset(b->grad->data, 0, bg_nbytes(b));
    bg_ctx_reset(ctx);
    CHECK(bg_backward(ctx, bg_sum_all(ctx, bg_mul(ctx, a, b))) == BG_OK);
    CHECK_T("mul da", a->grad, 0, 1, 2, 4, 1, 2, 4);
    CHECK_T("mul db = column sums of a", b->grad, 0, 5, 7, 9);

    // [2,1] / [3] -> [2,3]: both sides broadcast.
    bg_ctx_reset(ctx);
    CHECK(bg_backward(ctx, bg_sum_all(ctx, bg_div(ctx, c, b))) == BG_OK);
    CHECK_T("div dc", c->grad, 1e-6, 1.75f, 1.75f);  // sum_j 1/b_j
    // mul's db was 5,7,9; d/db_j sum_i c_i/b_j = -(sum_i c_i)/b_j^2 = -1/b_j^2
    CHECK_T("div db", b->grad, 1e-6, 5 - 1.0f, 7 - 0.25f, 9 - 0.0625f);

    // A chain: mean_0(relu(3 - a)): 3 - a = 2 1 0 / -1 -2 -3, relu'(0) = 0.
    memset(a->grad->data, 0, bg_nbytes(a));
    bg_ctx_reset(ctx);
    bg_tensor *three = bg_full(ctx, 0, NULL, 3.0f);
    bg_tensor *m = bg_mean(ctx, bg_relu(ctx, bg_add(ctx, bg_scale(ctx, a, -1), three)), 0, false);
    CHECK(m && bg_backward(ctx, bg_sum_all(ctx, m)) == BG_OK);
    CHECK_T("mean relu(3-a) da", a->grad, 0, -0.5f, -0.5f, 0, 0, 0, 0);
    bg_tensor_free(a);
    bg_tensor_free(b);
    bg_tensor_free(c);
    bg_ctx_free(ctx);
}

static void test_max_and_loss_backward(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    // Ties: the gradient goes to the first max only.
    bg_tensor *x = leaf(BG_SHAPE(2, 3), ARR(3, 1, 3, 0, 5, 5));
    CHECK(bg_backward(ctx, bg_sum_all(ctx, bg_max(ctx, x, 1, false))) == BG_OK);
    CHECK_T("max dx", x->grad, 0, 1, 0, 0, 0, 1, 0);
    bg_ctx_reset(ctx);
    memset(x->grad->data, 0, bg_nbytes(x));
    CHECK(bg_backward(ctx, bg_max_all(ctx, x)) == BG_OK);
    CHECK_T("max_all dx", x->grad, 0, 0, 0, 0, 0, 1, 0);

    // cross_entropy against torch 1.13 (ignore_index -100 at row 2).
    bg_tensor *l = leaf(BG_SHAPE(4, 3), ARR(1, 2, 0.5f, 0, -1, 3, 2, 2, 2, 0.3f, -0.2f, 0.1f));
    bg_tensor *y = bg_tensor_new(BG_DTYPE_I32, BG_SHAPE(4));
    memcpy(y->data, (int32_t[]){1, 2, -100, 0}, 16);
    bg_ctx_reset(ctx);
    bg_tensor *loss = bg_cross_entropy(ctx, l, y, NULL);
    CHECK(loss && loss->ndim == 0);
    CHECK_T("ce", loss, 1e-6, 0.4720640182495117f);
    CHECK(bg_backward(ctx, loss) == BG_OK);
    CHECK_T("ce dlogits", l->grad, 1e-6, 0.07707463f, -0.12382277f, 0.04674813f, 0.01553754f,
            0.00571594f, -0.02125349f, 0, 0, 0, -0.19589111f, 0.08336292f, 0.11252817f);

    memset(l->grad->data, 0, bg_nbytes(l));
    bg_ctx_reset(ctx);
    loss = bg_cross_entropy(ctx, l, y, &(bg_cross_entropy_opts){.label_smoothing = 0.1f, .ignore_index = -100});
    CHECK_T("ce smooth", loss, 1e-6, 0.5853973627090454f);
    CHECK(bg_backward(ctx, loss) == BG_OK);
    CHECK_T("ce smooth dlogits", l->grad, 1e-6, 0.06596351f, -0.10160054f, 0.03563701f,
            0.00442643f, -0.00539517f, 0.00096874f, 0, 0, 0, -0.17366888f, 0.07225180f,
            0.10141705f);

    // ignore_index inside [0,C) ignores real classes.
    memcpy(y->data, (int32_t[]){1, 2, 0, 0}, 16);
    memset(l->grad->data, 0, bg_nbytes(l));
    bg_ctx_reset(ctx);
    loss = bg_cross_entropy(ctx, l, y, &(bg_cross_entropy_opts){.label_smoothing = 0.2f, .ignore_index = 0});
    CHECK_T("ce ignore 0", loss, 1e-6, 0.5817930698394775f);
    CHECK(bg_backward(ctx, loss) == BG_OK);
    CHECK_T("ce ignore 0 dlogits", l->grad, 1e-6, 0.08227861f, -0.11906749f, 0.03678885f,
            -0.01002702f, -0.02475942f, 0.03478643f, 0, 0, 0, 0, 0, 0);

    // Every label ignored: 0 loss and zero gradient (PyTorch gives NaN).
    memcpy(y->data, (int32_t[]){-100, -100, -100, -100}, 16);
    memset(l->grad->data, 0, bg_nbytes(l));
    bg_ctx_reset(ctx);
    loss = bg_cross_entropy(ctx, l, y, NULL);
    CHECK_T("ce all ignored", loss, 0, 0);
    CHECK(bg_backward(ctx, loss) == BG_OK);
    CHECK_T("ce all ignored dlogits", l->grad, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);

    // mse: both inputs get 2(a-b)/n.
    bg_tensor *a = leaf(BG_SHAPE(2), ARR(1, 3)), *b = leaf(BG_SHAPE(2), ARR(2, 0));
    bg_ctx_reset(ctx);
    loss = bg_mse(ctx, a, b);
    CHECK_T("mse", loss, 1e-6, 5);
    CHECK(bg_backward(ctx, loss) == BG_OK);
    CHECK_T("mse da", a->grad, 1e-6, -1, 3);
    CHECK_T("mse db", b->grad, 1e-6, 1, -3);
    bg_tensor_free(a);
    bg_tensor_free(b);
    bg_tensor_free(x);
    bg_tensor_free(l);
    bg_tensor_free(y);
    bg_ctx_free(ctx);
}

static void test_dropout(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = leaf(BG_SHAPE(1000), (float[1000]){0});
    for (int i = 0; i < 1000; i++) bg_f32(x)[i] = 1.0f + (float)(i % 7);
    bg_rng r1, r2;
    bg_rng_seed(&r1, 42);
    CHECK(bg_dropout(ctx, x, 0.0f, &r1) == x);  // identity, no draws
    bg_rng_seed(&r2, 42);
    CHECK(bg_rng_next(&r1) == bg_rng_next(&r2));
    bg_rng_seed(&r1, 42);
    bg_rng_seed(&r2, 42);
    bg_tensor *y1 = bg_dropout(ctx, x, 0.25f, &r1), *y2 = bg_dropout(ctx, x, 0.25f, &r2);
    CHECK(y1 && y2 && memcmp(y1->data, y2->data, bg_nbytes(x)) == 0);
    int zeros = 0, bad = 0;
    for (int i = 0; i < 1000; i++) {
        float v = bg_f32(y1)[i], want = bg_f32(x)[i] / 0.75f;
        zeros += v == 0.0f;
        bad += v != 0.0f && fabsf(v - want) > 1e-5f * want;
    }
    CHECK_MSG(bad == 0, "dropout: %d kept values are not x/(1-p)", bad);
    CHECK_MSG(zeros > 200 && zeros < 300, "dropout: %d of 1000 zeroed at p = 0.25", zeros);
    // The mask is the same draw-for-draw as uniform() >= p in element order.
    bg_rng_seed(&r2, 42);
    int mism = 0;
    for (int i = 0; i < 1000; i++) mism += (bg_rng_uniform(&r2) >= 0.25f) != (bg_f32(y1)[i] != 0.0f);
    CHECK(mism == 0);
    // Backward: dx = m (0 or 1/(1-p)) where the output was kept.
    CHECK(bg_backward(ctx, bg_sum_all(ctx, y1)) == BG_OK);
    int gbad = 0;
    for (int i = 0; i < 1000; i++)
        gbad += fabsf(bg_f32(x->grad)[i] - (bg_f32(y1)[i] != 0.0f ? 1.0f / 0.75f : 0.0f)) > 1e-6f;
    CHECK(gbad == 0);
    CHECK(bg_dropout(ctx, x, 1.0f, &r1) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "dropout: p must be in [0, 1): p is 1");
    bg_tensor_free(x);
    bg_ctx_free(ctx);
}

// ---------------------------------------------------------------------------
// gradcheck

typedef enum gc_case {
    GC_ADD_ROWS, GC_SUB_A_ROWS, GC_MUL_OUTER, GC_DIV_ROWS, GC_DIV_COLS, GC_EXP, GC_LOG, GC_SQRT,
    GC_ABS, GC_CLAMP, GC_LEAKY, GC_GELU, GC_GELU_TANH, GC_SILU, GC_SIGMOID, GC_TANH,
    GC_SOFTMAX0, GC_SOFTMAX1, GC_LOG_SOFTMAX0, GC_LOG_SOFTMAX1, GC_SUM1, GC_MEAN_ALL, GC_MAX0,
    GC_CE, GC_MSE, GC_MUL_TRANSPOSED, GC_COUNT
} gc_case;

/* The leaves the cases draw from (all require grad). */
enum { L_A23, L_D23, L_B3, L_A21, L_C21, L_E32, L_B2, L_COUNT };

static const struct gc_def {
    const char *name;
    int a, b;   /* leaves passed as inputs 0 and 1 */
} gc_defs[GC_COUNT] = {
    [GC_ADD_ROWS]       = {"add [2,3]+[3]",        L_A23, L_B3},
    [GC_SUB_A_ROWS]     = {"sub [3]-[2,3]",        L_A23, L_B3},
    [GC_MUL_OUTER]      = {"mul [2,1]*[3]",        L_A21, L_B3},
    [GC_DIV_ROWS]       = {"div [2,3]/([3]+2)",    L_A23, L_B3},
    [GC_DIV_COLS]       = {"div [2,3]/exp([2,1])", L_A23, L_C21},
    [GC_EXP]            = {"exp",                  L_A23, L_B3},
    [GC_LOG]            = {"log(exp)",             L_A23, L_B3},
    [GC_SQRT]           = {"sqrt(exp)",            L_A23, L_B3},
    [GC_ABS]            = {"abs",                  L_A23, L_B3},
    [GC_CLAMP]          = {"clamp",                L_A23, L_B3},
    [GC_LEAKY]          = {"leaky_relu",           L_A23, L_B3},
    [GC_GELU]           = {"gelu",                 L_A23, L_B3},
    [GC_GELU_TANH]      = {"gelu tanh",            L_A23, L_B3},
    [GC_SILU]           = {"silu",                 L_A23, L_B3},
    [GC_SIGMOID]        = {"sigmoid",              L_A23, L_B3},
    [GC_TANH]           = {"tanh",                 L_A23, L_B3},
    [GC_SOFTMAX0]       = {"softmax 0",            L_A23, L_B3},
    [GC_SOFTMAX1]       = {"softmax 1",            L_A23, L_B3},
    [GC_LOG_SOFTMAX0]   = {"log_softmax 0",        L_A23, L_B3},
    [GC_LOG_SOFTMAX1]   = {"log_softmax -1",       L_A23, L_B3},
    [GC_SUM1]           = {"sum 1",                L_A23, L_B3},
    [GC_MEAN_ALL]       = {"mean_all",             L_A23, L_B3},
    [GC_MAX0]           = {"max 0 keepdim",        L_A23, L_B3},
    [GC_CE]             = {"cross_entropy",        L_A23, L_B3},
    [GC_MSE]            = {"mse",                  L_A23, L_D23},
    [GC_MUL_TRANSPOSED] = {"[3,2]*transposed*[2]", L_E32, L_B2},
};

static bg_tensor *gc_fn(bg_ctx *ctx, bg_tensor *const *in, void *user) {
    bg_tensor *a = in[0], *b = in[1];
    switch (*(const gc_case *)user) {
    case GC_ADD_ROWS: return bg_add(ctx, a, b);
    case GC_SUB_A_ROWS: return bg_sub(ctx, b, a);
    case GC_MUL_OUTER: return bg_mul(ctx, a, b);
    case GC_DIV_ROWS: return bg_div(ctx, a, bg_add(ctx, b, bg_full(ctx, 0, NULL, 2.0f)));
    case GC_DIV_COLS: return bg_div(ctx, a, bg_exp(ctx, b));
    case GC_EXP: return bg_exp(ctx, a);
    case GC_LOG: return bg_log(ctx, bg_exp(ctx, a));
    case GC_SQRT: return bg_sqrt(ctx, bg_exp(ctx, a));
    case GC_ABS: return bg_abs(ctx, a);
    case GC_CLAMP: return bg_clamp(ctx, a, -0.5f, 0.5f);
    case GC_LEAKY: return bg_leaky_relu(ctx, a, 0.1f);
    case GC_GELU: return bg_gelu(ctx, a, false);
    case GC_GELU_TANH: return bg_gelu(ctx, a, true);
    case GC_SILU: return bg_silu(ctx, a);
    case GC_SIGMOID: return bg_sigmoid(ctx, a);
    case GC_TANH: return bg_tanh(ctx, a);
    case GC_SOFTMAX0: return bg_softmax(ctx, a, 0);
    case GC_SOFTMAX1: return bg_softmax(ctx, a, 1);
    case GC_LOG_SOFTMAX0: return bg_log_softmax(ctx, a, 0);
    case GC_LOG_SOFTMAX1: return bg_log_softmax(ctx, a, -1);
    case GC_SUM1: return bg_sum(ctx, a, 1, false);
    case GC_MEAN_ALL: return bg_mean_all(ctx, a);
    case GC_MAX0: return bg_max(ctx, a, 0, true);
    case GC_CE: {
        // One loss with label smoothing and an ignored row, one plain, summed.
        bg_tensor *y1 = bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(2), (int32_t[]){2, -1});
        bg_tensor *y2 = bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(2), (int32_t[]){0, 1});
        bg_cross_entropy_opts o = {.label_smoothing = 0.1f, .ignore_index = -1};
        return bg_add(ctx, bg_cross_entropy(ctx, a, y1, &o), bg_cross_entropy(ctx, a, y2, NULL));
    }
    case GC_MSE: return bg_mse(ctx, a, b);
    case GC_MUL_TRANSPOSED: {
        // A non-contiguous constant in the middle: [3,2] * [2,3]^T * [2].
        bg_tensor *k = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(2, 3), ARR(1, -2, 3, 0.5f, 2, -1));
        return bg_mul(ctx, bg_mul(ctx, a, bg_view_transpose(ctx, k, 0, 1)), b);
    }
    case GC_COUNT: break;
    }
    return NULL;
}

static void test_gradcheck(void) {
    // Values away from kinks (0 for abs/leaky_relu, +-0.5 for clamp) and ties.
    bg_tensor *leaves[L_COUNT] = {
        [L_A23] = leaf(BG_SHAPE(2, 3), ARR(0.3f, -1.2f, 0.8f, -0.2f, 1.5f, 0.65f)),
        [L_D23] = leaf(BG_SHAPE(2, 3), ARR(0.1f, 0.9f, -0.7f, 0.4f, -1.3f, 0.25f)),
        [L_B3] = leaf(BG_SHAPE(3), ARR(0.7f, -0.4f, 1.1f)),
        [L_A21] = leaf(BG_SHAPE(2, 1), ARR(0.9f, -0.35f)),
        [L_C21] = leaf(BG_SHAPE(2, 1), ARR(0.2f, -0.6f)),
        [L_E32] = leaf(BG_SHAPE(3, 2), ARR(0.5f, -0.8f, 1.2f, 0.3f, -0.9f, 0.6f)),
        [L_B2] = leaf(BG_SHAPE(2), ARR(1.3f, -0.7f)),
    };
    for (int c = 0; c < GC_COUNT; c++) {
        bg_tensor *in[2] = {leaves[gc_defs[c].a], leaves[gc_defs[c].b]};
        bg_gradcheck_report rep;
        gc_case cc = (gc_case)c;
        bg_status st = bg_gradcheck(gc_fn, in, 2, &cc, 1e-3, 2e-3, 1e-2, &rep);
        CHECK_MSG(st == BG_OK && rep.checked > 0, "gradcheck %s: %s (checked %lld)", gc_defs[c].name,
                  bg_last_error(), (long long)rep.checked);
    }
    for (int i = 0; i < L_COUNT; i++) bg_tensor_free(leaves[i]);
}

// ---------------------------------------------------------------------------
// errors

static void test_errors(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *a = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(2, 3));
    bg_tensor *b = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(4));
    bg_tensor *i = bg_zeros(ctx, BG_DTYPE_I32, BG_SHAPE(2, 3));

    CHECK(bg_add(ctx, a, b) == NULL);
    CHECK(bg_ctx_status(ctx) == BG_ERR_SHAPE);
    CHECK_STR(bg_ctx_error(ctx), "add: shapes cannot broadcast: a is [2,3], b is [4]");
    CHECK_STR(bg_last_error(), "add: shapes cannot broadcast: a is [2,3], b is [4]");
    // Sticky: later ops return NULL and keep the first message.
    CHECK(bg_relu(ctx, a) == NULL);
    CHECK(bg_mul(ctx, a, a) == NULL);
    CHECK(bg_sum_all(ctx, NULL) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "add: shapes cannot broadcast: a is [2,3], b is [4]");

    bg_ctx_reset(ctx);
    a = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(2, 3));
    i = bg_zeros(ctx, BG_DTYPE_I32, BG_SHAPE(2, 3));
    CHECK(bg_mul(ctx, a, i) == NULL);
    CHECK(bg_ctx_status(ctx) == BG_ERR_DTYPE);
    CHECK_STR(bg_ctx_error(ctx), "mul: b is i32 [2,3], want f32");

    bg_ctx_reset(ctx);
    CHECK(bg_sigmoid(ctx, NULL) == NULL);
    CHECK(bg_ctx_status(ctx) == BG_ERR_ARG);
    CHECK_STR(bg_ctx_error(ctx), "sigmoid: x is NULL");

    bg_ctx_reset(ctx);
    a = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(2, 3));
    CHECK(bg_sum(ctx, a, 2, false) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "sum: axis 2 is out of range for [2,3]");

    bg_ctx_reset(ctx);
    a = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(2, 3));
    CHECK(bg_mse(ctx, a, bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(3, 2))) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "mse: shapes differ: a is [2,3], b is [3,2]");

    bg_ctx_reset(ctx);
    a = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(3, 4));
    bg_tensor *y = bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(3), (int32_t[]){0, 4, 1});
    CHECK(bg_cross_entropy(ctx, a, y, NULL) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "cross_entropy: label 4 at index 1 is outside [0, 4)");

    bg_ctx_reset(ctx);
    a = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(3, 4));
    CHECK(bg_cross_entropy(ctx, a, bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(3)), NULL) == NULL);
    CHECK(bg_ctx_status(ctx) == BG_ERR_DTYPE);
    CHECK_STR(bg_ctx_error(ctx), "cross_entropy: labels is f32 [3], want i32");

    bg_ctx_reset(ctx);
    a = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(3, 4));
    y = bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(2), (int32_t[]){0, 1});
    CHECK(bg_cross_entropy(ctx, a, y, NULL) == NULL);
    CHECK_STR(bg_ctx_error(ctx),
              "cross_entropy: labels must be [N] for logits [N,C]: logits is [3,4], labels is [2]");

    bg_ctx_reset(ctx);
    a = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(3, 4));
    CHECK(bg_clamp(ctx, a, 1.0f, -1.0f) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "clamp: lo must not exceed hi: lo is 1, hi is -1");

    bg_ctx_reset(ctx);
    a = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(3, 0));
    CHECK(bg_max(ctx, a, 1, false) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "max: cannot reduce over zero elements: x is [3,0]");
    bg_ctx_free(ctx);
}

int main(void) {
    test_binary_forward();
    test_unary_forward();
    test_reduce_forward();
    test_broadcast_backward();
    test_max_and_loss_backward();
    test_dropout();
    test_gradcheck();
    test_errors();
    return bg_test_finish();
}
