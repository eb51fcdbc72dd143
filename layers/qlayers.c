/* qlayers.c — quantization-aware layers: the FakeQuant module (a quantizer
 * state whose learned parameters are module parameters), QLinear, QConv2d,
 * QEmbedding, BitLinear (BitNet b1.58), whole-model conversion, quant modes
 * and the iteration over a model's quantized layers. Calls autograd/ (ops),
 * qat/ (specs, states, stats) and the module core (module.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "layers/layers_internal.h"
#include "quant/quant.h"

/* BitLinear's RMSNorm epsilon (LLaMA / BitNet's 1e-6). */
#define BITLINEAR_NORM_EPS 1e-6f

// ---------------------------------------------------------------------------
// FakeQuant: y = fake_quant(x) under its state's spec

typedef struct fq_mod {
    bg_quant_state *st;
    int ndim;                      /* the shape the state was made for (a description rebuilds it) */
    int64_t shape[BG_MAX_DIMS];
    bool is_weight;       /* keeps ternary/binary levels for the flip metric */
    bool track;
    bg_quant_stats stats;
} fq_mod;

static void fq_free(void *p) {
    fq_mod *f = p;
    if (!f) return;
    bg_quant_state_free(f->st);
    free(f->stats.levels);
    free(f->stats.prev_levels);
    free(f);
}

/* Metrics sums of one tracked forward (one pass over x and y). An
 * allocation failure fails the forward: tracking never switches itself off. */
static bool fq_track(bg_ctx *ctx, fq_mod *f, bg_tensor *x, bg_tensor *y) {
    bg_tensor *xc = bg_contiguous(ctx, x), *yc = bg_contiguous(ctx, y);
    if (!xc || !yc) return false;
    int64_t n = bg_numel(xc);
    const bg_quant_spec *spec = bg_quant_state_spec(f->st);
    int8_t *levels = NULL;
    if (f->is_weight && (spec->kind == BG_QUANT_TERNARY || spec->kind == BG_QUANT_BINARY)) {
        if (f->stats.n_levels != n) {
            free(f->stats.levels);
            free(f->stats.prev_levels);
            f->stats.levels = malloc((size_t)(n ? n : 1));
            f->stats.prev_levels = malloc((size_t)(n ? n : 1));
            f->stats.prev_version = -1;
            f->stats.n_levels = f->stats.levels && f->stats.prev_levels ? n : 0;
            if (f->stats.n_levels != n) {
                bg_ctx_fail(ctx, BG_ERR_NOMEM, "FakeQuant: out of memory for the metric levels of %lld weights",
                            (long long)n);
                return false;
            }
        }
        levels = f->stats.levels;
    }
    bg_quant_stats_compute(&f->stats, bg_f32(xc), bg_f32(yc), n, levels);
    f->stats.version++;
    return true;
}

static bg_tensor *fq_run(bg_ctx *ctx, bg_module *fq, bg_tensor *x, bg_tensor **codes, bg_quant_params *p);
static bg_tensor *fq_forward(bg_ctx *ctx, bg_module *m, bg_tensor *x) { return fq_run(ctx, m, x, NULL, NULL); }

static int fq_describe(const bg_module *m, char *buf, size_t len) {
    const fq_mod *f = bg_module_state(m);
    char s[BG_QUANT_SPEC_STR_MAX];
    bg_quant_spec_format(bg_quant_state_spec(f->st), s, sizeof s);
    return snprintf(buf, len, "FakeQuant(%s)", s);
}

static bg_status fq_save(const bg_module *m, json_t *hp);
static bg_module *fq_load(const json_t *hp, bg_rng *rng);

const bg_module_type bg_fake_quant_type = {
    .kind = "FakeQuant", .forward = fq_forward, .describe = fq_describe, .free_state = fq_free,
    .save_hparams = fq_save, .load_hparams = fq_load,
};

/* A FakeQuant module, not finalized (the caller adopts or finalizes it). */
static bg_module *fq_build(const bg_quant_spec *spec, int ndim, const int64_t *shape, bool is_weight) {
    if (!spec) {
        bg_set_error(BG_ERR_ARG, "FakeQuant: spec is NULL");
        return NULL;
    }
    fq_mod *f = calloc(1, sizeof *f);
    if (!f) {
        bg_set_error(BG_ERR_NOMEM, "FakeQuant: out of memory");
        return NULL;
    }
    f->is_weight = is_weight;
    f->stats.prev_version = -1;
    if (ndim < 0 || ndim > BG_MAX_DIMS || (ndim > 0 && !shape)) {
        free(f);
        bg_set_error(BG_ERR_ARG, "FakeQuant: bad shape (%d dims)", ndim);
        return NULL;
    }
    f->ndim = ndim;
    for (int i = 0; i < ndim; i++) f->shape[i] = shape[i];
    if (bg_quant_state_new(spec, ndim, shape, &f->st) != BG_OK) {
        free(f);
        return NULL;
    }
    bg_module *m = bg_module_new(&bg_fake_quant_type, f);
    if (!m) return NULL;
    for (int i = 0; i < bg_quant_state_num_params(f->st); i++) {
        const bg_tensor *own = bg_quant_state_param(f->st, i);
        bg_tensor *p = bg_module_add_param(m, bg_quant_state_param_name(f->st, i), own->ndim, own->shape);
        if (!p || bg_quant_state_bind_param(f->st, i, p) != BG_OK) {
            bg_module_free(m);
            return NULL;
        }
    }
    return m;
}

bg_module *bg_fake_quant_new(const bg_quant_spec *spec, int ndim, const int64_t *shape) {
    bg_module *m = fq_build(spec, ndim, shape, false);
    if (m && bg_module_finalize(m) != BG_OK) {
        bg_module_free(m);
        return NULL;
    }
    return m;
}

static bool is_fq(const bg_module *m) { return bg_module_type_of(m) == &bg_fake_quant_type; }

