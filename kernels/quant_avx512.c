/* quant_avx512.c — AVX-512 variants of the quantization kernels, bit-identical
 * to quant.c's references (same multiply by 1/s computed once, round to
 * nearest even with roundscale, MAXPS/MINPS selects, masked tails instead of
 * scalar loops). Entries left out here come from the AVX2 table. Calls
 * nothing above kernels/. */
#include <immintrin.h>
#include <math.h>

#include "kernels/kernels_internal.h"
#include "kernels/quant_internal.h"

#define RN (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define RD (_MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)

static inline __mmask16 tail_mask(int64_t rem) {
    return rem >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << rem) - 1u);
}


/* 16 lanes of the stochastic draw: hash32(hash32(idx) ^ key) >> 8, * 2^-24. */
static inline __m512i hash32x16(__m512i h) {
    h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
    h = _mm512_mullo_epi32(h, _mm512_set1_epi32((int)0x7feb352dU));
    h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 15));
    h = _mm512_mullo_epi32(h, _mm512_set1_epi32((int)0x846ca68bU));
    h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
    return h;
}

static inline __m512 uniform16(uint32_t key, int64_t index) {
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i idx = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)index), iota);
    __m512i h = hash32x16(_mm512_xor_si512(hash32x16(idx), _mm512_set1_epi32((int)key)));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(h, 8)), _mm512_set1_ps(0x1p-24f));
}

/* Stores the outputs of 16 lanes (m: the valid ones). */
static inline void store16(float *y, uint8_t *codes, uint8_t *mask, __mmask16 m, __m512 yv,
                           __m512 code, __mmask16 in) {
    _mm512_mask_storeu_ps(y, m, yv);
    if (codes) _mm512_mask_cvtepi32_storeu_epi8(codes, m, _mm512_cvtps_epi32(code));
    if (mask) _mm_mask_storeu_epi8(mask, m, _mm_maskz_set1_epi8(in, 1));
}

// ---------------------------------------------------------------------------
// fake quantization

/* q = round(x*inv) + z (nearest even, or floor(x*inv + r) when stochastic) */
static void fq_segment(float *y, uint8_t *codes, uint8_t *mask, const float *x, int64_t len,
                       float s, float z, float lo, float hi, bool stochastic, uint32_t key,
                       int64_t base) {
    const float inv = 1.0f / s;
    const __m512 vinv = _mm512_set1_ps(inv), vs = _mm512_set1_ps(s), vz = _mm512_set1_ps(z);
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    for (int64_t i = 0; i < len; i += 16) {
        __mmask16 m = tail_mask(len - i);
        __m512 u = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vinv);
        __m512 r = stochastic ? _mm512_roundscale_ps(_mm512_add_ps(u, uniform16(key, base + i)), RD)
                              : _mm512_roundscale_ps(u, RN);
        __m512 q = _mm512_add_ps(r, vz);
        __m512 code = _mm512_min_ps(_mm512_max_ps(q, vlo), vhi);
        __mmask16 in = _mm512_cmp_ps_mask(q, vlo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(q, vhi, _CMP_LE_OQ);
        store16(y + i, codes ? codes + i : NULL, mask ? mask + i : NULL, m,
                _mm512_mul_ps(_mm512_sub_ps(code, vz), vs), code, in);
    }
}

/* inner == 1: a row is one element per channel, so vectorise across
 * channels with per-lane scales (1/s by an IEEE division, as the scalar). */
