/* tensor.c — bg_tensor: shapes, persistent and arena tensors, views, copies.
 * Calls nothing above tensor/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/tensor_internal.h"

size_t bg_dtype_size(bg_dtype dtype) {
    static const size_t sizes[BG_DTYPE_COUNT] = {
        [BG_DTYPE_F32] = 4, [BG_DTYPE_I32] = 4, [BG_DTYPE_I8] = 1, [BG_DTYPE_U8] = 1,
    };
    return (unsigned)dtype < BG_DTYPE_COUNT ? sizes[dtype] : 0;
}

const char *bg_dtype_name(bg_dtype dtype) {
    static const char *const names[BG_DTYPE_COUNT] = {
        [BG_DTYPE_F32] = "f32", [BG_DTYPE_I32] = "i32", [BG_DTYPE_I8] = "i8", [BG_DTYPE_U8] = "u8",
    };
    return (unsigned)dtype < BG_DTYPE_COUNT ? names[dtype] : "unknown";
}

int64_t bg_numel(const bg_tensor *t) {
    if (!t) return 0;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t bg_nbytes(const bg_tensor *t) { return t ? (size_t)bg_numel(t) * bg_dtype_size(t->dtype) : 0; }

bool bg_is_contiguous(const bg_tensor *t) {
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != expect) return false;
        expect *= t->shape[i];
    }
    return true;
}

bool bg_same_shape(const bg_tensor *a, const bg_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

char *bg_shape_str(const bg_tensor *t, char *buf, size_t len) {
    size_t off = 0;
    off += (size_t)snprintf(buf + off, len - off, "[");
    for (int i = 0; t && i < t->ndim && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, i ? ",%lld" : "%lld", (long long)t->shape[i]);
    if (off < len) snprintf(buf + off, len - off, "]");
    return buf;
}

static void set_contiguous_strides(bg_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        t->stride[i] = s;
        s *= t->shape[i];
    }
}

/* Validates (ndim, shape) and fills the header; returns a status. */
static bg_status header_init(bg_tensor *t, bg_dtype dtype, int ndim, const int64_t *shape,
                             const char *who) {
    if ((unsigned)dtype >= BG_DTYPE_COUNT)
        return bg_set_error(BG_ERR_DTYPE, "%s: unknown dtype %d", who, (int)dtype);
    if (ndim < 0 || ndim > BG_MAX_DIMS)
        return bg_set_error(BG_ERR_SHAPE, "%s: ndim %d is outside 0..%d", who, ndim, BG_MAX_DIMS);
    if (ndim > 0 && !shape) return bg_set_error(BG_ERR_ARG, "%s: shape is NULL", who);
    memset(t, 0, sizeof *t);
    t->dtype = dtype;
    t->ndim = ndim;
    // The product of the non-zero dimensions bounds the element count and
    // every stride, so neither can overflow.
    int64_t extent = 1;
    bool too_big = false;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return bg_set_error(BG_ERR_SHAPE, "%s: dimension %d is negative (%lld)", who, i,
                                (long long)shape[i]);
        t->shape[i] = shape[i];
        if (shape[i] > 0)
            too_big |= __builtin_mul_overflow(extent, shape[i], &extent) || extent > BG_MAX_NUMEL;
    }
    if (too_big) {
        char a[BG_SHAPE_STR_MAX];
        return bg_set_error(BG_ERR_SHAPE, "%s: shape %s has more than 2^48 elements", who,
                            bg_shape_str(t, a, sizeof a));
    }
    set_contiguous_strides(t);
    return BG_OK;
}

bg_status bg_shape_check(int ndim, const int64_t *shape, const char *who, int64_t *numel) {
    bg_tensor h;
    bg_status s = header_init(&h, BG_DTYPE_F32, ndim, shape, who ? who : "shape_check");
    if (numel) *numel = s == BG_OK ? bg_numel(&h) : 0;
    return s;
}

// --- persistent tensors -------------------------------------------------------

