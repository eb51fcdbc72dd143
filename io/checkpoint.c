/* checkpoint.c — training checkpoints as safetensors files: parameters,
 * optimizer moments and counters, quantizer state, schedule progress, RNG
 * states and the model description (io/io.h "model descriptions and
 * checkpoints"). Loading validates everything before it modifies anything.
 * Calls io/safetensors.c, io/model_desc.c, layers/, optim/, qat/, jansson. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "io/io.h"
#include "kernels/kernels.h"
#include "qat/qat.h"

#define CK_FORMAT "bitgrad-checkpoint"
#define CK_VERSION "1"
/* Quantizers per model a checkpoint handles (2 per quantized layer). */
/* "quant.<name>.flags": observed, initialized, observer_on, enabled, calls (low, high 32 bits). */
#define CK_FLAGS 6

// ---------------------------------------------------------------------------
// helpers

/* A contiguous tensor header over caller memory (not allocated). */
static bg_tensor view_of(bg_dtype dtype, int ndim, const int64_t *shape, void *data) {
    bg_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dtype;
    t.ndim = ndim;
    int64_t stride = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        t.shape[d] = shape[d];
        t.stride[d] = stride;
        stride *= shape[d];
    }
    t.data = data;
    t.persistent = true;
    return t;
}

static void rng_to_bytes(const bg_rng *r, uint8_t out[16]) {
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < 8; i++) out[w * 8 + i] = (uint8_t)(r->s[w] >> (8 * i));
}

static void rng_from_bytes(bg_rng *r, const uint8_t in[16]) {
    for (int w = 0; w < 2; w++) {
        uint64_t v = 0;
        for (int i = 7; i >= 0; i--) v = v << 8 | in[w * 8 + i];
        r->s[w] = v;
    }
}

/* Every module of m's tree that owns a generator (its kind's module_rng:
 * Dropout's, or a user kind's), with its path ("3", "1.2"), pre-order. */
typedef struct dropout_ref {
    char path[BG_PARAM_NAME_MAX];
    bg_rng *rng;
} dropout_ref;

static int find_dropouts(const bg_module *m, char *path, size_t plen, dropout_ref *out, int n, int max) {
    const bg_module_type *t = bg_module_type_of(m);
    if (t->module_rng) {
        if (n < max) {
            snprintf(out[n].path, sizeof out[n].path, "%s", path);
            out[n].rng = t->module_rng((bg_module *)m);
        }
        n++;
    }
    for (int i = 0; i < bg_module_num_children(m); i++) {
        int w = snprintf(path + plen, BG_PARAM_NAME_MAX - plen, "%s%s", plen ? "." : "", bg_module_child_name(m, i));
        size_t nl = w > 0 && plen + (size_t)w < BG_PARAM_NAME_MAX ? plen + (size_t)w : BG_PARAM_NAME_MAX - 1;
        n = find_dropouts(bg_module_child(m, i), path, nl, out, n, max);
        path[plen] = '\0';
    }
    return n;
}

#define CK_MAX_DROPOUT 256

// ---------------------------------------------------------------------------
// save

static json_t *optim_json(const bg_optim *o) {
    const char *kind = bg_optim_kind(o);
    json_t *opts;
    if (strcmp(kind, "SGD") == 0) {
        bg_sgd_opts s;
        bg_optim_get_opts(o, &s, NULL);
        opts = json_pack("{s:f, s:f, s:f, s:f, s:b}", "lr", (double)s.lr, "momentum", (double)s.momentum, "dampening",
                         (double)s.dampening, "weight_decay", (double)s.weight_decay, "nesterov", (int)s.nesterov);
    } else {
        bg_adam_opts a;
        bg_optim_get_opts(o, NULL, &a);
        opts = json_pack("{s:f, s:f, s:f, s:f, s:f}", "lr", (double)a.lr, "beta1", (double)a.beta1, "beta2",
                         (double)a.beta2, "eps", (double)a.eps, "weight_decay", (double)a.weight_decay);
    }
    bg_lr_schedule ls;
    json_t *sched = json_null();
    if (bg_optim_get_schedule(o, &ls))
        sched = json_pack("{s:i, s:f, s:I, s:f, s:I, s:I, s:f}", "kind", (int)ls.kind, "base_lr", (double)ls.base_lr,
                          "step_size", (json_int_t)ls.step_size, "gamma", (double)ls.gamma, "warmup_steps",
                          (json_int_t)ls.warmup_steps, "total_steps", (json_int_t)ls.total_steps, "min_lr",
                          (double)ls.min_lr);
    if (!opts || !sched) {
        json_decref(opts);
        json_decref(sched);
        return NULL;
    }
    return json_pack("{s:s, s:f, s:I, s:o, s:o}", "kind", kind, "lr", (double)bg_optim_lr(o), "step_count",
                     (json_int_t)bg_optim_step_count(o), "options", opts, "lr_schedule", sched);
}

