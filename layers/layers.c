/* layers.c — the built-in layers: Linear, Conv2d, Embedding, LayerNorm,
 * RMSNorm, Dropout, activations, Flatten, pooling, Sequential. Each is a
 * bg_module_type (kind, forward, describe) over the module core (module.c);
 * forwards call the autograd ops. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "layers/layers_internal.h"

static bg_module *fail_new(const char *kind, bg_status st, const char *what, long long v) {
    bg_set_error(st, "%s: %s: %lld", kind, what, v);
    return NULL;
}

/* Builds a module with a calloc'ed state copied from init (freed by free). */
static bg_module *module_with_state(const bg_module_type *type, const void *init, size_t size) {
    void *s = malloc(size);
    if (!s) {
        bg_set_error(BG_ERR_NOMEM, "%s: out of memory", type->kind);
        return NULL;
    }
    memcpy(s, init, size);
    return bg_module_new(type, s);
}

bg_module *bg_module_finish(bg_module *m) {
    if (m && bg_module_finalize(m) != BG_OK) {
        bg_module_free(m);
        return NULL;
    }
    return m;
}
#define finish bg_module_finish

/* Described sizes: 1 .. 2^31. */
#define MAXDIM BG_HPARAM_MAX_DIM

/* The first failing status of a chain of hparam calls (each returns bg_status). */
#define TRY(expr)                          \
    do {                                   \
        bg_status try_st_ = (expr);        \
        if (try_st_ != BG_OK) return try_st_; \
    } while (0)
#define TRY_NULL(expr)                     \
    do {                                   \
        if ((expr) != BG_OK) return NULL;  \
    } while (0)

static const char *tf(bool b) { return b ? "true" : "false"; }

// ---------------------------------------------------------------------------
// Linear: y = x W^T + b, x [..., in], W [out,in], b [out]

typedef struct linear_state {
    int64_t in, out;
    bg_tensor *weight, *bias;
} linear_state;

static bg_tensor *linear_forward(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    linear_state *s = bg_module_state(m);
    if (x->ndim < 1 || x->shape[x->ndim - 1] != s->in) {
        char a[BG_SHAPE_STR_MAX];
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "Linear: input features differ: x is %s, in_features is %lld",
                           bg_shape_str(x, a, sizeof a), (long long)s->in);
    }
    return bg_linear(ctx, x, s->weight, s->bias);
}

static int linear_describe(const bg_module *m, char *buf, size_t len) {
    const linear_state *s = bg_module_state(m);
    return snprintf(buf, len, "Linear(in_features=%lld, out_features=%lld, bias=%s)", (long long)s->in,
                    (long long)s->out, tf(s->bias != NULL));
}

static bg_status linear_save(const bg_module *m, json_t *hp) {
    const linear_state *s = bg_module_state(m);
    TRY(bg_hparam_set_int(hp, "in_features", s->in));
    TRY(bg_hparam_set_int(hp, "out_features", s->out));
    return bg_hparam_set_bool(hp, "bias", s->bias != NULL);
}

static bg_module *linear_load(const json_t *hp, bg_rng *rng) {
    int64_t sz[2];
    bool bias;
    TRY_NULL(bg_hparam_get_int(hp, "in_features", 1, MAXDIM, &sz[0]));
    TRY_NULL(bg_hparam_get_int(hp, "out_features", 1, MAXDIM, &sz[1]));
    TRY_NULL(bg_hparam_get_bool(hp, "bias", &bias));
    TRY_NULL(bg_hparam_check_numel(2, sz));
    return bg_linear_new(sz[0], sz[1], bias, rng);
}

const bg_module_type bg_linear_type = {
    .kind = "Linear", .forward = linear_forward, .describe = linear_describe, .free_state = free,
    .save_hparams = linear_save, .load_hparams = linear_load,
};

void bg_init_bias_like(bg_tensor *b, const bg_tensor *w, bg_rng *rng) {
    int64_t fan_in = bg_fan_in(w);
    float bound = fan_in > 0 ? (float)(1.0 / sqrt((double)fan_in)) : 0.0f;
    bg_init_uniform(b, rng, -bound, bound);
}

bg_module *bg_linear_new(int64_t in_features, int64_t out_features, bool bias, bg_rng *rng) {
    if (in_features <= 0) return fail_new("Linear", BG_ERR_ARG, "in_features must be positive", in_features);
    if (out_features <= 0) return fail_new("Linear", BG_ERR_ARG, "out_features must be positive", out_features);
    if (!rng) {
        bg_set_error(BG_ERR_ARG, "Linear: rng is NULL");
        return NULL;
    }
    linear_state init = {.in = in_features, .out = out_features};
    bg_module *m = module_with_state(&bg_linear_type, &init, sizeof init);
    if (!m) return NULL;
    linear_state *s = bg_module_state(m);
    s->weight = bg_module_add_param(m, "weight", BG_SHAPE(out_features, in_features));
    // Nothing more once the weight is refused (a huge bias would be allocated for nothing).
    if (bias && s->weight) s->bias = bg_module_add_param(m, "bias", BG_SHAPE(out_features));
    if (!s->weight || (bias && !s->bias)) {
        bg_module_free(m);
        return NULL;
    }
    bg_init_torch_default(s->weight, rng);
    if (bias) bg_init_bias_like(s->bias, s->weight, rng);
    return finish(m);
}

