/*
 * format — bytes in and out, nothing above tensor/: safetensors files (the
 * container of checkpoints, exports and reference tensors) and the bit
 * packing of low-bit codes. The inference runtime (infer/) reads exports
 * through this layer alone.
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
#ifndef BG_FORMAT_H
#define BG_FORMAT_H

#include <stdbool.h>
#include <stdint.h>

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
// 4-bit packing (format/pack.c)

/* The 4-bit packing of the export ("i4" / "u4"): row r of k codes becomes
 * (k+1)/2 bytes, code 2j in bits 0-3 and code 2j+1 in bits 4-7 of byte j
 * (two's complement for signed codes; a missing last code is 0). */
void bg_export_pack4(uint8_t *dst, const int8_t *codes, int64_t rows, int64_t k);
/* The inverse; is_signed sign-extends each nibble. */
void bg_export_unpack4(int8_t *codes, const uint8_t *src, int64_t rows, int64_t k, bool is_signed);

#ifdef __cplusplus
}
#endif
#endif /* BG_FORMAT_H */
