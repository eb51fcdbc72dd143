/* ops_shape.c — the shape ops: reshape, transpose/permute, concat, slice and
 * the embedding lookup. Calls tensor/ and kernels/ only. Results are
 * contiguous (reshape of a contiguous input shares its data); every op works
 * on any dtype except embedding's weight (f32), and gradients flow for f32.
 * Element copies go through one strided 4-D loop (copy4 / add4). */
#include <stdio.h>
#include <string.h>

#include "autograd/autograd_internal.h"
#include "kernels/kernels.h"

// --- helpers ---------------------------------------------------------------------

/* NULL and failed-ctx checks for ops that take any dtype. */
static bool check_in(bg_ctx *ctx, const char *op, const bg_tensor *x, const char *what) {
    if (!ctx) {
        bg_set_error(BG_ERR_ARG, "%s: ctx is NULL", op);
        return false;
    }
    if (ctx->status != BG_OK) return false;
    if (!x) {
        bg_ctx_fail(ctx, BG_ERR_ARG, "%s: %s is NULL", op, what);
        return false;
    }
    return true;
}

/* (ndim, shape, stride) left-padded to 4 dims (size 1, stride 0). */
static void pad4(int ndim, const int64_t *shape, const int64_t *stride, int64_t sh[4],
                 int64_t st[4]) {
    for (int i = 0; i < 4; i++) {
        sh[i] = 1;
        st[i] = 0;
    }
    for (int i = 0; i < ndim; i++) {
        sh[4 - ndim + i] = shape[i];
        st[4 - ndim + i] = stride[i];
    }
}

/* Row-major strides of a shape. */
static void contig_strides(int ndim, const int64_t *shape, int64_t *stride) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= shape[i];
    }
}

/* dst[idx . ds] = src[idx . ss] over a 4-D shape; es-byte elements; strides
 * in elements. Unit inner strides copy whole rows. */
static void copy4(void *dst, const int64_t ds[4], const void *src, const int64_t ss[4],
                  const int64_t sh[4], size_t es) {
    const int64_t n3 = sh[3];
    for (int64_t i0 = 0; i0 < sh[0]; i0++)
        for (int64_t i1 = 0; i1 < sh[1]; i1++)
            for (int64_t i2 = 0; i2 < sh[2]; i2++) {
                unsigned char *d = (unsigned char *)dst + (i0 * ds[0] + i1 * ds[1] + i2 * ds[2]) * (int64_t)es;
                const unsigned char *s =
                    (const unsigned char *)src + (i0 * ss[0] + i1 * ss[1] + i2 * ss[2]) * (int64_t)es;
                if ((ds[3] == 1 && ss[3] == 1) || n3 == 1) {
                    memcpy(d, s, (size_t)n3 * es);
                } else if (es == 4) {
                    uint32_t *d4 = (uint32_t *)d;
                    const uint32_t *s4 = (const uint32_t *)s;
                    for (int64_t i3 = 0; i3 < n3; i3++) d4[i3 * ds[3]] = s4[i3 * ss[3]];
                } else {
                    for (int64_t i3 = 0; i3 < n3; i3++)
                        memcpy(d + i3 * ds[3] * (int64_t)es, s + i3 * ss[3] * (int64_t)es, es);
                }
            }
}

/* dst[idx . ds] += src[idx . ss] over a 4-D shape (f32). */
static void add4(float *dst, const int64_t ds[4], const float *src, const int64_t ss[4],
                 const int64_t sh[4]) {
    const bg_kernels *k = bg_kernels_get();
    const int64_t n3 = sh[3];
    for (int64_t i0 = 0; i0 < sh[0]; i0++)
        for (int64_t i1 = 0; i1 < sh[1]; i1++)
            for (int64_t i2 = 0; i2 < sh[2]; i2++) {
                float *d = dst + i0 * ds[0] + i1 * ds[1] + i2 * ds[2];
                const float *s = src + i0 * ss[0] + i1 * ss[1] + i2 * ss[2];
                if (ds[3] == 1 && ss[3] == 1)
                    k->add(d, d, s, n3);
                else
                    for (int64_t i3 = 0; i3 < n3; i3++) d[i3 * ds[3]] += s[i3 * ss[3]];
            }
}

static bg_tensor *out_like(bg_ctx *ctx, bg_dtype dtype, int ndim, const int64_t *shape) {
    return bg_empty(ctx, dtype, ndim, shape);
}

