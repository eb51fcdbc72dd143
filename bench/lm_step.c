/* lm_step.c — one training step of the language model of the quality rows
 * (V 256, d 256, 4 layers, 4 heads, d_ff 768, ctx 128, batch 32, AdamW),
 * fp32 and BitNet, each with its blocks' activations kept for the backward
 * and recomputed in it (bg_lm_set_recompute), at 1 and 2 threads, against
 * the same step's matrix products alone (bg_sgemm) and, when
 * /usr/bin/python3 has torch, against PyTorch at the thread settings
 * bench/torch_lm.py is given (run after bitgrad's rounds). Prints medians
 * with their spread, tokens/s, the arenas' high-water marks and the heap
 * allocations of steady-state steps (bench/lm_memory.sh measures the peak
 * RSS of one training process against PyTorch's).
 *
 *     ./build/bench/lm_step [--steps N] [--rounds R] [--no-torch] [--data FILE]
 *
 * A step = next batch of random windows + forward + cross-entropy + backward
 * + clipping + AdamW + zero grads + ctx reset. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_util.h"
#include "bitgrad.h"

enum { V = 256, D = 256, L = 4, H = 4, FF = 768, T = 128, B = 32 };

typedef struct net {
    bg_module *lm;
    bg_optim *opt;
    bg_ctx *ctx;
    bg_text_batcher *batches;
} net;

static bool decays(const char *name, const bg_tensor *p, void *user) {
    (void)user;
    return p->ndim == 2 && strncmp(name, "blk.", 4) == 0;
}

/* The step's variants, timed in turns: fp32 and BitNet, each with its
 * blocks kept for the backward and recomputed in it (lm train's default). */
typedef struct variant {
    const char *name;
    bool bitnet, recompute;
} variant;
static const variant variants[] = {
    {"fp32", false, false},
    {"BitNet", true, false},
    {"fp32 recompute", false, true},
    {"BitNet recompute", true, true},
};
#define N_VARIANTS 4

static bool net_new(net *n, const bg_text *text, const variant *v) {
    bg_rng rng;
    bg_rng_seed(&rng, 0);
    n->lm = bg_lm_new(&(bg_lm_config){.vocab = V, .d_model = D, .n_layers = L, .n_heads = H, .d_ff = FF, .ctx = T},
                      &rng);
    if (!n->lm || (v->bitnet && bg_bitnet_model(n->lm) != BG_OK) || bg_lm_set_recompute(n->lm, v->recompute) != BG_OK)
        return false;
    bg_model_set_quant_mode(n->lm, BG_QUANT_MODE_TRAIN);
    n->opt = bg_adamw_new(n->lm, &(bg_adam_opts){.lr = 2e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                                                 .weight_decay = 0.1f});
    n->ctx = bg_ctx_new(0);
    return n->opt && n->ctx && bg_optim_decay_only(n->opt, decays, NULL) == BG_OK &&
           bg_text_batcher_new(text, &(bg_text_batcher_opts){.batch_size = B, .context = T}, &n->batches) == BG_OK;
}

static void net_free(net *n) {
    bg_text_batcher_free(n->batches);
    bg_ctx_free(n->ctx);
    bg_optim_free(n->opt);
    bg_module_free(n->lm);
}

static bool step(net *n) {
    const bg_batch_source src = bg_text_source(n->batches);
    double loss;
    bool ok = bg_train_steps(n->ctx, n->lm, n->opt, &src, 1, &(bg_train_opts){.clip_grad_norm = 1.0f}, &loss) == BG_OK;
    if (!ok) fprintf(stderr, "lm_step: %s\n", bg_last_error());
    return ok;
}

// --- the step's products alone ---------------------------------------------------------

typedef struct gemms {
    float *x, *w, *y;
} gemms;

/* y[M,N] = x[M,K] w[N,K]^T and the two backward products, for one Linear. */
static void linear3(gemms *g, int64_t M, int64_t N, int64_t K) {
    bg_sgemm(false, true, M, N, K, 1.0f, g->x, K, g->w, K, 0.0f, g->y, N);   // forward
    bg_sgemm(false, false, M, K, N, 1.0f, g->y, N, g->w, K, 0.0f, g->x, K);  // dx = dy W
    bg_sgemm(true, false, N, K, M, 1.0f, g->y, N, g->x, K, 1.0f, g->w, K);   // dW += dy^T x
}

