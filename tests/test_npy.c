/* test_npy.c — the .npy reader (format/npy.h) on files written by Debian's
 * numpy (tests/reference/make_npy_reference.py -> tests/reference/npy/):
 * every dtype's values exactly, version 2.0/3.0 headers, a scalar and an
 * empty array, the exact one-sentence errors for the files it refuses, and
 * datasets from .npy files and from arrays (io/dataset.h) through a batcher. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format/npy.h"
#include "tests/test_util.h"

static char path_buf[1024];

static const char *ref(const char *name) {
    snprintf(path_buf, sizeof path_buf, "%s/tests/reference/npy/%s", bg_test_source_dir(), name);
    return path_buf;
}

static bg_npy *load_ok(const char *name) {
    bg_npy *a = NULL;
    bg_status st = bg_npy_load(ref(name), &a);
    CHECK_MSG(st == BG_OK && a, "%s: %s", name, st == BG_OK ? "" : bg_last_error());
    return st == BG_OK ? a : NULL;
}

static bool same_bits_f32(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

static void check_f4(const char *name) {
    bg_npy *a = load_ok(name);
    if (!a) return;
    CHECK(a->dtype == BG_NPY_F32 && a->itemsize == 4 && a->ndim == 2);
    CHECK(a->shape[0] == 2 && a->shape[1] == 3 && a->numel == 6);
    const float want[6] = {0.0f, -1.5f, 3.25f, 1e-7f, 65504.0f, -(float)ldexp(1.0, -130)};
    const float *got = a->data;
    for (int i = 0; i < 6; i++) CHECK_MSG(same_bits_f32(got[i], want[i]), "%s[%d] = %g, want %g", name, i, got[i], want[i]);
    float conv[6];
    CHECK(bg_npy_to_f32(a, conv) == BG_OK);
    for (int i = 0; i < 6; i++) CHECK(same_bits_f32(conv[i], want[i]));
    int32_t ibuf[6];
    CHECK(bg_npy_to_i32(a, ibuf) == BG_ERR_DTYPE);
    bg_npy_free(a);
}

static void test_dtypes(void) {
    check_f4("f4.npy");
    check_f4("v2.npy");

    bg_npy *a = load_ok("f8.npy");
    if (a) {
        CHECK(a->dtype == BG_NPY_F64 && a->itemsize == 8 && a->ndim == 1 && a->shape[0] == 4);
        const double want[4] = {0.1, -2.5, 1e300, 3.0};
        const double *got = a->data;
        for (int i = 0; i < 4; i++) CHECK_MSG(got[i] == want[i], "f8[%d] = %.17g", i, got[i]);
        float f[4];
        CHECK(bg_npy_to_f32(a, f) == BG_OK);
        CHECK(f[0] == (float)0.1 && f[1] == -2.5f && isinf(f[2]) && f[3] == 3.0f);
        bg_npy_free(a);
    }

    a = load_ok("u1.npy");
    if (a) {
        CHECK(a->dtype == BG_NPY_U8 && a->itemsize == 1 && a->ndim == 3);
        CHECK(a->shape[0] == 2 && a->shape[1] == 2 && a->shape[2] == 3 && a->numel == 12);
        const uint8_t *got = a->data;
        int32_t i32[12];
        float f[12];
        CHECK(bg_npy_to_i32(a, i32) == BG_OK && bg_npy_to_f32(a, f) == BG_OK);
        for (int i = 0; i < 12; i++) {
            int want = i * 23 % 256;
            CHECK_MSG(got[i] == want && i32[i] == want && f[i] == (float)want, "u1[%d] = %d, want %d", i, got[i], want);
        }
        bg_npy_free(a);
    }

    a = load_ok("u1_le.npy");
    if (a) {
        const uint8_t *got = a->data;
        CHECK(a->dtype == BG_NPY_U8 && a->ndim == 1 && a->shape[0] == 3);
        CHECK(got[0] == 1 && got[1] == 2 && got[2] == 255);
        bg_npy_free(a);
    }

    a = load_ok("i4.npy");
    if (a) {
        CHECK(a->dtype == BG_NPY_I32 && a->itemsize == 4 && a->ndim == 1 && a->shape[0] == 5);
        const int32_t want[5] = {0, -1, 7, INT32_MAX, INT32_MIN};
        int32_t got[5];
        CHECK(bg_npy_to_i32(a, got) == BG_OK);
        for (int i = 0; i < 5; i++) CHECK_MSG(got[i] == want[i], "i4[%d] = %d", i, got[i]);
        bg_npy_free(a);
    }

    a = load_ok("i8.npy");
    if (a) {
        CHECK(a->dtype == BG_NPY_I64 && a->itemsize == 8 && a->ndim == 2 && a->shape[0] == 3 && a->shape[1] == 2);
        const int64_t want[6] = {0, -1, INT32_MAX, INT32_MIN, 7, 9};
        const int64_t *raw = a->data;
        int32_t got[6];
        float f[6];
        CHECK(bg_npy_to_i32(a, got) == BG_OK && bg_npy_to_f32(a, f) == BG_OK);
        for (int i = 0; i < 6; i++) CHECK_MSG(raw[i] == want[i] && got[i] == want[i] && f[i] == (float)want[i], "i8[%d]", i);
        bg_npy_free(a);
    }

    a = load_ok("i8_big.npy");
    if (a) {
        int32_t got[2];
        char want[1200];
        snprintf(want, sizeof want, "npy: %s: element 1 = 1099511627776 is outside the i32 range", ref("i8_big.npy"));
        CHECK(bg_npy_to_i32(a, got) == BG_ERR_FORMAT);
        CHECK_STR(bg_last_error(), want);
        bg_npy_free(a);
    }

    a = load_ok("v3.npy");
    if (a) {
        CHECK(a->dtype == BG_NPY_I32 && a->ndim == 2 && a->shape[0] == 3 && a->shape[1] == 2);
        const int32_t *got = a->data;
        for (int i = 0; i < 6; i++) CHECK(got[i] == i);
        bg_npy_free(a);
    }

    a = load_ok("scalar.npy");
    if (a) {
        CHECK(a->ndim == 0 && a->numel == 1 && *(const float *)a->data == 2.5f);
        bg_npy_free(a);
    }

    a = load_ok("empty.npy");
    if (a) {
        CHECK(a->ndim == 2 && a->shape[0] == 0 && a->shape[1] == 3 && a->numel == 0);
        bg_npy_free(a);
    }
    CHECK(strcmp(bg_npy_dtype_str(BG_NPY_I64), "<i8") == 0);
}

/* name must be refused with status and exactly "npy: <path>: <tail>". */
static void refused(const char *name, bg_status status, const char *tail) {
    bg_npy *a = (bg_npy *)&a; /* not NULL: the call must set it */
    bg_status st = bg_npy_load(ref(name), &a);
    char want[1500];
    snprintf(want, sizeof want, "npy: %s: %s", ref(name), tail);
    CHECK_MSG(st == status && a == NULL, "%s: status %d, want %d", name, (int)st, (int)status);
    CHECK_STR(bg_last_error(), want);
    if (st == BG_OK) bg_npy_free(a);
}

