/* onnx.c — bg_export_onnx: a module tree as an opset-13 ONNX graph with int8
 * QDQ (see io/io.h "ONNX export" for the graph it writes and why), built as
 * protobuf-c messages of the onnx.pb-c.h that CMake generates from Debian's
 * onnx.proto with protoc-c, packed by libprotobuf-c, written atomically.
 * Calls layers/ (the module tree, qlayer states, layer hyperparameters) and
 * qat/ (bg_quantize / bg_quant_params_compute for codes, scales, zero points). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/io.h"
#include "qat/qat.h"

#ifndef BG_WITH_ONNX

bg_status bg_export_onnx(const bg_module *model, const char *path, int ndim, const int64_t *input_shape) {
    (void)model, (void)path, (void)ndim, (void)input_shape;
    return bg_set_error(BG_ERR_UNSUPPORTED,
                        "onnx_export: this build has no ONNX support (configure with -DBG_WITH_ONNX=ON and "
                        "libprotobuf-c-dev, protobuf-c-compiler, libonnx-dev installed)");
}

#else

#include "onnx.pb-c.h"

#define OPSET 13
#define IR_VERSION 7       /* the IR of ONNX 1.8, which introduced opset 13 */
#define MAX_DIMS 8
#define MAX_ATTRS 8
/* BitLinear's RMSNorm epsilon (layers/qlayers.c). */
#define BITLINEAR_NORM_EPS 1e-6f

typedef enum dt {
    DT_F32 = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT,
    DT_U8 = ONNX__TENSOR_PROTO__DATA_TYPE__UINT8,
    DT_I8 = ONNX__TENSOR_PROTO__DATA_TYPE__INT8,
    DT_I64 = ONNX__TENSOR_PROTO__DATA_TYPE__INT64,
    DT_F64 = ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE,
} dt;

/* A shape flowing through the graph; d[0] is the symbolic batch (-1). */
typedef struct shp {
    int ndim;
    int64_t d[MAX_DIMS];
} shp;

/* The graph under construction. Every string, array and message is
 * calloc'ed and remembered in mem, so one loop frees the whole model. */
typedef struct ox {
    void **mem;
    size_t n_mem, cap_mem;
    Onnx__NodeProto **nodes;
    size_t n_nodes, cap_nodes;
    Onnx__TensorProto **inits;
    size_t n_inits, cap_inits;
    Onnx__StringStringEntryProto **props;
    size_t n_props, cap_props;
    bg_ctx *ctx;
    bg_status err;   /* first failure (bg_last_error holds its message) */
} ox;

// ---------------------------------------------------------------------------
// memory and names

static void *ox_alloc(ox *b, size_t size) {
    if (b->err) return NULL;
    if (b->n_mem == b->cap_mem) {
        size_t cap = b->cap_mem ? 2 * b->cap_mem : 256;
        void **m = realloc(b->mem, cap * sizeof *m);
        if (!m) {
            b->err = bg_set_error(BG_ERR_NOMEM, "onnx_export: out of memory");
            return NULL;
        }
        b->mem = m, b->cap_mem = cap;
    }
    void *p = calloc(1, size ? size : 1);
    if (!p) {
        b->err = bg_set_error(BG_ERR_NOMEM, "onnx_export: out of memory");
        return NULL;
    }
    b->mem[b->n_mem++] = p;
    return p;
}

static bool ox_push(ox *b, void ***arr, size_t *n, size_t *cap, void *item) {
    if (b->err || !item) return false;
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 64;
        void **a = realloc(*arr, c * sizeof *a);
        if (!a) {
            b->err = bg_set_error(BG_ERR_NOMEM, "onnx_export: out of memory");
            return false;
        }
        *arr = a, *cap = c;
    }
    (*arr)[(*n)++] = item;
    return true;
}

static char *ox_fmt(ox *b, const char *fmt, ...) BG_PRINTF(2, 3);
static char *ox_fmt(ox *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n >= 0 ? ox_alloc(b, (size_t)n + 1) : NULL;
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static bg_status ox_fail(ox *b, bg_status st, const char *fmt, ...) BG_PRINTF(3, 4);
static bg_status ox_fail(ox *b, bg_status st, const char *fmt, ...) {
    if (b->err) return b->err;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    b->err = bg_set_error(st, "onnx_export: %s", msg);
    return b->err;
}

static void ox_prop(ox *b, const char *key, const char *value) {
    Onnx__StringStringEntryProto *e = ox_alloc(b, sizeof *e);
    if (!e) return;
    onnx__string_string_entry_proto__init(e);
    e->key = ox_fmt(b, "%s", key);
    e->value = ox_fmt(b, "%s", value);
    ox_push(b, (void ***)&b->props, &b->n_props, &b->cap_props, e);
}

// ---------------------------------------------------------------------------
// initializers (raw little-endian data, as x86-64 stores it)

static size_t dt_size(dt t) {
    switch (t) {
    case DT_U8:
    case DT_I8: return 1;
    case DT_F32: return 4;
    default: return 8;
    }
}

/* A constant tensor called name; returns the name (NULL after a failure). */
static const char *ox_tensor(ox *b, const char *name, dt type, int ndim, const int64_t *dims, const void *data) {
    Onnx__TensorProto *t = ox_alloc(b, sizeof *t);
    int64_t *d = ox_alloc(b, sizeof(int64_t) * (size_t)(ndim > 0 ? ndim : 1));
    if (!t || !d || !name) return NULL;
    onnx__tensor_proto__init(t);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) d[i] = dims[i], n *= (size_t)dims[i];
    uint8_t *raw = ox_alloc(b, n * dt_size(type));
    if (!raw) return NULL;
    memcpy(raw, data, n * dt_size(type));
    t->name = (char *)name;
    t->n_dims = (size_t)ndim;
    t->dims = d;
    t->has_data_type = 1;
    t->data_type = (int32_t)type;
    t->has_raw_data = 1;
    t->raw_data.len = n * dt_size(type);
    t->raw_data.data = raw;
    return ox_push(b, (void ***)&b->inits, &b->n_inits, &b->cap_inits, t) ? name : NULL;
}

