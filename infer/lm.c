/* lm.c — the language-model runtime (infer/lm.h): loads a TransformerLM
 * export into owned weights, a KV cache and buffers for n_ctx positions,
 * and runs llama.cpp's `bitnet` graph over new positions on the kernels
 * (gemm_ternary on int8 per-token codes, bg_sgemm, RMSNorm, SiLU, softmax).
 * Calls kernels/, tensor/ (errors, aligned memory), format/ (the
 * safetensors reader). */
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer/infer_internal.h"
#include "infer/lm.h"
#include "kernels/kernels.h"

#define OP "lm_load"
#define BITNET_EPS 1e-5f            /* BitNet's clamp of the per-token absmax */
#define MAX_DIM ((int64_t)1 << 16)   /* vocab, widths */
#define MAX_LAYERS 1024
#define MAX_CTX ((int64_t)1 << 16)
#define MAX_THREADS 256

typedef struct proj {
    int64_t N, K, kp;
    uint8_t *wt2;   /* t2: packed [N, kp/4] */
    float wscale;   /* t2: the tensor's scale */
    float *wf;      /* f32: [N, K] */
} proj;

enum { P_Q, P_K, P_V, P_O, P_GATE, P_UP, P_DOWN, N_PROJ };
enum { N_ATTN, N_ATTN_SUB, N_FFN, N_FFN_SUB, N_NORMS };
static const char *const PROJ_NAMES[N_PROJ] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                               "ffn_gate", "ffn_up", "ffn_down"};
static const char *const NORM_NAMES[N_NORMS] = {"attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm"};

typedef struct block {
    float *norm[N_NORMS];
    proj p[N_PROJ];
} block;

struct bg_lm_runtime {
    bg_lm_hparams c;
    bool ternary;
    int64_t n_ctx, n_past, hd;
    float *embd, *out_norm;   /* [V, d], [d] */
    block *blk;
    float *kcache, *vcache;   /* [L, n_ctx, d] */
    double *rope;             /* cos [n_ctx, hd/2] then sin [n_ctx, hd/2] */
    // buffers for n_ctx positions
    float *x, *h, *q, *k, *v, *att, *g, *u, *rstd, *sx, *scores;
    int8_t *codes;
    int32_t *acc;
    int n_threads_max;
};

// ---------------------------------------------------------------------------
// loading

typedef struct loader {
    const char *path;
    bg_safetensors *st;
    bool *used;
    int n_tensors;
} loader;

