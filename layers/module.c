/* module.c — bg_module: the tree, parameter registration, collation of every
 * parameter of a tree into one params and one grads buffer, flat access,
 * names, freezing, train/eval. Calls tensor/ and kernels/ only; the layers
 * themselves (layers.c) call autograd/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/layers.h"
#include "tensor/tensor_internal.h"

/* Parameters start on a 64-byte boundary inside the flat buffers. */
#define PARAM_ALIGN_FLOATS ((int64_t)(BG_ALIGN / sizeof(float)))

typedef struct param_entry {
    char *name;          /* local name ("weight") */
    bg_tensor *t;        /* header over the current storage; grad likewise */
    float *own_data;     /* standalone storage until the tree is collated */
    float *own_grad;
} param_entry;

struct bg_module {
    const bg_module_type *type;
    void *state;
    bool training;
    bg_module *parent;

    param_entry *params;   /* own parameters, registration order */
    int n_params, cap_params;

    bg_module **children;
    char **child_names;
    int n_children, cap_children;

    // The subtree's parameters in named_parameters() order. Rebuilt on every
    // structural change of a root; children are frozen in shape once adopted,
    // so their lists stay valid.
    int n_flat;
    bg_tensor **flat_t;
    char **flat_names;

    // Member names (parameters and children) hashed, for the uniqueness
    // check: a container of 100k children is built in linear time.
    const char **name_slots;   /* open addressing, NULL = empty */
    int cap_slots;             /* a power of two, > 2 x members, or 0 */

    // The subtree's range of the root's buffers (valid when collated).
    bool collated;
    float *flat_params, *flat_grads;
    int64_t flat_n;

    // Buffers owned by this module (it was the root at finalize time).
    float *own_params, *own_grads;
};

/* Parameter values bg_module_add_param may still register on this thread
 * (bg_module_param_limit); -1 = no limit. */
static _Thread_local int64_t param_limit = -1;

int64_t bg_module_param_limit(int64_t max_floats) {
    int64_t prev = param_limit;
    param_limit = max_floats < 0 ? -1 : max_floats;
    return prev;
}

static int64_t padded(int64_t n) { return (n + PARAM_ALIGN_FLOATS - 1) / PARAM_ALIGN_FLOATS * PARAM_ALIGN_FLOATS; }

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static const char *kind_of(const bg_module *m) { return m && m->type->kind ? m->type->kind : "module"; }

// ---------------------------------------------------------------------------
// creation and freeing

bg_module *bg_module_new(const bg_module_type *type, void *state) {
    if (!type || !type->forward) {
        if (type && type->free_state && state) type->free_state(state);
        bg_set_error(BG_ERR_ARG, "module_new: type or its forward is NULL");
        return NULL;
    }
    bg_module *m = calloc(1, sizeof *m);
    if (!m) {
        if (type->free_state && state) type->free_state(state);
        bg_set_error(BG_ERR_NOMEM, "module_new: out of memory");
        return NULL;
    }
    m->type = type;
    m->state = state;
    m->training = true;
    return m;
}

void *bg_module_state(const bg_module *m) { return m ? m->state : NULL; }

static void free_lists(bg_module *m) {
    for (int i = 0; i < m->n_flat; i++) free(m->flat_names[i]);
    free(m->flat_names);
    free(m->flat_t);
    m->flat_names = NULL;
    m->flat_t = NULL;
    m->n_flat = 0;
}

static void free_names_index(bg_module *m) {
    free(m->name_slots);
    m->name_slots = NULL;
    m->cap_slots = 0;
}

static void free_tree(bg_module *m) {
    for (int i = 0; i < m->n_children; i++) {
        free_tree(m->children[i]);
        free(m->child_names[i]);
    }
    free(m->children);
    free(m->child_names);
    for (int i = 0; i < m->n_params; i++) {
        param_entry *e = &m->params[i];
        bg_tensor_free(e->t);   // frees the grad header too (owns_grad)
        bg_aligned_free(e->own_data);
        bg_aligned_free(e->own_grad);
        free(e->name);
    }
    free(m->params);
    free_lists(m);
    free_names_index(m);
    bg_aligned_free(m->own_params);
    bg_aligned_free(m->own_grads);
    if (m->type->free_state && m->state) m->type->free_state(m->state);
    free(m);
}

