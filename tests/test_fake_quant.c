/* test_fake_quant.c — the fake-quant op and the quantizer state against
 * PyTorch (tests/reference/quant.safetensors, from make_quant_reference.py):
 * fake_quantize_per_tensor_affine and _per_channel_affine (values, codes and
 * masks bit-exact, on every kernel ISA), _fake_quantize_learnable_per_tensor_
 * affine (values and dx bit-exact, dscale and dzero_point within 1e-5
 * relative), the torch.ao observers' scales and zero points (bit-exact);
 * then every quantizer kind and backward rule against its formula (BitNet
 * absmean / per-token absmax, PACT, LSQ per channel / per group, LSQ+,
 * binary, stochastic rounding, percentile, MSE), and the edge cases: zeros,
 * min == max, one element, groups that do not divide, a step <= 0, NaN/Inf. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/test_util.h"

static bg_safetensors *ref;

static bg_tensor get(const char *fmt, const char *name, const char *field) {
    char key[128];
    snprintf(key, sizeof key, fmt, name, field);
    bg_tensor t;
    memset(&t, 0, sizeof t);
    if (bg_safetensors_get(ref, key, &t) != BG_OK) {
        CHECK_MSG(false, "reference tensor %s missing (re-run tests/reference/make_quant_reference.py): %s", key,
                  bg_last_error());
        static float zero;
        t.dtype = BG_DTYPE_F32, t.ndim = 1, t.shape[0] = 1, t.stride[0] = 1, t.data = &zero;
    }
    return t;
}

/* A persistent copy (so the op can take it as a leaf with a gradient). */
static bg_tensor *leaf(const bg_tensor *v, bool requires_grad) {
    bg_tensor *t = bg_tensor_new(v->dtype, v->ndim, v->shape);
    if (!t) return NULL;
    memcpy(t->data, v->data, bg_nbytes(v));
    if (requires_grad) bg_set_requires_grad(t, true);
    return t;
}

static int64_t first_bit_diff(const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], 4) != 0) return i;
    return -1;
}

static int32_t code_at(const bg_tensor *codes, int64_t i) {
    return codes->dtype == BG_DTYPE_I8 ? (int32_t)((const int8_t *)codes->data)[i]
                                       : (int32_t)((const uint8_t *)codes->data)[i];
}

/* An int spec with a fixed scale for PyTorch's (scale, zp, qmin, qmax). */
static bg_quant_spec fixed_spec(float s, int32_t zp, int32_t qmin, int32_t qmax) {
    bg_quant_spec spec;
    int bits = 0;
    while ((1 << bits) < qmax - qmin + 1) bits++;
    bg_quant_spec_init(&spec, BG_QUANT_INT, bits);
    spec.is_unsigned = qmin == 0;
    spec.symmetric = zp == 0 && qmin < 0;
    spec.range = BG_QUANT_RANGE_FIXED;
    spec.scale = s;
    spec.zero_point = zp;
    spec.backward = BG_QUANT_BWD_DEFAULT;
    CHECK_MSG(bg_quant_spec_validate(&spec) == BG_OK, "fixed spec: %s", bg_last_error());
    int32_t lo, hi;
    bg_quant_spec_qrange(&spec, &lo, &hi);
    CHECK(lo == qmin && hi == qmax);
    return spec;
}

static bg_quant_spec parse(const char *s) {
    bg_quant_spec spec;
    bg_status st = bg_quant_spec_parse(s, &spec);
    CHECK_MSG(st == BG_OK, "parse(\"%s\"): %s", s, bg_last_error());
    return spec;
}

// ---------------------------------------------------------------------------
// PyTorch references

static void test_reference_file(void) {
    const char *v = bg_safetensors_metadata(ref, "version");
    CHECK_MSG(v && strcmp(v, "1") == 0,
              "quant.safetensors is version %s, want 1: re-run tests/reference/make_quant_reference.py",
              v ? v : "(none)");
    const char *tv = bg_safetensors_metadata(ref, "torch");
    CHECK(tv && strncmp(tv, "1.13", 4) == 0);
}

