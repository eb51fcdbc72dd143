/* calibrate.c — post-training quantization (calibration over a fixed set of
 * batches) and per-layer weight sensitivity (io/calibrate.h). Calls layers/
 * (quant modes, qlayers), quant/ (state specs) and the evaluation loop of
 * io/train.c; nothing above io/. */
#include <stdlib.h>
#include <string.h>

#include "io/io.h"
#include "quant/quant.h"

// ---------------------------------------------------------------------------
// the batch cache

typedef struct cached_tensor {
    bg_dtype dtype;
    int ndim;
    int64_t shape[BG_MAX_DIMS];
    void *data;
} cached_tensor;

struct bg_batch_cache {
    int64_t n, next;
    cached_tensor *x, *y;
};

static bool keep(cached_tensor *c, bg_tensor *t) {
    size_t bytes = bg_dtype_size(t->dtype) * (size_t)bg_numel(t);
    c->dtype = t->dtype, c->ndim = t->ndim;
    memcpy(c->shape, t->shape, sizeof c->shape);
    c->data = malloc(bytes ? bytes : 1);
    if (c->data) memcpy(c->data, t->data, bytes);   // batchers' tensors are contiguous
    return c->data != NULL;
}

void bg_batch_cache_free(bg_batch_cache *c) {
    if (!c) return;
    for (int64_t i = 0; i < c->n; i++) free(c->x[i].data), free(c->y[i].data);
    free(c->x);
    free(c->y);
    free(c);
}

bg_status bg_batch_cache_new(bg_ctx *ctx, const bg_batch_source *src, int64_t batches, bg_batch_cache **out) {
    if (!out) return bg_set_error(BG_ERR_ARG, "batch_cache_new: out is NULL");
    *out = NULL;
    if (!ctx || !src || !src->next || batches < 1)
        return bg_set_error(BG_ERR_ARG, "batch_cache_new: ctx and source must not be NULL and batches >= 1 (%lld)",
                            (long long)batches);
    bg_batch_cache *c = calloc(1, sizeof *c);
    if (c) c->x = calloc((size_t)batches, sizeof *c->x), c->y = calloc((size_t)batches, sizeof *c->y);
    if (!c || !c->x || !c->y) {
        bg_batch_cache_free(c);
        return bg_set_error(BG_ERR_NOMEM, "batch_cache_new: out of memory for %lld batches", (long long)batches);
    }
    bg_tensor *x, *y;
    while (c->n < batches && src->next(src->src, ctx, &x, &y)) {
        bool ok = keep(&c->x[c->n], x) && keep(&c->y[c->n], y);
        c->n++;   // freed by bg_batch_cache_free either way
        bg_ctx_reset(ctx);
        if (!ok) {
            bg_batch_cache_free(c);
            return bg_set_error(BG_ERR_NOMEM, "batch_cache_new: out of memory copying batch %lld", (long long)c->n);
        }
    }
    if (bg_ctx_status(ctx) != BG_OK || c->n == 0) {
        bg_status st = bg_ctx_status(ctx) != BG_OK
                           ? bg_set_error(bg_ctx_status(ctx), "batch_cache_new: %s", bg_ctx_error(ctx))
                           : bg_set_error(BG_ERR_ARG, "batch_cache_new: the source gave no batch");
        bg_ctx_reset(ctx);
        bg_batch_cache_free(c);
        return st;
    }
    *out = c;
    return BG_OK;
}

int64_t bg_batch_cache_batches(const bg_batch_cache *c) { return c ? c->n : 0; }

static bool next_cached(void *src, bg_ctx *ctx, bg_tensor **x, bg_tensor **y) {
    bg_batch_cache *c = src;
    if (c->next == c->n) {
        c->next = 0;   // the end of a pass: the next call starts again
        return false;
    }
    const cached_tensor *cx = &c->x[c->next], *cy = &c->y[c->next];
    *x = bg_from_data(ctx, cx->dtype, cx->ndim, cx->shape, cx->data);
    *y = bg_from_data(ctx, cy->dtype, cy->ndim, cy->shape, cy->data);
    c->next++;
    return *x && *y;
}

bg_batch_source bg_batch_cache_source(bg_batch_cache *c) {
    if (c) c->next = 0;   // a new source starts at the first batch
    return (bg_batch_source){.next = next_cached, .src = c};
}

// ---------------------------------------------------------------------------
// calibration