void bg_module_free(bg_module *m) {
    if (!m) return;
    if (m->parent) {
        // Freeing a child would leave its container with dangling tensors.
        bg_set_error(BG_ERR_STATE, "module_free: this %s belongs to a %s; free the root", kind_of(m),
                     kind_of(m->parent));
        return;
    }
    free_tree(m);
}

// ---------------------------------------------------------------------------
// flat lists (names and tensors of a subtree, named_parameters() order)

/* Rebuilds m's list from its own parameters and its children's lists. */
static bg_status rebuild_lists(bg_module *m) {
    int n = m->n_params;
    for (int c = 0; c < m->n_children; c++) n += m->children[c]->n_flat;
    bg_tensor **ts = calloc((size_t)(n ? n : 1), sizeof *ts);
    char **names = calloc((size_t)(n ? n : 1), sizeof *names);
    if (!ts || !names) goto nomem;
    int k = 0;
    for (int i = 0; i < m->n_params; i++, k++) {
        ts[k] = m->params[i].t;
        if (!(names[k] = dup_str(m->params[i].name))) goto nomem;
    }
    for (int c = 0; c < m->n_children; c++) {
        const bg_module *ch = m->children[c];
        for (int i = 0; i < ch->n_flat; i++, k++) {
            ts[k] = ch->flat_t[i];
            size_t len = strlen(m->child_names[c]) + 1 + strlen(ch->flat_names[i]) + 1;
            if (!(names[k] = malloc(len))) goto nomem;
            snprintf(names[k], len, "%s.%s", m->child_names[c], ch->flat_names[i]);
        }
    }
    free_lists(m);
    m->flat_t = ts;
    m->flat_names = names;
    m->n_flat = n;
    return BG_OK;
nomem:
    if (names)
        for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    free(ts);
    return bg_set_error(BG_ERR_NOMEM, "module: out of memory building the parameter list of %s",
                        kind_of(m));
}

/* Appends child c's list to m's (the child is the last one, so its
 * parameters come last in named_parameters() order). */
static bg_status append_child_list(bg_module *m, int c) {
    const bg_module *ch = m->children[c];
    if (ch->n_flat == 0) return BG_OK;
    int n = m->n_flat + ch->n_flat;
    bg_tensor **ts = realloc(m->flat_t, (size_t)n * sizeof *ts);
    if (ts) m->flat_t = ts;
    char **names = ts ? realloc(m->flat_names, (size_t)n * sizeof *names) : NULL;
    if (names) m->flat_names = names;
    int k = m->n_flat;
    for (int i = 0; names && i < ch->n_flat; i++, k++) {
        m->flat_t[k] = ch->flat_t[i];
        size_t len = strlen(m->child_names[c]) + 1 + strlen(ch->flat_names[i]) + 1;
        if (!(m->flat_names[k] = malloc(len))) break;
        snprintf(m->flat_names[k], len, "%s.%s", m->child_names[c], ch->flat_names[i]);
    }
    if (k == n) {
        m->n_flat = n;
        return BG_OK;
    }
    for (int i = m->n_flat; names && i < k; i++) free(m->flat_names[i]);
    return bg_set_error(BG_ERR_NOMEM, "module: out of memory building the parameter list of %s", kind_of(m));
}

static bool valid_local_name(const char *name) {
    return name && name[0] && !strchr(name, '.') && strlen(name) < BG_PARAM_NAME_MAX;
}

