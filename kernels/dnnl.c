/* dnnl.c — the oneDNN (v2.x C API) backends: f32 matmul for bg_sgemm (and
 * the stateless dnnl_sgemm for bg_sgemm_serial) and
 * 2-D convolution forward / backward data / backward weights. Primitives are
 * created once per shape and kept in small caches together with their
 * memory objects (whose data handles are re-pointed on each call) and the
 * reorders between our plain layouts and the convolution's blocked ones;
 * outputs that our contract accumulates are reordered back with a sum
 * post-op. After the first call for a shape nothing is created or allocated. oneDNN runs on
 * the OpenMP pool (Debian's libdnnl is built with OpenMP), so it follows
 * omp_set_num_threads. Without BG_WITH_DNNL this file compiles to nothing. */
#include "kernels/kernels_internal.h"

#if defined(BG_WITH_DNNL)
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

// ---------------------------------------------------------------------------
// engine, stream, lock

static dnnl_engine_t engine;
static dnnl_stream_t stream;
static bool dnnl_ready;
static mtx_t lock;
static once_flag init_once = ONCE_FLAG_INIT;

static void dnnl_init(void) {
    if (mtx_init(&lock, mtx_plain) != thrd_success) return;
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) return;
    if (dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) return;
    dnnl_ready = true;
}

static bool ready(void) {
    call_once(&init_once, dnnl_init);
    return dnnl_ready;
}

/* Creates the primitive for an operation descriptor; NULL when oneDNN has
 * no implementation for it. */
static dnnl_primitive_t make_primitive(const void *op_desc, const_dnnl_primitive_attr_t attr,
                                       const_dnnl_primitive_desc_t hint,
                                       dnnl_primitive_desc_t *pd_out) {
    dnnl_primitive_desc_t pd;
    if (dnnl_primitive_desc_create(&pd, op_desc, attr, engine, hint) != dnnl_success) return NULL;
    dnnl_primitive_t p;
    if (dnnl_primitive_create(&p, pd) != dnnl_success) {
        dnnl_primitive_desc_destroy(pd);
        return NULL;
    }
    if (pd_out)
        *pd_out = pd;
    else
        dnnl_primitive_desc_destroy(pd);
    return p;
}

static dnnl_memory_t make_memory(const dnnl_memory_desc_t *md) {
    dnnl_memory_t m;
    if (dnnl_memory_create(&m, md, engine, DNNL_MEMORY_NONE) != dnnl_success) return NULL;
    return m;
}

static bool set_handle(dnnl_memory_t m, const void *p) {
    return dnnl_memory_set_data_handle(m, (void *)(uintptr_t)p) == dnnl_success;
}

// ---------------------------------------------------------------------------
// matmul: C = alpha op(A) op(B) + beta C, row-major with leading dimensions,
// expressed through strides: op(A) is [M,K] with strides {lda,1} or {1,lda}.

/* oneDNN fixes a primitive's thread partition when it is created, so the
 * thread count is part of every cache key */
typedef struct gemm_key {
    int64_t M, N, K, lda, ldb, ldc;
    int64_t ta, tb, nthr;
    float alpha, beta;
} gemm_key;

typedef struct gemm_entry {
    gemm_key key;
    dnnl_primitive_t prim;   /* NULL: slot free */
    dnnl_memory_t a, b, c;
} gemm_entry;

enum { GEMM_CACHE = 64 };
static gemm_entry gemm_cache[GEMM_CACHE];
static int gemm_victim;   /* round-robin replacement when full */

static void gemm_entry_free(gemm_entry *e) {
    if (e->prim) dnnl_primitive_destroy(e->prim);
    if (e->a) dnnl_memory_destroy(e->a);
    if (e->b) dnnl_memory_destroy(e->b);
    if (e->c) dnnl_memory_destroy(e->c);
    memset(e, 0, sizeof *e);
}

