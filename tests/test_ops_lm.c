/* test_ops_lm.c — the language model's ops (autograd/ops_attention.c) and its
 * tied embedding / output head:
 *   - bg_rope and bg_causal_attention against PyTorch: outputs and the
 *     gradients of sum(out * R), from tests/reference/lm_ops.safetensors
 *     (tests/reference/make_lm_ops_reference.py, float64 math; committed, so
 *     this test never needs torch). RoPE within 1e-6 relative (positions up
 *     to 4095), attention within 1e-5;
 *   - the fused attention against the composed one (matmul, scale, a [Tq,Tk]
 *     mask tensor, softmax, matmul) within 1e-5, for Tq == Tk and Tq < Tk,
 *     and bg_attention(causal) being the fused op;
 *   - the same bits at 1 and 2 threads, and with grad off (no P kept);
 *   - RoPE of a slice at its own positions = the slice of RoPE (a KV cache
 *     may rotate new rows alone), any strides;
 *   - a tied embedding: E is both bg_embedding's table and the output head
 *     (bg_matmul or bg_linear); its gradient is the sum of both uses, passes
 *     bg_gradcheck, and matches PyTorch;
 *   - the error messages. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/autograd_internal.h"
#include "io/io.h"
#include "kernels/kernels.h"
#include "tests/test_util.h"

#define REF_FILE "lm_ops.safetensors"
#define REF_GENERATOR "tests/reference/make_lm_ops_reference.py"
/* REF_VERSION of the generator this test was written against. */
#define REF_VERSION "1"

// ---------------------------------------------------------------------------
// the reference file

#define ref_path bg_test_ref_path

static bg_safetensors *open_reference(void) { return bg_test_open_reference(REF_FILE, REF_GENERATOR, REF_VERSION); }

static bool get(const bg_safetensors *st, const char *name, bg_tensor *v) {
    return CHECK_MSG(bg_safetensors_get(st, name, v) == BG_OK, "%s: %s", ref_path, bg_last_error());
}

/* A persistent copy of a file tensor, f32 ones requiring grad. */
static bg_tensor *copy_of(const bg_tensor *v) {
    bg_tensor *t = bg_tensor_new(v->dtype, v->ndim, v->shape);
    if (t) memcpy(t->data, v->data, bg_nbytes(v));
    if (t && t->dtype == BG_DTYPE_F32) bg_set_requires_grad(t, true);
    return t;
}

/* Loads "<c>.in<i>" for i < n into persistent copies; false on a failure. */
static bool load_inputs(const bg_safetensors *st, const char *c, int n, bg_tensor **in) {
    for (int i = 0; i < n; i++) {
        char name[96];
        bg_tensor v;
        snprintf(name, sizeof name, "%s.in%d", c, i);
        if (!get(st, name, &v) || !(in[i] = copy_of(&v))) return false;
    }
    return true;
}

static float scalar(const bg_safetensors *st, const char *c, const char *field) {
    char name[96];
    bg_tensor v;
    snprintf(name, sizeof name, "%s.%s", c, field);
    if (!get(st, name, &v) || !CHECK(bg_numel(&v) == 1)) return NAN;
    return v.dtype == BG_DTYPE_I32 ? (float)((const int32_t *)v.data)[0] : bg_f32(&v)[0];
}

// ---------------------------------------------------------------------------
// running an op: output and input gradients of sum(out * R)

typedef bg_tensor *(*op_fn)(bg_ctx *ctx, bg_tensor *const *in, const void *p);

typedef struct run_result {
    int n_in;
    int64_t n_out, n_grad[3];
    float *out, *grad[3];   /* malloc'd copies */
} run_result;

static void result_free(run_result *r) {
    free(r->out);
    for (int i = 0; i < 3; i++) free(r->grad[i]);
    memset(r, 0, sizeof *r);
}