static bg_status ferr(const loader *ld, const char *fmt, ...) BG_PRINTF(2, 3);
static bg_status ferr(const loader *ld, const char *fmt, ...) {
    char msg[BG_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return bg_set_error(BG_ERR_FORMAT, OP ": %s: %s", ld->path, msg);
}

/* Tensor name with exactly this dtype and shape, marked as read. */
static bg_status tensor_of(const loader *ld, const char *name, bg_dtype dt, int ndim, const int64_t *shape,
                           bg_tensor *v) {
    char why[512];
    if (!bg_infer_find_tensor(ld->st, ld->used, name, v)) return ferr(ld, "missing tensor %s", name);
    return bg_infer_tensor_fits(v, name, dt, ndim, shape, why, sizeof why) ? BG_OK : ferr(ld, "%s", why);
}

/* A float tensor copied into owned memory: finite, |v| <= BG_EXPORT_VALUE_MAX. */
static bg_status load_floats(const loader *ld, const char *name, int ndim, const int64_t *shape, float **out) {
    bg_tensor v;
    bg_status s = tensor_of(ld, name, BG_DTYPE_F32, ndim, shape, &v);
    if (s != BG_OK) return s;
    const int64_t n = bg_numel(&v);
    const float *src = v.data;
    for (int64_t i = 0; i < n; i++)
        if (!(fabsf(src[i]) <= BG_EXPORT_VALUE_MAX))
            return ferr(ld, "%s holds %g at index %lld (values must be finite, |v| <= %g)", name, (double)src[i],
                        (long long)i, (double)BG_EXPORT_VALUE_MAX);
    if (!(*out = bg_infer_zalloc(sizeof(float) * (size_t)n))) return bg_set_error(BG_ERR_NOMEM, OP ": %s: out of memory", ld->path);
    memcpy(*out, src, sizeof(float) * (size_t)n);
    return BG_OK;
}

static bg_status load_proj(const loader *ld, const char *prefix, int64_t N, int64_t K, bool ternary, proj *p) {
    char name[192];
    snprintf(name, sizeof name, "%s.weight", prefix);
    p->N = N, p->K = K, p->kp = bg_int_padded_k(K);
    if (!ternary) return load_floats(ld, name, 2, (const int64_t[]){N, K}, &p->wf);
    bg_tensor v;
    bg_status s = tensor_of(ld, name, BG_DTYPE_U8, 2, (const int64_t[]){N, p->kp / 4}, &v);
    if (s != BG_OK) return s;
    const size_t bytes = (size_t)(N * p->kp / 4);
    const uint8_t *b = v.data;
    for (size_t i = 0; i < bytes; i++)
        if ((b[i] & 3) == 3 || (b[i] >> 2 & 3) == 3 || (b[i] >> 4 & 3) == 3 || b[i] >> 6 == 3)
            return ferr(ld, "%s byte %zu holds the code 3 (t2 codes are 0, 1, 2)", name, i);
    if (!(p->wt2 = bg_infer_zalloc(bytes))) return bg_set_error(BG_ERR_NOMEM, OP ": %s: out of memory", ld->path);
    memcpy(p->wt2, b, bytes);
    snprintf(name, sizeof name, "%s.weight_scale", prefix);
    if ((s = tensor_of(ld, name, BG_DTYPE_F32, 1, (const int64_t[]){1}, &v)) != BG_OK) return s;
    p->wscale = *(const float *)v.data;
    if (!(p->wscale >= BG_EXPORT_SCALE_MIN && p->wscale <= BG_EXPORT_SCALE_MAX))
        return ferr(ld, "%s is %g, outside [%g, %g]", name, (double)p->wscale, (double)BG_EXPORT_SCALE_MIN,
                    (double)BG_EXPORT_SCALE_MAX);
    return BG_OK;
}

/* The "lm" metadata into c and the projections' format. */
static bg_status read_config(const loader *ld, bg_lm_hparams *c, bool *ternary) {
    char why[256];
    if (bg_infer_bad_header(ld->st, why, sizeof why)) return ferr(ld, "%s", why);
    const char *lm = bg_safetensors_metadata(ld->st, "lm");
    if (!lm)
        return ferr(ld, "not a language model (%s)", bg_safetensors_metadata(ld->st, "layers")
                                                         ? "an export of a layer stack: use bg_infer_load"
                                                         : "no \"lm\" metadata");
    json_error_t jerr;
    json_t *j = json_loads(lm, 0, &jerr);
    bg_status s = BG_OK;
    if (!json_is_object(j)) {
        s = ferr(ld, "metadata \"lm\" is not a JSON object");
        goto done;
    }
    const char *arch = json_string_value(json_object_get(j, "architecture"));
    if (!arch || strcmp(arch, "bitnet") != 0) {
        s = ferr(ld, "architecture %s%s%s is not bitnet", arch ? "\"" : "", arch ? arch : "(missing)", arch ? "\"" : "");
        goto done;
    }
    struct {
        const char *key;
        int64_t *v, max;
    } ints[] = {{"vocab", &c->vocab, MAX_DIM},     {"d_model", &c->d_model, MAX_DIM}, {"n_layers", &c->n_layers, MAX_LAYERS},
                {"n_heads", &c->n_heads, MAX_DIM}, {"d_ff", &c->d_ff, MAX_DIM},       {"ctx", &c->ctx, MAX_CTX}};
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
        json_t *v = json_object_get(j, ints[i].key);
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > ints[i].max) {
            s = ferr(ld, "\"lm\" field \"%s\" must be an integer in 1..%lld", ints[i].key, (long long)ints[i].max);
            goto done;
        }
        *ints[i].v = (int64_t)json_integer_value(v);
    }
    json_t *th = json_object_get(j, "rope_theta"), *ep = json_object_get(j, "norm_eps");
    c->rope_theta = json_is_number(th) ? (float)json_number_value(th) : NAN;
    c->norm_eps = json_is_number(ep) ? (float)json_number_value(ep) : NAN;
    if (!(c->rope_theta > 1.0f && c->rope_theta < FLT_MAX) || !(c->norm_eps > 0.0f && c->norm_eps < 1.0f)) {
        s = ferr(ld, "\"lm\" needs rope_theta > 1 and norm_eps in (0, 1)");
        goto done;
    }
    if (c->d_model % c->n_heads || (c->d_model / c->n_heads) % 2) {
        s = ferr(ld, "d_model %lld does not divide into %lld heads of an even size", (long long)c->d_model,
                 (long long)c->n_heads);
        goto done;
    }
    const char *pr = json_string_value(json_object_get(j, "projections"));
    if (!pr || (strcmp(pr, "t2") && strcmp(pr, "f32"))) {
        s = ferr(ld, "\"lm\" field \"projections\" must be \"t2\" or \"f32\"");
        goto done;
    }
    *ternary = !strcmp(pr, "t2");