static bool gemm_entry_make(gemm_entry *e, const gemm_key *k) {
    dnnl_memory_desc_t a_md, b_md, c_md;
    dnnl_dims_t a_dims = {k->M, k->K}, b_dims = {k->K, k->N}, c_dims = {k->M, k->N};
    dnnl_dims_t a_str = {k->ta ? 1 : k->lda, k->ta ? k->lda : 1};
    dnnl_dims_t b_str = {k->tb ? 1 : k->ldb, k->tb ? k->ldb : 1};
    dnnl_dims_t c_str = {k->ldc, 1};
    if (dnnl_memory_desc_init_by_strides(&a_md, 2, a_dims, dnnl_f32, a_str) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&b_md, 2, b_dims, dnnl_f32, b_str) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&c_md, 2, c_dims, dnnl_f32, c_str) != dnnl_success)
        return false;
    dnnl_matmul_desc_t desc;
    if (dnnl_matmul_desc_init(&desc, &a_md, &b_md, NULL, &c_md) != dnnl_success) return false;
    dnnl_primitive_attr_t attr;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success) return false;
    bool ok = true;
    if (k->alpha != 1.0f) ok = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &k->alpha) == dnnl_success;
    if (ok && k->beta != 0.0f) {
        /* C = alpha AB + beta C: the sum post-op scales the old C by beta */
        dnnl_post_ops_t po;
        ok = dnnl_post_ops_create(&po) == dnnl_success;
        if (ok) {
            ok = dnnl_post_ops_append_sum(po, k->beta) == dnnl_success &&
                 dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
            dnnl_post_ops_destroy(po);
        }
    }
    e->prim = ok ? make_primitive(&desc, attr, NULL, NULL) : NULL;
    dnnl_primitive_attr_destroy(attr);
    if (!e->prim) return false;
    e->a = make_memory(&a_md);
    e->b = make_memory(&b_md);
    e->c = make_memory(&c_md);
    e->key = *k;
    if (!e->a || !e->b || !e->c) {
        gemm_entry_free(e);
        return false;
    }
    return true;
}

/* under the lock */
static gemm_entry *gemm_lookup(const gemm_key *k) {
    for (int i = 0; i < GEMM_CACHE; i++)
        if (gemm_cache[i].prim && memcmp(&gemm_cache[i].key, k, sizeof *k) == 0)
            return &gemm_cache[i];
    int slot = -1;
    for (int i = 0; i < GEMM_CACHE && slot < 0; i++)
        if (!gemm_cache[i].prim) slot = i;
    if (slot < 0) {
        slot = gemm_victim;
        gemm_victim = (gemm_victim + 1) % GEMM_CACHE;
        gemm_entry_free(&gemm_cache[slot]);
    }
    return gemm_entry_make(&gemm_cache[slot], k) ? &gemm_cache[slot] : NULL;
}

bool bg_sgemm_dnnl(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                   int64_t ldc) {
    gemm_key k;
    memset(&k, 0, sizeof k);   /* the key is compared with memcmp */
    k.M = M, k.N = N, k.K = K, k.lda = lda, k.ldb = ldb, k.ldc = ldc;
    k.ta = trans_a, k.tb = trans_b, k.alpha = alpha, k.beta = beta;
    k.nthr = omp_get_max_threads();
    bool done = false;
    if (ready() && M > 0 && N > 0 && K > 0) {
        mtx_lock(&lock);
        gemm_entry *e = gemm_lookup(&k);
        if (e && set_handle(e->a, A) && set_handle(e->b, B) && set_handle(e->c, C)) {
            dnnl_exec_arg_t args[3] = {
                {DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b}, {DNNL_ARG_DST, e->c}};
            done = dnnl_primitive_execute(e->prim, stream, 3, args) == dnnl_success &&
                   dnnl_stream_wait(stream) == dnnl_success;
        }
        mtx_unlock(&lock);
    }
    return done;
}

/* dnnl_sgemm: row-major like ours, stateless (no primitive to cache), so
 * safe to call from several threads at once; it runs on the calling thread
 * when called inside a parallel region or with one OpenMP thread
 * (bg_sgemm_serial arranges the latter). */
bool bg_sgemm_dnnl_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                          const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                          float *C, int64_t ldc) {
    return dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C,
                      ldc) == dnnl_success;
}

