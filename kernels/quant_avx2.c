/* quant_avx2.c — the AVX2 variants of the quantization kernels: this file
 * defines the vector primitives with AVX2 intrinsics (8 lanes, tails through
 * vmaskmov and byte copies) and instantiates quant_simd.inc, which holds the
 * kernel bodies (bit-identical to quant.c's references), as
 * bg_quant_kernels_avx2_table. Compiled with -mavx2 -mfma; reached only
 * through dispatch.c. Calls nothing above kernels/. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/kernels_internal.h"
#include "kernels/quant_internal.h"

#define VL 8
#define FN(name) name##_avx2
#define TABLE bg_quant_kernels_avx2_table
#define ISA_ID BG_ISA_AVX2
#define ISA_NAME "avx2"

typedef __m256 vf;      /* 8 floats */
typedef __m256i vi;     /* 8 int32 */
typedef __m256i vmask;  /* lane j live when all ones */
typedef __m256d vd;     /* 4 doubles */

static inline vmask tmask(int64_t rem) {
    int r = rem >= VL ? VL : rem <= 0 ? 0 : (int)rem;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline vf ld(const float *p) { return _mm256_loadu_ps(p); }
static inline void st(float *p, vf v) { _mm256_storeu_ps(p, v); }
static inline vf ldz(const float *p, vmask m) { return _mm256_maskload_ps(p, m); }
static inline vf ldf(const float *p, vmask m, float fill) {
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
static inline void stm(float *p, vmask m, vf v) { _mm256_maskstore_ps(p, m, v); }

static inline vf vset(float a) { return _mm256_set1_ps(a); }
static inline vf vzero(void) { return _mm256_setzero_ps(); }
static inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
static inline vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
static inline vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
static inline vf vabs(vf a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
/* max of two non-negative floats as integers: NaN > Inf > every finite */
static inline vf vmax_nonneg(vf a, vf b) {
    return _mm256_castsi256_ps(_mm256_max_epi32(_mm256_castps_si256(a), _mm256_castps_si256(b)));
}
static inline vf vround_ne(vf a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline vf vfloor(vf a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
static inline vmask vge(vf a, vf b) { return _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_GE_OQ)); }
static inline vmask vle(vf a, vf b) { return _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_LE_OQ)); }
static inline vmask vgt(vf a, vf b) { return _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_GT_OQ)); }
static inline vmask mand(vmask a, vmask b) { return _mm256_and_si256(a, b); }
static inline vf vblend(vmask m, vf t, vf f) { return _mm256_blendv_ps(f, t, _mm256_castsi256_ps(m)); }
static inline vi vcvt_i32(vf a) { return _mm256_cvtps_epi32(a); }

/* A tail's first rem (< 8) bytes of b. */
static __attribute__((noinline)) void st_bytes_tail(uint8_t *p, int64_t rem, __m128i b) {
    uint8_t t[16];
    _mm_storeu_si128((__m128i *)(void *)t, b);
    if (rem > 0) memcpy(p, t, (size_t)rem);
}
/* The low bytes of 8 dwords, in order; only the first min(rem, 8) written. */
static inline void st_bytes(uint8_t *p, int64_t rem, vi v) {
    v = _mm256_and_si256(v, _mm256_set1_epi32(0xff));
    __m256i w = _mm256_packus_epi32(v, v);    // per 128-bit lane: d0..d3 d0..d3 as u16
    w = _mm256_packus_epi16(w, w);            // bytes d0..d3 repeated
    __m128i b = _mm_unpacklo_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    if (__builtin_expect(rem >= VL, 1))
        _mm_storel_epi64((__m128i *)(void *)p, b);
    else
        st_bytes_tail(p, rem, b);
}
static inline void st_flags(uint8_t *p, int64_t rem, vmask m) { st_bytes(p, rem, _mm256_srli_epi32(m, 31)); }
static inline vmask ld_flags(const uint8_t *p, int64_t rem) {
    int64_t m8 = 0;
    if (rem >= VL)
        memcpy(&m8, p, VL);
    else if (rem > 0)
        memcpy(&m8, p, (size_t)rem);
    return _mm256_cmpgt_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(m8)), _mm256_setzero_si256());
}

/* 8 lanes of the stochastic draw: hash32(hash32(idx) ^ key) >> 8, * 2^-24
 * (constants as in quant.c). */
static inline __m256i hash32x8(__m256i h) {
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
    h = _mm256_mullo_epi32(h, _mm256_set1_epi32((int)0x7feb352dU));
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 15));
    h = _mm256_mullo_epi32(h, _mm256_set1_epi32((int)0x846ca68bU));
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
    return h;
}
static inline vf uniformv(uint32_t key, int64_t index) {
    __m256i idx = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)index), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i h = hash32x8(_mm256_xor_si256(hash32x8(idx), _mm256_set1_epi32((int)key)));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(h, 8)), _mm256_set1_ps(0x1p-24f));
}

static inline vd vd_zero(void) { return _mm256_setzero_pd(); }
static inline vd vd_add(vd a, vd b) { return _mm256_add_pd(a, b); }
static inline vd vd_lo(vf v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
static inline vd vd_hi(vf v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
static inline void vd_st(double *p, vd v) { _mm256_storeu_pd(p, v); }

#include "kernels/quant_simd.inc"