done:
    json_decref(j);
    return s;
}

static bg_status load_weights(const loader *ld, bg_lm_runtime *m) {
    const bg_lm_hparams *c = &m->c;
    const int64_t d = c->d_model, f = c->d_ff;
    bg_status s = load_floats(ld, "token_embd.weight", 2, (const int64_t[]){c->vocab, d}, &m->embd);
    if (s == BG_OK) s = load_floats(ld, "output_norm.weight", 1, &d, &m->out_norm);
    for (int64_t l = 0; l < c->n_layers && s == BG_OK; l++) {
        block *b = &m->blk[l];
        char name[160];
        for (int k = 0; k < N_NORMS && s == BG_OK; k++) {
            snprintf(name, sizeof name, "blk.%lld.%s.weight", (long long)l, NORM_NAMES[k]);
            s = load_floats(ld, name, 1, k == N_FFN_SUB ? &f : &d, &b->norm[k]);
        }
        for (int k = 0; k < N_PROJ && s == BG_OK; k++) {
            snprintf(name, sizeof name, "blk.%lld.%s", (long long)l, PROJ_NAMES[k]);
            const int64_t N = k == P_GATE || k == P_UP ? f : d, K = k == P_DOWN ? f : d;
            s = load_proj(ld, name, N, K, m->ternary, &b->p[k]);
        }
    }
    for (int i = 0; i < ld->n_tensors && s == BG_OK; i++)
        if (!ld->used[i]) s = ferr(ld, "tensor %s is not part of the model", bg_safetensors_name(ld->st, i));
    return s;
}

static bg_status alloc_buffers(bg_lm_runtime *m) {
    const bg_lm_hparams *c = &m->c;
    const int64_t T = m->n_ctx, d = c->d_model, f = c->d_ff, half = m->hd / 2;
    const int64_t wide = d > f ? d : f, kp = bg_int_padded_k(wide);
    m->n_threads_max = omp_get_num_procs() < MAX_THREADS ? omp_get_num_procs() : MAX_THREADS;
    float **fl[] = {&m->x, &m->h, &m->q, &m->k, &m->v, &m->att, &m->g, &m->u};
    const int64_t sizes[] = {T * d, T * wide, T * d, T * d, T * d, T * d, T * f, T * f};
    for (size_t i = 0; i < sizeof fl / sizeof *fl; i++)
        if (!(*fl[i] = bg_infer_zalloc(sizeof(float) * (size_t)sizes[i]))) return BG_ERR_NOMEM;
    m->kcache = bg_infer_zalloc(sizeof(float) * (size_t)(c->n_layers * T * d));
    m->vcache = bg_infer_zalloc(sizeof(float) * (size_t)(c->n_layers * T * d));
    m->rope = bg_infer_zalloc(sizeof(double) * (size_t)(2 * T * half));
    m->rstd = bg_infer_zalloc(sizeof(float) * (size_t)T);
    m->sx = bg_infer_zalloc(sizeof(float) * (size_t)T);
    m->scores = bg_infer_zalloc(sizeof(float) * (size_t)(m->n_threads_max * T));
    m->codes = bg_infer_zalloc((size_t)(T * kp));
    m->acc = bg_infer_zalloc(sizeof(int32_t) * (size_t)(T * wide));
    if (!m->kcache || !m->vcache || !m->rope || !m->rstd || !m->sx || !m->scores || !m->codes || !m->acc)
        return BG_ERR_NOMEM;
    // The angles of every position, as the training RoPE computes them.
    for (int64_t i = 0; i < half; i++) {
        const double inv = pow((double)c->rope_theta, -(double)(2 * i) / (double)m->hd);
        for (int64_t t = 0; t < T; t++) {
            m->rope[t * half + i] = cos((double)t * inv);
            m->rope[(T + t) * half + i] = sin((double)t * inv);
        }
    }
    return BG_OK;
}

