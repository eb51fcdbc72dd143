/* registry.c — the kind registry (DESIGN.md "Model kinds are open") and the
 * JSON helpers that kinds' save_hparams / load_hparams hooks use. Built-in
 * kinds are listed once below; a user's kinds are added at run time. Kind
 * names are compared here and nowhere else. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "layers/layers_internal.h"

/* One line per built-in kind. */
static const bg_module_type *const builtin_types[] = {
    &bg_sequential_type, &bg_residual_type, &bg_linear_type, &bg_conv2d_type, &bg_embedding_type,
    &bg_layernorm_type, &bg_rmsnorm_type, &bg_dropout_type, &bg_relu_type, &bg_leaky_relu_type,
    &bg_gelu_type, &bg_silu_type, &bg_tanh_type, &bg_sigmoid_type, &bg_flatten_type,
    &bg_max_pool2d_type, &bg_avg_pool2d_type, &bg_fake_quant_type, &bg_qlinear_type, &bg_qconv2d_type,
    &bg_qembedding_type, &bg_bitlinear_type, &bg_transformer_block_type, &bg_transformer_lm_type,
};
#define N_BUILTIN ((int)(sizeof builtin_types / sizeof builtin_types[0]))

/* Kinds registered by the program. */
#define MAX_USER_TYPES 256
static const bg_module_type *user_types[MAX_USER_TYPES];
static int n_user_types;

int bg_module_type_count(void) { return N_BUILTIN + n_user_types; }

const bg_module_type *bg_module_type_at(int i) {
    if (i < 0 || i >= bg_module_type_count()) return NULL;
    return i < N_BUILTIN ? builtin_types[i] : user_types[i - N_BUILTIN];
}

const bg_module_type *bg_module_find_type(const char *kind) {
    if (!kind) return NULL;
    for (int i = 0; i < bg_module_type_count(); i++) {
        const bg_module_type *t = bg_module_type_at(i);
        if (strcmp(t->kind, kind) == 0) return t;
    }
    return NULL;
}

bg_status bg_module_register_type(const bg_module_type *type) {
    if (!type || !type->kind || !type->kind[0])
        return bg_set_error(BG_ERR_ARG, "module_register_type: %s", type ? "the kind has no name" : "type is NULL");
    if (!type->forward || !type->load_hparams)
        return bg_set_error(BG_ERR_ARG, "module_register_type: kind \"%s\" has no %s hook", type->kind,
                            type->forward ? "load_hparams" : "forward");
    const bg_module_type *have = bg_module_find_type(type->kind);
    if (have == type) return BG_OK;
    if (have)
        return bg_set_error(BG_ERR_ARG, "module_register_type: another type is already registered as \"%s\"",
                            type->kind);
    if (n_user_types == MAX_USER_TYPES)
        return bg_set_error(BG_ERR_ARG, "module_register_type: more than %d kinds", MAX_USER_TYPES);
    user_types[n_user_types++] = type;
    return BG_OK;
}

// ---------------------------------------------------------------------------
// getters

static bg_status bad_field(const char *key, const char *what) {
    return bg_set_error(BG_ERR_FORMAT, "field \"%s\" must be %s", key, what);
}

static json_t *member(const json_t *hp, const char *key, bg_status *st) {
    json_t *v = json_is_object(hp) && key ? json_object_get(hp, key) : NULL;
    *st = v ? BG_OK : bg_set_error(BG_ERR_FORMAT, "missing field \"%s\"", key ? key : "(null)");
    return v;
}

bool bg_hparam_has(const json_t *hp, const char *key) {
    return json_is_object(hp) && key && json_object_get(hp, key) != NULL;
}

static bool int_in(const json_t *v, int64_t lo, int64_t hi) {
    return json_is_integer(v) && json_integer_value(v) >= lo && json_integer_value(v) <= hi;
}

bg_status bg_hparam_get_int(const json_t *hp, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    bg_status st;
    json_t *v = member(hp, key, &st);
    if (!v) return st;
    if (!int_in(v, lo, hi)) {
        char what[96];
        snprintf(what, sizeof what, "an integer in [%lld, %lld]", (long long)lo, (long long)hi);
        return bad_field(key, what);
    }
    *out = (int64_t)json_integer_value(v);
    return BG_OK;
}

bg_status bg_hparam_get_pair(const json_t *hp, const char *key, int64_t lo, int64_t hi, int64_t out[2]) {
    bg_status st;
    json_t *v = member(hp, key, &st);
    if (!v) return st;
    if (!json_is_array(v) || json_array_size(v) != 2 || !int_in(json_array_get(v, 0), lo, hi) ||
        !int_in(json_array_get(v, 1), lo, hi)) {
        char what[96];
        snprintf(what, sizeof what, "a pair of integers in [%lld, %lld]", (long long)lo, (long long)hi);
        return bad_field(key, what);
    }
    for (size_t i = 0; i < 2; i++) out[i] = (int64_t)json_integer_value(json_array_get(v, i));
    return BG_OK;
}

bg_status bg_hparam_get_bool(const json_t *hp, const char *key, bool *out) {
    bg_status st;
    json_t *v = member(hp, key, &st);
    if (!v) return st;
    if (!json_is_boolean(v)) return bad_field(key, "true or false");
    *out = json_is_true(v);
    return BG_OK;
}

bg_status bg_hparam_get_float(const json_t *hp, const char *key, float *out) {
    bg_status st;
    json_t *v = member(hp, key, &st);
    if (!v) return st;
    if (!json_is_number(v) || !isfinite(json_number_value(v))) return bad_field(key, "a number");
    *out = (float)json_number_value(v);
    return BG_OK;
}

bg_status bg_hparam_get_string(const json_t *hp, const char *key, const char **out) {
    bg_status st;
    json_t *v = member(hp, key, &st);
    if (!v) return st;
    if (!json_is_string(v)) return bad_field(key, "a string");
    *out = json_string_value(v);
    return BG_OK;
}

// ---------------------------------------------------------------------------
// setters: every jansson call checked

static bg_status set(json_t *hp, const char *key, json_t *v) {
    if (!json_is_object(hp) || !key) {
        json_decref(v);
        return bg_set_error(BG_ERR_ARG, "hparam_set: %s", key ? "not a JSON object" : "key is NULL");
    }
    if (!v || json_object_set_new(hp, key, v) != 0)
        return bg_set_error(BG_ERR_NOMEM, "hparam_set: out of memory for \"%s\"", key);
    return BG_OK;
}

bg_status bg_hparam_set_int(json_t *hp, const char *key, int64_t v) { return set(hp, key, json_integer(v)); }
bg_status bg_hparam_set_bool(json_t *hp, const char *key, bool v) { return set(hp, key, json_boolean(v)); }
bg_status bg_hparam_set_float(json_t *hp, const char *key, double v) { return set(hp, key, json_real(v)); }
bg_status bg_hparam_set_string(json_t *hp, const char *key, const char *v) {
    return set(hp, key, v ? json_string(v) : NULL);
}
bg_status bg_hparam_set_pair(json_t *hp, const char *key, int64_t a, int64_t b) {
    return set(hp, key, json_pack("[I,I]", (json_int_t)a, (json_int_t)b));
}

bg_status bg_hparam_check_numel(int n, const int64_t *sizes) {
    int64_t total = 1;
    for (int i = 0; i < n; i++) {
        if (sizes[i] > BG_HPARAM_MAX_NUMEL / total)
            return bg_set_error(BG_ERR_FORMAT, "the weight would hold more than %lld elements",
                                (long long)BG_HPARAM_MAX_NUMEL);
        total *= sizes[i];
    }
    return BG_OK;
}
