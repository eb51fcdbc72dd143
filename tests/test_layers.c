/* test_layers.c — bg_module and the layers: shapes, parameter names and order,
 * the collated flat buffers, initialisation bounds, dropout in train/eval,
 * zero_grad, freezing, set/get by name, error messages, and a kann-style
 * random-direction gradient check of whole models. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/test_util.h"

/* CHECK_STR on a char array would warn that its address is never NULL. */
static const char *str(const char *s) { return s; }

static bool aligned64(const void *p) { return ((uintptr_t)p & (BG_ALIGN - 1)) == 0; }

static bg_tensor *rand_input(bg_ctx *ctx, bg_rng *rng, int ndim, const int64_t *shape) {
    bg_tensor *x = bg_empty(ctx, BG_DTYPE_F32, ndim, shape);
    if (x) bg_init_normal(x, rng, 0.0f, 1.0f);
    return x;
}

// ---------------------------------------------------------------------------

static void test_linear_init_and_shape(void) {
    bg_rng rng, copy;
    bg_rng_seed(&rng, 7);
    copy = rng;
    bg_module *lin = bg_linear_new(100, 30, true, &rng);
    CHECK(lin != NULL);
    if (!lin) return;
    CHECK_STR(bg_module_kind(lin), "Linear");
    CHECK(bg_module_param_count(lin) == 2);
    CHECK_STR(bg_module_param_name(lin, 0), "weight");
    CHECK_STR(bg_module_param_name(lin, 1), "bias");
    bg_tensor *w = bg_module_param(lin, 0), *b = bg_module_param(lin, 1);
    CHECK(w->ndim == 2 && w->shape[0] == 30 && w->shape[1] == 100);
    CHECK(b->ndim == 1 && b->shape[0] == 30);
    CHECK(w->requires_grad && b->requires_grad && w->grad && b->grad);
    CHECK(bg_module_numel(lin) == 3030);

    // Both are U(-1/sqrt(in), 1/sqrt(in)) = U(-0.1, 0.1), drawn weight first
    // then bias from the caller's rng, in row-major order.
    float bound = 0.1f, wmax = 0, bmax = 0;
    bool in_bounds = true;
    for (int64_t i = 0; i < 3000; i++) {
        float v = bg_f32(w)[i];
        in_bounds &= fabsf(v) <= bound;
        wmax = fmaxf(wmax, fabsf(v));
    }
    for (int64_t i = 0; i < 30; i++) {
        in_bounds &= fabsf(bg_f32(b)[i]) <= bound;
        bmax = fmaxf(bmax, fabsf(bg_f32(b)[i]));
    }
    CHECK(in_bounds);
    CHECK(wmax > 0.099f);   // 3000 uniform draws reach the edge
    CHECK(bmax > 0.05f);
    // The exact values: lo + (hi - lo) * u with u from the same stream.
    for (int64_t i = 0; i < 3000; i++) (void)bg_rng_uniform(&copy);
    float u = bg_rng_uniform(&copy);
    CHECK_CLOSE(bg_f32(b)[0], -bound + 2 * bound * u, 1e-6, 0);
    // Mean of |w| for U(-a, a) is a/2.
    double mean_abs = 0;
    for (int64_t i = 0; i < 3000; i++) mean_abs += fabs(bg_f32(w)[i]);
    CHECK_CLOSE(mean_abs / 3000, 0.05, 0.004, 0);

    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = rand_input(ctx, &rng, BG_SHAPE(4, 100));
    bg_tensor *y = bg_module_forward(ctx, lin, x);
    CHECK(y && y->ndim == 2 && y->shape[0] == 4 && y->shape[1] == 30);
    if (y) {
        // y[1,2] = x[1,:] . w[2,:] + b[2]
        double want = bg_f32(b)[2];
        for (int k = 0; k < 100; k++) want += (double)bg_f32(x)[100 + k] * bg_f32(w)[200 + k];
        CHECK_CLOSE(bg_f32(y)[1 * 30 + 2], want, 1e-5, 1e-4);
    }
    // Wrong input width: the layer names itself and both sizes.
    bg_ctx_reset(ctx);
    x = rand_input(ctx, &rng, BG_SHAPE(4, 99));
    CHECK(bg_module_forward(ctx, lin, x) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "Linear: input features differ: x is [4,99], in_features is 100");
    bg_ctx_free(ctx);

    char d[128];
    bg_module_describe(lin, d, sizeof d);
    CHECK_STR(str(d), "Linear(in_features=100, out_features=30, bias=true)");
    bg_module_free(lin);

    // Same seed, same weights; no bias means one parameter.
    bg_rng r1, r2;
    bg_rng_seed(&r1, 3);
    bg_rng_seed(&r2, 3);
    bg_module *a = bg_linear_new(5, 4, false, &r1), *c = bg_linear_new(5, 4, false, &r2);
    CHECK(a && c && bg_module_param_count(a) == 1);
    if (a && c) CHECK(memcmp(bg_module_param(a, 0)->data, bg_module_param(c, 0)->data, 20 * sizeof(float)) == 0);
    bg_module_free(a);
    bg_module_free(c);
}

