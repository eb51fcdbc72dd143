/* test_lm_runtime.c — the language-model export and runtime (io/export.c,
 * infer/lm.c) against the training model in eval mode: logits of every
 * position, KV-cache decoding against one prefill, greedy continuations
 * against bg_lm_generate, no allocation per token, and one sentence for
 * each bad input or file. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/test_util.h"

static const bg_lm_config CFG = {.vocab = 256, .d_model = 64, .n_layers = 2, .n_heads = 4, .d_ff = 192, .ctx = 48};
static char dir[] = "/tmp/bg_test_lm_runtime_XXXXXX";

static const char *path_in(const char *name) {
    static char p[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
    return p[k];
}

/* Windows that move by 7 bytes a step. */
static int sliding(int s, int b, void *user) {
    (void)user;
    return 7 * s + 33 * b;
}

/* A model in eval mode whose weights are not their initialisation: a few
 * AdamW steps on a repeating text (so the logits have structure). */
static bg_module *trained_model(bool bitnet) {
    bg_rng rng;
    bg_rng_seed(&rng, 3);
    bg_module *m = bg_lm_new(&CFG, &rng);
    if (!CHECK(m != NULL)) return NULL;
    if (bitnet) CHECK(bg_bitnet_model(m) == BG_OK);
    static const char txt[] = "the quick brown fox jumps over the lazy dog; ";
    TRAIN_LM(m, txt, 45, 2, 32, 15, 3e-3f, sliding, NULL);
    return m;
}

static void text_ids(int32_t *ids, int n) {
    const char *txt = "In the beginning God created the heaven and the earth. ";
    for (int i = 0; i < n; i++) ids[i] = (unsigned char)txt[i % 56];
}

/* The training model's logits [T, V] for ids (eval mode, no grad). */
static bool model_logits(bg_module *m, const int32_t *ids, int T, float *out) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_set_grad_enabled(ctx, false);
    bg_tensor *lg = bg_module_forward(ctx, m, bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(1, T), (void *)ids));
    if (lg) memcpy(out, bg_f32(lg), sizeof(float) * (size_t)T * CFG.vocab);
    bool ok = CHECK_MSG(lg != NULL, "%s", bg_ctx_error(ctx));
    bg_ctx_free(ctx);
    return ok;
}

static int argmax(const float *v, int n) {
    int a = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[a]) a = i;
    return a;
}

static void check_against_training(bool bitnet) {
    const char *kind = bitnet ? "BitNet" : "fp32";
    bg_module *m = trained_model(bitnet);
    const char *file = path_in(bitnet ? "t2.bgx" : "f32.bgx");
    bg_lm_runtime *rt = NULL;
    if (!m || !CHECK_MSG(bg_export(m, file, NULL) == BG_OK, "%s", bg_last_error()) ||
        !CHECK_MSG(bg_lm_load(file, NULL, &rt) == BG_OK, "%s", bg_last_error()))
        goto done;
    CHECK_STR(bg_lm_runtime_projections(rt), bitnet ? "t2" : "f32");
    CHECK(bg_lm_runtime_hparams(rt).d_ff == CFG.d_ff && bg_lm_n_ctx(rt) == CFG.ctx);
    enum { T = 48, V = 256 };
    static int32_t ids[T];
    static float want[T * V], got[T * V], step[V];
    text_ids(ids, T);
    if (!model_logits(m, ids, T, want)) goto done;
    // every position at once
    CHECK(bg_lm_prefill(rt, ids, T, got, true) == BG_OK && bg_lm_n_past(rt) == T);
    double amax = 0;
    for (int i = 0; i < T * V; i++) amax = fmax(amax, fabs((double)want[i]));
    CHECK(bg_test_arrays("runtime logits vs the eval-mode model", got, want, T * V, 1e-5 * amax, 0, __FILE__, __LINE__));
    // the cache: 5 positions, then one token at a time, equal the one prefill
    bg_lm_reset(rt);
    CHECK(bg_lm_prefill(rt, ids, 5, step, false) == BG_OK);
    uint64_t before = bg_alloc_count();
    for (int t = 5; t < T; t++) CHECK(bg_lm_decode(rt, ids[t], step) == BG_OK);
    CHECK_MSG(bg_alloc_count() == before, "%llu allocations in %d decodes",
              (unsigned long long)(bg_alloc_count() - before), T - 5);
    CHECK(bg_test_arrays("decode after prefill vs one prefill", step, got + (T - 1) * V, V, 1e-6 * amax, 0, __FILE__,
                         __LINE__));
    // greedy continuations: the runtime's argmax against bg_lm_generate
    int32_t gen[24], mine[24];
    CHECK(bg_lm_generate(m, ids, 8, 24, &(bg_sample_opts){.temperature = 0}, gen) == BG_OK);
    bg_lm_reset(rt);
    CHECK(bg_lm_prefill(rt, ids, 8, step, false) == BG_OK);
    int same = 0;
    for (int i = 0; i < 24; i++) {
        mine[i] = argmax(step, V);
        same += mine[i] == gen[i];
        if (i + 1 < 24) bg_lm_decode(rt, mine[i], step);
    }
    CHECK_MSG(same == 24, "%s: greedy continuations agree on %d of 24 tokens", kind, same);
    double diff = 0;
    for (int i = 0; i < T * V; i++) diff = fmax(diff, fabs((double)got[i] - (double)want[i]));
    printf("%s runtime: logits within %.2g of the eval-mode model (|logit| <= %.2g), greedy %d/24 equal, 0 "
           "allocations per token\n",
           kind, diff, amax, same);
done:
    bg_lm_free(rt);
    bg_module_free(m);
}