// ---------------------------------------------------------------------------
// Conv2d: x [N,C,H,W], W [OC, C/groups, KH, KW], b [OC]

typedef struct conv2d_state {
    int64_t in, out, kh, kw;
    bg_conv2d_opts opts;
    bg_tensor *weight, *bias;
} conv2d_state;

static bg_tensor *conv2d_forward(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    conv2d_state *s = bg_module_state(m);
    if (x->ndim != 4 || x->shape[1] != s->in) {
        char a[BG_SHAPE_STR_MAX];
        return bg_ctx_fail(ctx, BG_ERR_SHAPE,
                           "Conv2d: input must be [N,%lld,H,W]: x is %s", (long long)s->in,
                           bg_shape_str(x, a, sizeof a));
    }
    return bg_conv2d(ctx, x, s->weight, s->bias, &s->opts);
}

static int conv2d_describe(const bg_module *m, char *buf, size_t len) {
    const conv2d_state *s = bg_module_state(m);
    const bg_conv2d_opts *o = &s->opts;
    int n = snprintf(buf, len, "Conv2d(%lld, %lld, kernel_size=(%lld, %lld), stride=(%lld, %lld)",
                     (long long)s->in, (long long)s->out, (long long)s->kh, (long long)s->kw,
                     (long long)o->stride[0], (long long)o->stride[1]);
    size_t k = n > 0 && (size_t)n < len ? (size_t)n : len;
    if (o->padding[0] || o->padding[1])
        n += snprintf(buf + k, len - k, ", padding=(%lld, %lld)", (long long)o->padding[0],
                      (long long)o->padding[1]);
    k = n > 0 && (size_t)n < len ? (size_t)n : len;
    if (o->dilation[0] != 1 || o->dilation[1] != 1)
        n += snprintf(buf + k, len - k, ", dilation=(%lld, %lld)", (long long)o->dilation[0],
                      (long long)o->dilation[1]);
    k = n > 0 && (size_t)n < len ? (size_t)n : len;
    if (o->groups != 1) n += snprintf(buf + k, len - k, ", groups=%lld", (long long)o->groups);
    k = n > 0 && (size_t)n < len ? (size_t)n : len;
    if (!s->bias) n += snprintf(buf + k, len - k, ", bias=false");
    k = n > 0 && (size_t)n < len ? (size_t)n : len;
    n += snprintf(buf + k, len - k, ")");
    return n;
}

bg_status bg_conv2d_hparams_save(json_t *hp, int64_t in, int64_t out, int64_t kh, int64_t kw,
                                 const bg_conv2d_opts *o, bool bias) {
    TRY(bg_hparam_set_int(hp, "in_channels", in));
    TRY(bg_hparam_set_int(hp, "out_channels", out));
    TRY(bg_hparam_set_pair(hp, "kernel_size", kh, kw));
    TRY(bg_hparam_set_pair(hp, "stride", o->stride[0], o->stride[1]));
    TRY(bg_hparam_set_pair(hp, "padding", o->padding[0], o->padding[1]));
    TRY(bg_hparam_set_pair(hp, "dilation", o->dilation[0], o->dilation[1]));
    TRY(bg_hparam_set_int(hp, "groups", o->groups));
    return bg_hparam_set_bool(hp, "bias", bias);
}

bg_status bg_conv2d_hparams_load(const json_t *hp, int64_t *in, int64_t *out, int64_t k[2], bg_conv2d_opts *o,
                                 bool *bias) {
    *o = BG_CONV2D_DEFAULTS;
    TRY(bg_hparam_get_int(hp, "in_channels", 1, MAXDIM, in));
    TRY(bg_hparam_get_int(hp, "out_channels", 1, MAXDIM, out));
    TRY(bg_hparam_get_pair(hp, "kernel_size", 1, MAXDIM, k));
    TRY(bg_hparam_get_pair(hp, "stride", 1, MAXDIM, o->stride));
    TRY(bg_hparam_get_pair(hp, "padding", 0, MAXDIM, o->padding));
    TRY(bg_hparam_get_pair(hp, "dilation", 1, MAXDIM, o->dilation));
    TRY(bg_hparam_get_int(hp, "groups", 1, MAXDIM, &o->groups));
    TRY(bg_hparam_get_bool(hp, "bias", bias));
    return bg_hparam_check_numel(4, (const int64_t[]){*in, *out, k[0], k[1]});
}

static bg_status conv2d_save(const bg_module *m, json_t *hp) {
    const conv2d_state *s = bg_module_state(m);
    return bg_conv2d_hparams_save(hp, s->in, s->out, s->kh, s->kw, &s->opts, s->bias != NULL);
}

static bg_module *conv2d_load(const json_t *hp, bg_rng *rng) {
    int64_t in, out, k[2];
    bg_conv2d_opts o;
    bool bias;
    TRY_NULL(bg_conv2d_hparams_load(hp, &in, &out, k, &o, &bias));
    return bg_conv2d_new(in, out, k[0], k[1], &o, bias, rng);
}

