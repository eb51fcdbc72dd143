/* test_checkpoint.c — io/checkpoint.c and io/model_desc.c:
 *   (a) exact resume: a quantized MLP (LSQ int4 weights, int8 inputs, a
 *       progressive schedule, Dropout, Adam) trained 2N steps on real
 *       Fashion-MNIST in one go equals N steps + save + load in a NEW process
 *       (this binary re-executed with "resume") + N steps, bit for bit;
 *   (b) model descriptions round trip (MLP, CNN, qlayers, BitLinear, norms);
 *   (c) every kind of bad file fails with its exact message and leaves the
 *       model, optimizer and RNG untouched;
 *   (d) a save that fails half-way (RLIMIT_FSIZE: the disk is "full") leaves
 *       the previous checkpoint intact and no temporary file. */
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/io.h"
#include "qat/qat.h"
#include "tests/test_util.h"

static char dir[64];

static void path_in_dir(char *buf, size_t len, const char *name) { snprintf(buf, len, "%s/%s", dir, name); }

// ---------------------------------------------------------------------------
// (a) exact resume

#define RESUME_N 5          /* steps before the save; 2N in all */
#define RESUME_SUBSET 500   /* examples: 8 batches of 64 per epoch, so 2N crosses an epoch */
#define RESUME_BATCH 64
#define RESUME_SCHEDULE "[*weight_quant]int8@0,int4@7;[*input_quant]fp32@0,int8@2"

typedef struct run {
    bg_dataset *full, sub;
    bg_module *net;
    bg_optim *opt;
    bg_schedule sched;
    bg_rng rng;                 /* the "training RNG": drawn once per step (checks its restore) */
    bg_batcher *batches;
    bg_ctx *ctx;
    bg_quantizer_list *q;
    int64_t step;
} run;

static void run_free(run *r) {
    bg_ctx_free(r->ctx);
    bg_batcher_free(r->batches);
    bg_optim_free(r->opt);
    bg_quantizer_list_free(r->q);
    bg_module_free(r->net);
    bg_dataset_free(r->full);
}

/* Builds the model (init from seed), optimizer, schedule, batcher. */
static bool run_init(run *r, uint64_t seed) {
    memset(r, 0, sizeof *r);
    if (bg_fmnist_load(NULL, BG_FMNIST_TRAIN, &r->full) != BG_OK) {
        CHECK_MSG(false, "fmnist: %s", bg_last_error());
        return false;
    }
    r->sub = *r->full;
    r->sub.n = RESUME_SUBSET;
    bg_rng init;
    bg_rng_seed(&init, seed);
    r->net = bg_sequential_new(4, (bg_module *[]){bg_linear_new(784, 32, true, &init), bg_relu_new(),
                                                   bg_dropout_new(0.1f, seed), bg_linear_new(32, 10, true, &init)});
    bool ok = r->net && bg_quantize_model(r->net, "int4:per_channel:lsq", "int8") == BG_OK;
    bg_adam_opts ao = BG_ADAM_DEFAULTS;
    ao.lr = 2e-3f;
    ok = ok && (r->opt = bg_adam_new(r->net, &ao)) != NULL;
    ok = ok && bg_schedule_parse(RESUME_SCHEDULE, 0, &r->sched) == BG_OK;
    ok = ok && bg_batcher_new(&r->sub, &(bg_batcher_opts){.batch_size = RESUME_BATCH, .shuffle = true, .seed = 11},
                              &r->batches) == BG_OK;
    ok = ok && (r->ctx = bg_ctx_new(0)) != NULL;
    if (ok) {
        ok = (r->q = bg_model_quantizer_list(r->net)) && r->q->n == 4;
    }
    bg_rng_seed(&r->rng, seed + 1);
    CHECK_MSG(ok, "resume setup: %s", bg_last_error());
    return ok;
}

/* Trains until r->step == until. */
static bool run_steps(run *r, int64_t until) {
    while (r->step < until) {
        if (bg_schedule_apply(&r->sched, r->step, r->q->states, r->q->names, r->q->weights, r->q->n, NULL) != BG_OK) break;
        bg_tensor *x, *y;
        if (!bg_batcher_next(r->batches, r->ctx, &x, &y) && !bg_batcher_next(r->batches, r->ctx, &x, &y)) break;
        bg_rng_next(&r->rng);
        bg_tensor *loss = bg_cross_entropy(r->ctx, bg_module_forward(r->ctx, r->net, x), y, NULL);
        if (!loss || bg_backward(r->ctx, loss) != BG_OK || bg_optim_step(r->opt) != BG_OK) break;
        bg_optim_zero_grad(r->opt);
        bg_ctx_reset(r->ctx);
        r->step++;
    }
    CHECK_MSG(r->step == until, "training stopped at step %lld: %s", (long long)r->step, bg_last_error());
    return r->step == until;
}

/* The batch position after r->step steps (the batcher's own epoch count
 * advances only when it reports an epoch's end). */
static bg_checkpoint run_ckpt(run *r) {
    int64_t per = bg_batcher_batches(r->batches);
    return (bg_checkpoint){.model = r->net, .opt = r->opt, .schedule = &r->sched, .rng = &r->rng, .step = r->step,
                           .epoch = r->step / per, .batch_in_epoch = r->step % per};
}

