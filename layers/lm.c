/* lm.c — the BitNet transformer language model as two registered kinds:
 * TransformerBlock (llama.cpp's `bitnet` block: weighted RMSNorm before every
 * projection, NEOX RoPE, causal attention, SwiGLU, residuals) and
 * TransformerLM (token embedding tied with the output head, the blocks, the
 * final RMSNorm). Both are containers with named children, so descriptions,
 * checkpoints, schedules (glob patterns over "blk.*.attn_q.weight_quant")
 * and bg_bitnet_model treat them as any other tree. Calls autograd/ and the
 * layers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/layers.h"
#include "layers/layers_internal.h"
#include "quant/quant.h"

typedef struct block_state {
    int64_t n_heads;
    float rope_theta;
    bool recompute;   /* activation checkpointing (bg_lm_set_recompute); not saved */
} block_state;

typedef struct lm_state {
    bg_lm_config cfg;
} lm_state;

static bg_lm_config with_defaults(const bg_lm_config *c);

static bg_module *child(const bg_module *m, const char *name) { return bg_module_find_child(m, name); }

static bg_tensor *run(bg_ctx *ctx, const bg_module *m, const char *name, bg_tensor *x) {
    bg_module *c = child(m, name);
    if (!c) return bg_ctx_fail(ctx, BG_ERR_STATE, "%s: no child named %s", bg_module_kind(m), name);
    return x ? bg_module_forward(ctx, c, x) : NULL;
}

// ---------------------------------------------------------------------------
// the block

/* [B,T,d] -> [B,H,T,hd]: the heads as a batch dimension for RoPE and the
 * attention products. */
static bg_tensor *split_heads(bg_ctx *ctx, bg_tensor *x, int64_t H) {
    if (!x) return NULL;
    int64_t B = x->shape[0], T = x->shape[1], d = x->shape[2];
    bg_tensor *r = bg_reshape(ctx, x, 4, (int64_t[]){B, T, H, d / H});
    return r ? bg_permute(ctx, r, (const int[]){0, 2, 1, 3}) : NULL;
}

/* [B,H,T,hd] -> [B,T,d]. */
static bg_tensor *merge_heads(bg_ctx *ctx, bg_tensor *x) {
    if (!x) return NULL;
    int64_t B = x->shape[0], H = x->shape[1], T = x->shape[2], hd = x->shape[3];
    bg_tensor *p = bg_permute(ctx, x, (const int[]){0, 2, 1, 3});
    return p ? bg_reshape(ctx, p, 3, (int64_t[]){B, T, H * hd}) : NULL;
}

static bg_tensor *block_body(bg_ctx *ctx, void *user, bg_tensor *x) {
    bg_module *m = user;
    const block_state *s = bg_module_state(m);
    // attention
    bg_tensor *h = run(ctx, m, "attn_norm", x);
    bg_tensor *q = split_heads(ctx, run(ctx, m, "attn_q", h), s->n_heads);
    bg_tensor *k = split_heads(ctx, run(ctx, m, "attn_k", h), s->n_heads);
    bg_tensor *v = split_heads(ctx, run(ctx, m, "attn_v", h), s->n_heads);
    q = q ? bg_rope(ctx, q, 0, s->rope_theta) : NULL;
    k = k ? bg_rope(ctx, k, 0, s->rope_theta) : NULL;
    bg_tensor *y = q && k && v ? merge_heads(ctx, bg_attention(ctx, q, k, v, true)) : NULL;
    y = run(ctx, m, "attn_output", run(ctx, m, "attn_sub_norm", y));
    x = y ? bg_add(ctx, x, y) : NULL;
    // SwiGLU feed-forward
    bg_tensor *f = run(ctx, m, "ffn_norm", x);
    bg_tensor *g = run(ctx, m, "ffn_gate", f), *u = run(ctx, m, "ffn_up", f);
    bg_tensor *gu = g && u ? bg_mul(ctx, bg_silu(ctx, g), u) : NULL;
    bg_tensor *down = run(ctx, m, "ffn_down", run(ctx, m, "ffn_sub_norm", gu));
    return down ? bg_add(ctx, x, down) : NULL;
}

// --- recomputed blocks -------------------------------------------------------------
/* What a block's forward updates besides its output: its quantizers'
 * observed ranges, scales and call counts (the stochastic rounding stream).
 * Copied before the first run and put back before the recompute, so the
 * backward's run sees what the forward's saw. */
typedef struct quant_snapshot {
    int n;
    struct bg_quant_state **states;
    float **bufs;   /* per state: rmin, rmax, scale, zero point, P each */
    bg_quant_state_flags *flags;
} quant_snapshot;