const bg_module_type bg_conv2d_type = {
    .kind = "Conv2d", .forward = conv2d_forward, .describe = conv2d_describe, .free_state = free,
    .save_hparams = conv2d_save, .load_hparams = conv2d_load,
};

bg_module *bg_conv2d_new(int64_t in_channels, int64_t out_channels, int64_t kernel_h,
                         int64_t kernel_w, const bg_conv2d_opts *opts, bool bias, bg_rng *rng) {
    bg_conv2d_opts o = opts ? *opts : BG_CONV2D_DEFAULTS;
    if (in_channels <= 0) return fail_new("Conv2d", BG_ERR_ARG, "in_channels must be positive", in_channels);
    if (out_channels <= 0) return fail_new("Conv2d", BG_ERR_ARG, "out_channels must be positive", out_channels);
    if (kernel_h <= 0 || kernel_w <= 0)
        return fail_new("Conv2d", BG_ERR_ARG, "kernel size must be positive", kernel_h <= 0 ? kernel_h : kernel_w);
    if (o.groups <= 0) return fail_new("Conv2d", BG_ERR_ARG, "groups must be positive", o.groups);
    if (in_channels % o.groups || out_channels % o.groups) {
        bg_set_error(BG_ERR_ARG, "Conv2d: channels must be divisible by groups: in %lld, out %lld, groups %lld",
                     (long long)in_channels, (long long)out_channels, (long long)o.groups);
        return NULL;
    }
    for (int i = 0; i < 2; i++) {
        if (o.stride[i] <= 0) return fail_new("Conv2d", BG_ERR_ARG, "stride must be positive", o.stride[i]);
        if (o.dilation[i] <= 0) return fail_new("Conv2d", BG_ERR_ARG, "dilation must be positive", o.dilation[i]);
        if (o.padding[i] < 0) return fail_new("Conv2d", BG_ERR_ARG, "padding must be >= 0", o.padding[i]);
    }
    if (!rng) {
        bg_set_error(BG_ERR_ARG, "Conv2d: rng is NULL");
        return NULL;
    }
    conv2d_state init = {.in = in_channels, .out = out_channels, .kh = kernel_h, .kw = kernel_w, .opts = o};
    bg_module *m = module_with_state(&bg_conv2d_type, &init, sizeof init);
    if (!m) return NULL;
    conv2d_state *s = bg_module_state(m);
    s->weight = bg_module_add_param(m, "weight", BG_SHAPE(out_channels, in_channels / o.groups, kernel_h, kernel_w));
    if (bias && s->weight) s->bias = bg_module_add_param(m, "bias", BG_SHAPE(out_channels));
    if (!s->weight || (bias && !s->bias)) {
        bg_module_free(m);
        return NULL;
    }
    bg_init_torch_default(s->weight, rng);
    if (bias) bg_init_bias_like(s->bias, s->weight, rng);
    return finish(m);
}

/* The options of a Conv2d module (qlayers.c rebuilds it quantization-aware). */
bg_status bg_conv2d_get_opts(const bg_module *m, bg_conv2d_opts *opts) {
    if (!m || !opts || bg_module_type_of(m) != &bg_conv2d_type)
        return bg_set_error(BG_ERR_ARG, "conv2d_get_opts: not a Conv2d: %s", m ? bg_module_kind(m) : "(null)");
    *opts = ((const conv2d_state *)bg_module_state(m))->opts;
    return BG_OK;
}

// ---------------------------------------------------------------------------
// Embedding: weight [num, dim]; ids i32 -> [ids..., dim]

typedef struct embedding_state {
    int64_t num, dim;
    bg_tensor *weight;
} embedding_state;

static bg_tensor *embedding_forward(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    embedding_state *s = bg_module_state(m);
    return bg_embedding(ctx, s->weight, x);
}

static int embedding_describe(const bg_module *m, char *buf, size_t len) {
    const embedding_state *s = bg_module_state(m);
    return snprintf(buf, len, "Embedding(%lld, %lld)", (long long)s->num, (long long)s->dim);
}

static bg_status embedding_save(const bg_module *m, json_t *hp) {
    const embedding_state *s = bg_module_state(m);
    TRY(bg_hparam_set_int(hp, "num_embeddings", s->num));
    return bg_hparam_set_int(hp, "embedding_dim", s->dim);
}

static bg_module *embedding_load(const json_t *hp, bg_rng *rng) {
    int64_t sz[2];
    TRY_NULL(bg_hparam_get_int(hp, "num_embeddings", 1, MAXDIM, &sz[0]));
    TRY_NULL(bg_hparam_get_int(hp, "embedding_dim", 1, MAXDIM, &sz[1]));
    TRY_NULL(bg_hparam_check_numel(2, sz));
    return bg_embedding_new(sz[0], sz[1], rng);
}

const bg_module_type bg_embedding_type = {
    .kind = "Embedding", .forward = embedding_forward, .describe = embedding_describe, .free_state = free,
    .save_hparams = embedding_save, .load_hparams = embedding_load,
};

