/* bitgrad plot LOG [--out DIR] — draws the training figures of a log written
 * by any run (io/io.h: the JSON-lines training log) and prints their paths.
 * Calls io/ (bg_trainlog_read, bg_plot_all) only. */
#include <stdio.h>
#include <string.h>

#include "bitgrad.h"
#include "tools/commands.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: bitgrad plot LOG [--out DIR]\n"
            "\n"
            "Draws the figures of a training log (JSON lines, one record per line; the\n"
            "format is documented in io/io.h) as PNG files and prints their paths:\n"
            "  training.png  loss and test accuracy against step, phases shaded, reference lines\n"
            "  weights.png   latent weight histograms per layer with quantization levels/thresholds\n"
            "  ternary.png   ternary layers' fraction of zero weights and flip rate over training\n"
            "  sqnr.png      weight and activation SQNR per layer at the end of each phase\n"
            "A figure is skipped when the log has no records for it.\n"
            "\n"
            "options:\n"
            "  --out DIR   output folder, created when missing (default: plots)\n"
            "  -h, --help  this text\n");
}

int bg_cmd_plot(int argc, char **argv) {
    const char *log_path = NULL, *out = "plots";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--out")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "bitgrad plot: --out needs a folder\n");
                usage(stderr);
                return 2;
            }
            out = argv[++i];
        } else if (!strncmp(argv[i], "--out=", 6)) {
            out = argv[i] + 6;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "bitgrad plot: unknown option \"%s\"\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (log_path) {
            fprintf(stderr, "bitgrad plot: one log at a time (got \"%s\" and \"%s\")\n", log_path, argv[i]);
            return 2;
        } else {
            log_path = argv[i];
        }
    }
    if (!log_path || !*out) {
        usage(stderr);
        return 2;
    }
    bg_trainlog *log;
    if (bg_trainlog_read(log_path, &log) != BG_OK) {
        fprintf(stderr, "bitgrad plot: %s\n", bg_last_error());
        return 1;
    }
    bg_plot_files files;
    bg_status s = bg_plot_all(log, out, &files);
    // print what was written even when a later figure failed
    for (int i = 0; i < files.n; i++) printf("%s\n", files.path[i]);
    if (s != BG_OK) fprintf(stderr, "bitgrad plot: %s\n", bg_last_error());
    bg_trainlog_free(log);
    return s == BG_OK ? 0 : 1;
}