static void *snapshot_quantizers(bg_ctx *ctx, void *user) {
    const bg_module *m = user;
    const int n = bg_model_quantizers(m, NULL, NULL, NULL, NULL, 0);
    quant_snapshot *q = bg_ctx_alloc(ctx, sizeof *q);
    if (!q) return NULL;
    q->n = n;
    q->states = bg_ctx_alloc(ctx, sizeof *q->states * (size_t)(n ? n : 1));
    q->bufs = bg_ctx_alloc(ctx, sizeof *q->bufs * (size_t)(n ? n : 1));
    q->flags = bg_ctx_alloc(ctx, sizeof *q->flags * (size_t)(n ? n : 1));
    if (!q->states || !q->bufs || !q->flags) return NULL;
    bg_model_quantizers(m, q->states, NULL, NULL, NULL, n);
    for (int i = 0; i < n; i++) {
        const int64_t P = bg_quant_state_num_scales(q->states[i]);
        float *b = q->bufs[i] = bg_ctx_alloc(ctx, sizeof(float) * (size_t)(4 * P + 1));
        if (!b) return NULL;
        bg_quant_state_get_buffers(q->states[i], b, b + P, b + 2 * P, b + 3 * P, &q->flags[i]);
    }
    return q;
}

static void restore_quantizers(void *user, void *saved) {
    (void)user;
    const quant_snapshot *q = saved;
    for (int i = 0; q && i < q->n; i++) {
        const int64_t P = bg_quant_state_num_scales(q->states[i]);
        const float *b = q->bufs[i];
        bg_quant_state_set_buffers(q->states[i], b, b + P, b + 2 * P, b + 3 * P, &q->flags[i]);
    }
}

static bg_tensor *block_fwd(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    const block_state *s = bg_module_state(m);
    char a[BG_SHAPE_STR_MAX];
    if (x->ndim != 3) return bg_ctx_fail(ctx, BG_ERR_SHAPE, "TransformerBlock: x must be [B,T,d], not %s",
                                         bg_shape_str(x, a, sizeof a));
    if (!s->recompute) return block_body(ctx, m, x);
    const bg_recompute_fn f = {.forward = block_body, .save = snapshot_quantizers, .restore = restore_quantizers,
                               .user = m};
    return bg_recompute(ctx, &f, x);
}

static int block_describe(const bg_module *m, char *buf, size_t len) {
    const block_state *s = bg_module_state(m);
    return snprintf(buf, len, "TransformerBlock(n_heads=%lld, rope_theta=%g)", (long long)s->n_heads,
                    (double)s->rope_theta);
}

static bg_status block_save(const bg_module *m, struct json_t *hp) {
    const block_state *s = bg_module_state(m);
    bg_status st = bg_hparam_set_int(hp, "n_heads", s->n_heads);
    return st == BG_OK ? bg_hparam_set_float(hp, "rope_theta", s->rope_theta) : st;
}

static bg_module *block_shell(int64_t n_heads, float rope_theta) {
    block_state *s = malloc(sizeof *s);
    if (!s) {
        bg_set_error(BG_ERR_NOMEM, "TransformerBlock: out of memory");
        return NULL;
    }
    *s = (block_state){.n_heads = n_heads, .rope_theta = rope_theta};
    return bg_module_new(&bg_transformer_block_type, s);
}

static bg_module *block_load(const struct json_t *hp, bg_rng *rng) {
    (void)rng;
    int64_t heads;
    float theta;
    if (bg_hparam_get_int(hp, "n_heads", 1, BG_HPARAM_MAX_DIM, &heads) != BG_OK ||
        bg_hparam_get_float(hp, "rope_theta", &theta) != BG_OK)
        return NULL;
    if (!(theta > 1.0f)) {
        bg_set_error(BG_ERR_FORMAT, "field \"rope_theta\" must be > 1: %g", (double)theta);
        return NULL;
    }
    return block_shell(heads, theta);
}

const bg_module_type bg_transformer_block_type = {
    .kind = "TransformerBlock", .forward = block_fwd, .describe = block_describe, .free_state = free,
    .save_hparams = block_save, .load_hparams = block_load, .prenormed_linears = true,
};

