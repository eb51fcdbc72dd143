/* dispatch.c — picks the kernel table once (call_once) from the CPU's
 * features, capped by BG_ISA=ref|avx2|avx512, and sets the thread count of
 * our OpenMP kernels, OpenBLAS and oneDNN together. Calls the ISA tables of
 * eltwise*.c and blas.c; nothing above kernels/. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#include "kernels/kernels_internal.h"

// ---------------------------------------------------------------------------
// tables

static bg_kernels tables[BG_ISA_COUNT];
static bool usable[BG_ISA_COUNT];
static bg_isa best = BG_ISA_REF;
static once_flag tables_once = ONCE_FLAG_INIT;

/* Every function pointer of `dst` that is NULL is taken from `lower`, so an
 * ISA file may leave entries to the ISA below it. */
static void fill_gaps(bg_kernels *dst, const bg_kernels *lower) {
    /* bg_kernels is isa_id, isa, then only function pointers */
    typedef void (*fn)(void);
    size_t first = offsetof(bg_kernels, add);
    size_t count = (sizeof(bg_kernels) - first) / sizeof(fn);
    fn *d = (fn *)(void *)((char *)dst + first);
    fn const *l = (fn const *)(const void *)((const char *)lower + first);
    for (size_t i = 0; i < count; i++)
        if (!d[i]) d[i] = l[i];
}

static bg_isa isa_cap_from_env(void) {
    const char *e = getenv("BG_ISA");
    if (!e || !*e) return BG_ISA_AVX512;
    if (strcmp(e, "ref") == 0) return BG_ISA_REF;
    if (strcmp(e, "avx2") == 0) return BG_ISA_AVX2;
    return BG_ISA_AVX512;   /* "avx512" or anything unknown: no cap */
}

static void tables_init(void) {
    __builtin_cpu_init();
    /* libgcc's checks include OS support (XCR0) for the register state */
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                __builtin_cpu_supports("f16c");
    bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                  __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512vl");

    tables[BG_ISA_REF] = bg_kernels_ref_table;
    usable[BG_ISA_REF] = true;
    tables[BG_ISA_AVX2] = bg_kernels_avx2_table;
    fill_gaps(&tables[BG_ISA_AVX2], &tables[BG_ISA_REF]);
    tables[BG_ISA_AVX2].isa_id = BG_ISA_AVX2;
    tables[BG_ISA_AVX2].isa = "avx2";
    usable[BG_ISA_AVX2] = avx2;
    tables[BG_ISA_AVX512] = bg_kernels_avx512_table;
    fill_gaps(&tables[BG_ISA_AVX512], &tables[BG_ISA_AVX2]);
    tables[BG_ISA_AVX512].isa_id = BG_ISA_AVX512;
    tables[BG_ISA_AVX512].isa = "avx512";
    usable[BG_ISA_AVX512] = avx512;

    bg_isa cap = isa_cap_from_env();
    best = BG_ISA_REF;
    for (int i = BG_ISA_REF; i <= (int)cap && i < BG_ISA_COUNT; i++)
        if (usable[i]) best = (bg_isa)i;
}

const bg_kernels *bg_kernels_get(void) {
    call_once(&tables_once, tables_init);
    return &tables[best];
}

const bg_kernels *bg_kernels_for(bg_isa isa) {
    call_once(&tables_once, tables_init);
    if ((int)isa < 0 || isa >= BG_ISA_COUNT || !usable[isa]) return NULL;
    return &tables[isa];
}

// ---------------------------------------------------------------------------
// threads

/* One pool: our kernels and oneDNN (built on OpenMP) share the OpenMP team;
 * OpenBLAS is told the same count. */
void bg_set_num_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
    bg_openblas_set_num_threads(n);
}

int bg_get_num_threads(void) { return omp_get_max_threads(); }