// --- reshape -------------------------------------------------------------------------
/* y = x with a new shape (same element order); one dim may be -1 (inferred).
 * A contiguous x shares its data with y; y still has its own node. */

bg_tensor *bg_reshape(bg_ctx *ctx, bg_tensor *x, int ndim, const int64_t *shape) {
    if (!check_in(ctx, "reshape", x, "x")) return NULL;
    if (ndim < 0 || ndim > BG_MAX_DIMS)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "reshape: ndim %d is outside 0..%d", ndim, BG_MAX_DIMS);
    if (ndim > 0 && !shape) return bg_ctx_fail(ctx, BG_ERR_ARG, "reshape: shape is NULL");
    char sx[BG_SHAPE_STR_MAX], ss[BG_SHAPE_STR_MAX];
    bg_shape_str(x, sx, sizeof sx);
    bg_tensor want = {.ndim = ndim};  // only for printing the requested shape
    int64_t known = 1;
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        want.shape[i] = shape[i];
        if (shape[i] == -1 && infer < 0) {
            infer = i;
        } else if (shape[i] == -1) {
            return bg_ctx_fail(ctx, BG_ERR_SHAPE, "reshape: only one dim may be -1: %s to %s", sx,
                               bg_shape_str(&want, ss, sizeof ss));
        } else if (shape[i] < 0) {
            return bg_ctx_fail(ctx, BG_ERR_SHAPE, "reshape: bad target dim %d (%lld): %s to %s", i,
                               (long long)shape[i], sx, bg_shape_str(&want, ss, sizeof ss));
        } else {
            known *= shape[i];
        }
    }
    bg_shape_str(&want, ss, sizeof ss);
    const int64_t numel = bg_numel(x);
    int64_t resolved[BG_MAX_DIMS];
    for (int i = 0; i < ndim; i++) resolved[i] = shape[i];
    if (infer >= 0) {
        if (known == 0 || numel % known != 0)
            return bg_ctx_fail(ctx, BG_ERR_SHAPE, "reshape: element counts differ: %s to %s", sx, ss);
        resolved[infer] = numel / known;
    } else if (known != numel) {
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "reshape: element counts differ: %s to %s", sx, ss);
    }

    bg_tensor *xc = bg_contiguous(ctx, x);
    bg_tensor *out = xc ? bg_view_reshape(ctx, xc, ndim, resolved) : NULL;
    if (!out) return NULL;
    bg_record(ctx, BG_OP_RESHAPE, out, 1, &x);
    return ctx->status == BG_OK ? out : NULL;
}

/* From y = reshape(x): dx += dy, element by element in the same order. */
void bg_op_reshape_backward(bg_ctx *ctx, bg_node *n) {
    float *dx = bg_grad_of(ctx, n->in[0]);
    if (dx) bg_kernels_get()->add(dx, dx, bg_f32(n->out->grad), bg_numel(n->out));
}

// --- permute / transpose -----------------------------------------------------------------
/* permute's order, and concat's axis. */
typedef struct permute_args {
    int perm[BG_MAX_DIMS];
} permute_args;
BG_ARGS_FIT(permute_args);
typedef struct axis_args {
    int axis;
} axis_args;
BG_ARGS_FIT(axis_args);

/* y[i_0,..] = x[i_perm^-1...]: y's dim j is x's dim perm[j]; y is a
 * contiguous copy. transpose(d0, d1) is the permute that swaps two dims.
 * i[0..3] = perm. */

bg_tensor *bg_permute(bg_ctx *ctx, bg_tensor *x, const int *perm) {
    if (!check_in(ctx, "permute", x, "x")) return NULL;
    if (!perm) return bg_ctx_fail(ctx, BG_ERR_ARG, "permute: perm is NULL");
    char sx[BG_SHAPE_STR_MAX];
    int seen = 0;
    for (int j = 0; j < x->ndim; j++) {
        if (perm[j] < 0 || perm[j] >= x->ndim || (seen >> perm[j] & 1))
            return bg_ctx_fail(ctx, BG_ERR_ARG, "permute: perm[%d] = %d is not a permutation of the dims of %s",
                               j, perm[j], bg_shape_str(x, sx, sizeof sx));
        seen |= 1 << perm[j];
    }
    int64_t oshape[BG_MAX_DIMS], ostride[BG_MAX_DIMS], vstride[BG_MAX_DIMS];
    for (int j = 0; j < x->ndim; j++) {
        oshape[j] = x->shape[perm[j]];
        vstride[j] = x->stride[perm[j]];  // x read in y's order
    }
    bg_tensor *out = out_like(ctx, x->dtype, x->ndim, oshape);
    if (!out) return NULL;
    contig_strides(x->ndim, oshape, ostride);
    int64_t sh[4], ds[4], ss[4];
    pad4(x->ndim, oshape, ostride, sh, ds);
    pad4(x->ndim, oshape, vstride, sh, ss);
    copy4(out->data, ds, x->data, ss, sh, bg_dtype_size(x->dtype));

    bg_node *n = bg_record(ctx, BG_OP_PERMUTE, out, 1, &x);
    if (n)
        for (int j = 0; j < x->ndim; j++) BG_ARGS(n, permute_args)->perm[j] = perm[j];
    return ctx->status == BG_OK ? out : NULL;
}

