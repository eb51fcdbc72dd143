/* infer.c — the inference runtime: loads an export (io/export.c,
 * doc/export-format.md) into per-layer plans with every buffer allocated
 * once, and runs them on the kernels of kernels/kernels.h (integer matmuls,
 * quantize_rows, RMSNorm, f32 gemm, conv, pooling, activations). No tape, no
 * arena. Calls kernels/, tensor/ (errors, aligned memory) and io/ (the
 * safetensors reader). */
#include <jansson.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer/infer.h"
#include "infer/infer_internal.h"
#include "kernels/kernels.h"

/* Longest layer name in an export, NUL included (the training side's
 * BG_PARAM_NAME_MAX). */
#define LAYER_NAME_MAX 128

#define OP "infer_load"
#define DEFAULT_MAX_BATCH 256
#define BITNET_EPS 1e-5f   /* BitNet's clamp of the per-token absmax */

typedef enum lkind {
    L_LINEAR, L_CONV, L_RELU, L_LEAKY, L_GELU, L_GELU_TANH, L_SILU, L_TANH, L_SIGMOID,
    L_FLATTEN, L_IDENTITY, L_MAXPOOL, L_AVGPOOL, L_LAYERNORM, L_RMSNORM,
} lkind;

static const struct { const char *name; lkind kind; } kinds[] = {
    {"linear", L_LINEAR},   {"conv2d", L_CONV},        {"relu", L_RELU},         {"leaky_relu", L_LEAKY},
    {"gelu", L_GELU},       {"gelu_tanh", L_GELU_TANH}, {"silu", L_SILU},         {"tanh", L_TANH},
    {"sigmoid", L_SIGMOID}, {"flatten", L_FLATTEN},    {"identity", L_IDENTITY}, {"max_pool2d", L_MAXPOOL},
    {"avg_pool2d", L_AVGPOOL}, {"layernorm", L_LAYERNORM}, {"rmsnorm", L_RMSNORM},
};

typedef enum amode { A_NONE = 0, A_TOKEN, A_STATIC } amode;
typedef enum wpath { P_F32 = 0, P_TERNARY, P_S8, P_S8_GROUPS } wpath;

typedef struct sparse_fix {   /* a weight -128 stored as -127: acc[:, n] -= x[:, k] */
    int32_t n, k;
} sparse_fix;

typedef struct layer {
    lkind kind;
    char name[LAYER_NAME_MAX];
    char kind_name[16];
    int in_ndim, out_ndim;
    int64_t in_shape[3], out_shape[3], in_numel, out_numel;

    // Linear / Conv2d
    int64_t N, K, kp;             /* outputs, inputs per output, padded K */
    int w_ndim;                   /* the weight's logical shape: [N, K] or [out, in/groups, kh, kw] */
    int64_t w_shape[4];
    wpath path;
    uint8_t *wt2;                 /* P_TERNARY: packed [N, kp/4] */
    int8_t *w8;                   /* P_S8: [N, kp]; P_S8_GROUPS: [ng, N, gp] */
    int64_t G, ng, gp;            /* P_S8_GROUPS: group size, groups per row, padded group */
    float *wf;                    /* P_F32: dequantized [N, K] */
    float *wscale;                /* int paths: per output [N] (groups: [N, ng]) */
    int32_t *rowsum;              /* int paths: sum_k w[n,k] (for the input zero point; groups: [N, ng]) */
    sparse_fix *fixes;
    int64_t n_fixes;
    float *bias;                  /* [N] or NULL */
    bool norm;                    /* RMSNorm (no gain) before the input quantizer */
    float norm_eps;
    amode act;
    int32_t qmin, qmax;           /* the spec's code range */
    int32_t iq_lo, iq_hi, iz;     /* int path static: shifted range and zero point */
    float *ascale, *azp;          /* static: [C]; azp NULL = 0 */
    int64_t n_ascale;
    bg_conv2d_shape cs;
    bg_pool2d_shape ps;
    float slope;
} layer;

struct bg_infer_model {
    layer *layers;
    int n_layers;
    int64_t in_features, out_size, max_batch;
    bool use_dnnl;
    // buffers, sized for max_batch at load
    float *buf[2], *tmp;
    int8_t *q;
    int8_t *qg;        /* P_S8_GROUPS: the codes regrouped [ng, M, gp] */
    int32_t *acc, *argmax;
    float *rowscale, *rstd;
    float *tokscale;   /* per-token scales of the f32 path (rows <= max_batch * max_feat) */
};

// ---------------------------------------------------------------------------
// load helpers

typedef struct loader {
    const char *path;
    const char *lname;
    bg_safetensors *st;
    bool *used;        /* per tensor of the file: read by some layer */
    int n_tensors;
} loader;

static bg_status ferr(const loader *ld, const char *fmt, ...) BG_PRINTF(2, 3);
static bg_status ferr(const loader *ld, const char *fmt, ...) {
    char msg[BG_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ld->lname) return bg_set_error(BG_ERR_FORMAT, OP ": %s: layer %s: %s", ld->path, ld->lname, msg);
    return bg_set_error(BG_ERR_FORMAT, OP ": %s: %s", ld->path, msg);
}

static bg_status nomem(const loader *ld) { return bg_set_error(BG_ERR_NOMEM, OP ": %s: out of memory", ld->path); }

/* Tensor "<layer>.<suffix>" with exactly this dtype and shape, marked as read. */
static bg_status tensor_of(const loader *ld, const char *suffix, bg_dtype dt, int ndim, const int64_t *shape,
                           bg_tensor *v) {
    char name[LAYER_NAME_MAX + 32], why[2 * LAYER_NAME_MAX + 256];
    snprintf(name, sizeof name, "%s.%s", ld->lname, suffix);
    if (!bg_infer_find_tensor(ld->st, ld->used, name, v)) return ferr(ld, "tensor %s is missing", name);
    return bg_infer_tensor_fits(v, name, dt, ndim, shape, why, sizeof why) ? BG_OK : ferr(ld, "%s", why);
}

static bool get_int(json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) return false;
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) return false;
    *out = (int64_t)x;
    return true;
}

static bool get_pair(json_t *o, const char *key, int64_t lo, int64_t hi, int64_t out[2]) {
    json_t *v = json_object_get(o, key);
    if (!json_is_array(v) || json_array_size(v) != 2) return false;
    for (int i = 0; i < 2; i++) {
        json_t *e = json_array_get(v, (size_t)i);
        if (!json_is_integer(e) || json_integer_value(e) < lo || json_integer_value(e) > hi) return false;
        out[i] = (int64_t)json_integer_value(e);
    }
    return true;
}

/* A JSON number that fits a float (converting a larger double is undefined). */
static bool is_float(json_t *v) { return json_is_number(v) && fabs(json_number_value(v)) <= FLT_MAX; }

static const char *get_str(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* A JSON boolean o[key]; false when absent or not a boolean. */
static bool get_bool(json_t *o, const char *key, bool *out) {
    json_t *v = json_object_get(o, key);
    if (!json_is_boolean(v)) return false;
    *out = json_is_true(v);
    return true;
}

/* The JSON value v as compact text for a message ("missing" when NULL),
 * cut to fit buf. */
static const char *json_text(json_t *v, char *buf, size_t len) {
    char *t = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    snprintf(buf, len, "%s", t ? t : v ? "?" : "missing");
    if (t && strlen(t) >= len && len > 4) memcpy(buf + len - 4, "...", 4);
    free(t);
    return buf;
}

/* v is a JSON array of exactly these ndim integers. */
static bool json_dims_are(json_t *v, int ndim, const int64_t *want) {
    if (!json_is_array(v) || json_array_size(v) != (size_t)ndim) return false;
    for (int i = 0; i < ndim; i++) {
        json_t *d = json_array_get(v, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) != want[i]) return false;
    }
    return true;
}