// ---------------------------------------------------------------------------
// int8 matmul for bg_gemm_s8_dnnl: acc[M,N] = x[M,K] w[N,K]^T, s8 x s8 ->
// s32, plain row-major operands with leading dimensions; own small cache,
// keyed like the f32 one (the thread count included).

typedef struct s8_key {
    int64_t M, N, K, ldx, ldw, nthr;
} s8_key;

typedef struct s8_entry {
    s8_key key;
    dnnl_primitive_t prim;   /* NULL: slot free */
    dnnl_memory_t x, w, acc;
} s8_entry;

enum { S8_CACHE = 32 };
static s8_entry s8_cache[S8_CACHE];
static int s8_victim;

static void s8_entry_free(s8_entry *e) {
    if (e->prim) dnnl_primitive_destroy(e->prim);
    if (e->x) dnnl_memory_destroy(e->x);
    if (e->w) dnnl_memory_destroy(e->w);
    if (e->acc) dnnl_memory_destroy(e->acc);
    memset(e, 0, sizeof *e);
}

static bool s8_entry_make(s8_entry *e, const s8_key *k) {
    dnnl_memory_desc_t x_md, w_md, acc_md;
    dnnl_dims_t x_dims = {k->M, k->K}, w_dims = {k->K, k->N}, acc_dims = {k->M, k->N};
    dnnl_dims_t x_str = {k->ldx, 1}, w_str = {1, k->ldw}, acc_str = {k->N, 1};
    if (dnnl_memory_desc_init_by_strides(&x_md, 2, x_dims, dnnl_s8, x_str) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&w_md, 2, w_dims, dnnl_s8, w_str) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&acc_md, 2, acc_dims, dnnl_s32, acc_str) != dnnl_success)
        return false;
    dnnl_matmul_desc_t desc;
    if (dnnl_matmul_desc_init(&desc, &x_md, &w_md, NULL, &acc_md) != dnnl_success) return false;
    e->prim = make_primitive(&desc, NULL, NULL, NULL);
    if (!e->prim) return false;
    e->x = make_memory(&x_md);
    e->w = make_memory(&w_md);
    e->acc = make_memory(&acc_md);
    e->key = *k;
    if (!e->x || !e->w || !e->acc) {
        s8_entry_free(e);
        return false;
    }
    return true;
}

/* under the lock */
static s8_entry *s8_lookup(const s8_key *k) {
    for (int i = 0; i < S8_CACHE; i++)
        if (s8_cache[i].prim && memcmp(&s8_cache[i].key, k, sizeof *k) == 0) return &s8_cache[i];
    int slot = -1;
    for (int i = 0; i < S8_CACHE && slot < 0; i++)
        if (!s8_cache[i].prim) slot = i;
    if (slot < 0) {
        slot = s8_victim;
        s8_victim = (s8_victim + 1) % S8_CACHE;
        s8_entry_free(&s8_cache[slot]);
    }
    return s8_entry_make(&s8_cache[slot], k) ? &s8_cache[slot] : NULL;
}

/* Without VNNI, oneDNN's s8 kernels add 128 to x and sum u8 x s8 pairs in
 * int16 (vpmaddubsw), which saturates: inexact, so refused (false). */
static bool s8_exact;
static once_flag s8_once = ONCE_FLAG_INIT;

static void s8_init(void) {
    unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    s8_exact = (isa & 0x40u) != 0 || (isa & 0x400u) != 0;   /* avx512_core_vnni / avx2_vnni bits */
}

