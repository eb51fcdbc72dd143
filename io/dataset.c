/* dataset.c — IDX image/label files (MNIST format, gzipped or plain, read
 * with zlib) and the seeded batch iterator. Calls tensor/ only: batches are
 * arena tensors, the shuffle uses bg_rng. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "io/io.h"
#include "io/shard_internal.h"

#define FMNIST_PACKAGE "dataset-fashion-mnist"
#define IDX_IMAGES_MAGIC 0x00000803u /* uint8, 3 dims */
#define IDX_LABELS_MAGIC 0x00000801u /* uint8, 1 dim */
/* Bounds that no real IDX image set comes near; they keep a corrupt header
 * from asking for absurd amounts of memory. */
#define IDX_MAX_COUNT 100000000LL
#define IDX_MAX_SIDE 65535LL
#define IDX_MAX_BYTES (1LL << 34)

// --- reading one IDX file ------------------------------------------------------

typedef struct idx_file {
    const char *path;
    gzFile gz;
} idx_file;

/* Opens path; ENOENT names the Debian package (hint may be NULL). */
static bg_status idx_open(idx_file *f, const char *who, const char *path, const char *hint) {
    f->path = path;
    f->gz = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        int err = errno;
        if (err == ENOENT && hint)
            return bg_set_error(BG_ERR_IO, "%s: cannot open %s: %s; install the Debian package %s",
                                who, path, strerror(err), hint);
        return bg_set_error(BG_ERR_IO, "%s: cannot open %s: %s", who, path, strerror(err));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return bg_set_error(BG_ERR_IO, "%s: cannot read %s: not a regular file", who, path);
    }
    f->gz = gzdopen(fd, "rb");
    if (!f->gz) {
        close(fd);
        return bg_set_error(BG_ERR_NOMEM, "%s: cannot set up zlib for %s", who, path);
    }
    gzbuffer(f->gz, 1 << 17);
    return BG_OK;
}

static void idx_close(idx_file *f) {
    if (f->gz) gzclose(f->gz);
    f->gz = NULL;
}

/* Reads exactly len bytes; anything short (truncated or corrupt stream) is
 * BG_ERR_FORMAT naming the path. `what` says which part was being read. */
