/* fuzz_npy.c — libFuzzer target for the .npy reader (format/npy.h): the
 * input bytes are a .npy file, loaded with bg_npy_load; when that succeeds,
 * the elements are converted to f32 and i32, and the file is read again as
 * both halves of a dataset (bg_dataset_from_npy). Any input must give BG_OK
 * or an error, never a crash, a leak or undefined behaviour.
 *
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DBG_FUZZ=ON
 *   cmake --build build-fuzz --target fuzz_npy
 *   build-fuzz/fuzz_npy -max_total_time=60 -dict=tests/fuzz/npy.dict tests/fuzz/corpus_npy
 *
 * The seed corpus tests/fuzz/corpus_npy/ is a copy of tests/reference/npy/
 * (written by numpy: tests/reference/make_npy_reference.py);
 * BG_FUZZ_WRITE_SEEDS=DIR build-fuzz/fuzz_npy writes one small f4 file and
 * exits. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/fuzz/fuzz_util.h"
#include "format/npy.h"
#include "io/dataset.h"

static char path[64];
static bool verbose;   /* BG_FUZZ_VERBOSE set: print each load's status */

static int write_seeds(const char *dir) {
    char p[512];
    snprintf(p, sizeof p, "%s/f4.npy", dir);
    static const char header[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    unsigned char buf[128];
    memset(buf, ' ', sizeof buf);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = 128 - 10;
    buf[9] = 0;
    memcpy(buf + 10, header, sizeof header - 1);
    buf[127] = '\n';
    const float data[6] = {0.0f, -1.5f, 3.25f, 1e-7f, 65504.0f, 2.0f};
    FILE *f = fopen(p, "wb");
    if (!f) return 1;
    fwrite(buf, 1, sizeof buf, f);
    fwrite(data, sizeof data[0], 6, f);
    return fclose(f) == 0 ? 0 : 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    verbose = fuzz_init("npy", "npy", write_seeds, path, sizeof path);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!fuzz_write(path, data, size)) return 0;
    bg_npy *a = NULL;
    bg_status s = bg_npy_load(path, &a);
    if (verbose) fprintf(stderr, "load: %d %s\n", (int)s, s == BG_OK ? "" : bg_last_error());
    if (s == BG_OK) {
        // The data is as long as the file says, so numel is bounded by its size.
        float *f = malloc(sizeof(float) * (size_t)(a->numel ? a->numel : 1));
        int32_t *i = malloc(sizeof(int32_t) * (size_t)(a->numel ? a->numel : 1));
        if (f && i) {
            bg_npy_to_f32(a, f);
            bg_npy_to_i32(a, i);
        }
        free(f);
        free(i);
        bg_dataset *ds = NULL;
        if (bg_dataset_from_npy(path, path, &ds) == BG_OK && ds->n > 0) {
            bg_ctx *ctx = bg_ctx_new(0);
            bg_batcher *b = NULL;
            bg_tensor *x, *y;
            if (ctx && bg_batcher_new(ds, &(bg_batcher_opts){.batch_size = 4}, &b) == BG_OK)
                bg_batcher_next(b, ctx, &x, &y);
            bg_batcher_free(b);
            bg_ctx_free(ctx);
        }
        bg_dataset_free(ds);
    }
    bg_npy_free(a);
    unlink(path);
    return 0;
}
