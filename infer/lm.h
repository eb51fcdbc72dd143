/*
 * infer/lm.h — the language-model runtime: loads the export of a
 * TransformerLM (bg_export, doc/export-format.md "Language models") and
 * generates text with a KV cache, without autograd.
 *
 *     bg_lm_runtime *lm;
 *     if (bg_lm_load("lm.bgx", NULL, &lm) != BG_OK) fprintf(stderr, "%s\n", bg_last_error());
 *     float logits[256];
 *     bg_lm_prefill(lm, prompt, n_prompt, logits, false);     // logits of the last position
 *     bg_rng rng; bg_rng_seed(&rng, 0);
 *     for (int i = 0; i < 100; i++) {
 *         int32_t t = bg_sample_logits(logits, 256, &(bg_sample_opts){.temperature = 0.8f}, scratch, &rng);
 *         bg_lm_decode(lm, t, logits);                          // one position more in the cache
 *     }
 *     bg_lm_free(lm);
 *
 * How it runs: the graph of layers/lm.c (llama.cpp's `bitnet`) over the new
 * positions, keys and values appended to a cache of n_ctx positions per
 * layer. Ternary projections (t2) run on the integer kernels: each row's
 * int8 codes from its absmax (max(|x|, 1e-5) / 127, nearbyint), times the
 * packed ternary weights with exact int32 sums (gemm_ternary), one rescale
 * acc * (s_x * s_w) per output: bit for bit the training model's BitLinear
 * forward in eval mode. Float projections (an fp32 model) and the tied
 * output head run bg_sgemm. RoPE angles in double, as training.
 * Memory: everything (weights, cache, buffers for n_ctx positions) is
 * allocated at load; prefill and decode allocate nothing. Threads: the
 * kernels' OpenMP (bg_set_num_threads); attention spreads (position, head)
 * pairs over them. One sequence per runtime; not thread-safe.
 */
#ifndef BG_INFER_LM_H
#define BG_INFER_LM_H

#include "format/format.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bg_lm_runtime bg_lm_runtime;   /* opaque */

/* The sizes an export holds (its "lm" metadata; the training side's
 * bg_lm_config, which the runtime does not link). */
typedef struct bg_lm_hparams {
    int64_t vocab, d_model, n_layers, n_heads, d_ff, ctx;
    float rope_theta, norm_eps;
} bg_lm_hparams;

typedef struct bg_lm_runtime_opts {
    int64_t n_ctx;   /* positions the cache holds: 1 .. the model's context; 0 = the context */
} bg_lm_runtime_opts;

/* Loads a language-model export. Checks the format, version and "lm"
 * metadata (architecture "bitnet", sizes within limits, heads dividing the
 * width into even head sizes), every tensor's name, dtype and shape, the
 * packed codes (no code 3), the scales (in [1e-30, 1e30]) and float values
 * (finite, |v| <= 1e30), that every tensor of the file is read, and that
 * opts->n_ctx is within the context. On failure *out is NULL and
 * bg_last_error() says why in one sentence, e.g.
 * "lm_load: m.bgx: missing tensor blk.1.ffn_up.weight",
 * "lm_load: m.bgx: blk.0.attn_q.weight is u8 [64,8], want u8 [64,16]",
 * "lm_load: m.bgx: architecture \"llama\" is not bitnet",
 * "lm_load: m.bgx: a cache of 512 positions is longer than the context of 128",
 * "lm_load: m.bgx: not a language model (an export of a layer stack: use bg_infer_load)". */
bg_status bg_lm_load(const char *path, const bg_lm_runtime_opts *opts, bg_lm_runtime **out);
/* NULL is a no-op. */
void bg_lm_free(bg_lm_runtime *lm);

/* The model's sizes (vocab, d_model, ... ctx as trained). */
bg_lm_hparams bg_lm_runtime_hparams(const bg_lm_runtime *lm);
/* "t2" (ternary projections on the integer kernels) or "f32". */
const char *bg_lm_runtime_projections(const bg_lm_runtime *lm);
/* Positions in the cache, and how many it holds. */
int64_t bg_lm_n_past(const bg_lm_runtime *lm);
int64_t bg_lm_n_ctx(const bg_lm_runtime *lm);
/* Empties the cache: the next prefill starts a new sequence at position 0. */
void bg_lm_reset(bg_lm_runtime *lm);

/* Runs tokens[n] at the next n positions and appends them to the cache.
 * logits (may be NULL) receives the next-token logits of the last position
 * ([vocab]) or, with all_positions, of every one ([n, vocab]). No
 * allocation. BG_ERR_ARG, nothing changed, for n < 1, a token outside the
 * vocabulary ("lm_prefill: token 3 is 300, outside the vocabulary of 256")
 * or a cache that cannot take n more ("lm_prefill: the cache holds 128
 * positions: 120 used + 10 new do not fit (bg_lm_reset starts over)"). */
bg_status bg_lm_prefill(bg_lm_runtime *lm, const int32_t *tokens, int64_t n, float *logits, bool all_positions);
/* One token: bg_lm_prefill(lm, &token, 1, logits, false). */
bg_status bg_lm_decode(bg_lm_runtime *lm, int32_t token, float *logits);

#ifdef __cplusplus
}
#endif
#endif /* BG_INFER_LM_H */
