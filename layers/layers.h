/*
 * layers — bg_module (a small module interface) and the layers built on it:
 * Linear, Conv2d, Embedding, LayerNorm, RMSNorm, Dropout, activations,
 * Flatten, MaxPool2d/AvgPool2d, Sequential.
 *
 *     bg_rng rng; bg_rng_seed(&rng, 0);
 *     bg_module *mlp = bg_sequential_new(3, (bg_module *[]){   // owns the children
 *         bg_linear_new(784, 512, true, &rng), bg_relu_new(),
 *         bg_linear_new(512, 10, true, &rng)});
 *     if (!mlp) fprintf(stderr, "%s\n", bg_last_error());    // any child failing fails it
 *     bg_tensor *logits = bg_module_forward(ctx, mlp, x);     // x [N,784] -> [N,10]
 *     bg_backward(ctx, bg_cross_entropy(ctx, logits, y, NULL));
 *     // ... optimizer step (optim/optim.h) ...
 *     bg_module_zero_grad(mlp); bg_ctx_reset(ctx);            // one memset
 *     bg_module_free(mlp);
 *
 * Parameters. Parameter names follow PyTorch's named_parameters(): a module's
 * own parameters in the order it registered them ("weight", "bias"), then each
 * child's under "<child>." ("0.weight", "0.bias", "2.weight", ...), so a
 * PyTorch state_dict maps 1:1 onto bg_module_find_param / set_param.
 *
 * Memory (DESIGN.md "Memory model"). After bg_module_finalize() — which every
 * built-in constructor, bg_sequential_new included, calls for you — all the
 * parameters of a module tree live in ONE 64-byte aligned f32 buffer, and
 * their gradients in one more, both owned by the root (the module that was
 * finalized last). Each parameter is a persistent bg_tensor (bg_tensor_wrap)
 * viewing into the params buffer, with ->grad viewing into the grads buffer
 * and requires_grad = true. Each parameter starts on a 64-byte boundary: the
 * few floats of padding between parameters are zero and stay zero under every
 * optimizer, so the flat buffers can be processed as one array. The tensor
 * pointers never change once created (finalize re-points their data), so a
 * bg_tensor * taken from a module stays valid until the module is freed.
 * Any module's subtree is a contiguous range of the root's buffers, so flat
 * access works for sub-modules too (e.g. an optimizer over the head only).
 *
 * Ownership: constructors return a module owned by the caller, freed with
 * bg_module_free (NULL is a no-op). A container takes ownership of its
 * children; free only the root. Modules are not thread-safe.
 *
 * Errors: constructors return NULL and set bg_last_error(); forward returns
 * NULL and sets the ctx's sticky error ("<layer>: <what>: <values>"); other
 * calls return bg_status and set bg_last_error().
 */
#ifndef BG_LAYERS_H
#define BG_LAYERS_H

#include <stdio.h>

#include "autograd/autograd.h"
#include "kernels/kernels.h"
#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------
// constants

/* Longest parameter name, including the terminating NUL ("3.1.weight"). */
#define BG_PARAM_NAME_MAX 128

// ---------------------------------------------------------------------------
// types

typedef struct bg_module bg_module;   /* opaque */

struct json_t;   /* jansson's JSON value (jansson.h) */

/* The behaviour of one kind of module (a "class"). Built-in layers have their
 * own; a user defines one to write a custom module (see "defining a module"
 * below). The struct must outlive every module of its kind (make it static).
 * DESIGN.md "Model kinds are open": a kind registered with
 * bg_module_register_type describes itself, saves, loads and resumes like a
 * built-in one; checkpoints and exports find it through the registry. */
typedef struct bg_module_type {
    /* The kind, e.g. "Linear": its name in descriptions, checkpoints and
     * error messages. Unique among registered kinds. */
    const char *kind;
    /* y = f(x). Must follow the builder contract of autograd.h: return an arena
     * tensor, or NULL with the ctx's sticky error set. Called only with a ctx
     * that has not failed and a non-NULL x. */
    bg_tensor *(*forward)(bg_ctx *ctx, bg_module *m, bg_tensor *x);
    /* Optional: writes a one-line description such as
     * "Linear(in_features=784, out_features=512, bias=true)" (snprintf rules). */
    int (*describe)(const bg_module *m, char *buf, size_t len);
    /* Optional: frees the state passed to bg_module_new. */
    void (*free_state)(void *state);
    /* Optional (none = no hyperparameters): writes m's hyperparameters as
     * members of the JSON object hp (jansson; bg_hparam_set_* check every
     * call). The keys "kind", "name" and "children" are reserved. */
    bg_status (*save_hparams)(const bg_module *m, struct json_t *hp);
    /* Required to register: a new module of this kind from the object hp
     * that save_hparams wrote (read it with bg_hparam_get_*, whose errors name
     * the field), parameters freshly initialised from rng. A container
     * (builds_children false) returns it WITHOUT children: the loader adds
     * the described children under their names, in order, and finalizes.
     * NULL + bg_last_error() on bad values. */
    bg_module *(*load_hparams)(const struct json_t *hp, bg_rng *rng);
    /* true: the kind makes its children itself from its hyperparameters
     * (the quantizers of QLinear); they are not described. false: a
     * container whose children are described and rebuilt one by one. */
    bool builds_children;
    /* Optional: a random generator the module owns (Dropout's), which
     * checkpoints save and restore (as "dropout.<path>.rng", the name Dropout's
     * generators have always had). */
    bg_rng *(*module_rng)(bg_module *m);
    /* true: every Linear child of this kind already receives an RMSNorm
     * output (a transformer block's projections): bg_bitnet_model gives them
     * BitLinears without BitLinear's own norm (bg_bitlinear_set_norm). */
    bool prenormed_linears;
} bg_module_type;

