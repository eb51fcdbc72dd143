/* observer.c — the quantizer state (observed ranges, scales, zero points,
 * learned parameters) and the computation of one input's quantization
 * parameters: observers (min/max, moving average, percentile, MSE search),
 * BitNet's dynamic absmean/absmax, fixed scales, and the initialisation and
 * positivity of LSQ / LSQ+ / PACT parameters. Calls tensor/ and kernels/
 * (the reductions); the autograd op that uses it is autograd/ops_quant.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "quant/quant.h"

#define OP "fake_quant"

enum { P_SCALE = 0, P_ZERO_POINT, P_ALPHA, P_COUNT };

struct bg_quant_state {
    bg_quant_spec spec;
    int64_t n_scales;               /* P: 0 for per-token */
    int pnd;                        /* shape of the scale tensors */
    int64_t pshape[BG_MAX_DIMS];
    bg_tensor *t[P_COUNT];          /* scale [P], zero_point [P], alpha [1] (PACT) */
    bool owned[P_COUNT];
    float *rmin, *rmax;             /* observed range [P] */
    bool observed;                  /* the range holds data */
    bool initialized;               /* learned parameters hold their first value */
    bool observer_on, enabled;
    int64_t calls;
};

// ---------------------------------------------------------------------------
// helpers

static uint64_t splitmix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int64_t shape_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

static const char *shape_fmt(int ndim, const int64_t *shape, char *buf, size_t len) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, len - k, "[");
    for (int i = 0; i < ndim && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (k < len) snprintf(buf + k, len - k, "]");
    return buf;
}

/* The [outer, channels, inner] view of a tensor of this shape under spec.
 * Returns BG_OK or sets bg_last_error (op: the caller's name). */
static bg_status layout_of(const bg_quant_spec *spec, int ndim, const int64_t *shape, const char *op,
                           int64_t *outer, int64_t *channels, int64_t *inner) {
    int64_t n = shape_numel(ndim, shape);
    char sb[BG_SHAPE_STR_MAX];
    switch (spec->granularity) {
    case BG_QUANT_PER_TENSOR:
        *outer = 1, *channels = 1, *inner = n;
        return BG_OK;
    case BG_QUANT_PER_CHANNEL: {
        int a = spec->axis < 0 ? spec->axis + ndim : spec->axis;
        if (a < 0 || a >= ndim)
            return bg_set_error(BG_ERR_SHAPE, "%s: per_channel axis %d is out of range for %s", op, spec->axis,
                                shape_fmt(ndim, shape, sb, sizeof sb));
        *outer = shape_numel(a, shape);
        *channels = shape[a];
        *inner = shape_numel(ndim - a - 1, shape + a + 1);
        return BG_OK;
    }
    case BG_QUANT_PER_GROUP: {
        int64_t last = ndim ? shape[ndim - 1] : 1, g = spec->group_size;
        if (last % g != 0)
            return bg_set_error(BG_ERR_SHAPE, "%s: group size %lld does not divide the last dim %lld of %s", op,
                                (long long)g, (long long)last, shape_fmt(ndim, shape, sb, sizeof sb));
        *outer = 1, *channels = n / g, *inner = g;
        return BG_OK;
    }
    case BG_QUANT_PER_TOKEN:
    default: {
        int64_t last = ndim ? shape[ndim - 1] : 1;
        *outer = 1, *channels = last ? n / last : 0, *inner = last;
        return BG_OK;
    }
    }
}

/* PyTorch's _calculate_qparams for a range [mn, mx] (widened to include 0):
 * symmetric signed s = max(-mn', mx') / ((qmax - qmin)/2), symmetric unsigned
 * s = mx' / (qmax - qmin), affine s = (mx' - mn') / (qmax - qmin) and
 * z = clamp(qmin - round(mn'/s)); s >= eps. An empty range gives s = 1, z = 0. */
static void qparams_from_range(const bg_quant_spec *spec, float mn, float mx, float *s, float *z) {
    int32_t qmin, qmax;
    bg_quant_spec_qrange(spec, &qmin, &qmax);
    if (!(mn <= mx)) {   // nothing observed (+inf, -inf) or NaN
        *s = 1.0f;
        *z = 0.0f;
        return;
    }
    float mnn = mn < 0.0f ? mn : 0.0f, mxp = mx > 0.0f ? mx : 0.0f;
    float scale, zp = 0.0f;
    if (spec->symmetric) {
        if (qmin < 0) {
            float m = -mnn > mxp ? -mnn : mxp;
            scale = m / ((float)(qmax - qmin) / 2.0f);
        } else {
            scale = mxp / (float)(qmax - qmin);
        }
        if (!(scale >= BG_QUANT_EPS)) scale = BG_QUANT_EPS;
    } else {
        scale = (mxp - mnn) / (float)(qmax - qmin);
        if (!(scale >= BG_QUANT_EPS)) scale = BG_QUANT_EPS;
        zp = (float)qmin - nearbyintf(mnn / scale);
        zp = zp < (float)qmin ? (float)qmin : zp > (float)qmax ? (float)qmax : zp;
    }
    *s = scale;
    *z = zp;
}

