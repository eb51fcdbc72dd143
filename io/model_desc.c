/* model_desc.c — model descriptions: a module tree as JSON (kinds,
 * hyperparameters, quantizer specs) and back to a freshly initialised model
 * (io/io.h "model descriptions and checkpoints"). JSON through jansson.
 * Calls layers/ (constructors, bg_layer_hparams_get, qlayer accessors) and
 * qat/ (spec strings). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "io/io.h"
#include "qat/qat.h"

#define DESC_FORMAT "bitgrad-model"
#define DESC_VERSION 1
/* Deeper trees are rejected (a hostile description must not blow the stack). */
#define DESC_MAX_DEPTH 32
/* Seed of the generator that initialises a model built from a description. */
#define DESC_INIT_SEED 0

// ---------------------------------------------------------------------------
// model -> JSON

/* A JSON array [a, b]. */
static json_t *pair(int64_t a, int64_t b) { return json_pack("[I,I]", (json_int_t)a, (json_int_t)b); }

/* Sets key to v (taking v); false on failure (v NULL or out of memory). */
static bool put(json_t *o, const char *key, json_t *v) { return v && json_object_set_new(o, key, v) == 0; }

/* Adds weight_spec / input_spec and their enabled flags for a qlayer. */
static bool put_specs(json_t *o, const bg_module *m) {
    for (int side = 0; side < 2; side++) {
        const bg_quant_state *st = side ? bg_qlayer_input_state(m) : bg_qlayer_weight_state(m);
        if (!st) continue;
        char s[BG_QUANT_SPEC_STR_MAX];
        bg_quant_spec_format(bg_quant_state_spec(st), s, sizeof s);
        if (!put(o, side ? "input_spec" : "weight_spec", json_string(s)) ||
            !put(o, side ? "input_enabled" : "weight_enabled", json_boolean(bg_quant_state_enabled(st))))
            return false;
    }
    return true;
}

static bool put_conv(json_t *o, int64_t in, int64_t out, int64_t kh, int64_t kw, const bg_conv2d_opts *c, bool bias) {
    return put(o, "in_channels", json_integer(in)) && put(o, "out_channels", json_integer(out)) &&
           put(o, "kernel_size", pair(kh, kw)) && put(o, "stride", pair(c->stride[0], c->stride[1])) &&
           put(o, "padding", pair(c->padding[0], c->padding[1])) &&
           put(o, "dilation", pair(c->dilation[0], c->dilation[1])) && put(o, "groups", json_integer(c->groups)) &&
           put(o, "bias", json_boolean(bias));
}