static const char *const pt_cases[] = {"int8_sym", "uint8_zp", "int4", "int8_third", "int2", "uint4_zp"};

static void test_per_tensor(void) {
    for (size_t c = 0; c < sizeof pt_cases / sizeof *pt_cases; c++) {
        const char *nm = pt_cases[c];
        bg_tensor x = get("pt.%s.%s", nm, "x"), y = get("pt.%s.%s", nm, "y"), m = get("pt.%s.%s", nm, "mask");
        bg_tensor codes = get("pt.%s.%s", nm, "codes"), sc = get("pt.%s.%s", nm, "scale");
        bg_tensor zp = get("pt.%s.%s", nm, "zp"), qr = get("pt.%s.%s", nm, "qrange");
        const int64_t n = bg_numel(&x);
        const float s = bg_f32(&sc)[0];
        const int32_t z = ((int32_t *)zp.data)[0], qmin = ((int32_t *)qr.data)[0], qmax = ((int32_t *)qr.data)[1];
        const float zf = (float)z;

        // Every kernel ISA, bit for bit.
        float *yk = malloc(sizeof(float) * n);
        int8_t *ck = malloc(n);
        uint8_t *mk = malloc(n);
        for (int isa = 0; isa < BG_ISA_COUNT; isa++) {
            const bg_quant_kernels *k = bg_quant_kernels_for((bg_isa)isa);
            if (!k) continue;
            k->fake_quant(yk, ck, mk, bg_f32(&x), 1, 1, n, &s, z ? &zf : NULL, qmin, qmax);
            int64_t d = first_bit_diff(yk, bg_f32(&y), n);
            CHECK_MSG(d < 0, "pt.%s %s: y[%lld] = %.9g, torch %.9g (x %.9g)", nm, k->isa, (long long)d,
                      d >= 0 ? yk[d] : 0.0, d >= 0 ? bg_f32(&y)[d] : 0.0, d >= 0 ? bg_f32(&x)[d] : 0.0);
            bool codes_ok = true, mask_ok = true;
            for (int64_t i = 0; i < n; i++) {
                int32_t cv = qmin < 0 ? (int32_t)ck[i] : (int32_t)(uint8_t)ck[i];
                codes_ok &= cv == ((int32_t *)codes.data)[i];
                mask_ok &= mk[i] == ((uint8_t *)m.data)[i];
            }
            CHECK_MSG(codes_ok, "pt.%s %s: codes differ from torch", nm, k->isa);
            CHECK_MSG(mask_ok, "pt.%s %s: masks differ from torch", nm, k->isa);
        }
        free(yk), free(ck), free(mk);

        // The op: values bit-exact, backward = the mask (clipped STE), codes.
        bg_quant_spec spec = fixed_spec(s, z, qmin, qmax);
        bg_ctx *ctx = bg_ctx_new(0);
        bg_tensor *xl = leaf(&x, true);
        bg_tensor *out = bg_fake_quant(ctx, xl, &spec, NULL);
        if (CHECK_MSG(out != NULL, "pt.%s: %s", nm, bg_ctx_error(ctx))) {
            CHECK_MSG(first_bit_diff(bg_f32(out), bg_f32(&y), n) < 0, "pt.%s: op output differs from torch", nm);
            bg_tensor *ones = bg_full(ctx, 1, &n, 1.0f);
            CHECK(bg_backward_with_grad(ctx, out, ones) == BG_OK);
            bool ok = true;
            for (int64_t i = 0; i < n; i++) ok &= bg_f32(xl->grad)[i] == (float)((uint8_t *)m.data)[i];
            CHECK_MSG(ok, "pt.%s: dx for dy = 1 is not torch's mask", nm);
        }
        bg_tensor *cq;
        bg_quant_params p;
        CHECK(bg_quantize(ctx, &spec, NULL, xl, &cq, &p) == BG_OK);
        if (cq) {
            CHECK(cq->dtype == (qmin < 0 ? BG_DTYPE_I8 : BG_DTYPE_U8));
            bool ok = true;
            for (int64_t i = 0; i < n; i++) ok &= code_at(cq, i) == ((int32_t *)codes.data)[i];
            CHECK_MSG(ok, "pt.%s: bg_quantize codes differ from torch", nm);
            CHECK(p.scale[0] == s && p.qmin == qmin && p.qmax == qmax);
        }
        bg_tensor_free(xl);
        bg_ctx_free(ctx);
    }
}