/* R: the upstream gradient, or NULL for a fixed pseudo-random one. */
static bool run_op(op_fn fn, const void *p, bg_tensor *const *in, int n_in, const float *R, run_result *res) {
    memset(res, 0, sizeof *res);
    res->n_in = n_in;
    for (int i = 0; i < n_in; i++)
        if (in[i]->grad) memset(in[i]->grad->data, 0, bg_nbytes(in[i]->grad));
    bg_ctx *ctx = bg_ctx_new(0);
    bg_tensor *out = fn(ctx, in, p);
    bool ok = CHECK_MSG(out != NULL, "forward: %s", bg_ctx_error(ctx));
    if (ok) {
        bg_tensor *r = bg_empty(ctx, BG_DTYPE_F32, out->ndim, out->shape);
        const int64_t n = bg_numel(out);
        bg_rng rng;
        bg_rng_seed(&rng, 0x5eed);
        for (int64_t i = 0; r && i < n; i++) bg_f32(r)[i] = R ? R[i] : 2.0f * bg_rng_uniform(&rng) - 1.0f;
        ok = CHECK_MSG(r && bg_backward_with_grad(ctx, out, r) == BG_OK, "backward: %s", bg_ctx_error(ctx));
        res->n_out = n;
        res->out = malloc(sizeof(float) * (size_t)(n ? n : 1));
        if (ok) memcpy(res->out, bg_f32(out), sizeof(float) * (size_t)n);
        for (int i = 0; ok && i < n_in; i++) {
            res->n_grad[i] = bg_numel(in[i]);
            res->grad[i] = calloc((size_t)(res->n_grad[i] ? res->n_grad[i] : 1), sizeof(float));
            if (in[i]->grad) memcpy(res->grad[i], in[i]->grad->data, bg_nbytes(in[i]->grad));
        }
    }
    bg_ctx_free(ctx);
    return ok;
}

/* Largest |got - want| / max(1, max|want|) ("max err": absolute for values
 * up to 1), and largest |got - want| / |want| over the elements with |want|
 * >= 1e-3 max|want| ("rel": large for elements that cancel to near 0). */
typedef struct err_stats {
    double abs, rel;
} err_stats;

static void errors(const float *got, const float *want, int64_t n, err_stats *e) {
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(want[i]));
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        e->abs = fmax(e->abs, d / fmax(1.0, m));
        if (fabs(want[i]) >= 1e-3 * m && want[i] != 0.0f) e->rel = fmax(e->rel, d / fabs(want[i]));
    }
}

/* Compares a result with "<c>.out" and "<c>.grad<i>": |got - want| <=
 * atol_rel * max|want| + rtol * |want|. */
static void compare_with_file(const bg_safetensors *st, const char *c, const run_result *r, double atol_rel,
                              double rtol, err_stats *fwd, err_stats *bwd) {
    char name[96];
    for (int i = -1; i < r->n_in; i++) {
        bg_tensor want;
        if (i < 0)
            snprintf(name, sizeof name, "%s.out", c);
        else
            snprintf(name, sizeof name, "%s.grad%d", c, i);
        if (!get(st, name, &want)) continue;
        const float *got = i < 0 ? r->out : r->grad[i];
        const int64_t n = i < 0 ? r->n_out : r->n_grad[i];
        if (!CHECK_MSG(n == bg_numel(&want), "%s: %lld elements, want %lld", name, (long long)n,
                       (long long)bg_numel(&want)))
            continue;
        double m = 0.0;
        for (int64_t j = 0; j < n; j++) m = fmax(m, fabs(bg_f32(&want)[j]));
        CHECK_ARRAYS(name, got, bg_f32(&want), n, atol_rel * m, rtol);
        errors(got, bg_f32(&want), n, i < 0 ? fwd : bwd);
    }
}

// ---------------------------------------------------------------------------
// ops under test

typedef struct rope_p {
    int64_t pos0;
    float theta;
} rope_p;

static bg_tensor *f_rope(bg_ctx *ctx, bg_tensor *const *in, const void *p) {
    const rope_p *r = p;
    return bg_rope(ctx, in[0], r->pos0, r->theta);
}