static void test_constructor_errors(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 0);
    CHECK(bg_linear_new(0, 3, true, &rng) == NULL);
    CHECK_STR(bg_last_error(), "Linear: in_features must be positive: 0");
    CHECK(bg_linear_new(3, 3, true, NULL) == NULL);
    CHECK_STR(bg_last_error(), "Linear: rng is NULL");
    // Issue 10 case 3: a weight of more than BG_MAX_NUMEL elements is refused
    // before anything is allocated or initialised.
    uint64_t allocs = bg_alloc_count();
    CHECK(bg_linear_new((int64_t)1 << 31, (int64_t)1 << 31, true, &rng) == NULL);
    CHECK_STR(bg_last_error(), "module_add_param: shape [2147483648,2147483648] has more than 2^48 elements");
    // not even the bias (2^31 floats and their gradient: 16 GB once allocated)
    CHECK_MSG(bg_alloc_count() == allocs, "%llu buffers allocated", (unsigned long long)(bg_alloc_count() - allocs));
    bg_conv2d_opts o = BG_CONV2D_DEFAULTS;
    o.groups = 2;
    CHECK(bg_conv2d_new(3, 4, 3, 3, &o, true, &rng) == NULL);
    CHECK_STR(bg_last_error(), "Conv2d: channels must be divisible by groups: in 3, out 4, groups 2");
    CHECK(bg_dropout_new(1.0f, 0) == NULL);
    CHECK_STR(bg_last_error(), "Dropout: p must be in [0,1): 1");
    CHECK(bg_max_pool2d_new(2, 2, 3) == NULL);
    CHECK_STR(bg_last_error(), "MaxPool2d: padding must be in [0, kernel/2]: padding 3, kernel 2");

    // A failing child fails the Sequential, keeps the child's message and
    // frees the other children (ASan/valgrind would see a leak otherwise).
    bg_clear_error();
    bg_module *s = bg_sequential_new(3, (bg_module *[]){bg_linear_new(4, 4, true, &rng), bg_relu_new(),
                                                        bg_linear_new(4, -1, true, &rng)});
    CHECK(s == NULL);
    CHECK_STR(bg_last_error(), "Linear: out_features must be positive: -1");
}