static uint32_t name_hash(const char *s) {   // FNV-1a
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* The slot of name in m's index: where it is, or the empty slot where it
 * would go. */
static const char **name_slot(const bg_module *m, const char *name) {
    uint32_t mask = (uint32_t)m->cap_slots - 1;
    for (uint32_t i = name_hash(name) & mask;; i = (i + 1) & mask)
        if (!m->name_slots[i] || strcmp(m->name_slots[i], name) == 0) return &m->name_slots[i];
}

/* Rebuilds the index for at least `members` names (those of m now). */
static bool names_index_grow(bg_module *m, int members) {
    int cap = 16;
    while (cap <= 2 * members) cap *= 2;
    const char **slots = calloc((size_t)cap, sizeof *slots);
    if (!slots) return false;
    free(m->name_slots);
    m->name_slots = slots;
    m->cap_slots = cap;
    for (int i = 0; i < m->n_params; i++) *name_slot(m, m->params[i].name) = m->params[i].name;
    for (int i = 0; i < m->n_children; i++) *name_slot(m, m->child_names[i]) = m->child_names[i];
    return true;
}

static bool local_name_taken(const bg_module *m, const char *name) {
    return m->cap_slots && *name_slot(m, name) != NULL;
}

/* Adds a member's name (owned by m's arrays) to the index; false when out
 * of memory. */
static bool names_index_add(bg_module *m, const char *name) {
    int members = m->n_params + m->n_children;   // name already counted
    if (2 * members >= m->cap_slots) return names_index_grow(m, members);
    *name_slot(m, name) = name;
    return true;
}

// ---------------------------------------------------------------------------
// registration

bg_tensor *bg_module_add_param(bg_module *m, const char *name, int ndim, const int64_t *shape) {
    if (!m) {
        bg_set_error(BG_ERR_ARG, "module_add_param: module is NULL");
        return NULL;
    }
    if (m->parent) {
        bg_set_error(BG_ERR_STATE, "module_add_param: %s already belongs to a %s", kind_of(m),
                     kind_of(m->parent));
        return NULL;
    }
    if (!valid_local_name(name)) {
        bg_set_error(BG_ERR_ARG, "module_add_param: bad name \"%s\" (want non-empty, no '.')",
                     name ? name : "(null)");
        return NULL;
    }
    if (local_name_taken(m, name)) {
        bg_set_error(BG_ERR_ARG, "module_add_param: %s already has a member named %s", kind_of(m),
                     name);
        return NULL;
    }
    if (m->n_params == m->cap_params) {
        int cap = m->cap_params ? 2 * m->cap_params : 4;
        param_entry *p = realloc(m->params, (size_t)cap * sizeof *p);
        if (!p) goto nomem;
        m->params = p;
        m->cap_params = cap;
    }
    param_entry e = {0};
    int64_t n;
    if (bg_shape_check(ndim, shape, "module_add_param", &n) != BG_OK) return NULL;
    if (param_limit >= 0 && n > param_limit) {
        char a[BG_SHAPE_STR_MAX];
        bg_tensor h = {.ndim = ndim};
        memcpy(h.shape, shape, sizeof(int64_t) * (size_t)ndim);
        bg_set_error(BG_ERR_SHAPE, "%s's %s %s needs %lld values, more than the %lld left of the file's parameters",
                     kind_of(m), name, bg_shape_str(&h, a, sizeof a), (long long)n, (long long)param_limit);
        return NULL;
    }
    if (param_limit >= 0) param_limit -= n;
    size_t bytes = (size_t)n * sizeof(float);
    e.name = dup_str(name);
    e.own_data = bg_aligned_alloc(bytes);
    e.own_grad = bg_aligned_alloc(bytes);
    e.t = e.own_data ? bg_tensor_wrap(BG_DTYPE_F32, ndim, shape, e.own_data) : NULL;
    if (e.t && e.own_grad) e.t->grad = bg_tensor_wrap(BG_DTYPE_F32, ndim, shape, e.own_grad);
    if (!e.name || !e.own_data || !e.own_grad || !e.t || !e.t->grad) {
        if (e.t) bg_tensor_free(e.t->grad);
        if (e.t) e.t->grad = NULL;
        bg_tensor_free(e.t);
        free(e.name);
        bg_aligned_free(e.own_data);
        bg_aligned_free(e.own_grad);
        goto nomem;
    }
    memset(e.own_data, 0, bytes);
    memset(e.own_grad, 0, bytes);
    e.t->owns_grad = true;
    e.t->requires_grad = true;
    e.t->name = e.name;
    m->params[m->n_params++] = e;
    m->collated = false;
    if (!names_index_add(m, e.name) || rebuild_lists(m) != BG_OK) {
        // Keep the tree consistent: drop the parameter again.
        m->n_params--;
        names_index_grow(m, m->n_params + m->n_children);
        bg_tensor_free(e.t);
        free(e.name);
        bg_aligned_free(e.own_data);
        bg_aligned_free(e.own_grad);
        return NULL;
    }
    return e.t;
nomem:
    bg_set_error(BG_ERR_NOMEM, "module_add_param: out of memory for %s of %s", name, kind_of(m));
    return NULL;
}

bg_status bg_module_add_child(bg_module *m, const char *name, bg_module *child) {
    if (!m || !child) {
        if (child && !child->parent) free_tree(child);
        return bg_set_error(BG_ERR_ARG, "module_add_child: %s is NULL", m ? "child" : "module");
    }
    bg_status st = BG_OK;
    if (child->parent)
        // Not ours to free: it belongs to another container.
        return bg_set_error(BG_ERR_STATE, "module_add_child: this %s already belongs to a %s",
                            kind_of(child), kind_of(child->parent));
    if (child == m)
        st = bg_set_error(BG_ERR_ARG, "module_add_child: a %s cannot contain itself", kind_of(m));
    else if (m->parent)
        st = bg_set_error(BG_ERR_STATE, "module_add_child: %s already belongs to a %s", kind_of(m),
                          kind_of(m->parent));
    else if (!valid_local_name(name))
        st = bg_set_error(BG_ERR_ARG, "module_add_child: bad name \"%s\" (want non-empty, no '.')",
                          name ? name : "(null)");
    else if (local_name_taken(m, name))
        st = bg_set_error(BG_ERR_ARG, "module_add_child: %s already has a member named %s",
                          kind_of(m), name);
    if (st != BG_OK) {
        free_tree(child);
        return st;
    }
    if (m->n_children == m->cap_children) {
        int cap = m->cap_children ? 2 * m->cap_children : 4;
        bg_module **c = realloc(m->children, (size_t)cap * sizeof *c);
        if (c) m->children = c;
        char **nm = c ? realloc(m->child_names, (size_t)cap * sizeof *nm) : NULL;
        if (nm) m->child_names = nm;
        if (!c || !nm) {
            free_tree(child);
            return bg_set_error(BG_ERR_NOMEM, "module_add_child: out of memory");
        }
        m->cap_children = cap;
    }
    char *nm = dup_str(name);
    if (!nm) {
        free_tree(child);
        return bg_set_error(BG_ERR_NOMEM, "module_add_child: out of memory");
    }
    m->children[m->n_children] = child;
    m->child_names[m->n_children] = nm;
    m->n_children++;
    child->parent = m;
    m->collated = false;
    if (!names_index_add(m, nm) || (st = append_child_list(m, m->n_children - 1)) != BG_OK) {
        m->n_children--;
        names_index_grow(m, m->n_params + m->n_children);   // drops nm (smaller: cannot fail in practice)
        free(nm);
        child->parent = NULL;
        free_tree(child);
        return st != BG_OK ? st : bg_set_error(BG_ERR_NOMEM, "module_add_child: out of memory");
    }
    return BG_OK;
}

/* Swaps child i of m for child (a root), frees the old child and
 * re-collates the root's buffers (used by qlayers.c to convert a layer in
 * place). On failure child is freed and the tree is unchanged. */
bg_status bg_module_replace_child(bg_module *m, int i, bg_module *child) {
    if (!m || !child || i < 0 || i >= m->n_children) {
        if (child && !child->parent) free_tree(child);
        return bg_set_error(BG_ERR_ARG, "module_replace_child: %s", !m ? "module is NULL" : !child ? "child is NULL" : "index out of range");
    }
    if (child->parent)
        return bg_set_error(BG_ERR_STATE, "module_replace_child: this %s already belongs to a %s", kind_of(child),
                            kind_of(child->parent));
    bg_module *old = m->children[i];
    m->children[i] = child;
    child->parent = m;
    bg_module *root = m;
    for (bg_module *p = m; p; p = p->parent) {
        p->collated = false;
        root = p;
    }
    bg_status st = BG_OK;
    for (bg_module *p = m; p && st == BG_OK; p = p->parent) st = rebuild_lists(p);
    if (st == BG_OK) st = bg_module_finalize(root);
    if (st != BG_OK) {   // put the old child back
        m->children[i] = old;
        child->parent = NULL;
        free_tree(child);
        for (bg_module *p = m; p; p = p->parent) rebuild_lists(p);
        bg_module_finalize(root);
        return st;
    }
    old->parent = NULL;
    free_tree(old);
    return BG_OK;
}

// ---------------------------------------------------------------------------
// collation

static int64_t subtree_floats(const bg_module *m) {
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++) n += padded(bg_numel(m->params[i].t));
    for (int c = 0; c < m->n_children; c++) n += subtree_floats(m->children[c]);
    return n;
}

