/* test_plot — training logs (io/trainlog.c) and figures (io/plot.c): a small
 * fixed log written with the writer and one given as text, parsed back with
 * exact values; each figure rendered, decoded with libpng, and checked for its
 * size and for pixels of its data colors inside the plot area; bad logs give
 * errors naming the line. BG_PLOT_TEST_OUT=DIR keeps the log and figures. */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <png.h>

#include "test_util.h"

static char dir[512];

static void path_in(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", dir, name); }

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* Deterministic "normal" weights: the sum of 4 uniforms, centred. */
static uint64_t rng_state = 12345;
static float frand(void) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rng_state >> 40) & 0xffffff) / 16777216.0f;
}
static float fnormal(void) { return (frand() + frand() + frand() + frand() - 2.0f) * 1.7f; }

/* The fixed log: 3 layers, int8 -> int4 -> ternary (fc3 stays int8). */
static bool write_fixed_log(const char *path) {
    bg_trainlog_writer *w;
    if (bg_trainlog_open(path, &w) != BG_OK) return false;
    bool ok = bg_trainlog_meta(w, "test run") == BG_OK;
    ok = ok && bg_trainlog_ref(w, "teacher", "acc", 0.875) == BG_OK;
    ok = ok && bg_trainlog_phase(w, 0, "*", "int8", 8) == BG_OK;
    ok = ok && bg_trainlog_phase(w, 0, "fc3", "int8", 8) == BG_OK;
    ok = ok && bg_trainlog_phase(w, 100, "*", "int4", 4) == BG_OK;
    ok = ok && bg_trainlog_phase(w, 200, "*", "ternary", 2) == BG_OK;
    ok = ok && bg_trainlog_phase(w, 200, "fc3", "int8", 8) == BG_OK;
    float wts[2000];
    for (int64_t step = 0; step <= 300 && ok; step += 10) {
        double loss = 2.5 * exp(-step / 80.0) + 0.25 + (step >= 200 && step < 220 ? 0.5 : 0);
        ok = bg_trainlog_step(w, step, step / 100, loss, 0.001) == BG_OK;
        if (step % 50 == 0 && step > 0) {
            ok = ok && bg_trainlog_eval(w, step, "student", 0.6 + 0.25 * (1 - exp(-step / 100.0))) == BG_OK;
            int bits = step <= 100 ? 8 : step <= 200 ? 4 : 2;   // step = steps done (io.h)
            double wq = bits == 8 ? 40 : bits == 4 ? 20 : 8;
            ok = ok && bg_trainlog_metrics(w, step, "fc1", wq + step / 100.0, 35, bits == 2 ? 0.3 + step / 3000.0 : NAN,
                                           bits == 2 ? 0.02 - step / 30000.0 : NAN) == BG_OK;
            ok = ok && bg_trainlog_metrics(w, step, "fc2", wq - 2, 33, bits == 2 ? 0.35 : NAN,
                                           bits == 2 ? 0.01 : NAN) == BG_OK;
            ok = ok && bg_trainlog_metrics(w, step, "fc3", 40, INFINITY, NAN, NAN) == BG_OK;
        }
        if (step == 90 || step == 190 || step == 300) {
            for (int l = 0; l < 2 && ok; l++) {
                const char *name = l ? "fc2" : "fc1";
                double sum = 0;
                for (int i = 0; i < 2000; i++) {
                    wts[i] = 0.05f * fnormal();
                    sum += fabsf(wts[i]);
                }
                float s = (float)(sum / 2000), lv[16];
                int n = step == 300 ? bg_trainlog_levels(s, 0, -1, 1, lv, 16)
                                    : bg_trainlog_levels(step == 90 ? s / 16 : s / 2, 0, step == 90 ? -128 : -8,
                                                         step == 90 ? 127 : 7, lv, 16);
                if (n > 16) n = 0;   // int8: too many to pass here, none drawn
                ok = bg_trainlog_hist(w, step, name, wts, 2000, 60, lv, n) == BG_OK;
            }
        }
    }
    return bg_trainlog_close(w) == BG_OK && ok;
}