bg_tensor *bg_tensor_new(bg_dtype dtype, int ndim, const int64_t *shape) {
    bg_tensor h;
    if (header_init(&h, dtype, ndim, shape, "tensor_new") != BG_OK) return NULL;
    // Data follows the header, rounded to the alignment: one allocation.
    size_t hdr = (sizeof(bg_tensor) + BG_ALIGN - 1) / BG_ALIGN * BG_ALIGN;
    bg_tensor *t = bg_aligned_alloc(hdr + bg_nbytes(&h));
    if (!t) {
        bg_set_error(BG_ERR_NOMEM, "tensor_new: cannot allocate %zu bytes", bg_nbytes(&h));
        return NULL;
    }
    *t = h;
    t->data = (unsigned char *)t + hdr;
    t->persistent = true;
    memset(t->data, 0, bg_nbytes(t));
    return t;
}

bg_tensor *bg_tensor_wrap(bg_dtype dtype, int ndim, const int64_t *shape, void *data) {
    bg_tensor h;
    if (header_init(&h, dtype, ndim, shape, "tensor_wrap") != BG_OK) return NULL;
    if (!data && bg_numel(&h) > 0) {
        char a[BG_SHAPE_STR_MAX];
        bg_set_error(BG_ERR_ARG, "tensor_wrap: data is NULL for a %s tensor", bg_shape_str(&h, a, sizeof a));
        return NULL;
    }
    bg_tensor *t = bg_aligned_alloc(sizeof *t);
    if (!t) {
        bg_set_error(BG_ERR_NOMEM, "tensor_wrap: out of memory");
        return NULL;
    }
    *t = h;
    t->data = data;
    t->persistent = true;
    return t;
}

void bg_tensor_free(bg_tensor *t) {
    if (!t) return;
    if (t->owns_grad) bg_tensor_free(t->grad);
    bg_aligned_free(t);
}

bg_status bg_set_requires_grad(bg_tensor *t, bool requires_grad) {
    if (!t) return bg_set_error(BG_ERR_ARG, "set_requires_grad: tensor is NULL");
    if (requires_grad && t->dtype != BG_DTYPE_F32)
        return bg_set_error(BG_ERR_DTYPE, "set_requires_grad: only f32 tensors have gradients, not %s",
                            bg_dtype_name(t->dtype));
    t->requires_grad = requires_grad;
    if (requires_grad && t->persistent && !t->grad) {
        t->grad = bg_tensor_new(BG_DTYPE_F32, t->ndim, t->shape);
        if (!t->grad) return BG_ERR_NOMEM;
        t->owns_grad = true;
    }
    return BG_OK;
}

// --- arena tensors ---------------------------------------------------------------

static bg_tensor *arena_tensor(bg_ctx *ctx, bg_dtype dtype, int ndim, const int64_t *shape,
                               const char *who) {
    if (!ctx) {
        bg_set_error(BG_ERR_ARG, "%s: ctx is NULL", who);
        return NULL;
    }
    if (ctx->status != BG_OK) return NULL;
    bg_tensor h;
    if (header_init(&h, dtype, ndim, shape, who) != BG_OK)
        return bg_ctx_fail(ctx, bg_last_status(), "%s", bg_last_error());
    bg_tensor *t = bg_ctx_alloc(ctx, sizeof *t);
    void *data = bg_ctx_alloc(ctx, bg_nbytes(&h));
    if (!t || !data) return NULL;
    *t = h;
    t->data = data;
    t->arena_tag = ctx->tag;
    return t;
}

bg_tensor *bg_empty(bg_ctx *ctx, bg_dtype dtype, int ndim, const int64_t *shape) {
    return arena_tensor(ctx, dtype, ndim, shape, "empty");
}

bg_tensor *bg_zeros(bg_ctx *ctx, bg_dtype dtype, int ndim, const int64_t *shape) {
    bg_tensor *t = arena_tensor(ctx, dtype, ndim, shape, "zeros");
    if (t) memset(t->data, 0, bg_nbytes(t));
    return t;
}

bg_tensor *bg_full(bg_ctx *ctx, int ndim, const int64_t *shape, float value) {
    bg_tensor *t = arena_tensor(ctx, BG_DTYPE_F32, ndim, shape, "full");
    if (!t) return NULL;
    float *p = bg_f32(t);
    for (int64_t i = 0, n = bg_numel(t); i < n; i++) p[i] = value;
    return t;
}

