/* model_desc.c — model descriptions: a module tree as JSON and back to a
 * freshly initialised model (io/io.h "model descriptions and checkpoints").
 * Generic over the kind registry (layers.h): each kind's save_hparams /
 * load_hparams hooks write and read its own fields; this file adds the
 * kind, the child names and the tree. JSON through jansson. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "io/io.h"

#define DESC_FORMAT "bitgrad-model"
/* Version 2 names every child ("name") and describes any registered kind;
 * version 1 (Sequential children by position) is still read. */
#define DESC_VERSION 2
#define DESC_MIN_VERSION 1
/* Deeper trees are rejected (a hostile description must not blow the stack). */
#define DESC_MAX_DEPTH 32
/* Seed of the generator that initialises a model built from a description. */
#define DESC_INIT_SEED 0
/* The most children a described container may have. */
#define DESC_MAX_CHILDREN 100000

// ---------------------------------------------------------------------------
// model -> JSON

/* Re-raises the current error as "model_desc: layer <where>: <message>". */
static bg_status layer_error(bg_status st, const char *where) {
    char msg[BG_ERROR_MAX];
    snprintf(msg, sizeof msg, "%s", bg_last_error());
    return bg_set_error(st, "model_desc: layer %s: %s", where, msg);
}

static json_t *describe(const bg_module *m, const char *name, const char *path, int depth);

/* The "children" array of a container node. */
static bg_status describe_children(json_t *o, const bg_module *m, const char *path, int depth) {
    json_t *arr = json_array();
    if (!arr || json_object_set_new(o, "children", arr) != 0) return bg_set_error(BG_ERR_NOMEM, "model_desc: out of memory");
    for (int i = 0; i < bg_module_num_children(m); i++) {
        const char *cn = bg_module_child_name(m, i);
        char cp[BG_PARAM_NAME_MAX];
        if (snprintf(cp, sizeof cp, "%s%s%s", path, path[0] ? "." : "", cn) >= (int)sizeof cp)
            return bg_set_error(BG_ERR_ARG, "model_desc: layer %s.%s: the path is longer than %d characters", path, cn,
                                BG_PARAM_NAME_MAX - 1);
        json_t *c = describe(bg_module_child(m, i), cn, cp, depth + 1);
        if (!c) return bg_last_status();
        if (json_array_append_new(arr, c) != 0) return bg_set_error(BG_ERR_NOMEM, "model_desc: out of memory");
    }
    return BG_OK;
}

/* The node of m (path names it in errors): {"name"?, "kind", hparams...,
 * "children"?}; NULL + bg_last_error. */
static json_t *describe(const bg_module *m, const char *name, const char *path, int depth) {
    const bg_module_type *t = bg_module_type_of(m);
    const char *where = path[0] ? path : "(root)";
    if (depth > DESC_MAX_DEPTH) {
        bg_set_error(BG_ERR_ARG, "model_desc: layer %s: the tree is deeper than %d", where, DESC_MAX_DEPTH);
        return NULL;
    }
    if (bg_module_find_type(t->kind) != t) {
        bg_set_error(BG_ERR_ARG, "model_desc: layer %s: kind \"%s\" is not registered (bg_module_register_type)",
                     where, t->kind);
        return NULL;
    }
    json_t *o = json_object(), *kind = json_string(t->kind);
    bg_status st = BG_OK;
    if (!o || !kind || (name && json_object_set_new(o, "name", json_string(name)) != 0) ||
        json_object_set(o, "kind", kind) != 0) {
        st = bg_set_error(BG_ERR_NOMEM, "model_desc: out of memory");
        goto fail;
    }
    if (t->save_hparams && (st = t->save_hparams(m, o)) != BG_OK) {
        layer_error(st, where);
        goto fail;
    }
    // The hook must leave the loader's keys alone (the same "kind" value, by identity).
    if (json_object_get(o, "kind") != kind || json_object_get(o, "children") || (name && !json_object_get(o, "name"))) {
        st = bg_set_error(BG_ERR_ARG, "model_desc: layer %s: %s's save_hparams wrote a reserved key (kind, name, children)",
                          where, t->kind);
        goto fail;
    }
    if (!t->builds_children && bg_module_num_children(m) > 0 && describe_children(o, m, path, depth) != BG_OK) goto fail;
    json_decref(kind);
    return o;
fail:
    json_decref(kind);
    json_decref(o);
    return NULL;
}

char *bg_model_to_json(const bg_module *model) {
    if (!model) {
        bg_set_error(BG_ERR_ARG, "model_desc: model is NULL");
        return NULL;
    }
    json_t *node = describe(model, NULL, "", 0);
    if (!node) return NULL;
    json_t *root = json_pack("{s:s, s:i, s:o}", "format", DESC_FORMAT, "version", DESC_VERSION, "model", node);
    char *s = root ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(root);
    if (!s) bg_set_error(BG_ERR_NOMEM, "model_desc: out of memory");
    return s;
}

// ---------------------------------------------------------------------------
// JSON -> model

typedef struct desc_ctx {
    bg_rng rng;
    char path[BG_PARAM_NAME_MAX];   /* the layer being built, "" for the root */
} desc_ctx;

static const char *where(const desc_ctx *d) { return d->path[0] ? d->path : "(root)"; }

static bg_module *fail_at(const desc_ctx *d, const char *fmt, const char *a, const char *b) {
    char msg[BG_ERROR_MAX];
    snprintf(msg, sizeof msg, fmt, a, b);
    bg_set_error(BG_ERR_FORMAT, "model_desc: layer %s: %s", where(d), msg);
    return NULL;
}

static bg_module *build(desc_ctx *d, json_t *o, int depth);

