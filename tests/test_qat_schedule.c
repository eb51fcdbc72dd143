/* test_qat_schedule.c — progressive schedules: parsing (fields, epochs, the
 * exact error sentences), transitions at the right steps, the fp32 delay,
 * per-layer overrides, range re-initialisation at a transition (observer
 * and LSQ from the current weights), phase queries, save -> restore -> same
 * decisions. */
#include <math.h>
#include <string.h>

#include "qat/qat.h"
#include "tests/test_util.h"

static bg_schedule sched;   // large: keep it off the stack

/* A char array as a pointer (CHECK_STR tests its argument for NULL). */
static const char *str_of(const char *s) { return s; }

static void parse_ok(const char *s, int64_t spe) {
    bg_status st = bg_schedule_parse(s, spe, &sched);
    CHECK_MSG(st == BG_OK, "parse(\"%s\") failed: %s", s, bg_last_error());
}

static void parse_err(const char *s, int64_t spe, const char *msg) {
    static bg_schedule tmp;
    memset(&tmp, 0x5a, sizeof tmp);
    bg_clear_error();
    bg_status st = bg_schedule_parse(s, spe, &tmp);
    CHECK_MSG(st == BG_ERR_ARG, "parse(\"%s\") returned %d, want BG_ERR_ARG", s, (int)st);
    CHECK_MSG(strcmp(bg_last_error(), msg) == 0, "parse(\"%s\"): error \"%s\", want \"%s\"", s, bg_last_error(),
              msg);
    CHECK_MSG(((unsigned char *)&tmp)[0] == 0x5a, "parse(\"%s\") changed *out on failure", s);
}

static void test_parse(void) {
    parse_ok("fp32@0,int8@100,int4@200,int2@300,ternary@400", 0);
    CHECK(sched.n_rules == 1 && sched.rules[0].n_phases == 5 && sched.rules[0].pattern[0] == '\0');
    CHECK(sched.rules[0].phases[0].fp32 && sched.rules[0].phases[0].at == 0);
    CHECK(sched.rules[0].phases[1].kind_only && sched.rules[0].phases[1].spec.bits == 8);
    CHECK(sched.rules[0].phases[4].spec.kind == BG_QUANT_TERNARY && sched.rules[0].phases[4].at == 400);
    CHECK(sched.rules[0].current == -2 && sched.last_step == -1);
    char buf[BG_SCHEDULE_STR_MAX];
    bg_schedule_format(&sched, buf, sizeof buf);
    CHECK_STR(str_of(buf), "fp32@0,int8@100,int4@200,int2@300,ternary@400");

    // epochs, full specs, patterns, spaces
    parse_ok(" int8:per_channel@0 , int4:per_channel:lsq@2ep ; [fc*] ternary@1ep ", 50);
    CHECK(sched.n_rules == 2);
    CHECK(sched.rules[0].phases[1].at == 100 && !sched.rules[0].phases[1].kind_only);
    CHECK(sched.rules[0].phases[1].spec.range == BG_QUANT_RANGE_LSQ);
    CHECK_STR(sched.rules[1].pattern, "fc*");
    CHECK(sched.rules[1].phases[0].at == 50);
    int n = bg_schedule_format(&sched, buf, sizeof buf);
    CHECK_STR(str_of(buf), "int8:per_channel@0,int4:per_channel:lsq@100;[fc*]ternary@50");
    CHECK(n == (int)strlen(buf));
    char small[8];
    CHECK(bg_schedule_format(&sched, small, sizeof small) == n && strlen(small) == 7);
    CHECK(bg_schedule_format(&sched, NULL, 0) == n);
    CHECK(bg_schedule_save(&sched, NULL, 0) == n + 9);   // "#-1:-2:-2"

    parse_err("", 0, "schedule: empty schedule \"\"");
    parse_err("int8", 0, "schedule: missing '@' in \"int8\"");
    parse_err("int8@x", 0, "schedule: bad step in \"int8@x\"");
    parse_err("int8@-5", 0, "schedule: bad step in \"int8@-5\"");
    parse_err("int8@10k", 0, "schedule: bad step in \"int8@10k\"");
    parse_err("@10", 0, "schedule: bad spec in \"@10\"");
    parse_err("int8@0,int4@3ep", 0, "schedule: \"int4@3ep\" counts epochs but steps_per_epoch is 0");
    parse_err("int9@0", 0,
              "schedule: bad spec in \"int9@0\" (quant_spec: bits must be 1..8, got 9 in \"int9\")");
    parse_err("int8@100,int4@100", 0, "schedule: steps must increase: \"int4@100\" comes after step 100");
    parse_err("int8@0,,int4@5", 0, "schedule: empty phase in \"int8@0,,int4@5\"");
    parse_err("[fc1int8@0", 0, "schedule: unclosed '[' in \"[fc1int8@0\"");
    parse_err("[]int8@0", 0, "schedule: empty pattern in \"[]int8@0\"");
    parse_err("[fc1]", 0, "schedule: no phases in \"[fc1]\"");
    parse_err("int8@0;int4@5", 0, "schedule: two rules without a pattern in \"int8@0;int4@5\"");
    parse_err("[a]int8@0;[a]int4@5", 0, "schedule: pattern [a] appears twice");
    parse_err("int8@0;", 0, "schedule: no phases in \"\"");
}