static void check_bad_input(void) {
    bg_lm_runtime *rt = NULL;
    if (!CHECK_MSG(bg_lm_load(path_in("t2.bgx"), &(bg_lm_runtime_opts){.n_ctx = 16}, &rt) == BG_OK, "%s",
                   bg_last_error()))
        return;
    int32_t ids[20];
    text_ids(ids, 20);
    float lg[256];
    CHECK(bg_lm_prefill(rt, ids, 20, lg, false) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "lm_prefill: the cache holds 16 positions: 0 used + 20 new do not fit (bg_lm_reset "
                               "starts over)");
    ids[3] = 300;
    CHECK(bg_lm_prefill(rt, ids, 5, lg, false) == BG_ERR_ARG && bg_lm_n_past(rt) == 0);
    CHECK_STR(bg_last_error(), "lm_prefill: token 3 is 300, outside the vocabulary of 256");
    CHECK(bg_lm_prefill(rt, ids, 0, lg, false) == BG_ERR_ARG);
    bg_lm_free(rt);
    char want[512];
    CHECK(bg_lm_load(path_in("t2.bgx"), &(bg_lm_runtime_opts){.n_ctx = 49}, &rt) == BG_ERR_ARG && !rt);
    snprintf(want, sizeof want, "lm_load: %s: a cache of 49 positions is longer than the context of 48",
             path_in("t2.bgx"));
    CHECK_STR(bg_last_error(), want);
}

/* A copy of src with one tensor left out, one given another shape (its
 * first dim halved) and one metadata key replaced (any may be NULL). */
static bool rewrite(const char *src, const char *dst, const char *drop, const char *shrink, const char *key,
                    const char *value) {
    bg_safetensors *st = NULL;
    if (!CHECK(bg_safetensors_open(src, &st) == BG_OK)) return false;
    bg_safetensors_writer *w = bg_safetensors_writer_new();
    bool ok = w != NULL;
    for (int i = 0; ok && i < bg_safetensors_count(st); i++) {
        const char *name = bg_safetensors_name(st, i);
        bg_tensor v;
        ok = bg_safetensors_get(st, name, &v) == BG_OK;
        if (!ok || (drop && !strcmp(name, drop))) continue;
        if (shrink && !strcmp(name, shrink)) v.shape[0] /= 2;
        ok = bg_safetensors_writer_add(w, name, &v) == BG_OK;
    }
    const char *keys[] = {"format", "version", "lm", "model"};
    for (int i = 0; ok && i < 4; i++) {
        const char *v = key && !strcmp(key, keys[i]) ? value : bg_safetensors_metadata(st, keys[i]);
        if (v) ok = bg_safetensors_writer_meta(w, keys[i], v) == BG_OK;
    }
    ok = ok && bg_safetensors_writer_save(w, dst) == BG_OK;
    bg_safetensors_writer_free(w);
    bg_safetensors_free(st);
    return CHECK_MSG(ok, "rewrite: %s", bg_last_error());
}

