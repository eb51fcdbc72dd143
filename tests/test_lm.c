/* test_lm.c — the BitNet transformer language model (layers/lm.c) against
 * PyTorch: tests/reference/make_lm_reference.py builds the same graph
 * (vocab 256, d 64, 2 layers, 4 heads, d_ff 256, ctx 16) from fixed weights
 * and writes logits, loss, every parameter gradient and 10 AdamW losses, in
 * fp32 and as BitNet (straight-through gradients). Also the config's errors
 * and the tree bg_bitnet_model makes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format/format.h"
#include "tests/test_util.h"

static const bg_lm_config CFG = {.vocab = 256, .d_model = 64, .n_layers = 2, .n_heads = 4, .d_ff = 256, .ctx = 16};
enum { B = 3, T = 16, V = 256 };

static bg_safetensors *ref;

static bool ref_get(const char *name, bg_tensor *view) {
    return CHECK_MSG(bg_safetensors_get(ref, name, view) == BG_OK, "reference tensor %s: %s", name, bg_last_error());
}

/* The model with the reference's weights (every parameter by name). */
static bg_module *reference_model(bool bitnet) {
    bg_rng rng;
    bg_rng_seed(&rng, 1);
    bg_module *m = bg_lm_new(&CFG, &rng);
    if (!CHECK_MSG(m != NULL, "lm_new: %s", bg_last_error())) return NULL;
    if (bitnet) CHECK(bg_bitnet_model(m) == BG_OK);
    CHECK(bg_module_param_count(m) == 1 + 11 * 2 + 1);
    for (int i = 0; i < bg_module_param_count(m); i++) {
        char name[BG_PARAM_NAME_MAX + 2];
        snprintf(name, sizeof name, "w.%s", bg_module_param_name(m, i));
        bg_tensor v;
        if (ref_get(name, &v)) CHECK_MSG(bg_copy(bg_module_param(m, i), &v) == BG_OK, "%s: %s", name, bg_last_error());
    }
    return m;
}

/* ids[:, :T] and ids[:, 1:] as i32 tensors on ctx. */
static void inputs(bg_ctx *ctx, bg_tensor **x, bg_tensor **y) {
    bg_tensor ids;
    *x = *y = NULL;
    if (!ref_get("ids", &ids)) return;
    *x = bg_empty(ctx, BG_DTYPE_I32, BG_SHAPE(B, T));
    *y = bg_empty(ctx, BG_DTYPE_I32, BG_SHAPE(B * T));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            ((int32_t *)(*x)->data)[b * T + t] = ((const int32_t *)ids.data)[b * (T + 1) + t];
            ((int32_t *)(*y)->data)[b * T + t] = ((const int32_t *)ids.data)[b * (T + 1) + t + 1];
        }
}

static double max_abs(const bg_tensor *t) {
    double m = 0;
    for (int64_t i = 0; i < bg_numel(t); i++) m = fmax(m, fabs((double)bg_f32(t)[i]));
    return m;
}

/* Loss of the model on the reference batch (recorded when grad). */
static bg_tensor *lm_loss(bg_ctx *ctx, bg_module *m, bg_tensor **logits) {
    bg_tensor *x, *y;
    inputs(ctx, &x, &y);
    bg_tensor *out = x ? bg_module_forward(ctx, m, x) : NULL;
    if (logits) *logits = out;
    bg_tensor *flat = out ? bg_reshape(ctx, out, 2, (int64_t[]){B * T, V}) : NULL;
    return flat ? bg_cross_entropy(ctx, flat, y, NULL) : NULL;
}

/* mode "fp32" or "bitnet"; recompute: the blocks recomputed in the
 * backward (bg_lm_set_recompute), against the same reference. */
