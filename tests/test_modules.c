/* test_modules.c — the open model system (layers/registry.c, io/model_desc.c):
 *   (a) every registered built-in kind round-trips: build, randomise its
 *       parameters, one forward, save a checkpoint, bg_checkpoint_load_model,
 *       the same parameter names and bitwise the same output on a random
 *       input. The test walks the registry: a kind added later without an
 *       entry in `examples` below fails here;
 *   (b) a kind defined in this program (a pre-norm residual MLP block with
 *       two named children) registers, describes itself, is quantized in
 *       place (bg_quantize_model replaces its child), trains 10 steps with a
 *       bit-width schedule and Adam, saves, resumes in a NEW process (this
 *       binary re-executed) for 10 more: parameters, Adam's moments and the
 *       quantizer states equal 20 uninterrupted steps bit for bit; the same
 *       file without the kind registered fails with the exact message;
 *   (c) the registry refuses bad and duplicate types; Residual's shape error;
 *   (d) checkpoints and exports written before the registry (model
 *       descriptions version 1, committed in tests/fuzz/) still load. */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "infer/infer.h"
#include "io/io.h"
#include "qat/qat.h"
#include "tests/test_util.h"

static char dir[64];

static void path_in_dir(char *buf, size_t len, const char *name) { snprintf(buf, len, "%s/%s", dir, name); }

// ---------------------------------------------------------------------------
// (a) every registered built-in kind round-trips

typedef struct example {
    const char *kind;
    bg_module *(*build)(bg_rng *rng);
    int ndim;
    int64_t shape[4];
    bool ids;   /* i32 ids in [0, 10) instead of f32 N(0,1) */
} example;

static bg_module *ex_sequential(bg_rng *r) {
    return bg_sequential_new(2, (bg_module *[]){bg_linear_new(6, 4, true, r), bg_relu_new()});
}
static bg_module *ex_residual(bg_rng *r) {
    return bg_residual_new(2, (bg_module *[]){bg_linear_new(6, 6, true, r), bg_tanh_new()});
}
static bg_module *ex_linear(bg_rng *r) { return bg_linear_new(6, 4, true, r); }
static bg_module *ex_conv2d(bg_rng *r) {
    bg_conv2d_opts o = {.stride = {2, 1}, .padding = {1, 1}, .dilation = {1, 1}, .groups = 1};
    return bg_conv2d_new(2, 3, 3, 3, &o, true, r);
}
static bg_module *ex_embedding(bg_rng *r) { return bg_embedding_new(10, 4, r); }
static bg_module *ex_layernorm(bg_rng *r) { (void)r; return bg_layernorm_new(6, 1e-5f, true); }
static bg_module *ex_rmsnorm(bg_rng *r) { (void)r; return bg_rmsnorm_new(6, 1e-6f); }
static bg_module *ex_dropout(bg_rng *r) { (void)r; return bg_dropout_new(0.5f, 77); }
static bg_module *ex_relu(bg_rng *r) { (void)r; return bg_relu_new(); }
static bg_module *ex_leaky(bg_rng *r) { (void)r; return bg_leaky_relu_new(0.1f); }
static bg_module *ex_gelu(bg_rng *r) { (void)r; return bg_gelu_new(true); }
static bg_module *ex_silu(bg_rng *r) { (void)r; return bg_silu_new(); }
static bg_module *ex_tanh(bg_rng *r) { (void)r; return bg_tanh_new(); }
static bg_module *ex_sigmoid(bg_rng *r) { (void)r; return bg_sigmoid_new(); }
static bg_module *ex_flatten(bg_rng *r) { (void)r; return bg_flatten_new(); }
static bg_module *ex_maxpool(bg_rng *r) { (void)r; return bg_max_pool2d_new(2, 0, 0); }
static bg_module *ex_avgpool(bg_rng *r) { (void)r; return bg_avg_pool2d_new(3, 2, 1); }
static bg_module *ex_fake_quant(bg_rng *r) {
    (void)r;
    bg_quant_spec s;
    return bg_quant_spec_parse("int4:per_channel=-1:lsq", &s) == BG_OK ? bg_fake_quant_new(&s, BG_SHAPE(6)) : NULL;
}
static bg_module *ex_qlinear(bg_rng *r) {
    bg_quant_spec w, a;
    if (bg_quant_spec_parse("int4:per_channel:lsq", &w) || bg_quant_spec_parse("int8:moving_minmax", &a)) return NULL;
    return bg_qlinear_new(6, 4, true, &w, &a, r);
}
static bg_module *ex_qconv2d(bg_rng *r) {
    bg_quant_spec w, a;
    if (bg_quant_spec_parse("int8:per_channel", &w) || bg_quant_spec_parse("int8:affine", &a)) return NULL;
    return bg_qconv2d_new(2, 3, 3, 3, NULL, false, &w, &a, r);
}
static bg_module *ex_qembedding(bg_rng *r) {
    bg_quant_spec w;
    return bg_quant_spec_parse("int4:per_channel", &w) == BG_OK ? bg_qembedding_new(10, 4, &w, r) : NULL;
}
static bg_module *ex_bitlinear(bg_rng *r) { return bg_bitlinear_new(6, 4, r); }
static const bg_lm_config ex_lm_cfg = {.vocab = 16, .d_model = 8, .n_layers = 1, .n_heads = 2, .d_ff = 12, .ctx = 8};
static bg_module *ex_block(bg_rng *r) { return bg_transformer_block_new(&ex_lm_cfg, r); }
static bg_module *ex_lm(bg_rng *r) {
    bg_module *m = bg_lm_new(&ex_lm_cfg, r);
    // BitNet, so the norm-free BitLinear round-trips too.
    if (m && bg_bitnet_model(m) != BG_OK) {
        bg_module_free(m);
        return NULL;
    }
    return m;
}

