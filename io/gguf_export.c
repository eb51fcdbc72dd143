/* gguf_export.c — bg_export_gguf: a TransformerLM (layers/lm.c) as a GGUF
 * file that llama.cpp runs with its `bitnet` graph: the architecture keys,
 * a byte vocabulary, the embedding and norms in f32, the projections in
 * TQ2_0, TQ1_0, F16 or F32 (doc/export-format.md "GGUF" is the contract).
 * Calls layers/ (the module tree, qlayer states), quant/ (bg_quantize for
 * the ternary codes, as io/export.c does) and format/gguf.c (the writer). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/gguf.h"
#include "io/export_internal.h"
#include "io/io.h"
#include "qat/qat.h"

#define OP "gguf_export"
/* The largest finite half, and the smallest normal one. */
#define F16_MAX 65504.0f
#define F16_MIN_NORMAL 6.103515625e-05f

// ---------------------------------------------------------------------------
// the vocabulary: bitgrad's byte ids 0..255 are llama.cpp's ids 0..255
//
// A SentencePiece ("llama") vocabulary whose token i < 256 is the byte i:
// "<0xII>" of type byte, except the space 0x20, which is SentencePiece's
// space U+2581 as a normal token. llama.cpp's SentencePiece tokenizer turns
// every space of a text into U+2581 and looks that up, and falls back to
// the "<0xII>" tokens for every other character it has no token for (all of
// them here), so a text becomes exactly its UTF-8 bytes, as bitgrad's
// tokenizer makes it (io/text.h); with U+2581 as a token of its own after
// the bytes, every space would become that token instead of 0x20. Then the
// specials llama.cpp's loader wants, whose embedding rows are zero.

enum { TOK_UNK = 256, TOK_BOS, TOK_EOS, N_TOKENS };
/* llama.cpp's token types (llama_token_type). */
enum { TYPE_NORMAL = 1, TYPE_UNKNOWN = 2, TYPE_CONTROL = 3, TYPE_BYTE = 6 };

typedef struct gexp {
    bg_gguf_writer *w;
    bg_export_bufs bufs;
    bg_ctx *ctx;
    bg_gguf_type type;
    const char *tname;   /* the tensor being encoded, for messages ("blk.0.attn_q") */
    bg_lm_config c;
} gexp;

static bg_status fail(gexp *e, bg_status s, const char *fmt, ...) BG_PRINTF(3, 4);
static bg_status fail(gexp *e, bg_status s, const char *fmt, ...) {
    char msg[BG_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return bg_set_error(s, OP ": %s: %s", e->tname ? e->tname : "?", msg);
}

static void *own(gexp *e, size_t n) { return bg_export_own(&e->bufs, n); }

static bg_status nomem(void) { return bg_set_error(BG_ERR_NOMEM, OP ": out of memory"); }

/* The key-values of the tokenizer: 256 byte tokens, then the specials; no
 * BOS / EOS added and no space prefixed to a text (bitgrad trains on raw
 * bytes). */
static bg_status put_vocab(gexp *e) {
    static char bytes[256][8];
    const char *tokens[N_TOKENS];
    float scores[N_TOKENS];
    int32_t types[N_TOKENS];
    for (int i = 0; i < 256; i++) {
        snprintf(bytes[i], sizeof bytes[i], "<0x%02X>", i);
        tokens[i] = bytes[i];
        types[i] = TYPE_BYTE;
    }
    tokens[TOK_UNK] = "<unk>", types[TOK_UNK] = TYPE_UNKNOWN;
    tokens[TOK_BOS] = "<s>", types[TOK_BOS] = TYPE_CONTROL;
    tokens[TOK_EOS] = "</s>", types[TOK_EOS] = TYPE_CONTROL;
    tokens[0x20] = "\xe2\x96\x81", types[0x20] = TYPE_NORMAL;   // U+2581, SentencePiece's space
    for (int i = 0; i < N_TOKENS; i++) scores[i] = 0.0f;
    bg_gguf_writer *w = e->w;
    if (bg_gguf_writer_kv_str(w, "tokenizer.ggml.model", "llama") != BG_OK ||
        bg_gguf_writer_kv_strs(w, "tokenizer.ggml.tokens", tokens, N_TOKENS) != BG_OK ||
        bg_gguf_writer_kv_f32s(w, "tokenizer.ggml.scores", scores, N_TOKENS) != BG_OK ||
        bg_gguf_writer_kv_i32s(w, "tokenizer.ggml.token_type", types, N_TOKENS) != BG_OK ||
        bg_gguf_writer_kv_u32(w, "tokenizer.ggml.bos_token_id", TOK_BOS) != BG_OK ||
        bg_gguf_writer_kv_u32(w, "tokenizer.ggml.eos_token_id", TOK_EOS) != BG_OK ||
        bg_gguf_writer_kv_u32(w, "tokenizer.ggml.unknown_token_id", TOK_UNK) != BG_OK ||
        bg_gguf_writer_kv_bool(w, "tokenizer.ggml.add_bos_token", false) != BG_OK ||
        bg_gguf_writer_kv_bool(w, "tokenizer.ggml.add_eos_token", false) != BG_OK ||
        bg_gguf_writer_kv_bool(w, "tokenizer.ggml.add_space_prefix", false) != BG_OK)
        return bg_last_status();
    return BG_OK;
}

/* llama_ftype of the projections' type. */
static uint32_t file_type(bg_gguf_type t) {
    switch (t) {
    case BG_GGUF_TYPE_F32: return 0;
    case BG_GGUF_TYPE_F16: return 1;
    case BG_GGUF_TYPE_TQ1_0: return 36;
    case BG_GGUF_TYPE_TQ2_0: return 37;
    }
    return 0;
}

/* The file name without folders and extension ("runs/kjv.gguf" -> "kjv"). */
static void model_name(const char *path, char *out, size_t len) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(out, len, "%s", *b ? b : "bitgrad");
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = '\0';
}