bg_tensor *bg_from_data(bg_ctx *ctx, bg_dtype dtype, int ndim, const int64_t *shape,
                        const void *data) {
    bg_tensor *t = arena_tensor(ctx, dtype, ndim, shape, "from_data");
    if (!t) return NULL;
    if (!data) return bg_ctx_fail(ctx, BG_ERR_ARG, "from_data: data is NULL");
    memcpy(t->data, data, bg_nbytes(t));
    return t;
}

bg_tensor *bg_empty_like(bg_ctx *ctx, const bg_tensor *t) {
    if (!t) return bg_ctx_fail(ctx, BG_ERR_ARG, "empty_like: tensor is NULL");
    return arena_tensor(ctx, t->dtype, t->ndim, t->shape, "empty_like");
}

// --- copies -----------------------------------------------------------------------

bg_status bg_copy(bg_tensor *dst, const bg_tensor *src) {
    if (!dst || !src) return bg_set_error(BG_ERR_ARG, "copy: tensor is NULL");
    char a[BG_SHAPE_STR_MAX], b[BG_SHAPE_STR_MAX];
    if (!bg_same_shape(dst, src))
        return bg_set_error(BG_ERR_SHAPE, "copy: shapes differ: dst is %s, src is %s",
                            bg_shape_str(dst, a, sizeof a), bg_shape_str(src, b, sizeof b));
    if (dst->dtype != src->dtype)
        return bg_set_error(BG_ERR_DTYPE, "copy: dtypes differ: dst is %s, src is %s",
                            bg_dtype_name(dst->dtype), bg_dtype_name(src->dtype));
    size_t es = bg_dtype_size(src->dtype);
    if (bg_is_contiguous(dst) && bg_is_contiguous(src)) {
        memmove(dst->data, src->data, bg_nbytes(src));
        return BG_OK;
    }
    // Pad to 4 dims so one loop nest covers every rank.
    int64_t sh[4] = {1, 1, 1, 1}, ds[4] = {0}, ss[4] = {0};
    int off = 4 - src->ndim;
    for (int i = 0; i < src->ndim; i++) {
        sh[off + i] = src->shape[i];
        ds[off + i] = dst->stride[i];
        ss[off + i] = src->stride[i];
    }
    unsigned char *d = dst->data;
    const unsigned char *s = src->data;
    for (int64_t i0 = 0; i0 < sh[0]; i0++)
        for (int64_t i1 = 0; i1 < sh[1]; i1++)
            for (int64_t i2 = 0; i2 < sh[2]; i2++)
                for (int64_t i3 = 0; i3 < sh[3]; i3++) {
                    int64_t so = i0 * ss[0] + i1 * ss[1] + i2 * ss[2] + i3 * ss[3];
                    int64_t dof = i0 * ds[0] + i1 * ds[1] + i2 * ds[2] + i3 * ds[3];
                    memcpy(d + dof * (int64_t)es, s + so * (int64_t)es, es);
                }
    return BG_OK;
}

bg_tensor *bg_contiguous(bg_ctx *ctx, bg_tensor *t) {
    if (!ctx || ctx->status != BG_OK) return NULL;
    if (!t) return bg_ctx_fail(ctx, BG_ERR_ARG, "contiguous: tensor is NULL");
    if (bg_is_contiguous(t)) return t;
    bg_tensor *c = arena_tensor(ctx, t->dtype, t->ndim, t->shape, "contiguous");
    if (c) bg_copy(c, t);
    return c;
}

// --- views --------------------------------------------------------------------------

static bg_tensor *view_of(bg_ctx *ctx, const bg_tensor *t, const char *who) {
    if (!ctx || ctx->status != BG_OK) return NULL;
    if (!t) return bg_ctx_fail(ctx, BG_ERR_ARG, "%s: tensor is NULL", who);
    bg_tensor *v = bg_ctx_alloc(ctx, sizeof *v);
    if (!v) return NULL;
    *v = *t;
    v->grad = NULL;
    v->node = NULL;
    v->persistent = false;
    v->requires_grad = false;
    v->arena_tag = ctx->tag;
    return v;
}