static void check_against_torch(const char *mode, bool recompute) {
    bool bitnet = strcmp(mode, "bitnet") == 0;
    bg_module *m = reference_model(bitnet);
    if (!m) return;
    CHECK(bg_lm_set_recompute(m, recompute) == BG_OK);
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *logits = NULL;
    bg_tensor *loss = lm_loss(ctx, m, &logits);
    char name[160];
    bg_tensor want;
    if (!CHECK_MSG(loss != NULL, "%s forward: %s", mode, bg_ctx_error(ctx))) goto done;
    snprintf(name, sizeof name, "%s.logits", mode);
    if (ref_get(name, &want)) {
        double tol = 1e-4 * max_abs(&want);
        CHECK(bg_test_arrays(name, bg_f32(logits), bg_f32(&want), bg_numel(&want), tol, 1e-4, __FILE__, __LINE__));
    }
    snprintf(name, sizeof name, "%s.loss", mode);
    if (ref_get(name, &want)) CHECK_CLOSE(bg_f32(loss)[0], bg_f32(&want)[0], 0.0, 1e-5);
    printf("%s%s: loss %.6f (torch %.6f)\n", mode, recompute ? " (recomputed blocks)" : "", (double)bg_f32(loss)[0],
           (double)bg_f32(&want)[0]);
    bg_module_zero_grad(m);
    CHECK(bg_backward(ctx, loss) == BG_OK);
    for (int i = 0; i < bg_module_param_count(m); i++) {
        snprintf(name, sizeof name, "%s.g.%s", mode, bg_module_param_name(m, i));
        if (!ref_get(name, &want)) continue;
        double tol = 1e-4 * max_abs(&want);
        CHECK(bg_test_arrays(name, bg_f32(bg_module_param(m, i)->grad), bg_f32(&want), bg_numel(&want), tol, 1e-4,
                             __FILE__, __LINE__));
    }
done:
    bg_ctx_free(ctx);
    bg_module_free(m);
}

static const char *const PROJ[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};

/* Decay the projection matrices only (the reference's two param groups). */
static bool is_projection(const char *name, const bg_tensor *p, void *user) {
    (void)p, (void)user;
    for (size_t k = 0; k < sizeof PROJ / sizeof PROJ[0]; k++) {
        char pat[40];
        snprintf(pat, sizeof pat, ".%s.", PROJ[k]);
        if (strstr(name, pat)) return true;
    }
    return false;
}

static void check_adamw_trajectory(const char *mode) {
    bg_module *m = reference_model(strcmp(mode, "bitnet") == 0);
    if (!m) return;
    bg_adam_opts ao = {.lr = 2e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    bg_optim *opt = bg_adamw_new(m, &ao);
    CHECK(opt && bg_optim_decay_only(opt, is_projection, NULL) == BG_OK);
    bg_ctx *ctx = bg_ctx_new(0);
    char name[64];
    snprintf(name, sizeof name, "%s.adamw_loss", mode);
    bg_tensor want;
    if (!ref_get(name, &want)) goto done;
    float got[10];
    for (int s = 0; s < 10; s++) {
        bg_tensor *loss = lm_loss(ctx, m, NULL);
        if (!CHECK_MSG(loss && bg_backward(ctx, loss) == BG_OK && bg_optim_step(opt) == BG_OK, "%s step %d: %s", mode,
                       s, bg_ctx_status(ctx) ? bg_ctx_error(ctx) : bg_last_error()))
            goto done;
        got[s] = bg_f32(loss)[0];
        bg_optim_zero_grad(opt);
        bg_ctx_reset(ctx);
    }
    CHECK(bg_test_arrays(name, got, bg_f32(&want), 10, 0.0, 1e-4, __FILE__, __LINE__));
    printf("%s AdamW: loss %.5f -> %.5f (torch %.5f -> %.5f)\n", mode, (double)got[0], (double)got[9],
           (double)bg_f32(&want)[0], (double)bg_f32(&want)[9]);
done:
    bg_ctx_free(ctx);
    bg_optim_free(opt);
    bg_module_free(m);
}

/* bg_bitnet_model turns the seven projections of each block into
 * BitLinear(norm=false) and leaves embedding and norms float. */
static void test_bitnet_tree(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 2);
    bg_module *m = bg_lm_new(&CFG, &rng);
    CHECK(bg_bitnet_model(m) == BG_OK);
    CHECK(bg_qlayer_count(m) == 7 * 2);
    for (int i = 0; i < bg_qlayer_count(m); i++) {
        bg_module *q = bg_qlayer_at(m, i);
        CHECK(bg_module_type_of(q) == &bg_bitlinear_type && !bg_bitlinear_norm(q));
    }
    char d[200];
    bg_module_describe(m, d, sizeof d);
    const char *ds = d;
    CHECK_STR(ds, "TransformerLM(vocab=256, d_model=64, n_layers=2, n_heads=4, d_ff=256, ctx=16)");
    bg_module_free(m);
}