static bg_tensor *f_fused(bg_ctx *ctx, bg_tensor *const *in, const void *p) {
    return bg_causal_attention(ctx, in[0], in[1], in[2], *(const float *)p);
}

/* bg_attention(causal): the fused op with scale 1/sqrt(D). */
static bg_tensor *f_attention(bg_ctx *ctx, bg_tensor *const *in, const void *p) {
    (void)p;
    return bg_attention(ctx, in[0], in[1], in[2], true);
}

/* The composed causal attention: matmul, scale, + a [Tq,Tk] mask tensor
 * (-inf where j > i + Tk - Tq), softmax, matmul. */
static bg_tensor *f_composed(bg_ctx *ctx, bg_tensor *const *in, const void *p) {
    const bg_tensor *q = in[0], *k = in[1];
    const int64_t Tq = q->shape[q->ndim - 2], Tk = k->shape[k->ndim - 2];
    bg_tensor *mask = bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(Tq, Tk));
    if (!mask) return NULL;
    for (int64_t i = 0; i < Tq; i++)
        for (int64_t j = 0; j < Tk; j++) bg_f32(mask)[i * Tk + j] = j > i + (Tk - Tq) ? -INFINITY : 0.0f;
    bg_tensor *s = bg_scale(ctx, bg_matmul(ctx, in[0], in[1], false, true), *(const float *)p);
    return bg_matmul(ctx, bg_softmax(ctx, bg_add(ctx, s, mask), -1), in[2], false, false);
}

static const char *const rope_cases[] = {"rope_bhtd", "rope_far", "rope_2d", "rope_long"};
static const char *const attn_cases[] = {"attn_equal",  "attn_fewer_q", "attn_blocks",
                                         "attn_folded", "attn_one_q",   "attn_scale"};
#define COUNT(a) ((int)(sizeof a / sizeof a[0]))

static const float *file_R(const bg_safetensors *st, const char *c) {
    char name[96];
    bg_tensor r;
    snprintf(name, sizeof name, "%s.R", c);
    return get(st, name, &r) ? bg_f32(&r) : NULL;
}

// ---------------------------------------------------------------------------
// RoPE

static void test_rope_reference(const bg_safetensors *st) {
    for (int c = 0; c < COUNT(rope_cases); c++) {
        const char *name = rope_cases[c];
        bg_tensor *in[1] = {0};
        const float *R = file_R(st, name);
        rope_p p = {(int64_t)scalar(st, name, "pos0"), scalar(st, name, "theta")};
        run_result r;
        if (R && load_inputs(st, name, 1, in) && run_op(f_rope, &p, in, 1, R, &r)) {
            err_stats fwd = {0}, bwd = {0};
            // within 1e-6 of each element (the atol only for exact zeros)
            compare_with_file(st, name, &r, 1e-12, 1e-6, &fwd, &bwd);
            printf("  %-14s pos %lld..%lld  out: max err %.1e / rel %.1e   grad: max err %.1e / rel %.1e\n", name,
                   (long long)p.pos0, (long long)(p.pos0 + in[0]->shape[in[0]->ndim - 2] - 1), fwd.abs, fwd.rel,
                   bwd.abs, bwd.rel);
            result_free(&r);
        }
        bg_tensor_free(in[0]);
    }
}

/* RoPE of rows [t0, t1) at positions pos0 + t0.. is those rows of RoPE of
 * the whole (bitwise: each row's angles do not depend on the others); a
 * strided view gives what its contiguous copy gives. */