/* Decodes a PNG to RGB; NULL on failure. */
static uint8_t *read_png(const char *path, int *w, int *h) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&img, path)) return NULL;
    img.format = PNG_FORMAT_RGB;
    uint8_t *buf = malloc(PNG_IMAGE_SIZE(img));
    if (!buf || !png_image_finish_read(&img, NULL, buf, 0, NULL)) {
        free(buf);
        png_image_free(&img);
        return NULL;
    }
    *w = (int)img.width;
    *h = (int)img.height;
    return buf;
}

/* Pixels of color col in [x0,x1]x[y0,y1]. */
static int64_t count_color(const uint8_t *px, int w, int x0, int y0, int x1, int y1, uint32_t col) {
    int64_t n = 0;
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) {
            const uint8_t *p = px + ((size_t)y * w + x) * 3;
            n += p[0] == (col >> 16 & 0xff) && p[1] == (col >> 8 & 0xff) && p[2] == (col & 0xff);
        }
    return n;
}

static int64_t count_not_white(const uint8_t *px, int w, int x0, int y0, int x1, int y1) {
    return (int64_t)(x1 - x0 + 1) * (y1 - y0 + 1) - count_color(px, w, x0, y0, x1, y1, 0xffffff);
}

static void test_writer_roundtrip(void) {
    char path[600];
    path_in(path, sizeof path, "train.jsonl");
    CHECK(write_fixed_log(path));
    bg_trainlog *log = NULL;
    CHECK(bg_trainlog_read(path, &log) == BG_OK);
    if (!log) {
        fprintf(stderr, "%s\n", bg_last_error());
        return;
    }
    CHECK_STR(log->title, "test run");
    CHECK(log->n_steps == 31);
    CHECK(log->n_evals == 6);
    CHECK(log->n_phases == 5);
    CHECK(log->n_metrics == 18);
    CHECK(log->n_hists == 6);
    CHECK(log->n_refs == 1);
    if (log->n_steps == 31) {
        CHECK(log->steps[0].step == 0 && log->steps[0].epoch == 0);
        CHECK(log->steps[30].step == 300 && log->steps[30].epoch == 3);
        CHECK_CLOSE(log->steps[0].loss, 2.75, 0, 0);
        CHECK_CLOSE(log->steps[10].loss, 2.5 * exp(-100 / 80.0) + 0.25, 1e-8, 0);
        CHECK_CLOSE(log->steps[10].lr, 0.001, 0, 0);
    }
    if (log->n_evals == 6) {
        CHECK(log->evals[1].step == 100);
        CHECK_STR(log->evals[1].label, "student");
        CHECK_CLOSE(log->evals[1].acc, 0.6 + 0.25 * (1 - exp(-1.0)), 1e-8, 0);
    }
    if (log->n_phases == 5) {
        CHECK(log->phases[3].step == 200 && log->phases[3].bits == 2);
        CHECK_STR(log->phases[3].layer, "*");
        CHECK_STR(log->phases[3].spec, "ternary");
    }
    if (log->n_metrics == 18) {
        const bg_trainlog_metrics_rec *m = &log->metrics[0];   // step 50, fc1, int8
        CHECK(m->step == 50);
        CHECK_STR(m->layer, "fc1");
        CHECK_CLOSE(m->w_sqnr_db, 40.5, 0, 0);
        CHECK_CLOSE(m->a_sqnr_db, 35, 0, 0);
        CHECK(isnan(m->zero_frac) && isnan(m->flip_frac));
        CHECK(isinf(log->metrics[2].a_sqnr_db) && log->metrics[2].a_sqnr_db > 0);   // fc3 "inf"
        const bg_trainlog_metrics_rec *t = &log->metrics[15];   // step 300, fc1, ternary
        CHECK(t->step == 300);
        CHECK_CLOSE(t->zero_frac, 0.4, 1e-8, 0);
        CHECK_CLOSE(t->flip_frac, 0.01, 1e-8, 0);
    }
    if (log->n_hists == 6) {
        const bg_trainlog_hist_rec *h = &log->hists[4];   // step 300, fc1, ternary
        CHECK(h->step == 300);
        CHECK_STR(h->layer, "fc1");
        CHECK(h->n_bins == 60 && h->n_levels == 3 && h->n_thresholds == 2);
        int64_t total = 0;
        for (int b = 0; b < h->n_bins; b++) total += h->counts[b];
        CHECK(total == 2000);
        CHECK(h->n_levels == 3 && h->levels[1] == 0 && h->levels[0] == -h->levels[2]);
        CHECK(h->n_thresholds == 2 && bg_test_close(h->thresholds[1], h->levels[2] / 2, 1e-7, 0));
        CHECK(h->lo < h->levels[0] && h->hi > h->levels[2]);
        CHECK(log->hists[0].n_levels == 0);   // int8: none passed
    }
    if (log->n_refs == 1) {
        CHECK_STR(log->refs[0].label, "teacher");
        CHECK_STR(log->refs[0].metric, "acc");
        CHECK_CLOSE(log->refs[0].value, 0.875, 0, 0);
    }

    // each figure: size, and data colors inside the plot areas
    struct {
        const char *file;
        bg_status (*draw)(const bg_trainlog *, const char *);
        int w, h;
        int x0, y0, x1, y1;    /* a plot area */
        uint32_t col;          /* a data color drawn there */
        int64_t min_pixels;
    } figs[] = {
        {"training.png", bg_plot_training, 1000, 720, 110, 80, 970, 330, 0x1f77b4, 300},   // loss curve
        {"training.png", bg_plot_training, 1000, 720, 110, 400, 970, 650, 0xff7f0e, 300},  // student acc
        {"weights.png", bg_plot_weights, 3 * 360 + 40, 2 * 250 + 60, 82, 90, 386, 268, 0x8fb3d9, 2000},  // bars
        {"weights.png", bg_plot_weights, 3 * 360 + 40, 2 * 250 + 60, 800, 90, 1106, 268, 0xd62728, 200},  // levels
        {"ternary.png", bg_plot_ternary, 1000, 720, 110, 80, 970, 330, 0x1f77b4, 100},     // fc1 zeros
        {"ternary.png", bg_plot_ternary, 1000, 720, 110, 400, 970, 650, 0xff7f0e, 100},    // fc2 flips
        {"sqnr.png", bg_plot_sqnr, 1000, 720, 110, 80, 740, 310, 0xd62728, 1000},          // ternary bars
        {"sqnr.png", bg_plot_sqnr, 1000, 720, 110, 400, 740, 630, 0x1f77b4, 1000},         // int8 bars
    };
    for (size_t k = 0; k < sizeof figs / sizeof figs[0]; k++) {
        char out[600];
        path_in(out, sizeof out, figs[k].file);
        bg_status s = figs[k].draw(log, out);
        CHECK_MSG(s == BG_OK, "%s: %s", figs[k].file, bg_last_error());
        int w = 0, h = 0;
        uint8_t *px = read_png(out, &w, &h);
        CHECK_MSG(px != NULL, "%s does not decode", figs[k].file);
        if (!px) continue;
        CHECK_MSG(w == figs[k].w && h == figs[k].h, "%s: %dx%d, want %dx%d", figs[k].file, w, h, figs[k].w, figs[k].h);
        if (w == figs[k].w && h == figs[k].h) {
            int64_t n = count_color(px, w, figs[k].x0, figs[k].y0, figs[k].x1, figs[k].y1, figs[k].col);
            CHECK_MSG(n >= figs[k].min_pixels, "%s: %lld pixels of #%06x in the plot area, want >= %lld", figs[k].file,
                      (long long)n, figs[k].col, (long long)figs[k].min_pixels);
            // the title strip is not blank either
            CHECK_MSG(count_not_white(px, w, 0, 0, w - 1, 30) > 200, "%s: no title", figs[k].file);
        }
        free(px);
    }

    // all figures into a new nested folder
    char sub[600];
    path_in(sub, sizeof sub, "all/figs");
    bg_plot_files files;
    CHECK_MSG(bg_plot_all(log, sub, &files) == BG_OK, "%s", bg_last_error());
    CHECK(files.n == 4);
    const char *want[4] = {"training.png", "weights.png", "ternary.png", "sqnr.png"};
    for (int k = 0; k < files.n && k < 4; k++) {
        char p[700];
        snprintf(p, sizeof p, "%s/%s", sub, want[k]);
        CHECK_STR(files.path[k], p);
        struct stat st;
        CHECK_MSG(stat(p, &st) == 0 && st.st_size > 1000, "%s missing or tiny", p);
    }
    // nothing else (no temporary files) left in the folder
    DIR *d = opendir(sub);
    int entries = 0;
    for (struct dirent *e; d && (e = readdir(d));) entries += e->d_name[0] != '.';
    if (d) closedir(d);
    CHECK(entries == 4);
    bg_trainlog_free(log);
}

