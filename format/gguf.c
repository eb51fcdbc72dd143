/* gguf.c — the GGUF v3 writer, the TQ2_0 / TQ1_0 row packers and the
 * f32 <-> f16 conversions (format/gguf.h). Calls tensor/ (errors) and the
 * atomic writer (format/atomic.c). Key-values are encoded into one byte
 * buffer as they are added; tensor data is only referenced until the save. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "format/format.h"
#include "format/gguf.h"

#define OP "gguf"

// ---------------------------------------------------------------------------
// types

const char *bg_gguf_type_name(bg_gguf_type type) {
    switch (type) {
    case BG_GGUF_TYPE_F32: return "F32";
    case BG_GGUF_TYPE_F16: return "F16";
    case BG_GGUF_TYPE_TQ1_0: return "TQ1_0";
    case BG_GGUF_TYPE_TQ2_0: return "TQ2_0";
    }
    return NULL;
}

int64_t bg_gguf_type_block(bg_gguf_type type) {
    switch (type) {
    case BG_GGUF_TYPE_F32:
    case BG_GGUF_TYPE_F16: return 1;
    case BG_GGUF_TYPE_TQ1_0:
    case BG_GGUF_TYPE_TQ2_0: return BG_GGUF_QK_K;
    }
    return 0;
}

static size_t block_bytes(bg_gguf_type type) {
    switch (type) {
    case BG_GGUF_TYPE_F32: return 4;
    case BG_GGUF_TYPE_F16: return 2;
    case BG_GGUF_TYPE_TQ1_0: return BG_GGUF_TQ1_0_BYTES;
    case BG_GGUF_TYPE_TQ2_0: return BG_GGUF_TQ2_0_BYTES;
    }
    return 0;
}

size_t bg_gguf_row_bytes(bg_gguf_type type, int64_t n) {
    int64_t b = bg_gguf_type_block(type);
    if (b == 0 || n <= 0 || n % b != 0) return 0;
    return (size_t)(n / b) * block_bytes(type);
}

// ---------------------------------------------------------------------------
// half precision

uint16_t bg_f32_to_f16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t exp = (u >> 23) & 0xffu, man = u & 0x7fffffu;
    if (exp == 0xffu)   // Inf, or NaN kept quiet with the top of its payload
        return (uint16_t)(sign | 0x7c00u | (man ? 0x200u | (man >> 13) : 0u));
    int32_t e = (int32_t)exp - 127 + 15;   // the half's biased exponent
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        // A half subnormal m * 2^-24: m = the 24-bit significand >> (14 - e).
        if (e < -10) return sign;   // below 2^-25: rounds to zero
        uint32_t sig = man | 0x800000u;
        int shift = 14 - e;
        uint32_t h = sig >> shift, rem = sig & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u))) h++;   // may become 0x400, the smallest normal
        return (uint16_t)(sign | h);
    }
    uint32_t h = (uint32_t)e << 10 | man >> 13, rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;   // a carry may reach 0x7c00 = Inf
    return (uint16_t)(sign | h);
}

float bg_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0x1fu) {
        u = sign | 0x7f800000u | man << 13;
    } else if (exp != 0) {
        u = sign | (exp + 112u) << 23 | man << 13;
    } else {
        float v = ldexpf((float)man, -24);   // zero or subnormal: exact
        return sign ? -v : v;
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

void bg_f32_to_f16_row(uint16_t *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = bg_f32_to_f16(src[i]);
}

// ---------------------------------------------------------------------------
// ternary rows

static void put_half(uint8_t *p, float d) {
    uint16_t h = bg_f32_to_f16(d);
    p[0] = (uint8_t)(h & 0xffu);
    p[1] = (uint8_t)(h >> 8);
}

static uint8_t trit(int8_t code) { return (uint8_t)(code + 1); }

void bg_gguf_pack_tq2_0(uint8_t *dst, const int8_t *codes, int64_t k, float d) {
    for (int64_t b = 0; b < k / BG_GGUF_QK_K; b++) {
        const int8_t *c = codes + b * BG_GGUF_QK_K;
        uint8_t *qs = dst + b * BG_GGUF_TQ2_0_BYTES;
        for (int g = 0; g < 2; g++)
            for (int m = 0; m < 32; m++) {
                uint8_t q = 0;
                for (int n = 0; n < 4; n++) q |= (uint8_t)((trit(c[128 * g + m + 32 * n]) & 3u) << (2 * n));
                qs[32 * g + m] = q;
            }
        put_half(qs + 64, d);
    }
}

/* ceil(q * 256 / 243): the top trit of the stored byte is (byte * 3) >> 8. */
static uint8_t tq1_byte(unsigned q) { return (uint8_t)((q * 256u + 242u) / 243u); }