static void test_per_channel(void) {
    const char *cases[] = {"axis0", "last", "int4_mid"};
    const char *specs[] = {"int8:affine:signed:per_channel=0:minmax", "int8:affine:per_channel=1:minmax",
                           "int4:per_channel=1:minmax"};
    for (int c = 0; c < 3; c++) {
        const char *nm = cases[c];
        bg_tensor x = get("pc.%s.%s", nm, "x"), y = get("pc.%s.%s", nm, "y"), m = get("pc.%s.%s", nm, "mask");
        bg_tensor codes = get("pc.%s.%s", nm, "codes"), sc = get("pc.%s.%s", nm, "scale");
        bg_tensor zp = get("pc.%s.%s", nm, "zp"), qr = get("pc.%s.%s", nm, "qrange");
        bg_tensor ax = get("pc.%s.%s", nm, "axis");
        const int64_t n = bg_numel(&x), C = bg_numel(&sc);
        const int axis = ((int32_t *)ax.data)[0];
        const int32_t qmin = ((int32_t *)qr.data)[0], qmax = ((int32_t *)qr.data)[1];
        int64_t outer = 1, inner = 1;
        for (int d = 0; d < axis; d++) outer *= x.shape[d];
        for (int d = axis + 1; d < x.ndim; d++) inner *= x.shape[d];
        float zf[8];
        for (int64_t i = 0; i < C; i++) zf[i] = (float)((int32_t *)zp.data)[i];

        float *yk = malloc(sizeof(float) * n);
        int8_t *ck = malloc(n);
        uint8_t *mk = malloc(n);
        for (int isa = 0; isa < BG_ISA_COUNT; isa++) {
            const bg_quant_kernels *k = bg_quant_kernels_for((bg_isa)isa);
            if (!k) continue;
            k->fake_quant(yk, ck, mk, bg_f32(&x), outer, C, inner, bg_f32(&sc), zf, qmin, qmax);
            CHECK_MSG(first_bit_diff(yk, bg_f32(&y), n) < 0, "pc.%s %s: y differs from torch", nm, k->isa);
            bool codes_ok = true, mask_ok = true;
            for (int64_t i = 0; i < n; i++) {
                int32_t cv = qmin < 0 ? (int32_t)ck[i] : (int32_t)(uint8_t)ck[i];
                codes_ok &= cv == ((int32_t *)codes.data)[i];
                mask_ok &= mk[i] == ((uint8_t *)m.data)[i];
            }
            CHECK_MSG(codes_ok && mask_ok, "pc.%s %s: codes or masks differ from torch", nm, k->isa);
        }
        free(yk), free(ck), free(mk);

        // Through the op: a per-channel state, observer off, torch's scales written in.
        bg_quant_spec spec = parse(specs[c]);
        bg_quant_state *st;
        CHECK(bg_quant_state_new(&spec, x.ndim, x.shape, &st) == BG_OK);
        if (!st) continue;
        bg_quant_state_set_observer(st, false);
        CHECK(bg_numel(bg_quant_state_scale(st)) == C);
        memcpy(bg_quant_state_scale(st)->data, sc.data, sizeof(float) * (size_t)C);
        memcpy(bg_quant_state_zero_point(st)->data, zf, sizeof(float) * (size_t)C);
        bg_ctx *ctx = bg_ctx_new(0);
        bg_tensor *xl = leaf(&x, true);
        bg_tensor *out = bg_fake_quant(ctx, xl, &spec, st);
        if (CHECK_MSG(out != NULL, "pc.%s: %s", nm, bg_ctx_error(ctx))) {
            CHECK_MSG(first_bit_diff(bg_f32(out), bg_f32(&y), n) < 0, "pc.%s: op output differs from torch", nm);
            bg_tensor *ones = bg_full(ctx, x.ndim, x.shape, 1.0f);
            CHECK(bg_backward_with_grad(ctx, out, ones) == BG_OK);
            bool ok = true;
            for (int64_t i = 0; i < n; i++) ok &= bg_f32(xl->grad)[i] == (float)((uint8_t *)m.data)[i];
            CHECK_MSG(ok, "pc.%s: op mask differs from torch", nm);
        }
        bg_tensor_free(xl);
        bg_ctx_free(ctx);
        bg_quant_state_free(st);
    }
}