bg_module *bg_embedding_new(int64_t num_embeddings, int64_t dim, bg_rng *rng) {
    if (num_embeddings <= 0)
        return fail_new("Embedding", BG_ERR_ARG, "num_embeddings must be positive", num_embeddings);
    if (dim <= 0) return fail_new("Embedding", BG_ERR_ARG, "dim must be positive", dim);
    if (!rng) {
        bg_set_error(BG_ERR_ARG, "Embedding: rng is NULL");
        return NULL;
    }
    embedding_state init = {.num = num_embeddings, .dim = dim};
    bg_module *m = module_with_state(&bg_embedding_type, &init, sizeof init);
    if (!m) return NULL;
    embedding_state *s = bg_module_state(m);
    if (!(s->weight = bg_module_add_param(m, "weight", BG_SHAPE(num_embeddings, dim)))) {
        bg_module_free(m);
        return NULL;
    }
    bg_init_normal(s->weight, rng, 0.0f, 1.0f);
    return finish(m);
}

// ---------------------------------------------------------------------------
// LayerNorm and RMSNorm over the last dim

typedef struct norm_state {
    int64_t dim;
    float eps;
    bg_tensor *weight, *bias;
} norm_state;

static bool norm_check(bg_ctx *ctx, const char *kind, const norm_state *s, const bg_tensor *x) {
    if (x->ndim >= 1 && x->shape[x->ndim - 1] == s->dim) return true;
    char a[BG_SHAPE_STR_MAX];
    bg_ctx_fail(ctx, BG_ERR_SHAPE, "%s: last dim differs: x is %s, normalized dim is %lld", kind,
                bg_shape_str(x, a, sizeof a), (long long)s->dim);
    return false;
}

static bg_tensor *layernorm_forward(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    norm_state *s = bg_module_state(m);
    if (!norm_check(ctx, "LayerNorm", s, x)) return NULL;
    return bg_layernorm(ctx, x, s->weight, s->bias, s->eps);
}

static int layernorm_describe(const bg_module *m, char *buf, size_t len) {
    const norm_state *s = bg_module_state(m);
    return snprintf(buf, len, "LayerNorm((%lld,), eps=%g, elementwise_affine=%s)", (long long)s->dim,
                    (double)s->eps, tf(s->weight != NULL));
}

static bg_status norm_save(const bg_module *m, json_t *hp) {
    const norm_state *s = bg_module_state(m);
    TRY(bg_hparam_set_int(hp, "dim", s->dim));
    TRY(bg_hparam_set_float(hp, "eps", s->eps));
    if (bg_module_type_of(m) != &bg_layernorm_type) return BG_OK;
    return bg_hparam_set_bool(hp, "elementwise_affine", s->weight != NULL);
}

static bg_module *layernorm_load(const json_t *hp, bg_rng *rng) {
    (void)rng;
    int64_t dim;
    float eps;
    bool affine;
    TRY_NULL(bg_hparam_get_int(hp, "dim", 1, MAXDIM, &dim));
    TRY_NULL(bg_hparam_get_float(hp, "eps", &eps));
    TRY_NULL(bg_hparam_get_bool(hp, "elementwise_affine", &affine));
    return bg_layernorm_new(dim, eps, affine);
}

static bg_module *rmsnorm_load(const json_t *hp, bg_rng *rng) {
    (void)rng;
    int64_t dim;
    float eps;
    TRY_NULL(bg_hparam_get_int(hp, "dim", 1, MAXDIM, &dim));
    TRY_NULL(bg_hparam_get_float(hp, "eps", &eps));
    return bg_rmsnorm_new(dim, eps);
}

const bg_module_type bg_layernorm_type = {
    .kind = "LayerNorm", .forward = layernorm_forward, .describe = layernorm_describe, .free_state = free,
    .save_hparams = norm_save, .load_hparams = layernorm_load,
};

static bg_tensor *rmsnorm_forward(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    norm_state *s = bg_module_state(m);
    if (!norm_check(ctx, "RMSNorm", s, x)) return NULL;
    return bg_rmsnorm(ctx, x, s->weight, s->eps);
}

static int rmsnorm_describe(const bg_module *m, char *buf, size_t len) {
    const norm_state *s = bg_module_state(m);
    return snprintf(buf, len, "RMSNorm((%lld,), eps=%g)", (long long)s->dim, (double)s->eps);
}

const bg_module_type bg_rmsnorm_type = {
    .kind = "RMSNorm", .forward = rmsnorm_forward, .describe = rmsnorm_describe, .free_state = free,
    .save_hparams = norm_save, .load_hparams = rmsnorm_load,
};

static bg_module *norm_new(const bg_module_type *type, int64_t dim, float eps, bool weight, bool bias) {
    if (dim <= 0) return fail_new(type->kind, BG_ERR_ARG, "dim must be positive", dim);
    if (!(eps >= 0.0f)) {
        bg_set_error(BG_ERR_ARG, "%s: eps must be >= 0: %g", type->kind, (double)eps);
        return NULL;
    }
    norm_state init = {.dim = dim, .eps = eps};
    bg_module *m = module_with_state(type, &init, sizeof init);
    if (!m) return NULL;
    norm_state *s = bg_module_state(m);
    if (weight && !(s->weight = bg_module_add_param(m, "weight", BG_SHAPE(dim)))) goto fail;
    if (bias && !(s->bias = bg_module_add_param(m, "bias", BG_SHAPE(dim)))) goto fail;
    if (s->weight) bg_init_constant(s->weight, 1.0f);   // bias stays zero
    return finish(m);
fail:
    bg_module_free(m);
    return NULL;
}

