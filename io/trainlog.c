/* trainlog.c — the training log (io/io.h): a JSON-lines writer that flushes
 * every record, and a reader that parses a whole log into arrays, naming the
 * line of the first bad record. Calls tensor/ (errors), qat/ (metrics struct)
 * and jansson only. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <jansson.h>

#include "io/io.h"
#include "qat/qat.h"

// ---------------------------------------------------------------------------
// writer

struct bg_trainlog_writer {
    FILE *f;
    char *path;
    bool failed;   /* a write failed: reported again by close */
    char *buf;     /* the line being built */
    size_t len, cap;
};

/* Cuts f (open for reading and writing) after its last newline. */
static bool drop_partial_line(FILE *f) {
    if (fseeko(f, 0, SEEK_END) != 0) return false;
    off_t end = ftello(f), keep = end;
    char buf[4096];
    while (keep > 0) {
        off_t from = keep > (off_t)sizeof buf ? keep - (off_t)sizeof buf : 0;
        size_t len = (size_t)(keep - from);
        if (fseeko(f, from, SEEK_SET) != 0 || fread(buf, 1, len, f) != len) return false;
        size_t i = len;
        while (i > 0 && buf[i - 1] != '\n') i--;
        if (i > 0) {
            keep = from + (off_t)i;
            break;
        }
        keep = from;
    }
    if (keep == end) return true;
    fflush(f);
    return ftruncate(fileno(f), keep) == 0;
}

static bg_status open_writer(const char *path, bool append, bg_trainlog_writer **out) {
    if (!out) return bg_set_error(BG_ERR_ARG, "trainlog: open: out is NULL");
    *out = NULL;
    if (!path || !*path) return bg_set_error(BG_ERR_ARG, "trainlog: open: path is NULL or empty");
    bg_trainlog_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        return bg_set_error(BG_ERR_NOMEM, "trainlog: %s: out of memory", path);
    }
    bg_status s = BG_OK;
    if (append) {
        FILE *f = fopen(path, "r+b");   // an existing log: drop a torn last line first
        if (f) {
            if (!drop_partial_line(f))
                s = bg_set_error(BG_ERR_IO, "trainlog: %s: cannot repair the last line: %s", path, strerror(errno));
            fclose(f);
        }
        if (s == BG_OK && !(w->f = fopen(path, "ab")))
            s = bg_set_error(BG_ERR_IO, "trainlog: %s: cannot open for appending: %s", path, strerror(errno));
    } else if (!(w->f = fopen(path, "wb"))) {
        s = bg_set_error(BG_ERR_IO, "trainlog: %s: cannot create: %s", path, strerror(errno));
    }
    if (s != BG_OK) {
        free(w->path);
        free(w);
        return s;
    }
    *out = w;
    return BG_OK;
}

bg_status bg_trainlog_open(const char *path, bg_trainlog_writer **out) { return open_writer(path, false, out); }

bg_status bg_trainlog_append(const char *path, bg_trainlog_writer **out) { return open_writer(path, true, out); }

bg_status bg_trainlog_close(bg_trainlog_writer *w) {
    if (!w) return BG_OK;
    bg_status s = BG_OK;
    if (w->failed) s = bg_set_error(BG_ERR_IO, "trainlog: %s: a write failed earlier", w->path);
    if (fclose(w->f) != 0 && s == BG_OK)
        s = bg_set_error(BG_ERR_IO, "trainlog: %s: cannot close: %s", w->path, strerror(errno));
    free(w->path);
    free(w->buf);
    free(w);
    return s;
}

static bool buf_reserve(bg_trainlog_writer *w, size_t extra) {
    if (w->len + extra + 1 <= w->cap) return true;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < w->len + extra + 1) cap *= 2;
    char *b = realloc(w->buf, cap);
    if (!b) return false;
    w->buf = b;
    w->cap = cap;
    return true;
}

/* Appends printf output; false when out of memory. */
static bool BG_PRINTF(2, 3) put(bg_trainlog_writer *w, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !buf_reserve(w, (size_t)n)) return false;
    va_start(ap, fmt);
    vsnprintf(w->buf + w->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    w->len += (size_t)n;
    return true;
}

