/* conv.c — 2-D convolution (NCHW input, OIHW weight, groups): the shape rule,
 * the scalar references (double accumulation, gather form so every output is
 * written by one thread: deterministic), and the entry points, which use
 * oneDNN (dnnl.c) when built in and the reference otherwise. */
#include "kernels/kernels_internal.h"

bool bg_conv2d_shape_infer(bg_conv2d_shape *s) {
    /* 0 reads as the neutral value, so a zero-initialised struct works */
    if (s->stride_h == 0) s->stride_h = 1;
    if (s->stride_w == 0) s->stride_w = 1;
    if (s->dil_h == 0) s->dil_h = 1;
    if (s->dil_w == 0) s->dil_w = 1;
    if (s->groups == 0) s->groups = 1;
    s->oh = s->ow = 0;
    if (s->n < 0 || s->c <= 0 || s->h <= 0 || s->w <= 0 || s->oc <= 0 || s->kh <= 0 ||
        s->kw <= 0 || s->stride_h < 0 || s->stride_w < 0 || s->pad_h < 0 || s->pad_w < 0 ||
        s->dil_h < 0 || s->dil_w < 0 || s->groups < 0 || s->c % s->groups != 0 ||
        s->oc % s->groups != 0)
        return false;
    int64_t eh = s->h + 2 * s->pad_h - s->dil_h * (s->kh - 1) - 1;
    int64_t ew = s->w + 2 * s->pad_w - s->dil_w * (s->kw - 1) - 1;
    if (eh < 0 || ew < 0) return false;
    s->oh = eh / s->stride_h + 1;
    s->ow = ew / s->stride_w + 1;
    return true;
}

// ---------------------------------------------------------------------------
// references

/* y[n,o,i,j] = b[o] + sum_{c in group(o), p, q} x[n,c,i*sh-ph+p*dh, j*sw-pw+q*dw] w[o,c',p,q] */
void bg_conv2d_forward_ref(const bg_conv2d_shape *s, float *y, const float *x, const float *w,
                           const float *b) {
    const int64_t icg = s->c / s->groups, ocg = s->oc / s->groups;
    const int64_t H = s->h, W = s->w, OH = s->oh, OW = s->ow;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < s->n; n++) {
        for (int64_t o = 0; o < s->oc; o++) {
            const int64_t g = o / ocg;
            const float *wo = w + o * icg * s->kh * s->kw;
            float *yo = y + (n * s->oc + o) * OH * OW;
            for (int64_t i = 0; i < OH; i++) {
                for (int64_t j = 0; j < OW; j++) {
                    double acc = b ? (double)b[o] : 0.0;
                    for (int64_t c = 0; c < icg; c++) {
                        const float *xc = x + (n * s->c + g * icg + c) * H * W;
                        const float *wc = wo + c * s->kh * s->kw;
                        for (int64_t p = 0; p < s->kh; p++) {
                            int64_t ih = i * s->stride_h - s->pad_h + p * s->dil_h;
                            if (ih < 0 || ih >= H) continue;
                            for (int64_t q = 0; q < s->kw; q++) {
                                int64_t iw = j * s->stride_w - s->pad_w + q * s->dil_w;
                                if (iw < 0 || iw >= W) continue;
                                acc += (double)xc[ih * W + iw] * (double)wc[p * s->kw + q];
                            }
                        }
                    }
                    yo[i * OW + j] = (float)acc;
                }
            }
        }
    }
}

