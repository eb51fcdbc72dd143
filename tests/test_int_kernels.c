/* test_int_kernels.c — the integer matmul kernels (kernels.h "integer
 * matmul"): the padded K, the packed ternary layout (hand-computed bytes,
 * round trips with K not a multiple of 128, zero padding), every ISA variant
 * of gemm_ternary / gemm_s8 bit-exact against a naive int64 product and the
 * reference on random shapes (M 1..130, N 1..70, K 1..600) and on extreme
 * values, quantize_rows against the fake-quant kernel's codes (ties, NaN,
 * inf, zero points, per-tensor), absmax_rows against the quant absmax, and
 * bg_gemm_s8_dnnl against the reference. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "tests/test_util.h"

static bg_rng rng;

static int64_t rnd(int64_t lo, int64_t hi) { return lo + (int64_t)bg_rng_below(&rng, (uint64_t)(hi - lo + 1)); }

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

/* acc[m,n] = sum x w in int64 from unpadded int8 operands (row strides ldx, ldw) */
static void naive(int64_t *acc, const int8_t *x, const int8_t *w, int64_t M, int64_t N, int64_t K,
                  int64_t ldx, int64_t ldw) {
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            int64_t s = 0;
            for (int64_t k = 0; k < K; k++) s += (int64_t)x[m * ldx + k] * w[n * ldw + k];
            acc[m * N + n] = s;
        }
}

static int64_t first_mismatch(const int32_t *got, const int64_t *want, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if ((int64_t)got[i] != want[i]) return i;
    return -1;
}

// ---------------------------------------------------------------------------
// layout

static void test_padded_k(void) {
    CHECK(bg_int_padded_k(0) == 0);
    CHECK(bg_int_padded_k(1) == 128);
    CHECK(bg_int_padded_k(127) == 128);
    CHECK(bg_int_padded_k(128) == 128);
    CHECK(bg_int_padded_k(129) == 256);
    CHECK(bg_int_padded_k(600) == 640);
    CHECK(bg_int_padded_k(4096) == 4096);
}

static void test_pack_bytes(void) {
    /* k = 1, w = +1: byte 0 = code 2 | three padding codes 1 (bits 2-7) */
    int8_t w1[1] = {1};
    uint8_t p[64];
    memset(p, 0xAA, sizeof p);
    bg_ternary_pack(p, w1, 1, 1);
    CHECK_MSG(p[0] == 0x56, "byte 0 = 0x%02x, want 0x56", p[0]);
    bool pad_ok = true;
    for (int i = 1; i < 32; i++) pad_ok &= p[i] == 0x55;
    CHECK_MSG(pad_ok, "padding bytes of a k = 1 row are 0x55 (four zero weights)");
    CHECK_MSG(p[32] == 0xAA, "a k = 1 row is 32 bytes, byte 32 untouched");

    /* k = 256: w[33] = -1 (byte 1 bits 2-3), w[127] = +1 (byte 31 bits 6-7),
     * w[128+64] = -1 (block 1 byte 0 bits 4-5), others 0 */
    int8_t w2[256];
    memset(w2, 0, sizeof w2);
    w2[33] = -1, w2[127] = 1, w2[192] = -1;
    bg_ternary_pack(p, w2, 1, 256);
    CHECK_MSG(p[1] == 0x51, "byte 1 = 0x%02x, want 0x51", p[1]);
    CHECK_MSG(p[31] == 0x95, "byte 31 = 0x%02x, want 0x95", p[31]);
    CHECK_MSG(p[32] == 0x45, "byte 32 = 0x%02x, want 0x45", p[32]);
    CHECK_MSG(p[0] == 0x55 && p[33] == 0x55 && p[63] == 0x55, "zero weights are 0x55 bytes");
}

static void test_pack_round_trip(void) {
    const int64_t ks[] = {1, 5, 31, 32, 33, 127, 128, 129, 200, 255, 256, 300, 600};
    for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
        int64_t k = ks[t], kp = bg_int_padded_k(k), rows = 3;
        int8_t *w = xmalloc((size_t)(rows * k)), *back = xmalloc((size_t)(rows * kp));
        uint8_t *p = xmalloc((size_t)(rows * kp / 4));
        for (int64_t i = 0; i < rows * k; i++) w[i] = (int8_t)rnd(-1, 1);
        bg_ternary_pack(p, w, rows, k);
        memset(back, 7, (size_t)(rows * kp));
        bg_ternary_unpack(back, p, rows, k);
        CHECK_MSG(memcmp(back, w, (size_t)(rows * k)) == 0, "unpack(pack(w)) == w, k = %lld",
                  (long long)k);
        /* the padded row reads back as zeros beyond k */
        bg_ternary_unpack(back, p, rows, kp);
        bool ok = true;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t e = 0; e < kp; e++)
                ok &= back[r * kp + e] == (e < k ? w[r * k + e] : 0);
        CHECK_MSG(ok, "padded unpack: weights then zeros, k = %lld", (long long)k);
        free(w), free(back), free(p);
    }
}

