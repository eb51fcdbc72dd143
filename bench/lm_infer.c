/* lm_infer.c — the language-model runtime's speed (infer/lm.h): prefill
 * tokens/s for a 128-token prompt and decode tokens/s at batch 1 (128 tokens
 * after a 16-token prompt), at 1 and 2 threads, for two BitNet models with
 * random ternary weights: the quality rows' model (d 256, 4 layers, d_ff 768,
 * ctx 256) and a wider one (d 1024, 4 layers, d_ff 2816) to see the kernels
 * at a larger width. Rounds alternate the thread counts; medians with the
 * 10th-90th percentile spread. When tests/llama/node_modules holds
 * node-llama-cpp (scripts/install-deps.sh), the same models exported as
 * GGUF TQ2_0 and TQ1_0 are timed by llama.cpp through
 * bench/llama_bench.mjs, alternated with bitgrad's rounds. And, for
 * reference, PyTorch's eval-mode forward of the same graph and shape
 * (bench/torch_lm.py --infer, its fastest of 1 and 2 threads; it keeps no
 * KV cache, so each decoded token is a forward over the sequence so far).
 *
 *     ./build/bench/lm_infer [--rounds R] [--no-llama] */
#include <math.h>
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

/* A BitNet LM of the shape with random weights, exported to path (and, when
 * gguf_tq2/gguf_tq1 are given, as GGUF TQ2_0 / TQ1_0 there). */
static bool write_model(const shape *s, const char *path, const char *gguf_tq2, const char *gguf_tq1) {
    bg_rng rng;
    bg_rng_seed(&rng, 5);
    bg_module *m = bg_lm_new(&(bg_lm_config){.vocab = 256, .d_model = s->d, .n_layers = s->layers,
                                             .n_heads = s->heads, .d_ff = s->ff, .ctx = CTX},
                             &rng);
    bool ok = m && bg_bitnet_model(m) == BG_OK;
    if (ok) bg_model_set_quant_mode(m, BG_QUANT_MODE_EVAL);
    ok = ok && bg_export(m, path, NULL) == BG_OK;
    if (gguf_tq2) ok = ok && bg_export_gguf(m, gguf_tq2, BG_GGUF_TYPE_TQ2_0) == BG_OK;
    if (gguf_tq1) ok = ok && bg_export_gguf(m, gguf_tq1, BG_GGUF_TYPE_TQ1_0) == BG_OK;
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

/* Medians and spreads of seconds per prefill and per DECODE decodes, as
 * tokens/s; the medians go to *pf_tps, *dc_tps. */
static void report(const char *who, double *prefill, double *decode, int n, double *pf_tps, double *dc_tps) {
    median(prefill, n), median(decode, n);   // sorts them
    *pf_tps = PREFILL / prefill[n / 2], *dc_tps = DECODE / decode[n / 2];
    printf("  %-28s prefill %7.0f tokens/s (%.0f-%.0f)   decode %6.0f tokens/s (%.0f-%.0f)\n", who, *pf_tps,
           PREFILL / prefill[n - 1 - n / 10], PREFILL / prefill[n / 10], *dc_tps, DECODE / decode[n - 1 - n / 10],
           DECODE / decode[n / 10]);
}

/* One round of llama.cpp on a GGUF at `threads` (bench/llama_bench.mjs):
 * seconds per prefill and per DECODE decodes; false when it cannot run. */
static bool llama_round(const char *gguf, int threads, double *prefill_s, double *decode_s) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "node %s/bench/llama_bench.mjs %s %d %d %d 1 2>/dev/null", BG_SOURCE_DIR_STR, gguf,
             threads, PREFILL, DECODE);
    FILE *p = popen(cmd, "r");
    if (!p) return false;
    double pf = 0, dc = 0;
    char line[256];
    bool ok = false;
    while (fgets(line, sizeof line, p))
        if (sscanf(line, "round %*d prefill %lf decode %lf", &pf, &dc) == 2) ok = pf > 0 && dc > 0;
    pclose(p);
    if (ok) *prefill_s = PREFILL / pf, *decode_s = DECODE / dc;
    return ok;
}

/* PyTorch's prefill and decode tokens/s for the shape at torch threads tt
 * (OPENBLAS_NUM_THREADS=1); false when /usr/bin/python3 has no torch. */