static void step_products(gemms *g) {
    const int64_t M = (int64_t)B * T;
    for (int l = 0; l < L; l++) {
        for (int p = 0; p < 4; p++) linear3(g, M, D, D);   // q, k, v, o
        linear3(g, M, FF, D), linear3(g, M, FF, D), linear3(g, M, D, FF);   // gate, up, down
        // attention: per (batch, head) S = q k^T, O = P v, and their backward (4 products)
        for (int bh = 0; bh < B * H; bh++) {
            const int64_t hd = D / H;
            bg_sgemm(false, true, T, T, hd, 1.0f, g->x, hd, g->w, hd, 0.0f, g->y, T);
            bg_sgemm(false, false, T, hd, T, 1.0f, g->y, T, g->w, hd, 0.0f, g->x, hd);
            bg_sgemm(false, true, T, T, hd, 1.0f, g->x, hd, g->w, hd, 0.0f, g->y, T);
            bg_sgemm(false, false, T, hd, T, 1.0f, g->y, T, g->w, hd, 0.0f, g->x, hd);
            bg_sgemm(true, false, T, hd, T, 1.0f, g->y, T, g->x, hd, 0.0f, g->w, hd);
            bg_sgemm(false, false, T, hd, T, 1.0f, g->y, T, g->w, hd, 0.0f, g->x, hd);
        }
    }
    linear3(g, M, V, D);   // the tied head
}

/* Median of `reps` timings of f, with the 10th and 90th percentiles. */
typedef struct timing {
    double med, p10, p90;
} timing;

static timing summarise(double *v, int n) {
    timing t = {.med = median(v, n)};
    t.p10 = v[n / 10], t.p90 = v[n - 1 - n / 10];
    return t;
}

/* PyTorch's step for fp32/BitNet at torch threads tt and OpenBLAS threads
 * ob, from bench/torch_lm.py --time-only (ms; < 0 when unavailable). */
static double torch_ms(bool bitnet, int tt, int ob, int steps, const char *data) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "OPENBLAS_NUM_THREADS=%d /usr/bin/python3 %s/bench/torch_lm.py --time-only %d --threads %d %s %s%s "
             "2>/dev/null",
             ob, BG_SOURCE_DIR_STR, steps, tt, bitnet ? "--bitnet" : "", data ? "--data " : "", data ? data : "");
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[512];
    double ms = -1;
    while (fgets(line, sizeof line, p)) {
        const char *at = strstr(line, ": fp32 ");
        if (!at) at = strstr(line, ": BitNet ");
        if (at) sscanf(strchr(at + 2, ' ') + 1, "%lf", &ms);
    }
    pclose(p);
    return ms;
}