bg_module *bg_layernorm_new(int64_t dim, float eps, bool affine) {
    return norm_new(&bg_layernorm_type, dim, eps, affine, affine);
}

bg_module *bg_rmsnorm_new(int64_t dim, float eps) { return norm_new(&bg_rmsnorm_type, dim, eps, true, false); }

// ---------------------------------------------------------------------------
// Dropout (owns its rng)

typedef struct dropout_state {
    float p;
    bg_rng rng;
} dropout_state;

static bg_tensor *dropout_forward(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    dropout_state *s = bg_module_state(m);
    if (!bg_module_is_training(m) || s->p == 0.0f) return x;
    return bg_dropout(ctx, x, s->p, &s->rng);
}

static int dropout_describe(const bg_module *m, char *buf, size_t len) {
    const dropout_state *s = bg_module_state(m);
    return snprintf(buf, len, "Dropout(p=%g)", (double)s->p);
}

static bg_status dropout_save(const bg_module *m, json_t *hp) {
    const dropout_state *s = bg_module_state(m);
    return bg_hparam_set_float(hp, "p", s->p);
}

/* Seeded with 0: a checkpoint restores the generator's state. */
static bg_module *dropout_load(const json_t *hp, bg_rng *rng) {
    (void)rng;
    float p;
    TRY_NULL(bg_hparam_get_float(hp, "p", &p));
    return bg_dropout_new(p, 0);
}

static bg_rng *dropout_rng(bg_module *m) { return &((dropout_state *)bg_module_state(m))->rng; }

const bg_module_type bg_dropout_type = {
    .kind = "Dropout", .forward = dropout_forward, .describe = dropout_describe, .free_state = free,
    .save_hparams = dropout_save, .load_hparams = dropout_load, .module_rng = dropout_rng,
};

bg_module *bg_dropout_new(float p, uint64_t seed) {
    if (!(p >= 0.0f && p < 1.0f)) {
        bg_set_error(BG_ERR_ARG, "Dropout: p must be in [0,1): %g", (double)p);
        return NULL;
    }
    dropout_state init = {.p = p};
    bg_rng_seed(&init.rng, seed);
    return finish(module_with_state(&bg_dropout_type, &init, sizeof init));
}

// ---------------------------------------------------------------------------
// activations

typedef struct act_state {
    float slope;       /* LeakyReLU */
    bool tanh_approx;  /* GELU */
} act_state;

static bg_tensor *relu_fwd(bg_ctx *ctx, bg_module *m, bg_tensor *x) { (void)m; return bg_relu(ctx, x); }
static bg_tensor *silu_fwd(bg_ctx *ctx, bg_module *m, bg_tensor *x) { (void)m; return bg_silu(ctx, x); }
static bg_tensor *tanh_fwd(bg_ctx *ctx, bg_module *m, bg_tensor *x) { (void)m; return bg_tanh(ctx, x); }
static bg_tensor *sigmoid_fwd(bg_ctx *ctx, bg_module *m, bg_tensor *x) { (void)m; return bg_sigmoid(ctx, x); }

static bg_tensor *leaky_fwd(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    const act_state *s = bg_module_state(m);
    return bg_leaky_relu(ctx, x, s->slope);
}

static bg_tensor *gelu_fwd(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    const act_state *s = bg_module_state(m);
    return bg_gelu(ctx, x, s->tanh_approx);
}

static int leaky_describe(const bg_module *m, char *buf, size_t len) {
    const act_state *s = bg_module_state(m);
    return snprintf(buf, len, "LeakyReLU(negative_slope=%g)", (double)s->slope);
}

static int gelu_describe(const bg_module *m, char *buf, size_t len) {
    const act_state *s = bg_module_state(m);
    return snprintf(buf, len, "GELU(approximate='%s')", s->tanh_approx ? "tanh" : "none");
}

static bg_status leaky_save(const bg_module *m, json_t *hp) {
    return bg_hparam_set_float(hp, "negative_slope", ((const act_state *)bg_module_state(m))->slope);
}

static bg_module *leaky_load(const json_t *hp, bg_rng *rng) {
    (void)rng;
    float slope;
    TRY_NULL(bg_hparam_get_float(hp, "negative_slope", &slope));
    return bg_leaky_relu_new(slope);
}

static bg_status gelu_save(const bg_module *m, json_t *hp) {
    return bg_hparam_set_string(hp, "approximate", ((const act_state *)bg_module_state(m))->tanh_approx ? "tanh" : "none");
}

static bg_module *gelu_load(const json_t *hp, bg_rng *rng) {
    (void)rng;
    const char *ap = NULL;
    if (bg_hparam_get_string(hp, "approximate", &ap) != BG_OK || (strcmp(ap, "tanh") != 0 && strcmp(ap, "none") != 0)) {
        bg_set_error(BG_ERR_FORMAT, "field \"approximate\" must be \"none\" or \"tanh\"");
        return NULL;
    }
    return bg_gelu_new(strcmp(ap, "tanh") == 0);
}