static bg_status idx_read(idx_file *f, const char *who, void *dst, size_t len, const char *what) {
    unsigned char *p = dst;
    size_t got = 0;
    while (got < len) {
        size_t chunk = len - got;
        if (chunk > (1u << 30)) chunk = 1u << 30;
        int r = gzread(f->gz, p + got, (unsigned)chunk);
        if (r < 0) {
            int zerr;
            const char *msg = gzerror(f->gz, &zerr);
            return bg_set_error(BG_ERR_FORMAT, "%s: %s is corrupt: %s while reading the %s", who,
                                f->path, msg, what);
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    if (got < len)
        return bg_set_error(BG_ERR_FORMAT,
                            "%s: %s is truncated: the %s needs %zu bytes, the file has %zu", who,
                            f->path, what, len, got);
    return BG_OK;
}

/* After the announced data the stream must end (this read also makes zlib
 * check the gzip trailer's CRC and length). */
static bg_status idx_expect_end(idx_file *f, const char *who) {
    unsigned char extra[64];
    int r = gzread(f->gz, extra, sizeof extra);
    if (r < 0) {
        int zerr;
        const char *msg = gzerror(f->gz, &zerr);
        return bg_set_error(BG_ERR_FORMAT, "%s: %s is corrupt: %s at the end of the data", who,
                            f->path, msg);
    }
    if (r > 0)
        return bg_set_error(BG_ERR_FORMAT,
                            "%s: %s is longer than its header announces (trailing bytes)", who,
                            f->path);
    return BG_OK;
}

static uint32_t be32(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/* Reads an image file: header (magic, n, rows, cols), then n*rows*cols bytes
 * into a malloc'd buffer. */
static bg_status read_images(const char *who, const char *path, const char *hint, int64_t *n,
                             int64_t *rows, int64_t *cols, uint8_t **pixels) {
    idx_file f;
    bg_status st = idx_open(&f, who, path, hint);
    if (st != BG_OK) return st;
    unsigned char h[16];
    st = idx_read(&f, who, h, sizeof h, "16-byte image header");
    if (st != BG_OK) goto done;
    uint32_t magic = be32(h);
    if (magic != IDX_IMAGES_MAGIC) {
        st = bg_set_error(BG_ERR_FORMAT,
                          "%s: %s is not an IDX image file: magic 0x%08x, want 0x%08x", who, path,
                          (unsigned)magic, IDX_IMAGES_MAGIC);
        goto done;
    }
    *n = be32(h + 4);
    *rows = be32(h + 8);
    *cols = be32(h + 12);
    if (*n < 1 || *n > IDX_MAX_COUNT || *rows < 1 || *rows > IDX_MAX_SIDE || *cols < 1 ||
        *cols > IDX_MAX_SIDE || *n * *rows * *cols > IDX_MAX_BYTES) {
        st = bg_set_error(BG_ERR_FORMAT, "%s: %s has implausible dims: %lld images of %lldx%lld",
                          who, path, (long long)*n, (long long)*rows, (long long)*cols);
        goto done;
    }
    size_t bytes = (size_t)(*n * *rows * *cols);
    *pixels = malloc(bytes);
    if (!*pixels) {
        st = bg_set_error(BG_ERR_NOMEM, "%s: cannot allocate %zu bytes for %s", who, bytes, path);
        goto done;
    }
    st = idx_read(&f, who, *pixels, bytes, "pixel data");
    if (st == BG_OK) st = idx_expect_end(&f, who);
    if (st != BG_OK) {
        free(*pixels);
        *pixels = NULL;
    }
done:
    idx_close(&f);
    return st;
}

/* Reads a label file into an i32 buffer; *max_label gets the largest label. */
static bg_status read_labels(const char *who, const char *path, const char *hint, int64_t *n,
                             int32_t **labels, int *max_label) {
    idx_file f;
    bg_status st = idx_open(&f, who, path, hint);
    if (st != BG_OK) return st;
    unsigned char h[8];
    uint8_t *raw = NULL;
    st = idx_read(&f, who, h, sizeof h, "8-byte label header");
    if (st != BG_OK) goto done;
    uint32_t magic = be32(h);
    if (magic != IDX_LABELS_MAGIC) {
        st = bg_set_error(BG_ERR_FORMAT,
                          "%s: %s is not an IDX label file: magic 0x%08x, want 0x%08x", who, path,
                          (unsigned)magic, IDX_LABELS_MAGIC);
        goto done;
    }
    *n = be32(h + 4);
    if (*n < 1 || *n > IDX_MAX_COUNT) {
        st = bg_set_error(BG_ERR_FORMAT, "%s: %s has an implausible label count: %lld", who, path,
                          (long long)*n);
        goto done;
    }
    raw = malloc((size_t)*n);
    *labels = malloc((size_t)*n * sizeof(int32_t));
    if (!raw || !*labels) {
        st = bg_set_error(BG_ERR_NOMEM, "%s: cannot allocate labels for %s", who, path);
        goto done;
    }
    st = idx_read(&f, who, raw, (size_t)*n, "label data");
    if (st == BG_OK) st = idx_expect_end(&f, who);
    if (st != BG_OK) goto done;
    *max_label = 0;
    for (int64_t i = 0; i < *n; i++) {
        (*labels)[i] = raw[i];
        if (raw[i] > *max_label) *max_label = raw[i];
    }
done:
    free(raw);
    if (st != BG_OK) {
        free(*labels);
        *labels = NULL;
    }
    idx_close(&f);
    return st;
}

// --- datasets ------------------------------------------------------------------

void bg_dataset_free(bg_dataset *ds) {
    if (!ds) return;
    free(ds->pixels);
    free(ds->values);
    free(ds->labels);
    free(ds);
}

int64_t bg_dataset_features(const bg_dataset *ds) {
    return ds ? ds->channels * ds->height * ds->width : 0;
}

/* Both files, cross-checked. want_side > 0 fixes rows = cols = want_side and
 * max_classes > 0 bounds the labels. */
static bg_status load_pair(const char *who, const char *images_path, const char *labels_path,
                           const char *hint, int64_t want_side, int max_classes, bg_dataset **out) {
    if (!out) return bg_set_error(BG_ERR_ARG, "%s: out is NULL", who);
    *out = NULL;
    if (!images_path || !labels_path) return bg_set_error(BG_ERR_ARG, "%s: path is NULL", who);
    bg_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) return bg_set_error(BG_ERR_NOMEM, "%s: out of memory", who);
    int64_t n_img = 0, n_lab = 0, rows = 0, cols = 0;
    int max_label = 0;
    bg_status st = read_images(who, images_path, hint, &n_img, &rows, &cols, &ds->pixels);
    if (st == BG_OK) st = read_labels(who, labels_path, hint, &n_lab, &ds->labels, &max_label);
    if (st != BG_OK) goto fail;
    if (n_img != n_lab) {
        st = bg_set_error(BG_ERR_FORMAT, "%s: %s has %lld images but %s has %lld labels", who,
                          images_path, (long long)n_img, labels_path, (long long)n_lab);
        goto fail;
    }
    if (want_side > 0 && (rows != want_side || cols != want_side)) {
        st = bg_set_error(BG_ERR_FORMAT, "%s: %s has %lldx%lld images, want %lldx%lld", who,
                          images_path, (long long)rows, (long long)cols, (long long)want_side,
                          (long long)want_side);
        goto fail;
    }
    if (max_classes > 0 && max_label >= max_classes) {
        st = bg_set_error(BG_ERR_FORMAT, "%s: %s has label %d, want 0..%d", who, labels_path,
                          max_label, max_classes - 1);
        goto fail;
    }
    ds->n = n_img;
    ds->channels = 1;
    ds->height = rows;
    ds->width = cols;
    ds->n_classes = max_classes > 0 ? max_classes : max_label + 1;
    *out = ds;
    return BG_OK;
fail:
    bg_dataset_free(ds);
    return st;
}

bg_status bg_idx_load(const char *images_path, const char *labels_path, bg_dataset **out) {
    return load_pair("idx_load", images_path, labels_path, NULL, 0, 0, out);
}

bg_status bg_fmnist_load(const char *dir, bg_fmnist_split split, bg_dataset **out) {
    static const char *const who = "fmnist_load";
    if (!out) return bg_set_error(BG_ERR_ARG, "%s: out is NULL", who);
    *out = NULL;
    if (split != BG_FMNIST_TRAIN && split != BG_FMNIST_TEST)
        return bg_set_error(BG_ERR_ARG, "%s: unknown split %d", who, (int)split);
    if (!dir || !*dir) dir = getenv("BG_FMNIST_DIR");
    if (!dir || !*dir) dir = BG_FMNIST_DEFAULT_DIR;
    const char *prefix = split == BG_FMNIST_TRAIN ? "train" : "t10k";
    char images[4096], labels[4096];
    int a = snprintf(images, sizeof images, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    int b = snprintf(labels, sizeof labels, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    if (a < 0 || b < 0 || (size_t)a >= sizeof images || (size_t)b >= sizeof labels)
        return bg_set_error(BG_ERR_ARG, "%s: directory name is too long (%zu bytes)", who,
                            strlen(dir));
    return load_pair(who, images, labels, FMNIST_PACKAGE, 28, 10, out);
}

// --- the batch iterator --------------------------------------------------------

struct bg_batcher {
    const bg_dataset *ds;
    bg_batcher_opts opts;
    int64_t *order;    /* [n] dataset indices in this epoch's order */
    int64_t pos;       /* next position in order */
    int64_t epoch;
    bool ordered;      /* order holds this epoch's permutation */
    int64_t last_start, last_count;
};

bg_status bg_batcher_new(const bg_dataset *ds, const bg_batcher_opts *opts, bg_batcher **out) {
    static const char *const who = "batcher_new";
    if (!out) return bg_set_error(BG_ERR_ARG, "%s: out is NULL", who);
    *out = NULL;
    if (!ds || !opts) return bg_set_error(BG_ERR_ARG, "%s: %s is NULL", who, ds ? "opts" : "dataset");
    if (opts->batch_size < 1)
        return bg_set_error(BG_ERR_ARG, "%s: batch_size must be positive: %lld", who,
                            (long long)opts->batch_size);
    bg_status sc = bg_shard_check(who, opts->shard_rank, opts->shard_count, opts->batch_size, "examples");
    if (sc != BG_OK) return sc;
    if (ds->n < 1 || (!ds->pixels && !ds->values) || !ds->labels)
        return bg_set_error(BG_ERR_ARG, "%s: dataset is empty", who);
    bg_batcher *b = calloc(1, sizeof *b);
    if (b) b->order = malloc((size_t)ds->n * sizeof *b->order);
    if (!b || !b->order) {
        free(b);
        return bg_set_error(BG_ERR_NOMEM, "%s: cannot allocate an order of %lld indices", who,
                            (long long)ds->n);
    }
    b->ds = ds;
    b->opts = *opts;
    *out = b;
    return BG_OK;
}

void bg_batcher_free(bg_batcher *b) {
    if (!b) return;
    free(b->order);
    free(b);
}

/* The order of epoch e: identity, then (when shuffling) Fisher-Yates with a
 * generator seeded from (seed, e) only, so any epoch can be reproduced. */
static void make_order(bg_batcher *b) {
    int64_t n = b->ds->n;
    for (int64_t i = 0; i < n; i++) b->order[i] = i;
    if (b->opts.shuffle) {
        bg_rng rng;
        bg_rng_seed(&rng, b->opts.seed ^ ((uint64_t)b->epoch * 0xd1b54a32d192ed03ULL));
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)bg_rng_below(&rng, (uint64_t)i + 1);
            int64_t t = b->order[i];
            b->order[i] = b->order[j];
            b->order[j] = t;
        }
    }
    b->pos = 0;
    b->ordered = true;
}

bool bg_batcher_next(bg_batcher *b, bg_ctx *ctx, bg_tensor **x, bg_tensor **y) {
    if (x) *x = NULL;
    if (y) *y = NULL;
    if (!ctx) {
        bg_set_error(BG_ERR_ARG, "batcher_next: ctx is NULL");
        return false;
    }
    if (!b || !x || !y) {
        bg_ctx_fail(ctx, BG_ERR_ARG, "batcher_next: %s is NULL", !b ? "batcher" : "x or y");
        return false;
    }
    if (bg_ctx_status(ctx) != BG_OK) return false;
    if (!b->ordered) make_order(b);
    const bg_dataset *ds = b->ds;
    int64_t left = ds->n - b->pos;
    int64_t count = left < b->opts.batch_size ? left : b->opts.batch_size;
    const int64_t shards = bg_shards(b->opts.shard_count);
    if (count == 0 || (b->opts.drop_last && count < b->opts.batch_size) || count < shards) {
        // End of the epoch: the next call starts the following one.
        b->epoch++;
        b->ordered = false;
        b->last_count = 0;
        return false;
    }
    // This process's slice of the global batch.
    int64_t lo, hi;
    bg_shard_slice(count, b->opts.shard_rank, shards, &lo, &hi);
    const int64_t global = count;
    count = hi - lo;
    int64_t f = bg_dataset_features(ds);
    bg_tensor *xt = b->opts.nchw
                        ? bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(count, ds->channels, ds->height, ds->width))
                        : bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(count, f));
    bg_tensor *yt = bg_empty(ctx, BG_DTYPE_I32, BG_SHAPE(count));
    if (!xt || !yt) return false;
    float *xd = bg_f32(xt);
    int32_t *yd = yt->data;
    const int64_t *idx = b->order + b->pos + lo;
    const bg_kernels *k = bg_kernels_get();
    for (int64_t i = 0; i < count; i++) {
        float *dst = xd + i * f;
        if (ds->values) {
            memcpy(dst, ds->values + idx[i] * f, sizeof(float) * (size_t)f);
        } else {
            k->unit_from_u8(dst, ds->pixels + idx[i] * f, f);   // p/255, as PyTorch's ToTensor
        }
        yd[i] = ds->labels[idx[i]];
    }
    b->last_start = b->pos + lo;
    b->last_count = count;
    b->pos += global;
    *x = xt;
    *y = yt;
    return true;
}