/* Adds a JSON value as a metadata string (takes v). */
static bg_status meta_json(bg_safetensors_writer *w, const char *key, json_t *v) {
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(v);
    if (!s) return bg_set_error(BG_ERR_NOMEM, "checkpoint_save: cannot encode \"%s\"", key);
    bg_status st = bg_safetensors_writer_meta(w, key, s);
    free(s);
    return st;
}

static bg_status meta_int(bg_safetensors_writer *w, const char *key, int64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    return bg_safetensors_writer_meta(w, key, buf);
}

bg_status bg_checkpoint_save(const char *path, const bg_checkpoint *ck) {
    if (!path || !ck || !ck->model)
        return bg_set_error(BG_ERR_ARG, "checkpoint_save: %s is NULL", !path ? "path" : !ck ? "ck" : "ck->model");
    bg_status s = BG_OK;
    bg_safetensors_writer *w = bg_safetensors_writer_new();
    bg_quantizer_list *q = NULL;
    float *qbuf = NULL;
    int32_t *fbuf = NULL;
    char *desc = NULL;
    uint8_t rng_bytes[16];
    dropout_ref *drops = calloc(CK_MAX_DROPOUT, sizeof *drops);
    uint8_t (*drop_bytes)[16] = calloc(CK_MAX_DROPOUT, 16);
    if (!w || !drops || !drop_bytes) {
        s = bg_set_error(BG_ERR_NOMEM, "checkpoint_save: out of memory");
        goto done;
    }
    const bg_module *m = ck->model;
    if (!(desc = bg_model_to_json(m))) {
        s = bg_last_status();
        goto done;
    }
    // Parameters, by their module names; a NaN or Inf is refused (a
    // checkpoint of a diverged run would replace a good one).
    const bg_kernels *k = bg_kernels_get();
    for (int i = 0; s == BG_OK && i < bg_module_param_count(m); i++) {
        const bg_tensor *t = bg_module_param(m, i);
        int64_t bad = k->first_nonfinite(bg_f32(t), bg_numel(t));
        if (bad >= 0)
            s = bg_set_error(BG_ERR_NAN, "checkpoint_save: %s: parameter %s has a NaN or Inf at index %lld (value %g); "
                             "nothing was written",
                             path, bg_module_param_name(m, i), (long long)bad,
                             isnan(bg_f32(t)[bad]) ? (double)NAN : (double)bg_f32(t)[bad]);
        else
            s = bg_safetensors_writer_add(w, bg_module_param_name(m, i), t);
    }
    // Optimizer state buffers, flat.
    bg_tensor opt_views[4];
    for (int i = 0; s == BG_OK && ck->opt && i < bg_optim_state_count(ck->opt) && i < 4; i++) {
        const char *name;
        int64_t n;
        float *buf = bg_optim_state(ck->opt, i, &name, &n);
        char key[BG_PARAM_NAME_MAX];
        snprintf(key, sizeof key, "optim.%s", name);
        opt_views[i] = view_of(BG_DTYPE_F32, 1, (const int64_t[]){n}, buf);
        s = bg_safetensors_writer_add(w, key, &opt_views[i]);
    }
    // Quantizer state: ranges [4, P] (rmin, rmax, scale, zero_point) and flags.
    if (s == BG_OK && !(q = bg_model_quantizer_list(m))) s = bg_last_status();
    int64_t total_p = 0;
    for (int i = 0; s == BG_OK && i < q->n; i++) total_p += bg_quant_state_num_scales(q->states[i]);
    if (s == BG_OK) {
        qbuf = malloc(sizeof(float) * (size_t)(4 * total_p + 1));
        fbuf = malloc(sizeof(int32_t) * (size_t)(CK_FLAGS * q->n + 1));
        if (!qbuf || !fbuf) s = bg_set_error(BG_ERR_NOMEM, "checkpoint_save: out of memory");
    }
    bg_tensor *qviews = s == BG_OK ? calloc((size_t)(2 * q->n + 1), sizeof *qviews) : NULL;
    if (s == BG_OK && !qviews) s = bg_set_error(BG_ERR_NOMEM, "checkpoint_save: out of memory");
    json_t *specs = json_object();
    if (s == BG_OK && !specs) s = bg_set_error(BG_ERR_NOMEM, "checkpoint_save: out of memory");
    int64_t off = 0;
    for (int i = 0; s == BG_OK && i < q->n; i++) {
        const bg_quant_state *st = q->states[i];
        int64_t p = bg_quant_state_num_scales(st);
        float *r = qbuf + off;
        bg_quant_state_flags fl;
        bg_quant_state_get_buffers(st, r, r + p, r + 2 * p, r + 3 * p, &fl);
        off += 4 * p;
        int32_t *f = fbuf + CK_FLAGS * i;
        f[0] = fl.observed, f[1] = fl.initialized, f[2] = fl.observer_on, f[3] = fl.enabled;
        f[4] = (int32_t)(uint32_t)((uint64_t)fl.calls & 0xffffffffu);
        f[5] = (int32_t)(uint32_t)((uint64_t)fl.calls >> 32);
        char key[BG_PARAM_NAME_MAX + 32], spec[BG_QUANT_SPEC_STR_MAX];
        if (p > 0) {
            snprintf(key, sizeof key, "quant.%s.ranges", q->names[i]);
            qviews[2 * i] = view_of(BG_DTYPE_F32, 2, (const int64_t[]){4, p}, r);
            s = bg_safetensors_writer_add(w, key, &qviews[2 * i]);
        }
        snprintf(key, sizeof key, "quant.%s.flags", q->names[i]);
        qviews[2 * i + 1] = view_of(BG_DTYPE_I32, 1, (const int64_t[]){CK_FLAGS}, f);
        if (s == BG_OK) s = bg_safetensors_writer_add(w, key, &qviews[2 * i + 1]);
        bg_quant_spec_format(bg_quant_state_spec(st), spec, sizeof spec);
        if (s == BG_OK && json_object_set_new(specs, q->names[i], json_string(spec)) != 0)
            s = bg_set_error(BG_ERR_NOMEM, "checkpoint_save: out of memory");
    }
    // RNG states: the training generator and each Dropout's.
    bg_tensor rng_view, drop_views[CK_MAX_DROPOUT];
    if (s == BG_OK && ck->rng) {
        rng_to_bytes(ck->rng, rng_bytes);
        rng_view = view_of(BG_DTYPE_U8, 1, (const int64_t[]){16}, rng_bytes);
        s = bg_safetensors_writer_add(w, "rng", &rng_view);
    }
    char pathbuf[BG_PARAM_NAME_MAX] = "";
    int nd = s == BG_OK ? find_dropouts(m, pathbuf, 0, drops, 0, CK_MAX_DROPOUT) : 0;
    if (nd > CK_MAX_DROPOUT)
        s = bg_set_error(BG_ERR_ARG, "checkpoint_save: the model has %d modules with their own generator, at most %d are supported", nd,
                         CK_MAX_DROPOUT);
    for (int i = 0; s == BG_OK && i < nd && i < CK_MAX_DROPOUT; i++) {
        char key[BG_PARAM_NAME_MAX + 32];
        snprintf(key, sizeof key, "dropout.%s.rng", drops[i].path);
        rng_to_bytes(drops[i].rng, drop_bytes[i]);
        drop_views[i] = view_of(BG_DTYPE_U8, 1, (const int64_t[]){16}, drop_bytes[i]);
        s = bg_safetensors_writer_add(w, key, &drop_views[i]);
    }
    // Metadata.
    if (s == BG_OK) s = bg_safetensors_writer_meta(w, "format", CK_FORMAT);
    if (s == BG_OK) s = bg_safetensors_writer_meta(w, "version", CK_VERSION);
    if (s == BG_OK) s = bg_safetensors_writer_meta(w, "model", desc);
    if (s == BG_OK) s = meta_json(w, "specs", json_incref(specs));
    if (s == BG_OK) s = meta_int(w, "step", ck->step);
    if (s == BG_OK) s = meta_int(w, "epoch", ck->epoch);
    if (s == BG_OK) s = meta_int(w, "batch_in_epoch", ck->batch_in_epoch);
    if (s == BG_OK && ck->ranks > 1) s = meta_int(w, "ranks", ck->ranks);
    if (s == BG_OK && ck->opt) s = meta_json(w, "optim", optim_json(ck->opt));
    if (s == BG_OK && ck->schedule) {
        char *buf = malloc(BG_SCHEDULE_STR_MAX * 2);
        if (!buf) {
            s = bg_set_error(BG_ERR_NOMEM, "checkpoint_save: out of memory");
        } else {
            int n = bg_schedule_save(ck->schedule, buf, BG_SCHEDULE_STR_MAX * 2);
            s = n < 0 || n >= BG_SCHEDULE_STR_MAX * 2
                    ? bg_set_error(BG_ERR_ARG, "checkpoint_save: the schedule's saved form is too long (%d bytes)", n)
                    : bg_safetensors_writer_meta(w, "schedule", buf);
            free(buf);
        }
    }
    if (s == BG_OK) s = bg_safetensors_writer_save(w, path);
    json_decref(specs);
    free(qviews);
done:
    bg_safetensors_writer_free(w);
    bg_quantizer_list_free(q);
    free(qbuf);
    free(fbuf);
    free(desc);
    free(drops);
    free(drop_bytes);
    return s;
}

