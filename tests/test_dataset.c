/* test_dataset.c — the Fashion-MNIST IDX reader (real files from the Debian
 * package dataset-fashion-mnist), the batch iterator (coverage, partial last
 * batch, seeded order, no allocation in the steady state) and the errors for
 * missing and corrupt files. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "tests/test_util.h"

// --- the real files ----------------------------------------------------------

static void test_real_files(bg_dataset *train, bg_dataset *test) {
    CHECK(train->n == 60000 && test->n == 10000);
    CHECK(train->channels == 1 && train->height == 28 && train->width == 28);
    CHECK(train->n_classes == 10 && test->n_classes == 10);
    CHECK(bg_dataset_features(train) == 784);
    // First labels of each split (9 = ankle boot, 0 = T-shirt/top, ...).
    const int32_t want_train[8] = {9, 0, 0, 3, 0, 2, 7, 2};
    const int32_t want_test[8] = {9, 2, 1, 1, 6, 1, 4, 6};
    for (int i = 0; i < 8; i++) {
        CHECK_MSG(train->labels[i] == want_train[i], "train label %d = %d, want %d", i,
                  train->labels[i], want_train[i]);
        CHECK_MSG(test->labels[i] == want_test[i], "test label %d = %d, want %d", i,
                  test->labels[i], want_test[i]);
    }
    CHECK(train->labels[59999] == 5 && test->labels[9999] == 5);
    // Both splits are balanced: 6000 / 1000 per class.
    int64_t count[10] = {0}, count_test[10] = {0};
    for (int64_t i = 0; i < train->n; i++) count[train->labels[i]]++;
    for (int64_t i = 0; i < test->n; i++) count_test[test->labels[i]]++;
    for (int c = 0; c < 10; c++) CHECK(count[c] == 6000 && count_test[c] == 1000);
    // Pixel sums (computed independently with gzip + numpy).
    uint64_t sum0 = 0, sum_last = 0, sum_all = 0;
    uint8_t lo = 255, hi = 0;
    for (int k = 0; k < 784; k++) sum0 += train->pixels[k];
    for (int k = 0; k < 784; k++) sum_last += train->pixels[59999 * 784 + k];
    for (int64_t i = 0; i < 60000 * 784; i++) {
        uint8_t p = train->pixels[i];
        sum_all += p;
        if (p < lo) lo = p;
        if (p > hi) hi = p;
    }
    CHECK_MSG(sum0 == 76247, "train image 0 pixel sum %llu", (unsigned long long)sum0);
    CHECK_MSG(sum_last == 16684, "train image 59999 pixel sum %llu", (unsigned long long)sum_last);
    CHECK_MSG(sum_all == 3431114169ULL, "train pixel sum %llu", (unsigned long long)sum_all);
    CHECK(lo == 0 && hi == 255);
}

// --- the batch iterator ----------------------------------------------------------

/* Runs one epoch; checks shapes, values and that every index appears exactly
 * once. Writes the order into order_out (n entries) when not NULL. */