bool bg_gemm_s8_dnnl(int32_t *acc, const int8_t *x, const int8_t *w, int64_t M, int64_t N,
                     int64_t K, int64_t ldx, int64_t ldw) {
    call_once(&s8_once, s8_init);
    if (!s8_exact || !ready()) return false;
    if (M <= 0 || N <= 0) return true;
    if (K <= 0) {
        memset(acc, 0, (size_t)(M * N) * sizeof *acc);
        return true;
    }
    s8_key k;
    memset(&k, 0, sizeof k);   /* the key is compared with memcmp */
    k.M = M, k.N = N, k.K = K, k.ldx = ldx, k.ldw = ldw;
    k.nthr = omp_get_max_threads();
    bool done = false;
    mtx_lock(&lock);
    s8_entry *e = s8_lookup(&k);
    if (e && set_handle(e->x, x) && set_handle(e->w, w) && set_handle(e->acc, acc)) {
        dnnl_exec_arg_t args[3] = {
            {DNNL_ARG_SRC, e->x}, {DNNL_ARG_WEIGHTS, e->w}, {DNNL_ARG_DST, e->acc}};
        done = dnnl_primitive_execute(e->prim, stream, 3, args) == dnnl_success &&
               dnnl_stream_wait(stream) == dnnl_success;
    }
    mtx_unlock(&lock);
    return done;
}

// ---------------------------------------------------------------------------
// convolution. Our tensors are plain NCHW / OIHW (GOIHW with groups); the
// primitive is created with format "any" so that oneDNN picks its blocked
// layouts (nChw16c, ...) and its fast JIT kernels instead of the gemm-based
// path plain layouts get. Each argument whose layout differs is reordered
// into a buffer oneDNN allocated at creation (inputs before, outputs after);
// outputs that accumulate (dx, dw, db) are always reordered back with a sum
// post-op: user += result, with no scratch pass of our own.

typedef enum conv_kind { CONV_FWD, CONV_BWD_DATA, CONV_BWD_WEIGHTS } conv_kind;

typedef struct conv_key {
    bg_conv2d_shape s;
    int64_t kind, has_bias, nthr;
} conv_key;

typedef struct conv_arg {
    int which;                  /* DNNL_ARG_* */
    bool output;
    dnnl_memory_t user;         /* our buffer; handle set on each call */
    dnnl_memory_t inner;        /* the primitive's layout, or NULL: user used directly */
    dnnl_primitive_t reorder;   /* user -> inner (input), inner -> user (output) */
} conv_arg;

typedef struct conv_entry {
    conv_key key;
    dnnl_primitive_t prim;   /* NULL: slot free */
    conv_arg args[4];
    int nargs;
} conv_entry;

enum { CONV_CACHE = 32 };
static conv_entry conv_cache[CONV_CACHE];
static int conv_victim;

static void conv_entry_free(conv_entry *e) {
    if (e->prim) dnnl_primitive_destroy(e->prim);
    for (int i = 0; i < e->nargs; i++) {
        conv_arg *a = &e->args[i];
        if (a->reorder) dnnl_primitive_destroy(a->reorder);
        if (a->inner) dnnl_memory_destroy(a->inner);
        if (a->user) dnnl_memory_destroy(a->user);
    }
    memset(e, 0, sizeof *e);
}

static bool conv_arg_init(conv_arg *a, int which, const dnnl_memory_desc_t *user_md,
                          const dnnl_memory_desc_t *prim_md, bool output, bool accumulate) {
    a->which = which;
    a->output = output;
    a->user = make_memory(user_md);
    if (!a->user) return false;
    if (!accumulate && dnnl_memory_desc_equal(user_md, prim_md)) return true;
    if (dnnl_memory_create(&a->inner, prim_md, engine, DNNL_MEMORY_ALLOCATE) != dnnl_success) {
        a->inner = NULL;
        return false;
    }
    dnnl_primitive_attr_t attr = NULL;
    if (accumulate) {
        dnnl_post_ops_t po;
        if (dnnl_primitive_attr_create(&attr) != dnnl_success) return false;
        bool ok = dnnl_post_ops_create(&po) == dnnl_success;
        if (ok) {
            ok = dnnl_post_ops_append_sum(po, 1.0f) == dnnl_success &&
                 dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
            dnnl_post_ops_destroy(po);
        }
        if (!ok) {
            dnnl_primitive_attr_destroy(attr);
            return false;
        }
    }
    dnnl_primitive_desc_t pd;
    dnnl_status_t st = output ? dnnl_reorder_primitive_desc_create(&pd, prim_md, engine, user_md,
                                                                   engine, attr)
                              : dnnl_reorder_primitive_desc_create(&pd, user_md, engine, prim_md,
                                                                   engine, attr);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) return false;
    st = dnnl_primitive_create(&a->reorder, pd);
    dnnl_primitive_desc_destroy(pd);
    if (st != dnnl_success) a->reorder = NULL;
    return a->reorder != NULL;
}

