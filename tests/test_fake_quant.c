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

/* LSQ per channel and per group: ds[c] = g * sum over c of dy*(q - u) in
 * range, dy*qmin / dy*qmax outside (u = x/s, q = nearbyint(u)), g =
 * 1/sqrt(numel*Qp); dx = dy*1[in range]; first input initialises s. */
static void check_lsq(const char *str, int ndim, const int64_t *shape, int64_t outer, int64_t C, int64_t inner) {
    const int64_t n = outer * C * inner;
    float *x = randn(n, 11, 1.0f);
    bg_quant_spec spec = parse(str);
    int32_t qmin, qmax;
    bg_quant_spec_qrange(&spec, &qmin, &qmax);
    bg_quant_state *st;
    if (!CHECK_MSG(bg_quant_state_new(&spec, ndim, shape, &st) == BG_OK, "%s: %s", str, bg_last_error())) return;
    bg_tensor *sp = bg_quant_state_param(st, 0);
    CHECK(bg_numel(sp) == C);
    run r = run_op(&spec, st, ndim, shape, x, 12);
    if (CHECK_MSG(r.y != NULL, "%s: %s", str, bg_ctx_error(r.ctx))) {
        const double g = 1.0 / sqrt((double)n * qmax);
        bool init_ok = true, dx_ok = true, ds_ok = true, y_ok = true;
        for (int64_t c = 0; c < C; c++) {
            double mean = 0, ds = 0;
            for (int64_t o = 0; o < outer; o++)
                for (int64_t i = 0; i < inner; i++) mean += fabs(x[(o * C + c) * inner + i]);
            mean /= (double)(outer * inner);
            float s = bg_f32(sp)[c];
            init_ok &= fabs(s - 2.0 * mean / sqrt((double)qmax)) <= 1e-6 * s;
            for (int64_t o = 0; o < outer; o++)
                for (int64_t i = 0; i < inner; i++) {
                    int64_t k = (o * C + c) * inner + i;
                    float u = x[k] * (1.0f / s), q = nearbyintf(u);
                    bool in = q >= qmin && q <= qmax;
                    float dy = bg_f32(r.dout)[k];
                    ds += in ? (double)dy * ((double)q - (double)u) : (double)dy * (q < qmin ? qmin : qmax);
                    dx_ok &= bg_f32(r.x->grad)[k] == (in ? dy : 0.0f);
                    float qc = q < qmin ? qmin : q > qmax ? qmax : q;
                    y_ok &= bg_f32(r.y)[k] == qc * s;
                }
            ds *= g;
            ds_ok &= bg_test_close(bg_f32(sp->grad)[c], ds, 1e-7, 1e-5);
        }
        CHECK_MSG(init_ok, "%s: s is not 2 mean|x| / sqrt(Qp) after the first input", str);
        CHECK_MSG(y_ok, "%s: values differ from the formula", str);
        CHECK_MSG(dx_ok, "%s: dx is not dy * mask", str);
        CHECK_MSG(ds_ok, "%s: ds differs from the LSQ formula", str);
    }
    run_free(&r);
    bg_quant_state_free(st);
    free(x);
}

static void test_lsq_granularities(void) {
    check_lsq("int4:lsq", 2, (const int64_t[]){6, 20}, 1, 1, 120);
    check_lsq("int4:per_channel=0:lsq", 2, (const int64_t[]){4, 30}, 1, 4, 30);
    check_lsq("int3:per_channel=1:lsq", 2, (const int64_t[]){10, 5}, 10, 5, 1);
    check_lsq("int4:per_group=16:lsq", 2, (const int64_t[]){3, 64}, 1, 12, 16);
    check_lsq("int2:unsigned:per_group=8:lsq", 3, (const int64_t[]){2, 2, 16}, 1, 8, 8);
    check_lsq("ternary:per_channel=0:lsq", 2, (const int64_t[]){3, 17}, 1, 3, 17);
}