// ---------------------------------------------------------------------------
// the kind registry
//
// Every built-in kind is registered from the start (registry.c, one line per
// kind). A program registers its own kinds once, before it loads a file that
// uses them. Not thread-safe: register before starting threads.

/* Registers type under type->kind. BG_OK when it is new or already
 * registered (the same pointer); BG_ERR_ARG when kind, forward or
 * load_hparams is missing or another type has the same kind. */
bg_status bg_module_register_type(const bg_module_type *type);
/* The registered type of that kind, or NULL. */
const bg_module_type *bg_module_find_type(const char *kind);
/* All registered kinds (built-ins first, then in registration order). */
int bg_module_type_count(void);
const bg_module_type *bg_module_type_at(int i);
/* The type of m (NULL for NULL); compare it with the built-in types below or
 * with a user's own, e.g. bg_module_type_of(m) == &bg_linear_type. */
const bg_module_type *bg_module_type_of(const bg_module *m);

/* The built-in kinds. */
extern const bg_module_type bg_sequential_type, bg_residual_type, bg_linear_type, bg_conv2d_type,
    bg_embedding_type, bg_layernorm_type, bg_rmsnorm_type, bg_dropout_type, bg_relu_type, bg_leaky_relu_type,
    bg_gelu_type, bg_silu_type, bg_tanh_type, bg_sigmoid_type, bg_flatten_type, bg_max_pool2d_type,
    bg_avg_pool2d_type;
extern const bg_module_type bg_fake_quant_type, bg_qlinear_type, bg_qconv2d_type, bg_qembedding_type,
    bg_bitlinear_type;
extern const bg_module_type bg_transformer_block_type, bg_transformer_lm_type;

// ---------------------------------------------------------------------------
// hyperparameters as JSON (for save_hparams / load_hparams hooks)
//
// Getters: BG_OK, or BG_ERR_FORMAT with one sentence naming the field
// ('missing field "dim"', 'field "dim" must be an integer in [1, 2147483648]');
// the loader prefixes the layer's path. Setters: BG_OK or BG_ERR_NOMEM.

/* The largest size a described dimension may have (2^31). */
#define BG_HPARAM_MAX_DIM ((int64_t)1 << 31)

bg_status bg_hparam_get_int(const struct json_t *hp, const char *key, int64_t lo, int64_t hi, int64_t *out);
/* A pair [a, b], each in [lo, hi]. */
bg_status bg_hparam_get_pair(const struct json_t *hp, const char *key, int64_t lo, int64_t hi, int64_t out[2]);
bg_status bg_hparam_get_bool(const struct json_t *hp, const char *key, bool *out);
/* Any finite JSON number. */
bg_status bg_hparam_get_float(const struct json_t *hp, const char *key, float *out);
/* A string (owned by hp). */
bg_status bg_hparam_get_string(const struct json_t *hp, const char *key, const char **out);
/* True when hp has the member key (for optional members). */
bool bg_hparam_has(const struct json_t *hp, const char *key);

bg_status bg_hparam_set_int(struct json_t *hp, const char *key, int64_t v);
bg_status bg_hparam_set_pair(struct json_t *hp, const char *key, int64_t a, int64_t b);
bg_status bg_hparam_set_bool(struct json_t *hp, const char *key, bool v);
/* Written with 17 significant digits, so it reads back exactly. */
bg_status bg_hparam_set_float(struct json_t *hp, const char *key, double v);
bg_status bg_hparam_set_string(struct json_t *hp, const char *key, const char *v);

// ---------------------------------------------------------------------------
// using a module

/* Runs the module. x may have any strides. Returns an arena tensor, or NULL
 * when the ctx has already failed, m or x is NULL, or the layer rejects x
 * (ctx error, e.g. "Linear: input features differ: x is [128,780], in_features
 * is 784"). Records on the tape like any op. */