static const example examples[] = {
    {"Sequential", ex_sequential, 2, {3, 6}, false},   {"Residual", ex_residual, 2, {3, 6}, false},
    {"Linear", ex_linear, 2, {3, 6}, false},           {"Conv2d", ex_conv2d, 4, {2, 2, 5, 5}, false},
    {"Embedding", ex_embedding, 1, {5}, true},         {"LayerNorm", ex_layernorm, 2, {3, 6}, false},
    {"RMSNorm", ex_rmsnorm, 2, {3, 6}, false},         {"Dropout", ex_dropout, 2, {4, 6}, false},
    {"ReLU", ex_relu, 2, {3, 6}, false},               {"LeakyReLU", ex_leaky, 2, {3, 6}, false},
    {"GELU", ex_gelu, 2, {3, 6}, false},               {"SiLU", ex_silu, 2, {3, 6}, false},
    {"Tanh", ex_tanh, 2, {3, 6}, false},               {"Sigmoid", ex_sigmoid, 2, {3, 6}, false},
    {"Flatten", ex_flatten, 3, {2, 3, 4}, false},      {"MaxPool2d", ex_maxpool, 4, {1, 2, 6, 6}, false},
    {"AvgPool2d", ex_avgpool, 4, {1, 2, 6, 6}, false}, {"FakeQuant", ex_fake_quant, 2, {3, 6}, false},
    {"QLinear", ex_qlinear, 2, {3, 6}, false},         {"QConv2d", ex_qconv2d, 4, {2, 2, 5, 5}, false},
    {"QEmbedding", ex_qembedding, 1, {5}, true},       {"BitLinear", ex_bitlinear, 2, {3, 6}, false},
    {"TransformerBlock", ex_block, 3, {2, 5, 8}, false}, {"TransformerLM", ex_lm, 2, {2, 5}, true},
};

static bg_tensor *example_input(bg_ctx *ctx, const example *e, uint64_t seed) {
    bg_rng r;
    bg_rng_seed(&r, seed);
    bg_tensor *x = bg_empty(ctx, e->ids ? BG_DTYPE_I32 : BG_DTYPE_F32, e->ndim, e->shape);
    if (!x) return NULL;
    for (int64_t i = 0; i < bg_numel(x); i++) {
        if (e->ids) ((int32_t *)x->data)[i] = (int32_t)(bg_rng_next(&r) % 10);
        else bg_f32(x)[i] = bg_rng_normal(&r);
    }
    return x;
}

/* Every parameter random (learned quantizer steps positive), so a load that
 * kept the constructor's values would show. */
