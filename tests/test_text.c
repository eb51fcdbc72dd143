/* test_text.c — byte-level text for language models (io/text.h): loading a
 * file as bytes and its 90/10 split, random windows (consecutive bytes, y = x
 * shifted, uniform starts, determinism by seed, exact resume from the
 * position, no allocation in the steady state), the fixed evaluation set,
 * every error message, and the King James Bible made by Debian's `bible`
 * (bible-kjv, bible-kjv-text: installed by scripts/install-deps.sh; this test
 * fails without them). */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/test_util.h"

static char tmpdir[64];

static void tmp_path(char *buf, size_t len, const char *name) { snprintf(buf, len, "%s/%s", tmpdir, name); }

/* Writes n bytes (byte i = (i * 37 + 11) mod 256, or the bytes given) to tmpdir/name. */
static void write_text(const char *name, int64_t n, const uint8_t *bytes) {
    char path[256];
    tmp_path(path, sizeof path, name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    for (int64_t i = 0; i < n; i++) fputc(bytes ? bytes[i] : (int)((i * 37 + 11) & 255), f);
    fclose(f);
}

static bg_text *load_tmp(const char *name) {
    char path[256];
    tmp_path(path, sizeof path, name);
    bg_text *t = NULL;
    bg_status st = bg_text_load(path, &t);
    CHECK_MSG(st == BG_OK && t, "loading %s: %s", path, bg_last_error());
    return t;
}

// --- loading and the split --------------------------------------------------------

static void test_load(void) {
    write_text("a.txt", 1000, NULL);
    bg_text *t = load_tmp("a.txt");
    if (!t) return;
    char path[256];
    tmp_path(path, sizeof path, "a.txt");
    CHECK_STR(t->path, path);
    CHECK(t->n == 1000 && t->n_train == 900 && t->n_val == 100);
    int64_t bad = 0;
    for (int64_t i = 0; i < t->n; i++) bad += t->bytes[i] != (uint8_t)((i * 37 + 11) & 255);
    CHECK(bad == 0);
    int64_t n;
    CHECK(bg_text_split_bytes(t, BG_TEXT_TRAIN, &n) == t->bytes && n == 900);
    CHECK(bg_text_split_bytes(t, BG_TEXT_VAL, &n) == t->bytes + 900 && n == 100);
    CHECK(bg_text_split_bytes(t, 7, &n) == NULL && n == 0);
    CHECK(bg_text_split_bytes(NULL, BG_TEXT_TRAIN, &n) == NULL && n == 0);
    bg_text_free(t);
    bg_text_free(NULL);

    // n_train = floor(0.9 n), n_val the rest, for sizes around the edges.
    const int64_t sizes[][3] = {{1, 0, 1}, {9, 8, 1}, {10, 9, 1}, {11, 9, 2}, {19, 17, 2},
                                {1009, 908, 101}, {4298239, 3868415, 429824}};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        if (sizes[k][0] > 100000) continue;   // the KJV's numbers are checked with the KJV
        write_text("s.txt", sizes[k][0], NULL);
        bg_text *s = load_tmp("s.txt");
        CHECK_MSG(s && s->n == sizes[k][0] && s->n_train == sizes[k][1] && s->n_val == sizes[k][2],
                  "n %lld: train %lld, val %lld", (long long)sizes[k][0], s ? (long long)s->n_train : -1,
                  s ? (long long)s->n_val : -1);
        bg_text_free(s);
    }
    // Every byte value 0..255 (NUL, 0xFF) is a token.
    uint8_t all[256];
    for (int i = 0; i < 256; i++) all[i] = (uint8_t)(255 - i);
    write_text("all.bin", 256, all);
    t = load_tmp("all.bin");
    CHECK(t && t->n == 256 && memcmp(t->bytes, all, 256) == 0);
    bg_text_free(t);
}

// --- random windows -----------------------------------------------------------------