/* A quantizer's spec and enabled flag as "<prefix>spec" / "<prefix>enabled". */
static bg_status save_quantizer(json_t *hp, const bg_quant_state *st, const char *spec_key, const char *enabled_key) {
    char s[BG_QUANT_SPEC_STR_MAX];
    bg_quant_spec_format(bg_quant_state_spec(st), s, sizeof s);
    bg_status r = bg_hparam_set_string(hp, spec_key, s);
    return r != BG_OK ? r : bg_hparam_set_bool(hp, enabled_key, bg_quant_state_enabled(st));
}

/* An optional spec string (absent: *has false); parse errors name the field. */
static bg_status load_spec(const json_t *hp, const char *key, bg_quant_spec *spec, bool *has) {
    *has = bg_hparam_has(hp, key);
    if (!*has) return BG_OK;
    const char *str;
    if (bg_hparam_get_string(hp, key, &str) != BG_OK)
        return bg_set_error(BG_ERR_FORMAT, "field \"%s\" must be a quantizer spec string", key);
    if (bg_quant_spec_parse(str, spec) != BG_OK) {
        char msg[BG_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", bg_last_error());
        return bg_set_error(BG_ERR_FORMAT, "field \"%s\": %s", key, msg);
    }
    return BG_OK;
}

/* Sets st enabled or not when hp says so (the key is optional: enabled). */
static bg_status load_enabled(const json_t *hp, const char *key, bg_quant_state *st) {
    if (!st || !bg_hparam_has(hp, key)) return BG_OK;
    bool on;
    bg_status s = bg_hparam_get_bool(hp, key, &on);
    if (s == BG_OK) bg_quant_state_set_enabled(st, on);
    return s;
}

static bg_status fq_save(const bg_module *m, json_t *hp) {
    const fq_mod *f = bg_module_state(m);
    bg_status s = save_quantizer(hp, f->st, "spec", "enabled");
    json_t *shape = json_array();
    for (int i = 0; shape && i < f->ndim; i++)
        if (json_array_append_new(shape, json_integer(f->shape[i])) != 0) {
            json_decref(shape);
            shape = NULL;
        }
    if (s == BG_OK && (!shape || json_object_set_new(hp, "shape", shape) != 0))
        return bg_set_error(BG_ERR_NOMEM, "FakeQuant: out of memory");
    if (s != BG_OK) json_decref(shape);
    return s;
}

static bg_module *fq_load(const json_t *hp, bg_rng *rng) {
    (void)rng;
    bg_quant_spec spec;
    bool has;
    if (load_spec(hp, "spec", &spec, &has) != BG_OK) return NULL;
    if (!has) {
        bg_set_error(BG_ERR_FORMAT, "missing field \"spec\"");
        return NULL;
    }
    json_t *sh = json_object_get(hp, "shape");
    int64_t shape[BG_MAX_DIMS];
    size_t nd = json_is_array(sh) ? json_array_size(sh) : 0;
    bool ok = json_is_array(sh) && nd <= BG_MAX_DIMS;
    for (size_t i = 0; ok && i < nd; i++) {
        json_t *d = json_array_get(sh, i);
        ok = json_is_integer(d) && json_integer_value(d) >= 1 && json_integer_value(d) <= BG_HPARAM_MAX_DIM;
        if (ok) shape[i] = (int64_t)json_integer_value(d);
    }
    if (!ok || (nd > 0 && bg_hparam_check_numel((int)nd, shape) != BG_OK)) {
        bg_set_error(BG_ERR_FORMAT, "field \"shape\" must be an array of at most %d sizes", BG_MAX_DIMS);
        return NULL;
    }
    bg_module *m = bg_fake_quant_new(&spec, (int)nd, shape);
    if (m && load_enabled(hp, "enabled", ((fq_mod *)bg_module_state(m))->st) != BG_OK) {
        bg_module_free(m);
        return NULL;
    }
    return m;
}

// ---------------------------------------------------------------------------
// quantized layers

typedef enum ql_kind { QL_LINEAR, QL_CONV, QL_EMBEDDING, QL_BIT } ql_kind;

static const char *const ql_kinds[] = {
    [QL_LINEAR] = "QLinear", [QL_CONV] = "QConv2d", [QL_EMBEDDING] = "QEmbedding", [QL_BIT] = "BitLinear",
};

typedef struct qlayer {
    ql_kind kind;
    int64_t in, out, kh, kw;   /* Embedding: in = num, out = dim */
    bg_conv2d_opts opts;
    bg_tensor *weight, *bias;
    bool f32_forward;          /* the product in f32 even when the integer forward applies */
    bool no_norm;              /* BitLinear without its own RMSNorm (bg_bitlinear_set_norm) */
} qlayer;

/* True when st is on and its spec gives symmetric codes in [lo, 127] with a
 * layout the integer product takes (no groups): worth asking the fake
 * quant for its codes. */
static bool int8_codes(const bg_quant_state *st, int32_t lo) {
    if (!st || !bg_quant_state_enabled(st)) return false;
    const bg_quant_spec *sp = bg_quant_state_spec(st);
    int32_t qmin, qmax;
    bg_quant_spec_qrange(sp, &qmin, &qmax);
    return sp->symmetric && sp->range != BG_QUANT_RANGE_LSQ_PLUS && qmin >= lo && qmax <= 127 &&
           sp->granularity != BG_QUANT_PER_GROUP;
}

/* The scales of p as an arena tensor when p quantized rows x K values with
 * zero points 0 and one scale in all or one per row; else NULL (no error). */
static bg_tensor *row_scales(bg_ctx *ctx, const bg_quant_params *p, int64_t rows, int64_t K) {
    bool per_tensor = p->channels == 1, per_row = p->outer == 1 && p->channels == rows && p->inner == K;
    if (!per_tensor && !per_row) return NULL;
    for (int64_t c = 0; p->zero_point && c < p->channels; c++)
        if (p->zero_point[c] != 0.0f) return NULL;
    bg_tensor *t = bg_empty(ctx, BG_DTYPE_F32, 1, (int64_t[]){p->channels});
    if (t) memcpy(bg_f32(t), p->scale, sizeof(float) * (size_t)p->channels);
    return t;
}

/* FakeQuant child fq on x; with codes non-NULL also its codes and params
 * from the same kernel pass (bg_fake_quant_codes). */
static bg_tensor *fq_run(bg_ctx *ctx, bg_module *fq, bg_tensor *x, bg_tensor **codes, bg_quant_params *p) {
    fq_mod *f = bg_module_state(fq);
    bg_tensor *y = bg_fake_quant_codes(ctx, x, bg_quant_state_spec(f->st), f->st, codes, p);
    if (y && y != x && f->track && !fq_track(ctx, f, x, y)) return NULL;
    return y;
}

/* A Linear-like qlayer's product: on the integer kernels
 * (bg_qlinear_int_codes) with the codes and scales its two quantizers made
 * in their own pass, when both give symmetric int8 codes per tensor, per
 * token (activations) or per output channel (weights); else bg_linear. */
static bg_tensor *linear_product(bg_ctx *ctx, const bg_module *m, bg_tensor *x, bg_module *aq, bg_module *wq) {
    const qlayer *q = bg_module_state(m);
    bool want = !q->f32_forward && aq && wq && int8_codes(bg_qlayer_input_state(m), -128) &&
                int8_codes(bg_qlayer_weight_state(m), -127);
    bg_tensor *xc = NULL, *wc = NULL;
    bg_quant_params xp, wp;
    bg_tensor *xq = aq ? fq_run(ctx, aq, x, want ? &xc : NULL, &xp) : x;
    bg_tensor *w = wq ? fq_run(ctx, wq, q->weight, want ? &wc : NULL, &wp) : q->weight;
    if (!xq || !w) return NULL;
    if (xc && wc && xc->dtype == BG_DTYPE_I8 && wc->dtype == BG_DTYPE_I8) {
        int64_t rows = bg_numel(xq) / q->in;
        bg_tensor *xs = row_scales(ctx, &xp, rows, q->in), *ws = row_scales(ctx, &wp, q->out, q->in);
        if (xs && ws) return bg_qlinear_int_codes(ctx, xq, w, q->bias, xc, xs, wc, ws);
        if (bg_ctx_status(ctx) != BG_OK) return NULL;
    }
    return bg_linear(ctx, xq, w, q->bias);
}

static bg_tensor *ql_forward(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    qlayer *q = bg_module_state(m);
    const char *kind = ql_kinds[q->kind];
    char a[BG_SHAPE_STR_MAX];
    if ((q->kind == QL_LINEAR || q->kind == QL_BIT) && (x->ndim < 1 || x->shape[x->ndim - 1] != q->in))
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "%s: input features differ: x is %s, in_features is %lld", kind,
                           bg_shape_str(x, a, sizeof a), (long long)q->in);
    if (q->kind == QL_CONV && (x->ndim != 4 || x->shape[1] != q->in))
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "%s: input must be [N,%lld,H,W]: x is %s", kind, (long long)q->in,
                           bg_shape_str(x, a, sizeof a));
    // BitNet b1.58: every BitLinear input is an RMSNorm output (SubLN; the
    // Training-Tips FAQ puts it inside the layer). No gain (see layers.h).
    if (q->kind == QL_BIT && !q->no_norm) x = bg_rmsnorm(ctx, x, NULL, BITLINEAR_NORM_EPS);
    if (!x) return NULL;
    bg_module *aq = bg_module_find_child(m, "input_quant"), *wq = bg_module_find_child(m, "weight_quant");
    if (q->kind == QL_LINEAR || q->kind == QL_BIT) return linear_product(ctx, m, x, aq, wq);
    if (aq) x = fq_run(ctx, aq, x, NULL, NULL);
    bg_tensor *w = wq ? fq_run(ctx, wq, q->weight, NULL, NULL) : q->weight;
    if (!x || !w) return NULL;
    return q->kind == QL_CONV ? bg_conv2d(ctx, x, w, q->bias, &q->opts) : bg_embedding(ctx, w, x);
}

