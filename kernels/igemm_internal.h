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

extern const bg_int_kernels bg_int_kernels_ref_table;
extern const bg_int_kernels bg_int_kernels_avx2_table;
extern const bg_int_kernels bg_int_kernels_vnni_table;

#endif
