/* igemm_avx2.c — AVX2 variants of the integer matmul kernels (igemm.c holds
 * the _ref specification they match bit for bit). */
#include <immintrin.h>

#include "kernels/igemm_internal.h"

const bg_int_kernels bg_int_kernels_avx2_table = {
    .isa_id = BG_ISA_AVX2,
    .isa = "avx2",
};
