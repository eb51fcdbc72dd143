/* io/dataset.h — datasets and batchers (io/dataset.c). */
#ifndef BG_IO_DATASET_H
#define BG_IO_DATASET_H

#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------
// datasets: image classification sets read from gzipped IDX files (MNIST
// format; Fashion-MNIST from the Debian package dataset-fashion-mnist), kept
// as bytes; a batch iterator turns them into f32 arena tensors per step.
//
//     bg_dataset *train;
//     if (bg_fmnist_load(NULL, BG_FMNIST_TRAIN, &train) != BG_OK)
//         fprintf(stderr, "%s\n", bg_last_error());
//     bg_batcher *b;
//     bg_batcher_new(train, &(bg_batcher_opts){.batch_size = 128, .shuffle = true}, &b);
//     bg_tensor *x, *y;                    // x f32 [B,784] in [0,1], y i32 [B]
//     for (int epoch = 0; epoch < 5; epoch++)
//         while (bg_batcher_next(b, ctx, &x, &y)) { step(ctx, x, y); bg_ctx_reset(ctx); }
//     bg_batcher_free(b);
//     bg_dataset_free(train);

/* Fields are read-only. Pixels are stored as bytes (0..255) and scaled to
 * [0,1] only when a batch is made, which keeps the resident set small. */
typedef struct bg_dataset {
    int64_t n;           /* examples */
    int64_t channels;    /* 1 for IDX files */
    int64_t height;      /* 28 for (Fashion-)MNIST */
    int64_t width;       /* 28 */
    int64_t n_classes;   /* 10 for Fashion-MNIST; max label + 1 otherwise */
    uint8_t *pixels;     /* [n, channels*height*width], row-major */
    int32_t *labels;     /* [n], each in 0..n_classes-1 */
    float *values;       /* [n, channels*height*width] f32 features used as they are, instead of
                          * pixels (which is then NULL): datasets from float arrays */
} bg_dataset;

typedef enum bg_fmnist_split {
    BG_FMNIST_TRAIN = 0, /* train-{images-idx3,labels-idx1}-ubyte.gz, 60000 examples */
    BG_FMNIST_TEST,      /* t10k-{images-idx3,labels-idx1}-ubyte.gz, 10000 examples */
} bg_fmnist_split;

#define BG_FMNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

/* Loads one Fashion-MNIST split from dir; dir NULL means $BG_FMNIST_DIR when
 * set, else BG_FMNIST_DEFAULT_DIR. Checks both files' magic numbers, dims
 * (28x28), that the counts agree, labels < 10, and that each file holds exactly
 * the bytes its header announces. On failure *out is NULL and bg_last_error()
 * names the path: a missing file gives BG_ERR_IO and says which Debian package
 * to install; a corrupt one gives BG_ERR_FORMAT. Free with bg_dataset_free. */
bg_status bg_fmnist_load(const char *dir, bg_fmnist_split split, bg_dataset **out);
/* The same for any pair of IDX files (uint8 images [n,h,w] with magic 0x803,
 * uint8 labels [n] with magic 0x801), gzipped or not. n_classes = max label+1. */
bg_status bg_idx_load(const char *images_path, const char *labels_path, bg_dataset **out);
void bg_dataset_free(bg_dataset *ds);
/* A dataset from two .npy files (format/npy.h; io/npy_dataset.c): x_path
 * holds [N, F], [N, H, W] or [N, C, H, W] examples as f4 or f8 (used as they
 * are, f8 rounded to f32) or u1 (pixels, scaled to [0,1] like the IDX sets),
 * y_path [N] integer labels (u1, i4, i8), each >= 0; n_classes = max label + 1.
 * On failure *out is NULL and bg_last_error() names the file. */
bg_status bg_dataset_from_npy(const char *x_path, const char *y_path, bg_dataset **out);
/* The same from memory (copied): x is f32 (BG_DTYPE_F32) or u8 pixels
 * (BG_DTYPE_U8) of shape [N, F], [N, H, W] or [N, C, H, W] (ndim 2..4),
 * labels [N] each >= 0. */
bg_status bg_dataset_from_arrays(bg_dtype dtype, const void *x, int ndim, const int64_t *shape,
                                 const int32_t *labels, bg_dataset **out);
/* Features per example: channels * height * width. */
int64_t bg_dataset_features(const bg_dataset *ds);

typedef struct bg_batcher bg_batcher;

typedef struct bg_batcher_opts {
    int64_t batch_size;  /* > 0 */
    bool shuffle;        /* a fresh seeded Fisher-Yates order every epoch */
    uint64_t seed;       /* the order of epoch e depends only on (seed, e) */
    bool drop_last;      /* skip the last partial batch instead of returning it */
    bool nchw;           /* x as [B,C,H,W] instead of [B,C*H*W] */
    /* Data parallel (dist.h): this process takes slice shard_rank of
     * shard_count equal slices of every batch of batch_size (the global
     * batch), rows [r*c/N, (r+1)*c/N) of a batch of c rows, so N processes
     * together see exactly the batches one process sees; a last batch of
     * fewer than N rows is skipped by all. 0 / 0 (the default): one process. */
    int shard_rank, shard_count;
} bg_batcher_opts;

/* Iterates over ds (borrowed: it must outlive the batcher). On failure *out
 * is NULL and bg_last_error() says why. bg_batcher_free(NULL) is a no-op. */
bg_status bg_batcher_new(const bg_dataset *ds, const bg_batcher_opts *opts, bg_batcher **out);
void bg_batcher_free(bg_batcher *b);
/* The next batch of the current epoch, as arena tensors on ctx (so a step
 * allocates nothing once the arena has grown): *x f32 [B,F] (or [B,C,H,W])
 * with pixels/255, *y i32 [B]. B is batch_size, except that the last batch
 * of an epoch is smaller when n is not a multiple of it (unless drop_last).
 * Returns false, with *x and *y NULL, at the end of the epoch — the batcher
 * then moves to the next epoch, so `while (bg_batcher_next(...))` runs one
 * epoch — or on failure, when bg_ctx_status(ctx) is set. */
bool bg_batcher_next(bg_batcher *b, bg_ctx *ctx, bg_tensor **x, bg_tensor **y);
/* The dataset indices of the batch last returned; *count gets B. */
const int64_t *bg_batcher_indices(const bg_batcher *b, int64_t *count);
/* Batches per epoch (counting a partial last batch unless drop_last). */
int64_t bg_batcher_batches(const bg_batcher *b);
/* The current epoch (0 at creation), and a jump to the start of epoch e
 * (resuming from a checkpoint reproduces the same order). */
int64_t bg_batcher_epoch(const bg_batcher *b);
void bg_batcher_set_epoch(bg_batcher *b, int64_t epoch);
/* Jumps to batch `batch` (0..bg_batcher_batches) of epoch `epoch`, so the
 * next bg_batcher_next returns what it would have returned there (resuming
 * a checkpoint's epoch / batch_in_epoch mid-epoch). BG_ERR_ARG when out of
 * range. */
bg_status bg_batcher_seek(bg_batcher *b, int64_t epoch, int64_t batch);

#ifdef __cplusplus
}
#endif
#endif /* BG_IO_DATASET_H */
