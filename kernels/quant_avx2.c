/* quant_avx2.c — AVX2 variants of the quantization kernels, bit-identical to
 * quant.c's references: the same multiply by 1/s computed once, rounding to
 * nearest even with _mm256_round_ps, MAXPS/MINPS selects, and tails either
 * masked (reductions, so each partial sum keeps its order) or done by the
 * reference's scalar element (same operations). Entries left out come from
 * the reference table. Calls nothing above kernels/. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/kernels_internal.h"
#include "kernels/quant_internal.h"

#define RN (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define RD (_MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)


/* Lane j is valid when j < rem (all-ones dword), for maskload. */
static inline __m256i tail_mask(int64_t rem) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int r = rem >= 8 ? 8 : (int)rem;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), iota);
}

// ---------------------------------------------------------------------------
// the stochastic draw (constants as in quant.c)

static inline uint32_t hash32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x7feb352dU;
    h ^= h >> 15;
    h *= 0x846ca68bU;
    h ^= h >> 16;
    return h;
}

static inline float uniform1(uint32_t key, int64_t index) {
    return (float)(hash32(hash32((uint32_t)index) ^ key) >> 8) * 0x1p-24f;
}

static inline __m256i hash32x8(__m256i h) {
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
    h = _mm256_mullo_epi32(h, _mm256_set1_epi32((int)0x7feb352dU));
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 15));
    h = _mm256_mullo_epi32(h, _mm256_set1_epi32((int)0x846ca68bU));
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
    return h;
}

static inline __m256 uniform8(uint32_t key, int64_t index) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i idx = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)index), iota);
    __m256i h = hash32x8(_mm256_xor_si256(hash32x8(idx), _mm256_set1_epi32((int)key)));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(h, 8)), _mm256_set1_ps(0x1p-24f));
}

/* The low byte of each of 8 dwords, in order, as 8 bytes. */
static inline void store_bytes8(uint8_t *dst, __m256i v) {
    v = _mm256_and_si256(v, _mm256_set1_epi32(0xff));
    __m256i w = _mm256_packus_epi32(v, v);    // per 128-bit lane: d0..d3 d0..d3 as u16
    w = _mm256_packus_epi16(w, w);            // bytes d0..d3 repeated
    __m128i lo = _mm256_castsi256_si128(w), hi = _mm256_extracti128_si256(w, 1);
    _mm_storel_epi64((__m128i *)(void *)dst, _mm_unpacklo_epi32(lo, hi));
}

// ---------------------------------------------------------------------------
// fake quantization

/* The reference's scalar element (tails). */
static inline void fq_one(float *y, uint8_t *codes, uint8_t *mask, float x, float inv, float s,
                          float z, float lo, float hi, float r, bool stochastic) {
    float q = (stochastic ? floorf(x * inv + r) : nearbyintf(x * inv)) + z;
    float v = q > lo ? q : lo;
    float code = v < hi ? v : hi;
    *y = (code - z) * s;
    if (codes) *codes = (uint8_t)(int32_t)code;
    if (mask) *mask = (uint8_t)(q >= lo && q <= hi);
}

/* 8 lanes: u = x*inv (per-lane inv), the rest as the scalar. */
static inline void fq8(float *y, uint8_t *codes, uint8_t *mask, __m256 u, __m256 vs, __m256 vz,
                       __m256 vlo, __m256 vhi, bool stochastic, uint32_t key, int64_t base) {
    __m256 r = stochastic ? _mm256_round_ps(_mm256_add_ps(u, uniform8(key, base)), RD)
                          : _mm256_round_ps(u, RN);
    __m256 q = _mm256_add_ps(r, vz);
    __m256 code = _mm256_min_ps(_mm256_max_ps(q, vlo), vhi);
    _mm256_storeu_ps(y, _mm256_mul_ps(_mm256_sub_ps(code, vz), vs));
    if (codes) store_bytes8(codes, _mm256_cvtps_epi32(code));
    if (mask) {
        __m256 in = _mm256_and_ps(_mm256_cmp_ps(q, vlo, _CMP_GE_OQ), _mm256_cmp_ps(q, vhi, _CMP_LE_OQ));
        store_bytes8(mask, _mm256_srli_epi32(_mm256_castps_si256(in), 31));
    }
}