/* The child: a fresh process builds everything from another seed, loads the
 * checkpoint, seeks the batcher, trains N more steps and saves. */
static int resume_child(const char *in, const char *out) {
    run r;
    if (!run_init(&r, 999)) return 2;
    bg_checkpoint ck = {.model = r.net, .opt = r.opt, .schedule = &r.sched, .rng = &r.rng};
    if (bg_checkpoint_load(in, &ck) != BG_OK) {
        fprintf(stderr, "child: %s\n", bg_last_error());
        return 3;
    }
    r.step = ck.step;
    if (bg_batcher_seek(r.batches, ck.epoch, ck.batch_in_epoch) != BG_OK) return 4;
    if (!run_steps(&r, 2 * RESUME_N)) return 5;
    bg_checkpoint done = run_ckpt(&r);
    bg_status s = bg_checkpoint_save(out, &done);
    run_free(&r);
    return s == BG_OK ? 0 : 6;
}

static void test_exact_resume(const char *self) {
    char half[128], resumed[128];
    path_in_dir(half, sizeof half, "half.ckpt");
    path_in_dir(resumed, sizeof resumed, "resumed.ckpt");
    // N steps, save.
    run a;
    if (!run_init(&a, 1)) return;
    if (!run_steps(&a, RESUME_N)) return;
    bg_checkpoint ck = run_ckpt(&a);
    CHECK(bg_checkpoint_save(half, &ck) == BG_OK);
    // The same run continues in this process to 2N.
    run_steps(&a, 2 * RESUME_N);
    // Another process resumes from the file.
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        execl(self, self, "resume", half, resumed, (char *)NULL);
        _exit(127);
    }
    int wst = 0;
    waitpid(pid, &wst, 0);
    CHECK_MSG(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "resume child failed: status %d", wst);
    // Load the child's final state into a third model and compare bit for bit.
    run b;
    if (!run_init(&b, 12345)) return;
    bg_checkpoint cb = {.model = b.net, .opt = b.opt, .schedule = &b.sched, .rng = &b.rng};
    CHECK_MSG(bg_checkpoint_load(resumed, &cb) == BG_OK, "%s", bg_last_error());
    CHECK(cb.step == 2 * RESUME_N && cb.epoch == 1 && cb.batch_in_epoch == 2);
    int64_t na, nb;
    const float *pa = bg_module_flat_params(a.net, &na);
    CHECK(bg_module_flat_params(b.net, &nb) && na == nb && na > 25000);
    CHECK_SAME_TRAINING(a.net, b.net, a.opt, b.opt);
    CHECK(bg_optim_step_count(b.opt) == 2 * RESUME_N);
    CHECK(a.rng.s[0] == b.rng.s[0] && a.rng.s[1] == b.rng.s[1]);
    // After step 7 the weights are int4 (the schedule's second phase).
    CHECK(bg_quant_state_spec(b.q->states[0])->bits == 4);
    // And a trivially wrong resume is detected: the half-way file differs from the final state.
    run c;
    if (run_init(&c, 7)) {
        bg_checkpoint cc = {.model = c.net};
        CHECK(bg_checkpoint_load(half, &cc) == BG_OK);
        CHECK(memcmp(bg_module_flat_params(c.net, &nb), pa, sizeof(float) * (size_t)na) != 0);
        run_free(&c);
    }
    struct stat sb;
    CHECK(stat(resumed, &sb) == 0);
    printf("resume: MLP 784-32-10 (int4 LSQ weights, int8 inputs, schedule, Dropout, Adam): %lld+%lld steps, "
           "checkpoint %lld bytes (%lld parameter floats, %lld padded)\n",
           (long long)RESUME_N, (long long)RESUME_N, (long long)sb.st_size, (long long)bg_module_numel(a.net),
           (long long)na);
    run_free(&a);
    run_free(&b);
}

// ---------------------------------------------------------------------------
// (b) model descriptions

static void round_trip(const char *label, bg_module *m) {
    if (!m) {
        CHECK_MSG(false, "%s: build failed: %s", label, bg_last_error());
        return;
    }
    char *j1 = bg_model_to_json(m);
    CHECK_MSG(j1 != NULL, "%s: %s", label, bg_last_error());
    bg_module *m2 = NULL;
    CHECK_MSG(j1 && bg_model_from_json(j1, &m2) == BG_OK, "%s: %s", label, bg_last_error());
    char *j2 = m2 ? bg_model_to_json(m2) : NULL;
    CHECK_MSG(j1 && j2 && strcmp(j1, j2) == 0, "%s: descriptions differ:\n%s\n%s", label, j1, j2 ? j2 : "(null)");
    CHECK_MSG(m2 && bg_module_param_count(m2) == bg_module_param_count(m) && bg_module_numel(m2) == bg_module_numel(m),
              "%s: parameter counts differ", label);
    for (int i = 0; m2 && i < bg_module_param_count(m); i++)
        CHECK_MSG(strcmp(bg_module_param_name(m, i), bg_module_param_name(m2, i)) == 0 &&
                      bg_same_shape(bg_module_param(m, i), bg_module_param(m2, i)),
                  "%s: parameter %d differs", label, i);
    free(j1);
    free(j2);
    bg_module_free(m2);
    bg_module_free(m);
}