/* Visits channel c's elements of x viewed as [outer, channels, inner]. */
#define FOR_CHANNEL(x, outer, channels, inner, c, v, BODY)              \
    for (int64_t o_ = 0; o_ < (outer); o_++) {                          \
        const float *r_ = (x) + (o_ * (channels) + (c)) * (inner);      \
        for (int64_t i_ = 0; i_ < (inner); i_++) {                      \
            float v = r_[i_];                                           \
            BODY                                                        \
        }                                                               \
    }

#define HIST_BINS 2048

/* The percentile range of one channel: sym [-v, v] with v the p-th |x|;
 * affine [lo, hi] at (100 - p) and p. Non-finite values are ignored. */
static void percentile_range(const bg_quant_spec *spec, const float *x, int64_t outer, int64_t channels,
                             int64_t inner, int64_t c, float *rmin, float *rmax) {
    float mn = INFINITY, mx = -INFINITY;
    int64_t cnt = 0;
    FOR_CHANNEL(x, outer, channels, inner, c, v, {
        if (!isfinite(v)) continue;
        float a = spec->symmetric ? fabsf(v) : v;
        mn = a < mn ? a : mn;
        mx = a > mx ? a : mx;
        cnt++;
    })
    if (cnt == 0) {
        *rmin = INFINITY, *rmax = -INFINITY;
        return;
    }
    if (!(mx > mn)) {
        *rmin = spec->symmetric ? -mx : mn;
        *rmax = mx;
        return;
    }
    int64_t hist[HIST_BINS] = {0};
    double width = ((double)mx - (double)mn) / HIST_BINS;
    FOR_CHANNEL(x, outer, channels, inner, c, v, {
        if (!isfinite(v)) continue;
        float a = spec->symmetric ? fabsf(v) : v;
        int64_t b = (int64_t)(((double)a - mn) / width);
        hist[b < 0 ? 0 : b >= HIST_BINS ? HIST_BINS - 1 : b]++;
    })
    double p = spec->percentile / 100.0;
    // Upper edge of the bin holding the ceil(p*cnt)-th value (and the lower
    // edge of the bin holding the (1-p) quantile for affine).
    int64_t want_hi = (int64_t)ceil(p * (double)cnt), acc = 0;
    int bhi = HIST_BINS - 1;
    for (int b = 0; b < HIST_BINS; b++) {
        acc += hist[b];
        if (acc >= want_hi) {
            bhi = b;
            break;
        }
    }
    float hi = (float)(mn + width * (bhi + 1));
    if (hi > mx) hi = mx;
    if (spec->symmetric) {
        *rmin = -hi, *rmax = hi;
        return;
    }
    int64_t want_lo = (int64_t)floor((1.0 - p) * (double)cnt) + 1;
    acc = 0;
    int blo = 0;
    for (int b = 0; b < HIST_BINS; b++) {
        acc += hist[b];
        if (acc >= want_lo) {
            blo = b;
            break;
        }
    }
    float lo = (float)(mn + width * blo);
    *rmin = lo < hi ? lo : mn;
    *rmax = hi;
}

/* At most this many elements (over all channels) enter one MSE search: the
 * grid costs grid * samples quantizations, and a search per step over a
 * whole 784x512 weight (40M quantizations) made a training step 100x
 * slower. A fixed stride through the channel keeps the search deterministic
 * and its error curve close to the full one; the moving average smooths
 * what is left. */
#define MSE_SAMPLES 4096
#define MSE_MIN_PER_CHANNEL 32

/* The clipping range among k/grid of the channel's own range (k = grid..1)
 * whose fake-quantization error sum (x - q(x))^2 is least (ties keep the
 * wider range). The range ends come from every element; the error from a
 * strided sample of at most max(MSE_SAMPLES / channels, 32) of them (all
 * when the channel is that small). Non-finite values are ignored. */