/* The children, in llama.cpp's tensor order (their names are GGUF's). */
static bg_module *block_new(const bg_lm_config *c, bg_rng *rng) {
    bg_module *m = block_shell(c->n_heads, c->rope_theta);
    if (!m) return NULL;
    const int64_t d = c->d_model, f = c->d_ff;
    struct {
        const char *name;
        bg_module *mod;
    } kids[] = {
        {"attn_norm", bg_rmsnorm_new(d, c->norm_eps)},      {"attn_q", bg_linear_new(d, d, false, rng)},
        {"attn_k", bg_linear_new(d, d, false, rng)},        {"attn_v", bg_linear_new(d, d, false, rng)},
        {"attn_sub_norm", bg_rmsnorm_new(d, c->norm_eps)},  {"attn_output", bg_linear_new(d, d, false, rng)},
        {"ffn_norm", bg_rmsnorm_new(d, c->norm_eps)},       {"ffn_gate", bg_linear_new(d, f, false, rng)},
        {"ffn_up", bg_linear_new(d, f, false, rng)},        {"ffn_sub_norm", bg_rmsnorm_new(f, c->norm_eps)},
        {"ffn_down", bg_linear_new(f, d, false, rng)},
    };
    const int n = (int)(sizeof kids / sizeof kids[0]);
    bool ok = true;
    for (int i = 0; i < n; i++) {
        // add_child frees a child it refuses; the remaining ones are freed here.
        if (ok && (!kids[i].mod || bg_module_add_child(m, kids[i].name, kids[i].mod) != BG_OK)) ok = false;
        else if (!ok) bg_module_free(kids[i].mod);
    }
    if (!ok || bg_module_finalize(m) != BG_OK) {
        bg_module_free(m);
        return NULL;
    }
    return m;
}

/* The constructors' common start: an rng, and config with its defaults
 * filled in and checked into *c; false with the error set otherwise. */
static bool constructor_config(const char *who, const bg_lm_config *config, const bg_rng *rng, bg_lm_config *c) {
    if (!rng) {
        bg_set_error(BG_ERR_ARG, "%s: rng is NULL", who);
        return false;
    }
    if (!config) return bg_lm_config_check(NULL) == BG_OK;   // sets the error
    *c = with_defaults(config);
    return bg_lm_config_check(c) == BG_OK;
}

bg_module *bg_transformer_block_new(const bg_lm_config *config, bg_rng *rng) {
    bg_lm_config c;
    return constructor_config("transformer_block_new", config, rng, &c) ? block_new(&c, rng) : NULL;
}

// ---------------------------------------------------------------------------
// the language model

static bg_tensor *lm_fwd(bg_ctx *ctx, bg_module *m, bg_tensor *ids) {
    const lm_state *s = bg_module_state(m);
    char a[BG_SHAPE_STR_MAX];
    if (ids->dtype != BG_DTYPE_I32 || ids->ndim != 2)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "TransformerLM: the input must be i32 token ids [B,T], not %s %s",
                           bg_dtype_name(ids->dtype), bg_shape_str(ids, a, sizeof a));
    if (ids->shape[1] > s->cfg.ctx)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "TransformerLM: %lld tokens are more than the context of %lld",
                           (long long)ids->shape[1], (long long)s->cfg.ctx);
    bg_module *embd = child(m, "token_embd");
    bg_tensor *x = run(ctx, m, "token_embd", ids);
    x = run(ctx, m, "output_norm", run(ctx, m, "blk", x));
    // The head is the embedding itself (tied): its gradient gathers both uses.
    return x && embd ? bg_linear(ctx, x, bg_module_find_param(embd, "weight"), NULL) : NULL;
}

static int lm_describe(const bg_module *m, char *buf, size_t len) {
    const bg_lm_config *c = &((const lm_state *)bg_module_state(m))->cfg;
    return snprintf(buf, len,
                    "TransformerLM(vocab=%lld, d_model=%lld, n_layers=%lld, n_heads=%lld, d_ff=%lld, ctx=%lld)",
                    (long long)c->vocab, (long long)c->d_model, (long long)c->n_layers, (long long)c->n_heads,
                    (long long)c->d_ff, (long long)c->ctx);
}

static bg_status lm_save(const bg_module *m, struct json_t *hp) {
    const bg_lm_config *c = &((const lm_state *)bg_module_state(m))->cfg;
    bg_status s = bg_hparam_set_int(hp, "vocab", c->vocab);
    if (s == BG_OK) s = bg_hparam_set_int(hp, "d_model", c->d_model);
    if (s == BG_OK) s = bg_hparam_set_int(hp, "n_layers", c->n_layers);
    if (s == BG_OK) s = bg_hparam_set_int(hp, "n_heads", c->n_heads);
    if (s == BG_OK) s = bg_hparam_set_int(hp, "d_ff", c->d_ff);
    if (s == BG_OK) s = bg_hparam_set_int(hp, "ctx", c->ctx);
    if (s == BG_OK) s = bg_hparam_set_float(hp, "rope_theta", c->rope_theta);
    if (s == BG_OK) s = bg_hparam_set_float(hp, "norm_eps", c->norm_eps);
    return s;
}

