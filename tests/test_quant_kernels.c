/* test_quant_kernels.c — every quantization kernel variant this CPU runs
 * against the scalar reference, bitwise (values, codes, masks, sums), at the
 * tail lengths {1,2,3,7,8,15,16,17,31,33,63,64,65,127,129,1023} and in every
 * layout (per-tensor, per-channel with inner 1 and > 1, per-group), with
 * inputs exactly on .5 ties, out of range, +-0, +-inf and NaN; plus the
 * reference against PyTorch's formula written independently (int64 code,
 * double dequantization) and a few hand-computed values. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "tests/test_util.h"

static const int64_t lengths[] = {1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 127, 129, 1023};
#define N_LENGTHS ((int)(sizeof lengths / sizeof lengths[0]))

typedef struct layout {
    int64_t outer, channels, inner;
} layout;

/* Layouts with n elements along the varying dim. */
static int layouts_for(int64_t n, layout *out) {
    int k = 0;
    out[k++] = (layout){1, 1, n};      // per-tensor
    out[k++] = (layout){1, n, 1};      // per-channel, channel last, one row
    out[k++] = (layout){3, n, 1};      // per-channel, channel last ([N,C] activations)
    out[k++] = (layout){2, 3, n};      // per-channel, axis 1 of [2,3,n]
    out[k++] = (layout){1, 5, n};      // per-group of n (5 groups)
    out[k++] = (layout){n, 2, 3};      // small inner rows
    return k;
}

/* Values that exercise rounding ties and the range: x = (k + 0.5)*s exactly
 * (ties when 1/s is exact), plain random, far out of range, signed zeros,
 * and (when special) inf and NaN. */
static void fill_x(float *x, int64_t n, float s, bg_rng *rng, bool special) {
    for (int64_t i = 0; i < n; i++) {
        float r = bg_rng_uniform(rng);
        int kind = (int)(i % 7);
        switch (kind) {
        case 0: x[i] = ((float)((int)(r * 300.0f) - 150) + 0.5f) * s; break;   // tie (if exact)
        case 1: x[i] = ((float)((int)(r * 40.0f) - 20) + 0.5f) * s; break;     // tie near zero
        case 2: x[i] = (r * 400.0f - 200.0f) * s; break;                        // random
        case 3: x[i] = (r < 0.5f ? -1.0f : 1.0f) * (300.0f + r * 1000.0f) * s; break; // out of range
        case 4: x[i] = (r < 0.5f) ? -0.0f : 0.0f; break;
        case 5: x[i] = (r * 8.0f - 4.0f) * s; break;
        default: x[i] = (float)((int)(r * 600.0f) - 300) * s * 0.5f; break;   // k/2 * s: exact halves
        }
        if (special && i % 11 == 10) {
            int w = (int)(i / 11) % 3;
            x[i] = w == 0 ? INFINITY : w == 1 ? -INFINITY : NAN;
        }
    }
}

static bool same_bits(const void *a, const void *b, size_t nbytes) { return memcmp(a, b, nbytes) == 0; }

static int64_t first_diff_f32(const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) return i;
    return -1;
}

// ---------------------------------------------------------------------------
// fake_quant / stochastic / binary: variant vs reference

typedef struct qcase {
    int32_t qmin, qmax;
    bool with_zp;
} qcase;

static const qcase qcases[] = {
    {-128, 127, false}, {0, 255, true}, {-1, 1, false}, {-8, 7, false},
    {0, 15, true},      {-127, 127, false}, {-128, 127, true}, {0, 1, false},
};

static const float scales[] = {0.25f, 0.1f, 1.0f / 3.0f, 0.0078125f, 3.0f};

