/* dispatch.c — picks the kernel table once (call_once) from the CPU's
 * features, capped by BG_ISA=ref|avx2|avx512. Calls the ISA tables of
 * eltwise*.c; nothing above kernels/. */
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#include "kernels/kernels_internal.h"

// ---------------------------------------------------------------------------
// tables

static bg_kernels tables[BG_ISA_COUNT];
static once_flag tables_once = ONCE_FLAG_INIT;

void bg_fill_table_gaps(void *dst, const void *lower, size_t first, size_t size) {
    typedef void (*fn)(void);
    size_t count = (size - first) / sizeof(fn);
    fn *d = (fn *)(void *)((char *)dst + first);
    fn const *l = (fn const *)(const void *)((const char *)lower + first);
    for (size_t i = 0; i < count; i++)
        if (!d[i]) d[i] = l[i];
}

static bool isa_ok[BG_ISA_COUNT];
static bg_isa isa_best = BG_ISA_REF;
static once_flag isa_once = ONCE_FLAG_INIT;

static bg_isa isa_cap_from_env(void) {
    const char *e = getenv("BG_ISA");
    if (!e || !*e) return BG_ISA_AVX512;
    if (strcmp(e, "ref") == 0) return BG_ISA_REF;
    if (strcmp(e, "avx2") == 0) return BG_ISA_AVX2;
    return BG_ISA_AVX512;   /* "avx512" or anything unknown: no cap */
}

/* clang < 15 does not know "f16c" in __builtin_cpu_supports (the BG_FUZZ
 * build uses clang); every CPU with AVX2 and FMA has F16C. */
#if defined(__clang__) && __clang_major__ < 15
#define CPU_HAS_F16C() true
#else
#define CPU_HAS_F16C() __builtin_cpu_supports("f16c")
#endif

static void isa_init(void) {
    __builtin_cpu_init();
    /* libgcc's checks include OS support (XCR0) for the register state */
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                CPU_HAS_F16C();
    bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                  __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512vl");
    isa_ok[BG_ISA_REF] = true;
    isa_ok[BG_ISA_AVX2] = avx2;
    isa_ok[BG_ISA_AVX512] = avx512;
    bg_isa cap = isa_cap_from_env();
    for (int i = BG_ISA_REF; i <= (int)cap && i < BG_ISA_COUNT; i++)
        if (isa_ok[i]) isa_best = (bg_isa)i;
}

bool bg_isa_usable(bg_isa isa) {
    call_once(&isa_once, isa_init);
    return (int)isa >= 0 && isa < BG_ISA_COUNT && isa_ok[isa];
}

bg_isa bg_isa_selected(void) {
    call_once(&isa_once, isa_init);
    return isa_best;
}

static void tables_init(void) {
    tables[BG_ISA_REF] = bg_kernels_ref_table;
    tables[BG_ISA_AVX2] = bg_kernels_avx2_table;
    tables[BG_ISA_AVX512] = bg_kernels_avx512_table;
    for (int i = BG_ISA_AVX2; i < BG_ISA_COUNT; i++) {
        bg_fill_table_gaps(&tables[i], &tables[i - 1], offsetof(bg_kernels, add), sizeof(bg_kernels));
        tables[i].isa_id = (bg_isa)i;
    }
    tables[BG_ISA_AVX2].isa = "avx2";
    tables[BG_ISA_AVX512].isa = "avx512";
}

const bg_kernels *bg_kernels_get(void) {
    call_once(&tables_once, tables_init);
    return &tables[bg_isa_selected()];
}

const bg_kernels *bg_kernels_for(bg_isa isa) {
    if (!bg_isa_usable(isa)) return NULL;
    call_once(&tables_once, tables_init);
    return &tables[isa];
}
