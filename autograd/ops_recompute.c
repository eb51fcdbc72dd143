/* ops_recompute.c — activation checkpointing: a block whose intermediate
 * values are not kept between the forward and the backward. The forward
 * runs the block on a tape of its own over arena memory that is handed back
 * as soon as the output is copied out; the backward runs the block again
 * from the same input and state and back-propagates through that second
 * run, again in memory handed back at its end. A model of L such blocks
 * keeps L block outputs instead of L blocks of activations, for one more
 * forward per step. Both runs record a tape, so they run the same kernels
 * and give the same values: the gradients equal those of the plain block
 * bitwise. Calls tensor/ and the tape (tape.c). */
#include <string.h>

#include "autograd/autograd_internal.h"
#include "kernels/kernels.h"

typedef struct recompute_args {
    bg_recompute_fn f;
    void *saved;   /* what f.save returned before the first run */
} recompute_args;
BG_ARGS_FIT(recompute_args);

/* Leaves the block reads that require grad and live in the arena (not
 * parameters, whose grads are their own): their gradient buffers must exist
 * before the backward's run, or they would be made in memory that run hands
 * back. */
#define MAX_ARENA_LEAVES 32

static int arena_leaves(const bg_tensor *x, bg_tensor **leaves, bg_ctx *ctx) {
    int k = 0;
    for (const bg_node *n = ctx->tape_tail; n; n = n->prev)
        for (int i = 0; i < n->n_in; i++) {
            bg_tensor *t = n->in[i];
            if (!t || t == x || !t->requires_grad || t->node || t->persistent || t->grad) continue;
            bool seen = false;
            for (int j = 0; j < k && !seen; j++) seen = leaves[j] == t;
            if (seen) continue;
            if (k == MAX_ARENA_LEAVES) {
                bg_ctx_fail(ctx, BG_ERR_ARG,
                            "recompute: the block reads more than %d arena tensors that require grad (make them "
                            "parameters)",
                            MAX_ARENA_LEAVES);
                return -1;
            }
            leaves[k++] = t;
        }
    return k;
}

/* The block's output copied into out (shaped like x); false + ctx error
 * when the block fails or changes the shape. */
static bool run_and_copy(bg_ctx *ctx, const bg_recompute_fn *f, bg_tensor *x, bg_tensor *out) {
    bg_tensor *leaves[MAX_ARENA_LEAVES];
    int n_leaves = 0;
    bg_tape_region r = bg_tape_region_begin(ctx);
    bg_tensor *y = f->forward(ctx, f->user, x);
    bool ok = y != NULL && ctx->status == BG_OK;
    if (ok && !bg_same_shape(y, x)) {
        char a[BG_SHAPE_STR_MAX], b[BG_SHAPE_STR_MAX];
        bg_ctx_fail(ctx, BG_ERR_SHAPE, "recompute: the block must keep the shape of its input: x is %s, f(x) is %s",
                    bg_shape_str(x, a, sizeof a), bg_shape_str(y, b, sizeof b));
        ok = false;
    }
    if (ok && y->dtype != BG_DTYPE_F32) {
        bg_ctx_fail(ctx, BG_ERR_DTYPE, "recompute: the block must return f32, not %s", bg_dtype_name(y->dtype));
        ok = false;
    }
    if (ok) bg_copy(out, y);
    if (ok) n_leaves = arena_leaves(x, leaves, ctx);
    bg_tape_region_end(ctx, r);
    for (int i = 0; i < n_leaves; i++) bg_grad_of(ctx, leaves[i]);
    return ok && n_leaves >= 0 && ctx->status == BG_OK;
}

bg_tensor *bg_recompute(bg_ctx *ctx, const bg_recompute_fn *f, bg_tensor *x) {
    if (!bg_check_f32(ctx, "recompute", x, "x")) return NULL;
    if (!f || !f->forward) return bg_ctx_fail(ctx, BG_ERR_ARG, "recompute: no forward function");
    // Without a gradient to compute (evaluation, a teacher) the run is the
    // same minus the record: memory of one block at a time there too.
    const bool record = ctx->grad_enabled && x->requires_grad;
    // Allocated before the runs: the only memory that outlives them.
    bg_tensor *out = bg_out(ctx, x->ndim, x->shape);
    void *saved = out && record && f->save ? f->save(ctx, f->user) : NULL;
    if (!out || ctx->status != BG_OK || !run_and_copy(ctx, f, x, out)) return NULL;
    if (!record) return out;
    bg_node *n = bg_record(ctx, BG_OP_RECOMPUTE, out, 1, &x);
    if (n) *BG_ARGS(n, recompute_args) = (recompute_args){.f = *f, .saved = saved};
    return ctx->status == BG_OK ? out : NULL;
}

/* A leaf over x's values whose gradient the second run fills. */
static bg_tensor *leaf_alias(bg_ctx *ctx, bg_tensor *x) {
    static const int same[BG_MAX_DIMS] = {0, 1, 2, 3};
    bg_tensor *v = bg_view_permute(ctx, x, same);   // a header without history, any strides
    if (v) v->requires_grad = true;
    return v;
}

void bg_op_recompute_backward(bg_ctx *ctx, bg_node *n) {
    const recompute_args *a = BG_ARGS(n, recompute_args);
    bg_tensor *x = n->in[0];
    float *gx = bg_grad_of(ctx, x);   // before the region: it outlives the run
    if (!gx) return;
    bg_tape_region r = bg_tape_region_begin(ctx);
    if (a->f.restore) a->f.restore(a->f.user, a->saved);
    bg_tensor *xl = leaf_alias(ctx, x);
    bg_tensor *y = xl ? a->f.forward(ctx, a->f.user, xl) : NULL;
    float *gy = y && y->requires_grad ? bg_grad_of(ctx, y) : NULL;
    if (gy) {
        const bg_kernels *k = bg_kernels_get();
        const int64_t numel = bg_numel(y);
        k->add(gy, gy, bg_f32(n->out->grad), numel);
        if (bg_run_nodes(ctx, ctx->tape_tail) == BG_OK && xl->grad) k->add(gx, gx, bg_f32(xl->grad), numel);
    }
    bg_tape_region_end(ctx, r);
}