bg_tensor *bg_module_forward(bg_ctx *ctx, bg_module *m, bg_tensor *x);

/* Frees m, its children, its parameters and (if m owns them) the flat
 * buffers. Only call it on a root: a child belongs to its container. */
void bg_module_free(bg_module *m);

/* The kind ("Linear", "Sequential", ...); "" for NULL. */
const char *bg_module_kind(const bg_module *m);
/* One-line description of m (not of its children), e.g.
 * "Conv2d(1, 32, kernel_size=(3, 3), stride=(1, 1))". Returns what snprintf
 * would (the length it needed). */
int bg_module_describe(const bg_module *m, char *buf, size_t len);
/* Prints the tree, one line per module, indented, with parameter counts
 * (like PyTorch's repr). */
void bg_module_print(const bg_module *m, FILE *f);

/* Train (default) or eval mode, for m and its whole subtree (Dropout is the
 * identity in eval mode). */
void bg_module_train(bg_module *m, bool training);
bool bg_module_is_training(const bg_module *m);

/* Children, in order; NULL when i is out of range. */
int bg_module_num_children(const bg_module *m);
bg_module *bg_module_child(const bg_module *m, int i);
/* The child's name within m ("0", "1", ... for Sequential). */
const char *bg_module_child_name(const bg_module *m, int i);
/* The child called name, or NULL (no error is set). A container's forward
 * looks its children up (by index or name) instead of keeping pointers to
 * them: bg_module_replace_child may swap a child at any time. */
bg_module *bg_module_find_child(const bg_module *m, const char *name);

// ---------------------------------------------------------------------------
// parameters (of m's whole subtree, in named_parameters() order)

/* Number of parameter tensors. */
int bg_module_param_count(const bg_module *m);
/* The i-th parameter (0 <= i < count), or NULL. Persistent f32, contiguous,
 * owned by the module: do not free it. */
bg_tensor *bg_module_param(const bg_module *m, int i);
/* Its name relative to m ("0.weight"); NULL when i is out of range. */
const char *bg_module_param_name(const bg_module *m, int i);
/* The parameter called name, or NULL (no error is set). */
bg_tensor *bg_module_find_param(const bg_module *m, const char *name);
/* Total number of parameter elements (without the alignment padding). */
int64_t bg_module_numel(const bg_module *m);

/* The flat buffers of m's subtree: the first element and the length in
 * floats, padding included (*n is >= bg_module_numel). NULL and *n = 0 when m
 * has no parameters or has not been finalized. Valid until the tree is
 * finalized again or freed. */
float *bg_module_flat_params(const bg_module *m, int64_t *n);
float *bg_module_flat_grads(const bg_module *m, int64_t *n);
/* Byte offset of parameter i's first element from bg_module_flat_params(m)
 * (a multiple of 64), or -1 when i is out of range. Grads use the same
 * offsets. */
int64_t bg_module_param_offset(const bg_module *m, int i);

/* Zeroes every gradient of m's subtree: one memset over the flat grads. */
void bg_module_zero_grad(bg_module *m);

/* Copies src (any strides, same shape, f32) into the parameter called name,
 * e.g. from a PyTorch reference file or a checkpoint. BG_ERR_ARG when there is
 * no such parameter ("module_set_param: no parameter named 0.wieght"),
 * BG_ERR_SHAPE when the shapes differ ("module_set_param: 0.weight is
 * [512,784], source is [784,512]"), BG_ERR_DTYPE for a non-f32 source. */
bg_status bg_module_set_param(bg_module *m, const char *name, const bg_tensor *src);
/* Copies the parameter called name into dst (any strides, same shape, f32).
 * Errors as for set_param. */
bg_status bg_module_get_param(const bg_module *m, const char *name, bg_tensor *dst);

/* Freezes (trainable = false) or unfreezes every parameter of m's subtree:
 * sets requires_grad, so the ops stop accumulating into their grads and the
 * optimizers skip them (no update, no weight decay, as PyTorch does for
 * parameters whose grad is None). Freezing a parameter directly
 * (t->requires_grad = false) has the same effect. */
void bg_module_freeze(bg_module *m, bool frozen);
/* One parameter by name; BG_ERR_ARG when there is none. */
bg_status bg_module_set_trainable(bg_module *m, const char *name, bool trainable);
/* Number of trainable elements (padding excluded). */
int64_t bg_module_trainable_numel(const bg_module *m);

// ---------------------------------------------------------------------------
// layers. Every constructor returns a finalized module, or NULL with
// bg_last_error() set (e.g. "Linear: in_features must be positive: 0").
// rng: a seeded generator owned by the caller; constructors draw from it in
// PyTorch's order (weight, then bias) and advance it. Weights are
// initialised with PyTorch's defaults; load PyTorch's exact values with
// bg_module_set_param when bit-for-bit parity is needed.

