/* test_util.h — the one comparator and the pass/fail counters every test
 * executable shares. Each test ends with `return bg_test_finish();`, which
 * prints "N passed, N failed" and returns non-zero when anything failed. */
#ifndef BG_TEST_UTIL_H
#define BG_TEST_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "bitgrad.h"

/* |got - want| <= atol + rtol*|want|; NaN never passes. */
bool bg_test_close(double got, double want, double atol, double rtol);

/* Records one check; prints file:line and the message when it fails. */
bool bg_test_check(bool ok, const char *file, int line, const char *fmt, ...) BG_PRINTF(4, 5);

/* Compares n floats; prints the first few mismatches (index, got, want) and
 * the max abs/rel error; counts as one check. */
bool bg_test_arrays(const char *what, const float *got, const float *want, int64_t n, double atol,
                    double rtol, const char *file, int line);

int bg_test_finish(void);

/* Opens tests/reference/<file> (below bg_test_source_dir()) and checks that
 * its __metadata__ names generator and version; a failed check (NULL) says
 * which script to re-run with /usr/bin/python3. The full path is in
 * bg_test_ref_path. */
struct bg_safetensors *bg_test_open_reference(const char *file, const char *generator, const char *version);
extern char bg_test_ref_path[1024];

/* Exact resume: the parameters (flat buffers), the optimizers' state
 * buffers and step counts, and every quantizer's ranges, flags and spec of
 * a and b are bitwise equal; counts as one check per part. */
bool bg_test_same_training(const bg_module *a, const bg_module *b, const bg_optim *oa, const bg_optim *ob,
                           const char *file, int line);
#define CHECK_SAME_TRAINING(a, b, oa, ob) bg_test_same_training((a), (b), (oa), (ob), __FILE__, __LINE__)

/* Gives a language model trained structure for the runtime and export
 * tests: `steps` AdamW steps (lr, betas 0.9/0.95) on B windows of T+1 bytes
 * of text[len] (window b of step s starts at start(s, b, user), wrapping
 * around the text), then eval quant mode and no training. One check; false
 * when a step failed. */
bool bg_test_train_lm(bg_module *m, const char *text, int len, int B, int T, int steps, float lr,
                      int (*start)(int s, int b, void *user), void *user, const char *file, int line);
#define TRAIN_LM(m, text, len, B, T, steps, lr, start, user) \
    bg_test_train_lm((m), (text), (len), (B), (T), (steps), (lr), (start), (user), __FILE__, __LINE__)

/* The source tree (for tests/reference files): $BG_SOURCE_DIR or ".". */
const char *bg_test_source_dir(void);

#define CHECK(cond) bg_test_check((cond), __FILE__, __LINE__, "%s", #cond)
#define CHECK_MSG(cond, ...) bg_test_check((cond), __FILE__, __LINE__, __VA_ARGS__)
#define CHECK_CLOSE(got, want, atol, rtol)                                                  \
    bg_test_check(bg_test_close((got), (want), (atol), (rtol)), __FILE__, __LINE__,         \
                  "%s = %.9g, want %s = %.9g", #got, (double)(got), #want, (double)(want))
#define CHECK_STR(got, want)                                                                \
    bg_test_check((got) && strcmp((got), (want)) == 0, __FILE__, __LINE__,                  \
                  "%s = \"%s\", want \"%s\"", #got, (got) ? (got) : "(null)", (want))
#define CHECK_ARRAYS(what, got, want, n, atol, rtol) \
    bg_test_arrays((what), (got), (want), (n), (atol), (rtol), __FILE__, __LINE__)

#endif
