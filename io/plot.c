/* plot.c — the figures of a training log (io/io.h): a small RGB raster canvas
 * (clipped lines, rectangles, a built-in 5x7 font, axes with nice ticks,
 * legends), four figures, and an atomic PNG writer through libpng.
 * Calls tensor/ (errors), the trainlog structs, libpng and POSIX only. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>   /* before png.h, which needs jmp_buf */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <png.h>

#include "io/io.h"

#include "io/plot_font.inc"

// ---------------------------------------------------------------------------
// canvas

typedef uint32_t rgb;   /* 0xRRGGBB */

enum {
    COL_BG = 0xffffff,
    COL_TEXT = 0x202020,
    COL_AXIS = 0x404040,
    COL_GRID = 0xe4e4e4,
    COL_MUTED = 0x808080,
};

static const rgb palette[] = {0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd,
                              0x8c564b, 0xe377c2, 0x7f7f7f, 0xbcbd22, 0x17becf};
#define N_PALETTE ((int)(sizeof palette / sizeof palette[0]))

/* Text sizes: each font pixel becomes an s x s block. */
enum { TICK_S = 1, LABEL_S = 2, TITLE_S = 2 };

typedef struct canvas {
    int w, h;
    uint8_t *px;             /* [h][w][3] */
    int cx0, cy0, cx1, cy1;  /* clip rectangle, inclusive */
} canvas;

static bool canvas_init(canvas *c, int w, int h) {
    c->w = w;
    c->h = h;
    c->px = malloc((size_t)w * (size_t)h * 3);
    if (!c->px) return false;
    memset(c->px, 0xff, (size_t)w * (size_t)h * 3);
    c->cx0 = 0, c->cy0 = 0, c->cx1 = w - 1, c->cy1 = h - 1;
    return true;
}

static void clip_reset(canvas *c) { c->cx0 = 0, c->cy0 = 0, c->cx1 = c->w - 1, c->cy1 = c->h - 1; }

static void clip_set(canvas *c, int x0, int y0, int x1, int y1) {
    c->cx0 = x0 < 0 ? 0 : x0;
    c->cy0 = y0 < 0 ? 0 : y0;
    c->cx1 = x1 >= c->w ? c->w - 1 : x1;
    c->cy1 = y1 >= c->h ? c->h - 1 : y1;
}

static inline void pset(canvas *c, int x, int y, rgb col) {
    if (x < c->cx0 || x > c->cx1 || y < c->cy0 || y > c->cy1) return;
    uint8_t *p = c->px + ((size_t)y * (size_t)c->w + (size_t)x) * 3;
    p[0] = (uint8_t)(col >> 16);
    p[1] = (uint8_t)(col >> 8);
    p[2] = (uint8_t)col;
}

static void fill_rect(canvas *c, int x0, int y0, int x1, int y1, rgb col) {
    if (x0 > x1) { int t = x0; x0 = x1; x1 = t; }
    if (y0 > y1) { int t = y0; y0 = y1; y1 = t; }
    if (x0 < c->cx0) x0 = c->cx0;
    if (y0 < c->cy0) y0 = c->cy0;
    if (x1 > c->cx1) x1 = c->cx1;
    if (y1 > c->cy1) y1 = c->cy1;
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) pset(c, x, y, col);
}

static void rect_outline(canvas *c, int x0, int y0, int x1, int y1, rgb col) {
    fill_rect(c, x0, y0, x1, y0, col);
    fill_rect(c, x0, y1, x1, y1, col);
    fill_rect(c, x0, y0, x0, y1, col);
    fill_rect(c, x1, y0, x1, y1, col);
}

/* Liang-Barsky: clips the segment to the clip rectangle (with a margin for
 * thick lines); false when nothing is left. Works in double, so far-away
 * points (a huge loss) cannot overflow the integer step below. */
static bool clip_segment(const canvas *c, double *x0, double *y0, double *x1, double *y1) {
    double xmin = c->cx0 - 2, xmax = c->cx1 + 2, ymin = c->cy0 - 2, ymax = c->cy1 + 2;
    double dx = *x1 - *x0, dy = *y1 - *y0, t0 = 0, t1 = 1;
    double p[4] = {-dx, dx, -dy, dy}, q[4] = {*x0 - xmin, xmax - *x0, *y0 - ymin, ymax - *y0};
    for (int i = 0; i < 4; i++) {
        if (p[i] == 0) {
            if (q[i] < 0) return false;
            continue;
        }
        double r = q[i] / p[i];
        if (p[i] < 0) {
            if (r > t1) return false;
            if (r > t0) t0 = r;
        } else {
            if (r < t0) return false;
            if (r < t1) t1 = r;
        }
    }
    double ax = *x0 + t0 * dx, ay = *y0 + t0 * dy, bx = *x0 + t1 * dx, by = *y0 + t1 * dy;
    *x0 = ax, *y0 = ay, *x1 = bx, *y1 = by;
    return true;
}

/* A line of the given width (1..4 px); dash > 0 draws dash pixels on, dash off. */
static void line(canvas *c, double fx0, double fy0, double fx1, double fy1, rgb col, int width, int dash) {
    if (!(isfinite(fx0) && isfinite(fy0) && isfinite(fx1) && isfinite(fy1))) return;
    if (!clip_segment(c, &fx0, &fy0, &fx1, &fy1)) return;
    int x0 = (int)lround(fx0), y0 = (int)lround(fy0), x1 = (int)lround(fx1), y1 = (int)lround(fy1);
    int dx = abs(x1 - x0), sx = x0 < x1 ? 1 : -1, dy = -abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
    int err = dx + dy, k = 0, off = -(width - 1) / 2;
    for (;;) {
        if (dash <= 0 || (k / dash) % 2 == 0)
            for (int a = 0; a < width; a++)
                for (int b = 0; b < width; b++) pset(c, x0 + off + a, y0 + off + b, col);
        k++;
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * err;
        if (e2 >= dy) err += dy, x0 += sx;
        if (e2 <= dx) err += dx, y0 += sy;
    }
}

static void glyph(canvas *c, int x, int y, char ch, rgb col, int s, bool vertical) {
    unsigned char u = (unsigned char)ch;
    if (u < 32 || u > 126) u = '?';
    const unsigned char *g = font5x7[u - 32];
    for (int r = 0; r < 9; r++)
        for (int k = 0; k < 5; k++)
            if (g[r] & (0x10 >> k)) {
                if (vertical)   // rotated 90 degrees counter-clockwise: reads bottom to top
                    fill_rect(c, x + r * s, y - (k + 1) * s + 1, x + r * s + s - 1, y - k * s, col);
                else
                    fill_rect(c, x + k * s, y + r * s, x + k * s + s - 1, y + r * s + s - 1, col);
            }
}

static int text_width(const char *s, int scale) {
    int n = (int)strlen(s);
    return n ? (6 * n - 1) * scale : 0;
}

static int text_height(int scale) { return 7 * scale; }

/* align: 0 left, 1 centre, 2 right of x; y is the top of the text. */
static void text(canvas *c, int x, int y, const char *s, rgb col, int scale, int align) {
    int w = text_width(s, scale);
    if (align == 1) x -= w / 2;
    else if (align == 2) x -= w;
    for (; *s; s++, x += 6 * scale) glyph(c, x, y, *s, col, scale, false);
}

/* Vertical text reading bottom to top, centred on (x, ymid); x is its left. */
static void text_vertical(canvas *c, int x, int ymid, const char *s, rgb col, int scale) {
    int y = ymid + text_width(s, scale) / 2;
    for (; *s; s++, y -= 6 * scale) glyph(c, x, y, *s, col, scale, true);
}

/* Copies s into out (cap bytes), cutting it to at most max_px pixels wide
 * with a trailing "..". */