static void compare_fq(const bg_quant_kernels *ref, const bg_quant_kernels *k, int mode, layout L,
                       const qcase *qc, float sbase, bg_rng *rng) {
    int64_t n = L.outer * L.channels * L.inner;
    float *x = malloc(sizeof(float) * n), *y0 = malloc(sizeof(float) * n), *y1 = malloc(sizeof(float) * n);
    int8_t *c0 = malloc(n), *c1 = malloc(n);
    uint8_t *m0 = malloc(n), *m1 = malloc(n);
    float *sc = malloc(sizeof(float) * L.channels), *zp = malloc(sizeof(float) * L.channels);
    for (int64_t c = 0; c < L.channels; c++) {
        // Mostly the base scale (so ties stay exact), sometimes a neighbour.
        sc[c] = c % 3 == 2 ? sbase * 0.5f : sbase;
        int32_t span = qc->qmax - qc->qmin;
        zp[c] = qc->with_zp ? (float)(qc->qmin + (int32_t)(c * 7 % (span + 1))) : 0.0f;
    }
    fill_x(x, n, sbase, rng, true);
    memset(y0, 0x55, sizeof(float) * n);
    memset(y1, 0x66, sizeof(float) * n);
    memset(c0, 0x11, n);
    memset(c1, 0x22, n);
    memset(m0, 0x33, n);
    memset(m1, 0x44, n);
    const float *z = qc->with_zp ? zp : NULL;
    uint32_t key = 0x1234567u + (uint32_t)n;
    const char *what = mode == 0 ? "fake_quant" : mode == 1 ? "fake_quant_stochastic" : "fake_binary";
    if (mode == 0) {
        ref->fake_quant(y0, c0, m0, x, L.outer, L.channels, L.inner, sc, z, qc->qmin, qc->qmax);
        k->fake_quant(y1, c1, m1, x, L.outer, L.channels, L.inner, sc, z, qc->qmin, qc->qmax);
    } else if (mode == 1) {
        ref->fake_quant_stochastic(y0, c0, m0, x, L.outer, L.channels, L.inner, sc, z, qc->qmin, qc->qmax, key);
        k->fake_quant_stochastic(y1, c1, m1, x, L.outer, L.channels, L.inner, sc, z, qc->qmin, qc->qmax, key);
    } else {
        ref->fake_binary(y0, c0, m0, x, L.outer, L.channels, L.inner, sc);
        k->fake_binary(y1, c1, m1, x, L.outer, L.channels, L.inner, sc);
    }
    int64_t d = first_diff_f32(y1, y0, n);
    CHECK_MSG(d < 0, "%s %s [%lld,%lld,%lld] q[%d,%d] s=%g: y[%lld] = %.9g, ref %.9g (x %.9g)", k->isa,
              what, (long long)L.outer, (long long)L.channels, (long long)L.inner, qc->qmin, qc->qmax,
              (double)sbase, (long long)d, d >= 0 ? y1[d] : 0.0, d >= 0 ? y0[d] : 0.0, d >= 0 ? x[d] : 0.0);
    CHECK_MSG(same_bits(c0, c1, n), "%s %s [%lld,%lld,%lld] q[%d,%d]: codes differ", k->isa, what,
              (long long)L.outer, (long long)L.channels, (long long)L.inner, qc->qmin, qc->qmax);
    CHECK_MSG(same_bits(m0, m1, n), "%s %s [%lld,%lld,%lld] q[%d,%d]: masks differ", k->isa, what,
              (long long)L.outer, (long long)L.channels, (long long)L.inner, qc->qmin, qc->qmax);

    // The optional outputs are optional: without codes and mask, y is the same.
    memset(y1, 0x77, sizeof(float) * n);
    if (mode == 0) k->fake_quant(y1, NULL, NULL, x, L.outer, L.channels, L.inner, sc, z, qc->qmin, qc->qmax);
    else if (mode == 1)
        k->fake_quant_stochastic(y1, NULL, NULL, x, L.outer, L.channels, L.inner, sc, z, qc->qmin, qc->qmax, key);
    else k->fake_binary(y1, NULL, NULL, x, L.outer, L.channels, L.inner, sc);
    CHECK_MSG(first_diff_f32(y1, y0, n) < 0, "%s %s: y differs without codes/mask", k->isa, what);
    free(x), free(y0), free(y1), free(c0), free(c1), free(m0), free(m1), free(sc), free(zp);
}

static void test_variants_fake_quant(void) {
    const bg_quant_kernels *ref = bg_quant_kernels_for(BG_ISA_REF);
    bg_rng rng;
    bg_rng_seed(&rng, 11);
    for (int isa = BG_ISA_AVX2; isa < BG_ISA_COUNT; isa++) {
        const bg_quant_kernels *k = bg_quant_kernels_for((bg_isa)isa);
        if (!k) {
            printf("quant kernels: %s not supported on this CPU, skipped\n", isa == BG_ISA_AVX2 ? "avx2" : "avx512");
            continue;
        }
        printf("quant kernels: comparing %s with ref\n", k->isa);
        for (int li = 0; li < N_LENGTHS; li++) {
            layout Ls[8];
            int nl = layouts_for(lengths[li], Ls);
            for (int l = 0; l < nl; l++)
                for (size_t q = 0; q < sizeof qcases / sizeof qcases[0]; q++)
                    for (int mode = 0; mode < 3; mode++) {
                        float s = scales[(li + q + (size_t)mode) % (sizeof scales / sizeof scales[0])];
                        compare_fq(ref, k, mode, Ls[l], &qcases[q], s, &rng);
                    }
        }
    }
}