bg_status bg_lm_config_check(const bg_lm_config *c) {
    if (!c) return bg_set_error(BG_ERR_ARG, "lm_config: config is NULL");
    const struct {
        const char *name;
        int64_t v;
    } sizes[] = {{"vocab", c->vocab}, {"d_model", c->d_model}, {"n_layers", c->n_layers},
                 {"n_heads", c->n_heads}, {"d_ff", c->d_ff},   {"ctx", c->ctx}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].v <= 0 || sizes[i].v > BG_HPARAM_MAX_DIM)
            return bg_set_error(BG_ERR_ARG, "lm_config: %s must be in 1..%lld: %lld", sizes[i].name,
                                (long long)BG_HPARAM_MAX_DIM, (long long)sizes[i].v);
    if (c->d_model % c->n_heads)
        return bg_set_error(BG_ERR_ARG, "lm_config: d_model %lld does not divide into %lld heads", (long long)c->d_model,
                            (long long)c->n_heads);
    if ((c->d_model / c->n_heads) % 2)
        return bg_set_error(BG_ERR_ARG, "lm_config: the head size %lld is odd (RoPE rotates pairs)",
                            (long long)(c->d_model / c->n_heads));
    // 0 means the default (10000, 1e-5).
    if (c->rope_theta != 0.0f && (!(c->rope_theta > 1.0f) || !isfinite(c->rope_theta)))
        return bg_set_error(BG_ERR_ARG, "lm_config: rope_theta must be > 1: %g", (double)c->rope_theta);
    if (c->norm_eps != 0.0f && (!(c->norm_eps > 0.0f) || !(c->norm_eps < 1.0f)))
        return bg_set_error(BG_ERR_ARG, "lm_config: norm_eps must be in (0, 1): %g", (double)c->norm_eps);
    return BG_OK;
}

/* The config with its defaults filled in (rope_theta 10000, norm_eps 1e-5). */
static bg_lm_config with_defaults(const bg_lm_config *c) {
    bg_lm_config r = *c;
    if (r.rope_theta == 0.0f) r.rope_theta = 10000.0f;
    if (r.norm_eps == 0.0f) r.norm_eps = 1e-5f;
    return r;
}

static bg_module *lm_shell(const bg_lm_config *c) {
    lm_state *s = malloc(sizeof *s);
    if (!s) {
        bg_set_error(BG_ERR_NOMEM, "TransformerLM: out of memory");
        return NULL;
    }
    s->cfg = *c;
    return bg_module_new(&bg_transformer_lm_type, s);
}

