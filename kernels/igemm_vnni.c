/* igemm_vnni.c — AVX-512 VNNI variants of the integer matmul kernels
 * (vpdpbusd: u8 x s8, four products summed into each int32 lane, exact and
 * non-saturating); igemm.c holds the _ref specification they match bit for
 * bit. Used only when the CPU reports avx512vnni (igemm.c checks).
 *
 * Ternary: a packed block (32 bytes = 128 weights) is broadcast to both
 * halves of a zmm and masked with [0x03 x32 | 0x0C x32] and [0x30 x32 |
 * 0xC0 x32]: the lanes then hold code(w[i]) | 4 code(w[i+32]) and
 * 16 code(w[i+64]) | 64 code(w[i+96]) against x[0..63] and x[64..127]
 * (no shifts; the products are at most 192*128, exact). The powers of four
 * are divided out of each int32 lane at the end (exact: every term is a
 * multiple; a lane stays below 512 kp, so kp < 2^22), and sum code*x -
 * sum x gives sum w*x. Batches (from 8 x rows for ternary, 32 for int8)
 * use weight panels in VNNI layout instead (below).
 * int8: (w + 128) as u8 times x, minus 128 sum x (mod 2^32, exact when
 * the true sum fits int32). */
#include <immintrin.h>
#include <string.h>

#include "kernels/igemm_internal.h"
#include "kernels/kernels_internal.h"

#define INLINE static inline __attribute__((always_inline))
/* GCC 12's partial redundancy elimination copies every vpdpbusd accumulator
 * to another register and back around each instruction in the unrolled
 * tiles (two extra moves per product: 0.75x the speed); off for those. */
#if defined(__clang__)
#define NO_PRE
#else
#define NO_PRE __attribute__((optimize("no-tree-pre")))
#endif

/* x rows are handled in chunks of this many, with their sums on the stack */
enum { MCHUNK = 256 };

/* sum of one padded x row (kp a multiple of 128) */
INLINE int32_t row_sum(const int8_t *x, int64_t kp) {
    const __m512i ones = _mm512_set1_epi8(1);
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    for (int64_t k = 0; k < kp; k += 128) {
        s0 = _mm512_dpbusd_epi32(s0, ones, _mm512_loadu_si512(x + k));
        s1 = _mm512_dpbusd_epi32(s1, ones, _mm512_loadu_si512(x + k + 64));
    }
    return _mm512_reduce_add_epi32(_mm512_add_epi32(s0, s1));
}

static int32_t wrap_sub(int32_t a, int32_t b) { return (int32_t)((uint32_t)a - (uint32_t)b); }

// ---------------------------------------------------------------------------
// ternary

INLINE __m512i bcast_block(const uint8_t *p) {
    return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(const void *)p));
}

/* P x rows (m0..) times R weight rows (n0..), all of kp; two accumulators
 * per pair (the two masks), divided out at the end. */
INLINE void ternary_tile(int32_t *acc, const int8_t *x, const uint8_t *w, int64_t m0, int64_t n0,
                         int64_t N, int64_t kp, const int32_t *xs, const int P, const int R) {
    const __m512i mlo = _mm512_inserti64x4(_mm512_set1_epi8(0x03), _mm256_set1_epi8(0x0C), 1);
    const __m512i mhi = _mm512_inserti64x4(_mm512_set1_epi8(0x30), _mm256_set1_epi8((char)0xC0), 1);
    const __m512i shlo = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi32(2), 1);
    const __m512i shhi = _mm512_inserti64x4(_mm512_set1_epi32(4), _mm256_set1_epi32(6), 1);
    const int64_t rb = kp / 4;
    const int8_t *xr = x + m0 * kp;
    const uint8_t *wr = w + n0 * rb;
    __m512i a[4][8], b[4][8];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++)
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) a[p][r] = b[p][r] = _mm512_setzero_si512();
    for (int64_t blk = 0; blk < kp / 128; blk++) {
        __m512i lo[8], hi[8];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512i v = bcast_block(wr + r * rb + blk * 32);
            lo[r] = _mm512_and_si512(v, mlo);
            hi[r] = _mm512_and_si512(v, mhi);
        }
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) {
            __m512i x0 = _mm512_loadu_si512(xr + p * kp + blk * 128);
            __m512i x1 = _mm512_loadu_si512(xr + p * kp + blk * 128 + 64);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                a[p][r] = _mm512_dpbusd_epi32(a[p][r], lo[r], x0);
                b[p][r] = _mm512_dpbusd_epi32(b[p][r], hi[r], x1);
            }
        }
    }