static int ql_describe(const bg_module *m, char *buf, size_t len) {
    const qlayer *q = bg_module_state(m);
    char ws[BG_QUANT_SPEC_STR_MAX] = "float", as[BG_QUANT_SPEC_STR_MAX] = "float";
    const bg_quant_state *wst = bg_qlayer_weight_state(m), *ast = bg_qlayer_input_state(m);
    if (wst) bg_quant_spec_format(bg_quant_state_spec(wst), ws, sizeof ws);
    if (ast) bg_quant_spec_format(bg_quant_state_spec(ast), as, sizeof as);
    switch (q->kind) {
    case QL_CONV:
        return snprintf(buf, len, "QConv2d(%lld, %lld, kernel_size=(%lld, %lld), stride=(%lld, %lld), padding=(%lld, %lld), "
                        "bias=%s, w=%s, a=%s)", (long long)q->in, (long long)q->out, (long long)q->kh, (long long)q->kw,
                        (long long)q->opts.stride[0], (long long)q->opts.stride[1], (long long)q->opts.padding[0],
                        (long long)q->opts.padding[1], q->bias ? "true" : "false", ws, as);
    case QL_EMBEDDING:
        return snprintf(buf, len, "QEmbedding(%lld, %lld, w=%s)", (long long)q->in, (long long)q->out, ws);
    case QL_BIT:
        return snprintf(buf, len, "BitLinear(in_features=%lld, out_features=%lld, w=%s, a=%s%s)", (long long)q->in,
                        (long long)q->out, ws, as, q->no_norm ? ", norm=false" : "");
    default:
        return snprintf(buf, len, "QLinear(in_features=%lld, out_features=%lld, bias=%s, w=%s, a=%s)", (long long)q->in,
                        (long long)q->out, q->bias ? "true" : "false", ws, as);
    }
}

static bg_status ql_save(const bg_module *m, json_t *hp);
static bg_module *ql_load(const json_t *hp, bg_rng *rng, ql_kind kind);
static bg_module *qlinear_load(const json_t *hp, bg_rng *rng) { return ql_load(hp, rng, QL_LINEAR); }
static bg_module *qconv_load(const json_t *hp, bg_rng *rng) { return ql_load(hp, rng, QL_CONV); }
static bg_module *qembedding_load(const json_t *hp, bg_rng *rng) { return ql_load(hp, rng, QL_EMBEDDING); }
static bg_module *bitlinear_load(const json_t *hp, bg_rng *rng) { return ql_load(hp, rng, QL_BIT); }