// ---------------------------------------------------------------------------
// the reference against PyTorch's formula, written independently

/* fake_quantize_per_tensor_affine's CPU kernel: qval = int64(z + nearbyint(x*inv));
 * out = (fmin(fmax(qval, qmin), qmax) - z) * s in double; mask qmin <= qval <= qmax. */
static void torch_formula(float *y, uint8_t *m, const float *x, int64_t n, float s, int64_t z,
                          int64_t qmin, int64_t qmax) {
    float inv = 1.0f / s;
    for (int64_t i = 0; i < n; i++) {
        int64_t qval = (int64_t)((float)z + nearbyintf(x[i] * inv));
        y[i] = (float)((fmin(fmax((double)qval, (double)qmin), (double)qmax) - (double)z) * (double)s);
        m[i] = qmin <= qval && qval <= qmax;
    }
}

static void test_ref_vs_torch_formula(void) {
    const bg_quant_kernels *ref = bg_quant_kernels_for(BG_ISA_REF);
    bg_rng rng;
    bg_rng_seed(&rng, 5);
    const int64_t n = 1023;
    float x[1023], y0[1023], y1[1023];
    uint8_t m0[1023], m1[1023];
    int8_t codes[1023];
    for (size_t q = 0; q < sizeof qcases / sizeof qcases[0]; q++)
        for (size_t si = 0; si < sizeof scales / sizeof scales[0]; si++) {
            float s = scales[si];
            fill_x(x, n, s, &rng, false);   // finite: torch's int64 cast needs it
            int32_t z = qcases[q].with_zp ? (qcases[q].qmin + qcases[q].qmax) / 3 : 0;
            float zf = (float)z;
            ref->fake_quant(y0, codes, m0, x, 1, 1, n, &s, qcases[q].with_zp ? &zf : NULL, qcases[q].qmin,
                            qcases[q].qmax);
            torch_formula(y1, m1, x, n, s, z, qcases[q].qmin, qcases[q].qmax);
            int64_t d = first_diff_f32(y0, y1, n);
            CHECK_MSG(d < 0, "ref vs torch formula q[%d,%d] s=%g z=%d: y[%lld] %.9g vs %.9g (x %.9g)",
                      qcases[q].qmin, qcases[q].qmax, (double)s, z, (long long)d, d >= 0 ? y0[d] : 0.0,
                      d >= 0 ? y1[d] : 0.0, d >= 0 ? x[d] : 0.0);
            CHECK_MSG(same_bits(m0, m1, n), "ref vs torch formula: masks differ");
            // codes: (y/s + z) as the integer code
            bool ok = true;
            for (int64_t i = 0; i < n && ok; i++) {
                int32_t c = qcases[q].qmin < 0 ? (int32_t)codes[i] : (int32_t)(uint8_t)codes[i];
                ok = (float)(c - z) * s == y0[i];
            }
            CHECK_MSG(ok, "codes do not dequantize to y (q[%d,%d])", qcases[q].qmin, qcases[q].qmax);
        }
}

