/* tape.c — recording nodes, gradient buffers and bg_backward. Calls tensor/
 * and kernels/ only; knows no op (the table does). */
#include <math.h>
#include <string.h>

#include "autograd/autograd_internal.h"
#include "kernels/kernels.h"

bg_node *bg_record(bg_ctx *ctx, bg_op op, bg_tensor *out, int n_in, bg_tensor *const *in) {
    if (!ctx->grad_enabled || !out) return NULL;
    bool any = false;
    for (int i = 0; i < n_in; i++) any |= in[i] && in[i]->requires_grad;
    if (!any) return NULL;
    bg_node *n = bg_ctx_alloc(ctx, sizeof *n);
    bg_tensor **ins = bg_ctx_alloc(ctx, sizeof *ins * (size_t)(n_in ? n_in : 1));
    if (!n || !ins) return NULL;
    memset(n, 0, sizeof *n);
    memcpy(ins, in, sizeof *ins * (size_t)n_in);
    n->op = op;
    n->out = out;
    n->n_in = n_in;
    n->in = ins;
    n->prev = ctx->tape_tail;
    ctx->tape_tail = n;
    ctx->n_nodes++;
    out->node = n;
    out->requires_grad = true;
    return n;
}

// --- the gradient pool ------------------------------------------------------
/* A node's output gradient is dead once the node's backward has run (its
 * consumers come later on the tape, so they ran before it): the buffer goes
 * to the pool and the next gradient of the same size takes it. The
 * backward's memory is then its live gradients, not every gradient of the
 * step. Leaves (no node) keep theirs: users read them. */
typedef struct bg_grad_pool {
    bg_tensor *grad;
    struct bg_grad_pool *next;
} bg_grad_pool;

static void pool_put(bg_ctx *ctx, bg_tensor *g) {
    bg_grad_pool *e = bg_ctx_alloc(ctx, sizeof *e);
    if (!e) return;   // the buffer is only not reused
    e->grad = g;
    e->next = ctx->grad_pool;
    ctx->grad_pool = e;
}

static bg_tensor *pool_take(bg_ctx *ctx, const bg_tensor *t) {
    const int64_t n = bg_numel(t);
    for (bg_grad_pool **p = &ctx->grad_pool; *p; p = &(*p)->next) {
        if (bg_numel((*p)->grad) != n) continue;
        bg_tensor *g = bg_view_reshape(ctx, (*p)->grad, t->ndim, t->shape);
        if (!g) return NULL;
        *p = (*p)->next;
        memset(g->data, 0, sizeof(float) * (size_t)n);
        return g;
    }
    return NULL;
}

static void release_output_grad(bg_ctx *ctx, bg_node *n) {
    bg_tensor *o = n->out;
    if (o->node != n || o->persistent || o->owns_grad || !o->grad) return;
    pool_put(ctx, o->grad);
    o->grad = NULL;
}

float *bg_grad_of(bg_ctx *ctx, bg_tensor *t) {
    if (!t || !t->requires_grad) return NULL;
    if (!t->grad) {
        // Persistent leaves get their grad from bg_set_requires_grad; anything
        // else is an activation whose grad lives for this step only.
        bg_tensor *g = pool_take(ctx, t);
        if (!g && ctx->status == BG_OK) g = bg_zeros(ctx, BG_DTYPE_F32, t->ndim, t->shape);
        if (!g) return NULL;
        t->grad = g;
    }
    return bg_f32(t->grad);
}

bg_tape_region bg_tape_region_begin(bg_ctx *ctx) {
    bg_tape_region r = {.mark = bg_ctx_mark(ctx), .tail = ctx->tape_tail, .n_nodes = ctx->n_nodes,
                        .pool = ctx->grad_pool};
    ctx->tape_tail = NULL;
    ctx->grad_pool = NULL;   // buffers freed inside the region go with it
    return r;
}

void bg_tape_region_end(bg_ctx *ctx, bg_tape_region r) {
    ctx->tape_tail = r.tail;
    ctx->n_nodes = r.n_nodes;
    ctx->grad_pool = r.pool;
    bg_ctx_rollback(ctx, r.mark);
}

bool bg_check_f32(bg_ctx *ctx, const char *op, const bg_tensor *x, const char *what) {
    if (!ctx) {
        bg_set_error(BG_ERR_ARG, "%s: ctx is NULL", op);
        return false;
    }
    if (ctx->status != BG_OK) return false;
    if (!x) {
        bg_ctx_fail(ctx, BG_ERR_ARG, "%s: %s is NULL", op, what);
        return false;
    }
    const char *stale = bg_tensor_stale_reason(ctx, x);
    if (stale) {
        bg_ctx_fail(ctx, BG_ERR_STATE, "%s: %s %s", op, what, stale);
        return false;
    }
    if (x->dtype != BG_DTYPE_F32) {
        char s[BG_SHAPE_STR_MAX];
        bg_ctx_fail(ctx, BG_ERR_DTYPE, "%s: %s is %s %s, want f32", op, what,
                    bg_dtype_name(x->dtype), bg_shape_str(x, s, sizeof s));
        return false;
    }
    return true;
}

