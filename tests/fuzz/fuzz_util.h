/* fuzz_util.h — what the libFuzzer targets share: the per-process file the
 * input bytes are written to (the loaders read paths), the seed-writing
 * mode and the one-thread setting. */
#ifndef BG_FUZZ_UTIL_H
#define BG_FUZZ_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kernels/kernels.h"

/* BG_FUZZ_WRITE_SEEDS=DIR: write_seeds(DIR) and exit with its status.
 * Otherwise path gets /tmp/fuzz_<name>_<pid>.<ext>, the kernels one thread,
 * and the result says whether BG_FUZZ_VERBOSE is set. */
static inline bool fuzz_init(const char *name, const char *ext, int (*write_seeds)(const char *dir), char *path,
                             size_t len) {
    const char *seeds = getenv("BG_FUZZ_WRITE_SEEDS");
    if (seeds) exit(write_seeds(seeds));
    snprintf(path, len, "/tmp/fuzz_%s_%d.%s", name, (int)getpid(), ext);
    bg_set_num_threads(1);
    return getenv("BG_FUZZ_VERBOSE") != NULL;
}

/* The input bytes as the file at path; false when it cannot be written. */
static inline bool fuzz_write(const char *path, const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    if (size) fwrite(data, 1, size, f);
    return fclose(f) == 0;
}

#endif
