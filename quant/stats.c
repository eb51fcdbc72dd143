/* stats.c — quantization error sums of one tensor and its fake-quantized
 * copy (quant/quant.h "quantization error sums"), in one pass, in double. */
#include <math.h>

#include "quant/quant.h"

void bg_quant_stats_compute(bg_quant_stats *s, const float *x, const float *q, int64_t n, int8_t *levels) {
    double sx2 = 0, se2 = 0, sxq = 0, sq2 = 0;
    int64_t zeros = 0;
    for (int64_t i = 0; i < n; i++) {
        double a = x[i], b = q[i], e = a - b;
        sx2 += a * a;
        se2 += e * e;
        sxq += a * b;
        sq2 += b * b;
        zeros += q[i] == 0.0f;
        if (levels) levels[i] = (int8_t)((q[i] > 0.0f) - (q[i] < 0.0f));
    }
    s->n = n;
    s->sum_x2 = sx2, s->sum_err2 = se2, s->sum_xq = sxq, s->sum_q2 = sq2;
    s->zeros = zeros;
}

void bg_quant_error_from_stats(const bg_quant_stats *s, bg_quant_error *out) {
    if (!out) return;
    if (!s || s->n <= 0) {
        out->mse = out->sqnr_db = out->cosine = NAN;
        return;
    }
    out->mse = s->sum_err2 / (double)s->n;
    // Exact quantization has no noise: +inf dB (also for an all-zero x).
    if (s->sum_err2 == 0.0) out->sqnr_db = INFINITY;
    else if (s->sum_x2 == 0.0) out->sqnr_db = -INFINITY;
    else out->sqnr_db = 10.0 * log10(s->sum_x2 / s->sum_err2);
    if (s->sum_x2 == 0.0 && s->sum_q2 == 0.0) out->cosine = 1.0;
    else if (s->sum_x2 == 0.0 || s->sum_q2 == 0.0) out->cosine = 0.0;
    else out->cosine = s->sum_xq / sqrt(s->sum_x2 * s->sum_q2);
}

void bg_quant_error_compute(const float *x, const float *q, int64_t n, bg_quant_error *out) {
    bg_quant_stats s = {0};
    bg_quant_stats_compute(&s, x, q, n, NULL);
    bg_quant_error_from_stats(&s, out);
}
