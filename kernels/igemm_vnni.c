/* igemm_vnni.c — AVX-512 VNNI variants of the integer matmul kernels
 * (vpdpbusd; igemm.c holds the _ref specification they match bit for bit).
 * Used only when the CPU reports avx512vnni. */
#include <immintrin.h>

#include "kernels/igemm_internal.h"

const bg_int_kernels bg_int_kernels_vnni_table = {
    .isa_id = BG_ISA_AVX512,
    .isa = "avx512_vnni",
};
