/* safetensors.c — the safetensors reader and atomic writer (format/format.h).
 * Format: 8-byte little-endian header length N, N bytes of JSON, then the
 * raw little-endian tensor data, fully covered by the tensors' offsets.
 * Calls tensor/ and jansson only. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "format/format.h"

/* A header larger than this is not a header (the Python reader caps at 100 MB). */
#define ST_MAX_HEADER ((uint64_t)100 << 20)

// ---------------------------------------------------------------------------
// dtypes

static const char *const st_dtype_names[BG_DTYPE_COUNT] = {
    [BG_DTYPE_F32] = "F32",
    [BG_DTYPE_I32] = "I32",
    [BG_DTYPE_I8]  = "I8",
    [BG_DTYPE_U8]  = "U8",
};

static bool st_dtype_parse(const char *s, bg_dtype *out) {
    for (int d = 0; d < BG_DTYPE_COUNT; d++)
        if (strcmp(s, st_dtype_names[d]) == 0) {
            *out = (bg_dtype)d;
            return true;
        }
    return false;
}

static char *st_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

// ---------------------------------------------------------------------------
// reader

typedef struct st_entry {
    char *name;
    bg_dtype dtype;
    int ndim;
    int64_t shape[BG_MAX_DIMS];
    uint64_t begin, end;  /* offsets into the data section */
    void *copy;           /* aligned copy when begin is not a multiple of the element size */
} st_entry;

struct bg_safetensors {
    char *path;
    unsigned char *data;  /* the data section, 64-byte aligned */
    uint64_t data_len;
    st_entry *entries;    /* file (JSON) order */
    int n_entries;
    char **meta_keys, **meta_values;
    int n_meta;
};

void bg_safetensors_free(bg_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n_entries; i++) {
        free(st->entries[i].name);
        bg_aligned_free(st->entries[i].copy);
    }
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->entries);
    free(st->meta_keys);
    free(st->meta_values);
    bg_aligned_free(st->data);
    free(st->path);
    free(st);
}

/* Parses one tensor entry; on failure sets the error (naming path and tensor). */
static bg_status parse_entry(const char *path, const char *name, json_t *v, uint64_t data_len,
                             st_entry *e) {
    if (!json_is_object(v))
        return bg_set_error(BG_ERR_FORMAT, "safetensors: %s: tensor \"%s\" is not a JSON object",
                            path, name);
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"),
           *off = json_object_get(v, "data_offsets");
    if (!json_is_string(dt))
        return bg_set_error(BG_ERR_FORMAT, "safetensors: %s: tensor \"%s\" has no string \"dtype\"",
                            path, name);
    if (!st_dtype_parse(json_string_value(dt), &e->dtype))
        return bg_set_error(BG_ERR_FORMAT,
                            "safetensors: %s: tensor \"%s\" has unknown dtype \"%s\" (supported: F32, I32, I8, U8)",
                            path, name, json_string_value(dt));
    if (!json_is_array(sh))
        return bg_set_error(BG_ERR_FORMAT, "safetensors: %s: tensor \"%s\" has no \"shape\" array",
                            path, name);
    size_t nd = json_array_size(sh);
    if (nd > BG_MAX_DIMS)
        return bg_set_error(BG_ERR_FORMAT, "safetensors: %s: tensor \"%s\" has %zu dims, at most %d are supported",
                            path, name, nd, BG_MAX_DIMS);
    e->ndim = (int)nd;
    // numel * element size, with overflow checks (a corrupt shape may be huge).
    uint64_t nbytes = bg_dtype_size(e->dtype);
    bool overflow = false;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(sh, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return bg_set_error(BG_ERR_FORMAT,
                                "safetensors: %s: tensor \"%s\" has a shape entry %zu that is not a non-negative integer",
                                path, name, i);
        uint64_t dim = (uint64_t)json_integer_value(d);
        e->shape[i] = (int64_t)dim;
        if (dim != 0 && nbytes > UINT64_MAX / dim) overflow = true;
        else nbytes *= dim;
    }
    if (!json_is_array(off) || json_array_size(off) != 2 || !json_is_integer(json_array_get(off, 0)) ||
        !json_is_integer(json_array_get(off, 1)))
        return bg_set_error(BG_ERR_FORMAT,
                            "safetensors: %s: tensor \"%s\" has no \"data_offsets\" pair of integers",
                            path, name);
    json_int_t b = json_integer_value(json_array_get(off, 0)), en = json_integer_value(json_array_get(off, 1));
    if (b < 0 || en < b)
        return bg_set_error(BG_ERR_FORMAT, "safetensors: %s: tensor \"%s\" has invalid data_offsets [%lld,%lld]",
                            path, name, (long long)b, (long long)en);
    e->begin = (uint64_t)b;
    e->end = (uint64_t)en;
    if (e->end > data_len)
        return bg_set_error(BG_ERR_FORMAT,
                            "safetensors: %s: tensor \"%s\" data_offsets [%llu,%llu] are out of range: the data section is %llu bytes",
                            path, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                            (unsigned long long)data_len);
    if (overflow || nbytes != e->end - e->begin)
        return bg_set_error(BG_ERR_FORMAT,
                            "safetensors: %s: tensor \"%s\" shape and size disagree: %s shape needs %s%llu bytes, data_offsets span %llu",
                            path, name, st_dtype_names[e->dtype], overflow ? "more than " : "",
                            (unsigned long long)(overflow ? UINT64_MAX : nbytes),
                            (unsigned long long)(e->end - e->begin));
    return BG_OK;
}