// ---------------------------------------------------------------------------
// load: description comparison

/* Keys whose values may differ between the file and the model (a schedule
 * changes specs and enables); only their presence must agree. */
static bool is_quant_key(const char *k) {
    size_t n = strlen(k);
    return (n > 5 && strcmp(k + n - 5, "_spec") == 0) || (n > 8 && strcmp(k + n - 8, "_enabled") == 0);
}

/* Compares the file's node f with the model's node m; on the first
 * difference sets the error (naming the layer and the field). */
static bg_status compare_desc(const char *path, const char *where, json_t *f, json_t *m, char *lpath, size_t plen) {
    const char *lw = lpath[0] ? lpath : "(root)";
    if (!json_is_object(f))
        return bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: the model description's layer %s is not an object",
                            path, lw);
    const char *key;
    json_t *mv;
    json_object_foreach(m, key, mv) {
        json_t *fv = json_object_get(f, key);
        if (strcmp(key, "children") == 0 && fv && json_is_array(fv)) {
            size_t nf = json_array_size(fv), nm = json_array_size(mv);
            if (nf != nm)
                return bg_set_error(BG_ERR_SHAPE,
                                    "checkpoint_load: %s: layer %s has %zu children in the file, %zu in the model", path,
                                    lw, nf, nm);
            for (size_t i = 0; i < nm; i++) {
                json_t *cn = json_object_get(json_array_get(mv, i), "name");
                int w = snprintf(lpath + plen, BG_PARAM_NAME_MAX - plen, "%s%s", plen ? "." : "",
                                 json_is_string(cn) ? json_string_value(cn) : "?");
                size_t nl = w > 0 && plen + (size_t)w < BG_PARAM_NAME_MAX ? plen + (size_t)w : BG_PARAM_NAME_MAX - 1;
                bg_status s = compare_desc(path, where, json_array_get(fv, i), json_array_get(mv, i), lpath, nl);
                lpath[plen] = '\0';
                if (s != BG_OK) return s;
            }
            continue;
        }
        if (fv && (is_quant_key(key) || json_equal(fv, mv))) continue;
        if (!fv && strcmp(key, "name") == 0) continue;   // version 1 named children by position
        char *a = fv ? json_dumps(fv, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        char *b = json_dumps(mv, JSON_COMPACT | JSON_ENCODE_ANY);
        bg_status s = bg_set_error(BG_ERR_SHAPE, "checkpoint_load: %s: layer %s: %s is %.64s in the file, %.64s in the model",
                                   path, lw, key, a ? a : "absent", b ? b : "?");
        free(a);
        free(b);
        return s;
    }
    json_object_foreach(f, key, mv) {
        if (!json_object_get(m, key))
            return bg_set_error(BG_ERR_SHAPE, "checkpoint_load: %s: layer %s: %s is in the file, absent in the model",
                                path, lw, key);
    }
    (void)where;
    return BG_OK;
}

