/* test_safetensors.c — io/safetensors.c: round trip (all dtypes, strided
 * input, scalars, empty tensors, metadata, atomic overwrite) and every kind
 * of corrupt file giving BG_ERR_FORMAT with a message naming the path. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io.h"
#include "tests/test_util.h"

static char dir[64];

static void path_in_dir(char *buf, size_t len, const char *name) { snprintf(buf, len, "%s/%s", dir, name); }

/* Writes an 8-byte length (hlen_override when >= 0, else strlen(json)),
 * the json, then data. */
static void write_raw(const char *path, long long hlen_override, const char *json, const void *data,
                      size_t data_len) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        CHECK_MSG(false, "cannot create %s", path);
        return;
    }
    unsigned long long h = hlen_override >= 0 ? (unsigned long long)hlen_override : strlen(json);
    unsigned char lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (unsigned char)(h >> (8 * i));
    fwrite(lb, 1, 8, f);
    fwrite(json, 1, strlen(json), f);
    if (data_len) fwrite(data, 1, data_len, f);
    fclose(f);
}

static int count_dir_entries(void) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

/* Opening must fail with want, leave *out NULL, and name the path (and
 * contain `what` when given). */
static void expect_open_fails(const char *path, bg_status want, const char *what, const char *label) {
    bg_safetensors *st = (bg_safetensors *)&st;  // poison: must be reset to NULL
    bg_status s = bg_safetensors_open(path, &st);
    CHECK_MSG(s == want, "%s: status %s, want %s (%s)", label, bg_status_str(s), bg_status_str(want),
              bg_last_error());
    CHECK_MSG(st == NULL, "%s: out not NULL on failure", label);
    CHECK_MSG(strstr(bg_last_error(), path) != NULL, "%s: message does not name the path: %s", label,
              bg_last_error());
    if (what)
        CHECK_MSG(strstr(bg_last_error(), what) != NULL, "%s: message lacks \"%s\": %s", label, what,
                  bg_last_error());
    if (s == BG_OK) bg_safetensors_free(st);
}

// ---------------------------------------------------------------------------