/* A float tensor the runtime computes with as it is (f32 weights, biases,
 * norm gains): finite, |v| <= BG_EXPORT_VALUE_MAX (format/format.h). */
static bg_status check_values(const loader *ld, const char *what, const float *v, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!(fabsf(v[i]) <= BG_EXPORT_VALUE_MAX))
            return isfinite(v[i]) ? ferr(ld, "%s holds %g at index %lld, beyond the export's limit %g", what,
                                         (double)v[i], (long long)i, (double)BG_EXPORT_VALUE_MAX)
                                  : ferr(ld, "%s has a NaN or Inf at index %lld (value %g)", what, (long long)i,
                                         (double)v[i]);
    return BG_OK;
}

/* Scales in [BG_EXPORT_SCALE_MIN, BG_EXPORT_SCALE_MAX]: finite, positive,
 * neither subnormal nor so large that 1/s or s_x * s_w leaves the normal
 * floats. */
static bg_status check_scales(const loader *ld, const char *what, const float *s, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!(s[i] >= BG_EXPORT_SCALE_MIN && s[i] <= BG_EXPORT_SCALE_MAX))
            return ferr(ld, "%s %lld is %g, outside [%g, %g]", what, (long long)i, (double)s[i],
                        (double)BG_EXPORT_SCALE_MIN, (double)BG_EXPORT_SCALE_MAX);
    return BG_OK;
}

#define BIG ((int64_t)1 << 40)
#define MAX_DIM ((int64_t)1 << 24)       /* features, channels, K */
#define MAX_WEIGHTS ((int64_t)1 << 31)   /* weights of one layer */
#define MAX_FEAT ((int64_t)1 << 22)      /* elements of one example between layers */
#define MAX_BUF ((int64_t)1 << 28)       /* elements of one activation buffer (max_batch x features) */

// ---------------------------------------------------------------------------
// weights

/* True when some code - zero point (group of G, C groups) is -128 (the
 * grouped path has no sparse correction; such layers run in f32). */
static bool has_min8(const int16_t *codes, int64_t n, const int32_t *zp, int64_t G, int64_t C) {
    for (int64_t i = 0; i < n; i++)
        if (codes[i] - (zp ? zp[(i / G) % C] : 0) == -128) return true;
    return false;
}

/* The code range each stored weight format holds. */
static const struct {
    const char *name, *what;
    int lo, hi;   /* qmin in [lo, hi_min], qmax in (qmin, hi] */
    int qmin_hi;
} wformats[] = {
    {"t2", "ternary", -1, 1, -1}, {"i4", "signed", -8, 7, -1}, {"u4", "unsigned", 0, 15, 14},
    {"i8", "signed", -128, 127, -1}, {"u8", "unsigned", 0, 255, 254},
};

/* The [outer, channels, inner] view (quant/quant.h) a weight granularity
 * gives the weight's logical shape; false (with the error set) when the
 * granularity or its axis / group size is missing or invalid. */
static bool expected_layout(const loader *ld, const layer *L, json_t *wj, const char *gran, int64_t lay[3],
                            bg_status *s) {
    const int nd = L->w_ndim;
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= L->w_shape[i];
    const int64_t last = L->w_shape[nd - 1];
    int64_t v;
    if (!strcmp(gran, "per_tensor")) {
        lay[0] = 1, lay[1] = 1, lay[2] = n;
    } else if (!strcmp(gran, "per_token")) {
        lay[0] = 1, lay[1] = n / last, lay[2] = last;
    } else if (!strcmp(gran, "per_channel")) {
        if (!get_int(wj, "axis", -nd, nd - 1, &v)) {
            *s = ferr(ld, "weight \"axis\" is missing or not in %d..%d", -nd, nd - 1);
            return false;
        }
        int a = (int)(v < 0 ? v + nd : v);
        lay[0] = 1, lay[1] = L->w_shape[a], lay[2] = 1;
        for (int i = 0; i < a; i++) lay[0] *= L->w_shape[i];
        for (int i = a + 1; i < nd; i++) lay[2] *= L->w_shape[i];
    } else if (!strcmp(gran, "per_group")) {
        if (!get_int(wj, "group_size", 1, last, &v) || last % v) {
            *s = ferr(ld, "weight \"group_size\" is missing or does not divide the last dim %lld", (long long)last);
            return false;
        }
        lay[0] = 1, lay[1] = n / v, lay[2] = v;
    } else {
        *s = ferr(ld, "weight granularity \"%s\" is not per_tensor, per_channel, per_group or per_token", gran);
        return false;
    }
    return true;
}

/* Decodes "<layer>.weight" (+ scale, zero point) of a Linear-like layer with
 * N rows of K and picks its path. */