static void test_config_errors(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 3);
    bg_lm_config c = CFG;
    c.n_heads = 3;
    CHECK(bg_lm_new(&c, &rng) == NULL);
    CHECK_STR(bg_last_error(), "lm_config: d_model 64 does not divide into 3 heads");
    c = CFG, c.n_heads = 64;
    CHECK(bg_lm_new(&c, &rng) == NULL);
    CHECK_STR(bg_last_error(), "lm_config: the head size 1 is odd (RoPE rotates pairs)");
    c = CFG, c.ctx = 0;
    CHECK(bg_lm_new(&c, &rng) == NULL);
    CHECK_STR(bg_last_error(), "lm_config: ctx must be in 1..2147483648: 0");
    CHECK(bg_lm_new(&CFG, NULL) == NULL);
    CHECK_STR(bg_last_error(), "lm_new: rng is NULL");
    // Longer than the context, and a byte outside a smaller vocabulary.
    c = CFG, c.vocab = 64;
    bg_module *m = bg_lm_new(&c, &rng);
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = bg_zeros(ctx, BG_DTYPE_I32, BG_SHAPE(1, 17));
    CHECK(bg_module_forward(ctx, m, x) == NULL);
    CHECK_STR(bg_ctx_error(ctx), "TransformerLM: 17 tokens are more than the context of 16");
    bg_ctx_reset(ctx);
    x = bg_zeros(ctx, BG_DTYPE_I32, BG_SHAPE(1, 4));
    ((int32_t *)x->data)[2] = 200;
    CHECK(bg_module_forward(ctx, m, x) == NULL);
    CHECK_MSG(strstr(bg_ctx_error(ctx), "200") != NULL, "%s", bg_ctx_error(ctx));
    bg_ctx_free(ctx);
    bg_module_free(m);
}

/* Generation from the training model: greedy picks each step's argmax of a
 * full forward; sampling is seeded; bad prompts are refused. */
static void test_generate(void) {
    bg_module *m = reference_model(false);
    if (!m) return;
    const int32_t prompt[3] = {72, 101, 108};
    int32_t out[6], again[6], sampled[6], sampled2[6];
    CHECK(bg_lm_generate(m, prompt, 3, 6, &(bg_sample_opts){.temperature = 0}, out) == BG_OK);
    // The first generated token is the argmax of the prompt's last logits.
    bg_ctx *ctx = bg_ctx_new(0);
    bg_set_grad_enabled(ctx, false);
    bg_module_train(m, false);
    bg_tensor *y = bg_module_forward(ctx, m, bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(1, 3), prompt));
    int32_t best = 0;
    for (int v = 1; y && v < V; v++)
        if (bg_f32(y)[2 * V + v] > bg_f32(y)[2 * V + best]) best = v;
    CHECK(y && out[0] == best);
    bg_ctx_free(ctx);
    CHECK(bg_lm_generate(m, prompt, 3, 6, NULL, again) == BG_OK);   // temperature 1, seed 0
    bg_sample_opts so = {.temperature = 0.8f, .top_k = 5, .seed = 7};
    CHECK(bg_lm_generate(m, prompt, 3, 6, &so, sampled) == BG_OK);
    CHECK(bg_lm_generate(m, prompt, 3, 6, &so, sampled2) == BG_OK);
    CHECK(memcmp(sampled, sampled2, sizeof sampled) == 0);
    int32_t longp[17] = {0};
    CHECK(bg_lm_generate(m, longp, 17, 1, NULL, out) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "lm_generate: the prompt is 17 tokens, longer than the context of 16");
    const int32_t bad[3] = {1, 2, 300};
    CHECK(bg_lm_generate(m, bad, 3, 1, NULL, out) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "lm_generate: prompt token 2 is 300, outside the vocabulary of 256");
    bg_module_free(m);
}