/* A JSON string: quotes, backslash and control characters escaped. */
static bool put_str(bg_trainlog_writer *w, const char *s) {
    if (!put(w, "\"")) return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        bool ok;
        if (*p == '"' || *p == '\\') ok = put(w, "\\%c", *p);
        else if (*p < 0x20) ok = put(w, "\\u%04x", *p);
        else ok = put(w, "%c", *p);
        if (!ok) return false;
    }
    return put(w, "\"");
}

/* A number that round-trips (%.9g of a double keeps float precision and is
 * short); null for NaN, "inf"/"-inf" strings for infinities. */
static bool put_num(bg_trainlog_writer *w, double v) {
    if (isnan(v)) return put(w, "null");
    if (isinf(v)) return put(w, v > 0 ? "\"inf\"" : "\"-inf\"");
    return put(w, "%.9g", v);
}

static bool put_key_num(bg_trainlog_writer *w, const char *key, double v) {
    return put(w, ",\"%s\":", key) && put_num(w, v);
}

static bool put_key_str(bg_trainlog_writer *w, const char *key, const char *v) {
    return put(w, ",\"%s\":", key) && put_str(w, v);
}

/* Starts a record: {"type":"<type>" (the caller appends ",..." and ends). */
static bg_status begin(bg_trainlog_writer *w, const char *type) {
    if (!w) return bg_set_error(BG_ERR_ARG, "trainlog: %s: writer is NULL", type);
    w->len = 0;
    if (!put(w, "{\"type\":\"%s\"", type)) return bg_set_error(BG_ERR_NOMEM, "trainlog: %s: out of memory", w->path);
    return BG_OK;
}

/* Ends the record, writes the line with one fwrite and flushes it. */
static bg_status finish(bg_trainlog_writer *w, bool ok) {
    if (!ok || !put(w, "}\n")) return bg_set_error(BG_ERR_NOMEM, "trainlog: %s: out of memory", w->path);
    if (fwrite(w->buf, 1, w->len, w->f) != w->len || fflush(w->f) != 0) {
        w->failed = true;
        return bg_set_error(BG_ERR_IO, "trainlog: %s: cannot write: %s", w->path, strerror(errno));
    }
    return BG_OK;
}

static bg_status check_name(const bg_trainlog_writer *w, const char *what, const char *s) {
    if (!s) return bg_set_error(BG_ERR_ARG, "trainlog: %s: %s is NULL", w->path, what);
    if (strlen(s) >= BG_TRAINLOG_NAME_MAX)
        return bg_set_error(BG_ERR_ARG, "trainlog: %s: %s \"%s\" is longer than %d characters", w->path, what,
                            s, BG_TRAINLOG_NAME_MAX - 1);
    return BG_OK;
}

bg_status bg_trainlog_meta(bg_trainlog_writer *w, const char *title) {
    bg_status s = begin(w, "meta");
    if (s) return s;
    if (!title) return bg_set_error(BG_ERR_ARG, "trainlog: %s: title is NULL", w->path);
    return finish(w, put_key_str(w, "title", title));
}

bg_status bg_trainlog_step(bg_trainlog_writer *w, int64_t step, int64_t epoch, double loss, double lr) {
    bg_status s = begin(w, "step");
    if (s) return s;
    bool ok = put(w, ",\"step\":%lld", (long long)step);
    if (epoch >= 0) ok = ok && put(w, ",\"epoch\":%lld", (long long)epoch);
    ok = ok && put_key_num(w, "loss", loss);
    if (!isnan(lr)) ok = ok && put_key_num(w, "lr", lr);
    return finish(w, ok);
}

bg_status bg_trainlog_eval(bg_trainlog_writer *w, int64_t step, const char *label, double acc) {
    bg_status s = begin(w, "eval");
    if (s || (label && (s = check_name(w, "label", label)))) return s;
    bool ok = put(w, ",\"step\":%lld", (long long)step) && put_key_num(w, "acc", acc);
    if (label) ok = ok && put_key_str(w, "label", label);
    return finish(w, ok);
}

bg_status bg_trainlog_phase(bg_trainlog_writer *w, int64_t step, const char *layer, const char *spec, int bits) {
    bg_status s = begin(w, "phase");
    if (s || (s = check_name(w, "layer", layer)) || (s = check_name(w, "spec", spec))) return s;
    bool ok = put(w, ",\"step\":%lld", (long long)step) && put_key_str(w, "layer", layer) &&
              put_key_str(w, "spec", spec) && put(w, ",\"bits\":%d", bits);
    return finish(w, ok);
}