static bg_status load_weight(loader *ld, layer *L, json_t *wj, bool force_f32) {
    const char *fmt = get_str(wj, "format");
    if (!fmt) return ferr(ld, "weight has no \"format\"");
    const int64_t N = L->N, K = L->K;
    char t1[64], t2[64], t3[64];
    json_t *jshape = json_object_get(wj, "shape");
    if (!json_dims_are(jshape, L->w_ndim, L->w_shape))
        return ferr(ld, "weight \"shape\" is %s, the layer's weight is %s", json_text(jshape, t1, sizeof t1),
                    bg_infer_shape_text(L->w_ndim, L->w_shape, t2, sizeof t2));
    if (!strcmp(fmt, "f32")) {
        bg_tensor v;
        bg_status s = tensor_of(ld, "weight", BG_DTYPE_F32, L->w_ndim, L->w_shape, &v);
        if (s != BG_OK) return s;
        char name[LAYER_NAME_MAX + 32];
        snprintf(name, sizeof name, "%s.weight", ld->lname);
        if ((s = check_values(ld, name, bg_f32(&v), N * K)) != BG_OK) return s;
        if (!(L->wf = bg_infer_zalloc(sizeof(float) * (size_t)(N * K)))) return nomem(ld);
        memcpy(L->wf, v.data, sizeof(float) * (size_t)(N * K));
        L->path = P_F32;
        return BG_OK;
    }
    int fi = -1;
    for (int i = 0; i < (int)(sizeof wformats / sizeof wformats[0]); i++)
        if (!strcmp(fmt, wformats[i].name)) fi = i;
    if (fi < 0) return ferr(ld, "unknown weight format \"%s\"", fmt);
    int64_t rows, k, qmin, qmax, lay[3];
    if (!get_int(wj, "rows", N, N, &rows) || !get_int(wj, "k", K, K, &k))
        return ferr(ld, "weight rows/k do not match the layer's [%lld,%lld]", (long long)N, (long long)K);
    if (!get_int(wj, "qmin", -128, 255, &qmin) || !get_int(wj, "qmax", qmin + 1, 255, &qmax))
        return ferr(ld, "weight qmin/qmax missing or out of range");
    if (qmin < wformats[fi].lo || qmin > wformats[fi].qmin_hi || qmax > wformats[fi].hi ||
        (fi == 0 && qmax != 1))
        return ferr(ld, "weight qmin/qmax [%lld,%lld] do not fit format \"%s\" (%s codes in [%d,%d])", (long long)qmin,
                    (long long)qmax, fmt, wformats[fi].what, wformats[fi].lo, wformats[fi].hi);
    const char *gran = get_str(wj, "granularity");
    if (!gran) return ferr(ld, "weight has no \"granularity\"");
    int64_t want[3];
    bg_status s = BG_OK;
    if (!expected_layout(ld, L, wj, gran, want, &s)) return s;
    json_t *layout = json_object_get(wj, "layout");
    if (!json_dims_are(layout, 3, want))
        return ferr(ld, "weight \"layout\" is %s, %s of %s gives %s", json_text(layout, t1, sizeof t1), gran,
                    bg_infer_shape_text(L->w_ndim, L->w_shape, t2, sizeof t2), bg_infer_shape_text(3, want, t3, sizeof t3));
    memcpy(lay, want, sizeof lay);
    bool has_zp;
    if (!get_bool(wj, "zero_point", &has_zp)) return ferr(ld, "weight \"zero_point\" must be true or false");
    const int64_t C = lay[1];
    bg_tensor ts, tz, tw = {0};
    if ((s = tensor_of(ld, "weight_scale", BG_DTYPE_F32, 1, &C, &ts)) != BG_OK) return s;
    const float *scale = bg_f32(&ts);
    if ((s = check_scales(ld, "weight scale", scale, C)) != BG_OK) return s;
    const int32_t *zp = NULL;
    if (has_zp) {
        if ((s = tensor_of(ld, "weight_zero_point", BG_DTYPE_I32, 1, &C, &tz)) != BG_OK) return s;
        zp = tz.data;
        for (int64_t c = 0; c < C; c++)
            if (zp[c] < qmin || zp[c] > qmax)
                return ferr(ld, "weight zero point %lld is %d, outside [%lld,%lld]", (long long)c, zp[c], (long long)qmin,
                            (long long)qmax);
    }

    // the stored codes: dtype and shape first (nothing is allocated for a
    // tensor the file does not hold), then decoded to int16 (-128..255)
    const bool ternary = !strcmp(fmt, "t2"), four = !strcmp(fmt, "i4") || !strcmp(fmt, "u4");
    const int64_t kp = bg_int_padded_k(K), wshape[2] = {N, ternary ? kp / 4 : four ? (K + 1) / 2 : K};
    if ((s = tensor_of(ld, "weight", !strcmp(fmt, "i8") ? BG_DTYPE_I8 : BG_DTYPE_U8, 2, wshape, &tw)) != BG_OK) return s;
    int16_t *codes = malloc(sizeof(int16_t) * (size_t)(N * K));
    int8_t *tmp8 = malloc((size_t)(N * K));
    if (!codes || !tmp8) {
        free(codes);
        free(tmp8);
        return nomem(ld);
    }
    const uint8_t *b = tw.data;
    if (ternary) {
        for (int64_t r = 0; r < N && s == BG_OK; r++)
            for (int64_t j = 0; j < kp / 4 && s == BG_OK; j++) {
                uint8_t byte = b[r * (kp / 4) + j];
                for (int f = 0; f < 4; f++) {
                    int code = (byte >> (2 * f)) & 3;
                    int64_t e = (j / 32) * 128 + (j % 32) + 32 * f;
                    if (code == 3 || (e >= K && code != 1)) {
                        s = ferr(ld, "weight row %lld: packed byte %lld holds %s", (long long)r, (long long)j,
                                 code == 3 ? "the invalid code 3" : "a non-zero padding weight");
                        break;
                    }
                }
            }
        if (s == BG_OK) {
            bg_ternary_unpack(tmp8, b, N, K);
            for (int64_t i = 0; i < N * K; i++) codes[i] = tmp8[i];
        }
    } else if (four) {
        bg_export_unpack4(tmp8, b, N, K, fmt[0] == 'i');
        for (int64_t i = 0; i < N * K; i++) codes[i] = fmt[0] == 'i' ? tmp8[i] : (int16_t)(uint8_t)tmp8[i];
    } else {
        for (int64_t i = 0; i < N * K; i++) codes[i] = fmt[0] == 'i' ? ((const int8_t *)b)[i] : b[i];
    }
    for (int64_t i = 0; s == BG_OK && i < N * K; i++)
        if (codes[i] < qmin || codes[i] > qmax)
            s = ferr(ld, "weight code %lld is %d, outside [%lld,%lld]", (long long)i, codes[i], (long long)qmin,
                     (long long)qmax);
    free(tmp8);
    if (s != BG_OK) {
        free(codes);
        return s;
    }

    // Integer path: one scale per output row (per-tensor or per-output-channel)
    // and w - z within int8; K small enough for exact int32 sums.
    bool per_row = (C == 1) || (lay[0] == 1 && C == N && lay[2] == K);
    const int64_t G = lay[2];
    // (groups padded to gp = 128k: only worth it when that at most doubles the work)
    bool per_group = !per_row && lay[0] == 1 && G < K && K % G == 0 && C == N * (K / G) &&
                     bg_int_padded_k(G) <= 2 * G;
    bool fits = K <= 65536;   // |sum (x - z) w| <= 255 * 128 * K < 2^31
    for (int64_t i = 0; fits && i < N * K; i++) {
        int64_t c = (i / lay[2]) % C;
        int32_t w = codes[i] - (zp ? zp[c] : 0);
        fits = w >= -128 && w <= 127;
    }
    if (per_row && fits && !force_f32) {
        L->wscale = bg_infer_zalloc(sizeof(float) * (size_t)N);
        L->rowsum = bg_infer_zalloc(sizeof(int32_t) * (size_t)N);
        if (!L->wscale || !L->rowsum) goto oom;
        int64_t n_fix = 0;
        for (int64_t n = 0; n < N; n++) {
            int64_t c = C == 1 ? 0 : n;
            L->wscale[n] = scale[c];
            int32_t sum = 0;
            for (int64_t j = 0; j < K; j++) {
                int32_t w = codes[n * K + j] - (zp ? zp[c] : 0);
                sum += w;
                n_fix += w == -128;
            }
            L->rowsum[n] = sum;
        }
        if (ternary && !zp) {
            L->path = P_TERNARY;
            if (!(L->wt2 = bg_infer_zalloc((size_t)(N * kp / 4)))) goto oom;
            memcpy(L->wt2, tw.data, (size_t)(N * kp / 4));
        } else {
            L->path = P_S8;
            if (!(L->w8 = bg_infer_zalloc((size_t)(N * kp)))) goto oom;
            if (n_fix && !(L->fixes = malloc(sizeof(sparse_fix) * (size_t)n_fix))) goto oom;
            for (int64_t n = 0; n < N; n++) {
                int64_t c = C == 1 ? 0 : n;
                for (int64_t j = 0; j < K; j++) {
                    int32_t w = codes[n * K + j] - (zp ? zp[c] : 0);
                    if (w == -128) {
                        L->fixes[L->n_fixes++] = (sparse_fix){(int32_t)n, (int32_t)j};
                        w = -127;
                    }
                    L->w8[n * kp + j] = (int8_t)w;
                }
            }
        }
    } else if (per_group && fits && !force_f32 && !has_min8(codes, N * K, zp, G, C)) {
        // Per-group scales: one integer product per group of G inputs (rows
        // padded to gp), each rescaled by its group's scale and summed in f32.
        const int64_t ng = K / G, gp = bg_int_padded_k(G);
        L->path = P_S8_GROUPS;
        L->G = G, L->ng = ng, L->gp = gp;
        L->wscale = bg_infer_zalloc(sizeof(float) * (size_t)C);
        L->rowsum = bg_infer_zalloc(sizeof(int32_t) * (size_t)C);
        L->w8 = bg_infer_zalloc((size_t)(ng * N * gp));
        if (!L->wscale || !L->rowsum || !L->w8) goto oom;
        memcpy(L->wscale, scale, sizeof(float) * (size_t)C);
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < ng; j++) {
                const int64_t c = n * ng + j;
                int32_t sum = 0;
                for (int64_t i = 0; i < G; i++) {
                    int32_t w = codes[n * K + j * G + i] - (zp ? zp[c] : 0);
                    sum += w;
                    L->w8[(j * N + n) * gp + i] = (int8_t)w;
                }
                L->rowsum[c] = sum;
            }
    } else {
        L->path = P_F32;
        if (!(L->wf = bg_infer_zalloc(sizeof(float) * (size_t)(N * K)))) goto oom;
        // element (o, c, i) of the [outer, channels, inner] view uses scale[c]
        for (int64_t i = 0; i < N * K; i++) {
            int64_t c = (i / lay[2]) % C;
            L->wf[i] = (float)(codes[i] - (zp ? zp[c] : 0)) * scale[c];
        }
    }
    free(codes);
    return BG_OK;