/* Checks one batch: shapes, offsets in range, x = split[o..o+T), y = split[o+1..o+T]. */
static void check_batch(bg_text_batcher *b, const bg_tensor *x, const bg_tensor *y, const uint8_t *split,
                        int64_t len, int64_t want_b, int64_t T) {
    int64_t count;
    const int64_t *off = bg_text_batcher_offsets(b, &count);
    CHECK(off != NULL && count == want_b);
    CHECK(x && y && x->dtype == BG_DTYPE_I32 && y->dtype == BG_DTYPE_I32 && x->ndim == 2 && y->ndim == 2 &&
          x->shape[0] == want_b && x->shape[1] == T && y->shape[0] == want_b && y->shape[1] == T);
    if (!off || !x || !y) return;
    int64_t bad_off = 0, bad_x = 0, bad_y = 0, bad_shift = 0;
    const int32_t *xd = x->data, *yd = y->data;
    for (int64_t i = 0; i < count; i++) {
        if (off[i] < 0 || off[i] + T + 1 > len) {
            bad_off++;
            continue;
        }
        for (int64_t t = 0; t < T; t++) {
            bad_x += xd[i * T + t] != split[off[i] + t];
            bad_y += yd[i * T + t] != split[off[i] + t + 1];
            if (t + 1 < T) bad_shift += yd[i * T + t] != xd[i * T + t + 1];
        }
    }
    CHECK_MSG(bad_off == 0 && bad_x == 0 && bad_y == 0 && bad_shift == 0,
              "%lld offsets out of range, %lld x, %lld y, %lld shift mismatches", (long long)bad_off,
              (long long)bad_x, (long long)bad_y, (long long)bad_shift);
}

/* Draws n batches of B x T and returns their x and y bytes, concatenated. */
static int32_t *draw(bg_text_batcher *b, bg_ctx *ctx, int n, int64_t B, int64_t T) {
    int32_t *out = calloc((size_t)(n * B * T * 2), sizeof *out);
    for (int k = 0; k < n; k++) {
        bg_tensor *x, *y;
        CHECK(bg_text_batcher_next(b, ctx, &x, &y));
        if (!x || !y) break;
        memcpy(out + (size_t)(k * 2) * (size_t)(B * T), x->data, (size_t)(B * T) * sizeof *out);
        memcpy(out + (size_t)(k * 2 + 1) * (size_t)(B * T), y->data, (size_t)(B * T) * sizeof *out);
        bg_ctx_reset(ctx);
    }
    return out;
}