static void test_text_log(void) {
    const char *text =
        "{\"type\":\"meta\",\"title\":\"text log\"}\n"
        "\n"
        "{\"type\":\"phase\",\"step\":0,\"layer\":\"*\",\"spec\":\"fp32\",\"bits\":0}\r\n"
        "{\"type\":\"step\",\"step\":1,\"loss\":2.25}\n"
        "{\"type\":\"step\",\"step\":2,\"epoch\":0,\"loss\":null,\"lr\":0.5,\"extra\":\"ignored\"}\n"
        "  {\"type\":\"eval\",\"step\":2,\"acc\":0.125}  \n"
        "{\"type\":\"metrics\",\"step\":2,\"layer\":\"0\",\"w_sqnr\":\"inf\",\"a_sqnr\":\"-inf\",\"zero_frac\":0.5}\n"
        "{\"type\":\"hist\",\"step\":2,\"layer\":\"0\",\"lo\":-1,\"hi\":1,\"counts\":[1,2,3,4]}\n"
        "{\"type\":\"ref\",\"label\":\"base\",\"metric\":\"loss\",\"value\":1.5}";   // no final newline
    bg_trainlog *log = NULL;
    CHECK(bg_trainlog_parse(text, strlen(text), "mem", &log) == BG_OK);
    if (!log) {
        fprintf(stderr, "%s\n", bg_last_error());
        return;
    }
    CHECK_STR(log->title, "text log");
    CHECK(log->n_steps == 2 && log->n_evals == 1 && log->n_phases == 1 && log->n_metrics == 1 && log->n_hists == 1 &&
          log->n_refs == 1);
    if (log->n_steps == 2) {
        CHECK(log->steps[0].step == 1 && log->steps[0].epoch == -1 && isnan(log->steps[0].lr));
        CHECK_CLOSE(log->steps[0].loss, 2.25, 0, 0);
        CHECK(isnan(log->steps[1].loss) && log->steps[1].lr == 0.5 && log->steps[1].epoch == 0);
    }
    if (log->n_evals == 1) {
        CHECK(log->evals[0].acc == 0.125);
        CHECK_STR(log->evals[0].label, "");
    }
    if (log->n_phases == 1) CHECK(log->phases[0].bits == 0 && !strcmp(log->phases[0].spec, "fp32"));
    if (log->n_metrics == 1) {
        CHECK(isinf(log->metrics[0].w_sqnr_db) && log->metrics[0].w_sqnr_db > 0);
        CHECK(isinf(log->metrics[0].a_sqnr_db) && log->metrics[0].a_sqnr_db < 0);
        CHECK(log->metrics[0].zero_frac == 0.5 && isnan(log->metrics[0].flip_frac));
    }
    if (log->n_hists == 1) {
        const bg_trainlog_hist_rec *h = &log->hists[0];
        CHECK(h->n_bins == 4 && h->counts[3] == 4 && h->lo == -1 && h->hi == 1 && h->n_levels == 0 &&
              h->n_thresholds == 0 && h->levels == NULL);
    }
    if (log->n_refs == 1) CHECK(!strcmp(log->refs[0].metric, "loss") && log->refs[0].value == 1.5);

    // this log also draws (a NaN loss, an infinite SQNR, no levels)
    char out[600];
    path_in(out, sizeof out, "text");
    bg_plot_files files;
    CHECK_MSG(bg_plot_all(log, out, &files) == BG_OK, "%s", bg_last_error());
    CHECK(files.n == 4);
    int w = 0, h = 0;
    uint8_t *px = files.n > 0 ? read_png(files.path[0], &w, &h) : NULL;
    CHECK(px && w == 1000 && h == 720);
    if (px && w == 1000 && h == 720) {
        CHECK(count_color(px, w, 110, 400, 970, 650, 0xff7f0e) >= 40);   // the one eval point (7x7)
        CHECK(count_not_white(px, w, 110, 80, 970, 330) > 1000);         // fp32 band, ref line
    }
    free(px);
    bg_trainlog_free(log);
}

