/*
 * infer — the integer inference runtime: loads an export written by
 * bg_export (io/export.h, doc/export-format.md) and runs it without autograd,
 * on the integer kernels of kernels/kernels.h (ternary x int8 and int8 x
 * int8, int32 accumulation, one float rescale per output).
 *
 *     bg_infer_model *m;
 *     if (bg_infer_load("mlp.bgx", &m) != BG_OK) fprintf(stderr, "%s\n", bg_last_error());
 *     float logits[64 * 10];
 *     bg_infer_run(m, images, 64, logits);       // images f32 [64, 784]
 *     bg_infer_free(m);
 *
 * How each layer runs (chosen at load, printed by bg_infer_print):
 * - "int": Linear-like layers whose weights are ternary or integer codes
 *   with a per-tensor or per-output-channel scale and whose input quantizer
 *   is per-token absmax (BitLinear, after its RMSNorm without gain) or a
 *   static per-tensor scale / zero point (unsigned codes shifted by -128
 *   into int8, which leaves code - z unchanged), and K <= 65536 (exact int32
 *   sums): the activations are quantized with quantize_rows, multiplied with gemm_ternary (t2 weights) or gemm_s8 (i8 /
 *   i4 / u4 / u8 codes minus their zero point, unpacked to int8 at load; a
 *   code -128 is carried as -127 plus an exact sparse correction, since
 *   gemm_s8 wants |w| <= 127), and each output is rescaled once:
 *       y[m,n] = (acc[m,n] - zx * rowsum(w[n])) * sx[m] * sw[n] + b[n].
 * - "int s8 groups": the same with per-group weight scales (groups of G
 *   consecutive inputs, G >= 64 or any G whose padding to a multiple of 128
 *   at most doubles the work): no single rescale per output exists, so each
 *   group is one integer product (codes regrouped [groups, M, padded G]),
 *   rescaled by its group's scale and summed in f32:
 *       y[m,n] = sx[m] * sum_j (acc_j[m,n] - zx * rowsum_j(w[n])) * sw[n,j] + b[n].
 * - "f32": everything else that is quantized, computed in f32 from the
 *   dequantized weights (w = (code - z) * s) and fake-quantized inputs (the
 *   training kernels' arithmetic): small weight groups, per-channel
 *   activation scales, weights on another channel axis, weight codes
 *   outside -128..127 after the zero point (-128 in a grouped layer), and
 *   every QConv2d / Conv2d (bg_conv2d_forward, no im2col on integers yet).
 *   Float layers run as they are (bg_sgemm, bg_conv2d_forward, the pooling
 *   kernels).
 *
 * Memory: every buffer is allocated at load for max_batch examples; a run
 * of more examples is processed in chunks, so bg_infer_run itself never
 * allocates (0 mallocs per run on the integer paths, counted); f32 layers
 * call bg_sgemm / bg_conv2d_forward, whose oneDNN backend allocates a little
 * scratch per call, as int8 layers do with use_dnnl.
 * A model is not thread-safe (one run at a time); threads come from the
 * kernels' OpenMP (bg_set_num_threads).
 */
#ifndef BG_INFER_H
#define BG_INFER_H

#include "format/format.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bg_infer_model bg_infer_model;   /* opaque */

typedef struct bg_infer_opts {
    int64_t max_batch;   /* examples per chunk (buffers sized for it); 0 = 256 */
    bool force_f32;      /* run every layer on the f32 path (for comparisons) */
    bool use_dnnl;       /* int8 x int8 layers through oneDNN's s8 matmul
                            (bg_gemm_s8_dnnl) instead of gemm_s8 */
} bg_infer_opts;

/* Loads an export. Checks, before it returns: the format name and version;
 * every field of the layer list it reads (unknown kinds, weight formats,
 * granularities, input modes refused; flags must be JSON booleans); every
 * tensor's dtype and shape against the layer list (a weight's "shape" and
 * "layout" against the layer and its granularity, qmin/qmax against the
 * weight format, a bias of the wrong length ...); the packed codes (a t2
 * byte with code 3); that consecutive layers' shapes fit and each layer's
 * "out_shape" is what it computes; that every tensor of the file is read by
 * its layer and "output_size" is the last layer's; and the numbers:
 *   - weight and input scales in [1e-30, 1e30] (BG_EXPORT_SCALE_MIN/MAX in
 *     format/format.h): NaN, Inf, 0, negative, subnormal (1e-45) and huge
 *     (3e38) scales are refused;
 *   - f32 weights, biases and norm gains finite with |v| <= 1e30
 *     (BG_EXPORT_VALUE_MAX).
 * *out is NULL on failure and bg_last_error() names the path, the layer and
 * the problem in one sentence (BG_ERR_IO: cannot read; BG_ERR_FORMAT:
 * corrupt or not an export), e.g.
 * "infer_load: m.bgx: layer 0: 0.weight is u8 [512,100], want u8 [512,224]",
 * "infer_load: m.bgx: layer 0: weight scale 3 is 3e+38, outside [1e-30, 1e+30]",
 * "infer_load: m.bgx: layer 0: weight granularity \"per_atom\" is not
 * per_tensor, per_channel, per_group or per_token",
 * "infer_load: m.bgx: layer 0: \"out_shape\" is [5], the layer computes [16]". */
bg_status bg_infer_load(const char *path, bg_infer_model **out);
bg_status bg_infer_load_opts(const char *path, const bg_infer_opts *opts, bg_infer_model **out);
/* NULL is a no-op. */
void bg_infer_free(bg_infer_model *m);

/* out[n, output_size] = the model's logits for x[n, input_features] (f32,
 * row-major). n >= 0; no allocation. BG_ERR_ARG on NULL pointers or n < 0.
 * Inputs must be finite: the integer paths would turn a NaN or Inf into
 * finite logits (absmax scaling and rounding absorb it), so x is scanned
 * once before anything runs (one read of the input, small next to the first
 * layer's products) and a NaN or Inf gives BG_ERR_NAN, e.g. "infer_run:
 * example 3 has a NaN or Inf at feature 17 (value nan)", with out untouched.
 * Large finite inputs run as they are. */
bg_status bg_infer_run(bg_infer_model *m, const float *x, int64_t n, float *out);

/* Elements per example of the input and the output. */
int64_t bg_infer_input_features(const bg_infer_model *m);
int64_t bg_infer_output_size(const bg_infer_model *m);
/* Runtime layers (Sequential flattened), and how layer i runs: its name
 * ("0", "2.1"), kind ("linear", "conv2d", "relu", ...) and path ("int
 * ternary", "int s8", "int s8 groups", "f32"); NULL when i is out of range. */
int bg_infer_num_layers(const bg_infer_model *m);
const char *bg_infer_layer_name(const bg_infer_model *m, int i);
const char *bg_infer_layer_kind(const bg_infer_model *m, int i);
const char *bg_infer_layer_path(const bg_infer_model *m, int i);
/* One line per layer (name, kind, shapes, path) to f. */
void bg_infer_print(const bg_infer_model *m, FILE *f);

#ifdef __cplusplus
}
#endif
#endif /* BG_INFER_H */