bg_status bg_lm_load(const char *path, const bg_lm_runtime_opts *opts, bg_lm_runtime **out) {
    if (!out) return bg_set_error(BG_ERR_ARG, OP ": out is NULL");
    *out = NULL;
    if (!path) return bg_set_error(BG_ERR_ARG, OP ": path is NULL");
    if (opts && opts->n_ctx < 0)
        return bg_set_error(BG_ERR_ARG, OP ": n_ctx must be >= 0, got %lld", (long long)opts->n_ctx);
    loader ld = {.path = path};
    bg_status s = bg_safetensors_open(path, &ld.st);
    if (s != BG_OK) return s;   // the reader's message names the path
    bg_lm_runtime *m = calloc(1, sizeof *m);
    ld.n_tensors = bg_safetensors_count(ld.st);
    ld.used = calloc((size_t)ld.n_tensors + 1, sizeof *ld.used);
    if (!m || !ld.used) {
        s = bg_set_error(BG_ERR_NOMEM, OP ": %s: out of memory", path);
        goto done;
    }
    if ((s = read_config(&ld, &m->c, &m->ternary)) != BG_OK) goto done;
    m->n_ctx = opts && opts->n_ctx ? opts->n_ctx : m->c.ctx;
    if (m->n_ctx > m->c.ctx) {
        s = bg_set_error(BG_ERR_ARG, OP ": %s: a cache of %lld positions is longer than the context of %lld", path,
                         (long long)m->n_ctx, (long long)m->c.ctx);
        goto done;
    }
    m->hd = m->c.d_model / m->c.n_heads;
    if (!(m->blk = calloc((size_t)m->c.n_layers, sizeof *m->blk))) {
        s = bg_set_error(BG_ERR_NOMEM, OP ": %s: out of memory", path);
        goto done;
    }
    if ((s = load_weights(&ld, m)) != BG_OK) goto done;
    if (alloc_buffers(m) != BG_OK) s = bg_set_error(BG_ERR_NOMEM, OP ": %s: out of memory", path);
done:
    free(ld.used);
    bg_safetensors_free(ld.st);
    if (s != BG_OK) {
        bg_lm_free(m);
        return s;
    }
    *out = m;
    return BG_OK;
}

void bg_lm_free(bg_lm_runtime *m) {
    if (!m) return;
    for (int64_t l = 0; m->blk && l < m->c.n_layers; l++) {
        for (int k = 0; k < N_NORMS; k++) bg_aligned_free(m->blk[l].norm[k]);
        for (int k = 0; k < N_PROJ; k++) bg_aligned_free(m->blk[l].p[k].wt2), bg_aligned_free(m->blk[l].p[k].wf);
    }
    free(m->blk);
    void *bufs[] = {m->embd, m->out_norm, m->kcache, m->vcache, m->rope, m->x, m->h, m->q, m->k, m->v, m->att,
                    m->g, m->u, m->rstd, m->sx, m->scores, m->codes, m->acc};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) bg_aligned_free(bufs[i]);
    free(m);
}