static void test_refused(void) {
    refused("fortran.npy", BG_ERR_FORMAT,
            "fortran_order is True (this reader takes C order: save np.ascontiguousarray(x))");
    refused("big_endian.npy", BG_ERR_FORMAT,
            "dtype '>f4' is big-endian (this reader takes little-endian f4, f8, u1, i4, i8)");
    refused("f2.npy", BG_ERR_FORMAT,
            "dtype '<f2' is not supported (this reader takes little-endian f4, f8, u1, i4, i8)");
    refused("truncated.npy", BG_ERR_FORMAT,
            "truncated data: shape (2, 3) of '<f4' needs 24 bytes, the file holds 20 after the header");
    refused("bad_magic.npy", BG_ERR_FORMAT, "not a .npy file (the magic \\x93NUMPY is missing)");
    refused("bad_header.npy", BG_ERR_FORMAT, "bad header: expected a tuple for 'shape' at byte 50 of the dict");
    refused("missing.npy", BG_ERR_IO, "cannot open (No such file or directory)");
    bg_npy *a = NULL;
    CHECK(bg_npy_load(NULL, &a) == BG_ERR_ARG && !a);
    CHECK(bg_npy_load(ref("f4.npy"), NULL) == BG_ERR_ARG);
    bg_npy_free(NULL);
}

/* Hand-made headers: each must be refused with the given message tail. */
static void refused_bytes(const char *header, size_t data_bytes, const char *tail) {
    char path[1024];
    snprintf(path, sizeof path, "/tmp/test_npy_%d.npy", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) {
        CHECK_MSG(false, "cannot write %s", path);
        return;
    }
    size_t hlen = strlen(header);
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 255), (unsigned char)(hlen >> 8)};
    fwrite(pre, 1, sizeof pre, f);
    fwrite(header, 1, hlen, f);
    for (size_t i = 0; i < data_bytes; i++) fputc(0, f);
    fclose(f);
    bg_npy *a = NULL;
    bg_status st = bg_npy_load(path, &a);
    char want[1500];
    snprintf(want, sizeof want, "npy: %s: %s", path, tail);
    CHECK_MSG(st == BG_ERR_FORMAT && !a, "%s: status %d", header, (int)st);
    CHECK_STR(bg_last_error(), want);
    bg_npy_free(a);
    remove(path);
}

