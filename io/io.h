/*
 * io — files: safetensors (checkpoints, exports, reference tensors),
 * datasets (Fashion-MNIST IDX), PNG plots.
 *
 *     bg_safetensors *st;
 *     if (bg_safetensors_open("tests/reference/ops.safetensors", &st) != BG_OK)
 *         fprintf(stderr, "%s\n", bg_last_error());
 *     bg_tensor x;                               // a view into st's buffer
 *     if (bg_safetensors_get(st, "relu.x", &x) == BG_OK) use(bg_f32(&x));
 *     bg_safetensors_free(st);
 *
 * Every loader checks sizes, offsets, dtypes and shapes against the file's
 * length before touching data; a corrupt file gives BG_ERR_FORMAT and a
 * message naming the path. Writers are atomic (temporary file in the same
 * folder, fsync, rename).
 */
#ifndef BG_IO_H
#define BG_IO_H

#include "layers/layers.h"
#include "optim/optim.h"
#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------
// safetensors: 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...,
//  "__metadata__": {"key": "string value"}}, then the raw little-endian data.
// Dtypes: F32, I32, I8, U8.

typedef struct bg_safetensors bg_safetensors;

/* Reads and validates the whole file. On failure *out is NULL and
 * bg_last_error() names the path and the problem. */
bg_status bg_safetensors_open(const char *path, bg_safetensors **out);
void bg_safetensors_free(bg_safetensors *st);

int bg_safetensors_count(const bg_safetensors *st);
/* Tensor names in file order; NULL when i is out of range. */
const char *bg_safetensors_name(const bg_safetensors *st, int i);
/* Fills *view with a contiguous tensor header whose data points into st's
 * buffer (valid until bg_safetensors_free). BG_ERR_ARG when absent. */
bg_status bg_safetensors_get(const bg_safetensors *st, const char *name, bg_tensor *view);
/* A __metadata__ string, or NULL when absent. Owned by st. */
const char *bg_safetensors_metadata(const bg_safetensors *st, const char *key);

typedef struct bg_safetensors_writer bg_safetensors_writer;

bg_safetensors_writer *bg_safetensors_writer_new(void);
void bg_safetensors_writer_free(bg_safetensors_writer *w);
/* Queues a tensor (any strides; written contiguous). The data is read at
 * save time, so it must stay valid until then. Names must be unique. */
bg_status bg_safetensors_writer_add(bg_safetensors_writer *w, const char *name, const bg_tensor *t);
bg_status bg_safetensors_writer_meta(bg_safetensors_writer *w, const char *key, const char *value);
/* Writes atomically: path.tmp-XXXXXX in the same folder, fsync, rename. On
 * failure the previous file at path is untouched. */
bg_status bg_safetensors_writer_save(bg_safetensors_writer *w, const char *path);

// ---------------------------------------------------------------------------
// datasets: image classification sets read from gzipped IDX files (MNIST
// format; Fashion-MNIST from the Debian package dataset-fashion-mnist), kept
// as bytes; a batch iterator turns them into f32 arena tensors per step.
//
//     bg_dataset *train;
//     if (bg_fmnist_load(NULL, BG_FMNIST_TRAIN, &train) != BG_OK)
//         fprintf(stderr, "%s\n", bg_last_error());
//     bg_batcher *b;
//     bg_batcher_new(train, &(bg_batcher_opts){.batch_size = 128, .shuffle = true}, &b);
//     bg_tensor *x, *y;                    // x f32 [B,784] in [0,1], y i32 [B]
//     for (int epoch = 0; epoch < 5; epoch++)
//         while (bg_batcher_next(b, ctx, &x, &y)) { step(ctx, x, y); bg_ctx_reset(ctx); }
//     bg_batcher_free(b);
//     bg_dataset_free(train);

/* Fields are read-only. Pixels are stored as bytes (0..255) and scaled to
 * [0,1] only when a batch is made, which keeps the resident set small. */
typedef struct bg_dataset {
    int64_t n;           /* examples */
    int64_t channels;    /* 1 for IDX files */
    int64_t height;      /* 28 for (Fashion-)MNIST */
    int64_t width;       /* 28 */
    int64_t n_classes;   /* 10 for Fashion-MNIST; max label + 1 otherwise */
    uint8_t *pixels;     /* [n, channels*height*width], row-major */
    int32_t *labels;     /* [n], each in 0..n_classes-1 */
} bg_dataset;

