/* pool.c — max and average 2-D pooling over NCHW planes with torch 1.13's
 * CPU semantics (cpu_max_pool / cpu_avg_pool): the shape rule, -inf padding
 * and NaN propagation for max, count_include_pad for avg. Portable C with
 * OpenMP over the n*c planes. */
#include <math.h>

#include "kernels/kernels_internal.h"

static int64_t out_size(int64_t in, int64_t k, int64_t pad, int64_t stride, int64_t dil,
                        bool ceil_mode) {
    int64_t num = in + 2 * pad - dil * (k - 1) - 1 + (ceil_mode ? stride - 1 : 0);
    if (num < 0) return 0;   /* floor division of a negative: no output */
    int64_t out = num / stride + 1;
    /* the last window must start inside the input or the left padding */
    if (ceil_mode && (out - 1) * stride >= in + pad) out--;
    return out;
}

bool bg_pool2d_shape_infer(bg_pool2d_shape *s) {
    if (s->stride_h == 0) s->stride_h = s->kh;   /* torch: stride defaults to kernel_size */
    if (s->stride_w == 0) s->stride_w = s->kw;
    if (s->dil_h == 0) s->dil_h = 1;
    if (s->dil_w == 0) s->dil_w = 1;
    s->oh = s->ow = 0;
    if (s->n < 0 || s->c <= 0 || s->h <= 0 || s->w <= 0 || s->kh <= 0 || s->kw <= 0 ||
        s->stride_h <= 0 || s->stride_w <= 0 || s->pad_h < 0 || s->pad_w < 0 || s->dil_h <= 0 ||
        s->dil_w <= 0)
        return false;
    s->oh = out_size(s->h, s->kh, s->pad_h, s->stride_h, s->dil_h, s->ceil_mode);
    s->ow = out_size(s->w, s->kw, s->pad_w, s->stride_w, s->dil_w, s->ceil_mode);
    return s->oh > 0 && s->ow > 0;
}

static int64_t dil_of(int64_t d) { return d > 0 ? d : 1; }

// ---------------------------------------------------------------------------
// max

void bg_max_pool2d_forward(const bg_pool2d_shape *s, float *y, int32_t *argmax, const float *x) {
    const int64_t H = s->h, W = s->w, OH = s->oh, OW = s->ow;
    const int64_t dh = dil_of(s->dil_h), dw = dil_of(s->dil_w);
#pragma omp parallel for schedule(static) if (s->n * s->c * OH * OW >= 4096)
    for (int64_t pl = 0; pl < s->n * s->c; pl++) {
        const float *xp = x + pl * H * W;
        float *yp = y + pl * OH * OW;
        int32_t *ap = argmax + pl * OH * OW;
        for (int64_t i = 0; i < OH; i++) {
            int64_t h0 = i * s->stride_h - s->pad_h;
            int64_t h1 = h0 + (s->kh - 1) * dh + 1;
            if (h1 > H) h1 = H;
            while (h0 < 0) h0 += dh;
            for (int64_t j = 0; j < OW; j++) {
                int64_t w0 = j * s->stride_w - s->pad_w;
                int64_t w1 = w0 + (s->kw - 1) * dw + 1;
                if (w1 > W) w1 = W;
                while (w0 < 0) w0 += dw;
                int64_t best = h0 * W + w0;
                float m = -INFINITY;
                for (int64_t ih = h0; ih < h1; ih += dh) {
                    for (int64_t iw = w0; iw < w1; iw += dw) {
                        float v = xp[ih * W + iw];
                        if (v > m || isnan(v)) {
                            m = v;
                            best = ih * W + iw;
                        }
                    }
                }
                yp[i * OW + j] = m;
                ap[i * OW + j] = (int32_t)best;
            }
        }
    }
}

void bg_max_pool2d_backward(const bg_pool2d_shape *s, float *dx, const float *dy,
                            const int32_t *argmax) {
    const int64_t HW = s->h * s->w, OHW = s->oh * s->ow;
#pragma omp parallel for schedule(static) if (s->n * s->c * OHW >= 4096)
    for (int64_t pl = 0; pl < s->n * s->c; pl++) {
        float *dxp = dx + pl * HW;
        const float *dyp = dy + pl * OHW;
        const int32_t *ap = argmax + pl * OHW;
        for (int64_t k = 0; k < OHW; k++) dxp[ap[k]] += dyp[k];
    }
}

// ---------------------------------------------------------------------------
// average (count_include_pad: the divisor is the window clipped to the
// padded input, before clipping to the input itself)

typedef struct window {
    int64_t h0, h1, w0, w1, divisor;
} window;

static window avg_window(const bg_pool2d_shape *s, int64_t i, int64_t j) {
    window r;
    r.h0 = i * s->stride_h - s->pad_h;
    r.w0 = j * s->stride_w - s->pad_w;
    r.h1 = r.h0 + s->kh;
    r.w1 = r.w0 + s->kw;
    if (r.h1 > s->h + s->pad_h) r.h1 = s->h + s->pad_h;
    if (r.w1 > s->w + s->pad_w) r.w1 = s->w + s->pad_w;
    r.divisor = (r.h1 - r.h0) * (r.w1 - r.w0);
    if (r.h0 < 0) r.h0 = 0;
    if (r.w0 < 0) r.w0 = 0;
    if (r.h1 > s->h) r.h1 = s->h;
    if (r.w1 > s->w) r.w1 = s->w;
    return r;
}

void bg_avg_pool2d_forward(const bg_pool2d_shape *s, float *y, const float *x) {
    const int64_t H = s->h, W = s->w, OH = s->oh, OW = s->ow;
#pragma omp parallel for schedule(static) if (s->n * s->c * OH * OW >= 4096)
    for (int64_t pl = 0; pl < s->n * s->c; pl++) {
        const float *xp = x + pl * H * W;
        float *yp = y + pl * OH * OW;
        for (int64_t i = 0; i < OH; i++) {
            for (int64_t j = 0; j < OW; j++) {
                window r = avg_window(s, i, j);
                if (r.h0 >= r.h1 || r.w0 >= r.w1) {
                    yp[i * OW + j] = 0.0f;
                    continue;
                }
                double acc = 0.0;   /* torch's acc_type<float> on CPU is double */
                for (int64_t ih = r.h0; ih < r.h1; ih++)
                    for (int64_t iw = r.w0; iw < r.w1; iw++) acc += xp[ih * W + iw];
                yp[i * OW + j] = (float)(acc / (double)r.divisor);
            }
        }
    }
}

void bg_avg_pool2d_backward(const bg_pool2d_shape *s, float *dx, const float *dy) {
    const int64_t H = s->h, W = s->w, OH = s->oh, OW = s->ow;
#pragma omp parallel for schedule(static) if (s->n * s->c * OH * OW >= 4096)
    for (int64_t pl = 0; pl < s->n * s->c; pl++) {
        float *dxp = dx + pl * H * W;
        const float *dyp = dy + pl * OH * OW;
        for (int64_t i = 0; i < OH; i++) {
            for (int64_t j = 0; j < OW; j++) {
                window r = avg_window(s, i, j);
                float g = dyp[i * OW + j] / (float)r.divisor;
                for (int64_t ih = r.h0; ih < r.h1; ih++)
                    for (int64_t iw = r.w0; iw < r.w1; iw++) dxp[ih * W + iw] += g;
            }
        }
    }
}