static bg_status parse_metadata(const char *path, json_t *v, bg_safetensors *st) {
    if (!json_is_object(v))
        return bg_set_error(BG_ERR_FORMAT, "safetensors: %s: __metadata__ is not a JSON object", path);
    size_t n = json_object_size(v);
    st->meta_keys = calloc(n ? n : 1, sizeof *st->meta_keys);
    st->meta_values = calloc(n ? n : 1, sizeof *st->meta_values);
    if (!st->meta_keys || !st->meta_values)
        return bg_set_error(BG_ERR_NOMEM, "safetensors: %s: out of memory", path);
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val) {
        if (!json_is_string(val))
            return bg_set_error(BG_ERR_FORMAT, "safetensors: %s: __metadata__ value of \"%s\" is not a string",
                                path, key);
        int i = st->n_meta;
        st->meta_keys[i] = st_strdup(key);
        st->meta_values[i] = st_strdup(json_string_value(val));
        st->n_meta++;
        if (!st->meta_keys[i] || !st->meta_values[i])
            return bg_set_error(BG_ERR_NOMEM, "safetensors: %s: out of memory", path);
    }
    return BG_OK;
}

static int cmp_by_offset(const void *a, const void *b) {
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Offsets must tile the data section exactly: no overlap, no hole (the
 * safetensors spec forbids holes so that a file cannot be a polyglot). */
static bg_status check_layout(const char *path, bg_safetensors *st) {
    if (st->n_entries == 0) {
        if (st->data_len != 0)
            return bg_set_error(BG_ERR_FORMAT, "safetensors: %s: %llu data bytes but no tensors", path,
                                (unsigned long long)st->data_len);
        return BG_OK;
    }
    st_entry **order = malloc(sizeof *order * (size_t)st->n_entries);
    if (!order) return bg_set_error(BG_ERR_NOMEM, "safetensors: %s: out of memory", path);
    for (int i = 0; i < st->n_entries; i++) order[i] = &st->entries[i];
    qsort(order, (size_t)st->n_entries, sizeof *order, cmp_by_offset);
    bg_status s = BG_OK;
    uint64_t pos = 0;
    const char *prev = NULL;
    for (int i = 0; i < st->n_entries && s == BG_OK; i++) {
        const st_entry *e = order[i];
        if (e->begin < pos)
            s = bg_set_error(BG_ERR_FORMAT,
                             "safetensors: %s: tensors \"%s\" and \"%s\" overlap: [%llu,%llu) starts before %llu",
                             path, prev, e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                             (unsigned long long)pos);
        else if (e->begin > pos)
            s = bg_set_error(BG_ERR_FORMAT, "safetensors: %s: data bytes [%llu,%llu) belong to no tensor",
                             path, (unsigned long long)pos, (unsigned long long)e->begin);
        pos = e->end;
        prev = e->name;
    }
    if (s == BG_OK && pos != st->data_len)
        s = bg_set_error(BG_ERR_FORMAT, "safetensors: %s: data bytes [%llu,%llu) belong to no tensor", path,
                         (unsigned long long)pos, (unsigned long long)st->data_len);
    free(order);
    return s;
}

static bg_status parse_header(const char *path, const char *text, size_t len, bg_safetensors *st) {
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return bg_set_error(BG_ERR_FORMAT, "safetensors: %s: malformed JSON header: %s (line %d, column %d)",
                            path, jerr.text, jerr.line, jerr.column);
    bg_status s = BG_OK;
    if (!json_is_object(root)) {
        s = bg_set_error(BG_ERR_FORMAT, "safetensors: %s: the JSON header is not an object", path);
        goto done;
    }
    size_t n = json_object_size(root);
    st->entries = calloc(n ? n : 1, sizeof *st->entries);
    if (!st->entries) {
        s = bg_set_error(BG_ERR_NOMEM, "safetensors: %s: out of memory", path);
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            s = parse_metadata(path, val, st);
        } else {
            st_entry *e = &st->entries[st->n_entries];
            s = parse_entry(path, key, val, st->data_len, e);
            if (s == BG_OK) {
                e->name = st_strdup(key);
                st->n_entries++;
                if (!e->name) s = bg_set_error(BG_ERR_NOMEM, "safetensors: %s: out of memory", path);
            }
        }
        if (s != BG_OK) goto done;
    }
    s = check_layout(path, st);
done:
    json_decref(root);
    return s;
}

