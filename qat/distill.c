/* distill.c — knowledge distillation: Hinton KD, logit and feature MSE built
 * from autograd ops, a frozen teacher's forward (grad disabled) and the
 * capture of a Sequential's hidden outputs. Calls autograd.h and layers.h
 * (the module forward), nothing below the tape. */
#include <math.h>
#include <string.h>

#include "autograd/autograd.h"
#include "layers/layers.h"
#include "qat/qat.h"

// ---------------------------------------------------------------------------
// detaching

bg_tensor *bg_detach(bg_ctx *ctx, bg_tensor *x) {
    if (!ctx || bg_ctx_status(ctx) != BG_OK) return NULL;
    if (!x) return bg_ctx_fail(ctx, BG_ERR_ARG, "detach: x is NULL");
    // A new header over the same data, without history: ops that take it
    // record nothing towards x.
    bg_tensor *v = bg_ctx_alloc(ctx, sizeof *v);
    if (!v) return NULL;
    *v = *x;
    v->grad = NULL;
    v->node = NULL;
    v->requires_grad = false;
    v->persistent = false;
    v->owns_grad = false;
    return v;
}

// ---------------------------------------------------------------------------
// losses

static bool check_logits(bg_ctx *ctx, const char *op, const bg_tensor *s, const bg_tensor *t) {
    if (!s || !t) {
        bg_ctx_fail(ctx, BG_ERR_ARG, "%s: %s logits are NULL", op, !s ? "student" : "teacher");
        return false;
    }
    char a[BG_SHAPE_STR_MAX], b[BG_SHAPE_STR_MAX];
    if (s->dtype != BG_DTYPE_F32 || t->dtype != BG_DTYPE_F32) {
        bg_ctx_fail(ctx, BG_ERR_DTYPE, "%s: logits must be f32: student is %s, teacher is %s", op,
                    bg_dtype_name(s->dtype), bg_dtype_name(t->dtype));
        return false;
    }
    if (!bg_same_shape(s, t)) {
        bg_ctx_fail(ctx, BG_ERR_SHAPE, "%s: shapes differ: student is %s, teacher is %s", op,
                    bg_shape_str(s, a, sizeof a), bg_shape_str(t, b, sizeof b));
        return false;
    }
    return true;
}

/* L = (1-alpha) CE(y, z) + alpha T^2 KL(p || q), p = softmax(v/T), q =
 * softmax(z/T), KL = sum_i p_i (log p_i - log q_i), batch mean. Per example
 * dL/dz_i (soft term) = alpha T (q_i - p_i) / N (QAT_MATH.md). */
bg_tensor *bg_kd_loss(bg_ctx *ctx, bg_tensor *student, bg_tensor *teacher, bg_tensor *labels, float T,
                      float alpha) {
    if (!ctx || bg_ctx_status(ctx) != BG_OK) return NULL;
    if (!check_logits(ctx, "kd_loss", student, teacher)) return NULL;
    char a[BG_SHAPE_STR_MAX];
    if (student->ndim != 2)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "kd_loss: logits must be [N,C], got %s",
                           bg_shape_str(student, a, sizeof a));
    if (!(T > 0.0f) || !isfinite(T)) return bg_ctx_fail(ctx, BG_ERR_ARG, "kd_loss: T must be > 0, got %g", (double)T);
    if (!(alpha >= 0.0f && alpha <= 1.0f))
        return bg_ctx_fail(ctx, BG_ERR_ARG, "kd_loss: alpha must be in [0,1], got %g", (double)alpha);
    if (alpha < 1.0f && !labels)
        return bg_ctx_fail(ctx, BG_ERR_ARG, "kd_loss: labels are NULL but alpha is %g < 1", (double)alpha);

    bg_tensor *hard = NULL, *soft = NULL;
    if (alpha < 1.0f) {
        hard = bg_cross_entropy(ctx, student, labels, NULL);
        if (alpha > 0.0f) hard = bg_scale(ctx, hard, 1.0f - alpha);
    }
    if (alpha > 0.0f) {
        // The teacher's side is plain data: computed without a tape.
        bool g = bg_set_grad_enabled(ctx, false);
        bg_tensor *vt = bg_scale(ctx, bg_detach(ctx, teacher), 1.0f / T);
        bg_tensor *p = bg_softmax(ctx, vt, -1);
        bg_tensor *log_p = bg_log_softmax(ctx, vt, -1);
        bg_set_grad_enabled(ctx, g);
        bg_tensor *log_q = bg_log_softmax(ctx, bg_scale(ctx, student, 1.0f / T), -1);
        bg_tensor *kl = bg_sum_all(ctx, bg_mul(ctx, p, bg_sub(ctx, log_p, log_q)));
        float n = (float)student->shape[0];
        soft = bg_scale(ctx, kl, alpha * T * T / n);
    }
    if (hard && soft) return bg_add(ctx, hard, soft);
    return hard ? hard : soft;
}

bg_tensor *bg_logit_mse_loss(bg_ctx *ctx, bg_tensor *student, bg_tensor *teacher) {
    if (!ctx || bg_ctx_status(ctx) != BG_OK) return NULL;
    if (!check_logits(ctx, "logit_mse_loss", student, teacher)) return NULL;
    return bg_mse(ctx, student, bg_detach(ctx, teacher));
}

bg_tensor *bg_feature_mse_loss(bg_ctx *ctx, bg_tensor *const *students, bg_tensor *const *teachers,
                               const float *weights, int n) {
    if (!ctx || bg_ctx_status(ctx) != BG_OK) return NULL;
    if (n < 1 || !students || !teachers)
        return bg_ctx_fail(ctx, BG_ERR_ARG, "feature_mse_loss: need at least one pair, got %d", n);
    bg_tensor *total = NULL;
    for (int i = 0; i < n; i++) {
        bg_tensor *s = students[i], *t = teachers[i];
        char a[BG_SHAPE_STR_MAX], b[BG_SHAPE_STR_MAX];
        if (!s || !t) return bg_ctx_fail(ctx, BG_ERR_ARG, "feature_mse_loss: pair %d has a NULL tensor", i);
        if (!bg_same_shape(s, t))
            return bg_ctx_fail(ctx, BG_ERR_SHAPE, "feature_mse_loss: pair %d shapes differ: student is %s, teacher is %s",
                               i, bg_shape_str(s, a, sizeof a), bg_shape_str(t, b, sizeof b));
        bg_tensor *term = bg_mse(ctx, s, bg_detach(ctx, t));
        if (weights && weights[i] != 1.0f) term = bg_scale(ctx, term, weights[i]);
        total = total ? bg_add(ctx, total, term) : term;
    }
    return total;
}

// ---------------------------------------------------------------------------
// the teacher

bg_tensor *bg_teacher_forward(bg_ctx *ctx, bg_module *teacher, bg_tensor *x) {
    if (!ctx || bg_ctx_status(ctx) != BG_OK) return NULL;
    if (!teacher) return bg_ctx_fail(ctx, BG_ERR_ARG, "teacher_forward: teacher is NULL");
    bool g = bg_set_grad_enabled(ctx, false);
    bg_tensor *y = bg_module_forward(ctx, teacher, x);
    bg_set_grad_enabled(ctx, g);
    return y;
}
