/*
 * format/gguf.h — GGUF v3 files (ggml's container, the file llama.cpp runs)
 * and the ggml encodings bitgrad writes into them: the ternary row types
 * TQ2_0 and TQ1_0, and IEEE half precision. Bytes only: what goes into a
 * language model's file is io/export.h's bg_export_gguf.
 *
 *     bg_gguf_writer *w = bg_gguf_writer_new();
 *     bg_gguf_writer_kv_str(w, "general.architecture", "bitnet");
 *     bg_gguf_writer_kv_u32(w, "bitnet.block_count", 2);
 *     int64_t dims[2] = {256, 512};                  // innermost (a row) first
 *     uint8_t *q = malloc(bg_gguf_row_bytes(BG_GGUF_TYPE_TQ2_0, 256) * 512);
 *     for (int r = 0; r < 512; r++)                  // codes: -1, 0, +1
 *         bg_gguf_pack_tq2_0(q + r * 66, codes + r * 256, 256, scale);
 *     bg_gguf_writer_tensor(w, "blk.0.ffn_up.weight", 2, dims, BG_GGUF_TYPE_TQ2_0, q);
 *     if (bg_gguf_writer_save(w, "m.gguf") != BG_OK) fprintf(stderr, "%s\n", bg_last_error());
 *     bg_gguf_writer_free(w); free(q);
 *
 * The file (ggml docs/gguf.md; all little-endian): "GGUF", version u32 3,
 * tensor count u64, key-value count u64; the key-values (a key is a string
 * = u64 length + bytes without NUL, then a u32 value type and the value; an
 * array is element type u32 + count u64 + elements); the tensor infos (name,
 * n_dims u32, dims u64 innermost first, ggml type u32, data offset u64); zero
 * padding to the alignment (32); the data section, every tensor at an offset
 * that is a multiple of 32 and followed by zeros up to the next one (the
 * last one too, as ggml's own writer does).
 */
#ifndef BG_FORMAT_GGUF_H
#define BG_FORMAT_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BG_GGUF_VERSION 3
/* Of the data section and of every tensor in it (ggml's default; what
 * "general.alignment" says when written). */
#define BG_GGUF_ALIGNMENT 32
/* Bytes of a tensor name (ggml's GGML_MAX_NAME is 64 with the NUL). */
#define BG_GGUF_NAME_MAX 63
/* Dims of a tensor (ggml's GGML_MAX_DIMS). */
#define BG_GGUF_MAX_DIMS 4
/* Elements per block of the ternary types (ggml's QK_K), and their block sizes. */
#define BG_GGUF_QK_K 256
#define BG_GGUF_TQ2_0_BYTES 66
#define BG_GGUF_TQ1_0_BYTES 54

/* The ggml tensor types bitgrad writes (their ggml ids). */
typedef enum bg_gguf_type {
    BG_GGUF_TYPE_F32 = 0,
    BG_GGUF_TYPE_F16 = 1,
    BG_GGUF_TYPE_TQ1_0 = 34,
    BG_GGUF_TYPE_TQ2_0 = 35,
} bg_gguf_type;

/* The value types of a key (GGUF's gguf_type). */
enum bg_gguf_value {
    BG_GGUF_VALUE_U8 = 0, BG_GGUF_VALUE_I8 = 1, BG_GGUF_VALUE_U16 = 2, BG_GGUF_VALUE_I16 = 3,
    BG_GGUF_VALUE_U32 = 4, BG_GGUF_VALUE_I32 = 5, BG_GGUF_VALUE_F32 = 6, BG_GGUF_VALUE_BOOL = 7,
    BG_GGUF_VALUE_STRING = 8, BG_GGUF_VALUE_ARRAY = 9, BG_GGUF_VALUE_U64 = 10, BG_GGUF_VALUE_I64 = 11,
    BG_GGUF_VALUE_F64 = 12,
};

// ---------------------------------------------------------------------------
// types

/* "F32", "F16", "TQ1_0", "TQ2_0"; NULL for any other value. */
const char *bg_gguf_type_name(bg_gguf_type type);
/* Elements per block (1 for F32 / F16, 256 for the TQ types); 0 for an
 * unknown type. */
int64_t bg_gguf_type_block(bg_gguf_type type);
/* Bytes of a row of n elements; 0 for an unknown type or an n that is not
 * a positive multiple of the block. */
size_t bg_gguf_row_bytes(bg_gguf_type type, int64_t n);

// ---------------------------------------------------------------------------
// encodings (pure functions over pointers and sizes; no errors)

/* IEEE 754 binary16 from binary32, rounding to nearest, ties to even:
 * subnormal halves below 2^-14 (down to 2^-24; below half of that, signed
 * zero), overflow to +-Inf (|x| >= 65520 rounds past 65504), Inf stays Inf,
 * NaN stays a quiet NaN with the sign and the top payload bits. */