static void fq_rows_channels(float *y, uint8_t *codes, uint8_t *mask, const float *x, int64_t o0,
                             int64_t o1, int64_t channels, const float *scale, const float *zp,
                             float lo, float hi, bool stochastic, uint32_t key) {
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi), one = _mm512_set1_ps(1.0f);
    for (int64_t o = o0; o < o1; o++)
        for (int64_t c = 0; c < channels; c += 16) {
            __mmask16 m = tail_mask(channels - c);
            int64_t off = o * channels + c;
            __m512 vs = _mm512_mask_loadu_ps(one, m, scale + c);
            __m512 vz = zp ? _mm512_maskz_loadu_ps(m, zp + c) : _mm512_setzero_ps();
            __m512 u = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + off), _mm512_div_ps(one, vs));
            __m512 r = stochastic ? _mm512_roundscale_ps(_mm512_add_ps(u, uniform16(key, off)), RD)
                                  : _mm512_roundscale_ps(u, RN);
            __m512 q = _mm512_add_ps(r, vz);
            __m512 code = _mm512_min_ps(_mm512_max_ps(q, vlo), vhi);
            __mmask16 in = _mm512_cmp_ps_mask(q, vlo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(q, vhi, _CMP_LE_OQ);
            store16(y + off, codes ? codes + off : NULL, mask ? mask + off : NULL, m,
                    _mm512_mul_ps(_mm512_sub_ps(code, vz), vs), code, in);
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
        int64_t per = channels >= CHUNK ? 1 : CHUNK / channels;   // rows per task
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

static void fake_quant_avx512(float *y, int8_t *codes, uint8_t *mask, const float *x,
                              int64_t outer, int64_t channels, int64_t inner, const float *scale,
                              const float *zero_point, int32_t qmin, int32_t qmax) {
    fake_quant_any(y, codes, mask, x, outer, channels, inner, scale, zero_point, qmin, qmax, false, 0);
}

static void fake_quant_stochastic_avx512(float *y, int8_t *codes, uint8_t *mask, const float *x,
                                         int64_t outer, int64_t channels, int64_t inner,
                                         const float *scale, const float *zero_point, int32_t qmin,
                                         int32_t qmax, uint32_t key) {
    fake_quant_any(y, codes, mask, x, outer, channels, inner, scale, zero_point, qmin, qmax, true, key);
}

static void fake_binary_avx512(float *y, int8_t *codes, uint8_t *mask, const float *x,
                               int64_t outer, int64_t channels, int64_t inner, const float *scale) {
    const int64_t n = outer * channels * inner, nchunks = (n + CHUNK - 1) / CHUNK;
    uint8_t *cb = (uint8_t *)codes;
    const __m512 zero = _mm512_setzero_ps(), m1 = _mm512_set1_ps(-1.0f), p1 = _mm512_set1_ps(1.0f);
#pragma omp parallel for schedule(static) if (nchunks > 1)
    for (int64_t k = 0; k < nchunks; k++) {
        int64_t a = k * CHUNK, b = a + CHUNK < n ? a + CHUNK : n;
        FOR_SEGMENTS(a, b, inner, {
            int64_t c = row % channels, off = row * inner + i0, len = i1 - i0;
            const float s = scale[c], inv = 1.0f / s;
            const __m512 vs = _mm512_set1_ps(s), vns = _mm512_set1_ps(-s), vinv = _mm512_set1_ps(inv);
            for (int64_t i = 0; i < len; i += 16) {
                __mmask16 m = tail_mask(len - i);
                __m512 u = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + off + i), vinv);
                __mmask16 pos = _mm512_cmp_ps_mask(u, zero, _CMP_GT_OQ);
                __mmask16 in = _mm512_cmp_ps_mask(u, m1, _CMP_GE_OQ) & _mm512_cmp_ps_mask(u, p1, _CMP_LE_OQ);
                store16(y + off + i, cb ? cb + off + i : NULL, mask ? mask + off + i : NULL, m,
                        _mm512_mask_blend_ps(pos, vns, vs), _mm512_mask_blend_ps(pos, m1, p1), in);
            }
        });
    }
}

// ---------------------------------------------------------------------------
// reductions

static void minmax_avx512(float *mn, float *mx, const float *x, int64_t outer, int64_t channels,
                          int64_t inner) {
    const int64_t n = outer * channels * inner;
    if (inner == 1 && channels > 1) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN && channels > 16)
        for (int64_t c = 0; c < channels; c += 16) {
            __mmask16 m = tail_mask(channels - c);
            __m512 lo = _mm512_set1_ps(INFINITY), hi = _mm512_set1_ps(-INFINITY);
            for (int64_t o = 0; o < outer; o++) {
                __m512 v = _mm512_maskz_loadu_ps(m, x + o * channels + c);
                lo = _mm512_min_ps(v, lo);
                hi = _mm512_max_ps(v, hi);
            }
            _mm512_mask_storeu_ps(mn + c, m, _mm512_add_ps(lo, _mm512_setzero_ps()));
            _mm512_mask_storeu_ps(mx + c, m, _mm512_add_ps(hi, _mm512_setzero_ps()));
        }
        return;
    }
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN && channels > 1)
    for (int64_t c = 0; c < channels; c++) {
        __m512 lo = _mm512_set1_ps(INFINITY), hi = _mm512_set1_ps(-INFINITY);
        for (int64_t o = 0; o < outer; o++) {
            const float *p = x + (o * channels + c) * inner;
            for (int64_t i = 0; i < inner; i += 16) {
                __mmask16 m = tail_mask(inner - i);
                __m512 v = _mm512_maskz_loadu_ps(m, p + i);
                lo = _mm512_mask_min_ps(lo, m, v, lo);
                hi = _mm512_mask_max_ps(hi, m, v, hi);
            }
        }
        mn[c] = _mm512_reduce_min_ps(lo) + 0.0f;
        mx[c] = _mm512_reduce_max_ps(hi) + 0.0f;
    }
}

