/* sample.c — the next token from a row of logits: greedy, temperature,
 * top-k, top-p. The one sampler of the training model's generation
 * (layers/lm.c) and the language-model runtime (infer/lm.c). Calls tensor/
 * (the rng) only. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

static int descending(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* The k-th largest of v[n] (k in 1..n), using tmp[n]. */
static float kth_largest(const float *v, int64_t n, int64_t k, float *tmp) {
    memcpy(tmp, v, sizeof *tmp * (size_t)n);
    qsort(tmp, (size_t)n, sizeof *tmp, descending);
    return tmp[k - 1];
}

int32_t bg_sample_logits(const float *logits, int64_t V, const bg_sample_opts *o, float *scratch, bg_rng *rng) {
    int64_t best = 0;
    for (int64_t i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (!(o->temperature > 0.0f)) return (int32_t)best;
    float *p = scratch, *tmp = scratch + V;
    // top-k: the k-th largest logit is the cut (ties kept).
    float cut = o->top_k > 0 && o->top_k < V ? kth_largest(logits, V, o->top_k, tmp) : -INFINITY;
    double sum = 0;
    for (int64_t i = 0; i < V; i++) {
        p[i] = logits[i] >= cut ? (float)exp((double)(logits[i] - logits[best]) / o->temperature) : 0.0f;
        sum += p[i];
    }
    // top-p: the most probable tokens whose probabilities first reach top_p (ties kept).
    if (o->top_p > 0.0f && o->top_p < 1.0f) {
        memcpy(tmp, p, sizeof *tmp * (size_t)V);
        qsort(tmp, (size_t)V, sizeof *tmp, descending);
        double acc = 0, pcut = tmp[0];
        for (int64_t i = 0; i < V && acc < (double)o->top_p * sum; i++) acc += tmp[i], pcut = tmp[i];
        sum = 0;
        for (int64_t i = 0; i < V; i++) {
            if (p[i] < pcut) p[i] = 0.0f;
            sum += p[i];
        }
    }
    double u = (double)bg_rng_uniform(rng) * sum, acc = 0;
    for (int64_t i = 0; i < V; i++) {
        acc += p[i];
        if (p[i] > 0 && u < acc) return (int32_t)i;
    }
    return (int32_t)best;
}