static const char *const lq_cases[] = {"lsq_int4", "lsqp_uint4", "lsqp_int4_neg", "lsqp_tie", "lsq_int8"};

static void test_learnable(void) {
    for (size_t c = 0; c < sizeof lq_cases / sizeof *lq_cases; c++) {
        const char *nm = lq_cases[c];
        bg_tensor x = get("lq.%s.%s", nm, "x"), dy = get("lq.%s.%s", nm, "dy"), y = get("lq.%s.%s", nm, "y");
        bg_tensor sc = get("lq.%s.%s", nm, "scale"), zp = get("lq.%s.%s", nm, "zp"), qr = get("lq.%s.%s", nm, "qrange");
        bg_tensor gf = get("lq.%s.%s", nm, "grad_factor"), dx = get("lq.%s.%s", nm, "dx");
        bg_tensor ds = get("lq.%s.%s", nm, "dscale"), dz = get("lq.%s.%s", nm, "dzp"), codes = get("lq.%s.%s", nm, "codes");
        const int64_t n = bg_numel(&x);
        const int32_t qmin = ((int32_t *)qr.data)[0], qmax = ((int32_t *)qr.data)[1];
        const bool plus = strncmp(nm, "lsqp", 4) == 0;

        bg_quant_spec spec;
        int bits = 0;
        while ((1 << bits) < qmax - qmin + 1) bits++;
        bg_quant_spec_init(&spec, BG_QUANT_INT, bits);
        spec.range = plus ? BG_QUANT_RANGE_LSQ_PLUS : BG_QUANT_RANGE_LSQ;
        spec.symmetric = !plus;
        spec.is_unsigned = qmin == 0;
        spec.backward = BG_QUANT_BWD_DEFAULT;
        const float gfv = bg_f32(&gf)[0];
        // gscale auto must give torch's 1/sqrt(N*qmax); explicit otherwise.
        bool automatic = fabs((double)gfv - 1.0 / sqrt((double)n * qmax)) < 1e-9;
        spec.grad_scale = automatic ? 0.0f : gfv;
        CHECK_MSG(bg_quant_spec_validate(&spec) == BG_OK, "lq.%s: %s", nm, bg_last_error());

        bg_quant_state *st;
        CHECK(bg_quant_state_new(&spec, 1, &n, &st) == BG_OK);
        if (!st) continue;
        CHECK(bg_quant_state_num_params(st) == (plus ? 2 : 1));
        CHECK_STR(bg_quant_state_param_name(st, 0), "scale");
        bg_f32(bg_quant_state_param(st, 0))[0] = bg_f32(&sc)[0];
        if (plus) {
            CHECK_STR(bg_quant_state_param_name(st, 1), "zero_point");
            bg_f32(bg_quant_state_param(st, 1))[0] = bg_f32(&zp)[0];
        }
        bg_quant_state_set_initialized(st, true);
        bg_ctx *ctx = bg_ctx_new(0);
        bg_tensor *xl = leaf(&x, true);
        bg_tensor *out = bg_fake_quant(ctx, xl, &spec, st);
        if (!CHECK_MSG(out != NULL, "lq.%s: %s", nm, bg_ctx_error(ctx))) goto next;
        int64_t d = first_bit_diff(bg_f32(out), bg_f32(&y), n);
        CHECK_MSG(d < 0, "lq.%s: y[%lld] = %.9g, torch %.9g", nm, (long long)d, d >= 0 ? bg_f32(out)[d] : 0.0,
                  d >= 0 ? bg_f32(&y)[d] : 0.0);
        CHECK(bg_backward_with_grad(ctx, out, &dy) == BG_OK);
        // dx equal in value (torch writes dy*0 = -0 where we leave +0)
        d = -1;
        for (int64_t i = 0; i < n && d < 0; i++)
            if (bg_f32(xl->grad)[i] != bg_f32(&dx)[i]) d = i;
        CHECK_MSG(d < 0, "lq.%s: dx[%lld] = %.9g, torch %.9g", nm, (long long)d, d >= 0 ? bg_f32(xl->grad)[d] : 0.0,
                  d >= 0 ? bg_f32(&dx)[d] : 0.0);
        double got_ds = bg_f32(bg_quant_state_param(st, 0)->grad)[0], want_ds = bg_f32(&ds)[0];
        CHECK_MSG(bg_test_close(got_ds, want_ds, 0.0, 1e-5), "lq.%s: dscale %.9g, torch %.9g (rel %.2e)", nm, got_ds,
                  want_ds, fabs(got_ds - want_ds) / fabs(want_ds));
        if (plus) {
            double got_dz = bg_f32(bg_quant_state_param(st, 1)->grad)[0], want_dz = bg_f32(&dz)[0];
            CHECK_MSG(bg_test_close(got_dz, want_dz, 0.0, 1e-5), "lq.%s: dzero_point %.9g, torch %.9g", nm, got_dz,
                      want_dz);
        }
        printf("lq.%-14s dscale %.9g (torch %.9g)%s\n", nm, got_ds, want_ds, plus ? "" : "  [zero point not learned]");
        bg_tensor *cq;
        bg_quant_params p;
        if (CHECK(bg_quantize(ctx, &spec, st, xl, &cq, &p) == BG_OK)) {
            bool ok = true;
            for (int64_t i = 0; i < n; i++) ok &= code_at(cq, i) == ((int32_t *)codes.data)[i];
            CHECK_MSG(ok, "lq.%s: codes differ from torch", nm);
        }
    next:
        bg_tensor_free(xl);
        bg_ctx_free(ctx);
        bg_quant_state_free(st);
    }
}

