/* test_gptq.c — GPTQ rounding (quant/gptq.c, bg_gptq_quantize):
 *   - against numpy (tests/reference/gptq.safetensors, from
 *     make_gptq_reference.py, float64 loops cross-checked there with torch's
 *     lazy-batch form): int4 per-row scales with correlated inputs, ternary
 *     per-tensor with a dead input, int8; wq within 1e-4 absolute;
 *   - the output error |(W - Wq) X^T| of GPTQ is at most round-to-nearest's
 *     on the int4 case;
 *   - by hand: a diagonal H gives exactly round to nearest; for a 1x2 with a
 *     correlated H the second column absorbs e0 * H01 / (H11 + damp); a dead
 *     input rounds to 0 and H is left as it was;
 *   - the error sentences (NULL, sizes, ranges, a non-positive-definite H). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/test_util.h"

#define REF_FILE "gptq.safetensors"
#define REF_GENERATOR "tests/reference/make_gptq_reference.py"
/* REF_VERSION of the generator this test was written against. */
#define REF_VERSION "1"

/* Plain round to nearest with the same rule as the contract. */
static void round_to_nearest(const float *w, int64_t rows, int64_t cols, const float *scale, int32_t qmin,
                             int32_t qmax, float *out) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) {
            double q = nearbyint((double)w[r * cols + j] / scale[r]);
            q = q < qmin ? qmin : q > qmax ? qmax : q;
            out[r * cols + j] = (float)(q * scale[r]);
        }
}

/* |(W - Wq) X^T|_F for X [n, cols]: how far the layer's outputs move. */
static double output_error(const float *w, const float *wq, int64_t rows, int64_t cols, const float *X, int64_t n) {
    double sum = 0.0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < n; i++) {
            double y = 0.0;
            for (int64_t j = 0; j < cols; j++) y += ((double)w[r * cols + j] - wq[r * cols + j]) * X[i * cols + j];
            sum += y * y;
        }
    return sqrt(sum);
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static bool get(const bg_safetensors *st, const char *cs, const char *field, bg_dtype dtype, bg_tensor *t) {
    char key[96];
    snprintf(key, sizeof key, "gptq.%s.%s", cs, field);
    if (!CHECK_MSG(bg_safetensors_get(st, key, t) == BG_OK, "%s; re-run %s", bg_last_error(), REF_GENERATOR))
        return false;
    return CHECK_MSG(t->dtype == dtype, "%s has dtype %d, want %d", key, (int)t->dtype, (int)dtype);
}