#pragma GCC unroll 4
    for (int p = 0; p < P; p++)
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512i s = _mm512_add_epi32(_mm512_srav_epi32(a[p][r], shlo),
                                         _mm512_srav_epi32(b[p][r], shhi));
            acc[(m0 + p) * N + n0 + r] = _mm512_reduce_add_epi32(s) - xs[p];
        }
}

/* A tile of up to 4 x rows (mp of them) by the weight rows [n0, n1). */
NO_PRE static void ternary_unit(int32_t *acc, const int8_t *x, const void *wv, int64_t m0,
                                int64_t mp, int64_t n0, int64_t n1, int64_t N, int64_t kp,
                                const int32_t *xs) {
    const uint8_t *w = wv;
    int64_t n = n0;
    if (mp == 1) {
        for (; n + 8 <= n1; n += 8) ternary_tile(acc, x, w, m0, n, N, kp, xs, 1, 8);
    }
    /* two accumulators per pair: 4 x rows by 2 weight rows fill 16 zmm */
    for (; n + 2 <= n1; n += 2) {
        switch (mp) {
        case 1: ternary_tile(acc, x, w, m0, n, N, kp, xs, 1, 2); break;
        case 2: ternary_tile(acc, x, w, m0, n, N, kp, xs, 2, 2); break;
        case 3: ternary_tile(acc, x, w, m0, n, N, kp, xs, 3, 2); break;
        default: ternary_tile(acc, x, w, m0, n, N, kp, xs, 4, 2); break;
        }
    }
    for (; n < n1; n++) {
        switch (mp) {
        case 1: ternary_tile(acc, x, w, m0, n, N, kp, xs, 1, 1); break;
        case 2: ternary_tile(acc, x, w, m0, n, N, kp, xs, 2, 1); break;
        case 3: ternary_tile(acc, x, w, m0, n, N, kp, xs, 3, 1); break;
        default: ternary_tile(acc, x, w, m0, n, N, kp, xs, 4, 1); break;
        }
    }
}

// ---------------------------------------------------------------------------
// int8

INLINE void s8_tile(int32_t *acc, const int8_t *x, const int8_t *w, int64_t m0, int64_t n0,
                    int64_t N, int64_t kp, const int32_t *xs, const int P, const int R) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const int8_t *xr = x + m0 * kp, *wr = w + n0 * kp;
    __m512i a[4][8];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++)
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) a[p][r] = _mm512_setzero_si512();
    for (int64_t k = 0; k < kp; k += 64) {
        __m512i u[8];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)   /* w + 128 as u8 (1..255) */
            u[r] = _mm512_xor_si512(_mm512_loadu_si512(wr + r * kp + k), flip);
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) {
            __m512i xv = _mm512_loadu_si512(xr + p * kp + k);
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) a[p][r] = _mm512_dpbusd_epi32(a[p][r], u[r], xv);
        }
    }
#pragma GCC unroll 4
    for (int p = 0; p < P; p++)
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
            acc[(m0 + p) * N + n0 + r] =
                wrap_sub(_mm512_reduce_add_epi32(a[p][r]), (int32_t)((uint32_t)xs[p] << 7));
}

static void s8_unit(int32_t *acc, const int8_t *x, const void *wv, int64_t m0, int64_t mp,
                    int64_t n0, int64_t n1, int64_t N, int64_t kp, const int32_t *xs) {
    const int8_t *w = wv;
    int64_t n = n0;
    if (mp == 1) {
        for (; n + 8 <= n1; n += 8) s8_tile(acc, x, w, m0, n, N, kp, xs, 1, 8);
    }
    for (; n + 4 <= n1; n += 4) {
        switch (mp) {
        case 1: s8_tile(acc, x, w, m0, n, N, kp, xs, 1, 4); break;
        case 2: s8_tile(acc, x, w, m0, n, N, kp, xs, 2, 4); break;
        case 3: s8_tile(acc, x, w, m0, n, N, kp, xs, 3, 4); break;
        default: s8_tile(acc, x, w, m0, n, N, kp, xs, 4, 4); break;
        }
    }
    for (; n < n1; n++) {
        switch (mp) {
        case 1: s8_tile(acc, x, w, m0, n, N, kp, xs, 1, 1); break;
        case 2: s8_tile(acc, x, w, m0, n, N, kp, xs, 2, 1); break;
        case 3: s8_tile(acc, x, w, m0, n, N, kp, xs, 3, 1); break;
        default: s8_tile(acc, x, w, m0, n, N, kp, xs, 4, 1); break;
        }
    }
}