static bg_module *relu_load(const json_t *hp, bg_rng *rng) { (void)hp, (void)rng; return bg_relu_new(); }
static bg_module *silu_load(const json_t *hp, bg_rng *rng) { (void)hp, (void)rng; return bg_silu_new(); }
static bg_module *tanh_load(const json_t *hp, bg_rng *rng) { (void)hp, (void)rng; return bg_tanh_new(); }
static bg_module *sigmoid_load(const json_t *hp, bg_rng *rng) { (void)hp, (void)rng; return bg_sigmoid_new(); }

const bg_module_type bg_relu_type = {.kind = "ReLU", .forward = relu_fwd, .load_hparams = relu_load};
const bg_module_type bg_silu_type = {.kind = "SiLU", .forward = silu_fwd, .load_hparams = silu_load};
const bg_module_type bg_tanh_type = {.kind = "Tanh", .forward = tanh_fwd, .load_hparams = tanh_load};
const bg_module_type bg_sigmoid_type = {.kind = "Sigmoid", .forward = sigmoid_fwd, .load_hparams = sigmoid_load};
const bg_module_type bg_leaky_relu_type = {
    .kind = "LeakyReLU", .forward = leaky_fwd, .describe = leaky_describe, .free_state = free,
    .save_hparams = leaky_save, .load_hparams = leaky_load,
};
const bg_module_type bg_gelu_type = {
    .kind = "GELU", .forward = gelu_fwd, .describe = gelu_describe, .free_state = free,
    .save_hparams = gelu_save, .load_hparams = gelu_load,
};

bg_module *bg_relu_new(void) { return finish(bg_module_new(&bg_relu_type, NULL)); }
bg_module *bg_silu_new(void) { return finish(bg_module_new(&bg_silu_type, NULL)); }
bg_module *bg_tanh_new(void) { return finish(bg_module_new(&bg_tanh_type, NULL)); }
bg_module *bg_sigmoid_new(void) { return finish(bg_module_new(&bg_sigmoid_type, NULL)); }

bg_module *bg_leaky_relu_new(float negative_slope) {
    act_state init = {.slope = negative_slope};
    return finish(module_with_state(&bg_leaky_relu_type, &init, sizeof init));
}

bg_module *bg_gelu_new(bool tanh_approx) {
    act_state init = {.tanh_approx = tanh_approx};
    return finish(module_with_state(&bg_gelu_type, &init, sizeof init));
}

// ---------------------------------------------------------------------------
// Flatten: [N, d1, ...] -> [N, d1*...]

static bg_tensor *flatten_fwd(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    (void)m;
    if (x->ndim < 1) return bg_ctx_fail(ctx, BG_ERR_SHAPE, "Flatten: input is a scalar, want [N,...]");
    if (x->ndim <= 2) return x->ndim == 2 ? x : bg_reshape(ctx, x, BG_SHAPE(x->shape[0], 1));
    int64_t rest = 1;
    for (int i = 1; i < x->ndim; i++) rest *= x->shape[i];
    return bg_reshape(ctx, x, BG_SHAPE(x->shape[0], rest));
}

static int flatten_describe(const bg_module *m, char *buf, size_t len) {
    (void)m;
    return snprintf(buf, len, "Flatten(start_dim=1, end_dim=-1)");
}

static bg_module *flatten_load(const json_t *hp, bg_rng *rng) { (void)hp, (void)rng; return bg_flatten_new(); }

const bg_module_type bg_flatten_type = {
    .kind = "Flatten", .forward = flatten_fwd, .describe = flatten_describe, .load_hparams = flatten_load,
};

bg_module *bg_flatten_new(void) { return finish(bg_module_new(&bg_flatten_type, NULL)); }

// ---------------------------------------------------------------------------
// pooling

typedef struct pool_state {
    int64_t kernel, stride, padding;
} pool_state;

static bg_tensor *maxpool_fwd(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    const pool_state *s = bg_module_state(m);
    return bg_max_pool2d(ctx, x, s->kernel, s->stride, s->padding);
}

static bg_tensor *avgpool_fwd(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    const pool_state *s = bg_module_state(m);
    return bg_avg_pool2d(ctx, x, s->kernel, s->stride, s->padding);
}

static int pool_describe(const bg_module *m, char *buf, size_t len) {
    const pool_state *s = bg_module_state(m);
    return snprintf(buf, len, "%s(kernel_size=%lld, stride=%lld, padding=%lld)", bg_module_kind(m),
                    (long long)s->kernel, (long long)s->stride, (long long)s->padding);
}

static bg_status pool_save(const bg_module *m, json_t *hp) {
    const pool_state *s = bg_module_state(m);
    TRY(bg_hparam_set_int(hp, "kernel_size", s->kernel));
    TRY(bg_hparam_set_int(hp, "stride", s->stride));
    return bg_hparam_set_int(hp, "padding", s->padding);
}

static bg_status pool_read(const json_t *hp, int64_t *k, int64_t *stride, int64_t *pad) {
    TRY(bg_hparam_get_int(hp, "kernel_size", 1, MAXDIM, k));
    TRY(bg_hparam_get_int(hp, "stride", 0, MAXDIM, stride));
    return bg_hparam_get_int(hp, "padding", 0, MAXDIM, pad);
}