/* Quantized layers make their FakeQuant children from their specs. */
const bg_module_type bg_qlinear_type = {
    .kind = "QLinear", .forward = ql_forward, .describe = ql_describe, .free_state = free,
    .save_hparams = ql_save, .load_hparams = qlinear_load, .builds_children = true,
};
const bg_module_type bg_qconv2d_type = {
    .kind = "QConv2d", .forward = ql_forward, .describe = ql_describe, .free_state = free,
    .save_hparams = ql_save, .load_hparams = qconv_load, .builds_children = true,
};
const bg_module_type bg_qembedding_type = {
    .kind = "QEmbedding", .forward = ql_forward, .describe = ql_describe, .free_state = free,
    .save_hparams = ql_save, .load_hparams = qembedding_load, .builds_children = true,
};
const bg_module_type bg_bitlinear_type = {
    .kind = "BitLinear", .forward = ql_forward, .describe = ql_describe, .free_state = free,
    .save_hparams = ql_save, .load_hparams = bitlinear_load, .builds_children = true,
};

static const bg_module_type *const ql_types[] = {
    [QL_LINEAR] = &bg_qlinear_type, [QL_CONV] = &bg_qconv2d_type, [QL_EMBEDDING] = &bg_qembedding_type,
    [QL_BIT] = &bg_bitlinear_type,
};

bool bg_module_is_qlayer(const bg_module *m) { return m && bg_module_type_of(m)->forward == ql_forward; }

/* Checks an activation spec for a layer of this kind; BG_OK or BG_ERR_ARG. */
static bg_status check_act_spec(ql_kind kind, const bg_quant_spec *a) {
    const char *k = ql_kinds[kind];
    char s[BG_QUANT_SPEC_STR_MAX];
    if (!a) return BG_OK;
    bg_quant_spec_format(a, s, sizeof s);
    if (kind == QL_EMBEDDING)
        return bg_set_error(BG_ERR_ARG, "%s: ids are integers and take no input quantizer: \"%s\"", k, s);
    if (a->granularity == BG_QUANT_PER_GROUP)
        return bg_set_error(BG_ERR_ARG, "%s: per_group input quantization is not supported: \"%s\"", k, s);
    if (a->granularity == BG_QUANT_PER_CHANNEL) {
        bool ok = kind == QL_CONV ? (a->axis == 1 || a->axis == -3) : a->axis == -1;
        if (!ok)
            return bg_set_error(BG_ERR_ARG, "%s: per_channel input quantization must use the feature axis (%s): \"%s\"",
                                k, kind == QL_CONV ? "1" : "-1", s);
    }
    return BG_OK;
}

/* Builds a finalized qlayer with zero parameters (the caller fills them). */
static bg_module *ql_build(ql_kind kind, int64_t in, int64_t out, int64_t kh, int64_t kw, const bg_conv2d_opts *opts,
                           bool bias, const bg_quant_spec *w_spec, const bg_quant_spec *a_spec) {
    const char *k = ql_kinds[kind];
    if (in <= 0 || out <= 0 || (kind == QL_CONV && (kh <= 0 || kw <= 0))) {
        bg_set_error(BG_ERR_ARG, "%s: sizes must be positive: %lld, %lld", k, (long long)in, (long long)out);
        return NULL;
    }
    if (check_act_spec(kind, a_spec) != BG_OK) return NULL;
    qlayer *q = calloc(1, sizeof *q);
    if (!q) {
        bg_set_error(BG_ERR_NOMEM, "%s: out of memory", k);
        return NULL;
    }
    q->kind = kind;
    q->in = in, q->out = out, q->kh = kh, q->kw = kw;
    q->opts = opts ? *opts : BG_CONV2D_DEFAULTS;
    if (kind == QL_CONV && (q->opts.groups <= 0 || in % q->opts.groups || out % q->opts.groups)) {
        free(q);
        bg_set_error(BG_ERR_ARG, "%s: channels must be divisible by groups: in %lld, out %lld, groups %lld", k,
                     (long long)in, (long long)out, (long long)(opts ? opts->groups : 1));
        return NULL;
    }
    bg_module *m = bg_module_new(ql_types[kind], q);
    if (!m) return NULL;
    int64_t wshape[4];
    int wnd = 2;
    if (kind == QL_CONV) {
        wshape[0] = out, wshape[1] = in / q->opts.groups, wshape[2] = kh, wshape[3] = kw, wnd = 4;
    } else if (kind == QL_EMBEDDING) {
        wshape[0] = in, wshape[1] = out;
    } else {
        wshape[0] = out, wshape[1] = in;
    }
    q->weight = bg_module_add_param(m, "weight", wnd, wshape);
    if (!q->weight || (bias && !(q->bias = bg_module_add_param(m, "bias", BG_SHAPE(out))))) goto fail;
    if (w_spec) {
        bg_module *c = fq_build(w_spec, wnd, wshape, true);
        if (!c || bg_module_add_child(m, "weight_quant", c) != BG_OK) goto fail;
    }
    if (a_spec) {
        bool pc = a_spec->granularity == BG_QUANT_PER_CHANNEL;
        const int64_t conv_shape[4] = {1, in, 1, 1}, lin_shape[1] = {in};
        bg_module *c = kind == QL_CONV ? fq_build(a_spec, pc ? 4 : 0, conv_shape, false)
                                       : fq_build(a_spec, pc ? 1 : 0, lin_shape, false);
        if (!c || bg_module_add_child(m, "input_quant", c) != BG_OK) goto fail;
    }
    if (bg_module_finalize(m) != BG_OK) goto fail;
    return m;
fail:
    bg_module_free(m);
    return NULL;
}


static bg_module *need_rng(const char *kind) {
    bg_set_error(BG_ERR_ARG, "%s: rng is NULL", kind);
    return NULL;
}