/* The node of m (path names it in errors); NULL + bg_last_error. */
static json_t *describe(const bg_module *m, const char *path, int depth) {
    const char *k = bg_module_kind(m);
    const char *where = path[0] ? path : "(root)";
    if (depth > DESC_MAX_DEPTH) {
        bg_set_error(BG_ERR_ARG, "model_desc: layer %s: the tree is deeper than %d", where, DESC_MAX_DEPTH);
        return NULL;
    }
    json_t *o = json_object();
    if (!o || !put(o, "kind", json_string(k))) goto nomem;
    if (bg_module_is_qlayer(m)) {
        const bg_tensor *w = bg_qlayer_weight(m);
        bool bias = bg_module_find_param(m, "bias") != NULL;
        bool ok;
        if (strcmp(k, "QConv2d") == 0) {
            bg_conv2d_opts c;
            if (bg_qconv2d_get_opts(m, &c) != BG_OK) goto fail;
            ok = put_conv(o, w->shape[1] * c.groups, w->shape[0], w->shape[2], w->shape[3], &c, bias);
        } else if (strcmp(k, "QEmbedding") == 0) {
            ok = put(o, "num_embeddings", json_integer(w->shape[0])) &&
                 put(o, "embedding_dim", json_integer(w->shape[1]));
        } else {   // QLinear, BitLinear: weight [out, in]
            ok = put(o, "in_features", json_integer(w->shape[1])) &&
                 put(o, "out_features", json_integer(w->shape[0])) &&
                 (strcmp(k, "BitLinear") == 0 || put(o, "bias", json_boolean(bias)));
        }
        if (!ok || !put_specs(o, m)) goto nomem;
        return o;
    }
    bg_layer_hparams h;
    if (bg_layer_hparams_get(m, &h) != BG_OK) {
        bg_set_error(BG_ERR_ARG, "model_desc: layer %s: cannot describe kind \"%s\"", where, k);
        goto fail;
    }
    bool ok = true;
    if (strcmp(k, "Linear") == 0)
        ok = put(o, "in_features", json_integer(h.in)) && put(o, "out_features", json_integer(h.out)) &&
             put(o, "bias", json_boolean(h.bias));
    else if (strcmp(k, "Conv2d") == 0)
        ok = put_conv(o, h.in, h.out, h.kernel_h, h.kernel_w, &h.conv, h.bias);
    else if (strcmp(k, "Embedding") == 0)
        ok = put(o, "num_embeddings", json_integer(h.in)) && put(o, "embedding_dim", json_integer(h.out));
    else if (strcmp(k, "LayerNorm") == 0)
        ok = put(o, "dim", json_integer(h.in)) && put(o, "eps", json_real(h.eps)) &&
             put(o, "elementwise_affine", json_boolean(h.bias));
    else if (strcmp(k, "RMSNorm") == 0)
        ok = put(o, "dim", json_integer(h.in)) && put(o, "eps", json_real(h.eps));
    else if (strcmp(k, "Dropout") == 0)
        ok = put(o, "p", json_real(h.p));
    else if (strcmp(k, "LeakyReLU") == 0)
        ok = put(o, "negative_slope", json_real(h.slope));
    else if (strcmp(k, "GELU") == 0)
        ok = put(o, "approximate", json_string(h.tanh_approx ? "tanh" : "none"));
    else if (strcmp(k, "MaxPool2d") == 0 || strcmp(k, "AvgPool2d") == 0)
        ok = put(o, "kernel_size", json_integer(h.kernel)) && put(o, "stride", json_integer(h.stride)) &&
             put(o, "padding", json_integer(h.padding));
    if (!ok) goto nomem;
    int nc = bg_module_num_children(m);
    if (strcmp(k, "Sequential") == 0) {
        json_t *arr = json_array();
        if (!put(o, "children", arr)) goto nomem;
        for (int i = 0; i < nc; i++) {
            char cp[BG_PARAM_NAME_MAX];
            snprintf(cp, sizeof cp, "%s%s%s", path, path[0] ? "." : "", bg_module_child_name(m, i));
            json_t *c = describe(bg_module_child(m, i), cp, depth + 1);
            if (!c) goto fail;
            if (json_array_append_new(arr, c) != 0) goto nomem;
        }
    } else if (nc > 0) {
        bg_set_error(BG_ERR_ARG, "model_desc: layer %s: cannot describe the children of kind \"%s\"", where, k);
        goto fail;
    }
    return o;
nomem:
    bg_set_error(BG_ERR_NOMEM, "model_desc: out of memory");
fail:
    json_decref(o);
    return NULL;
}

char *bg_model_to_json(const bg_module *model) {
    if (!model) {
        bg_set_error(BG_ERR_ARG, "model_desc: model is NULL");
        return NULL;
    }
    json_t *node = describe(model, "", 0);
    if (!node) return NULL;
    json_t *root = json_pack("{s:s, s:i, s:o}", "format", DESC_FORMAT, "version", DESC_VERSION, "model", node);
    char *s = root ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!s) bg_set_error(BG_ERR_NOMEM, "model_desc: out of memory");
    return s;
}

// ---------------------------------------------------------------------------
// JSON -> model

typedef struct desc_ctx {
    bg_rng rng;
    char path[BG_PARAM_NAME_MAX];   /* the layer being built, "" for the root */
} desc_ctx;

static const char *where(const desc_ctx *d) { return d->path[0] ? d->path : "(root)"; }

static bg_status bad(const desc_ctx *d, const char *fmt, const char *key, const char *what) {
    char msg[BG_ERROR_MAX];
    snprintf(msg, sizeof msg, fmt, key, what);
    return bg_set_error(BG_ERR_FORMAT, "model_desc: layer %s: %s", where(d), msg);
}