/* y = x W^T + b. x [..., in] -> [..., out]. Parameters: weight [out,in]
 * ~ bg_init_torch_default (U(+-1/sqrt(in))), bias [out] ~ U(+-1/sqrt(in)). */
bg_module *bg_linear_new(int64_t in_features, int64_t out_features, bool bias, bg_rng *rng);

/* NCHW convolution. x [N,in,H,W] -> [N,out,OH,OW]. opts: stride, padding,
 * dilation, groups (NULL = BG_CONV2D_DEFAULTS). Parameters: weight
 * [out, in/groups, kh, kw] ~ bg_init_torch_default, bias [out] ~
 * U(+-1/sqrt(fan_in)), fan_in = in/groups*kh*kw. in and out must be
 * divisible by groups. */
bg_module *bg_conv2d_new(int64_t in_channels, int64_t out_channels, int64_t kernel_h,
                         int64_t kernel_w, const bg_conv2d_opts *opts, bool bias, bg_rng *rng);

/* Lookup table. x: i32 ids of any shape, values in [0,num) -> [ids..., dim].
 * Parameter: weight [num,dim] ~ N(0,1) (PyTorch's default). */
bg_module *bg_embedding_new(int64_t num_embeddings, int64_t dim, bg_rng *rng);

/* LayerNorm over the last dim (size dim). affine: parameters weight [dim] = 1
 * and bias [dim] = 0; without them, none. PyTorch's eps is 1e-5. */
bg_module *bg_layernorm_new(int64_t dim, float eps, bool affine);

/* RMSNorm over the last dim: x / sqrt(mean(x^2) + eps) * weight, weight [dim]
 * = 1. */
bg_module *bg_rmsnorm_new(int64_t dim, float eps);

/* Inverted dropout with probability p in [0,1): the module owns a bg_rng
 * seeded with seed, so runs are reproducible. The identity in eval mode. */
bg_module *bg_dropout_new(float p, uint64_t seed);

/* Activations (no parameters), element-wise on any shape. */
bg_module *bg_relu_new(void);
bg_module *bg_leaky_relu_new(float negative_slope);   /* PyTorch default 0.01 */
bg_module *bg_gelu_new(bool tanh_approx);             /* false: erf form (default) */
bg_module *bg_silu_new(void);
bg_module *bg_tanh_new(void);
bg_module *bg_sigmoid_new(void);

/* [N, d1, d2, ...] -> [N, d1*d2*...] (PyTorch's Flatten(start_dim=1)). */
bg_module *bg_flatten_new(void);

/* Pooling over NCHW (PyTorch semantics, square windows). stride 0 means
 * stride = kernel (PyTorch's default). AvgPool counts padding. */
bg_module *bg_max_pool2d_new(int64_t kernel, int64_t stride, int64_t padding);
bg_module *bg_avg_pool2d_new(int64_t kernel, int64_t stride, int64_t padding);

/* Runs children in order, naming them "0", "1", .... Takes ownership of the
 * n children whether it succeeds or not, and fails (freeing them all) when any
 * is NULL — so constructors can be nested without checks, and the error of
 * the first failing constructor is kept in bg_last_error(). Collates every
 * parameter of the tree into its own flat buffers (bg_module_finalize). A
 * child may not already belong to another container. */
bg_module *bg_sequential_new(int n, bg_module *const *children);

/* y = x + f(x), f = the n children run in order (named "0", "1", ... as in
 * Sequential; ownership as bg_sequential_new). f's output must have x's
 * shape ("Residual: the branch changes the shape: x is [8,16], f(x) is
 * [8,4]"). */
bg_module *bg_residual_new(int n, bg_module *const *children);

/* Runs a Sequential child by child and also returns the outputs of the
 * children listed in idx (n_idx of them, in that order) in hidden[] (arena
 * tensors). grad true records on the tape like bg_module_forward (a
 * student); false runs with grad disabled (a frozen teacher). NULL + ctx
 * error on a bad index ("sequential_forward_capture: child index 3 out of
 * range for 3 children"). A module without children runs whole. */
bg_tensor *bg_sequential_forward_capture(bg_ctx *ctx, bg_module *seq, bg_tensor *x,
                                         const int *idx, int n_idx, bg_tensor **hidden, bool grad);

