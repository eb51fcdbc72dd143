/* io/trainlog.h — training logs (io/trainlog.c) and their PNG plots
 * (io/plot.c). */
#ifndef BG_IO_TRAINLOG_H
#define BG_IO_TRAINLOG_H

#include "layers/layers.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------
// training logs (io/trainlog.c) and plots (io/plot.c)
//
// A training log is a JSON-lines file: one JSON object per line, each with a
// "type" field; blank lines are skipped, other keys are ignored, unknown types
// are an error. Numbers may also be null or the strings "nan", "inf", "-inf"
// (JSON has no NaN/Inf; the writer emits null for NaN and the strings for
// +-Inf; it prints numbers with 9 significant digits, so floats round-trip).
// Fields marked ? are optional (NaN / "" / 0 when absent).
//   {"type":"meta","title":"fmnist MLP, ternary student"}       figure titles
//   {"type":"step","step":120,"epoch":1,"loss":0.412,"lr":0.001}  epoch?, lr?
//   {"type":"eval","step":120,"acc":0.871,"label":"student"}      label?
//   {"type":"phase","step":400,"layer":"*","spec":"ternary","bits":2}
//        layer "*" = every layer without phase records of its own; spec
//        "fp32" / "int8" / "int4" / "ternary" ..; bits? (0 = float); from this
//        step on the layer runs under spec
//   {"type":"metrics","step":399,"layer":"fc1","w_sqnr":18.2,"a_sqnr":31.5,
//    "zero_frac":0.31,"flip_frac":0.004}     SQNR in dB; zero/flip? (ternary)
//   {"type":"hist","step":399,"layer":"fc1","lo":-0.12,"hi":0.12,
//    "counts":[3,17,..],"levels":[-0.05,0,0.05],"thresholds":[-0.025,0.025]}
//        latent weights: counts of n_bins equal bins over [lo,hi]; levels and
//        thresholds (levels? thresholds?) in the weights' float units
//   {"type":"ref","label":"teacher","metric":"acc","value":0.885}
//        a horizontal reference line; metric? "acc" (default) or "loss"
//
//     bg_trainlog_writer *lw;
//     if (bg_trainlog_open("out/train.jsonl", &lw) != BG_OK) fail(bg_last_error());
//     bg_trainlog_ref(lw, "teacher", "acc", teacher_acc);
//     bg_trainlog_phase(lw, 0, "*", "int8", 8);
//     bg_trainlog_step(lw, step, epoch, loss, lr);          // every few steps
//     bg_trainlog_eval(lw, step, "student", acc);           // every epoch
//     bg_trainlog_close(lw);
//     bg_trainlog *log;
//     if (bg_trainlog_read("out/train.jsonl", &log) == BG_OK) {
//         bg_plot_files files;
//         bg_plot_all(log, "out/plots", &files);            // PNGs + their paths
//         bg_trainlog_free(log);
//     }
//
// "step" is the number of optimizer steps done when the record was written;
// a phase record at S governs steps S, S+1, ... (0-based), so a measurement
// at step S (taken after S steps, before the change) still belongs to the
// phase before a change at S: the figures treat phase k as steps
// (start_k, start_k+1] for metrics and hists ("end of phase" = the last
// record in it) and shade [start_k, start_k+1) on the step axis.
// One log has one step axis: a run that trains a teacher and then a student
// numbers the student's steps after the teacher's, or logs only the student
// with the teacher's accuracy as a "ref". Names (layer, label, spec) are at
// most BG_TRAINLOG_NAME_MAX - 1 bytes. Error line numbers count from 1,
// blank lines included.
// Each record is written with one fwrite and flushed, so a crashed run keeps
// every line written before the crash. Writer failures return BG_ERR_IO (or
// BG_ERR_ARG for NULL / bad arguments) with bg_last_error() naming the path.

#define BG_TRAINLOG_NAME_MAX 64

typedef struct bg_trainlog_writer bg_trainlog_writer;
struct bg_qat_layer_metrics;   /* qat/qat.h */

/* Creates (truncates) path. On failure *out is NULL. */
bg_status bg_trainlog_open(const char *path, bg_trainlog_writer **out);
/* Opens path for appending (creating it when missing), e.g. when a run
 * resumes from a checkpoint; first cuts off a partial last line (no final
 * newline) that a crash in the middle of a write may have left. */
bg_status bg_trainlog_append(const char *path, bg_trainlog_writer **out);
/* Closes the file; returns BG_ERR_IO if a write or the close failed.
 * bg_trainlog_close(NULL) is a no-op returning BG_OK. */