/* The file's "model" metadata against m's own description. */
static bg_status check_description(const char *path, const bg_safetensors *st, const bg_module *m) {
    const char *fd = bg_safetensors_metadata(st, "model");
    if (!fd) return bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: no model description (__metadata__ \"model\")", path);
    json_error_t jerr;
    json_t *froot = json_loads(fd, JSON_REJECT_DUPLICATES, &jerr);
    if (!froot)
        return bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: malformed model description: %s (line %d, column %d)",
                            path, jerr.text, jerr.line, jerr.column);
    char *md = bg_model_to_json(m);
    json_t *mroot = md ? json_loads(md, 0, NULL) : NULL;
    free(md);
    bg_status s = BG_OK;
    if (!mroot) {
        s = bg_last_status() != BG_OK ? bg_last_status() : BG_ERR_NOMEM;
    } else if (!json_is_object(froot) || !json_is_object(json_object_get(froot, "model"))) {
        s = bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: the model description has no \"model\" object", path);
    } else if (!json_equal(json_object_get(froot, "format"), json_object_get(mroot, "format")) ||
               !json_is_integer(json_object_get(froot, "version")) ||
               json_integer_value(json_object_get(froot, "version")) < 1 ||
               json_integer_value(json_object_get(froot, "version")) >
                   json_integer_value(json_object_get(mroot, "version"))) {
        s = bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: the model description is not bitgrad-model version 1 or 2",
                         path);
    } else {
        char lpath[BG_PARAM_NAME_MAX] = "";
        s = compare_desc(path, "", json_object_get(froot, "model"), json_object_get(mroot, "model"), lpath, 0);
    }
    json_decref(froot);
    json_decref(mroot);
    return s;
}