/* Exact resume of a BitNet LM across a schedule change: 20 steps in one go
 * equal 10 steps, a checkpoint (model, AdamW, schedule, rng, the text
 * batcher's position), a model rebuilt from the file alone and 10 more:
 * parameters, optimizer and quantizer state bitwise. */
typedef struct lm_job {
    bg_module *m;
    bg_optim *opt;
    bg_schedule sched;
    bg_quantizer_list *q;
    bg_text_batcher *batches;
    bg_ctx *ctx;
} lm_job;

static bg_status job_schedule(int64_t step, void *user) {
    lm_job *j = user;
    return bg_schedule_apply(&j->sched, step, j->q->states, j->q->names, j->q->weights, j->q->n, NULL);
}

static bool job_attach(lm_job *j, const bg_text *text) {
    bg_adam_opts ao = {.lr = 2e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    j->opt = bg_adamw_new(j->m, &ao);
    j->q = bg_model_quantizer_list(j->m);
    j->ctx = bg_ctx_new(0);
    return j->opt && j->q && j->ctx && bg_optim_decay_only(j->opt, is_projection, NULL) == BG_OK &&
           bg_schedule_parse("[*weight_quant]int8@0,int4@6,ternary@12", 0, &j->sched) == BG_OK &&
           bg_text_batcher_new(text, &(bg_text_batcher_opts){.batch_size = 2, .context = 16, .seed = 3},
                               &j->batches) == BG_OK;
}

static bool job_train(lm_job *j, int64_t steps) {
    const bg_batch_source src = bg_text_source(j->batches);
    double loss;
    bg_train_opts o = {.before_step = job_schedule, .user = j, .clip_grad_norm = 1.0f};
    return CHECK_MSG(bg_train_steps(j->ctx, j->m, j->opt, &src, steps, &o, &loss) == BG_OK, "%s", bg_last_error());
}

static void job_free(lm_job *j) {
    bg_text_batcher_free(j->batches);
    bg_ctx_free(j->ctx);
    bg_quantizer_list_free(j->q);
    bg_optim_free(j->opt);
    bg_module_free(j->m);
}

/* The bytes written to a file made from the template path, loaded. */
static bg_text *temp_text(char *path, const uint8_t *bytes, size_t n) {
    int fd = mkstemp(path);
    if (!CHECK(fd >= 0)) return NULL;
    CHECK(write(fd, bytes, n) == (ssize_t)n);
    close(fd);
    bg_text *text = NULL;
    CHECK_MSG(bg_text_load(path, &text) == BG_OK, "%s", bg_last_error());
    return text;
}

static void test_exact_resume(void) {
    char path[] = "/tmp/bg_test_lm_XXXXXX";
    bg_rng r;
    bg_rng_seed(&r, 9);
    uint8_t bytes[4000];
    for (int i = 0; i < 4000; i++) bytes[i] = (uint8_t)(" etaoinshrdlu\n"[bg_rng_below(&r, 14)]);
    bg_text *text = temp_text(path, bytes, sizeof bytes);
    if (!text) return;
    bg_lm_config c = CFG;
    c.n_layers = 1;
    lm_job a = {0}, b = {0};
    bg_rng_seed(&r, 1);
    a.m = bg_lm_new(&c, &r);
    bg_rng_seed(&r, 1);
    b.m = bg_lm_new(&c, &r);
    CHECK(bg_bitnet_model(a.m) == BG_OK && bg_bitnet_model(b.m) == BG_OK);
    CHECK(job_attach(&a, text) && job_attach(&b, text));
    CHECK(job_train(&a, 20) && job_train(&b, 10));
    char ck_path[64];
    snprintf(ck_path, sizeof ck_path, "%s.ckpt", path);
    bg_checkpoint ck = {.model = b.m, .opt = b.opt, .schedule = &b.sched, .step = 10,
                        .batch_in_epoch = bg_text_batcher_position(b.batches)};
    CHECK(bg_checkpoint_save(ck_path, &ck) == BG_OK);
    job_free(&b);
    // A new model from the file's description, a new optimizer and batcher.
    lm_job c2 = {0};
    CHECK(bg_checkpoint_load_model(ck_path, &c2.m) == BG_OK && job_attach(&c2, text));
    bg_checkpoint ck2 = {.model = c2.m, .opt = c2.opt, .schedule = &c2.sched};
    CHECK(bg_checkpoint_load(ck_path, &ck2) == BG_OK && ck2.step == 10);
    CHECK(bg_text_batcher_seek(c2.batches, ck2.batch_in_epoch) == BG_OK);
    CHECK(job_train(&c2, 10));
    CHECK_SAME_TRAINING(a.m, c2.m, a.opt, c2.opt);
    printf("exact resume: 20 steps == 10 + checkpoint + rebuilt model + 10 (BitNet, int8 -> int4 -> ternary)\n");
    job_free(&a);
    job_free(&c2);
    bg_text_free(text);
    unlink(ck_path);
    unlink(path);
}

/* Activation checkpointing: the same 12 steps with every block recomputed in
 * the backward end bitwise where the plain ones do (parameters, AdamW,
 * quantizer ranges and call counts across int8 -> int4 -> ternary: the
 * snapshot puts the quantizers back before each recompute), with a smaller
 * arena; the teacher-style forward without grad keeps one block too. */
static void test_recompute(void) {
    bg_rng r;
    bg_rng_seed(&r, 4);
    uint8_t bytes[3000];
    for (int i = 0; i < 3000; i++) bytes[i] = (uint8_t)("abcdefgh \n"[bg_rng_below(&r, 10)]);
    char path[] = "/tmp/bg_test_lm_XXXXXX";
    bg_text *text = temp_text(path, bytes, sizeof bytes);
    if (!text) return;
    lm_job a = {0}, b = {0};
    bg_rng_seed(&r, 1);
    a.m = bg_lm_new(&CFG, &r);
    bg_rng_seed(&r, 1);
    b.m = bg_lm_new(&CFG, &r);
    CHECK(bg_bitnet_model(a.m) == BG_OK && bg_bitnet_model(b.m) == BG_OK);
    CHECK(bg_lm_set_recompute(b.m, true) == BG_OK);
    CHECK(job_attach(&a, text) && job_attach(&b, text));
    CHECK(job_train(&a, 12) && job_train(&b, 12));
    CHECK_SAME_TRAINING(a.m, b.m, a.opt, b.opt);
    size_t pa = bg_ctx_peak_bytes(a.ctx), pb = bg_ctx_peak_bytes(b.ctx);
    CHECK_MSG(pb < pa * 3 / 4, "recompute: arena peak %zu, plain %zu", pb, pa);
    printf("recompute: 12 BitNet steps bitwise equal to the plain ones; arena peak %.2f MiB vs %.2f MiB\n",
           (double)pb / (1 << 20), (double)pa / (1 << 20));
    // Without grad the blocks' values are handed back as each block ends.
    bg_ctx *c0 = bg_ctx_new(0), *c1 = bg_ctx_new(0);
    bg_set_grad_enabled(c0, false), bg_set_grad_enabled(c1, false);
    CHECK(bg_lm_set_recompute(a.m, false) == BG_OK);
    bg_tensor *l0 = lm_loss(c0, a.m, NULL);
    bg_tensor *l1 = lm_loss(c1, b.m, NULL);
    if (CHECK(l0 && l1)) {
        CHECK(bg_f32(l0)[0] == bg_f32(l1)[0]);
        CHECK_MSG(bg_ctx_peak_bytes(c1) < bg_ctx_peak_bytes(c0) / 2, "no-grad peak %zu vs %zu",
                  bg_ctx_peak_bytes(c1), bg_ctx_peak_bytes(c0));
    }
    bg_ctx_free(c0), bg_ctx_free(c1);
    job_free(&a);
    job_free(&b);
    bg_text_free(text);
    unlink(path);
}

int main(void) {
    if (!(ref = bg_test_open_reference("lm.safetensors", "tests/reference/make_lm_reference.py", "1")))
        return bg_test_finish();
    check_against_torch("fp32", false);
    check_against_torch("bitnet", false);
    check_against_torch("fp32", true);
    check_against_torch("bitnet", true);
    check_adamw_trajectory("fp32");
    check_adamw_trajectory("bitnet");
    test_bitnet_tree();
    test_config_errors();
    test_generate();
    test_exact_resume();
    test_recompute();
    bg_safetensors_free(ref);
    return bg_test_finish();
}