static bg_status read_exact(FILE *f, void *buf, size_t n, const char *path, const char *what) {
    if (n == 0) return BG_OK;
    if (fread(buf, 1, n, f) != n)
        return bg_set_error(ferror(f) ? BG_ERR_IO : BG_ERR_FORMAT, "safetensors: %s: cannot read %s (%zu bytes)%s%s",
                            path, what, n, ferror(f) ? ": " : ": file is truncated",
                            ferror(f) ? strerror(errno) : "");
    return BG_OK;
}

bg_status bg_safetensors_open(const char *path, bg_safetensors **out) {
    if (!out) return bg_set_error(BG_ERR_ARG, "safetensors: out is NULL");
    *out = NULL;
    if (!path) return bg_set_error(BG_ERR_ARG, "safetensors: path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) return bg_set_error(BG_ERR_IO, "safetensors: %s: cannot open: %s", path, strerror(errno));
    bg_status s = BG_OK;
    char *header = NULL;
    bg_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = st_strdup(path))) {
        s = bg_set_error(BG_ERR_NOMEM, "safetensors: %s: out of memory", path);
        goto fail;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        s = bg_set_error(BG_ERR_IO, "safetensors: %s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        s = bg_set_error(BG_ERR_IO, "safetensors: %s: not a regular file", path);
        goto fail;
    }
    uint64_t file_size = (uint64_t)sb.st_size;
    if (file_size < 8) {
        s = bg_set_error(BG_ERR_FORMAT, "safetensors: %s: file is %llu bytes, too short for the 8-byte header length",
                         path, (unsigned long long)file_size);
        goto fail;
    }
    unsigned char lenbuf[8];
    if ((s = read_exact(f, lenbuf, 8, path, "the header length")) != BG_OK) goto fail;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | lenbuf[i];
    if (hlen > file_size - 8) {
        s = bg_set_error(BG_ERR_FORMAT, "safetensors: %s: header length %llu exceeds the file size %llu",
                         path, (unsigned long long)hlen, (unsigned long long)file_size);
        goto fail;
    }
    if (hlen > ST_MAX_HEADER || hlen < 2) {
        s = bg_set_error(BG_ERR_FORMAT, "safetensors: %s: header length %llu is implausible", path,
                         (unsigned long long)hlen);
        goto fail;
    }
    header = malloc((size_t)hlen);
    if (!header) {
        s = bg_set_error(BG_ERR_NOMEM, "safetensors: %s: out of memory", path);
        goto fail;
    }
    if ((s = read_exact(f, header, (size_t)hlen, path, "the JSON header")) != BG_OK) goto fail;
    st->data_len = file_size - 8 - hlen;
    if ((s = parse_header(path, header, (size_t)hlen, st)) != BG_OK) goto fail;
    st->data = bg_aligned_alloc(st->data_len ? (size_t)st->data_len : 1);
    if (!st->data) {
        s = bg_set_error(BG_ERR_NOMEM, "safetensors: %s: cannot allocate %llu bytes", path,
                         (unsigned long long)st->data_len);
        goto fail;
    }
    if ((s = read_exact(f, st->data, (size_t)st->data_len, path, "the tensor data")) != BG_OK) goto fail;
    // Element access needs natural alignment; a foreign file may pack a 4-byte
    // tensor after an odd-sized 1-byte one. Such tensors get their own copy.
    for (int i = 0; i < st->n_entries; i++) {
        st_entry *e = &st->entries[i];
        if (e->begin % bg_dtype_size(e->dtype) == 0) continue;
        e->copy = bg_aligned_alloc(e->end - e->begin ? (size_t)(e->end - e->begin) : 1);
        if (!e->copy) {
            s = bg_set_error(BG_ERR_NOMEM, "safetensors: %s: out of memory", path);
            goto fail;
        }
        memcpy(e->copy, st->data + e->begin, (size_t)(e->end - e->begin));
    }
    free(header);
    fclose(f);
    *out = st;
    return BG_OK;
fail:
    free(header);
    fclose(f);
    bg_safetensors_free(st);
    return s;
}

