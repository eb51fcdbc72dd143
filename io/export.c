/* export.c — bg_export: writes a model for the inference runtime (infer/) as
 * a safetensors file of packed weight codes, scales, zero points, biases and
 * activation quantizer parameters, with a JSON layer list in __metadata__
 * (doc/export-format.md is the byte-level contract). Calls layers/ (module
 * tree, qlayer states), qat/ (bg_quantize for the codes), kernels/ (the
 * ternary packer) and io/safetensors.c (the atomic writer). */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/export_internal.h"
#include "io/io.h"
#include "kernels/kernels.h"
#include "qat/qat.h"

#define OP "export"
#define EXPORT_FORMAT "bitgrad-export"
#define EXPORT_VERSION "1"
/* BitLinear's RMSNorm epsilon (layers.h: "The RMSNorm (eps 1e-6 ...)"). */
#define BITLINEAR_NORM_EPS 1e-6f
#define MAX_LAYERS 256
#define NAME_MAX_LEN BG_PARAM_NAME_MAX

// ---------------------------------------------------------------------------
// the export being built: queued tensors (their data owned here until the
// save), the JSON layer list, and an arena for bg_quantize

typedef struct leaf {
    const bg_module *m;
    char path[NAME_MAX_LEN];
} leaf;

typedef struct exporter {
    bg_safetensors_writer *w;
    bg_export_bufs bufs;
    bg_ctx *ctx;
    json_t *layers;
    leaf leaves[MAX_LAYERS];
    int n_leaves;
    const char *lname;    /* the layer being encoded, for messages */
} exporter;

static bg_status fail(exporter *e, bg_status s, const char *fmt, ...) BG_PRINTF(3, 4);
static bg_status fail(exporter *e, bg_status s, const char *fmt, ...) {
    char msg[BG_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return bg_set_error(s, OP ": layer %s: %s", e->lname ? e->lname : "?", msg);
}

void *bg_export_own(bg_export_bufs *b, size_t n) {
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 32;
        void **q = realloc(b->p, sizeof *q * (size_t)cap);
        if (!q) return NULL;
        b->p = q;
        b->cap = cap;
    }
    void *p = calloc(1, n ? n : 1);
    if (p) b->p[b->n++] = p;
    return p;
}

void bg_export_bufs_free(bg_export_bufs *b) {
    for (int i = 0; i < b->n; i++) free(b->p[i]);
    free(b->p);
    *b = (bg_export_bufs){0};
}

static void *own(exporter *e, size_t n) { return bg_export_own(&e->bufs, n); }

/* Queues data (owned by e or by the model, alive until the save) as a tensor
 * "<layer>.<suffix>". */
static bg_status put(exporter *e, const char *suffix, bg_dtype dtype, int ndim, const int64_t *shape, void *data) {
    char name[NAME_MAX_LEN + 32];
    snprintf(name, sizeof name, "%s.%s", e->lname, suffix);
    bg_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dtype;
    t.ndim = ndim;
    int64_t stride = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        t.shape[d] = shape[d];
        t.stride[d] = stride;
        stride *= shape[d];
    }
    t.data = data;
    return bg_safetensors_writer_add(e->w, name, &t);
}