static void test_reference_case(const bg_safetensors *st, const char *cs) {
    bg_tensor w, X, H, scale, qr, pd, wq_ref, rtn_ref;
    if (!get(st, cs, "w", BG_DTYPE_F32, &w) || !get(st, cs, "X", BG_DTYPE_F32, &X) ||
        !get(st, cs, "H", BG_DTYPE_F32, &H) || !get(st, cs, "scale", BG_DTYPE_F32, &scale) ||
        !get(st, cs, "qrange", BG_DTYPE_I32, &qr) || !get(st, cs, "percdamp", BG_DTYPE_F32, &pd) ||
        !get(st, cs, "wq", BG_DTYPE_F32, &wq_ref) || !get(st, cs, "wq_rtn", BG_DTYPE_F32, &rtn_ref))
        return;
    const int64_t rows = w.shape[0], cols = w.shape[1], n = X.shape[0];
    if (!CHECK_MSG(w.ndim == 2 && X.ndim == 2 && X.shape[1] == cols && bg_numel(&H) == cols * cols &&
                       bg_numel(&scale) == rows && bg_numel(&qr) == 2 && bg_numel(&wq_ref) == rows * cols,
                   "%s: reference shapes do not fit", cs))
        return;
    const int32_t qmin = ((const int32_t *)qr.data)[0], qmax = ((const int32_t *)qr.data)[1];
    double *h = malloc((size_t)(cols * cols) * sizeof *h);
    float *wq = malloc((size_t)(rows * cols) * sizeof *wq), *rtn = malloc((size_t)(rows * cols) * sizeof *rtn);
    float *from = malloc((size_t)(rows * cols) * sizeof *from);
    if (!CHECK(h && wq && rtn && from)) goto done;
    for (int64_t i = 0; i < cols * cols; i++) h[i] = bg_f32(&H)[i];   // the H the reference ran on
    bg_status s = bg_gptq_quantize(bg_f32(&w), rows, cols, h, bg_f32(&scale), qmin, qmax, bg_f32(&pd)[0], wq, from);
    if (!CHECK_MSG(s == BG_OK, "%s: %s", cs, bg_last_error())) goto done;
    char what[64];
    snprintf(what, sizeof what, "%s wq", cs);
    CHECK_ARRAYS(what, wq, bg_f32(&wq_ref), rows * cols, 1e-4, 0.0);
    round_to_nearest(bg_f32(&w), rows, cols, bg_f32(&scale), qmin, qmax, rtn);
    snprintf(what, sizeof what, "%s rtn", cs);
    CHECK_ARRAYS(what, rtn, bg_f32(&rtn_ref), rows * cols, 0.0, 0.0);
    const double eg = output_error(bg_f32(&w), wq, rows, cols, bg_f32(&X), n);
    const double er = output_error(bg_f32(&w), rtn, rows, cols, bg_f32(&X), n);
    printf("%s: %lldx%lld [%d, %d]: max |wq - numpy| %.3g; |(W - Wq) X^T| gptq %.6g, round to nearest %.6g\n", cs,
           (long long)rows, (long long)cols, (int)qmin, (int)qmax, max_abs_diff(wq, bg_f32(&wq_ref), rows * cols),
           eg, er);
    if (strcmp(cs, "int4_rows") == 0) CHECK_MSG(eg <= er, "%s: gptq error %.9g > rtn %.9g", cs, eg, er);
    // the weights the codes were rounded from round to them again
    int64_t off = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) {
            float sc = bg_f32(&scale)[r], c = nearbyintf(from[r * cols + j] / sc);
            c = c < (float)qmin ? (float)qmin : c > (float)qmax ? (float)qmax : c;
            off += fabsf(c * sc - wq[r * cols + j]) > 1e-6f * sc;
        }
    CHECK_MSG(off == 0, "%s: %lld compensated weights do not round to their codes", cs, (long long)off);
done:
    free(h);
    free(wq);
    free(rtn);
    free(from);
}

/* No off-diagonal H: nothing to push errors onto, so GPTQ is round to nearest. */
static void test_diagonal_is_rtn(int64_t rows, int64_t cols, bool identity) {
    float *w = malloc((size_t)(rows * cols) * sizeof *w), *wq = malloc((size_t)(rows * cols) * sizeof *wq);
    float *rtn = malloc((size_t)(rows * cols) * sizeof *rtn), *scale = malloc((size_t)rows * sizeof *scale);
    double *H = calloc((size_t)(cols * cols), sizeof *H);
    if (!CHECK(w && wq && rtn && scale && H)) goto done;
    for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)sin(1.7 * (double)i + 0.3) * 2.5f;
    for (int64_t r = 0; r < rows; r++) scale[r] = 0.3f + 0.05f * (float)r;
    for (int64_t j = 0; j < cols; j++) H[j * cols + j] = identity ? 1.0 : 0.5 + (double)(j % 7);
    CHECK_MSG(bg_gptq_quantize(w, rows, cols, H, scale, -8, 7, 0.01, wq, NULL) == BG_OK, "%s", bg_last_error());
    round_to_nearest(w, rows, cols, scale, -8, 7, rtn);
    CHECK_MSG(memcmp(wq, rtn, (size_t)(rows * cols) * sizeof *wq) == 0,
              "diagonal H (%lldx%lld): GPTQ differs from round to nearest by %.3g", (long long)rows,
              (long long)cols, max_abs_diff(wq, rtn, rows * cols));
done:
    free(w), free(wq), free(rtn), free(scale), free(H);
}

/* 1x2, H = [[h00, h01], [h01, h11]]: column 0 rounds alone, then column 1
 * becomes w1 + (w0 - q0) * h01 / (h11 + damp) (the OBS update) before it rounds. */