int bg_safetensors_count(const bg_safetensors *st) { return st ? st->n_entries : 0; }

const char *bg_safetensors_name(const bg_safetensors *st, int i) {
    if (!st || i < 0 || i >= st->n_entries) return NULL;
    return st->entries[i].name;
}

bg_status bg_safetensors_get(const bg_safetensors *st, const char *name, bg_tensor *view) {
    if (!st || !name || !view) return bg_set_error(BG_ERR_ARG, "safetensors_get: st, name or view is NULL");
    for (int i = 0; i < st->n_entries; i++) {
        const st_entry *e = &st->entries[i];
        if (strcmp(e->name, name) != 0) continue;
        memset(view, 0, sizeof *view);
        view->dtype = e->dtype;
        view->ndim = e->ndim;
        int64_t stride = 1;
        for (int d = e->ndim - 1; d >= 0; d--) {
            view->shape[d] = e->shape[d];
            view->stride[d] = stride;
            stride *= e->shape[d];
        }
        view->data = e->copy ? e->copy : st->data + e->begin;
        view->persistent = true;  /* owned by st, not by an arena */
        view->name = e->name;
        return BG_OK;
    }
    return bg_set_error(BG_ERR_ARG, "safetensors_get: %s: no tensor named \"%s\"", st->path, name);
}

const char *bg_safetensors_metadata(const bg_safetensors *st, const char *key) {
    if (!st || !key) return NULL;
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
    return NULL;
}

// ---------------------------------------------------------------------------
// writer

typedef struct wr_entry {
    char *name;
    bg_tensor t;        /* header copy; data is read at save time */
    uint64_t begin, end;
} wr_entry;

