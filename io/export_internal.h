/* export_internal.h — what the two language-model writers share
 * (io/export.c for bitgrad's runtime, io/gguf_export.c for llama.cpp). Not
 * installed. */
#ifndef BG_IO_EXPORT_INTERNAL_H
#define BG_IO_EXPORT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "layers/layers.h"

/* True when the projection p is what both runtimes run as ternary: a
 * BitLinear without a norm of its own, ternary weights with one scale, int8
 * per-token absmax activations. weights gets its weight spec ("ternary",
 * "int4:minmax", or "fp32" when disabled) for the refusal's sentence. */
bool bg_export_bitnet_projection(const bg_module *p, char *weights, size_t len);

#endif