static void check_bad(const char *name, const char *text, bg_status want_status, const char *want) {
    char path[600], msg[900];
    path_in(path, sizeof path, name);
    write_text(path, text);
    bg_trainlog *log = (bg_trainlog *)1;
    bg_status s = bg_trainlog_read(path, &log);
    CHECK_MSG(s == want_status, "%s: status %d, want %d", name, (int)s, (int)want_status);
    CHECK(log == NULL);
    snprintf(msg, sizeof msg, "trainlog: %s: %s", path, want);
    CHECK_STR(bg_last_error(), msg);
}

static void test_bad_logs(void) {
    const char *ok1 = "{\"type\":\"step\",\"step\":1,\"loss\":1}\n";
    char buf[1024];
    check_bad("empty.jsonl", "", BG_ERR_FORMAT, "empty file (no records)");
    check_bad("blank.jsonl", "\n  \n\n", BG_ERR_FORMAT, "empty file (no records)");
    snprintf(buf, sizeof buf, "%s%s%s", ok1, ok1, "{\"type\":\"step\",\"step\":3,\"loss\":\"abc\"}\n");
    check_bad("nonnum.jsonl", buf, BG_ERR_FORMAT, "line 3: \"loss\" is not a number");
    snprintf(buf, sizeof buf, "%s\n%s", ok1, "{\"type\":\"eval\",\"acc\":0.5}\n");
    check_bad("missing.jsonl", buf, BG_ERR_FORMAT, "line 3: missing field \"step\"");
    check_bad("notint.jsonl", "{\"type\":\"step\",\"step\":1.5,\"loss\":1}\n", BG_ERR_FORMAT,
              "line 1: \"step\" is not an integer");
    check_bad("type.jsonl", "{\"step\":1}\n", BG_ERR_FORMAT, "line 1: missing field \"type\"");
    check_bad("unknown.jsonl", "{\"type\":\"stp\",\"step\":1}\n", BG_ERR_FORMAT,
              "line 1: unknown record type \"stp\" (want step, eval, phase, metrics, hist, ref or meta)");
    check_bad("array.jsonl", "[1,2]\n", BG_ERR_FORMAT, "line 1: not a JSON object");
    check_bad("counts.jsonl",
              "{\"type\":\"hist\",\"step\":1,\"layer\":\"a\",\"lo\":0,\"hi\":1,\"counts\":[1,\"x\"]}\n",
              BG_ERR_FORMAT, "line 1: \"counts[1]\" is not a number");
    check_bad("range.jsonl", "{\"type\":\"hist\",\"step\":1,\"layer\":\"a\",\"lo\":1,\"hi\":1,\"counts\":[1]}\n",
              BG_ERR_FORMAT, "line 1: \"lo\" and \"hi\" must be finite with lo < hi: 1, 1");
    check_bad("layer.jsonl", "{\"type\":\"metrics\",\"step\":1,\"layer\":3,\"w_sqnr\":1,\"a_sqnr\":1}\n", BG_ERR_FORMAT,
              "line 1: \"layer\" is not a string");
    // invalid JSON: the message starts with the line
    char path[600];
    path_in(path, sizeof path, "json.jsonl");
    write_text(path, "{\"type\":\"step\",\"step\":1,\"loss\":1}\n{\"type\":\"step\",\n");
    bg_trainlog *log;
    CHECK(bg_trainlog_read(path, &log) == BG_ERR_FORMAT);
    char prefix[700];
    snprintf(prefix, sizeof prefix, "trainlog: %s: line 2: not valid JSON: ", path);
    CHECK_MSG(strncmp(bg_last_error(), prefix, strlen(prefix)) == 0, "got \"%s\"", bg_last_error());
    // a missing file
    path_in(path, sizeof path, "absent.jsonl");
    CHECK(bg_trainlog_read(path, &log) == BG_ERR_IO && log == NULL);

    // figures without their data
    bg_trainlog empty = {0};
    path_in(path, sizeof path, "none.png");
    CHECK(bg_plot_weights(&empty, path) == BG_ERR_ARG);
    CHECK_STR(bg_last_error(), "plot: weights: the log has no hist records");
    CHECK(bg_plot_all(&empty, dir, NULL) == BG_ERR_ARG);
    CHECK(access(path, F_OK) != 0);
    // writer argument errors
    bg_trainlog_writer *w;
    path_in(path, sizeof path, "w.jsonl");
    CHECK(bg_trainlog_open(path, &w) == BG_OK);
    CHECK(bg_trainlog_ref(w, "x", "accuracy", 1) == BG_ERR_ARG);
    CHECK(bg_trainlog_hist(w, 0, "a", NULL, 0, 0, NULL, 0) == BG_ERR_ARG);
    CHECK(bg_trainlog_close(w) == BG_OK);
    CHECK(bg_trainlog_close(NULL) == BG_OK);
    path_in(path, sizeof path, "no/such/dir/w.jsonl");
    CHECK(bg_trainlog_open(path, &w) == BG_ERR_IO && w == NULL);
}