bg_lm_hparams bg_lm_runtime_hparams(const bg_lm_runtime *m) { return m ? m->c : (bg_lm_hparams){0}; }
const char *bg_lm_runtime_projections(const bg_lm_runtime *m) { return m && m->ternary ? "t2" : "f32"; }
int64_t bg_lm_n_past(const bg_lm_runtime *m) { return m ? m->n_past : 0; }
int64_t bg_lm_n_ctx(const bg_lm_runtime *m) { return m ? m->n_ctx : 0; }
void bg_lm_reset(bg_lm_runtime *m) {
    if (m) m->n_past = 0;
}

// ---------------------------------------------------------------------------
// running

/* y[M, N] = x[M, K] W^T: ternary weights on the integer kernels with int8
 * per-token codes (BitLinear's eval forward, bit for bit), else f32. */
static void project(bg_lm_runtime *m, const proj *p, const float *x, int64_t M, float *y) {
    if (!p->wt2) {
        bg_sgemm(false, true, M, p->N, p->K, 1.0f, x, p->K, p->wf, p->K, 0.0f, y, p->N);
        return;
    }
    const bg_int_kernels *ik = bg_int_kernels_get();
    float *sx = m->sx;
    ik->absmax_rows(sx, x, M, p->K);
    for (int64_t r = 0; r < M; r++) sx[r] = (sx[r] >= BITNET_EPS ? sx[r] : BITNET_EPS) / 127.0f;
    ik->quantize_rows(m->codes, x, M, p->K, p->kp, sx, 1, 0, -128, 127);
    ik->gemm_ternary(m->acc, m->codes, p->wt2, M, p->N, p->kp);
    for (int64_t r = 0; r < M; r++) {
        const float f = sx[r] * p->wscale;
        const int32_t *a = m->acc + r * p->N;
        float *yr = y + r * p->N;
        for (int64_t n = 0; n < p->N; n++) yr[n] = (float)a[n] * f;
    }
}

/* NEOX RoPE of rows [M, H, hd] at positions p0 + t, in double as training. */
static void rope(const bg_lm_runtime *m, float *x, int64_t M, int64_t p0) {
    const int64_t H = m->c.n_heads, hd = m->hd, half = hd / 2, T = m->n_ctx;
    for (int64_t t = 0; t < M; t++) {
        const double *c = m->rope + (p0 + t) * half, *s = m->rope + (T + p0 + t) * half;
        for (int64_t h = 0; h < H; h++) {
            float *r = x + (t * H + h) * hd;
            for (int64_t i = 0; i < half; i++) {
                const double a = r[i], b = r[i + half];
                r[i] = (float)(a * c[i] - b * s[i]);
                r[i + half] = (float)(b * c[i] + a * s[i]);
            }
        }
    }
}

/* att[t, h] = softmax(q[t,h] . K[0..p0+t, h] / sqrt(hd)) V[0..p0+t, h]. */
static void attention(bg_lm_runtime *m, int64_t layer, int64_t M, int64_t p0) {
    const int64_t H = m->c.n_heads, hd = m->hd, d = m->c.d_model;
    const float *K = m->kcache + layer * m->n_ctx * d, *V = m->vcache + layer * m->n_ctx * d;
    const float scale = 1.0f / sqrtf((float)hd);
    const bg_kernels *kk = bg_kernels_get();
    int nt = bg_get_num_threads();
    if (nt > m->n_threads_max) nt = m->n_threads_max;
    if (M * H * (p0 + M) * hd < (1 << 15)) nt = 1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int64_t th = 0; th < M * H; th++) {
        const int64_t t = th / H, h = th % H, n = p0 + t + 1;
        float *sc = m->scores + (int64_t)omp_get_thread_num() * m->n_ctx;
        const float *qr = m->q + t * d + h * hd;
        for (int64_t j = 0; j < n; j++) sc[j] = kk->dot(qr, K + j * d + h * hd, hd) * scale;
        kk->softmax_rows(sc, sc, 1, n);
        float *o = m->att + t * d + h * hd;
        memset(o, 0, sizeof(float) * (size_t)hd);
        for (int64_t j = 0; j < n; j++) {
            const float pj = sc[j], *vr = V + j * d + h * hd;
            for (int64_t i = 0; i < hd; i++) o[i] += pj * vr[i];
        }
    }
}