static void test_headers(void) {
    refused_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }\n", 0,
                  "bad header: expected a dimension below 10^18 in 'shape' at byte 69 of the dict");
    refused_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (999999999999999999, 999999999999999999), }\n",
                  0, "shape (999999999999999999, 999999999999999999) of '<f4' overflows a 64-bit size");
    refused_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 1000), }\n", 16,
                  "truncated data: shape (1000000000, 1000) of '<f4' needs 4000000000000 bytes, the file holds 16 after the header");
    refused_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", 12,
                  "shape (2,) of '<f4' needs 8 bytes, but the file holds 12 after the header");
    refused_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2), }\n", 8,
                  "bad header: expected ',' after the only dimension of 'shape' at byte 53 of the dict");
    refused_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }\n", 4,
                  "shape has more than 8 dimensions");
    refused_bytes("{'descr': '<f4', 'fortran_order': False, }\n", 4, "bad header: key 'shape' is missing");
    refused_bytes("{'descr': '<f4', 'descr': '<f4', 'shape': (), }\n", 4, "bad header: key 'descr' appears twice");
    refused_bytes("{'descr': '<f4', 'fortran_order': 0, 'shape': (), }\n", 4,
                  "bad header: expected True or False for 'fortran_order' at byte 34 of the dict");
    refused_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (), 'x': 1}\n", 4,
                  "bad header: unknown key 'x' (want 'descr', 'fortran_order', 'shape')");
    refused_bytes("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (), }\n", 4,
                  "bad header: expected a dtype string for 'descr' at byte 10 of the dict");
    refused_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (), } x\n", 4,
                  "bad header: expected only spaces after '}' at byte 56 of the dict");
    refused_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 4,
                  "bad header: expected '\\n' as the last byte at byte 55 of the dict");
}

// --- datasets -------------------------------------------------------------------

static void test_dataset_npy(void) {
    bg_dataset *ds = NULL;
    char x[1024];
    snprintf(x, sizeof x, "%s", ref("x_u8.npy"));
    bg_status st = bg_dataset_from_npy(x, ref("y_i8.npy"), &ds);
    CHECK_MSG(st == BG_OK && ds, "%s", st == BG_OK ? "" : bg_last_error());
    bg_ctx *ctx = bg_ctx_new(0);
    if (ds) {
        CHECK(ds->n == 6 && ds->channels == 1 && ds->height == 2 && ds->width == 2 && ds->n_classes == 4);
        CHECK(ds->pixels && !ds->values && bg_dataset_features(ds) == 4);
        bg_batcher *b = NULL;
        CHECK(bg_batcher_new(ds, &(bg_batcher_opts){.batch_size = 4, .nchw = true}, &b) == BG_OK);
        bg_tensor *xt, *yt;
        const int32_t labels[6] = {0, 1, 2, 1, 0, 3};
        int64_t seen = 0;
        while (b && bg_batcher_next(b, ctx, &xt, &yt)) {
            int64_t count;
            const int64_t *idx = bg_batcher_indices(b, &count);
            CHECK(xt->ndim == 4 && xt->shape[1] == 1 && xt->shape[2] == 2 && xt->shape[3] == 2);
            for (int64_t i = 0; i < count; i++) {
                CHECK(((int32_t *)yt->data)[i] == labels[idx[i]]);
                for (int k = 0; k < 4; k++)
                    CHECK(bg_f32(xt)[i * 4 + k] == (float)((idx[i] * 4 + k) * 11 % 256) / 255.0f);
            }
            seen += count;
            bg_ctx_reset(ctx);
        }
        CHECK(seen == 6);
        bg_batcher_free(b);
        bg_dataset_free(ds);
    }

    snprintf(x, sizeof x, "%s", ref("x_f4.npy"));
    st = bg_dataset_from_npy(x, ref("y_i4.npy"), &ds);
    CHECK_MSG(st == BG_OK && ds, "%s", st == BG_OK ? "" : bg_last_error());
    if (ds) {
        CHECK(ds->n == 5 && ds->channels == 1 && ds->height == 1 && ds->width == 3 && ds->n_classes == 2);
        CHECK(ds->values && !ds->pixels);
        bg_batcher *b = NULL;
        CHECK(bg_batcher_new(ds, &(bg_batcher_opts){.batch_size = 5}, &b) == BG_OK);
        bg_tensor *xt, *yt;
        if (b && bg_batcher_next(b, ctx, &xt, &yt)) {
            CHECK(xt->ndim == 2 && xt->shape[0] == 5 && xt->shape[1] == 3);
            for (int i = 0; i < 15; i++) CHECK(bg_f32(xt)[i] == (float)i / 4 - 1);
            const int32_t want[5] = {1, 0, 1, 1, 0};
            for (int i = 0; i < 5; i++) CHECK(((int32_t *)yt->data)[i] == want[i]);
        } else {
            CHECK_MSG(false, "no batch");
        }
        bg_ctx_reset(ctx);
        bg_batcher_free(b);
        bg_dataset_free(ds);
    }

    // Mismatched counts, float labels, integer examples.
    snprintf(x, sizeof x, "%s", ref("x_f4.npy"));
    char want[3000];
    CHECK(bg_dataset_from_npy(x, ref("y_i8.npy"), &ds) == BG_ERR_FORMAT && !ds);
    snprintf(want, sizeof want, "dataset_from_npy: %s has 5 examples but %s has 6 labels", x, ref("y_i8.npy"));
    CHECK_STR(bg_last_error(), want);
    CHECK(bg_dataset_from_npy(x, x, &ds) == BG_ERR_FORMAT && !ds);
    snprintf(want, sizeof want, "dataset_from_npy: %s has dtype '<f4', want integer labels (u1, i4, i8)", x);
    CHECK_STR(bg_last_error(), want);
    snprintf(x, sizeof x, "%s", ref("i4.npy"));
    CHECK(bg_dataset_from_npy(x, x, &ds) == BG_ERR_FORMAT && !ds);
    snprintf(want, sizeof want, "dataset_from_npy: %s has dtype '<i4', want floats (f4, f8) or pixels (u1)", x);
    CHECK_STR(bg_last_error(), want);
    snprintf(x, sizeof x, "%s", ref("fortran.npy"));
    CHECK(bg_dataset_from_npy(x, ref("y_i4.npy"), &ds) == BG_ERR_FORMAT && !ds);
    bg_ctx_free(ctx);
}