static void test_round_trip(void) {
    char path[128];
    path_in_dir(path, sizeof path, "rt.safetensors");
    bg_ctx *ctx = bg_ctx_new(0);

    float a_data[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
    bg_tensor *a = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(2, 3), a_data);
    int32_t i_data[4] = {-7, 0, 2147483647, -2147483647 - 1};
    bg_tensor *ti = bg_from_data(ctx, BG_DTYPE_I32, BG_SHAPE(4), i_data);
    int8_t b_data[3] = {-128, 5, 127};  // odd size: would misalign a following f32
    bg_tensor *b = bg_from_data(ctx, BG_DTYPE_I8, BG_SHAPE(3), b_data);
    uint8_t u_data[5] = {0, 1, 200, 255, 9};
    bg_tensor *u = bg_from_data(ctx, BG_DTYPE_U8, BG_SHAPE(5), u_data);
    float s_data[1] = {42.0f};
    bg_tensor *sc = bg_from_data(ctx, BG_DTYPE_F32, 0, NULL, s_data);
    bg_tensor *at = bg_view_transpose(ctx, a, 0, 1);  // [3,2], strided
    bg_tensor *empty = bg_zeros(ctx, BG_DTYPE_F32, BG_SHAPE(0, 3));
    float w_data[4 * 2 * 3 * 2];
    for (int i = 0; i < 48; i++) w_data[i] = (float)i * 0.5f - 3.0f;
    bg_tensor *w4 = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(4, 2, 3, 2), w_data);
    CHECK(bg_ctx_status(ctx) == BG_OK);

    bg_safetensors_writer *w = bg_safetensors_writer_new();
    CHECK(w != NULL);
    // i8 is added before the f32 tensors on purpose.
    CHECK(bg_safetensors_writer_add(w, "b.i8", b) == BG_OK);
    CHECK(bg_safetensors_writer_add(w, "a", a) == BG_OK);
    CHECK(bg_safetensors_writer_add(w, "i", ti) == BG_OK);
    CHECK(bg_safetensors_writer_add(w, "u", u) == BG_OK);
    CHECK(bg_safetensors_writer_add(w, "scalar", sc) == BG_OK);
    CHECK(bg_safetensors_writer_add(w, "a_t", at) == BG_OK);
    CHECK(bg_safetensors_writer_add(w, "empty", empty) == BG_OK);
    CHECK(bg_safetensors_writer_add(w, "w4", w4) == BG_OK);
    CHECK(bg_safetensors_writer_add(w, "a", a) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "safetensors_writer_add: duplicate tensor name \"a\"");
    CHECK(bg_safetensors_writer_add(w, "__metadata__", a) == BG_ERR_ARG);
    CHECK(bg_safetensors_writer_meta(w, "format", "bitgrad-test") == BG_OK);
    CHECK(bg_safetensors_writer_meta(w, "version", "0") == BG_OK);
    CHECK(bg_safetensors_writer_meta(w, "version", "1") == BG_OK);  // last value wins
    CHECK(bg_safetensors_writer_meta(w, "quote", "a \"q\" \\ and\nnewline") == BG_OK);
    CHECK(bg_safetensors_writer_save(w, path) == BG_OK);
    CHECK_MSG(count_dir_entries() == 1, "temporary file left behind: %d entries", count_dir_entries());

    // Header length is a multiple of 8, the padding is spaces, the data follows.
    FILE *f = fopen(path, "rb");
    unsigned char lb[8] = {0};
    CHECK(f && fread(lb, 1, 8, f) == 8);
    unsigned long long hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | lb[i];
    CHECK_MSG(hlen % 8 == 0, "header length %llu is not a multiple of 8", hlen);
    char *hdr = calloc(1, hlen + 1);
    CHECK(f && hdr && fread(hdr, 1, hlen, f) == hlen);
    if (hdr && hlen) {
        size_t j = strlen(hdr);
        while (j > 0 && hdr[j - 1] == ' ') j--;
        CHECK_MSG(j > 0 && hdr[j - 1] == '}', "header does not end in '}' + spaces");
        CHECK(strstr(hdr, "\"dtype\":\"I8\"") != NULL);
    }
    free(hdr);
    if (f) fclose(f);
    long want_size = (long)(8 + hlen + 6 * 4 + 4 * 4 + 3 + 5 + 4 + 6 * 4 + 0 + 48 * 4);
    CHECK_MSG(file_size(path) == want_size, "file is %ld bytes, want %ld", file_size(path), want_size);

    bg_safetensors *st = NULL;
    CHECK(bg_safetensors_open(path, &st) == BG_OK);
    if (!st) {
        fprintf(stderr, "open: %s\n", bg_last_error());
        bg_safetensors_writer_free(w);
        bg_ctx_free(ctx);
        return;
    }
    CHECK(bg_safetensors_count(st) == 8);
    const char *order[8] = {"b.i8", "a", "i", "u", "scalar", "a_t", "empty", "w4"};
    for (int i = 0; i < 8; i++) CHECK_STR(bg_safetensors_name(st, i), order[i]);
    CHECK(bg_safetensors_name(st, 8) == NULL);
    CHECK(bg_safetensors_name(st, -1) == NULL);
    CHECK_STR(bg_safetensors_metadata(st, "format"), "bitgrad-test");
    CHECK_STR(bg_safetensors_metadata(st, "version"), "1");
    CHECK_STR(bg_safetensors_metadata(st, "quote"), "a \"q\" \\ and\nnewline");
    CHECK(bg_safetensors_metadata(st, "absent") == NULL);

    bg_tensor v;
    CHECK(bg_safetensors_get(st, "a", &v) == BG_OK);
    CHECK(v.dtype == BG_DTYPE_F32 && v.ndim == 2 && v.shape[0] == 2 && v.shape[1] == 3);
    CHECK(bg_is_contiguous(&v));
    CHECK((uintptr_t)v.data % 4 == 0);
    CHECK(memcmp(v.data, a_data, sizeof a_data) == 0);
    CHECK(bg_safetensors_get(st, "i", &v) == BG_OK);
    CHECK(v.dtype == BG_DTYPE_I32 && v.ndim == 1 && v.shape[0] == 4);
    CHECK((uintptr_t)v.data % 4 == 0);
    CHECK(memcmp(v.data, i_data, sizeof i_data) == 0);
    CHECK(bg_safetensors_get(st, "b.i8", &v) == BG_OK);
    CHECK(v.dtype == BG_DTYPE_I8 && v.ndim == 1 && v.shape[0] == 3);
    CHECK(memcmp(v.data, b_data, sizeof b_data) == 0);
    CHECK(bg_safetensors_get(st, "u", &v) == BG_OK);
    CHECK(v.dtype == BG_DTYPE_U8 && v.shape[0] == 5 && memcmp(v.data, u_data, 5) == 0);
    CHECK(bg_safetensors_get(st, "scalar", &v) == BG_OK);
    CHECK(v.ndim == 0 && bg_numel(&v) == 1 && bg_f32(&v)[0] == 42.0f);
    CHECK(bg_safetensors_get(st, "a_t", &v) == BG_OK);
    CHECK(v.ndim == 2 && v.shape[0] == 3 && v.shape[1] == 2);
    float at_want[6] = {1.5f, 0.0f, -2.0f, -0.0f, 3.25f, 1e-30f};
    CHECK(memcmp(v.data, at_want, sizeof at_want) == 0);
    CHECK(bg_safetensors_get(st, "empty", &v) == BG_OK);
    CHECK(v.ndim == 2 && v.shape[0] == 0 && v.shape[1] == 3 && bg_numel(&v) == 0);
    CHECK(bg_safetensors_get(st, "w4", &v) == BG_OK);
    CHECK(v.ndim == 4 && v.shape[0] == 4 && v.shape[3] == 2 && v.stride[0] == 12 && v.stride[3] == 1);
    CHECK(memcmp(v.data, w_data, sizeof w_data) == 0);
    CHECK(bg_safetensors_get(st, "nope", &v) == BG_ERR_ARG);
    CHECK(strstr(bg_last_error(), "nope") != NULL);
    bg_safetensors_free(st);
    bg_safetensors_free(NULL);

    // Overwriting replaces the file atomically and leaves nothing else behind.
    bg_safetensors_writer *w2 = bg_safetensors_writer_new();
    CHECK(bg_safetensors_writer_add(w2, "only", sc) == BG_OK);
    CHECK(bg_safetensors_writer_save(w2, path) == BG_OK);
    CHECK(count_dir_entries() == 1);
    st = NULL;
    CHECK(bg_safetensors_open(path, &st) == BG_OK);
    CHECK(st && bg_safetensors_count(st) == 1 && bg_safetensors_metadata(st, "format") == NULL);
    bg_safetensors_free(st);
    bg_safetensors_writer_free(w2);

    // A folder that does not exist: BG_ERR_IO, nothing created, old file untouched.
    char bad[160];
    snprintf(bad, sizeof bad, "%s/no-such-dir/x.safetensors", dir);
    CHECK(bg_safetensors_writer_save(w, bad) == BG_ERR_IO);
    CHECK(strstr(bg_last_error(), bad) != NULL);
    CHECK(count_dir_entries() == 1);

    bg_safetensors_writer_free(w);
    bg_safetensors_writer_free(NULL);
    bg_ctx_free(ctx);
}