typedef enum bg_fmnist_split {
    BG_FMNIST_TRAIN = 0, /* train-{images-idx3,labels-idx1}-ubyte.gz, 60000 examples */
    BG_FMNIST_TEST,      /* t10k-{images-idx3,labels-idx1}-ubyte.gz, 10000 examples */
} bg_fmnist_split;

#define BG_FMNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

/* Loads one Fashion-MNIST split from dir; dir NULL means $BG_FMNIST_DIR when
 * set, else BG_FMNIST_DEFAULT_DIR. Checks both files' magic numbers, dims
 * (28x28), that the counts agree, labels < 10, and that each file holds exactly
 * the bytes its header announces. On failure *out is NULL and bg_last_error()
 * names the path: a missing file gives BG_ERR_IO and says which Debian package
 * to install; a corrupt one gives BG_ERR_FORMAT. Free with bg_dataset_free. */
bg_status bg_fmnist_load(const char *dir, bg_fmnist_split split, bg_dataset **out);
/* The same for any pair of IDX files (uint8 images [n,h,w] with magic 0x803,
 * uint8 labels [n] with magic 0x801), gzipped or not. n_classes = max label+1. */
bg_status bg_idx_load(const char *images_path, const char *labels_path, bg_dataset **out);
void bg_dataset_free(bg_dataset *ds);
/* Features per example: channels * height * width. */
int64_t bg_dataset_features(const bg_dataset *ds);

typedef struct bg_batcher bg_batcher;

typedef struct bg_batcher_opts {
    int64_t batch_size;  /* > 0 */
    bool shuffle;        /* a fresh seeded Fisher-Yates order every epoch */
    uint64_t seed;       /* the order of epoch e depends only on (seed, e) */
    bool drop_last;      /* skip the last partial batch instead of returning it */
    bool nchw;           /* x as [B,C,H,W] instead of [B,C*H*W] */
} bg_batcher_opts;

/* Iterates over ds (borrowed: it must outlive the batcher). On failure *out
 * is NULL and bg_last_error() says why. bg_batcher_free(NULL) is a no-op. */
bg_status bg_batcher_new(const bg_dataset *ds, const bg_batcher_opts *opts, bg_batcher **out);
void bg_batcher_free(bg_batcher *b);
/* The next batch of the current epoch, as arena tensors on ctx (so a step
 * allocates nothing once the arena has grown): *x f32 [B,F] (or [B,C,H,W])
 * with pixels/255, *y i32 [B]. B is batch_size, except that the last batch
 * of an epoch is smaller when n is not a multiple of it (unless drop_last).
 * Returns false, with *x and *y NULL, at the end of the epoch — the batcher
 * then moves to the next epoch, so `while (bg_batcher_next(...))` runs one
 * epoch — or on failure, when bg_ctx_status(ctx) is set. */
bool bg_batcher_next(bg_batcher *b, bg_ctx *ctx, bg_tensor **x, bg_tensor **y);
/* The dataset indices of the batch last returned; *count gets B. */
const int64_t *bg_batcher_indices(const bg_batcher *b, int64_t *count);
/* Batches per epoch (counting a partial last batch unless drop_last). */
int64_t bg_batcher_batches(const bg_batcher *b);
/* The current epoch (0 at creation), and a jump to the start of epoch e
 * (resuming from a checkpoint reproduces the same order). */
int64_t bg_batcher_epoch(const bg_batcher *b);
void bg_batcher_set_epoch(bg_batcher *b, int64_t epoch);
/* Jumps to batch `batch` (0..bg_batcher_batches) of epoch `epoch`, so the
 * next bg_batcher_next returns what it would have returned there (resuming
 * a checkpoint's epoch / batch_in_epoch mid-epoch). BG_ERR_ARG when out of
 * range. */
bg_status bg_batcher_seek(bg_batcher *b, int64_t epoch, int64_t batch);

// ---------------------------------------------------------------------------
// training loops over a batcher (io/train.c): what every program that trains
// on a dataset repeats, written once.

/* The loss of one batch from the model's output; NULL with the ctx error set
 * on failure. */
typedef bg_tensor *(*bg_loss_fn)(bg_ctx *ctx, bg_tensor *out, bg_tensor *x, bg_tensor *y,
                                 void *user);

