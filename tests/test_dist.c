/* test_dist.c — data-parallel training (dist.h), run by ctest under
 * `mpirun -np 2` and `-np 4` (and once without mpirun: one rank).
 *
 * Every rank trains with bg_train_steps on its slice of each global batch
 * (the allreduce happens inside), and also, alone, the reference: one
 * process that runs the N slices of each global batch as micro-batches,
 * keeps each one's gradient, sums them in rank order and divides by N, then
 * takes the optimizer step (its weight observers see only the first
 * micro-batch's forward: one observation per step, as one process with the
 * whole batch makes). With 2 ranks the two must agree bit for bit (a
 * sum of two parts does not depend on their order), with 4 within 1e-6
 * relative. Models: an MLP under a weight schedule int8 -> int4 -> ternary,
 * and a small BitNet language model. Also: quantizer state (observed
 * activation ranges) equal on every rank, and a rank that fails makes every
 * rank's train_steps fail instead of hanging. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitgrad.h"
#include "tests/test_util.h"

enum { STEPS = 20 };   // optimizer steps of every equivalence run

/* Every rank's copy of v[0..n) equal to rank 0's? (collective) */
static bool same_on_all_ranks(const float *v, int64_t n) {
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < n; i++) sum += v[i], sq += (double)v[i] * v[i] * (double)(i % 7 + 1);
    double s[4] = {sum, sq, sum * sum, sq * sq};
    bg_dist_sum_doubles(s, 4);
    double N = bg_dist_size();
    // all equal <=> the mean of squares equals the square of the mean
    return s[2] == s[0] * s[0] / N && s[3] == s[1] * s[1] / N;
}

// --- the MLP -----------------------------------------------------------------------

enum { ROWS = 192, FEAT = 20, CLASSES = 4, GLOBAL_B = 32 };

static bg_module *mlp(const char *a_spec) {
    bg_rng rng;
    bg_rng_seed(&rng, 7);
    bg_module *m = bg_sequential_new(3, (bg_module *[]){bg_linear_new(FEAT, 48, true, &rng), bg_relu_new(),
                                                        bg_linear_new(48, CLASSES, true, &rng)});
    CHECK(m && bg_quantize_model(m, "int8", a_spec) == BG_OK);
    return m;
}

static bg_dataset *dataset(void) {
    static float x[ROWS * FEAT];
    static int32_t y[ROWS];
    bg_rng rng;
    bg_rng_seed(&rng, 3);
    for (int i = 0; i < ROWS; i++) {
        y[i] = (int32_t)bg_rng_below(&rng, CLASSES);
        for (int k = 0; k < FEAT; k++) x[i * FEAT + k] = bg_rng_uniform(&rng) - 0.5f + (k % CLASSES == y[i] ? 0.8f : 0.0f);
    }
    bg_dataset *ds = NULL;
    CHECK(bg_dataset_from_arrays(BG_DTYPE_F32, x, 2, (int64_t[]){ROWS, FEAT}, y, &ds) == BG_OK);
    return ds;
}

typedef struct sched_hook {
    bool on;
    bg_schedule sched;
    bg_quantizer_list *q;
} sched_hook;

static bg_status apply_schedule(int64_t step, void *user) {
    sched_hook *h = user;
    bool applied;
    return h->on ? bg_schedule_apply(&h->sched, step, h->q->states, h->q->names, h->q->weights, h->q->n, &applied)
                 : BG_OK;
}

/* What the equivalence runs train: a model, its optimizer, a source of
 * slice r of N of every global batch, and an optional weight schedule. */
typedef struct workload {
    const char *name;
    bg_module *(*build)(void);
    bg_optim *(*optim)(bg_module *m);
    void *(*source)(int r, int N, bg_batch_source *out);   /* returns what to free */
    void (*source_free)(void *owner);
    const char *schedule;
} workload;

static void hook_init(sched_hook *h, const workload *w, bg_module *m) {
    h->on = w->schedule != NULL;
    if (h->on) CHECK(bg_schedule_parse(w->schedule, 0, &h->sched) == BG_OK);
    h->q = bg_model_quantizer_list(m);
    CHECK(h->q != NULL);
}

