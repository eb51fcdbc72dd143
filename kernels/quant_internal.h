/* quant_internal.h — what quant.c and its ISA variants share: the thread
 * chunking and the walk over row segments. Macros only, so that ISA files can
 * include it without linking ISA-compiled copies of shared functions. */
#ifndef BG_QUANT_INTERNAL_H
#define BG_QUANT_INTERNAL_H

#include <stdint.h>

/* Chunks of the flat index space: each is processed by one thread, so the
 * result never depends on the thread count (elements are independent). */
#define CHUNK ((int64_t)1 << 14)

/* Runs the body for each piece [i0, i1) of a row of `inner` elements that
 * falls in flat [a, b); `row` is the row's index. */
#define FOR_SEGMENTS(a, b, inner, ...)                                 \
    do {                                                               \
        int64_t f_ = (a);                                              \
        while (f_ < (b)) {                                             \
            int64_t row = f_ / (inner), i0 = f_ - row * (inner);       \
            int64_t i1 = (inner);                                      \
            if (row * (inner) + i1 > (b)) i1 = (b) - row * (inner);    \
            __VA_ARGS__;                                               \
            f_ = row * (inner) + i1;                                   \
        }                                                              \
    } while (0)

#endif