static bg_status put_keys(gexp *e, const char *path) {
    const bg_lm_config *c = &e->c;
    char name[128];
    model_name(path, name, sizeof name);
    bg_gguf_writer *w = e->w;
    if (bg_gguf_writer_kv_str(w, "general.architecture", "bitnet") != BG_OK ||
        bg_gguf_writer_kv_str(w, "general.name", name) != BG_OK ||
        bg_gguf_writer_kv_u32(w, "general.file_type", file_type(e->type)) != BG_OK ||
        bg_gguf_writer_kv_u32(w, "general.alignment", BG_GGUF_ALIGNMENT) != BG_OK ||
        (bg_gguf_type_block(e->type) > 1 && bg_gguf_writer_kv_u32(w, "general.quantization_version", 2) != BG_OK) ||
        bg_gguf_writer_kv_u32(w, "bitnet.context_length", (uint32_t)c->ctx) != BG_OK ||
        bg_gguf_writer_kv_u32(w, "bitnet.embedding_length", (uint32_t)c->d_model) != BG_OK ||
        bg_gguf_writer_kv_u32(w, "bitnet.block_count", (uint32_t)c->n_layers) != BG_OK ||
        bg_gguf_writer_kv_u32(w, "bitnet.feed_forward_length", (uint32_t)c->d_ff) != BG_OK ||
        bg_gguf_writer_kv_u32(w, "bitnet.attention.head_count", (uint32_t)c->n_heads) != BG_OK ||
        bg_gguf_writer_kv_u32(w, "bitnet.attention.head_count_kv", (uint32_t)c->n_heads) != BG_OK ||
        bg_gguf_writer_kv_f32(w, "bitnet.attention.layer_norm_rms_epsilon", c->norm_eps) != BG_OK ||
        bg_gguf_writer_kv_u32(w, "bitnet.rope.dimension_count", (uint32_t)(c->d_model / c->n_heads)) != BG_OK ||
        bg_gguf_writer_kv_f32(w, "bitnet.rope.freq_base", c->rope_theta) != BG_OK ||
        bg_gguf_writer_kv_u32(w, "bitnet.vocab_size", N_TOKENS) != BG_OK)
        return bg_last_status();
    return put_vocab(e);
}

// ---------------------------------------------------------------------------
// tensors