typedef struct conv_mds {
    dnnl_memory_desc_t src, wei, bias, dst;           /* plain: ours */
    dnnl_memory_desc_t src_any, wei_any, dst_any;     /* format any: oneDNN's choice */
    dnnl_dims_t strides, dilates, pad_l, pad_r;
} conv_mds;

static bool conv_mds_init(const bg_conv2d_shape *s, conv_mds *d) {
    dnnl_dims_t src = {s->n, s->c, s->h, s->w}, dst = {s->n, s->oc, s->oh, s->ow};
    dnnl_dims_t bias = {s->oc};
    dnnl_dims_t w4 = {s->oc, s->c, s->kh, s->kw};
    dnnl_dims_t w5 = {s->groups, s->oc / s->groups, s->c / s->groups, s->kh, s->kw};
    bool g = s->groups > 1;
    bool ok =
        dnnl_memory_desc_init_by_tag(&d->src, 4, src, dnnl_f32, dnnl_nchw) == dnnl_success &&
        dnnl_memory_desc_init_by_tag(&d->dst, 4, dst, dnnl_f32, dnnl_nchw) == dnnl_success &&
        dnnl_memory_desc_init_by_tag(&d->bias, 1, bias, dnnl_f32, dnnl_x) == dnnl_success &&
        dnnl_memory_desc_init_by_tag(&d->wei, g ? 5 : 4, g ? w5 : w4, dnnl_f32,
                                     g ? dnnl_goihw : dnnl_oihw) == dnnl_success &&
        dnnl_memory_desc_init_by_tag(&d->src_any, 4, src, dnnl_f32, dnnl_format_tag_any) ==
            dnnl_success &&
        dnnl_memory_desc_init_by_tag(&d->dst_any, 4, dst, dnnl_f32, dnnl_format_tag_any) ==
            dnnl_success &&
        dnnl_memory_desc_init_by_tag(&d->wei_any, g ? 5 : 4, g ? w5 : w4, dnnl_f32,
                                     dnnl_format_tag_any) == dnnl_success;
    d->strides[0] = s->stride_h, d->strides[1] = s->stride_w;
    d->dilates[0] = s->dil_h - 1, d->dilates[1] = s->dil_w - 1;   /* oneDNN counts the gaps */
    d->pad_l[0] = s->pad_h, d->pad_l[1] = s->pad_w;
    /* the right padding that makes oneDNN's output size torch's (floor) */
    d->pad_r[0] = (s->oh - 1) * s->stride_h + (s->kh - 1) * s->dil_h + 1 - s->h - s->pad_h;
    d->pad_r[1] = (s->ow - 1) * s->stride_w + (s->kw - 1) * s->dil_w + 1 - s->w - s->pad_w;
    return ok;
}

static dnnl_primitive_desc_t conv_fwd_pd(const conv_mds *d, bool has_bias) {
    dnnl_convolution_desc_t desc;
    if (dnnl_dilated_convolution_forward_desc_init(
            &desc, dnnl_forward_training, dnnl_convolution_direct, &d->src_any, &d->wei_any,
            has_bias ? &d->bias : NULL, &d->dst_any, d->strides, d->dilates, d->pad_l,
            d->pad_r) != dnnl_success)
        return NULL;
    dnnl_primitive_desc_t pd;
    if (dnnl_primitive_desc_create(&pd, &desc, NULL, engine, NULL) != dnnl_success) return NULL;
    return pd;
}

static const dnnl_memory_desc_t *md_of(const_dnnl_primitive_desc_t pd, dnnl_query_t q, int i) {
    return dnnl_primitive_desc_query_md(pd, q, i);
}