static void test_dataset_arrays(void) {
    const float xf[2 * 3 * 2 * 2] = {0.5f, -1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23};
    const int32_t y[2] = {4, 1};
    bg_dataset *ds = NULL;
    CHECK(bg_dataset_from_arrays(BG_DTYPE_F32, xf, 4, (const int64_t[]){2, 3, 2, 2}, y, &ds) == BG_OK && ds);
    if (ds) {
        CHECK(ds->n == 2 && ds->channels == 3 && ds->height == 2 && ds->width == 2 && ds->n_classes == 5);
        CHECK(ds->values && memcmp(ds->values, xf, sizeof xf) == 0 && ds->labels[0] == 4 && ds->labels[1] == 1);
        bg_dataset_free(ds);
    }
    const uint8_t xu[2 * 5] = {0, 255, 1, 2, 3, 4, 5, 6, 7, 8};
    CHECK(bg_dataset_from_arrays(BG_DTYPE_U8, xu, 3, (const int64_t[]){2, 1, 5}, y, &ds) == BG_OK && ds);
    if (ds) {
        CHECK(ds->n == 2 && ds->channels == 1 && ds->height == 1 && ds->width == 5);
        CHECK(ds->pixels && !ds->values && memcmp(ds->pixels, xu, sizeof xu) == 0);
        bg_dataset_free(ds);
    }
    CHECK(bg_dataset_from_arrays(BG_DTYPE_F32, xf, 1, (const int64_t[]){2}, y, &ds) == BG_ERR_SHAPE && !ds);
    CHECK_STR(bg_last_error(), "dataset_from_arrays: x has 1 dimensions, want [N, F], [N, H, W] or [N, C, H, W]");
    const int32_t neg[2] = {0, -3};
    CHECK(bg_dataset_from_arrays(BG_DTYPE_F32, xf, 2, (const int64_t[]){2, 12}, neg, &ds) == BG_ERR_FORMAT && !ds);
    CHECK_STR(bg_last_error(), "dataset_from_arrays: labels has label -3 at 1, want labels >= 0");
    CHECK(bg_dataset_from_arrays(BG_DTYPE_I32, xf, 2, (const int64_t[]){2, 12}, y, &ds) == BG_ERR_DTYPE && !ds);
    CHECK(bg_dataset_from_arrays(BG_DTYPE_F32, xf, 2, (const int64_t[]){0, 12}, y, &ds) == BG_ERR_SHAPE && !ds);
}

int main(void) {
    test_dtypes();
    test_refused();
    test_headers();
    test_dataset_npy();
    test_dataset_arrays();
    return bg_test_finish();
}
