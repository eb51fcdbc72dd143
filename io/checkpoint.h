/* io/checkpoint.h — model descriptions (io/model_desc.c) and checkpoints
 * (io/checkpoint.c). */
#ifndef BG_IO_CHECKPOINT_H
#define BG_IO_CHECKPOINT_H

#include "layers/layers.h"
#include "optim/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

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
/* The same, for a loader that knows how many parameter values its file
 * holds: a description whose parameters need more fails at the first layer
 * that does not fit, before allocating it ("model_desc: layer 0: Linear's
 * weight [65536,65536] needs 4294967296 values, more than the 40 left of
 * the file's parameters"). -1: no limit. */
bg_status bg_model_from_json_within(const char *json, int64_t max_param_floats, bg_module **out);

typedef struct bg_checkpoint {
    bg_module *model;           /* required */
    bg_optim *opt;              /* optional (NULL): moments, step count, lr, its options */
    struct bg_schedule *schedule; /* optional (qat.h bg_schedule): progressive schedule +
                                   progress (bg_schedule_save/load) */
    bg_rng *rng;                /* optional: the training RNG state */
    int64_t step, epoch;        /* progress counters, saved and restored */
    int64_t batch_in_epoch;     /* batches already consumed in the current epoch
                                   (resume with bg_batcher_seek) */
    int64_t ranks;              /* processes that trained it data-parallel (dist.h);
                                   saved when > 1, loaded as 1 when absent */
} bg_checkpoint;

/* Writes ck atomically (temporary file in path's folder, fsync, rename): on
 * any failure (including a full disk half-way) the previous file at path is
 * untouched and no temporary file remains. Saves the members that are
 * non-NULL. Fails with BG_ERR_ARG when the model cannot be described (a
 * kind that was not registered with bg_module_register_type), and with
 * BG_ERR_NAN, writing nothing, when a parameter holds a NaN or Inf
 * ("checkpoint_save: PATH: parameter 0.weight has a NaN or Inf at index 5
 * (value nan); nothing was written"). */
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

#ifdef __cplusplus
}
#endif
#endif /* BG_IO_CHECKPOINT_H */
