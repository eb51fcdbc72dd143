/* npy.c — the NumPy .npy reader (format/npy.h). The header dict is parsed
 * strictly (the Python literal numpy.save writes, nothing more) and every
 * size is checked against the file's length before anything is allocated. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "format/npy.h"

#define WHO "npy"
#define DTYPES "little-endian f4, f8, u1, i4, i8"

const char *bg_npy_dtype_str(bg_npy_dtype dtype) {
    switch (dtype) {
    case BG_NPY_F32: return "<f4";
    case BG_NPY_F64: return "<f8";
    case BG_NPY_U8: return "|u1";
    case BG_NPY_I32: return "<i4";
    case BG_NPY_I64: return "<i8";
    }
    return "?";
}

void bg_npy_free(bg_npy *a) {
    if (!a) return;
    free(a->data);
    free(a->path);
    free(a);
}

// --- the header dict -------------------------------------------------------------

typedef struct hdr {
    const char *s;
    size_t n, i;
    const char *path;
} hdr;

static void skip_ws(hdr *h) {
    while (h->i < h->n && (h->s[h->i] == ' ' || h->s[h->i] == '\t')) h->i++;
}

static bg_status bad(const hdr *h, const char *expected) {
    return bg_set_error(BG_ERR_FORMAT, WHO ": %s: bad header: expected %s at byte %zu of the dict", h->path,
                        expected, h->i);
}

static bool eat(hdr *h, char c) {
    skip_ws(h);
    if (h->i < h->n && h->s[h->i] == c) {
        h->i++;
        return true;
    }
    return false;
}

/* A quoted string without escapes, at most cap-1 bytes. */
static bg_status quoted(hdr *h, char *dst, size_t cap, const char *what) {
    skip_ws(h);
    if (h->i >= h->n || (h->s[h->i] != '\'' && h->s[h->i] != '"')) return bad(h, what);
    char q = h->s[h->i++];
    size_t len = 0;
    while (h->i < h->n && h->s[h->i] != q) {
        char c = h->s[h->i];
        if (c == '\\' || c == '\n' || (unsigned char)c < 0x20 || len + 1 >= cap) return bad(h, what);
        dst[len++] = c;
        h->i++;
    }
    if (h->i >= h->n) return bad(h, what);
    h->i++;
    dst[len] = '\0';
    return BG_OK;
}

static bool word(hdr *h, const char *w) {
    size_t len = strlen(w);
    if (h->n - h->i >= len && memcmp(h->s + h->i, w, len) == 0) {
        h->i += len;
        return true;
    }
    return false;
}

/* A Python tuple of non-negative ints: (), (3,), (3, 4) or (3, 4,). */
static bg_status tuple(hdr *h, int *ndim, int64_t *shape) {
    if (!eat(h, '(')) return bad(h, "a tuple for 'shape'");
    *ndim = 0;
    bool comma = false;
    for (;;) {
        skip_ws(h);
        if (eat(h, ')')) break;
        if (*ndim > 0 && !comma) return bad(h, "',' or ')' in 'shape'");
        if (h->i >= h->n || h->s[h->i] < '0' || h->s[h->i] > '9') return bad(h, "a non-negative integer in 'shape'");
        if (*ndim == BG_NPY_MAX_DIMS)
            return bg_set_error(BG_ERR_FORMAT, WHO ": %s: shape has more than %d dimensions", h->path,
                                BG_NPY_MAX_DIMS);
        int64_t v = 0;
        int digits = 0;
        size_t start = h->i;
        while (h->i < h->n && h->s[h->i] >= '0' && h->s[h->i] <= '9') {
            if (++digits > 18) return bad(h, "a dimension below 10^18 in 'shape'");
            v = v * 10 + (h->s[h->i++] - '0');
        }
        if (digits > 1 && h->s[start] == '0') {
            h->i = start;
            return bad(h, "an integer without leading zeros in 'shape'");
        }
        shape[(*ndim)++] = v;
        comma = eat(h, ',');
    }
    if (*ndim == 1 && !comma) return bad(h, "',' after the only dimension of 'shape'");
    return BG_OK;
}

/* Parses {'descr': .., 'fortran_order': .., 'shape': (..), } padded with
 * spaces and ending with '\n'. */
