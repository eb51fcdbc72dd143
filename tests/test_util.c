/* test_util.c — the shared comparator and counters (see test_util.h). */
#include <string.h>
#include "tests/test_util.h"
#include "format/format.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>

static int n_passed, n_failed;

bool bg_test_close(double got, double want, double atol, double rtol) {
    if (isnan(got) || isnan(want)) return false;
    if (isinf(want)) return got == want;
    return fabs(got - want) <= atol + rtol * fabs(want);
}

bool bg_test_check(bool ok, const char *file, int line, const char *fmt, ...) {
    if (ok) {
        n_passed++;
        return true;
    }
    n_failed++;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return false;
}

bool bg_test_arrays(const char *what, const float *got, const float *want, int64_t n, double atol,
                    double rtol, const char *file, int line) {
    int64_t bad = 0;
    double max_abs = 0.0, max_rel = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)want[i]);
        if (isnan(got[i]) != isnan(want[i])) e = INFINITY;
        if (e > max_abs) max_abs = e;
        if (fabs(want[i]) > 0 && e / fabs(want[i]) > max_rel) max_rel = e / fabs(want[i]);
        if (!bg_test_close(got[i], want[i], atol, rtol)) {
            if (bad < 5)
                fprintf(stderr, "  %s[%lld]: got %.9g, want %.9g\n", what, (long long)i, got[i], want[i]);
            bad++;
        }
    }
    return bg_test_check(bad == 0, file, line, "%s: %lld of %lld differ (max abs %.3g, max rel %.3g)",
                         what, (long long)bad, (long long)n, max_abs, max_rel);
}

int bg_test_finish(void) {
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}

const char *bg_test_source_dir(void) {
    const char *d = getenv("BG_SOURCE_DIR");
    return d && *d ? d : ".";
}

bool bg_test_same_training(const bg_module *a, const bg_module *b, const bg_optim *oa, const bg_optim *ob,
                           const char *file, int line) {
    int64_t na, nb;
    const float *pa = bg_module_flat_params(a, &na), *pb = bg_module_flat_params(b, &nb);
    bool ok = bg_test_check(pa && pb && na == nb && memcmp(pa, pb, sizeof(float) * (size_t)na) == 0, file, line,
                            "parameters differ (%lld and %lld floats)", (long long)na, (long long)nb);
    for (int i = 0; oa && ob && i < bg_optim_state_count(oa); i++) {
        const char *name;
        int64_t n1, n2;
        const float *s1 = bg_optim_state(oa, i, &name, &n1), *s2 = bg_optim_state(ob, i, &name, &n2);
        ok &= bg_test_check(n1 == n2 && memcmp(s1, s2, sizeof(float) * (size_t)n1) == 0, file, line,
                            "optimizer %s differs", name);
    }
    if (oa && ob)
        ok &= bg_test_check(bg_optim_step_count(oa) == bg_optim_step_count(ob), file, line,
                            "optimizer step counts differ: %lld and %lld", (long long)bg_optim_step_count(oa),
                            (long long)bg_optim_step_count(ob));
    bg_quantizer_list *la = bg_model_quantizer_list(a), *lb = bg_model_quantizer_list(b);
    if (!la || !lb) {
        bg_quantizer_list_free(la);
        bg_quantizer_list_free(lb);
        return bg_test_check(false, file, line, "%s", bg_last_error());
    }
    const bg_quantizer_list qa = *la, qb = *lb;
    ok &= bg_test_check(qa.n == qb.n, file, line, "%d and %d quantizers", qa.n, qb.n);
    for (int i = 0; i < qa.n && i < qb.n; i++) {
        int64_t p = bg_quant_state_num_scales(qa.states[i]);
        if (p != bg_quant_state_num_scales(qb.states[i]) || p > 256) {
            ok &= bg_test_check(false, file, line, "quantizer %s: %lld scales", qa.names[i], (long long)p);
            continue;
        }
        float ra[4 * 256], rb[4 * 256];
        bg_quant_state_flags fa, fb;
        bg_quant_state_get_buffers(qa.states[i], ra, ra + p, ra + 2 * p, ra + 3 * p, &fa);
        bg_quant_state_get_buffers(qb.states[i], rb, rb + p, rb + 2 * p, rb + 3 * p, &fb);
        ok &= bg_test_check(memcmp(ra, rb, sizeof(float) * 4 * (size_t)p) == 0 && fa.calls == fb.calls &&
                                fa.enabled == fb.enabled && fa.initialized == fb.initialized &&
                                fa.observed == fb.observed && fa.observer_on == fb.observer_on &&
                                bg_quant_spec_equal(bg_quant_state_spec(qa.states[i]), bg_quant_state_spec(qb.states[i])),
                            file, line, "quantizer %s differs", qa.names[i]);
    }
    bg_quantizer_list_free(la);
    bg_quantizer_list_free(lb);
    return ok;
}