static void test_lsq_plus_formula(void) {
    // dz = -g * s * sum of dy outside the range; forward z = nearbyint(z).
    const int64_t shape[1] = {60}, n = 60;
    float *x = randn(n, 13, 1.0f);
    bg_quant_spec spec = parse("int3:lsq_plus");
    bg_quant_state *st;
    CHECK(bg_quant_state_new(&spec, 1, shape, &st) == BG_OK);
    bg_f32(bg_quant_state_param(st, 0))[0] = 0.2f;
    bg_f32(bg_quant_state_param(st, 1))[0] = 3.2f;   // forward 3, backward trunc(3.7) = 3
    bg_quant_state_set_initialized(st, true);
    run r = run_op(&spec, st, 1, shape, x, 14);
    if (CHECK_MSG(r.y != NULL, "lsq_plus: %s", bg_ctx_error(r.ctx))) {
        const float s = 0.2f, z = 3.0f;
        double g = 1.0 / sqrt(60.0 * 7.0), dz = 0;
        bool y_ok = true;
        for (int64_t i = 0; i < n; i++) {
            float q = nearbyintf(x[i] * (1.0f / s)) + z;
            bool in = q >= 0 && q <= 7;
            if (!in) dz += -(double)bg_f32(r.dout)[i] * s;
            float qc = q < 0 ? 0 : q > 7 ? 7 : q;
            y_ok &= bg_f32(r.y)[i] == (qc - z) * s;
        }
        CHECK(y_ok);
        CHECK_CLOSE(bg_f32(bg_quant_state_param(st, 1)->grad)[0], dz * g, 1e-7, 1e-5);
    }
    run_free(&r);
    bg_quant_state_free(st);
    free(x);
}

static void test_binary(void) {
    const int64_t shape[2] = {3, 10}, n = 30;
    float *x = randn(n, 15, 1.0f);
    x[0] = 0.0f;
    const char *strs[] = {"binary:per_channel=0", "binary:per_channel=0:clipped_ste"};
    for (int v = 0; v < 2; v++) {
        bg_quant_spec spec = parse(strs[v]);
        bg_quant_state *st;
        CHECK(bg_quant_state_new(&spec, 2, shape, &st) == BG_OK);
        run r = run_op(&spec, st, 2, shape, x, 16);
        if (CHECK_MSG(r.y != NULL, "binary: %s", bg_ctx_error(r.ctx))) {
            bool ok = true, dx_ok = true;
            for (int64_t c = 0; c < 3; c++) {
                double m = 0;
                for (int64_t i = 0; i < 10; i++) m += fabs(x[c * 10 + i]);
                float s = (float)(m / 10);
                for (int64_t i = 0; i < 10; i++) {
                    int64_t k = c * 10 + i;
                    float u = x[k] * (1.0f / s);
                    ok &= bg_f32(r.y)[k] == (u > 0 ? s : -s);
                    float dy = bg_f32(r.dout)[k];
                    dx_ok &= bg_f32(r.x->grad)[k] == (v == 0 || (u >= -1 && u <= 1) ? dy : 0.0f);
                }
            }
            CHECK_MSG(ok, "%s: y is not sign(x)*mean|x| per channel", strs[v]);
            CHECK_MSG(dx_ok, "%s: dx differs from the rule", strs[v]);
            CHECK(bg_f32(r.y)[0] < 0);   // x = 0 -> -s
        }
        run_free(&r);
        bg_quant_state_free(st);
    }
    free(x);
}