// ---------------------------------------------------------------------------
// defining a module
//
//     typedef struct { int64_t dim; } scale_state;          // y = x * weight
//     static bg_tensor *scale_forward(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
//         return bg_mul(ctx, x, bg_module_find_param(m, "weight"));
//     }
//     static bg_status scale_save(const bg_module *m, json_t *hp) {   // hyperparameters
//         return bg_hparam_set_int(hp, "dim", ((scale_state *)bg_module_state(m))->dim);
//     }
//     static bg_module *scale_new(int64_t dim);
//     static bg_module *scale_load(const json_t *hp, bg_rng *rng) {  // and back
//         int64_t dim;
//         return bg_hparam_get_int(hp, "dim", 1, BG_HPARAM_MAX_DIM, &dim) == BG_OK ? scale_new(dim) : NULL;
//     }
//     static const bg_module_type scale_type = {.kind = "Scale", .forward = scale_forward,
//         .free_state = free, .save_hparams = scale_save, .load_hparams = scale_load};
//     static bg_module *scale_new(int64_t dim) {
//         scale_state *s = malloc(sizeof *s);
//         if (s) s->dim = dim;
//         bg_module *m = bg_module_new(&scale_type, s);           // takes s, also on failure
//         bg_tensor *w = bg_module_add_param(m, "weight", BG_SHAPE(dim));   // zero-filled
//         if (!w) { bg_module_free(m); return NULL; }
//         bg_init_constant(w, 1.0f);
//         if (bg_module_finalize(m) != BG_OK) { bg_module_free(m); return NULL; }
//         return m;
//     }
//     bg_module_register_type(&scale_type);   // once: then it saves, loads and resumes
//
// A container kind (children of its own, any names) has load_hparams return
// the module WITHOUT children: a description's loader adds the described
// children and finalizes; its forward finds them with bg_module_find_child
// (tests/test_modules.c has a pre-norm residual block written this way).

/* A module with no parameters or children yet. state (may be NULL) belongs to
 * the module from now on, even on failure: it is released by
 * type->free_state. NULL when type or type->forward is NULL, or out of
 * memory. */
bg_module *bg_module_new(const bg_module_type *type, void *state);
/* The state passed to bg_module_new. */
void *bg_module_state(const bg_module *m);

/* Registers a zero-filled f32 parameter of m (with a zeroed grad and
 * requires_grad = true) and returns it; it may be initialised at once. Names
 * are unique within m, non-empty, without '.'. NULL + bg_last_error on a
 * duplicate or bad name, a bad shape, or when m already belongs to a
 * container. The tensor stays valid (same pointer) until m's root is freed. */
bg_tensor *bg_module_add_param(bg_module *m, const char *name, int ndim, const int64_t *shape);
/* Appends child under name (unique within m, non-empty, without '.'). m takes
 * ownership of child on success AND on failure. BG_ERR_STATE when child
 * already has a parent. */
bg_status bg_module_add_child(bg_module *m, const char *name, bg_module *child);

/* Collates every parameter of m's subtree into one params buffer and one
 * grads buffer owned by m (copying current values and grads), re-points the
 * parameter tensors into them and frees the previous storage. Call it once
 * the tree is complete and before creating an optimizer (which keeps
 * pointers into the buffers). Idempotent. BG_ERR_NOMEM on failure (the tree
 * is left unchanged). BG_ERR_STATE when m is not a root. */
bg_status bg_module_finalize(bg_module *m);

// ---------------------------------------------------------------------------
// quantization-aware layers (qlayers.c; specs and states in quant/quant.h)
//
//     bg_module *net = bg_sequential_new(3, (bg_module *[]){
//         bg_linear_new(784, 512, true, &rng), bg_relu_new(), bg_linear_new(512, 10, true, &rng)});
//     bg_quantize_model(net, "int4:per_group=64:lsq", "int8");  // every Linear/Conv2d, weights kept
//     // or: bg_bitnet_model(net);                                // every Linear -> BitLinear
//     bg_model_set_quant_mode(net, BG_QUANT_MODE_TRAIN);         // ... train; EVAL to evaluate
//
// A quantized layer (kinds "QLinear", "QConv2d", "QEmbedding", "BitLinear")
// holds the ordinary layer's parameters under the same names ("weight",
// "bias") and up to two children of kind "FakeQuant": "weight_quant" (W ->
// fake_quant(W)) and "input_quant" (x -> fake_quant(x)). Their learned
// quantizer parameters are module parameters named after the state's
// ("weight_quant.scale", "input_quant.zero_point", "input_quant.alpha"), so
// they are in the flat buffers, the optimizer trains them and checkpoints
// save them. Forward: y = op(fake_quant(x, a_spec), fake_quant(W, w_spec), b).
// A NULL spec leaves that side in float (no child). Activation specs may be
// per_tensor, per_token or per_channel on the feature axis (-1 for Linear, 1
// for Conv2d); per_group activations are rejected.
//
// Converting a model (bg_quantize_model, bg_bitnet_model, bg_quantize_layer)
// rebuilds the flat buffers: the old layers' tensors are freed, so create
// optimizers after converting.