// ---------------------------------------------------------------------------
// a tiny "model": two weight quantizers and one activation quantizer

#define NL 3
static const char *names[NL] = {"fc1.weight", "fc2.weight", "fc2.input"};
static bg_quant_state *states[NL];
static bg_tensor *weights[NL];

static void make_layers(const char *spec_str) {
    bg_quant_spec spec;
    CHECK(bg_quant_spec_parse(spec_str, &spec) == BG_OK);
    bg_rng rng;
    bg_rng_seed(&rng, 7);
    for (int i = 0; i < NL; i++) {
        if (i < 2) {
            weights[i] = bg_tensor_new(BG_DTYPE_F32, BG_SHAPE(4, 6));
            bg_init_uniform(weights[i], &rng, -1.0f - (float)i, 0.5f + (float)i);
        } else {
            weights[i] = NULL;
        }
        CHECK(bg_quant_state_new(&spec, 2, (const int64_t[]){4, 6}, &states[i]) == BG_OK);
    }
}

static void free_layers(void) {
    for (int i = 0; i < NL; i++) {
        bg_quant_state_free(states[i]);
        bg_tensor_free(weights[i]);
        states[i] = NULL, weights[i] = NULL;
    }
}

static float absmax(const bg_tensor *w) {
    float m = 0;
    for (int64_t i = 0; i < bg_numel(w); i++) m = fmaxf(m, fabsf(bg_f32(w)[i]));
    return m;
}

/* The MSE observer's choice for v[0..n) (sym, codes [qmin, qmax]) by brute
 * force: the scale of the clipping range f * max|v|, f = k/grid for k = grid
 * .. 1, with the least sum (v - q(v))^2 (ties keep the wider range). */
static float mse_scale(const float *v, int64_t n, int64_t stride, int qmin, int qmax, int grid) {
    float a = 0;
    for (int64_t i = 0; i < n; i++) a = fmaxf(a, fabsf(v[i * stride]));
    double best = INFINITY;
    float bs = 0;
    for (int k = grid; k >= 1; k--) {
        float f = (float)k / (float)grid, s = (a * f) / ((float)(qmax - qmin) / 2.0f), inv = 1.0f / s;
        double err = 0;
        for (int64_t i = 0; i < n; i++) {
            float q = fminf(fmaxf(nearbyintf(v[i * stride] * inv), (float)qmin), (float)qmax);
            double e = (double)v[i * stride] - (double)(q * s);
            err += e * e;
        }
        if (err < best) best = err, bs = s;
    }
    return bs;
}