static void absmax_avx512(float *amax, const float *x, int64_t outer, int64_t channels,
                          int64_t inner) {
    const int64_t n = outer * channels * inner;
    if (inner == 1 && channels > 1) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN && channels > 16)
        for (int64_t c = 0; c < channels; c += 16) {
            __mmask16 m = tail_mask(channels - c);
            __m512 a = _mm512_setzero_ps();
            for (int64_t o = 0; o < outer; o++)
                a = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + o * channels + c)), a);
            _mm512_mask_storeu_ps(amax + c, m, a);
        }
        return;
    }
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN && channels > 1)
    for (int64_t c = 0; c < channels; c++) {
        __m512 a = _mm512_setzero_ps();
        for (int64_t o = 0; o < outer; o++) {
            const float *p = x + (o * channels + c) * inner;
            for (int64_t i = 0; i < inner; i += 16) {
                __mmask16 m = tail_mask(inner - i);
                a = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(m, p + i)), a);
            }
        }
        amax[c] = _mm512_reduce_max_ps(a);
    }
}

static void abssum_avx512(double *sum, const float *x, int64_t outer, int64_t channels,
                          int64_t inner) {
    const int64_t n = outer * channels * inner;
    if (inner == 1 && channels > 1) {
        // Each channel is one chain in element order: the reference's partial 0.
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN && channels > 16)
        for (int64_t c = 0; c < channels; c += 16) {
            __mmask16 m = tail_mask(channels - c);
            __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
            for (int64_t o = 0; o < outer; o++) {
                __m512 v = _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + o * channels + c));
                s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
                s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
            }
            double t[16];
            _mm512_storeu_pd(t, s0);
            _mm512_storeu_pd(t + 8, s1);
            for (int64_t j = 0; j < 16 && c + j < channels; j++) sum[c + j] = t[j];
        }
        return;
    }
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN && channels > 1)
    for (int64_t c = 0; c < channels; c++) {
        // Lanes 0-7 and 8-15 are partials i % 16; masked lanes add +0.
        __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
        for (int64_t o = 0; o < outer; o++) {
            const float *p = x + (o * channels + c) * inner;
            for (int64_t i = 0; i < inner; i += 16) {
                __m512 v = _mm512_abs_ps(_mm512_maskz_loadu_ps(tail_mask(inner - i), p + i));
                s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
                s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
            }
        }
        double t[16];
        _mm512_storeu_pd(t, s0);
        _mm512_storeu_pd(t + 8, s1);
        for (int w = 8; w >= 1; w /= 2)
            for (int j = 0; j < w; j++) t[j] += t[j + w];
        sum[c] = t[0];
    }
}

// ---------------------------------------------------------------------------
// backward

static void mask_backward_avx512(float *dx, const float *dy, const uint8_t *mask, int64_t n) {
    const int64_t nchunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t k = 0; k < nchunks; k++) {
        int64_t a = k * CHUNK, b = a + CHUNK < n ? a + CHUNK : n;
        for (int64_t i = a; i < b; i += 16) {
            __mmask16 m = tail_mask(b - i);
            __m128i mb = _mm_maskz_loadu_epi8(m, mask + i);
            __mmask16 on = _mm_test_epi8_mask(mb, mb);
            __m512 d = _mm512_maskz_loadu_ps(on, dx + i);
            __m512 g = _mm512_maskz_loadu_ps(on, dy + i);
            _mm512_mask_storeu_ps(dx + i, on, _mm512_add_ps(d, g));
        }
    }
}

const bg_quant_kernels bg_quant_kernels_avx512_table = {
    .isa_id = BG_ISA_AVX512,
    .isa = "avx512",
    .fake_quant = fake_quant_avx512,
    .fake_quant_stochastic = fake_quant_stochastic_avx512,
    .fake_binary = fake_binary_avx512,
    .minmax = minmax_avx512,
    .absmax = absmax_avx512,
    .abssum = abssum_avx512,
    .mask_backward = mask_backward_avx512,
};