bg_status bg_calibrate(bg_ctx *ctx, bg_module *model, const bg_batch_source *src, int64_t *batches_seen) {
    if (!ctx || !model || !src || !src->next)
        return bg_set_error(BG_ERR_ARG, "calibrate: ctx, model and source must not be NULL");
    bool was_training = bg_module_is_training(model);
    bg_module_train(model, false);
    bg_model_set_quant_mode(model, BG_QUANT_MODE_TRAIN);   // observers on
    bool grad = bg_set_grad_enabled(ctx, false);
    int64_t seen = 0;
    bg_tensor *x, *y;
    while (src->next(src->src, ctx, &x, &y)) {
        if (!bg_module_forward(ctx, model, x)) break;
        seen++;
        bg_ctx_reset(ctx);
    }
    bg_set_grad_enabled(ctx, grad);
    bg_model_set_quant_mode(model, BG_QUANT_MODE_EVAL);
    bg_module_train(model, was_training);
    if (batches_seen) *batches_seen = seen;
    if (bg_ctx_status(ctx) != BG_OK) {
        bg_status st = bg_set_error(bg_ctx_status(ctx), "calibrate: batch %lld: %s", (long long)seen, bg_ctx_error(ctx));
        bg_ctx_reset(ctx);
        return st;
    }
    return BG_OK;
}

// ---------------------------------------------------------------------------
// sensitivity

/* Mean loss over the cache with the model as it is set now. */
static bg_status cache_loss(bg_ctx *ctx, bg_module *model, bg_batch_cache *calib, double *loss) {
    bg_batch_source src = bg_batch_cache_source(calib);
    return bg_evaluate_loss(ctx, model, &src, loss);
}

bg_status bg_weight_sensitivity(bg_ctx *ctx, bg_module *model, bg_batch_cache *calib, const char *const *specs,
                                int n_specs, double *base_loss, double *delta) {
    if (!ctx || !model || !calib || !specs || n_specs < 1 || !base_loss || !delta)
        return bg_set_error(BG_ERR_ARG, "weight_sensitivity: NULL argument or no candidate spec");
    const int n = bg_qlayer_count(model);
    if (n == 0) return bg_set_error(BG_ERR_ARG, "weight_sensitivity: the model has no quantized layer (bg_quantize_model first)");
    bg_quant_spec *parsed = malloc(sizeof *parsed * (size_t)n_specs);
    if (!parsed) return bg_set_error(BG_ERR_NOMEM, "weight_sensitivity: out of memory");
    bg_status st = BG_OK;
    for (int j = 0; j < n_specs && st == BG_OK; j++) st = bg_quant_spec_parse(specs[j], &parsed[j]);
    bg_model_set_quant_mode(model, BG_QUANT_MODE_FP32);
    if (st == BG_OK) st = cache_loss(ctx, model, calib, base_loss);
    for (int i = 0; i < n && st == BG_OK; i++) {
        bg_module *layer = bg_qlayer_at(model, i);
        bg_quant_state *w = bg_qlayer_weight_state(layer);
        if (!w) {   // a layer whose weights stay float: no effect
            for (int j = 0; j < n_specs; j++) delta[i * n_specs + j] = 0.0;
            continue;
        }
        bg_quant_spec saved = *bg_quant_state_spec(w);
        for (int j = 0; j < n_specs && st == BG_OK; j++) {
            st = bg_quant_state_set_spec(w, &parsed[j]);
            bg_quant_state_set_enabled(w, true);
            bg_quant_state_set_observer(w, true);   // the weights' range, observed in the forward
            double loss = 0;
            if (st == BG_OK) st = cache_loss(ctx, model, calib, &loss);
            delta[i * n_specs + j] = loss - *base_loss;
            bg_quant_state_set_enabled(w, false);
        }
        // The layer's own spec again, its range observed from its weights
        // (set_spec forgets it).
        bg_status rs = bg_quant_state_set_spec(w, &saved);
        if (rs == BG_OK) rs = bg_quant_state_init_from(w, bg_qlayer_weight(layer));
        if (st == BG_OK) st = rs;
    }
    bg_model_set_quant_mode(model, BG_QUANT_MODE_EVAL);
    free(parsed);
    return st;
}

// ---------------------------------------------------------------------------
// GPTQ over a Sequential model

/* A child that GPTQ can round: a qlayer with a 2-D weight and a symmetric
 * per-tensor or per-channel (axis 0) weight spec. */
static bool gptq_fits(bg_module *c) {
    if (!bg_module_is_qlayer(c)) return false;
    bg_tensor *w = bg_qlayer_weight(c);
    bg_quant_state *st = bg_qlayer_weight_state(c);
    if (!w || !st || w->ndim != 2) return false;
    const bg_quant_spec *s = bg_quant_state_spec(st);
    // Integer widths only: on a 3-level grid with the absmean scale fixed,
    // the error GPTQ pushes along a row costs more than it saves (the demo's
    // MLP after ptq --wspec ternary: 72.70% with GPTQ, 79.77% without).
    return s->kind == BG_QUANT_INT && s->symmetric && (s->granularity == BG_QUANT_PER_TENSOR ||
                            (s->granularity == BG_QUANT_PER_CHANNEL && (s->axis == 0 || s->axis == -2)));
}

/* H += X^T X for the rows of x [n, cols] (float inputs, double sums). */
static void add_gram(double *H, const float *x, int64_t n, int64_t cols) {
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * cols;
        for (int64_t i = 0; i < cols; i++) {
            if (xr[i] == 0.0f) continue;   // ReLU outputs: mostly zeros
            double xi = xr[i];
            double *Hi = H + i * cols;
            for (int64_t j = 0; j < cols; j++) Hi[j] += xi * xr[j];
        }
    }
}

