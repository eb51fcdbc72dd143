/* igemm.c — the scalar references (`_ref`) of the integer matmul kernels
 * (the specification igemm_avx2.c and igemm_vnni.c match bit for bit), the
 * packed ternary layout (pack / unpack) and the run-time choice of the
 * bg_int_kernels table (dispatch.c's CPU features and BG_ISA cap; the
 * AVX-512 level is the VNNI file when the CPU has AVX512_VNNI). Portable
 * C11 + libm + OpenMP. */
#include <math.h>
#include <string.h>
#include <threads.h>

#include "kernels/igemm_internal.h"
#include "kernels/kernels_internal.h"

// ---------------------------------------------------------------------------
// padding and the packed ternary layout

int64_t bg_int_padded_k(int64_t k) {
    if (k <= 0) return 0;
    return (k + BG_TERNARY_BLOCK - 1) / BG_TERNARY_BLOCK * BG_TERNARY_BLOCK;
}

/* code(w) = w + 1; values outside {-1,0,+1} are clamped to it */
static inline uint8_t ternary_code(int8_t w) { return (uint8_t)(w > 0 ? 2 : w < 0 ? 0 : 1); }

void bg_ternary_pack(uint8_t *dst, const int8_t *w, int64_t rows, int64_t k) {
    const int64_t kp = bg_int_padded_k(k), nb = kp / BG_TERNARY_BLOCK;
    for (int64_t r = 0; r < rows; r++) {
        const int8_t *wr = w + r * k;
        uint8_t *d = dst + r * (kp / 4);
        for (int64_t b = 0; b < nb; b++) {
            for (int i = 0; i < 32; i++) {
                uint8_t byte = 0;
                for (int j = 0; j < 4; j++) {
                    int64_t e = b * BG_TERNARY_BLOCK + i + 32 * j;
                    uint8_t c = e < k ? ternary_code(wr[e]) : 1;   /* padding: weight 0 */
                    byte |= (uint8_t)(c << (2 * j));
                }
                d[b * 32 + i] = byte;
            }
        }
    }
}

/* the weight at element e of a packed row */
static inline int32_t ternary_at(const uint8_t *row, int64_t e) {
    int64_t b = e / BG_TERNARY_BLOCK, r = e % BG_TERNARY_BLOCK;
    return (int32_t)((row[b * 32 + (r & 31)] >> (2 * (r >> 5))) & 3) - 1;
}

void bg_ternary_unpack(int8_t *w, const uint8_t *src, int64_t rows, int64_t k) {
    const int64_t kp = bg_int_padded_k(k);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t e = 0; e < k; e++) w[r * k + e] = (int8_t)ternary_at(src + r * (kp / 4), e);
}

// ---------------------------------------------------------------------------
// products (each output is one int32 sum in k order; any order gives the same
// exact integer)

static void gemm_ternary_ref(int32_t *acc, const int8_t *x, const uint8_t *w, int64_t M,
                             int64_t N, int64_t kp) {
#pragma omp parallel for schedule(static) if (M * N * kp >= BG_IGEMM_PAR_MIN && N > 1)
    for (int64_t n = 0; n < N; n++) {
        const uint8_t *wr = w + n * (kp / 4);
        for (int64_t m = 0; m < M; m++) {
            const int8_t *xr = x + m * kp;
            int32_t s = 0;
            for (int64_t e = 0; e < kp; e++) s += (int32_t)xr[e] * ternary_at(wr, e);
            acc[m * N + n] = s;
        }
    }
}

static void gemm_s8_ref(int32_t *acc, const int8_t *x, const int8_t *w, int64_t M, int64_t N,
                        int64_t kp) {
#pragma omp parallel for schedule(static) if (M * N * kp >= BG_IGEMM_PAR_MIN && N > 1)
    for (int64_t n = 0; n < N; n++) {
        const int8_t *wr = w + n * kp;
        for (int64_t m = 0; m < M; m++) {
            const int8_t *xr = x + m * kp;
            int32_t s = 0;
            for (int64_t e = 0; e < kp; e++) s += (int32_t)xr[e] * (int32_t)wr[e];
            acc[m * N + n] = s;
        }
    }
}

// ---------------------------------------------------------------------------
// activations