int main(int argc, char **argv) {
    int steps = 8, rounds = 3;
    bool torch = true;
    const char *data = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (!strcmp(argv[i], "--no-torch")) torch = false;
        else {
            fprintf(stderr, "usage: %s [--steps N] [--rounds R] [--no-torch] [--data FILE]\n", argv[0]);
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    if (steps < 2 || rounds < 1) {
        fprintf(stderr, "lm_step: --steps must be >= 2 and --rounds >= 1\n");
        return 2;
    }
    bg_text *text = NULL;
    if ((data ? bg_text_load(data, &text) : bg_text_load_kjv(&text)) != BG_OK) {
        fprintf(stderr, "lm_step: %s\n", bg_last_error());
        return 1;
    }
    net nets[N_VARIANTS] = {{0}};
    gemms g = {.x = bg_aligned_alloc(sizeof(float) * (size_t)B * T * FF),
               .w = bg_aligned_alloc(sizeof(float) * (size_t)FF * FF * 4),
               .y = bg_aligned_alloc(sizeof(float) * (size_t)B * T * FF)};
    int n_samples = steps * rounds;
    double *sv = malloc(sizeof(double) * (size_t)n_samples * (N_VARIANTS + 1));
    bool ok = g.x && g.w && g.y && sv;
    for (int v = 0; v < N_VARIANTS; v++) ok = ok && net_new(&nets[v], text, &variants[v]);
    if (!ok) {
        fprintf(stderr, "lm_step: setup: %s\n", bg_last_error());
        return 1;
    }
    memset(g.x, 0, sizeof(float) * (size_t)B * T * FF), memset(g.w, 0, sizeof(float) * (size_t)FF * FF * 4);
    printf("lm_step: V %d, d %d, %d layers, %d heads, d_ff %d, ctx %d, batch %d (%d tokens/step), AdamW;\n"
           "%d rounds of %d steps per variant, alternating; medians (p10-p90)\n",
           V, D, L, H, FF, T, B, B * T, rounds, steps);
    bench_quiet quiet = bench_quiet_begin();
    for (int threads = 1; threads <= 2; threads++) {
        bg_set_num_threads(threads);
        for (int v = 0; v < N_VARIANTS; v++) step(&nets[v]), step(&nets[v]);   // warm-up: arenas grown
        int k[N_VARIANTS + 1] = {0};
        for (int r = 0; r < rounds; r++) {
            for (int v = 0; v <= N_VARIANTS; v++)
                for (int s = 0; s < steps; s++) {
                    double t0 = now_seconds();
                    if (v < N_VARIANTS && !step(&nets[v])) return 1;
                    if (v == N_VARIANTS) step_products(&g);
                    sv[v * n_samples + k[v]++] = 1e3 * (now_seconds() - t0);
                }
        }
        timing t[N_VARIANTS + 1];
        for (int v = 0; v <= N_VARIANTS; v++) t[v] = summarise(sv + v * n_samples, k[v]);
        printf("%d thread%s (the products alone %.1f ms):\n", threads, threads > 1 ? "s" : "", t[N_VARIANTS].med);
        for (int v = 0; v < N_VARIANTS; v++)
            printf("  %-18s %7.1f ms (%.1f-%.1f) %6.0f tokens/s  / products %.2f  / fp32 %.2f\n", variants[v].name,
                   t[v].med, t[v].p10, t[v].p90, B * T / t[v].med * 1e3, t[v].med / t[N_VARIANTS].med,
                   t[v].med / t[0].med);
        fflush(stdout);
    }
    uint64_t before = bg_alloc_count();
    for (int s = 0; s < 3; s++)
        for (int v = 0; v < N_VARIANTS; v++) step(&nets[v]);
    uint64_t allocs = bg_alloc_count() - before;
    printf("arena high-water marks:");
    for (int v = 0; v < N_VARIANTS; v++)
        printf(" %s %.0f MiB%s", variants[v].name, (double)bg_ctx_peak_bytes(nets[v].ctx) / (1 << 20),
               v + 1 < N_VARIANTS ? "," : "");
    printf("\naligned allocations in %d steady-state steps: %llu (peak RSS of one training process: "
           "bench/lm_memory.sh)\n",
           3 * N_VARIANTS, (unsigned long long)allocs);
    if (torch) {
        // PyTorch's settings: torch threads x OpenBLAS threads.
        const int settings[][2] = {{1, 1}, {1, 2}, {2, 1}};
        for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++) {
            double f = torch_ms(false, settings[i][0], settings[i][1], steps, data);
            double b = torch_ms(true, settings[i][0], settings[i][1], steps, data);
            if (f < 0 || b < 0) {
                printf("PyTorch: not available (/usr/bin/python3 with torch)\n");
                break;
            }
            printf("PyTorch torch threads %d, OPENBLAS_NUM_THREADS %d: fp32 %.1f ms %.0f tokens/s, BitNet %.1f ms "
                   "%.0f tokens/s\n",
                   settings[i][0], settings[i][1], f, B * T / f * 1e3, b, B * T / b * 1e3);
            fflush(stdout);
        }
    }
    bench_quiet_end(&quiet);
    free(sv);
    bg_aligned_free(g.x), bg_aligned_free(g.w), bg_aligned_free(g.y);
    for (int v = 0; v < N_VARIANTS; v++) net_free(&nets[v]);
    bg_text_free(text);
    return 0;
}