/* A metrics record at the step of a phase change belongs to the phase before
 * it (steps done): int8 gets the 30 dB record at step 10, ternary the 5 dB one
 * at 20, so both the blue (int8) and the red (ternary) bars are there. */
static void test_phase_boundary(void) {
    const char *text = "{\"type\":\"phase\",\"step\":0,\"layer\":\"*\",\"spec\":\"int8\"}\n"
                       "{\"type\":\"metrics\",\"step\":10,\"layer\":\"a\",\"w_sqnr\":30,\"a_sqnr\":30}\n"
                       "{\"type\":\"phase\",\"step\":10,\"layer\":\"*\",\"spec\":\"ternary\"}\n"
                       "{\"type\":\"metrics\",\"step\":20,\"layer\":\"a\",\"w_sqnr\":5,\"a_sqnr\":30}\n";
    bg_trainlog *log = NULL;
    CHECK(bg_trainlog_parse(text, strlen(text), "boundary", &log) == BG_OK);
    if (!log) return;
    char path[600];
    path_in(path, sizeof path, "boundary_sqnr.png");
    CHECK_MSG(bg_plot_sqnr(log, path) == BG_OK, "%s", bg_last_error());
    int w = 0, h = 0;
    uint8_t *px = read_png(path, &w, &h);
    CHECK(px && w == 1000 && h == 720);
    if (px && w == 1000 && h == 720) {
        int64_t blue = count_color(px, w, 110, 80, 740, 310, 0x1f77b4), red = count_color(px, w, 110, 80, 740, 310, 0xd62728);
        CHECK_MSG(blue > 4 * red && red > 1000, "int8 bar %lld pixels, ternary bar %lld", (long long)blue, (long long)red);
    }
    free(px);
    bg_trainlog_free(log);
}