/* The fake-quant kernel's element (quant.c fq_segment): q = nearbyintf(x*inv)
 * + z; v = q > lo ? q : lo; code = v < hi ? v : hi (NaN -> lo); the byte is
 * (uint8_t)(int32_t)code, as fake_quant writes its codes. */
static void quantize_rows_ref(int8_t *q, const float *x, int64_t M, int64_t K, int64_t kp,
                              const float *scale, int64_t scale_stride, int32_t z, int32_t qmin,
                              int32_t qmax) {
    const float lo = (float)qmin, hi = (float)qmax, zf = (float)z;
#pragma omp parallel for schedule(static) if (M * K >= BG_PAR_MIN && M > 1)
    for (int64_t m = 0; m < M; m++) {
        const float inv = 1.0f / scale[m * scale_stride];
        const float *xr = x + m * K;
        uint8_t *qr = (uint8_t *)q + m * kp;
        for (int64_t k = 0; k < K; k++) {
            float v = nearbyintf(xr[k] * inv) + zf;
            v = v > lo ? v : lo;
            v = v < hi ? v : hi;
            qr[k] = (uint8_t)(int32_t)v;
        }
        if (kp > K) memset(qr + K, 0, (size_t)(kp - K));
    }
}

static void absmax_rows_ref(float *amax, const float *x, int64_t M, int64_t K) {
#pragma omp parallel for schedule(static) if (M * K >= BG_PAR_MIN && M > 1)
    for (int64_t m = 0; m < M; m++) {
        float a = 0.0f;
        for (int64_t k = 0; k < K; k++) {
            float v = fabsf(x[m * K + k]);
            a = v > a || v != v ? v : a;   /* a NaN stays, as in the quant absmax */
        }
        amax[m] = a;
    }
}

// ---------------------------------------------------------------------------
// tables and the run-time choice

const bg_int_kernels bg_int_kernels_ref_table = {
    .isa_id = BG_ISA_REF,
    .isa = "ref",
    .gemm_ternary = gemm_ternary_ref,
    .gemm_s8 = gemm_s8_ref,
    .quantize_rows = quantize_rows_ref,
    .absmax_rows = absmax_rows_ref,
};

static bg_int_kernels itables[BG_ISA_COUNT];
static once_flag itables_once = ONCE_FLAG_INIT;

/* The ISA choice (CPU features, BG_ISA cap) is dispatch.c's. The AVX-512
 * level runs the VNNI kernels when the CPU has AVX512_VNNI, else the AVX2
 * ones (named "avx512"). */
static void itables_init(void) {
    __builtin_cpu_init();
    bool vnni = __builtin_cpu_supports("avx512vnni");
    itables[BG_ISA_REF] = bg_int_kernels_ref_table;
    itables[BG_ISA_AVX2] = bg_int_kernels_avx2_table;
    if (vnni) {
        itables[BG_ISA_AVX512] = bg_int_kernels_vnni_table;
    } else {
        memset(&itables[BG_ISA_AVX512], 0, sizeof itables[BG_ISA_AVX512]);
    }
    for (int i = BG_ISA_AVX2; i < BG_ISA_COUNT; i++) {
        bg_fill_table_gaps(&itables[i], &itables[i - 1], offsetof(bg_int_kernels, gemm_ternary),
                           sizeof(bg_int_kernels));
        itables[i].isa_id = (bg_isa)i;
    }
    itables[BG_ISA_AVX2].isa = "avx2";
    itables[BG_ISA_AVX512].isa = vnni ? "avx512_vnni" : "avx512";
}

const bg_int_kernels *bg_int_kernels_get(void) {
    call_once(&itables_once, itables_init);
    return &itables[bg_isa_selected()];
}

const bg_int_kernels *bg_int_kernels_for(bg_isa isa) {
    if (!bg_isa_usable(isa)) return NULL;
    call_once(&itables_once, itables_init);
    return &itables[isa];
}

#if !defined(BG_WITH_DNNL)
bool bg_gemm_s8_dnnl(int32_t *acc, const int8_t *x, const int8_t *w, int64_t M, int64_t N,
                     int64_t K, int64_t ldx, int64_t ldw) {
    (void)acc, (void)x, (void)w, (void)M, (void)N, (void)K, (void)ldx, (void)ldw;
    return false;
}
#endif