oom:
    free(codes);
    return nomem(ld);
}

/* The input quantizer of a Linear-like layer with C input channels. */
static bg_status load_input(loader *ld, layer *L, json_t *aj, int64_t C, bool conv) {
    if (!aj) return ferr(ld, "no \"input_quant\" (null or an object)");
    if (json_is_null(aj)) return BG_OK;
    const char *mode = get_str(aj, "mode");
    int64_t qmin, qmax;
    if (!mode) return ferr(ld, "input_quant has no \"mode\"");
    if (!get_int(aj, "qmin", -128, 255, &qmin) || !get_int(aj, "qmax", qmin + 1, 255, &qmax))
        return ferr(ld, "input_quant qmin/qmax missing or out of range");
    if (qmin < 0 && qmax > 127)   // the integer paths hold the codes in int8 (unsigned ones shifted by -128)
        return ferr(ld, "input_quant qmin/qmax [%lld,%lld] are neither int8 nor uint8 codes", (long long)qmin,
                    (long long)qmax);
    L->qmin = (int32_t)qmin, L->qmax = (int32_t)qmax;
    if (!strcmp(mode, "per_token_absmax")) {
        if (qmax <= 0 || qmin >= 0) return ferr(ld, "per_token_absmax needs a signed range, got [%lld,%lld]", (long long)qmin, (long long)qmax);
        L->act = A_TOKEN;
        L->iq_lo = L->qmin, L->iq_hi = L->qmax, L->iz = 0;
        return BG_OK;
    }
    if (strcmp(mode, "static") != 0) return ferr(ld, "unknown input_quant mode \"%s\"", mode);
    const char *g = get_str(aj, "granularity");
    if (!g || (strcmp(g, "per_tensor") && strcmp(g, "per_channel")))
        return ferr(ld, "input_quant granularity must be per_tensor or per_channel");
    int64_t P = strcmp(g, "per_tensor") ? C : 1, axis;
    // per_channel: the features of a linear input [n, in] (axis -1 or 1), the
    // channels of a conv input [n, C, H, W] (axis 1 or -3)
    if (P != 1 || !strcmp(g, "per_channel")) {
        if (!get_int(aj, "axis", -4, 3, &axis) || (conv ? axis != 1 && axis != -3 : axis != 1 && axis != -1))
            return ferr(ld, "input_quant per_channel \"axis\" must be %s", conv ? "1 (the channels)" : "-1 (the features)");
    }
    bool has_zp;
    if (!get_bool(aj, "zero_point", &has_zp)) return ferr(ld, "input_quant \"zero_point\" must be true or false");
    bg_tensor ts, tz;
    bg_status s = tensor_of(ld, "input_scale", BG_DTYPE_F32, 1, &P, &ts);
    if (s != BG_OK) return s;
    L->act = A_STATIC;
    L->n_ascale = P;
    if (!(L->ascale = bg_infer_zalloc(sizeof(float) * (size_t)P))) return nomem(ld);
    memcpy(L->ascale, ts.data, sizeof(float) * (size_t)P);
    if ((s = check_scales(ld, "input scale", L->ascale, P)) != BG_OK) return s;
    if (has_zp) {
        if ((s = tensor_of(ld, "input_zero_point", BG_DTYPE_I32, 1, &P, &tz)) != BG_OK) return s;
        if (!(L->azp = bg_infer_zalloc(sizeof(float) * (size_t)P))) return nomem(ld);
        for (int64_t c = 0; c < P; c++) {
            int32_t z = ((const int32_t *)tz.data)[c];
            if (z < qmin || z > qmax) return ferr(ld, "input zero point %lld is %d, outside [%lld,%lld]", (long long)c, z, (long long)qmin, (long long)qmax);
            L->azp[c] = (float)z;
        }
    }
    // Unsigned codes are shifted by -128 into int8: (code - z) is unchanged.
    int32_t shift = qmax > 127 ? 128 : 0;
    L->iq_lo = (int32_t)qmin - shift, L->iq_hi = (int32_t)qmax - shift;
    L->iz = (L->azp ? (int32_t)L->azp[0] : 0) - shift;
    return BG_OK;
}