/* Moves the subtree's parameters to P/G starting at *off (pre-order: own
 * parameters, then children), frees their previous storage and records each
 * module's range. The old storage of a module is freed only after its whole
 * subtree has been copied out of it. */
static void place(bg_module *m, float *P, float *G, int64_t *off) {
    int64_t start = *off;
    for (int i = 0; i < m->n_params; i++) {
        param_entry *e = &m->params[i];
        int64_t n = bg_numel(e->t);
        memcpy(P + *off, e->t->data, (size_t)n * sizeof(float));
        memcpy(G + *off, e->t->grad->data, (size_t)n * sizeof(float));
        e->t->data = P + *off;
        e->t->grad->data = G + *off;
        bg_aligned_free(e->own_data);
        bg_aligned_free(e->own_grad);
        e->own_data = e->own_grad = NULL;
        *off += padded(n);
    }
    for (int c = 0; c < m->n_children; c++) place(m->children[c], P, G, off);
    m->flat_n = *off - start;
    m->flat_params = m->flat_n ? P + start : NULL;
    m->flat_grads = m->flat_n ? G + start : NULL;
    m->collated = true;
}

static void free_owned_buffers(bg_module *m, const float *keep) {
    for (int c = 0; c < m->n_children; c++) free_owned_buffers(m->children[c], keep);
    if (m->own_params && m->own_params != keep) {
        bg_aligned_free(m->own_params);
        bg_aligned_free(m->own_grads);
        m->own_params = m->own_grads = NULL;
    }
}