static void randomise(bg_module *m, uint64_t seed) {
    bg_rng r;
    bg_rng_seed(&r, seed);
    for (int i = 0; i < bg_module_param_count(m); i++) {
        bg_tensor *p = bg_module_param(m, i);
        bool step = strstr(bg_module_param_name(m, i), "quant.") != NULL;
        for (int64_t k = 0; k < bg_numel(p); k++)
            bg_f32(p)[k] = step ? 0.05f + 0.2f * bg_rng_uniform(&r) : 2.0f * bg_rng_uniform(&r) - 1.0f;
    }
}

/* The output of m on the example's input, copied out (malloc'd), or NULL. */
static float *output_of(bg_module *m, const example *e, int64_t *n) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = example_input(ctx, e, 5);
    bg_tensor *y = bg_contiguous(ctx, bg_module_forward(ctx, m, x));
    float *out = NULL;
    if (y) {
        *n = bg_numel(y);
        out = malloc(sizeof(float) * (size_t)*n);
        memcpy(out, y->data, sizeof(float) * (size_t)*n);
    } else {
        CHECK_MSG(false, "%s: forward: %s", e->kind, bg_ctx_error(ctx));
    }
    bg_ctx_free(ctx);
    return out;
}

static void round_trip_kind(const example *e) {
    bg_rng rng;
    bg_rng_seed(&rng, 1);
    bg_module *a = e->build(&rng);
    if (!a) {
        CHECK_MSG(false, "%s: build: %s", e->kind, bg_last_error());
        return;
    }
    CHECK_MSG(strcmp(bg_module_kind(a), e->kind) == 0, "%s: built a %s", e->kind, bg_module_kind(a));
    randomise(a, 2);
    int64_t n0;
    free(output_of(a, e, &n0));   // observers, LSQ initialisation, Dropout's generator all move once
    char path[128];
    path_in_dir(path, sizeof path, "kind.ckpt");
    bg_checkpoint ck = {.model = a};
    bg_module *b = NULL;
    if (bg_checkpoint_save(path, &ck) != BG_OK || bg_checkpoint_load_model(path, &b) != BG_OK) {
        CHECK_MSG(false, "%s: %s", e->kind, bg_last_error());
        bg_module_free(a);
        return;
    }
    CHECK_MSG(bg_module_type_of(b) == bg_module_type_of(a), "%s: loaded a %s", e->kind, bg_module_kind(b));
    CHECK_MSG(bg_module_param_count(a) == bg_module_param_count(b), "%s: %d parameters, %d after loading", e->kind,
              bg_module_param_count(a), bg_module_param_count(b));
    for (int i = 0; i < bg_module_param_count(a) && i < bg_module_param_count(b); i++) {
        CHECK_MSG(strcmp(bg_module_param_name(a, i), bg_module_param_name(b, i)) == 0, "%s: parameter %s became %s",
                  e->kind, bg_module_param_name(a, i), bg_module_param_name(b, i));
        CHECK_MSG(memcmp(bg_module_param(a, i)->data, bg_module_param(b, i)->data, bg_nbytes(bg_module_param(a, i))) == 0,
                  "%s: parameter %s differs", e->kind, bg_module_param_name(a, i));
    }
    int64_t na = 0, nb = 0;
    float *ya = output_of(a, e, &na), *yb = output_of(b, e, &nb);
    CHECK_MSG(ya && yb && na == nb && memcmp(ya, yb, sizeof(float) * (size_t)na) == 0,
              "%s: outputs differ after the round trip", e->kind);
    free(ya);
    free(yb);
    bg_module_free(a);
    bg_module_free(b);
}

static void test_every_kind_round_trips(void) {
    int n = bg_module_type_count(), tested = 0;
    for (int i = 0; i < n; i++) {
        const bg_module_type *t = bg_module_type_at(i);
        const example *e = NULL;
        for (size_t k = 0; k < sizeof examples / sizeof examples[0]; k++)
            if (strcmp(examples[k].kind, t->kind) == 0) e = &examples[k];
        CHECK_MSG(e != NULL, "registered kind %s has no round-trip example in tests/test_modules.c", t->kind);
        if (e) {
            round_trip_kind(e);
            tested++;
        }
    }
    CHECK(tested == (int)(sizeof examples / sizeof examples[0]));
    printf("registry: %d kinds, each saved, loaded by bg_checkpoint_load_model and run: same parameters, same output\n",
           tested);
}