bg_status bg_trainlog_metrics(bg_trainlog_writer *w, int64_t step, const char *layer, double w_sqnr_db,
                              double a_sqnr_db, double zero_frac, double flip_frac) {
    bg_status s = begin(w, "metrics");
    if (s || (s = check_name(w, "layer", layer))) return s;
    bool ok = put(w, ",\"step\":%lld", (long long)step) && put_key_str(w, "layer", layer) &&
              put_key_num(w, "w_sqnr", w_sqnr_db) && put_key_num(w, "a_sqnr", a_sqnr_db);
    if (!isnan(zero_frac)) ok = ok && put_key_num(w, "zero_frac", zero_frac);
    if (!isnan(flip_frac)) ok = ok && put_key_num(w, "flip_frac", flip_frac);
    return finish(w, ok);
}

bg_status bg_trainlog_qat_metrics(bg_trainlog_writer *w, int64_t step, const bg_qat_layer_metrics *m, int n) {
    if (!w) return bg_set_error(BG_ERR_ARG, "trainlog: metrics: writer is NULL");
    if (n > 0 && !m) return bg_set_error(BG_ERR_ARG, "trainlog: %s: metrics array is NULL", w->path);
    for (int i = 0; i < n; i++) {
        char name[BG_TRAINLOG_NAME_MAX];
        snprintf(name, sizeof name, "%.*s", (int)sizeof name - 1, m[i].name);   // truncates very deep paths
        bg_status s = bg_trainlog_metrics(w, step, name, m[i].has_weight ? m[i].weight.sqnr_db : NAN,
                                          m[i].has_input ? m[i].input.sqnr_db : NAN,
                                          m[i].ternary ? m[i].zero_frac : NAN, m[i].ternary ? m[i].flip_frac : NAN);
        if (s) return s;
    }
    return BG_OK;
}

bg_status bg_trainlog_hist(bg_trainlog_writer *w, int64_t step, const char *layer, const float *x, int64_t n,
                           int n_bins, const float *levels, int n_levels) {
    bg_status s = begin(w, "hist");
    if (s || (s = check_name(w, "layer", layer))) return s;
    if (n_bins < 1 || n_bins > 4096)
        return bg_set_error(BG_ERR_ARG, "trainlog: %s: hist: n_bins must be in 1..4096: %d", w->path, n_bins);
    if (n < 0 || (n > 0 && !x) || n_levels < 0 || (n_levels > 0 && !levels))
        return bg_set_error(BG_ERR_ARG, "trainlog: %s: hist: bad array arguments (n %lld, n_levels %d)", w->path,
                            (long long)n, n_levels);
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(x[i])) {
            if (x[i] < lo) lo = x[i];
            if (x[i] > hi) hi = x[i];
        }
    for (int i = 0; i < n_levels; i++)
        if (isfinite(levels[i])) {
            if (levels[i] < lo) lo = levels[i];
            if (levels[i] > hi) hi = levels[i];
        }
    if (!(lo <= hi)) lo = -1, hi = 1;   // nothing finite at all
    if (hi - lo < 1e-12 * (fabs(lo) + 1)) {
        double pad = fabs(lo) > 0 ? 0.5 * fabs(lo) : 1.0;
        lo -= pad;
        hi += pad;
    }
    int64_t *counts = calloc((size_t)n_bins, sizeof *counts);
    if (!counts) return bg_set_error(BG_ERR_NOMEM, "trainlog: %s: out of memory", w->path);
    double inv = n_bins / (hi - lo);
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) continue;
        int64_t b = (int64_t)((x[i] - lo) * inv);
        if (b >= n_bins) b = n_bins - 1;   // x == hi
        if (b < 0) b = 0;
        counts[b]++;
    }
    bool ok = put(w, ",\"step\":%lld", (long long)step) && put_key_str(w, "layer", layer) &&
              put_key_num(w, "lo", lo) && put_key_num(w, "hi", hi) && put(w, ",\"counts\":[");
    for (int b = 0; ok && b < n_bins; b++) ok = put(w, b ? ",%lld" : "%lld", (long long)counts[b]);
    free(counts);
    ok = ok && put(w, "],\"levels\":[");
    for (int i = 0; ok && i < n_levels; i++) ok = (!i || put(w, ",")) && put_num(w, levels[i]);
    ok = ok && put(w, "],\"thresholds\":[");
    for (int i = 0; ok && i + 1 < n_levels; i++)
        ok = (!i || put(w, ",")) && put_num(w, 0.5 * ((double)levels[i] + levels[i + 1]));
    return finish(w, ok && put(w, "]"));
}