static void fq_segment(float *y, uint8_t *codes, uint8_t *mask, const float *x, int64_t len,
                       float s, float z, float lo, float hi, bool stochastic, uint32_t key,
                       int64_t base) {
    const float inv = 1.0f / s;
    const __m256 vinv = _mm256_set1_ps(inv), vs = _mm256_set1_ps(s), vz = _mm256_set1_ps(z);
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    int64_t i = 0;
    for (; i + 8 <= len; i += 8)
        fq8(y + i, codes ? codes + i : NULL, mask ? mask + i : NULL,
            _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv), vs, vz, vlo, vhi, stochastic, key, base + i);
    for (; i < len; i++)
        fq_one(y + i, codes ? codes + i : NULL, mask ? mask + i : NULL, x[i], inv, s, z, lo, hi,
               stochastic ? uniform1(key, base + i) : 0.0f, stochastic);
}

/* inner == 1: vectorise across channels with per-lane scales. */
static void fq_rows_channels(float *y, uint8_t *codes, uint8_t *mask, const float *x, int64_t o0,
                             int64_t o1, int64_t channels, const float *scale, const float *zp,
                             float lo, float hi, bool stochastic, uint32_t key) {
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi), one = _mm256_set1_ps(1.0f);
    for (int64_t o = o0; o < o1; o++) {
        int64_t c = 0;
        for (; c + 8 <= channels; c += 8) {
            int64_t off = o * channels + c;
            __m256 vs = _mm256_loadu_ps(scale + c);
            __m256 vz = zp ? _mm256_loadu_ps(zp + c) : _mm256_setzero_ps();
            __m256 u = _mm256_mul_ps(_mm256_loadu_ps(x + off), _mm256_div_ps(one, vs));
            fq8(y + off, codes ? codes + off : NULL, mask ? mask + off : NULL, u, vs, vz, vlo, vhi,
                stochastic, key, off);
        }
        for (; c < channels; c++) {
            int64_t off = o * channels + c;
            float s = scale[c];
            fq_one(y + off, codes ? codes + off : NULL, mask ? mask + off : NULL, x[off], 1.0f / s, s,
                   zp ? zp[c] : 0.0f, lo, hi, stochastic ? uniform1(key, off) : 0.0f, stochastic);
        }
    }
}

static void fake_quant_any(float *y, int8_t *codes, uint8_t *mask, const float *x, int64_t outer,
                           int64_t channels, int64_t inner, const float *scale,
                           const float *zero_point, int32_t qmin, int32_t qmax, bool stochastic,
                           uint32_t key) {
    const int64_t n = outer * channels * inner;
    const float lo = (float)qmin, hi = (float)qmax;
    uint8_t *cb = (uint8_t *)codes;
    if (inner == 1 && channels > 1) {
        int64_t per = channels >= CHUNK ? 1 : CHUNK / channels;
        int64_t ntask = (outer + per - 1) / per;
#pragma omp parallel for schedule(static) if (ntask > 1)
        for (int64_t t = 0; t < ntask; t++) {
            int64_t o1 = (t + 1) * per < outer ? (t + 1) * per : outer;
            fq_rows_channels(y, cb, mask, x, t * per, o1, channels, scale, zero_point, lo, hi,
                             stochastic, key);
        }
        return;
    }
    const int64_t nchunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (nchunks > 1)
    for (int64_t k = 0; k < nchunks; k++) {
        int64_t a = k * CHUNK, b = a + CHUNK < n ? a + CHUNK : n;
        FOR_SEGMENTS(a, b, inner, {
            int64_t c = row % channels, off = row * inner + i0;
            fq_segment(y + off, cb ? cb + off : NULL, mask ? mask + off : NULL, x + off, i1 - i0,
                       scale[c], zero_point ? zero_point[c] : 0.0f, lo, hi, stochastic, key, off);
        });
    }
}

static void fake_quant_avx2(float *y, int8_t *codes, uint8_t *mask, const float *x, int64_t outer,
                            int64_t channels, int64_t inner, const float *scale,
                            const float *zero_point, int32_t qmin, int32_t qmax) {
    fake_quant_any(y, codes, mask, x, outer, channels, inner, scale, zero_point, qmin, qmax, false, 0);
}

static void fake_quant_stochastic_avx2(float *y, int8_t *codes, uint8_t *mask, const float *x,
                                       int64_t outer, int64_t channels, int64_t inner,
                                       const float *scale, const float *zero_point, int32_t qmin,
                                       int32_t qmax, uint32_t key) {
    fake_quant_any(y, codes, mask, x, outer, channels, inner, scale, zero_point, qmin, qmax, true, key);
}