void bg_gguf_pack_tq1_0(uint8_t *dst, const int8_t *codes, int64_t k, float d) {
    for (int64_t b = 0; b < k / BG_GGUF_QK_K; b++) {
        const int8_t *c = codes + b * BG_GGUF_QK_K;
        uint8_t *blk = dst + b * BG_GGUF_TQ1_0_BYTES;
        for (int m = 0; m < 32; m++) {   // elements 0..159
            unsigned q = 0;
            for (int n = 0; n < 5; n++) q = q * 3u + trit(c[m + 32 * n]);
            blk[m] = tq1_byte(q);
        }
        for (int m = 0; m < 16; m++) {   // elements 160..239
            unsigned q = 0;
            for (int n = 0; n < 5; n++) q = q * 3u + trit(c[160 + m + 16 * n]);
            blk[32 + m] = tq1_byte(q);
        }
        for (int j = 0; j < 4; j++) {   // elements 240..255, four trits and a zero
            unsigned q = 0;
            for (int n = 0; n < 4; n++) q = q * 3u + trit(c[240 + j + 4 * n]);
            blk[48 + j] = tq1_byte(q * 3u);
        }
        put_half(blk + 52, d);
    }
}

// ---------------------------------------------------------------------------
// the writer

typedef struct gtensor {
    char name[BG_GGUF_NAME_MAX + 1];
    int n_dims;
    int64_t dims[BG_GGUF_MAX_DIMS];
    bg_gguf_type type;
    const void *data;
    uint64_t bytes, offset;
} gtensor;

struct bg_gguf_writer {
    uint8_t *kv;        /* the encoded key-values */
    size_t kv_len, kv_cap;
    char **keys;
    int64_t n_kv, cap_keys;
    gtensor *t;
    int64_t n_t, cap_t;
    uint64_t data_bytes;
    bool nomem;         /* a failed append: the buffer is not a valid encoding any more */
};

static uint64_t align_up(uint64_t n) {
    return (n + BG_GGUF_ALIGNMENT - 1) / BG_GGUF_ALIGNMENT * BG_GGUF_ALIGNMENT;
}

bg_gguf_writer *bg_gguf_writer_new(void) {
    bg_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) bg_set_error(BG_ERR_NOMEM, OP ": out of memory");
    return w;
}