static void test_sequential_names_and_buffers(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 1);
    bg_module *mlp = bg_sequential_new(5, (bg_module *[]){
        bg_linear_new(784, 512, true, &rng), bg_relu_new(), bg_linear_new(512, 512, true, &rng),
        bg_relu_new(), bg_linear_new(512, 10, true, &rng)});
    CHECK(mlp != NULL);
    if (!mlp) return;
    static const char *const names[] = {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"};
    CHECK(bg_module_param_count(mlp) == 6);
    for (int i = 0; i < 6; i++) CHECK_STR(bg_module_param_name(mlp, i), names[i]);
    CHECK(bg_module_param_name(mlp, 6) == NULL && bg_module_param(mlp, -1) == NULL);
    CHECK(bg_module_numel(mlp) == 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10);
    CHECK(bg_module_num_children(mlp) == 5);
    CHECK_STR(bg_module_child_name(mlp, 3), "3");
    CHECK_STR(bg_module_kind(bg_module_child(mlp, 1)), "ReLU");

    // One params buffer and one grads buffer; each parameter a 64-byte
    // aligned view into them, in order, with the grad at the same offset.
    int64_t np, ng;
    float *P = bg_module_flat_params(mlp, &np), *G = bg_module_flat_grads(mlp, &ng);
    CHECK(P && G && np == ng && aligned64(P) && aligned64(G));
    CHECK(np >= bg_module_numel(mlp) && np < bg_module_numel(mlp) + 6 * 16);
    int64_t prev_end = 0;
    bool views_ok = true;
    for (int i = 0; i < 6; i++) {
        bg_tensor *t = bg_module_param(mlp, i);
        int64_t off = bg_module_param_offset(mlp, i);
        views_ok &= off % 64 == 0 && off / 4 >= prev_end;
        views_ok &= (float *)t->data == P + off / 4 && (float *)t->grad->data == G + off / 4;
        views_ok &= aligned64(t->data) && t->requires_grad && bg_is_contiguous(t);
        prev_end = off / 4 + bg_numel(t);
    }
    CHECK(views_ok);
    CHECK(prev_end <= np);
    // The tensors that Linear created keep their identity after collation.
    CHECK(bg_module_find_param(mlp, "2.bias") == bg_module_param(bg_module_child(mlp, 2), 1));
    CHECK(bg_module_find_param(mlp, "1.weight") == NULL);
    // A child's range is a slice of the root's buffers.
    int64_t nc;
    float *Pc = bg_module_flat_params(bg_module_child(mlp, 2), &nc);
    CHECK(Pc == bg_module_param(mlp, 2)->data && nc >= 512 * 512 + 512);
    CHECK(bg_module_flat_params(bg_module_child(mlp, 1), &nc) == NULL && nc == 0);
    // The padding is zero.
    bool pad_zero = true;
    for (int i = 0; i < 6; i++) {
        bg_tensor *t = bg_module_param(mlp, i);
        int64_t end = bg_module_param_offset(mlp, i) / 4 + bg_numel(t);
        int64_t next = i + 1 < 6 ? bg_module_param_offset(mlp, i + 1) / 4 : np;
        for (int64_t k = end; k < next; k++) pad_zero &= P[k] == 0.0f && G[k] == 0.0f;
    }
    CHECK(pad_zero);

    // zero_grad is one memset over the grads buffer.
    for (int64_t i = 0; i < ng; i++) G[i] = 1.5f;
    bg_module_zero_grad(mlp);
    bool zero = true;
    for (int64_t i = 0; i < ng; i++) zero &= G[i] == 0.0f;
    CHECK(zero);

    // Forward shape, and a backward lands in the flat grads.
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = rand_input(ctx, &rng, BG_SHAPE(8, 784));
    bg_tensor *y = bg_module_forward(ctx, mlp, x);
    CHECK(y && y->shape[0] == 8 && y->shape[1] == 10);
    bg_tensor *loss = bg_mean_all(ctx, y);
    CHECK(bg_backward(ctx, loss) == BG_OK);
    // d mean(y) / d b4 = 1/10 for each of the 10 outputs.
    bg_tensor *b4 = bg_module_find_param(mlp, "4.bias");
    CHECK_CLOSE(bg_f32(b4->grad)[3], 0.1, 1e-6, 1e-5);
    CHECK(bg_grad_norm(mlp) > 0.0f);
    bg_module_zero_grad(mlp);
    CHECK(bg_grad_norm(mlp) == 0.0f);
    bg_ctx_free(ctx);
    bg_module_free(mlp);
}