static void test_rope_slices_and_strides(void) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_rng rng;
    bg_rng_seed(&rng, 7);
    bg_tensor *x = bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(2, 3, 10, 8));   // [B, H, T, hd]
    for (int64_t i = 0; i < bg_numel(x); i++) bg_f32(x)[i] = 2.0f * bg_rng_uniform(&rng) - 1.0f;
    bg_tensor *all = bg_rope(ctx, x, 100, 10000.0f);
    bg_tensor *part = bg_rope(ctx, bg_contiguous(ctx, bg_view_narrow(ctx, x, 2, 6, 4)), 106, 10000.0f);
    bg_tensor *want = all ? bg_contiguous(ctx, bg_view_narrow(ctx, all, 2, 6, 4)) : NULL;
    CHECK_MSG(part && want && memcmp(part->data, want->data, bg_nbytes(want)) == 0,
              "rope: rows 6..9 at positions 106..109 differ from rows 6..9 of the whole: %s", bg_ctx_error(ctx));
    // x stored [B, T, H, hd] (as a projection gives it), read as [B, H, T, hd]
    bg_tensor *bthd = bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(2, 10, 3, 8));
    for (int64_t i = 0; bthd && i < bg_numel(bthd); i++) bg_f32(bthd)[i] = 2.0f * bg_rng_uniform(&rng) - 1.0f;
    bg_tensor *view = bg_view_permute(ctx, bthd, (const int[]){0, 2, 1, 3});
    bg_tensor *a = bg_rope(ctx, view, 3, 10000.0f), *b = bg_rope(ctx, bg_contiguous(ctx, view), 3, 10000.0f);
    CHECK_MSG(a && b && !bg_is_contiguous(view) && memcmp(a->data, b->data, bg_nbytes(a)) == 0,
              "rope: a permuted view and its contiguous copy differ: %s", bg_ctx_error(ctx));
    // position 0 is the identity
    bg_tensor *p0 = bg_rope(ctx, bg_contiguous(ctx, bg_view_narrow(ctx, x, 2, 0, 1)), 0, 10000.0f);
    bg_tensor *x0 = bg_contiguous(ctx, bg_view_narrow(ctx, x, 2, 0, 1));
    CHECK_MSG(p0 && x0 && memcmp(p0->data, x0->data, bg_nbytes(x0)) == 0, "rope: position 0 is not the identity");
    bg_ctx_free(ctx);
}

// ---------------------------------------------------------------------------
// causal attention

static void test_attention_reference(const bg_safetensors *st) {
    for (int c = 0; c < COUNT(attn_cases); c++) {
        const char *name = attn_cases[c];
        bg_tensor *in[3] = {0};
        const float *R = file_R(st, name);
        float scale = scalar(st, name, "scale");
        run_result fused, composed, att;
        if (R && load_inputs(st, name, 3, in) && run_op(f_fused, &scale, in, 3, R, &fused)) {
            err_stats fwd = {0}, bwd = {0}, cf = {0}, cb = {0};
            compare_with_file(st, name, &fused, 1e-6, 1e-5, &fwd, &bwd);
            // the composed version: the same within 1e-5 (of the largest value)
            if (run_op(f_composed, &scale, in, 3, R, &composed)) {
                char what[96];
                snprintf(what, sizeof what, "%s: fused vs composed out", name);
                CHECK_ARRAYS(what, fused.out, composed.out, fused.n_out, 1e-5, 0.0);
                errors(fused.out, composed.out, fused.n_out, &cf);
                for (int i = 0; i < 3; i++) {
                    snprintf(what, sizeof what, "%s: fused vs composed grad%d", name, i);
                    CHECK_ARRAYS(what, fused.grad[i], composed.grad[i], fused.n_grad[i], 1e-5, 0.0);
                    errors(fused.grad[i], composed.grad[i], fused.n_grad[i], &cb);
                }
                result_free(&composed);
            }
            // bg_attention(causal) is this op when the scale is 1/sqrt(D)
            const int64_t D = in[0]->shape[in[0]->ndim - 1];
            if (scale == 1.0f / sqrtf((float)D) && run_op(f_attention, NULL, in, 3, R, &att)) {
                bool same = memcmp(att.out, fused.out, sizeof(float) * (size_t)fused.n_out) == 0;
                for (int i = 0; i < 3; i++)
                    same = same && memcmp(att.grad[i], fused.grad[i], sizeof(float) * (size_t)fused.n_grad[i]) == 0;
                CHECK_MSG(same, "%s: bg_attention(causal) differs from bg_causal_attention", name);
                result_free(&att);
            }
            char shapes[3][BG_SHAPE_STR_MAX];
            for (int i = 0; i < 3; i++) bg_shape_str(in[i], shapes[i], sizeof shapes[i]);
            printf("  %-12s q %-12s k %-12s v %-12s vs torch: out %.1e / %.1e, grads %.1e / %.1e; vs composed: "
                   "out %.1e, grads %.1e\n",
                   name, shapes[0], shapes[1], shapes[2], fwd.abs, fwd.rel, bwd.abs, bwd.rel, cf.abs, cb.abs);
            result_free(&fused);
        }
        for (int i = 0; i < 3; i++) bg_tensor_free(in[i]);
    }
}

