/*
 * tensor — bg_tensor, the per-step arena (bg_ctx), errors, the seeded PRNG.
 *
 * A bg_tensor is a typed, strided view of up to 4 dims over 64-byte aligned
 * storage. Tensors made on a bg_ctx live in its arena until bg_ctx_reset();
 * persistent tensors (parameters) are made with bg_tensor_new() and freed with
 * bg_tensor_free().
 *
 *     bg_ctx *ctx = bg_ctx_new(0);                 // 0: default first block
 *     bg_tensor *x = bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(2, 3));
 *     bg_rng rng; bg_rng_seed(&rng, 0);
 *     bg_init_normal(x, &rng, 0.0f, 1.0f);
 *     bg_tensor *xt = bg_view_transpose(ctx, x, 0, 1);   // [3,2], shares data
 *     if (bg_ctx_status(ctx) != BG_OK)
 *         fprintf(stderr, "%s\n", bg_ctx_error(ctx));
 *     bg_ctx_reset(ctx);                            // frees x and xt at once
 *     bg_ctx_free(ctx);
 *
 * Errors: functions that can fail for environmental reasons return bg_status;
 * builders that return a tensor return NULL on failure and set the ctx's
 * sticky error (bg_ctx_error) and the thread's last error (bg_last_error).
 * Once a ctx has failed, every later builder on it returns NULL without
 * computing, so a whole step can be built and checked once.
 */
#ifndef BG_TENSOR_H
#define BG_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------
// constants

#define BG_MAX_DIMS 4
#define BG_ALIGN 64
#define BG_ERROR_MAX 512

/* BG_SHAPE(128, 784) expands to the (ndim, shape) argument pair. */
#define BG_SHAPE(...)                                                         \
    (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]){__VA_ARGS__}

#if defined(__GNUC__)
#define BG_PRINTF(fmt_idx, arg_idx) __attribute__((format(printf, fmt_idx, arg_idx)))
#else
#define BG_PRINTF(fmt_idx, arg_idx)
#endif

// ---------------------------------------------------------------------------
// status codes

typedef enum bg_status {
    BG_OK = 0,             /* success */
    BG_ERR_ARG,            /* an argument is invalid (NULL, out of range) */
    BG_ERR_SHAPE,          /* shapes do not fit the op */
    BG_ERR_DTYPE,          /* a tensor has the wrong element type */
    BG_ERR_NOMEM,          /* an allocation failed */
    BG_ERR_IO,             /* a file could not be opened, read or written */
    BG_ERR_FORMAT,         /* a file's contents are corrupt or unsupported */
    BG_ERR_NAN,            /* a NaN or Inf was found where checking is on */
    BG_ERR_STATE,          /* the call does not fit the object's state */
    BG_ERR_UNSUPPORTED,    /* the feature is not available in this build */
    BG_STATUS_COUNT
} bg_status;

/* The library's version: the one place it is written (CMakeLists.txt reads
 * these lines for the package version, the shared library's SONAME and
 * bitgrad.pc). bg_version() gives the version of the library linked, which
 * may differ from the header a program was compiled with. */
#define BG_VERSION_MAJOR 0
#define BG_VERSION_MINOR 5
#define BG_VERSION_PATCH 0
#define BG_VERSION_STRING "0.5.0"
const char *bg_version(void);

/* A static English description of a status code (like sqlite3_errstr). */
const char *bg_status_str(bg_status status);

/* The message of the last failure on this thread ("" when none). */
const char *bg_last_error(void);
bg_status bg_last_status(void);
void bg_clear_error(void);

/* Records a failure on this thread: one sentence, "<op>: <what>: <values>".
 * Returns status so callers can `return bg_set_error(...)`. */
bg_status bg_set_error(bg_status status, const char *fmt, ...) BG_PRINTF(2, 3);

// ---------------------------------------------------------------------------
// dtypes

typedef enum bg_dtype {
    BG_DTYPE_F32 = 0,
    BG_DTYPE_I32,
    BG_DTYPE_I8,
    BG_DTYPE_U8,
    BG_DTYPE_COUNT
} bg_dtype;

size_t bg_dtype_size(bg_dtype dtype);
const char *bg_dtype_name(bg_dtype dtype);

// ---------------------------------------------------------------------------
// the tensor

struct bg_node;
typedef struct bg_ctx bg_ctx;

/* Fields are read-only for users; builders keep them consistent.
 * Strides are in elements. A tensor is contiguous when its strides are the
 * row-major strides of its shape. */