static void test_observers(void) {
    const char *cases[] = {"minmax_sym", "minmax_affine", "moving_affine", "perchannel_sym", "zeros_affine"};
    const char *specs[] = {"int8:minmax", "int8:affine:minmax", "int8:affine:moving_minmax=0.01",
                           "int8:per_channel=0:minmax", "int8:affine:minmax"};
    for (int c = 0; c < 5; c++) {
        bg_tensor b = get("obs.%s.%s", cases[c], "batches"), sc = get("obs.%s.%s", cases[c], "scale");
        bg_tensor zp = get("obs.%s.%s", cases[c], "zp");
        bg_quant_spec spec = parse(specs[c]);
        bg_quant_state *st;
        CHECK(bg_quant_state_new(&spec, b.ndim - 1, b.shape + 1, &st) == BG_OK);
        if (!st) continue;
        bg_ctx *ctx = bg_ctx_new(0);
        int64_t per = bg_numel(&b) / b.shape[0];
        for (int64_t i = 0; i < b.shape[0]; i++) {
            bg_tensor *xb = bg_from_data(ctx, BG_DTYPE_F32, b.ndim - 1, b.shape + 1, bg_f32(&b) + i * per);
            CHECK(bg_fake_quant(ctx, xb, &spec, st) != NULL);
        }
        int64_t C = bg_numel(&sc);
        bool ok = bg_numel(bg_quant_state_scale(st)) == C;
        for (int64_t i = 0; ok && i < C; i++) {
            float s = bg_f32(bg_quant_state_scale(st))[i], z = bg_f32(bg_quant_state_zero_point(st))[i];
            ok = memcmp(&s, &bg_f32(&sc)[i], 4) == 0 && z == (float)((int32_t *)zp.data)[i];
            if (!ok)
                printf("obs.%s[%lld]: scale %.9g zp %g, torch %.9g %d\n", cases[c], (long long)i, (double)s, (double)z,
                       (double)bg_f32(&sc)[i], ((int32_t *)zp.data)[i]);
        }
        CHECK_MSG(ok, "obs.%s: scale / zero point differ from torch's observer", cases[c]);
        CHECK(bg_quant_state_calls(st) == b.shape[0]);
        bg_ctx_free(ctx);
        bg_quant_state_free(st);
    }
}