static float *params_copy(bg_module *m, int64_t *n) {
    float *p = bg_module_flat_params(m, n);
    float *copy = malloc(sizeof(float) * (size_t)*n);
    memcpy(copy, p, sizeof(float) * (size_t)*n);
    return copy;
}

/* The data-parallel run: this rank's slice of every global batch. */
static float *train_parallel(const workload *w, int64_t *n) {
    bg_module *m = w->build();
    bg_batch_source src;
    void *owner = w->source(bg_dist_rank(), bg_dist_size(), &src);
    bg_optim *opt = w->optim(m);
    bg_ctx *ctx = bg_ctx_new(0);
    sched_hook h;
    hook_init(&h, w, m);
    CHECK(bg_dist_broadcast_model(m) == BG_OK);
    double loss = 0;
    bg_train_opts to = {.before_step = apply_schedule, .user = &h};
    for (int64_t done = 0; done < STEPS;) {   // bg_train_steps stops at each epoch's end
        int64_t before = bg_optim_step_count(opt);
        bg_status st = bg_train_steps(ctx, m, opt, &src, STEPS - done, &to, &loss);
        CHECK_MSG(st == BG_OK, "rank %d: %s", bg_dist_rank(), bg_last_error());
        if (st != BG_OK) break;
        done += bg_optim_step_count(opt) - before;
    }
    float *copy = params_copy(m, n);
    bg_quantizer_list_free(h.q);
    bg_ctx_free(ctx);
    bg_optim_free(opt);
    bg_module_free(m);
    w->source_free(owner);
    return copy;
}

/* The reference in one process: N micro-batches per step. */
static float *train_accumulating(const workload *w, int N, int64_t *n) {
    bg_module *m = w->build();
    bg_batch_source src[8];
    void *owner[8];
    for (int r = 0; r < N; r++) owner[r] = w->source(r, N, &src[r]);
    bg_optim *opt = w->optim(m);
    bg_ctx *ctx = bg_ctx_new(0);
    sched_hook h;
    hook_init(&h, w, m);
    bg_module_train(m, true);
    int64_t ng = 0;
    float *g = bg_module_flat_grads(m, &ng);
    float *parts = calloc((size_t)(N * ng), sizeof(float));
    for (int64_t step = 0; step < STEPS;) {
        bg_tensor *x, *y;
        bool more = true;
        for (int r = 0; r < N; r++) {
            // the shards end their epochs together: all are asked, all say so
            if (!src[r].next(src[r].src, ctx, &x, &y)) more = false;
            if (!more) continue;
            CHECK(apply_schedule(step, &h) == BG_OK);
            // The weights' observers see the weights once per step, as in one
            // process with the whole batch (and in each rank): not again for
            // the later micro-batches.
            for (int i = 0; i < h.q->n; i++) bg_quant_state_set_observer(h.q->states[i], r == 0);
            bg_optim_zero_grad(opt);
            bg_tensor *loss = bg_cross_entropy_flat(ctx, bg_module_forward(ctx, m, x), y);
            CHECK(loss && bg_backward(ctx, loss) == BG_OK);
            memcpy(parts + r * ng, g, sizeof(float) * (size_t)ng);
            bg_ctx_reset(ctx);
        }
        if (!more) continue;   // end of an epoch: every source starts the next
        for (int64_t i = 0; i < ng; i++) {
            float s = parts[i];
            for (int r = 1; r < N; r++) s += parts[r * ng + i];
            g[i] = s * (1.0f / (float)N);
        }
        CHECK(bg_optim_step(opt) == BG_OK);
        step++;
    }
    float *copy = params_copy(m, n);
    free(parts);
    bg_quantizer_list_free(h.q);
    bg_ctx_free(ctx);
    bg_optim_free(opt);
    bg_module_free(m);
    for (int r = 0; r < N; r++) w->source_free(owner[r]);
    return copy;
}