static void mse_range(const bg_quant_spec *spec, const float *x, int64_t outer, int64_t channels,
                      int64_t inner, int64_t c, float *rmin, float *rmax) {
    float mn = INFINITY, mx = -INFINITY;
    FOR_CHANNEL(x, outer, channels, inner, c, v, {
        if (!isfinite(v)) continue;
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    })
    if (!(mn <= mx)) {
        *rmin = INFINITY, *rmax = -INFINITY;
        return;
    }
    if (spec->symmetric) {
        float a = fabsf(mn) > fabsf(mx) ? fabsf(mn) : fabsf(mx);
        mn = -a, mx = a;
    }
    float sample[MSE_SAMPLES];
    int64_t cap = MSE_SAMPLES / channels > MSE_MIN_PER_CHANNEL ? MSE_SAMPLES / channels : MSE_MIN_PER_CHANNEL;
    int64_t count = outer * inner, stride = (count + cap - 1) / cap, n = 0;
    for (int64_t j = 0; j < count && n < MSE_SAMPLES; j += stride) {
        float v = x[((j / inner) * channels + c) * inner + j % inner];
        if (isfinite(v)) sample[n++] = v;
    }
    int32_t qmin, qmax;
    bg_quant_spec_qrange(spec, &qmin, &qmax);
    const float lo = (float)qmin, hi = (float)qmax;
    double best = INFINITY;
    float bmin = mn, bmax = mx;
    for (int k = spec->mse_grid; k >= 1; k--) {
        float f = (float)k / (float)spec->mse_grid;
        float cmin = mn * f, cmax = mx * f, s, z;
        qparams_from_range(spec, cmin, cmax, &s, &z);
        const float inv = 1.0f / s, ulo = lo - z - 1.0f, uhi = hi - z + 1.0f;
        double err = 0.0;
        for (int64_t j = 0; j < n; j++) {
            float v = sample[j];
            // nearbyintf without the libm call (baseline x86-64 has no
            // roundss): after the clamp |u| < 2^22, where adding and
            // subtracting 1.5 * 2^23 rounds half to even exactly.
            float u = v * inv;
            u = u > ulo ? u : ulo;
            u = u < uhi ? u : uhi;
            float q = (u + 12582912.0f) - 12582912.0f + z;
            q = q > lo ? q : lo;
            q = q < hi ? q : hi;
            double e = (double)v - (double)((q - z) * s);
            err += e * e;
        }
        if (err < best) {
            best = err;
            bmin = cmin, bmax = cmax;
        }
    }
    *rmin = bmin, *rmax = bmax;
}

// ---------------------------------------------------------------------------
// the state

static const char *const param_names[P_COUNT] = {"scale", "zero_point", "alpha"};

/* Which tensors are learned parameters, in order. */
static int learned_slots(const bg_quant_spec *spec, int *slots) {
    switch (spec->range) {
    case BG_QUANT_RANGE_LSQ: slots[0] = P_SCALE; return 1;
    case BG_QUANT_RANGE_LSQ_PLUS: slots[0] = P_SCALE, slots[1] = P_ZERO_POINT; return 2;
    case BG_QUANT_RANGE_PACT: slots[0] = P_ALPHA; return 1;
    default: return 0;
    }
}

static void set_initial_values(bg_quant_state *st) {
    if (st->t[P_SCALE]) bg_init_constant(st->t[P_SCALE], 1.0f);
    if (st->t[P_ZERO_POINT]) bg_init_constant(st->t[P_ZERO_POINT], 0.0f);
    if (st->t[P_ALPHA]) bg_init_constant(st->t[P_ALPHA], st->spec.pact_init > 0 ? st->spec.pact_init : 1.0f);
    for (int64_t i = 0; i < st->n_scales; i++) st->rmin[i] = INFINITY, st->rmax[i] = -INFINITY;
    st->observed = false;
    st->initialized = false;
}

void bg_quant_state_free(bg_quant_state *st) {
    if (!st) return;
    for (int i = 0; i < P_COUNT; i++)
        if (st->owned[i]) bg_tensor_free(st->t[i]);
    free(st->rmin);
    free(st->rmax);
    free(st);
}

bg_status bg_quant_state_new(const bg_quant_spec *spec, int ndim, const int64_t *shape,
                             bg_quant_state **out) {
    if (!out) return bg_set_error(BG_ERR_ARG, "quant_state: out is NULL");
    *out = NULL;
    if (!spec) return bg_set_error(BG_ERR_ARG, "quant_state: spec is NULL");
    bg_quant_spec s = *spec;
    bg_status rc = bg_quant_spec_validate(&s);
    if (rc != BG_OK) return rc;
    if (ndim < 0 || ndim > BG_MAX_DIMS || (ndim > 0 && !shape))
        return bg_set_error(BG_ERR_ARG, "quant_state: bad shape (ndim %d)", ndim);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) return bg_set_error(BG_ERR_SHAPE, "quant_state: negative dim %lld", (long long)shape[i]);
    if (s.granularity != BG_QUANT_PER_TENSOR && s.granularity != BG_QUANT_PER_TOKEN && ndim == 0)
        return bg_set_error(BG_ERR_SHAPE, "quant_state: %s needs the shape of the tensor to quantize",
                            bg_quant_granularity_name(s.granularity));

    bg_quant_state *st = calloc(1, sizeof *st);
    if (!st) return bg_set_error(BG_ERR_NOMEM, "quant_state: out of memory");
    st->spec = s;
    st->observer_on = st->enabled = true;
    int64_t outer, channels, inner;
    if ((rc = layout_of(&s, ndim, shape, "quant_state", &outer, &channels, &inner)) != BG_OK) {
        free(st);
        return rc;
    }
    switch (s.granularity) {
    case BG_QUANT_PER_TENSOR: st->n_scales = 1, st->pnd = 1, st->pshape[0] = 1; break;
    case BG_QUANT_PER_CHANNEL: st->n_scales = channels, st->pnd = 1, st->pshape[0] = channels; break;
    case BG_QUANT_PER_GROUP:
        st->n_scales = channels;
        st->pnd = ndim;
        memcpy(st->pshape, shape, sizeof(int64_t) * (size_t)ndim);
        st->pshape[ndim - 1] /= s.group_size;
        break;
    default: st->n_scales = 0; break;
    }
    if (st->n_scales > 0) {
        st->t[P_SCALE] = bg_tensor_new(BG_DTYPE_F32, st->pnd, st->pshape);
        st->t[P_ZERO_POINT] = bg_tensor_new(BG_DTYPE_F32, st->pnd, st->pshape);
        st->owned[P_SCALE] = st->owned[P_ZERO_POINT] = true;
        st->rmin = malloc(sizeof(float) * (size_t)st->n_scales);
        st->rmax = malloc(sizeof(float) * (size_t)st->n_scales);
        if (!st->t[P_SCALE] || !st->t[P_ZERO_POINT] || !st->rmin || !st->rmax) {
            bg_quant_state_free(st);
            return bg_set_error(BG_ERR_NOMEM, "quant_state: out of memory");
        }
    }
    if (s.range == BG_QUANT_RANGE_PACT) {
        st->t[P_ALPHA] = bg_tensor_new(BG_DTYPE_F32, 1, (const int64_t[]){1});
        st->owned[P_ALPHA] = true;
        if (!st->t[P_ALPHA]) {
            bg_quant_state_free(st);
            return bg_set_error(BG_ERR_NOMEM, "quant_state: out of memory");
        }
    }
    int slots[P_COUNT];
    int nl = learned_slots(&s, slots);
    for (int i = 0; i < nl; i++)
        if ((rc = bg_set_requires_grad(st->t[slots[i]], true)) != BG_OK) {
            bg_quant_state_free(st);
            return rc;
        }
    set_initial_values(st);
    *out = st;
    return BG_OK;
}