typedef struct bg_tensor {
    bg_dtype dtype;
    int ndim;
    int64_t shape[BG_MAX_DIMS];
    int64_t stride[BG_MAX_DIMS];
    void *data;               /* first element (views may point inside storage) */
    struct bg_tensor *grad;   /* same shape, f32, contiguous; NULL until needed */
    struct bg_node *node;     /* the tape node that produced it, or NULL */
    bool requires_grad;
    bool persistent;          /* owned by its creator, not by an arena */
    bool owns_grad;           /* grad was allocated for it and is freed with it */
    const char *name;         /* optional, static or owned by the creator */
    uint64_t arena_tag;       /* the ctx and step that made it (0: not an arena tensor) */
} bg_tensor;

/* The most elements one tensor may have (2^48): every shape is checked
 * against it, so element counts, byte counts (numel * 8 < 2^51) and
 * offsets never overflow. */
#define BG_MAX_NUMEL ((int64_t)1 << 48)

/* Checks a shape as every tensor constructor does (ndim 0..4, dimensions
 * >= 0, at most BG_MAX_NUMEL elements) and gives its element count; the
 * error names `who`. */
bg_status bg_shape_check(int ndim, const int64_t *shape, const char *who, int64_t *numel);

/* Element and byte counts; 0 for NULL. */
int64_t bg_numel(const bg_tensor *t);
size_t bg_nbytes(const bg_tensor *t);
bool bg_is_contiguous(const bg_tensor *t);
bool bg_same_shape(const bg_tensor *a, const bg_tensor *b);
static inline float *bg_f32(const bg_tensor *t) { return (float *)t->data; }

/* "[128,784]" into buf; returns buf. */
char *bg_shape_str(const bg_tensor *t, char *buf, size_t len);
#define BG_SHAPE_STR_MAX 96

/* Persistent tensor, zero-filled, 64-byte aligned. NULL on failure
 * (bg_last_error says why). Free with bg_tensor_free; free(NULL) is a no-op. */
bg_tensor *bg_tensor_new(bg_dtype dtype, int ndim, const int64_t *shape);
void bg_tensor_free(bg_tensor *t);

/* Marks a tensor as a leaf that wants a gradient. A persistent tensor without
 * a grad gets a zeroed persistent one (freed with it); an arena tensor gets
 * its grad in the arena during backward. Returns BG_OK or BG_ERR_NOMEM. */
bg_status bg_set_requires_grad(bg_tensor *t, bool requires_grad);

/* A tensor header (on the heap) over caller-owned memory, e.g. one parameter
 * inside a module's contiguous buffer. Freed with bg_tensor_free, which then
 * frees only the header. data may be NULL only for a tensor of 0 elements. */
bg_tensor *bg_tensor_wrap(bg_dtype dtype, int ndim, const int64_t *shape, void *data);

// ---------------------------------------------------------------------------
// the ctx: per-step arena, sticky error, grad mode, tape

/* first_block: bytes of the first arena block (0 = 16 MiB). Blocks chain as
 * needed; bg_ctx_reset() merges them into one, so after the first step the
 * same work allocates nothing. */
bg_ctx *bg_ctx_new(size_t first_block);
void bg_ctx_free(bg_ctx *ctx);
/* Frees every arena tensor, clears the tape and the error. */
void bg_ctx_reset(bg_ctx *ctx);

bg_status bg_ctx_status(const bg_ctx *ctx);
const char *bg_ctx_error(const bg_ctx *ctx);
/* Sets the ctx's sticky error (the first failure wins) and the thread's last
 * error. Always returns NULL so builders can `return bg_ctx_fail(...)`. */
bg_tensor *bg_ctx_fail(bg_ctx *ctx, bg_status status, const char *fmt, ...) BG_PRINTF(3, 4);
/* Clears the sticky error without freeing the arena. */
void bg_ctx_clear_error(bg_ctx *ctx);

/* Arena bytes in use now, and the high-water mark since bg_ctx_new. */
size_t bg_ctx_used_bytes(const bg_ctx *ctx);
size_t bg_ctx_peak_bytes(const bg_ctx *ctx);

/* Raw arena memory (64-byte aligned, uninitialised). NULL + sticky error when
 * out of memory or when nbytes is more than one block may hold (2^60). */
void *bg_ctx_alloc(bg_ctx *ctx, size_t nbytes);

/* Grad mode: when off, builders record nothing on the tape. Returns the
 * previous mode, so scopes nest: `bool g = bg_set_grad_enabled(ctx, false);
 * ...; bg_set_grad_enabled(ctx, g);` */