static bg_module *lm_load(const struct json_t *hp, bg_rng *rng) {
    (void)rng;
    bg_lm_config c = {0};
    int64_t *f[] = {&c.vocab, &c.d_model, &c.n_layers, &c.n_heads, &c.d_ff, &c.ctx};
    const char *keys[] = {"vocab", "d_model", "n_layers", "n_heads", "d_ff", "ctx"};
    for (int i = 0; i < 6; i++)
        if (bg_hparam_get_int(hp, keys[i], 1, BG_HPARAM_MAX_DIM, f[i]) != BG_OK) return NULL;
    if (bg_hparam_get_float(hp, "rope_theta", &c.rope_theta) != BG_OK ||
        bg_hparam_get_float(hp, "norm_eps", &c.norm_eps) != BG_OK)
        return NULL;
    if (bg_lm_config_check(&c) != BG_OK) {
        char msg[BG_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", bg_last_error());
        bg_set_error(BG_ERR_FORMAT, "%s", msg);
        return NULL;
    }
    return lm_shell(&c);
}

const bg_module_type bg_transformer_lm_type = {
    .kind = "TransformerLM", .forward = lm_fwd, .describe = lm_describe, .free_state = free,
    .save_hparams = lm_save, .load_hparams = lm_load,
};

bg_module *bg_lm_new(const bg_lm_config *config, bg_rng *rng) {
    bg_lm_config c;
    if (!constructor_config("lm_new", config, rng, &c)) return NULL;
    bg_module *m = lm_shell(&c);
    bg_module **blocks = calloc((size_t)c.n_layers, sizeof *blocks);
    bg_module *embd = bg_embedding_new(c.vocab, c.d_model, rng);
    if (embd) bg_init_normal(bg_module_find_param(embd, "weight"), rng, 0.0f, BG_LM_EMBED_STD);
    for (int64_t i = 0; blocks && i < c.n_layers; i++) blocks[i] = block_new(&c, rng);
    bg_module *blk = blocks ? bg_sequential_new((int)c.n_layers, blocks) : NULL;   // frees the blocks on failure
    bg_module *norm = bg_rmsnorm_new(c.d_model, c.norm_eps);
    free(blocks);
    bool ok = m && embd && blk && norm;
    if (ok) ok = bg_module_add_child(m, "token_embd", embd) == BG_OK;
    else bg_module_free(embd);
    if (ok) ok = bg_module_add_child(m, "blk", blk) == BG_OK;
    else bg_module_free(blk);
    if (ok) ok = bg_module_add_child(m, "output_norm", norm) == BG_OK;
    else bg_module_free(norm);
    if (!ok || bg_module_finalize(m) != BG_OK) {
        bg_module_free(m);
        return NULL;
    }
    return m;
}

bg_status bg_lm_set_recompute(bg_module *m, bool on) {
    if (bg_module_type_of(m) == &bg_transformer_block_type) {
        ((block_state *)bg_module_state(m))->recompute = on;
        return BG_OK;
    }
    if (!m) return bg_set_error(BG_ERR_ARG, "lm_set_recompute: the model is NULL");
    for (int i = 0; i < bg_module_num_children(m); i++) bg_lm_set_recompute(bg_module_child(m, i), on);
    return BG_OK;
}

bg_status bg_lm_config_of(const bg_module *m, bg_lm_config *out) {
    if (bg_module_type_of(m) != &bg_transformer_lm_type)
        return bg_set_error(BG_ERR_ARG, "lm_config_of: not a TransformerLM: %s", m ? bg_module_kind(m) : "(null)");
    *out = ((const lm_state *)bg_module_state(m))->cfg;
    return BG_OK;
}

// ---------------------------------------------------------------------------
// sampling from the training model

bg_status bg_lm_generate(bg_module *lm, const int32_t *prompt, int64_t n_prompt, int64_t n_new,
                         const bg_sample_opts *opts, int32_t *out) {
    bg_lm_config c;
    if (bg_lm_config_of(lm, &c) != BG_OK) return bg_last_status();
    if (!prompt || !out || n_prompt < 1 || n_new < 0)
        return bg_set_error(BG_ERR_ARG, "lm_generate: the prompt needs at least one token and out a buffer");
    if (n_prompt > c.ctx)
        return bg_set_error(BG_ERR_ARG, "lm_generate: the prompt is %lld tokens, longer than the context of %lld",
                            (long long)n_prompt, (long long)c.ctx);
    for (int64_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= c.vocab)
            return bg_set_error(BG_ERR_ARG, "lm_generate: prompt token %lld is %d, outside the vocabulary of %lld",
                                (long long)i, prompt[i], (long long)c.vocab);
    bg_sample_opts o = opts ? *opts : (bg_sample_opts){.temperature = 1.0f};
    bg_rng rng;
    bg_rng_seed(&rng, o.seed);
    int32_t *seq = malloc(sizeof *seq * (size_t)(n_prompt + n_new));
    float *scratch = malloc(sizeof *scratch * (size_t)c.vocab * 2);
    bg_ctx *ctx = bg_ctx_new(0);
    bg_status st = seq && scratch && ctx ? BG_OK : bg_set_error(BG_ERR_NOMEM, "lm_generate: out of memory");
    if (st == BG_OK) memcpy(seq, prompt, sizeof *seq * (size_t)n_prompt);
    bool was_training = bg_module_is_training(lm);
    bg_module_train(lm, false);
    if (ctx) bg_set_grad_enabled(ctx, false);
    // No cache here: each token reruns the last ctx tokens (the runtime keeps one).
    for (int64_t n = n_prompt; st == BG_OK && n < n_prompt + n_new; n++) {
        int64_t T = n < c.ctx ? n : c.ctx;
        bg_tensor *x = bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(1, T), seq + n - T);
        bg_tensor *logits = x ? bg_module_forward(ctx, lm, x) : NULL;
        if (!logits) {
            st = bg_set_error(bg_ctx_status(ctx), "lm_generate: %s", bg_ctx_error(ctx));
            break;
        }
        seq[n] = bg_sample_logits(bg_f32(logits) + (T - 1) * c.vocab, c.vocab, &o, scratch, &rng);
        out[n - n_prompt] = seq[n];
        bg_ctx_reset(ctx);
    }
    bg_module_train(lm, was_training);
    bg_ctx_free(ctx);
    free(scratch);
    free(seq);
    return st;
}
