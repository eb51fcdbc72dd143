/* test_qat_metrics.c — quantization error metrics: MSE, SQNR and cosine on
 * hand cases (exact quantization -> +inf dB, all-zero tensors, known MSE),
 * per-layer metrics of a model from tracked forwards (fixed-scale weights
 * and activations), ternary zero and flip fractions, tracking off, and a
 * tracked forward whose level buffers cannot be allocated fails with an
 * error instead of switching tracking off. */
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/test_util.h"

static void test_error_hand_cases(void) {
    bg_quant_error e;
    const float x[4] = {1, 2, 3, 4}, q[4] = {1, 2, 3, 5};
    bg_quant_error_compute(x, x, 4, &e);
    CHECK(e.mse == 0 && isinf(e.sqnr_db) && e.sqnr_db > 0 && e.cosine == 1.0);
    bg_quant_error_compute(x, q, 4, &e);
    CHECK_CLOSE(e.mse, 0.25, 0, 1e-12);
    CHECK_CLOSE(e.sqnr_db, 10 * log10(30.0), 0, 1e-12);
    CHECK_CLOSE(e.cosine, 34.0 / sqrt(30.0 * 39.0), 0, 1e-12);
    const float z[3] = {0, 0, 0}, nz[3] = {0, 0.5f, 0};
    bg_quant_error_compute(z, z, 3, &e);
    CHECK(e.mse == 0 && isinf(e.sqnr_db) && e.sqnr_db > 0 && e.cosine == 1.0);
    bg_quant_error_compute(z, nz, 3, &e);
    CHECK_CLOSE(e.mse, 0.25 / 3, 0, 1e-12);
    CHECK(isinf(e.sqnr_db) && e.sqnr_db < 0 && e.cosine == 0.0);
    bg_quant_error_compute(x, x, 0, &e);
    CHECK(isnan(e.mse) && isnan(e.sqnr_db) && isnan(e.cosine));
    // Sums and levels in one pass.
    bg_quant_stats s = {0};
    int8_t lv[4];
    const float t[4] = {-0.7f, 0, 0.7f, 0};
    bg_quant_stats_compute(&s, x, t, 4, lv);
    CHECK(s.n == 4 && s.zeros == 2 && lv[0] == -1 && lv[1] == 0 && lv[2] == 1 && lv[3] == 0);
}

static void test_layer_metrics(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 1);
    bg_quant_spec ws, as;
    CHECK(bg_quant_spec_parse("int8:scale=0.25", &ws) == BG_OK);
    CHECK(bg_quant_spec_parse("int8:scale=0.5", &as) == BG_OK);
    bg_module *net = bg_sequential_new(3, (bg_module *[]){
        bg_qlinear_new(4, 2, false, &ws, &as, &rng), bg_relu_new(), bg_bitlinear_new(2, 4, &rng)});
    CHECK(net != NULL);
    if (!net) return;
    // Weights on the 0.25 grid: exact. Input: 0.3 -> 0.5, -0.2 -> 0.
    float w0[8] = {0.25f, -0.5f, 1.0f, 0.0f, -1.25f, 0.75f, 0.5f, 2.0f};
    memcpy(bg_module_find_param(net, "0.weight")->data, w0, sizeof w0);
    // BitLinear weights [4,2]: gamma = 4.02/8; W/gamma levels 1,-1,0,1,1,0,-1,1.
    float w2[8] = {0.8f, -0.8f, 0.0f, 0.4f, 0.8f, 0.02f, -0.8f, 0.4f};
    bg_tensor *W2 = bg_module_find_param(net, "2.weight");
    memcpy(W2->data, w2, sizeof w2);

    bg_qat_layer_metrics m[4];
    CHECK(bg_qat_metrics(net, NULL, 0) == 2);
    CHECK(bg_qat_metrics(net, m, 4) == 2);
    CHECK(!m[0].has_weight && !m[0].has_input && isnan(m[0].weight.sqnr_db));   // nothing tracked yet

    bg_model_track_quant(net, true);
    bg_ctx *ctx = bg_ctx_new(0);
    float xv[4] = {0.5f, 1.0f, 0.3f, -0.2f};
    bg_tensor *x = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(1, 4), xv);
    CHECK(bg_module_forward(ctx, net, x) != NULL);
    CHECK(bg_qat_metrics(net, m, 4) == 2);
    CHECK_STR(m[0].name, "0");
    CHECK_STR(m[0].kind, "QLinear");
    CHECK(m[0].w_bits == 8 && m[0].a_bits == 8 && !m[0].ternary);
    CHECK(m[0].has_weight && m[0].has_input);
    CHECK(m[0].weight.mse == 0 && isinf(m[0].weight.sqnr_db) && m[0].weight.cosine == 1.0);
    CHECK_CLOSE(m[0].input.mse, 0.02, 1e-9, 1e-6);
    CHECK_CLOSE(m[0].input.sqnr_db, 10 * log10(1.38 / 0.08), 1e-6, 1e-6);
    CHECK_CLOSE(m[0].input.cosine, 1.4 / sqrt(1.38 * 1.5), 1e-7, 1e-6);
    CHECK_STR(m[1].name, "2");
    CHECK_STR(m[1].kind, "BitLinear");
    CHECK(m[1].ternary && m[1].w_bits == 2 && m[1].a_bits == 8);
    CHECK_CLOSE(m[1].zero_frac, 0.25, 0, 1e-12);
    CHECK(m[1].flip_frac == 0.0);   // first call: no reference yet
    // Ternary weight error by hand: W~ = gamma * levels.
    {
        const int lv[8] = {1, -1, 0, 1, 1, 0, -1, 1};
        double g = 4.02 / 8, e2 = 0, x2 = 0;
        for (int i = 0; i < 8; i++) {
            e2 += (w2[i] - g * lv[i]) * (w2[i] - g * lv[i]);
            x2 += (double)w2[i] * w2[i];
        }
        CHECK_CLOSE(m[1].weight.mse, e2 / 8, 1e-7, 1e-5);
        CHECK_CLOSE(m[1].weight.sqnr_db, 10 * log10(x2 / e2), 1e-5, 1e-5);
    }

    // Move one weight across a level: W[2] 0 -> 0.8 (gamma 4.82/8; the
    // others keep their levels). One flip out of 8.
    bg_f32(W2)[2] = 0.8f;
    bg_ctx_reset(ctx);
    x = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(1, 4), xv);
    CHECK(bg_module_forward(ctx, net, x) != NULL);
    CHECK(bg_qat_metrics(net, m, 4) == 2);
    CHECK_CLOSE(m[1].flip_frac, 0.125, 0, 1e-12);
    CHECK_CLOSE(m[1].zero_frac, 0.125, 0, 1e-12);
    // No forward since: nothing flipped.
    CHECK(bg_qat_metrics(net, m, 4) == 2);
    CHECK(m[1].flip_frac == 0.0);

    // Tracking off: the last tracked values stay; fp32 mode tracks nothing.
    bg_model_track_quant(net, false);
    bg_f32(W2)[0] = -0.8f;
    bg_ctx_reset(ctx);
    x = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(1, 4), xv);
    CHECK(bg_module_forward(ctx, net, x) != NULL);
    CHECK(bg_qat_metrics(net, m, 4) == 2);
    CHECK(m[1].flip_frac == 0.0 && m[1].has_weight);

    FILE *f = tmpfile();
    if (f) {
        bg_qat_metrics_print(m, 2, f);
        rewind(f);
        char buf[512] = {0};
        size_t got = fread(buf, 1, sizeof buf - 1, f);
        CHECK(got > 0 && strstr(buf, "BitLinear") && strstr(buf, "zeros 0.125"));
        fclose(f);
    }
    bg_ctx_free(ctx);
    bg_module_free(net);
}