static void test_correlated_pair(void) {
    const double h00 = 2.0, h01 = 0.75, h11 = 1.0, pd = 0.01, damp = pd * (h00 + h11) / 2;
    const double H[4] = {h00, h01, h01, h11};
    const float scale = 0.25f;
    int checked = 0, flipped = 0, bad = 0;
    for (int a = -20; a <= 20; a++)
        for (int b = -20; b <= 20; b++) {
            const float w[2] = {0.0371f * (float)a, 0.0529f * (float)b};
            const double q0 = nearbyint(w[0] / (double)scale) * scale;
            const double w1 = w[1] + (w[0] - q0) * h01 / (h11 + damp);
            const double f = w1 / scale - floor(w1 / scale);
            if (fabs(f - 0.5) < 1e-9) continue;   // too close to a tie to call
            const double q1 = nearbyint(w1 / scale) * scale;
            float wq[2];
            if (bg_gptq_quantize(w, 1, 2, H, &scale, -8, 7, pd, wq, NULL) != BG_OK) {
                bad++;
                continue;
            }
            checked++;
            flipped += q1 != nearbyint(w[1] / (double)scale) * scale;
            if (wq[0] != (float)q0 || wq[1] != (float)q1) {
                if (bad++ < 3)
                    fprintf(stderr, "  w = (%g, %g): got (%g, %g), want (%g, %g)\n", w[0], w[1], wq[0], wq[1], q0,
                            q1);
            }
        }
    CHECK_MSG(bad == 0 && checked > 1000, "correlated pair: %d of %d differ from the OBS update", bad, checked);
    CHECK_MSG(flipped > 100, "correlated pair: only %d of %d second columns change their rounding", flipped, checked);

    // one by hand: percdamp 0, H = [[1, .75], [.75, 1]], w = (.375, .375), scale 1:
    // q0 = 0, w1 = .375 + .375 * .75 = .65625 -> 1, where round to nearest gives 0
    const double Hb[4] = {1.0, 0.75, 0.75, 1.0};
    const float wb[2] = {0.375f, 0.375f}, one = 1.0f;
    float wq[2] = {-1, -1};
    CHECK(bg_gptq_quantize(wb, 1, 2, Hb, &one, -8, 7, 0.0, wq, NULL) == BG_OK);
    CHECK(wq[0] == 0.0f && wq[1] == 1.0f);
}

/* A dead input (H_jj = 0) rounds to 0 whatever its weight; H is not written. */
static void test_dead_input(void) {
    double H[9] = {1.0, 0.0, 0.4, 0.0, 0.0, 0.0, 0.4, 0.0, 1.0}, H0[9];
    memcpy(H0, H, sizeof H);
    const float w[6] = {0.9f, 3.2f, -0.4f, -1.1f, -5.0f, 0.2f}, scale[2] = {0.5f, 0.5f};
    float wq[6];
    CHECK_MSG(bg_gptq_quantize(w, 2, 3, H, scale, -8, 7, 0.01, wq, NULL) == BG_OK, "%s", bg_last_error());
    CHECK(wq[1] == 0.0f && wq[4] == 0.0f);
    CHECK(wq[0] == 1.0f && wq[3] == -1.0f);   // column 0 rounds alone
    CHECK(memcmp(H, H0, sizeof H) == 0);
}