/* An integer field in [lo, hi]. */
static bg_status get_int(const desc_ctx *d, json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    json_t *v = json_object_get(o, key);
    if (!v) return bad(d, "missing field \"%s\"%s", key, "");
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        char what[96];
        snprintf(what, sizeof what, "an integer in [%lld, %lld]", (long long)lo, (long long)hi);
        return bad(d, "field \"%s\" must be %s", key, what);
    }
    *out = (int64_t)json_integer_value(v);
    return BG_OK;
}

/* A pair of integers [a, b], each in [lo, hi]. */
static bg_status get_pair(const desc_ctx *d, json_t *o, const char *key, int64_t lo, int64_t hi, int64_t out[2]) {
    json_t *v = json_object_get(o, key);
    if (!v) return bad(d, "missing field \"%s\"%s", key, "");
    char what[96];
    snprintf(what, sizeof what, "a pair of integers in [%lld, %lld]", (long long)lo, (long long)hi);
    if (!json_is_array(v) || json_array_size(v) != 2) return bad(d, "field \"%s\" must be %s", key, what);
    for (size_t i = 0; i < 2; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_integer(e) || json_integer_value(e) < lo || json_integer_value(e) > hi)
            return bad(d, "field \"%s\" must be %s", key, what);
        out[i] = (int64_t)json_integer_value(e);
    }
    return BG_OK;
}

static bg_status get_bool(const desc_ctx *d, json_t *o, const char *key, bool *out) {
    json_t *v = json_object_get(o, key);
    if (!v) return bad(d, "missing field \"%s\"%s", key, "");
    if (!json_is_boolean(v)) return bad(d, "field \"%s\" must be %s", key, "true or false");
    *out = json_is_true(v);
    return BG_OK;
}

static bg_status get_float(const desc_ctx *d, json_t *o, const char *key, float *out) {
    json_t *v = json_object_get(o, key);
    if (!v) return bad(d, "missing field \"%s\"%s", key, "");
    if (!json_is_number(v)) return bad(d, "field \"%s\" must be %s", key, "a number");
    *out = (float)json_number_value(v);
    return BG_OK;
}