struct bg_quant_spec;
struct bg_quant_state;
struct bg_quant_stats;

typedef enum bg_quant_mode {
    BG_QUANT_MODE_FP32 = 0,  /* quantizers off: every qlayer is its float layer */
    BG_QUANT_MODE_TRAIN,     /* fake quant on, observers on (the default) */
    BG_QUANT_MODE_EVAL,      /* fake quant on, observers frozen */
} bg_quant_mode;
/* (Modes touch only the quantizers; bg_module_train still selects Dropout's
 * behaviour.) */

/* A module y = fake_quant(x) under spec (copied), with its own state made
 * for tensors shaped (ndim, shape) (ndim 0 for per_tensor / per_token).
 * Learned parameters become its parameters. */
bg_module *bg_fake_quant_new(const struct bg_quant_spec *spec, int ndim, const int64_t *shape);

/* New quantization-aware layers (same initialisation as the float ones).
 * w_spec / a_spec may be NULL (that side stays float). */
bg_module *bg_qlinear_new(int64_t in_features, int64_t out_features, bool bias,
                          const struct bg_quant_spec *w_spec, const struct bg_quant_spec *a_spec,
                          bg_rng *rng);
bg_module *bg_qconv2d_new(int64_t in_channels, int64_t out_channels, int64_t kernel_h, int64_t kernel_w,
                          const bg_conv2d_opts *opts, bool bias, const struct bg_quant_spec *w_spec,
                          const struct bg_quant_spec *a_spec, bg_rng *rng);
bg_module *bg_qembedding_new(int64_t num_embeddings, int64_t dim, const struct bg_quant_spec *w_spec,
                             bg_rng *rng);

/* A quantized copy of an existing Linear, Conv2d or Embedding (its weights
 * and bias copied; layer is not changed or consumed). Embedding takes no
 * a_spec (ids are integers). NULL + bg_last_error on a wrong kind. */
bg_module *bg_quantize_module(const bg_module *layer, const struct bg_quant_spec *w_spec,
                              const struct bg_quant_spec *a_spec);

/* BitLinear (BitNet b1.58): y = fake_quant(RMSNorm(x), "int8:per_token:absmax")
 * fake_quant(W, "ternary:absmean")^T, identity STE for both, no bias. The
 * RMSNorm (eps 1e-6, PyTorch's eps=None would use float eps) has NO
 * learnable gain — the FAQ's SimpleRMSNorm; a gain before the per-token
 * absmax would only rescale per feature, which the next layer's latent
 * weights absorb. Parameter: weight [out,in] (latent, f32, what the
 * optimizer updates), initialised like Linear. */
bg_module *bg_bitlinear_new(int64_t in_features, int64_t out_features, bg_rng *rng);
/* Whether a BitLinear applies its own gainless RMSNorm (true by default).
 * A model that puts an explicit weighted RMSNorm in front of every
 * projection (llama.cpp's bitnet graph) turns it off. BG_ERR_ARG for
 * another kind. */
bool bg_bitlinear_norm(const bg_module *m);
bg_status bg_bitlinear_set_norm(bg_module *m, bool norm);
/* A BitLinear with the latent weights of an existing Linear (its bias, if
 * any, is dropped: BitLinear has none). */
bg_module *bg_bitlinear_from(const bg_module *linear);

/* Replaces child i of m by child (which must be a root; m takes it, also
 * on failure), frees the old child and re-finalizes the root (module.c).
 * Safe for any container whose forward looks its children up
 * (bg_module_child, bg_module_find_child), as every built-in one does. */
bg_status bg_module_replace_child(bg_module *m, int i, bg_module *child);
/* The options of a Conv2d module (layers.c). BG_ERR_ARG for another kind. */
bg_status bg_conv2d_get_opts(const bg_module *m, bg_conv2d_opts *opts);
/* The same for a QConv2d (qlayers.c). BG_ERR_ARG for another kind. */
bg_status bg_qconv2d_get_opts(const bg_module *m, bg_conv2d_opts *opts);

/* The hyperparameters of a built-in float layer (layers.c), for model
 * descriptions (io/model_desc.c). Fields the kind does not use are zero. */
typedef struct bg_layer_hparams {
    int64_t in, out;                   /* Linear in/out features, Conv2d channels, Embedding num/dim, norms dim */
    int64_t kernel_h, kernel_w;        /* Conv2d */
    bg_conv2d_opts conv;               /* Conv2d */
    bool bias;                         /* Linear, Conv2d; LayerNorm: elementwise_affine */
    float eps;                         /* LayerNorm, RMSNorm */
    float p;                           /* Dropout */
    bg_rng *rng;                       /* Dropout: its generator (owned by the module; checkpoints save it) */
    float slope;                       /* LeakyReLU */
    bool tanh_approx;                  /* GELU */
    int64_t kernel, stride, padding;   /* MaxPool2d, AvgPool2d */
} bg_layer_hparams;
/* Fills *out for Linear, Conv2d, Embedding, LayerNorm, RMSNorm, Dropout, the
 * activations, Flatten, the pools and Sequential (nothing to fill). BG_ERR_ARG
 * for other kinds ("layer_hparams: not a built-in float layer: QLinear"). */