// ---------------------------------------------------------------------------
// (b) a kind of this program's own: y = x + fc(norm(x))

typedef struct block_state {
    int64_t dim;
} block_state;

static bg_tensor *block_forward(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    // Children are looked up, not kept: bg_quantize_model replaces "fc".
    bg_tensor *h = bg_module_forward(ctx, bg_module_find_child(m, "norm"), x);
    h = bg_module_forward(ctx, bg_module_find_child(m, "fc"), h);
    return h ? bg_add(ctx, x, h) : NULL;
}

static int block_describe(const bg_module *m, char *buf, size_t len) {
    return snprintf(buf, len, "PreNormResidualMLP(dim=%lld)", (long long)((const block_state *)bg_module_state(m))->dim);
}

static bg_status block_save(const bg_module *m, json_t *hp) {
    return bg_hparam_set_int(hp, "dim", ((const block_state *)bg_module_state(m))->dim);
}

static bg_module *block_load(const json_t *hp, bg_rng *rng);

static const bg_module_type block_type = {
    .kind = "PreNormResidualMLP", .forward = block_forward, .describe = block_describe, .free_state = free,
    .save_hparams = block_save, .load_hparams = block_load,
};

/* The block without children (what a description's loader wants). */
static bg_module *block_bare(int64_t dim) {
    block_state *s = malloc(sizeof *s);
    if (!s) return NULL;
    s->dim = dim;
    return bg_module_new(&block_type, s);
}

static bg_module *block_load(const json_t *hp, bg_rng *rng) {
    (void)rng;
    int64_t dim;
    return bg_hparam_get_int(hp, "dim", 1, 4096, &dim) == BG_OK ? block_bare(dim) : NULL;
}

static bg_module *block_new(int64_t dim, bg_rng *rng) {
    bg_module *m = block_bare(dim);
    if (!m || bg_module_add_child(m, "norm", bg_rmsnorm_new(dim, 1e-6f)) != BG_OK ||
        bg_module_add_child(m, "fc", bg_linear_new(dim, dim, true, rng)) != BG_OK || bg_module_finalize(m) != BG_OK) {
        bg_module_free(m);
        return NULL;
    }
    return m;
}

#define VOCAB 16
#define DIM 32
#define BATCH 24
#define HALF 10
#define CUSTOM_SCHEDULE "[*weight_quant]int8@0,int4@6,ternary@14;[*input_quant]fp32@0,int8@3"

typedef struct lm {
    bg_module *net;
    bg_optim *opt;
    bg_schedule sched;
    bg_ctx *ctx;
    bg_quantizer_list *q;
    int64_t step;
} lm;

/* Optimizer, schedule and quantizer list over an existing net. */
static bool lm_attach(lm *r) {
    bg_adam_opts ao = BG_ADAM_DEFAULTS;
    ao.lr = 3e-3f;
    r->opt = bg_adam_new(r->net, &ao);
    r->ctx = bg_ctx_new(0);
    r->q = bg_model_quantizer_list(r->net);
    bool ok = r->opt && r->ctx && bg_schedule_parse(CUSTOM_SCHEDULE, 0, &r->sched) == BG_OK && r->q && r->q->n == 6;
    CHECK_MSG(ok, "attach: %s (%d quantizers)", bg_last_error(), r->q ? r->q->n : -1);
    return ok;
}

static bool lm_new(lm *r, uint64_t seed) {
    memset(r, 0, sizeof *r);
    bg_rng rng;
    bg_rng_seed(&rng, seed);
    r->net = bg_sequential_new(4, (bg_module *[]){bg_embedding_new(VOCAB, DIM, &rng), block_new(DIM, &rng),
                                                   block_new(DIM, &rng), bg_linear_new(DIM, VOCAB, true, &rng)});
    // Converts "1.fc", "2.fc" (inside the user's blocks) and "3".
    bool ok = r->net && bg_quantize_model(r->net, "int8:per_channel:lsq", "int8:moving_minmax") == BG_OK;
    CHECK_MSG(ok, "build: %s", bg_last_error());
    return ok && lm_attach(r);
}

