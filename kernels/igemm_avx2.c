/* igemm_avx2.c — AVX2 variants of the integer matmul kernels (igemm.c holds
 * the _ref specification they match bit for bit).
 *
 * Ternary: a packed block (32 bytes = 128 weights) gives its four groups of
 * 32 codes {0,1,2} by shifts and one mask; vpmaddubsw (u8 x s8 pairs into
 * int16: at most 2*2*128 per pair, four blocks' groups summed stay below
 * 2^11, exact), vpmaddwd by ones into int32, and sum code*x - sum x.
 * int8: vpmaddubsw(|x|, sign(w, x)) = x*w pairwise, exact because |x| <= 128
 * and |w| <= 127 (the pair sum is at most 2*128*127 = 32512 < 2^15). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/igemm_internal.h"
#include "kernels/kernels_internal.h"

#define INLINE static inline __attribute__((always_inline))

enum { MCHUNK = 256, NT = 32 };

INLINE int32_t hsum8(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* sum of one padded x row (kp a multiple of 128) */
INLINE int32_t row_sum(const int8_t *x, int64_t kp) {
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    __m256i s = _mm256_setzero_si256();
    for (int64_t k = 0; k < kp; k += 64) {
        __m256i a = _mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i *)(const void *)(x + k)));
        __m256i b = _mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i *)(const void *)(x + k + 32)));
        s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_add_epi16(a, b), ones16));
    }
    return hsum8(s);
}

INLINE __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

// ---------------------------------------------------------------------------
// ternary: P x rows against one weight row

INLINE void ternary_tile(int32_t *acc, const int8_t *x, const uint8_t *w, int64_t m0, int64_t n,
                         int64_t N, int64_t kp, const int32_t *xs, const int P) {
    const __m256i three = _mm256_set1_epi8(3), ones16 = _mm256_set1_epi16(1);
    const int8_t *xr = x + m0 * kp;
    const uint8_t *wr = w + n * (kp / 4);
    __m256i a[4];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) a[p] = _mm256_setzero_si256();
    for (int64_t blk = 0; blk < kp / 128; blk++) {
        __m256i v = load32(wr + blk * 32);
        __m256i c0 = _mm256_and_si256(v, three);
        __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(v, 2), three);
        __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(v, 4), three);
        __m256i c3 = _mm256_and_si256(_mm256_srli_epi16(v, 6), three);
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) {
            const int8_t *xb = xr + p * kp + blk * 128;
            __m256i s = _mm256_add_epi16(
                _mm256_add_epi16(_mm256_maddubs_epi16(c0, load32(xb)),
                                 _mm256_maddubs_epi16(c1, load32(xb + 32))),
                _mm256_add_epi16(_mm256_maddubs_epi16(c2, load32(xb + 64)),
                                 _mm256_maddubs_epi16(c3, load32(xb + 96))));
            a[p] = _mm256_add_epi32(a[p], _mm256_madd_epi16(s, ones16));
        }
    }
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) acc[(m0 + p) * N + n] = hsum8(a[p]) - xs[p];
}

static void ternary_unit(int32_t *acc, const int8_t *x, const void *wv, int64_t m0, int64_t mp,
                         int64_t n0, int64_t n1, int64_t N, int64_t kp, const int32_t *xs) {
    const uint8_t *w = wv;
    for (int64_t n = n0; n < n1; n++) {
        switch (mp) {
        case 1: ternary_tile(acc, x, w, m0, n, N, kp, xs, 1); break;
        case 2: ternary_tile(acc, x, w, m0, n, N, kp, xs, 2); break;
        case 3: ternary_tile(acc, x, w, m0, n, N, kp, xs, 3); break;
        default: ternary_tile(acc, x, w, m0, n, N, kp, xs, 4); break;
        }
    }
}

// ---------------------------------------------------------------------------
// int8: one x row against R weight rows

INLINE void s8_tile(int32_t *acc, const int8_t *x, const int8_t *w, int64_t m, int64_t n0,
                    int64_t N, int64_t kp, const int R) {
    const __m256i ones16 = _mm256_set1_epi16(1);
    const int8_t *xr = x + m * kp, *wr = w + n0 * kp;
    __m256i a[4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) a[r] = _mm256_setzero_si256();
    for (int64_t k = 0; k < kp; k += 32) {
        __m256i xv = load32(xr + k), ax = _mm256_abs_epi8(xv);   /* -128 -> 0x80 = 128 as u8 */
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            __m256i sw = _mm256_sign_epi8(load32(wr + r * kp + k), xv);
            a[r] = _mm256_add_epi32(a[r], _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sw), ones16));
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) acc[m * N + n0 + r] = hsum8(a[r]);
}

static void s8_unit(int32_t *acc, const int8_t *x, const void *wv, int64_t m0, int64_t mp,
                    int64_t n0, int64_t n1, int64_t N, int64_t kp, const int32_t *xs) {
    const int8_t *w = wv;
    (void)xs;
    /* weight rows outer: their 4 kp bytes stay in L1 across the x rows */
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4)
        for (int64_t m = m0; m < m0 + mp; m++) s8_tile(acc, x, w, m, n, N, kp, 4);
    for (; n < n1; n++)
        for (int64_t m = m0; m < m0 + mp; m++) s8_tile(acc, x, w, m, n, N, kp, 1);
}

