/* eltwise.c — the scalar references (`_ref`) of every entry of bg_kernels:
 * the specification the AVX2 / AVX-512 variants are tested against. Portable
 * C11 + libm + OpenMP; reached only through bg_kernels_ref_table. Sums that
 * feed a comparison with PyTorch accumulate in double. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/kernels_internal.h"

// ---------------------------------------------------------------------------
// element-wise

static void add_ref(float *y, const float *a, const float *b, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

static void sub_ref(float *y, const float *a, const float *b, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = a[i] - b[i];
}

static void mul_ref(float *y, const float *a, const float *b, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = a[i] * b[i];
}

static void div_ref(float *y, const float *a, const float *b, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = a[i] / b[i];
}

static void scale_ref(float *y, const float *x, float a, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = a * x[i];
}

/* y += a*x, fused (one rounding) like the SIMD variants' FMA */
static void axpy_ref(float *y, const float *x, float a, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
}

static void add_scalar_ref(float *y, const float *x, float a, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = x[i] + a;
}

static void unit_from_u8_ref(float *y, const uint8_t *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = (float)x[i] / 255.0f;
}

/* f(x) = max{0,x}; NaN stays NaN (torch.relu) */
static void relu_forward_ref(float *y, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

/* dx += dy*(x>0), as a select so that dy = inf where x <= 0 adds 0, not NaN */
static void relu_backward_ref(float *dx, const float *x, const float *dy, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] += x[i] > 0.0f ? dy[i] : 0.0f;
}

static void exp_ref(float *y, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = expf(x[i]);
}

/* f(x) = 1/(1+e^-x) */
static void sigmoid_forward_ref(float *y, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));
}

static void tanh_forward_ref(float *y, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
}

#define BG_SQRT1_2 0.70710678118654752440f                 /* 1/sqrt(2) */
#define BG_INV_SQRT_2PI 0.39894228040143267794f            /* 1/sqrt(2 pi) */
#define BG_SQRT_2_OVER_PI 0.79788456080286535588f          /* sqrt(2/pi) */
#define BG_GELU_KAPPA 0.044715f

/* f(x) = x/2 (1 + erf(x/sqrt2)), written x/2 erfc(-x/sqrt2): the same
 * function without 1 + erf's cancellation for x << 0 */
static void gelu_forward_ref(float *y, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * erfcf(x[i] * -BG_SQRT1_2);
}

/* f'(x) = Phi(x) + x phi(x) */
static void gelu_backward_ref(float *dx, const float *x, const float *dy, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float xi = x[i];
        float cdf = 0.5f * erfcf(xi * -BG_SQRT1_2);
        float pdf = BG_INV_SQRT_2PI * expf(-0.5f * xi * xi);
        dx[i] += dy[i] * (cdf + xi * pdf);
    }
}

/* f(x) = x/2 (1 + tanh(z)), z = sqrt(2/pi) (x + 0.044715 x^3), written
 * x sigmoid(2z) (1 + tanh z = 2 sigmoid(2z)): no cancellation for x << 0 */
static void gelu_tanh_forward_ref(float *y, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float xi = x[i];
        float z = BG_SQRT_2_OVER_PI * (xi + BG_GELU_KAPPA * (xi * xi) * xi);
        y[i] = xi / (1.0f + expf(-2.0f * z));
    }
}

/* f'(x) = (1+t)/2 + x/2 (1-t^2) sqrt(2/pi) (1 + 3*0.044715 x^2), t = tanh z;
 * with s = sigmoid(2z), (1+t)/2 = s and 1-t^2 = 4 s sigmoid(-2z) */
static void gelu_tanh_backward_ref(float *dx, const float *x, const float *dy, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float xi = x[i];
        float x2 = xi * xi;
        float z = BG_SQRT_2_OVER_PI * (xi + BG_GELU_KAPPA * x2 * xi);
        float s = 1.0f / (1.0f + expf(-2.0f * z));
        float sn = 1.0f / (1.0f + expf(2.0f * z));
        float d = s + 2.0f * xi * s * sn * BG_SQRT_2_OVER_PI * (1.0f + 3.0f * BG_GELU_KAPPA * x2);
        dx[i] += dy[i] * d;
    }
}

