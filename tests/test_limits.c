/* test_limits.c — files that describe more than they hold, and descriptions
 * at the size limits (issue 10, cases 7 and 8). ctest runs this with a
 * timeout (CMakeLists.txt): loading a description must take time linear in
 * its size, never minutes. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format/format.h"
#include "io/io.h"
#include "tests/test_util.h"

static char dir[64];

/* A checkpoint file holding one tensor "0.weight" [3,4] and the given model
 * description. */
static void write_lying_file(const char *path, const char *desc) {
    bg_tensor *w = bg_tensor_new(BG_DTYPE_F32, BG_SHAPE(3, 4));
    bg_safetensors_writer *wr = bg_safetensors_writer_new();
    CHECK(bg_safetensors_writer_add(wr, "0.weight", w) == BG_OK);
    CHECK(bg_safetensors_writer_meta(wr, "model", desc) == BG_OK);
    CHECK(bg_safetensors_writer_meta(wr, "format", "bitgrad-checkpoint") == BG_OK);
    CHECK(bg_safetensors_writer_save(wr, path) == BG_OK);
    bg_safetensors_writer_free(wr);
    bg_tensor_free(w);
}

/* Case 7: a description of Linear(65536, 65536) over a file of 12 values
 * fails at that layer before 16 GiB are allocated and initialised. */
static void test_description_larger_than_file(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/lying.ckpt", dir);
    write_lying_file(path, "{\"format\":\"bitgrad-model\",\"version\":2,\"model\":{\"kind\":\"Sequential\",\"children\":"
                           "[{\"name\":\"0\",\"kind\":\"Linear\",\"in_features\":65536,\"out_features\":65536,"
                           "\"bias\":false}]}}");
    uint64_t allocs = bg_alloc_count();
    bg_module *m = (bg_module *)1;
    CHECK(bg_checkpoint_load_model(path, &m) == BG_ERR_FORMAT && m == NULL);
    char want[512];
    snprintf(want, sizeof want,
             "checkpoint_load: %s: model_desc: layer 0: Linear's weight [65536,65536] needs 4294967296 values, more "
             "than the 12 left of the file's parameters",
             path);
    CHECK_STR(bg_last_error(), want);
    CHECK_MSG(bg_alloc_count() - allocs < 100, "%llu aligned allocations for a refused file",
              (unsigned long long)(bg_alloc_count() - allocs));
    // A real checkpoint of that shape loads: the limit is the file's values.
    bg_rng rng;
    bg_rng_seed(&rng, 1);
    bg_module *small = bg_sequential_new(1, (bg_module *[]){bg_linear_new(4, 3, false, &rng)});
    CHECK(bg_checkpoint_save(path, &(bg_checkpoint){.model = small}) == BG_OK);
    CHECK(bg_checkpoint_load_model(path, &m) == BG_OK && m && bg_module_numel(m) == 12);
    bg_module_free(m);
    bg_module_free(small);
    // A bias the file does not hold: 12 + 3 values do not fit in 12.
    write_lying_file(path, "{\"format\":\"bitgrad-model\",\"version\":2,\"model\":{\"kind\":\"Sequential\",\"children\":"
                           "[{\"name\":\"0\",\"kind\":\"Linear\",\"in_features\":4,\"out_features\":3,"
                           "\"bias\":true}]}}");
    CHECK(bg_checkpoint_load_model(path, &m) == BG_ERR_FORMAT);
    snprintf(want, sizeof want,
             "checkpoint_load: %s: model_desc: layer 0: Linear's bias [3] needs 3 values, more than the 0 left of "
             "the file's parameters",
             path);
    CHECK_STR(bg_last_error(), want);
    // The limit is lifted after the load.
    CHECK(bg_module_param_limit(-1) == -1);
    unlink(path);
}

/* Case 8: 100,000 children (the most a container may describe) build, save
 * and load in linear time; one more is refused. */
static void test_many_children(void) {
    enum { N = 100000 };
    static bg_module *relus[N];
    for (int i = 0; i < N; i++) relus[i] = bg_relu_new();
    bg_module *m = bg_sequential_new(N, relus);
    CHECK(m && bg_module_num_children(m) == N);
    char path[128];
    snprintf(path, sizeof path, "%s/relus.ckpt", dir);
    CHECK(bg_checkpoint_save(path, &(bg_checkpoint){.model = m}) == BG_OK);
    bg_module *back = NULL;
    CHECK(bg_checkpoint_load_model(path, &back) == BG_OK);
    CHECK(back && bg_module_num_children(back) == N);
    CHECK(back && strcmp(bg_module_child_name(back, N - 1), "99999") == 0);
    // Names stay unique in a large container.
    CHECK(bg_module_add_child(back, "512", bg_relu_new()) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "module_add_child: Sequential already has a member named 512");
    bg_module_free(back);
    bg_module_free(m);
    unlink(path);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/bg_limits_XXXXXX");
    if (!mkdtemp(dir)) return 1;
    test_description_larger_than_file();
    test_many_children();
    rmdir(dir);
    return bg_test_finish();
}