const bg_quant_spec *bg_quant_state_spec(const bg_quant_state *st) { return st ? &st->spec : NULL; }

bg_status bg_quant_state_set_spec(bg_quant_state *st, const bg_quant_spec *spec) {
    if (!st || !spec) return bg_set_error(BG_ERR_ARG, "quant_state_set_spec: state or spec is NULL");
    bg_quant_spec s = *spec;
    bg_status rc = bg_quant_spec_validate(&s);
    if (rc != BG_OK) return rc;
    char a[BG_QUANT_SPEC_STR_MAX], b[BG_QUANT_SPEC_STR_MAX];
    bg_quant_spec_format(&st->spec, a, sizeof a);
    bg_quant_spec_format(&s, b, sizeof b);
    int sa[P_COUNT], sb[P_COUNT];
    int na = learned_slots(&st->spec, sa), nb = learned_slots(&s, sb);
    bool same_params = na == nb && memcmp(sa, sb, sizeof(int) * (size_t)na) == 0;
    bool same_count = s.granularity == st->spec.granularity &&
                      (s.granularity != BG_QUANT_PER_CHANNEL || s.axis == st->spec.axis) &&
                      (s.granularity != BG_QUANT_PER_GROUP || s.group_size == st->spec.group_size);
    if (!same_params || !same_count)
        return bg_set_error(BG_ERR_STATE,
                            "quant_state_set_spec: \"%s\" keeps different scales or parameters than \"%s\"", b, a);
    st->spec = s;
    bg_quant_state_reset(st);
    return BG_OK;
}

bg_tensor *bg_quant_state_scale(const bg_quant_state *st) { return st ? st->t[P_SCALE] : NULL; }
bg_tensor *bg_quant_state_zero_point(const bg_quant_state *st) { return st ? st->t[P_ZERO_POINT] : NULL; }

int bg_quant_state_num_params(const bg_quant_state *st) {
    int slots[P_COUNT];
    return st ? learned_slots(&st->spec, slots) : 0;
}

bg_tensor *bg_quant_state_param(const bg_quant_state *st, int i) {
    int slots[P_COUNT];
    if (!st || i < 0 || i >= learned_slots(&st->spec, slots)) return NULL;
    return st->t[slots[i]];
}

const char *bg_quant_state_param_name(const bg_quant_state *st, int i) {
    int slots[P_COUNT];
    if (!st || i < 0 || i >= learned_slots(&st->spec, slots)) return NULL;
    return param_names[slots[i]];
}

bg_status bg_quant_state_bind_param(bg_quant_state *st, int i, bg_tensor *t) {
    int slots[P_COUNT];
    if (!st || !t) return bg_set_error(BG_ERR_ARG, "quant_state_bind_param: state or tensor is NULL");
    int nl = learned_slots(&st->spec, slots);
    if (i < 0 || i >= nl)
        return bg_set_error(BG_ERR_ARG, "quant_state_bind_param: parameter %d out of range (the state has %d)", i, nl);
    bg_tensor *old = st->t[slots[i]];
    if (t == old) return BG_OK;
    char sa[BG_SHAPE_STR_MAX], sb[BG_SHAPE_STR_MAX];
    if (t->dtype != BG_DTYPE_F32 || bg_numel(t) != bg_numel(old) || !bg_is_contiguous(t))
        return bg_set_error(BG_ERR_SHAPE, "quant_state_bind_param: %s is %s %s, want contiguous f32 of %lld elements (%s)",
                            param_names[slots[i]], bg_dtype_name(t->dtype), bg_shape_str(t, sa, sizeof sa),
                            (long long)bg_numel(old), bg_shape_str(old, sb, sizeof sb));
    bg_status rc = bg_set_requires_grad(t, true);
    if (rc != BG_OK) return rc;
    if (st->initialized) memcpy(t->data, old->data, bg_nbytes(old));
    if (st->owned[slots[i]]) bg_tensor_free(old);
    st->t[slots[i]] = t;
    st->owned[slots[i]] = false;
    return BG_OK;
}

