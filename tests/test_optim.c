/* test_optim.c — SGD (plain, momentum + dampening + weight decay, Nesterov),
 * Adam (coupled decay, custom betas/eps) and AdamW for three steps on a
 * 3-element parameter with fixed gradients, against the values PyTorch 1.13
 * gives for the same inputs (torch.optim, printed with %.9g; the script is in
 * the comment below); frozen parameters; state buffers; schedules at chosen
 * steps; gradient clipping; error messages.
 *
 *   p = torch.tensor([0.5, -1.0, 2.0], requires_grad=True); o = Optim([p], ...)
 *   for g in G: p.grad = torch.tensor(g); o.step(); print(p)
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/test_util.h"

#define PI 3.14159265358979323846

static const float P0[3] = {0.5f, -1.0f, 2.0f};
static const float GRADS[3][3] = {{0.1f, -0.2f, 0.3f}, {-0.4f, 0.5f, 0.05f}, {0.2f, 0.2f, -0.6f}};

/* A parameter-only module: y = x * w, w [n]. */
typedef struct vec_state {
    bg_tensor *w;
} vec_state;

static bg_tensor *vec_forward(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    vec_state *s = bg_module_state(m);
    return bg_mul(ctx, x, s->w);
}

static const bg_module_type vec_type = {.kind = "Vec", .forward = vec_forward, .free_state = free};

static bg_module *vec_new(int64_t n, const float *init) {
    vec_state *s = calloc(1, sizeof *s);
    bg_module *m = bg_module_new(&vec_type, s);
    if (!m) return NULL;
    s->w = bg_module_add_param(m, "w", BG_SHAPE(n));
    if (init) memcpy(s->w->data, init, (size_t)n * sizeof(float));
    bg_module_finalize(m);
    return m;
}

static float *vec_of(bg_module *m) { return bg_f32(bg_module_param(m, 0)); }

/* Runs three steps with GRADS and compares with want[step][i]. */
static void run3(const char *what, bg_module *m, bg_optim *o, const float want[3][3]) {
    bg_tensor *w = bg_module_param(m, 0);
    for (int step = 0; step < 3; step++) {
        memcpy(w->grad->data, GRADS[step], sizeof GRADS[step]);
        CHECK(bg_optim_step(o) == BG_OK);
        char label[64];
        snprintf(label, sizeof label, "%s step %d", what, step + 1);
        CHECK_ARRAYS(label, bg_f32(w), want[step], 3, 1e-7, 2e-6);
    }
    CHECK(bg_optim_step_count(o) == 3);
    // The padding after the 3 floats is still zero.
    int64_t n;
    float *P = bg_module_flat_params(m, &n);
    bool pad = n == 16;
    for (int64_t i = 3; i < n; i++) pad &= P[i] == 0.0f;
    CHECK_MSG(pad, "%s: padding changed", what);
}

static void test_sgd(void) {
    static const float plain[3][3] = {{0.49000001f, -0.980000019f, 1.97000003f},
                                      {0.530000031f, -1.02999997f, 1.96500003f},
                                      {0.51000005f, -1.04999995f, 2.0250001f}};
    bg_module *m = vec_new(3, P0);
    bg_optim *o = bg_sgd_new(m, &(bg_sgd_opts){.lr = 0.1f});
    CHECK(o && bg_optim_state_count(o) == 0);
    CHECK_STR(bg_optim_kind(o), "SGD");
    if (o) run3("sgd", m, o, plain);
    bg_optim_free(o);
    bg_module_free(m);

    // momentum 0.9, dampening 0.1, weight decay 0.01: the first step's buffer
    // is the gradient itself (no dampening), later ones are damped.
    static const float mom[3][3] = {{0.489499986f, -0.978999972f, 1.96800005f},
                                    {0.515609443f, -1.00421882f, 1.9329288f},
                                    {0.52064389f, -1.04401207f, 1.95362508f}};
    static const float mom_buf[3] = {-0.0503445677f, 0.397932112f, -0.206962824f};
    m = vec_new(3, P0);
    o = bg_sgd_new(m, &(bg_sgd_opts){.lr = 0.1f, .momentum = 0.9f, .dampening = 0.1f, .weight_decay = 0.01f});
    CHECK(o && bg_optim_state_count(o) == 1);
    if (o) {
        run3("sgd momentum", m, o, mom);
        const char *name;
        int64_t n;
        float *buf = bg_optim_state(o, 0, &name, &n);
        CHECK_STR(name, "momentum_buffer");
        CHECK(buf && n == 16);
        if (buf) CHECK_ARRAYS("momentum_buffer", buf, mom_buf, 3, 1e-7, 2e-6);
        CHECK(bg_optim_state(o, 1, &name, &n) == NULL && name == NULL && n == 0);
    }
    bg_optim_free(o);
    bg_module_free(m);

    static const float nest[3][3] = {{0.480049998f, -0.960099995f, 1.93920004f},
                                     {0.546632886f, -1.03626585f, 1.90009558f},
                                     {0.531950951f, -1.09671032f, 1.98153663f}};
    m = vec_new(3, P0);
    o = bg_sgd_new(m, &(bg_sgd_opts){.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.01f, .nesterov = true});
    if (o) run3("sgd nesterov", m, o, nest);
    bg_optim_free(o);

    CHECK(bg_sgd_new(m, &(bg_sgd_opts){.lr = 0.1f, .nesterov = true}) == NULL);
    CHECK_STR(bg_last_error(), "sgd: nesterov needs momentum > 0 and dampening = 0: momentum 0, dampening 0");
    CHECK(bg_sgd_new(m, &(bg_sgd_opts){.lr = 0.0f}) == NULL);
    CHECK_STR(bg_last_error(), "sgd: lr must be positive: 0");
    CHECK(bg_sgd_new(NULL, NULL) == NULL);
    CHECK_STR(bg_last_error(), "sgd: module is NULL");
    bg_module *relu = bg_relu_new();
    CHECK(bg_sgd_new(relu, NULL) == NULL);
    CHECK_STR(bg_last_error(), "sgd: the ReLU has no parameters (or is not finalized)");
    bg_module_free(relu);
    bg_module_free(m);
}