// the MLP's pieces
static bg_module *mlp_weights_only(void) { return mlp(NULL); }
static bg_optim *adam(bg_module *m) { return bg_adam_new(m, NULL); }
static bg_dataset *the_dataset;
static void *mlp_source(int r, int N, bg_batch_source *out) {
    bg_batcher *b = NULL;
    bg_batcher_opts bo = {.batch_size = GLOBAL_B, .shuffle = true, .seed = 5, .shard_rank = r, .shard_count = N};
    CHECK(bg_batcher_new(the_dataset, &bo, &b) == BG_OK);
    *out = bg_batcher_source(b);
    return b;
}
static void mlp_source_free(void *b) { bg_batcher_free(b); }

// the BitNet language model's pieces
static bg_text *the_text;
static bg_module *small_bitnet_lm(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 11);
    bg_lm_config cfg = {.vocab = 256, .d_model = 32, .n_layers = 2, .n_heads = 2, .d_ff = 64, .ctx = 16};
    bg_module *m = bg_lm_new(&cfg, &rng);
    CHECK(m && bg_bitnet_model(m) == BG_OK);
    bg_model_set_quant_mode(m, BG_QUANT_MODE_TRAIN);
    return m;
}
static bg_optim *adamw(bg_module *m) {
    return bg_adamw_new(m, &(bg_adam_opts){.lr = 2e-3f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f});
}
static void *text_source(int r, int N, bg_batch_source *out) {
    bg_text_batcher *b = NULL;
    bg_text_batcher_opts o = {.batch_size = 8, .context = 16, .seed = 2, .shard_rank = r, .shard_count = N};
    CHECK(bg_text_batcher_new(the_text, &o, &b) == BG_OK);
    *out = bg_text_source(b);
    return b;
}
static void text_source_free(void *b) { bg_text_batcher_free(b); }

static void compare(const char *what, const float *got, const float *want, int64_t n) {
    int N = bg_dist_size();
    int64_t differ = 0;
    double worst = 0, worst_abs = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)want[i]));
    for (int64_t i = 0; i < n; i++) {
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0) differ++;
        double d = fabs((double)got[i] - want[i]);
        worst_abs = fmax(worst_abs, d);
    }
    // Relative to the parameters' size (max |d| / max |want|): elementwise, a
    // weight near 0 that took 20 Adam steps of sums in another order is a
    // few dozen float ulps of itself away.
    worst = scale > 0 ? worst_abs / scale : worst_abs;
    if (N <= 2)
        CHECK_MSG(differ == 0, "%s, %d ranks: %lld of %lld parameters differ from one process accumulating (worst %.3g)",
                  what, N, (long long)differ, (long long)n, worst);
    else
        CHECK_MSG(worst <= 1e-6, "%s, %d ranks: worst relative difference %.3g from one process accumulating", what, N,
                  worst);
    if (bg_dist_is_root())
        printf("%s, %d ranks vs 1 process with %d micro-batches: %lld of %lld parameters differ, "
               "max |difference| %.3g = %.3g of max |parameter|\n",
               what, N, N, (long long)differ, (long long)n, worst_abs, worst);
}

static void test_equivalence(const workload *w) {
    int64_t n1, n2;
    float *dp = train_parallel(w, &n1);
    float *ref = train_accumulating(w, bg_dist_size(), &n2);
    CHECK(n1 == n2);
    compare(w->name, dp, ref, n1);
    CHECK(same_on_all_ranks(dp, n1));
    free(dp);
    free(ref);
}

/* A text of a few kilobytes, written by each rank to its own file. */
static bg_text *small_text(void) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/test_dist_%d_%d.txt", (int)getpid(), bg_dist_rank());
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    static const char *words[] = {"in ", "the ", "beginning ", "was ", "light ", "and ", "darkness ", "upon ", "deep. "};
    bg_rng rng;
    bg_rng_seed(&rng, 9);
    for (int i = 0; f && i < 2000; i++) fputs(words[bg_rng_below(&rng, 9)], f);
    if (f) fclose(f);
    bg_text *t = NULL;
    CHECK(bg_text_load(path, &t) == BG_OK);
    remove(path);
    return t;
}

/* A model trained `steps` steps on this rank's slices (bg_train_steps). */
typedef struct shard_run {
    bg_module *m;
    bg_batcher *b;
    bg_optim *opt;
    bg_ctx *ctx;
    bg_batch_source src;
} shard_run;