/* [d0, d1, ...], or NULL when out of memory. */
static json_t *json_shape(int ndim, const int64_t *shape) {
    json_t *a = json_array();
    for (int d = 0; a && d < ndim; d++)
        if (json_array_append_new(a, json_integer(shape[d])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* o[key] = v (taking v); false when v is NULL or out of memory. */
static bool jset(json_t *o, const char *key, json_t *v) { return v && json_object_set_new(o, key, v) == 0; }

static bg_status nomem(exporter *e) { return fail(e, BG_ERR_NOMEM, "out of memory"); }

/* Every parameter of the layer m is finite (weights, biases, norm gains,
 * learned quantizer steps): BG_ERR_NAN naming the first that is not. */
static bg_status check_params(exporter *e, const bg_module *m) {
    for (int i = 0; i < bg_module_param_count(m); i++) {
        const bg_tensor *t = bg_module_param(m, i);
        const float *v = bg_f32(t);
        for (int64_t j = 0, n = bg_numel(t); j < n; j++)
            if (!isfinite(v[j]))
                return fail(e, BG_ERR_NAN, "parameter %s.%s has a NaN or Inf at index %lld (value %g)", e->lname,
                            bg_module_param_name(m, i), (long long)j, (double)v[j]);
    }
    return BG_OK;
}

/* A float tensor the export stores as it is ("<layer>.<suffix>"): |v| <=
 * BG_EXPORT_VALUE_MAX (format/format.h), so the runtime's sums stay finite. */
static bg_status check_magnitude(exporter *e, const char *suffix, const float *v, int64_t n) {
    for (int64_t j = 0; j < n; j++)
        if (!(fabsf(v[j]) <= BG_EXPORT_VALUE_MAX))
            return fail(e, BG_ERR_ARG, "parameter %s.%s holds %g at index %lld, beyond the exportable magnitude %g",
                        e->lname, suffix, (double)v[j], (long long)j, (double)BG_EXPORT_VALUE_MAX);
    return BG_OK;
}

static bool scale_ok(float s) { return s >= BG_EXPORT_SCALE_MIN && s <= BG_EXPORT_SCALE_MAX; }

// ---------------------------------------------------------------------------
// the model's leaves (Sequentials flattened)

static bg_status collect(exporter *e, const bg_module *m, const char *path) {
    if (bg_module_type_of(m) == &bg_sequential_type) {
        for (int i = 0; i < bg_module_num_children(m); i++) {
            char p[NAME_MAX_LEN];
            const char *cn = bg_module_child_name(m, i);
            int n = *path ? snprintf(p, sizeof p, "%s.%s", path, cn) : snprintf(p, sizeof p, "%s", cn);
            if (n < 0 || (size_t)n >= sizeof p)
                return bg_set_error(BG_ERR_ARG, OP ": layer path too long: %s.%s", path, cn);
            bg_status s = collect(e, bg_module_child(m, i), p);
            if (s != BG_OK) return s;
        }
        return BG_OK;
    }
    if (e->n_leaves == MAX_LAYERS)
        return bg_set_error(BG_ERR_ARG, OP ": more than %d layers", MAX_LAYERS);
    e->leaves[e->n_leaves].m = m;
    snprintf(e->leaves[e->n_leaves].path, NAME_MAX_LEN, "%s", *path ? path : "0");
    e->n_leaves++;
    return BG_OK;
}

// ---------------------------------------------------------------------------
// weights

/* Weight W (viewed as rows x k) of a Linear-like layer under its weight
 * state st (NULL or disabled: f32). Adds "<layer>.weight" (+ scale, zero
 * point) and returns the "weight" JSON object in *out. */
static bg_status export_weight(exporter *e, bg_quant_state *st, const bg_tensor *W, int64_t rows, int64_t k,
                               json_t **out) {
    *out = NULL;
    if (!st || !bg_quant_state_enabled(st)) {
        bg_status s = check_magnitude(e, "weight", W->data, bg_numel(W));
        if (s == BG_OK) s = put(e, "weight", BG_DTYPE_F32, W->ndim, W->shape, W->data);
        if (s != BG_OK) return s;
        *out = json_pack("{s:s, s:o}", "format", "f32", "shape", json_shape(W->ndim, W->shape));
        return *out ? BG_OK : nomem(e);
    }
    const bg_quant_spec *spec = bg_quant_state_spec(st);
    if (spec->kind == BG_QUANT_INT && spec->bits > 8)
        return fail(e, BG_ERR_ARG, "weights of %d bits cannot be exported", spec->bits);
    // What the eval-mode forward uses: the observer frozen.
    bool obs = bg_quant_state_observer_enabled(st);
    bg_quant_state_set_observer(st, false);
    bg_tensor *codes = NULL;
    bg_quant_params p;
    bg_ctx_reset(e->ctx);
    bg_status s = bg_quantize(e->ctx, spec, st, W, &codes, &p);
    bg_quant_state_set_observer(st, obs);
    if (s != BG_OK) return fail(e, s, "weight quantizer: %s", bg_ctx_error(e->ctx));

    const char *fmt;
    int64_t pshape[2] = {rows, 0};
    uint8_t *packed;
    if (spec->kind == BG_QUANT_TERNARY || spec->kind == BG_QUANT_BINARY) {
        fmt = "t2";
        pshape[1] = bg_int_padded_k(k) / 4;
        if (!(packed = own(e, (size_t)(rows * pshape[1])))) return nomem(e);
        bg_ternary_pack(packed, codes->data, rows, k);
        s = put(e, "weight", BG_DTYPE_U8, 2, pshape, packed);
    } else if (spec->bits <= 4) {
        fmt = p.qmin < 0 ? "i4" : "u4";
        pshape[1] = (k + 1) / 2;
        if (!(packed = own(e, (size_t)(rows * pshape[1])))) return nomem(e);
        bg_export_pack4(packed, codes->data, rows, k);
        s = put(e, "weight", BG_DTYPE_U8, 2, pshape, packed);
    } else {
        fmt = p.qmin < 0 ? "i8" : "u8";
        pshape[1] = k;
        if (!(packed = own(e, (size_t)(rows * k)))) return nomem(e);
        memcpy(packed, codes->data, (size_t)(rows * k));
        s = put(e, "weight", p.qmin < 0 ? BG_DTYPE_I8 : BG_DTYPE_U8, 2, pshape, packed);
    }
    if (s != BG_OK) return s;

    for (int64_t c = 0; c < p.channels; c++)
        if (!scale_ok(p.scale[c])) {
            float big = 0.0f;
            for (int64_t j = 0, n = bg_numel(W); j < n; j++) big = fmaxf(big, fabsf(((const float *)W->data)[j]));
            return fail(e, BG_ERR_ARG, "weight scale %lld is %g, outside [%g, %g] (the largest |weight| is %g)",
                        (long long)c, (double)p.scale[c], (double)BG_EXPORT_SCALE_MIN, (double)BG_EXPORT_SCALE_MAX,
                        (double)big);
        }
    float *scale = own(e, sizeof(float) * (size_t)p.channels);
    if (!scale) return nomem(e);
    memcpy(scale, p.scale, sizeof(float) * (size_t)p.channels);
    s = put(e, "weight_scale", BG_DTYPE_F32, 1, &p.channels, scale);
    if (s != BG_OK) return s;
    bool has_zp = false;
    for (int64_t c = 0; p.zero_point && c < p.channels; c++) has_zp |= p.zero_point[c] != 0.0f;
    if (has_zp) {
        int32_t *zp = own(e, sizeof(int32_t) * (size_t)p.channels);
        if (!zp) return nomem(e);
        for (int64_t c = 0; c < p.channels; c++) zp[c] = (int32_t)p.zero_point[c];
        if ((s = put(e, "weight_zero_point", BG_DTYPE_I32, 1, &p.channels, zp)) != BG_OK) return s;
    }
    char sstr[BG_QUANT_SPEC_STR_MAX];
    bg_quant_spec_format(spec, sstr, sizeof sstr);
    json_t *o = json_pack("{s:s, s:o, s:I, s:I, s:i, s:i, s:s, s:[I,I,I], s:b, s:s}", "format", fmt, "shape",
                          json_shape(W->ndim, W->shape), "rows", (json_int_t)rows, "k", (json_int_t)k, "qmin",
                          (int)p.qmin, "qmax", (int)p.qmax, "granularity",
                          bg_quant_granularity_name(spec->granularity), "layout", (json_int_t)p.outer,
                          (json_int_t)p.channels, (json_int_t)p.inner, "zero_point", has_zp, "spec", sstr);
    if (!o) return nomem(e);
    if ((spec->granularity == BG_QUANT_PER_CHANNEL && !jset(o, "axis", json_integer(spec->axis))) ||
        (spec->granularity == BG_QUANT_PER_GROUP && !jset(o, "group_size", json_integer(spec->group_size)))) {
        json_decref(o);
        return nomem(e);
    }
    *out = o;
    return BG_OK;
}

// ---------------------------------------------------------------------------
// activation quantizers

static float positive(float v) { return v >= BG_QUANT_EPS ? v : BG_QUANT_EPS; }

static float learned(const bg_quant_state *st, const char *name, float dflt) {
    for (int i = 0; i < bg_quant_state_num_params(st); i++)
        if (strcmp(bg_quant_state_param_name(st, i), name) == 0) return bg_f32(bg_quant_state_param(st, i))[0];
    return dflt;
}

/* The input quantizer st (NULL or disabled: none) of a layer with C input
 * channels; conv tells the channel axis (1) from a Linear's (-1). Adds
 * "<layer>.input_scale" / "input_zero_point" for static ones; *out is the
 * "input_quant" JSON (json null when there is none). */
static bg_status export_input(exporter *e, bg_quant_state *st, int64_t C, bool conv, json_t **out) {
    *out = NULL;
    if (!st || !bg_quant_state_enabled(st)) {
        *out = json_null();
        return BG_OK;
    }
    const bg_quant_spec *spec = bg_quant_state_spec(st);
    char sstr[BG_QUANT_SPEC_STR_MAX];
    bg_quant_spec_format(spec, sstr, sizeof sstr);
    int32_t qmin, qmax;
    bg_quant_spec_qrange(spec, &qmin, &qmax);
    if (spec->kind != BG_QUANT_INT || spec->bits > 8)
        return fail(e, BG_ERR_ARG, "input quantizer \"%s\": the runtime quantizes inputs to integers of <= 8 bits",
                    sstr);
    if (spec->granularity == BG_QUANT_PER_TOKEN) {
        if (spec->range != BG_QUANT_RANGE_ABSMAX || !spec->symmetric)
            return fail(e, BG_ERR_ARG, "input quantizer \"%s\": per_token inputs must use absmax (symmetric)", sstr);
        *out = json_pack("{s:s, s:i, s:i, s:s}", "mode", "per_token_absmax", "qmin", (int)qmin, "qmax", (int)qmax,
                         "spec", sstr);
        return *out ? BG_OK : nomem(e);
    }
    if (spec->granularity != BG_QUANT_PER_TENSOR && spec->granularity != BG_QUANT_PER_CHANNEL)
        return fail(e, BG_ERR_ARG, "input quantizer \"%s\": granularity %s is not supported", sstr,
                    bg_quant_granularity_name(spec->granularity));
    if (spec->range == BG_QUANT_RANGE_ABSMAX || spec->range == BG_QUANT_RANGE_ABSMEAN)
        return fail(e, BG_ERR_ARG, "input quantizer \"%s\": a dynamic %s range is only supported per_token", sstr,
                    bg_quant_range_name(spec->range));
    int64_t P = spec->granularity == BG_QUANT_PER_TENSOR ? 1 : C;
    float *scale = own(e, sizeof(float) * (size_t)P);
    int32_t *zp = own(e, sizeof(int32_t) * (size_t)P);
    if (!scale || !zp) return nomem(e);
    bool is_learned = bg_quant_spec_is_learned(spec);
    if (bg_quant_spec_is_stateful(spec) && !is_learned && bg_quant_state_calls(st) == 0)
        return fail(e, BG_ERR_STATE, "input quantizer \"%s\" has not observed any data (run forwards first)", sstr);
    if (is_learned && !bg_quant_state_initialized(st))
        return fail(e, BG_ERR_STATE, "input quantizer \"%s\" was never initialised (run a forward first)", sstr);
    if (spec->range == BG_QUANT_RANGE_FIXED) {
        for (int64_t c = 0; c < P; c++) scale[c] = spec->scale, zp[c] = spec->zero_point;
    } else if (spec->range == BG_QUANT_RANGE_PACT) {
        // the forward's s = alpha / qmax, z = 0 (qat/observer.c)
        float alpha = positive(learned(st, "alpha", 1.0f));
        for (int64_t c = 0; c < P; c++) scale[c] = alpha / (float)qmax, zp[c] = 0;
    } else if (spec->range == BG_QUANT_RANGE_LSQ || spec->range == BG_QUANT_RANGE_LSQ_PLUS) {
        const bg_tensor *ts = NULL, *tz = NULL;
        for (int i = 0; i < bg_quant_state_num_params(st); i++) {
            if (!strcmp(bg_quant_state_param_name(st, i), "scale")) ts = bg_quant_state_param(st, i);
            if (!strcmp(bg_quant_state_param_name(st, i), "zero_point")) tz = bg_quant_state_param(st, i);
        }
        if (!ts || bg_numel(ts) != P) return fail(e, BG_ERR_STATE, "input quantizer \"%s\": no step of %lld", sstr, (long long)P);
        for (int64_t c = 0; c < P; c++) {
            scale[c] = positive(bg_f32(ts)[c]);
            float z = tz && isfinite(bg_f32(tz)[c]) ? nearbyintf(bg_f32(tz)[c]) : 0.0f;   // the forward's clamp(round(z))
            zp[c] = (int32_t)(z < (float)qmin ? (float)qmin : z > (float)qmax ? (float)qmax : z);
        }
    } else {   // observers: the state's current (frozen) scale and zero point
        const bg_tensor *ts = bg_quant_state_scale(st), *tz = bg_quant_state_zero_point(st);
        if (!ts || bg_numel(ts) != P)
            return fail(e, BG_ERR_STATE, "input quantizer \"%s\" holds %lld scales, want %lld", sstr,
                        (long long)(ts ? bg_numel(ts) : 0), (long long)P);
        for (int64_t c = 0; c < P; c++) {
            scale[c] = bg_f32(ts)[c];
            zp[c] = tz && !spec->symmetric ? (int32_t)bg_f32(tz)[c] : 0;
        }
    }
    bool has_zp = false;
    for (int64_t c = 0; c < P; c++) {
        if (!scale_ok(scale[c]))
            return fail(e, BG_ERR_STATE, "input quantizer \"%s\": scale %lld is %g, outside [%g, %g]", sstr,
                        (long long)c, (double)scale[c], (double)BG_EXPORT_SCALE_MIN, (double)BG_EXPORT_SCALE_MAX);
        has_zp |= zp[c] != 0;
    }
    bg_status s = put(e, "input_scale", BG_DTYPE_F32, 1, &P, scale);
    if (s == BG_OK && has_zp) s = put(e, "input_zero_point", BG_DTYPE_I32, 1, &P, zp);
    if (s != BG_OK) return s;
    *out = json_pack("{s:s, s:s, s:i, s:i, s:b, s:s}", "mode", "static", "granularity",
                     P == 1 && spec->granularity == BG_QUANT_PER_TENSOR ? "per_tensor" : "per_channel", "qmin",
                     (int)qmin, "qmax", (int)qmax, "zero_point", has_zp, "spec", sstr);
    if (*out && spec->granularity == BG_QUANT_PER_CHANNEL && !jset(*out, "axis", json_integer(conv ? 1 : -1))) {
        json_decref(*out);
        *out = NULL;
    }
    return *out ? BG_OK : nomem(e);
}

// ---------------------------------------------------------------------------
// layers

typedef struct shape3 {
    int ndim;
    int64_t d[3];
} shape3;

static void shape_str(const shape3 *s, char *buf, size_t len) {
    if (s->ndim == 1) snprintf(buf, len, "[%lld]", (long long)s->d[0]);
    else snprintf(buf, len, "[%lld,%lld,%lld]", (long long)s->d[0], (long long)s->d[1], (long long)s->d[2]);
}

static int64_t shape_numel(const shape3 *s) {
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= s->d[i];
    return n;
}

static bg_status linear_layer(exporter *e, const bg_module *m, bool quant, shape3 *sh, json_t *lj) {
    const bg_tensor *W = quant ? bg_qlayer_weight(m) : bg_module_find_param(m, "weight");
    const bg_tensor *b = bg_module_find_param(m, "bias");
    if (!W || W->ndim != 2) return fail(e, BG_ERR_ARG, "%s has no 2-d weight", bg_module_kind(m));
    int64_t out = W->shape[0], in = W->shape[1];
    char a[64];
    shape_str(sh, a, sizeof a);
    if (sh->ndim != 1 || sh->d[0] != in)
        return fail(e, BG_ERR_SHAPE, "%s expects [%lld] per example, the previous layer gives %s%s", bg_module_kind(m),
                    (long long)in, a, sh->ndim != 1 ? " (add a Flatten)" : "");
    json_t *wj, *aj;
    bg_status s = export_weight(e, quant ? bg_qlayer_weight_state(m) : NULL, W, out, in, &wj);
    if (s != BG_OK) return s;
    if (!jset(lj, "weight", wj)) return nomem(e);
    if ((s = export_input(e, quant ? bg_qlayer_input_state(m) : NULL, in, false, &aj)) != BG_OK) return s;
    if (!jset(lj, "input_quant", aj) || !jset(lj, "kind", json_string("linear")) || !jset(lj, "in", json_integer(in)) ||
        !jset(lj, "out", json_integer(out)) || !jset(lj, "bias", json_boolean(b != NULL)))
        return nomem(e);
    if (b && ((s = check_magnitude(e, "bias", b->data, out)) != BG_OK ||
              (s = put(e, "bias", BG_DTYPE_F32, 1, &out, b->data)) != BG_OK))
        return s;
    if (bg_module_type_of(m) == &bg_bitlinear_type &&
        !jset(lj, "norm", json_pack("{s:s, s:f}", "kind", "rmsnorm", "eps", (double)BITLINEAR_NORM_EPS)))
        return nomem(e);
    sh->d[0] = out;
    return BG_OK;
}

static bg_status conv_layer(exporter *e, const bg_module *m, bool quant, shape3 *sh, json_t *lj) {
    const bg_tensor *W = quant ? bg_qlayer_weight(m) : bg_module_find_param(m, "weight");
    const bg_tensor *b = bg_module_find_param(m, "bias");
    bg_conv2d_opts o;
    bg_status s = quant ? bg_qconv2d_get_opts(m, &o) : bg_conv2d_get_opts(m, &o);
    if (s != BG_OK) return fail(e, s, "%s", bg_last_error());
    if (!W || W->ndim != 4) return fail(e, BG_ERR_ARG, "%s has no 4-d weight", bg_module_kind(m));
    int64_t oc = W->shape[0], in = W->shape[1] * o.groups, kh = W->shape[2], kw = W->shape[3];
    char a[64];
    shape_str(sh, a, sizeof a);
    bg_conv2d_shape cs = {.n = 1, .c = in, .h = sh->d[1], .w = sh->d[2], .oc = oc, .kh = kh, .kw = kw,
                          .stride_h = o.stride[0], .stride_w = o.stride[1], .pad_h = o.padding[0],
                          .pad_w = o.padding[1], .dil_h = o.dilation[0], .dil_w = o.dilation[1], .groups = o.groups};
    if (sh->ndim != 3 || sh->d[0] != in || !bg_conv2d_shape_infer(&cs))
        return fail(e, BG_ERR_SHAPE, "%s expects [%lld,H,W] per example, the previous layer gives %s", bg_module_kind(m),
                    (long long)in, a);
    json_t *wj, *aj;
    if ((s = export_weight(e, quant ? bg_qlayer_weight_state(m) : NULL, W, oc, W->shape[1] * kh * kw, &wj)) != BG_OK)
        return s;
    if (!jset(lj, "weight", wj)) return nomem(e);
    if ((s = export_input(e, quant ? bg_qlayer_input_state(m) : NULL, in, true, &aj)) != BG_OK) return s;
    if (!jset(lj, "input_quant", aj)) return nomem(e);
    json_t *c = json_pack("{s:s, s:I, s:I, s:[I,I], s:[I,I], s:[I,I], s:[I,I], s:I, s:b}", "kind", "conv2d", "in",
                          (json_int_t)in, "out", (json_int_t)oc, "kernel", (json_int_t)kh, (json_int_t)kw, "stride",
                          (json_int_t)o.stride[0], (json_int_t)o.stride[1], "padding", (json_int_t)o.padding[0],
                          (json_int_t)o.padding[1], "dilation", (json_int_t)o.dilation[0], (json_int_t)o.dilation[1],
                          "groups", (json_int_t)o.groups, "bias", b != NULL);
    if (!c) return nomem(e);
    int r = json_object_update(lj, c);
    json_decref(c);
    if (r != 0) return nomem(e);
    if (b && ((s = check_magnitude(e, "bias", b->data, oc)) != BG_OK ||
              (s = put(e, "bias", BG_DTYPE_F32, 1, &oc, b->data)) != BG_OK))
        return s;
    sh->d[0] = oc, sh->d[1] = cs.oh, sh->d[2] = cs.ow;
    return BG_OK;
}

static bg_status pool_layer(exporter *e, const bg_module *m, bool max, shape3 *sh, json_t *lj) {
    bg_layer_hparams hp;
    if (bg_layer_hparams_get(m, &hp) != BG_OK) return fail(e, bg_last_status(), "%s", bg_last_error());
    int64_t stride = hp.stride ? hp.stride : hp.kernel;
    bg_pool2d_shape ps = {.n = 1, .c = sh->d[0], .h = sh->d[1], .w = sh->d[2], .kh = hp.kernel, .kw = hp.kernel,
                          .stride_h = stride, .stride_w = stride, .pad_h = hp.padding, .pad_w = hp.padding,
                          .dil_h = 1, .dil_w = 1};
    char a[64];
    shape_str(sh, a, sizeof a);
    if (sh->ndim != 3 || !bg_pool2d_shape_infer(&ps))
        return fail(e, BG_ERR_SHAPE, "%s expects [C,H,W] per example, the previous layer gives %s", bg_module_kind(m), a);
    if (!jset(lj, "kind", json_string(max ? "max_pool2d" : "avg_pool2d")) || !jset(lj, "kernel", json_integer(hp.kernel)) ||
        !jset(lj, "stride", json_integer(stride)) || !jset(lj, "padding", json_integer(hp.padding)))
        return nomem(e);
    sh->d[1] = ps.oh, sh->d[2] = ps.ow;
    return BG_OK;
}

static bg_status float_linear(exporter *e, const bg_module *m, shape3 *sh, json_t *lj) { return linear_layer(e, m, false, sh, lj); }
static bg_status quant_linear(exporter *e, const bg_module *m, shape3 *sh, json_t *lj) { return linear_layer(e, m, true, sh, lj); }
static bg_status float_conv(exporter *e, const bg_module *m, shape3 *sh, json_t *lj) { return conv_layer(e, m, false, sh, lj); }
static bg_status quant_conv(exporter *e, const bg_module *m, shape3 *sh, json_t *lj) { return conv_layer(e, m, true, sh, lj); }
static bg_status max_pool(exporter *e, const bg_module *m, shape3 *sh, json_t *lj) { return pool_layer(e, m, true, sh, lj); }
static bg_status avg_pool(exporter *e, const bg_module *m, shape3 *sh, json_t *lj) { return pool_layer(e, m, false, sh, lj); }

static bg_status flatten_layer(exporter *e, const bg_module *m, shape3 *sh, json_t *lj) {
    (void)e, (void)m;
    int64_t n = shape_numel(sh);
    sh->ndim = 1, sh->d[0] = n;
    return jset(lj, "kind", json_string("flatten")) ? BG_OK : nomem(e);
}

/* Element-wise layers without parameters: the runtime's name for the kind. */
static bg_status act_layer(exporter *e, const bg_module *m, shape3 *sh, json_t *lj) {
    (void)sh;
    const bg_module_type *t = bg_module_type_of(m);
    const char *name = t == &bg_relu_type ? "relu" : t == &bg_silu_type ? "silu" : t == &bg_tanh_type ? "tanh"
                     : t == &bg_sigmoid_type ? "sigmoid" : "identity";   // Dropout: identity in eval mode
    return jset(lj, "kind", json_string(name)) ? BG_OK : nomem(e);
}

/* LayerNorm / RMSNorm over the last dim; LayerNorm's affine / RMSNorm's gain as f32 tensors. */
static bg_status norm_layer(exporter *e, const bg_module *m, shape3 *sh, json_t *lj) {
    bg_layer_hparams hp;
    if (bg_layer_hparams_get(m, &hp) != BG_OK) return fail(e, bg_last_status(), "%s", bg_last_error());
    char a[64];
    shape_str(sh, a, sizeof a);
    if (sh->d[sh->ndim - 1] != hp.in)
        return fail(e, BG_ERR_SHAPE, "%s normalizes a last dim of %lld, the previous layer gives %s", bg_module_kind(m),
                    (long long)hp.in, a);
    const bg_tensor *w = bg_module_find_param(m, "weight"), *b = bg_module_find_param(m, "bias");
    bg_status s;
    if (w && ((s = check_magnitude(e, "weight", w->data, hp.in)) != BG_OK ||
              (s = put(e, "weight", BG_DTYPE_F32, 1, &hp.in, w->data)) != BG_OK))
        return s;
    if (b && ((s = check_magnitude(e, "bias", b->data, hp.in)) != BG_OK ||
              (s = put(e, "bias", BG_DTYPE_F32, 1, &hp.in, b->data)) != BG_OK))
        return s;
    bool layernorm = bg_module_type_of(m) == &bg_layernorm_type;
    if (!jset(lj, "kind", json_string(layernorm ? "layernorm" : "rmsnorm")) || !jset(lj, "dim", json_integer(hp.in)) ||
        !jset(lj, "eps", json_real(hp.eps)) || !jset(lj, "weight", json_boolean(w != NULL)) ||
        !jset(lj, "bias", json_boolean(b != NULL)))
        return nomem(e);
    return BG_OK;
}

static bg_status leaky_layer(exporter *e, const bg_module *m, shape3 *sh, json_t *lj) {
    (void)sh;
    bg_layer_hparams hp;
    if (bg_layer_hparams_get(m, &hp) != BG_OK) return fail(e, bg_last_status(), "%s", bg_last_error());
    if (!jset(lj, "kind", json_string("leaky_relu")) || !jset(lj, "negative_slope", json_real(hp.slope)))
        return nomem(e);
    return BG_OK;
}

static bg_status gelu_layer(exporter *e, const bg_module *m, shape3 *sh, json_t *lj) {
    (void)sh;
    bg_layer_hparams hp;
    if (bg_layer_hparams_get(m, &hp) != BG_OK) return fail(e, bg_last_status(), "%s", bg_last_error());
    return jset(lj, "kind", json_string(hp.tanh_approx ? "gelu_tanh" : "gelu")) ? BG_OK : nomem(e);
}

/* What the runtime's layer list can hold, keyed by the registered type. */
static const struct {
    const bg_module_type *type;
    bg_status (*write)(exporter *e, const bg_module *m, shape3 *sh, json_t *lj);
} export_forms[] = {
    {&bg_linear_type, float_linear},   {&bg_qlinear_type, quant_linear},  {&bg_bitlinear_type, quant_linear},
    {&bg_conv2d_type, float_conv},     {&bg_qconv2d_type, quant_conv},    {&bg_max_pool2d_type, max_pool},
    {&bg_avg_pool2d_type, avg_pool},   {&bg_flatten_type, flatten_layer}, {&bg_relu_type, act_layer},
    {&bg_silu_type, act_layer},        {&bg_tanh_type, act_layer},        {&bg_sigmoid_type, act_layer},
    {&bg_dropout_type, act_layer},     {&bg_layernorm_type, norm_layer},  {&bg_rmsnorm_type, norm_layer},
    {&bg_leaky_relu_type, leaky_layer}, {&bg_gelu_type, gelu_layer},
};

static bg_status export_layer(exporter *e, const bg_module *m, shape3 *sh, json_t *lj) {
    for (size_t i = 0; i < sizeof export_forms / sizeof export_forms[0]; i++)
        if (export_forms[i].type == bg_module_type_of(m)) return export_forms[i].write(e, m, sh, lj);
    return fail(e, BG_ERR_ARG,
                "kind \"%s\" has no export form (the runtime runs Linear, Conv2d, their quantized forms, activations, "
                "Flatten, pools, norms, in Sequentials)",
                bg_module_kind(m));
}

// ---------------------------------------------------------------------------
// the language model (layers/lm.c): GGUF's tensor names, no layer list

/* The seven projections of a block, in GGUF's order. */
static const char *const LM_PROJECTIONS[] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                             "ffn_gate", "ffn_up", "ffn_down"};
static const char *const LM_NORMS[] = {"attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm"};

bool bg_export_bitnet_projection(const bg_module *p, char *weights, size_t len) {
    bg_quant_state *ws = bg_qlayer_weight_state(p), *as = bg_qlayer_input_state(p);
    const bg_quant_spec *w = ws && bg_quant_state_enabled(ws) ? bg_quant_state_spec(ws) : NULL;
    const bg_quant_spec *a = as && bg_quant_state_enabled(as) ? bg_quant_state_spec(as) : NULL;
    snprintf(weights, len, "fp32");
    if (w) bg_quant_spec_format(w, weights, len);
    return bg_module_type_of(p) == &bg_bitlinear_type && !bg_bitlinear_norm(p) && w && w->kind == BG_QUANT_TERNARY &&
           w->granularity == BG_QUANT_PER_TENSOR && a && a->kind == BG_QUANT_INT && a->bits == 8 &&
           a->granularity == BG_QUANT_PER_TOKEN && a->range == BG_QUANT_RANGE_ABSMAX;
}

/* A float vector or matrix stored as it is under "<lname>.weight". */
static bg_status lm_float(exporter *e, const bg_module *m) {
    const bg_tensor *w = m ? bg_module_find_param(m, "weight") : NULL;
    if (!w) return fail(e, BG_ERR_ARG, "missing (not a TransformerLM built by bg_lm_new?)");
    bg_status s = check_params(e, m);
    if (s == BG_OK) s = check_magnitude(e, "weight", w->data, bg_numel(w));
    return s == BG_OK ? put(e, "weight", BG_DTYPE_F32, w->ndim, w->shape, w->data) : s;
}

/* A projection: a float Linear as f32, a BitLinear (ternary weights, int8
 * per-token absmax activations, no norm of its own) as t2 + one scale.
 * Anything else (a schedule's int4 phase, a QLinear) has no runtime form. */
static bg_status lm_projection(exporter *e, const bg_module *p, const char **format) {
    if (!p) return fail(e, BG_ERR_ARG, "missing (not a TransformerLM built by bg_lm_new?)");
    bg_status s = check_params(e, p);
    if (s != BG_OK) return s;
    json_t *wj = NULL;
    if (bg_module_type_of(p) == &bg_linear_type) {
        const bg_tensor *W = bg_module_find_param(p, "weight");
        if (!W || W->ndim != 2) return fail(e, BG_ERR_ARG, "has no [out, in] weight");
        *format = "f32";
        s = export_weight(e, NULL, W, W->shape[0], W->shape[1], &wj);
        json_decref(wj);
        return s;
    }
    char ws_str[BG_QUANT_SPEC_STR_MAX];
    if (!bg_export_bitnet_projection(p, ws_str, sizeof ws_str))
        return fail(e, BG_ERR_ARG,
                    "a %s with weights %s: the language-model runtime runs ternary BitLinears (int8 per-token "
                    "activations) or float Linears (finish the schedule at ternary)",
                    bg_module_kind(p), ws_str);
    const bg_tensor *W = bg_qlayer_weight(p);
    *format = "t2";
    s = export_weight(e, bg_qlayer_weight_state(p), W, W->shape[0], W->shape[1], &wj);
    json_decref(wj);
    return s;
}

static bg_status lm_block(exporter *e, const bg_module *b, int64_t i, const char **format) {
    char name[NAME_MAX_LEN];
    bg_status s = BG_OK;
    e->lname = name;
    for (size_t k = 0; k < sizeof LM_NORMS / sizeof *LM_NORMS && s == BG_OK; k++) {
        snprintf(name, sizeof name, "blk.%lld.%s", (long long)i, LM_NORMS[k]);
        s = lm_float(e, bg_module_find_child(b, LM_NORMS[k]));
    }
    for (size_t k = 0; k < sizeof LM_PROJECTIONS / sizeof *LM_PROJECTIONS && s == BG_OK; k++) {
        snprintf(name, sizeof name, "blk.%lld.%s", (long long)i, LM_PROJECTIONS[k]);
        const char *f = NULL;
        s = lm_projection(e, bg_module_find_child(b, LM_PROJECTIONS[k]), &f);
        if (s == BG_OK && *format && strcmp(*format, f) != 0)
            s = fail(e, BG_ERR_ARG, "is %s while earlier projections are %s: the runtime wants one kind", f, *format);
        *format = f;
    }
    e->lname = NULL;
    return s;
}

/* Every tensor of the model, and the "lm" metadata (the config and the
 * projections' format). */
static bg_status export_lm(exporter *e, const bg_module *model, char **lm_json) {
    bg_lm_config c;
    bg_status s = bg_lm_config_of(model, &c);
    if (s != BG_OK) return s;
    const bg_module *blk = bg_module_find_child(model, "blk");
    if (!blk || bg_module_num_children(blk) != c.n_layers)
        return bg_set_error(BG_ERR_ARG, OP ": the TransformerLM has no %lld blocks under \"blk\"", (long long)c.n_layers);
    e->lname = "token_embd";
    if ((s = lm_float(e, bg_module_find_child(model, "token_embd"))) != BG_OK) return s;
    e->lname = "output_norm";
    if ((s = lm_float(e, bg_module_find_child(model, "output_norm"))) != BG_OK) return s;
    const char *format = NULL;
    for (int64_t i = 0; i < c.n_layers && s == BG_OK; i++) s = lm_block(e, bg_module_child(blk, (int)i), i, &format);
    if (s != BG_OK) return s;
    json_t *j = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:s, s:s, s:s}", "architecture", "bitnet",
                          "vocab", (json_int_t)c.vocab, "d_model", (json_int_t)c.d_model, "n_layers",
                          (json_int_t)c.n_layers, "n_heads", (json_int_t)c.n_heads, "d_ff", (json_int_t)c.d_ff, "ctx",
                          (json_int_t)c.ctx, "rope_theta", (double)c.rope_theta, "norm_eps", (double)c.norm_eps,
                          "projections", format, "activations", strcmp(format, "t2") ? "f32" : "int8_per_token_absmax",
                          "float_tensors", "f32");
    *lm_json = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    return *lm_json ? BG_OK : bg_set_error(BG_ERR_NOMEM, OP ": out of memory");
}