// ---------------------------------------------------------------------------
// products

typedef struct operands {
    int64_t M, N, K, kp;
    int8_t *x;      /* [M, kp], padding 0 */
    int8_t *wt;     /* ternary [N, kp], padding 0 */
    uint8_t *wp;    /* packed [N, kp/4] */
    int8_t *ws;     /* s8 [N, kp], padding 0 */
    int64_t *want_t, *want_s;
    int32_t *acc;
} operands;

/* kind 0: random; 1: x = -128, w = -1 / -127; 2: x = 127, w = +1 / +127;
 * 3: x = -128, w = +1 / +127 (the most negative sums) */
static void operands_make(operands *o, int64_t M, int64_t N, int64_t K, int kind) {
    o->M = M, o->N = N, o->K = K, o->kp = bg_int_padded_k(K);
    int64_t kp = o->kp;
    o->x = calloc((size_t)(M * kp), 1);
    o->wt = calloc((size_t)(N * kp), 1);
    o->ws = calloc((size_t)(N * kp), 1);
    o->wp = xmalloc((size_t)(N * kp / 4));
    o->want_t = xmalloc((size_t)(M * N) * sizeof(int64_t));
    o->want_s = xmalloc((size_t)(M * N) * sizeof(int64_t));
    o->acc = xmalloc((size_t)(M * N) * sizeof(int32_t));
    if (!o->x || !o->wt || !o->ws) exit(1);
    for (int64_t m = 0; m < M; m++)
        for (int64_t k = 0; k < K; k++)
            o->x[m * kp + k] = (int8_t)(kind == 0 ? rnd(-128, 127) : kind == 2 ? 127 : -128);
    int8_t *wtk = xmalloc((size_t)(N * K));
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) {
            int8_t t = (int8_t)(kind == 0 ? rnd(-1, 1) : kind == 1 ? -1 : 1);
            int8_t s = (int8_t)(kind == 0 ? rnd(-127, 127) : kind == 1 ? -127 : 127);
            o->wt[n * kp + k] = wtk[n * K + k] = t;
            o->ws[n * kp + k] = s;
        }
    bg_ternary_pack(o->wp, wtk, N, K);
    free(wtk);
    naive(o->want_t, o->x, o->wt, M, N, K, kp, kp);
    naive(o->want_s, o->x, o->ws, M, N, K, kp, kp);
}

static void operands_free(operands *o) {
    free(o->x), free(o->wt), free(o->ws), free(o->wp), free(o->want_t), free(o->want_s),
        free(o->acc);
}

static void check_products(const bg_int_kernels *ik, operands *o, const char *what) {
    int64_t n = o->M * o->N;
    memset(o->acc, 0x5A, (size_t)n * sizeof(int32_t));
    ik->gemm_ternary(o->acc, o->x, o->wp, o->M, o->N, o->kp);
    int64_t i = first_mismatch(o->acc, o->want_t, n);
    CHECK_MSG(i < 0, "%s gemm_ternary %s M=%lld N=%lld K=%lld: acc[%lld] = %d, want %lld", ik->isa,
              what, (long long)o->M, (long long)o->N, (long long)o->K, (long long)i,
              i < 0 ? 0 : o->acc[i], i < 0 ? 0LL : (long long)o->want_t[i]);
    memset(o->acc, 0x5A, (size_t)n * sizeof(int32_t));
    ik->gemm_s8(o->acc, o->x, o->ws, o->M, o->N, o->kp);
    i = first_mismatch(o->acc, o->want_s, n);
    CHECK_MSG(i < 0, "%s gemm_s8 %s M=%lld N=%lld K=%lld: acc[%lld] = %d, want %lld", ik->isa, what,
              (long long)o->M, (long long)o->N, (long long)o->K, (long long)i,
              i < 0 ? 0 : o->acc[i], i < 0 ? 0LL : (long long)o->want_s[i]);
}