/* f(x) = x sigmoid(x) */
static void silu_forward_ref(float *y, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + expf(-x[i]));
}

/* f'(x) = s (1 + x (1-s)), s = sigmoid(x) */
static void silu_backward_ref(float *dx, const float *x, const float *dy, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-x[i]));
        dx[i] += dy[i] * (s * (1.0f + x[i] * (1.0f - s)));
    }
}

// ---------------------------------------------------------------------------
// reductions (sequential: the reference's order is the textbook one)

static float sum_ref(const float *x, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    return (float)s;
}

static int64_t first_nonfinite_ref(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return i;
    return -1;
}

/* NaN anywhere gives NaN (torch.max) */
static float max_ref(const float *x, int64_t n) {
    float m = x[0];
    for (int64_t i = 0; i < n; i++) {
        if (isnan(x[i])) return x[i];
        if (x[i] > m) m = x[i];
    }
    return m;
}

static float dot_ref(const float *a, const float *b, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return (float)s;
}

/* y[c] += sum_r x[r,c]; columns in blocks of 256 with double accumulators,
 * rows in order */
static void col_sum_ref(float *y, const float *x, int64_t rows, int64_t cols) {
    enum { CB = 256 };
    for (int64_t c0 = 0; c0 < cols; c0 += CB) {
        int64_t nc = cols - c0 < CB ? cols - c0 : CB;
        double acc[CB];
        for (int64_t j = 0; j < nc; j++) acc[j] = 0.0;
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = x + r * cols + c0;
            for (int64_t j = 0; j < nc; j++) acc[j] += xr[j];
        }
        for (int64_t j = 0; j < nc; j++) y[c0 + j] = (float)((double)y[c0 + j] + acc[j]);
    }
}

// ---------------------------------------------------------------------------
// rows

static void softmax_row_ref(float *yr, const float *xr, int64_t cols) {
    float m = -INFINITY;
    for (int64_t c = 0; c < cols; c++) m = xr[c] > m ? xr[c] : m;
    double s = 0.0;
    for (int64_t c = 0; c < cols; c++) {
        float e = expf(xr[c] - m);
        yr[c] = e;
        s += e;
    }
    float inv = (float)(1.0 / s);
    for (int64_t c = 0; c < cols; c++) yr[c] *= inv;
}

/* Small calls stay out of OpenMP (see eltwise_simd.inc). */
static void softmax_rows_ref(float *y, const float *x, int64_t rows, int64_t cols) {
    if (rows * cols < BG_PAR_MIN) {
        for (int64_t r = 0; r < rows; r++) softmax_row_ref(y + r * cols, x + r * cols, cols);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) softmax_row_ref(y + r * cols, x + r * cols, cols);
}

/* y = x - max - log(sum exp(x - max)) */
static void log_softmax_rows_ref(float *y, const float *x, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols >= BG_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        float m = -INFINITY;
        for (int64_t c = 0; c < cols; c++) m = xr[c] > m ? xr[c] : m;
        double s = 0.0;
        for (int64_t c = 0; c < cols; c++) s += expf(xr[c] - m);
        float lse = (float)log(s);
        for (int64_t c = 0; c < cols; c++) yr[c] = (xr[c] - m) - lse;
    }
}

/* mean and variance in double, two passes (no E[x^2]-E[x]^2 cancellation) */
static void layernorm_forward_ref(float *y, float *mean, float *rstd, const float *x,
                                  const float *w, const float *b, int64_t rows, int64_t cols,
                                  float eps) {
#pragma omp parallel for schedule(static) if (rows * cols >= BG_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        double s = 0.0;
        for (int64_t c = 0; c < cols; c++) s += xr[c];
        double mu = s / (double)cols;
        double v = 0.0;
        for (int64_t c = 0; c < cols; c++) {
            double d = (double)xr[c] - mu;
            v += d * d;
        }
        v /= (double)cols;
        float m = (float)mu;
        float rs = (float)(1.0 / sqrt(v + (double)eps));
        for (int64_t c = 0; c < cols; c++) {
            float o = (xr[c] - m) * rs;
            if (w) o *= w[c];
            if (b) o += b[c];
            yr[c] = o;
        }
        mean[r] = m;
        rstd[r] = rs;
    }
}

