/* gptq.c — GPTQ weight rounding (Frantar et al. 2022): columns of a weight
 * matrix are rounded one at a time, and each column's rounding error is
 * spread over the columns not yet rounded through the inverse Hessian's
 * upper Cholesky factor, so that the layer's output on the calibration
 * inputs moves as little as possible. Pure math in double on plain arrays
 * (no lazy blocking: one rank-1 update per column), libc/libm only; calls
 * tensor/ for bg_status and bg_set_error. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"

#define OP "gptq_quantize"

/* In-place lower Cholesky factor of the symmetric n x n matrix a (only its
 * lower triangle is read or written; row-wise, so the inner loops run along
 * rows). Returns -1, or the first column whose pivot is not positive (a NaN
 * pivot counts as not positive), with that pivot in *pivot. */
static int64_t cholesky_lower(double *a, int64_t n, double *pivot) {
    for (int64_t i = 0; i < n; i++) {
        double *ri = a + i * n;
        for (int64_t j = 0; j <= i; j++) {
            const double *rj = a + j * n;
            double s = ri[j];
            for (int64_t k = 0; k < j; k++) s -= ri[k] * rj[k];
            if (j < i) {
                ri[j] = s / rj[j];
            } else if (s > 0.0) {
                ri[i] = sqrt(s);
            } else {
                *pivot = s;
                return i;
            }
        }
    }
    return -1;
}

/* inv = L^-1 for the lower factor l (lower triangle of inv written, upper
 * zeroed): row i of L^-1 is (e_i - sum_{k<i} L[i][k] row_k) / L[i][i], which
 * keeps every update a contiguous row operation. */
static void invert_lower(const double *l, double *inv, int64_t n) {
    memset(inv, 0, (size_t)(n * n) * sizeof *inv);
    for (int64_t i = 0; i < n; i++) {
        double *ri = inv + i * n;
        ri[i] = 1.0;
        for (int64_t k = 0; k < i; k++) {
            const double c = l[i * n + k];
            const double *rk = inv + k * n;
            for (int64_t j = 0; j <= k; j++) ri[j] -= c * rk[j];
        }
        const double d = l[i * n + i];
        for (int64_t j = 0; j <= i; j++) ri[j] /= d;
    }
}

/* The lower triangle of out = inv^T inv (= H^-1 when inv = L^-1), summed
 * as outer products of the rows of inv so that the loops stay contiguous. */
static void gram_lower(const double *inv, double *out, int64_t n) {
    memset(out, 0, (size_t)(n * n) * sizeof *out);
    for (int64_t k = 0; k < n; k++) {
        const double *rk = inv + k * n;
        for (int64_t i = 0; i <= k; i++) {
            const double c = rk[i];
            double *ro = out + i * n;
            for (int64_t j = 0; j <= i; j++) ro[j] += c * rk[j];
        }
    }
}

/* Symmetric rounding of one weight to its grid, dequantized. */
static double quantize_one(double w, double scale, int32_t qmin, int32_t qmax) {
    double q = nearbyint(w / scale);   // default rounding mode: half to even
    if (q < qmin) q = qmin;
    if (q > qmax) q = qmax;
    return q * scale;
}

static bg_status check_args(const float *w, int64_t rows, int64_t cols, const double *H, const float *scale,
                            int32_t qmin, int32_t qmax, double percdamp, const float *wq) {
    if (!w || !H || !scale || !wq)
        return bg_set_error(BG_ERR_ARG, OP ": %s is NULL", !w ? "w" : !H ? "H" : !scale ? "scale" : "wq");
    if (rows <= 0 || cols <= 0)
        return bg_set_error(BG_ERR_ARG, OP ": rows and cols must be positive, got %lld x %lld", (long long)rows,
                            (long long)cols);
    // Both W (rows x cols) and the two cols x cols work matrices must be addressable.
    const int64_t limit = (int64_t)(SIZE_MAX / sizeof(double));
    if (cols > limit / cols || rows > limit / cols)
        return bg_set_error(BG_ERR_ARG, OP ": %lld x %lld is too large", (long long)rows, (long long)cols);
    if (qmin > qmax) return bg_set_error(BG_ERR_ARG, OP ": qmin %d > qmax %d", (int)qmin, (int)qmax);
    if (!(percdamp >= 0.0) || !isfinite(percdamp))
        return bg_set_error(BG_ERR_ARG, OP ": percdamp must be finite and >= 0, got %g", percdamp);
    for (int64_t r = 0; r < rows; r++)
        if (!(scale[r] > 0.0f) || !isfinite(scale[r]))
            return bg_set_error(BG_ERR_ARG, OP ": scale[%lld] must be finite and > 0, got %g", (long long)r,
                                (double)scale[r]);
    // Rows are rewritten while later columns of w are still to be read.
    const uintptr_t a = (uintptr_t)w, b = (uintptr_t)wq, n = (uintptr_t)(rows * cols) * sizeof(float);
    if (a < b + n && b < a + n) return bg_set_error(BG_ERR_ARG, OP ": wq overlaps w");
    return BG_OK;
}

