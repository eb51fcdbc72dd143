/* pack.c — 4-bit packing of integer codes (format/format.h). */
#include "format/format.h"

void bg_export_pack4(uint8_t *dst, const int8_t *codes, int64_t rows, int64_t k) {
    const int64_t rb = (k + 1) / 2;
    for (int64_t r = 0; r < rows; r++) {
        const int8_t *c = codes + r * k;
        uint8_t *d = dst + r * rb;
        for (int64_t j = 0; j < rb; j++) {
            uint8_t lo = (uint8_t)c[2 * j] & 0x0f;
            uint8_t hi = 2 * j + 1 < k ? ((uint8_t)c[2 * j + 1] & 0x0f) : 0;
            d[j] = (uint8_t)(lo | hi << 4);
        }
    }
}

void bg_export_unpack4(int8_t *codes, const uint8_t *src, int64_t rows, int64_t k, bool is_signed) {
    const int64_t rb = (k + 1) / 2;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t e = 0; e < k; e++) {
            int v = (src[r * rb + e / 2] >> (4 * (e & 1))) & 0x0f;
            if (is_signed && v >= 8) v -= 16;
            codes[r * k + e] = (int8_t)v;
        }
}