typedef struct bg_train_opts {
    bg_loss_fn loss;   /* NULL: bg_cross_entropy(out, y) */
    void *user;        /* passed to loss and before_step */
    /* Optional, called before each step with the optimizer's step count (for
     * schedules); a non-BG_OK return stops the epoch with that status. */
    bg_status (*before_step)(int64_t step, void *user);
    /* Optional, called after each step with the step just taken (the
     * optimizer's count before it), the batch's mean loss and its size: for
     * logs and progress lines. */
    void (*after_step)(int64_t step, double loss, int64_t batch, void *user);
} bg_train_opts;

/* One epoch of train mode: forward, loss, backward, optimizer step, zero
 * grads, ctx reset per batch. *mean_loss gets the example-weighted mean loss.
 * opts may be NULL. On failure returns the status; bg_last_error() holds the
 * ctx's message (the ctx is left reset). */
bg_status bg_train_epoch(bg_ctx *ctx, bg_module *model, bg_optim *opt, bg_batcher *batches,
                         const bg_train_opts *opts, double *mean_loss);

/* Accuracy in [0,1] of argmax(model(x)) == y over one epoch of batches, in
 * eval mode without a tape (the model is put back into train mode). */
bg_status bg_evaluate(bg_ctx *ctx, bg_module *model, bg_batcher *batches, double *accuracy);

// ---------------------------------------------------------------------------
// model descriptions and checkpoints (io/model_desc.c, io/checkpoint.c)
//
//     bg_checkpoint ck = {.model = net, .opt = opt, .schedule = &sched, .rng = &rng,
//                         .step = step, .epoch = epoch, .batch_in_epoch = b};
//     if (bg_checkpoint_save("run.ckpt", &ck) != BG_OK) fprintf(stderr, "%s\n", bg_last_error());
//     ... later, maybe in another process, with the same model and optimizer built again:
//     if (bg_checkpoint_load("run.ckpt", &ck) != BG_OK) fprintf(stderr, "%s\n", bg_last_error());
//     // or, knowing nothing about the model: bg_checkpoint_load_model("run.ckpt", &net);
//
// A model description is JSON: {"format": "bitgrad-model", "version": 2,
// "model": NODE}, NODE = {"name"?: NAME, "kind": KIND, <hyperparameters>,
// "children"?: [NODE, ...]}. KIND is any registered kind (layers.h "the kind
// registry"): its save_hparams hook writes the hyperparameters, its
// load_hparams hook reads them back; a container (Sequential, Residual, a
// user's block) lists its children with their names, a kind that builds its
// own children (the quantized layers) does not. Version 1 files (children by
// position, "name" absent) are still read.
// Hyperparameters of the built-in kinds (PyTorch's names):
//   Linear, QLinear       in_features, out_features, bias
//   BitLinear             in_features, out_features
//   Conv2d, QConv2d       in_channels, out_channels, kernel_size [kh,kw], stride [2],
//                         padding [2], dilation [2], groups, bias
//   Embedding, QEmbedding num_embeddings, embedding_dim
//   LayerNorm             dim, eps, elementwise_affine      RMSNorm: dim, eps
//   Dropout               p        LeakyReLU: negative_slope   GELU: approximate ("none"|"tanh")
//   MaxPool2d, AvgPool2d  kernel_size, stride, padding (integers)
//   FakeQuant             spec, enabled, shape (the tensor shape its state was made for)
//   ReLU, SiLU, Tanh, Sigmoid, Flatten, Sequential, Residual: none
// Quantized kinds add "weight_spec" / "input_spec" (canonical spec strings,
// bg_quant_spec_format; absent = that side is float) and "weight_enabled" /
// "input_enabled" (false in a schedule's fp32 phase). Their FakeQuant
// children are implied and not listed. Floats are written with 17 digits,
// so they read back exactly.
//
// A checkpoint is a safetensors file (any safetensors reader opens it):
//   "<param>"                    F32, every module parameter under its name
//                                (latent weights, biases, LSQ steps, PACT alphas)
//   "optim.<buffer>"             F32 [n]: each bg_optim_state buffer ("exp_avg",
//                                "exp_avg_sq", "momentum_buffer"), laid out like
//                                bg_module_flat_params (padding included)
//   "quant.<q>.ranges"           F32 [4,P]: observed rmin, rmax, current scale and
//                                zero point of quantizer <q> ("0.weight_quant",
//                                the names of bg_model_quantizers); absent when P = 0
//   "quant.<q>.flags"            I32 [6]: observed, initialized, observer on,
//                                enabled, calls (low and high 32 bits)
//   "dropout.<path>.rng"         U8 [16]: the generator of each module whose kind has
//                                one (module_rng: Dropout's, a user kind's)
//   "rng"                        U8 [16]: ck->rng's two words, little-endian
// and __metadata__ strings: "format" = "bitgrad-checkpoint", "version" = "1",
// "model" (the description), "specs" (JSON {"<q>": spec string}), "step",
// "epoch", "batch_in_epoch" (decimal), "optim" (JSON: kind, lr, step_count,
// options, lr_schedule or null) and "schedule" (bg_schedule_save) when saved.