static void test_transitions(void) {
    parse_ok("fp32@0,int8@100,int4@200,int2@300,ternary@400", 0);
    make_layers("int8");
    int64_t got[16];
    int ng = 0;
    for (int64_t step = 0; step <= 450; step++) {
        bool tr = false;
        bg_status st = bg_schedule_apply(&sched, step, states, names, (const bg_tensor *const *)weights, NL, &tr);
        if (!CHECK_MSG(st == BG_OK, "apply(%d): %s", (int)step, bg_last_error())) break;
        if (tr && ng < 16) got[ng++] = step;
        // phase in force at this step, for every layer
        const bg_quant_spec *sp = bg_quant_state_spec(states[0]);
        if (step < 100) {
            if (!CHECK_MSG(!bg_quant_state_enabled(states[0]) && !bg_quant_state_enabled(states[2]),
                           "step %d: quantizers should be off (fp32)", (int)step))
                break;
        } else {
            int want_bits = step < 200 ? 8 : step < 300 ? 4 : step < 400 ? 2 : 2;
            bg_quant_kind want_kind = step < 400 ? BG_QUANT_INT : BG_QUANT_TERNARY;
            if (!CHECK_MSG(bg_quant_state_enabled(states[1]) && sp->kind == want_kind && sp->bits == want_bits &&
                               sp->range == (step < 200   ? BG_QUANT_RANGE_MINMAX
                                             : step < 400 ? BG_QUANT_RANGE_MSE   // <= 4 bits: MSE search
                                                          : BG_QUANT_RANGE_ABSMEAN) &&
                               sp->granularity == BG_QUANT_PER_TENSOR,
                           "step %d: kind %d bits %d, want %d %d", (int)step, (int)sp->kind, sp->bits,
                           (int)want_kind, want_bits))
                break;
        }
    }
    CHECK(ng == 5);
    const int64_t want[5] = {0, 100, 200, 300, 400};
    for (int i = 0; i < 5 && i < ng; i++) CHECK_MSG(got[i] == want[i], "transition %d at %d, want %d", i, (int)got[i], (int)want[i]);
    CHECK(sched.last_step == 450 && sched.rules[0].current == 4);

    // queries
    CHECK(bg_schedule_phase_at(&sched, "fc1.weight", 99) == 0);
    CHECK(bg_schedule_phase_at(&sched, "fc1.weight", 250) == 2);
    CHECK_STR(bg_schedule_spec_name(&sched, "x", 0), "fp32");
    CHECK_STR(bg_schedule_spec_name(&sched, "x", 399), "int2");
    CHECK_STR(bg_schedule_spec_name(&sched, "x", 10000), "ternary");
    int64_t b[8];
    CHECK(bg_schedule_boundaries(&sched, "x", b, 8) == 5 && b[0] == 0 && b[2] == 200 && b[4] == 400);
    free_layers();

    // implicit delay: before the first phase the layer is fp32
    parse_ok("int8@50", 0);
    make_layers("int8");
    bool tr;
    CHECK(bg_schedule_apply(&sched, 0, states, names, NULL, NL, &tr) == BG_OK && tr);
    CHECK(!bg_quant_state_enabled(states[0]) && !bg_quant_state_enabled(states[2]));
    CHECK(bg_schedule_apply(&sched, 49, states, names, NULL, NL, &tr) == BG_OK && !tr);
    CHECK(!bg_quant_state_enabled(states[0]));
    CHECK(bg_schedule_apply(&sched, 50, states, names, NULL, NL, &tr) == BG_OK && tr);
    CHECK(bg_quant_state_enabled(states[0]) && bg_quant_state_enabled(states[2]));
    CHECK_STR(bg_schedule_spec_name(&sched, "fc1.weight", 10), "fp32");
    free_layers();
}