static void test_nested_and_custom(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 2);
    bg_module *inner = bg_sequential_new(2, (bg_module *[]){bg_layernorm_new(6, 1e-5f, true),
                                                            bg_linear_new(6, 3, true, &rng)});
    bg_module *net = bg_sequential_new(3, (bg_module *[]){bg_linear_new(4, 6, false, &rng), inner,
                                                          bg_rmsnorm_new(3, 1e-6f)});
    CHECK(net != NULL);
    if (!net) return;
    static const char *const names[] = {"0.weight", "1.0.weight", "1.0.bias", "1.1.weight", "1.1.bias",
                                        "2.weight"};
    CHECK(bg_module_param_count(net) == 6);
    for (int i = 0; i < 6; i++) CHECK_STR(bg_module_param_name(net, i), names[i]);
    // The inner Sequential keeps its own relative names and sees its slice.
    CHECK_STR(bg_module_param_name(inner, 2), "1.weight");
    int64_t ni;
    CHECK(bg_module_flat_params(inner, &ni) == bg_module_find_param(net, "1.0.weight")->data);
    // LayerNorm/RMSNorm start at weight 1, bias 0.
    CHECK(bg_f32(bg_module_find_param(net, "1.0.weight"))[5] == 1.0f);
    CHECK(bg_f32(bg_module_find_param(net, "1.0.bias"))[5] == 0.0f);
    CHECK(bg_f32(bg_module_find_param(net, "2.weight"))[0] == 1.0f);
    // Freeing a child is refused (it belongs to the root).
    bg_module_free(inner);
    CHECK_STR(bg_last_error(), "module_free: this Sequential belongs to a Sequential; free the root");
    CHECK(bg_module_param_count(inner) == 4);

    // set/get by name, with exact messages for the mistakes.
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *src = bg_full(ctx, BG_SHAPE(3, 6), 0.25f);
    CHECK(bg_module_set_param(net, "1.1.weight", src) == BG_OK);
    CHECK(bg_f32(bg_module_find_param(net, "1.1.weight"))[17] == 0.25f);
    bg_tensor *dst = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(3, 6));
    CHECK(bg_module_get_param(net, "1.1.weight", dst) == BG_OK && bg_f32(dst)[4] == 0.25f);
    // A transposed view copies element by element.
    bg_tensor *srcT = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(6, 3));
    for (int i = 0; i < 18; i++) bg_f32(srcT)[i] = (float)i;
    CHECK(bg_module_set_param(net, "1.1.weight", bg_view_transpose(ctx, srcT, 0, 1)) == BG_OK);
    CHECK(bg_f32(bg_module_find_param(net, "1.1.weight"))[1 * 6 + 2] == 2 * 3 + 1);
    CHECK(bg_module_set_param(net, "1.1.wieght", src) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "module_set_param: no parameter named 1.1.wieght");
    CHECK(bg_module_set_param(net, "1.1.weight", srcT) == BG_ERR_SHAPE);
    CHECK_STR(bg_last_error(), "module_set_param: 1.1.weight is [3,6], source is [6,3]");
    bg_tensor *ids = bg_zeros(ctx, BG_DTYPE_I32, BG_SHAPE(3, 6));
    CHECK(bg_module_set_param(net, "1.1.weight", ids) == BG_ERR_DTYPE);
    CHECK_STR(bg_last_error(), "module_set_param: source is i32, want f32 for 1.1.weight");

    // Forward through the nested tree: [5,4] -> [5,3].
    bg_tensor *x = rand_input(ctx, &rng, BG_SHAPE(5, 4));
    bg_tensor *y = bg_module_forward(ctx, net, x);
    CHECK(y && y->ndim == 2 && y->shape[0] == 5 && y->shape[1] == 3);
    bg_ctx_free(ctx);

    char buf[64];
    bg_module_describe(bg_module_child(inner, 0), buf, sizeof buf);
    CHECK_STR(str(buf), "LayerNorm((6,), eps=1e-05, elementwise_affine=true)");
    bg_module_free(net);
}

/* A custom module: y = x * w (w [C], broadcast over rows). */
typedef struct scale_state {
    bg_tensor *w;
} scale_state;

static bg_tensor *scale_forward(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    scale_state *s = bg_module_state(m);
    return bg_mul(ctx, x, s->w);
}

static const bg_module_type scale_type = {.kind = "Scale", .forward = scale_forward, .free_state = free};