static void expect_desc_error(const char *json, const char *want) {
    bg_module *m = (bg_module *)&m;
    bg_status s = bg_model_from_json(json, &m);
    CHECK_MSG(s == BG_ERR_FORMAT && m == NULL, "from_json(%s): status %d", json, (int)s);
    CHECK_STR(bg_last_error(), want);
}

static void test_model_desc(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 3);
    // The exact JSON of a small MLP.
    bg_module *mlp = bg_sequential_new(3, (bg_module *[]){bg_linear_new(4, 3, true, &rng), bg_relu_new(),
                                                          bg_linear_new(3, 2, false, &rng)});
    char *j = bg_model_to_json(mlp);
    CHECK_STR(j, "{\"format\":\"bitgrad-model\",\"version\":2,\"model\":{\"kind\":\"Sequential\",\"children\":["
                 "{\"name\":\"0\",\"kind\":\"Linear\",\"in_features\":4,\"out_features\":3,\"bias\":true},"
                 "{\"name\":\"1\",\"kind\":\"ReLU\"},"
                 "{\"name\":\"2\",\"kind\":\"Linear\",\"in_features\":3,\"out_features\":2,\"bias\":false}]}}");
    free(j);
    round_trip("mlp", mlp);
    bg_conv2d_opts co = {.stride = {2, 1}, .padding = {1, 0}, .dilation = {1, 2}, .groups = 2};
    round_trip("cnn", bg_sequential_new(8, (bg_module *[]){
                                               bg_conv2d_new(2, 8, 3, 3, &co, true, &rng),
                                               bg_relu_new(),
                                               bg_max_pool2d_new(2, 0, 0),
                                               bg_conv2d_new(8, 4, 3, 3, NULL, false, &rng),
                                               bg_avg_pool2d_new(3, 2, 1),
                                               bg_flatten_new(),
                                               bg_leaky_relu_new(0.2f),
                                               bg_linear_new(16, 10, true, &rng),
                                           }));
    round_trip("norms", bg_sequential_new(7, (bg_module *[]){
                                                 bg_embedding_new(50, 16, &rng),
                                                 bg_layernorm_new(16, 1e-5f, true),
                                                 bg_rmsnorm_new(16, 1e-6f),
                                                 bg_gelu_new(true),
                                                 bg_dropout_new(0.25f, 4),
                                                 bg_silu_new(),
                                                 bg_sequential_new(2, (bg_module *[]){bg_tanh_new(), bg_sigmoid_new()}),
                                             }));
    // Quantized layers, with a disabled quantizer (fp32 phase of a schedule).
    bg_module *q = bg_sequential_new(3, (bg_module *[]){bg_conv2d_new(1, 4, 3, 3, NULL, true, &rng),
                                                        bg_flatten_new(), bg_linear_new(4 * 26 * 26, 10, true, &rng)});
    CHECK(q && bg_quantize_model(q, "int4:per_channel:lsq", "int8:moving_minmax") == BG_OK);
    bg_quant_state_set_enabled(bg_qlayer_input_state(bg_qlayer_at(q, 1)), false);
    j = q ? bg_model_to_json(q) : NULL;
    CHECK_MSG(j && strstr(j, "{\"name\":\"2\",\"kind\":\"QLinear\",\"in_features\":2704,\"out_features\":10,\"bias\":true,"
                             "\"weight_spec\":\"int4:per_channel=0:lsq\","
                             "\"weight_enabled\":true,\"input_spec\":\"int8:moving_minmax=0.00999999978\","
                             "\"input_enabled\":false}"),
              "qlayers: %s", j ? j : bg_last_error());
    bg_module *q2 = NULL;
    CHECK(j && bg_model_from_json(j, &q2) == BG_OK);
    CHECK(q2 && !bg_quant_state_enabled(bg_qlayer_input_state(bg_qlayer_at(q2, 1))) &&
          bg_quant_state_enabled(bg_qlayer_weight_state(bg_qlayer_at(q2, 1))));
    bg_module_free(q2);
    free(j);
    round_trip("qlayers", q);
    round_trip("qconv", bg_sequential_new(2, (bg_module *[]){
                                                  bg_qconv2d_new(4, 8, 3, 1, &co, false, NULL, NULL, &rng),
                                                  bg_qembedding_new(10, 4, NULL, &rng),
                                              }));
    bg_module *bit = bg_sequential_new(3, (bg_module *[]){bg_linear_new(8, 16, false, &rng), bg_relu_new(),
                                                          bg_linear_new(16, 4, false, &rng)});
    CHECK(bit && bg_bitnet_model(bit) == BG_OK);
    j = bit ? bg_model_to_json(bit) : NULL;
    CHECK_MSG(j && strstr(j, "{\"name\":\"0\",\"kind\":\"BitLinear\",\"in_features\":8,\"out_features\":16,"
                             "\"weight_spec\":\"ternary:absmean\",\"weight_enabled\":true,\"input_spec\":\"int8:per_token:absmax\""),
              "bitlinear: %s", j ? j : "");
    free(j);
    round_trip("bitlinear", bit);

    // Errors name the layer and the field.
    expect_desc_error("{\"format\":\"bitgrad-model\",\"version\":1,\"model\":{\"kind\":\"Sequential\",\"children\":"
                      "[{\"kind\":\"ReLU\"},{\"kind\":\"ReLU\"},{\"kind\":\"Foo\"}]}}",
                      "model_desc: layer 2: unknown kind \"Foo\": register it with bg_module_register_type before loading");
    expect_desc_error("{\"format\":\"bitgrad-model\",\"version\":1,\"model\":{\"kind\":\"Sequential\",\"children\":"
                      "[{\"kind\":\"Linear\",\"in_features\":4,\"bias\":true}]}}",
                      "model_desc: layer 0: missing field \"out_features\"");
    expect_desc_error("{\"format\":\"bitgrad-model\",\"version\":1,\"model\":{\"kind\":\"Linear\",\"in_features\":0,"
                      "\"out_features\":2,\"bias\":true}}",
                      "model_desc: layer (root): field \"in_features\" must be an integer in [1, 2147483648]");
    expect_desc_error("{\"format\":\"bitgrad-model\",\"version\":1,\"model\":{\"kind\":\"Linear\",\"in_features\":2147483648,"
                      "\"out_features\":2147483648,\"bias\":true}}",
                      "model_desc: layer (root): the weight would hold more than 4294967296 elements");
    expect_desc_error("{\"format\":\"bitgrad-model\",\"version\":1,\"model\":{\"kind\":\"Sequential\",\"children\":"
                      "[{\"kind\":\"Sequential\",\"children\":[{\"kind\":\"QLinear\",\"in_features\":4,"
                      "\"out_features\":2,\"bias\":true,\"weight_spec\":\"int9\"}]}]}}",
                      "model_desc: layer 0.0: field \"weight_spec\": quant_spec: bits must be 1..8, got 9 in \"int9\"");
    expect_desc_error("{\"format\":\"bitgrad-model\",\"version\":3,\"model\":{}}",
                      "model_desc: unsupported version 3 (this build reads versions 1 to 2)");
    expect_desc_error("{\"format\":\"bitgrad-model\",", "model_desc: malformed JSON: string or '}' expected near end of file (line 1, column 26)");
}