// ---------------------------------------------------------------------------
// the partition (as in igemm_vnni.c): x rows in chunks of MCHUNK with their
// sums on the stack, units of (4 x rows) x (NT weight rows), weight tile outer

static void run_units(bool ternary, int32_t *acc, const int8_t *x, const void *w, int64_t M,
                      int64_t N, int64_t kp) {
    if (M <= 0 || N <= 0) return;
    if (kp <= 0) {
        memset(acc, 0, (size_t)(M * N) * sizeof *acc);
        return;
    }
    for (int64_t c0 = 0; c0 < M; c0 += MCHUNK) {
        const int64_t mc = M - c0 < MCHUNK ? M - c0 : MCHUNK;
        int32_t xs[MCHUNK];
        if (ternary)
            for (int64_t m = 0; m < mc; m++) xs[m] = row_sum(x + (c0 + m) * kp, kp);
        bg_igemm_run_tiles(ternary ? ternary_unit : s8_unit, acc + c0 * N, x + c0 * kp, w, mc, N, kp, xs, NT);
    }
}

static void gemm_ternary_avx2(int32_t *acc, const int8_t *x, const uint8_t *w, int64_t M,
                              int64_t N, int64_t kp) {
    run_units(true, acc, x, w, M, N, kp);
}

static void gemm_s8_avx2(int32_t *acc, const int8_t *x, const int8_t *w, int64_t M, int64_t N,
                         int64_t kp) {
    run_units(false, acc, x, w, M, N, kp);
}

// ---------------------------------------------------------------------------
// activations: the fake-quant element, 32 at a time (round to nearest even,
// MAXPS/MINPS selects so NaN -> qmin, the code's low byte as fake_quant
// stores it), the tail as in igemm.c

INLINE __m256i code8(__m256 x, __m256 inv, __m256 zf, __m256 lo, __m256 hi) {
    __m256 v = _mm256_round_ps(_mm256_mul_ps(x, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, zf), lo), hi);
    return _mm256_and_si256(_mm256_cvtps_epi32(v), _mm256_set1_epi32(0xFF));
}

static void quantize_rows_avx2(int8_t *q, const float *x, int64_t M, int64_t K, int64_t kp,
                               const float *scale, int64_t scale_stride, int32_t z, int32_t qmin,
                               int32_t qmax) {
    const float flo = (float)qmin, fhi = (float)qmax, fz = (float)z;
    const __m256 lo = _mm256_set1_ps(flo), hi = _mm256_set1_ps(fhi), zf = _mm256_set1_ps(fz);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
#pragma omp parallel for schedule(static) if (M * K >= BG_PAR_MIN && M > 1)
    for (int64_t m = 0; m < M; m++) {
        const float sinv = 1.0f / scale[m * scale_stride];
        const __m256 inv = _mm256_set1_ps(sinv);
        const float *xr = x + m * K;
        uint8_t *qr = (uint8_t *)q + m * kp;
        int64_t k = 0;
        for (; k + 32 <= K; k += 32) {
            __m256i a = code8(_mm256_loadu_ps(xr + k), inv, zf, lo, hi);
            __m256i b = code8(_mm256_loadu_ps(xr + k + 8), inv, zf, lo, hi);
            __m256i c = code8(_mm256_loadu_ps(xr + k + 16), inv, zf, lo, hi);
            __m256i d = code8(_mm256_loadu_ps(xr + k + 24), inv, zf, lo, hi);
            __m256i ab = _mm256_packus_epi32(a, b), cd = _mm256_packus_epi32(c, d);
            __m256i v = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), perm);
            _mm256_storeu_si256((__m256i *)(void *)(qr + k), v);
        }
        for (; k < K; k++) {
            float v = nearbyintf(xr[k] * sinv) + fz;
            v = v > flo ? v : flo;
            v = v < fhi ? v : fhi;
            qr[k] = (uint8_t)(int32_t)v;
        }
        if (kp > K) memset(qr + K, 0, (size_t)(kp - K));
    }
}

static void absmax_rows_avx2(float *amax, const float *x, int64_t M, int64_t K) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
#pragma omp parallel for schedule(static) if (M * K >= BG_PAR_MIN && M > 1)
    for (int64_t m = 0; m < M; m++) {
        const float *xr = x + m * K;
        /* |x| as integers: NaN > Inf > every finite, so a NaN stays (as in
           the quant absmax) */
        __m256i a = _mm256_setzero_si256();
        int64_t k = 0;
        for (; k + 8 <= K; k += 8)
            a = _mm256_max_epi32(_mm256_castps_si256(_mm256_and_ps(_mm256_loadu_ps(xr + k), absmask)), a);
        uint32_t lanes[8], r = 0;
        _mm256_storeu_si256((__m256i *)lanes, a);
        for (int i = 0; i < 8; i++) r = lanes[i] > r ? lanes[i] : r;
        for (; k < K; k++) {
            float v = fabsf(xr[k]);
            uint32_t b;
            memcpy(&b, &v, 4);
            r = b > r ? b : r;
        }
        memcpy(&amax[m], &r, 4);
    }
}

const bg_int_kernels bg_int_kernels_avx2_table = {
    .isa_id = BG_ISA_AVX2,
    .isa = "avx2",
    .gemm_ternary = gemm_ternary_avx2,
    .gemm_s8 = gemm_s8_avx2,
    .quantize_rows = quantize_rows_avx2,
    .absmax_rows = absmax_rows_avx2,
};