static void test_custom_module(void) {
    scale_state *s = calloc(1, sizeof *s);
    bg_module *m = bg_module_new(&scale_type, s);
    CHECK(m != NULL);
    if (!m) return;
    s->w = bg_module_add_param(m, "weight", BG_SHAPE(3));
    CHECK(s->w && bg_f32(s->w)[0] == 0.0f);
    bg_init_constant(s->w, 2.0f);
    CHECK(bg_module_add_param(m, "weight", BG_SHAPE(3)) == NULL);
    CHECK_STR(bg_last_error(), "module_add_param: Scale already has a member named weight");
    CHECK(bg_module_add_param(m, "a.b", BG_SHAPE(3)) == NULL);
    CHECK_STR(bg_last_error(), "module_add_param: bad name \"a.b\" (want non-empty, no '.')");
    // Before finalize: no flat buffers, but the parameter is usable.
    int64_t n;
    CHECK(bg_module_flat_params(m, &n) == NULL && n == 0);
    bg_tensor *w_before = s->w;
    CHECK(bg_module_finalize(m) == BG_OK);
    CHECK(bg_module_flat_params(m, &n) == s->w->data && n == 16);
    CHECK(s->w == w_before && bg_f32(s->w)[2] == 2.0f);   // values kept, same tensor

    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = bg_full(ctx, BG_SHAPE(2, 3), 1.5f);
    bg_tensor *y = bg_module_forward(ctx, m, x);
    CHECK(y && bg_f32(y)[5] == 3.0f);
    bg_ctx_free(ctx);

    // Adopted by a Sequential: collated again into the root's buffers.
    bg_rng rng;
    bg_rng_seed(&rng, 5);
    bg_module *seq = bg_sequential_new(2, (bg_module *[]){bg_linear_new(2, 3, true, &rng), m});
    CHECK(seq != NULL);
    if (!seq) return;
    CHECK_STR(bg_module_param_name(seq, 2), "1.weight");
    CHECK(bg_module_find_param(seq, "1.weight") == w_before && bg_f32(w_before)[1] == 2.0f);
    int64_t ns;
    float *P = bg_module_flat_params(seq, &ns);
    CHECK((float *)w_before->data >= P && (float *)w_before->data < P + ns);
    CHECK(bg_module_add_param(m, "more", BG_SHAPE(1)) == NULL);
    CHECK_STR(bg_last_error(), "module_add_param: Scale already belongs to a Sequential");
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    bg_module_print(seq, f);
    fclose(f);
    CHECK_STR(text, "Sequential(\n"
                    "  (0): Linear(in_features=2, out_features=3, bias=true)\n"
                    "  (1): Scale()\n"
                    ")\n"
                    "parameters: 12 in 3 tensors\n");
    free(text);
    bg_module_free(seq);
}

static void test_dropout_train_eval(void) {
    bg_module *d1 = bg_dropout_new(0.25f, 42), *d2 = bg_dropout_new(0.25f, 42);
    CHECK(d1 && d2);
    if (!d1 || !d2) return;
    CHECK(bg_module_param_count(d1) == 0 && bg_module_is_training(d1));
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = bg_full(ctx, BG_SHAPE(100, 100), 2.0f);
    bg_tensor *y1 = bg_module_forward(ctx, d1, x), *y2 = bg_module_forward(ctx, d2, x);
    CHECK(y1 && y2);
    if (y1 && y2) {
        int64_t zeros = 0;
        bool values_ok = true;
        for (int64_t i = 0; i < 10000; i++) {
            float v = bg_f32(y1)[i];
            zeros += v == 0.0f;
            values_ok &= v == 0.0f || fabsf(v - 2.0f / 0.75f) < 1e-6f;
        }
        CHECK(values_ok);
        // 10000 Bernoulli(0.25): mean 2500, sd ~43.
        CHECK_MSG(zeros > 2300 && zeros < 2700, "dropped %lld of 10000", (long long)zeros);
        // Seeded: the same seed gives the same mask.
        CHECK(memcmp(y1->data, y2->data, 10000 * sizeof(float)) == 0);
        // The module's rng advances: the next mask differs.
        bg_tensor *y3 = bg_module_forward(ctx, d1, x);
        CHECK(y3 && memcmp(y1->data, y3->data, 10000 * sizeof(float)) != 0);
    }
    // Eval mode: the identity, recursively through a container.
    bg_module *seq = bg_sequential_new(2, (bg_module *[]){d1, bg_relu_new()});
    CHECK(seq != NULL);
    bg_module_train(seq, false);
    CHECK(!bg_module_is_training(d1) && !bg_module_is_training(seq));
    bg_tensor *ye = bg_module_forward(ctx, seq, x);
    bool same = ye != NULL;
    for (int64_t i = 0; same && i < 10000; i++) same = bg_f32(ye)[i] == 2.0f;
    CHECK(same);
    bg_module_train(seq, true);
    CHECK(bg_module_is_training(d1));
    bg_ctx_free(ctx);
    bg_module_free(seq);
    bg_module_free(d2);
}

