/* eltwise_avx512.c — the AVX-512 variants of bg_kernels: this file defines
 * the vector primitives with AVX-512F/DQ intrinsics (16 floats, tails
 * through k-masks) and instantiates eltwise_simd.inc, which holds the kernel
 * bodies, as bg_kernels_avx512_table. Compiled with -mavx512f/bw/dq/vl;
 * reached only through dispatch.c after __builtin_cpu_supports says so. */
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "kernels/kernels_internal.h"

#define VL 16
#define FN(name) name##_avx512
#define TABLE bg_kernels_avx512_table

typedef __m512 vf;        /* 16 floats */
typedef __m512i vi;       /* 16 int32 */
typedef __mmask16 vmask;  /* lane i live when bit i is set */
typedef __mmask16 vcmp;
typedef __m512d vd;       /* 8 doubles: half a vf */

static inline vf ld(const float *p) { return _mm512_loadu_ps(p); }
static inline vf ld_u8(const uint8_t *p) {   /* VL bytes as floats */
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)p)));
}
static inline void st(float *p, vf v) { _mm512_storeu_ps(p, v); }
/* lanes [0, rem) live; rem >= VL means all */
static inline vmask tmask(int64_t rem) {
    return rem >= VL ? (vmask)0xFFFF : (vmask)((1u << (unsigned)rem) - 1u);
}
static inline vf ldm(const float *p, vmask m) { return _mm512_maskz_loadu_ps(m, p); }
static inline vf ldmf(const float *p, vmask m, float fill) {
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), m, p);
}
static inline void stm(float *p, vmask m, vf v) { _mm512_mask_storeu_ps(p, m, v); }
static inline vf vsel_mask(vmask m, vf t, vf f) { return _mm512_mask_blend_ps(m, f, t); }

static inline vf vset(float a) { return _mm512_set1_ps(a); }
static inline vf vzero(void) { return _mm512_setzero_ps(); }
static inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
static inline vf vsqrt(vf a) { return _mm512_sqrt_ps(a); }
static inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }   /* a*b + c */
static inline vf vfms(vf a, vf b, vf c) { return _mm512_fmsub_ps(a, b, c); }   /* a*b - c */
static inline vf vfnma(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); } /* c - a*b */
/* max/min return the second operand when either is NaN */
static inline vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
static inline vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }
static inline vf vabs(vf a) { return _mm512_abs_ps(a); }
static inline vf vneg(vf a) { return _mm512_xor_ps(a, _mm512_set1_ps(-0.0f)); }
/* |mag| with the sign of sgn */
static inline vf vcopysign(vf mag, vf sgn) {
    vf sb = _mm512_set1_ps(-0.0f);
    return _mm512_or_ps(_mm512_andnot_ps(sb, mag), _mm512_and_ps(sb, sgn));
}
static inline vf vround(vf a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

static inline vcmp vlt(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
static inline vcmp vgt(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
static inline vcmp visnan(vf a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
static inline vcmp vcmp_false(void) { return 0; }
static inline vcmp vcmp_or(vcmp a, vcmp b) { return (vcmp)(a | b); }
static inline bool vany(vcmp c) { return c != 0; }
static inline vf vsel(vcmp c, vf t, vf f) { return _mm512_mask_blend_ps(c, f, t); }

/* integral float -> int32 (exact for the values used) */
static inline vi vcvti(vf a) { return _mm512_cvtps_epi32(a); }
static inline vi vsrai1(vi a) { return _mm512_srai_epi32(a, 1); }
static inline vi visub(vi a, vi b) { return _mm512_sub_epi32(a, b); }
/* 2^n for n in [-126, 127] */
static inline vf vpow2i(vi n) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n, _mm512_set1_epi32(127)), 23));
}

static inline float vhmax(vf a) { return _mm512_reduce_max_ps(a); }

static inline vd vdzero(void) { return _mm512_setzero_pd(); }
static inline vd vdset(double a) { return _mm512_set1_pd(a); }
static inline vd vdadd(vd a, vd b) { return _mm512_add_pd(a, b); }
static inline vd vdsub(vd a, vd b) { return _mm512_sub_pd(a, b); }
static inline vd vdfma(vd a, vd b, vd c) { return _mm512_fmadd_pd(a, b, c); }
static inline vd vcvtlo(vf a) { return _mm512_cvtps_pd(_mm512_castps512_ps256(a)); }
static inline vd vcvthi(vf a) { return _mm512_cvtps_pd(_mm512_extractf32x8_ps(a, 1)); }
static inline vf vcvt_pd_ps(vd lo, vd hi) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo)), _mm512_cvtpd_ps(hi), 1);
}
/* lanes summed in a fixed order (a tree: 4+4, 2+2, 1+1) */
static inline double vdhsum(vd a) {
    __m256d s4 = _mm256_add_pd(_mm512_castpd512_pd256(a), _mm512_extractf64x4_pd(a, 1));
    __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)));
}

#include "kernels/eltwise_simd.inc"