static void shard_run_start(shard_run *r, const char *a_spec, int64_t steps) {
    r->m = mlp(a_spec);
    r->b = mlp_source(bg_dist_rank(), bg_dist_size(), &r->src);
    r->opt = bg_adam_new(r->m, NULL);
    r->ctx = bg_ctx_new(0);
    double loss;
    CHECK(bg_train_steps(r->ctx, r->m, r->opt, &r->src, steps, NULL, &loss) == BG_OK);
}

static void shard_run_free(shard_run *r) {
    bg_ctx_free(r->ctx);
    bg_optim_free(r->opt);
    bg_module_free(r->m);
    bg_batcher_free(r->b);
}

/* Activation observers see each rank's own slice; after every step the
 * ranges are combined, so every rank holds the same state. */
static void test_observers_equal(void) {
    shard_run r;
    shard_run_start(&r, "int8", 4);
    bg_quantizer_list *q = bg_model_quantizer_list(r.m);
    for (int i = 0; q && i < q->n; i++) {
        int64_t P = bg_quant_state_num_scales(q->states[i]);
        float *buf = malloc(sizeof(float) * (size_t)(4 * P + 1));
        bg_quant_state_flags f;
        bg_quant_state_get_buffers(q->states[i], buf, buf + P, buf + 2 * P, buf + 3 * P, &f);
        CHECK_MSG(same_on_all_ranks(buf, 4 * P), "quantizer %s differs between ranks", q->names[i]);
        if (strstr(q->names[i], "input")) CHECK_MSG(f.observed, "%s observed nothing", q->names[i]);
        free(buf);
    }
    bg_quantizer_list_free(q);
    shard_run_free(&r);
}

/* The last rank gets a NaN bias at step 3: its train_steps says the loss is
 * NaN, every other rank's says that another rank failed; nobody hangs. */
static void test_failure_stops_all(void) {
    shard_run r;
    shard_run_start(&r, NULL, 3);
    bool bad = bg_dist_rank() == bg_dist_size() - 1;
    if (bad)   // a bias (weights go through their quantizer, which clamps a NaN): the loss becomes NaN
        for (int i = 0; i < bg_module_param_count(r.m); i++)
            if (strstr(bg_module_param_name(r.m, i), "bias")) bg_f32(bg_module_param(r.m, i))[0] = NAN;
    double loss;
    bg_status st = bg_train_steps(r.ctx, r.m, r.opt, &r.src, 1, NULL, &loss);
    CHECK_MSG(st != BG_OK, "rank %d: a NaN on rank %d did not stop training", bg_dist_rank(), bg_dist_size() - 1);
    const char *want = bad || bg_dist_size() == 1 ? "the loss is nan" : "other rank(s) failed";
    CHECK_MSG(strstr(bg_last_error(), want) != NULL, "rank %d: \"%s\" does not say \"%s\"", bg_dist_rank(),
              bg_last_error(), want);
    shard_run_free(&r);
}

/* The batchers' slices, in this process: N shards of a batch are its rows in
 * order; a fixed (evaluation) text batcher is never split; bad shards and
 * batches too small to split are refused with a sentence. */