static void test_conv_stack_shapes(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 0);
    bg_module *cnn = bg_sequential_new(9, (bg_module *[]){
        bg_conv2d_new(1, 32, 3, 3, NULL, true, &rng), bg_relu_new(), bg_max_pool2d_new(2, 0, 0),
        bg_conv2d_new(32, 64, 3, 3, NULL, true, &rng), bg_relu_new(), bg_max_pool2d_new(2, 0, 0),
        bg_flatten_new(), bg_linear_new(1600, 128, true, &rng), bg_linear_new(128, 10, true, &rng)});
    CHECK(cnn != NULL);
    if (!cnn) return;
    CHECK_STR(bg_module_param_name(cnn, 2), "3.weight");
    bg_tensor *w3 = bg_module_param(cnn, 2);
    CHECK(w3->ndim == 4 && w3->shape[0] == 64 && w3->shape[1] == 32 && w3->shape[2] == 3);
    // fan_in = 32*3*3 = 288: bound 1/sqrt(288) for weight and bias.
    float bound = 1.0f / sqrtf(288.0f), mx = 0;
    for (int64_t i = 0; i < bg_numel(w3); i++) mx = fmaxf(mx, fabsf(bg_f32(w3)[i]));
    CHECK(mx <= bound && mx > 0.99f * bound);
    bg_tensor *b3 = bg_module_param(cnn, 3);
    mx = 0;
    for (int64_t i = 0; i < 64; i++) mx = fmaxf(mx, fabsf(bg_f32(b3)[i]));
    CHECK(mx <= bound && mx > 0.5f * bound);

    char d[128];
    bg_module_describe(bg_module_child(cnn, 3), d, sizeof d);
    CHECK_STR(str(d), "Conv2d(32, 64, kernel_size=(3, 3), stride=(1, 1))");
    bg_module *c2 = bg_conv2d_new(4, 8, 3, 5, &(bg_conv2d_opts){.stride = {2, 1}, .padding = {1, 2}, .dilation = {1, 1}, .groups = 2},
                                  false, &rng);
    bg_module_describe(c2, d, sizeof d);
    CHECK_STR(str(d), "Conv2d(4, 8, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), groups=2, bias=false)");
    CHECK(c2 && bg_module_param(c2, 0)->shape[1] == 2 && bg_module_param(c2, 0)->shape[3] == 5);
    bg_module_free(c2);
    bg_module_describe(bg_module_child(cnn, 2), d, sizeof d);
    CHECK_STR(str(d), "MaxPool2d(kernel_size=2, stride=2, padding=0)");

    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = rand_input(ctx, &rng, BG_SHAPE(2, 1, 28, 28));
    bg_tensor *h = bg_module_forward(ctx, bg_module_child(cnn, 0), x);
    CHECK(h && h->shape[1] == 32 && h->shape[2] == 26 && h->shape[3] == 26);
    bg_tensor *y = bg_module_forward(ctx, cnn, x);
    CHECK(y && y->ndim == 2 && y->shape[0] == 2 && y->shape[1] == 10);
    bg_ctx_reset(ctx);
    x = rand_input(ctx, &rng, BG_SHAPE(2, 3, 28, 28));
    CHECK(bg_module_forward(ctx, cnn, x) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "Conv2d: input must be [N,1,H,W]: x is [2,3,28,28]");

    // LayerNorm without affine parameters: none registered, rows normalised.
    bg_ctx_reset(ctx);
    bg_module *ln = bg_layernorm_new(4, 1e-5f, false);
    CHECK(ln && bg_module_param_count(ln) == 0);
    x = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(1, 4), (float[]){1, 2, 3, 4});
    y = bg_module_forward(ctx, ln, x);
    // mean 2.5, var 1.25: (1 - 2.5) / sqrt(1.25 + 1e-5)
    CHECK(y != NULL);
    if (y) CHECK_CLOSE(bg_f32(y)[0], -1.5 / sqrt(1.25 + 1e-5), 1e-6, 1e-5);
    bg_module_free(ln);

    // AvgPool and Embedding shapes.
    bg_ctx_reset(ctx);
    bg_module *avg = bg_avg_pool2d_new(2, 0, 0);
    x = bg_full(ctx, BG_SHAPE(1, 2, 4, 6), 3.0f);
    y = bg_module_forward(ctx, avg, x);
    CHECK(y && y->shape[2] == 2 && y->shape[3] == 3 && bg_f32(y)[0] == 3.0f);
    bg_module *emb = bg_embedding_new(10, 4, &rng);
    CHECK(emb && bg_module_param(emb, 0)->shape[0] == 10);
    bg_tensor *ids = bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(2, 3), (int32_t[]){0, 9, 3, 3, 1, 2});
    y = bg_module_forward(ctx, emb, ids);
    CHECK(y && y->ndim == 3 && y->shape[2] == 4);
    if (y) CHECK(bg_f32(y)[1 * 4 + 2] == bg_f32(bg_module_param(emb, 0))[9 * 4 + 2]);
    // N(0,1): 40 draws, mean within a few sd/sqrt(40).
    double mean = 0;
    for (int i = 0; i < 40; i++) mean += bg_f32(bg_module_param(emb, 0))[i] / 40.0;
    CHECK(fabs(mean) < 0.6);
    bg_module_free(avg);
    bg_module_free(emb);
    bg_ctx_free(ctx);
    bg_module_free(cnn);
}