static void test_random(void) {
    bg_text *t = load_tmp("a.txt");
    if (!t) return;
    bg_ctx *ctx = bg_ctx_new(0);
    const int64_t B = 8, T = 16;
    bg_text_batcher_opts opts = {.batch_size = B, .context = T, .seed = 42};
    bg_text_batcher *b = NULL;
    CHECK(bg_text_batcher_new(t, &opts, &b) == BG_OK && b);
    if (!b) goto out;
    CHECK(bg_text_batcher_windows(b) == 900 - 16 && bg_text_batcher_batches(b) == 0);
    CHECK(bg_text_batcher_position(b) == 0);
    int64_t count;
    CHECK(bg_text_batcher_offsets(b, &count) == NULL && count == 0);

    // Windows of consecutive bytes, y = x shifted; starts uniform over all
    // 884 valid starts: 3000 batches hit each (both ends included).
    int64_t *hits = calloc(884, sizeof *hits);
    for (int k = 0; k < 3000; k++) {
        bg_tensor *x, *y;
        CHECK(bg_text_batcher_next(b, ctx, &x, &y));
        if (k < 20) check_batch(b, x, y, t->bytes, 900, B, T);
        const int64_t *off = bg_text_batcher_offsets(b, &count);
        for (int64_t i = 0; off && i < count; i++)
            if (off[i] >= 0 && off[i] < 884) hits[off[i]]++;
        bg_ctx_reset(ctx);
    }
    CHECK(bg_text_batcher_position(b) == 3000);
    int64_t never = 0, lo = 1 << 30, hi = 0, total = 0;
    for (int i = 0; i < 884; i++) {
        never += hits[i] == 0;
        if (hits[i] < lo) lo = hits[i];
        if (hits[i] > hi) hi = hits[i];
        total += hits[i];
    }
    // 24000 draws, 27.1 per start on average.
    CHECK_MSG(never == 0 && total == 24000 && lo >= 8 && hi <= 55,
              "%lld starts never drawn, counts %lld..%lld, total %lld", (long long)never, (long long)lo,
              (long long)hi, (long long)total);
    free(hits);

    // The steady state allocates nothing: batches come from the ctx arena.
    uint64_t allocs = bg_alloc_count();
    for (int k = 0; k < 50; k++) {
        bg_tensor *x, *y;
        CHECK(bg_text_batcher_next(b, ctx, &x, &y));
        bg_ctx_reset(ctx);
    }
    CHECK_MSG(bg_alloc_count() == allocs, "50 batches made %llu allocations",
              (unsigned long long)(bg_alloc_count() - allocs));
    bg_text_batcher_free(b);

    // The validation split works the same way (offsets into the split).
    CHECK(bg_text_batcher_new(t, &(bg_text_batcher_opts){.batch_size = 3, .context = 99, .split = BG_TEXT_VAL,
                                                          .seed = 1},
                              &b) == BG_OK);
    CHECK(bg_text_batcher_windows(b) == 1);   // exactly one window: the whole split
    for (int k = 0; k < 3; k++) {
        bg_tensor *x, *y;
        CHECK(bg_text_batcher_next(b, ctx, &x, &y));
        check_batch(b, x, y, t->bytes + 900, 100, 3, 99);
        const int64_t *off = bg_text_batcher_offsets(b, &count);
        CHECK(off && off[0] == 0 && off[1] == 0 && off[2] == 0);
        bg_ctx_reset(ctx);
    }
    bg_text_batcher_free(b);

    // Determinism by seed: same seed, same batches; another seed, others.
    const int n = 10;
    const size_t bytes = (size_t)(n * B * T * 2) * sizeof(int32_t);
    bg_text_batcher *b1 = NULL, *b2 = NULL, *b3 = NULL;
    CHECK(bg_text_batcher_new(t, &opts, &b1) == BG_OK);
    CHECK(bg_text_batcher_new(t, &opts, &b2) == BG_OK);
    CHECK(bg_text_batcher_new(t, &(bg_text_batcher_opts){.batch_size = B, .context = T, .seed = 43}, &b3) ==
          BG_OK);
    int32_t *ten = draw(b1, ctx, n, B, T), *again = draw(b2, ctx, n, B, T), *other = draw(b3, ctx, n, B, T);
    CHECK(memcmp(ten, again, bytes) == 0);
    CHECK(memcmp(ten, other, bytes) != 0);
    // Batches differ from one another within a stream.
    CHECK(memcmp(ten, ten + 2 * B * T, (size_t)(B * T) * sizeof(int32_t)) != 0);
    free(again);
    free(other);
    bg_text_batcher_free(b2);
    bg_text_batcher_free(b3);

    // Exact resume: 5 batches, save the position, a fresh batcher with the
    // same opts seeks there and draws 5 more: bitwise the last 5 of the 10.
    bg_text_batcher *first = NULL, *resumed = NULL;
    CHECK(bg_text_batcher_new(t, &opts, &first) == BG_OK);
    int32_t *head = draw(first, ctx, 5, B, T);
    int64_t saved = bg_text_batcher_position(first);
    CHECK(saved == 5);
    bg_text_batcher_free(first);
    CHECK(bg_text_batcher_new(t, &opts, &resumed) == BG_OK);
    CHECK(bg_text_batcher_seek(resumed, saved) == BG_OK && bg_text_batcher_position(resumed) == 5);
    CHECK(bg_text_batcher_offsets(resumed, &count) == NULL && count == 0);
    int32_t *tail = draw(resumed, ctx, 5, B, T);
    CHECK(bg_text_batcher_position(resumed) == 10);
    CHECK(memcmp(head, ten, bytes / 2) == 0);
    CHECK_MSG(memcmp(tail, ten + 5 * 2 * B * T, bytes / 2) == 0, "resumed batches 5..9 differ");
    // Seeking back reproduces batch 0 (of b1, which drew 10).
    CHECK(bg_text_batcher_seek(b1, 0) == BG_OK);
    int32_t *zero = draw(b1, ctx, 1, B, T);
    CHECK(memcmp(zero, ten, (size_t)(2 * B * T) * sizeof(int32_t)) == 0);
    free(zero);
    free(head);
    free(tail);
    free(ten);
    bg_text_batcher_free(resumed);

    // A failed ctx: no batch, nothing computed, the position does not move.
    bg_ctx_fail(ctx, BG_ERR_ARG, "test: poisoned");
    bg_tensor *x = (bg_tensor *)1, *y = (bg_tensor *)1;
    int64_t pos = bg_text_batcher_position(b1);
    CHECK(!bg_text_batcher_next(b1, ctx, &x, &y) && x == NULL && y == NULL);
    CHECK(bg_text_batcher_position(b1) == pos);
    CHECK_STR(bg_ctx_error(ctx), "test: poisoned");
    bg_ctx_reset(ctx);
    CHECK(!bg_text_batcher_next(NULL, ctx, &x, &y));
    CHECK_STR(bg_ctx_error(ctx), "text_batcher_next: batcher is NULL");
    bg_ctx_reset(ctx);
    CHECK(!bg_text_batcher_next(b1, NULL, &x, &y));
    CHECK_STR(bg_last_error(), "text_batcher_next: ctx is NULL");
    CHECK(bg_text_batcher_seek(b1, -1) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "text_batcher_seek: position -1 is negative");
    CHECK(bg_text_batcher_seek(b1, 1000000000000LL) == BG_OK);   // any position of the endless stream
    bg_text_batcher_free(b1);
out:
    bg_ctx_free(ctx);
    bg_text_free(t);
}