static void test_shards(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_batcher *whole = NULL, *part[3] = {NULL};
    CHECK(bg_batcher_new(the_dataset, &(bg_batcher_opts){.batch_size = 20, .shuffle = true, .seed = 2}, &whole) == BG_OK);
    for (int r = 0; r < 3; r++)
        CHECK(bg_batcher_new(the_dataset,
                             &(bg_batcher_opts){.batch_size = 20, .shuffle = true, .seed = 2, .shard_rank = r,
                                                .shard_count = 3},
                             &part[r]) == BG_OK);
    bg_tensor *x, *y, *px, *py;
    CHECK(bg_batcher_next(whole, ctx, &x, &y));
    int64_t row = 0;
    for (int r = 0; r < 3; r++) {
        CHECK(bg_batcher_next(part[r], ctx, &px, &py));
        CHECK_MSG(px->shape[0] == (r + 1) * 20 / 3 - r * 20 / 3, "shard %d has %lld rows", r, (long long)px->shape[0]);
        CHECK(memcmp(bg_f32(px), bg_f32(x) + row * FEAT, sizeof(float) * (size_t)(px->shape[0] * FEAT)) == 0);
        row += px->shape[0];
    }
    CHECK(row == 20);
    // ROWS = 192 = 9 x 20 + 12: 10 batches; with 16 shards the last (12 rows) is skipped
    CHECK(bg_batcher_batches(whole) == 10 && bg_batcher_batches(part[0]) == 10);
    bg_batcher *many = NULL;
    CHECK(bg_batcher_new(the_dataset, &(bg_batcher_opts){.batch_size = 20, .shard_rank = 0, .shard_count = 16},
                         &many) == BG_OK);
    CHECK(bg_batcher_batches(many) == 9);
    bg_batcher *bad = NULL;
    CHECK(bg_batcher_new(the_dataset, &(bg_batcher_opts){.batch_size = 20, .shard_rank = 3, .shard_count = 3}, &bad) ==
          BG_ERR_ARG);
    CHECK(strstr(bg_last_error(), "shard 3 of 3 does not exist") != NULL);
    CHECK(bg_batcher_new(the_dataset, &(bg_batcher_opts){.batch_size = 2, .shard_count = 3}, &bad) == BG_ERR_ARG);
    CHECK(strstr(bg_last_error(), "a batch of 2 examples cannot be split over 3 processes") != NULL);
    // text: a random batch's windows split; fixed windows whole on every shard
    bg_text_batcher *tw = NULL, *t1 = NULL, *fx = NULL;
    CHECK(bg_text_batcher_new(the_text, &(bg_text_batcher_opts){.batch_size = 8, .context = 16, .seed = 4}, &tw) == BG_OK);
    CHECK(bg_text_batcher_new(the_text,
                              &(bg_text_batcher_opts){.batch_size = 8, .context = 16, .seed = 4, .shard_rank = 1,
                                                      .shard_count = 2},
                              &t1) == BG_OK);
    CHECK(bg_text_batcher_new(the_text,
                              &(bg_text_batcher_opts){.batch_size = 8, .context = 16, .split = BG_TEXT_VAL, .fixed = true,
                                                      .shard_rank = 1, .shard_count = 2},
                              &fx) == BG_OK);
    CHECK(bg_text_batcher_next(tw, ctx, &x, &y) && bg_text_batcher_next(t1, ctx, &px, &py));
    CHECK(px->shape[0] == 4 && memcmp(px->data, (int32_t *)x->data + 4 * 16, sizeof(int32_t) * 4 * 16) == 0);
    CHECK(bg_text_batcher_next(fx, ctx, &px, &py) && px->shape[0] == 8);
    bg_text_batcher_free(tw), bg_text_batcher_free(t1), bg_text_batcher_free(fx);
    for (int r = 0; r < 3; r++) bg_batcher_free(part[r]);
    bg_batcher_free(whole);
    bg_batcher_free(many);
    bg_ctx_free(ctx);
}

int main(int argc, char **argv) {
    CHECK(bg_dist_init(&argc, &argv) == BG_OK);
    if (bg_dist_is_root())
        printf("test_dist: %d rank(s)%s\n", bg_dist_size(), bg_dist_built_with_mpi() ? "" : " (built without MPI)");
    the_dataset = dataset();
    the_text = small_text();
    const workload mlp_w = {"MLP, weights int8 -> int4 -> ternary", mlp_weights_only, adam, mlp_source, mlp_source_free,
                            "[*weight_quant]int8@0,int4@6,ternary@12"};
    const workload lm_w = {"BitNet LM (ternary weights, int8 activations)", small_bitnet_lm, adamw, text_source,
                           text_source_free, NULL};
    test_equivalence(&mlp_w);
    test_equivalence(&lm_w);
    test_observers_equal();
    test_failure_stops_all();
    test_shards();
    bg_dataset_free(the_dataset);
    bg_text_free(the_text);
    int failed = bg_test_finish();
    // Every rank's verdict: a failure on any rank fails the test.
    double f = failed;
    bg_dist_sum_doubles(&f, 1);
    bg_dist_finalize();
    return f > 0;
}