// ---------------------------------------------------------------------------
// batches (M >= PANEL_MIN_M_*): weight panels in VNNI layout, no horizontal sums.
// A panel is 16 weight rows; for a K chunk, each 64-byte vector holds, for
// the 16 rows (lanes), 4 consecutive weights' codes (bytes). Built with one
// gather per packed dword offset: the dword at byte 4q of a packed block
// holds codes of k = 32j + 4q .. 32j + 4q + 3 at bit 2j of each byte, so
// (gather >> 2j) & 0x03 is the panel vector for k = 32j + 4q. Then each x
// row's 4 weights are broadcast (one dword) and one vpdpbusd adds 16
// outputs per panel; two panels (32 weight rows) share each broadcast.
// acc starts at -corr and ends in memory with a masked store.

enum { PT = 16, KC = 512 };
/* x rows per register tile: 12 with one panel, 8 with two (16 accumulators) */
enum { PM1 = 12, PM2 = 8 };
/* from this many x rows on (fewer do not repay the gathers) */
enum { PANEL_MIN_M_TERNARY = 8, PANEL_MIN_M_S8 = 32 };

/* P x rows from m times H panels (buf[t*H + h]; h = 1 is rows n0 + 16..) */
INLINE void panel_rows(int32_t *acc, const int8_t *x, const __m512i *buf, int64_t m, int64_t N,
                       int64_t n0, const __mmask16 *rmask, int64_t kp, int64_t k0, int64_t kc,
                       const int32_t *corr, const int P, const int H) {
    __m512i a[PM1][2];
#pragma GCC unroll 12
    for (int p = 0; p < P; p++)
#pragma GCC unroll 2
        for (int h = 0; h < H; h++) {
            int32_t *dst = acc + (m + p) * N + n0 + 16 * h;
            /* the first chunk starts at -corr, the next ones where it ended */
            if (k0 == 0)
                _mm512_mask_storeu_epi32(dst, rmask[h], _mm512_set1_epi32(wrap_sub(0, corr[p])));
            a[p][h] = _mm512_maskz_loadu_epi32(rmask[h], dst);
        }
    const int8_t *xr = x + m * kp + k0;
    for (int64_t t = 0; t < kc / 4; t++) {
        __m512i wv[2];
#pragma GCC unroll 2
        for (int h = 0; h < H; h++) wv[h] = _mm512_load_si512(buf + t * H + h);
#pragma GCC unroll 12
        for (int p = 0; p < P; p++) {
            int32_t v;
            memcpy(&v, xr + p * kp + 4 * t, 4);
            const __m512i xb = _mm512_set1_epi32(v);
#pragma GCC unroll 2
            for (int h = 0; h < H; h++) a[p][h] = _mm512_dpbusd_epi32(a[p][h], wv[h], xb);
        }
    }
#pragma GCC unroll 12
    for (int p = 0; p < P; p++)
#pragma GCC unroll 2
        for (int h = 0; h < H; h++)
            _mm512_mask_storeu_epi32(acc + (m + p) * N + n0 + 16 * h, rmask[h], a[p][h]);
}

