/* common.c — data loading, option parsing and small file helpers shared by
 * the bitgrad subcommands. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "tools/tools.h"

bool tool_data_batchers(tool_data *d, int64_t batch, int64_t eval_batch, uint64_t seed) {
    // Under mpirun each rank trains on its slice of every global batch.
    bg_batcher_opts train_opts = {.batch_size = batch, .shuffle = true, .seed = seed, .nchw = d->nchw,
                                  .shard_rank = bg_dist_rank(), .shard_count = bg_dist_size()};
    bg_batcher_opts test_opts = {.batch_size = eval_batch, .nchw = d->nchw};
    if (d->train && d->test && bg_batcher_new(d->train, &train_opts, &d->train_b) == BG_OK &&
        bg_batcher_new(d->test, &test_opts, &d->test_b) == BG_OK)
        return true;
    tool_data_free(d);
    return false;
}

bool tool_data_load(tool_data *d, const char *dir, int64_t batch, int64_t eval_batch, uint64_t seed) {
    *d = (tool_data){.nchw = d->nchw};
    if (bg_fmnist_load(dir, BG_FMNIST_TRAIN, &d->train) != BG_OK || bg_fmnist_load(dir, BG_FMNIST_TEST, &d->test) != BG_OK) {
        tool_data_free(d);
        return false;
    }
    return tool_data_batchers(d, batch, eval_batch, seed);
}

bool tool_model_takes_images(const bg_module *m) {
    while (m && bg_module_num_children(m) > 0 && !bg_module_is_qlayer(m)) m = bg_module_child(m, 0);
    if (m && bg_module_is_qlayer(m)) {
        const bg_tensor *w = bg_qlayer_weight(m);
        return w && w->ndim == 4;
    }
    return m && strcmp(bg_module_kind(m), "Conv2d") == 0;
}

void tool_data_free(tool_data *d) {
    bg_batcher_free(d->train_b);
    bg_batcher_free(d->test_b);
    bg_dataset_free(d->train);
    bg_dataset_free(d->test);
    *d = (tool_data){0};
}

static const char *take_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "%s: missing value (try --help)\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

bool tool_int_arg(int argc, char **argv, int *i, long long lo, long long hi, long long *out) {
    const char *flag = argv[*i], *v = take_value(argc, argv, i);
    if (!v) return false;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "%s: expected an integer in %lld..%lld, got '%s'\n", flag, lo, hi, v);
        return false;
    }
    *out = x;
    return true;
}

bool tool_float_arg(int argc, char **argv, int *i, double lo, double hi, float *out) {
    const char *flag = argv[*i], *v = take_value(argc, argv, i);
    if (!v) return false;
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "%s: expected a number in %g..%g, got '%s'\n", flag, lo, hi, v);
        return false;
    }
    *out = (float)x;
    return true;
}

bool tool_str_arg(int argc, char **argv, int *i, const char **out) {
    const char *v = take_value(argc, argv, i);
    if (v) *out = v;
    return v != NULL;
}

double tool_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool tool_make_dir(const char *dir) {
    if (mkdir(dir, 0777) == 0 || errno == EEXIST) {
        struct stat sb;
        if (stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)) return true;
        fprintf(stderr, "%s: exists and is not a folder\n", dir);
        return false;
    }
    fprintf(stderr, "%s: cannot create the folder: %s\n", dir, strerror(errno));
    return false;
}

int64_t tool_file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : -1;
}

bool tool_same_file(const char *a, const char *b) {
    if (!a || !b) return false;
    if (!strcmp(a, b)) return true;
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

bool tool_check_output(const char *cmd, const char *out, const char *what, const char *in) {
    if (!tool_same_file(out, in)) return true;
    if (!strcmp(out, in))
        fprintf(stderr, "bitgrad %s: the output %s is the %s itself: refusing to overwrite an input\n", cmd, out, what);
    else
        fprintf(stderr, "bitgrad %s: the output %s is the same file as the %s %s: refusing to overwrite an input\n", cmd,
                out, what, in);
    return false;
}

void tool_print_dist_stats(int64_t steps) {
    bg_dist_stats d = bg_dist_get_stats();
    if (bg_dist_size() < 2 || steps < 1) return;
    printf("data parallel: %d ranks; gradient allreduce %.2f ms per step, %.2f MiB reduced per step per rank\n",
           bg_dist_size(), 1e3 * d.allreduce_seconds / (double)steps, (double)d.bytes_per_allreduce / (1 << 20));
}