/* An empty file with only metadata is valid. */
static void test_no_tensors(void) {
    char path[128];
    path_in_dir(path, sizeof path, "meta_only.safetensors");
    bg_safetensors_writer *w = bg_safetensors_writer_new();
    CHECK(bg_safetensors_writer_meta(w, "k", "v") == BG_OK);
    CHECK(bg_safetensors_writer_save(w, path) == BG_OK);
    bg_safetensors_writer_free(w);
    bg_safetensors *st = NULL;
    CHECK(bg_safetensors_open(path, &st) == BG_OK);
    CHECK(st && bg_safetensors_count(st) == 0);
    CHECK_STR(bg_safetensors_metadata(st, "k"), "v");
    bg_safetensors_free(st);
    unlink(path);
}

/* A hand-written file in the layout the Python library produces (offsets
 * not in JSON order), and an f32 tensor at an offset that is not a
 * multiple of 4 (allowed by the format; the reader must still hand out an
 * aligned view). */
static void test_foreign_layouts(void) {
    char path[128];
    path_in_dir(path, sizeof path, "foreign.safetensors");
    float fd[2] = {3.0f, -4.5f};
    unsigned char data[9];
    data[0] = 0xAB;
    memcpy(data + 1, fd, 8);
    write_raw(path, -1,
              "{\"f\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]},"
              "\"__metadata__\":{\"a\":\"b\"},"
              "\"u\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
              data, 9);
    bg_safetensors *st = NULL;
    CHECK(bg_safetensors_open(path, &st) == BG_OK);
    if (st) {
        bg_tensor v;
        CHECK(bg_safetensors_get(st, "f", &v) == BG_OK);
        CHECK((uintptr_t)v.data % 4 == 0);
        CHECK(bg_f32(&v)[0] == 3.0f && bg_f32(&v)[1] == -4.5f);
        CHECK(bg_safetensors_get(st, "u", &v) == BG_OK);
        CHECK(((unsigned char *)v.data)[0] == 0xAB);
        CHECK_STR(bg_safetensors_name(st, 0), "f");
        CHECK_STR(bg_safetensors_metadata(st, "a"), "b");
    } else {
        fprintf(stderr, "open: %s\n", bg_last_error());
    }
    bg_safetensors_free(st);
    unlink(path);
}