bg_status bg_trainlog_close(bg_trainlog_writer *w);

bg_status bg_trainlog_meta(bg_trainlog_writer *w, const char *title);
/* epoch < 0 or lr NaN: the field is left out. */
bg_status bg_trainlog_step(bg_trainlog_writer *w, int64_t step, int64_t epoch, double loss, double lr);
/* acc in [0,1]; label e.g. "student", "teacher" (NULL: none). */
bg_status bg_trainlog_eval(bg_trainlog_writer *w, int64_t step, const char *label, double acc);
bg_status bg_trainlog_phase(bg_trainlog_writer *w, int64_t step, const char *layer, const char *spec,
                            int bits);
/* zero_frac / flip_frac NaN: left out (not a ternary layer). */
bg_status bg_trainlog_metrics(bg_trainlog_writer *w, int64_t step, const char *layer, double w_sqnr_db,
                              double a_sqnr_db, double zero_frac, double flip_frac);
/* One metrics record per layer of bg_qat_metrics()'s output (NaN for a side
 * without a tracked forward; zero/flip only for ternary layers). */
bg_status bg_trainlog_qat_metrics(bg_trainlog_writer *w, int64_t step,
                                  const struct bg_qat_layer_metrics *m, int n);
/* A histogram of x[0..n) (latent weights) with n_bins (1..4096) bins over
 * [lo,hi] = [min,max] of x and of the levels; non-finite x are skipped.
 * levels (ascending, n_levels >= 0; may be NULL when 0) are the dequantized
 * values the quantizer maps to; thresholds are written as the midpoints of
 * adjacent levels (round to nearest). */
bg_status bg_trainlog_hist(bg_trainlog_writer *w, int64_t step, const char *layer, const float *x,
                           int64_t n, int n_bins, const float *levels, int n_levels);
/* Fills levels[i] = (qmin + i - zero_point) * scale for i in 0..qmax-qmin
 * (at most max of them) and returns the count qmax - qmin + 1, e.g. for a
 * ternary layer with absmean scale s: (s, 0, -1, 1) -> {-s, 0, s}. */
int bg_trainlog_levels(float scale, float zero_point, int qmin, int qmax, float *levels, int max);
/* One hist record per quantized layer of model (bg_qlayer_at order, named by
 * bg_qlayer_name; "model" for model itself) with a latent weight: its
 * weights in n_bins bins, and with_levels (none while its quantizer is
 * disabled, an fp32 phase) the levels of its weight quantizer from the
 * state's current scale (after a forward) and zero
 * point (per-channel / per-group: their mean, so the lines are indicative;
 * ternary {-s,0,s}, binary {-s,s}, int b-bit (qmin..qmax - z) * s). */
bg_status bg_trainlog_model_hists(bg_trainlog_writer *w, int64_t step, const bg_module *model, int n_bins,
                                  bool with_levels);
/* metric "acc" or "loss" (NULL: "acc"). */
bg_status bg_trainlog_ref(bg_trainlog_writer *w, const char *label, const char *metric, double value);

typedef struct bg_trainlog_step_rec {
    int64_t step, epoch;     /* epoch -1 when absent */
    double loss, lr;         /* lr NaN when absent */
} bg_trainlog_step_rec;

typedef struct bg_trainlog_eval_rec {
    int64_t step;
    double acc;
    char label[BG_TRAINLOG_NAME_MAX];   /* "" when absent */
} bg_trainlog_eval_rec;

typedef struct bg_trainlog_phase_rec {
    int64_t step;
    char layer[BG_TRAINLOG_NAME_MAX];   /* "*" = every layer */
    char spec[BG_TRAINLOG_NAME_MAX];
    int bits;
} bg_trainlog_phase_rec;

typedef struct bg_trainlog_metrics_rec {
    int64_t step;
    char layer[BG_TRAINLOG_NAME_MAX];
    double w_sqnr_db, a_sqnr_db;        /* may be NaN or +-Inf */
    double zero_frac, flip_frac;        /* NaN when absent */
} bg_trainlog_metrics_rec;

typedef struct bg_trainlog_hist_rec {
    int64_t step;
    char layer[BG_TRAINLOG_NAME_MAX];
    double lo, hi;                      /* lo < hi */
    int n_bins, n_levels, n_thresholds;
    int64_t *counts;                    /* [n_bins], owned by the log */
    double *levels, *thresholds;        /* [n_levels], [n_thresholds] */
} bg_trainlog_hist_rec;

