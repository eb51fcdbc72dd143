/* autoquant.c — the arithmetic of automatic precision (qat.h): the export
 * size of a layer at a spec, the exact choice of one option per layer under
 * a byte budget, and the quality gate's move. No model, no data: the
 * sensitivities come from io/calibrate.c. Calls quant/ (spec kinds) only. */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "qat/qat.h"

int64_t bg_export_layer_bytes(int64_t rows, int64_t cols, const bg_quant_spec *spec, bool bias) {
    if (rows < 1 || cols < 1) return 0;
    int64_t weights, scales = 0;
    if (!spec) {   // a float layer
        weights = rows * cols * 4;
    } else if (spec->kind == BG_QUANT_TERNARY || spec->kind == BG_QUANT_BINARY) {
        weights = rows * ((cols + 127) / 128 * 128 / 4);   // t2: 2 bits, rows padded to 128 weights
    } else if (spec->bits <= 4) {
        weights = rows * ((cols + 1) / 2);                 // i4 / u4
    } else {
        weights = rows * cols;                             // i8 / u8
    }
    if (spec) {
        int64_t n = spec->granularity == BG_QUANT_PER_CHANNEL ? rows
                    : spec->granularity == BG_QUANT_PER_GROUP ? rows * ((cols + spec->group_size - 1) / spec->group_size)
                                                               : 1;
        scales = n * 4 * (spec->symmetric ? 1 : 2);   // f32 scales (+ zero points)
    }
    return weights + scales + (bias ? rows * 4 : 0);
}

/* Most dynamic-programming cells the solver uses per layer. */
#define MAX_UNITS 65536

bg_status bg_budget_solve(int n_layers, int n_opt, const int64_t *bytes, const double *cost, int64_t budget,
                          int *choice, double *total_cost, int64_t *total_bytes) {
    if (n_layers < 1 || n_opt < 1 || n_opt > 127 || !bytes || !cost || !choice || budget < 0)
        return bg_set_error(BG_ERR_ARG, "budget_solve: %d layers x %d options, budget %lld: bad arguments", n_layers,
                            n_opt, (long long)budget);
    int64_t smallest = 0;
    for (int i = 0; i < n_layers; i++) {
        int64_t m = bytes[i * n_opt];
        for (int j = 1; j < n_opt; j++) m = bytes[i * n_opt + j] < m ? bytes[i * n_opt + j] : m;
        smallest += m;
    }
    if (smallest > budget)
        return bg_set_error(BG_ERR_ARG, "budget_solve: the budget of %lld bytes is below the smallest choice, %lld bytes",
                            (long long)budget, (long long)smallest);
    // Sizes in units, rounded up: a choice that fits in units fits in bytes.
    const int64_t unit = budget / MAX_UNITS + 1, units = budget / unit;
    const size_t cells = (size_t)(units + 1);
    double *best = malloc(sizeof(double) * cells), *next = malloc(sizeof(double) * cells);
    signed char *pick = malloc((size_t)n_layers * cells);
    if (!best || !next || !pick) {
        free(best), free(next), free(pick);
        return bg_set_error(BG_ERR_NOMEM, "budget_solve: out of memory for %lld x %d cells", (long long)cells, n_layers);
    }
    // best[u]: the least cost of the layers so far within u units (-1 in pick: impossible).
    for (size_t u = 0; u < cells; u++) best[u] = 0.0;
    for (int i = 0; i < n_layers; i++) {
        for (size_t u = 0; u < cells; u++) {
            next[u] = DBL_MAX;
            pick[(size_t)i * cells + u] = -1;
            for (int j = 0; j < n_opt; j++) {
                int64_t need = (bytes[i * n_opt + j] + unit - 1) / unit;
                if (need > (int64_t)u || best[u - (size_t)need] == DBL_MAX) continue;
                double c = best[u - (size_t)need] + cost[i * n_opt + j];
                if (c < next[u]) next[u] = c, pick[(size_t)i * cells + u] = (signed char)j;
            }
        }
        double *t = best;
        best = next, next = t;
    }
    bg_status st = BG_OK;
    if (best[cells - 1] == DBL_MAX) {   // the rounding up to units lost the last bytes
        st = bg_set_error(BG_ERR_ARG, "budget_solve: no choice fits %lld bytes in units of %lld bytes; raise the budget",
                          (long long)budget, (long long)unit);
    } else {
        int64_t u = units, b = 0;
        for (int i = n_layers - 1; i >= 0; i--) {
            int j = pick[(size_t)i * cells + (size_t)u];
            choice[i] = j;
            u -= (bytes[i * n_opt + j] + unit - 1) / unit;
            b += bytes[i * n_opt + j];
        }
        if (total_cost) *total_cost = best[cells - 1];
        if (total_bytes) *total_bytes = b;
    }
    free(best), free(next), free(pick);
    return st;
}

int bg_gate_raise(int n_layers, int n_opt, const double *cost, int *choice, int k) {
    int moved = 0;
    for (; moved < k; moved++) {
        int worst = -1;
        for (int i = 0; i < n_layers; i++)
            if (choice[i] + 1 < n_opt && (worst < 0 || cost[i * n_opt + choice[i]] > cost[worst * n_opt + choice[worst]]))
                worst = i;
        if (worst < 0) break;   // every layer at its largest option
        choice[worst]++;
    }
    return moved;
}
