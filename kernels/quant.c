/* quant.c — the scalar references (`_ref`) of the quantization kernels (the
 * specification the AVX2 / AVX-512 variants in quant_avx2.c and
 * quant_avx512.c must match bit for bit), the stochastic rounding draw, and
 * the run-time choice of the bg_quant_kernels table (same CPU features and
 * BG_ISA cap as dispatch.c). Portable C11 + libm + OpenMP. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#include "kernels/kernels_internal.h"
#include "kernels/quant_internal.h"

// ---------------------------------------------------------------------------
// stochastic rounding draw

/* A 32-bit integer hash (xorshift-multiply, "lowbias32"); applied twice so
 * that streams of different keys are not shifted copies of each other. The
 * SIMD files repeat these constants. */
static inline uint32_t hash32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x7feb352dU;
    h ^= h >> 15;
    h *= 0x846ca68bU;
    h ^= h >> 16;
    return h;
}

float bg_quant_uniform(uint32_t key, uint64_t index) {
    return (float)(hash32(hash32((uint32_t)index) ^ key) >> 8) * 0x1p-24f;
}

// ---------------------------------------------------------------------------
// walking [outer, channels, inner] in flat chunks



// ---------------------------------------------------------------------------
// fake quantization

/* One element, the definition shared by every variant:
 *   q = nearbyintf(x*inv) + z; v = q > lo ? q : lo; code = v < hi ? v : hi
 * (the selects are MAXPS/MINPS's definitions, so NaN gives lo, and -0 never
 * leaks: z = +0 makes q = +0). */
static void fq_segment(float *y, uint8_t *codes, uint8_t *mask, const float *x, int64_t len,
                       float s, float z, float lo, float hi) {
    const float inv = 1.0f / s;
    for (int64_t i = 0; i < len; i++) {
        float q = nearbyintf(x[i] * inv) + z;
        float v = q > lo ? q : lo;
        float code = v < hi ? v : hi;
        y[i] = (code - z) * s;
        if (codes) codes[i] = (uint8_t)(int32_t)code;
        if (mask) mask[i] = (uint8_t)(q >= lo && q <= hi);
    }
}

static void fake_quant_ref(float *y, int8_t *codes, uint8_t *mask, const float *x, int64_t outer,
                           int64_t channels, int64_t inner, const float *scale,
                           const float *zero_point, int32_t qmin, int32_t qmax) {
    const int64_t n = outer * channels * inner, nchunks = (n + CHUNK - 1) / CHUNK;
    const float lo = (float)qmin, hi = (float)qmax;
    uint8_t *cb = (uint8_t *)codes;
#pragma omp parallel for schedule(static) if (nchunks > 1)
    for (int64_t k = 0; k < nchunks; k++) {
        int64_t a = k * CHUNK, b = a + CHUNK < n ? a + CHUNK : n;
        FOR_SEGMENTS(a, b, inner, {
            int64_t c = row % channels, off = row * inner + i0;
            fq_segment(y + off, cb ? cb + off : NULL, mask ? mask + off : NULL, x + off, i1 - i0,
                       scale[c], zero_point ? zero_point[c] : 0.0f, lo, hi);
        });
    }
}

static void fq_segment_stochastic(float *y, uint8_t *codes, uint8_t *mask, const float *x,
                                  int64_t len, float s, float z, float lo, float hi, uint32_t key,
                                  int64_t base) {
    const float inv = 1.0f / s;
    for (int64_t i = 0; i < len; i++) {
        float r = bg_quant_uniform(key, (uint64_t)(base + i));
        float q = floorf(x[i] * inv + r) + z;
        float v = q > lo ? q : lo;
        float code = v < hi ? v : hi;
        y[i] = (code - z) * s;
        if (codes) codes[i] = (uint8_t)(int32_t)code;
        if (mask) mask[i] = (uint8_t)(q >= lo && q <= hi);
    }
}

