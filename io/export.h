/* io/export.h — the export for the inference runtime (io/export.c) and
 * ONNX export (io/onnx.c). */
#ifndef BG_IO_EXPORT_H
#define BG_IO_EXPORT_H

#include "format/format.h"
#include "format/gguf.h"
#include "layers/layers.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------
// export for inference (io/export.c; the runtime is infer/infer.h)
//
// A safetensors file with only what inference needs, per layer: weights as
// packed ternary ("t2", 2 bits each, the layout of kernels.h), 4-bit codes
// (two per byte), 8-bit codes or f32 (float layers), their scales and zero
// points as trained (per-tensor, per-channel, per-group), biases (f32), the
// activation quantizer (static scale / zero point, or per-token absmax) and
// BitLinear's RMSNorm eps; __metadata__ holds "format" = "bitgrad-export",
// "version" = "1", "layers" (the JSON the runtime reads), "input_shape",
// "output_size" and "model" (bg_model_to_json). doc/export-format.md has
// every byte.
//
//     bg_model_set_quant_mode(net, BG_QUANT_MODE_EVAL);
//     if (bg_export(net, "mlp.bgx", NULL) != BG_OK) fprintf(stderr, "%s\n", bg_last_error());
//     bg_infer_model *rt; bg_infer_load("mlp.bgx", &rt);        // infer/infer.h

typedef struct bg_export_opts {
    /* Shape of one example (without the batch dim), e.g. {784} or {1,28,28};
     * input_ndim 0 = taken from the first layer (a Linear's in_features; a
     * model starting with a Conv2d needs it). */
    int input_ndim;
    int64_t input_shape[3];
} bg_export_opts;

/* Writes model (a Sequential, nested Sequentials, or one layer) for the
 * runtime, as the model computes in BG_QUANT_MODE_EVAL: the codes are those
 * of each weight quantizer with its observer frozen (an LSQ step never
 * initialised is initialised from the weights, as the first forward would);
 * a disabled quantizer (fp32 mode, a schedule's fp32 phase) exports that side
 * as float; stochastic rounding of activations becomes nearest. Supported
 * kinds: Linear, Conv2d, QLinear, QConv2d, BitLinear, ReLU, LeakyReLU, GELU,
 * SiLU, Tanh, Sigmoid, Flatten, MaxPool2d, AvgPool2d, LayerNorm, RMSNorm
 * (over the last dim), Dropout (identity).
 * The file is written atomically, and only after every layer was encoded:
 * on any error nothing is written and bg_last_error() names the layer, e.g.
 * "export: layer 1: unsupported kind \"Embedding\" (the runtime runs Linear,
 * Conv2d, their quantized forms, activations, Flatten, pools, norms)".
 * Numbers (the runtime's bounds, format/format.h): every parameter of an
 * exported layer must be finite (BG_ERR_NAN naming it: "export: layer 0:
 * parameter 0.weight has a NaN or Inf at index 5 (value nan)"); float
 * tensors stored as they are (f32 weights, biases, norm gains) must have
 * |v| <= 1e30 (BG_ERR_ARG: "export: layer 0: parameter 0.weight holds 3e+38
 * at index 3, beyond the exportable magnitude 1e+30"); weight scales must
 * lie in [1e-30, 1e30] (BG_ERR_ARG: "export: layer 0: weight scale 0 is
 * 1.17647e+36, outside [1e-30, 1e+30] (the largest |weight| is 3e+38)"), as
 * must input scales (BG_ERR_STATE).
 * The output path is written through the atomic writer (format/format.h): an
 * existing path that is not a regular file (/dev/null, a FIFO, a folder) is
 * refused (BG_ERR_IO) and stale temporary files of the path are removed.
 * opts may be NULL. Side effect: computing the weight codes advances the
 * weight quantizers' call counters (as one forward would); no range changes. */
bg_status bg_export(const bg_module *model, const char *path, const bg_export_opts *opts);


