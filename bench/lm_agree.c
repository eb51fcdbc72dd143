/* lm_agree.c — how closely the language-model runtime (infer/lm.h) follows
 * the training model it was exported from: the validation loss of both on
 * the same fixed windows (the training model in eval mode, fake-quant for a
 * BitNet model), the largest logit difference, and greedy continuations of
 * prompts taken from the validation text, with the number of tokens over
 * which the two agree.
 *
 *     ./build/bench/lm_agree CKPT [--windows N] [--prompts N] [--tokens N] [--data FILE]
 *
 * The checkpoint is exported to a temporary file first (bg_export). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitgrad.h"

/* Mean next-token cross-entropy (nats) of logits [T, V] against y [T]. */
static double cross_entropy(const float *logits, const int32_t *y, int64_t T, int64_t V) {
    double sum = 0;
    for (int64_t t = 0; t < T; t++) {
        const float *l = logits + t * V;
        double mx = l[0], z = 0;
        for (int64_t v = 1; v < V; v++) mx = fmax(mx, l[v]);
        for (int64_t v = 0; v < V; v++) z += exp((double)l[v] - mx);
        sum += mx + log(z) - (double)l[y[t]];
    }
    return sum / (double)T;
}

static int32_t argmax(const float *v, int64_t n) {
    int64_t a = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[a]) a = i;
    return (int32_t)a;
}