static void test_hand_values(void) {
    const bg_quant_kernels *k = bg_quant_kernels_get();
    // s = 0.25, int2 [-2, 1]: x*4 = 0.5 -> 0 (even), 1.5 -> 2 (clamped, mask 0),
    // 2.5 -> 2 (clamped), -0.5 -> -0 (y +0), -1.5 -> -2, 1, 2.5, -2, -2.5 -> -2
    // (even, in range), NaN -> qmin with mask 0.
    const float x[] = {0.125f, 0.375f, 0.625f, -0.125f, -0.375f, 0.25f, 0.375f + 0.25f, -0.5f, -0.625f, NAN};
    const float s = 0.25f;
    float y[10];
    int8_t c[10];
    uint8_t m[10];
    k->fake_quant(y, c, m, x, 1, 1, 10, &s, NULL, -2, 1);
    const int8_t wc[] = {0, 1, 1, 0, -2, 1, 1, -2, -2, -2};
    const uint8_t wm[] = {1, 0, 0, 1, 1, 1, 0, 1, 1, 0};
    for (int i = 0; i < 10; i++) {
        CHECK_MSG(c[i] == wc[i], "hand: code[%d] = %d, want %d", i, c[i], wc[i]);
        CHECK_MSG(m[i] == wm[i], "hand: mask[%d] = %d, want %d", i, m[i], wm[i]);
        CHECK_MSG(y[i] == (float)wc[i] * s, "hand: y[%d] = %g, want %g", i, (double)y[i], (double)(wc[i] * s));
    }
    CHECK(!signbit(y[3]));   // -0.5 rounds to -0, and y comes out +0
    // Unsigned range with a zero point: code byte is uint8.
    const float z = 200.0f, x2[] = {1.0f, 100.0f, -100.0f};
    float y2[3];
    int8_t c2[3];
    k->fake_quant(y2, c2, NULL, x2, 1, 1, 3, &s, &z, 0, 255);
    CHECK((uint8_t)c2[0] == 204 && (uint8_t)c2[1] == 255 && (uint8_t)c2[2] == 0);
    CHECK(y2[0] == 1.0f && y2[1] == 55.0f * 0.25f && y2[2] == -50.0f);
    // Binary: code = x > 0 ? 1 : -1, mask |x/s| <= 1.
    const float x3[] = {0.0f, -0.0f, 0.3f, -0.3f, 2.0f, NAN};
    float y3[6];
    int8_t c3[6];
    uint8_t m3[6];
    const float s3 = 0.5f;
    k->fake_binary(y3, c3, m3, x3, 1, 1, 6, &s3);
    const int8_t wc3[] = {-1, -1, 1, -1, 1, -1};
    const uint8_t wm3[] = {1, 1, 1, 1, 0, 0};
    for (int i = 0; i < 6; i++) {
        CHECK_MSG(c3[i] == wc3[i] && m3[i] == wm3[i] && y3[i] == (float)wc3[i] * 0.5f,
                  "binary[%d]: code %d mask %d y %g", i, c3[i], m3[i], (double)y3[i]);
    }
}

static void test_stochastic(void) {
    const bg_quant_kernels *k = bg_quant_kernels_get();
    // Unbiased: the mean over many keys of y approaches x; the draw is in [0,1).
    const float x[4] = {0.3f, -1.7f, 2.25f, 0.0f}, s = 1.0f;
    double acc[4] = {0};
    const int trials = 4000;
    for (int t = 0; t < trials; t++) {
        float y[4];
        k->fake_quant_stochastic(y, NULL, NULL, x, 1, 1, 4, &s, NULL, -8, 7, (uint32_t)t * 2654435761u);
        for (int i = 0; i < 4; i++) {
            acc[i] += y[i];
            CHECK_MSG(y[i] == floorf(x[i]) || y[i] == ceilf(x[i]), "stochastic y = %g for x = %g", (double)y[i],
                      (double)x[i]);
        }
    }
    for (int i = 0; i < 4; i++) CHECK_CLOSE(acc[i] / trials, (double)x[i], 0.03, 0.0);
    double mean = 0;
    float lo = 1, hi = 0;
    for (uint64_t i = 0; i < 100000; i++) {
        float u = bg_quant_uniform(99, i);
        mean += u;
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
    }
    CHECK_CLOSE(mean / 100000, 0.5, 0.005, 0.0);
    CHECK(lo >= 0.0f && hi < 1.0f && lo < 0.001f && hi > 0.999f);
    CHECK(bg_quant_uniform(1, 5) != bg_quant_uniform(2, 5));
    CHECK(bg_quant_uniform(1, 5) == bg_quant_uniform(1, 5));
    CHECK(bg_quant_uniform(1, 5) == bg_quant_uniform(1, 5 + ((uint64_t)1 << 32)));   // wraps at 2^32
}

// ---------------------------------------------------------------------------
// reductions and backward