bg_status bg_layer_hparams_get(const bg_module *m, bg_layer_hparams *out);

/* Replaces every Linear and Conv2d of model's tree (not model itself) by its
 * quantized wrapper, keeping weights. Spec strings as bg_quant_spec_parse;
 * NULL or "" = float for that side. Returns BG_OK or the parse error. */
bg_status bg_quantize_model(bg_module *model, const char *w_spec, const char *a_spec);
/* The same with spec structs (NULL = float for that side). */
bg_status bg_quantize_model_specs(bg_module *model, const struct bg_quant_spec *w_spec,
                                  const struct bg_quant_spec *a_spec);
/* Replaces every Linear of model's tree by a BitLinear with its weights. */
bg_status bg_bitnet_model(bg_module *model);
/* One layer by its path ("0", "3.1"): Linear/Conv2d/Embedding -> quantized
 * wrapper (w_spec "bitnet" gives a BitLinear). BG_ERR_ARG when there is no
 * such layer ("quantize_layer: no layer named 7"). */
bg_status bg_quantize_layer(bg_module *model, const char *path, const char *w_spec, const char *a_spec);

/* Quantizer controls over m's whole subtree (one layer, or a whole model). */
void bg_model_set_quant_mode(bg_module *m, bg_quant_mode mode);
void bg_model_set_observers(bg_module *m, bool enabled);   /* freeze (false) / unfreeze */
void bg_model_reset_observers(bg_module *m);               /* forget ranges, re-init learned params */
/* After loading parameters (checkpoint, set_param): marks every learned
 * quantizer parameter (LSQ step, LSQ+ offset, PACT alpha) as holding its
 * value, so the next forward does not re-initialise it from its input. */
void bg_model_set_quant_initialized(bg_module *m, bool initialized);
/* Metrics tracking (off by default): each FakeQuant forward also sums x^2,
 * (x-q)^2, x*q, q^2 over its input (one extra pass) and, for ternary and
 * binary weights, keeps the levels; qat/qat.h "metrics" reads them. */
void bg_model_track_quant(bg_module *m, bool enabled);
/* Integer forward (on by default): a QLinear or BitLinear whose input and
 * weight quantizers give symmetric int8-range codes (activations per tensor
 * or per token, e.g. BitNet's int8 absmax; weights per tensor or per output
 * channel with codes in [-127,127]: ternary, binary, int2..int7, int8
 * narrow) runs its product on integer kernels (autograd.h bg_qlinear_int):
 * the same values as the f32 product of the fake-quantized tensors up to
 * float rounding, the same backward. false: always the f32 product. */
void bg_model_set_int_forward(bg_module *m, bool enabled);

/* The quantized layers of m's tree in pre-order (m itself included). */
int bg_qlayer_count(const bg_module *m);
bg_module *bg_qlayer_at(const bg_module *m, int i);
/* Path of the i-th quantized layer relative to m ("2", "1.0"; "" for m
 * itself); snprintf rules; -1 when i is out of range. */
int bg_qlayer_name(const bg_module *m, int i, char *buf, size_t len);
/* True for QLinear, QConv2d, QEmbedding, BitLinear. */
bool bg_module_is_qlayer(const bg_module *m);
/* A qlayer's weight / input quantizer state (NULL when that side is float).
 * Change its spec with bg_quant_state_set_spec (the forward reads the
 * state's spec). Also accepts a FakeQuant module (its state for both). */
struct bg_quant_state *bg_qlayer_weight_state(const bg_module *qlayer);
struct bg_quant_state *bg_qlayer_input_state(const bg_module *qlayer);
/* A qlayer's latent weight (its "weight" parameter), or NULL. */
bg_tensor *bg_qlayer_weight(const bg_module *qlayer);
/* Every quantizer of m's qlayers, for a schedule (qat.h bg_schedule_apply):
 * per qlayer in order, its weight state named "<path>.weight_quant" with
 * weights[k] = its latent weight, then its input state "<path>.input_quant"
 * with weights[k] = NULL (float sides are skipped), and every FakeQuant
 * module outside a qlayer (a custom block's activation quantizer) under its
 * own path ("fake_quant" for a root), weights[k] = NULL. names[k] point into
 * name_buf, which holds max * BG_PARAM_NAME_MAX chars. weights may be NULL.
 * Returns the total count (writes at most max). */