static bg_status load_matmul(loader *ld, layer *L, json_t *lj, bool conv, bool force_f32) {
    int64_t in, out;
    if (!get_int(lj, "in", 1, MAX_DIM, &in) || !get_int(lj, "out", 1, MAX_DIM, &out))
        return ferr(ld, "\"in\"/\"out\" missing or not in 1..%lld", (long long)MAX_DIM);
    L->N = out;
    if (conv) {
        int64_t kern[2], stride[2], pad[2], dil[2], groups;
        if (!get_pair(lj, "kernel", 1, 1 << 16, kern) || !get_pair(lj, "stride", 1, 1 << 16, stride) ||
            !get_pair(lj, "padding", 0, 1 << 16, pad) || !get_pair(lj, "dilation", 1, 1 << 16, dil) ||
            !get_int(lj, "groups", 1, in, &groups) || in % groups || out % groups)
            return ferr(ld, "conv2d options missing or invalid");
        if (L->in_ndim != 3 || L->in_shape[0] != in) {
            char a[64];
            return ferr(ld, "conv2d expects [%lld,H,W], the previous layer gives %s", (long long)in,
                        bg_infer_shape_text(L->in_ndim, L->in_shape, a, sizeof a));
        }
        L->cs = (bg_conv2d_shape){.n = 1, .c = in, .h = L->in_shape[1], .w = L->in_shape[2], .oc = out, .kh = kern[0],
                                  .kw = kern[1], .stride_h = stride[0], .stride_w = stride[1], .pad_h = pad[0],
                                  .pad_w = pad[1], .dil_h = dil[0], .dil_w = dil[1], .groups = groups};
        if (!bg_conv2d_shape_infer(&L->cs)) return ferr(ld, "conv2d output would be empty");
        if (in / groups * kern[0] * kern[1] > MAX_DIM) return ferr(ld, "conv2d kernel is implausibly large");
        L->K = in / groups * kern[0] * kern[1];
        L->w_ndim = 4;
        L->w_shape[0] = out, L->w_shape[1] = in / groups, L->w_shape[2] = kern[0], L->w_shape[3] = kern[1];
        L->out_ndim = 3;
        L->out_shape[0] = out, L->out_shape[1] = L->cs.oh, L->out_shape[2] = L->cs.ow;
        force_f32 = true;   // convolutions run in f32 (infer.h)
    } else {
        if (L->in_ndim != 1 || L->in_shape[0] != in) {
            char a[64];
            return ferr(ld, "linear expects [%lld], the previous layer gives %s", (long long)in,
                        bg_infer_shape_text(L->in_ndim, L->in_shape, a, sizeof a));
        }
        L->K = in;
        L->w_ndim = 2;
        L->w_shape[0] = out, L->w_shape[1] = in;
        L->out_ndim = 1;
        L->out_shape[0] = out;
    }
    if (L->N * L->K > MAX_WEIGHTS)
        return ferr(ld, "%lld x %lld weights is implausibly many", (long long)L->N, (long long)L->K);
    L->kp = bg_int_padded_k(L->K);
    json_t *norm = json_object_get(lj, "norm");
    if (norm && !json_is_null(norm)) {
        if (conv) return ferr(ld, "conv2d takes no \"norm\"");
        json_t *eps = json_object_get(norm, "eps");
        const char *nk = get_str(norm, "kind");
        if (!nk || strcmp(nk, "rmsnorm") || !is_float(eps) || !(json_number_value(eps) > 0))
            return ferr(ld, "\"norm\" must be {\"kind\":\"rmsnorm\",\"eps\":>0}");
        L->norm = true;
        L->norm_eps = (float)json_number_value(eps);
    }
    json_t *wj = json_object_get(lj, "weight");
    if (!json_is_object(wj)) return ferr(ld, "no \"weight\" object");
    bool has_bias;
    if (!get_bool(lj, "bias", &has_bias)) return ferr(ld, "\"bias\" must be true or false");
    bg_status s = load_input(ld, L, json_object_get(lj, "input_quant"), in, conv);
    if (s != BG_OK) return s;
    // int paths need integer activations with one scale per row
    bool int_ok = !force_f32 && (L->act == A_TOKEN || (L->act == A_STATIC && L->n_ascale == 1));
    if ((s = load_weight(ld, L, wj, !int_ok)) != BG_OK) return s;
    if (has_bias) {
        bg_tensor tb;
        char name[LAYER_NAME_MAX + 32];
        snprintf(name, sizeof name, "%s.bias", ld->lname);
        if ((s = tensor_of(ld, "bias", BG_DTYPE_F32, 1, &out, &tb)) != BG_OK ||
            (s = check_values(ld, name, bg_f32(&tb), out)) != BG_OK)
            return s;
        if (!(L->bias = bg_infer_zalloc(sizeof(float) * (size_t)out))) return nomem(ld);
        memcpy(L->bias, tb.data, sizeof(float) * (size_t)out);
    }
    return BG_OK;
}

static bg_status load_layer(loader *ld, layer *L, json_t *lj, bool force_f32) {
    const char *k = get_str(lj, "kind");
    if (!k) return ferr(ld, "no \"kind\"");
    bool found = false;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strcmp(k, kinds[i].name)) L->kind = kinds[i].kind, found = true;
    if (!found) return ferr(ld, "unknown kind \"%s\"", k);
    snprintf(L->kind_name, sizeof L->kind_name, "%s", k);
    L->out_ndim = L->in_ndim;
    memcpy(L->out_shape, L->in_shape, sizeof L->out_shape);
    switch (L->kind) {
    case L_LINEAR: return load_matmul(ld, L, lj, false, force_f32);
    case L_CONV: return load_matmul(ld, L, lj, true, force_f32);
    case L_FLATTEN:
        L->out_ndim = 1;
        L->out_shape[0] = L->in_numel;
        return BG_OK;
    case L_LAYERNORM:
    case L_RMSNORM: {
        int64_t dim;
        json_t *eps = json_object_get(lj, "eps");
        if (!get_int(lj, "dim", 1, MAX_DIM, &dim) || !is_float(eps) || !(json_number_value(eps) >= 0))
            return ferr(ld, "%s needs \"dim\" and \"eps\" >= 0", k);
        if (L->in_shape[L->in_ndim - 1] != dim) {
            char a[64];
            return ferr(ld, "%s over %lld, the previous layer gives %s", k, (long long)dim,
                        bg_infer_shape_text(L->in_ndim, L->in_shape, a, sizeof a));
        }
        L->K = dim;
        L->norm_eps = (float)json_number_value(eps);
        bg_tensor t;
        bg_status s;
        bool has_w, has_b;
        if (!get_bool(lj, "weight", &has_w) || !get_bool(lj, "bias", &has_b))
            return ferr(ld, "%s \"weight\" and \"bias\" must be true or false", k);
        if (has_b && L->kind == L_RMSNORM) return ferr(ld, "rmsnorm has no bias (\"bias\" must be false)");
        char name[LAYER_NAME_MAX + 32];
        if (has_w) {
            snprintf(name, sizeof name, "%s.weight", ld->lname);
            if ((s = tensor_of(ld, "weight", BG_DTYPE_F32, 1, &dim, &t)) != BG_OK ||
                (s = check_values(ld, name, bg_f32(&t), dim)) != BG_OK)
                return s;
            if (!(L->wf = bg_infer_zalloc(sizeof(float) * (size_t)dim))) return nomem(ld);
            memcpy(L->wf, t.data, sizeof(float) * (size_t)dim);
        }
        if (has_b) {
            snprintf(name, sizeof name, "%s.bias", ld->lname);
            if ((s = tensor_of(ld, "bias", BG_DTYPE_F32, 1, &dim, &t)) != BG_OK ||
                (s = check_values(ld, name, bg_f32(&t), dim)) != BG_OK)
                return s;
            if (!(L->bias = bg_infer_zalloc(sizeof(float) * (size_t)dim))) return nomem(ld);
            memcpy(L->bias, t.data, sizeof(float) * (size_t)dim);
        }
        return BG_OK;
    }
    case L_LEAKY: {
        json_t *v = json_object_get(lj, "negative_slope");
        if (!is_float(v)) return ferr(ld, "leaky_relu has no \"negative_slope\"");
        L->slope = (float)json_number_value(v);
        return BG_OK;
    }
    case L_MAXPOOL:
    case L_AVGPOOL: {
        int64_t kern, stride, pad;
        if (!get_int(lj, "kernel", 1, 1 << 16, &kern) || !get_int(lj, "stride", 1, 1 << 16, &stride) ||
            !get_int(lj, "padding", 0, kern / 2, &pad))
            return ferr(ld, "pool options missing or invalid");
        if (L->in_ndim != 3) return ferr(ld, "%s expects [C,H,W]", k);
        L->ps = (bg_pool2d_shape){.n = 1, .c = L->in_shape[0], .h = L->in_shape[1], .w = L->in_shape[2], .kh = kern,
                                  .kw = kern, .stride_h = stride, .stride_w = stride, .pad_h = pad, .pad_w = pad,
                                  .dil_h = 1, .dil_w = 1};
        if (!bg_pool2d_shape_infer(&L->ps)) return ferr(ld, "%s output would be empty", k);
        L->out_shape[1] = L->ps.oh, L->out_shape[2] = L->ps.ow;
        return BG_OK;
    }
    default: return BG_OK;
    }
}