int bg_trainlog_levels(float scale, float zero_point, int qmin, int qmax, float *levels, int max) {
    if (qmax < qmin) return 0;
    int count = qmax - qmin + 1;
    for (int i = 0; i < count && i < max; i++) levels[i] = ((float)(qmin + i) - zero_point) * scale;
    return count;
}

static double tensor_mean(const bg_tensor *t) {
    if (!t || t->dtype != BG_DTYPE_F32 || bg_numel(t) <= 0) return NAN;
    double sum = 0;
    int64_t n = bg_numel(t);
    if (!bg_is_contiguous(t)) return NAN;
    const float *v = bg_f32(t);
    for (int64_t i = 0; i < n; i++) sum += v[i];
    return sum / (double)n;
}

bg_status bg_trainlog_model_hists(bg_trainlog_writer *w, int64_t step, const bg_module *model, int n_bins,
                                  bool with_levels) {
    if (!w || !model) return bg_set_error(BG_ERR_ARG, "trainlog: model_hists: writer or model is NULL");
    int n = bg_qlayer_count(model);
    for (int i = 0; i < n; i++) {
        bg_module *q = bg_qlayer_at(model, i);
        bg_tensor *wt = q ? bg_qlayer_weight(q) : NULL;
        if (!wt || wt->dtype != BG_DTYPE_F32 || !bg_is_contiguous(wt)) continue;
        char name[BG_TRAINLOG_NAME_MAX];
        if (bg_qlayer_name(model, i, name, sizeof name) < 0) continue;
        if (!name[0]) snprintf(name, sizeof name, "model");
        float levels[256];
        int n_levels = 0;
        const bg_quant_state *st = with_levels ? bg_qlayer_weight_state(q) : NULL;
        if (st && !bg_quant_state_enabled(st)) st = NULL;   // fp32 phase: no levels
        const bg_quant_spec *sp = st ? bg_quant_state_spec(st) : NULL;
        double scale = st ? tensor_mean(bg_quant_state_scale(st)) : NAN;
        double zp = st && bg_quant_state_zero_point(st) ? tensor_mean(bg_quant_state_zero_point(st)) : 0;
        if (sp && isfinite(scale) && scale > 0 && isfinite(zp)) {
            if (sp->kind == BG_QUANT_BINARY) {
                levels[0] = (float)-scale, levels[1] = (float)scale;
                n_levels = 2;
            } else {
                int32_t qmin, qmax;
                bg_quant_spec_qrange(sp, &qmin, &qmax);
                n_levels = bg_trainlog_levels((float)scale, (float)zp, qmin, qmax, levels, 256);
                if (n_levels > 256) n_levels = 256;
            }
        }
        bg_status s = bg_trainlog_hist(w, step, name, bg_f32(wt), bg_numel(wt), n_bins, levels, n_levels);
        if (s) return s;
    }
    return BG_OK;
}

bg_status bg_trainlog_ref(bg_trainlog_writer *w, const char *label, const char *metric, double value) {
    bg_status s = begin(w, "ref");
    if (s || (s = check_name(w, "label", label))) return s;
    if (!metric) metric = "acc";
    if (strcmp(metric, "acc") && strcmp(metric, "loss"))
        return bg_set_error(BG_ERR_ARG, "trainlog: %s: ref: metric must be \"acc\" or \"loss\": \"%s\"", w->path,
                            metric);
    return finish(w, put_key_str(w, "label", label) && put_key_str(w, "metric", metric) &&
                         put_key_num(w, "value", value));
}

// ---------------------------------------------------------------------------
// reader

typedef struct parser {
    const char *name;   /* path, for messages */
    int64_t line;
    bg_trainlog *log;
    int64_t cap_steps, cap_evals, cap_phases, cap_metrics, cap_hists, cap_refs;
} parser;

static bg_status BG_PRINTF(2, 3) perr(const parser *p, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return bg_set_error(BG_ERR_FORMAT, "trainlog: %s: line %lld: %s", p->name, (long long)p->line, msg);
}