/* a = H with GPTQ's fixes: a dead input (H_jj == 0) gets H_jj = 1 (its
 * weights are zeroed by the caller), then percdamp * mean(diag) — the mean
 * taken after that fix, as the reference implementation does — is added
 * to the diagonal. Returns the damping added. */
static double damped_hessian(const double *H, int64_t cols, double percdamp, double *a) {
    memcpy(a, H, (size_t)(cols * cols) * sizeof *a);
    double mean = 0.0;
    for (int64_t j = 0; j < cols; j++) {
        if (a[j * cols + j] == 0.0) a[j * cols + j] = 1.0;
        mean += a[j * cols + j];
    }
    // (+ 0.0: no "-0 damping" in a message when percdamp is 0 and H has negative diagonals)
    const double damp = percdamp * (mean / (double)cols) + 0.0;
    for (int64_t j = 0; j < cols; j++) a[j * cols + j] += damp;
    return damp;
}

/* u (row-major, upper) = the upper Cholesky factor of (H + damp)^-1, using a
 * as scratch. */
static bg_status inverse_upper_factor(const double *H, int64_t cols, double percdamp, double *a, double *u) {
    const double damp = damped_hessian(H, cols, percdamp, a);
    double pivot = 0.0;
    int64_t bad = cholesky_lower(a, cols, &pivot);
    if (bad >= 0)
        return bg_set_error(BG_ERR_NAN,
                            OP ": H + %g damping is not positive definite: Cholesky pivot %g at column %lld", damp,
                            pivot, (long long)bad);
    invert_lower(a, u, cols);   // u = L^-1
    gram_lower(u, a, cols);     // a = L^-T L^-1 = (H + damp)^-1
    bad = cholesky_lower(a, cols, &pivot);
    if (bad >= 0)   // exact arithmetic never gets here: H is too ill-conditioned for double
        return bg_set_error(BG_ERR_NAN,
                            OP ": the inverse of H + %g damping is not numerically positive definite at column "
                            "%lld (pivot %g): raise percdamp",
                            damp, (long long)bad, pivot);
    for (int64_t i = 0; i < cols; i++)   // U = L'^T, stored by rows for the update loop
        for (int64_t j = 0; j < cols; j++) u[i * cols + j] = j >= i ? a[j * cols + i] : 0.0;
    return BG_OK;
}

/* Rounds column j of every row of W (double, rows x cols) and pushes each
 * row's error onto its columns > j: W[r][k] -= (W[r][j] - q) / U[j][j] * U[j][k]. */
static void round_column(double *W, int64_t rows, int64_t cols, int64_t j, const double *u, const float *scale,
                         int32_t qmin, int32_t qmax, float *wq) {
    const double *uj = u + j * cols;
    for (int64_t r = 0; r < rows; r++) {
        double *wr = W + r * cols;
        const double q = quantize_one(wr[j], (double)scale[r], qmin, qmax);
        const double err = (wr[j] - q) / uj[j];
        for (int64_t k = j + 1; k < cols; k++) wr[k] -= err * uj[k];
        wq[r * cols + j] = (float)q;
    }
}

bg_status bg_gptq_quantize(const float *w, int64_t rows, int64_t cols, const double *H, const float *scale,
                           int32_t qmin, int32_t qmax, double percdamp, float *wq, float *rounded_from) {
    bg_status st = check_args(w, rows, cols, H, scale, qmin, qmax, percdamp, wq);
    if (st != BG_OK) return st;
    const size_t nn = (size_t)(cols * cols);
    double *a = malloc(nn * sizeof *a), *u = malloc(nn * sizeof *u);
    double *W = malloc((size_t)(rows * cols) * sizeof *W);
    if (!a || !u || !W) {
        st = bg_set_error(BG_ERR_NOMEM, OP ": out of memory for %lld x %lld", (long long)rows, (long long)cols);
        goto done;
    }
    st = inverse_upper_factor(H, cols, percdamp, a, u);
    if (st != BG_OK) goto done;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++)   // a dead input's weights do nothing: round them to 0
            W[r * cols + j] = H[j * cols + j] == 0.0 ? 0.0 : (double)w[r * cols + j];
    for (int64_t j = 0; j < cols; j++) round_column(W, rows, cols, j, u, scale, qmin, qmax, wq);
    // Column j is never updated after its own rounding: W now holds the
    // values the codes were rounded from.
    if (rounded_from)
        for (int64_t i = 0; i < rows * cols; i++) rounded_from[i] = (float)W[i];
done:
    free(a);
    free(u);
    free(W);
    return st;
}