bg_module *bg_qlinear_new(int64_t in_features, int64_t out_features, bool bias, const bg_quant_spec *w_spec,
                          const bg_quant_spec *a_spec, bg_rng *rng) {
    if (!rng) return need_rng("QLinear");
    bg_module *m = ql_build(QL_LINEAR, in_features, out_features, 0, 0, NULL, bias, w_spec, a_spec);
    if (!m) return NULL;
    qlayer *q = bg_module_state(m);
    bg_init_torch_default(q->weight, rng);
    if (bias) bg_init_bias_like(q->bias, q->weight, rng);
    return m;
}

bg_module *bg_qconv2d_new(int64_t in_channels, int64_t out_channels, int64_t kernel_h, int64_t kernel_w,
                          const bg_conv2d_opts *opts, bool bias, const bg_quant_spec *w_spec,
                          const bg_quant_spec *a_spec, bg_rng *rng) {
    if (!rng) return need_rng("QConv2d");
    bg_module *m = ql_build(QL_CONV, in_channels, out_channels, kernel_h, kernel_w, opts, bias, w_spec, a_spec);
    if (!m) return NULL;
    qlayer *q = bg_module_state(m);
    bg_init_torch_default(q->weight, rng);
    if (bias) bg_init_bias_like(q->bias, q->weight, rng);
    return m;
}

bg_module *bg_qembedding_new(int64_t num_embeddings, int64_t dim, const bg_quant_spec *w_spec, bg_rng *rng) {
    if (!rng) return need_rng("QEmbedding");
    bg_module *m = ql_build(QL_EMBEDDING, num_embeddings, dim, 0, 0, NULL, false, w_spec, NULL);
    if (!m) return NULL;
    bg_init_normal(((qlayer *)bg_module_state(m))->weight, rng, 0.0f, 1.0f);
    return m;
}

static bg_status bitnet_specs(bg_quant_spec *w, bg_quant_spec *a) {
    bg_status st = bg_quant_spec_parse("ternary:absmean", w);
    return st != BG_OK ? st : bg_quant_spec_parse("int8:per_token:absmax", a);
}

bg_module *bg_bitlinear_new(int64_t in_features, int64_t out_features, bg_rng *rng) {
    if (!rng) return need_rng("BitLinear");
    bg_quant_spec w, a;
    if (bitnet_specs(&w, &a) != BG_OK) return NULL;
    bg_module *m = ql_build(QL_BIT, in_features, out_features, 0, 0, NULL, false, &w, &a);
    if (m) bg_init_torch_default(((qlayer *)bg_module_state(m))->weight, rng);
    return m;
}

/* Copies "weight" (and "bias" when both have one) from src into m. */
static bg_module *copy_params(bg_module *m, const bg_module *src) {
    if (!m) return NULL;
    qlayer *q = bg_module_state(m);
    const bg_tensor *w = bg_module_find_param(src, "weight"), *b = bg_module_find_param(src, "bias");
    if (!w || bg_copy(q->weight, w) != BG_OK || (q->bias && (!b || bg_copy(q->bias, b) != BG_OK))) {
        bg_module_free(m);
        return NULL;
    }
    return m;
}

bool bg_bitlinear_norm(const bg_module *m) {
    const qlayer *q = bg_module_type_of(m) == &bg_bitlinear_type ? bg_module_state(m) : NULL;
    return q && !q->no_norm;
}

bg_status bg_bitlinear_set_norm(bg_module *m, bool norm) {
    if (bg_module_type_of(m) != &bg_bitlinear_type)
        return bg_set_error(BG_ERR_ARG, "bitlinear_set_norm: not a BitLinear: %s", m ? bg_module_kind(m) : "(null)");
    ((qlayer *)bg_module_state(m))->no_norm = !norm;
    return BG_OK;
}

bg_module *bg_bitlinear_from(const bg_module *linear) {
    if (!linear || bg_module_type_of(linear) != &bg_linear_type) {
        bg_set_error(BG_ERR_ARG, "bitlinear_from: not a Linear: %s", linear ? bg_module_kind(linear) : "(null)");
        return NULL;
    }
    const bg_tensor *w = bg_module_find_param(linear, "weight");
    bg_quant_spec ws, as;
    if (!w || bitnet_specs(&ws, &as) != BG_OK) return NULL;
    return copy_params(ql_build(QL_BIT, w->shape[1], w->shape[0], 0, 0, NULL, false, &ws, &as), linear);
}

bg_module *bg_quantize_module(const bg_module *layer, const bg_quant_spec *w_spec, const bg_quant_spec *a_spec) {
    const bg_module_type *t = bg_module_type_of(layer);
    const bg_tensor *w = layer ? bg_module_find_param(layer, "weight") : NULL;
    bool bias = layer && bg_module_find_param(layer, "bias") != NULL;
    if (w && t == &bg_linear_type)
        return copy_params(ql_build(QL_LINEAR, w->shape[1], w->shape[0], 0, 0, NULL, bias, w_spec, a_spec), layer);
    if (w && t == &bg_embedding_type)
        return copy_params(ql_build(QL_EMBEDDING, w->shape[0], w->shape[1], 0, 0, NULL, false, w_spec, a_spec), layer);
    if (w && t == &bg_conv2d_type) {
        bg_conv2d_opts o;
        if (bg_conv2d_get_opts(layer, &o) != BG_OK) return NULL;
        return copy_params(ql_build(QL_CONV, w->shape[1] * o.groups, w->shape[0], w->shape[2], w->shape[3], &o, bias,
                                    w_spec, a_spec),
                           layer);
    }
    bg_set_error(BG_ERR_ARG, "quantize_module: not a Linear, Conv2d or Embedding: %s", layer ? bg_module_kind(layer) : "(null)");
    return NULL;
}

// ---------------------------------------------------------------------------
// hyperparameters (model descriptions)