void bg_quant_state_set_initialized(bg_quant_state *st, bool initialized) {
    if (st) st->initialized = initialized;
}
bool bg_quant_state_initialized(const bg_quant_state *st) { return st && st->initialized; }

void bg_quant_state_set_observer(bg_quant_state *st, bool enabled) {
    if (st) st->observer_on = enabled;
}
bool bg_quant_state_observer_enabled(const bg_quant_state *st) { return st && st->observer_on; }
void bg_quant_state_set_enabled(bg_quant_state *st, bool enabled) {
    if (st) st->enabled = enabled;
}
bool bg_quant_state_enabled(const bg_quant_state *st) { return !st || st->enabled; }
int64_t bg_quant_state_calls(const bg_quant_state *st) { return st ? st->calls : 0; }

void bg_quant_state_reset(bg_quant_state *st) {
    if (!st) return;
    // Learned values stay until the next input re-initialises them.
    for (int64_t i = 0; i < st->n_scales; i++) st->rmin[i] = INFINITY, st->rmax[i] = -INFINITY;
    st->observed = false;
    st->initialized = false;
    if (!bg_quant_spec_is_learned(&st->spec)) {
        if (st->t[P_SCALE]) bg_init_constant(st->t[P_SCALE], 1.0f);
        if (st->t[P_ZERO_POINT]) bg_init_constant(st->t[P_ZERO_POINT], 0.0f);
    }
}

bg_status bg_quant_state_init_from(bg_quant_state *st, const bg_tensor *x) {
    if (!st || !x) return bg_set_error(BG_ERR_ARG, "quant_state_init_from: state or x is NULL");
    bg_ctx *ctx = bg_ctx_new(bg_nbytes(x) + 4096 + sizeof(float) * 4 * (size_t)(st->n_scales + 16));
    if (!ctx) return BG_ERR_NOMEM;
    bg_quant_state_reset(st);
    bool on = st->observer_on;
    st->observer_on = true;
    bg_quant_params p;
    bg_status rc = bg_quant_params_compute(ctx, &st->spec, st, x, &p);
    st->observer_on = on;
    bg_ctx_free(ctx);
    return rc;
}

// ---------------------------------------------------------------------------
// one input's parameters

static float *arena_floats(bg_ctx *ctx, int64_t n) {
    return bg_ctx_alloc(ctx, sizeof(float) * (size_t)(n > 0 ? n : 1));
}

/* Keeps a learned value positive: NaN and values below eps become eps. */
static float positive(float v) { return v >= BG_QUANT_EPS ? v : BG_QUANT_EPS; }

/* Moves the thread's last error (set by a helper) onto the ctx. */
static bg_status fail_from_last(bg_ctx *ctx) {
    char msg[BG_ERROR_MAX];
    bg_status st = bg_last_status();
    snprintf(msg, sizeof msg, "%s", bg_last_error());
    bg_ctx_fail(ctx, st, "%s", msg);
    return st;
}

