/* fuzz_lm.c — libFuzzer target for the language-model runtime's loader: the
 * input bytes are an export file, loaded with bg_lm_load (a cache of at most
 * 8 positions); when that succeeds, a few tokens are prefilled and one
 * decoded. Any input must give BG_OK or an error, never a crash, a leak or
 * undefined behaviour.
 *
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DBG_FUZZ=ON
 *   cmake --build build-fuzz --target fuzz_lm
 *   build-fuzz/fuzz_lm -max_total_time=60 -dict=tests/fuzz/lm.dict tests/fuzz/corpus_lm
 *
 * BG_FUZZ_WRITE_SEEDS=DIR build-fuzz/fuzz_lm writes the seed corpus (tiny
 * ternary and fp32 language models, as tests/fuzz/corpus_lm/ holds) and
 * exits. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/fuzz/fuzz_util.h"
#include "infer/lm.h"
#include "io/export.h"

static char path[64];
static bool verbose;   /* BG_FUZZ_VERBOSE set: print each load's status */

static int write_seeds(const char *dir) {
    const bg_lm_config c = {.vocab = 16, .d_model = 8, .n_layers = 1, .n_heads = 2, .d_ff = 8, .ctx = 8};
    bg_status s = BG_OK;
    for (int bitnet = 0; bitnet < 2 && s == BG_OK; bitnet++) {
        bg_rng rng;
        bg_rng_seed(&rng, 1);
        bg_module *m = bg_lm_new(&c, &rng);
        s = m ? BG_OK : bg_last_status();
        if (s == BG_OK && bitnet) s = bg_bitnet_model(m);
        if (s == BG_OK) bg_model_set_quant_mode(m, BG_QUANT_MODE_EVAL);
        char p[512];
        snprintf(p, sizeof p, "%s/%s.bgx", dir, bitnet ? "lm_t2" : "lm_f32");
        if (s == BG_OK) s = bg_export(m, p, NULL);
        bg_module_free(m);
    }
    if (s != BG_OK) fprintf(stderr, "%s\n", bg_last_error());
    return s == BG_OK ? 0 : 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    verbose = fuzz_init("lm", "bgx", write_seeds, path, sizeof path);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!fuzz_write(path, data, size)) return 0;
    bg_lm_runtime *m = NULL;
    bg_lm_hparams hp = {0};
    // A short cache: the metadata may claim any context within the limits.
    bg_status s = bg_lm_load(path, &(bg_lm_runtime_opts){.n_ctx = 8}, &m);
    if (s == BG_ERR_ARG) s = bg_lm_load(path, &(bg_lm_runtime_opts){.n_ctx = 1}, &m);
    if (verbose) fprintf(stderr, "load: %d %s\n", (int)s, s == BG_OK ? "" : bg_last_error());
    if (s == BG_OK && (hp = bg_lm_runtime_hparams(m)).vocab <= (1 << 12)) {
        float *logits = malloc(sizeof(float) * (size_t)hp.vocab * 4);
        const int32_t ids[3] = {0, (int32_t)(hp.vocab - 1), (int32_t)(hp.vocab / 2)};
        int64_t n = bg_lm_n_ctx(m) >= 4 ? 3 : 1;
        if (logits && bg_lm_prefill(m, ids, n, logits, true) == BG_OK && bg_lm_n_past(m) < bg_lm_n_ctx(m))
            bg_lm_decode(m, ids[1], logits);
        free(logits);
    }
    bg_lm_free(m);
    unlink(path);
    return 0;
}