static void layer_free(layer *L) {
    bg_aligned_free(L->wt2);
    bg_aligned_free(L->w8);
    bg_aligned_free(L->wf);
    bg_aligned_free(L->wscale);
    bg_aligned_free(L->rowsum);
    bg_aligned_free(L->bias);
    bg_aligned_free(L->ascale);
    bg_aligned_free(L->azp);
    free(L->fixes);
}

void bg_infer_free(bg_infer_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_layers; i++) layer_free(&m->layers[i]);
    free(m->layers);
    bg_aligned_free(m->buf[0]);
    bg_aligned_free(m->buf[1]);
    bg_aligned_free(m->tmp);
    bg_aligned_free(m->q);
    bg_aligned_free(m->qg);
    bg_aligned_free(m->acc);
    bg_aligned_free(m->argmax);
    bg_aligned_free(m->rowscale);
    bg_aligned_free(m->rstd);
    bg_aligned_free(m->tokscale);
    free(m);
}

/* Elements of a shape, saturating above MAX_FEAT (dims are <= 2^24). */
static int64_t numel_of(int ndim, const int64_t *s) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        if ((n *= s[i]) > MAX_FEAT) return MAX_FEAT + 1;
    return n;
}

bg_status bg_infer_load(const char *path, bg_infer_model **out) { return bg_infer_load_opts(path, NULL, out); }

bg_status bg_infer_load_opts(const char *path, const bg_infer_opts *opts, bg_infer_model **out) {
    if (!out) return bg_set_error(BG_ERR_ARG, OP ": out is NULL");
    *out = NULL;
    if (!path) return bg_set_error(BG_ERR_ARG, OP ": path is NULL");
    if (opts && opts->max_batch < 0)
        return bg_set_error(BG_ERR_ARG, OP ": max_batch must be >= 0, got %lld", (long long)opts->max_batch);
    loader ld = {.path = path};
    bg_status s = bg_safetensors_open(path, &ld.st);
    if (s != BG_OK) return s;   // the reader's message names the path
    json_t *layers = NULL, *ishape = NULL;
    bg_infer_model *m = calloc(1, sizeof *m);
    if (!m) {
        s = nomem(&ld);
        goto done;
    }
    m->max_batch = opts && opts->max_batch ? opts->max_batch : DEFAULT_MAX_BATCH;
    m->use_dnnl = opts && opts->use_dnnl;
    ld.n_tensors = bg_safetensors_count(ld.st);
    if (!(ld.used = calloc((size_t)ld.n_tensors + 1, sizeof *ld.used))) {
        s = nomem(&ld);
        goto done;
    }
    char why[256];
    if (bg_infer_bad_header(ld.st, why, sizeof why)) {
        s = ferr(&ld, "%s", why);
        goto done;
    }
    if (bg_safetensors_metadata(ld.st, "lm")) {
        s = ferr(&ld, "a language model (metadata \"lm\"): load it with bg_lm_load");
        goto done;
    }
    const char *ls = bg_safetensors_metadata(ld.st, "layers"), *is = bg_safetensors_metadata(ld.st, "input_shape");
    json_error_t jerr;
    if (!ls || !(layers = json_loads(ls, 0, &jerr)) || !json_is_array(layers) || json_array_size(layers) == 0 ||
        json_array_size(layers) > 4096) {
        s = ferr(&ld, "metadata \"layers\" is missing or not a non-empty JSON array");
        goto done;
    }
    if (!is || !(ishape = json_loads(is, 0, &jerr)) || !json_is_array(ishape) ||
        (json_array_size(ishape) != 1 && json_array_size(ishape) != 3)) {
        s = ferr(&ld, "metadata \"input_shape\" is missing or not [F] / [C,H,W]");
        goto done;
    }
    int ndim = (int)json_array_size(ishape);
    int64_t shape[3];
    for (int i = 0; i < ndim; i++) {
        json_t *v = json_array_get(ishape, (size_t)i);
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > (1 << 24)) {
            s = ferr(&ld, "metadata \"input_shape\" has a bad dimension");
            goto done;
        }
        shape[i] = (int64_t)json_integer_value(v);
    }
    if (numel_of(ndim, shape) > MAX_FEAT) {
        s = ferr(&ld, "metadata \"input_shape\" is implausibly large");
        goto done;
    }
    m->n_layers = (int)json_array_size(layers);
    if (!(m->layers = calloc((size_t)m->n_layers, sizeof *m->layers))) {
        s = nomem(&ld);
        goto done;
    }
    m->in_features = numel_of(ndim, shape);
    int64_t max_feat = m->in_features, max_kp = 1, max_n = 1, max_qg = 1;
    for (int i = 0; i < m->n_layers; i++) {
        layer *L = &m->layers[i];
        json_t *lj = json_array_get(layers, (size_t)i);
        const char *nm = json_is_object(lj) ? get_str(lj, "name") : NULL;
        ld.lname = NULL;
        if (!nm || !*nm || strlen(nm) >= LAYER_NAME_MAX) {
            s = ferr(&ld, "entry %d is not an object with a \"name\" of 1 to %d characters", i, LAYER_NAME_MAX - 1);
            goto done;
        }
        for (int j = 0; j < i; j++)
            if (!strcmp(m->layers[j].name, nm)) {   // the name prefixes the layer's tensors
                s = ferr(&ld, "entries %d and %d are both named \"%s\"", j, i, nm);
                goto done;
            }
        snprintf(L->name, sizeof L->name, "%s", nm);
        ld.lname = L->name;
        L->in_ndim = ndim;
        memcpy(L->in_shape, shape, sizeof shape);
        L->in_numel = numel_of(ndim, shape);
        if ((s = load_layer(&ld, L, lj, opts && opts->force_f32)) != BG_OK) goto done;
        json_t *os = json_object_get(lj, "out_shape");
        if (!json_dims_are(os, L->out_ndim, L->out_shape)) {
            char a[64], b[64];
            s = ferr(&ld, "\"out_shape\" is %s, the layer computes %s", json_text(os, a, sizeof a),
                     bg_infer_shape_text(L->out_ndim, L->out_shape, b, sizeof b));
            goto done;
        }
        ndim = L->out_ndim;
        memcpy(shape, L->out_shape, sizeof shape);
        L->out_numel = numel_of(ndim, shape);
        if (L->out_numel > MAX_FEAT) {
            s = ferr(&ld, "output of %lld elements per example is implausible", (long long)L->out_numel);
            goto done;
        }
        max_feat = L->out_numel > max_feat ? L->out_numel : max_feat;
        if (L->kind == L_LINEAR || L->kind == L_CONV) {
            max_kp = L->kp > max_kp ? L->kp : max_kp;
            max_qg = L->ng * L->gp > max_qg ? L->ng * L->gp : max_qg;
            max_n = L->N > max_n ? L->N : max_n;
        }
    }
    ld.lname = NULL;
    m->out_size = numel_of(ndim, shape);
    const char *os = bg_safetensors_metadata(ld.st, "output_size");
    char want_os[32];
    snprintf(want_os, sizeof want_os, "%lld", (long long)m->out_size);
    if (!os || strcmp(os, want_os) != 0) {
        s = ferr(&ld, "metadata \"output_size\" is %s%s%s, the layers give %lld", os ? "\"" : "", os ? os : "missing",
                 os ? "\"" : "", (long long)m->out_size);
        goto done;
    }
    for (int i = 0; i < ld.n_tensors; i++)
        if (!ld.used[i]) {
            s = ferr(&ld, "tensor \"%s\" is read by no layer (no layer has its name, or its layer says it is absent)",
                     bg_safetensors_name(ld.st, i));
            goto done;
        }
    int64_t widest = max_feat > max_kp ? max_feat : max_kp;
    widest = widest > max_n ? widest : max_n;
    widest = widest > max_qg ? widest : max_qg;
    if (m->max_batch > MAX_BUF / widest) {
        s = bg_set_error(BG_ERR_ARG, OP ": %s: max_batch %lld x %lld values per example is too large (lower max_batch)",
                         path, (long long)m->max_batch, (long long)widest);
        goto done;
    }
    const size_t B = (size_t)m->max_batch;
    m->buf[0] = bg_infer_zalloc(sizeof(float) * B * (size_t)max_feat);
    m->buf[1] = bg_infer_zalloc(sizeof(float) * B * (size_t)max_feat);
    m->tmp = bg_infer_zalloc(sizeof(float) * B * (size_t)max_feat);
    m->argmax = bg_infer_zalloc(sizeof(int32_t) * B * (size_t)max_feat);
    m->q = bg_infer_zalloc(B * (size_t)max_kp);
    m->qg = bg_infer_zalloc(B * (size_t)max_qg);
    m->acc = bg_infer_zalloc(sizeof(int32_t) * B * (size_t)max_n);
    m->rowscale = bg_infer_zalloc(sizeof(float) * B);
    m->rstd = bg_infer_zalloc(sizeof(float) * B * (size_t)max_feat);   /* per row of a norm */
    m->tokscale = bg_infer_zalloc(sizeof(float) * B * (size_t)max_feat);
    if (!m->buf[0] || !m->buf[1] || !m->tmp || !m->argmax || !m->q || !m->qg || !m->acc || !m->rowscale || !m->rstd ||
        !m->tokscale)
        s = nomem(&ld);