void bg_gguf_writer_free(bg_gguf_writer *w) {
    if (!w) return;
    for (int64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    free(w->keys);
    free(w->kv);
    free(w->t);
    free(w);
}

static bool append(bg_gguf_writer *w, const void *p, size_t n) {
    if (w->nomem) return false;
    if (w->kv_len + n > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap : 1024;
        while (cap < w->kv_len + n) cap *= 2;
        uint8_t *b = realloc(w->kv, cap);
        if (!b) {
            w->nomem = true;
            return false;
        }
        w->kv = b;
        w->kv_cap = cap;
    }
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
    return true;
}

static bool put_le(bg_gguf_writer *w, uint64_t v, int bytes) {
    uint8_t b[8];
    for (int i = 0; i < bytes; i++) b[i] = (uint8_t)(v >> (8 * i));
    return append(w, b, (size_t)bytes);
}

static bool put_str(bg_gguf_writer *w, const char *s) {
    size_t n = strlen(s);
    return put_le(w, n, 8) && append(w, s, n);
}

static uint32_t f32_bits(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

/* Checks the key (non-empty, not yet set), records it and writes it with
 * its value type; the caller appends the value. */
static bg_status begin_kv(bg_gguf_writer *w, const char *key, enum bg_gguf_value type) {
    if (!w || !key || !*key) return bg_set_error(BG_ERR_ARG, OP ": %s", !w ? "writer is NULL" : "empty key");
    for (int64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key)) return bg_set_error(BG_ERR_ARG, OP ": key \"%s\" is already set", key);
    if (w->n_kv == w->cap_keys) {
        int64_t cap = w->cap_keys ? 2 * w->cap_keys : 32;
        char **k = realloc(w->keys, sizeof *k * (size_t)cap);
        if (!k) return bg_set_error(BG_ERR_NOMEM, OP ": out of memory");
        w->keys = k;
        w->cap_keys = cap;
    }
    char *copy = strdup(key);
    if (!copy || !put_str(w, key) || !put_le(w, (uint32_t)type, 4)) {
        free(copy);
        w->nomem = true;
        return bg_set_error(BG_ERR_NOMEM, OP ": out of memory");
    }
    w->keys[w->n_kv++] = copy;
    return BG_OK;
}

static bg_status end_kv(bool ok) {
    return ok ? BG_OK : bg_set_error(BG_ERR_NOMEM, OP ": out of memory");
}

bg_status bg_gguf_writer_kv_u32(bg_gguf_writer *w, const char *key, uint32_t v) {
    bg_status s = begin_kv(w, key, BG_GGUF_VALUE_U32);
    return s != BG_OK ? s : end_kv(put_le(w, v, 4));
}

bg_status bg_gguf_writer_kv_i32(bg_gguf_writer *w, const char *key, int32_t v) {
    bg_status s = begin_kv(w, key, BG_GGUF_VALUE_I32);
    return s != BG_OK ? s : end_kv(put_le(w, (uint32_t)v, 4));
}

bg_status bg_gguf_writer_kv_f32(bg_gguf_writer *w, const char *key, float v) {
    bg_status s = begin_kv(w, key, BG_GGUF_VALUE_F32);
    return s != BG_OK ? s : end_kv(put_le(w, f32_bits(v), 4));
}

bg_status bg_gguf_writer_kv_bool(bg_gguf_writer *w, const char *key, bool v) {
    bg_status s = begin_kv(w, key, BG_GGUF_VALUE_BOOL);
    return s != BG_OK ? s : end_kv(put_le(w, v ? 1 : 0, 1));
}

bg_status bg_gguf_writer_kv_str(bg_gguf_writer *w, const char *key, const char *v) {
    if (!v) return bg_set_error(BG_ERR_ARG, OP ": key \"%s\": the string is NULL", key ? key : "(null)");
    bg_status s = begin_kv(w, key, BG_GGUF_VALUE_STRING);
    return s != BG_OK ? s : end_kv(put_str(w, v));
}

/* The array header of n elements of type; BG_ERR_ARG for a negative n or
 * a NULL array of n > 0. */
static bg_status begin_array(bg_gguf_writer *w, const char *key, enum bg_gguf_value type, const void *v, int64_t n) {
    if (n < 0 || (n > 0 && !v))
        return bg_set_error(BG_ERR_ARG, OP ": key \"%s\": %s", key ? key : "(null)",
                            n < 0 ? "negative array length" : "the array is NULL");
    bg_status s = begin_kv(w, key, BG_GGUF_VALUE_ARRAY);
    if (s != BG_OK) return s;
    return end_kv(put_le(w, (uint32_t)type, 4) && put_le(w, (uint64_t)n, 8));
}

bg_status bg_gguf_writer_kv_strs(bg_gguf_writer *w, const char *key, const char *const *v, int64_t n) {
    for (int64_t i = 0; v && i < n; i++)
        if (!v[i])
            return bg_set_error(BG_ERR_ARG, OP ": key \"%s\": string %lld is NULL", key ? key : "(null)", (long long)i);
    bg_status s = begin_array(w, key, BG_GGUF_VALUE_STRING, v, n);
    bool ok = s == BG_OK;
    for (int64_t i = 0; ok && i < n; i++) ok = put_str(w, v[i]);
    return s != BG_OK ? s : end_kv(ok);
}

bg_status bg_gguf_writer_kv_f32s(bg_gguf_writer *w, const char *key, const float *v, int64_t n) {
    bg_status s = begin_array(w, key, BG_GGUF_VALUE_F32, v, n);
    bool ok = s == BG_OK;
    for (int64_t i = 0; ok && i < n; i++) ok = put_le(w, f32_bits(v[i]), 4);
    return s != BG_OK ? s : end_kv(ok);
}

bg_status bg_gguf_writer_kv_i32s(bg_gguf_writer *w, const char *key, const int32_t *v, int64_t n) {
    bg_status s = begin_array(w, key, BG_GGUF_VALUE_I32, v, n);
    bool ok = s == BG_OK;
    for (int64_t i = 0; ok && i < n; i++) ok = put_le(w, (uint32_t)v[i], 4);
    return s != BG_OK ? s : end_kv(ok);
}

bg_status bg_gguf_writer_tensor(bg_gguf_writer *w, const char *name, int n_dims, const int64_t *dims,
                                bg_gguf_type type, const void *data) {
    if (!w || !name || !dims || !data)
        return bg_set_error(BG_ERR_ARG, OP ": tensor: %s is NULL",
                            !w ? "writer" : !name ? "name" : !dims ? "dims" : "data");
    size_t len = strlen(name);
    if (len == 0 || len > BG_GGUF_NAME_MAX)
        return bg_set_error(BG_ERR_ARG, OP ": tensor \"%s\": a name has 1 to %d bytes, this one %zu", name,
                            BG_GGUF_NAME_MAX, len);
    const char *tname = bg_gguf_type_name(type);
    if (!tname) return bg_set_error(BG_ERR_ARG, OP ": tensor \"%s\": unknown ggml type %d", name, (int)type);
    if (n_dims < 1 || n_dims > BG_GGUF_MAX_DIMS)
        return bg_set_error(BG_ERR_ARG, OP ": tensor \"%s\": %d dims (1 to %d)", name, n_dims, BG_GGUF_MAX_DIMS);
    uint64_t rows = 1;
    for (int d = 0; d < n_dims; d++) {
        if (dims[d] < 1 || dims[d] > (int64_t)1 << 40)
            return bg_set_error(BG_ERR_ARG, OP ": tensor \"%s\": dims[%d] is %lld", name, d, (long long)dims[d]);
        if (d > 0) rows *= (uint64_t)dims[d];
    }
    size_t rb = bg_gguf_row_bytes(type, dims[0]);
    if (rb == 0)
        return bg_set_error(BG_ERR_ARG, OP ": tensor \"%s\": %s rows hold multiples of %lld elements, dims[0] is %lld",
                            name, tname, (long long)bg_gguf_type_block(type), (long long)dims[0]);
    if (rows > ((uint64_t)1 << 48) / rb)
        return bg_set_error(BG_ERR_ARG, OP ": tensor \"%s\": too large", name);
    for (int64_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) return bg_set_error(BG_ERR_ARG, OP ": tensor \"%s\" is already queued", name);
    if (w->n_t == w->cap_t) {
        int64_t cap = w->cap_t ? 2 * w->cap_t : 64;
        gtensor *t = realloc(w->t, sizeof *t * (size_t)cap);
        if (!t) return bg_set_error(BG_ERR_NOMEM, OP ": out of memory");
        w->t = t;
        w->cap_t = cap;
    }
    gtensor *t = &w->t[w->n_t++];
    memset(t, 0, sizeof *t);
    memcpy(t->name, name, len + 1);
    t->n_dims = n_dims;
    for (int d = 0; d < n_dims; d++) t->dims[d] = dims[d];
    t->type = type;
    t->data = data;
    t->bytes = rows * rb;
    t->offset = w->data_bytes;
    w->data_bytes += align_up(t->bytes);
    return BG_OK;
}

uint64_t bg_gguf_writer_data_bytes(const bg_gguf_writer *w) { return w ? w->data_bytes : 0; }

static bool write_le(FILE *f, uint64_t v, int bytes) {
    uint8_t b[8];
    for (int i = 0; i < bytes; i++) b[i] = (uint8_t)(v >> (8 * i));
    return fwrite(b, 1, (size_t)bytes, f) == (size_t)bytes;
}

static bool write_zeros(FILE *f, uint64_t n) {
    static const uint8_t zeros[BG_GGUF_ALIGNMENT];
    return n == 0 || fwrite(zeros, 1, (size_t)n, f) == (size_t)n;
}

bg_status bg_gguf_writer_save(bg_gguf_writer *w, const char *path) {
    if (!w || !path) return bg_set_error(BG_ERR_ARG, OP ": %s is NULL", !w ? "writer" : "path");
    if (w->nomem) return bg_set_error(BG_ERR_NOMEM, OP ": %s: out of memory while adding key-values", path);
    bg_atomic_file af;
    bg_status s = bg_atomic_begin(&af, OP, path);
    if (s != BG_OK) return s;
    FILE *f = af.f;
    uint64_t pos = 4 + 4 + 8 + 8 + w->kv_len;
    bool ok = fwrite("GGUF", 1, 4, f) == 4 && write_le(f, BG_GGUF_VERSION, 4) && write_le(f, (uint64_t)w->n_t, 8) &&
              write_le(f, (uint64_t)w->n_kv, 8) && fwrite(w->kv, 1, w->kv_len, f) == w->kv_len;
    for (int64_t i = 0; ok && i < w->n_t; i++) {
        const gtensor *t = &w->t[i];
        size_t len = strlen(t->name);
        ok = write_le(f, len, 8) && fwrite(t->name, 1, len, f) == len && write_le(f, (uint64_t)t->n_dims, 4);
        for (int d = 0; ok && d < t->n_dims; d++) ok = write_le(f, (uint64_t)t->dims[d], 8);
        ok = ok && write_le(f, (uint64_t)t->type, 4) && write_le(f, t->offset, 8);
        pos += 8 + len + 4 + 8 * (uint64_t)t->n_dims + 4 + 8;
    }
    ok = ok && write_zeros(f, align_up(pos) - pos);
    for (int64_t i = 0; ok && i < w->n_t; i++) {
        const gtensor *t = &w->t[i];
        ok = fwrite(t->data, 1, (size_t)t->bytes, f) == (size_t)t->bytes && write_zeros(f, align_up(t->bytes) - t->bytes);
    }
    return bg_atomic_commit(&af, ok);
}