/* Appending (a resumed run) after a crash that tore the last line. */
static void test_append(void) {
    char path[600];
    path_in(path, sizeof path, "append.jsonl");
    write_text(path, "{\"type\":\"step\",\"step\":1,\"loss\":1}\n{\"type\":\"step\",\"step\":2,\"loss\":0.5}\n{\"type\":\"st");
    bg_trainlog *log = NULL;
    CHECK(bg_trainlog_read(path, &log) == BG_ERR_FORMAT);   // the torn line
    bg_trainlog_writer *w;
    CHECK(bg_trainlog_append(path, &w) == BG_OK);
    CHECK(bg_trainlog_step(w, 3, -1, 0.25, NAN) == BG_OK);
    CHECK(bg_trainlog_close(w) == BG_OK);
    CHECK_MSG(bg_trainlog_read(path, &log) == BG_OK, "%s", bg_last_error());
    CHECK(log && log->n_steps == 3 && log->steps[2].step == 3 && log->steps[2].loss == 0.25 &&
          log->steps[1].loss == 0.5);
    bg_trainlog_free(log);
    // a missing file is created; a file with only a torn line becomes empty
    path_in(path, sizeof path, "append2.jsonl");
    write_text(path, "{\"type\"");
    CHECK(bg_trainlog_append(path, &w) == BG_OK);
    CHECK(bg_trainlog_eval(w, 4, "x", 0.5) == BG_OK);
    CHECK(bg_trainlog_close(w) == BG_OK);
    CHECK(bg_trainlog_read(path, &log) == BG_OK && log && log->n_evals == 1 && log->n_steps == 0);
    bg_trainlog_free(log);
    path_in(path, sizeof path, "append3.jsonl");
    CHECK(bg_trainlog_append(path, &w) == BG_OK);
    CHECK(bg_trainlog_close(w) == BG_OK);
    CHECK(access(path, F_OK) == 0);
}