static void test_stochastic(void) {
    const int64_t shape[1] = {16}, n = 16;
    float x[16];
    for (int i = 0; i < 16; i++) x[i] = -3.7f + 0.45f * (float)i;
    bg_quant_spec spec = parse("int4:stochastic=5:moving_minmax");
    bg_quant_state *a, *b;
    CHECK(bg_quant_state_new(&spec, 1, shape, &a) == BG_OK && bg_quant_state_new(&spec, 1, shape, &b) == BG_OK);
    double mean[16] = {0};
    bool neighbours = true, same = true, varies = false;
    float first[16];
    const int T = 400;
    for (int t = 0; t < T; t++) {
        bg_ctx *ctx = bg_ctx_new(0);
        bg_tensor *xa = bg_from_data(ctx, BG_DTYPE_F32, 1, shape, x);
        bg_tensor *ya = bg_fake_quant(ctx, xa, &spec, a), *yb = bg_fake_quant(ctx, xa, &spec, b);
        if (!ya || !yb) {
            CHECK_MSG(false, "stochastic: %s", bg_ctx_error(ctx));
            bg_ctx_free(ctx);
            break;
        }
        float s = bg_f32(bg_quant_state_scale(a))[0];
        for (int i = 0; i < n; i++) {
            float u = x[i] / s, yv = bg_f32(ya)[i];
            neighbours &= yv == floorf(u) * s || yv == ceilf(u) * s || yv == -8 * s || yv == 7 * s;
            mean[i] += yv;
            same &= yv == bg_f32(yb)[i];
            if (t == 0) first[i] = yv;
            else varies |= yv != first[i];
        }
        bg_ctx_free(ctx);
    }
    CHECK_MSG(neighbours, "stochastic rounding left the two neighbouring levels");
    CHECK_MSG(same, "two states with the same seed give different streams");
    CHECK_MSG(varies, "stochastic rounding gives the same values every call");
    float s = bg_f32(bg_quant_state_scale(a))[0];
    for (int i = 2; i < 14; i++) CHECK_CLOSE(mean[i] / T, (double)x[i], 0.06 * s * 8, 0.0);
    bg_quant_state_free(a);
    bg_quant_state_free(b);
}

/* Issue 10 case 1: a restored call count of INT64_MAX (a checkpoint may hold
 * one) wraps to 0 on the next forward instead of overflowing (UBSan aborts
 * on the overflow in the sanitizer build). */
static void test_call_count_wraps(void) {
    const int64_t shape[1] = {4};
    const float x[4] = {-1.0f, -0.25f, 0.5f, 1.0f};
    bg_quant_spec spec = parse("int4:stochastic=3:moving_minmax");
    bg_quant_state *st;
    CHECK(bg_quant_state_new(&spec, 1, shape, &st) == BG_OK);
    bg_quant_state_flags fl;
    CHECK(bg_quant_state_get_buffers(st, NULL, NULL, NULL, NULL, &fl) == BG_OK);
    fl.calls = INT64_MAX;
    CHECK(bg_quant_state_set_buffers(st, NULL, NULL, NULL, NULL, &fl) == BG_OK);
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *xt = bg_from_data(ctx, BG_DTYPE_F32, 1, shape, x);
    CHECK(bg_fake_quant(ctx, xt, &spec, st) != NULL);
    CHECK(bg_quant_state_calls(st) == 0);
    CHECK(bg_fake_quant(ctx, xt, &spec, st) != NULL);
    CHECK(bg_quant_state_calls(st) == 1);
    bg_ctx_free(ctx);
    bg_quant_state_free(st);
}