static const char *ox_f32(ox *b, const char *pfx, const char *what, float v) {
    return ox_tensor(b, ox_fmt(b, "%s/%s", pfx, what), DT_F32, 0, NULL, &v);
}
static const char *ox_f64(ox *b, const char *pfx, const char *what, double v) {
    return ox_tensor(b, ox_fmt(b, "%s/%s", pfx, what), DT_F64, 0, NULL, &v);
}
static const char *ox_i64s(ox *b, const char *pfx, const char *what, int n, const int64_t *v) {
    int64_t dims[1] = {n};
    return ox_tensor(b, ox_fmt(b, "%s/%s", pfx, what), DT_I64, 1, dims, v);
}

// ---------------------------------------------------------------------------
// nodes

/* A node with n_in inputs and one output named "<pfx>/<what>"; returns the
 * node (NULL after a failure). */
static Onnx__NodeProto *ox_node(ox *b, const char *op, const char *pfx, const char *what, int n_in,
                                const char *const *in) {
    Onnx__NodeProto *nd = ox_alloc(b, sizeof *nd);
    char **ins = ox_alloc(b, sizeof(char *) * (size_t)(n_in > 0 ? n_in : 1));
    char **outs = ox_alloc(b, sizeof(char *));
    Onnx__AttributeProto **attrs = ox_alloc(b, sizeof(Onnx__AttributeProto *) * MAX_ATTRS);
    if (!nd || !ins || !outs || !attrs) return NULL;
    onnx__node_proto__init(nd);
    for (int i = 0; i < n_in; i++) {
        if (!in[i]) return NULL;   // an input that failed to build (err is set)
        ins[i] = (char *)in[i];
    }
    outs[0] = ox_fmt(b, "%s/%s", pfx, what);
    nd->name = outs[0];
    nd->op_type = ox_fmt(b, "%s", op);
    nd->n_input = (size_t)n_in, nd->input = ins;
    nd->n_output = 1, nd->output = outs;
    nd->attribute = attrs;
    if (!outs[0] || !nd->op_type) return NULL;
    return ox_push(b, (void ***)&b->nodes, &b->n_nodes, &b->cap_nodes, nd) ? nd : NULL;
}

static const char *out_of(const Onnx__NodeProto *nd) { return nd ? nd->output[0] : NULL; }

static const char *op1(ox *b, const char *op, const char *pfx, const char *what, const char *x) {
    return out_of(ox_node(b, op, pfx, what, 1, (const char *[]){x}));
}
static const char *op2(ox *b, const char *op, const char *pfx, const char *what, const char *x, const char *y) {
    return out_of(ox_node(b, op, pfx, what, 2, (const char *[]){x, y}));
}
static const char *op3(ox *b, const char *op, const char *pfx, const char *what, const char *x, const char *y,
                       const char *z) {
    return out_of(ox_node(b, op, pfx, what, 3, (const char *[]){x, y, z}));
}