// --- the fixed evaluation set ----------------------------------------------------------

/* One pass over a fixed batcher: the offsets of all its windows (into out,
 * at most cap) and checks of every batch. Returns the number of windows. */
static int64_t fixed_pass(bg_text_batcher *b, bg_ctx *ctx, const uint8_t *split, int64_t len, int64_t B, int64_t T,
                          int64_t *out, int64_t cap) {
    int64_t n = 0, batches = 0, W = bg_text_batcher_windows(b);
    bg_tensor *x, *y;
    while (bg_text_batcher_next(b, ctx, &x, &y)) {
        int64_t want = W - n < B ? W - n : B, count;
        check_batch(b, x, y, split, len, want, T);
        const int64_t *off = bg_text_batcher_offsets(b, &count);
        for (int64_t i = 0; off && i < count && n + i < cap; i++) out[n + i] = off[i];
        n += count;
        batches++;
        bg_ctx_reset(ctx);
    }
    CHECK(x == NULL && y == NULL && bg_ctx_status(ctx) == BG_OK);
    CHECK(batches == bg_text_batcher_batches(b) && n == W);
    CHECK(bg_text_batcher_position(b) == 0);   // back at the start
    return n;
}

static void test_fixed(void) {
    bg_text *t = load_tmp("a.txt");
    if (!t) return;
    bg_ctx *ctx = bg_ctx_new(0);
    const uint8_t *val = t->bytes + 900;
    // 100 validation bytes, T = 10: W = floor(99/10) = 9 windows at 0, 10, ..., 80;
    // batches of 4: 4, 4, 1.
    bg_text_batcher_opts opts = {.batch_size = 4, .context = 10, .split = BG_TEXT_VAL, .fixed = true, .seed = 5};
    bg_text_batcher *b = NULL, *b2 = NULL;
    CHECK(bg_text_batcher_new(t, &opts, &b) == BG_OK && b);
    if (!b) goto out;
    CHECK(bg_text_batcher_windows(b) == 9 && bg_text_batcher_batches(b) == 3);
    int64_t off[16], off2[16];
    CHECK(fixed_pass(b, ctx, val, 100, 4, 10, off, 16) == 9);
    for (int i = 0; i < 9; i++) CHECK_MSG(off[i] == 10 * i, "window %d at %lld", i, (long long)off[i]);
    // The targets cover bytes 1..90 of the split exactly once.
    // (window i predicts bytes 10i+1 .. 10i+10)
    // The same windows on the next pass, and from another batcher whatever its seed.
    CHECK(fixed_pass(b, ctx, val, 100, 4, 10, off2, 16) == 9 && memcmp(off, off2, 9 * sizeof *off) == 0);
    opts.seed = 6;
    CHECK(bg_text_batcher_new(t, &opts, &b2) == BG_OK);
    memset(off2, 0, sizeof off2);
    CHECK(b2 && fixed_pass(b2, ctx, val, 100, 4, 10, off2, 16) == 9 && memcmp(off, off2, 9 * sizeof *off) == 0);
    bg_text_batcher_free(b2);
    b2 = NULL;

    // Batch i of the set: seek(i), next. Identical across calls.
    bg_tensor *x, *y;
    int32_t first[40], second[40];
    for (int rep = 0; rep < 2; rep++) {
        CHECK(bg_text_batcher_seek(b, 1) == BG_OK);
        CHECK(bg_text_batcher_next(b, ctx, &x, &y));
        int64_t count;
        const int64_t *o = bg_text_batcher_offsets(b, &count);
        CHECK(o && count == 4 && o[0] == 40 && o[3] == 70);
        memcpy(rep ? second : first, x->data, sizeof first);
        bg_ctx_reset(ctx);
    }
    CHECK(memcmp(first, second, sizeof first) == 0 && first[0] == val[40] && first[39] == val[79]);
    CHECK(bg_text_batcher_seek(b, 2) == BG_OK && bg_text_batcher_next(b, ctx, &x, &y) && x->shape[0] == 1);
    bg_ctx_reset(ctx);
    CHECK(!bg_text_batcher_next(b, ctx, &x, &y));   // end of the pass
    CHECK(bg_text_batcher_seek(b, 3) == BG_OK && !bg_text_batcher_next(b, ctx, &x, &y));
    CHECK(bg_text_batcher_seek(b, 4) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "text_batcher_seek: position 4 out of range (0..3 batches)");
    bg_text_batcher_free(b);
    b = NULL;

    // max_windows: 4 of the 9, evenly spaced, at T * floor(j * 9 / 4) = 0, 20, 40, 60.
    opts.max_windows = 4;
    opts.batch_size = 3;
    CHECK(bg_text_batcher_new(t, &opts, &b) == BG_OK && b);
    if (!b) goto out;
    CHECK(bg_text_batcher_windows(b) == 4 && bg_text_batcher_batches(b) == 2);
    CHECK(fixed_pass(b, ctx, val, 100, 3, 10, off, 16) == 4);
    CHECK(off[0] == 0 && off[1] == 20 && off[2] == 40 && off[3] == 60);
    bg_text_batcher_free(b);
    // More than there are: all 9.
    opts.max_windows = 100;
    CHECK(bg_text_batcher_new(t, &opts, &b) == BG_OK && b);
    CHECK(bg_text_batcher_windows(b) == 9);
    bg_text_batcher_free(b);
    b = NULL;

    // A split of exactly one window; and the training split.
    CHECK(bg_text_batcher_new(t, &(bg_text_batcher_opts){.batch_size = 2, .context = 99, .split = BG_TEXT_VAL,
                                                          .fixed = true},
                              &b) == BG_OK);
    CHECK(b && bg_text_batcher_windows(b) == 1 && bg_text_batcher_batches(b) == 1);
    if (b) CHECK(fixed_pass(b, ctx, val, 100, 2, 99, off, 16) == 1 && off[0] == 0);
    bg_text_batcher_free(b);
    CHECK(bg_text_batcher_new(t, &(bg_text_batcher_opts){.batch_size = 64, .context = 8, .fixed = true}, &b) ==
          BG_OK);
    int64_t *big = calloc(200, sizeof *big);
    CHECK(b && bg_text_batcher_windows(b) == 112 && bg_text_batcher_batches(b) == 2);   // floor(899/8)
    if (b) CHECK(fixed_pass(b, ctx, t->bytes, 900, 64, 8, big, 200) == 112 && big[111] == 888);
    free(big);
    bg_text_batcher_free(b);
    b = NULL;
out:
    bg_text_batcher_free(b);
    bg_ctx_free(ctx);
    bg_text_free(t);
}