// ---------------------------------------------------------------------------
// load: the plan (everything checked, nothing applied yet)

typedef struct load_plan {
    bg_quantizer_list *q;                       /* heap, as the three arrays */
    bg_quant_spec *specs;
    const float **ranges;                       /* [4,P] or NULL when P = 0 */
    bg_quant_state_flags *flags;
    const float *optim[4];
    float lr;
    bool has_lr_schedule;
    bg_lr_schedule lr_schedule;
    int64_t step_count;
    bg_schedule *schedule;                      /* heap */
    const uint8_t *rng;
    dropout_ref drops[CK_MAX_DROPOUT];
    const uint8_t *drop_rng[CK_MAX_DROPOUT];
    int n_drops;
    int64_t step, epoch, batch, ranks;
} load_plan;

static bg_status get_tensor(const char *path, const bg_safetensors *st, const char *name, bg_dtype dtype, int ndim,
                            const int64_t *shape, const char *what, const void **data) {
    bg_tensor v;
    if (bg_safetensors_get(st, name, &v) != BG_OK)
        return bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: missing %s \"%s\"", path, what, name);
    bg_tensor want = view_of(dtype, ndim, shape, NULL);
    char a[BG_SHAPE_STR_MAX], b[BG_SHAPE_STR_MAX];
    if (v.dtype != dtype)
        return bg_set_error(BG_ERR_DTYPE, "checkpoint_load: %s: %s is %s in the file, want %s", path, name,
                            bg_dtype_name(v.dtype), bg_dtype_name(dtype));
    if (!bg_same_shape(&v, &want))
        return bg_set_error(BG_ERR_SHAPE, "checkpoint_load: %s: %s is %s in the file, %s in the model", path, name,
                            bg_shape_str(&v, a, sizeof a), bg_shape_str(&want, b, sizeof b));
    *data = v.data;
    return BG_OK;
}

static bg_status meta_int64(const char *path, const bg_safetensors *st, const char *key, int64_t *out) {
    const char *v = bg_safetensors_metadata(st, key);
    if (!v) return bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: missing __metadata__ \"%s\"", path, key);
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < 0)
        return bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: __metadata__ \"%s\" is not a non-negative integer: \"%.32s\"",
                            path, key, v);
    *out = (int64_t)x;
    return BG_OK;
}

/* The same learned parameters and number of scales (what set_spec keeps). */
static bool spec_compatible(const bg_quant_spec *a, const bg_quant_spec *b) {
    bool la = a->range == BG_QUANT_RANGE_LSQ || a->range == BG_QUANT_RANGE_LSQ_PLUS || a->range == BG_QUANT_RANGE_PACT;
    bool lb = b->range == BG_QUANT_RANGE_LSQ || b->range == BG_QUANT_RANGE_LSQ_PLUS || b->range == BG_QUANT_RANGE_PACT;
    if ((la || lb) && a->range != b->range) return false;
    if (a->granularity != b->granularity) return false;
    if (a->granularity == BG_QUANT_PER_CHANNEL && a->axis != b->axis) return false;
    if (a->granularity == BG_QUANT_PER_GROUP && a->group_size != b->group_size) return false;
    return true;
}

static bg_status plan_optim(const char *path, const bg_safetensors *st, const bg_optim *o, load_plan *p) {
    const char *txt = bg_safetensors_metadata(st, "optim");
    if (!txt) return bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: the file holds no optimizer state", path);
    json_t *j = json_loads(txt, JSON_REJECT_DUPLICATES, NULL);
    bg_status s = BG_OK;
    json_t *kind = json_object_get(j, "kind"), *lr = json_object_get(j, "lr"), *sc = json_object_get(j, "step_count"),
           *ls = json_object_get(j, "lr_schedule");
    if (!json_is_object(j) || !json_is_string(kind) || !json_is_number(lr) || !json_is_integer(sc) || !ls) {
        s = bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: __metadata__ \"optim\" is not a valid optimizer record", path);
        goto done;
    }
    if (strcmp(json_string_value(kind), bg_optim_kind(o)) != 0) {
        s = bg_set_error(BG_ERR_ARG, "checkpoint_load: %s: the optimizer is %.16s in the file, %s here", path,
                         json_string_value(kind), bg_optim_kind(o));
        goto done;
    }
    p->lr = (float)json_number_value(lr);
    p->step_count = (int64_t)json_integer_value(sc);
    if (!(p->lr > 0.0f) || !isfinite(p->lr) || p->step_count < 0) {
        s = bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: optimizer lr %g or step count %lld out of range", path,
                         (double)p->lr, (long long)p->step_count);
        goto done;
    }
    p->has_lr_schedule = !json_is_null(ls);
    if (p->has_lr_schedule) {
        int kind_i = 0;
        double base, gamma, min_lr;
        json_int_t step_size, warm, total;
        if (json_unpack(ls, "{s:i, s:F, s:I, s:F, s:I, s:I, s:F}", "kind", &kind_i, "base_lr", &base, "step_size",
                        &step_size, "gamma", &gamma, "warmup_steps", &warm, "total_steps", &total, "min_lr",
                        &min_lr) != 0 ||
            kind_i < 0 || kind_i >= BG_LR_KIND_COUNT) {
            s = bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: the optimizer's lr_schedule is not valid", path);
            goto done;
        }
        p->lr_schedule = (bg_lr_schedule){.kind = (bg_lr_kind)kind_i, .base_lr = (float)base, .step_size = step_size,
                                          .gamma = (float)gamma, .warmup_steps = warm, .total_steps = total,
                                          .min_lr = (float)min_lr};
        if (bg_lr_schedule_check(&p->lr_schedule) != BG_OK) {
            char msg[BG_ERROR_MAX];
            snprintf(msg, sizeof msg, "%s", bg_last_error());
            s = bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: the optimizer's %s", path, msg);
            goto done;
        }
    }
    for (int i = 0; i < bg_optim_state_count(o) && i < 4; i++) {
        const char *name;
        int64_t n;
        bg_optim_state(o, i, &name, &n);
        char key[BG_PARAM_NAME_MAX];
        snprintf(key, sizeof key, "optim.%s", name);
        const void *d;
        if ((s = get_tensor(path, st, key, BG_DTYPE_F32, 1, (const int64_t[]){n}, "optimizer state", &d)) != BG_OK)
            goto done;
        p->optim[i] = d;
    }