static bg_tensor *random_tensor(bg_rng *rng, int ndim, const int64_t *shape) {
    bg_tensor *t = bg_tensor_new(BG_DTYPE_F32, ndim, shape);
    if (!t) return NULL;
    for (int64_t i = 0; i < bg_numel(t); i++) bg_f32(t)[i] = 2.0f * bg_rng_uniform(rng) - 1.0f;
    bg_set_requires_grad(t, true);
    return t;
}

/* Heads large enough to go parallel: 1 and 2 threads give the same bits, and
 * a forward without grad (no P kept, one block of scratch per thread) gives
 * the same output. Also against the composed version at this size. */
static void test_attention_threads(void) {
    static const int64_t shapes[][2] = {{64, 64}, {40, 96}};   // Tq, Tk
    const int saved = bg_get_num_threads();
    for (int s = 0; s < 2; s++) {
        bg_rng rng;
        bg_rng_seed(&rng, 11 + (uint64_t)s);
        const int64_t Tq = shapes[s][0], Tk = shapes[s][1];
        bg_tensor *in[3] = {random_tensor(&rng, BG_SHAPE(2, 4, Tq, 32)), random_tensor(&rng, BG_SHAPE(2, 4, Tk, 32)),
                            random_tensor(&rng, BG_SHAPE(2, 4, Tk, 24))};
        const float scale = 1.0f / sqrtf(32.0f);
        run_result r1, r2, rc;
        bg_set_num_threads(1);
        bool ok = in[0] && in[1] && in[2] && run_op(f_fused, &scale, in, 3, NULL, &r1);
        bg_set_num_threads(2);
        if (ok && run_op(f_fused, &scale, in, 3, NULL, &r2)) {
            bool same = memcmp(r1.out, r2.out, sizeof(float) * (size_t)r1.n_out) == 0;
            for (int i = 0; i < 3; i++)
                same = same && memcmp(r1.grad[i], r2.grad[i], sizeof(float) * (size_t)r1.n_grad[i]) == 0;
            CHECK_MSG(same, "causal_attention Tq %lld Tk %lld: 1 and 2 threads differ", (long long)Tq, (long long)Tk);
            result_free(&r2);
        }
        if (ok && run_op(f_composed, &scale, in, 3, NULL, &rc)) {
            err_stats e = {0};
            CHECK_ARRAYS("fused vs composed out (threads case)", r1.out, rc.out, r1.n_out, 1e-5, 0.0);
            errors(r1.out, rc.out, r1.n_out, &e);
            for (int i = 0; i < 3; i++) {
                CHECK_ARRAYS("fused vs composed grad (threads case)", r1.grad[i], rc.grad[i], r1.n_grad[i], 1e-5, 0.0);
                errors(r1.grad[i], rc.grad[i], r1.n_grad[i], &e);
            }
            printf("  [2,4,%lld,32] over [2,4,%lld,*]: 1 vs 2 threads bitwise; vs composed max abs %.1e\n",
                   (long long)Tq, (long long)Tk, e.abs);
            result_free(&rc);
        }
        // grad off: the same output from the per-thread scratch
        bg_ctx *ctx = bg_ctx_new(0);
        bg_set_grad_enabled(ctx, false);
        bg_tensor *o = ok ? bg_causal_attention(ctx, in[0], in[1], in[2], scale) : NULL;
        CHECK_MSG(o && !o->requires_grad && memcmp(o->data, r1.out, bg_nbytes(o)) == 0,
                  "causal_attention without grad differs from with grad: %s", bg_ctx_error(ctx));
        bg_ctx_free(ctx);
        if (ok) result_free(&r1);
        for (int i = 0; i < 3; i++) bg_tensor_free(in[i]);
    }
    bg_set_num_threads(saved);
}