/* Grows *arr (elements of size elem) to hold one more; false when out of memory. */
static bool grow(void **arr, int64_t n, int64_t *cap, size_t elem) {
    if (n < *cap) return true;
    int64_t c = *cap ? *cap * 2 : 16;
    void *a = realloc(*arr, (size_t)c * elem);
    if (!a) return false;
    memset((char *)a + (size_t)n * elem, 0, (size_t)(c - n) * elem);
    *arr = a;
    *cap = c;
    return true;
}

static bg_status get_int(const parser *p, json_t *o, const char *key, bool required, int64_t *out) {
    json_t *v = json_object_get(o, key);
    if (!v) return required ? perr(p, "missing field \"%s\"", key) : BG_OK;
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return BG_OK;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d == floor(d) && fabs(d) < 9e15) {
            *out = (int64_t)d;
            return BG_OK;
        }
    }
    return perr(p, "\"%s\" is not an integer", key);
}

static bg_status get_num_value(const parser *p, json_t *v, const char *key, double *out) {
    if (json_is_number(v)) *out = json_number_value(v);
    else if (json_is_null(v)) *out = NAN;
    else if (json_is_string(v) && !strcmp(json_string_value(v), "nan")) *out = NAN;
    else if (json_is_string(v) && !strcmp(json_string_value(v), "inf")) *out = INFINITY;
    else if (json_is_string(v) && !strcmp(json_string_value(v), "-inf")) *out = -INFINITY;
    else return perr(p, "\"%s\" is not a number", key);
    return BG_OK;
}

static bg_status get_num(const parser *p, json_t *o, const char *key, bool required, double *out) {
    json_t *v = json_object_get(o, key);
    if (!v) {
        *out = NAN;
        return required ? perr(p, "missing field \"%s\"", key) : BG_OK;
    }
    return get_num_value(p, v, key, out);
}

static bg_status get_str(const parser *p, json_t *o, const char *key, bool required, char *out, size_t cap) {
    json_t *v = json_object_get(o, key);
    if (!v) return required ? perr(p, "missing field \"%s\"", key) : BG_OK;
    if (!json_is_string(v)) return perr(p, "\"%s\" is not a string", key);
    const char *s = json_string_value(v);
    if (strlen(s) >= cap) return perr(p, "\"%s\" is longer than %d characters", key, (int)cap - 1);
    memcpy(out, s, strlen(s) + 1);
    return BG_OK;
}

/* A numeric array field; *out malloc'ed (NULL when empty). */
static bg_status get_array(const parser *p, json_t *o, const char *key, bool required, double **out, int *n) {
    *out = NULL;
    *n = 0;
    json_t *v = json_object_get(o, key);
    if (!v) return required ? perr(p, "missing field \"%s\"", key) : BG_OK;
    if (!json_is_array(v)) return perr(p, "\"%s\" is not an array", key);
    size_t len = json_array_size(v);
    if (len > 1000000) return perr(p, "\"%s\" has too many elements: %zu", key, len);
    if (!len) return BG_OK;
    double *a = malloc(len * sizeof *a);
    if (!a) return bg_set_error(BG_ERR_NOMEM, "trainlog: %s: out of memory", p->name);
    for (size_t i = 0; i < len; i++) {
        char what[64];
        snprintf(what, sizeof what, "%s[%zu]", key, i);
        bg_status s = get_num_value(p, json_array_get(v, i), what, &a[i]);
        if (s) {
            free(a);
            return s;
        }
    }
    *out = a;
    *n = (int)len;
    return BG_OK;
}