bg_status bg_quant_params_compute(bg_ctx *ctx, const bg_quant_spec *spec, bg_quant_state *st,
                                  const bg_tensor *x, bg_quant_params *out) {
    if (!ctx) return bg_set_error(BG_ERR_ARG, OP ": ctx is NULL");
    if (bg_ctx_status(ctx) != BG_OK) return bg_ctx_status(ctx);
    if (!x || !spec || !out) {
        bg_ctx_fail(ctx, BG_ERR_ARG, OP ": %s is NULL", !x ? "x" : !spec ? "spec" : "out");
        return BG_ERR_ARG;
    }
    char sx[BG_SHAPE_STR_MAX];
    if (x->dtype != BG_DTYPE_F32) {
        bg_ctx_fail(ctx, BG_ERR_DTYPE, OP ": x is %s %s, want f32", bg_dtype_name(x->dtype),
                    bg_shape_str(x, sx, sizeof sx));
        return BG_ERR_DTYPE;
    }
    if (st && !bg_quant_spec_equal(spec, &st->spec)) {
        char a[BG_QUANT_SPEC_STR_MAX], b[BG_QUANT_SPEC_STR_MAX];
        bg_quant_spec_format(spec, a, sizeof a);
        bg_quant_spec_format(&st->spec, b, sizeof b);
        bg_ctx_fail(ctx, BG_ERR_STATE, OP ": spec \"%s\" differs from the state's \"%s\" (use bg_quant_state_set_spec)", a, b);
        return BG_ERR_STATE;
    }
    if (!st && bg_quant_spec_is_stateful(spec)) {
        bg_ctx_fail(ctx, BG_ERR_STATE, OP ": range %s needs a state (bg_quant_state_new)",
                    bg_quant_range_name(spec->range));
        return BG_ERR_STATE;
    }
    const bg_tensor *xc = x;
    if (!bg_is_contiguous(x) && !(xc = bg_contiguous(ctx, (bg_tensor *)x))) return bg_ctx_status(ctx);
    const float *xv = bg_f32(xc);
    const int64_t n = bg_numel(xc);

    if (spec->check_finite)
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(xv[i])) {
                bg_ctx_fail(ctx, BG_ERR_NAN, OP ": x has a NaN or Inf at index %lld (value %g)", (long long)i,
                            (double)xv[i]);
                return BG_ERR_NAN;
            }

    int64_t outer, channels, inner;
    if (layout_of(spec, xc->ndim, xc->shape, OP, &outer, &channels, &inner) != BG_OK)
        return fail_from_last(ctx);
    if (st && st->n_scales > 0 && channels != st->n_scales) {
        bg_ctx_fail(ctx, BG_ERR_SHAPE, OP ": the state holds %lld %s scales, x %s needs %lld", (long long)st->n_scales,
                    bg_quant_granularity_name(spec->granularity), bg_shape_str(xc, sx, sizeof sx),
                    (long long)channels);
        return BG_ERR_SHAPE;
    }
    int32_t qmin, qmax;
    bg_quant_spec_qrange(spec, &qmin, &qmax);
    float *sc = arena_floats(ctx, channels), *zp = arena_floats(ctx, channels);
    if (!sc || !zp) return bg_ctx_status(ctx);
    const bg_quant_kernels *k = bg_quant_kernels_get();
    const int64_t per = outer * inner;   // elements per channel
    bool zero_zp = true;
    float alpha = 0.0f;
    bool observe = st && st->observer_on;

    switch (spec->range) {
    case BG_QUANT_RANGE_FIXED:
        for (int64_t c = 0; c < channels; c++) sc[c] = spec->scale, zp[c] = (float)spec->zero_point;
        zero_zp = spec->zero_point == 0;
        break;
    case BG_QUANT_RANGE_ABSMEAN: {
        double *sum = bg_ctx_alloc(ctx, sizeof(double) * (size_t)(channels > 0 ? channels : 1));
        if (!sum) return bg_ctx_status(ctx);
        k->abssum(sum, xv, outer, channels, inner);
        for (int64_t c = 0; c < channels; c++) {
            float mean = per ? (float)(sum[c] / (double)per) : 0.0f;
            sc[c] = mean < BG_QUANT_BITNET_EPS ? BG_QUANT_BITNET_EPS : mean;   // NaN stays: refused below
            zp[c] = 0.0f;
        }
        break;
    }
    case BG_QUANT_RANGE_ABSMAX:
        k->absmax(sc, xv, outer, channels, inner);
        for (int64_t c = 0; c < channels; c++) {
            float a = sc[c] < BG_QUANT_BITNET_EPS ? BG_QUANT_BITNET_EPS : sc[c];   // NaN stays
            sc[c] = a / (float)qmax;
            zp[c] = 0.0f;
        }
        break;
    case BG_QUANT_RANGE_MINMAX:
    case BG_QUANT_RANGE_MOVING_MINMAX:
    case BG_QUANT_RANGE_PERCENTILE:
    case BG_QUANT_RANGE_MSE: {
        if (!st) {   // per-token minmax: this input's range, no memory
            float *mx = arena_floats(ctx, channels);
            if (!mx) return bg_ctx_status(ctx);
            k->minmax(sc, mx, xv, outer, channels, inner);
            for (int64_t c = 0; c < channels; c++) qparams_from_range(spec, sc[c], mx[c], &sc[c], &zp[c]);
            zero_zp = spec->symmetric;
            break;
        }
        if (observe && n > 0) {
            float *bmin = arena_floats(ctx, channels), *bmax = arena_floats(ctx, channels);
            if (!bmin || !bmax) return bg_ctx_status(ctx);
            if (spec->range == BG_QUANT_RANGE_MINMAX || spec->range == BG_QUANT_RANGE_MOVING_MINMAX)
                k->minmax(bmin, bmax, xv, outer, channels, inner);
            else
                for (int64_t c = 0; c < channels; c++)
                    (spec->range == BG_QUANT_RANGE_PERCENTILE ? percentile_range : mse_range)(
                        spec, xv, outer, channels, inner, c, &bmin[c], &bmax[c]);
            for (int64_t c = 0; c < channels; c++) {
                if (!(bmin[c] <= bmax[c])) continue;   // nothing finite in this channel
                bool first = !(st->rmin[c] <= st->rmax[c]);
                if (spec->range == BG_QUANT_RANGE_MINMAX) {   // running min / max
                    st->rmin[c] = bmin[c] < st->rmin[c] ? bmin[c] : st->rmin[c];
                    st->rmax[c] = bmax[c] > st->rmax[c] ? bmax[c] : st->rmax[c];
                } else if (first) {
                    st->rmin[c] = bmin[c];
                    st->rmax[c] = bmax[c];
                } else {   // r = r + m*(new - r), torch's moving average
                    st->rmin[c] = st->rmin[c] + spec->momentum * (bmin[c] - st->rmin[c]);
                    st->rmax[c] = st->rmax[c] + spec->momentum * (bmax[c] - st->rmax[c]);
                }
            }
            st->observed = true;
            float *ts = bg_f32(st->t[P_SCALE]), *tz = bg_f32(st->t[P_ZERO_POINT]);
            for (int64_t c = 0; c < channels; c++) qparams_from_range(spec, st->rmin[c], st->rmax[c], &ts[c], &tz[c]);
        }
        memcpy(sc, bg_f32(st->t[P_SCALE]), sizeof(float) * (size_t)channels);
        memcpy(zp, bg_f32(st->t[P_ZERO_POINT]), sizeof(float) * (size_t)channels);
        zero_zp = spec->symmetric;
        break;
    }
    case BG_QUANT_RANGE_LSQ:
    case BG_QUANT_RANGE_LSQ_PLUS: {
        float *ts = bg_f32(st->t[P_SCALE]), *tz = bg_f32(st->t[P_ZERO_POINT]);
        if (!st->initialized && n > 0) {
            if (spec->range == BG_QUANT_RANGE_LSQ) {
                // s = 2 mean|x| / sqrt(Qp) (Esser et al.)
                double *sum = bg_ctx_alloc(ctx, sizeof(double) * (size_t)channels);
                if (!sum) return bg_ctx_status(ctx);
                k->abssum(sum, xv, outer, channels, inner);
                for (int64_t c = 0; c < channels; c++)
                    ts[c] = positive((float)(2.0 * (sum[c] / (double)per) / sqrt((double)qmax)));
            } else {
                // min/max init: the affine observer's s and z (z learned as a float)
                float *mx = arena_floats(ctx, channels);
                if (!mx) return bg_ctx_status(ctx);
                k->minmax(sc, mx, xv, outer, channels, inner);
                for (int64_t c = 0; c < channels; c++) qparams_from_range(spec, sc[c], mx[c], &ts[c], &tz[c]);
            }
            st->initialized = true;
        }
        for (int64_t c = 0; c < channels; c++) {
            ts[c] = positive(ts[c]);   // an optimizer step may have pushed it <= 0
            sc[c] = ts[c];
            if (spec->range == BG_QUANT_RANGE_LSQ_PLUS) {
                // forward zero point: clamp(nearbyint(z)) (PyTorch's learnable forward)
                float z = isfinite(tz[c]) ? nearbyintf(tz[c]) : 0.0f;
                zp[c] = z < (float)qmin ? (float)qmin : z > (float)qmax ? (float)qmax : z;
            } else {
                zp[c] = 0.0f;
            }
        }
        zero_zp = spec->range == BG_QUANT_RANGE_LSQ;
        break;
    }
    case BG_QUANT_RANGE_PACT: {
        float *ta = bg_f32(st->t[P_ALPHA]);
        if (!st->initialized && n > 0) {
            if (spec->pact_init > 0.0f) {
                ta[0] = spec->pact_init;
            } else {
                float mn, mx;
                k->minmax(&mn, &mx, xv, 1, 1, n);
                ta[0] = positive(mx);
            }
            st->initialized = true;
        }
        ta[0] = positive(ta[0]);
        alpha = ta[0];
        sc[0] = alpha / (float)qmax;   // y = round(clip(x,0,a) * qmax/a) * a/qmax
        zp[0] = 0.0f;
        if (st->t[P_SCALE]) bg_f32(st->t[P_SCALE])[0] = sc[0];
        break;
    }
    default: break;
    }
    // A range that is not finite would turn every element into the same code
    // and hide the NaN/Inf behind a finite loss: refuse it.
    for (int64_t c = 0; c < channels; c++)
        if (!isfinite(sc[c]) || !(sc[c] > 0.0f) || !isfinite(zp[c])) {
            bg_ctx_fail(ctx, BG_ERR_NAN,
                        OP ": the %s range of x %s is not finite (scale %g, zero point %g%s): x holds a NaN or "
                        "an infinity",
                        bg_quant_range_name(spec->range), bg_shape_str(xc, sx, sizeof sx), (double)sc[c],
                        (double)zp[c], channels > 1 ? ", one channel" : "");
            return BG_ERR_NAN;
        }
    // Dynamic scales of a state are kept for inspection (metrics, export).
    if (st && st->n_scales == channels && !bg_quant_spec_is_stateful(spec) && st->t[P_SCALE]) {
        memcpy(bg_f32(st->t[P_SCALE]), sc, sizeof(float) * (size_t)channels);
        memcpy(bg_f32(st->t[P_ZERO_POINT]), zp, sizeof(float) * (size_t)channels);
    }
    uint64_t calls = st ? (uint64_t)st->calls : 0;
    // The count wraps to 0 after INT64_MAX (a restored checkpoint may hold
    // any non-negative count): never a signed overflow.
    if (st) st->calls = st->calls == INT64_MAX ? 0 : st->calls + 1;
    out->outer = outer;
    out->channels = channels;
    out->inner = inner;
    out->scale = sc;
    out->zero_point = zero_zp ? NULL : zp;
    out->qmin = qmin;
    out->qmax = qmax;
    out->key = (uint32_t)splitmix64(spec->seed ^ splitmix64(calls));
    out->alpha = alpha;
    return BG_OK;
}