bg_tensor *bg_transpose(bg_ctx *ctx, bg_tensor *x, int d0, int d1) {
    if (!check_in(ctx, "transpose", x, "x")) return NULL;
    if (!bg_check_axis(ctx, "transpose", x, &d0) || !bg_check_axis(ctx, "transpose", x, &d1))
        return NULL;
    int perm[BG_MAX_DIMS] = {0, 1, 2, 3};
    perm[d0] = d1;
    perm[d1] = d0;
    return bg_permute(ctx, x, perm);
}

/* From y = permute(x): dx[x index of y's idx] += dy[idx]. */
void bg_op_permute_backward(bg_ctx *ctx, bg_node *n) {
    bg_tensor *x = n->in[0];
    float *dx = bg_grad_of(ctx, x);
    if (!dx) return;
    int64_t xstride[BG_MAX_DIMS], gstride[BG_MAX_DIMS], ostride[BG_MAX_DIMS];
    contig_strides(x->ndim, x->shape, xstride);
    contig_strides(n->out->ndim, n->out->shape, ostride);
    for (int j = 0; j < x->ndim; j++) gstride[j] = xstride[BG_ARGS(n, permute_args)->perm[j]];
    int64_t sh[4], ds[4], ss[4];
    pad4(x->ndim, n->out->shape, gstride, sh, ds);
    pad4(x->ndim, n->out->shape, ostride, sh, ss);
    add4(dx, ds, bg_f32(n->out->grad), ss, sh);
}

// --- concat -----------------------------------------------------------------------------
/* y = [x_0, x_1, ..] along axis; the x_i agree on every other dim.
 * The node's inputs are all n tensors; i[0] = axis. */

bg_tensor *bg_concat(bg_ctx *ctx, bg_tensor *const *xs, int n, int axis) {
    if (!ctx) {
        bg_set_error(BG_ERR_ARG, "concat: ctx is NULL");
        return NULL;
    }
    if (ctx->status != BG_OK) return NULL;
    if (!xs || n < 1)
        return bg_ctx_fail(ctx, BG_ERR_ARG, "concat: needs at least one input, got %d", xs ? n : 0);
    char what[32], s0[BG_SHAPE_STR_MAX], si[BG_SHAPE_STR_MAX];
    for (int i = 0; i < n; i++) {
        snprintf(what, sizeof what, "input %d", i);
        if (!check_in(ctx, "concat", xs[i], what)) return NULL;
    }
    const bg_tensor *x0 = xs[0];
    if (!bg_check_axis(ctx, "concat", x0, &axis)) return NULL;
    int64_t oshape[BG_MAX_DIMS];
    memcpy(oshape, x0->shape, sizeof oshape);
    oshape[axis] = 0;
    for (int i = 0; i < n; i++) {
        const bg_tensor *x = xs[i];
        if (x->dtype != x0->dtype)
            return bg_ctx_fail(ctx, BG_ERR_DTYPE, "concat: dtypes differ: input 0 is %s, input %d is %s",
                               bg_dtype_name(x0->dtype), i, bg_dtype_name(x->dtype));
        bool fits = x->ndim == x0->ndim;
        for (int d = 0; fits && d < x0->ndim; d++) fits = d == axis || x->shape[d] == x0->shape[d];
        if (!fits)
            return bg_ctx_fail(ctx, BG_ERR_SHAPE,
                               "concat: shapes differ outside axis %d: input 0 is %s, input %d is %s",
                               axis, bg_shape_str(x0, s0, sizeof s0), i, bg_shape_str(x, si, sizeof si));
        oshape[axis] += x->shape[axis];
    }
    bg_tensor *out = out_like(ctx, x0->dtype, x0->ndim, oshape);
    if (!out) return NULL;
    int64_t ostride[BG_MAX_DIMS];
    contig_strides(out->ndim, oshape, ostride);
    const size_t es = bg_dtype_size(x0->dtype);
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        const bg_tensor *x = xs[i];
        int64_t sh[4], ds[4], ss[4];
        pad4(x->ndim, x->shape, ostride, sh, ds);
        pad4(x->ndim, x->shape, x->stride, sh, ss);
        copy4((unsigned char *)out->data + off * ostride[axis] * (int64_t)es, ds, x->data, ss, sh, es);
        off += x->shape[axis];
    }

    bg_node *node = bg_record(ctx, BG_OP_CONCAT, out, n, xs);
    if (node) BG_ARGS(node, axis_args)->axis = axis;
    return ctx->status == BG_OK ? out : NULL;
}

