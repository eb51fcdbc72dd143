/* gradcheck.c — compares the tape's gradients with central differences.
 * Calls tensor/ and the autograd entry points only. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/autograd_internal.h"

/* sum(out * R) in double: the scalar whose gradient is checked. */
static double weighted_sum(const bg_tensor *out, const float *r) {
    double s = 0.0;
    const float *o = bg_f32(out);
    for (int64_t i = 0, n = bg_numel(out); i < n; i++) s += (double)o[i] * (double)r[i];
    return s;
}

static bg_status eval_loss(bg_ctx *ctx, bg_gradcheck_fn f, bg_tensor *const *inputs, void *user,
                           const float *r, int64_t n_out, double *loss) {
    bg_ctx_reset(ctx);
    bool g = bg_set_grad_enabled(ctx, false);
    bg_tensor *out = f(ctx, inputs, user);
    bg_set_grad_enabled(ctx, g);
    if (!out) return bg_ctx_status(ctx) != BG_OK ? bg_ctx_status(ctx) : BG_ERR_STATE;
    out = bg_contiguous(ctx, out);
    if (!out || bg_numel(out) != n_out)
        return bg_set_error(BG_ERR_STATE, "gradcheck: output changed size between evaluations");
    *loss = weighted_sum(out, r);
    return BG_OK;
}

static bg_status check_inputs(bg_tensor *const *inputs, int n_inputs) {
    for (int i = 0; i < n_inputs; i++) {
        const bg_tensor *x = inputs[i];
        if (!x) return bg_set_error(BG_ERR_ARG, "gradcheck: input %d is NULL", i);
        if (!x->persistent || !bg_is_contiguous(x))
            return bg_set_error(BG_ERR_ARG, "gradcheck: input %d must be a contiguous persistent tensor", i);
        if (x->requires_grad && !x->grad)
            return bg_set_error(BG_ERR_ARG, "gradcheck: input %d requires grad but has no grad buffer", i);
    }
    return BG_OK;
}

bg_status bg_gradcheck(bg_gradcheck_fn f, bg_tensor *const *inputs, int n_inputs, void *user,
                       double eps, double atol, double rtol, bg_gradcheck_report *report) {
    bg_gradcheck_report rep = {.input = -1, .index = -1};
    bg_status st = check_inputs(inputs, n_inputs);
    if (st != BG_OK) return st;
    bg_ctx *ctx = bg_ctx_new(0);
    if (!ctx) return BG_ERR_NOMEM;
    float *r = NULL;

    // Analytic pass: dout = R.
    bg_tensor *out = f(ctx, inputs, user);
    if (!out) {
        st = bg_ctx_status(ctx) != BG_OK ? bg_ctx_status(ctx) : BG_ERR_STATE;
        bg_set_error(st, "%s", bg_ctx_error(ctx));
        goto done;
    }
    int64_t n_out = bg_numel(out);
    r = malloc(sizeof *r * (size_t)(n_out ? n_out : 1));
    if (!r) {
        st = bg_set_error(BG_ERR_NOMEM, "gradcheck: out of memory");
        goto done;
    }
    bg_rng rng;
    bg_rng_seed(&rng, 0x5eed);
    for (int64_t i = 0; i < n_out; i++) r[i] = 2.0f * bg_rng_uniform(&rng) - 1.0f;
    for (int i = 0; i < n_inputs; i++)
        if (inputs[i]->requires_grad) memset(inputs[i]->grad->data, 0, bg_nbytes(inputs[i]->grad));
    bg_tensor *rt = bg_from_data(ctx, BG_DTYPE_F32, out->ndim, out->shape, r);
    if (!rt || bg_backward_with_grad(ctx, out, rt) != BG_OK) {
        st = bg_ctx_status(ctx);
        bg_set_error(st, "%s", bg_ctx_error(ctx));
        goto done;
    }

    // Numeric pass, element by element.
    double worst = -1.0;
    for (int i = 0; i < n_inputs; i++) {
        bg_tensor *x = inputs[i];
        if (!x->requires_grad) continue;
        float *xv = bg_f32(x);
        const float *ga = bg_f32(x->grad);
        for (int64_t j = 0, n = bg_numel(x); j < n; j++) {
            float orig = xv[j];
            double lp, lm;
            xv[j] = orig + (float)eps;
            st = eval_loss(ctx, f, inputs, user, r, n_out, &lp);
            xv[j] = orig - (float)eps;
            if (st == BG_OK) st = eval_loss(ctx, f, inputs, user, r, n_out, &lm);
            xv[j] = orig;
            if (st != BG_OK) goto done;
            double num = (lp - lm) / (2.0 * eps), ana = ga[j];
            double abs_err = fabs(ana - num), rel_err = abs_err / fmax(fabs(num), 1e-12);
            bool bad = !(abs_err <= atol + rtol * fabs(num));
            rep.checked++;
            rep.failed += bad;
            if (abs_err > rep.max_abs_err) rep.max_abs_err = abs_err;
            if (abs_err > atol && rel_err > rep.max_rel_err) rep.max_rel_err = rel_err;
            double score = abs_err - (atol + rtol * fabs(num));
            if (score > worst) {
                worst = score;
                rep.input = i;
                rep.index = j;
                rep.analytic = ana;
                rep.numeric = num;
            }
        }
    }
    st = rep.failed ? bg_set_error(BG_ERR_STATE,
                                   "gradcheck: %lld of %lld elements differ; worst input %d [%lld]: "
                                   "analytic %.6g, numeric %.6g",
                                   (long long)rep.failed, (long long)rep.checked, rep.input,
                                   (long long)rep.index, rep.analytic, rep.numeric)
                    : BG_OK;
done:
    free(r);
    bg_ctx_free(ctx);
    if (report) *report = rep;
    return st;
}