// ---------------------------------------------------------------------------
// tied embedding and output head

typedef struct tied_p {
    bg_tensor *ids, *labels;
    bool linear;   /* head through bg_linear instead of bg_matmul */
} tied_p;

static bg_tensor *tied_loss(bg_ctx *ctx, bg_tensor *emb, bg_tensor *head, bg_tensor *w, const tied_p *p) {
    bg_tensor *h = bg_embedding(ctx, emb, p->ids);   // [B, T, d]
    h = h ? bg_reshape(ctx, h, 2, (int64_t[]){bg_numel(p->ids), emb->shape[1]}) : NULL;
    h = bg_rmsnorm(ctx, h, w, 1e-5f);
    bg_tensor *logits = p->linear ? bg_linear(ctx, h, head, NULL) : bg_matmul(ctx, h, head, false, true);
    return bg_cross_entropy(ctx, logits, p->labels, NULL);
}

/* in = {E, w}: E is the embedding and the head. */
static bg_tensor *f_tied(bg_ctx *ctx, bg_tensor *const *in, void *user) {
    return tied_loss(ctx, in[0], in[0], in[1], user);
}

static void test_tied(const bg_safetensors *st) {
    bg_tensor v, *E = NULL, *w = NULL, *E1 = NULL, *E2 = NULL;
    tied_p p = {0};
    bg_ctx *ctx = bg_ctx_new(0);
    bool ok = get(st, "tied.E", &v) && (E = copy_of(&v)) && (E1 = copy_of(&v)) && (E2 = copy_of(&v)) &&
              get(st, "tied.w", &v) && (w = copy_of(&v)) && get(st, "tied.ids", &v) && (p.ids = copy_of(&v)) &&
              get(st, "tied.labels", &v) && (p.labels = copy_of(&v));
    const int64_t nE = ok ? bg_numel(E) : 0;
    for (int variant = 0; ok && variant < 2; variant++) {
        p.linear = variant == 1;
        const char *how = p.linear ? "bg_linear" : "bg_matmul";
        // tied: one tensor, both uses
        memset(E->grad->data, 0, bg_nbytes(E->grad));
        memset(w->grad->data, 0, bg_nbytes(w->grad));
        bg_ctx_reset(ctx);
        bg_tensor *loss = tied_loss(ctx, E, E, w, &p);
        if (!CHECK_MSG(loss && bg_backward(ctx, loss) == BG_OK, "tied (%s): %s", how, bg_ctx_error(ctx))) break;
        const float got_loss = bg_f32(loss)[0];
        // PyTorch
        bg_tensor want;
        err_stats e = {0};
        char what[96];
        if (get(st, "tied.loss", &want)) CHECK_CLOSE(got_loss, bg_f32(&want)[0], 1e-6, 1e-6);
        if (get(st, "tied.gradE", &want)) {
            snprintf(what, sizeof what, "tied E grad (%s) vs torch", how);
            CHECK_ARRAYS(what, bg_f32(E->grad), bg_f32(&want), nE, 1e-7, 1e-5);
            errors(bg_f32(E->grad), bg_f32(&want), nE, &e);
        }
        if (get(st, "tied.gradw", &want)) {
            snprintf(what, sizeof what, "tied w grad (%s) vs torch", how);
            CHECK_ARRAYS(what, bg_f32(w->grad), bg_f32(&want), bg_numel(w), 1e-7, 1e-5);
            errors(bg_f32(w->grad), bg_f32(&want), bg_numel(w), &e);
        }
        // untied: the same values in two tensors; their gradients summed
        memset(E1->grad->data, 0, bg_nbytes(E1->grad));
        memset(E2->grad->data, 0, bg_nbytes(E2->grad));
        bg_ctx_reset(ctx);
        bg_tensor *loss2 = tied_loss(ctx, E1, E2, w, &p);
        if (!CHECK_MSG(loss2 && bg_backward(ctx, loss2) == BG_OK, "untied (%s): %s", how, bg_ctx_error(ctx))) break;
        float *sum = malloc(sizeof(float) * (size_t)nE);
        double emb_part = 0.0, head_part = 0.0;
        for (int64_t i = 0; i < nE; i++) {
            sum[i] = bg_f32(E1->grad)[i] + bg_f32(E2->grad)[i];
            emb_part = fmax(emb_part, fabs(bg_f32(E1->grad)[i]));
            head_part = fmax(head_part, fabs(bg_f32(E2->grad)[i]));
        }
        snprintf(what, sizeof what, "tied E grad (%s) vs embedding grad + head grad", how);
        CHECK_ARRAYS(what, bg_f32(E->grad), sum, nE, 1e-7, 1e-6);
        CHECK_MSG(emb_part > 1e-3 && head_part > 1e-3, "both uses must contribute: %g %g", emb_part, head_part);
        free(sum);
        // a numerical gradient of the tied model
        bg_gradcheck_report rep;
        bg_status gs = bg_gradcheck(f_tied, (bg_tensor *[]){E, w}, 2, &p, 1e-3, 5e-4, 5e-3, &rep);
        CHECK_MSG(gs == BG_OK, "tied (%s) gradcheck: %s", how, bg_last_error());
        printf("  tied head %-9s loss %.6f; grads vs torch: max abs err %.1e, rel %.1e; = embedding + head grads; "
               "gradcheck %s (%lld checked, max abs err %.1e)\n",
               how, (double)got_loss, e.abs, e.rel, gs == BG_OK ? "ok" : "FAIL", (long long)rep.checked, rep.max_abs_err);
    }
    CHECK(ok);
    bg_tensor *all[] = {E, E1, E2, w, p.ids, p.labels};
    for (int i = 0; i < 6; i++) bg_tensor_free(all[i]);
    bg_ctx_free(ctx);
}