static bg_status ql_save(const bg_module *m, json_t *hp) {
    const qlayer *q = bg_module_state(m);
    bg_status s;
    switch (q->kind) {
    case QL_CONV: s = bg_conv2d_hparams_save(hp, q->in, q->out, q->kh, q->kw, &q->opts, q->bias != NULL); break;
    case QL_EMBEDDING:
        s = bg_hparam_set_int(hp, "num_embeddings", q->in);
        if (s == BG_OK) s = bg_hparam_set_int(hp, "embedding_dim", q->out);
        break;
    default:
        s = bg_hparam_set_int(hp, "in_features", q->in);
        if (s == BG_OK) s = bg_hparam_set_int(hp, "out_features", q->out);
        if (s == BG_OK && q->kind == QL_LINEAR) s = bg_hparam_set_bool(hp, "bias", q->bias != NULL);
        // Written only when off: files of BitLinears with their norm stay as they were.
        if (s == BG_OK && q->kind == QL_BIT && q->no_norm) s = bg_hparam_set_bool(hp, "norm", false);
    }
    const bg_quant_state *wst = bg_qlayer_weight_state(m), *ast = bg_qlayer_input_state(m);
    if (s == BG_OK && wst) s = save_quantizer(hp, wst, "weight_spec", "weight_enabled");
    if (s == BG_OK && ast) s = save_quantizer(hp, ast, "input_spec", "input_enabled");
    return s;
}

/* A schedule may have moved a quantizer to another spec than the one its
 * constructor gives (BitLinear's): set the described one. */
static bg_status move_spec(bg_quant_state *st, const bg_quant_spec *want) {
    if (!st || !want || bg_quant_spec_equal(want, bg_quant_state_spec(st))) return BG_OK;
    return bg_quant_state_set_spec(st, want);
}

static bg_module *ql_load(const json_t *hp, bg_rng *rng, ql_kind kind) {
    int64_t sz[4] = {1, 1, 1, 1}, k[2];
    bool bias = false, hw = false, ha = false, norm = true;
    bg_conv2d_opts o;
    bg_quant_spec ws, as;
    bg_status s;
    if (kind == QL_CONV) {
        s = bg_conv2d_hparams_load(hp, &sz[0], &sz[1], k, &o, &bias);
    } else {
        bool emb = kind == QL_EMBEDDING;
        s = bg_hparam_get_int(hp, emb ? "num_embeddings" : "in_features", 1, BG_HPARAM_MAX_DIM, &sz[0]);
        if (s == BG_OK) s = bg_hparam_get_int(hp, emb ? "embedding_dim" : "out_features", 1, BG_HPARAM_MAX_DIM, &sz[1]);
        if (s == BG_OK && kind == QL_LINEAR) s = bg_hparam_get_bool(hp, "bias", &bias);
        if (s == BG_OK && kind == QL_BIT && bg_hparam_has(hp, "norm")) s = bg_hparam_get_bool(hp, "norm", &norm);
        if (s == BG_OK) s = bg_hparam_check_numel(2, sz);
    }
    if (s == BG_OK) s = load_spec(hp, "weight_spec", &ws, &hw);
    if (s == BG_OK && kind != QL_EMBEDDING) s = load_spec(hp, "input_spec", &as, &ha);
    if (s != BG_OK) return NULL;
    bg_module *m;
    switch (kind) {
    case QL_CONV: m = bg_qconv2d_new(sz[0], sz[1], k[0], k[1], &o, bias, hw ? &ws : NULL, ha ? &as : NULL, rng); break;
    case QL_EMBEDDING: m = bg_qembedding_new(sz[0], sz[1], hw ? &ws : NULL, rng); break;
    case QL_BIT:
        m = bg_bitlinear_new(sz[0], sz[1], rng);
        if (m) bg_bitlinear_set_norm(m, norm);
        break;
    default: m = bg_qlinear_new(sz[0], sz[1], bias, hw ? &ws : NULL, ha ? &as : NULL, rng);
    }
    if (!m) return NULL;
    bg_quant_state *wst = bg_qlayer_weight_state(m), *ast = bg_qlayer_input_state(m);
    if ((kind == QL_BIT && (move_spec(wst, hw ? &ws : NULL) != BG_OK || move_spec(ast, ha ? &as : NULL) != BG_OK)) ||
        load_enabled(hp, "weight_enabled", wst) != BG_OK || load_enabled(hp, "input_enabled", ast) != BG_OK) {
        bg_module_free(m);
        return NULL;
    }
    return m;
}

// ---------------------------------------------------------------------------
// accessors

static const qlayer *as_qlayer(const bg_module *m) { return bg_module_is_qlayer(m) ? bg_module_state(m) : NULL; }

static fq_mod *fq_of(const bg_module *m, bool input) {
    if (is_fq(m)) return bg_module_state(m);
    const bg_module *c = bg_module_is_qlayer(m) ? bg_module_find_child(m, input ? "input_quant" : "weight_quant") : NULL;
    return c ? bg_module_state(c) : NULL;
}

bg_quant_state *bg_qlayer_weight_state(const bg_module *qlayer) {
    fq_mod *f = fq_of(qlayer, false);
    return f ? f->st : NULL;
}

bg_quant_state *bg_qlayer_input_state(const bg_module *qlayer) {
    fq_mod *f = fq_of(qlayer, true);
    return f ? f->st : NULL;
}

bg_quant_stats *bg_qlayer_stats(const bg_module *qlayer, bool input) {
    fq_mod *f = fq_of(qlayer, input);
    return f ? &f->stats : NULL;
}

bg_status bg_qconv2d_get_opts(const bg_module *m, bg_conv2d_opts *opts) {
    const qlayer *q = as_qlayer(m);
    if (!q || q->kind != QL_CONV || !opts)
        return bg_set_error(BG_ERR_ARG, "qconv2d_get_opts: not a QConv2d: %s", m ? bg_module_kind(m) : "(null)");
    *opts = q->opts;
    return BG_OK;
}

bg_tensor *bg_qlayer_weight(const bg_module *layer) {
    const qlayer *q = as_qlayer(layer);
    return q ? q->weight : NULL;
}

/* Appends one quantizer (when there is room) and counts it. */
static void add_quantizer(bg_quant_state *st, const bg_tensor *w, const char *path, const char *suffix,
                          bg_quant_state **states, const char **names, char *name_buf, const bg_tensor **weights,
                          int max, int *k) {
    if (*k < max) {
        if (states) states[*k] = st;
        if (weights) weights[*k] = w;
        if (names && name_buf) {
            char *nb = name_buf + (size_t)*k * BG_PARAM_NAME_MAX;
            if (snprintf(nb, BG_PARAM_NAME_MAX, "%s%s%s", path, path[0] && suffix[0] ? "." : "", suffix) >=
                BG_PARAM_NAME_MAX)
                nb[BG_PARAM_NAME_MAX - 1] = '\0';   // truncated (paths that long are not expected)
            names[*k] = nb;
        }
    }
    (*k)++;
}