static bg_status parse_dict(hdr *h, char *descr, size_t descr_cap, bool *fortran, int *ndim, int64_t *shape) {
    if (h->n == 0 || h->s[h->n - 1] != '\n') {
        h->i = h->n;
        return bad(h, "'\\n' as the last byte");
    }
    h->n--;
    if (!eat(h, '{')) return bad(h, "'{'");
    bool seen[3] = {false, false, false};
    for (;;) {
        skip_ws(h);
        if (eat(h, '}')) break;
        char key[32];
        bg_status st = quoted(h, key, sizeof key, "a quoted key or '}'");
        if (st != BG_OK) return st;
        int k = strcmp(key, "descr") == 0 ? 0 : strcmp(key, "fortran_order") == 0 ? 1 : strcmp(key, "shape") == 0 ? 2 : -1;
        if (k < 0)
            return bg_set_error(BG_ERR_FORMAT, WHO ": %s: bad header: unknown key '%s' (want 'descr', 'fortran_order', 'shape')",
                                h->path, key);
        if (seen[k]) return bg_set_error(BG_ERR_FORMAT, WHO ": %s: bad header: key '%s' appears twice", h->path, key);
        seen[k] = true;
        if (!eat(h, ':')) return bad(h, "':'");
        skip_ws(h);
        if (k == 0) {
            st = quoted(h, descr, descr_cap, "a dtype string for 'descr'");
        } else if (k == 1) {
            if (word(h, "True")) *fortran = true;
            else if (word(h, "False")) *fortran = false;
            else st = bad(h, "True or False for 'fortran_order'");
        } else {
            st = tuple(h, ndim, shape);
        }
        if (st != BG_OK) return st;
        if (!eat(h, ',')) {
            if (eat(h, '}')) break;
            return bad(h, "',' or '}'");
        }
    }
    skip_ws(h);
    if (h->i != h->n) return bad(h, "only spaces after '}'");
    for (int k = 0; k < 3; k++)
        if (!seen[k])
            return bg_set_error(BG_ERR_FORMAT, WHO ": %s: bad header: key '%s' is missing", h->path,
                                k == 0 ? "descr" : k == 1 ? "fortran_order" : "shape");
    return BG_OK;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t len = (size_t)snprintf(buf, cap, "(");
    for (int d = 0; d < ndim && len < cap; d++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (len < cap) snprintf(buf + len, cap - len, ndim == 1 ? ",)" : ")");
}

static bg_status parse_descr(const char *path, const char *descr, bg_npy_dtype *dtype, size_t *itemsize) {
    static const struct {
        const char *name;
        bg_npy_dtype dtype;
        size_t size;
    } known[] = {{"<f4", BG_NPY_F32, 4}, {"<f8", BG_NPY_F64, 8}, {"|u1", BG_NPY_U8, 1},
                 {"<u1", BG_NPY_U8, 1},  {"<i4", BG_NPY_I32, 4}, {"<i8", BG_NPY_I64, 8}};
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
        if (strcmp(descr, known[k].name) == 0) {
            *dtype = known[k].dtype;
            *itemsize = known[k].size;
            return BG_OK;
        }
    if (descr[0] == '>')
        return bg_set_error(BG_ERR_FORMAT, WHO ": %s: dtype '%s' is big-endian (this reader takes " DTYPES ")", path,
                            descr);
    return bg_set_error(BG_ERR_FORMAT, WHO ": %s: dtype '%s' is not supported (this reader takes " DTYPES ")", path,
                        descr);
}

// --- the file ----------------------------------------------------------------------

static bg_status load(FILE *f, const char *path, bg_npy *a) {
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0)
        return bg_set_error(BG_ERR_IO, WHO ": %s: cannot stat (%s)", path, strerror(errno));
    const int64_t file_size = (int64_t)sb.st_size;
    unsigned char pre[12];
    size_t got = fread(pre, 1, 10, f);
    if (got < 8 || memcmp(pre, "\x93NUMPY", 6) != 0)
        return bg_set_error(BG_ERR_FORMAT, WHO ": %s: not a .npy file (the magic \\x93NUMPY is missing)", path);
    int major = pre[6], minor = pre[7];
    if ((major != 1 && major != 2 && major != 3) || minor != 0)
        return bg_set_error(BG_ERR_FORMAT, WHO ": %s: version %d.%d is not supported (this reader takes 1.0, 2.0, 3.0)",
                            path, major, minor);
    size_t len_bytes = major == 1 ? 2 : 4;
    if (got == 10 && len_bytes == 4) got += fread(pre + 10, 1, 2, f);
    if (got < 8 + len_bytes)
        return bg_set_error(BG_ERR_FORMAT, WHO ": %s: truncated header (%lld bytes)", path, (long long)file_size);
    uint64_t hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
    if (len_bytes == 4) hlen |= (uint64_t)pre[10] << 16 | (uint64_t)pre[11] << 24;
    if (hlen > BG_NPY_MAX_HEADER)
        return bg_set_error(BG_ERR_FORMAT, WHO ": %s: header length %llu is over the limit of %d bytes", path,
                            (unsigned long long)hlen, BG_NPY_MAX_HEADER);
    const int64_t data_start = (int64_t)(8 + len_bytes + hlen);
    if (file_size < data_start)
        return bg_set_error(BG_ERR_FORMAT, WHO ": %s: truncated header (%lld bytes, the header length says %lld)", path,
                            (long long)file_size, (long long)data_start);
    char *text = malloc(hlen ? hlen : 1);
    if (!text) return bg_set_error(BG_ERR_NOMEM, WHO ": %s: out of memory for the header", path);
    if (fread(text, 1, hlen, f) != hlen) {
        free(text);
        return bg_set_error(BG_ERR_IO, WHO ": %s: cannot read the header", path);
    }
    char descr[32] = "";
    bool fortran = false;
    hdr h = {.s = text, .n = hlen, .i = 0, .path = path};
    bg_status st = parse_dict(&h, descr, sizeof descr, &fortran, &a->ndim, a->shape);
    free(text);
    if (st != BG_OK) return st;
    st = parse_descr(path, descr, &a->dtype, &a->itemsize);
    if (st != BG_OK) return st;
    if (fortran)
        return bg_set_error(BG_ERR_FORMAT,
                            WHO ": %s: fortran_order is True (this reader takes C order: save np.ascontiguousarray(x))",
                            path);
    char shp[BG_NPY_MAX_DIMS * 22 + 4];
    shape_str(shp, sizeof shp, a->ndim, a->shape);
    int64_t bytes = (int64_t)a->itemsize, numel = 1;
    for (int d = 0; d < a->ndim; d++)
        if (__builtin_mul_overflow(numel, a->shape[d], &numel) || __builtin_mul_overflow(bytes, a->shape[d], &bytes))
            return bg_set_error(BG_ERR_FORMAT, WHO ": %s: shape %s of '%s' overflows a 64-bit size", path, shp, descr);
    const int64_t have = file_size - data_start;
    if (have < bytes)
        return bg_set_error(BG_ERR_FORMAT,
                            WHO ": %s: truncated data: shape %s of '%s' needs %lld bytes, the file holds %lld after the header",
                            path, shp, descr, (long long)bytes, (long long)have);
    if (have > bytes)
        return bg_set_error(BG_ERR_FORMAT,
                            WHO ": %s: shape %s of '%s' needs %lld bytes, but the file holds %lld after the header", path,
                            shp, descr, (long long)bytes, (long long)have);
    if ((uint64_t)bytes > SIZE_MAX) return bg_set_error(BG_ERR_NOMEM, WHO ": %s: too large for this machine", path);
    a->numel = numel;
    a->data = malloc(bytes ? (size_t)bytes : 1);
    if (!a->data) return bg_set_error(BG_ERR_NOMEM, WHO ": %s: out of memory for %lld bytes", path, (long long)bytes);
    if (fread(a->data, 1, (size_t)bytes, f) != (size_t)bytes)
        return bg_set_error(BG_ERR_IO, WHO ": %s: cannot read the data", path);
    return BG_OK;
}