/* From y = [.., x_i, ..]: dx_i += dy[.., off_i : off_i + len_i, ..]. */
void bg_op_concat_backward(bg_ctx *ctx, bg_node *n) {
    const int axis = BG_ARGS(n, axis_args)->axis;
    const bg_tensor *y = n->out;
    int64_t ostride[BG_MAX_DIMS];
    contig_strides(y->ndim, y->shape, ostride);
    const float *dy = bg_f32(y->grad);
    int64_t off = 0;
    for (int i = 0; i < n->n_in; i++) {
        bg_tensor *x = n->in[i];
        float *dx = bg_grad_of(ctx, x);
        if (dx) {
            int64_t xstride[BG_MAX_DIMS], sh[4], ds[4], ss[4];
            contig_strides(x->ndim, x->shape, xstride);
            pad4(x->ndim, x->shape, xstride, sh, ds);
            pad4(x->ndim, x->shape, ostride, sh, ss);
            add4(dx, ds, dy + off * ostride[axis], ss, sh);
        }
        off += x->shape[axis];
    }
}

// --- slice -------------------------------------------------------------------------------
/* y = x[.., start:end, ..] along axis (end exclusive), a contiguous copy;
 * the node keeps axis and start (slice_args). */
typedef struct slice_args {
    int axis;
    int64_t start;
} slice_args;
BG_ARGS_FIT(slice_args);

bg_tensor *bg_slice(bg_ctx *ctx, bg_tensor *x, int axis, int64_t start, int64_t end) {
    if (!check_in(ctx, "slice", x, "x")) return NULL;
    if (!bg_check_axis(ctx, "slice", x, &axis)) return NULL;
    char sx[BG_SHAPE_STR_MAX];
    if (start < 0 || end < start || end > x->shape[axis])
        return bg_ctx_fail(ctx, BG_ERR_ARG, "slice: [%lld, %lld) is outside axis %d of %s",
                           (long long)start, (long long)end, axis, bg_shape_str(x, sx, sizeof sx));
    int64_t oshape[BG_MAX_DIMS], ostride[BG_MAX_DIMS];
    memcpy(oshape, x->shape, sizeof oshape);
    oshape[axis] = end - start;
    bg_tensor *out = out_like(ctx, x->dtype, x->ndim, oshape);
    if (!out) return NULL;
    contig_strides(x->ndim, oshape, ostride);
    const size_t es = bg_dtype_size(x->dtype);
    int64_t sh[4], ds[4], ss[4];
    pad4(x->ndim, oshape, ostride, sh, ds);
    pad4(x->ndim, oshape, x->stride, sh, ss);
    copy4(out->data, ds, (const unsigned char *)x->data + start * x->stride[axis] * (int64_t)es, ss,
          sh, es);

    bg_node *n = bg_record(ctx, BG_OP_SLICE, out, 1, &x);
    if (n) *BG_ARGS(n, slice_args) = (slice_args){.axis = axis, .start = start};
    return ctx->status == BG_OK ? out : NULL;
}

/* From y = x[.., start:end, ..]: dx[.., start:end, ..] += dy. */
void bg_op_slice_backward(bg_ctx *ctx, bg_node *n) {
    bg_tensor *x = n->in[0];
    float *dx = bg_grad_of(ctx, x);
    if (!dx) return;
    const int axis = BG_ARGS(n, slice_args)->axis;
    int64_t xstride[BG_MAX_DIMS], ostride[BG_MAX_DIMS], sh[4], ds[4], ss[4];
    contig_strides(x->ndim, x->shape, xstride);
    contig_strides(n->out->ndim, n->out->shape, ostride);
    pad4(x->ndim, n->out->shape, xstride, sh, ds);
    pad4(x->ndim, n->out->shape, ostride, sh, ss);
    add4(dx + BG_ARGS(n, slice_args)->start * xstride[axis], ds, bg_f32(n->out->grad), ss, sh);
}