/* Every element of v is finite with |v| <= limit (hint ends the message). */
static bg_status check_values(gexp *e, const char *what, const float *v, int64_t n, float limit, const char *hint) {
    for (int64_t j = 0; j < n; j++) {
        if (!isfinite(v[j]))
            return fail(e, BG_ERR_NAN, "%s has a NaN or Inf at index %lld (value %g)", what, (long long)j, (double)v[j]);
        if (fabsf(v[j]) > limit)
            return fail(e, BG_ERR_ARG, "%s holds %g at index %lld, beyond %g%s", what, (double)v[j], (long long)j,
                        (double)limit, hint);
    }
    return BG_OK;
}

/* "<tname>.weight", dims innermost first. */
static bg_status add(gexp *e, int n_dims, const int64_t *dims, bg_gguf_type type, const void *data) {
    char name[BG_GGUF_NAME_MAX + 1];
    snprintf(name, sizeof name, "%s.weight", e->tname);
    return bg_gguf_writer_tensor(e->w, name, n_dims, dims, type, data);
}

/* A norm's gain [d], f32 as it is. */
static bg_status put_norm(gexp *e, const bg_module *m) {
    const bg_tensor *g = m ? bg_module_find_param(m, "weight") : NULL;
    if (!g || g->ndim != 1) return fail(e, BG_ERR_ARG, "missing (not a TransformerLM built by bg_lm_new?)");
    bg_status s = check_values(e, "the gain", g->data, g->shape[0], BG_EXPORT_VALUE_MAX, "");
    return s == BG_OK ? add(e, 1, (int64_t[]){g->shape[0]}, BG_GGUF_TYPE_F32, g->data) : s;
}

/* The token embedding [vocab, d] with zero rows for the specials' ids. */
static bg_status put_embedding(gexp *e, const bg_module *m) {
    const bg_tensor *E = m ? bg_module_find_param(m, "weight") : NULL;
    int64_t V = e->c.vocab, d = e->c.d_model;
    if (!E || E->ndim != 2 || E->shape[0] != V || E->shape[1] != d)
        return fail(e, BG_ERR_ARG, "missing (not a TransformerLM built by bg_lm_new?)");
    bg_status s = check_values(e, "the embedding", E->data, V * d, BG_EXPORT_VALUE_MAX, "");
    if (s != BG_OK) return s;
    float *rows = own(e, sizeof(float) * (size_t)(N_TOKENS * d));
    if (!rows) return nomem();
    memcpy(rows, E->data, sizeof(float) * (size_t)(V * d));
    return add(e, 2, (int64_t[]){d, N_TOKENS}, BG_GGUF_TYPE_F32, rows);
}

/* "d_model is 64" / "d_ff is 192": the size a projection's rows have. */
static const char *row_size_name(const bg_lm_config *c, int64_t k) {
    return k == c->d_ff && k != c->d_model ? "d_ff" : "d_model";
}

/* A float Linear's weight [out, in] as F32 or F16; the TQ types refuse it. */
static bg_status put_float_projection(gexp *e, const bg_tensor *W) {
    int64_t out = W->shape[0], k = W->shape[1], n = out * k;
    int64_t dims[2] = {k, out};
    if (bg_gguf_type_block(e->type) > 1)
        return fail(e, BG_ERR_ARG,
                    "%s stores ternary weights, and this projection is a float Linear (an fp32 model; use --type f16 "
                    "or f32)",
                    bg_gguf_type_name(e->type));
    if (e->type == BG_GGUF_TYPE_F32) {
        bg_status s = check_values(e, "the weight", W->data, n, BG_EXPORT_VALUE_MAX, "");
        return s == BG_OK ? add(e, 2, dims, BG_GGUF_TYPE_F32, W->data) : s;
    }
    bg_status s = check_values(e, "the weight", W->data, n, F16_MAX, ", the largest half (use --type f32)");
    if (s != BG_OK) return s;
    uint16_t *h = own(e, sizeof(uint16_t) * (size_t)n);
    if (!h) return nomem();
    bg_f32_to_f16_row(h, W->data, n);
    return add(e, 2, dims, BG_GGUF_TYPE_F16, h);
}