// --- errors -------------------------------------------------------------------------------

static void test_errors(void) {
    char path[256], want[512];
    bg_text *t = (bg_text *)1;

    tmp_path(path, sizeof path, "missing.txt");
    CHECK(bg_text_load(path, &t) == BG_ERR_IO && !t);
    snprintf(want, sizeof want, "text: %s: no such file", path);
    CHECK_STR(bg_last_error(), want);

    write_text("empty.txt", 0, NULL);
    tmp_path(path, sizeof path, "empty.txt");
    t = (bg_text *)1;
    CHECK(bg_text_load(path, &t) == BG_ERR_FORMAT && !t);
    snprintf(want, sizeof want, "text: %s: the file is empty", path);
    CHECK_STR(bg_last_error(), want);

    CHECK(bg_text_load(tmpdir, &t) == BG_ERR_IO && !t);
    snprintf(want, sizeof want, "text: %s: not a regular file", tmpdir);
    CHECK_STR(bg_last_error(), want);

    CHECK(bg_text_load(NULL, &t) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "text: path is NULL or empty");
    CHECK(bg_text_load("x", NULL) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "text: out is NULL");

    // Splits shorter than one window: 990 bytes = 891 + 99.
    write_text("short.txt", 990, NULL);
    tmp_path(path, sizeof path, "short.txt");
    t = load_tmp("short.txt");
    if (!t) return;
    bg_text_batcher *b = (bg_text_batcher *)1;
    CHECK(bg_text_batcher_new(t, &(bg_text_batcher_opts){.batch_size = 4, .context = 128, .split = BG_TEXT_VAL},
                              &b) == BG_ERR_ARG &&
          !b);
    snprintf(want, sizeof want,
             "text: the validation split of %s is 99 bytes, shorter than one window of 129 (context 128 + 1)", path);
    CHECK_STR(bg_last_error(), want);
    // The same for the fixed set; and 98 + 1 = 99 fits.
    CHECK(bg_text_batcher_new(t, &(bg_text_batcher_opts){.batch_size = 4, .context = 99, .split = BG_TEXT_VAL,
                                                          .fixed = true},
                              &b) == BG_ERR_ARG);
    snprintf(want, sizeof want,
             "text: the validation split of %s is 99 bytes, shorter than one window of 100 (context 99 + 1)", path);
    CHECK_STR(bg_last_error(), want);
    CHECK(bg_text_batcher_new(t, &(bg_text_batcher_opts){.batch_size = 4, .context = 98, .split = BG_TEXT_VAL,
                                                          .fixed = true},
                              &b) == BG_OK);
    bg_text_batcher_free(b);
    CHECK(bg_text_batcher_new(t, &(bg_text_batcher_opts){.batch_size = 4, .context = 891}, &b) == BG_ERR_ARG);
    snprintf(want, sizeof want,
             "text: the training split of %s is 891 bytes, shorter than one window of 892 (context 891 + 1)", path);
    CHECK_STR(bg_last_error(), want);
    bg_text_free(t);

    // A one-byte file: an empty training split.
    write_text("one.txt", 1, NULL);
    tmp_path(path, sizeof path, "one.txt");
    t = load_tmp("one.txt");
    if (!t) return;
    CHECK(bg_text_batcher_new(t, &(bg_text_batcher_opts){.batch_size = 1, .context = 1}, &b) == BG_ERR_ARG);
    snprintf(want, sizeof want,
             "text: the training split of %s is 0 bytes, shorter than one window of 2 (context 1 + 1)", path);
    CHECK_STR(bg_last_error(), want);

    // Options.
    CHECK(bg_text_batcher_new(t, &(bg_text_batcher_opts){.batch_size = 0, .context = 1}, &b) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "text_batcher_new: batch_size must be in 1..2^30: 0");
    CHECK(bg_text_batcher_new(t, &(bg_text_batcher_opts){.batch_size = 1, .context = 0}, &b) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "text_batcher_new: context must be in 1..2^30: 0");
    CHECK(bg_text_batcher_new(t, &(bg_text_batcher_opts){.batch_size = 1, .context = (1LL << 30) + 1}, &b) ==
          BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "text_batcher_new: context must be in 1..2^30: 1073741825");
    CHECK(bg_text_batcher_new(t, &(bg_text_batcher_opts){.batch_size = 1, .context = 1, .split = 7}, &b) ==
          BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "text_batcher_new: unknown split 7");
    CHECK(bg_text_batcher_new(t, &(bg_text_batcher_opts){.batch_size = 1, .context = 1, .max_windows = -1}, &b) ==
          BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "text_batcher_new: max_windows must not be negative: -1");
    CHECK(bg_text_batcher_new(NULL, &(bg_text_batcher_opts){.batch_size = 1, .context = 1}, &b) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "text_batcher_new: text is NULL");
    CHECK(bg_text_batcher_new(t, NULL, &b) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "text_batcher_new: opts is NULL");
    CHECK(bg_text_batcher_seek(NULL, 0) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "text_batcher_seek: batcher is NULL");
    bg_text_batcher_free(NULL);
    bg_text_free(t);
}