static void check_epoch(bg_batcher *b, const bg_dataset *ds, bg_ctx *ctx, int64_t batch,
                        bool drop_last, int64_t *order_out) {
    int64_t n = ds->n, f = bg_dataset_features(ds);
    uint8_t *seen = calloc((size_t)n, 1);
    int64_t batches = 0, total = 0, bad_values = 0, bad_shapes = 0, bad_index = 0;
    float xmin = 1e9f, xmax = -1e9f;
    bg_tensor *x, *y;
    while (bg_batcher_next(b, ctx, &x, &y)) {
        int64_t count;
        const int64_t *idx = bg_batcher_indices(b, &count);
        bool last = total + count == n || (drop_last && total + 2 * batch > n);
        if (x->ndim != 2 || x->shape[0] != count || x->shape[1] != f || y->ndim != 1 ||
            y->shape[0] != count || x->dtype != BG_DTYPE_F32 || y->dtype != BG_DTYPE_I32)
            bad_shapes++;
        if (!last && count != batch) bad_shapes++;
        for (int64_t i = 0; i < count; i++) {
            if (idx[i] < 0 || idx[i] >= n || seen[idx[i]]) {
                bad_index++;
                continue;
            }
            seen[idx[i]] = 1;
            if (order_out) order_out[total + i] = idx[i];
            if (((int32_t *)y->data)[i] != ds->labels[idx[i]]) bad_values++;
            for (int64_t k = 0; k < f; k++) {
                float v = bg_f32(x)[i * f + k];
                if (v != (float)ds->pixels[idx[i] * f + k] / 255.0f) bad_values++;
                if (v < xmin) xmin = v;
                if (v > xmax) xmax = v;
            }
        }
        total += count;
        batches++;
        bg_ctx_reset(ctx);
    }
    CHECK(bg_ctx_status(ctx) == BG_OK);
    CHECK(bad_shapes == 0 && bad_values == 0);
    CHECK_MSG(bad_index == 0, "%lld indices out of range or repeated", (long long)bad_index);
    CHECK_MSG(batches == bg_batcher_batches(b), "%lld batches, want %lld", (long long)batches,
              (long long)bg_batcher_batches(b));
    int64_t want_total = drop_last ? n / batch * batch : n;
    CHECK_MSG(total == want_total, "epoch covered %lld examples, want %lld", (long long)total,
              (long long)want_total);
    if (!drop_last) {
        int64_t missing = 0;
        for (int64_t i = 0; i < n; i++) missing += !seen[i];
        CHECK_MSG(missing == 0, "%lld indices never appeared", (long long)missing);
    }
    CHECK(xmin == 0.0f && xmax == 1.0f);
    free(seen);
}

static void test_batcher(const bg_dataset *test) {
    bg_ctx *ctx = bg_ctx_new(0);
    int64_t n = test->n;
    int64_t *e0 = malloc((size_t)n * sizeof *e0), *e1 = malloc((size_t)n * sizeof *e1);
    int64_t *again = malloc((size_t)n * sizeof *again);

    // 10000 = 78 * 128 + 16: the last batch has 16 examples.
    bg_batcher *b;
    CHECK(bg_batcher_new(test, &(bg_batcher_opts){.batch_size = 128, .shuffle = true, .seed = 7},
                         &b) == BG_OK);
    CHECK(bg_batcher_batches(b) == 79 && bg_batcher_epoch(b) == 0);
    check_epoch(b, test, ctx, 128, false, e0);
    CHECK(bg_batcher_epoch(b) == 1);
    int64_t n_last;
    CHECK(bg_batcher_indices(b, &n_last) == NULL && n_last == 0);
    check_epoch(b, test, ctx, 128, false, e1);
    CHECK(bg_batcher_epoch(b) == 2);
    int64_t same = 0, identity = 0;
    for (int64_t i = 0; i < n; i++) {
        same += e0[i] == e1[i];
        identity += e0[i] == i;
    }
    CHECK_MSG(same < 100 && identity < 100, "epochs 0 and 1 share %lld positions; %lld fixed points",
              (long long)same, (long long)identity);

    // The steady state allocates nothing: batches come from the ctx arena.
    uint64_t allocs = bg_alloc_count();
    check_epoch(b, test, ctx, 128, false, NULL);
    CHECK_MSG(bg_alloc_count() == allocs, "an epoch of batches made %llu allocations",
              (unsigned long long)(bg_alloc_count() - allocs));

    // Jumping back to epoch 0 reproduces its order.
    bg_batcher_set_epoch(b, 0);
    check_epoch(b, test, ctx, 128, false, again);
    CHECK(memcmp(again, e0, (size_t)n * sizeof *e0) == 0);
    bg_batcher_free(b);

    // Same seed, new batcher: same order; another seed: another order.
    CHECK(bg_batcher_new(test, &(bg_batcher_opts){.batch_size = 1000, .shuffle = true, .seed = 7},
                         &b) == BG_OK);
    check_epoch(b, test, ctx, 1000, false, again);
    CHECK(memcmp(again, e0, (size_t)n * sizeof *e0) == 0);
    bg_batcher_free(b);
    CHECK(bg_batcher_new(test, &(bg_batcher_opts){.batch_size = 1000, .shuffle = true, .seed = 8},
                         &b) == BG_OK);
    check_epoch(b, test, ctx, 1000, false, again);
    CHECK(memcmp(again, e0, (size_t)n * sizeof *e0) != 0);
    bg_batcher_free(b);

    // drop_last: 78 full batches; without shuffle the order is the file's.
    CHECK(bg_batcher_new(test, &(bg_batcher_opts){.batch_size = 128, .drop_last = true}, &b) ==
          BG_OK);
    CHECK(bg_batcher_batches(b) == 78);
    check_epoch(b, test, ctx, 128, true, again);
    int64_t misplaced = 0;
    for (int64_t i = 0; i < 78 * 128; i++) misplaced += again[i] != i;
    CHECK(misplaced == 0);
    bg_batcher_free(b);

    // nchw: x is [B,1,28,28].
    CHECK(bg_batcher_new(test, &(bg_batcher_opts){.batch_size = 32, .nchw = true}, &b) == BG_OK);
    bg_tensor *x, *y;
    CHECK(bg_batcher_next(b, ctx, &x, &y));
    CHECK(x && x->ndim == 4 && x->shape[0] == 32 && x->shape[1] == 1 && x->shape[2] == 28 &&
          x->shape[3] == 28 && y->shape[0] == 32);
    CHECK(x && bg_get_f32(x, (int64_t[]){3, 0, 14, 14}) ==
                   (float)test->pixels[3 * 784 + 14 * 28 + 14] / 255.0f);
    bg_ctx_reset(ctx);
    // A failed ctx stops the iterator without computing.
    bg_ctx_fail(ctx, BG_ERR_ARG, "test: poisoned");
    CHECK(!bg_batcher_next(b, ctx, &x, &y) && x == NULL && y == NULL);
    CHECK_STR(bg_ctx_error(ctx), "test: poisoned");
    bg_ctx_reset(ctx);
    bg_batcher_free(b);

    CHECK(bg_batcher_new(test, &(bg_batcher_opts){.batch_size = 0}, &b) == BG_ERR_ARG && !b);
    CHECK_STR(bg_last_error(), "batcher_new: batch_size must be positive: 0");
    bg_batcher_free(NULL);

    free(e0);
    free(e1);
    free(again);
    bg_ctx_free(ctx);
}

