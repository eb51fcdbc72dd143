/* test_qat_spec.c — the quantizer spec: parsing into the right fields,
 * defaults, code ranges, canonical formatting and its round trip, and the
 * exact error sentences for bad strings and conflicting options. */
#include <string.h>

#include "qat/qat.h"
#include "tests/test_util.h"

static bg_quant_spec parse_ok(const char *s) {
    bg_quant_spec spec;
    memset(&spec, 0xab, sizeof spec);
    bg_status st = bg_quant_spec_parse(s, &spec);
    CHECK_MSG(st == BG_OK, "parse(\"%s\") failed: %s", s, bg_last_error());
    return spec;
}

/* parse(s) fails with exactly msg. */
static void parse_err(const char *s, const char *msg) {
    bg_quant_spec spec;
    bg_quant_spec_init(&spec, BG_QUANT_TERNARY, 0);
    bg_quant_spec before = spec;
    bg_clear_error();
    bg_status st = bg_quant_spec_parse(s, &spec);
    CHECK_MSG(st == BG_ERR_ARG, "parse(\"%s\") returned %d, want BG_ERR_ARG", s, (int)st);
    CHECK_MSG(strcmp(bg_last_error(), msg) == 0, "parse(\"%s\"): error \"%s\", want \"%s\"", s,
              bg_last_error(), msg);
    CHECK_MSG(memcmp(&spec, &before, sizeof spec) == 0, "parse(\"%s\") changed *out on failure", s);
}

/* format(parse(s)) == canonical, and parse(canonical) == parse(s). */
static void round_trip(const char *s, const char *canonical) {
    bg_quant_spec a = parse_ok(s);
    char buf[BG_QUANT_SPEC_STR_MAX];
    int n = bg_quant_spec_format(&a, buf, sizeof buf);
    CHECK_MSG(n == (int)strlen(buf), "format(\"%s\") returned %d for \"%s\"", s, n, buf);
    CHECK_MSG(strcmp(buf, canonical) == 0, "format(parse(\"%s\")) = \"%s\", want \"%s\"", s, buf,
              canonical);
    bg_quant_spec b = parse_ok(buf);
    CHECK_MSG(bg_quant_spec_equal(&a, &b), "parse(\"%s\") differs from parse(\"%s\")", buf, s);
}