// ---------------------------------------------------------------------------
// (c) load errors

/* The small model of the error tests: Sequential(Linear(4,3), ReLU,
 * Linear(3,2)), Adam, an rng; and a snapshot of all three. */
typedef struct small {
    bg_module *net;
    bg_optim *opt;
    bg_rng rng;
    float params[64], m1[64];
    bg_rng rng0;
} small;

static void small_init(small *s, uint64_t seed, int64_t out2) {
    bg_rng r;
    bg_rng_seed(&r, seed);
    s->net = bg_sequential_new(3, (bg_module *[]){bg_linear_new(4, 3, true, &r), bg_relu_new(),
                                                  bg_linear_new(3, out2, true, &r)});
    s->opt = bg_adam_new(s->net, NULL);
    bg_rng_seed(&s->rng, seed + 100);
    int64_t n;
    float *st = bg_optim_state(s->opt, 0, &(const char *){NULL}, &n);
    for (int64_t i = 0; i < n; i++) st[i] = (float)(seed + (uint64_t)i);
    bg_optim_set_step_count(s->opt, (int64_t)seed);
    memcpy(s->params, bg_module_flat_params(s->net, &n), sizeof(float) * (size_t)n);
    memcpy(s->m1, st, sizeof(float) * (size_t)n);
    s->rng0 = s->rng;
}

static bool small_unchanged(small *s) {
    int64_t n;
    const float *p = bg_module_flat_params(s->net, &n);
    const float *m = bg_optim_state(s->opt, 0, &(const char *){NULL}, &n);
    return memcmp(p, s->params, sizeof(float) * (size_t)n) == 0 && memcmp(m, s->m1, sizeof(float) * (size_t)n) == 0 &&
           s->rng.s[0] == s->rng0.s[0] && s->rng.s[1] == s->rng0.s[1];
}

static void small_free(small *s) {
    bg_optim_free(s->opt);
    bg_module_free(s->net);
}

/* Copies src into dst, skipping tensor `drop`, replacing tensor `name` by
 * `repl` (when given) and metadata `key` by `value` (when given). */
static void rewrite(const char *src, const char *dst, const char *drop, const char *name, const bg_tensor *repl,
                    const char *key, const char *value) {
    bg_safetensors *st;
    if (bg_safetensors_open(src, &st) != BG_OK) {
        CHECK_MSG(false, "rewrite: %s", bg_last_error());
        return;
    }
    bg_safetensors_writer *w = bg_safetensors_writer_new();
    for (int i = 0; i < bg_safetensors_count(st); i++) {
        const char *n = bg_safetensors_name(st, i);
        bg_tensor t;
        bg_safetensors_get(st, n, &t);
        if (drop && strcmp(n, drop) == 0) continue;
        bg_safetensors_writer_add(w, n, name && strcmp(n, name) == 0 ? repl : &t);
    }
    static const char *const keys[] = {"format", "version", "model", "specs", "step", "epoch", "batch_in_epoch", "optim"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        const char *v = bg_safetensors_metadata(st, keys[i]);
        if (key && strcmp(key, keys[i]) == 0) v = value;
        if (v) bg_safetensors_writer_meta(w, keys[i], v);
    }
    CHECK(bg_safetensors_writer_save(w, dst) == BG_OK);
    bg_safetensors_writer_free(w);
    bg_safetensors_free(st);
}