bg_tensor *bg_view_reshape(bg_ctx *ctx, bg_tensor *t, int ndim, const int64_t *shape) {
    bg_tensor *v = view_of(ctx, t, "reshape");
    if (!v) return NULL;
    char a[BG_SHAPE_STR_MAX];
    if (!bg_is_contiguous(t))
        return bg_ctx_fail(ctx, BG_ERR_ARG, "reshape: tensor %s is not contiguous",
                           bg_shape_str(t, a, sizeof a));
    bg_tensor h;
    if (header_init(&h, t->dtype, ndim, shape, "reshape") != BG_OK)
        return bg_ctx_fail(ctx, bg_last_status(), "%s", bg_last_error());
    if (bg_numel(&h) != bg_numel(t)) {
        char b[BG_SHAPE_STR_MAX];
        return bg_ctx_fail(ctx, BG_ERR_SHAPE, "reshape: element counts differ: %s to %s",
                           bg_shape_str(t, a, sizeof a), bg_shape_str(&h, b, sizeof b));
    }
    v->ndim = h.ndim;
    memcpy(v->shape, h.shape, sizeof h.shape);
    memcpy(v->stride, h.stride, sizeof h.stride);
    return v;
}

bg_tensor *bg_view_permute(bg_ctx *ctx, bg_tensor *t, const int *perm) {
    bg_tensor *v = view_of(ctx, t, "permute");
    if (!v) return NULL;
    if (!perm) return bg_ctx_fail(ctx, BG_ERR_ARG, "permute: perm is NULL");
    int seen = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (perm[i] < 0 || perm[i] >= t->ndim || (seen >> perm[i] & 1))
            return bg_ctx_fail(ctx, BG_ERR_ARG, "permute: perm[%d] = %d is not a permutation of %d dims",
                               i, perm[i], t->ndim);
        seen |= 1 << perm[i];
        v->shape[i] = t->shape[perm[i]];
        v->stride[i] = t->stride[perm[i]];
    }
    return v;
}

bg_tensor *bg_view_transpose(bg_ctx *ctx, bg_tensor *t, int d0, int d1) {
    if (t && (d0 < 0 || d0 >= t->ndim || d1 < 0 || d1 >= t->ndim))
        return bg_ctx_fail(ctx, BG_ERR_ARG, "transpose: dims %d,%d out of range for %d dims", d0, d1,
                           t->ndim);
    int perm[BG_MAX_DIMS] = {0, 1, 2, 3};
    if (t) {
        perm[d0] = d1;
        perm[d1] = d0;
    }
    return bg_view_permute(ctx, t, perm);
}

bg_tensor *bg_view_narrow(bg_ctx *ctx, bg_tensor *t, int dim, int64_t start, int64_t len) {
    bg_tensor *v = view_of(ctx, t, "narrow");
    if (!v) return NULL;
    char a[BG_SHAPE_STR_MAX];
    if (dim < 0 || dim >= t->ndim)
        return bg_ctx_fail(ctx, BG_ERR_ARG, "narrow: dim %d out of range for %s", dim,
                           bg_shape_str(t, a, sizeof a));
    if (start < 0 || len < 0 || start + len > t->shape[dim])
        return bg_ctx_fail(ctx, BG_ERR_ARG, "narrow: [%lld, %lld) is outside dim %d of %s",
                           (long long)start, (long long)(start + len), dim,
                           bg_shape_str(t, a, sizeof a));
    v->shape[dim] = len;
    v->data = (unsigned char *)t->data + start * t->stride[dim] * (int64_t)bg_dtype_size(t->dtype);
    return v;
}

float bg_get_f32(const bg_tensor *t, const int64_t *idx) {
    int64_t off = 0;
    for (int i = 0; i < t->ndim; i++) off += idx[i] * t->stride[i];
    switch (t->dtype) {
    case BG_DTYPE_F32: return ((const float *)t->data)[off];
    case BG_DTYPE_I32: return (float)((const int32_t *)t->data)[off];
    case BG_DTYPE_I8: return (float)((const int8_t *)t->data)[off];
    case BG_DTYPE_U8: return (float)((const uint8_t *)t->data)[off];
    default: return 0.0f;
    }
}