/* An optional spec string (absent: *has false); parse errors name the layer. */
static bg_status get_spec(const desc_ctx *d, json_t *o, const char *key, bg_quant_spec *spec, bool *has) {
    json_t *v = json_object_get(o, key);
    *has = v != NULL;
    if (!v) return BG_OK;
    if (!json_is_string(v)) return bad(d, "field \"%s\" must be %s", key, "a quantizer spec string");
    if (bg_quant_spec_parse(json_string_value(v), spec) != BG_OK) {
        char msg[BG_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", bg_last_error());
        return bg_set_error(BG_ERR_FORMAT, "model_desc: layer %s: field \"%s\": %s", where(d), key, msg);
    }
    return BG_OK;
}

/* Bounds on described sizes: a hostile description must not overflow a
 * product or ask for absurd memory (2^32 floats = 16 GiB per weight). */
#define MAXDIM ((int64_t)1 << 31)
#define MAXNUMEL ((int64_t)1 << 32)

/* BG_OK when a*b*c*d (each in [1, MAXDIM]) is at most MAXNUMEL. */
static bg_status check_numel(const desc_ctx *d, int64_t a, int64_t b, int64_t c, int64_t e) {
    int64_t f[4] = {a, b, c, e}, n = 1;
    for (int i = 0; i < 4; i++) {
        if (f[i] > MAXNUMEL / n)
            return bg_set_error(BG_ERR_FORMAT, "model_desc: layer %s: the weight would hold more than %lld elements",
                                where(d), (long long)MAXNUMEL);
        n *= f[i];
    }
    return BG_OK;
}

/* Wraps a constructor's failure: "model_desc: layer 0: <its message>". */
static bg_module *built(const desc_ctx *d, bg_module *m) {
    if (!m) {
        char msg[BG_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", bg_last_error());
        bg_set_error(BG_ERR_FORMAT, "model_desc: layer %s: %s", where(d), msg);
    }
    return m;
}

static bg_status read_conv(const desc_ctx *d, json_t *o, int64_t *in, int64_t *out, int64_t k[2],
                           bg_conv2d_opts *c, bool *bias) {
    bg_status s;
    if ((s = get_int(d, o, "in_channels", 1, MAXDIM, in)) || (s = get_int(d, o, "out_channels", 1, MAXDIM, out)) ||
        (s = get_pair(d, o, "kernel_size", 1, MAXDIM, k)) || (s = get_pair(d, o, "stride", 1, MAXDIM, c->stride)) ||
        (s = get_pair(d, o, "padding", 0, MAXDIM, c->padding)) ||
        (s = get_pair(d, o, "dilation", 1, MAXDIM, c->dilation)) ||
        (s = get_int(d, o, "groups", 1, MAXDIM, &c->groups)) || (s = get_bool(d, o, "bias", bias)))
        return s;
    return BG_OK;
}

/* Sets a freshly built qlayer's quantizers enabled or not, as described. */
static bg_status apply_enabled(const desc_ctx *d, json_t *o, bg_module *m) {
    for (int side = 0; side < 2; side++) {
        bg_quant_state *st = side ? bg_qlayer_input_state(m) : bg_qlayer_weight_state(m);
        if (!st) continue;
        const char *key = side ? "input_enabled" : "weight_enabled";
        if (!json_object_get(o, key)) continue;   // optional: enabled
        bool on;
        bg_status s = get_bool(d, o, key, &on);
        if (s != BG_OK) return s;
        bg_quant_state_set_enabled(st, on);
    }
    return BG_OK;
}

static bg_module *build(desc_ctx *d, json_t *o, int depth);

static bg_module *build_sequential(desc_ctx *d, json_t *o, int depth) {
    json_t *arr = json_object_get(o, "children");
    if (!arr) {
        bad(d, "missing field \"%s\"%s", "children", "");
        return NULL;
    }
    if (!json_is_array(arr)) {
        bad(d, "field \"%s\" must be %s", "children", "an array of layers");
        return NULL;
    }
    int n = (int)json_array_size(arr);
    if (json_array_size(arr) > 100000) {
        bad(d, "field \"%s\" must be %s", "children", "an array of at most 100000 layers");
        return NULL;
    }
    bg_module **kids = calloc((size_t)(n ? n : 1), sizeof *kids);
    if (!kids) {
        bg_set_error(BG_ERR_NOMEM, "model_desc: out of memory");
        return NULL;
    }
    size_t plen = strlen(d->path);
    bool ok = true;
    for (int i = 0; i < n && ok; i++) {
        snprintf(d->path + plen, sizeof d->path - plen, "%s%d", plen ? "." : "", i);
        kids[i] = build(d, json_array_get(arr, (size_t)i), depth + 1);
        ok = kids[i] != NULL;
    }
    d->path[plen] = '\0';
    bg_module *m = NULL;
    if (ok) {
        m = bg_sequential_new(n, kids);   // takes the children, also on failure
        built(d, m);
    } else {
        for (int i = 0; i < n; i++) bg_module_free(kids[i]);
    }
    free(kids);
    return m;
}

static bg_module *build(desc_ctx *d, json_t *o, int depth) {
    if (depth > DESC_MAX_DEPTH) {
        bad(d, "%s%s", "the tree is too deep", "");
        return NULL;
    }
    if (!json_is_object(o)) {
        bad(d, "%s%s", "not a JSON object", "");
        return NULL;
    }
    json_t *kv = json_object_get(o, "kind");
    if (!kv) {
        bad(d, "missing field \"%s\"%s", "kind", "");
        return NULL;
    }
    if (!json_is_string(kv)) {
        bad(d, "field \"%s\" must be %s", "kind", "a string");
        return NULL;
    }
    const char *k = json_string_value(kv);
    int64_t a, b, kk[2], pad;
    bool bias;
    float f;
    bg_conv2d_opts c = BG_CONV2D_DEFAULTS;
    bg_quant_spec ws, as;
    bool hw = false, ha = false;
    bg_module *m = NULL;
    bg_status s = BG_OK;
    if (strcmp(k, "Sequential") == 0) return build_sequential(d, o, depth);
    if (strcmp(k, "Linear") == 0 || strcmp(k, "QLinear") == 0) {
        if ((s = get_int(d, o, "in_features", 1, MAXDIM, &a)) || (s = get_int(d, o, "out_features", 1, MAXDIM, &b)) ||
            (s = get_bool(d, o, "bias", &bias)) || (s = check_numel(d, a, b, 1, 1)))
            return NULL;
        if (k[0] == 'L') return built(d, bg_linear_new(a, b, bias, &d->rng));
        if ((s = get_spec(d, o, "weight_spec", &ws, &hw)) || (s = get_spec(d, o, "input_spec", &as, &ha))) return NULL;
        m = built(d, bg_qlinear_new(a, b, bias, hw ? &ws : NULL, ha ? &as : NULL, &d->rng));
    } else if (strcmp(k, "BitLinear") == 0) {
        if ((s = get_int(d, o, "in_features", 1, MAXDIM, &a)) || (s = get_int(d, o, "out_features", 1, MAXDIM, &b)) ||
            (s = check_numel(d, a, b, 1, 1)) || (s = get_spec(d, o, "weight_spec", &ws, &hw)) ||
            (s = get_spec(d, o, "input_spec", &as, &ha)))
            return NULL;
        m = built(d, bg_bitlinear_new(a, b, &d->rng));
        // A schedule may have moved BitLinear's quantizers to other specs.
        for (int side = 0; m && side < 2; side++) {
            bg_quant_state *st = side ? bg_qlayer_input_state(m) : bg_qlayer_weight_state(m);
            const bg_quant_spec *want = side ? (ha ? &as : NULL) : (hw ? &ws : NULL);
            if (want && st && !bg_quant_spec_equal(want, bg_quant_state_spec(st)) &&
                bg_quant_state_set_spec(st, want) != BG_OK) {
                built(d, NULL);
                bg_module_free(m);
                return NULL;
            }
        }
    } else if (strcmp(k, "Conv2d") == 0 || strcmp(k, "QConv2d") == 0) {
        if ((s = read_conv(d, o, &a, &b, kk, &c, &bias)) != BG_OK || (s = check_numel(d, a, b, kk[0], kk[1])))
            return NULL;
        if (k[0] == 'C') return built(d, bg_conv2d_new(a, b, kk[0], kk[1], &c, bias, &d->rng));
        if ((s = get_spec(d, o, "weight_spec", &ws, &hw)) || (s = get_spec(d, o, "input_spec", &as, &ha))) return NULL;
        m = built(d, bg_qconv2d_new(a, b, kk[0], kk[1], &c, bias, hw ? &ws : NULL, ha ? &as : NULL, &d->rng));
    } else if (strcmp(k, "Embedding") == 0 || strcmp(k, "QEmbedding") == 0) {
        if ((s = get_int(d, o, "num_embeddings", 1, MAXDIM, &a)) || (s = get_int(d, o, "embedding_dim", 1, MAXDIM, &b)) ||
            (s = check_numel(d, a, b, 1, 1)))
            return NULL;
        if (k[0] == 'E') return built(d, bg_embedding_new(a, b, &d->rng));
        if ((s = get_spec(d, o, "weight_spec", &ws, &hw))) return NULL;
        m = built(d, bg_qembedding_new(a, b, hw ? &ws : NULL, &d->rng));
    } else if (strcmp(k, "LayerNorm") == 0) {
        if ((s = get_int(d, o, "dim", 1, MAXDIM, &a)) || (s = get_float(d, o, "eps", &f)) ||
            (s = get_bool(d, o, "elementwise_affine", &bias)))
            return NULL;
        return built(d, bg_layernorm_new(a, f, bias));
    } else if (strcmp(k, "RMSNorm") == 0) {
        if ((s = get_int(d, o, "dim", 1, MAXDIM, &a)) || (s = get_float(d, o, "eps", &f))) return NULL;
        return built(d, bg_rmsnorm_new(a, f));
    } else if (strcmp(k, "Dropout") == 0) {
        if ((s = get_float(d, o, "p", &f))) return NULL;
        return built(d, bg_dropout_new(f, DESC_INIT_SEED));
    } else if (strcmp(k, "LeakyReLU") == 0) {
        if ((s = get_float(d, o, "negative_slope", &f))) return NULL;
        return built(d, bg_leaky_relu_new(f));
    } else if (strcmp(k, "GELU") == 0) {
        json_t *v = json_object_get(o, "approximate");
        const char *ap = json_is_string(v) ? json_string_value(v) : NULL;
        if (!ap || (strcmp(ap, "tanh") != 0 && strcmp(ap, "none") != 0)) {
            bad(d, "field \"%s\" must be %s", "approximate", "\"none\" or \"tanh\"");
            return NULL;
        }
        return built(d, bg_gelu_new(strcmp(ap, "tanh") == 0));
    } else if (strcmp(k, "MaxPool2d") == 0 || strcmp(k, "AvgPool2d") == 0) {
        if ((s = get_int(d, o, "kernel_size", 1, MAXDIM, &a)) || (s = get_int(d, o, "stride", 0, MAXDIM, &b)) ||
            (s = get_int(d, o, "padding", 0, MAXDIM, &pad)))
            return NULL;
        return built(d, k[0] == 'M' ? bg_max_pool2d_new(a, b, pad) : bg_avg_pool2d_new(a, b, pad));
    } else if (strcmp(k, "ReLU") == 0) {
        return built(d, bg_relu_new());
    } else if (strcmp(k, "SiLU") == 0) {
        return built(d, bg_silu_new());
    } else if (strcmp(k, "Tanh") == 0) {
        return built(d, bg_tanh_new());
    } else if (strcmp(k, "Sigmoid") == 0) {
        return built(d, bg_sigmoid_new());
    } else if (strcmp(k, "Flatten") == 0) {
        return built(d, bg_flatten_new());
    } else {
        bg_set_error(BG_ERR_FORMAT, "model_desc: layer %s: unknown kind \"%s\"", where(d), k);
        return NULL;
    }
    if (m && apply_enabled(d, o, m) != BG_OK) {
        bg_module_free(m);
        return NULL;
    }
    return m;
}

bg_status bg_model_from_json(const char *json, bg_module **out) {
    if (!out) return bg_set_error(BG_ERR_ARG, "model_desc: out is NULL");
    *out = NULL;
    if (!json) return bg_set_error(BG_ERR_ARG, "model_desc: json is NULL");
    json_error_t jerr;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return bg_set_error(BG_ERR_FORMAT, "model_desc: malformed JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                            jerr.column);
    bg_status s = BG_OK;
    json_t *fmt = json_object_get(root, "format"), *ver = json_object_get(root, "version");
    if (!json_is_object(root) || !json_is_string(fmt) || strcmp(json_string_value(fmt), DESC_FORMAT) != 0) {
        s = bg_set_error(BG_ERR_FORMAT, "model_desc: not a model description (want \"format\": \"%s\")", DESC_FORMAT);
    } else if (!json_is_integer(ver) || json_integer_value(ver) != DESC_VERSION) {
        char v[32] = "(not an integer)";
        if (json_is_integer(ver)) snprintf(v, sizeof v, "%lld", (long long)json_integer_value(ver));
        s = bg_set_error(BG_ERR_FORMAT, "model_desc: unsupported version %s (this build reads version %d)", v,
                         DESC_VERSION);
    } else {
        desc_ctx d;
        memset(&d, 0, sizeof d);
        bg_rng_seed(&d.rng, DESC_INIT_SEED);
        json_t *model = json_object_get(root, "model");
        if (!model) s = bg_set_error(BG_ERR_FORMAT, "model_desc: missing field \"model\"");
        else if (!(*out = build(&d, model, 0))) s = bg_last_status() != BG_OK ? bg_last_status() : BG_ERR_FORMAT;
    }
    json_decref(root);
    return s;
}