// ---------------------------------------------------------------------------
// GGUF export of a language model (io/gguf_export.c), for llama.cpp
//
//     bg_model_set_quant_mode(lm, BG_QUANT_MODE_EVAL);
//     if (bg_export_gguf(lm, "lm.gguf", BG_GGUF_TYPE_TQ2_0) != BG_OK)
//         fprintf(stderr, "%s\n", bg_last_error());
//     // llama.cpp runs it with its `bitnet` graph (doc/export-format.md "GGUF")
//
// Writes a TransformerLM (layers.h bg_lm_new) as GGUF v3 (format/gguf.h):
// - general.* and the `bitnet` keys: sizes as u32, layer_norm_rms_epsilon
//   and rope.freq_base as f32, rope.dimension_count = the head size,
//   head_count_kv = head_count, general.name = the file name without folder
//   and extension;
// - a byte vocabulary (SentencePiece model "llama") in which ids 0..255 are
//   the bytes, so bitgrad's ids are llama.cpp's ids and a text tokenizes to
//   its UTF-8 bytes in both: tokens <0x00> ... <0xFF> of type byte, except
//   id 0x20, which is SentencePiece's space U+2581 (llama.cpp turns every
//   space into it); then <unk> 256, <s> 257, </s> 258, whose embedding rows
//   are zero, so their logits are 0; no BOS, EOS or space prefix added;
// - token_embd [259, d_model] and the norms in F32;
// - the seven projections of every block in type: TQ2_0 or TQ1_0 (a BitNet
//   model's ternary codes, every block's d = the tensor's absmean scale as
//   fp16), F16 or F32 (a BitNet model's code * scale, or a float model's
//   weights). The codes are the eval-mode forward's (the weight quantizer's
//   observer frozen, as bg_export).
// Refused with one sentence and nothing written (BG_ERR_ARG unless said):
//  - a model that is not a TransformerLM, or whose vocabulary is not 256;
//  - a TQ type for a float model: "gguf_export: blk.0.attn_q: TQ2_0 stores
//    ternary weights, and this projection is a float Linear (an fp32 model;
//    use --type f16 or f32)";
//  - a TQ type when a projection's rows (d_model, or d_ff for ffn_down) are
//    not a multiple of 256: "gguf_export: blk.0.attn_q: TQ2_0 needs rows that
//    are multiples of 256 elements; d_model is 64 (use --type f16 or f32)";
//  - a projection that is neither a float Linear nor a BitNet BitLinear (a
//    schedule's int4 phase), as bg_export;
//  - a NaN or Inf anywhere (BG_ERR_NAN), a float value beyond 1e30 (65504
//    for F16), a weight scale outside [1e-30, 1e30] or, for F16 / TQ types,
//    outside the normal halves [6.1e-05, 65504];
//  - a path that exists and is not a regular file (BG_ERR_IO, the atomic
//    writer of format/format.h).
// Side effect: computing the codes advances the weight quantizers' call
// counters (as one forward would); no range changes.
bg_status bg_export_gguf(const bg_module *lm, const char *path, bg_gguf_type type);