static bool conv_entry_make(conv_entry *e, const conv_key *k) {
    conv_mds d;
    if (!conv_mds_init(&k->s, &d)) return false;
    dnnl_primitive_desc_t fwd = conv_fwd_pd(&d, k->has_bias);
    if (!fwd) return false;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_convolution_desc_t desc;
    bool few = k->s.c / k->s.groups < 16;
    switch ((conv_kind)k->kind) {
    case CONV_FWD:
        pd = fwd;
        fwd = NULL;
        break;
    case CONV_BWD_DATA:
        /* with few input channels the blocked diff_src is mostly padding
         * (1 -> 16 channels): plain layouts and the gemm path are ~3x faster
         * there (bench: 1->32 3x3 on 128x28x28, 2.2 ms vs 8.1 ms) */
        if (dnnl_dilated_convolution_backward_data_desc_init(
                &desc, dnnl_convolution_direct, few ? &d.src : &d.src_any,
                few ? &d.wei : &d.wei_any, few ? &d.dst : &d.dst_any, d.strides, d.dilates,
                d.pad_l, d.pad_r) != dnnl_success ||
            dnnl_primitive_desc_create(&pd, &desc, NULL, engine, fwd) != dnnl_success)
            pd = NULL;
        break;
    case CONV_BWD_WEIGHTS:
        if (dnnl_dilated_convolution_backward_weights_desc_init(
                &desc, dnnl_convolution_direct, &d.src_any, &d.wei_any,
                k->has_bias ? &d.bias : NULL, &d.dst_any, d.strides, d.dilates, d.pad_l,
                d.pad_r) != dnnl_success ||
            dnnl_primitive_desc_create(&pd, &desc, NULL, engine, fwd) != dnnl_success)
            pd = NULL;
        break;
    }
    if (fwd) dnnl_primitive_desc_destroy(fwd);
    if (!pd) return false;
    bool ok = dnnl_primitive_create(&e->prim, pd) == dnnl_success;
    if (!ok) e->prim = NULL;
    conv_arg *a = e->args;
    switch ((conv_kind)k->kind) {
    case CONV_FWD:
        ok = ok && conv_arg_init(a++, DNNL_ARG_SRC, &d.src, md_of(pd, dnnl_query_src_md, 0), false, false);
        ok = ok && conv_arg_init(a++, DNNL_ARG_WEIGHTS, &d.wei, md_of(pd, dnnl_query_weights_md, 0), false, false);
        ok = ok && conv_arg_init(a++, DNNL_ARG_DST, &d.dst, md_of(pd, dnnl_query_dst_md, 0), true, false);
        if (k->has_bias)
            ok = ok && conv_arg_init(a++, DNNL_ARG_BIAS, &d.bias, md_of(pd, dnnl_query_weights_md, 1), false, false);
        break;
    case CONV_BWD_DATA:
        ok = ok && conv_arg_init(a++, DNNL_ARG_DIFF_DST, &d.dst, md_of(pd, dnnl_query_diff_dst_md, 0), false, false);
        ok = ok && conv_arg_init(a++, DNNL_ARG_WEIGHTS, &d.wei, md_of(pd, dnnl_query_weights_md, 0), false, false);
        ok = ok && conv_arg_init(a++, DNNL_ARG_DIFF_SRC, &d.src, md_of(pd, dnnl_query_diff_src_md, 0), true, true);
        break;
    case CONV_BWD_WEIGHTS:
        ok = ok && conv_arg_init(a++, DNNL_ARG_SRC, &d.src, md_of(pd, dnnl_query_src_md, 0), false, false);
        ok = ok && conv_arg_init(a++, DNNL_ARG_DIFF_DST, &d.dst, md_of(pd, dnnl_query_diff_dst_md, 0), false, false);
        ok = ok && conv_arg_init(a++, DNNL_ARG_DIFF_WEIGHTS, &d.wei, md_of(pd, dnnl_query_diff_weights_md, 0), true, true);
        if (k->has_bias)
            ok = ok && conv_arg_init(a++, DNNL_ARG_DIFF_BIAS, &d.bias, md_of(pd, dnnl_query_diff_weights_md, 1), true, true);
        break;
    }
    e->nargs = (int)(a - e->args);
    dnnl_primitive_desc_destroy(pd);
    e->key = *k;
    if (!ok) conv_entry_free(e);
    return ok;
}