/* xhat = (x-mean)*rstd, g = dy*w:
 * dx += rstd * (g - mean(g) - xhat * mean(g*xhat)); dw += dy*xhat; db += dy */
static void layernorm_backward_ref(float *dx, float *dw, float *db, const float *dy,
                                   const float *x, const float *w, const float *mean,
                                   const float *rstd, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols >= BG_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols, *dyr = dy + r * cols;
        float *dxr = dx + r * cols;
        float m = mean[r], rs = rstd[r];
        double sg = 0.0, sgx = 0.0;
        for (int64_t c = 0; c < cols; c++) {
            float g = w ? dyr[c] * w[c] : dyr[c];
            float xh = (xr[c] - m) * rs;
            sg += g;
            sgx += (double)g * xh;
        }
        float mg = (float)(sg / (double)cols), mgx = (float)(sgx / (double)cols);
        for (int64_t c = 0; c < cols; c++) {
            float g = w ? dyr[c] * w[c] : dyr[c];
            float xh = (xr[c] - m) * rs;
            dxr[c] += rs * (g - mg - xh * mgx);
        }
    }
    /* dw, db: sums over rows, per column, rows in order */
    if (dw || db) {
#pragma omp parallel for schedule(static) if (rows * cols >= BG_PAR_MIN)
        for (int64_t c = 0; c < cols; c++) {
            double sw = 0.0, sb = 0.0;
            for (int64_t r = 0; r < rows; r++) {
                float d = dy[r * cols + c];
                sw += (double)d * ((x[r * cols + c] - mean[r]) * rstd[r]);
                sb += d;
            }
            if (dw) dw[c] = (float)((double)dw[c] + sw);
            if (db) db[c] = (float)((double)db[c] + sb);
        }
    }
}

/* rstd = 1/sqrt(mean(x^2)+eps), y = x*rstd*w */
static void rmsnorm_forward_ref(float *y, float *rstd, const float *x, const float *w,
                                int64_t rows, int64_t cols, float eps) {
#pragma omp parallel for schedule(static) if (rows * cols >= BG_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        double ss = 0.0;
        for (int64_t c = 0; c < cols; c++) ss += (double)xr[c] * xr[c];
        float rs = (float)(1.0 / sqrt(ss / (double)cols + (double)eps));
        for (int64_t c = 0; c < cols; c++) yr[c] = w ? xr[c] * rs * w[c] : xr[c] * rs;
        rstd[r] = rs;
    }
}

/* g = dy*w: dx += rstd * (g - x * rstd^2 * mean(g*x)); dw += dy*x*rstd */
static void rmsnorm_backward_ref(float *dx, float *dw, const float *dy, const float *x,
                                 const float *w, const float *rstd, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols >= BG_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols, *dyr = dy + r * cols;
        float *dxr = dx + r * cols;
        float rs = rstd[r];
        double sgx = 0.0;
        for (int64_t c = 0; c < cols; c++) {
            float g = w ? dyr[c] * w[c] : dyr[c];
            sgx += (double)g * xr[c];
        }
        float k = (float)(sgx / (double)cols) * rs * rs;
        for (int64_t c = 0; c < cols; c++) {
            float g = w ? dyr[c] * w[c] : dyr[c];
            dxr[c] += rs * (g - xr[c] * k);
        }
    }
    if (dw) {
#pragma omp parallel for schedule(static) if (rows * cols >= BG_PAR_MIN)
        for (int64_t c = 0; c < cols; c++) {
            double sw = 0.0;
            for (int64_t r = 0; r < rows; r++)
                sw += (double)dy[r * cols + c] * (x[r * cols + c] * rstd[r]);
            dw[c] = (float)((double)dw[c] + sw);
        }
    }
}