const int64_t *bg_batcher_indices(const bg_batcher *b, int64_t *count) {
    if (count) *count = b ? b->last_count : 0;
    if (!b || b->last_count == 0) return NULL;
    return b->order + b->last_start;
}

int64_t bg_batcher_batches(const bg_batcher *b) {
    if (!b) return 0;
    int64_t n = b->ds->n, bs = b->opts.batch_size, shards = bg_shards(b->opts.shard_count);
    return b->opts.drop_last || n % bs < shards ? n / bs : n / bs + 1;   // a last batch too small to split is skipped
}

int64_t bg_batcher_epoch(const bg_batcher *b) { return b ? b->epoch : 0; }

void bg_batcher_set_epoch(bg_batcher *b, int64_t epoch) {
    if (!b) return;
    b->epoch = epoch < 0 ? 0 : epoch;
    b->ordered = false;
    b->last_count = 0;
}

bg_status bg_batcher_seek(bg_batcher *b, int64_t epoch, int64_t batch) {
    if (!b) return bg_set_error(BG_ERR_ARG, "batcher_seek: batcher is NULL");
    int64_t nb = bg_batcher_batches(b);
    if (epoch < 0 || batch < 0 || batch > nb)
        return bg_set_error(BG_ERR_ARG, "batcher_seek: epoch %lld, batch %lld out of range (0..%lld batches)",
                            (long long)epoch, (long long)batch, (long long)nb);
    b->epoch = epoch;
    make_order(b);
    int64_t pos = batch * b->opts.batch_size;
    b->pos = pos < b->ds->n ? pos : b->ds->n;
    b->last_count = 0;
    return BG_OK;
}