static bool torch_infer(const shape *s, int tt, double *pf, double *dc) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "OPENBLAS_NUM_THREADS=1 /usr/bin/python3 %s/bench/torch_lm.py --infer 32 --threads %d --d %lld --ff %lld "
             "--layers %lld --heads %lld 2>/dev/null",
             BG_SOURCE_DIR_STR, tt, (long long)s->d, (long long)s->ff, (long long)s->layers, (long long)s->heads);
    FILE *p = popen(cmd, "r");
    if (!p) return false;
    char line[512];
    bool ok = false;
    while (fgets(line, sizeof line, p)) {
        const char *at = strstr(line, ": prefill ");
        if (at && sscanf(at, ": prefill %lf tokens/s decode %lf", pf, dc) == 2) ok = true;
    }
    pclose(p);
    return ok;
}

int main(int argc, char **argv) {
    int rounds = 7;
    bool llama = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-llama")) llama = false;
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
    bench_quiet quiet = bench_quiet_begin();
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        char path[] = "/tmp/lm_infer_XXXXXX", tq2[64], tq1[64];
        int fd = mkstemp(path);
        snprintf(tq2, sizeof tq2, "%s.tq2_0.gguf", path), snprintf(tq1, sizeof tq1, "%s.tq1_0.gguf", path);
        bg_lm_runtime *rt = NULL;
        if (fd < 0 || (close(fd), !write_model(&shapes[k], path, llama ? tq2 : NULL, llama ? tq1 : NULL)) ||
            bg_lm_load(path, NULL, &rt) != BG_OK) {
            fprintf(stderr, "lm_infer: %s\n", bg_last_error());
            return 1;
        }
        // engines: bitgrad at 1 and 2 threads, then llama.cpp TQ2_0 and TQ1_0 at 1 and 2
        enum { N_ENGINES = 6 };
        const char *names[N_ENGINES] = {"bitgrad, 1 thread", "bitgrad, 2 threads", "llama.cpp TQ2_0, 1 thread",
                                        "llama.cpp TQ2_0, 2 threads", "llama.cpp TQ1_0, 1 thread",
                                        "llama.cpp TQ1_0, 2 threads"};
        double pf[N_ENGINES][MAX_ROUNDS], dc[N_ENGINES][MAX_ROUNDS];
        bool have_llama = llama;
        for (int t = 1; t <= 2; t++) bg_set_num_threads(t), time_once(rt, ids, logits, &pf[0][0], &dc[0][0]);   // warm-up
        for (int r = 0; r < rounds; r++)
            for (int e = 0; e < (have_llama ? N_ENGINES : 2); e++) {
                const int threads = e % 2 + 1;
                if (e < 2) {
                    bg_set_num_threads(threads);
                    if (!time_once(rt, ids, logits, &pf[e][r], &dc[e][r])) {
                        fprintf(stderr, "lm_infer: %s\n", bg_last_error());
                        return 1;
                    }
                } else if (!llama_round(e < 4 ? tq2 : tq1, threads, &pf[e][r], &dc[e][r])) {
                    printf("llama.cpp: not available (node and tests/llama/node_modules: bash scripts/install-deps.sh)\n");
                    have_llama = false;
                }
            }
        printf("%s:\n", shapes[k].name);
        double pt[N_ENGINES], dt[N_ENGINES];
        for (int e = 0; e < (have_llama ? N_ENGINES : 2); e++) report(names[e], pf[e], dc[e], rounds, &pt[e], &dt[e]);
        if (have_llama) {
            const double best_dc = fmax(dt[2], dt[3]), best_pf = fmax(pt[2], pt[3]);
            printf("  bitgrad's best / llama.cpp's fastest TQ2_0: decode %.2fx, prefill %.2fx; bitgrad decode 2 "
                   "threads / 1 thread %.2f\n",
                   fmax(dt[0], dt[1]) / best_dc, fmax(pt[0], pt[1]) / best_pf, dt[1] / dt[0]);
        }
        double tpf[2], tdc[2];
        if (torch_infer(&shapes[k], 1, &tpf[0], &tdc[0]) && torch_infer(&shapes[k], 2, &tpf[1], &tdc[1])) {
            const int b = tdc[1] > tdc[0];
            printf("  %-28s prefill %7.0f tokens/s   decode %6.0f tokens/s (no KV cache; reference only)\n",
                   b ? "PyTorch eval, 2 threads" : "PyTorch eval, 1 thread", tpf[b], tdc[b]);
        } else {
            printf("  PyTorch: not available (/usr/bin/python3 with torch)\n");
        }
        bg_lm_free(rt);
        unlink(path), unlink(tq2), unlink(tq1);
    }
    bench_quiet_end(&quiet);
    return 0;
}