/* x rows [m, m1) through the register tiles */
INLINE void panel_all_rows(int32_t *acc, const int8_t *x, const __m512i *buf, int64_t m,
                           int64_t m1, int64_t N, int64_t n0, const __mmask16 *rmask, int64_t kp,
                           int64_t k0, int64_t kc, const int32_t *corr, const int H) {
    const int64_t pm = H == 2 ? PM2 : PM1;
    for (; m < m1; m += pm, corr += pm) {
        const int64_t mp = m1 - m < pm ? m1 - m : pm;
#define PANEL_ROWS(P) panel_rows(acc, x, buf, m, N, n0, rmask, kp, k0, kc, corr, P, H)
        switch (mp) {
        case 1: PANEL_ROWS(1); break;
        case 2: PANEL_ROWS(2); break;
        case 3: PANEL_ROWS(3); break;
        case 4: PANEL_ROWS(4); break;
        case 5: PANEL_ROWS(5); break;
        case 6: PANEL_ROWS(6); break;
        case 7: PANEL_ROWS(7); break;
        case 8: PANEL_ROWS(8); break;
        case 9: PANEL_ROWS(9); break;
        case 10: PANEL_ROWS(10); break;
        case 11: PANEL_ROWS(11); break;
        default: PANEL_ROWS(12); break;
        }
#undef PANEL_ROWS
    }
}

/* rows [m0, m1) of x (corr: what each acc row starts at, negated; [0] for
 * m0) times weight rows [n0, n0 + 32) (fewer at the end of N), ternary
 * (packed) or int8 weights. int8 panels hold w + 128 as u8 (corr = 128 sum x). */
NO_PRE static void panel(bool ternary, int32_t *acc, const int8_t *x, const void *w, int64_t m0,
                         int64_t m1, int64_t n0, int64_t N, int64_t kp, const int32_t *corr) {
    __m512i buf[2 * KC / 4];
    const __m512i three = _mm512_set1_epi8(3), flip = _mm512_set1_epi8((char)0x80);
    const int64_t rb = ternary ? kp / 4 : kp;   /* bytes per weight row */
    const int64_t nr = N - n0 < 2 * PT ? N - n0 : 2 * PT;
    const int H = nr > PT ? 2 : 1;
    __mmask16 rmask[2];
    rmask[0] = (__mmask16)(nr >= PT ? 0xFFFF : (1u << nr) - 1);
    rmask[1] = (__mmask16)(nr >= 2 * PT ? 0xFFFF : nr > PT ? (1u << (nr - PT)) - 1 : 0);
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                                             12, 13, 14, 15),
                                           _mm512_set1_epi32((int32_t)rb));
    for (int64_t k0 = 0; k0 < kp; k0 += KC) {
        const int64_t kc = kp - k0 < KC ? kp - k0 : KC;
        for (int h = 0; h < H; h++) {
            const uint8_t *wb = (const uint8_t *)w + (n0 + PT * h) * rb;
            if (ternary) {
                for (int64_t blk = 0; blk < kc / 128; blk++) {
                    const uint8_t *base = wb + (k0 + blk * 128) / 4;
                    __m512i *d = buf + blk * 32 * H + h;
                    for (int q = 0; q < 8; q++) {
                        __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), rmask[h],
                                                                idx, base + 4 * q, 1);
                        d[q * H] = _mm512_and_si512(g, three);
                        d[(8 + q) * H] = _mm512_and_si512(_mm512_srli_epi32(g, 2), three);
                        d[(16 + q) * H] = _mm512_and_si512(_mm512_srli_epi32(g, 4), three);
                        d[(24 + q) * H] = _mm512_and_si512(_mm512_srli_epi32(g, 6), three);
                    }
                }
            } else {
                for (int64_t t = 0; t < kc / 4; t++)
                    buf[t * H + h] = _mm512_xor_si512(
                        _mm512_mask_i32gather_epi32(flip, rmask[h], idx, wb + k0 + 4 * t, 1), flip);
            }
        }
        if (H == 2)
            panel_all_rows(acc, x, buf, m0, m1, N, n0, rmask, kp, k0, kc, corr, 2);
        else
            panel_all_rows(acc, x, buf, m0, m1, N, n0, rmask, kp, k0, kc, corr, 1);
    }
}

// ---------------------------------------------------------------------------
// the partition: x rows in chunks of MCHUNK (their sums on the stack), each
// chunk cut into units of (4 x rows) x (NT weight rows), flattened with the
// weight tile outer so that a thread's units share weights.