/* Negative SQNR bars hang from 0 (the axis includes 0); no phase records:
 * one "end" group in the sixth palette color. */
static void test_negative_sqnr(void) {
    const char *text = "{\"type\":\"metrics\",\"step\":3,\"layer\":\"a\",\"w_sqnr\":-5,\"a_sqnr\":-50}\n";
    bg_trainlog *log = NULL;
    CHECK(bg_trainlog_parse(text, strlen(text), "neg", &log) == BG_OK);
    if (!log) return;
    char path[600];
    path_in(path, sizeof path, "neg_sqnr.png");
    CHECK_MSG(bg_plot_sqnr(log, path) == BG_OK, "%s", bg_last_error());
    int w = 0, h = 0;
    uint8_t *px = read_png(path, &w, &h);
    CHECK(px && w == 1000 && h == 720);
    if (px && w == 1000 && h == 720) {
        // bars of 5/6 (weights) and 50/60 (activations) of the panel height
        CHECK(count_color(px, w, 110, 80, 740, 310, 0x8c564b) > 50000);
        CHECK(count_color(px, w, 110, 400, 740, 630, 0x8c564b) > 50000);
        CHECK(count_color(px, w, 110, 402, 740, 425, 0x8c564b) == 0);   // above the 0 line (axis -60..10)
    }
    free(px);
    bg_trainlog_free(log);
}

/* A crashed writer still leaves complete lines: read while still open. */
static void test_flush(void) {
    char path[600];
    path_in(path, sizeof path, "flush.jsonl");
    bg_trainlog_writer *w;
    CHECK(bg_trainlog_open(path, &w) == BG_OK);
    CHECK(bg_trainlog_step(w, 7, -1, 0.5, NAN) == BG_OK);
    bg_trainlog *log = NULL;
    CHECK(bg_trainlog_read(path, &log) == BG_OK);
    CHECK(log && log->n_steps == 1 && log->steps[0].step == 7 && log->steps[0].loss == 0.5);
    bg_trainlog_free(log);
    bg_trainlog_close(w);
}

/* bg_trainlog_model_hists and bg_trainlog_qat_metrics on a real model: a
 * QLinear with a fixed int8 grid of 0.25 and a BitLinear (absmean ternary). */