bg_status bg_module_finalize(bg_module *m) {
    if (!m) return bg_set_error(BG_ERR_ARG, "module_finalize: module is NULL");
    if (m->parent)
        return bg_set_error(BG_ERR_STATE, "module_finalize: this %s belongs to a %s; finalize the root",
                            kind_of(m), kind_of(m->parent));
    if (m->collated) return BG_OK;
    int64_t total = subtree_floats(m);
    float *P = NULL, *G = NULL;
    if (total > 0) {
        size_t bytes = (size_t)total * sizeof(float);
        P = bg_aligned_alloc(bytes);
        G = bg_aligned_alloc(bytes);
        if (!P || !G) {
            bg_aligned_free(P);
            bg_aligned_free(G);
            return bg_set_error(BG_ERR_NOMEM, "module_finalize: cannot allocate 2 x %zu bytes for %s",
                                bytes, kind_of(m));
        }
        memset(P, 0, bytes);   // padding is zero and stays zero
        memset(G, 0, bytes);
    }
    int64_t off = 0;
    place(m, P, G, &off);
    BG_ASSERT(off == total);
    // Every buffer that held parameters before now holds none.
    free_owned_buffers(m, NULL);
    m->own_params = P;
    m->own_grads = G;
    return BG_OK;
}

// ---------------------------------------------------------------------------
// structure, mode, description