static void test_products(void) {
    /* fixed shapes first (gemv, tiny, block edges), then random ones */
    const int64_t fixed[][3] = {{1, 1, 1},    {1, 70, 600}, {1, 64, 4096 / 8}, {1, 17, 128},
                                {2, 3, 129},  {4, 16, 256}, {5, 33, 383},      {8, 64, 512},
                                {130, 1, 7},  {130, 70, 600}, {3, 8, 384},     {1, 1, 640},
                                {20, 37, 2100}, {17, 16, 1025}, {45, 50, 1300},
                                {40, 23, 700},  {33, 32, 513},  {64, 48, 128}};
    const int nfixed = (int)(sizeof fixed / sizeof fixed[0]);
    const int nrand = 40;
    for (int t = 0; t < nfixed + nrand; t++) {
        int64_t M, N, K;
        if (t < nfixed) {
            M = fixed[t][0], N = fixed[t][1], K = fixed[t][2];
        } else {
            M = rnd(0, 3) == 0 ? 1 : rnd(1, 130);
            N = rnd(1, 70);
            K = rnd(1, 600);
        }
        operands o;
        operands_make(&o, M, N, K, 0);
        for (int isa = BG_ISA_REF; isa < BG_ISA_COUNT; isa++) {
            const bg_int_kernels *ik = bg_int_kernels_for((bg_isa)isa);
            if (ik) check_products(ik, &o, "random");
        }
        operands_free(&o);
    }
    /* extreme values: every product at its largest magnitude */
    const int64_t ext[][3] = {{1, 5, 600}, {3, 40, 1000}, {130, 9, 257}, {2, 70, 4096}};
    for (int kind = 1; kind <= 3; kind++)
        for (size_t t = 0; t < sizeof ext / sizeof ext[0]; t++) {
            operands o;
            operands_make(&o, ext[t][0], ext[t][1], ext[t][2], kind);
            for (int isa = BG_ISA_REF; isa < BG_ISA_COUNT; isa++) {
                const bg_int_kernels *ik = bg_int_kernels_for((bg_isa)isa);
                if (ik) check_products(ik, &o, kind == 1 ? "x=-128,w=-max" : kind == 2 ? "x=127,w=+max" : "x=-128,w=+max");
            }
            if (kind == 3 && t == 3)
                CHECK_MSG(o.want_s[0] == -128LL * 127 * 4096 && o.want_t[0] == -128LL * 4096,
                          "extreme sums are what they should be");
            operands_free(&o);
        }
    /* one thread gives the same numbers (the partition only moves work) */
    int nthr = bg_get_num_threads();
    bg_set_num_threads(1);
    operands o;
    operands_make(&o, 9, 70, 600, 0);
    for (int isa = BG_ISA_REF; isa < BG_ISA_COUNT; isa++) {
        const bg_int_kernels *ik = bg_int_kernels_for((bg_isa)isa);
        if (ik) check_products(ik, &o, "1 thread");
    }
    operands_free(&o);
    bg_set_num_threads(nthr);
}

// ---------------------------------------------------------------------------
// activations

/* x values: ties at (k + 0.5)*s (s a power of two, so x*inv is exact),
 * random, out of range, +-0, and (special) +-inf and NaN */
static void fill_act(float *x, int64_t n, float s, bool special) {
    for (int64_t i = 0; i < n; i++) {
        float r = bg_rng_uniform(&rng);
        switch (i % 6) {
        case 0: x[i] = ((float)rnd(-140, 140) + 0.5f) * s; break;
        case 1: x[i] = ((float)rnd(-3, 3) + 0.5f) * s; break;
        case 2: x[i] = (r * 300.0f - 150.0f) * s; break;
        case 3: x[i] = (r < 0.5f ? -1.0f : 1.0f) * (200.0f + r * 1000.0f) * s; break;
        case 4: x[i] = r < 0.5f ? -0.0f : 0.0f; break;
        default: x[i] = (r * 6.0f - 3.0f) * s; break;
        }
        if (special && i % 13 == 12) {
            int w = (int)(i / 13) % 3;
            x[i] = w == 0 ? INFINITY : w == 1 ? -INFINITY : NAN;
        }
    }
}