int bg_model_quantizers(const bg_module *m, struct bg_quant_state **states, const char **names, char *name_buf,
                        const bg_tensor **weights, int max);
/* A loader's guard: from now on, on this thread, bg_module_add_param
 * refuses (BG_ERR_SHAPE, nothing allocated) a parameter that would take the
 * values registered since this call past max_floats, so a file whose
 * description promises more than its tensors hold fails before the model is
 * allocated. -1 removes the limit. Returns the previous limit. */
int64_t bg_module_param_limit(int64_t max_floats);

/* The same list, sized to the model: bg_model_quantizer_list allocates it
 * (NULL + bg_last_error when out of memory), bg_quantizer_list_free frees
 * it. The states belong to the model: the list is valid while the model's
 * tree is unchanged (rebuild it after bg_quantize_model / bg_bitnet_model). */
typedef struct bg_quantizer_list {
    int n;
    struct bg_quant_state **states;
    const char **names;
    const bg_tensor **weights;   /* latent weight of a weight quantizer, else NULL */
} bg_quantizer_list;
bg_quantizer_list *bg_model_quantizer_list(const bg_module *m);
void bg_quantizer_list_free(bg_quantizer_list *q);
/* The tracked statistics of a qlayer's weight or input quantizer (owned by
 * the layer; NULL when that side is float). For qat/metrics.c. */
struct bg_quant_stats *bg_qlayer_stats(const bg_module *qlayer, bool input);

// ---------------------------------------------------------------------------
// the BitNet transformer language model (lm.c)
//
//     bg_module *lm = bg_lm_new(&(bg_lm_config){.vocab = 256, .d_model = 256, .n_layers = 4,
//                                               .n_heads = 4, .d_ff = 768, .ctx = 128}, &rng);
//     bg_bitnet_model(lm);                          // every projection -> BitLinear(norm=false)
//     bg_tensor *logits = bg_module_forward(ctx, lm, ids);   // ids i32 [B,T] -> [B,T,vocab]
//
// llama.cpp's `bitnet` graph (../shared/LM.md): token embedding "token_embd"
// (tied with the output head), blocks "blk.0" ... each with attn_norm,
// attn_q/k/v, NEOX RoPE, causal attention, attn_sub_norm, attn_output,
// residual, ffn_norm, ffn_gate/ffn_up (SwiGLU: silu(gate) * up), ffn_sub_norm,
// ffn_down, residual; then "output_norm". No biases. The parameter names are
// GGUF's tensor names ("blk.0.attn_q.weight"). The blocks' Linear children
// become BitLinears without a norm of their own (the explicit weighted
// RMSNorm in front of each is BitNet's SubLN); embedding and norms stay float.

typedef struct bg_lm_config {
    int64_t vocab, d_model, n_layers, n_heads, d_ff, ctx;
    float rope_theta;   /* 0: 10000 */
    float norm_eps;     /* 0: 1e-5 */
} bg_lm_config;
/* The token embedding's initial standard deviation (GPT-2's). */
#define BG_LM_EMBED_STD 0.02f

/* A TransformerLM from config (Linear projections initialised like
 * PyTorch's, the embedding N(0, 0.02), norms 1). NULL + bg_last_error for a
 * bad config ("lm_config: d_model 100 does not divide into 3 heads"). */
bg_module *bg_lm_new(const bg_lm_config *config, bg_rng *rng);
/* One block of that config (for models that stack blocks their own way). */
bg_module *bg_transformer_block_new(const bg_lm_config *config, bg_rng *rng);
/* BG_OK or BG_ERR_ARG with the first problem of config. */
bg_status bg_lm_config_check(const bg_lm_config *config);
/* The config of a TransformerLM (defaults filled in). */
bg_status bg_lm_config_of(const bg_module *lm, bg_lm_config *out);

/* Activation checkpointing for every TransformerBlock in m (a model or one
 * block): on, a block keeps only its output between forward and backward
 * and runs again in the backward (bg_recompute), so training holds one
 * block's activations at a time instead of all of them, for one more
 * forward per step. Gradients are the same bitwise. Not saved with the
 * model (a choice of the training run). */
bg_status bg_lm_set_recompute(bg_module *m, bool on);

/* Continues prompt[n_prompt] by n_new tokens into out[n_new] with the
 * training model in eval mode (no KV cache: each token reruns the last ctx
 * tokens; infer/ has the fast path). BG_ERR_ARG for a prompt longer than the
 * context or a token outside the vocabulary ("lm_generate: prompt token 2 is
 * 300, outside the vocabulary of 256"). */
bg_status bg_lm_generate(bg_module *lm, const int32_t *prompt, int64_t n_prompt, int64_t n_new,
                         const bg_sample_opts *opts, int32_t *out);

#ifdef __cplusplus
}
#endif
#endif /* BG_LAYERS_H */