static bg_module *maxpool_load(const json_t *hp, bg_rng *rng) {
    (void)rng;
    int64_t k, st, pad;
    TRY_NULL(pool_read(hp, &k, &st, &pad));
    return bg_max_pool2d_new(k, st, pad);
}

static bg_module *avgpool_load(const json_t *hp, bg_rng *rng) {
    (void)rng;
    int64_t k, st, pad;
    TRY_NULL(pool_read(hp, &k, &st, &pad));
    return bg_avg_pool2d_new(k, st, pad);
}

const bg_module_type bg_max_pool2d_type = {
    .kind = "MaxPool2d", .forward = maxpool_fwd, .describe = pool_describe, .free_state = free,
    .save_hparams = pool_save, .load_hparams = maxpool_load,
};
const bg_module_type bg_avg_pool2d_type = {
    .kind = "AvgPool2d", .forward = avgpool_fwd, .describe = pool_describe, .free_state = free,
    .save_hparams = pool_save, .load_hparams = avgpool_load,
};

static bg_module *pool_new(const bg_module_type *type, int64_t kernel, int64_t stride, int64_t padding) {
    if (kernel <= 0) return fail_new(type->kind, BG_ERR_ARG, "kernel must be positive", kernel);
    if (stride < 0) return fail_new(type->kind, BG_ERR_ARG, "stride must be >= 0", stride);
    if (padding < 0 || 2 * padding > kernel) {
        bg_set_error(BG_ERR_ARG, "%s: padding must be in [0, kernel/2]: padding %lld, kernel %lld",
                     type->kind, (long long)padding, (long long)kernel);
        return NULL;
    }
    pool_state init = {.kernel = kernel, .stride = stride ? stride : kernel, .padding = padding};
    return finish(module_with_state(type, &init, sizeof init));
}

bg_module *bg_max_pool2d_new(int64_t kernel, int64_t stride, int64_t padding) {
    return pool_new(&bg_max_pool2d_type, kernel, stride, padding);
}

bg_module *bg_avg_pool2d_new(int64_t kernel, int64_t stride, int64_t padding) {
    return pool_new(&bg_avg_pool2d_type, kernel, stride, padding);
}

// ---------------------------------------------------------------------------
// Sequential and Residual: children run in order (looked up on every
// forward, so bg_module_replace_child may swap them)

static bg_tensor *run_children(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    for (int i = 0, n = bg_module_num_children(m); i < n && x; i++)
        x = bg_module_forward(ctx, bg_module_child(m, i), x);
    return x;
}

static bg_tensor *sequential_fwd(bg_ctx *ctx, bg_module *m, bg_tensor *x) { return run_children(ctx, m, x); }

static bg_tensor *residual_fwd(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    bg_tensor *f = run_children(ctx, m, x);
    if (!f) return NULL;
    if (!bg_same_shape(f, x)) {
        char a[BG_SHAPE_STR_MAX], b[BG_SHAPE_STR_MAX];
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "Residual: the branch changes the shape: x is %s, f(x) is %s",
                           bg_shape_str(x, a, sizeof a), bg_shape_str(f, b, sizeof b));
    }
    return bg_add(ctx, x, f);
}

static bg_module *sequential_load(const json_t *hp, bg_rng *rng) {
    (void)hp, (void)rng;
    return bg_module_new(&bg_sequential_type, NULL);
}

static bg_module *residual_load(const json_t *hp, bg_rng *rng) {
    (void)hp, (void)rng;
    return bg_module_new(&bg_residual_type, NULL);
}

const bg_module_type bg_sequential_type = {.kind = "Sequential", .forward = sequential_fwd, .load_hparams = sequential_load};
const bg_module_type bg_residual_type = {.kind = "Residual", .forward = residual_fwd, .load_hparams = residual_load};

/* A container of type over the n children, named "0", "1", .... */
static bg_module *chain_new(const bg_module_type *type, int n, bg_module *const *children) {
    // Take ownership first: every child is freed on any failure below.
    int bad = -1;
    for (int i = 0; i < n && children; i++)
        if (!children[i] && bad < 0) bad = i;
    if (n < 0 || (n > 0 && !children) || bad >= 0) {
        // Keep a failing constructor's message; add one only when there is none.
        for (int i = 0; i < n && children; i++) bg_module_free(children[i]);
        if (n < 0 || !children)
            bg_set_error(BG_ERR_ARG, "%s: %s", type->kind, n < 0 ? "n is negative" : "children is NULL");
        else if (bg_last_status() == BG_OK)
            bg_set_error(BG_ERR_ARG, "%s: child %d is NULL", type->kind, bad);
        return NULL;
    }
    bg_module *m = bg_module_new(type, NULL);
    if (!m) {
        for (int i = 0; i < n; i++) bg_module_free(children[i]);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        char name[24];
        snprintf(name, sizeof name, "%d", i);
        if (bg_module_add_child(m, name, children[i]) != BG_OK) {
            // add_child freed children[i] (or it belongs elsewhere); free the rest.
            for (int j = i + 1; j < n; j++) bg_module_free(children[j]);
            bg_module_free(m);
            return NULL;
        }
    }
    return finish(m);
}