static void test_adam(void) {
    // Adam with coupled weight decay 0.1 (added to the gradient).
    static const float adam_wd[3][3] = {{0.49000001f, -0.99000001f, 1.99000001f},
                                        {0.494211227f, -0.991946876f, 1.98068404f},
                                        {0.493440062f, -0.994683564f, 1.97857392f}};
    static const float adam_wd_m[3] = {0.00550211128f, 0.0218705311f, 0.0227168351f};
    static const float adam_wd_v[3] = {0.000207743724f, 0.000260622037f, 0.000472988264f};
    bg_module *m = vec_new(3, P0);
    bg_adam_opts ao = BG_ADAM_DEFAULTS;
    ao.lr = 0.01f;
    ao.weight_decay = 0.1f;
    bg_optim *o = bg_adam_new(m, &ao);
    CHECK(o && bg_optim_state_count(o) == 2);
    CHECK_STR(bg_optim_kind(o), "Adam");
    if (o) {
        run3("adam wd", m, o, adam_wd);
        const char *n0, *n1;
        float *em = bg_optim_state(o, 0, &n0, NULL), *ev = bg_optim_state(o, 1, &n1, NULL);
        CHECK_STR(n0, "exp_avg");
        CHECK_STR(n1, "exp_avg_sq");
        CHECK_ARRAYS("exp_avg", em, adam_wd_m, 3, 1e-9, 2e-6);
        CHECK_ARRAYS("exp_avg_sq", ev, adam_wd_v, 3, 1e-10, 2e-6);
    }
    bg_optim_free(o);
    bg_module_free(m);

    // Other betas and a large eps: the bias corrections matter at each step.
    static const float adam_b[3][3] = {{0.450495064f, -0.950248778f, 1.95016611f},
                                       {0.489482671f, -0.984526694f, 1.91851592f},
                                       {0.48680988f, -1.01892185f, 1.95407784f}};
    m = vec_new(3, P0);
    o = bg_adam_new(m, &(bg_adam_opts){.lr = 0.05f, .beta1 = 0.5f, .beta2 = 0.9f, .eps = 1e-3f});
    if (o) run3("adam betas", m, o, adam_b);
    bg_optim_free(o);

    // AdamW: p *= 1 - lr*wd before the Adam step.
    static const float adamw[3][3] = {{0.489500016f, -0.989000022f, 1.98800004f},
                                      {0.494605541f, -0.99243319f, 1.97817886f},
                                      {0.495212674f, -0.99687022f, 1.97916424f}};
    bg_module_free(m);
    m = vec_new(3, P0);
    ao = BG_ADAMW_DEFAULTS;
    ao.lr = 0.01f;
    ao.weight_decay = 0.1f;
    o = bg_adamw_new(m, &ao);
    CHECK_STR(bg_optim_kind(o), "AdamW");
    if (o) run3("adamw", m, o, adamw);
    bg_optim_free(o);

    CHECK(bg_adam_new(m, &(bg_adam_opts){.lr = 1e-3f, .beta1 = 1.0f, .beta2 = 0.999f}) == NULL);
    CHECK_STR(bg_last_error(), "adam: betas must be in [0,1): 1, 0.999");
    CHECK(bg_adamw_new(m, &(bg_adam_opts){.lr = -1.0f}) == NULL);
    CHECK_STR(bg_last_error(), "adamw: lr must be positive: -1");
    bg_module_free(m);
}