static void fake_binary_avx2(float *y, int8_t *codes, uint8_t *mask, const float *x, int64_t outer,
                             int64_t channels, int64_t inner, const float *scale) {
    const int64_t n = outer * channels * inner, nchunks = (n + CHUNK - 1) / CHUNK;
    uint8_t *cb = (uint8_t *)codes;
    const __m256 zero = _mm256_setzero_ps(), m1 = _mm256_set1_ps(-1.0f), p1 = _mm256_set1_ps(1.0f);
#pragma omp parallel for schedule(static) if (nchunks > 1)
    for (int64_t k = 0; k < nchunks; k++) {
        int64_t a = k * CHUNK, b = a + CHUNK < n ? a + CHUNK : n;
        FOR_SEGMENTS(a, b, inner, {
            int64_t c = row % channels, off = row * inner + i0, len = i1 - i0;
            const float s = scale[c], inv = 1.0f / s;
            const __m256 vs = _mm256_set1_ps(s), vns = _mm256_set1_ps(-s), vinv = _mm256_set1_ps(inv);
            int64_t i = off, end = off + len;
            for (; i + 8 <= end; i += 8) {
                __m256 u = _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv);
                __m256 pos = _mm256_cmp_ps(u, zero, _CMP_GT_OQ);
                _mm256_storeu_ps(y + i, _mm256_blendv_ps(vns, vs, pos));
                if (cb) store_bytes8(cb + i, _mm256_cvtps_epi32(_mm256_blendv_ps(m1, p1, pos)));
                if (mask) {
                    __m256 in = _mm256_and_ps(_mm256_cmp_ps(u, m1, _CMP_GE_OQ), _mm256_cmp_ps(u, p1, _CMP_LE_OQ));
                    store_bytes8(mask + i, _mm256_srli_epi32(_mm256_castps_si256(in), 31));
                }
            }
            for (; i < end; i++) {
                float u = x[i] * inv;
                bool p = u > 0.0f;
                y[i] = p ? s : -s;
                if (cb) cb[i] = p ? 1 : 0xff;
                if (mask) mask[i] = (uint8_t)(u >= -1.0f && u <= 1.0f);
            }
        });
    }
}

// ---------------------------------------------------------------------------
// reductions

static inline float hmin8(__m256 v) {
    float t[8];
    _mm256_storeu_ps(t, v);
    float m = t[0];
    for (int j = 1; j < 8; j++) m = t[j] < m ? t[j] : m;
    return m;
}

static inline float hmax8(__m256 v) {
    float t[8];
    _mm256_storeu_ps(t, v);
    float m = t[0];
    for (int j = 1; j < 8; j++) m = t[j] > m ? t[j] : m;
    return m;
}

static inline __m256 abs8(__m256 v) {
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

static void minmax_avx2(float *mn, float *mx, const float *x, int64_t outer, int64_t channels,
                        int64_t inner) {
    const int64_t n = outer * channels * inner;
    const __m256 pinf = _mm256_set1_ps(INFINITY), ninf = _mm256_set1_ps(-INFINITY);
    if (inner == 1 && channels > 1) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN && channels > 8)
        for (int64_t c = 0; c < channels; c += 8) {
            __m256i m = tail_mask(channels - c);
            __m256 lo = pinf, hi = ninf;
            for (int64_t o = 0; o < outer; o++) {
                __m256 v = _mm256_maskload_ps(x + o * channels + c, m);
                v = _mm256_blendv_ps(pinf, v, _mm256_castsi256_ps(m));
                lo = _mm256_min_ps(v, lo);
                v = _mm256_blendv_ps(ninf, v, _mm256_castsi256_ps(m));
                hi = _mm256_max_ps(v, hi);
            }
            __m256 z = _mm256_setzero_ps();
            _mm256_maskstore_ps(mn + c, m, _mm256_add_ps(lo, z));
            _mm256_maskstore_ps(mx + c, m, _mm256_add_ps(hi, z));
        }
        return;
    }
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN && channels > 1)
    for (int64_t c = 0; c < channels; c++) {
        __m256 lo = pinf, hi = ninf;
        float slo = INFINITY, shi = -INFINITY;
        for (int64_t o = 0; o < outer; o++) {
            const float *p = x + (o * channels + c) * inner;
            int64_t i = 0;
            for (; i + 8 <= inner; i += 8) {
                __m256 v = _mm256_loadu_ps(p + i);
                lo = _mm256_min_ps(v, lo);
                hi = _mm256_max_ps(v, hi);
            }
            for (; i < inner; i++) {
                slo = p[i] < slo ? p[i] : slo;
                shi = p[i] > shi ? p[i] : shi;
            }
        }
        float vlo = hmin8(lo), vhi = hmax8(hi);
        mn[c] = (vlo < slo ? vlo : slo) + 0.0f;
        mx[c] = (vhi > shi ? vhi : shi) + 0.0f;
    }
}