static void test_per_layer(void) {
    // fc2.* stays int8 from 0; fc1 follows the global rule; the activation
    // quantizer fc2.input has its own rule (first match wins).
    parse_ok("[fc2.in*]fp32@0,int8@20;[fc2.*]int8@0;int8@0,int4@10", 0);
    make_layers("int8");
    CHECK(bg_schedule_rule_for(&sched, "fc2.input") == 0);
    CHECK(bg_schedule_rule_for(&sched, "fc2.weight") == 1);
    CHECK(bg_schedule_rule_for(&sched, "fc1.weight") == 2);
    bool tr;
    CHECK(bg_schedule_apply(&sched, 0, states, names, NULL, NL, &tr) == BG_OK && tr);
    CHECK(bg_quant_state_enabled(states[0]) && bg_quant_state_spec(states[0])->bits == 8);
    CHECK(bg_quant_state_enabled(states[1]) && !bg_quant_state_enabled(states[2]));
    CHECK(bg_schedule_apply(&sched, 10, states, names, NULL, NL, &tr) == BG_OK && tr);
    CHECK(bg_quant_state_spec(states[0])->bits == 4 && bg_quant_state_spec(states[1])->bits == 8);
    CHECK(!bg_quant_state_enabled(states[2]));
    CHECK(bg_schedule_apply(&sched, 20, states, names, NULL, NL, &tr) == BG_OK && tr);
    CHECK(bg_quant_state_enabled(states[2]) && bg_quant_state_spec(states[2])->bits == 8);
    CHECK(bg_quant_state_spec(states[0])->bits == 4);
    free_layers();

    // a layer no rule matches is left alone
    parse_ok("[fc1*]int4@0", 0);
    make_layers("int8");
    CHECK(bg_schedule_rule_for(&sched, "fc2.weight") == -1);
    CHECK(bg_schedule_spec_name(&sched, "fc2.weight", 0) == NULL);
    CHECK(bg_schedule_apply(&sched, 0, states, names, NULL, NL, &tr) == BG_OK && tr);
    CHECK(bg_quant_state_spec(states[0])->bits == 4 && bg_quant_state_spec(states[1])->bits == 8);
    free_layers();

    // an incompatible spec names the layer and the step
    parse_ok("int8@0,int8:per_channel@5", 0);
    make_layers("int8");
    CHECK(bg_schedule_apply(&sched, 0, states, names, NULL, NL, &tr) == BG_OK);
    CHECK(bg_schedule_apply(&sched, 5, states, names, NULL, NL, &tr) == BG_ERR_STATE);
    CHECK_STR(bg_last_error(), "schedule: layer fc1.weight at step 5: quant_state_set_spec: "
                               "\"int8:per_channel=0:minmax\" keeps different scales or parameters than \"int8:minmax\"");
    CHECK(bg_schedule_apply(&sched, -1, states, names, NULL, NL, &tr) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "schedule: step must be >= 0, got -1");
    free_layers();
}