static void test_frozen_and_refinalize(void) {
    // Two Linear layers; the first frozen. AdamW must leave it untouched
    // (no decay either) and update the second.
    bg_rng rng;
    bg_rng_seed(&rng, 3);
    bg_module *net = bg_sequential_new(2, (bg_module *[]){bg_linear_new(3, 4, true, &rng),
                                                          bg_linear_new(4, 2, true, &rng)});
    CHECK(net != NULL);
    if (!net) return;
    bg_optim *o = bg_adamw_new(net, NULL);
    CHECK(o != NULL);
    if (!o) return;
    bg_module_freeze(bg_module_child(net, 0), true);
    int64_t n;
    float *P = bg_module_flat_params(net, &n), *G = bg_module_flat_grads(net, NULL);
    float *before = malloc((size_t)n * sizeof(float));
    memcpy(before, P, (size_t)n * sizeof(float));
    for (int i = 0; i < bg_module_param_count(net); i++) {
        bg_tensor *t = bg_module_param(net, i);
        for (int64_t k = 0; k < bg_numel(t); k++) bg_f32(t->grad)[k] = 0.5f;
    }
    CHECK(bg_optim_step(o) == BG_OK);
    bool frozen_same = true, trained_moved = true;
    for (int i = 0; i < bg_module_param_count(net); i++) {
        bg_tensor *t = bg_module_param(net, i);
        int64_t off = bg_module_param_offset(net, i) / 4;
        for (int64_t k = 0; k < bg_numel(t); k++) {
            // First step of Adam moves each trained element by lr (+ decay).
            if (i < 2) frozen_same &= P[off + k] == before[off + k];
            else trained_moved &= fabsf(P[off + k] - before[off + k] * (1 - 1e-3f * 1e-2f) + 1e-3f) < 1e-6f;
        }
    }
    CHECK(frozen_same);
    CHECK(trained_moved);
    (void)G;
    free(before);
    bg_optim_free(o);
    bg_module_free(net);

    // An optimizer made on a layer that is later adopted by a container sees
    // its buffers move, and says so instead of writing to freed memory.
    bg_module *lin = bg_linear_new(2, 2, true, &rng);
    o = bg_adam_new(lin, NULL);
    bg_module *seq = bg_sequential_new(1, (bg_module *[]){lin});
    CHECK(seq && o);
    CHECK(bg_optim_step(o) == BG_ERR_STATE);
    CHECK_STR(bg_last_error(),
              "adam: the Linear was finalized again after the optimizer was made; make a new optimizer");
    bg_optim_free(o);
    bg_module_free(seq);
}

/* Parameter groups: AdamW decays only the parameters the predicate picks
 * (the matrices here), the others move by Adam alone. */
static bool is_matrix(const char *name, const bg_tensor *p, void *user) {
    (void)name;
    (*(int *)user)++;
    return p->ndim == 2;
}

static void test_decay_groups(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 4);
    bg_module *net = bg_sequential_new(2, (bg_module *[]){bg_linear_new(3, 4, true, &rng),
                                                          bg_linear_new(4, 2, true, &rng)});
    bg_adam_opts ao = BG_ADAMW_DEFAULTS;
    ao.weight_decay = 0.5f;
    bg_optim *o = bg_adamw_new(net, &ao);
    int calls = 0;
    CHECK(bg_optim_decay_only(o, is_matrix, &calls) == BG_OK && calls == 4);
    int64_t n;
    float *P = bg_module_flat_params(net, &n);
    float *before = malloc((size_t)n * sizeof(float));
    memcpy(before, P, (size_t)n * sizeof(float));
    for (int i = 0; i < bg_module_param_count(net); i++) {
        bg_tensor *t = bg_module_param(net, i);
        for (int64_t k = 0; k < bg_numel(t); k++) bg_f32(t->grad)[k] = 0.5f;
    }
    CHECK(bg_optim_step(o) == BG_OK);
    // First AdamW step: p = p (1 - lr wd) - lr (decayed), p - lr (not).
    bool ok = true;
    for (int i = 0; i < bg_module_param_count(net); i++) {
        bg_tensor *t = bg_module_param(net, i);
        int64_t off = bg_module_param_offset(net, i) / 4;
        float keep = t->ndim == 2 ? 1.0f - ao.lr * 0.5f : 1.0f;
        for (int64_t k = 0; k < bg_numel(t); k++) ok &= fabsf(P[off + k] - (before[off + k] * keep - ao.lr)) < 1e-6f;
    }
    CHECK_MSG(ok, "decay groups: a parameter moved by the wrong rule");
    CHECK(bg_optim_decay_only(NULL, is_matrix, NULL) == BG_ERR_ARG);
    free(before);
    bg_optim_free(o);
    bg_module_free(net);
}

