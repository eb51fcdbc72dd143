/* export_internal.h — what the two language-model writers share
 * (io/export.c for bitgrad's runtime, io/gguf_export.c for llama.cpp). Not
 * installed. */
#ifndef BG_IO_EXPORT_INTERNAL_H
#define BG_IO_EXPORT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "layers/layers.h"

/* Buffers an export owns until its file is saved (packed codes, scales,
 * converted tensors): bg_export_own gives zeroed memory recorded in the
 * list, bg_export_bufs_free frees them all. */
typedef struct bg_export_bufs {
    void **p;
    int n, cap;
} bg_export_bufs;
void *bg_export_own(bg_export_bufs *b, size_t n);
void bg_export_bufs_free(bg_export_bufs *b);

/* True when the projection p is what both runtimes run as ternary: a
 * BitLinear without a norm of its own, ternary weights with one scale, int8
 * per-token absmax activations. weights gets its weight spec ("ternary",
 * "int4:minmax", or "fp32" when disabled) for the refusal's sentence. */
bool bg_export_bitnet_projection(const bg_module *p, char *weights, size_t len);

#endif
