/* bitgrad generate MODEL.bgx --prompt TEXT [-n N] [--temperature T]
 * [--top-k K] [--top-p P] [--seed S] [--threads N]: continues a prompt with
 * the language-model runtime (infer/lm.h), streaming the bytes to stdout,
 * and prints prefill and decode tokens/s to stderr. When the cache is full
 * its older half is dropped and the newer half prefilled again (a context
 * shift), so -n may exceed the context. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/commands.h"
#include "tools/tools.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: bitgrad generate MODEL.bgx --prompt TEXT [-n N] [--temperature T] [--top-k K] [--top-p P]\n"
            "                        [--seed S] [--threads N] [--quiet]\n"
            "Continues TEXT with a language model exported by `bitgrad export` (bytes are tokens),\n"
            "streaming the continuation to stdout; prefill and decode speed go to stderr.\n"
            "  -n N              bytes to generate (default 200)\n"
            "  --temperature T   0 = greedy (default 0.8)\n"
            "  --top-k K         sample among the K most likely bytes; 0 = all (default 0)\n"
            "  --top-p P         then among the most likely whose probabilities reach P (default 0.95)\n"
            "  --seed S          sampling seed (default 0)\n"
            "  --threads N       threads; 0 = auto: one per core, one fewer per core\n"
            "                    other processes keep busy, N pins N (default 0)\n"
            "  --quiet           no speed line\n");
}

typedef struct gen {
    bg_lm_runtime *rt;
    int32_t *seq;   /* prompt + generated */
    int64_t n_seq;
    double prefill_s, decode_s;
    int64_t prefilled, decoded;
} gen;

/* A full cache keeps its newer half: reset and prefill it again. */
static bg_status shift_context(gen *g, float *logits) {
    const int64_t keep = bg_lm_n_ctx(g->rt) / 2;
    bg_lm_reset(g->rt);
    double t0 = tool_now();
    bg_status s = bg_lm_prefill(g->rt, g->seq + g->n_seq - keep, keep, logits, false);
    g->prefill_s += tool_now() - t0, g->prefilled += keep;
    return s;
}

int bg_cmd_generate(int argc, char **argv) {
    const char *path = NULL, *prompt = NULL;
    long long n = 200, top_k = 0, seed = 0, threads = 0;
    float temperature = 0.8f, top_p = 0.95f;
    bool quiet = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool ok = true;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--prompt")) ok = tool_str_arg(argc, argv, &i, &prompt);
        else if (!strcmp(a, "-n")) ok = tool_int_arg(argc, argv, &i, 0, 1 << 24, &n);
        else if (!strcmp(a, "--top-k")) ok = tool_int_arg(argc, argv, &i, 0, 1 << 16, &top_k);
        else if (!strcmp(a, "--seed")) ok = tool_int_arg(argc, argv, &i, 0, LLONG_MAX, &seed);
        else if (!strcmp(a, "--threads")) ok = tool_int_arg(argc, argv, &i, 0, 1024, &threads);
        else if (!strcmp(a, "--temperature")) ok = tool_float_arg(argc, argv, &i, 0.0, 100.0, &temperature);
        else if (!strcmp(a, "--top-p")) ok = tool_float_arg(argc, argv, &i, 0.0, 1.0, &top_p);
        else if (!strcmp(a, "--quiet")) quiet = true;
        else if (a[0] != '-' && !path) path = a;
        else {
            fprintf(stderr, "bitgrad generate: unknown argument %s\n", a);
            ok = false;
        }
        if (!ok) {
            usage(stderr);
            return 2;
        }
    }
    if (!path || !prompt || !prompt[0]) {
        fprintf(stderr, "bitgrad generate: give MODEL.bgx and a non-empty --prompt\n");
        usage(stderr);
        return 2;
    }
    if (threads) bg_set_num_threads((int)threads);
    gen g = {0};
    int status = 1;
    float *logits = NULL, *scratch = NULL;
    if (bg_lm_load(path, NULL, &g.rt) != BG_OK) {
        fprintf(stderr, "bitgrad generate: %s\n", bg_last_error());
        return 1;
    }
    const bg_lm_hparams hp = bg_lm_runtime_hparams(g.rt);
    const int64_t n_prompt = (int64_t)strlen(prompt);
    if (n_prompt > bg_lm_n_ctx(g.rt)) {
        fprintf(stderr, "bitgrad generate: the prompt is %lld bytes, longer than the context of %lld\n",
                (long long)n_prompt, (long long)bg_lm_n_ctx(g.rt));
        goto done;
    }
    g.seq = malloc(sizeof *g.seq * (size_t)(n_prompt + n));
    logits = malloc(sizeof *logits * (size_t)hp.vocab);
    scratch = malloc(sizeof *scratch * (size_t)hp.vocab * 2);
    if (!g.seq || !logits || !scratch) {
        fprintf(stderr, "bitgrad generate: out of memory\n");
        goto done;
    }
    for (int64_t i = 0; i < n_prompt; i++) {
        g.seq[i] = (unsigned char)prompt[i];
        if (g.seq[i] >= hp.vocab) {
            fprintf(stderr, "bitgrad generate: the prompt's byte %lld is %d, outside the model's vocabulary of %lld\n",
                    (long long)i, g.seq[i], (long long)hp.vocab);
            goto done;
        }
    }
    g.n_seq = n_prompt;
    double t0 = tool_now();
    if (bg_lm_prefill(g.rt, g.seq, n_prompt, logits, false) != BG_OK) {
        fprintf(stderr, "bitgrad generate: %s\n", bg_last_error());
        goto done;
    }
    g.prefill_s = tool_now() - t0, g.prefilled = n_prompt;
    fwrite(prompt, 1, (size_t)n_prompt, stdout);
    fflush(stdout);
    bg_rng rng;
    bg_rng_seed(&rng, (uint64_t)seed);
    const bg_sample_opts so = {.temperature = temperature, .top_k = top_k, .top_p = top_p};
    bg_status st = BG_OK;
    for (int64_t i = 0; i < n && st == BG_OK; i++) {
        const int32_t t = bg_sample_logits(logits, hp.vocab, &so, scratch, &rng);
        g.seq[g.n_seq++] = t;
        putchar(t);
        fflush(stdout);
        if (i + 1 == n) break;
        if (bg_lm_n_past(g.rt) == bg_lm_n_ctx(g.rt)) {
            st = shift_context(&g, logits);   // its prefill ends with t
            continue;
        }
        bg_adapt_threads();   // a token is a step: fewer threads while other processes hold cores
        double t1 = tool_now();
        st = bg_lm_decode(g.rt, t, logits);
        g.decode_s += tool_now() - t1, g.decoded++;
    }
    putchar('\n');
    if (st != BG_OK) {
        fprintf(stderr, "bitgrad generate: %s\n", bg_last_error());
        goto done;
    }
    if (!quiet)
        fprintf(stderr, "prefill %lld tokens %.1f ms (%.0f tokens/s); decode %lld tokens %.1f ms (%.0f tokens/s); %s, %d threads\n",
                (long long)g.prefilled, 1e3 * g.prefill_s, g.prefill_s > 0 ? (double)g.prefilled / g.prefill_s : 0.0,
                (long long)g.decoded, 1e3 * g.decode_s, g.decode_s > 0 ? (double)g.decoded / g.decode_s : 0.0,
                bg_lm_runtime_projections(g.rt), bg_get_num_threads());
    status = 0;
done:
    free(scratch);
    free(logits);
    free(g.seq);
    bg_lm_free(g.rt);
    return status;
}