static void test_freeze(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 4);
    bg_module *net = bg_sequential_new(3, (bg_module *[]){bg_linear_new(3, 4, true, &rng), bg_tanh_new(),
                                                          bg_linear_new(4, 2, true, &rng)});
    CHECK(net != NULL);
    if (!net) return;
    bg_module_freeze(bg_module_child(net, 0), true);
    CHECK(bg_module_trainable_numel(net) == 4 * 2 + 2);
    CHECK(bg_module_set_trainable(net, "0.bias", true) == BG_OK);
    CHECK(bg_module_trainable_numel(net) == 4 * 2 + 2 + 4);
    CHECK(bg_module_set_trainable(net, "9.bias", true) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "module_set_trainable: no parameter named 9.bias");
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = rand_input(ctx, &rng, BG_SHAPE(5, 3));
    CHECK(bg_backward(ctx, bg_sum_all(ctx, bg_module_forward(ctx, net, x))) == BG_OK);
    bg_tensor *w0 = bg_module_find_param(net, "0.weight"), *b0 = bg_module_find_param(net, "0.bias");
    double sw = 0, sb = 0;
    for (int i = 0; i < 12; i++) sw += fabs(bg_f32(w0->grad)[i]);
    for (int i = 0; i < 4; i++) sb += fabs(bg_f32(b0->grad)[i]);
    CHECK(sw == 0.0);   // frozen: no gradient accumulated
    CHECK(sb > 0.0);
    bg_ctx_free(ctx);
    bg_module_free(net);
}

// ---------------------------------------------------------------------------
// kann-style random-direction check: for a random direction d over all the
// parameters, (L(p + eps d) - L(p - eps d)) / (2 eps) must equal grad . d,
// with L = sum(f(x) * R) for a fixed random R. Two forward passes (no grad)
// and one dot product, over the flat buffers.

static double fake_loss(bg_ctx *ctx, bg_module *m, bg_tensor *x, const float *R) {
    bg_tensor *y = bg_module_forward(ctx, m, x);
    if (!y) return NAN;
    double s = 0;
    for (int64_t i = 0, n = bg_numel(y); i < n; i++) s += (double)bg_f32(y)[i] * R[i];
    return s;
}