static void test_fields(void) {
    bg_quant_spec s = parse_ok("int4:per_group=64:sym:lsq");
    CHECK(s.kind == BG_QUANT_INT && s.bits == 4);
    CHECK(s.symmetric && !s.is_unsigned && !s.narrow);
    CHECK(s.granularity == BG_QUANT_PER_GROUP && s.group_size == 64);
    CHECK(s.range == BG_QUANT_RANGE_LSQ && s.backward == BG_QUANT_BWD_LSQ);
    CHECK(s.rounding == BG_QUANT_ROUND_NEAREST && s.grad_scale == 0.0f && !s.check_finite);
    int32_t lo, hi;
    bg_quant_spec_qrange(&s, &lo, &hi);
    CHECK(lo == -8 && hi == 7);
    CHECK(bg_quant_spec_is_learned(&s) && bg_quant_spec_is_stateful(&s));

    s = parse_ok("ternary:absmean");
    CHECK(s.kind == BG_QUANT_TERNARY && s.bits == 2 && s.range == BG_QUANT_RANGE_ABSMEAN);
    CHECK(s.backward == BG_QUANT_BWD_STE && !bg_quant_spec_is_stateful(&s));
    bg_quant_spec_qrange(&s, &lo, &hi);
    CHECK(lo == -1 && hi == 1);
    bg_quant_spec t = parse_ok("ternary");   // absmean is the ternary default
    CHECK(bg_quant_spec_equal(&s, &t));

    s = parse_ok("binary");
    CHECK(s.kind == BG_QUANT_BINARY && s.bits == 1 && s.range == BG_QUANT_RANGE_ABSMEAN);

    s = parse_ok("int8");   // defaults: sym, signed, per-tensor, minmax, clipped STE
    CHECK(s.symmetric && !s.is_unsigned && s.granularity == BG_QUANT_PER_TENSOR);
    CHECK(s.range == BG_QUANT_RANGE_MINMAX && s.backward == BG_QUANT_BWD_CLIPPED_STE);
    bg_quant_spec_qrange(&s, &lo, &hi);
    CHECK(lo == -128 && hi == 127);

    s = parse_ok("int8:narrow");
    bg_quant_spec_qrange(&s, &lo, &hi);
    CHECK(lo == -127 && hi == 127);
    s = parse_ok("int8:affine");   // affine defaults to unsigned codes (quint8)
    bg_quant_spec_qrange(&s, &lo, &hi);
    CHECK(!s.symmetric && s.is_unsigned && lo == 0 && hi == 255);
    s = parse_ok("int8:affine:signed");
    bg_quant_spec_qrange(&s, &lo, &hi);
    CHECK(lo == -128 && hi == 127);
    s = parse_ok("int2");
    bg_quant_spec_qrange(&s, &lo, &hi);
    CHECK(lo == -2 && hi == 1);
    s = parse_ok("int1:unsigned");
    bg_quant_spec_qrange(&s, &lo, &hi);
    CHECK(lo == 0 && hi == 1);

    s = parse_ok("int8:per_token:absmax");   // BitNet activations
    CHECK(s.granularity == BG_QUANT_PER_TOKEN && s.range == BG_QUANT_RANGE_ABSMAX);
    CHECK(s.backward == BG_QUANT_BWD_STE);

    s = parse_ok("int4:pact");   // pact implies unsigned codes
    CHECK(s.is_unsigned && s.symmetric && s.range == BG_QUANT_RANGE_PACT && s.pact_init == 0.0f);
    CHECK(s.backward == BG_QUANT_BWD_PACT);
    s = parse_ok("int4:pact=6");
    CHECK(s.pact_init == 6.0f);

    s = parse_ok("int8:lsq_plus");   // lsq_plus implies affine
    CHECK(!s.symmetric && s.is_unsigned && s.backward == BG_QUANT_BWD_LSQ_PLUS);
    s = parse_ok("int4:lsq+:signed");
    CHECK(s.range == BG_QUANT_RANGE_LSQ_PLUS && !s.is_unsigned);

    s = parse_ok("int8:per_channel");
    CHECK(s.granularity == BG_QUANT_PER_CHANNEL && s.axis == 0);
    s = parse_ok("per_channel=-1:int8");   // order does not matter
    CHECK(s.granularity == BG_QUANT_PER_CHANNEL && s.axis == -1);

    s = parse_ok("int8:moving_minmax");
    CHECK(s.range == BG_QUANT_RANGE_MOVING_MINMAX && s.momentum == 0.01f);
    s = parse_ok("int8:moving_minmax=0.1");
    CHECK(s.momentum == 0.1f);
    s = parse_ok("int8:percentile");
    CHECK(s.range == BG_QUANT_RANGE_PERCENTILE && s.percentile == 99.99f);
    s = parse_ok("int8:percentile=99.9:momentum=0.5");
    CHECK(s.percentile == 99.9f && s.momentum == 0.5f);
    s = parse_ok("int4:mse");
    CHECK(s.range == BG_QUANT_RANGE_MSE && s.mse_grid == 100);
    s = parse_ok("int4:mse=40");
    CHECK(s.mse_grid == 40);

    s = parse_ok("int8:affine:scale=0.05:zp=3");
    CHECK(s.range == BG_QUANT_RANGE_FIXED && s.scale == 0.05f && s.zero_point == 3);
    CHECK(!bg_quant_spec_is_stateful(&s));

    s = parse_ok("int4:stochastic=42");
    CHECK(s.rounding == BG_QUANT_ROUND_STOCHASTIC && s.seed == 42);
    s = parse_ok("int4:stochastic");
    CHECK(s.rounding == BG_QUANT_ROUND_STOCHASTIC && s.seed == 0);

    s = parse_ok("int8:minmax:ste:check");
    CHECK(s.backward == BG_QUANT_BWD_STE && s.check_finite);
    s = parse_ok("int4:lsq:gscale=none");
    CHECK(s.grad_scale == 1.0f);
    s = parse_ok("int4:lsq:gscale=0.25");
    CHECK(s.grad_scale == 0.25f);
    s = parse_ok("int4:lsq:gscale=auto");
    CHECK(s.grad_scale == 0.0f);
    s = parse_ok("ternary:lsq");
    CHECK(s.range == BG_QUANT_RANGE_LSQ);
    s = parse_ok("ternary:absmax");
    CHECK(s.range == BG_QUANT_RANGE_ABSMAX);
}