static void fake_quant_stochastic_ref(float *y, int8_t *codes, uint8_t *mask, const float *x,
                                      int64_t outer, int64_t channels, int64_t inner,
                                      const float *scale, const float *zero_point, int32_t qmin,
                                      int32_t qmax, uint32_t key) {
    const int64_t n = outer * channels * inner, nchunks = (n + CHUNK - 1) / CHUNK;
    const float lo = (float)qmin, hi = (float)qmax;
    uint8_t *cb = (uint8_t *)codes;
#pragma omp parallel for schedule(static) if (nchunks > 1)
    for (int64_t k = 0; k < nchunks; k++) {
        int64_t a = k * CHUNK, b = a + CHUNK < n ? a + CHUNK : n;
        FOR_SEGMENTS(a, b, inner, {
            int64_t c = row % channels, off = row * inner + i0;
            fq_segment_stochastic(y + off, cb ? cb + off : NULL, mask ? mask + off : NULL, x + off,
                                  i1 - i0, scale[c], zero_point ? zero_point[c] : 0.0f, lo, hi,
                                  key, off);
        });
    }
}

static void fake_binary_ref(float *y, int8_t *codes, uint8_t *mask, const float *x, int64_t outer,
                            int64_t channels, int64_t inner, const float *scale) {
    const int64_t n = outer * channels * inner, nchunks = (n + CHUNK - 1) / CHUNK;
    uint8_t *cb = (uint8_t *)codes;
#pragma omp parallel for schedule(static) if (nchunks > 1)
    for (int64_t k = 0; k < nchunks; k++) {
        int64_t a = k * CHUNK, b = a + CHUNK < n ? a + CHUNK : n;
        FOR_SEGMENTS(a, b, inner, {
            int64_t c = row % channels, off = row * inner + i0;
            const float s = scale[c], inv = 1.0f / s;
            for (int64_t i = off; i < off + (i1 - i0); i++) {
                float u = x[i] * inv;
                bool pos = u > 0.0f;
                y[i] = pos ? s : -s;
                if (cb) cb[i] = pos ? 1 : 0xff;
                if (mask) mask[i] = (uint8_t)(u >= -1.0f && u <= 1.0f);
            }
        });
    }
}

// ---------------------------------------------------------------------------
// observers' reductions (per channel; parallel over channels only, so a
// channel's order is fixed)

static void minmax_ref(float *mn, float *mx, const float *x, int64_t outer, int64_t channels,
                       int64_t inner) {
#pragma omp parallel for schedule(static) if (outer * channels * inner >= BG_PAR_MIN && channels > 1)
    for (int64_t c = 0; c < channels; c++) {
        float lo = INFINITY, hi = -INFINITY;
        for (int64_t o = 0; o < outer; o++) {
            const float *p = x + (o * channels + c) * inner;
            for (int64_t i = 0; i < inner; i++) {
                lo = p[i] < lo ? p[i] : lo;
                hi = p[i] > hi ? p[i] : hi;
            }
        }
        mn[c] = lo + 0.0f;   // -0 -> +0: the order of equal zeros does not show
        mx[c] = hi + 0.0f;
    }
}

static void absmax_ref(float *amax, const float *x, int64_t outer, int64_t channels,
                       int64_t inner) {
#pragma omp parallel for schedule(static) if (outer * channels * inner >= BG_PAR_MIN && channels > 1)
    for (int64_t c = 0; c < channels; c++) {
        float m = 0.0f;
        for (int64_t o = 0; o < outer; o++) {
            const float *p = x + (o * channels + c) * inner;
            for (int64_t i = 0; i < inner; i++) {
                float a = fabsf(p[i]);
                m = a > m || a != a ? a : m;   // a NaN stays (nothing compares above it)
            }
        }
        amax[c] = m;
    }
}

static void abssum_ref(double *sum, const float *x, int64_t outer, int64_t channels,
                       int64_t inner) {
#pragma omp parallel for schedule(static) if (outer * channels * inner >= BG_PAR_MIN && channels > 1)
    for (int64_t c = 0; c < channels; c++) {
        double p[16] = {0};
        for (int64_t o = 0; o < outer; o++) {
            const float *r = x + (o * channels + c) * inner;
            for (int64_t i = 0; i < inner; i++) p[i & 15] += (double)fabsf(r[i]);
        }
        for (int w = 8; w >= 1; w /= 2)
            for (int j = 0; j < w; j++) p[j] += p[j + w];
        sum[c] = p[0];
    }
}