// ---------------------------------------------------------------------------
// ONNX export (io/onnx.c)
//
//     int64_t shape[2] = {1, 784};                 // dim 0 (batch) is written as "N"
//     if (bg_export_onnx(net, "mlp.onnx", 2, shape) != BG_OK)
//         fprintf(stderr, "%s\n", bg_last_error());
//
// The graph (opset 13, IR version 7, written through protobuf-c from Debian's
// onnx.proto) computes what bg_module_forward computes in eval quant mode
// (observers frozen at their current ranges; dropout off):
//  - quantized weights (QLinear, QConv2d, BitLinear) are initializers holding
//    their integer codes — int8 for signed kinds, ternary and binary
//    (values -1/0/+1) included; uint8 for unsigned ones — with their scales
//    and zero points, feeding DequantizeLinear: per-tensor, or per-channel on
//    axis 0. Per-group weights (G consecutive elements of the last axis) are
//    stored as codes of shape [numel/G, G] with one scale per row (axis 0)
//    and Reshape'd back after DequantizeLinear, which is exact.
//  - static activation quantizers (observers, fixed, LSQ, LSQ+, PACT) become
//    Mul(x, 1/s) -> QuantizeLinear(scale 1, zero point z) -> [Clip to the
//    code range when it is narrower than 8 bits] -> DequantizeLinear(s, z).
//    ONNX's QuantizeLinear divides (x / s) while bitgrad multiplies by the
//    rounded inverse (x * (1/s), as PyTorch does); the two differ in the
//    last bit and can move a code at an exact half-way point (e.g. pixels
//    k/255 under scale 1/127.5), so the multiply is kept outside.
//  - dynamic per-token (or per-tensor) absmax activations, and BitLinear's
//    RMSNorm (no gain, eps 1e-6) + int8 per-token absmax, are spelled out
//    with standard ops: the RMSNorm in float64 (Cast, Mul, ReduceMean, Add,
//    Sqrt, Div, Cast) as bitgrad accumulates it; then s = max(ReduceMax(
//    Abs(x)), 1e-5) / 127, x * Reciprocal(s), Round (half to even),
//    Clip(-128, 127), * s — the same float operations in the same order.
//    (Reciprocal, not Div(1, s): onnxruntime's basic graph level fuses
//    Div(1, s) -> Mul into Div(x, s), which rounds differently.)
//  - then Gemm (transB, no C) + Add bias, or Conv (with its bias), in float;
//    ReLU, LeakyReLU, Tanh, Sigmoid, SiLU, GELU (erf or tanh form),
//    Flatten, MaxPool, AveragePool (count_include_pad), Dropout (identity),
//    and float Linear / Conv2d as plain ops. A quantizer whose state is
//    disabled (fp32 quant mode) is left out, as in the forward.
// Remaining differences from bitgrad's forward are float summation orders
// (matmul, conv, the float64 sum of squares); they are usually far below
// 1e-4 of the logit range, but a sum that lands on the other side of a
// rounding half-way point moves one activation code by one step.
//
// input_shape: ndim dims of one input batch ({1, 784} for an MLP, {1, 1,
// 28, 28} for a CNN); dim 0 is the batch, written as the symbolic dim "N"
// (its value is not used). The output is "logits". The file is written
// atomically (temporary file in the same folder, fsync, rename).
// Measured (tests/test_onnx.c, 256 Fashion-MNIST test images, onnxruntime-
// node 1.30 at graphOptimizationLevel 'basic'): max |logit difference| 0 for
// the int8 MLP and CNN, ~5e-6 for the BitLinear and ternary MLPs (logit
// ranges 13-24), against both the eval forward and the integer runtime.
// Refused with a clear error and nothing written: modules without an ONNX
// form here (Embedding, QEmbedding, LayerNorm, custom kinds; RMSNorm is
// supported) and binary or per-token static activations (BG_ERR_UNSUPPORTED,
// "onnx_export: layer 0: LayerNorm has no ONNX form here"), stochastic
// rounding (BG_ERR_UNSUPPORTED: not reproducible), learned quantizers never
// initialised by a forward (BG_ERR_STATE). BG_ERR_ARG for a NULL argument
// or fewer than 2 / more than 8 dims, BG_ERR_SHAPE when the input does not
// fit a layer ("onnx_export: layer 0 expects 784 input features, the input
// has 780"), BG_ERR_IO when the file cannot be written.
// Side effect: computing the quantization parameters advances the
// quantizers' call counters (as one forward would); no range changes.
bg_status bg_export_onnx(const bg_module *model, const char *path, int ndim, const int64_t *input_shape);

#ifdef __cplusplus
}
#endif
#endif /* BG_IO_EXPORT_H */