static void rmsnorm(const bg_lm_runtime *m, float *y, const float *x, const float *w, int64_t M, int64_t K) {
    bg_kernels_get()->rmsnorm_forward(y, m->rstd, x, w, M, K, m->c.norm_eps);
}

static void block_forward(bg_lm_runtime *m, int64_t l, int64_t M, int64_t p0) {
    const block *b = &m->blk[l];
    const int64_t d = m->c.d_model, f = m->c.d_ff;
    const bg_kernels *kk = bg_kernels_get();
    rmsnorm(m, m->h, m->x, b->norm[N_ATTN], M, d);
    project(m, &b->p[P_Q], m->h, M, m->q);
    project(m, &b->p[P_K], m->h, M, m->k);
    project(m, &b->p[P_V], m->h, M, m->v);
    rope(m, m->q, M, p0);
    rope(m, m->k, M, p0);
    float *kc = m->kcache + (l * m->n_ctx + p0) * d, *vc = m->vcache + (l * m->n_ctx + p0) * d;
    memcpy(kc, m->k, sizeof(float) * (size_t)(M * d));
    memcpy(vc, m->v, sizeof(float) * (size_t)(M * d));
    attention(m, l, M, p0);
    rmsnorm(m, m->h, m->att, b->norm[N_ATTN_SUB], M, d);
    project(m, &b->p[P_O], m->h, M, m->q);
    kk->add(m->x, m->x, m->q, M * d);
    rmsnorm(m, m->h, m->x, b->norm[N_FFN], M, d);
    project(m, &b->p[P_GATE], m->h, M, m->g);
    project(m, &b->p[P_UP], m->h, M, m->u);
    kk->silu_forward(m->g, m->g, M * f);
    for (int64_t i = 0; i < M * f; i++) m->g[i] *= m->u[i];
    rmsnorm(m, m->h, m->g, b->norm[N_FFN_SUB], M, f);
    project(m, &b->p[P_DOWN], m->h, M, m->q);
    kk->add(m->x, m->x, m->q, M * d);
}

bg_status bg_lm_prefill(bg_lm_runtime *m, const int32_t *tokens, int64_t n, float *logits, bool all_positions) {
    if (!m || !tokens) return bg_set_error(BG_ERR_ARG, "lm_prefill: %s is NULL", m ? "tokens" : "the runtime");
    if (n < 1) return bg_set_error(BG_ERR_ARG, "lm_prefill: n must be >= 1, got %lld", (long long)n);
    if (n > m->n_ctx - m->n_past)
        return bg_set_error(BG_ERR_ARG,
                            "lm_prefill: the cache holds %lld positions: %lld used + %lld new do not fit "
                            "(bg_lm_reset starts over)",
                            (long long)m->n_ctx, (long long)m->n_past, (long long)n);
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->c.vocab)
            return bg_set_error(BG_ERR_ARG, "lm_prefill: token %lld is %d, outside the vocabulary of %lld",
                                (long long)i, tokens[i], (long long)m->c.vocab);
    const int64_t d = m->c.d_model, V = m->c.vocab, p0 = m->n_past;
    for (int64_t t = 0; t < n; t++) memcpy(m->x + t * d, m->embd + (int64_t)tokens[t] * d, sizeof(float) * (size_t)d);
    for (int64_t l = 0; l < m->c.n_layers; l++) block_forward(m, l, n, p0);
    m->n_past += n;
    if (!logits) return BG_OK;
    // The tied head: logits = output_norm(x) . embd^T, for the rows asked.
    const int64_t first = all_positions ? 0 : n - 1, rows = n - first;
    rmsnorm(m, m->h, m->x + first * d, m->out_norm, rows, d);
    bg_sgemm(false, true, rows, V, d, 1.0f, m->h, d, m->embd, d, 0.0f, logits, V);
    return BG_OK;
}

bg_status bg_lm_decode(bg_lm_runtime *m, int32_t token, float *logits) {
    return bg_lm_prefill(m, &token, 1, logits, false);
}