/* A BitLinear's ternary codes [out, k] and scale, in the file's type. */
static bg_status put_ternary_projection(gexp *e, const int8_t *codes, int64_t out, int64_t k, float scale) {
    int64_t dims[2] = {k, out}, n = out * k;
    bg_gguf_type t = e->type;
    const char *tn = bg_gguf_type_name(t);
    if (t != BG_GGUF_TYPE_F32 && !(scale >= F16_MIN_NORMAL && scale <= F16_MAX))
        return fail(e, BG_ERR_ARG, "the weight scale %g is outside the normal halves [%g, %g] that %s stores it in "
                    "(use --type f32)", (double)scale, (double)F16_MIN_NORMAL, (double)F16_MAX, tn);
    if (t == BG_GGUF_TYPE_F32 || t == BG_GGUF_TYPE_F16) {
        bool half = t == BG_GGUF_TYPE_F16;
        void *buf = own(e, (half ? sizeof(uint16_t) : sizeof(float)) * (size_t)n);
        if (!buf) return nomem();
        uint16_t hs[3] = {bg_f32_to_f16(-scale), 0, bg_f32_to_f16(scale)};
        for (int64_t j = 0; j < n; j++) {
            if (half) ((uint16_t *)buf)[j] = hs[codes[j] + 1];
            else ((float *)buf)[j] = (float)codes[j] * scale;
        }
        return add(e, 2, dims, t, buf);
    }
    size_t rb = bg_gguf_row_bytes(t, k);
    if (rb == 0)
        return fail(e, BG_ERR_ARG, "%s needs rows that are multiples of %d elements; %s is %lld (use --type f16 or f32)",
                    tn, BG_GGUF_QK_K, row_size_name(&e->c, k), (long long)k);
    uint8_t *q = own(e, rb * (size_t)out);
    if (!q) return nomem();
    for (int64_t r = 0; r < out; r++) {
        if (t == BG_GGUF_TYPE_TQ2_0) bg_gguf_pack_tq2_0(q + (size_t)r * rb, codes + r * k, k, scale);
        else bg_gguf_pack_tq1_0(q + (size_t)r * rb, codes + r * k, k, scale);
    }
    return add(e, 2, dims, t, q);
}

/* A projection: a float Linear, or a BitLinear of BitNet b1.58 (ternary
 * per-tensor absmean weights, int8 per-token absmax activations, no norm of
 * its own) whose codes are those of the eval-mode forward (observer frozen,
 * as io/export.c's export_weight). Anything else has no `bitnet` form. */
static bg_status put_projection(gexp *e, const bg_module *p) {
    if (!p) return fail(e, BG_ERR_ARG, "missing (not a TransformerLM built by bg_lm_new?)");
    for (int i = 0; i < bg_module_param_count(p); i++) {
        const bg_tensor *t = bg_module_param(p, i);
        bg_status s = check_values(e, bg_module_param_name(p, i), t->data, bg_numel(t), INFINITY, "");
        if (s != BG_OK) return s;
    }
    if (bg_module_type_of(p) == &bg_linear_type) {
        const bg_tensor *W = bg_module_find_param(p, "weight");
        if (!W || W->ndim != 2) return fail(e, BG_ERR_ARG, "has no [out, in] weight");
        return put_float_projection(e, W);
    }
    bg_quant_state *ws = bg_qlayer_weight_state(p);
    char ws_str[BG_QUANT_SPEC_STR_MAX];
    if (!bg_export_bitnet_projection(p, ws_str, sizeof ws_str)) {
        return fail(e, BG_ERR_ARG,
                    "a %s with weights %s: llama.cpp's bitnet graph runs ternary BitLinears (int8 per-token "
                    "activations) or float Linears (finish the schedule at ternary)",
                    bg_module_kind(p), ws_str);
    }
    const bg_tensor *W = bg_qlayer_weight(p);
    int64_t out = W->shape[0], k = W->shape[1];
    if (bg_gguf_type_block(e->type) > 1 && k % BG_GGUF_QK_K != 0)   // before the work of quantizing
        return fail(e, BG_ERR_ARG, "%s needs rows that are multiples of %d elements; %s is %lld (use --type f16 or f32)",
                    bg_gguf_type_name(e->type), BG_GGUF_QK_K, row_size_name(&e->c, k), (long long)k);
    bool obs = bg_quant_state_observer_enabled(ws);
    bg_quant_state_set_observer(ws, false);
    bg_tensor *codes = NULL;
    bg_quant_params qp;
    bg_ctx_reset(e->ctx);
    bg_status s = bg_quantize(e->ctx, bg_quant_state_spec(ws), ws, W, &codes, &qp);
    bg_quant_state_set_observer(ws, obs);
    if (s != BG_OK) return fail(e, s, "weight quantizer: %s", bg_ctx_error(e->ctx));
    if (qp.channels != 1 || codes->dtype != BG_DTYPE_I8 || !bg_is_contiguous(codes))
        return fail(e, BG_ERR_STATE, "the weight quantizer gave %lld scales, want one", (long long)qp.channels);
    float scale = qp.scale[0];
    if (!(scale >= BG_EXPORT_SCALE_MIN && scale <= BG_EXPORT_SCALE_MAX))
        return fail(e, BG_ERR_ARG, "the weight scale %g is outside [%g, %g]", (double)scale,
                    (double)BG_EXPORT_SCALE_MIN, (double)BG_EXPORT_SCALE_MAX);
    return put_ternary_projection(e, codes->data, out, k, scale);
}