// ---------------------------------------------------------------------------
// optimizers: float op order of torch 1.13's _single_tensor_adam/adamw/sgd on
// CPU, whose vectorised add(alpha) is an FMA (ufunc::add -> vec::fmadd) while
// addcmul/addcdiv are a separate multiply and add.
//
// One deliberate difference from torch: a moment (Adam's m and v, SGD's
// momentum buffer) whose magnitude falls below FLT_MIN after its update is
// stored as +0 (flush_moment). Where a weight's gradient stays 0 (dead ReLU
// inputs, always-zero pixels) its moments decay geometrically (m by b1, v by
// b2 each step) into the subnormal range, and x86 handles subnormal operands
// in microcode at ~100x the cost of a normal multiply: after 2 MLP epochs
// 68,824 of the 669,712 moments were subnormal and an epoch took ~1.6x as
// long. A moment below FLT_MIN (1.2e-38) has no visible effect on the
// update: flushing m moves p by at most lr/bc1 * 1.2e-38 / eps (~1e-32 at
// Adam's defaults), flushing v moves denom = sqrt(v)/sqrt(bc2) + eps by less
// than 1.1e-19/sqrt(bc2), far below an ulp of eps, and flushing SGD's buffer
// moves p by lr * 1.2e-38. None of these reaches an ulp of a weight of
// ordinary size. This is done here, per value, and not with the MXCSR
// FTZ/DAZ bits: a library must not change its caller's floating-point
// environment, and FTZ would also flush everything else the thread computes. Every ISA flushes the same way (|x| < FLT_MIN,
// NaN kept), so the SIMD variants stay bitwise equal to these references.

/* x, or +0 when |x| is subnormal (or +-0) */
static inline float flush_moment(float x) { return fabsf(x) < FLT_MIN ? 0.0f : x; }

/* The shortest decimal that reads back as f, as a double: 0.9f -> 0.9. The
 * caller wrote the hyper-parameters as decimals (torch keeps them as Python
 * doubles) and 1 - (double)0.999f is 1.3e-5 away from 1 - 0.999. */
static double decimal_of(float f) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f) return d;
    }
    return (double)f;
}

/* bc = (float)(1 - b^t) for an integer step t: recover the double 1 - b^t
 * that torch uses, or (double)bc when no step t fits. */
static double bias_correction_of(double b, float bc) {
    if (!(b > 0.0 && b < 1.0 && bc > 0.0f && bc <= 1.0f)) return (double)bc;
    double t0 = bc < 1.0f ? nearbyint(log1p(-(double)bc) / log(b)) : ceil(log(0x1p-25) / log(b));
    double best = (double)bc;
    for (double t = t0 - 1.0; t <= t0 + 1.0; t += 1.0) {
        if (t < 1.0) continue;
        double c = 1.0 - pow(b, t);
        if ((float)c == bc) return c;
        // optim.c computes bc from the float beta: 1 - (double)0.999f^t.
        if ((float)(1.0 - pow((double)(float)b, t)) == bc) return c;
    }
    return best;
}

void bg_adam_scalars_init(bg_adam_scalars *k, float lr, float b1, float b2, float wd, float bc1,
                          float bc2) {
    double lrd = decimal_of(lr), b1d = decimal_of(b1), b2d = decimal_of(b2), wdd = decimal_of(wd);
    k->b1 = b1;
    k->b2 = b2;
    k->omb1 = (float)(1.0 - b1d);
    k->omb2 = (float)(1.0 - b2d);
    k->neg_step = (float)(-(lrd / bias_correction_of(b1d, bc1)));
    k->bc2_sqrt = (float)sqrt(bias_correction_of(b2d, bc2));
    k->decay = (float)(1.0 - lrd * wdd);
}