/* The language model's file: its tensors, "lm" and the model description. */
static bg_status save_lm(exporter *e, const bg_module *model, const char *path) {
    char *lm = NULL, *desc = NULL;
    bg_status s = export_lm(e, model, &lm);
    if (s == BG_OK && !(desc = bg_model_to_json(model)))
        s = bg_set_error(bg_last_status() != BG_OK ? bg_last_status() : BG_ERR_ARG, OP ": model description: %s",
                         bg_last_error());
    if (s == BG_OK && (bg_safetensors_writer_meta(e->w, "format", EXPORT_FORMAT) != BG_OK ||
                       bg_safetensors_writer_meta(e->w, "version", EXPORT_VERSION) != BG_OK ||
                       bg_safetensors_writer_meta(e->w, "lm", lm) != BG_OK ||
                       bg_safetensors_writer_meta(e->w, "model", desc) != BG_OK))
        s = bg_set_error(BG_ERR_NOMEM, OP ": %s: out of memory", path);
    if (s == BG_OK) s = bg_safetensors_writer_save(e->w, path);
    free(lm);
    free(desc);
    return s;
}

// ---------------------------------------------------------------------------
// bg_export

static void exporter_free(exporter *e) {
    bg_safetensors_writer_free(e->w);
    bg_export_bufs_free(&e->bufs);
    bg_ctx_free(e->ctx);
    json_decref(e->layers);
}