/* Virtual memory in use now (bytes), from /proc/self/statm. */
__attribute__((unused)) static long long vm_bytes(void) {   // unused under ASan
    long long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f && fscanf(f, "%lld", &pages) != 1) pages = 0;
    if (f) fclose(f);
    return pages * sysconf(_SC_PAGESIZE);
}

/* In a child with an address-space limit just above what one untracked
 * forward needed: the tracked forward's ternary level buffers (2 x 16 MB)
 * do not fit, and the forward fails with the ctx error. */
static void test_tracking_out_of_memory(void) {
#if defined(__SANITIZE_ADDRESS__)
    printf("tracking out of memory: skipped under AddressSanitizer (RLIMIT_AS)\n");
#else
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        // Large blocks always from fresh mmaps, so memory freed by the first
        // forward cannot serve the level buffers under the limit.
        mallopt(M_MMAP_THRESHOLD, 1 << 20);
        bg_rng rng;
        bg_rng_seed(&rng, 1);
        bg_module *net = bg_sequential_new(1, (bg_module *[]){bg_linear_new(4096, 4096, false, &rng)});
        bg_ctx *ctx = bg_ctx_new(0);
        if (!net || !ctx || bg_quantize_model(net, "ternary", NULL) != BG_OK) _exit(2);
        bg_tensor *x = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(1, 4096));
        if (!bg_module_forward(ctx, net, x)) _exit(3);   // grows the arena once
        bg_ctx_reset(ctx);
        struct rlimit rl = {.rlim_cur = (rlim_t)(vm_bytes() + (8 << 20)), .rlim_max = RLIM_INFINITY};
        if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(4);
        bg_model_track_quant(net, true);
        x = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(1, 4096));
        bg_tensor *y = bg_module_forward(ctx, net, x);
        bool ok = y == NULL && strcmp(bg_ctx_error(ctx), "FakeQuant: out of memory for the metric levels of 16777216 "
                                                         "weights") == 0;
        if (!ok) fprintf(stderr, "child: y %p, error \"%s\"\n", (void *)y, bg_ctx_error(ctx));
        _exit(ok ? 0 : 1);
    }
    int wst = 0;
    waitpid(pid, &wst, 0);
    CHECK_MSG(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "tracking out of memory: child status %d", wst);
#endif
}

int main(void) {
    test_error_hand_cases();
    test_layer_metrics();
    test_tracking_out_of_memory();
    return bg_test_finish();
}