static void expect_load_fails(small *s, const char *path, bg_status want, const char *msg) {
    bg_checkpoint ck = {.model = s->net, .opt = s->opt, .rng = &s->rng, .step = -5};
    bg_status got = bg_checkpoint_load(path, &ck);
    CHECK_MSG(got == want, "load %s: status %s, want %s (%s)", path, bg_status_str(got), bg_status_str(want),
              bg_last_error());
    char full[512];
    snprintf(full, sizeof full, msg, path);
    CHECK_STR(bg_last_error(), full);
    CHECK_MSG(small_unchanged(s) && ck.step == -5, "load %s: the model changed on a failed load", path);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, n, f);
        fclose(f);
    }
}

static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)len + 1);
    *n = buf ? fread(buf, 1, (size_t)len, f) : 0;
    fclose(f);
    return buf;
}

/* A raw safetensors file: header json, then data_len zero bytes. */
static void write_raw(const char *path, const char *json, size_t data_len) {
    size_t h = strlen(json), n = 8 + h + data_len;
    unsigned char *buf = calloc(1, n);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((unsigned long long)h >> (8 * i));
    memcpy(buf + 8, json, h);
    write_bytes(path, buf, n);
    free(buf);
}

static void test_load_errors(void) {
    char good[128], bad[128];
    path_in_dir(good, sizeof good, "good.ckpt");
    path_in_dir(bad, sizeof bad, "bad.ckpt");
    small src, s;
    small_init(&src, 1, 2);
    bg_checkpoint ck = {.model = src.net, .opt = src.opt, .rng = &src.rng, .step = 7, .epoch = 1, .batch_in_epoch = 3};
    CHECK(bg_checkpoint_save(good, &ck) == BG_OK);
    small_init(&s, 2, 2);

    // A good load works (and is the reference for the bad ones).
    small t;
    small_init(&t, 3, 2);
    bg_checkpoint ct = {.model = t.net, .opt = t.opt, .rng = &t.rng};
    CHECK_MSG(bg_checkpoint_load(good, &ct) == BG_OK, "%s", bg_last_error());
    CHECK(ct.step == 7 && ct.epoch == 1 && ct.batch_in_epoch == 3 && bg_optim_step_count(t.opt) == 1);
    int64_t n;
    CHECK(memcmp(bg_module_flat_params(t.net, &n), src.params, sizeof(float) * 32) == 0);
    CHECK(t.rng.s[0] == src.rng.s[0] && t.rng.s[1] == src.rng.s[1]);
    small_free(&t);

    size_t len;
    unsigned char *bytes = read_bytes(good, &len);
    if (!bytes) return;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | bytes[i];
    // Truncated: the data section loses its last 40 bytes.
    write_bytes(bad, bytes, len - 40);
    char msg[512];
    snprintf(msg, sizeof msg, "safetensors: %%s: tensor \"optim.exp_avg_sq\" data_offsets [348,604] are out of range: the data section is %llu bytes",
             (unsigned long long)(len - 40 - 8 - hlen));
    expect_load_fails(&s, bad, BG_ERR_FORMAT, msg);
    // Truncated inside the header.
    write_bytes(bad, bytes, 100);
    snprintf(msg, sizeof msg, "safetensors: %%s: header length %llu exceeds the file size 100", (unsigned long long)hlen);
    expect_load_fails(&s, bad, BG_ERR_FORMAT, msg);
    // Bad header length.
    unsigned char *b2 = malloc(len);
    memcpy(b2, bytes, len);
    b2[7] = 0x40;
    write_bytes(bad, b2, len);
    snprintf(msg, sizeof msg, "safetensors: %%s: header length %llu exceeds the file size %llu",
             (unsigned long long)(hlen | (0x40ULL << 56)), (unsigned long long)len);
    expect_load_fails(&s, bad, BG_ERR_FORMAT, msg);
    // Malformed JSON: the header's first '{' broken.
    memcpy(b2, bytes, len);
    b2[8] = '[';
    write_bytes(bad, b2, len);
    expect_load_fails(&s, bad, BG_ERR_FORMAT,
                      "safetensors: %s: malformed JSON header: ']' expected near ':' (line 1, column 16)");
    memcpy(b2, bytes, len);
    b2[9] = '}';
    write_bytes(bad, b2, len);
    expect_load_fails(&s, bad, BG_ERR_FORMAT,
                      "safetensors: %s: malformed JSON header: end of file expected near '_' (line 1, column 3)");
    free(b2);
    // Overlapping and out-of-range offsets, unknown dtype (raw files).
    write_raw(bad, "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
    expect_load_fails(&s, bad, BG_ERR_FORMAT,
                      "safetensors: %s: tensors \"0.weight\" and \"0.bias\" overlap: [4,12) starts before 8");
    write_raw(bad, "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8);
    expect_load_fails(&s, bad, BG_ERR_FORMAT,
                      "safetensors: %s: tensor \"0.weight\" data_offsets [0,16] are out of range: the data section is 8 bytes");
    write_raw(bad, "{\"0.weight\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]}}", 8);
    expect_load_fails(&s, bad, BG_ERR_FORMAT,
                      "safetensors: %s: tensor \"0.weight\" has unknown dtype \"F16\" (supported: F32, I32, I8, U8)");
    // A valid safetensors file that is not a checkpoint.
    write_raw(bad, "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    expect_load_fails(&s, bad, BG_ERR_FORMAT,
                      "checkpoint_load: %s: not a bitgrad checkpoint (__metadata__ \"format\" is not \"bitgrad-checkpoint\")");
    // Wrong format version.
    rewrite(good, bad, NULL, NULL, NULL, "version", "2");
    expect_load_fails(&s, bad, BG_ERR_FORMAT,
                      "checkpoint_load: %s: unsupported format version \"2\" (this build reads version 1)");
    // A dtype that does not fit: 0.bias as I32.
    int32_t ib[3] = {1, 2, 3};
    bg_tensor ti = {.dtype = BG_DTYPE_I32, .ndim = 1, .shape = {3}, .stride = {1}, .data = ib};
    rewrite(good, bad, NULL, "0.bias", &ti, NULL, NULL);
    expect_load_fails(&s, bad, BG_ERR_DTYPE, "checkpoint_load: %s: 0.bias is i32 in the file, want f32");
    // A shape that does not fit the model (the description still matches).
    float wf[12] = {0};
    bg_tensor tw = {.dtype = BG_DTYPE_F32, .ndim = 2, .shape = {4, 3}, .stride = {3, 1}, .data = wf};
    rewrite(good, bad, NULL, "0.weight", &tw, NULL, NULL);
    expect_load_fails(&s, bad, BG_ERR_SHAPE, "checkpoint_load: %s: 0.weight is [4,3] in the file, [3,4] in the model");
    // A missing parameter.
    rewrite(good, bad, "2.bias", NULL, NULL, NULL, NULL);
    expect_load_fails(&s, bad, BG_ERR_FORMAT, "checkpoint_load: %s: missing parameter \"2.bias\"");
    // A missing optimizer buffer (found after the parameters were checked).
    rewrite(good, bad, "optim.exp_avg_sq", NULL, NULL, NULL, NULL);
    expect_load_fails(&s, bad, BG_ERR_FORMAT, "checkpoint_load: %s: missing optimizer state \"optim.exp_avg_sq\"");
    // Bad metadata.
    rewrite(good, bad, NULL, NULL, NULL, "step", "-3");
    expect_load_fails(&s, bad, BG_ERR_FORMAT,
                      "checkpoint_load: %s: __metadata__ \"step\" is not a non-negative integer: \"-3\"");
    rewrite(good, bad, NULL, NULL, NULL, "model", "{\"format\":");
    expect_load_fails(&s, bad, BG_ERR_FORMAT,
                      "checkpoint_load: %s: malformed model description: unexpected token near end of file (line 1, column 10)");
    rewrite(good, bad, NULL, NULL, NULL, "optim", "{\"kind\":\"SGD\",\"lr\":0.1,\"step_count\":1,\"lr_schedule\":null}");
    expect_load_fails(&s, bad, BG_ERR_ARG, "checkpoint_load: %s: the optimizer is SGD in the file, Adam here");
    // The model does not fit the description: a model with 5 outputs.
    small o5;
    small_init(&o5, 4, 5);
    bg_checkpoint c5 = {.model = o5.net};
    CHECK(bg_checkpoint_load(good, &c5) == BG_ERR_SHAPE);
    snprintf(msg, sizeof msg, "checkpoint_load: %s: layer 2: out_features is 2 in the file, 5 in the model", good);
    CHECK_STR(bg_last_error(), msg);
    CHECK(small_unchanged(&o5));
    small_free(&o5);
    // A file without optimizer state, loaded with an optimizer.
    bg_checkpoint only = {.model = src.net};
    CHECK(bg_checkpoint_save(bad, &only) == BG_OK);
    expect_load_fails(&s, bad, BG_ERR_FORMAT, "checkpoint_load: %s: the file holds no optimizer state");
    // A missing file.
    path_in_dir(bad, sizeof bad, "nope/none.ckpt");
    expect_load_fails(&s, bad, BG_ERR_IO, "safetensors: %s: cannot open: No such file or directory");
    free(bytes);
    small_free(&s);
    small_free(&src);
}

// ---------------------------------------------------------------------------
// (d) atomic writes

static int count_dir_entries(void) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void test_atomic_write(void) {
    char path[128];
    path_in_dir(path, sizeof path, "atomic.ckpt");
    small a, b;
    small_init(&a, 5, 2);
    bg_checkpoint ca = {.model = a.net, .opt = a.opt};
    CHECK(bg_checkpoint_save(path, &ca) == BG_OK);
    size_t len0;
    unsigned char *before = read_bytes(path, &len0);
    int entries = count_dir_entries();
    // A bigger model's save runs into a 1 KiB file size limit half-way (as
    // on a full disk: write() fails with EFBIG after 1024 bytes).
    bg_rng r;
    bg_rng_seed(&r, 9);
    bg_module *big = bg_sequential_new(1, (bg_module *[]){bg_linear_new(64, 64, true, &r)});
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {.rlim_cur = 1024, .rlim_max = 1024};
        setrlimit(RLIMIT_FSIZE, &rl);
        bg_checkpoint cb = {.model = big};
        bg_status s = bg_checkpoint_save(path, &cb);
        const char *e = bg_last_error();
        // "safetensors: <path>: cannot write <path>.tmp-XXXXXX: File too large"
        bool ok = s == BG_ERR_IO && strstr(e, "cannot write") && strstr(e, "File too large");
        if (!ok) fprintf(stderr, "child: status %d: %s\n", (int)s, e);
        _exit(ok ? 0 : 1);
    }
    int wst = 0;
    waitpid(pid, &wst, 0);
    CHECK_MSG(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "the limited save did not fail as expected (%d)", wst);
    size_t len1;
    unsigned char *after = read_bytes(path, &len1);
    CHECK(before && after && len0 == len1 && memcmp(before, after, len0) == 0);
    CHECK_MSG(count_dir_entries() == entries, "a temporary file was left behind: %d entries, want %d",
              count_dir_entries(), entries);
    // The old checkpoint still loads.
    small_init(&b, 6, 2);
    bg_checkpoint cb = {.model = b.net, .opt = b.opt};
    CHECK(bg_checkpoint_load(path, &cb) == BG_OK);
    int64_t n;
    const float *pb = bg_module_flat_params(b.net, &n);
    CHECK(n == 64 && memcmp(pb, a.params, sizeof(float) * (size_t)n) == 0);
    // A save into a folder that does not exist fails and touches nothing.
    char nodir[128];
    path_in_dir(nodir, sizeof nodir, "missing/x.ckpt");
    CHECK(bg_checkpoint_save(nodir, &ca) == BG_ERR_IO);
    free(before);
    free(after);
    bg_module_free(big);
    small_free(&a);
    small_free(&b);
}

// ---------------------------------------------------------------------------
// load_model: everything from the file alone

static void test_load_model(void) {
    char path[128];
    path_in_dir(path, sizeof path, "model.ckpt");
    bg_rng r;
    bg_rng_seed(&r, 21);
    bg_module *net = bg_sequential_new(4, (bg_module *[]){bg_conv2d_new(1, 4, 3, 3, NULL, true, &r), bg_relu_new(),
                                                          bg_flatten_new(), bg_linear_new(4 * 6 * 6, 3, true, &r)});
    CHECK(net && bg_quantize_model(net, "int4:per_channel:lsq", "int8:moving_minmax") == BG_OK);
    // One forward observes ranges and initialises the LSQ steps.
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *x = bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(2, 1, 8, 8));
    bg_init_uniform(x, &r, -1.0f, 1.0f);
    bg_tensor *y1 = bg_module_forward(ctx, net, x);
    bg_model_set_quant_mode(net, BG_QUANT_MODE_EVAL);
    y1 = bg_module_forward(ctx, net, x);
    CHECK(bg_checkpoint_save(path, &(bg_checkpoint){.model = net}) == BG_OK);
    bg_module *back = NULL;
    CHECK_MSG(bg_checkpoint_load_model(path, &back) == BG_OK, "%s", bg_last_error());
    bg_tensor *y2 = back ? bg_module_forward(ctx, back, x) : NULL;
    CHECK_MSG(y1 && y2 && memcmp(y1->data, y2->data, bg_nbytes(y1)) == 0, "load_model: outputs differ");
    int64_t n1, n2;
    const float *p1 = bg_module_flat_params(net, &n1), *p2 = back ? bg_module_flat_params(back, &n2) : NULL;
    CHECK(p2 && n1 == n2 && memcmp(p1, p2, sizeof(float) * (size_t)n1) == 0);
    bg_module_free(back);
    bg_module_free(net);
    // BitLinear (per-token activations: no stored scales) with a LayerNorm.
    net = bg_sequential_new(4, (bg_module *[]){bg_linear_new(8, 16, false, &r), bg_layernorm_new(16, 1e-5f, true),
                                               bg_gelu_new(false), bg_linear_new(16, 4, false, &r)});
    CHECK(net && bg_bitnet_model(net) == BG_OK);
    bg_init_uniform(bg_module_find_param(net, "1.weight"), &r, 0.5f, 1.5f);
    x = bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(3, 8));
    bg_init_uniform(x, &r, -1.0f, 1.0f);
    y1 = bg_module_forward(ctx, net, x);
    CHECK(bg_checkpoint_save(path, &(bg_checkpoint){.model = net}) == BG_OK);
    back = NULL;
    CHECK_MSG(bg_checkpoint_load_model(path, &back) == BG_OK, "%s", bg_last_error());
    y2 = back ? bg_module_forward(ctx, back, x) : NULL;
    CHECK_MSG(y1 && y2 && memcmp(y1->data, y2->data, bg_nbytes(y1)) == 0, "load_model (BitLinear): outputs differ");
    CHECK(back && strcmp(bg_module_kind(bg_module_child(back, 3)), "BitLinear") == 0);
    bg_ctx_free(ctx);
    bg_module_free(back);
    bg_module_free(net);
}