/* Adam:  g = fma(p, wd, g)                          (grad.add(param, alpha=wd))
 * AdamW: p = p * (1 - lr*wd)                        (param.mul_(1 - lr*wd))
 * m = fma(g, 1-b1, m*b1)                            (exp_avg.mul_(b1).add_(g, alpha=1-b1))
 * v = fma((1-b2)*g, g, v*b2)                        (exp_avg_sq.mul_(b2).addcmul_(g, g, value=1-b2),
 *                                                   whose AVX2 loop GCC contracts to an FMA)
 * denom = sqrt(v) / sqrt(bc2) + eps
 * p = p + (-lr/bc1) * m / denom                     (param.addcdiv_(m, denom, value=-step_size))
 * m and v are flushed to 0 below FLT_MIN (see above) before use and store.
 * The scalars are computed in double as torch does (bg_adam_scalars_init). */
static void adam_update_ref(float *p, const float *g, float *m, float *v, int64_t n, float lr,
                            float b1, float b2, float eps, float wd, bool decoupled, float bc1,
                            float bc2) {
    bg_adam_scalars k;
    bg_adam_scalars_init(&k, lr, b1, b2, wd, bc1, bc2);
    const bool coupled_wd = !decoupled && wd != 0.0f;
    const bool decoupled_wd = decoupled && wd != 0.0f;
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float pi = p[i], gi = g[i];
        if (coupled_wd) gi = fmaf(pi, wd, gi);
        if (decoupled_wd) pi = pi * k.decay;
        float mi = flush_moment(fmaf(gi, k.omb1, m[i] * b1));
        float vi = flush_moment(fmaf(k.omb2 * gi, gi, v[i] * b2));
        float denom = sqrtf(vi) / k.bc2_sqrt + eps;
        p[i] = pi + k.neg_step * mi / denom;
        m[i] = mi;
        v[i] = vi;
    }
}

static void sgd_update_ref(float *p, const float *g, float *buf, int64_t n, float lr,
                           float momentum, float dampening, float wd, bool nesterov,
                           bool first_step) {
    const float omd = (float)(1.0 - (double)dampening);
    const float neg_lr = -lr;
#pragma omp parallel for schedule(static) if (n >= BG_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float d = g[i];
        if (wd != 0.0f) d = fmaf(p[i], wd, d);             /* d_p.add(param, alpha=wd) */
        if (momentum != 0.0f) {
            float bi = flush_moment(first_step ? d : fmaf(d, omd, buf[i] * momentum));
            buf[i] = bi;
            d = nesterov ? fmaf(bi, momentum, d) : bi;     /* d_p.add(buf, alpha=momentum) */
        }
        p[i] = fmaf(d, neg_lr, p[i]);                      /* param.add_(d_p, alpha=-lr) */
    }
}

// ---------------------------------------------------------------------------

const bg_kernels bg_kernels_ref_table = {
    .isa_id             = BG_ISA_REF,
    .isa                = "ref",
    .add                = add_ref,
    .sub                = sub_ref,
    .mul                = mul_ref,
    .div                = div_ref,
    .scale              = scale_ref,
    .axpy               = axpy_ref,
    .add_scalar         = add_scalar_ref,
    .relu_forward       = relu_forward_ref,
    .unit_from_u8       = unit_from_u8_ref,
    .relu_backward      = relu_backward_ref,
    .exp                = exp_ref,
    .sigmoid_forward    = sigmoid_forward_ref,
    .tanh_forward       = tanh_forward_ref,
    .gelu_forward       = gelu_forward_ref,
    .gelu_backward      = gelu_backward_ref,
    .gelu_tanh_forward  = gelu_tanh_forward_ref,
    .gelu_tanh_backward = gelu_tanh_backward_ref,
    .silu_forward       = silu_forward_ref,
    .silu_backward      = silu_backward_ref,
    .sum                = sum_ref,
    .max                = max_ref,
    .first_nonfinite    = first_nonfinite_ref,
    .dot                = dot_ref,
    .col_sum            = col_sum_ref,
    .softmax_rows       = softmax_rows_ref,
    .log_softmax_rows   = log_softmax_rows_ref,
    .layernorm_forward  = layernorm_forward_ref,
    .layernorm_backward = layernorm_backward_ref,
    .rmsnorm_forward    = rmsnorm_forward_ref,
    .rmsnorm_backward   = rmsnorm_backward_ref,
    .adam_update        = adam_update_ref,
    .sgd_update         = sgd_update_ref,
};