static void test_observer_controls(void) {
    const int64_t shape[1] = {8};
    const float b1[8] = {-1, 0.5f, 2, 0.25f, -0.5f, 1, 0, 1.5f};
    const float b2[8] = {-6, 0.5f, 2, 0.25f, -0.5f, 1, 0, 4};
    bg_quant_spec spec = parse("int8:affine:minmax");
    bg_quant_state *st;
    CHECK(bg_quant_state_new(&spec, 1, shape, &st) == BG_OK);
    CHECK(bg_quant_state_observer_enabled(st) && bg_quant_state_enabled(st));
    CHECK(bg_f32(bg_quant_state_scale(st))[0] == 1.0f && bg_f32(bg_quant_state_zero_point(st))[0] == 0.0f);
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x1 = bg_from_data(ctx, BG_DTYPE_F32, 1, shape, b1), *x2 = bg_from_data(ctx, BG_DTYPE_F32, 1, shape, b2);
    CHECK(bg_fake_quant(ctx, x1, &spec, st) != NULL);
    float s1 = bg_f32(bg_quant_state_scale(st))[0], z1 = bg_f32(bg_quant_state_zero_point(st))[0];
    CHECK(s1 == 3.0f / 255.0f && z1 == 85.0f);   // [-1, 2]: s = 3/255, z = 0 - round(-1/s) = 85
    bg_quant_state_set_observer(st, false);
    CHECK(bg_fake_quant(ctx, x2, &spec, st) != NULL);
    CHECK(bg_f32(bg_quant_state_scale(st))[0] == s1);   // frozen
    bg_quant_state_set_observer(st, true);
    CHECK(bg_fake_quant(ctx, x2, &spec, st) != NULL);
    CHECK(bg_f32(bg_quant_state_scale(st))[0] == 10.0f / 255.0f);   // running [-6, 4]
    bg_quant_state_reset(st);
    CHECK(bg_f32(bg_quant_state_scale(st))[0] == 1.0f && bg_f32(bg_quant_state_zero_point(st))[0] == 0.0f);
    CHECK(bg_fake_quant(ctx, x1, &spec, st) != NULL);
    CHECK(bg_f32(bg_quant_state_scale(st))[0] == s1);   // the range restarted
    // fp32 mode: x itself, no node, no observation.
    bg_quant_state_set_enabled(st, false);
    int64_t calls = bg_quant_state_calls(st);
    CHECK(bg_fake_quant(ctx, x2, &spec, st) == x2);
    CHECK(bg_quant_state_calls(st) == calls && bg_f32(bg_quant_state_scale(st))[0] == s1);
    bg_quant_state_set_enabled(st, true);
    // Moving average: r = r + m (new - r).
    bg_quant_spec mv = parse("int8:moving_minmax=0.5");
    bg_quant_state *ms;
    CHECK(bg_quant_state_new(&mv, 1, shape, &ms) == BG_OK);
    CHECK(bg_fake_quant(ctx, x1, &mv, ms) && bg_fake_quant(ctx, x2, &mv, ms));
    float lo = -1.0f + 0.5f * (-6.0f + 1.0f), hi = 2.0f + 0.5f * (4.0f - 2.0f);
    CHECK(bg_f32(bg_quant_state_scale(ms))[0] == fmaxf(-lo, hi) / 127.5f);
    // set_spec: a new bit-width keeps the scales, resets the range.
    bg_quant_spec s4 = parse("int4:affine:minmax");
    CHECK(bg_quant_state_set_spec(st, &s4) == BG_OK);
    CHECK(bg_quant_state_spec(st)->bits == 4 && bg_f32(bg_quant_state_scale(st))[0] == 1.0f);
    CHECK(bg_fake_quant(ctx, x1, &s4, st) != NULL);
    CHECK(bg_f32(bg_quant_state_scale(st))[0] == 3.0f / 15.0f);
    bg_quant_spec pc = parse("int8:per_channel=0:minmax");
    CHECK(bg_quant_state_set_spec(st, &pc) == BG_ERR_STATE);
    CHECK_STR(bg_last_error(), "quant_state_set_spec: \"int8:per_channel=0:minmax\" keeps different scales or "
                               "parameters than \"int4:affine:minmax\"");
    bg_ctx_free(ctx);
    bg_quant_state_free(st);
    bg_quant_state_free(ms);
}

static void test_percentile_mse(void) {
    const int64_t n = 2001, shape[1] = {2001};
    float *x = randn(n, 17, 1.0f), *x8 = randn(n, 17, 1.0f);
    x[100] = 100.0f;   // one far outlier (percentile ignores it)
    x8[100] = 8.0f;    // a moderate one: clipping it pays off in squared error at 4 bits
    const char *strs[] = {"int8:minmax", "int8:percentile=99", "int4:mse", "int4:minmax", "int8:affine:percentile=99.5"};
    float scales[5];
    for (int v = 0; v < 5; v++) {
        bg_quant_spec spec = parse(strs[v]);
        bg_quant_state *st;
        CHECK(bg_quant_state_new(&spec, 1, shape, &st) == BG_OK);
        run r = run_op(&spec, st, 1, shape, v == 2 || v == 3 ? x8 : x, 18);
        scales[v] = bg_f32(bg_quant_state_scale(st))[0];
        if (v == 2 || v == 3) {   // MSE picks a clipping range at least as good as min/max
            double err = 0;
            for (int64_t i = 0; i < n; i++) err += pow((double)bg_f32(r.y)[i] - x8[i], 2);
            static double mse_err;
            if (v == 2) mse_err = err;
            else CHECK_MSG(mse_err <= err, "mse error %g > minmax error %g", mse_err, err);
        }
        run_free(&r);
        bg_quant_state_free(st);
    }
    CHECK(scales[0] == 100.0f / 127.5f);
    // the 99th percentile of |x| of a standard normal is about 2.58
    CHECK_MSG(scales[1] * 127.5f > 2.3f && scales[1] * 127.5f < 2.9f, "percentile range %g", scales[1] * 127.5);
    CHECK_MSG(scales[2] < scales[3] * 0.8f, "mse scale %g vs minmax %g: the outlier was not clipped", scales[2], scales[3]);
    CHECK(scales[4] > 0 && scales[4] < 0.05f);
    free(x);
    free(x8);
}