done:
    json_decref(j);
    return s;
}

/* Every tensor in the file must be one this loader knows. */
static bool known_tensor(const char *name, const bg_module *m) {
    if (bg_module_find_param(m, name) || strcmp(name, "rng") == 0) return true;
    return strncmp(name, "optim.", 6) == 0 || strncmp(name, "quant.", 6) == 0 || strncmp(name, "dropout.", 8) == 0;
}

static bg_status make_plan(const char *path, const bg_safetensors *st, const bg_checkpoint *ck, load_plan *p) {
    const bg_module *m = ck->model;
    bg_status s;
    const char *fmt = bg_safetensors_metadata(st, "format"), *ver = bg_safetensors_metadata(st, "version");
    if (!fmt || strcmp(fmt, CK_FORMAT) != 0)
        return bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: not a bitgrad checkpoint (__metadata__ \"format\" is not \"%s\")",
                            path, CK_FORMAT);
    if (!ver || strcmp(ver, CK_VERSION) != 0)
        return bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: unsupported format version \"%.16s\" (this build reads version %s)",
                            path, ver ? ver : "", CK_VERSION);
    if ((s = check_description(path, st, m)) != BG_OK) return s;
    if ((s = meta_int64(path, st, "step", &p->step)) != BG_OK || (s = meta_int64(path, st, "epoch", &p->epoch)) != BG_OK ||
        (s = meta_int64(path, st, "batch_in_epoch", &p->batch)) != BG_OK)
        return s;
    p->ranks = 1;
    if (bg_safetensors_metadata(st, "ranks") && (s = meta_int64(path, st, "ranks", &p->ranks)) != BG_OK) return s;
    for (int i = 0; i < bg_safetensors_count(st); i++) {
        const char *name = bg_safetensors_name(st, i);
        if (!known_tensor(name, m))
            return bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: unknown tensor \"%.128s\"", path, name);
    }
    // Parameters.
    for (int i = 0; i < bg_module_param_count(m); i++) {
        const bg_tensor *t = bg_module_param(m, i);
        const void *d;
        if ((s = get_tensor(path, st, bg_module_param_name(m, i), BG_DTYPE_F32, t->ndim, t->shape, "parameter", &d)) !=
            BG_OK)
            return s;
    }
    // Quantizers: spec (compatible with the state), ranges, flags.
    if (!(p->q = bg_model_quantizer_list(m))) return bg_last_status();
    size_t nq = (size_t)p->q->n + 1;
    p->specs = calloc(nq, sizeof *p->specs);
    p->ranges = calloc(nq, sizeof *p->ranges);
    p->flags = calloc(nq, sizeof *p->flags);
    if (!p->specs || !p->ranges || !p->flags)
        return bg_set_error(BG_ERR_NOMEM, "checkpoint_load: out of memory for %d quantizers", p->q->n);
    const char *stxt = bg_safetensors_metadata(st, "specs");
    json_t *specs = stxt ? json_loads(stxt, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (!json_is_object(specs)) {
        json_decref(specs);
        return bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: __metadata__ \"specs\" is missing or not a JSON object", path);
    }
    s = BG_OK;
    if ((int)json_object_size(specs) != p->q->n)
        s = bg_set_error(BG_ERR_SHAPE, "checkpoint_load: %s: the file has %zu quantizers, the model %d", path,
                         json_object_size(specs), p->q->n);
    for (int i = 0; s == BG_OK && i < p->q->n; i++) {
        const char *name = p->q->names[i];
        json_t *v = json_object_get(specs, name);
        if (!json_is_string(v)) {
            s = bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: no spec string for quantizer \"%s\"", path, name);
            break;
        }
        if (bg_quant_spec_parse(json_string_value(v), &p->specs[i]) != BG_OK) {
            char msg[BG_ERROR_MAX];
            snprintf(msg, sizeof msg, "%s", bg_last_error());
            s = bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: quantizer \"%s\": %s", path, name, msg);
            break;
        }
        const bg_quant_spec *cur = bg_quant_state_spec(p->q->states[i]);
        if (!spec_compatible(&p->specs[i], cur)) {
            char a[BG_QUANT_SPEC_STR_MAX];
            bg_quant_spec_format(cur, a, sizeof a);
            s = bg_set_error(BG_ERR_SHAPE, "checkpoint_load: %s: quantizer \"%s\" is \"%.160s\" in the file, \"%s\" in the model",
                             path, name, json_string_value(v), a);
            break;
        }
        int64_t np = bg_quant_state_num_scales(p->q->states[i]);
        char key[BG_PARAM_NAME_MAX + 32];
        const void *d = NULL;
        if (np > 0) {
            snprintf(key, sizeof key, "quant.%s.ranges", name);
            if ((s = get_tensor(path, st, key, BG_DTYPE_F32, 2, (const int64_t[]){4, np}, "quantizer state", &d)) != BG_OK)
                break;
        }
        p->ranges[i] = d;
        snprintf(key, sizeof key, "quant.%s.flags", name);
        if ((s = get_tensor(path, st, key, BG_DTYPE_I32, 1, (const int64_t[]){CK_FLAGS}, "quantizer state", &d)) != BG_OK)
            break;
        const int32_t *f = d;
        uint64_t calls = (uint64_t)(uint32_t)f[4] | (uint64_t)(uint32_t)f[5] << 32;
        for (int k = 0; k < 4 && s == BG_OK; k++)
            if (f[k] != 0 && f[k] != 1)
                s = bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: %s holds flag %d = %d, want 0 or 1", path, key, k,
                                 (int)f[k]);
        if (s == BG_OK && calls > (uint64_t)INT64_MAX)
            s = bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: %s holds a negative call count", path, key);
        p->flags[i] = (bg_quant_state_flags){.observed = f[0], .initialized = f[1], .observer_on = f[2],
                                             .enabled = f[3], .calls = (int64_t)calls};
    }
    json_decref(specs);
    if (s != BG_OK) return s;
    // Dropout generators (absent in files of models without Dropout).
    char pathbuf[BG_PARAM_NAME_MAX] = "";
    p->n_drops = find_dropouts(m, pathbuf, 0, p->drops, 0, CK_MAX_DROPOUT);
    if (p->n_drops > CK_MAX_DROPOUT)
        return bg_set_error(BG_ERR_ARG, "checkpoint_load: the model has %d modules with their own generator, at most %d are supported",
                            p->n_drops, CK_MAX_DROPOUT);
    for (int i = 0; i < p->n_drops; i++) {
        char key[BG_PARAM_NAME_MAX + 32];
        snprintf(key, sizeof key, "dropout.%s.rng", p->drops[i].path);
        const void *d;
        if ((s = get_tensor(path, st, key, BG_DTYPE_U8, 1, (const int64_t[]){16}, "RNG state", &d)) != BG_OK) return s;
        p->drop_rng[i] = d;
    }
    // The optional members.
    if (ck->opt && (s = plan_optim(path, st, ck->opt, p)) != BG_OK) return s;
    if (ck->rng) {
        const void *d;
        if ((s = get_tensor(path, st, "rng", BG_DTYPE_U8, 1, (const int64_t[]){16}, "RNG state", &d)) != BG_OK) return s;
        p->rng = d;
    }
    if (ck->schedule) {
        const char *txt = bg_safetensors_metadata(st, "schedule");
        if (!txt) return bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: the file holds no schedule", path);
        if (!(p->schedule = malloc(sizeof *p->schedule)))
            return bg_set_error(BG_ERR_NOMEM, "checkpoint_load: out of memory");
        if (bg_schedule_load(txt, p->schedule) != BG_OK) {
            char msg[BG_ERROR_MAX];
            snprintf(msg, sizeof msg, "%s", bg_last_error());
            return bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: %s", path, msg);
        }
    }
    return BG_OK;
}

