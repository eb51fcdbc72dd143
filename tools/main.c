/* bitgrad — the command-line program: one subcommand per tools/cmd_*.c. */
#include <stdio.h>
#include <string.h>

#include "dist/dist.h"
#include "tensor/tensor.h"
#include "tools/commands.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *usage;
} command;

static const command commands[] = {
    {"demo", bg_cmd_demo, "train an fp32 teacher, fine-tune a ternary student, export, run, plot"},
    {"finetune", bg_cmd_finetune, "CKPT --schedule S [--teacher CKPT]: quantization-aware fine-tuning"},
    {"ptq", bg_cmd_ptq, "CKPT --wspec S [--aspec S] [--gptq]: post-training quantization with calibration"},
    {"autoquant", bg_cmd_autoquant, "CKPT --budget-kib N --max-drop D: per-layer widths under a budget, QAT, quality gate"},
    {"export", bg_cmd_export, "CKPT OUT [--format bitgrad|onnx|gguf]: write a model for inference"},
    {"infer", bg_cmd_infer, "EXPORT --data fashion-mnist: run an export with the integer runtime"},
    {"plot", bg_cmd_plot, "LOG [--out DIR]: draw the training figures from a log"},
    {"generate", bg_cmd_generate, "MODEL.bgx --prompt TEXT [-n N]: continue text with an exported language model"},
    {"lm", bg_cmd_lm, "train|sample: a BitNet transformer language model on text"},
};
static const int n_commands = (int)(sizeof commands / sizeof commands[0]);

static void usage(FILE *f) {
    fprintf(f, "usage: bitgrad COMMAND [ARGS]   (bitgrad COMMAND --help for its options; bitgrad --version)\n\n"
               "commands:\n");
    for (int i = 0; i < n_commands; i++) fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].usage);
}

/* Runs a command on every rank of `mpirun -np N bitgrad ...` (one rank
 * otherwise): rank 0 alone prints progress (the others' stdout goes to
 * /dev/null; errors stay on each rank's stderr) and writes files; a rank
 * that fails stops them all (bg_dist_abort) instead of leaving them waiting. */
static int run_ranked(const command *c, int argc, char **argv) {
    if (bg_dist_init(&argc, &argv) != BG_OK) {
        fprintf(stderr, "bitgrad: %s\n", bg_last_error());
        return 1;
    }
    if (!bg_dist_is_root() && !freopen("/dev/null", "w", stdout)) {
        fprintf(stderr, "bitgrad: rank %d: cannot silence stdout\n", bg_dist_rank());
        bg_dist_abort(1);
    }
    int rc = c->run(argc, argv);
    if (rc != 0 && bg_dist_size() > 1) {
        fprintf(stderr, "bitgrad: rank %d of %d failed (exit %d): stopping every rank\n", bg_dist_rank(),
                bg_dist_size(), rc);
        bg_dist_abort(rc);
    }
    bg_dist_finalize();
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "--version")) {
        printf("bitgrad %s\n", bg_version());
        return 0;
    }
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (int i = 0; i < n_commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return run_ranked(&commands[i], argc - 1, argv + 1);
    fprintf(stderr, "bitgrad: unknown command \"%s\"\n", argv[1]);
    usage(stderr);
    return 2;
}