static void test_model_records(void) {
    bg_rng rng;
    bg_rng_seed(&rng, 1);
    bg_quant_spec ws, as;
    CHECK(bg_quant_spec_parse("int8:scale=0.25", &ws) == BG_OK);
    CHECK(bg_quant_spec_parse("int8:scale=0.5", &as) == BG_OK);
    bg_module *net = bg_sequential_new(3, (bg_module *[]){
        bg_qlinear_new(4, 2, false, &ws, &as, &rng), bg_relu_new(), bg_bitlinear_new(2, 4, &rng)});
    CHECK(net != NULL);
    if (!net) return;
    float w0[8] = {0.25f, -0.5f, 1.0f, 0.0f, -1.25f, 0.75f, 0.5f, 2.0f};
    memcpy(bg_module_find_param(net, "0.weight")->data, w0, sizeof w0);
    float w2[8] = {0.8f, -0.8f, 0.0f, 0.4f, 0.8f, 0.02f, -0.8f, 0.4f};   // absmean 4.02/8
    memcpy(bg_module_find_param(net, "2.weight")->data, w2, sizeof w2);
    bg_model_track_quant(net, true);
    bg_ctx *ctx = bg_ctx_new(0);
    float xv[4] = {0.5f, 1.0f, 0.3f, -0.2f};
    bg_tensor *x = bg_from_data(ctx, BG_DTYPE_F32, BG_SHAPE(1, 4), xv);
    CHECK(bg_module_forward(ctx, net, x) != NULL);

    char path[600];
    path_in(path, sizeof path, "model.jsonl");
    bg_trainlog_writer *w;
    CHECK(bg_trainlog_open(path, &w) == BG_OK);
    CHECK_MSG(bg_trainlog_model_hists(w, 5, net, 10, true) == BG_OK, "%s", bg_last_error());
    bg_qat_layer_metrics m[4];
    int n = bg_qat_metrics(net, m, 4);
    CHECK(n == 2);
    CHECK(bg_trainlog_qat_metrics(w, 5, m, n) == BG_OK);
    CHECK(bg_trainlog_close(w) == BG_OK);
    bg_trainlog *log = NULL;
    CHECK_MSG(bg_trainlog_read(path, &log) == BG_OK, "%s", bg_last_error());
    if (log) {
        CHECK(log->n_hists == 2 && log->n_metrics == 2);
        if (log->n_hists == 2) {
            const bg_trainlog_hist_rec *h = &log->hists[0];
            CHECK_STR(h->layer, "0");
            CHECK(h->n_bins == 10 && h->n_levels == 256 && h->n_thresholds == 255);
            if (h->n_levels == 256) {
                CHECK_CLOSE(h->levels[0], -32, 0, 0);
                CHECK_CLOSE(h->levels[255], 31.75, 0, 0);
                CHECK_CLOSE(h->thresholds[128], 0.125, 0, 0);
            }
            CHECK(h->lo == -32 && h->hi == 31.75);   // the levels widen the range
            int64_t total = 0;
            for (int b = 0; b < h->n_bins; b++) total += h->counts[b];
            CHECK(total == 8);
            h = &log->hists[1];
            CHECK_STR(h->layer, "2");
            CHECK(h->n_levels == 3 && h->n_thresholds == 2);
            if (h->n_levels == 3) {
                CHECK_CLOSE(h->levels[2], 4.02 / 8, 1e-6, 0);
                CHECK(h->levels[1] == 0 && h->levels[0] == -h->levels[2]);
                CHECK_CLOSE(h->thresholds[1], 4.02 / 16, 1e-6, 0);
            }
        }
        if (log->n_metrics == 2) {
            CHECK_STR(log->metrics[0].layer, "0");
            CHECK(isinf(log->metrics[0].w_sqnr_db) && isnan(log->metrics[0].zero_frac));
            CHECK_STR(log->metrics[1].layer, "2");
            CHECK_CLOSE(log->metrics[1].zero_frac, 0.25, 0, 0);
            CHECK_CLOSE(log->metrics[1].flip_frac, 0, 0, 0);
            CHECK(isfinite(log->metrics[1].w_sqnr_db) && isfinite(log->metrics[1].a_sqnr_db));
        }
        path_in(path, sizeof path, "model_weights.png");
        CHECK_MSG(bg_plot_weights(log, path) == BG_OK, "%s", bg_last_error());
        bg_trainlog_free(log);
    }
    bg_ctx_free(ctx);
    bg_module_free(net);
}

static void rm_tree(const char *p) {
    struct stat st;
    if (lstat(p, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(p);
        for (struct dirent *e; d && (e = readdir(d));) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char sub[1024];
            snprintf(sub, sizeof sub, "%s/%s", p, e->d_name);
            rm_tree(sub);
        }
        if (d) closedir(d);
        rmdir(p);
    } else {
        unlink(p);
    }
}

int main(void) {
    const char *keep = getenv("BG_PLOT_TEST_OUT");
    if (keep && *keep) {
        snprintf(dir, sizeof dir, "%s", keep);
        mkdir(dir, 0755);
    } else {
        snprintf(dir, sizeof dir, "/tmp/bg_test_plot_XXXXXX");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return 1;
        }
    }
    test_writer_roundtrip();
    test_text_log();
    test_bad_logs();
    test_flush();
    test_negative_sqnr();
    test_append();
    test_phase_boundary();
    test_model_records();
    if (!(keep && *keep)) rm_tree(dir);
    return bg_test_finish();
}