bg_status bg_export(const bg_module *model, const char *path, const bg_export_opts *opts) {
    if (!model || !path) return bg_set_error(BG_ERR_ARG, OP ": %s is NULL", !model ? "model" : "path");
    if (opts && (opts->input_ndim < 0 || opts->input_ndim > 3 || opts->input_ndim == 2))
        return bg_set_error(BG_ERR_ARG, OP ": input_ndim must be 1 ([features]) or 3 ([C,H,W]), got %d",
                            opts->input_ndim);
    exporter *e = calloc(1, sizeof *e);
    if (!e) return bg_set_error(BG_ERR_NOMEM, OP ": out of memory");
    bg_status s = BG_OK;
    char *desc = NULL, *layers_str = NULL;
    e->w = bg_safetensors_writer_new();
    e->ctx = bg_ctx_new(0);
    e->layers = json_array();
    if (!e->w || !e->ctx || !e->layers) {
        s = bg_set_error(BG_ERR_NOMEM, OP ": out of memory");
        goto done;
    }
    if (bg_module_type_of(model) == &bg_transformer_lm_type) {
        s = save_lm(e, model, path);
        goto done;
    }
    if ((s = collect(e, model, "")) != BG_OK) goto done;

    shape3 sh = {0};
    if (opts && opts->input_ndim) {
        sh.ndim = opts->input_ndim;
        for (int i = 0; i < sh.ndim; i++) sh.d[i] = opts->input_shape[i];
        for (int i = 0; i < sh.ndim; i++)
            if (sh.d[i] <= 0) {
                s = bg_set_error(BG_ERR_ARG, OP ": input_shape[%d] must be positive, got %lld", i, (long long)sh.d[i]);
                goto done;
            }
    } else if (e->n_leaves > 0) {
        const bg_module *f = e->leaves[0].m;
        const bg_tensor *W = bg_module_is_qlayer(f) ? bg_qlayer_weight(f) : bg_module_find_param(f, "weight");
        const bg_module_type *t = bg_module_type_of(f);
        const char *k = t->kind;
        if (W && W->ndim == 2 && (t == &bg_linear_type || t == &bg_qlinear_type || t == &bg_bitlinear_type)) {
            sh.ndim = 1, sh.d[0] = W->shape[1];
        } else {
            s = bg_set_error(BG_ERR_ARG, OP ": the model starts with a %s: give the input shape (bg_export_opts)", k);
            goto done;
        }
    }
    if (e->n_leaves == 0) {
        s = bg_set_error(BG_ERR_ARG, OP ": the model has no layers");
        goto done;
    }
    json_t *in_shape = json_shape(sh.ndim, sh.d);
    for (int i = 0; i < e->n_leaves; i++) {
        e->lname = e->leaves[i].path;
        json_t *lj = json_pack("{s:s, s:s}", "name", e->lname, "source", bg_module_kind(e->leaves[i].m));
        if (!lj) {
            s = nomem(e);
            break;
        }
        if ((s = check_params(e, e->leaves[i].m)) != BG_OK || (s = export_layer(e, e->leaves[i].m, &sh, lj)) != BG_OK) {
            json_decref(lj);
            break;
        }
        if (!jset(lj, "out_shape", json_shape(sh.ndim, sh.d))) {
            json_decref(lj);
            s = nomem(e);
            break;
        }
        if (json_array_append_new(e->layers, lj) != 0) {   // takes lj, also on failure
            s = nomem(e);
            break;
        }
    }
    e->lname = NULL;
    if (s != BG_OK) {
        json_decref(in_shape);
        goto done;
    }
    char buf[64];
    char *in_str = json_dumps(in_shape, JSON_COMPACT);
    json_decref(in_shape);
    layers_str = json_dumps(e->layers, JSON_COMPACT | JSON_PRESERVE_ORDER);
    desc = bg_model_to_json(model);
    if (!desc) {
        s = bg_set_error(bg_last_status() != BG_OK ? bg_last_status() : BG_ERR_ARG, OP ": model description: %s",
                         bg_last_error());
        free(in_str);
        goto done;
    }
    snprintf(buf, sizeof buf, "%lld", (long long)shape_numel(&sh));
    if (!in_str || !layers_str || bg_safetensors_writer_meta(e->w, "format", EXPORT_FORMAT) != BG_OK ||
        bg_safetensors_writer_meta(e->w, "version", EXPORT_VERSION) != BG_OK ||
        bg_safetensors_writer_meta(e->w, "input_shape", in_str) != BG_OK ||
        bg_safetensors_writer_meta(e->w, "output_size", buf) != BG_OK ||
        bg_safetensors_writer_meta(e->w, "layers", layers_str) != BG_OK ||
        bg_safetensors_writer_meta(e->w, "model", desc) != BG_OK) {
        free(in_str);
        s = bg_set_error(BG_ERR_NOMEM, OP ": %s: out of memory", path);
        goto done;
    }
    free(in_str);
    s = bg_safetensors_writer_save(e->w, path);
done:
    free(desc);
    free(layers_str);
    exporter_free(e);
    free(e);
    return s;
}