static void fit_text(char *out, size_t cap, const char *s, int max_px, int scale) {
    snprintf(out, cap, "%s", s);
    int max_chars = (max_px / scale + 1) / 6;
    if ((int)strlen(out) > max_chars) {
        if (max_chars < 3) {
            out[max_chars > 0 ? max_chars : 0] = '\0';
        } else {
            out[max_chars - 2] = '.';
            out[max_chars - 1] = '.';
            out[max_chars] = '\0';
        }
    }
}

// ---------------------------------------------------------------------------
// panels: a plot area with data ranges, nice ticks, axes, legends

typedef struct panel {
    int x0, y0, x1, y1;      /* plot area in pixels, inclusive */
    double xlo, xhi, ylo, yhi;
    double xstep, ystep;     /* tick spacing (0: no ticks on that axis) */
} panel;

static double px_x(const panel *p, double x) { return p->x0 + (x - p->xlo) / (p->xhi - p->xlo) * (p->x1 - p->x0); }
static double px_y(const panel *p, double y) { return p->y1 - (y - p->ylo) / (p->yhi - p->ylo) * (p->y1 - p->y0); }

/* 1, 2 or 5 times a power of ten, near range / target. */
static double nice_step(double range, int target) {
    double raw = range / target;
    double mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

/* Widens [*lo,*hi] to multiples of a nice step (returned); pad adds that
 * fraction of the range on both sides first (0 keeps data at the edges). */
static double nice_range(double *lo, double *hi, int target, double pad) {
    if (!(isfinite(*lo) && isfinite(*hi))) *lo = 0, *hi = 1;
    if (*hi < *lo) { double t = *lo; *lo = *hi; *hi = t; }
    if (*hi - *lo < 1e-12 * (fabs(*lo) + fabs(*hi)) || *hi == *lo) {
        double d = *lo != 0 ? fabs(*lo) * 0.1 : 1;
        *lo -= d;
        *hi += d;
    }
    double r = *hi - *lo;
    *lo -= pad * r;
    *hi += pad * r;
    double step = nice_step(*hi - *lo, target);
    *lo = floor(*lo / step + 1e-9) * step;
    *hi = ceil(*hi / step - 1e-9) * step;
    return step;
}

static void format_tick(char *out, size_t cap, double v, double step) {
    if (fabs(v) < step * 1e-6) v = 0;   // no "-0" or "1e-17"
    if (fabs(v) >= 1e6 || (fabs(v) > 0 && fabs(v) < 1e-4)) {
        snprintf(out, cap, "%.3g", v);
        return;
    }
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (dec > 6) dec = 6;
    snprintf(out, cap, "%.*f", dec, v);
}

static void format_step(char *out, size_t cap, double v) {
    if (fabs(v) >= 10000) snprintf(out, cap, "%.0fk", v / 1000);
    else snprintf(out, cap, "%.0f", v);
}

/* Grid, frame, ticks with labels, axis labels and the panel title.
 * x_as_steps: tick labels like "12k" for step counts. */
static void draw_axes(canvas *c, const panel *p, const char *title, const char *xlabel, const char *ylabel,
                      bool x_as_steps) {
    clip_reset(c);
    char buf[64];
    if (p->ystep > 0) {
        int n = (int)floor((p->yhi - p->ylo) / p->ystep + 1e-6);
        for (int i = 0; i <= n && i <= 100; i++) {
            double v = p->ylo + i * p->ystep;
            int y = (int)lround(px_y(p, v));
            fill_rect(c, p->x0 - 5, y, p->x0 - 1, y, COL_AXIS);
            format_tick(buf, sizeof buf, v, p->ystep);
            text(c, p->x0 - 8, y - text_height(TICK_S) / 2, buf, COL_TEXT, TICK_S, 2);
        }
    }
    if (p->xstep > 0) {
        int n = (int)floor((p->xhi - p->xlo) / p->xstep + 1e-6);
        for (int i = 0; i <= n && i <= 100; i++) {
            double v = p->xlo + i * p->xstep;
            int x = (int)lround(px_x(p, v));
            fill_rect(c, x, p->y1 + 1, x, p->y1 + 5, COL_AXIS);
            if (x_as_steps) format_step(buf, sizeof buf, v);
            else format_tick(buf, sizeof buf, v, p->xstep);
            text(c, x, p->y1 + 8, buf, COL_TEXT, TICK_S, 1);
        }
    }
    rect_outline(c, p->x0 - 1, p->y0 - 1, p->x1 + 1, p->y1 + 1, COL_AXIS);
    if (title && *title) {
        char t[256];
        fit_text(t, sizeof t, title, p->x1 - p->x0, LABEL_S);
        text(c, (p->x0 + p->x1) / 2, p->y0 - text_height(LABEL_S) - 8, t, COL_TEXT, LABEL_S, 1);
    }
    if (xlabel && *xlabel)
        text(c, (p->x0 + p->x1) / 2, p->y1 + 8 + text_height(TICK_S) + 6, xlabel, COL_TEXT, LABEL_S, 1);
    if (ylabel && *ylabel) {
        // left of the widest tick label
        int widest = 0;
        if (p->ystep > 0) {
            int n = (int)floor((p->yhi - p->ylo) / p->ystep + 1e-6);
            for (int i = 0; i <= n && i <= 100; i++) {
                format_tick(buf, sizeof buf, p->ylo + i * p->ystep, p->ystep);
                int w = text_width(buf, TICK_S);
                if (w > widest) widest = w;
            }
        }
        text_vertical(c, p->x0 - 14 - widest - text_height(LABEL_S), (p->y0 + p->y1) / 2, ylabel, COL_TEXT, LABEL_S);
    }
}

/* Light horizontal grid lines at the y ticks (drawn before the data). */
static void draw_grid(canvas *c, const panel *p) {
    clip_set(c, p->x0, p->y0, p->x1, p->y1);
    if (p->ystep > 0) {
        int n = (int)floor((p->yhi - p->ylo) / p->ystep + 1e-6);
        for (int i = 1; i < n && i <= 100; i++) {
            int y = (int)lround(px_y(p, p->ylo + i * p->ystep));
            fill_rect(c, p->x0, y, p->x1, y, COL_GRID);
        }
    }
    clip_reset(c);
}

typedef struct legend_entry {
    const char *label;
    rgb col;
    int style;   /* 0 line, 1 dashed line, 2 filled box */
} legend_entry;

/* Pixels of the legend's colors (its series) inside [x0,x1]x[y0,y1]. */
static int64_t series_pixels(const canvas *c, const legend_entry *e, int n, int x0, int y0, int x1, int y1) {
    int64_t count = 0;
    for (int y = y0 < 0 ? 0 : y0; y <= y1 && y < c->h; y++)
        for (int x = x0 < 0 ? 0 : x0; x <= x1 && x < c->w; x++) {
            const uint8_t *q = c->px + ((size_t)y * (size_t)c->w + (size_t)x) * 3;
            rgb v = (rgb)q[0] << 16 | (rgb)q[1] << 8 | q[2];
            for (int i = 0; i < n; i++) count += v == e[i].col;
        }
    return count;
}

enum { LEGEND_AUTO = 0, LEGEND_OUTSIDE };

/* A boxed legend. LEGEND_AUTO: inside p, in whichever of the four corners
 * covers the fewest pixels of its series (top right on a tie), below the
 * phase names; LEGEND_OUTSIDE: right of the plot area. Draw it last. */
static void draw_legend(canvas *c, const panel *p, const legend_entry *e, int n, int where) {
    if (n <= 0) return;
    clip_reset(c);
    int s = TICK_S, lh = text_height(s) + 7, w = 0;
    for (int i = 0; i < n; i++) {
        int tw = text_width(e[i].label, s);
        if (tw > w) w = tw;
    }
    w += 40;
    int h = n * lh + 8;
    int x = p->x1 + 14, y = p->y0;
    if (where == LEGEND_AUTO) {
        int xs[4] = {p->x1 - w - 8, p->x0 + 8, p->x1 - w - 8, p->x0 + 8};
        int ys[4] = {p->y0 + 20, p->y0 + 20, p->y1 - h - 8, p->y1 - h - 8};
        int64_t best = -1;
        for (int k = 0; k < 4; k++) {
            int64_t cnt = series_pixels(c, e, n, xs[k], ys[k], xs[k] + w, ys[k] + h);
            if (best < 0 || cnt < best) best = cnt, x = xs[k], y = ys[k];
        }
    }
    fill_rect(c, x, y, x + w, y + h, COL_BG);
    rect_outline(c, x, y, x + w, y + h, 0xb0b0b0);
    for (int i = 0; i < n; i++) {
        int ly = y + 6 + i * lh, mid = ly + text_height(s) / 2;
        if (e[i].style == 2) fill_rect(c, x + 6, ly, x + 26, ly + text_height(s), e[i].col);
        else line(c, x + 6, mid, x + 26, mid, e[i].col, 2, e[i].style == 1 ? 4 : 0);
        text(c, x + 32, ly, e[i].label, COL_TEXT, s, 0);
    }
}

static void draw_figure_title(canvas *c, const char *title, const char *subtitle) {
    char t[256];
    // a long title: the small font before cutting it
    int ts = text_width(title, TITLE_S) <= c->w - 20 ? TITLE_S : TICK_S;
    fit_text(t, sizeof t, title, c->w - 20, ts);
    text(c, c->w / 2, 12 + (text_height(TITLE_S) - text_height(ts)) / 2, t, COL_TEXT, ts, 1);
    if (subtitle && *subtitle) {
        fit_text(t, sizeof t, subtitle, c->w - 20, TICK_S);
        text(c, c->w / 2, 12 + text_height(TITLE_S) + 8, t, COL_MUTED, TICK_S, 1);
    }
}

/* "title: what" when the log has a title, else "what". */
static void figure_title(char *out, size_t cap, const bg_trainlog *log, const char *what) {
    if (log->title[0]) snprintf(out, cap, "%s: %s", log->title, what);
    else snprintf(out, cap, "%s", what);
}

// ---------------------------------------------------------------------------
// phases: the log's phase records grouped into intervals of steps

#define MAX_INTERVALS 32

typedef struct interval {
    int64_t start;    /* first step */
    char name[96];    /* distinct specs of the records at start, joined by "/" */
} interval;

static rgb spec_tint(const char *name) {
    if (!strncmp(name, "fp32", 4)) return 0xf0f0f0;
    if (!strncmp(name, "int8", 4)) return 0xdce9f7;
    if (!strncmp(name, "int4", 4)) return 0xdcf0d6;
    if (!strncmp(name, "int2", 4)) return 0xfaf0c8;
    if (!strncmp(name, "ternary", 7)) return 0xf8dcdc;
    if (!strncmp(name, "binary", 6)) return 0xe8dcf4;
    return 0xe8e8e8;
}

static rgb spec_color(const char *name, int i) {
    if (!strncmp(name, "fp32", 4)) return 0x7f7f7f;
    if (!strncmp(name, "int8", 4)) return 0x1f77b4;
    if (!strncmp(name, "int4", 4)) return 0x2ca02c;
    if (!strncmp(name, "int2", 4)) return 0xd4a017;
    if (!strncmp(name, "ternary", 7)) return 0xd62728;
    if (!strncmp(name, "binary", 6)) return 0x9467bd;
    return palette[(i + 5) % N_PALETTE];
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The last spec of layer's phase records (see spec_at) that starts before
 * step, or at step when none does; NULL when there is none. */
static const char *layer_spec(const bg_trainlog *log, const char *layer, int64_t step, bool strict) {
    const char *spec = NULL;
    int64_t at = INT64_MIN;
    for (int64_t i = 0; i < log->n_phases; i++) {
        const bg_trainlog_phase_rec *p = &log->phases[i];
        if ((strict ? p->step >= step : p->step > step) || strcmp(p->layer, layer)) continue;
        if (p->step >= at) spec = p->spec, at = p->step;
    }
    return spec;
}

/* The spec a record taken at step (after `step` optimizer steps) was measured
 * under: a phase record at S governs steps S, S+1, ... (0-based), so the
 * last phase starting before step (a record at step S still belongs to the
 * phase before a change at S), or one starting at step when none does (the
 * first phase). The layer's own records when there are any (a layer's own
 * schedule overrides "*", as a schedule rule with a pattern does), else the
 * "*" ones; "" when none. */
static const char *spec_at(const bg_trainlog *log, const char *layer, int64_t step) {
    bool own = false;
    for (int64_t i = 0; i < log->n_phases && !own; i++) own = !strcmp(log->phases[i].layer, layer);
    const char *name = own ? layer : "*";
    const char *spec = layer_spec(log, name, step, true);
    if (!spec) spec = layer_spec(log, name, step, false);
    return spec ? spec : "";
}

/* The spec that runs step index `step` itself (the last phase starting at or
 * before it): what a phase band starting at step shows. */
static const char *spec_running(const bg_trainlog *log, const char *layer, int64_t step) {
    const char *spec = layer_spec(log, layer, step, false);
    return spec ? spec : "";
}

/* Appends spec to a "/"-joined name unless it is already there. */
static void add_spec_name(char *name, size_t cap, const char *spec) {
    size_t sl = strlen(spec);
    if (!sl) return;
    for (const char *q = name; (q = strstr(q, spec)) != NULL; q += sl)
        if ((q == name || q[-1] == '/') && (q[sl] == '\0' || q[sl] == '/')) return;
    size_t len = strlen(name);
    snprintf(name + len, cap - len, "%s%s", len ? "/" : "", spec);
}

/* The phases as intervals of steps: each distinct phase step starts one,
 * named by the specs active then (every layer named in a phase record, and
 * "*"); neighbours with the same name are merged, so re-logging an unchanged
 * phase adds nothing. Ascending, at most MAX_INTERVALS (the first ones). */
static int phase_intervals(const bg_trainlog *log, interval *iv) {
    if (log->n_phases == 0) return 0;
    int64_t *starts = malloc((size_t)log->n_phases * sizeof *starts);
    if (!starts) return 0;
    for (int64_t i = 0; i < log->n_phases; i++) starts[i] = log->phases[i].step;
    qsort(starts, (size_t)log->n_phases, sizeof starts[0], cmp_i64);
    int n = 0;
    for (int64_t k = 0; k < log->n_phases && n < MAX_INTERVALS; k++) {
        if (k > 0 && starts[k] == starts[k - 1]) continue;
        interval cur = {.start = starts[k]};
        for (int64_t i = 0; i < log->n_phases; i++) {
            const char *layer = log->phases[i].layer;
            bool first = true;   // each layer once, in order of first appearance
            for (int64_t j = 0; j < i && first; j++) first = strcmp(log->phases[j].layer, layer) != 0;
            if (first) add_spec_name(cur.name, sizeof cur.name, spec_running(log, layer, starts[k]));
        }
        if (n > 0 && !strcmp(iv[n - 1].name, cur.name)) continue;
        iv[n++] = cur;
    }
    free(starts);
    return n;
}

/* Shades each interval of p in its spec's tint (alternating lightness when
 * two neighbours share a spec) and writes its name at the top. */
static void draw_phase_bands(canvas *c, const panel *p, const interval *iv, int n) {
    clip_set(c, p->x0, p->y0, p->x1, p->y1);
    for (int k = 0; k < n; k++) {
        double a = px_x(p, (double)iv[k].start);
        double b = k + 1 < n ? px_x(p, (double)iv[k + 1].start) : p->x1 + 1;
        if (a < p->x0) a = p->x0;
        if (b > p->x1 + 1) b = p->x1 + 1;
        if (b <= a) continue;
        rgb t = spec_tint(iv[k].name);
        if (k > 0 && spec_tint(iv[k - 1].name) == t && k % 2) t = (t & 0xfefefe) - 0x080808;
        fill_rect(c, (int)lround(a), p->y0, (int)lround(b) - 1, p->y1, t);
        if (k > 0) line(c, a, p->y0, a, p->y1, 0xa0a0a0, 1, 3);
        char name[96];
        fit_text(name, sizeof name, iv[k].name, (int)(b - a) - 6, TICK_S);
        text(c, (int)lround(a) + 4, p->y0 + 4, name, 0x505050, TICK_S, 0);
    }
    clip_reset(c);
}

// ---------------------------------------------------------------------------
// PNG

typedef struct png_err {
    char msg[256];
} png_err;

static void png_error_fn(png_structp png, png_const_charp msg) {
    png_err *e = png_get_error_ptr(png);
    snprintf(e->msg, sizeof e->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_warning_fn(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

/* Encodes the canvas into f; false with e->msg set on a libpng error. */
static bool png_encode(const canvas *c, FILE *f, png_err *e) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, e, png_error_fn, png_warning_fn);
    if (!png) {
        snprintf(e->msg, sizeof e->msg, "cannot create the PNG writer");
        return false;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        snprintf(e->msg, sizeof e->msg, "cannot create the PNG info struct");
        return false;
    }
    if (setjmp(png_jmpbuf(png))) {   // a libpng error: e->msg is set
        png_destroy_write_struct(&png, &info);
        return false;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)c->w, (png_uint_32)c->h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 6);
    png_write_info(png, info);
    for (int y = 0; y < c->h; y++) png_write_row(png, c->px + (size_t)y * (size_t)c->w * 3);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return true;
}

/* Writes path atomically (format/format.h: bg_atomic_begin): path.tmp-XXXXXX
 * in the same folder, fsync, rename; a path that is not a regular file is
 * refused. */
static bg_status png_save(const canvas *c, const char *path) {
    bg_atomic_file af;
    bg_status s = bg_atomic_begin(&af, "plot", path);
    if (s != BG_OK) return s;
    png_err e = {{0}};
    if (!png_encode(c, af.f, &e)) {
        bg_atomic_abort(&af);
        return bg_set_error(BG_ERR_IO, "plot: %s: PNG encoding failed: %s", path, e.msg);
    }
    return bg_atomic_commit(&af, true);
}

// ---------------------------------------------------------------------------
// figure (a): training curves

static void step_range(const bg_trainlog *log, double *lo, double *hi) {
    *lo = INFINITY, *hi = -INFINITY;
    for (int64_t i = 0; i < log->n_steps; i++) {
        *lo = fmin(*lo, (double)log->steps[i].step);
        *hi = fmax(*hi, (double)log->steps[i].step);
    }
    for (int64_t i = 0; i < log->n_evals; i++) {
        *lo = fmin(*lo, (double)log->evals[i].step);
        *hi = fmax(*hi, (double)log->evals[i].step);
    }
    for (int64_t i = 0; i < log->n_metrics; i++) {
        *lo = fmin(*lo, (double)log->metrics[i].step);
        *hi = fmax(*hi, (double)log->metrics[i].step);
    }
    for (int64_t i = 0; i < log->n_phases; i++) {
        *lo = fmin(*lo, (double)log->phases[i].step);
        *hi = fmax(*hi, (double)log->phases[i].step);
    }
    if (!(*lo <= *hi)) *lo = 0, *hi = 1;
}

static void no_data(canvas *c, const panel *p, const char *msg) {
    text(c, (p->x0 + p->x1) / 2, (p->y0 + p->y1) / 2, msg, COL_MUTED, LABEL_S, 1);
}

#define MAX_SERIES 10

bg_status bg_plot_training(const bg_trainlog *log, const char *path) {
    if (!log || !path) return bg_set_error(BG_ERR_ARG, "plot: training: log or path is NULL");
    if (log->n_steps == 0 && log->n_evals == 0)
        return bg_set_error(BG_ERR_ARG, "plot: training: the log has no step or eval records");
    canvas cv;
    if (!canvas_init(&cv, 1000, 720)) return bg_set_error(BG_ERR_NOMEM, "plot: %s: out of memory", path);
    canvas *c = &cv;
    char title[256];
    figure_title(title, sizeof title, log, "training curves");
    draw_figure_title(c, title, "shaded bands: the active quantization of each phase (named at the top)");

    interval iv[MAX_INTERVALS];
    int n_iv = phase_intervals(log, iv);
    double xlo, xhi;
    step_range(log, &xlo, &xhi);
    double xstep = nice_range(&xlo, &xhi, 10, 0);

    // top: loss
    panel top = {.x0 = 110, .y0 = 80, .x1 = 970, .y1 = 330, .xlo = xlo, .xhi = xhi, .xstep = xstep};
    double ylo = INFINITY, yhi = -INFINITY;
    for (int64_t i = 0; i < log->n_steps; i++)
        if (isfinite(log->steps[i].loss)) ylo = fmin(ylo, log->steps[i].loss), yhi = fmax(yhi, log->steps[i].loss);
    for (int64_t i = 0; i < log->n_refs; i++)
        if (!strcmp(log->refs[i].metric, "loss") && isfinite(log->refs[i].value))
            ylo = fmin(ylo, log->refs[i].value), yhi = fmax(yhi, log->refs[i].value);
    bool from0 = ylo >= 0;
    if (ylo > 0 && ylo < 0.5 * yhi) ylo = 0;   // losses read best from 0
    top.ystep = nice_range(&ylo, &yhi, 6, 0.02);
    if (from0 && ylo < 0) ylo = 0;
    top.ylo = ylo, top.yhi = yhi;

    // bottom: accuracy in percent, or a validation loss as logged (an eval
    // label naming nats, as `bitgrad lm train` writes: "validation nats/byte")
    bool eval_loss = log->n_evals > 0;
    for (int64_t i = 0; i < log->n_evals; i++) eval_loss = eval_loss && strstr(log->evals[i].label, "nats");
    const double escale = eval_loss ? 1.0 : 100.0;
    panel bot = {.x0 = 110, .y0 = 400, .x1 = 970, .y1 = 650, .xlo = xlo, .xhi = xhi, .xstep = xstep};
    ylo = INFINITY, yhi = -INFINITY;
    for (int64_t i = 0; i < log->n_evals; i++)
        if (isfinite(log->evals[i].acc))
            ylo = fmin(ylo, escale * log->evals[i].acc), yhi = fmax(yhi, escale * log->evals[i].acc);
    for (int64_t i = 0; i < log->n_refs; i++)
        if (!strcmp(log->refs[i].metric, "acc") && isfinite(log->refs[i].value))
            ylo = fmin(ylo, 100 * log->refs[i].value), yhi = fmax(yhi, 100 * log->refs[i].value);
    bot.ystep = nice_range(&ylo, &yhi, 6, 0.05);
    bot.ylo = ylo < 0 ? 0 : ylo;   // 0 and 100 are multiples of any nice step
    bot.yhi = !eval_loss && yhi > 100 && bot.ylo < 100 ? 100 : yhi;

    const panel *panels[2] = {&top, &bot};
    for (int k = 0; k < 2; k++) {
        draw_phase_bands(c, panels[k], iv, n_iv);
        draw_grid(c, panels[k]);
    }
    legend_entry leg[MAX_SERIES + 4];
    int n_leg = 0;
    char ref_labels[8][160], acc_names[MAX_SERIES][160];

    // loss curve
    clip_set(c, top.x0, top.y0, top.x1, top.y1);
    const rgb loss_col = palette[0];
    bool have_prev = false;
    double px0 = 0, py0 = 0;
    for (int64_t i = 0; i < log->n_steps; i++) {
        const bg_trainlog_step_rec *r = &log->steps[i];
        if (!isfinite(r->loss)) {
            have_prev = false;   // a gap at NaN / Inf losses
            continue;
        }
        double x = px_x(&top, (double)r->step), y = px_y(&top, r->loss);
        if (have_prev) line(c, px0, py0, x, y, loss_col, 2, 0);
        else fill_rect(c, (int)x - 1, (int)y - 1, (int)x + 1, (int)y + 1, loss_col);
        px0 = x, py0 = y, have_prev = true;
    }
    if (log->n_steps) leg[n_leg++] = (legend_entry){"training loss", loss_col, 0};
    legend_entry leg_bot[MAX_SERIES + 4];
    int n_leg_bot = 0;

    // reference lines
    for (int64_t i = 0; i < log->n_refs; i++) {
        const bg_trainlog_ref_rec *r = &log->refs[i];
        bool is_loss = !strcmp(r->metric, "loss");
        const panel *p = is_loss ? &top : &bot;
        double y = px_y(p, is_loss ? r->value : 100 * r->value);
        rgb col = 0x303030;
        clip_set(c, p->x0, p->y0, p->x1, p->y1);
        line(c, p->x0, y, p->x1, y, col, 2, 8);
        if (i < 8) {
            if (is_loss) snprintf(ref_labels[i], sizeof ref_labels[i], "%s (%.4g)", r->label, r->value);
            else snprintf(ref_labels[i], sizeof ref_labels[i], "%s (%.2f%%)", r->label, 100 * r->value);
            if (is_loss) leg[n_leg++] = (legend_entry){ref_labels[i], col, 1};
            else leg_bot[n_leg_bot++] = (legend_entry){ref_labels[i], col, 1};
        }
    }

    // accuracy curves, one per eval label
    char labels[MAX_SERIES][BG_TRAINLOG_NAME_MAX];
    int n_labels = 0;
    for (int64_t i = 0; i < log->n_evals; i++) {
        bool seen = false;
        for (int k = 0; k < n_labels; k++) seen = seen || !strcmp(labels[k], log->evals[i].label);
        if (!seen && n_labels < MAX_SERIES) snprintf(labels[n_labels++], BG_TRAINLOG_NAME_MAX, "%s", log->evals[i].label);
    }
    clip_set(c, bot.x0, bot.y0, bot.x1, bot.y1);
    for (int k = 0; k < n_labels; k++) {
        rgb col = palette[(k + 1) % N_PALETTE];
        have_prev = false;
        double last = NAN;
        for (int64_t i = 0; i < log->n_evals; i++) {
            const bg_trainlog_eval_rec *r = &log->evals[i];
            if (strcmp(r->label, labels[k]) || !isfinite(r->acc)) continue;
            double x = px_x(&bot, (double)r->step), y = px_y(&bot, escale * r->acc);
            if (have_prev) line(c, px0, py0, x, y, col, 2, 0);
            fill_rect(c, (int)lround(x) - 3, (int)lround(y) - 3, (int)lround(x) + 3, (int)lround(y) + 3, col);
            px0 = x, py0 = y, have_prev = true;
            last = r->acc;
        }
        if (eval_loss)
            snprintf(acc_names[k], sizeof acc_names[k], "%.63s (last %.4f)", labels[k], last);
        else
            snprintf(acc_names[k], sizeof acc_names[k], "%.63s test accuracy (last %.2f%%)",
                     labels[k][0] ? labels[k] : "model", 100 * last);
        leg_bot[n_leg_bot++] = (legend_entry){acc_names[k], col, 0};
    }
    clip_reset(c);

    draw_axes(c, &top, "training loss", NULL, "loss", true);
    if (eval_loss) draw_axes(c, &bot, "validation loss", "training step", "nats per byte", true);
    else draw_axes(c, &bot, "test accuracy", "training step", "accuracy (%)", true);
    if (!log->n_steps) no_data(c, &top, "no step records in the log");
    if (!log->n_evals) no_data(c, &bot, "no eval records in the log");
    draw_legend(c, &top, leg, n_leg, LEGEND_AUTO);
    draw_legend(c, &bot, leg_bot, n_leg_bot, LEGEND_AUTO);

    bg_status s = png_save(c, path);
    free(cv.px);
    return s;
}

// ---------------------------------------------------------------------------
// figure (b): weight histograms with levels and thresholds

#define MAX_LAYERS 32
#define MAX_SNAPS 4

/* Distinct layer names of some records, in order of first appearance. */
static int add_layer(char (*names)[BG_TRAINLOG_NAME_MAX], int n, const char *name) {
    for (int k = 0; k < n; k++)
        if (!strcmp(names[k], name)) return n;
    if (n >= MAX_LAYERS) return n;
    snprintf(names[n], BG_TRAINLOG_NAME_MAX, "%s", name);
    return n + 1;
}

/* "layer 2.1" for a bare module path, else the name itself. */
static void layer_label(char *out, size_t cap, const char *name) {
    bool path = *name != '\0';
    for (const char *q = name; *q; q++) path = path && ((*q >= '0' && *q <= '9') || *q == '.');
    snprintf(out, cap, path ? "layer %s" : "%s", name);
}

static void draw_hist_panel(canvas *c, const panel *p0, const bg_trainlog *log, const bg_trainlog_hist_rec *h) {
    panel p = *p0;
    p.xlo = h->lo, p.xhi = h->hi;
    int64_t cmax = 0;
    for (int b = 0; b < h->n_bins; b++)
        if (h->counts[b] > cmax) cmax = h->counts[b];
    double ylo = 0, yhi = cmax > 0 ? (double)cmax * 1.08 : 1;
    p.ystep = nice_range(&ylo, &yhi, 4, 0);
    p.ylo = 0, p.yhi = yhi;
    p.xstep = nice_step(p.xhi - p.xlo, 4);
    // show ticks inside the data range only: start at the first multiple
    panel axes = p;
    axes.xlo = ceil(p.xlo / p.xstep - 1e-9) * p.xstep;
    draw_grid(c, &p);
    clip_set(c, p.x0, p.y0, p.x1, p.y1);
    double bw = (h->hi - h->lo) / h->n_bins;
    for (int b = 0; b < h->n_bins; b++) {
        if (!h->counts[b]) continue;
        int xa = (int)lround(px_x(&p, h->lo + b * bw)), xb = (int)lround(px_x(&p, h->lo + (b + 1) * bw)) - 1;
        if (xb < xa) xb = xa;
        fill_rect(c, xa, (int)lround(px_y(&p, (double)h->counts[b])), xb, p.y1, 0x8fb3d9);
    }
    // thresholds dashed, levels solid
    for (int i = 0; i < h->n_thresholds && h->n_thresholds <= 34; i++) {
        double x = px_x(&p, h->thresholds[i]);
        line(c, x, p.y0, x, p.y1, 0xff7f0e, h->n_thresholds > 8 ? 1 : 2, 5);
    }
    for (int i = 0; i < h->n_levels; i++) {
        if (h->n_levels > 33 && i != 0 && i != h->n_levels - 1) continue;
        double x = px_x(&p, h->levels[i]);
        line(c, x, p.y0, x, p.y1, 0xd62728, h->n_levels > 8 ? 1 : 2, 0);
    }
    clip_reset(c);
    char title[160];
    const char *spec = spec_at(log, h->layer, h->step);
    char lname[BG_TRAINLOG_NAME_MAX + 8];
    layer_label(lname, sizeof lname, h->layer);
    if (*spec) snprintf(title, sizeof title, "%s, step %lld (%s)", lname, (long long)h->step, spec);
    else snprintf(title, sizeof title, "%s, step %lld", lname, (long long)h->step);
    // tick labels of the x axis: from the first nice multiple inside [lo, hi]
    char buf[32];
    for (double v = axes.xlo; v <= p.xhi + 1e-9 * fabs(p.xhi); v += p.xstep) {
        int x = (int)lround(px_x(&p, v));
        fill_rect(c, x, p.y1 + 1, x, p.y1 + 5, COL_AXIS);
        format_tick(buf, sizeof buf, v, p.xstep);
        text(c, x, p.y1 + 8, buf, COL_TEXT, TICK_S, 1);
    }
    p.xstep = 0;   // drawn above
    draw_axes(c, &p, NULL, NULL, NULL, false);
    char t[160];
    fit_text(t, sizeof t, title, p.x1 - p.x0 + 40, TICK_S + 0);
    text(c, (p.x0 + p.x1) / 2, p.y0 - 14, t, COL_TEXT, TICK_S, 1);
    text(c, (p.x0 + p.x1) / 2, p.y1 + 22, "latent weight value", COL_MUTED, TICK_S, 1);
    if (h->n_levels > 33) {
        char note[48];
        snprintf(note, sizeof note, "%d levels: ends drawn", h->n_levels);
        text(c, p.x1 - 4, p.y0 + 4, note, COL_MUTED, TICK_S, 2);
    }
}

bg_status bg_plot_weights(const bg_trainlog *log, const char *path) {
    if (!log || !path) return bg_set_error(BG_ERR_ARG, "plot: weights: log or path is NULL");
    if (log->n_hists == 0) return bg_set_error(BG_ERR_ARG, "plot: weights: the log has no hist records");
    char names[MAX_LAYERS][BG_TRAINLOG_NAME_MAX];
    int n_layers = 0;
    for (int64_t i = 0; i < log->n_hists; i++) n_layers = add_layer(names, n_layers, log->hists[i].layer);
    // per layer: up to MAX_SNAPS record indices, evenly over its snapshots
    int64_t snap[MAX_LAYERS][MAX_SNAPS];
    int n_snap[MAX_LAYERS], cols = 1;
    for (int l = 0; l < n_layers; l++) {
        int64_t count = 0;
        for (int64_t i = 0; i < log->n_hists; i++) count += !strcmp(log->hists[i].layer, names[l]);
        int want = count < MAX_SNAPS ? (int)count : MAX_SNAPS;
        n_snap[l] = 0;
        for (int k = 0; k < want; k++) {
            int64_t target = want == 1 ? count - 1 : (int64_t)llround((double)k * (double)(count - 1) / (want - 1));
            int64_t seen = 0;
            for (int64_t i = 0; i < log->n_hists; i++)
                if (!strcmp(log->hists[i].layer, names[l]) && seen++ == target) snap[l][n_snap[l]++] = i;
        }
        if (n_snap[l] > cols) cols = n_snap[l];
    }
    const int pw = 360, ph = 250, top = 60;
    canvas cv;
    if (!canvas_init(&cv, pw * cols + 40, ph * n_layers + top))
        return bg_set_error(BG_ERR_NOMEM, "plot: %s: out of memory", path);
    canvas *c = &cv;
    char title[256];
    figure_title(title, sizeof title, log, "latent weights per layer");
    draw_figure_title(c, title, NULL);
    // a legend line under the title
    int ly = 12 + text_height(TITLE_S) + 10, lx = c->w / 2 - 250;
    fill_rect(c, lx, ly, lx + 16, ly + 7, 0x8fb3d9);
    text(c, lx + 22, ly, "weight count", COL_TEXT, TICK_S, 0);
    line(c, lx + 120, ly + 3, lx + 140, ly + 3, 0xd62728, 2, 0);
    text(c, lx + 146, ly, "quantization levels", COL_TEXT, TICK_S, 0);
    line(c, lx + 280, ly + 3, lx + 300, ly + 3, 0xff7f0e, 2, 5);
    text(c, lx + 306, ly, "rounding thresholds", COL_TEXT, TICK_S, 0);
    for (int l = 0; l < n_layers; l++)
        for (int k = 0; k < n_snap[l]; k++) {
            int ox = 20 + k * pw, oy = top + l * ph;
            panel p = {.x0 = ox + 62, .y0 = oy + 30, .x1 = ox + pw - 14, .y1 = oy + ph - 42};
            draw_hist_panel(c, &p, log, &log->hists[snap[l][k]]);
            if (k == 0) text_vertical(c, ox + 2, (p.y0 + p.y1) / 2, "count", COL_TEXT, TICK_S);
        }
    bg_status s = png_save(c, path);
    free(cv.px);
    return s;
}

// ---------------------------------------------------------------------------
// figure (c): ternary layers' zero fraction and flip rate

static void draw_metric_lines(canvas *c, const panel *p, const bg_trainlog *log, const char *layer, rgb col, bool flip) {
    clip_set(c, p->x0, p->y0, p->x1, p->y1);
    bool have_prev = false;
    double x0 = 0, y0 = 0;
    for (int64_t i = 0; i < log->n_metrics; i++) {
        const bg_trainlog_metrics_rec *r = &log->metrics[i];
        double v = flip ? r->flip_frac : r->zero_frac;
        if (strcmp(r->layer, layer)) continue;
        if (!isfinite(v)) {
            have_prev = false;
            continue;
        }
        double x = px_x(p, (double)r->step), y = px_y(p, 100 * v);
        if (have_prev) line(c, x0, y0, x, y, col, 2, 0);
        fill_rect(c, (int)lround(x) - 2, (int)lround(y) - 2, (int)lround(x) + 2, (int)lround(y) + 2, col);
        x0 = x, y0 = y, have_prev = true;
    }
    clip_reset(c);
}

bg_status bg_plot_ternary(const bg_trainlog *log, const char *path) {
    if (!log || !path) return bg_set_error(BG_ERR_ARG, "plot: ternary: log or path is NULL");
    char names[MAX_LAYERS][BG_TRAINLOG_NAME_MAX];
    int n_layers = 0;
    for (int64_t i = 0; i < log->n_metrics; i++)
        if (isfinite(log->metrics[i].zero_frac) || isfinite(log->metrics[i].flip_frac))
            n_layers = add_layer(names, n_layers, log->metrics[i].layer);
    if (n_layers == 0)
        return bg_set_error(BG_ERR_ARG, "plot: ternary: the log has no metrics records with zero_frac or flip_frac");
    canvas cv;
    if (!canvas_init(&cv, 1000, 720)) return bg_set_error(BG_ERR_NOMEM, "plot: %s: out of memory", path);
    canvas *c = &cv;
    char title[256];
    figure_title(title, sizeof title, log, "ternary weights during training");
    draw_figure_title(c, title, "zeros: share of weights quantized to 0; flips: share whose level changed since the previous measurement");
    interval iv[MAX_INTERVALS];
    int n_iv = phase_intervals(log, iv);
    double xlo, xhi;
    step_range(log, &xlo, &xhi);
    double xstep = nice_range(&xlo, &xhi, 10, 0);
    panel p[2];
    for (int k = 0; k < 2; k++) {
        double ylo = INFINITY, yhi = -INFINITY;
        for (int64_t i = 0; i < log->n_metrics; i++) {
            double v = 100 * (k ? log->metrics[i].flip_frac : log->metrics[i].zero_frac);
            if (isfinite(v)) ylo = fmin(ylo, v), yhi = fmax(yhi, v);
        }
        if (ylo > 0 && ylo < 0.6 * yhi) ylo = 0;
        if (!(ylo <= yhi)) ylo = 0, yhi = 1;
        if (ylo == 0 && yhi == 0) yhi = 1;   // all zero: 0..1 %
        double ystep = nice_range(&ylo, &yhi, 5, 0.05);
        if (ylo < 0) ylo = 0;   // fractions: never below 0 (0 is a multiple of the step)
        p[k] = (panel){.x0 = 110, .y0 = k ? 400 : 80, .x1 = 970, .y1 = k ? 650 : 330, .xlo = xlo, .xhi = xhi,
                       .ylo = ylo, .yhi = yhi, .xstep = xstep, .ystep = ystep};
        draw_phase_bands(c, &p[k], iv, n_iv);
        draw_grid(c, &p[k]);
    }
    legend_entry leg[MAX_LAYERS];
    char leg_names[MAX_LAYERS][BG_TRAINLOG_NAME_MAX + 8];
    for (int l = 0; l < n_layers; l++) {
        rgb col = palette[l % N_PALETTE];
        draw_metric_lines(c, &p[0], log, names[l], col, false);
        draw_metric_lines(c, &p[1], log, names[l], col, true);
        layer_label(leg_names[l], sizeof leg_names[l], names[l]);
        leg[l] = (legend_entry){leg_names[l], col, 0};
    }
    draw_axes(c, &p[0], "fraction of zero weights", NULL, "zeros (%)", true);
    draw_axes(c, &p[1], "flip rate", "training step", "flips (%)", true);
    draw_legend(c, &p[0], leg, n_layers, LEGEND_AUTO);
    bg_status s = png_save(c, path);
    free(cv.px);
    return s;
}

// ---------------------------------------------------------------------------
// figure (d): SQNR per layer at the end of each phase

/* True when no finite SQNR of that side (0 weights, 1 activations) is < 0. */
static bool lo_data_nonneg(const bg_trainlog *log, int side) {
    for (int64_t i = 0; i < log->n_metrics; i++) {
        double v = side ? log->metrics[i].a_sqnr_db : log->metrics[i].w_sqnr_db;
        if (isfinite(v) && v < 0) return false;
    }
    return true;
}

bg_status bg_plot_sqnr(const bg_trainlog *log, const char *path) {
    if (!log || !path) return bg_set_error(BG_ERR_ARG, "plot: sqnr: log or path is NULL");
    if (log->n_metrics == 0) return bg_set_error(BG_ERR_ARG, "plot: sqnr: the log has no metrics records");
    interval iv[MAX_INTERVALS];
    int n_iv = phase_intervals(log, iv);
    if (n_iv == 0) {   // one interval: the end of training
        iv[0].start = INT64_MIN;
        snprintf(iv[0].name, sizeof iv[0].name, "end");
        n_iv = 1;
    }
    char names[MAX_LAYERS][BG_TRAINLOG_NAME_MAX];
    int n_layers = 0;
    for (int64_t i = 0; i < log->n_metrics; i++) n_layers = add_layer(names, n_layers, log->metrics[i].layer);
    // last[l][k]: index of layer l's last metrics record in interval k (-1: none);
    // records before the first phase count towards the first
    int64_t last[MAX_LAYERS][MAX_INTERVALS];
    int64_t end_step[MAX_INTERVALS];
    for (int l = 0; l < MAX_LAYERS; l++)
        for (int k = 0; k < MAX_INTERVALS; k++) last[l][k] = -1;
    for (int k = 0; k < n_iv; k++) end_step[k] = INT64_MIN;
    for (int64_t i = 0; i < log->n_metrics; i++) {
        const bg_trainlog_metrics_rec *r = &log->metrics[i];
        int k = 0;
        while (k + 1 < n_iv && r->step > iv[k + 1].start) k++;   // (start_k, start_k+1]: see spec_at
        for (int l = 0; l < n_layers; l++)
            if (!strcmp(names[l], r->layer)) {
                if (last[l][k] < 0 || log->metrics[last[l][k]].step <= r->step) last[l][k] = i;
                if (r->step > end_step[k]) end_step[k] = r->step;
            }
    }
    // only intervals with some record
    int used[MAX_INTERVALS], n_used = 0;
    for (int k = 0; k < n_iv; k++)
        if (end_step[k] != INT64_MIN) used[n_used++] = k;

    canvas cv;
    if (!canvas_init(&cv, 1000, 720)) return bg_set_error(BG_ERR_NOMEM, "plot: %s: out of memory", path);
    canvas *c = &cv;
    char title[256];
    figure_title(title, sizeof title, log, "quantization SQNR per layer");
    draw_figure_title(c, title, "signal-to-quantization-noise ratio 10 log10(sum x^2 / sum (x-q)^2) at the end of each phase; higher is better");
    legend_entry leg[MAX_INTERVALS];
    char leg_names[MAX_INTERVALS][128];
    for (int j = 0; j < n_used; j++) {
        int k = used[j];
        char full[160];
        snprintf(full, sizeof full, "end of %.96s (step %lld)", iv[k].name, (long long)end_step[k]);
        fit_text(leg_names[j], sizeof leg_names[j], full, c->w - 760 - 50, TICK_S);
        leg[j] = (legend_entry){leg_names[j], spec_color(iv[k].name, j), 2};
    }
    for (int side = 0; side < 2; side++) {
        double ylo = 0, yhi = 0;   // bars start at 0
        for (int l = 0; l < n_layers; l++)
            for (int j = 0; j < n_used; j++) {
                int64_t i = last[l][used[j]];
                if (i < 0) continue;
                double v = side ? log->metrics[i].a_sqnr_db : log->metrics[i].w_sqnr_db;
                if (isfinite(v)) ylo = fmin(ylo, v), yhi = fmax(yhi, v);
            }
        if (!(yhi > ylo)) yhi = ylo + 10;
        double ystep = nice_range(&ylo, &yhi, 6, 0.06);
        if (ylo < 0 && ylo >= -ystep && lo_data_nonneg(log, side)) ylo = 0;
        panel p = {.x0 = 110, .y0 = side ? 400 : 80, .x1 = 740, .y1 = side ? 630 : 310, .xlo = 0, .xhi = 1,
                   .ylo = ylo, .yhi = yhi, .ystep = ystep};
        draw_grid(c, &p);
        double gw = (double)(p.x1 - p.x0) / (n_layers ? n_layers : 1);
        double bw = gw * 0.8 / (n_used ? n_used : 1);
        clip_set(c, p.x0, p.y0, p.x1, p.y1);
        for (int l = 0; l < n_layers; l++) {
            double gx = p.x0 + l * gw + gw * 0.1;
            for (int j = 0; j < n_used; j++) {
                int64_t i = last[l][used[j]];
                double xa = gx + j * bw, xb = xa + bw - 2;
                if (i < 0) continue;
                double v = side ? log->metrics[i].a_sqnr_db : log->metrics[i].w_sqnr_db;
                int cx = (int)lround((xa + xb) / 2);
                if (!isfinite(v)) {   // fp32 (no error) or not measured
                    const char *m = isnan(v) ? "n/a" : v > 0 ? "exact" : "-inf";
                    if (text_width(m, TICK_S) < bw + 8)
                        text(c, cx, (int)lround(px_y(&p, 0)) - 12, m, COL_MUTED, TICK_S, 1);
                    continue;
                }
                fill_rect(c, (int)lround(xa), (int)lround(px_y(&p, v)), (int)lround(xb), (int)lround(px_y(&p, 0)),
                          leg[j].col);
                char val[32];
                snprintf(val, sizeof val, "%.1f", v);
                if (text_width(val, TICK_S) <= bw + 4) {
                    int ty = v >= 0 ? (int)lround(px_y(&p, v)) - 10 : (int)lround(px_y(&p, v)) + 3;
                    text(c, cx, ty, val, COL_TEXT, TICK_S, 1);
                }
            }
        }
        clip_reset(c);
        line(c, p.x0, px_y(&p, 0), p.x1, px_y(&p, 0), COL_AXIS, 1, 0);
        // Names without their common prefix ("blk."); when even those do not
        // fit the groups, the layers' indices in model order.
        size_t common = n_layers > 1 ? strlen(names[0]) : 0;
        for (int l = 1; l < n_layers; l++) {
            size_t k = 0;
            while (k < common && names[l][k] == names[0][k]) k++;
            common = k;
        }
        while (common > 0 && names[0][common - 1] != '.') common--;   // whole components
        bool fits = true;
        for (int l = 0; l < n_layers && fits; l++) fits = text_width(names[l] + common, TICK_S) <= (int)gw - 4;
        draw_axes(c, &p, side ? "activations (layer inputs)" : "weights",
                  side ? (fits ? "layer" : "layer (index in model order)") : NULL, "SQNR (dB)", false);
        for (int l = 0; l < n_layers; l++) {
            char nm[BG_TRAINLOG_NAME_MAX];
            if (fits) snprintf(nm, sizeof nm, "%s", names[l] + common);
            else snprintf(nm, sizeof nm, "%d", l);
            int cx = (int)lround(p.x0 + (l + 0.5) * gw);
            fill_rect(c, cx, p.y1 + 1, cx, p.y1 + 4, COL_AXIS);
            text(c, cx, p.y1 + 8, nm, COL_TEXT, TICK_S, 1);
        }
        draw_legend(c, &p, leg, n_used, LEGEND_OUTSIDE);
    }
    bg_status s = png_save(c, path);
    free(cv.px);
    return s;
}

// ---------------------------------------------------------------------------
// all figures

/* mkdir -p */
static bg_status make_dirs(const char *dir) {
    char buf[BG_PLOT_PATH_MAX];
    if (strlen(dir) >= sizeof buf) return bg_set_error(BG_ERR_ARG, "plot: output folder path is too long: %s", dir);
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *q = buf + 1;; q++) {
        if (*q == '/' || *q == '\0') {
            char saved = *q;
            *q = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return bg_set_error(BG_ERR_IO, "plot: cannot create folder %s: %s", buf, strerror(errno));
            *q = saved;
            if (!saved) break;
        }
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return bg_set_error(BG_ERR_IO, "plot: %s is not a folder", dir);
    return BG_OK;
}

bg_status bg_plot_all(const bg_trainlog *log, const char *dir, bg_plot_files *out) {
    if (out) out->n = 0;
    if (!log || !dir || !*dir) return bg_set_error(BG_ERR_ARG, "plot: all: log or dir is NULL or empty");
    bool has_ternary = false;
    for (int64_t i = 0; i < log->n_metrics; i++)
        has_ternary = has_ternary || isfinite(log->metrics[i].zero_frac) || isfinite(log->metrics[i].flip_frac);
    struct {
        const char *file;
        bool has;
        bg_status (*draw)(const bg_trainlog *, const char *);
    } figs[BG_PLOT_MAX_FILES] = {
        {"training.png", log->n_steps > 0 || log->n_evals > 0, bg_plot_training},
        {"weights.png", log->n_hists > 0, bg_plot_weights},
        {"ternary.png", has_ternary, bg_plot_ternary},
        {"sqnr.png", log->n_metrics > 0, bg_plot_sqnr},
    };
    bool any = false;
    for (int k = 0; k < BG_PLOT_MAX_FILES; k++) any = any || figs[k].has;
    if (!any) return bg_set_error(BG_ERR_ARG, "plot: the log has no records to draw (step, eval, metrics or hist)");
    bg_status s = make_dirs(dir);
    if (s) return s;
    for (int k = 0; k < BG_PLOT_MAX_FILES; k++) {
        if (!figs[k].has) continue;
        char path[BG_PLOT_PATH_MAX];
        int n = snprintf(path, sizeof path, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", figs[k].file);
        if (n < 0 || (size_t)n >= sizeof path) return bg_set_error(BG_ERR_ARG, "plot: output path is too long: %s", dir);
        if ((s = figs[k].draw(log, path))) return s;
        if (out) snprintf(out->path[out->n++], BG_PLOT_PATH_MAX, "%s", path);
    }
    return BG_OK;
}

// ---------------------------------------------------------------------------
// charts of other data: grouped bars, labelled points (automatic precision)

/* The range of n values with 0 included, ticks chosen: bars grow from 0. */
static double range_from_zero(const double *v, int n, double *lo, double *hi) {
    *lo = 0, *hi = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i])) *lo = fmin(*lo, v[i]), *hi = fmax(*hi, v[i]);
    if (*hi == *lo) *hi = *lo + 1;
    return nice_range(lo, hi, 6, 0.05);
}