// --- embedding --------------------------------------------------------------------------
/* y[p, :] = W[ids[p], :]; W [V,D], ids i32 of any shape (up to 3 dims)
 * -> [ids.., D]. Saved: contiguous ids. */

bg_tensor *bg_embedding(bg_ctx *ctx, bg_tensor *weight, bg_tensor *ids) {
    if (!bg_check_f32(ctx, "embedding", weight, "weight") || !check_in(ctx, "embedding", ids, "ids"))
        return NULL;
    char sw[BG_SHAPE_STR_MAX], si[BG_SHAPE_STR_MAX];
    bg_shape_str(weight, sw, sizeof sw);
    bg_shape_str(ids, si, sizeof si);
    if (ids->dtype != BG_DTYPE_I32)
        return bg_ctx_fail(ctx, BG_ERR_DTYPE, "embedding: ids is %s %s, want i32",
                           bg_dtype_name(ids->dtype), si);
    if (weight->ndim != 2)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "embedding: weight must be 2-D [V,D]: weight is %s", sw);
    if (ids->ndim > BG_MAX_DIMS - 1)
        return bg_ctx_fail(ctx, BG_ERR_SHAPE,
                           "embedding: ids have %d dims, at most %d fit before D: ids is %s",
                           ids->ndim, BG_MAX_DIMS - 1, si);
    const int64_t V = weight->shape[0], D = weight->shape[1], np = bg_numel(ids);
    bg_tensor *idc = bg_contiguous(ctx, ids);
    if (!idc) return NULL;
    const int32_t *id = (const int32_t *)idc->data;
    for (int64_t p = 0; p < np; p++) {
        if (id[p] >= 0 && id[p] < V) continue;
        // Name the position as a multi-index of ids.
        char pos[BG_SHAPE_STR_MAX];
        bg_tensor at = {.ndim = ids->ndim};
        for (int64_t d = ids->ndim - 1, r = p; d >= 0; d--) {
            at.shape[d] = r % ids->shape[d];
            r /= ids->shape[d];
        }
        return bg_ctx_fail(ctx, BG_ERR_ARG, "embedding: ids%s = %d is outside [0, %lld)",
                           bg_shape_str(&at, pos, sizeof pos), (int)id[p], (long long)V);
    }
    int64_t oshape[BG_MAX_DIMS];
    memcpy(oshape, ids->shape, sizeof oshape);
    oshape[ids->ndim] = D;
    bg_tensor *out = bg_out(ctx, ids->ndim + 1, oshape);
    if (!out) return NULL;
    float *y = bg_f32(out);
    const float *w = bg_f32(weight);
    const int64_t s0 = weight->stride[0], s1 = weight->stride[1];
    for (int64_t p = 0; p < np; p++) {
        const float *row = w + (int64_t)id[p] * s0;
        if (s1 == 1)
            memcpy(y + p * D, row, sizeof *y * (size_t)D);
        else
            for (int64_t d = 0; d < D; d++) y[p * D + d] = row[d * s1];
    }

    bg_node *n = bg_record(ctx, BG_OP_EMBEDDING, out, 2, (bg_tensor *[]){weight, ids});
    if (n) n->saved[0] = idc;
    return ctx->status == BG_OK ? out : NULL;
}

/* From y[p,:] = W[ids[p],:]: dW[ids[p],:] += dy[p,:] (repeated ids add up). */
void bg_op_embedding_backward(bg_ctx *ctx, bg_node *n) {
    float *dw = bg_grad_of(ctx, n->in[0]);
    if (!dw) return;
    const bg_kernels *k = bg_kernels_get();
    const int64_t D = n->in[0]->shape[1], np = bg_numel(n->saved[0]);
    const int32_t *id = (const int32_t *)n->saved[0]->data;
    const float *dy = bg_f32(n->out->grad);
    for (int64_t p = 0; p < np; p++) k->add(dw + (int64_t)id[p] * D, dw + (int64_t)id[p] * D, dy + p * D, D);
}
