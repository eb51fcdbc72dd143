/* format/npy.h — NumPy .npy files (format/npy.c): bytes in, nothing above tensor/.
 *
 *     bg_npy *a;
 *     if (bg_npy_load("x.npy", &a) != BG_OK) fprintf(stderr, "%s\n", bg_last_error());
 *     float *x = malloc(sizeof(float) * a->numel);
 *     bg_npy_to_f32(a, x);                 // any supported dtype, converted
 *     bg_npy_free(a);
 *
 * The reader takes what numpy.save writes: the magic "\x93NUMPY", versions
 * 1.0, 2.0 and 3.0, a header dict with exactly the keys 'descr',
 * 'fortran_order' and 'shape', C order, and the little-endian dtypes <f4, <f8,
 * |u1 (or <u1), <i4 and <i8. Everything else (Fortran order, big-endian,
 * other dtypes, a header that is not that dict, more than 8 dimensions, a
 * shape whose size overflows or disagrees with the file's length) gives
 * BG_ERR_FORMAT and one sentence naming the path; a missing file gives
 * BG_ERR_IO. The header is never trusted: the data is allocated only once
 * the file is known to hold exactly the bytes the shape announces.
 */
#ifndef BG_FORMAT_NPY_H
#define BG_FORMAT_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BG_NPY_MAX_DIMS 8
/* The longest header dict accepted (numpy's own reader stops at 10000). */
#define BG_NPY_MAX_HEADER 65536

typedef enum bg_npy_dtype {
    BG_NPY_F32 = 0, /* '<f4' */
    BG_NPY_F64,     /* '<f8' */
    BG_NPY_U8,      /* '|u1' or '<u1' */
    BG_NPY_I32,     /* '<i4' */
    BG_NPY_I64,     /* '<i8' */
} bg_npy_dtype;

/* Fields are read-only. */
typedef struct bg_npy {
    bg_npy_dtype dtype;
    int ndim;                         /* 0..BG_NPY_MAX_DIMS (0: a scalar) */
    int64_t shape[BG_NPY_MAX_DIMS];
    int64_t numel;                    /* product of shape (1 for a scalar) */
    size_t itemsize;                  /* bytes per element */
    void *data;                       /* numel * itemsize bytes, C order, little-endian */
    char *path;                       /* the path it was loaded from (for messages) */
} bg_npy;

/* Reads and validates the whole file. On failure *out is NULL and
 * bg_last_error() names the path. Free with bg_npy_free (NULL is a no-op). */
bg_status bg_npy_load(const char *path, bg_npy **out);
void bg_npy_free(bg_npy *a);

/* '<f4', '<f8', '|u1', '<i4', '<i8'; "?" when unknown. */
const char *bg_npy_dtype_str(bg_npy_dtype dtype);

/* The numel elements as f32 into dst (f64 rounded, integers converted,
 * u8 as 0..255, not scaled). */
bg_status bg_npy_to_f32(const bg_npy *a, float *dst);
/* The numel elements as i32 into dst: integer dtypes only (BG_ERR_DTYPE
 * for floats); an i64 value outside the i32 range gives BG_ERR_FORMAT. */
bg_status bg_npy_to_i32(const bg_npy *a, int32_t *dst);

#ifdef __cplusplus
}
#endif
#endif /* BG_FORMAT_NPY_H */
