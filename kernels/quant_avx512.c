/* quant_avx512.c — the AVX-512 variants of the quantization kernels: this
 * file defines the vector primitives with AVX-512F/BW/DQ/VL intrinsics (16
 * lanes, tails through mask registers) and instantiates quant_simd.inc,
 * which holds the kernel bodies (bit-identical to quant.c's references), as
 * bg_quant_kernels_avx512_table. Reached only through dispatch.c. Calls
 * nothing above kernels/. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/kernels_internal.h"
#include "kernels/quant_internal.h"

#define VL 16
#define FN(name) name##_avx512
#define TABLE bg_quant_kernels_avx512_table
#define ISA_ID BG_ISA_AVX512
#define ISA_NAME "avx512"

typedef __m512 vf;        /* 16 floats */
typedef __m512i vi;       /* 16 int32 */
typedef __mmask16 vmask;  /* lane j live when bit j is set */
typedef __m512d vd;       /* 8 doubles */

static inline vmask tmask(int64_t rem) {
    return rem >= VL ? (vmask)0xffff : rem <= 0 ? (vmask)0 : (vmask)((1u << rem) - 1u);
}
static inline vf ld(const float *p) { return _mm512_loadu_ps(p); }
static inline void st(float *p, vf v) { _mm512_storeu_ps(p, v); }
static inline vf ldz(const float *p, vmask m) { return _mm512_maskz_loadu_ps(m, p); }
static inline vf ldf(const float *p, vmask m, float fill) { return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), m, p); }
static inline void stm(float *p, vmask m, vf v) { _mm512_mask_storeu_ps(p, m, v); }

static inline vf vset(float a) { return _mm512_set1_ps(a); }
static inline vf vzero(void) { return _mm512_setzero_ps(); }
static inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
static inline vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }
static inline vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
static inline vf vabs(vf a) { return _mm512_abs_ps(a); }
/* max of two non-negative floats as integers: NaN > Inf > every finite */
static inline vf vmax_nonneg(vf a, vf b) {
    return _mm512_castsi512_ps(_mm512_max_epi32(_mm512_castps_si512(a), _mm512_castps_si512(b)));
}
static inline vf vround_ne(vf a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline vf vfloor(vf a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
static inline vmask vge(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
static inline vmask vle(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
static inline vmask vgt(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
static inline vmask mand(vmask a, vmask b) { return (vmask)(a & b); }
static inline vf vblend(vmask m, vf t, vf f) { return _mm512_mask_blend_ps(m, f, t); }
static inline vi vcvt_i32(vf a) { return _mm512_cvtps_epi32(a); }

/* The low bytes of the live dwords (vpmovdb truncates). */
static inline void st_bytes(uint8_t *p, int64_t rem, vi v) { _mm512_mask_cvtepi32_storeu_epi8(p, tmask(rem), v); }
static inline void st_flags(uint8_t *p, int64_t rem, vmask m) {
    _mm_mask_storeu_epi8(p, tmask(rem), _mm_maskz_set1_epi8(m, 1));
}
static inline vmask ld_flags(const uint8_t *p, int64_t rem) {
    __m128i b = _mm_maskz_loadu_epi8(tmask(rem), p);
    return _mm_test_epi8_mask(b, b);
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
static inline vf uniformv(uint32_t key, int64_t index) {
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i idx = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)index), iota);
    __m512i h = hash32x16(_mm512_xor_si512(hash32x16(idx), _mm512_set1_epi32((int)key)));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(h, 8)), _mm512_set1_ps(0x1p-24f));
}

static inline vd vd_zero(void) { return _mm512_setzero_pd(); }
static inline vd vd_add(vd a, vd b) { return _mm512_add_pd(a, b); }
static inline vd vd_lo(vf v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
static inline vd vd_hi(vf v) { return _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)); }
static inline void vd_st(double *p, vd v) { _mm512_storeu_pd(p, v); }

#include "kernels/quant_simd.inc"