// --- missing and corrupt files ------------------------------------------------------

static char tmpdir[64];

static void path_in_tmp(char *buf, size_t len, const char *name) {
    snprintf(buf, len, "%s/%s", tmpdir, name);
}

/* Writes bytes to tmpdir/name, gzipped or not. */
static void write_file(const char *name, const void *data, size_t len, bool gzip) {
    char path[256];
    path_in_tmp(path, sizeof path, name);
    if (gzip) {
        gzFile gz = gzopen(path, "wb");
        CHECK(gz != NULL);
        if (!gz) return;
        CHECK(len == 0 || gzwrite(gz, data, (unsigned)len) == (int)len);
        gzclose(gz);
    } else {
        FILE *f = fopen(path, "wb");
        CHECK(f != NULL);
        if (!f) return;
        CHECK(fwrite(data, 1, len, f) == len);
        fclose(f);
    }
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* A tiny valid test split: n images of 28x28 and n labels. */
static void write_split(int n, int n_labels, int label_value, int extra_pixel_bytes) {
    size_t img_len = 16 + (size_t)n * 784 + (size_t)(extra_pixel_bytes > 0 ? extra_pixel_bytes : 0);
    if (extra_pixel_bytes < 0) img_len -= (size_t)-extra_pixel_bytes;
    unsigned char *img = calloc(16 + (size_t)n * 784 + 64, 1);
    put_be32(img, 0x803);
    put_be32(img + 4, (uint32_t)n);
    put_be32(img + 8, 28);
    put_be32(img + 12, 28);
    for (size_t i = 16; i < img_len; i++) img[i] = (unsigned char)(i * 7);
    write_file("t10k-images-idx3-ubyte.gz", img, img_len, true);
    unsigned char lab[8 + 64];
    put_be32(lab, 0x801);
    put_be32(lab + 4, (uint32_t)n_labels);
    for (int i = 0; i < n_labels; i++) lab[8 + i] = (unsigned char)(i % 2 ? label_value : i % 10);
    write_file("t10k-labels-idx1-ubyte.gz", lab, 8 + (size_t)n_labels, true);
    free(img);
}

static bg_status load_tmp(bg_dataset **ds) { return bg_fmnist_load(tmpdir, BG_FMNIST_TEST, ds); }

static void test_errors(void) {
    bg_dataset *ds = (bg_dataset *)1;
    char want[1024], path[256];

    // A missing directory: BG_ERR_IO naming the path and the package.
    CHECK(bg_fmnist_load("/nonexistent/bg-fmnist", BG_FMNIST_TRAIN, &ds) == BG_ERR_IO && !ds);
    CHECK_STR(bg_last_error(),
              "fmnist_load: cannot open /nonexistent/bg-fmnist/train-images-idx3-ubyte.gz: No such "
              "file or directory; install the Debian package dataset-fashion-mnist");
    // BG_FMNIST_DIR is used when dir is NULL.
    setenv("BG_FMNIST_DIR", "/nonexistent/env-dir", 1);
    CHECK(bg_fmnist_load(NULL, BG_FMNIST_TEST, &ds) == BG_ERR_IO && !ds);
    CHECK_STR(bg_last_error(),
              "fmnist_load: cannot open /nonexistent/env-dir/t10k-images-idx3-ubyte.gz: No such "
              "file or directory; install the Debian package dataset-fashion-mnist");
    unsetenv("BG_FMNIST_DIR");
    CHECK(bg_fmnist_load(NULL, 7, &ds) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "fmnist_load: unknown split 7");

    snprintf(tmpdir, sizeof tmpdir, "/tmp/bg_test_dataset_XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL);

    // A valid tiny split loads (plain and gzipped files are both read).
    write_split(3, 3, 1, 0);
    CHECK(load_tmp(&ds) == BG_OK && ds && ds->n == 3);
    if (ds) CHECK(ds->labels[0] == 0 && ds->labels[1] == 1 && ds->pixels[0] == (unsigned char)(16 * 7));
    bg_dataset_free(ds);

    // Labels present, images missing: still the package hint, naming the images path.
    path_in_tmp(path, sizeof path, "t10k-images-idx3-ubyte.gz");
    unlink(path);
    CHECK(load_tmp(&ds) == BG_ERR_IO && !ds);
    snprintf(want, sizeof want,
             "fmnist_load: cannot open %s: No such file or directory; install the Debian package "
             "dataset-fashion-mnist",
             path);
    CHECK_STR(bg_last_error(), want);

    // A folder where a file should be.
    CHECK(mkdir(path, 0700) == 0);
    CHECK(load_tmp(&ds) == BG_ERR_IO && !ds);
    snprintf(want, sizeof want, "fmnist_load: cannot read %s: not a regular file", path);
    CHECK_STR(bg_last_error(), want);
    rmdir(path);

    // Garbage that is not gzip: zlib reads it as-is and the magic is wrong.
    write_file("t10k-images-idx3-ubyte.gz", "this is not an idx file at all", 30, false);
    CHECK(load_tmp(&ds) == BG_ERR_FORMAT && !ds);
    snprintf(want, sizeof want,
             "fmnist_load: %s is not an IDX image file: magic 0x74686973, want 0x00000803", path);
    CHECK_STR(bg_last_error(), want);

    // A file shorter than its header.
    write_file("t10k-images-idx3-ubyte.gz", "\0\0\x08", 3, true);
    CHECK(load_tmp(&ds) == BG_ERR_FORMAT && !ds);
    snprintf(want, sizeof want,
             "fmnist_load: %s is truncated: the 16-byte image header needs 16 bytes, the file has 3",
             path);
    CHECK_STR(bg_last_error(), want);

    // Truncated pixel data, and trailing bytes.
    write_split(3, 3, 1, -100);
    CHECK(load_tmp(&ds) == BG_ERR_FORMAT && !ds);
    snprintf(want, sizeof want,
             "fmnist_load: %s is truncated: the pixel data needs 2352 bytes, the file has 2252", path);
    CHECK_STR(bg_last_error(), want);
    write_split(3, 3, 1, 5);
    CHECK(load_tmp(&ds) == BG_ERR_FORMAT && !ds);
    snprintf(want, sizeof want,
             "fmnist_load: %s is longer than its header announces (trailing bytes)", path);
    CHECK_STR(bg_last_error(), want);

    // Counts that disagree between the two files.
    write_split(3, 2, 1, 0);
    CHECK(load_tmp(&ds) == BG_ERR_FORMAT && !ds);
    char lpath[256];
    path_in_tmp(lpath, sizeof lpath, "t10k-labels-idx1-ubyte.gz");
    snprintf(want, sizeof want, "fmnist_load: %s has 3 images but %s has 2 labels", path, lpath);
    CHECK_STR(bg_last_error(), want);

    // A label outside 0..9.
    write_split(3, 3, 10, 0);
    CHECK(load_tmp(&ds) == BG_ERR_FORMAT && !ds);
    snprintf(want, sizeof want, "fmnist_load: %s has label 10, want 0..9", lpath);
    CHECK_STR(bg_last_error(), want);

    // An implausible header (would ask for terabytes).
    unsigned char hdr[16];
    put_be32(hdr, 0x803);
    put_be32(hdr + 4, 0xffffffffu);
    put_be32(hdr + 8, 28);
    put_be32(hdr + 12, 28);
    write_file("t10k-images-idx3-ubyte.gz", hdr, 16, true);
    CHECK(load_tmp(&ds) == BG_ERR_FORMAT && !ds);
    snprintf(want, sizeof want,
             "fmnist_load: %s has implausible dims: 4294967295 images of 28x28", path);
    CHECK_STR(bg_last_error(), want);

    // A damaged gzip stream (a flipped byte inside the compressed data): the
    // inflater or the CRC check catches it.
    write_split(3, 3, 1, 0);
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    if (f) {
        fseek(f, 0, SEEK_END);
        long len = ftell(f);
        fseek(f, len - 12, SEEK_SET);   // last byte of the deflate data, before the 8-byte trailer
        int c = fgetc(f);
        fseek(f, len - 12, SEEK_SET);
        fputc(c ^ 0x5a, f);
        fclose(f);
    }
    CHECK(load_tmp(&ds) == BG_ERR_FORMAT && !ds);
    CHECK_MSG(strstr(bg_last_error(), path) != NULL && strstr(bg_last_error(), "fmnist_load: ") ==
                                                           bg_last_error(),
              "message: %s", bg_last_error());

    // Generic IDX pair and argument errors.
    write_split(2, 2, 3, 0);
    CHECK(bg_idx_load(path, lpath, &ds) == BG_OK && ds && ds->n == 2 && ds->n_classes == 4);
    bg_dataset_free(ds);
    CHECK(bg_idx_load(NULL, lpath, &ds) == BG_ERR_ARG && !ds);
    CHECK_STR(bg_last_error(), "idx_load: path is NULL");
    bg_dataset_free(NULL);

    unlink(path);
    unlink(lpath);
    rmdir(tmpdir);
}

int main(void) {
    bg_dataset *train = NULL, *test = NULL;
    bg_status st = bg_fmnist_load(NULL, BG_FMNIST_TRAIN, &train);
    CHECK_MSG(st == BG_OK, "loading the training set: %s", bg_last_error());
    st = bg_fmnist_load("/usr/share/datasets/fashion-mnist", BG_FMNIST_TEST, &test);
    CHECK_MSG(st == BG_OK, "loading the test set: %s", bg_last_error());
    if (train && test) {
        test_real_files(train, test);
        test_batcher(test);
    }
    bg_dataset_free(train);
    bg_dataset_free(test);
    test_errors();
    return bg_test_finish();
}