enum { NT = 32 };

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
        for (int64_t m = 0; m < mc; m++) xs[m] = row_sum(x + (c0 + m) * kp, kp);
        if (mc >= (ternary ? PANEL_MIN_M_TERNARY : PANEL_MIN_M_S8)) {
            /* panels of 32 weight rows; x rows split too when panels are few */
            if (!ternary)
                for (int64_t m = 0; m < mc; m++) xs[m] = (int32_t)((uint32_t)xs[m] << 7);
            const int64_t np = (N + 2 * PT - 1) / (2 * PT);
            int64_t ms = np >= 8 ? 1 : (8 + np - 1) / np;
            if (ms > mc / PM2) ms = mc / PM2 > 0 ? mc / PM2 : 1;
            const int64_t units = np * ms;
#pragma omp parallel for schedule(static) if (mc * N * kp >= BG_IGEMM_PAR_MIN && units > 1)
            for (int64_t u = 0; u < units; u++) {
                int64_t tp = u / ms, tm = u % ms;
                int64_t m0 = mc * tm / ms, m1 = mc * (tm + 1) / ms;
                panel(ternary, acc + c0 * N, x + c0 * kp, w, m0, m1, tp * 2 * PT, N, kp, xs + m0);
            }
            continue;
        }
        bg_igemm_run_tiles(ternary ? ternary_unit : s8_unit, acc + c0 * N, x + c0 * kp, w, mc, N, kp, xs, NT);
    }
}

static void gemm_ternary_vnni(int32_t *acc, const int8_t *x, const uint8_t *w, int64_t M,
                              int64_t N, int64_t kp) {
    run_units(true, acc, x, w, M, N, kp);
}

static void gemm_s8_vnni(int32_t *acc, const int8_t *x, const int8_t *w, int64_t M, int64_t N,
                         int64_t kp) {
    run_units(false, acc, x, w, M, N, kp);
}

// ---------------------------------------------------------------------------
// activations: the fake-quant element (roundscale to nearest even, then
// MAXPS/MINPS selects, NaN -> qmin), 16 at a time, masked tails

static void quantize_rows_vnni(int8_t *q, const float *x, int64_t M, int64_t K, int64_t kp,
                               const float *scale, int64_t scale_stride, int32_t z, int32_t qmin,
                               int32_t qmax) {
    const __m512 lo = _mm512_set1_ps((float)qmin), hi = _mm512_set1_ps((float)qmax);
    const __m512 zf = _mm512_set1_ps((float)z);
#pragma omp parallel for schedule(static) if (M * K >= BG_PAR_MIN && M > 1)
    for (int64_t m = 0; m < M; m++) {
        const __m512 inv = _mm512_set1_ps(1.0f / scale[m * scale_stride]);
        const float *xr = x + m * K;
        int8_t *qr = q + m * kp;
        for (int64_t k = 0; k < K; k += 16) {
            __mmask16 msk = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
            __m512 v = _mm512_maskz_loadu_ps(msk, xr + k);
            v = _mm512_roundscale_ps(_mm512_mul_ps(v, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, zf), lo), hi);
            _mm512_mask_cvtepi32_storeu_epi8(qr + k, msk, _mm512_cvtps_epi32(v));
        }
        if (kp > K) memset(qr + K, 0, (size_t)(kp - K));
    }
}

static void absmax_rows_vnni(float *amax, const float *x, int64_t M, int64_t K) {
    const __m512i absmask = _mm512_set1_epi32(0x7FFFFFFF);
#pragma omp parallel for schedule(static) if (M * K >= BG_PAR_MIN && M > 1)
    for (int64_t m = 0; m < M; m++) {
        const float *xr = x + m * K;
        /* |x| as integers: NaN > Inf > every finite, so a NaN stays (as in
           the quant absmax) */
        __m512i a = _mm512_setzero_si512();
        for (int64_t k = 0; k < K; k += 16) {
            __mmask16 msk = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
            __m512i v = _mm512_and_si512(_mm512_castps_si512(_mm512_maskz_loadu_ps(msk, xr + k)), absmask);
            a = _mm512_max_epi32(v, a);
        }
        int32_t r = _mm512_reduce_max_epi32(a);
        memcpy(&amax[m], &r, 4);
    }
}

const bg_int_kernels bg_int_kernels_vnni_table = {
    .isa_id = BG_ISA_AVX512,
    .isa = "avx512_vnni",
    .gemm_ternary = gemm_ternary_vnni,
    .gemm_s8 = gemm_s8_vnni,
    .quantize_rows = quantize_rows_vnni,
    .absmax_rows = absmax_rows_vnni,
};