static void test_quantize_rows(void) {
    const bg_quant_kernels *qk = bg_quant_kernels_get();
    const int64_t shapes[][2] = {{1, 1}, {1, 4096}, {3, 129}, {7, 600}, {130, 33}, {64, 784}, {2, 128}};
    const int32_t ranges[][3] = {{0, -128, 127}, {0, -127, 127}, {3, -128, 127}, {-5, -128, 127}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++)
        for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++)
            for (int per_tensor = 0; per_tensor <= 1; per_tensor++) {
                int64_t M = shapes[t][0], K = shapes[t][1], kp = bg_int_padded_k(K);
                int32_t z = ranges[r][0], qmin = ranges[r][1], qmax = ranges[r][2];
                float *x = xmalloc((size_t)(M * K) * sizeof(float));
                float *scale = xmalloc((size_t)M * sizeof(float));
                float *zp = xmalloc((size_t)M * sizeof(float));
                float *y = xmalloc((size_t)(M * K) * sizeof(float));
                int8_t *want = xmalloc((size_t)(M * K)), *q = xmalloc((size_t)(M * kp));
                for (int64_t m = 0; m < M; m++) {
                    /* powers of two (exact ties) and, on odd rows, a plain scale */
                    float s = ldexpf(1.0f, (int)rnd(-9, 2));
                    if (m % 2 == 1) s *= 0.7371f;
                    scale[m] = per_tensor ? (m == 0 ? s : scale[0]) : s;
                    zp[m] = (float)z;
                    fill_act(x + m * K, K, scale[m], (m + (int64_t)r) % 2 == 0);
                }
                qk->fake_quant(y, want, NULL, x, 1, M, K, scale, z ? zp : NULL, qmin, qmax);
                for (int isa = BG_ISA_REF; isa < BG_ISA_COUNT; isa++) {
                    const bg_int_kernels *ik = bg_int_kernels_for((bg_isa)isa);
                    if (!ik) continue;
                    memset(q, 0x33, (size_t)(M * kp));
                    ik->quantize_rows(q, x, M, K, kp, scale, per_tensor ? 0 : 1, z, qmin, qmax);
                    int64_t bad = -1, badpad = -1;
                    for (int64_t m = 0; m < M && bad < 0 && badpad < 0; m++) {
                        for (int64_t k = 0; k < K && bad < 0; k++)
                            if (q[m * kp + k] != want[m * K + k]) bad = m * K + k;
                        for (int64_t k = K; k < kp && badpad < 0; k++)
                            if (q[m * kp + k] != 0) badpad = m * kp + k;
                    }
                    CHECK_MSG(bad < 0,
                              "%s quantize_rows M=%lld K=%lld z=%d [%d,%d] %s: code %lld (x = %.9g) "
                              "= %d, fake_quant %d",
                              ik->isa, (long long)M, (long long)K, z, qmin, qmax,
                              per_tensor ? "per-tensor" : "per-token", (long long)bad,
                              bad < 0 ? 0.0 : (double)x[bad],
                              bad < 0 ? 0 : q[(bad / K) * kp + bad % K], bad < 0 ? 0 : want[bad]);
                    CHECK_MSG(badpad < 0, "%s quantize_rows K=%lld: padding is zero", ik->isa,
                              (long long)K);
                }
                free(x), free(scale), free(zp), free(y), free(want), free(q);
            }
    /* hand values: ties to even, NaN -> qmin, clamp */
    float x[8] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, NAN, 1000.0f, -1000.0f};
    float s = 1.0f;
    int8_t q[128];
    const int8_t want[8] = {0, 2, 2, 0, -2, -127, 127, -127};
    for (int isa = BG_ISA_REF; isa < BG_ISA_COUNT; isa++) {
        const bg_int_kernels *ik = bg_int_kernels_for((bg_isa)isa);
        if (!ik) continue;
        ik->quantize_rows(q, x, 1, 8, 128, &s, 0, 0, -127, 127);
        CHECK_MSG(memcmp(q, want, 8) == 0, "%s quantize_rows hand values", ik->isa);
    }
}