static void absmax_avx2(float *amax, const float *x, int64_t outer, int64_t channels,
                        int64_t inner) {
    const int64_t n = outer * channels * inner;
    if (inner == 1 && channels > 1) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN && channels > 8)
        for (int64_t c = 0; c < channels; c += 8) {
            __m256i m = tail_mask(channels - c);
            __m256 a = _mm256_setzero_ps();
            for (int64_t o = 0; o < outer; o++)
                a = _mm256_max_ps(abs8(_mm256_maskload_ps(x + o * channels + c, m)), a);
            _mm256_maskstore_ps(amax + c, m, a);
        }
        return;
    }
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN && channels > 1)
    for (int64_t c = 0; c < channels; c++) {
        __m256 a = _mm256_setzero_ps();
        for (int64_t o = 0; o < outer; o++) {
            const float *p = x + (o * channels + c) * inner;
            for (int64_t i = 0; i < inner; i += 8)
                a = _mm256_max_ps(abs8(_mm256_maskload_ps(p + i, tail_mask(inner - i))), a);
        }
        amax[c] = hmax8(a);
    }
}

static void abssum_avx2(double *sum, const float *x, int64_t outer, int64_t channels,
                        int64_t inner) {
    const int64_t n = outer * channels * inner;
    if (inner == 1 && channels > 1) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN && channels > 8)
        for (int64_t c = 0; c < channels; c += 8) {
            __m256i m = tail_mask(channels - c);
            __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
            for (int64_t o = 0; o < outer; o++) {
                __m256 v = abs8(_mm256_maskload_ps(x + o * channels + c, m));
                s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
                s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
            }
            double t[8];
            _mm256_storeu_pd(t, s0);
            _mm256_storeu_pd(t + 4, s1);
            for (int64_t j = 0; j < 8 && c + j < channels; j++) sum[c + j] = t[j];
        }
        return;
    }
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN && channels > 1)
    for (int64_t c = 0; c < channels; c++) {
        // Four registers hold partials 0-3, 4-7, 8-11, 12-15; masked lanes add +0.
        __m256d s[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
        for (int64_t o = 0; o < outer; o++) {
            const float *p = x + (o * channels + c) * inner;
            for (int64_t i = 0; i < inner; i += 16) {
                __m256 a = abs8(_mm256_maskload_ps(p + i, tail_mask(inner - i)));
                __m256 b = abs8(_mm256_maskload_ps(p + i + 8, tail_mask(inner - i - 8)));
                s[0] = _mm256_add_pd(s[0], _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
                s[1] = _mm256_add_pd(s[1], _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
                s[2] = _mm256_add_pd(s[2], _mm256_cvtps_pd(_mm256_castps256_ps128(b)));
                s[3] = _mm256_add_pd(s[3], _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1)));
            }
        }
        double t[16];
        for (int j = 0; j < 4; j++) _mm256_storeu_pd(t + 4 * j, s[j]);
        for (int w = 8; w >= 1; w /= 2)
            for (int j = 0; j < w; j++) t[j] += t[j + w];
        sum[c] = t[0];
    }
}

// ---------------------------------------------------------------------------
// backward

static void mask_backward_avx2(float *dx, const float *dy, const uint8_t *mask, int64_t n) {
    const int64_t nchunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t k = 0; k < nchunks; k++) {
        int64_t a = k * CHUNK, b = a + CHUNK < n ? a + CHUNK : n, i = a;
        for (; i + 8 <= b; i += 8) {
            int64_t m8;
            memcpy(&m8, mask + i, 8);
            __m256i on = _mm256_cmpgt_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(m8)), _mm256_setzero_si256());
            __m256 d = _mm256_loadu_ps(dx + i), g = _mm256_loadu_ps(dy + i);
            _mm256_storeu_ps(dx + i, _mm256_blendv_ps(d, _mm256_add_ps(d, g), _mm256_castsi256_ps(on)));
        }
        for (; i < b; i++)
            if (mask[i]) dx[i] += dy[i];
    }
}

const bg_quant_kernels bg_quant_kernels_avx2_table = {
    .isa_id = BG_ISA_AVX2,
    .isa = "avx2",
    .fake_quant = fake_quant_avx2,
    .fake_quant_stochastic = fake_quant_stochastic_avx2,
    .fake_binary = fake_binary_avx2,
    .minmax = minmax_avx2,
    .absmax = absmax_avx2,
    .abssum = abssum_avx2,
    .mask_backward = mask_backward_avx2,
};