/* dx[n,c,ih,iw] += sum over the (o, p, q) whose window covers (ih, iw) of dy w */
void bg_conv2d_backward_data_ref(const bg_conv2d_shape *s, float *dx, const float *dy,
                                 const float *w) {
    const int64_t icg = s->c / s->groups, ocg = s->oc / s->groups;
    const int64_t H = s->h, W = s->w, OH = s->oh, OW = s->ow;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < s->n; n++) {
        for (int64_t c = 0; c < s->c; c++) {
            const int64_t g = c / icg, cl = c % icg;
            float *dxc = dx + (n * s->c + c) * H * W;
            for (int64_t ih = 0; ih < H; ih++) {
                for (int64_t iw = 0; iw < W; iw++) {
                    double acc = 0.0;
                    for (int64_t o = g * ocg; o < (g + 1) * ocg; o++) {
                        const float *dyo = dy + (n * s->oc + o) * OH * OW;
                        const float *wc = w + (o * icg + cl) * s->kh * s->kw;
                        for (int64_t p = 0; p < s->kh; p++) {
                            int64_t th = ih + s->pad_h - p * s->dil_h;
                            if (th < 0 || th % s->stride_h != 0) continue;
                            int64_t i = th / s->stride_h;
                            if (i >= OH) continue;
                            for (int64_t q = 0; q < s->kw; q++) {
                                int64_t tw = iw + s->pad_w - q * s->dil_w;
                                if (tw < 0 || tw % s->stride_w != 0) continue;
                                int64_t j = tw / s->stride_w;
                                if (j >= OW) continue;
                                acc += (double)dyo[i * OW + j] * (double)wc[p * s->kw + q];
                            }
                        }
                    }
                    dxc[ih * W + iw] = (float)((double)dxc[ih * W + iw] + acc);
                }
            }
        }
    }
}

/* dw[o,c',p,q] += sum_{n,i,j} dy[n,o,i,j] x[n,c,i*sh-ph+p*dh, j*sw-pw+q*dw]; db[o] += sum dy */
void bg_conv2d_backward_weights_ref(const bg_conv2d_shape *s, float *dw, float *db,
                                    const float *dy, const float *x) {
    const int64_t icg = s->c / s->groups, ocg = s->oc / s->groups;
    const int64_t H = s->h, W = s->w, OH = s->oh, OW = s->ow;
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < s->oc; o++) {
        const int64_t g = o / ocg;
        for (int64_t c = 0; c < icg; c++) {
            for (int64_t p = 0; p < s->kh; p++) {
                for (int64_t q = 0; q < s->kw; q++) {
                    double acc = 0.0;
                    for (int64_t n = 0; n < s->n; n++) {
                        const float *dyo = dy + (n * s->oc + o) * OH * OW;
                        const float *xc = x + (n * s->c + g * icg + c) * H * W;
                        for (int64_t i = 0; i < OH; i++) {
                            int64_t ih = i * s->stride_h - s->pad_h + p * s->dil_h;
                            if (ih < 0 || ih >= H) continue;
                            for (int64_t j = 0; j < OW; j++) {
                                int64_t iw = j * s->stride_w - s->pad_w + q * s->dil_w;
                                if (iw < 0 || iw >= W) continue;
                                acc += (double)dyo[i * OW + j] * (double)xc[ih * W + iw];
                            }
                        }
                    }
                    float *d = dw + ((o * icg + c) * s->kh + p) * s->kw + q;
                    *d = (float)((double)*d + acc);
                }
            }
        }
        if (db) {
            double acc = 0.0;
            for (int64_t n = 0; n < s->n; n++) {
                const float *dyo = dy + (n * s->oc + o) * OH * OW;
                for (int64_t k = 0; k < OH * OW; k++) acc += dyo[k];
            }
            db[o] = (float)((double)db[o] + acc);
        }
    }
}

// ---------------------------------------------------------------------------
// entry points

void bg_conv2d_forward(const bg_conv2d_shape *s, float *y, const float *x, const float *w,
                       const float *b) {
#if defined(BG_WITH_DNNL)
    if (bg_conv2d_forward_dnnl(s, y, x, w, b)) return;
#endif
    bg_conv2d_forward_ref(s, y, x, w, b);
}

void bg_conv2d_backward_data(const bg_conv2d_shape *s, float *dx, const float *dy, const float *w) {
#if defined(BG_WITH_DNNL)
    if (bg_conv2d_backward_data_dnnl(s, dx, dy, w)) return;
#endif
    bg_conv2d_backward_data_ref(s, dx, dy, w);
}

void bg_conv2d_backward_weights(const bg_conv2d_shape *s, float *dw, float *db, const float *dy,
                                const float *x) {
#if defined(BG_WITH_DNNL)
    if (bg_conv2d_backward_weights_dnnl(s, dw, db, dy, x)) return;
#endif
    bg_conv2d_backward_weights_ref(s, dw, db, dy, x);
}