char bg_test_ref_path[1024];

struct bg_safetensors *bg_test_open_reference(const char *file, const char *generator, const char *version) {
    snprintf(bg_test_ref_path, sizeof bg_test_ref_path, "%s/tests/reference/%s", bg_test_source_dir(), file);
    bg_safetensors *st = NULL;
    if (!CHECK_MSG(bg_safetensors_open(bg_test_ref_path, &st) == BG_OK, "%s; re-run %s (with /usr/bin/python3)",
                   bg_last_error(), generator))
        return NULL;
    const char *gen = bg_safetensors_metadata(st, "generator"), *ver = bg_safetensors_metadata(st, "version");
    if (!CHECK_MSG(gen && strcmp(gen, generator) == 0 && ver && strcmp(ver, version) == 0,
                   "%s: generator version is \"%s\", this test expects \"%s\": re-run %s", bg_test_ref_path,
                   ver ? ver : "(none)", version, generator)) {
        bg_safetensors_free(st);
        return NULL;
    }
    return st;
}

bool bg_test_train_lm(bg_module *m, const char *text, int len, int B, int T, int steps, float lr,
                      int (*start)(int s, int b, void *user), void *user, const char *file, int line) {
    bg_model_set_quant_mode(m, BG_QUANT_MODE_TRAIN);
    bg_optim *opt = steps ? bg_adamw_new(m, &(bg_adam_opts){.lr = lr, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f}) : NULL;
    bg_ctx *ctx = bg_ctx_new(0);
    int32_t *ids = malloc(sizeof *ids * (size_t)(B * (T + 1)));
    bool ok = ctx && ids && (opt || !steps);
    for (int s = 0; ok && s < steps; s++) {
        for (int b = 0; b < B; b++) {
            int o = start(s, b, user);
            for (int i = 0; i <= T; i++) ids[b * (T + 1) + i] = (unsigned char)text[(o + i) % len];
        }
        bg_tensor *all = bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(B, T + 1), ids);
        bg_tensor *x = bg_contiguous(ctx, bg_slice(ctx, all, 1, 0, T)), *y = bg_contiguous(ctx, bg_slice(ctx, all, 1, 1, T + 1));
        bg_tensor *loss = bg_cross_entropy_flat(ctx, bg_module_forward(ctx, m, x), y);
        ok = loss && bg_backward(ctx, loss) == BG_OK && bg_optim_step(opt) == BG_OK;
        if (!ok) bg_test_check(false, file, line, "train_lm: step %d: %s", s, bg_ctx_error(ctx));
        bg_optim_zero_grad(opt);
        bg_ctx_reset(ctx);
    }
    free(ids);
    bg_ctx_free(ctx);
    bg_optim_free(opt);
    bg_model_set_quant_mode(m, BG_QUANT_MODE_EVAL);
    bg_module_train(m, false);
    return bg_test_check(ok, file, line, "train_lm: %d steps", steps);
}