static void test_variants_reductions(void) {
    const bg_quant_kernels *ref = bg_quant_kernels_for(BG_ISA_REF);
    bg_rng rng;
    bg_rng_seed(&rng, 23);
    for (int isa = BG_ISA_AVX2; isa < BG_ISA_COUNT; isa++) {
        const bg_quant_kernels *k = bg_quant_kernels_for((bg_isa)isa);
        if (!k) continue;
        for (int li = 0; li < N_LENGTHS; li++) {
            layout Ls[8];
            int nl = layouts_for(lengths[li], Ls);
            for (int l = 0; l < nl; l++)
                for (int variant = 0; variant < 3; variant++) {
                    layout L = Ls[l];
                    int64_t n = L.outer * L.channels * L.inner, C = L.channels;
                    float *x = malloc(sizeof(float) * n);
                    fill_x(x, n, 0.1f, &rng, variant == 1);
                    if (variant == 2)   // all zeros of both signs: min/max must come out +0
                        for (int64_t i = 0; i < n; i++) x[i] = (i & 1) ? -0.0f : 0.0f;
                    float *a0 = malloc(sizeof(float) * C), *a1 = malloc(sizeof(float) * C);
                    float *b0 = malloc(sizeof(float) * C), *b1 = malloc(sizeof(float) * C);
                    double *s0 = malloc(sizeof(double) * C), *s1 = malloc(sizeof(double) * C);
                    ref->minmax(a0, b0, x, L.outer, C, L.inner);
                    k->minmax(a1, b1, x, L.outer, C, L.inner);
                    CHECK_MSG(same_bits(a0, a1, sizeof(float) * C) && same_bits(b0, b1, sizeof(float) * C),
                              "%s minmax [%lld,%lld,%lld] v%d differs", k->isa, (long long)L.outer,
                              (long long)C, (long long)L.inner, variant);
                    if (variant == 2) CHECK(!signbit(a0[0]) && !signbit(b0[0]) && a0[0] == 0.0f);
                    ref->absmax(a0, x, L.outer, C, L.inner);
                    k->absmax(a1, x, L.outer, C, L.inner);
                    CHECK_MSG(same_bits(a0, a1, sizeof(float) * C), "%s absmax [%lld,%lld,%lld] v%d differs",
                              k->isa, (long long)L.outer, (long long)C, (long long)L.inner, variant);
                    if (variant != 1) {   // sums over inf/NaN are inf/NaN in both; compare finite ones
                        ref->abssum(s0, x, L.outer, C, L.inner);
                        k->abssum(s1, x, L.outer, C, L.inner);
                        CHECK_MSG(same_bits(s0, s1, sizeof(double) * C), "%s abssum [%lld,%lld,%lld] differs: %.17g vs %.17g",
                                  k->isa, (long long)L.outer, (long long)C, (long long)L.inner, s1[0], s0[0]);
                    }
                    free(x), free(a0), free(a1), free(b0), free(b1), free(s0), free(s1);
                }
        }
        // mask_backward: dx += mask ? dy : 0, -0 in dx kept where masked out.
        for (int li = 0; li < N_LENGTHS; li++) {
            int64_t n = lengths[li];
            float *dx0 = malloc(sizeof(float) * n), *dx1 = malloc(sizeof(float) * n), *dy = malloc(sizeof(float) * n);
            uint8_t *m = malloc(n);
            for (int64_t i = 0; i < n; i++) {
                dx0[i] = dx1[i] = (i % 5 == 0) ? -0.0f : bg_rng_uniform(&rng) - 0.5f;
                dy[i] = i % 13 == 3 ? INFINITY : bg_rng_uniform(&rng) - 0.5f;
                m[i] = (uint8_t)(bg_rng_uniform(&rng) < 0.6f ? (i % 3) + 1 : 0);
                if (i % 13 == 3) m[i] = 0;
            }
            ref->mask_backward(dx0, dy, m, n);
            k->mask_backward(dx1, dy, m, n);
            CHECK_MSG(same_bits(dx0, dx1, sizeof(float) * n), "%s mask_backward n=%lld differs", k->isa, (long long)n);
            free(dx0), free(dx1), free(dy), free(m);
        }
        // lsq_backward (possibly the reference itself): same sums.
        for (int li = 0; li < N_LENGTHS; li++) {
            int64_t n = lengths[li];
            float *x = malloc(sizeof(float) * n), *dy = malloc(sizeof(float) * n);
            float *dx0 = calloc((size_t)n, sizeof(float)), *dx1 = calloc((size_t)n, sizeof(float));
            fill_x(x, n, 0.25f, &rng, false);
            for (int64_t i = 0; i < n; i++) dy[i] = bg_rng_uniform(&rng) - 0.5f;
            const float sc[2] = {0.25f, 0.1f}, zp[2] = {3.0f, 0.0f};
            double ds0[2] = {0}, ds1[2] = {0}, dz0[2] = {0}, dz1[2] = {0};
            int64_t ch = n >= 2 ? 2 : 1;
            ref->lsq_backward(dx0, ds0, dz0, dy, x, 1, ch, n / ch, sc, zp, 0, 15, 0.5f);
            k->lsq_backward(dx1, ds1, dz1, dy, x, 1, ch, n / ch, sc, zp, 0, 15, 0.5f);
            CHECK_MSG(same_bits(dx0, dx1, sizeof(float) * n) && same_bits(ds0, ds1, sizeof ds0) &&
                          same_bits(dz0, dz1, sizeof dz0),
                      "%s lsq_backward n=%lld differs", k->isa, (long long)n);
            free(x), free(dy), free(dx0), free(dx1);
        }
    }
}