static void test_reinit(void) {
    // observer: at the transition the range is re-observed from the weights
    parse_ok("int8@0,int4@10", 0);
    make_layers("int8");
    bool tr;
    CHECK(bg_schedule_apply(&sched, 0, states, names, (const bg_tensor *const *)weights, NL, &tr) == BG_OK);
    float m0 = absmax(weights[0]);
    CHECK_CLOSE(bg_f32(bg_quant_state_scale(states[0]))[0], m0 / 127.5f, 0, 1e-6);
    // the weights move; the next transition re-initialises from them
    for (int64_t i = 0; i < bg_numel(weights[0]); i++) bg_f32(weights[0])[i] *= 3.0f;
    CHECK(bg_schedule_apply(&sched, 5, states, names, (const bg_tensor *const *)weights, NL, &tr) == BG_OK && !tr);
    CHECK_CLOSE(bg_f32(bg_quant_state_scale(states[0]))[0], m0 / 127.5f, 0, 1e-6);
    CHECK(bg_schedule_apply(&sched, 10, states, names, (const bg_tensor *const *)weights, NL, &tr) == BG_OK && tr);
    // a bare int4 turns the min-max range into an MSE search, run on the weights now
    CHECK(bg_quant_state_spec(states[0])->range == BG_QUANT_RANGE_MSE && bg_quant_state_spec(states[0])->bits == 4);
    float s4 = mse_scale(bg_f32(weights[0]), 24, 1, -8, 7, 100);
    CHECK(s4 < 3.0f * m0 / 7.5f);   // clipped below min-max's max|w| / 7.5
    CHECK_CLOSE(bg_f32(bg_quant_state_scale(states[0]))[0], s4, 0, 1e-6);
    // the activation quantizer (no weights) is reset: s = 1 until it observes
    CHECK_CLOSE(bg_f32(bg_quant_state_scale(states[2]))[0], 1.0f, 0, 0);
    free_layers();

    // LSQ: the step is re-initialised to 2 mean|w| / sqrt(qmax) at each transition
    parse_ok("int8@0,int4@10", 0);
    make_layers("int8:lsq");
    CHECK(bg_schedule_apply(&sched, 0, states, names, (const bg_tensor *const *)weights, NL, &tr) == BG_OK);
    double mean = 0;
    for (int64_t i = 0; i < bg_numel(weights[1]); i++) mean += fabs(bg_f32(weights[1])[i]);
    mean /= (double)bg_numel(weights[1]);
    CHECK(bg_quant_state_initialized(states[1]));
    CHECK_CLOSE(bg_f32(bg_quant_state_param(states[1], 0))[0], 2 * mean / sqrt(127.0), 0, 1e-5);
    bg_f32(bg_quant_state_param(states[1], 0))[0] = 0.5f;   // "trained"
    CHECK(bg_schedule_apply(&sched, 10, states, names, (const bg_tensor *const *)weights, NL, &tr) == BG_OK && tr);
    CHECK(bg_quant_state_spec(states[1])->range == BG_QUANT_RANGE_LSQ && bg_quant_state_spec(states[1])->bits == 4);
    CHECK_CLOSE(bg_f32(bg_quant_state_param(states[1], 0))[0], 2 * mean / sqrt(7.0), 0, 1e-5);
    // no weights given (activations): marked for re-init from the next input
    CHECK(!bg_quant_state_initialized(states[2]));
    free_layers();

    // kind-only phases keep the granularity; ternary takes absmean and an
    // integer kind after it an observed range again (each with its backward)
    parse_ok("int8@0,ternary@5,int2@10", 0);
    make_layers("int8:per_channel");
    CHECK(bg_schedule_apply(&sched, 0, states, names, (const bg_tensor *const *)weights, NL, &tr) == BG_OK);
    CHECK(bg_schedule_apply(&sched, 5, states, names, (const bg_tensor *const *)weights, NL, &tr) == BG_OK && tr);
    const bg_quant_spec *sp = bg_quant_state_spec(states[0]);
    CHECK(sp->kind == BG_QUANT_TERNARY && sp->range == BG_QUANT_RANGE_ABSMEAN && sp->backward == BG_QUANT_BWD_STE);
    CHECK(sp->granularity == BG_QUANT_PER_CHANNEL && sp->axis == 0);
    CHECK(bg_schedule_apply(&sched, 10, states, names, (const bg_tensor *const *)weights, NL, &tr) == BG_OK && tr);
    sp = bg_quant_state_spec(states[0]);
    // (absmean -> minmax for an int kind, then <= 4 bits -> MSE)
    CHECK(sp->kind == BG_QUANT_INT && sp->bits == 2 && sp->range == BG_QUANT_RANGE_MSE);
    CHECK(sp->backward == BG_QUANT_BWD_CLIPPED_STE && sp->granularity == BG_QUANT_PER_CHANNEL);
    // per-channel int2 sym (codes [-2, 1]): each row's own MSE-searched scale
    for (int c = 0; c < 4; c++)
        CHECK_CLOSE(bg_f32(bg_quant_state_scale(states[0]))[c], mse_scale(bg_f32(weights[0]) + c * 6, 6, 1, -2, 1, 100),
                    0, 1e-6);
    free_layers();

    // the MSE rule touches only min-max ranges of int kinds of <= 4 bits
    const char *cases[][3] = {
        // start spec, bare kind, range after
        {"int8", "int5", "minmax"},          {"int8:moving_minmax", "int3", "mse"},
        {"int8:percentile", "int4", "percentile"}, {"int8:lsq", "int2", "lsq"},
        {"int8:mse=20", "int4", "mse"},      {"int8:scale=0.1", "int4", "scale"},
    };
    for (int i = 0; i < 6; i++) {
        char str[64];
        snprintf(str, sizeof str, "%s@0", cases[i][1]);
        parse_ok(str, 0);
        make_layers(cases[i][0]);
        CHECK(bg_schedule_apply(&sched, 0, states, names, (const bg_tensor *const *)weights, NL, &tr) == BG_OK);
        sp = bg_quant_state_spec(states[0]);
        CHECK_MSG(strcmp(bg_quant_range_name(sp->range), cases[i][2]) == 0, "%s then %s: range %s, want %s",
                  cases[i][0], cases[i][1], bg_quant_range_name(sp->range), cases[i][2]);
        free_layers();
    }
}