static void test_schedules(void) {
    bg_lr_schedule c = bg_lr_constant(0.3f);
    CHECK(bg_lr_at(&c, 0) == 0.3f && bg_lr_at(&c, 1000000) == 0.3f);

    bg_lr_schedule s = bg_lr_step(0.1f, 3, 0.5f);
    CHECK_CLOSE(bg_lr_at(&s, 0), 0.1, 0, 1e-7);
    CHECK_CLOSE(bg_lr_at(&s, 2), 0.1, 0, 1e-7);
    CHECK_CLOSE(bg_lr_at(&s, 3), 0.05, 0, 1e-7);
    CHECK_CLOSE(bg_lr_at(&s, 5), 0.05, 0, 1e-7);
    CHECK_CLOSE(bg_lr_at(&s, 6), 0.025, 0, 1e-7);
    CHECK_CLOSE(bg_lr_at(&s, 9), 0.0125, 0, 1e-7);

    // Warm-up over 4 steps to 1.0, cosine to 0.1 at step 14.
    bg_lr_schedule k = bg_lr_cosine(1.0f, 4, 14, 0.1f);
    CHECK_CLOSE(bg_lr_at(&k, 0), 0.25, 0, 1e-7);
    CHECK_CLOSE(bg_lr_at(&k, 1), 0.5, 0, 1e-7);
    CHECK_CLOSE(bg_lr_at(&k, 3), 1.0, 0, 1e-7);
    CHECK_CLOSE(bg_lr_at(&k, 4), 1.0, 0, 1e-7);
    CHECK_CLOSE(bg_lr_at(&k, 6), 0.1 + 0.45 * (1 + cos(PI * 0.2)), 0, 1e-6);   // 0.914058
    CHECK_CLOSE(bg_lr_at(&k, 9), 0.55, 0, 1e-6);
    CHECK_CLOSE(bg_lr_at(&k, 13), 0.1 + 0.45 * (1 + cos(PI * 0.9)), 0, 1e-6);
    CHECK_CLOSE(bg_lr_at(&k, 14), 0.1, 0, 1e-7);
    CHECK_CLOSE(bg_lr_at(&k, 1000), 0.1, 0, 1e-7);
    // Without warm-up: CosineAnnealingLR(T_max=10, eta_min=0) at step 5.
    bg_lr_schedule k0 = bg_lr_cosine(0.2f, 0, 10, 0.0f);
    CHECK_CLOSE(bg_lr_at(&k0, 0), 0.2, 0, 1e-7);
    CHECK_CLOSE(bg_lr_at(&k0, 5), 0.1, 0, 1e-6);

    // Bad fields are errors, never a quiet constant rate.
    bg_lr_schedule bad_cos = bg_lr_cosine(0.2f, 10, 10, 0.0f), bad_step = bg_lr_step(0.1f, 0, 0.5f);
    bg_lr_schedule bad_kind = bg_lr_constant(0.1f);
    bad_kind.kind = BG_LR_KIND_COUNT;
    CHECK(isnan(bg_lr_at(&bad_cos, 3)) && isnan(bg_lr_at(&bad_step, 3)) && isnan(bg_lr_at(&bad_kind, 0)));
    CHECK(isnan(bg_lr_at(NULL, 0)));
    CHECK(bg_lr_schedule_check(&bad_cos) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "lr_schedule: cosine needs total_steps > warmup_steps: total 10, warmup 10");
    CHECK(bg_lr_schedule_check(&bad_step) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "lr_schedule: step needs step_size > 0: 0");
    CHECK(bg_lr_schedule_check(&bad_kind) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "lr_schedule: unknown kind 3");
    CHECK(bg_lr_schedule_check(&k) == BG_OK && bg_lr_schedule_check(&s) == BG_OK);

    // Attached to an optimizer: each step uses the lr at its step count.
    // Plain SGD with gradient 1 moves p by exactly the lr of each step.
    bg_module *m = vec_new(1, (float[]){0.0f});
    bg_optim *o = bg_sgd_new(m, &(bg_sgd_opts){.lr = 5.0f});
    CHECK(bg_optim_set_schedule(o, &bad_cos) == BG_ERR_ARG);   // refused: the lr stays 5
    CHECK(bg_optim_lr(o) == 5.0f);
    CHECK(bg_optim_set_schedule(o, &s) == BG_OK);
    CHECK_CLOSE(bg_optim_lr(o), 0.1, 0, 1e-7);
    double expect = 0;
    for (int step = 0; step < 7; step++) {
        bg_f32(bg_module_param(m, 0)->grad)[0] = 1.0f;
        CHECK(bg_optim_step(o) == BG_OK);
        expect -= bg_lr_at(&s, step);
    }
    CHECK_CLOSE(vec_of(m)[0], expect, 1e-6, 1e-6);   // -(3*0.1 + 3*0.05 + 0.025)
    CHECK_CLOSE(expect, -0.475, 1e-6, 0);
    CHECK_CLOSE(bg_optim_lr(o), 0.025, 0, 1e-7);      // step 7
    bg_optim_set_lr(o, 0.5f);                          // manual: detaches the schedule
    CHECK(bg_optim_lr(o) == 0.5f);
    // Resuming: the step count drives the schedule again.
    bg_optim_set_schedule(o, &s);
    CHECK(bg_optim_set_step_count(o, 9) == BG_OK && bg_optim_step_count(o) == 9);
    CHECK_CLOSE(bg_optim_lr(o), 0.0125, 0, 1e-7);
    CHECK(bg_optim_set_step_count(o, -1) == BG_ERR_ARG);
    bg_optim_free(o);
    bg_module_free(m);
}