static void test_corrupt(void) {
    char path[128];
    path_in_dir(path, sizeof path, "bad.safetensors");
    float d8[3] = {1, 2, 3};

    // Missing file: an I/O error, not a format error.
    char missing[160];
    snprintf(missing, sizeof missing, "%s/missing.safetensors", dir);
    expect_open_fails(missing, BG_ERR_IO, "cannot open", "missing file");

    // Truncated: shorter than the length field, and cut inside the data.
    write_raw(path, -1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", d8, 12);
    {
        bg_safetensors *st = NULL;
        CHECK(bg_safetensors_open(path, &st) == BG_OK);  // the uncut file is fine
        bg_safetensors_free(st);
    }
    CHECK(truncate(path, file_size(path) - 5) == 0);
    expect_open_fails(path, BG_ERR_FORMAT, "out of range", "truncated data");
    CHECK(truncate(path, 20) == 0);
    expect_open_fails(path, BG_ERR_FORMAT, "exceeds the file size", "truncated header");
    CHECK(truncate(path, 5) == 0);
    expect_open_fails(path, BG_ERR_FORMAT, "too short", "truncated length");
    CHECK(truncate(path, 0) == 0);
    expect_open_fails(path, BG_ERR_FORMAT, "too short", "empty file");

    // Header length too big.
    write_raw(path, 1000, "{}", NULL, 0);
    expect_open_fails(path, BG_ERR_FORMAT, "exceeds the file size", "header length too big");
    {
        char want[256];
        snprintf(want, sizeof want, "safetensors: %s: header length 1000 exceeds the file size 10", path);
        CHECK_STR(bg_last_error(), want);
    }
    write_raw(path, (long long)0x7fffffffffffffffLL, "{}", NULL, 0);
    expect_open_fails(path, BG_ERR_FORMAT, "exceeds the file size", "header length huge");

    // Malformed JSON (and JSON that is not an object).
    write_raw(path, -1, "{\"a\": {\"dtype\": ", NULL, 0);
    expect_open_fails(path, BG_ERR_FORMAT, "malformed JSON", "malformed JSON");
    write_raw(path, -1, "[1, 2, 3]", NULL, 0);
    expect_open_fails(path, BG_ERR_FORMAT, "not an object", "JSON array");
    write_raw(path, -1, "{\"a\": 5}", NULL, 0);
    expect_open_fails(path, BG_ERR_FORMAT, "not a JSON object", "entry not an object");

    // Unknown dtype.
    write_raw(path, -1, "{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", d8, 4);
    expect_open_fails(path, BG_ERR_FORMAT, "unknown dtype \"F16\"", "unknown dtype");
    write_raw(path, -1, "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", d8, 8);
    expect_open_fails(path, BG_ERR_FORMAT, "dtype", "missing dtype");

    // Offsets out of range.
    write_raw(path, -1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[25],\"data_offsets\":[0,100]}}", d8, 8);
    expect_open_fails(path, BG_ERR_FORMAT, "out of range", "offsets out of range");
    write_raw(path, -1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", d8, 8);
    expect_open_fails(path, BG_ERR_FORMAT, "invalid data_offsets", "offsets reversed");
    write_raw(path, -1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", d8, 8);
    expect_open_fails(path, BG_ERR_FORMAT, "invalid data_offsets", "negative offset");
    write_raw(path, -1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", d8, 8);
    expect_open_fails(path, BG_ERR_FORMAT, "data_offsets", "one offset");

    // Overlapping offsets.
    write_raw(path, -1,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
              d8, 12);
    expect_open_fails(path, BG_ERR_FORMAT, "overlap", "overlapping offsets");
    // A hole between tensors (the spec forbids it).
    write_raw(path, -1,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
              d8, 12);
    expect_open_fails(path, BG_ERR_FORMAT, "belong to no tensor", "hole");
    // Trailing bytes after the last tensor.
    write_raw(path, -1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", d8, 12);
    expect_open_fails(path, BG_ERR_FORMAT, "belong to no tensor", "trailing data");

    // Shape/size mismatch, negative or non-integer dims, too many dims, overflow.
    write_raw(path, -1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", d8, 8);
    expect_open_fails(path, BG_ERR_FORMAT, "shape and size disagree", "shape/size mismatch");
    write_raw(path, -1, "{\"a\":{\"dtype\":\"I8\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", d8, 8);
    expect_open_fails(path, BG_ERR_FORMAT, "shape and size disagree", "dtype size mismatch");
    write_raw(path, -1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", d8, 8);
    expect_open_fails(path, BG_ERR_FORMAT, "non-negative integer", "negative dim");
    write_raw(path, -1, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", d8, 8);
    expect_open_fails(path, BG_ERR_FORMAT, "non-negative integer", "float dim");
    write_raw(path, -1, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,8],\"data_offsets\":[0,8]}}", d8, 8);
    expect_open_fails(path, BG_ERR_FORMAT, "5 dims", "too many dims");
    write_raw(path, -1,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,0]}}",
              NULL, 0);
    expect_open_fails(path, BG_ERR_FORMAT, "shape and size disagree", "shape overflow");

    // Duplicate names; bad metadata.
    write_raw(path, -1,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
              d8, 8);
    expect_open_fails(path, BG_ERR_FORMAT, "duplicate", "duplicate names");
    write_raw(path, -1, "{\"__metadata__\":{\"v\":3}}", NULL, 0);
    expect_open_fails(path, BG_ERR_FORMAT, "not a string", "metadata value not a string");
    write_raw(path, -1, "{\"__metadata__\":[\"v\"]}", NULL, 0);
    expect_open_fails(path, BG_ERR_FORMAT, "__metadata__", "metadata not an object");

    // A folder is not a file.
    expect_open_fails(dir, BG_ERR_IO, NULL, "directory");

    bg_safetensors *st = NULL;
    CHECK(bg_safetensors_open(NULL, &st) == BG_ERR_ARG);
    CHECK(bg_safetensors_open(path, NULL) == BG_ERR_ARG);
    unlink(path);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/bg_test_st_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_no_tensors();
    test_foreign_layouts();
    test_corrupt();
    // Clean up the scratch folder.
    char path[128];
    path_in_dir(path, sizeof path, "rt.safetensors");
    unlink(path);
    CHECK_MSG(count_dir_entries() == 0, "scratch folder not empty: %d entries", count_dir_entries());
    rmdir(dir);
    return bg_test_finish();
}