// ---------------------------------------------------------------------------
// backward

static void mask_backward_ref(float *dx, const float *dy, const uint8_t *mask, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        if (mask[i]) dx[i] += dy[i];   // untouched elsewhere (keeps -0, ignores inf)
}

static void lsq_backward_ref(float *dx, double *dscale, double *dzero, const float *dy,
                             const float *x, int64_t outer, int64_t channels, int64_t inner,
                             const float *scale, const float *zero_point, int32_t qmin,
                             int32_t qmax, float grad_factor) {
    const float lo = (float)qmin, hi = (float)qmax;
#pragma omp parallel for schedule(static) if (outer * channels * inner >= BG_PAR_MIN && channels > 1)
    for (int64_t c = 0; c < channels; c++) {
        const float s = scale[c], inv = 1.0f / s, z = zero_point ? zero_point[c] : 0.0f;
        const float dsmall = lo - z, dbig = hi - z;
        double ds = 0.0, dz = 0.0;
        for (int64_t o = 0; o < outer; o++) {
            int64_t off = (o * channels + c) * inner;
            for (int64_t i = off; i < off + inner; i++) {
                float g = dy[i];
                float xq = nearbyintf(z + x[i] * inv);
                if (xq >= lo && xq <= hi) {
                    if (dx) dx[i] += g;
                    float xfq = (xq - z) * s;
                    ds += (double)(g * (xfq - x[i]) * inv * grad_factor);
                } else {
                    ds += (double)((xq < lo ? g * dsmall : g * dbig) * grad_factor);
                    dz += (double)(g * -1.0f * s * grad_factor);
                }
            }
        }
        dscale[c] += ds;
        if (dzero) dzero[c] += dz;
    }
}

// ---------------------------------------------------------------------------
// tables and the run-time choice

const bg_quant_kernels bg_quant_kernels_ref_table = {
    .isa_id = BG_ISA_REF,
    .isa = "ref",
    .fake_quant = fake_quant_ref,
    .fake_quant_stochastic = fake_quant_stochastic_ref,
    .fake_binary = fake_binary_ref,
    .minmax = minmax_ref,
    .absmax = absmax_ref,
    .abssum = abssum_ref,
    .mask_backward = mask_backward_ref,
    .lsq_backward = lsq_backward_ref,
};

static bg_quant_kernels qtables[BG_ISA_COUNT];
static once_flag qtables_once = ONCE_FLAG_INIT;

/* The ISA choice (CPU features, BG_ISA cap) is dispatch.c's; this only fills
 * the quantization tables. */
static void qtables_init(void) {
    qtables[BG_ISA_REF] = bg_quant_kernels_ref_table;
    qtables[BG_ISA_AVX2] = bg_quant_kernels_avx2_table;
    qtables[BG_ISA_AVX512] = bg_quant_kernels_avx512_table;
    for (int i = BG_ISA_AVX2; i < BG_ISA_COUNT; i++) {
        bg_fill_table_gaps(&qtables[i], &qtables[i - 1], offsetof(bg_quant_kernels, fake_quant),
                           sizeof(bg_quant_kernels));
        qtables[i].isa_id = (bg_isa)i;
    }
    qtables[BG_ISA_AVX2].isa = "avx2";
    qtables[BG_ISA_AVX512].isa = "avx512";
}

const bg_quant_kernels *bg_quant_kernels_get(void) {
    call_once(&qtables_once, qtables_init);
    return &qtables[bg_isa_selected()];
}

const bg_quant_kernels *bg_quant_kernels_for(bg_isa isa) {
    if (!bg_isa_usable(isa)) return NULL;
    call_once(&qtables_once, qtables_init);
    return &qtables[isa];
}
