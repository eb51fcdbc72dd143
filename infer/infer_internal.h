/* infer_internal.h — what the two runtimes' loaders share (infer.c, lm.c):
 * zeroed aligned buffers, shape text for messages and the export header's
 * check. Not installed. */
#ifndef BG_INFER_INTERNAL_H
#define BG_INFER_INTERNAL_H

#include <stdio.h>
#include <string.h>

#include "format/format.h"

/* n bytes (rounded up to 64), zeroed and 64-byte aligned; NULL when out of
 * memory. Freed with bg_aligned_free. */
static inline void *bg_infer_zalloc(size_t n) {
    n = (n + 63) / 64 * 64;
    void *p = bg_aligned_alloc(n ? n : 64);
    if (p) memset(p, 0, n ? n : 64);
    return p;
}

/* "[2,3]" into buf. */
static inline const char *bg_infer_shape_text(int ndim, const int64_t *s, char *buf, size_t len) {
    size_t k = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, i ? ",%lld" : "%lld", (long long)s[i]);
    if (k < len) snprintf(buf + k, len - k, "]");
    return buf;
}

/* The tensor called name of st, its index marked in used[] (every tensor of
 * an export must be read: one nothing accounts for is refused); false when
 * there is none. */
static inline bool bg_infer_find_tensor(const bg_safetensors *st, bool *used, const char *name, bg_tensor *v) {
    for (int i = 0, n = bg_safetensors_count(st); i < n; i++)
        if (!strcmp(bg_safetensors_name(st, i), name)) {
            used[i] = true;
            return bg_safetensors_get(st, name, v) == BG_OK;
        }
    return false;
}

/* True when v is dt with exactly this shape; else why gets "NAME is u8
 * [32,32], want u8 [64,32]". */
static inline bool bg_infer_tensor_fits(const bg_tensor *v, const char *name, bg_dtype dt, int ndim,
                                        const int64_t *shape, char *why, size_t len) {
    bool ok = v->dtype == dt && v->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = v->shape[i] == shape[i];
    if (!ok) {
        char a[64], b[64];
        snprintf(why, len, "%s is %s %s, want %s %s", name, bg_dtype_name(v->dtype),
                 bg_infer_shape_text(v->ndim, v->shape, a, sizeof a), bg_dtype_name(dt),
                 bg_infer_shape_text(ndim, shape, b, sizeof b));
    }
    return ok;
}

/* Why st is not a bitgrad export this runtime reads ("format" and
 * "version" of its metadata), written into why; false when it is one. */
static inline bool bg_infer_bad_header(const bg_safetensors *st, char *why, size_t len) {
    const char *fmt = bg_safetensors_metadata(st, "format"), *ver = bg_safetensors_metadata(st, "version");
    if (!fmt || strcmp(fmt, "bitgrad-export") != 0)
        snprintf(why, len, "not a bitgrad export (metadata \"format\" is %s%s%s, want \"bitgrad-export\")",
                 fmt ? "\"" : "", fmt ? fmt : "missing", fmt ? "\"" : "");
    else if (!ver || strcmp(ver, "1") != 0)
        snprintf(why, len, "unsupported export version %s (this runtime reads version 1)", ver ? ver : "(missing)");
    else
        return false;
    return true;
}

#endif