bool bg_set_grad_enabled(bg_ctx *ctx, bool enabled);
bool bg_grad_enabled(const bg_ctx *ctx);

/* Library-wide counter of heap allocations made by bitgrad itself
 * (arena blocks, persistent tensors, modules). Tests use it to prove that
 * steady-state training steps do not allocate. */
uint64_t bg_alloc_count(void);
/* The library's aligned allocator (counted). Size is rounded up to BG_ALIGN. */
void *bg_aligned_alloc(size_t nbytes);
void bg_aligned_free(void *p);

// ---------------------------------------------------------------------------
// arena tensors and views (not recorded on the tape; see autograd for ops)

/* Uninitialised / zeroed / copied arena tensors. NULL + ctx error on failure. */
bg_tensor *bg_empty(bg_ctx *ctx, bg_dtype dtype, int ndim, const int64_t *shape);
bg_tensor *bg_zeros(bg_ctx *ctx, bg_dtype dtype, int ndim, const int64_t *shape);
bg_tensor *bg_full(bg_ctx *ctx, int ndim, const int64_t *shape, float value);
bg_tensor *bg_from_data(bg_ctx *ctx, bg_dtype dtype, int ndim, const int64_t *shape,
                        const void *data);
bg_tensor *bg_empty_like(bg_ctx *ctx, const bg_tensor *t);
/* A contiguous arena copy (or t itself when already contiguous). */
bg_tensor *bg_contiguous(bg_ctx *ctx, bg_tensor *t);
/* Copies src into dst element by element (same shape and dtype, any strides). */
bg_status bg_copy(bg_tensor *dst, const bg_tensor *src);

/* Views share storage with t. A view has no tape node: it is a tensor-level
 * tool; the autograd ops bg_reshape/bg_transpose/bg_slice record gradients. */
bg_tensor *bg_view_reshape(bg_ctx *ctx, bg_tensor *t, int ndim, const int64_t *shape);
bg_tensor *bg_view_transpose(bg_ctx *ctx, bg_tensor *t, int d0, int d1);
bg_tensor *bg_view_permute(bg_ctx *ctx, bg_tensor *t, const int *perm);
bg_tensor *bg_view_narrow(bg_ctx *ctx, bg_tensor *t, int dim, int64_t start, int64_t len);

/* Element access for tests and tools (any strides). */
float bg_get_f32(const bg_tensor *t, const int64_t *idx);

// ---------------------------------------------------------------------------
// PRNG: xoshiro128+ style generator seeded through splitmix64; deterministic
// across runs and thread counts (draws are made on one thread, in order).

typedef struct bg_rng {
    uint64_t s[2];
} bg_rng;

void bg_rng_seed(bg_rng *rng, uint64_t seed);
uint64_t bg_rng_next(bg_rng *rng);
/* Uniform in [0, 1) with 24 random bits. */
float bg_rng_uniform(bg_rng *rng);
/* Standard normal (Box-Muller, in double). */
float bg_rng_normal(bg_rng *rng);
/* Uniform integer in [0, n). */
uint64_t bg_rng_below(bg_rng *rng, uint64_t n);

/* Initializers fill an f32 tensor of any strides. Kaiming/Xavier use
 * fan_in = shape[1] * prod(shape[2:]), fan_out = shape[0] * prod(shape[2:])
 * (PyTorch's convention for Linear [out,in] and Conv2d [out,in,kh,kw]).
 * bg_init_torch_default is PyTorch's Linear/Conv2d default:
 * kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
bg_status bg_init_uniform(bg_tensor *t, bg_rng *rng, float lo, float hi);
bg_status bg_init_normal(bg_tensor *t, bg_rng *rng, float mean, float std);
bg_status bg_init_constant(bg_tensor *t, float value);
bg_status bg_init_kaiming_uniform(bg_tensor *t, bg_rng *rng, float a);
bg_status bg_init_kaiming_normal(bg_tensor *t, bg_rng *rng, float a);
bg_status bg_init_xavier_uniform(bg_tensor *t, bg_rng *rng, float gain);
bg_status bg_init_xavier_normal(bg_tensor *t, bg_rng *rng, float gain);
bg_status bg_init_torch_default(bg_tensor *t, bg_rng *rng);
/* fan_in of a weight shaped as above (bias bounds use it). */
int64_t bg_fan_in(const bg_tensor *t);

#ifdef __cplusplus
}
#endif
#endif /* BG_TENSOR_H */