static void test_save_restore(void) {
    const char *text = "fp32@0,int8@30,int4@60;[fc2.*]int8@0,ternary@45";
    parse_ok(text, 0);
    make_layers("int8");
    bool tr;
    for (int64_t step = 0; step < 40; step++)
        CHECK(bg_schedule_apply(&sched, step, states, names, (const bg_tensor *const *)weights, NL, &tr) == BG_OK);
    char saved[BG_SCHEDULE_STR_MAX];
    int n = bg_schedule_save(&sched, saved, sizeof saved);
    CHECK(n == (int)strlen(saved));
    CHECK_STR(str_of(saved), "fp32@0,int8@30,int4@60;[fc2.*]int8@0,ternary@45#39:1:0");

    static bg_schedule restored;
    CHECK(bg_schedule_load(saved, &restored) == BG_OK);
    CHECK(memcmp(&restored, &sched, sizeof sched) == 0);
    // the layers rebuilt from their first spec, then synced to the restored phases
    bg_quant_state *copy[NL];
    bg_quant_spec int8;
    CHECK(bg_quant_spec_parse("int8", &int8) == BG_OK);
    for (int i = 0; i < NL; i++) CHECK(bg_quant_state_new(&int8, 2, (const int64_t[]){4, 6}, &copy[i]) == BG_OK);
    CHECK(bg_quant_state_init_from(copy[1], weights[1]) == BG_OK);
    float s1 = bg_f32(bg_quant_state_scale(copy[1]))[0];
    CHECK(bg_schedule_sync(&restored, copy, names, NL) == BG_OK);
    for (int i = 0; i < NL; i++)
        CHECK_MSG(bg_quant_spec_equal(bg_quant_state_spec(states[i]), bg_quant_state_spec(copy[i])) &&
                      bg_quant_state_enabled(states[i]) == bg_quant_state_enabled(copy[i]),
                  "sync: layer %d differs", i);
    CHECK(bg_f32(bg_quant_state_scale(copy[1]))[0] == s1);   // same spec: range kept
    int diffs = 0;
    for (int64_t step = 40; step < 80; step++) {
        bool a, b;
        CHECK(bg_schedule_apply(&sched, step, states, names, NULL, NL, &a) == BG_OK);
        CHECK(bg_schedule_apply(&restored, step, copy, names, NULL, NL, &b) == BG_OK);
        diffs += a != b;
        for (int i = 0; i < NL; i++)
            diffs += !bg_quant_spec_equal(bg_quant_state_spec(states[i]), bg_quant_state_spec(copy[i])) ||
                     bg_quant_state_enabled(states[i]) != bg_quant_state_enabled(copy[i]);
        if (step == 45) CHECK(a && b && bg_quant_state_spec(copy[1])->kind == BG_QUANT_TERNARY);
        if (step == 60) CHECK(a && b && bg_quant_state_spec(copy[0])->bits == 4);
        if (step == 50) CHECK(!a && !b);
    }
    CHECK_MSG(diffs == 0, "restored schedule differs in %d decisions", diffs);
    for (int i = 0; i < NL; i++) bg_quant_state_free(copy[i]);
    free_layers();

    static bg_schedule bad;
    CHECK(bg_schedule_load("int8@0", &bad) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "schedule: saved state has no '#' in \"int8@0\"");
    CHECK(bg_schedule_load("int8@0#5:7", &bad) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "schedule: bad saved progress \"5:7\"");
    CHECK(bg_schedule_load("int8@0#5:0:0", &bad) == BG_ERR_ARG);
}

static void test_weights_only(void) {
    char buf[128];
    CHECK(bg_schedule_weights_only("int8@0,int4@1ep;[fc*]ternary@0;int2@5", buf, sizeof buf) == BG_OK);
    CHECK(strcmp(buf, "[*weight_quant]int8@0,int4@1ep;[fc*]ternary@0;[*weight_quant]int2@5") == 0);
    CHECK(bg_schedule_weights_only("", buf, sizeof buf) == BG_OK);
    CHECK(buf[0] == 0);
    char small[20];
    CHECK(bg_schedule_weights_only("int8@0,int4@100", small, sizeof small) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "schedule: \"int8@0,int4@100...\" is longer than 19 characters with its patterns");
}

int main(void) {
    test_parse();
    test_transitions();
    test_per_layer();
    test_reinit();
    test_save_restore();
    test_weights_only();
    return bg_test_finish();
}