/* Applies a checked plan: cannot fail. */
static void apply_plan(const bg_safetensors *st, bg_checkpoint *ck, const load_plan *p) {
    bg_module *m = ck->model;
    // Specs first: set_spec resets ranges (restored below) but keeps learned values.
    for (int i = 0; i < p->q->n; i++)
        if (!bg_quant_spec_equal(&p->specs[i], bg_quant_state_spec(p->q->states[i])))
            bg_quant_state_set_spec(p->q->states[i], &p->specs[i]);
    for (int i = 0; i < bg_module_param_count(m); i++) {
        bg_tensor *t = bg_module_param(m, i), v;
        bg_safetensors_get(st, bg_module_param_name(m, i), &v);
        memcpy(t->data, v.data, bg_nbytes(t));
    }
    for (int i = 0; i < p->q->n; i++) {
        int64_t np = bg_quant_state_num_scales(p->q->states[i]);
        const float *r = p->ranges[i];
        bg_quant_state_set_buffers(p->q->states[i], r, r ? r + np : NULL, r ? r + 2 * np : NULL, r ? r + 3 * np : NULL,
                                   &p->flags[i]);
    }
    for (int i = 0; i < p->n_drops; i++) rng_from_bytes(p->drops[i].rng, p->drop_rng[i]);
    if (ck->opt) {
        for (int i = 0; i < bg_optim_state_count(ck->opt) && i < 4; i++) {
            const char *name;
            int64_t n;
            float *buf = bg_optim_state(ck->opt, i, &name, &n);
            memcpy(buf, p->optim[i], sizeof(float) * (size_t)n);
        }
        bg_optim_set_step_count(ck->opt, p->step_count);
        bg_optim_set_lr(ck->opt, p->lr);
        if (p->has_lr_schedule) bg_optim_set_schedule(ck->opt, &p->lr_schedule);
    }
    if (ck->rng) rng_from_bytes(ck->rng, p->rng);
    if (ck->schedule) *ck->schedule = *p->schedule;
    ck->step = p->step;
    ck->epoch = p->epoch;
    ck->batch_in_epoch = p->batch;
    ck->ranks = p->ranks > 0 ? p->ranks : 1;
}