done:
    json_decref(layers);
    json_decref(ishape);
    free(ld.used);
    bg_safetensors_free(ld.st);
    if (s != BG_OK) {
        bg_infer_free(m);
        return s;
    }
    *out = m;
    return BG_OK;
}

// ---------------------------------------------------------------------------
// running

/* y = fake_quant(x) under the layer's input quantizer, as the training
 * kernels compute it (rows x cols is the per-token view; C channels of
 * `inner` elements per example for per-channel). */
static void fake_quant_input(const layer *L, float *y, const float *x, int64_t M, int64_t inner, float *rowscale) {
    const bg_quant_kernels *qk = bg_quant_kernels_get();
    const int64_t per = L->in_numel;
    if (L->act == A_TOKEN) {
        int64_t cols = L->kind == L_CONV ? L->in_shape[2] : L->K, rows = M * per / cols;
        (void)inner;
        qk->absmax(rowscale, x, 1, rows, cols);
        for (int64_t r = 0; r < rows; r++) {
            float a = rowscale[r] >= BITNET_EPS ? rowscale[r] : BITNET_EPS;
            rowscale[r] = a / (float)L->qmax;
        }
        qk->fake_quant(y, NULL, NULL, x, 1, rows, cols, rowscale, NULL, L->qmin, L->qmax);
    } else if (L->n_ascale == 1) {
        qk->fake_quant(y, NULL, NULL, x, 1, 1, M * per, L->ascale, L->azp, L->qmin, L->qmax);
    } else {
        qk->fake_quant(y, NULL, NULL, x, M, L->n_ascale, inner, L->ascale, L->azp, L->qmin, L->qmax);
    }
}

static void run_matmul(bg_infer_model *mod, const layer *L, const float *x, float *y, int64_t M) {
    const int64_t N = L->N, K = L->K, kp = L->kp;
    if (L->norm) {   // RMSNorm without gain, the kernel BitLinear's forward uses
        bg_kernels_get()->rmsnorm_forward(mod->tmp, mod->rstd, x, NULL, M, K, L->norm_eps);
        x = mod->tmp;
    }
    if (L->path == P_F32) {
        if (L->act != A_NONE) {
            float *dst = mod->tmp;   // in place when x is already tmp (element-wise)
            fake_quant_input(L, dst, x, M, L->kind == L_CONV ? L->in_shape[1] * L->in_shape[2] : 1,
                             mod->tokscale);
            x = dst;
        }
        if (L->kind == L_CONV) {
            bg_conv2d_shape cs = L->cs;
            cs.n = M;
            bg_conv2d_forward(&cs, y, x, L->wf, L->bias);
            return;
        }
        // The fastest backend for the shape (oneDNN here; it allocates a little
        // per call, OpenBLAS does not but Debian's picks slow kernels on this
        // CPU unless OPENBLAS_CORETYPE is set: 22k vs 37k images/s on the MLP).
        bg_sgemm(false, true, M, N, K, 1.0f, x, K, L->wf, K, 0.0f, y, N);
        if (L->bias)
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = 0; n < N; n++) y[m * N + n] += L->bias[n];
        return;
    }
    const bg_int_kernels *ik = bg_int_kernels_get();
    float *sx = mod->rowscale;
    if (L->act == A_TOKEN) {
        ik->absmax_rows(sx, x, M, K);
        for (int64_t m = 0; m < M; m++) {
            float a = sx[m] >= BITNET_EPS ? sx[m] : BITNET_EPS;
            sx[m] = a / (float)L->qmax;
        }
        ik->quantize_rows(mod->q, x, M, K, kp, sx, 1, 0, L->iq_lo, L->iq_hi);
    } else {
        for (int64_t m = 0; m < M; m++) sx[m] = L->ascale[0];
        ik->quantize_rows(mod->q, x, M, K, kp, L->ascale, 0, L->iz, L->iq_lo, L->iq_hi);
    }
    int32_t *acc = mod->acc;
    const int32_t zx = L->act == A_STATIC ? L->iz : 0;
    if (L->path == P_S8_GROUPS) {
        // y[m,n] = sx[m] * sum_j (acc_j[m,n] - zx * rowsum[n,j]) * sw[n,j] + b[n]
        const int64_t G = L->G, ng = L->ng, gp = L->gp;
        for (int64_t j = 0; j < ng; j++)
            for (int64_t m = 0; m < M; m++) {
                int8_t *d = mod->qg + (j * M + m) * gp;
                memcpy(d, mod->q + m * kp + j * G, (size_t)G);
                if (gp > G) memset(d + G, 0, (size_t)(gp - G));
            }
        for (int64_t j = 0; j < ng; j++) {
            ik->gemm_s8(acc, mod->qg + j * M * gp, L->w8 + j * N * gp, M, N, gp);
            for (int64_t m = 0; m < M; m++) {
                const int32_t *a = acc + m * N;
                float *yr = y + m * N;
                for (int64_t n = 0; n < N; n++) {
                    float v = (float)(a[n] - zx * L->rowsum[n * ng + j]) * L->wscale[n * ng + j];
                    yr[n] = j ? yr[n] + v : v;
                }
            }
        }
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) y[m * N + n] = y[m * N + n] * sx[m] + (L->bias ? L->bias[n] : 0.0f);
        return;
    }
    if (L->path == P_TERNARY) {
        ik->gemm_ternary(acc, mod->q, L->wt2, M, N, kp);
    } else if (!(mod->use_dnnl && bg_gemm_s8_dnnl(acc, mod->q, L->w8, M, N, kp, kp, kp))) {
        ik->gemm_s8(acc, mod->q, L->w8, M, N, kp);
    }
    for (int64_t f = 0; f < L->n_fixes; f++) {   // the -128 weights carried as -127
        const int64_t n = L->fixes[f].n, k = L->fixes[f].k;
        for (int64_t m = 0; m < M; m++) acc[m * N + n] -= mod->q[m * kp + k];
    }
    // y = (acc - zx * rowsum(w)) * sx * sw + b: one rescale per output
    for (int64_t m = 0; m < M; m++) {
        const float s = sx[m];
        const int32_t *a = acc + m * N;
        float *yr = y + m * N;
        if (zx)
            for (int64_t n = 0; n < N; n++) yr[n] = (float)(a[n] - zx * L->rowsum[n]) * (s * L->wscale[n]);
        else
            for (int64_t n = 0; n < N; n++) yr[n] = (float)a[n] * (s * L->wscale[n]);
        if (L->bias)
            for (int64_t n = 0; n < N; n++) yr[n] += L->bias[n];
    }
}

