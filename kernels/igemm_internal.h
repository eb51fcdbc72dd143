/* igemm_internal.h — what igemm.c shares with its ISA variants
 * (igemm_avx2.c, igemm_vnni.c): the per-ISA tables (designated initialisers,
 * entries left NULL are taken from the ISA below) and the OpenMP threshold.
 * Declarations and macros only, so ISA-flagged files may include it. */
#ifndef BG_IGEMM_INTERNAL_H
#define BG_IGEMM_INTERNAL_H

#include "kernels/kernels.h"

/* A product goes parallel from this many multiply-adds (M*N*kp); below, the
 * fork costs more than it saves. */
#define BG_IGEMM_PAR_MIN ((int64_t)1 << 18)

/* One tile of a product: acc[m, n] for x rows m0 .. m0+mp-1 and weight rows
 * n0 .. n1-1 (w: packed ternary rows or int8 rows, as the ISA's gemm takes);
 * xs[0..mp) the sums of those x rows. */
typedef void (*bg_igemm_tile_fn)(int32_t *acc, const int8_t *x, const void *w, int64_t m0, int64_t mp,
                                 int64_t n0, int64_t n1, int64_t N, int64_t kp, const int32_t *xs);

/* The partition the ISA variants share: one chunk of mc x rows against all N
 * weight rows, in units of (4 x rows) x (nt weight rows), flattened with the
 * weight tile outer so that a thread's units share weights. */
static inline void bg_igemm_run_tiles(bg_igemm_tile_fn tile, int32_t *acc, const int8_t *x, const void *w,
                                      int64_t mc, int64_t N, int64_t kp, const int32_t *xs, int64_t nt) {
    const int64_t mt = (mc + 3) / 4, units = mt * ((N + nt - 1) / nt);
#pragma omp parallel for schedule(static) if (mc * N * kp >= BG_IGEMM_PAR_MIN && units > 1)
    for (int64_t u = 0; u < units; u++) {
        int64_t tn = u / mt, tm = u % mt;
        int64_t m0 = tm * 4, mp = mc - m0 < 4 ? mc - m0 : 4;
        int64_t n0 = tn * nt, n1 = n0 + nt < N ? n0 + nt : N;
        tile(acc, x, w, m0, mp, n0, n1, N, kp, xs + m0);
    }
}

extern const bg_int_kernels bg_int_kernels_ref_table;
extern const bg_int_kernels bg_int_kernels_avx2_table;
extern const bg_int_kernels bg_int_kernels_vnni_table;

#endif
