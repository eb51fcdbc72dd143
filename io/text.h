/* io/text.h — byte-level text for language models (io/text.c). */
#ifndef BG_IO_TEXT_H
#define BG_IO_TEXT_H

#include "tensor/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------
// text: any file read as bytes (tokens 0..255, a vocabulary of 256), split by
// position into training (the first 90%) and validation (the last 10%);
// batches of windows of T+1 consecutive bytes as i32 arena tensors x [B,T]
// and y [B,T], y being x shifted by one byte (y[b,t] is the byte after x[b,t]).
//
//     bg_text *text;
//     if (bg_text_load_kjv(&text) != BG_OK)     // or bg_text_load("input.txt", &text)
//         fprintf(stderr, "%s\n", bg_last_error());
//     bg_text_batcher *train, *val;
//     bg_text_batcher_new(text, &(bg_text_batcher_opts){.batch_size = 64, .context = 128,
//                                                        .seed = 1}, &train);
//     bg_text_batcher_new(text, &(bg_text_batcher_opts){.batch_size = 64, .context = 128,
//                                                        .split = BG_TEXT_VAL, .fixed = true}, &val);
//     bg_tensor *x, *y;                           // i32 [64,128] each
//     for (int64_t step = 0; step < steps; step++) {
//         bg_text_batcher_next(train, ctx, &x, &y); train_step(ctx, x, y); bg_ctx_reset(ctx);
//     }
//     double sum = 0; int64_t n = 0;              // validation loss in nats per byte
//     while (bg_text_batcher_next(val, ctx, &x, &y)) {
//         sum += mean_loss(ctx, x, y) * (double)bg_numel(y); n += bg_numel(y); bg_ctx_reset(ctx);
//     }
//     // checkpoint: save bg_text_batcher_position(train); a new process builds the
//     // batcher with the same opts and calls bg_text_batcher_seek(train, saved)
//     bg_text_batcher_free(train); bg_text_batcher_free(val);
//     bg_text_free(text);

#define BG_TEXT_VOCAB 256

/* Fields are read-only. The two splits are views of bytes: training is
 * bytes[0, n_train), validation bytes[n_train, n), n_train = floor(0.9 n)
 * (as nanoGPT's data[:int(n*0.9)]). */
typedef struct bg_text {
    char *path;        /* the path it was loaded from (for messages) */
    uint8_t *bytes;    /* [n] the whole file */
    int64_t n;         /* > 0 */
    int64_t n_train;   /* floor(0.9 n) */
    int64_t n_val;     /* n - n_train */
} bg_text;

typedef enum bg_text_split {
    BG_TEXT_TRAIN = 0, /* the first 90% of the bytes */
    BG_TEXT_VAL,       /* the last 10% */
} bg_text_split;

/* Reads the whole file at path. On failure *out is NULL and bg_last_error()
 * names the path: "text: PATH: no such file" (BG_ERR_IO), "text: PATH: the
 * file is empty" (BG_ERR_FORMAT), "text: PATH: not a regular file" (BG_ERR_IO),
 * "text: PATH: cannot open: <strerror>" / "cannot read: <strerror>" (BG_ERR_IO).
 * A split shorter than one window is an error only when a batcher is made
 * for it. Free with bg_text_free (NULL is a no-op). */
bg_status bg_text_load(const char *path, bg_text **out);
void bg_text_free(bg_text *text);
/* A split's bytes (a view into text->bytes); *n gets its length. */
const uint8_t *bg_text_split_bytes(const bg_text *text, bg_text_split split, int64_t *n);

// --- the default corpus: the King James Bible ----------------------------------

/* Debian's bible-kjv (with bible-kjv-text) prints the whole King James Bible
 * with `bible -l0 Ge1:1-Re22:21`: this many bytes of ASCII, 73 distinct
 * byte values, the same on every run. scripts/get-kjv.sh OUT writes the same
 * file from the shell. */
#define BG_KJV_BYTES 4298239
#define BG_KJV_COMMAND "bible -l0 Ge1:1-Re22:21"

/* Loads the King James Bible from its cache file, CACHE/bitgrad/kjv.txt with
 * CACHE = $XDG_CACHE_HOME when set (absolute), else $HOME/.cache, else
 * /tmp/bitgrad-UID (then the file is /tmp/bitgrad-UID/kjv.txt). A missing
 * cache file, or one that is not BG_KJV_BYTES long, is (re)made first by
 * running `bible` (found on $PATH) with its output going to a temporary file
 * that is renamed into place once complete (bg_atomic_begin / _commit:
 * concurrent callers are safe). (*out)->path is the cache file. Errors
 * (BG_ERR_IO): "text: the program bible was not found; install the Debian
 * packages bible-kjv and bible-kjv-text (scripts/install-deps.sh)",
 * "text: bible -l0 Ge1:1-Re22:21 failed (exit status N)", "text: bible -l0
 * Ge1:1-Re22:21 wrote N bytes, want 4298239", "text: cannot create the cache
 * folder DIR: <strerror>" (or ": it exists and is not a folder"), and the
 * atomic writer's ("text: PATH: cannot create a temporary file: ..."). */