/* Pre-order: a qlayer's weight then input quantizer; a FakeQuant outside a
 * qlayer (a user's block may quantize an activation) under its own path. */
static void collect_quantizers(const bg_module *m, char *path, size_t plen, bg_quant_state **states,
                               const char **names, char *name_buf, const bg_tensor **weights, int max, int *k) {
    if (bg_module_is_qlayer(m)) {
        bg_quant_state *w = bg_qlayer_weight_state(m), *a = bg_qlayer_input_state(m);
        if (w) add_quantizer(w, bg_qlayer_weight(m), path, "weight_quant", states, names, name_buf, weights, max, k);
        if (a) add_quantizer(a, NULL, path, "input_quant", states, names, name_buf, weights, max, k);
        return;
    }
    if (is_fq(m)) {
        add_quantizer(((fq_mod *)bg_module_state(m))->st, NULL, path, path[0] ? "" : "fake_quant", states, names,
                      name_buf, weights, max, k);
        return;
    }
    for (int i = 0; i < bg_module_num_children(m); i++) {
        int w = snprintf(path + plen, BG_PARAM_NAME_MAX - plen, "%s%s", plen ? "." : "", bg_module_child_name(m, i));
        size_t nl = w > 0 && plen + (size_t)w < BG_PARAM_NAME_MAX ? plen + (size_t)w : BG_PARAM_NAME_MAX - 1;
        collect_quantizers(bg_module_child(m, i), path, nl, states, names, name_buf, weights, max, k);
        path[plen] = '\0';
    }
}

int bg_model_quantizers(const bg_module *m, bg_quant_state **states, const char **names, char *name_buf,
                        const bg_tensor **weights, int max) {
    char path[BG_PARAM_NAME_MAX] = "";
    int k = 0;
    if (m) collect_quantizers(m, path, 0, states, names, name_buf, weights, max, &k);
    return k;
}

bg_quantizer_list *bg_model_quantizer_list(const bg_module *m) {
    int n = bg_model_quantizers(m, NULL, NULL, NULL, NULL, 0);
    size_t slots = n > 0 ? (size_t)n : 1;
    /* one block: the header, then the three arrays, then the names' chars */
    size_t bytes = sizeof(bg_quantizer_list) + slots * (sizeof(void *) * 3 + BG_PARAM_NAME_MAX);
    bg_quantizer_list *q = calloc(1, bytes);
    if (!q) {
        bg_set_error(BG_ERR_NOMEM, "quantizer list: out of memory for %d quantizers", n);
        return NULL;
    }
    q->states = (bg_quant_state **)(q + 1);
    q->names = (const char **)(q->states + slots);
    q->weights = (const bg_tensor **)(q->names + slots);
    char *name_buf = (char *)(q->weights + slots);
    q->n = bg_model_quantizers(m, q->states, q->names, name_buf, q->weights, n);
    return q;
}

void bg_quantizer_list_free(bg_quantizer_list *q) { free(q); }

// ---------------------------------------------------------------------------
// controls over a subtree

typedef void (*fq_visit)(fq_mod *f, int arg);

static void walk_fq(bg_module *m, fq_visit fn, int arg) {
    if (!m) return;
    if (is_fq(m)) fn(bg_module_state(m), arg);
    for (int i = 0; i < bg_module_num_children(m); i++) walk_fq(bg_module_child(m, i), fn, arg);
}

static void set_mode(fq_mod *f, int mode) {
    bg_quant_state_set_enabled(f->st, mode != BG_QUANT_MODE_FP32);
    if (mode != BG_QUANT_MODE_FP32) bg_quant_state_set_observer(f->st, mode == BG_QUANT_MODE_TRAIN);
}
static void set_obs(fq_mod *f, int on) { bg_quant_state_set_observer(f->st, on != 0); }
static void reset_obs(fq_mod *f, int unused) {
    (void)unused;
    bg_quant_state_reset(f->st);
}
static void set_track(fq_mod *f, int on) { f->track = on != 0; }
static void set_init(fq_mod *f, int on) {
    if (bg_quant_state_num_params(f->st) > 0) bg_quant_state_set_initialized(f->st, on != 0);
}

void bg_model_set_quant_mode(bg_module *m, bg_quant_mode mode) { walk_fq(m, set_mode, (int)mode); }
void bg_model_set_observers(bg_module *m, bool enabled) { walk_fq(m, set_obs, enabled); }
void bg_model_reset_observers(bg_module *m) { walk_fq(m, reset_obs, 0); }
void bg_model_track_quant(bg_module *m, bool enabled) { walk_fq(m, set_track, enabled); }
void bg_model_set_quant_initialized(bg_module *m, bool initialized) { walk_fq(m, set_init, initialized); }

void bg_model_set_int_forward(bg_module *m, bool enabled) {
    if (!m) return;
    if (bg_module_is_qlayer(m)) ((qlayer *)bg_module_state(m))->f32_forward = !enabled;
    for (int i = 0; i < bg_module_num_children(m); i++) bg_model_set_int_forward(bg_module_child(m, i), enabled);
}

// ---------------------------------------------------------------------------
// iteration (pre-order, m included)

/* Finds the target-th qlayer under m; *k counts those seen. Writes its path
 * into path (prefix already there, length plen). */
static const bg_module *find_q(const bg_module *m, int target, int *k, char *path, size_t cap, size_t plen) {
    if (bg_module_is_qlayer(m)) {
        if ((*k)++ == target) return m;
        return NULL;   // no qlayer inside a qlayer
    }
    for (int i = 0; i < bg_module_num_children(m); i++) {
        const char *nm = bg_module_child_name(m, i);
        int w = snprintf(path + plen, cap - plen, "%s%s", plen ? "." : "", nm);
        size_t nl = w > 0 && plen + (size_t)w < cap ? plen + (size_t)w : cap - 1;
        const bg_module *r = find_q(bg_module_child(m, i), target, k, path, cap, nl);
        if (r) return r;
        path[plen] = '\0';
    }
    return NULL;
}