static void random_direction_check(const char *what, bg_module *m, int ndim, const int64_t *xshape,
                                   double eps, double rtol) {
    bg_rng rng;
    bg_rng_seed(&rng, 11);
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = bg_tensor_new(BG_DTYPE_F32, ndim, xshape);
    bg_init_normal(x, &rng, 0.0f, 1.0f);
    bg_tensor *y = bg_module_forward(ctx, m, x);
    CHECK_MSG(y != NULL, "%s: forward failed: %s", what, bg_ctx_error(ctx));
    if (!y) goto done;
    int64_t ny = bg_numel(y);
    bg_tensor *R = bg_tensor_new(BG_DTYPE_F32, y->ndim, y->shape);
    bg_init_normal(R, &rng, 0.0f, 1.0f);
    bg_tensor *Rc = bg_from_data(ctx, BG_DTYPE_F32, y->ndim, y->shape, R->data);
    bg_module_zero_grad(m);
    CHECK(bg_backward(ctx, bg_sum_all(ctx, bg_mul(ctx, y, Rc))) == BG_OK);
    bg_ctx_reset(ctx);

    int64_t n;
    float *P = bg_module_flat_params(m, &n), *G = bg_module_flat_grads(m, NULL);
    float *p0 = malloc((size_t)n * sizeof(float)), *d = malloc((size_t)n * sizeof(float));
    memcpy(p0, P, (size_t)n * sizeof(float));
    double gd = 0, dd = 0;
    for (int64_t i = 0; i < n; i++) {
        d[i] = bg_rng_normal(&rng);
        gd += (double)G[i] * d[i];
        dd += (double)d[i] * d[i];
    }
    // Normalise d so eps is a step length in parameter space.
    double scale = 1.0 / sqrt(dd);
    gd *= scale;
    bool g = bg_set_grad_enabled(ctx, false);
    for (int64_t i = 0; i < n; i++) P[i] = (float)(p0[i] + eps * scale * d[i]);
    double lp = fake_loss(ctx, m, x, bg_f32(R));
    bg_ctx_reset(ctx);
    for (int64_t i = 0; i < n; i++) P[i] = (float)(p0[i] - eps * scale * d[i]);
    double lm = fake_loss(ctx, m, x, bg_f32(R));
    bg_ctx_reset(ctx);
    bg_set_grad_enabled(ctx, g);
    memcpy(P, p0, (size_t)n * sizeof(float));
    double numeric = (lp - lm) / (2 * eps);
    CHECK_MSG(bg_test_close(gd, numeric, 1e-5, rtol), "%s: grad.d = %.8g, numeric = %.8g (n = %lld, out %lld)",
              what, gd, numeric, (long long)n, (long long)ny);
    CHECK_MSG(fabs(gd) > 1e-3, "%s: grad.d = %g is too small to test anything", what, gd);
    free(p0);
    free(d);
    bg_tensor_free(R);
done:
    bg_tensor_free(x);
    bg_ctx_free(ctx);
}

static void test_gradient_direction(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 9);
    bg_module *mlp = bg_sequential_new(5, (bg_module *[]){
        bg_linear_new(6, 16, true, &rng), bg_tanh_new(), bg_linear_new(16, 12, true, &rng),
        bg_gelu_new(false), bg_linear_new(12, 4, true, &rng)});
    CHECK(mlp != NULL);
    if (mlp) random_direction_check("mlp", mlp, BG_SHAPE(5, 6), 1e-2, 5e-4);
    bg_module_free(mlp);

    bg_module *normed = bg_sequential_new(5, (bg_module *[]){
        bg_linear_new(5, 8, true, &rng), bg_layernorm_new(8, 1e-5f, true), bg_silu_new(),
        bg_rmsnorm_new(8, 1e-6f), bg_linear_new(8, 3, true, &rng)});
    CHECK(normed != NULL);
    if (normed) {
        // Move the norm weights off 1 so their gradients matter.
        for (int i = 0; i < bg_module_param_count(normed); i++) {
            const char *nm = bg_module_param_name(normed, i);
            if (strncmp(nm, "1.", 2) == 0 || strncmp(nm, "3.", 2) == 0)
                bg_init_uniform(bg_module_param(normed, i), &rng, 0.5f, 1.5f);
        }
        random_direction_check("norms", normed, BG_SHAPE(4, 5), 1e-2, 5e-4);
    }
    bg_module_free(normed);

    bg_module *cnn = bg_sequential_new(5, (bg_module *[]){
        bg_conv2d_new(2, 3, 3, 3, &(bg_conv2d_opts){.stride = {1, 1}, .padding = {1, 1}, .dilation = {1, 1}, .groups = 1},
                      true, &rng),
        bg_sigmoid_new(), bg_avg_pool2d_new(2, 0, 0), bg_flatten_new(), bg_linear_new(3 * 3 * 3, 2, true, &rng)});
    CHECK(cnn != NULL);
    if (cnn) random_direction_check("cnn", cnn, BG_SHAPE(2, 2, 6, 6), 1e-2, 5e-4);
    bg_module_free(cnn);
}

int main(void) {
    test_linear_init_and_shape();
    test_constructor_errors();
    test_sequential_names_and_buffers();
    test_nested_and_custom();
    test_custom_module();
    test_dropout_train_eval();
    test_conv_stack_shapes();
    test_freeze();
    test_gradient_direction();
    return bg_test_finish();
}