/* A JSON description of model's tree: kinds, hyperparameters (in/out
 * features, bias, conv options, eps, ...), and for quantized layers their
 * weight/input quantizer spec strings (bg_quant_spec_format) and current
 * enabled state. Returns a malloc'd string (release with free()), or NULL +
 * bg_last_error() (e.g. a kind that was not registered:
 * "model_desc: layer 1: kind \"Scale\" is not registered (bg_module_register_type)"). */
char *bg_model_to_json(const bg_module *model);
/* Builds a model from such a description into *out (a finalized root, freed
 * with bg_module_free); parameters are freshly initialised (load values
 * after, e.g. bg_checkpoint_load). On failure *out is NULL, BG_ERR_FORMAT,
 * and the error names the layer by its path and the bad field
 * ("model_desc: layer 2: unknown kind \"Foo\": register it with
 * bg_module_register_type before loading", "model_desc: layer 0:
 * missing field \"out_features\""; the root is "(root)"). The tree may be
 * at most 32 deep and each weight at most 2^32 elements. */
bg_status bg_model_from_json(const char *json, bg_module **out);

typedef struct bg_checkpoint {
    bg_module *model;           /* required */
    bg_optim *opt;              /* optional (NULL): moments, step count, lr, its options */
    struct bg_schedule *schedule; /* optional (qat.h bg_schedule): progressive schedule +
                                   progress (bg_schedule_save/load) */
    bg_rng *rng;                /* optional: the training RNG state */
    int64_t step, epoch;        /* progress counters, saved and restored */
    int64_t batch_in_epoch;     /* batches already consumed in the current epoch
                                   (resume with bg_batcher_seek) */
} bg_checkpoint;

/* Writes ck atomically (temporary file in path's folder, fsync, rename): on
 * any failure (including a full disk half-way) the previous file at path is
 * untouched and no temporary file remains. Saves the members that are
 * non-NULL. Fails with BG_ERR_ARG when the model cannot be described (a
 * kind that was not registered with bg_module_register_type). */
bg_status bg_checkpoint_save(const char *path, const bg_checkpoint *ck);
/* Loads into the existing ck->model (+ opt, schedule, rng when non-NULL)
 * and sets step / epoch / batch_in_epoch: checks the file's layout (the
 * safetensors reader: sizes, offsets, dtypes against the file length), the
 * format version, that the description matches the model (quantizer specs
 * may differ as far as bg_quant_state_set_spec allows: a schedule moved
 * them), every tensor's name, dtype and shape, then copies; on any error
 * nothing is modified and bg_last_error() names the path and the problem:
 * BG_ERR_IO for a missing file, BG_ERR_FORMAT for a corrupt one or a missing
 * tensor, BG_ERR_SHAPE / BG_ERR_DTYPE / BG_ERR_ARG for one that does not fit
 * the model, e.g. "checkpoint_load: run.ckpt: 0.weight is [4,3] in the file,
 * [3,4] in the model", "checkpoint_load: run.ckpt: layer 2: out_features is
 * 2 in the file, 5 in the model". A member the file lacks (ck->opt given, no
 * optimizer state saved) is an error too. The optimizer must be of the
 * saved kind; its lr, lr schedule, step count and moments are restored (its
 * other options are the ones it was built with). Resume the data order with
 * bg_batcher_seek(b, ck->epoch, ck->batch_in_epoch). */
bg_status bg_checkpoint_load(const char *path, bg_checkpoint *ck);
/* Builds the model from the file's description (bg_model_from_json) and
 * loads its parameters and quantizer state; *model is NULL on failure. */
bg_status bg_checkpoint_load_model(const char *path, bg_module **model);

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
 * opts may be NULL. Side effect: computing the weight codes advances the
 * weight quantizers' call counters (as one forward would); no range changes. */
bg_status bg_export(const bg_module *model, const char *path, const bg_export_opts *opts);