struct bg_safetensors_writer {
    wr_entry *entries;
    int n, cap;
    char **meta_keys, **meta_values;
    int n_meta, cap_meta;
};

bg_safetensors_writer *bg_safetensors_writer_new(void) {
    bg_safetensors_writer *w = calloc(1, sizeof *w);
    if (!w) bg_set_error(BG_ERR_NOMEM, "safetensors_writer_new: out of memory");
    return w;
}

void bg_safetensors_writer_free(bg_safetensors_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->entries[i].name);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->entries);
    free(w->meta_keys);
    free(w->meta_values);
    free(w);
}

bg_status bg_safetensors_writer_add(bg_safetensors_writer *w, const char *name, const bg_tensor *t) {
    if (!w || !name || !t) return bg_set_error(BG_ERR_ARG, "safetensors_writer_add: writer, name or tensor is NULL");
    if (!*name || strcmp(name, "__metadata__") == 0)
        return bg_set_error(BG_ERR_ARG, "safetensors_writer_add: invalid tensor name \"%s\"", name);
    if ((unsigned)t->dtype >= BG_DTYPE_COUNT || t->ndim < 0 || t->ndim > BG_MAX_DIMS)
        return bg_set_error(BG_ERR_ARG, "safetensors_writer_add: \"%s\": invalid tensor header", name);
    if (bg_numel(t) > 0 && !t->data)
        return bg_set_error(BG_ERR_ARG, "safetensors_writer_add: \"%s\": tensor has no data", name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->entries[i].name, name) == 0)
            return bg_set_error(BG_ERR_ARG, "safetensors_writer_add: duplicate tensor name \"%s\"", name);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        wr_entry *e = realloc(w->entries, sizeof *e * (size_t)cap);
        if (!e) return bg_set_error(BG_ERR_NOMEM, "safetensors_writer_add: out of memory");
        w->entries = e;
        w->cap = cap;
    }
    wr_entry *e = &w->entries[w->n];
    memset(e, 0, sizeof *e);
    if (!(e->name = st_strdup(name))) return bg_set_error(BG_ERR_NOMEM, "safetensors_writer_add: out of memory");
    e->t = *t;
    e->t.grad = NULL;
    e->t.node = NULL;
    w->n++;
    return BG_OK;
}

bg_status bg_safetensors_writer_meta(bg_safetensors_writer *w, const char *key, const char *value) {
    if (!w || !key || !value) return bg_set_error(BG_ERR_ARG, "safetensors_writer_meta: writer, key or value is NULL");
    char *v = st_strdup(value);
    if (!v) return bg_set_error(BG_ERR_NOMEM, "safetensors_writer_meta: out of memory");
    for (int i = 0; i < w->n_meta; i++)
        if (strcmp(w->meta_keys[i], key) == 0) {  // last value wins
            free(w->meta_values[i]);
            w->meta_values[i] = v;
            return BG_OK;
        }
    if (w->n_meta == w->cap_meta) {
        int cap = w->cap_meta ? 2 * w->cap_meta : 8;
        char **k = realloc(w->meta_keys, sizeof *k * (size_t)cap);
        if (k) w->meta_keys = k;
        char **vv = k ? realloc(w->meta_values, sizeof *vv * (size_t)cap) : NULL;
        if (vv) w->meta_values = vv;
        if (!k || !vv) {
            free(v);
            return bg_set_error(BG_ERR_NOMEM, "safetensors_writer_meta: out of memory");
        }
        w->cap_meta = cap;
    }
    char *k = st_strdup(key);
    if (!k) {
        free(v);
        return bg_set_error(BG_ERR_NOMEM, "safetensors_writer_meta: out of memory");
    }
    w->meta_keys[w->n_meta] = k;
    w->meta_values[w->n_meta] = v;
    w->n_meta++;
    return BG_OK;
}