bg_module *bg_sequential_new(int n, bg_module *const *children) { return chain_new(&bg_sequential_type, n, children); }
bg_module *bg_residual_new(int n, bg_module *const *children) { return chain_new(&bg_residual_type, n, children); }

/* (Lives with the containers: it is a forward over a Sequential.) */
bg_tensor *bg_sequential_forward_capture(bg_ctx *ctx, bg_module *seq, bg_tensor *x, const int *idx, int n_idx,
                                         bg_tensor **hidden, bool grad) {
    if (!ctx || bg_ctx_status(ctx) != BG_OK) return NULL;
    if (!seq) return bg_ctx_fail(ctx, BG_ERR_ARG, "sequential_forward_capture: module is NULL");
    int nc = bg_module_num_children(seq);
    if (n_idx < 0 || (n_idx > 0 && (!idx || !hidden)))
        return bg_ctx_fail(ctx, BG_ERR_ARG, "sequential_forward_capture: bad capture list (%d indices)", n_idx);
    for (int k = 0; k < n_idx; k++) {
        if (idx[k] < 0 || idx[k] >= nc)
            return bg_ctx_fail(ctx, BG_ERR_ARG, "sequential_forward_capture: child index %d out of range for %d children",
                               idx[k], nc);
        hidden[k] = NULL;
    }
    bool g = bg_set_grad_enabled(ctx, bg_grad_enabled(ctx) && grad);
    bg_tensor *h = x;
    if (nc == 0) {
        h = bg_module_forward(ctx, seq, x);
    } else {
        for (int i = 0; i < nc && h; i++) {
            h = bg_module_forward(ctx, bg_module_child(seq, i), h);
            for (int k = 0; k < n_idx; k++)
                if (idx[k] == i) hidden[k] = h;
        }
    }
    bg_set_grad_enabled(ctx, g);
    return h;
}

// ---------------------------------------------------------------------------
// hyperparameters as a struct, for the exporters (io/export.c, io/onnx.c)

static void linear_hp(const void *st, bg_layer_hparams *out) {
    const linear_state *s = st;
    out->in = s->in, out->out = s->out, out->bias = s->bias != NULL;
}
static void conv2d_hp(const void *st, bg_layer_hparams *out) {
    const conv2d_state *s = st;
    out->in = s->in, out->out = s->out, out->kernel_h = s->kh, out->kernel_w = s->kw;
    out->conv = s->opts, out->bias = s->bias != NULL;
}
static void embedding_hp(const void *st, bg_layer_hparams *out) {
    const embedding_state *s = st;
    out->in = s->num, out->out = s->dim;
}
static void norm_hp(const void *st, bg_layer_hparams *out) {
    const norm_state *s = st;
    out->in = out->out = s->dim, out->eps = s->eps, out->bias = s->weight != NULL;
}
static void dropout_hp(const void *st, bg_layer_hparams *out) {
    dropout_state *s = (dropout_state *)st;
    out->p = s->p, out->rng = &s->rng;
}
static void leaky_hp(const void *st, bg_layer_hparams *out) { out->slope = ((const act_state *)st)->slope; }
static void gelu_hp(const void *st, bg_layer_hparams *out) { out->tanh_approx = ((const act_state *)st)->tanh_approx; }
static void pool_hp(const void *st, bg_layer_hparams *out) {
    const pool_state *s = st;
    out->kernel = s->kernel, out->stride = s->stride, out->padding = s->padding;
}
static void no_hp(const void *st, bg_layer_hparams *out) { (void)st, (void)out; }

static const struct {
    const bg_module_type *type;
    void (*fill)(const void *state, bg_layer_hparams *out);
} float_layers[] = {
    {&bg_linear_type, linear_hp},     {&bg_conv2d_type, conv2d_hp},   {&bg_embedding_type, embedding_hp},
    {&bg_layernorm_type, norm_hp},    {&bg_rmsnorm_type, norm_hp},    {&bg_dropout_type, dropout_hp},
    {&bg_leaky_relu_type, leaky_hp},  {&bg_gelu_type, gelu_hp},       {&bg_max_pool2d_type, pool_hp},
    {&bg_avg_pool2d_type, pool_hp},   {&bg_relu_type, no_hp},         {&bg_silu_type, no_hp},
    {&bg_tanh_type, no_hp},           {&bg_sigmoid_type, no_hp},      {&bg_flatten_type, no_hp},
    {&bg_sequential_type, no_hp},     {&bg_residual_type, no_hp},
};

bg_status bg_layer_hparams_get(const bg_module *m, bg_layer_hparams *out) {
    if (!m || !out) return bg_set_error(BG_ERR_ARG, "layer_hparams: module or out is NULL");
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < sizeof float_layers / sizeof float_layers[0]; i++)
        if (float_layers[i].type == bg_module_type_of(m)) {
            float_layers[i].fill(bg_module_state(m), out);
            return BG_OK;
        }
    return bg_set_error(BG_ERR_ARG, "layer_hparams: not a built-in float layer: %s", bg_module_kind(m));
}