/* The MSE search on a large tensor looks at a strided sample: the range it
 * picks must do (almost) as well on the whole tensor as the full search. */
static double full_error(const float *x, int64_t n, float s, float z, float qmin, float qmax) {
    double err = 0;
    float inv = 1.0f / s;
    for (int64_t i = 0; i < n; i++) {
        float q = fminf(fmaxf(nearbyintf(x[i] * inv) + z, qmin), qmax);
        err += pow((double)x[i] - (double)((q - z) * s), 2);
    }
    return err;
}

static void test_mse_sampled(void) {
    const int64_t n = 200000, shape[1] = {200000};
    float *x = randn(n, 23, 0.05f);
    for (int64_t i = 0; i < n; i += 997) x[i] *= 6.0f;   // heavy tails: clipping pays
    const char *strs[] = {"int4:mse", "int2:mse", "int4:affine:mse"};
    for (int v = 0; v < 3; v++) {
        bg_quant_spec spec = parse(strs[v]);
        bg_quant_state *st;
        CHECK(bg_quant_state_new(&spec, 1, shape, &st) == BG_OK);
        run r = run_op(&spec, st, 1, shape, x, 29);
        float s = bg_f32(bg_quant_state_scale(st))[0], z = bg_f32(bg_quant_state_zero_point(st))[0];
        int32_t qmin, qmax;
        bg_quant_spec_qrange(&spec, &qmin, &qmax);
        double got = full_error(x, n, s, z, (float)qmin, (float)qmax), best = INFINITY;
        // the full search over every element, as the observer's grid
        float mn = INFINITY, mx = -INFINITY;
        for (int64_t i = 0; i < n; i++) mn = fminf(mn, x[i]), mx = fmaxf(mx, x[i]);
        if (spec.symmetric) mx = fmaxf(-mn, mx), mn = -mx;
        for (int k = 100; k >= 1; k--) {
            float f = (float)k / 100.0f, cs, cz;
            if (spec.symmetric) {
                cs = fmaxf(mx * f / ((float)(qmax - qmin) / 2.0f), BG_QUANT_EPS), cz = 0;
            } else {
                float lo = fminf(mn * f, 0.0f), hi = fmaxf(mx * f, 0.0f);
                cs = fmaxf((hi - lo) / (float)(qmax - qmin), BG_QUANT_EPS);
                cz = fminf(fmaxf((float)qmin - nearbyintf(lo / cs), (float)qmin), (float)qmax);
            }
            best = fmin(best, full_error(x, n, cs, cz, (float)qmin, (float)qmax));
        }
        CHECK_MSG(got <= best * 1.05, "%s: sampled search error %g vs full search %g", strs[v], got, best);
        run_free(&r);
        bg_quant_state_free(st);
    }
    free(x);
}

