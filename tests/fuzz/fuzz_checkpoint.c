/* fuzz_checkpoint.c — libFuzzer target for the checkpoint loader: the input
 * bytes are a checkpoint file, loaded with bg_checkpoint_load into a small
 * fixed model (a quantized Linear with LSQ steps, ReLU, Dropout, Linear)
 * with an Adam optimizer, a schedule and an RNG, and with
 * bg_checkpoint_load_model (the model built from the file's description).
 * Any input must give BG_OK or an error, never a crash, a leak, undefined
 * behaviour or a hang.
 *
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DBG_FUZZ=ON
 *   cmake --build build-fuzz --target fuzz_checkpoint
 *   build-fuzz/fuzz_checkpoint -max_total_time=60 -dict=tests/fuzz/checkpoint.dict CORPUS_DIR
 *
 * The seeds include a wide description (2,000 children) and one that
 * promises more parameters than its file holds; the dictionary holds the
 * description's keys, kinds and the sizes at and past the limits.
 *
 * BG_FUZZ_WRITE_SEEDS=DIR build-fuzz/fuzz_checkpoint writes the seed corpus
 * (valid checkpoints of this model, as tests/fuzz/corpus/ holds) and exits. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format/format.h"
#include "io/io.h"
#include "qat/qat.h"

static bg_module *net;
static bg_optim *opt;
static bg_schedule sched;
static bg_rng rng;
static char path[64];
static bool verbose;   /* BG_FUZZ_VERBOSE set: print each load's status */

static bool build(void) {
    bg_rng init;
    bg_rng_seed(&init, 1);
    bg_quant_spec w, a;
    if (bg_quant_spec_parse("int4:per_channel:lsq", &w) != BG_OK || bg_quant_spec_parse("int8", &a) != BG_OK)
        return false;
    net = bg_sequential_new(4, (bg_module *[]){bg_qlinear_new(6, 4, true, &w, &a, &init), bg_relu_new(),
                                               bg_dropout_new(0.2f, 3), bg_linear_new(4, 3, true, &init)});
    opt = net ? bg_adam_new(net, NULL) : NULL;
    bg_rng_seed(&rng, 5);
    return opt && bg_schedule_parse("[*weight_quant]int8@0,int4@3;[*input_quant]fp32@0,int8@1", 0, &sched) == BG_OK;
}

/* A few training steps on random data, so that every state is non-trivial. */
static void train(int steps) {
    bg_ctx *ctx = bg_ctx_new(0);
    bg_quant_state *states[4];
    const char *names[4];
    char buf[4 * BG_PARAM_NAME_MAX];
    const bg_tensor *weights[4];
    int n = bg_model_quantizers(net, states, names, buf, weights, 4);
    for (int s = 0; s < steps; s++) {
        bg_schedule_apply(&sched, s, states, names, weights, n, NULL);
        bg_tensor *x = bg_empty(ctx, BG_DTYPE_F32, BG_SHAPE(5, 6));
        bg_tensor *y = bg_zeros(ctx, BG_DTYPE_I32, BG_SHAPE(5));
        bg_init_uniform(x, &rng, -1.0f, 1.0f);
        bg_tensor *loss = bg_cross_entropy(ctx, bg_module_forward(ctx, net, x), y, NULL);
        if (loss) bg_backward(ctx, loss);
        bg_optim_step(opt);
        bg_optim_zero_grad(opt);
        bg_ctx_reset(ctx);
    }
    bg_ctx_free(ctx);
}

static void write_seeds(const char *dir) {
    char p[512];
    train(2);
    snprintf(p, sizeof p, "%s/full.ckpt", dir);
    bg_checkpoint ck = {.model = net, .opt = opt, .schedule = &sched, .rng = &rng, .step = 2, .epoch = 0,
                        .batch_in_epoch = 2};
    if (bg_checkpoint_save(p, &ck) != BG_OK) fprintf(stderr, "%s\n", bg_last_error());
    train(3);
    snprintf(p, sizeof p, "%s/later.ckpt", dir);
    ck.step = 5;
    if (bg_checkpoint_save(p, &ck) != BG_OK) fprintf(stderr, "%s\n", bg_last_error());
    snprintf(p, sizeof p, "%s/model_only.ckpt", dir);
    if (bg_checkpoint_save(p, &(bg_checkpoint){.model = net}) != BG_OK) fprintf(stderr, "%s\n", bg_last_error());
    // Wide: 2,000 ReLU children after a Linear.
    enum { WIDE = 2000 };
    bg_module *kids[WIDE + 1];
    bg_rng init;
    bg_rng_seed(&init, 2);
    kids[0] = bg_linear_new(6, 4, true, &init);
    for (int i = 1; i <= WIDE; i++) kids[i] = bg_relu_new();
    bg_module *wide = bg_sequential_new(WIDE + 1, kids);
    snprintf(p, sizeof p, "%s/wide.ckpt", dir);
    if (!wide || bg_checkpoint_save(p, &(bg_checkpoint){.model = wide}) != BG_OK) fprintf(stderr, "%s\n", bg_last_error());
    bg_module_free(wide);
    // A description of Linear(65536, 65536) over a file of 12 values.
    bg_tensor *w = bg_tensor_new(BG_DTYPE_F32, BG_SHAPE(3, 4));
    bg_safetensors_writer *wr = bg_safetensors_writer_new();
    snprintf(p, sizeof p, "%s/promises_more.ckpt", dir);
    if (!w || !wr || bg_safetensors_writer_add(wr, "0.weight", w) != BG_OK ||
        bg_safetensors_writer_meta(wr, "format", "bitgrad-checkpoint") != BG_OK ||
        bg_safetensors_writer_meta(wr, "version", "1") != BG_OK ||
        bg_safetensors_writer_meta(wr, "model",
                                   "{\"format\":\"bitgrad-model\",\"version\":2,\"model\":{\"kind\":\"Sequential\","
                                   "\"children\":[{\"name\":\"0\",\"kind\":\"Linear\",\"in_features\":65536,"
                                   "\"out_features\":65536,\"bias\":false}]}}") != BG_OK ||
        bg_safetensors_writer_save(wr, p) != BG_OK)
        fprintf(stderr, "%s\n", bg_last_error());
    bg_safetensors_writer_free(wr);
    bg_tensor_free(w);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (!build()) {
        fprintf(stderr, "fuzz_checkpoint: cannot build the model: %s\n", bg_last_error());
        abort();
    }
    const char *seeds = getenv("BG_FUZZ_WRITE_SEEDS");
    if (seeds) {
        write_seeds(seeds);
        exit(0);
    }
    snprintf(path, sizeof path, "/tmp/fuzz_checkpoint_%d.ckpt", (int)getpid());
    verbose = getenv("BG_FUZZ_VERBOSE") != NULL;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    bg_checkpoint ck = {.model = net, .opt = opt, .schedule = &sched, .rng = &rng};
    bg_status s = bg_checkpoint_load(path, &ck);
    if (verbose) fprintf(stderr, "load: %s %s\n", bg_status_str(s), s == BG_OK ? "" : bg_last_error());
    // A model-only load of the same bytes exercises the path without the
    // optional members (a file without optimizer state can still load).
    bg_checkpoint_load(path, &(bg_checkpoint){.model = net});
    // The model the file describes, built from its description.
    bg_module *described = NULL;
    s = bg_checkpoint_load_model(path, &described);
    if (verbose) fprintf(stderr, "load_model: %s %s\n", bg_status_str(s), s == BG_OK ? "" : bg_last_error());
    bg_module_free(described);
    unlink(path);
    return 0;
}
