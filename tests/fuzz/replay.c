/* replay.c — a main() for the fuzz targets in builds without libFuzzer:
 * every file named on the command line (or every file of a directory named
 * there) goes once through LLVMFuzzerTestOneInput, plus a few truncations
 * and byte flips of it. ctest runs this on the committed corpora, so a fuzz
 * target that stops compiling, or a seed that starts failing, shows up in
 * the default, -Werror and sanitizer builds, not only in the clang fuzz
 * stage. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int read_whole(const char *path, uint8_t **data, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *bigger = realloc(buf, cap *= 2);
            if (!bigger) { free(buf); buf = NULL; }
            buf = bigger;
        }
    }
    fclose(f);
    if (!buf) return -1;
    *data = buf;
    *size = n;
    return 0;
}

/* The seed itself, then its prefixes at a few lengths and a few flipped
 * bytes: damaged copies of a valid file reach the loader's error paths. */
static void replay_one(const uint8_t *data, size_t size) {
    LLVMFuzzerTestOneInput(data, size);
    const size_t cuts[] = {0, 1, 7, 8, 64, size / 2, size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
        if (cuts[i] < size) LLVMFuzzerTestOneInput(data, cuts[i]);
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return;
    for (size_t k = 1; k <= 16 && size; k++) {
        memcpy(copy, data, size);
        size_t at = (k * 2654435761u) % size;
        copy[at] ^= (uint8_t)(1u << (k % 8));
        LLVMFuzzerTestOneInput(copy, size);
    }
    free(copy);
}

static int replay_path(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) return -1;
        struct dirent *e;
        int count = 0;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char child[4096];
            snprintf(child, sizeof child, "%s/%s", path, e->d_name);
            if (replay_path(child) < 0) { closedir(d); return -1; }
            count++;
        }
        closedir(d);
        return count;
    }
    uint8_t *data;
    size_t size;
    if (read_whole(path, &data, &size) != 0) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        return -1;
    }
    replay_one(data, size);
    free(data);
    return 1;
}

int main(int argc, char **argv) {
    LLVMFuzzerInitialize(&argc, &argv);
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE_OR_DIR...\n", argv[0]);
        return 2;
    }
    int files = 0;
    for (int i = 1; i < argc; i++) {
        int n = replay_path(argv[i]);
        if (n < 0) return 1;
        files += n;
    }
    if (files == 0) {
        fprintf(stderr, "replay: no input files\n");
        return 1;
    }
    printf("replay: %d files (and their damaged copies) gave no crash\n", files);
    return 0;
}