bg_status bg_text_load_kjv(bg_text **out);

// --- batchers ---------------------------------------------------------------------

typedef struct bg_text_batcher bg_text_batcher;

typedef struct bg_text_batcher_opts {
    int64_t batch_size;   /* B, 1..2^30 */
    int64_t context;      /* T, 1..2^30: windows of T+1 bytes, x and y [B,T] */
    bg_text_split split;  /* BG_TEXT_TRAIN (default) or BG_TEXT_VAL */
    uint64_t seed;        /* random windows: batch k depends only on (seed, k) */
    /* false: random windows, an endless stream: each of the B windows of
     *   batch k starts at an offset drawn uniformly from the L - T valid
     *   starts of the split (L bytes long) by a bg_rng seeded from (seed, k)
     *   alone, so any batch can be reproduced without drawing the earlier ones.
     * true: the fixed evaluation set, the same windows on every pass and in
     *   every process, the seed unused: W = floor((L-1)/T) windows at offsets
     *   0, T, 2T, ... so that their targets cover each byte of the split after
     *   the first exactly once (up to the last T-1 bytes), in batches of B in
     *   order (the last one smaller when B does not divide W). */
    bool fixed;
    /* Data parallel (dist.h), random windows only: this process takes
     * windows [r*B/N, (r+1)*B/N) of every batch of B, so N processes together
     * train on exactly the windows one process would. 0 / 0: one process.
     * Fixed (evaluation) windows are never split. */
    int shard_rank, shard_count;
    /* fixed only: at most this many windows (0: all W), evenly spaced among
     * the W: window j of M starts at T * floor(j * W / M). */
    int64_t max_windows;
} bg_text_batcher_opts;

/* Iterates over a split of text (borrowed: it must outlive the batcher). On
 * failure *out is NULL and bg_last_error() says why, e.g. for a split shorter
 * than one window (BG_ERR_ARG): "text: the validation split of PATH is 99
 * bytes, shorter than one window of 129 (context 128 + 1)" ("the training
 * split" for BG_TEXT_TRAIN); "text_batcher_new: batch_size must be in
 * 1..2^30: 0", "text_batcher_new: context must be in 1..2^30: 0",
 * "text_batcher_new: max_windows must not be negative: -1",
 * "text_batcher_new: unknown split 7". bg_text_batcher_free(NULL) is a no-op. */
bg_status bg_text_batcher_new(const bg_text *text, const bg_text_batcher_opts *opts,
                              bg_text_batcher **out);
void bg_text_batcher_free(bg_text_batcher *b);
/* The next batch as arena tensors on ctx (nothing is allocated once the
 * arena has grown): *x i32 [B,T] with x[i,t] = split[o_i + t] and *y i32
 * [B,T] with y[i,t] = split[o_i + t + 1], o_i the window starts. Random
 * windows: always a batch of B (false only on failure). Fixed set: false,
 * with *x and *y NULL, after the last batch of a pass — the batcher is then
 * back at batch 0, so `while (bg_text_batcher_next(...))` runs one pass.
 * On failure false and bg_ctx_status(ctx) is set (a failed ctx is left as
 * it is, nothing is computed, the position does not move). */
bool bg_text_batcher_next(bg_text_batcher *b, bg_ctx *ctx, bg_tensor **x, bg_tensor **y);
/* The window starts (offsets into the split's bytes) of the batch last
 * returned; *count gets its B. NULL (count 0) before the first batch, after
 * a seek and at the end of a pass. */
const int64_t *bg_text_batcher_offsets(const bg_text_batcher *b, int64_t *count);
/* Fixed set: batches per pass, ceil(W/B) (W after max_windows). Random: 0
 * (the stream has no end). */
int64_t bg_text_batcher_batches(const bg_text_batcher *b);
/* Fixed set: its W windows (after max_windows). Random: the L - T valid starts. */
int64_t bg_text_batcher_windows(const bg_text_batcher *b);
/* Resuming. The whole state of a batcher is one int64, its position: random
 * windows, the batches drawn so far (since creation or the last seek); fixed
 * set, the batches returned in the current pass. With the same text and
 * opts (seed included), bg_text_batcher_seek(b, p) makes the next batch the
 * one that followed position p: a checkpoint stores p (and the program its
 * opts), and a new process continues with bitwise identical batches.
 * Seeking is O(1). BG_ERR_ARG when p < 0, or p > batches for the fixed set:
 * "text_batcher_seek: position 5 out of range (0..3 batches)". */
int64_t bg_text_batcher_position(const bg_text_batcher *b);
bg_status bg_text_batcher_seek(bg_text_batcher *b, int64_t position);

#ifdef __cplusplus
}
#endif
#endif /* BG_IO_TEXT_H */