uint16_t bg_f32_to_f16(float x);
/* Exact. */
float bg_f16_to_f32(uint16_t h);
/* n floats to halves (bg_f32_to_f16 each). */
void bg_f32_to_f16_row(uint16_t *dst, const float *src, int64_t n);

/* One row of k ternary codes (-1, 0, +1; k a multiple of 256) as k/256
 * TQ2_0 blocks of 66 bytes (ggml block_tq2_0): qs[64] then d as fp16. In
 * each group of 128 elements (32 bytes of qs), byte m holds elements m,
 * m+32, m+64, m+96 at bits 0-1, 2-3, 4-5, 6-7, each as code + 1 — the order
 * of bitgrad's "t2" packing (kernels.h). Element value = (field - 1) * d. */
void bg_gguf_pack_tq2_0(uint8_t *dst, const int8_t *codes, int64_t k, float d);
/* The same row as k/256 TQ1_0 blocks of 54 bytes (ggml block_tq1_0): qs[48],
 * qh[4], d as fp16. Trits t = code + 1, five per byte as the base-3 number
 * q = t0*81 + t1*27 + t2*9 + t3*3 + t4 (first trit most significant),
 * stored as ceil(q * 256 / 243) so that a trit is read back with a multiply
 * and a shift (ggml's quantize_row_tq1_0_ref / dequantize_row_tq1_0):
 * qs[m], m < 32: elements m + 32n of the block (n = 0..4, elements 0..159);
 * qs[32 + m], m < 16: elements 160 + m + 16n (160..239);
 * qh[j], j < 4: elements 240 + j + 4n (n = 0..3; a fifth trit 0).
 * Element value = (t - 1) * d. */
void bg_gguf_pack_tq1_0(uint8_t *dst, const int8_t *codes, int64_t k, float d);

// ---------------------------------------------------------------------------
// the writer
//
// Key-values and tensors are queued in order and written by
// bg_gguf_writer_save. Keys and values are copied; tensor data is read at
// save time, so it must stay valid until then. Every call returns BG_OK or
// BG_ERR_ARG / BG_ERR_NOMEM with one sentence in bg_last_error() ("gguf: key
// \"general.name\" is already set", "gguf: tensor \"blk.0.ffn_up.weight\":
// TQ2_0 rows hold multiples of 256 elements, dims[0] is 64").

typedef struct bg_gguf_writer bg_gguf_writer;

bg_gguf_writer *bg_gguf_writer_new(void);
/* NULL is a no-op. */
void bg_gguf_writer_free(bg_gguf_writer *w);

/* Scalars and strings (a string is UTF-8, without NUL, as given). */
bg_status bg_gguf_writer_kv_u32(bg_gguf_writer *w, const char *key, uint32_t v);
bg_status bg_gguf_writer_kv_i32(bg_gguf_writer *w, const char *key, int32_t v);
bg_status bg_gguf_writer_kv_f32(bg_gguf_writer *w, const char *key, float v);
bg_status bg_gguf_writer_kv_bool(bg_gguf_writer *w, const char *key, bool v);
bg_status bg_gguf_writer_kv_str(bg_gguf_writer *w, const char *key, const char *v);
/* Arrays of n (>= 0) elements. */
bg_status bg_gguf_writer_kv_strs(bg_gguf_writer *w, const char *key, const char *const *v, int64_t n);
bg_status bg_gguf_writer_kv_f32s(bg_gguf_writer *w, const char *key, const float *v, int64_t n);
bg_status bg_gguf_writer_kv_i32s(bg_gguf_writer *w, const char *key, const int32_t *v, int64_t n);

/* Queues a tensor: name (unique, 1..63 bytes), n_dims dims (1..4, each >=
 * 1, innermost first: a [rows, cols] matrix is {cols, rows}), its type and
 * data (rows of bg_gguf_row_bytes(type, dims[0]) bytes, dims[1] * dims[2] *
 * dims[3] of them, in the host's byte order: little-endian on x86-64). */
bg_status bg_gguf_writer_tensor(bg_gguf_writer *w, const char *name, int n_dims, const int64_t *dims,
                                bg_gguf_type type, const void *data);
/* Bytes of the data section so far (tensors padded to the alignment). */
uint64_t bg_gguf_writer_data_bytes(const bg_gguf_writer *w);

/* Writes the file atomically (format/format.h's bg_atomic_begin / _commit:
 * path.tmp-XXXXXX in the same folder, fsync, rename): on failure the
 * previous file at path is untouched, and a path that exists and is not a
 * regular file is refused (BG_ERR_IO). */
bg_status bg_gguf_writer_save(bg_gguf_writer *w, const char *path);

#ifdef __cplusplus
}
#endif
#endif /* BG_FORMAT_GGUF_H */