/* The 4-bit packing of the export ("i4" / "u4"): row r of k codes becomes
 * (k+1)/2 bytes, code 2j in bits 0-3 and code 2j+1 in bits 4-7 of byte j
 * (two's complement for signed codes; a missing last code is 0). */
void bg_export_pack4(uint8_t *dst, const int8_t *codes, int64_t rows, int64_t k);
/* The inverse; is_signed sign-extends each nibble. */
void bg_export_unpack4(int8_t *codes, const uint8_t *src, int64_t rows, int64_t k, bool is_signed);

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

// ---------------------------------------------------------------------------
// training logs (io/trainlog.c) and plots (io/plot.c)
//
// A training log is a JSON-lines file: one JSON object per line, each with a
// "type" field; blank lines are skipped, other keys are ignored, unknown types
// are an error. Numbers may also be null or the strings "nan", "inf", "-inf"
// (JSON has no NaN/Inf; the writer emits null for NaN and the strings for
// +-Inf; it prints numbers with 9 significant digits, so floats round-trip).
// Fields marked ? are optional (NaN / "" / 0 when absent).
//   {"type":"meta","title":"fmnist MLP, ternary student"}       figure titles
//   {"type":"step","step":120,"epoch":1,"loss":0.412,"lr":0.001}  epoch?, lr?
//   {"type":"eval","step":120,"acc":0.871,"label":"student"}      label?
//   {"type":"phase","step":400,"layer":"*","spec":"ternary","bits":2}
//        layer "*" = every layer without phase records of its own; spec
//        "fp32" / "int8" / "int4" / "ternary" ..; bits? (0 = float); from this
//        step on the layer runs under spec
//   {"type":"metrics","step":399,"layer":"fc1","w_sqnr":18.2,"a_sqnr":31.5,
//    "zero_frac":0.31,"flip_frac":0.004}     SQNR in dB; zero/flip? (ternary)
//   {"type":"hist","step":399,"layer":"fc1","lo":-0.12,"hi":0.12,
//    "counts":[3,17,..],"levels":[-0.05,0,0.05],"thresholds":[-0.025,0.025]}
//        latent weights: counts of n_bins equal bins over [lo,hi]; levels and
//        thresholds (levels? thresholds?) in the weights' float units
//   {"type":"ref","label":"teacher","metric":"acc","value":0.885}
//        a horizontal reference line; metric? "acc" (default) or "loss"
//
//     bg_trainlog_writer *lw;
//     if (bg_trainlog_open("out/train.jsonl", &lw) != BG_OK) fail(bg_last_error());
//     bg_trainlog_ref(lw, "teacher", "acc", teacher_acc);
//     bg_trainlog_phase(lw, 0, "*", "int8", 8);
//     bg_trainlog_step(lw, step, epoch, loss, lr);          // every few steps
//     bg_trainlog_eval(lw, step, "student", acc);           // every epoch
//     bg_trainlog_close(lw);
//     bg_trainlog *log;
//     if (bg_trainlog_read("out/train.jsonl", &log) == BG_OK) {
//         bg_plot_files files;
//         bg_plot_all(log, "out/plots", &files);            // PNGs + their paths
//         bg_trainlog_free(log);
//     }
//
// "step" is the number of optimizer steps done when the record was written;
// a phase record at S governs steps S, S+1, ... (0-based), so a measurement
// at step S (taken after S steps, before the change) still belongs to the
// phase before a change at S: the figures treat phase k as steps
// (start_k, start_k+1] for metrics and hists ("end of phase" = the last
// record in it) and shade [start_k, start_k+1) on the step axis.
// One log has one step axis: a run that trains a teacher and then a student
// numbers the student's steps after the teacher's, or logs only the student
// with the teacher's accuracy as a "ref". Names (layer, label, spec) are at
// most BG_TRAINLOG_NAME_MAX - 1 bytes. Error line numbers count from 1,
// blank lines included.
// Each record is written with one fwrite and flushed, so a crashed run keeps
// every line written before the crash. Writer failures return BG_ERR_IO (or
// BG_ERR_ARG for NULL / bad arguments) with bg_last_error() naming the path.

#define BG_TRAINLOG_NAME_MAX 64

typedef struct bg_trainlog_writer bg_trainlog_writer;
struct bg_qat_layer_metrics;   /* qat/qat.h */