static void test_reduction_values(void) {
    const bg_quant_kernels *k = bg_quant_kernels_get();
    const float x[] = {NAN, -3.0f, 2.0f, -0.0f, 7.5f, NAN, -9.25f, 0.5f};
    float mn, mx, am;
    double s;
    k->minmax(&mn, &mx, x, 1, 1, 8);
    CHECK(mn == -9.25f && mx == 7.5f);
    k->absmax(&am, x + 1, 1, 1, 4);
    CHECK(am == 7.5f);
    // A NaN anywhere makes absmax NaN on every ISA (its scale is then refused).
    for (int isa = 0; isa < BG_ISA_COUNT; isa++) {
        const bg_quant_kernels *ki = bg_quant_kernels_for((bg_isa)isa);
        if (!ki) continue;
        float big[37];
        for (int i = 0; i < 37; i++) big[i] = (float)i - 18.0f;
        for (int at = 0; at < 37; at += 6) {
            float keep = big[at];
            big[at] = NAN;
            float a1, a2[37];
            ki->absmax(&a1, big, 1, 1, 37);
            ki->absmax(a2, big, 1, 37, 1);   // one channel per element: only channel `at` is NaN
            CHECK_MSG(isnan(a1) && isnan(a2[at]) && a2[(at + 1) % 37] == fabsf(big[(at + 1) % 37]),
                      "%s absmax with NaN at %d: %g", ki->isa, at, (double)a1);
            big[at] = keep;
        }
    }
    k->abssum(&s, x + 1, 1, 1, 4);
    CHECK(s == 12.5);
    // Per channel (channel last, 2 rows of 3 channels).
    const float r[] = {1, -2, 3, -4, 5, -6};
    float mn3[3], mx3[3], am3[3];
    double s3[3];
    k->minmax(mn3, mx3, r, 2, 3, 1);
    k->absmax(am3, r, 2, 3, 1);
    k->abssum(s3, r, 2, 3, 1);
    CHECK(mn3[0] == -4 && mx3[0] == 1 && mn3[1] == -2 && mx3[1] == 5 && mn3[2] == -6 && mx3[2] == 3);
    CHECK(am3[0] == 4 && am3[1] == 5 && am3[2] == 6);
    CHECK(s3[0] == 5 && s3[1] == 7 && s3[2] == 9);
    // No element at all: min +inf, max -inf, absmax 0, sum 0.
    k->minmax(&mn, &mx, x, 0, 1, 8);
    k->absmax(&am, x, 0, 1, 8);
    k->abssum(&s, x, 0, 1, 8);
    CHECK(mn == INFINITY && mx == -INFINITY && am == 0.0f && s == 0.0);
}

/* Same results at 1 and 2 threads for a large tensor (chunked parallel loops). */
static void test_threads(void) {
    const bg_quant_kernels *k = bg_quant_kernels_get();
    const int64_t n = 200003;
    float *x = malloc(sizeof(float) * n), *y1 = malloc(sizeof(float) * n), *y2 = malloc(sizeof(float) * n);
    bg_rng rng;
    bg_rng_seed(&rng, 3);
    fill_x(x, n, 0.05f, &rng, false);
    const float s = 0.05f;
    int saved = bg_get_num_threads();
    bg_set_num_threads(1);
    k->fake_quant_stochastic(y1, NULL, NULL, x, 1, 1, n, &s, NULL, -8, 7, 77);
    double a1;
    k->abssum(&a1, x, 1, 1, n);
    bg_set_num_threads(2);
    k->fake_quant_stochastic(y2, NULL, NULL, x, 1, 1, n, &s, NULL, -8, 7, 77);
    double a2;
    k->abssum(&a2, x, 1, 1, n);
    bg_set_num_threads(saved);
    CHECK(same_bits(y1, y2, sizeof(float) * n));
    CHECK(a1 == a2);
    free(x), free(y1), free(y2);
}

int main(void) {
    printf("quant kernels: best ISA %s\n", bg_quant_kernels_get()->isa);
    test_hand_values();
    test_ref_vs_torch_formula();
    test_variants_fake_quant();
    test_stochastic();
    test_variants_reductions();
    test_reduction_values();
    test_threads();
    return bg_test_finish();
}