// ---------------------------------------------------------------------------
// formulas

/* Runs y = fake_quant(x) and backward with dout; x is a fresh leaf. */
typedef struct run {
    bg_ctx *ctx;
    bg_tensor *x, *y, *dout;
} run;

static run run_op(const bg_quant_spec *spec, bg_quant_state *st, int ndim, const int64_t *shape, const float *xv,
                  uint64_t seed) {
    run r = {.ctx = bg_ctx_new(0)};
    r.x = bg_tensor_new(BG_DTYPE_F32, ndim, shape);
    memcpy(r.x->data, xv, bg_nbytes(r.x));
    bg_set_requires_grad(r.x, true);
    r.y = bg_fake_quant(r.ctx, r.x, spec, st);
    if (!r.y) return r;
    bg_rng rng;
    bg_rng_seed(&rng, seed);
    r.dout = bg_empty(r.ctx, BG_DTYPE_F32, ndim, shape);
    for (int64_t i = 0; i < bg_numel(r.x); i++) bg_f32(r.dout)[i] = 2.0f * bg_rng_uniform(&rng) - 1.0f;
    if (r.y->requires_grad) bg_backward_with_grad(r.ctx, r.y, r.dout);
    return r;
}

static void run_free(run *r) {
    bg_tensor_free(r->x);
    bg_ctx_free(r->ctx);
}

static float *randn(int64_t n, uint64_t seed, float scale) {
    float *v = malloc(sizeof(float) * (size_t)n);
    bg_rng rng;
    bg_rng_seed(&rng, seed);
    for (int64_t i = 0; i < n; i++) v[i] = scale * bg_rng_normal(&rng);
    return v;
}

