/* test_util.c — the shared comparator and counters (see test_util.h). */
#include "tests/test_util.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>

static int n_passed, n_failed;

bool bg_test_close(double got, double want, double atol, double rtol) {
    if (isnan(got) || isnan(want)) return false;
    if (isinf(want)) return got == want;
    return fabs(got - want) <= atol + rtol * fabs(want);
}

bool bg_test_check(bool ok, const char *file, int line, const char *fmt, ...) {
    if (ok) {
        n_passed++;
        return true;
    }
    n_failed++;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return false;
}

bool bg_test_arrays(const char *what, const float *got, const float *want, int64_t n, double atol,
                    double rtol, const char *file, int line) {
    int64_t bad = 0;
    double max_abs = 0.0, max_rel = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)want[i]);
        if (isnan(got[i]) != isnan(want[i])) e = INFINITY;
        if (e > max_abs) max_abs = e;
        if (fabs(want[i]) > 0 && e / fabs(want[i]) > max_rel) max_rel = e / fabs(want[i]);
        if (!bg_test_close(got[i], want[i], atol, rtol)) {
            if (bad < 5)
                fprintf(stderr, "  %s[%lld]: got %.9g, want %.9g\n", what, (long long)i, got[i], want[i]);
            bad++;
        }
    }
    return bg_test_check(bad == 0, file, line, "%s: %lld of %lld differ (max abs %.3g, max rel %.3g)",
                         what, (long long)bad, (long long)n, max_abs, max_rel);
}

int bg_test_finish(void) {
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}

const char *bg_test_source_dir(void) {
    const char *d = getenv("BG_SOURCE_DIR");
    return d && *d ? d : ".";
}