/* The name of child i of a node: its "name", or its position (version 1). */
static bool child_name(json_t *c, int i, char *buf, size_t len) {
    json_t *nv = json_is_object(c) ? json_object_get(c, "name") : NULL;
    if (!nv) return snprintf(buf, len, "%d", i) > 0;
    if (!json_is_string(nv)) return false;
    return snprintf(buf, len, "%s", json_string_value(nv)) < (int)len;
}

/* Builds the described children of a container node and adds them to m. */
static bg_status build_children(desc_ctx *d, json_t *o, bg_module *m, int depth) {
    json_t *arr = json_object_get(o, "children");
    if (!arr) return BG_OK;
    if (!json_is_array(arr) || json_array_size(arr) > DESC_MAX_CHILDREN) {
        char what[64];
        snprintf(what, sizeof what, "an array of at most %d layers", DESC_MAX_CHILDREN);
        fail_at(d, "field \"%s\" must be %s", "children", what);
        return BG_ERR_FORMAT;
    }
    size_t plen = strlen(d->path);
    for (int i = 0; i < (int)json_array_size(arr); i++) {
        json_t *c = json_array_get(arr, (size_t)i);
        char name[BG_PARAM_NAME_MAX];
        if (!child_name(c, i, name, sizeof name) ||
            snprintf(d->path + plen, sizeof d->path - plen, "%s%s", plen ? "." : "", name) >= (int)(sizeof d->path - plen)) {
            d->path[plen] = '\0';
            fail_at(d, "child %s has a bad name (want a string of at most %s characters)", i ? "> 0" : "0", "127");
            return BG_ERR_FORMAT;
        }
        bg_module *child = build(d, c, depth + 1);
        if (child && bg_module_add_child(m, name, child) != BG_OK) {   // add_child frees child on failure
            layer_error(BG_ERR_FORMAT, where(d));
            child = NULL;
        }
        d->path[plen] = '\0';
        if (!child) return BG_ERR_FORMAT;
    }
    return BG_OK;
}

static bg_module *build(desc_ctx *d, json_t *o, int depth) {
    if (depth > DESC_MAX_DEPTH) return fail_at(d, "%s%s", "the tree is too deep", "");
    if (!json_is_object(o)) return fail_at(d, "%s%s", "not a JSON object", "");
    json_t *kv = json_object_get(o, "kind");
    if (!kv) return fail_at(d, "missing field \"%s\"%s", "kind", "");
    if (!json_is_string(kv)) return fail_at(d, "field \"%s\" must be %s", "kind", "a string");
    const bg_module_type *t = bg_module_find_type(json_string_value(kv));
    if (!t)
        return fail_at(d, "unknown kind \"%s\": register it with bg_module_register_type before loading%s",
                       json_string_value(kv), "");
    if (t->builds_children && json_object_get(o, "children"))
        return fail_at(d, "a %s describes no children%s", t->kind, "");
    bg_module *m = t->load_hparams(o, &d->rng);
    if (!m) {
        layer_error(BG_ERR_FORMAT, where(d));
        return NULL;
    }
    if (bg_module_type_of(m) != t) {
        bg_module_free(m);
        return fail_at(d, "%s's load_hparams made a module of another kind%s", t->kind, "");
    }
    if (!t->builds_children && build_children(d, o, m, depth) != BG_OK) {
        bg_module_free(m);
        return NULL;
    }
    if (bg_module_finalize(m) != BG_OK) {
        layer_error(bg_last_status(), where(d));
        bg_module_free(m);
        return NULL;
    }
    return m;
}

bg_status bg_model_from_json(const char *json, bg_module **out) { return bg_model_from_json_within(json, -1, out); }

bg_status bg_model_from_json_within(const char *json, int64_t max_param_floats, bg_module **out) {
    if (!out) return bg_set_error(BG_ERR_ARG, "model_desc: out is NULL");
    *out = NULL;
    if (!json) return bg_set_error(BG_ERR_ARG, "model_desc: json is NULL");
    json_error_t jerr;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return bg_set_error(BG_ERR_FORMAT, "model_desc: malformed JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                            jerr.column);
    bg_status s = BG_OK;
    json_t *fmt = json_object_get(root, "format"), *ver = json_object_get(root, "version");
    if (!json_is_object(root) || !json_is_string(fmt) || strcmp(json_string_value(fmt), DESC_FORMAT) != 0) {
        s = bg_set_error(BG_ERR_FORMAT, "model_desc: not a model description (want \"format\": \"%s\")", DESC_FORMAT);
    } else if (!json_is_integer(ver) || json_integer_value(ver) < DESC_MIN_VERSION ||
               json_integer_value(ver) > DESC_VERSION) {
        char v[32] = "(not an integer)";
        if (json_is_integer(ver)) snprintf(v, sizeof v, "%lld", (long long)json_integer_value(ver));
        s = bg_set_error(BG_ERR_FORMAT, "model_desc: unsupported version %s (this build reads versions %d to %d)", v,
                         DESC_MIN_VERSION, DESC_VERSION);
    } else {
        desc_ctx d;
        memset(&d, 0, sizeof d);
        bg_rng_seed(&d.rng, DESC_INIT_SEED);
        json_t *model = json_object_get(root, "model");
        int64_t prev = bg_module_param_limit(max_param_floats);
        if (!model) s = bg_set_error(BG_ERR_FORMAT, "model_desc: missing field \"model\"");
        else if (!(*out = build(&d, model, 0))) s = bg_last_status() != BG_OK ? bg_last_status() : BG_ERR_FORMAT;
        bg_module_param_limit(prev);
    }
    json_decref(root);
    return s;
}