// ---------------------------------------------------------------------------
// sizes of the Fashion-MNIST MLP's checkpoints (784-512-512-10)

static long data_bytes(const char *path, long *file) {
    size_t len;
    unsigned char *b = read_bytes(path, &len);
    if (!b) return -1;
    unsigned long long h = 0;
    for (int i = 7; i >= 0; i--) h = h << 8 | b[i];
    free(b);
    *file = (long)len;
    return (long)(len - 8 - h);
}

static void test_mlp_sizes(void) {
    char path[128];
    path_in_dir(path, sizeof path, "mlp.ckpt");
    bg_rng r;
    bg_rng_seed(&r, 0);
    bg_module *mlp = bg_sequential_new(5, (bg_module *[]){bg_linear_new(784, 512, true, &r), bg_relu_new(),
                                                          bg_linear_new(512, 512, true, &r), bg_relu_new(),
                                                          bg_linear_new(512, 10, true, &r)});
    int64_t numel = bg_module_numel(mlp), padded;
    bg_module_flat_params(mlp, &padded);
    CHECK(numel == 669706);
    long file, data;
    CHECK(bg_checkpoint_save(path, &(bg_checkpoint){.model = mlp}) == BG_OK);
    data = data_bytes(path, &file);
    CHECK(data == 4 * 669706);   // the parameters exactly, no padding
    printf("MLP 784-512-512-10 checkpoint, parameters only: %ld bytes (%ld data, %ld header+length)\n", file, data,
           file - data);
    bg_optim *opt = bg_adam_new(mlp, NULL);
    bg_rng train;
    bg_rng_seed(&train, 1);
    CHECK(bg_checkpoint_save(path, &(bg_checkpoint){.model = mlp, .opt = opt, .rng = &train}) == BG_OK);
    data = data_bytes(path, &file);
    CHECK(data == 4 * 669706 + 2 * 4 * padded + 16);   // + exp_avg, exp_avg_sq (flat, padded) + rng
    printf("MLP checkpoint with Adam state and RNG: %ld bytes (%ld data)\n", file, data);
    bg_optim_free(opt);
    CHECK(bg_bitnet_model(mlp) == BG_OK);
    opt = bg_adam_new(mlp, NULL);
    CHECK(bg_checkpoint_save(path, &(bg_checkpoint){.model = mlp, .opt = opt, .rng = &train}) == BG_OK);
    data = data_bytes(path, &file);
    printf("ternary (BitLinear) MLP checkpoint with Adam state: %ld bytes (%ld data; latent weights %lld bytes)\n",
           file, data, (long long)(4 * bg_module_numel(mlp)));
    bg_optim_free(opt);
    bg_module_free(mlp);
}

