/* autograd_internal.h — the tape node, the op table and the helpers every op
 * file uses. Not installed. */
#ifndef BG_AUTOGRAD_INTERNAL_H
#define BG_AUTOGRAD_INTERNAL_H

#include "autograd/autograd.h"
#include "tensor/tensor_internal.h"

#define BG_NODE_MAX_SAVED 4
/* Room for an op's named values (BG_ARGS). */
#define BG_NODE_ARGS_BYTES 64

typedef struct bg_node {
    bg_op op;
    bg_tensor *out;
    int n_in;
    bg_tensor **in;                       /* n_in inputs (arena array) */
    bg_tensor *saved[BG_NODE_MAX_SAVED];  /* arena tensors the backward needs */
    _Alignas(16) unsigned char args[BG_NODE_ARGS_BYTES];   /* the op's values, via BG_ARGS */
    void *extra;                          /* op-specific arena data (larger than args) */
    struct bg_node *prev;
} bg_node;

/* The values an op keeps for its backward have names: each op file declares
 * a struct of them, checks that it fits with BG_ARGS_FIT, and reaches the
 * node's copy with BG_ARGS(n, type), e.g.
 *     typedef struct { float lo, hi; } clamp_args;   BG_ARGS_FIT(clamp_args);
 *     BG_ARGS(n, clamp_args)->lo = lo;               // forward
 *     const clamp_args *a = BG_ARGS(n, clamp_args);  // backward */
#define BG_ARGS(n, type) ((type *)(void *)(n)->args)
#define BG_ARGS_FIT(type) _Static_assert(sizeof(type) <= BG_NODE_ARGS_BYTES, #type " does not fit a node's args")

/* linear's values (ops_matmul.c), shared with qlinear_int (ops_qlinear.c),
 * whose backward is linear's: y [rows, M] = x [rows, K] W[M, K]^T + b. */
typedef struct bg_linear_args {
    int64_t rows, M, K;
} bg_linear_args;

/* bg_causal_attention with `op` naming the caller in error messages
 * (ops_attention.c; bg_attention's causal form runs it as "attention"). */
bg_tensor *bg_causal_attention_named(bg_ctx *ctx, const char *op, bg_tensor *q, bg_tensor *k, bg_tensor *v,
                                     float scale);

typedef void (*bg_backward_fn)(bg_ctx *ctx, bg_node *n);

typedef struct bg_op_def {
    const char *name;
    int n_inputs;          /* -1: variable (concat) */
    bg_backward_fn backward;
} bg_op_def;

extern const bg_op_def bg_op_table[BG_OP_COUNT];

/* Records a node for op when grad is enabled and any input requires grad;
 * marks out as requiring grad. Returns the node (to fill saved/f/i) or NULL
 * when nothing is recorded (or the arena is exhausted: the ctx error is set). */
bg_node *bg_record(bg_ctx *ctx, bg_op op, bg_tensor *out, int n_in, bg_tensor *const *in);

/* The gradient buffer of t, created zeroed in the arena on first use. NULL
 * when t does not require grad (or on out of memory). */
float *bg_grad_of(bg_ctx *ctx, bg_tensor *t);

/* Runs the backward of the nodes from tail to the tape's start. */
bg_status bg_run_nodes(bg_ctx *ctx, bg_node *tail);

/* A tape of its own over arena memory that is handed back at its end (the
 * recomputed block of bg_checkpoint): begin starts an empty tape and gradient
 * pool, end restores the outer ones and rolls the arena back to begin. */
typedef struct bg_tape_region {
    bg_arena_mark mark;
    bg_node *tail;
    int64_t n_nodes;
    struct bg_grad_pool *pool;
} bg_tape_region;
bg_tape_region bg_tape_region_begin(bg_ctx *ctx);
void bg_tape_region_end(bg_ctx *ctx, bg_tape_region r);

/* Common input checks: returns false (and sets the ctx error) when the ctx
 * has failed, x is NULL, or x is not f32. */
bool bg_check_f32(bg_ctx *ctx, const char *op, const bg_tensor *x, const char *what);

/* Normalises a possibly negative axis; false (+ ctx error) when out of range. */
bool bg_check_axis(bg_ctx *ctx, const char *op, const bg_tensor *x, int *axis);

/* A contiguous f32 output shaped like the given shape. */
static inline bg_tensor *bg_out(bg_ctx *ctx, int ndim, const int64_t *shape) {
    return bg_empty(ctx, BG_DTYPE_F32, ndim, shape);
}

// Broadcasting helpers (broadcast.c), NumPy rules, up to 4 dims.
/* The broadcast shape of (na, sa) and (nb, sb) into (*nout, out); false when
 * they cannot broadcast. */
bool bg_broadcast_shapes(int na, const int64_t *sa, int nb, const int64_t *sb, int *nout,
                         int64_t *out);
/* t's element strides as seen from the broadcast shape (nout, out), padded on
 * the left to 4 dims; 0 along broadcast and padded dims. */
void bg_broadcast_strides(const bg_tensor *t, int nout, const int64_t *out, int64_t stride[4]);
/* True when (nb, sb) without its leading ones equals the trailing dims of
 * (ny, sy), e.g. [M] or [1,M] against [N,M]. */
bool bg_is_row_broadcast(int nb, const int64_t *sb, int ny, const int64_t *sy);
/* dst (contiguous, shape dshape) += alpha * src (contiguous, shape sshape)
 * summed over the dims dshape broadcasts along. */
void bg_sum_to_shape(float *dst, int nd, const int64_t *dshape, const float *src, int ns,
                     const int64_t *sshape, float alpha);

// Backward functions, one per op of ops.def, defined next to their forward.
#define BG_OP(id, name, arity) void bg_op_##name##_backward(bg_ctx *ctx, bg_node *n);
#include "autograd/ops.def"
#undef BG_OP

#endif
