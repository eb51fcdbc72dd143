/* lm_infer.c — the language-model runtime's speed (infer/lm.h): prefill
 * tokens/s for a 128-token prompt and decode tokens/s at batch 1 (128 tokens
 * after a 16-token prompt), at 1 and 2 threads, for two BitNet models with
 * random ternary weights: the quality rows' model (d 256, 4 layers, d_ff 768,
 * ctx 256) and a wider one (d 1024, 4 layers, d_ff 2816) to see the kernels
 * at a larger width. Rounds alternate the thread counts; medians with the
 * 10th-90th percentile spread. When tests/llama/node_modules holds
 * node-llama-cpp (scripts/install-deps.sh), the same models exported as
 * GGUF TQ2_0 and TQ1_0 are timed by llama.cpp through
 * bench/llama_bench.mjs, alternated with bitgrad's rounds.
 *
 *     ./build/bench/lm_infer [--rounds R] [--no-llama] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench_util.h"
#include "bitgrad.h"

typedef struct shape {
    const char *name;
    int64_t d, ff, layers, heads;
} shape;
static const shape shapes[] = {{"d 256, d_ff 768", 256, 768, 4, 4}, {"d 1024, d_ff 2816", 1024, 2816, 4, 16}};
enum { CTX = 256, PREFILL = 128, PROMPT = 16, DECODE = 128, MAX_ROUNDS = 64 };

/* A BitNet LM of the shape with random weights, exported to path. */
static bool write_model(const shape *s, const char *path) {
    bg_rng rng;
    bg_rng_seed(&rng, 5);
    bg_module *m = bg_lm_new(&(bg_lm_config){.vocab = 256, .d_model = s->d, .n_layers = s->layers,
                                             .n_heads = s->heads, .d_ff = s->ff, .ctx = CTX},
                             &rng);
    bool ok = m && bg_bitnet_model(m) == BG_OK;
    if (ok) bg_model_set_quant_mode(m, BG_QUANT_MODE_EVAL);
    ok = ok && bg_export(m, path, NULL) == BG_OK;
    bg_module_free(m);
    return ok;
}

/* Seconds of one prefill of PREFILL tokens, and of DECODE decodes after a
 * PROMPT-token prefill. */
static bool time_once(bg_lm_runtime *rt, const int32_t *ids, float *logits, double *prefill_s, double *decode_s) {
    bg_lm_reset(rt);
    double t0 = now_seconds();
    bool ok = bg_lm_prefill(rt, ids, PREFILL, logits, false) == BG_OK;
    *prefill_s = now_seconds() - t0;
    bg_lm_reset(rt);
    ok = ok && bg_lm_prefill(rt, ids, PROMPT, logits, false) == BG_OK;
    t0 = now_seconds();
    for (int i = 0; ok && i < DECODE; i++) ok = bg_lm_decode(rt, ids[PROMPT + i], logits) == BG_OK;
    *decode_s = now_seconds() - t0;
    return ok;
}

static void report(const char *who, double *prefill, double *decode, int n) {
    median(prefill, n), median(decode, n);   // sorts them
    printf("  %-28s prefill %7.0f tokens/s (%.0f-%.0f)   decode %6.0f tokens/s (%.0f-%.0f)\n", who,
           PREFILL / prefill[n / 2], PREFILL / prefill[n - 1 - n / 10], PREFILL / prefill[n / 10],
           DECODE / decode[n / 2], DECODE / decode[n - 1 - n / 10], DECODE / decode[n / 10]);
}

int main(int argc, char **argv) {
    int rounds = 7;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-llama")) continue;
        else {
            fprintf(stderr, "usage: %s [--rounds R] [--no-llama]\n", argv[0]);
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "lm_infer: --rounds must be in 1..%d\n", MAX_ROUNDS);
        return 2;
    }
    int32_t ids[PREFILL + DECODE];
    for (int i = 0; i < PREFILL + DECODE; i++) ids[i] = (int32_t)("In the beginning God created the heaven "[i % 40]);
    float logits[256];
    printf("lm_infer: random ternary BitNet LMs, 4 layers, vocab 256; prefill %d tokens, decode %d after %d; %d rounds, "
           "medians (p10-p90)\n",
           PREFILL, DECODE, PROMPT, rounds);
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        char path[] = "/tmp/lm_infer_XXXXXX";
        int fd = mkstemp(path);
        bg_lm_runtime *rt = NULL;
        if (fd < 0 || (close(fd), !write_model(&shapes[k], path)) || bg_lm_load(path, NULL, &rt) != BG_OK) {
            fprintf(stderr, "lm_infer: %s\n", bg_last_error());
            return 1;
        }
        double pf[2][MAX_ROUNDS], dc[2][MAX_ROUNDS];
        for (int t = 1; t <= 2; t++) bg_set_num_threads(t), time_once(rt, ids, logits, &pf[0][0], &dc[0][0]);   // warm-up
        for (int r = 0; r < rounds; r++)
            for (int t = 0; t < 2; t++) {
                bg_set_num_threads(t + 1);
                if (!time_once(rt, ids, logits, &pf[t][r], &dc[t][r])) {
                    fprintf(stderr, "lm_infer: %s\n", bg_last_error());
                    return 1;
                }
            }
        printf("%s:\n", shapes[k].name);
        report("bitgrad, 1 thread", pf[0], dc[0], rounds);
        report("bitgrad, 2 threads", pf[1], dc[1], rounds);
        bg_lm_free(rt);
        unlink(path);
    }
    return 0;
}