static void test_absmax_rows(void) {
    const bg_quant_kernels *qk = bg_quant_kernels_get();
    const int64_t shapes[][2] = {{1, 1}, {1, 4096}, {3, 129}, {7, 600}, {130, 33}, {5, 17}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int64_t M = shapes[t][0], K = shapes[t][1];
        float *x = xmalloc((size_t)(M * K) * sizeof(float));
        float *want = xmalloc((size_t)M * sizeof(float)), *got = xmalloc((size_t)M * sizeof(float));
        for (int64_t m = 0; m < M; m++) fill_act(x + m * K, K, 0.01f, m % 2 == 0);
        if (M > 2)   /* an all-zero row, and a row of -0 and NaN only (absmax NaN) */
            for (int64_t k = 0; k < K; k++) x[K + k] = 0.0f, x[2 * K + k] = k % 2 ? NAN : -0.0f;
        qk->absmax(want, x, 1, M, K);
        for (int isa = BG_ISA_REF; isa < BG_ISA_COUNT; isa++) {
            const bg_int_kernels *ik = bg_int_kernels_for((bg_isa)isa);
            if (!ik) continue;
            memset(got, 0x7F, (size_t)M * sizeof(float));
            ik->absmax_rows(got, x, M, K);
            CHECK_MSG(memcmp(got, want, (size_t)M * sizeof(float)) == 0,
                      "%s absmax_rows M=%lld K=%lld equals the quant absmax", ik->isa, (long long)M,
                      (long long)K);
        }
        if (M > 2) CHECK(want[1] == 0.0f && !signbit(want[1]) && isnan(want[2]));
        free(x), free(want), free(got);
    }
    /* infinity is a value; a NaN anywhere gives NaN (the scale from it is
       refused), so neither hides behind a finite scale */
    float x[4] = {1.0f, -INFINITY, 2.0f, 0.5f}, a = 0.0f;
    bg_int_kernels_get()->absmax_rows(&a, x, 1, 4);
    CHECK(a == INFINITY);
    x[3] = NAN;
    bg_int_kernels_get()->absmax_rows(&a, x, 1, 4);
    CHECK(isnan(a));
}

// ---------------------------------------------------------------------------
// oneDNN

static void test_dnnl(void) {
    const int64_t shapes[][3] = {{1, 70, 600}, {8, 64, 784}, {130, 33, 129}, {1, 1, 1}, {17, 5, 300}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int64_t M = shapes[t][0], N = shapes[t][1], K = shapes[t][2], kp = bg_int_padded_k(K);
        for (int padded = 0; padded <= 1; padded++) {
            int64_t ld = padded ? kp : K;
            int8_t *x = calloc((size_t)(M * ld), 1), *w = calloc((size_t)(N * ld), 1);
            int64_t *want = xmalloc((size_t)(M * N) * sizeof(int64_t));
            int32_t *acc = xmalloc((size_t)(M * N) * sizeof(int32_t));
            if (!x || !w) exit(1);
            for (int64_t i = 0; i < M; i++)
                for (int64_t k = 0; k < K; k++) x[i * ld + k] = (int8_t)rnd(-128, 127);
            for (int64_t i = 0; i < N; i++)
                for (int64_t k = 0; k < K; k++) w[i * ld + k] = (int8_t)rnd(-127, 127);
            naive(want, x, w, M, N, K, ld, ld);
            memset(acc, 0x5A, (size_t)(M * N) * sizeof(int32_t));
            bool ran = bg_gemm_s8_dnnl(acc, x, w, M, N, K, ld, ld);
#if defined(BG_WITH_DNNL)
            /* oneDNN refuses (false) where it would be inexact: no VNNI */
            if (__builtin_cpu_supports("avx512vnni") && !getenv("ONEDNN_MAX_CPU_ISA") &&
                !getenv("DNNL_MAX_CPU_ISA"))
                CHECK_MSG(ran, "bg_gemm_s8_dnnl ran");
#endif
            if (ran) {
                int64_t i = first_mismatch(acc, want, M * N);
                CHECK_MSG(i < 0, "bg_gemm_s8_dnnl M=%lld N=%lld K=%lld ld=%lld: acc[%lld] = %d, want %lld",
                          (long long)M, (long long)N, (long long)K, (long long)ld, (long long)i,
                          i < 0 ? 0 : acc[i], i < 0 ? 0LL : (long long)want[i]);
            }
            free(x), free(w), free(want), free(acc);
        }
    }
}

int main(void) {
    bg_rng_seed(&rng, 4);
    for (int isa = BG_ISA_REF; isa < BG_ISA_COUNT; isa++) {
        const bg_int_kernels *ik = bg_int_kernels_for((bg_isa)isa);
        printf("isa %d: %s\n", isa, ik ? ik->isa : "(not on this CPU)");
    }
    CHECK_MSG(bg_int_kernels_for(BG_ISA_REF) != NULL, "the reference table exists");
    test_padded_k();
    test_pack_bytes();
    test_pack_round_trip();
    test_products();
    test_quantize_rows();
    test_absmax_rows();
    test_dnnl();
    return bg_test_finish();
}