/* under the lock */
static conv_entry *conv_lookup(const bg_conv2d_shape *s, conv_kind kind, bool has_bias) {
    conv_key k;
    memset(&k, 0, sizeof k);
    k.s = *s;
    k.kind = kind;
    k.has_bias = has_bias;
    k.nthr = omp_get_max_threads();
    for (int i = 0; i < CONV_CACHE; i++)
        if (conv_cache[i].prim && memcmp(&conv_cache[i].key, &k, sizeof k) == 0)
            return &conv_cache[i];
    int slot = -1;
    for (int i = 0; i < CONV_CACHE && slot < 0; i++)
        if (!conv_cache[i].prim) slot = i;
    if (slot < 0) {
        slot = conv_victim;
        conv_victim = (conv_victim + 1) % CONV_CACHE;
        conv_entry_free(&conv_cache[slot]);
    }
    return conv_entry_make(&conv_cache[slot], &k) ? &conv_cache[slot] : NULL;
}

/* ptrs[i] is the user buffer of e->args[i] */
static bool conv_run(conv_entry *e, const void *const *ptrs) {
    dnnl_exec_arg_t args[4], io[2];
    for (int i = 0; i < e->nargs; i++) {
        conv_arg *a = &e->args[i];
        if (!set_handle(a->user, ptrs[i])) return false;
        args[i].arg = a->which;
        args[i].memory = a->inner ? a->inner : a->user;
        if (a->reorder && !a->output) {
            io[0] = (dnnl_exec_arg_t){DNNL_ARG_FROM, a->user};
            io[1] = (dnnl_exec_arg_t){DNNL_ARG_TO, a->inner};
            if (dnnl_primitive_execute(a->reorder, stream, 2, io) != dnnl_success) return false;
        }
    }
    if (dnnl_primitive_execute(e->prim, stream, e->nargs, args) != dnnl_success) return false;
    for (int i = 0; i < e->nargs; i++) {
        conv_arg *a = &e->args[i];
        if (a->reorder && a->output) {
            io[0] = (dnnl_exec_arg_t){DNNL_ARG_FROM, a->inner};
            io[1] = (dnnl_exec_arg_t){DNNL_ARG_TO, a->user};
            if (dnnl_primitive_execute(a->reorder, stream, 2, io) != dnnl_success) return false;
        }
    }
    return dnnl_stream_wait(stream) == dnnl_success;
}

bool bg_conv2d_forward_dnnl(const bg_conv2d_shape *s, float *y, const float *x, const float *w,
                            const float *b) {
    if (s->n == 0) return true;
    if (!ready()) return false;
    mtx_lock(&lock);
    conv_entry *e = conv_lookup(s, CONV_FWD, b != NULL);
    const void *ptrs[4] = {x, w, y, b};
    bool ok = e && conv_run(e, ptrs);
    mtx_unlock(&lock);
    return ok;
}

bool bg_conv2d_backward_data_dnnl(const bg_conv2d_shape *s, float *dx, const float *dy,
                                  const float *w) {
    if (s->n == 0) return true;
    if (!ready()) return false;
    mtx_lock(&lock);
    conv_entry *e = conv_lookup(s, CONV_BWD_DATA, false);
    const void *ptrs[3] = {dy, w, dx};
    bool ok = e && conv_run(e, ptrs);
    mtx_unlock(&lock);
    return ok;
}

bool bg_conv2d_backward_weights_dnnl(const bg_conv2d_shape *s, float *dw, float *db,
                                     const float *dy, const float *x) {
    if (s->n == 0) return true;
    if (!ready()) return false;
    mtx_lock(&lock);
    conv_entry *e = conv_lookup(s, CONV_BWD_WEIGHTS, db != NULL);
    const void *ptrs[4] = {x, dy, dw, db};
    bool ok = e && conv_run(e, ptrs);
    mtx_unlock(&lock);
    return ok;
}

#endif /* BG_WITH_DNNL */