int bg_qlayer_count(const bg_module *m) {
    char path[BG_PARAM_NAME_MAX];
    path[0] = '\0';
    int k = 0;
    if (m) find_q(m, -1, &k, path, sizeof path, 0);
    return k;
}

bg_module *bg_qlayer_at(const bg_module *m, int i) {
    char path[BG_PARAM_NAME_MAX];
    path[0] = '\0';
    int k = 0;
    return m && i >= 0 ? (bg_module *)find_q(m, i, &k, path, sizeof path, 0) : NULL;
}

int bg_qlayer_name(const bg_module *m, int i, char *buf, size_t len) {
    char path[BG_PARAM_NAME_MAX];
    path[0] = '\0';
    int k = 0;
    if (!m || i < 0 || !find_q(m, i, &k, path, sizeof path, 0)) return -1;
    return snprintf(buf, len, "%s", path);
}

// ---------------------------------------------------------------------------
// conversion

static bg_status last_status(void) {
    bg_status st = bg_last_status();
    return st != BG_OK ? st : BG_ERR_ARG;
}

static bg_status parse_opt(const char *s, bg_quant_spec *spec, bool *has) {
    *has = s && s[0];
    return *has ? bg_quant_spec_parse(s, spec) : BG_OK;
}

/* Each replacement re-collates the model's flat parameter and gradient
 * buffers; glibc keeps the freed ones in its heap (its mmap threshold rises
 * after the first large free), about 130 MiB for the 28 projections of the
 * quality rows' language model. Hand them back once the tree is done. */
static bg_status trimmed(bg_status st) {
#ifdef __GLIBC__
    malloc_trim(0);
#endif
    return st;
}

/* Replaces the Linear/Conv2d children under m (recursively); bitnet: Linear -> BitLinear. */
static bg_status convert_tree(bg_module *m, const bg_quant_spec *w, const bg_quant_spec *a, bool bitnet) {
    for (int i = 0; i < bg_module_num_children(m); i++) {
        bg_module *c = bg_module_child(m, i);
        bool lin = bg_module_type_of(c) == &bg_linear_type, conv = bg_module_type_of(c) == &bg_conv2d_type;
        bg_module *r = NULL;
        if (bitnet && lin) {
            r = bg_bitlinear_from(c);
            if (r && bg_module_type_of(m)->prenormed_linears) bg_bitlinear_set_norm(r, false);
        }
        else if (!bitnet && (lin || conv))
            r = bg_quantize_module(c, w, a);
        else if (!bg_module_is_qlayer(c)) {
            bg_status st = convert_tree(c, w, a, bitnet);
            if (st != BG_OK) return st;
            continue;
        } else
            continue;
        if (!r) return last_status();
        bg_status st = bg_module_replace_child(m, i, r);
        if (st != BG_OK) return st;
    }
    return BG_OK;
}

bg_status bg_quantize_model(bg_module *model, const char *w_spec, const char *a_spec) {
    if (!model) return bg_set_error(BG_ERR_ARG, "quantize_model: model is NULL");
    bg_quant_spec w, a;
    bool hw, ha;
    bg_status st = parse_opt(w_spec, &w, &hw);
    if (st == BG_OK) st = parse_opt(a_spec, &a, &ha);
    if (st != BG_OK) return st;
    return bg_quantize_model_specs(model, hw ? &w : NULL, ha ? &a : NULL);
}

bg_status bg_quantize_model_specs(bg_module *model, const bg_quant_spec *w_spec, const bg_quant_spec *a_spec) {
    if (!model) return bg_set_error(BG_ERR_ARG, "quantize_model: model is NULL");
    const bg_module_type *t = bg_module_type_of(model);
    if (t == &bg_linear_type || t == &bg_conv2d_type)
        return bg_set_error(BG_ERR_ARG, "quantize_model: the model is itself a %s; put it in a Sequential", t->kind);
    return trimmed(convert_tree(model, w_spec, a_spec, false));
}

bg_status bg_bitnet_model(bg_module *model) {
    if (!model) return bg_set_error(BG_ERR_ARG, "bitnet_model: model is NULL");
    if (bg_module_type_of(model) == &bg_linear_type)
        return bg_set_error(BG_ERR_ARG, "bitnet_model: the model is itself a Linear; put it in a Sequential");
    return trimmed(convert_tree(model, NULL, NULL, true));
}

bg_status bg_quantize_layer(bg_module *model, const char *path, const char *w_spec, const char *a_spec) {
    if (!model || !path) return bg_set_error(BG_ERR_ARG, "quantize_layer: %s is NULL", model ? "path" : "model");
    // Walk "a.b.c" down to the parent of the last component.
    bg_module *parent = NULL, *cur = model;
    int idx = -1;
    const char *p = path;
    while (cur && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        parent = cur, cur = NULL, idx = -1;
        for (int i = 0; i < bg_module_num_children(parent); i++) {
            const char *nm = bg_module_child_name(parent, i);
            if (strlen(nm) == n && strncmp(nm, p, n) == 0) {
                cur = bg_module_child(parent, i), idx = i;
                break;
            }
        }
        p = dot ? dot + 1 : p + n;
    }
    if (!cur || idx < 0) return bg_set_error(BG_ERR_ARG, "quantize_layer: no layer named %s", path);
    bg_module *r;
    if (w_spec && strcmp(w_spec, "bitnet") == 0) {
        r = bg_bitlinear_from(cur);
    } else {
        bg_quant_spec w, a;
        bool hw, ha;
        bg_status st = parse_opt(w_spec, &w, &hw);
        if (st == BG_OK) st = parse_opt(a_spec, &a, &ha);
        if (st != BG_OK) return st;
        r = bg_quantize_module(cur, hw ? &w : NULL, ha ? &a : NULL);
    }
    if (!r) return last_status();
    return bg_module_replace_child(parent, idx, r);
}