/* Writes t's elements in row-major order (any strides). */
static bool write_tensor(FILE *f, const bg_tensor *t) {
    size_t es = bg_dtype_size(t->dtype);
    int64_t n = bg_numel(t);
    if (n == 0) return true;
    if (bg_is_contiguous(t)) return fwrite(t->data, es, (size_t)n, f) == (size_t)n;
    int64_t idx[BG_MAX_DIMS] = {0};
    const unsigned char *base = t->data;
    for (int64_t k = 0; k < n; k++) {
        int64_t off = 0;
        for (int d = 0; d < t->ndim; d++) off += idx[d] * t->stride[d];
        if (fwrite(base + off * (int64_t)es, es, 1, f) != 1) return false;
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
    return true;
}

/* The JSON header, padded with spaces to a multiple of 8 bytes. Data is laid
 * out with 4-byte dtypes first (keeping them aligned without holes); the JSON
 * keeps the order of the adds. */
static char *build_header(bg_safetensors_writer *w, const char *path, size_t *len) {
    uint64_t pos = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < w->n; i++) {
            wr_entry *e = &w->entries[i];
            if ((bg_dtype_size(e->t.dtype) >= 4) != (pass == 0)) continue;
            e->begin = pos;
            pos += bg_nbytes(&e->t);
            e->end = pos;
        }
    json_t *root = json_object();
    bool ok = root != NULL;
    if (ok && w->n_meta) {
        json_t *m = json_object();
        ok = m && json_object_set_new(root, "__metadata__", m) == 0;
        for (int i = 0; ok && i < w->n_meta; i++)
            ok = json_object_set_new(m, w->meta_keys[i], json_string(w->meta_values[i])) == 0;
    }
    for (int i = 0; ok && i < w->n; i++) {
        const wr_entry *e = &w->entries[i];
        json_t *shape = json_array();
        for (int d = 0; shape && d < e->t.ndim; d++)
            if (json_array_append_new(shape, json_integer(e->t.shape[d])) != 0) {
                json_decref(shape);
                shape = NULL;
            }
        json_t *o = shape ? json_pack("{s:s, s:o, s:[I,I]}", "dtype", st_dtype_names[e->t.dtype], "shape", shape,
                                      "data_offsets", (json_int_t)e->begin, (json_int_t)e->end)
                          : NULL;
        ok = o && json_object_set_new(root, e->name, o) == 0;
    }
    char *text = ok ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!text) {
        bg_set_error(BG_ERR_ARG, "safetensors: %s: cannot encode the header (names and metadata must be UTF-8)",
                     path);
        return NULL;
    }
    size_t n = strlen(text), padded = (n + 7) / 8 * 8;
    char *out = malloc(padded + 1);
    if (!out) {
        free(text);
        bg_set_error(BG_ERR_NOMEM, "safetensors: %s: out of memory", path);
        return NULL;
    }
    memcpy(out, text, n);
    memset(out + n, ' ', padded - n);
    out[padded] = '\0';
    free(text);
    *len = padded;
    return out;
}

bg_status bg_safetensors_writer_save(bg_safetensors_writer *w, const char *path) {
    if (!w || !path) return bg_set_error(BG_ERR_ARG, "safetensors: writer or path is NULL");
    size_t hlen = 0;
    char *header = build_header(w, path, &hlen);
    if (!header) return bg_last_status();
    bg_atomic_file af;
    bg_status s = bg_atomic_begin(&af, "safetensors", path);
    if (s != BG_OK) {
        free(header);
        return s;
    }
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    bool ok = fwrite(lenbuf, 1, 8, af.f) == 8 && fwrite(header, 1, hlen, af.f) == hlen;
    for (int pass = 0; ok && pass < 2; pass++)
        for (int i = 0; ok && i < w->n; i++)
            if ((bg_dtype_size(w->entries[i].t.dtype) >= 4) == (pass == 0)) ok = write_tensor(af.f, &w->entries[i].t);
    s = bg_atomic_commit(&af, ok);
    free(header);
    return s;
}