static void lm_free(lm *r) {
    bg_ctx_free(r->ctx);
    bg_optim_free(r->opt);
    bg_quantizer_list_free(r->q);
    bg_module_free(r->net);
}

/* The batch of step s: random ids, the label of id i is (3i + 1) mod VOCAB. */
static void batch_of(bg_ctx *ctx, int64_t s, bg_tensor **x, bg_tensor **y) {
    bg_rng r;
    bg_rng_seed(&r, 1000 + (uint64_t)s);
    *x = bg_empty(ctx, BG_DTYPE_I32, BG_SHAPE(BATCH));
    *y = bg_empty(ctx, BG_DTYPE_I32, BG_SHAPE(BATCH));
    for (int i = 0; *x && *y && i < BATCH; i++) {
        int32_t id = (int32_t)(bg_rng_next(&r) % VOCAB);
        ((int32_t *)(*x)->data)[i] = id;
        ((int32_t *)(*y)->data)[i] = (3 * id + 1) % VOCAB;
    }
}

static bool lm_train(lm *r, int64_t until, double *last_loss) {
    while (r->step < until) {
        if (bg_schedule_apply(&r->sched, r->step, r->q->states, r->q->names, r->q->weights, r->q->n, NULL) != BG_OK) break;
        bg_tensor *x, *y;
        batch_of(r->ctx, r->step, &x, &y);
        bg_tensor *loss = bg_cross_entropy(r->ctx, bg_module_forward(r->ctx, r->net, x), y, NULL);
        if (!loss || bg_backward(r->ctx, loss) != BG_OK || bg_optim_step(r->opt) != BG_OK) break;
        if (last_loss) *last_loss = bg_f32(loss)[0];
        bg_optim_zero_grad(r->opt);
        bg_ctx_reset(r->ctx);
        r->step++;
    }
    CHECK_MSG(r->step == until, "training stopped at step %lld: %s %s", (long long)r->step, bg_last_error(),
              bg_ctx_error(r->ctx));
    return r->step == until;
}

static bg_checkpoint lm_ckpt(lm *r) {
    return (bg_checkpoint){.model = r->net, .opt = r->opt, .schedule = &r->sched, .step = r->step};
}

/* The child: registers the kind, builds the model from the file alone,
 * resumes and trains to 2 * HALF. Without the kind: prints the error. */
static int custom_child(const char *mode, const char *in, const char *out) {
    if (strcmp(mode, "noregister") == 0) {
        bg_module *m = NULL;
        bg_status s = bg_checkpoint_load_model(in, &m);
        printf("%s\n", bg_last_error());
        return s == BG_ERR_FORMAT && !m ? 0 : 1;
    }
    if (bg_module_register_type(&block_type) != BG_OK) return 2;
    lm r;
    memset(&r, 0, sizeof r);
    if (bg_checkpoint_load_model(in, &r.net) != BG_OK) {
        fprintf(stderr, "child: %s\n", bg_last_error());
        return 3;
    }
    if (!lm_attach(&r)) return 4;
    bg_checkpoint ck = lm_ckpt(&r);
    if (bg_checkpoint_load(in, &ck) != BG_OK) {
        fprintf(stderr, "child: %s\n", bg_last_error());
        return 5;
    }
    r.step = ck.step;
    if (!lm_train(&r, 2 * HALF, NULL)) return 6;
    bg_checkpoint done = lm_ckpt(&r);
    bg_status s = bg_checkpoint_save(out, &done);
    lm_free(&r);
    return s == BG_OK ? 0 : 7;
}

/* Runs this binary as "custom MODE IN OUT"; its stdout goes to capture. */
static int run_child(const char *self, const char *mode, const char *in, const char *out, char *capture, size_t cap) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        execl(self, self, "custom", mode, in, out, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t k;
    while (got + 1 < cap && (k = read(fds[0], capture + got, cap - 1 - got)) > 0) got += (size_t)k;
    capture[got] = '\0';
    close(fds[0]);
    int wst = 0;
    waitpid(pid, &wst, 0);
    return WIFEXITED(wst) ? WEXITSTATUS(wst) : -1;
}