bg_status bg_plot_bars(const char *path, const char *title, const char *ylabel, int n_groups,
                       const char *const *groups, int n_series, const char *const *series, const double *values) {
    if (!path || !title || n_groups < 1 || n_series < 1 || n_series > N_PALETTE || !groups || !series || !values)
        return bg_set_error(BG_ERR_ARG, "plot: bars: NULL argument, no group, or not 1..%d series", N_PALETTE);
    canvas cv;
    if (!canvas_init(&cv, 1000, 560)) return bg_set_error(BG_ERR_NOMEM, "plot: %s: out of memory", path);
    canvas *c = &cv;
    draw_figure_title(c, title, NULL);
    panel p = {.x0 = 110, .y0 = 80, .x1 = 800, .y1 = 480, .xlo = 0, .xhi = n_groups};
    p.ystep = range_from_zero(values, n_groups * n_series, &p.ylo, &p.yhi);
    draw_grid(c, &p);
    const double slot = (double)(p.x1 - p.x0) / n_groups, bar = 0.8 * slot / n_series;
    legend_entry leg[N_PALETTE];
    for (int k = 0; k < n_series; k++) leg[k] = (legend_entry){series[k], palette[k], 2};
    for (int g = 0; g < n_groups; g++) {
        for (int k = 0; k < n_series; k++) {
            double v = values[g * n_series + k];
            if (!isfinite(v)) continue;
            int x0 = (int)lround(p.x0 + g * slot + 0.1 * slot + k * bar), x1 = (int)lround(x0 + bar) - 2;
            int y0 = (int)lround(px_y(&p, fmax(v, 0))), y1 = (int)lround(px_y(&p, fmin(v, 0)));
            fill_rect(c, x0, y0, x1, y1 > y0 ? y1 : y0 + 1, palette[k]);
        }
        char label[64];
        fit_text(label, sizeof label, groups[g], (int)slot - 4, TICK_S);
        text(c, (int)lround(p.x0 + (g + 0.5) * slot), p.y1 + 10, label, COL_TEXT, TICK_S, 1);
    }
    p.xstep = 0;
    draw_axes(c, &p, NULL, NULL, ylabel, false);
    draw_legend(c, &p, leg, n_series, LEGEND_OUTSIDE);
    bg_status st = png_save(c, path);
    free(cv.px);
    return st;
}