#define EXPECT_ERR(call, status, msg)                                   \
    do {                                                                \
        bg_clear_error();                                               \
        CHECK_MSG((call) == (status), "%s: wrong status", #call);      \
        CHECK_STR(bg_last_error(), msg);                                \
    } while (0)

static void test_errors(void) {
    const double I2[4] = {1, 0, 0, 1}, negI[4] = {-1, 0, 0, -1}, indef[4] = {1, 2, 2, 1};
    float w[4] = {0.1f, 0.2f, 0.3f, 0.4f}, wq[4];
    const float s[2] = {0.1f, 0.1f}, s_bad[2] = {0.1f, 0.0f}, s_nan[2] = {NAN, 0.1f};
    EXPECT_ERR(bg_gptq_quantize(NULL, 2, 2, I2, s, -8, 7, 0.01, wq, NULL), BG_ERR_ARG, "gptq_quantize: w is NULL");
    EXPECT_ERR(bg_gptq_quantize(w, 2, 2, NULL, s, -8, 7, 0.01, wq, NULL), BG_ERR_ARG, "gptq_quantize: H is NULL");
    EXPECT_ERR(bg_gptq_quantize(w, 2, 2, I2, NULL, -8, 7, 0.01, wq, NULL), BG_ERR_ARG, "gptq_quantize: scale is NULL");
    EXPECT_ERR(bg_gptq_quantize(w, 2, 2, I2, s, -8, 7, 0.01, NULL, NULL), BG_ERR_ARG, "gptq_quantize: wq is NULL");
    EXPECT_ERR(bg_gptq_quantize(w, 0, 2, I2, s, -8, 7, 0.01, wq, NULL), BG_ERR_ARG,
               "gptq_quantize: rows and cols must be positive, got 0 x 2");
    EXPECT_ERR(bg_gptq_quantize(w, 2, -1, I2, s, -8, 7, 0.01, wq, NULL), BG_ERR_ARG,
               "gptq_quantize: rows and cols must be positive, got 2 x -1");
    EXPECT_ERR(bg_gptq_quantize(w, 2, INT64_MAX / 2, I2, s, -8, 7, 0.01, wq, NULL), BG_ERR_ARG,
               "gptq_quantize: 2 x 4611686018427387903 is too large");
    EXPECT_ERR(bg_gptq_quantize(w, 2, 2, I2, s, 7, -8, 0.01, wq, NULL), BG_ERR_ARG, "gptq_quantize: qmin 7 > qmax -8");
    EXPECT_ERR(bg_gptq_quantize(w, 2, 2, I2, s, -8, 7, -0.5, wq, NULL), BG_ERR_ARG,
               "gptq_quantize: percdamp must be finite and >= 0, got -0.5");
    EXPECT_ERR(bg_gptq_quantize(w, 2, 2, I2, s, -8, 7, NAN, wq, NULL), BG_ERR_ARG,
               "gptq_quantize: percdamp must be finite and >= 0, got nan");
    EXPECT_ERR(bg_gptq_quantize(w, 2, 2, I2, s_bad, -8, 7, 0.01, wq, NULL), BG_ERR_ARG,
               "gptq_quantize: scale[1] must be finite and > 0, got 0");
    EXPECT_ERR(bg_gptq_quantize(w, 2, 2, I2, s_nan, -8, 7, 0.01, wq, NULL), BG_ERR_ARG,
               "gptq_quantize: scale[0] must be finite and > 0, got nan");
    EXPECT_ERR(bg_gptq_quantize(w, 2, 2, I2, s, -8, 7, 0.01, w, NULL), BG_ERR_ARG, "gptq_quantize: wq overlaps w");
    EXPECT_ERR(bg_gptq_quantize(w, 2, 2, I2, s, -8, 7, 0.01, w + 2, NULL), BG_ERR_ARG, "gptq_quantize: wq overlaps w");
    EXPECT_ERR(bg_gptq_quantize(w, 2, 2, negI, s, -8, 7, 0.0, wq, NULL), BG_ERR_NAN,
               "gptq_quantize: H + 0 damping is not positive definite: Cholesky pivot -1 at column 0");
    EXPECT_ERR(bg_gptq_quantize(w, 2, 2, indef, s, -8, 7, 0.0, wq, NULL), BG_ERR_NAN,
               "gptq_quantize: H + 0 damping is not positive definite: Cholesky pivot -3 at column 1");
}

int main(void) {
    bg_safetensors *st = bg_test_open_reference(REF_FILE, REF_GENERATOR, REF_VERSION);
    if (st) {
        test_reference_case(st, "int4_rows");
        test_reference_case(st, "ternary_dead");
        test_reference_case(st, "int8");
        bg_safetensors_free(st);
    }
    test_diagonal_is_rtn(1, 3, true);
    test_diagonal_is_rtn(5, 7, false);
    test_diagonal_is_rtn(3, 256, false);
    test_correlated_pair();
    test_dead_input();
    test_errors();
    return bg_test_finish();
}