// ---------------------------------------------------------------------------
// bg_batcher_seek: the batch after a seek is the one an uninterrupted
// iteration returns there

static void test_batcher_seek(void) {
    bg_dataset *full;
    if (bg_fmnist_load(NULL, BG_FMNIST_TEST, &full) != BG_OK) {
        CHECK_MSG(false, "%s", bg_last_error());
        return;
    }
    bg_dataset sub = *full;
    sub.n = 100;
    bg_batcher_opts bo = {.batch_size = 32, .shuffle = true, .seed = 5};
    bg_batcher *a, *b;
    bg_ctx *ctx = bg_ctx_new(0);
    CHECK(bg_batcher_new(&sub, &bo, &a) == BG_OK && bg_batcher_new(&sub, &bo, &b) == BG_OK);
    bg_tensor *x, *y;
    // a: epoch 0 whole (4 batches), epoch 1 up to its batch 2.
    while (bg_batcher_next(a, ctx, &x, &y)) bg_ctx_reset(ctx);
    for (int i = 0; i < 3; i++) CHECK(bg_batcher_next(a, ctx, &x, &y));
    CHECK(bg_batcher_seek(b, 1, 2) == BG_OK);
    CHECK(bg_batcher_next(b, ctx, &x, &y));
    int64_t na, nb;
    const int64_t *ia = bg_batcher_indices(a, &na), *ib = bg_batcher_indices(b, &nb);
    CHECK(na == 32 && nb == 32 && memcmp(ia, ib, sizeof(int64_t) * 32) == 0);
    // The last, partial batch (100 = 3*32 + 4), then the end of the epoch.
    CHECK(bg_batcher_seek(b, 1, 3) == BG_OK && bg_batcher_next(b, ctx, &x, &y) && y->shape[0] == 4);
    CHECK(!bg_batcher_next(b, ctx, &x, &y) && bg_batcher_epoch(b) == 2);
    CHECK(bg_batcher_seek(b, 0, 5) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "batcher_seek: epoch 0, batch 5 out of range (0..4 batches)");
    bg_ctx_free(ctx);
    bg_batcher_free(a);
    bg_batcher_free(b);
    bg_dataset_free(full);
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "resume") == 0) return resume_child(argv[2], argv[3]);
    snprintf(dir, sizeof dir, "/tmp/bg_ckpt_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char self[4096];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    self[k > 0 ? k : 0] = '\0';
    test_model_desc();
    test_load_errors();
    test_atomic_write();
    test_load_model();
    test_mlp_sizes();
    test_batcher_seek();
    test_exact_resume(self);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return bg_test_finish();
}