const char *bg_module_kind(const bg_module *m) { return m ? kind_of(m) : ""; }

int bg_module_describe(const bg_module *m, char *buf, size_t len) {
    if (!m) return snprintf(buf, len, "(null)");
    if (m->type->describe) return m->type->describe(m, buf, len);
    return snprintf(buf, len, "%s()", kind_of(m));
}

static void print_tree(const bg_module *m, FILE *f, int depth, const char *label) {
    char line[256];
    bg_module_describe(m, line, sizeof line);
    fprintf(f, "%*s%s%s", 2 * depth, "", label, m->n_children ? "" : line);
    if (m->n_children) {
        // "Sequential(" like PyTorch: the kind, then the children indented.
        fprintf(f, "%s(\n", kind_of(m));
        for (int c = 0; c < m->n_children; c++) {
            char lab[BG_PARAM_NAME_MAX + 8];
            snprintf(lab, sizeof lab, "(%s): ", m->child_names[c]);
            print_tree(m->children[c], f, depth + 1, lab);
        }
        fprintf(f, "%*s)", 2 * depth, "");
    }
    fprintf(f, "\n");
}

void bg_module_print(const bg_module *m, FILE *f) {
    if (!m || !f) return;
    print_tree(m, f, 0, "");
    fprintf(f, "parameters: %lld in %d tensors\n", (long long)bg_module_numel(m),
            bg_module_param_count(m));
}

void bg_module_train(bg_module *m, bool training) {
    if (!m) return;
    m->training = training;
    for (int c = 0; c < m->n_children; c++) bg_module_train(m->children[c], training);
}

bool bg_module_is_training(const bg_module *m) { return m && m->training; }

int bg_module_num_children(const bg_module *m) { return m ? m->n_children : 0; }

bg_module *bg_module_child(const bg_module *m, int i) {
    return m && i >= 0 && i < m->n_children ? m->children[i] : NULL;
}

const char *bg_module_child_name(const bg_module *m, int i) {
    return m && i >= 0 && i < m->n_children ? m->child_names[i] : NULL;
}

bg_module *bg_module_find_child(const bg_module *m, const char *name) {
    for (int i = 0; m && name && i < m->n_children; i++)
        if (strcmp(m->child_names[i], name) == 0) return m->children[i];
    return NULL;
}

const bg_module_type *bg_module_type_of(const bg_module *m) { return m ? m->type : NULL; }

// ---------------------------------------------------------------------------
// forward

bg_tensor *bg_module_forward(bg_ctx *ctx, bg_module *m, bg_tensor *x) {
    if (!ctx) {
        bg_set_error(BG_ERR_ARG, "module_forward: ctx is NULL");
        return NULL;
    }
    if (bg_ctx_status(ctx) != BG_OK) return NULL;
    if (!m) return bg_ctx_fail(ctx, BG_ERR_ARG, "module_forward: module is NULL");
    if (!x) return bg_ctx_fail(ctx, BG_ERR_ARG, "%s: input is NULL", kind_of(m));
    return m->type->forward(ctx, m, x);
}

// ---------------------------------------------------------------------------
// parameters

int bg_module_param_count(const bg_module *m) { return m ? m->n_flat : 0; }

bg_tensor *bg_module_param(const bg_module *m, int i) {
    return m && i >= 0 && i < m->n_flat ? m->flat_t[i] : NULL;
}

const char *bg_module_param_name(const bg_module *m, int i) {
    return m && i >= 0 && i < m->n_flat ? m->flat_names[i] : NULL;
}

static int find_index(const bg_module *m, const char *name) {
    if (!m || !name) return -1;
    for (int i = 0; i < m->n_flat; i++)
        if (strcmp(m->flat_names[i], name) == 0) return i;
    return -1;
}

bg_tensor *bg_module_find_param(const bg_module *m, const char *name) {
    int i = find_index(m, name);
    return i < 0 ? NULL : m->flat_t[i];
}