static void test_custom_kind(const char *self) {
    // Not registered yet: describing it fails with its name.
    bg_rng rng;
    bg_rng_seed(&rng, 0);
    bg_module *lone = block_new(4, &rng);
    char *j = bg_model_to_json(lone);
    CHECK(j == NULL);
    CHECK_STR(bg_last_error(),
              "model_desc: layer (root): kind \"PreNormResidualMLP\" is not registered (bg_module_register_type)");
    CHECK(bg_module_register_type(&block_type) == BG_OK);
    CHECK(bg_module_register_type(&block_type) == BG_OK);   // idempotent
    CHECK(bg_module_find_type("PreNormResidualMLP") == &block_type);
    j = bg_model_to_json(lone);
    CHECK_STR(j, "{\"format\":\"bitgrad-model\",\"version\":2,\"model\":{\"kind\":\"PreNormResidualMLP\",\"dim\":4,"
                 "\"children\":[{\"name\":\"norm\",\"kind\":\"RMSNorm\",\"dim\":4,\"eps\":9.9999999747524271e-7},"
                 "{\"name\":\"fc\",\"kind\":\"Linear\",\"in_features\":4,\"out_features\":4,\"bias\":true}]}}");
    free(j);
    bg_module_free(lone);

    char half[128], resumed[128];
    path_in_dir(half, sizeof half, "custom_half.ckpt");
    path_in_dir(resumed, sizeof resumed, "custom_resumed.ckpt");
    lm a;
    if (!lm_new(&a, 1)) return;
    CHECK(bg_module_type_of(bg_module_find_child(bg_module_child(a.net, 1), "fc")) == &bg_qlinear_type);
    CHECK_STR(a.q->names[0], "1.fc.weight_quant");
    double first = 0, last = 0;
    if (!lm_train(&a, 1, &first) || !lm_train(&a, HALF, NULL)) return;
    bg_checkpoint ck = lm_ckpt(&a);
    CHECK_MSG(bg_checkpoint_save(half, &ck) == BG_OK, "%s", bg_last_error());
    if (!lm_train(&a, 2 * HALF, &last)) return;
    CHECK_MSG(last < 0.8 * first, "the model does not learn: loss %.4f -> %.4f", first, last);
    // The schedule reached ternary weights at step 14.
    CHECK(bg_quant_state_spec(a.q->states[0])->kind == BG_QUANT_TERNARY);

    char out[1024];
    int rc = run_child(self, "resume", half, resumed, out, sizeof out);
    CHECK_MSG(rc == 0, "resume child failed: %d", rc);
    lm b;
    memset(&b, 0, sizeof b);
    CHECK_MSG(bg_checkpoint_load_model(resumed, &b.net) == BG_OK, "%s", bg_last_error());
    if (!b.net || !lm_attach(&b)) return;
    bg_checkpoint cb = lm_ckpt(&b);
    CHECK_MSG(bg_checkpoint_load(resumed, &cb) == BG_OK, "%s", bg_last_error());
    CHECK(cb.step == 2 * HALF);
    CHECK_SAME_TRAINING(a.net, b.net, a.opt, b.opt);
    CHECK(bg_optim_step_count(b.opt) == 2 * HALF);
    // The same file in a process that did not register the kind.
    rc = run_child(self, "noregister", half, "-", out, sizeof out);
    CHECK_MSG(rc == 0, "noregister child: %d", rc);
    char want[512];
    snprintf(want, sizeof want,
             "checkpoint_load: %s: model_desc: layer 1: unknown kind \"PreNormResidualMLP\": register it with "
             "bg_module_register_type before loading\n",
             half);
    const char *got = out;
    CHECK_STR(got, want);
    printf("custom kind: Embedding + 2 PreNormResidualMLP + head, %d+%d steps (int8 -> int4 -> ternary weights), "
           "loss %.4f -> %.4f, resumed in a new process bit for bit\n",
           HALF, HALF, first, last);
    lm_free(&a);
    lm_free(&b);
}

// ---------------------------------------------------------------------------
// (c) registry errors, Residual

static bg_tensor *noop_forward(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    (void)ctx, (void)m;
    return x;
}