static Onnx__AttributeProto *ox_attr(ox *b, Onnx__NodeProto *nd, const char *name,
                                     Onnx__AttributeProto__AttributeType type) {
    if (!nd || nd->n_attribute >= MAX_ATTRS) return NULL;
    Onnx__AttributeProto *a = ox_alloc(b, sizeof *a);
    if (!a) return NULL;
    onnx__attribute_proto__init(a);
    a->name = ox_fmt(b, "%s", name);
    a->has_type = 1;
    a->type = type;
    nd->attribute[nd->n_attribute++] = a;
    return a;
}
static void attr_i(ox *b, Onnx__NodeProto *nd, const char *name, int64_t v) {
    Onnx__AttributeProto *a = ox_attr(b, nd, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (a) a->has_i = 1, a->i = v;
}
static void attr_f(ox *b, Onnx__NodeProto *nd, const char *name, float v) {
    Onnx__AttributeProto *a = ox_attr(b, nd, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (a) a->has_f = 1, a->f = v;
}
static void attr_ints(ox *b, Onnx__NodeProto *nd, const char *name, int n, const int64_t *v) {
    Onnx__AttributeProto *a = ox_attr(b, nd, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    int64_t *c = a ? ox_alloc(b, sizeof(int64_t) * (size_t)(n > 0 ? n : 1)) : NULL;
    if (!c) return;
    memcpy(c, v, sizeof(int64_t) * (size_t)n);
    a->n_ints = (size_t)n, a->ints = c;
}

static const char *cast_to(ox *b, const char *pfx, const char *what, const char *x, dt to) {
    Onnx__NodeProto *nd = ox_node(b, "Cast", pfx, what, 1, (const char *[]){x});
    attr_i(b, nd, "to", to);
    return out_of(nd);
}

/* Reduce op over axes (NULL/0 = all) with keepdims = 1. */
static const char *reduce(ox *b, const char *op, const char *pfx, const char *what, const char *x, int n_axes,
                          const int64_t *axes) {
    Onnx__NodeProto *nd = ox_node(b, op, pfx, what, 1, (const char *[]){x});
    if (n_axes > 0) attr_ints(b, nd, "axes", n_axes, axes);
    attr_i(b, nd, "keepdims", 1);
    return out_of(nd);
}

// ---------------------------------------------------------------------------
// quantization

/* Runs f with the state's observer off (export must not move a range). */
static bg_status params_frozen(ox *b, bg_quant_state *st, const bg_tensor *x, bg_tensor **codes,
                               bg_quant_params *p) {
    bool obs = bg_quant_state_observer_enabled(st);
    bg_quant_state_set_observer(st, false);
    bg_status rc = codes ? bg_quantize(b->ctx, bg_quant_state_spec(st), st, x, codes, p)
                         : bg_quant_params_compute(b->ctx, bg_quant_state_spec(st), st, x, p);
    bg_quant_state_set_observer(st, obs);
    if (rc != BG_OK) {
        b->err = rc;
        bg_set_error(rc, "onnx_export: %s", bg_ctx_error(b->ctx));
    }
    return rc;
}

static bg_status check_spec(ox *b, const char *path, const char *side, const bg_quant_spec *spec) {
    char s[BG_QUANT_SPEC_STR_MAX];
    bg_quant_spec_format(spec, s, sizeof s);
    if (spec->rounding == BG_QUANT_ROUND_STOCHASTIC)
        return ox_fail(b, BG_ERR_UNSUPPORTED, "layer %s %s: stochastic rounding has no ONNX form: \"%s\"", path, side,
                       s);
    return BG_OK;
}

/* Dynamic quantizers (absmax, absmean): the scale is computed in the graph
 * with bitgrad's float operations, then x * (1/s), Round, Clip, * s. */
static const char *act_dynamic(ox *b, const char *pfx, const char *x, const shp *s, const bg_quant_spec *spec) {
    int64_t axes[MAX_DIMS];
    int n_axes = 0;
    if (spec->granularity == BG_QUANT_PER_TOKEN) {
        axes[n_axes++] = s->ndim - 1;
    } else if (spec->granularity == BG_QUANT_PER_CHANNEL) {
        int a = spec->axis < 0 ? spec->axis + s->ndim : spec->axis;
        for (int i = 0; i < s->ndim; i++)
            if (i != a) axes[n_axes++] = i;
    } else {   // per tensor
        for (int i = 0; i < s->ndim; i++) axes[n_axes++] = i;
    }
    int32_t qmin, qmax;
    bg_quant_spec_qrange(spec, &qmin, &qmax);
    const char *ax = op1(b, "Abs", pfx, "abs", x), *scale;
    if (spec->range == BG_QUANT_RANGE_ABSMAX) {
        // s = max(max|x|, 1e-5) / qmax
        const char *m = reduce(b, "ReduceMax", pfx, "absmax", ax, n_axes, axes);
        m = op2(b, "Max", pfx, "absmax_clamped", m, ox_f32(b, pfx, "eps", BG_QUANT_BITNET_EPS));
        scale = op2(b, "Div", pfx, "scale", m, ox_f32(b, pfx, "qmax", (float)qmax));
    } else {
        // s = max((float)(sum|x| / n in double), 1e-5)
        const char *m = reduce(b, "ReduceMean", pfx, "absmean64", cast_to(b, pfx, "abs64", ax, DT_F64), n_axes, axes);
        m = cast_to(b, pfx, "absmean", m, DT_F32);
        scale = op2(b, "Max", pfx, "scale", m, ox_f32(b, pfx, "eps", BG_QUANT_BITNET_EPS));
    }
    // Reciprocal, not Div(1, s): onnxruntime's basic level fuses Div(1, s) ->
    // Mul(x, .) into Div(x, s), which rounds differently from x * (1/s).
    const char *inv = op1(b, "Reciprocal", pfx, "inv_scale", scale);
    const char *q = op1(b, "Round", pfx, "rounded", op2(b, "Mul", pfx, "scaled", x, inv));
    q = op3(b, "Clip", pfx, "codes", q, ox_f32(b, pfx, "qmin", (float)qmin), ox_f32(b, pfx, "qmax_code", (float)qmax));
    return op2(b, "Mul", pfx, "dequantized", q, scale);
}

/* Static quantizers: Mul(x, 1/s) -> QuantizeLinear(1, z) [-> Clip] ->
 * DequantizeLinear(s, z); per-tensor or per-channel on the spec's axis. */
static const char *act_static(ox *b, const char *pfx, const char *x, const shp *s, bg_quant_state *st) {
    const bg_quant_spec *spec = bg_quant_state_spec(st);
    if (bg_quant_spec_is_learned(spec) && !bg_quant_state_initialized(st)) {
        ox_fail(b, BG_ERR_STATE, "%s: the learned quantizer was never initialised (run a forward first)", pfx);
        return NULL;
    }
    if (spec->kind == BG_QUANT_BINARY) {
        ox_fail(b, BG_ERR_UNSUPPORTED, "%s: binary activations have no ONNX form here", pfx);
        return NULL;
    }
    // A dummy input laid out like x with one example: the parameters of a
    // static quantizer do not depend on the values once the observer is off.
    int axis = -1;
    int64_t dshape[MAX_DIMS];
    for (int i = 0; i < s->ndim; i++) dshape[i] = i == 0 ? 1 : s->d[i];
    if (spec->granularity == BG_QUANT_PER_CHANNEL) axis = spec->axis < 0 ? spec->axis + s->ndim : spec->axis;
    bg_tensor *dummy = bg_zeros(b->ctx, BG_DTYPE_F32, s->ndim, dshape);
    bg_quant_params p;
    if (!dummy) {
        b->err = bg_set_error(bg_ctx_status(b->ctx), "onnx_export: %s", bg_ctx_error(b->ctx));
        return NULL;
    }
    if (params_frozen(b, st, dummy, NULL, &p) != BG_OK) return NULL;
    int64_t C = p.channels;
    if (axis < 0 && C != 1) {
        ox_fail(b, BG_ERR_UNSUPPORTED, "%s: activation granularity %s has no static ONNX form", pfx,
                bg_quant_granularity_name(spec->granularity));
        return NULL;
    }
    bool is_signed = p.qmin < 0;
    float *inv = ox_alloc(b, sizeof(float) * (size_t)C), *sc = ox_alloc(b, sizeof(float) * (size_t)C),
          *ones = ox_alloc(b, sizeof(float) * (size_t)C);
    uint8_t *zp = ox_alloc(b, (size_t)C);
    if (!inv || !sc || !ones || !zp) return NULL;
    for (int64_t c = 0; c < C; c++) {
        sc[c] = p.scale[c];
        inv[c] = 1.0f / p.scale[c];   // the kernels' inverse (kernels/quant.c)
        ones[c] = 1.0f;
        int32_t z = p.zero_point ? (int32_t)p.zero_point[c] : 0;
        zp[c] = is_signed ? (uint8_t)(int8_t)z : (uint8_t)z;
    }
    dt zt = is_signed ? DT_I8 : DT_U8;
    const char *inv_t, *sc_t, *one_t, *zp_t;
    if (axis < 0) {
        inv_t = ox_tensor(b, ox_fmt(b, "%s/inv_scale", pfx), DT_F32, 0, NULL, inv);
        sc_t = ox_tensor(b, ox_fmt(b, "%s/scale", pfx), DT_F32, 0, NULL, sc);
        one_t = ox_tensor(b, ox_fmt(b, "%s/unit_scale", pfx), DT_F32, 0, NULL, ones);
        zp_t = ox_tensor(b, ox_fmt(b, "%s/zero_point", pfx), zt, 0, NULL, zp);
    } else {
        // inv broadcast against x: shape [C, 1, ..., 1] ending at the last dim
        int64_t bshape[MAX_DIMS], cdim[1] = {C};
        int nb = s->ndim - axis;
        bshape[0] = C;
        for (int i = 1; i < nb; i++) bshape[i] = 1;
        inv_t = ox_tensor(b, ox_fmt(b, "%s/inv_scale", pfx), DT_F32, nb, bshape, inv);
        sc_t = ox_tensor(b, ox_fmt(b, "%s/scale", pfx), DT_F32, 1, cdim, sc);
        one_t = ox_tensor(b, ox_fmt(b, "%s/unit_scale", pfx), DT_F32, 1, cdim, ones);
        zp_t = ox_tensor(b, ox_fmt(b, "%s/zero_point", pfx), zt, 1, cdim, zp);
    }
    const char *scaled = op2(b, "Mul", pfx, "scaled", x, inv_t);
    Onnx__NodeProto *q = ox_node(b, "QuantizeLinear", pfx, "codes", 3, (const char *[]){scaled, one_t, zp_t});
    if (axis >= 0) attr_i(b, q, "axis", axis);
    const char *codes = out_of(q);
    int32_t tmin = is_signed ? -128 : 0, tmax = is_signed ? 127 : 255;
    if (p.qmin != tmin || p.qmax != tmax) {   // fewer than 8 bits, or narrow: QCDQ's Clip
        uint8_t lo = is_signed ? (uint8_t)(int8_t)p.qmin : (uint8_t)p.qmin;
        uint8_t hi = is_signed ? (uint8_t)(int8_t)p.qmax : (uint8_t)p.qmax;
        codes = op3(b, "Clip", pfx, "codes_clipped", codes, ox_tensor(b, ox_fmt(b, "%s/qmin", pfx), zt, 0, NULL, &lo),
                    ox_tensor(b, ox_fmt(b, "%s/qmax", pfx), zt, 0, NULL, &hi));
    }
    Onnx__NodeProto *dq = ox_node(b, "DequantizeLinear", pfx, "dequantized", 3, (const char *[]){codes, sc_t, zp_t});
    if (axis >= 0) attr_i(b, dq, "axis", axis);
    return out_of(dq);
}

/* The input side of a qlayer (or a FakeQuant module). */
static const char *act_quant(ox *b, const char *path, const char *x, const shp *s, bg_quant_state *st) {
    if (!st || !bg_quant_state_enabled(st)) return x;
    const bg_quant_spec *spec = bg_quant_state_spec(st);
    if (check_spec(b, path, "input", spec) != BG_OK) return NULL;
    char s_str[BG_QUANT_SPEC_STR_MAX], key[BG_PARAM_NAME_MAX + 32];
    bg_quant_spec_format(spec, s_str, sizeof s_str);
    snprintf(key, sizeof key, "bitgrad.%s.input_quant", path);
    ox_prop(b, key, s_str);
    const char *pfx = ox_fmt(b, "%s.input_quant", path);
    if (spec->range == BG_QUANT_RANGE_ABSMAX || spec->range == BG_QUANT_RANGE_ABSMEAN) {
        if (spec->kind == BG_QUANT_BINARY) {
            ox_fail(b, BG_ERR_UNSUPPORTED, "%s: binary activations have no ONNX form here", pfx);
            return NULL;
        }
        return act_dynamic(b, pfx, x, s, spec);
    }
    if (spec->granularity == BG_QUANT_PER_TOKEN) {
        ox_fail(b, BG_ERR_UNSUPPORTED, "%s: per_token activations need an absmax or absmean range", pfx);
        return NULL;
    }
    return act_static(b, pfx, x, s, st);
}

/* The weight of a qlayer: DequantizeLinear(codes, scale, zero point) when its
 * quantizer is on, else the f32 latent weight. */
static const char *weight_of(ox *b, const char *path, const bg_module *m) {
    bg_tensor *w = bg_qlayer_weight(m);
    bg_quant_state *st = bg_qlayer_weight_state(m);
    if (!st || !bg_quant_state_enabled(st))
        return ox_tensor(b, ox_fmt(b, "%s.weight", path), DT_F32, w->ndim, w->shape, bg_f32(w));
    const bg_quant_spec *spec = bg_quant_state_spec(st);
    if (check_spec(b, path, "weight", spec) != BG_OK) return NULL;
    if (bg_quant_spec_is_learned(spec) && !bg_quant_state_initialized(st)) {
        ox_fail(b, BG_ERR_STATE, "%s.weight_quant: the learned quantizer was never initialised (run a forward first)",
                path);
        return NULL;
    }
    char s_str[BG_QUANT_SPEC_STR_MAX], key[BG_PARAM_NAME_MAX + 32];
    bg_quant_spec_format(spec, s_str, sizeof s_str);
    snprintf(key, sizeof key, "bitgrad.%s.weight_quant", path);
    ox_prop(b, key, s_str);
    bg_tensor *codes;
    bg_quant_params p;
    if (params_frozen(b, st, w, &codes, &p) != BG_OK) return NULL;
    const int64_t C = p.channels, n = bg_numel(w);
    const bool is_signed = codes->dtype == BG_DTYPE_I8;
    const dt ct = is_signed ? DT_I8 : DT_U8;
    float *sc = ox_alloc(b, sizeof(float) * (size_t)C);
    uint8_t *zp = ox_alloc(b, (size_t)C);
    if (!sc || !zp) return NULL;
    for (int64_t c = 0; c < C; c++) {
        sc[c] = p.scale[c];
        int32_t z = p.zero_point ? (int32_t)p.zero_point[c] : 0;
        zp[c] = is_signed ? (uint8_t)(int8_t)z : (uint8_t)z;
    }
    const char *cname = ox_fmt(b, "%s.weight_codes", path), *sname = ox_fmt(b, "%s.weight_scale", path),
               *zname = ox_fmt(b, "%s.weight_zero_point", path);
    const char *pfx = ox_fmt(b, "%s.weight_quant", path);
    int64_t cdim[1] = {C};
    int axis = -1;
    bool rows = false;   // codes stored as [numel/G, G], one scale per row
    switch (spec->granularity) {
    case BG_QUANT_PER_TENSOR: break;
    case BG_QUANT_PER_CHANNEL:
        axis = spec->axis < 0 ? spec->axis + w->ndim : spec->axis;
        if (p.outer * p.channels * p.inner != n || w->shape[axis] != C) {
            ox_fail(b, BG_ERR_UNSUPPORTED, "%s: per_channel layout does not match the weight", pfx);
            return NULL;
        }
        break;
    default:   // per_group of G along the last axis; per_token = one group per row
        rows = true;
        if (p.outer != 1 || p.channels * p.inner != n) {
            ox_fail(b, BG_ERR_UNSUPPORTED, "%s: %s layout does not match the weight", pfx,
                    bg_quant_granularity_name(spec->granularity));
            return NULL;
        }
        break;
    }
    const char *ct_name, *st_name, *zt_name;
    if (rows) {
        int64_t gshape[2] = {C, p.inner};
        ct_name = ox_tensor(b, cname, ct, 2, gshape, codes->data);
    } else {
        ct_name = ox_tensor(b, cname, ct, w->ndim, w->shape, codes->data);
    }
    if (C == 1 && !rows) {
        st_name = ox_tensor(b, sname, DT_F32, 0, NULL, sc);
        zt_name = ox_tensor(b, zname, ct, 0, NULL, zp);
    } else {
        st_name = ox_tensor(b, sname, DT_F32, 1, cdim, sc);
        zt_name = ox_tensor(b, zname, ct, 1, cdim, zp);
        if (rows) axis = 0;
    }
    Onnx__NodeProto *dq = ox_node(b, "DequantizeLinear", pfx, "dequantized", 3, (const char *[]){ct_name, st_name, zt_name});
    if (axis >= 0) attr_i(b, dq, "axis", axis);
    const char *out = out_of(dq);
    if (rows) out = op2(b, "Reshape", pfx, "weight", out, ox_i64s(b, pfx, "shape", w->ndim, w->shape));
    return out;
}

// ---------------------------------------------------------------------------
// layers

static const char *rmsnorm(ox *b, const char *pfx, const char *x, float eps, const bg_tensor *gain) {
    // rs = (float)(1 / sqrt(sum(x^2)/n + eps)) in float64, y = x * rs [* w]
    // (kernels/eltwise.c rmsnorm_forward_ref)
    const char *xd = cast_to(b, pfx, "x64", x, DT_F64);
    int64_t last[1] = {-1};
    const char *ms = reduce(b, "ReduceMean", pfx, "mean_sq", op2(b, "Mul", pfx, "sq", xd, xd), 1, last);
    const char *rs = op1(b, "Sqrt", pfx, "rms", op2(b, "Add", pfx, "mean_sq_eps", ms, ox_f64(b, pfx, "eps", (double)eps)));
    rs = op2(b, "Div", pfx, "rstd64", ox_f64(b, pfx, "one", 1.0), rs);
    rs = cast_to(b, pfx, "rstd", rs, DT_F32);
    const char *y = op2(b, "Mul", pfx, "normed", x, rs);
    if (gain) {
        int64_t d[1] = {bg_numel(gain)};
        y = op2(b, "Mul", pfx, "scaled", y,
                ox_tensor(b, ox_fmt(b, "%s.weight", pfx), DT_F32, 1, d, bg_f32(gain)));
    }
    return y;
}

/* y = x W^T + b for x [..., in]: Gemm (transB, bias as C) on 2-D inputs as
 * bitgrad's linear does (bias first, then the product accumulated onto it),
 * MatMul with a transposed weight + Add otherwise. */
static const char *linear(ox *b, const char *path, const char *x, shp *s, const char *w, const bg_tensor *bias,
                          int64_t in, int64_t out) {
    if (s->d[s->ndim - 1] != in) {
        ox_fail(b, BG_ERR_SHAPE, "layer %s expects %lld input features, the input has %lld", path, (long long)in,
                (long long)s->d[s->ndim - 1]);
        return NULL;
    }
    const char *bt = NULL;
    if (bias) {
        int64_t d[1] = {out};
        bt = ox_tensor(b, ox_fmt(b, "%s.bias", path), DT_F32, 1, d, bg_f32(bias));
    }
    const char *y;
    if (s->ndim == 2) {
        Onnx__NodeProto *nd = ox_node(b, "Gemm", path, "gemm", bt ? 3 : 2, (const char *[]){x, w, bt});
        attr_i(b, nd, "transB", 1);
        y = out_of(nd);
    } else {
        Onnx__NodeProto *t = ox_node(b, "Transpose", path, "weight_t", 1, (const char *[]){w});
        attr_ints(b, t, "perm", 2, (const int64_t[]){1, 0});
        y = op2(b, "MatMul", path, "matmul", x, out_of(t));
        if (bt) y = op2(b, "Add", path, "add_bias", y, bt);
    }
    s->d[s->ndim - 1] = out;
    return y;
}

static const char *conv(ox *b, const char *path, const char *x, shp *s, const char *w, const bg_tensor *weight,
                        const bg_tensor *bias, const bg_conv2d_opts *o) {
    const int64_t oc = weight->shape[0], icg = weight->shape[1], kh = weight->shape[2], kw = weight->shape[3];
    if (s->ndim != 4 || s->d[1] != icg * o->groups) {
        ox_fail(b, BG_ERR_SHAPE, "layer %s expects input [N,%lld,H,W], the input has %d dims and %lld channels", path,
                (long long)(icg * o->groups), s->ndim, (long long)(s->ndim > 1 ? s->d[1] : 0));
        return NULL;
    }
    int64_t oh = (s->d[2] + 2 * o->padding[0] - o->dilation[0] * (kh - 1) - 1) / o->stride[0] + 1;
    int64_t ow = (s->d[3] + 2 * o->padding[1] - o->dilation[1] * (kw - 1) - 1) / o->stride[1] + 1;
    if (oh < 1 || ow < 1) {
        ox_fail(b, BG_ERR_SHAPE, "layer %s: a %lldx%lld input is smaller than the %lldx%lld kernel", path,
                (long long)s->d[2], (long long)s->d[3], (long long)kh, (long long)kw);
        return NULL;
    }
    const char *bt = NULL;
    if (bias) {
        int64_t d[1] = {oc};
        bt = ox_tensor(b, ox_fmt(b, "%s.bias", path), DT_F32, 1, d, bg_f32(bias));
    }
    Onnx__NodeProto *nd = ox_node(b, "Conv", path, "conv", bt ? 3 : 2, (const char *[]){x, w, bt});
    attr_ints(b, nd, "kernel_shape", 2, (const int64_t[]){kh, kw});
    attr_ints(b, nd, "strides", 2, o->stride);
    attr_ints(b, nd, "pads", 4, (const int64_t[]){o->padding[0], o->padding[1], o->padding[0], o->padding[1]});
    attr_ints(b, nd, "dilations", 2, o->dilation);
    attr_i(b, nd, "group", o->groups);
    s->d[1] = oc, s->d[2] = oh, s->d[3] = ow;
    return out_of(nd);
}

static const char *pool(ox *b, const char *path, const char *x, shp *s, bool is_max, int64_t k, int64_t stride,
                        int64_t pad) {
    if (stride == 0) stride = k;
    if (s->ndim != 4) {
        ox_fail(b, BG_ERR_SHAPE, "layer %s pools NCHW inputs, the input has %d dims", path, s->ndim);
        return NULL;
    }
    int64_t oh = (s->d[2] + 2 * pad - k) / stride + 1, ow = (s->d[3] + 2 * pad - k) / stride + 1;
    if (oh < 1 || ow < 1) {
        ox_fail(b, BG_ERR_SHAPE, "layer %s: a %lldx%lld input is smaller than the pooling window %lld", path,
                (long long)s->d[2], (long long)s->d[3], (long long)k);
        return NULL;
    }
    Onnx__NodeProto *nd = ox_node(b, is_max ? "MaxPool" : "AveragePool", path, "pool", 1, (const char *[]){x});
    attr_ints(b, nd, "kernel_shape", 2, (const int64_t[]){k, k});
    attr_ints(b, nd, "strides", 2, (const int64_t[]){stride, stride});
    attr_ints(b, nd, "pads", 4, (const int64_t[]){pad, pad, pad, pad});
    if (!is_max) attr_i(b, nd, "count_include_pad", 1);
    s->d[2] = oh, s->d[3] = ow;
    return out_of(nd);
}

static const char *emit(ox *b, const bg_module *m, const char *path, const char *x, shp *s);

/* Each kind's ONNX form: x (the input's name, shape s) -> the output's name,
 * s updated; NULL with b->err set on failure. pfx names the layer. */
typedef const char *(*emit_fn)(ox *b, const bg_module *m, const char *pfx, const char *x, shp *s);

static const char *emit_qlayer(ox *b, const bg_module *m, const char *path, const char *x, shp *s) {
    const bg_module_type *t = bg_module_type_of(m);
    bg_tensor *weight = bg_qlayer_weight(m);
    const bg_tensor *bias = bg_module_find_param(m, "bias");
    if (t == &bg_bitlinear_type) {
        if (s->d[s->ndim - 1] != weight->shape[1]) {
            ox_fail(b, BG_ERR_SHAPE, "layer %s expects %lld input features, the input has %lld", path,
                    (long long)weight->shape[1], (long long)s->d[s->ndim - 1]);
            return NULL;
        }
        x = rmsnorm(b, ox_fmt(b, "%s.norm", path), x, BITLINEAR_NORM_EPS, NULL);
    }
    x = act_quant(b, path, x, s, bg_qlayer_input_state(m));
    const char *w = weight_of(b, path, m);
    if (!x || !w) return NULL;
    if (t == &bg_qconv2d_type) {
        bg_conv2d_opts o;
        if (bg_qconv2d_get_opts(m, &o) != BG_OK) {
            b->err = BG_ERR_STATE;
            return NULL;
        }
        return conv(b, path, x, s, w, weight, bias, &o);
    }
    return linear(b, path, x, s, w, bias, weight->shape[1], weight->shape[0]);
}

static const char *emit(ox *b, const bg_module *m, const char *path, const char *x, shp *s);

/* The children in order (path is the container's, "" for the root). */
static const char *emit_children(ox *b, const bg_module *m, const char *path, const char *x, shp *s) {
    for (int i = 0; i < bg_module_num_children(m) && x; i++) {
        const char *cn = bg_module_child_name(m, i);
        const char *cp = path[0] ? ox_fmt(b, "%s.%s", path, cn) : ox_fmt(b, "%s", cn);
        x = emit(b, bg_module_child(m, i), cp, x, s);
    }
    return x;
}

static const char *emit_residual(ox *b, const bg_module *m, const char *path, const char *x, shp *s) {
    shp in = *s;
    const char *f = emit_children(b, m, path, x, s);
    if (!f) return NULL;
    if (s->ndim != in.ndim || memcmp(s->d, in.d, sizeof(int64_t) * (size_t)in.ndim) != 0) {
        ox_fail(b, BG_ERR_SHAPE, "layer %s: the residual branch changes the shape", path[0] ? path : "model");
        return NULL;
    }
    return op2(b, "Add", path[0] ? path : "model", "residual", x, f);
}

static const char *emit_fake_quant(ox *b, const bg_module *m, const char *pfx, const char *x, shp *s) {
    return act_quant(b, pfx, x, s, bg_qlayer_input_state(m));
}
static const char *emit_identity(ox *b, const bg_module *m, const char *pfx, const char *x, shp *s) {
    (void)b, (void)m, (void)pfx, (void)s;
    return x;   // Dropout: the identity in eval mode
}
static const char *emit_relu(ox *b, const bg_module *m, const char *pfx, const char *x, shp *s) {
    (void)m, (void)s;
    return op1(b, "Relu", pfx, "relu", x);
}
static const char *emit_tanh(ox *b, const bg_module *m, const char *pfx, const char *x, shp *s) {
    (void)m, (void)s;
    return op1(b, "Tanh", pfx, "tanh", x);
}
static const char *emit_sigmoid(ox *b, const bg_module *m, const char *pfx, const char *x, shp *s) {
    (void)m, (void)s;
    return op1(b, "Sigmoid", pfx, "sigmoid", x);
}
static const char *emit_silu(ox *b, const bg_module *m, const char *pfx, const char *x, shp *s) {
    (void)m, (void)s;
    return op2(b, "Mul", pfx, "silu", x, op1(b, "Sigmoid", pfx, "sigmoid", x));
}

/* The built-in float layer's hyperparameters (every kind below has them). */
static bool hparams(ox *b, const bg_module *m, bg_layer_hparams *hp) {
    if (bg_layer_hparams_get(m, hp) == BG_OK) return true;
    b->err = BG_ERR_STATE;
    return false;
}

static const char *emit_leaky(ox *b, const bg_module *m, const char *pfx, const char *x, shp *s) {
    (void)s;
    bg_layer_hparams hp;
    if (!hparams(b, m, &hp)) return NULL;
    Onnx__NodeProto *nd = ox_node(b, "LeakyRelu", pfx, "leaky_relu", 1, (const char *[]){x});
    attr_f(b, nd, "alpha", hp.slope);
    return out_of(nd);
}

static const char *emit_gelu(ox *b, const bg_module *m, const char *pfx, const char *x, shp *s) {
    (void)s;
    bg_layer_hparams hp;
    if (!hparams(b, m, &hp)) return NULL;
    const char *inner;
    if (hp.tanh_approx) {   // tanh(sqrt(2/pi) * (x + 0.044715 x^3))
        const char *x3 = op2(b, "Mul", pfx, "x3", op2(b, "Mul", pfx, "x2", x, x), x);
        const char *t = op2(b, "Add", pfx, "cubic", x, op2(b, "Mul", pfx, "cubic_term", x3, ox_f32(b, pfx, "c", 0.044715f)));
        inner = op1(b, "Tanh", pfx, "tanh", op2(b, "Mul", pfx, "tanh_arg", t, ox_f32(b, pfx, "k", 0.7978845608028654f)));
    } else {   // erf(x / sqrt(2))
        inner = op1(b, "Erf", pfx, "erf", op2(b, "Mul", pfx, "erf_arg", x, ox_f32(b, pfx, "k", 0.7071067811865476f)));
    }
    const char *g = op2(b, "Add", pfx, "one_plus", inner, ox_f32(b, pfx, "one", 1.0f));
    return op2(b, "Mul", pfx, "gelu", op2(b, "Mul", pfx, "half_x", x, ox_f32(b, pfx, "half", 0.5f)), g);
}

static const char *emit_flatten(ox *b, const bg_module *m, const char *pfx, const char *x, shp *s) {
    (void)m;
    Onnx__NodeProto *nd = ox_node(b, "Flatten", pfx, "flatten", 1, (const char *[]){x});
    attr_i(b, nd, "axis", 1);
    int64_t f = 1;
    for (int i = 1; i < s->ndim; i++) f *= s->d[i];
    s->ndim = 2, s->d[1] = f;
    return out_of(nd);
}

static const char *emit_pool(ox *b, const bg_module *m, const char *pfx, const char *x, shp *s) {
    bg_layer_hparams hp;
    if (!hparams(b, m, &hp)) return NULL;
    return pool(b, pfx, x, s, bg_module_type_of(m) == &bg_max_pool2d_type, hp.kernel, hp.stride, hp.padding);
}

static const char *emit_rmsnorm(ox *b, const bg_module *m, const char *pfx, const char *x, shp *s) {
    bg_layer_hparams hp;
    if (!hparams(b, m, &hp)) return NULL;
    if (s->d[s->ndim - 1] != hp.in) {
        ox_fail(b, BG_ERR_SHAPE, "layer %s normalises %lld features, the input has %lld", pfx, (long long)hp.in,
                (long long)s->d[s->ndim - 1]);
        return NULL;
    }
    return rmsnorm(b, pfx, x, hp.eps, bg_module_find_param(m, "weight"));
}

static const char *emit_linear(ox *b, const bg_module *m, const char *pfx, const char *x, shp *s) {
    bg_layer_hparams hp;
    if (!hparams(b, m, &hp)) return NULL;
    bg_tensor *w = bg_module_find_param(m, "weight");
    const char *wt = ox_tensor(b, ox_fmt(b, "%s.weight", pfx), DT_F32, w->ndim, w->shape, bg_f32(w));
    return linear(b, pfx, x, s, wt, bg_module_find_param(m, "bias"), hp.in, hp.out);
}

static const char *emit_conv(ox *b, const bg_module *m, const char *pfx, const char *x, shp *s) {
    bg_layer_hparams hp;
    if (!hparams(b, m, &hp)) return NULL;
    bg_tensor *w = bg_module_find_param(m, "weight");
    const char *wt = ox_tensor(b, ox_fmt(b, "%s.weight", pfx), DT_F32, w->ndim, w->shape, bg_f32(w));
    return conv(b, pfx, x, s, wt, w, bg_module_find_param(m, "bias"), &hp.conv);
}

/* The kinds with an ONNX form, keyed by the registered type. */
static const struct {
    const bg_module_type *type;
    emit_fn emit;
} onnx_forms[] = {
    {&bg_residual_type, emit_residual}, {&bg_qlinear_type, emit_qlayer},   {&bg_bitlinear_type, emit_qlayer},
    {&bg_qconv2d_type, emit_qlayer},    {&bg_fake_quant_type, emit_fake_quant}, {&bg_dropout_type, emit_identity},
    {&bg_relu_type, emit_relu},         {&bg_tanh_type, emit_tanh},       {&bg_sigmoid_type, emit_sigmoid},
    {&bg_silu_type, emit_silu},         {&bg_leaky_relu_type, emit_leaky}, {&bg_gelu_type, emit_gelu},
    {&bg_flatten_type, emit_flatten},   {&bg_max_pool2d_type, emit_pool}, {&bg_avg_pool2d_type, emit_pool},
    {&bg_rmsnorm_type, emit_rmsnorm},   {&bg_linear_type, emit_linear},   {&bg_conv2d_type, emit_conv},
};

static const char *emit(ox *b, const bg_module *m, const char *path, const char *x, shp *s) {
    if (b->err || !x) return NULL;
    const bg_module_type *t = bg_module_type_of(m);
    if (t == &bg_sequential_type) return emit_children(b, m, path, x, s);
    const char *pfx = path[0] ? path : "model";
    for (size_t i = 0; i < sizeof onnx_forms / sizeof onnx_forms[0]; i++)
        if (onnx_forms[i].type == t) return onnx_forms[i].emit(b, m, t == &bg_residual_type ? path : pfx, x, s);
    ox_fail(b, BG_ERR_UNSUPPORTED, "layer %s: %s has no ONNX form here", pfx, t->kind);
    return NULL;
}

// ---------------------------------------------------------------------------
// the model and the file

static Onnx__ValueInfoProto *value_info(ox *b, const char *name, const shp *s) {
    Onnx__ValueInfoProto *vi = ox_alloc(b, sizeof *vi);
    Onnx__TypeProto *tp = ox_alloc(b, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = ox_alloc(b, sizeof *tt);
    Onnx__TensorShapeProto *sp = ox_alloc(b, sizeof *sp);
    Onnx__TensorShapeProto__Dimension **dims = ox_alloc(b, sizeof *dims * (size_t)s->ndim);
    if (!vi || !tp || !tt || !sp || !dims) return NULL;
    onnx__value_info_proto__init(vi);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sp);
    for (int i = 0; i < s->ndim; i++) {
        Onnx__TensorShapeProto__Dimension *d = ox_alloc(b, sizeof *d);
        if (!d) return NULL;
        onnx__tensor_shape_proto__dimension__init(d);
        if (i == 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = ox_fmt(b, "N");
        } else {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = s->d[i];
        }
        dims[i] = d;
    }
    sp->n_dim = (size_t)s->ndim, sp->dim = dims;
    tt->has_elem_type = 1, tt->elem_type = DT_F32, tt->shape = sp;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE, tp->tensor_type = tt;
    vi->name = ox_fmt(b, "%s", name), vi->type = tp;
    return vi;
}

/* Writes len bytes to path atomically (format/format.h: bg_atomic_begin):
 * path.tmp-XXXXXX, fsync, rename; a path that is not a regular file is
 * refused. */
static bg_status write_atomic(const char *path, const uint8_t *data, size_t len) {
    bg_atomic_file af;
    bg_status s = bg_atomic_begin(&af, "onnx_export", path);
    if (s != BG_OK) return s;
    return bg_atomic_commit(&af, fwrite(data, 1, len, af.f) == len);
}

static void ox_free(ox *b) {
    for (size_t i = 0; i < b->n_mem; i++) free(b->mem[i]);
    free(b->mem);
    free(b->nodes);
    free(b->inits);
    free(b->props);
    bg_ctx_free(b->ctx);
}

bg_status bg_export_onnx(const bg_module *model, const char *path, int ndim, const int64_t *input_shape) {
    if (!model || !path || !input_shape)
        return bg_set_error(BG_ERR_ARG, "onnx_export: model, path or input_shape is NULL");
    if (ndim < 2 || ndim > MAX_DIMS)
        return bg_set_error(BG_ERR_ARG, "onnx_export: the input needs 2..%d dims (batch first), got %d", MAX_DIMS, ndim);
    shp s = {.ndim = ndim};
    for (int i = 1; i < ndim; i++) {
        if (input_shape[i] <= 0)
            return bg_set_error(BG_ERR_ARG, "onnx_export: input dim %d must be positive, got %lld", i,
                                (long long)input_shape[i]);
        s.d[i] = input_shape[i];
    }
    s.d[0] = -1;
    ox b = {.ctx = bg_ctx_new(0)};
    if (!b.ctx) return bg_set_error(BG_ERR_NOMEM, "onnx_export: out of memory");
    bool grad = bg_set_grad_enabled(b.ctx, false);
    (void)grad;

    const shp in_shape = s;
    const char *y = emit(&b, model, "", "input", &s);
    if (y && !b.err) op1(&b, "Identity", "output", "identity", y);
    bg_status st = b.err;
    uint8_t *buf = NULL;
    if (!st) {
        // rename the Identity's output to "logits"
        b.nodes[b.n_nodes - 1]->output[0] = ox_fmt(&b, "logits");
        Onnx__GraphProto *g = ox_alloc(&b, sizeof *g);
        Onnx__ValueInfoProto **gin = ox_alloc(&b, sizeof *gin), **gout = ox_alloc(&b, sizeof *gout);
        Onnx__OperatorSetIdProto *opset = ox_alloc(&b, sizeof *opset), **opsets = ox_alloc(&b, sizeof *opsets);
        Onnx__ModelProto *mp = ox_alloc(&b, sizeof *mp);
        char desc[256];
        bg_module_describe(model, desc, sizeof desc);
        if (g && gin && gout && opset && opsets && mp) {
            onnx__graph_proto__init(g);
            onnx__operator_set_id_proto__init(opset);
            onnx__model_proto__init(mp);
            gin[0] = value_info(&b, "input", &in_shape);
            gout[0] = value_info(&b, "logits", &s);
            g->name = ox_fmt(&b, "bitgrad");
            g->n_node = b.n_nodes, g->node = b.nodes;
            g->n_initializer = b.n_inits, g->initializer = b.inits;
            g->n_input = 1, g->input = gin;
            g->n_output = 1, g->output = gout;
            opset->domain = ox_fmt(&b, "%s", "");
            opset->has_version = 1, opset->version = OPSET;
            opsets[0] = opset;
            mp->has_ir_version = 1, mp->ir_version = IR_VERSION;
            mp->n_opset_import = 1, mp->opset_import = opsets;
            mp->producer_name = ox_fmt(&b, "bitgrad");
            mp->producer_version = ox_fmt(&b, "0.1");
            mp->doc_string = ox_fmt(&b, "%s, eval quant mode, int8 QDQ", desc);
            mp->graph = g;
            mp->n_metadata_props = b.n_props, mp->metadata_props = b.props;
        }
        st = b.err;
        if (!st && (!gin[0] || !gout[0])) st = BG_ERR_NOMEM;
        if (!st) {
            size_t len = onnx__model_proto__get_packed_size(mp);
            buf = malloc(len ? len : 1);
            if (!buf) {
                st = bg_set_error(BG_ERR_NOMEM, "onnx_export: out of memory (%zu bytes)", len);
            } else {
                size_t packed = onnx__model_proto__pack(mp, buf);
                st = packed == len ? write_atomic(path, buf, len)
                                   : bg_set_error(BG_ERR_FORMAT, "onnx_export: packed %zu bytes, expected %zu", packed, len);
            }
        }
    }
    free(buf);
    ox_free(&b);
    return st;
}

#endif /* BG_WITH_ONNX */