static const char *const NORMS[] = {"attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm"};
static const char *const PROJECTIONS[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};

static bg_status put_block(gexp *e, const bg_module *b, int64_t i) {
    char name[64];
    e->tname = name;
    bg_status s = BG_OK;
    for (size_t k = 0; k < sizeof NORMS / sizeof *NORMS && s == BG_OK; k++) {
        snprintf(name, sizeof name, "blk.%lld.%s", (long long)i, NORMS[k]);
        s = put_norm(e, bg_module_find_child(b, NORMS[k]));
    }
    for (size_t k = 0; k < sizeof PROJECTIONS / sizeof *PROJECTIONS && s == BG_OK; k++) {
        snprintf(name, sizeof name, "blk.%lld.%s", (long long)i, PROJECTIONS[k]);
        s = put_projection(e, bg_module_find_child(b, PROJECTIONS[k]));
    }
    return s;
}

static bg_status export_gguf(gexp *e, const bg_module *lm, const char *path) {
    if (bg_module_type_of(lm) != &bg_transformer_lm_type)
        return bg_set_error(BG_ERR_ARG, OP ": the model is a %s, not a TransformerLM (GGUF holds language models)",
                            bg_module_kind(lm));
    bg_status s = bg_lm_config_of(lm, &e->c);
    if (s != BG_OK) return s;
    if (e->c.vocab != 256)
        return bg_set_error(BG_ERR_ARG, OP ": the vocabulary has %lld tokens; the GGUF byte vocabulary holds a "
                            "byte-level model's 256", (long long)e->c.vocab);
    const bg_module *blk = bg_module_find_child(lm, "blk");
    if (!blk || bg_module_num_children(blk) != e->c.n_layers)
        return bg_set_error(BG_ERR_ARG, OP ": the TransformerLM has no %lld blocks under \"blk\"",
                            (long long)e->c.n_layers);
    e->w = bg_gguf_writer_new();
    e->ctx = bg_ctx_new(0);
    if (!e->w || !e->ctx) return nomem();
    if ((s = put_keys(e, path)) != BG_OK) return s;
    e->tname = "token_embd";
    if ((s = put_embedding(e, bg_module_find_child(lm, "token_embd"))) != BG_OK) return s;
    e->tname = "output_norm";
    if ((s = put_norm(e, bg_module_find_child(lm, "output_norm"))) != BG_OK) return s;
    for (int64_t i = 0; i < e->c.n_layers && s == BG_OK; i++) s = put_block(e, bg_module_child(blk, (int)i), i);
    e->tname = NULL;
    return s == BG_OK ? bg_gguf_writer_save(e->w, path) : s;
}

bg_status bg_export_gguf(const bg_module *lm, const char *path, bg_gguf_type type) {
    if (!lm || !path) return bg_set_error(BG_ERR_ARG, OP ": %s is NULL", !lm ? "model" : "path");
    if (!bg_gguf_type_name(type))
        return bg_set_error(BG_ERR_ARG, OP ": type %d is not one of F32 (0), F16 (1), TQ1_0 (34), TQ2_0 (35)", (int)type);
    gexp e = {.type = type};
    bg_status s = export_gguf(&e, lm, path);
    bg_gguf_writer_free(e.w);
    bg_ctx_free(e.ctx);
    bg_export_bufs_free(&e.bufs);
    return s;
}
