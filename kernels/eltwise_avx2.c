/* eltwise_avx2.c — the AVX2+FMA variants of bg_kernels: this file defines
 * the vector primitives with AVX2 intrinsics (8 floats, tails through
 * vmaskmov) and instantiates eltwise_simd.inc, which holds the kernel
 * bodies, as bg_kernels_avx2_table. Compiled with -mavx2 -mfma; reached only
 * through dispatch.c after __builtin_cpu_supports("avx2") and ("fma"). */
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "kernels/kernels_internal.h"

#define VL 8
#define FN(name) name##_avx2
#define TABLE bg_kernels_avx2_table

typedef __m256 vf;      /* 8 floats */
typedef __m256i vi;     /* 8 int32 */
typedef __m256i vmask;  /* lane i live when all ones */
typedef __m256 vcmp;    /* a comparison's result */
typedef __m256d vd;     /* 4 doubles: half a vf */

static inline vf ld(const float *p) { return _mm256_loadu_ps(p); }
static inline vf ld_u8(const uint8_t *p) {   /* VL bytes as floats */
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p)));
}
static inline void st(float *p, vf v) { _mm256_storeu_ps(p, v); }
/* lanes [0, rem) live; rem >= VL means all */
static inline vmask tmask(int64_t rem) {
    int r = rem > VL ? VL : (int)rem;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline vf ldm(const float *p, vmask m) { return _mm256_maskload_ps(p, m); }
static inline vf ldmf(const float *p, vmask m, float fill) {
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
static inline void stm(float *p, vmask m, vf v) { _mm256_maskstore_ps(p, m, v); }
static inline vf vsel_mask(vmask m, vf t, vf f) {
    return _mm256_blendv_ps(f, t, _mm256_castsi256_ps(m));
}

static inline vf vset(float a) { return _mm256_set1_ps(a); }
static inline vf vzero(void) { return _mm256_setzero_ps(); }
static inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
static inline vf vsqrt(vf a) { return _mm256_sqrt_ps(a); }
static inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }   /* a*b + c */
static inline vf vfms(vf a, vf b, vf c) { return _mm256_fmsub_ps(a, b, c); }   /* a*b - c */
static inline vf vfnma(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); } /* c - a*b */
/* max/min return the second operand when either is NaN */
static inline vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
static inline vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
static inline vf vabs(vf a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
static inline vf vneg(vf a) { return _mm256_xor_ps(a, _mm256_set1_ps(-0.0f)); }
/* |mag| with the sign of sgn */
static inline vf vcopysign(vf mag, vf sgn) {
    vf sb = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(_mm256_andnot_ps(sb, mag), _mm256_and_ps(sb, sgn));
}
static inline vf vround(vf a) {
    return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

static inline vcmp vlt(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
static inline vcmp vgt(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
static inline vcmp visnan(vf a) { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
static inline vcmp vcmp_false(void) { return _mm256_setzero_ps(); }
static inline vcmp vcmp_or(vcmp a, vcmp b) { return _mm256_or_ps(a, b); }
static inline bool vany(vcmp c) { return _mm256_movemask_ps(c) != 0; }
static inline vf vsel(vcmp c, vf t, vf f) { return _mm256_blendv_ps(f, t, c); }

/* integral float -> int32 (exact for the values used) */
static inline vi vcvti(vf a) { return _mm256_cvtps_epi32(a); }
static inline vi vsrai1(vi a) { return _mm256_srai_epi32(a, 1); }
static inline vi visub(vi a, vi b) { return _mm256_sub_epi32(a, b); }
/* 2^n for n in [-126, 127] */
static inline vf vpow2i(vi n) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
}

static inline float vhmax(vf a) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline vd vdzero(void) { return _mm256_setzero_pd(); }
static inline vd vdset(double a) { return _mm256_set1_pd(a); }
static inline vd vdadd(vd a, vd b) { return _mm256_add_pd(a, b); }
static inline vd vdsub(vd a, vd b) { return _mm256_sub_pd(a, b); }
static inline vd vdfma(vd a, vd b, vd c) { return _mm256_fmadd_pd(a, b, c); }
static inline vd vcvtlo(vf a) { return _mm256_cvtps_pd(_mm256_castps256_ps128(a)); }
static inline vd vcvthi(vf a) { return _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)); }
static inline vf vcvt_pd_ps(vd lo, vd hi) {
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(lo)), _mm256_cvtpd_ps(hi), 1);
}
/* lanes summed in a fixed order: (0+2) + (1+3) */
static inline double vdhsum(vd a) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

#include "kernels/eltwise_simd.inc"
