/*
 * infer — the integer inference runtime: loads an export written by
 * bg_export (io/io.h) and runs it without autograd, on the integer kernels
 * of kernels/kernels.h (ternary x int8 and int8 x int8, int32 accumulation,
 * one float rescale per output).
 */
#ifndef BG_INFER_H
#define BG_INFER_H

#include "io/io.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif /* BG_INFER_H */