bg_status bg_quantize(bg_ctx *ctx, const bg_quant_spec *spec, bg_quant_state *st, const bg_tensor *x,
                      bg_tensor **codes, bg_quant_params *params) {
    if (codes) *codes = NULL;
    if (!codes || !params) {
        if (ctx) bg_ctx_fail(ctx, BG_ERR_ARG, "quantize: codes or params is NULL");
        return BG_ERR_ARG;
    }
    if (!ctx) return bg_set_error(BG_ERR_ARG, "quantize: ctx is NULL");
    if (bg_ctx_status(ctx) != BG_OK) return bg_ctx_status(ctx);
    if (!x) {
        bg_ctx_fail(ctx, BG_ERR_ARG, "quantize: x is NULL");
        return BG_ERR_ARG;
    }
    bg_tensor *xc = bg_contiguous(ctx, (bg_tensor *)x);
    if (!xc) return bg_ctx_status(ctx);
    bg_status rc = bg_quant_params_compute(ctx, spec, st, xc, params);
    if (rc != BG_OK) return rc;
    bg_tensor *c = bg_empty(ctx, params->qmin < 0 ? BG_DTYPE_I8 : BG_DTYPE_U8, xc->ndim, xc->shape);
    float *y = arena_floats(ctx, bg_numel(xc));
    if (!c || !y) return bg_ctx_status(ctx);
    const bg_quant_kernels *k = bg_quant_kernels_get();
    const bg_quant_params *p = params;
    if (spec->kind == BG_QUANT_BINARY)
        k->fake_binary(y, c->data, NULL, bg_f32(xc), p->outer, p->channels, p->inner, p->scale);
    else if (spec->rounding == BG_QUANT_ROUND_STOCHASTIC)
        k->fake_quant_stochastic(y, c->data, NULL, bg_f32(xc), p->outer, p->channels, p->inner, p->scale,
                                 p->zero_point, p->qmin, p->qmax, p->key);
    else
        k->fake_quant(y, c->data, NULL, bg_f32(xc), p->outer, p->channels, p->inner, p->scale, p->zero_point,
                      p->qmin, p->qmax);
    *codes = c;
    return BG_OK;
}