static void test_bind_and_init(void) {
    const int64_t shape[2] = {4, 8}, n = 32;
    float *w = randn(n, 19, 0.3f);
    bg_quant_spec spec = parse("int4:per_channel=0:lsq");
    bg_quant_state *st;
    CHECK(bg_quant_state_new(&spec, 2, shape, &st) == BG_OK);
    bg_tensor *mine = bg_tensor_new(BG_DTYPE_F32, 1, (const int64_t[]){4});
    CHECK(bg_quant_state_bind_param(st, 0, mine) == BG_OK);
    CHECK(bg_quant_state_param(st, 0) == mine && mine->requires_grad && mine->grad);
    CHECK(bg_quant_state_bind_param(st, 1, mine) == BG_ERR_ARG);
    bg_tensor *wrong = bg_tensor_new(BG_DTYPE_F32, 1, (const int64_t[]){5});
    CHECK(bg_quant_state_bind_param(st, 0, wrong) == BG_ERR_SHAPE);
    bg_tensor_free(wrong);
    // init_from sets the step from these weights now: s_c = 2 mean|w_c| / sqrt(7).
    bg_tensor *wt = bg_tensor_new(BG_DTYPE_F32, 2, shape);
    memcpy(wt->data, w, sizeof(float) * (size_t)n);
    CHECK(bg_quant_state_init_from(st, wt) == BG_OK && bg_quant_state_initialized(st));
    for (int c = 0; c < 4; c++) {
        double m = 0;
        for (int i = 0; i < 8; i++) m += fabs(w[c * 8 + i]);
        CHECK_CLOSE(bg_f32(mine)[c], 2.0 * (m / 8) / sqrt(7.0), 0, 1e-6);
    }
    // A later forward keeps the values (initialised) and accumulates into mine->grad.
    float before = bg_f32(mine)[2];
    run r = run_op(&spec, st, 2, shape, w, 20);
    CHECK(r.y && bg_f32(mine)[2] == before && bg_f32(mine->grad)[2] != 0.0f);
    run_free(&r);
    bg_quant_state_free(st);   // does not free mine
    CHECK(bg_f32(mine)[2] == before);
    bg_tensor_free(mine);
    bg_tensor_free(wt);
    free(w);
}

// ---------------------------------------------------------------------------
// edge cases

static const char *const all_specs[] = {
    "int8",          "int8:affine",         "int8:moving_minmax", "int8:percentile", "int4:mse",
    "int4:lsq",      "int4:lsq_plus",       "int4:pact",          "ternary",         "binary",
    "int8:per_token:absmax", "int8:per_channel=0:minmax", "int4:per_group=2:lsq", "int2:stochastic=1:minmax",
    "ternary:per_group=2:absmean", "int8:per_token:minmax", "int8:affine:scale=0.1:zp=7", "int8:affine:lsq_plus:signed",
};

static void test_degenerate_inputs(void) {
    const int64_t shape[2] = {3, 4}, one[1] = {1};
    float zeros[12] = {0}, consts[12], single[1] = {-0.7f};
    for (int i = 0; i < 12; i++) consts[i] = 3.0f;
    for (size_t v = 0; v < sizeof all_specs / sizeof *all_specs; v++) {
        bg_quant_spec spec = parse(all_specs[v]);
        for (int which = 0; which < 3; which++) {
            const float *x = which == 0 ? zeros : which == 1 ? consts : single;
            int nd = which == 2 ? 1 : 2;
            const int64_t *sh = which == 2 ? one : shape;
            if (which == 2 && spec.granularity == BG_QUANT_PER_GROUP) continue;   // 1 is not a multiple of 2
            bg_quant_state *st = NULL;
            if (bg_quant_spec_is_stateful(&spec) || spec.granularity != BG_QUANT_PER_TOKEN)
                CHECK_MSG(bg_quant_state_new(&spec, nd, sh, &st) == BG_OK, "%s: %s", all_specs[v], bg_last_error());
            for (int rep = 0; rep < 2; rep++) {   // twice: fresh and observed state
                run r = run_op(&spec, st, nd, sh, x, 21);
                const char *what = which == 0 ? "zeros" : which == 1 ? "min == max" : "one element";
                if (!CHECK_MSG(r.y != NULL, "%s on %s: %s", all_specs[v], what, bg_ctx_error(r.ctx))) {
                    run_free(&r);
                    continue;
                }
                bool finite = true, close = true;
                for (int64_t i = 0; i < bg_numel(r.x); i++) {
                    finite &= isfinite(bg_f32(r.y)[i]) && isfinite(bg_f32(r.x->grad)[i]);
                    if (which == 0 && spec.kind != BG_QUANT_BINARY) close &= bg_f32(r.y)[i] == 0.0f;
                    if (which == 0 && spec.kind == BG_QUANT_BINARY) close &= fabsf(bg_f32(r.y)[i]) <= 1e-5f;
                }
                for (int i = 0; st && i < bg_quant_state_num_params(st); i++) {
                    bg_tensor *p = bg_quant_state_param(st, i);
                    for (int64_t k = 0; k < bg_numel(p); k++) finite &= isfinite(bg_f32(p->grad)[k]);
                    if (strcmp(bg_quant_state_param_name(st, i), "zero_point") != 0)
                        for (int64_t k = 0; k < bg_numel(p); k++) finite &= bg_f32(p)[k] > 0;
                }
                if (bg_quant_state_scale(st))
                    for (int64_t k = 0; k < bg_numel(bg_quant_state_scale(st)); k++)
                        finite &= bg_f32(bg_quant_state_scale(st))[k] > 0;
                CHECK_MSG(finite, "%s on %s: NaN/Inf or a step <= 0", all_specs[v], what);
                CHECK_MSG(close, "%s on zeros: y is not 0", all_specs[v]);
                run_free(&r);
            }
            bg_quant_state_free(st);
        }
    }
}