static void test_clip_grad_norm(void) {
    bg_module *m = vec_new(2, NULL);
    float *g = bg_f32(bg_module_param(m, 0)->grad);
    g[0] = 3.0f;
    g[1] = 4.0f;
    CHECK_CLOSE(bg_grad_norm(m), 5.0, 0, 1e-7);
    // Below the limit: untouched.
    // (CHECK_CLOSE evaluates its argument twice: keep side effects out.)
    float norm = bg_clip_grad_norm(m, 10.0f);
    CHECK_CLOSE(norm, 5.0, 0, 1e-7);
    CHECK(g[0] == 3.0f && g[1] == 4.0f);
    // Above: scaled by max_norm / (norm + 1e-6), as torch (0.599999905, 0.799999833).
    norm = bg_clip_grad_norm(m, 1.0f);
    CHECK_CLOSE(norm, 5.0, 0, 1e-7);
    CHECK_CLOSE(g[0], 0.599999905, 0, 2e-7);
    CHECK_CLOSE(g[1], 0.799999833, 0, 2e-7);
    CHECK_CLOSE(bg_grad_norm(m), 1.0, 0, 1e-6);
    CHECK(bg_clip_grad_norm(m, 0.0f) == -1.0f);
    CHECK_STR(bg_last_error(), "clip_grad_norm: max_norm must be positive: 0");
    CHECK(bg_clip_grad_norm(NULL, 1.0f) == -1.0f);
    CHECK_STR(bg_last_error(), "clip_grad_norm: module is NULL");
    bg_module_free(m);

    // Over a whole model: the norm of all grads together.
    bg_rng rng;
    bg_rng_seed(&rng, 8);
    bg_module *net = bg_sequential_new(2, (bg_module *[]){bg_linear_new(3, 5, true, &rng),
                                                          bg_linear_new(5, 2, true, &rng)});
    double ss = 0;
    for (int i = 0; i < bg_module_param_count(net); i++) {
        bg_tensor *t = bg_module_param(net, i);
        for (int64_t k = 0; k < bg_numel(t); k++) {
            float v = (float)(i + 1) * 0.1f * (float)(k % 3 - 1);
            bg_f32(t->grad)[k] = v;
            ss += (double)v * v;
        }
    }
    norm = bg_clip_grad_norm(net, 0.5f);
    CHECK_CLOSE(norm, sqrt(ss), 0, 1e-6);
    CHECK_CLOSE(bg_grad_norm(net), 0.5, 0, 1e-5);
    bg_module_free(net);
}

int main(void) {
    test_sgd();
    test_adam();
    test_frozen_and_refinalize();
    test_decay_groups();
    test_schedules();
    test_clip_grad_norm();
    return bg_test_finish();
}