// --- the King James Bible ------------------------------------------------------------------

/* Files in dir whose name starts with prefix. */
static int count_files(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) n++;
    closedir(d);
    return n;
}

static void test_kjv(void) {
    char cache[256], dir[320], path[352], want[512];
    tmp_path(cache, sizeof cache, "cache");
    snprintf(dir, sizeof dir, "%s/bitgrad", cache);
    snprintf(path, sizeof path, "%s/kjv.txt", dir);
    char *old_xdg = getenv("XDG_CACHE_HOME") ? strdup(getenv("XDG_CACHE_HOME")) : NULL;
    char *old_path = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
    setenv("XDG_CACHE_HOME", cache, 1);

    // Without the program: the packages to install, and nothing left behind.
    setenv("PATH", tmpdir, 1);
    bg_text *t = (bg_text *)1;
    CHECK(bg_text_load_kjv(&t) == BG_ERR_IO && !t);
    CHECK_STR(bg_last_error(), "text: the program bible was not found; install the Debian packages bible-kjv "
                               "and bible-kjv-text (scripts/install-deps.sh)");
    CHECK(count_files(dir, "kjv") == 0);
    if (old_path) setenv("PATH", old_path, 1);
    else unsetenv("PATH");

    // Made into the (new) cache folder: 4,298,239 bytes, 73 distinct values.
    bg_status st = bg_text_load_kjv(&t);
    CHECK_MSG(st == BG_OK && t, "bg_text_load_kjv: %s (install the Debian packages bible-kjv and bible-kjv-text)",
              bg_last_error());
    if (st == BG_OK && t) {
        CHECK_STR(t->path, path);
        CHECK(t->n == BG_KJV_BYTES && t->n == 4298239 && t->n_train == 3868415 && t->n_val == 429824);
        bool seen[256] = {false};
        int distinct = 0, high = 0;
        for (int64_t i = 0; i < t->n; i++) {
            distinct += !seen[t->bytes[i]];
            seen[t->bytes[i]] = true;
            high += t->bytes[i] >= 128;
        }
        CHECK_MSG(distinct == 73 && high == 0, "%d distinct bytes, %d non-ASCII", distinct, high);
        const char *start = "\nGenesis 1\n\n  1 In the beginning God created the heaven and the earth.\n";
        CHECK(memcmp(t->bytes, start, strlen(start)) == 0);
        const char *end = "The grace of our Lord Jesus Christ be with you all. Amen.\n";
        CHECK(memcmp(t->bytes + t->n - strlen(end), end, strlen(end)) == 0);
        // The fixed validation set at context 128: floor(429823 / 128) windows.
        bg_text_batcher *b = NULL;
        CHECK(bg_text_batcher_new(t, &(bg_text_batcher_opts){.batch_size = 64, .context = 128,
                                                              .split = BG_TEXT_VAL, .fixed = true},
                                  &b) == BG_OK);
        CHECK(bg_text_batcher_windows(b) == 3357 && bg_text_batcher_batches(b) == 53);
        bg_text_batcher_free(b);
        bg_text_free(t);
        t = NULL;
        CHECK(count_files(dir, "kjv.txt.tmp") == 0);

        // A second load uses the cache file as it is.
        struct stat before, after;
        CHECK(stat(path, &before) == 0);
        CHECK(bg_text_load_kjv(&t) == BG_OK && t && t->n == BG_KJV_BYTES);
        bg_text_free(t);
        t = NULL;
        CHECK(stat(path, &after) == 0 && before.st_ino == after.st_ino);
        // A damaged (truncated) cache file is made again.
        CHECK(truncate(path, 1000) == 0);
        CHECK(bg_text_load_kjv(&t) == BG_OK && t && t->n == BG_KJV_BYTES);
        bg_text_free(t);
        t = NULL;
        unlink(path);

        // Without XDG_CACHE_HOME: $HOME/.cache/bitgrad/kjv.txt.
        char *old_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
        unsetenv("XDG_CACHE_HOME");
        setenv("HOME", cache, 1);
        CHECK(bg_text_load_kjv(&t) == BG_OK && t);
        snprintf(want, sizeof want, "%s/.cache/bitgrad/kjv.txt", cache);
        if (t) CHECK_STR(t->path, want);
        bg_text_free(t);
        unlink(want);
        snprintf(want, sizeof want, "%s/.cache/bitgrad", cache);
        rmdir(want);
        snprintf(want, sizeof want, "%s/.cache", cache);
        rmdir(want);
        if (old_home) setenv("HOME", old_home, 1);
        else unsetenv("HOME");
        free(old_home);
    }
    // A cache folder that cannot be made (a file in its place).
    unlink(path);
    rmdir(dir);
    FILE *f = fopen(dir, "w");
    if (f) fclose(f);
    setenv("XDG_CACHE_HOME", cache, 1);
    t = (bg_text *)1;
    CHECK(bg_text_load_kjv(&t) == BG_ERR_IO && !t);
    snprintf(want, sizeof want, "text: cannot create the cache folder %s: it exists and is not a folder", dir);
    CHECK_STR(bg_last_error(), want);
    unlink(dir);
    rmdir(cache);

    if (old_xdg) setenv("XDG_CACHE_HOME", old_xdg, 1);
    else unsetenv("XDG_CACHE_HOME");
    free(old_xdg);
    free(old_path);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/bg_test_text_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        CHECK_MSG(false, "mkdtemp failed");
        return bg_test_finish();
    }
    test_load();
    test_random();
    test_fixed();
    test_errors();
    test_kjv();
    const char *names[] = {"a.txt", "s.txt", "all.bin", "empty.txt", "short.txt", "one.txt"};
    char path[256];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        tmp_path(path, sizeof path, names[i]);
        unlink(path);
    }
    CHECK_MSG(rmdir(tmpdir) == 0, "%s is not empty at the end", tmpdir);
    return bg_test_finish();
}