static void expect_load_error(const char *file, const char *what) {
    bg_lm_runtime *rt = NULL;
    char want[512];
    snprintf(want, sizeof want, "lm_load: %s: %s", file, what);
    CHECK(bg_lm_load(file, NULL, &rt) != BG_OK && rt == NULL);
    CHECK_STR(bg_last_error(), want);
}

static void check_bad_files(void) {
    const char *good = path_in("t2.bgx"), *bad = path_in("bad.bgx");
    if (rewrite(good, bad, "blk.1.ffn_up.weight", NULL, NULL, NULL))
        expect_load_error(bad, "missing tensor blk.1.ffn_up.weight");
    if (rewrite(good, bad, NULL, "blk.0.attn_q.weight", NULL, NULL))
        expect_load_error(bad, "blk.0.attn_q.weight is u8 [32,32], want u8 [64,32]");
    bg_safetensors *st = NULL;
    CHECK(bg_safetensors_open(good, &st) == BG_OK);
    char lm[1024];
    snprintf(lm, sizeof lm, "%s", st ? bg_safetensors_metadata(st, "lm") : "");
    bg_safetensors_free(st);
    char *at = strstr(lm, "\"bitnet\"");
    if (CHECK(at != NULL)) {
        char other[1100];
        snprintf(other, sizeof other, "%.*s\"llama\"%s", (int)(at - lm), lm, at + 8);
        if (rewrite(good, bad, NULL, NULL, "lm", other)) expect_load_error(bad, "architecture \"llama\" is not bitnet");
    }
    if (rewrite(good, bad, NULL, NULL, "version", "2"))
        expect_load_error(bad, "unsupported export version 2 (this runtime reads version 1)");
    // a layer-stack export, and the other way round
    bg_rng rng;
    bg_rng_seed(&rng, 1);
    bg_module *mlp = bg_sequential_new(1, (bg_module *[]){bg_linear_new(8, 4, true, &rng)});
    const char *stack = path_in("mlp.bgx");
    if (CHECK(mlp && bg_export(mlp, stack, NULL) == BG_OK))
        expect_load_error(stack, "not a language model (an export of a layer stack: use bg_infer_load)");
    bg_module_free(mlp);
    bg_infer_model *im = NULL;
    CHECK(bg_infer_load(good, &im) != BG_OK && !im);
    char want[512];
    snprintf(want, sizeof want, "infer_load: %s: a language model (metadata \"lm\"): load it with bg_lm_load", good);
    CHECK_STR(bg_last_error(), want);
    unlink(bad);
    unlink(stack);
}

/* A schedule's int4 phase has no runtime form: the export says so. */
static void check_export_refusal(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 2);
    bg_module *m = bg_lm_new(&CFG, &rng);
    bg_quant_spec int4;
    CHECK(bg_quant_spec_parse("int4", &int4) == BG_OK);
    bg_quantizer_list *q = m && bg_bitnet_model(m) == BG_OK ? bg_model_quantizer_list(m) : NULL;
    if (CHECK(q != NULL)) CHECK(bg_quant_state_set_spec(q->states[0], &int4) == BG_OK);
    CHECK(bg_export(m, path_in("int4.bgx"), NULL) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "export: layer blk.0.attn_q: a BitLinear with weights int4:minmax: the language-model runtime "
                               "runs ternary BitLinears (int8 per-token activations) or float Linears (finish the "
                               "schedule at ternary)");
    CHECK(access(path_in("int4.bgx"), F_OK) != 0);
    bg_quantizer_list_free(q);
    bg_module_free(m);
}

int main(void) {
    if (!CHECK(mkdtemp(dir) != NULL)) return bg_test_finish();
    check_against_training(true);
    check_against_training(false);
    check_bad_input();
    check_bad_files();
    check_export_refusal();
    unlink(path_in("t2.bgx"));
    unlink(path_in("f32.bgx"));
    rmdir(dir);
    return bg_test_finish();
}