typedef struct bg_trainlog_ref_rec {
    char label[BG_TRAINLOG_NAME_MAX];
    char metric[8];                     /* "acc" or "loss" */
    double value;
} bg_trainlog_ref_rec;

/* A whole log, records of each type in file order. Fields are read-only. */
typedef struct bg_trainlog {
    char title[128];                    /* the last meta record's, or "" */
    int64_t n_steps, n_evals, n_phases, n_metrics, n_hists, n_refs;
    bg_trainlog_step_rec *steps;
    bg_trainlog_eval_rec *evals;
    bg_trainlog_phase_rec *phases;
    bg_trainlog_metrics_rec *metrics;
    bg_trainlog_hist_rec *hists;
    bg_trainlog_ref_rec *refs;
} bg_trainlog;

/* Parses the whole file. On failure *out is NULL and bg_last_error() names
 * the path and line (BG_ERR_FORMAT), e.g.
 *   trainlog: run.jsonl: line 7: "loss" is not a number
 *   trainlog: run.jsonl: line 3: missing field "step"
 *   trainlog: run.jsonl: empty file (no records)
 * or BG_ERR_IO when the file cannot be read. */
bg_status bg_trainlog_read(const char *path, bg_trainlog **out);
/* The same from text in memory; name is used in messages in place of the path. */
bg_status bg_trainlog_parse(const char *text, size_t len, const char *name, bg_trainlog **out);
void bg_trainlog_free(bg_trainlog *log);

// ---------------------------------------------------------------------------
// Plots: PNG (8-bit RGB, libpng), written atomically (temporary file in the
// same folder, rename). Every figure has a title, axes with ticks and tick
// labels, axis labels and a legend where there is more than one series.
// A figure without the data it needs returns BG_ERR_ARG ("plot: <figure>:
// the log has no ... records") and writes nothing.

/* Loss (top panel) and test accuracy (bottom) against step; phases shaded in
 * alternating tints and named at the top of each panel; "ref" records as
 * dashed horizontal lines. Needs step or eval records. 1000 x 720 pixels. */
bg_status bg_plot_training(const bg_trainlog *log, const char *path);
/* One panel per (layer, snapshot): the histogram of the latent weights, the
 * quantization levels as solid vertical lines and the thresholds as dashed
 * ones (at most 33 levels are drawn; beyond that only the outermost two).
 * Rows are layers, columns up to 4 snapshot steps (first, last, and evenly
 * in between). Needs hist records. 360*cols + 40 by 250*rows + 60 pixels. */
bg_status bg_plot_weights(const bg_trainlog *log, const char *path);
/* Fraction of zero weights (top) and flip rate (bottom) against step, one
 * line per ternary layer. Needs metrics records with zero_frac. 1000 x 720. */
bg_status bg_plot_ternary(const bg_trainlog *log, const char *path);
/* Grouped bars per layer: weight SQNR (top) and activation SQNR (bottom) in
 * dB at the end of each phase (the last metrics record of the layer before the
 * next phase starts), one bar color per phase; non-finite values are left
 * out. Needs metrics records. 1000 x 720 pixels. */
bg_status bg_plot_sqnr(const bg_trainlog *log, const char *path);

#define BG_PLOT_MAX_FILES 4
#define BG_PLOT_PATH_MAX 1024

typedef struct bg_plot_files {
    int n;
    char path[BG_PLOT_MAX_FILES][BG_PLOT_PATH_MAX];
} bg_plot_files;

/* Creates dir (and its parents) when missing and draws every figure the log
 * has data for: training.png, weights.png, ternary.png, sqnr.png. out (may be
 * NULL) gets the written paths in that order. BG_ERR_ARG when the log has
 * data for none; the first failure otherwise. */
bg_status bg_plot_all(const bg_trainlog *log, const char *dir, bg_plot_files *out);

/* Charts of other data (bitgrad autoquant's figures), PNG at path:
 * grouped bars, values [n_groups x n_series] row-major (e.g. each layer's
 * loss increase at each width), bars from 0; and points (x[i], y[i]) joined
 * in order with optional labels (e.g. accuracy against export size, one
 * point per gate round). BG_ERR_ARG / BG_ERR_NOMEM / BG_ERR_IO. */
bg_status bg_plot_bars(const char *path, const char *title, const char *ylabel, int n_groups,
                       const char *const *groups, int n_series, const char *const *series, const double *values);
bg_status bg_plot_points(const char *path, const char *title, const char *xlabel, const char *ylabel, int n,
                         const double *x, const double *y, const char *const *labels);

#ifdef __cplusplus
}
#endif
#endif /* BG_IO_TRAINLOG_H */