// ---------------------------------------------------------------------------
// non-parameter state, for checkpoints (io/checkpoint.c)

int64_t bg_quant_state_num_scales(const bg_quant_state *st) { return st ? st->n_scales : 0; }

/* True when slot i is one of the spec's learned parameters. */
static bool is_learned_slot(const bg_quant_state *st, int i) {
    int slots[P_COUNT];
    int n = learned_slots(&st->spec, slots);
    for (int k = 0; k < n; k++)
        if (slots[k] == i) return true;
    return false;
}

bg_status bg_quant_state_get_buffers(const bg_quant_state *st, float *rmin, float *rmax, float *scale,
                                     float *zero_point, bg_quant_state_flags *flags) {
    if (!st) return bg_set_error(BG_ERR_ARG, "quant_state_get_buffers: state is NULL");
    size_t nb = sizeof(float) * (size_t)st->n_scales;
    if (st->n_scales > 0) {
        if (rmin) memcpy(rmin, st->rmin, nb);
        if (rmax) memcpy(rmax, st->rmax, nb);
        if (scale) memcpy(scale, bg_f32(st->t[P_SCALE]), nb);
        if (zero_point) memcpy(zero_point, bg_f32(st->t[P_ZERO_POINT]), nb);
    }
    if (flags) {
        flags->observed = st->observed;
        flags->initialized = st->initialized;
        flags->observer_on = st->observer_on;
        flags->enabled = st->enabled;
        flags->calls = st->calls;
    }
    return BG_OK;
}

bg_status bg_quant_state_set_buffers(bg_quant_state *st, const float *rmin, const float *rmax, const float *scale,
                                     const float *zero_point, const bg_quant_state_flags *flags) {
    if (!st) return bg_set_error(BG_ERR_ARG, "quant_state_set_buffers: state is NULL");
    size_t nb = sizeof(float) * (size_t)st->n_scales;
    if (st->n_scales > 0) {
        if (rmin) memcpy(st->rmin, rmin, nb);
        if (rmax) memcpy(st->rmax, rmax, nb);
        if (scale && !is_learned_slot(st, P_SCALE)) memcpy(bg_f32(st->t[P_SCALE]), scale, nb);
        if (zero_point && !is_learned_slot(st, P_ZERO_POINT)) memcpy(bg_f32(st->t[P_ZERO_POINT]), zero_point, nb);
    }
    if (flags) {
        st->observed = flags->observed;
        st->initialized = flags->initialized;
        st->observer_on = flags->observer_on;
        st->enabled = flags->enabled;
        st->calls = flags->calls;
    }
    return BG_OK;
}