static void test_round_trip(void) {
    round_trip("int4:per_group=64:sym:lsq", "int4:per_group=64:lsq");
    round_trip("ternary:absmean", "ternary:absmean");
    round_trip("ternary", "ternary:absmean");
    round_trip("binary", "binary:absmean");
    round_trip("int8", "int8:minmax");
    round_trip("int8:per_token:absmax", "int8:per_token:absmax");
    round_trip("int8:affine", "int8:affine:minmax");
    round_trip("int8:affine:signed:narrow", "int8:affine:signed:narrow:minmax");
    round_trip("int4:unsigned", "int4:unsigned:minmax");
    round_trip("int4:pact", "int4:pact");
    round_trip("int4:pact=6.5", "int4:pact=6.5");
    round_trip("int8:lsq_plus", "int8:affine:lsq_plus");
    round_trip("int8:lsq+:signed", "int8:affine:signed:lsq_plus");
    round_trip("per_channel:int8", "int8:per_channel=0:minmax");
    round_trip("int8:per_channel=1:moving_minmax=0.1", "int8:per_channel=1:moving_minmax=0.100000001");
    round_trip("int8:percentile=99.9", "int8:percentile=99.9000015");
    round_trip("int8:percentile:momentum=0.5", "int8:percentile=99.9899979:momentum=0.5");
    round_trip("int3:mse=40", "int3:mse=40");
    round_trip("int8:affine:scale=0.05:zp=3", "int8:affine:scale=0.0500000007:zp=3");
    round_trip("int8:scale=0.25", "int8:scale=0.25");
    round_trip("int4:stochastic=7:minmax", "int4:stochastic=7:minmax");
    round_trip("int8:ste", "int8:minmax:ste");
    round_trip("ternary:clipped_ste", "ternary:absmean:clipped_ste");
    round_trip("int4:lsq:gscale=none:check", "int4:lsq:gscale=1:check");
    round_trip("check:int2:per_group=32:lsq:gscale=0.5", "int2:per_group=32:lsq:gscale=0.5:check");

    // Every kind x granularity x range combination that validates round-trips.
    const char *kinds[] = {"int1:unsigned", "int2", "int5", "int8", "ternary", "binary"};
    const char *grans[] = {"per_tensor", "per_channel=2", "per_group=16", "per_token"};
    const char *ranges[] = {"minmax", "moving_minmax=0.2", "percentile=99", "mse=10", "scale=0.5",
                            "lsq", "lsq_plus", "pact", "absmean", "absmax"};
    int ok = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++)
        for (size_t g = 0; g < sizeof grans / sizeof *grans; g++)
            for (size_t r = 0; r < sizeof ranges / sizeof *ranges; r++) {
                char str[128], buf[BG_QUANT_SPEC_STR_MAX];
                snprintf(str, sizeof str, "%s:%s:%s", kinds[k], grans[g], ranges[r]);
                bg_quant_spec a, b;
                if (bg_quant_spec_parse(str, &a) != BG_OK) continue;
                ok++;
                bg_quant_spec_format(&a, buf, sizeof buf);
                CHECK_MSG(bg_quant_spec_parse(buf, &b) == BG_OK && bg_quant_spec_equal(&a, &b),
                          "\"%s\" -> \"%s\" does not parse back equal (%s)", str, buf, bg_last_error());
            }
    CHECK_MSG(ok >= 60, "only %d of the combinations validated", ok);

    // Truncation follows snprintf.
    bg_quant_spec s = parse_ok("int4:per_group=64:lsq");
    char small[8];
    int n = bg_quant_spec_format(&s, small, sizeof small);
    CHECK(n == (int)strlen("int4:per_group=64:lsq"));
    CHECK(strcmp(small, "int4:pe") == 0);
    CHECK(bg_quant_spec_format(&s, NULL, 0) == n);
}