bg_status bg_npy_load(const char *path, bg_npy **out) {
    if (!out) return bg_set_error(BG_ERR_ARG, WHO ": out is NULL");
    *out = NULL;
    if (!path) return bg_set_error(BG_ERR_ARG, WHO ": path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) return bg_set_error(BG_ERR_IO, WHO ": %s: cannot open (%s)", path, strerror(errno));
    bg_npy *a = calloc(1, sizeof *a);
    if (a) a->path = strdup(path);
    bg_status st = a && a->path ? load(f, path, a) : bg_set_error(BG_ERR_NOMEM, WHO ": %s: out of memory", path);
    fclose(f);
    if (st != BG_OK) {
        bg_npy_free(a);
        return st;
    }
    *out = a;
    return BG_OK;
}

// --- conversions ---------------------------------------------------------------------

bg_status bg_npy_to_f32(const bg_npy *a, float *dst) {
    if (!a || !dst) return bg_set_error(BG_ERR_ARG, WHO ": to_f32: %s is NULL", a ? "dst" : "array");
    const unsigned char *p = a->data;
    for (int64_t i = 0; i < a->numel; i++) {
        switch (a->dtype) {
        case BG_NPY_F32: memcpy(&dst[i], p + 4 * i, 4); break;
        case BG_NPY_F64: {
            double v;
            memcpy(&v, p + 8 * i, 8);
            dst[i] = (float)v;
            break;
        }
        case BG_NPY_U8: dst[i] = (float)p[i]; break;
        case BG_NPY_I32: {
            int32_t v;
            memcpy(&v, p + 4 * i, 4);
            dst[i] = (float)v;
            break;
        }
        case BG_NPY_I64: {
            int64_t v;
            memcpy(&v, p + 8 * i, 8);
            dst[i] = (float)v;
            break;
        }
        }
    }
    return BG_OK;
}

bg_status bg_npy_to_i32(const bg_npy *a, int32_t *dst) {
    if (!a || !dst) return bg_set_error(BG_ERR_ARG, WHO ": to_i32: %s is NULL", a ? "dst" : "array");
    if (a->dtype == BG_NPY_F32 || a->dtype == BG_NPY_F64)
        return bg_set_error(BG_ERR_DTYPE, WHO ": %s: dtype '%s' is not an integer type (want u1, i4 or i8)", a->path,
                            bg_npy_dtype_str(a->dtype));
    const unsigned char *p = a->data;
    for (int64_t i = 0; i < a->numel; i++) {
        if (a->dtype == BG_NPY_U8) {
            dst[i] = p[i];
        } else if (a->dtype == BG_NPY_I32) {
            memcpy(&dst[i], p + 4 * i, 4);
        } else {
            int64_t v;
            memcpy(&v, p + 8 * i, 8);
            if (v < INT32_MIN || v > INT32_MAX)
                return bg_set_error(BG_ERR_FORMAT, WHO ": %s: element %lld = %lld is outside the i32 range", a->path,
                                    (long long)i, (long long)v);
            dst[i] = (int32_t)v;
        }
    }
    return BG_OK;
}