/* Rounds one layer with its Hessian (sum of X^T X over n rows). */
static bg_status gptq_layer(bg_ctx *ctx, bg_module *c, double *H, int64_t n, double percdamp) {
    bg_tensor *w = bg_qlayer_weight(c);
    bg_quant_state *st = bg_qlayer_weight_state(c);
    const int64_t rows = w->shape[0], cols = w->shape[1];
    for (int64_t i = 0; i < cols * cols; i++) H[i] *= 2.0 / (double)(n > 0 ? n : 1);
    bg_quant_params qp;
    bg_quant_state_set_observer(st, true);
    bg_status s = bg_quant_params_compute(ctx, bg_quant_state_spec(st), st, w, &qp);
    float *scale = malloc(sizeof(float) * (size_t)rows), *wq = malloc(sizeof(float) * (size_t)(rows * cols));
    float *from = malloc(sizeof(float) * (size_t)(rows * cols));
    if (s == BG_OK && (!scale || !wq || !from)) s = bg_set_error(BG_ERR_NOMEM, "gptq_model: out of memory");
    if (s == BG_OK) {
        for (int64_t r = 0; r < rows; r++) scale[r] = qp.scale[qp.channels == rows ? r : 0];
        s = bg_gptq_quantize(bg_f32(w), rows, cols, H, scale, qp.qmin, qp.qmax, percdamp, wq, from);
    }
    // The latent weights become the error-compensated values GPTQ rounded
    // (not the grid points: QAT then still knows where in its bin each
    // weight sits), and the state keeps the range it observed from the
    // original weights, so its scale stays the one GPTQ rounded with and the
    // first fake quant reproduces GPTQ's codes.
    if (s == BG_OK) memcpy(bg_f32(w), from, sizeof(float) * (size_t)(rows * cols));
    free(scale);
    free(wq);
    free(from);
    bg_ctx_reset(ctx);
    return s;
}

bg_status bg_gptq_model(bg_ctx *ctx, bg_module *model, bg_batch_cache *calib, double percdamp, int *layers_done) {
    if (layers_done) *layers_done = 0;
    if (!ctx || !model || !calib) return bg_set_error(BG_ERR_ARG, "gptq_model: ctx, model and cache must not be NULL");
    if (strcmp(bg_module_kind(model), "Sequential") != 0) return BG_OK;   // nothing it can walk
    const int nc = bg_module_num_children(model);
    double **H = calloc((size_t)nc, sizeof *H);
    int64_t *rows = calloc((size_t)nc, sizeof *rows);
    bg_status s = H && rows ? BG_OK : bg_set_error(BG_ERR_NOMEM, "gptq_model: out of memory");
    for (int i = 0; i < nc && s == BG_OK; i++) {
        bg_module *c = bg_module_child(model, i);
        if (!gptq_fits(c)) continue;
        int64_t cols = bg_qlayer_weight(c)->shape[1];
        if (!(H[i] = calloc((size_t)(cols * cols), sizeof(double))))
            s = bg_set_error(BG_ERR_NOMEM, "gptq_model: out of memory for a %lld x %lld Hessian", (long long)cols,
                             (long long)cols);
    }
    // The float model's inputs of every layer, batch by batch.
    bool was_training = bg_module_is_training(model), grad = bg_set_grad_enabled(ctx, false);
    bg_module_train(model, false);
    bg_model_set_quant_mode(model, BG_QUANT_MODE_FP32);
    bg_batch_source src = bg_batch_cache_source(calib);
    bg_tensor *x, *y;
    while (s == BG_OK && src.next(src.src, ctx, &x, &y)) {
        for (int i = 0; i < nc && x; i++) {
            bg_module *c = bg_module_child(model, i);
            if (H[i]) {
                bg_tensor *xc = bg_contiguous(ctx, x);
                int64_t cols = bg_qlayer_weight(c)->shape[1], n = xc ? bg_numel(xc) / cols : 0;
                if (xc) add_gram(H[i], bg_f32(xc), n, cols), rows[i] += n;
            }
            x = bg_module_forward(ctx, c, x);
        }
        if (bg_ctx_status(ctx) != BG_OK) s = bg_set_error(bg_ctx_status(ctx), "gptq_model: %s", bg_ctx_error(ctx));
        bg_ctx_reset(ctx);
    }
    for (int i = 0; i < nc && s == BG_OK; i++) {
        if (!H[i]) continue;
        s = gptq_layer(ctx, bg_module_child(model, i), H[i], rows[i], percdamp);
        if (s == BG_OK && layers_done) (*layers_done)++;
    }
    bg_model_set_quant_mode(model, BG_QUANT_MODE_EVAL);
    bg_set_grad_enabled(ctx, grad);
    bg_module_train(model, was_training);
    for (int i = 0; H && i < nc; i++) free(H[i]);
    free(H);
    free(rows);
    return s;
}