static bg_status sneaky_save(const bg_module *m, json_t *hp) {
    (void)m;
    return bg_hparam_set_string(hp, "kind", "Linear");
}
static bg_module *sneaky_load(const json_t *hp, bg_rng *rng);
static const bg_module_type sneaky_type = {
    .kind = "Sneaky", .forward = noop_forward, .save_hparams = sneaky_save, .load_hparams = sneaky_load};
static bg_module *sneaky_load(const json_t *hp, bg_rng *rng) {
    (void)hp, (void)rng;
    return bg_module_new(&sneaky_type, NULL);
}

static void test_registry_errors(void) {
    CHECK(bg_module_register_type(NULL) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "module_register_type: type is NULL");
    static const bg_module_type no_load = {.kind = "NoLoad", .forward = noop_forward};
    CHECK(bg_module_register_type(&no_load) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "module_register_type: kind \"NoLoad\" has no load_hparams hook");
    static const bg_module_type fake_linear = {.kind = "Linear", .forward = noop_forward, .load_hparams = block_load};
    CHECK(bg_module_register_type(&fake_linear) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "module_register_type: another type is already registered as \"Linear\"");
    CHECK(bg_module_find_type("Linear") == &bg_linear_type);
    CHECK(bg_module_find_type("NoSuchKind") == NULL);
    // A hook that writes a key the loader owns is refused, naming the kind.
    CHECK(bg_module_register_type(&sneaky_type) == BG_OK);
    bg_module *sn = sneaky_load(NULL, NULL);
    CHECK(bg_model_to_json(sn) == NULL);
    CHECK_STR(bg_last_error(),
              "model_desc: layer (root): Sneaky's save_hparams wrote a reserved key (kind, name, children)");
    bg_module_free(sn);

    bg_rng rng;
    bg_rng_seed(&rng, 4);
    bg_module *res = bg_residual_new(1, (bg_module *[]){bg_linear_new(6, 2, false, &rng)});
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(3, 6));
    CHECK(bg_module_forward(ctx, res, x) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "Residual: the branch changes the shape: x is [3,6], f(x) is [3,2]");
    bg_ctx_free(ctx);
    bg_module_free(res);
}

// ---------------------------------------------------------------------------
// (d) files of the previous format

static void test_old_files(void) {
    static const char *const ckpts[] = {"full.ckpt", "later.ckpt", "model_only.ckpt"};
    for (int i = 0; i < 3; i++) {
        char path[512], again[128];
        snprintf(path, sizeof path, "%s/tests/fuzz/corpus/%s", bg_test_source_dir(), ckpts[i]);
        bg_safetensors *st = NULL;
        CHECK_MSG(bg_safetensors_open(path, &st) == BG_OK, "%s", bg_last_error());
        const char *desc = st ? bg_safetensors_metadata(st, "model") : NULL;
        CHECK_MSG(desc && strstr(desc, "\"version\":1"), "%s is not a version 1 description", ckpts[i]);
        bg_safetensors_free(st);
        bg_module *m = NULL;
        CHECK_MSG(bg_checkpoint_load_model(path, &m) == BG_OK, "%s: %s", ckpts[i], bg_last_error());
        // Saved again it is version 2, and loads into the same model.
        path_in_dir(again, sizeof again, "again.ckpt");
        bg_checkpoint ck = {.model = m};
        CHECK_MSG(m && bg_checkpoint_save(again, &ck) == BG_OK && bg_checkpoint_load(path, &ck) == BG_OK, "%s: %s",
                  ckpts[i], bg_last_error());
        bg_module_free(m);
    }
    static const char *const exports[] = {"mlp.bgx", "cnn.bgx"};
    for (int i = 0; i < 2; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/tests/fuzz/corpus_infer/%s", bg_test_source_dir(), exports[i]);
        bg_infer_model *im = NULL;
        CHECK_MSG(bg_infer_load(path, &im) == BG_OK, "%s: %s", exports[i], bg_last_error());
        bg_infer_free(im);
    }
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "custom") == 0) return custom_child(argv[2], argv[3], argv[4]);
    snprintf(dir, sizeof dir, "/tmp/bg_modules_XXXXXX");
    if (!mkdtemp(dir)) return 1;
    test_every_kind_round_trips();
    test_registry_errors();
    test_custom_kind(argv[0]);
    test_old_files();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return bg_test_finish();
}