bool bg_check_axis(bg_ctx *ctx, const char *op, const bg_tensor *x, int *axis) {
    int a = *axis < 0 ? *axis + x->ndim : *axis;
    if (a < 0 || a >= x->ndim) {
        char s[BG_SHAPE_STR_MAX];
        bg_ctx_fail(ctx, BG_ERR_ARG, "%s: axis %d is out of range for %s", op, *axis,
                    bg_shape_str(x, s, sizeof s));
        return false;
    }
    *axis = a;
    return true;
}

// --- backward ---------------------------------------------------------------

bg_status bg_run_nodes(bg_ctx *ctx, bg_node *tail) {
    for (bg_node *n = tail; n; n = n->prev) {
        if (!n->out->grad) continue;  // nothing flows through this node
        bg_op_table[n->op].backward(ctx, n);
        if (ctx->status != BG_OK) return ctx->status;
        release_output_grad(ctx, n);
    }
    return BG_OK;
}

static bg_status run_tape(bg_ctx *ctx) {
    ctx->tape_walked = true;
    return bg_run_nodes(ctx, ctx->tape_tail);
}

static bg_status backward_check(bg_ctx *ctx, const bg_tensor *out) {
    if (!ctx) return bg_set_error(BG_ERR_ARG, "backward: ctx is NULL");
    if (ctx->status != BG_OK) return ctx->status;
    if (!out) {
        bg_ctx_fail(ctx, BG_ERR_ARG, "backward: output is NULL");
        return ctx->status;
    }
    const char *stale = bg_tensor_stale_reason(ctx, out);
    if (stale || bg_tensor_is_foreign(ctx, out)) {
        bg_ctx_fail(ctx, BG_ERR_STATE, "backward: the output %s",
                    stale ? stale : "was built on another ctx: pass the ctx that recorded its tape");
        return ctx->status;
    }
    // Walking the tape again would add every node's gradient a second time
    // (PyTorch refuses it too unless retain_graph).
    if (ctx->tape_walked) {
        bg_ctx_fail(ctx, BG_ERR_STATE,
                    "backward: this step's tape was already walked by a backward; call bg_ctx_reset and run "
                    "the forward again (one backward per step)");
        return ctx->status;
    }
    if (!out->requires_grad) {
        bg_ctx_fail(ctx, BG_ERR_STATE,
                    "backward: output does not require grad (no input requires grad, or grad was disabled)");
        return ctx->status;
    }
    return BG_OK;
}

bg_status bg_backward(bg_ctx *ctx, bg_tensor *loss) {
    bg_status st = backward_check(ctx, loss);
    if (st != BG_OK) return st;
    if (bg_numel(loss) != 1) {
        char s[BG_SHAPE_STR_MAX];
        bg_ctx_fail(ctx, BG_ERR_SHAPE, "backward: loss must have one element, got %s",
                    bg_shape_str(loss, s, sizeof s));
        return ctx->status;
    }
    float *g = bg_grad_of(ctx, loss);
    if (!g) return ctx->status;
    g[0] += 1.0f;
    return run_tape(ctx);
}

bg_status bg_backward_with_grad(bg_ctx *ctx, bg_tensor *out, const bg_tensor *dout) {
    bg_status st = backward_check(ctx, out);
    if (st != BG_OK) return st;
    char a[BG_SHAPE_STR_MAX], b[BG_SHAPE_STR_MAX];
    if (!dout || dout->dtype != BG_DTYPE_F32 || !bg_same_shape(out, dout)) {
        bg_ctx_fail(ctx, BG_ERR_SHAPE, "backward: dout must be f32 shaped like out: out is %s, dout is %s",
                    bg_shape_str(out, a, sizeof a), dout ? bg_shape_str(dout, b, sizeof b) : "NULL");
        return ctx->status;
    }
    float *g = bg_grad_of(ctx, out);
    if (!g) return ctx->status;
    bg_tensor gv = *out->grad;
    bg_tensor *dc = bg_contiguous(ctx, (bg_tensor *)dout);
    if (!dc) return ctx->status;
    bg_kernels_get()->add(bg_f32(&gv), bg_f32(&gv), bg_f32(dc), bg_numel(out));
    return run_tape(ctx);
}
