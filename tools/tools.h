/* tools.h — what the `bitgrad` subcommands share: the Fashion-MNIST data, a
 * small option parser, a clock, and the training loop with its progress line,
 * progressive schedule, distillation and training log (tools/train.c). */
#ifndef BG_TOOLS_H
#define BG_TOOLS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "bitgrad.h"

// --- data ------------------------------------------------------------------------

typedef struct tool_data {
    bg_dataset *train, *test;
    bg_batcher *train_b, *test_b;
    bool nchw;   /* images as [B,1,28,28] (a convolutional model), set before loading */
} tool_data;

/* Whether m's first layer is a convolution (it takes [B,C,H,W] images). */
bool tool_model_takes_images(const bg_module *m);

/* Batchers over d->train (shuffled by seed) and d->test; on failure d is
 * freed. */
bool tool_data_batchers(tool_data *d, int64_t batch, int64_t eval_batch, uint64_t seed);
/* Loads both Fashion-MNIST splits from dir (NULL: the default folder) with a
 * shuffled, seeded train batcher of batch images and a test batcher of
 * eval_batch. Returns false with bg_last_error() set. */
bool tool_data_load(tool_data *d, const char *dir, int64_t batch, int64_t eval_batch, uint64_t seed);
void tool_data_free(tool_data *d);

// --- options ---------------------------------------------------------------------

/* Parses argv[i+1] as an integer in lo..hi (or a float) for the flag argv[i];
 * prints "FLAG: ..." and returns false on a bad or missing value. *i is
 * advanced past the value. */
bool tool_int_arg(int argc, char **argv, int *i, long long lo, long long hi, long long *out);
bool tool_float_arg(int argc, char **argv, int *i, double lo, double hi, float *out);
bool tool_str_arg(int argc, char **argv, int *i, const char **out);

double tool_now(void);
/* mkdir -p for one level (the folder may exist); false + message on stderr. */
bool tool_make_dir(const char *dir);
/* Size of a file in bytes, -1 when it cannot be read. */
int64_t tool_file_size(const char *path);
/* True when a and b name the same file: the same path, or two existing paths
 * with the same device and inode (a hard or symbolic link). */
bool tool_same_file(const char *a, const char *b);
/* False, with "bitgrad CMD: the output OUT is the WHAT itself: refusing to
 * overwrite an input" (or "... is the same file as the WHAT IN: ...") on
 * stderr, when out and the input in are the same file. */
bool tool_check_output(const char *cmd, const char *out, const char *what, const char *in);

// --- training ----------------------------------------------------------------------

typedef struct tool_train_opts {
    const char *label;       /* "teacher", "student": log and progress lines */
    int epochs;
    float lr;
    const char *schedule;    /* progressive schedule for the weight quantizers, or NULL */
    bg_module *teacher;      /* distil from it (frozen), or NULL */
    float kd_T, kd_alpha;
    bg_trainlog_writer *log; /* or NULL */
    int log_every;           /* log the loss every N steps (default 10) */
    bool quiet;              /* no progress line (tests) */
} tool_train_opts;

typedef struct tool_train_result {
    double accuracy;         /* test accuracy after the last epoch (fake-quant eval for QAT) */
    double seconds;          /* training time, evaluation excluded */
    int64_t steps;
} tool_train_result;

/* Trains model on d->train for o->epochs with Adam(lr): per step the
 * schedule (if any) sets each weight quantizer's spec, the loss is
 * cross-entropy or KD from the teacher; per epoch the test accuracy (eval
 * quant mode for a quantized model) and, for quantized layers, SQNR /
 * zeros / flips go to the log and a line to stdout. Returns false with the
 * error printed. */
bool tool_train(bg_module *model, tool_data *d, const tool_train_opts *o, tool_train_result *r);

/* One "phase" record per weight quantizer of q: its spec name at step. */
bg_status tool_log_phases(bg_trainlog_writer *log, int64_t step, const bg_quantizer_list *q);

/* Quantization metrics (SQNR, zeros, flips) are tracked on one training
 * forward in TOOL_METRICS_EVERY (the tracking costs a pass) and logged
 * after it. */
#define TOOL_METRICS_EVERY 50
/* One metrics record per quantized layer of model (bg_qat_metrics over the
 * tracked forward) at step; n_quantizers bounds the layers. */
bg_status tool_log_metrics(bg_trainlog_writer *log, int64_t step, bg_module *model, int n_quantizers);
/* True when applying sched at step changes some quantizer's phase (the
 * phase about to end goes to the histogram figure first); false before the
 * schedule's first step. */
bool tool_phase_ending(const bg_schedule *sched, const bg_quantizer_list *q, int64_t step);

/* Under mpirun: the ranks, the gradient allreduce's time per step and the
 * bytes each rank reduces per step (nothing when single-process). */
void tool_print_dist_stats(int64_t steps);

/* bitgrad demo lm (tools/cmd_lm.c): the language-model demo. */
int tool_lm_demo(int argc, char **argv);

/* Test-set accuracy and images/s of a model's no-grad forward (quant mode as
 * set by the caller). */
bool tool_eval_speed(bg_module *model, tool_data *d, double *accuracy, double *images_per_s);

#endif
