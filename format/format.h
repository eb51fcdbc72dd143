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
#include <stdio.h>

#include "tensor/tensor.h"
#include "format/npy.h" /* NumPy .npy arrays (format/npy.h) */

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
/* Writes atomically through bg_atomic_begin / _commit (below): path.tmp-XXXXXX
 * in the same folder, fsync, rename. On failure the previous file at path is
 * untouched; a path that exists and is not a regular file is refused. */
bg_status bg_safetensors_writer_save(bg_safetensors_writer *w, const char *path);

// ---------------------------------------------------------------------------
// atomic writes (format/atomic.c): what every bitgrad writer (safetensors,
// ONNX, PNG plots) goes through.
//
//     bg_atomic_file af;
//     if (bg_atomic_begin(&af, "plot", path) != BG_OK) return bg_last_status();
//     bool ok = fwrite(data, 1, n, af.f) == n;
//     return bg_atomic_commit(&af, ok);    // fsync, rename; on failure nothing changed
//
// - An existing path that is not a regular file (a device node such as
//   /dev/null, a FIFO, a folder, a socket; a symbolic link to one) is
//   refused with BG_ERR_IO before anything is created: "OP: PATH: exists and
//   is not a regular file (a character device), refusing to replace it".
// - The bytes go to "<path>.tmp-XXXXXX" in the same folder, locked (flock)
//   until it has been renamed over path; a failure at any step unlinks it and
//   leaves path untouched.
// - Stale temporary files of the same path (a writer killed before its
//   rename) are removed when a write of that path begins: only names that are
//   exactly "<basename>.tmp-" + 6 letters or digits, regular files of this
//   user, not modified for BG_ATOMIC_STALE_SECONDS, and not locked — a
//   concurrent writer of the same path holds its lock, so its file is never
//   taken (format/atomic.c explains the choice).

/* A temporary file untouched this long (and unlocked) is stale. */
#define BG_ATOMIC_STALE_SECONDS 5

typedef struct bg_atomic_file {
    FILE *f;            /* write the contents here */
    char *tmp;          /* the temporary file's path */
    const char *path;   /* the destination (the caller's string) */
    const char *op;     /* the message prefix, e.g. "safetensors" */
    int lock_fd;        /* holds the lock until the rename */
} bg_atomic_file;

/* Checks path (above), removes its stale temporary files, creates and locks
 * the temporary file. On failure nothing exists and *af holds no file. */
bg_status bg_atomic_begin(bg_atomic_file *af, const char *op, const char *path);
/* write_ok false: the caller's writes failed (errno still tells why); the
 * temporary file is removed and BG_ERR_IO "OP: PATH: cannot write TMP: ..."
 * returned. Otherwise flushes, fsyncs, checks the path again and renames.
 * *af is released either way. */
bg_status bg_atomic_commit(bg_atomic_file *af, bool write_ok);
/* Drops the temporary file (no error is set). */
void bg_atomic_abort(bg_atomic_file *af);
/* Only the "not a regular file" check: BG_OK when path does not exist or is
 * a regular file. */
bg_status bg_atomic_check_target(const char *op, const char *path);
/* Only the stale-file removal; returns how many were removed. */
int bg_atomic_remove_stale(const char *path);

// ---------------------------------------------------------------------------
// the numbers an export may hold (doc/export-format.md): bg_export (io/)
// writes nothing else, bg_infer_load (infer/) loads nothing else.
//
// Weight and input scales lie in [BG_EXPORT_SCALE_MIN, BG_EXPORT_SCALE_MAX]:
// finite, positive, never subnormal (1e-45) nor near FLT_MAX (3e38), so 1/s,
// s_x * s_w and (code - z) * s stay finite normal floats. Float tensors
// (f32 weights, biases, norm gains) are finite with |v| <= BG_EXPORT_VALUE_MAX.

#define BG_EXPORT_SCALE_MIN 1e-30f
#define BG_EXPORT_SCALE_MAX 1e30f
#define BG_EXPORT_VALUE_MAX 1e30f

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