int64_t bg_module_numel(const bg_module *m) {
    int64_t n = 0;
    for (int i = 0; m && i < m->n_flat; i++) n += bg_numel(m->flat_t[i]);
    return n;
}

float *bg_module_flat_params(const bg_module *m, int64_t *n) {
    bool ok = m && m->collated && m->flat_params;
    if (n) *n = ok ? m->flat_n : 0;
    return ok ? m->flat_params : NULL;
}

float *bg_module_flat_grads(const bg_module *m, int64_t *n) {
    bool ok = m && m->collated && m->flat_grads;
    if (n) *n = ok ? m->flat_n : 0;
    return ok ? m->flat_grads : NULL;
}

int64_t bg_module_param_offset(const bg_module *m, int i) {
    if (!m || !m->collated || i < 0 || i >= m->n_flat) return -1;
    return (int64_t)((const float *)m->flat_t[i]->data - m->flat_params) * (int64_t)sizeof(float);
}

void bg_module_zero_grad(bg_module *m) {
    if (!m) return;
    if (m->collated) {
        if (m->flat_grads) memset(m->flat_grads, 0, (size_t)m->flat_n * sizeof(float));
        return;
    }
    // Not collated yet (a custom tree being built): parameter by parameter.
    for (int i = 0; i < m->n_flat; i++) memset(m->flat_t[i]->grad->data, 0, bg_nbytes(m->flat_t[i]));
}

static bg_status check_param_io(const bg_module *m, const char *who, const char *name,
                                const bg_tensor *other, const char *other_what, bg_tensor **out) {
    if (!m || !name || !other)
        return bg_set_error(BG_ERR_ARG, "%s: %s is NULL", who,
                            !m ? "module" : !name ? "name" : other_what);
    bg_tensor *p = bg_module_find_param(m, name);
    if (!p) return bg_set_error(BG_ERR_ARG, "%s: no parameter named %s", who, name);
    char a[BG_SHAPE_STR_MAX], b[BG_SHAPE_STR_MAX];
    if (other->dtype != BG_DTYPE_F32)
        return bg_set_error(BG_ERR_DTYPE, "%s: %s is %s, want f32 for %s", who, other_what,
                            bg_dtype_name(other->dtype), name);
    if (!bg_same_shape(p, other))
        return bg_set_error(BG_ERR_SHAPE, "%s: %s is %s, %s is %s", who, name,
                            bg_shape_str(p, a, sizeof a), other_what,
                            bg_shape_str(other, b, sizeof b));
    *out = p;
    return BG_OK;
}

bg_status bg_module_set_param(bg_module *m, const char *name, const bg_tensor *src) {
    bg_tensor *p;
    bg_status st = check_param_io(m, "module_set_param", name, src, "source", &p);
    return st != BG_OK ? st : bg_copy(p, src);
}

bg_status bg_module_get_param(const bg_module *m, const char *name, bg_tensor *dst) {
    bg_tensor *p;
    bg_status st = check_param_io(m, "module_get_param", name, dst, "destination", &p);
    return st != BG_OK ? st : bg_copy(dst, p);
}

void bg_module_freeze(bg_module *m, bool frozen) {
    for (int i = 0; m && i < m->n_flat; i++) m->flat_t[i]->requires_grad = !frozen;
}

bg_status bg_module_set_trainable(bg_module *m, const char *name, bool trainable) {
    if (!m || !name) return bg_set_error(BG_ERR_ARG, "module_set_trainable: %s is NULL", m ? "name" : "module");
    bg_tensor *p = bg_module_find_param(m, name);
    if (!p) return bg_set_error(BG_ERR_ARG, "module_set_trainable: no parameter named %s", name);
    p->requires_grad = trainable;
    return BG_OK;
}

int64_t bg_module_trainable_numel(const bg_module *m) {
    int64_t n = 0;
    for (int i = 0; m && i < m->n_flat; i++)
        if (m->flat_t[i]->requires_grad) n += bg_numel(m->flat_t[i]);
    return n;
}