bg_status bg_plot_points(const char *path, const char *title, const char *xlabel, const char *ylabel, int n,
                         const double *x, const double *y, const char *const *labels) {
    if (!path || !title || n < 1 || !x || !y)
        return bg_set_error(BG_ERR_ARG, "plot: points: NULL argument or no point");
    canvas cv;
    if (!canvas_init(&cv, 1000, 560)) return bg_set_error(BG_ERR_NOMEM, "plot: %s: out of memory", path);
    canvas *c = &cv;
    draw_figure_title(c, title, NULL);
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (int i = 0; i < n; i++) xlo = fmin(xlo, x[i]), xhi = fmax(xhi, x[i]), ylo = fmin(ylo, y[i]), yhi = fmax(yhi, y[i]);
    if (xhi == xlo) xlo -= 1, xhi += 1;
    if (yhi == ylo) ylo -= 1, yhi += 1;
    panel p = {.x0 = 110, .y0 = 80, .x1 = 940, .y1 = 480};
    p.xstep = nice_range(&xlo, &xhi, 8, 0.08);
    p.ystep = nice_range(&ylo, &yhi, 6, 0.1);
    p.xlo = xlo, p.xhi = xhi, p.ylo = ylo, p.yhi = yhi;
    draw_grid(c, &p);
    clip_set(c, p.x0, p.y0, p.x1, p.y1);
    for (int i = 0; i < n; i++) {
        int px = (int)lround(px_x(&p, x[i])), py = (int)lround(px_y(&p, y[i]));
        if (i > 0) line(c, px_x(&p, x[i - 1]), px_y(&p, y[i - 1]), px, py, palette[0], 1, 4);
        fill_rect(c, px - 4, py - 4, px + 4, py + 4, palette[i ? 1 : 0]);
        if (labels && labels[i]) text(c, px + 8, py - 6 - text_height(TICK_S), labels[i], COL_TEXT, TICK_S, 0);
    }
    clip_reset(c);
    draw_axes(c, &p, NULL, xlabel, ylabel, false);
    bg_status st = png_save(c, path);
    free(cv.px);
    return st;
}