int main(int argc, char **argv) {
    const char *ck = NULL, *data = NULL;
    int64_t windows = 64, prompts = 10, tokens = 100;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--windows") && i + 1 < argc) windows = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--prompts") && i + 1 < argc) prompts = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) tokens = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (argv[i][0] != '-' && !ck) ck = argv[i];
        else {
            fprintf(stderr, "usage: %s CKPT [--windows N] [--prompts N] [--tokens N] [--data FILE]\n", argv[0]);
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (!ck || windows < 1 || prompts < 1 || tokens < 1) {
        fprintf(stderr, "usage: %s CKPT [--windows N] [--prompts N] [--tokens N] [--data FILE]\n", argv[0]);
        return 2;
    }
    bg_module *m = NULL;
    bg_text *text = NULL;
    bg_lm_runtime *rt = NULL;
    char path[] = "/tmp/lm_agree_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    bg_checkpoint c = {0};
    bg_lm_config cfg;
    bool ok = fd >= 0 && bg_checkpoint_load_model(ck, &m) == BG_OK && (c.model = m) &&
              bg_checkpoint_load(ck, &c) == BG_OK && bg_lm_config_of(m, &cfg) == BG_OK;
    if (ok) bg_model_set_quant_mode(m, BG_QUANT_MODE_EVAL), bg_module_train(m, false);
    ok = ok && bg_export(m, path, NULL) == BG_OK && bg_lm_load(path, NULL, &rt) == BG_OK &&
         (data ? bg_text_load(data, &text) : bg_text_load_kjv(&text)) == BG_OK;
    unlink(path);
    if (!ok) {
        fprintf(stderr, "lm_agree: %s\n", bg_last_error());
        return 1;
    }
    const int64_t T = cfg.ctx, V = cfg.vocab;
    bg_text_batcher *vb = NULL;
    bg_ctx *ctx = bg_ctx_new(0);
    float *lr = malloc(sizeof(float) * (size_t)(T * V)), *step = malloc(sizeof(float) * (size_t)V);
    int32_t *gen = malloc(sizeof(int32_t) * (size_t)(T + tokens) * 2);
    if (!ctx || !lr || !step || !gen ||
        bg_text_batcher_new(text, &(bg_text_batcher_opts){.batch_size = 1, .context = T, .split = BG_TEXT_VAL,
                                                          .fixed = true, .max_windows = windows},
                            &vb) != BG_OK) {
        fprintf(stderr, "lm_agree: %s\n", bg_last_error());
        return 1;
    }
    bg_set_grad_enabled(ctx, false);
    printf("lm_agree: %s (%s projections), %lld validation windows of %lld bytes\n", ck,
           bg_lm_runtime_projections(rt), (long long)bg_text_batcher_windows(vb), (long long)T);
    // validation loss: the model's forward and the runtime's prefill of each window
    double loss_m = 0, loss_r = 0, maxdiff = 0, maxlogit = 0;
    int64_t n = 0, same_argmax = 0;
    bg_tensor *x, *y;
    while (bg_text_batcher_next(vb, ctx, &x, &y)) {
        bg_tensor *lm = bg_module_forward(ctx, m, x);
        if (!lm || bg_lm_prefill(rt, x->data, T, lr, true) != BG_OK) {
            fprintf(stderr, "lm_agree: %s\n", lm ? bg_last_error() : bg_ctx_error(ctx));
            return 1;
        }
        bg_lm_reset(rt);
        const float *lmf = bg_f32(lm);
        loss_m += cross_entropy(lmf, y->data, T, V), loss_r += cross_entropy(lr, y->data, T, V);
        for (int64_t i = 0; i < T * V; i++) {
            maxdiff = fmax(maxdiff, fabs((double)lmf[i] - (double)lr[i]));
            maxlogit = fmax(maxlogit, fabs((double)lmf[i]));
        }
        for (int64_t t = 0; t < T; t++) same_argmax += argmax(lmf + t * V, V) == argmax(lr + t * V, V);
        n++;
        bg_ctx_reset(ctx);
    }
    printf("validation loss: training model (eval) %.5f nats/byte, runtime %.5f (difference %+.2e); largest logit "
           "difference %.2e (|logit| <= %.1f); same argmax at %lld of %lld positions\n",
           loss_m / (double)n, loss_r / (double)n, (loss_r - loss_m) / (double)n, maxdiff, maxlogit,
           (long long)same_argmax, (long long)(n * T));
    // greedy continuations of prompts: the first 32 bytes of evenly spaced validation windows
    const int64_t P = 32;
    int64_t min_agree = tokens, total = 0;
    for (int64_t k = 0; k < prompts; k++) {
        const uint8_t *src = text->bytes + text->n_train + (k * (text->n_val - P - 1)) / prompts;
        int32_t *a = gen, *b = gen + T + tokens;
        for (int64_t i = 0; i < P; i++) a[i] = b[i] = src[i];
        if (bg_lm_generate(m, a, P, tokens, &(bg_sample_opts){.temperature = 0}, a + P) != BG_OK) {
            fprintf(stderr, "lm_agree: %s\n", bg_last_error());
            return 1;
        }
        // the runtime: greedy, shifting its cache as bg_lm_generate's window slides
        bg_lm_reset(rt);
        bg_lm_prefill(rt, b, P, step, false);
        int64_t agree = -1;
        for (int64_t i = 0; i < tokens; i++) {
            b[P + i] = argmax(step, V);
            if (agree < 0 && b[P + i] != a[P + i]) agree = i;
            if (i + 1 == tokens) break;
            if (bg_lm_n_past(rt) == T) {   // the same last T tokens as bg_lm_generate's next forward
                bg_lm_reset(rt);
                bg_lm_prefill(rt, b + P + i + 1 - T, T - 1, NULL, false);
            }
            bg_lm_decode(rt, b[P + i], step);
        }
        if (agree < 0) agree = tokens;
        min_agree = agree < min_agree ? agree : min_agree;
        total += agree;
        printf("  prompt %lld: %lld of %lld greedy tokens equal\n", (long long)k, (long long)agree, (long long)tokens);
    }
    printf("greedy continuations of %lld prompts: at least %lld and on average %.1f of %lld tokens equal\n",
           (long long)prompts, (long long)min_agree, (double)total / (double)prompts, (long long)tokens);
    bg_text_batcher_free(vb);
    bg_ctx_free(ctx);
    free(lr), free(step), free(gen);
    bg_lm_free(rt);
    bg_text_free(text);
    bg_module_free(m);
    return 0;
}