/* Creates (truncates) path. On failure *out is NULL. */
bg_status bg_trainlog_open(const char *path, bg_trainlog_writer **out);
/* Opens path for appending (creating it when missing), e.g. when a run
 * resumes from a checkpoint; first cuts off a partial last line (no final
 * newline) that a crash in the middle of a write may have left. */
bg_status bg_trainlog_append(const char *path, bg_trainlog_writer **out);
/* Closes the file; returns BG_ERR_IO if a write or the close failed.
 * bg_trainlog_close(NULL) is a no-op returning BG_OK. */
bg_status bg_trainlog_close(bg_trainlog_writer *w);

bg_status bg_trainlog_meta(bg_trainlog_writer *w, const char *title);
/* epoch < 0 or lr NaN: the field is left out. */
bg_status bg_trainlog_step(bg_trainlog_writer *w, int64_t step, int64_t epoch, double loss, double lr);
/* acc in [0,1]; label e.g. "student", "teacher" (NULL: none). */
bg_status bg_trainlog_eval(bg_trainlog_writer *w, int64_t step, const char *label, double acc);
bg_status bg_trainlog_phase(bg_trainlog_writer *w, int64_t step, const char *layer, const char *spec,
                            int bits);
/* zero_frac / flip_frac NaN: left out (not a ternary layer). */
bg_status bg_trainlog_metrics(bg_trainlog_writer *w, int64_t step, const char *layer, double w_sqnr_db,
                              double a_sqnr_db, double zero_frac, double flip_frac);
/* One metrics record per layer of bg_qat_metrics()'s output (NaN for a side
 * without a tracked forward; zero/flip only for ternary layers). */
bg_status bg_trainlog_qat_metrics(bg_trainlog_writer *w, int64_t step,
                                  const struct bg_qat_layer_metrics *m, int n);
/* A histogram of x[0..n) (latent weights) with n_bins (1..4096) bins over
 * [lo,hi] = [min,max] of x and of the levels; non-finite x are skipped.
 * levels (ascending, n_levels >= 0; may be NULL when 0) are the dequantized
 * values the quantizer maps to; thresholds are written as the midpoints of
 * adjacent levels (round to nearest). */
bg_status bg_trainlog_hist(bg_trainlog_writer *w, int64_t step, const char *layer, const float *x,
                           int64_t n, int n_bins, const float *levels, int n_levels);
/* Fills levels[i] = (qmin + i - zero_point) * scale for i in 0..qmax-qmin
 * (at most max of them) and returns the count qmax - qmin + 1, e.g. for a
 * ternary layer with absmean scale s: (s, 0, -1, 1) -> {-s, 0, s}. */
int bg_trainlog_levels(float scale, float zero_point, int qmin, int qmax, float *levels, int max);
/* One hist record per quantized layer of model (bg_qlayer_at order, named by
 * bg_qlayer_name; "model" for model itself) with a latent weight: its
 * weights in n_bins bins, and with_levels (none while its quantizer is
 * disabled, an fp32 phase) the levels of its weight quantizer from the
 * state's current scale (after a forward) and zero
 * point (per-channel / per-group: their mean, so the lines are indicative;
 * ternary {-s,0,s}, binary {-s,s}, int b-bit (qmin..qmax - z) * s). */
bg_status bg_trainlog_model_hists(bg_trainlog_writer *w, int64_t step, const bg_module *model, int n_bins,
                                  bool with_levels);
/* metric "acc" or "loss" (NULL: "acc"). */
bg_status bg_trainlog_ref(bg_trainlog_writer *w, const char *label, const char *metric, double value);

typedef struct bg_trainlog_step_rec {
    int64_t step, epoch;     /* epoch -1 when absent */
    double loss, lr;         /* lr NaN when absent */
} bg_trainlog_step_rec;

typedef struct bg_trainlog_eval_rec {
    int64_t step;
    double acc;
    char label[BG_TRAINLOG_NAME_MAX];   /* "" when absent */
} bg_trainlog_eval_rec;

typedef struct bg_trainlog_phase_rec {
    int64_t step;
    char layer[BG_TRAINLOG_NAME_MAX];   /* "*" = every layer */
    char spec[BG_TRAINLOG_NAME_MAX];
    int bits;
} bg_trainlog_phase_rec;

typedef struct bg_trainlog_metrics_rec {
    int64_t step;
    char layer[BG_TRAINLOG_NAME_MAX];
    double w_sqnr_db, a_sqnr_db;        /* may be NaN or +-Inf */
    double zero_frac, flip_frac;        /* NaN when absent */
} bg_trainlog_metrics_rec;