// ---------------------------------------------------------------------------
// errors

static void test_errors(void) {
    bg_ctx *ctx = bg_ctx_new(0);
#define EXPECT_ERR(call, msg)              \
    do {                                   \
        bg_ctx_reset(ctx);                 \
        CHECK((call) == NULL);             \
        CHECK_STR(bg_ctx_error(ctx), msg); \
    } while (0)
#define Z(...) bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(__VA_ARGS__))
    EXPECT_ERR(bg_rope(ctx, Z(2, 3, 5), 0, 10000.0f),
               "rope: head dim 5 is odd (x is [2,3,5]): NEOX RoPE rotates the pairs (i, i + hd/2)");
    EXPECT_ERR(bg_rope(ctx, Z(4), 0, 10000.0f), "rope: x must be [..., T, hd] (at least 2 dims): x is [4]");
    EXPECT_ERR(bg_rope(ctx, Z(3, 4), -1, 10000.0f), "rope: pos0 must be in [0, 2^48]: got -1");
    EXPECT_ERR(bg_rope(ctx, Z(3, 4), 0, 0.0f), "rope: theta must be finite and > 0: got 0");
    EXPECT_ERR(bg_rope(ctx, Z(3, 4), 0, INFINITY), "rope: theta must be finite and > 0: got inf");
    EXPECT_ERR(bg_rope(ctx, bg_zeros(ctx, BG_DTYPE_I32, BG_SHAPE(3, 4)), 0, 10000.0f), "rope: x is i32 [3,4], want f32");
    EXPECT_ERR(bg_causal_attention(ctx, Z(1, 5, 4), Z(1, 3, 4), Z(1, 3, 4), 0.5f),
               "causal_attention: causal attention needs at most as many queries as keys: q is [1,5,4], "
               "k is [1,3,4] (query i sees keys j <= i + Tk - Tq)");
    EXPECT_ERR(bg_causal_attention(ctx, Z(2, 4, 3, 8), Z(2, 2, 3, 8), Z(2, 2, 3, 8), 0.5f),
               "causal_attention: the leading (batch, head) dims of q, k and v differ: q is [2,4,3,8], "
               "k is [2,2,3,8], v is [2,2,3,8]");
    EXPECT_ERR(bg_causal_attention(ctx, Z(8, 3, 8), Z(2, 4, 3, 8), Z(2, 4, 3, 8), 0.5f),
               "causal_attention: the leading (batch, head) dims of q, k and v differ: q is [8,3,8], "
               "k is [2,4,3,8], v is [2,4,3,8]");
    EXPECT_ERR(bg_causal_attention(ctx, Z(1, 3, 4), Z(1, 3, 5), Z(1, 3, 4), 0.5f),
               "causal_attention: head dims differ: q is [1,3,4], k is [1,3,5]");
    EXPECT_ERR(bg_causal_attention(ctx, Z(1, 3, 4), Z(1, 3, 4), Z(1, 4, 4), 0.5f),
               "causal_attention: key and value shapes do not fit: k is [1,3,4], v is [1,4,4]");
    EXPECT_ERR(bg_causal_attention(ctx, Z(3), Z(1, 3, 4), Z(1, 3, 4), 0.5f),
               "causal_attention: q, k and v need at least 2 dims: q is [3], k is [1,3,4], v is [1,3,4]");
    EXPECT_ERR(bg_causal_attention(ctx, Z(1, 3, 4), Z(1, 3, 4), Z(1, 3, 4), NAN),
               "causal_attention: scale must be finite: got nan");
    EXPECT_ERR(bg_causal_attention(ctx, Z(1, 3, 4), NULL, Z(1, 3, 4), 0.5f), "causal_attention: k is NULL");
    // bg_attention's causal form names itself
    EXPECT_ERR(bg_attention(ctx, Z(1, 5, 4), Z(1, 3, 4), Z(1, 3, 4), true),
               "attention: causal attention needs at most as many queries as keys: q is [1,5,4], "
               "k is [1,3,4] (query i sees keys j <= i + Tk - Tq)");
    EXPECT_ERR(bg_attention(ctx, Z(2, 5, 4), Z(3, 4), Z(3, 4), true),
               "attention: causal attention needs at most as many queries as keys: q is [2,5,4], "
               "k is [3,4] (query i sees keys j <= i + Tk - Tq)");
    // empty shapes are fine: no queries, no heads, a zero head dim
    bg_ctx_reset(ctx);
    bg_tensor *e1 = bg_causal_attention(ctx, Z(2, 0, 4), Z(2, 3, 4), Z(2, 3, 5), 0.5f);
    bg_tensor *e2 = bg_causal_attention(ctx, Z(0, 3, 4), Z(0, 3, 4), Z(0, 3, 4), 0.5f);
    bg_tensor *e3 = bg_causal_attention(ctx, Z(1, 2, 0), Z(1, 3, 0), Z(1, 3, 2), 0.5f);
    bg_tensor *e4 = bg_rope(ctx, Z(2, 0, 4), 5, 10000.0f);
    CHECK_MSG(e1 && e2 && e3 && e4, "empty shapes: %s", bg_ctx_error(ctx));
    // a zero head dim: scores 0, so query i averages values 0 .. i + 1
    if (e3) CHECK(bg_f32(e3)[0] == 0.0f && e3->shape[1] == 2 && e3->shape[2] == 2);
#undef Z
#undef EXPECT_ERR
    bg_ctx_free(ctx);
}

int main(void) {
    bg_safetensors *st = open_reference();
    if (st) {
        printf("%s: %d tensors, torch %s\n", REF_FILE, bg_safetensors_count(st),
               bg_safetensors_metadata(st, "torch") ? bg_safetensors_metadata(st, "torch") : "?");
        test_rope_reference(st);
        test_attention_reference(st);
        test_tied(st);
        bg_safetensors_free(st);
    }
    test_rope_slices_and_strides();
    test_attention_threads();
    test_errors();
    return bg_test_finish();
}