bg_status bg_checkpoint_load(const char *path, bg_checkpoint *ck) {
    if (!path || !ck || !ck->model)
        return bg_set_error(BG_ERR_ARG, "checkpoint_load: %s is NULL", !path ? "path" : !ck ? "ck" : "ck->model");
    bg_safetensors *st;
    bg_status s = bg_safetensors_open(path, &st);
    if (s != BG_OK) return s;
    load_plan *p = calloc(1, sizeof *p);
    if (!p) {
        bg_safetensors_free(st);
        return bg_set_error(BG_ERR_NOMEM, "checkpoint_load: out of memory");
    }
    s = make_plan(path, st, ck, p);
    if (s == BG_OK) apply_plan(st, ck, p);
    free(p->schedule);
    bg_quantizer_list_free(p->q);
    free(p->specs);
    free(p->ranges);
    free(p->flags);
    free(p);
    bg_safetensors_free(st);
    return s;
}

/* Every f32 value the file holds: a bound on the model's parameters. */
static int64_t f32_values(const bg_safetensors *st) {
    int64_t n = 0;
    for (int i = 0; i < bg_safetensors_count(st); i++) {
        bg_tensor v;
        if (bg_safetensors_get(st, bg_safetensors_name(st, i), &v) == BG_OK && v.dtype == BG_DTYPE_F32)
            n += bg_numel(&v);
    }
    return n;
}

bg_status bg_checkpoint_load_model(const char *path, bg_module **model) {
    if (!model) return bg_set_error(BG_ERR_ARG, "checkpoint_load_model: model is NULL");
    *model = NULL;
    if (!path) return bg_set_error(BG_ERR_ARG, "checkpoint_load_model: path is NULL");
    bg_safetensors *st;
    bg_status s = bg_safetensors_open(path, &st);
    if (s != BG_OK) return s;
    const char *desc = bg_safetensors_metadata(st, "model");
    bg_module *m = NULL;
    if (!desc) {
        s = bg_set_error(BG_ERR_FORMAT, "checkpoint_load: %s: no model description (__metadata__ \"model\")", path);
    } else if ((s = bg_model_from_json_within(desc, f32_values(st), &m)) != BG_OK) {
        char msg[BG_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", bg_last_error());
        s = bg_set_error(s, "checkpoint_load: %s: %s", path, msg);
    }
    bg_safetensors_free(st);
    if (s == BG_OK) {
        bg_checkpoint ck = {.model = m};
        s = bg_checkpoint_load(path, &ck);
    }
    if (s != BG_OK) {
        bg_module_free(m);
        return s;
    }
    *model = m;
    return BG_OK;
}