typedef struct bg_trainlog_hist_rec {
    int64_t step;
    char layer[BG_TRAINLOG_NAME_MAX];
    double lo, hi;                      /* lo < hi */
    int n_bins, n_levels, n_thresholds;
    int64_t *counts;                    /* [n_bins], owned by the log */
    double *levels, *thresholds;        /* [n_levels], [n_thresholds] */
} bg_trainlog_hist_rec;

typedef struct bg_trainlog_ref_rec {
    char label[BG_TRAINLOG_NAME_MAX];
    char metric[8];                     /* "acc" or "loss" */
    double value;
} bg_trainlog_ref_rec;

/* A whole log, records of each type in file order. Fields are read-only. */
typedef struct bg_trainlog {
    char title[128];                    /* the last meta record's, or "" */
    int64_t n_steps, n_evals, n_phases, n_metrics, n_hists, n_refs;
    bg_trainlog_step_rec *steps;
    bg_trainlog_eval_rec *evals;
    bg_trainlog_phase_rec *phases;
    bg_trainlog_metrics_rec *metrics;
    bg_trainlog_hist_rec *hists;
    bg_trainlog_ref_rec *refs;
} bg_trainlog;

/* Parses the whole file. On failure *out is NULL and bg_last_error() names
 * the path and line (BG_ERR_FORMAT), e.g.
 *   trainlog: run.jsonl: line 7: "loss" is not a number
 *   trainlog: run.jsonl: line 3: missing field "step"
 *   trainlog: run.jsonl: empty file (no records)
 * or BG_ERR_IO when the file cannot be read. */
bg_status bg_trainlog_read(const char *path, bg_trainlog **out);
/* The same from text in memory; name is used in messages in place of the path. */
bg_status bg_trainlog_parse(const char *text, size_t len, const char *name, bg_trainlog **out);
void bg_trainlog_free(bg_trainlog *log);

// Plots: PNG (8-bit RGB, libpng), written atomically (temporary file in the
// same folder, rename). Every figure has a title, axes with ticks and tick
// labels, axis labels and a legend where there is more than one series.
// A figure without the data it needs returns BG_ERR_ARG ("plot: <figure>:
// the log has no ... records") and writes nothing.

/* Loss (top panel) and test accuracy (bottom) against step; phases shaded in
 * alternating tints and named at the top of each panel; "ref" records as
 * dashed horizontal lines. Needs step or eval records. 1000 x 720 pixels. */
bg_status bg_plot_training(const bg_trainlog *log, const char *path);
/* One panel per (layer, snapshot): the histogram of the latent weights, the
 * quantization levels as solid vertical lines and the thresholds as dashed
 * ones (at most 33 levels are drawn; beyond that only the outermost two).
 * Rows are layers, columns up to 4 snapshot steps (first, last, and evenly
 * in between). Needs hist records. 360*cols + 40 by 250*rows + 60 pixels. */
bg_status bg_plot_weights(const bg_trainlog *log, const char *path);
/* Fraction of zero weights (top) and flip rate (bottom) against step, one
 * line per ternary layer. Needs metrics records with zero_frac. 1000 x 720. */
bg_status bg_plot_ternary(const bg_trainlog *log, const char *path);
/* Grouped bars per layer: weight SQNR (top) and activation SQNR (bottom) in
 * dB at the end of each phase (the last metrics record of the layer before the
 * next phase starts), one bar color per phase; non-finite values are left
 * out. Needs metrics records. 1000 x 720 pixels. */
bg_status bg_plot_sqnr(const bg_trainlog *log, const char *path);

#define BG_PLOT_MAX_FILES 4
#define BG_PLOT_PATH_MAX 1024

typedef struct bg_plot_files {
    int n;
    char path[BG_PLOT_MAX_FILES][BG_PLOT_PATH_MAX];
} bg_plot_files;

/* Creates dir (and its parents) when missing and draws every figure the log
 * has data for: training.png, weights.png, ternary.png, sqnr.png. out (may be
 * NULL) gets the written paths in that order. BG_ERR_ARG when the log has
 * data for none; the first failure otherwise. */
bg_status bg_plot_all(const bg_trainlog *log, const char *dir, bg_plot_files *out);

#ifdef __cplusplus
}
#endif
#endif /* BG_IO_H */