/* Index of the first NaN or Inf of x[0, n), or -1. Blocks of branch-free
 * compares (vectorized), searched again only when one holds a bad value: one
 * streaming read of the input, next to the first layer's K multiply-adds
 * per input value. */
static int64_t first_nonfinite(const float *x, int64_t n) {
    for (int64_t b = 0; b < n; b += 4096) {
        const int64_t e = n - b < 4096 ? n : b + 4096;
        int bad = 0;
        for (int64_t i = b; i < e; i++) bad |= !(fabsf(x[i]) <= FLT_MAX);
        if (bad)
            for (int64_t i = b; i < e; i++)
                if (!(fabsf(x[i]) <= FLT_MAX)) return i;
    }
    return -1;
}

bg_status bg_infer_run(bg_infer_model *mod, const float *x, int64_t n, float *out) {
    if (!mod || (n > 0 && (!x || !out)))
        return bg_set_error(BG_ERR_ARG, "infer_run: %s is NULL", !mod ? "model" : !x ? "x" : "out");
    if (n < 0) return bg_set_error(BG_ERR_ARG, "infer_run: n must be >= 0, got %lld", (long long)n);
    // Before any output is written: a NaN or Inf would come out as finite
    // logits on the integer paths (absmax and rounding absorb it).
    const int64_t bad = n > 0 ? first_nonfinite(x, n * mod->in_features) : -1;
    if (bad >= 0)
        return bg_set_error(BG_ERR_NAN, "infer_run: example %lld has a NaN or Inf at feature %lld (value %g)",
                            (long long)(bad / mod->in_features), (long long)(bad % mod->in_features), (double)x[bad]);
    const bg_kernels *k = bg_kernels_get();
    for (int64_t start = 0; start < n; start += mod->max_batch) {
        const int64_t M = n - start < mod->max_batch ? n - start : mod->max_batch;
        const float *cur = x + start * mod->in_features;
        int which = 0;
        for (int i = 0; i < mod->n_layers; i++) {
            const layer *L = &mod->layers[i];
            float *y = mod->buf[which];
            const int64_t ne = M * L->in_numel;
            switch (L->kind) {
            case L_FLATTEN:
            case L_IDENTITY: continue;   // same memory, new shape
            case L_LINEAR:
            case L_CONV: run_matmul(mod, L, cur, y, M); break;
            case L_RELU: k->relu_forward(y, cur, ne); break;
            case L_LEAKY:
                for (int64_t j = 0; j < ne; j++) y[j] = cur[j] > 0.0f ? cur[j] : cur[j] * L->slope;
                break;
            case L_GELU: k->gelu_forward(y, cur, ne); break;
            case L_GELU_TANH: k->gelu_tanh_forward(y, cur, ne); break;
            case L_SILU: k->silu_forward(y, cur, ne); break;
            case L_TANH: k->tanh_forward(y, cur, ne); break;
            case L_SIGMOID: k->sigmoid_forward(y, cur, ne); break;
            case L_LAYERNORM:   // over the last dim (K)
                k->layernorm_forward(y, mod->tokscale, mod->rstd, cur, L->wf, L->bias, ne / L->K, L->K, L->norm_eps);
                break;
            case L_RMSNORM: k->rmsnorm_forward(y, mod->rstd, cur, L->wf, ne / L->K, L->K, L->norm_eps); break;
            case L_MAXPOOL:
            case L_AVGPOOL: {
                bg_pool2d_shape ps = L->ps;
                ps.n = M;
                if (L->kind == L_MAXPOOL) bg_max_pool2d_forward(&ps, y, mod->argmax, cur);
                else bg_avg_pool2d_forward(&ps, y, cur);
                break;
            }
            }
            cur = y;
            which ^= 1;
        }
        memcpy(out + start * mod->out_size, cur, sizeof(float) * (size_t)(M * mod->out_size));
    }
    return BG_OK;
}

// ---------------------------------------------------------------------------
// accessors

int64_t bg_infer_input_features(const bg_infer_model *m) { return m ? m->in_features : 0; }
int64_t bg_infer_output_size(const bg_infer_model *m) { return m ? m->out_size : 0; }
int bg_infer_num_layers(const bg_infer_model *m) { return m ? m->n_layers : 0; }

const char *bg_infer_layer_name(const bg_infer_model *m, int i) {
    return m && i >= 0 && i < m->n_layers ? m->layers[i].name : NULL;
}
const char *bg_infer_layer_kind(const bg_infer_model *m, int i) {
    return m && i >= 0 && i < m->n_layers ? m->layers[i].kind_name : NULL;
}
const char *bg_infer_layer_path(const bg_infer_model *m, int i) {
    if (!m || i < 0 || i >= m->n_layers) return NULL;
    const layer *L = &m->layers[i];
    if (L->kind != L_LINEAR && L->kind != L_CONV) return "f32";
    return L->path == P_TERNARY ? "int ternary" : L->path == P_S8 ? "int s8" : L->path == P_S8_GROUPS ? "int s8 groups" : "f32";
}

void bg_infer_print(const bg_infer_model *m, FILE *f) {
    if (!m || !f) return;
    for (int i = 0; i < m->n_layers; i++) {
        const layer *L = &m->layers[i];
        char a[64], b[64];
        fprintf(f, "  %-6s %-10s %-14s -> %-14s %s%s%s", L->name, L->kind_name,
                bg_infer_shape_text(L->in_ndim, L->in_shape, a, sizeof a), bg_infer_shape_text(L->out_ndim, L->out_shape, b, sizeof b),
                bg_infer_layer_path(m, i),
                L->act == A_TOKEN ? ", per-token int8 input" : L->act == A_STATIC ? ", static input quant" : "",
                L->norm ? ", rmsnorm" : "");
        if (L->n_fixes) fprintf(f, ", %lld weights -128 (sparse fix)", (long long)L->n_fixes);
        fputc('\n', f);
    }
}