static void test_errors(void) {
    parse_err("int9", "quant_spec: bits must be 1..8, got 9 in \"int9\"");
    parse_err("int0:sym", "quant_spec: bits must be 1..8, got 0 in \"int0:sym\"");
    parse_err("int16", "quant_spec: bits must be 1..8, got 16 in \"int16\"");
    parse_err("int4:foo", "quant_spec: unknown token \"foo\" in \"int4:foo\"");
    parse_err("int4x", "quant_spec: unknown token \"int4x\" in \"int4x\"");
    parse_err("sym:lsq", "quant_spec: no kind (int1..int8, ternary or binary) in \"sym:lsq\"");
    parse_err("", "quant_spec: empty spec string");
    parse_err("int4::lsq", "quant_spec: empty token in \"int4::lsq\"");
    parse_err("int4:sym:affine", "quant_spec: conflicting options \"sym\" and \"affine\" in \"int4:sym:affine\"");
    parse_err("int4:int8", "quant_spec: conflicting options \"int4\" and \"int8\" in \"int4:int8\"");
    parse_err("int4:minmax:lsq", "quant_spec: conflicting options \"minmax\" and \"lsq\" in \"int4:minmax:lsq\"");
    parse_err("int4:per_group=64:per_channel",
              "quant_spec: conflicting options \"per_group=64\" and \"per_channel\" in \"int4:per_group=64:per_channel\"");
    parse_err("int4:per_group", "quant_spec: per_group needs a size, e.g. per_group=64 in \"int4:per_group\"");
    parse_err("int4:per_group=0", "quant_spec: per_group needs a size > 0, got 0 in \"int4:per_group=0\"");
    parse_err("int4:per_group=6x", "quant_spec: bad value in \"per_group=6x\" in \"int4:per_group=6x\"");
    parse_err("int4:per_channel=7",
              "quant_spec: per_channel axis must be in -4..3, got 7 in \"int4:per_channel=7\"");
    parse_err("int4:sym=1", "quant_spec: \"sym\" takes no value in \"int4:sym=1\"");
    parse_err("ternary:affine", "quant_spec: ternary is symmetric, affine conflicts in \"ternary:affine\"");
    parse_err("binary:unsigned", "quant_spec: binary is signed, unsigned conflicts in \"binary:unsigned\"");
    parse_err("ternary:narrow", "quant_spec: narrow does not apply to ternary in \"ternary:narrow\"");
    parse_err("int1:narrow", "quant_spec: int1 with narrow leaves a single level in \"int1:narrow\"");
    parse_err("int4:lsq:ste",
              "quant_spec: backward ste conflicts with learned range lsq (its scale would never learn) in \"int4:lsq:ste\"");
    parse_err("int4:lsq_plus:sym", "quant_spec: lsq_plus learns an offset, sym conflicts in \"int4:lsq_plus:sym\"");
    parse_err("int4:pact:signed", "quant_spec: pact is unsigned, signed conflicts in \"int4:pact:signed\"");
    parse_err("int4:pact:per_channel", "quant_spec: pact is per_tensor only, got per_channel in \"int4:pact:per_channel\"");
    parse_err("int4:absmean", "quant_spec: absmean needs ternary or binary, got int4 in \"int4:absmean\"");
    parse_err("int8:affine:absmax", "quant_spec: absmax is symmetric, affine conflicts in \"int8:affine:absmax\"");
    parse_err("int8:per_token:lsq",
              "quant_spec: per_token ranges are computed from each input, lsq conflicts (use per_tensor, "
              "per_channel or per_group) in \"int8:per_token:lsq\"");
    parse_err("int8:scale=0", "quant_spec: scale must be positive and finite, got 0 in \"int8:scale=0\"");
    parse_err("int8:scale=0.1:zp=3", "quant_spec: zp=3 needs affine (sym has zero point 0) in \"int8:scale=0.1:zp=3\"");
    parse_err("int8:affine:scale=0.1:zp=300", "quant_spec: zp must be in 0..255, got 300 in \"int8:affine:scale=0.1:zp=300\"");
    parse_err("int8:zp=3", "quant_spec: \"zp=3\" needs a fixed scale (scale=S) in \"int8:zp=3\"");
    parse_err("int8:moving_minmax=0", "quant_spec: momentum must be in (0, 1], got 0 in \"int8:moving_minmax=0\"");
    parse_err("int8:percentile=101", "quant_spec: percentile must be in (0, 100], got 101 in \"int8:percentile=101\"");
    parse_err("int8:minmax:momentum=0.5",
              "quant_spec: \"momentum=0.5\" applies to moving_minmax, percentile and mse, not minmax in \"int8:minmax:momentum=0.5\"");
    parse_err("int8:gscale=2", "quant_spec: \"gscale=2\" applies to lsq and lsq_plus, not minmax in \"int8:gscale=2\"");
    parse_err("int8:lsq:gscale=-1", "quant_spec: bad value in \"gscale=-1\" in \"int8:lsq:gscale=-1\"");
    parse_err("binary:stochastic", "quant_spec: binary takes the sign, stochastic rounding conflicts in \"binary:stochastic\"");
    parse_err("binary:lsq", "quant_spec: lsq does not apply to binary in \"binary:lsq\"");
    parse_err("int4:stochastic=-1", "quant_spec: bad value in \"stochastic=-1\" in \"int4:stochastic=-1\"");
    parse_err("int4:check:check", "quant_spec: conflicting options \"check\" and \"check\" in \"int4:check:check\"");

    char longs[400];
    memset(longs, 'a', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    parse_err(longs, "quant_spec: string too long (399 chars, at most 255)");

    // validate() on hand-built specs: same checks, no string.
    bg_quant_spec s;
    bg_quant_spec_init(&s, BG_QUANT_INT, 9);
    CHECK(bg_quant_spec_validate(&s) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "quant_spec: bits must be 1..8, got 9");
    bg_quant_spec_init(&s, BG_QUANT_INT, 4);
    s.range = BG_QUANT_RANGE_LSQ;
    s.backward = BG_QUANT_BWD_DEFAULT;
    CHECK(bg_quant_spec_validate(&s) == BG_OK && s.backward == BG_QUANT_BWD_LSQ);
    s.range = BG_QUANT_RANGE_MINMAX;
    CHECK(bg_quant_spec_validate(&s) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "quant_spec: backward lsq needs range lsq");
    bg_quant_spec_init(&s, BG_QUANT_INT, 4);
    s.granularity = BG_QUANT_PER_GROUP;
    s.group_size = 0;
    CHECK(bg_quant_spec_validate(&s) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "quant_spec: per_group needs a size > 0, got 0");
    CHECK(bg_quant_spec_validate(NULL) == BG_ERR_ARG);
}

static void test_init_and_equal(void) {
    bg_quant_spec a, b;
    bg_quant_spec_init(&a, BG_QUANT_INT, 8);
    CHECK(bg_quant_spec_validate(&a) == BG_OK);
    b = parse_ok("int8");
    CHECK(bg_quant_spec_equal(&a, &b));
    // Unused fields do not matter; used ones do.
    b.momentum = 0.7f;
    CHECK(bg_quant_spec_equal(&a, &b));
    b.bits = 4;
    CHECK(!bg_quant_spec_equal(&a, &b));
    a = parse_ok("int4:per_group=64:lsq");
    b = parse_ok("int4:per_group=32:lsq");
    CHECK(!bg_quant_spec_equal(&a, &b));
    CHECK_STR(bg_quant_range_name(BG_QUANT_RANGE_MOVING_MINMAX), "moving_minmax");
    CHECK_STR(bg_quant_backward_name(BG_QUANT_BWD_CLIPPED_STE), "clipped_ste");
    CHECK_STR(bg_quant_granularity_name(BG_QUANT_PER_GROUP), "per_group");
    CHECK_STR(bg_quant_kind_name(BG_QUANT_TERNARY), "ternary");
    CHECK_STR(bg_quant_kind_name((bg_quant_kind)99), "unknown");
}

int main(void) {
    test_fields();
    test_round_trip();
    test_errors();
    test_init_and_equal();
    return bg_test_finish();
}