static void test_bitnet(void) {
    // Ternary weights, absmean: y = clamp(round(W/g), -1, 1)*g, g = mean|W|; identity STE.
    const int64_t shape[2] = {8, 24}, n = 192;
    float *w = randn(n, 1, 0.05f);
    w[0] = 0.0f, w[1] = 5.0f;   // an outlier, still passed through by the identity STE
    bg_quant_spec spec = parse("ternary:absmean");
    bg_quant_state *st;
    CHECK(bg_quant_state_new(&spec, 2, shape, &st) == BG_OK);
    run r = run_op(&spec, st, 2, shape, w, 7);
    if (CHECK_MSG(r.y != NULL, "ternary: %s", bg_ctx_error(r.ctx))) {
        double sum = 0;
        for (int64_t i = 0; i < n; i++) sum += fabs(w[i]);
        float g = (float)(sum / n);
        CHECK(bg_f32(bg_quant_state_scale(st))[0] == g);   // the dynamic scale is kept for inspection
        bool ok = true, ste = true;
        int levels[3] = {0};
        for (int64_t i = 0; i < n; i++) {
            float q = nearbyintf(w[i] * (1.0f / g));
            q = q < -1 ? -1 : q > 1 ? 1 : q;
            ok &= bg_f32(r.y)[i] == q * g;
            levels[(int)q + 1]++;
            ste &= bg_f32(r.x->grad)[i] == bg_f32(r.dout)[i];
        }
        CHECK_MSG(ok, "ternary absmean values differ from clamp(round(W/g),-1,1)*g");
        CHECK_MSG(ste, "ternary absmean: backward is not the identity STE");
        CHECK(levels[0] > 0 && levels[1] > 0 && levels[2] > 0);
    }
    run_free(&r);
    bg_quant_state_free(st);
    free(w);

    // Activations: per-token absmax int8, s = max|x_row|/127, codes in [-128, 127]; stateless.
    const int64_t ashape[3] = {2, 3, 40}, an = 240;
    float *a = randn(an, 2, 1.0f);
    for (int64_t j = 0; j < 40; j++) a[40 + j] = 0.0f;   // an all-zero token: s = 1e-5/127, y = 0
    spec = parse("int8:per_token:absmax");
    r = run_op(&spec, NULL, 3, ashape, a, 8);
    if (CHECK_MSG(r.y != NULL, "absmax: %s", bg_ctx_error(r.ctx))) {
        bool ok = true, ste = true;
        for (int64_t t = 0; t < 6; t++) {
            float m = 0;
            for (int64_t j = 0; j < 40; j++) m = fmaxf(m, fabsf(a[t * 40 + j]));
            float s = fmaxf(m, 1e-5f) / 127.0f;
            for (int64_t j = 0; j < 40; j++) {
                int64_t i = t * 40 + j;
                float q = nearbyintf(a[i] * (1.0f / s));
                q = q < -128 ? -128 : q > 127 ? 127 : q;
                ok &= bg_f32(r.y)[i] == q * s;
                ste &= bg_f32(r.x->grad)[i] == bg_f32(r.dout)[i];
            }
        }
        CHECK_MSG(ok, "per-token absmax values differ from the formula");
        CHECK_MSG(ste, "per-token absmax: backward is not the identity STE");
        for (int64_t j = 0; j < 40; j++) CHECK(bg_f32(r.y)[40 + j] == 0.0f);
    }
    run_free(&r);
    free(a);
}

static void test_pact(void) {
    const int64_t shape[1] = {50}, n = 50;
    float *x = randn(n, 3, 2.0f);
    bg_quant_spec spec = parse("int4:pact=1.5");
    bg_quant_state *st;
    CHECK(bg_quant_state_new(&spec, 1, shape, &st) == BG_OK);
    CHECK_STR(bg_quant_state_param_name(st, 0), "alpha");
    run r = run_op(&spec, st, 1, shape, x, 9);
    if (CHECK_MSG(r.y != NULL, "pact: %s", bg_ctx_error(r.ctx))) {
        const float a = 1.5f, s = a / 15.0f;
        CHECK(bg_f32(bg_quant_state_param(st, 0))[0] == a);
        double da = 0;
        bool ok = true, okdx = true;
        for (int64_t i = 0; i < n; i++) {
            float yv = x[i] < 0 ? 0.0f : x[i] > a ? a : x[i];
            float q = nearbyintf(yv * (1.0f / s));
            q = q > 15 ? 15 : q;
            ok &= fabsf(bg_f32(r.y)[i] - q * s) <= 1e-6f;
            float g = bg_f32(r.dout)[i];
            if (x[i] >= a) da += g;
            okdx &= bg_f32(r.x->grad)[i] == ((x[i] >= 0 && x[i] < a) ? g : 0.0f);
        }
        CHECK_MSG(ok, "pact values differ from round(clip(x,0,a)*15/a)*a/15");
        CHECK_MSG(okdx, "pact dx is not dy*1[0 <= x < alpha]");
        CHECK_CLOSE(bg_f32(bg_quant_state_param(st, 0)->grad)[0], da, 1e-6, 1e-6);
    }
    run_free(&r);
    bg_quant_state_free(st);
    free(x);
}

int main(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/tests/reference/quant.safetensors", bg_test_source_dir());
    if (!CHECK_MSG(bg_safetensors_open(path, &ref) == BG_OK, "cannot open %s: %s", path, bg_last_error()))
        return bg_test_finish();
    test_reference_file();
    test_per_tensor();
    test_per_channel();
    test_learnable();
    test_observers();
    test_bitnet();
    test_pact();
    bg_safetensors_free(ref);
    return bg_test_finish();
}
