/* io/calibrate.h — post-training quantization and per-layer sensitivity
 * (io/calibrate.c): the data-driven half of automatic precision; the
 * choice of bit-widths under a budget is qat.h's (bg_budget_solve).
 *
 *     bg_batch_cache *calib;
 *     bg_batch_cache_new(ctx, &src, 8, &calib);             // 8 batches, kept
 *     bg_quantize_model(model, "int4", "int8");
 *     bg_batch_source cs = bg_batch_cache_source(calib);
 *     bg_calibrate(ctx, model, &cs, NULL);                  // observers see the data, then freeze
 *     const char *specs[] = {"ternary", "int4", "int8"};
 *     bg_weight_sensitivity(ctx, model, calib, specs, 3, &base, delta);   // delta [qlayers x 3]
 */
#ifndef BG_IO_CALIBRATE_H
#define BG_IO_CALIBRATE_H

#include "io/train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A fixed set of batches copied out of a source once, replayed as often as
 * needed (calibration, sensitivity, the quality gate all measure on the same
 * data). */
typedef struct bg_batch_cache bg_batch_cache;
/* Copies up to `batches` batches of src (fewer when it ends first; none is
 * an error). BG_ERR_ARG / BG_ERR_NOMEM / the source's error. */
bg_status bg_batch_cache_new(bg_ctx *ctx, const bg_batch_source *src, int64_t batches, bg_batch_cache **out);
void bg_batch_cache_free(bg_batch_cache *c);
int64_t bg_batch_cache_batches(const bg_batch_cache *c);
/* A source over the cache, from its first batch: every batch once, then
 * false once (and the next call starts again), like the image batcher's
 * epochs. */
bg_batch_source bg_batch_cache_source(bg_batch_cache *c);

/* Calibration: runs every batch of src once through model without
 * gradients, layers in eval mode (train flag off), with every quantizer
 * observing (BG_QUANT_MODE_TRAIN), so observed ranges are those of the
 * data; then freezes them (BG_QUANT_MODE_EVAL). Returns the batches seen
 * in *batches_seen (may be NULL). */
bg_status bg_calibrate(bg_ctx *ctx, bg_module *model, const bg_batch_source *src, int64_t *batches_seen);

/* Per-layer sensitivity of a quantized model's weights: for every qlayer i
 * and candidate spec j, the mean loss over the cache with only layer i's
 * weights quantized at spec j (every other quantizer off, activations in
 * float) minus the loss of the float model (*base_loss). delta is
 * [qlayers x n_specs], row-major. The model's quantizer specs and modes
 * are restored after (quant mode: EVAL). */
bg_status bg_weight_sensitivity(bg_ctx *ctx, bg_module *model, bg_batch_cache *calib, const char *const *specs,
                                int n_specs, double *base_loss, double *delta);

/* GPTQ start for QAT: for each quantized Linear child of a Sequential model
 * (per-tensor or per-channel symmetric weights), the Hessian 2/n X^T X of
 * its float inputs over the cache, then bg_gptq_quantize with the scale the
 * layer's weight quantizer computes from its weights (integer widths only:
 * ternary and binary layers keep their weights, where GPTQ measured worse
 * than rounding to nearest); the latent weights become the
 * error-compensated values GPTQ rounded (each inside the bin of its GPTQ
 * code), and the quantizer keeps the range of the original weights, so its
 * scale is the one GPTQ rounded with and the first fake quant gives GPTQ's
 * codes. Other
 * layers (convolutions, per-group specs, models that are not Sequential)
 * keep their weights. *layers_done (may be NULL) counts the layers changed.
 * percdamp: GPTQ's 0.01. */
bg_status bg_gptq_model(bg_ctx *ctx, bg_module *model, bg_batch_cache *calib, double percdamp, int *layers_done);

#ifdef __cplusplus
}
#endif
#endif
