/* npy_dataset.c — datasets from arrays in memory or in NumPy .npy files
 * (io/dataset.h): u8 examples stay bytes (scaled to [0,1] per batch like the
 * IDX sets), float examples are kept as f32. */
#include <stdlib.h>
#include <string.h>

#include "format/npy.h"
#include "io/io.h"

/* Fills ds's geometry from [N, F], [N, H, W] or [N, C, H, W]. */
static bg_status geometry(const char *who, const char *what, int ndim, const int64_t *shape, bg_dataset *ds) {
    if (ndim < 2 || ndim > 4)
        return bg_set_error(BG_ERR_SHAPE, "%s: %s has %d dimensions, want [N, F], [N, H, W] or [N, C, H, W]", who, what,
                            ndim);
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 1)
            return bg_set_error(BG_ERR_SHAPE, "%s: %s has dimension %d of size %lld, want at least 1", who, what, d,
                                (long long)shape[d]);
    ds->n = shape[0];
    ds->channels = ndim == 4 ? shape[1] : 1;
    ds->height = ndim == 4 ? shape[2] : ndim == 3 ? shape[1] : 1;
    ds->width = shape[ndim - 1];
    int64_t f;
    if (__builtin_mul_overflow(ds->channels, ds->height, &f) || __builtin_mul_overflow(f, ds->width, &f) ||
        f > (INT64_C(1) << 40) / ds->n)
        return bg_set_error(BG_ERR_SHAPE, "%s: %s is too large", who, what);
    return BG_OK;
}

static bg_status check_labels(const char *who, const char *what, const int32_t *labels, int64_t n, int64_t *n_classes) {
    int32_t hi = 0;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] < 0)
            return bg_set_error(BG_ERR_FORMAT, "%s: %s has label %d at %lld, want labels >= 0", who, what, labels[i],
                                (long long)i);
        if (labels[i] > hi) hi = labels[i];
    }
    *n_classes = (int64_t)hi + 1;
    return BG_OK;
}

bg_status bg_dataset_from_arrays(bg_dtype dtype, const void *x, int ndim, const int64_t *shape,
                                 const int32_t *labels, bg_dataset **out) {
    static const char *const who = "dataset_from_arrays";
    if (!out) return bg_set_error(BG_ERR_ARG, "%s: out is NULL", who);
    *out = NULL;
    if (!x || !shape || !labels) return bg_set_error(BG_ERR_ARG, "%s: %s is NULL", who, !x ? "x" : !shape ? "shape" : "labels");
    if (dtype != BG_DTYPE_F32 && dtype != BG_DTYPE_U8)
        return bg_set_error(BG_ERR_DTYPE, "%s: x must be f32 or u8, not dtype %d", who, (int)dtype);
    bg_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) return bg_set_error(BG_ERR_NOMEM, "%s: out of memory", who);
    bg_status st = geometry(who, "x", ndim, shape, ds);
    if (st == BG_OK) st = check_labels(who, "labels", labels, ds->n, &ds->n_classes);
    if (st != BG_OK) {
        bg_dataset_free(ds);
        return st;
    }
    size_t count = (size_t)(ds->n * bg_dataset_features(ds));
    size_t bytes = count * (dtype == BG_DTYPE_F32 ? sizeof(float) : 1);
    void *data = malloc(bytes);
    ds->labels = malloc(sizeof(int32_t) * (size_t)ds->n);
    if (!data || !ds->labels) {
        free(data);
        bg_dataset_free(ds);
        return bg_set_error(BG_ERR_NOMEM, "%s: out of memory for %zu bytes", who, bytes);
    }
    memcpy(data, x, bytes);
    memcpy(ds->labels, labels, sizeof(int32_t) * (size_t)ds->n);
    if (dtype == BG_DTYPE_F32) ds->values = data;
    else ds->pixels = data;
    *out = ds;
    return BG_OK;
}

bg_status bg_dataset_from_npy(const char *x_path, const char *y_path, bg_dataset **out) {
    static const char *const who = "dataset_from_npy";
    if (!out) return bg_set_error(BG_ERR_ARG, "%s: out is NULL", who);
    *out = NULL;
    if (!x_path || !y_path) return bg_set_error(BG_ERR_ARG, "%s: path is NULL", who);
    bg_npy *x = NULL, *y = NULL;
    bg_dataset *ds = NULL;
    bg_status st = bg_npy_load(x_path, &x);
    if (st == BG_OK) st = bg_npy_load(y_path, &y);
    if (st != BG_OK) goto done;
    if (x->dtype != BG_NPY_F32 && x->dtype != BG_NPY_F64 && x->dtype != BG_NPY_U8) {
        st = bg_set_error(BG_ERR_FORMAT, "%s: %s has dtype '%s', want floats (f4, f8) or pixels (u1)", who, x_path,
                          bg_npy_dtype_str(x->dtype));
        goto done;
    }
    if (y->dtype != BG_NPY_U8 && y->dtype != BG_NPY_I32 && y->dtype != BG_NPY_I64) {
        st = bg_set_error(BG_ERR_FORMAT, "%s: %s has dtype '%s', want integer labels (u1, i4, i8)", who, y_path,
                          bg_npy_dtype_str(y->dtype));
        goto done;
    }
    if (y->ndim != 1) {
        st = bg_set_error(BG_ERR_FORMAT, "%s: %s has %d dimensions, want labels of shape [N]", who, y_path, y->ndim);
        goto done;
    }
    if (x->ndim < 1 || x->shape[0] != y->shape[0]) {
        st = bg_set_error(BG_ERR_FORMAT, "%s: %s has %lld examples but %s has %lld labels", who, x_path,
                          (long long)(x->ndim ? x->shape[0] : 0), y_path, (long long)y->shape[0]);
        goto done;
    }
    ds = calloc(1, sizeof *ds);
    if (!ds) {
        st = bg_set_error(BG_ERR_NOMEM, "%s: out of memory", who);
        goto done;
    }
    st = geometry(who, x_path, x->ndim, x->shape, ds);
    if (st != BG_OK) goto done;
    ds->labels = malloc(sizeof(int32_t) * (size_t)ds->n);
    if (!ds->labels) {
        st = bg_set_error(BG_ERR_NOMEM, "%s: out of memory", who);
        goto done;
    }
    st = bg_npy_to_i32(y, ds->labels);
    if (st == BG_OK) st = check_labels(who, y_path, ds->labels, ds->n, &ds->n_classes);
    if (st != BG_OK) goto done;
    if (x->dtype == BG_NPY_U8) {
        ds->pixels = x->data; /* taken over from x */
        x->data = NULL;
    } else if (x->dtype == BG_NPY_F32) {
        ds->values = x->data;
        x->data = NULL;
    } else {
        ds->values = malloc(sizeof(float) * (size_t)x->numel);
        if (!ds->values) {
            st = bg_set_error(BG_ERR_NOMEM, "%s: out of memory", who);
            goto done;
        }
        st = bg_npy_to_f32(x, ds->values);
    }
done:
    bg_npy_free(x);
    bg_npy_free(y);
    if (st != BG_OK) {
        bg_dataset_free(ds);
        return st;
    }
    *out = ds;
    return BG_OK;
}