static void expect_error(bg_ctx *ctx, bg_tensor *y, bg_status st, const char *msg) {
    CHECK(y == NULL);
    CHECK_MSG(bg_ctx_status(ctx) == st, "status %s, want %s", bg_status_str(bg_ctx_status(ctx)), bg_status_str(st));
    CHECK_MSG(strcmp(bg_ctx_error(ctx), msg) == 0, "error \"%s\", want \"%s\"", bg_ctx_error(ctx), msg);
    bg_ctx_clear_error(ctx);
}

static void test_errors(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    // A group size that does not divide the last dim.
    bg_quant_spec g64 = parse("int4:per_group=64:sym:lsq");
    bg_quant_state *st;
    CHECK(bg_quant_state_new(&g64, 2, (const int64_t[]){8, 100}, &st) == BG_ERR_SHAPE && st == NULL);
    CHECK_STR(bg_last_error(), "quant_state: group size 64 does not divide the last dim 100 of [8,100]");
    bg_quant_spec t64 = parse("ternary:per_group=64");
    bg_tensor *x = bg_zeros(ctx, BG_DTYPE_F32, 2, (const int64_t[]){8, 100});
    expect_error(ctx, bg_fake_quant(ctx, x, &t64, NULL), BG_ERR_SHAPE,
                 "fake_quant: group size 64 does not divide the last dim 100 of [8,100]");

    // NaN / Inf with checking on: clear error; off: defined values.
    float v[6] = {0.1f, -0.2f, 0.3f, INFINITY, NAN, 0.0f};
    bg_tensor *xv = bg_from_data(ctx, BG_DTYPE_F32, 1, (const int64_t[]){6}, v);
    bg_quant_spec chk = parse("int8:scale=0.1:check");
    expect_error(ctx, bg_fake_quant(ctx, xv, &chk, NULL), BG_ERR_NAN,
                 "fake_quant: x has a NaN or Inf at index 3 (value inf)");
    v[3] = 1.0f;
    xv = bg_from_data(ctx, BG_DTYPE_F32, 1, (const int64_t[]){6}, v);
    expect_error(ctx, bg_fake_quant(ctx, xv, &chk, NULL), BG_ERR_NAN,
                 "fake_quant: x has a NaN or Inf at index 4 (value nan)");
    v[3] = INFINITY;
    xv = bg_from_data(ctx, BG_DTYPE_F32, 1, (const int64_t[]){6}, v);
    bg_quant_spec nochk = parse("int8:scale=0.1");
    bg_tensor *y = bg_fake_quant(ctx, xv, &nochk, NULL);
    if (CHECK(y != NULL)) CHECK(bg_f32(y)[3] == 127 * 0.1f && bg_f32(y)[4] == -128 * 0.1f && bg_f32(y)[0] == 0.1f);

    // An LSQ step pushed <= 0 (or NaN) by an optimizer is kept positive.
    bg_quant_spec lsq = parse("int4:lsq");
    CHECK(bg_quant_state_new(&lsq, 1, (const int64_t[]){6}, &st) == BG_OK);
    bg_quant_state_set_initialized(st, true);
    const float bad[3] = {-0.5f, 0.0f, NAN};
    v[3] = 1.0f, v[4] = -1.0f;
    xv = bg_from_data(ctx, BG_DTYPE_F32, 1, (const int64_t[]){6}, v);
    for (int b = 0; b < 3; b++) {
        bg_f32(bg_quant_state_param(st, 0))[0] = bad[b];
        y = bg_fake_quant(ctx, xv, &lsq, st);
        CHECK(y != NULL && bg_f32(bg_quant_state_param(st, 0))[0] == BG_QUANT_EPS);
        bool finite = true;
        for (int i = 0; y && i < 6; i++) finite &= isfinite(bg_f32(y)[i]);
        CHECK_MSG(finite, "lsq with step %g: non-finite output", (double)bad[b]);
    }
    bg_quant_state_free(st);

    // Spec / state mismatches.
    bg_quant_spec i8 = parse("int8"), i4 = parse("int4");
    CHECK(bg_quant_state_new(&i8, 2, (const int64_t[]){4, 8}, &st) == BG_OK);
    x = bg_zeros(ctx, BG_DTYPE_F32, 2, (const int64_t[]){4, 8});
    expect_error(ctx, bg_fake_quant(ctx, x, &i4, st), BG_ERR_STATE,
                 "fake_quant: spec \"int4:minmax\" differs from the state's \"int8:minmax\" (use bg_quant_state_set_spec)");
    expect_error(ctx, bg_fake_quant(ctx, x, &i8, NULL), BG_ERR_STATE,
                 "fake_quant: range minmax needs a state (bg_quant_state_new)");
    bg_quant_state_free(st);
    bg_quant_spec pc = parse("int8:per_channel=0");
    CHECK(bg_quant_state_new(&pc, 2, (const int64_t[]){4, 8}, &st) == BG_OK);
    bg_tensor *x5 = bg_zeros(ctx, BG_DTYPE_F32, 2, (const int64_t[]){5, 8});
    expect_error(ctx, bg_fake_quant(ctx, x5, &pc, st), BG_ERR_SHAPE,
                 "fake_quant: the state holds 4 per_channel scales, x [5,8] needs 5");
    bg_quant_spec pc3 = parse("int8:per_channel=3");
    bg_quant_state *bad_axis;
    CHECK(bg_quant_state_new(&pc3, 2, (const int64_t[]){4, 8}, &bad_axis) == BG_ERR_SHAPE);
    CHECK_STR(bg_last_error(), "quant_state: per_channel axis 3 is out of range for [4,8]");
    expect_error(ctx, bg_fake_quant(ctx, x, NULL, st), BG_ERR_ARG, "fake_quant: spec is NULL");
    bg_tensor *xi = bg_zeros(ctx, BG_DTYPE_I32, 1, (const int64_t[]){3});
    expect_error(ctx, bg_fake_quant(ctx, xi, &pc, st), BG_ERR_DTYPE, "fake_quant: x is i32 [3], want f32");
    // Sticky: after a failure, later calls return NULL without computing.
    CHECK(bg_fake_quant(ctx, x5, &pc, st) == NULL);
    int64_t calls = bg_quant_state_calls(st);
    CHECK(bg_fake_quant(ctx, x, &pc, st) == NULL && bg_quant_state_calls(st) == calls);
    bg_quant_state_free(st);
    bg_ctx_free(ctx);
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
    test_lsq_granularities();
    test_lsq_plus_formula();
    test_binary();
    test_stochastic();
    test_call_count_wraps();
    test_observer_controls();
    test_percentile_mse();
    test_mse_sampled();
    test_bind_and_init();
    test_degenerate_inputs();
    test_errors();
    bg_safetensors_free(ref);
    return bg_test_finish();
}