#define PUSH(p, field, capf)                                                                          \
    (grow((void **)&(p)->log->field, (p)->log->n_##field, &(p)->capf, sizeof *(p)->log->field)       \
         ? &(p)->log->field[(p)->log->n_##field]                                                      \
         : NULL)

static bg_status nomem(const parser *p) {
    return bg_set_error(BG_ERR_NOMEM, "trainlog: %s: out of memory", p->name);
}

static bg_status parse_hist(parser *p, json_t *o) {
    bg_trainlog_hist_rec h = {0};
    double *counts = NULL;
    int n_counts = 0;
    bg_status s;
    if ((s = get_int(p, o, "step", true, &h.step)) || (s = get_str(p, o, "layer", true, h.layer, sizeof h.layer)) ||
        (s = get_num(p, o, "lo", true, &h.lo)) || (s = get_num(p, o, "hi", true, &h.hi)))
        return s;
    if (!(isfinite(h.lo) && isfinite(h.hi) && h.lo < h.hi))
        return perr(p, "\"lo\" and \"hi\" must be finite with lo < hi: %g, %g", h.lo, h.hi);
    if ((s = get_array(p, o, "counts", true, &counts, &n_counts))) return s;
    if (n_counts < 1) return perr(p, "\"counts\" is empty");
    h.counts = malloc((size_t)n_counts * sizeof *h.counts);
    if (!h.counts) {
        free(counts);
        return nomem(p);
    }
    for (int i = 0; i < n_counts; i++) {
        if (!(counts[i] >= 0 && counts[i] == floor(counts[i]) && counts[i] < 9e15)) {
            free(counts);
            free(h.counts);
            return perr(p, "\"counts[%d]\" is not a non-negative integer", i);
        }
        h.counts[i] = (int64_t)counts[i];
    }
    free(counts);
    h.n_bins = n_counts;
    if ((s = get_array(p, o, "levels", false, &h.levels, &h.n_levels)) ||
        (s = get_array(p, o, "thresholds", false, &h.thresholds, &h.n_thresholds))) {
        free(h.counts);
        free(h.levels);
        return s;
    }
    bg_trainlog_hist_rec *r = PUSH(p, hists, cap_hists);
    if (!r) {
        free(h.counts);
        free(h.levels);
        free(h.thresholds);
        return nomem(p);
    }
    *r = h;
    p->log->n_hists++;
    return BG_OK;
}

static bg_status parse_record(parser *p, json_t *o) {
    json_t *t = json_object_get(o, "type");
    if (!t) return perr(p, "missing field \"type\"");
    if (!json_is_string(t)) return perr(p, "\"type\" is not a string");
    const char *type = json_string_value(t);
    bg_status s;
    if (!strcmp(type, "step")) {
        bg_trainlog_step_rec r = {.epoch = -1, .lr = NAN};
        if ((s = get_int(p, o, "step", true, &r.step)) || (s = get_int(p, o, "epoch", false, &r.epoch)) ||
            (s = get_num(p, o, "loss", true, &r.loss)) || (s = get_num(p, o, "lr", false, &r.lr)))
            return s;
        bg_trainlog_step_rec *d = PUSH(p, steps, cap_steps);
        if (!d) return nomem(p);
        *d = r;
        p->log->n_steps++;
    } else if (!strcmp(type, "eval")) {
        bg_trainlog_eval_rec r = {0};
        if ((s = get_int(p, o, "step", true, &r.step)) || (s = get_num(p, o, "acc", true, &r.acc)) ||
            (s = get_str(p, o, "label", false, r.label, sizeof r.label)))
            return s;
        bg_trainlog_eval_rec *d = PUSH(p, evals, cap_evals);
        if (!d) return nomem(p);
        *d = r;
        p->log->n_evals++;
    } else if (!strcmp(type, "phase")) {
        bg_trainlog_phase_rec r = {0};
        int64_t bits = 0;
        if ((s = get_int(p, o, "step", true, &r.step)) || (s = get_str(p, o, "layer", true, r.layer, sizeof r.layer)) ||
            (s = get_str(p, o, "spec", true, r.spec, sizeof r.spec)) || (s = get_int(p, o, "bits", false, &bits)))
            return s;
        if (bits < 0 || bits > 64) return perr(p, "\"bits\" is out of range 0..64: %lld", (long long)bits);
        r.bits = (int)bits;
        bg_trainlog_phase_rec *d = PUSH(p, phases, cap_phases);
        if (!d) return nomem(p);
        *d = r;
        p->log->n_phases++;
    } else if (!strcmp(type, "metrics")) {
        bg_trainlog_metrics_rec r = {0};
        if ((s = get_int(p, o, "step", true, &r.step)) || (s = get_str(p, o, "layer", true, r.layer, sizeof r.layer)) ||
            (s = get_num(p, o, "w_sqnr", true, &r.w_sqnr_db)) || (s = get_num(p, o, "a_sqnr", true, &r.a_sqnr_db)) ||
            (s = get_num(p, o, "zero_frac", false, &r.zero_frac)) ||
            (s = get_num(p, o, "flip_frac", false, &r.flip_frac)))
            return s;
        bg_trainlog_metrics_rec *d = PUSH(p, metrics, cap_metrics);
        if (!d) return nomem(p);
        *d = r;
        p->log->n_metrics++;
    } else if (!strcmp(type, "hist")) {
        return parse_hist(p, o);
    } else if (!strcmp(type, "ref")) {
        bg_trainlog_ref_rec r = {.metric = "acc"};
        if ((s = get_str(p, o, "label", true, r.label, sizeof r.label)) ||
            (s = get_str(p, o, "metric", false, r.metric, sizeof r.metric)) ||
            (s = get_num(p, o, "value", true, &r.value)))
            return s;
        if (strcmp(r.metric, "acc") && strcmp(r.metric, "loss"))
            return perr(p, "\"metric\" must be \"acc\" or \"loss\": \"%s\"", r.metric);
        bg_trainlog_ref_rec *d = PUSH(p, refs, cap_refs);
        if (!d) return nomem(p);
        *d = r;
        p->log->n_refs++;
    } else if (!strcmp(type, "meta")) {
        if ((s = get_str(p, o, "title", false, p->log->title, sizeof p->log->title))) return s;
    } else {
        return perr(p, "unknown record type \"%s\" (want step, eval, phase, metrics, hist, ref or meta)", type);
    }
    return BG_OK;
}

void bg_trainlog_free(bg_trainlog *log) {
    if (!log) return;
    for (int64_t i = 0; i < log->n_hists; i++) {
        free(log->hists[i].counts);
        free(log->hists[i].levels);
        free(log->hists[i].thresholds);
    }
    free(log->steps);
    free(log->evals);
    free(log->phases);
    free(log->metrics);
    free(log->hists);
    free(log->refs);
    free(log);
}

bg_status bg_trainlog_parse(const char *text, size_t len, const char *name, bg_trainlog **out) {
    if (!out) return bg_set_error(BG_ERR_ARG, "trainlog: parse: out is NULL");
    *out = NULL;
    if (!name) name = "(text)";
    if (!text && len) return bg_set_error(BG_ERR_ARG, "trainlog: %s: text is NULL", name);
    parser p = {.name = name};
    if (!(p.log = calloc(1, sizeof *p.log))) return bg_set_error(BG_ERR_NOMEM, "trainlog: %s: out of memory", name);
    int64_t records = 0;
    size_t pos = 0;
    bg_status s = BG_OK;
    while (pos < len && s == BG_OK) {
        p.line++;
        const char *start = text + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - start) : len - pos;
        pos += n + (nl ? 1 : 0);
        size_t a = 0, b = n;   // trim blanks and a CR
        while (a < b && (start[a] == ' ' || start[a] == '\t' || start[a] == '\r')) a++;
        while (b > a && (start[b - 1] == ' ' || start[b - 1] == '\t' || start[b - 1] == '\r')) b--;
        if (a == b) continue;
        json_error_t je;
        json_t *o = json_loadb(start + a, b - a, 0, &je);
        if (!o) {
            s = perr(&p, "not valid JSON: %s (column %d)", je.text, je.column);
            break;
        }
        if (!json_is_object(o)) s = perr(&p, "not a JSON object");
        else s = parse_record(&p, o);
        json_decref(o);
        records++;
    }
    if (s == BG_OK && records == 0)
        s = bg_set_error(BG_ERR_FORMAT, "trainlog: %s: empty file (no records)", name);
    if (s != BG_OK) {
        bg_trainlog_free(p.log);
        return s;
    }
    *out = p.log;
    return BG_OK;
}

bg_status bg_trainlog_read(const char *path, bg_trainlog **out) {
    if (!out) return bg_set_error(BG_ERR_ARG, "trainlog: read: out is NULL");
    *out = NULL;
    if (!path) return bg_set_error(BG_ERR_ARG, "trainlog: read: path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) return bg_set_error(BG_ERR_IO, "trainlog: %s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    bg_status s = BG_OK;
    while (buf) {
        if (len == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) break;
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    if (!buf) s = bg_set_error(BG_ERR_NOMEM, "trainlog: %s: out of memory", path);
    else if (ferror(f)) s = bg_set_error(BG_ERR_IO, "trainlog: %s: cannot read: %s", path, strerror(errno));
    else if (len == cap) s = bg_set_error(BG_ERR_NOMEM, "trainlog: %s: out of memory", path);
    fclose(f);
    if (s == BG_OK) s = bg_trainlog_parse(buf, len, path, out);
    free(buf);
    return s;
}
